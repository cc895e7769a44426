//! Output templates: text with Falco-style `%field` references, checked at
//! load time and rendered per alert. The same fields travel with the alert
//! as structured data.
use super::{
    extract,
    fields::{self, FieldProblem, FieldRef},
    matcher::render,
};
use crate::event::Event;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    /// Index into `fields`.
    Field(usize),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    pieces: Vec<Piece>,
    /// Each referenced field once, with its name as written.
    fields: Vec<(String, FieldRef)>,
}

/// A bad `%field`: its byte offset in the template and the problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateError {
    pub at: usize,
    pub problem: FieldProblem,
}

impl std::fmt::Display for TemplateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "output: {}", self.problem)
    }
}

fn field_len(rest: &str) -> usize {
    let mut end = 0;
    let mut in_bracket = false;
    for (i, c) in rest.char_indices() {
        match c {
            '[' if end > 0 => in_bracket = true,
            ']' if in_bracket => {
                in_bracket = false;
                end = i + 1;
                continue;
            }
            _ if in_bracket => {}
            c if c.is_ascii_alphanumeric() || c == '.' || c == '_' => {}
            _ => break,
        }
        end = i + c.len_utf8();
    }
    let name = &rest[..end];
    name.trim_end_matches('.').len()
}

impl Template {
    /// Parses `text`; `%name` must be a known field, `%%` is a literal `%`.
    pub fn parse(text: &str) -> Result<Template, TemplateError> {
        let mut t = Template {
            pieces: Vec::new(),
            fields: Vec::new(),
        };
        let mut lit = String::new();
        let mut at = 0;
        while let Some(i) = text[at..].find('%') {
            lit.push_str(&text[at..at + i]);
            at += i + 1;
            if text[at..].starts_with('%') {
                lit.push('%');
                at += 1;
                continue;
            }
            let len = field_len(&text[at..]);
            if len == 0 {
                // A `%` not followed by a field name is text.
                lit.push('%');
                continue;
            }
            let name = &text[at..at + len];
            let f = match fields::resolve(name) {
                Ok(f) => f,
                // A Falco field Vigil lacks prints as Falco prints any
                // missing value, so Falco outputs load unchanged.
                Err(FieldProblem::Unsupported(_)) => {
                    lit.push_str("<NA>");
                    at += len;
                    continue;
                }
                Err(problem) => {
                    return Err(TemplateError {
                        at: at - 1,
                        problem,
                    })
                }
            };
            if !lit.is_empty() {
                t.pieces.push(Piece::Text(std::mem::take(&mut lit)));
            }
            let idx = match t.fields.iter().position(|(n, _)| n == name) {
                Some(i) => i,
                None => {
                    t.fields.push((name.to_string(), f));
                    t.fields.len() - 1
                }
            };
            t.pieces.push(Piece::Field(idx));
            at += len;
        }
        lit.push_str(&text[at..]);
        if !lit.is_empty() {
            t.pieces.push(Piece::Text(lit));
        }
        Ok(t)
    }

    pub fn render(&self, ev: &Event) -> String {
        self.render_with_fields(ev).0
    }

    /// The message, and the referenced fields with their values for the
    /// alert's structured data; each field is read once for both.
    pub fn render_with_fields(&self, ev: &Event) -> (String, Vec<(String, String)>) {
        let fields: Vec<(String, String)> = self
            .fields
            .iter()
            .map(|(n, f)| {
                (
                    n.clone(),
                    render(extract::extract(ev, f).as_ref()).into_owned(),
                )
            })
            .collect();
        let mut out = String::new();
        for p in &self.pieces {
            match p {
                Piece::Text(t) => out.push_str(t),
                Piece::Field(i) => out.push_str(&fields[*i].1),
            }
        }
        (out, fields)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_fields_literals_and_escapes() {
        let t =
            Template::parse("100%% sure: %proc.exe (pid=%proc.pid, a=%proc.aname[2]).").unwrap();
        assert_eq!(
            t.pieces,
            vec![
                Piece::Text("100% sure: ".into()),
                Piece::Field(0),
                Piece::Text(" (pid=".into()),
                Piece::Field(1),
                Piece::Text(", a=".into()),
                Piece::Field(2),
                Piece::Text(").".into()),
            ]
        );
        assert_eq!(t.fields[2].0, "proc.aname[2]");
    }

    #[test]
    fn a_lone_percent_is_text() {
        let t = Template::parse("100% sure, 5 %").unwrap();
        assert_eq!(t.pieces, vec![Piece::Text("100% sure, 5 %".into())]);
    }

    #[test]
    fn unknown_field_is_a_load_error() {
        let e = Template::parse("x %proc.nope y").unwrap_err();
        assert_eq!(e.at, 2);
        assert!(e.to_string().contains("`proc.nope`"), "{e}");
    }
}
