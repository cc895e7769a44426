//! `vigil-agent run`: the event loop from ring buffer to alerts.
use std::{
    collections::HashMap,
    future::Future,
    io::{self, Write},
    path::PathBuf,
    sync::{atomic::Ordering, Arc},
    time::{Duration, Instant},
};

use agent_ebpf::EventKind;
use anyhow::Context as _;
use aya::maps::{MapData, RingBuf};
use serde_json::json;
use tokio::io::{unix::AsyncFd, Interest};
use vigil_proto::json::alert_json;

use crate::{
    activity::{Activity, ActivityConfig},
    alert,
    enrich::{EnrichConfig, Enricher},
    event,
    forward::{Forwarder, ForwarderConfig},
    heartbeat::{self, Heartbeats, Reading},
    host,
    kernel::{interest::KernelInterest, syscalls::Syscall},
    metrics::{AgentMetrics, Snapshot},
    probe::{Probe, ProbeOptions, ProcessRing, Rings},
    proctree::ProcessTable,
    rules::{interest::kernel_interest, Hit, LoadOptions, Matcher, RuleSet},
    util::{clock::BootClock, procid::ProcIds},
};

/// The rule settings a SIGHUP may change: the settings file's `rules`
/// and `unsupported`.
#[derive(Debug, Clone)]
pub struct RuleSettings {
    pub rules: Vec<PathBuf>,
    pub unsupported: crate::rules::Unsupported,
}

/// Rereads the agent's settings on SIGHUP (the binary's settings file):
/// the rule settings to use from now on, or `None` to keep the current
/// ones (a file with an error, which it logs). It also logs each changed
/// setting that needs a restart.
#[derive(Clone)]
pub struct Reconfigure(pub Arc<dyn Fn() -> Option<RuleSettings> + Send + Sync>);

impl std::fmt::Debug for Reconfigure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Reconfigure")
    }
}

#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Which events to print as JSON lines on stdout.
    pub events: EventsOut,
    /// Rule files or directories; empty: the embedded default rules.
    pub rules: Vec<PathBuf>,
    /// Collector URL; None: alerts go to stdout as JSON lines.
    pub collector: Option<String>,
    /// Certificate, key and the collector's CA, for an https:// collector.
    pub tls: Option<vigil_proto::tls::ClientTls>,
    /// Where alerts wait for the collector's acknowledgement, and its bound.
    pub spool_dir: PathBuf,
    pub spool_max: u64,
    /// How often the agent reports on itself to the collector.
    pub heartbeat_interval: Duration,
    /// Where to serve `/metrics`, `/healthz`, `/readyz`; None: nowhere.
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Sizes of the file/control/network ring and of the process ring.
    pub ring_bytes: u32,
    pub process_ring_bytes: u32,
    /// Most bytes of process records held in memory while the event loop
    /// is behind.
    pub process_backlog_bytes: usize,
    /// Follow syscalls without a `syscalls:*` tracepoint on this kernel
    /// through hooks that run on every syscall.
    pub raw_syscall_hooks: bool,
    /// Kernel BTF file.
    pub btf_path: PathBuf,
    /// How often loss counters are checked and reported.
    pub stats_interval: Duration,
    /// Bytes waiting in a ring before the probe wakes the agent (0: every
    /// record); records that may raise an alert wake it at once (at most
    /// once a millisecond per CPU). The agent also drains every
    /// `drain_interval`, and a millisecond after any drain that found
    /// records.
    pub wakeup_bytes: u32,
    pub drain_interval: Duration,
    /// Executables and cgroups whose processes the probe skips.
    pub exclude_exes: Vec<PathBuf>,
    pub exclude_cgroups: Vec<String>,
    /// Enable kernel BPF run-time statistics and log each program's cost.
    pub bpf_stats: bool,
    /// How long to wait at shutdown for the collector to ack queued alerts.
    pub shutdown_grace: Duration,
    /// Process table and enrichment settings.
    pub enrich: EnrichConfig,
    /// What to do with rules that use Falco fields Vigil lacks.
    pub unsupported: crate::rules::Unsupported,
    /// How often rule files are checked for changes (0: only on SIGHUP).
    pub rules_poll: Duration,
    /// What activity goes to the collector beside the alerts, and the
    /// bound of its spool.
    pub activity: ActivityConfig,
    pub activity_spool_max: u64,
    /// Called on SIGHUP before the rules reload; `None`: the rules reload
    /// from the same paths.
    pub reconfigure: Option<Reconfigure>,
}

/// Which events `run` prints on stdout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum EventsOut {
    /// None: only alerts (without a collector).
    #[value(skip)]
    None,
    /// Every event, the kernel's filter off.
    All,
    /// exec, fork and exit only, the kernel's filter on.
    Process,
}

impl EventsOut {
    fn prints(self, ev: &event::Event) -> bool {
        match self {
            EventsOut::None => false,
            EventsOut::All => true,
            EventsOut::Process => matches!(
                ev.body,
                event::EventBody::Exec(_) | event::EventBody::Fork(_) | event::EventBody::Exit(_)
            ),
        }
    }
}

/// What the probe must report: what the rules can match, and with a
/// collector, what the shipped activity kinds need.
fn interest(rules: &RuleSet, opts: &RunOptions) -> KernelInterest {
    let mut i = kernel_interest(rules, opts.events == EventsOut::All);
    if opts.collector.is_some() {
        for name in opts.activity.syscalls() {
            if let Some(s) = Syscall::by_name(name) {
                i.syscalls.entry(s).or_default();
            }
        }
    }
    i
}

/// Loads the rules named in `paths`, or the embedded default set.
pub fn load_rules(paths: &[PathBuf], opts: LoadOptions) -> anyhow::Result<RuleSet> {
    let set = RuleSet::load(paths, opts).map_err(|errs| match errs.as_slice() {
        [one] => anyhow::anyhow!("{one}"),
        _ => anyhow::anyhow!(
            "{} problems in the rules:\n{}",
            errs.len(),
            crate::rules::format_errors(&errs)
        ),
    })?;
    for s in &set.skipped {
        tracing::warn!(rule = %s.rule, reason = %s.reason, "rule skipped");
    }
    for s in &set.partial {
        tracing::warn!(rule = %s.rule, reason = %s.reason, "rule loaded with fields Vigil lacks taken as absent");
    }
    Ok(set)
}

/// What identifies the current contents of the rule files: their paths,
/// sizes and modification times.
fn rules_fingerprint(paths: &[PathBuf]) -> Vec<(PathBuf, u64, Option<std::time::SystemTime>)> {
    let mut out = Vec::new();
    for p in paths {
        let files = crate::rules::load::rule_files(p).unwrap_or_else(|_| vec![p.clone()]);
        for f in files {
            let m = std::fs::metadata(&f).ok();
            out.push((
                f,
                m.as_ref().map_or(0, |m| m.len()),
                m.and_then(|m| m.modified().ok()),
            ));
        }
    }
    out
}

/// Compiles the rules again off the event loop; the result is sent to the
/// loop, which swaps it in only if it compiled.
fn start_reload(
    paths: Vec<PathBuf>,
    opts: LoadOptions,
    why: &'static str,
    tx: tokio::sync::mpsc::Sender<anyhow::Result<RuleSet>>,
) {
    tracing::info!(reason = why, "reloading rules");
    tokio::task::spawn_blocking(move || {
        let _ = tx.blocking_send(load_rules(&paths, opts));
    });
}

/// Where alerts go.
enum Sink {
    /// JSON lines, each alert naming this host (logs gathered from many
    /// hosts, a DaemonSet's pods, must say where an alert came from).
    Stdout(Box<vigil_proto::v1::HostInfo>),
    Collector(Forwarder),
}

/// Counters of everything the agent may lose, reported periodically.
#[derive(Default)]
struct Loss {
    kernel: Vec<(EventKind, u64)>,
    /// The probe's own error counters when last reported.
    probe: Vec<(agent_ebpf::ProbeCounter, u64)>,
    /// Events decoded so far; numbers them (`evt.num`).
    events_seen: u64,
    /// Events decoded, by kind.
    per_kind: [u64; 8],
    decode_errors: u64,
    reported_decode_errors: u64,
    reported_queue_full: u64,
    /// Spool drops (full, write error) when last logged.
    reported_spool: (u64, u64),
    reported_table: crate::proctree::TableCounters,
    reported_enrich: crate::enrich::EnrichCounters,
}

/// Runs until `shutdown` resolves.
pub async fn run(opts: RunOptions, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let mut load_opts = LoadOptions {
        unsupported: opts.unsupported,
    };
    let mut rule_paths = opts.rules.clone();
    let rules = load_rules(&opts.rules, load_opts)?;
    let exclusions =
        crate::kernel::exclusions::Exclusions::resolve(&opts.exclude_exes, &opts.exclude_cgroups)?;
    tracing::info!(rules = rules.len(), sources = ?rules.sources, "rules loaded");
    // Checked before the probe loads; the forwarder's thread starts after
    // the capabilities are dropped.
    let forward = match &opts.collector {
        Some(url) => {
            let mut cfg = ForwarderConfig::new(url.clone(), opts.spool_dir.clone());
            cfg.tls = opts.tls.clone();
            cfg.spool_max = opts.spool_max;
            cfg.activity_spool_max = opts.activity_spool_max;
            Some((cfg, host::identity(opts.tls.as_ref())?))
        }
        None => None,
    };
    let ids = {
        let h = forward
            .as_ref()
            .map_or_else(host::detect, |(_, h)| h.clone());
        ProcIds::new(&h.machine_id, &h.hostname, &host::boot_id())
    };
    // Activity goes only to a collector; alerts on stdout carry no context.
    let activity = match &forward {
        Some(_) if !opts.activity.kinds.is_empty() || opts.activity.context_events > 0 => Some(
            Activity::new(&opts.activity, ids.clone())
                .map_err(|e| anyhow::anyhow!("--activity-exclude: {e}"))?,
        ),
        _ => None,
    };
    if forward.is_some() {
        tracing::info!(
            kinds = %opts.activity.kinds,
            rate_per_s = opts.activity.rate,
            exclusions = opts.activity.exclude.len(),
            context_events = opts.activity.context_events,
            "activity streamed to the collector"
        );
    }
    let mut probe = Probe::load(&ProbeOptions {
        ring_bytes: opts.ring_bytes,
        process_ring_bytes: opts.process_ring_bytes,
        raw_syscall_hooks: opts.raw_syscall_hooks,
        btf_path: opts.btf_path.clone(),
        wakeup_bytes: opts.wakeup_bytes,
        exclusions,
    })?;
    probe.apply_interest(&interest(&rules, &opts))?;
    let _stats_fd = if opts.bpf_stats {
        Some(
            crate::probe::enable_run_time_stats()
                .context("cannot enable BPF run-time statistics")?,
        )
    } else {
        None
    };
    // Bound before the capabilities go (a port below 1024 needs one).
    let metrics_listener = opts
        .metrics_listen
        .map(|addr| {
            std::net::TcpListener::bind(addr)
                .with_context(|| format!("cannot listen for metrics on {addr}"))
        })
        .transpose()?;
    // Every thread the agent has is started after this.
    match crate::util::caps::drop_unneeded() {
        Ok(d) => tracing::info!(
            kept = %d.kept.join(", "),
            bounding_set = d.bounding,
            "capabilities dropped: only those needed after start-up are kept (docs/security.md)"
        ),
        Err(e) => tracing::warn!(
            error = %e,
            "capabilities could not be dropped; the agent keeps all it started with"
        ),
    }
    let mut heartbeats = None;
    let mut sink = match forward {
        Some((cfg, host)) => {
            heartbeats = Some(Heartbeats::new(host.clone(), opts.heartbeat_interval));
            Sink::Collector(Forwarder::start(cfg, host)?)
        }
        None => Sink::Stdout(Box::new(host::detect())),
    };
    // Bootstrapped after the probe is attached, so a process started in
    // between is seen by one or the other.
    let mut enricher = Enricher::start(opts.enrich.clone());
    let answered = enricher.answered();
    let rings = probe.take_rings()?;
    let mut rings = PolledRings::new(rings, opts.process_backlog_bytes)?;
    match crate::util::sched::request_short_slice() {
        Ok(()) => tracing::debug!(
            slice_ns = crate::util::sched::SLICE_NS,
            "short scheduler slice granted"
        ),
        Err(e) => tracing::info!(
            error = %e,
            "no short scheduler slice (Linux 6.12+): an alert may wait for a busy CPU's time slice"
        ),
    }
    // Start-up (BTF, the probe's object, /proc) left tens of MiB free.
    crate::util::memory::release();
    let mut last_release = Instant::now();
    tracing::info!(events_to_stdout = ?opts.events, collector = ?opts.collector, "agent running");

    let mut loss = Loss::default();
    let mut tick = tokio::time::interval(opts.stats_interval);
    tick.tick().await;
    let mut drain_tick = tokio::time::interval(opts.drain_interval);
    drain_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    // A drain that found records is followed by another a millisecond
    // later: what a rate-limited wake-up held back is picked up then.
    let follow_up = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(follow_up);
    let mut follow_up_armed = false;
    tokio::pin!(shutdown);
    let stdout = io::stdout();
    let mut out_ctx = Output {
        opts: &opts,
        rules,
        sink: &mut sink,
        hits: Vec::new(),
        reported: Default::default(),
        raised: HashMap::new(),
        ids,
        activity,
        pending_activity: Vec::new(),
        last_activity_flush: Instant::now(),
    };
    let metrics = Arc::new(AgentMetrics::default());
    if let Sink::Collector(f) = &*out_ctx.sink {
        *metrics.delivery.lock().expect("delivery lock") = Some(f.counters.clone());
    }
    let (_metrics_stop, metrics_stopped) = tokio::sync::oneshot::channel::<()>();
    if let Some(l) = metrics_listener {
        l.set_nonblocking(true)?;
        let l = tokio::net::TcpListener::from_std(l)?;
        tracing::info!(metrics = %l.local_addr()?, "metrics on /metrics, /healthz, /readyz");
        tokio::spawn(vigil_metrics::serve(l, metrics.clone(), async {
            let _ = metrics_stopped.await;
        }));
    }
    let mut metrics_tick = tokio::time::interval(Duration::from_secs(1));
    metrics_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .context("cannot listen for SIGHUP")?;
    let (reload_tx, mut reload_rx) = tokio::sync::mpsc::channel(1);
    let mut fingerprint = rules_fingerprint(&rule_paths);
    let mut poll = tokio::time::interval(if opts.rules_poll.is_zero() {
        Duration::from_secs(3600)
    } else {
        opts.rules_poll
    });
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut heartbeat_tick = tokio::time::interval(opts.heartbeat_interval);
    heartbeat_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    // Between heartbeats the agent checks its own probe, and reports a
    // program gone at once.
    let mut probe_check = tokio::time::interval(PROBE_CHECK);
    probe_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut findings = ProbeFindings::default();
    loop {
        tokio::select! {
            _ = metrics_tick.tick(), if opts.metrics_listen.is_some() => {
                metrics.publish(snapshot(&probe, &out_ctx, &enricher, &loss));
            }
            _ = heartbeat_tick.tick(), if heartbeats.is_some() => {
                send_heartbeat(heartbeats.as_mut(), &probe, &out_ctx, &enricher, &loss);
            }
            _ = probe_check.tick() => {
                let now = ProbeFindings::of(&probe);
                if now.report_change(&findings) {
                    send_heartbeat(heartbeats.as_mut(), &probe, &out_ctx, &enricher, &loss);
                }
                findings = now;
            }
            _ = &mut shutdown => break,
            _ = hup.recv() => {
                if let Some(new) = opts.reconfigure.as_ref().and_then(|r| (r.0)()) {
                    rule_paths = new.rules;
                    load_opts.unsupported = new.unsupported;
                    fingerprint = rules_fingerprint(&rule_paths);
                }
                start_reload(rule_paths.clone(), load_opts, "SIGHUP", reload_tx.clone());
            }
            _ = poll.tick(), if !opts.rules_poll.is_zero() && !rule_paths.is_empty() => {
                let now = rules_fingerprint(&rule_paths);
                if now != fingerprint {
                    fingerprint = now;
                    start_reload(rule_paths.clone(), load_opts, "rule files changed", reload_tx.clone());
                }
            }
            Some(new) = reload_rx.recv() => match new {
                Ok(new) => {
                    tracing::info!(rules = new.len(), sources = ?new.sources, "rules reloaded");
                    let interest = interest(&new, &opts);
                    out_ctx.swap_rules(new, &stdout);
                    if let Err(e) = probe.apply_interest(&interest) {
                        tracing::error!(error = %e, "the probe's filters could not follow the new rules");
                    }
                }
                Err(e) => tracing::error!(error = format!("{e:#}"), "rules not reloaded; the previous rules stay in force"),
            },
            ready = rings.readable() => {
                ready.context("ring buffer poll failed")?;
                if ingest(&mut rings, &mut enricher, &mut loss) > 0 {
                    follow_up.as_mut().reset(tokio::time::Instant::now() + FOLLOW_UP);
                    follow_up_armed = true;
                }
                out_ctx.emit(&mut enricher, &stdout);
            }
            _ = &mut follow_up, if follow_up_armed => {
                follow_up_armed = false;
                if ingest(&mut rings, &mut enricher, &mut loss) > 0 {
                    follow_up.as_mut().reset(tokio::time::Instant::now() + FOLLOW_UP);
                    follow_up_armed = true;
                } else if last_release.elapsed() >= RELEASE_GAP {
                    // A burst ended: what it allocated goes back.
                    rings.shrink();
                    crate::util::memory::release();
                    last_release = Instant::now();
                }
                out_ctx.emit(&mut enricher, &stdout);
            }
            _ = answered.notified() => {
                out_ctx.emit(&mut enricher, &stdout);
            }
            _ = drain_tick.tick() => {
                ingest(&mut rings, &mut enricher, &mut loss);
                out_ctx.emit(&mut enricher, &stdout);
            }
            _ = tick.tick() => {
                enricher.tick(Instant::now());
                out_ctx.tick(&stdout);
                report_loss(&probe, out_ctx.sink, &opts, &mut loss);
                report_enrichment(&enricher, &mut loss);
                if opts.bpf_stats {
                    report_program_cost(&probe);
                }
            }
        }
    }
    tracing::info!("shutting down");
    // Events already in the ring are still processed, and waiting ones get
    // a last short chance at their lookups.
    while ingest(&mut rings, &mut enricher, &mut loss) > 0 {
        out_ctx.emit(&mut enricher, &stdout);
    }
    out_ctx.emit(&mut enricher, &stdout);
    let until = Instant::now() + opts.enrich.wait;
    while enricher.waiting() > 0 && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(10)).await;
        out_ctx.emit(&mut enricher, &stdout);
    }
    enricher.flush();
    out_ctx.emit(&mut enricher, &stdout);
    out_ctx.close_windows(&stdout);
    out_ctx.flush_activity();
    report_loss(&probe, &sink, &opts, &mut loss);
    drop(probe);
    if let Sink::Collector(f) = sink {
        // What the collector has not acknowledged stays in the spool for
        // the next start (logged by the forwarder): nothing is lost.
        f.shutdown(opts.shutdown_grace).await;
    }
    Ok(())
}

/// How often the agent checks that its probe programs are still attached.
const PROBE_CHECK: Duration = Duration::from_secs(2);

/// Cumulative loss counters by place, as heartbeats and metrics report them.
fn loss_totals(
    probe: &Probe,
    out: &Output<'_>,
    enricher: &Enricher,
    loss: &Loss,
) -> Vec<(String, u64)> {
    let mut totals: Vec<(String, u64)> = probe
        .lost_counts()
        .into_iter()
        .map(|(k, n)| (format!("kernel:{}", k.name()), n))
        .collect();
    totals.extend(
        probe
            .probe_counters()
            .into_iter()
            .map(|(c, n)| (format!("probe:{}", c.name()), n)),
    );
    let e = enricher.counters;
    let r = out.rules.counters;
    totals.extend([
        ("decode".to_string(), loss.decode_errors),
        ("enrich_requests".into(), e.requests_dropped),
        ("sequences_evicted".into(), r.sequence_evicted),
        ("threshold_untracked".into(), r.threshold_untracked),
    ]);
    if let Sink::Collector(f) = &*out.sink {
        let fc = &f.counters;
        totals.extend([
            (
                "alert_queue".to_string(),
                fc.dropped_queue_full.load(Ordering::Relaxed),
            ),
            (
                "spool_full".into(),
                fc.dropped_spool_full.load(Ordering::Relaxed),
            ),
            (
                "spool_error".into(),
                fc.dropped_spool_error.load(Ordering::Relaxed),
            ),
            (
                "rejected".into(),
                fc.dropped_rejected.load(Ordering::Relaxed),
            ),
            (
                "activity_queue".into(),
                fc.activity_dropped_queue_full.load(Ordering::Relaxed),
            ),
            (
                "activity_spool_full".into(),
                fc.activity_dropped_spool_full.load(Ordering::Relaxed),
            ),
            (
                "activity_spool_error".into(),
                fc.activity_dropped_spool_error.load(Ordering::Relaxed),
            ),
        ]);
    }
    if let Some(a) = &out.activity {
        totals.push(("activity_rate".into(), a.counters.rate_dropped));
    }
    totals
}

/// What `/metrics` shows, read from the run loop's state.
fn snapshot(probe: &Probe, out: &Output<'_>, enricher: &Enricher, loss: &Loss) -> Snapshot {
    let mut alerts: Vec<(String, &'static str, u64)> = out
        .raised
        .iter()
        .map(|((rule, sev), n)| (rule.clone(), *sev, *n))
        .collect();
    alerts.sort();
    Snapshot {
        events: EventKind::ALL
            .iter()
            .map(|k| (k.name(), loss.per_kind[(*k as usize) & 7]))
            .collect(),
        losses: loss_totals(probe, out, enricher, loss),
        alerts,
        programs: probe.attachments(),
        processes: enricher.table().len() as u64,
        rules: out.rules.len() as u64,
    }
}

/// What a check of the probe found changed from outside the agent.
#[derive(Default, PartialEq)]
struct ProbeFindings {
    /// Programs with fewer attachments than the agent made.
    missing: Vec<String>,
    /// Maps whose content is not what the agent wrote.
    tampered: Vec<String>,
}

impl ProbeFindings {
    fn of(probe: &Probe) -> ProbeFindings {
        ProbeFindings {
            missing: probe
                .attachments()
                .into_iter()
                .filter(|(_, expected, attached)| attached < expected)
                .map(|(name, expected, attached)| format!("{name} ({attached} of {expected})"))
                .collect(),
            tampered: probe.tampered(),
        }
    }

    /// Logs what changed since `before`; true when something new is
    /// wrong, which is reported to the collector at once.
    fn report_change(&self, before: &ProbeFindings) -> bool {
        let mut worse = false;
        if !self.missing.is_empty() && self.missing != before.missing {
            tracing::error!(programs = %self.missing.join(", "), "probe programs detached from outside the agent: the host is not fully watched");
            worse = true;
        }
        if !self.tampered.is_empty() && self.tampered != before.tampered {
            tracing::error!(maps = %self.tampered.join("; "), "probe maps changed from outside the agent: processes or syscalls may be hidden from the rules");
            worse = true;
        }
        if *self == ProbeFindings::default() && *before != ProbeFindings::default() {
            tracing::info!(
                "the probe is whole again: every program attached, every map as written"
            );
        }
        worse
    }
}

/// Reads what a heartbeat reports and hands it to the forwarder.
fn send_heartbeat(
    heartbeats: Option<&mut Heartbeats>,
    probe: &Probe,
    out: &Output<'_>,
    enricher: &Enricher,
    loss: &Loss,
) {
    let (Some(hb), Sink::Collector(f)) = (heartbeats, &*out.sink) else {
        return;
    };
    let fc = &f.counters;
    let totals = loss_totals(probe, out, enricher, loss);
    let reading = Reading {
        rules_digest: heartbeat::rules_digest(&out.rules.sources),
        rules: out.rules.len() as u32,
        programs: probe.attachments(),
        tampered: probe.tampered(),
        totals,
        spool_depth: fc.spool_depth.load(Ordering::Relaxed),
        activity_sent: fc.activity_spooled.load(Ordering::Relaxed),
        loaded_rules: out
            .rules
            .rules()
            .map(|m| vigil_proto::v1::LoadedRule {
                name: m.name.clone(),
                severity: m.severity as i32,
                tags: m.tags.clone(),
                origin: m.origin.clone(),
            })
            .collect(),
    };
    f.heartbeat(hb.build(reading));
}

/// Activity is handed to the forwarder in batches: when this many are
/// gathered, or this long after the last batch (checked at every drain,
/// at least every `--drain-interval-ms`). Spooling and sending one event
/// at a time cost a write, a flush and a message each.
const ACTIVITY_BATCH: usize = 512;
const ACTIVITY_FLUSH: Duration = Duration::from_millis(250);

/// Most creators an alert names (its process's line up to init).
const MAX_ALERT_LINEAGE: usize = 64;

/// How long after a drain that found records the agent drains again.
const FOLLOW_UP: Duration = Duration::from_millis(1);

/// Least time between two returns of free memory to the system, at the
/// end of bursts.
const RELEASE_GAP: Duration = Duration::from_secs(1);

/// Most file/control/network records decoded per drain: a flood is worked
/// off in slices, so memory stays bounded by the slice, not by the ring.
const SLICE: usize = 4096;

/// The two rings, registered with tokio; the process ring also has a
/// reader thread of its own.
struct PolledRings {
    process: AsyncFd<ProcessRing>,
    syscalls: AsyncFd<RingBuf<MapData>>,
    /// Reused per drain.
    batch: Vec<event::Event>,
}

impl PolledRings {
    fn new(rings: Rings, process_backlog_bytes: usize) -> anyhow::Result<PolledRings> {
        let process = ProcessRing::start(rings.process, process_backlog_bytes)
            .context("cannot start the process ring's reader")?;
        // SAFETY (both): each ring owns its fd, which lives as long as the
        // AsyncFd that owns the ring.
        Ok(PolledRings {
            process: unsafe { AsyncFd::register_with_interest(process, Interest::READABLE) }
                .map_err(io::Error::from)
                .context("cannot poll the process ring")?,
            syscalls: unsafe {
                AsyncFd::register_with_interest(rings.syscalls, Interest::READABLE)
            }
            .map_err(io::Error::from)
            .context("cannot poll the syscall ring")?,
            batch: Vec::new(),
        })
    }

    /// Frees the decode buffer a burst grew.
    fn shrink(&mut self) {
        self.batch = Vec::new();
        self.process.get_ref().shrink();
    }

    /// Resolves when either ring has records; clears the readiness seen.
    async fn readable(&mut self) -> io::Result<()> {
        tokio::select! {
            g = self.process.readable_mut() => g?.clear_ready(),
            g = self.syscalls.readable_mut() => g?.clear_ready(),
        }
        Ok(())
    }
}

/// Decodes what waits in the rings into the enricher, in time order;
/// returns how many records there were.
///
/// The syscall ring is read first: a process record that a syscall record
/// depends on (the fork or exec of its process) is older, so it is already
/// in the process ring, or in its reader's backlog, when those are read
/// after it. The batch is then ordered by time, which both rings share.
fn ingest(rings: &mut PolledRings, enricher: &mut Enricher, loss: &mut Loss) -> usize {
    let clock = BootClock::now();
    let now = Instant::now();
    let mut batch = std::mem::take(&mut rings.batch);
    let mut decode = |item: &[u8], batch: &mut Vec<event::Event>| match event::decode(item, clock) {
        Ok(ev) => batch.push(ev),
        Err(e) => {
            loss.decode_errors += 1;
            tracing::debug!(error = %e, "undecodable record");
        }
    };
    let syscalls = rings.syscalls.get_mut();
    for _ in 0..SLICE {
        let Some(item) = syscalls.next() else {
            break;
        };
        decode(&item, &mut batch);
    }
    rings
        .process
        .get_ref()
        .drain(|item| decode(item, &mut batch));
    let n = batch.len();
    batch.sort_by_key(|e| e.time_unix_ns);
    for mut ev in batch.drain(..) {
        loss.events_seen += 1;
        loss.per_kind[(ev.body.kind() as usize) & 7] += 1;
        ev.num = loss.events_seen;
        enricher.push(ev, now);
    }
    rings.batch = batch;
    n
}

/// Where enriched events go: stdout, rules, alerts.
struct Output<'a> {
    opts: &'a RunOptions,
    rules: RuleSet,
    sink: &'a mut Sink,
    hits: Vec<Hit>,
    /// The rule engine's counters when last logged.
    reported: crate::rules::EngineCounters,
    /// Alerts raised so far, by rule and severity.
    raised: HashMap<(String, &'static str), u64>,
    /// Names processes in alerts.
    ids: ProcIds,
    /// Activity shipping and alert context; None without a collector.
    activity: Option<Activity>,
    /// Activity to ship, gathered for up to [`ACTIVITY_FLUSH`].
    pending_activity: Vec<vigil_proto::v1::Activity>,
    last_activity_flush: Instant,
}

impl Output<'_> {
    /// Matches and writes out every event the enricher has ready.
    fn emit(&mut self, enricher: &mut Enricher, stdout: &io::Stdout) {
        let now = Instant::now();
        enricher.poll(now);
        let mut out = stdout.lock();
        while let Some(ev) = enricher.pop_ready() {
            if self.opts.events.prints(&ev) {
                write_json_line(&mut out, &serde_json::to_value(&ev).unwrap_or_default());
            }
            // Kept as context first, so an alert on it carries it.
            let shipped = self.activity.as_mut().and_then(|a| a.observe(&ev, now));
            self.rules.matches(&ev, &mut self.hits);
            self.send_hits(Some(&ev), &mut out, Some(enricher.table()));
            self.pending_activity.extend(shipped);
            if self.pending_activity.len() >= ACTIVITY_BATCH {
                self.flush_activity();
            }
        }
        out.flush().ok();
        if self.pending_activity.len() >= ACTIVITY_BATCH
            || self.last_activity_flush.elapsed() >= ACTIVITY_FLUSH
        {
            self.flush_activity();
        }
    }

    /// Hands the activity gathered since the last flush to the forwarder
    /// in one batch: one spool write and one message for many events.
    fn flush_activity(&mut self) {
        self.last_activity_flush = Instant::now();
        if self.pending_activity.is_empty() {
            return;
        }
        let batch = std::mem::take(&mut self.pending_activity);
        if let Sink::Collector(f) = &*self.sink {
            f.send_activity(batch);
        }
    }

    /// Builds and sends the alerts of the hits; with the process table,
    /// each names its process's whole line up to init (the event's own
    /// ancestry stops at `--max-ancestry`).
    fn send_hits(
        &mut self,
        ev: Option<&event::Event>,
        out: &mut impl Write,
        table: Option<&ProcessTable>,
    ) {
        for hit in self.hits.drain(..) {
            let Some(ev) = hit.event.as_deref().or(ev) else {
                continue;
            };
            let mut a = alert::build(&hit.rule, ev, hit.count, &self.ids);
            if let Some(t) = table.filter(|_| self.activity.is_some()) {
                let p = &ev.process;
                let line = t.lineage_of(p.pid, p.start_boottime_ns, MAX_ALERT_LINEAGE);
                if line.len() > a.ancestry.len() {
                    a.ancestry = line.iter().map(|x| alert::ancestor(x, &self.ids)).collect();
                }
            }
            if let Some(act) = &self.activity {
                a.context = act.context_for(ev);
            }
            *self
                .raised
                .entry((hit.rule.name.clone(), hit.rule.severity.name()))
                .or_default() += 1;
            match self.sink {
                Sink::Stdout(host) => {
                    a.host = Some((**host).clone());
                    write_json_line(out, &alert_json(&a));
                }
                Sink::Collector(f) => {
                    f.send(a);
                }
            }
        }
    }

    /// Sends the summaries of dedup windows that ended, and reports the
    /// rule engine's drops when they grew.
    fn tick(&mut self, stdout: &io::Stdout) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i64);
        self.rules.tick(now, &mut self.hits);
        let mut out = stdout.lock();
        self.send_hits(None, &mut out, None);
        out.flush().ok();
        let c = self.rules.counters;
        if c.sequence_evicted > self.reported.sequence_evicted
            || c.dedup_untracked > self.reported.dedup_untracked
            || c.threshold_untracked > self.reported.threshold_untracked
        {
            tracing::warn!(
                sequence_evicted = c.sequence_evicted,
                dedup_untracked = c.dedup_untracked,
                threshold_untracked = c.threshold_untracked,
                "rule engine full: open sequences dropped, alerts sent without dedup, or threshold matches not counted"
            );
        }
        if c != self.reported {
            tracing::debug!(dedup_suppressed = c.dedup_suppressed, "rule engine");
            self.reported = c;
        }
    }

    /// Sends every pending dedup summary now (reload, shutdown).
    fn close_windows(&mut self, stdout: &io::Stdout) {
        self.rules.tick(i64::MAX, &mut self.hits);
        let mut out = stdout.lock();
        self.send_hits(None, &mut out, None);
        out.flush().ok();
    }

    /// Replaces the rules; the old set's pending summaries go out first.
    fn swap_rules(&mut self, new: RuleSet, stdout: &io::Stdout) {
        self.close_windows(stdout);
        self.rules = new;
        self.reported = Default::default();
    }
}

/// Logs the process table's and enrichment's counters when they moved.
fn report_enrichment(enricher: &Enricher, loss: &mut Loss) {
    let t = enricher.table().counters;
    if t != loss.reported_table {
        tracing::info!(
            entries = enricher.table().len(),
            evicted = t.evicted,
            unknown_process = t.unknown_process,
            expired = t.expired,
            "process table"
        );
        loss.reported_table = t;
    }
    let e = enricher.counters;
    if e.wait_overflow > loss.reported_enrich.wait_overflow
        || e.requests_dropped > loss.reported_enrich.requests_dropped
        || e.cache_evicted > loss.reported_enrich.cache_evicted
    {
        tracing::warn!(
            wait_overflow = e.wait_overflow,
            requests_dropped = e.requests_dropped,
            cache_evicted = e.cache_evicted,
            "enrichment fell behind: some events left without names or container"
        );
    }
    if e != loss.reported_enrich {
        tracing::debug!(
            waited = e.waited,
            timed_out = e.timed_out,
            hashes_computed = e.hashes_computed,
            "enrichment"
        );
        loss.reported_enrich = e;
    }
}

fn write_json_line(out: &mut impl Write, v: &serde_json::Value) {
    // A closed stdout (e.g. `| head`) must not stop detection.
    let _ = serde_json::to_writer(&mut *out, v);
    let _ = out.write_all(b"\n");
}

/// One log line per program: runs and mean ns per run, since load.
fn report_program_cost(probe: &Probe) {
    for (program, runs, time) in probe.program_stats() {
        if let Some(avg_ns) = (time.as_nanos() as u64).checked_div(runs) {
            tracing::info!(%program, runs, total_ns = time.as_nanos() as u64, avg_ns, "bpf program cost");
        }
    }
}

fn report_loss(probe: &Probe, sink: &Sink, opts: &RunOptions, loss: &mut Loss) {
    let now = probe.lost_counts();
    for (kind, total) in &now {
        let before = loss
            .kernel
            .iter()
            .find(|(k, _)| k == kind)
            .map_or(0, |(_, n)| *n);
        if *total > before {
            let delta = total - before;
            tracing::warn!(
                kind = kind.name(),
                lost = delta,
                total,
                "ring buffer full: events lost in the kernel"
            );
            if opts.events != EventsOut::None {
                let mut out = io::stdout().lock();
                write_json_line(
                    &mut out,
                    &json!({"type": "lost", "kind": kind.name(), "count": delta, "total": total}),
                );
                let _ = out.flush();
            }
        }
    }
    loss.kernel = now;
    let now = probe.probe_counters();
    for (what, total) in &now {
        let before = loss
            .probe
            .iter()
            .find(|(w, _)| w == what)
            .map_or(0, |(_, n)| *n);
        if *total > before {
            tracing::warn!(
                counter = what.name(),
                delta = total - before,
                total,
                "probe could not send some records"
            );
        }
    }
    loss.probe = now;
    if loss.decode_errors > loss.reported_decode_errors {
        tracing::warn!(
            total = loss.decode_errors,
            "records the agent could not decode"
        );
        loss.reported_decode_errors = loss.decode_errors;
    }
    if let Sink::Collector(f) = sink {
        let full = f.counters.dropped_queue_full.load(Ordering::Relaxed);
        if full > loss.reported_queue_full {
            tracing::warn!(total = full, "alert queue full: alerts dropped");
            loss.reported_queue_full = full;
        }
        let spool_full = f.counters.dropped_spool_full.load(Ordering::Relaxed);
        let spool_error = f.counters.dropped_spool_error.load(Ordering::Relaxed);
        if spool_full > loss.reported_spool.0 || spool_error > loss.reported_spool.1 {
            tracing::warn!(
                spool_full,
                spool_error,
                spooled = f.counters.spool_depth.load(Ordering::Relaxed),
                "alerts dropped from the spool (full: reported to the collector as a gap; error: the spool could not be written)"
            );
            loss.reported_spool = (spool_full, spool_error);
        }
    }
}
