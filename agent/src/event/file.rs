//! Decoding of the file family: open, unlink, rmdir, rename, chmod, chown,
//! link, symlink, mknod.
//!
//! The probe sends each path as the process wrote it, and for a relative
//! path the components of the directory it is relative to (cwd or dirfd),
//! leaf first. Here they become one absolute path.
use agent_ebpf::{
    file::FileOp,
    syscall::{
        SyscallRecord, BASE1_TRUNCATED, BASE1_UNKNOWN, BASE2_TRUNCATED, BASE2_UNKNOWN,
        PATH1_TRUNCATED, PATH2_TRUNCATED,
    },
};
use serde::Serialize;

use super::{c_str, read_record, DecodeError};
use crate::kernel::syscalls;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct FileInfo {
    /// open, unlink, rmdir, rename, chmod, chown, link, symlink, mknod.
    #[serde(deserialize_with = "crate::event::intern::one")]
    pub op: crate::event::intern::Name,
    /// The syscall, e.g. `openat`.
    pub syscall: String,
    /// The file acted on, absolute. For rename and link: the existing
    /// file; for symlink: the link created.
    pub path: String,
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
    /// The syscall's return value: an fd or 0 on success, -errno on failure.
    pub result: i64,
    /// Error name on failure, e.g. `ENOENT`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// A path was longer than the probe keeps, or its directory was deeper.
    pub path_truncated: bool,
    /// A relative path whose directory could not be resolved is reported as
    /// given.
    pub path_unresolved: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct OpenFlags {
    pub read: bool,
    pub write: bool,
    pub create: bool,
    pub truncate: bool,
    pub append: bool,
    /// Every O_* flag set, by name.
    #[serde(deserialize_with = "crate::event::intern::many")]
    pub names: Vec<&'static str>,
}

const OPEN_FLAG_NAMES: &[(i32, &str)] = &[
    (libc::O_CREAT, "O_CREAT"),
    (libc::O_EXCL, "O_EXCL"),
    (libc::O_NOCTTY, "O_NOCTTY"),
    (libc::O_TRUNC, "O_TRUNC"),
    (libc::O_APPEND, "O_APPEND"),
    (libc::O_NONBLOCK, "O_NONBLOCK"),
    (libc::O_DSYNC, "O_DSYNC"),
    (libc::O_DIRECT, "O_DIRECT"),
    (libc::O_LARGEFILE, "O_LARGEFILE"),
    (libc::O_DIRECTORY, "O_DIRECTORY"),
    (libc::O_NOFOLLOW, "O_NOFOLLOW"),
    (libc::O_NOATIME, "O_NOATIME"),
    (libc::O_CLOEXEC, "O_CLOEXEC"),
    (libc::O_PATH, "O_PATH"),
];

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
    for (bit, name) in OPEN_FLAG_NAMES {
        if f & bit != 0 && !(tmpfile && *bit == libc::O_DIRECTORY) {
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

/// `-errno` as a name.
pub fn errno_name(result: i64) -> Option<String> {
    if result >= 0 {
        return None;
    }
    let e = (-result) as i32;
    let name = match e {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::EINTR => "EINTR",
        libc::EIO => "EIO",
        libc::EBADF => "EBADF",
        libc::EAGAIN => "EAGAIN",
        libc::ENOMEM => "ENOMEM",
        libc::EACCES => "EACCES",
        libc::EFAULT => "EFAULT",
        libc::EBUSY => "EBUSY",
        libc::EEXIST => "EEXIST",
        libc::EXDEV => "EXDEV",
        libc::ENOTDIR => "ENOTDIR",
        libc::EISDIR => "EISDIR",
        libc::EINVAL => "EINVAL",
        libc::EMFILE => "EMFILE",
        libc::ETXTBSY => "ETXTBSY",
        libc::ENOSPC => "ENOSPC",
        libc::EROFS => "EROFS",
        libc::EMLINK => "EMLINK",
        libc::ENAMETOOLONG => "ENAMETOOLONG",
        libc::ENOTEMPTY => "ENOTEMPTY",
        libc::ELOOP => "ELOOP",
        libc::ENOSYS => "ENOSYS",
        libc::ENOEXEC => "ENOEXEC",
        libc::ESRCH => "ESRCH",
        libc::ECONNREFUSED => "ECONNREFUSED",
        libc::EINPROGRESS => "EINPROGRESS",
        libc::ENETUNREACH => "ENETUNREACH",
        libc::EHOSTUNREACH => "EHOSTUNREACH",
        libc::ETIMEDOUT => "ETIMEDOUT",
        libc::EADDRINUSE => "EADDRINUSE",
        libc::EADDRNOTAVAIL => "EADDRNOTAVAIL",
        libc::EAFNOSUPPORT => "EAFNOSUPPORT",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        _ => return Some(format!("errno {e}")),
    };
    Some(name.to_string())
}

/// Joins `raw` onto the directory given as leaf-first NUL-separated
/// components and normalizes `.` and `..` lexically.
pub fn absolute(raw: &str, base_components: &[u8]) -> String {
    let mut parts: Vec<&str> = Vec::new();
    if !raw.starts_with('/') {
        let comps: Vec<&[u8]> = base_components
            .split(|&b| b == 0)
            .filter(|c| !c.is_empty() && *c != b"/")
            .collect();
        // A file on an internal filesystem (nsfs, pipefs, anon_inode) has
        // only its own name, e.g. `uts:[4026531838]`, as d_path reports it.
        if raw.is_empty() && comps.len() == 1 && comps[0].windows(2).any(|w| w == b":[") {
            return String::from_utf8_lossy(comps[0]).into_owned();
        }
        for c in comps.iter().rev() {
            parts.push(std::str::from_utf8(c).unwrap_or("?"));
        }
    }
    let mut out: Vec<&str> = Vec::new();
    for p in parts.into_iter().chain(raw.split('/')) {
        match p {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            p => out.push(p),
        }
    }
    format!("/{}", out.join("/"))
}

/// Splits the tail into its four parts, clamped to what is there.
pub(crate) fn tail_parts(tail: &[u8], lens: [u16; 4]) -> [&[u8]; 4] {
    let mut out: [&[u8]; 4] = [&[]; 4];
    let mut at = 0usize;
    for (i, len) in lens.iter().enumerate() {
        let end = (at + *len as usize).min(tail.len());
        out[i] = &tail[at.min(tail.len())..end];
        at = end;
    }
    out
}

fn op_name(op: FileOp) -> &'static str {
    match op {
        FileOp::Open => "open",
        FileOp::Unlink => "unlink",
        FileOp::Rmdir => "rmdir",
        FileOp::Rename => "rename",
        FileOp::Chmod => "chmod",
        FileOp::Chown => "chown",
        FileOp::Link => "link",
        FileOp::Symlink => "symlink",
        FileOp::Mknod => "mknod",
        FileOp::Chdir => "chdir",
    }
}

pub fn decode_file(bytes: &[u8]) -> Result<FileInfo, DecodeError> {
    let rec: SyscallRecord = read_record(bytes, "file record")?;
    let op = FileOp::from_u8(rec.op as u8).ok_or(DecodeError::UnknownKind(rec.op))?;
    let tail = &bytes[std::mem::size_of::<SyscallRecord>()..];
    let [p1, b1, p2, b2] = tail_parts(
        tail,
        [rec.path1_len, rec.base1_len, rec.path2_len, rec.base2_len],
    );
    let (raw1, raw2) = (c_str(p1), c_str(p2));
    let pf = rec.path_flags;
    let resolve = |raw: &str, base: &[u8], unknown: u32| {
        if !raw.starts_with('/') && pf & unknown != 0 {
            (raw.to_string(), true)
        } else {
            (absolute(raw, base), false)
        }
    };
    let (abs1, unres1) = resolve(&raw1, b1, BASE1_UNKNOWN);
    let (abs2, unres2) = resolve(&raw2, b2, BASE2_UNKNOWN);
    let syscall = syscalls::name_of(rec.syscall_nr)
        .map(str::to_string)
        .unwrap_or_else(|| format!("syscall_{}", rec.syscall_nr));
    let mut flags = rec.flags;
    if syscall == "creat" {
        flags = (libc::O_CREAT | libc::O_WRONLY | libc::O_TRUNC) as u64;
    }
    let (path, new_path, target, unresolved) = match op {
        FileOp::Rename | FileOp::Link => (abs1, Some(abs2), None, unres1 || unres2),
        FileOp::Symlink => (abs2, None, Some(raw1), unres2),
        _ => (abs1, None, None, unres1),
    };
    let open = (op == FileOp::Open).then(|| open_flags(flags));
    let mode_used =
        matches!(op, FileOp::Chmod | FileOp::Mknod) || open.as_ref().is_some_and(|o| o.create);
    let id = |v: u32| if v == u32::MAX { -1 } else { v as i64 };
    Ok(FileInfo {
        op: op_name(op),
        syscall,
        path,
        new_path,
        target,
        open,
        flags,
        mode: mode_used.then(|| format!("{:04o}", rec.mode & 0o7777)),
        uid: (op == FileOp::Chown).then(|| id(rec.uid)),
        gid: (op == FileOp::Chown).then(|| id(rec.gid)),
        result: rec.result,
        error: errno_name(rec.result),
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
    use agent_ebpf::EventKind;

    #[test]
    fn absolute_paths_from_components() {
        assert_eq!(absolute("passwd", b"etc\0"), "/etc/passwd");
        assert_eq!(absolute("x", b""), "/x");
        assert_eq!(absolute("../shadow", b"ssh\0etc\0"), "/etc/shadow");
        assert_eq!(absolute("./a/./b/", b"tmp\0"), "/tmp/a/b");
        assert_eq!(absolute("/etc//hosts", b"ignored\0"), "/etc/hosts");
        assert_eq!(absolute("../../../..", b"a\0"), "/");
        assert_eq!(absolute("", b"uts:[4026531838]\0"), "uts:[4026531838]");
        assert_eq!(
            absolute("x", b"/\0"),
            "/x",
            "the real root's own name is skipped"
        );
    }

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

    #[test]
    fn errno_names() {
        assert_eq!(errno_name(3), None);
        assert_eq!(errno_name(-2).as_deref(), Some("ENOENT"));
        assert_eq!(errno_name(-9999).as_deref(), Some("errno 9999"));
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
        assert_eq!(f.op, "rename");
        assert_eq!(f.syscall, "renameat2");
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
