//! `cargo xtask`: what needs more than cargo.
//!
//! - `setup`: installs the missing eBPF toolchain pieces (nightly rust-src,
//!   bpf-linker 0.10.0);
//! - `run`: builds everything and runs a collector and an agent on this host
//!   with the default rules and SQLite under a data directory;
//! - `test`: the whole suite (format, lints, unit, integration and eBPF
//!   end-to-end tests). `.ci/run` calls exactly this.
use std::{
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};
use clap::{Parser, Subcommand};

/// The bpf-linker release that works with rustc's own LLVM on this
/// toolchain (newer ones need a system LLVM 22+).
const BPF_LINKER_VERSION: &str = "0.10.0";

#[derive(Parser)]
#[command(name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install missing eBPF build tools (nightly + rust-src, bpf-linker).
    Setup,
    /// Build everything, then run collector + agent here until Ctrl-C.
    Run {
        /// Where the collector keeps its SQLite database and, in pki/, the
        /// certificates of the run (created on first use).
        #[arg(long, default_value = "data")]
        data_dir: PathBuf,
        /// Collector listen address.
        #[arg(long, default_value = DEFAULT_LISTEN)]
        listen: SocketAddr,
        /// Extra arguments for `vigil-agent run` (after `--`), e.g. `-- --events`.
        #[arg(last = true)]
        agent_args: Vec<String>,
    },
    /// Measure what the agent costs the host, no agent against the agent at
    /// its defaults in alternating rounds: syscalls it does not follow,
    /// opens it drops and reports, redis, spawns, a flood with execs that
    /// must all alert, RSS, alert latency. Needs root; takes a few minutes.
    Bench {
        /// Alternating rounds per side.
        #[arg(long, default_value_t = 3)]
        rounds: u32,
        /// Programs executed from /tmp during the flood.
        #[arg(long, default_value_t = 1000)]
        flood_execs: u32,
        /// Processes spawned per round for the spawn row.
        #[arg(long, default_value_t = 1000)]
        spawns: u32,
    },
    /// Many simulated agents streaming to a real collector (release build,
    /// mutual TLS, SQLite): checks every alert is stored once and prints
    /// the ack latency percentiles.
    Load {
        /// Simulated agents, each with its own certificate and stream.
        #[arg(long, default_value_t = 50)]
        agents: u32,
        /// Alerts per second per agent.
        #[arg(long, default_value_t = 200)]
        rate: u32,
        /// How long they stream.
        #[arg(long, default_value_t = 60)]
        seconds: u32,
    },
    /// What streaming activity costs a busy build host: programs started
    /// at a build's pace, the agent with `--activity none` and with its
    /// defaults in alternating rounds; agent CPU, and activity events and
    /// bytes per second stored by the collector. Needs root.
    BenchActivity {
        /// Alternating rounds per side.
        #[arg(long, default_value_t = 3)]
        rounds: u32,
        /// Seconds of workload per round.
        #[arg(long, default_value_t = 20)]
        seconds: u32,
        /// Programs started per second.
        #[arg(long, default_value_t = 300)]
        rate: u32,
    },
    /// Run the whole test suite (what CI runs).
    Test {
        /// Extra arguments for `cargo test`.
        #[arg(last = true)]
        args: Vec<String>,
    },
}

fn main() -> anyhow::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf();
    std::env::set_current_dir(&root)?;
    match Cli::parse().cmd {
        Cmd::Setup => setup(),
        Cmd::Run {
            data_dir,
            listen,
            agent_args,
        } => run(&data_dir, listen, &agent_args),
        Cmd::Test { args } => test(&args),
        Cmd::Load {
            agents,
            rate,
            seconds,
        } => load::run(load::LoadOptions {
            agents,
            rate,
            seconds,
        }),
        Cmd::BenchActivity {
            rounds,
            seconds,
            rate,
        } => activity::run(activity::Options {
            rounds,
            seconds,
            rate,
        }),
        Cmd::Bench {
            rounds,
            flood_execs,
            spawns,
        } => bench::run(bench::BenchOptions {
            rounds,
            flood_execs,
            spawns,
        }),
    }
}

pub(crate) fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

pub(crate) fn step(what: &str, cmd: &mut Command) -> anyhow::Result<()> {
    eprintln!("==> {what}");
    let st = cmd
        .status()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    if !st.success() {
        bail!("{what} failed ({st})");
    }
    Ok(())
}

fn output(cmd: &mut Command) -> Option<String> {
    cmd.output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
}

pub(crate) fn setup() -> anyhow::Result<()> {
    let Some(toolchains) = output(Command::new("rustup").args(["toolchain", "list"])) else {
        bail!("rustup is required (https://rustup.rs); the eBPF probe builds with its nightly toolchain");
    };
    if !toolchains.lines().any(|l| l.starts_with("nightly")) {
        step(
            "installing the nightly toolchain with rust-src",
            Command::new("rustup").args([
                "toolchain",
                "install",
                "nightly",
                "--profile",
                "minimal",
                "--component",
                "rust-src",
            ]),
        )?;
    }
    let comps = output(Command::new("rustup").args([
        "component",
        "list",
        "--toolchain",
        "nightly",
        "--installed",
    ]))
    .unwrap_or_default();
    if !comps.lines().any(|l| l.starts_with("rust-src")) {
        step(
            "adding rust-src to nightly (for -Z build-std=core)",
            Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]),
        )?;
    }
    let linker = output(Command::new("bpf-linker").arg("--version")).unwrap_or_default();
    if !linker.contains(BPF_LINKER_VERSION) {
        step(
            &format!("installing bpf-linker {BPF_LINKER_VERSION}"),
            cargo().args([
                "install",
                &format!("bpf-linker@{BPF_LINKER_VERSION}"),
                "--locked",
                "--force",
            ]),
        )?;
    }
    eprintln!("==> eBPF toolchain ready (nightly + rust-src, bpf-linker {BPF_LINKER_VERSION})");
    Ok(())
}

fn test(extra: &[String]) -> anyhow::Result<()> {
    setup()?;
    step(
        "cargo fmt --check",
        cargo().args(["fmt", "--all", "--", "--check"]),
    )?;
    step(
        "cargo clippy (warnings are errors)",
        cargo().args(["clippy", "--all-targets", "--", "-D", "warnings"]),
    )?;
    // The end-to-end tests run the real binaries.
    step("cargo build --bins", cargo().args(["build", "--bins"]))?;
    // Kernel tests record themselves here when VIGIL_SKIP_KERNEL_TESTS=1
    // lets them skip; the count is printed, so a partial run says so.
    let skipped_dir = Path::new("target/vigil-skipped");
    let _ = std::fs::remove_dir_all(skipped_dir);
    let result = step("cargo test", cargo().arg("test").args(extra));
    let skipped: Vec<String> = std::fs::read_dir(skipped_dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    if !skipped.is_empty() {
        eprintln!(
            "==> {} kernel tests were SKIPPED (VIGIL_SKIP_KERNEL_TESTS=1, not root): {}",
            skipped.len(),
            skipped.join(", ")
        );
    }
    result
}

mod activity;
mod bench;
mod load;

pub(crate) fn is_root() -> bool {
    // SAFETY: no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn run(data_dir: &Path, listen: SocketAddr, agent_args: &[String]) -> anyhow::Result<()> {
    setup()?;
    if !is_root() {
        bail!("the agent loads an eBPF probe and needs root: run `sudo -E cargo xtask run`");
    }
    step(
        "cargo build --release --bins",
        cargo().args(["build", "--release", "--bins"]),
    )?;
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("cannot create {}", data_dir.display()))?;
    let bin = Path::new("target/release");
    let db = data_dir.join("alerts.db");
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .context("cannot read this host's name")?
        .trim()
        .to_string();
    let pki = data_dir.join("pki");
    ensure_pki(bin, &pki, &host, &listen)?;
    let pki_s = pki.display().to_string();
    // Ctrl-C reaches the children too; xtask stays to wait for their clean exit.
    // SAFETY: setting a signal disposition.
    unsafe { libc::signal(libc::SIGINT, libc::SIG_IGN) };
    let mut collector = spawn(
        Command::new(bin.join("vigil-collector"))
            .args([
                "serve",
                "--listen",
                &listen.to_string(),
                "--pki",
                &pki_s,
                "--db",
            ])
            .arg(&db),
    )?;
    wait_for_port(listen, &mut collector)?;
    // The collector's certificate names loopback, not "any address".
    let reach = if listen.ip().is_unspecified() {
        SocketAddr::from(([127, 0, 0, 1], listen.port()))
    } else {
        listen
    };
    let url = format!("https://{reach}");
    let agent_files = |ext: &str| {
        pki.join(format!("agents/{host}.{ext}"))
            .display()
            .to_string()
    };
    let mut agent = spawn(
        Command::new(bin.join("vigil-agent"))
            .args(["run", "--collector", &url])
            .args([
                "--tls-cert",
                &agent_files("crt"),
                "--tls-key",
                &agent_files("key"),
            ])
            .args(["--ca", &format!("{pki_s}/ca.crt")])
            .arg("--spool-dir")
            .arg(data_dir.join("spool"))
            .args(agent_args),
    )?;
    let server = if listen.to_string() == DEFAULT_LISTEN {
        String::new()
    } else {
        format!("--server {url} ")
    };
    eprintln!(
        "==> Vigil is running over mutual TLS: collector on {url} (database {}, certificates in {pki_s}),\n    \
         agent for host {host} with the default rules.\n    \
         Try:  cp /bin/true /tmp/x && /tmp/x\n    \
         Then: {} query {server}--pki {pki_s} --as {RESPONDER} alerts --since 1h\n    \
         Ctrl-C stops both.",
        db.display(),
        bin.join("vigil-collector").display()
    );
    let agent_status = agent.wait()?;
    // SAFETY: signalling our own child.
    unsafe { libc::kill(collector.id() as i32, libc::SIGTERM) };
    let collector_status = collector.wait()?;
    report("vigil-agent", agent_status)?;
    report("vigil-collector", collector_status)
}

/// The responder certificate `cargo xtask run` makes for local queries.
const RESPONDER: &str = "local";
const DEFAULT_LISTEN: &str = "127.0.0.1:50051";

/// Creates the PKI of a local run on first use: the CA and collector
/// certificate (naming localhost, 127.0.0.1 and the listen address), an
/// agent certificate for this host, and the responder `local`.
fn ensure_pki(bin: &Path, pki: &Path, host: &str, listen: &SocketAddr) -> anyhow::Result<()> {
    let collector = || Command::new(bin.join("vigil-collector"));
    if !pki.join("ca.crt").exists() {
        let mut init = collector();
        init.args(["pki", "init"]).arg(pki);
        let mut sans = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        let ip = listen.ip().to_string();
        if !listen.ip().is_unspecified() && !sans.contains(&ip) {
            sans.push(ip);
        }
        for san in &sans {
            init.args(["--san", san]);
        }
        quiet_step("create the local PKI", &mut init)?;
    }
    if !pki.join(format!("agents/{host}.crt")).exists() {
        quiet_step(
            "issue this host's agent certificate",
            collector()
                .args(["pki", "issue"])
                .arg(pki)
                .args(["--agent", host]),
        )?;
    }
    if !pki.join(format!("responders/{RESPONDER}.crt")).exists() {
        quiet_step(
            "issue the local responder certificate",
            collector()
                .args(["pki", "issue"])
                .arg(pki)
                .args(["--responder", RESPONDER]),
        )?;
        give_to_sudo_user(&[
            pki.join("responders"),
            pki.join(format!("responders/{RESPONDER}.crt")),
            pki.join(format!("responders/{RESPONDER}.key")),
        ]);
    }
    Ok(())
}

/// Under `sudo`, hands `paths` to the user who ran it, so the README's
/// query works without root (the key stays mode 0600).
fn give_to_sudo_user(paths: &[PathBuf]) {
    let id = |k: &str| std::env::var(k).ok().and_then(|v| v.parse::<u32>().ok());
    let (Some(uid), Some(gid)) = (id("SUDO_UID"), id("SUDO_GID")) else {
        return;
    };
    for p in paths {
        let Ok(c) = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()) else {
            continue;
        };
        // SAFETY: a valid C string; failure only leaves the file root's.
        if unsafe { libc::chown(c.as_ptr(), uid, gid) } != 0 {
            eprintln!("==> note: cannot give {} to uid {uid}", p.display());
        }
    }
}

/// Runs a command whose output matters only when it fails.
fn quiet_step(what: &str, cmd: &mut Command) -> anyhow::Result<()> {
    let out = cmd.output().with_context(|| format!("cannot {what}"))?;
    if !out.status.success() {
        bail!(
            "cannot {what}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

fn spawn(cmd: &mut Command) -> anyhow::Result<Child> {
    cmd.spawn().with_context(|| format!("cannot start {cmd:?}"))
}

fn report(name: &str, st: ExitStatus) -> anyhow::Result<()> {
    use std::os::unix::process::ExitStatusExt;
    if st.success() || st.signal() == Some(libc::SIGINT) {
        Ok(())
    } else {
        bail!("{name} exited with {st}")
    }
}

fn wait_for_port(addr: SocketAddr, child: &mut Child) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        if let Some(st) = child.try_wait()? {
            bail!("vigil-collector exited before listening ({st})");
        }
        thread::sleep(Duration::from_millis(100));
    }
    bail!("vigil-collector did not listen on {addr} within 15 s")
}
