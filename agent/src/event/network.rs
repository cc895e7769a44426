//! Decoding of the network family: socket, connect, accept, bind, listen.
use std::net::{Ipv4Addr, Ipv6Addr};

use agent_ebpf::{network::NetOp, syscall::SyscallRecord};
use serde::Serialize;

use super::{
    file::{errno_name, tail_parts},
    read_record, DecodeError,
};
use crate::kernel::syscalls;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct NetworkInfo {
    /// socket, connect, accept, bind, listen.
    #[serde(deserialize_with = "crate::event::intern::one")]
    pub op: crate::event::intern::Name,
    pub syscall: String,
    /// The socket's fd (for socket and accept: the new fd, when it worked).
    pub fd: i64,
    pub result: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// connect on a non-blocking socket that is still connecting.
    pub in_progress: bool,
    /// socket: address family, type and protocol, by name where known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub family: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub socket_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocol: Option<u64>,
    /// connect: the remote address; accept: the peer; bind: the local one.
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
    pub family: String,
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
    Inet { ip: String, port: u16 },
    Inet6 { ip: String, port: u16 },
    Unix { path: String },
    Other { code: u16 },
}

pub fn family_name(f: u64) -> String {
    match f as i32 {
        libc::AF_UNIX => "unix".into(),
        libc::AF_INET => "inet".into(),
        libc::AF_INET6 => "inet6".into(),
        libc::AF_PACKET => "packet".into(),
        libc::AF_NETLINK => "netlink".into(),
        n => format!("af_{n}"),
    }
}

pub fn type_name(t: u64) -> String {
    match (t as i32) & 0xf {
        libc::SOCK_STREAM => "stream".into(),
        libc::SOCK_DGRAM => "dgram".into(),
        libc::SOCK_RAW => "raw".into(),
        libc::SOCK_SEQPACKET => "seqpacket".into(),
        10 => "packet".into(), // SOCK_PACKET (obsolete)
        n => format!("type_{n}"),
    }
}

/// Parses a raw `struct sockaddr` (host byte order family, network order port).
pub fn parse_sockaddr(b: &[u8]) -> Option<SockAddr> {
    if b.len() < 2 {
        return None;
    }
    let family = u16::from_ne_bytes([b[0], b[1]]);
    Some(match family as i32 {
        libc::AF_INET if b.len() >= 8 => SockAddr::Inet {
            port: u16::from_be_bytes([b[2], b[3]]),
            ip: Ipv4Addr::new(b[4], b[5], b[6], b[7]).to_string(),
        },
        libc::AF_INET6 if b.len() >= 24 => {
            let mut a = [0u8; 16];
            a.copy_from_slice(&b[8..24]);
            SockAddr::Inet6 {
                port: u16::from_be_bytes([b[2], b[3]]),
                ip: Ipv6Addr::from(a).to_string(),
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

fn op_name(op: NetOp) -> &'static str {
    match op {
        NetOp::Socket => "socket",
        NetOp::Connect => "connect",
        NetOp::Accept => "accept",
        NetOp::Bind => "bind",
        NetOp::Listen => "listen",
        NetOp::DnsQuery => "dns_query",
        NetOp::Dup => "dup",
    }
}

pub fn decode_network(bytes: &[u8]) -> Result<NetworkInfo, DecodeError> {
    let rec: SyscallRecord = read_record(bytes, "network record")?;
    let op = NetOp::from_u8(rec.op as u8).ok_or(DecodeError::UnknownKind(rec.op))?;
    let tail = &bytes[std::mem::size_of::<SyscallRecord>()..];
    let [p1, _, p2, _] = tail_parts(
        tail,
        [rec.path1_len, rec.base1_len, rec.path2_len, rec.base2_len],
    );
    let a = rec.args;
    let ok = rec.result >= 0;
    let mut info = NetworkInfo {
        op: op_name(op),
        syscall: syscalls::name_of(rec.syscall_nr)
            .map(str::to_string)
            .unwrap_or_else(|| format!("syscall_{}", rec.syscall_nr)),
        fd: a[0] as i32 as i64,
        result: rec.result,
        error: errno_name(rec.result),
        in_progress: op == NetOp::Connect && rec.result == -(libc::EINPROGRESS as i64),
        ..NetworkInfo::default()
    };
    if info.in_progress {
        info.error = Some("EINPROGRESS".into());
    }
    match op {
        NetOp::Socket => {
            info.fd = if ok { rec.result } else { -1 };
            info.family = Some(family_name(a[0]));
            info.socket_type = Some(type_name(a[1]));
            info.protocol = Some(a[2]);
        }
        NetOp::Accept => {
            info.fd = if ok { rec.result } else { -1 };
            // The peer is written by the kernel only on success.
            info.address = if ok { parse_sockaddr(p1) } else { None };
        }
        NetOp::Connect | NetOp::Bind => info.address = parse_sockaddr(p1),
        NetOp::Listen => info.backlog = Some(a[1] as i32 as i64),
        NetOp::DnsQuery => {
            info.address = parse_sockaddr(p1);
            info.dns = parse_dns_query(p2);
        }
        NetOp::Dup => {
            info.fd = rec.result;
            info.dup = Some(DupInfo {
                oldfd: a[0] as i32 as i64,
                newfd: rec.result,
                flags: if rec.syscall_nr as i64 == libc::SYS_dup3 {
                    a[2]
                } else {
                    0
                },
                family: family_name(rec.mode as u64),
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
                ip: "10.1.2.3".into(),
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
                ip: "::1".into(),
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
        assert_eq!(family_name(libc::AF_PACKET as u64), "packet");
        assert_eq!(
            type_name((libc::SOCK_RAW | libc::SOCK_CLOEXEC) as u64),
            "raw"
        );
    }
}
