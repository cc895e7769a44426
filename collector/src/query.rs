//! The investigation client: asks a running collector and prints alerts as a
//! table or as JSON lines.
use std::io::Write;

use vigil_proto::{
    json::{alert_json, rfc3339},
    tls::{endpoint, error_chain, explain_tls_failure, status_chain, ClientTls, EndpointError},
    v1::{
        collector_client::CollectorClient, AgentQuery, AgentStatus, Alert, AlertGroup, AlertQuery,
        AuditEntry, GroupQuery, GroupRef, GroupUpdate, Pivot, PivotQuery, ProcessTree, Severity,
        SilenceInfo, SilenceQuery, SilenceRef, SilenceSpec, Timeline, TimelineQuery, TreeQuery,
    },
};

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error(transparent)]
    Endpoint(#[from] EndpointError),
    #[error("cannot reach collector at {0}: {1}")]
    Connect(String, String),
    #[error("collector refused the query: {}", status_line(.0))]
    Status(tonic::Status),
    #[error("no gRPC answer from {0} over plaintext ({1}): the collector probably serves TLS; use https:// with a certificate (--pki DIR --as NAME)")]
    PlaintextToTls(String, String),
}

/// A refusal on one line, saying which kind it is.
fn status_line(s: &tonic::Status) -> String {
    match s.code() {
        tonic::Code::PermissionDenied => format!("permission denied: {}", s.message()),
        tonic::Code::Unauthenticated => format!("not authenticated: {}", s.message()),
        // A TLS refusal in TLS 1.3 arrives after the handshake, with the
        // first request; its reason is in the source chain.
        _ => {
            let chain = status_chain(s);
            let closed = ["broken pipe", "connection reset", "connection closed"];
            match explain_tls_failure(&chain) {
                Some(why) => format!("{why} ({chain})"),
                None if closed.iter().any(|c| chain.contains(c)) => format!(
                    "the collector closed the connection after the TLS handshake: it probably refused this client's certificate (its log says why) ({chain})"
                ),
                None => chain,
            }
        }
    }
}

/// Fetches the alerts matching `q` from the collector at `server`
/// (`https://` with `tls`, or `http://` to a plaintext loopback collector).
pub async fn fetch(
    server: &str,
    tls: Option<&ClientTls>,
    q: AlertQuery,
) -> Result<Vec<Alert>, QueryError> {
    let mut client = connect(server, tls).await?;
    let stream = client
        .query_alerts(q)
        .await
        .map_err(|s| refusal(server, s))?
        .into_inner();
    collect(stream).await
}

/// A client of the collector at `server`, or why there is none (a TLS
/// failure said in words).
async fn connect(
    server: &str,
    tls: Option<&ClientTls>,
) -> Result<CollectorClient<tonic::transport::Channel>, QueryError> {
    let channel = endpoint(server, tls)?.connect().await.map_err(|e| {
        let chain = error_chain(&e);
        let text = match explain_tls_failure(&chain) {
            Some(why) => format!("{why} ({chain})"),
            None => chain,
        };
        QueryError::Connect(server.into(), text)
    })?;
    Ok(CollectorClient::new(channel).max_decoding_message_size(crate::server::MAX_MESSAGE_BYTES))
}

/// Every message of a server stream, or the status that ended it.
async fn collect<T>(mut stream: tonic::Streaming<T>) -> Result<Vec<T>, QueryError> {
    let mut out = Vec::new();
    while let Some(m) = stream.message().await.map_err(QueryError::Status)? {
        out.push(m);
    }
    Ok(out)
}

/// A refused call, told apart from a plaintext client at a TLS port.
fn refusal(server: &str, s: tonic::Status) -> QueryError {
    match s.code() {
        tonic::Code::Internal
        | tonic::Code::Unknown
        | tonic::Code::Unavailable
        | tonic::Code::Cancelled
            if server.starts_with("http://") =>
        {
            QueryError::PlaintextToTls(server.into(), s.message().to_string())
        }
        _ => QueryError::Status(s),
    }
}

/// A host's timeline from the collector at `server`.
pub async fn fetch_timeline(
    server: &str,
    tls: Option<&ClientTls>,
    q: TimelineQuery,
) -> Result<Timeline, QueryError> {
    let mut client = connect(server, tls).await?;
    Ok(client
        .query_timeline(q)
        .await
        .map_err(|s| refusal(server, s))?
        .into_inner())
}

/// An alert's process tree.
pub async fn fetch_tree(
    server: &str,
    tls: Option<&ClientTls>,
    q: TreeQuery,
) -> Result<ProcessTree, QueryError> {
    let mut client = connect(server, tls).await?;
    Ok(client
        .query_tree(q)
        .await
        .map_err(|s| refusal(server, s))?
        .into_inner())
}

/// Where something shows up across the fleet.
pub async fn fetch_pivot(
    server: &str,
    tls: Option<&ClientTls>,
    q: PivotQuery,
) -> Result<Pivot, QueryError> {
    let mut client = connect(server, tls).await?;
    Ok(client
        .query_pivot(q)
        .await
        .map_err(|s| refusal(server, s))?
        .into_inner())
}

/// The agent registry of the collector at `server`.
pub async fn fetch_agents(
    server: &str,
    tls: Option<&ClientTls>,
) -> Result<Vec<AgentStatus>, QueryError> {
    let mut client = connect(server, tls).await?;
    let stream = client
        .query_agents(AgentQuery {})
        .await
        .map_err(|s| refusal(server, s))?
        .into_inner();
    collect(stream).await
}

/// An agent as JSON: its state and its last heartbeat's figures.
pub fn agent_json(a: &AgentStatus) -> serde_json::Value {
    let hb = a.last.clone().unwrap_or_default();
    let host = hb.host.clone().unwrap_or_default();
    let losses: serde_json::Map<String, serde_json::Value> = hb
        .losses
        .iter()
        .map(|l| (l.place.clone(), l.count.into()))
        .collect();
    let programs: Vec<serde_json::Value> = hb
        .programs
        .iter()
        .map(
            |p| serde_json::json!({"name": p.name, "expected": p.expected, "attached": p.attached}),
        )
        .collect();
    serde_json::json!({
        "host": a.hostname,
        "state": a.state,
        "reason": a.reason,
        "last_heartbeat": rfc3339(a.last_heartbeat_unix_ns),
        "last_heartbeat_unix_ns": a.last_heartbeat_unix_ns,
        "version": host.agent_version,
        "kernel": host.kernel,
        "machine_id": host.machine_id,
        "boot_id": hb.boot_id,
        "uptime_s": hb.uptime_s,
        "interval_ms": hb.interval_ms,
        "rules": hb.rules,
        "rules_digest": hb.rules_digest,
        "programs": programs,
        "losses": losses,
        "spool_depth": hb.spool_depth,
        "activity_sent": hb.activity_sent,
        "cpu_percent": hb.cpu_percent,
        "rss_bytes": hb.rss_bytes,
    })
}

/// Agents as a table: host, state, version, last heartbeat, losses, spool.
pub fn print_agents(
    out: &mut impl Write,
    agents: &[AgentStatus],
    json: bool,
) -> std::io::Result<()> {
    if json {
        for a in agents {
            serde_json::to_writer(&mut *out, &agent_json(a))?;
            out.write_all(b"\n")?;
        }
        return Ok(());
    }
    if agents.is_empty() {
        return writeln!(out, "no agents");
    }
    writeln!(
        out,
        "{:<24}  {:<9}  {:<8}  {:<30}  {:>8}  {:>7}  REASON",
        "HOST", "STATE", "VERSION", "LAST HEARTBEAT", "LOST", "SPOOL"
    )?;
    for a in agents {
        let hb = a.last.clone().unwrap_or_default();
        let version = hb.host.map(|h| h.agent_version).unwrap_or_default();
        let lost: u64 = hb.losses.iter().map(|l| l.count).sum();
        writeln!(
            out,
            "{:<24}  {:<9}  {:<8}  {:<30}  {:>8}  {:>7}  {}",
            a.hostname,
            a.state,
            version,
            rfc3339(a.last_heartbeat_unix_ns),
            lost,
            hb.spool_depth,
            a.reason
        )?;
    }
    Ok(())
}

/// The alert groups matching `q`, most recently seen first.
pub async fn fetch_groups(
    server: &str,
    tls: Option<&ClientTls>,
    q: GroupQuery,
) -> Result<Vec<AlertGroup>, QueryError> {
    let mut client = connect(server, tls).await?;
    let stream = client
        .query_groups(q)
        .await
        .map_err(|s| refusal(server, s))?
        .into_inner();
    collect(stream).await
}

/// Sends a change to a group; returns the group after it.
pub async fn update_group(
    server: &str,
    tls: Option<&ClientTls>,
    mut u: GroupUpdate,
) -> Result<AlertGroup, QueryError> {
    if tls.is_none() {
        u.local_user = local_user();
    }
    let mut client = connect(server, tls).await?;
    Ok(client
        .update_group(u)
        .await
        .map_err(|s| refusal(server, s))?
        .into_inner())
}

/// A group's audit trail, oldest first.
pub async fn fetch_history(
    server: &str,
    tls: Option<&ClientTls>,
    id: &str,
) -> Result<Vec<AuditEntry>, QueryError> {
    let mut client = connect(server, tls).await?;
    let stream = client
        .group_history(GroupRef { id: id.into() })
        .await
        .map_err(|s| refusal(server, s))?
        .into_inner();
    collect(stream).await
}

/// Adds a silence; returns it as stored.
pub async fn add_silence(
    server: &str,
    tls: Option<&ClientTls>,
    mut spec: SilenceSpec,
) -> Result<SilenceInfo, QueryError> {
    if tls.is_none() {
        spec.local_user = local_user();
    }
    let mut client = connect(server, tls).await?;
    Ok(client
        .add_silence(spec)
        .await
        .map_err(|s| refusal(server, s))?
        .into_inner())
}

/// The silences, newest first.
pub async fn fetch_silences(
    server: &str,
    tls: Option<&ClientTls>,
    include_expired: bool,
) -> Result<Vec<SilenceInfo>, QueryError> {
    let mut client = connect(server, tls).await?;
    let stream = client
        .query_silences(SilenceQuery { include_expired })
        .await
        .map_err(|s| refusal(server, s))?
        .into_inner();
    collect(stream).await
}

/// Ends a silence now.
pub async fn expire_silence(
    server: &str,
    tls: Option<&ClientTls>,
    id: &str,
) -> Result<SilenceInfo, QueryError> {
    let local_user = if tls.is_none() {
        local_user()
    } else {
        String::new()
    };
    let mut client = connect(server, tls).await?;
    Ok(client
        .expire_silence(SilenceRef {
            id: id.into(),
            local_user,
        })
        .await
        .map_err(|s| refusal(server, s))?
        .into_inner())
}

/// Silences as a table, or one JSON object per line.
pub fn print_silences(
    out: &mut impl Write,
    list: &[SilenceInfo],
    json: bool,
) -> std::io::Result<()> {
    if json {
        for s in list {
            serde_json::to_writer(
                &mut *out,
                &serde_json::json!({
                    "id": s.id,
                    "active": s.active,
                    "matchers": s.matchers,
                    "reason": s.reason,
                    "created_by": s.created_by,
                    "created": rfc3339(s.created_unix_ns),
                    "expires": rfc3339(s.expires_unix_ns),
                    "expired_by": s.expired_by,
                    "matched": s.matched,
                }),
            )?;
            out.write_all(b"\n")?;
        }
        return Ok(());
    }
    if list.is_empty() {
        return writeln!(out, "no silences");
    }
    writeln!(
        out,
        "{:<12}  {:<7}  {:<30}  {:>7}  {:<20}  {:<30}  REASON",
        "ID", "ACTIVE", "EXPIRES", "MATCHED", "BY", "MATCHERS"
    )?;
    for s in list {
        writeln!(
            out,
            "{:<12}  {:<7}  {:<30}  {:>7}  {:<20}  {:<30}  {}",
            s.id,
            if s.active { "yes" } else { "no" },
            rfc3339(s.expires_unix_ns),
            s.matched,
            s.created_by,
            s.matchers.join(" "),
            s.reason
        )?;
    }
    Ok(())
}

/// Who runs this client: the user sudo was run by, else the real user.
fn local_user() -> String {
    if let Ok(u) = std::env::var("SUDO_USER") {
        if !u.is_empty() {
            return u;
        }
    }
    // SAFETY: getpwuid returns a static entry or null; read at once.
    unsafe {
        let pw = libc::getpwuid(libc::getuid());
        if !pw.is_null() && !(*pw).pw_name.is_null() {
            return std::ffi::CStr::from_ptr((*pw).pw_name)
                .to_string_lossy()
                .into_owned();
        }
        format!("uid{}", libc::getuid())
    }
}

/// A group as JSON.
pub fn group_json(g: &AlertGroup) -> serde_json::Value {
    serde_json::json!({
        "id": g.id,
        "rule": g.rule,
        "severity": Severity::try_from(g.severity).unwrap_or_default().name(),
        "host": g.hostname,
        "container": g.container,
        "state": g.state,
        "reason": g.reason,
        "assignee": g.assignee,
        "count": g.count,
        "first_seen": rfc3339(g.first_seen_unix_ns),
        "last_seen": rfc3339(g.last_seen_unix_ns),
        "state_changed": rfc3339(g.state_changed_unix_ns),
        "output": g.output,
        "key": g.key,
    })
}

/// Groups as a table, or one JSON object per line.
pub fn print_groups(
    out: &mut impl Write,
    groups: &[AlertGroup],
    json: bool,
) -> std::io::Result<()> {
    if json {
        for g in groups {
            serde_json::to_writer(&mut *out, &group_json(g))?;
            out.write_all(b"\n")?;
        }
        return Ok(());
    }
    if groups.is_empty() {
        return writeln!(out, "no alert groups");
    }
    writeln!(
        out,
        "{:<20}  {:<26}  {:<9}  {:<20}  {:>6}  {:<30}  {:<30}  {:<12}  RULE",
        "ID", "STATE", "SEVERITY", "HOST", "COUNT", "FIRST SEEN", "LAST SEEN", "ASSIGNEE"
    )?;
    for g in groups {
        // resolved/false_positive
        let state = if g.reason.is_empty() {
            g.state.clone()
        } else {
            format!("{}/{}", g.state, g.reason)
        };
        writeln!(
            out,
            "{:<20}  {:<26}  {:<9}  {:<20}  {:>6}  {:<30}  {:<30}  {:<12}  {}",
            g.id,
            state,
            Severity::try_from(g.severity).unwrap_or_default().name(),
            g.hostname,
            g.count,
            rfc3339(g.first_seen_unix_ns),
            rfc3339(g.last_seen_unix_ns),
            if g.assignee.is_empty() {
                "-"
            } else {
                &g.assignee
            },
            g.rule
        )?;
    }
    Ok(())
}

/// An audit trail as lines (`TIME  ACTOR  ACTION  DETAIL`), or JSON lines.
pub fn print_history(
    out: &mut impl Write,
    trail: &[AuditEntry],
    json: bool,
) -> std::io::Result<()> {
    for e in trail {
        if json {
            serde_json::to_writer(
                &mut *out,
                &serde_json::json!({
                    "group_id": e.group_id,
                    "time": rfc3339(e.time_unix_ns),
                    "time_unix_ns": e.time_unix_ns,
                    "actor": e.actor,
                    "client": e.client,
                    "action": e.action,
                    "detail": e.detail,
                }),
            )?;
            out.write_all(b"\n")?;
        } else {
            let client = if e.client.is_empty() {
                String::new()
            } else {
                format!(" from {}", e.client)
            };
            writeln!(
                out,
                "{}  {}{}  {}  {}",
                rfc3339(e.time_unix_ns),
                e.actor,
                client,
                e.action,
                e.detail
            )?;
        }
    }
    Ok(())
}

/// One JSON object per line.
pub fn print_json(out: &mut impl Write, alerts: &[Alert]) -> std::io::Result<()> {
    for a in alerts {
        serde_json::to_writer(&mut *out, &alert_json(a))?;
        out.write_all(b"\n")?;
    }
    Ok(())
}

/// Where an alert's process ran, short: `host`, `ns/pod`, or a 12-digit
/// container id.
fn container_label(a: &Alert) -> String {
    match &a.container {
        None => String::new(),
        Some(c) if !c.k8s_pod.is_empty() => format!("{}/{}", c.k8s_namespace, c.k8s_pod),
        Some(c) => c.id.chars().take(12).collect(),
    }
}

/// A table for people: time, severity, host, container, rule, pid, user,
/// parent, command line.
pub fn print_table(out: &mut impl Write, alerts: &[Alert]) -> std::io::Result<()> {
    if alerts.is_empty() {
        return writeln!(out, "no alerts");
    }
    writeln!(
        out,
        "{:<30}  {:<13}  {:<20}  {:<20}  {:<40}  {:>7}  {:<10}  {:<16}  COMMAND",
        "TIME", "SEVERITY", "HOST", "CONTAINER", "RULE", "PID", "USER", "PARENT"
    )?;
    for a in alerts {
        let host = a.host.as_ref().map_or("", |h| h.hostname.as_str());
        let (pid, cmd) = a.process.as_ref().map_or((0, String::new()), |p| {
            let cmd = if p.argv.is_empty() {
                p.exe.clone()
            } else {
                p.argv.join(" ")
            };
            (
                p.pid,
                if p.argv_truncated {
                    format!("{cmd}…")
                } else {
                    cmd
                },
            )
        });
        let user = a.process.as_ref().map_or("", |p| p.user.as_str());
        let parent = a
            .ancestry
            .first()
            .map_or("", |p| p.exe.rsplit('/').next().unwrap_or(p.exe.as_str()));
        // A dedup summary stands for several occurrences.
        let rule = if a.count > 1 {
            format!("{} (×{})", a.rule, a.count)
        } else {
            a.rule.clone()
        };
        writeln!(
            out,
            "{:<30}  {:<13}  {:<20}  {:<20}  {:<40}  {:>7}  {:<10}  {:<16}  {}",
            rfc3339(a.time_unix_ns),
            a.severity().name(),
            host,
            container_label(a),
            rule,
            pid,
            user,
            parent,
            cmd
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_marks_dedup_summaries_with_their_count() {
        let one = Alert {
            rule: "Write below etc".into(),
            ..Default::default()
        };
        let summary = Alert {
            rule: "Write below etc".into(),
            count: 3,
            ..Default::default()
        };
        let mut out = Vec::new();
        print_table(&mut out, &[one, summary]).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert!(!lines[1].contains('×'), "{text}");
        assert!(lines[2].contains("Write below etc (×3)"), "{text}");
    }
}
