//! Process-family records: exec, fork, exit.

use crate::EventHeader;

/// Bytes kept of the executed filename (including NUL).
pub const FILENAME_MAX: usize = 1024;
/// Bytes kept of the NUL-separated argument block.
pub const ARGV_MAX: usize = 4096;
/// Bytes kept of the NUL-separated environment block, read only while a
/// loaded rule tests `proc.env` ([`EXEC_CAPTURE_ENV`]).
pub const ENV_MAX: usize = 4096;

/// `EXEC_OPTIONS[0]` bit: copy the new image's environment into exec
/// records. The agent sets it while a loaded rule needs the environment.
pub const EXEC_CAPTURE_ENV: u32 = 1 << 0;

/// The argument block was longer than [`ARGV_MAX`] and was cut.
pub const EXEC_ARGV_TRUNCATED: u32 = 1 << 0;
/// The filename was longer than [`FILENAME_MAX`] and was cut.
pub const EXEC_FILENAME_TRUNCATED: u32 = 1 << 1;
/// The argument block could not be read (unknown kernel layout or fault).
pub const EXEC_ARGV_UNREADABLE: u32 = 1 << 2;
/// `mm->exe_file` could not be resolved.
pub const EXEC_EXE_UNKNOWN: u32 = 1 << 3;
/// The executable's path was longer than [`EXE_MAX`] or deeper than the walk.
pub const EXEC_EXE_TRUNCATED: u32 = 1 << 4;
/// The executable is not reachable from the process's root: it lives on an
/// internal mount (a memfd: fileless execution) or another mount tree.
pub const EXEC_EXE_UNREACHABLE: u32 = 1 << 5;

/// `exe_ino`..`exe_mtime_ns` could not be read.
pub const EXEC_EXE_STAT_UNKNOWN: u32 = 1 << 6;
/// The environment block was longer than [`ENV_MAX`] and was cut.
pub const EXEC_ENV_TRUNCATED: u32 = 1 << 7;
/// The environment was asked for and could not be read.
pub const EXEC_ENV_UNREADABLE: u32 = 1 << 8;

/// Bytes kept of the executable's path components.
pub const EXE_MAX: usize = 1024;

/// A successful `execve`/`execveat` (`sched:sched_process_exec`).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ExecRecord {
    pub header: EventHeader,
    /// Bytes of `filename` used, without the NUL.
    pub filename_len: u32,
    /// Bytes of `argv` used (NUL-separated arguments).
    pub argv_len: u32,
    /// `EXEC_*` flags.
    pub flags: u32,
    /// Length of the whole argument block in the new process, before cutting.
    pub argv_total_len: u32,
    /// Bytes of `exe` used.
    pub exe_len: u32,
    /// `mm->exe_file`'s inode link count: 0 when the file was deleted.
    pub exe_nlink: u32,
    /// Bytes of `env` used (0 when the environment was not asked for),
    /// and the whole environment block's length before cutting.
    pub env_len: u32,
    pub env_total_len: u32,
    /// The executable's inode, device (kernel `s_dev`), size, and change
    /// and modification times (ns since the epoch): what the agent keys its
    /// hash cache on and compares with a container's start (drift).
    pub exe_ino: u64,
    pub exe_dev: u64,
    pub exe_size: u64,
    pub exe_ctime_ns: u64,
    pub exe_mtime_ns: u64,
    pub filename: [u8; FILENAME_MAX],
    pub argv: [u8; ARGV_MAX],
    /// `mm->exe_file`'s path as NUL-terminated components, leaf first (see
    /// `syscall::SyscallRecord`).
    pub exe: [u8; EXE_MAX],
    /// The new image's environment (`mm->env_start..env_end`), NUL-
    /// separated `NAME=value` strings, when asked for.
    pub env: [u8; ENV_MAX],
}

/// A new process (not a thread): `sched_process_fork` raw tracepoint. The
/// header describes the parent.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ForkRecord {
    pub header: EventHeader,
    pub child_pid: u32,
    /// 1 when `clone_flags` is known (the parent was in clone/clone3).
    pub flags_known: u32,
    /// The clone flags, including the exit signal in the low byte.
    pub clone_flags: u64,
    /// The child's `start_boottime` (0: unknown): its key in the agent's
    /// process table, with `child_pid`.
    pub child_start_boottime_ns: u64,
}

/// The last thread of a process exited (`sched:sched_process_exit`).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ExitRecord {
    pub header: EventHeader,
    /// `task_struct.exit_code`: `(status << 8) | signal`.
    pub exit_code: u32,
    /// 1 when the kernel layout did not let the probe read `exit_code`.
    pub exit_code_unknown: u32,
}
