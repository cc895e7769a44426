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
    "proc.cwd",
    "proc.pname",
    "proc.pcmdline",
    "proc.sha256",
    "user.name",
    "user.loginname",
    "group.name",
    "container.id",
    "container.type",
    "k8s.ns.name",
    "k8s.pod.name",
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

/// argv of the event's process: the process table's, else the exec's own.
fn argv(ev: &Event) -> &[String] {
    if let Some(d) = ev.process.detail.as_deref() {
        if d.exe.is_some() {
            return &d.argv;
        }
    }
    match &ev.body {
        EventBody::Exec(x) => &x.argv,
        _ => &[],
    }
}

fn exe(ev: &Event) -> Option<&str> {
    if let Some(e) = ev.process.detail.as_deref().and_then(|d| d.exe.as_deref()) {
        return Some(e);
    }
    match &ev.body {
        EventBody::Exec(x) => Some(x.exe_path()),
        _ => None,
    }
}

fn basename(p: &str) -> &str {
    p.rsplit('/').next().unwrap_or(p)
}

/// `name arg1 arg2…`, as Falco prints a command line.
fn cmdline(name: &str, argv: &[String]) -> String {
    let args = argv.get(1..).unwrap_or_default();
    if args.is_empty() {
        name.to_string()
    } else {
        format!("{name} {}", args.join(" "))
    }
}

fn text_or_na(out: &mut String, v: Option<&str>) -> std::fmt::Result {
    write!(out, "{}", v.unwrap_or("<NA>"))
}

fn render_field(out: &mut String, field: &str, ev: &Event) {
    let p = &ev.process;
    let d = p.detail.as_deref();
    let parent = ev.ancestry.first();
    let _ = match field {
        "evt.type" => write!(out, "{}", ev.type_name()),
        "proc.pid" => write!(out, "{}", p.pid),
        "proc.ppid" => write!(out, "{}", p.ppid),
        "thread.tid" => write!(out, "{}", p.tid),
        "proc.name" => write!(out, "{}", p.comm),
        "proc.exe" => text_or_na(out, exe(ev)),
        "proc.args" => write!(out, "{}", argv(ev).get(1..).unwrap_or_default().join(" ")),
        "proc.cmdline" => write!(out, "{}", cmdline(&p.comm, argv(ev))),
        "proc.cwd" => text_or_na(out, d.and_then(|d| d.cwd.as_deref())),
        "proc.pname" => text_or_na(out, parent.and_then(|a| a.exe.as_deref()).map(basename)),
        "proc.pcmdline" => match parent {
            Some(a) => {
                let name = a.exe.as_deref().map(basename).unwrap_or("<NA>");
                write!(out, "{}", cmdline(name, &a.argv))
            }
            None => write!(out, "<NA>"),
        },
        "proc.sha256" => text_or_na(out, d.and_then(|d| d.exe_sha256.as_deref())),
        "fd.name" => match &ev.body {
            EventBody::File(f) => write!(out, "{}", f.path),
            _ => write!(out, "<NA>"),
        },
        "user.uid" => write!(out, "{}", p.uid),
        "user.name" => text_or_na(out, d.and_then(|d| d.user.as_deref())),
        "user.loginname" => text_or_na(out, d.and_then(|d| d.login_user.as_deref())),
        "group.gid" => write!(out, "{}", p.gid),
        "group.name" => text_or_na(out, d.and_then(|d| d.group.as_deref())),
        // Falco prints the 12-digit short id, or `host`.
        "container.id" => text_or_na(
            out,
            ev.container
                .as_deref()
                .map(|c| c.id.get(..12).unwrap_or(&c.id)),
        ),
        "container.type" => text_or_na(out, ev.container.as_deref().map(|c| c.runtime)),
        "k8s.ns.name" => text_or_na(
            out,
            ev.container
                .as_deref()
                .and_then(|c| c.k8s.as_ref())
                .map(|k| k.namespace.as_str()),
        ),
        "k8s.pod.name" => text_or_na(
            out,
            ev.container
                .as_deref()
                .and_then(|c| c.k8s.as_ref())
                .map(|k| k.pod.as_str()),
        ),
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
