//! The process family: exec (with the new image's arguments and the
//! executable's resolved path and identity), fork (processes, not
//! threads, with their clone flags), and exit (the last thread's).
use core::ffi::c_void;

use agent_ebpf::{
    config::UNKNOWN_OFFSET,
    process::{
        ExecRecord, ExitRecord, ForkRecord, ARGV_MAX, ENV_MAX, EXEC_ARGV_TRUNCATED,
        EXEC_ARGV_UNREADABLE, EXEC_CAPTURE_ENV, EXEC_ENV_TRUNCATED, EXEC_ENV_UNREADABLE,
        EXEC_EXE_STAT_UNKNOWN, EXEC_EXE_TRUNCATED, EXEC_EXE_UNKNOWN, EXEC_EXE_UNREACHABLE,
        EXEC_FILENAME_TRUNCATED, EXE_MAX, FILENAME_MAX,
    },
    syscall::{SPEC_CLONE3, SPEC_STASH_ONLY},
    EventKind,
};
use aya_ebpf::{
    helpers::{
        bpf_get_current_pid_tgid, bpf_probe_read_kernel_str_bytes, generated::bpf_probe_read_user,
    },
    macros::{raw_tracepoint, tracepoint},
    programs::{RawTracePointContext, TracePointContext},
    EbpfContext,
};

use super::{
    filter::is_ignored,
    header::fill_header,
    maps::{
        count_lost, set_pos, submit_flags, Ring, EXEC_OPTIONS, PENDING, PROCESS_EVENTS, SCRATCH,
        SYSCALL_SPECS,
    },
    path::walk_path,
    task::{current_task, read_kernel, read_via},
};

#[tracepoint(category = "sched", name = "sched_process_exec")]
pub fn sched_process_exec(ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    if is_ignored((pid_tgid >> 32) as u32) {
        return 0;
    }
    let Some(mut entry) = PROCESS_EVENTS.reserve::<ExecRecord>(0) else {
        count_lost(EventKind::Exec);
        return 0;
    };
    let ev = entry.as_mut_ptr();
    fill_header(unsafe { &raw mut (*ev).header }, EventKind::Exec, pid_tgid);
    let mut flags = 0u32;
    unsafe {
        (*ev).filename_len = 0;
        (*ev).exe_len = 0;
        (*ev).exe_nlink = 0;
        (*ev).exe_ino = 0;
        (*ev).exe_dev = 0;
        (*ev).exe_size = 0;
        (*ev).exe_ctime_ns = 0;
        (*ev).exe_mtime_ns = 0;
        (*ev).argv_len = 0;
        (*ev).argv_total_len = 0;
        (*ev).env_len = 0;
        (*ev).env_total_len = 0;
    }
    flags |= read_exec_filename(&ctx, ev);
    flags |= read_exec_argv(ev);
    if EXEC_OPTIONS
        .get(0)
        .is_some_and(|o| o & EXEC_CAPTURE_ENV != 0)
    {
        flags |= read_exec_env(ev);
    }
    flags |= read_exec_exe(ev);
    unsafe { (*ev).flags = flags };
    entry.submit(submit_flags(Ring::Process, true));
    0
}

/// Copies the filename out of the tracepoint record's `__data_loc`.
#[inline(always)]
fn read_exec_filename(ctx: &TracePointContext, ev: *mut ExecRecord) -> u32 {
    let off = config!(tp_exec_filename);
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

/// Resolves `current->mm->exe_file` with the scratch buffer's walk and
/// copies the components into the record.
#[inline(always)]
fn read_exec_exe(ev: *mut ExecRecord) -> u32 {
    let Some(s) = SCRATCH.get_ptr_mut(0) else {
        return EXEC_EXE_UNKNOWN;
    };
    let task = current_task();
    let Some(mm) = read_kernel::<*const u8>(task, config!(task_mm)) else {
        return EXEC_EXE_UNKNOWN;
    };
    let Some(file) = read_kernel::<*const u8>(mm, config!(mm_exe_file)) else {
        return EXEC_EXE_UNKNOWN;
    };
    if file.is_null() || config!(file_f_path) == UNKNOWN_OFFSET {
        return EXEC_EXE_UNKNOWN;
    }
    let path = unsafe { file.add(config!(file_f_path) as usize) };
    let (Some(mnt), Some(dentry)) = (
        read_kernel::<*const u8>(path, config!(path_mnt)),
        read_kernel::<*const u8>(path, config!(path_dentry)),
    ) else {
        return EXEC_EXE_UNKNOWN;
    };
    set_pos(s, 0);
    let (len, truncated, reached) = walk_path(s, mnt, dentry);
    let mut flags = if truncated { EXEC_EXE_TRUNCATED } else { 0 };
    if !reached && !truncated {
        flags |= EXEC_EXE_UNREACHABLE;
    }
    let len = if len > EXE_MAX { EXE_MAX } else { len };
    let data = unsafe { (&raw const (*s).data) as *const c_void };
    let rc = unsafe {
        aya_ebpf::helpers::generated::bpf_probe_read_kernel(
            (&raw mut (*ev).exe) as *mut c_void,
            len as u32,
            data,
        )
    };
    if rc != 0 {
        return EXEC_EXE_UNKNOWN;
    }
    unsafe { (*ev).exe_len = len as u32 };
    flags | read_exe_stat(file, ev)
}

/// The executable's inode identity and times, for the agent's hash
/// cache, deleted-file flag and drift check.
#[inline(always)]
fn read_exe_stat(file: *const u8, ev: *mut ExecRecord) -> u32 {
    let Some(inode) = read_kernel::<*const u8>(file, config!(file_inode)) else {
        return EXEC_EXE_STAT_UNKNOWN;
    };
    let ino: Option<u64> = read_kernel(inode, config!(inode_ino));
    let dev: Option<u32> = read_via(inode, config!(inode_sb), config!(sb_dev));
    let (Some(ino), Some(dev)) = (ino, dev) else {
        return EXEC_EXE_STAT_UNKNOWN;
    };
    let time = |sec_off: u32, nsec_off: u32| -> u64 {
        let sec: i64 = read_kernel(inode, sec_off).unwrap_or(0);
        // Since 6.13 the top bit of i_ctime_nsec flags a queried
        // multigrain time; nanoseconds fit in 30 bits.
        let nsec: u32 = read_kernel::<u32>(inode, nsec_off).unwrap_or(0) & 0x3fff_ffff;
        (sec as u64)
            .wrapping_mul(1_000_000_000)
            .wrapping_add(nsec as u64)
    };
    unsafe {
        (*ev).exe_ino = ino;
        (*ev).exe_dev = dev as u64;
        (*ev).exe_nlink = read_kernel(inode, config!(inode_nlink)).unwrap_or(1);
        (*ev).exe_size = read_kernel(inode, config!(inode_size)).unwrap_or(0);
        (*ev).exe_ctime_ns = time(config!(inode_ctime_sec), config!(inode_ctime_nsec));
        (*ev).exe_mtime_ns = time(config!(inode_mtime_sec), config!(inode_mtime_nsec));
    }
    0
}

/// Copies the new image's argument block (`mm->arg_start..arg_end`).
#[inline(always)]
fn read_exec_argv(ev: *mut ExecRecord) -> u32 {
    let block = unsafe {
        read_mm_block::<ARGV_MAX>(
            config!(mm_arg_start),
            config!(mm_arg_end),
            &raw mut (*ev).argv,
        )
    };
    match block {
        Block::Unreadable => EXEC_ARGV_UNREADABLE,
        Block::Read { len, total } => {
            unsafe {
                (*ev).argv_len = len;
                (*ev).argv_total_len = total;
            }
            if total as usize > ARGV_MAX {
                EXEC_ARGV_TRUNCATED
            } else {
                0
            }
        }
    }
}

/// Copies the new image's environment block (`mm->env_start..env_end`).
#[inline(always)]
fn read_exec_env(ev: *mut ExecRecord) -> u32 {
    let block = unsafe {
        read_mm_block::<ENV_MAX>(
            config!(mm_env_start),
            config!(mm_env_end),
            &raw mut (*ev).env,
        )
    };
    match block {
        Block::Unreadable => EXEC_ENV_UNREADABLE,
        Block::Read { len, total } => {
            unsafe {
                (*ev).env_len = len;
                (*ev).env_total_len = total;
            }
            if total as usize > ENV_MAX {
                EXEC_ENV_TRUNCATED
            } else {
                0
            }
        }
    }
}

/// What [`read_mm_block`] got.
enum Block {
    Unreadable,
    /// `len` bytes copied of a block of `total`.
    Read {
        len: u32,
        total: u32,
    },
}

/// Copies the current task's user memory between the `mm_struct` fields
/// at `start_off` and `end_off` (the argument or environment block) into
/// `dst`, at most `N` bytes.
#[inline(always)]
fn read_mm_block<const N: usize>(start_off: u32, end_off: u32, dst: *mut [u8; N]) -> Block {
    let Some(mm) = read_kernel::<*const u8>(current_task(), config!(task_mm)) else {
        return Block::Unreadable;
    };
    let (Some(start), Some(end)) = (
        read_kernel::<u64>(mm, start_off),
        read_kernel::<u64>(mm, end_off),
    ) else {
        return Block::Unreadable;
    };
    if end <= start {
        return Block::Read { len: 0, total: 0 };
    }
    let total = end - start;
    let len = (total as usize).min(N);
    let rc = unsafe { bpf_probe_read_user(dst as *mut c_void, len as u32, start as *const c_void) };
    if rc != 0 {
        return Block::Unreadable;
    }
    Block::Read {
        len: len as u32,
        total: total.min(u32::MAX as u64) as u32,
    }
}

/// `sched_process_fork(struct task_struct *parent, struct task_struct *child)`.
/// Raw, so the child's task is at hand and thread creation is dropped
/// here instead of being copied to userspace.
#[raw_tracepoint(tracepoint = "sched_process_fork")]
pub fn sched_process_fork(ctx: RawTracePointContext) -> i32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    if is_ignored((pid_tgid >> 32) as u32) {
        return 0;
    }
    let child: *const u8 = ctx.arg::<u64>(1) as *const u8;
    let child_pid: u32 = read_kernel(child, config!(task_pid)).unwrap_or(0);
    let child_tgid: u32 = read_kernel(child, config!(task_tgid)).unwrap_or(0);
    if child_pid != child_tgid {
        return 0;
    }
    let Some(mut entry) = PROCESS_EVENTS.reserve::<ForkRecord>(0) else {
        count_lost(EventKind::Fork);
        return 0;
    };
    let ev = entry.as_mut_ptr();
    fill_header(unsafe { &raw mut (*ev).header }, EventKind::Fork, pid_tgid);
    let flags = clone_flags_of(pid_tgid);
    unsafe {
        (*ev).child_pid = child_pid;
        (*ev).flags_known = flags.is_some() as u32;
        (*ev).clone_flags = flags.unwrap_or(0);
        (*ev).child_start_boottime_ns =
            read_kernel(child, config!(task_start_boottime)).unwrap_or(0);
    }
    entry.submit(submit_flags(Ring::Process, false));
    0
}

/// The flags of the clone/clone3 the parent is in, from the arguments
/// its sys_enter stashed.
#[inline(always)]
fn clone_flags_of(pid_tgid: u64) -> Option<u64> {
    let p = unsafe { PENDING.get(&pid_tgid) }?;
    let spec = SYSCALL_SPECS.get(p.nr)?;
    if spec.spec_flags & SPEC_STASH_ONLY == 0 {
        return None;
    }
    if spec.spec_flags & SPEC_CLONE3 != 0 {
        // struct clone_args { __u64 flags; ... }
        unsafe { aya_ebpf::helpers::bpf_probe_read_user(p.args[0] as *const u64) }.ok()
    } else {
        Some(p.args[0])
    }
}

#[tracepoint(category = "sched", name = "sched_process_exit")]
pub fn sched_process_exit(ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    if is_ignored(tgid) || !is_process_exit(&ctx, pid_tgid) {
        return 0;
    }
    let Some(mut entry) = PROCESS_EVENTS.reserve::<ExitRecord>(0) else {
        count_lost(EventKind::Exit);
        return 0;
    };
    let ev = entry.as_mut_ptr();
    fill_header(unsafe { &raw mut (*ev).header }, EventKind::Exit, pid_tgid);
    let code: Option<i32> = read_kernel(current_task(), config!(task_exit_code));
    unsafe {
        (*ev).exit_code = code.unwrap_or(0) as u32;
        (*ev).exit_code_unknown = code.is_none() as u32;
    }
    entry.submit(submit_flags(Ring::Process, false));
    0
}

/// True when the whole thread group is gone: the tracepoint's
/// `group_dead` where the kernel has it, otherwise the leader's exit.
#[inline(always)]
fn is_process_exit(ctx: &TracePointContext, pid_tgid: u64) -> bool {
    let off = config!(tp_exit_group_dead);
    if off != UNKNOWN_OFFSET {
        if let Ok(dead) = unsafe { ctx.read_at::<u8>(off as usize) } {
            return dead != 0;
        }
    }
    pid_tgid as u32 == (pid_tgid >> 32) as u32
}
