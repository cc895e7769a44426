//! The syscall engine: one enter and one exit program serve every followed
//! syscall of the file, control and network families. The agent fills
//! `SYSCALL_SPECS` with each syscall's argument positions, family and hook
//! bits, so following a new syscall is a row in its table, not new kernel
//! code.
//!
//! Most syscalls are caught at exit alone: the arguments are read from the
//! task's saved registers, which still hold them, so there is one
//! tracepoint per call and no map write. Only those whose state before the
//! call matters (`HOOK_AT_ENTER`: the credentials a setuid changes, clone's
//! flags for the fork event) are stashed at entry. Opens pass through the
//! rules' filter (`OPEN_FILTER`) before anything is copied; what passes is
//! assembled in the scratch buffer (paths resolved, addresses copied) and
//! sent with the result.
use agent_ebpf::{
    network::NetOp,
    syscall::{
        ArgSpec, PathKeyData, PendingSyscall, SyscallRecord, AT_FDCWD, CLAUSE_SUCCESS_ONLY,
        CLAUSE_WAKE, HOOK_AT_ENTER, HOOK_OPEN_FILTER, HOOK_WAKE, MAX_SYSCALL_NR, NO_ARG,
        OPEN_CLAUSES, PATH_FILTER_BYTES, SPEC2_NULL_PATH_IS_DIRFD, SPEC_FLAGS_IN_OPEN_HOW,
        SPEC_PATH1_FD, SPEC_PATH1_SOCKADDR, SPEC_PATH1_STRING, SPEC_PATH2_STRING, SPEC_STASH_ONLY,
        SPEC_VIA_RAW, SYSCALL_DATA_MAX,
    },
    EventKind, ProbeCounter,
};
use aya_ebpf::{
    helpers::{
        bpf_get_current_pid_tgid, bpf_get_current_uid_gid,
        generated::{bpf_probe_read_user_str, bpf_task_pt_regs},
    },
    macros::{raw_tracepoint, tracepoint},
    maps::lpm_trie::Key,
    programs::{RawTracePointContext, TracePointContext},
    EbpfContext,
};

use super::{
    filter::is_ignored,
    header::fill_header,
    maps::{
        count, count_lost, get_pos, set_pos, submit_flags, Ring, SyscallScratch, EVENTS,
        OPEN_FILTER, PATH_PREFIXES, PENDING, SCRATCH, SEND_DESTS, SYSCALL_SPECS,
    },
    network::{
        copy_send_payload, copy_sockaddr, inet_dest_hash, send_addr, send_dport, socket_family,
        socket_type, SOCK_DGRAM,
    },
    path::{copy_fd_path, copy_path_and_base},
    task::{current_task_btf, load, read_kernel},
};

const SYSCALL_NR_OFFSET: usize = 8;
const SYSCALL_ARGS_OFFSET: usize = 16;
const SYSCALL_RET_OFFSET: usize = 16;

/// `syscalls:sys_enter_*`, attached only for `HOOK_AT_ENTER` syscalls.
#[tracepoint]
pub fn syscall_enter(ctx: TracePointContext) -> u32 {
    let Ok(nr) = (unsafe { ctx.read_at::<i32>(SYSCALL_NR_OFFSET) }) else {
        return 0;
    };
    let mut args = [0u64; 6];
    for i in 0..6 {
        args[i] = unsafe { ctx.read_at::<u64>(SYSCALL_ARGS_OFFSET + 8 * i) }.unwrap_or(0);
    }
    sys_enter_args(nr, args, false);
    0
}

/// `syscalls:sys_exit_*`, attached for every followed syscall.
#[tracepoint]
pub fn syscall_exit(ctx: TracePointContext) -> u32 {
    // The record is the program's context: plain loads, not helper calls.
    let (nr, result) = unsafe {
        let rec = ctx.as_ptr() as *const u8;
        (
            core::ptr::read_volatile(rec.add(SYSCALL_NR_OFFSET) as *const i32),
            core::ptr::read_volatile(rec.add(SYSCALL_RET_OFFSET) as *const i64),
        )
    };
    sys_exit_ret(nr, result, false);
    0
}

/// Raw `sys_enter(struct pt_regs *regs, long id)`: runs for every
/// syscall, so it returns after one map lookup unless the number is one
/// the running kernel has no `syscalls:*` tracepoint for
/// (`SPEC_VIA_RAW`). Attached only when asked for and needed. A raw
/// tracepoint, not the classic `raw_syscalls` one, because the classic one
/// builds a perf record for every syscall before the program even runs.
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
    let Some(nr) = read_kernel::<i64>(regs, config!(regs_nr)) else {
        return 0;
    };
    if nr < 0 || nr >= MAX_SYSCALL_NR as i64 || spec_for(nr as u32, true).is_none() {
        return 0;
    }
    let ret = ctx.arg::<i64>(1);
    sys_exit_ret(nr as i32, ret, true);
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

/// Stashes the arguments (and, for the control family, the credentials
/// before the call) of a syscall that needs them from its entry.
#[inline(always)]
fn sys_enter_args(nr: i32, args: [u64; 6], via_raw: bool) {
    let pid_tgid = bpf_get_current_pid_tgid();
    if nr < 0 || is_ignored((pid_tgid >> 32) as u32) {
        return;
    }
    let Some(spec) = spec_for(nr as u32, via_raw) else {
        return;
    };
    if spec.hook & HOOK_AT_ENTER == 0 && !via_raw {
        return;
    }
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
    if PENDING.insert(&pid_tgid, &p, 0).is_err() {
        count(ProbeCounter::PendingLost);
    }
}

/// The registers the task saved on entering the syscall it is leaving
/// (`task_pt_regs`): the syscall ABI leaves the arguments there as they
/// were at entry, for every syscall followed at exit alone.
#[inline(always)]
fn saved_regs() -> *const u8 {
    let task = current_task_btf();
    unsafe { bpf_task_pt_regs(task as *mut _) as *const u8 }
}

/// Argument `idx` from the saved registers. One arm per argument: the
/// verifier accepts a direct load only at an offset it knows.
#[inline(always)]
fn reg_arg(regs: *const u8, idx: u8) -> Option<u64> {
    let offset = match idx {
        0 => config!(regs_args)[0],
        1 => config!(regs_args)[1],
        2 => config!(regs_args)[2],
        3 => config!(regs_args)[3],
        4 => config!(regs_args)[4],
        5 => config!(regs_args)[5],
        _ => return None,
    };
    load::<u64>(regs, offset)
}

/// Every argument from the saved registers.
#[inline(always)]
fn args_from_regs(regs: *const u8, nr: i32) -> PendingSyscall {
    let mut args = [0u64; 6];
    for i in 0..6 {
        args[i] = load::<u64>(regs, config!(regs_args)[i]).unwrap_or(0);
    }
    PendingSyscall {
        nr: nr as u32,
        _pad: 0,
        args,
        old_ids: [0; 4],
        old_caps: [0; 3],
    }
}

/// Emits the record of a followed syscall leaving with `result`, unless a
/// kernel-side filter drops it first.
#[inline(always)]
fn sys_exit_ret(nr: i32, result: i64, via_raw: bool) {
    if nr < 0 {
        return;
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    let Some(spec) = spec_for(nr as u32, via_raw) else {
        return;
    };
    let spec = *spec;
    if spec.hook & HOOK_AT_ENTER != 0 || via_raw {
        let Some(pending) = (unsafe { PENDING.get(&pid_tgid) }) else {
            // Evicted from the LRU table under load. Not counted: an
            // excluded process (never stored), and clone's child, which
            // returns from a call it never entered.
            if spec.spec_flags & SPEC_STASH_ONLY == 0 && !is_ignored((pid_tgid >> 32) as u32) {
                count(ProbeCounter::PendingLost);
            }
            return;
        };
        let pending = *pending;
        let _ = PENDING.remove(&pid_tgid);
        if pending.nr != nr as u32 || spec.spec_flags & SPEC_STASH_ONLY != 0 {
            return;
        }
        emit_checked(&spec, &pending, result, spec.hook & HOOK_WAKE != 0);
        return;
    }
    if is_ignored((pid_tgid >> 32) as u32) {
        return;
    }
    let regs = saved_regs();
    let mut may_alert = spec.hook & HOOK_WAKE != 0;
    // The open filter reads only the two arguments it tests.
    if spec.hook & HOOK_OPEN_FILTER != 0 {
        match open_verdict(
            &spec,
            reg_arg(regs, spec.flags),
            reg_arg(regs, spec.path),
            result,
        ) {
            Some(wake) => may_alert = wake,
            None => return,
        }
    }
    emit_checked(&spec, &args_from_regs(regs, nr), result, may_alert);
}

/// The last checks before a record is assembled and sent.
#[inline(always)]
fn emit_checked(spec: &ArgSpec, pending: &PendingSyscall, result: i64, may_alert: bool) {
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else {
        return;
    };
    unsafe { (*scratch).send_addr = 0 };
    // Sends: to port 53, a DNS query with its payload. Otherwise only a
    // successful send on an unconnected datagram inet socket to a
    // destination it did not send to last (Falco's fd.name_changed): the
    // address, never the payload. Other traffic costs a check or two.
    // One call of emit_syscall for every case: each call site is verified
    // on its own.
    if spec.variant != 0 {
        let addr = send_addr(spec.variant, pending);
        if send_dport(addr, pending) != 53 {
            if addr == 0 || result < 0 || !new_send_destination(addr, pending.args[0]) {
                return;
            }
            unsafe { (*scratch).send_addr = addr };
        }
    }
    emit_syscall(scratch, spec, pending, result, may_alert);
}

/// Whether a send to user address `addr` on socket `fd` goes somewhere the
/// process did not send to last on it (remembering it if so): inet
/// datagram sockets only (a TCP Fast Open sendto is a connect, and shows
/// as one).
#[inline(always)]
fn new_send_destination(addr: u64, fd: u64) -> bool {
    let Some(dest) = inet_dest_hash(addr) else {
        return false;
    };
    // The repeat, the common case, is turned away first: one lookup.
    let key = (bpf_get_current_pid_tgid() & 0xffff_ffff_0000_0000) | (fd & 0xffff_ffff);
    if unsafe { SEND_DESTS.get(&key) }.is_some_and(|&last| last == dest) {
        return false;
    }
    if socket_type(fd as i32) != Some(SOCK_DGRAM) {
        return false;
    }
    let _ = SEND_DESTS.insert(&key, &dest, 0);
    true
}

/// Whether an open passes a clause of the rules' filter, and if so whether
/// it may raise an alert. None: no loaded rule can match it.
#[inline(always)]
fn open_verdict(
    spec: &ArgSpec,
    flags_arg: Option<u64>,
    path_arg: Option<u64>,
    result: i64,
) -> Option<bool> {
    let Some(filter) = OPEN_FILTER.get(0) else {
        return Some(true);
    };
    let mut flags = flags_arg.unwrap_or(0);
    if spec.spec_flags & SPEC_FLAGS_IN_OPEN_HOW != 0 {
        // openat2: flags is the first u64 of struct open_how.
        flags = unsafe { aya_ebpf::helpers::bpf_probe_read_user(flags as *const u64) }.unwrap_or(0);
    }
    // The LPM key, as words: its length and the clause's set id, then the
    // path (a zero word after it for the scan).
    let mut key = [0u64; 11];
    // 0: not read yet; 1: placeable (absolute, normalised); 2: only the
    // agent can place it (relative, `.`/`..`, `//`, unreadable).
    let mut path_state = 0u8;
    // The path's last component and its NUL, keyed like `key`, once a
    // clause tests names.
    let mut name = [0u64; 11];
    let mut name_read = false;
    let mut name_ok = false;
    let mut name_found = false;
    let mut name_start = 0u64;
    let mut pass = false;
    let mut wake = false;
    for i in 0..OPEN_CLAUSES {
        if i as u32 >= filter.count {
            break;
        }
        let c = &filter.clauses[i];
        if c.opts & CLAUSE_SUCCESS_ONLY != 0 && result < 0 {
            continue;
        }
        if c.flags_any != 0 && flags & c.flags_any == 0 {
            continue;
        }
        if c.path_set != 0 || c.name_set != 0 {
            if path_state == 0 {
                path_state = read_filter_path(path_arg, &mut key);
            }
            if path_state == 1 {
                if c.path_set != 0 {
                    key[0] = (key[0] & 0xffff_ffff) | ((c.path_set as u64) << 32);
                    let k = unsafe { &*(key.as_ptr() as *const Key<PathKeyData>) };
                    if PATH_PREFIXES.get(k).is_none() {
                        continue;
                    }
                }
                if c.name_set != 0 {
                    if !name_found {
                        name_start = last_component_start(&key);
                        name_found = true;
                    }
                    // The component's length and first byte first: most
                    // opens stop here, without a copy or a lookup.
                    let len = ((key[0] & 0xffff_ffff).wrapping_sub(32) / 8) & 63;
                    let comp_len = len.wrapping_sub(name_start) & 63;
                    let first = unsafe {
                        *(key.as_ptr().add(1) as *const u8).add((name_start & 63) as usize)
                    };
                    if c.name_lens & (1u64 << comp_len) == 0
                        || c.name_firsts & (1u64 << (first & 63)) == 0
                    {
                        continue;
                    }
                    if !name_read {
                        name_ok = copy_component(&key, name_start, &mut name);
                        name_read = true;
                    }
                    // A component the probe could not copy passes.
                    name[0] = (32 + 8 * 64) | ((c.name_set as u64) << 32);
                    let k = unsafe { &*(name.as_ptr() as *const Key<PathKeyData>) };
                    if name_ok && PATH_PREFIXES.get(k).is_none() {
                        continue;
                    }
                }
            }
        }
        pass = true;
        wake |= c.opts & CLAUSE_WAKE != 0;
    }
    pass.then_some(wake)
}

/// Reads the first bytes of a path argument into the prefix key (after its
/// length and set id) and sets the key's length. Returns 1 when the path is
/// absolute, normalised and whole in the window, so a prefix test decides
/// it; 2 when it is not (relative, with a `.` or `..` component, a doubled
/// slash, longer than the window, or unreadable), and must pass.
#[inline(always)]
fn read_filter_path(user: Option<u64>, key: &mut [u64; 11]) -> u8 {
    let Some(ptr) = user else {
        return 2;
    };
    let n = unsafe {
        bpf_probe_read_user_str(
            key.as_mut_ptr().add(1) as *mut core::ffi::c_void,
            (PATH_FILTER_BYTES + 1) as u32,
            ptr as *const core::ffi::c_void,
        )
    };
    if n <= 1 || key[1] as u8 != b'/' {
        return 2;
    }
    // A path that fills the window may go on past it, and a `..` there
    // (`/tmp/<60 bytes>/../../etc/shadow`) would land it anywhere: only
    // the agent, which normalises the whole path, can place it.
    if n as usize > PATH_FILTER_BYTES {
        return 2;
    }
    if odd_components(key) {
        return 2;
    }
    let len = (n as u64 - 1) & 63;
    // A path ending in `/` (`/root/.ssh/`) names the directory before it,
    // whose name the probe does not isolate: only the agent can place it.
    let last =
        unsafe { *(key.as_ptr().add(1) as *const u8).add((len.wrapping_sub(1) & 63) as usize) };
    if last == b'/' && len > 1 {
        return 2;
    }
    key[0] = 32 + 8 * len;
    1
}

/// Where the last component of the path in `key[1..]` starts: the byte
/// after its last `/` (the path is absolute and whole, zero after it).
/// Found a word at a time without branches: a byte loop's states would
/// multiply in the verifier.
#[inline(always)]
fn last_component_start(key: &[u64; 11]) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    // 0x80 in each byte of `v` that is zero, exactly.
    let zero = |v: u64| !(((v & LOW7).wrapping_add(LOW7)) | v | LOW7);
    let mut start = 0u64;
    for k in 1..9 {
        let slash = zero(key[k] ^ (ONES * b'/' as u64));
        // 1 when the word holds a `/`; then the byte after its highest.
        let has = (slash | slash.wrapping_neg()) >> 63;
        let top = 63u64.wrapping_sub(slash.leading_zeros() as u64) / 8;
        let after = (k as u64 - 1) * 8 + top + 1;
        start = start
            .wrapping_mul(1 - has)
            .wrapping_add(after.wrapping_mul(has));
    }
    start & 63
}

/// Copies the component starting at byte `start` of the path in
/// `key[1..]` to `name[1..]`: a name entry of `PATH_PREFIXES` (the name
/// and its NUL) matches it exactly; what follows the NUL is never
/// compared. One helper call; false when it failed.
#[inline(always)]
fn copy_component(key: &[u64; 11], start: u64, name: &mut [u64; 11]) -> bool {
    let src = unsafe { (key.as_ptr().add(1) as *const u8).add((start & 63) as usize) };
    let dst = unsafe {
        core::slice::from_raw_parts_mut(name.as_mut_ptr().add(1) as *mut u8, PATH_FILTER_BYTES + 1)
    };
    unsafe { aya_ebpf::helpers::bpf_probe_read_kernel_buf(src, dst) }.is_ok()
}

/// Whether the path in `key[1..]` (little-endian bytes, zero after it) has
/// a component that is `.` or `..`, or an empty one (`//`): then the string
/// is not the path it names. Computed a word at a time without branches,
/// so the verifier walks it once.
#[inline(always)]
fn odd_components(key: &[u64; 11]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    // 0x80 in each byte of `v` that is zero, exactly.
    let zero = |v: u64| !(((v & LOW7).wrapping_add(LOW7)) | v | LOW7);
    let eq = |v: u64, c: u8| zero(v ^ (ONES * c as u64));
    let mut odd = 0u64;
    for k in 1..9 {
        let (w, next) = (key[k], key[k + 1]);
        // The bytes one, two and three places after each byte of `w`.
        let b = (w >> 8) | (next << 56);
        let c = (w >> 16) | (next << 48);
        let d = (w >> 24) | (next << 40);
        let end_c = zero(c) | eq(c, b'/');
        let end_d = zero(d) | eq(d, b'/');
        let dots = eq(b, b'.') & (end_c | (eq(c, b'.') & end_d));
        odd |= eq(w, b'/') & (eq(b, b'/') | dots);
    }
    odd != 0
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
    may_alert: bool,
) {
    let pid_tgid = bpf_get_current_pid_tgid();
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

    // The file behind an fd: an fd argument, or utimensat's dirfd when
    // its path is NULL (futimens).
    let path_fd = if spec.spec_flags & SPEC_PATH1_FD != 0 {
        arg(p, spec.path)
    } else if spec.spec_flags2 & SPEC2_NULL_PATH_IS_DIRFD != 0 && arg(p, spec.path) == Some(0) {
        Some(dirfd as u64)
    } else {
        None
    };
    let send_to = unsafe { (*s).send_addr };
    let (p1, b1, f1) = if path_fd.is_some() {
        copy_fd_path(s, path_fd)
    } else if send_to != 0 {
        copy_sockaddr(s, Some(send_to))
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
    let (p2, b2, f2) = if send_to != 0 {
        (0, 0, 0)
    } else if spec.variant != 0 {
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
        (*rec).op = if send_to != 0 {
            NetOp::Send as u32
        } else {
            spec.op as u32
        };
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
    if EVENTS
        .output::<[u8]>(bytes, submit_flags(Ring::Syscalls, may_alert))
        .is_err()
    {
        count_lost(kind);
    }
}

/// The caller's credentials before a control syscall changes them.
#[inline(always)]
fn stash_old_creds(p: &mut PendingSyscall) {
    let uid_gid = bpf_get_current_uid_gid();
    p.old_ids[0] = uid_gid as u32;
    p.old_ids[2] = (uid_gid >> 32) as u32;
    let Some(cred) = load::<*const u8>(current_task_btf(), config!(task_cred)) else {
        return;
    };
    p.old_ids[1] = load(cred, config!(cred_euid)).unwrap_or(u32::MAX);
    p.old_ids[3] = load(cred, config!(cred_egid)).unwrap_or(u32::MAX);
    p.old_caps[0] = load(cred, config!(cred_cap_effective)).unwrap_or(0);
    p.old_caps[1] = load(cred, config!(cred_cap_permitted)).unwrap_or(0);
    p.old_caps[2] = load(cred, config!(cred_cap_inheritable)).unwrap_or(0);
}
