//! The storage interface the collector writes alerts to and queries.
//!
//! [`crate::sql::SqlStore`] implements it on SQLite (the embedded default)
//! and on PostgreSQL (the shared store of several collectors).
use vigil_proto::v1::{AgentHeartbeat, Alert, HostInfo};

use crate::{
    groups::{Actor, AuditRecord, Change, GroupError, GroupFilter, GroupRecord},
    silences::{Matcher, Silence},
};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open database {path}: {message}")]
    Open { path: String, message: String },
    #[error("storage error: {0}")]
    Backend(String),
    /// Another writer got in the way (a deadlock, a serialization
    /// failure): the transaction may succeed when run again.
    #[error("storage conflict: {0}")]
    Conflict(String),
}

impl StoreError {
    /// Whether running the transaction again may succeed.
    pub fn is_conflict(&self) -> bool {
        matches!(self, StoreError::Conflict(_))
    }
}

/// The collector's clock, ns since the epoch.
pub fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

/// What one batch insert did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InsertOutcome {
    /// Alerts newly stored.
    pub stored: u32,
    /// Alerts whose id was already stored (re-sends).
    pub duplicates: u32,
}

/// Which stored alerts a query wants. `None` does not constrain.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AlertFilter {
    pub since_unix_ns: Option<i64>,
    pub host: Option<String>,
    pub rule: Option<String>,
    /// Severity at least this (proto enum value).
    pub min_severity: Option<i32>,
    /// Container id (or a 12+ digit prefix), `host`, or `namespace/pod`.
    pub container: Option<String>,
    /// Only the alert with this id.
    pub id: Option<String>,
    /// At most this many, newest first.
    pub limit: u32,
}

impl AlertFilter {
    /// Whether a stored alert (its host filled in) passes the filter, but
    /// for the id and the limit: for a lookup by id.
    pub fn admits(&self, a: &Alert) -> bool {
        let host = a.host.as_ref().map_or("", |h| h.hostname.as_str());
        let c = a.container.as_ref();
        let container_ok = |want: &str| {
            c.is_some_and(|c| {
                c.id == want
                    || (want.len() >= 12 && c.id.starts_with(want))
                    || (!c.k8s_pod.is_empty()
                        && format!("{}/{}", c.k8s_namespace, c.k8s_pod) == want)
            })
        };
        self.since_unix_ns.is_none_or(|t| a.time_unix_ns >= t)
            && self.host.as_deref().is_none_or(|h| h == host)
            && self.rule.as_deref().is_none_or(|r| r == a.rule)
            && self.min_severity.is_none_or(|s| a.severity >= s)
            && self.container.as_deref().is_none_or(container_ok)
    }
}

/// What the collector thinks of an agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentState {
    /// Heartbeats arrive, every probe program attached, no losses.
    Ok,
    /// Heartbeats arrive, but a probe program is missing or events were lost.
    Degraded,
    /// No heartbeat for the silent-after time.
    Silent,
}

impl AgentState {
    pub fn name(self) -> &'static str {
        match self {
            AgentState::Ok => "ok",
            AgentState::Degraded => "degraded",
            AgentState::Silent => "silent",
        }
    }

    pub fn from_name(s: &str) -> Option<AgentState> {
        [AgentState::Ok, AgentState::Degraded, AgentState::Silent]
            .into_iter()
            .find(|a| a.name() == s)
    }
}

/// One agent in the registry.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentRecord {
    pub hostname: String,
    pub state: AgentState,
    /// Why, when not ok.
    pub reason: String,
    /// When its last heartbeat arrived (collector clock, ns since the epoch).
    pub last_seen_ns: i64,
    pub heartbeat: AgentHeartbeat,
}

/// Durable alert storage, with activity beside it
/// ([`crate::activity::ActivityStore`]). Methods block; async callers use
/// `spawn_blocking`.
pub trait AlertStore: crate::activity::ActivityStore + Send + Sync + 'static {
    /// Stores a batch atomically: when this returns Ok, every alert of the
    /// batch is durable. Alerts whose id is already stored are skipped.
    /// Each new alert is folded into its group ([`crate::groups`]) in the
    /// same transaction, opening or reopening it, and marked with the first
    /// live silence that matches it, whose count grows.
    fn insert_batch(&self, host: &HostInfo, alerts: &[Alert]) -> Result<InsertOutcome, StoreError>;

    /// Alerts matching `filter`, newest first, each with its host filled in.
    fn query(&self, filter: &AlertFilter) -> Result<Vec<Alert>, StoreError>;

    /// Creates or replaces an agent's registry entry.
    fn save_agent(&self, agent: &AgentRecord) -> Result<(), StoreError>;

    /// Every agent in the registry, by host name.
    fn agents(&self) -> Result<Vec<AgentRecord>, StoreError>;

    /// Groups matching `filter`, most recently seen first.
    fn groups(&self, filter: &GroupFilter) -> Result<Vec<GroupRecord>, StoreError>;

    /// Applies a responder's change to the group `id` (or to the group of
    /// the alert `id`) with its audit entry, atomically; returns the
    /// group after it.
    fn update_group(
        &self,
        id: &str,
        change: &Change,
        note: &str,
        who: &Actor,
    ) -> Result<GroupRecord, GroupError>;

    /// The audit trail of the group `id` (or of the alert `id`'s group),
    /// oldest first.
    fn history(&self, id: &str) -> Result<Vec<AuditRecord>, GroupError>;

    /// Stores a new silence lasting until `expires_ns`.
    fn add_silence(
        &self,
        matchers: &[Matcher],
        reason: &str,
        expires_ns: i64,
        who: &Actor,
    ) -> Result<Silence, StoreError>;

    /// Silences, newest first; ended ones only with `include_expired`.
    fn silences(&self, include_expired: bool) -> Result<Vec<Silence>, StoreError>;

    /// Ends the silence `id` now.
    fn expire_silence(&self, id: &str, who: &Actor) -> Result<Silence, GroupError>;

    /// Deletes up to `max` alerts whose event time is before `before_ns`;
    /// returns how many went. Bounded so that ingestion waits at most one
    /// chunk.
    fn prune(&self, before_ns: i64, max: u32) -> Result<u64, StoreError>;

    /// Whether this collector runs the fleet-wide jobs now (the silent-agent
    /// sweep, retention, the notifier's planning): always, unless several
    /// collectors share the store and another holds the lease.
    fn holds_fleet_lease(&self) -> bool {
        true
    }

    /// What [`AlertStore::holds_fleet_lease`] last found, without asking
    /// the database: for the metrics.
    fn fleet_lease_last_seen(&self) -> bool {
        true
    }

    /// Whether several collectors may write this store, so that what one
    /// caches (the agent registry) may be stale.
    fn is_shared(&self) -> bool {
        false
    }

    /// Upkeep with the retention sweep: the storage the next days'
    /// activity needs, keeping what is newer than `keep_activity_from_ns`.
    fn maintain(&self, _keep_activity_from_ns: Option<i64>) -> Result<u32, StoreError> {
        Ok(0)
    }
}
