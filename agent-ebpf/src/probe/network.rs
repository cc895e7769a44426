//! The network family's kernel side: socket addresses copied raw, the
//! destination of a send (DNS is followed to port 53; other sends only on
//! an unconnected inet socket whose destination changed), a socket's
//! address family, and the first bytes of a DNS payload.
use core::ffi::c_void;

use agent_ebpf::{
    network::{
        DNS_PAYLOAD_MAX, SEND_VARIANT_SENDMMSG, SEND_VARIANT_SENDMSG, SEND_VARIANT_SENDTO,
        SOCKADDR_MAX,
    },
    syscall::PendingSyscall,
};
use aya_ebpf::helpers::generated::bpf_probe_read_user;

use super::{
    maps::{get_pos, set_pos, SyscallScratch},
    task::{fd_file, read_kernel},
};

/// Copies a user `struct sockaddr` raw. The buffer's real size is not
/// known here, so the read tries the largest address first, then
/// sockaddr_in6 and sockaddr_in, in case the buffer ends on a page edge.
#[inline(always)]
pub fn copy_sockaddr(s: *mut SyscallScratch, user: Option<u64>) -> (usize, usize, u32) {
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

/// The user address a send names (sendto's, or the first message's
/// `msg_name`); 0 when it names none (a connected socket).
#[inline(always)]
pub fn send_addr(variant: u8, p: &PendingSyscall) -> u64 {
    match variant {
        SEND_VARIANT_SENDTO => p.args[4],
        SEND_VARIANT_SENDMSG | SEND_VARIANT_SENDMMSG => unsafe {
            aya_ebpf::helpers::bpf_probe_read_user((p.args[1] + MSGHDR_NAME) as *const u64)
        }
        .unwrap_or(0),
        _ => 0,
    }
}

/// Destination port (host order) of a send to `addr` (from
/// [`send_addr`]), or, when it names none, of the connected socket behind
/// the fd. 0 when unknown.
#[inline(always)]
pub fn send_dport(addr: u64, p: &PendingSyscall) -> u16 {
    if addr != 0 {
        let port: u16 = unsafe { aya_ebpf::helpers::bpf_probe_read_user((addr + 2) as *const u16) }
            .unwrap_or(0);
        return u16::from_be(port);
    }
    connected_dport(p.args[0] as i32).unwrap_or(0)
}

/// `AF_INET` and `AF_INET6` as `sa_family` holds them.
const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;

/// A hash of the inet address at user `addr` (family, port and IP); None
/// for another family or an unreadable one.
#[inline(always)]
pub fn inet_dest_hash(addr: u64) -> Option<u64> {
    let w0: u64 = unsafe { aya_ebpf::helpers::bpf_probe_read_user(addr as *const u64) }.ok()?;
    match w0 as u16 {
        // family, port, IPv4: the first eight bytes are the whole address.
        AF_INET => Some(w0),
        AF_INET6 => {
            // family, port, flowinfo, then the 16-byte address at 8.
            let w1: u64 =
                unsafe { aya_ebpf::helpers::bpf_probe_read_user((addr + 8) as *const u64) }.ok()?;
            let w2: u64 =
                unsafe { aya_ebpf::helpers::bpf_probe_read_user((addr + 16) as *const u64) }
                    .ok()?;
            Some((w0 & 0xffff_ffff) ^ w1.rotate_left(21) ^ w2.rotate_left(42) ^ (1 << 63))
        }
        _ => None,
    }
}

/// `fd -> file -> private_data (struct socket) -> sk -> skc_dport`.
#[inline(always)]
fn connected_dport(fd: i32) -> Option<u16> {
    let file = fd_file(fd)?;
    let sock: *const u8 = read_kernel(file, config!(file_private_data))?;
    let sk: *const u8 = read_kernel(sock, config!(socket_sk))?;
    let port: u16 = read_kernel(sk, config!(sock_dport))?;
    Some(u16::from_be(port))
}

/// The `struct socket` behind `fd`; None when `fd` is not a socket (or
/// the layout is unknown).
#[inline(always)]
fn socket_of(fd: i32) -> Option<*const u8> {
    let file = fd_file(fd)?;
    let inode: *const u8 = read_kernel(file, config!(file_inode))?;
    let mode: u16 = read_kernel(inode, config!(inode_mode))?;
    if mode & S_IFMT != S_IFSOCK {
        return None;
    }
    read_kernel(file, config!(file_private_data))
}

/// The address family of the socket open as `fd`.
#[inline(always)]
pub fn socket_family(fd: i32) -> Option<u16> {
    let sk: *const u8 = read_kernel(socket_of(fd)?, config!(socket_sk))?;
    read_kernel(sk, config!(sock_family))
}

/// `SOCK_DGRAM`: the sends followed to a new destination.
pub const SOCK_DGRAM: u16 = 2;

/// The type (`SOCK_DGRAM`, ...) of the socket open as `fd`.
#[inline(always)]
pub fn socket_type(fd: i32) -> Option<u16> {
    read_kernel(socket_of(fd)?, config!(socket_type))
}

/// Copies the first bytes of a send's payload (`DNS_PAYLOAD_MAX` at most).
#[inline(always)]
pub fn copy_send_payload(s: *mut SyscallScratch, variant: u8, p: &PendingSyscall) -> usize {
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
                unsafe { aya_ebpf::helpers::bpf_probe_read_user(iov as *const u64) }.unwrap_or(0);
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
