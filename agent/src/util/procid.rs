//! Fleet-wide process ids: one string per process that is the same in
//! every event, alert and activity record about it, and differs between
//! hosts, boots and reused pids, so the collector can join a process tree
//! across event kinds and never mix two hosts' processes.
//!
//! The id is a hash of the host (machine id, else hostname), the boot id,
//! the pid and the start time. The start time is taken to a clock tick
//! (10 ms): processes the agent found in `/proc` at start-up are known only
//! to a tick, and must get the id their events carry. Two processes with
//! one pid in one tick of one boot cannot exist (pids are reused only after
//! the whole pid space wraps).
use sha2::{Digest, Sha256};

use super::clock::tick_ns;

/// Hex digits of an id: 96 bits, no collision in any fleet's lifetime.
const ID_HEX: usize = 24;

#[derive(Debug, Clone)]
pub struct ProcIds {
    /// The hash state after the host and boot: each id hashes only its
    /// pid and start on top.
    host: Sha256,
    tick_ns: u64,
}

impl ProcIds {
    /// Ids for processes of this host and boot.
    pub fn new(machine_id: &str, hostname: &str, boot_id: &str) -> ProcIds {
        let mut host = Sha256::new();
        let who = if machine_id.is_empty() {
            hostname
        } else {
            machine_id
        };
        host.update(who.as_bytes());
        host.update([0]);
        host.update(boot_id.as_bytes());
        host.update([0]);
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
        let mut h = self.host.clone();
        h.update(pid.to_le_bytes());
        h.update((start / self.tick_ns).to_le_bytes());
        let d = h.finalize();
        let mut s = String::with_capacity(ID_HEX);
        for b in &d[..ID_HEX / 2] {
            s.push(char::from_digit((b >> 4) as u32, 16).unwrap_or('0'));
            s.push(char::from_digit((b & 15) as u32, 16).unwrap_or('0'));
        }
        s
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
    }
}
