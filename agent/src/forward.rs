//! Delivery of alerts to the collector over a gRPC stream, with nothing
//! lost to a restart or an outage.
//!
//! Alerts enter a bounded queue (full: counted and dropped, never blocking
//! the event path). A worker thread writes them to the disk [`Spool`]
//! (flushed before they count as sent), reads them back in numbered
//! batches, keeps at most `max_inflight` batches in flight, and deletes
//! them from the spool only when the collector acknowledges them (acks come
//! only after a commit). A broken, refused or silent connection (no ack
//! within `ack_timeout`, or no HTTP/2 keepalive answer) is redone with
//! jittered backoff, which resets only after an ack; everything
//! unacknowledged is re-sent, and the collector stores each alert id once.
//! An agent restarted, killed or rebooted resumes from the spool.
//!
//! Activity (process starts and exits, connections, DNS queries) travels
//! the same way in the same batches, from a queue and a spool of its own
//! (`activity/` in the spool directory), so a flood of activity can never
//! push an alert out of the queue or the spool. Alerts go first in every
//! batch.
//!
//! Over `https://` the collector's certificate is checked against the CA
//! and the URL's host, and the agent presents its own. An ack is believed
//! only for the oldest batch sent on the current stream and not yet acked:
//! a rogue or confused collector cannot make the agent discard alerts it
//! never stored by acking a sequence number ahead of what was sent.
use std::{
    collections::VecDeque,
    path::PathBuf,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use tokio::sync::{mpsc, oneshot, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};
use vigil_proto::{
    tls::{endpoint, error_chain, explain_tls_failure, status_chain, ClientTls, EndpointError},
    v1::{
        collector_client::CollectorClient, Activity, AgentHeartbeat, Alert, AlertBatch, HostInfo,
        Severity,
    },
};

use crate::spool::{Gap, Spool, SpoolError};

/// The rule name of the alert that stands for alerts the spool dropped.
pub const GAP_RULE: &str = "Alerts dropped";

#[derive(Debug, Clone)]
pub struct ForwarderConfig {
    /// `https://host:port` of the collector (`http://` for a plaintext
    /// collector on loopback).
    pub endpoint: String,
    /// This agent's certificate, key and the collector's CA, for https.
    pub tls: Option<ClientTls>,
    /// Where alerts wait for their acknowledgement, and its bound.
    pub spool_dir: PathBuf,
    pub spool_max: u64,
    /// Alerts waiting for the worker; beyond this they are dropped and counted.
    pub queue_capacity: usize,
    /// Batches sent and not yet acknowledged, at most.
    pub max_inflight: usize,
    /// Most alerts in one batch.
    pub batch_max: usize,
    /// Most encoded bytes in one batch (the collector accepts 4 MiB).
    pub batch_max_bytes: usize,
    pub retry_min: Duration,
    pub retry_max: Duration,
    /// A connection with batches in flight and no ack for this long is
    /// taken as dead.
    pub ack_timeout: Duration,
    /// HTTP/2 keepalive ping interval (and how long an answer may take).
    pub keepalive: Duration,
    /// The activity spool's bound, its queue, and most activity events in
    /// one batch.
    pub activity_spool_max: u64,
    pub activity_queue_capacity: usize,
    pub activity_batch_max: usize,
}

impl ForwarderConfig {
    pub fn new(endpoint: impl Into<String>, spool_dir: impl Into<PathBuf>) -> ForwarderConfig {
        ForwarderConfig {
            endpoint: endpoint.into(),
            tls: None,
            spool_dir: spool_dir.into(),
            spool_max: 256 << 20,
            queue_capacity: 10_000,
            max_inflight: 16,
            batch_max: 256,
            batch_max_bytes: 1 << 20,
            retry_min: Duration::from_millis(500),
            retry_max: Duration::from_secs(30),
            ack_timeout: Duration::from_secs(30),
            keepalive: Duration::from_secs(10),
            activity_spool_max: 64 << 20,
            activity_queue_capacity: 20_000,
            activity_batch_max: 2048,
        }
    }
}

/// Delivery counters, reported in the agent's periodic stats.
#[derive(Debug, Default)]
pub struct ForwardCounters {
    /// Dropped because the queue was full.
    pub dropped_queue_full: AtomicU64,
    /// Dropped from a full spool (each reported to the collector as an
    /// "Alerts dropped" alert).
    pub dropped_spool_full: AtomicU64,
    /// Lost because the spool could not be written (disk full, I/O error).
    pub dropped_spool_error: AtomicU64,
    /// Refused by the collector as invalid (would be refused again).
    pub dropped_rejected: AtomicU64,
    /// Acks for a batch that was not the oldest unacked one sent on the
    /// stream; each ended the connection, and nothing was retired.
    pub bogus_acks: AtomicU64,
    pub acked: AtomicU64,
    /// Connections redone after a failure.
    pub reconnects: AtomicU64,
    /// Alerts in the spool, not yet acknowledged, and the bytes its
    /// segments hold.
    pub spool_depth: AtomicU64,
    pub spool_bytes: AtomicU64,
    /// Activity: written to its spool, acknowledged, and dropped because
    /// its queue or spool was full, or its spool could not be written.
    pub activity_spooled: AtomicU64,
    pub activity_acked: AtomicU64,
    pub activity_dropped_queue_full: AtomicU64,
    pub activity_dropped_spool_full: AtomicU64,
    pub activity_dropped_spool_error: AtomicU64,
    pub activity_spool_depth: AtomicU64,
}

#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error(transparent)]
    Endpoint(#[from] EndpointError),
    #[error(transparent)]
    Spool(#[from] SpoolError),
    #[error("cannot start the forwarder thread: {0}")]
    Thread(std::io::Error),
}

/// Handle to the forwarding worker.
pub struct Forwarder {
    tx: mpsc::Sender<Alert>,
    activity_tx: mpsc::Sender<Vec<Activity>>,
    /// Activity events in the queue (the bound is in events, not batches).
    activity_queued: Arc<AtomicU64>,
    activity_capacity: u64,
    pub counters: Arc<ForwardCounters>,
    /// The latest heartbeat, sent when connected (a newer one replaces it).
    heartbeat: watch::Sender<Option<AgentHeartbeat>>,
    stop: watch::Sender<bool>,
    done: oneshot::Receiver<()>,
    thread: std::thread::JoinHandle<()>,
}

/// Checks a collector URL and TLS files the way the forwarder will use them.
pub fn parse_endpoint(url: &str, tls: Option<&ClientTls>) -> Result<Endpoint, ForwardError> {
    Ok(endpoint(url, tls)?)
}

impl Forwarder {
    /// Opens the spool (alerts left by an earlier run are sent first) and
    /// starts the worker on a thread of its own, so spool writes never
    /// stall the event loop.
    pub fn start(cfg: ForwarderConfig, host: HostInfo) -> Result<Forwarder, ForwardError> {
        let endpoint = parse_endpoint(&cfg.endpoint, cfg.tls.as_ref())?;
        let spool = Spool::open(&cfg.spool_dir, cfg.spool_max)?;
        if spool.depth() > 0 {
            tracing::info!(alerts = spool.depth(), spool = %cfg.spool_dir.display(), "alerts from an earlier run are in the spool; they are sent first");
        }
        let activity: Spool<Activity> =
            Spool::open(&cfg.spool_dir.join("activity"), cfg.activity_spool_max)?;
        let (tx, rx) = mpsc::channel(cfg.queue_capacity);
        // Batches: the bound that matters is `activity_queued`, in events.
        let (activity_tx, activity_rx) = mpsc::channel(1024);
        let activity_queued = Arc::new(AtomicU64::new(0));
        let activity_capacity = cfg.activity_queue_capacity.max(1) as u64;
        let (stop, stop_rx) = watch::channel(false);
        let (heartbeat, hb_rx) = watch::channel(None);
        let (done_tx, done) = oneshot::channel();
        let counters = Arc::new(ForwardCounters::default());
        counters.spool_depth.store(spool.depth(), Ordering::Relaxed);
        counters.spool_bytes.store(spool.bytes(), Ordering::Relaxed);
        let worker = Worker {
            send_from: spool.acked_index(),
            spool,
            activity_from: activity.acked_index(),
            activity,
            activity_rx,
            activity_queued: activity_queued.clone(),
            activity_closed: false,
            cfg,
            host,
            endpoint,
            rx,
            input_closed: false,
            inflight: VecDeque::new(),
            next_seq: 1,
            counters: counters.clone(),
            stop: stop_rx,
            hb_rx,
            rng: seed(),
        };
        let thread = std::thread::Builder::new()
            .name("vigil-forward".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        tracing::error!(error = %e, "cannot start the forwarder's runtime: alerts stay in the spool");
                        return;
                    }
                };
                rt.block_on(worker.run());
                let _ = done_tx.send(());
            })
            .map_err(ForwardError::Thread)?;
        Ok(Forwarder {
            tx,
            activity_tx,
            activity_queued,
            activity_capacity,
            counters,
            heartbeat,
            stop,
            done,
            thread,
        })
    }

    /// Hands over a heartbeat; it goes out at once when connected, or
    /// first thing after the next connection.
    pub fn heartbeat(&self, hb: AgentHeartbeat) {
        let _ = self.heartbeat.send(Some(hb));
    }

    /// Queues an alert without waiting; false (and counted) when full.
    pub fn send(&self, alert: Alert) -> bool {
        match self.tx.try_send(alert) {
            Ok(()) => true,
            Err(_) => {
                self.counters
                    .dropped_queue_full
                    .fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }

    /// Queues a batch of activity without waiting; false (and counted,
    /// per event) when the queue holds its bound of events already.
    pub fn send_activity(&self, batch: Vec<Activity>) -> bool {
        let n = batch.len() as u64;
        if n == 0 {
            return true;
        }
        let queued = self.activity_queued.fetch_add(n, Ordering::Relaxed);
        let sent = queued + n <= self.activity_capacity && self.activity_tx.try_send(batch).is_ok();
        if !sent {
            self.activity_queued.fetch_sub(n, Ordering::Relaxed);
            self.counters
                .activity_dropped_queue_full
                .fetch_add(n, Ordering::Relaxed);
        }
        sent
    }

    /// Stops taking alerts, writes what is queued to the spool, and waits
    /// up to `grace` for the collector to acknowledge everything. Returns
    /// the alerts left in the spool: not lost, they go out at the next
    /// start.
    pub async fn shutdown(self, grace: Duration) -> u64 {
        let Forwarder {
            tx,
            activity_tx,
            counters,
            stop,
            mut done,
            thread,
            ..
        } = self;
        drop(tx);
        drop(activity_tx);
        if tokio::time::timeout(grace, &mut done).await.is_err() {
            let _ = stop.send(true);
            let _ = done.await;
        }
        let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        counters.spool_depth.load(Ordering::Relaxed)
    }
}

/// A batch sent and waiting for its ack.
struct Inflight {
    batch: AlertBatch,
    /// Spool index after its last alert, and activity spool index after
    /// its last activity event.
    end: u64,
    activity_end: u64,
}

struct Worker {
    cfg: ForwarderConfig,
    host: HostInfo,
    endpoint: Endpoint,
    rx: mpsc::Receiver<Alert>,
    input_closed: bool,
    spool: Spool,
    activity_rx: mpsc::Receiver<Vec<Activity>>,
    activity_queued: Arc<AtomicU64>,
    activity_closed: bool,
    activity: Spool<Activity>,
    inflight: VecDeque<Inflight>,
    /// Next spool index to put in a batch, in each spool.
    send_from: u64,
    activity_from: u64,
    next_seq: u64,
    counters: Arc<ForwardCounters>,
    /// Set at shutdown when the grace period is over.
    stop: watch::Receiver<bool>,
    hb_rx: watch::Receiver<Option<AgentHeartbeat>>,
    rng: u64,
}

/// How a connection ended.
struct SessionEnd {
    /// Ok: all delivered and the input closed; Err: why it must be redone.
    result: Result<(), String>,
    /// Whether any ack arrived on it (the backoff resets only then).
    acked: bool,
}

fn seed() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64);
    t ^ (u64::from(std::process::id()) << 32) | 1
}

impl Worker {
    fn done(&self) -> bool {
        self.input_closed
            && self.activity_closed
            && self.spool.depth() == 0
            && self.activity.depth() == 0
            && self.inflight.is_empty()
    }

    fn stopping(&self) -> bool {
        *self.stop.borrow()
    }

    /// A delay between `d / 2` and `d`, so agents that lost the same
    /// collector do not all come back at the same instant.
    fn jitter(&mut self, d: Duration) -> Duration {
        // xorshift64: enough to spread reconnects.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let frac = (self.rng % 1000) as f64 / 1000.0;
        d.mul_f64(0.5 + frac / 2.0)
    }

    async fn run(mut self) {
        let mut delay = self.cfg.retry_min;
        loop {
            self.drain_input();
            if self.done() || self.stopping() {
                break;
            }
            self.refresh_endpoint();
            let err = match self.endpoint.connect().await {
                Ok(channel) => {
                    tracing::info!(collector = %self.cfg.endpoint, spooled = self.spool.depth(), "connected to collector");
                    let end = self.session(CollectorClient::new(channel)).await;
                    if end.acked {
                        delay = self.cfg.retry_min;
                    }
                    match end.result {
                        Ok(()) => break,
                        Err(e) => e,
                    }
                }
                Err(e) => {
                    let chain = error_chain(&e);
                    match explain_tls_failure(&chain) {
                        Some(why) => format!("{why} ({chain})"),
                        None => chain,
                    }
                }
            };
            if self.stopping() {
                break;
            }
            self.counters.reconnects.fetch_add(1, Ordering::Relaxed);
            let wait = self.jitter(delay);
            tracing::warn!(
                collector = %self.cfg.endpoint,
                error = %err,
                retry_in_ms = wait.as_millis() as u64,
                spooled = self.spool.depth(),
                "collector unreachable; alerts are kept in the spool and sent when it is back"
            );
            self.absorb_for(wait).await;
            delay = (delay * 2).min(self.cfg.retry_max);
        }
        // Whatever is still queued goes to the spool for the next start.
        self.drain_input();
        if self.activity.depth() > 0 {
            tracing::info!(
                activity = self.activity.depth(),
                "activity not yet acknowledged stays in its spool and is sent at the next start"
            );
        }
        let left = self.spool.depth();
        self.counters.spool_depth.store(left, Ordering::Relaxed);
        if left > 0 {
            tracing::warn!(
                alerts = left,
                spool = %self.cfg.spool_dir.display(),
                "alerts not yet acknowledged stay in the spool and are sent at the next start"
            );
        }
    }

    /// Rereads the TLS files before a connection, so a certificate
    /// rotated on disk is used from the next reconnect; files that no
    /// longer load leave the previous settings in force (logged).
    fn refresh_endpoint(&mut self) {
        let fresh = if self.cfg.tls.is_some() {
            match parse_endpoint(&self.cfg.endpoint, self.cfg.tls.as_ref()) {
                Ok(e) => e,
                Err(e) => {
                    tracing::error!(error = %e, "TLS files not reloaded; the previous ones stay in use");
                    self.endpoint.clone()
                }
            }
        } else {
            self.endpoint.clone()
        };
        let k = self.cfg.keepalive;
        self.endpoint = fresh
            .http2_keep_alive_interval(k)
            .keep_alive_timeout(k)
            .keep_alive_while_idle(true);
    }

    /// Moves what waits in the queue into the spool, without waiting.
    fn drain_input(&mut self) {
        let mut batch = Vec::new();
        loop {
            match self.rx.try_recv() {
                Ok(a) => {
                    batch.push(a);
                    if batch.len() >= 1024 {
                        self.spool_alerts(std::mem::take(&mut batch));
                    }
                }
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    self.input_closed = true;
                    break;
                }
            }
        }
        self.spool_alerts(batch);
        let mut batch = Vec::new();
        loop {
            match self.activity_rx.try_recv() {
                Ok(a) => {
                    batch.extend(a);
                    if batch.len() >= 4096 {
                        self.spool_activity(std::mem::take(&mut batch));
                    }
                }
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    self.activity_closed = true;
                    break;
                }
            }
        }
        self.spool_activity(batch);
    }

    /// Takes `first` and whatever other activity is queued into its spool.
    fn take_activity(&mut self, first: Option<Vec<Activity>>) {
        match first {
            Some(mut batch) => {
                while batch.len() < 4096 {
                    match self.activity_rx.try_recv() {
                        Ok(a) => batch.extend(a),
                        Err(_) => break,
                    }
                }
                self.spool_activity(batch);
            }
            None => self.activity_closed = true,
        }
    }

    /// Writes activity to its spool (flushed); what the spool drops for
    /// room, or cannot write, is counted.
    fn spool_activity(&mut self, batch: Vec<Activity>) {
        if batch.is_empty() {
            return;
        }
        let n = batch.len() as u64;
        self.activity_queued.fetch_sub(n, Ordering::Relaxed);
        match self.activity.append(&batch) {
            Ok(()) => {
                self.counters
                    .activity_spooled
                    .fetch_add(n, Ordering::Relaxed);
            }
            Err(e) => {
                let before = self
                    .counters
                    .activity_dropped_spool_error
                    .fetch_add(n, Ordering::Relaxed);
                if (before + n).ilog2() != before.checked_ilog2().unwrap_or(u32::MAX) {
                    tracing::error!(error = %e, lost = before + n, "cannot write the activity spool: activity lost");
                }
            }
        }
        if let Some(gap) = self.activity.take_gap() {
            self.counters
                .activity_dropped_spool_full
                .fetch_add(gap.count, Ordering::Relaxed);
        }
        self.gauge_spool();
    }

    /// Takes `first` and whatever else is queued into the spool.
    fn take(&mut self, first: Option<Alert>) {
        match first {
            Some(a) => {
                let mut batch = vec![a];
                while batch.len() < 1024 {
                    match self.rx.try_recv() {
                        Ok(a) => batch.push(a),
                        Err(_) => break,
                    }
                }
                self.spool_alerts(batch);
            }
            None => self.input_closed = true,
        }
    }

    /// Writes alerts to the spool (flushed), then an "Alerts dropped"
    /// alert for any the spool had to drop for room.
    fn spool_alerts(&mut self, alerts: Vec<Alert>) {
        if alerts.is_empty() {
            return;
        }
        let n = alerts.len() as u64;
        if let Err(e) = self.spool.append(&alerts) {
            let before = self
                .counters
                .dropped_spool_error
                .fetch_add(n, Ordering::Relaxed);
            // Logged once per power of two, not per batch.
            if (before + n).ilog2() != before.checked_ilog2().unwrap_or(u32::MAX) {
                tracing::error!(error = %e, lost = before + n, "cannot write the spool: alerts lost");
            }
        }
        if let Some(gap) = self.spool.take_gap() {
            self.counters
                .dropped_spool_full
                .fetch_add(gap.count, Ordering::Relaxed);
            let alert = gap_alert(&self.host, gap);
            let _ = self.spool.append(&[alert]);
        }
        self.gauge_spool();
    }

    /// Publishes the spool's depth and size.
    fn gauge_spool(&self) {
        self.counters
            .spool_depth
            .store(self.spool.depth(), Ordering::Relaxed);
        self.counters
            .spool_bytes
            .store(self.spool.bytes(), Ordering::Relaxed);
        self.counters
            .activity_spool_depth
            .store(self.activity.depth(), Ordering::Relaxed);
    }

    /// Waits `d` while still taking alerts into the spool.
    async fn absorb_for(&mut self, d: Duration) {
        let sleep = tokio::time::sleep(d);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                _ = &mut sleep => return,
                _ = self.stop.changed() => return,
                a = self.rx.recv(), if !self.input_closed => self.take(a),
                a = self.activity_rx.recv(), if !self.activity_closed => self.take_activity(a),
            }
        }
    }

    /// Reads the next batch from the spool, if there is room in flight and
    /// something to send.
    fn next_batch(&mut self) -> Option<AlertBatch> {
        use prost::Message as _;
        if self.inflight.len() >= self.cfg.max_inflight {
            return None;
        }
        let recs = match self.spool.read(self.send_from, self.cfg.batch_max) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the spool");
                return None;
            }
        };
        let mut alerts = Vec::with_capacity(recs.len());
        let mut bytes = 0;
        let mut end = self.send_from;
        for (i, a) in recs {
            bytes += a.encoded_len();
            if !alerts.is_empty() && bytes > self.cfg.batch_max_bytes {
                break;
            }
            alerts.push(a);
            end = i + 1;
        }
        // Activity fills what room the alerts left.
        let mut activity = Vec::new();
        let mut activity_end = self.activity_from;
        if bytes < self.cfg.batch_max_bytes {
            let recs = match self
                .activity
                .read(self.activity_from, self.cfg.activity_batch_max)
            {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(error = %e, "cannot read the activity spool");
                    Vec::new()
                }
            };
            for (i, a) in recs {
                bytes += a.encoded_len();
                if (!alerts.is_empty() || !activity.is_empty()) && bytes > self.cfg.batch_max_bytes
                {
                    break;
                }
                activity.push(a);
                activity_end = i + 1;
            }
        }
        if alerts.is_empty() && activity.is_empty() {
            return None;
        }
        self.send_from = end;
        self.activity_from = activity_end;
        let batch = AlertBatch {
            host: Some(self.host.clone()),
            seq: self.next_seq,
            alerts,
            activity,
        };
        self.next_seq += 1;
        self.inflight.push_back(Inflight {
            batch: batch.clone(),
            end,
            activity_end,
        });
        Some(batch)
    }

    /// One connection: re-send what is in flight, then stream batches from
    /// the spool and retire them as acks arrive.
    async fn session(&mut self, mut client: CollectorClient<Channel>) -> SessionEnd {
        let mut acked = false;
        let result = self.stream(&mut client, &mut acked).await;
        SessionEnd { result, acked }
    }

    async fn stream(
        &mut self,
        client: &mut CollectorClient<Channel>,
        acked: &mut bool,
    ) -> Result<(), String> {
        // Bounded: never more than the batches in flight wait in it.
        let (out, out_rx) = mpsc::channel(self.cfg.max_inflight + 1);
        // The highest sequence number sent on this stream: acks above it
        // are for batches the collector never received from us.
        let mut sent_max = 0u64;
        for f in &self.inflight {
            sent_max = f.batch.seq;
            let _ = out.try_send(f.batch.clone());
        }
        let mut acks = client
            .stream_alerts(ReceiverStream::new(out_rx))
            .await
            .map_err(|s| format!("stream refused: {}", status_text(&s)))?
            .into_inner();
        // The latest heartbeat goes out first on a new connection.
        self.hb_rx.mark_changed();
        // When the oldest batch in flight started waiting for its ack.
        let mut waiting_since = Instant::now();
        loop {
            while let Some(b) = self.next_batch() {
                if self.inflight.len() == 1 {
                    waiting_since = Instant::now();
                }
                sent_max = b.seq;
                if out.try_send(b).is_err() {
                    return Err("stream closed".into());
                }
            }
            if self.done() {
                return Ok(());
            }
            if self.stopping() {
                return Err("shutting down".into());
            }
            let deadline = waiting_since + self.cfg.ack_timeout;
            tokio::select! {
                ack = acks.message() => match ack {
                    Ok(Some(ack)) => {
                        self.retire(ack.seq, sent_max)?;
                        *acked = true;
                        waiting_since = Instant::now();
                    }
                    Ok(None) => return Err("collector closed the stream".into()),
                    Err(s) => {
                        self.drop_if_rejected(&s);
                        return Err(format!("stream error: {}", status_text(&s)));
                    }
                },
                a = self.rx.recv(), if !self.input_closed => self.take(a),
                a = self.activity_rx.recv(), if !self.activity_closed => self.take_activity(a),
                _ = tokio::time::sleep_until(deadline.into()), if !self.inflight.is_empty() => {
                    return Err(format!(
                        "no acknowledgement within {} s: the connection is taken as dead",
                        self.cfg.ack_timeout.as_secs()
                    ));
                }
                                _ = self.stop.changed() => return Err("shutting down".into()),
                _ = self.hb_rx.changed() => {
                    let hb = self.hb_rx.borrow_and_update().clone();
                    if let Some(hb) = hb {
                        // Off the stream's loop: a slow answer delays nothing.
                        let mut c = client.clone();
                        tokio::spawn(async move {
                            if let Err(s) = c.heartbeat(hb).await {
                                tracing::warn!(error = %status_text(&s), "heartbeat refused");
                            }
                        });
                    }
                }
            }
        }
    }

    /// The collector stores batches in order, so when it refuses one as
    /// invalid, that is the oldest in flight: re-sending it would fail
    /// forever, so it is dropped and counted.
    fn drop_if_rejected(&mut self, s: &tonic::Status) {
        use tonic::Code;
        if !matches!(
            s.code(),
            Code::InvalidArgument | Code::ResourceExhausted | Code::OutOfRange
        ) {
            return;
        }
        if let Some(f) = self.inflight.pop_front() {
            let n = f.batch.alerts.len();
            let _ = self.spool.ack_through(f.end);
            let _ = self.activity.ack_through(f.activity_end);
            self.counters
                .dropped_rejected
                .fetch_add(n as u64, Ordering::Relaxed);
            tracing::error!(seq = f.batch.seq, alerts = n, reason = %s.message(), "collector rejected an alert batch; dropped it");
        }
    }

    /// Applies an ack (see [`ack_verdict`]). A bogus one retires nothing,
    /// is counted, and redoes the connection (everything in flight is
    /// re-sent).
    fn retire(&mut self, seq: u64, sent_max: u64) -> Result<(), String> {
        let front = self.inflight.front().map(|f| f.batch.seq);
        match ack_verdict(front, sent_max, seq) {
            AckVerdict::Retire => {
                let f = self.inflight.pop_front().expect("checked");
                if let Err(e) = self.spool.ack_through(f.end) {
                    tracing::error!(error = %e, "cannot record an acknowledgement in the spool: those alerts may be sent again");
                }
                if let Err(e) = self.activity.ack_through(f.activity_end) {
                    tracing::error!(error = %e, "cannot record an acknowledgement in the activity spool: that activity may be sent again");
                }
                self.counters
                    .acked
                    .fetch_add(f.batch.alerts.len() as u64, Ordering::Relaxed);
                self.counters
                    .activity_acked
                    .fetch_add(f.batch.activity.len() as u64, Ordering::Relaxed);
                self.gauge_spool();
                Ok(())
            }
            AckVerdict::Stale => Ok(()),
            AckVerdict::Bogus => {
                self.counters.bogus_acks.fetch_add(1, Ordering::Relaxed);
                Err(format!(
                    "collector acknowledged batch {seq}, which is not the oldest unacknowledged batch sent ({}); nothing retired",
                    front.map_or("none".to_string(), |f| f.to_string())
                ))
            }
        }
    }
}

/// The alert that stands for alerts the spool dropped for room, so the
/// collector shows that something was lost, how much and when.
pub fn gap_alert(host: &HostInfo, gap: Gap) -> Alert {
    let t = vigil_proto::json::rfc3339;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64);
    let mut fields = std::collections::HashMap::new();
    fields.insert("count".to_string(), gap.count.to_string());
    fields.insert("from".to_string(), t(gap.first_ns));
    fields.insert("to".to_string(), t(gap.last_ns));
    Alert {
        id: format!("gap-{}-{now}-{}", host.hostname, gap.count),
        rule: GAP_RULE.into(),
        severity: Severity::Critical as i32,
        output: format!(
            "{} alerts dropped by {}'s spool (full) for events between {} and {}",
            gap.count,
            host.hostname,
            t(gap.first_ns),
            t(gap.last_ns)
        ),
        time_unix_ns: now,
        event_type: "gap".into(),
        fields,
        count: gap.count,
        ..Default::default()
    }
}

/// What an ack does.
#[derive(Debug, PartialEq, Eq)]
enum AckVerdict {
    /// It names the oldest unacked batch: retire it.
    Retire,
    /// It names a batch no longer kept (dropped when too many waited):
    /// nothing to do.
    Stale,
    /// It names a batch not sent on this stream, or one past an older
    /// unacked batch: the collector does not do what it says.
    Bogus,
}

/// The collector acks each batch after storing it, in the order sent. So
/// an ack must name the oldest batch still kept (`front`), or one older
/// than it (dropped meanwhile); never one above `sent_max`, the highest
/// sequence sent on this stream.
fn ack_verdict(front: Option<u64>, sent_max: u64, seq: u64) -> AckVerdict {
    if seq > sent_max {
        return AckVerdict::Bogus;
    }
    match front {
        Some(f) if seq == f => AckVerdict::Retire,
        Some(f) if seq < f => AckVerdict::Stale,
        None => AckVerdict::Stale,
        Some(_) => AckVerdict::Bogus,
    }
}

/// A status on one line with its causes: a TLS refusal (an expired or
/// unknown certificate) is only in the source chain.
fn status_text(s: &tonic::Status) -> String {
    let chain = status_chain(s);
    match explain_tls_failure(&chain) {
        Some(why) => format!("{:?}: {why} ({chain})", s.code()),
        None => format!("{:?}: {chain}", s.code()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_must_be_http_url() {
        assert!(parse_endpoint("http://127.0.0.1:50051", None).is_ok());
        let e = parse_endpoint("127.0.0.1:50051", None)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("`127.0.0.1:50051`") && e.contains("https://"),
            "{e}"
        );
    }

    #[test]
    fn acks_are_believed_only_in_order_and_for_sent_batches() {
        use AckVerdict::*;
        assert_eq!(ack_verdict(Some(5), 7, 5), Retire);
        assert_eq!(
            ack_verdict(Some(5), 7, 4),
            Stale,
            "dropped on overflow, acked late"
        );
        assert_eq!(ack_verdict(None, 7, 7), Stale, "everything already dropped");
        assert_eq!(ack_verdict(Some(5), 7, 6), Bogus, "skips an unacked batch");
        assert_eq!(ack_verdict(Some(5), 7, 8), Bogus, "never sent");
        assert_eq!(ack_verdict(None, 7, 999), Bogus);
    }

    /// A collector that acknowledges a batch nobody sent.
    struct RogueCollector;

    #[tonic::async_trait]
    impl vigil_proto::v1::collector_server::Collector for RogueCollector {
        type StreamAlertsStream =
            tokio_stream::wrappers::ReceiverStream<Result<vigil_proto::v1::Ack, tonic::Status>>;
        type QueryAlertsStream =
            tokio_stream::wrappers::ReceiverStream<Result<Alert, tonic::Status>>;

        async fn stream_alerts(
            &self,
            req: tonic::Request<tonic::Streaming<AlertBatch>>,
        ) -> Result<tonic::Response<Self::StreamAlertsStream>, tonic::Status> {
            let mut inbound = req.into_inner();
            let (tx, rx) = mpsc::channel(4);
            tokio::spawn(async move {
                while let Ok(Some(_)) = inbound.message().await {
                    let ack = vigil_proto::v1::Ack {
                        seq: 999,
                        stored: 1,
                        duplicates: 0,
                        activity_stored: 0,
                    };
                    if tx.send(Ok(ack)).await.is_err() {
                        return;
                    }
                }
            });
            Ok(tonic::Response::new(
                tokio_stream::wrappers::ReceiverStream::new(rx),
            ))
        }

        async fn query_alerts(
            &self,
            _: tonic::Request<vigil_proto::v1::AlertQuery>,
        ) -> Result<tonic::Response<Self::QueryAlertsStream>, tonic::Status> {
            Err(tonic::Status::unimplemented("rogue"))
        }

        async fn query_timeline(
            &self,
            _: tonic::Request<vigil_proto::v1::TimelineQuery>,
        ) -> Result<tonic::Response<vigil_proto::v1::Timeline>, tonic::Status> {
            Err(tonic::Status::unimplemented("rogue"))
        }

        async fn query_tree(
            &self,
            _: tonic::Request<vigil_proto::v1::TreeQuery>,
        ) -> Result<tonic::Response<vigil_proto::v1::ProcessTree>, tonic::Status> {
            Err(tonic::Status::unimplemented("rogue"))
        }

        async fn query_pivot(
            &self,
            _: tonic::Request<vigil_proto::v1::PivotQuery>,
        ) -> Result<tonic::Response<vigil_proto::v1::Pivot>, tonic::Status> {
            Err(tonic::Status::unimplemented("rogue"))
        }

        type QueryAgentsStream = tokio_stream::wrappers::ReceiverStream<
            Result<vigil_proto::v1::AgentStatus, tonic::Status>,
        >;

        async fn heartbeat(
            &self,
            _: tonic::Request<AgentHeartbeat>,
        ) -> Result<tonic::Response<vigil_proto::v1::HeartbeatReply>, tonic::Status> {
            Ok(tonic::Response::new(vigil_proto::v1::HeartbeatReply {}))
        }

        type QueryGroupsStream = tokio_stream::wrappers::ReceiverStream<
            Result<vigil_proto::v1::AlertGroup, tonic::Status>,
        >;
        type GroupHistoryStream = tokio_stream::wrappers::ReceiverStream<
            Result<vigil_proto::v1::AuditEntry, tonic::Status>,
        >;

        async fn query_groups(
            &self,
            _: tonic::Request<vigil_proto::v1::GroupQuery>,
        ) -> Result<tonic::Response<Self::QueryGroupsStream>, tonic::Status> {
            Err(tonic::Status::unimplemented("rogue"))
        }

        async fn update_group(
            &self,
            _: tonic::Request<vigil_proto::v1::GroupUpdate>,
        ) -> Result<tonic::Response<vigil_proto::v1::AlertGroup>, tonic::Status> {
            Err(tonic::Status::unimplemented("rogue"))
        }

        async fn group_history(
            &self,
            _: tonic::Request<vigil_proto::v1::GroupRef>,
        ) -> Result<tonic::Response<Self::GroupHistoryStream>, tonic::Status> {
            Err(tonic::Status::unimplemented("rogue"))
        }

        type QuerySilencesStream = tokio_stream::wrappers::ReceiverStream<
            Result<vigil_proto::v1::SilenceInfo, tonic::Status>,
        >;

        async fn add_silence(
            &self,
            _: tonic::Request<vigil_proto::v1::SilenceSpec>,
        ) -> Result<tonic::Response<vigil_proto::v1::SilenceInfo>, tonic::Status> {
            Err(tonic::Status::unimplemented("rogue"))
        }

        async fn query_silences(
            &self,
            _: tonic::Request<vigil_proto::v1::SilenceQuery>,
        ) -> Result<tonic::Response<Self::QuerySilencesStream>, tonic::Status> {
            Err(tonic::Status::unimplemented("rogue"))
        }

        async fn expire_silence(
            &self,
            _: tonic::Request<vigil_proto::v1::SilenceRef>,
        ) -> Result<tonic::Response<vigil_proto::v1::SilenceInfo>, tonic::Status> {
            Err(tonic::Status::unimplemented("rogue"))
        }

        async fn query_agents(
            &self,
            _: tonic::Request<vigil_proto::v1::AgentQuery>,
        ) -> Result<tonic::Response<Self::QueryAgentsStream>, tonic::Status> {
            Err(tonic::Status::unimplemented("rogue"))
        }
    }

    #[tokio::test]
    async fn an_ack_for_a_batch_never_sent_retires_nothing() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(vigil_proto::v1::collector_server::CollectorServer::new(
                    RogueCollector,
                ))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        let spool = tempfile::tempdir().unwrap();
        let mut cfg = ForwarderConfig::new(format!("http://{addr}"), spool.path());
        cfg.retry_min = Duration::from_millis(20);
        cfg.retry_max = Duration::from_millis(50);
        let f = Forwarder::start(cfg, HostInfo::default()).unwrap();
        for i in 0..3 {
            assert!(f.send(Alert {
                id: format!("a{i}"),
                ..Default::default()
            }));
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while f.counters.bogus_acks.load(Ordering::Relaxed) < 2
            && std::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(
            f.counters.bogus_acks.load(Ordering::Relaxed) >= 2,
            "acks refused, and re-sent after reconnecting"
        );
        assert_eq!(f.counters.acked.load(Ordering::Relaxed), 0);
        assert_eq!(
            f.shutdown(Duration::from_millis(100)).await,
            3,
            "all three still unacknowledged"
        );
    }

    #[tokio::test]
    async fn shutdown_without_collector_counts_what_is_left() {
        let spool = tempfile::tempdir().unwrap();
        let mut cfg = ForwarderConfig::new("http://127.0.0.1:9", spool.path());
        cfg.retry_min = Duration::from_millis(10);
        let f = Forwarder::start(cfg, HostInfo::default()).unwrap();
        for _ in 0..7 {
            assert!(f.send(Alert::default()));
        }
        assert_eq!(
            f.shutdown(Duration::from_millis(300)).await,
            7,
            "kept in the spool"
        );
        // The next start finds them and sends them first.
        let mut cfg = ForwarderConfig::new("http://127.0.0.1:9", spool.path());
        cfg.retry_min = Duration::from_millis(10);
        let f = Forwarder::start(cfg, HostInfo::default()).unwrap();
        assert_eq!(f.counters.spool_depth.load(Ordering::Relaxed), 7);
        assert_eq!(f.shutdown(Duration::from_millis(100)).await, 7);
    }

    #[tokio::test]
    async fn full_queue_counts_drops_instead_of_blocking() {
        let spool = tempfile::tempdir().unwrap();
        let mut cfg = ForwarderConfig::new("http://127.0.0.1:9", spool.path());
        cfg.queue_capacity = 2;
        cfg.retry_min = Duration::from_secs(3600);
        let f = Forwarder::start(cfg, HostInfo::default()).unwrap();
        let mut accepted = 0;
        for _ in 0..1000 {
            if f.send(Alert::default()) {
                accepted += 1;
            }
        }
        let dropped = f.counters.dropped_queue_full.load(Ordering::Relaxed);
        assert_eq!(accepted + dropped, 1000);
        assert!(dropped > 0);
    }
}
