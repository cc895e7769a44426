//! Network-family operations. Their records are
//! [`crate::syscall::SyscallRecord`]; a socket address travels raw in the
//! first path slot (`SPEC_PATH1_SOCKADDR`) and is decoded by the agent.

wire_enum! {
    /// What a network syscall does. Values start at 64, clear of the others.
    pub enum NetOp: u8 {
        Socket = 64 => "socket",
        Connect = 65 => "connect",
        Accept = 66 => "accept",
        Bind = 67 => "bind",
        Listen = 68 => "listen",
        /// A send to port 53: a DNS query, payload decoded by the agent.
        DnsQuery = 69 => "dns_query",
        /// dup/dup2/dup3 of a socket onto fd 0, 1 or 2 (filtered in the
        /// kernel: other dups are not sent). The record's `mode` carries the
        /// socket's address family.
        Dup = 70 => "dup",
        /// A send on an unconnected inet socket to a destination other than
        /// the one it sent to last (Falco's `fd.name_changed`): UDP traffic
        /// to a new peer. The address only, never the payload.
        Send = 71 => "send",
    }
}

/// Bytes of a socket address the probe copies (`sizeof(sockaddr_un)` is 110).
pub const SOCKADDR_MAX: usize = 128;

/// Bytes of a DNS query payload the probe copies.
pub const DNS_PAYLOAD_MAX: usize = 512;

/// `ArgSpec::variant` for DNS-capable sends: where the destination and the
/// payload are.
pub const SEND_VARIANT_SENDTO: u8 = 1;
pub const SEND_VARIANT_SENDMSG: u8 = 2;
pub const SEND_VARIANT_SENDMMSG: u8 = 3;
