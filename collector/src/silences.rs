//! Silences: matchers with an expiry and a reason. An alert a live
//! silence matches is stored and counted like any other (and names the
//! silence), but notifies no one.
//!
//! A matcher is `FIELD=VALUE` (exact), or `severity>=NAME`. FIELD is one of
//! `rule`, `host`, `severity`, `tag` (any of the alert's tags),
//! `container` (id, or `host`), `namespace` (Kubernetes), or any field the
//! rule's output names (`proc.exepath`, `fd.name`, ...). Every matcher of a
//! silence must match.
use vigil_proto::v1::{Alert, HostInfo, Severity};

/// One matcher of a silence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Matcher {
    Rule(String),
    Host(String),
    Severity(Severity),
    SeverityAtLeast(Severity),
    Tag(String),
    Container(String),
    Namespace(String),
    /// An output field, by name.
    Field(String, String),
}

/// Most matchers in one silence, and longest matcher text.
pub const MAX_MATCHERS: usize = 32;
pub const MAX_MATCHER_LEN: usize = 1024;

impl Matcher {
    /// Parses `FIELD=VALUE` or `severity>=NAME`, saying what is wrong.
    pub fn parse(s: &str) -> Result<Matcher, String> {
        if s.len() > MAX_MATCHER_LEN {
            return Err(format!("a matcher is at most {MAX_MATCHER_LEN} bytes"));
        }
        let severity = |v: &str| {
            Severity::parse_name(v).ok_or_else(|| {
                format!("`{s}`: `{v}` is not a severity (debug, informational, notice, warning, error, critical, alert, emergency)")
            })
        };
        if let Some(v) = s.strip_prefix("severity>=") {
            return Ok(Matcher::SeverityAtLeast(severity(v.trim())?));
        }
        let Some((field, value)) = s.split_once('=') else {
            return Err(format!(
                "`{s}`: expected FIELD=VALUE (rule, host, severity, tag, container, namespace, or an output field such as proc.exepath)"
            ));
        };
        let (field, value) = (field.trim(), value.trim());
        if value.is_empty() {
            return Err(format!("`{s}`: empty value"));
        }
        let v = value.to_string();
        Ok(match field {
            "rule" => Matcher::Rule(v),
            "host" => Matcher::Host(v),
            "severity" => Matcher::Severity(severity(value)?),
            "tag" => Matcher::Tag(v),
            "container" => Matcher::Container(v),
            "namespace" => Matcher::Namespace(v),
            f if !f.is_empty()
                && f.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._[]".contains(c)) =>
            {
                Matcher::Field(f.to_string(), v)
            }
            f => return Err(format!("`{s}`: `{f}` is not a field name")),
        })
    }

    /// The matcher as the user wrote it, normalised.
    pub fn text(&self) -> String {
        match self {
            Matcher::Rule(v) => format!("rule={v}"),
            Matcher::Host(v) => format!("host={v}"),
            Matcher::Severity(s) => format!("severity={}", s.name()),
            Matcher::SeverityAtLeast(s) => format!("severity>={}", s.name()),
            Matcher::Tag(v) => format!("tag={v}"),
            Matcher::Container(v) => format!("container={v}"),
            Matcher::Namespace(v) => format!("namespace={v}"),
            Matcher::Field(f, v) => format!("{f}={v}"),
        }
    }

    pub fn matches(&self, host: &HostInfo, a: &Alert) -> bool {
        let container = a.container.as_ref();
        match self {
            Matcher::Rule(v) => a.rule == *v,
            Matcher::Host(v) => host.hostname == *v,
            Matcher::Severity(s) => a.severity == *s as i32,
            Matcher::SeverityAtLeast(s) => a.severity >= *s as i32,
            Matcher::Tag(v) => a.tags.iter().any(|t| t == v),
            Matcher::Container(v) => {
                let id = container.map_or("", |c| c.id.as_str());
                if v == "host" {
                    id.is_empty() || id == "host"
                } else {
                    id == v
                }
            }
            Matcher::Namespace(v) => container.is_some_and(|c| c.k8s_namespace == *v),
            Matcher::Field(f, v) => a.fields.get(f).is_some_and(|x| x == v),
        }
    }
}

/// A silence as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Silence {
    pub id: String,
    pub matchers: Vec<Matcher>,
    pub reason: String,
    pub created_by: String,
    pub created_ns: i64,
    pub expires_ns: i64,
    /// Set when expired early (`silence expire`), with who did it.
    pub expired_by: Option<String>,
    /// Alerts it silenced.
    pub matched: u64,
}

impl Silence {
    pub fn is_active(&self, now_ns: i64) -> bool {
        now_ns < self.expires_ns
    }

    pub fn matches(&self, host: &HostInfo, a: &Alert) -> bool {
        self.matchers.iter().all(|m| m.matches(host, a))
    }
}

impl From<&Silence> for vigil_proto::v1::SilenceInfo {
    fn from(s: &Silence) -> Self {
        let now = crate::store::now_ns();
        vigil_proto::v1::SilenceInfo {
            id: s.id.clone(),
            matchers: s.matchers.iter().map(Matcher::text).collect(),
            reason: s.reason.clone(),
            created_by: s.created_by.clone(),
            created_unix_ns: s.created_ns,
            expires_unix_ns: s.expires_ns,
            expired_by: s.expired_by.clone().unwrap_or_default(),
            matched: s.matched,
            active: s.is_active(now),
        }
    }
}

/// Longest a silence may last, and longest reason.
pub const MAX_DURATION: std::time::Duration = std::time::Duration::from_secs(365 * 86_400);
pub const MAX_REASON: usize = 4096;

/// Parses and checks the matchers of a new silence.
pub fn parse_matchers(texts: &[String]) -> Result<Vec<Matcher>, String> {
    if texts.is_empty() {
        return Err("a silence needs at least one matcher (--match FIELD=VALUE)".into());
    }
    if texts.len() > MAX_MATCHERS {
        return Err(format!("a silence has at most {MAX_MATCHERS} matchers"));
    }
    texts.iter().map(|t| Matcher::parse(t)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_proto::v1::ContainerInfo;

    #[test]
    fn matchers_parse_and_match() {
        let host = HostInfo {
            hostname: "web-1".into(),
            ..Default::default()
        };
        let mut a = Alert {
            rule: "Shell".into(),
            severity: Severity::Error as i32,
            tags: vec!["mitre_execution".into()],
            container: Some(ContainerInfo {
                id: "abc".into(),
                k8s_namespace: "shop".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        a.fields.insert("proc.exepath".into(), "/bin/sh".into());
        for (m, hit) in [
            ("rule=Shell", true),
            ("rule=Other", false),
            ("host=web-1", true),
            ("severity=error", true),
            ("severity>=warning", true),
            ("severity>=critical", false),
            ("tag=mitre_execution", true),
            ("container=abc", true),
            ("container=host", false),
            ("namespace=shop", true),
            ("proc.exepath=/bin/sh", true),
            ("fd.name=/etc/shadow", false),
        ] {
            assert_eq!(Matcher::parse(m).unwrap().matches(&host, &a), hit, "{m}");
        }
        assert_eq!(
            Matcher::parse("severity>=warning").unwrap().text(),
            "severity>=warning"
        );
        for bad in ["rule", "rule=", "severity=loud", "a b=c", "=x"] {
            assert!(Matcher::parse(bad).is_err(), "{bad}");
        }
        assert!(parse_matchers(&[]).is_err());
    }
}
