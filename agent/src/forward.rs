//! Delivery of alerts to the collector over a gRPC stream.
//!
//! Alerts enter a bounded queue (full: counted and dropped, never blocking
//! the event path). A worker groups them into numbered batches, keeps every
//! batch until the collector acks it (acks come only after a commit), and on
//! a broken or refused connection retries with backoff and re-sends what is
//! unacked. The collector stores each alert id once, so re-sends are safe.
use std::{
    collections::VecDeque,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use tokio::{sync::mpsc, task::JoinHandle};
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::transport::{Channel, Endpoint};
use vigil_proto::v1::{collector_client::CollectorClient, Alert, AlertBatch, HostInfo};

#[derive(Debug, Clone)]
pub struct ForwarderConfig {
    /// `http://host:port` of the collector.
    pub endpoint: String,
    /// Alerts waiting for the worker; beyond this they are dropped and counted.
    pub queue_capacity: usize,
    /// Alerts sent but not yet acked, kept for re-sending; beyond this the
    /// oldest are dropped and counted.
    pub max_unacked: usize,
    /// Most alerts in one batch.
    pub batch_max: usize,
    /// Most encoded bytes in one batch (the collector accepts 4 MiB).
    pub batch_max_bytes: usize,
    pub retry_min: Duration,
    pub retry_max: Duration,
}

impl ForwarderConfig {
    pub fn new(endpoint: impl Into<String>) -> ForwarderConfig {
        ForwarderConfig {
            endpoint: endpoint.into(),
            queue_capacity: 10_000,
            max_unacked: 100_000,
            batch_max: 256,
            batch_max_bytes: 1 << 20,
            retry_min: Duration::from_millis(500),
            retry_max: Duration::from_secs(30),
        }
    }
}

/// Delivery counters, reported in the agent's periodic stats.
#[derive(Debug, Default)]
pub struct ForwardCounters {
    /// Dropped because the queue was full.
    pub dropped_queue_full: AtomicU64,
    /// Dropped because too many alerts were waiting for an ack.
    pub dropped_unacked_overflow: AtomicU64,
    /// Unacked when the agent stopped.
    pub dropped_at_shutdown: AtomicU64,
    /// Refused by the collector as invalid (would be refused again).
    pub dropped_rejected: AtomicU64,
    pub acked: AtomicU64,
}

#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("invalid collector address `{0}`: {1}")]
    Endpoint(String, String),
}

/// Handle to the forwarding worker.
pub struct Forwarder {
    tx: mpsc::Sender<Alert>,
    pub counters: Arc<ForwardCounters>,
    task: JoinHandle<()>,
}

/// Checks a collector URL the way the forwarder will use it.
pub fn parse_endpoint(url: &str) -> Result<Endpoint, ForwardError> {
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(ForwardError::Endpoint(
            url.into(),
            "expected http://HOST:PORT".into(),
        ));
    }
    Endpoint::from_shared(url.to_string())
        .map(|e| e.connect_timeout(Duration::from_secs(5)))
        .map_err(|e| ForwardError::Endpoint(url.into(), e.to_string()))
}

impl Forwarder {
    pub fn start(cfg: ForwarderConfig, host: HostInfo) -> Result<Forwarder, ForwardError> {
        let endpoint = parse_endpoint(&cfg.endpoint)?;
        let (tx, rx) = mpsc::channel(cfg.queue_capacity);
        let counters = Arc::new(ForwardCounters::default());
        let worker = Worker {
            cfg,
            host,
            endpoint,
            rx,
            input_closed: false,
            unacked: VecDeque::new(),
            unacked_alerts: 0,
            next_seq: 1,
            counters: counters.clone(),
        };
        let task = tokio::spawn(worker.run());
        Ok(Forwarder { tx, counters, task })
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

    /// Stops taking alerts and waits up to `grace` for the collector to ack
    /// what is queued. Returns the number of alerts left undelivered.
    pub async fn shutdown(self, grace: Duration) -> u64 {
        let Forwarder {
            tx,
            counters,
            mut task,
        } = self;
        drop(tx);
        if tokio::time::timeout(grace, &mut task).await.is_err() {
            task.abort();
            // The worker counts what it still holds when dropped; wait for that.
            let _ = task.await;
            tracing::error!("collector did not ack every alert before shutdown");
        }
        counters.dropped_at_shutdown.load(Ordering::Relaxed)
    }
}

struct Worker {
    cfg: ForwarderConfig,
    host: HostInfo,
    endpoint: Endpoint,
    rx: mpsc::Receiver<Alert>,
    input_closed: bool,
    unacked: VecDeque<AlertBatch>,
    unacked_alerts: usize,
    next_seq: u64,
    counters: Arc<ForwardCounters>,
}

impl Drop for Worker {
    fn drop(&mut self) {
        let left = self.unacked_alerts as u64 + self.rx.len() as u64;
        if left > 0 {
            self.counters
                .dropped_at_shutdown
                .fetch_add(left, Ordering::Relaxed);
            tracing::error!(
                alerts = left,
                "alerts not delivered to the collector before shutdown"
            );
        }
    }
}

impl Worker {
    fn done(&self) -> bool {
        self.input_closed && self.unacked.is_empty()
    }

    async fn run(mut self) {
        let mut delay = self.cfg.retry_min;
        while !self.done() {
            let err = match self.endpoint.connect().await {
                Ok(channel) => {
                    tracing::info!(collector = %self.cfg.endpoint, "connected to collector");
                    delay = self.cfg.retry_min;
                    match self.session(CollectorClient::new(channel)).await {
                        Ok(()) => return,
                        Err(e) => e,
                    }
                }
                Err(e) => format!("{e}: {}", source_chain(&e)),
            };
            tracing::warn!(
                collector = %self.cfg.endpoint,
                error = %err,
                retry_in_ms = delay.as_millis() as u64,
                unacked = self.unacked_alerts,
                "collector unreachable; alerts are kept and re-sent when it is back"
            );
            self.absorb_for(delay).await;
            delay = (delay * 2).min(self.cfg.retry_max);
        }
    }

    /// Waits `d` while still taking alerts off the queue, so a collector
    /// outage fills the bounded unacked buffer rather than the queue.
    async fn absorb_for(&mut self, d: Duration) {
        let sleep = tokio::time::sleep(d);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                _ = &mut sleep => return,
                a = self.rx.recv(), if !self.input_closed => match a {
                    Some(a) => { self.next_batch(a); }
                    None => self.input_closed = true,
                },
            }
        }
    }

    /// One connection: re-send everything unacked, then stream new batches
    /// and retire batches as acks arrive. Ok when the input is closed and
    /// all is acked; Err (a reason) when the connection must be redone.
    async fn session(&mut self, mut client: CollectorClient<Channel>) -> Result<(), String> {
        let (out, out_rx) = mpsc::unbounded_channel();
        for b in &self.unacked {
            let _ = out.send(b.clone());
        }
        let mut acks = client
            .stream_alerts(UnboundedReceiverStream::new(out_rx))
            .await
            .map_err(|s| format!("stream refused: {}", s.message()))?
            .into_inner();
        loop {
            if self.done() {
                return Ok(());
            }
            tokio::select! {
                ack = acks.message() => match ack {
                    Ok(Some(ack)) => self.retire(ack.seq),
                    Ok(None) => return Err("collector closed the stream".into()),
                    Err(s) => {
                        self.drop_if_rejected(&s);
                        return Err(format!("stream error: {}", s.message()));
                    }
                },
                a = self.rx.recv(), if !self.input_closed => match a {
                    Some(a) => {
                        let batch = self.next_batch(a);
                        if out.send(batch).is_err() {
                            return Err("stream closed".into());
                        }
                    }
                    None => self.input_closed = true,
                },
            }
        }
    }

    /// The collector stores batches in order, so when it refuses one as
    /// invalid, that is the oldest unacked batch: re-sending it would fail
    /// forever, so it is dropped and counted.
    fn drop_if_rejected(&mut self, s: &tonic::Status) {
        use tonic::Code;
        if !matches!(
            s.code(),
            Code::InvalidArgument | Code::ResourceExhausted | Code::OutOfRange
        ) {
            return;
        }
        if let Some(b) = self.unacked.pop_front() {
            self.unacked_alerts -= b.alerts.len();
            self.counters
                .dropped_rejected
                .fetch_add(b.alerts.len() as u64, Ordering::Relaxed);
            tracing::error!(seq = b.seq, alerts = b.alerts.len(), reason = %s.message(), "collector rejected an alert batch; dropped it");
        }
    }

    /// Groups `first` with whatever else is queued into a new unacked batch,
    /// bounded in count and bytes.
    fn next_batch(&mut self, first: Alert) -> AlertBatch {
        use prost::Message as _;
        let mut bytes = first.encoded_len();
        let mut alerts = vec![first];
        while alerts.len() < self.cfg.batch_max && bytes < self.cfg.batch_max_bytes {
            match self.rx.try_recv() {
                Ok(a) => {
                    bytes += a.encoded_len();
                    alerts.push(a);
                }
                Err(_) => break,
            }
        }
        let batch = AlertBatch {
            host: Some(self.host.clone()),
            seq: self.next_seq,
            alerts,
        };
        self.next_seq += 1;
        self.unacked_alerts += batch.alerts.len();
        self.unacked.push_back(batch.clone());
        self.enforce_unacked_bound();
        batch
    }

    fn enforce_unacked_bound(&mut self) {
        while self.unacked_alerts > self.cfg.max_unacked {
            let Some(old) = self.unacked.pop_front() else {
                break;
            };
            self.unacked_alerts -= old.alerts.len();
            self.counters
                .dropped_unacked_overflow
                .fetch_add(old.alerts.len() as u64, Ordering::Relaxed);
            tracing::error!(
                alerts = old.alerts.len(),
                "collector unreachable too long: dropped the oldest unacked alerts"
            );
        }
    }

    /// Acks are cumulative: everything up to `seq` is stored.
    fn retire(&mut self, seq: u64) {
        while self.unacked.front().is_some_and(|b| b.seq <= seq) {
            let b = self.unacked.pop_front().expect("checked");
            self.unacked_alerts -= b.alerts.len();
            self.counters
                .acked
                .fetch_add(b.alerts.len() as u64, Ordering::Relaxed);
        }
    }
}

fn source_chain(e: &dyn std::error::Error) -> String {
    let mut parts = Vec::new();
    let mut cur = e.source();
    while let Some(s) = cur {
        parts.push(s.to_string());
        cur = s.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_must_be_http_url() {
        assert!(parse_endpoint("http://127.0.0.1:50051").is_ok());
        let e = parse_endpoint("127.0.0.1:50051").unwrap_err().to_string();
        assert!(
            e.contains("`127.0.0.1:50051`") && e.contains("http://"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn shutdown_without_collector_counts_what_is_left() {
        let mut cfg = ForwarderConfig::new("http://127.0.0.1:9");
        cfg.retry_min = Duration::from_millis(10);
        let f = Forwarder::start(cfg, HostInfo::default()).unwrap();
        for _ in 0..7 {
            assert!(f.send(Alert::default()));
        }
        assert_eq!(f.shutdown(Duration::from_millis(300)).await, 7);
    }

    #[tokio::test]
    async fn full_queue_counts_drops_instead_of_blocking() {
        let mut cfg = ForwarderConfig::new("http://127.0.0.1:9");
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
