//! Events as activity records: what each kind of event says, in the wire
//! form the collector stores and queries.
use std::collections::HashMap;

use agent_ebpf::network::NetOp;
use vigil_proto::v1::{self as pb, ActivityKind};

use crate::{
    event::{
        network::{NetworkInfo, SockAddr, SockFamily, SockType},
        Event, EventBody,
    },
    util::procid::ProcIds,
};

/// Sockets seen created and bound, by (pid, fd): a connection's protocol
/// comes from its socket's type, a listener's address from its bind.
#[derive(Default)]
pub struct Sockets {
    map: HashMap<(u32, i64), Socket>,
}

#[derive(Default, Clone)]
struct Socket {
    family: Option<SockFamily>,
    ty: Option<SockType>,
    local: Option<SockAddr>,
}

/// Sockets remembered at most; beyond, the map starts over (a protocol
/// or listener address is then reported unknown, nothing else is lost).
const MAX_SOCKETS: usize = 16_384;

impl Sockets {
    fn note(&mut self, pid: u32, n: &NetworkInfo) {
        if n.result < 0 {
            return;
        }
        if self.map.len() >= MAX_SOCKETS {
            self.map.clear();
        }
        match n.op {
            NetOp::Socket => {
                self.map.insert(
                    (pid, n.fd),
                    Socket {
                        family: n.family,
                        ty: n.socket_type,
                        local: None,
                    },
                );
            }
            NetOp::Bind => {
                self.map.entry((pid, n.fd)).or_default().local = n.address.clone();
            }
            _ => {}
        }
    }

    fn get(&self, pid: u32, fd: i64) -> Option<&Socket> {
        self.map.get(&(pid, fd))
    }
}

/// tcp, udp, unix... from what is known of the socket.
fn protocol(family: Option<SockFamily>, ty: Option<SockType>, addr: Option<&SockAddr>) -> String {
    let family = family.or(match addr {
        Some(SockAddr::Inet { .. }) => Some(SockFamily::Inet),
        Some(SockAddr::Inet6 { .. }) => Some(SockFamily::Inet6),
        Some(SockAddr::Unix { .. }) => Some(SockFamily::Unix),
        _ => None,
    });
    match (family, ty) {
        (Some(SockFamily::Unix), _) => "unix".into(),
        (Some(SockFamily::Inet | SockFamily::Inet6), Some(SockType::Stream)) => "tcp".into(),
        (Some(SockFamily::Inet | SockFamily::Inet6), Some(SockType::Dgram)) => "udp".into(),
        (Some(SockFamily::Inet | SockFamily::Inet6), Some(SockType::Raw)) => "raw".into(),
        (Some(f), _) => f.name().into_owned(),
        (None, _) => String::new(),
    }
}

/// (address, port, unix path) of a socket address.
fn split(addr: Option<&SockAddr>) -> (String, u32, String) {
    match addr {
        Some(SockAddr::Inet { ip, port }) => (ip.to_string(), *port as u32, String::new()),
        Some(SockAddr::Inet6 { ip, port }) => (ip.to_string(), *port as u32, String::new()),
        Some(SockAddr::Unix { path }) => (String::new(), 0, path.clone()),
        _ => (String::new(), 0, String::new()),
    }
}

fn is_inet(addr: Option<&SockAddr>) -> bool {
    matches!(addr, Some(SockAddr::Inet { .. } | SockAddr::Inet6 { .. }))
}

/// `ev` as an activity record, without its process (the caller adds it
/// when the record is shipped); None for events that are no activity of
/// their own (a socket created, an address bound, a thread started).
pub fn activity(ev: &Event, sockets: &mut Sockets) -> Option<pb::Activity> {
    let mut a = pb::Activity {
        time_unix_ns: ev.time_unix_ns,
        event_type: ev.type_name().to_string(),
        ..Default::default()
    };
    let pid = ev.process.pid;
    match &ev.body {
        EventBody::Exec(x) => {
            a.kind = ActivityKind::Exec as i32;
            a.event_type = "execve".into();
            a.path = x.exe_path().to_string();
        }
        EventBody::Fork(f) => {
            if f.clone_flags
                .as_ref()
                .is_some_and(|v| v.contains(&"CLONE_THREAD"))
            {
                return None;
            }
            a.kind = ActivityKind::Fork as i32;
            a.detail = format!("child {}", f.child_pid);
        }
        EventBody::Exit(x) => {
            a.kind = ActivityKind::Exit as i32;
            match (x.exit_code, x.signal) {
                (_, Some(sig)) if sig > 0 => {
                    a.exit_code = 128 + sig;
                    a.detail = format!("killed by signal {sig}");
                }
                (Some(code), _) => a.exit_code = code,
                _ => {}
            }
        }
        EventBody::File(f) => {
            a.kind = ActivityKind::File as i32;
            a.event_type = f.syscall.name().to_string();
            a.path = f.path.clone();
            a.result = f.result.min(0);
            let mut detail = f.op.name().to_string();
            if let Some(o) = &f.open {
                detail.push(' ');
                detail.push_str(match (o.read, o.write) {
                    (true, true) => "read-write",
                    (false, true) => "write",
                    _ => "read",
                });
                if o.create {
                    detail.push_str(" create");
                }
            }
            if let Some(n) = &f.new_path {
                detail.push_str(" → ");
                detail.push_str(n);
            }
            a.detail = detail;
        }
        EventBody::Control(c) => {
            a.kind = ActivityKind::Other as i32;
            a.event_type = c.syscall.name().to_string();
            a.result = c.result.min(0);
            a.detail = c.op.name().to_string();
            if let Some(n) = &c.name {
                a.detail.push(' ');
                a.detail.push_str(n);
            }
        }
        EventBody::Network(n) => {
            sockets.note(pid, n);
            a.event_type = n.syscall.name().to_string();
            a.result = if n.in_progress { 0 } else { n.result.min(0) };
            let sock = sockets.get(pid, n.fd).cloned().unwrap_or_default();
            match n.op {
                NetOp::Socket | NetOp::Bind => return None,
                NetOp::Connect | NetOp::Accept => {
                    let inet = is_inet(n.address.as_ref());
                    a.kind = match (n.op, inet) {
                        (_, false) => ActivityKind::Other,
                        (NetOp::Connect, true) => ActivityKind::Connect,
                        _ => ActivityKind::Accept,
                    } as i32;
                    a.protocol = protocol(sock.family, sock.ty, n.address.as_ref());
                    if a.protocol.is_empty() && n.op == NetOp::Accept && inet {
                        a.protocol = "tcp".into();
                    }
                    let (ip, port, path) = split(n.address.as_ref());
                    (a.remote_addr, a.remote_port, a.path) = (ip, port, path);
                    let (ip, port, _) = split(sock.local.as_ref());
                    (a.local_addr, a.local_port) = (ip, port);
                    if !inet {
                        a.detail = format!("{} {}", n.op.name(), a.path);
                    }
                }
                // A datagram to a new peer: what a connection is for UDP.
                NetOp::Send => {
                    a.kind = ActivityKind::Connect as i32;
                    a.protocol = "udp".into();
                    a.detail = "send".into();
                    let (ip, port, _) = split(n.address.as_ref());
                    (a.remote_addr, a.remote_port) = (ip, port);
                    let (ip, port, _) = split(sock.local.as_ref());
                    (a.local_addr, a.local_port) = (ip, port);
                }
                NetOp::Listen => {
                    let inet = is_inet(sock.local.as_ref());
                    a.kind = if inet || sock.local.is_none() {
                        ActivityKind::Listen
                    } else {
                        ActivityKind::Other
                    } as i32;
                    a.protocol = protocol(sock.family, sock.ty, sock.local.as_ref());
                    let (ip, port, path) = split(sock.local.as_ref());
                    (a.local_addr, a.local_port, a.path) = (ip, port, path);
                    if let Some(b) = n.backlog {
                        a.detail = format!("backlog {b}");
                    }
                }
                NetOp::DnsQuery => {
                    let q = n.dns.as_ref()?;
                    a.kind = ActivityKind::Dns as i32;
                    a.domain = q.name.to_ascii_lowercase();
                    a.detail = q.qtype.clone();
                    a.protocol = protocol(sock.family, sock.ty, n.address.as_ref());
                    let (ip, port, _) = split(n.address.as_ref());
                    (a.remote_addr, a.remote_port) = (ip, port);
                }
                NetOp::Dup => {
                    a.kind = ActivityKind::Other as i32;
                    a.detail = match &n.dup {
                        Some(d) => {
                            format!("{} socket duplicated onto fd {}", d.family.name(), d.newfd)
                        }
                        None => "socket duplicated".into(),
                    };
                }
            }
        }
    }
    Some(a)
}

/// The process an activity record is about: everything for an exec (the
/// record the collector builds its process view from), the identity for
/// the rest.
pub fn process(ev: &Event, ids: &ProcIds, full: bool) -> pb::ProcessInfo {
    if full {
        return crate::alert::process_info(ev, ids);
    }
    let p = &ev.process;
    let d = p.detail.as_deref();
    pb::ProcessInfo {
        pid: p.pid,
        tid: p.tid,
        ppid: p.ppid,
        uid: p.uid,
        gid: p.gid,
        comm: p.comm.clone(),
        exe: ev.exe().unwrap_or_default().to_string(),
        user: d
            .and_then(|d| d.user.as_deref())
            .unwrap_or_default()
            .to_string(),
        proc_id: ids.of(p.pid, p.start_boottime_ns),
        parent_proc_id: crate::alert::parent_proc_id(ev, ids),
        start_unix_ns: crate::alert::start_unix_ns(p.start_boottime_ns),
        ..Default::default()
    }
}

/// A fork record is about the child: its own id, the forking process as
/// its parent, the same program.
pub fn fork_child(ev: &Event, ids: &ProcIds, a: &mut pb::Activity) {
    let EventBody::Fork(f) = &ev.body else {
        return;
    };
    let Some(p) = a.process.as_mut() else {
        return;
    };
    p.parent_proc_id = std::mem::take(&mut p.proc_id);
    p.ppid = p.pid;
    p.pid = f.child_pid;
    p.tid = f.child_pid;
    p.proc_id = ids.of(f.child_pid, f.child_start_boottime_ns);
    p.start_unix_ns = crate::alert::start_unix_ns(f.child_start_boottime_ns);
}
