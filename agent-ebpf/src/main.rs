//! Vigil's eBPF probe: kernel hooks that turn process activity into
//! fixed-size records on one ring buffer.
//!
//! Kernel structures are read at offsets the agent computed from the running
//! kernel's BTF (see `agent_ebpf::config`). Every record that cannot be
//! reserved is counted in `LOST`, per event kind, so no loss is silent.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

#[cfg(target_arch = "bpf")]
mod probe {
    use core::{ffi::c_void, ptr};

    use agent_ebpf::{
        config::{ProbeConfig, UNKNOWN_OFFSET},
        process::{
            ExecRecord, ExitRecord, ForkRecord, ARGV_MAX, EXEC_ARGV_TRUNCATED,
            EXEC_ARGV_UNREADABLE, EXEC_FILENAME_TRUNCATED, FILENAME_MAX,
        },
        EventHeader, EventKind, DEFAULT_RING_BYTES, HDR_CREDS_UNKNOWN, HDR_LOGINUID_UNKNOWN,
        HDR_MNTNS_UNKNOWN, HDR_PIDNS_UNKNOWN, HDR_PPID_UNKNOWN, HDR_START_UNKNOWN, LOST_SLOTS,
    };
    use aya_ebpf::{
        helpers::{
            bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_current_uid_gid,
            bpf_probe_read_kernel, bpf_probe_read_kernel_str_bytes,
            generated::{
                bpf_get_current_cgroup_id, bpf_get_current_task, bpf_ktime_get_boot_ns,
                bpf_probe_read_user,
            },
        },
        macros::{map, raw_tracepoint, tracepoint},
        maps::{PerCpuArray, RingBuf},
        programs::{RawTracePointContext, TracePointContext},
        EbpfContext,
    };

    #[map]
    static EVENTS: RingBuf = RingBuf::with_byte_size(DEFAULT_RING_BYTES, 0);

    /// Records that could not be reserved, indexed by `EventKind`.
    #[map]
    static LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(LOST_SLOTS, 0);

    /// Filled in by the agent before load (read-only data section).
    #[no_mangle]
    static CONFIG: ProbeConfig = ProbeConfig::UNSET;

    /// Reads one `CONFIG` field; volatile so the compiler cannot fold the
    /// placeholder value in at build time.
    macro_rules! cfg {
        ($field:ident) => {
            unsafe { ptr::read_volatile(&raw const CONFIG.$field) }
        };
    }

    const BPF_RB_NO_WAKEUP: u64 = 1;
    const BPF_RB_FORCE_WAKEUP: u64 = 2;
    const BPF_RB_AVAIL_DATA: u64 = 0;

    /// Submit flags: wake the agent only when enough data is waiting.
    #[inline(always)]
    fn submit_flags() -> u64 {
        let threshold = cfg!(wakeup_bytes) as u64;
        if threshold == 0 {
            return 0;
        }
        if EVENTS.query(BPF_RB_AVAIL_DATA) >= threshold {
            BPF_RB_FORCE_WAKEUP
        } else {
            BPF_RB_NO_WAKEUP
        }
    }

    #[inline(always)]
    fn count_lost(kind: EventKind) {
        if let Some(slot) = LOST.get_ptr_mut(kind.lost_slot()) {
            unsafe { *slot += 1 };
        }
    }

    /// Reads a `T` at `base + offset` in kernel memory; `None` when the
    /// offset is unknown on this kernel or the read faults.
    #[inline(always)]
    fn read_kernel<T>(base: *const u8, offset: u32) -> Option<T> {
        if base.is_null() || offset == UNKNOWN_OFFSET {
            return None;
        }
        unsafe { bpf_probe_read_kernel(base.add(offset as usize) as *const T).ok() }
    }

    #[inline(always)]
    fn current_task() -> *const u8 {
        unsafe { bpf_get_current_task() as *const u8 }
    }

    #[inline(always)]
    fn is_agent(tgid: u32) -> bool {
        let agent = cfg!(agent_tgid);
        agent != 0 && agent == tgid
    }

    /// Follows a pointer field, then reads a `T` at `offset` in its target.
    #[inline(always)]
    fn read_via<T>(base: *const u8, ptr_offset: u32, offset: u32) -> Option<T> {
        let p: *const u8 = read_kernel(base, ptr_offset)?;
        read_kernel(p, offset)
    }

    /// `task->thread_pid->numbers[level].ns->ns.inum`: the pid namespace
    /// the task lives in (not the one its children will get).
    #[inline(always)]
    fn pid_ns_inum(task: *const u8) -> Option<u32> {
        let pid: *const u8 = read_kernel(task, cfg!(task_thread_pid))?;
        let level: u32 = read_kernel(pid, cfg!(pid_level))?;
        let (numbers, size, ns_off) = (cfg!(pid_numbers), cfg!(upid_size), cfg!(upid_ns));
        if numbers == UNKNOWN_OFFSET
            || size == UNKNOWN_OFFSET
            || ns_off == UNKNOWN_OFFSET
            || level > 64
        {
            return None;
        }
        let upid_ns = numbers as u64 + level as u64 * size as u64 + ns_off as u64;
        let ns: *const u8 = read_kernel(pid, upid_ns as u32)?;
        read_kernel(ns, cfg!(pid_ns_inum))
    }

    /// Fills the common header from the current task.
    #[inline(always)]
    fn fill_header(h: *mut EventHeader, kind: EventKind, pid_tgid: u64) {
        let uid_gid = bpf_get_current_uid_gid();
        let task = current_task();
        let mut flags = 0u32;
        let ppid: Option<u32> = read_via(task, cfg!(task_real_parent), cfg!(task_tgid));
        let cred: Option<*const u8> = read_kernel(task, cfg!(task_cred));
        let euid: Option<u32> = cred.and_then(|c| read_kernel(c, cfg!(cred_euid)));
        let egid: Option<u32> = cred.and_then(|c| read_kernel(c, cfg!(cred_egid)));
        let loginuid: Option<u32> = read_kernel(task, cfg!(task_loginuid));
        let start: Option<u64> = read_via(task, cfg!(task_group_leader), cfg!(task_start_boottime));
        let nsproxy: Option<*const u8> = read_kernel(task, cfg!(task_nsproxy));
        let mnt_ns: Option<u32> =
            nsproxy.and_then(|n| read_via(n, cfg!(nsproxy_mnt_ns), cfg!(mnt_ns_inum)));
        let pid_ns = pid_ns_inum(task);
        if ppid.is_none() {
            flags |= HDR_PPID_UNKNOWN;
        }
        if euid.is_none() || egid.is_none() {
            flags |= HDR_CREDS_UNKNOWN;
        }
        if loginuid.is_none() {
            flags |= HDR_LOGINUID_UNKNOWN;
        }
        if start.is_none() {
            flags |= HDR_START_UNKNOWN;
        }
        if mnt_ns.is_none() {
            flags |= HDR_MNTNS_UNKNOWN;
        }
        if pid_ns.is_none() {
            flags |= HDR_PIDNS_UNKNOWN;
        }
        unsafe {
            (*h).kind = kind as u32;
            (*h).flags = flags;
            (*h).pid = pid_tgid as u32;
            (*h).tgid = (pid_tgid >> 32) as u32;
            (*h).ppid = ppid.unwrap_or(0);
            (*h).uid = uid_gid as u32;
            (*h).gid = (uid_gid >> 32) as u32;
            (*h).euid = euid.unwrap_or(0);
            (*h).egid = egid.unwrap_or(0);
            (*h).loginuid = loginuid.unwrap_or(0);
            (*h).boot_ns = bpf_ktime_get_boot_ns();
            (*h).cgroup_id = bpf_get_current_cgroup_id();
            (*h).start_boottime_ns = start.unwrap_or(0);
            (*h).mnt_ns = mnt_ns.unwrap_or(0);
            (*h).pid_ns = pid_ns.unwrap_or(0);
            (*h).comm = bpf_get_current_comm().unwrap_or([0; 16]);
        }
    }

    #[tracepoint(category = "sched", name = "sched_process_exec")]
    pub fn sched_process_exec(ctx: TracePointContext) -> u32 {
        let pid_tgid = bpf_get_current_pid_tgid();
        if is_agent((pid_tgid >> 32) as u32) {
            return 0;
        }
        let Some(mut entry) = EVENTS.reserve::<ExecRecord>(0) else {
            count_lost(EventKind::Exec);
            return 0;
        };
        let ev = entry.as_mut_ptr();
        fill_header(unsafe { &raw mut (*ev).header }, EventKind::Exec, pid_tgid);
        let mut flags = 0u32;
        unsafe {
            (*ev).filename_len = 0;
            (*ev).argv_len = 0;
            (*ev).argv_total_len = 0;
        }
        flags |= read_exec_filename(&ctx, ev);
        flags |= read_exec_argv(ev);
        unsafe { (*ev).flags = flags };
        entry.submit(submit_flags());
        0
    }

    /// Copies the filename out of the tracepoint record's `__data_loc`.
    #[inline(always)]
    fn read_exec_filename(ctx: &TracePointContext, ev: *mut ExecRecord) -> u32 {
        let off = cfg!(tp_exec_filename);
        if off == UNKNOWN_OFFSET {
            return 0;
        }
        let Ok(loc) = (unsafe { ctx.read_at::<u32>(off as usize) }) else {
            return 0;
        };
        let data = unsafe { (ctx.as_ptr() as *const u8).add((loc & 0xffff) as usize) };
        let dst = unsafe { &mut (*ev).filename };
        let copied = unsafe { bpf_probe_read_kernel_str_bytes(data, dst) }
            .map(|s| s.len())
            .unwrap_or(0);
        unsafe { (*ev).filename_len = copied as u32 };
        // The data_loc's high half is the stored length including the NUL.
        if (loc >> 16) as usize > FILENAME_MAX {
            EXEC_FILENAME_TRUNCATED
        } else {
            0
        }
    }

    /// Copies the new image's argument block (`mm->arg_start..arg_end`).
    #[inline(always)]
    fn read_exec_argv(ev: *mut ExecRecord) -> u32 {
        let Some(mm) = read_kernel::<*const u8>(current_task(), cfg!(task_mm)) else {
            return EXEC_ARGV_UNREADABLE;
        };
        let (Some(start), Some(end)) = (
            read_kernel::<u64>(mm, cfg!(mm_arg_start)),
            read_kernel::<u64>(mm, cfg!(mm_arg_end)),
        ) else {
            return EXEC_ARGV_UNREADABLE;
        };
        if end <= start {
            return 0;
        }
        let total = end - start;
        let mut flags = 0;
        let mut len = total as usize;
        if len > ARGV_MAX {
            len = ARGV_MAX;
            flags |= EXEC_ARGV_TRUNCATED;
        }
        let rc = unsafe {
            bpf_probe_read_user(
                (&raw mut (*ev).argv) as *mut c_void,
                len as u32,
                start as *const c_void,
            )
        };
        if rc != 0 {
            return flags | EXEC_ARGV_UNREADABLE;
        }
        unsafe {
            (*ev).argv_len = len as u32;
            (*ev).argv_total_len = total.min(u32::MAX as u64) as u32;
        }
        flags
    }

    /// `sched_process_fork(struct task_struct *parent, struct task_struct *child)`.
    /// Raw, so the child's task is at hand and thread creation is dropped
    /// here instead of being copied to userspace.
    #[raw_tracepoint(tracepoint = "sched_process_fork")]
    pub fn sched_process_fork(ctx: RawTracePointContext) -> i32 {
        let pid_tgid = bpf_get_current_pid_tgid();
        if is_agent((pid_tgid >> 32) as u32) {
            return 0;
        }
        let child: *const u8 = ctx.arg::<u64>(1) as *const u8;
        let child_pid: u32 = read_kernel(child, cfg!(task_pid)).unwrap_or(0);
        let child_tgid: u32 = read_kernel(child, cfg!(task_tgid)).unwrap_or(0);
        if child_pid != child_tgid {
            return 0;
        }
        let Some(mut entry) = EVENTS.reserve::<ForkRecord>(0) else {
            count_lost(EventKind::Fork);
            return 0;
        };
        let ev = entry.as_mut_ptr();
        fill_header(unsafe { &raw mut (*ev).header }, EventKind::Fork, pid_tgid);
        unsafe {
            (*ev).child_pid = child_pid;
            (*ev)._pad = 0;
        }
        entry.submit(submit_flags());
        0
    }

    #[tracepoint(category = "sched", name = "sched_process_exit")]
    pub fn sched_process_exit(ctx: TracePointContext) -> u32 {
        let pid_tgid = bpf_get_current_pid_tgid();
        let tgid = (pid_tgid >> 32) as u32;
        if is_agent(tgid) || !is_process_exit(&ctx, pid_tgid) {
            return 0;
        }
        let Some(mut entry) = EVENTS.reserve::<ExitRecord>(0) else {
            count_lost(EventKind::Exit);
            return 0;
        };
        let ev = entry.as_mut_ptr();
        fill_header(unsafe { &raw mut (*ev).header }, EventKind::Exit, pid_tgid);
        let code: Option<i32> = read_kernel(current_task(), cfg!(task_exit_code));
        unsafe {
            (*ev).exit_code = code.unwrap_or(0) as u32;
            (*ev).exit_code_unknown = code.is_none() as u32;
        }
        entry.submit(submit_flags());
        0
    }

    /// True when the whole thread group is gone: the tracepoint's
    /// `group_dead` where the kernel has it, otherwise the leader's exit.
    #[inline(always)]
    fn is_process_exit(ctx: &TracePointContext, pid_tgid: u64) -> bool {
        let off = cfg!(tp_exit_group_dead);
        if off != UNKNOWN_OFFSET {
            if let Ok(dead) = unsafe { ctx.read_at::<u8>(off as usize) } {
                return dead != 0;
            }
        }
        pid_tgid as u32 == (pid_tgid >> 32) as u32
    }

    #[panic_handler]
    fn panic(_info: &core::panic::PanicInfo) -> ! {
        loop {}
    }
}

#[cfg(not(target_arch = "bpf"))]
fn main() {
    eprintln!(
        "vigil-probe is an eBPF object built for bpfel-unknown-none; it is embedded in vigil-agent"
    );
}
