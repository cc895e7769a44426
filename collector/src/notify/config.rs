//! The notification file (`serve --notify FILE`): receivers, and routes
//! that send groups to them. Parsed, then checked; every error names the
//! file and, for syntax, the line and column.
use std::{
    collections::{BTreeMap, HashSet},
    path::{Path, PathBuf},
};

use serde::Deserialize;
use vigil_proto::v1::Severity;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read: {message}")]
    Read { path: String, message: String },
    /// Syntax or an unknown key: `FILE:LINE:COL: message`.
    #[error("{path}:{line}:{column}: {message}")]
    Syntax {
        path: String,
        line: usize,
        column: usize,
        message: String,
    },
    /// A reference or value that does not hold, e.g. `routes[1]: unknown
    /// receiver pagr`.
    #[error("{path}: {at}: {message}")]
    Invalid {
        path: String,
        at: String,
        message: String,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    receivers: Vec<ReceiverDef>,
    #[serde(default)]
    routes: Vec<RouteDef>,
    /// After a group's notification, how long its repeats are counted
    /// before one summary goes out (default 5m).
    group_window: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReceiverDef {
    name: String,
    webhook: Option<WebhookDef>,
    pagerduty: Option<PagerDutyDef>,
    slack: Option<SlackDef>,
    alertmanager: Option<AlertmanagerDef>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AlertmanagerDef {
    /// Alertmanager's base URL, e.g. http://alertmanager:9093.
    url: String,
    /// How often an open group is sent again (default 60s): Alertmanager
    /// resolves an alert whose endsAt passes, which is four of these.
    refresh: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SlackDef {
    /// A file whose content (trimmed) is the incoming webhook's URL (a
    /// secret: whoever has it can post to the channel).
    webhook_url_file: PathBuf,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PagerDutyDef {
    /// A file whose content (trimmed) is the Events API v2 routing key.
    routing_key_file: PathBuf,
    /// The Events API endpoint; tests point it at a local receiver.
    url: Option<String>,
}

/// PagerDuty's Events API v2 endpoint.
pub const PAGERDUTY_EVENTS_URL: &str = "https://events.pagerduty.com/v2/enqueue";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WebhookDef {
    url: String,
    /// A file whose content (trimmed) is the HMAC-SHA256 key.
    secret_file: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RouteDef {
    #[serde(rename = "match", default)]
    matchers: BTreeMap<String, String>,
    receivers: Vec<String>,
    /// Go on to the next routes after this one matched.
    #[serde(rename = "continue", default)]
    keep_going: bool,
}

/// A receiver, ready to send to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receiver {
    pub name: String,
    pub kind: ReceiverKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReceiverKind {
    Webhook {
        url: String,
        secret: Option<Vec<u8>>,
    },
    /// PagerDuty Events API v2: one incident per group (`dedup_key`),
    /// triggered, acknowledged and resolved with the group.
    PagerDuty { url: String, routing_key: String },
    /// A Slack incoming webhook: Block Kit with a `text` fallback.
    Slack { url: String },
    /// Alertmanager's `POST /api/v2/alerts`: firing while the group is
    /// open (re-sent every `refresh`), ended when it is resolved or closed.
    Alertmanager {
        url: String,
        refresh: std::time::Duration,
    },
}

impl ReceiverKind {
    pub fn url(&self) -> &str {
        match self {
            ReceiverKind::Webhook { url, .. }
            | ReceiverKind::PagerDuty { url, .. }
            | ReceiverKind::Slack { url }
            | ReceiverKind::Alertmanager { url, .. } => url,
        }
    }
}

/// What a route tests on a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteMatch {
    SeverityAtLeast(Severity),
    Severity(Severity),
    Rule(String),
    Host(String),
    Tag(String),
    /// A container id, or `host`.
    Container(String),
    /// A Kubernetes namespace.
    Namespace(String),
    /// An output field (a key with a dot, e.g. `proc.exepath`).
    Field(String, String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub matchers: Vec<RouteMatch>,
    /// Indexes into [`Config::receivers`].
    pub receivers: Vec<usize>,
    pub keep_going: bool,
}

/// The whole file, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub receivers: Vec<Receiver>,
    pub routes: Vec<Route>,
    /// Repeats of a notified group are summarised once per window.
    pub group_window: std::time::Duration,
}

/// The default `group_window`.
pub const DEFAULT_GROUP_WINDOW: std::time::Duration = std::time::Duration::from_secs(300);

/// What a route sees of a group's alert.
pub struct Facts<'a> {
    pub severity: i32,
    pub rule: &'a str,
    pub host: &'a str,
    pub tags: &'a [String],
    /// Container id, or `host`.
    pub container: &'a str,
    pub namespace: &'a str,
    pub fields: &'a std::collections::HashMap<String, String>,
}

impl Config {
    /// Reads and checks `path`; secrets are read now, so a missing one
    /// stops the collector at start, not at the first page.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let p = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
            path: p.clone(),
            message: e.to_string(),
        })?;
        Self::parse(&p, &text, path.parent().unwrap_or(Path::new(".")))
    }

    /// Parses `text` (from `path`, for messages); relative secret files
    /// are found from `base`.
    pub fn parse(path: &str, text: &str, base: &Path) -> Result<Config, ConfigError> {
        let file: File = serde_yaml_ng::from_str(text).map_err(|e| {
            let (line, column) = e.location().map_or((0, 0), |l| (l.line(), l.column()));
            ConfigError::Syntax {
                path: path.into(),
                line,
                column,
                message: e.to_string(),
            }
        })?;
        let invalid = |at: String, message: String| ConfigError::Invalid {
            path: path.into(),
            at,
            message,
        };
        let mut receivers = Vec::new();
        let mut names = HashSet::new();
        for (i, r) in file.receivers.into_iter().enumerate() {
            let at = format!("receivers[{i}] ({})", r.name);
            if r.name.is_empty() || !names.insert(r.name.clone()) {
                return Err(invalid(
                    at,
                    "receiver names must be unique and not empty".into(),
                ));
            }
            let check_url = |u: &str| -> Result<(), ConfigError> {
                let url = reqwest::Url::parse(u)
                    .map_err(|e| invalid(at.clone(), format!("url `{u}`: {e}")))?;
                if !["http", "https"].contains(&url.scheme()) {
                    return Err(invalid(
                        at.clone(),
                        format!("url `{u}`: http or https only"),
                    ));
                }
                Ok(())
            };
            let read_secret = |what: &str, f: PathBuf| -> Result<String, ConfigError> {
                let f = base.join(f);
                let s = std::fs::read_to_string(&f)
                    .map_err(|e| invalid(at.clone(), format!("{what} {}: {e}", f.display())))?;
                if s.trim().is_empty() {
                    return Err(invalid(
                        at.clone(),
                        format!("{what} {} is empty", f.display()),
                    ));
                }
                Ok(s.trim().to_string())
            };
            let kinds = [
                r.webhook.is_some(),
                r.pagerduty.is_some(),
                r.slack.is_some(),
                r.alertmanager.is_some(),
            ];
            if kinds.iter().filter(|k| **k).count() > 1 {
                return Err(invalid(
                    at,
                    "a receiver has one kind: webhook, pagerduty, slack or alertmanager".into(),
                ));
            }
            if let Some(am) = r.alertmanager {
                let url = format!("{}/api/v2/alerts", am.url.trim_end_matches('/'));
                check_url(&url)?;
                let refresh = match am.refresh.as_deref() {
                    None => std::time::Duration::from_secs(60),
                    Some(t) => humantime::parse_duration(t)
                        .ok()
                        .filter(|d| {
                            (std::time::Duration::from_secs(1)
                                ..=std::time::Duration::from_secs(3600))
                                .contains(d)
                        })
                        .ok_or_else(|| {
                            invalid(
                                at.clone(),
                                format!("refresh `{t}`: a duration from 1s to 1h"),
                            )
                        })?,
                };
                receivers.push(Receiver {
                    name: r.name,
                    kind: ReceiverKind::Alertmanager { url, refresh },
                });
                continue;
            }
            if let Some(sl) = r.slack {
                let url = read_secret("webhook_url_file", sl.webhook_url_file)?;
                check_url(&url)?;
                receivers.push(Receiver {
                    name: r.name,
                    kind: ReceiverKind::Slack { url },
                });
                continue;
            }
            let kind = match (r.webhook, r.pagerduty) {
                (Some(w), None) => {
                    check_url(&w.url)?;
                    let secret = match w.secret_file {
                        Some(f) => Some(read_secret("secret_file", f)?.into_bytes()),
                        None => None,
                    };
                    ReceiverKind::Webhook { url: w.url, secret }
                }
                (None, Some(p)) => {
                    let url = p.url.unwrap_or_else(|| PAGERDUTY_EVENTS_URL.to_string());
                    check_url(&url)?;
                    ReceiverKind::PagerDuty {
                        url,
                        routing_key: read_secret("routing_key_file", p.routing_key_file)?,
                    }
                }
                (None, None) => {
                    return Err(invalid(
                        at,
                        "a receiver needs a kind: webhook, pagerduty, slack or alertmanager".into(),
                    ))
                }
                (Some(_), Some(_)) => {
                    return Err(invalid(
                        at,
                        "a receiver has one kind: webhook or pagerduty".into(),
                    ))
                }
            };
            receivers.push(Receiver { name: r.name, kind });
        }
        let mut routes = Vec::new();
        for (i, r) in file.routes.into_iter().enumerate() {
            let at = format!("routes[{i}]");
            if r.receivers.is_empty() {
                return Err(invalid(at, "a route needs at least one receiver".into()));
            }
            let mut idx = Vec::new();
            for name in &r.receivers {
                let Some(n) = receivers.iter().position(|x| x.name == *name) else {
                    return Err(invalid(at, format!("unknown receiver `{name}`")));
                };
                idx.push(n);
            }
            let mut matchers = Vec::new();
            for (k, v) in &r.matchers {
                let severity = |s: &str| {
                    Severity::parse_name(s.trim()).ok_or_else(|| {
                        invalid(
                            at.clone(),
                            format!("severity `{v}`: a name (debug ... emergency), or >=NAME"),
                        )
                    })
                };
                matchers.push(match k.as_str() {
                    "severity" => match v.strip_prefix(">=") {
                        Some(s) => RouteMatch::SeverityAtLeast(severity(s)?),
                        None => RouteMatch::Severity(severity(v)?),
                    },
                    "rule" => RouteMatch::Rule(v.clone()),
                    "host" => RouteMatch::Host(v.clone()),
                    "tag" => RouteMatch::Tag(v.clone()),
                    "container" => RouteMatch::Container(v.clone()),
                    "namespace" => RouteMatch::Namespace(v.clone()),
                    f if f.contains('.') => RouteMatch::Field(f.to_string(), v.clone()),
                    other => {
                        return Err(invalid(
                            at,
                            format!("unknown match key `{other}`: severity, rule, host, tag, container, namespace, or an output field such as proc.exepath"),
                        ))
                    }
                });
            }
            routes.push(Route {
                matchers,
                receivers: idx,
                keep_going: r.keep_going,
            });
        }
        let group_window = match file.group_window.as_deref() {
            None => DEFAULT_GROUP_WINDOW,
            Some(t) => humantime::parse_duration(t)
                .ok()
                .filter(|d| {
                    (std::time::Duration::from_secs(1)..=std::time::Duration::from_secs(86_400))
                        .contains(d)
                })
                .ok_or_else(|| {
                    invalid(
                        "group_window".into(),
                        format!("`{t}`: a duration from 1s to 24h"),
                    )
                })?,
        };
        Ok(Config {
            receivers,
            routes,
            group_window,
        })
    }

    /// The receivers a group goes to: routes in order, the first that
    /// matches and those after it while `continue` says so. Each receiver
    /// once.
    pub fn route(&self, f: &Facts<'_>) -> Vec<usize> {
        let mut out: Vec<usize> = Vec::new();
        for r in &self.routes {
            let hit = r.matchers.iter().all(|m| match m {
                RouteMatch::SeverityAtLeast(s) => f.severity >= *s as i32,
                RouteMatch::Severity(s) => f.severity == *s as i32,
                RouteMatch::Rule(x) => f.rule == x,
                RouteMatch::Host(x) => f.host == x,
                RouteMatch::Tag(x) => f.tags.iter().any(|t| t == x),
                RouteMatch::Container(x) => f.container == x,
                RouteMatch::Namespace(x) => f.namespace == x,
                RouteMatch::Field(k, x) => f.fields.get(k).is_some_and(|v| v == x),
            });
            if hit {
                for i in &r.receivers {
                    if !out.contains(i) {
                        out.push(*i);
                    }
                }
                if !r.keep_going {
                    break;
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse("n.yaml", text, Path::new("/nonexistent"))
    }

    #[test]
    fn routes_pick_receivers_in_order() {
        let c = parse(
            "receivers:\n  - name: a\n    webhook: { url: \"http://127.0.0.1:1/a\" }\n  - name: b\n    webhook: { url: \"https://example.com/b\" }\nroutes:\n  - match: { severity: \">=error\" }\n    receivers: [a]\n    continue: true\n  - match: { severity: \">=warning\" }\n    receivers: [b]\n",
        )
        .unwrap();
        let fields = Default::default();
        let facts = |severity: Severity| Facts {
            severity: severity as i32,
            rule: "r",
            host: "h",
            tags: &[],
            container: "host",
            namespace: "",
            fields: &fields,
        };
        assert_eq!(c.route(&facts(Severity::Critical)), vec![0, 1]);
        assert_eq!(c.route(&facts(Severity::Warning)), vec![1]);
        assert!(c.route(&facts(Severity::Notice)).is_empty());
    }

    #[test]
    fn routes_see_container_namespace_and_output_fields() {
        let c = parse(
            "receivers:\n  - name: a\n    webhook: { url: \"http://x/\" }\nroutes:\n  - match: { namespace: shop, proc.exepath: /usr/bin/curl }\n    receivers: [a]\n",
        )
        .unwrap();
        let mut fields = std::collections::HashMap::new();
        fields.insert("proc.exepath".to_string(), "/usr/bin/curl".to_string());
        let mut facts = Facts {
            severity: 4,
            rule: "r",
            host: "h",
            tags: &[],
            container: "abc",
            namespace: "shop",
            fields: &fields,
        };
        assert_eq!(c.route(&facts), vec![0]);
        facts.namespace = "kube-system";
        assert!(c.route(&facts).is_empty());
        let e = parse("receivers:\n  - name: a\n    webhook: { url: \"http://x/\" }\nroutes:\n  - match: { colour: red }\n    receivers: [a]\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown match key `colour`"), "{e}");
    }

    #[test]
    fn errors_name_the_place() {
        let e = parse("receivers:\n  - name: a\n    webhok: {}\n")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("n.yaml:3:5: "), "{e}");
        let e = parse("receivers:\n  - name: a\n    webhook: { url: \"http://x/\" }\nroutes:\n  - receivers: [pagr]\n")
            .unwrap_err()
            .to_string();
        assert_eq!(e, "n.yaml: routes[0]: unknown receiver `pagr`");
        let e = parse("receivers:\n  - name: a\n    webhook: { url: \"ftp://x/\" }\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("receivers[0] (a): url `ftp://x/`: http or https only"),
            "{e}"
        );
        let e =
            parse("receivers:\n  - name: a\n    webhook: { url: \"http://x/\", secret_file: s }\n")
                .unwrap_err()
                .to_string();
        assert!(e.contains("secret_file /nonexistent/s"), "{e}");
        let e = parse("receivers:\n  - name: p\n    pagerduty: { routing_key_file: k }\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("receivers[0] (p): routing_key_file /nonexistent/k"),
            "{e}"
        );
        let e = parse("receivers:\n  - name: p\n").unwrap_err().to_string();
        assert!(
            e.contains("a receiver needs a kind: webhook, pagerduty, slack or alertmanager"),
            "{e}"
        );
        let e = parse("receivers:\n  - name: a\n    webhook: { url: \"http://x/\" }\nroutes:\n  - match: { severity: \">=loud\" }\n    receivers: [a]\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("routes[0]: severity `>=loud`"), "{e}");
    }
}
