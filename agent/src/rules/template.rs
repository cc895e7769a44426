//! Output templates: text with Falco-style `%field` references, checked at
//! load time and rendered per alert.
use std::fmt::Write as _;

use crate::event::{Event, EventBody};

/// Fields a template may reference.
pub const FIELDS: &[&str] = &[
    "evt.type",
    "proc.pid",
    "proc.ppid",
    "thread.tid",
    "proc.name",
    "proc.exe",
    "proc.cmdline",
    "proc.args",
    "user.uid",
    "group.gid",
    "fd.name",
];

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Field(&'static str),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    pieces: Vec<Piece>,
}

impl TryFrom<String> for Template {
    type Error = String;

    fn try_from(s: String) -> Result<Template, String> {
        Template::parse(&s)
    }
}

impl Template {
    /// Parses `text`; `%name` must be one of [`FIELDS`], `%%` is a literal `%`.
    pub fn parse(text: &str) -> Result<Template, String> {
        let mut pieces = Vec::new();
        let mut lit = String::new();
        let mut rest = text;
        while let Some(i) = rest.find('%') {
            lit.push_str(&rest[..i]);
            rest = &rest[i + 1..];
            if let Some(r) = rest.strip_prefix('%') {
                lit.push('%');
                rest = r;
                continue;
            }
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '.' || c == '_'))
                .unwrap_or(rest.len());
            let name = rest[..end].trim_end_matches('.');
            let field = FIELDS.iter().find(|f| **f == name).ok_or_else(|| {
                format!(
                    "unknown output field `%{name}`; known fields: {}",
                    FIELDS.join(", ")
                )
            })?;
            if !lit.is_empty() {
                pieces.push(Piece::Text(std::mem::take(&mut lit)));
            }
            pieces.push(Piece::Field(field));
            rest = &rest[name.len()..];
        }
        lit.push_str(rest);
        if !lit.is_empty() {
            pieces.push(Piece::Text(lit));
        }
        Ok(Template { pieces })
    }

    pub fn render(&self, ev: &Event) -> String {
        let mut out = String::new();
        for p in &self.pieces {
            match p {
                Piece::Text(t) => out.push_str(t),
                Piece::Field(f) => render_field(&mut out, f, ev),
            }
        }
        out
    }
}

fn exec_args(ev: &Event) -> &[String] {
    match &ev.body {
        EventBody::Exec(x) if !x.argv.is_empty() => &x.argv[1..],
        _ => &[],
    }
}

fn render_field(out: &mut String, field: &str, ev: &Event) {
    let p = &ev.process;
    let _ = match field {
        "evt.type" => write!(out, "{}", ev.type_name()),
        "proc.pid" => write!(out, "{}", p.pid),
        "proc.ppid" => write!(out, "{}", p.ppid),
        "thread.tid" => write!(out, "{}", p.tid),
        "proc.name" => write!(out, "{}", p.comm),
        "proc.exe" => match &ev.body {
            EventBody::Exec(x) => write!(out, "{}", x.exe_path()),
            _ => write!(out, "<NA>"),
        },
        "proc.args" => write!(out, "{}", exec_args(ev).join(" ")),
        "proc.cmdline" => {
            let args = exec_args(ev);
            if args.is_empty() {
                write!(out, "{}", p.comm)
            } else {
                write!(out, "{} {}", p.comm, args.join(" "))
            }
        }
        "fd.name" => match &ev.body {
            EventBody::File(f) => write!(out, "{}", f.path),
            _ => write!(out, "<NA>"),
        },
        "user.uid" => write!(out, "{}", p.uid),
        "group.gid" => write!(out, "{}", p.gid),
        _ => write!(out, "<NA>"),
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_fields_literals_and_escapes() {
        let t = Template::parse("100%% sure: %proc.exe (pid=%proc.pid).").unwrap();
        assert_eq!(
            t.pieces,
            vec![
                Piece::Text("100% sure: ".into()),
                Piece::Field("proc.exe"),
                Piece::Text(" (pid=".into()),
                Piece::Field("proc.pid"),
                Piece::Text(").".into()),
            ]
        );
    }

    #[test]
    fn unknown_field_is_a_load_error() {
        let e = Template::parse("x %proc.nope y").unwrap_err();
        assert!(e.contains("`%proc.nope`"), "{e}");
    }
}
