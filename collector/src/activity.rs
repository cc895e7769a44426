//! The activity store's interface: what agents did besides raising alerts
//! (process starts and exits, connections, DNS queries, alert context),
//! kept with a retention of its own and read by the investigation queries
//! ([`crate::investigate`]).
//!
//! A backend stores two things: each activity event once (by id), and a
//! **process view**, one row per fleet-wide process id, built from every
//! record that names a process: its exec (everything), any other event
//! (identity), an alert's process, and the ancestry and context an alert
//! carries (partial). The queries need only the reads below, so a second
//! backend implements these and the callers do not change.
use vigil_proto::v1::{Activity, Alert, HostInfo, ProcessInfo};

use crate::store::StoreError;

/// How much a process row knows; a row is only ever raised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Detail {
    /// Named only by an alert's ancestry or context: pid, exe, argv.
    Partial = 0,
    /// From one of its events: identity, user, start.
    Identity = 1,
    /// From its exec (or an alert on it): the full context.
    Full = 2,
}

/// One process as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessRow {
    pub hostname: String,
    pub process: ProcessInfo,
    /// The container it ran in, as its exec said.
    pub container: Option<vigil_proto::v1::ContainerInfo>,
    pub detail: Detail,
    /// When it was seen (its exec, or its first record), ns since the epoch.
    pub seen_ns: i64,
    pub exit_ns: Option<i64>,
    pub exit_code: Option<i32>,
}

/// What a pivot looks for. Process pivots read the process view; address
/// and domain pivots read the events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PivotKey {
    Sha256(String),
    Exe(String),
    User(String),
    Image(String),
    Ip(String),
    Domain(String),
}

impl PivotKey {
    pub fn is_process(&self) -> bool {
        matches!(
            self,
            PivotKey::Sha256(_) | PivotKey::Exe(_) | PivotKey::User(_) | PivotKey::Image(_)
        )
    }
}

/// Per host: first and last time seen, and how many matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostSeen {
    pub hostname: String,
    pub first_ns: i64,
    pub last_ns: i64,
    pub count: u64,
}

/// A direction through time from a point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// Oldest first, from `from` on.
    Forward,
    /// Newest first, from `to` back.
    Backward,
}

impl Order {
    /// The SQL ordering keyword.
    pub fn sql(self) -> &'static str {
        match self {
            Order::Forward => "ASC",
            Order::Backward => "DESC",
        }
    }
}

/// One span of a host's timeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Span {
    pub host: String,
    /// Inclusive bounds, ns since the epoch.
    pub from_ns: i64,
    pub to_ns: i64,
    /// Only this pid.
    pub pid: Option<u32>,
    pub order: Order,
    pub limit: u32,
}

/// Durable activity storage. Methods block; async callers use
/// `spawn_blocking`.
pub trait ActivityStore: Send + Sync + 'static {
    /// Stores `activity` from `host` and the context of `alerts` (each
    /// event once, by id), and folds every process they name into the
    /// process view, in one transaction. Returns the events newly stored.
    fn insert_activity(
        &self,
        host: &HostInfo,
        activity: &[Activity],
        alerts: &[Alert],
    ) -> Result<u32, StoreError>;

    /// One stored alert by id, with its host.
    fn alert_by_id(&self, id: &str) -> Result<Option<Alert>, StoreError>;

    /// A host's process by its fleet-wide id.
    fn process(&self, host: &str, proc_id: &str) -> Result<Option<ProcessRow>, StoreError>;

    /// The host's processes whose parent is one of `parents`, oldest
    /// first, at most `limit`.
    fn children(
        &self,
        host: &str,
        parents: &[String],
        limit: u32,
    ) -> Result<Vec<ProcessRow>, StoreError>;

    /// A process's events, oldest first, at most `limit`, and how many it
    /// has in all (counted up to a bound).
    fn process_events(
        &self,
        host: &str,
        proc_id: &str,
        limit: u32,
    ) -> Result<(Vec<Activity>, u64), StoreError>;

    /// Alerts raised on a process, oldest first, at most `limit`.
    fn process_alerts(
        &self,
        host: &str,
        proc_id: &str,
        limit: u32,
    ) -> Result<Vec<Alert>, StoreError>;

    /// A host's activity in a span, in the span's order.
    fn span_activity(&self, span: &Span) -> Result<Vec<Activity>, StoreError>;

    /// A host's alerts in a span, in the span's order.
    fn span_alerts(&self, span: &Span) -> Result<Vec<Alert>, StoreError>;

    /// Hosts where `key` shows up since `since_ns`, from at most `scan`
    /// matches (the newest); true when there were more.
    fn pivot_hosts(
        &self,
        key: &PivotKey,
        since_ns: i64,
        scan: u32,
    ) -> Result<(Vec<HostSeen>, bool), StoreError>;

    /// The newest matches of `key` since `since_ns`, at most `limit`:
    /// processes for a process pivot, events (with their process) for an
    /// address or domain.
    fn pivot_matches(
        &self,
        key: &PivotKey,
        since_ns: i64,
        limit: u32,
    ) -> Result<Vec<(String, Activity)>, StoreError>;

    /// Deletes up to `max` events, and process rows, last seen before
    /// `before_ns`; returns how many went.
    fn prune_activity(&self, before_ns: i64, max: u32) -> Result<u64, StoreError>;
}
