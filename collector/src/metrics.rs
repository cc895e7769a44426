//! The collector's metrics, for `/metrics` (names documented in
//! docs/operations.md): what came in and how fast it was committed, what
//! was refused, queries, agents per state, the database's size.
use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use vigil_metrics::{Source, Text};
use vigil_proto::v1::Severity;

use crate::{agents::Monitor, store::AgentState};

/// Upper bounds (seconds) of the ingest latency histogram.
const BUCKETS: [f64; 9] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 2.5];
/// Distinct (rule, severity) label pairs kept; past it, `rule="other"`:
/// agents choose rule names, and a scrape must stay bounded.
const MAX_RULE_LABELS: usize = 1000;

#[derive(Default)]
pub struct CollectorMetrics {
    pub batches_stored: AtomicU64,
    pub batches_rejected: AtomicU64,
    pub batches_failed: AtomicU64,
    pub alerts_stored: AtomicU64,
    pub alerts_duplicate: AtomicU64,
    /// Activity events newly stored, and the protobuf bytes of the
    /// activity received (stored or not).
    pub activity_stored: AtomicU64,
    pub activity_bytes: AtomicU64,
    /// Activity and context records dropped as unfit to store.
    pub activity_rejected: AtomicU64,
    pub queries: AtomicU64,
    pub refused: AtomicU64,
    pub streams_open: AtomicU64,
    ingest: Mutex<([u64; BUCKETS.len()], u64, f64)>,
    per_rule: Mutex<HashMap<(String, i32), u64>>,
    pub ready: AtomicBool,
    /// Whether the last batch failed to store (the outage is logged once).
    pub store_failing: AtomicBool,
}

impl CollectorMetrics {
    /// A batch committed in `took`, with its alerts' (rule, severity).
    pub fn committed(
        &self,
        alerts: Vec<(String, i32)>,
        stored: u32,
        duplicates: u32,
        took: Duration,
    ) {
        self.batches_stored.fetch_add(1, Ordering::Relaxed);
        self.alerts_stored
            .fetch_add(u64::from(stored), Ordering::Relaxed);
        self.alerts_duplicate
            .fetch_add(u64::from(duplicates), Ordering::Relaxed);
        let secs = took.as_secs_f64();
        {
            let mut h = self.ingest.lock().expect("ingest lock");
            for (i, b) in BUCKETS.iter().enumerate() {
                if secs <= *b {
                    h.0[i] += 1;
                }
            }
            h.1 += 1;
            h.2 += secs;
        }
        let mut per = self.per_rule.lock().expect("rule lock");
        for key in alerts {
            if per.len() >= MAX_RULE_LABELS && !per.contains_key(&key) {
                *per.entry(("other".into(), key.1)).or_default() += 1;
            } else {
                *per.entry(key).or_default() += 1;
            }
        }
    }
}

/// What `/metrics` and `/readyz` read.
pub struct CollectorSource {
    pub metrics: Arc<CollectorMetrics>,
    pub monitor: Arc<Monitor>,
    /// The SQLite file, for its size; None for other stores.
    pub db: Option<PathBuf>,
    /// The store, for whether this collector holds the fleet lease.
    pub store: Arc<dyn crate::store::AlertStore>,
    /// The notifier's counters, when `--notify` is given.
    pub notify: Option<Arc<NotifyCounters>>,
}

/// What the notifier did, since the collector started.
#[derive(Debug, Default)]
pub struct NotifyCounters {
    pub sent: AtomicU64,
    /// Tries that failed and will be tried again.
    pub retried: AtomicU64,
    /// Notifications given up on (dead letters).
    pub dead: AtomicU64,
}

impl Source for CollectorSource {
    fn render(&self) -> String {
        let m = &self.metrics;
        let v = |a: &AtomicU64| a.load(Ordering::Relaxed) as f64;
        let mut t = Text::default();
        t.metric(
            "vigil_collector_batches_total",
            "counter",
            "Alert batches received, by result (stored, rejected as invalid or not allowed, failed to store).",
        )
        .sample("vigil_collector_batches_total", &[("result", "stored")], v(&m.batches_stored))
        .sample("vigil_collector_batches_total", &[("result", "rejected")], v(&m.batches_rejected))
        .sample("vigil_collector_batches_total", &[("result", "failed")], v(&m.batches_failed));
        t.single(
            "vigil_collector_alerts_stored_total",
            "counter",
            "Alerts newly stored.",
            v(&m.alerts_stored),
        );
        t.single(
            "vigil_collector_alerts_duplicate_total",
            "counter",
            "Alerts received again (re-sends), already stored.",
            v(&m.alerts_duplicate),
        );
        t.single(
            "vigil_collector_activity_stored_total",
            "counter",
            "Activity events (process starts and exits, connections, DNS queries, alert context) newly stored.",
            v(&m.activity_stored),
        );
        t.single(
            "vigil_collector_activity_bytes_total",
            "counter",
            "Bytes of activity received from agents (protobuf, as sent): the bandwidth activity takes.",
            v(&m.activity_bytes),
        );
        t.single(
            "vigil_collector_activity_rejected_total",
            "counter",
            "Activity and alert-context records dropped as unfit to store (bad id or process id, from the future, over the per-batch bounds); their batches' alerts were stored.",
            v(&m.activity_rejected),
        );
        t.metric(
            "vigil_collector_alerts_total",
            "counter",
            "Alerts received, by rule and severity (at most 1000 pairs; the rest as rule=\"other\").",
        );
        {
            let per = m.per_rule.lock().expect("rule lock");
            let mut rows: Vec<_> = per.iter().collect();
            rows.sort();
            for ((rule, sev), n) in rows {
                let sev = Severity::try_from(*sev)
                    .unwrap_or(Severity::Unspecified)
                    .name();
                t.sample(
                    "vigil_collector_alerts_total",
                    &[("rule", rule), ("severity", sev)],
                    *n as f64,
                );
            }
        }
        t.metric(
            "vigil_collector_ingest_seconds",
            "histogram",
            "Time from a batch's arrival to its commit (the ack follows at once).",
        );
        {
            let h = m.ingest.lock().expect("ingest lock");
            for (i, b) in BUCKETS.iter().enumerate() {
                t.sample(
                    "vigil_collector_ingest_seconds_bucket",
                    &[("le", &b.to_string())],
                    h.0[i] as f64,
                );
            }
            t.sample(
                "vigil_collector_ingest_seconds_bucket",
                &[("le", "+Inf")],
                h.1 as f64,
            );
            t.sample("vigil_collector_ingest_seconds_sum", &[], h.2);
            t.sample("vigil_collector_ingest_seconds_count", &[], h.1 as f64);
        }
        t.single(
            "vigil_collector_store_failing",
            "gauge",
            "1 while batches fail to store (disk full, I/O errors); agents keep them meanwhile.",
            if m.store_failing.load(Ordering::Relaxed) {
                1.0
            } else {
                0.0
            },
        );
        if let Some(n) = &self.notify {
            t.metric(
                "vigil_collector_notifications_total",
                "counter",
                "Notification attempts, by result: sent, retried (failed, tried again later), dead (given up: a dead letter).",
            )
            .sample("vigil_collector_notifications_total", &[("result", "sent")], v(&n.sent))
            .sample("vigil_collector_notifications_total", &[("result", "retried")], v(&n.retried))
            .sample("vigil_collector_notifications_total", &[("result", "dead")], v(&n.dead));
        }
        t.single(
            "vigil_collector_queries_total",
            "counter",
            "Queries answered (alerts and agents).",
            v(&m.queries),
        );
        t.single(
            "vigil_collector_refused_total",
            "counter",
            "Requests refused for their certificate (no role allowing it, revoked).",
            v(&m.refused),
        );
        t.single(
            "vigil_collector_streams_open",
            "gauge",
            "Agent alert streams open now.",
            v(&m.streams_open),
        );
        t.metric(
            "vigil_collector_agents",
            "gauge",
            "Agents in the registry, by state.",
        );
        let agents = self.monitor.agents();
        for state in [AgentState::Ok, AgentState::Degraded, AgentState::Silent] {
            let n = agents.iter().filter(|a| a.state == state).count();
            t.sample(
                "vigil_collector_agents",
                &[("state", state.name())],
                n as f64,
            );
        }
        t.single(
            "vigil_collector_fleet_lease",
            "gauge",
            "1 where this collector runs the fleet-wide jobs (notification planning, the silent-agent sweep, retention): always with SQLite; on a shared PostgreSQL database, exactly one collector.",
            if self.store.fleet_lease_last_seen() { 1.0 } else { 0.0 },
        );
        if let Some(db) = &self.db {
            let size = |p: PathBuf| std::fs::metadata(p).map_or(0, |m| m.len());
            let mut wal = db.clone().into_os_string();
            wal.push("-wal");
            t.single(
                "vigil_collector_store_bytes",
                "gauge",
                "Size of the database file and its write-ahead log.",
                (size(db.clone()) + size(wal.into())) as f64,
            );
        }
        t.finish()
    }

    fn ready(&self) -> Result<(), String> {
        if self.metrics.ready.load(Ordering::Relaxed) {
            Ok(())
        } else {
            Err("not serving yet".into())
        }
    }
}
