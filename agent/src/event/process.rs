//! Decoding of the process family: exec, fork, exit.
use agent_ebpf::process::{
    ExecRecord, ExitRecord, ForkRecord, EXEC_ARGV_TRUNCATED, EXEC_ARGV_UNREADABLE,
    EXEC_ENV_TRUNCATED, EXEC_EXE_STAT_UNKNOWN, EXEC_EXE_TRUNCATED, EXEC_EXE_UNKNOWN,
    EXEC_EXE_UNREACHABLE, EXEC_FILENAME_TRUNCATED,
};
use serde::Serialize;

use super::{
    context::ExeFile,
    flags::{de_opt_names, names_of, FlagTable},
    record::{absolute, c_str, read_record},
    DecodeError,
};
use crate::util::proc_text::split_argv;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct ExecInfo {
    /// The executable, resolved by the kernel from `mm->exe_file`: absolute,
    /// symlinks followed. None when it could not be resolved.
    pub exe: Option<String>,
    /// The executable is not reachable from the process's root: it lives on
    /// an internal mount. For `/memfd:*` this is fileless execution.
    pub exe_unreachable: bool,
    /// Fileless execution from a memfd (`memfd_create` + `execveat`).
    pub exe_memfd: bool,
    pub exe_truncated: bool,
    /// The executed path as the kernel received it.
    pub filename: String,
    pub filename_truncated: bool,
    pub argv: Vec<String>,
    /// The probe kept only the first bytes of a longer argument block; the
    /// last element may be cut.
    pub argv_truncated: bool,
    /// The kernel did not let the probe read the arguments.
    pub argv_unreadable: bool,
    /// Size of the whole argument block in bytes, before any cut.
    pub argv_bytes: u32,
    /// The new image's environment (`NAME=value`), copied by the probe
    /// only while a loaded rule tests `proc.env`; empty otherwise. Never
    /// written out (events, activity, recordings): environments hold
    /// secrets. Only a rule's output that names `%proc.env` shows it.
    #[serde(skip)]
    pub env: Vec<String>,
    /// The probe kept only the first bytes of a longer environment.
    #[serde(skip)]
    pub env_truncated: bool,
    /// The executable's inode identity and times; None when unreadable.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exe_file: Option<ExeFile>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct ForkInfo {
    pub child_pid: u32,
    /// CLONE_* flags by name (without the exit signal); None when the
    /// process was created outside clone/clone3 (e.g. fork(2)).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[serde(default, deserialize_with = "de_opt_names::<CloneFlagNames, _>")]
    pub clone_flags: Option<Vec<&'static str>>,
    /// The child's start (CLOCK_BOOTTIME ns); None when unknown.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub child_start_boottime_ns: Option<u64>,
}

/// clone(2) flags.
pub struct CloneFlagNames;

impl FlagTable for CloneFlagNames {
    const BITS: &'static [(u64, &'static str)] = &[
        (0x100, "CLONE_VM"),
        (0x200, "CLONE_FS"),
        (0x400, "CLONE_FILES"),
        (0x800, "CLONE_SIGHAND"),
        (0x1000, "CLONE_PIDFD"),
        (0x2000, "CLONE_PTRACE"),
        (0x4000, "CLONE_VFORK"),
        (0x8000, "CLONE_PARENT"),
        (0x10000, "CLONE_THREAD"),
        (0x20000, "CLONE_NEWNS"),
        (0x40000, "CLONE_SYSVSEM"),
        (0x80000, "CLONE_SETTLS"),
        (0x100000, "CLONE_PARENT_SETTID"),
        (0x200000, "CLONE_CHILD_CLEARTID"),
        (0x800000, "CLONE_UNTRACED"),
        (0x1000000, "CLONE_CHILD_SETTID"),
        (0x2000000, "CLONE_NEWCGROUP"),
        (0x4000000, "CLONE_NEWUTS"),
        (0x8000000, "CLONE_NEWIPC"),
        (0x10000000, "CLONE_NEWUSER"),
        (0x20000000, "CLONE_NEWPID"),
        (0x40000000, "CLONE_NEWNET"),
        (0x80000000, "CLONE_IO"),
    ];
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct ExitInfo {
    /// `exit(N)` status; None when killed by a signal or unknown.
    pub exit_code: Option<i32>,
    /// Terminating signal, if any.
    pub signal: Option<i32>,
}

impl ExecInfo {
    /// The executable's path: the kernel-resolved one, else the filename.
    pub fn exe_path(&self) -> &str {
        self.exe.as_deref().unwrap_or(&self.filename)
    }
}

pub fn decode_exec(bytes: &[u8]) -> Result<ExecInfo, DecodeError> {
    let rec: ExecRecord = read_record(bytes, "exec record")?;
    let flen = (rec.filename_len as usize).min(rec.filename.len());
    let alen = (rec.argv_len as usize).min(rec.argv.len());
    let elen = (rec.exe_len as usize).min(rec.exe.len());
    let exe =
        (rec.flags & EXEC_EXE_UNKNOWN == 0 && elen > 0).then(|| absolute("", &rec.exe[..elen]));
    let unreachable = rec.flags & EXEC_EXE_UNREACHABLE != 0;
    Ok(ExecInfo {
        exe_memfd: unreachable && exe.as_deref().is_some_and(|e| e.starts_with("/memfd:")),
        exe_unreachable: unreachable,
        exe_truncated: rec.flags & EXEC_EXE_TRUNCATED != 0,
        exe,
        filename: c_str(&rec.filename[..flen]),
        filename_truncated: rec.flags & EXEC_FILENAME_TRUNCATED != 0,
        argv: split_argv(&rec.argv[..alen]),
        argv_truncated: rec.flags & EXEC_ARGV_TRUNCATED != 0,
        argv_unreadable: rec.flags & EXEC_ARGV_UNREADABLE != 0,
        argv_bytes: rec.argv_total_len,
        env: split_argv(&rec.env[..(rec.env_len as usize).min(rec.env.len())]),
        env_truncated: rec.flags & EXEC_ENV_TRUNCATED != 0,
        exe_file: (rec.flags & (EXEC_EXE_UNKNOWN | EXEC_EXE_STAT_UNKNOWN) == 0 && rec.exe_ino != 0)
            .then_some(ExeFile {
                dev: rec.exe_dev,
                ino: rec.exe_ino,
                size: rec.exe_size,
                ctime_ns: rec.exe_ctime_ns,
                mtime_ns: rec.exe_mtime_ns,
                deleted: rec.exe_nlink == 0,
            }),
    })
}

pub fn decode_fork(bytes: &[u8]) -> Result<ForkInfo, DecodeError> {
    let rec: ForkRecord = read_record(bytes, "fork record")?;
    Ok(ForkInfo {
        child_pid: rec.child_pid,
        clone_flags: (rec.flags_known != 0).then(|| names_of::<CloneFlagNames>(rec.clone_flags)),
        child_start_boottime_ns: (rec.child_start_boottime_ns != 0)
            .then_some(rec.child_start_boottime_ns),
    })
}

pub fn decode_exit(bytes: &[u8]) -> Result<ExitInfo, DecodeError> {
    let rec: ExitRecord = read_record(bytes, "exit record")?;
    if rec.exit_code_unknown != 0 {
        return Ok(ExitInfo {
            exit_code: None,
            signal: None,
        });
    }
    let sig = (rec.exit_code & 0x7f) as i32;
    Ok(if sig == 0 {
        ExitInfo {
            exit_code: Some(((rec.exit_code >> 8) & 0xff) as i32),
            signal: None,
        }
    } else {
        ExitInfo {
            exit_code: None,
            signal: Some(sig),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::test_support::*;
    use agent_ebpf::{
        process::{ARGV_MAX, FILENAME_MAX},
        EventKind,
    };

    fn exec_record(filename: &[u8], argv: &[u8], flags: u32) -> ExecRecord {
        let mut rec = ExecRecord {
            header: header(EventKind::Exec),
            exe_len: 0,
            exe_nlink: 1,
            exe_ino: 0,
            exe_dev: 0,
            exe_size: 0,
            exe_ctime_ns: 0,
            exe_mtime_ns: 0,
            exe: [0; agent_ebpf::process::EXE_MAX],
            filename_len: filename.len() as u32,
            argv_len: argv.len() as u32,
            flags,
            argv_total_len: argv.len() as u32,
            filename: [0; FILENAME_MAX],
            argv: [0; ARGV_MAX],
            env_len: 0,
            env_total_len: 0,
            env: [0; agent_ebpf::process::ENV_MAX],
        };
        rec.filename[..filename.len()].copy_from_slice(filename);
        rec.argv[..argv.len()].copy_from_slice(argv);
        rec
    }

    #[test]
    fn decodes_exec_filename_and_argv() {
        let rec = exec_record(b"/tmp/x/true", b"/tmp/x/true\0--marker\0a b\0", 0);
        let info = decode_exec(&bytes_of(&rec)).unwrap();
        assert_eq!(info.filename, "/tmp/x/true");
        assert_eq!(info.argv, vec!["/tmp/x/true", "--marker", "a b"]);
        assert!(!info.argv_truncated && !info.argv_unreadable && !info.filename_truncated);
    }

    #[test]
    fn the_environment_is_decoded_but_never_written_out() {
        let mut rec = exec_record(b"/bin/true", b"/bin/true\0", EXEC_ENV_TRUNCATED);
        let env = b"PATH=/bin\0API_TOKEN=hunter2\0";
        rec.env[..env.len()].copy_from_slice(env);
        rec.env_len = env.len() as u32;
        let info = decode_exec(&bytes_of(&rec)).unwrap();
        assert_eq!(info.env, vec!["PATH=/bin", "API_TOKEN=hunter2"]);
        assert!(info.env_truncated);
        let json = serde_json::to_string(&info).unwrap();
        assert!(!json.contains("hunter2"), "{json}");
    }

    #[test]
    fn truncated_argv_keeps_partial_last_argument_and_flag() {
        let mut block = Vec::new();
        for i in 0..2000 {
            block.extend_from_slice(format!("arg{i}").as_bytes());
            block.push(0);
        }
        let kept = &block[..ARGV_MAX];
        let mut rec = exec_record(b"/bin/echo", kept, EXEC_ARGV_TRUNCATED);
        rec.argv_total_len = block.len() as u32;
        let info = decode_exec(&bytes_of(&rec)).unwrap();
        assert!(info.argv_truncated);
        assert_eq!(info.argv_bytes as usize, block.len());
        assert_eq!(info.argv[0], "arg0");
        let joined: usize = info.argv.iter().map(|a| a.len() + 1).sum();
        assert!(joined >= ARGV_MAX, "every kept byte is in argv");
    }

    #[test]
    fn exe_from_components_and_memfd_flag() {
        let mut rec = exec_record(b"/dev/fd/3", b"x\0", EXEC_EXE_UNREACHABLE);
        let comps = b"memfd:payload\0";
        rec.exe[..comps.len()].copy_from_slice(comps);
        rec.exe_len = comps.len() as u32;
        let info = decode_exec(&bytes_of(&rec)).unwrap();
        assert_eq!(info.exe.as_deref(), Some("/memfd:payload"));
        assert!(info.exe_memfd && info.exe_unreachable);

        let mut rec = exec_record(b"./x", b"x\0", 0);
        let comps = b"x\0tmp\0";
        rec.exe[..comps.len()].copy_from_slice(comps);
        rec.exe_len = comps.len() as u32;
        let info = decode_exec(&bytes_of(&rec)).unwrap();
        assert_eq!(info.exe.as_deref(), Some("/tmp/x"));
        assert!(!info.exe_memfd);
    }

    #[test]
    fn empty_and_unreadable_argv() {
        let rec = exec_record(b"/bin/x", b"", EXEC_ARGV_UNREADABLE);
        let info = decode_exec(&bytes_of(&rec)).unwrap();
        assert!(info.argv.is_empty());
        assert!(info.argv_unreadable);
    }

    #[test]
    fn lengths_beyond_buffers_are_clamped() {
        let mut rec = exec_record(b"/bin/x", b"a\0", 0);
        rec.filename_len = u32::MAX;
        rec.argv_len = u32::MAX;
        let info = decode_exec(&bytes_of(&rec)).unwrap();
        assert_eq!(info.filename, "/bin/x");
    }

    #[test]
    fn exit_status_and_signal() {
        let mk = |code, unknown| ExitRecord {
            header: header(EventKind::Exit),
            exit_code: code,
            exit_code_unknown: unknown,
        };
        let d = |r: ExitRecord| decode_exit(&bytes_of(&r)).unwrap();
        assert_eq!(
            d(mk(3 << 8, 0)),
            ExitInfo {
                exit_code: Some(3),
                signal: None
            }
        );
        assert_eq!(
            d(mk(9, 0)),
            ExitInfo {
                exit_code: None,
                signal: Some(9)
            }
        );
        assert_eq!(
            d(mk(0, 1)),
            ExitInfo {
                exit_code: None,
                signal: None
            }
        );
    }
}
