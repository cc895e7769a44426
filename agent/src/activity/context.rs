//! The context buffer: the last few events of each process, so an alert
//! can carry what its process and that process's ancestors did just
//! before it. Bounded twice: events per process, and processes (the
//! least recently active one's events go first).
use std::collections::{HashMap, VecDeque};

use vigil_proto::v1 as pb;

use crate::util::clock::tick_ns;

/// A process's key here: pid and start time to a clock tick, since the
/// ancestry of processes found in `/proc` knows starts only to a tick.
pub type Key = (u32, u64);

pub fn key(pid: u32, start_boottime_ns: Option<u64>) -> Key {
    (pid, start_boottime_ns.unwrap_or(0) / tick_ns().max(1))
}

/// Most events one alert carries, of all its processes together.
pub const MAX_PER_ALERT: usize = 64;

struct Entry {
    events: VecDeque<pb::Activity>,
    /// When it was last pushed to (the buffer's own counter).
    touched: u64,
}

pub struct ContextBuffer {
    per_process: usize,
    max_processes: usize,
    entries: HashMap<Key, Entry>,
    /// (key, touched) in push order; stale pairs (the entry was touched
    /// again since) are skipped when evicting.
    order: VecDeque<(Key, u64)>,
    clock: u64,
}

impl ContextBuffer {
    pub fn new(per_process: usize, max_processes: usize) -> ContextBuffer {
        ContextBuffer {
            per_process,
            max_processes: max_processes.max(1),
            entries: HashMap::new(),
            order: VecDeque::new(),
            clock: 0,
        }
    }

    pub fn push(&mut self, key: Key, a: pb::Activity) {
        if self.per_process == 0 {
            return;
        }
        self.clock += 1;
        let now = self.clock;
        if !self.entries.contains_key(&key) && self.entries.len() >= self.max_processes {
            self.evict_one();
        }
        let e = self.entries.entry(key).or_insert_with(|| Entry {
            events: VecDeque::new(),
            touched: now,
        });
        if e.events.len() >= self.per_process {
            e.events.pop_front();
        }
        e.events.push_back(a);
        e.touched = now;
        self.order.push_back((key, now));
        if self.order.len() > 4 * self.max_processes + 64 {
            // Drop the stale pairs: one per entry is left.
            let entries = &self.entries;
            self.order
                .retain(|(k, t)| entries.get(k).is_some_and(|e| e.touched == *t));
        }
    }

    /// Removes the least recently pushed-to process.
    fn evict_one(&mut self) {
        while let Some((k, t)) = self.order.pop_front() {
            if self.entries.get(&k).is_some_and(|e| e.touched == t) {
                self.entries.remove(&k);
                return;
            }
        }
    }

    /// The events of `who` (keys with the process each is about), oldest
    /// first, at most [`MAX_PER_ALERT`] (the newest).
    pub fn collect(&self, who: &[(Key, pb::ProcessInfo)]) -> Vec<pb::Activity> {
        let mut out: Vec<pb::Activity> = Vec::new();
        for (k, p) in who {
            if let Some(e) = self.entries.get(k) {
                out.extend(e.events.iter().map(|a| {
                    let mut a = a.clone();
                    a.process.get_or_insert_with(|| p.clone());
                    a
                }));
            }
        }
        out.sort_by_key(|a| a.time_unix_ns);
        if out.len() > MAX_PER_ALERT {
            out.drain(..out.len() - MAX_PER_ALERT);
        }
        out
    }

    pub fn processes(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(t: i64) -> pb::Activity {
        pb::Activity {
            time_unix_ns: t,
            ..Default::default()
        }
    }

    #[test]
    fn bounded_per_process_and_in_processes_least_recent_first() {
        let mut b = ContextBuffer::new(2, 2);
        for t in 0..5 {
            b.push((1, 0), ev(t));
        }
        b.push((2, 0), ev(10));
        // Process 1 is the least recently active: it goes to make room for 3.
        b.push((3, 0), ev(20));
        assert_eq!(b.processes(), 2);
        let p = pb::ProcessInfo::default();
        assert!(b.collect(&[((1, 0), p.clone())]).is_empty());
        let got = b.collect(&[((3, 0), p.clone()), ((2, 0), p.clone())]);
        assert_eq!(
            got.iter().map(|a| a.time_unix_ns).collect::<Vec<_>>(),
            vec![10, 20]
        );
        // A touched process survives an eviction.
        b.push((2, 0), ev(30));
        b.push((4, 0), ev(40));
        assert_eq!(b.collect(&[((2, 0), p.clone())]).len(), 2);
        assert!(b.collect(&[((3, 0), p)]).is_empty());
        // Many pushes to few processes keep the order queue bounded.
        for t in 0..10_000 {
            b.push((2, 0), ev(t));
        }
        assert!(b.order.len() <= 4 * 2 + 64 + 1);
    }

    #[test]
    fn keys_match_exact_and_tick_starts() {
        let tick = tick_ns();
        assert_eq!(key(5, Some(3 * tick + 17)), key(5, Some(3 * tick)));
        assert_ne!(key(5, Some(3 * tick)), key(5, Some(4 * tick)));
    }
}
