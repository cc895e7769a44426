//! The pages responders read: alert groups (filtered by URL), one group
//! with everything known about it, hosts, rules, and pivots.
use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
};

use askama::Template;
use axum::{
    extract::{Path, Query, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    Extension, Json,
};
use vigil_proto::v1::{
    timeline_entry::Entry, Alert, PivotQuery, ProcessInfo, TimelineQuery, TreeQuery,
};

use super::{
    view::{self, Failure, Nav, Tag},
    Console, Identity,
};
use crate::{
    activity::{Order, Span},
    groups::{GroupFilter, GroupRecord, GroupState, Reason},
    investigate,
    store::{now_ns, AgentState, AlertStore},
};

type Params = Query<HashMap<String, String>>;

/// Runs the store off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Failure> + Send + 'static,
) -> Result<T, Failure> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Failure::internal(e.to_string()))?
}

const MINUTE_NS: i64 = 60_000_000_000;

/// The alert list's filters, as the URL carries them.
#[derive(Debug, Clone)]
pub struct Filters {
    /// open, acknowledged, resolved, closed or any.
    pub state: String,
    /// A severity name: this or higher; empty: any.
    pub severity: String,
    pub rule: String,
    pub host: String,
    pub tag: String,
    /// 1h, 24h, 7d, 30d or all.
    pub since: String,
}

pub const SINCE: [&str; 5] = ["1h", "24h", "7d", "30d", "all"];
pub const STATES: [&str; 5] = ["open", "acknowledged", "resolved", "closed", "any"];

impl Filters {
    pub fn from(p: &HashMap<String, String>) -> Result<Filters, Failure> {
        let get = |k: &str| p.get(k).map(|v| v.trim().to_string()).unwrap_or_default();
        let f = Filters {
            state: p.get("state").map_or("open".into(), |s| s.trim().into()),
            severity: get("severity"),
            rule: get("rule"),
            host: get("host"),
            tag: get("tag"),
            since: p.get("since").map_or("7d".into(), |s| s.trim().into()),
        };
        if !STATES.contains(&f.state.as_str()) {
            return Err(Failure::bad_request(format!(
                "unknown state `{}`: {}",
                view::clip(&f.state, 40),
                STATES.join(", ")
            )));
        }
        if !f.severity.is_empty() && !view::SEVERITIES.contains(&f.severity.as_str()) {
            return Err(Failure::bad_request(format!(
                "unknown severity `{}`: {}",
                view::clip(&f.severity, 40),
                view::SEVERITIES.join(", ")
            )));
        }
        if !SINCE.contains(&f.since.as_str()) {
            return Err(Failure::bad_request(format!(
                "unknown time span `{}`: {}",
                view::clip(&f.since, 40),
                SINCE.join(", ")
            )));
        }
        Ok(f)
    }

    pub fn group_filter(&self, limit: u32) -> GroupFilter {
        let nonempty = |s: &str| (!s.is_empty()).then(|| s.to_string());
        let span_ns = match self.since.as_str() {
            "1h" => Some(60 * MINUTE_NS),
            "24h" => Some(24 * 60 * MINUTE_NS),
            "7d" => Some(7 * 24 * 60 * MINUTE_NS),
            "30d" => Some(30 * 24 * 60 * MINUTE_NS),
            _ => None,
        };
        GroupFilter {
            state: GroupState::parse(&self.state),
            since_ns: span_ns.map(|s| now_ns() - s),
            host: nonempty(&self.host),
            rule: nonempty(&self.rule),
            min_severity: vigil_proto::v1::Severity::parse_name(&self.severity).map(|s| s as i32),
            tag: nonempty(&self.tag),
            id: None,
            limit,
        }
    }

    /// The query string that gives this view back.
    pub fn query(&self) -> String {
        [
            ("state", &self.state),
            ("severity", &self.severity),
            ("rule", &self.rule),
            ("host", &self.host),
            ("tag", &self.tag),
            ("since", &self.since),
        ]
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| format!("{k}={}", view::url_encode(v)))
        .collect::<Vec<_>>()
        .join("&")
    }
}

/// One group in a list.
pub struct GroupRow {
    pub id: String,
    pub severity: &'static str,
    pub rule: String,
    pub host: String,
    pub container: String,
    pub count: u64,
    pub first: String,
    pub last: String,
    pub last_ago: String,
    pub state: &'static str,
    pub assignee: String,
    pub output: String,
}

impl GroupRow {
    fn of(g: &GroupRecord, now: i64) -> GroupRow {
        GroupRow {
            id: g.id.clone(),
            severity: view::severity(g.severity),
            rule: g.rule.clone(),
            host: g.hostname.clone(),
            container: if g.container == "host" {
                "host".into()
            } else {
                view::clip(&g.container, 12)
            },
            count: g.count,
            first: view::time(g.first_seen_ns),
            last: view::time(g.last_seen_ns),
            last_ago: view::ago(g.last_seen_ns, now),
            state: g.state.name(),
            assignee: g.assignee.clone(),
            output: view::clip(&g.output, 200),
        }
    }
}

/// Most groups a list shows.
const LIST_LIMIT: u32 = 200;

#[derive(Template)]
#[template(path = "alerts.html")]
struct AlertsPage {
    nav: Nav,
    f: Filters,
    query: String,
    rows: Vec<GroupRow>,
    states: [&'static str; 5],
    severities: [&'static str; 8],
    since: [&'static str; 5],
    reasons: Vec<&'static str>,
}

#[derive(Template)]
#[template(path = "alert_rows.html")]
struct AlertRows {
    rows: Vec<GroupRow>,
    may_triage: bool,
}

async fn group_rows(c: &Arc<Console>, f: &Filters) -> Result<Vec<GroupRow>, Failure> {
    let store = c.store.clone();
    let filter = f.group_filter(LIST_LIMIT);
    blocking(move || {
        let now = now_ns();
        Ok(store
            .groups(&filter)?
            .iter()
            .map(|g| GroupRow::of(g, now))
            .collect())
    })
    .await
}

fn reasons() -> Vec<&'static str> {
    [
        Reason::TruePositive,
        Reason::FalsePositive,
        Reason::Benign,
        Reason::Duplicate,
    ]
    .into_iter()
    .map(Reason::name)
    .collect()
}

/// The alert groups, filtered by the URL's query.
pub async fn alerts(
    State(c): State<Arc<Console>>,
    Extension(me): Extension<Identity>,
    Query(p): Params,
) -> Result<Response, Failure> {
    let f = Filters::from(&p)?;
    let rows = group_rows(&c, &f).await?;
    let page = AlertsPage {
        nav: Nav::of(&me, "alerts"),
        query: f.query(),
        f,
        rows,
        states: STATES,
        severities: view::SEVERITIES,
        since: SINCE,
        reasons: reasons(),
    };
    Ok(view::html(StatusCode::OK, page.render()))
}

/// The list's rows alone: what a live page swaps in.
pub async fn alert_rows(
    State(c): State<Arc<Console>>,
    Extension(me): Extension<Identity>,
    Query(p): Params,
) -> Result<Response, Failure> {
    let f = Filters::from(&p)?;
    let rows = group_rows(&c, &f).await?;
    let page = AlertRows {
        rows,
        may_triage: me.role.may_triage(),
    };
    Ok(view::html(StatusCode::OK, page.render()))
}

/// The groups as JSON, for scripts (same filters as the page).
pub async fn api_groups(
    State(c): State<Arc<Console>>,
    Query(p): Params,
) -> Result<Response, Failure> {
    let f = Filters::from(&p)?;
    let store = c.store.clone();
    let filter = f.group_filter(1000);
    let list = blocking(move || Ok(store.groups(&filter)?)).await?;
    let out: Vec<_> = list
        .iter()
        .map(|g| {
            serde_json::json!({
                "id": g.id,
                "rule": g.rule,
                "severity": view::severity(g.severity),
                "host": g.hostname,
                "container": g.container,
                "state": g.state.name(),
                "reason": g.reason.map(Reason::name),
                "assignee": g.assignee,
                "count": g.count,
                "first_seen_unix_ns": g.first_seen_ns,
                "last_seen_unix_ns": g.last_seen_ns,
                "output": g.output,
                "tags": g.tags,
            })
        })
        .collect();
    Ok(Json(out).into_response())
}

/// One node of a drawn process tree.
pub struct TreeRow {
    /// Indentation, 0 to 12.
    pub depth: u32,
    pub role: String,
    pub pid: u32,
    pub command: String,
    pub user: String,
    pub exe: String,
    pub exited: String,
    pub events: Vec<String>,
    pub more_events: u64,
    pub alerts: Vec<String>,
}

pub struct TimelineRow {
    pub time: String,
    pub kind: &'static str,
    pub pid: u32,
    pub text: String,
    /// The alert this page is about.
    pub this: bool,
}

pub struct AuditRow {
    pub time: String,
    pub actor: String,
    pub client: String,
    pub action: String,
    pub detail: String,
}

pub struct DeliveryRow {
    pub time: String,
    pub receiver: String,
    pub event: String,
    pub state: String,
    pub attempts: u32,
    pub error: String,
}

pub struct SilenceRow {
    pub id: String,
    pub matchers: String,
    pub reason: String,
    pub by: String,
    pub until: String,
    pub live: bool,
    pub matched: u64,
}

/// A one-click pivot from a value in the alert.
pub struct PivotLink {
    pub kind: &'static str,
    pub value: String,
    pub href: String,
}

pub struct OtherAlert {
    pub id: String,
    pub time: String,
    pub output: String,
}

#[derive(Template)]
#[template(path = "alert.html")]
struct AlertPage {
    nav: Nav,
    g: GroupRow,
    reason: String,
    alert_id: String,
    output: String,
    fields: Vec<(String, String)>,
    tags: Vec<Tag>,
    tree: Vec<TreeRow>,
    tree_note: String,
    timeline: Vec<TimelineRow>,
    timeline_cut: bool,
    history: Vec<AuditRow>,
    deliveries: Vec<DeliveryRow>,
    silences: Vec<SilenceRow>,
    pivots: Vec<PivotLink>,
    others: Vec<OtherAlert>,
    reasons: Vec<&'static str>,
    silence_matchers: Vec<String>,
}

fn command(p: &ProcessInfo) -> String {
    if p.argv.is_empty() {
        p.exe.clone()
    } else {
        p.argv.join(" ")
    }
}

/// The fields an alert shows: the rule's output fields, then the process,
/// its container and its host.
fn alert_fields(a: &Alert) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    let mut push = |k: &str, v: String| {
        if !v.is_empty() {
            out.push((k.to_string(), view::clip(&v, 2000)));
        }
    };
    push("event", a.event_type.clone());
    push("time", view::time(a.time_unix_ns));
    if let Some(h) = &a.host {
        push("host", h.hostname.clone());
        push("kernel", h.kernel.clone());
        push("agent version", h.agent_version.clone());
    }
    if let Some(p) = &a.process {
        push("proc.pid", p.pid.to_string());
        push("proc.ppid", p.ppid.to_string());
        push("proc.exepath", p.exe.clone());
        push("proc.cmdline", command(p));
        push("proc.cwd", p.cwd.clone());
        push(
            "user",
            if p.user.is_empty() {
                format!("uid {}", p.uid)
            } else {
                format!("{} (uid {})", p.user, p.uid)
            },
        );
        push("user.loginname", p.login_user.clone());
        if let Some(x) = &p.executable {
            push("sha256", x.sha256.clone());
            let flags: Vec<&str> = [
                (x.deleted, "deleted"),
                (x.memfd, "memfd"),
                (x.drift, "drift"),
            ]
            .iter()
            .filter(|(on, _)| *on)
            .map(|(_, n)| *n)
            .collect();
            push("executable", flags.join(", "));
        }
    }
    for (i, anc) in a.ancestry.iter().enumerate().take(6) {
        let cmd = if anc.argv.is_empty() {
            anc.exe.clone()
        } else {
            anc.argv.join(" ")
        };
        push(
            &format!("ancestor {}", i + 1),
            format!("{} {}", anc.pid, cmd),
        );
    }
    if let Some(c) = &a.container {
        if c.id != "host" {
            push("container.id", c.id.clone());
            push("container.image", c.image.clone());
            push("container.runtime", c.runtime.clone());
            push("k8s.ns", c.k8s_namespace.clone());
            push("k8s.pod", c.k8s_pod.clone());
        }
    }
    let fields: BTreeMap<_, _> = a.fields.iter().collect();
    for (k, v) in fields {
        if !v.is_empty() && !out.iter().any(|(n, _)| n == k) {
            out.push((k.clone(), view::clip(v, 2000)));
        }
    }
    out
}

/// Pivots the alert offers: its hash, executable, user, image, and any
/// address or domain among its fields.
fn pivots(a: &Alert) -> Vec<PivotLink> {
    let mut out: Vec<PivotLink> = Vec::new();
    let mut add = |kind: &'static str, value: &str| {
        if !value.is_empty() && !out.iter().any(|p| p.kind == kind && p.value == value) {
            out.push(PivotLink {
                kind,
                value: view::clip(value, 200),
                href: format!("/pivot?{kind}={}", view::url_encode(value)),
            });
        }
    };
    if let Some(p) = &a.process {
        if let Some(x) = &p.executable {
            add("sha256", &x.sha256);
        }
        add("exe", &p.exe);
        add("user", &p.user);
    }
    if let Some(c) = &a.container {
        add("image", &c.image);
    }
    let fields: BTreeMap<_, _> = a.fields.iter().collect();
    for (k, v) in fields {
        let v = v.trim();
        if v.parse::<std::net::IpAddr>().is_ok() && (k.contains("ip") || k.starts_with("fd.")) {
            add("ip", v);
        } else if (k.contains("domain") || k.ends_with(".name") && k.contains("rip"))
            && v.contains('.')
            && !v.contains('/')
        {
            add("domain", v);
        }
    }
    out
}

/// One group: everything known about it, and what a responder can do.
pub async fn alert(
    State(c): State<Arc<Console>>,
    Extension(me): Extension<Identity>,
    Path(id): Path<String>,
) -> Result<Response, Failure> {
    let store = c.store.clone();
    let nav = Nav::of(&me, "alerts");
    let page = blocking(move || {
        let now = now_ns();
        let g = store
            .groups(&GroupFilter {
                id: Some(id.clone()),
                limit: 1,
                ..GroupFilter::default()
            })?
            .into_iter()
            .next();
        // An alert's id leads to its group.
        let g = match g {
            Some(g) => g,
            None => match store.alert(&id)?.filter(|a| !a.group_id.is_empty()) {
                Some(a) => store.group(&a.group_id)?.ok_or_else(|| {
                    Failure::not_found(format!("no alert group `{}`", view::clip(&id, 80)))
                })?,
                None => {
                    return Err(Failure::not_found(format!(
                        "no alert group or alert `{}`",
                        view::clip(&id, 80)
                    )))
                }
            },
        };
        let recent = store.group_alerts(&g.id, 20)?;
        let newest = recent.first().cloned();
        let mut tree = Vec::new();
        let mut tree_note = String::new();
        let mut timeline = Vec::new();
        let mut timeline_cut = false;
        if let Some(a) = &newest {
            match investigate::tree(
                &*store,
                &TreeQuery {
                    alert_id: a.id.clone(),
                    events_per_process: 8,
                    max_descendants: 100,
                },
            ) {
                Ok(t) => {
                    if t.cut {
                        tree_note = "More descendants than shown.".into();
                    }
                    for n in &t.nodes {
                        let p = n.process.clone().unwrap_or_default();
                        tree.push(TreeRow {
                            depth: n.depth.min(12),
                            role: n.role.clone(),
                            pid: p.pid,
                            command: view::clip(&command(&p), 300),
                            user: p.user.clone(),
                            exe: p.exe.clone(),
                            exited: if n.exited {
                                format!("exited {}", n.exit_code)
                            } else {
                                String::new()
                            },
                            events: n
                                .events
                                .iter()
                                .map(|e| {
                                    format!(
                                        "{} {}",
                                        view::time(e.time_unix_ns),
                                        view::clip(&investigate::describe(e), 200)
                                    )
                                })
                                .collect(),
                            more_events: n.events_cut,
                            alerts: n.alerts.iter().map(|x| view::clip(&x.rule, 100)).collect(),
                        });
                    }
                }
                Err(e) => tree_note = format!("No process tree: {e}"),
            }
            let t = investigate::timeline(
                &*store,
                &TimelineQuery {
                    around_alert: a.id.clone(),
                    window_ns: 5 * MINUTE_NS,
                    limit: 200,
                    ..TimelineQuery::default()
                },
                now,
            )?;
            timeline_cut = t.cut;
            for e in t.entries {
                match e.entry {
                    Some(Entry::Alert(x)) => timeline.push(TimelineRow {
                        time: view::time(x.time_unix_ns),
                        kind: "alert",
                        pid: x.process.as_ref().map_or(0, |p| p.pid),
                        text: view::clip(&format!("{}: {}", x.rule, x.output), 300),
                        this: x.id == a.id,
                    }),
                    Some(Entry::Activity(x)) => timeline.push(TimelineRow {
                        time: view::time(x.time_unix_ns),
                        kind: "event",
                        pid: x.process.as_ref().map_or(0, |p| p.pid),
                        text: view::clip(&investigate::describe(&x), 300),
                        this: false,
                    }),
                    None => {}
                }
            }
        }
        let history = store
            .history(&g.id)?
            .into_iter()
            .map(|h| AuditRow {
                time: view::time(h.time_ns),
                actor: h.actor,
                client: h.client,
                action: h.action,
                detail: view::clip(&h.detail, 4096),
            })
            .collect();
        let deliveries = store
            .deliveries(&g.id, 100)?
            .into_iter()
            .map(|d| DeliveryRow {
                time: view::time(d.done_ns.unwrap_or(d.created_ns)),
                receiver: d.receiver,
                event: d.event,
                state: d.state,
                attempts: d.attempts,
                error: view::clip(&d.last_error, 300),
            })
            .collect();
        let silences = match &newest {
            Some(a) => {
                let host = a.host.clone().unwrap_or_default();
                store
                    .silences(true)?
                    .into_iter()
                    .filter(|s| s.matches(&host, a))
                    .take(20)
                    .map(|s| SilenceRow {
                        live: s.is_active(now),
                        id: s.id,
                        matchers: s
                            .matchers
                            .iter()
                            .map(|m| m.text())
                            .collect::<Vec<_>>()
                            .join(" "),
                        reason: s.reason,
                        by: s.created_by,
                        until: view::time(s.expires_ns),
                        matched: s.matched,
                    })
                    .collect()
            }
            None => Vec::new(),
        };
        let mut silence_matchers = vec![format!("rule={}", g.rule), format!("host={}", g.hostname)];
        if g.container != "host" {
            silence_matchers.push(format!("container={}", g.container));
        }
        Ok(AlertPage {
            nav,
            reason: g.reason.map(Reason::name).unwrap_or_default().into(),
            alert_id: newest.as_ref().map(|a| a.id.clone()).unwrap_or_default(),
            output: newest
                .as_ref()
                .map_or_else(|| g.output.clone(), |a| a.output.clone()),
            fields: newest.as_ref().map(alert_fields).unwrap_or_default(),
            tags: newest
                .as_ref()
                .map(|a| a.tags.iter().map(|t| view::tag(t)).collect())
                .unwrap_or_else(|| g.tags.iter().map(|t| view::tag(t)).collect()),
            pivots: newest.as_ref().map(pivots).unwrap_or_default(),
            others: recent
                .iter()
                .map(|a| OtherAlert {
                    id: a.id.clone(),
                    time: view::time(a.time_unix_ns),
                    output: view::clip(&a.output, 200),
                })
                .collect(),
            g: GroupRow::of(&g, now),
            tree,
            tree_note,
            timeline,
            timeline_cut,
            history,
            deliveries,
            silences,
            reasons: reasons(),
            silence_matchers,
        })
    })
    .await?;
    Ok(view::html(StatusCode::OK, page.render()))
}

pub struct AgentRow {
    pub host: String,
    pub state: &'static str,
    pub reason: String,
    pub version: String,
    pub kernel: String,
    pub last: String,
    pub last_ago: String,
    pub losses: String,
    pub spool: u64,
    pub rules: u32,
    pub digest: String,
    pub cpu: String,
    pub rss: String,
    pub programs: String,
}

fn agent_row(a: &crate::store::AgentRecord, now: i64) -> AgentRow {
    let hb = &a.heartbeat;
    let host = hb.host.clone().unwrap_or_default();
    let losses: Vec<String> = hb
        .losses
        .iter()
        .filter(|l| l.count > 0)
        .map(|l| format!("{} {}", l.place, l.count))
        .collect();
    AgentRow {
        host: a.hostname.clone(),
        state: a.state.name(),
        reason: a.reason.clone(),
        version: host.agent_version,
        kernel: host.kernel,
        last: view::time(a.last_seen_ns),
        last_ago: view::ago(a.last_seen_ns, now),
        losses: if losses.is_empty() {
            "none".into()
        } else {
            losses.join(", ")
        },
        spool: hb.spool_depth,
        rules: hb.rules,
        digest: hb.rules_digest.chars().take(12).collect(),
        cpu: format!("{:.1}%", hb.cpu_percent),
        rss: format!("{} MiB", hb.rss_bytes / (1024 * 1024)),
        programs: hb
            .programs
            .iter()
            .map(|p| format!("{} {}/{}", p.name, p.attached, p.expected))
            .collect::<Vec<_>>()
            .join(", "),
    }
}

#[derive(Template)]
#[template(path = "hosts.html")]
struct HostsPage {
    nav: Nav,
    agents: Vec<AgentRow>,
    counts: [(usize, &'static str); 3],
}

/// Every agent with its state.
pub async fn hosts(
    State(c): State<Arc<Console>>,
    Extension(me): Extension<Identity>,
) -> Result<Response, Failure> {
    let store = c.store.clone();
    let list = blocking(move || Ok(store.agents()?)).await?;
    let now = now_ns();
    let count = |s: AgentState| list.iter().filter(|a| a.state == s).count();
    let page = HostsPage {
        nav: Nav::of(&me, "hosts"),
        counts: [
            (count(AgentState::Ok), "ok"),
            (count(AgentState::Degraded), "degraded"),
            (count(AgentState::Silent), "silent"),
        ],
        agents: list.iter().map(|a| agent_row(a, now)).collect(),
    };
    Ok(view::html(StatusCode::OK, page.render()))
}

pub struct ActivityRow {
    pub time: String,
    pub pid: u32,
    pub kind: String,
    pub text: String,
}

#[derive(Template)]
#[template(path = "host.html")]
struct HostPage {
    nav: Nav,
    name: String,
    agent: Option<AgentRow>,
    rows: Vec<GroupRow>,
    may_triage: bool,
    activity: Vec<ActivityRow>,
}

/// One host: its agent, recent alert groups and activity.
pub async fn host(
    State(c): State<Arc<Console>>,
    Extension(me): Extension<Identity>,
    Path(name): Path<String>,
) -> Result<Response, Failure> {
    let store = c.store.clone();
    let host = name.clone();
    let (agent, groups, activity) = blocking(move || {
        let now = now_ns();
        let agent = store
            .agents()?
            .into_iter()
            .find(|a| a.hostname == host)
            .map(|a| agent_row(&a, now));
        let groups: Vec<GroupRow> = store
            .groups(&GroupFilter {
                host: Some(host.clone()),
                limit: 50,
                ..GroupFilter::default()
            })?
            .iter()
            .map(|g| GroupRow::of(g, now))
            .collect();
        let activity = crate::activity::ActivityStore::span_activity(
            &*store,
            &Span {
                host: host.clone(),
                from_ns: now - 60 * MINUTE_NS,
                to_ns: now + MINUTE_NS,
                pid: None,
                order: Order::Backward,
                limit: 200,
            },
        )?
        .iter()
        .map(|e| ActivityRow {
            time: view::time(e.time_unix_ns),
            pid: e.process.as_ref().map_or(0, |p| p.pid),
            kind: e.event_type.clone(),
            text: view::clip(&investigate::describe(e), 300),
        })
        .collect();
        Ok((agent, groups, activity))
    })
    .await?;
    if agent.is_none() && groups.is_empty() {
        return Err(Failure::not_found(format!(
            "no host `{}`: no agent has reported under that name and no alert names it",
            view::clip(&name, 80)
        )));
    }
    let page = HostPage {
        nav: Nav::of(&me, "hosts"),
        name,
        agent,
        rows: groups,
        may_triage: me.role.may_triage(),
        activity,
    };
    Ok(view::html(StatusCode::OK, page.render()))
}

pub struct RuleRow {
    pub name: String,
    pub severity: &'static str,
    pub tags: Vec<Tag>,
    pub origin: String,
    pub hosts: usize,
    pub day: u64,
    pub week: u64,
    pub last: String,
    pub silenced: Vec<String>,
}

pub struct RuleSetRow {
    pub digest: String,
    pub rules: u32,
    pub hosts: String,
}

#[derive(Template)]
#[template(path = "rules.html")]
struct RulesPage {
    nav: Nav,
    rules: Vec<RuleRow>,
    sets: Vec<RuleSetRow>,
}

/// Most rules listed from one agent's heartbeat.
const MAX_RULES_PER_AGENT: usize = 5000;

/// The rules the agents run, how often each fired, and which are
/// silenced.
pub async fn rules(
    State(c): State<Arc<Console>>,
    Extension(me): Extension<Identity>,
) -> Result<Response, Failure> {
    let store = c.store.clone();
    let (rules, sets) = blocking(move || {
        let now = now_ns();
        let agents = store.agents()?;
        let day: HashMap<String, u64> = store
            .rule_counts(now - 24 * 60 * MINUTE_NS, 5000)?
            .into_iter()
            .map(|r| (r.rule, r.alerts))
            .collect();
        let week = store.rule_counts(now - 7 * 24 * 60 * MINUTE_NS, 5000)?;
        let live: Vec<_> = store
            .silences(false)?
            .into_iter()
            .filter(|s| s.is_active(now))
            .collect();
        let mut by_name: BTreeMap<String, RuleRow> = BTreeMap::new();
        let mut sets: BTreeMap<String, (u32, Vec<String>)> = BTreeMap::new();
        for a in &agents {
            let hb = &a.heartbeat;
            let e = sets
                .entry(hb.rules_digest.chars().take(12).collect())
                .or_insert((hb.rules, Vec::new()));
            e.1.push(a.hostname.clone());
            for r in hb.loaded_rules.iter().take(MAX_RULES_PER_AGENT) {
                let row = by_name.entry(r.name.clone()).or_insert_with(|| RuleRow {
                    name: r.name.clone(),
                    severity: view::severity(r.severity),
                    tags: r.tags.iter().map(|t| view::tag(t)).collect(),
                    origin: r.origin.clone(),
                    hosts: 0,
                    day: 0,
                    week: 0,
                    last: String::new(),
                    silenced: Vec::new(),
                });
                row.hosts += 1;
            }
        }
        // Rules that fired but no agent reports now (an older rule set).
        for w in &week {
            let row = by_name.entry(w.rule.clone()).or_insert_with(|| RuleRow {
                name: w.rule.clone(),
                severity: "",
                tags: Vec::new(),
                origin: String::new(),
                hosts: 0,
                day: 0,
                week: 0,
                last: String::new(),
                silenced: Vec::new(),
            });
            row.week = w.alerts;
            row.last = view::time(w.last_ns);
        }
        for row in by_name.values_mut() {
            row.day = day.get(&row.name).copied().unwrap_or(0);
            row.silenced = live
                .iter()
                .filter(|s| {
                    s.matchers
                        .iter()
                        .any(|m| m.text() == format!("rule={}", row.name))
                })
                .map(|s| s.id.clone())
                .collect();
        }
        let mut rules: Vec<RuleRow> = by_name.into_values().collect();
        rules.sort_by(|a, b| b.week.cmp(&a.week).then_with(|| a.name.cmp(&b.name)));
        let sets = sets
            .into_iter()
            .map(|(digest, (rules, hosts))| RuleSetRow {
                digest,
                rules,
                hosts: hosts.join(", "),
            })
            .collect();
        Ok((rules, sets))
    })
    .await?;
    let page = RulesPage {
        nav: Nav::of(&me, "rules"),
        rules,
        sets,
    };
    Ok(view::html(StatusCode::OK, page.render()))
}

pub struct PivotHostRow {
    pub host: String,
    pub first: String,
    pub last: String,
    pub count: u64,
}

pub struct PivotProcessRow {
    pub host: String,
    pub time: String,
    pub pid: u32,
    pub user: String,
    pub command: String,
    pub detail: String,
}

#[derive(Template)]
#[template(path = "pivot.html")]
struct PivotPage {
    nav: Nav,
    kind: String,
    value: String,
    hosts: Vec<PivotHostRow>,
    hosts_cut: bool,
    processes: Vec<PivotProcessRow>,
    processes_cut: bool,
}

/// Where else a hash, executable, user, address, domain or image was seen.
pub async fn pivot(
    State(c): State<Arc<Console>>,
    Extension(me): Extension<Identity>,
    Query(p): Params,
) -> Result<Response, Failure> {
    let kinds = ["sha256", "exe", "user", "ip", "domain", "image"];
    let given: Vec<_> = kinds
        .iter()
        .filter_map(|k| p.get(*k).map(|v| (*k, v.clone())))
        .collect();
    let [(kind, value)] = given.as_slice() else {
        return Err(Failure::bad_request(
            "give exactly one of sha256, exe, user, ip, domain, image",
        ));
    };
    let (kind, value) = (kind.to_string(), value.clone());
    let mut q = PivotQuery {
        limit: 200,
        ..PivotQuery::default()
    };
    match kind.as_str() {
        "sha256" => q.sha256 = value.clone(),
        "exe" => q.exe = value.clone(),
        "user" => q.user = value.clone(),
        "ip" => q.ip = value.clone(),
        "domain" => q.domain = value.clone(),
        _ => q.image = value.clone(),
    }
    let store = c.store.clone();
    let found = blocking(move || Ok(investigate::pivot(&*store, &q, now_ns())?)).await?;
    let page = PivotPage {
        nav: Nav::of(&me, "alerts"),
        kind,
        value: view::clip(&value, 300),
        hosts: found
            .hosts
            .iter()
            .map(|h| PivotHostRow {
                host: h.hostname.clone(),
                first: view::time(h.first_seen_unix_ns),
                last: view::time(h.last_seen_unix_ns),
                count: h.count,
            })
            .collect(),
        hosts_cut: found.hosts_cut,
        processes: found
            .processes
            .iter()
            .map(|x| {
                let pr = x.process.clone().unwrap_or_default();
                PivotProcessRow {
                    host: x.hostname.clone(),
                    time: view::time(x.time_unix_ns),
                    pid: pr.pid,
                    user: pr.user.clone(),
                    command: view::clip(&command(&pr), 300),
                    detail: view::clip(&x.detail, 200),
                }
            })
            .collect(),
        processes_cut: found.processes_cut,
    };
    Ok(view::html(StatusCode::OK, page.render()))
}
