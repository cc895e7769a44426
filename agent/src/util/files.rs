//! Reading files a container controls: `/etc/passwd` and `/etc/group`
//! through `/proc/PID/root`. A hostile container can put a FIFO there (a
//! plain read would block a resolver thread forever), a link to
//! `/dev/zero` (an endless read), or a symlink to an absolute path (which
//! would resolve in the agent's root, on the host). So: resolved inside the
//! given root, opened non-blocking, regular files only, read up to a cap.
use std::{
    ffi::CString,
    fs::File,
    io::{self, Read},
    os::{
        fd::{FromRawFd, OwnedFd},
        unix::ffi::OsStrExt,
    },
    path::Path,
};

/// Reads `rel` (e.g. `etc/passwd`) as seen from `root`, at most `cap`
/// bytes. Symlinks, `..` and absolute links stay inside `root`
/// (`openat2` with `RESOLVE_IN_ROOT`). Anything but a regular file is an
/// error (`InvalidInput`).
pub fn read_in_root(root: &Path, rel: &str, cap: usize) -> io::Result<Vec<u8>> {
    let root_fd = open_dir(root)?;
    let rel_c = CString::new(rel).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let how = OpenHow {
        flags: (libc::O_RDONLY | libc::O_NONBLOCK | libc::O_CLOEXEC | libc::O_NOCTTY) as u64,
        mode: 0,
        resolve: libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS,
    };
    // SAFETY: valid descriptor, C string and open_how of the right size.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            std::os::fd::AsRawFd::as_raw_fd(&root_fd),
            rel_c.as_ptr(),
            &how as *const OpenHow,
            std::mem::size_of::<OpenHow>(),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a descriptor we just opened and own.
    let file = File::from(unsafe { OwnedFd::from_raw_fd(fd as i32) });
    if !file.metadata()?.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    let mut out = Vec::new();
    file.take(cap as u64).read_to_end(&mut out)?;
    Ok(out)
}

/// `struct open_how` (libc's is non-exhaustive).
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

fn open_dir(root: &Path) -> io::Result<OwnedFd> {
    let c = CString::new(root.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: a valid C string.
    let fd = unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a descriptor we just opened and own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_files_are_refused_or_bounded() {
        let d = tempfile::tempdir().unwrap();
        let etc = d.path().join("etc");
        std::fs::create_dir(&etc).unwrap();
        std::fs::write(etc.join("passwd"), "root:x:0:0::/:/bin/sh\n").unwrap();
        assert_eq!(
            read_in_root(d.path(), "etc/passwd", 1 << 20).unwrap(),
            b"root:x:0:0::/:/bin/sh\n"
        );
        // A FIFO: refused at once, not a blocked thread.
        let fifo = CString::new(etc.join("group").as_os_str().as_bytes()).unwrap();
        // SAFETY: a valid path.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        let t = std::time::Instant::now();
        let e = read_in_root(d.path(), "etc/group", 1 << 20).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        assert!(t.elapsed().as_secs() < 2);
        // A device: refused.
        std::fs::remove_file(etc.join("group")).unwrap();
        std::os::unix::fs::symlink("/dev/zero", etc.join("group")).unwrap();
        assert!(read_in_root(d.path(), "etc/group", 1 << 20).is_err());
        // An absolute symlink resolves inside the root, not on the host.
        std::fs::remove_file(etc.join("group")).unwrap();
        std::os::unix::fs::symlink("/etc/hostname", etc.join("group")).unwrap();
        let e = read_in_root(d.path(), "etc/group", 1 << 20).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound, "{e}");
        // A huge file: capped.
        std::fs::write(etc.join("passwd"), vec![b'x'; 100_000]).unwrap();
        assert_eq!(
            read_in_root(d.path(), "etc/passwd", 4096).unwrap().len(),
            4096
        );
    }
}
