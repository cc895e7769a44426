//! Enrichment: every event leaves the agent knowing who, in what container,
//! started by whom.
//!
//! The [`Enricher`] owns the process table and the caches (containers by
//! cgroup id, user names by mount namespace, executable hashes by file
//! identity). On the event path it only does in-memory lookups. Whatever
//! needs the file system (cgroup paths, passwd files, hashing, `/proc`)
//! goes to two resolver threads as a request; the event waits, parked, for
//! at most [`EnrichConfig::wait`] and leaves with what is known by then.
//! Parked events may leave after later ones; `time_unix_ns` orders them.
use std::{
    collections::VecDeque,
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

/// Looked up on every event: foldhash (seeded per process), not SipHash.
/// The keys are pids, ids and file identities whose number the kernel and
/// the tables' caps bound, so SipHash's flood resistance buys nothing here.
use foldhash::{HashMap, HashSet};

use tokio::sync::Notify;

use crate::{
    event::{ContainerInfo, ContainerMount, Event, EventBody, ExeFile, ProcessDetail},
    proctree::{procfs, NeedsProcRead, ProcKey, ProcessTable, TableConfig},
    util::clock::BootClock,
};

pub mod container;
pub mod hash;
pub mod mounts;
mod resolver;
pub mod sysbin;
pub mod users;

use container::{CgroupFs, ContainerResolver, ImageLookup, K8sLinks};
use hash::HashOutcome;
use resolver::{host_root, Request, Resolved, Resolvers};
use users::UserDb;

/// Enrichment settings; see `vigil-agent run --help` for each default.
#[derive(Debug, Clone)]
pub struct EnrichConfig {
    pub table: TableConfig,
    /// Where `/proc` is (the host's, for an agent in a container).
    pub proc_root: PathBuf,
    /// The kubelet's container log links; None: no Kubernetes names.
    pub k8s_log_dir: Option<PathBuf>,
    /// Where container runtimes' state files are found (`/`, or the host's
    /// root as an agent in a container mounts it): container images.
    pub runtime_root: PathBuf,
    /// Executables larger than this are not hashed.
    pub hash_max_bytes: u64,
    /// Most cached hashes.
    pub hash_cache_entries: usize,
    /// Longest an event waits for a lookup before it leaves without it.
    pub wait: Duration,
    /// Most events waiting at once; beyond it events leave unwaited.
    pub max_waiting: usize,
}

impl Default for EnrichConfig {
    fn default() -> Self {
        EnrichConfig {
            table: TableConfig::default(),
            proc_root: PathBuf::from("/proc"),
            k8s_log_dir: Some(PathBuf::from("/var/log/containers")),
            runtime_root: PathBuf::from("/"),
            hash_max_bytes: 128 << 20,
            hash_cache_entries: 16_384,
            wait: Duration::from_millis(200),
            max_waiting: 8_192,
        }
    }
}

/// Counters reported with the agent's statistics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct EnrichCounters {
    /// Events that waited for a lookup.
    pub waited: u64,
    /// Events that left when their wait ran out, a lookup unanswered.
    pub timed_out: u64,
    /// Events that could not wait: too many were waiting.
    pub wait_overflow: u64,
    /// Lookups not requested: a resolver's queue was full.
    pub requests_dropped: u64,
    pub hashes_computed: u64,
    /// Cache entries dropped to stay under a cap.
    pub cache_evicted: u64,
}

struct CacheSlot<T> {
    /// None while the lookup is in flight.
    value: Option<Arc<T>>,
    /// The value before a re-check now in flight.
    stale: Option<Arc<T>>,
    at: Instant,
    refreshes: u8,
}

enum HashState {
    InFlight,
    /// The hash, or None when the file was too large, gone or changed;
    /// and the system binaries with the same contents.
    Known(Option<Arc<str>>, Arc<[Arc<str>]>),
}

impl<T> CacheSlot<T> {
    /// A lookup just requested.
    fn in_flight() -> Self {
        CacheSlot {
            value: None,
            stale: None,
            at: Instant::now(),
            refreshes: 0,
        }
    }

    fn ready(value: T, at: Instant, refreshes: u8) -> Self {
        CacheSlot {
            value: Some(Arc::new(value)),
            stale: None,
            at,
            refreshes,
        }
    }
}

/// A namespace's mount table, or the read of it in flight.
struct MountSlot {
    /// The request whose answer this slot waits for, or holds.
    read: u64,
    /// The cgroup of the exec that asked: a namespace inode seen again
    /// from another cgroup is another container (inodes are reused).
    cgroup_id: u64,
    /// None while the read is in flight.
    table: Option<Arc<[ContainerMount]>>,
}

struct Waiting {
    deadline: Instant,
    key: ProcKey,
    ev: Event,
}

pub struct Enricher {
    cfg: EnrichConfig,
    table: ProcessTable,
    host_mnt_ns: Option<u32>,
    host_users: Arc<UserDb>,
    ns_users: HashMap<u32, CacheSlot<UserDb>>,
    /// Namespaces with an exec seen while their table was loading: the
    /// pid to check again through.
    users_recheck: HashMap<u32, u32>,
    containers: HashMap<u64, CacheSlot<ContainerInfo>>,
    /// Mount tables of mount namespaces other than the host's.
    ns_mounts: HashMap<u32, MountSlot>,
    /// Numbers the mount table requests, so only the latest answer for a
    /// namespace is kept.
    mount_reads: u64,
    hashes: HashMap<ExeFile, HashState>,
    hash_order: VecDeque<ExeFile>,
    proc_reads: HashSet<ProcKey>,
    waiting: VecDeque<Waiting>,
    ready: VecDeque<Event>,
    resolvers: Resolvers,
    last_users_check: Instant,
    pub counters: EnrichCounters,
}

/// Most cached containers and namespaces' user tables.
const MAX_CONTAINERS: usize = 16_384;
const MAX_USER_TABLES: usize = 1_024;
/// Kubernetes names may appear after the container starts (the kubelet
/// links its log once it runs): look again this often, this many times.
const K8S_REFRESH: Duration = Duration::from_secs(10);
const K8S_REFRESHES: u8 = 6;

impl Enricher {
    /// Bootstraps the process table from `/proc` and starts the resolver
    /// threads.
    pub fn start(cfg: EnrichConfig) -> Enricher {
        let mut table = ProcessTable::new(cfg.table);
        for p in procfs::read_all(&cfg.proc_root) {
            table.insert_bootstrapped(p);
        }
        let host_root = host_root(&cfg.proc_root);
        let host_users = Arc::new(UserDb::load(&host_root));
        let host_mnt_ns = read_ns_inode(&cfg.proc_root.join("1/ns/mnt"))
            .or_else(|| read_ns_inode(&cfg.proc_root.join("self/ns/mnt")));
        let resolver = ContainerResolver {
            cgroups: CgroupFs::detect(),
            k8s: cfg.k8s_log_dir.clone().map(|dir| K8sLinks { dir }),
            images: Some(ImageLookup {
                root: cfg.runtime_root.clone(),
            }),
        };
        tracing::info!(
            processes = table.len(),
            cgroup2 = ?resolver.cgroups.as_ref().map(|c| c.mount().to_path_buf()),
            k8s_log_dir = ?cfg.k8s_log_dir,
            "process table bootstrapped from /proc"
        );
        let resolvers = Resolvers::start(&cfg, resolver);
        Enricher {
            cfg,
            table,
            host_mnt_ns,
            host_users,
            ns_users: HashMap::default(),
            users_recheck: HashMap::default(),
            containers: HashMap::default(),
            ns_mounts: HashMap::default(),
            mount_reads: 0,
            hashes: HashMap::default(),
            hash_order: VecDeque::new(),
            proc_reads: HashSet::default(),
            waiting: VecDeque::new(),
            ready: VecDeque::new(),
            resolvers,
            last_users_check: Instant::now(),
            counters: EnrichCounters::default(),
        }
    }

    pub fn table(&self) -> &ProcessTable {
        &self.table
    }

    /// Resolves when a resolver has answered: call [`Enricher::poll`] then.
    pub fn answered(&self) -> Arc<Notify> {
        self.resolvers.notify.clone()
    }

    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }

    /// Takes one event in: updates the process table, snapshots the
    /// process and its ancestry, and fills in what the caches know.
    pub fn push(&mut self, mut ev: Event, now: Instant) {
        let (key, need) = self.table.apply(&ev, now);
        if let Some(NeedsProcRead(k)) = need {
            if self.proc_reads.insert(k) && !self.request(Request::Proc(k)) {
                self.proc_reads.remove(&k);
            }
        }
        self.snapshot(&mut ev, key);
        if matches!(ev.body, EventBody::Exec(_)) {
            self.recheck_users(ev.process.mnt_ns, ev.process.pid);
            self.load_mounts(&ev);
        }
        if self.fill(&mut ev, key) {
            self.ready.push_back(ev);
        } else if self.waiting.len() >= self.cfg.max_waiting {
            self.counters.wait_overflow += 1;
            self.ready.push_back(ev);
        } else {
            self.counters.waited += 1;
            self.waiting.push_back(Waiting {
                deadline: now + self.cfg.wait,
                key,
                ev,
            });
        }
    }

    /// The next event ready to leave.
    pub fn pop_ready(&mut self) -> Option<Event> {
        self.ready.pop_front()
    }

    /// Applies the resolvers' answers and releases waiting events that are
    /// complete or out of time.
    pub fn poll(&mut self, now: Instant) {
        let mut answered = false;
        while let Some(r) = self.resolvers.answer() {
            self.apply(r, now);
            answered = true;
        }
        if !answered && self.waiting.front().is_none_or(|w| w.deadline > now) {
            return;
        }
        for mut w in std::mem::take(&mut self.waiting) {
            if self.fill(&mut w.ev, w.key) {
                self.ready.push_back(w.ev);
            } else if w.deadline <= now {
                self.counters.timed_out += 1;
                self.ready.push_back(w.ev);
            } else {
                self.waiting.push_back(w);
            }
        }
    }

    /// Releases every waiting event now (shutdown).
    pub fn flush(&mut self) {
        for w in std::mem::take(&mut self.waiting) {
            self.ready.push_back(w.ev);
        }
    }

    /// Periodic upkeep: reloads the host's user names when their files
    /// changed; looks again for Kubernetes names not found yet.
    pub fn tick(&mut self, now: Instant) {
        self.table.expire(now);
        if now.duration_since(self.last_users_check) >= Duration::from_secs(10) {
            self.last_users_check = now;
            self.request(Request::HostUsers);
        }
        let stale: Vec<u64> = self
            .containers
            .iter()
            .filter(|(_, s)| {
                s.value
                    .as_ref()
                    .is_some_and(|c| c.is_container() && c.k8s.is_none())
                    && s.refreshes < K8S_REFRESHES
                    && now.duration_since(s.at) >= K8S_REFRESH
            })
            .map(|(id, _)| *id)
            .collect();
        for id in stale {
            if let Some(s) = self.containers.get_mut(&id) {
                s.refreshes += 1;
                s.at = now;
            }
            self.request(Request::Container { cgroup_id: id });
        }
    }

    /// Asks a resolver thread; a full queue is counted, and the event
    /// leaves without what it asked for.
    fn request(&mut self, r: Request) -> bool {
        let sent = self.resolvers.ask(r);
        if !sent {
            self.counters.requests_dropped += 1;
        }
        sent
    }

    fn apply(&mut self, r: Resolved, now: Instant) {
        match r {
            Resolved::Container(id, info) => {
                let refreshes = self.containers.get(&id).map_or(0, |s| s.refreshes);
                if self.containers.len() >= MAX_CONTAINERS && !self.containers.contains_key(&id) {
                    evict_one(&mut self.containers, &mut self.counters);
                }
                self.containers
                    .insert(id, CacheSlot::ready(info, now, refreshes));
            }
            Resolved::Users(ns, db) => {
                if self.ns_users.len() >= MAX_USER_TABLES && !self.ns_users.contains_key(&ns) {
                    evict_one(&mut self.ns_users, &mut self.counters);
                }
                self.ns_users.insert(ns, CacheSlot::ready(db, now, 0));
                self.recheck_deferred(ns);
            }
            Resolved::UsersUnchanged(ns) => {
                if let Some(slot) = self.ns_users.get_mut(&ns) {
                    if slot.value.is_none() {
                        slot.value = slot.stale.take();
                    }
                }
                self.recheck_deferred(ns);
            }
            Resolved::HostUsers(db) => {
                if db.stamp != self.host_users.stamp {
                    tracing::info!("host user and group names reloaded");
                    self.host_users = Arc::new(db);
                }
            }
            Resolved::Proc(key, snap) => {
                self.proc_reads.remove(&key);
                if let Some(p) = snap {
                    self.table.fill_from_proc(key, p);
                }
            }
            Resolved::Mounts(ns, read, mounts) => {
                // Only the answer to the latest request is kept. A process
                // gone before its table was read leaves none: the
                // namespace's next exec asks again.
                if self.ns_mounts.get(&ns).is_some_and(|s| s.read == read) {
                    match mounts {
                        Some(m) => {
                            if let Some(slot) = self.ns_mounts.get_mut(&ns) {
                                slot.table = Some(m.into());
                            }
                        }
                        None => {
                            self.ns_mounts.remove(&ns);
                        }
                    }
                }
            }
            Resolved::Hash(file, outcome, names) => {
                self.counters.hashes_computed += 1;
                let v = match outcome {
                    HashOutcome::Done(h) => Some(Arc::from(h)),
                    HashOutcome::TooLarge | HashOutcome::Unavailable => None,
                };
                self.hashes.insert(file, HashState::Known(v, names));
            }
        }
    }

    /// Copies what the table knows of the event's process into it.
    fn snapshot(&mut self, ev: &mut Event, key: ProcKey) {
        let Some(e) = self.table.get(&key) else {
            return;
        };
        let img = &e.image;
        ev.process.detail = Some(Box::new(ProcessDetail {
            exe: img.exe.clone(),
            argv: img.argv.clone(),
            argv_truncated: img.argv_truncated,
            cwd: e.cwd.clone(),
            exe_memfd: img.exe_memfd,
            exe_deleted: ev.process.exe_deleted || img.exe_file.is_some_and(|f| f.deleted),
            exe_file: img.exe_file,
            ..ProcessDetail::default()
        }));
        ev.ancestry = self.table.ancestry(&key);
    }

    /// Fills names, container, hash and drift from the caches, asking the
    /// resolvers for what they lack. True when nothing is outstanding.
    fn fill(&mut self, ev: &mut Event, key: ProcKey) -> bool {
        let mut complete = true;
        if self.proc_reads.contains(&key) {
            complete = false;
        } else if ev.process.detail.as_ref().is_some_and(|d| d.exe.is_none()) {
            // Snapshotted before the /proc read of an unknown process came
            // back: take what it found.
            self.snapshot(ev, key);
        }
        let pid = ev.process.pid;
        let container = self.container_for(ev.process.cgroup_id);
        complete &= container.is_some();
        ev.container = container.clone();
        let users = self.users_for(ev.process.mnt_ns, pid);
        complete &= users.is_some();
        let host_users = self.host_users.clone();
        let mounts = match ev.body {
            EventBody::Exec(_) => self.mounts_for(ev.process.mnt_ns),
            _ => Ok(None),
        };
        complete &= mounts.is_ok();
        let (uid, gid, loginuid) = (ev.process.uid, ev.process.gid, ev.process.loginuid);
        let start_ns = ev.process.start_boottime_ns;
        let Some(d) = ev.process.detail.as_mut() else {
            return complete;
        };
        if let Some(db) = &users {
            d.user = db.user(uid);
            d.group = db.group(gid);
        }
        d.mounts = mounts.ok().flatten();
        d.login_user = loginuid
            .filter(|&l| l >= 0)
            .and_then(|l| host_users.user(l as u32));
        if let Some(file) = d.exe_file {
            // The process itself runs in the container, so the container
            // started no later than it did: that bounds the start when the
            // resolver found no process left in the cgroup.
            d.exe_drift = container.as_ref().is_some_and(|c| {
                if !c.is_container() {
                    return false;
                }
                let own_start = start_ns.map(|s| BootClock::now().to_unix_ns(s).max(0) as u64);
                let started = match (c.started_unix_ns, own_start) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                started.is_some_and(|s| file.ctime_ns > s)
            });
            let path = d.exe.clone();
            match self.hashes.get(&file) {
                Some(HashState::Known(h, names)) => {
                    d.exe_sha256 = h.clone();
                    d.renamed_from = path
                        .filter(|_| !d.exe_memfd)
                        .and_then(|p| sysbin::renamed_from(&p, names));
                }
                Some(HashState::InFlight) => complete = false,
                None if self.cfg.hash_max_bytes == 0 || file.size > self.cfg.hash_max_bytes => {}
                None => {
                    complete = false;
                    self.request_hash(file, pid, path);
                }
            }
        }
        complete
    }

    /// An exec in a container is when its image's files are in place (the
    /// runtime's own steps before it run in the same mount namespace
    /// before the root is switched): check the cached names are still
    /// those of its `/etc`, and have events wait for the answer.
    fn recheck_users(&mut self, mnt_ns: Option<u32>, pid: u32) {
        let Some(ns) = mnt_ns.filter(|&n| Some(n) != self.host_mnt_ns) else {
            return;
        };
        let Some(slot) = self.ns_users.get(&ns) else {
            return;
        };
        let Some(stamp) = slot.value.as_ref().map(|db| db.stamp) else {
            // A load is in flight, perhaps from before this exec's root was
            // in place: check again once it is back.
            self.users_recheck.insert(ns, pid);
            return;
        };
        if self.request(Request::UsersCheck {
            mnt_ns: ns,
            pid,
            stamp,
        }) {
            if let Some(slot) = self.ns_users.get_mut(&ns) {
                slot.stale = slot.value.take();
            }
        }
    }

    fn recheck_deferred(&mut self, ns: u32) {
        if let Some(pid) = self.users_recheck.remove(&ns) {
            self.recheck_users(Some(ns), pid);
        }
    }

    fn request_hash(&mut self, file: ExeFile, pid: u32, path: Option<Arc<str>>) {
        if self.hashes.len() >= self.cfg.hash_cache_entries {
            while let Some(old) = self.hash_order.pop_front() {
                if self.hashes.remove(&old).is_some() {
                    self.counters.cache_evicted += 1;
                    break;
                }
            }
        }
        if self.request(Request::Hash { file, pid, path }) {
            self.hashes.insert(file, HashState::InFlight);
            self.hash_order.push_back(file);
        }
    }

    fn container_for(&mut self, cgroup_id: u64) -> Option<Arc<ContainerInfo>> {
        match self.containers.get(&cgroup_id) {
            Some(s) => s.value.clone(),
            None => {
                if self.request(Request::Container { cgroup_id }) {
                    self.containers.insert(cgroup_id, CacheSlot::in_flight());
                }
                None
            }
        }
    }

    /// Asks for the mount table of an exec's namespace when it is not the
    /// host's and none is cached, or again when the exec is a pid
    /// namespace's process 1 (a container's entry point runs once its
    /// mounts are in place: a table read before is the runtime's, half
    /// made). The exec waits for the answer.
    fn load_mounts(&mut self, ev: &Event) {
        let Some(ns) = ev.process.mnt_ns.filter(|&n| Some(n) != self.host_mnt_ns) else {
            return;
        };
        let cgroup_id = ev.process.cgroup_id;
        // A service of the host in a private namespace (systemd's
        // PrivateTmp) is not a container: no table. While the cgroup is
        // unresolved, the table is read anyway.
        let known_host = (self.containers.get(&cgroup_id))
            .and_then(|s| s.value.as_ref())
            .is_some_and(|c| !c.is_container());
        if known_host {
            return;
        }
        let refresh = ev.process.vpid == Some(1);
        let cached = self
            .ns_mounts
            .get(&ns)
            .is_some_and(|s| s.cgroup_id == cgroup_id);
        if cached && !refresh {
            return;
        }
        self.mount_reads += 1;
        let read = self.mount_reads;
        if !self.request(Request::Mounts {
            mnt_ns: ns,
            pid: ev.process.pid,
            read,
        }) {
            return;
        }
        if !self.ns_mounts.contains_key(&ns) && self.ns_mounts.len() >= MAX_USER_TABLES {
            // A table already read goes first: a read in flight has an
            // exec waiting on it.
            let victim = (self.ns_mounts.iter())
                .find(|(_, s)| s.table.is_some())
                .or_else(|| self.ns_mounts.iter().next())
                .map(|(k, _)| *k);
            if let Some(k) = victim {
                self.ns_mounts.remove(&k);
                self.counters.cache_evicted += 1;
            }
        }
        self.ns_mounts.insert(
            ns,
            MountSlot {
                read,
                cgroup_id,
                table: None,
            },
        );
    }

    /// The mounts of an exec's namespace: `Ok(None)` on the host's,
    /// `Err` while the table is being read.
    fn mounts_for(&self, mnt_ns: Option<u32>) -> Result<Option<Arc<[ContainerMount]>>, ()> {
        let Some(ns) = mnt_ns.filter(|&n| Some(n) != self.host_mnt_ns) else {
            return Ok(None);
        };
        match self.ns_mounts.get(&ns) {
            Some(s) => s.table.clone().map(Some).ok_or(()),
            None => Ok(None),
        }
    }

    /// The user table for a process in mount namespace `mnt_ns`: the
    /// host's, or its container's own.
    fn users_for(&mut self, mnt_ns: Option<u32>, pid: u32) -> Option<Arc<UserDb>> {
        let Some(ns) = mnt_ns.filter(|&n| Some(n) != self.host_mnt_ns) else {
            return Some(self.host_users.clone());
        };
        match self.ns_users.get(&ns) {
            Some(s) => s.value.clone(),
            None => {
                if self.request(Request::Users { mnt_ns: ns, pid }) {
                    self.ns_users.insert(ns, CacheSlot::in_flight());
                }
                None
            }
        }
    }
}

fn evict_one<K: Copy + Eq + std::hash::Hash, T>(
    map: &mut HashMap<K, CacheSlot<T>>,
    c: &mut EnrichCounters,
) {
    if let Some(k) = map.keys().next().copied() {
        map.remove(&k);
        c.cache_evicted += 1;
    }
}

/// The inode in a `/proc/PID/ns/*` link (`mnt:[4026531841]`).
fn read_ns_inode(path: &std::path::Path) -> Option<u32> {
    let l = std::fs::read_link(path).ok()?;
    let s = l.to_str()?;
    s.split_once('[')?.1.strip_suffix(']')?.parse().ok()
}

#[cfg(test)]
mod tests;
