//! `cargo xtask`: what needs more than cargo.
//!
//! - `setup`: installs the missing eBPF toolchain pieces (nightly rust-src,
//!   bpf-linker 0.10.0);
//! - `run`: builds everything and runs a collector and an agent on this host
//!   with the default rules and SQLite under a data directory;
//! - `test`: the whole suite (format, lints, unit, integration and eBPF
//!   end-to-end tests). `.ci/run` calls exactly this.
use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Command,
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
        #[arg(long, default_value = run::DEFAULT_LISTEN)]
        listen: SocketAddr,
        /// Where the web console listens (HTTPS with the run's
        /// certificates; `off` for none). Sign in as `admin` with the
        /// password in DATA_DIR/console-password, made on first use.
        #[arg(long, default_value = run::DEFAULT_UI_LISTEN)]
        ui_listen: String,
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
    /// Per-program cost of the probe from the kernel's BPF statistics
    /// (run_time_ns / run_cnt, via bpftool) under a fixed workload of
    /// reported opens and execs: resolves changes of a few nanoseconds that
    /// the host-level rows of `bench` cannot. Needs root and bpftool.
    ProbeCost {
        /// Rounds of the workload; the median is shown.
        #[arg(long, default_value_t = 5)]
        rounds: u32,
        /// The agent binary to measure.
        #[arg(long, default_value = "target/release/vigil-agent")]
        agent: String,
        /// Extra arguments for `vigil-agent run` (after `--`), e.g.
        /// `-- --rules rules/default.yaml --rules mine.yaml`.
        #[arg(last = true)]
        agent_args: Vec<String>,
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
        /// Activity events per second per agent, sent in the same batches.
        #[arg(long, default_value_t = 0)]
        activity_rate: u32,
        /// The collectors' store: `sqlite` (a file) or `postgres` (a
        /// throwaway cluster with fsync on, started for the run).
        #[arg(long, default_value = "sqlite", value_parser = ["sqlite", "postgres"])]
        store: String,
        /// Collectors sharing the store (postgres only); agents are spread
        /// over them.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=16))]
        collectors: u32,
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
    /// Build the Debian packages vigil-agent and vigil-collector
    /// (target/debian/*.deb) with cargo-deb, installing it if missing.
    Package,
    /// Build the container images localhost/vigil-agent:VERSION and
    /// localhost/vigil-collector:VERSION with podman, from scratch (the
    /// binaries and the libraries they link; no base image is pulled).
    Image,
    /// The deployment checks alone (the end of `test`): Kubernetes
    /// manifests rendered and validated; packages installed, run as their
    /// units run them, and purged; the agent image run as the DaemonSet
    /// runs it. Steps that need root go through sudo.
    DeployCheck,
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
            ui_listen,
            agent_args,
        } => run::run(&data_dir, listen, &ui_listen, &agent_args),
        Cmd::Test { args } => test(&args),
        Cmd::Package => deploy::package().map(drop),
        Cmd::Image => deploy::image().map(|tags| {
            for t in tags {
                println!("{t}");
            }
        }),
        Cmd::DeployCheck => deploy::check(),
        Cmd::Load {
            agents,
            rate,
            seconds,
            activity_rate,
            store,
            collectors,
        } => load::run(load::LoadOptions {
            agents,
            rate,
            seconds,
            activity_rate,
            postgres: store == "postgres",
            collectors,
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
        Cmd::ProbeCost {
            rounds,
            agent,
            agent_args,
        } => probe_cost::run(&agent, &agent_args, rounds),
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
    ensure_test_packages()?;
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
    let result = if is_root() {
        step("cargo test", cargo().arg("test").args(extra))
    } else {
        test_as_user(extra)
    };
    let skipped: Vec<String> = std::fs::read_dir(skipped_dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    if !skipped.is_empty() {
        eprintln!(
            "==> {} kernel tests were SKIPPED (VIGIL_SKIP_KERNEL_TESTS=1): {}",
            skipped.len(),
            skipped.join(", ")
        );
    }
    result?;
    // Packages, units, images and manifests: what an operator installs.
    deploy::check()
}

/// Installs what the tests need from Debian's packages when this host
/// lacks it: PostgreSQL's server (the store, investigation, on-call and
/// delivery tests run on it too, each on a throwaway cluster of its own:
/// initdb into a temporary directory, no system service is started), and
/// Chromium with its WebDriver (the console's browser test).
fn ensure_test_packages() -> anyhow::Result<()> {
    let postgres = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .any(|v| v.path().join("bin/initdb").exists())
        || std::env::var_os("VIGIL_PG_BIN").is_some();
    let mut missing = Vec::new();
    if !postgres {
        missing.push("postgresql");
    }
    if !Path::new("/usr/bin/chromium").exists() {
        missing.push("chromium");
    }
    if !Path::new("/usr/bin/chromedriver").exists() {
        missing.push("chromium-driver");
    }
    if missing.is_empty() {
        return Ok(());
    }
    step(
        "apt-get update (for the tests' packages)",
        as_root(Path::new("/usr/bin/apt-get"), false).args(["update", "-qq"]),
    )?;
    step(
        &format!(
            "apt-get install {} (PostgreSQL: the tests' second store; Chromium: the console's browser test)",
            missing.join(" ")
        ),
        as_root(Path::new("/usr/bin/apt-get"), false)
            .args(["install", "-y", "-qq"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}

/// The suite for a user who is not root: everything is built, and the
/// unit and integration tests run, as that user; the end-to-end tests
/// (`vigil-tests`), which load the eBPF probe, run through `sudo`, as
/// cargo's runner for their test binaries. With VIGIL_SKIP_KERNEL_TESTS=1
/// they run as the user and skip what needs the kernel.
fn test_as_user(extra: &[String]) -> anyhow::Result<()> {
    let unprivileged = step(
        "cargo test (all but the end-to-end tests, as this user)",
        cargo()
            .args(["test", "--workspace", "--exclude", "vigil-tests"])
            .args(extra),
    );
    let mut e2e = cargo();
    e2e.args(["test", "-p", "vigil-tests"]).args(extra);
    let what = if std::env::var("VIGIL_SKIP_KERNEL_TESTS").is_ok_and(|v| v == "1") {
        "cargo test -p vigil-tests (as this user; kernel tests skipped)"
    } else {
        eprintln!(
            "==> the end-to-end tests load the eBPF probe, so they alone run as root: through sudo \
             (you may be asked for your password)"
        );
        e2e.env(
            format!(
                "CARGO_TARGET_{}_RUNNER",
                host_triple()?.to_uppercase().replace('-', "_")
            ),
            "sudo --preserve-env --",
        );
        "cargo test -p vigil-tests (test binaries through sudo)"
    };
    let e2e = step(what, &mut e2e);
    unprivileged.and(e2e)
}

/// The target triple cargo builds for here (`rustc -vV`'s host line).
fn host_triple() -> anyhow::Result<String> {
    let out = output(Command::new("rustc").arg("-vV")).context("cannot run rustc -vV")?;
    out.lines()
        .find_map(|l| l.strip_prefix("host: "))
        .map(str::to_string)
        .context("rustc -vV printed no host line")
}

mod activity;
mod bench;
mod deploy;
mod load;
mod probe_cost;
mod run;

pub(crate) fn is_root() -> bool {
    // SAFETY: no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// `program` run as root: itself when xtask is root, otherwise through
/// `sudo` (which asks for a password on the terminal when it must).
/// `keep_env` passes this environment on (`sudo --preserve-env`), which
/// the test binaries need; sudo's `secure_path` still replaces PATH, so
/// `program` is a path, never a name to look up.
pub(crate) fn as_root(program: &Path, keep_env: bool) -> Command {
    if is_root() {
        return Command::new(program);
    }
    let mut cmd = Command::new("sudo");
    if keep_env {
        cmd.arg("--preserve-env");
    }
    cmd.arg("--").arg(program);
    cmd
}

/// Runs a command whose output matters only when it fails.
pub(crate) fn quiet_step(what: &str, cmd: &mut Command) -> anyhow::Result<()> {
    let out = cmd.output().with_context(|| format!("cannot {what}"))?;
    if !out.status.success() {
        bail!(
            "cannot {what}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}
