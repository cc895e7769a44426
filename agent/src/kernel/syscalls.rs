//! The syscalls the probe follows, as data: one line per syscall with its
//! number on this architecture, what it does, where its arguments are, and
//! its special cases as columns.
//!
//! The probe's enter and exit programs read each row's [`ArgSpec`] from a
//! map, so following a new syscall is a line here (plus its decoding in
//! `event/` and its fields in `rules/fields.rs`), not new kernel code.
//! Numbers come from libc for the architecture the agent is built for, so
//! the table is right on x86_64 and arm64 alike; syscalls an architecture
//! lacks (arm64 has no `open` or `unlink`) are simply absent. Decoded events
//! name their syscall with a [`Syscall`], an index into this table.
use std::fmt;

use agent_ebpf::{
    control::ControlOp,
    file::FileOp,
    network::{NetOp, SEND_VARIANT_SENDMMSG, SEND_VARIANT_SENDMSG, SEND_VARIANT_SENDTO},
    syscall::{
        ArgSpec, HOOK_AT_ENTER, MAX_SYSCALL_NR, SPEC2_NULL_PATH_IS_DIRFD, SPEC_CLONE3,
        SPEC_FLAGS_IN_OPEN_HOW, SPEC_PATH1_FD, SPEC_PATH1_SOCKADDR, SPEC_PATH1_STRING,
        SPEC_PATH2_STRING, SPEC_STASH_ONLY,
    },
    EventKind,
};
use libc::*;

/// What a syscall does: its family and operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    File(FileOp),
    Control(ControlOp),
    Network(NetOp),
}

impl Op {
    pub const fn family(self) -> EventKind {
        match self {
            Op::File(_) => EventKind::File,
            Op::Control(_) => EventKind::Control,
            Op::Network(_) => EventKind::Network,
        }
    }

    const fn code(self) -> u8 {
        match self {
            Op::File(o) => o as u8,
            Op::Control(o) => o as u8,
            Op::Network(o) => o as u8,
        }
    }
}

/// How a setuid/setgid-family syscall names the ids it sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdArgs {
    /// Not an id-setting syscall.
    None,
    /// `setuid(id)`: real, effective and saved (for a privileged caller).
    All,
    /// `setreuid(real, effective)`.
    RealEffective,
    /// `setresuid(real, effective, saved)`.
    RealEffectiveSaved,
    /// `setfsuid(fs)`.
    Fs,
}

/// Where a syscall keeps what its event needs: argument positions (0..6)
/// and how to read them. Built with the `const fn` setters below so each
/// row of [`TABLE`] reads as one line.
#[derive(Debug, Clone, Copy)]
pub struct Args {
    spec: ArgSpec,
    /// Flags the syscall implies rather than takes (`creat` is
    /// `open(O_CREAT|O_WRONLY|O_TRUNC)`).
    pub implied_flags: u64,
    pub ids: IdArgs,
    /// The state before the call matters (the credentials a setuid
    /// changes, clone's flags for the fork event): caught at entry too.
    pub at_entry: bool,
    /// utime family: the argument that points to the new times (NULL:
    /// "now"), read from the record's raw arguments.
    pub times: Option<u8>,
}

/// No arguments recorded.
pub const fn args() -> Args {
    Args {
        spec: ArgSpec::NONE,
        implied_flags: 0,
        ids: IdArgs::None,
        at_entry: false,
        times: None,
    }
}

impl Args {
    pub const fn dirfd(mut self, i: u8) -> Args {
        self.spec.dirfd = i;
        self
    }
    /// A file path, resolved against the dirfd (or cwd).
    pub const fn path(mut self, i: u8) -> Args {
        self.spec.path = i;
        self
    }
    /// A plain string (a name, not a file path): never resolved.
    pub const fn name(mut self, i: u8) -> Args {
        self.spec.path = i;
        self.spec.spec_flags |= SPEC_PATH1_STRING;
        self
    }
    /// A NULL path names the dirfd's file (utimensat as futimens calls it).
    pub const fn null_path_is_dirfd(mut self) -> Args {
        self.spec.spec_flags2 |= SPEC2_NULL_PATH_IS_DIRFD;
        self
    }
    /// The pointer to new times (utime family): NULL means "now".
    pub const fn times(mut self, i: u8) -> Args {
        self.times = Some(i);
        self
    }
    /// An fd whose file's path is recorded.
    pub const fn fd_path(mut self, i: u8) -> Args {
        self.spec.path = i;
        self.spec.spec_flags |= SPEC_PATH1_FD;
        self
    }
    /// A user buffer copied raw (a `struct sockaddr`, capset's data).
    pub const fn raw(mut self, i: u8) -> Args {
        self.spec.path = i;
        self.spec.spec_flags |= SPEC_PATH1_SOCKADDR;
        self
    }
    pub const fn dirfd2(mut self, i: u8) -> Args {
        self.spec.dirfd2 = i;
        self
    }
    pub const fn path2(mut self, i: u8) -> Args {
        self.spec.path2 = i;
        self
    }
    /// The second path is a plain string (fstype, module parameters).
    pub const fn name2(mut self, i: u8) -> Args {
        self.spec.path2 = i;
        self.spec.spec_flags |= SPEC_PATH2_STRING;
        self
    }
    pub const fn flags(mut self, i: u8) -> Args {
        self.spec.flags = i;
        self
    }
    /// The flags are the first field of a `struct open_how *` (openat2).
    pub const fn open_how(mut self, i: u8) -> Args {
        self.spec.flags = i;
        self.spec.spec_flags |= SPEC_FLAGS_IN_OPEN_HOW;
        self
    }
    pub const fn implied_flags(mut self, flags: c_int) -> Args {
        self.implied_flags = flags as u64;
        self
    }
    /// The mode, or for dup2/dup3 the target fd (checked at entry).
    pub const fn mode(mut self, i: u8) -> Args {
        self.spec.mode = i;
        self
    }
    pub const fn owner(mut self, uid: u8, gid: u8) -> Args {
        self.spec.uid = uid;
        self.spec.gid = gid;
        self
    }
    /// An id-setting syscall: the ids before the call are kept too.
    pub const fn ids(mut self, ids: IdArgs) -> Args {
        self.ids = ids;
        self.at_entry = true;
        self
    }
    /// Caught at entry too: the state before the call matters.
    pub const fn at_entry(mut self) -> Args {
        self.at_entry = true;
        self
    }
    /// A send followed only to port 53 (checked at entry): a DNS query.
    pub const fn dns_send(mut self, variant: u8) -> Args {
        self.spec.variant = variant;
        self
    }
    /// Arguments kept for the fork event (clone flags), never emitted.
    pub const fn stash(mut self) -> Args {
        self.spec.spec_flags |= SPEC_STASH_ONLY;
        self.at_entry = true;
        self
    }
    /// With `stash`: the flags are in a user `struct clone_args`.
    pub const fn clone3(mut self) -> Args {
        self.spec.spec_flags |= SPEC_CLONE3;
        self
    }
}

/// One followed syscall.
#[derive(Debug, Clone, Copy)]
pub struct SyscallDef {
    pub name: &'static str,
    pub nr: u32,
    pub op: Op,
    pub args: Args,
    /// Its tracepoint, `syscalls:sys_{enter,exit}_<tracepoint>`: the name of
    /// the kernel's SYSCALL_DEFINE, which differs for a few.
    pub tracepoint: &'static str,
    /// Catch it through the raw `sys_enter`/`sys_exit` tracepoints when the
    /// kernel has no `syscalls:*` tracepoint for it (module loading: what a
    /// detection wants most precisely when modules are compiled out).
    pub raw_fallback: bool,
}

const fn def(name: &'static str, nr: c_long, op: Op, args: Args) -> SyscallDef {
    SyscallDef {
        name,
        nr: nr as u32,
        op,
        args,
        tracepoint: name,
        raw_fallback: false,
    }
}

impl SyscallDef {
    const fn tracepoint(mut self, tp: &'static str) -> SyscallDef {
        self.tracepoint = tp;
        self
    }

    const fn raw_fallback(mut self) -> SyscallDef {
        self.raw_fallback = true;
        self
    }

    /// What the probe is told about this syscall.
    pub const fn spec(&self) -> ArgSpec {
        let mut s = self.args.spec;
        s.op = self.op.code();
        s.family = self.op.family() as u8;
        if self.args.at_entry {
            s.hook |= HOOK_AT_ENTER;
        }
        s
    }
}

use self::{IdArgs as Id, Op::*};
use agent_ebpf::{control::ControlOp::*, file::FileOp::*, network::NetOp::*};

/// Every syscall the probe follows on this architecture.
#[rustfmt::skip]
pub const TABLE: &[SyscallDef] = &[
    // File family: paths resolved to absolute ones in the kernel.
    def("openat",        SYS_openat,        File(Open),    args().dirfd(0).path(1).flags(2).mode(3)),
    def("openat2",       SYS_openat2,       File(Open),    args().dirfd(0).path(1).open_how(2)),
    def("unlinkat",      SYS_unlinkat,      File(Unlink),  args().dirfd(0).path(1).flags(2)),
    def("renameat",      SYS_renameat,      File(Rename),  args().dirfd(0).path(1).dirfd2(2).path2(3)),
    def("renameat2",     SYS_renameat2,     File(Rename),  args().dirfd(0).path(1).dirfd2(2).path2(3).flags(4)),
    // Followed so the process table knows each process's cwd.
    def("chdir",         SYS_chdir,         File(Chdir),   args().path(0)),
    def("fchdir",        SYS_fchdir,        File(Chdir),   args().fd_path(0)),
    def("fchmodat",      SYS_fchmodat,      File(Chmod),   args().dirfd(0).path(1).mode(2)),
    def("fchownat",      SYS_fchownat,      File(Chown),   args().dirfd(0).path(1).owner(2, 3).flags(4)),
    def("linkat",        SYS_linkat,        File(Link),    args().dirfd(0).path(1).dirfd2(2).path2(3).flags(4)),
    // symlinkat(target, newdirfd, linkpath): the target is kept as written.
    def("symlinkat",     SYS_symlinkat,     File(Symlink), args().name(0).dirfd2(1).path2(2)),
    def("mknodat",       SYS_mknodat,       File(Mknod),   args().dirfd(0).path(1).mode(2)),
    def("mkdirat",       SYS_mkdirat,       File(Mkdir),   args().dirfd(0).path(1).mode(2)),
    // utimensat(dirfd, path, times, flags); futimens(fd, times) is
    // utimensat(fd, NULL, times, 0).
    def("utimensat",     SYS_utimensat,     File(Utime),   args().dirfd(0).path(1).times(2).flags(3).null_path_is_dirfd()),
    #[cfg(target_arch = "x86_64")] def("open",    SYS_open,    File(Open),    args().path(0).flags(1).mode(2)),
    #[cfg(target_arch = "x86_64")] def("creat",   SYS_creat,   File(Open),    args().path(0).mode(1).implied_flags(O_CREAT | O_WRONLY | O_TRUNC)),
    #[cfg(target_arch = "x86_64")] def("unlink",  SYS_unlink,  File(Unlink),  args().path(0)),
    #[cfg(target_arch = "x86_64")] def("rmdir",   SYS_rmdir,   File(Rmdir),   args().path(0)),
    #[cfg(target_arch = "x86_64")] def("rename",  SYS_rename,  File(Rename),  args().path(0).path2(1)),
    #[cfg(target_arch = "x86_64")] def("chmod",   SYS_chmod,   File(Chmod),   args().path(0).mode(1)),
    #[cfg(target_arch = "x86_64")] def("chown",   SYS_chown,   File(Chown),   args().path(0).owner(1, 2)),
    #[cfg(target_arch = "x86_64")] def("lchown",  SYS_lchown,  File(Chown),   args().path(0).owner(1, 2)),
    #[cfg(target_arch = "x86_64")] def("link",    SYS_link,    File(Link),    args().path(0).path2(1)),
    #[cfg(target_arch = "x86_64")] def("symlink", SYS_symlink, File(Symlink), args().name(0).path2(1)),
    #[cfg(target_arch = "x86_64")] def("mknod",   SYS_mknod,   File(Mknod),   args().path(0).mode(1)),
    #[cfg(target_arch = "x86_64")] def("mkdir",   SYS_mkdir,   File(Mkdir),   args().path(0).mode(1)),
    #[cfg(target_arch = "x86_64")] def("utimes",  SYS_utimes,  File(Utime),   args().path(0).times(1)),
    #[cfg(target_arch = "x86_64")] def("utime",   SYS_utime,   File(Utime),   args().path(0).times(1)),
    #[cfg(target_arch = "x86_64")] def("futimesat", SYS_futimesat, File(Utime), args().dirfd(0).path(1).times(2)),
    #[cfg(target_arch = "x86_64")] def("fchmodat2", SYS_fchmodat2, File(Chmod), args().dirfd(0).path(1).mode(2).flags(3)),

    // Control family: integer arguments are read from the record's raw args.
    def("setuid",        SYS_setuid,        Control(SetUid),       args().ids(Id::All)),
    def("setreuid",      SYS_setreuid,      Control(SetUid),       args().ids(Id::RealEffective)),
    def("setresuid",     SYS_setresuid,     Control(SetUid),       args().ids(Id::RealEffectiveSaved)),
    def("setfsuid",      SYS_setfsuid,      Control(SetUid),       args().ids(Id::Fs)),
    def("setgid",        SYS_setgid,        Control(SetGid),       args().ids(Id::All)),
    def("setregid",      SYS_setregid,      Control(SetGid),       args().ids(Id::RealEffective)),
    def("setresgid",     SYS_setresgid,     Control(SetGid),       args().ids(Id::RealEffectiveSaved)),
    def("setfsgid",      SYS_setfsgid,      Control(SetGid),       args().ids(Id::Fs)),
    def("ptrace",        SYS_ptrace,        Control(Ptrace),       args()),
    def("memfd_create",  SYS_memfd_create,  Control(MemfdCreate),  args().name(0).flags(1)),
    def("init_module",   SYS_init_module,   Control(ModuleLoad),   args().name2(2)).raw_fallback(),
    def("finit_module",  SYS_finit_module,  Control(ModuleLoad),   args().fd_path(0).name2(1).flags(2)).raw_fallback(),
    def("delete_module", SYS_delete_module, Control(ModuleUnload), args().name(0).flags(1)).raw_fallback(),
    def("bpf",           SYS_bpf,           Control(Bpf),          args()),
    // mount(source, target, fstype, flags, data): the target is resolved.
    def("mount",         SYS_mount,         Control(Mount),        args().path(1).name2(2).flags(3)),
    def("umount2",       SYS_umount2,       Control(Umount),       args().path(0).flags(1)).tracepoint("umount"),
    // move_mount(from_dfd, from_path, to_dfd, to_path, flags): the target.
    def("move_mount",    SYS_move_mount,    Control(MoveMount),    args().dirfd(2).path(3).flags(4)),
    def("unshare",       SYS_unshare,       Control(Unshare),      args().flags(0)),
    // The nsfs file behind the fd has no name a dentry walk can see (nsfs
    // names dentries on the fly), so only the namespace type is reported.
    def("setns",         SYS_setns,         Control(Setns),        args().flags(1)),
    def("chroot",        SYS_chroot,        Control(Chroot),       args().path(0)),
    // prctl(option, arg2): arg2 is the new name for PR_SET_NAME.
    def("prctl",         SYS_prctl,         Control(Prctl),        args().name(1)),
    // capset(header, data): the new sets, copied raw (2 x 3 u32).
    def("capset",        SYS_capset,        Control(Capset),       args().raw(1).at_entry()),
    // userfaultfd(flags): O_CLOEXEC, O_NONBLOCK, UFFD_USER_MODE_ONLY (1).
    def("userfaultfd",   SYS_userfaultfd,   Control(Userfaultfd),  args().flags(0)),
    def("clone",         SYS_clone,         Control(Clone),        args().stash()),
    def("clone3",        SYS_clone3,        Control(Clone),        args().stash().clone3()),

    // Network family: addresses are copied raw at exit (accept's peer is
    // filled in by then).
    def("socket",        SYS_socket,        Network(Socket),   args()),
    def("connect",       SYS_connect,       Network(Connect),  args().raw(1)),
    def("accept",        SYS_accept,        Network(Accept),   args().raw(1)),
    def("accept4",       SYS_accept4,       Network(Accept),   args().raw(1).flags(3)),
    def("bind",          SYS_bind,          Network(Bind),     args().raw(1)),
    def("listen",        SYS_listen,        Network(Listen),   args()),
    // dup, dup2, dup3 are sent only for a socket landing on fd 0, 1 or 2
    // (checked in the kernel): the wiring of a reverse shell.
    def("dup",           SYS_dup,           Network(Dup),      args()),
    def("dup3",          SYS_dup3,          Network(Dup),      args().mode(1).flags(2)),
    #[cfg(target_arch = "x86_64")] def("dup2", SYS_dup2, Network(Dup), args().mode(1)),
    def("sendto",        SYS_sendto,        Network(DnsQuery), args().raw(4).dns_send(SEND_VARIANT_SENDTO)),
    def("sendmsg",       SYS_sendmsg,       Network(DnsQuery), args().dns_send(SEND_VARIANT_SENDMSG)),
    def("sendmmsg",      SYS_sendmmsg,      Network(DnsQuery), args().dns_send(SEND_VARIANT_SENDMMSG)),
];

/// Row of each syscall number, `NONE` where none: built and checked when
/// the agent compiles, so a number listed twice fails the build.
static BY_NR: [u8; MAX_SYSCALL_NR as usize] = index_by_number();

const NONE: u8 = u8::MAX;

const fn index_by_number() -> [u8; MAX_SYSCALL_NR as usize] {
    assert!(TABLE.len() < NONE as usize, "too many rows for a u8 index");
    let mut idx = [NONE; MAX_SYSCALL_NR as usize];
    let mut i = 0;
    while i < TABLE.len() {
        let nr = TABLE[i].nr as usize;
        assert!(
            nr < MAX_SYSCALL_NR as usize,
            "syscall number past MAX_SYSCALL_NR"
        );
        assert!(idx[nr] == NONE, "a syscall number is listed twice");
        idx[nr] = i as u8;
        i += 1;
    }
    idx
}

/// A followed syscall, as decoded events name it: an index into [`TABLE`],
/// printed and parsed by name.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Syscall(u8);

impl Syscall {
    /// The row for syscall number `nr` on this architecture.
    pub fn by_nr(nr: u32) -> Option<Syscall> {
        match BY_NR.get(nr as usize) {
            Some(&i) if i != NONE => Some(Syscall(i)),
            _ => None,
        }
    }

    /// The row named `name` (a handful of comparisons per lookup: used when
    /// rules compile and recordings are read, never per live event).
    pub fn by_name(name: &str) -> Option<Syscall> {
        TABLE
            .iter()
            .position(|d| d.name == name)
            .map(|i| Syscall(i as u8))
    }

    pub fn def(self) -> &'static SyscallDef {
        &TABLE[self.0 as usize]
    }

    pub fn name(self) -> &'static str {
        self.def().name
    }
}

impl fmt::Debug for Syscall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl serde::Serialize for Syscall {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> serde::Deserialize<'de> for Syscall {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = <std::borrow::Cow<str>>::deserialize(d)?;
        Syscall::by_name(&name).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "`{name}` is not a syscall Vigil follows on this architecture"
            ))
        })
    }
}

/// Whether the probe follows the syscall `name` on this architecture.
pub fn is_followed(name: &str) -> bool {
    Syscall::by_name(name).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;
    use agent_ebpf::syscall::NO_ARG;

    #[test]
    fn table_is_consistent() {
        for (i, d) in TABLE.iter().enumerate() {
            assert_eq!(Syscall::by_nr(d.nr).map(|s| s.def().name), Some(d.name));
            assert_eq!(
                Syscall::by_name(d.name),
                Some(Syscall(i as u8)),
                "{} unique",
                d.name
            );
            let spec = d.spec();
            if let Op::File(op) = d.op {
                assert!(spec.path != NO_ARG, "{} has a path", d.name);
                if matches!(op, FileOp::Rename | FileOp::Link) {
                    assert!(spec.path2 != NO_ARG, "{} has a second path", d.name);
                }
            }
            assert_eq!(spec.family, d.op.family() as u8);
        }
        assert_eq!(
            Syscall::by_nr(libc::SYS_openat as u32).map(Syscall::name),
            Some("openat")
        );
        assert_eq!(Syscall::by_nr(MAX_SYSCALL_NR + 5), None);
    }

    #[test]
    fn special_cases_are_columns() {
        let umount = Syscall::by_name("umount2").unwrap().def();
        assert_eq!(umount.tracepoint, "umount");
        assert!(Syscall::by_name("finit_module").unwrap().def().raw_fallback);
        assert!(!Syscall::by_name("openat").unwrap().def().raw_fallback);
    }

    #[test]
    fn serialises_by_name() {
        let s = Syscall::by_name("connect").unwrap();
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"connect\"");
        let back: Syscall = serde_json::from_str("\"connect\"").unwrap();
        assert_eq!(back, s);
        assert!(serde_json::from_str::<Syscall>("\"frobnicate\"").is_err());
    }
}
