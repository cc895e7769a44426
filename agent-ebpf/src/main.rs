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
        config::{
            ExeKey, ProbeConfig, EXCLUDE_CGROUPS, EXCLUDE_EXES, MAX_EXCLUSIONS, UNKNOWN_OFFSET,
        },
        network::{
            NetOp, DNS_PAYLOAD_MAX, SEND_VARIANT_SENDMMSG, SEND_VARIANT_SENDMSG,
            SEND_VARIANT_SENDTO, SOCKADDR_MAX,
        },
        process::{
            ExecRecord, ExitRecord, ForkRecord, ARGV_MAX, EXEC_ARGV_TRUNCATED,
            EXEC_ARGV_UNREADABLE, EXEC_EXE_STAT_UNKNOWN, EXEC_EXE_TRUNCATED, EXEC_EXE_UNKNOWN,
            EXEC_EXE_UNREACHABLE, EXEC_FILENAME_TRUNCATED, EXE_MAX, FILENAME_MAX,
        },
        syscall::{
            ArgSpec, PendingSyscall, SyscallRecord as FileRecord, AT_FDCWD, BASE1_TRUNCATED,
            BASE1_UNKNOWN, BASE_MAX_KEPT, FILE_DATA_MAX, MAX_SYSCALL_NR, NO_ARG, PATH1_TRUNCATED,
            PATH_MAX_KEPT, SPEC_CLONE3, SPEC_FLAGS_IN_OPEN_HOW, SPEC_PATH1_FD, SPEC_PATH1_SOCKADDR,
            SPEC_PATH1_STRING, SPEC_PATH2_STRING, SPEC_STASH_ONLY, SPEC_VIA_RAW,
        },
        EventHeader, EventKind, DEFAULT_RING_BYTES, HDR_CREDS_UNKNOWN, HDR_EXE_DELETED,
        HDR_LOGINUID_UNKNOWN, HDR_MNTNS_UNKNOWN, HDR_PIDNS_UNKNOWN, HDR_PPID_UNKNOWN,
        HDR_START_UNKNOWN, HDR_TTY_UNKNOWN, HDR_VPID_UNKNOWN, LOST_SLOTS,
    };
    use aya_ebpf::{
        helpers::{
            bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_current_uid_gid,
            bpf_probe_read_kernel, bpf_probe_read_kernel_str_bytes,
            generated::{
                bpf_get_current_cgroup_id, bpf_get_current_task, bpf_ktime_get_boot_ns,
                bpf_probe_read_kernel_str, bpf_probe_read_user, bpf_probe_read_user_str,
            },
        },
        macros::{map, raw_tracepoint, tracepoint},
        maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf},
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
        ($field:ident) => {{
            #[allow(unused_unsafe)]
            let v = unsafe { ptr::read_volatile(&raw const CONFIG.$field) };
            v
        }};
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

    /// cgroup v2 ids whose processes are not reported (`--exclude-cgroup`).
    #[map]
    static EXCLUDED_CGROUPS: HashMap<u64, u8> = HashMap::with_max_entries(MAX_EXCLUSIONS, 0);

    /// Executables (device, inode) whose processes are not reported
    /// (`--exclude-exe`).
    #[map]
    static EXCLUDED_EXES: HashMap<ExeKey, u8> = HashMap::with_max_entries(MAX_EXCLUSIONS, 0);

    /// The agent itself, or a user exclusion: checked before anything is
    /// copied, so excluded activity costs one or two map lookups.
    #[inline(always)]
    fn is_agent(tgid: u32) -> bool {
        let agent = cfg!(agent_tgid);
        (agent != 0 && agent == tgid) || is_excluded()
    }

    #[inline(always)]
    fn is_excluded() -> bool {
        let which = cfg!(exclusions);
        if which == 0 {
            return false;
        }
        if which & EXCLUDE_CGROUPS != 0 {
            let id = unsafe { bpf_get_current_cgroup_id() };
            if unsafe { EXCLUDED_CGROUPS.get(&id) }.is_some() {
                return true;
            }
        }
        if which & EXCLUDE_EXES != 0 {
            if let Some(key) = current_exe_key() {
                if unsafe { EXCLUDED_EXES.get(&key) }.is_some() {
                    return true;
                }
            }
        }
        false
    }

    /// `current->mm->exe_file->f_inode`: (i_sb->s_dev, i_ino).
    #[inline(always)]
    fn current_exe_key() -> Option<ExeKey> {
        let mm: *const u8 = read_kernel(current_task(), cfg!(task_mm))?;
        let file: *const u8 = read_kernel(mm, cfg!(mm_exe_file))?;
        let inode: *const u8 = read_kernel(file, cfg!(file_inode))?;
        let ino: u64 = read_kernel(inode, cfg!(inode_ino))?;
        let sb: *const u8 = read_kernel(inode, cfg!(inode_sb))?;
        let dev: u32 = read_kernel(sb, cfg!(sb_dev))?;
        Some(ExeKey {
            dev: dev as u64,
            ino,
        })
    }

    /// `task->mm->exe_file->f_inode->i_nlink == 0`. Kernel threads (no mm)
    /// and unknown layouts read as not deleted.
    #[inline(always)]
    fn exe_deleted(task: *const u8) -> bool {
        let Some(mm) = read_kernel::<*const u8>(task, cfg!(task_mm)) else {
            return false;
        };
        if mm.is_null() {
            return false;
        }
        let Some(file) = read_kernel::<*const u8>(mm, cfg!(mm_exe_file)) else {
            return false;
        };
        let Some(inode) = read_kernel::<*const u8>(file, cfg!(file_inode)) else {
            return false;
        };
        read_kernel::<u32>(inode, cfg!(inode_nlink)) == Some(0)
    }

    /// Follows a pointer field, then reads a `T` at `offset` in its target.
    #[inline(always)]
    fn read_via<T>(base: *const u8, ptr_offset: u32, offset: u32) -> Option<T> {
        let p: *const u8 = read_kernel(base, ptr_offset)?;
        read_kernel(p, offset)
    }

    /// Offset in `pid` of member `member` of `numbers[level]`: the pid's
    /// entry for the namespace it lives in.
    #[inline(always)]
    fn own_upid_member(pid: *const u8, member: u32) -> Option<u32> {
        let level: u32 = read_kernel(pid, cfg!(pid_level))?;
        let (numbers, size) = (cfg!(pid_numbers), cfg!(upid_size));
        if numbers == UNKNOWN_OFFSET
            || size == UNKNOWN_OFFSET
            || member == UNKNOWN_OFFSET
            || level > 64
        {
            return None;
        }
        Some((numbers as u64 + level as u64 * size as u64 + member as u64) as u32)
    }

    /// `task->thread_pid->numbers[level].ns->ns.inum`: the pid namespace
    /// the task lives in (not the one its children will get).
    #[inline(always)]
    fn pid_ns_inum(task: *const u8) -> Option<u32> {
        let pid: *const u8 = read_kernel(task, cfg!(task_thread_pid))?;
        let ns: *const u8 = read_kernel(pid, own_upid_member(pid, cfg!(upid_ns))?)?;
        read_kernel(ns, cfg!(pid_ns_inum))
    }

    /// The thread-group leader's id in its own pid namespace:
    /// `group_leader->thread_pid->numbers[level].nr`.
    #[inline(always)]
    fn ns_vpid(task: *const u8) -> Option<u32> {
        let leader: *const u8 = read_kernel(task, cfg!(task_group_leader))?;
        let pid: *const u8 = read_kernel(leader, cfg!(task_thread_pid))?;
        read_kernel(pid, own_upid_member(pid, cfg!(upid_nr))?)
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
        if exe_deleted(task) {
            flags |= HDR_EXE_DELETED;
        }
        let tty = controlling_tty(task);
        if tty.is_none() {
            flags |= HDR_TTY_UNKNOWN;
        }
        let vpid = ns_vpid(task);
        if vpid.is_none() {
            flags |= HDR_VPID_UNKNOWN;
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
            (*h).tty = tty.unwrap_or(0);
            (*h).vpid = vpid.unwrap_or(0);
        }
    }

    /// `task->signal->tty` as `tty_nr`: `new_encode_dev(MKDEV(major,
    /// minor_start + index))`; Some(0) for no terminal.
    #[inline(always)]
    fn controlling_tty(task: *const u8) -> Option<u32> {
        let signal: *const u8 = read_kernel(task, cfg!(task_signal))?;
        let tty: *const u8 = read_kernel(signal, cfg!(signal_tty))?;
        if tty.is_null() {
            return Some(0);
        }
        let index: i32 = read_kernel(tty, cfg!(tty_index))?;
        let driver: *const u8 = read_kernel(tty, cfg!(tty_driver))?;
        let major: i32 = read_kernel(driver, cfg!(driver_major))?;
        let minor_start: i32 = read_kernel(driver, cfg!(driver_minor_start))?;
        let minor = (minor_start + index) as u32;
        Some((minor & 0xff) | ((major as u32 & 0xfff) << 8) | ((minor & !0xff) << 12))
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
            (*ev).exe_len = 0;
            (*ev).exe_nlink = 0;
            (*ev).exe_ino = 0;
            (*ev).exe_dev = 0;
            (*ev).exe_size = 0;
            (*ev).exe_ctime_ns = 0;
            (*ev).exe_mtime_ns = 0;
            (*ev).argv_len = 0;
            (*ev).argv_total_len = 0;
        }
        flags |= read_exec_filename(&ctx, ev);
        flags |= read_exec_argv(ev);
        flags |= read_exec_exe(ev);
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

    /// Resolves `current->mm->exe_file` with the scratch buffer's walk and
    /// copies the components into the record.
    #[inline(always)]
    fn read_exec_exe(ev: *mut ExecRecord) -> u32 {
        let Some(s) = SCRATCH.get_ptr_mut(0) else {
            return EXEC_EXE_UNKNOWN;
        };
        let task = current_task();
        let Some(mm) = read_kernel::<*const u8>(task, cfg!(task_mm)) else {
            return EXEC_EXE_UNKNOWN;
        };
        let Some(file) = read_kernel::<*const u8>(mm, cfg!(mm_exe_file)) else {
            return EXEC_EXE_UNKNOWN;
        };
        if file.is_null() || cfg!(file_f_path) == UNKNOWN_OFFSET {
            return EXEC_EXE_UNKNOWN;
        }
        let path = unsafe { file.add(cfg!(file_f_path) as usize) };
        let (Some(mnt), Some(dentry)) = (
            read_kernel::<*const u8>(path, cfg!(path_mnt)),
            read_kernel::<*const u8>(path, cfg!(path_dentry)),
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
        let Some(inode) = read_kernel::<*const u8>(file, cfg!(file_inode)) else {
            return EXEC_EXE_STAT_UNKNOWN;
        };
        let ino: Option<u64> = read_kernel(inode, cfg!(inode_ino));
        let dev: Option<u32> = read_via(inode, cfg!(inode_sb), cfg!(sb_dev));
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
            (*ev).exe_nlink = read_kernel(inode, cfg!(inode_nlink)).unwrap_or(1);
            (*ev).exe_size = read_kernel(inode, cfg!(inode_size)).unwrap_or(0);
            (*ev).exe_ctime_ns = time(cfg!(inode_ctime_sec), cfg!(inode_ctime_nsec));
            (*ev).exe_mtime_ns = time(cfg!(inode_mtime_sec), cfg!(inode_mtime_nsec));
        }
        0
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
        let flags = clone_flags_of(pid_tgid);
        unsafe {
            (*ev).child_pid = child_pid;
            (*ev).flags_known = flags.is_some() as u32;
            (*ev).clone_flags = flags.unwrap_or(0);
            (*ev).child_start_boottime_ns =
                read_kernel(child, cfg!(task_start_boottime)).unwrap_or(0);
        }
        entry.submit(submit_flags());
        0
    }

    /// The caller's credentials before a control syscall changes them.
    #[inline(always)]
    fn stash_old_creds(p: &mut PendingSyscall) {
        let uid_gid = bpf_get_current_uid_gid();
        p.old_ids[0] = uid_gid as u32;
        p.old_ids[2] = (uid_gid >> 32) as u32;
        let Some(cred) = read_kernel::<*const u8>(current_task(), cfg!(task_cred)) else {
            return;
        };
        p.old_ids[1] = read_kernel(cred, cfg!(cred_euid)).unwrap_or(u32::MAX);
        p.old_ids[3] = read_kernel(cred, cfg!(cred_egid)).unwrap_or(u32::MAX);
        p.old_caps[0] = read_kernel(cred, cfg!(cred_cap_effective)).unwrap_or(0);
        p.old_caps[1] = read_kernel(cred, cfg!(cred_cap_permitted)).unwrap_or(0);
        p.old_caps[2] = read_kernel(cred, cfg!(cred_cap_inheritable)).unwrap_or(0);
    }

    /// The flags of the clone/clone3 the parent is in, from the arguments
    /// its sys_enter stashed.
    #[inline(always)]
    fn clone_flags_of(pid_tgid: u64) -> Option<u64> {
        let p = unsafe { PENDING.get(&pid_tgid) }?;
        let spec = FILE_SYSCALLS.get(p.nr)?;
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

    // ---------------------------------------------------------------- file

    /// Per syscall number: which argument is what (filled by the agent).
    #[map]
    static FILE_SYSCALLS: Array<ArgSpec> = Array::with_max_entries(MAX_SYSCALL_NR, 0);

    /// Arguments of file syscalls in flight, by thread. LRU bounds it even
    /// when an exit is never seen (a thread killed in the syscall).
    #[map]
    static PENDING: LruHashMap<u64, PendingSyscall> = LruHashMap::with_max_entries(16384, 0);

    /// Where a file record is assembled before its variable-size output.
    /// The slack lets masked writes stay inside the value for the verifier.
    #[repr(C)]
    pub struct FileScratch {
        rec: FileRecord,
        data: [u8; SCRATCH_DATA],
        /// Write position in `data`. Kept in map memory, not a register:
        /// the verifier does not track its value, so loop iterations that
        /// did and did not copy a name reach the same state and are pruned
        /// instead of doubling at every directory level.
        pos: u64,
        /// Whether the current walk passed the task's root; in map memory
        /// for the same reason.
        reached: u64,
    }
    const SCRATCH_DATA: usize = 8192 + 1024;
    /// Writes land at `pos & DATA_MASK`, and no single copy exceeds 1024
    /// bytes, so every write stays inside `data`.
    const DATA_MASK: usize = 8191;

    #[map]
    static SCRATCH: PerCpuArray<FileScratch> = PerCpuArray::with_max_entries(1, 0);

    /// Longest path component the walk copies (NAME_MAX + NUL).
    const NAME_MAX_KEPT: u32 = 256;
    /// Deepest directory the walk follows.
    const WALK_DEPTH: u32 = 48;

    const SYSCALL_NR_OFFSET: usize = 8;
    const SYSCALL_ARGS_OFFSET: usize = 16;
    const SYSCALL_RET_OFFSET: usize = 16;

    #[tracepoint]
    pub fn file_sys_enter(ctx: TracePointContext) -> u32 {
        sys_enter(&ctx, false)
    }

    #[tracepoint]
    pub fn file_sys_exit(ctx: TracePointContext) -> u32 {
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
            args[i] = read_kernel::<u64>(regs, cfg!(regs_args)[i]).unwrap_or(0);
        }
        sys_enter_args(nr as i32, args, true);
        0
    }

    /// Raw `sys_exit(struct pt_regs *regs, long ret)`.
    #[raw_tracepoint(tracepoint = "sys_exit")]
    pub fn raw_sys_exit(ctx: RawTracePointContext) -> i32 {
        let regs = ctx.arg::<u64>(0) as *const u8;
        if let Some(nr) = read_kernel::<i64>(regs, cfg!(regs_nr)) {
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
        let spec = FILE_SYSCALLS.get(nr)?;
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
        if nr < 0 || is_agent((pid_tgid >> 32) as u32) {
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
        emit_file(scratch, &spec, &pending, result, pid_tgid);
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
    fn emit_file(
        s: *mut FileScratch,
        spec: &ArgSpec,
        p: &PendingSyscall,
        result: i64,
        pid_tgid: u64,
    ) {
        let rec = unsafe { &raw mut (*s).rec };
        let kind = if spec.family == EventKind::Control as u8 {
            EventKind::Control
        } else if spec.family == EventKind::Network as u8 {
            EventKind::Network
        } else {
            EventKind::File
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
            flags_val = unsafe { aya_ebpf::helpers::bpf_probe_read_user(flags_val as *const u64) }
                .unwrap_or(0);
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
        let mut total = core::mem::size_of::<FileRecord>() + get_pos(s);
        if total > core::mem::size_of::<FileRecord>() + FILE_DATA_MAX {
            total = core::mem::size_of::<FileRecord>() + FILE_DATA_MAX;
        }
        let bytes = unsafe { core::slice::from_raw_parts(s as *const u8, total) };
        if EVENTS.output::<[u8]>(bytes, submit_flags()).is_err() {
            count_lost(kind);
        }
    }

    /// The scratch write position, masked into `data`'s bounds.
    #[inline(always)]
    fn get_pos(s: *mut FileScratch) -> usize {
        (unsafe { ptr::read_volatile(&raw const (*s).pos) } as usize) & DATA_MASK
    }

    #[inline(always)]
    fn set_pos(s: *mut FileScratch, v: usize) {
        unsafe { ptr::write_volatile(&raw mut (*s).pos, v as u64) };
    }

    /// Copies a user path string and, when it is relative, the components
    /// of the directory it is relative to. Returns (path bytes, base bytes,
    /// PATH1_*/BASE1_* flags).
    #[inline(always)]
    fn copy_path_and_base(
        s: *mut FileScratch,
        user: Option<u64>,
        dirfd: i32,
        plain: bool,
    ) -> (usize, usize, u32) {
        let Some(ptr) = user else {
            return (0, 0, 0);
        };
        if ptr == 0 {
            return (0, 0, 0);
        }
        let data = unsafe { (&raw mut (*s).data) as *mut u8 };
        let mut flags = 0;
        let start = get_pos(s);
        let n = unsafe {
            bpf_probe_read_user_str(
                data.add(start) as *mut c_void,
                PATH_MAX_KEPT as u32,
                ptr as *const c_void,
            )
        };
        if n <= 0 {
            return (0, 0, 0);
        }
        let n = (n as usize).min(PATH_MAX_KEPT);
        if n == PATH_MAX_KEPT {
            flags |= PATH1_TRUNCATED;
        }
        let first = unsafe { *data.add(start) };
        set_pos(s, start + n);
        if first == b'/' || plain {
            return (n, 0, flags);
        }
        let base = if dirfd == AT_FDCWD {
            cwd_path()
        } else {
            fd_path(dirfd)
        };
        let Some((mnt, dentry)) = base else {
            return (n, 0, flags | BASE1_UNKNOWN);
        };
        let (b, truncated, _) = walk_path(s, mnt, dentry);
        if truncated {
            flags |= BASE1_TRUNCATED;
        }
        (n, b, flags)
    }

    /// The path of the file behind fd argument `fd` (e.g. finit_module's
    /// module file): an empty path string and the file's components.
    #[inline(always)]
    fn copy_fd_path(s: *mut FileScratch, fd: Option<u64>) -> (usize, usize, u32) {
        let Some(fd) = fd else {
            return (0, 0, 0);
        };
        let start = get_pos(s);
        let data = unsafe { (&raw mut (*s).data) as *mut u8 };
        unsafe { *data.add(start) = 0 };
        set_pos(s, start + 1);
        let Some((mnt, dentry)) = fd_path(fd as i32) else {
            return (1, 0, BASE1_UNKNOWN);
        };
        let (b, truncated, _) = walk_path(s, mnt, dentry);
        (1, b, if truncated { BASE1_TRUNCATED } else { 0 })
    }

    /// Copies a user `struct sockaddr` raw. The buffer's real size is not
    /// known here, so the read tries the largest address first, then
    /// sockaddr_in6 and sockaddr_in, in case the buffer ends on a page edge.
    #[inline(always)]
    fn copy_sockaddr(s: *mut FileScratch, user: Option<u64>) -> (usize, usize, u32) {
        let Some(ptr) = user else {
            return (0, 0, 0);
        };
        if ptr == 0 {
            return (0, 0, 0);
        }
        let start = get_pos(s);
        let data = unsafe { (&raw mut (*s).data) as *mut u8 };
        for size in [SOCKADDR_MAX as u32, 28, 16] {
            let rc = unsafe {
                bpf_probe_read_user(data.add(start) as *mut c_void, size, ptr as *const c_void)
            };
            if rc == 0 {
                set_pos(s, start + size as usize);
                return (size as usize, 0, 0);
            }
        }
        (0, 0, 0)
    }

    /// A user `struct msghdr *`'s fields (LP64 ABI): msg_name at 0, msg_iov
    /// at 16; `struct iovec` is {base, len}.
    const MSGHDR_NAME: u64 = 0;
    const MSGHDR_IOV: u64 = 16;

    /// `inode.i_mode` file type bits, and the socket type.
    const S_IFMT: u16 = 0o170000;
    const S_IFSOCK: u16 = 0o140000;

    /// Destination port (host order) of a send: from the address given, or
    /// from the connected socket behind the fd. 0 when unknown.
    #[inline(always)]
    fn send_dport(variant: u8, p: &PendingSyscall) -> u16 {
        let addr: u64 = match variant {
            SEND_VARIANT_SENDTO => p.args[4],
            SEND_VARIANT_SENDMSG | SEND_VARIANT_SENDMMSG => unsafe {
                aya_ebpf::helpers::bpf_probe_read_user((p.args[1] + MSGHDR_NAME) as *const u64)
            }
            .unwrap_or(0),
            _ => 0,
        };
        if addr != 0 {
            let port: u16 =
                unsafe { aya_ebpf::helpers::bpf_probe_read_user((addr + 2) as *const u16) }
                    .unwrap_or(0);
            return u16::from_be(port);
        }
        connected_dport(p.args[0] as i32).unwrap_or(0)
    }

    /// `fd -> file -> private_data (struct socket) -> sk -> skc_dport`.
    #[inline(always)]
    fn connected_dport(fd: i32) -> Option<u16> {
        let file = fd_file(fd)?;
        let sock: *const u8 = read_kernel(file, cfg!(file_private_data))?;
        let sk: *const u8 = read_kernel(sock, cfg!(socket_sk))?;
        let port: u16 = read_kernel(sk, cfg!(sock_dport))?;
        Some(u16::from_be(port))
    }

    /// The address family of the socket open as `fd`; None when `fd` is not
    /// a socket (or its layout is unknown).
    #[inline(always)]
    fn socket_family(fd: i32) -> Option<u16> {
        let file = fd_file(fd)?;
        let inode: *const u8 = read_kernel(file, cfg!(file_inode))?;
        let mode: u16 = read_kernel(inode, cfg!(inode_mode))?;
        if mode & S_IFMT != S_IFSOCK {
            return None;
        }
        let sock: *const u8 = read_kernel(file, cfg!(file_private_data))?;
        let sk: *const u8 = read_kernel(sock, cfg!(socket_sk))?;
        read_kernel(sk, cfg!(sock_family))
    }

    /// Copies the first bytes of a send's payload (`DNS_PAYLOAD_MAX` at most).
    #[inline(always)]
    fn copy_send_payload(s: *mut FileScratch, variant: u8, p: &PendingSyscall) -> usize {
        let (buf, len) = match variant {
            SEND_VARIANT_SENDTO => (p.args[1], p.args[2]),
            _ => {
                let iov: u64 = unsafe {
                    aya_ebpf::helpers::bpf_probe_read_user((p.args[1] + MSGHDR_IOV) as *const u64)
                }
                .unwrap_or(0);
                if iov == 0 {
                    return 0;
                }
                let base: u64 =
                    unsafe { aya_ebpf::helpers::bpf_probe_read_user(iov as *const u64) }
                        .unwrap_or(0);
                let len: u64 =
                    unsafe { aya_ebpf::helpers::bpf_probe_read_user((iov + 8) as *const u64) }
                        .unwrap_or(0);
                (base, len)
            }
        };
        if buf == 0 || len == 0 {
            return 0;
        }
        let n = if len > DNS_PAYLOAD_MAX as u64 {
            DNS_PAYLOAD_MAX
        } else {
            len as usize
        };
        let start = get_pos(s);
        let data = unsafe { (&raw mut (*s).data) as *mut u8 };
        if unsafe {
            bpf_probe_read_user(
                data.add(start) as *mut c_void,
                n as u32,
                buf as *const c_void,
            )
        } != 0
        {
            return 0;
        }
        set_pos(s, start + n);
        n
    }

    /// `current->fs->pwd` as (vfsmount, dentry).
    #[inline(always)]
    fn cwd_path() -> Option<(*const u8, *const u8)> {
        let fs: *const u8 = read_kernel(current_task(), cfg!(task_fs))?;
        let path = unsafe { fs.add(cfg!(fs_pwd) as usize) };
        if cfg!(fs_pwd) == UNKNOWN_OFFSET {
            return None;
        }
        Some((
            read_kernel(path, cfg!(path_mnt))?,
            read_kernel(path, cfg!(path_dentry))?,
        ))
    }

    /// `current->files->fdt->fd[fd]`.
    #[inline(always)]
    fn fd_file(fd: i32) -> Option<*const u8> {
        if fd < 0 {
            return None;
        }
        let files: *const u8 = read_kernel(current_task(), cfg!(task_files))?;
        let fdt: *const u8 = read_kernel(files, cfg!(files_fdt))?;
        let max: u32 = read_kernel(fdt, cfg!(fdt_max_fds))?;
        if fd as u32 >= max {
            return None;
        }
        let array: *const u8 = read_kernel(fdt, cfg!(fdt_fd))?;
        let file: *const u8 = read_kernel(array, fd as u32 * 8)?;
        (!file.is_null()).then_some(file)
    }

    /// `current->files->fdt->fd[fd]->f_path` as (vfsmount, dentry).
    #[inline(always)]
    fn fd_path(fd: i32) -> Option<(*const u8, *const u8)> {
        let file = fd_file(fd)?;
        if cfg!(file_f_path) == UNKNOWN_OFFSET {
            return None;
        }
        let path = unsafe { file.add(cfg!(file_f_path) as usize) };
        Some((
            read_kernel(path, cfg!(path_mnt))?,
            read_kernel(path, cfg!(path_dentry))?,
        ))
    }

    /// Writes the names from `dentry` up to the top of its mount tree,
    /// crossing mount points, as NUL-terminated components at the scratch
    /// position: host paths, also for a chrooted process (a container that
    /// pivoted its root ends at its own tree's top). Returns the bytes
    /// written, whether the walk hit its bounds, and whether it passed the
    /// task's root: a file that never does lives on an internal mount (a
    /// memfd) or outside the task's mount tree.
    #[inline(never)]
    fn walk_path(s: *mut FileScratch, vfsmnt: *const u8, dentry: *const u8) -> (usize, bool, bool) {
        let data = unsafe { (&raw mut (*s).data) as *mut u8 };
        let start = get_pos(s);
        let mnt_off = cfg!(mount_mnt);
        if mnt_off == UNKNOWN_OFFSET || vfsmnt.is_null() {
            return (0, true, false);
        }
        let (root_vfs, root_d) = task_root().unwrap_or((core::ptr::null(), core::ptr::null()));
        let mut mnt = unsafe { vfsmnt.sub(mnt_off as usize) };
        let mut vfs = vfsmnt;
        let mut d = dentry;
        let mut done = false;
        unsafe { ptr::write_volatile(&raw mut (*s).reached, 0) };
        for _ in 0..WALK_DEPTH {
            // Compared through XOR: a direct `d == root_d` would make the
            // verifier link the two registers and stop pruning iterations.
            let diff = ((d as u64) ^ (root_d as u64)) | ((vfs as u64) ^ (root_vfs as u64));
            if core::hint::black_box(diff) == 0 {
                unsafe { ptr::write_volatile(&raw mut (*s).reached, 1) };
            }
            let Some(mnt_root) = read_kernel::<*const u8>(vfs, cfg!(vfsmount_root)) else {
                break;
            };
            if d == mnt_root {
                let Some(parent) = read_kernel::<*const u8>(mnt, cfg!(mount_parent)) else {
                    break;
                };
                if parent == mnt {
                    // Top of the mount tree. A file that is itself the root
                    // of an internal mount is named by itself, as d_path does.
                    if get_pos(s) == start {
                        copy_name(s, d);
                    }
                    done = true;
                    break;
                }
                let Some(mp) = read_kernel::<*const u8>(mnt, cfg!(mount_mountpoint)) else {
                    break;
                };
                d = mp;
                mnt = parent;
                vfs = unsafe { parent.add(mnt_off as usize) };
                continue;
            }
            let Some(parent) = read_kernel::<*const u8>(d, cfg!(dentry_parent)) else {
                break;
            };
            if get_pos(s).wrapping_sub(start) + NAME_MAX_KEPT as usize > BASE_MAX_KEPT {
                break;
            }
            if !copy_name(s, d) {
                break;
            }
            if parent == d {
                // A pseudo or disconnected dentry (memfd, deleted tree).
                done = true;
                break;
            }
            d = parent;
        }
        let _ = data;
        let reached = unsafe { ptr::read_volatile(&raw const (*s).reached) } != 0;
        (get_pos(s).wrapping_sub(start) & 0xffff, !done, reached)
    }

    /// Appends `d`'s name and a NUL at the scratch position.
    #[inline(always)]
    fn copy_name(s: *mut FileScratch, d: *const u8) -> bool {
        let Some(name) = read_kernel::<*const u8>(d, cfg!(dentry_name_ptr)) else {
            return false;
        };
        let data = unsafe { (&raw mut (*s).data) as *mut u8 };
        let at = get_pos(s);
        let n = unsafe {
            bpf_probe_read_kernel_str(
                data.add(at) as *mut c_void,
                NAME_MAX_KEPT,
                name as *const c_void,
            )
        };
        if n <= 0 {
            return false;
        }
        set_pos(s, at + (n as usize & 0x1ff));
        true
    }

    /// `current->fs->root` as (vfsmount, dentry).
    #[inline(always)]
    fn task_root() -> Option<(*const u8, *const u8)> {
        let fs: *const u8 = read_kernel(current_task(), cfg!(task_fs))?;
        if cfg!(fs_root) == UNKNOWN_OFFSET {
            return None;
        }
        let root = unsafe { fs.add(cfg!(fs_root) as usize) };
        Some((
            read_kernel(root, cfg!(path_mnt))?,
            read_kernel(root, cfg!(path_dentry))?,
        ))
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
