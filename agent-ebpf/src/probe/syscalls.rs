//! The syscall engine: one enter and one exit program serve every followed
//! syscall of the file, control and network families. The agent fills
//! `SYSCALL_SPECS` with each syscall's argument positions and family, so
//! following a new syscall is a row in its table, not new kernel code. At
//! enter the arguments are stashed per thread; at exit the record is
//! assembled in the scratch buffer (paths resolved, addresses copied) and
//! sent with the result.
use agent_ebpf::{
    network::NetOp,
    syscall::{
        ArgSpec, PendingSyscall, SyscallRecord, AT_FDCWD, MAX_SYSCALL_NR, NO_ARG,
        SPEC_FLAGS_IN_OPEN_HOW, SPEC_PATH1_FD, SPEC_PATH1_SOCKADDR, SPEC_PATH1_STRING,
        SPEC_PATH2_STRING, SPEC_STASH_ONLY, SPEC_VIA_RAW, SYSCALL_DATA_MAX,
    },
    EventKind, ProbeCounter,
};
use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_get_current_uid_gid},
    macros::{raw_tracepoint, tracepoint},
    programs::{RawTracePointContext, TracePointContext},
};

use super::{
    filter::is_ignored,
    header::fill_header,
    maps::{
        count, count_lost, get_pos, set_pos, submit_flags, SyscallScratch, EVENTS, PENDING,
        SCRATCH, SYSCALL_SPECS,
    },
    network::{copy_send_payload, copy_sockaddr, send_dport, socket_family},
    path::{copy_fd_path, copy_path_and_base},
    task::{current_task, read_kernel},
};

const SYSCALL_NR_OFFSET: usize = 8;
const SYSCALL_ARGS_OFFSET: usize = 16;
const SYSCALL_RET_OFFSET: usize = 16;

#[tracepoint]
pub fn syscall_enter(ctx: TracePointContext) -> u32 {
    sys_enter(&ctx, false)
}

#[tracepoint]
pub fn syscall_exit(ctx: TracePointContext) -> u32 {
    sys_exit(&ctx, false)
}

/// Raw `sys_enter(struct pt_regs *regs, long id)`: runs for every
/// syscall, so it returns after one map lookup unless the number is one
/// the running kernel has no `syscalls:*` tracepoint for
/// (`SPEC_VIA_RAW`). Attached only then. A raw tracepoint, not the
/// classic `raw_syscalls` one, because the classic one builds a perf
/// record for every syscall before the program even runs.
#[raw_tracepoint(tracepoint = "sys_enter")]
pub fn raw_sys_enter(ctx: RawTracePointContext) -> i32 {
    let regs = ctx.arg::<u64>(0) as *const u8;
    let nr = ctx.arg::<i64>(1);
    if nr < 0 || nr >= MAX_SYSCALL_NR as i64 || spec_for(nr as u32, true).is_none() {
        return 0;
    }
    let mut args = [0u64; 6];
    for i in 0..6 {
        args[i] = read_kernel::<u64>(regs, config!(regs_args)[i]).unwrap_or(0);
    }
    sys_enter_args(nr as i32, args, true);
    0
}

/// Raw `sys_exit(struct pt_regs *regs, long ret)`.
#[raw_tracepoint(tracepoint = "sys_exit")]
pub fn raw_sys_exit(ctx: RawTracePointContext) -> i32 {
    let regs = ctx.arg::<u64>(0) as *const u8;
    if let Some(nr) = read_kernel::<i64>(regs, config!(regs_nr)) {
        if nr < 0 || nr >= MAX_SYSCALL_NR as i64 || spec_for(nr as u32, true).is_none() {
            return 0;
        }
    }
    let ret = ctx.arg::<i64>(1);
    sys_exit_ret(ret, true);
    0
}

/// The spec for this record's syscall, if it is followed through the
/// kind of hook that is running (`via_raw`), so nothing is reported twice.
#[inline(always)]
fn spec_for(nr: u32, via_raw: bool) -> Option<&'static ArgSpec> {
    let spec = SYSCALL_SPECS.get(nr)?;
    let raw = spec.spec_flags & SPEC_VIA_RAW != 0;
    (spec.op != 0 && raw == via_raw).then_some(spec)
}

#[inline(always)]
fn sys_enter(ctx: &TracePointContext, via_raw: bool) -> u32 {
    let Ok(nr) = (unsafe { ctx.read_at::<i32>(SYSCALL_NR_OFFSET) }) else {
        return 0;
    };
    let mut args = [0u64; 6];
    for i in 0..6 {
        args[i] = unsafe { ctx.read_at::<u64>(SYSCALL_ARGS_OFFSET + 8 * i) }.unwrap_or(0);
    }
    sys_enter_args(nr, args, via_raw);
    0
}

#[inline(always)]
fn sys_enter_args(nr: i32, args: [u64; 6], via_raw: bool) {
    let pid_tgid = bpf_get_current_pid_tgid();
    if nr < 0 || is_ignored((pid_tgid >> 32) as u32) {
        return;
    }
    let Some(spec) = spec_for(nr as u32, via_raw) else {
        return;
    };
    let mut p = PendingSyscall {
        nr: nr as u32,
        _pad: 0,
        args,
        old_ids: [0; 4],
        old_caps: [0; 3],
    };
    if spec.family == EventKind::Control as u8 {
        stash_old_creds(&mut p);
    }
    // dup2/dup3 name the target fd (their `mode` slot): only 0, 1 and 2
    // matter, and shells dup onto higher fds all the time.
    if spec.family == EventKind::Network as u8
        && spec.op == NetOp::Dup as u8
        && arg(&p, spec.mode).is_some_and(|fd| !(0..=2).contains(&(fd as i32)))
    {
        return;
    }
    // Sends are followed only to port 53: decide here, before anything
    // is stored, so other traffic costs one check.
    if spec.variant != 0 && send_dport(spec.variant, &p) != 53 {
        return;
    }
    let _ = PENDING.insert(&pid_tgid, &p, 0);
}

#[inline(always)]
fn sys_exit(ctx: &TracePointContext, via_raw: bool) -> u32 {
    let result = unsafe { ctx.read_at::<i64>(SYSCALL_RET_OFFSET) }.unwrap_or(0);
    sys_exit_ret(result, via_raw);
    0
}

/// Emits the record of the syscall this thread stashed, if it is one
/// followed through this kind of hook.
#[inline(always)]
fn sys_exit_ret(result: i64, via_raw: bool) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let Some(pending) = (unsafe { PENDING.get(&pid_tgid) }) else {
        return;
    };
    let pending = *pending;
    let Some(spec) = spec_for(pending.nr, via_raw) else {
        return;
    };
    let spec = *spec;
    let _ = PENDING.remove(&pid_tgid);
    if spec.spec_flags & SPEC_STASH_ONLY != 0 {
        return;
    }
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else {
        return;
    };
    emit_syscall(scratch, &spec, &pending, result, pid_tgid);
}

#[inline(always)]
fn arg(p: &PendingSyscall, idx: u8) -> Option<u64> {
    if idx == NO_ARG || idx >= 6 {
        None
    } else {
        Some(p.args[(idx & 7) as usize % 6])
    }
}

#[inline(always)]
fn dirfd_of(p: &PendingSyscall, idx: u8) -> i32 {
    arg(p, idx).map_or(AT_FDCWD, |v| v as i32)
}

#[inline(never)]
fn emit_syscall(
    s: *mut SyscallScratch,
    spec: &ArgSpec,
    p: &PendingSyscall,
    result: i64,
    pid_tgid: u64,
) {
    let rec = unsafe { &raw mut (*s).rec };
    // Only these families travel as syscall records; anything else is a
    // table the probe was not built for, counted rather than mislabelled.
    let kind = match EventKind::from_repr(spec.family as u32) {
        Some(k @ (EventKind::File | EventKind::Control | EventKind::Network)) => k,
        _ => {
            count(ProbeCounter::UnknownFamily);
            return;
        }
    };
    let mut mode_val = arg(p, spec.mode).unwrap_or(0) as u32;
    if kind == EventKind::Network && spec.op == NetOp::Dup as u8 {
        // Only a socket landing on stdin/stdout/stderr matters; shells
        // dup files onto them all the time.
        if !(0..=2).contains(&result) {
            return;
        }
        match socket_family(result as i32) {
            Some(f) => mode_val = f as u32,
            None => return,
        }
    }
    fill_header(unsafe { &raw mut (*rec).header }, kind, pid_tgid);
    let mut flags_val = arg(p, spec.flags).unwrap_or(0);
    if spec.spec_flags & SPEC_FLAGS_IN_OPEN_HOW != 0 {
        // openat2: flags is the first u64 of struct open_how.
        flags_val =
            unsafe { aya_ebpf::helpers::bpf_probe_read_user(flags_val as *const u64) }.unwrap_or(0);
    }
    let dirfd = dirfd_of(p, spec.dirfd);
    let dirfd2 = dirfd_of(p, spec.dirfd2);
    set_pos(s, 0);
    let mut path_flags = 0u32;

    let (p1, b1, f1) = if spec.spec_flags & SPEC_PATH1_FD != 0 {
        copy_fd_path(s, arg(p, spec.path))
    } else if spec.spec_flags & SPEC_PATH1_SOCKADDR != 0 {
        copy_sockaddr(s, arg(p, spec.path))
    } else {
        copy_path_and_base(
            s,
            arg(p, spec.path),
            dirfd,
            spec.spec_flags & SPEC_PATH1_STRING != 0,
        )
    };
    path_flags |= f1;
    let (p2, b2, f2) = if spec.variant != 0 {
        (copy_send_payload(s, spec.variant, p), 0, 0)
    } else {
        copy_path_and_base(
            s,
            arg(p, spec.path2),
            dirfd2,
            spec.spec_flags & SPEC_PATH2_STRING != 0,
        )
    };
    // The second path's flags sit one bit above the first's.
    path_flags |= f2 << 1;

    unsafe {
        (*rec).op = spec.op as u32;
        (*rec).syscall_nr = p.nr;
        (*rec).args = p.args;
        (*rec).old_ids = p.old_ids;
        (*rec).old_caps = p.old_caps;
        (*rec).result = result;
        (*rec).flags = flags_val;
        (*rec).mode = mode_val;
        (*rec).uid = arg(p, spec.uid).unwrap_or(u32::MAX as u64) as u32;
        (*rec).gid = arg(p, spec.gid).unwrap_or(u32::MAX as u64) as u32;
        (*rec).dirfd = dirfd;
        (*rec).dirfd2 = dirfd2;
        (*rec).path_flags = path_flags;
        (*rec).path1_len = p1 as u16;
        (*rec).base1_len = b1 as u16;
        (*rec).path2_len = p2 as u16;
        (*rec).base2_len = b2 as u16;
    }
    let mut total = core::mem::size_of::<SyscallRecord>() + get_pos(s);
    if total > core::mem::size_of::<SyscallRecord>() + SYSCALL_DATA_MAX {
        total = core::mem::size_of::<SyscallRecord>() + SYSCALL_DATA_MAX;
    }
    let bytes = unsafe { core::slice::from_raw_parts(s as *const u8, total) };
    if EVENTS.output::<[u8]>(bytes, submit_flags()).is_err() {
        count_lost(kind);
    }
}

/// The scratch write position, masked into `data`'s bounds.

/// The caller's credentials before a control syscall changes them.
#[inline(always)]
fn stash_old_creds(p: &mut PendingSyscall) {
    let uid_gid = bpf_get_current_uid_gid();
    p.old_ids[0] = uid_gid as u32;
    p.old_ids[2] = (uid_gid >> 32) as u32;
    let Some(cred) = read_kernel::<*const u8>(current_task(), config!(task_cred)) else {
        return;
    };
    p.old_ids[1] = read_kernel(cred, config!(cred_euid)).unwrap_or(u32::MAX);
    p.old_ids[3] = read_kernel(cred, config!(cred_egid)).unwrap_or(u32::MAX);
    p.old_caps[0] = read_kernel(cred, config!(cred_cap_effective)).unwrap_or(0);
    p.old_caps[1] = read_kernel(cred, config!(cred_cap_permitted)).unwrap_or(0);
    p.old_caps[2] = read_kernel(cred, config!(cred_cap_inheritable)).unwrap_or(0);
}
