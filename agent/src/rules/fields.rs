//! The fields a condition or an output can name, with Falco's names and
//! meanings (how each is read from an event is in `extract.rs`).
//!
//! The table [`FIELDS`] is the single source: the compiler type-checks
//! conditions against it, templates render through it, `vigil-agent rules
//! fields` prints it, and a test keeps `docs/rules.md` in step with it.
use std::{borrow::Cow, net::IpAddr};

use crate::kernel::syscalls::Syscall;

/// A field's value type, which decides the operators it accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ty {
    Str,
    Int,
    Bool,
    /// An IP address; compared with addresses or CIDR networks.
    Ip,
}

impl Ty {
    pub fn name(self) -> &'static str {
        match self {
            Ty::Str => "string",
            Ty::Int => "number",
            Ty::Bool => "bool",
            Ty::Ip => "IP address",
        }
    }
}

/// What may follow a field's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArgKind {
    None,
    /// `proc.aname[N]`; without `[N]` the field holds every ancestor.
    Index,
    /// `evt.arg.NAME` or `evt.arg[NAME]`.
    Name,
    /// `container.mount.dest[/var/run/docker.sock]`: a path or a glob;
    /// without it, every mount's value.
    Key,
}

/// A field with its argument resolved, as the compiler hands it to
/// [`extract`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FieldRef {
    pub id: FieldId,
    pub index: Option<usize>,
    /// `evt.arg.NAME`: which argument, resolved when the rule compiles.
    pub arg: Option<ArgName>,
    /// `container.mount.dest[KEY]`: the path or glob, as written.
    pub key: Option<Box<str>>,
}

pub struct FieldSpec {
    pub name: &'static str,
    pub id: FieldId,
    pub ty: Ty,
    pub arg: ArgKind,
    pub desc: &'static str,
}

/// A value read from an event. `Many` holds a multi-valued field (every
/// ancestor); a comparison is true when any element satisfies it.
#[derive(Debug, Clone, PartialEq)]
pub enum Val<'a> {
    Str(Cow<'a, str>),
    Int(i64),
    Bool(bool),
    Ip(IpAddr),
    Many(Vec<Val<'a>>),
}

impl Val<'_> {
    /// The value as output text.
    pub fn render(&self, out: &mut String) {
        use std::fmt::Write as _;
        match self {
            Val::Str(s) => out.push_str(s),
            Val::Int(n) => {
                let _ = write!(out, "{n}");
            }
            Val::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Val::Ip(ip) => {
                let _ = write!(out, "{ip}");
            }
            Val::Many(items) => {
                for (i, v) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    v.render(out);
                }
            }
        }
    }
}

macro_rules! fields {
    ($( $id:ident $name:literal $ty:ident $arg:ident $desc:literal ;)*) => {
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum FieldId { $($id,)* }
        pub const FIELDS: &[FieldSpec] = &[
            $(FieldSpec { name: $name, id: FieldId::$id, ty: Ty::$ty, arg: ArgKind::$arg, desc: $desc },)*
        ];
    };
}

fields! {
    EvtType "evt.type" Str None "Syscall name: `execve`/`execveat` (exec), `clone`/`fork` (fork), `procexit` (exit), else the file, control or network syscall (`openat`, `connect`, `ptrace`, `dup2`, …).";
    EvtDir "evt.dir" Str None "`<`: every Vigil event is reported at syscall exit, with its result.";
    EvtTime "evt.time" Int None "Event time, ns since the Unix epoch.";
    EvtNum "evt.num" Int None "The agent's sequence number of the event, from 1.";
    EvtRes "evt.res" Str None "`SUCCESS`, or the error name (`ENOENT`, `EPERM`, …).";
    EvtRawRes "evt.rawres" Int None "The syscall's return value.";
    EvtFailed "evt.failed" Bool None "The syscall failed.";
    EvtArg "evt.arg" Str Name "A syscall argument by Falco's name: `flags`, `mode`, `request`, `pid`, `name`, `path`, `oldpath`, `newpath`, `target`, `linkpath`, `cmd`, `fstype`, `uid`, `gid`, `ruid`, `euid`, `suid`, `olduid`, `oldeuid` (ids before a setuid), `domain`, `fd`, `oldfd`, `newfd`, `family`, `type`, `proto`, `addr`, `backlog`, `filename`, `res`, `status` (an exit's status), `times` (Vigil's, on utimensat, utimes, futimesat and utime: `now` when the caller passed no times, `given` when it chose them, as `touch -d`/`-r`/`-t` and timestomping tools do).";
    EvtIsOpenRead "evt.is_open_read" Bool None "An open for reading.";
    EvtIsOpenWrite "evt.is_open_write" Bool None "An open for writing.";
    EvtIsOpenCreate "evt.is_open_create" Bool None "An open with `O_CREAT`/`O_TMPFILE`.";
    EvtHostname "evt.hostname" Str None "The host's name.";
    ProcPid "proc.pid" Int None "Process id.";
    ProcPpid "proc.ppid" Int None "Parent process id.";
    ProcVpid "proc.vpid" Int None "The process id in its own pid namespace (1 for a container's init); `proc.pid` on the host.";
    ProcName "proc.name" Str None "Process name (comm, 15 characters at most).";
    ProcExe "proc.exe" Str None "First command-line argument (`argv[0]`), as in Falco.";
    ProcExepath "proc.exepath" Str None "Full path of the executable, symlinks resolved.";
    ProcCmdline "proc.cmdline" Str None "`proc.name` followed by the arguments.";
    ProcEnv "proc.env" Str None "The environment of an exec event, `NAME=value` strings joined by spaces (test with `contains \"LD_PRELOAD=\"`). The probe copies it (4 KiB at most) only while a loaded rule tests this field (a `%proc.env` in an output alone does not switch it on), and only exec events have it; Vigil never writes it into events or activity, only into the output of a rule that names `%proc.env`.";
    ProcArgs "proc.args" Str None "The arguments (`argv[1..]`), joined by spaces.";
    ProcCwd "proc.cwd" Str None "Working directory.";
    ProcTty "proc.tty" Int None "Controlling terminal, encoded as `tty_nr` of /proc/PID/stat (34816 is /dev/pts/0); 0 when the process has none.";
    ProcPname "proc.pname" Str None "Parent's process name (its comm, as in Falco); its program file is proc.pexepath.";
    ProcPcmdline "proc.pcmdline" Str None "Parent's command line.";
    ProcPexe "proc.pexe" Str None "Parent's `argv[0]`.";
    ProcPexepath "proc.pexepath" Str None "Parent's executable path.";
    ProcAname "proc.aname" Str Index "Process name (comm, as in Falco) of ancestor N (0 = the process, 1 = parent, …); without [N], every ancestor. Program files: proc.aexepath.";
    ProcApid "proc.apid" Int Index "Pid of ancestor N; without [N], every ancestor.";
    ProcAexe "proc.aexe" Str Index "`argv[0]` of ancestor N; without [N], every ancestor.";
    ProcAexepath "proc.aexepath" Str Index "Executable path of ancestor N; without [N], every ancestor.";
    ProcSha256 "proc.sha256" Str None "SHA-256 of the executable (hex). Vigil's own.";
    ProcRenamedFrom "proc.renamed_from" Str None "The system binary (in /usr/bin, /usr/sbin, /bin, /sbin, /usr/local/bin or /usr/local/sbin) whose contents the executable has, when the program runs from outside those directories (and outside /usr/lib, /usr/libexec, /usr/share, where system binaries keep their own links) under a file name none of that binary's names has: `cp /bin/bash /tmp/kworker`. Absent otherwise, and for memfds. Compared by SHA-256, so only once `proc.sha256` is known. Vigil's own.";
    ProcIsMemfd "proc.is_memfd" Bool None "Executed from a memfd (fileless). Vigil's own.";
    ProcIsExeFromMemfd "proc.is_exe_from_memfd" Bool None "Falco's name for `proc.is_memfd`.";
    ProcIsDeleted "proc.is_deleted" Bool None "The executable was deleted after the process started. Vigil's own.";
    ProcIsDrift "proc.is_drift" Bool None "The executable was created or changed after its container started. Vigil's own.";
    ProcIsExeUpperLayer "proc.is_exe_upper_layer" Bool None "Falco's drift signal (executable in the overlay's upper layer); Vigil answers it with `proc.is_drift`, which is computed from change times and so also covers non-overlay filesystems.";
    ProcDuration "proc.duration" Int None "Nanoseconds since the process started.";
    ThreadTid "thread.tid" Int None "Thread id.";
    ThreadCapEffective "thread.cap_effective" Str None "The thread's effective capabilities at the event, by name, separated by spaces (`CAP_NET_RAW CAP_SYS_ADMIN`), as in Falco; test with `contains`.";
    ThreadCapPermitted "thread.cap_permitted" Str None "The thread's permitted capabilities, as `thread.cap_effective`.";
    ThreadCapInheritable "thread.cap_inheritable" Str None "The thread's inheritable capabilities, as `thread.cap_effective`.";
    ThreadCapBounding "thread.cap_bounding" Str None "The thread's capability bounding set (what it and its children can ever hold), as `thread.cap_effective`. Vigil's own.";
    UserName "user.name" Str None "User name of the real uid (the container's own /etc/passwd in a container).";
    UserUid "user.uid" Int None "Real user id.";
    UserEuid "user.euid" Int None "Effective user id.";
    UserLoginuid "user.loginuid" Int None "Audit login uid; -1 when never set.";
    UserLoginname "user.loginname" Str None "User name of the login uid.";
    GroupName "group.name" Str None "Group name of the real gid.";
    GroupGid "group.gid" Int None "Real group id.";
    FdName "fd.name" Str None "File events: the path (absolute). Network events: the remote `ip:port` (connect, accept, send) or local one (bind); a unix socket's path.";
    FdDirectory "fd.directory" Str None "Directory part of a file event's path.";
        FdFilename "fd.filename" Str None "File name part of a file event's path.";
    FdNameTruncated "fd.name_truncated" Bool None "File events: the path was longer than the probe keeps (1 KiB), so `fd.name` is only its start. A path padded past that (`/./././…/etc/shadow`) is how a process hides what it opens. Vigil's own.";
    FdNum "fd.num" Int None "The fd a network or dup event acts on (for dup2/dup3: the new fd); for an open, the fd it returned (negative when it failed).";
    FdTypechar "fd.typechar" Str None "`f` file, `4` IPv4 socket, `6` IPv6, `u` unix, `o` other socket.";
    FdType "fd.type" Str None "`file`, `ipv4`, `ipv6`, `unix`, or `socket`.";
    FdSip "fd.sip" Ip None "Server IP: the remote address of a connect, the local one of a bind.";
    FdSport "fd.sport" Int None "Server port.";
    FdCip "fd.cip" Ip None "Client IP: the peer of an accept.";
    FdCport "fd.cport" Int None "Client port.";
    FdRip "fd.rip" Ip None "Remote IP (connect, accept, send).";
    FdRport "fd.rport" Int None "Remote port.";
    FdLip "fd.lip" Ip None "Local IP (bind).";
    FdLport "fd.lport" Int None "Local port (bind).";
    FdIp "fd.ip" Ip None "The event's IP address, any side (Falco's `fd.ip`).";
    FdNet "fd.net" Ip None "The event's IP address, any side, for CIDR checks (`fd.net in (10.0.0.0/8)`).";
    FdSnet "fd.snet" Ip None "`fd.sip`, for CIDR checks.";
    FdRnet "fd.rnet" Ip None "`fd.rip`, for CIDR checks.";
    FdNameraw "fd.nameraw" Str None "The path of a file event as the program passed it (`../../etc/passwd`, `./x`), before Vigil resolves it against the working directory or dirfd and normalizes `.`, `..` and `//` (that is `fd.name`). Equals `fd.name` for an absolute, clean path, and for an fd-only call (fchdir, futimens).";
    FdConnected "fd.connected" Bool None "A connect that succeeded or is in progress, or an accept; false on a send to a new destination (the socket is unconnected).";
    FdNameChanged "fd.name_changed" Bool None "A send (`sendto`, `sendmsg`, `sendmmsg`) on an unconnected datagram inet socket to a destination other than the one it sent to last, as Falco's `outbound` macro asks: UDP traffic to a new peer. The kernel sends only these (and DNS queries); a socket sending to one peer in a loop gives one event. False on other network events.";
    FdL4proto "fd.l4proto" Str None "`tcp`, `udp`, `raw` (socket events, from the socket type).";
    FdSockfamily "fd.sockfamily" Str None "`ip` or `unix`.";
    ContainerId "container.id" Str None "12-digit container id, or `host`.";
    ContainerName "container.name" Str None "Kubernetes container name, else the 12-digit id, or `host`.";
    ContainerImage "container.image" Str None "The container's image as its runtime recorded it (`docker.io/library/nginx:1.25`): containerd (CRI), cri-o and docker; absent for podman and on the host.";
    ContainerImageRepository "container.image.repository" Str None "The image without tag or digest (`docker.io/library/nginx`).";
    ContainerImageTag "container.image.tag" Str None "The image's tag (`1.25`); absent when it has none.";
    ContainerMounts "container.mounts" Str None "Exec events in a container's mount namespace: every mount it holds, as Falco writes them, `source:dest:mode:rdwr:propagation` (`/run/docker.sock:/var/run/docker.sock::true:private`), space-separated. Read from the process's mount table when the namespace's first exec or a pid namespace's process 1 is seen; the source is the host path of a bind mount (found through init's mount table), else the file system's own source (`proc`, `overlay`, `tmpfs`). Falco's mode column is empty. Absent on other events, and for processes in the host's mount namespace or in a cgroup known to be the host's.";
    ContainerMountDest "container.mount.dest" Str Key "With `[SOURCE]` (a host path or a glob, `[/proc*]`): where the first mount of that source is mounted; absent when none is. Without: every mount's destination. Same events as `container.mounts`.";
    ContainerMountSource "container.mount.source" Str Key "With `[DEST]` (a path or a glob inside the container): the source (host path) of the mount there; absent when none. Without: every mount's source. Same events as `container.mounts`.";
    ContainerPrivileged "container.privileged" Bool None "The process is in a container and its capability bounding set holds every capability the host's init holds (on most hosts, every capability of the kernel): what `--privileged` (docker, podman, a privileged Kubernetes container) gives. Also true for `--cap-add ALL`; false for a privileged container's process that trimmed its own bounding set. False on the host.";
    ContainerType "container.type" Str None "`host`, `docker`, `containerd`, `cri-o`, `podman`, `systemd-nspawn`, `unknown`.";
    K8sNsName "k8s.ns.name" Str None "Kubernetes namespace.";
    K8sPodName "k8s.pod.name" Str None "Kubernetes pod.";
    DnsQuery "dns.query" Str None "The name asked in a DNS query. Vigil's own.";
}

/// Falco fields Vigil has no data for: rules naming them are reported as
/// unsupported, not as typos.
pub const UNSUPPORTED: &[&str] = &[
    "evt.args",
    "evt.rawtime",
    "evt.latency",
    "evt.info",
    "evt.buffer",
    "evt.category",
    "evt.source",
    "evt.is_io",
    "evt.is_io_read",
    "evt.is_io_write",
    "evt.is_open_exec",
    "evt.is_syslog",
    "evt.around",
    "evt.plugininfo",
    "evt.count",
    "proc.vpgid",
    "proc.vpgid.name",
    "proc.vpgid.exe",
    "proc.vpgid.exepath",
    "proc.is_vpgid_leader",
    "proc.sid",
    "proc.sname",
    "proc.sid.exe",
    "proc.sid.exepath",
    "proc.is_sid_leader",
    "proc.loginshellid",
    "proc.ppid.duration",
    "proc.pid.ts",
    "proc.ppid.ts",
    "proc.aenv",
    "proc.exeline",
    "proc.pvpid",
    "proc.is_exe_writable",
    "proc.is_container_healthcheck",
    "proc.is_container_liveness_probe",
    "proc.is_container_readiness_probe",
    "proc.exe_ino",
    "proc.exe_ino.ctime",
    "proc.exe_ino.mtime",
    "proc.exe_ino.ctime_duration_proc_start",
    "proc.exe_ino.ctime_duration_pidns_start",
    "proc.pidns_init_start_ts",
    "proc.stdin.type",
    "proc.stdout.type",
    "proc.stdin.name",
    "proc.stdout.name",
    "proc.fdopencount",
    "proc.acmdline",
    "proc.cmdnargs",
    "proc.cmdlenargs",
    "proc.nthreads",
    "proc.nchilds",
    "thread.exectime",
    "thread.totexectime",
    "thread.vtid",
    "thread.ismain",
    "user.homedir",
    "user.shell",
    "fd.types",
    "fd.port",
    "fd.lnet",
    "fd.cnet",
    "fd.sip.name",
    "fd.cip.name",
    "fd.rip.name",
    "fd.lip.name",
    "fd.is_server",
    "fd.uid",
    "fd.containername",
    "fd.containerdirectory",
    "fd.proto",
    "fd.lproto",
    "fd.rproto",
    "fd.dev",
    "fd.ino",
    "fd.cproto",
    "fd.sproto",
    "container.image.id",
    "container.image.digest",
    "container.mount",
    "container.mount.mode",
    "container.mount.rdwr",
    "container.mount.propagation",
    "container.mount.type",
    "container.start_ts",
    "container.duration",
    "container.ip",
    "container.cni.json",
    "container.healthcheck",
    "container.liveness_probe",
    "container.readiness_probe",
    "container.host_pid",
    "container.host_network",
    "container.host_ipc",
    "k8s.pod.id",
    "k8s.pod.uid",
    "k8s.pod.label",
    "k8s.pod.labels",
    "k8s.pod.ip",
    "k8s.pod.cni.json",
    "k8s.ns.id",
    "k8s.ns.label",
    "k8s.rc.name",
    "k8s.rs.name",
    "k8s.svc.name",
    "k8s.deployment.name",
    "fs.path.name",
    "fs.path.nameraw",
    "fs.path.source",
    "fs.path.target",
];

pub fn spec(id: FieldId) -> &'static FieldSpec {
    &FIELDS[id as usize]
}

/// The value type of a resolved field (`evt.arg.*` depends on the name).
///
/// `evt.arg.*` are text, as in Falco, numbers included: rules compare
/// `evt.arg.uid` with names and numbers alike.
pub fn ty_of(f: &FieldRef) -> Ty {
    spec(f.id).ty
}

/// Looks a field up by its written name (`proc.aname[2]`, `evt.arg.flags`,
/// `evt.arg[flags]`). `Err` carries the reason.
pub fn resolve(written: &str) -> Result<FieldRef, FieldProblem> {
    let (base, bracket) = match written.find('[') {
        Some(i) if written.ends_with(']') => {
            (&written[..i], Some(&written[i + 1..written.len() - 1]))
        }
        Some(_) => return Err(FieldProblem::Unknown(written.to_string(), None)),
        None => (written, None),
    };
    if let Some(name) = base.strip_prefix("evt.arg.") {
        if bracket.is_none() {
            return arg_ref(name, written);
        }
    }
    if base == "evt.arg" {
        if let Some(name) = bracket {
            return arg_ref(name.trim_matches(|c| c == '"' || c == '\''), written);
        }
    }
    let Some(f) = FIELDS.iter().find(|f| f.name == base) else {
        if UNSUPPORTED.contains(&base) {
            return Err(FieldProblem::Unsupported(base.to_string()));
        }
        return Err(FieldProblem::Unknown(written.to_string(), suggest(base)));
    };
    match (f.arg, bracket) {
        (ArgKind::None, None) => Ok(FieldRef {
            id: f.id,
            index: None,
            arg: None,
            key: None,
        }),
        (ArgKind::None, Some(_)) => Err(FieldProblem::BadArg(format!(
            "`{}` takes no argument",
            f.name
        ))),
        (ArgKind::Index, None) => Ok(FieldRef {
            id: f.id,
            index: None,
            arg: None,
            key: None,
        }),
        (ArgKind::Index, Some(n)) => n
            .parse::<usize>()
            .map(|n| FieldRef {
                id: f.id,
                index: Some(n),
                arg: None,
                key: None,
            })
            .map_err(|_| {
                FieldProblem::BadArg(format!("`{}[{n}]`: the index must be a number", f.name))
            }),
        (ArgKind::Key, key) => Ok(FieldRef {
            id: f.id,
            index: None,
            arg: None,
            key: key
                .map(|k| k.trim_matches(|c| c == '"' || c == '\''))
                .filter(|k| !k.is_empty())
                .map(Box::from),
        }),
        (ArgKind::Name, _) => Err(FieldProblem::BadArg(format!(
            "`{}` needs an argument name",
            f.name
        ))),
    }
}

macro_rules! arg_names {
    ($($variant:ident $name:literal,)*) => {
        /// The syscall arguments `evt.arg.NAME` can name, resolved when a
        /// rule compiles so no event compares argument names.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ArgName { $($variant,)* }

        impl ArgName {
            pub const ALL: &[ArgName] = &[$(ArgName::$variant,)*];

            pub fn name(self) -> &'static str {
                match self { $(ArgName::$variant => $name,)* }
            }

            pub fn from_name(s: &str) -> Option<ArgName> {
                match s { $($name => Some(ArgName::$variant),)* _ => None }
            }
        }
    };
}

arg_names! {
    Flags "flags", Mode "mode", Request "request", Pid "pid", Name "name", Path "path",
    OldPath "oldpath", NewPath "newpath", Target "target", LinkPath "linkpath", Cmd "cmd",
    FsType "fstype", Uid "uid", Gid "gid", Ruid "ruid", Euid "euid", Suid "suid", Fd "fd",
    OldFd "oldfd", NewFd "newfd", Family "family", Type "type", Proto "proto", Addr "addr",
    Backlog "backlog", Filename "filename", Dirfd "dirfd", Res "res", Domain "domain",
    OldUid "olduid", OldEuid "oldeuid", Status "status", Times "times",
}

fn arg_ref(name: &str, written: &str) -> Result<FieldRef, FieldProblem> {
    match ArgName::from_name(name) {
        Some(arg) => Ok(FieldRef {
            id: FieldId::EvtArg,
            index: None,
            arg: Some(arg),
            key: None,
        }),
        // Falco names arguments per syscall; those Vigil does not record
        // are unsupported rather than typos.
        None => {
            let known: Vec<&str> = ArgName::ALL.iter().map(|a| a.name()).collect();
            Err(FieldProblem::Unsupported(format!(
                "{written}` (Vigil records the arguments {})`",
                known.join(", ")
            )))
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldProblem {
    /// Not a field at all; with the nearest known name.
    Unknown(String, Option<&'static str>),
    /// A Falco field Vigil has no data for.
    Unsupported(String),
    BadArg(String),
}

impl std::fmt::Display for FieldProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FieldProblem::Unknown(name, Some(s)) => {
                write!(f, "unknown field `{name}`; did you mean `{s}`?")
            }
            FieldProblem::Unknown(name, None) => write!(f, "unknown field `{name}`"),
            FieldProblem::Unsupported(name) => write!(
                f,
                "unsupported field `{name}`: Vigil's events do not carry it"
            ),
            FieldProblem::BadArg(m) => f.write_str(m),
        }
    }
}

/// The known field nearest to `name`, if it is close enough to be a typo.
fn suggest(name: &str) -> Option<&'static str> {
    FIELDS
        .iter()
        .map(|f| (vigil_config::edit_distance(name, f.name), f.name))
        .filter(|(d, _)| *d <= 2)
        .min_by_key(|(d, _)| *d)
        .map(|(_, n)| n)
}

/// Every `evt.type` value an event can have, for checking rule conditions.
pub fn known_evt_type(name: &str) -> bool {
    matches!(
        name,
        "execve" | "execveat" | "clone" | "clone3" | "fork" | "vfork" | "procexit"
    ) || Syscall::by_name(name).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_indexed_by_id() {
        for (i, f) in FIELDS.iter().enumerate() {
            assert_eq!(f.id as usize, i, "{}", f.name);
            assert!(!UNSUPPORTED.contains(&f.name), "{} is both", f.name);
        }
    }

    #[test]
    fn every_field_is_documented() {
        let doc = include_str!("../../../docs/rules.md");
        for f in FIELDS {
            let name = match f.arg {
                ArgKind::None => format!("`{}`", f.name),
                ArgKind::Index => format!("`{}[N]`", f.name),
                ArgKind::Name => format!("`{}.NAME`", f.name),
                ArgKind::Key => format!("`{}[KEY]`", f.name),
            };
            assert!(doc.contains(&name), "docs/rules.md does not list {name}");
        }
    }

    #[test]
    fn resolves_arguments_and_reports_typos() {
        assert_eq!(resolve("proc.aname[2]").unwrap().index, Some(2));
        assert_eq!(resolve("evt.arg.flags").unwrap().arg, Some(ArgName::Flags));
        assert_eq!(resolve("evt.arg[flags]").unwrap().arg, Some(ArgName::Flags));
        assert_eq!(
            resolve("proc.nmae").unwrap_err(),
            FieldProblem::Unknown("proc.nmae".into(), Some("proc.name"))
        );
        assert_eq!(
            resolve("container.mount.mode").unwrap_err(),
            FieldProblem::Unsupported("container.mount.mode".into())
        );
        assert!(matches!(
            resolve("proc.name[1]"),
            Err(FieldProblem::BadArg(_))
        ));
        assert!(matches!(
            resolve("proc.aname[x]"),
            Err(FieldProblem::BadArg(_))
        ));
    }
}
