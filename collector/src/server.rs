//! The collector's gRPC service: alert streams in, acks after commit, and
//! investigation queries out, each allowed by the role in the caller's
//! certificate; an agent's alerts are stored under the host its
//! certificate names.
use std::{
    future::Future,
    pin::Pin,
    sync::{atomic::Ordering, Arc},
    time::Duration,
};

use tokio::sync::{mpsc, watch};
use tokio_stream::{wrappers::ReceiverStream, Stream};
use tonic::{Request, Response, Status, Streaming};
use vigil_proto::v1::{
    collector_server::{Collector, CollectorServer},
    Ack, AgentHeartbeat, AgentQuery, AgentStatus, Alert, AlertBatch, AlertGroup, AlertQuery,
    AuditEntry, GroupQuery, GroupRef, GroupUpdate, HeartbeatReply, Pivot, PivotQuery, ProcessTree,
    SilenceInfo, SilenceQuery, SilenceRef, SilenceSpec, Timeline, TimelineQuery, TreeQuery,
};

use crate::{
    agents::{Monitor, SilentAfter},
    groups::{self, Actor, GroupError, GroupFilter, GroupState},
    investigate::{self, InvestigateError},
    metrics::{CollectorMetrics, CollectorSource},
    silences,
    store::{now_ns, AlertFilter, AlertStore},
    tls::{authorize, incoming, ConnInfo, Listener, Peer, Revoked},
};
use vigil_proto::tls::Role;

/// Largest protobuf message accepted (one batch).
pub const MAX_MESSAGE_BYTES: usize = 4 << 20;
/// Most alerts in one batch.
pub const MAX_BATCH_ALERTS: usize = 10_000;
/// Default and maximum number of alerts one query returns.
pub const DEFAULT_QUERY_LIMIT: u32 = 1000;
pub const MAX_QUERY_LIMIT: u32 = 100_000;
const MAX_ID_LEN: usize = 128;

/// How long a stopping collector waits for open connections to finish.
pub const SHUTDOWN_DRAIN: Duration = Duration::from_secs(10);

pub struct CollectorService {
    store: Arc<dyn AlertStore>,
    /// Becomes true when the collector is stopping; agent streams then end
    /// so graceful shutdown does not wait on them forever.
    stopping: watch::Receiver<bool>,
    /// Certificates revoked since their connection was made.
    revoked: Option<Arc<Revoked>>,
    /// The agent registry.
    monitor: Arc<Monitor>,
    metrics: Arc<CollectorMetrics>,
}

impl CollectorService {
    pub fn new(
        store: Arc<dyn AlertStore>,
        stopping: watch::Receiver<bool>,
        revoked: Option<Arc<Revoked>>,
        monitor: Arc<Monitor>,
        metrics: Arc<CollectorMetrics>,
    ) -> CollectorService {
        CollectorService {
            store,
            stopping,
            revoked,
            monitor,
            metrics,
        }
    }

    /// `authorize`, counting refusals.
    fn allow(
        &self,
        info: Option<&ConnInfo>,
        what: &str,
        allowed: fn(Role) -> bool,
    ) -> Result<Option<Arc<Peer>>, Status> {
        authorize(info, self.revoked.as_deref(), what, allowed).map_err(|d| {
            self.metrics.refused.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(remote = ?info.and_then(|i| i.remote), reason = ?d, "{what}: refused");
            Status::from(d)
        })
    }
}

/// How the collector serves, beyond its socket and store.
#[derive(Debug)]
pub struct ServerOptions {
    /// When an agent counts as silent.
    pub silent_after: SilentAfter,
    /// Alerts older than this are deleted (at start, then every
    /// [`PRUNE_EVERY`]); None keeps everything.
    pub retention: Option<Duration>,
    /// The same for activity and the process view.
    pub activity_retention: Option<Duration>,
    /// Where to serve `/metrics`, `/healthz` and `/readyz`; None: nowhere.
    pub metrics: Option<tokio::net::TcpListener>,
    /// The notifier's counters, for `/metrics`.
    pub notify: Option<Arc<crate::metrics::NotifyCounters>>,
    /// The SQLite file, for the store-size metric.
    pub db_path: Option<std::path::PathBuf>,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            silent_after: SilentAfter::Intervals(3),
            retention: Some(DEFAULT_RETENTION),
            activity_retention: Some(DEFAULT_ACTIVITY_RETENTION),
            metrics: None,
            notify: None,
            db_path: None,
        }
    }
}

/// How long alerts are kept by default, and how often old ones are removed.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(90 * 86_400);
pub const DEFAULT_ACTIVITY_RETENTION: Duration = Duration::from_secs(7 * 86_400);
pub const PRUNE_EVERY: Duration = Duration::from_secs(600);
/// Alerts deleted per transaction: ingestion waits at most one chunk.
const PRUNE_CHUNK: u32 = 5_000;

/// What the pruner deletes.
#[derive(Clone, Copy)]
enum Pruned {
    Alerts,
    Activity,
}

/// Deletes alerts older than `alerts` and activity older than `activity`
/// (each None: kept), chunk by chunk, at start and every [`PRUNE_EVERY`],
/// until dropped.
fn spawn_pruner(
    store: Arc<dyn AlertStore>,
    alerts: Option<Duration>,
    activity: Option<Duration>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(PRUNE_EVERY);
        loop {
            tick.tick().await;
            // One collector of those sharing a database prunes; each
            // makes sure the next days' storage is there.
            let st = store.clone();
            let keep_from = activity.and_then(|r| {
                std::time::SystemTime::now()
                    .checked_sub(r)
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map(|d| d.as_nanos() as i64)
            });
            let leader = tokio::task::spawn_blocking(move || {
                if let Err(e) = st.maintain(keep_from) {
                    tracing::error!(error = %e, "cannot prepare storage for the next days");
                }
                st.holds_fleet_lease()
            })
            .await
            .unwrap_or(false);
            if !leader {
                continue;
            }
            for (what, retention) in [(Pruned::Alerts, alerts), (Pruned::Activity, activity)] {
                if let Some(r) = retention {
                    prune_older(&store, what, r).await;
                }
            }
        }
    })
}

async fn prune_older(store: &Arc<dyn AlertStore>, what: Pruned, retention: Duration) {
    let before = std::time::SystemTime::now()
        .checked_sub(retention)
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos() as i64);
    let name = match what {
        Pruned::Alerts => "alerts",
        Pruned::Activity => "activity",
    };
    let mut total = 0u64;
    loop {
        let st = store.clone();
        let done = tokio::task::spawn_blocking(move || match what {
            Pruned::Alerts => st.prune(before, PRUNE_CHUNK),
            Pruned::Activity => st.prune_activity(before, PRUNE_CHUNK),
        })
        .await;
        match done {
            Ok(Ok(n)) => {
                total += n;
                if n < u64::from(PRUNE_CHUNK) {
                    break;
                }
            }
            Ok(Err(e)) => {
                tracing::error!(error = %e, what = name, "cannot delete old records");
                break;
            }
            Err(_) => break,
        }
    }
    if total > 0 {
        tracing::info!(deleted = total, what = name, retention = %humantime::format_duration(retention), "old records deleted");
    }
}

/// Checks that a batch's host is the one the agent's certificate names.
pub fn check_batch_host(b: &AlertBatch, peer: &Peer) -> Result<(), String> {
    let claimed = b.host.as_ref().map_or("", |h| h.hostname.as_str());
    if claimed != peer.host() {
        return Err(format!(
            "batch claims host `{claimed}` but the certificate is for host `{}`; nothing stored",
            peer.host()
        ));
    }
    Ok(())
}

/// Checks a batch from the network before it reaches storage.
pub fn validate_batch(b: &AlertBatch) -> Result<(), String> {
    let host = b.host.as_ref().ok_or("batch has no host")?;
    if host.hostname.is_empty() {
        return Err("batch host has an empty hostname".into());
    }
    if b.alerts.len() > MAX_BATCH_ALERTS {
        return Err(format!(
            "batch has {} alerts; at most {MAX_BATCH_ALERTS}",
            b.alerts.len()
        ));
    }
    for (i, a) in b.alerts.iter().enumerate() {
        if a.id.is_empty() || a.id.len() > MAX_ID_LEN {
            return Err(format!(
                "alert {i} has an id of {} bytes; need 1..={MAX_ID_LEN}",
                a.id.len()
            ));
        }
        if a.rule.is_empty() {
            return Err(format!("alert {i} ({}) has no rule name", a.id));
        }
    }
    Ok(())
}

/// Drops what a batch carries beside its alerts that is not fit to store,
/// and returns how many records went: activity and alert context with a
/// bad id or process id, from more than an hour in the future (retention
/// would never remove it), or over the bounds per alert and per batch; an
/// ancestry past [`MAX_ANCESTRY`] is cut. The alerts themselves stay: a bad
/// activity record never costs an alert.
pub fn sanitize_activity(b: &mut AlertBatch, now_ns: i64) -> u64 {
    let latest = now_ns.saturating_add(3_600_000_000_000);
    let fit = |a: &vigil_proto::v1::Activity| check_activity(a).is_ok() && a.time_unix_ns <= latest;
    let mut dropped = 0u64;
    let mut context_left = MAX_BATCH_ACTIVITY;
    for a in &mut b.alerts {
        if a.process
            .as_ref()
            .is_some_and(|p| check_process(p).is_err())
        {
            if let Some(p) = a.process.as_mut() {
                p.proc_id.clear();
                p.parent_proc_id.clear();
            }
        }
        a.ancestry.truncate(MAX_ANCESTRY);
        for anc in &mut a.ancestry {
            if anc.proc_id.len() > MAX_PROC_ID_LEN {
                anc.proc_id.clear();
            }
        }
        let before = a.context.len();
        a.context.retain(fit);
        a.context.truncate(MAX_ALERT_CONTEXT.min(context_left));
        context_left -= a.context.len();
        dropped += (before - a.context.len()) as u64;
    }
    let before = b.activity.len();
    b.activity.retain(fit);
    b.activity.truncate(MAX_BATCH_ACTIVITY);
    dropped + (before - b.activity.len()) as u64
}

/// Most context events one alert may carry, activity events (and context
/// events) per batch, and creators per alert.
pub const MAX_ALERT_CONTEXT: usize = 256;
pub const MAX_BATCH_ACTIVITY: usize = 20_000;
pub const MAX_ANCESTRY: usize = 128;
/// Longest process id accepted (agents send 24 hex digits).
const MAX_PROC_ID_LEN: usize = 64;

fn check_process(p: &vigil_proto::v1::ProcessInfo) -> Result<(), String> {
    if p.proc_id.len() > MAX_PROC_ID_LEN || p.parent_proc_id.len() > MAX_PROC_ID_LEN {
        return Err(format!(
            "a process id is longer than {MAX_PROC_ID_LEN} bytes"
        ));
    }
    Ok(())
}

fn check_activity(a: &vigil_proto::v1::Activity) -> Result<(), String> {
    if a.id.is_empty() || a.id.len() > MAX_ID_LEN {
        return Err(format!("id of {} bytes; need 1..={MAX_ID_LEN}", a.id.len()));
    }
    if let Some(p) = &a.process {
        check_process(p).map_err(|e| format!("{} : {e}", a.id))?;
    }
    Ok(())
}

fn nonempty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_string())
}

/// A query's limit: the default for 0, capped.
fn bounded(limit: u32) -> u32 {
    match limit {
        0 => DEFAULT_QUERY_LIMIT,
        n => n.min(MAX_QUERY_LIMIT),
    }
}

/// Turns a wire query into a storage filter, bounding the limit.
pub fn filter_from_query(q: &AlertQuery) -> AlertFilter {
    AlertFilter {
        since_unix_ns: (q.since_unix_ns != 0).then_some(q.since_unix_ns),
        host: nonempty(&q.host),
        rule: nonempty(&q.rule),
        min_severity: (q.min_severity != 0).then_some(q.min_severity),
        container: nonempty(&q.container),
        id: nonempty(&q.id),
        limit: bounded(q.limit),
    }
}

/// Who makes a change: the certificate's role and name over TLS, else the
/// local user the client says it runs as (plaintext serves loopback only,
/// where that user can be asked), and the client's address.
fn actor(info: Option<&ConnInfo>, identity: Option<&Peer>, local_user: &str) -> Actor {
    let name = match identity {
        Some(p) => format!("{}:{}", p.role.map_or("unknown", Role::name), p.name),
        None => {
            let user: String = local_user
                .chars()
                .filter(|c| !c.is_control())
                .take(64)
                .collect();
            format!("local:{}", if user.is_empty() { "unknown" } else { &user })
        }
    };
    Actor {
        name,
        client: info
            .and_then(|i| i.remote)
            .map(|a| a.to_string())
            .unwrap_or_default(),
    }
}

/// A group or alert id as a client may send it.
fn check_id(id: &str) -> Result<(), Status> {
    if id.is_empty() || id.len() > MAX_ID_LEN {
        return Err(Status::invalid_argument(format!(
            "an alert group or alert id is 1 to {MAX_ID_LEN} bytes"
        )));
    }
    Ok(())
}

/// Runs store work off the async threads; a group error becomes the
/// status a client can act on.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, GroupError> + Send + 'static,
) -> Result<T, Status> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(|e| match e {
            GroupError::NotFound(_) | GroupError::NoSilence(_) => Status::not_found(e.to_string()),
            GroupError::Refused(_) => Status::failed_precondition(e.to_string()),
            GroupError::Store(e) => {
                tracing::error!(error = %e, "alert group storage failed");
                Status::unavailable(e.to_string())
            }
        })
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// Runs an investigation query off the async threads.
async fn investigating<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, InvestigateError> + Send + 'static,
) -> Result<Response<T>, Status> {
    let r = tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Status::internal(e.to_string()))?;
    match r {
        Ok(v) => Ok(Response::new(v)),
        Err(InvestigateError::Invalid(m)) => Err(Status::invalid_argument(m)),
        Err(InvestigateError::NotFound(m)) => Err(Status::not_found(m)),
        Err(InvestigateError::Store(e)) => {
            tracing::error!(error = %e, "investigation query failed");
            Err(Status::unavailable(e.to_string()))
        }
    }
}

#[tonic::async_trait]
impl Collector for CollectorService {
    type StreamAlertsStream = ReceiverStream<Result<Ack, Status>>;
    type QueryAlertsStream = BoxStream<Alert>;
    type QueryAgentsStream = BoxStream<AgentStatus>;
    type QueryGroupsStream = BoxStream<AlertGroup>;
    type GroupHistoryStream = BoxStream<AuditEntry>;
    type QuerySilencesStream = BoxStream<SilenceInfo>;

    async fn add_silence(
        &self,
        req: Request<SilenceSpec>,
    ) -> Result<Response<SilenceInfo>, Status> {
        let info = req.extensions().get::<ConnInfo>().cloned();
        let identity = self.allow(info.as_ref(), "add silences", Role::may_query)?;
        let spec = req.into_inner();
        let matchers =
            silences::parse_matchers(&spec.matchers).map_err(Status::invalid_argument)?;
        let reason = spec.reason.trim().to_string();
        if reason.is_empty() || reason.len() > silences::MAX_REASON {
            return Err(Status::invalid_argument(format!(
                "a silence needs a reason (--reason TEXT, at most {} bytes)",
                silences::MAX_REASON
            )));
        }
        let max = silences::MAX_DURATION.as_millis() as i64;
        if spec.duration_ms <= 0 || spec.duration_ms > max {
            return Err(Status::invalid_argument(
                "a silence lasts more than 0 and at most 365 days (--for 2h)",
            ));
        }
        let who = actor(info.as_ref(), identity.as_deref(), &spec.local_user);
        let expires = now_ns().saturating_add(spec.duration_ms.saturating_mul(1_000_000));
        let store = self.store.clone();
        let s = blocking(move || {
            store
                .add_silence(&matchers, &reason, expires, &who)
                .map_err(GroupError::from)
        })
        .await?;
        tracing::info!(silence = %s.id, matchers = ?spec.matchers, by = %s.created_by, "silence added");
        Ok(Response::new(SilenceInfo::from(&s)))
    }

    async fn query_silences(
        &self,
        req: Request<SilenceQuery>,
    ) -> Result<Response<Self::QuerySilencesStream>, Status> {
        self.allow(req.extensions().get::<ConnInfo>(), "query", Role::may_query)?;
        let all = req.into_inner().include_expired;
        let store = self.store.clone();
        let list = blocking(move || store.silences(all).map_err(GroupError::from)).await?;
        let stream = tokio_stream::iter(
            list.iter()
                .map(|s| Ok(SilenceInfo::from(s)))
                .collect::<Vec<_>>(),
        );
        Ok(Response::new(Box::pin(stream)))
    }

    async fn expire_silence(
        &self,
        req: Request<SilenceRef>,
    ) -> Result<Response<SilenceInfo>, Status> {
        let info = req.extensions().get::<ConnInfo>().cloned();
        let identity = self.allow(info.as_ref(), "expire silences", Role::may_query)?;
        let r = req.into_inner();
        check_id(&r.id)?;
        let who = actor(info.as_ref(), identity.as_deref(), &r.local_user);
        let store = self.store.clone();
        let s = blocking(move || store.expire_silence(&r.id, &who)).await?;
        tracing::info!(silence = %s.id, by = ?s.expired_by, "silence expired");
        Ok(Response::new(SilenceInfo::from(&s)))
    }

    async fn query_groups(
        &self,
        req: Request<GroupQuery>,
    ) -> Result<Response<Self::QueryGroupsStream>, Status> {
        self.allow(req.extensions().get::<ConnInfo>(), "query", Role::may_query)?;
        self.metrics.queries.fetch_add(1, Ordering::Relaxed);
        let q = req.into_inner();
        let state = match q.state.as_str() {
            "" => None,
            s => Some(GroupState::parse(s).ok_or_else(|| {
                Status::invalid_argument(format!(
                    "unknown group state `{s}`: open, acknowledged, resolved or closed"
                ))
            })?),
        };
        let filter = GroupFilter {
            state,
            since_ns: (q.since_unix_ns > 0).then_some(q.since_unix_ns),
            host: nonempty(&q.host),
            rule: nonempty(&q.rule),
            id: nonempty(&q.id),
            limit: bounded(q.limit),
            ..GroupFilter::default()
        };
        let store = self.store.clone();
        let list = blocking(move || store.groups(&filter).map_err(GroupError::from)).await?;
        let stream = tokio_stream::iter(
            list.iter()
                .map(|g| Ok(AlertGroup::from(g)))
                .collect::<Vec<_>>(),
        );
        Ok(Response::new(Box::pin(stream)))
    }

    async fn update_group(
        &self,
        req: Request<GroupUpdate>,
    ) -> Result<Response<AlertGroup>, Status> {
        let info = req.extensions().get::<ConnInfo>().cloned();
        let identity = self.allow(info.as_ref(), "change alert groups", Role::may_query)?;
        let u = req.into_inner();
        check_id(&u.id)?;
        let change = groups::change_of(&u).map_err(Status::invalid_argument)?;
        let who = actor(info.as_ref(), identity.as_deref(), &u.local_user);
        let store = self.store.clone();
        let id = u.id.clone();
        let note = u.note.clone();
        let g = blocking(move || store.update_group(&id, &change, &note, &who)).await?;
        tracing::info!(group = %g.id, state = g.state.name(), assignee = %g.assignee, "alert group changed");
        Ok(Response::new(AlertGroup::from(&g)))
    }

    async fn group_history(
        &self,
        req: Request<GroupRef>,
    ) -> Result<Response<Self::GroupHistoryStream>, Status> {
        self.allow(req.extensions().get::<ConnInfo>(), "query", Role::may_query)?;
        self.metrics.queries.fetch_add(1, Ordering::Relaxed);
        let id = req.into_inner().id;
        check_id(&id)?;
        let store = self.store.clone();
        let trail = blocking(move || store.history(&id)).await?;
        let stream = tokio_stream::iter(
            trail
                .into_iter()
                .map(|a| Ok(AuditEntry::from(a)))
                .collect::<Vec<_>>(),
        );
        Ok(Response::new(Box::pin(stream)))
    }

    async fn heartbeat(
        &self,
        req: Request<AgentHeartbeat>,
    ) -> Result<Response<HeartbeatReply>, Status> {
        let info = req.extensions().get::<ConnInfo>().cloned();
        let identity = self.allow(info.as_ref(), "send heartbeats", Role::may_stream_alerts)?;
        let hb = req.into_inner();
        let claimed = hb.host.as_ref().map_or("", |h| h.hostname.as_str());
        if claimed.is_empty() || claimed.len() > 253 {
            return Err(Status::invalid_argument(
                "heartbeat without a valid host name",
            ));
        }
        if let Some(id) = identity {
            if claimed != id.host() {
                return Err(Status::permission_denied(format!(
                    "heartbeat claims host `{claimed}` but the certificate is for host `{}`",
                    id.host()
                )));
            }
        }
        let monitor = self.monitor.clone();
        tokio::task::spawn_blocking(move || monitor.heartbeat(hb))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(|e| Status::unavailable(e.to_string()))?;
        Ok(Response::new(HeartbeatReply {}))
    }

    async fn query_agents(
        &self,
        req: Request<AgentQuery>,
    ) -> Result<Response<Self::QueryAgentsStream>, Status> {
        let info = req.extensions().get::<ConnInfo>();
        self.allow(info, "query", Role::may_query)?;
        self.metrics.queries.fetch_add(1, Ordering::Relaxed);
        let list: Vec<Result<AgentStatus, Status>> = self
            .monitor
            .agents()
            .into_iter()
            .map(|a| {
                Ok(AgentStatus {
                    hostname: a.hostname,
                    state: a.state.name().into(),
                    reason: a.reason,
                    last_heartbeat_unix_ns: a.last_seen_ns,
                    last: Some(a.heartbeat),
                })
            })
            .collect();
        Ok(Response::new(Box::pin(tokio_stream::iter(list))))
    }

    async fn stream_alerts(
        &self,
        req: Request<Streaming<AlertBatch>>,
    ) -> Result<Response<Self::StreamAlertsStream>, Status> {
        let info = req.extensions().get::<ConnInfo>().cloned();
        let identity = self.allow(info.as_ref(), "stream alerts", Role::may_stream_alerts)?;
        let addr = info
            .as_ref()
            .and_then(|i| i.remote)
            .map(|a| a.to_string())
            .unwrap_or_default();
        let inbound = req.into_inner();
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(serve_stream(
            self.store.clone(),
            inbound,
            tx,
            Caller {
                addr,
                identity,
                revoked: self.revoked.clone(),
                metrics: self.metrics.clone(),
            },
            self.stopping.clone(),
        ));
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn query_timeline(
        &self,
        req: Request<TimelineQuery>,
    ) -> Result<Response<Timeline>, Status> {
        self.allow(req.extensions().get::<ConnInfo>(), "query", Role::may_query)?;
        self.metrics.queries.fetch_add(1, Ordering::Relaxed);
        let q = req.into_inner();
        if !q.around_alert.is_empty() {
            check_id(&q.around_alert)?;
        }
        let store = self.store.clone();
        investigating(move || investigate::timeline(store.as_ref(), &q, now_ns())).await
    }

    async fn query_tree(&self, req: Request<TreeQuery>) -> Result<Response<ProcessTree>, Status> {
        self.allow(req.extensions().get::<ConnInfo>(), "query", Role::may_query)?;
        self.metrics.queries.fetch_add(1, Ordering::Relaxed);
        let q = req.into_inner();
        check_id(&q.alert_id)?;
        let store = self.store.clone();
        investigating(move || investigate::tree(store.as_ref(), &q)).await
    }

    async fn query_pivot(&self, req: Request<PivotQuery>) -> Result<Response<Pivot>, Status> {
        self.allow(req.extensions().get::<ConnInfo>(), "query", Role::may_query)?;
        self.metrics.queries.fetch_add(1, Ordering::Relaxed);
        let q = req.into_inner();
        let store = self.store.clone();
        investigating(move || investigate::pivot(store.as_ref(), &q, now_ns())).await
    }

    async fn query_alerts(
        &self,
        req: Request<AlertQuery>,
    ) -> Result<Response<Self::QueryAlertsStream>, Status> {
        let info = req.extensions().get::<ConnInfo>();
        self.allow(info, "query", Role::may_query)?;
        self.metrics.queries.fetch_add(1, Ordering::Relaxed);
        let filter = filter_from_query(req.get_ref());
        let store = self.store.clone();
        let alerts = tokio::task::spawn_blocking(move || store.query(&filter))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(|e| {
                tracing::error!(error = %e, "query failed");
                Status::unavailable(e.to_string())
            })?;
        let stream = tokio_stream::iter(alerts.into_iter().map(Ok));
        Ok(Response::new(Box::pin(stream)))
    }
}

/// Who sends an alert stream.
struct Caller {
    addr: String,
    /// From the certificate; None on plaintext loopback.
    identity: Option<Arc<Peer>>,
    revoked: Option<Arc<Revoked>>,
    metrics: Arc<CollectorMetrics>,
}

/// Counts an open stream while it lives.
struct OpenStream(Arc<CollectorMetrics>);

impl OpenStream {
    fn new(m: &Arc<CollectorMetrics>) -> OpenStream {
        m.streams_open.fetch_add(1, Ordering::Relaxed);
        OpenStream(m.clone())
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.0.streams_open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Stores each batch of one agent stream, in order, and acks it after the
/// commit. A bad batch ends the stream with an error; earlier batches stay.
async fn serve_stream(
    store: Arc<dyn AlertStore>,
    mut inbound: Streaming<AlertBatch>,
    tx: mpsc::Sender<Result<Ack, Status>>,
    caller: Caller,
    mut stopping: watch::Receiver<bool>,
) {
    let peer = caller.addr.as_str();
    let metrics = caller.metrics.clone();
    let _open = OpenStream::new(&metrics);
    loop {
        let next = tokio::select! {
            m = inbound.message() => m,
            _ = async { let _ = stopping.wait_for(|s| *s).await; } => {
                // Unacked batches are re-sent by the agent to the next collector.
                let _ = tx.send(Err(Status::unavailable("collector is shutting down"))).await;
                return;
            }
        };
        let batch = match next {
            Ok(Some(b)) => b,
            Ok(None) => return,
            Err(s) => {
                // e.g. an oversized or undecodable message: tell the agent why.
                tracing::warn!(%peer, error = %s.message(), "agent stream failed");
                let _ = tx.send(Err(s)).await;
                return;
            }
        };
        if let Some(id) = &caller.identity {
            // A revocation ends streams opened before it.
            if caller
                .revoked
                .as_ref()
                .is_some_and(|r| r.contains(&id.serial))
            {
                metrics.batches_rejected.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%peer, agent = %id.name, "certificate revoked: stream ended");
                let _ = tx
                    .send(Err(Status::unauthenticated(format!(
                        "certificate `{}` has been revoked",
                        id.name
                    ))))
                    .await;
                return;
            }
            if let Err(reason) = check_batch_host(&batch, id) {
                metrics.batches_rejected.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%peer, seq = batch.seq, %reason, "rejected alert batch");
                let _ = tx.send(Err(Status::permission_denied(reason))).await;
                return;
            }
        }
        if let Err(reason) = validate_batch(&batch) {
            metrics.batches_rejected.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(%peer, seq = batch.seq, %reason, "rejected alert batch");
            let _ = tx.send(Err(Status::invalid_argument(reason))).await;
            return;
        }
        let mut batch = batch;
        let unfit = sanitize_activity(&mut batch, now_ns());
        if unfit > 0 {
            metrics
                .activity_rejected
                .fetch_add(unfit, Ordering::Relaxed);
            tracing::warn!(%peer, seq = batch.seq, dropped = unfit, "activity records not fit to store were dropped (bad id or process id, from the future, or over the bounds); the batch's alerts are stored");
        }
        let seq = batch.seq;
        let labels: Vec<(String, i32)> = batch
            .alerts
            .iter()
            .map(|a| (a.rule.clone(), a.severity))
            .collect();
        let arrived = std::time::Instant::now();
        let activity_bytes: usize = {
            use prost::Message as _;
            batch.activity.iter().map(|a| a.encoded_len()).sum()
        };
        let st = store.clone();
        let res = tokio::task::spawn_blocking(move || {
            let host = batch.host.unwrap_or_default();
            // Alerts first: activity never holds an alert back. Both are
            // idempotent, so a failure between them is mended by the
            // agent's re-send.
            let outcome = st.insert_batch(&host, &batch.alerts)?;
            let activity = st.insert_activity(&host, &batch.activity, &batch.alerts)?;
            Ok::<_, crate::store::StoreError>((outcome, activity, host.hostname))
        })
        .await;
        match res {
            Ok(Ok((outcome, activity, host))) => {
                metrics
                    .activity_stored
                    .fetch_add(u64::from(activity), Ordering::Relaxed);
                metrics
                    .activity_bytes
                    .fetch_add(activity_bytes as u64, Ordering::Relaxed);
                if metrics.store_failing.swap(false, Ordering::Relaxed) {
                    tracing::info!(
                        failed_batches = metrics.batches_failed.load(Ordering::Relaxed),
                        "storage recovered: alert batches are stored again"
                    );
                }
                metrics.committed(
                    labels,
                    outcome.stored,
                    outcome.duplicates,
                    arrived.elapsed(),
                );
                tracing::debug!(%peer, %host, seq, stored = outcome.stored, duplicates = outcome.duplicates, "batch stored");
                let ack = Ack {
                    seq,
                    stored: outcome.stored,
                    duplicates: outcome.duplicates,
                    activity_stored: activity,
                };
                if tx.send(Ok(ack)).await.is_err() {
                    return;
                }
            }
            Ok(Err(e)) => {
                metrics.batches_failed.fetch_add(1, Ordering::Relaxed);
                // Logged once per outage (a full disk fails every batch of
                // every agent), not once per batch.
                if !metrics.store_failing.swap(true, Ordering::Relaxed) {
                    tracing::error!(%peer, seq, error = %e, "cannot store alert batches (disk full?); agents keep them in their spools and re-send; logged again when storage recovers");
                } else {
                    tracing::debug!(%peer, seq, error = %e, "cannot store alert batch");
                }
                let _ = tx.send(Err(Status::unavailable(e.to_string()))).await;
                return;
            }
            Err(e) => {
                let _ = tx.send(Err(Status::internal(e.to_string()))).await;
                return;
            }
        }
    }
}

/// Serves the collector API on `listener` until `shutdown` resolves, then
/// ends agent streams and waits up to [`SHUTDOWN_DRAIN`] for connections.
pub async fn run(
    listener: Listener,
    store: Arc<dyn AlertStore>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    run_with(listener, store, ServerOptions::default(), shutdown).await
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Transport(#[from] tonic::transport::Error),
    #[error("cannot read the agent registry: {0}")]
    Store(#[from] crate::store::StoreError),
}

/// [`run`] with options.
pub async fn run_with(
    listener: Listener,
    store: Arc<dyn AlertStore>,
    opts: ServerOptions,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    let monitor = {
        let (s, after) = (store.clone(), opts.silent_after);
        Arc::new(
            tokio::task::spawn_blocking(move || Monitor::new(s, after))
                .await
                .map_err(|e| crate::store::StoreError::Backend(e.to_string()))??,
        )
    };
    let metrics = Arc::new(CollectorMetrics::default());
    let (metrics_stop, metrics_stopped) = tokio::sync::oneshot::channel::<()>();
    if let Some(l) = opts.metrics {
        let source = Arc::new(CollectorSource {
            metrics: metrics.clone(),
            monitor: monitor.clone(),
            db: opts.db_path.clone(),
            store: store.clone(),
            notify: opts.notify.clone(),
        });
        tokio::spawn(vigil_metrics::serve(l, source, async {
            let _ = metrics_stopped.await;
        }));
    }
    let _metrics_stop = metrics_stop;
    let sweeper = monitor.spawn_sweeper();
    let _stop_sweeper = scopeguard(Some(sweeper));
    // Always: besides pruning, it keeps the next days' storage ready.
    let pruner = Some(spawn_pruner(
        store.clone(),
        opts.retention,
        opts.activity_retention,
    ));
    let _stop_pruner = scopeguard(pruner);
    let (stop_tx, stop_rx) = watch::channel(false);
    let revoked = listener.tls.as_ref().map(|t| t.revoked().clone());
    // Rotation and revocation without a restart; ends with the server.
    let reloader = listener.tls.as_ref().map(|t| t.spawn_reloader());
    let _stop_reloader = scopeguard(reloader);
    metrics.ready.store(true, Ordering::Relaxed);
    let svc = CollectorServer::new(CollectorService::new(
        store,
        stop_rx.clone(),
        revoked,
        monitor,
        metrics,
    ))
    .max_decoding_message_size(MAX_MESSAGE_BYTES)
    .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let mut stop_signal = stop_rx;
    let serve = tonic::transport::Server::builder()
        .add_service(svc)
        .serve_with_incoming_shutdown(incoming(listener), async move {
            let _ = stop_signal.wait_for(|s| *s).await.map(|_| ());
        });
    tokio::pin!(serve);
    tokio::select! {
        r = &mut serve => return Ok(r?),
        _ = shutdown => { let _ = stop_tx.send(true); }
    }
    match tokio::time::timeout(SHUTDOWN_DRAIN, serve).await {
        Ok(r) => Ok(r?),
        Err(_) => {
            tracing::warn!("connections still open after {SHUTDOWN_DRAIN:?}; stopping anyway");
            Ok(())
        }
    }
}

/// Aborts the reloader task when the server returns.
fn scopeguard(task: Option<tokio::task::JoinHandle<()>>) -> impl Drop {
    struct Abort(Option<tokio::task::JoinHandle<()>>);
    impl Drop for Abort {
        fn drop(&mut self) {
            if let Some(t) = &self.0 {
                t.abort();
            }
        }
    }
    Abort(task)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_proto::v1::HostInfo;

    fn batch(n: usize) -> AlertBatch {
        AlertBatch {
            host: Some(HostInfo {
                hostname: "h".into(),
                ..Default::default()
            }),
            seq: 1,
            alerts: (0..n)
                .map(|i| Alert {
                    id: format!("id{i}"),
                    rule: "r".into(),
                    ..Default::default()
                })
                .collect(),
            activity: Vec::new(),
        }
    }

    #[test]
    fn validates_hostile_batches() {
        assert!(validate_batch(&batch(3)).is_ok());
        let mut b = batch(1);
        b.host = None;
        assert_eq!(validate_batch(&b).unwrap_err(), "batch has no host");
        assert!(validate_batch(&batch(MAX_BATCH_ALERTS + 1))
            .unwrap_err()
            .contains("at most"));
        let mut b = batch(1);
        b.alerts[0].id = "x".repeat(1000);
        assert!(validate_batch(&b).unwrap_err().contains("id of 1000 bytes"));
        let mut b = batch(1);
        b.alerts[0].rule.clear();
        assert!(validate_batch(&b).unwrap_err().contains("no rule"));
        // Activity and alert context are held to bounds as well, record by
        // record: the alerts always stay.
        let ev = |id: &str| vigil_proto::v1::Activity {
            id: id.into(),
            ..Default::default()
        };
        let now = 1_000_000_000_000;
        let mut b = batch(2);
        b.activity = vec![ev("a"), ev(""), ev("b")];
        b.activity[2].time_unix_ns = now + 7_200_000_000_000;
        b.alerts[0].context = (0..=MAX_ALERT_CONTEXT)
            .map(|i| ev(&i.to_string()))
            .collect();
        b.alerts[1].ancestry = vec![Default::default(); MAX_ANCESTRY + 5];
        let mut e = ev("x");
        e.process = Some(vigil_proto::v1::ProcessInfo {
            proc_id: "p".repeat(65),
            ..Default::default()
        });
        b.alerts[1].context = vec![e];
        assert!(validate_batch(&b).is_ok());
        assert_eq!(sanitize_activity(&mut b, now), 2 + 1 + 1);
        assert_eq!(b.alerts.len(), 2);
        assert_eq!(b.activity.len(), 1);
        assert_eq!(b.alerts[0].context.len(), MAX_ALERT_CONTEXT);
        assert!(b.alerts[1].context.is_empty());
        assert_eq!(b.alerts[1].ancestry.len(), MAX_ANCESTRY);
        let mut b = batch(1);
        b.activity = (0..=MAX_BATCH_ACTIVITY)
            .map(|i| ev(&i.to_string()))
            .collect();
        assert_eq!(sanitize_activity(&mut b, now), 1);
    }

    #[test]
    fn query_limits_are_bounded() {
        let f = filter_from_query(&AlertQuery::default());
        assert_eq!(
            f,
            AlertFilter {
                limit: DEFAULT_QUERY_LIMIT,
                ..Default::default()
            }
        );
        let f = filter_from_query(&AlertQuery {
            limit: u32::MAX,
            host: "h".into(),
            ..Default::default()
        });
        assert_eq!(f.limit, MAX_QUERY_LIMIT);
        assert_eq!(f.host.as_deref(), Some("h"));
    }
}
