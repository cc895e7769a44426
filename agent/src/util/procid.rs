//! Fleet-wide process ids: one string per process that is the same in
//! every event, alert and activity record about it, and differs between
//! hosts, boots and reused pids, so the collector can join a process tree
//! across event kinds and never mix two hosts' processes.
//!
//! An id is 27 hex digits: 12 of a hash of the host (machine id, else
//! hostname) and its boot id, then the start time in clock ticks since
//! boot (9 digits: 21 years of uptime at 10 ms), then the pid (6 digits).
//! The start is taken to a tick because processes the agent found in
//! `/proc` at start-up are known only to a tick, and must get the id their
//! events carry; two processes with one pid in one tick of one boot cannot
//! exist (pids are reused only after the whole pid space wraps). The order
//! is chosen for the collector: one host's processes sort by start, so
//! the indexes keyed by process id grow at their ends, not at random.
use sha2::{Digest, Sha256};

use super::clock::tick_ns;

/// Hex digits of an id.
pub const ID_HEX: usize = 27;

#[derive(Debug, Clone)]
pub struct ProcIds {
    /// The first 12 hex digits of the host and boot's hash.
    host: String,
    tick_ns: u64,
}

impl ProcIds {
    /// Ids for processes of this host and boot.
    pub fn new(machine_id: &str, hostname: &str, boot_id: &str) -> ProcIds {
        let mut h = Sha256::new();
        let who = if machine_id.is_empty() {
            hostname
        } else {
            machine_id
        };
        h.update(who.as_bytes());
        h.update([0]);
        h.update(boot_id.as_bytes());
        let d = h.finalize();
        let host = d[..6].iter().map(|b| format!("{b:02x}")).collect();
        ProcIds {
            host,
            tick_ns: tick_ns().max(1),
        }
    }

    /// The id of the process `pid` started at `start_boottime_ns`
    /// (CLOCK_BOOTTIME, exact or to a tick); empty when the start is
    /// unknown (an id without it could name a later process of the pid).
    pub fn of(&self, pid: u32, start_boottime_ns: Option<u64>) -> String {
        let Some(start) = start_boottime_ns else {
            return String::new();
        };
        let tick = (start / self.tick_ns) & 0xf_ffff_ffff;
        format!("{}{tick:09x}{:06x}", self.host, pid & 0xff_ffff)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_join_exact_and_tick_starts_and_separate_hosts_boots_and_pids() {
        let a = ProcIds::new("m1", "h", "b1");
        let tick = tick_ns();
        let exact = 5 * tick + 1234;
        assert_eq!(a.of(10, Some(exact)), a.of(10, Some(5 * tick)));
        assert_eq!(a.of(10, Some(exact)).len(), ID_HEX);
        assert_ne!(a.of(10, Some(exact)), a.of(11, Some(exact)));
        assert_ne!(a.of(10, Some(exact)), a.of(10, Some(6 * tick)));
        assert_ne!(
            a.of(10, Some(exact)),
            ProcIds::new("m2", "h", "b1").of(10, Some(exact))
        );
        assert_ne!(
            a.of(10, Some(exact)),
            ProcIds::new("m1", "h", "b2").of(10, Some(exact))
        );
        // Without a machine id, the hostname tells hosts apart.
        assert_ne!(
            ProcIds::new("", "h1", "b").of(1, Some(0)),
            ProcIds::new("", "h2", "b").of(1, Some(0))
        );
        assert_eq!(a.of(10, None), "");
        // A host's processes sort by start.
        assert!(a.of(99, Some(5 * tick)) < a.of(3, Some(6 * tick)));
    }
}
