//! Notifications: the collector tells responders when an alert group
//! opens or reopens, through the receivers and routes of the notification
//! file ([`config`]), and keeps PagerDuty's incident in step when the
//! group is acknowledged, resolved or closed.
//!
//! The notifier follows the groups' audit trail rather than the ingest
//! path: a group opened or reopened by an alert is an audit entry
//! committed with the alert. For each such entry it routes the group,
//! writes one outbox row per receiver and moves its cursor, in one
//! transaction; a sender then empties the outbox. Both survive restarts:
//! nothing is lost, and nothing is sent twice unless the collector dies
//! between a receiver's answer and recording it.
//!
//! Delivery retries with backoff (1 s doubling to 5 min), honours 429 and
//! `Retry-After`, gives up at once on other 4xx answers and after a day on
//! anything else; each success or failure is an entry in the group's
//! history ("notified", "notification failed").
pub mod config;

use std::{sync::Arc, time::Duration};

use hmac::{Hmac, Mac};
use sha2::Sha256;
use vigil_proto::{json::rfc3339, v1::Severity};

use vigil_proto::v1::Alert;

use crate::{
    groups::GroupRecord,
    metrics::NotifyCounters,
    sql::{Outgoing, Queued, SqlStore},
    store::now_ns,
};
use config::{Config, Facts, ReceiverKind};

/// How often the notification file is checked for changes.
const RELOAD_CHECK: Duration = Duration::from_secs(2);

/// What says the file changed: its length, modification time and
/// content digest (an edit within one mtime tick still shows).
fn fingerprint(path: &std::path::Path) -> (u64, Option<std::time::SystemTime>, [u8; 32]) {
    use sha2::Digest as _;
    let meta = std::fs::metadata(path).ok();
    let digest = std::fs::read(path)
        .map(|b| Sha256::digest(&b).into())
        .unwrap_or([0; 32]);
    (
        meta.as_ref().map_or(0, |m| m.len()),
        meta.and_then(|m| m.modified().ok()),
        digest,
    )
}

/// How often the notifier looks for new group events and due sends.
const TICK: Duration = Duration::from_millis(200);
/// Longest wait between two tries, and how long a notification is tried.
const MAX_BACKOFF: Duration = Duration::from_secs(300);
const GIVE_UP_AFTER: Duration = Duration::from_secs(86_400);
/// Longest a receiver may take to answer.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs the notifier until `shutdown` resolves.
pub async fn run(
    store: Arc<SqlStore>,
    config: Arc<Config>,
    file: Option<std::path::PathBuf>,
    counters: Arc<NotifyCounters>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let mut config = config;
    let mut watched = file.as_deref().map(fingerprint);
    let mut last_check = std::time::Instant::now();
    // reqwest is built without a crypto provider of its own: it uses the
    // ring provider the rest of the collector uses.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = match reqwest::Client::builder()
        .timeout(SEND_TIMEOUT)
        .user_agent(concat!("vigil-collector/", env!("CARGO_PKG_VERSION")))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "notifications off: cannot build the HTTP client");
            return;
        }
    };
    tracing::info!(
        receivers = config.receivers.len(),
        routes = config.routes.len(),
        "notifications on"
    );
    tokio::pin!(shutdown);
    let mut next_send: std::collections::HashMap<String, std::time::Instant> = Default::default();
    let mut last_refresh: std::collections::HashMap<String, std::time::Instant> =
        Default::default();
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = &mut shutdown => return,
            _ = tick.tick() => {}
        }
        if let Some(path) = &file {
            if last_check.elapsed() >= RELOAD_CHECK {
                last_check = std::time::Instant::now();
                let p = path.clone();
                let now = tokio::task::spawn_blocking(move || fingerprint(&p))
                    .await
                    .unwrap_or_default();
                if watched.as_ref() != Some(&now) {
                    watched = Some(now);
                    let p = path.clone();
                    let loaded = tokio::task::spawn_blocking(move || Config::load(&p)).await;
                    match loaded.unwrap_or_else(|e| {
                        Err(config::ConfigError::Read {
                            path: path.display().to_string(),
                            message: e.to_string(),
                        })
                    }) {
                        Ok(c) => {
                            tracing::info!(
                                receivers = c.receivers.len(),
                                routes = c.routes.len(),
                                "notification file reloaded"
                            );
                            config = Arc::new(c);
                        }
                        Err(e) => tracing::error!(
                            error = %e,
                            "notification file not reloaded; the previous one stays in force"
                        ),
                    }
                }
            }
        }
        // Planning runs on one collector of those sharing a database (the
        // fleet lease); every one of them sends what is due.
        let s = store.clone();
        let leader = tokio::task::spawn_blocking(move || s.holds_fleet_lease())
            .await
            .unwrap_or(false);
        if leader {
            plan_all(&store, &config, &mut last_refresh).await;
        }
        let s = store.clone();
        let due = match tokio::task::spawn_blocking(move || s.due(now_ns(), 64)).await {
            Ok(Ok(d)) => d,
            Ok(Err(e)) => {
                tracing::error!(error = %e, "cannot read the notification outbox");
                continue;
            }
            Err(_) => continue,
        };
        for o in due {
            // Each service's rate limit: wait rather than be refused (the
            // claim is handed back for then).
            if let Some(t) = next_send
                .get(&o.receiver)
                .filter(|t| **t > std::time::Instant::now())
            {
                let at = now_ns() + t.duration_since(std::time::Instant::now()).as_nanos() as i64;
                let (s, id) = (store.clone(), o.id);
                let _ = tokio::task::spawn_blocking(move || s.unclaim(id, at)).await;
                continue;
            }
            // A refresh queued before the group was resolved must not
            // make it fire again after its resolution.
            if o.event == "refresh" {
                let (s, id) = (store.clone(), o.group_id.clone());
                let open = tokio::task::spawn_blocking(move || s.group(&id))
                    .await
                    .ok()
                    .and_then(Result::ok)
                    .flatten()
                    .is_some_and(|g| !g.state.is_done());
                if !open {
                    let (s, id) = (store.clone(), o.id);
                    let _ = tokio::task::spawn_blocking(move || s.drop_outgoing(id)).await;
                    continue;
                }
            }
            let Some(r) = config.receivers.iter().find(|r| r.name == o.receiver) else {
                // The file no longer names it (a restart with a new file).
                record(
                    &store,
                    &o,
                    Err((None, "receiver no longer configured".into())),
                )
                .await;
                continue;
            };
            let outcome = send(&client, &r.kind, &o).await;
            // After a failure the receiver waits until this message's
            // retry (a 429's Retry-After holds every message to it), so
            // a dead receiver costs one timeout per retry, not one per
            // message.
            let wait = match &outcome {
                Err((Some(next), _)) => {
                    Duration::from_nanos(next.saturating_sub(now_ns()).max(0) as u64)
                }
                _ => min_gap(&r.kind),
            };
            next_send.insert(o.receiver.clone(), std::time::Instant::now() + wait);
            let counter = match &outcome {
                Ok(_) => &counters.sent,
                Err((Some(_), _)) => &counters.retried,
                Err((None, _)) => &counters.dead,
            };
            counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            match &outcome {
                Ok(d) => tracing::info!(receiver = %o.receiver, group = %o.group_id, "{d}"),
                Err((Some(_), why)) => {
                    tracing::warn!(receiver = %o.receiver, group = %o.group_id, error = %why, "notification not delivered; will retry")
                }
                Err((None, why)) => {
                    tracing::error!(receiver = %o.receiver, group = %o.group_id, error = %why, "notification given up (dead letter)")
                }
            }
            record(&store, &o, outcome).await;
        }
    }
}

/// Queues what the audit trail, the summaries and the Alertmanager
/// refreshes call for (the fleet lease holder's part).
async fn plan_all(
    store: &Arc<SqlStore>,
    config: &Arc<Config>,
    last_refresh: &mut std::collections::HashMap<String, std::time::Instant>,
) {
    let (s, c) = (store.clone(), config.clone());
    match tokio::task::spawn_blocking(move || plan(&s, &c)).await {
        Ok(Err(e)) => tracing::error!(error = %e, "cannot queue notifications; retrying"),
        Err(e) => tracing::error!(error = %e, "notification planner failed"),
        Ok(Ok(())) => {}
    }
    let (s, c) = (store.clone(), config.clone());
    if let Ok(Err(e)) = tokio::task::spawn_blocking(move || summarise(&s, &c)).await {
        tracing::error!(error = %e, "cannot queue notification summaries");
    }
    // Receivers whose open groups are due to be sent again.
    let now = std::time::Instant::now();
    let refresh_due: Vec<String> = config
        .receivers
        .iter()
        .filter_map(|r| match &r.kind {
            ReceiverKind::Alertmanager { refresh, .. } => {
                let last = last_refresh.entry(r.name.clone()).or_insert(now);
                (now.duration_since(*last) >= *refresh).then(|| {
                    *last = now;
                    r.name.clone()
                })
            }
            _ => None,
        })
        .collect();
    if !refresh_due.is_empty() {
        let (s, c) = (store.clone(), config.clone());
        if let Ok(Err(e)) = tokio::task::spawn_blocking(move || refresh(&s, &c, &refresh_due)).await
        {
            tracing::error!(error = %e, "cannot queue Alertmanager refreshes");
        }
    }
}

async fn record(
    store: &Arc<SqlStore>,
    o: &Outgoing,
    outcome: Result<String, (Option<i64>, String)>,
) {
    let (s, o) = (store.clone(), o.clone());
    if let Ok(Err(e)) = tokio::task::spawn_blocking(move || s.delivery_outcome(&o, outcome)).await {
        tracing::error!(error = %e, "cannot record a notification's outcome");
    }
}

/// Queues what the group events since the cursor call for: an opened or
/// reopened group goes to the receivers its routes pick (unless its alert
/// is silenced); an acknowledged, resolved or closed group goes to the
/// PagerDuty receivers it was sent to, so their incident follows it.
fn plan(store: &SqlStore, config: &Config) -> Result<(), crate::store::StoreError> {
    let cursor = store.notify_cursor()?;
    let events = store.group_events_after(cursor, 500)?;
    let Some(last) = events.last().map(|e| e.seq) else {
        return Ok(());
    };
    let mut rows = Vec::new();
    // Receivers told of a group in this batch, not yet in the outbox.
    let mut told: std::collections::HashMap<String, Vec<String>> = Default::default();
    for e in &events {
        let Some(g) = store.group(&e.group_id)? else {
            continue;
        };
        let opening = matches!(e.action.as_str(), "opened" | "reopened" | "announced");
        let mut queue = |r: &config::Receiver, body: serde_json::Value| {
            rows.push(Queued {
                receiver: r.name.clone(),
                group: g.id.clone(),
                event: e.action.clone(),
                body: serde_json::to_vec(&body).unwrap_or_default(),
                count: opening.then_some(g.count),
            });
        };
        match e.action.as_str() {
            "opened" | "reopened" | "announced" => {
                let Some(alert) = e
                    .alert_id
                    .as_deref()
                    .map(|a| store.alert(a))
                    .transpose()?
                    .flatten()
                else {
                    continue;
                };
                if !alert.silenced_by.is_empty() {
                    continue;
                }
                let facts = Facts {
                    severity: alert.severity,
                    rule: &g.rule,
                    host: &g.hostname,
                    tags: &alert.tags,
                    container: &g.container,
                    namespace: alert
                        .container
                        .as_ref()
                        .map_or("", |c| c.k8s_namespace.as_str()),
                    fields: &alert.fields,
                };
                for i in config.route(&facts) {
                    let r = &config.receivers[i];
                    told.entry(g.id.clone()).or_default().push(r.name.clone());
                    let body = match &r.kind {
                        ReceiverKind::Webhook { .. } => webhook_body(&e.action, &g, &alert),
                        ReceiverKind::PagerDuty { routing_key, .. } => {
                            pagerduty_body(routing_key, "trigger", &g, Some(&alert))
                        }
                        ReceiverKind::Slack { .. } => slack_body(&e.action, &g, &alert),
                        ReceiverKind::Alertmanager { refresh, .. } => {
                            alertmanager_body(&g, Some(*refresh))
                        }
                    };
                    queue(r, body);
                }
            }
            "acknowledged" | "resolved" | "closed" => {
                let action = if e.action == "acknowledged" {
                    "acknowledge"
                } else {
                    "resolve"
                };
                let mut names = store.notified_receivers(&g.id)?;
                for n in told.get(&g.id).into_iter().flatten() {
                    if !names.contains(n) {
                        names.push(n.clone());
                    }
                }
                for name in names {
                    let Some(r) = config.receivers.iter().find(|r| r.name == name) else {
                        continue;
                    };
                    match &r.kind {
                        ReceiverKind::PagerDuty { routing_key, .. } => {
                            queue(r, pagerduty_body(routing_key, action, &g, None))
                        }
                        // Alertmanager has no acknowledgement: the alert
                        // fires until the group is resolved or closed.
                        ReceiverKind::Alertmanager { .. } if action == "resolve" => {
                            queue(r, alertmanager_body(&g, None))
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    // Only if no one else planned these events meanwhile (a collector
    // that lost the fleet lease mid-plan): each is planned once.
    store.enqueue(Some((cursor, last)), &rows)
}

/// Summarises the repeats of groups whose window has passed since their
/// receivers were last told: one message per group and receiver with how
/// many more alerts came (webhook and Slack; PagerDuty's incident and
/// Alertmanager's refreshed alert already stand for them).
fn summarise(store: &SqlStore, config: &Config) -> Result<(), crate::store::StoreError> {
    let now = now_ns();
    let mut rows = Vec::new();
    for (group, receiver, told) in
        store.summaries_due(now, config.group_window.as_nanos() as i64)?
    {
        let Some(g) = store.group(&group)? else {
            continue;
        };
        let more = g.count.saturating_sub(told);
        let body = match config
            .receivers
            .iter()
            .find(|r| r.name == receiver)
            .map(|r| &r.kind)
        {
            Some(ReceiverKind::Webhook { .. }) => serde_json::json!({
                "event": "summary",
                "group_id": g.id,
                "state": g.state.name(),
                "rule": g.rule,
                "severity": Severity::try_from(g.severity).unwrap_or_default().name(),
                "host": g.hostname,
                "container": g.container,
                "output": g.output,
                "new_alerts": more,
                "count": g.count,
                "first_seen": rfc3339(g.first_seen_ns),
                "last_seen": rfc3339(g.last_seen_ns),
                "history": format!("vigil-collector alert history {}", g.id),
            }),
            Some(ReceiverKind::Slack { .. }) => serde_json::json!({
                "text": slack_escape(&format!(
                    "{more} more alerts of {} on {} (group {}, {} in all, last {})",
                    g.rule, g.hostname, g.id, g.count, rfc3339(g.last_seen_ns)
                )),
            }),
            _ => serde_json::Value::Null,
        };
        rows.push(Queued {
            receiver,
            group,
            event: "summary".into(),
            body: if body.is_null() {
                Vec::new()
            } else {
                serde_json::to_vec(&body).unwrap_or_default()
            },
            count: Some(g.count),
        });
    }
    store.enqueue(None, &rows)
}

/// Re-sends every open group to the Alertmanager receivers it went to
/// whose refresh period has passed, so Alertmanager keeps it firing.
fn refresh(
    store: &SqlStore,
    config: &Config,
    due: &[String],
) -> Result<(), crate::store::StoreError> {
    let mut rows = Vec::new();
    for (group, receiver) in store.open_notified()? {
        if !due.contains(&receiver) {
            continue;
        }
        let Some(r) = config.receivers.iter().find(|r| r.name == receiver) else {
            continue;
        };
        let ReceiverKind::Alertmanager { refresh, .. } = &r.kind else {
            continue;
        };
        let Some(g) = store.group(&group)? else {
            continue;
        };
        let body = alertmanager_body(&g, Some(*refresh));
        rows.push(Queued {
            receiver,
            group,
            event: "refresh".to_string(),
            body: serde_json::to_vec(&body).unwrap_or_default(),
            count: None,
        });
    }
    store.enqueue(None, &rows)
}

/// An Alertmanager alert for group `g`: firing until four refresh
/// periods from now, or ended now (`refresh` None).
fn alertmanager_body(g: &GroupRecord, refresh: Option<Duration>) -> serde_json::Value {
    let now = now_ns();
    let ends = match refresh {
        Some(r) => now + 4 * r.as_nanos() as i64,
        None => now,
    };
    serde_json::json!([{
        "labels": {
            "alertname": g.rule,
            "severity": Severity::try_from(g.severity).unwrap_or_default().name(),
            "host": g.hostname,
            "container": g.container,
            "vigil_group": g.id,
            "source": "vigil",
        },
        "annotations": {
            "summary": format!("{} on {}", g.rule, g.hostname),
            "description": g.output,
            "count": g.count.to_string(),
            "history": format!("vigil-collector alert history {}", g.id),
        },
        "startsAt": rfc3339(g.first_seen_ns),
        "endsAt": rfc3339(ends),
    }])
}

fn webhook_body(event: &str, g: &GroupRecord, alert: &Alert) -> serde_json::Value {
    serde_json::json!({
        "event": event,
        "group_id": g.id,
        "state": g.state.name(),
        "rule": g.rule,
        "severity": Severity::try_from(alert.severity).unwrap_or_default().name(),
        "host": g.hostname,
        "container": g.container,
        "output": alert.output,
        "fields": alert.fields,
        "tags": alert.tags,
        "alert_id": alert.id,
        "count": g.count,
        "first_seen": rfc3339(g.first_seen_ns),
        "last_seen": rfc3339(g.last_seen_ns),
        "history": format!("vigil-collector alert history {}", g.id),
    })
}

/// Slack's mrkdwn needs `&`, `<` and `>` escaped, or a crafted output
/// could post links or mentions.
fn slack_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// At most `max` characters of `s`, with an ellipsis when cut.
fn clip(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// A Slack message in Block Kit (header, the output, fields, context)
/// with a `text` fallback for notifications, within Slack's limits
/// (header 150 characters, section text 3 000, 10 fields).
fn slack_body(event: &str, g: &GroupRecord, alert: &Alert) -> serde_json::Value {
    let severity = Severity::try_from(alert.severity)
        .unwrap_or_default()
        .name();
    let verb = if event == "reopened" {
        "reopened: "
    } else {
        ""
    };
    let field = |name: &str, value: &str| serde_json::json!({"type": "mrkdwn", "text": clip(&format!("*{name}*\n{}", slack_escape(value)), 2000)});
    serde_json::json!({
        "text": clip(&slack_escape(&format!("[{severity}] {verb}{} on {}: {}", g.rule, g.hostname, alert.output)), 3000),
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": clip(&format!("{verb}{}", g.rule), 150)}},
            {"type": "section", "text": {"type": "mrkdwn", "text": clip(&slack_escape(&alert.output), 3000)}},
            {"type": "section", "fields": [
                field("Severity", severity),
                field("Host", &g.hostname),
                field("Container", &g.container),
                field("State", g.state.name()),
                field("Count", &g.count.to_string()),
                field("Group", &g.id),
            ]},
            {"type": "context", "elements": [
                {"type": "mrkdwn", "text": clip(&format!(
                    "first seen {} · `vigil-collector alert history {}`",
                    rfc3339(g.first_seen_ns), g.id
                ), 2000)},
            ]},
        ],
    })
}

/// PagerDuty's severities from Falco's priorities.
fn pagerduty_severity(s: i32) -> &'static str {
    match Severity::try_from(s).unwrap_or_default() {
        Severity::Emergency | Severity::Alert | Severity::Critical => "critical",
        Severity::Error => "error",
        Severity::Warning => "warning",
        _ => "info",
    }
}

/// Longest `payload.summary` PagerDuty accepts.
const PAGERDUTY_SUMMARY_MAX: usize = 1024;

/// An Events API v2 event for group `g`: `trigger` (with the alert), or
/// `acknowledge` / `resolve`; the group id is the `dedup_key`, so a group
/// is one incident however often it fires.
fn pagerduty_body(
    routing_key: &str,
    action: &str,
    g: &GroupRecord,
    alert: Option<&Alert>,
) -> serde_json::Value {
    let mut v = serde_json::json!({
        "routing_key": routing_key,
        "event_action": action,
        "dedup_key": g.id,
    });
    if let Some(a) = alert {
        let mut summary = format!("{} on {}: {}", g.rule, g.hostname, a.output);
        if summary.len() > PAGERDUTY_SUMMARY_MAX {
            let mut cut = PAGERDUTY_SUMMARY_MAX - 3;
            while !summary.is_char_boundary(cut) {
                cut -= 1;
            }
            summary.truncate(cut);
            summary.push_str("...");
        }
        v["payload"] = serde_json::json!({
            "summary": summary,
            "source": g.hostname,
            "severity": pagerduty_severity(a.severity),
            "timestamp": rfc3339(a.time_unix_ns),
            "component": g.container,
            "group": g.rule,
            "class": a.event_type,
            "custom_details": {
                "group_id": g.id,
                "rule": g.rule,
                "output": a.output,
                "fields": a.fields,
                "tags": a.tags,
                "count": g.count,
                "first_seen": rfc3339(g.first_seen_ns),
                "alert_id": a.id,
                "history": format!("vigil-collector alert history {}", g.id),
            },
        });
    }
    v
}

/// POSTs `body` to the receiver, signed when it is a webhook with a
/// secret.
async fn post(
    client: &reqwest::Client,
    kind: &ReceiverKind,
    body: &[u8],
) -> Result<reqwest::Response, reqwest::Error> {
    let mut req = client
        .post(kind.url())
        .header("content-type", "application/json")
        .body(body.to_vec());
    if let ReceiverKind::Webhook {
        secret: Some(key), ..
    } = kind
    {
        let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any size");
        mac.update(body);
        let sig: String = mac
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        req = req.header("x-vigil-signature", format!("sha256={sig}"));
    }
    req.send().await
}

/// `vigil-collector notify test RECEIVER`: sends a test message in the
/// receiver's format (to PagerDuty a trigger, then its resolve, so no
/// incident stays open) and returns each answer, `HTTP 202 ...: body`.
/// Err when the receiver is unknown, unreachable, or answers non-2xx.
pub async fn test(config: &Config, name: &str, host: &str) -> Result<Vec<String>, String> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let r = config
        .receivers
        .iter()
        .find(|r| r.name == name)
        .ok_or_else(|| {
            let names: Vec<&str> = config.receivers.iter().map(|r| r.name.as_str()).collect();
            format!(
                "no receiver `{name}` in the file (it has: {})",
                names.join(", ")
            )
        })?;
    let client = reqwest::Client::builder()
        .timeout(SEND_TIMEOUT)
        .build()
        .map_err(|e| e.to_string())?;
    let now = now_ns();
    let g = GroupRecord {
        id: format!("vigil-test-{now}"),
        rule: "Vigil test notification".into(),
        severity: Severity::Warning as i32,
        hostname: host.into(),
        container: "host".into(),
        state: crate::groups::GroupState::Open,
        reason: None,
        assignee: String::new(),
        count: 1,
        first_seen_ns: now,
        last_seen_ns: now,
        output: "A test from vigil-collector notify test; nothing happened.".into(),
        key: Default::default(),
        state_changed_ns: now,
        tags: Vec::new(),
    };
    let alert = Alert {
        id: format!("vigil-test-{now}"),
        rule: g.rule.clone(),
        severity: g.severity,
        output: g.output.clone(),
        time_unix_ns: now,
        event_type: "test".into(),
        ..Default::default()
    };
    let bodies = match &r.kind {
        ReceiverKind::Webhook { .. } => vec![webhook_body("test", &g, &alert)],
        ReceiverKind::Slack { .. } => vec![slack_body("test", &g, &alert)],
        ReceiverKind::Alertmanager { .. } => vec![alertmanager_body(&g, None)],
        ReceiverKind::PagerDuty { routing_key, .. } => vec![
            pagerduty_body(routing_key, "trigger", &g, Some(&alert)),
            pagerduty_body(routing_key, "resolve", &g, None),
        ],
    };
    let mut answers = Vec::new();
    for body in bodies {
        let body = serde_json::to_vec(&body).unwrap_or_default();
        let resp = post(&client, &r.kind, &body)
            .await
            .map_err(|e| format!("cannot reach the receiver: {}", e.without_url()))?;
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        let line = format!("HTTP {status}: {}", text.trim());
        if !status.is_success() {
            return Err(line);
        }
        answers.push(line);
    }
    Ok(answers)
}

/// The least time between two sends to one receiver: PagerDuty takes
/// about 120 events a minute per routing key, Slack about one message a
/// second per webhook.
fn min_gap(kind: &ReceiverKind) -> Duration {
    match kind {
        ReceiverKind::PagerDuty { .. } => Duration::from_millis(500),
        ReceiverKind::Slack { .. } => Duration::from_secs(1),
        ReceiverKind::Alertmanager { .. } => Duration::ZERO,
        ReceiverKind::Webhook { .. } => Duration::ZERO,
    }
}

/// Sends one notification: Ok with what to record, or Err with when to
/// try again (None: never).
async fn send(
    client: &reqwest::Client,
    kind: &ReceiverKind,
    o: &Outgoing,
) -> Result<String, (Option<i64>, String)> {
    let retry_at = |after: Duration| {
        let too_old = now_ns() - o.created_ns > GIVE_UP_AFTER.as_nanos() as i64;
        (!too_old).then(|| now_ns() + after.as_nanos() as i64)
    };
    let backoff = MAX_BACKOFF.min(Duration::from_secs(1 << o.attempts.min(9)));
    match post(client, kind, &o.body).await {
        Ok(resp) => {
            let status = resp.status();
            if status.is_success() {
                return Ok(format!(
                    "sent to {} (HTTP {}) after {} attempts",
                    o.receiver,
                    status.as_u16(),
                    o.attempts + 1
                ));
            }
            let why = format!("HTTP {status}");
            if status.as_u16() == 429 {
                let after = resp
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .map_or(backoff, |s| Duration::from_secs(s).min(MAX_BACKOFF));
                Err((retry_at(after), format!("{why}, retry after {after:?}")))
            } else if status.is_client_error() {
                // The receiver refuses this message; sending it again
                // would be refused again.
                Err((None, why))
            } else {
                Err((retry_at(backoff), why))
            }
        }
        // Without the URL: a Slack webhook's URL is a secret, and this
        // text reaches the log and the group's history.
        Err(e) => Err((
            retry_at(backoff),
            format!("cannot reach the receiver: {}", e.without_url()),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        groups::{Actor, Change, Reason},
        store::AlertStore,
    };
    use vigil_proto::v1::HostInfo;

    fn pager(dir: &std::path::Path) -> Config {
        std::fs::write(dir.join("k"), "KEY").unwrap();
        Config::parse(
            "n.yaml",
            "receivers:\n  - name: pager\n    pagerduty: { routing_key_file: k, url: \"http://127.0.0.1:1/\" }\nroutes:\n  - receivers: [pager]\n",
            dir,
        )
        .unwrap()
    }

    fn alert(id: &str) -> Alert {
        Alert {
            id: id.into(),
            rule: "r".into(),
            severity: Severity::Error as i32,
            time_unix_ns: 1,
            ..Default::default()
        }
    }

    fn host() -> HostInfo {
        HostInfo {
            hostname: "h".into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_resolve_planned_with_its_trigger_is_not_lost_and_waits_for_it() {
        let dir = tempfile::tempdir().unwrap();
        let config = pager(dir.path());
        let store = SqlStore::in_memory().unwrap();
        store.start_notify_cursor().unwrap();
        store.insert_batch(&host(), &[alert("a")]).unwrap();
        let who = Actor::collector();
        store
            .update_group("a", &Change::Resolve(Reason::Benign), "", &who)
            .unwrap();
        // Both events in one batch.
        plan(&store, &config).unwrap();
        let due = store.due(now_ns(), 10).unwrap();
        assert_eq!(due.len(), 1, "one at a time per receiver and group");
        assert_eq!(due[0].event, "opened");
        // The trigger is retried later: the resolve must not overtake it.
        store
            .delivery_outcome(
                &due[0],
                Err((Some(now_ns() + 60_000_000_000), "HTTP 500".into())),
            )
            .unwrap();
        assert!(store.due(now_ns(), 10).unwrap().is_empty());
        store.delivery_outcome(&due[0], Ok("sent".into())).unwrap();
        let next = store.due(now_ns(), 10).unwrap();
        assert_eq!(next.len(), 1);
        assert_eq!(next[0].event, "resolved");
        let body: serde_json::Value = serde_json::from_slice(&next[0].body).unwrap();
        assert_eq!(body["event_action"], "resolve");
    }

    #[test]
    fn turning_notifications_on_does_not_page_for_the_past() {
        let dir = tempfile::tempdir().unwrap();
        let config = pager(dir.path());
        let store = SqlStore::in_memory().unwrap();
        store.insert_batch(&host(), &[alert("old")]).unwrap();
        store.start_notify_cursor().unwrap();
        plan(&store, &config).unwrap();
        assert!(store.due(now_ns(), 10).unwrap().is_empty());
        // From then on, new groups notify; a second start keeps the cursor.
        let mut new = alert("new");
        new.rule = "r2".into();
        store.insert_batch(&host(), &[new]).unwrap();
        store.start_notify_cursor().unwrap();
        plan(&store, &config).unwrap();
        assert_eq!(store.due(now_ns(), 10).unwrap().len(), 1);
    }
}

#[cfg(test)]
mod silence_tests {
    use super::*;
    use crate::{groups::Actor, silences::Matcher, store::AlertStore};
    use vigil_proto::v1::HostInfo;

    #[test]
    fn a_group_opened_by_a_silenced_alert_is_announced_by_the_next_unsilenced_one() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("k"), "KEY").unwrap();
        let config = Config::parse(
            "n.yaml",
            "receivers:\n  - name: pager\n    pagerduty: { routing_key_file: k, url: \"http://127.0.0.1:1/\" }\nroutes:\n  - receivers: [pager]\n",
            dir.path(),
        )
        .unwrap();
        let store = SqlStore::in_memory().unwrap();
        store.start_notify_cursor().unwrap();
        let host = HostInfo {
            hostname: "h".into(),
            ..Default::default()
        };
        let alert = |id: &str| Alert {
            id: id.into(),
            rule: "r".into(),
            severity: Severity::Error as i32,
            time_unix_ns: 1,
            ..Default::default()
        };
        let who = Actor::collector();
        let s = store
            .add_silence(
                &[Matcher::Host("h".into())],
                "window",
                now_ns() + 3_600_000_000_000,
                &who,
            )
            .unwrap();
        store.insert_batch(&host, &[alert("quiet")]).unwrap();
        plan(&store, &config).unwrap();
        assert!(
            store.due(now_ns(), 10).unwrap().is_empty(),
            "silenced: nobody told"
        );
        store.expire_silence(&s.id, &who).unwrap();
        store.insert_batch(&host, &[alert("loud")]).unwrap();
        plan(&store, &config).unwrap();
        let due = store.due(now_ns(), 10).unwrap();
        assert_eq!(
            due.len(),
            1,
            "the first alert no silence covers announces the group"
        );
        assert_eq!(due[0].event, "announced");
        // Later alerts only add to the count: once the claim on the
        // announcement runs out, it is still the only message.
        store.insert_batch(&host, &[alert("again")]).unwrap();
        plan(&store, &config).unwrap();
        let later = now_ns() + 301 * 1_000_000_000;
        assert_eq!(store.due(later, 10).unwrap().len(), 1);
    }
}
