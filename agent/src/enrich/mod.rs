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
    collections::{HashMap, HashSet, VecDeque},
    path::PathBuf,
    sync::Arc,
    thread,
    time::{Duration, Instant},
};

use crossbeam_channel::{bounded, Receiver, Sender, TrySendError};
use tokio::sync::Notify;

use crate::{
    event::{ContainerInfo, Event, EventBody, ExeFile, ProcessDetail},
    proctree::{procfs, NeedsProcRead, ProcKey, ProcessTable, TableConfig},
    util::clock::BootClock,
};

pub mod container;
pub mod hash;
pub mod users;

use container::{CgroupFs, ContainerResolver, ImageLookup, K8sLinks};
use hash::HashOutcome;
use users::{UserDb, UserStamp};

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

enum Request {
    Container {
        cgroup_id: u64,
    },
    Users {
        mnt_ns: u32,
        pid: u32,
    },
    /// Reload the table if the files changed since `stamp`.
    UsersCheck {
        mnt_ns: u32,
        pid: u32,
        stamp: UserStamp,
    },
    HostUsers,
    Proc(ProcKey),
    Hash {
        file: ExeFile,
        pid: u32,
        path: Option<Arc<str>>,
    },
}

enum Resolved {
    Container(u64, ContainerInfo),
    Users(u32, UserDb),
    UsersUnchanged(u32),
    HostUsers(UserDb),
    Proc(ProcKey, Option<procfs::ProcSnapshot>),
    Hash(ExeFile, HashOutcome),
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
    /// The hash, or None when the file was too large, gone or changed.
    Known(Option<Arc<str>>),
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
    hashes: HashMap<ExeFile, HashState>,
    hash_order: VecDeque<ExeFile>,
    proc_reads: HashSet<ProcKey>,
    waiting: VecDeque<Waiting>,
    ready: VecDeque<Event>,
    meta_tx: Sender<Request>,
    hash_tx: Sender<Request>,
    large_hash_tx: Sender<Request>,
    results: Receiver<Resolved>,
    notify: Arc<Notify>,
    last_users_check: Instant,
    pub counters: EnrichCounters,
}

/// Executables above this size hash on the large-file thread.
const LARGE_FILE: u64 = 4 << 20;
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
        let (meta_tx, meta_rx) = bounded::<Request>(4_096);
        let (hash_tx, hash_rx) = bounded::<Request>(1_024);
        let (large_hash_tx, large_hash_rx) = bounded::<Request>(1_024);
        let (res_tx, results) = bounded::<Resolved>(8_192);
        let notify = Arc::new(Notify::new());
        let resolver = Arc::new(ContainerResolver {
            cgroups: CgroupFs::detect(),
            k8s: cfg.k8s_log_dir.clone().map(|dir| K8sLinks { dir }),
            images: Some(ImageLookup {
                root: cfg.runtime_root.clone(),
            }),
        });
        tracing::info!(
            processes = table.len(),
            cgroup2 = ?resolver.cgroups.as_ref().map(|c| c.mount().to_path_buf()),
            k8s_log_dir = ?cfg.k8s_log_dir,
            "process table bootstrapped from /proc"
        );
        spawn_worker(
            "vigil-resolve",
            meta_rx,
            res_tx.clone(),
            notify.clone(),
            cfg.clone(),
            resolver,
        );
        // Large files hash on their own thread so that a 100 MB binary
        // never holds up the hash of a small one.
        for (name, rx) in [("vigil-hash", hash_rx), ("vigil-hash-large", large_hash_rx)] {
            spawn_worker(
                name,
                rx,
                res_tx.clone(),
                notify.clone(),
                cfg.clone(),
                Arc::new(ContainerResolver {
                    cgroups: None,
                    k8s: None,
                    images: None,
                }),
            );
        }
        Enricher {
            cfg,
            table,
            host_mnt_ns,
            host_users,
            ns_users: HashMap::new(),
            users_recheck: HashMap::new(),
            containers: HashMap::new(),
            hashes: HashMap::new(),
            hash_order: VecDeque::new(),
            proc_reads: HashSet::new(),
            waiting: VecDeque::new(),
            ready: VecDeque::new(),
            meta_tx,
            hash_tx,
            large_hash_tx,
            results,
            notify,
            last_users_check: Instant::now(),
            counters: EnrichCounters::default(),
        }
    }

    pub fn table(&self) -> &ProcessTable {
        &self.table
    }

    /// Resolves when a resolver has answered: call [`Enricher::poll`] then.
    pub fn answered(&self) -> Arc<Notify> {
        self.notify.clone()
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
        while let Ok(r) = self.results.try_recv() {
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

    fn request(&mut self, r: Request) -> bool {
        let tx = match &r {
            Request::Hash { file, .. } if file.size > LARGE_FILE => &self.large_hash_tx,
            Request::Hash { .. } => &self.hash_tx,
            _ => &self.meta_tx,
        };
        match tx.try_send(r) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.counters.requests_dropped += 1;
                false
            }
        }
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
            Resolved::Hash(file, outcome) => {
                self.counters.hashes_computed += 1;
                let v = match outcome {
                    HashOutcome::Done(h) => Some(Arc::from(h)),
                    HashOutcome::TooLarge | HashOutcome::Unavailable => None,
                };
                self.hashes.insert(file, HashState::Known(v));
            }
        }
    }

    /// Copies what the table knows of the event's process into it.
    fn snapshot(&self, ev: &mut Event, key: ProcKey) {
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
        let (uid, gid, loginuid) = (ev.process.uid, ev.process.gid, ev.process.loginuid);
        let start_ns = ev.process.start_boottime_ns;
        let Some(d) = ev.process.detail.as_mut() else {
            return complete;
        };
        if let Some(db) = &users {
            d.user = db.user(uid);
            d.group = db.group(gid);
        }
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
                Some(HashState::Known(h)) => d.exe_sha256 = h.clone(),
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

/// The host's root directory: init's (an agent in a container with the
/// host's pid namespace sees the host through it), else the agent's own
/// where init's is closed to it.
fn host_root(proc_root: &std::path::Path) -> PathBuf {
    let init = proc_root.join("1/root");
    if std::fs::metadata(init.join("etc")).is_ok() {
        init
    } else {
        PathBuf::from("/")
    }
}

/// The inode in a `/proc/PID/ns/*` link (`mnt:[4026531841]`).
fn read_ns_inode(path: &std::path::Path) -> Option<u32> {
    let l = std::fs::read_link(path).ok()?;
    let s = l.to_str()?;
    s.split_once('[')?.1.strip_suffix(']')?.parse().ok()
}

fn spawn_worker(
    name: &str,
    rx: Receiver<Request>,
    tx: Sender<Resolved>,
    notify: Arc<Notify>,
    cfg: EnrichConfig,
    containers: Arc<ContainerResolver>,
) {
    let spawned = thread::Builder::new().name(name.into()).spawn(move || {
        for req in rx {
            let res = resolve(req, &cfg, &containers);
            if tx.send(res).is_err() {
                return;
            }
            notify.notify_one();
        }
    });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "cannot start an enrichment thread: events will lack names");
    }
}

/// Does the slow part of one request: file system and `/proc` reads.
fn resolve(req: Request, cfg: &EnrichConfig, containers: &ContainerResolver) -> Resolved {
    match req {
        Request::Container { cgroup_id } => {
            Resolved::Container(cgroup_id, containers.resolve(cgroup_id))
        }
        Request::Users { mnt_ns, pid } => Resolved::Users(
            mnt_ns,
            UserDb::load(&cfg.proc_root.join(pid.to_string()).join("root")),
        ),
        Request::UsersCheck { mnt_ns, pid, stamp } => {
            let root = cfg.proc_root.join(pid.to_string()).join("root");
            if UserDb::stamp_of(&root) == stamp {
                Resolved::UsersUnchanged(mnt_ns)
            } else {
                Resolved::Users(mnt_ns, UserDb::load(&root))
            }
        }
        Request::HostUsers => Resolved::HostUsers(UserDb::load(&host_root(&cfg.proc_root))),
        Request::Proc(key) => Resolved::Proc(key, procfs::read_process(&cfg.proc_root, key.pid)),
        Request::Hash { file, pid, path } => Resolved::Hash(
            file,
            hash::hash_exe(pid, path.as_deref(), &file, cfg.hash_max_bytes),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{ExitInfo, ProcessContext};

    /// An exit event of this test process, as the probe would report it.
    fn my_event(cgroup_id: u64) -> Event {
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
        let (_, ppid, ticks) = crate::util::proc_text::parse_stat(&stat).unwrap();
        Event {
            time_unix_ns: 0,
            num: 0,
            process: ProcessContext {
                pid: std::process::id(),
                tid: std::process::id(),
                ppid,
                uid: 0,
                gid: 0,
                euid: Some(0),
                egid: Some(0),
                loginuid: Some(-1),
                comm: "test".into(),
                cgroup_id,
                mnt_ns: read_ns_inode(std::path::Path::new("/proc/self/ns/mnt")),
                pid_ns: None,
                start_boottime_ns: Some(ticks * crate::util::clock::tick_ns() + 1),
                exe_deleted: false,
                tty: None,
                vpid: None,
                detail: None,
            },
            ancestry: Vec::new(),
            container: None,
            body: EventBody::Exit(ExitInfo {
                exit_code: Some(0),
                signal: None,
            }),
        }
    }

    fn enricher(wait: Duration, max_waiting: usize) -> Enricher {
        Enricher::start(EnrichConfig {
            k8s_log_dir: None,
            runtime_root: PathBuf::from("/nonexistent"),
            wait,
            max_waiting,
            ..EnrichConfig::default()
        })
    }

    fn next_ready(e: &mut Enricher, within: Duration) -> Option<Event> {
        let until = Instant::now() + within;
        loop {
            e.poll(Instant::now());
            if let Some(ev) = e.pop_ready() {
                return Some(ev);
            }
            if Instant::now() > until {
                return None;
            }
            thread::sleep(Duration::from_millis(2));
        }
    }

    #[test]
    fn event_waits_for_an_uncached_lookup_then_leaves_complete() {
        let mut e = enricher(Duration::from_secs(10), 100);
        e.push(my_event(1), Instant::now());
        assert!(e.pop_ready().is_none(), "the root cgroup is not cached yet");
        assert_eq!(e.waiting(), 1);
        let ev = next_ready(&mut e, Duration::from_secs(10)).expect("released once answered");
        let c = ev.container.expect("container filled in");
        assert_eq!(
            (c.id.as_str(), c.runtime),
            ("host", crate::event::Runtime::Host)
        );
        let d = ev.process.detail.expect("process detail");
        let me = std::fs::read_link("/proc/self/exe").unwrap();
        assert_eq!(d.exe.as_deref(), me.to_str(), "named from the bootstrap");
        assert!(d.cwd.is_some());
        assert_eq!(e.counters.waited, 1);
        assert_eq!(e.counters.timed_out, 0);
        // Cached now: the next event of the same cgroup leaves at once.
        e.push(my_event(1), Instant::now());
        assert!(e.pop_ready().is_some());
    }

    #[test]
    fn wait_is_bounded_by_time_and_by_count() {
        let mut e = enricher(Duration::ZERO, 100);
        e.push(my_event(u64::MAX - 1), Instant::now());
        e.poll(Instant::now());
        assert!(e.pop_ready().is_some(), "out of time: leaves without it");
        assert_eq!(e.counters.timed_out, 1);

        let mut e = enricher(Duration::from_secs(10), 0);
        e.push(my_event(u64::MAX - 1), Instant::now());
        assert!(e.pop_ready().is_some(), "no room to wait: leaves at once");
        assert_eq!(e.counters.wait_overflow, 1);
    }

    #[test]
    fn a_vanished_cgroup_resolves_to_unknown() {
        let mut e = enricher(Duration::from_secs(10), 100);
        e.push(my_event(u64::MAX - 1), Instant::now());
        let ev = next_ready(&mut e, Duration::from_secs(10)).unwrap();
        assert_eq!(
            ev.container.unwrap().runtime,
            crate::event::Runtime::Unknown
        );
    }
}
