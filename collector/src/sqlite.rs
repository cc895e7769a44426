//! SQLite storage: one file, WAL journal, one row per alert with the filter
//! columns broken out and the full alert kept as protobuf bytes.
use std::{path::Path, sync::Mutex};

use prost::Message;
use rusqlite::{params, Connection, OptionalExtension};
use vigil_proto::v1::{AgentHeartbeat, Alert, HostInfo};

use crate::store::{AgentRecord, AgentState, AlertFilter, AlertStore, InsertOutcome, StoreError};

const SCHEMA_VERSION: i64 = 3;

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
    k8s_pod       TEXT
);
CREATE INDEX IF NOT EXISTS alerts_time ON alerts(time_unix_ns);
CREATE INDEX IF NOT EXISTS alerts_host_time ON alerts(hostname, time_unix_ns);
CREATE INDEX IF NOT EXISTS alerts_rule_time ON alerts(rule, time_unix_ns);
CREATE INDEX IF NOT EXISTS alerts_container_time ON alerts(container_id, time_unix_ns);
CREATE INDEX IF NOT EXISTS alerts_pod_time ON alerts(k8s_pod, time_unix_ns);
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

pub struct SqliteStore {
    /// The writer: batches, the registry, pruning.
    conn: Mutex<Connection>,
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
        if version == 1 {
            conn.execute_batch(MIGRATE_V1_TO_V2)?;
        }
        conn.execute_batch(SCHEMA)?;
        conn.pragma_update(None, "user_version", SCHEMA_VERSION)?;
        Ok(SqliteStore {
            conn: Mutex::new(conn),
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

fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

impl AlertStore for SqliteStore {
    fn insert_batch(&self, host: &HostInfo, alerts: &[Alert]) -> Result<InsertOutcome, StoreError> {
        let mut conn = self.lock()?;
        let tx = conn.transaction().map_err(backend)?;
        let mut out = InsertOutcome::default();
        {
            let mut stmt = tx
                .prepare_cached(
                    "INSERT OR IGNORE INTO alerts
                     (id, time_unix_ns, received_ns, hostname, machine_id, rule, severity, pid, exe, body,
                      container_id, k8s_pod)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
                )
                .map_err(backend)?;
            let received = now_ns();
            for a in alerts {
                let mut stored = a.clone();
                stored.host = Some(host.clone());
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
                    ])
                    .map_err(backend)?;
                if n == 1 {
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
                    f.container
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
