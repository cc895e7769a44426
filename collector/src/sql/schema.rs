//! The store's schema on each engine, and the versioned migrations that
//! bring an older database up to it at start (or with `vigil-collector
//! migrate`). A database newer than this collector is refused: its
//! columns may mean what this version cannot know.
//!
//! SQLite keeps its version in `PRAGMA user_version`; PostgreSQL in the
//! one-row table `vigil_schema`. Each migration runs in one transaction
//! with the version change, so a crash leaves the old version whole.
use rusqlite::Connection;

use super::{
    db::{Db, DbError},
    postgres::Pool,
};

/// The SQLite schema's version.
pub const SQLITE_VERSION: i64 = 9;

const SQLITE_SCHEMA: &str = "
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
CREATE INDEX IF NOT EXISTS alerts_received ON alerts(received_ns);
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
    announced         INTEGER NOT NULL DEFAULT 1,
    tags              TEXT NOT NULL DEFAULT ''
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
CREATE TABLE IF NOT EXISTS users (
    name        TEXT PRIMARY KEY,
    role        TEXT NOT NULL,
    password    TEXT NOT NULL,
    created_ns  INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS credentials (
    hash        TEXT PRIMARY KEY,
    kind        TEXT NOT NULL,
    user_name   TEXT NOT NULL,
    role        TEXT NOT NULL,
    csrf        TEXT NOT NULL,
    label       TEXT NOT NULL,
    created_ns  INTEGER NOT NULL,
    expires_ns  INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS credentials_user ON credentials(user_name);
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

/// Version 8 kept no tags with groups (groups made then match no tag
/// filter) and had no console accounts (new tables).
const MIGRATE_TO_V9: &str = "
ALTER TABLE groups ADD COLUMN tags TEXT NOT NULL DEFAULT '';
";

/// What a migration did: the version found and the version left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Migrated {
    pub from: i64,
    pub to: i64,
}

/// Brings a SQLite database to [`SQLITE_VERSION`] (creating it when
/// empty).
pub fn migrate_sqlite(conn: &Connection) -> rusqlite::Result<Migrated> {
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if version > SQLITE_VERSION {
        return Err(rusqlite::Error::InvalidParameterName(format!(
            "database schema version {version} is newer than this collector ({SQLITE_VERSION}); upgrade the collector"
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
    if (4..9).contains(&version) {
        tx.execute_batch(MIGRATE_TO_V9)?;
    }
    tx.execute_batch(SQLITE_SCHEMA)?;
    tx.pragma_update(None, "user_version", SQLITE_VERSION)?;
    tx.commit()?;
    Ok(Migrated {
        from: version,
        to: SQLITE_VERSION,
    })
}

/// PostgreSQL's migrations, oldest first: the database's version is how
/// many have run. Add one at the end for every change; never edit one
/// that has shipped.
const POSTGRES_MIGRATIONS: &[&str] = &[POSTGRES_V1, POSTGRES_V2];

/// The PostgreSQL schema's version.
pub const POSTGRES_VERSION: i64 = POSTGRES_MIGRATIONS.len() as i64;

/// Version 1: the SQLite schema's tables, with `activity` partitioned by
/// day (`activity_dYYYYMMDD`, made by [`super::partitions`]; what falls
/// outside them waits in `activity_default`), identity columns for the
/// audit trail and the outbox, and the audit trail append-only by trigger.
const POSTGRES_V1: &str = "
CREATE TABLE alerts (
    id            TEXT PRIMARY KEY,
    time_unix_ns  BIGINT NOT NULL,
    received_ns   BIGINT NOT NULL,
    hostname      TEXT NOT NULL,
    machine_id    TEXT NOT NULL,
    rule          TEXT NOT NULL,
    severity      BIGINT NOT NULL,
    pid           BIGINT,
    exe           TEXT,
    body          BYTEA NOT NULL,
    container_id  TEXT,
    k8s_pod       TEXT,
    group_id      TEXT,
    silenced_by   TEXT,
    proc_id       TEXT
);
CREATE INDEX alerts_time ON alerts(time_unix_ns);
CREATE INDEX alerts_host_time ON alerts(hostname, time_unix_ns);
CREATE INDEX alerts_rule_time ON alerts(rule, time_unix_ns);
CREATE INDEX alerts_container_time ON alerts(container_id, time_unix_ns);
CREATE INDEX alerts_pod_time ON alerts(k8s_pod, time_unix_ns);
CREATE INDEX alerts_group_time ON alerts(group_id, time_unix_ns);
CREATE INDEX alerts_proc_time ON alerts(proc_id, time_unix_ns) WHERE proc_id IS NOT NULL;
CREATE TABLE activity (
    hostname      TEXT NOT NULL,
    time_unix_ns  BIGINT NOT NULL,
    id            TEXT NOT NULL,
    kind          BIGINT NOT NULL,
    proc_id       TEXT NOT NULL,
    pid           BIGINT NOT NULL,
    remote_addr   TEXT,
    domain        TEXT,
    body          BYTEA NOT NULL,
    PRIMARY KEY (hostname, time_unix_ns, id)
) PARTITION BY RANGE (time_unix_ns);
CREATE TABLE activity_default PARTITION OF activity DEFAULT;
CREATE INDEX activity_proc_time ON activity(proc_id, time_unix_ns);
CREATE INDEX activity_remote ON activity(remote_addr, time_unix_ns) WHERE remote_addr IS NOT NULL;
CREATE INDEX activity_domain ON activity(domain, time_unix_ns) WHERE domain IS NOT NULL;
CREATE TABLE activity_hosts (
    hostname  TEXT PRIMARY KEY
);
CREATE TABLE processes (
    proc_id    TEXT PRIMARY KEY,
    hostname   TEXT NOT NULL,
    parent_id  TEXT,
    pid        BIGINT NOT NULL,
    seen_ns    BIGINT NOT NULL,
    exit_ns    BIGINT,
    exit_code  BIGINT,
    exe        TEXT,
    sha256     TEXT,
    username   TEXT,
    image      TEXT,
    detail     BIGINT NOT NULL,
    body       BYTEA NOT NULL
);
CREATE INDEX processes_parent ON processes(parent_id, seen_ns) WHERE parent_id IS NOT NULL;
CREATE INDEX processes_seen ON processes(seen_ns);
CREATE INDEX processes_sha256 ON processes(sha256, seen_ns, hostname) WHERE sha256 IS NOT NULL;
CREATE INDEX processes_exe ON processes(exe, seen_ns, hostname) WHERE exe IS NOT NULL;
CREATE INDEX processes_user ON processes(username, seen_ns, hostname) WHERE username IS NOT NULL;
CREATE INDEX processes_image ON processes(image, seen_ns, hostname) WHERE image IS NOT NULL;
CREATE TABLE groups (
    id                TEXT PRIMARY KEY,
    rule              TEXT NOT NULL,
    severity          BIGINT NOT NULL,
    hostname          TEXT NOT NULL,
    container         TEXT NOT NULL,
    state             TEXT NOT NULL,
    reason            TEXT,
    assignee          TEXT NOT NULL,
    count             BIGINT NOT NULL,
    first_seen_ns     BIGINT NOT NULL,
    last_seen_ns      BIGINT NOT NULL,
    output            TEXT NOT NULL,
    key               TEXT NOT NULL,
    state_changed_ns  BIGINT NOT NULL,
    announced         BIGINT NOT NULL DEFAULT 1
);
CREATE INDEX groups_last_seen ON groups(last_seen_ns);
CREATE INDEX groups_state_last_seen ON groups(state, last_seen_ns);
CREATE TABLE audit (
    seq       BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    group_id  TEXT NOT NULL,
    time_ns   BIGINT NOT NULL,
    actor     TEXT NOT NULL,
    client    TEXT NOT NULL,
    action    TEXT NOT NULL,
    detail    TEXT NOT NULL,
    alert_id  TEXT
);
CREATE INDEX audit_group ON audit(group_id, seq);
CREATE FUNCTION vigil_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN RAISE EXCEPTION 'audit entries are append-only'; END $$;
CREATE TRIGGER audit_append_only BEFORE UPDATE OR DELETE ON audit
    FOR EACH ROW EXECUTE FUNCTION vigil_audit_append_only();
CREATE TABLE silences (
    id          TEXT PRIMARY KEY,
    matchers    TEXT NOT NULL,
    reason      TEXT NOT NULL,
    created_by  TEXT NOT NULL,
    created_ns  BIGINT NOT NULL,
    expires_ns  BIGINT NOT NULL,
    expired_by  TEXT,
    matched     BIGINT NOT NULL
);
CREATE INDEX silences_expires ON silences(expires_ns);
CREATE TABLE outbox (
    id          BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    receiver    TEXT NOT NULL,
    group_id    TEXT NOT NULL,
    event       TEXT NOT NULL,
    body        BYTEA NOT NULL,
    attempts    BIGINT NOT NULL,
    next_ns     BIGINT NOT NULL,
    state       TEXT NOT NULL,
    last_error  TEXT NOT NULL,
    created_ns  BIGINT NOT NULL,
    done_ns     BIGINT
);
CREATE INDEX outbox_due ON outbox(state, next_ns);
CREATE INDEX outbox_group ON outbox(group_id, receiver, event);
CREATE TABLE notify_state (
    group_id  TEXT NOT NULL,
    receiver  TEXT NOT NULL,
    count     BIGINT NOT NULL,
    at_ns     BIGINT NOT NULL,
    PRIMARY KEY (group_id, receiver)
);
CREATE TABLE notify_cursor (
    name  TEXT PRIMARY KEY,
    seq   BIGINT NOT NULL
);
CREATE TABLE agents (
    hostname      TEXT PRIMARY KEY,
    state         TEXT NOT NULL,
    reason        TEXT NOT NULL,
    last_seen_ns  BIGINT NOT NULL,
    heartbeat     BYTEA NOT NULL
);
";

/// Version 2: tags with groups, and the console's accounts.
const POSTGRES_V2: &str = "
ALTER TABLE groups ADD COLUMN tags TEXT NOT NULL DEFAULT '';
CREATE INDEX alerts_received ON alerts(received_ns);
CREATE TABLE users (
    name        TEXT PRIMARY KEY,
    role        TEXT NOT NULL,
    password    TEXT NOT NULL,
    created_ns  BIGINT NOT NULL
);
CREATE TABLE credentials (
    hash        TEXT PRIMARY KEY,
    kind        TEXT NOT NULL,
    user_name   TEXT NOT NULL,
    role        TEXT NOT NULL,
    csrf        TEXT NOT NULL,
    label       TEXT NOT NULL,
    created_ns  BIGINT NOT NULL,
    expires_ns  BIGINT NOT NULL
);
CREATE INDEX credentials_user ON credentials(user_name);
";

/// Serializes migrations between collectors starting at once (a
/// transaction-scoped advisory lock; any fixed number of our own).
const MIGRATION_LOCK: i64 = 0x5649_4749_4c00_0001;

/// Brings a PostgreSQL database to [`POSTGRES_VERSION`] (creating the
/// schema in an empty one).
pub fn migrate_postgres(pool: &Pool) -> Result<Migrated, DbError> {
    pool.write(|db: &mut dyn Db| {
        db.exec("SELECT pg_advisory_xact_lock(?1)", crate::vals![MIGRATION_LOCK])?;
        db.exec(
            "CREATE TABLE IF NOT EXISTS vigil_schema (version BIGINT NOT NULL)",
            &[],
        )?;
        let from = match db.value::<i64>("SELECT version FROM vigil_schema", &[])? {
            Some(v) => v,
            None => {
                db.exec("INSERT INTO vigil_schema (version) VALUES (0)", &[])?;
                0
            }
        };
        if from > POSTGRES_VERSION {
            return Err(DbError::new(format!(
                "database schema version {from} is newer than this collector ({POSTGRES_VERSION}); upgrade the collector"
            )));
        }
        for m in &POSTGRES_MIGRATIONS[from as usize..] {
            for statement in split_statements(m) {
                db.exec(&statement, &[])?;
            }
        }
        db.exec(
            "UPDATE vigil_schema SET version = ?1",
            crate::vals![POSTGRES_VERSION],
        )?;
        Ok(Migrated {
            from,
            to: POSTGRES_VERSION,
        })
    })
}

/// A migration's statements, one by one (prepared statements hold one
/// each). Semicolons inside `$$` bodies stay.
fn split_statements(sql: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_body = false;
    for part in sql.split_inclusive(';') {
        cur.push_str(part);
        in_body ^= part.matches("$$").count() % 2 == 1;
        if !in_body {
            let s = cur.trim().trim_end_matches(';').trim();
            if !s.is_empty() {
                out.push(s.to_string());
            }
            cur.clear();
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_split_but_function_bodies_stay_whole() {
        let s = split_statements(POSTGRES_V1);
        let f = s.iter().find(|s| s.starts_with("CREATE FUNCTION")).unwrap();
        assert!(f.ends_with("END $$"), "{f}");
        assert!(s.iter().all(|s| !s.is_empty() && !s.ends_with(';')));
        assert_eq!(
            s.first().unwrap().lines().next().unwrap(),
            "CREATE TABLE alerts ("
        );
    }
}
