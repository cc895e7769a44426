//! The investigation client: asks a running collector and prints alerts as a
//! table or as JSON lines.
use std::io::Write;

use tonic::transport::Endpoint;
use vigil_proto::{
    json::{alert_json, rfc3339},
    v1::{collector_client::CollectorClient, Alert, AlertQuery},
};

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("invalid server address `{0}`: expected http://HOST:PORT")]
    Address(String),
    #[error("cannot reach collector at {0}: {1}")]
    Connect(String, String),
    #[error("collector refused the query: {0}")]
    Status(String),
}

/// Fetches the alerts matching `q` from the collector at `server`.
pub async fn fetch(server: &str, q: AlertQuery) -> Result<Vec<Alert>, QueryError> {
    if !(server.starts_with("http://") || server.starts_with("https://")) {
        return Err(QueryError::Address(server.into()));
    }
    let endpoint = Endpoint::from_shared(server.to_string())
        .map_err(|_| QueryError::Address(server.into()))?;
    let channel = endpoint
        .connect_timeout(std::time::Duration::from_secs(5))
        .connect()
        .await
        .map_err(|e| QueryError::Connect(server.into(), error_chain(&e)))?;
    let mut client =
        CollectorClient::new(channel).max_decoding_message_size(crate::server::MAX_MESSAGE_BYTES);
    let mut stream = client
        .query_alerts(q)
        .await
        .map_err(|s| QueryError::Status(s.message().to_string()))?
        .into_inner();
    let mut out = Vec::new();
    while let Some(a) = stream
        .message()
        .await
        .map_err(|s| QueryError::Status(s.message().to_string()))?
    {
        out.push(a);
    }
    Ok(out)
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
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
