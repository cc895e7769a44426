//! Performs one syscall exactly as asked, so tests can check what the probe
//! reports for it: `vigil-test-helper OP ARGS...`. Prints the result
//! (return value or -errno) on stdout and always exits 0.
use std::ffi::CString;

fn c(s: &str) -> CString {
    CString::new(s).expect("no NUL in argument")
}

fn dir_fd(dir: &str) -> i32 {
    // SAFETY: valid C string.
    let fd = unsafe { libc::open(c(dir).as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY) };
    assert!(fd >= 0, "cannot open directory {dir}");
    fd
}

fn open_flags(spec: &str) -> i32 {
    let mut f = match (spec.contains('r'), spec.contains('w')) {
        (true, true) => libc::O_RDWR,
        (false, true) => libc::O_WRONLY,
        _ => libc::O_RDONLY,
    };
    if spec.contains('c') {
        f |= libc::O_CREAT;
    }
    if spec.contains('t') {
        f |= libc::O_TRUNC;
    }
    if spec.contains('a') {
        f |= libc::O_APPEND;
    }
    f
}

fn ret(v: i64) -> i64 {
    if v < 0 {
        -(std::io::Error::last_os_error().raw_os_error().unwrap_or(0) as i64)
    } else {
        v
    }
}

fn main() {
    let a: Vec<String> = std::env::args().skip(1).collect();
    let s = |i: usize| a.get(i).map(String::as_str).unwrap_or("");
    // SAFETY: every call gets valid C strings and plain integers.
    let r = unsafe {
        match s(0) {
            "open" => libc::open(c(s(1)).as_ptr(), open_flags(s(2)), 0o640) as i64,
            "openat" => {
                libc::openat(dir_fd(s(1)), c(s(2)).as_ptr(), open_flags(s(3)), 0o600) as i64
            }
            "openat2" => {
                // struct open_how { u64 flags; u64 mode; u64 resolve; }
                let how: [u64; 3] = [open_flags(s(3)) as u64, 0, 0];
                libc::syscall(
                    libc::SYS_openat2,
                    dir_fd(s(1)),
                    c(s(2)).as_ptr(),
                    how.as_ptr(),
                    24usize,
                )
            }
            "unlink" => libc::unlink(c(s(1)).as_ptr()) as i64,
            "unlinkat" => libc::unlinkat(dir_fd(s(1)), c(s(2)).as_ptr(), 0) as i64,
            "rmdir" => libc::rmdir(c(s(1)).as_ptr()) as i64,
            "rename" => libc::rename(c(s(1)).as_ptr(), c(s(2)).as_ptr()) as i64,
            "renameat2" => libc::syscall(
                libc::SYS_renameat2,
                dir_fd(s(1)),
                c(s(2)).as_ptr(),
                dir_fd(s(3)),
                c(s(4)).as_ptr(),
                libc::RENAME_NOREPLACE,
            ),
            "chmod" => libc::chmod(c(s(1)).as_ptr(), u32::from_str_radix(s(2), 8).unwrap()) as i64,
            "chown" => libc::chown(
                c(s(1)).as_ptr(),
                s(2).parse::<i64>().unwrap() as u32,
                s(3).parse::<i64>().unwrap() as u32,
            ) as i64,
            "link" => libc::link(c(s(1)).as_ptr(), c(s(2)).as_ptr()) as i64,
            "symlink" => libc::symlink(c(s(1)).as_ptr(), c(s(2)).as_ptr()) as i64,
            "mkfifo" => libc::mknod(c(s(1)).as_ptr(), libc::S_IFIFO | 0o600, 0) as i64,
            op => panic!("unknown op {op}"),
        }
    };
    println!("{}", ret(r));
}
