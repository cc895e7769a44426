//! Decoding of the file family: open, unlink, rmdir, rename, chmod, chown,
//! link, symlink, mknod, mkdir, chdir.
//!
//! The probe sends each path as the process wrote it, and for a relative
//! path the components of the directory it is relative to (cwd or dirfd),
//! leaf first. Here they become one absolute path.
use agent_ebpf::{
    file::FileOp,
    syscall::{
        BASE1_TRUNCATED, BASE1_UNKNOWN, BASE2_TRUNCATED, BASE2_UNKNOWN, PATH1_TRUNCATED,
        PATH2_TRUNCATED,
    },
};
use serde::Serialize;

use super::{
    flags::{de_names, FlagTable},
    record::{absolute, c_str, Errno, SyscallParts},
    DecodeError,
};
use crate::kernel::syscalls::Syscall;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct FileInfo {
    /// open, unlink, rmdir, rename, chmod, chown, link, symlink, mknod,
    /// mkdir, chdir.
    pub op: FileOp,
    /// The syscall, e.g. `openat`.
    pub syscall: Syscall,
    /// The file acted on, absolute. For rename and link: the existing
    /// file; for symlink: the link created.
    pub path: String,
    /// The path as the program passed it, when that differs from `path`:
    /// relative, or with `.`, `..` or `//` in it (`fd.nameraw`). A web
    /// application tricked into reading `../../../etc/passwd` shows here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_raw: Option<String>,
    /// rename and link: the new name, absolute.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub new_path: Option<String>,
    /// symlink: what the link points to, exactly as given (not resolved).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// open: decoded access and flags.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub open: Option<OpenFlags>,
    /// Raw flags argument (O_*, RENAME_*, AT_*).
    pub flags: u64,
    /// chmod, mknod, open with O_CREAT: the mode, in octal.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// chown: new owner and group; -1 means unchanged.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uid: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gid: Option<i64>,
    /// utime family: whether the caller gave the new times or asked for
    /// the current time (a NULL times pointer, what `touch` does without
    /// `-d`, `-r` or `-t`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub times: Option<FileTimes>,
    /// The syscall's return value: an fd or 0 on success, -errno on failure.
    pub result: i64,
    /// Error name on failure, e.g. `ENOENT`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<Errno>,
    /// A path was longer than the probe keeps, or its directory was deeper.
    pub path_truncated: bool,
    /// A relative path whose directory could not be resolved is reported as
    /// given.
    pub path_unresolved: bool,
}

/// How a utime-family call set a file's times. `Given` is any non-NULL
/// times argument: the probe does not read the values, so utimensat's
/// `UTIME_NOW` passed explicitly also counts as given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FileTimes {
    Now,
    Given,
}

impl FileTimes {
    pub fn name(self) -> &'static str {
        match self {
            FileTimes::Now => "now",
            FileTimes::Given => "given",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct OpenFlags {
    pub read: bool,
    pub write: bool,
    pub create: bool,
    pub truncate: bool,
    pub append: bool,
    /// Every O_* flag set, by name.
    #[serde(deserialize_with = "de_names::<OpenFlagNames, _>")]
    pub names: Vec<&'static str>,
}

/// The names of open(2) flags.
pub struct OpenFlagNames;

impl FlagTable for OpenFlagNames {
    const BITS: &'static [(u64, &'static str)] = &[
        (libc::O_CREAT as u64, "O_CREAT"),
        (libc::O_EXCL as u64, "O_EXCL"),
        (libc::O_NOCTTY as u64, "O_NOCTTY"),
        (libc::O_TRUNC as u64, "O_TRUNC"),
        (libc::O_APPEND as u64, "O_APPEND"),
        (libc::O_NONBLOCK as u64, "O_NONBLOCK"),
        (libc::O_DSYNC as u64, "O_DSYNC"),
        (libc::O_DIRECT as u64, "O_DIRECT"),
        (libc::O_LARGEFILE as u64, "O_LARGEFILE"),
        (libc::O_DIRECTORY as u64, "O_DIRECTORY"),
        (libc::O_NOFOLLOW as u64, "O_NOFOLLOW"),
        (libc::O_NOATIME as u64, "O_NOATIME"),
        (libc::O_CLOEXEC as u64, "O_CLOEXEC"),
        (libc::O_PATH as u64, "O_PATH"),
    ];
    /// The access mode is a two-bit number, and O_TMPFILE includes
    /// O_DIRECTORY's bit.
    const OTHER_NAMES: &'static [&'static str] = &["O_RDONLY", "O_WRONLY", "O_RDWR", "O_TMPFILE"];
}

/// Decodes open(2) flags.
pub fn open_flags(flags: u64) -> OpenFlags {
    let f = flags as i32;
    let acc = f & libc::O_ACCMODE;
    let mut names = vec![match acc {
        libc::O_WRONLY => "O_WRONLY",
        libc::O_RDWR => "O_RDWR",
        _ => "O_RDONLY",
    }];
    let tmpfile = f & libc::O_TMPFILE == libc::O_TMPFILE;
    for &(bit, name) in OpenFlagNames::BITS {
        if flags & bit != 0 && !(tmpfile && bit == libc::O_DIRECTORY as u64) {
            names.push(name);
        }
    }
    if tmpfile {
        names.push("O_TMPFILE");
    }
    let path_only = f & libc::O_PATH != 0;
    OpenFlags {
        read: !path_only && (acc == libc::O_RDONLY || acc == libc::O_RDWR),
        write: !path_only && (acc == libc::O_WRONLY || acc == libc::O_RDWR),
        create: f & libc::O_CREAT != 0 || tmpfile,
        truncate: f & libc::O_TRUNC != 0,
        append: f & libc::O_APPEND != 0,
        names,
    }
}

pub fn decode_file(bytes: &[u8]) -> Result<FileInfo, DecodeError> {
    let parts = SyscallParts::read(bytes, "file record")?;
    let rec = &parts.rec;
    let op = FileOp::from_repr(rec.op as u8).ok_or(DecodeError::UnknownOp {
        family: "file",
        op: rec.op,
    })?;
    let syscall =
        Syscall::by_nr(rec.syscall_nr).ok_or(DecodeError::UnknownSyscall(rec.syscall_nr))?;
    let (raw1, raw2) = (c_str(parts.path1), c_str(parts.path2));
    let pf = rec.path_flags;
    let resolve = |raw: &str, base: &[u8], unknown: u32| {
        if !raw.starts_with('/') && pf & unknown != 0 {
            (raw.to_string(), true)
        } else {
            (absolute(raw, base), false)
        }
    };
    let (abs1, unres1) = resolve(&raw1, parts.base1, BASE1_UNKNOWN);
    let (abs2, unres2) = resolve(&raw2, parts.base2, BASE2_UNKNOWN);
    let flags = match syscall.def().args.implied_flags {
        0 => rec.flags,
        implied => implied,
    };
    let raw = match op {
        FileOp::Symlink => &raw2,
        _ => &raw1,
    };
    let path_raw = (!raw.is_empty()).then(|| raw.to_string());
    let (path, new_path, target, unresolved) = match op {
        FileOp::Rename | FileOp::Link => (abs1, Some(abs2), None, unres1 || unres2),
        FileOp::Symlink => (abs2, None, Some(raw1.to_string()), unres2),
        _ => (abs1, None, None, unres1),
    };
    let path_raw = path_raw.filter(|r| *r != path);
    let open = (op == FileOp::Open).then(|| open_flags(flags));
    let mode_used = matches!(op, FileOp::Chmod | FileOp::Mknod | FileOp::Mkdir)
        || open.as_ref().is_some_and(|o| o.create);
    let id = |v: u32| if v == u32::MAX { -1 } else { v as i64 };
    Ok(FileInfo {
        op,
        syscall,
        path,
        path_raw,
        new_path,
        target,
        open,
        flags,
        mode: mode_used.then(|| format!("{:04o}", rec.mode & 0o7777)),
        uid: (op == FileOp::Chown).then(|| id(rec.uid)),
        gid: (op == FileOp::Chown).then(|| id(rec.gid)),
        times: syscall.def().args.times.map(|i| {
            if rec.args[i as usize % 6] == 0 {
                FileTimes::Now
            } else {
                FileTimes::Given
            }
        }),
        result: rec.result,
        error: Errno::of_result(rec.result),
        path_truncated: pf
            & (PATH1_TRUNCATED | PATH2_TRUNCATED | BASE1_TRUNCATED | BASE2_TRUNCATED)
            != 0,
        path_unresolved: unresolved,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::test_support::*;
    use agent_ebpf::{syscall::SyscallRecord, EventKind};

    #[test]
    fn open_flags_decode() {
        let f =
            open_flags((libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC | libc::O_CLOEXEC) as u64);
        assert!(f.write && !f.read && f.create && f.truncate && !f.append);
        assert_eq!(f.names, vec!["O_WRONLY", "O_CREAT", "O_TRUNC", "O_CLOEXEC"]);
        let f = open_flags(libc::O_RDONLY as u64);
        assert!(f.read && !f.write);
        let f = open_flags((libc::O_RDWR | libc::O_APPEND) as u64);
        assert!(f.read && f.write && f.append);
        let f = open_flags((libc::O_PATH | libc::O_RDONLY) as u64);
        assert!(!f.read && !f.write, "O_PATH opens neither read nor write");
    }

    fn record(op: FileOp, nr: i64, parts: [&[u8]; 4], flags: u32) -> Vec<u8> {
        let rec = SyscallRecord {
            header: header(EventKind::File),
            op: op as u32,
            syscall_nr: nr as u32,
            args: [0; 6],
            old_ids: [0; 4],
            old_caps: [0; 3],
            result: 0,
            flags: 0,
            mode: 0o644,
            uid: u32::MAX,
            gid: 1000,
            dirfd: -100,
            dirfd2: -100,
            path_flags: flags,
            path1_len: parts[0].len() as u16,
            base1_len: parts[1].len() as u16,
            path2_len: parts[2].len() as u16,
            base2_len: parts[3].len() as u16,
        };
        let mut v = bytes_of(&rec);
        for p in parts {
            v.extend_from_slice(p);
        }
        v
    }

    #[test]
    fn rename_resolves_both_paths_against_their_bases() {
        let b = record(
            FileOp::Rename,
            libc::SYS_renameat2,
            [b"a.txt\0", b"tmp\0", b"../etc/b.txt\0", b"x\0tmp\0"],
            0,
        );
        let f = decode_file(&b).unwrap();
        assert_eq!(f.op, FileOp::Rename);
        assert_eq!(f.syscall.name(), "renameat2");
        assert_eq!(f.path, "/tmp/a.txt");
        assert_eq!(f.new_path.as_deref(), Some("/tmp/etc/b.txt"));
        assert!(!f.path_truncated && !f.path_unresolved);
    }

    #[test]
    fn symlink_keeps_target_as_written() {
        let b = record(
            FileOp::Symlink,
            libc::SYS_symlinkat,
            [b"../../etc/shadow\0", b"home\0", b"link\0", b"tmp\0"],
            0,
        );
        let f = decode_file(&b).unwrap();
        assert_eq!(f.path, "/tmp/link");
        assert_eq!(f.target.as_deref(), Some("../../etc/shadow"));
    }

    #[test]
    fn chown_ids_and_unknown_base() {
        let b = record(
            FileOp::Chown,
            libc::SYS_fchownat,
            [b"rel\0", b"", b"", b""],
            BASE1_UNKNOWN,
        );
        let f = decode_file(&b).unwrap();
        assert_eq!((f.uid, f.gid), (Some(-1), Some(1000)));
        assert_eq!(f.path, "rel");
        assert!(f.path_unresolved);
    }

    #[test]
    fn lengths_past_the_record_are_clamped() {
        let mut b = record(
            FileOp::Unlink,
            libc::SYS_unlinkat,
            [b"/x\0", b"", b"", b""],
            PATH1_TRUNCATED,
        );
        // Claim more than was sent.
        let off = std::mem::offset_of!(SyscallRecord, base2_len);
        b[off..off + 2].copy_from_slice(&4000u16.to_le_bytes());
        let f = decode_file(&b).unwrap();
        assert_eq!(f.path, "/x");
        assert!(f.path_truncated);
    }
}
