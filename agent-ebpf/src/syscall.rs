//! Syscall capture shared by the file, control and network families.
//!
//! One enter and one exit program serve every followed syscall. The agent
//! tells them, per syscall number, which argument is what ([`ArgSpec`]);
//! adding a syscall is a row in the agent's table, not new kernel code.

/// "No such argument" in an [`ArgSpec`].
pub const NO_ARG: u8 = 0xff;
/// `AT_FDCWD`: paths relative to the current directory.
pub const AT_FDCWD: i32 = -100;
/// Highest syscall number the `SYSCALL_SPECS` map covers (exclusive).
pub const MAX_SYSCALL_NR: u32 = 512;

/// `ArgSpec::spec_flags`: the flags argument is a `struct open_how *` (openat2).
pub const SPEC_FLAGS_IN_OPEN_HOW: u8 = 1 << 0;
/// `path` is a plain string (a name, not a file path): never resolved.
pub const SPEC_PATH1_STRING: u8 = 1 << 1;
pub const SPEC_PATH2_STRING: u8 = 1 << 2;
/// `path` is the index of an fd argument: the record carries that file's
/// path (as base components, with an empty path string).
pub const SPEC_PATH1_FD: u8 = 1 << 3;
/// This syscall has no `syscalls:*` tracepoint on the running kernel; it is
/// caught through `raw_syscalls:sys_{enter,exit}` instead.
pub const SPEC_VIA_RAW: u8 = 1 << 4;
/// `path` is a `struct sockaddr *`: up to `network::SOCKADDR_MAX` raw bytes
/// are copied (read at exit, so accept's peer address is filled in).
pub const SPEC_PATH1_SOCKADDR: u8 = 1 << 5;
/// Keep the arguments for other programs (clone flags for the fork event)
/// but emit nothing at exit.
pub const SPEC_STASH_ONLY: u8 = 1 << 6;
/// For a stash-only clone: flags are in a user `struct clone_args` (clone3).
pub const SPEC_CLONE3: u8 = 1 << 7;

/// `spec_flags2` bits.
/// A NULL `path` names the file behind the dirfd (utimensat, as futimens
/// calls it): the record then carries that file's path, as
/// [`SPEC_PATH1_FD`] does.
pub const SPEC2_NULL_PATH_IS_DIRFD: u8 = 1 << 0;

/// Where a syscall keeps what the event needs: argument indexes (0..6), or
/// [`NO_ARG`]. Missing dirfds mean `AT_FDCWD`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArgSpec {
    /// A `FileOp` or `ControlOp`; 0 means "not followed".
    pub op: u8,
    pub dirfd: u8,
    pub path: u8,
    pub dirfd2: u8,
    pub path2: u8,
    pub flags: u8,
    pub mode: u8,
    pub uid: u8,
    pub gid: u8,
    /// `SPEC_*` bits.
    pub spec_flags: u8,
    /// The `EventKind` of the record (file, control or network).
    pub family: u8,
    /// Per-family sub-kind (`network::SEND_VARIANT_*`), 0 otherwise.
    pub variant: u8,
    /// `HOOK_*` bits: where the probe catches it, whether it is filtered,
    /// whether its records may wake the agent.
    pub hook: u8,
    /// `SPEC2_*` bits.
    pub spec_flags2: u8,
    pub _pad: [u8; 2],
}

impl ArgSpec {
    pub const NONE: ArgSpec = ArgSpec {
        op: 0,
        dirfd: NO_ARG,
        path: NO_ARG,
        dirfd2: NO_ARG,
        path2: NO_ARG,
        flags: NO_ARG,
        mode: NO_ARG,
        uid: NO_ARG,
        gid: NO_ARG,
        spec_flags: 0,
        family: 0,
        variant: 0,
        hook: 0,
        spec_flags2: 0,
        _pad: [0; 2],
    };
}

/// `ArgSpec::hook`: the arguments are stashed at `sys_enter` (the
/// credentials before a setuid, clone flags for the fork event). Without
/// it only `sys_exit` is attached, and the arguments are read there from
/// the task's saved registers: one tracepoint instead of two, and no map
/// write per call.
pub const HOOK_AT_ENTER: u8 = 1 << 0;
/// Records of this syscall may raise an alert on their own: they wake the
/// agent (at most once per [`WAKE_GAP_NS`] per CPU) instead of waiting
/// for a batch.
pub const HOOK_WAKE: u8 = 1 << 1;
/// An open: reported only when a clause of the `OPEN_FILTER` passes.
pub const HOOK_OPEN_FILTER: u8 = 1 << 2;

/// Records that may raise an alert wake the agent at most this often per
/// CPU; the agent polls again soon after any wake-up, so what a gap holds
/// back waits about a millisecond.
pub const WAKE_GAP_NS: u64 = 1_000_000;

/// Clauses an open filter holds (an open is reported if any passes).
pub const OPEN_CLAUSES: usize = 8;

/// One clause of the open filter: the open's flags have a bit of
/// `flags_any` (0: any flags), its path starts with a prefix of set
/// `path_set` in `PATH_PREFIXES` (0: any path), and its last component is
/// a name of set `name_set` there (0: any name; a name entry is the name
/// and its NUL, so only the whole component matches). Relative paths, and
/// absolute ones with `.`/`..` components, doubled slashes or past the
/// window, pass every path and name test: only the agent can place them.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct OpenClause {
    pub flags_any: u64,
    pub path_set: u32,
    /// `CLAUSE_*` bits.
    pub opts: u32,
    pub name_set: u32,
    pub _pad: u32,
    /// A cheap test before the name lookup: bit L is set when a name of
    /// set `name_set` is L bytes long, bit `b & 63` when one starts with
    /// byte `b`. A component missing either bit cannot be in the set.
    pub name_lens: u64,
    pub name_firsts: u64,
}

/// The clause holds only for a successful open (`evt.res = SUCCESS`).
pub const CLAUSE_SUCCESS_ONLY: u32 = 1 << 0;
/// An open passing this clause may raise an alert: it wakes the agent.
pub const CLAUSE_WAKE: u32 = 1 << 1;

/// The whole open filter, one entry of the `OPEN_FILTER` array.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct OpenFilter {
    pub clauses: [OpenClause; OPEN_CLAUSES],
    pub count: u32,
    pub _pad: u32,
}

/// Bytes of a path the filter compares: prefixes are at most this long
/// (longer ones are cut, which only widens them).
pub const PATH_FILTER_BYTES: usize = 63;

/// Data of a `PATH_PREFIXES` LPM-trie key: the clause's set id as a
/// little-endian u32 (so the path after it is 8-byte aligned in the key,
/// where the probe reads it a word at a time), then the path.
pub type PathKeyData = [u8; 80];

/// Syscall arguments saved at `sys_enter` until `sys_exit`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct PendingSyscall {
    pub nr: u32,
    pub _pad: u32,
    pub args: [u64; 6],
    /// Credentials before the call (control family): uid, euid, gid, egid.
    pub old_ids: [u32; 4],
    /// Capability sets before the call: effective, permitted, inheritable.
    pub old_caps: [u64; 3],
}

/// Bytes kept of a path string given to a syscall (with its NUL).
pub const PATH_MAX_KEPT: usize = 1024;
/// Bytes kept of a base directory's components.
pub const BASE_MAX_KEPT: usize = 1024;

/// `SyscallRecord::path_flags` bits.
pub const PATH1_TRUNCATED: u32 = 1 << 0;
pub const PATH2_TRUNCATED: u32 = 1 << 1;
/// The base directory (cwd or dirfd) could not be resolved.
pub const BASE1_UNKNOWN: u32 = 1 << 2;
pub const BASE2_UNKNOWN: u32 = 1 << 3;
/// The base directory walk hit its depth or size bound.
pub const BASE1_TRUNCATED: u32 = 1 << 4;
pub const BASE2_TRUNCATED: u32 = 1 << 5;

/// Fixed part of a file, control or network event. It is followed by `data`, which holds, in
/// order: path1 (`path1_len` bytes), base1 (`base1_len`), path2, base2.
/// A path is the string the process passed. A base is the directory a
/// relative path is resolved against, as NUL-terminated components from the
/// leaf up to the root: `etc\0` for `/etc`, nothing for `/`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SyscallRecord {
    pub header: crate::EventHeader,
    pub op: u32,
    pub syscall_nr: u32,
    /// The raw arguments, for the decoder's per-syscall interpretation.
    pub args: [u64; 6],
    /// Control family: credentials and capability sets before the call
    /// (the header shows them after it).
    pub old_ids: [u32; 4],
    pub old_caps: [u64; 3],
    /// Syscall result: fd or 0 on success, -errno on failure.
    pub result: i64,
    /// Open flags (O_*), rename flags, unlinkat/linkat flags.
    pub flags: u64,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub dirfd: i32,
    pub dirfd2: i32,
    pub path_flags: u32,
    pub path1_len: u16,
    pub base1_len: u16,
    pub path2_len: u16,
    pub base2_len: u16,
}

/// Size of the variable tail a record may carry.
pub const SYSCALL_DATA_MAX: usize = 2 * (PATH_MAX_KEPT + BASE_MAX_KEPT);
