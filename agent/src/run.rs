//! `vigil-agent run`: the event loop from ring buffer to alerts.
use std::{
    future::Future,
    io::{self, Write},
    path::PathBuf,
    sync::atomic::Ordering,
    time::{Duration, Instant},
};

use agent_ebpf::EventKind;
use anyhow::Context as _;
use aya::maps::{MapData, RingBuf};
use serde_json::json;
use tokio::io::{unix::AsyncFd, Interest};
use vigil_proto::json::alert_json;

use crate::{
    alert,
    enrich::{EnrichConfig, Enricher},
    event::{self, BootClock},
    forward::{Forwarder, ForwarderConfig},
    host,
    probe::{Probe, ProbeOptions},
    rules::{Matcher, RuleMeta, RuleSet},
};

#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Print every event as a JSON line on stdout.
    pub events: bool,
    /// Rule files or directories; empty: the embedded default rules.
    pub rules: Vec<PathBuf>,
    /// Collector URL; None: alerts go to stdout as JSON lines.
    pub collector: Option<String>,
    pub ring_bytes: u32,
    /// Kernel BTF file.
    pub btf_path: PathBuf,
    /// How often loss counters are checked and reported.
    pub stats_interval: Duration,
    /// Bytes waiting in the ring before the probe wakes the agent (0: every
    /// record); the agent also drains every `drain_interval`.
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
}

/// Loads the rules named in `paths`, or the embedded default set.
pub fn load_rules(paths: &[PathBuf]) -> anyhow::Result<RuleSet> {
    if paths.is_empty() {
        return Ok(RuleSet::embedded_default());
    }
    Ok(RuleSet::load(paths)?)
}

/// Where alerts go.
enum Sink {
    Stdout,
    Collector(Forwarder),
}

/// Counters of everything the agent may lose, reported periodically.
#[derive(Default)]
struct Loss {
    kernel: Vec<(EventKind, u64)>,
    decode_errors: u64,
    reported_decode_errors: u64,
    reported_queue_full: u64,
    reported_table: crate::proctree::TableCounters,
    reported_enrich: crate::enrich::EnrichCounters,
}

/// Runs until `shutdown` resolves.
pub async fn run(opts: RunOptions, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let rules = load_rules(&opts.rules)?;
    let exclusions =
        crate::kernel::exclusions::Exclusions::resolve(&opts.exclude_exes, &opts.exclude_cgroups)?;
    tracing::info!(rules = rules.len(), sources = ?rules.sources, "rules loaded");
    let mut sink = match &opts.collector {
        Some(url) => Sink::Collector(Forwarder::start(
            ForwarderConfig::new(url.clone()),
            host::detect(),
        )?),
        None => Sink::Stdout,
    };
    let mut probe = Probe::load(&ProbeOptions {
        ring_bytes: opts.ring_bytes,
        btf_path: opts.btf_path.clone(),
        wakeup_bytes: opts.wakeup_bytes,
        exclusions,
    })?;
    let _stats_fd = if opts.bpf_stats {
        Some(
            crate::probe::enable_run_time_stats()
                .context("cannot enable BPF run-time statistics")?,
        )
    } else {
        None
    };
    // Bootstrapped after the probe is attached, so a process started in
    // between is seen by one or the other.
    let mut enricher = Enricher::start(opts.enrich.clone());
    let answered = enricher.answered();
    let ring = probe.take_events()?;
    // SAFETY: the ring buffer owns its fd and outlives nothing but this AsyncFd.
    let mut ring = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
        .map_err(io::Error::from)
        .context("cannot poll the ring buffer")?;
    tracing::info!(events_to_stdout = opts.events, collector = ?opts.collector, "agent running");

    let mut loss = Loss::default();
    let mut tick = tokio::time::interval(opts.stats_interval);
    tick.tick().await;
    let mut drain_tick = tokio::time::interval(opts.drain_interval);
    drain_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    tokio::pin!(shutdown);
    let stdout = io::stdout();
    let mut out_ctx = Output {
        opts: &opts,
        rules: &rules,
        sink: &mut sink,
    };
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            guard = ring.readable_mut() => {
                let mut guard = guard.context("ring buffer poll failed")?;
                ingest(guard.get_inner_mut(), &mut enricher, &mut loss);
                guard.clear_ready();
                out_ctx.emit(&mut enricher, &stdout);
            }
            _ = answered.notified() => {
                out_ctx.emit(&mut enricher, &stdout);
            }
            _ = drain_tick.tick() => {
                ingest(ring.get_mut(), &mut enricher, &mut loss);
                out_ctx.emit(&mut enricher, &stdout);
            }
            _ = tick.tick() => {
                enricher.tick(Instant::now());
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
    ingest(ring.get_mut(), &mut enricher, &mut loss);
    out_ctx.emit(&mut enricher, &stdout);
    let until = Instant::now() + opts.enrich.wait;
    while enricher.waiting() > 0 && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(10)).await;
        out_ctx.emit(&mut enricher, &stdout);
    }
    enricher.flush();
    out_ctx.emit(&mut enricher, &stdout);
    report_loss(&probe, &sink, &opts, &mut loss);
    drop(probe);
    if let Sink::Collector(f) = sink {
        let left = f.shutdown(opts.shutdown_grace).await;
        if left > 0 {
            anyhow::bail!("{left} alerts were not acknowledged by the collector before shutdown");
        }
    }
    Ok(())
}

/// Decodes every record waiting in the ring into the enricher.
fn ingest(ring: &mut RingBuf<MapData>, enricher: &mut Enricher, loss: &mut Loss) {
    let clock = BootClock::now();
    let now = Instant::now();
    while let Some(item) = ring.next() {
        match event::decode(&item, clock) {
            Ok(ev) => enricher.push(ev, now),
            Err(e) => {
                loss.decode_errors += 1;
                tracing::debug!(error = %e, "undecodable record");
            }
        }
    }
}

/// Where enriched events go: stdout, rules, alerts.
struct Output<'a> {
    opts: &'a RunOptions,
    rules: &'a RuleSet,
    sink: &'a mut Sink,
}

impl Output<'_> {
    /// Matches and writes out every event the enricher has ready.
    fn emit(&mut self, enricher: &mut Enricher, stdout: &io::Stdout) {
        enricher.poll(Instant::now());
        let mut out = stdout.lock();
        let mut hits: Vec<&RuleMeta> = Vec::new();
        while let Some(ev) = enricher.pop_ready() {
            if self.opts.events {
                write_json_line(&mut out, &serde_json::to_value(&ev).unwrap_or_default());
            }
            hits.clear();
            self.rules.matches(&ev, &mut hits);
            for rule in &hits {
                let a = alert::build(rule, &ev);
                match self.sink {
                    Sink::Stdout => write_json_line(&mut out, &alert_json(&a)),
                    Sink::Collector(f) => {
                        f.send(a);
                    }
                }
            }
        }
        out.flush().ok();
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
            if opts.events {
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
    }
}
