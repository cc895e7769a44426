//! The store over SQL: one row per alert with the filter columns broken
//! out and the full alert kept as protobuf bytes; groups, their audit
//! trail, silences, the notification outbox and the agent registry beside
//! them; activity and the process view in `sql/activity.rs`.
//!
//! Every statement is written once and runs on SQLite (one file, WAL; the
//! embedded default) or on PostgreSQL (the shared store of several
//! collectors) through the query layer in `sql/db.rs`. Where several
//! collectors share a database, what they race for is settled in it:
//! alert ids are keys (a re-send anywhere is a no-op), a group's row is
//! locked while an alert is folded into it, audit entries are numbered in
//! commit order, the outbox is claimed row by row, and the fleet-wide
//! jobs run where the fleet lease is held ([`SqlStore::holds_fleet_lease`]).
use std::{collections::HashMap, path::Path, sync::Mutex};

use prost::Message;
use rusqlite::Connection;
use sha2::{Digest, Sha256};
use vigil_proto::v1::{AgentHeartbeat, Alert, HostInfo};

use crate::{
    activity::Detail,
    groups::{
        self, Actor, AuditRecord, Change, GroupError, GroupFilter, GroupRecord, GroupState, Reason,
    },
    silences::{Matcher, Silence},
    store::{now_ns, AgentRecord, AgentState, AlertFilter, AlertStore, InsertOutcome, StoreError},
    vals,
};

mod activity;
pub mod console;
pub mod db;
pub mod partitions;
pub mod postgres;
pub mod schema;
pub mod throwaway;

use db::{Db, DbError, Dialect, Row, SqliteDb, TxError};
pub use schema::Migrated;

/// The fleet lease: a session-level advisory lock (PostgreSQL) that one
/// collector of those sharing a database holds; it runs the notifier's
/// planning, the silent-agent sweep and retention.
const FLEET_LEASE: i64 = 0x5649_4749_4c00_0003;

/// Serializes audit appends on PostgreSQL until commit, so that entries
/// become visible in the order of their numbers: the notifier's cursor
/// never passes an entry a slower transaction has yet to commit.
const AUDIT_LOCK: i64 = 0x5649_4749_4c00_0004;

/// How long a claimed notification is kept from other senders: longer
/// than any attempt takes (a crashed sender's claim runs out, and its
/// notification is sent again).
const CLAIM_NS: i64 = 300 * 1_000_000_000;

/// Where the store keeps its data.
enum Backend {
    Sqlite {
        /// The writer: batches, the registry, pruning.
        conn: Mutex<Connection>,
        /// A second connection for queries: with WAL, a reader sees the
        /// last commit and never blocks the writer, so a query of
        /// thousands of rows does not stall ingestion. None for an
        /// in-memory database.
        reader: Option<Mutex<Connection>>,
    },
    Postgres {
        pool: Box<postgres::Pool>,
        /// The connection for the fleet lease, and whether it holds it.
        lease: Mutex<Option<(postgres::Owned, bool)>>,
    },
}

pub struct SqlStore {
    backend: Backend,
    /// Process ids whose row is known to hold at least this much
    /// (`activity::Detail`), so most events skip the process upsert.
    known_procs: Mutex<HashMap<String, Detail>>,
    /// What opening did to the schema.
    migrated: Migrated,
    /// Whether the last look found this collector holding the fleet lease.
    lease_seen: std::sync::atomic::AtomicBool,
}

fn poisoned() -> DbError {
    DbError::new("database lock poisoned")
}

impl SqlStore {
    /// Opens the database `db` names: a `postgres://` or `postgresql://`
    /// address, or a SQLite file path (created if missing; its directory
    /// must exist). Migrates the schema first.
    pub fn open_db(db: &str) -> Result<SqlStore, StoreError> {
        if is_postgres_address(db) {
            SqlStore::connect(db)
        } else {
            SqlStore::open(Path::new(db))
        }
    }

    /// Opens (creating if needed) the SQLite database at `path`. The
    /// parent directory must exist.
    pub fn open(path: &Path) -> Result<SqlStore, StoreError> {
        let open_err = |message: String| StoreError::Open {
            path: path.display().to_string(),
            message,
        };
        if path.is_dir() {
            return Err(open_err(
                "is a directory; give a file path such as alerts.db".into(),
            ));
        }
        match path.parent() {
            Some(p) if !p.as_os_str().is_empty() && !p.is_dir() => {
                return Err(open_err(format!(
                    "directory {} does not exist",
                    p.display()
                )));
            }
            _ => {}
        }
        let conn = Connection::open(path).map_err(|e| open_err(e.to_string()))?;
        let mut store = Self::init(conn).map_err(|e| open_err(e.to_string()))?;
        let reader = Connection::open_with_flags(
            path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .and_then(|r| {
            r.busy_timeout(std::time::Duration::from_secs(5))?;
            r.pragma_update(None, "cache_size", -65_536)?;
            Ok(r)
        })
        .map_err(|e| open_err(e.to_string()))?;
        if let Backend::Sqlite { reader: r, .. } = &mut store.backend {
            *r = Some(Mutex::new(reader));
        }
        Ok(store)
    }

    /// A private in-memory SQLite database (tests, dry runs).
    pub fn in_memory() -> Result<SqlStore, StoreError> {
        Self::init(Connection::open_in_memory().map_err(DbError::from)?)
            .map_err(|e| StoreError::Backend(e.to_string()))
    }

    fn init(conn: Connection) -> Result<SqlStore, rusqlite::Error> {
        // WAL: readers do not block the writer; FULL sync: an ack means on disk.
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        let migrated = schema::migrate_sqlite(&conn)?;
        // The activity indexes are large: a bigger page cache keeps their
        // upper levels in memory (64 MiB per connection, at most).
        conn.pragma_update(None, "cache_size", -65_536)?;
        // Checkpoints every 64 MiB of WAL rather than 4: a page changed by
        // many commits in between reaches the database file once.
        conn.pragma_update(None, "wal_autocheckpoint", 16_384)?;
        Ok(SqlStore {
            backend: Backend::Sqlite {
                conn: Mutex::new(conn),
                reader: None,
            },
            known_procs: Mutex::new(HashMap::new()),
            migrated,
            lease_seen: true.into(),
        })
    }

    /// Connects to PostgreSQL at `url` (`postgres://USER@HOST/DB`, a Unix
    /// socket directory with `?host=/dir`), migrates its schema and makes
    /// the activity partitions of the days around now.
    pub fn connect(url: &str) -> Result<SqlStore, StoreError> {
        let open_err = |e: DbError| StoreError::Open {
            path: redact(url),
            message: e.message,
        };
        let pool = postgres::Pool::connect(url).map_err(open_err)?;
        let migrated = schema::migrate_postgres(&pool).map_err(open_err)?;
        let store = SqlStore {
            backend: Backend::Postgres {
                pool: Box::new(pool),
                lease: Mutex::new(None),
            },
            known_procs: Mutex::new(HashMap::new()),
            migrated,
            lease_seen: false.into(),
        };
        store.maintain_partitions(None)?;
        Ok(store)
    }

    /// Which engine this store runs on.
    pub fn dialect(&self) -> Dialect {
        match self.backend {
            Backend::Sqlite { .. } => Dialect::Sqlite,
            Backend::Postgres { .. } => Dialect::Postgres,
        }
    }

    /// The schema version found on opening, and the one left.
    pub fn migrated(&self) -> Migrated {
        self.migrated
    }

    /// Runs `f` in a transaction on the writer and commits it (on
    /// PostgreSQL, again when it lost a deadlock).
    fn write<T: Send, E: TxError + Send>(
        &self,
        mut f: impl FnMut(&mut dyn Db) -> Result<T, E> + Send,
    ) -> Result<T, E> {
        match &self.backend {
            Backend::Sqlite { conn, .. } => {
                let mut conn = conn.lock().map_err(|_| poisoned())?;
                let tx = conn.transaction().map_err(DbError::from)?;
                let v = f(&mut SqliteDb(&tx))?;
                tx.commit().map_err(DbError::from)?;
                Ok(v)
            }
            Backend::Postgres { pool, .. } => pool.write(f),
        }
    }

    /// Runs `f` on a connection for reading: SQLite's reader when there is
    /// one.
    fn read<T: Send, E: From<DbError> + Send>(
        &self,
        f: impl FnOnce(&mut dyn Db) -> Result<T, E> + Send,
    ) -> Result<T, E> {
        match &self.backend {
            Backend::Sqlite { conn, reader } => {
                let conn = reader
                    .as_ref()
                    .unwrap_or(conn)
                    .lock()
                    .map_err(|_| poisoned())?;
                f(&mut SqliteDb(&conn))
            }
            Backend::Postgres { pool, .. } => pool.read(f),
        }
    }

    /// Whether this collector runs the fleet-wide jobs (the notifier's
    /// planning, the silent-agent sweep, retention) now. Always on SQLite,
    /// whose file has one collector. On PostgreSQL the first collector to
    /// take the lease keeps it while its connection lives; when it goes,
    /// another takes it at its next try.
    pub fn holds_fleet_lease(&self) -> bool {
        let Backend::Postgres { pool, lease } = &self.backend else {
            return true;
        };
        let held = postgres::off_runtime(|| {
            let Ok(mut slot) = lease.lock() else {
                return false;
            };
            // One connection for the lease, kept: the holder's keeps the
            // lock; the others' try again on it.
            if slot.as_mut().is_some_and(|(c, _)| c.client().is_closed()) {
                *slot = None;
            }
            if slot.is_none() {
                match pool.dedicated() {
                    Ok(c) => *slot = Some((c, false)),
                    Err(_) => return false,
                }
            }
            let Some((c, held)) = slot.as_mut() else {
                return false;
            };
            if *held {
                if c.client().simple_query("SELECT 1").is_ok() {
                    return true;
                }
                tracing::warn!("lost the fleet lease with the database connection; another collector may take it");
                *slot = None;
                return false;
            }
            match c
                .client()
                .query_one("SELECT pg_try_advisory_lock($1)", &[&FLEET_LEASE])
            {
                Ok(r) if r.get::<_, bool>(0) => {
                    *held = true;
                    tracing::info!("this collector holds the fleet lease: it runs notifications, the silent-agent sweep and retention");
                    true
                }
                Ok(_) => false,
                Err(_) => {
                    *slot = None;
                    false
                }
            }
        });
        self.lease_seen
            .store(held, std::sync::atomic::Ordering::Relaxed);
        held
    }

    /// The database's size on disk, indexes included.
    pub fn size_bytes(&self) -> Result<u64, StoreError> {
        let sql = match self.dialect() {
            Dialect::Sqlite => {
                "SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()"
            }
            Dialect::Postgres => "SELECT pg_database_size(current_database())",
        };
        self.count_where(sql)
    }

    /// Whether several collectors may share this database (PostgreSQL):
    /// what one holds in memory may be stale.
    pub fn is_shared(&self) -> bool {
        self.dialect() == Dialect::Postgres
    }

    /// PostgreSQL: makes the activity partitions from `keep_from_ns`'s day
    /// (or a week back) to two days ahead. Nothing on SQLite.
    pub fn maintain_partitions(&self, keep_from_ns: Option<i64>) -> Result<u32, StoreError> {
        if self.dialect() != Dialect::Postgres {
            return Ok(0);
        }
        let today = partitions::day_of(now_ns());
        let first = keep_from_ns
            .map_or(today - 7, partitions::day_of)
            .max(today - 400);
        self.write(|db| partitions::ensure(db, first, today + 2).map_err(StoreError::from))
    }
}

/// Whether `db` is a PostgreSQL address rather than a file path.
pub fn is_postgres_address(db: &str) -> bool {
    db.starts_with("postgres://") || db.starts_with("postgresql://")
}

/// A PostgreSQL address without its password, for messages.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    match rest.split_once('@') {
        Some((user, host)) if user.contains(':') => {
            let name = user.split(':').next().unwrap_or("");
            format!("{scheme}://{name}:***@{host}")
        }
        _ => url.to_string(),
    }
}

impl AlertStore for SqlStore {
    fn add_silence(
        &self,
        matchers: &[Matcher],
        reason: &str,
        expires_ns: i64,
        who: &Actor,
    ) -> Result<Silence, StoreError> {
        let now = now_ns();
        let texts: Vec<String> = matchers.iter().map(Matcher::text).collect();
        let digest = Sha256::digest(format!("{now}\0{texts:?}\0{reason}\0{}", who.name));
        let id: String = digest[..6].iter().map(|b| format!("{b:02x}")).collect();
        self.write(|db| {
            db.exec(
                "INSERT INTO silences (id, matchers, reason, created_by, created_ns, expires_ns,
                     expired_by, matched)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, NULL, 0)",
                vals![
                    &id,
                    serde_json::to_string(&texts).unwrap_or_default(),
                    reason,
                    &who.name,
                    now,
                    expires_ns
                ],
            )
            .map_err(StoreError::from)
        })?;
        Ok(Silence {
            id,
            matchers: matchers.to_vec(),
            reason: reason.into(),
            created_by: who.name.clone(),
            created_ns: now,
            expires_ns,
            expired_by: None,
            matched: 0,
        })
    }

    fn silences(&self, include_expired: bool) -> Result<Vec<Silence>, StoreError> {
        self.read(|db| {
            db.map(
                &format!(
                    "SELECT {SILENCE_COLUMNS} FROM silences WHERE ?1 OR expires_ns > ?2
                     ORDER BY created_ns DESC"
                ),
                vals![include_expired, now_ns()],
                silence_row,
            )
            .map_err(StoreError::from)
        })
    }

    fn expire_silence(&self, id: &str, who: &Actor) -> Result<Silence, GroupError> {
        let now = now_ns();
        self.write(|db| {
            let find = |db: &mut dyn Db| -> Result<Silence, GroupError> {
                db.row(
                    &format!("SELECT {SILENCE_COLUMNS} FROM silences WHERE id = ?1"),
                    vals![id],
                )?
                .map(|r| silence_row(&r))
                .transpose()?
                .ok_or_else(|| GroupError::NoSilence(id.into()))
            };
            let s = find(db)?;
            if !s.is_active(now) {
                return Err(GroupError::Refused(format!(
                    "silence {id} has ended already"
                )));
            }
            db.exec(
                "UPDATE silences SET expires_ns = ?2, expired_by = ?3 WHERE id = ?1",
                vals![id, now, &who.name],
            )?;
            find(db)
        })
    }

    fn groups(&self, f: &GroupFilter) -> Result<Vec<GroupRecord>, StoreError> {
        self.read(|db| {
            db.map(
                &format!(
                    "SELECT {GROUP_COLUMNS} FROM groups
                     WHERE (CAST(?1 AS TEXT) IS NULL OR state = ?1)
                       AND (CAST(?2 AS BIGINT) IS NULL OR last_seen_ns >= ?2)
                       AND (CAST(?3 AS TEXT) IS NULL OR hostname = ?3)
                       AND (CAST(?4 AS TEXT) IS NULL OR rule = ?4)
                       AND (CAST(?6 AS TEXT) IS NULL OR id = ?6)
                       AND (CAST(?7 AS BIGINT) IS NULL OR severity >= ?7)
                       AND (CAST(?8 AS TEXT) IS NULL OR LOWER(tags) LIKE LOWER(?8) ESCAPE '\\')
                     ORDER BY last_seen_ns DESC, id
                     LIMIT ?5"
                ),
                vals![
                    f.state.map(GroupState::name),
                    f.since_ns,
                    &f.host,
                    &f.rule,
                    f.limit,
                    &f.id,
                    f.min_severity,
                    f.tag.as_ref().map(|t| format!("%,{},%", like_escape(t)))
                ],
                group_row,
            )
            .map_err(StoreError::from)
        })
    }

    fn update_group(
        &self,
        id: &str,
        change: &Change,
        note: &str,
        who: &Actor,
    ) -> Result<GroupRecord, GroupError> {
        self.write(|db| {
            let g = find_group(db, id, true)?;
            let (state, reason, assignee, action, detail) = groups::apply(&g, change, note)?;
            let now = now_ns();
            let changed_ns = if state != g.state {
                now
            } else {
                g.state_changed_ns
            };
            db.exec(
                "UPDATE groups SET state = ?2, reason = ?3, assignee = ?4, state_changed_ns = ?5
                 WHERE id = ?1",
                vals![
                    &g.id,
                    state.name(),
                    reason.map(Reason::name),
                    assignee,
                    changed_ns
                ],
            )?;
            append_audit(db, &g.id, now, who, action, &detail, None)?;
            find_group(db, &g.id, false)
        })
    }

    fn history(&self, id: &str) -> Result<Vec<AuditRecord>, GroupError> {
        self.read(|db| {
            let g = find_group(db, id, false)?;
            Ok(db.map(
                "SELECT group_id, time_ns, actor, client, action, detail FROM audit
                 WHERE group_id = ?1 ORDER BY seq",
                vals![&g.id],
                |r| {
                    Ok(AuditRecord {
                        group_id: r.get(0)?,
                        time_ns: r.get(1)?,
                        actor: r.get(2)?,
                        client: r.get(3)?,
                        action: r.get(4)?,
                        detail: r.get(5)?,
                    })
                },
            )?)
        })
    }

    fn insert_batch(&self, host: &HostInfo, alerts: &[Alert]) -> Result<InsertOutcome, StoreError> {
        self.write(|db| insert_alerts(db, host, alerts).map_err(StoreError::from))
    }

    fn query(&self, f: &AlertFilter) -> Result<Vec<Alert>, StoreError> {
        if let Some(id) = &f.id {
            // By its key, then the other filters.
            let one = crate::activity::ActivityStore::alert_by_id(self, id)?;
            let only = AlertFilter {
                id: None,
                ..f.clone()
            };
            return Ok(one
                .into_iter()
                .filter(|a| only.admits(a))
                .take(f.limit.max(1) as usize)
                .collect());
        }
        let bodies = self.read(|db| {
            db.map(
                "SELECT body FROM alerts
                 WHERE (CAST(?1 AS BIGINT) IS NULL OR time_unix_ns >= ?1)
                   AND (CAST(?2 AS TEXT) IS NULL OR hostname = ?2)
                   AND (CAST(?3 AS TEXT) IS NULL OR rule = ?3)
                   AND (CAST(?4 AS BIGINT) IS NULL OR severity >= ?4)
                   AND (CAST(?6 AS TEXT) IS NULL OR container_id = ?6 OR k8s_pod = ?6
                        OR (length(CAST(?6 AS TEXT)) >= 12 AND substr(container_id, 1, length(CAST(?6 AS TEXT))) = ?6))
                   AND (CAST(?7 AS TEXT) IS NULL OR id = ?7)
                 ORDER BY time_unix_ns DESC, id
                 LIMIT ?5",
                vals![
                    f.since_unix_ns,
                    &f.host,
                    &f.rule,
                    f.min_severity,
                    f.limit,
                    &f.container,
                    &f.id
                ],
                |r| r.get::<Vec<u8>>(0),
            )
            .map_err(StoreError::from)
        })?;
        decode_alerts(&bodies)
    }

    fn save_agent(&self, a: &AgentRecord) -> Result<(), StoreError> {
        self.write(|db| {
            db.exec(
                "INSERT INTO agents (hostname, state, reason, last_seen_ns, heartbeat)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT(hostname) DO UPDATE SET state = excluded.state,
                     reason = excluded.reason, last_seen_ns = excluded.last_seen_ns,
                     heartbeat = excluded.heartbeat",
                vals![
                    &a.hostname,
                    a.state.name(),
                    &a.reason,
                    a.last_seen_ns,
                    a.heartbeat.encode_to_vec()
                ],
            )
            .map_err(StoreError::from)
        })?;
        Ok(())
    }

    fn prune(&self, before_ns: i64, max: u32) -> Result<u64, StoreError> {
        self.write(|db| {
            db.exec(
                "DELETE FROM alerts WHERE id IN
                   (SELECT id FROM alerts WHERE time_unix_ns < ?1 LIMIT ?2)",
                vals![before_ns, max],
            )
            .map_err(StoreError::from)
        })
    }

    fn agents(&self) -> Result<Vec<AgentRecord>, StoreError> {
        self.read(|db| {
            db.map(
                "SELECT hostname, state, reason, last_seen_ns, heartbeat FROM agents
                 ORDER BY hostname",
                &[],
                |r| {
                    let state: String = r.get(1)?;
                    let hb: Vec<u8> = r.get(4)?;
                    Ok(AgentRecord {
                        hostname: r.get(0)?,
                        state: AgentState::from_name(&state).unwrap_or(AgentState::Degraded),
                        reason: r.get(2)?,
                        last_seen_ns: r.get(3)?,
                        heartbeat: AgentHeartbeat::decode(hb.as_slice()).unwrap_or_default(),
                    })
                },
            )
            .map_err(StoreError::from)
        })
    }

    fn holds_fleet_lease(&self) -> bool {
        SqlStore::holds_fleet_lease(self)
    }

    fn fleet_lease_last_seen(&self) -> bool {
        self.lease_seen.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn is_shared(&self) -> bool {
        SqlStore::is_shared(self)
    }

    fn maintain(&self, keep_activity_from_ns: Option<i64>) -> Result<u32, StoreError> {
        self.maintain_partitions(keep_activity_from_ns)
    }
}

/// Rows one multi-row `INSERT` carries at most: one statement (and one
/// round trip to PostgreSQL) per chunk rather than per row, with every
/// statement's parameter count well inside both engines' limits.
pub(crate) const ROWS_PER_INSERT: usize = 64;

/// `INSERT INTO {table} ({columns}) VALUES (...), ... {tail}` for `rows`
/// rows of `width` parameters each.
pub(crate) fn multi_insert(
    table: &str,
    columns: &str,
    width: usize,
    rows: usize,
    tail: &str,
) -> String {
    let mut sql = format!("INSERT INTO {table} ({columns}) VALUES ");
    for r in 0..rows {
        sql.push_str(if r == 0 { "(" } else { ", (" });
        for c in 0..width {
            if c > 0 {
                sql.push_str(", ");
            }
            sql.push_str(&format!("?{}", r * width + c + 1));
        }
        sql.push(')');
    }
    sql.push(' ');
    sql.push_str(tail);
    sql
}

const ALERT_COLUMNS: &str = "id, time_unix_ns, received_ns, hostname, machine_id, rule, severity, \
     pid, exe, body, container_id, k8s_pod, group_id, silenced_by, proc_id";

/// An alert of a batch, ready to store.
struct Incoming<'a> {
    alert: &'a Alert,
    group_id: String,
    container: String,
    key: std::collections::BTreeMap<String, String>,
    silenced_by: Option<String>,
}

/// Stores a batch of alerts (see [`AlertStore::insert_batch`]): the rows
/// in chunks, then each group once with what the batch's new alerts add
/// to it.
fn insert_alerts(
    db: &mut dyn Db,
    host: &HostInfo,
    alerts: &[Alert],
) -> Result<InsertOutcome, DbError> {
    let received = now_ns();
    let silences = live_silences(db, received)?;
    let incoming: Vec<Incoming<'_>> = alerts
        .iter()
        .map(|a| {
            let (group_id, container, key) = groups::identify(host, a);
            let silenced_by = silences
                .iter()
                .find(|s| s.matches(host, a))
                .map(|s| s.id.clone());
            Incoming {
                alert: a,
                group_id,
                container,
                key,
                silenced_by,
            }
        })
        .collect();
    // The ids the database did not have: those it returns.
    let mut new_ids = std::collections::HashSet::new();
    for chunk in incoming.chunks(ROWS_PER_INSERT) {
        let mut params = Vec::with_capacity(chunk.len() * 15);
        for i in chunk {
            let a = i.alert;
            let mut stored = a.clone();
            // The context is stored as activity, beside the alert.
            stored.context.clear();
            stored.host = Some(host.clone());
            stored.group_id = i.group_id.clone();
            stored.silenced_by = i.silenced_by.clone().unwrap_or_default();
            let (pid, exe) = a
                .process
                .as_ref()
                .map_or((None, None), |p| (Some(p.pid), Some(p.exe.clone())));
            let k8s_pod = a
                .container
                .as_ref()
                .filter(|c| !c.k8s_pod.is_empty())
                .map(|c| format!("{}/{}", c.k8s_namespace, c.k8s_pod));
            params.extend_from_slice(vals![
                &a.id,
                a.time_unix_ns,
                received,
                &host.hostname,
                &host.machine_id,
                &a.rule,
                a.severity,
                pid,
                exe,
                stored.encode_to_vec(),
                a.container.as_ref().map(|c| c.id.clone()),
                k8s_pod,
                &i.group_id,
                &i.silenced_by,
                a.process
                    .as_ref()
                    .map(|p| p.proc_id.as_str())
                    .filter(|p| !p.is_empty()),
            ]);
        }
        let sql = multi_insert(
            "alerts",
            ALERT_COLUMNS,
            15,
            chunk.len(),
            "ON CONFLICT DO NOTHING RETURNING id",
        );
        for r in db.rows(&sql, &params)? {
            new_ids.insert(r.get::<String>(0)?);
        }
    }
    // New alerts (an id twice in one batch counts once), by group in the
    // order each group first appears.
    let mut out = InsertOutcome::default();
    let mut by_group: Vec<(&str, Vec<&Incoming<'_>>)> = Vec::new();
    let mut matched: std::collections::BTreeMap<&str, u64> = Default::default();
    for i in &incoming {
        if !new_ids.remove(&i.alert.id) {
            out.duplicates += 1;
            continue;
        }
        out.stored += 1;
        if let Some(s) = &i.silenced_by {
            *matched.entry(s.as_str()).or_default() += 1;
        }
        match by_group.iter_mut().find(|(g, _)| *g == i.group_id) {
            Some((_, members)) => members.push(i),
            None => by_group.push((&i.group_id, vec![i])),
        }
    }
    for (silence, n) in matched {
        db.exec(
            "UPDATE silences SET matched = matched + ?2 WHERE id = ?1",
            vals![silence, n],
        )?;
    }
    for (_, members) in &by_group {
        fold_into_group(db, host, members, received)?;
    }
    Ok(out)
}

/// The group columns, in [`group_row`]'s order.
const GROUP_COLUMNS: &str = "id, rule, severity, hostname, container, state, reason, assignee, \
     count, first_seen_ns, last_seen_ns, output, key, state_changed_ns, tags";

fn group_row(r: &Row) -> Result<GroupRecord, DbError> {
    let state: String = r.get(5)?;
    let reason: Option<String> = r.get(6)?;
    let key: String = r.get(12)?;
    Ok(GroupRecord {
        id: r.get(0)?,
        rule: r.get(1)?,
        severity: r.get(2)?,
        hostname: r.get(3)?,
        container: r.get(4)?,
        state: GroupState::parse(&state).unwrap_or(GroupState::Open),
        reason: reason.and_then(|r| Reason::parse(&r).ok()),
        assignee: r.get(7)?,
        count: r.get::<i64>(8)? as u64,
        first_seen_ns: r.get(9)?,
        last_seen_ns: r.get(10)?,
        output: r.get(11)?,
        key: serde_json::from_str(&key).unwrap_or_default(),
        state_changed_ns: r.get(13)?,
        tags: split_tags(&r.get::<String>(14)?),
    })
}

/// Stored alert bodies, decoded.
pub(crate) fn decode_alerts(bodies: &[Vec<u8>]) -> Result<Vec<Alert>, StoreError> {
    bodies
        .iter()
        .map(|b| {
            Alert::decode(b.as_slice())
                .map_err(|e| StoreError::Backend(format!("corrupt stored alert: {e}")))
        })
        .collect()
}

/// Tags as the groups table keeps them: `,a,b,`, so that a filter can
/// look for `,tag,`.
fn join_tags(tags: &[String]) -> String {
    let mut s = String::from(",");
    for t in tags {
        s.push_str(&t.replace(',', " "));
        s.push(',');
    }
    s
}

/// `s` matched literally by LIKE ... ESCAPE '\\'.
fn like_escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_")
}

fn split_tags(s: &str) -> Vec<String> {
    s.split(',')
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .collect()
}

/// One audit entry; `alert_id` for the entries an alert caused (opened,
/// reopened), which the notifier follows.
fn append_audit(
    db: &mut dyn Db,
    group_id: &str,
    time_ns: i64,
    who: &Actor,
    action: &str,
    detail: &str,
    alert_id: Option<&str>,
) -> Result<(), DbError> {
    if db.dialect() == Dialect::Postgres {
        db.exec("SELECT pg_advisory_xact_lock(?1)", vals![AUDIT_LOCK])?;
    }
    db.exec(
        "INSERT INTO audit (group_id, time_ns, actor, client, action, detail, alert_id)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        vals![
            group_id,
            time_ns,
            &who.name,
            &who.client,
            action,
            detail,
            alert_id
        ],
    )?;
    Ok(())
}

/// Counts a batch's new alerts of one group in it: opens the group, or
/// adds to it and reopens it when it was resolved or closed, saying so in
/// its audit trail, as if they came one by one in batch order. A group
/// opened by a silenced alert is not announced; the first alert after it
/// that no silence covers announces it (an `announced` entry the notifier
/// treats as the opening). The group's row is made or locked first, so
/// collectors sharing a database fold alerts of one group one at a time.
fn fold_into_group(
    db: &mut dyn Db,
    host: &HostInfo,
    members: &[&Incoming<'_>],
    now: i64,
) -> Result<(), DbError> {
    let Some(first) = members.first() else {
        return Ok(());
    };
    let group_id = first.group_id.as_str();
    let a = first.alert;
    let count: i64 = members.iter().map(|m| m.alert.count.max(1) as i64).sum();
    let severity = members
        .iter()
        .map(|m| m.alert.severity)
        .max()
        .unwrap_or(a.severity);
    let first_ns = members
        .iter()
        .map(|m| m.alert.time_unix_ns)
        .min()
        .unwrap_or(0);
    // The newest by event time gives the output (of equals, the later in
    // the batch, as `max_by_key` picks).
    let newest = members
        .iter()
        .max_by_key(|m| m.alert.time_unix_ns)
        .map_or(a, |m| m.alert);
    let silenced = first.silenced_by.is_some();
    // The first alert after the opening one that no silence covers.
    let announcer = members[1..].iter().find(|m| m.silenced_by.is_none());
    let collector = Actor::collector();
    let opened = db.exec(
        "INSERT INTO groups (id, rule, severity, hostname, container, state, reason,
             assignee, count, first_seen_ns, last_seen_ns, output, key, state_changed_ns,
             announced, tags)
         VALUES (?1, ?2, ?3, ?4, ?5, 'open', NULL, '', ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)
         ON CONFLICT DO NOTHING",
        vals![
            group_id,
            &a.rule,
            severity,
            &host.hostname,
            &first.container,
            count,
            first_ns,
            newest.time_unix_ns,
            &newest.output,
            serde_json::to_string(&first.key).unwrap_or_default(),
            now,
            !silenced,
            join_tags(&a.tags)
        ],
    )?;
    let announce = |db: &mut dyn Db, by: &Alert| -> Result<(), DbError> {
        db.exec(
            "UPDATE groups SET announced = 1 WHERE id = ?1",
            vals![group_id],
        )?;
        append_audit(
            db,
            group_id,
            now,
            &collector,
            "announced",
            &format!("first alert no silence covers: {}", by.id),
            Some(&by.id),
        )
    };
    if opened == 1 {
        append_audit(
            db,
            group_id,
            now,
            &collector,
            "opened",
            &format!("first alert {}", a.id),
            Some(&a.id),
        )?;
        if let (true, Some(m)) = (silenced, announcer) {
            announce(db, m.alert)?;
        }
        return Ok(());
    }
    let lock = db.dialect().for_update();
    let Some(before) = db.row(
        &format!("SELECT state, reason, announced FROM groups WHERE id = ?1{lock}"),
        vals![group_id],
    )?
    else {
        return Err(DbError::new(format!(
            "group {group_id} vanished while an alert was added"
        )));
    };
    let (state, reason, announced): (String, Option<String>, bool) =
        (before.get(0)?, before.get(1)?, before.get(2)?);
    // SET expressions read the row as it was, so `output` follows the
    // newest alert by event time even when alerts arrive out of order.
    db.exec(
        "UPDATE groups SET count = count + ?2,
             severity = CASE WHEN ?3 > severity THEN ?3 ELSE severity END,
             first_seen_ns = CASE WHEN ?4 < first_seen_ns THEN ?4 ELSE first_seen_ns END,
             output = CASE WHEN ?5 >= last_seen_ns THEN ?6 ELSE output END,
             last_seen_ns = CASE WHEN ?5 > last_seen_ns THEN ?5 ELSE last_seen_ns END
         WHERE id = ?1",
        vals![
            group_id,
            count,
            severity,
            first_ns,
            newest.time_unix_ns,
            &newest.output
        ],
    )?;
    if GroupState::parse(&state).is_some_and(GroupState::is_done) {
        db.exec(
            "UPDATE groups SET state = 'open', reason = NULL, state_changed_ns = ?2,
                 announced = ?3
             WHERE id = ?1",
            vals![group_id, now, !silenced],
        )?;
        let was = match reason {
            Some(r) => format!("{state} as {r}"),
            None => state,
        };
        append_audit(
            db,
            group_id,
            now,
            &collector,
            "reopened",
            &format!("new alert {} (was {was})", a.id),
            Some(&a.id),
        )?;
        if let (true, Some(m)) = (silenced, announcer) {
            announce(db, m.alert)?;
        }
    } else if !announced {
        if let Some(m) = members.iter().find(|m| m.silenced_by.is_none()) {
            announce(db, m.alert)?;
        }
    }
    Ok(())
}

const SILENCE_COLUMNS: &str =
    "id, matchers, reason, created_by, created_ns, expires_ns, expired_by, matched";

fn silence_row(r: &Row) -> Result<Silence, DbError> {
    let texts: Vec<String> = serde_json::from_str(&r.get::<String>(1)?).unwrap_or_default();
    Ok(Silence {
        id: r.get(0)?,
        // Stored matchers were parsed before; one that no longer parses is
        // dropped, and a silence left with none is ignored
        // (`live_silences`) rather than widened to every alert.
        matchers: texts
            .iter()
            .filter_map(|t| Matcher::parse(t).ok())
            .collect(),
        reason: r.get(2)?,
        created_by: r.get(3)?,
        created_ns: r.get(4)?,
        expires_ns: r.get(5)?,
        expired_by: r.get(6)?,
        matched: r.get::<i64>(7)? as u64,
    })
}

/// The silences in force at `now`.
fn live_silences(db: &mut dyn Db, now: i64) -> Result<Vec<Silence>, DbError> {
    let all = db.map(
        &format!(
            "SELECT {SILENCE_COLUMNS} FROM silences WHERE expires_ns > ?1 ORDER BY created_ns"
        ),
        vals![now],
        silence_row,
    )?;
    // A silence whose matchers were all lost must not match everything.
    Ok(all.into_iter().filter(|s| !s.matchers.is_empty()).collect())
}

/// The group `id` names: a group id, or an alert's id (its group); locked
/// for the transaction with `lock` (PostgreSQL).
fn find_group(db: &mut dyn Db, id: &str, lock: bool) -> Result<GroupRecord, GroupError> {
    let lock = if lock { db.dialect().for_update() } else { "" };
    let by_id = format!("SELECT {GROUP_COLUMNS} FROM groups WHERE id = ?1{lock}");
    if let Some(r) = db.row(&by_id, vals![id])? {
        return Ok(group_row(&r)?);
    }
    let of_alert: Option<Option<String>> =
        db.value("SELECT group_id FROM alerts WHERE id = ?1", vals![id])?;
    match of_alert.flatten() {
        Some(gid) => match db.row(&by_id, vals![gid])? {
            Some(r) => Ok(group_row(&r)?),
            None => Err(GroupError::NotFound(id.into())),
        },
        None => Err(GroupError::NotFound(id.into())),
    }
}

/// A notification to queue. An empty body queues nothing but still
/// records `count`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queued {
    pub receiver: String,
    pub group: String,
    pub event: String,
    pub body: Vec<u8>,
    /// The group's count the receiver is told of.
    pub count: Option<u64>,
}

/// One notification waiting in the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    pub id: i64,
    pub receiver: String,
    pub group_id: String,
    pub event: String,
    pub body: Vec<u8>,
    pub attempts: u32,
    pub created_ns: i64,
}

/// An audit entry the notifier acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupEvent {
    pub seq: i64,
    pub group_id: String,
    pub action: String,
    pub alert_id: Option<String>,
}

/// The notifier's side of the store: the audit trail it follows, and the
/// outbox it fills and empties. Every step commits before the next, so a
/// restart neither loses a notification nor sends one twice (a crash
/// between a receiver's answer and the commit re-sends that one).
impl SqlStore {
    /// Audit entries after `seq`, oldest first.
    pub fn group_events_after(&self, seq: i64, limit: u32) -> Result<Vec<GroupEvent>, StoreError> {
        self.read(|db| {
            db.map(
                "SELECT seq, group_id, action, alert_id FROM audit WHERE seq > ?1
                 ORDER BY seq LIMIT ?2",
                vals![seq, limit],
                |r| {
                    Ok(GroupEvent {
                        seq: r.get(0)?,
                        group_id: r.get(1)?,
                        action: r.get(2)?,
                        alert_id: r.get(3)?,
                    })
                },
            )
            .map_err(StoreError::from)
        })
    }

    /// Starts the notifier's cursor at the end of the audit trail the first
    /// time notifications are turned on, so that a database with a history
    /// does not page for all of it. Once set, it only moves forward.
    pub fn start_notify_cursor(&self) -> Result<(), StoreError> {
        self.write(|db| {
            db.exec(
                "INSERT INTO notify_cursor (name, seq)
                 VALUES ('audit', (SELECT COALESCE(MAX(seq), 0) FROM audit))
                 ON CONFLICT DO NOTHING",
                &[],
            )
            .map_err(StoreError::from)
        })?;
        Ok(())
    }

    /// How far the notifier has read the audit trail.
    pub fn notify_cursor(&self) -> Result<i64, StoreError> {
        self.read(|db| {
            db.value::<i64>("SELECT seq FROM notify_cursor WHERE name = 'audit'", &[])
                .map_err(StoreError::from)
        })
        .map(|s| s.unwrap_or(0))
    }

    /// One stored alert.
    pub fn alert(&self, id: &str) -> Result<Option<Alert>, StoreError> {
        let body: Option<Vec<u8>> = self.read(|db| {
            db.value("SELECT body FROM alerts WHERE id = ?1", vals![id])
                .map_err(StoreError::from)
        })?;
        Ok(body.and_then(|b| Alert::decode(b.as_slice()).ok()))
    }

    /// One group, by its id.
    pub fn group(&self, id: &str) -> Result<Option<GroupRecord>, StoreError> {
        match self.read(|db| find_group(db, id, false)) {
            Ok(g) => Ok(Some(g)),
            Err(GroupError::Store(e)) => Err(e),
            Err(_) => Ok(None),
        }
    }

    /// Queues `rows`, in one transaction with moving the cursor from `from`
    /// to `to` when `cursor` is `Some((from, to))`. When the cursor is no
    /// longer at `from` (another collector planned those events), nothing
    /// is queued. A row with a count also records it as what that
    /// receiver was last told of the group (for summaries).
    pub fn enqueue(&self, cursor: Option<(i64, i64)>, rows: &[Queued]) -> Result<(), StoreError> {
        let now = now_ns();
        self.write(|db| {
            if let Some((from, to)) = cursor {
                let moved = db.exec(
                    "UPDATE notify_cursor SET seq = ?2 WHERE name = 'audit' AND seq = ?1",
                    vals![from, to],
                )?;
                if moved == 0
                    && db.exec(
                        "INSERT INTO notify_cursor (name, seq) VALUES ('audit', ?1)
                         ON CONFLICT DO NOTHING",
                        vals![to],
                    )? == 0
                {
                    tracing::debug!(from, to, "notifications already planned elsewhere");
                    return Ok(());
                }
            }
            for q in rows {
                if let Some(count) = q.count {
                    db.exec(
                        "INSERT INTO notify_state (group_id, receiver, count, at_ns)
                         VALUES (?1, ?2, ?3, ?4)
                         ON CONFLICT(group_id, receiver) DO UPDATE SET count = excluded.count,
                             at_ns = excluded.at_ns",
                        vals![&q.group, &q.receiver, count, now],
                    )?;
                }
                if q.body.is_empty() {
                    continue;
                }
                db.exec(
                    "INSERT INTO outbox (receiver, group_id, event, body, attempts, next_ns, state,
                         last_error, created_ns)
                     VALUES (?1, ?2, ?3, ?4, 0, ?5, 'pending', '', ?5)",
                    vals![&q.receiver, &q.group, &q.event, &q.body, now],
                )?;
            }
            Ok::<_, StoreError>(())
        })
    }

    /// Claims the notifications due at `now`, oldest first, for
    /// [`CLAIM_NS`]: until then no other sender (another collector on the
    /// same database) takes them. One receiver gets one group's messages
    /// in order, so a message waits while an earlier one to the same
    /// receiver about the same group is being sent or retried (a resolve
    /// never overtakes its trigger).
    pub fn due(&self, now: i64, limit: u32) -> Result<Vec<Outgoing>, StoreError> {
        self.write(|db| {
            let claim = db.dialect().skip_locked();
            let due = db.map(
                &format!(
                    "SELECT id, receiver, group_id, event, body, attempts, created_ns FROM outbox
                     WHERE state = 'pending' AND next_ns <= ?1
                       AND NOT EXISTS (SELECT 1 FROM outbox e WHERE e.state = 'pending'
                           AND e.receiver = outbox.receiver AND e.group_id = outbox.group_id
                           AND e.id < outbox.id)
                     ORDER BY id LIMIT ?2{claim}"
                ),
                vals![now, limit],
                |r| {
                    Ok(Outgoing {
                        id: r.get(0)?,
                        receiver: r.get(1)?,
                        group_id: r.get(2)?,
                        event: r.get(3)?,
                        body: r.get(4)?,
                        attempts: r.get::<i64>(5)? as u32,
                        created_ns: r.get(6)?,
                    })
                },
            )?;
            for o in &due {
                db.exec(
                    "UPDATE outbox SET next_ns = ?2 WHERE id = ?1",
                    vals![o.id, now.saturating_add(CLAIM_NS)],
                )?;
            }
            Ok::<_, StoreError>(due)
        })
    }

    /// Hands a claimed notification back, due at `at_ns` (its receiver's
    /// rate limit holds it until then).
    pub fn unclaim(&self, id: i64, at_ns: i64) -> Result<(), StoreError> {
        self.write(|db| {
            db.exec(
                "UPDATE outbox SET next_ns = ?2 WHERE id = ?1 AND state = 'pending'",
                vals![id, at_ns],
            )
            .map_err(StoreError::from)
        })?;
        Ok(())
    }

    /// Records the outcome of sending `o`: `Ok(detail)` sent, `Err((None,
    /// why))` given up, `Err((Some(next_ns), why))` to try again then. A
    /// sent or given-up notification goes into its group's audit trail.
    pub fn delivery_outcome(
        &self,
        o: &Outgoing,
        outcome: Result<String, (Option<i64>, String)>,
    ) -> Result<(), StoreError> {
        let now = now_ns();
        let collector = Actor::collector();
        self.write(|db| {
            match &outcome {
                Ok(detail) => {
                    db.exec(
                        "UPDATE outbox SET state = 'sent', attempts = attempts + 1, done_ns = ?2
                         WHERE id = ?1",
                        vals![o.id, now],
                    )?;
                    // A refresh of an open group is routine, not history.
                    if o.event != "refresh" {
                        append_audit(db, &o.group_id, now, &collector, "notified", detail, None)?;
                    }
                }
                Err((Some(next), why)) => {
                    db.exec(
                        "UPDATE outbox SET attempts = attempts + 1, next_ns = ?2, last_error = ?3
                         WHERE id = ?1",
                        vals![o.id, *next, why],
                    )?;
                }
                Err((None, why)) => {
                    db.exec(
                        "UPDATE outbox SET state = 'dead', attempts = attempts + 1, done_ns = ?2,
                             last_error = ?3
                         WHERE id = ?1",
                        vals![o.id, now, why],
                    )?;
                    append_audit(
                        db,
                        &o.group_id,
                        now,
                        &collector,
                        "notification failed",
                        &format!("{}: {why}", o.receiver),
                        None,
                    )?;
                }
            }
            Ok::<_, StoreError>(())
        })
    }

    /// The receivers an opened or reopened `group` was queued for.
    pub fn notified_receivers(&self, group: &str) -> Result<Vec<String>, StoreError> {
        self.read(|db| {
            db.map(
                "SELECT DISTINCT receiver FROM outbox
                 WHERE group_id = ?1 AND event IN ('opened', 'reopened', 'announced')
                 ORDER BY receiver",
                vals![group],
                |r| r.get(0),
            )
            .map_err(StoreError::from)
        })
    }

    /// (group, receiver) for every open or acknowledged group that was
    /// sent to a receiver, for receivers that want open groups re-sent.
    pub fn open_notified(&self) -> Result<Vec<(String, String)>, StoreError> {
        self.read(|db| {
            db.map(
                "SELECT DISTINCT o.group_id, o.receiver FROM outbox o
                   JOIN groups g ON g.id = o.group_id
                 WHERE o.event IN ('opened', 'reopened', 'announced')
                   AND g.state IN ('open', 'acknowledged')
                   AND NOT EXISTS (SELECT 1 FROM outbox p WHERE p.group_id = o.group_id
                       AND p.receiver = o.receiver AND p.event = 'refresh'
                       AND p.state = 'pending')",
                &[],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .map_err(StoreError::from)
        })
    }

    /// Drops a queued notification that no longer applies (a refresh of a
    /// group resolved meanwhile).
    pub fn drop_outgoing(&self, id: i64) -> Result<(), StoreError> {
        self.write(|db| {
            db.exec(
                "UPDATE outbox SET state = 'dropped', done_ns = ?2 WHERE id = ?1",
                vals![id, now_ns()],
            )
            .map_err(StoreError::from)
        })?;
        Ok(())
    }

    /// (group, receiver, count told) for open groups whose count grew
    /// since a receiver was last told, at least `window_ns` ago.
    pub fn summaries_due(
        &self,
        now: i64,
        window_ns: i64,
    ) -> Result<Vec<(String, String, u64)>, StoreError> {
        self.read(|db| {
            db.map(
                "SELECT s.group_id, s.receiver, s.count FROM notify_state s
                 JOIN groups g ON g.id = s.group_id
                 WHERE g.count > s.count AND s.at_ns <= ?1
                   AND g.state IN ('open', 'acknowledged')",
                vals![now - window_ns],
                |r| Ok((r.get(0)?, r.get(1)?, r.get::<i64>(2)? as u64)),
            )
            .map_err(StoreError::from)
        })
    }

    /// Notifications given up on (dead letters).
    pub fn dead_letters(&self) -> Result<u64, StoreError> {
        self.count_where("SELECT COUNT(*) FROM outbox WHERE state = 'dead'")
    }

    /// Number of stored alerts.
    pub fn count(&self) -> Result<u64, StoreError> {
        self.count_where("SELECT COUNT(*) FROM alerts")
    }

    fn count_where(&self, sql: &str) -> Result<u64, StoreError> {
        self.read(|db| db.value::<i64>(sql, &[]).map_err(StoreError::from))
            .map(|n| n.unwrap_or(0) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_proto::v1::{ProcessInfo, Severity};

    /// A fresh store on each engine: SQLite in memory, and a new database
    /// on the throwaway PostgreSQL cluster.
    pub(crate) fn both() -> Vec<SqlStore> {
        let url = throwaway::database().expect("PostgreSQL for the store tests");
        vec![
            SqlStore::in_memory().unwrap(),
            SqlStore::connect(&url).unwrap(),
        ]
    }

    pub(crate) fn alert(id: &str, rule: &str, sev: Severity, t: i64) -> Alert {
        Alert {
            id: id.into(),
            rule: rule.into(),
            severity: sev as i32,
            time_unix_ns: t,
            process: Some(ProcessInfo {
                pid: 42,
                exe: "/tmp/x".into(),
                argv: vec!["/tmp/x".into(), "--y".into()],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn in_container(id: &str, id_full: &str, pod: Option<(&str, &str)>, t: i64) -> Alert {
        Alert {
            container: Some(vigil_proto::v1::ContainerInfo {
                id: id_full.into(),
                runtime: if id_full == "host" {
                    "host"
                } else {
                    "containerd"
                }
                .into(),
                k8s_namespace: pod.map(|p| p.0.to_string()).unwrap_or_default(),
                k8s_pod: pod.map(|p| p.1.to_string()).unwrap_or_default(),
                ..Default::default()
            }),
            ..alert(id, "r", Severity::Warning, t)
        }
    }

    #[test]
    fn filters_by_container_id_prefix_host_and_pod() {
        for s in both() {
            filters_by_container(&s);
        }
    }

    fn filters_by_container(s: &SqlStore) {
        let full = "3f2a8c9d1e0b4a5f6c7d8e9f0a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6e7f8a9b";
        s.insert_batch(
            &host("h"),
            &[
                in_container("a", full, Some(("shop", "web-1")), 1),
                in_container("b", "host", None, 2),
                alert("c", "r", Severity::Warning, 3),
            ],
        )
        .unwrap();
        let ids = |c: &str| -> Vec<String> {
            s.query(&AlertFilter {
                container: Some(c.into()),
                limit: 10,
                ..Default::default()
            })
            .unwrap()
            .into_iter()
            .map(|a| a.id)
            .collect()
        };
        assert_eq!(ids(full), ["a"]);
        assert_eq!(ids(&full[..12]), ["a"], "the short id Falco prints");
        assert_eq!(ids(&full[..6]), Vec::<String>::new(), "too short a prefix");
        assert_eq!(ids("shop/web-1"), ["a"]);
        assert_eq!(ids("host"), ["b"]);
    }

    #[test]
    fn a_version_1_database_is_upgraded_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.db");
        {
            let c = Connection::open(&path).unwrap();
            c.execute_batch(
                "CREATE TABLE alerts (id TEXT PRIMARY KEY, time_unix_ns INTEGER NOT NULL,
                 received_ns INTEGER NOT NULL, hostname TEXT NOT NULL, machine_id TEXT NOT NULL,
                 rule TEXT NOT NULL, severity INTEGER NOT NULL, pid INTEGER, exe TEXT,
                 body BLOB NOT NULL);",
            )
            .unwrap();
            let old = alert("old", "r", Severity::Warning, 1);
            c.execute(
                "INSERT INTO alerts VALUES ('old', 1, 1, 'h', '', 'r', 4, 42, '/tmp/x', ?1)",
                [old.encode_to_vec()],
            )
            .unwrap();
            c.pragma_update(None, "user_version", 1).unwrap();
        }
        let s = SqlStore::open(&path).unwrap();
        s.insert_batch(&host("h"), &[in_container("new", "host", None, 2)])
            .unwrap();
        let all = s
            .query(&AlertFilter {
                limit: 10,
                ..Default::default()
            })
            .unwrap();
        assert_eq!(all.len(), 2, "the old alert is kept");
        let host_only = s
            .query(&AlertFilter {
                container: Some("host".into()),
                limit: 10,
                ..Default::default()
            })
            .unwrap();
        assert_eq!(host_only.len(), 1);
    }

    fn host(name: &str) -> HostInfo {
        HostInfo {
            hostname: name.into(),
            ..Default::default()
        }
    }

    #[test]
    fn stores_once_per_id_and_round_trips() {
        for s in both() {
            stores_once(&s);
        }
    }

    fn stores_once(s: &SqlStore) {
        let a = alert("a", "r", Severity::Warning, 10);
        assert_eq!(
            s.insert_batch(&host("h1"), std::slice::from_ref(&a))
                .unwrap(),
            InsertOutcome {
                stored: 1,
                duplicates: 0
            }
        );
        assert_eq!(
            s.insert_batch(&host("h1"), std::slice::from_ref(&a))
                .unwrap(),
            InsertOutcome {
                stored: 0,
                duplicates: 1
            }
        );
        let got = s
            .query(&AlertFilter {
                limit: 10,
                ..Default::default()
            })
            .unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].process.as_ref().unwrap().argv, vec!["/tmp/x", "--y"]);
        assert_eq!(got[0].host.as_ref().unwrap().hostname, "h1");
    }

    #[test]
    fn re_sent_alerts_count_once_in_their_group_and_audit_rows_cannot_change() {
        for s in both() {
            re_sent_alerts(&s);
        }
    }

    fn re_sent_alerts(s: &SqlStore) {
        let batch = [
            alert("a", "r", Severity::Warning, 10),
            alert("b", "r", Severity::Error, 20),
        ];
        s.insert_batch(&host("h"), &batch).unwrap();
        s.insert_batch(&host("h"), &batch).unwrap(); // a re-send
        let all = |state| {
            s.groups(&GroupFilter {
                state,
                limit: 10,
                ..Default::default()
            })
            .unwrap()
        };
        let g = &all(None)[0];
        assert_eq!((g.count, g.severity), (2, Severity::Error as i32));
        assert_eq!((g.first_seen_ns, g.last_seen_ns), (10, 20));
        let who = Actor {
            name: "local:t".into(),
            client: String::new(),
        };
        s.update_group("a", &Change::Close(Reason::Duplicate), "", &who)
            .unwrap();
        assert!(all(Some(GroupState::Open)).is_empty());
        // An older alert arriving late reopens the group but keeps the
        // newest output and last-seen time.
        let mut late = alert("c", "r", Severity::Warning, 5);
        late.output = "late".into();
        s.insert_batch(&host("h"), &[late]).unwrap();
        let g = &all(Some(GroupState::Open))[0];
        assert_eq!((g.count, g.first_seen_ns, g.last_seen_ns), (3, 5, 20));
        assert_ne!(g.output, "late");
        let trail = s.history(&g.id).unwrap();
        let actions: Vec<&str> = trail.iter().map(|e| e.action.as_str()).collect();
        assert_eq!(actions, ["opened", "closed", "reopened"]);
        // Append-only: the database itself refuses edits and deletions.
        let e = s
            .write(|db| db.exec("UPDATE audit SET actor = 'x'", &[]))
            .unwrap_err();
        assert!(e.to_string().contains("append-only"), "{e}");
        assert!(s.write(|db| db.exec("DELETE FROM audit", &[])).is_err());
    }

    #[test]
    fn a_batch_folds_each_group_once_as_if_its_alerts_came_one_by_one() {
        for s in both() {
            let mut newest = alert("b", "r", Severity::Error, 30);
            newest.output = "newest".into();
            let batch: Vec<Alert> = std::iter::once(alert("a", "r", Severity::Warning, 10))
                .chain([alert("a", "r", Severity::Warning, 10), newest])
                .chain([alert("c", "r", Severity::Notice, 20)])
                .chain((0..100).map(|i| alert(&format!("m{i}"), "r", Severity::Notice, 15)))
                .collect();
            let out = s.insert_batch(&host("h"), &batch).unwrap();
            assert_eq!(
                (out.stored, out.duplicates),
                (103, 1),
                "a chunk boundary crossed"
            );
            let g = &s
                .groups(&GroupFilter {
                    limit: 10,
                    ..Default::default()
                })
                .unwrap()[0];
            assert_eq!(g.count, 103);
            assert_eq!(g.severity, Severity::Error as i32);
            assert_eq!((g.first_seen_ns, g.last_seen_ns), (10, 30));
            assert_eq!(g.output, "newest");
            let actions: Vec<String> = s
                .history(&g.id)
                .unwrap()
                .into_iter()
                .map(|e| e.action)
                .collect();
            assert_eq!(actions, ["opened"]);
        }
    }

    #[test]
    fn filters_and_orders_newest_first() {
        for s in both() {
            filters_and_orders(&s);
        }
    }

    fn filters_and_orders(s: &SqlStore) {
        s.insert_batch(
            &host("h1"),
            &[
                alert("1", "r1", Severity::Notice, 100),
                alert("2", "r2", Severity::Critical, 200),
            ],
        )
        .unwrap();
        s.insert_batch(&host("h2"), &[alert("3", "r1", Severity::Warning, 300)])
            .unwrap();
        let ids = |f: AlertFilter| -> Vec<String> {
            s.query(&AlertFilter { limit: 100, ..f })
                .unwrap()
                .into_iter()
                .map(|a| a.id)
                .collect()
        };
        assert_eq!(ids(AlertFilter::default()), vec!["3", "2", "1"]);
        assert_eq!(
            ids(AlertFilter {
                host: Some("h1".into()),
                ..Default::default()
            }),
            vec!["2", "1"]
        );
        assert_eq!(
            ids(AlertFilter {
                rule: Some("r1".into()),
                ..Default::default()
            }),
            vec!["3", "1"]
        );
        assert_eq!(
            ids(AlertFilter {
                since_unix_ns: Some(150),
                ..Default::default()
            }),
            vec!["3", "2"]
        );
        assert_eq!(
            ids(AlertFilter {
                min_severity: Some(Severity::Warning as i32),
                ..Default::default()
            }),
            vec!["3", "2"]
        );
        assert_eq!(
            s.query(&AlertFilter {
                limit: 1,
                ..Default::default()
            })
            .unwrap()
            .len(),
            1
        );
    }

    #[test]
    fn a_query_in_progress_does_not_hold_up_a_batch() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqlStore::open(&dir.path().join("q.db")).unwrap();
        s.insert_batch(&host("h"), &[alert("a", "r", Severity::Warning, 1)])
            .unwrap();
        // A query that is reading (its connection and a read transaction
        // held) while a batch commits: with one connection this would wait.
        let Backend::Sqlite {
            reader: Some(reader),
            ..
        } = &s.backend
        else {
            panic!("a file database has a reader");
        };
        let reader = reader.lock().unwrap();
        reader.execute_batch("BEGIN").unwrap();
        let n: i64 = reader
            .query_row("SELECT COUNT(*) FROM alerts", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 1);
        s.insert_batch(&host("h"), &[alert("b", "r", Severity::Warning, 2)])
            .unwrap();
        // The reader's snapshot is unchanged until it ends.
        let n: i64 = reader
            .query_row("SELECT COUNT(*) FROM alerts", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 1);
        reader.execute_batch("COMMIT").unwrap();
        drop(reader);
        assert_eq!(s.count().unwrap(), 2);
    }

    #[test]
    fn collectors_sharing_postgres_plan_once_claim_each_notification_and_lease_jobs_to_one() {
        let url = throwaway::database().unwrap();
        let (s1, s2) = (
            SqlStore::connect(&url).unwrap(),
            SqlStore::connect(&url).unwrap(),
        );
        s1.start_notify_cursor().unwrap();
        s2.start_notify_cursor().unwrap();
        let q = |g: &str| Queued {
            receiver: "pager".into(),
            group: g.into(),
            event: "opened".into(),
            body: b"{}".to_vec(),
            count: Some(1),
        };
        // Both planned audit entries 1 to 5; the second finds the cursor
        // moved and queues nothing.
        s1.enqueue(Some((0, 5)), &[q("g1")]).unwrap();
        s2.enqueue(Some((0, 5)), &[q("g1")]).unwrap();
        s2.enqueue(Some((5, 6)), &[q("g2")]).unwrap();
        assert_eq!(s1.notify_cursor().unwrap(), 6);
        // What one claims, the other does not get, until the claim runs
        // out (its sender died).
        let now = now_ns();
        let mine = s1.due(now, 10).unwrap();
        assert_eq!(
            mine.iter().map(|o| o.group_id.as_str()).collect::<Vec<_>>(),
            ["g1", "g2"]
        );
        assert!(s2.due(now, 10).unwrap().is_empty());
        s1.delivery_outcome(&mine[0], Ok("sent".into())).unwrap();
        let late = s2.due(now + CLAIM_NS + 1, 10).unwrap();
        assert_eq!(late.len(), 1);
        assert_eq!(late[0].group_id, "g2");
        // One lease holder; when it goes, another takes over.
        assert!(s1.holds_fleet_lease());
        assert!(!s2.holds_fleet_lease());
        assert!(s1.holds_fleet_lease(), "kept while held");
        drop(s1);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !s2.holds_fleet_lease() {
            assert!(std::time::Instant::now() < deadline, "lease not taken over");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    #[test]
    fn a_newer_postgres_schema_is_refused_and_migrate_reports_versions() {
        let url = throwaway::database().unwrap();
        let s = SqlStore::connect(&url).unwrap();
        assert_eq!(
            s.migrated(),
            Migrated {
                from: 0,
                to: schema::POSTGRES_VERSION
            }
        );
        assert_eq!(
            SqlStore::connect(&url).unwrap().migrated().from,
            schema::POSTGRES_VERSION
        );
        s.write(|db| db.exec("UPDATE vigil_schema SET version = 999", &[]))
            .unwrap();
        let e = SqlStore::connect(&url).err().unwrap().to_string();
        assert!(e.contains("version 999 is newer"), "{e}");
        assert!(!e.contains("password"), "{e}");
        let e = SqlStore::connect("postgres://nobody@127.0.0.1:1/x?connect_timeout=2")
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("cannot connect to PostgreSQL"), "{e}");
        assert_eq!(
            redact("postgres://vigil:hunter2@db:5432/vigil"),
            "postgres://vigil:***@db:5432/vigil"
        );
    }

    #[test]
    fn postgres_over_tls_checks_the_servers_certificate() {
        let (url, _ca) = throwaway::tls_database().unwrap();
        let s = SqlStore::connect(&url).unwrap();
        s.insert_batch(&host("h"), &[alert("a", "r", Severity::Error, 1)])
            .unwrap();
        assert_eq!(s.count().unwrap(), 1);
        // Another CA's certificate list: the server is not believed.
        let other = tempfile::tempdir().unwrap();
        crate::pki::init(other.path(), &["localhost".into()], 1).unwrap();
        let wrong = url.replace(
            &url[url.find("sslrootcert=").unwrap()..],
            &format!("sslrootcert={}", other.path().join("ca.crt").display()),
        );
        let e = SqlStore::connect(&wrong).err().unwrap().to_string();
        assert!(e.contains("cannot connect to PostgreSQL"), "{e}");
        assert!(e.to_lowercase().contains("certificate"), "{e}");
        // A mode that would fall back to plaintext is refused up front.
        let e = SqlStore::connect(&url.replace("sslmode=require", "sslmode=prefer"))
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("sslmode=prefer would fall back to plaintext"),
            "{e}"
        );
    }

    #[test]
    fn persists_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("alerts.db");
        SqlStore::open(&path)
            .unwrap()
            .insert_batch(&host("h"), &[alert("a", "r", Severity::Error, 1)])
            .unwrap();
        assert_eq!(SqlStore::open(&path).unwrap().count().unwrap(), 1);
    }

    #[test]
    fn bad_paths_name_the_culprit() {
        let e = SqlStore::open(Path::new("/nonexistent-dir/alerts.db"))
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("/nonexistent-dir") && e.contains("does not exist"),
            "{e}"
        );
        let dir = tempfile::tempdir().unwrap();
        let e = SqlStore::open(dir.path()).err().unwrap().to_string();
        assert!(e.contains("is a directory"), "{e}");
    }
}
