//! The file syscalls the probe follows, and where each keeps its arguments.
//!
//! Numbers come from libc for the architecture the agent is built for, so
//! the table is right on x86_64 and arm64 alike; syscalls an architecture
//! lacks (arm64 has no `open` or `unlink`) are simply absent.
use agent_ebpf::file::{ArgSpec, FileOp, NO_ARG, SPEC_FLAGS_IN_OPEN_HOW};

/// One followed syscall.
#[derive(Debug, Clone, Copy)]
pub struct FileSyscall {
    /// Name as in `syscalls:sys_enter_<name>`.
    pub name: &'static str,
    pub nr: i64,
    pub spec: ArgSpec,
}

/// Argument positions, for readability of the table below.
#[derive(Clone, Copy, Default)]
struct A {
    dirfd: Option<u8>,
    path: Option<u8>,
    dirfd2: Option<u8>,
    path2: Option<u8>,
    flags: Option<u8>,
    mode: Option<u8>,
    uid: Option<u8>,
    gid: Option<u8>,
    open_how: bool,
}

fn row(name: &'static str, nr: i64, op: FileOp, a: A) -> FileSyscall {
    let p = |o: Option<u8>| o.unwrap_or(NO_ARG);
    FileSyscall {
        name,
        nr,
        spec: ArgSpec {
            op: op as u8,
            dirfd: p(a.dirfd),
            path: p(a.path),
            dirfd2: p(a.dirfd2),
            path2: p(a.path2),
            flags: p(a.flags),
            mode: p(a.mode),
            uid: p(a.uid),
            gid: p(a.gid),
            spec_flags: if a.open_how {
                SPEC_FLAGS_IN_OPEN_HOW
            } else {
                0
            },
            _pad: [0; 2],
        },
    }
}

/// Every file syscall the probe follows on this architecture.
pub fn file_syscalls() -> Vec<FileSyscall> {
    use FileOp::*;
    let s = Some;
    let mut v = vec![
        row(
            "openat",
            libc::SYS_openat,
            Open,
            A {
                dirfd: s(0),
                path: s(1),
                flags: s(2),
                mode: s(3),
                ..A::default()
            },
        ),
        row(
            "openat2",
            libc::SYS_openat2,
            Open,
            A {
                dirfd: s(0),
                path: s(1),
                flags: s(2),
                open_how: true,
                ..A::default()
            },
        ),
        row(
            "unlinkat",
            libc::SYS_unlinkat,
            Unlink,
            A {
                dirfd: s(0),
                path: s(1),
                flags: s(2),
                ..A::default()
            },
        ),
        row(
            "renameat",
            libc::SYS_renameat,
            Rename,
            A {
                dirfd: s(0),
                path: s(1),
                dirfd2: s(2),
                path2: s(3),
                ..A::default()
            },
        ),
        row(
            "renameat2",
            libc::SYS_renameat2,
            Rename,
            A {
                dirfd: s(0),
                path: s(1),
                dirfd2: s(2),
                path2: s(3),
                flags: s(4),
                ..A::default()
            },
        ),
        row(
            "fchmodat",
            libc::SYS_fchmodat,
            Chmod,
            A {
                dirfd: s(0),
                path: s(1),
                mode: s(2),
                ..A::default()
            },
        ),
        row(
            "fchownat",
            libc::SYS_fchownat,
            Chown,
            A {
                dirfd: s(0),
                path: s(1),
                uid: s(2),
                gid: s(3),
                flags: s(4),
                ..A::default()
            },
        ),
        row(
            "linkat",
            libc::SYS_linkat,
            Link,
            A {
                dirfd: s(0),
                path: s(1),
                dirfd2: s(2),
                path2: s(3),
                flags: s(4),
                ..A::default()
            },
        ),
        // symlinkat(target, newdirfd, linkpath): the target is stored as
        // written (never resolved); the link is path2.
        row(
            "symlinkat",
            libc::SYS_symlinkat,
            Symlink,
            A {
                path: s(0),
                dirfd2: s(1),
                path2: s(2),
                ..A::default()
            },
        ),
        row(
            "mknodat",
            libc::SYS_mknodat,
            Mknod,
            A {
                dirfd: s(0),
                path: s(1),
                mode: s(2),
                ..A::default()
            },
        ),
    ];
    #[cfg(target_arch = "x86_64")]
    v.extend([
        row(
            "open",
            libc::SYS_open,
            Open,
            A {
                path: s(0),
                flags: s(1),
                mode: s(2),
                ..A::default()
            },
        ),
        row(
            "creat",
            libc::SYS_creat,
            Open,
            A {
                path: s(0),
                mode: s(1),
                ..A::default()
            },
        ),
        row(
            "unlink",
            libc::SYS_unlink,
            Unlink,
            A {
                path: s(0),
                ..A::default()
            },
        ),
        row(
            "rmdir",
            libc::SYS_rmdir,
            Rmdir,
            A {
                path: s(0),
                ..A::default()
            },
        ),
        row(
            "rename",
            libc::SYS_rename,
            Rename,
            A {
                path: s(0),
                path2: s(1),
                ..A::default()
            },
        ),
        row(
            "chmod",
            libc::SYS_chmod,
            Chmod,
            A {
                path: s(0),
                mode: s(1),
                ..A::default()
            },
        ),
        row(
            "chown",
            libc::SYS_chown,
            Chown,
            A {
                path: s(0),
                uid: s(1),
                gid: s(2),
                ..A::default()
            },
        ),
        row(
            "lchown",
            libc::SYS_lchown,
            Chown,
            A {
                path: s(0),
                uid: s(1),
                gid: s(2),
                ..A::default()
            },
        ),
        row(
            "link",
            libc::SYS_link,
            Link,
            A {
                path: s(0),
                path2: s(1),
                ..A::default()
            },
        ),
        row(
            "symlink",
            libc::SYS_symlink,
            Symlink,
            A {
                path: s(0),
                path2: s(1),
                ..A::default()
            },
        ),
        row(
            "mknod",
            libc::SYS_mknod,
            Mknod,
            A {
                path: s(0),
                mode: s(1),
                ..A::default()
            },
        ),
        row(
            "fchmodat2",
            libc::SYS_fchmodat2,
            Chmod,
            A {
                dirfd: s(0),
                path: s(1),
                mode: s(2),
                flags: s(3),
                ..A::default()
            },
        ),
    ]);
    v
}

/// Name of a followed syscall by number.
pub fn name_of(nr: u32) -> Option<&'static str> {
    file_syscalls()
        .into_iter()
        .find(|s| s.nr == nr as i64)
        .map(|s| s.name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_consistent() {
        let t = file_syscalls();
        let mut nrs: Vec<i64> = t.iter().map(|s| s.nr).collect();
        nrs.sort();
        nrs.dedup();
        assert_eq!(nrs.len(), t.len(), "no syscall number twice");
        for s in &t {
            assert!(
                s.nr >= 0 && s.nr < agent_ebpf::file::MAX_SYSCALL_NR as i64,
                "{}",
                s.name
            );
            assert!(s.spec.path != NO_ARG, "{} has a path", s.name);
            if s.spec.op == FileOp::Rename as u8 || s.spec.op == FileOp::Link as u8 {
                assert!(s.spec.path2 != NO_ARG, "{} has a second path", s.name);
            }
        }
        assert_eq!(name_of(libc::SYS_openat as u32), Some("openat"));
    }
}
