//! File-family operations. Their records are [`crate::syscall::SyscallRecord`].

/// Which file operation a syscall performs.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileOp {
    Open = 1,
    Unlink = 2,
    Rmdir = 3,
    Rename = 4,
    Chmod = 5,
    Chown = 6,
    Link = 7,
    Symlink = 8,
    Mknod = 9,
    /// chdir/fchdir: the agent keeps each process's working directory.
    Chdir = 10,
}

impl FileOp {
    pub fn from_u8(v: u8) -> Option<FileOp> {
        Some(match v {
            1 => FileOp::Open,
            2 => FileOp::Unlink,
            3 => FileOp::Rmdir,
            4 => FileOp::Rename,
            5 => FileOp::Chmod,
            6 => FileOp::Chown,
            7 => FileOp::Link,
            8 => FileOp::Symlink,
            9 => FileOp::Mknod,
            10 => FileOp::Chdir,
            _ => return None,
        })
    }
}
