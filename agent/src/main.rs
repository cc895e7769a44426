//! `vigil-agent`: command-line entry point. All logic lives in the library.
use std::{
    ffi::OsString,
    path::{Path, PathBuf},
    process::ExitCode,
    time::Duration,
};

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand, ValueEnum};
use tracing_subscriber::EnvFilter;
use vigil_agent::{
    enrich::EnrichConfig,
    proctree::TableConfig,
    rules::{LoadOptions, Matcher as _, RuleSet, Unsupported},
    run::{self, EventsOut, RunOptions},
};

/// Vigil host agent: watches process activity with an eBPF probe, matches it
/// against detection rules and forwards alerts to a Vigil collector.
///
/// Needs root (or CAP_BPF + CAP_PERFMON + CAP_SYS_ADMIN) and a kernel with BTF
/// (/sys/kernel/btf/vmlinux). Logs go to stderr; stdout carries only JSON lines
/// (events with --events, alerts when no --collector is given).
#[derive(Parser, Debug)]
#[command(name = "vigil-agent", version, propagate_version = true)]
struct Cli {
    /// Log format on stderr.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
    /// Log filter, e.g. `info`, `debug`, `vigil_agent=debug` (RUST_LOG overrides).
    #[arg(long, default_value = "info", global = true)]
    log_level: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Copy, Clone, Debug, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Load the probe and watch this host until SIGINT/SIGTERM.
    ///
    /// Examples:
    ///   vigil-agent run --events                     # every event as JSON lines
    ///   vigil-agent run --collector https://collector.example.com:50051 \
    ///       --tls-cert /etc/vigil/agent.crt --tls-key /etc/vigil/agent.key --ca /etc/vigil/ca.crt
    ///   vigil-agent run --collector http://127.0.0.1:50051   # a plaintext collector on loopback
    #[command(verbatim_doc_comment)]
    Run(Box<RunArgs>),
    /// Work with rule files.
    #[command(subcommand)]
    Rules(RulesCommand),
    /// Check that this host can run the agent: one line per check, with
    /// what to do when it fails.
    ///
    /// Kernel version, BTF, the embedded probe, capabilities, lockdown
    /// mode, BPF ring buffers, tracefs, the scheduler tracepoints and each
    /// followed syscall's tracepoints, cgroup v2, the container runtimes'
    /// state directories, the clock source, the spool directory, and, with
    /// --collector, the agent's certificate and a real connection (TCP,
    /// mutual TLS, HTTP/2) to the collector. Takes every flag of `run`, and
    /// reads the same settings file, so it checks what `run` would do.
    /// Exits 0 when the agent can run (warnings only narrow what it sees),
    /// 1 otherwise.
    ///
    /// Examples:
    ///   vigil-agent doctor
    ///   vigil-agent doctor --config /etc/vigil/agent.yaml --json
    #[command(verbatim_doc_comment)]
    Doctor(Box<DoctorArgs>),
}

#[derive(Args, Debug)]
struct DoctorArgs {
    /// One JSON object: {"can_run": bool, "checks": [{"name", "status"
    /// (ok, warn, fail), "detail", "fix"}]}.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Args, Debug)]
struct RunArgs {
    /// The settings file: every flag of this command is a key, written
    /// without the dashes (`spool_max: 512M`, `rules: [/etc/vigil/rules]`;
    /// docs/configuration.md). Flags on the command line win. Default:
    /// /etc/vigil/agent.yaml, when it exists. SIGHUP rereads it: `rules`
    /// and `unsupported` take effect at once, and each other changed key
    /// is logged as needing a restart.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// This host's name in alerts, activity and heartbeats. Default: the
    /// kernel's host name; in a container sharing the host's PID namespace,
    /// the host's (read from the initial UTS namespace, through kthreadd). In Kubernetes, pass the node's name
    /// (the downward API's spec.nodeName). With --tls-cert the certificate's
    /// name is sent to the collector, which stores alerts under it.
    #[arg(long, value_name = "NAME")]
    hostname: Option<String>,
    /// Print events as one JSON object per line on stdout. `--events` (or
    /// `--events all`): every event of every followed syscall, with the
    /// kernel's rule-driven filter off, so the stream is complete.
    /// `--events process`: only exec, fork and exit, with the filter on,
    /// as the agent runs without it.
    #[arg(long, value_enum, value_name = "WHICH", num_args = 0..=1, default_missing_value = "all")]
    events: Option<EventsOut>,
    /// Rule file or directory (its *.yaml/*.yml files, in name order).
    /// Repeatable. Default: the rules embedded in the agent (rules/default.yaml).
    #[arg(long, value_name = "PATH")]
    rules: Vec<PathBuf>,
    /// Send alerts to this collector: https://HOST:PORT, over mutual TLS
    /// (the collector's certificate must name HOST and be signed by --ca),
    /// or http://127.0.0.1:PORT for a collector serving plaintext on
    /// loopback. Without it, alerts are printed on stdout as JSON lines. An
    /// unreachable collector is retried with backoff; alerts are kept
    /// (bounded) until it acknowledges them.
    #[arg(long, value_name = "URL")]
    collector: Option<String>,
    /// This agent's certificate (PEM), issued with `vigil-collector pki
    /// issue DIR --agent HOST`: the host every alert is stored under.
    #[arg(long, value_name = "FILE", requires_all = ["tls_key", "ca", "collector"])]
    tls_cert: Option<PathBuf>,
    /// This agent's private key (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// The CA that signed the collector's certificate (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    ca: Option<PathBuf>,
    /// Directory where alerts wait until the collector acknowledges them
    /// (written and flushed before an alert counts as sent), so a restart,
    /// SIGKILL or reboot during an outage loses nothing; sent first at the
    /// next start. One agent per directory.
    #[arg(long, value_name = "DIR", default_value = "/var/lib/vigil/spool")]
    spool_dir: PathBuf,
    /// Most bytes the spool holds (K, M and G suffixes). When full, the
    /// oldest alerts go, and an "Alerts dropped" alert with their count and
    /// time range is delivered in their place.
    #[arg(long, value_name = "BYTES", default_value = "256M", value_parser = parse_bytes)]
    spool_max: u64,
    /// How often the agent reports on itself to the collector (version,
    /// rules, probe programs attached, losses, spool depth, CPU, RSS),
    /// e.g. 15s, 2s, 1m. The collector marks an agent silent when these
    /// stop.
    #[arg(long, value_name = "DURATION", default_value = "15s", value_parser = parse_interval)]
    heartbeat_interval: Duration,
    /// Serve Prometheus metrics on /metrics, and /healthz and /readyz, on
    /// this address (IP:PORT, plain HTTP). Off unless given.
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<std::net::SocketAddr>,
    /// Size of the kernel ring buffer for file, control and network events:
    /// a power of two, multiple of 4 KiB. Accepts K and M suffixes. When it
    /// is full, those events are lost (counted per kind); process events
    /// have a ring of their own.
    #[arg(long, value_name = "BYTES", default_value = "4M", value_parser = parse_size)]
    ring_buffer_size: u32,
    /// Size of the kernel ring buffer for exec, fork and exit events, which
    /// no flood of other events can fill.
    #[arg(long, value_name = "BYTES", default_value = "2M", value_parser = parse_size)]
    process_ring_buffer_size: u32,
    /// Most bytes of exec, fork and exit records held in the agent's memory
    /// while its event loop is behind (a flood of other events on a busy
    /// CPU). A thread of their own empties the process ring into it as soon
    /// as the probe wakes it; only when both are full are process events
    /// lost (counted per kind). An exec record is about 6 KiB. Accepts K, M
    /// and G suffixes; 0: the event loop alone reads the process ring.
    #[arg(long, value_name = "BYTES", default_value = "16M", value_parser = parse_bytes)]
    process_backlog_size: u64,
    /// Bytes of events that wait in a ring buffer before the probe wakes
    /// the agent. Each wake-up costs the traced task an interrupt (several µs
    /// in a VM), so batching them cuts the probe's cost. Events that may
    /// raise an alert (an exec, or a syscall a rule can match) wake the agent
    /// at once, at most once a millisecond per CPU; the agent drains again a
    /// millisecond after any drain that found events, and every
    /// --drain-interval-ms. 0: wake on every event (highest cost).
    #[arg(long, value_name = "BYTES", default_value = "256K", value_parser = parse_wakeup)]
    wakeup_bytes: u32,
    /// Milliseconds between drains of the ring buffers when the probe has
    /// not woken the agent: the longest an event that cannot raise an alert
    /// by itself (a sequence's first step) waits.
    #[arg(long, value_name = "MS", default_value_t = 50, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    drain_interval_ms: u64,
    /// Also follow syscalls this kernel has no syscalls:* tracepoint for
    /// (init_module, finit_module and delete_module on a kernel built
    /// without loadable modules, where they can only fail) through the raw
    /// sys_enter/sys_exit hooks, which run on every syscall of the host
    /// (about +170 ns each on a 2-vCPU VM). Without it those syscalls are not
    /// watched, and the log says so.
    #[arg(long)]
    raw_syscall_hooks: bool,
    /// The running kernel's BTF. Only needed for kernels that ship BTF as a
    /// separate file instead of /sys/kernel/btf/vmlinux.
    #[arg(long, value_name = "PATH", default_value = "/sys/kernel/btf/vmlinux")]
    btf: PathBuf,
    /// Seconds between checks of the loss counters (kernel ring buffer, alert
    /// queue); non-zero losses are logged and, with --events, emitted as
    /// {"type":"lost"} records.
    #[arg(long, value_name = "SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    stats_interval: u64,
    /// Do not report processes running this executable (symlinks followed;
    /// matched by device and inode in the kernel, before any copy).
    /// Repeatable.
    #[arg(long, value_name = "PATH")]
    exclude_exe: Vec<PathBuf>,
    /// Do not report processes in this cgroup v2 (its directory under the
    /// cgroup2 mount, or its numeric id); matched in the kernel. Repeatable.
    #[arg(long, value_name = "PATH|ID")]
    exclude_cgroup: Vec<String>,
    /// Turn on the kernel's BPF run-time statistics while running and log
    /// each probe program's runs and mean ns per run every --stats-interval
    /// (adds ~20 ns per program run while on).
    #[arg(long)]
    bpf_stats: bool,
    /// Seconds to wait at shutdown for the collector to acknowledge queued
    /// alerts; what it has not acknowledged by then stays in the spool.
    #[arg(long, value_name = "SECS", default_value_t = 5)]
    shutdown_grace: u64,
    /// Most processes in the agent's process table, live and exited
    /// together. Over it, exited entries go first, then the oldest live
    /// ones (counted as evictions in the "process table" log line).
    #[arg(long, value_name = "N", default_value_t = 65_536, value_parser = clap::value_parser!(u64).range(64..=16_777_216))]
    process_table_size: u64,
    /// Seconds an exited process stays in the table, so late events and its
    /// children's ancestry still name it.
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    exit_grace: u64,
    /// Most ancestors (parent, grandparent, ...) reported with each event.
    #[arg(long, value_name = "N", default_value_t = 8, value_parser = clap::value_parser!(u64).range(0..=64))]
    max_ancestry: u64,
    /// Executables larger than this are not hashed (SHA-256 is computed off
    /// the event path and cached by device, inode and change time).
    /// Accepts K and M suffixes; 0 turns hashing off.
    #[arg(long, value_name = "BYTES", default_value = "128M", value_parser = parse_bytes)]
    hash_max_size: u64,
    /// Milliseconds an event may wait for a lookup that is not cached yet
    /// (a new container's cgroup, a container's user names, a new
    /// executable's hash) before it leaves without it.
    #[arg(long, value_name = "MS", default_value_t = 200, value_parser = clap::value_parser!(u64).range(0..=10_000))]
    enrich_wait_ms: u64,
    /// Where the kubelet keeps its container log links
    /// (<pod>_<namespace>_<container>-<id>.log), the source of Kubernetes
    /// pod, namespace and container names. Absent on hosts without a kubelet.
    #[arg(long, value_name = "DIR", default_value = "/var/log/containers")]
    k8s_log_dir: PathBuf,
    /// Root under which container runtimes keep their state files, the
    /// source of container images: containerd's
    /// run/containerd/io.containerd.runtime.v2.task, cri-o's
    /// run/containers/storage, docker's var/lib/docker/containers. `/` on
    /// the host; the host's root as mounted into an agent's container.
    #[arg(long, value_name = "DIR", default_value = "/")]
    container_runtime_root: PathBuf,
    /// What to do with rules that use Falco fields or event types Vigil
    /// has no data for (container.image.repository, proc.vpid, ...):
    /// `error` refuses to start and names each use; `skip` leaves those
    /// rules out; `absent` loads them with the field absent on every event,
    /// so its tests are false (as in Falco when a field cannot be read)
    /// and outputs print <NA>. Skipped and affected rules are logged.
    #[arg(long, value_enum, value_name = "MODE", default_value = "error")]
    unsupported: Unsupported,
    /// Seconds between checks of the --rules files for changes; a change
    /// reloads them, as SIGHUP does. The new rules replace the old only if
    /// they all compile; otherwise the error is logged and the old rules
    /// stay. 0: reload only on SIGHUP.
    #[arg(long, value_name = "SECS", default_value_t = 2)]
    rules_poll: u64,
    /// What activity goes to the collector beside the alerts, for
    /// investigation (`vigil-collector query timeline|tree|pivot`): a comma
    /// list of exec (every program started, with argv, cwd, user, parent,
    /// container, executable hash), fork (processes created without a new
    /// program), exit, connect, accept, listen (TCP/UDP addresses and
    /// ports) and dns (names queried); `all`, or `none` to send only
    /// alerts. Only with --collector; it travels on the alerts' spooled,
    /// authenticated path, behind the alerts.
    #[arg(long, value_name = "KINDS", default_value = vigil_agent::activity::DEFAULT_KINDS)]
    activity: vigil_agent::activity::Kinds,
    /// A Falco condition; activity for which it holds is not sent (noisy
    /// programs: 'proc.name in (make, cc1, ld)'). Repeat for more; each
    /// is checked against every shipped event, so keep them few. Alert
    /// context is not filtered.
    #[arg(long, value_name = "CONDITION")]
    activity_exclude: Vec<String>,
    /// Most activity events sent per second from this host, in bursts of
    /// up to one second's worth; what the cap leaves out is counted
    /// (heartbeat and /metrics place "activity_rate"). 0: no cap. The
    /// default keeps a busy build host to a few hundred KiB/s.
    #[arg(long, value_name = "N", default_value_t = 1000)]
    activity_rate: u32,
    /// Events kept per process (the last ones) for alert context: an alert
    /// carries the recent events of its process and of its ancestors (at
    /// most 64). 0: alerts carry no context.
    #[arg(long, value_name = "N", default_value_t = 16, value_parser = clap::value_parser!(u64).range(0..=256))]
    activity_context: u64,
    /// Most processes whose recent events are kept for alert context; the
    /// least recently active are forgotten first.
    #[arg(long, value_name = "N", default_value_t = 4096, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    activity_context_processes: u64,
    /// Most bytes of activity waiting for the collector's acknowledgement
    /// (in DIR/activity of --spool-dir; K, M, G suffixes). When full, the
    /// oldest activity goes (counted as "activity_spool_full"); alerts
    /// have their own spool and are never pushed out by activity.
    #[arg(long, value_name = "BYTES", default_value = "64M", value_parser = parse_bytes)]
    activity_spool_max: u64,
}

#[derive(Subcommand, Debug)]
enum RulesCommand {
    /// Check rule files and directories: prints every error as
    /// FILE:LINE:COL: message and exits 1 if there is any.
    ///
    /// Examples:
    ///   vigil-agent rules check /etc/vigil/rules
    ///   vigil-agent rules check --unsupported skip falco_rules.yaml
    #[command(verbatim_doc_comment)]
    Check {
        #[arg(required = true, value_name = "PATH")]
        paths: Vec<PathBuf>,
        /// Rules using Falco fields or events Vigil lacks: `error`, `skip`
        /// (report them as skipped, with the reason) or `absent` (load
        /// them with those fields never present). See `run --help`.
        #[arg(long, value_enum, value_name = "MODE", default_value = "error")]
        unsupported: Unsupported,
    },
    /// Replay recorded events through rules and print the alerts.
    ///
    /// The events are the JSON lines `vigil-agent run --events` prints
    /// (alert and loss lines in the file are ignored). Exits 1 when
    /// --baseline finds an alert at --fail-on or above, 0 otherwise.
    ///
    /// Examples:
    ///   vigil-agent rules test --events attack.jsonl
    ///   vigil-agent rules test --rules my-rules/ --baseline benign.jsonl
    #[command(verbatim_doc_comment)]
    Test {
        /// Rule file or directory; repeatable. Default: the embedded rules.
        #[arg(long, value_name = "PATH")]
        rules: Vec<PathBuf>,
        /// Recorded events to replay; prints each alert.
        #[arg(long, value_name = "FILE.jsonl", required_unless_present = "baseline")]
        events: Option<PathBuf>,
        /// A benign recording: any alert at --fail-on or above is a false
        /// positive, and the command exits 1.
        #[arg(long, value_name = "FILE.jsonl")]
        baseline: Option<PathBuf>,
        /// Lowest priority that fails a --baseline run.
        #[arg(long, value_name = "PRIORITY", default_value = "warning", value_parser = parse_priority)]
        fail_on: vigil_proto::v1::Severity,
        /// Print alerts as JSON lines instead of text.
        #[arg(long)]
        json: bool,
        /// As for `rules check`.
        #[arg(long, value_enum, value_name = "MODE", default_value = "error")]
        unsupported: Unsupported,
    },
    /// List every field a condition or output can use, with its type.
    Fields,
}

fn parse_priority(s: &str) -> Result<vigil_proto::v1::Severity, String> {
    vigil_proto::v1::Severity::parse_name(s)
        .ok_or_else(|| format!("unknown priority `{s}`; expected debug, informational, notice, warning, error, critical, alert or emergency"))
}

/// `N`, `NK` or `NM` bytes.
fn parse_interval(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| format!("`{s}`: {e} (e.g. 15s, 2s, 1m)"))?;
    if d < Duration::from_millis(100) || d > Duration::from_secs(3600) {
        return Err(format!("`{s}`: between 100ms and 1h"));
    }
    Ok(d)
}

fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim().to_ascii_uppercase();
    let (num, mult) = match t.as_bytes().last() {
        Some(b'G') => (&t[..t.len() - 1], 1u64 << 30),
        Some(b'M') => (&t[..t.len() - 1], 1u64 << 20),
        Some(b'K') => (&t[..t.len() - 1], 1u64 << 10),
        _ => (t.as_str(), 1),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a size (e.g. 8M, 512K, 1048576)"))?;
    n.checked_mul(mult)
        .ok_or_else(|| format!("`{s}` is too large"))
}

/// A ring buffer size: a power of two, a multiple of 4 KiB, at most 1 GiB.
fn parse_size(s: &str) -> Result<u32, String> {
    let bytes = parse_bytes(s)?;
    if bytes == 0 || !bytes.is_power_of_two() || !bytes.is_multiple_of(4096) || bytes > 1 << 30 {
        return Err(format!(
            "{bytes} bytes: must be a power of two, a multiple of 4096 and at most 1G"
        ));
    }
    Ok(bytes as u32)
}

fn parse_wakeup(s: &str) -> Result<u32, String> {
    u32::try_from(parse_bytes(s)?).map_err(|_| format!("`{s}` is too large"))
}

fn init_logging(format: LogFormat, level: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    // Under systemd, journald stamps each line itself.
    let journald = std::env::var_os("JOURNAL_STREAM").is_some();
    match (format, journald) {
        (LogFormat::Text, false) => builder.init(),
        (LogFormat::Text, true) => builder.without_time().init(),
        (LogFormat::Json, _) => builder.json().init(),
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// The settings file of `run` when no --config is given.
const DEFAULT_CONFIG: &str = "/etc/vigil/agent.yaml";

/// The commands that read the settings file.
fn configurable() -> [(&'static str, &'static Path); 2] {
    [
        ("run", Path::new(DEFAULT_CONFIG)),
        ("doctor", Path::new(DEFAULT_CONFIG)),
    ]
}

fn main() -> ExitCode {
    let argv: Vec<OsString> = std::env::args_os().collect();
    let parsed = vigil_config::parse_or_exit::<Cli>("vigil-agent", &argv, &configurable());
    let cli = parsed.cli;
    init_logging(cli.log_format, &cli.log_level);
    if let Some((file, applied)) = &parsed.file {
        tracing::info!(
            file = %file.path.display(),
            keys = file.entries.len(),
            overridden_by_flags = ?applied.overridden,
            "settings file read"
        );
    }
    let result = match cli.command {
        Command::Run(args) => run_agent(*args, reconfigure(argv, parsed.file.map(|f| f.1))),
        Command::Rules(RulesCommand::Check { paths, unsupported }) => {
            check_rules(&paths, unsupported)
        }
        Command::Rules(RulesCommand::Test {
            rules,
            events,
            baseline,
            fail_on,
            json,
            unsupported,
        }) => test_rules(&rules, events, baseline, fail_on, json, unsupported),
        Command::Doctor(args) => doctor(*args),
        Command::Rules(RulesCommand::Fields) => {
            list_fields();
            Ok(ExitCode::SUCCESS)
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("vigil-agent: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// What SIGHUP does with the settings file: reads it again with the same
/// command line, and returns the new `rules` and `unsupported`; each other
/// changed key is logged as needing a restart. A file that no longer
/// parses changes nothing, and says why.
fn reconfigure(argv: Vec<OsString>, applied: Option<vigil_config::Applied>) -> run::Reconfigure {
    const AT_ONCE: &[&str] = &["rules", "unsupported"];
    let last = std::sync::Mutex::new(applied.unwrap_or_default());
    run::Reconfigure(std::sync::Arc::new(move || {
        let parsed = match vigil_config::parse::<Cli>(&argv, &configurable()) {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(error = %vigil_config_error(&e), "settings not reloaded; the running ones stay");
                return None;
            }
        };
        let Command::Run(args) = parsed.cli.command else {
            return None;
        };
        let new = parsed.file.map(|f| f.1).unwrap_or_default();
        let mut last = last.lock().expect("settings lock");
        for key in vigil_config::changed_keys(&last, &new) {
            if new.overridden.contains(&key) {
                tracing::info!(
                    key,
                    "changed in the settings file, but the command line sets it"
                );
            } else if AT_ONCE.contains(&key.as_str()) {
                tracing::info!(key, "setting changed: applied");
            } else {
                tracing::warn!(key, "setting changed: restart vigil-agent to apply it");
            }
        }
        *last = new;
        Some(run::RuleSettings {
            rules: args.rules,
            unsupported: args.unsupported,
        })
    }))
}

fn vigil_config_error(e: &vigil_config::ParseError) -> String {
    match e {
        vigil_config::ParseError::Clap(e) => vigil_config::clap_message(e),
        e => e.to_string(),
    }
}

fn run_agent(args: RunArgs, reconfigure: run::Reconfigure) -> anyhow::Result<ExitCode> {
    if let Some(name) = &args.hostname {
        vigil_agent::host::set_hostname(name);
    }
    let opts = RunOptions {
        events: args.events.unwrap_or(EventsOut::None),
        rules: args.rules,
        collector: args.collector,
        tls: match (args.tls_cert, args.tls_key, args.ca) {
            (Some(cert), Some(key), Some(ca)) => {
                Some(vigil_proto::tls::ClientTls { ca, cert, key })
            }
            _ => None,
        },
        spool_dir: args.spool_dir,
        spool_max: args.spool_max,
        heartbeat_interval: args.heartbeat_interval,
        metrics_listen: args.metrics_listen,
        ring_bytes: args.ring_buffer_size,
        process_ring_bytes: args.process_ring_buffer_size,
        process_backlog_bytes: usize::try_from(args.process_backlog_size).unwrap_or(usize::MAX),
        raw_syscall_hooks: args.raw_syscall_hooks,
        btf_path: args.btf,
        bpf_stats: args.bpf_stats,
        exclude_exes: args.exclude_exe,
        exclude_cgroups: args.exclude_cgroup,
        wakeup_bytes: args.wakeup_bytes,
        drain_interval: Duration::from_millis(args.drain_interval_ms),
        stats_interval: Duration::from_secs(args.stats_interval),
        shutdown_grace: Duration::from_secs(args.shutdown_grace),
        enrich: EnrichConfig {
            table: TableConfig {
                max_entries: args.process_table_size as usize,
                exit_grace: Duration::from_secs(args.exit_grace),
                max_ancestry: args.max_ancestry as usize,
            },
            hash_max_bytes: args.hash_max_size,
            wait: Duration::from_millis(args.enrich_wait_ms),
            k8s_log_dir: Some(args.k8s_log_dir),
            runtime_root: args.container_runtime_root,
            ..EnrichConfig::default()
        },
        unsupported: args.unsupported,
        rules_poll: Duration::from_secs(args.rules_poll),
        activity: vigil_agent::activity::ActivityConfig {
            kinds: args.activity,
            exclude: args.activity_exclude,
            rate: args.activity_rate,
            context_events: args.activity_context as usize,
            context_processes: args.activity_context_processes as usize,
        },
        activity_spool_max: args.activity_spool_max,
        reconfigure: Some(reconfigure),
    };
    // One thread: the event loop is one task, and the forwarder's network
    // work is small; a multi-threaded runtime only added cross-thread
    // wake-ups per drain. Enrichment has threads of its own.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(run::run(opts, shutdown_signal()))?;
    Ok(ExitCode::SUCCESS)
}

fn doctor(args: DoctorArgs) -> anyhow::Result<ExitCode> {
    use vigil_agent::doctor;
    let run = args.run;
    let opts = doctor::DoctorOptions {
        btf: run.btf,
        container_runtime_root: run.container_runtime_root,
        k8s_log_dir: run.k8s_log_dir,
        spool_dir: run.spool_dir,
        collector: run.collector,
        tls: match (run.tls_cert, run.tls_key, run.ca) {
            (Some(cert), Some(key), Some(ca)) => {
                Some(vigil_proto::tls::ClientTls { ca, cert, key })
            }
            _ => None,
        },
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let checks = rt.block_on(doctor::examine(&opts));
    if args.json {
        println!("{}", doctor::render_json(&checks));
    } else {
        print!("{}", doctor::render_text(&checks));
    }
    Ok(if doctor::can_run(&checks) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn check_rules(paths: &[PathBuf], unsupported: Unsupported) -> anyhow::Result<ExitCode> {
    match RuleSet::load(paths, LoadOptions { unsupported }) {
        Ok(rules) => {
            for s in &rules.skipped {
                println!("skipped: rule `{}`: {}", s.rule, s.reason);
            }
            for s in &rules.partial {
                println!("absent fields: rule `{}`: {}", s.rule, s.reason);
            }
            println!(
                "ok: {} rules compiled ({} with absent fields), {} skipped, from {} files",
                rules.len(),
                rules.partial.len(),
                rules.skipped.len(),
                rules.sources.len()
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(errs) => {
            for e in &errs {
                eprintln!("{e}");
            }
            eprintln!("{} error(s)", errs.len());
            Ok(ExitCode::FAILURE)
        }
    }
}

fn test_rules(
    rules: &[PathBuf],
    events: Option<PathBuf>,
    baseline: Option<PathBuf>,
    fail_on: vigil_proto::v1::Severity,
    json: bool,
    unsupported: Unsupported,
) -> anyhow::Result<ExitCode> {
    let mut set = run::load_rules(rules, LoadOptions { unsupported })?;
    let mut failed = false;
    for (path, is_baseline) in [(events, false), (baseline, true)] {
        let Some(path) = path else { continue };
        let r = vigil_agent::replay::replay_file(&mut set, &path)?;
        let mut bad = 0;
        for (line, a) in &r.alerts {
            let severe = a.severity >= fail_on as i32;
            if is_baseline && severe {
                bad += 1;
            }
            if json {
                let mut v = vigil_proto::json::alert_json(a);
                v["line"] = (*line).into();
                println!("{v}");
            } else {
                println!(
                    "{}:{line}: {} [{}] {}",
                    path.display(),
                    a.rule,
                    a.severity().name(),
                    a.output
                );
            }
        }
        eprintln!(
            "{}: {} events, {} alerts{}",
            path.display(),
            r.events,
            r.alerts.len(),
            if is_baseline {
                format!(", {bad} at {} or above (false positives)", fail_on.name())
            } else {
                String::new()
            }
        );
        failed |= bad > 0;
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn list_fields() {
    use vigil_agent::rules::fields::{ArgKind, FIELDS};
    for f in FIELDS {
        let name = match f.arg {
            ArgKind::None => f.name.to_string(),
            ArgKind::Index => format!("{}[N]", f.name),
            ArgKind::Name => format!("{}.NAME", f.name),
            ArgKind::Key => format!("{}[KEY]", f.name),
        };
        println!("{name:<22} {:<10} {}", f.ty.name(), f.desc);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("8M"), Ok(8 << 20));
        assert_eq!(parse_size("4k"), Ok(4096));
        assert_eq!(parse_size("65536"), Ok(65536));
        assert!(parse_size("3M").is_err());
        assert!(parse_size("1000").is_err());
        assert!(parse_size("big").unwrap_err().contains("`big`"));
    }

    #[test]
    fn cli_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn every_settings_key_is_documented() {
        use clap::CommandFactory;
        let doc = include_str!("../../docs/configuration.md");
        let mut cmd = Cli::command();
        cmd.build();
        let sub = cmd.find_subcommand("run").unwrap();
        let missing = vigil_config::undocumented_keys(sub, doc);
        assert!(
            missing.is_empty(),
            "docs/configuration.md lacks {missing:?}"
        );
    }
}
