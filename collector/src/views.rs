//! The investigation client's views of timelines, process trees and
//! pivots: a table (or a tree drawn for the terminal) by default, one JSON
//! object per line with `--json`, and `export`'s NDJSON bundle.
use std::io::Write;

use serde_json::{json, Value};
use vigil_proto::{
    json::{activity_json, alert_json, rfc3339},
    v1::{
        timeline_entry::Entry, Activity, Alert, AlertGroup, Pivot, ProcessInfo, ProcessTree,
        Severity, Timeline, TreeNode,
    },
};

use crate::investigate::describe;

/// An activity event as JSON, with a one-line summary of what it did.
pub fn event_json(a: &Activity) -> Value {
    let mut v = activity_json(a);
    v["summary"] = json!(describe(a));
    v
}

/// Time to the millisecond, UTC.
fn short_time(ns: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_nanos(ns.max(0) as u64);
    humantime::format_rfc3339_millis(t).to_string()
}

/// Time of day to the millisecond, for lines under a tree node.
fn clock(ns: i64) -> String {
    let t = short_time(ns);
    t.get(11..23).unwrap_or(&t).to_string()
}

/// At most `n` characters, with an ellipsis when cut, and control
/// characters escaped: command lines and paths come from the watched
/// hosts, and a newline or an escape sequence in them must neither break
/// a table nor reach the responder's terminal.
pub fn clip(s: &str, n: usize) -> String {
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i + 1 >= n && s.chars().count() > n {
            out.push('…');
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// The command line: argv, else the executable.
fn command_line(p: &ProcessInfo) -> String {
    if p.argv.is_empty() {
        p.exe.clone()
    } else {
        p.argv.join(" ")
    }
}

/// A short name: the executable's file name, else comm, else argv[0]'s.
fn name(p: &ProcessInfo) -> String {
    let base = |s: &str| s.rsplit('/').next().unwrap_or_default().to_string();
    let n = base(&p.exe);
    if !n.is_empty() {
        return n;
    }
    if !p.comm.is_empty() {
        return p.comm.clone();
    }
    p.argv.first().map(|a| base(a)).unwrap_or_default()
}

fn severity(a: &Alert) -> &'static str {
    Severity::try_from(a.severity)
        .unwrap_or(Severity::Unspecified)
        .name()
}

/// A timeline as a table, or one JSON object per line.
pub fn print_timeline(out: &mut impl Write, t: &Timeline, json: bool) -> std::io::Result<()> {
    if json {
        for e in &t.entries {
            let v = match &e.entry {
                Some(Entry::Alert(a)) => alert_json(a),
                Some(Entry::Activity(a)) => event_json(a),
                None => continue,
            };
            serde_json::to_writer(&mut *out, &v)?;
            out.write_all(b"\n")?;
        }
        return Ok(());
    }
    writeln!(
        out,
        "# {} from {} to {}: {} entries",
        clip(&t.host, 64),
        short_time(t.from_unix_ns),
        short_time(t.to_unix_ns),
        t.entries.len()
    )?;
    writeln!(
        out,
        "{:<24}  {:<8} {:>7}  {:<16} WHAT",
        "TIME", "KIND", "PID", "PROCESS"
    )?;
    for e in &t.entries {
        match &e.entry {
            Some(Entry::Alert(a)) => {
                let p = a.process.clone().unwrap_or_default();
                writeln!(
                    out,
                    "{:<24}  {:<8} {:>7}  {:<16} [{}] {}: {}",
                    short_time(a.time_unix_ns),
                    "ALERT",
                    p.pid,
                    clip(&name(&p), 16),
                    severity(a),
                    clip(&a.rule, 80),
                    clip(&a.output, 160)
                )?;
            }
            Some(Entry::Activity(a)) => {
                let p = a.process.clone().unwrap_or_default();
                let kind = a
                    .kind()
                    .as_str_name()
                    .trim_start_matches("ACTIVITY_KIND_")
                    .to_ascii_lowercase();
                writeln!(
                    out,
                    "{:<24}  {:<8} {:>7}  {:<16} {}",
                    short_time(a.time_unix_ns),
                    kind,
                    p.pid,
                    clip(&name(&p), 16),
                    clip(&describe(a), 200)
                )?;
            }
            None => {}
        }
    }
    Ok(())
}

/// A tree node as JSON.
pub fn node_json(n: &TreeNode) -> Value {
    let p = n.process.clone().unwrap_or_default();
    json!({
        "type": "process",
        "role": n.role,
        "depth": n.depth,
        "process": vigil_proto::json::process_json(&p),
        "exited": n.exited,
        "exit": n.exited.then(|| rfc3339(n.exit_unix_ns)),
        "exit_code": n.exited.then_some(n.exit_code),
        "partial": n.partial,
        "events": n.events.iter().map(event_json).collect::<Vec<_>>(),
        "events_cut": n.events_cut,
        "alerts": n.alerts.iter().map(alert_json).collect::<Vec<_>>(),
    })
}

/// One node's line: name, pid, user, lifetime, command line.
fn node_label(n: &TreeNode) -> String {
    let p = n.process.clone().unwrap_or_default();
    let mut facts = vec![format!("pid {}", p.pid)];
    if !p.user.is_empty() {
        facts.push(format!("user {}", clip(&p.user, 32)));
    }
    if p.start_unix_ns > 0 {
        let end = if n.exited {
            format!("{} exit {}", clock(n.exit_unix_ns), n.exit_code)
        } else {
            "running".into()
        };
        facts.push(format!("{}–{end}", clock(p.start_unix_ns)));
    } else if n.exited {
        facts.push(format!("exit {} at {}", n.exit_code, clock(n.exit_unix_ns)));
    }
    if n.partial {
        facts.push("known only from the alert's ancestry".into());
    }
    let mark = if n.role == "alerting" { "⚠ " } else { "" };
    format!(
        "{mark}{} ({}) {}",
        clip(&name(&p), 40),
        facts.join(", "),
        clip(&command_line(&p), 200)
    )
}

/// The tree drawn for a terminal, or one JSON object per node per line.
pub fn print_tree(out: &mut impl Write, t: &ProcessTree, json: bool) -> std::io::Result<()> {
    if json {
        for n in &t.nodes {
            serde_json::to_writer(&mut *out, &node_json(n))?;
            out.write_all(b"\n")?;
        }
        return Ok(());
    }
    writeln!(
        out,
        "# alert {} on {}",
        clip(&t.alert_id, 128),
        clip(&t.hostname, 64)
    )?;
    // For each node: whether a later sibling follows (drawn as │ below it).
    let depths: Vec<u32> = t.nodes.iter().map(|n| n.depth).collect();
    let has_next_sibling = |i: usize| {
        let d = depths[i];
        depths[i + 1..]
            .iter()
            .take_while(|&&x| x >= d)
            .any(|&x| x == d)
    };
    // open[k]: the ancestor at depth k still has siblings below.
    let mut open: Vec<bool> = Vec::new();
    for (i, n) in t.nodes.iter().enumerate() {
        let d = n.depth as usize;
        open.truncate(d);
        let mut prefix = String::new();
        for k in 1..d {
            prefix.push_str(if open.get(k).copied().unwrap_or(false) {
                "│  "
            } else {
                "   "
            });
        }
        let last = !has_next_sibling(i);
        let branch = if d == 0 {
            ""
        } else if last {
            "└─ "
        } else {
            "├─ "
        };
        writeln!(out, "{prefix}{branch}{}", node_label(n))?;
        while open.len() < d {
            open.push(false);
        }
        open.push(!last);
        // Lines under the node, indented past its branch.
        let mut under = prefix.clone();
        if d > 0 {
            under.push_str(if last { "   " } else { "│  " });
        }
        let has_children = depths.get(i + 1).is_some_and(|&x| x as usize > d);
        under.push_str(if has_children { "│    " } else { "     " });
        for a in &n.alerts {
            writeln!(
                out,
                "{under}{} ALERT [{}] {}: {}",
                clock(a.time_unix_ns),
                severity(a),
                clip(&a.rule, 80),
                clip(&a.output, 160)
            )?;
        }
        for e in &n.events {
            writeln!(
                out,
                "{under}{} {}",
                clock(e.time_unix_ns),
                clip(&describe(e), 200)
            )?;
        }
        if n.events_cut > 0 {
            writeln!(
                out,
                "{under}… {} more events (--events-per-process)",
                n.events_cut
            )?;
        }
    }
    Ok(())
}

/// A pivot as two tables (hosts, then processes), or JSON lines: one per
/// host, then one per process.
pub fn print_pivot(out: &mut impl Write, p: &Pivot, json: bool) -> std::io::Result<()> {
    if json {
        for h in &p.hosts {
            let v = json!({
                "type": "host",
                "hostname": h.hostname,
                "first_seen": rfc3339(h.first_seen_unix_ns),
                "last_seen": rfc3339(h.last_seen_unix_ns),
                "count": h.count,
            });
            serde_json::to_writer(&mut *out, &v)?;
            out.write_all(b"\n")?;
        }
        for m in &p.processes {
            let mut v = json!({
                "type": "process",
                "hostname": m.hostname,
                "time": rfc3339(m.time_unix_ns),
                "process": m.process.as_ref().map(vigil_proto::json::process_json),
            });
            if !m.detail.is_empty() {
                v["detail"] = json!(m.detail);
            }
            serde_json::to_writer(&mut *out, &v)?;
            out.write_all(b"\n")?;
        }
        return Ok(());
    }
    if p.hosts.is_empty() {
        writeln!(out, "not seen")?;
        return Ok(());
    }
    writeln!(
        out,
        "{:<24} {:<24} {:<24} {:>8}",
        "HOST", "FIRST SEEN", "LAST SEEN", "COUNT"
    )?;
    for h in &p.hosts {
        writeln!(
            out,
            "{:<24} {:<24} {:<24} {:>8}",
            clip(&h.hostname, 24),
            short_time(h.first_seen_unix_ns),
            short_time(h.last_seen_unix_ns),
            h.count
        )?;
    }
    writeln!(out)?;
    writeln!(
        out,
        "{:<24}  {:<16} {:>7}  {:<10} PROCESS",
        "TIME", "HOST", "PID", "USER"
    )?;
    for m in &p.processes {
        let pr = m.process.clone().unwrap_or_default();
        let what = if m.detail.is_empty() {
            command_line(&pr)
        } else {
            format!("{}: {}", name(&pr), m.detail)
        };
        writeln!(
            out,
            "{:<24}  {:<16} {:>7}  {:<10} {}",
            short_time(m.time_unix_ns),
            clip(&m.hostname, 16),
            pr.pid,
            clip(&pr.user, 10),
            clip(&what, 200)
        )?;
    }
    Ok(())
}

/// `export`: the alert, its group, its tree and the host's timeline around
/// it, one JSON object per line, each with a `type`.
pub fn print_export(
    out: &mut impl Write,
    alert: &Alert,
    group: Option<&AlertGroup>,
    tree: Option<&ProcessTree>,
    timeline: &Timeline,
) -> std::io::Result<()> {
    let mut line = |v: Value| -> std::io::Result<()> {
        serde_json::to_writer(&mut *out, &v)?;
        out.write_all(b"\n")
    };
    line(json!({
        "type": "export",
        "alert_id": alert.id,
        "host": timeline.host,
        "from": rfc3339(timeline.from_unix_ns),
        "to": rfc3339(timeline.to_unix_ns),
        "timeline_cut": timeline.cut,
        "tree_cut": tree.is_some_and(|t| t.cut),
        "exported_at": rfc3339(crate::store::now_ns()),
    }))?;
    line(alert_json(alert))?;
    if let Some(g) = group {
        let mut v = crate::query::group_json(g);
        v["type"] = json!("group");
        line(v)?;
    }
    for n in tree.map(|t| t.nodes.as_slice()).unwrap_or_default() {
        line(node_json(n))?;
    }
    for e in &timeline.entries {
        let mut v = match &e.entry {
            Some(Entry::Alert(a)) => alert_json(a),
            Some(Entry::Activity(a)) => event_json(a),
            None => continue,
        };
        v["timeline"] = json!(true);
        line(v)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(depth: u32, pid: u32, role: &str) -> TreeNode {
        TreeNode {
            depth,
            role: role.into(),
            process: Some(ProcessInfo {
                pid,
                exe: format!("/bin/p{pid}"),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn hostile_text_is_escaped_and_clipped() {
        assert_eq!(clip("a\nb\x1b[31m", 50), "a\\nb\\u{1b}[31m");
        assert_eq!(clip("abcdef", 4), "abc…");
        assert_eq!(clip("abcd", 4), "abcd");
    }

    #[test]
    fn trees_are_drawn_with_branches() {
        let t = ProcessTree {
            alert_id: "a".into(),
            hostname: "h".into(),
            nodes: vec![
                node(0, 1, "ancestor"),
                node(1, 10, "alerting"),
                node(2, 11, "descendant"),
                node(3, 12, "descendant"),
                node(2, 13, "descendant"),
            ],
            cut: false,
        };
        let mut out = Vec::new();
        print_tree(&mut out, &t, false).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[1].starts_with("p1 (pid 1)"), "{text}");
        assert!(lines[2].starts_with("└─ ⚠ p10 (pid 10)"), "{text}");
        assert!(lines[3].starts_with("   ├─ p11 (pid 11)"), "{text}");
        assert!(lines[4].starts_with("   │  └─ p12 (pid 12)"), "{text}");
        assert!(lines[5].starts_with("   └─ p13 (pid 13)"), "{text}");
    }
}
