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

/// Turns a driver error into a port error without leaking connection details: only the
/// kind of failure and the database's own message (never the URL) are kept.
pub(crate) fn db_err(backend: &str, e: sqlx::Error) -> PortError {
    match e {
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
