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
    /// `mm_struct.env_start`, `mm_struct.env_end` (unsigned long).
    pub mm_env_start: u32,
    pub mm_env_end: u32,
    /// `task_struct.cred` (pointer), `cred.euid`, `cred.egid`.
    pub task_cred: u32,
    pub cred_euid: u32,
    pub cred_egid: u32,
    /// `cred.cap_effective`, `cap_permitted`, `cap_inheritable` (64-bit sets).
    pub cred_cap_effective: u32,
    pub cred_cap_permitted: u32,
    pub cred_cap_inheritable: u32,
    /// `cred.cap_bset`: the bounding set (full in a privileged container).
    pub cred_cap_bset: u32,
    /// `task_struct.loginuid` (CONFIG_AUDIT).
    pub task_loginuid: u32,
    /// `task_struct.group_leader` (pointer), `task_struct.start_boottime`.
    pub task_group_leader: u32,
    pub task_start_boottime: u32,
    /// `task_struct.nsproxy` (pointer), `nsproxy.mnt_ns` (pointer), and
    /// `mnt_namespace.ns.inum`.
    pub task_nsproxy: u32,
    pub nsproxy_mnt_ns: u32,
    pub mnt_ns_inum: u32,
    /// The task's active pid namespace is
    /// `task->thread_pid->numbers[level].ns`: `task_struct.thread_pid`,
    /// `pid.level`, `pid.numbers`, `sizeof(struct upid)`, `upid.ns`, and
    /// `pid_namespace.ns.inum`.
    pub task_thread_pid: u32,
    pub pid_level: u32,
    pub pid_numbers: u32,
    pub upid_size: u32,
    pub upid_ns: u32,
    /// `upid.nr`: the id within that namespace.
    pub upid_nr: u32,
    pub pid_ns_inum: u32,
    /// Path resolution: `task_struct.fs`, `fs_struct.pwd`, `task_struct.files`,
    /// `files_struct.fdt`, `fdtable.max_fds`, `fdtable.fd`, `file.f_path`,
    /// `path.mnt`, `path.dentry`, `dentry.d_parent`, `dentry.d_name` +
    /// `qstr.name`, `vfsmount.mnt_root`, `mount.mnt` (the embedded vfsmount),
    /// `mount.mnt_parent`, `mount.mnt_mountpoint`.
    pub task_fs: u32,
    pub fs_pwd: u32,
    /// `fs_struct.root` and `mm_struct.exe_file`.
    pub fs_root: u32,
    pub mm_exe_file: u32,
    pub task_files: u32,
    pub files_fdt: u32,
    pub fdt_max_fds: u32,
    pub fdt_fd: u32,
    pub file_f_path: u32,
    pub path_mnt: u32,
    pub path_dentry: u32,
    pub dentry_parent: u32,
    pub dentry_name_ptr: u32,
    pub vfsmount_root: u32,
    pub mount_mnt: u32,
    pub mount_parent: u32,
    pub mount_mountpoint: u32,
    /// Offsets in `struct pt_regs` of syscall arguments 0..6 (x86_64: di,
    /// si, dx, r10, r8, r9; arm64: regs[0..6]), for the raw `sys_enter`
    /// hook, which gets the registers rather than a trace record.
    pub regs_args: [u32; 6],
    /// Offset in `struct pt_regs` of the syscall number at exit (x86_64
    /// `orig_ax`, arm64 `syscallno`); lets the raw exit hook skip the
    /// pending-map lookup for syscalls it does not follow.
    pub regs_nr: u32,
    /// `EXCLUDE_*` bits: which exclusion maps the agent filled, so the probe
    /// pays for a lookup only when there is something to exclude.
    pub exclusions: u32,
    /// Exe exclusion key: `file.f_inode`, `inode.i_ino`, `inode.i_sb`,
    /// `super_block.s_dev`.
    pub file_inode: u32,
    pub inode_ino: u32,
    pub inode_sb: u32,
    pub sb_dev: u32,
    /// DNS filter: `file.private_data` (a `struct socket *` for sockets),
    /// `socket.sk`, and `sock.__sk_common.skc_dport`.
    pub file_private_data: u32,
    pub socket_sk: u32,
    pub sock_dport: u32,
    /// `sched_process_exec` record: `__data_loc char[] filename`.
    pub tp_exec_filename: u32,
    /// `sched_process_exit` record: `bool group_dead` (kernels >= 6.16).
    pub tp_exit_group_dead: u32,
    /// Wake the agent only once this many bytes wait in the ring buffer; the
    /// agent also drains on a timer. 0: wake on every record. Each wake-up
    /// costs the submitting task an irq_work (a self-IPI, several µs in a
    /// VM), so batching them is most of the probe's cost.
    pub wakeup_bytes: u32,
    /// Executable identity on exec: `inode.i_nlink` (0: deleted),
    /// `inode.i_size`, and the change and modification times
    /// (`i_ctime_sec`/`i_ctime_nsec` since 6.11, the `tv_sec`/`tv_nsec` of
    /// `__i_ctime` or `i_ctime` before; likewise mtime).
    pub inode_nlink: u32,
    pub inode_size: u32,
    pub inode_ctime_sec: u32,
    pub inode_ctime_nsec: u32,
    pub inode_mtime_sec: u32,
    pub inode_mtime_nsec: u32,
    /// Socket dup filter: `inode.i_mode` (is it a socket?) and
    /// `sock.__sk_common.skc_family`.
    pub inode_mode: u32,
    pub sock_family: u32,
    /// Sends to a new destination: `socket.type` (SOCK_DGRAM, ...).
    pub socket_type: u32,
    /// Controlling terminal: `task_struct.signal`, `signal_struct.tty`,
    /// `tty_struct.index`, `tty_struct.driver`, `tty_driver.major`,
    /// `tty_driver.minor_start`.
    pub task_signal: u32,
    pub signal_tty: u32,
    pub tty_index: u32,
    pub tty_driver: u32,
    pub driver_major: u32,
    pub driver_minor_start: u32,
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
        mm_env_start: UNKNOWN_OFFSET,
        mm_env_end: UNKNOWN_OFFSET,
        task_cred: UNKNOWN_OFFSET,
        cred_euid: UNKNOWN_OFFSET,
        cred_egid: UNKNOWN_OFFSET,
        cred_cap_effective: UNKNOWN_OFFSET,
        cred_cap_permitted: UNKNOWN_OFFSET,
        cred_cap_inheritable: UNKNOWN_OFFSET,
        cred_cap_bset: UNKNOWN_OFFSET,
        task_loginuid: UNKNOWN_OFFSET,
        task_group_leader: UNKNOWN_OFFSET,
        task_start_boottime: UNKNOWN_OFFSET,
        task_nsproxy: UNKNOWN_OFFSET,
        nsproxy_mnt_ns: UNKNOWN_OFFSET,
        mnt_ns_inum: UNKNOWN_OFFSET,
        task_thread_pid: UNKNOWN_OFFSET,
        pid_level: UNKNOWN_OFFSET,
        pid_numbers: UNKNOWN_OFFSET,
        upid_size: UNKNOWN_OFFSET,
        upid_ns: UNKNOWN_OFFSET,
        upid_nr: UNKNOWN_OFFSET,
        pid_ns_inum: UNKNOWN_OFFSET,
        task_fs: UNKNOWN_OFFSET,
        fs_pwd: UNKNOWN_OFFSET,
        fs_root: UNKNOWN_OFFSET,
        mm_exe_file: UNKNOWN_OFFSET,
        task_files: UNKNOWN_OFFSET,
        files_fdt: UNKNOWN_OFFSET,
        fdt_max_fds: UNKNOWN_OFFSET,
        fdt_fd: UNKNOWN_OFFSET,
        file_f_path: UNKNOWN_OFFSET,
        path_mnt: UNKNOWN_OFFSET,
        path_dentry: UNKNOWN_OFFSET,
        dentry_parent: UNKNOWN_OFFSET,
        dentry_name_ptr: UNKNOWN_OFFSET,
        vfsmount_root: UNKNOWN_OFFSET,
        mount_mnt: UNKNOWN_OFFSET,
        mount_parent: UNKNOWN_OFFSET,
        mount_mountpoint: UNKNOWN_OFFSET,
        regs_args: [UNKNOWN_OFFSET; 6],
        regs_nr: UNKNOWN_OFFSET,
        exclusions: 0,
        file_inode: UNKNOWN_OFFSET,
        inode_ino: UNKNOWN_OFFSET,
        inode_sb: UNKNOWN_OFFSET,
        sb_dev: UNKNOWN_OFFSET,
        file_private_data: UNKNOWN_OFFSET,
        socket_sk: UNKNOWN_OFFSET,
        sock_dport: UNKNOWN_OFFSET,
        tp_exec_filename: UNKNOWN_OFFSET,
        tp_exit_group_dead: UNKNOWN_OFFSET,
        wakeup_bytes: 0,
        inode_nlink: UNKNOWN_OFFSET,
        inode_size: UNKNOWN_OFFSET,
        inode_ctime_sec: UNKNOWN_OFFSET,
        inode_ctime_nsec: UNKNOWN_OFFSET,
        inode_mtime_sec: UNKNOWN_OFFSET,
        inode_mtime_nsec: UNKNOWN_OFFSET,
        inode_mode: UNKNOWN_OFFSET,
        sock_family: UNKNOWN_OFFSET,
        socket_type: UNKNOWN_OFFSET,
        task_signal: UNKNOWN_OFFSET,
        signal_tty: UNKNOWN_OFFSET,
        tty_index: UNKNOWN_OFFSET,
        tty_driver: UNKNOWN_OFFSET,
        driver_major: UNKNOWN_OFFSET,
        driver_minor_start: UNKNOWN_OFFSET,
    };
}

/// `ProbeConfig::exclusions`: `EXCLUDED_CGROUPS` has entries.
pub const EXCLUDE_CGROUPS: u32 = 1 << 0;
/// `ProbeConfig::exclusions`: `EXCLUDED_EXES` has entries.
pub const EXCLUDE_EXES: u32 = 1 << 1;

/// Key of `EXCLUDED_EXES`: the executable's device (kernel encoding,
/// `major << 20 | minor`) and inode.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ExeKey {
    pub dev: u64,
    pub ino: u64,
}

/// Most entries in each exclusion map.
pub const MAX_EXCLUSIONS: u32 = 1024;
