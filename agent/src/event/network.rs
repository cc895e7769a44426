//! Decoding of the network family: socket, connect, accept, bind, listen,
//! DNS queries, and sockets dup'd onto stdio.
use std::{
    borrow::Cow,
    fmt,
    net::{Ipv4Addr, Ipv6Addr},
};

use agent_ebpf::network::NetOp;
use serde::Serialize;

use super::{
    record::{Errno, SyscallParts},
    DecodeError,
};
use crate::kernel::syscalls::Syscall;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct NetworkInfo {
    /// socket, connect, accept, bind, listen, dns_query, dup, send.
    pub op: NetOp,
    pub syscall: Syscall,
    /// The socket's fd (for socket and accept: the new fd, when it worked).
    pub fd: i64,
    pub result: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<Errno>,
    /// connect on a non-blocking socket that is still connecting.
    pub in_progress: bool,
    /// socket: address family, type and protocol, by name where known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub family: Option<SockFamily>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub socket_type: Option<SockType>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocol: Option<u64>,
    /// connect and send: the remote address; accept: the peer; bind: the
    /// local one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<SockAddr>,
    /// listen: the backlog.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backlog: Option<i64>,
    /// dns_query: the question, decoded from the payload sent to port 53.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dns: Option<DnsQuery>,
    /// dup: a socket duplicated onto another fd (dup2/dup3 onto 0, 1 or 2
    /// is how a reverse shell wires its stdio to the network).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dup: Option<DupInfo>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct DupInfo {
    pub oldfd: i64,
    pub newfd: i64,
    pub flags: u64,
    /// The socket's address family (`inet`, `inet6`, `unix`, …).
    pub family: SockFamily,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct DnsQuery {
    /// The queried name, e.g. `example.com`.
    pub name: String,
    /// The query type (`A`, `AAAA`, `TXT`, ...).
    pub qtype: String,
    pub id: u16,
}

fn qtype_name(t: u16) -> String {
    match t {
        1 => "A".into(),
        2 => "NS".into(),
        5 => "CNAME".into(),
        6 => "SOA".into(),
        12 => "PTR".into(),
        15 => "MX".into(),
        16 => "TXT".into(),
        28 => "AAAA".into(),
        33 => "SRV".into(),
        65 => "HTTPS".into(),
        255 => "ANY".into(),
        n => format!("TYPE{n}"),
    }
}

/// Parses the first question of a DNS query, over UDP or TCP (2-byte length
/// prefix). None when the payload is not a well-formed query.
pub fn parse_dns_query(payload: &[u8]) -> Option<DnsQuery> {
    let msg = match payload {
        [hi, lo, rest @ ..]
            if u16::from_be_bytes([*hi, *lo]) as usize == rest.len() && rest.len() >= 12 =>
        {
            rest
        }
        _ => payload,
    };
    if msg.len() < 12 {
        return None;
    }
    let id = u16::from_be_bytes([msg[0], msg[1]]);
    let is_response = msg[2] & 0x80 != 0;
    let qdcount = u16::from_be_bytes([msg[4], msg[5]]);
    if is_response || qdcount == 0 {
        return None;
    }
    let mut labels = Vec::new();
    let mut at = 12;
    loop {
        let len = *msg.get(at)? as usize;
        at += 1;
        if len == 0 {
            break;
        }
        if len > 63 || labels.len() > 127 {
            return None;
        }
        let label = msg.get(at..at + len)?;
        labels.push(String::from_utf8_lossy(label).into_owned());
        at += len;
    }
    let qtype = u16::from_be_bytes([*msg.get(at)?, *msg.get(at + 1)?]);
    Some(DnsQuery {
        name: labels.join("."),
        qtype: qtype_name(qtype),
        id,
    })
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(tag = "family", rename_all = "lowercase")]
pub enum SockAddr {
    Inet { ip: Ipv4Addr, port: u16 },
    Inet6 { ip: Ipv6Addr, port: u16 },
    Unix { path: String },
    Other { code: u16 },
}

/// A socket's address family, printed by name (`inet`; `af_N` for one
/// without a name here).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub enum SockFamily {
    Unix,
    Inet,
    Inet6,
    Packet,
    Netlink,
    Other(u16),
}

impl SockFamily {
    pub fn from_raw(f: u64) -> SockFamily {
        match f as i32 {
            libc::AF_UNIX => SockFamily::Unix,
            libc::AF_INET => SockFamily::Inet,
            libc::AF_INET6 => SockFamily::Inet6,
            libc::AF_PACKET => SockFamily::Packet,
            libc::AF_NETLINK => SockFamily::Netlink,
            _ => SockFamily::Other(f as u16),
        }
    }

    pub fn name(self) -> Cow<'static, str> {
        Cow::Borrowed(match self {
            SockFamily::Unix => "unix",
            SockFamily::Inet => "inet",
            SockFamily::Inet6 => "inet6",
            SockFamily::Packet => "packet",
            SockFamily::Netlink => "netlink",
            SockFamily::Other(n) => return Cow::Owned(format!("af_{n}")),
        })
    }

    fn from_name(s: &str) -> Option<SockFamily> {
        Some(match s {
            "unix" => SockFamily::Unix,
            "inet" => SockFamily::Inet,
            "inet6" => SockFamily::Inet6,
            "packet" => SockFamily::Packet,
            "netlink" => SockFamily::Netlink,
            _ => SockFamily::Other(s.strip_prefix("af_")?.parse().ok()?),
        })
    }
}

/// A socket's type, printed by name (`stream`; `type_N` for one without a
/// name here).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub enum SockType {
    Stream,
    Dgram,
    Raw,
    SeqPacket,
    /// `SOCK_PACKET` (obsolete).
    Packet,
    Other(u8),
}

impl SockType {
    pub fn from_raw(t: u64) -> SockType {
        match (t as i32) & 0xf {
            libc::SOCK_STREAM => SockType::Stream,
            libc::SOCK_DGRAM => SockType::Dgram,
            libc::SOCK_RAW => SockType::Raw,
            libc::SOCK_SEQPACKET => SockType::SeqPacket,
            10 => SockType::Packet,
            n => SockType::Other(n as u8),
        }
    }

    pub fn name(self) -> Cow<'static, str> {
        Cow::Borrowed(match self {
            SockType::Stream => "stream",
            SockType::Dgram => "dgram",
            SockType::Raw => "raw",
            SockType::SeqPacket => "seqpacket",
            SockType::Packet => "packet",
            SockType::Other(n) => return Cow::Owned(format!("type_{n}")),
        })
    }

    fn from_name(s: &str) -> Option<SockType> {
        Some(match s {
            "stream" => SockType::Stream,
            "dgram" => SockType::Dgram,
            "raw" => SockType::Raw,
            "seqpacket" => SockType::SeqPacket,
            "packet" => SockType::Packet,
            _ => SockType::Other(s.strip_prefix("type_")?.parse().ok()?),
        })
    }
}

/// Debug and serde by name for the socket enums.
macro_rules! by_name {
    ($t:ty, $what:literal) => {
        impl fmt::Debug for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.name())
            }
        }
        impl serde::Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.name())
            }
        }
        impl<'de> serde::Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <Cow<str>>::deserialize(d)?;
                <$t>::from_name(&s).ok_or_else(|| {
                    serde::de::Error::custom(format!(concat!("`{}` is not a ", $what), s))
                })
            }
        }
    };
}
by_name!(SockFamily, "socket family");
by_name!(SockType, "socket type");

/// Parses a raw `struct sockaddr` (host byte order family, network order port).
pub fn parse_sockaddr(b: &[u8]) -> Option<SockAddr> {
    if b.len() < 2 {
        return None;
    }
    let family = u16::from_ne_bytes([b[0], b[1]]);
    Some(match family as i32 {
        libc::AF_INET if b.len() >= 8 => SockAddr::Inet {
            port: u16::from_be_bytes([b[2], b[3]]),
            ip: Ipv4Addr::new(b[4], b[5], b[6], b[7]),
        },
        libc::AF_INET6 if b.len() >= 24 => {
            let mut a = [0u8; 16];
            a.copy_from_slice(&b[8..24]);
            SockAddr::Inet6 {
                port: u16::from_be_bytes([b[2], b[3]]),
                ip: Ipv6Addr::from(a),
            }
        }
        libc::AF_UNIX => {
            let p = &b[2..];
            // Abstract sockets start with a NUL; shown with a leading '@'.
            let path = if p.first() == Some(&0) {
                let end = p[1..]
                    .iter()
                    .position(|&c| c == 0)
                    .map_or(p.len(), |i| i + 1);
                format!("@{}", String::from_utf8_lossy(&p[1..end]))
            } else {
                let end = p.iter().position(|&c| c == 0).unwrap_or(p.len());
                String::from_utf8_lossy(&p[..end]).into_owned()
            };
            SockAddr::Unix { path }
        }
        _ => SockAddr::Other { code: family },
    })
}

pub fn decode_network(bytes: &[u8]) -> Result<NetworkInfo, DecodeError> {
    let parts = SyscallParts::read(bytes, "network record")?;
    let rec = &parts.rec;
    let op = NetOp::from_repr(rec.op as u8).ok_or(DecodeError::UnknownOp {
        family: "network",
        op: rec.op,
    })?;
    let syscall =
        Syscall::by_nr(rec.syscall_nr).ok_or(DecodeError::UnknownSyscall(rec.syscall_nr))?;
    let a = rec.args;
    let ok = rec.result >= 0;
    let mut info = NetworkInfo {
        op,
        syscall,
        fd: a[0] as i32 as i64,
        result: rec.result,
        error: Errno::of_result(rec.result),
        in_progress: op == NetOp::Connect && rec.result == -(libc::EINPROGRESS as i64),
        family: None,
        socket_type: None,
        protocol: None,
        address: None,
        backlog: None,
        dns: None,
        dup: None,
    };
    match op {
        NetOp::Socket => {
            info.fd = if ok { rec.result } else { -1 };
            info.family = Some(SockFamily::from_raw(a[0]));
            info.socket_type = Some(SockType::from_raw(a[1]));
            info.protocol = Some(a[2]);
        }
        NetOp::Accept => {
            info.fd = if ok { rec.result } else { -1 };
            // The peer is written by the kernel only on success.
            info.address = if ok {
                parse_sockaddr(parts.path1)
            } else {
                None
            };
        }
        NetOp::Connect | NetOp::Bind => info.address = parse_sockaddr(parts.path1),
        // Sent only for datagram inet sockets (checked in the kernel).
        NetOp::Send => {
            info.address = parse_sockaddr(parts.path1);
            info.socket_type = Some(SockType::from_raw(libc::SOCK_DGRAM as u64));
        }
        NetOp::Listen => info.backlog = Some(a[1] as i32 as i64),
        NetOp::DnsQuery => {
            info.address = parse_sockaddr(parts.path1);
            info.dns = parse_dns_query(parts.path2);
        }
        NetOp::Dup => {
            info.fd = rec.result;
            info.dup = Some(DupInfo {
                oldfd: a[0] as i32 as i64,
                newfd: rec.result,
                // dup3's flags (dup and dup2 take none).
                flags: rec.flags,
                family: SockFamily::from_raw(rec.mode as u64),
            });
        }
    }
    Ok(info)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockaddrs() {
        let mut v4 = vec![0u8; 16];
        v4[..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
        v4[2..4].copy_from_slice(&443u16.to_be_bytes());
        v4[4..8].copy_from_slice(&[10, 1, 2, 3]);
        assert_eq!(
            parse_sockaddr(&v4),
            Some(SockAddr::Inet {
                ip: Ipv4Addr::new(10, 1, 2, 3),
                port: 443
            })
        );

        let mut v6 = vec![0u8; 28];
        v6[..2].copy_from_slice(&(libc::AF_INET6 as u16).to_ne_bytes());
        v6[2..4].copy_from_slice(&53u16.to_be_bytes());
        v6[23] = 1;
        assert_eq!(
            parse_sockaddr(&v6),
            Some(SockAddr::Inet6 {
                ip: Ipv6Addr::LOCALHOST,
                port: 53
            })
        );

        let mut un = (libc::AF_UNIX as u16).to_ne_bytes().to_vec();
        un.extend_from_slice(b"/run/docker.sock\0garbage");
        assert_eq!(
            parse_sockaddr(&un),
            Some(SockAddr::Unix {
                path: "/run/docker.sock".into()
            })
        );
        let mut abs = (libc::AF_UNIX as u16).to_ne_bytes().to_vec();
        abs.extend_from_slice(b"\0hidden\0");
        assert_eq!(
            parse_sockaddr(&abs),
            Some(SockAddr::Unix {
                path: "@hidden".into()
            })
        );
        assert_eq!(parse_sockaddr(&[1]), None);
    }

    fn query(name: &str, qtype: u16) -> Vec<u8> {
        let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        for l in name.split('.') {
            q.push(l.len() as u8);
            q.extend_from_slice(l.as_bytes());
        }
        q.push(0);
        q.extend_from_slice(&qtype.to_be_bytes());
        q.extend_from_slice(&1u16.to_be_bytes());
        q
    }

    #[test]
    fn dns_queries_udp_and_tcp() {
        let q = query("pool.miner.example", 28);
        assert_eq!(
            parse_dns_query(&q),
            Some(DnsQuery {
                name: "pool.miner.example".into(),
                qtype: "AAAA".into(),
                id: 0x1234
            })
        );
        let mut tcp = (q.len() as u16).to_be_bytes().to_vec();
        tcp.extend_from_slice(&q);
        assert_eq!(parse_dns_query(&tcp).unwrap().name, "pool.miner.example");
        // Truncated, a response, garbage: no query.
        assert_eq!(parse_dns_query(&q[..15]), None);
        let mut resp = q.clone();
        resp[2] |= 0x80;
        assert_eq!(parse_dns_query(&resp), None);
        assert_eq!(parse_dns_query(b"GET / HTTP/1.1"), None);
    }

    #[test]
    fn names() {
        assert_eq!(
            SockFamily::from_raw(libc::AF_PACKET as u64).name(),
            "packet"
        );
        assert_eq!(
            SockType::from_raw((libc::SOCK_RAW | libc::SOCK_CLOEXEC) as u64).name(),
            "raw"
        );
        for text in ["\"inet6\"", "\"af_40\""] {
            let f: SockFamily = serde_json::from_str(text).unwrap();
            assert_eq!(serde_json::to_string(&f).unwrap(), text);
        }
        assert!(serde_json::from_str::<SockType>("\"tube\"").is_err());
    }
}
