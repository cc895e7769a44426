//! File-family operations. Their records are [`crate::syscall::SyscallRecord`].

wire_enum! {
    /// Which file operation a syscall performs.
    pub enum FileOp: u8 {
        Open = 1 => "open",
        Unlink = 2 => "unlink",
        Rmdir = 3 => "rmdir",
        Rename = 4 => "rename",
        Chmod = 5 => "chmod",
        Chown = 6 => "chown",
        Link = 7 => "link",
        Symlink = 8 => "symlink",
        Mknod = 9 => "mknod",
        /// chdir/fchdir: the agent keeps each process's working directory.
        Chdir = 10 => "chdir",
        Mkdir = 11 => "mkdir",
        /// utimensat, utimes, futimesat, utime: a file's access and
        /// modification times set.
        Utime = 12 => "utime",
    }
}
