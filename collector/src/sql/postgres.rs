//! PostgreSQL under the query layer: a small pool of connections, each
//! with its prepared statements, and the conversions between [`Value`]
//! and the server's types.
//!
//! The client is rust-postgres' synchronous one: the store's methods block
//! (async callers use `spawn_blocking`), as they do on SQLite. That client
//! drives its socket with a runtime of its own, which tokio refuses to
//! start on a thread already inside a runtime, even a blocking one; so
//! work from such a thread, and the closing of a connection, runs on a
//! short-lived thread of its own ([`off_runtime`]).
use std::{
    collections::HashMap,
    sync::{Condvar, Mutex},
    time::Duration,
};

use postgres::{
    config::SslMode,
    types::{to_sql_checked, IsNull, ToSql, Type},
    Client, GenericClient, NoTls, Statement,
};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::db::{Db, DbError, Dialect, Row, TxError, Value};

/// Connections a collector opens at most: the ingest writers, the
/// notifier, the sweeps and the queries together.
const POOL_MAX: usize = 16;

impl From<postgres::Error> for DbError {
    fn from(e: postgres::Error) -> DbError {
        let code = e.code().map(|c| c.code().to_string());
        let message = match e.as_db_error() {
            Some(db) => match db.detail() {
                Some(d) => format!("{}: {} ({d})", db.severity(), db.message()),
                None => format!("{}: {}", db.severity(), db.message()),
            },
            None => {
                // The cause says what went wrong (a refused certificate,
                // a refused connection): the error alone does not.
                let mut m = e.to_string();
                let mut cause = std::error::Error::source(&e);
                while let Some(c) = cause {
                    m = format!("{m}: {c}");
                    cause = c.source();
                }
                m
            }
        };
        DbError { message, code }
    }
}

impl ToSql for Value {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut bytes::BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        let int = |i: i64, out: &mut bytes::BytesMut| match *ty {
            Type::INT8 => i.to_sql(ty, out),
            Type::INT4 => i32::try_from(i)?.to_sql(ty, out),
            Type::INT2 => i16::try_from(i)?.to_sql(ty, out),
            Type::BOOL => (i != 0).to_sql(ty, out),
            _ => Err(format!("an integer cannot be bound to a {ty} parameter").into()),
        };
        match self {
            Value::Null => Ok(IsNull::Yes),
            Value::Int(i) => int(*i, out),
            Value::Bool(b) if *ty == Type::BOOL => b.to_sql(ty, out),
            Value::Bool(b) => int(*b as i64, out),
            Value::Text(s) => s.as_str().to_sql(ty, out),
            Value::Blob(b) => b.as_slice().to_sql(ty, out),
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

fn pg_value(r: &postgres::Row, i: usize) -> Result<Value, postgres::Error> {
    let ty = r.columns()[i].type_();
    Ok(match *ty {
        Type::INT8 => r
            .try_get::<_, Option<i64>>(i)?
            .map_or(Value::Null, Value::Int),
        Type::INT4 => r
            .try_get::<_, Option<i32>>(i)?
            .map_or(Value::Null, |v| Value::Int(v.into())),
        Type::INT2 => r
            .try_get::<_, Option<i16>>(i)?
            .map_or(Value::Null, |v| Value::Int(v.into())),
        Type::BOOL => r
            .try_get::<_, Option<bool>>(i)?
            .map_or(Value::Null, Value::Bool),
        Type::BYTEA => r
            .try_get::<_, Option<Vec<u8>>>(i)?
            .map_or(Value::Null, Value::Blob),
        _ => r
            .try_get::<_, Option<String>>(i)?
            .map_or(Value::Null, Value::Text),
    })
}

/// Runs `f` where the client may block: here, or, on a thread inside a
/// tokio runtime, on a scoped thread of its own.
pub fn off_runtime<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    if tokio::runtime::Handle::try_current().is_err() {
        return f();
    }
    std::thread::scope(|s| match s.spawn(f).join() {
        Ok(r) => r,
        Err(panic) => std::panic::resume_unwind(panic),
    })
}

/// A client that closes off the runtime when dropped.
pub struct Owned(Option<Client>);

impl Owned {
    pub fn client(&mut self) -> &mut Client {
        self.0.as_mut().expect("a client until dropped")
    }
}

impl Drop for Owned {
    fn drop(&mut self) {
        if let Some(c) = self.0.take() {
            off_runtime(move || drop(c));
        }
    }
}

/// `?N` parameters as PostgreSQL writes them (`$N`), outside quoted text.
pub fn numbered_params(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut quoted = false;
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' => quoted = !quoted,
            '?' if !quoted && chars.peek().is_some_and(char::is_ascii_digit) => {
                out.push('$');
                continue;
            }
            _ => {}
        }
        out.push(c);
    }
    out
}

/// The client's settings from a `postgres://` address, and TLS when it
/// asks for it. Beside libpq's parameters, two are read here:
///
/// - `sslmode`: `disable` (the default here) or `require`, which
///   encrypts and verifies the server's certificate and name (libpq's
///   `verify-full`; `verify-full` and `verify-ca` are taken as it).
///   `prefer` and `allow` are refused: they fall back to plaintext
///   without a word.
/// - `sslrootcert=FILE`: the CA certificates (PEM) the server's is
///   checked against; without it, the Mozilla roots.
pub fn parse_address(url: &str) -> Result<(postgres::Config, Option<MakeRustlsConnect>), DbError> {
    let bad = |m: String| DbError::new(format!("bad PostgreSQL address: {m}"));
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let mut kept = Vec::new();
    let (mut mode, mut root) = (None, None);
    for kv in query.split('&').filter(|kv| !kv.is_empty()) {
        match kv.split_once('=').unwrap_or((kv, "")) {
            ("sslmode", v) => mode = Some(v),
            ("sslrootcert", v) => root = Some(v),
            _ => kept.push(kv),
        }
    }
    let tls = match mode {
        None | Some("disable") => None,
        Some("require" | "verify-ca" | "verify-full") => Some(tls_connector(root)?),
        Some(m @ ("prefer" | "allow")) => {
            return Err(bad(format!(
                "sslmode={m} would fall back to plaintext without a word; use sslmode=require (TLS, the server's certificate and name verified) or sslmode=disable"
            )))
        }
        Some(m) => return Err(bad(format!("sslmode={m}: expected disable or require"))),
    };
    if tls.is_none() && root.is_some() {
        return Err(bad("sslrootcert needs sslmode=require".into()));
    }
    let rest = if kept.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    let mut config: postgres::Config = rest
        .parse()
        .map_err(|e: postgres::Error| bad(e.to_string()))?;
    config.ssl_mode(if tls.is_some() {
        SslMode::Require
    } else {
        SslMode::Disable
    });
    Ok((config, tls))
}

fn tls_connector(root: Option<&str>) -> Result<MakeRustlsConnect, DbError> {
    let mut roots = rustls::RootCertStore::empty();
    match root {
        Some(path) => {
            let certs = vigil_proto::tls::read_certs(std::path::Path::new(path))
                .map_err(|e| DbError::new(format!("sslrootcert: {e}")))?;
            for c in certs {
                roots
                    .add(c)
                    .map_err(|e| DbError::new(format!("sslrootcert {path}: {e}")))?;
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| DbError::new(format!("TLS to PostgreSQL: {e}")))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(MakeRustlsConnect::new(config))
}

/// A client and the statements prepared on it, keyed by their text as
/// the store writes it.
pub struct PgConn {
    client: Owned,
    statements: HashMap<String, Statement>,
}

/// Statements on a [`PgConn`]'s client, or on a transaction of it.
pub struct PgDb<'a, C: GenericClient> {
    pub client: &'a mut C,
    pub statements: &'a mut HashMap<String, Statement>,
}

impl<C: GenericClient> PgDb<'_, C> {
    fn statement(&mut self, sql: &str) -> Result<Statement, DbError> {
        if let Some(s) = self.statements.get(sql) {
            return Ok(s.clone());
        }
        let s = self
            .client
            .prepare(&numbered_params(sql))
            .map_err(|e| context(e, sql))?;
        self.statements.insert(sql.to_string(), s.clone());
        Ok(s)
    }
}

/// The error with the statement's first line, which says which one failed.
fn context(e: postgres::Error, sql: &str) -> DbError {
    let mut d = DbError::from(e);
    let first = sql.trim().lines().next().unwrap_or("");
    d.message = format!("{} (in `{first}`)", d.message);
    d
}

fn refs(params: &[Value]) -> Vec<&(dyn ToSql + Sync)> {
    params.iter().map(|p| p as &(dyn ToSql + Sync)).collect()
}

impl<C: GenericClient> Db for PgDb<'_, C> {
    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }

    fn exec(&mut self, sql: &str, params: &[Value]) -> Result<u64, DbError> {
        let st = self.statement(sql)?;
        self.client
            .execute(&st, &refs(params))
            .map_err(|e| context(e, sql))
    }

    fn rows(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Row>, DbError> {
        let st = self.statement(sql)?;
        let rows = self
            .client
            .query(&st, &refs(params))
            .map_err(|e| context(e, sql))?;
        rows.iter()
            .map(|r| {
                (0..r.len())
                    .map(|i| pg_value(r, i))
                    .collect::<Result<Vec<_>, _>>()
                    .map(Row)
                    .map_err(|e| context(e, sql))
            })
            .collect()
    }
}

/// At most [`POOL_MAX`] connections to one database, opened when needed
/// and kept; one that broke is dropped when handed back.
pub struct Pool {
    config: postgres::Config,
    /// TLS to the server (`sslmode=require`), or none.
    tls: Option<MakeRustlsConnect>,
    state: Mutex<PoolState>,
    returned: Condvar,
}

struct PoolState {
    idle: Vec<PgConn>,
    open: usize,
}

impl Pool {
    /// Checks the address and opens one connection, so that a wrong
    /// address or password fails at start.
    pub fn connect(url: &str) -> Result<Pool, DbError> {
        let (mut config, tls) = parse_address(url)?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(10));
        }
        config.application_name("vigil-collector");
        let pool = Pool {
            config,
            tls,
            state: Mutex::new(PoolState {
                idle: Vec::new(),
                open: 0,
            }),
            returned: Condvar::new(),
        };
        let first = pool.open()?;
        pool.state.lock().expect("fresh lock").idle.push(first);
        pool.state.lock().expect("fresh lock").open = 1;
        Ok(pool)
    }

    fn open(&self) -> Result<PgConn, DbError> {
        let client = off_runtime(|| match &self.tls {
            Some(tls) => self.config.connect(tls.clone()),
            None => self.config.connect(NoTls),
        })
        .map_err(|e| {
            DbError::new(format!(
                "cannot connect to PostgreSQL: {}",
                DbError::from(e)
            ))
        })?;
        Ok(PgConn {
            client: Owned(Some(client)),
            statements: HashMap::new(),
        })
    }

    fn checkout(&self) -> Result<PgConn, DbError> {
        let mut st = self
            .state
            .lock()
            .map_err(|_| DbError::new("connection pool lock poisoned"))?;
        loop {
            if let Some(c) = st.idle.pop() {
                return Ok(c);
            }
            if st.open < POOL_MAX {
                st.open += 1;
                drop(st);
                return self.open().inspect_err(|_| {
                    if let Ok(mut st) = self.state.lock() {
                        st.open -= 1;
                    }
                });
            }
            st = self
                .returned
                .wait(st)
                .map_err(|_| DbError::new("connection pool lock poisoned"))?;
        }
    }

    fn checkin(&self, c: PgConn) {
        if let Ok(mut st) = self.state.lock() {
            if c.client.0.as_ref().is_none_or(Client::is_closed) {
                st.open -= 1;
            } else {
                st.idle.push(c);
            }
        }
        self.returned.notify_one();
    }

    /// Runs `f` in a transaction and commits it; a deadlock or a
    /// serialization failure runs it again (a few times).
    pub fn write<T: Send, E: TxError + Send>(
        &self,
        mut f: impl FnMut(&mut dyn Db) -> Result<T, E> + Send,
    ) -> Result<T, E> {
        off_runtime(move || {
            let mut conn = self.checkout()?;
            let mut tries = 0;
            let out = loop {
                tries += 1;
                match Self::attempt(&mut conn, &mut f) {
                    Err(e) if e.is_conflict() && tries < 5 => continue,
                    r => break r,
                }
            };
            self.checkin(conn);
            out
        })
    }

    fn attempt<T, E: TxError>(
        conn: &mut PgConn,
        f: &mut impl FnMut(&mut dyn Db) -> Result<T, E>,
    ) -> Result<T, E> {
        let mut tx = conn.client.client().transaction().map_err(DbError::from)?;
        let mut db = PgDb {
            client: &mut tx,
            statements: &mut conn.statements,
        };
        let v = f(&mut db)?;
        tx.commit().map_err(DbError::from)?;
        Ok(v)
    }

    /// Runs `f` on a connection, each statement on its own (no
    /// transaction): reads.
    pub fn read<T: Send, E: From<DbError> + Send>(
        &self,
        f: impl FnOnce(&mut dyn Db) -> Result<T, E> + Send,
    ) -> Result<T, E> {
        off_runtime(move || {
            let mut conn = self.checkout()?;
            let PgConn { client, statements } = &mut conn;
            let out = f(&mut PgDb {
                client: client.client(),
                statements,
            });
            self.checkin(conn);
            out
        })
    }

    /// A connection of its own, outside the pool, for a session-level
    /// lock (the fleet-wide jobs' lease).
    pub fn dedicated(&self) -> Result<Owned, DbError> {
        Ok(self.open()?.client)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_are_numbered_outside_quotes() {
        assert_eq!(
            numbered_params("SELECT a FROM t WHERE b = ?1 AND c = '?2' AND d IN (?12, ?)"),
            "SELECT a FROM t WHERE b = $1 AND c = '?2' AND d IN ($12, ?)"
        );
    }
}
