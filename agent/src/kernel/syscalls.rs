//! The syscalls the probe follows (file and control families), and where
//! each keeps its arguments.
//!
//! Numbers come from libc for the architecture the agent is built for, so
//! the table is right on x86_64 and arm64 alike; syscalls an architecture
//! lacks (arm64 has no `open` or `unlink`) are simply absent.
use agent_ebpf::{
    control::ControlOp,
    file::FileOp,
    network::{NetOp, SEND_VARIANT_SENDMMSG, SEND_VARIANT_SENDMSG, SEND_VARIANT_SENDTO},
    syscall::{
        ArgSpec, NO_ARG, SPEC_CLONE3, SPEC_FLAGS_IN_OPEN_HOW, SPEC_PATH1_FD, SPEC_PATH1_SOCKADDR,
        SPEC_PATH1_STRING, SPEC_PATH2_STRING, SPEC_STASH_ONLY,
    },
    EventKind,
};

/// One followed syscall.
#[derive(Debug, Clone, Copy)]
pub struct FollowedSyscall {
    /// The syscall's name.
    pub name: &'static str,
    /// Its tracepoint, `syscalls:sys_enter_<tracepoint>`: the name of the
    /// kernel's SYSCALL_DEFINE, which differs for a few (umount2 is
    /// `umount`).
    pub tracepoint: &'static str,
    pub nr: i64,
    pub spec: ArgSpec,
    /// Catch it through `raw_syscalls` when the kernel has no
    /// `syscalls:*` tracepoint for it (module loading: what a detection
    /// wants most precisely when modules are compiled out).
    pub raw_fallback: bool,
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
    /// path / path2 are plain strings; path is an fd.
    str1: bool,
    str2: bool,
    fd1: bool,
    sockaddr1: bool,
    /// `network::SEND_VARIANT_*` for DNS-filtered sends.
    variant: u8,
    /// Arguments only stashed (for the fork event), never emitted.
    stash: bool,
    clone3: bool,
}

fn row(name: &'static str, nr: i64, op: FileOp, a: A) -> FollowedSyscall {
    spec_row(name, nr, op as u8, EventKind::File, a)
}

fn ctl(name: &'static str, nr: i64, op: ControlOp, a: A) -> FollowedSyscall {
    spec_row(name, nr, op as u8, EventKind::Control, a)
}

fn net(name: &'static str, nr: i64, op: NetOp, a: A) -> FollowedSyscall {
    spec_row(name, nr, op as u8, EventKind::Network, a)
}

/// Socket syscalls. Addresses are copied raw at exit (accept's peer is
/// filled in by then); ints come from the record's raw args.
fn network_rows() -> Vec<FollowedSyscall> {
    use NetOp::*;
    let s = Some;
    #[allow(unused_mut)]
    let mut v = vec![
        net("socket", libc::SYS_socket, Socket, A::default()),
        net(
            "connect",
            libc::SYS_connect,
            Connect,
            A {
                path: s(1),
                sockaddr1: true,
                ..A::default()
            },
        ),
        net(
            "accept",
            libc::SYS_accept,
            Accept,
            A {
                path: s(1),
                sockaddr1: true,
                ..A::default()
            },
        ),
        net(
            "accept4",
            libc::SYS_accept4,
            Accept,
            A {
                path: s(1),
                sockaddr1: true,
                flags: s(3),
                ..A::default()
            },
        ),
        net(
            "bind",
            libc::SYS_bind,
            Bind,
            A {
                path: s(1),
                sockaddr1: true,
                ..A::default()
            },
        ),
        net("listen", libc::SYS_listen, Listen, A::default()),
        // Sent only for a socket landing on fd 0, 1 or 2 (checked in the
        // kernel at exit): the wiring of a reverse shell.
        net("dup", libc::SYS_dup, Dup, A::default()),
        // For dup2/dup3 `mode` names the target fd, checked at entry.
        net(
            "dup3",
            libc::SYS_dup3,
            Dup,
            A {
                mode: s(1),
                flags: s(2),
                ..A::default()
            },
        ),
        // Sends are kept only to port 53 (checked in the kernel at entry):
        // the payload is a DNS query.
        net(
            "sendto",
            libc::SYS_sendto,
            DnsQuery,
            A {
                path: s(4),
                sockaddr1: true,
                variant: SEND_VARIANT_SENDTO,
                ..A::default()
            },
        ),
        net(
            "sendmsg",
            libc::SYS_sendmsg,
            DnsQuery,
            A {
                variant: SEND_VARIANT_SENDMSG,
                ..A::default()
            },
        ),
        net(
            "sendmmsg",
            libc::SYS_sendmmsg,
            DnsQuery,
            A {
                variant: SEND_VARIANT_SENDMMSG,
                ..A::default()
            },
        ),
    ];
    // arm64 has only dup3.
    #[cfg(target_arch = "x86_64")]
    v.push(net(
        "dup2",
        libc::SYS_dup2,
        Dup,
        A {
            mode: s(1),
            ..A::default()
        },
    ));
    v
}

fn spec_row(name: &'static str, nr: i64, op: u8, family: EventKind, a: A) -> FollowedSyscall {
    let p = |o: Option<u8>| o.unwrap_or(NO_ARG);
    let mut spec_flags = 0;
    for (on, bit) in [
        (a.open_how, SPEC_FLAGS_IN_OPEN_HOW),
        (a.str1, SPEC_PATH1_STRING),
        (a.str2, SPEC_PATH2_STRING),
        (a.fd1, SPEC_PATH1_FD),
        (a.sockaddr1, SPEC_PATH1_SOCKADDR),
        (a.stash, SPEC_STASH_ONLY),
        (a.clone3, SPEC_CLONE3),
    ] {
        if on {
            spec_flags |= bit;
        }
    }
    FollowedSyscall {
        name,
        tracepoint: if name == "umount2" { "umount" } else { name },
        nr,
        raw_fallback: matches!(name, "init_module" | "finit_module" | "delete_module"),
        spec: ArgSpec {
            op,
            dirfd: p(a.dirfd),
            path: p(a.path),
            dirfd2: p(a.dirfd2),
            path2: p(a.path2),
            flags: p(a.flags),
            mode: p(a.mode),
            uid: p(a.uid),
            gid: p(a.gid),
            spec_flags,
            family: family as u8,
            variant: a.variant,
        },
    }
}

/// Every syscall the probe follows on this architecture.
pub fn followed() -> Vec<FollowedSyscall> {
    let mut v = file_rows();
    v.extend(control_rows());
    v.extend(network_rows());
    v
}

/// Privilege, process-control and kernel-state syscalls. Integer
/// arguments are read from the record's raw args by the decoder.
fn control_rows() -> Vec<FollowedSyscall> {
    use ControlOp::*;
    let s = Some;
    let none = A::default();
    let mut v = vec![
        ctl("setuid", libc::SYS_setuid, SetUid, none),
        ctl("setreuid", libc::SYS_setreuid, SetUid, none),
        ctl("setresuid", libc::SYS_setresuid, SetUid, none),
        ctl("setfsuid", libc::SYS_setfsuid, SetUid, none),
        ctl("setgid", libc::SYS_setgid, SetGid, none),
        ctl("setregid", libc::SYS_setregid, SetGid, none),
        ctl("setresgid", libc::SYS_setresgid, SetGid, none),
        ctl("setfsgid", libc::SYS_setfsgid, SetGid, none),
        ctl("ptrace", libc::SYS_ptrace, Ptrace, none),
        ctl(
            "memfd_create",
            libc::SYS_memfd_create,
            MemfdCreate,
            A {
                path: s(0),
                str1: true,
                flags: s(1),
                ..A::default()
            },
        ),
        ctl(
            "init_module",
            libc::SYS_init_module,
            ModuleLoad,
            A {
                path2: s(2),
                str2: true,
                ..A::default()
            },
        ),
        ctl(
            "finit_module",
            libc::SYS_finit_module,
            ModuleLoad,
            A {
                path: s(0),
                fd1: true,
                path2: s(1),
                str2: true,
                flags: s(2),
                ..A::default()
            },
        ),
        ctl(
            "delete_module",
            libc::SYS_delete_module,
            ModuleUnload,
            A {
                path: s(0),
                str1: true,
                flags: s(1),
                ..A::default()
            },
        ),
        ctl("bpf", libc::SYS_bpf, Bpf, none),
        // mount(source, target, fstype, flags, data): the target is
        // resolved; the fstype is kept as a string.
        ctl(
            "mount",
            libc::SYS_mount,
            Mount,
            A {
                path: s(1),
                path2: s(2),
                str2: true,
                flags: s(3),
                ..A::default()
            },
        ),
        ctl(
            "umount2",
            libc::SYS_umount2,
            Umount,
            A {
                path: s(0),
                flags: s(1),
                ..A::default()
            },
        ),
        ctl(
            "unshare",
            libc::SYS_unshare,
            Unshare,
            A {
                flags: s(0),
                ..A::default()
            },
        ),
        // The nsfs file behind the fd has no name a dentry walk can see
        // (nsfs names dentries on the fly), so only the type is reported.
        ctl(
            "setns",
            libc::SYS_setns,
            Setns,
            A {
                flags: s(1),
                ..A::default()
            },
        ),
        ctl(
            "chroot",
            libc::SYS_chroot,
            Chroot,
            A {
                path: s(0),
                ..A::default()
            },
        ),
        // prctl(option, arg2): arg2 is the new name for PR_SET_NAME.
        ctl(
            "prctl",
            libc::SYS_prctl,
            Prctl,
            A {
                path: s(1),
                str1: true,
                ..A::default()
            },
        ),
        // capset(header, data): the new sets, copied raw (2 x 3 u32).
        ctl(
            "capset",
            libc::SYS_capset,
            Capset,
            A {
                path: s(1),
                sockaddr1: true,
                ..A::default()
            },
        ),
        // Stashed so the fork event can carry the clone flags; never emitted.
        ctl(
            "clone",
            libc::SYS_clone,
            Clone,
            A {
                stash: true,
                ..A::default()
            },
        ),
        ctl(
            "clone3",
            libc::SYS_clone3,
            Clone,
            A {
                stash: true,
                clone3: true,
                ..A::default()
            },
        ),
    ];
    v.retain(|r| r.nr >= 0);
    v
}

fn file_rows() -> Vec<FollowedSyscall> {
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
        // Followed so the process table knows each process's cwd.
        row(
            "chdir",
            libc::SYS_chdir,
            Chdir,
            A {
                path: s(0),
                ..A::default()
            },
        ),
        row(
            "fchdir",
            libc::SYS_fchdir,
            Chdir,
            A {
                path: s(0),
                fd1: true,
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

/// Whether the probe follows the syscall `name` on this architecture.
pub fn is_followed(name: &str) -> bool {
    static NAMES: std::sync::OnceLock<std::collections::HashSet<&'static str>> =
        std::sync::OnceLock::new();
    NAMES
        .get_or_init(|| followed().iter().map(|s| s.name).collect())
        .contains(name)
}

/// Name of a followed syscall by number.
pub fn name_of(nr: u32) -> Option<&'static str> {
    followed()
        .into_iter()
        .find(|s| s.nr == nr as i64)
        .map(|s| s.name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_consistent() {
        let t = followed();
        let mut nrs: Vec<i64> = t.iter().map(|s| s.nr).collect();
        nrs.sort();
        nrs.dedup();
        assert_eq!(nrs.len(), t.len(), "no syscall number twice");
        for s in &t {
            assert!(
                s.nr >= 0 && s.nr < agent_ebpf::syscall::MAX_SYSCALL_NR as i64,
                "{}",
                s.name
            );
            if s.spec.family == EventKind::File as u8 {
                assert!(s.spec.path != NO_ARG, "{} has a path", s.name);
            }
            if s.spec.op == FileOp::Rename as u8 || s.spec.op == FileOp::Link as u8 {
                assert!(s.spec.path2 != NO_ARG, "{} has a second path", s.name);
            }
        }
        assert_eq!(name_of(libc::SYS_openat as u32), Some("openat"));
    }
}
