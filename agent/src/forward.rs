//! Delivery of alerts to the collector over a gRPC stream.
//!
//! Alerts enter a bounded queue (full: counted and dropped, never blocking
//! the event path). A worker groups them into numbered batches, keeps every
//! batch until the collector acks it (acks come only after a commit), and on
//! a broken or refused connection retries with backoff and re-sends what is
//! unacked. The collector stores each alert id once, so re-sends are safe.
//!
//! Over `https://` the collector's certificate is checked against the CA
//! and the URL's host, and the agent presents its own. An ack is believed
//! only for the oldest batch sent on the current stream and not yet acked:
//! a rogue or confused collector cannot make the agent discard alerts it
//! never stored by acking a sequence number ahead of what was sent.
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
use vigil_proto::{
    tls::{endpoint, error_chain, explain_tls_failure, status_chain, ClientTls, EndpointError},
    v1::{collector_client::CollectorClient, Alert, AlertBatch, HostInfo},
};

#[derive(Debug, Clone)]
pub struct ForwarderConfig {
    /// `https://host:port` of the collector (`http://` for a plaintext
    /// collector on loopback).
    pub endpoint: String,
    /// This agent's certificate, key and the collector's CA, for https.
    pub tls: Option<ClientTls>,
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
            tls: None,
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
    /// Acks for a batch that was not the oldest unacked one sent on the
    /// stream; each ended the connection, and nothing was retired.
    pub bogus_acks: AtomicU64,
    pub acked: AtomicU64,
}

#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error(transparent)]
    Endpoint(#[from] EndpointError),
}

/// Handle to the forwarding worker.
pub struct Forwarder {
    tx: mpsc::Sender<Alert>,
    pub counters: Arc<ForwardCounters>,
    task: JoinHandle<()>,
}

/// Checks a collector URL and TLS files the way the forwarder will use them.
pub fn parse_endpoint(url: &str, tls: Option<&ClientTls>) -> Result<Endpoint, ForwardError> {
    Ok(endpoint(url, tls)?)
}

impl Forwarder {
    pub fn start(cfg: ForwarderConfig, host: HostInfo) -> Result<Forwarder, ForwardError> {
        let endpoint = parse_endpoint(&cfg.endpoint, cfg.tls.as_ref())?;
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
            self.refresh_endpoint();
            let err = match self.endpoint.connect().await {
                Ok(channel) => {
                    tracing::info!(collector = %self.cfg.endpoint, "connected to collector");
                    delay = self.cfg.retry_min;
                    match self.session(CollectorClient::new(channel)).await {
                        Ok(()) => return,
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

    /// Rereads the TLS files before a connection, so a certificate
    /// rotated on disk is used from the next reconnect; files that no
    /// longer load leave the previous settings in force (logged).
    fn refresh_endpoint(&mut self) {
        if self.cfg.tls.is_none() {
            return;
        }
        match parse_endpoint(&self.cfg.endpoint, self.cfg.tls.as_ref()) {
            Ok(e) => self.endpoint = e,
            Err(e) => {
                tracing::error!(error = %e, "TLS files not reloaded; the previous ones stay in use")
            }
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
        // The highest sequence number sent on this stream: acks above it
        // are for batches the collector never received from us.
        let mut sent_max = 0u64;
        for b in &self.unacked {
            sent_max = b.seq;
            let _ = out.send(b.clone());
        }
        let mut acks = client
            .stream_alerts(UnboundedReceiverStream::new(out_rx))
            .await
            .map_err(|s| format!("stream refused: {}", status_text(&s)))?
            .into_inner();
        loop {
            if self.done() {
                return Ok(());
            }
            tokio::select! {
                ack = acks.message() => match ack {
                    Ok(Some(ack)) => self.retire(ack.seq, sent_max)?,
                    Ok(None) => return Err("collector closed the stream".into()),
                    Err(s) => {
                        self.drop_if_rejected(&s);
                        return Err(format!("stream error: {}", status_text(&s)));
                    }
                },
                a = self.rx.recv(), if !self.input_closed => match a {
                    Some(a) => {
                        let batch = self.next_batch(a);
                        sent_max = batch.seq;
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

    /// Applies an ack (see [`ack_verdict`]). A bogus one retires nothing,
    /// is counted, and redoes the connection (everything unacked is
    /// re-sent).
    fn retire(&mut self, seq: u64, sent_max: u64) -> Result<(), String> {
        let front = self.unacked.front().map(|b| b.seq);
        match ack_verdict(front, sent_max, seq) {
            AckVerdict::Retire => {
                let b = self.unacked.pop_front().expect("checked");
                self.unacked_alerts -= b.alerts.len();
                self.counters
                    .acked
                    .fetch_add(b.alerts.len() as u64, Ordering::Relaxed);
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
        let mut cfg = ForwarderConfig::new(format!("http://{addr}"));
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
