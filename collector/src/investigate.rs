//! The investigation queries: a host's timeline, an alert's process tree
//! and pivots across the fleet, assembled from the activity store's reads
//! ([`ActivityStore`]). Every answer is bounded and says when it was cut.
use std::collections::HashMap;

use vigil_proto::v1::{
    timeline_entry::Entry, Activity, ActivityKind, Alert, Pivot, PivotHost, PivotProcess,
    PivotQuery, ProcessInfo, ProcessTree, Timeline, TimelineEntry, TimelineQuery, TreeNode,
    TreeQuery,
};

use crate::{
    activity::{ActivityStore, Detail, Order, PivotKey, ProcessRow, Span},
    store::StoreError,
};

const MINUTE_NS: i64 = 60_000_000_000;
/// `--around` without a window: this much on each side of the alert.
pub const DEFAULT_WINDOW_NS: i64 = 5 * MINUTE_NS;
pub const DEFAULT_TIMELINE_LIMIT: u32 = 1000;
pub const MAX_TIMELINE_LIMIT: u32 = 5000;
pub const DEFAULT_EVENTS_PER_PROCESS: u32 = 50;
pub const MAX_EVENTS_PER_PROCESS: u32 = 1000;
pub const DEFAULT_MAX_DESCENDANTS: u32 = 500;
pub const MAX_DESCENDANTS: u32 = 5000;
/// Most ancestors followed up from an alert's process.
pub const MAX_ANCESTORS: usize = 64;
/// Most alerts listed per process in a tree.
const ALERTS_PER_PROCESS: u32 = 20;
/// A pivot's host counts come from at most this many of the newest matches.
pub const PIVOT_SCAN: u32 = 50_000;
pub const DEFAULT_PIVOT_LIMIT: u32 = 100;
pub const MAX_PIVOT_LIMIT: u32 = 1000;
/// Most bytes of an answer (the API's messages are at most 4 MiB): a
/// timeline or tree that would be larger is cut, and says so.
pub const ANSWER_BYTES: usize = 3 << 20;
/// Most events one process's events are counted to in a tree.
const COUNT_EVENTS: u32 = 10_000;

/// A pivot without `since` looks this far back.
pub const DEFAULT_PIVOT_SINCE_NS: i64 = 7 * 24 * 60 * MINUTE_NS;

#[derive(Debug, thiserror::Error)]
pub enum InvestigateError {
    /// The query itself is wrong.
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn bounded(v: u32, default: u32, max: u32) -> u32 {
    match v {
        0 => default,
        n => n.min(max),
    }
}

fn alert_entry(mut a: Alert) -> (i64, TimelineEntry) {
    a.context.clear();
    (
        a.time_unix_ns,
        TimelineEntry {
            entry: Some(Entry::Alert(a)),
        },
    )
}

fn activity_entry(a: Activity) -> (i64, TimelineEntry) {
    (
        a.time_unix_ns,
        TimelineEntry {
            entry: Some(Entry::Activity(a)),
        },
    )
}

/// Up to `n` entries of one side of a span, alerts and activity merged in
/// the span's order; true when there were more.
fn side(
    store: &dyn ActivityStore,
    span: Span,
    n: u32,
    bytes: usize,
) -> Result<(Vec<(i64, TimelineEntry)>, bool), InvestigateError> {
    if n == 0 || span.from_ns > span.to_ns {
        return Ok((Vec::new(), false));
    }
    let span = Span {
        limit: n + 1,
        ..span
    };
    let mut all: Vec<(i64, TimelineEntry)> = store
        .span_alerts(&span)?
        .into_iter()
        .map(alert_entry)
        .chain(store.span_activity(&span)?.into_iter().map(activity_entry))
        .collect();
    // At one instant, the event before the alert it raised.
    let rank = |(t, e): &(i64, TimelineEntry)| (*t, matches!(e.entry, Some(Entry::Alert(_))));
    match span.order {
        Order::Forward => all.sort_by_key(rank),
        Order::Backward => all.sort_by_key(|x| std::cmp::Reverse(rank(x))),
    }
    let mut cut = all.len() > n as usize;
    all.truncate(n as usize);
    let mut size = 0;
    if let Some(over) = all.iter().position(|(_, e)| {
        size += prost::Message::encoded_len(e) + 8;
        size > bytes
    }) {
        all.truncate(over);
        cut = true;
    }
    Ok((all, cut))
}

/// A host's alerts and activity in time order: in `[from, to]`, or around
/// an alert. Cut to the limit around the alert (half before, half after),
/// or to the newest.
pub fn timeline(
    store: &dyn ActivityStore,
    q: &TimelineQuery,
    now_ns: i64,
) -> Result<Timeline, InvestigateError> {
    let limit = bounded(q.limit, DEFAULT_TIMELINE_LIMIT, MAX_TIMELINE_LIMIT);
    let pid = (q.pid != 0).then_some(q.pid);
    let (host, from, to, center) = if !q.around_alert.is_empty() {
        let a = store
            .alert_by_id(&q.around_alert)?
            .ok_or_else(|| InvestigateError::NotFound(format!("no alert `{}`", q.around_alert)))?;
        let w = if q.window_ns > 0 {
            q.window_ns
        } else {
            DEFAULT_WINDOW_NS
        };
        let host = a.host.map(|h| h.hostname).unwrap_or_default();
        if !q.host.is_empty() && q.host != host {
            return Err(InvestigateError::Invalid(format!(
                "alert `{}` is from host `{host}`, not `{}`",
                q.around_alert, q.host
            )));
        }
        let t = a.time_unix_ns;
        (host, t.saturating_sub(w), t.saturating_add(w), Some(t))
    } else {
        if q.host.is_empty() {
            return Err(InvestigateError::Invalid(
                "a timeline needs a host (--host) or an alert (--around)".into(),
            ));
        }
        let to = if q.to_unix_ns > 0 {
            q.to_unix_ns
        } else {
            now_ns
        };
        if q.from_unix_ns > to {
            return Err(InvestigateError::Invalid(
                "the timeline's start is after its end".into(),
            ));
        }
        (q.host.clone(), q.from_unix_ns, to, None)
    };
    let span = |from_ns, to_ns, order| Span {
        host: host.clone(),
        from_ns,
        to_ns,
        pid,
        order,
        limit: 0,
    };
    let (entries, cut) = match center {
        Some(t) => {
            let half = limit / 2;
            let bytes = ANSWER_BYTES / 2;
            let (mut before, cut_before) = side(
                store,
                span(from, t.saturating_sub(1), Order::Backward),
                half,
                bytes,
            )?;
            let (after, cut_after) = side(store, span(t, to, Order::Forward), limit - half, bytes)?;
            before.reverse();
            before.extend(after);
            (before, cut_before || cut_after)
        }
        None => {
            let (mut newest, cut) =
                side(store, span(from, to, Order::Backward), limit, ANSWER_BYTES)?;
            newest.reverse();
            (newest, cut)
        }
    };
    Ok(Timeline {
        host,
        from_unix_ns: from,
        to_unix_ns: to,
        entries: entries.into_iter().map(|(_, e)| e).collect(),
        cut,
    })
}

/// A tree node from a stored process row.
fn node(row: ProcessRow, role: &str) -> TreeNode {
    TreeNode {
        process: Some(row.process),
        role: role.into(),
        depth: 0,
        exit_unix_ns: row.exit_ns.unwrap_or(0),
        exit_code: row.exit_code.unwrap_or(0),
        exited: row.exit_ns.is_some(),
        events: Vec::new(),
        events_cut: 0,
        alerts: Vec::new(),
        partial: row.detail == Detail::Partial,
    }
}

/// A node for a process only the alert names (no row stored for it).
fn named_node(p: ProcessInfo, role: &str) -> TreeNode {
    TreeNode {
        process: Some(p),
        role: role.into(),
        partial: true,
        ..Default::default()
    }
}

/// The alert's process, its ancestors up to init and its descendants, each
/// with its own events and alerts; root first, each node before its
/// children.
pub fn tree(store: &dyn ActivityStore, q: &TreeQuery) -> Result<ProcessTree, InvestigateError> {
    let per = bounded(
        q.events_per_process,
        DEFAULT_EVENTS_PER_PROCESS,
        MAX_EVENTS_PER_PROCESS,
    );
    let max_desc = bounded(q.max_descendants, DEFAULT_MAX_DESCENDANTS, MAX_DESCENDANTS);
    let alert = store
        .alert_by_id(&q.alert_id)?
        .ok_or_else(|| InvestigateError::NotFound(format!("no alert `{}`", q.alert_id)))?;
    let hostname = alert
        .host
        .as_ref()
        .map(|h| h.hostname.clone())
        .unwrap_or_default();
    let ap = alert.process.clone().unwrap_or_default();
    if ap.proc_id.is_empty() {
        return Err(InvestigateError::Invalid(format!(
            "alert `{}` names no process id (raised by an agent without activity support, or not about a process)",
            q.alert_id
        )));
    }
    // The alerting process: its row, else what the alert says of it.
    let me = match store.process(&hostname, &ap.proc_id)? {
        Some(r) => node(r, "alerting"),
        None => named_node(ap.clone(), "alerting"),
    };
    // Up through parents; where the view has no row, the alert's own
    // ancestry (nearest first) names the process.
    let named: HashMap<&str, ProcessInfo> = alert
        .ancestry
        .iter()
        .enumerate()
        .map(|(i, a)| {
            (
                a.proc_id.as_str(),
                ProcessInfo {
                    pid: a.pid,
                    exe: a.exe.clone(),
                    argv: a.argv.clone(),
                    proc_id: a.proc_id.clone(),
                    parent_proc_id: alert
                        .ancestry
                        .get(i + 1)
                        .map(|n| n.proc_id.clone())
                        .unwrap_or_default(),
                    ..Default::default()
                },
            )
        })
        .collect();
    let mut ancestors: Vec<TreeNode> = Vec::new();
    let mut parent = me
        .process
        .as_ref()
        .map(|p| p.parent_proc_id.clone())
        .filter(|p| !p.is_empty())
        .or_else(|| alert.ancestry.first().map(|a| a.proc_id.clone()));
    let mut seen = std::collections::HashSet::from([ap.proc_id.clone()]);
    while let Some(id) = parent.take().filter(|id| !id.is_empty()) {
        if ancestors.len() >= MAX_ANCESTORS || !seen.insert(id.clone()) {
            break;
        }
        let n = match store.process(&hostname, &id)? {
            Some(r) => {
                let mut n = node(r, "ancestor");
                // A partial row learns its parent from the ancestry.
                if let (Some(p), Some(a)) = (n.process.as_mut(), named.get(id.as_str())) {
                    if p.parent_proc_id.is_empty() {
                        p.parent_proc_id = a.parent_proc_id.clone();
                    }
                }
                n
            }
            None => match named.get(id.as_str()) {
                Some(p) => named_node(p.clone(), "ancestor"),
                None => break,
            },
        };
        parent = n.process.as_ref().map(|p| p.parent_proc_id.clone());
        let init = n.process.as_ref().is_some_and(|p| p.pid == 1);
        ancestors.push(n);
        if init {
            break;
        }
    }
    ancestors.reverse();
    // Down, breadth first, bounded; drawn depth first.
    let mut children: HashMap<String, Vec<TreeNode>> = HashMap::new();
    let mut frontier = vec![ap.proc_id.clone()];
    let mut count = 0u32;
    let mut cut = false;
    while !frontier.is_empty() && !cut {
        let rows = store.children(&hostname, &frontier, max_desc - count + 1)?;
        frontier.clear();
        for r in rows {
            if count == max_desc {
                cut = true;
                break;
            }
            let id = r.process.proc_id.clone();
            if !seen.insert(id.clone()) {
                continue;
            }
            let parent = r.process.parent_proc_id.clone();
            children
                .entry(parent)
                .or_default()
                .push(node(r, "descendant"));
            frontier.push(id);
            count += 1;
        }
    }
    let mut nodes: Vec<TreeNode> = Vec::new();
    for (d, mut n) in ancestors.into_iter().enumerate() {
        n.depth = d as u32;
        nodes.push(n);
    }
    let base = nodes.len() as u32;
    let mut stack = vec![(me, base)];
    while let Some((mut n, depth)) = stack.pop() {
        n.depth = depth;
        let id = n
            .process
            .as_ref()
            .map(|p| p.proc_id.clone())
            .unwrap_or_default();
        if let Some(kids) = children.remove(&id) {
            for k in kids.into_iter().rev() {
                stack.push((k, depth + 1));
            }
        }
        nodes.push(n);
    }
    // Each node's events and alerts, while the answer stays under its
    // size; past it, the rest of the nodes come without them (cut).
    let mut size: usize = nodes.iter().map(prost::Message::encoded_len).sum();
    for n in &mut nodes {
        let id = n
            .process
            .as_ref()
            .map(|p| p.proc_id.clone())
            .unwrap_or_default();
        if id.is_empty() {
            continue;
        }
        if size > ANSWER_BYTES {
            cut = true;
            continue;
        }
        let (mut events, total) = store.process_events(&hostname, &id, per)?;
        let total = if (events.len() as u32) < per {
            events.len() as u64
        } else {
            total.min(u64::from(COUNT_EVENTS))
        };
        // The node names the process; its events need not repeat it (an
        // exec keeps its own: the program it started).
        for e in events.iter_mut().filter(|e| e.kind() != ActivityKind::Exec) {
            e.process = None;
        }
        n.events_cut = total.saturating_sub(events.len() as u64);
        n.events = events;
        n.alerts = store.process_alerts(&hostname, &id, ALERTS_PER_PROCESS)?;
        size += prost::Message::encoded_len(n);
    }
    Ok(ProcessTree {
        alert_id: alert.id,
        hostname,
        nodes,
        cut,
    })
}

/// The pivot a query asks for, checked and normalized.
pub fn pivot_key(q: &PivotQuery) -> Result<PivotKey, InvestigateError> {
    let given: Vec<PivotKey> = [
        (!q.sha256.is_empty()).then(|| PivotKey::Sha256(q.sha256.trim().to_ascii_lowercase())),
        (!q.exe.is_empty()).then(|| PivotKey::Exe(q.exe.clone())),
        (!q.user.is_empty()).then(|| PivotKey::User(q.user.clone())),
        (!q.ip.is_empty()).then(|| PivotKey::Ip(q.ip.trim().to_string())),
        (!q.domain.is_empty())
            .then(|| PivotKey::Domain(q.domain.trim().trim_end_matches('.').to_ascii_lowercase())),
        (!q.image.is_empty()).then(|| PivotKey::Image(q.image.clone())),
    ]
    .into_iter()
    .flatten()
    .collect();
    let [key] = <[PivotKey; 1]>::try_from(given).map_err(|_| {
        InvestigateError::Invalid(
            "a pivot takes exactly one of --sha256, --exe, --user, --ip, --domain, --image".into(),
        )
    })?;
    match &key {
        PivotKey::Sha256(h) if h.len() != 64 || !h.bytes().all(|b| b.is_ascii_hexdigit()) => Err(
            InvestigateError::Invalid(format!("--sha256 `{h}` is not 64 hex digits")),
        ),
        PivotKey::Ip(ip) => match ip.parse::<std::net::IpAddr>() {
            Ok(a) => Ok(PivotKey::Ip(a.to_string())),
            Err(_) => Err(InvestigateError::Invalid(format!(
                "--ip `{ip}` is not an IPv4 or IPv6 address"
            ))),
        },
        _ => Ok(key),
    }
}

/// Where a binary, user, image, address or domain shows up: hosts with
/// first and last seen and counts, and the newest matching processes.
pub fn pivot(
    store: &dyn ActivityStore,
    q: &PivotQuery,
    now_ns: i64,
) -> Result<Pivot, InvestigateError> {
    let key = pivot_key(q)?;
    let limit = bounded(q.limit, DEFAULT_PIVOT_LIMIT, MAX_PIVOT_LIMIT);
    let since = if q.since_unix_ns > 0 {
        q.since_unix_ns
    } else {
        now_ns.saturating_sub(DEFAULT_PIVOT_SINCE_NS)
    };
    let (hosts, hosts_cut) = store.pivot_hosts(&key, since, PIVOT_SCAN)?;
    let mut matches = store.pivot_matches(&key, since, limit + 1)?;
    let processes_cut = matches.len() > limit as usize;
    matches.truncate(limit as usize);
    let process_pivot = key.is_process();
    Ok(Pivot {
        hosts: hosts
            .into_iter()
            .map(|h| PivotHost {
                hostname: h.hostname,
                first_seen_unix_ns: h.first_ns,
                last_seen_unix_ns: h.last_ns,
                count: h.count,
            })
            .collect(),
        processes: matches
            .into_iter()
            .map(|(hostname, a)| PivotProcess {
                hostname,
                detail: if process_pivot {
                    String::new()
                } else {
                    describe(&a)
                },
                time_unix_ns: a.time_unix_ns,
                process: a.process,
            })
            .collect(),
        hosts_cut,
        processes_cut,
    })
}

/// `host:port`, bracketing IPv6.
fn endpoint(addr: &str, port: u32) -> String {
    if addr.contains(':') {
        format!("[{addr}]:{port}")
    } else {
        format!("{addr}:{port}")
    }
}

/// One line saying what an activity event did.
pub fn describe(a: &Activity) -> String {
    let failed = if a.result < 0 {
        format!(" (failed: errno {})", -a.result)
    } else {
        String::new()
    };
    let cmd = |p: &Option<ProcessInfo>| {
        p.as_ref()
            .map(|p| {
                if p.argv.is_empty() {
                    p.exe.clone()
                } else {
                    p.argv.join(" ")
                }
            })
            .unwrap_or_default()
    };
    match a.kind() {
        ActivityKind::Exec => {
            let c = cmd(&a.process);
            format!("exec {}", if c.is_empty() { &a.path } else { &c })
        }
        ActivityKind::Fork => format!("fork {}", a.detail),
        ActivityKind::Exit => {
            if a.detail.is_empty() {
                format!("exit {}", a.exit_code)
            } else {
                format!("exit {} ({})", a.exit_code, a.detail)
            }
        }
        ActivityKind::Connect => format!(
            "connect {} {}{failed}",
            a.protocol,
            endpoint(&a.remote_addr, a.remote_port)
        ),
        ActivityKind::Accept => format!(
            "accept {} from {}{failed}",
            a.protocol,
            endpoint(&a.remote_addr, a.remote_port)
        ),
        ActivityKind::Listen => format!(
            "listen {} {}{failed}",
            a.protocol,
            if a.local_addr.is_empty() && !a.path.is_empty() {
                a.path.clone()
            } else {
                endpoint(&a.local_addr, a.local_port)
            }
        ),
        ActivityKind::Dns => format!("dns {} {}", a.domain, a.detail),
        ActivityKind::File => format!("{} {}{failed}", a.detail, a.path),
        ActivityKind::Other | ActivityKind::Unspecified => {
            format!("{} {}{failed}", a.event_type, a.detail)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pivot_keys_are_checked_and_normalized() {
        let q = |f: fn(&mut PivotQuery)| {
            let mut q = PivotQuery::default();
            f(&mut q);
            pivot_key(&q)
        };
        assert!(matches!(q(|_| {}), Err(InvestigateError::Invalid(_))));
        assert!(q(|q| {
            q.exe = "/bin/sh".into();
            q.user = "root".into();
        })
        .is_err());
        let h = "AB".repeat(32);
        assert_eq!(
            q(|q| q.sha256 = "AB".repeat(32)).unwrap(),
            PivotKey::Sha256(h.to_ascii_lowercase())
        );
        assert!(q(|q| q.sha256 = "abc".into()).is_err());
        assert!(q(|q| q.ip = "10.0.0.300".into()).is_err());
        assert_eq!(
            q(|q| q.ip = "::ffff:1.2.3.4".into()).unwrap(),
            PivotKey::Ip("::ffff:1.2.3.4".into())
        );
        assert_eq!(
            q(|q| q.domain = "Example.COM.".into()).unwrap(),
            PivotKey::Domain("example.com".into())
        );
    }

    #[test]
    fn events_read_as_one_line() {
        let a = Activity {
            kind: ActivityKind::Connect as i32,
            protocol: "tcp".into(),
            remote_addr: "::1".into(),
            remote_port: 443,
            result: -111,
            ..Default::default()
        };
        assert_eq!(describe(&a), "connect tcp [::1]:443 (failed: errno 111)");
        let e = Activity {
            kind: ActivityKind::Exec as i32,
            process: Some(ProcessInfo {
                argv: vec!["sh".into(), "-c".into(), "id".into()],
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(describe(&e), "exec sh -c id");
    }
}
