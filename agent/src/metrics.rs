//! The agent's metrics for `/metrics` (off unless `--metrics-listen`;
//! names documented in docs/operations.md): events per kind, losses per
//! place, alerts per rule and severity, delivery (spool, acks,
//! reconnects), and the probe's attachments. The run loop publishes a
//! snapshot every second; a scrape reads the snapshot and the forwarder's
//! live counters, and never touches the event path.
use std::sync::{
    atomic::{AtomicBool, Ordering},
    Arc, Mutex,
};

use vigil_metrics::{Source, Text};

use crate::forward::ForwardCounters;

/// What the run loop publishes.
#[derive(Debug, Default, Clone)]
pub struct Snapshot {
    /// Events read from the rings, by kind.
    pub events: Vec<(&'static str, u64)>,
    /// Cumulative losses by place (`kernel:file`, `alert_queue`, ...).
    pub losses: Vec<(String, u64)>,
    /// Alerts raised, by rule and severity.
    pub alerts: Vec<(String, &'static str, u64)>,
    /// (program, attachments made, attachments the kernel has).
    pub programs: Vec<(String, u32, u32)>,
    pub processes: u64,
    pub rules: u64,
}

#[derive(Default)]
pub struct AgentMetrics {
    snapshot: Mutex<Snapshot>,
    pub delivery: Mutex<Option<Arc<ForwardCounters>>>,
    pub ready: AtomicBool,
}

impl AgentMetrics {
    pub fn publish(&self, s: Snapshot) {
        *self.snapshot.lock().expect("snapshot lock") = s;
        self.ready.store(true, Ordering::Relaxed);
    }
}

impl Source for AgentMetrics {
    fn render(&self) -> String {
        let s = self.snapshot.lock().expect("snapshot lock").clone();
        let mut t = Text::default();
        t.metric(
            "vigil_agent_events_total",
            "counter",
            "Events read from the probe's rings, by kind.",
        );
        for (kind, n) in &s.events {
            t.sample("vigil_agent_events_total", &[("kind", kind)], *n as f64);
        }
        t.metric(
            "vigil_agent_lost_total",
            "counter",
            "Events or alerts lost, by place (kernel:<kind> is a full ring buffer).",
        );
        for (place, n) in &s.losses {
            t.sample("vigil_agent_lost_total", &[("place", place)], *n as f64);
        }
        t.metric(
            "vigil_agent_alerts_total",
            "counter",
            "Alerts raised, by rule and severity.",
        );
        for (rule, sev, n) in &s.alerts {
            t.sample(
                "vigil_agent_alerts_total",
                &[("rule", rule), ("severity", sev)],
                *n as f64,
            );
        }
        t.metric(
            "vigil_agent_probe_attachments",
            "gauge",
            "Each probe program's attachments: made by the agent (expected) and present in the kernel (attached).",
        );
        for (p, expected, attached) in &s.programs {
            t.sample(
                "vigil_agent_probe_attachments",
                &[("program", p), ("kind", "expected")],
                f64::from(*expected),
            );
            t.sample(
                "vigil_agent_probe_attachments",
                &[("program", p), ("kind", "attached")],
                f64::from(*attached),
            );
        }
        t.single(
            "vigil_agent_processes",
            "gauge",
            "Processes in the agent's process table.",
            s.processes as f64,
        );
        t.single(
            "vigil_agent_rules",
            "gauge",
            "Rules loaded.",
            s.rules as f64,
        );
        if let Some(d) = self.delivery.lock().expect("delivery lock").as_ref() {
            let v = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed) as f64;
            t.single(
                "vigil_agent_spool_alerts",
                "gauge",
                "Alerts in the spool, waiting for the collector's acknowledgement.",
                v(&d.spool_depth),
            );
            t.single(
                "vigil_agent_spool_bytes",
                "gauge",
                "Bytes the spool's segments hold on disk.",
                v(&d.spool_bytes),
            );
            t.single(
                "vigil_agent_acked_total",
                "counter",
                "Alerts the collector acknowledged.",
                v(&d.acked),
            );
            t.single(
                "vigil_agent_reconnects_total",
                "counter",
                "Connections to the collector redone after a failure.",
                v(&d.reconnects),
            );
            t.single(
                "vigil_agent_bogus_acks_total",
                "counter",
                "Acknowledgements for batches not sent (each ended the connection).",
                v(&d.bogus_acks),
            );
        }
        t.finish()
    }

    fn ready(&self) -> Result<(), String> {
        if self.ready.load(Ordering::Relaxed) {
            Ok(())
        } else {
            Err("the probe is not running yet".into())
        }
    }
}
