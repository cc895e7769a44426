//! `vigil-agent doctor`: checks, one by one, what the agent needs from
//! this host, and says for each failure what to do about it.
//!
//! A check fails only when the agent cannot run (or cannot do its main
//! job: see process starts and send alerts); what only narrows what it
//! sees (no container runtime, a slow clock source) is a warning.
use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use serde_json::json;
use vigil_proto::tls::{read_valid_cert, ClientTls, Role};

use crate::kernel::syscalls::TABLE;

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Status {
    Ok,
    /// The agent runs, but sees or reports less.
    Warn,
    /// The agent cannot run, or cannot do its job.
    Fail,
}

impl Status {
    pub fn name(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Warn => "warn",
            Status::Fail => "FAIL",
        }
    }
}

/// One check: what was looked at, what was found, and the fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub name: String,
    pub status: Status,
    pub detail: String,
    /// What to do, for a warning or a failure.
    pub fix: Option<String>,
}

fn ok(name: impl Into<String>, detail: impl Into<String>) -> Check {
    Check {
        name: name.into(),
        status: Status::Ok,
        detail: detail.into(),
        fix: None,
    }
}

fn bad(
    status: Status,
    name: impl Into<String>,
    detail: impl Into<String>,
    fix: impl Into<String>,
) -> Check {
    Check {
        name: name.into(),
        status,
        detail: detail.into(),
        fix: Some(fix.into()),
    }
}

/// What the checks look at: the same settings `run` would use.
#[derive(Debug, Clone)]
pub struct DoctorOptions {
    pub btf: PathBuf,
    pub container_runtime_root: PathBuf,
    pub k8s_log_dir: PathBuf,
    pub spool_dir: PathBuf,
    pub collector: Option<String>,
    pub tls: Option<ClientTls>,
}

/// Runs every check, in the order a person would fix them.
pub async fn examine(opts: &DoctorOptions) -> Vec<Check> {
    let mut checks = vec![
        kernel_version(),
        btf(&opts.btf),
        probe_embedded(),
        capabilities(),
        lockdown(),
        ring_buffer(),
    ];
    checks.extend(tracepoints());
    checks.push(cgroup_v2());
    checks.extend(runtimes(&opts.container_runtime_root, &opts.k8s_log_dir));
    checks.push(clock_source());
    checks.push(spool(&opts.spool_dir));
    checks.extend(collector(opts).await);
    checks
}

/// True when no check failed: the agent can run.
pub fn can_run(checks: &[Check]) -> bool {
    checks.iter().all(|c| c.status != Status::Fail)
}

/// One line per check: `ok    name: detail`, and `-> fix` after a
/// warning or failure.
pub fn render_text(checks: &[Check]) -> String {
    let mut out = String::new();
    for c in checks {
        let _ = write!(out, "{:<5} {}: {}", c.status.name(), c.name, c.detail);
        if let Some(fix) = &c.fix {
            let _ = write!(out, " -> {fix}");
        }
        out.push('\n');
    }
    let fails = checks.iter().filter(|c| c.status == Status::Fail).count();
    let warns = checks.iter().filter(|c| c.status == Status::Warn).count();
    let _ = writeln!(
        out,
        "{}: {} checks, {fails} failed, {warns} warnings",
        if fails == 0 {
            "the agent can run here"
        } else {
            "the agent cannot run here"
        },
        checks.len()
    );
    out
}

/// `{"can_run": bool, "checks": [{"name", "status", "detail", "fix"}]}`.
pub fn render_json(checks: &[Check]) -> serde_json::Value {
    json!({
        "can_run": can_run(checks),
        "checks": checks.iter().map(|c| json!({
            "name": c.name,
            "status": match c.status { Status::Ok => "ok", Status::Warn => "warn", Status::Fail => "fail" },
            "detail": c.detail,
            "fix": c.fix,
        })).collect::<Vec<_>>(),
    })
}

fn read_trimmed(path: impl AsRef<Path>) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
}

/// Ring buffers and CAP_BPF came in 5.8.
fn kernel_version() -> Check {
    const NAME: &str = "kernel";
    let Some(release) = read_trimmed("/proc/sys/kernel/osrelease") else {
        return bad(
            Status::Fail,
            NAME,
            "cannot read /proc/sys/kernel/osrelease",
            "mount /proc",
        );
    };
    let mut parts = release
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|p| p.parse::<u32>().ok());
    let version = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    if version >= (5, 8) {
        ok(NAME, format!("Linux {release} (5.8 or newer)"))
    } else {
        bad(
            Status::Fail,
            NAME,
            format!("Linux {release}: older than 5.8, which brought BPF ring buffers and CAP_BPF"),
            "run a 5.8 or newer kernel (5.15+ recommended)",
        )
    }
}

/// The probe's structure offsets come from the running kernel's BTF.
fn btf(path: &Path) -> Check {
    const NAME: &str = "BTF";
    match std::fs::File::open(path) {
        Ok(mut f) => {
            use std::io::Read as _;
            let mut magic = [0u8; 2];
            if f.read_exact(&mut magic).is_ok() && u16::from_le_bytes(magic) == 0xeb9f {
                ok(NAME, format!("{} is readable kernel BTF", path.display()))
            } else {
                bad(Status::Fail, NAME, format!("{} is not BTF", path.display()), "give the kernel's BTF file with --btf")
            }
        }
        Err(e) => bad(
            Status::Fail,
            NAME,
            format!("{}: {e}", path.display()),
            "use a kernel built with CONFIG_DEBUG_INFO_BTF=y, or give a BTF file for this kernel with --btf (in a container, mount /sys/kernel/btf read-only)",
        ),
    }
}

fn probe_embedded() -> Check {
    const NAME: &str = "eBPF probe";
    if crate::probe::embedded() {
        ok(NAME, "embedded in this binary")
    } else {
        bad(
            Status::Fail,
            NAME,
            "this binary was built with AYA_BUILD_SKIP=1 and has no probe",
            "rebuild without AYA_BUILD_SKIP (cargo build --release)",
        )
    }
}

const CAP_DAC_READ_SEARCH: u32 = 2;
const CAP_SYS_PTRACE: u32 = 19;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// The effective capabilities of this process (`CapEff`).
fn effective_caps() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
    u64::from_str_radix(hex.trim(), 16).ok()
}

fn capabilities() -> Check {
    const NAME: &str = "capabilities";
    let Some(caps) = effective_caps() else {
        return bad(
            Status::Fail,
            NAME,
            "cannot read CapEff from /proc/self/status",
            "mount /proc",
        );
    };
    let has = |c: u32| caps & (1 << c) != 0;
    let admin = has(CAP_SYS_ADMIN);
    let mut missing = Vec::new();
    if !(has(CAP_BPF) || admin) {
        missing.push("CAP_BPF (load the probe)");
    }
    if !(has(CAP_PERFMON) || admin) {
        missing.push("CAP_PERFMON (attach tracepoints, read kernel memory)");
    }
    if !missing.is_empty() {
        return bad(
            Status::Fail,
            NAME,
            format!("missing {}", missing.join(", ")),
            "run as root, or grant CAP_BPF CAP_PERFMON CAP_SYS_PTRACE CAP_DAC_READ_SEARCH (the systemd unit's AmbientCapabilities)",
        );
    }
    let mut narrower = Vec::new();
    if !has(CAP_SYS_PTRACE) {
        narrower.push("CAP_SYS_PTRACE (other users' executables, namespaces and the host's name from a container)");
    }
    if !has(CAP_DAC_READ_SEARCH) {
        narrower.push("CAP_DAC_READ_SEARCH (hash executables that root cannot read, read container runtime state)");
    }
    if narrower.is_empty() {
        ok(
            NAME,
            format!(
                "CAP_BPF, CAP_PERFMON, CAP_SYS_PTRACE, CAP_DAC_READ_SEARCH{}",
                if admin { ", CAP_SYS_ADMIN" } else { "" }
            ),
        )
    } else {
        bad(
            Status::Warn,
            NAME,
            format!("can load the probe; missing {}", narrower.join(", ")),
            "grant the missing capabilities for complete enrichment",
        )
    }
}

/// Lockdown's confidentiality mode forbids reading kernel memory from
/// BPF, which the probe does for every path and process.
fn lockdown() -> Check {
    const NAME: &str = "lockdown";
    let Some(text) = read_trimmed("/sys/kernel/security/lockdown") else {
        return ok(NAME, "no lockdown LSM (or securityfs not mounted)");
    };
    let mode = text
        .split_whitespace()
        .find(|w| w.starts_with('['))
        .map(|w| w.trim_matches(['[', ']']).to_string())
        .unwrap_or_else(|| text.clone());
    match mode.as_str() {
        "none" => ok(NAME, "none"),
        "integrity" => ok(NAME, "integrity (BPF kernel reads still allowed)"),
        _ => bad(
            Status::Fail,
            NAME,
            format!("{mode}: BPF programs may not read kernel memory"),
            "boot with lockdown=integrity or none (or turn Secure Boot's lockdown off)",
        ),
    }
}

/// Creates (and closes) a one-page BPF ring buffer: the kernel has them,
/// and this process may make BPF maps.
fn ring_buffer() -> Check {
    const NAME: &str = "ring buffer";
    const BPF_MAP_CREATE: libc::c_long = 0;
    const BPF_MAP_TYPE_RINGBUF: u32 = 27;
    // bpf_attr for BPF_MAP_CREATE: map_type, key_size, value_size,
    // max_entries, then fields left zero.
    let mut attr = [0u32; 32];
    attr[0] = BPF_MAP_TYPE_RINGBUF;
    attr[3] = 4096;
    // SAFETY: a valid, zero-padded bpf_attr of the size passed.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_MAP_CREATE,
            attr.as_ptr(),
            std::mem::size_of_val(&attr),
        )
    };
    if fd >= 0 {
        // SAFETY: the fd was just returned to us.
        unsafe { libc::close(fd as i32) };
        return ok(NAME, "BPF ring buffer maps can be created");
    }
    let e = std::io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EPERM) => bad(
            Status::Fail,
            NAME,
            format!("bpf(): {e}"),
            "run as root or with CAP_BPF (check kernel.unprivileged_bpf_disabled and seccomp)",
        ),
        _ => bad(
            Status::Fail,
            NAME,
            format!("bpf(): {e}"),
            "a kernel with BPF ring buffers (5.8+, CONFIG_BPF_SYSCALL=y)",
        ),
    }
}

fn tracefs_root() -> Option<PathBuf> {
    ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.join("events").is_dir())
}

/// tracefs, the scheduler tracepoints every process event comes from, and
/// each followed syscall's enter and exit tracepoints.
fn tracepoints() -> Vec<Check> {
    let Some(root) = tracefs_root() else {
        let mountable = effective_caps().is_some_and(|c| c & (1 << CAP_SYS_ADMIN) != 0);
        return vec![bad(
            if mountable {
                Status::Warn
            } else {
                Status::Fail
            },
            "tracefs",
            "not mounted on /sys/kernel/tracing or /sys/kernel/debug/tracing",
            if mountable {
                "the agent mounts it at start; or mount -t tracefs nodev /sys/kernel/tracing"
            } else {
                "mount -t tracefs nodev /sys/kernel/tracing (in a container, mount the host's read-only)"
            },
        )];
    };
    let mut out = vec![ok("tracefs", format!("mounted on {}", root.display()))];
    let events = root.join("events");
    for tp in [
        "sched_process_exec",
        "sched_process_fork",
        "sched_process_exit",
    ] {
        let name = format!("tracepoint sched:{tp}");
        out.push(if events.join("sched").join(tp).join("format").exists() {
            ok(name, "present")
        } else {
            bad(
                Status::Fail,
                name,
                "absent: no process events",
                "a kernel with CONFIG_TRACEPOINTS and scheduler tracepoints",
            )
        });
    }
    let mut seen = std::collections::BTreeSet::new();
    for def in TABLE {
        if !seen.insert(def.tracepoint) {
            continue;
        }
        let name = format!("tracepoint syscalls:sys_enter_{}", def.tracepoint);
        let dir = events.join("syscalls");
        let present = ["sys_enter_", "sys_exit_"].iter().all(|p| {
            dir.join(format!("{p}{}", def.tracepoint))
                .join("format")
                .exists()
        });
        out.push(if present {
            ok(name, format!("{} followed", def.name))
        } else if def.raw_fallback {
            bad(Status::Warn, name, format!("absent: {} is not watched", def.name), "run with --raw-syscall-hooks to follow it through sys_enter/sys_exit (costs every syscall)")
        } else if !dir.is_dir() {
            bad(Status::Fail, name, "no syscalls:* tracepoints at all", "a kernel built with CONFIG_FTRACE_SYSCALLS=y")
        } else {
            bad(Status::Warn, name, format!("absent: {} is not watched on this kernel", def.name), "nothing to do unless a rule needs it")
        });
    }
    out
}

/// Container and cgroup fields need cgroup v2.
fn cgroup_v2() -> Check {
    const NAME: &str = "cgroup v2";
    const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;
    let is_cgroup2 = |p: &str| {
        let Ok(c) = std::ffi::CString::new(p) else {
            return false;
        };
        // SAFETY: a valid path and an out-struct the call fills.
        let mut st: libc::statfs = unsafe { std::mem::zeroed() };
        let rc = unsafe { libc::statfs(c.as_ptr(), &mut st) };
        rc == 0 && st.f_type as i64 == CGROUP2_SUPER_MAGIC
    };
    if is_cgroup2("/sys/fs/cgroup") {
        ok(NAME, "/sys/fs/cgroup is cgroup2 (unified)")
    } else if is_cgroup2("/sys/fs/cgroup/unified") {
        bad(Status::Warn, NAME, "hybrid hierarchy (cgroup2 on /sys/fs/cgroup/unified)", "boot with systemd.unified_cgroup_hierarchy=1 so every process has a cgroup v2 path for container fields")
    } else {
        bad(
            Status::Warn,
            NAME,
            "no cgroup2 mount: container and cgroup fields are empty",
            "mount cgroup2 on /sys/fs/cgroup (systemd.unified_cgroup_hierarchy=1)",
        )
    }
}

/// Where container images and pod names come from: informational, a host
/// without containers needs none of them.
fn runtimes(root: &Path, k8s_log_dir: &Path) -> Vec<Check> {
    const DIRS: &[(&str, &str)] = &[
        ("containerd", "run/containerd/io.containerd.runtime.v2.task"),
        ("cri-o", "run/containers/storage"),
        ("docker", "var/lib/docker/containers"),
    ];
    let found: Vec<String> = DIRS
        .iter()
        .filter(|(_, d)| root.join(d).is_dir())
        .map(|(n, d)| format!("{n} ({})", root.join(d).display()))
        .collect();
    let mut out = vec![if found.is_empty() {
        ok(
            "container runtimes",
            format!("none found under {} (no container images to report; in a container, mount the host's state directories under --container-runtime-root)", root.display()),
        )
    } else {
        let unreadable: Vec<&String> = found
            .iter()
            .filter(|f| {
                let dir = f
                    .split_once(" (")
                    .map(|(_, d)| d.trim_end_matches(')'))
                    .unwrap_or_default();
                std::fs::read_dir(dir).is_err()
            })
            .collect();
        if unreadable.is_empty() {
            ok("container runtimes", found.join(", "))
        } else {
            bad(
                Status::Warn,
                "container runtimes",
                format!("cannot read {unreadable:?}"),
                "grant CAP_DAC_READ_SEARCH, or mount the directories readable",
            )
        }
    }];
    out.push(if k8s_log_dir.is_dir() {
        ok(
            "kubernetes pod names",
            format!("{} present", k8s_log_dir.display()),
        )
    } else {
        ok(
            "kubernetes pod names",
            format!(
                "{} absent (not a Kubernetes node, or not mounted)",
                k8s_log_dir.display()
            ),
        )
    });
    out
}

/// Every event is stamped with the kernel's clock; a clock source that
/// traps (hpet, acpi_pm) makes each stamp cost microseconds.
fn clock_source() -> Check {
    const NAME: &str = "clock source";
    match read_trimmed("/sys/devices/system/clocksource/clocksource0/current_clocksource") {
        Some(c)
            if matches!(
                c.as_str(),
                "tsc" | "kvm-clock" | "arch_sys_counter" | "hyperv_clocksource_tsc_page" | "xen"
            ) =>
        {
            ok(NAME, c)
        }
        Some(c) => bad(
            Status::Warn,
            NAME,
            format!("{c}: slow to read, every event costs more"),
            "prefer tsc (clocksource=tsc tsc=reliable where the hardware allows)",
        ),
        None => ok(NAME, "unknown (no /sys/devices/system/clocksource)"),
    }
}

/// The spool must be writable (the agent creates what is missing of its
/// path), or alerts cannot survive an outage.
fn spool(dir: &Path) -> Check {
    const NAME: &str = "spool";
    let Some(existing) = dir.ancestors().find(|p| p.exists()) else {
        return bad(
            Status::Fail,
            NAME,
            format!("{}: no part of it exists", dir.display()),
            "pass an absolute --spool-dir",
        );
    };
    let test = existing.join(format!(".vigil-doctor-{}", std::process::id()));
    let what = if existing == dir {
        format!("{} is writable", dir.display())
    } else {
        format!(
            "{} will be created in {}",
            dir.display(),
            existing.display()
        )
    };
    match std::fs::create_dir(&test) {
        Ok(()) => {
            let _ = std::fs::remove_dir(&test);
            ok(NAME, what)
        }
        Err(e) => bad(
            Status::Fail,
            NAME,
            format!("cannot write in {}: {e}", existing.display()),
            "make it writable for the agent (the unit's StateDirectory=vigil/spool does), or pass --spool-dir",
        ),
    }
}

/// The agent's certificate, and a real connection to the collector: TCP,
/// the TLS handshake with this certificate, and HTTP/2.
async fn collector(opts: &DoctorOptions) -> Vec<Check> {
    let Some(url) = &opts.collector else {
        return vec![ok(
            "collector",
            "none configured: alerts go to stdout as JSON lines",
        )];
    };
    let mut out = Vec::new();
    if let Some(tls) = &opts.tls {
        out.push(certificate(&tls.cert));
    }
    let endpoint = match crate::forward::parse_endpoint(url, opts.tls.as_ref()) {
        Ok(e) => e.connect_timeout(Duration::from_secs(5)),
        Err(e) => {
            out.push(bad(
                Status::Fail,
                "collector",
                format!("{url}: {e}"),
                "fix --collector and the TLS files",
            ));
            return out;
        }
    };
    out.push(match tokio::time::timeout(Duration::from_secs(10), endpoint.connect()).await {
        Ok(Ok(_)) => ok("collector", format!("{url} reachable{}", if opts.tls.is_some() { ", mutual TLS handshake accepted" } else { "" })),
        Ok(Err(e)) => {
            let chain = vigil_proto::tls::error_chain(&e);
            let why = vigil_proto::tls::explain_tls_failure(&chain).map(str::to_string).unwrap_or(chain);
            bad(Status::Fail, "collector", format!("{url}: {why}"), "check the address, firewalls, that the collector runs, and that its CA signed this agent's certificate (alerts wait in the spool meanwhile)")
        }
        Err(_) => bad(Status::Fail, "collector", format!("{url}: no answer within 10 s"), "check the address and firewalls"),
    });
    out
}

fn certificate(path: &Path) -> Check {
    const NAME: &str = "agent certificate";
    match read_valid_cert(path) {
        Ok(c) if c.role != Some(Role::Agent) => bad(
            Status::Fail,
            NAME,
            format!(
                "{}: `{}` is not an agent certificate",
                path.display(),
                c.common_name
            ),
            "issue one with `vigil-collector pki issue DIR --agent HOST`",
        ),
        Ok(c) => {
            let left = c
                .not_after
                .duration_since(SystemTime::now())
                .unwrap_or_default();
            let days = left.as_secs() / 86_400;
            let host = c.names.first().cloned().unwrap_or(c.common_name);
            if days < 14 {
                bad(Status::Warn, NAME, format!("{} for host {host} expires in {days} days", path.display()), "issue a new one (`vigil-collector pki issue DIR --agent HOST --force`); the agent rereads it")
            } else {
                ok(
                    NAME,
                    format!(
                        "{} for host {host}, valid for {days} more days",
                        path.display()
                    ),
                )
            }
        }
        Err(e) => bad(
            Status::Fail,
            NAME,
            e.to_string(),
            "issue one with `vigil-collector pki issue DIR --agent HOST`",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_has_one_line_per_check_and_a_verdict() {
        let checks = vec![
            ok("kernel", "Linux 6.18"),
            bad(Status::Fail, "BTF", "/x: missing", "give --btf"),
        ];
        let text = render_text(&checks);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "ok    kernel: Linux 6.18");
        assert_eq!(lines[1], "FAIL  BTF: /x: missing -> give --btf");
        assert_eq!(
            lines[2],
            "the agent cannot run here: 2 checks, 1 failed, 0 warnings"
        );
        assert!(!can_run(&checks));
        let j = render_json(&checks);
        assert_eq!(j["can_run"], false);
        assert_eq!(j["checks"][1]["status"], "fail");
        assert_eq!(j["checks"][1]["fix"], "give --btf");
    }

    #[test]
    fn a_missing_btf_file_fails_and_says_what_to_do() {
        let c = btf(Path::new("/nonexistent/vmlinux"));
        assert_eq!(c.status, Status::Fail);
        assert!(c.fix.unwrap().contains("--btf"));
    }

    #[test]
    fn an_unwritable_spool_fails() {
        let c = spool(Path::new("/proc/vigil-spool"));
        assert_eq!(c.status, Status::Fail, "{c:?}");
    }
}
