//! The one query layer under the store: SQL written once, with `?N`
//! parameters, run on SQLite (rusqlite) or PostgreSQL (rust-postgres).
//!
//! The store's statements are plain SQL both engines read the same way
//! (`ON CONFLICT ... DO NOTHING`, `CASE` rather than two-argument
//! `max`, aliased subqueries). What differs is said by [`Dialect`]: the
//! schema and its migrations, the row locks only PostgreSQL takes, and
//! SQLite's `+column` planner hint. A parameter tested for NULL before
//! anything gives it a type is written `CAST(?N AS type) IS NULL`:
//! PostgreSQL types every parameter when it prepares the statement. Values cross as [`Value`]; a backend
//! converts them to the column's type, so an `i64` binds to PostgreSQL's
//! `integer` or `bigint` alike.
use rusqlite::types::{ToSqlOutput, ValueRef};

use crate::{groups::GroupError, store::StoreError};

/// Which engine a statement runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    /// `column` kept off an index in SQLite's planner (`+column`); the
    /// same column in PostgreSQL, whose planner needs no hint.
    pub fn no_index(self, column: &str) -> String {
        match self {
            Dialect::Sqlite => format!("+{column}"),
            Dialect::Postgres => column.to_string(),
        }
    }

    /// Locks the rows a `SELECT` reads until the transaction ends, where
    /// several writers can race for them (PostgreSQL). SQLite has one
    /// writer at a time: nothing to add.
    pub fn for_update(self) -> &'static str {
        match self {
            Dialect::Sqlite => "",
            Dialect::Postgres => " FOR UPDATE",
        }
    }

    /// Like [`Dialect::for_update`], but rows another transaction holds
    /// are passed over rather than waited for: a queue several collectors
    /// claim from.
    pub fn skip_locked(self) -> &'static str {
        match self {
            Dialect::Sqlite => "",
            Dialect::Postgres => " FOR UPDATE SKIP LOCKED",
        }
    }
}

/// An error from the database, with the statement's first words for
/// context.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct DbError {
    pub message: String,
    /// PostgreSQL's SQLSTATE, when it gave one: a deadlock or a
    /// serialization failure is retried.
    pub code: Option<String>,
}

impl DbError {
    pub fn new(message: impl Into<String>) -> DbError {
        DbError {
            message: message.into(),
            code: None,
        }
    }

    /// Whether running the transaction again may succeed: PostgreSQL
    /// chose it as a deadlock's victim or could not serialize it.
    pub fn is_retryable(&self) -> bool {
        matches!(self.code.as_deref(), Some("40P01" | "40001"))
    }
}

impl From<rusqlite::Error> for DbError {
    fn from(e: rusqlite::Error) -> DbError {
        DbError::new(e.to_string())
    }
}

impl From<DbError> for StoreError {
    fn from(e: DbError) -> Self {
        if e.is_retryable() {
            StoreError::Conflict(e.message)
        } else {
            StoreError::Backend(e.message)
        }
    }
}

impl From<DbError> for GroupError {
    fn from(e: DbError) -> Self {
        GroupError::Store(e.into())
    }
}

/// An error a transaction's work may end in: the store's, or one that
/// wraps it. A conflict means the transaction may be run again.
pub trait TxError: From<DbError> {
    fn is_conflict(&self) -> bool;
}

impl TxError for DbError {
    fn is_conflict(&self) -> bool {
        self.is_retryable()
    }
}

impl TxError for StoreError {
    fn is_conflict(&self) -> bool {
        StoreError::is_conflict(self)
    }
}

impl TxError for GroupError {
    fn is_conflict(&self) -> bool {
        matches!(self, GroupError::Store(e) if e.is_conflict())
    }
}

/// A parameter or a column's value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Int(i64),
    Bool(bool),
    Text(String),
    Blob(Vec<u8>),
}

macro_rules! value_from_int {
    ($($t:ty),*) => {$(
        impl From<$t> for Value {
            fn from(v: $t) -> Value {
                Value::Int(v as i64)
            }
        }
    )*};
}
value_from_int!(i64, i32, u32, u64, usize);

impl From<bool> for Value {
    fn from(v: bool) -> Value {
        Value::Bool(v)
    }
}
impl From<&str> for Value {
    fn from(v: &str) -> Value {
        Value::Text(v.to_string())
    }
}
impl From<String> for Value {
    fn from(v: String) -> Value {
        Value::Text(v)
    }
}
impl From<&String> for Value {
    fn from(v: &String) -> Value {
        Value::Text(v.clone())
    }
}
impl From<Vec<u8>> for Value {
    fn from(v: Vec<u8>) -> Value {
        Value::Blob(v)
    }
}
impl From<&[u8]> for Value {
    fn from(v: &[u8]) -> Value {
        Value::Blob(v.to_vec())
    }
}
impl From<&Vec<u8>> for Value {
    fn from(v: &Vec<u8>) -> Value {
        Value::Blob(v.clone())
    }
}
impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Value {
        v.map_or(Value::Null, Into::into)
    }
}
impl From<&Option<String>> for Value {
    fn from(v: &Option<String>) -> Value {
        v.as_deref().into()
    }
}

/// Parameters for a statement: `vals![a, b, c]`, each anything that
/// converts into a [`Value`].
#[macro_export]
macro_rules! vals {
    ($($v:expr),* $(,)?) => {
        &[$($crate::sql::db::Value::from($v)),*][..]
    };
}
pub use vals;

/// What a column's value converts to.
pub trait FromValue: Sized {
    fn from_value(v: &Value) -> Option<Self>;
}

impl FromValue for i64 {
    fn from_value(v: &Value) -> Option<i64> {
        match v {
            Value::Int(i) => Some(*i),
            Value::Bool(b) => Some(*b as i64),
            _ => None,
        }
    }
}
impl FromValue for i32 {
    fn from_value(v: &Value) -> Option<i32> {
        i64::from_value(v).and_then(|i| i32::try_from(i).ok())
    }
}
impl FromValue for u32 {
    fn from_value(v: &Value) -> Option<u32> {
        i64::from_value(v).and_then(|i| u32::try_from(i).ok())
    }
}
impl FromValue for u64 {
    fn from_value(v: &Value) -> Option<u64> {
        i64::from_value(v).and_then(|i| u64::try_from(i).ok())
    }
}
impl FromValue for bool {
    fn from_value(v: &Value) -> Option<bool> {
        match v {
            Value::Bool(b) => Some(*b),
            Value::Int(i) => Some(*i != 0),
            _ => None,
        }
    }
}
impl FromValue for String {
    fn from_value(v: &Value) -> Option<String> {
        match v {
            Value::Text(s) => Some(s.clone()),
            _ => None,
        }
    }
}
impl FromValue for Vec<u8> {
    fn from_value(v: &Value) -> Option<Vec<u8>> {
        match v {
            Value::Blob(b) => Some(b.clone()),
            Value::Text(s) => Some(s.as_bytes().to_vec()),
            _ => None,
        }
    }
}
impl<T: FromValue> FromValue for Option<T> {
    fn from_value(v: &Value) -> Option<Option<T>> {
        match v {
            Value::Null => Some(None),
            v => T::from_value(v).map(Some),
        }
    }
}

/// One result row.
#[derive(Debug, Clone, PartialEq)]
pub struct Row(pub Vec<Value>);

impl Row {
    /// Column `i` as a `T`; an error names the column and what it held.
    pub fn get<T: FromValue>(&self, i: usize) -> Result<T, DbError> {
        let v = self.0.get(i).unwrap_or(&Value::Null);
        T::from_value(v).ok_or_else(|| {
            DbError::new(format!(
                "column {i} holds {v:?}, not a {}",
                std::any::type_name::<T>()
            ))
        })
    }
}

/// A connection, or a transaction on one: what the store's statements run
/// on.
pub trait Db {
    fn dialect(&self) -> Dialect;
    /// Runs a statement; returns how many rows it changed.
    fn exec(&mut self, sql: &str, params: &[Value]) -> Result<u64, DbError>;
    /// Runs a query; returns every row.
    fn rows(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Row>, DbError>;
}

impl dyn Db + '_ {
    /// The first row, if any.
    pub fn row(&mut self, sql: &str, params: &[Value]) -> Result<Option<Row>, DbError> {
        Ok(self.rows(sql, params)?.into_iter().next())
    }

    /// Every row, each through `f`.
    pub fn map<T>(
        &mut self,
        sql: &str,
        params: &[Value],
        f: impl Fn(&Row) -> Result<T, DbError>,
    ) -> Result<Vec<T>, DbError> {
        self.rows(sql, params)?.iter().map(f).collect()
    }

    /// The first column of the first row, if there is a row.
    pub fn value<T: FromValue>(
        &mut self,
        sql: &str,
        params: &[Value],
    ) -> Result<Option<T>, DbError> {
        self.row(sql, params)?.map(|r| r.get(0)).transpose()
    }
}

/// SQLite: a connection or a transaction (which derefs to one), with
/// rusqlite's statement cache.
pub struct SqliteDb<'a>(pub &'a rusqlite::Connection);

impl rusqlite::ToSql for Value {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match self {
            Value::Null => ToSqlOutput::Borrowed(ValueRef::Null),
            Value::Int(i) => ToSqlOutput::Borrowed(ValueRef::Integer(*i)),
            Value::Bool(b) => ToSqlOutput::Borrowed(ValueRef::Integer(*b as i64)),
            Value::Text(s) => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
            Value::Blob(b) => ToSqlOutput::Borrowed(ValueRef::Blob(b)),
        })
    }
}

fn sqlite_value(v: ValueRef<'_>) -> Value {
    match v {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(i) => Value::Int(i),
        // The store writes no floating-point columns.
        ValueRef::Real(f) => Value::Int(f as i64),
        ValueRef::Text(t) => Value::Text(String::from_utf8_lossy(t).into_owned()),
        ValueRef::Blob(b) => Value::Blob(b.to_vec()),
    }
}

impl Db for SqliteDb<'_> {
    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }

    fn exec(&mut self, sql: &str, params: &[Value]) -> Result<u64, DbError> {
        let mut st = self.0.prepare_cached(sql)?;
        Ok(st.execute(rusqlite::params_from_iter(params))? as u64)
    }

    fn rows(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Row>, DbError> {
        let mut st = self.0.prepare_cached(sql)?;
        let n = st.column_count();
        let mut rows = st.query(rusqlite::params_from_iter(params))?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            let mut row = Vec::with_capacity(n);
            for i in 0..n {
                row.push(sqlite_value(r.get_ref(i)?));
            }
            out.push(Row(row));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_convert_and_bad_columns_say_what_they_held() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        let mut db = SqliteDb(&conn);
        let db: &mut dyn Db = &mut db;
        db.exec("CREATE TABLE t (a INTEGER, b TEXT, c BLOB)", &[])
            .unwrap();
        let n = db
            .exec(
                "INSERT INTO t VALUES (?1, ?2, ?3)",
                vals![7u32, "x", vec![1u8, 2]],
            )
            .unwrap();
        assert_eq!(n, 1);
        db.exec(
            "INSERT INTO t VALUES (?1, ?2, ?3)",
            vals![true, None::<&str>, None::<Vec<u8>>],
        )
        .unwrap();
        let rows = db
            .rows("SELECT a, b, c FROM t ORDER BY a DESC", &[])
            .unwrap();
        assert_eq!(rows[0].get::<u32>(0).unwrap(), 7);
        assert_eq!(rows[0].get::<String>(1).unwrap(), "x");
        assert_eq!(rows[0].get::<Vec<u8>>(2).unwrap(), vec![1, 2]);
        assert!(rows[1].get::<bool>(0).unwrap());
        assert_eq!(rows[1].get::<Option<String>>(1).unwrap(), None);
        let e = rows[0].get::<i64>(1).unwrap_err();
        assert!(e.message.contains("column 1"), "{e}");
        assert_eq!(
            db.value::<i64>("SELECT count(*) FROM t", &[]).unwrap(),
            Some(2)
        );
    }
}
