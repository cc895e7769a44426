//! Start-up configuration handed from the agent to the probe.
//!
//! The probe reads kernel structures at offsets the agent computes from the
//! running kernel's BTF (`/sys/kernel/btf/vmlinux`) and tracepoint fields at
//! offsets parsed from tracefs `format` files, so nothing depends on the
//! headers of the machine that built the probe. The agent writes this struct
//! into the probe's read-only `CONFIG` global before load.

/// Offset value meaning "this kernel has no such field": reads degrade to
/// "unknown" (0) instead of garbage.
pub const UNKNOWN_OFFSET: u32 = u32::MAX;

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProbeConfig {
    /// tgid of the agent itself: its own events are dropped in the kernel.
    pub agent_tgid: u32,
    /// `task_struct.real_parent` (pointer).
    pub task_real_parent: u32,
    /// `task_struct.pid` (pid_t).
    pub task_pid: u32,
    /// `task_struct.tgid` (pid_t).
    pub task_tgid: u32,
    /// `task_struct.mm` (pointer).
    pub task_mm: u32,
    /// `task_struct.exit_code` (int).
    pub task_exit_code: u32,
    /// `mm_struct.arg_start` (unsigned long).
    pub mm_arg_start: u32,
    /// `mm_struct.arg_end` (unsigned long).
    pub mm_arg_end: u32,
    /// `sched_process_exec` record: `__data_loc char[] filename`.
    pub tp_exec_filename: u32,
    /// `sched_process_exit` record: `bool group_dead` (kernels >= 6.16).
    pub tp_exit_group_dead: u32,
    /// Wake the agent only once this many bytes wait in the ring buffer; the
    /// agent also drains on a timer. 0: wake on every record. Each wake-up
    /// costs the submitting task an irq_work (a self-IPI, several µs in a
    /// VM), so batching them is most of the probe's cost.
    pub wakeup_bytes: u32,
    pub _pad: u32,
}

impl ProbeConfig {
    /// Everything unknown: the probe still emits events, with ppid, argv and
    /// exit codes reported as unknown.
    pub const UNSET: ProbeConfig = ProbeConfig {
        agent_tgid: 0,
        task_real_parent: UNKNOWN_OFFSET,
        task_pid: UNKNOWN_OFFSET,
        task_tgid: UNKNOWN_OFFSET,
        task_mm: UNKNOWN_OFFSET,
        task_exit_code: UNKNOWN_OFFSET,
        mm_arg_start: UNKNOWN_OFFSET,
        mm_arg_end: UNKNOWN_OFFSET,
        tp_exec_filename: UNKNOWN_OFFSET,
        tp_exit_group_dead: UNKNOWN_OFFSET,
        wakeup_bytes: 0,
        _pad: 0,
    };
}
