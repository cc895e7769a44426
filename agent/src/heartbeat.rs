//! The agent's report on itself, sent every `--heartbeat-interval`: what it
//! runs (version, rules), whether its probe programs are still attached
//! (read from the kernel each time), what it lost since the last report,
//! its spool depth, CPU and memory. The collector marks an agent silent
//! when these stop, and raises alerts from what they say.
use std::{collections::HashMap, time::Instant};

use sha2::{Digest, Sha256};
use vigil_proto::v1::{AgentHeartbeat, HostInfo, LoadedRule, LossCount, ProbeProgram};

/// What a heartbeat reports, read by the run loop.
pub struct Reading {
    pub rules_digest: String,
    pub rules: u32,
    /// (program, attachments made, attachments the kernel has).
    pub programs: Vec<(String, u32, u32)>,
    /// The probe's maps changed from outside (`Probe::tampered`).
    pub tampered: Vec<String>,
    /// Cumulative loss counters by place (`kernel:file`, `alert_queue`, ...).
    pub totals: Vec<(String, u64)>,
    pub spool_depth: u64,
    /// Activity events written to the spool so far (cumulative).
    pub activity_sent: u64,
    /// The rules loaded.
    pub loaded_rules: Vec<LoadedRule>,
}

/// Builds heartbeats, turning cumulative counters into what changed since
/// the last one.
pub struct Heartbeats {
    host: HostInfo,
    interval_ms: u32,
    started: Instant,
    boot_id: String,
    last_totals: HashMap<String, u64>,
    last_cpu: Option<(Instant, u64)>,
    last_activity_sent: u64,
    /// The rule set whose list was last sent, and heartbeats since.
    sent_rules: Option<(String, u32)>,
}

/// The rule list goes with the first heartbeat, when the rule set changes,
/// and every this many heartbeats (for a collector that lost it); in
/// between the collector keeps the last list of an unchanged digest.
const RULES_EVERY: u32 = 20;

impl Heartbeats {
    pub fn new(host: HostInfo, interval: std::time::Duration) -> Heartbeats {
        Heartbeats {
            host,
            interval_ms: interval.as_millis().min(u32::MAX as u128) as u32,
            started: Instant::now(),
            boot_id: crate::host::boot_id(),
            last_totals: HashMap::new(),
            last_cpu: None,
            last_activity_sent: 0,
            sent_rules: None,
        }
    }

    pub fn build(&mut self, r: Reading) -> AgentHeartbeat {
        let losses = r
            .totals
            .iter()
            .filter_map(|(place, total)| {
                let before = self.last_totals.insert(place.clone(), *total).unwrap_or(0);
                let delta = total.saturating_sub(before);
                (delta > 0).then(|| LossCount {
                    place: place.clone(),
                    count: delta,
                })
            })
            .collect();
        let now = Instant::now();
        let ticks = cpu_ticks();
        let cpu_percent = match self.last_cpu.replace((now, ticks)) {
            Some((t0, c0)) => {
                let secs = now.duration_since(t0).as_secs_f64();
                // SAFETY: sysconf has no preconditions.
                let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
                if secs > 0.0 {
                    (ticks.saturating_sub(c0) as f64 / hz) / secs * 100.0
                } else {
                    0.0
                }
            }
            None => 0.0,
        };
        let send_rules = match &mut self.sent_rules {
            Some((digest, beats)) if *digest == r.rules_digest && *beats + 1 < RULES_EVERY => {
                *beats += 1;
                false
            }
            _ => {
                self.sent_rules = Some((r.rules_digest.clone(), 0));
                true
            }
        };
        AgentHeartbeat {
            host: Some(self.host.clone()),
            time_unix_ns: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as i64),
            interval_ms: self.interval_ms,
            uptime_s: self.started.elapsed().as_secs(),
            boot_id: self.boot_id.clone(),
            rules_digest: r.rules_digest,
            loaded_rules: if send_rules {
                r.loaded_rules
            } else {
                Vec::new()
            },
            rules: r.rules,
            programs: r
                .programs
                .into_iter()
                .map(|(name, expected, attached)| ProbeProgram {
                    name,
                    expected,
                    attached,
                })
                .collect(),
            tampered: r.tampered,
            losses,
            spool_depth: r.spool_depth,
            cpu_percent,
            rss_bytes: rss_bytes(),
            activity_sent: r.activity_sent.saturating_sub(std::mem::replace(
                &mut self.last_activity_sent,
                r.activity_sent,
            )),
        }
    }
}

/// SHA-256 of the rule files' contents, in load order (`embedded` for the
/// built-in set), so the collector can tell which hosts run which rules.
pub fn rules_digest(sources: &[String]) -> String {
    let mut h = Sha256::new();
    for s in sources {
        h.update(s.as_bytes());
        h.update([0]);
        if let Ok(bytes) = std::fs::read(s) {
            h.update(&bytes);
        }
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// The agent's user + system CPU time, in clock ticks.
fn cpu_ticks() -> u64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0;
    };
    // Fields after the command name (which may hold spaces): utime is the
    // 14th field, stime the 15th.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return 0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let get = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    get(11) + get(12)
}

/// Resident memory, in bytes.
fn rss_bytes() -> u64 {
    let pages = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    pages * unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(0) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn losses_are_reported_as_changes_since_the_last_heartbeat() {
        let mut h = Heartbeats::new(HostInfo::default(), std::time::Duration::from_secs(15));
        let reading = |n: u64| Reading {
            rules_digest: rules_digest(&["embedded".into()]),
            rules: 3,
            programs: vec![("syscall_exit".into(), 2, 2)],
            tampered: Vec::new(),
            totals: vec![("kernel:file".into(), n), ("alert_queue".into(), 0)],
            spool_depth: 0,
            activity_sent: 10 * n,
            loaded_rules: vec![vigil_proto::v1::LoadedRule {
                name: "r".into(),
                ..Default::default()
            }],
        };
        let first = h.build(reading(5));
        assert_eq!(first.losses.len(), 1);
        assert_eq!(first.losses[0].count, 5);
        assert_eq!(first.interval_ms, 15_000);
        assert_eq!(first.activity_sent, 50);
        let same = h.build(reading(5));
        assert!(same.losses.is_empty());
        // The rule list goes with the first heartbeat, then only again
        // when the set changes or every RULES_EVERY heartbeats.
        assert_eq!(first.loaded_rules.len(), 1);
        assert!(same.loaded_rules.is_empty());
        for _ in 2..RULES_EVERY {
            assert!(h.build(reading(5)).loaded_rules.is_empty());
        }
        assert_eq!(h.build(reading(5)).loaded_rules.len(), 1, "the refresh");
        assert_eq!(same.activity_sent, 0);
        let more = h.build(reading(9));
        assert_eq!(more.losses[0].count, 4);
        assert_eq!(more.activity_sent, 40);
        assert!(first.rss_bytes > 0);
        assert_eq!(first.rules_digest.len(), 64);
        // Burn a little CPU: the next reading sees it.
        let t = Instant::now();
        while t.elapsed().as_millis() < 30 {}
        assert!(h.build(reading(9)).cpu_percent >= 0.0);
    }
}
