//! SQLite storage: one file, WAL journal, one row per alert with the filter
//! columns broken out and the full alert kept as protobuf bytes; activity
//! and the process view beside them (`sqlite/activity.rs`).
use std::{path::Path, sync::Mutex};

use prost::Message;
use rusqlite::{params, Connection, OptionalExtension};
use sha2::{Digest, Sha256};
use vigil_proto::v1::{AgentHeartbeat, Alert, HostInfo};

use crate::{
    groups::{
        self, Actor, AuditRecord, Change, GroupError, GroupFilter, GroupRecord, GroupState, Reason,
    },
    silences::{Matcher, Silence},
    store::{now_ns, AgentRecord, AgentState, AlertFilter, AlertStore, InsertOutcome, StoreError},
};

const SCHEMA_VERSION: i64 = 8;

mod activity;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS alerts (
    id            TEXT PRIMARY KEY,
    time_unix_ns  INTEGER NOT NULL,
    received_ns   INTEGER NOT NULL,
    hostname      TEXT NOT NULL,
    machine_id    TEXT NOT NULL,
    rule          TEXT NOT NULL,
    severity      INTEGER NOT NULL,
    pid           INTEGER,
    exe           TEXT,
    body          BLOB NOT NULL,
    container_id  TEXT,
    k8s_pod       TEXT,
    group_id      TEXT,
    silenced_by   TEXT,
    proc_id       TEXT
);
CREATE INDEX IF NOT EXISTS alerts_time ON alerts(time_unix_ns);
CREATE INDEX IF NOT EXISTS alerts_host_time ON alerts(hostname, time_unix_ns);
CREATE INDEX IF NOT EXISTS alerts_rule_time ON alerts(rule, time_unix_ns);
CREATE INDEX IF NOT EXISTS alerts_container_time ON alerts(container_id, time_unix_ns);
CREATE INDEX IF NOT EXISTS alerts_pod_time ON alerts(k8s_pod, time_unix_ns);
CREATE INDEX IF NOT EXISTS alerts_group_time ON alerts(group_id, time_unix_ns);
CREATE INDEX IF NOT EXISTS alerts_proc_time ON alerts(proc_id, time_unix_ns)
    WHERE proc_id IS NOT NULL;
CREATE TABLE IF NOT EXISTS activity (
    hostname      TEXT NOT NULL,
    time_unix_ns  INTEGER NOT NULL,
    id            TEXT NOT NULL,
    kind          INTEGER NOT NULL,
    proc_id       TEXT NOT NULL,
    pid           INTEGER NOT NULL,
    remote_addr   TEXT,
    domain        TEXT,
    body          BLOB NOT NULL,
    PRIMARY KEY (hostname, time_unix_ns, id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS activity_proc_time ON activity(proc_id, time_unix_ns);
CREATE INDEX IF NOT EXISTS activity_remote ON activity(remote_addr, time_unix_ns)
    WHERE remote_addr IS NOT NULL;
CREATE INDEX IF NOT EXISTS activity_domain ON activity(domain, time_unix_ns)
    WHERE domain IS NOT NULL;
CREATE TABLE IF NOT EXISTS activity_hosts (
    hostname  TEXT PRIMARY KEY
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS processes (
    proc_id    TEXT PRIMARY KEY,
    hostname   TEXT NOT NULL,
    parent_id  TEXT,
    pid        INTEGER NOT NULL,
    seen_ns    INTEGER NOT NULL,
    exit_ns    INTEGER,
    exit_code  INTEGER,
    exe        TEXT,
    sha256     TEXT,
    username   TEXT,
    image      TEXT,
    detail     INTEGER NOT NULL,
    body       BLOB NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS processes_parent ON processes(parent_id, seen_ns)
    WHERE parent_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS processes_seen ON processes(seen_ns);
CREATE INDEX IF NOT EXISTS processes_sha256 ON processes(sha256, seen_ns, hostname)
    WHERE sha256 IS NOT NULL;
CREATE INDEX IF NOT EXISTS processes_exe ON processes(exe, seen_ns, hostname)
    WHERE exe IS NOT NULL;
CREATE INDEX IF NOT EXISTS processes_user ON processes(username, seen_ns, hostname)
    WHERE username IS NOT NULL;
CREATE INDEX IF NOT EXISTS processes_image ON processes(image, seen_ns, hostname)
    WHERE image IS NOT NULL;
CREATE TABLE IF NOT EXISTS groups (
    id                TEXT PRIMARY KEY,
    rule              TEXT NOT NULL,
    severity          INTEGER NOT NULL,
    hostname          TEXT NOT NULL,
    container         TEXT NOT NULL,
    state             TEXT NOT NULL,
    reason            TEXT,
    assignee          TEXT NOT NULL,
    count             INTEGER NOT NULL,
    first_seen_ns     INTEGER NOT NULL,
    last_seen_ns      INTEGER NOT NULL,
    output            TEXT NOT NULL,
    key               TEXT NOT NULL,
    state_changed_ns  INTEGER NOT NULL,
    announced         INTEGER NOT NULL DEFAULT 1
);
CREATE INDEX IF NOT EXISTS groups_last_seen ON groups(last_seen_ns);
CREATE INDEX IF NOT EXISTS groups_state_last_seen ON groups(state, last_seen_ns);
CREATE TABLE IF NOT EXISTS audit (
    seq       INTEGER PRIMARY KEY AUTOINCREMENT,
    group_id  TEXT NOT NULL,
    time_ns   INTEGER NOT NULL,
    actor     TEXT NOT NULL,
    client    TEXT NOT NULL,
    action    TEXT NOT NULL,
    detail    TEXT NOT NULL,
    alert_id  TEXT
);
CREATE INDEX IF NOT EXISTS audit_group ON audit(group_id, seq);
CREATE TRIGGER IF NOT EXISTS audit_append_only_update BEFORE UPDATE ON audit
BEGIN SELECT RAISE(ABORT, 'audit entries are append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_append_only_delete BEFORE DELETE ON audit
BEGIN SELECT RAISE(ABORT, 'audit entries are append-only'); END;
CREATE TABLE IF NOT EXISTS silences (
    id          TEXT PRIMARY KEY,
    matchers    TEXT NOT NULL,
    reason      TEXT NOT NULL,
    created_by  TEXT NOT NULL,
    created_ns  INTEGER NOT NULL,
    expires_ns  INTEGER NOT NULL,
    expired_by  TEXT,
    matched     INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS silences_expires ON silences(expires_ns);
CREATE TABLE IF NOT EXISTS outbox (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    receiver    TEXT NOT NULL,
    group_id    TEXT NOT NULL,
    event       TEXT NOT NULL,
    body        BLOB NOT NULL,
    attempts    INTEGER NOT NULL,
    next_ns     INTEGER NOT NULL,
    state       TEXT NOT NULL,
    last_error  TEXT NOT NULL,
    created_ns  INTEGER NOT NULL,
    done_ns     INTEGER
);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox(state, next_ns);
CREATE INDEX IF NOT EXISTS outbox_group ON outbox(group_id, receiver, event);
CREATE TABLE IF NOT EXISTS notify_state (
    group_id  TEXT NOT NULL,
    receiver  TEXT NOT NULL,
    count     INTEGER NOT NULL,
    at_ns     INTEGER NOT NULL,
    PRIMARY KEY (group_id, receiver)
);
CREATE TABLE IF NOT EXISTS notify_cursor (
    name  TEXT PRIMARY KEY,
    seq   INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS agents (
    hostname      TEXT PRIMARY KEY,
    state         TEXT NOT NULL,
    reason        TEXT NOT NULL,
    last_seen_ns  INTEGER NOT NULL,
    heartbeat     BLOB NOT NULL
);
";

/// Version 1 had no container columns: alerts stored then keep NULL there
/// and match no container filter.
const MIGRATE_V1_TO_V2: &str = "
ALTER TABLE alerts ADD COLUMN container_id TEXT;
ALTER TABLE alerts ADD COLUMN k8s_pod TEXT;
";

/// Versions 1 to 3 had no groups: alerts stored then stay out of every
/// group (their group_id is NULL); new alerts are grouped.
const MIGRATE_TO_V4: &str = "
ALTER TABLE alerts ADD COLUMN group_id TEXT;
";

/// Version 4 had no silences.
const MIGRATE_TO_V5: &str = "
ALTER TABLE alerts ADD COLUMN silenced_by TEXT;
";

/// Versions 4 and 5 kept no alert id with audit entries.
const MIGRATE_TO_V6: &str = "
ALTER TABLE audit ADD COLUMN alert_id TEXT;
";

/// Version 6 did not know whether a group's opening was announced.
const MIGRATE_TO_V7: &str = "
ALTER TABLE groups ADD COLUMN announced INTEGER NOT NULL DEFAULT 1;
";

/// Version 7 kept no activity (new tables) and no process id with alerts:
/// alerts stored then are in no process tree.
const MIGRATE_TO_V8: &str = "
ALTER TABLE alerts ADD COLUMN proc_id TEXT;
";

pub struct SqliteStore {
    /// The writer: batches, the registry, pruning.
    conn: Mutex<Connection>,
    /// Process ids whose row is known to hold at least this much
    /// (`activity::Detail`), so most events skip the process upsert.
    known_procs: Mutex<std::collections::HashMap<String, crate::activity::Detail>>,
    /// A second connection for queries: with WAL, a reader sees the last
    /// commit and never blocks the writer, so a query of thousands of rows
    /// does not stall ingestion. None for an in-memory database.
    reader: Option<Mutex<Connection>>,
}

fn backend(e: rusqlite::Error) -> StoreError {
    StoreError::Backend(e.to_string())
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path`. The parent
    /// directory must exist.
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
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
        store.reader = Some(Mutex::new(reader));
        Ok(store)
    }

    /// A private in-memory database (tests, dry runs).
    pub fn in_memory() -> Result<SqliteStore, StoreError> {
        Self::init(Connection::open_in_memory().map_err(backend)?)
            .map_err(|e| StoreError::Backend(e.to_string()))
    }

    fn init(conn: Connection) -> Result<SqliteStore, rusqlite::Error> {
        // WAL: readers do not block the writer; FULL sync: an ack means on disk.
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if version > SCHEMA_VERSION {
            return Err(rusqlite::Error::InvalidParameterName(format!(
                "database schema version {version} is newer than this collector ({SCHEMA_VERSION}); upgrade the collector"
            )));
        }
        // One transaction: a crash halfway leaves the old version whole,
        // not a column added under the old version number.
        let tx = conn.unchecked_transaction()?;
        if version == 1 {
            tx.execute_batch(MIGRATE_V1_TO_V2)?;
        }
        if (1..4).contains(&version) {
            tx.execute_batch(MIGRATE_TO_V4)?;
        }
        if (1..5).contains(&version) {
            tx.execute_batch(MIGRATE_TO_V5)?;
        }
        if (4..6).contains(&version) {
            tx.execute_batch(MIGRATE_TO_V6)?;
        }
        if (4..7).contains(&version) {
            tx.execute_batch(MIGRATE_TO_V7)?;
        }
        if (1..8).contains(&version) {
            tx.execute_batch(MIGRATE_TO_V8)?;
        }
        tx.execute_batch(SCHEMA)?;
        tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
        tx.commit()?;
        // The activity indexes are large: a bigger page cache keeps their
        // upper levels in memory (64 MiB per connection, at most).
        conn.pragma_update(None, "cache_size", -65_536)?;
        // Checkpoints every 64 MiB of WAL rather than 4: a page changed by
        // many commits in between reaches the database file once.
        conn.pragma_update(None, "wal_autocheckpoint", 16_384)?;
        Ok(SqliteStore {
            conn: Mutex::new(conn),
            known_procs: Mutex::new(std::collections::HashMap::new()),
            reader: None,
        })
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Connection>, StoreError> {
        self.conn
            .lock()
            .map_err(|_| StoreError::Backend("database lock poisoned".into()))
    }

    /// The connection for reading: the reader when there is one.
    fn read(&self) -> Result<std::sync::MutexGuard<'_, Connection>, StoreError> {
        match &self.reader {
            Some(r) => r
                .lock()
                .map_err(|_| StoreError::Backend("database lock poisoned".into())),
            None => self.lock(),
        }
    }
}

impl AlertStore for SqliteStore {
    fn add_silence(
        &self,
        matchers: &[Matcher],
        reason: &str,
        expires_ns: i64,
        who: &Actor,
    ) -> Result<Silence, StoreError> {
        let conn = self.lock()?;
        let now = now_ns();
        let texts: Vec<String> = matchers.iter().map(Matcher::text).collect();
        let digest = Sha256::digest(format!("{now}\0{texts:?}\0{reason}\0{}", who.name));
        let id: String = digest[..6].iter().map(|b| format!("{b:02x}")).collect();
        conn.execute(
            "INSERT INTO silences (id, matchers, reason, created_by, created_ns, expires_ns,
                 expired_by, matched)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, NULL, 0)",
            params![
                id,
                serde_json::to_string(&texts).unwrap_or_default(),
                reason,
                who.name,
                now,
                expires_ns
            ],
        )
        .map_err(backend)?;
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
        let conn = self.read()?;
        let mut st = conn
            .prepare_cached(&format!(
                "SELECT {SILENCE_COLUMNS} FROM silences WHERE ?1 OR expires_ns > ?2
                 ORDER BY created_ns DESC"
            ))
            .map_err(backend)?;
        let rows = st
            .query_map(params![include_expired, now_ns()], silence_row)
            .map_err(backend)?;
        rows.collect::<Result<_, _>>().map_err(backend)
    }

    fn expire_silence(&self, id: &str, who: &Actor) -> Result<Silence, GroupError> {
        let conn = self.lock()?;
        let now = now_ns();
        let find = |conn: &Connection| {
            conn.prepare_cached(&format!(
                "SELECT {SILENCE_COLUMNS} FROM silences WHERE id = ?1"
            ))
            .and_then(|mut st| st.query_row([id], silence_row).optional())
            .map_err(backend)?
            .ok_or_else(|| GroupError::NoSilence(id.into()))
        };
        let s = find(&conn)?;
        if !s.is_active(now) {
            return Err(GroupError::Refused(format!(
                "silence {id} has ended already"
            )));
        }
        conn.execute(
            "UPDATE silences SET expires_ns = ?2, expired_by = ?3 WHERE id = ?1",
            params![id, now, who.name],
        )
        .map_err(backend)?;
        find(&conn)
    }

    fn groups(&self, f: &GroupFilter) -> Result<Vec<GroupRecord>, StoreError> {
        let conn = self.read()?;
        let mut st = conn
            .prepare_cached(&format!(
                "SELECT {GROUP_COLUMNS} FROM groups
                 WHERE (?1 IS NULL OR state = ?1)
                   AND (?2 IS NULL OR last_seen_ns >= ?2)
                   AND (?3 IS NULL OR hostname = ?3)
                   AND (?4 IS NULL OR rule = ?4)
                   AND (?6 IS NULL OR id = ?6)
                 ORDER BY last_seen_ns DESC, id
                 LIMIT ?5"
            ))
            .map_err(backend)?;
        let rows = st
            .query_map(
                params![
                    f.state.map(GroupState::name),
                    f.since_ns,
                    f.host,
                    f.rule,
                    f.limit,
                    f.id
                ],
                group_row,
            )
            .map_err(backend)?;
        rows.collect::<Result<_, _>>().map_err(backend)
    }

    fn update_group(
        &self,
        id: &str,
        change: &Change,
        note: &str,
        who: &Actor,
    ) -> Result<GroupRecord, GroupError> {
        let mut conn = self.lock()?;
        let tx = conn.transaction().map_err(backend)?;
        let g = find_group(&tx, id)?;
        let (state, reason, assignee, action, detail) = groups::apply(&g, change, note)?;
        let now = now_ns();
        let changed_ns = if state != g.state {
            now
        } else {
            g.state_changed_ns
        };
        tx.execute(
            "UPDATE groups SET state = ?2, reason = ?3, assignee = ?4, state_changed_ns = ?5
             WHERE id = ?1",
            params![
                g.id,
                state.name(),
                reason.map(Reason::name),
                assignee,
                changed_ns
            ],
        )
        .map_err(backend)?;
        append_audit(&tx, &g.id, now, who, action, &detail, None).map_err(backend)?;
        let after = find_group(&tx, &g.id)?;
        tx.commit().map_err(backend)?;
        Ok(after)
    }

    fn history(&self, id: &str) -> Result<Vec<AuditRecord>, GroupError> {
        let conn = self.read()?;
        let g = find_group(&conn, id)?;
        let mut st = conn
            .prepare_cached(
                "SELECT group_id, time_ns, actor, client, action, detail FROM audit
                 WHERE group_id = ?1 ORDER BY seq",
            )
            .map_err(backend)?;
        let rows = st
            .query_map([&g.id], |r| {
                Ok(AuditRecord {
                    group_id: r.get(0)?,
                    time_ns: r.get(1)?,
                    actor: r.get(2)?,
                    client: r.get(3)?,
                    action: r.get(4)?,
                    detail: r.get(5)?,
                })
            })
            .map_err(backend)?;
        Ok(rows.collect::<Result<_, _>>().map_err(backend)?)
    }

    fn insert_batch(&self, host: &HostInfo, alerts: &[Alert]) -> Result<InsertOutcome, StoreError> {
        let mut conn = self.lock()?;
        let tx = conn.transaction().map_err(backend)?;
        let mut out = InsertOutcome::default();
        {
            let mut stmt = tx
                .prepare_cached(
                    "INSERT OR IGNORE INTO alerts
                     (id, time_unix_ns, received_ns, hostname, machine_id, rule, severity, pid, exe, body,
                      container_id, k8s_pod, group_id, silenced_by, proc_id)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
                )
                .map_err(backend)?;
            let received = now_ns();
            let silences = live_silences(&tx, received).map_err(backend)?;
            for a in alerts {
                let (group_id, container, key) = groups::identify(host, a);
                let silenced_by = silences
                    .iter()
                    .find(|s| s.matches(host, a))
                    .map(|s| s.id.clone());
                let mut stored = a.clone();
                // The context is stored as activity, beside the alert.
                stored.context.clear();
                stored.host = Some(host.clone());
                stored.group_id = group_id.clone();
                stored.silenced_by = silenced_by.clone().unwrap_or_default();
                let (pid, exe) = a
                    .process
                    .as_ref()
                    .map_or((None, None), |p| (Some(p.pid), Some(p.exe.clone())));
                let container_id = a.container.as_ref().map(|c| c.id.clone());
                let k8s_pod = a
                    .container
                    .as_ref()
                    .filter(|c| !c.k8s_pod.is_empty())
                    .map(|c| format!("{}/{}", c.k8s_namespace, c.k8s_pod));
                let n = stmt
                    .execute(params![
                        a.id,
                        a.time_unix_ns,
                        received,
                        host.hostname,
                        host.machine_id,
                        a.rule,
                        a.severity,
                        pid,
                        exe,
                        stored.encode_to_vec(),
                        container_id,
                        k8s_pod,
                        group_id,
                        silenced_by,
                        a.process
                            .as_ref()
                            .map(|p| p.proc_id.as_str())
                            .filter(|p| !p.is_empty()),
                    ])
                    .map_err(backend)?;
                if n == 1 {
                    if let Some(id) = &silenced_by {
                        tx.prepare_cached(
                            "UPDATE silences SET matched = matched + 1 WHERE id = ?1",
                        )
                        .and_then(|mut st| st.execute([id]))
                        .map_err(backend)?;
                    }
                    let silenced = silenced_by.is_some();
                    fold_into_group(
                        &tx, &group_id, &container, &key, host, a, silenced, received,
                    )
                    .map_err(backend)?;
                    out.stored += 1;
                } else {
                    out.duplicates += 1;
                }
            }
        }
        tx.commit().map_err(backend)?;
        Ok(out)
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
        let conn = self.read()?;
        let mut stmt = conn
            .prepare_cached(
                "SELECT body FROM alerts
                 WHERE (?1 IS NULL OR time_unix_ns >= ?1)
                   AND (?2 IS NULL OR hostname = ?2)
                   AND (?3 IS NULL OR rule = ?3)
                   AND (?4 IS NULL OR severity >= ?4)
                   AND (?6 IS NULL OR container_id = ?6 OR k8s_pod = ?6
                        OR (length(?6) >= 12 AND substr(container_id, 1, length(?6)) = ?6))
                   AND (?7 IS NULL OR id = ?7)
                 ORDER BY time_unix_ns DESC, id
                 LIMIT ?5",
            )
            .map_err(backend)?;
        let rows = stmt
            .query_map(
                params![
                    f.since_unix_ns,
                    f.host,
                    f.rule,
                    f.min_severity,
                    f.limit,
                    f.container,
                    f.id
                ],
                |r| r.get::<_, Vec<u8>>(0),
            )
            .map_err(backend)?;
        let mut out = Vec::new();
        for body in rows {
            let body = body.map_err(backend)?;
            out.push(
                Alert::decode(body.as_slice())
                    .map_err(|e| StoreError::Backend(format!("corrupt stored alert: {e}")))?,
            );
        }
        Ok(out)
    }

    fn save_agent(&self, a: &AgentRecord) -> Result<(), StoreError> {
        let conn = self.lock()?;
        conn.execute(
            "INSERT INTO agents (hostname, state, reason, last_seen_ns, heartbeat)
             VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT(hostname) DO UPDATE SET state = ?2, reason = ?3,
                 last_seen_ns = ?4, heartbeat = ?5",
            params![
                a.hostname,
                a.state.name(),
                a.reason,
                a.last_seen_ns,
                a.heartbeat.encode_to_vec()
            ],
        )
        .map_err(backend)?;
        Ok(())
    }

    fn prune(&self, before_ns: i64, max: u32) -> Result<u64, StoreError> {
        let conn = self.lock()?;
        let n = conn
            .execute(
                "DELETE FROM alerts WHERE id IN
                   (SELECT id FROM alerts WHERE time_unix_ns < ?1 LIMIT ?2)",
                params![before_ns, max],
            )
            .map_err(backend)?;
        Ok(n as u64)
    }

    fn agents(&self) -> Result<Vec<AgentRecord>, StoreError> {
        let conn = self.lock()?;
        let mut st = conn
            .prepare(
                "SELECT hostname, state, reason, last_seen_ns, heartbeat FROM agents ORDER BY hostname",
            )
            .map_err(backend)?;
        let rows = st
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, Vec<u8>>(4)?,
                ))
            })
            .map_err(backend)?;
        let mut out = Vec::new();
        for row in rows {
            let (hostname, state, reason, last_seen_ns, hb) = row.map_err(backend)?;
            out.push(AgentRecord {
                state: AgentState::from_name(&state).unwrap_or(AgentState::Degraded),
                heartbeat: AgentHeartbeat::decode(hb.as_slice()).unwrap_or_default(),
                hostname,
                reason,
                last_seen_ns,
            });
        }
        Ok(out)
    }
}

/// The group columns, in [`group_row`]'s order.
const GROUP_COLUMNS: &str = "id, rule, severity, hostname, container, state, reason, assignee, \
     count, first_seen_ns, last_seen_ns, output, key, state_changed_ns";

fn group_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<GroupRecord> {
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
        count: r.get::<_, i64>(8)? as u64,
        first_seen_ns: r.get(9)?,
        last_seen_ns: r.get(10)?,
        output: r.get(11)?,
        key: serde_json::from_str(&key).unwrap_or_default(),
        state_changed_ns: r.get(13)?,
    })
}

/// One audit entry; `alert_id` for the entries an alert caused (opened,
/// reopened), which the notifier follows.
fn append_audit(
    conn: &Connection,
    group_id: &str,
    time_ns: i64,
    who: &Actor,
    action: &str,
    detail: &str,
    alert_id: Option<&str>,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO audit (group_id, time_ns, actor, client, action, detail, alert_id)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![
        group_id, time_ns, who.name, who.client, action, detail, alert_id
    ])?;
    Ok(())
}

/// Counts a newly stored alert in its group: opens the group, or adds to
/// it and reopens it when it was resolved or closed, saying so in its
/// audit trail. A group opened by a silenced alert is not announced; the
/// first alert after it that no silence covers announces it (an
/// `announced` entry the notifier treats as the opening).
#[allow(clippy::too_many_arguments)]
fn fold_into_group(
    conn: &Connection,
    group_id: &str,
    container: &str,
    key: &std::collections::BTreeMap<String, String>,
    host: &HostInfo,
    a: &Alert,
    silenced: bool,
    now: i64,
) -> rusqlite::Result<()> {
    let count = a.count.max(1) as i64;
    let before: Option<(String, Option<String>, bool)> = conn
        .prepare_cached("SELECT state, reason, announced FROM groups WHERE id = ?1")?
        .query_row([group_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()?;
    let collector = Actor::collector();
    let Some((state, reason, announced)) = before else {
        conn.prepare_cached(
            "INSERT INTO groups (id, rule, severity, hostname, container, state, reason,
                 assignee, count, first_seen_ns, last_seen_ns, output, key, state_changed_ns,
                 announced)
             VALUES (?1, ?2, ?3, ?4, ?5, 'open', NULL, '', ?6, ?7, ?7, ?8, ?9, ?10, ?11)",
        )?
        .execute(params![
            group_id,
            a.rule,
            a.severity,
            host.hostname,
            container,
            count,
            a.time_unix_ns,
            a.output,
            serde_json::to_string(key).unwrap_or_default(),
            now,
            !silenced
        ])?;
        return append_audit(
            conn,
            group_id,
            now,
            &collector,
            "opened",
            &format!("first alert {}", a.id),
            Some(&a.id),
        );
    };
    // SET expressions read the row as it was, so `output` follows the
    // newest alert by event time even when alerts arrive out of order.
    conn.prepare_cached(
        "UPDATE groups SET count = count + ?2, severity = max(severity, ?3),
             first_seen_ns = min(first_seen_ns, ?4),
             output = CASE WHEN ?4 >= last_seen_ns THEN ?5 ELSE output END,
             last_seen_ns = max(last_seen_ns, ?4)
         WHERE id = ?1",
    )?
    .execute(params![
        group_id,
        count,
        a.severity,
        a.time_unix_ns,
        a.output
    ])?;
    if GroupState::parse(&state).is_some_and(GroupState::is_done) {
        conn.prepare_cached(
            "UPDATE groups SET state = 'open', reason = NULL, state_changed_ns = ?2,
                 announced = ?3
             WHERE id = ?1",
        )?
        .execute(params![group_id, now, !silenced])?;
        let was = match reason {
            Some(r) => format!("{state} as {r}"),
            None => state,
        };
        append_audit(
            conn,
            group_id,
            now,
            &collector,
            "reopened",
            &format!("new alert {} (was {was})", a.id),
            Some(&a.id),
        )?;
    } else if !announced && !silenced {
        conn.prepare_cached("UPDATE groups SET announced = 1 WHERE id = ?1")?
            .execute([group_id])?;
        append_audit(
            conn,
            group_id,
            now,
            &collector,
            "announced",
            &format!("first alert no silence covers: {}", a.id),
            Some(&a.id),
        )?;
    }
    Ok(())
}

const SILENCE_COLUMNS: &str =
    "id, matchers, reason, created_by, created_ns, expires_ns, expired_by, matched";

fn silence_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Silence> {
    let texts: Vec<String> = serde_json::from_str(&r.get::<_, String>(1)?).unwrap_or_default();
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
        matched: r.get::<_, i64>(7)? as u64,
    })
}

/// The silences in force at `now`.
fn live_silences(conn: &Connection, now: i64) -> rusqlite::Result<Vec<Silence>> {
    let mut st = conn.prepare_cached(&format!(
        "SELECT {SILENCE_COLUMNS} FROM silences WHERE expires_ns > ?1 ORDER BY created_ns"
    ))?;
    let rows = st.query_map([now], silence_row)?;
    // A silence whose matchers were all lost must not match everything.
    Ok(rows
        .collect::<rusqlite::Result<Vec<_>>>()?
        .into_iter()
        .filter(|s| !s.matchers.is_empty())
        .collect())
}

/// The group `id` names: a group id, or an alert's id (its group).
fn find_group(conn: &Connection, id: &str) -> Result<GroupRecord, GroupError> {
    let by_group = conn
        .prepare_cached(&format!("SELECT {GROUP_COLUMNS} FROM groups WHERE id = ?1"))
        .and_then(|mut st| st.query_row([id], group_row).optional())
        .map_err(backend)?;
    if let Some(g) = by_group {
        return Ok(g);
    }
    let of_alert: Option<Option<String>> = conn
        .prepare_cached("SELECT group_id FROM alerts WHERE id = ?1")
        .and_then(|mut st| st.query_row([id], |r| r.get(0)).optional())
        .map_err(backend)?;
    match of_alert.flatten() {
        Some(gid) => conn
            .prepare_cached(&format!("SELECT {GROUP_COLUMNS} FROM groups WHERE id = ?1"))
            .and_then(|mut st| st.query_row([gid], group_row).optional())
            .map_err(backend)?
            .ok_or_else(|| GroupError::NotFound(id.into())),
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
impl SqliteStore {
    /// Audit entries after `seq`, oldest first.
    pub fn group_events_after(&self, seq: i64, limit: u32) -> Result<Vec<GroupEvent>, StoreError> {
        let conn = self.read()?;
        let mut st = conn
            .prepare_cached(
                "SELECT seq, group_id, action, alert_id FROM audit WHERE seq > ?1
                 ORDER BY seq LIMIT ?2",
            )
            .map_err(backend)?;
        let rows = st
            .query_map(params![seq, limit], |r| {
                Ok(GroupEvent {
                    seq: r.get(0)?,
                    group_id: r.get(1)?,
                    action: r.get(2)?,
                    alert_id: r.get(3)?,
                })
            })
            .map_err(backend)?;
        rows.collect::<Result<_, _>>().map_err(backend)
    }

    /// Starts the notifier's cursor at the end of the audit trail the first
    /// time notifications are turned on, so that a database with a history
    /// does not page for all of it. Once set, it only moves forward.
    pub fn start_notify_cursor(&self) -> Result<(), StoreError> {
        let conn = self.lock()?;
        conn.execute(
            "INSERT OR IGNORE INTO notify_cursor (name, seq)
             VALUES ('audit', (SELECT COALESCE(MAX(seq), 0) FROM audit))",
            [],
        )
        .map_err(backend)?;
        Ok(())
    }

    /// How far the notifier has read the audit trail.
    pub fn notify_cursor(&self) -> Result<i64, StoreError> {
        let conn = self.lock()?;
        conn.query_row(
            "SELECT seq FROM notify_cursor WHERE name = 'audit'",
            [],
            |r| r.get(0),
        )
        .optional()
        .map_err(backend)
        .map(|s| s.unwrap_or(0))
    }

    /// One stored alert.
    pub fn alert(&self, id: &str) -> Result<Option<Alert>, StoreError> {
        let conn = self.read()?;
        let body: Option<Vec<u8>> = conn
            .query_row("SELECT body FROM alerts WHERE id = ?1", [id], |r| r.get(0))
            .optional()
            .map_err(backend)?;
        Ok(body.and_then(|b| Alert::decode(b.as_slice()).ok()))
    }

    /// One group, by its id.
    pub fn group(&self, id: &str) -> Result<Option<GroupRecord>, StoreError> {
        let conn = self.read()?;
        match find_group(&conn, id) {
            Ok(g) => Ok(Some(g)),
            Err(GroupError::Store(e)) => Err(e),
            Err(_) => Ok(None),
        }
    }

    /// Queues `rows` and moves the cursor to `seq` when given, in one
    /// transaction. A row with a count also records it as what that
    /// receiver was last told of the group (for summaries).
    pub fn enqueue(&self, seq: Option<i64>, rows: &[Queued]) -> Result<(), StoreError> {
        let mut conn = self.lock()?;
        let tx = conn.transaction().map_err(backend)?;
        let now = now_ns();
        for q in rows {
            if let Some(count) = q.count {
                tx.execute(
                    "INSERT INTO notify_state (group_id, receiver, count, at_ns)
                     VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT(group_id, receiver) DO UPDATE SET count = ?3, at_ns = ?4",
                    params![q.group, q.receiver, count as i64, now],
                )
                .map_err(backend)?;
            }
            if q.body.is_empty() {
                continue;
            }
            let (receiver, group, event, body) = (&q.receiver, &q.group, &q.event, &q.body);
            tx.execute(
                "INSERT INTO outbox (receiver, group_id, event, body, attempts, next_ns, state,
                     last_error, created_ns)
                 VALUES (?1, ?2, ?3, ?4, 0, ?5, 'pending', '', ?5)",
                params![receiver, group, event, body, now],
            )
            .map_err(backend)?;
        }
        if let Some(seq) = seq {
            tx.execute(
                "INSERT INTO notify_cursor (name, seq) VALUES ('audit', ?1)
                 ON CONFLICT(name) DO UPDATE SET seq = ?1",
                [seq],
            )
            .map_err(backend)?;
        }
        tx.commit().map_err(backend)
    }

    /// Notifications due at `now`, oldest first; one receiver gets one
    /// group's messages in order, so a message waits while an earlier one
    /// to the same receiver about the same group is being retried (a
    /// resolve never overtakes its trigger).
    pub fn due(&self, now: i64, limit: u32) -> Result<Vec<Outgoing>, StoreError> {
        let conn = self.lock()?;
        let mut st = conn
            .prepare_cached(
                "SELECT id, receiver, group_id, event, body, attempts, created_ns FROM outbox
                 WHERE state = 'pending' AND next_ns <= ?1
                   AND NOT EXISTS (SELECT 1 FROM outbox e WHERE e.state = 'pending'
                       AND e.receiver = outbox.receiver AND e.group_id = outbox.group_id
                       AND e.id < outbox.id)
                 ORDER BY id LIMIT ?2",
            )
            .map_err(backend)?;
        let rows = st
            .query_map(params![now, limit], |r| {
                Ok(Outgoing {
                    id: r.get(0)?,
                    receiver: r.get(1)?,
                    group_id: r.get(2)?,
                    event: r.get(3)?,
                    body: r.get(4)?,
                    attempts: r.get::<_, i64>(5)? as u32,
                    created_ns: r.get(6)?,
                })
            })
            .map_err(backend)?;
        rows.collect::<Result<_, _>>().map_err(backend)
    }

    /// Records the outcome of sending `o`: `Ok(detail)` sent, `Err((None,
    /// why))` given up, `Err((Some(next_ns), why))` to try again then. A
    /// sent or given-up notification goes into its group's audit trail.
    pub fn delivery_outcome(
        &self,
        o: &Outgoing,
        outcome: Result<String, (Option<i64>, String)>,
    ) -> Result<(), StoreError> {
        let mut conn = self.lock()?;
        let tx = conn.transaction().map_err(backend)?;
        let now = now_ns();
        let collector = Actor::collector();
        match outcome {
            Ok(detail) => {
                tx.execute(
                    "UPDATE outbox SET state = 'sent', attempts = attempts + 1, done_ns = ?2
                     WHERE id = ?1",
                    params![o.id, now],
                )
                .map_err(backend)?;
                // A refresh of an open group is routine, not history.
                if o.event != "refresh" {
                    append_audit(&tx, &o.group_id, now, &collector, "notified", &detail, None)
                        .map_err(backend)?;
                }
            }
            Err((Some(next), why)) => {
                tx.execute(
                    "UPDATE outbox SET attempts = attempts + 1, next_ns = ?2, last_error = ?3
                     WHERE id = ?1",
                    params![o.id, next, why],
                )
                .map_err(backend)?;
            }
            Err((None, why)) => {
                tx.execute(
                    "UPDATE outbox SET state = 'dead', attempts = attempts + 1, done_ns = ?2,
                         last_error = ?3
                     WHERE id = ?1",
                    params![o.id, now, why],
                )
                .map_err(backend)?;
                append_audit(
                    &tx,
                    &o.group_id,
                    now,
                    &collector,
                    "notification failed",
                    &format!("{}: {why}", o.receiver),
                    None,
                )
                .map_err(backend)?;
            }
        }
        tx.commit().map_err(backend)
    }

    /// The receivers an opened or reopened `group` was queued for.
    pub fn notified_receivers(&self, group: &str) -> Result<Vec<String>, StoreError> {
        let conn = self.read()?;
        let mut st = conn
            .prepare_cached(
                "SELECT DISTINCT receiver FROM outbox
                 WHERE group_id = ?1 AND event IN ('opened', 'reopened', 'announced') ORDER BY receiver",
            )
            .map_err(backend)?;
        let rows = st.query_map([group], |r| r.get(0)).map_err(backend)?;
        rows.collect::<Result<_, _>>().map_err(backend)
    }

    /// (group, receiver) for every open or acknowledged group that was
    /// sent to a receiver, for receivers that want open groups re-sent.
    pub fn open_notified(&self) -> Result<Vec<(String, String)>, StoreError> {
        let conn = self.read()?;
        let mut st = conn
            .prepare_cached(
                "SELECT DISTINCT o.group_id, o.receiver FROM outbox o JOIN groups g ON g.id = o.group_id
                 WHERE o.event IN ('opened', 'reopened', 'announced') AND g.state IN ('open', 'acknowledged')
                   AND NOT EXISTS (SELECT 1 FROM outbox p WHERE p.group_id = o.group_id
                       AND p.receiver = o.receiver AND p.event = 'refresh'
                       AND p.state = 'pending')",
            )
            .map_err(backend)?;
        let rows = st
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(backend)?;
        rows.collect::<Result<_, _>>().map_err(backend)
    }

    /// Drops a queued notification that no longer applies (a refresh of a
    /// group resolved meanwhile).
    pub fn drop_outgoing(&self, id: i64) -> Result<(), StoreError> {
        let conn = self.lock()?;
        conn.execute(
            "UPDATE outbox SET state = 'dropped', done_ns = ?2 WHERE id = ?1",
            params![id, now_ns()],
        )
        .map_err(backend)?;
        Ok(())
    }

    /// (group, receiver, count told) for open groups whose count grew
    /// since a receiver was last told, at least `window_ns` ago.
    pub fn summaries_due(
        &self,
        now: i64,
        window_ns: i64,
    ) -> Result<Vec<(String, String, u64)>, StoreError> {
        let conn = self.read()?;
        let mut st = conn
            .prepare_cached(
                "SELECT s.group_id, s.receiver, s.count FROM notify_state s
                 JOIN groups g ON g.id = s.group_id
                 WHERE g.count > s.count AND s.at_ns <= ?1
                   AND g.state IN ('open', 'acknowledged')",
            )
            .map_err(backend)?;
        let rows = st
            .query_map([now - window_ns], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get::<_, i64>(2)? as u64))
            })
            .map_err(backend)?;
        rows.collect::<Result<_, _>>().map_err(backend)
    }

    /// Notifications given up on (dead letters).
    pub fn dead_letters(&self) -> Result<u64, StoreError> {
        let conn = self.read()?;
        conn.query_row(
            "SELECT COUNT(*) FROM outbox WHERE state = 'dead'",
            [],
            |r| r.get::<_, i64>(0),
        )
        .map_err(backend)
        .map(|n| n as u64)
    }
}

impl SqliteStore {
    /// Number of stored alerts.
    pub fn count(&self) -> Result<u64, StoreError> {
        let conn = self.read()?;
        conn.query_row("SELECT COUNT(*) FROM alerts", [], |r| r.get::<_, i64>(0))
            .optional()
            .map_err(backend)
            .map(|n| n.unwrap_or(0) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_proto::v1::{ProcessInfo, Severity};

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
        let s = SqliteStore::in_memory().unwrap();
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
        let s = SqliteStore::open(&path).unwrap();
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
        let s = SqliteStore::in_memory().unwrap();
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
        let s = SqliteStore::in_memory().unwrap();
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
        let conn = s.lock().unwrap();
        let e = conn
            .execute("UPDATE audit SET actor = 'x'", [])
            .unwrap_err();
        assert!(e.to_string().contains("append-only"), "{e}");
        assert!(conn.execute("DELETE FROM audit", []).is_err());
    }

    #[test]
    fn filters_and_orders_newest_first() {
        let s = SqliteStore::in_memory().unwrap();
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
        let s = SqliteStore::open(&dir.path().join("q.db")).unwrap();
        s.insert_batch(&host("h"), &[alert("a", "r", Severity::Warning, 1)])
            .unwrap();
        // A query that is reading (its connection and a read transaction
        // held) while a batch commits: with one connection this would wait.
        let reader = s.read().unwrap();
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
    fn persists_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("alerts.db");
        SqliteStore::open(&path)
            .unwrap()
            .insert_batch(&host("h"), &[alert("a", "r", Severity::Error, 1)])
            .unwrap();
        assert_eq!(SqliteStore::open(&path).unwrap().count().unwrap(), 1);
    }

    #[test]
    fn bad_paths_name_the_culprit() {
        let e = SqliteStore::open(Path::new("/nonexistent-dir/alerts.db"))
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("/nonexistent-dir") && e.contains("does not exist"),
            "{e}"
        );
        let dir = tempfile::tempdir().unwrap();
        let e = SqliteStore::open(dir.path()).err().unwrap().to_string();
        assert!(e.contains("is a directory"), "{e}");
    }
}
