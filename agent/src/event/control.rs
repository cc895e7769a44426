//! Decoding of the control family: credential changes, ptrace, memfd,
//! kernel modules, bpf(), mounts, namespaces, chroot, prctl.
use agent_ebpf::{control::ControlOp, syscall::BASE1_UNKNOWN};
use serde::Serialize;

use super::{
    flags::{de_names, names_of, FlagTable},
    record::{absolute, c_str, Errno, SyscallParts},
    DecodeError,
};
use crate::kernel::syscalls::{IdArgs, Syscall};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct ControlInfo {
    /// setuid, setgid, ptrace, memfd_create, module_load, module_unload,
    /// bpf, mount, umount, unshare, setns, chroot, prctl, capset.
    pub op: ControlOp,
    /// The syscall, e.g. `setresuid`.
    pub syscall: Syscall,
    pub result: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<Errno>,
    /// setuid family: requested real/effective/saved/fs ids; -1 unchanged.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ids: Option<Ids>,
    /// ptrace: request name (`PTRACE_ATTACH`, ...) and target pid.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_pid: Option<i64>,
    /// memfd_create, delete_module: the name; prctl(PR_SET_NAME): the new name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// chroot: the new root; mount/umount: the target; finit_module: the
    /// module file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// mount: the filesystem type.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fstype: Option<String>,
    /// init_module/finit_module: module parameters.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub module_args: Option<String>,
    /// bpf: the command (`BPF_PROG_LOAD`, `BPF_MAP_CREATE`, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bpf_cmd: Option<String>,
    /// capset: the new capability sets, as hex bit masks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub caps: Option<Caps>,
    /// setuid/setgid/capset: the caller's credentials before the call (the
    /// event's process context shows them after it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub old: Option<OldCreds>,
    /// Raw flags argument, and decoded names where known (MFD_*,
    /// CLONE_NEW*, MS_*).
    pub flags: u64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[serde(default, deserialize_with = "de_names::<ControlFlagNames, _>")]
    pub flag_names: Vec<&'static str>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct OldCreds {
    pub uid: u32,
    pub euid: u32,
    pub gid: u32,
    pub egid: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub caps: Option<Caps>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Caps {
    pub effective: String,
    pub permitted: String,
    pub inheritable: String,
}

/// Two `__user_cap_data_struct { effective, permitted, inheritable }`
/// (low and high 32 bits of each 64-bit set).
fn caps(raw: &[u8]) -> Option<Caps> {
    if raw.len() < 24 {
        return None;
    }
    let w = |i: usize| {
        let b = &raw[i * 4..];
        u32::from_ne_bytes([b[0], b[1], b[2], b[3]]) as u64
    };
    let set = |lo: usize| format!("{:#x}", w(lo) | (w(lo + 3) << 32));
    Some(Caps {
        effective: set(0),
        permitted: set(1),
        inheritable: set(2),
    })
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Ids {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub real: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub effective: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub saved: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fs: Option<i64>,
}

fn id(v: u64) -> i64 {
    if v as u32 == u32::MAX {
        -1
    } else {
        v as u32 as i64
    }
}

fn ids(layout: IdArgs, a: &[u64; 6]) -> Ids {
    let s = |i: usize| Some(id(a[i]));
    match layout {
        IdArgs::All => Ids {
            real: s(0),
            effective: s(0),
            saved: s(0),
            fs: None,
        },
        IdArgs::RealEffective => Ids {
            real: s(0),
            effective: s(1),
            ..Ids::default()
        },
        IdArgs::RealEffectiveSaved => Ids {
            real: s(0),
            effective: s(1),
            saved: s(2),
            fs: None,
        },
        IdArgs::Fs | IdArgs::None => Ids {
            fs: s(0),
            ..Ids::default()
        },
    }
}

fn ptrace_request(r: u64) -> String {
    match r as i64 {
        0 => "PTRACE_TRACEME".into(),
        1 => "PTRACE_PEEKTEXT".into(),
        2 => "PTRACE_PEEKDATA".into(),
        3 => "PTRACE_PEEKUSER".into(),
        4 => "PTRACE_POKETEXT".into(),
        5 => "PTRACE_POKEDATA".into(),
        6 => "PTRACE_POKEUSER".into(),
        7 => "PTRACE_CONT".into(),
        8 => "PTRACE_KILL".into(),
        9 => "PTRACE_SINGLESTEP".into(),
        12 => "PTRACE_GETREGS".into(),
        13 => "PTRACE_SETREGS".into(),
        16 => "PTRACE_ATTACH".into(),
        17 => "PTRACE_DETACH".into(),
        24 => "PTRACE_SYSCALL".into(),
        0x4200 => "PTRACE_SETOPTIONS".into(),
        0x4206 => "PTRACE_SEIZE".into(),
        0x4207 => "PTRACE_INTERRUPT".into(),
        n => format!("PTRACE_{n}"),
    }
}

fn bpf_cmd(c: u64) -> String {
    const NAMES: [&str; 14] = [
        "BPF_MAP_CREATE",
        "BPF_MAP_LOOKUP_ELEM",
        "BPF_MAP_UPDATE_ELEM",
        "BPF_MAP_DELETE_ELEM",
        "BPF_MAP_GET_NEXT_KEY",
        "BPF_PROG_LOAD",
        "BPF_OBJ_PIN",
        "BPF_OBJ_GET",
        "BPF_PROG_ATTACH",
        "BPF_PROG_DETACH",
        "BPF_PROG_TEST_RUN",
        "BPF_PROG_GET_NEXT_ID",
        "BPF_MAP_GET_NEXT_ID",
        "BPF_PROG_GET_FD_BY_ID",
    ];
    NAMES
        .get(c as usize)
        .map_or_else(|| format!("BPF_CMD_{c}"), |n| n.to_string())
}

/// Namespace flags (unshare, setns).
pub struct NsFlagNames;

impl FlagTable for NsFlagNames {
    const BITS: &'static [(u64, &'static str)] = &[
        (libc::CLONE_NEWNS as u64, "CLONE_NEWNS"),
        (libc::CLONE_NEWCGROUP as u64, "CLONE_NEWCGROUP"),
        (libc::CLONE_NEWUTS as u64, "CLONE_NEWUTS"),
        (libc::CLONE_NEWIPC as u64, "CLONE_NEWIPC"),
        (libc::CLONE_NEWUSER as u64, "CLONE_NEWUSER"),
        (libc::CLONE_NEWPID as u64, "CLONE_NEWPID"),
        (libc::CLONE_NEWNET as u64, "CLONE_NEWNET"),
        (0x80, "CLONE_NEWTIME"),
        (libc::CLONE_FS as u64, "CLONE_FS"),
        (libc::CLONE_FILES as u64, "CLONE_FILES"),
    ];
}

/// memfd_create flags.
pub struct MfdFlagNames;

impl FlagTable for MfdFlagNames {
    const BITS: &'static [(u64, &'static str)] = &[
        (0x1, "MFD_CLOEXEC"),
        (0x2, "MFD_ALLOW_SEALING"),
        (0x4, "MFD_HUGETLB"),
        (0x8, "MFD_NOEXEC_SEAL"),
        (0x10, "MFD_EXEC"),
    ];
}

/// mount flags.
pub struct MsFlagNames;

impl FlagTable for MsFlagNames {
    const BITS: &'static [(u64, &'static str)] = &[
        (libc::MS_RDONLY, "MS_RDONLY"),
        (libc::MS_NOSUID, "MS_NOSUID"),
        (libc::MS_NODEV, "MS_NODEV"),
        (libc::MS_NOEXEC, "MS_NOEXEC"),
        (libc::MS_REMOUNT, "MS_REMOUNT"),
        (libc::MS_BIND, "MS_BIND"),
        (libc::MS_MOVE, "MS_MOVE"),
        (libc::MS_REC, "MS_REC"),
        (libc::MS_PRIVATE, "MS_PRIVATE"),
        (libc::MS_SHARED, "MS_SHARED"),
    ];
}

/// Every name a control event's `flag_names` can hold: the tables above
/// together, for reading recordings back.
pub struct ControlFlagNames;

impl FlagTable for ControlFlagNames {
    const BITS: &'static [(u64, &'static str)] = &[];

    fn lookup(name: &str) -> Option<&'static str> {
        NsFlagNames::lookup(name)
            .or_else(|| MfdFlagNames::lookup(name))
            .or_else(|| MsFlagNames::lookup(name))
    }
}

/// `PR_SET_NAME`.
const PR_SET_NAME: u64 = 15;

pub fn decode_control(bytes: &[u8]) -> Result<ControlInfo, DecodeError> {
    let parts = SyscallParts::read(bytes, "control record")?;
    let rec = &parts.rec;
    let op = ControlOp::from_repr(rec.op as u8).ok_or(DecodeError::UnknownOp {
        family: "control",
        op: rec.op,
    })?;
    let syscall =
        Syscall::by_nr(rec.syscall_nr).ok_or(DecodeError::UnknownSyscall(rec.syscall_nr))?;
    let (s1, s2) = (c_str(parts.path1), c_str(parts.path2));
    let path1 = || {
        if rec.path_flags & BASE1_UNKNOWN != 0 && !s1.starts_with('/') {
            s1.clone()
        } else {
            absolute(&s1, parts.base1)
        }
    };
    let a = rec.args;
    let mut info = ControlInfo {
        op,
        syscall,
        result: rec.result,
        error: Errno::of_result(rec.result),
        ids: None,
        request: None,
        target_pid: None,
        name: None,
        path: None,
        fstype: None,
        module_args: None,
        bpf_cmd: None,
        caps: None,
        old: None,
        flags: rec.flags,
        flag_names: Vec::new(),
    };
    use ControlOp::*;
    let old = |with_caps: bool| OldCreds {
        uid: rec.old_ids[0],
        euid: rec.old_ids[1],
        gid: rec.old_ids[2],
        egid: rec.old_ids[3],
        caps: with_caps.then(|| Caps {
            effective: format!("{:#x}", rec.old_caps[0]),
            permitted: format!("{:#x}", rec.old_caps[1]),
            inheritable: format!("{:#x}", rec.old_caps[2]),
        }),
    };
    match op {
        SetUid | SetGid => {
            info.ids = Some(ids(syscall.def().args.ids, &a));
            info.old = Some(old(false));
        }
        Ptrace => {
            info.request = Some(ptrace_request(a[0]));
            info.target_pid = Some(a[1] as i32 as i64);
        }
        MemfdCreate => {
            info.name = Some(s1.clone());
            info.flag_names = names_of::<MfdFlagNames>(rec.flags);
        }
        ModuleLoad => {
            info.module_args = Some(s2.clone());
            // finit_module names the module file by fd; init_module has
            // only its image in memory.
            if !parts.base1.is_empty() {
                info.path = Some(path1());
            }
        }
        ModuleUnload => info.name = Some(s1.clone()),
        Bpf => info.bpf_cmd = Some(bpf_cmd(a[0])),
        Mount => {
            info.path = Some(path1());
            info.fstype = Some(s2.clone());
            info.flag_names = names_of::<MsFlagNames>(rec.flags);
        }
        Umount | Chroot | MoveMount => info.path = Some(path1()),
        Unshare | Setns => info.flag_names = names_of::<NsFlagNames>(rec.flags),
        Capset => {
            info.caps = caps(parts.path1);
            info.old = Some(old(true));
        }
        Clone | Userfaultfd => {}
        Prctl => {
            info.request = Some(format!("PR_{}", a[0]));
            if a[0] == PR_SET_NAME {
                info.request = Some("PR_SET_NAME".into());
                info.name = Some(s1.clone());
            }
        }
    }
    Ok(info)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::test_support::*;
    use agent_ebpf::{syscall::SyscallRecord, EventKind};

    fn record(
        op: ControlOp,
        nr: i64,
        args: [u64; 6],
        flags: u64,
        p1: &[u8],
        b1: &[u8],
        p2: &[u8],
    ) -> Vec<u8> {
        let rec = SyscallRecord {
            header: header(EventKind::Control),
            op: op as u32,
            syscall_nr: nr as u32,
            args,
            old_ids: [0, 0, 0, 0],
            old_caps: [u64::MAX, u64::MAX, 0],
            result: 0,
            flags,
            mode: 0,
            uid: 0,
            gid: 0,
            dirfd: -100,
            dirfd2: -100,
            path_flags: 0,
            path1_len: p1.len() as u16,
            base1_len: b1.len() as u16,
            path2_len: p2.len() as u16,
            base2_len: 0,
        };
        let mut v = bytes_of(&rec);
        v.extend_from_slice(p1);
        v.extend_from_slice(b1);
        v.extend_from_slice(p2);
        v
    }

    #[test]
    fn setresuid_ids_with_unchanged() {
        let b = record(
            ControlOp::SetUid,
            libc::SYS_setresuid,
            [0, u32::MAX as u64, 1000, 0, 0, 0],
            0,
            b"",
            b"",
            b"",
        );
        let c = decode_control(&b).unwrap();
        assert_eq!(c.syscall.name(), "setresuid");
        assert_eq!(
            c.ids,
            Some(Ids {
                real: Some(0),
                effective: Some(-1),
                saved: Some(1000),
                fs: None
            })
        );
    }

    #[test]
    fn ptrace_memfd_unshare_mount() {
        let c = decode_control(&record(
            ControlOp::Ptrace,
            libc::SYS_ptrace,
            [16, 4242, 0, 0, 0, 0],
            0,
            b"",
            b"",
            b"",
        ))
        .unwrap();
        assert_eq!(
            (c.request.as_deref(), c.target_pid),
            (Some("PTRACE_ATTACH"), Some(4242))
        );
        let c = decode_control(&record(
            ControlOp::MemfdCreate,
            libc::SYS_memfd_create,
            [0; 6],
            1,
            b"payload\0",
            b"",
            b"",
        ))
        .unwrap();
        assert_eq!(c.name.as_deref(), Some("payload"));
        assert_eq!(c.flag_names, vec!["MFD_CLOEXEC"]);
        let c = decode_control(&record(
            ControlOp::Unshare,
            libc::SYS_unshare,
            [0; 6],
            (libc::CLONE_NEWNS | libc::CLONE_NEWUSER) as u64,
            b"",
            b"",
            b"",
        ))
        .unwrap();
        assert_eq!(c.flag_names, vec!["CLONE_NEWNS", "CLONE_NEWUSER"]);
        let c = decode_control(&record(
            ControlOp::Mount,
            libc::SYS_mount,
            [0; 6],
            libc::MS_BIND,
            b"mnt\0",
            b"tmp\0",
            b"tmpfs\0",
        ))
        .unwrap();
        assert_eq!(c.path.as_deref(), Some("/tmp/mnt"));
        assert_eq!(c.fstype.as_deref(), Some("tmpfs"));
        assert_eq!(c.flag_names, vec!["MS_BIND"]);
    }

    #[test]
    fn finit_module_path_from_fd_and_prctl_name() {
        let c = decode_control(&record(
            ControlOp::ModuleLoad,
            libc::SYS_finit_module,
            [3, 0, 0, 0, 0, 0],
            0,
            b"\0",
            b"evil.ko\0tmp\0",
            b"debug=1\0",
        ))
        .unwrap();
        assert_eq!(c.path.as_deref(), Some("/tmp/evil.ko"));
        assert_eq!(c.module_args.as_deref(), Some("debug=1"));
        let c = decode_control(&record(
            ControlOp::Prctl,
            libc::SYS_prctl,
            [15, 0, 0, 0, 0, 0],
            0,
            b"kworker/0:1\0",
            b"",
            b"",
        ))
        .unwrap();
        assert_eq!(
            (c.request.as_deref(), c.name.as_deref()),
            (Some("PR_SET_NAME"), Some("kworker/0:1"))
        );
    }
}
