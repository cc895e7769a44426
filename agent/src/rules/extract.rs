//! Reading a field's value from an enriched event: one arm per field of
//! the table in `fields.rs`, so the rules' meaning of each Falco name lives
//! in one place. Values borrow from the event wherever they can.
use std::{borrow::Cow, net::IpAddr};

use agent_ebpf::{file::FileOp, network::NetOp};

use super::{
    fields::{ArgName, FieldId, FieldRef, Val},
    glob::{glob_match, parse_glob},
};
use crate::{
    event::{
        network::{SockAddr, SockFamily, SockType},
        ContainerMount, Event, EventBody, FileInfo, NetworkInfo,
    },
    util::{cap_names, clock::BootClock},
};

/// Where the last `/` is. A plain backward loop: the names are short, and
/// the generic char search set up for each one was a fifth of matching.
fn last_slash(p: &str) -> Option<usize> {
    p.as_bytes().iter().rposition(|&b| b == b'/')
}

fn basename(p: &str) -> &str {
    match last_slash(p) {
        Some(i) => &p[i + 1..],
        None => p,
    }
}

fn dirname(p: &str) -> &str {
    match last_slash(p) {
        Some(0) => "/",
        Some(i) => &p[..i],
        None => ".",
    }
}

/// `name arg1 arg2…`, as Falco prints a command line.
pub fn cmdline(name: &str, argv: &[String]) -> String {
    let args = argv.get(1..).unwrap_or_default();
    if args.is_empty() {
        name.to_string()
    } else {
        format!("{name} {}", args.join(" "))
    }
}

/// The syscall name Falco's `evt.type` gives this event.
pub fn evt_type(ev: &Event) -> &str {
    match &ev.body {
        EventBody::Exec(x) => {
            // fexecve and fileless execution go through execveat.
            if x.exe_memfd
                || x.filename.starts_with("/dev/fd/")
                || x.filename.starts_with("/proc/self/fd/")
            {
                "execveat"
            } else {
                "execve"
            }
        }
        EventBody::Fork(f) => {
            if f.clone_flags.is_some() {
                "clone"
            } else {
                "fork"
            }
        }
        EventBody::Exit(_) => "procexit",
        EventBody::File(f) => f.syscall.name(),
        EventBody::Control(c) => c.syscall.name(),
        EventBody::Network(n) => n.syscall.name(),
    }
}

fn argv(ev: &Event) -> Option<&[String]> {
    ev.argv().map(|(a, _)| a)
}

fn exec_without_arguments(ev: &Event) -> bool {
    matches!(&ev.body, EventBody::Exec(x)
        if x.argv.is_empty() && !x.argv_truncated && !x.argv_unreadable)
}

fn s(v: &str) -> Option<Val<'_>> {
    Some(Val::Str(Cow::Borrowed(v)))
}

fn owned<'a>(v: String) -> Option<Val<'a>> {
    Some(Val::Str(Cow::Owned(v)))
}

fn int<'a>(v: impl Into<i64>) -> Option<Val<'a>> {
    Some(Val::Int(v.into()))
}

fn detail(ev: &Event) -> Option<&crate::event::ProcessDetail> {
    ev.process.detail.as_deref()
}

fn result_of(ev: &Event) -> Option<i64> {
    match &ev.body {
        EventBody::File(f) => Some(f.result),
        EventBody::Control(c) => Some(c.result),
        EventBody::Network(n) => Some(n.result),
        EventBody::Exec(_) | EventBody::Fork(_) => Some(0),
        EventBody::Exit(_) => None,
    }
}

/// The address of a network event, and whether it is the remote side.
fn address(n: &NetworkInfo) -> Option<(&SockAddr, bool)> {
    let a = n.address.as_ref()?;
    Some((a, n.op != NetOp::Bind))
}

fn ip_port(a: &SockAddr) -> Option<(IpAddr, u16)> {
    match a {
        SockAddr::Inet { ip, port } => Some((IpAddr::V4(*ip), *port)),
        SockAddr::Inet6 { ip, port } => Some((IpAddr::V6(*ip), *port)),
        _ => None,
    }
}

fn network(ev: &Event) -> Option<&NetworkInfo> {
    match &ev.body {
        EventBody::Network(n) => Some(n),
        _ => None,
    }
}

fn file(ev: &Event) -> Option<&FileInfo> {
    match &ev.body {
        EventBody::File(f) => Some(f),
        _ => None,
    }
}

/// Which side of a connection a field asks for.
#[derive(Clone, Copy, PartialEq)]
enum Side {
    Server,
    Client,
    Remote,
    Local,
    Any,
}

fn side_addr(ev: &Event, side: Side) -> Option<(IpAddr, u16)> {
    let n = network(ev)?;
    let (a, remote) = address(n)?;
    let ok = match side {
        Side::Any => true,
        Side::Remote => remote,
        Side::Local => !remote,
        // connect/send: the remote end is the server; accept: the client;
        // bind: the local end is the server.
        Side::Server => n.op != NetOp::Accept,
        Side::Client => n.op == NetOp::Accept,
    };
    if ok {
        ip_port(a)
    } else {
        None
    }
}

fn ancestor_name<'a>(ev: &'a Event, n: usize) -> Option<Val<'a>> {
    if n == 0 {
        return s(&ev.process.comm);
    }
    // Falco's name: the ancestor's comm; recordings made before it was
    // kept fall back to its executable's name.
    let a = ev.ancestry.get(n - 1)?;
    match &a.comm {
        Some(c) => s(c),
        None => a
            .exe
            .as_deref()
            .map(|e| Val::Str(Cow::Borrowed(basename(e)))),
    }
}

fn ancestor_pid<'a>(ev: &'a Event, n: usize) -> Option<Val<'a>> {
    if n == 0 {
        return int(ev.process.pid);
    }
    ev.ancestry.get(n - 1).map(|a| Val::Int(a.pid.into()))
}

fn ancestor_exe<'a>(ev: &'a Event, n: usize) -> Option<Val<'a>> {
    if n == 0 {
        return ev.exe().map(|e| Val::Str(Cow::Borrowed(e)));
    }
    ev.ancestry
        .get(n - 1)?
        .exe
        .as_deref()
        .map(|e| Val::Str(Cow::Borrowed(e)))
}

fn ancestor_argv0<'a>(ev: &'a Event, n: usize) -> Option<Val<'a>> {
    if n == 0 {
        return argv(ev)?
            .first()
            .map(|a| Val::Str(Cow::Borrowed(a.as_str())));
    }
    let a = ev.ancestry.get(n - 1)?;
    a.argv
        .first()
        .map(|s| s.as_str())
        .or(a.exe.as_deref())
        .map(|s| Val::Str(Cow::Borrowed(s)))
}

/// Every ancestor (from the parent up) through `one`.
fn all_ancestors<'a>(
    ev: &'a Event,
    one: fn(&'a Event, usize) -> Option<Val<'a>>,
) -> Option<Val<'a>> {
    let mut v = Vec::with_capacity(ev.ancestry.len());
    v.extend((1..=ev.ancestry.len()).filter_map(|i| one(ev, i)));
    Some(Val::Many(v))
}

fn join(names: &[&str]) -> String {
    names.join("|")
}

/// A number as `evt.arg.*` gives it: text, as in Falco.
fn num<'a>(v: impl Into<i64>) -> Option<Val<'a>> {
    Some(Val::Str(Cow::Owned(v.into().to_string())))
}

fn evt_arg(ev: &Event, arg: ArgName) -> Option<Val<'_>> {
    use ArgName as A;
    match &ev.body {
        EventBody::File(f) => match arg {
            A::Flags => match &f.open {
                Some(o) => owned(join(&o.names)),
                None => owned(f.flags.to_string()),
            },
            A::Mode => f.mode.as_deref().and_then(s),
            A::Path | A::Name | A::Filename | A::OldPath => s(&f.path),
            A::LinkPath if f.op == FileOp::Symlink => s(&f.path),
            A::NewPath | A::LinkPath => f.new_path.as_deref().and_then(s),
            A::Target => f.target.as_deref().or(f.new_path.as_deref()).and_then(s),
            A::Uid => f.uid.and_then(num),
            A::Gid => f.gid.and_then(num),
            A::Res => num(f.result),
            A::Times => f.times.map(|t| Val::Str(Cow::Borrowed(t.name()))),
            _ => None,
        },
        EventBody::Control(c) => match arg {
            A::Flags => owned(if c.flag_names.is_empty() {
                c.flags.to_string()
            } else {
                join(&c.flag_names)
            }),
            A::Request => c.request.as_deref().and_then(s),
            A::Pid => c.target_pid.and_then(num),
            A::Name => c.name.as_deref().and_then(s),
            A::Path | A::Filename | A::Target => c.path.as_deref().and_then(s),
            A::FsType => c.fstype.as_deref().and_then(s),
            A::Cmd => c.bpf_cmd.as_deref().and_then(s),
            A::Uid | A::Euid | A::Gid => c
                .ids
                .as_ref()
                .and_then(|i| i.effective.or(i.fs))
                .and_then(num),
            A::Ruid => c.ids.as_ref().and_then(|i| i.real).and_then(num),
            A::Suid => c.ids.as_ref().and_then(|i| i.saved).and_then(num),
            A::OldUid => c.old.as_ref().and_then(|o| num(o.uid)),
            A::OldEuid => c.old.as_ref().and_then(|o| num(o.euid)),
            A::Res => num(c.result),
            _ => None,
        },
        EventBody::Network(n) => match arg {
            A::Fd => num(n.fd),
            A::Family => n.family.map(|f| Val::Str(f.name())),
            A::Domain => n
                .family
                .map(|f| Val::Str(Cow::Owned(format!("AF_{}", f.name().to_uppercase())))),
            A::Type => n.socket_type.map(|t| Val::Str(t.name())),
            A::Proto => n.protocol.and_then(|p| num(p as i64)),
            A::Addr => net_name(n),
            A::Backlog => n.backlog.and_then(num),
            A::OldFd => n.dup.as_ref().and_then(|d| num(d.oldfd)),
            A::NewFd => n.dup.as_ref().and_then(|d| num(d.newfd)),
            A::Flags => n
                .dup
                .as_ref()
                .map(|d| Val::Str(Cow::Owned(d.flags.to_string()))),
            A::Res => num(n.result),
            _ => None,
        },
        EventBody::Exec(x) => match arg {
            A::Filename | A::Path => s(&x.filename),
            _ => None,
        },
        EventBody::Fork(f) => match arg {
            A::Flags => f
                .clone_flags
                .as_ref()
                .map(|c| Val::Str(Cow::Owned(join(c)))),
            _ => None,
        },
        EventBody::Exit(x) => match arg {
            A::Status => x.exit_code.and_then(num),
            _ => None,
        },
    }
}

fn net_name(n: &NetworkInfo) -> Option<Val<'_>> {
    match n.address.as_ref()? {
        SockAddr::Inet { ip, port } => owned(format!("{ip}:{port}")),
        SockAddr::Inet6 { ip, port } => owned(format!("[{ip}]:{port}")),
        SockAddr::Unix { path } => s(path),
        SockAddr::Other { .. } => None,
    }
}

/// Falco's `fd.type` of a file or network event.
#[derive(Clone, Copy, PartialEq, Eq)]
enum FdType {
    File,
    Ipv4,
    Ipv6,
    Unix,
    Socket,
}

impl FdType {
    fn name(self) -> &'static str {
        match self {
            FdType::File => "file",
            FdType::Ipv4 => "ipv4",
            FdType::Ipv6 => "ipv6",
            FdType::Unix => "unix",
            FdType::Socket => "socket",
        }
    }

    fn typechar(self) -> &'static str {
        match self {
            FdType::File => "f",
            FdType::Ipv4 => "4",
            FdType::Ipv6 => "6",
            FdType::Unix => "u",
            FdType::Socket => "o",
        }
    }
}

fn fd_type(ev: &Event) -> Option<FdType> {
    match &ev.body {
        EventBody::File(_) => Some(FdType::File),
        EventBody::Network(n) => {
            let family = match (&n.address, n.family, &n.dup) {
                (Some(SockAddr::Inet { .. }), ..) => SockFamily::Inet,
                (Some(SockAddr::Inet6 { .. }), ..) => SockFamily::Inet6,
                (Some(SockAddr::Unix { .. }), ..) => SockFamily::Unix,
                (_, Some(f), _) => f,
                (_, _, Some(d)) => d.family,
                _ => return None,
            };
            Some(match family {
                SockFamily::Inet => FdType::Ipv4,
                SockFamily::Inet6 => FdType::Ipv6,
                SockFamily::Unix => FdType::Unix,
                _ => FdType::Socket,
            })
        }
        _ => None,
    }
}

fn first_container_id(ev: &Event) -> Option<&str> {
    ev.container
        .as_deref()
        .map(|c| c.id.get(..12).unwrap_or(&c.id))
}

/// Reads field `f` from `ev`; None when the event does not have it.
/// `container.mount.dest[KEY]` and `.source[KEY]`: `want` of the first
/// mount whose `by` matches KEY (a glob when it has `*`, `?` or `[`);
/// without KEY, `want` of every mount.
fn mount_lookup<'a>(
    d: Option<&'a crate::event::ProcessDetail>,
    f: &FieldRef,
    by: impl Fn(&ContainerMount) -> &String,
    want: impl Fn(&'a ContainerMount) -> &'a String,
) -> Option<Val<'a>> {
    let mounts = d.and_then(|d| d.mounts.as_deref())?;
    let Some(key) = f.key.as_deref() else {
        return Some(Val::Many(
            mounts
                .iter()
                .map(|m| Val::Str(Cow::Borrowed(want(m).as_str())))
                .collect(),
        ));
    };
    let found = if key.contains(['*', '?', '[']) {
        let glob = parse_glob(key);
        mounts.iter().find(|m| glob_match(&glob, by(m), false))
    } else {
        mounts.iter().find(|m| by(m) == key)
    };
    found.and_then(|m| s(want(m)))
}

pub fn extract<'a>(ev: &'a Event, f: &FieldRef) -> Option<Val<'a>> {
    let p = &ev.process;
    let d = detail(ev);
    let parent = ev.ancestry.first();
    match f.id {
        FieldId::EvtType => s(evt_type(ev)),
        FieldId::EvtDir => s("<"),
        FieldId::EvtTime => int(ev.time_unix_ns),
        FieldId::EvtNum => Some(Val::Int(ev.num as i64)),
        FieldId::EvtRes => {
            let r = result_of(ev)?;
            if r >= 0 {
                s("SUCCESS")
            } else {
                crate::event::Errno::of_result(r).map(|e| Val::Str(e.name()))
            }
        }
        FieldId::EvtRawRes => result_of(ev).and_then(int),
        FieldId::EvtFailed => result_of(ev).map(|r| Val::Bool(r < 0)),
        FieldId::EvtArg => f.arg.and_then(|a| evt_arg(ev, a)),
        FieldId::EvtIsOpenRead => Some(Val::Bool(
            file(ev)
                .and_then(|f| f.open.as_ref())
                .is_some_and(|o| o.read),
        )),
        FieldId::EvtIsOpenWrite => Some(Val::Bool(
            file(ev)
                .and_then(|f| f.open.as_ref())
                .is_some_and(|o| o.write),
        )),
        FieldId::EvtIsOpenCreate => Some(Val::Bool(
            file(ev)
                .and_then(|f| f.open.as_ref())
                .is_some_and(|o| o.create),
        )),
        FieldId::EvtHostname => s(crate::host::hostname()),
        FieldId::ProcPid => int(p.pid),
        FieldId::ProcPpid => int(p.ppid),
        FieldId::ProcVpid => p.vpid.and_then(int),
        FieldId::ProcName => s(&p.comm),
        // An exec with no arguments at all (argc 0, the pkexec exploit's
        // trigger): argv[0] is empty, as the kernel makes it and Falco
        // reports it, not the program path the fallback below gives.
        FieldId::ProcEnv => match &ev.body {
            EventBody::Exec(x) if !x.env.is_empty() => owned(x.env.join(" ")),
            _ => None,
        },
        FieldId::ProcExe if exec_without_arguments(ev) => s(""),
        FieldId::ProcExe => argv(ev)
            .and_then(|a| a.first())
            .map(|a| Val::Str(Cow::Borrowed(a.as_str())))
            .or_else(|| ev.exe().and_then(s)),
        FieldId::ProcExepath => ev.exe().and_then(s),
        FieldId::ProcCmdline => owned(cmdline(&p.comm, argv(ev).unwrap_or_default())),
        FieldId::ProcArgs => owned(
            argv(ev)
                .unwrap_or_default()
                .get(1..)
                .unwrap_or_default()
                .join(" "),
        ),
        FieldId::ProcCwd => d.and_then(|d| d.cwd.as_deref()).and_then(s),
        FieldId::ProcTty => p.tty.map(|t| Val::Int(t.into())),
        FieldId::ProcPname => ancestor_name(ev, 1),
        FieldId::ProcPcmdline => parent.map(|a| {
            let name = match &a.comm {
                Some(c) => c,
                None => a.exe.as_deref().map(basename).unwrap_or_default(),
            };
            Val::Str(Cow::Owned(cmdline(name, &a.argv)))
        }),
        FieldId::ProcPexe => parent
            .and_then(|a| a.argv.first().map(|s| s.as_str()).or(a.exe.as_deref()))
            .and_then(s),
        FieldId::ProcPexepath => parent.and_then(|a| a.exe.as_deref()).and_then(s),
        FieldId::ProcAname => match f.index {
            Some(n) => ancestor_name(ev, n),
            None => all_ancestors(ev, ancestor_name),
        },
        FieldId::ProcApid => match f.index {
            Some(n) => ancestor_pid(ev, n),
            None => all_ancestors(ev, ancestor_pid),
        },
        FieldId::ProcAexe => match f.index {
            Some(n) => ancestor_argv0(ev, n),
            None => all_ancestors(ev, ancestor_argv0),
        },
        FieldId::ProcAexepath => match f.index {
            Some(n) => ancestor_exe(ev, n),
            None => all_ancestors(ev, ancestor_exe),
        },
        FieldId::ProcSha256 => d.and_then(|d| d.exe_sha256.as_deref()).and_then(s),
        FieldId::ProcRenamedFrom => d.and_then(|d| d.renamed_from.as_deref()).and_then(s),
        FieldId::ProcIsMemfd | FieldId::ProcIsExeFromMemfd => Some(Val::Bool(
            d.is_some_and(|d| d.exe_memfd) || matches!(&ev.body, EventBody::Exec(x) if x.exe_memfd),
        )),
        FieldId::ProcIsDeleted => {
            Some(Val::Bool(p.exe_deleted || d.is_some_and(|d| d.exe_deleted)))
        }
        FieldId::ProcIsDrift | FieldId::ProcIsExeUpperLayer => {
            Some(Val::Bool(d.is_some_and(|d| d.exe_drift)))
        }
        FieldId::ProcDuration => p.start_boottime_ns.map(|start| {
            let started = BootClock::now().to_unix_ns(start);
            Val::Int((ev.time_unix_ns - started).max(0))
        }),
        FieldId::ThreadTid => int(p.tid),
        FieldId::ThreadCapEffective => p
            .caps
            .map(|c| cap_names::names(c.effective))
            .and_then(owned),
        FieldId::ThreadCapPermitted => p
            .caps
            .map(|c| cap_names::names(c.permitted))
            .and_then(owned),
        FieldId::ThreadCapInheritable => p
            .caps
            .map(|c| cap_names::names(c.inheritable))
            .and_then(owned),
        FieldId::ThreadCapBounding => p.caps.map(|c| cap_names::names(c.bounding)).and_then(owned),
        FieldId::ContainerMounts => {
            let m = d.and_then(|d| d.mounts.as_deref())?;
            owned(m.iter().map(|m| m.describe()).collect::<Vec<_>>().join(" "))
        }
        FieldId::ContainerMountDest => mount_lookup(d, f, |m| &m.source, |m| &m.dest),
        FieldId::ContainerMountSource => mount_lookup(d, f, |m| &m.dest, |m| &m.source),
        FieldId::ContainerPrivileged => match ev.container {
            None => Some(Val::Bool(false)),
            Some(_) => p.caps.map(|c| {
                let host = cap_names::host_bounding_set();
                Val::Bool(c.bounding & host == host)
            }),
        },
        FieldId::UserName => d.and_then(|d| d.user.as_deref()).and_then(s),
        FieldId::UserUid => int(p.uid),
        FieldId::UserEuid => p.euid.and_then(int),
        FieldId::UserLoginuid => p.loginuid.and_then(int),
        FieldId::UserLoginname => d.and_then(|d| d.login_user.as_deref()).and_then(s),
        FieldId::GroupName => d.and_then(|d| d.group.as_deref()).and_then(s),
        FieldId::GroupGid => int(p.gid),
        FieldId::FdName => match &ev.body {
            EventBody::File(f) => s(&f.path),
            EventBody::Network(n) => net_name(n),
            _ => None,
        },
        FieldId::FdNameraw => {
            file(ev).map(|f| Val::Str(Cow::Borrowed(f.path_raw.as_deref().unwrap_or(&f.path))))
        }
        FieldId::FdConnected => network(ev).and_then(|n| match n.op {
            NetOp::Connect => Some(Val::Bool(n.result == 0 || n.in_progress)),
            NetOp::Accept => Some(Val::Bool(n.result >= 0)),
            NetOp::Send => Some(Val::Bool(false)),
            _ => None,
        }),
        FieldId::FdNameChanged => network(ev).map(|n| Val::Bool(n.op == NetOp::Send)),
        FieldId::FdDirectory => file(ev).map(|f| Val::Str(Cow::Borrowed(dirname(&f.path)))),
        FieldId::FdFilename => file(ev).map(|f| Val::Str(Cow::Borrowed(basename(&f.path)))),
        FieldId::FdNameTruncated => file(ev).map(|f| Val::Bool(f.path_truncated)),
        FieldId::FdNum => match &ev.body {
            EventBody::Network(n) => Some(Val::Int(n.dup.as_ref().map_or(n.fd, |d| d.newfd))),
            // An open's result is its descriptor, negative when it failed:
            // Falco's open_read/open_write macros test `fd.num >= 0`.
            EventBody::File(f) if f.op == FileOp::Open => Some(Val::Int(f.result)),
            _ => None,
        },
        FieldId::FdTypechar => fd_type(ev).and_then(|t| s(t.typechar())),
        FieldId::FdType => fd_type(ev).and_then(|t| s(t.name())),
        FieldId::FdSip | FieldId::FdSnet => side_addr(ev, Side::Server).map(|(ip, _)| Val::Ip(ip)),
        FieldId::FdSport => side_addr(ev, Side::Server).map(|(_, p)| Val::Int(p.into())),
        FieldId::FdCip => side_addr(ev, Side::Client).map(|(ip, _)| Val::Ip(ip)),
        FieldId::FdCport => side_addr(ev, Side::Client).map(|(_, p)| Val::Int(p.into())),
        FieldId::FdRip | FieldId::FdRnet => side_addr(ev, Side::Remote).map(|(ip, _)| Val::Ip(ip)),
        FieldId::FdRport => side_addr(ev, Side::Remote).map(|(_, p)| Val::Int(p.into())),
        FieldId::FdLip => side_addr(ev, Side::Local).map(|(ip, _)| Val::Ip(ip)),
        FieldId::FdLport => side_addr(ev, Side::Local).map(|(_, p)| Val::Int(p.into())),
        FieldId::FdNet | FieldId::FdIp => side_addr(ev, Side::Any).map(|(ip, _)| Val::Ip(ip)),
        FieldId::FdL4proto => network(ev).and_then(|n| match n.socket_type? {
            SockType::Stream => s("tcp"),
            SockType::Dgram => s("udp"),
            SockType::Raw => s("raw"),
            _ => None,
        }),
        FieldId::FdSockfamily => fd_type(ev).and_then(|t| match t {
            FdType::Ipv4 | FdType::Ipv6 => s("ip"),
            FdType::Unix => s("unix"),
            _ => None,
        }),
        FieldId::ContainerId => first_container_id(ev).and_then(s),
        FieldId::ContainerName => match ev.container.as_deref() {
            Some(c) => match &c.k8s {
                Some(k) => s(&k.container),
                None => first_container_id(ev).and_then(s),
            },
            None => None,
        },
        FieldId::ContainerImage => ev.container.as_deref()?.image.as_deref().and_then(s),
        FieldId::ContainerImageRepository => ev
            .container
            .as_deref()?
            .image_parts()
            .and_then(|(repository, _)| s(repository)),
        FieldId::ContainerImageTag => ev
            .container
            .as_deref()?
            .image_parts()
            .map(|(_, tag)| tag)
            .filter(|t| !t.is_empty())
            .and_then(s),
        FieldId::ContainerType => ev.container.as_deref().and_then(|c| s(c.runtime.name())),
        FieldId::K8sNsName => ev
            .container
            .as_deref()?
            .k8s
            .as_ref()
            .map(|k| Val::Str(Cow::Borrowed(k.namespace.as_str()))),
        FieldId::K8sPodName => ev
            .container
            .as_deref()?
            .k8s
            .as_ref()
            .map(|k| Val::Str(Cow::Borrowed(k.pod.as_str()))),
        FieldId::DnsQuery => network(ev)?
            .dns
            .as_ref()
            .map(|q| Val::Str(Cow::Borrowed(q.name.as_str()))),
    }
}
