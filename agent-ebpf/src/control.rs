//! Control-family operations: privilege, process-control and kernel-state
//! syscalls. Their records are [`crate::syscall::SyscallRecord`].

/// What a control syscall does. Values start at 32, clear of `FileOp`.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ControlOp {
    SetUid = 32,
    SetGid = 33,
    Ptrace = 34,
    MemfdCreate = 35,
    ModuleLoad = 36,
    ModuleUnload = 37,
    Bpf = 38,
    Mount = 39,
    Umount = 40,
    Unshare = 41,
    Setns = 42,
    Chroot = 43,
    Prctl = 44,
    Capset = 45,
    /// clone/clone3: arguments stashed for the fork event, never emitted.
    Clone = 46,
}

impl ControlOp {
    pub fn from_u8(v: u8) -> Option<ControlOp> {
        use ControlOp::*;
        Some(match v {
            32 => SetUid,
            33 => SetGid,
            34 => Ptrace,
            35 => MemfdCreate,
            36 => ModuleLoad,
            37 => ModuleUnload,
            38 => Bpf,
            39 => Mount,
            40 => Umount,
            41 => Unshare,
            42 => Setns,
            43 => Chroot,
            44 => Prctl,
            45 => Capset,
            46 => Clone,
            _ => return None,
        })
    }
}
