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

/// Forks a child that sleeps, attaches to it with PTRACE_ATTACH, then
/// kills it. Returns the attach result.
unsafe fn ptrace_attach_child() -> i64 {
    let child = unsafe { libc::fork() };
    if child == 0 {
        unsafe { libc::pause() };
        unsafe { libc::_exit(0) };
    }
    let r = unsafe { libc::ptrace(libc::PTRACE_ATTACH, child, 0, 0) } as i64;
    let r = ret(r);
    eprintln!("child {child}");
    unsafe {
        libc::kill(child, libc::SIGKILL);
        libc::waitpid(child, std::ptr::null_mut(), 0);
    }
    if r == 0 {
        child as i64
    } else {
        r
    }
}

fn v4(port: u16) -> libc::sockaddr_in {
    // SAFETY: plain old data.
    let mut a: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    a.sin_family = libc::AF_INET as u16;
    a.sin_port = port.to_be();
    a.sin_addr.s_addr = u32::from_ne_bytes([127, 0, 0, 1]);
    a
}

unsafe fn connect_v4(fd: i32, port: u16) -> i64 {
    let a = v4(port);
    unsafe { libc::connect(fd, (&a as *const libc::sockaddr_in).cast(), 16) as i64 }
}

/// A DNS A query for `name`.
fn dns_query(name: &str) -> Vec<u8> {
    let mut q = vec![0xbe, 0xef, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for l in name.split('.') {
        q.push(l.len() as u8);
        q.extend_from_slice(l.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
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
            // utimensat DIR NAME now|given: relative to a dirfd.
            "utimensat" => {
                let t = [libc::timespec {
                    tv_sec: 1_000_000_000,
                    tv_nsec: 0,
                }; 2];
                let times = if s(3) == "given" {
                    t.as_ptr()
                } else {
                    std::ptr::null()
                };
                libc::utimensat(dir_fd(s(1)), c(s(2)).as_ptr(), times, 0) as i64
            }
            // futimens PATH: utimensat(fd, NULL, times), times given.
            "futimens" => {
                let fd = libc::open(c(s(1)).as_ptr(), libc::O_RDONLY);
                let t = [libc::timespec {
                    tv_sec: 1_000_000_000,
                    tv_nsec: 0,
                }; 2];
                libc::futimens(fd, t.as_ptr()) as i64
            }
            // utimes PATH: times NULL (now); the syscall itself, as glibc's
            // utimes() calls utimensat.
            "utimes" => libc::syscall(
                libc::SYS_utimes,
                c(s(1)).as_ptr(),
                std::ptr::null::<libc::timeval>(),
            ),
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
            // control family
            "setresuid" => libc::setresuid(u32::MAX, s(1).parse().unwrap(), u32::MAX) as i64,
            "setgid" => libc::setgid(s(1).parse().unwrap()) as i64,
            "ptrace-attach" => ptrace_attach_child(),
            "memfd" => libc::memfd_create(c(s(1)).as_ptr(), libc::MFD_CLOEXEC) as i64,
            "init_module" => {
                let junk = [0u8; 64];
                libc::syscall(
                    libc::SYS_init_module,
                    junk.as_ptr(),
                    junk.len(),
                    c(s(1)).as_ptr(),
                )
            }
            "finit_module" => {
                let fd = libc::open(c(s(1)).as_ptr(), libc::O_RDONLY);
                libc::syscall(libc::SYS_finit_module, fd, c(s(2)).as_ptr(), 0)
            }
            "delete_module" => {
                libc::syscall(libc::SYS_delete_module, c(s(1)).as_ptr(), libc::O_NONBLOCK)
            }
            "bpf-map" => {
                // union bpf_attr for BPF_MAP_CREATE: type, key size, value size, entries.
                let attr: [u32; 16] = [
                    2, /* ARRAY */
                    4, 8, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                ];
                libc::syscall(
                    libc::SYS_bpf,
                    0,
                    attr.as_ptr(),
                    std::mem::size_of_val(&attr),
                )
            }
            "mount-tmpfs" => libc::mount(
                c("vigil").as_ptr(),
                c(s(1)).as_ptr(),
                c("tmpfs").as_ptr(),
                0,
                std::ptr::null(),
            ) as i64,
            "umount" => libc::umount2(c(s(1)).as_ptr(), 0) as i64,
            "unshare-uts" => libc::unshare(libc::CLONE_NEWUTS) as i64,
            "setns-uts" => {
                let fd = libc::open(c("/proc/self/ns/uts").as_ptr(), libc::O_RDONLY);
                libc::setns(fd, libc::CLONE_NEWUTS) as i64
            }
            "chroot" => libc::chroot(c(s(1)).as_ptr()) as i64,
            "memfd-exec" => {
                let fd = libc::memfd_create(c("payload").as_ptr(), 0);
                let image = std::fs::read("/bin/true").unwrap();
                libc::write(fd, image.as_ptr().cast(), image.len());
                let (a0, a1) = (c("payload"), c("--fileless"));
                let argv = [a0.as_ptr(), a1.as_ptr(), std::ptr::null()];
                let envp = [std::ptr::null()];
                libc::fexecve(fd, argv.as_ptr(), envp.as_ptr()) as i64
            }
            // network family
            "socket-raw" => libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_ICMP) as i64,
            "socket-packet" => libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW,
                (libc::ETH_P_ALL as u16).to_be() as i32,
            ) as i64,
            "connect4" => {
                let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
                connect_v4(fd, s(1).parse().unwrap())
            }
            "connect-read" => {
                // What a dropped payload does: phone home on
                // 127.0.0.1:PORT, then read FILE. Returns the bytes read.
                let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
                let _ = ret(connect_v4(fd, s(1).parse().unwrap()));
                let _ = libc::write(fd, b"hi".as_ptr().cast(), 2);
                libc::close(fd);
                let f = libc::open(c(s(2)).as_ptr(), libc::O_RDONLY);
                let mut buf = [0u8; 4096];
                let n = ret(libc::read(f, buf.as_mut_ptr().cast(), buf.len()) as i64);
                libc::close(f);
                n
            }
            "connect4-nonblock" => {
                let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_NONBLOCK, 0);
                connect_v4(fd, s(1).parse().unwrap())
            }
            "connect6" => {
                let fd = libc::socket(libc::AF_INET6, libc::SOCK_STREAM, 0);
                let mut a: libc::sockaddr_in6 = std::mem::zeroed();
                a.sin6_family = libc::AF_INET6 as u16;
                a.sin6_port = s(1).parse::<u16>().unwrap().to_be();
                a.sin6_addr.s6_addr[15] = 1;
                libc::connect(
                    fd,
                    (&a as *const libc::sockaddr_in6).cast(),
                    std::mem::size_of_val(&a) as u32,
                ) as i64
            }
            "connect-unix" => {
                let fd = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0);
                let mut a: libc::sockaddr_un = std::mem::zeroed();
                a.sun_family = libc::AF_UNIX as u16;
                for (i, b) in s(1).bytes().enumerate() {
                    a.sun_path[i] = b as libc::c_char;
                }
                libc::connect(
                    fd,
                    (&a as *const libc::sockaddr_un).cast(),
                    std::mem::size_of_val(&a) as u32,
                ) as i64
            }
            "serve-once" => {
                // bind 127.0.0.1:PORT, listen, accept4 one connection that
                // this process makes to itself.
                let port: u16 = s(1).parse().unwrap();
                let l = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
                let one: i32 = 1;
                libc::setsockopt(
                    l,
                    libc::SOL_SOCKET,
                    libc::SO_REUSEADDR,
                    (&one as *const i32).cast(),
                    4,
                );
                let a = v4(port);
                let _ = ret(libc::bind(l, (&a as *const libc::sockaddr_in).cast(), 16) as i64);
                let _ = ret(libc::listen(l, 7) as i64);
                let c = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
                let _ = connect_v4(c, port);
                let mut peer: libc::sockaddr_in = std::mem::zeroed();
                let mut len: u32 = 16;
                libc::accept4(
                    l,
                    (&mut peer as *mut libc::sockaddr_in).cast(),
                    &mut len,
                    libc::SOCK_CLOEXEC,
                ) as i64
            }
            "dns-sendto" => {
                let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0);
                let q = dns_query(s(1));
                let a = v4(s(2).parse().unwrap_or(53));
                libc::sendto(
                    fd,
                    q.as_ptr().cast(),
                    q.len(),
                    0,
                    (&a as *const libc::sockaddr_in).cast(),
                    16,
                ) as i64
            }
            "dns-connected-sendmmsg" => {
                // How glibc's resolver sends: connected UDP, sendmmsg.
                let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0);
                let _ = connect_v4(fd, 53);
                let q = dns_query(s(1));
                let mut iov = libc::iovec {
                    iov_base: q.as_ptr() as *mut libc::c_void,
                    iov_len: q.len(),
                };
                let mut msg: libc::mmsghdr = std::mem::zeroed();
                msg.msg_hdr.msg_iov = &mut iov;
                msg.msg_hdr.msg_iovlen = 1;
                libc::sendmmsg(fd, &mut msg, 1, 0) as i64
            }
            "capset-drop" => {
                // Keep only CAP_NET_BIND_SERVICE (10) effective and permitted.
                let hdr: [u32; 2] = [0x20080522, 0];
                let data: [u32; 6] = [1 << 10, 1 << 10, 0, 0, 0, 0];
                libc::syscall(libc::SYS_capset, hdr.as_ptr(), data.as_ptr())
            }
            "clone-newuts" => {
                // A child in a new UTS namespace, via clone(2) itself.
                let r = libc::syscall(
                    libc::SYS_clone,
                    (libc::CLONE_NEWUTS | libc::SIGCHLD) as u64,
                    0u64,
                    0u64,
                    0u64,
                    0u64,
                );
                if r == 0 {
                    libc::_exit(0);
                }
                libc::waitpid(r as i32, std::ptr::null_mut(), 0);
                r
            }
            "bpf-prog-load" => {
                // A zeroed bpf_attr: the kernel refuses it, the attempt is seen.
                let attr = [0u8; 128];
                libc::syscall(libc::SYS_bpf, 5, attr.as_ptr(), attr.len())
            }
            "ptrace-traceme" => libc::ptrace(libc::PTRACE_TRACEME, 0, 0, 0) as i64,
            "dup2-socket" => {
                // A loopback connection to itself, its socket put on fd N.
                let l = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
                let mut a = v4(0);
                let _ = ret(libc::bind(l, (&a as *const libc::sockaddr_in).cast(), 16) as i64);
                let _ = ret(libc::listen(l, 1) as i64);
                let mut len: u32 = 16;
                libc::getsockname(l, (&mut a as *mut libc::sockaddr_in).cast(), &mut len);
                let c = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
                let _ = connect_v4(c, u16::from_be(a.sin_port));
                libc::dup2(c, s(1).parse().unwrap()) as i64
            }
            "reverse-shell" => {
                // What a reverse shell does, in one process: connect to
                // ADDR (a listener of its own there), put the socket on
                // stdin, become a shell.
                let ip: std::net::Ipv4Addr = s(1).parse().expect("an IPv4 address");
                let mut a = v4(0);
                a.sin_addr.s_addr = u32::from_ne_bytes(ip.octets());
                let l = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
                let _ = ret(libc::bind(l, (&a as *const libc::sockaddr_in).cast(), 16) as i64);
                let _ = ret(libc::listen(l, 1) as i64);
                let mut len: u32 = 16;
                libc::getsockname(l, (&mut a as *mut libc::sockaddr_in).cast(), &mut len);
                let sock = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
                let _ =
                    ret(libc::connect(sock, (&a as *const libc::sockaddr_in).cast(), 16) as i64);
                let _ = ret(libc::dup2(sock, 0) as i64);
                let (sh, arg0, dash_c, script) = (c("/bin/sh"), c("sh"), c("-c"), c("exit 0"));
                let argv = [
                    arg0.as_ptr(),
                    dash_c.as_ptr(),
                    script.as_ptr(),
                    std::ptr::null(),
                ];
                libc::execv(sh.as_ptr(), argv.as_ptr()) as i64
            }
            "connect-addr" => {
                // connect to ADDR:PORT, where a listener of its own waits
                // (ADDR must be local: a test's network namespace).
                let ip: std::net::Ipv4Addr = s(1).parse().expect("an IPv4 address");
                let mut a = v4(s(2).parse().unwrap());
                a.sin_addr.s_addr = u32::from_ne_bytes(ip.octets());
                let l = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
                let _ = ret(libc::bind(l, (&a as *const libc::sockaddr_in).cast(), 16) as i64);
                let _ = ret(libc::listen(l, 1) as i64);
                let sock = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
                libc::connect(sock, (&a as *const libc::sockaddr_in).cast(), 16) as i64
            }
            // UFFD_USER_MODE_ONLY (1): allowed without privileges.
            "userfaultfd" => libc::syscall(libc::SYS_userfaultfd, libc::O_CLOEXEC | 1),
            "exec-argc0" => {
                // What the pkexec exploit (CVE-2021-4034) does: exec PATH
                // with no arguments at all, not even argv[0].
                let path = c(s(1));
                let argv: [*const libc::c_char; 1] = [std::ptr::null()];
                libc::execv(path.as_ptr(), argv.as_ptr()) as i64
            }
            "dup2-file" => {
                let f = libc::open(c("/dev/null").as_ptr(), libc::O_WRONLY);
                libc::dup2(f, s(1).parse().unwrap()) as i64
            }
            "become-root" => {
                // Drop to uid 1000 keeping saved uid 0, then take root back.
                let _ = ret(libc::setresuid(1000, 1000, 0) as i64);
                libc::setresuid(0, 0, 0) as i64
            }
            "stay-root" => libc::setresuid(0, 0, 0) as i64,
            // A tmpfs attached at TARGET with the new mount API: fsopen,
            // fsconfig(CREATE), fsmount, move_mount (what util-linux 2.39
            // and later mount does).
            "move-mount-tmpfs" => {
                let fs = libc::syscall(libc::SYS_fsopen, c("tmpfs").as_ptr(), 0);
                let created = libc::syscall(
                    libc::SYS_fsconfig,
                    fs,
                    6, // FSCONFIG_CMD_CREATE
                    std::ptr::null::<libc::c_char>(),
                    std::ptr::null::<libc::c_void>(),
                    0,
                );
                let mnt = libc::syscall(libc::SYS_fsmount, fs, 0, 0);
                if fs < 0 || created < 0 || mnt < 0 {
                    -1
                } else {
                    libc::syscall(
                        libc::SYS_move_mount,
                        mnt,
                        c("").as_ptr(),
                        libc::AT_FDCWD,
                        c(s(1)).as_ptr(),
                        4, // MOVE_MOUNT_F_EMPTY_PATH
                    )
                }
            }
            // udp-spray N PORT [REPEAT]: one unconnected UDP socket sending
            // a byte to 127.0.0.1 on N ports from PORT up (N destinations),
            // each REPEAT times (default 1).
            "udp-spray" => {
                let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0);
                let n: u16 = s(1).parse().unwrap();
                let base: u16 = s(2).parse().unwrap();
                let mut sent = 0i64;
                let repeat: u16 = s(3).parse().unwrap_or(1);
                for i in 0..n * repeat {
                    let a = v4(base + i / repeat);
                    let r = libc::sendto(
                        fd,
                        b"x".as_ptr().cast(),
                        1,
                        0,
                        (&a as *const libc::sockaddr_in).cast(),
                        16,
                    );
                    if r == 1 {
                        sent += 1;
                    }
                }
                sent
            }
            "prctl-name" => libc::prctl(libc::PR_SET_NAME, c(s(1)).as_ptr(), 0, 0, 0) as i64,
            op => panic!("unknown op {op}"),
        }
    };
    println!("{}", ret(r));
}
