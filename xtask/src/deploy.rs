//! Deployment artefacts and their end-to-end checks:
//!
//! - `cargo xtask package`: the Debian packages `vigil-agent` and
//!   `vigil-collector` (cargo-deb, `[package.metadata.deb]` of each crate);
//! - `cargo xtask image`: a container image per binary, built by podman on
//!   `scratch` from a root staged here (the binary and the libraries it
//!   links), so nothing is pulled;
//! - `cargo xtask deploy-check` (and the end of `cargo xtask test`): the
//!   Kubernetes manifests rendered and validated against the schemas; both
//!   packages installed, their units verified, the binaries started as the
//!   units start them, an alert seen end to end, and the packages purged
//!   without a trace; the agent image run with the DaemonSet's privileges,
//!   raising an alert for a program run on the host, under the host's name.
//!
//! Steps that need root (dpkg, podman, the agent) go through
//! [`crate::as_root`]; everything is built as the user.
use std::{
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context as _};

use crate::{as_root, cargo, quiet_step, step};

const CARGO_DEB_VERSION: &str = "3.8.0";
const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The rule every check's marker program trips.
const TMP_RULE: &str = "Execution from a temporary directory";

fn sudo_cmd(program: &str) -> Command {
    as_root(Path::new(program), false)
}

fn ok(cmd: &mut Command) -> bool {
    cmd.stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn have(program: &str) -> bool {
    ok(Command::new("sh").args(["-c", &format!("command -v {program}")]))
}

/// Installs what the deployment checks need and this host lacks: Debian's
/// podman and runc, PyPI's kubernetes-validate, crates.io's cargo-deb.
fn tools() -> anyhow::Result<()> {
    let missing: Vec<&str> = [
        ("podman", "podman"),
        ("runc", "runc"),
        ("setpriv", "util-linux"),
    ]
    .iter()
    .filter(|(bin, _)| !have(bin))
    .map(|(_, pkg)| *pkg)
    .collect();
    if !missing.is_empty() {
        step(
            "apt-get update (for the deployment checks' tools)",
            sudo_cmd("/usr/bin/apt-get").args(["update", "-qq"]),
        )?;
        step(
            &format!("apt-get install {}", missing.join(" ")),
            sudo_cmd("/usr/bin/apt-get")
                .args(["install", "-y", "-qq"])
                .args(&missing)
                .env("DEBIAN_FRONTEND", "noninteractive"),
        )?;
    }
    // Run as a module, so a fresh pip install needs no PATH or shim update.
    if !ok(Command::new("python3").args(["-c", "import kubernetes_validate"])) {
        step(
            "pip install kubernetes-validate",
            Command::new("python3").args(["-m", "pip", "install", "-q", "kubernetes-validate"]),
        )?;
    }
    ensure!(
        have("kubectl"),
        "kubectl is needed to render the Kubernetes manifests (kubectl kustomize)"
    );
    Ok(())
}

fn ensure_cargo_deb() -> anyhow::Result<()> {
    let installed = Command::new("cargo-deb")
        .arg("--version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    if !installed.contains(CARGO_DEB_VERSION) {
        step(
            &format!("installing cargo-deb {CARGO_DEB_VERSION}"),
            cargo().args([
                "install",
                &format!("cargo-deb@{CARGO_DEB_VERSION}"),
                "--locked",
            ]),
        )?;
    }
    Ok(())
}

fn build_release() -> anyhow::Result<()> {
    step(
        "cargo build --release --bins",
        cargo().args(["build", "--release", "--bins"]),
    )
}

/// Builds both packages; returns their paths.
pub(crate) fn package() -> anyhow::Result<Vec<PathBuf>> {
    crate::setup()?;
    ensure_cargo_deb()?;
    build_release()?;
    let mut debs = Vec::new();
    for pkg in ["vigil-agent", "vigil-collector"] {
        let out = cargo()
            .args(["deb", "-p", pkg, "--no-build", "--quiet"])
            .stderr(Stdio::inherit())
            .output()
            .with_context(|| format!("cannot run cargo deb -p {pkg}"))?;
        ensure!(out.status.success(), "cargo deb -p {pkg} failed");
        let path = String::from_utf8_lossy(&out.stdout)
            .lines()
            .rfind(|l| l.trim_end().ends_with(".deb"))
            .map(|l| PathBuf::from(l.trim()))
            .with_context(|| format!("cargo deb -p {pkg} printed no package path"))?;
        eprintln!("==> {}", path.display());
        debs.push(path);
    }
    Ok(debs)
}

/// The container runtime flags this host needs: runc where crun cannot
/// run (hybrid cgroup hierarchies), and resource limits no higher than
/// ours (podman's defaults raise them, which needs CAP_SYS_RESOURCE).
fn podman() -> Command {
    let mut cmd = sudo_cmd("/usr/bin/podman");
    if have("runc") {
        cmd.args(["--runtime", "runc"]);
    }
    cmd
}

/// `--ulimit` flags at or below this process's own limits: podman's
/// defaults (and even equal values, set from inside the runtime) can be
/// refused where root lacks CAP_SYS_RESOURCE; lowering never is.
fn ulimit_args() -> Vec<String> {
    let limit = |res, cap: u64| {
        let mut r = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit fills the struct.
        unsafe { libc::getrlimit(res, &mut r) };
        let v = r.rlim_cur.min(cap) / 2;
        format!("{v}:{v}")
    };
    vec![
        format!("--ulimit=nofile={}", limit(libc::RLIMIT_NOFILE, 1 << 16)),
        format!("--ulimit=nproc={}", limit(libc::RLIMIT_NPROC, 1 << 13)),
    ]
}

/// The shared libraries `exe` links, and its interpreter, as ldd says.
fn linked_libraries(exe: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let out = Command::new("ldd")
        .arg(exe)
        .output()
        .context("cannot run ldd")?;
    ensure!(out.status.success(), "ldd {} failed", exe.display());
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let l = l.trim();
            let path = match l.split_once("=>") {
                Some((_, rest)) => rest.split_whitespace().next()?,
                None => l.split_whitespace().next()?,
            };
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect())
}

/// Builds `localhost/vigil-agent:VERSION` and `localhost/vigil-collector:VERSION`.
pub(crate) fn image() -> anyhow::Result<Vec<String>> {
    crate::setup()?;
    tools()?;
    build_release()?;
    let mut tags = Vec::new();
    for (bin, file) in [("vigil-agent", "agent"), ("vigil-collector", "collector")] {
        let stage = PathBuf::from(format!("target/image/{bin}"));
        let _ = std::fs::remove_dir_all(&stage);
        let root = stage.join("rootfs");
        let exe = PathBuf::from("target/release").join(bin);
        let mut files = vec![(exe.clone(), root.join("usr/bin").join(bin))];
        for lib in linked_libraries(&exe)? {
            let canonical = std::fs::canonicalize(&lib)?;
            files.push((canonical, root.join(lib.strip_prefix("/")?)));
        }
        for (src, dst) in &files {
            std::fs::create_dir_all(dst.parent().unwrap())?;
            std::fs::copy(src, dst).with_context(|| format!("cannot stage {}", src.display()))?;
        }
        for dir in ["tmp", "etc/vigil", "var/lib/vigil"] {
            std::fs::create_dir_all(root.join(dir))?;
        }
        // Names for the user ids the images run as.
        std::fs::write(
            root.join("etc/passwd"),
            "root:x:0:0:root:/:/nonexistent\nvigil:x:65532:65532:Vigil collector:/var/lib/vigil:/nonexistent\n",
        )?;
        std::fs::write(root.join("etc/group"), "root:x:0:\nvigil:x:65532:\n")?;
        let tag = format!("localhost/{bin}:{VERSION}");
        step(
            &format!("podman build {tag} (from scratch)"),
            podman()
                .args(["build", "--quiet", "--pull=never", "-t", &tag, "-f"])
                .arg(std::fs::canonicalize(format!(
                    "deploy/container/{file}.Containerfile"
                ))?)
                .arg(std::fs::canonicalize(&stage)?),
        )?;
        tags.push(tag);
    }
    Ok(tags)
}

/// Every deployment check; what `cargo xtask test` ends with.
pub(crate) fn check() -> anyhow::Result<()> {
    tools()?;
    kubernetes()?;
    let debs = package()?;
    packages(&debs)?;
    run_command()?;
    let tags = image()?;
    agent_image(&tags[0])?;
    images_together(&tags[0], &tags[1])
}

/// Renders the kustomization and validates every object against the
/// Kubernetes schemas (strictly: an unknown field fails), offline.
fn kubernetes() -> anyhow::Result<()> {
    let out = Command::new("kubectl")
        .args(["kustomize", "deploy/kubernetes"])
        .output()
        .context("cannot run kubectl kustomize")?;
    ensure!(
        out.status.success(),
        "kubectl kustomize deploy/kubernetes: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rendered = PathBuf::from("target/vigil-kubernetes.yaml");
    std::fs::write(&rendered, &out.stdout)?;
    let text = String::from_utf8_lossy(&out.stdout);
    for kind in [
        "DaemonSet",
        "StatefulSet",
        "Service",
        "NetworkPolicy",
        "ConfigMap",
        "Namespace",
    ] {
        ensure!(
            text.contains(&format!("kind: {kind}\n")),
            "the rendered manifests have no {kind}"
        );
    }
    step(
        "kubernetes-validate --strict (Kubernetes 1.30 and 1.37 schemas)",
        Command::new("python3")
            .args([
                "-m",
                "kubernetes_validate",
                "--strict",
                "--quiet",
                "-k",
                "1.30.0",
                "-k",
                "1.37.0",
            ])
            .arg(&rendered),
    )?;
    step(
        "sh -n deploy/kubernetes/pki.sh",
        Command::new("sh").args(["-n", "deploy/kubernetes/pki.sh"]),
    )
}

/// A process whose stderr is gathered line by line.
struct Logged {
    name: &'static str,
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Logged {
    fn spawn(name: &'static str, cmd: &mut Command) -> anyhow::Result<Logged> {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot start {name}"))?;
        let lines = Arc::new(Mutex::new(Vec::new()));
        for stream in [
            Box::new(child.stderr.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stdout.take().unwrap()),
        ] {
            let lines = lines.clone();
            thread::spawn(move || {
                for l in BufReader::new(stream).lines().map_while(Result::ok) {
                    lines.lock().unwrap().push(l);
                }
            });
        }
        Ok(Logged { name, child, lines })
    }

    fn wait_for(&mut self, what: &str, timeout: Duration) -> anyhow::Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(l) = self.lines.lock().unwrap().iter().find(|l| l.contains(what)) {
                return Ok(l.clone());
            }
            if let Some(st) = self.child.try_wait()? {
                thread::sleep(Duration::from_millis(200));
                bail!(
                    "{} exited ({st}) before logging `{what}`:\n{}",
                    self.name,
                    self.log()
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "{} did not log `{what}` within {timeout:?}:\n{}",
                    self.name,
                    self.log()
                );
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    fn log(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    /// SIGTERM (relayed by sudo), then the exit.
    fn stop(mut self) -> anyhow::Result<()> {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.child.try_wait()?.is_none() {
            if Instant::now() > deadline {
                let _ = self.child.kill();
                bail!("{} did not stop within 20 s of SIGTERM", self.name);
            }
            thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    }
}

/// A unit file's values for `key` (the last assignment wins for single
/// values; lists are joined).
fn unit_values(unit: &str, key: &str) -> Vec<String> {
    unit.lines()
        .filter_map(|l| l.strip_prefix(&format!("{key}=")))
        .map(str::to_string)
        .collect()
}

/// The command `ExecStart=` of `unit` runs, under setpriv with the unit's
/// user and capability bounding set and no new privileges: the binary as
/// the unit starts it, without systemd.
fn as_the_unit_starts_it(unit_path: &Path) -> anyhow::Result<Command> {
    let unit = std::fs::read_to_string(unit_path)?;
    let exec = unit_values(&unit, "ExecStart")
        .pop()
        .context("no ExecStart")?;
    let user = unit_values(&unit, "User")
        .pop()
        .unwrap_or_else(|| "root".into());
    let caps: Vec<String> = unit_values(&unit, "CapabilityBoundingSet")
        .pop()
        .unwrap_or_default()
        .split_whitespace()
        .map(|c| format!("+{}", c.trim_start_matches("CAP_").to_lowercase()))
        .collect();
    let mut bounding = String::from("-all");
    for c in &caps {
        bounding.push(',');
        bounding.push_str(c);
    }
    let mut cmd = sudo_cmd("/usr/bin/setpriv");
    if user != "root" {
        cmd.args([
            format!("--reuid={user}"),
            format!("--regid={user}"),
            "--init-groups".into(),
        ]);
    }
    cmd.args([
        "--no-new-privs",
        &format!("--bounding-set={bounding}"),
        "--",
    ]);
    cmd.args(exec.split_whitespace());
    Ok(cmd)
}

/// Installs both packages, checks what they put in place, starts the
/// collector and the agent as their units do, sees an alert stored, then
/// purges both and checks nothing is left.
fn packages(debs: &[PathBuf]) -> anyhow::Result<()> {
    let purge = || {
        quiet_step(
            "purge the Vigil packages",
            sudo_cmd("/usr/bin/dpkg").args(["--purge", "vigil-agent", "vigil-collector"]),
        )
    };
    purge()?;
    let installed = step(
        "dpkg -i vigil-agent vigil-collector",
        sudo_cmd("/usr/bin/dpkg").arg("-i").args(debs),
    );
    let result = installed.and_then(|()| installed_packages_work());
    let purged = purge();
    result?;
    purged?;
    for gone in [
        "/usr/bin/vigil-agent",
        "/usr/bin/vigil-collector",
        "/lib/systemd/system/vigil-agent.service",
        "/lib/systemd/system/vigil-collector.service",
        "/etc/vigil",
        "/var/lib/vigil",
    ] {
        ensure!(
            !Path::new(gone).exists(),
            "{gone} is left after dpkg --purge"
        );
    }
    eprintln!("==> packages: installed, verified, ran end to end, purged cleanly");
    Ok(())
}

fn installed_packages_work() -> anyhow::Result<()> {
    for f in [
        "/usr/bin/vigil-agent",
        "/usr/bin/vigil-collector",
        "/etc/vigil/agent.yaml",
        "/etc/vigil/collector.yaml",
        "/etc/vigil/rules/default.yaml",
        "/etc/vigil/rules.d/README",
        "/etc/vigil/pki/ca.crt",
        "/var/lib/vigil",
    ] {
        ensure!(Path::new(f).exists(), "{f} is missing after dpkg -i");
    }
    ensure!(
        ok(Command::new("getent").args(["passwd", "vigil"])),
        "no system user `vigil`"
    );
    let units = [
        "/lib/systemd/system/vigil-agent.service",
        "/lib/systemd/system/vigil-collector.service",
    ];
    let verify = Command::new("systemd-analyze")
        .arg("verify")
        .args(units)
        .output()
        .context("cannot run systemd-analyze")?;
    let said = String::from_utf8_lossy(&verify.stderr).to_string()
        + &String::from_utf8_lossy(&verify.stdout);
    ensure!(
        verify.status.success() && !said.contains("vigil"),
        "systemd-analyze verify: {said}"
    );
    eprintln!("==> systemd-analyze verify: both units pass");

    // What an operator does next: point the agent at the collector with
    // the certificate the collector package made for this host, and issue
    // a responder certificate.
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")?
        .trim()
        .to_string();
    let settings = format!(
        "rules: [/etc/vigil/rules, /etc/vigil/rules.d]\ncollector: https://127.0.0.1:50051\n\
         tls_cert: /etc/vigil/pki/agents/{host}.crt\ntls_key: /etc/vigil/pki/agents/{host}.key\n\
         ca: /etc/vigil/pki/ca.crt\nspool_dir: /var/lib/vigil/spool\n"
    );
    let tmp = PathBuf::from("target/deploy-agent.yaml");
    std::fs::write(&tmp, settings)?;
    quiet_step(
        "write /etc/vigil/agent.yaml",
        sudo_cmd("/usr/bin/cp")
            .arg(&tmp)
            .arg("/etc/vigil/agent.yaml"),
    )?;
    quiet_step(
        "issue a responder certificate",
        sudo_cmd("/usr/bin/vigil-collector").args([
            "pki",
            "issue",
            "/etc/vigil/pki",
            "--responder",
            "deploy-check",
        ]),
    )?;

    // The collector's ExecStartPre (with `+`: as root), then its ExecStart.
    let unit = std::fs::read_to_string(units[1])?;
    for pre in unit_values(&unit, "ExecStartPre") {
        let pre = pre.trim_start_matches('+');
        let mut words = pre.split_whitespace();
        let program = words.next().context("empty ExecStartPre")?;
        quiet_step(
            "run the collector's ExecStartPre",
            sudo_cmd(program).args(words),
        )?;
    }
    let mut collector = Logged::spawn(
        "vigil-collector",
        &mut as_the_unit_starts_it(Path::new(units[1]))?,
    )?;
    let outcome = (|| -> anyhow::Result<()> {
        collector.wait_for("collector serving", Duration::from_secs(30))?;
        // The agent's StateDirectory=vigil/spool.
        quiet_step(
            "create the agent's state directory",
            sudo_cmd("/usr/bin/install").args(["-d", "-m", "0700", "/var/lib/vigil/spool"]),
        )?;
        let mut agent = Logged::spawn(
            "vigil-agent",
            &mut as_the_unit_starts_it(Path::new(units[0]))?,
        )?;
        let seen = (|| -> anyhow::Result<()> {
            agent.wait_for("agent running", Duration::from_secs(60))?;
            let line = until_alert(
                "deploy-check",
                Duration::from_secs(30),
                |marker| {
                    let out = Command::new("/usr/bin/vigil-collector")
                        .args([
                            "query",
                            "--pki",
                            "/etc/vigil/pki",
                            "--as",
                            "deploy-check",
                            "alerts",
                        ])
                        .args(["--since", "10m", "--rule", TMP_RULE, "--json"])
                        .output()?;
                    Ok(line_naming(&out.stdout, marker))
                },
                || both_logs(&agent, &collector),
            )?;
            let v: serde_json::Value = serde_json::from_str(&line)?;
            ensure!(
                v["host"]["hostname"] == host.as_str(),
                "the alert names another host: {line}"
            );
            eprintln!("==> packages: the alert was stored end to end ({TMP_RULE}, host {host})");
            Ok(())
        })();
        let stopped = agent.stop();
        seen?;
        stopped
    })();
    let stopped = collector.stop();
    outcome?;
    stopped
}

/// `podman run` of the agent image with what the DaemonSet grants: the
/// host's PID namespace, a host name of its own, only the agent's
/// capabilities, seccomp unconfined (for bpf() and perf_event_open()), a
/// read-only root, and the kernel's interfaces and the runtimes' state
/// mounted read-only. `extra` goes before the image, `args` after it.
fn agent_container(tag: &str, name: &str, extra: &[String], args: &[String]) -> Command {
    let mut run = podman();
    run.args(["run", "--rm", "--name", name, "--hostname", AGENT_CONTAINER_HOSTNAME, "--pid=host"])
        .args(["--cap-drop=all"])
        .args(["--cap-add=CAP_BPF,CAP_PERFMON,CAP_SYS_PTRACE,CAP_DAC_READ_SEARCH,CAP_SYS_RESOURCE,CAP_SYS_ADMIN"])
        .args(["--security-opt=seccomp=unconfined", "--security-opt=no-new-privileges", "--read-only"])
        .args(ulimit_args())
        .args(["-v", "/sys/kernel/btf:/sys/kernel/btf:ro"])
        .args(["-v", "/sys/kernel/tracing:/sys/kernel/tracing:ro"])
        .args(["-v", "/sys/fs/cgroup:/sys/fs/cgroup:ro"]);
    for dir in [
        "/run/containerd",
        "/run/containers",
        "/var/lib/docker/containers",
    ] {
        if Path::new(dir).is_dir() {
            run.args(["-v", &format!("{dir}:/host{dir}:ro")]);
        }
    }
    run.args(extra)
        .arg(tag)
        .args([
            "run",
            "--container-runtime-root",
            "/host",
            "--drain-interval-ms",
            "10",
        ])
        .args(args);
    run
}

const AGENT_CONTAINER_HOSTNAME: &str = "vigil-agent-container";

fn this_host() -> anyhow::Result<String> {
    Ok(std::fs::read_to_string("/proc/sys/kernel/hostname")?
        .trim()
        .to_string())
}

/// The first line of `output` that names `marker`.
fn line_naming(output: &[u8], marker: &str) -> Option<String> {
    String::from_utf8_lossy(output)
        .lines()
        .find(|l| l.contains(marker))
        .map(str::to_string)
}

/// What an agent and a collector logged, for a failure's message.
fn both_logs(agent: &Logged, collector: &Logged) -> String {
    format!(
        "--- agent ---\n{}\n--- collector ---\n{}",
        agent.log(),
        collector.log()
    )
}

/// Runs a program from /tmp (with a marker argument) every second until
/// `found(marker)` gives a value, or fails after `timeout` with `context`.
fn until_alert<T>(
    tag: &str,
    timeout: Duration,
    mut found: impl FnMut(&str) -> anyhow::Result<Option<T>>,
    context: impl Fn() -> String,
) -> anyhow::Result<T> {
    let marker = format!("--{tag}-{}", std::process::id());
    let exe = PathBuf::from(format!("/tmp/vigil-{tag}-{}", std::process::id()));
    std::fs::copy("/bin/true", &exe)?;
    let deadline = Instant::now() + timeout;
    let result = loop {
        let _ = Command::new(&exe).arg(&marker).status();
        match found(&marker) {
            Ok(Some(v)) => break Ok(v),
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_secs(1)),
            Ok(None) => {
                break Err(anyhow::anyhow!(
                    "no alert for {} within {timeout:?}:\n{}",
                    exe.display(),
                    context()
                ))
            }
            Err(e) => break Err(e),
        }
    };
    let _ = std::fs::remove_file(&exe);
    result
}

/// Runs the agent image as the DaemonSet does, alerts on stdout, and
/// checks that a program run on the host raises an alert under the host's
/// name, not the container's.
fn agent_image(tag: &str) -> anyhow::Result<()> {
    const NAME: &str = "vigil-agent-deploy-check";
    let host = this_host()?;
    let _ = podman().args(["rm", "-f", NAME]).output();
    let mut agent = Logged::spawn(
        "the agent container",
        &mut agent_container(tag, NAME, &[], &[]),
    )?;
    let outcome = (|| -> anyhow::Result<()> {
        agent.wait_for("agent running", Duration::from_secs(90))?;
        let line = until_alert(
            "image-check",
            Duration::from_secs(30),
            |marker| {
                Ok(agent
                    .lines
                    .lock()
                    .unwrap()
                    .iter()
                    .find(|l| l.starts_with('{') && l.contains(TMP_RULE) && l.contains(marker))
                    .cloned())
            },
            || agent.log(),
        )?;
        let v: serde_json::Value = serde_json::from_str(&line)?;
        let named = v["host"]["hostname"].as_str().unwrap_or_default();
        ensure!(
            named == host && named != AGENT_CONTAINER_HOSTNAME,
            "the alert from the container names host `{named}`, not this host's `{host}`: {line}"
        );
        eprintln!("==> agent image: a program run on the host alerted from inside the container, as host {host}");
        Ok(())
    })();
    let stopped = agent.stop();
    let _ = podman().args(["rm", "-f", NAME]).output();
    outcome?;
    stopped
}

/// Both images together: the collector image as its unprivileged user
/// with its database on a volume and its PKI mounted read-only; the agent
/// image sending to it over mutual TLS; an alert for a program run on the
/// host stored and queried back from the host.
fn images_together(agent_tag: &str, collector_tag: &str) -> anyhow::Result<()> {
    const COLLECTOR: &str = "vigil-collector-deploy-check";
    const AGENT: &str = "vigil-agent-deploy-check-2";
    let host = this_host()?;
    let dir = std::fs::canonicalize("target")?.join("image-check");
    let _ = sudo_cmd("/usr/bin/rm").arg("-rf").arg(&dir).status();
    std::fs::create_dir_all(dir.join("db"))?;
    let pki = dir.join("pki");
    let collector_bin = std::fs::canonicalize("target/release/vigil-collector")?;
    let pki_cmd = |args: &[&str]| {
        let mut c = Command::new(&collector_bin);
        c.arg("pki").arg(args[0]).arg(&pki).args(&args[1..]);
        c
    };
    quiet_step(
        "pki init",
        &mut pki_cmd(&["init", "--san", "127.0.0.1", "--san", "localhost"]),
    )?;
    quiet_step(
        "pki issue --agent",
        &mut pki_cmd(&["issue", "--agent", &host]),
    )?;
    quiet_step(
        "pki issue --responder",
        &mut pki_cmd(&["issue", "--responder", "image-check"]),
    )?;
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        l.local_addr()?.port()
    };
    std::fs::write(
        dir.join("collector.yaml"),
        format!("listen: 127.0.0.1:{port}\npki: /etc/vigil/pki\ndb: /var/lib/vigil/alerts.db\nmetrics_listen: off\n"),
    )?;
    // The collector's user owns its volume and may read its PKI.
    quiet_step(
        "give the collector's volume and PKI to uid 65532",
        sudo_cmd("/usr/bin/chown")
            .args(["-R", "65532:65532"])
            .arg(dir.join("db"))
            .arg(&pki),
    )?;
    for name in [COLLECTOR, AGENT] {
        let _ = podman().args(["rm", "-f", name]).output();
    }
    let mount = |src: PathBuf, dst: &str, mode: &str| format!("{}:{dst}:{mode}", src.display());
    let mut collector = Logged::spawn(
        "the collector container",
        podman()
            .args([
                "run",
                "--rm",
                "--name",
                COLLECTOR,
                "--network=host",
                "--read-only",
                "--cap-drop=all",
            ])
            .args(["--security-opt=no-new-privileges"])
            .args(ulimit_args())
            .args(["-v", &mount(pki.clone(), "/etc/vigil/pki", "ro")])
            .args(["-v", &mount(dir.join("db"), "/var/lib/vigil", "rw")])
            .args([
                "-v",
                &mount(
                    dir.join("collector.yaml"),
                    "/etc/vigil/collector.yaml",
                    "ro",
                ),
            ])
            .args(["--tmpfs", "/tmp"])
            .arg(collector_tag),
    )?;
    let outcome = (|| -> anyhow::Result<()> {
        collector.wait_for("collector serving", Duration::from_secs(60))?;
        let agent_args: Vec<String> = [
            "--collector".to_string(),
            format!("https://127.0.0.1:{port}"),
            "--tls-cert".into(),
            format!("/etc/vigil/pki/agents/{host}.crt"),
            "--tls-key".into(),
            format!("/etc/vigil/pki/agents/{host}.key"),
            "--ca".into(),
            "/etc/vigil/pki/ca.crt".into(),
            "--spool-dir".into(),
            "/var/lib/vigil/spool".into(),
        ]
        .into();
        let extra = vec![
            "--network=host".to_string(),
            "-v".into(),
            mount(pki.clone(), "/etc/vigil/pki", "ro"),
            "--tmpfs".into(),
            "/var/lib/vigil".into(),
        ];
        let mut agent = Logged::spawn(
            "the agent container",
            &mut agent_container(agent_tag, AGENT, &extra, &agent_args),
        )?;
        let seen = (|| -> anyhow::Result<()> {
            agent.wait_for("agent running", Duration::from_secs(90))?;
            until_alert(
                "images-check",
                Duration::from_secs(30),
                |marker| {
                    let out = as_root(&collector_bin, false)
                        .args([
                            "query",
                            "--server",
                            &format!("https://127.0.0.1:{port}"),
                            "--pki",
                        ])
                        .arg(&pki)
                        .args([
                            "--as",
                            "image-check",
                            "alerts",
                            "--since",
                            "10m",
                            "--rule",
                            TMP_RULE,
                            "--json",
                        ])
                        .output()?;
                    Ok(line_naming(&out.stdout, marker))
                },
                || both_logs(&agent, &collector),
            )?;
            eprintln!("==> images: the agent container's alert was stored by the collector container and queried from the host");
            Ok(())
        })();
        let stopped = agent.stop();
        seen?;
        stopped
    })();
    let stopped = collector.stop();
    for name in [COLLECTOR, AGENT] {
        let _ = podman().args(["rm", "-f", name]).output();
    }
    let _ = sudo_cmd("/usr/bin/rm").arg("-rf").arg(&dir).status();
    outcome?;
    stopped
}

/// This xtask's binary. The suite's own `cargo build` may have replaced
/// the file since it started (/proc/self/exe then ends in " (deleted)"):
/// the binary now at that path is built from the same tree.
fn this_xtask() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let text = exe.to_string_lossy();
    Ok(match text.strip_suffix(" (deleted)") {
        Some(path) => PathBuf::from(path),
        None => exe,
    })
}

/// The console of `cargo xtask run`: signing in as `admin` with the
/// password it made, over HTTPS checked against the run's CA, and the
/// alert list naming the alert just raised. curl keeps the cookies.
fn console_shows_alerts(data: &Path, ui: &str) -> anyhow::Result<()> {
    let ca = data.join("pki/ca.crt");
    let jar = data.join("console-cookies");
    let password = std::fs::read_to_string(data.join("console-password"))
        .context("cargo xtask run made no console password")?;
    let curl = |args: &[&str]| -> anyhow::Result<String> {
        let out = Command::new("curl")
            .args(["-sS", "--max-time", "20", "--cacert"])
            .arg(&ca)
            .arg("-b")
            .arg(&jar)
            .arg("-c")
            .arg(&jar)
            .args(args)
            .output()
            .context("curl is needed for the console check")?;
        ensure!(
            out.status.success(),
            "curl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let base = format!("https://{ui}");
    let form = curl(&[&format!("{base}/login")])?;
    let csrf = form
        .split("name=\"csrf_token\" value=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .context("the sign-in page has no CSRF field")?
        .to_string();
    let status = curl(&[
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "--data-urlencode",
        "username=admin",
        "--data-urlencode",
        &format!("password={}", password.trim()),
        "--data-urlencode",
        &format!("csrf_token={csrf}"),
        &format!("{base}/login"),
    ])?;
    ensure!(
        status == "303",
        "signing in to the console answered {status}"
    );
    let page = curl(&[&format!("{base}/alerts?state=any&since=1h")])?;
    ensure!(
        page.contains(TMP_RULE),
        "the console's alert list does not show `{TMP_RULE}`"
    );
    eprintln!("==> cargo xtask run: its console at {base} signs admin in and lists the alert");
    Ok(())
}

/// `cargo xtask run`, the README's first command, end to end: it starts,
/// an alert reaches its collector, and SIGTERM sent to xtask alone stops
/// the agent and the collector and ends it with success.
fn run_command() -> anyhow::Result<()> {
    let data = std::fs::canonicalize("target")?.join("xtask-run-check");
    let _ = sudo_cmd("/usr/bin/rm").arg("-rf").arg(&data).status();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        l.local_addr()?.port()
    };
    let listen = format!("127.0.0.1:{port}");
    let ui = {
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        format!("127.0.0.1:{}", l.local_addr()?.port())
    };
    let mut xtask = Logged::spawn(
        "cargo xtask run",
        Command::new(this_xtask()?)
            .args(["run", "--listen", &listen, "--ui-listen", &ui, "--data-dir"])
            .arg(&data),
    )?;
    let outcome = (|| -> anyhow::Result<()> {
        xtask.wait_for("Vigil is running", Duration::from_secs(900))?;
        let pki = data.join("pki");
        until_alert(
            "run-check",
            Duration::from_secs(30),
            |marker| {
                let out = Command::new("target/release/vigil-collector")
                    .args(["query", "--server", &format!("https://{listen}"), "--pki"])
                    .arg(&pki)
                    .args([
                        "--as", "local", "alerts", "--since", "10m", "--rule", TMP_RULE, "--json",
                    ])
                    .output()?;
                Ok(line_naming(&out.stdout, marker).map(drop))
            },
            || xtask.log(),
        )?;
        console_shows_alerts(&data, &ui)
    })();
    // SIGTERM to xtask alone: its children are not signalled by us.
    // SAFETY: signalling our own child.
    unsafe { libc::kill(xtask.child.id() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(st) = xtask.child.try_wait()? {
            break st;
        }
        if Instant::now() > deadline {
            let _ = xtask.child.kill();
            bail!(
                "cargo xtask run did not stop within 30 s of SIGTERM:\n{}",
                xtask.log()
            );
        }
        thread::sleep(Duration::from_millis(100));
    };
    outcome?;
    ensure!(
        status.success(),
        "cargo xtask run ended with {status} after SIGTERM:\n{}",
        xtask.log()
    );
    // Nothing it started may outlive it.
    let data_s = data.display().to_string();
    let left: Vec<String> = std::fs::read_dir("/proc")?
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains(&data_s) || c.contains(&listen))
        .collect();
    ensure!(
        left.is_empty(),
        "processes of cargo xtask run outlived it: {left:?}"
    );
    let _ = sudo_cmd("/usr/bin/rm").arg("-rf").arg(&data).status();
    eprintln!(
        "==> cargo xtask run: an alert reached its collector; SIGTERM to xtask alone stopped both"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_values_are_read_per_key() {
        let unit = "[Service]\nExecStartPre=+/usr/bin/install -d x\nExecStart=/usr/bin/vigil-agent run\nUser=vigil\n";
        assert_eq!(
            unit_values(unit, "ExecStart"),
            vec!["/usr/bin/vigil-agent run"]
        );
        assert_eq!(
            unit_values(unit, "ExecStartPre"),
            vec!["+/usr/bin/install -d x"]
        );
        assert!(unit_values(unit, "Group").is_empty());
    }
}
