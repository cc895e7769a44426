//! The resolver threads: whatever enrichment needs from the file system
//! (cgroup paths, passwd files, `/proc`, executables to hash) is asked of
//! them as a [`Request`] on a bounded queue, and answered as a
//! [`Resolved`], so the event path never waits on a disk.
use std::{
    path::{Path, PathBuf},
    sync::Arc,
    thread,
};

use crossbeam_channel::{bounded, Receiver, Sender, TrySendError};
use tokio::sync::Notify;

use super::{
    container::ContainerResolver,
    hash::{self, HashOutcome},
    mounts,
    sysbin::SystemBinaries,
    users::{UserDb, UserStamp},
    EnrichConfig,
};
use crate::{
    event::{ContainerInfo, ContainerMount, ExeFile},
    proctree::{procfs, ProcKey},
};

/// Executables above this size hash on the large-file thread, so that a
/// 100 MB binary never holds up the hash of a small one.
const LARGE_FILE: u64 = 4 << 20;

pub(super) enum Request {
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
    /// The mount table of a process in mount namespace `mnt_ns`.
    Mounts {
        mnt_ns: u32,
        pid: u32,
        /// The request's number, given back with the answer.
        read: u64,
    },
    Hash {
        file: ExeFile,
        pid: u32,
        path: Option<Arc<str>>,
    },
}

pub(super) enum Resolved {
    Container(u64, ContainerInfo),
    Users(u32, UserDb),
    UsersUnchanged(u32),
    HostUsers(UserDb),
    Proc(ProcKey, Option<procfs::ProcSnapshot>),
    /// None: the process was gone before its table could be read.
    Mounts(u32, u64, Option<Vec<ContainerMount>>),
    /// The hash, and the names of the system binaries with the same
    /// contents.
    Hash(ExeFile, HashOutcome, Arc<[Arc<str>]>),
}

/// The queues to the resolver threads and their answers.
pub(super) struct Resolvers {
    meta: Sender<Request>,
    hash: Sender<Request>,
    large_hash: Sender<Request>,
    results: Receiver<Resolved>,
    /// Woken when an answer arrives, so waiting events leave at once.
    pub(super) notify: Arc<Notify>,
}

impl Resolvers {
    /// Starts one thread for metadata (cgroups, users, `/proc`) and two
    /// for hashing (small and large files).
    pub(super) fn start(cfg: &EnrichConfig, containers: ContainerResolver) -> Resolvers {
        let (meta, meta_rx) = bounded::<Request>(4_096);
        let (hash, hash_rx) = bounded::<Request>(1_024);
        let (large_hash, large_hash_rx) = bounded::<Request>(1_024);
        let (res_tx, results) = bounded::<Resolved>(8_192);
        let notify = Arc::new(Notify::new());
        // One index per hashing thread: a shared one would let the
        // large-file thread's hashing hold up the small-file thread.
        let root = host_root(&cfg.proc_root);
        let no_containers = || ContainerResolver {
            cgroups: None,
            k8s: None,
            images: None,
        };
        for (name, rx, containers) in [
            ("vigil-resolve", meta_rx, containers),
            ("vigil-hash", hash_rx, no_containers()),
            ("vigil-hash-large", large_hash_rx, no_containers()),
        ] {
            spawn_worker(
                name,
                rx,
                res_tx.clone(),
                notify.clone(),
                cfg.clone(),
                containers,
                SystemBinaries::new(&root),
            );
        }
        Resolvers {
            meta,
            hash,
            large_hash,
            results,
            notify,
        }
    }

    /// Queues `r` for its thread; false when the queue is full.
    pub(super) fn ask(&self, r: Request) -> bool {
        let tx = match &r {
            Request::Hash { file, .. } if file.size > LARGE_FILE => &self.large_hash,
            Request::Hash { .. } => &self.hash,
            _ => &self.meta,
        };
        match tx.try_send(r) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => false,
        }
    }

    /// The next answer, if one is waiting.
    pub(super) fn answer(&self) -> Option<Resolved> {
        self.results.try_recv().ok()
    }
}

/// The host's root directory: init's (an agent in a container with the
/// host's pid namespace sees the host through it), else the agent's own
/// where init's is closed to it.
pub(super) fn host_root(proc_root: &Path) -> PathBuf {
    let init = proc_root.join("1/root");
    if std::fs::metadata(init.join("etc")).is_ok() {
        init
    } else {
        PathBuf::from("/")
    }
}

fn spawn_worker(
    name: &str,
    rx: Receiver<Request>,
    tx: Sender<Resolved>,
    notify: Arc<Notify>,
    cfg: EnrichConfig,
    containers: ContainerResolver,
    mut sysbin: SystemBinaries,
) {
    let spawned = thread::Builder::new().name(name.into()).spawn(move || {
        for req in rx {
            let res = resolve(req, &cfg, &containers, &mut sysbin);
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
fn resolve(
    req: Request,
    cfg: &EnrichConfig,
    containers: &ContainerResolver,
    sysbin: &mut SystemBinaries,
) -> Resolved {
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
        Request::Mounts { mnt_ns, pid, read } => {
            Resolved::Mounts(mnt_ns, read, mounts::read(&cfg.proc_root, pid))
        }
        Request::Hash { file, pid, path } => {
            let outcome = hash::hash_exe(pid, path.as_deref(), &file, cfg.hash_max_bytes);
            let names = match &outcome {
                HashOutcome::Done(h) => sysbin.names_of(&file, h, cfg.hash_max_bytes),
                _ => Vec::new(),
            };
            Resolved::Hash(file, outcome, names.into())
        }
    }
}
