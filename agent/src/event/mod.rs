//! Decoded events: the agent's view of what the probe reported.
//!
//! An event is born in the probe as a ring-buffer record; [`decode`] turns
//! it into an [`Event`], with one module per family (`process.rs`,
//! `file.rs`, `control.rs`, `network.rs`) and the steps they share in
//! `record.rs`. The process table and enrichment then fill in
//! [`ProcessDetail`], the ancestry and the container, the rule engine
//! matches it, and alerts are built from it. [`EventBody`] is exhaustive, so
//! adding a kind fails the build wherever it is not handled.
use agent_ebpf::{EventHeader, EventKind};
use serde::Serialize;
use std::sync::Arc;

use crate::util::clock::BootClock;

pub mod context;
pub mod control;
pub mod file;
pub mod flags;
pub mod network;
pub mod process;
pub mod record;

pub use context::{
    Ancestor, ContainerInfo, ContainerMount, ExeFile, K8sInfo, ProcessContext, ProcessDetail,
    Runtime,
};
pub use control::ControlInfo;
pub use file::FileInfo;
pub use network::NetworkInfo;
pub use process::{ExecInfo, ExitInfo, ForkInfo};
pub use record::Errno;

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
    /// The process's creators, nearest first (filled by enrichment; one
    /// chain shared by the events of a process).
    #[serde(default, skip_serializing_if = "<[Ancestor]>::is_empty")]
    pub ancestry: Arc<[Ancestor]>,
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

    /// Parses one line of a recording (`run --events` output); None for
    /// the lines that are not events (alerts, loss reports).
    pub fn from_recorded_line(line: &str) -> Result<Option<Event>, serde_json::Error> {
        /// Only the `type` of a line, read before the whole of it.
        #[derive(serde::Deserialize)]
        struct LineType<'a> {
            #[serde(rename = "type", borrow)]
            ty: Option<std::borrow::Cow<'a, str>>,
        }
        let kind: LineType = serde_json::from_str(line)?;
        if matches!(kind.ty.as_deref(), Some("alert" | "lost")) {
            return Ok(None);
        }
        let mut ev: Event = serde_json::from_str(line)?;
        if let Some(d) = ev.process.detail.as_deref() {
            ev.process.exe_deleted = d.exe_deleted;
        }
        Ok(Some(ev))
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
    #[error("unknown {family} operation {op}")]
    UnknownOp { family: &'static str, op: u32 },
    #[error("syscall number {0} is not one Vigil follows")]
    UnknownSyscall(u32),
}

/// Decodes one ring-buffer record.
pub fn decode(bytes: &[u8], clock: BootClock) -> Result<Event, DecodeError> {
    let header: EventHeader = record::read_record(bytes, "header")?;
    let kind = EventKind::from_repr(header.kind).ok_or(DecodeError::UnknownKind(header.kind))?;
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
        process: ProcessContext::from_header(&header),
        ancestry: Arc::from([]),
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
            caps: [0; 4],
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
    use agent_ebpf::{
        HDR_CREDS_UNKNOWN, HDR_LOGINUID_UNKNOWN, HDR_MNTNS_UNKNOWN, HDR_PIDNS_UNKNOWN,
        HDR_PPID_UNKNOWN, HDR_START_UNKNOWN,
    };

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
            if let Some(k) = EventKind::from_repr(v) {
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
