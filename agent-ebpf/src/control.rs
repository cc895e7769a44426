//! Control-family operations: privilege, process-control and kernel-state
//! syscalls. Their records are [`crate::syscall::SyscallRecord`].

wire_enum! {
    /// What a control syscall does. Values start at 32, clear of `FileOp`.
    pub enum ControlOp: u8 {
        SetUid = 32 => "setuid",
        SetGid = 33 => "setgid",
        Ptrace = 34 => "ptrace",
        MemfdCreate = 35 => "memfd_create",
        ModuleLoad = 36 => "module_load",
        ModuleUnload = 37 => "module_unload",
        Bpf = 38 => "bpf",
        Mount = 39 => "mount",
        Umount = 40 => "umount",
        Unshare = 41 => "unshare",
        Setns = 42 => "setns",
        Chroot = 43 => "chroot",
        Prctl = 44 => "prctl",
        Capset = 45 => "capset",
        /// clone/clone3: arguments stashed for the fork event, never emitted.
        Clone = 46 => "clone",
        /// userfaultfd(flags): a process taking over page-fault handling,
        /// the primitive of many kernel exploits' race windows.
        Userfaultfd = 47 => "userfaultfd",
        /// move_mount: where the new mount API (fsopen, fsmount, open_tree)
        /// attaches a mount, as util-linux 2.39 and later mount does.
        MoveMount = 48 => "move_mount",
    }
}
