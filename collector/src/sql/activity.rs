//! The activity store: events in `activity` (each id once), the process
//! view in `processes`, both indexed for the investigation queries (see
//! the schema in `sql/schema.rs`). On PostgreSQL `activity` is partitioned
//! by day (`sql/partitions.rs`).
//!
//! Shaped for ingestion at fleet rates: `activity` is clustered by host and
//! time (a host's events append at its end, and a timeline is one range
//! read); its key (host, time, id) is what makes a re-sent event a no-op,
//! with no index of ids; and an event's body leaves out its process, which
//! is stored once in `processes` and joined back when read. Only an exec
//! keeps its own copy: what the process was at that moment.
use prost::Message;
use vigil_proto::v1::{Activity, ActivityKind, Alert, HostInfo, ProcessInfo};

use super::{
    db::{Db, DbError, Dialect, Row, Value},
    multi_insert, partitions, SqlStore, ROWS_PER_INSERT,
};
use crate::{
    activity::{ActivityStore, Detail, HostSeen, PivotKey, ProcessRow, Span},
    store::StoreError,
    vals,
};

/// Process ids remembered as stored; beyond, the memory starts over.
const KNOWN_PROCS_MAX: usize = 200_000;

fn corrupt(what: &str) -> impl FnOnce(prost::DecodeError) -> StoreError + '_ {
    move |e| StoreError::Backend(format!("corrupt stored {what}: {e}"))
}

fn nonempty(s: &str) -> Option<&str> {
    (!s.is_empty()).then_some(s)
}

/// A process row to fold into the view.
struct ProcWrite<'a> {
    process: &'a ProcessInfo,
    container: Option<&'a vigil_proto::v1::ContainerInfo>,
    detail: Detail,
    /// The record is the process's exec: it may replace the program and
    /// moves `seen_ns` to `at`.
    exec: bool,
    /// When the record says the process was seen.
    at: i64,
}

/// Fills the fields `new` lacks from `old`: a fuller record raising a row
/// keeps what the row knew (an ancestry's argv, a parent).
fn merge(new: &mut ProcessInfo, old: &ProcessInfo) {
    fn keep(n: &mut String, o: &str) {
        if n.is_empty() {
            *n = o.to_string();
        }
    }
    keep(&mut new.exe, &old.exe);
    keep(&mut new.comm, &old.comm);
    keep(&mut new.user, &old.user);
    keep(&mut new.cwd, &old.cwd);
    keep(&mut new.parent_proc_id, &old.parent_proc_id);
    if new.argv.is_empty() {
        new.argv = old.argv.clone();
    }
    if new.start_unix_ns == 0 {
        new.start_unix_ns = old.start_unix_ns;
    }
    if new.executable.is_none() {
        new.executable = old.executable.clone();
    }
}

/// Folds one process record into `processes`: inserts it, or raises the
/// host's stored row to what it knows (a fuller record, or a later exec).
/// A row of another host with the same id is never touched: one agent
/// cannot rewrite another host's processes.
fn fold_process(db: &mut dyn Db, host: &str, w: &ProcWrite<'_>) -> Result<(), DbError> {
    let stored: Option<(i64, i64, Vec<u8>)> = db
        .row(
            "SELECT detail, seen_ns, body FROM processes WHERE proc_id = ?1 AND hostname = ?2",
            vals![&w.process.proc_id, host],
        )?
        .map(|r| Ok::<_, DbError>((r.get(0)?, r.get(1)?, r.get(2)?)))
        .transpose()?;
    let replace = match &stored {
        None => true,
        Some((detail, seen, _)) => (w.detail as i64) > *detail || (w.exec && w.at >= *seen),
    };
    if !replace {
        if let (Some(_), Some(parent)) = (&stored, nonempty(&w.process.parent_proc_id)) {
            let hostname = db.dialect().no_index("hostname");
            db.exec(
                &format!(
                    "UPDATE processes SET parent_id = ?2
                     WHERE proc_id = ?1 AND {hostname} = ?3 AND parent_id IS NULL"
                ),
                vals![&w.process.proc_id, parent, host],
            )?;
        }
        return Ok(());
    }
    let mut p = w.process.clone();
    let mut container = w.container.cloned();
    if let Some((_, _, body)) = &stored {
        if let Ok(old) = Activity::decode(body.as_slice()) {
            if !w.exec {
                if let Some(op) = &old.process {
                    merge(&mut p, op);
                }
                container = container.or(old.container);
            }
        }
    }
    // Only an exec says when a process was seen; anything else keeps the
    // row's time, or starts it at the process's start.
    let seen = match &stored {
        Some((_, seen, _)) if !w.exec => *seen,
        None if !w.exec && p.start_unix_ns > 0 => p.start_unix_ns.min(w.at),
        _ => w.at,
    };
    let sha = p
        .executable
        .as_ref()
        .and_then(|x| nonempty(&x.sha256))
        .map(str::to_string);
    let image = container
        .as_ref()
        .and_then(|c| nonempty(&c.image))
        .map(str::to_string);
    let body = Activity {
        kind: ActivityKind::Exec as i32,
        time_unix_ns: seen,
        process: Some(p.clone()),
        container,
        ..Default::default()
    }
    .encode_to_vec();
    db.exec(
        "INSERT INTO processes (proc_id, hostname, parent_id, pid, seen_ns, exe, sha256,
             username, image, detail, body)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
         ON CONFLICT(proc_id) DO UPDATE SET
             parent_id = COALESCE(excluded.parent_id, processes.parent_id), pid = excluded.pid,
             seen_ns = excluded.seen_ns, exe = excluded.exe, sha256 = excluded.sha256,
             username = excluded.username, image = COALESCE(excluded.image, processes.image),
             detail = excluded.detail, body = excluded.body
         WHERE processes.hostname = excluded.hostname",
        vals![
            &p.proc_id,
            host,
            nonempty(&p.parent_proc_id),
            p.pid,
            seen,
            nonempty(&p.exe),
            sha,
            nonempty(&p.user),
            image,
            w.detail as i64,
            body,
        ],
    )?;
    Ok(())
}

/// Stores one event; true when it was new.
/// An event's row in `activity`, as [`EVENT_INSERT_COLUMNS`] lists them.
fn event_values(host: &str, a: &Activity) -> [Value; 9] {
    let (proc_id, pid) = a
        .process
        .as_ref()
        .map_or(("", 0), |p| (p.proc_id.as_str(), p.pid));
    let body = if a.kind() == ActivityKind::Exec || proc_id.is_empty() {
        a.encode_to_vec()
    } else {
        // The rest of the process is in `processes`, joined back when read;
        // the event keeps who it was then (a process that execs later
        // runs another program).
        let p = a.process.as_ref().map(|p| ProcessInfo {
            pid: p.pid,
            uid: p.uid,
            comm: p.comm.clone(),
            exe: p.exe.clone(),
            user: p.user.clone(),
            proc_id: p.proc_id.clone(),
            ..Default::default()
        });
        Activity {
            process: p,
            ..a.clone()
        }
        .encode_to_vec()
    };
    [
        Value::from(&a.id),
        Value::from(host),
        Value::from(a.time_unix_ns),
        Value::from(a.kind),
        Value::from(proc_id),
        Value::from(pid),
        Value::from(nonempty(&a.remote_addr)),
        Value::from(nonempty(&a.domain)),
        Value::from(body),
    ]
}

const EVENT_INSERT_COLUMNS: &str =
    "id, hostname, time_unix_ns, kind, proc_id, pid, remote_addr, domain, body";

/// Stores events (rows of [`event_values`]), many per statement; returns
/// how many were new (an id stored already, or twice in `rows`, counts
/// once).
fn store_events(db: &mut dyn Db, rows: &[[Value; 9]]) -> Result<u32, DbError> {
    let mut stored = 0;
    for chunk in rows.chunks(ROWS_PER_INSERT) {
        let sql = multi_insert(
            "activity",
            EVENT_INSERT_COLUMNS,
            9,
            chunk.len(),
            "ON CONFLICT DO NOTHING",
        );
        let params: Vec<Value> = chunk.iter().flatten().cloned().collect();
        stored += db.exec(&sql, &params)? as u32;
    }
    Ok(stored)
}

/// An event as read: its body, its process's identity, and the process
/// view's body for it.
type RawEvent = (Vec<u8>, String, u32, Option<Vec<u8>>);

/// The columns an event is read with (`activity a LEFT JOIN processes p`
/// on [`JOIN_PROCESS`]).
const EVENT_COLUMNS: &str = "a.body, a.proc_id, a.pid, p.body";
const JOIN_PROCESS: &str =
    "LEFT JOIN processes p ON p.proc_id = a.proc_id AND p.hostname = a.hostname";

fn event_row(r: &Row) -> Result<RawEvent, DbError> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
}

/// An event with its process joined back in.
fn decode_event((body, proc_id, pid, proc_body): RawEvent) -> Result<Activity, StoreError> {
    let mut a = Activity::decode(body.as_slice()).map_err(corrupt("activity"))?;
    if a.kind() == ActivityKind::Exec && a.process.is_some() {
        return Ok(a);
    }
    let then = a.process.take().unwrap_or(ProcessInfo {
        pid,
        proc_id,
        ..Default::default()
    });
    let stored = proc_body
        .and_then(|b| Activity::decode(b.as_slice()).ok())
        .and_then(|p| p.process);
    a.process = Some(match stored {
        Some(mut p) => {
            if !then.exe.is_empty() && then.exe != p.exe {
                // It ran another program then: what the view knows of the
                // later one is not about this event.
                p.argv.clear();
                p.executable = None;
                p.exe = then.exe;
            }
            if !then.user.is_empty() {
                p.user = then.user;
                p.uid = then.uid;
            }
            if !then.comm.is_empty() {
                p.comm = then.comm;
            }
            p
        }
        None => then,
    });
    Ok(a)
}

fn decode_events(rows: Vec<RawEvent>) -> Result<Vec<Activity>, StoreError> {
    rows.into_iter().map(decode_event).collect()
}

/// A `processes` row as read: hostname, body, detail, seen, exit, code,
/// parent (the column is what `children` follows; the body may lag it).
type RawProcess = (
    String,
    Vec<u8>,
    i64,
    i64,
    Option<i64>,
    Option<i32>,
    Option<String>,
);

fn process_row(r: &Row) -> Result<RawProcess, DbError> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
    ))
}

const PROCESS_COLUMNS: &str = "hostname, body, detail, seen_ns, exit_ns, exit_code, parent_id";

fn decode_process(
    (hostname, body, detail, seen_ns, exit_ns, exit_code, parent): RawProcess,
) -> Result<ProcessRow, StoreError> {
    let a = Activity::decode(body.as_slice()).map_err(corrupt("process"))?;
    let mut process = a.process.unwrap_or_default();
    if let Some(parent) = parent {
        process.parent_proc_id = parent;
    }
    Ok(ProcessRow {
        hostname,
        process,
        container: a.container,
        detail: match detail {
            2 => Detail::Full,
            1 => Detail::Identity,
            _ => Detail::Partial,
        },
        seen_ns,
        exit_ns,
        exit_code,
    })
}

fn decode_all<T: Message + Default>(rows: Vec<Vec<u8>>, what: &str) -> Result<Vec<T>, StoreError> {
    rows.iter()
        .map(|b| T::decode(b.as_slice()).map_err(corrupt(what)))
        .collect()
}

/// The column and index a pivot reads.
fn pivot_column(key: &PivotKey) -> (&'static str, &'static str, &str) {
    match key {
        PivotKey::Sha256(v) => ("processes", "sha256", v),
        PivotKey::Exe(v) => ("processes", "exe", v),
        PivotKey::User(v) => ("processes", "username", v),
        PivotKey::Image(v) => ("processes", "image", v),
        PivotKey::Ip(v) => ("activity", "remote_addr", v),
        PivotKey::Domain(v) => ("activity", "domain", v),
    }
}

// In the reads by process below, `+hostname` (SQLite's spelling, through
// `Dialect::no_index`) keeps SQLite on the index by process: the host and
// time key would otherwise look like the way to read a host's events in
// time order, and scan all of them.
impl ActivityStore for SqlStore {
    fn insert_activity(
        &self,
        host: &HostInfo,
        activity: &[Activity],
        alerts: &[Alert],
    ) -> Result<u32, StoreError> {
        if activity.is_empty() && alerts.is_empty() {
            return Ok(0);
        }
        let h = host.hostname.as_str();
        let mut known = self
            .known_procs
            .lock()
            .map_err(|_| StoreError::Backend("process cache lock poisoned".into()))?;
        // Raised in the cache only once committed.
        let mut learned: Vec<(String, Detail)> = Vec::new();
        let stored = self.write(|db| {
            learned.clear();
            let mut events: Vec<[Value; 9]> = Vec::new();
            let mut fold = |db: &mut dyn Db, w: ProcWrite<'_>| -> Result<(), DbError> {
                let id = &w.process.proc_id;
                if id.is_empty() {
                    return Ok(());
                }
                // A known row is not raised by a record that knows no more
                // (an exec always refreshes: a process can exec again).
                if !w.exec && known.get(id).is_some_and(|d| *d >= w.detail) {
                    return Ok(());
                }
                fold_process(db, h, &w)?;
                learned.push((id.clone(), w.detail));
                Ok(())
            };
            for a in activity {
                events.push(event_values(h, a));
                let Some(p) = &a.process else { continue };
                let exec = a.kind() == ActivityKind::Exec;
                fold(
                    db,
                    ProcWrite {
                        process: p,
                        container: a.container.as_ref().filter(|_| exec),
                        detail: if exec { Detail::Full } else { Detail::Identity },
                        exec,
                        at: a.time_unix_ns,
                    },
                )?;
                if a.kind() == ActivityKind::Exit {
                    db.exec(
                        "UPDATE processes SET exit_ns = ?2, exit_code = ?3
                         WHERE proc_id = ?1 AND hostname = ?4",
                        vals![&p.proc_id, a.time_unix_ns, a.exit_code, h],
                    )?;
                }
            }
            for al in alerts {
                if let Some(p) = &al.process {
                    fold(
                        db,
                        ProcWrite {
                            process: p,
                            container: al.container.as_ref(),
                            detail: Detail::Full,
                            exec: false,
                            at: al.time_unix_ns,
                        },
                    )?;
                }
                // The ancestry, nearest first: each one's parent is the next.
                for (i, anc) in al.ancestry.iter().enumerate() {
                    let p = ProcessInfo {
                        pid: anc.pid,
                        exe: anc.exe.clone(),
                        argv: anc.argv.clone(),
                        proc_id: anc.proc_id.clone(),
                        parent_proc_id: al
                            .ancestry
                            .get(i + 1)
                            .map(|n| n.proc_id.clone())
                            .unwrap_or_default(),
                        ..Default::default()
                    };
                    fold(
                        db,
                        ProcWrite {
                            process: &p,
                            container: None,
                            detail: Detail::Partial,
                            exec: false,
                            at: al.time_unix_ns,
                        },
                    )?;
                }
                for c in &al.context {
                    events.push(event_values(h, c));
                    if let Some(p) = &c.process {
                        fold(
                            db,
                            ProcWrite {
                                process: p,
                                container: None,
                                detail: Detail::Partial,
                                exec: false,
                                at: c.time_unix_ns,
                            },
                        )?;
                    }
                }
            }
            let stored = store_events(db, &events)?;
            if stored > 0 {
                db.exec(
                    "INSERT INTO activity_hosts (hostname) VALUES (?1) ON CONFLICT DO NOTHING",
                    vals![h],
                )?;
            }
            Ok::<_, StoreError>(stored)
        })?;
        if known.len() + learned.len() > KNOWN_PROCS_MAX {
            known.clear();
        }
        for (id, d) in learned {
            let e = known.entry(id).or_insert(d);
            *e = (*e).max(d);
        }
        Ok(stored)
    }

    fn alert_by_id(&self, id: &str) -> Result<Option<Alert>, StoreError> {
        let body: Option<Vec<u8>> = self.read(|db| {
            db.value("SELECT body FROM alerts WHERE id = ?1", vals![id])
                .map_err(StoreError::from)
        })?;
        body.map(|b| Alert::decode(b.as_slice()).map_err(corrupt("alert")))
            .transpose()
    }

    fn process(&self, host: &str, proc_id: &str) -> Result<Option<ProcessRow>, StoreError> {
        let row = self.read(|db| {
            db.row(
                &format!(
                    "SELECT {PROCESS_COLUMNS} FROM processes WHERE proc_id = ?1 AND hostname = ?2"
                ),
                vals![proc_id, host],
            )?
            .map(|r| process_row(&r))
            .transpose()
            .map_err(StoreError::from)
        })?;
        row.map(decode_process).transpose()
    }

    fn children(
        &self,
        host: &str,
        parents: &[String],
        limit: u32,
    ) -> Result<Vec<ProcessRow>, StoreError> {
        self.read(|db| {
            let hostname = db.dialect().no_index("hostname");
            let sql = format!(
                "SELECT {PROCESS_COLUMNS} FROM processes WHERE parent_id = ?1 AND {hostname} = ?3
                 ORDER BY seen_ns LIMIT ?2"
            );
            let mut out = Vec::new();
            for p in parents {
                let left = limit.saturating_sub(out.len() as u32);
                if left == 0 {
                    break;
                }
                for r in db.map(&sql, vals![p, left, host], process_row)? {
                    out.push(decode_process(r)?);
                }
            }
            Ok(out)
        })
    }

    fn process_events(
        &self,
        host: &str,
        proc_id: &str,
        limit: u32,
    ) -> Result<(Vec<Activity>, u64), StoreError> {
        let (rows, total) = self.read(|db| {
            let hostname = db.dialect().no_index("a.hostname");
            let rows = db.map(
                &format!(
                    "SELECT {EVENT_COLUMNS} FROM activity a
                     {JOIN_PROCESS}
                     WHERE a.proc_id = ?1 AND {hostname} = ?3
                     ORDER BY a.time_unix_ns LIMIT ?2"
                ),
                vals![proc_id, limit, host],
                event_row,
            )?;
            // Counted up to a bound: a busy daemon's total is not worth a scan.
            let total: Option<i64> = db.value(
                "SELECT count(*) FROM (SELECT 1 FROM activity WHERE proc_id = ?1 LIMIT 10000) AS t",
                vals![proc_id],
            )?;
            Ok::<_, StoreError>((rows, total.unwrap_or(0) as u64))
        })?;
        Ok((decode_events(rows)?, total))
    }

    fn process_alerts(
        &self,
        host: &str,
        proc_id: &str,
        limit: u32,
    ) -> Result<Vec<Alert>, StoreError> {
        let rows = self.read(|db| {
            let hostname = db.dialect().no_index("hostname");
            db.map(
                &format!(
                    "SELECT body FROM alerts WHERE proc_id = ?1 AND {hostname} = ?3
                     ORDER BY time_unix_ns LIMIT ?2"
                ),
                vals![proc_id, limit, host],
                |r| r.get(0),
            )
            .map_err(StoreError::from)
        })?;
        decode_all(rows, "alert")
    }

    fn span_activity(&self, s: &Span) -> Result<Vec<Activity>, StoreError> {
        let dir = s.order.sql();
        let rows = self.read(|db| {
            db.map(
                &format!(
                    "SELECT {EVENT_COLUMNS} FROM activity a
                     {JOIN_PROCESS}
                     WHERE a.hostname = ?1 AND a.time_unix_ns BETWEEN ?2 AND ?3
                       AND (CAST(?4 AS BIGINT) IS NULL OR a.pid = ?4)
                     ORDER BY a.time_unix_ns {dir}, a.id {dir} LIMIT ?5"
                ),
                vals![&s.host, s.from_ns, s.to_ns, s.pid, s.limit],
                event_row,
            )
            .map_err(StoreError::from)
        })?;
        decode_events(rows)
    }

    fn span_alerts(&self, s: &Span) -> Result<Vec<Alert>, StoreError> {
        let dir = s.order.sql();
        let rows = self.read(|db| {
            db.map(
                &format!(
                    "SELECT body FROM alerts
                     WHERE hostname = ?1 AND time_unix_ns BETWEEN ?2 AND ?3
                       AND (CAST(?4 AS BIGINT) IS NULL OR pid = ?4)
                     ORDER BY time_unix_ns {dir}, id {dir} LIMIT ?5"
                ),
                vals![&s.host, s.from_ns, s.to_ns, s.pid, s.limit],
                |r| r.get(0),
            )
            .map_err(StoreError::from)
        })?;
        decode_all(rows, "alert")
    }

    fn pivot_hosts(
        &self,
        key: &PivotKey,
        since_ns: i64,
        scan: u32,
    ) -> Result<(Vec<HostSeen>, bool), StoreError> {
        let (table, column, value) = pivot_column(key);
        let time = if table == "processes" {
            "seen_ns"
        } else {
            "time_unix_ns"
        };
        let hosts: Vec<HostSeen> = self.read(|db| {
            db.map(
                &format!(
                    "SELECT hostname, min(t), max(t), count(*) FROM
                       (SELECT hostname, {time} AS t FROM {table}
                        WHERE {column} = ?1 AND {time} >= ?2
                        ORDER BY {time} DESC LIMIT ?3) AS m
                     GROUP BY hostname ORDER BY max(t) DESC"
                ),
                vals![value, since_ns, scan as i64 + 1],
                |r| {
                    Ok(HostSeen {
                        hostname: r.get(0)?,
                        first_ns: r.get(1)?,
                        last_ns: r.get(2)?,
                        count: r.get(3)?,
                    })
                },
            )
            .map_err(StoreError::from)
        })?;
        let counted: u64 = hosts.iter().map(|h| h.count).sum();
        Ok((hosts, counted > scan as u64))
    }

    fn pivot_matches(
        &self,
        key: &PivotKey,
        since_ns: i64,
        limit: u32,
    ) -> Result<Vec<(String, Activity)>, StoreError> {
        let (table, column, value) = pivot_column(key);
        if table == "processes" {
            let rows: Vec<(String, Vec<u8>)> = self.read(|db| {
                db.map(
                    &format!(
                        "SELECT hostname, body FROM processes
                         WHERE {column} = ?1 AND seen_ns >= ?2
                         ORDER BY seen_ns DESC LIMIT ?3"
                    ),
                    vals![value, since_ns, limit],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .map_err(StoreError::from)
            })?;
            return rows
                .into_iter()
                .map(|(host, body)| {
                    let a = Activity::decode(body.as_slice()).map_err(corrupt("process"))?;
                    Ok((host, a))
                })
                .collect();
        }
        let rows: Vec<(String, RawEvent)> = self.read(|db| {
            db.map(
                &format!(
                    "SELECT a.hostname, {EVENT_COLUMNS} FROM activity a
                     {JOIN_PROCESS}
                     WHERE a.{column} = ?1 AND a.time_unix_ns >= ?2
                     ORDER BY a.time_unix_ns DESC LIMIT ?3"
                ),
                vals![value, since_ns, limit],
                |r| Ok((r.get(0)?, (r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))),
            )
            .map_err(StoreError::from)
        })?;
        rows.into_iter()
            .map(|(host, ev)| Ok((host, decode_event(ev)?)))
            .collect()
    }

    fn prune_activity(&self, before_ns: i64, max: u32) -> Result<u64, StoreError> {
        let (events, procs) = self.write(|db| {
            let mut events = 0u64;
            if db.dialect() == Dialect::Postgres {
                // Whole days go with their partition; the default
                // partition's stragglers row by row below.
                events += partitions::drop_before(db, before_ns)?;
            }
            // Host by host, along the table's own order.
            let hosts: Vec<String> =
                db.map("SELECT hostname FROM activity_hosts", &[], |r| r.get(0))?;
            for h in hosts {
                let left = u64::from(max).saturating_sub(events);
                if left == 0 {
                    break;
                }
                events += db.exec(
                    "DELETE FROM activity WHERE (hostname, time_unix_ns, id) IN
                       (SELECT hostname, time_unix_ns, id FROM activity
                        WHERE hostname = ?1 AND time_unix_ns < ?2 LIMIT ?3)",
                    vals![&h, before_ns, left],
                )?;
            }
            // Processes that exited before the cutoff; and any not seen for
            // four times as long (their exit was never reported).
            let span = now_span(before_ns);
            let procs = db.exec(
                "DELETE FROM processes WHERE proc_id IN
                   (SELECT proc_id FROM processes WHERE seen_ns < ?1
                      AND ((exit_ns IS NOT NULL AND exit_ns < ?1) OR seen_ns < ?2)
                    LIMIT ?3)",
                vals![before_ns, before_ns.saturating_sub(3 * span), max],
            )?;
            Ok::<_, StoreError>((events, procs))
        })?;
        if procs > 0 {
            if let Ok(mut k) = self.known_procs.lock() {
                k.clear();
            }
        }
        Ok(events + procs)
    }
}

/// How far `before_ns` lies in the past (the retention).
fn now_span(before_ns: i64) -> i64 {
    crate::store::now_ns().saturating_sub(before_ns).max(0)
}
