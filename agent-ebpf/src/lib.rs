//! Wire types shared by the eBPF probe and the userspace agent.
//!
//! Everything here is `#[repr(C)]` and fixed-size so that the kernel side can
//! reserve ring-buffer space for it and the agent can decode it byte for byte.
//! One module per event family; the common header lives here.
#![no_std]

#[macro_use]
mod wire_enum;

pub mod config;
pub mod control;
pub mod file;
pub mod network;
pub mod process;
pub mod syscall;

/// Length of `task_struct::comm`, including the trailing NUL.
pub const COMM_LEN: usize = 16;

/// Default size of the `EVENTS` ring buffer (file, control and network
/// records) in bytes (power of two, page multiple).
pub const DEFAULT_RING_BYTES: u32 = 4 * 1024 * 1024;

/// Default size of the `PROCESS_EVENTS` ring buffer (exec, fork, exit):
/// a ring of its own, so a flood of file events can never crowd out the
/// records the process table and most rules depend on.
pub const DEFAULT_PROCESS_RING_BYTES: u32 = 2 * 1024 * 1024;

wire_enum! {
    /// What a ring-buffer record is. The discriminant is the first field of
    /// every record, so the agent can dispatch before knowing the size.
    pub enum EventKind: u32 {
        Exec = 1 => "exec",
        Fork = 2 => "fork",
        Exit = 3 => "exit",
        File = 4 => "file",
        Control = 5 => "control",
        Network = 6 => "network",
    }
}

impl EventKind {
    /// Index of this kind's slot in the per-CPU `LOST` counter map.
    pub const fn lost_slot(self) -> u32 {
        self as u32
    }
}

/// Number of slots in the `LOST` per-CPU array (index 0 is unused).
pub const LOST_SLOTS: u32 = 7;

wire_enum! {
    /// What the probe counts besides lost records: the slots of its per-CPU
    /// `COUNTERS` map, which the agent reads and reports.
    pub enum ProbeCounter: u32 {
        /// A followed syscall's spec named a family the probe does not
        /// send: its record was dropped instead of travelling under a
        /// wrong kind.
                UnknownFamily = 0 => "unknown_family",
        /// A syscall whose entry is needed (old credentials, clone flags)
        /// left without its in-flight entry: the table (an LRU) evicted it
        /// under load, or could not store it. Its record was not sent.
        PendingLost = 1 => "pending_lost",
    }
}

/// Number of slots in the `COUNTERS` per-CPU array.
pub const PROBE_COUNTER_SLOTS: u32 = 2;

/// `EventHeader::flags`: fields the probe could not read on this kernel
/// (unknown layout or a faulting read). Their values are then 0.
pub const HDR_PPID_UNKNOWN: u32 = 1 << 0;
pub const HDR_CREDS_UNKNOWN: u32 = 1 << 1;
pub const HDR_LOGINUID_UNKNOWN: u32 = 1 << 2;
pub const HDR_MNTNS_UNKNOWN: u32 = 1 << 3;
pub const HDR_PIDNS_UNKNOWN: u32 = 1 << 4;
pub const HDR_START_UNKNOWN: u32 = 1 << 5;
/// The process's executable has no links left: deleted since it started
/// (checked on every event, so a binary that deletes itself shows).
pub const HDR_EXE_DELETED: u32 = 1 << 6;
/// The controlling terminal could not be read (`EventHeader::tty` is 0).
pub const HDR_TTY_UNKNOWN: u32 = 1 << 7;
/// The namespace pid could not be read (`EventHeader::vpid` is 0).
pub const HDR_VPID_UNKNOWN: u32 = 1 << 8;
/// The capability sets could not be read (`EventHeader::caps` is 0).
pub const HDR_CAPS_UNKNOWN: u32 = 1 << 9;

/// `EventHeader::caps`: the slots of the task's capability sets.
pub const CAP_EFFECTIVE: usize = 0;
pub const CAP_PERMITTED: usize = 1;
pub const CAP_INHERITABLE: usize = 2;
pub const CAP_BOUNDING: usize = 3;

/// Process context at the start of every event.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct EventHeader {
    /// An [`EventKind`] discriminant.
    pub kind: u32,
    /// `HDR_*_UNKNOWN` bits.
    pub flags: u32,
    /// Thread id (kernel `pid`).
    pub pid: u32,
    /// Process id (kernel `tgid`).
    pub tgid: u32,
    /// `real_parent->tgid`.
    pub ppid: u32,
    /// Real uid and gid.
    pub uid: u32,
    pub gid: u32,
    /// Effective uid and gid (`task->cred`).
    pub euid: u32,
    pub egid: u32,
    /// Audit login uid (`task->loginuid`); `u32::MAX` when never set.
    pub loginuid: u32,
    /// `CLOCK_BOOTTIME` nanoseconds (`bpf_ktime_get_boot_ns`).
    pub boot_ns: u64,
    /// cgroup v2 id of the task's cgroup.
    pub cgroup_id: u64,
    /// When the process (thread-group leader) started, `CLOCK_BOOTTIME` ns:
    /// with `tgid`, a key that pid reuse cannot collide on.
    pub start_boottime_ns: u64,
    /// Inode numbers of the mount and pid namespaces (as in /proc/PID/ns).
    pub mnt_ns: u32,
    pub pid_ns: u32,
    pub comm: [u8; COMM_LEN],
    /// Controlling terminal as `/proc/PID/stat` `tty_nr` encodes it
    /// (`task->signal->tty`); 0 when the process has none.
    pub tty: u32,
    /// The process's id in its own pid namespace (`getpid()` there; 1 for
    /// a container's init).
    pub vpid: u32,
    /// The task's effective, permitted, inheritable and bounding
    /// capability sets (`task->cred`), at the `CAP_*` slots.
    pub caps: [u64; 4],
}

#[cfg(feature = "user")]
mod pod {
    unsafe impl aya::Pod for crate::config::ProbeConfig {}
    unsafe impl aya::Pod for crate::syscall::ArgSpec {}
    unsafe impl aya::Pod for crate::config::ExeKey {}
    unsafe impl aya::Pod for crate::syscall::PendingSyscall {}
    unsafe impl aya::Pod for crate::syscall::OpenFilter {}
    // The records the agent reads out of the ring buffer.
    unsafe impl aya::Pod for crate::EventHeader {}
    unsafe impl aya::Pod for crate::process::ExecRecord {}
    unsafe impl aya::Pod for crate::process::ForkRecord {}
    unsafe impl aya::Pod for crate::process::ExitRecord {}
    unsafe impl aya::Pod for crate::syscall::SyscallRecord {}
}
