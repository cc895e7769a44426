//! Asking the scheduler to run the agent promptly when the probe wakes it.
//!
//! Linux's EEVDF scheduler (6.6+) lets a woken task wait until the running
//! one finishes its time slice (about 0.75-3 ms) unless the woken task
//! asked for a shorter slice (6.12+, `sched_attr.sched_runtime` under
//! `SCHED_OTHER`). The agent asks for one: on a busy CPU an alert then
//! leaves within a fraction of a millisecond instead of one or more, at
//! no cost in priority or fairness (a shorter slice is not a larger
//! share). Kernels without the feature refuse or ignore the request.

/// The slice the agent's event thread asks for.
pub const SLICE_NS: u64 = 100_000;

#[repr(C)]
#[derive(Default)]
struct SchedAttr {
    size: u32,
    sched_policy: u32,
    sched_flags: u64,
    sched_nice: i32,
    sched_priority: u32,
    sched_runtime: u64,
    sched_deadline: u64,
    sched_period: u64,
    sched_util_min: u32,
    sched_util_max: u32,
}

/// Asks for a `SLICE_NS` time slice for the calling thread, keeping its
/// policy (SCHED_OTHER) and nice value. An error says the kernel refused.
pub fn request_short_slice() -> std::io::Result<()> {
    // SAFETY: getpriority reads the calling thread's nice value.
    let nice = unsafe {
        *libc::__errno_location() = 0;
        libc::getpriority(libc::PRIO_PROCESS, 0)
    };
    let attr = SchedAttr {
        size: std::mem::size_of::<SchedAttr>() as u32,
        sched_policy: libc::SCHED_OTHER as u32,
        sched_nice: nice,
        sched_runtime: SLICE_NS,
        ..Default::default()
    };
    // SAFETY: sched_setattr reads `attr`, whose size field is set.
    let rc = unsafe { libc::syscall(libc::SYS_sched_setattr, 0, &attr as *const SchedAttr, 0) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}
