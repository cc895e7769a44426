//! How the console shows things: times, severities, MITRE ATT&CK links,
//! error pages, and the few helpers every page shares. Text from watched
//! hosts is escaped by the templates; here it is only clipped.
use askama::Template;
use axum::{
    http::{header, StatusCode},
    response::{Html, IntoResponse, Response},
};
use vigil_proto::v1::Severity;

use super::auth::Identity;

/// A page that could not be shown, or an action refused: its status and a
/// sentence saying why.
#[derive(Debug)]
pub struct Failure {
    pub status: StatusCode,
    pub message: String,
}

impl Failure {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Failure {
        Failure {
            status,
            message: message.into(),
        }
    }

    pub fn internal(message: impl Into<String>) -> Failure {
        let message = message.into();
        tracing::error!(error = %message, "console: request failed");
        Failure::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }

    pub fn not_found(message: impl Into<String>) -> Failure {
        Failure::new(StatusCode::NOT_FOUND, message)
    }

    pub fn bad_request(message: impl Into<String>) -> Failure {
        Failure::new(StatusCode::BAD_REQUEST, message)
    }
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    status: u16,
    title: &'a str,
    message: &'a str,
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let page = ErrorPage {
            status: self.status.as_u16(),
            title: self.status.canonical_reason().unwrap_or("Error"),
            message: &self.message,
        };
        html(self.status, page.render())
    }
}

impl From<crate::store::StoreError> for Failure {
    fn from(e: crate::store::StoreError) -> Failure {
        Failure::internal(e.to_string())
    }
}

impl From<crate::groups::GroupError> for Failure {
    fn from(e: crate::groups::GroupError) -> Failure {
        use crate::groups::GroupError as G;
        match e {
            G::NotFound(_) | G::NoSilence(_) => Failure::not_found(e.to_string()),
            G::Refused(m) => Failure::new(StatusCode::CONFLICT, m),
            G::Store(e) => e.into(),
        }
    }
}

impl From<crate::investigate::InvestigateError> for Failure {
    fn from(e: crate::investigate::InvestigateError) -> Failure {
        use crate::investigate::InvestigateError as I;
        match e {
            I::Invalid(m) => Failure::bad_request(m),
            I::NotFound(m) => Failure::not_found(m),
            I::Store(e) => e.into(),
        }
    }
}

/// A rendered template as an answer.
pub fn html(status: StatusCode, rendered: askama::Result<String>) -> Response {
    match rendered {
        Ok(body) => (status, Html(body)).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "console: template failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                "the page could not be rendered\n",
            )
                .into_response()
        }
    }
}

/// What the navigation bar of every page shows.
pub struct Nav {
    pub user: String,
    pub role: &'static str,
    pub csrf: String,
    pub may_triage: bool,
    /// alerts, hosts or rules.
    pub active: &'static str,
}

impl Nav {
    pub fn of(me: &Identity, active: &'static str) -> Nav {
        Nav {
            user: me.user.clone(),
            role: me.role.name(),
            csrf: me.csrf.clone(),
            may_triage: me.role.may_triage(),
            active,
        }
    }
}

/// A form body's fields, in order (repeated names kept).
pub fn parse_form(body: &[u8]) -> Vec<(String, String)> {
    form_urlencoded::parse(body)
        .take(1000)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// The first value of `name` in a form.
pub fn field<'a>(form: &'a [(String, String)], name: &str) -> &'a str {
    form.iter()
        .find(|(k, _)| k == name)
        .map_or("", |(_, v)| v.as_str())
}

/// `s` when it is a path on this console, to redirect to: `/`, then
/// printable ASCII only (a tab or a newline would be dropped by the
/// browser, turning `/\t/evil` into `//evil`), and not `//` or `/\`
/// (another host).
pub fn local_path(s: &str) -> Option<&str> {
    let ok = s.starts_with('/')
        && !s.starts_with("//")
        && !s.starts_with("/\\")
        && s.len() <= 2048
        && s.bytes().all(|b| (0x21..=0x7e).contains(&b) && b != b'\\');
    ok.then_some(s)
}

pub fn url_encode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// UTC to the second: `2026-11-29 08:15:03`.
pub fn time(ns: i64) -> String {
    if ns <= 0 {
        return String::new();
    }
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_nanos(ns as u64);
    let s = humantime::format_rfc3339_seconds(t).to_string();
    s.trim_end_matches('Z').replace('T', " ")
}

/// How long ago, roughly: `12s`, `5m`, `3h`, `2d`.
pub fn ago(ns: i64, now_ns: i64) -> String {
    if ns <= 0 {
        return "never".into();
    }
    let s = (now_ns - ns).max(0) / 1_000_000_000;
    match s {
        0..60 => format!("{s}s ago"),
        60..3600 => format!("{}m ago", s / 60),
        3600..86400 => format!("{}h ago", s / 3600),
        _ => format!("{}d ago", s / 86400),
    }
}

pub fn severity(v: i32) -> &'static str {
    Severity::try_from(v)
        .unwrap_or(Severity::Unspecified)
        .name()
}

/// Severities a filter offers, highest first.
pub const SEVERITIES: [&str; 8] = [
    "emergency",
    "alert",
    "critical",
    "error",
    "warning",
    "notice",
    "informational",
    "debug",
];

pub use crate::views::clip;

/// A tag, with the MITRE ATT&CK page it names, if any: techniques
/// (`T1059`, `T1059.004`, `mitre_T1059`) and tactics (`mitre_execution`).
pub struct Tag {
    pub name: String,
    pub link: String,
}

pub fn tag(t: &str) -> Tag {
    Tag {
        name: t.to_string(),
        link: mitre_link(t).unwrap_or_default(),
    }
}

fn mitre_link(t: &str) -> Option<String> {
    let bare = t.strip_prefix("mitre_").unwrap_or(t);
    let upper = bare.to_ascii_uppercase();
    if let Some(rest) = upper.strip_prefix('T') {
        let (main, sub) = rest.split_once('.').unwrap_or((rest, ""));
        let digits = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_digit());
        if digits(main, 4) && (sub.is_empty() || digits(sub, 3)) {
            return Some(if sub.is_empty() {
                format!("https://attack.mitre.org/techniques/T{main}/")
            } else {
                format!("https://attack.mitre.org/techniques/T{main}/{sub}/")
            });
        }
    }
    if t.starts_with("mitre_") {
        let id = match bare {
            "reconnaissance" => "TA0043",
            "resource_development" => "TA0042",
            "initial_access" => "TA0001",
            "execution" => "TA0002",
            "persistence" => "TA0003",
            "privilege_escalation" => "TA0004",
            "defense_evasion" => "TA0005",
            "credential_access" => "TA0006",
            "discovery" => "TA0007",
            "lateral_movement" => "TA0008",
            "collection" => "TA0009",
            "command_and_control" => "TA0011",
            "exfiltration" => "TA0010",
            "impact" => "TA0040",
            _ => return None,
        };
        return Some(format!("https://attack.mitre.org/tactics/{id}/"));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mitre_tags_link_to_their_pages() {
        assert_eq!(
            tag("T1059.004").link,
            "https://attack.mitre.org/techniques/T1059/004/"
        );
        assert_eq!(
            tag("mitre_T1611").link,
            "https://attack.mitre.org/techniques/T1611/"
        );
        assert_eq!(
            tag("mitre_execution").link,
            "https://attack.mitre.org/tactics/TA0002/"
        );
        assert_eq!(tag("container").link, "");
        assert_eq!(tag("T12").link, "");
    }

    #[test]
    fn only_local_paths_are_redirect_targets() {
        assert_eq!(local_path("/alerts?state=any"), Some("/alerts?state=any"));
        for bad in [
            "//evil",
            "/\\evil",
            "/\t/evil",
            "/\n/evil",
            "https://evil",
            "/a b",
            "",
        ] {
            assert_eq!(local_path(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn times_and_text() {
        assert_eq!(time(1_700_000_000_000_000_000), "2023-11-14 22:13:20");
        assert_eq!(ago(0, 5), "never");
        assert_eq!(ago(1_000_000_000, 121_000_000_000), "2m ago");
        assert_eq!(clip("a\nb", 10), "a\\nb");
        assert_eq!(clip("abcdef", 3), "ab…");
        assert_eq!(
            parse_form(b"id=a&id=b&csrf_token=x%20y"),
            vec![
                ("id".into(), "a".into()),
                ("id".into(), "b".into()),
                ("csrf_token".into(), "x y".into())
            ]
        );
    }
}
