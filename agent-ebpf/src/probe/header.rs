//! The process context at the head of every record: ids, credentials,
//! namespaces, terminal, start time, and whether the executable is gone.
use agent_ebpf::{
    config::UNKNOWN_OFFSET, EventHeader, EventKind, CAP_BOUNDING, CAP_EFFECTIVE, CAP_INHERITABLE,
    CAP_PERMITTED, HDR_CAPS_UNKNOWN, HDR_CREDS_UNKNOWN, HDR_EXE_DELETED, HDR_LOGINUID_UNKNOWN,
    HDR_MNTNS_UNKNOWN, HDR_PIDNS_UNKNOWN, HDR_PPID_UNKNOWN, HDR_START_UNKNOWN, HDR_TTY_UNKNOWN,
    HDR_VPID_UNKNOWN,
};
use aya_ebpf::helpers::{
    bpf_get_current_comm, bpf_get_current_uid_gid,
    generated::{bpf_get_current_cgroup_id, bpf_ktime_get_boot_ns},
};

use super::task::{current_task_btf, load, load_via, read_kernel};

/// `task->mm->exe_file->f_inode->i_nlink == 0`. Kernel threads (no mm)
/// and unknown layouts read as not deleted.
#[inline(always)]
fn exe_deleted(task: *const u8) -> bool {
    let Some(mm) = load::<*const u8>(task, config!(task_mm)) else {
        return false;
    };
    if mm.is_null() {
        return false;
    }
    let Some(file) = load::<*const u8>(mm, config!(mm_exe_file)) else {
        return false;
    };
    let Some(inode) = load::<*const u8>(file, config!(file_inode)) else {
        return false;
    };
    load::<u32>(inode, config!(inode_nlink)) == Some(0)
}

/// Offset in `pid` of member `member` of `numbers[level]`: the pid's
/// entry for the namespace it lives in.
#[inline(always)]
fn own_upid_member(pid: *const u8, member: u32) -> Option<u32> {
    let level: u32 = load(pid, config!(pid_level))?;
    let (numbers, size) = (config!(pid_numbers), config!(upid_size));
    if numbers == UNKNOWN_OFFSET || size == UNKNOWN_OFFSET || member == UNKNOWN_OFFSET || level > 64
    {
        return None;
    }
    Some((numbers as u64 + level as u64 * size as u64 + member as u64) as u32)
}

/// The pid's level: 0 on the host, 1 in a container's pid namespace.
#[inline(always)]
fn pid_level(pid: *const u8) -> Option<u32> {
    load(pid, config!(pid_level))
}

/// `numbers[L].member` for the levels most tasks live at, by direct loads
/// at offsets the verifier knows (a helper call each otherwise).
#[inline(always)]
fn upid_at<T: Copy>(pid: *const u8, level: u32, member: u32) -> Option<T> {
    let (numbers, size) = (config!(pid_numbers), config!(upid_size));
    if numbers == UNKNOWN_OFFSET || size == UNKNOWN_OFFSET || member == UNKNOWN_OFFSET {
        return None;
    }
    match level {
        0 => load(pid, numbers + member),
        _ => load(pid, numbers + size + member),
    }
}

/// `task->thread_pid->numbers[level].ns->ns.inum`: the pid namespace
/// the task lives in (not the one its children will get).
#[inline(always)]
fn pid_ns_inum(task: *const u8) -> Option<u32> {
    let pid: *const u8 = load(task, config!(task_thread_pid))?;
    match pid_level(pid)? {
        level @ (0 | 1) => {
            let ns: *const u8 = upid_at(pid, level, config!(upid_ns))?;
            load(ns, config!(pid_ns_inum))
        }
        _ => {
            let ns: *const u8 = read_kernel(pid, own_upid_member(pid, config!(upid_ns))?)?;
            read_kernel(ns, config!(pid_ns_inum))
        }
    }
}

/// The thread-group leader's id in its own pid namespace:
/// `group_leader->thread_pid->numbers[level].nr`.
#[inline(always)]
fn ns_vpid(task: *const u8) -> Option<u32> {
    let leader: *const u8 = load(task, config!(task_group_leader))?;
    let pid: *const u8 = load(leader, config!(task_thread_pid))?;
    match pid_level(pid)? {
        level @ (0 | 1) => upid_at(pid, level, config!(upid_nr)),
        _ => read_kernel(pid, own_upid_member(pid, config!(upid_nr))?),
    }
}

/// Fills the common header from the current task.
#[inline(always)]
pub fn fill_header(h: *mut EventHeader, kind: EventKind, pid_tgid: u64) {
    let uid_gid = bpf_get_current_uid_gid();
    let task = current_task_btf();
    let mut flags = 0u32;
    let ppid: Option<u32> = load_via(task, config!(task_real_parent), config!(task_tgid));
    let cred: Option<*const u8> = load(task, config!(task_cred));
    let euid: Option<u32> = cred.and_then(|c| load(c, config!(cred_euid)));
    let egid: Option<u32> = cred.and_then(|c| load(c, config!(cred_egid)));
    let loginuid: Option<u32> = load(task, config!(task_loginuid));
    let start: Option<u64> = load_via(
        task,
        config!(task_group_leader),
        config!(task_start_boottime),
    );
    let nsproxy: Option<*const u8> = load(task, config!(task_nsproxy));
    let mnt_ns: Option<u32> =
        nsproxy.and_then(|n| load_via(n, config!(nsproxy_mnt_ns), config!(mnt_ns_inum)));
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
    let caps = cred.and_then(capabilities);
    if caps.is_none() {
        flags |= HDR_CAPS_UNKNOWN;
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
        (*h).caps = caps.unwrap_or([0; 4]);
    }
}

/// The capability sets of `cred`, at the `CAP_*` slots: four direct
/// loads from the credentials the header reads anyway.
#[inline(always)]
fn capabilities(cred: *const u8) -> Option<[u64; 4]> {
    let mut caps = [0u64; 4];
    caps[CAP_EFFECTIVE] = load(cred, config!(cred_cap_effective))?;
    caps[CAP_PERMITTED] = load(cred, config!(cred_cap_permitted))?;
    caps[CAP_INHERITABLE] = load(cred, config!(cred_cap_inheritable))?;
    caps[CAP_BOUNDING] = load(cred, config!(cred_cap_bset))?;
    Some(caps)
}

/// `task->signal->tty` as `tty_nr`: `new_encode_dev(MKDEV(major,
/// minor_start + index))`; Some(0) for no terminal.
#[inline(always)]
fn controlling_tty(task: *const u8) -> Option<u32> {
    let signal: *const u8 = load(task, config!(task_signal))?;
    let tty: *const u8 = load(signal, config!(signal_tty))?;
    if tty.is_null() {
        return Some(0);
    }
    let index: i32 = load(tty, config!(tty_index))?;
    let driver: *const u8 = load(tty, config!(tty_driver))?;
    let major: i32 = load(driver, config!(driver_major))?;
    let minor_start: i32 = load(driver, config!(driver_minor_start))?;
    let minor = (minor_start + index) as u32;
    Some((minor & 0xff) | ((major as u32 & 0xfff) << 8) | ((minor & !0xff) << 12))
}
