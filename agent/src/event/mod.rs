//! Decoded events: the agent's view of what the probe reported.
//!
//! `decode` turns one ring-buffer record into an [`Event`]; each event family
//! has its own module. [`EventBody`] is exhaustive, so adding a kind fails the
//! build wherever it is not handled.
use std::{mem::size_of, sync::Arc};

use agent_ebpf::{
    EventHeader, EventKind, COMM_LEN, HDR_CREDS_UNKNOWN, HDR_EXE_DELETED, HDR_LOGINUID_UNKNOWN,
    HDR_MNTNS_UNKNOWN, HDR_PIDNS_UNKNOWN, HDR_PPID_UNKNOWN, HDR_START_UNKNOWN, HDR_TTY_UNKNOWN,
    HDR_VPID_UNKNOWN,
};
use serde::Serialize;

use crate::{enrich::container::ContainerInfo, proctree::Ancestor};

pub mod control;
pub mod file;
pub mod intern;
pub mod network;
pub mod process;

pub use control::ControlInfo;
pub use file::FileInfo;
pub use network::NetworkInfo;
pub use process::{ExeFile, ExecInfo, ExitInfo, ForkInfo};

/// Process context common to every event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
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
    /// What the process table and enrichment know beyond the record; None
    /// straight out of `decode`.
    #[serde(flatten)]
    pub detail: Option<Box<ProcessDetail>>,
}

/// The process as the agent knows it: from its exec (or `/proc`), its
/// working directory, names of its ids, and facts about its executable.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, serde::Deserialize)]
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
    /// The executable was deleted after the process started.
    pub exe_deleted: bool,
    /// Executed from a memfd (fileless).
    pub exe_memfd: bool,
    /// The executable was created or changed after the process's container
    /// started: not part of its image.
    pub exe_drift: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exe_file: Option<ExeFile>,
}

#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventBody {
    Exec(ExecInfo),
    Fork(ForkInfo),
    Exit(ExitInfo),
    File(FileInfo),
    Control(Box<ControlInfo>),
    Network(NetworkInfo),
}

impl EventBody {
    pub fn kind(&self) -> EventKind {
        match self {
            EventBody::Exec(_) => EventKind::Exec,
            EventBody::Fork(_) => EventKind::Fork,
            EventBody::Exit(_) => EventKind::Exit,
            EventBody::File(_) => EventKind::File,
            EventBody::Control(_) => EventKind::Control,
            EventBody::Network(_) => EventKind::Network,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct Event {
    /// Wall-clock time, ns since the Unix epoch.
    pub time_unix_ns: i64,
    /// This agent's sequence number of the event, from 1 (Falco's
    /// `evt.num`); 0 before the agent numbered it.
    #[serde(default)]
    pub num: u64,
    pub process: ProcessContext,
    /// The process's creators, nearest first (filled by enrichment).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ancestry: Vec<Ancestor>,
    /// Container or host the process runs in (filled by enrichment).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container: Option<Arc<ContainerInfo>>,
    #[serde(flatten)]
    pub body: EventBody,
}

impl Event {
    pub fn type_name(&self) -> &'static str {
        self.body.kind().name()
    }

    /// The process's executable: the process table's, else the exec
    /// record's own (so every event type names it once the table knows).
    pub fn exe(&self) -> Option<&str> {
        if let Some(e) = self
            .process
            .detail
            .as_deref()
            .and_then(|d| d.exe.as_deref())
        {
            return Some(e);
        }
        match &self.body {
            EventBody::Exec(x) => Some(x.exe_path()),
            _ => None,
        }
    }

    /// The process's arguments (with `argv[0]`) and whether they were cut,
    /// from the same source as [`Event::exe`].
    pub fn argv(&self) -> Option<(&[String], bool)> {
        if let Some(d) = self.process.detail.as_deref() {
            if d.exe.is_some() {
                return Some((&d.argv, d.argv_truncated));
            }
        }
        match &self.body {
            EventBody::Exec(x) => Some((&x.argv, x.argv_truncated)),
            _ => None,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("record of {len} bytes is shorter than its {what} ({need} bytes)")]
    Short {
        what: &'static str,
        len: usize,
        need: usize,
    },
    #[error("unknown event kind {0}")]
    UnknownKind(u32),
}

/// Converts the probe's `CLOCK_BOOTTIME` stamps to wall-clock time.
#[derive(Debug, Clone, Copy)]
pub struct BootClock {
    /// realtime - boottime, in ns.
    offset_ns: i64,
}

impl BootClock {
    /// Samples both clocks now. Cheap (vDSO); re-sample to follow clock steps.
    pub fn now() -> BootClock {
        let real = clock_ns(libc::CLOCK_REALTIME);
        let boot = clock_ns(libc::CLOCK_BOOTTIME);
        BootClock {
            offset_ns: real - boot,
        }
    }

    /// A clock with a fixed offset, for tests and replays.
    pub fn with_offset(offset_ns: i64) -> BootClock {
        BootClock { offset_ns }
    }

    pub fn to_unix_ns(self, boot_ns: u64) -> i64 {
        self.offset_ns.saturating_add(boot_ns as i64)
    }
}

fn clock_ns(id: libc::clockid_t) -> i64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid out-pointer.
    unsafe { libc::clock_gettime(id, &mut ts) };
    ts.tv_sec * 1_000_000_000 + ts.tv_nsec
}

/// Reads a `#[repr(C)]` record from the start of `bytes`, which need not be
/// aligned.
pub(crate) fn read_record<T: Copy>(bytes: &[u8], what: &'static str) -> Result<T, DecodeError> {
    if bytes.len() < size_of::<T>() {
        return Err(DecodeError::Short {
            what,
            len: bytes.len(),
            need: size_of::<T>(),
        });
    }
    // SAFETY: length checked; T is a plain-old-data wire type.
    Ok(unsafe { std::ptr::read_unaligned(bytes.as_ptr() as *const T) })
}

/// Text up to the first NUL, lossily decoded.
pub(crate) fn c_str(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

fn context(h: &EventHeader) -> ProcessContext {
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
        exe_deleted: h.flags & HDR_EXE_DELETED != 0,
        detail: None,
    }
}

/// Decodes one ring-buffer record.
pub fn decode(bytes: &[u8], clock: BootClock) -> Result<Event, DecodeError> {
    let header: EventHeader = read_record(bytes, "header")?;
    let kind = EventKind::from_u32(header.kind).ok_or(DecodeError::UnknownKind(header.kind))?;
    let body = match kind {
        EventKind::Exec => EventBody::Exec(process::decode_exec(bytes)?),
        EventKind::Fork => EventBody::Fork(process::decode_fork(bytes)?),
        EventKind::Exit => EventBody::Exit(process::decode_exit(bytes)?),
        EventKind::File => EventBody::File(file::decode_file(bytes)?),
        EventKind::Control => EventBody::Control(Box::new(control::decode_control(bytes)?)),
        EventKind::Network => EventBody::Network(network::decode_network(bytes)?),
    };
    Ok(Event {
        time_unix_ns: clock.to_unix_ns(header.boot_ns),
        num: 0,
        process: context(&header),
        ancestry: Vec::new(),
        container: None,
        body,
    })
}

#[cfg(test)]
pub(crate) mod test_support {
    use agent_ebpf::EventHeader;

    pub fn header(kind: agent_ebpf::EventKind) -> EventHeader {
        let mut comm = [0u8; 16];
        comm[..4].copy_from_slice(b"bash");
        EventHeader {
            kind: kind as u32,
            flags: 0,
            pid: 4243,
            tgid: 4242,
            ppid: 1,
            uid: 1000,
            gid: 100,
            euid: 0,
            egid: 0,
            loginuid: u32::MAX,
            boot_ns: 5_000,
            cgroup_id: 77,
            start_boottime_ns: 4_000,
            mnt_ns: 4026531841,
            pid_ns: 4026531836,
            comm,
            tty: 0,
            vpid: 4242,
        }
    }

    pub fn bytes_of<T: Copy>(v: &T) -> Vec<u8> {
        // SAFETY: reading the bytes of a POD value.
        unsafe {
            std::slice::from_raw_parts(v as *const T as *const u8, std::mem::size_of::<T>())
                .to_vec()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{test_support::*, *};
    use agent_ebpf::process::ForkRecord;

    #[test]
    fn decodes_header_into_context_and_wall_time() {
        let rec = ForkRecord {
            header: header(EventKind::Fork),
            child_pid: 99,
            flags_known: 1,
            clone_flags: 0x01200011,
            child_start_boottime_ns: 0,
        };
        let ev = decode(&bytes_of(&rec), BootClock::with_offset(1_000_000)).unwrap();
        assert_eq!(ev.time_unix_ns, 1_005_000);
        assert_eq!(ev.process.pid, 4242);
        assert_eq!(ev.process.tid, 4243);
        assert_eq!(ev.process.comm, "bash");
        assert_eq!(ev.process.cgroup_id, 77);
        assert_eq!(ev.process.euid, Some(0));
        assert_eq!(ev.process.loginuid, Some(-1), "unset login uid reads as -1");
        assert_eq!(ev.process.mnt_ns, Some(4026531841));
        assert_eq!(ev.process.start_boottime_ns, Some(4_000));
        assert_eq!(
            ev.body,
            EventBody::Fork(ForkInfo {
                child_pid: 99,
                clone_flags: Some(vec!["CLONE_CHILD_CLEARTID", "CLONE_CHILD_SETTID"]),
                child_start_boottime_ns: None,
            })
        );
    }

    #[test]
    fn unknown_header_fields_decode_as_none() {
        let mut h = header(EventKind::Fork);
        h.flags = HDR_PPID_UNKNOWN
            | HDR_CREDS_UNKNOWN
            | HDR_LOGINUID_UNKNOWN
            | HDR_MNTNS_UNKNOWN
            | HDR_PIDNS_UNKNOWN
            | HDR_START_UNKNOWN;
        let rec = ForkRecord {
            header: h,
            child_pid: 1,
            flags_known: 0,
            clone_flags: 0,
            child_start_boottime_ns: 0,
        };
        let p = decode(&bytes_of(&rec), BootClock::with_offset(0))
            .unwrap()
            .process;
        assert_eq!(p.ppid, 0);
        assert_eq!(
            (
                p.euid,
                p.egid,
                p.loginuid,
                p.mnt_ns,
                p.pid_ns,
                p.start_boottime_ns
            ),
            (None, None, None, None, None, None)
        );
    }

    #[test]
    fn rejects_short_and_unknown_records() {
        assert!(matches!(
            decode(&[1, 0, 0], BootClock::with_offset(0)),
            Err(DecodeError::Short { .. })
        ));
        let mut h = header(EventKind::Exec);
        h.kind = 99;
        assert_eq!(
            decode(&bytes_of(&h), BootClock::with_offset(0)),
            Err(DecodeError::UnknownKind(99))
        );
        // An exec header without its body is short, not garbage.
        let h = header(EventKind::Exec);
        assert!(matches!(
            decode(&bytes_of(&h), BootClock::with_offset(0)),
            Err(DecodeError::Short {
                what: "exec record",
                ..
            })
        ));
    }

    /// Loss counters are read for `EventKind::ALL`: a kind missing there
    /// would lose events without a report.
    #[test]
    fn every_kind_has_a_reported_loss_slot() {
        for v in 0..64 {
            if let Some(k) = EventKind::from_u32(v) {
                assert!(EventKind::ALL.contains(&k), "{k:?} missing from ALL");
                assert!(k.lost_slot() < agent_ebpf::LOST_SLOTS);
            }
        }
    }

    #[test]
    fn json_shape_is_flat_with_type_tag() {
        let rec = ForkRecord {
            header: header(EventKind::Fork),
            child_pid: 99,
            flags_known: 0,
            clone_flags: 0,
            child_start_boottime_ns: 0,
        };
        let ev = decode(&bytes_of(&rec), BootClock::with_offset(0)).unwrap();
        let v: serde_json::Value = serde_json::to_value(&ev).unwrap();
        assert_eq!(v["type"], "fork");
        assert_eq!(v["child_pid"], 99);
        assert_eq!(v["process"]["pid"], 4242);
    }
}
