//! What the SQL adapters (SQLite, PostgreSQL, MySQL/MariaDB) share: argument checks,
//! the record-filter semantics, and limits. Each dialect module keeps its own SQL.

use runplane_ports::{Filter, PortError, PortResult};

/// Longest collection, stream, bucket or secret name.
pub(crate) const MAX_NAME: usize = 128;
/// Longest record id or key.
pub(crate) const MAX_KEY: usize = 512;
/// Keys returned per `list_keys` page.
pub(crate) const KEY_PAGE: i64 = 1000;
/// Most events in one append.
pub(crate) const MAX_APPEND: usize = 1000;

pub(crate) fn check_key(what: &str, key: &str) -> PortResult<()> {
    if key.is_empty() || key.len() > MAX_KEY || key.chars().any(char::is_control) {
        return Err(PortError::Invalid(format!(
            "{what} {key:?} must be 1-{MAX_KEY} bytes with no control characters"
        )));
    }
    Ok(())
}

pub(crate) fn check_limit(limit: u32) -> PortResult<i64> {
    if limit == 0 || limit > 1000 {
        return Err(PortError::Invalid(format!("limit {limit} is out of range; use 1-1000")));
    }
    Ok(i64::from(limit))
}

pub(crate) fn revision(v: u64) -> PortResult<i64> {
    i64::try_from(v).map_err(|_| PortError::Invalid(format!("revision {v} is out of range")))
}

pub(crate) fn check_append(events: &[runplane_ports::NewEvent]) -> PortResult<()> {
    if events.is_empty() || events.len() > MAX_APPEND {
        return Err(PortError::Invalid(format!("append takes 1-{MAX_APPEND} events, got {}", events.len())));
    }
    for e in events {
        runplane_ports::validate_name("event type", &e.event_type, MAX_NAME)?;
    }
    Ok(())
}

/// The kind of JSON scalar a filter compares with. Every adapter matches a filter only
/// when the document's field has the same JSON type and an equal value (numbers compare
/// numerically, so `1` matches `1.0`); a missing field never matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FilterKind {
    Null,
    Bool(bool),
    Number,
    String,
}

/// Checks every filter and says what kind each is.
pub(crate) fn check_filters(filters: &[Filter]) -> PortResult<Vec<FilterKind>> {
    if filters.len() > 16 {
        return Err(PortError::Invalid(format!("a query takes at most 16 filters, got {}", filters.len())));
    }
    filters
        .iter()
        .map(|f| {
            let field_ok = !f.field.is_empty()
                && f.field.len() <= 64
                && f.field.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
            if !field_ok {
                return Err(PortError::Invalid(format!(
                    "filter field {:?} must be 1-64 characters of A-Z, a-z, 0-9, '_' and '-'",
                    f.field
                )));
            }
            match &f.value {
                serde_json::Value::Null => Ok(FilterKind::Null),
                serde_json::Value::Bool(b) => Ok(FilterKind::Bool(*b)),
                serde_json::Value::Number(_) => Ok(FilterKind::Number),
                serde_json::Value::String(_) => Ok(FilterKind::String),
                _ => Err(PortError::Invalid(format!(
                    "filter on {:?}: only strings, numbers, booleans and null can be compared",
                    f.field
                ))),
            }
        })
        .collect()
}

/// A filter's number as f64 (what SQLite and MySQL compare with).
pub(crate) fn filter_number(v: &serde_json::Value) -> f64 {
    v.as_f64().unwrap_or(f64::NAN)
}

/// Turns a driver error into a port error: storage full (see [`storage_full`]) or
/// unavailable, with a neutral reason. The detail logged with it is the kind of
/// failure and the database's own message, never the URL.
pub(crate) fn db_err(backend: &str, e: sqlx::Error) -> PortError {
    match e {
        sqlx::Error::Database(d) if storage_full(d.as_ref()) => {
            let code = d.code().map(|c| c.into_owned()).unwrap_or_default();
            PortError::storage_full(backend, format_args!("the database is out of space ({code}): {}", d.message()))
        }
        sqlx::Error::Io(io) if runplane_ports::is_storage_full(&io) => {
            PortError::storage_full(backend, format_args!("the database's storage is full ({io})"))
        }
        sqlx::Error::PoolTimedOut => {
            PortError::unavailable(backend, "no database connection became available in time; the database may be down or overloaded")
        }
        sqlx::Error::Io(io) => PortError::unavailable(backend, format_args!("the connection to the database failed ({})", io.kind())),
        sqlx::Error::Tls(_) => PortError::unavailable(backend, "the TLS handshake with the database failed"),
        sqlx::Error::PoolClosed | sqlx::Error::WorkerCrashed => PortError::unavailable(backend, "the connection pool is closed"),
        sqlx::Error::Database(d) => {
            let code = d.code().map(|c| c.into_owned()).unwrap_or_default();
            PortError::unavailable(backend, format_args!("the database refused the statement ({code}): {}", d.message()))
        }
        sqlx::Error::Protocol(_) => PortError::unavailable(backend, "the database connection broke (protocol error)"),
        sqlx::Error::Configuration(_) => PortError::unavailable(backend, "the database connection is misconfigured"),
        other => PortError::unavailable(backend, other),
    }
}

/// SQLite `SQLITE_FULL` (13) and MySQL/MariaDB `ER_DISK_FULL` (1021) and
/// `ER_RECORD_FILE_FULL` (1114, "the table is full") are storage-full errors.
const SQLITE_FULL: &str = "13";
const MYSQL_STORAGE_FULL: [u16; 2] = [1021, 1114];
/// PostgreSQL's SQLSTATE `disk_full`.
const PG_DISK_FULL: &str = "53100";

/// Whether the database says its storage is full (each dialect's own code for it).
pub(crate) fn storage_full(d: &(dyn sqlx::error::DatabaseError + 'static)) -> bool {
    if let Some(m) = d.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>() {
        return MYSQL_STORAGE_FULL.contains(&m.number());
    }
    if let Some(p) = d.try_downcast_ref::<sqlx::postgres::PgDatabaseError>() {
        return p.code() == PG_DISK_FULL;
    }
    d.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() && d.code().as_deref() == Some(SQLITE_FULL)
}

/// The database error code of `e`, if it is one (e.g. `23505` on PostgreSQL).
pub(crate) fn db_code(e: &sqlx::Error) -> Option<String> {
    match e {
        sqlx::Error::Database(d) => d.code().map(|c| c.into_owned()),
        _ => None,
    }
}

/// Reads a counter value: absent is 0, otherwise decimal ASCII.
pub(crate) fn parse_counter(bucket: &str, key: &str, value: Option<&[u8]>) -> PortResult<i64> {
    match value {
        None => Ok(0),
        Some(bytes) => std::str::from_utf8(bytes).ok().and_then(|s| s.parse().ok()).ok_or_else(|| {
            PortError::Invalid(format!("{bucket}/{key} holds a value that is not a decimal integer, so it cannot be incremented"))
        }),
    }
}

/// A secret version number as the databases store it (1..=i64::MAX).
pub(crate) fn secret_version(v: u64) -> PortResult<i64> {
    match i64::try_from(v) {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(PortError::Invalid(format!("secret version {v} is out of range (1-{})", i64::MAX))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlx::Connection;

    /// A real SQLite "database or disk is full": the database may not grow past two pages.
    #[tokio::test]
    async fn a_full_sqlite_database_is_storage_full_and_says_nothing_of_sqlite() {
        let mut conn = sqlx::SqliteConnection::connect("sqlite::memory:").await.expect("open SQLite");
        sqlx::query("CREATE TABLE t (b BLOB)").execute(&mut conn).await.expect("create");
        sqlx::query("PRAGMA max_page_count = 2").execute(&mut conn).await.expect("cap the size");
        let err = sqlx::query("INSERT INTO t VALUES (zeroblob(100000))").execute(&mut conn).await.expect_err("the database is full");
        assert!(matches!(&err, sqlx::Error::Database(d) if d.code().as_deref() == Some(SQLITE_FULL)), "{err:?}");
        let port = db_err("sqlite", err);
        assert_eq!(port, PortError::StorageFull(runplane_ports::STORAGE_FULL.into()));
    }

    #[tokio::test]
    async fn other_database_errors_are_unavailable_with_the_neutral_reason_only() {
        let mut conn = sqlx::SqliteConnection::connect("sqlite::memory:").await.expect("open SQLite");
        let err = sqlx::query("SELECT * FROM no_such_table").execute(&mut conn).await.expect_err("no table");
        let port = db_err("sqlite", err);
        assert_eq!(port, PortError::Unavailable(runplane_ports::UNAVAILABLE.into()));
        assert!(!port.to_string().contains("no_such_table"), "{port}");
    }

    /// PostgreSQL's own `disk_full` (SQLSTATE 53100), raised by the real server.
    #[tokio::test]
    async fn postgres_disk_full_is_storage_full() {
        let url = crate::testing::postgres_url();
        if !crate::testing::service_up("PostgreSQL", &url).await {
            return;
        }
        let mut conn = sqlx::PgConnection::connect(&url).await.expect("connect to PostgreSQL");
        let err = sqlx::query("DO $$ BEGIN RAISE EXCEPTION 'could not extend file: No space left on device' USING ERRCODE = 'disk_full'; END $$")
            .execute(&mut conn)
            .await
            .expect_err("raised");
        assert_eq!(db_err("postgres", err), PortError::StorageFull(runplane_ports::STORAGE_FULL.into()));
    }

    /// MariaDB/MySQL's own `ER_DISK_FULL` (1021), signalled by the real server.
    #[tokio::test]
    async fn mysql_disk_full_is_storage_full() {
        let url = crate::testing::mysql_url();
        if !crate::testing::service_up("MySQL", &url).await {
            return;
        }
        let mut conn = sqlx::MySqlConnection::connect(&url).await.expect("connect to MySQL");
        let err = sqlx::raw_sql("SIGNAL SQLSTATE 'HY000' SET MYSQL_ERRNO = 1021, MESSAGE_TEXT = 'Disk full (/var/lib/mysql/x)'")
            .execute(&mut conn)
            .await
            .expect_err("signalled");
        assert_eq!(db_err("mysql", err), PortError::StorageFull(runplane_ports::STORAGE_FULL.into()));
    }

    #[test]
    fn an_io_enospc_from_the_driver_is_storage_full() {
        let err = sqlx::Error::Io(std::io::Error::from_raw_os_error(28));
        assert!(matches!(db_err("mysql", err), PortError::StorageFull(_)));
        let err = sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        assert!(matches!(db_err("mysql", err), PortError::Unavailable(_)));
    }
}
