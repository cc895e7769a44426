//! The agent registry and the collector's own alerts: every heartbeat
//! updates its agent's entry, and the collector raises alerts, stored and
//! queried like any other, under the host they concern, when an agent
//! falls silent, reports a probe program missing, or reports losses. So
//! silence from a host means nothing happened, not that nobody is looking.
use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use vigil_proto::v1::{AgentHeartbeat, Alert, HostInfo, LossCount, Severity};

/// The prefix of heartbeat places where activity (not alerts) was left
/// out: `activity_rate`, `activity_queue`, `activity_spool_full`, ...
pub const ACTIVITY_PLACES: &str = "activity_";

use crate::store::{now_ns, AgentRecord, AgentState, AlertStore, StoreError};

pub const SILENT_RULE: &str = "Agent silent";
pub const DETACHED_RULE: &str = "Probe detached or modified";
pub const LOST_RULE: &str = "Events lost";

/// When an agent counts as silent: a fixed time, or a number of its own
/// heartbeat intervals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SilentAfter {
    Fixed(Duration),
    Intervals(u32),
}

impl SilentAfter {
    fn for_agent(self, hb: &AgentHeartbeat) -> Duration {
        match self {
            SilentAfter::Fixed(d) => d,
            SilentAfter::Intervals(n) => {
                // An agent that does not say its interval gets the default's.
                let ms = if hb.interval_ms == 0 {
                    15_000
                } else {
                    hb.interval_ms
                };
                Duration::from_millis(u64::from(ms) * u64::from(n))
            }
        }
    }
}

/// The registry, cached in memory over the store.
pub struct Monitor {
    store: Arc<dyn AlertStore>,
    silent_after: SilentAfter,
    agents: Mutex<HashMap<String, AgentRecord>>,
}

impl Monitor {
    /// Loads the registry (agents known before a restart stay known, so
    /// one that never comes back is still reported silent).
    pub fn new(
        store: Arc<dyn AlertStore>,
        silent_after: SilentAfter,
    ) -> Result<Monitor, StoreError> {
        let agents = store
            .agents()?
            .into_iter()
            .map(|a| (a.hostname.clone(), a))
            .collect();
        Ok(Monitor {
            store,
            silent_after,
            agents: Mutex::new(agents),
        })
    }

    /// Records a heartbeat from `host` (the certificate's host, already
    /// checked against the heartbeat's) and raises what it calls for.
    pub fn heartbeat(&self, hb: AgentHeartbeat) -> Result<(), StoreError> {
        let host = hb.host.clone().unwrap_or_default();
        let now = now_ns();
        let missing: Vec<String> = hb
            .programs
            .iter()
            .filter(|p| p.attached < p.expected)
            .map(|p| format!("{} ({} of {} attachments)", p.name, p.attached, p.expected))
            .collect();
        // Activity left out (by the rate cap, or a full activity queue or
        // spool) is counted and shown in the heartbeat, but no alert was
        // at risk: it does not make the agent degraded.
        let losses: Vec<&LossCount> = hb
            .losses
            .iter()
            .filter(|l| l.count > 0 && !l.place.starts_with(ACTIVITY_PLACES))
            .collect();
        let lost: u64 = losses.iter().map(|l| l.count).sum();
        // What is wrong with the probe: programs gone, maps changed.
        let mut probe = Vec::new();
        if !missing.is_empty() {
            probe.push(format!("probe programs missing: {}", missing.join(", ")));
        }
        if !hb.tampered.is_empty() {
            probe.push(format!(
                "probe maps changed from outside the agent: {}",
                hb.tampered.join("; ")
            ));
        }
        let (state, reason) = if !probe.is_empty() {
            (AgentState::Degraded, probe.join("; "))
        } else if lost > 0 {
            let places: Vec<String> = losses
                .iter()
                .map(|l| format!("{} {}", l.count, l.place))
                .collect();
            (
                AgentState::Degraded,
                format!("lost since the last heartbeat: {}", places.join(", ")),
            )
        } else {
            (AgentState::Ok, String::new())
        };
        let before = self
            .agents
            .lock()
            .expect("agents lock")
            .get(&host.hostname)
            .map(|a| (a.state, a.reason.clone()));
        let mut raise = Vec::new();
        if !probe.is_empty() && before.as_ref().is_none_or(|(_, r)| *r != reason) {
            raise.push(own_alert(
                &host,
                DETACHED_RULE,
                Severity::Critical,
                format!(
                    "Probe detached or modified on {}: {} (the host is not fully watched)",
                    host.hostname, reason
                ),
                now,
            ));
        }
        if lost > 0 {
            raise.push(own_alert(
                &host,
                LOST_RULE,
                Severity::Warning,
                format!("Events lost on {}: {reason}", host.hostname),
                now,
            ));
        }
        if let Some((AgentState::Silent, _)) = before {
            tracing::info!(host = %host.hostname, "agent heard from again");
        }
        // Agents send their rule list only when it changes (and now and
        // then): keep the last one while the digest stays the same.
        let mut hb = hb;
        if hb.loaded_rules.is_empty() {
            if let Some(prev) = self.agents.lock().expect("agents lock").get(&host.hostname) {
                if prev.heartbeat.rules_digest == hb.rules_digest {
                    hb.loaded_rules = prev.heartbeat.loaded_rules.clone();
                }
            }
        }
        let record = AgentRecord {
            hostname: host.hostname.clone(),
            state,
            reason,
            last_seen_ns: now,
            heartbeat: hb,
        };
        self.store.save_agent(&record)?;
        if !raise.is_empty() {
            self.store.insert_batch(&host, &raise)?;
        }
        self.agents
            .lock()
            .expect("agents lock")
            .insert(record.hostname.clone(), record);
        Ok(())
    }

    /// Marks agents silent whose last heartbeat is too old, raising
    /// "Agent silent" once for each; returns how many went silent.
    pub fn sweep(&self) -> Result<usize, StoreError> {
        // One collector of those sharing a database sweeps, with the
        // registry as the database has it: heartbeats may have gone to
        // another collector.
        if !self.store.holds_fleet_lease() {
            return Ok(0);
        }
        if self.store.is_shared() {
            let fresh = self.store.agents()?;
            let mut agents = self.agents.lock().expect("agents lock");
            for a in fresh {
                agents.insert(a.hostname.clone(), a);
            }
        }
        let now = now_ns();
        let newly: Vec<AgentRecord> = {
            let mut agents = self.agents.lock().expect("agents lock");
            agents
                .values_mut()
                .filter(|a| a.state != AgentState::Silent)
                .filter(|a| {
                    let limit = self.silent_after.for_agent(&a.heartbeat).as_nanos() as i64;
                    now - a.last_seen_ns > limit
                })
                .map(|a| {
                    a.state = AgentState::Silent;
                    a.reason = format!(
                        "no heartbeat for {}",
                        humantime::format_duration(Duration::from_secs(
                            ((now - a.last_seen_ns) / 1_000_000_000).max(0) as u64
                        ))
                    );
                    a.clone()
                })
                .collect()
        };
        for a in &newly {
            self.store.save_agent(a)?;
            let host = a.heartbeat.host.clone().unwrap_or_else(|| HostInfo {
                hostname: a.hostname.clone(),
                ..Default::default()
            });
            let alert = own_alert(
                &host,
                SILENT_RULE,
                Severity::Critical,
                format!(
                    "Agent silent: {} sent nothing for {} (stopped, blinded, or cut off)",
                    a.hostname,
                    a.reason.trim_start_matches("no heartbeat for ")
                ),
                now,
            );
            self.store.insert_batch(&host, &[alert])?;
            tracing::warn!(host = %a.hostname, reason = %a.reason, "agent silent");
        }
        Ok(newly.len())
    }

    /// Every agent, by host name.
    pub fn agents(&self) -> Vec<AgentRecord> {
        let mut v: Vec<AgentRecord> = self
            .agents
            .lock()
            .expect("agents lock")
            .values()
            .cloned()
            .collect();
        v.sort_by(|a, b| a.hostname.cmp(&b.hostname));
        v
    }

    /// Sweeps every second until the task is dropped.
    pub fn spawn_sweeper(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                let Some(m) = weak.upgrade() else { return };
                match tokio::task::spawn_blocking(move || m.sweep()).await {
                    Ok(Err(e)) => tracing::error!(error = %e, "cannot record a silent agent"),
                    Err(e) => tracing::error!(error = %e, "agent sweep failed"),
                    Ok(Ok(_)) => {}
                }
            }
        })
    }
}

/// An alert the collector raises itself, about `host`.
fn own_alert(host: &HostInfo, rule: &str, severity: Severity, output: String, now: i64) -> Alert {
    Alert {
        id: format!(
            "collector-{}-{}-{now}",
            rule.to_lowercase().replace(' ', "-"),
            host.hostname
        ),
        rule: rule.into(),
        severity: severity as i32,
        output,
        time_unix_ns: now,
        event_type: "agent".into(),
        tags: vec!["vigil".into(), "self-monitoring".into()],
        count: 1,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{sql::SqlStore, store::AlertFilter};
    use vigil_proto::v1::ProbeProgram;

    fn hb(host: &str) -> AgentHeartbeat {
        AgentHeartbeat {
            host: Some(HostInfo {
                hostname: host.into(),
                ..Default::default()
            }),
            interval_ms: 100,
            programs: vec![ProbeProgram {
                name: "syscall_exit".into(),
                expected: 3,
                attached: 3,
            }],
            ..Default::default()
        }
    }

    fn alerts(store: &SqlStore, rule: &str) -> Vec<Alert> {
        store
            .query(&AlertFilter {
                rule: Some(rule.into()),
                limit: 100,
                ..Default::default()
            })
            .unwrap()
    }

    #[test]
    fn the_rule_list_is_kept_while_the_rule_set_stays_the_same() {
        let store = Arc::new(SqlStore::in_memory().unwrap());
        let m = Monitor::new(store.clone(), SilentAfter::Intervals(3)).unwrap();
        let with = |digest: &str, rules: &[&str]| AgentHeartbeat {
            rules_digest: digest.into(),
            loaded_rules: rules
                .iter()
                .map(|r| vigil_proto::v1::LoadedRule {
                    name: r.to_string(),
                    ..Default::default()
                })
                .collect(),
            ..hb("a")
        };
        let names = || -> Vec<String> {
            store.agents().unwrap()[0]
                .heartbeat
                .loaded_rules
                .iter()
                .map(|r| r.name.clone())
                .collect()
        };
        m.heartbeat(with("d1", &["x", "y"])).unwrap();
        m.heartbeat(with("d1", &[])).unwrap();
        assert_eq!(names(), ["x", "y"]);
        // A new rule set without its list (a collector that missed it)
        // shows none rather than the old one.
        m.heartbeat(with("d2", &[])).unwrap();
        assert!(names().is_empty());
        m.heartbeat(with("d2", &["z"])).unwrap();
        assert_eq!(names(), ["z"]);
    }

    #[test]
    fn silence_detachment_and_losses_raise_alerts_once() {
        let store = Arc::new(SqlStore::in_memory().unwrap());
        let m = Monitor::new(store.clone(), SilentAfter::Intervals(3)).unwrap();
        m.heartbeat(hb("a")).unwrap();
        assert_eq!(m.agents()[0].state, AgentState::Ok);
        assert_eq!(m.sweep().unwrap(), 0);
        std::thread::sleep(Duration::from_millis(350));
        assert_eq!(m.sweep().unwrap(), 1);
        assert_eq!(m.sweep().unwrap(), 0, "raised once");
        assert_eq!(m.agents()[0].state, AgentState::Silent);
        let silent = alerts(&store, SILENT_RULE);
        assert_eq!(silent.len(), 1);
        assert_eq!(silent[0].host.as_ref().unwrap().hostname, "a");

        let mut detached = hb("a");
        detached.programs[0].attached = 1;
        m.heartbeat(detached.clone()).unwrap();
        m.heartbeat(detached).unwrap();
        assert_eq!(m.agents()[0].state, AgentState::Degraded);
        let d = alerts(&store, DETACHED_RULE);
        assert_eq!(d.len(), 1, "raised once per change");
        assert!(
            d[0].output.contains("syscall_exit (1 of 3"),
            "{}",
            d[0].output
        );

        let mut lossy = hb("a");
        lossy.losses = vec![LossCount {
            place: "kernel:file".into(),
            count: 12,
        }];
        m.heartbeat(lossy).unwrap();
        let l = alerts(&store, LOST_RULE);
        assert_eq!(l.len(), 1);
        assert!(l[0].output.contains("12 kernel:file"), "{}", l[0].output);
        m.heartbeat(hb("a")).unwrap();
        assert_eq!(m.agents()[0].state, AgentState::Ok);

        // Activity left out by the rate cap is no loss of protection.
        let mut capped = hb("a");
        capped.losses = vec![LossCount {
            place: "activity_rate".into(),
            count: 500,
        }];
        m.heartbeat(capped).unwrap();
        assert_eq!(m.agents()[0].state, AgentState::Ok);
        assert_eq!(alerts(&store, LOST_RULE).len(), 1, "nothing new raised");

        // The registry outlives a restart.
        let m2 = Monitor::new(store.clone(), SilentAfter::Fixed(Duration::from_secs(60))).unwrap();
        assert_eq!(m2.agents().len(), 1);
    }
}
