//! Who did it: the process context every event carries, straight from the
//! record's header, and the data-only types the process table and
//! enrichment fill in (ancestry, container, executable identity). They live
//! here, below the layers that fill them, so an event can name them
//! without importing those layers.
use std::{fs::Metadata, os::unix::fs::MetadataExt, sync::Arc};

use agent_ebpf::{
    EventHeader, CAP_BOUNDING, CAP_EFFECTIVE, CAP_INHERITABLE, CAP_PERMITTED, COMM_LEN,
    HDR_CAPS_UNKNOWN, HDR_CREDS_UNKNOWN, HDR_EXE_DELETED, HDR_LOGINUID_UNKNOWN, HDR_MNTNS_UNKNOWN,
    HDR_PIDNS_UNKNOWN, HDR_PPID_UNKNOWN, HDR_START_UNKNOWN, HDR_TTY_UNKNOWN, HDR_VPID_UNKNOWN,
};
use serde::{Deserialize, Serialize};

use super::record::c_str;
use crate::util::{clock::stat_time_ns, kernel_dev};

/// Process context common to every event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessContext {
    /// Process id (kernel tgid).
    pub pid: u32,
    /// Thread id (kernel pid).
    pub tid: u32,
    /// Parent process id; 0 when unknown.
    pub ppid: u32,
    /// Real ids.
    pub uid: u32,
    pub gid: u32,
    /// Effective ids; None when the kernel layout is unknown.
    pub euid: Option<u32>,
    pub egid: Option<u32>,
    /// Audit login uid: -1 when never set (no login session), None when
    /// the kernel has no audit support.
    pub loginuid: Option<i64>,
    pub comm: String,
    pub cgroup_id: u64,
    /// Mount and pid namespace inode numbers (as in `/proc/PID/ns/*`).
    pub mnt_ns: Option<u32>,
    pub pid_ns: Option<u32>,
    /// Process start, CLOCK_BOOTTIME ns: (pid, start) identifies a process
    /// across pid reuse.
    pub start_boottime_ns: Option<u64>,
    /// The executable was deleted (checked by the probe on every event).
    #[serde(skip)]
    pub exe_deleted: bool,
    /// Controlling terminal as `/proc/PID/stat` `tty_nr` encodes it: 0 for
    /// none (daemons, services), e.g. 34816 for /dev/pts/0; None when the
    /// kernel layout is unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tty: Option<u32>,
    /// The process's id in its own pid namespace (1 for a container's
    /// init); equal to `pid` on the host; None when unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vpid: Option<u32>,
    /// The thread's capability sets at the event; None when the kernel
    /// layout is unknown (and in recordings made before they were kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caps: Option<Capabilities>,
    /// What the process table and enrichment know beyond the record; None
    /// straight out of `decode`.
    #[serde(flatten)]
    pub detail: Option<Box<ProcessDetail>>,
}

impl ProcessContext {
    /// The context a record's header gives; fields the probe could not
    /// read on this kernel are None.
    pub fn from_header(h: &EventHeader) -> ProcessContext {
        let known = |bit: u32| h.flags & bit == 0;
        ProcessContext {
            pid: h.tgid,
            tid: h.pid,
            ppid: if known(HDR_PPID_UNKNOWN) { h.ppid } else { 0 },
            uid: h.uid,
            gid: h.gid,
            euid: known(HDR_CREDS_UNKNOWN).then_some(h.euid),
            egid: known(HDR_CREDS_UNKNOWN).then_some(h.egid),
            loginuid: known(HDR_LOGINUID_UNKNOWN).then_some(if h.loginuid == u32::MAX {
                -1
            } else {
                h.loginuid as i64
            }),
            comm: c_str(&h.comm[..COMM_LEN]),
            cgroup_id: h.cgroup_id,
            mnt_ns: known(HDR_MNTNS_UNKNOWN).then_some(h.mnt_ns),
            pid_ns: known(HDR_PIDNS_UNKNOWN).then_some(h.pid_ns),
            start_boottime_ns: known(HDR_START_UNKNOWN).then_some(h.start_boottime_ns),
            tty: known(HDR_TTY_UNKNOWN).then_some(h.tty),
            vpid: known(HDR_VPID_UNKNOWN).then_some(h.vpid),
            caps: known(HDR_CAPS_UNKNOWN).then_some(Capabilities {
                effective: h.caps[CAP_EFFECTIVE],
                permitted: h.caps[CAP_PERMITTED],
                inheritable: h.caps[CAP_INHERITABLE],
                bounding: h.caps[CAP_BOUNDING],
            }),
            exe_deleted: h.flags & HDR_EXE_DELETED != 0,
            detail: None,
        }
    }
}

/// A thread's capability sets, as bit masks: bit N is capability N
/// (`CAP_CHOWN` is 0), as in `/proc/PID/status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capabilities {
    pub effective: u64,
    pub permitted: u64,
    pub inheritable: u64,
    /// The bounding set: what the thread and its children can ever gain.
    /// Full in a privileged container, trimmed in an ordinary one.
    pub bounding: u64,
}

/// The process as the agent knows it: from its exec (or `/proc`), its
/// working directory, names of its ids, and facts about its executable.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ProcessDetail {
    pub exe: Option<Arc<str>>,
    pub argv: Arc<[String]>,
    pub argv_truncated: bool,
    pub cwd: Option<Arc<str>>,
    /// Names of `uid`, `gid` and the login uid, from the process's own
    /// `/etc/passwd` and `/etc/group` (the container's, in a container).
    pub user: Option<Arc<str>>,
    pub group: Option<Arc<str>>,
    pub login_user: Option<Arc<str>>,
    /// SHA-256 of the executable, hex; None until computed, or when it was
    /// too large, gone, or changed before it could be read.
    pub exe_sha256: Option<Arc<str>>,
    /// The system binary (in /usr/bin, /usr/sbin, ...) this program is a
    /// copy or hard link of, under another file name, run from outside
    /// the system directories (`enrich/sysbin.rs`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub renamed_from: Option<Arc<str>>,
    /// The executable was deleted after the process started.
    pub exe_deleted: bool,
    /// Executed from a memfd (fileless).
    pub exe_memfd: bool,
    /// The executable was created or changed after the process's container
    /// started: not part of its image.
    pub exe_drift: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exe_file: Option<ExeFile>,
    /// Exec events in a mount namespace other than the host's: the mounts
    /// it holds (`enrich/mounts.rs`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mounts: Option<Arc<[ContainerMount]>>,
}

/// One mount a container's processes see: where, of what, and the host
/// path it shows when it is a piece of the host's file systems.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerMount {
    /// The host path mounted (a bind mount of `/run/docker.sock` shows
    /// `/run/docker.sock`); for a file system of the container's own, the
    /// mount's source as the kernel names it (`proc`, `overlay`, `tmpfs`).
    pub source: String,
    /// Where it is mounted, inside the container.
    pub dest: String,
    pub fstype: String,
    /// Mounted read-write.
    pub rw: bool,
    /// `shared`, `slave` or `private`.
    pub propagation: String,
}

impl ContainerMount {
    /// Falco's format: `source:dest:mode:rdwr:propagation`.
    pub fn describe(&self) -> String {
        format!(
            "{}:{}::{}:{}",
            self.source, self.dest, self.rw, self.propagation
        )
    }
}

/// Identity of an executable file as the kernel saw it at exec: the hash
/// cache's key, and what the deleted and drift flags are computed from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ExeFile {
    /// Device (kernel encoding `major << 20 | minor`) and inode.
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    /// Change and modification times, ns since the epoch.
    pub ctime_ns: u64,
    pub mtime_ns: u64,
    /// The file had no links left: it was deleted after it was started.
    pub deleted: bool,
}

impl ExeFile {
    /// The identity of a file as `stat` gives it, in the probe's units.
    pub fn from_metadata(m: &Metadata) -> ExeFile {
        ExeFile {
            dev: kernel_dev(m.dev()),
            ino: m.ino(),
            size: m.size(),
            ctime_ns: stat_time_ns(m.ctime(), m.ctime_nsec()),
            mtime_ns: stat_time_ns(m.mtime(), m.mtime_nsec()),
            deleted: m.nlink() == 0,
        }
    }

    /// The same file (device and inode), not changed since `was` (its
    /// change time, which any write or chmod moves).
    pub fn same_file_unchanged(&self, was: &ExeFile) -> bool {
        self.dev == was.dev && self.ino == was.ino && self.ctime_ns == was.ctime_ns
    }
}

/// One level of an ancestry chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ancestor {
    pub pid: u32,
    /// Its start, CLOCK_BOOTTIME ns (to a clock tick when it was found in
    /// `/proc`): with the pid, its identity.
    #[serde(default)]
    pub start_ns: u64,
    /// Its name (comm, 15 bytes at most), what Falco's `proc.pname` and
    /// `proc.aname` give; absent in recordings made before it was kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comm: Option<Arc<str>>,
    pub exe: Option<Arc<str>>,
    pub argv: Arc<[String]>,
}

/// What runs a process's cgroup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Runtime {
    Host,
    Docker,
    Containerd,
    CriO,
    Podman,
    SystemdNspawn,
    /// The cgroup could not be resolved (removed before the agent looked).
    Unknown,
}

impl Runtime {
    /// The name events and `container.type` use.
    pub fn name(self) -> &'static str {
        match self {
            Runtime::Host => "host",
            Runtime::Docker => "docker",
            Runtime::Containerd => "containerd",
            Runtime::CriO => "cri-o",
            Runtime::Podman => "podman",
            Runtime::SystemdNspawn => "systemd-nspawn",
            Runtime::Unknown => "unknown",
        }
    }
}

/// Where a process runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerInfo {
    /// The container id (64 hex digits for OCI runtimes), or `host`.
    pub id: String,
    pub runtime: Runtime,
    /// The systemd unit the cgroup belongs to (`nginx.service`), where the
    /// path names one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    /// cgroup path below the cgroup2 mount.
    pub cgroup: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub k8s: Option<K8sInfo>,
    /// The image the container runs, as its runtime recorded it
    /// (`docker.io/library/nginx:1.25`); None when the runtime keeps no
    /// readable record of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// When the container started (ns since the epoch; its oldest process):
    /// the drift check compares executables' change times with it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_unix_ns: Option<u64>,
}

impl ContainerInfo {
    pub fn is_container(&self) -> bool {
        !matches!(self.runtime, Runtime::Host | Runtime::Unknown)
    }

    pub fn unknown(cgroup: String) -> ContainerInfo {
        ContainerInfo {
            id: String::new(),
            runtime: Runtime::Unknown,
            unit: None,
            cgroup,
            k8s: None,
            image: None,
            started_unix_ns: None,
        }
    }

    /// The image split as Falco's fields split it:
    /// `registry:5000/team/app:1.2@sha256:…` → (`registry:5000/team/app`,
    /// `1.2`). The tag is empty when there is none.
    pub fn image_parts(&self) -> Option<(&str, &str)> {
        self.image.as_deref().map(split_image)
    }
}

fn split_image(image: &str) -> (&str, &str) {
    let name = image.split('@').next().unwrap_or(image);
    let last_slash = name.rfind('/').map_or(0, |i| i + 1);
    match name[last_slash..].rfind(':') {
        Some(i) => (&name[..last_slash + i], &name[last_slash + i + 1..]),
        None => (name, ""),
    }
}

/// Kubernetes identity of a container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct K8sInfo {
    pub namespace: String,
    pub pod: String,
    pub container: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_references_split_into_repository_and_tag() {
        assert_eq!(split_image("nginx"), ("nginx", ""));
        assert_eq!(split_image("nginx:1.25"), ("nginx", "1.25"));
        assert_eq!(
            split_image("docker.io/library/nginx:1.25"),
            ("docker.io/library/nginx", "1.25")
        );
        assert_eq!(
            split_image("registry:5000/team/app"),
            ("registry:5000/team/app", "")
        );
        assert_eq!(
            split_image("registry:5000/team/app:2@sha256:ab"),
            ("registry:5000/team/app", "2")
        );
        assert_eq!(split_image("app@sha256:ab"), ("app", ""));
    }

    #[test]
    fn runtime_names_round_trip() {
        for r in [Runtime::Host, Runtime::CriO, Runtime::SystemdNspawn] {
            let text = serde_json::to_string(&r).unwrap();
            assert_eq!(text, format!("\"{}\"", r.name()));
            assert_eq!(serde_json::from_str::<Runtime>(&text).unwrap(), r);
        }
    }
}
