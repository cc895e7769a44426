//! The process table: who every process is, kept current from events.
//!
//! Bootstrapped from `/proc` at start-up ([`procfs`]), then updated from
//! fork, exec, chdir and exit events. Entries are keyed by (pid, start
//! time), so a reused pid never inherits another process's identity.
//! Entries of exited processes stay for a grace period, so late events and
//! alerts can still name them and their children's ancestry stays whole;
//! the table never holds more than its cap (evictions are counted).
use std::{
    collections::VecDeque,
    sync::Arc,
    time::{Duration, Instant},
};

/// Looked up on every event: foldhash (seeded per process), not SipHash.
/// The keys are pids, ids and file identities whose number the kernel and
/// the tables' caps bound, so SipHash's flood resistance buys nothing here.
use foldhash::HashMap;

use agent_ebpf::file::FileOp;

use crate::event::{Ancestor, Event, EventBody, ExeFile, ProcessContext};

pub mod procfs;

/// (pid, start time): a process's identity across pid reuse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ProcKey {
    pub pid: u32,
    /// CLOCK_BOOTTIME ns; for entries read from `/proc`, rounded down to a
    /// clock tick (`/proc/PID/stat` has no finer start time).
    pub start_ns: u64,
}

/// What a process is running: set by exec, shared with fork children.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Image {
    pub exe: Option<Arc<str>>,
    pub argv: Arc<[String]>,
    pub argv_truncated: bool,
    pub exe_file: Option<ExeFile>,
    pub exe_memfd: bool,
}

/// One process.
#[derive(Debug, Clone)]
pub struct ProcEntry {
    pub key: ProcKey,
    /// `start_ns` is only known to a clock tick (bootstrapped from /proc).
    pub coarse_start: bool,
    /// The process that created it (not the reaper it was reparented to).
    pub parent: Option<ProcKey>,
    pub ppid: u32,
    pub image: Arc<Image>,
    pub cwd: Option<Arc<str>>,
    /// Its name (comm), shared with the ancestries that name it.
    pub comm: Arc<str>,
    pub uid: u32,
    pub loginuid: Option<i64>,
    pub exited: bool,
    /// The entry was made from an event of a process the table did not
    /// know: image and cwd come from a later `/proc` read, if any.
    pub partial: bool,
    /// Its ancestry as last computed, with the table's epoch then.
    ancestry: Option<(u64, Arc<[Ancestor]>)>,
}

/// Table limits.
#[derive(Debug, Clone, Copy)]
pub struct TableConfig {
    /// Most entries, live and exited together.
    pub max_entries: usize,
    /// How long an exited process stays nameable.
    pub exit_grace: Duration,
    /// Most ancestors reported per event.
    pub max_ancestry: usize,
}

impl Default for TableConfig {
    fn default() -> Self {
        TableConfig {
            max_entries: 65_536,
            exit_grace: Duration::from_secs(30),
            max_ancestry: 8,
        }
    }
}

/// Counters reported with the agent's statistics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TableCounters {
    /// Entries dropped to stay under the cap before their grace ended.
    pub evicted: u64,
    /// Events of processes the table did not know (created from the event).
    pub unknown_process: u64,
    /// Exited entries removed after their grace period.
    pub expired: u64,
}

#[derive(Debug)]
pub struct ProcessTable {
    cfg: TableConfig,
    entries: HashMap<ProcKey, ProcEntry>,
    /// pid -> start of the live process with that pid.
    live: HashMap<u32, u64>,
    /// Exited entries, oldest exit first.
    exited: VecDeque<(Instant, ProcKey)>,
    /// Clock tick in ns, for matching coarse start times.
    tick_ns: u64,
    /// Moves whenever an image changes or an entry leaves: an ancestry
    /// computed in an older epoch may name what is no longer so.
    epoch: u64,
    pub counters: TableCounters,
}

/// A process the table created from an event and would like `/proc` to
/// complete (exe, argv, cwd).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NeedsProcRead(pub ProcKey);

impl ProcessTable {
    pub fn new(cfg: TableConfig) -> ProcessTable {
        ProcessTable {
            cfg,
            entries: HashMap::default(),
            live: HashMap::default(),
            exited: VecDeque::new(),
            tick_ns: crate::util::clock::tick_ns(),
            epoch: 0,
            counters: TableCounters::default(),
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn config(&self) -> TableConfig {
        self.cfg
    }

    /// Inserts a live process read from `/proc`; its parent must be
    /// inserted first for the link to be made.
    pub fn insert_bootstrapped(&mut self, p: procfs::ProcSnapshot) {
        let parent = self.live_key(p.ppid);
        let key = ProcKey {
            pid: p.pid,
            start_ns: p.start_ticks * self.tick_ns,
        };
        let entry = ProcEntry {
            key,
            coarse_start: true,
            parent,
            ppid: p.ppid,
            image: Arc::new(Image {
                exe: p.exe.map(Arc::from),
                argv: p.argv.into(),
                argv_truncated: false,
                exe_file: p.exe_file,
                exe_memfd: false,
            }),
            cwd: p.cwd.map(Arc::from),
            comm: Arc::from(p.comm),
            uid: p.uid,
            loginuid: p.loginuid,
            exited: false,
            partial: false,
            ancestry: None,
        };
        self.insert(entry);
    }

    /// Completes an entry made from an unknown process's event with what
    /// `/proc` said, if it is still the same process.
    pub fn fill_from_proc(&mut self, key: ProcKey, p: procfs::ProcSnapshot) {
        let tick = self.tick_ns;
        let Some(e) = self.entries.get_mut(&key) else {
            return;
        };
        if key.start_ns != 0 && key.start_ns / tick != p.start_ticks {
            return;
        }
        if !e.partial {
            // Known from events, but its cwd was not (an unreadable parent).
            if e.cwd.is_none() {
                e.cwd = p.cwd.map(Arc::from);
            }
            return;
        }
        e.partial = false;
        self.epoch += 1;
        e.image = Arc::new(Image {
            exe: p.exe.map(Arc::from),
            argv: p.argv.into(),
            argv_truncated: false,
            exe_file: p.exe_file,
            exe_memfd: false,
        });
        e.cwd = p.cwd.map(Arc::from);
    }

    fn live_key(&self, pid: u32) -> Option<ProcKey> {
        self.live
            .get(&pid)
            .map(|&start_ns| ProcKey { pid, start_ns })
    }

    /// Does `start` (from the kernel, exact) name the entry stored at
    /// `stored`? Coarse entries match within their clock tick; an unknown
    /// start (0) matches anything.
    fn same_start(&self, stored: u64, coarse: bool, start: Option<u64>) -> bool {
        match start {
            None | Some(0) => true,
            Some(s) if coarse => s / self.tick_ns == stored / self.tick_ns,
            Some(s) => s == stored || stored == 0,
        }
    }

    /// The entry of the process that produced `p`'s event, if known.
    pub fn find(&self, pid: u32, start: Option<u64>) -> Option<&ProcEntry> {
        if let Some(e) = self.live_key(pid).and_then(|k| self.entries.get(&k)) {
            if self.same_start(e.key.start_ns, e.coarse_start, start) {
                return Some(e);
            }
        }
        let s = start?;
        self.entries.get(&ProcKey { pid, start_ns: s }).or_else(|| {
            let coarse = s - s % self.tick_ns;
            self.entries
                .get(&ProcKey {
                    pid,
                    start_ns: coarse,
                })
                .filter(|e| e.coarse_start)
        })
    }

    fn find_key(&self, pid: u32, start: Option<u64>) -> Option<ProcKey> {
        self.find(pid, start).map(|e| e.key)
    }

    /// Applies one event: keeps the table current and makes sure the
    /// event's process has an entry. Returns the key of that entry, and
    /// whether it was unknown and wants a `/proc` read.
    pub fn apply(&mut self, ev: &Event, now: Instant) -> (ProcKey, Option<NeedsProcRead>) {
        self.expire(now);
        let p = &ev.process;
        let (key, mut need) = match self.find_key(p.pid, p.start_boottime_ns) {
            Some(k) => (k, None),
            None => {
                self.counters.unknown_process += 1;
                let k = self.insert_from_event(p);
                (k, Some(NeedsProcRead(k)))
            }
        };
        self.refresh_from_header(key, p);
        match &ev.body {
            EventBody::Fork(f) => {
                let child = self.insert_child(key, f.child_pid, f.child_start_boottime_ns);
                // A child of a partial entry is as partial as its parent.
                if self.entries.get(&key).is_some_and(|e| e.partial) {
                    need = need.or(Some(NeedsProcRead(child)));
                }
            }
            EventBody::Exec(x) => {
                if let Some(e) = self.entries.get_mut(&key) {
                    self.epoch += 1;
                    e.image = Arc::new(Image {
                        exe: Some(Arc::from(x.exe_path())),
                        argv: x.argv.clone().into(),
                        argv_truncated: x.argv_truncated,
                        exe_file: x.exe_file,
                        exe_memfd: x.exe_memfd,
                    });
                    e.partial = false;
                    if e.cwd.is_none() {
                        need = Some(NeedsProcRead(key));
                    }
                }
            }
            EventBody::File(f) if f.op == FileOp::Chdir && f.result == 0 && !f.path_unresolved => {
                if let Some(e) = self.entries.get_mut(&key) {
                    e.cwd = Some(Arc::from(f.path.as_str()));
                }
            }
            EventBody::Exit(_) => self.mark_exited(key, now),
            EventBody::File(_) | EventBody::Control(_) | EventBody::Network(_) => {}
        }
        (key, need)
    }

    fn refresh_from_header(&mut self, key: ProcKey, p: &ProcessContext) {
        if let Some(e) = self.entries.get_mut(&key) {
            e.uid = p.uid;
            e.loginuid = p.loginuid;
            if p.ppid != 0 {
                e.ppid = p.ppid;
            }
            if *e.comm != *p.comm {
                e.comm = Arc::from(p.comm.as_str());
            }
        }
    }

    fn insert_from_event(&mut self, p: &ProcessContext) -> ProcKey {
        let key = ProcKey {
            pid: p.pid,
            start_ns: p.start_boottime_ns.unwrap_or(0),
        };
        let parent = self.live_key(p.ppid);
        self.insert(ProcEntry {
            key,
            coarse_start: false,
            parent,
            ppid: p.ppid,
            image: Arc::new(Image::default()),
            cwd: None,
            comm: Arc::from(p.comm.as_str()),
            uid: p.uid,
            loginuid: p.loginuid,
            exited: false,
            partial: true,
            ancestry: None,
        });
        key
    }

    fn insert_child(&mut self, parent: ProcKey, pid: u32, start: Option<u64>) -> ProcKey {
        let key = ProcKey {
            pid,
            start_ns: start.unwrap_or(0),
        };
        let Some(p) = self.entries.get(&parent) else {
            return key;
        };
        let child = ProcEntry {
            key,
            coarse_start: false,
            parent: Some(parent),
            ppid: parent.pid,
            image: p.image.clone(),
            cwd: p.cwd.clone(),
            comm: p.comm.clone(),
            uid: p.uid,
            loginuid: p.loginuid,
            exited: false,
            partial: p.partial,
            ancestry: None,
        };
        self.insert(child);
        key
    }

    fn insert(&mut self, e: ProcEntry) {
        let key = e.key;
        // A live process with this pid must have exited without an exit
        // event reaching us (lost, or before start-up): it is replaced.
        if let Some(old) = self.live_key(key.pid) {
            if old != key {
                self.mark_exited(old, Instant::now());
            }
        }
        self.entries.insert(key, e);
        self.live.insert(key.pid, key.start_ns);
        self.enforce_cap();
    }

    fn mark_exited(&mut self, key: ProcKey, now: Instant) {
        if let Some(e) = self.entries.get_mut(&key) {
            if !e.exited {
                e.exited = true;
                self.exited.push_back((now, key));
            }
        }
        if self.live.get(&key.pid) == Some(&key.start_ns) {
            self.live.remove(&key.pid);
        }
    }

    /// Drops exited entries whose grace period is over.
    pub fn expire(&mut self, now: Instant) {
        while let Some(&(at, key)) = self.exited.front() {
            if now.duration_since(at) < self.cfg.exit_grace {
                break;
            }
            self.exited.pop_front();
            if self.entries.remove(&key).is_some() {
                self.counters.expired += 1;
                self.epoch += 1;
            }
        }
    }

    /// Over the cap: the oldest exited entries go first; if every entry is
    /// live, the ones with the oldest start (least likely to matter to
    /// what is happening now) go in a batch, so the scan is rare.
    fn enforce_cap(&mut self) {
        while self.entries.len() > self.cfg.max_entries {
            let Some((_, key)) = self.exited.pop_front() else {
                break;
            };
            if self.entries.remove(&key).is_some() {
                self.counters.evicted += 1;
                self.epoch += 1;
            }
        }
        if self.entries.len() <= self.cfg.max_entries {
            return;
        }
        let batch = (self.cfg.max_entries / 64).max(1);
        let mut keys: Vec<ProcKey> = self.entries.keys().copied().collect();
        keys.sort_by_key(|k| k.start_ns);
        self.epoch += 1;
        for key in keys.into_iter().take(batch) {
            self.entries.remove(&key);
            if self.live.get(&key.pid) == Some(&key.start_ns) {
                self.live.remove(&key.pid);
            }
            self.counters.evicted += 1;
        }
    }

    pub fn get(&self, key: &ProcKey) -> Option<&ProcEntry> {
        self.entries.get(key)
    }

    /// The chain of creators above `key`, nearest first, up to pid 1 and
    /// at most `max_ancestry` long. It stops where an ancestor is no
    /// longer in the table.
    /// The process's creators, nearest first, at most `max_ancestry`. Kept
    /// with the entry until an image changes or an entry leaves the table,
    /// so the file events of one process share one chain.
    pub fn ancestry(&mut self, key: &ProcKey) -> Arc<[Ancestor]> {
        let epoch = self.epoch;
        if let Some((at, chain)) = self.entries.get(key).and_then(|e| e.ancestry.as_ref()) {
            if *at == epoch {
                return chain.clone();
            }
        }
        let chain: Arc<[Ancestor]> = self.compute_ancestry(key).into();
        if let Some(e) = self.entries.get_mut(key) {
            e.ancestry = Some((epoch, chain.clone()));
        }
        chain
    }

    fn compute_ancestry(&self, key: &ProcKey) -> Vec<Ancestor> {
        self.lineage(key, self.cfg.max_ancestry)
    }

    /// The creators of the process `pid` started at `start`, nearest first,
    /// up to pid 1 or `max` long, whatever the configured ancestry length:
    /// an alert names its process's whole line for investigation.
    pub fn lineage_of(&self, pid: u32, start: Option<u64>, max: usize) -> Vec<Ancestor> {
        match self.find(pid, start) {
            Some(e) => self.lineage(&e.key, max),
            None => Vec::new(),
        }
    }

    fn lineage(&self, key: &ProcKey, max: usize) -> Vec<Ancestor> {
        let mut out = Vec::new();
        let mut cur = self.entries.get(key).and_then(|e| e.parent);
        while let Some(k) = cur {
            if out.len() >= max {
                break;
            }
            let Some(e) = self.entries.get(&k) else {
                break;
            };
            out.push(Ancestor {
                pid: e.key.pid,
                start_ns: e.key.start_ns,
                comm: Some(e.comm.clone()),
                exe: e.image.exe.clone(),
                argv: e.image.argv.clone(),
            });
            if e.key.pid <= 1 {
                break;
            }
            cur = e.parent;
        }
        out
    }
}

#[cfg(test)]
mod tests;
