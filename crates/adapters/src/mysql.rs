//! MySQL / MariaDB adapter for records, key-value state, events and secrets.
//!
//! Shared mode keeps every tenant in one database with `tenant_id` leading every
//! primary key and every statement filtered by it; dedicated mode is the same schema in a
//! database of the tenant's own. Keys are VARBINARY, so ordering is by bytes, exactly as
//! on SQLite and PostgreSQL. [`provision`] creates the database and runs the migrations.

use std::time::Duration;

use async_trait::async_trait;
use runplane_ports::{
    EventStore, Filter, KeyPage, KeyValueStore, NewEvent, Page, PortError, PortResult, Record, RecordStore,
    SealedSecretStore, SealedVersion, SecretInfo, StoredEvent, TenantId, validate_name,
};
use sqlx::mysql::{MySqlConnectOptions, MySqlPool, MySqlPoolOptions, MySqlRow};
use sqlx::{AssertSqlSafe, ConnectOptions, Connection, Row};

use crate::sql::{secret_version, 
    FilterKind, KEY_PAGE, MAX_NAME, check_append, check_filters, check_key, check_limit, db_code, filter_number,
    revision,
};
use crate::{decode_cursor, encode_cursor};


const BACKEND: &str = "mysql";
const DUPLICATE_KEY: &str = "23000";
/// Attempts after InnoDB chose a transaction as a deadlock victim.
const DEADLOCK_RETRIES: u32 = 5;

/// Whether InnoDB rolled the transaction back to break a deadlock (error 1213, SQLSTATE
/// 40001): the documented remedy is to run it again.
fn is_deadlock(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.code().as_deref() == Some("40001"))
}

fn db_err(e: sqlx::Error) -> PortError {
    crate::sql::db_err(BACKEND, e)
}

fn is_duplicate(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(d) => {
            d.code().as_deref() == Some(DUPLICATE_KEY) && d.message().to_ascii_lowercase().contains("duplicate")
        }
        _ => false,
    }
}

fn text(row: &MySqlRow, i: usize) -> PortResult<String> {
    let bytes: Vec<u8> = row.try_get(i).map_err(db_err)?;
    String::from_utf8(bytes).map_err(|_| PortError::unavailable(BACKEND, "a stored key is not UTF-8"))
}

/// Where a MySQL / MariaDB store lives.
#[derive(Clone)]
pub struct MySqlSettings {
    /// The server connection (its database is ignored; [`MySqlSettings::database`] is used).
    pub server: MySqlConnectOptions,
    pub database: String,
    /// Upper bound on waiting for a connection.
    pub timeout: Duration,
    pub max_connections: u32,
}

impl std::fmt::Debug for MySqlSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MySqlSettings").field("database", &self.database).finish_non_exhaustive()
    }
}

/// Creates the database if missing and runs the migrations. Safe to run again.
pub fn provision(settings: &MySqlSettings) -> futures::future::BoxFuture<'_, PortResult<()>> {
    // Boxed as Send here, where the lifetimes are concrete, so callers can spawn it.
    Box::pin(async move {
        if !crate::postgres::valid_identifier(&settings.database) {
            return Err(PortError::Invalid(format!(
                "database {:?} must be 1-63 characters of a-z, 0-9 and '_', not starting with a digit",
                settings.database
            )));
        }
        let server = settings.server.clone().disable_statement_logging();
        let mut conn = tokio::time::timeout(settings.timeout, server.connect())
            .await
            .map_err(|_| PortError::unavailable(BACKEND, "connecting to the server timed out"))?
            .map_err(db_err)?;
        sqlx::query(AssertSqlSafe(format!(
            "CREATE DATABASE IF NOT EXISTS `{}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin",
            settings.database
        )))
        .execute(&mut conn)
        .await
        .map_err(db_err)?;
        let pool = MySqlPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(settings.timeout)
            .connect_with(server.database(&settings.database))
            .await
            .map_err(db_err)?;
        // sqlx locks MySQL migrations with GET_LOCK(name, -1), which MariaDB answers at
        // once with 0, so nodes provisioning together would migrate at once: the owner's
        // connection takes the lock here, checked, while the pool migrates.
        let lock = format!("runplane_records_migrations.{}", settings.database);
        let locked: Option<i64> = sqlx::query_scalar("SELECT GET_LOCK(?, ?)")
            .bind(&lock)
            .bind(settings.timeout.as_secs().max(1) as i64 * 6)
            .fetch_one(&mut conn)
            .await
            .map_err(db_err)?;
        if locked != Some(1) {
            return Err(PortError::unavailable(BACKEND, "another node held the migration lock for too long; retry"));
        }
        let mut migrator = sqlx::migrate!("./migrations/mysql");
        migrator.set_locking(false);
        let ran = migrator.run(&pool).await;
        let _ = sqlx::query("SELECT RELEASE_LOCK(?)").bind(&lock).execute(&mut conn).await;
        let _ = conn.close().await;
        ran.map_err(|e| PortError::unavailable(BACKEND, format_args!("the migrations failed: {e}")))?;
        pool.close().await;
        Ok(())
    })
}

/// Records, key-value, events and secrets in one MySQL / MariaDB database.
#[derive(Clone)]
pub struct MySqlStore {
    pool: MySqlPool,
}

impl MySqlStore {
    /// A store whose pool connects on first use. Run [`provision`] first.
    pub fn connect_lazy(settings: &MySqlSettings) -> Self {
        let options = settings
            .server
            .clone()
            .database(&settings.database)
            .charset("utf8mb4")
            .log_slow_statements(tracing::log::LevelFilter::Warn, Duration::from_secs(1));
        let pool = MySqlPoolOptions::new()
            .max_connections(settings.max_connections)
            .min_connections(0)
            .acquire_timeout(settings.timeout)
            .idle_timeout(Some(Duration::from_secs(60)))
            .test_before_acquire(false)
            .connect_lazy_with(options);
        MySqlStore { pool }
    }

    pub fn pool(&self) -> &MySqlPool {
        &self.pool
    }

    /// Checks the database answers.
    pub fn health(&self) -> futures::future::BoxFuture<'_, PortResult<()>> {
        Box::pin(async move { sqlx::query("SELECT 1").execute(&self.pool).await.map(|_| ()).map_err(db_err) })
    }
}

#[async_trait]
impl RecordStore for MySqlStore {
    async fn put(
        &self,
        tenant: &TenantId,
        collection: &str,
        id: &str,
        body: &str,
        expected_revision: Option<u64>,
    ) -> PortResult<Record> {
        validate_name("collection", collection, MAX_NAME)?;
        check_key("record id", id)?;
        let t = tenant.as_str();
        for _attempt in 0..8 {
            let mut tx = self.pool.begin().await.map_err(db_err)?;
            let current: Option<i64> = sqlx::query_scalar(
                "SELECT revision FROM records WHERE tenant_id = ? AND collection = ? AND id = ? FOR UPDATE",
            )
            .bind(t)
            .bind(collection)
            .bind(id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_err)?;
            let next = match (current, expected_revision) {
                (Some(_), Some(0)) => return Err(PortError::Conflict(format!("record {collection}/{id} already exists"))),
                (Some(rev), Some(n)) if rev as u64 != n => {
                    return Err(PortError::Conflict(format!("record {collection}/{id} is not at revision {n}")));
                }
                (None, Some(n)) if n > 0 => {
                    return Err(PortError::Conflict(format!("record {collection}/{id} is not at revision {n}")));
                }
                (Some(rev), _) => rev + 1,
                (None, _) => 1,
            };
            let written = if current.is_some() {
                sqlx::query("UPDATE records SET revision = ?, body = ? WHERE tenant_id = ? AND collection = ? AND id = ?")
                    .bind(next)
                    .bind(body)
                    .bind(t)
                    .bind(collection)
                    .bind(id)
                    .execute(&mut *tx)
                    .await
            } else {
                sqlx::query("INSERT INTO records (tenant_id, collection, id, revision, body) VALUES (?, ?, ?, 1, ?)")
                    .bind(t)
                    .bind(collection)
                    .bind(id)
                    .bind(body)
                    .execute(&mut *tx)
                    .await
            };
            match written {
                Ok(_) => {
                    tx.commit().await.map_err(db_err)?;
                    return Ok(Record {
                        collection: collection.to_owned(),
                        id: id.to_owned(),
                        revision: next as u64,
                        body: body.to_owned(),
                    });
                }
                // Another writer created it between our read and our insert.
                Err(e) if is_duplicate(&e) => {
                    if expected_revision == Some(0) {
                        return Err(PortError::Conflict(format!("record {collection}/{id} already exists")));
                    }
                }
                // Two inserts into the same gap: InnoDB rolled this one back; read again.
                Err(e) if is_deadlock(&e) => tokio::time::sleep(Duration::from_millis(2)).await,
                Err(e) => return Err(db_err(e)),
            }
        }
        Err(PortError::Conflict(format!("record {collection}/{id} is contended; retry")))
    }

    async fn get(&self, tenant: &TenantId, collection: &str, id: &str) -> PortResult<Option<Record>> {
        validate_name("collection", collection, MAX_NAME)?;
        check_key("record id", id)?;
        let row = sqlx::query("SELECT revision, body FROM records WHERE tenant_id = ? AND collection = ? AND id = ?")
            .bind(tenant.as_str())
            .bind(collection)
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)?;
        row.map(|r| {
            Ok(Record {
                collection: collection.to_owned(),
                id: id.to_owned(),
                revision: r.try_get::<i64, _>(0).map_err(db_err)? as u64,
                body: r.try_get(1).map_err(db_err)?,
            })
        })
        .transpose()
    }

    async fn delete(
        &self,
        tenant: &TenantId,
        collection: &str,
        id: &str,
        expected_revision: Option<u64>,
    ) -> PortResult<bool> {
        validate_name("collection", collection, MAX_NAME)?;
        check_key("record id", id)?;
        let deleted = sqlx::query(
            "DELETE FROM records WHERE tenant_id = ? AND collection = ? AND id = ? AND (? IS NULL OR revision = ?)",
        )
        .bind(tenant.as_str())
        .bind(collection)
        .bind(id)
        .bind(expected_revision.map(revision).transpose()?)
        .bind(expected_revision.map(revision).transpose()?)
        .execute(&self.pool)
        .await
        .map_err(db_err)?
        .rows_affected();
        match expected_revision {
            Some(expected) if deleted == 0 => match RecordStore::get(self, tenant, collection, id).await? {
                Some(_) => Err(PortError::Conflict(format!("record {collection}/{id} is not at revision {expected}"))),
                None => Ok(false),
            },
            _ => Ok(deleted > 0),
        }
    }

    async fn query(
        &self,
        tenant: &TenantId,
        collection: &str,
        filters: &[Filter],
        limit: u32,
        cursor: Option<&str>,
    ) -> PortResult<Page> {
        validate_name("collection", collection, MAX_NAME)?;
        let limit = check_limit(limit)?;
        let after = cursor.map(decode_cursor).transpose()?;
        let kinds = check_filters(filters)?;
        let mut sql = String::from("SELECT id, revision, body FROM records WHERE tenant_id = ? AND collection = ?");
        for kind in &kinds {
            // Same type and equal value, as on every adapter. The path is bound, not spliced.
            sql.push_str(match kind {
                FilterKind::Null => " AND JSON_TYPE(JSON_EXTRACT(body, ?)) = 'NULL'",
                FilterKind::Bool(true) => " AND JSON_TYPE(JSON_EXTRACT(body, ?)) = 'BOOLEAN' AND JSON_UNQUOTE(JSON_EXTRACT(body, ?)) = 'true'",
                FilterKind::Bool(false) => " AND JSON_TYPE(JSON_EXTRACT(body, ?)) = 'BOOLEAN' AND JSON_UNQUOTE(JSON_EXTRACT(body, ?)) = 'false'",
                FilterKind::Number => {
                    " AND JSON_TYPE(JSON_EXTRACT(body, ?)) IN ('INTEGER', 'UNSIGNED INTEGER', 'DOUBLE', 'DECIMAL')
                      AND CAST(JSON_UNQUOTE(JSON_EXTRACT(body, ?)) AS DOUBLE) = ?"
                }
                FilterKind::String => {
                    " AND JSON_TYPE(JSON_EXTRACT(body, ?)) = 'STRING'
                      AND CAST(JSON_UNQUOTE(JSON_EXTRACT(body, ?)) AS BINARY) = CAST(? AS BINARY)"
                }
            });
        }
        if after.is_some() {
            sql.push_str(" AND id > ?");
        }
        sql.push_str(" ORDER BY id LIMIT ?");
        let mut q = sqlx::query(AssertSqlSafe(sql)).bind(tenant.as_str()).bind(collection);
        for (f, kind) in filters.iter().zip(&kinds) {
            let path = format!("$.\"{}\"", f.field);
            q = match kind {
                FilterKind::Null => q.bind(path),
                FilterKind::Bool(_) => q.bind(path.clone()).bind(path),
                FilterKind::Number => q.bind(path.clone()).bind(path).bind(filter_number(&f.value)),
                FilterKind::String => q.bind(path.clone()).bind(path).bind(f.value.as_str().unwrap_or_default().to_owned()),
            };
        }
        if let Some(a) = &after {
            q = q.bind(a.clone());
        }
        let rows = q.bind(limit + 1).fetch_all(&self.pool).await.map_err(db_err)?;
        let more = rows.len() as i64 > limit;
        let mut items = Vec::with_capacity(rows.len());
        for r in rows.iter().take(limit as usize) {
            items.push(Record {
                collection: collection.to_owned(),
                id: text(r, 0)?,
                revision: r.try_get::<i64, _>(1).map_err(db_err)? as u64,
                body: r.try_get(2).map_err(db_err)?,
            });
        }
        let next_cursor = if more { items.last().map(|r| encode_cursor(&r.id)) } else { None };
        Ok(Page { items, next_cursor })
    }
}

#[async_trait]
impl KeyValueStore for MySqlStore {
    async fn get(&self, tenant: &TenantId, bucket: &str, key: &str) -> PortResult<Option<Vec<u8>>> {
        validate_name("bucket", bucket, MAX_NAME)?;
        check_key("key", key)?;
        sqlx::query_scalar("SELECT value FROM kv WHERE tenant_id = ? AND bucket = ? AND `key` = ?")
            .bind(tenant.as_str())
            .bind(bucket)
            .bind(key)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)
    }

    async fn set(&self, tenant: &TenantId, bucket: &str, key: &str, value: &[u8]) -> PortResult<()> {
        validate_name("bucket", bucket, MAX_NAME)?;
        check_key("key", key)?;
        sqlx::query(
            "INSERT INTO kv (tenant_id, bucket, `key`, value) VALUES (?, ?, ?, ?)
             ON DUPLICATE KEY UPDATE value = VALUES(value)",
        )
        .bind(tenant.as_str())
        .bind(bucket)
        .bind(key)
        .bind(value)
        .execute(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(())
    }

    async fn delete(&self, tenant: &TenantId, bucket: &str, key: &str) -> PortResult<()> {
        validate_name("bucket", bucket, MAX_NAME)?;
        check_key("key", key)?;
        sqlx::query("DELETE FROM kv WHERE tenant_id = ? AND bucket = ? AND `key` = ?")
            .bind(tenant.as_str())
            .bind(bucket)
            .bind(key)
            .execute(&self.pool)
            .await
            .map_err(db_err)?;
        Ok(())
    }

    async fn exists(&self, tenant: &TenantId, bucket: &str, key: &str) -> PortResult<bool> {
        Ok(KeyValueStore::get(self, tenant, bucket, key).await?.is_some())
    }

    async fn list_keys(&self, tenant: &TenantId, bucket: &str, cursor: Option<&str>) -> PortResult<KeyPage> {
        validate_name("bucket", bucket, MAX_NAME)?;
        let after = cursor.map(decode_cursor).transpose()?.unwrap_or_default();
        let rows = sqlx::query("SELECT `key` FROM kv WHERE tenant_id = ? AND bucket = ? AND `key` > ? ORDER BY `key` LIMIT ?")
            .bind(tenant.as_str())
            .bind(bucket)
            .bind(after)
            .bind(KEY_PAGE + 1)
            .fetch_all(&self.pool)
            .await
            .map_err(db_err)?;
        let more = rows.len() as i64 > KEY_PAGE;
        let keys = rows.iter().take(KEY_PAGE as usize).map(|r| text(r, 0)).collect::<PortResult<Vec<_>>>()?;
        let cursor = if more { keys.last().map(|k| encode_cursor(k)) } else { None };
        Ok(KeyPage { keys, cursor })
    }

    async fn increment(&self, tenant: &TenantId, bucket: &str, key: &str, delta: i64) -> PortResult<i64> {
        validate_name("bucket", bucket, MAX_NAME)?;
        check_key("key", key)?;
        // Concurrent first increments of one key can deadlock in InnoDB (two inserts
        // into the same gap); InnoDB rolls one back and asks for a retry: do so.
        let mut attempt = 0;
        loop {
            match self.increment_once(tenant, bucket, key, delta).await {
                Err(e) if is_deadlock(&e) && attempt < DEADLOCK_RETRIES => {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(2 << attempt)).await;
                }
                Err(e) => return Err(db_err(e)),
                Ok(result) => return result,
            }
        }
    }

    async fn compare_and_swap(
        &self,
        tenant: &TenantId,
        bucket: &str,
        key: &str,
        expected: Option<&[u8]>,
        new: &[u8],
    ) -> PortResult<bool> {
        validate_name("bucket", bucket, MAX_NAME)?;
        check_key("key", key)?;
        match expected {
            None => {
                let r = sqlx::query("INSERT INTO kv (tenant_id, bucket, `key`, value) VALUES (?, ?, ?, ?)")
                    .bind(tenant.as_str())
                    .bind(bucket)
                    .bind(key)
                    .bind(new)
                    .execute(&self.pool)
                    .await;
                match r {
                    Ok(_) => Ok(true),
                    Err(e) if is_duplicate(&e) => Ok(false),
                    Err(e) => Err(db_err(e)),
                }
            }
            // The connection reports matched rows (CLIENT_FOUND_ROWS), so an equal new
            // value still counts as swapped.
            Some(old) => Ok(sqlx::query("UPDATE kv SET value = ? WHERE tenant_id = ? AND bucket = ? AND `key` = ? AND value = ?")
                .bind(new)
                .bind(tenant.as_str())
                .bind(bucket)
                .bind(key)
                .bind(old)
                .execute(&self.pool)
                .await
                .map_err(db_err)?
                .rows_affected()
                == 1),
        }
    }
}

#[async_trait]
impl EventStore for MySqlStore {
    async fn append(
        &self,
        tenant: &TenantId,
        stream: &str,
        events: &[NewEvent],
        expected_version: Option<u64>,
    ) -> PortResult<u64> {
        validate_name("stream", stream, MAX_NAME)?;
        check_append(events)?;
        // Appenders of one stream take turns under a named lock: with InnoDB's gap locks
        // alone, concurrent `MAX(version) … FOR UPDATE` readers deadlock one another,
        // and an append without an expected version must never fail for contention.
        let lock = format!("rp_ev_{}", &crate::topics::digest(&format!("{}/{stream}", tenant.as_str()))[..40]);
        let mut held = HeldStreamLock(Some(self.pool.acquire().await.map_err(db_err)?));
        let conn = held.conn();
        let locked: Option<i64> = sqlx::query_scalar("SELECT GET_LOCK(?, ?)")
            .bind(&lock)
            .bind(STREAM_LOCK_WAIT_SECS)
            .fetch_one(&mut **conn)
            .await
            .map_err(db_err)?;
        if locked != Some(1) {
            return Err(PortError::unavailable(
                "mysql",
                format!("stream {stream} stayed locked by other appenders for {STREAM_LOCK_WAIT_SECS} s"),
            ));
        }
        let appended = append_locked(conn, tenant, stream, events, expected_version).await;
        match sqlx::query("DO RELEASE_LOCK(?)").bind(&lock).execute(&mut **conn).await {
            // Released: the connection goes back to the pool.
            Ok(_) => drop(held.0.take()),
            Err(e) => tracing::warn!(error = %db_err(e), "could not release a stream lock; closing the connection releases it"),
        }
        appended
    }

    async fn read(&self, tenant: &TenantId, stream: &str, from: u64, limit: u32) -> PortResult<Vec<StoredEvent>> {
        validate_name("stream", stream, MAX_NAME)?;
        let limit = check_limit(limit)?;
        let rows = sqlx::query(
            "SELECT version, event_type, data FROM events WHERE tenant_id = ? AND stream = ? AND version >= ?
             ORDER BY version LIMIT ?",
        )
        .bind(tenant.as_str())
        .bind(stream)
        .bind(revision(from)?)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(db_err)?;
        rows.iter()
            .map(|r| {
                Ok(StoredEvent {
                    stream: stream.to_owned(),
                    version: r.try_get::<i64, _>(0).map_err(db_err)? as u64,
                    event_type: text(r, 1)?,
                    data: r.try_get(2).map_err(db_err)?,
                })
            })
            .collect()
    }
}

/// Longest an append waits for the other appenders of its stream.
const STREAM_LOCK_WAIT_SECS: i64 = 5;

/// A pooled connection that may hold a stream's named lock. Unless it is taken back
/// after the lock was released, dropping it (an error, or the caller gave up waiting)
/// closes the connection, which releases the lock: it never returns to the pool locked.
struct HeldStreamLock(Option<sqlx::pool::PoolConnection<sqlx::MySql>>);

impl HeldStreamLock {
    fn conn(&mut self) -> &mut sqlx::pool::PoolConnection<sqlx::MySql> {
        self.0.as_mut().expect("the connection is held until released")
    }
}

impl Drop for HeldStreamLock {
    fn drop(&mut self) {
        if let Some(conn) = self.0.take() {
            drop(conn.detach());
        }
    }
}

/// Appends `events` to `stream` while holding the stream's named lock.
async fn append_locked(
    conn: &mut sqlx::pool::PoolConnection<sqlx::MySql>,
    tenant: &TenantId,
    stream: &str,
    events: &[NewEvent],
    expected_version: Option<u64>,
) -> PortResult<u64> {
    use sqlx::Connection as _;
    for _attempt in 0..8 {
        let mut tx = conn.begin().await.map_err(db_err)?;
        let last: i64 = match sqlx::query_scalar(
            "SELECT CAST(COALESCE(MAX(version), 0) AS SIGNED) FROM events WHERE tenant_id = ? AND stream = ? FOR UPDATE",
        )
        .bind(tenant.as_str())
        .bind(stream)
        .fetch_one(&mut *tx)
        .await
        {
            Ok(last) => last,
            // Chosen as a deadlock victim while waiting for the stream's lock: again.
            Err(e) if is_deadlock(&e) => {
                tokio::time::sleep(Duration::from_millis(2)).await;
                continue;
            }
            Err(e) => return Err(db_err(e)),
        };
        if let Some(expected) = expected_version
            && expected != last as u64
        {
            return Err(PortError::Conflict(format!("stream {stream} is at version {last}, expected {expected}")));
        }
        let mut sql = String::from("INSERT INTO events (tenant_id, stream, version, event_type, data) VALUES ");
        sql.push_str(&vec!["(?, ?, ?, ?, ?)"; events.len()].join(", "));
        let mut q = sqlx::query(AssertSqlSafe(sql));
        for (i, e) in events.iter().enumerate() {
            q = q.bind(tenant.as_str()).bind(stream).bind(last + 1 + i as i64).bind(&e.event_type).bind(&e.data);
        }
        match q.execute(&mut *tx).await {
            Ok(_) => {
                tx.commit().await.map_err(db_err)?;
                return Ok(last as u64 + events.len() as u64);
            }
            Err(e) if is_duplicate(&e) || db_code(&e).as_deref() == Some("40001") => {
                if expected_version.is_some() {
                    return Err(PortError::Conflict(format!("stream {stream} was appended to concurrently")));
                }
            }
            Err(e) => return Err(db_err(e)),
        }
    }
    Err(PortError::Conflict(format!("stream {stream} is contended; retry")))
    }

/// Sealed secret versions.
#[async_trait]
impl SealedSecretStore for MySqlStore {
    async fn latest(&self, tenant: &TenantId, name: &str) -> PortResult<Option<SealedVersion>> {
        validate_name("secret", name, MAX_NAME)?;
        let row = sqlx::query(
            "SELECT CAST(version AS SIGNED), value FROM secrets WHERE tenant_id = ? AND name = ? ORDER BY version DESC LIMIT 1",
        )
        .bind(tenant.as_str())
        .bind(name)
        .fetch_optional(&self.pool)
        .await
        .map_err(db_err)?;
        row.map(|r| {
            Ok(SealedVersion { version: r.try_get::<i64, _>(0).map_err(db_err)? as u64, sealed: r.try_get(1).map_err(db_err)? })
        })
        .transpose()
    }

    async fn version(&self, tenant: &TenantId, name: &str, version: u64) -> PortResult<Option<SealedVersion>> {
        validate_name("secret", name, MAX_NAME)?;
        let sealed: Option<Vec<u8>> = sqlx::query_scalar("SELECT value FROM secrets WHERE tenant_id = ? AND name = ? AND version = ?")
            .bind(tenant.as_str())
            .bind(name)
            .bind(secret_version(version)?)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)?;
        Ok(sealed.map(|sealed| SealedVersion { version, sealed }))
    }

    async fn insert(&self, tenant: &TenantId, name: &str, version: u64, sealed: &[u8]) -> PortResult<()> {
        validate_name("secret", name, MAX_NAME)?;
        sqlx::query("INSERT INTO secrets (tenant_id, name, version, value) VALUES (?, ?, ?, ?)")
            .bind(tenant.as_str())
            .bind(name)
            .bind(secret_version(version)?)
            .bind(sealed)
            .execute(&self.pool)
            .await
            .map_err(|e| {
                if is_duplicate(&e) {
                    PortError::Conflict(format!("secret {name} version {version} was written concurrently; retry"))
                } else {
                    db_err(e)
                }
            })?;
        Ok(())
    }

    async fn replace(&self, tenant: &TenantId, name: &str, version: u64, expected: &[u8], sealed: &[u8]) -> PortResult<bool> {
        validate_name("secret", name, MAX_NAME)?;
        let done = sqlx::query("UPDATE secrets SET value = ? WHERE tenant_id = ? AND name = ? AND version = ? AND value = ?")
            .bind(sealed)
            .bind(tenant.as_str())
            .bind(name)
            .bind(secret_version(version)?)
            .bind(expected)
            .execute(&self.pool)
            .await
            .map_err(db_err)?;
        Ok(done.rows_affected() == 1)
    }

    async fn list(&self, tenant: &TenantId) -> PortResult<Vec<SecretInfo>> {
        let rows = sqlx::query(
            "SELECT name, CAST(MAX(version) AS SIGNED) FROM secrets WHERE tenant_id = ? GROUP BY name ORDER BY name",
        )
        .bind(tenant.as_str())
        .fetch_all(&self.pool)
        .await
        .map_err(db_err)?;
        rows.iter()
            .map(|r| Ok(SecretInfo { name: text(r, 0)?, version: r.try_get::<i64, _>(1).map_err(db_err)? as u64 }))
            .collect()
    }
}

impl MySqlStore {
    /// One attempt at [`KeyValueStore::increment`]: `Err` is a database error (maybe a
    /// deadlock to retry), `Ok(Err)` a refusal.
    async fn increment_once(&self, tenant: &TenantId, bucket: &str, key: &str, delta: i64) -> Result<PortResult<i64>, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("INSERT INTO kv (tenant_id, bucket, `key`, value) VALUES (?, ?, ?, '0') ON DUPLICATE KEY UPDATE value = value")
            .bind(tenant.as_str())
            .bind(bucket)
            .bind(key)
            .execute(&mut *tx)
            .await?;
        let current: Vec<u8> = sqlx::query_scalar("SELECT value FROM kv WHERE tenant_id = ? AND bucket = ? AND `key` = ? FOR UPDATE")
            .bind(tenant.as_str())
            .bind(bucket)
            .bind(key)
            .fetch_one(&mut *tx)
            .await?;
        let now = match crate::sql::parse_counter(bucket, key, Some(&current)).and_then(|c| {
            c.checked_add(delta).ok_or_else(|| PortError::Invalid(format!("incrementing {bucket}/{key} by {delta} overflows a 64-bit integer")))
        }) {
            Ok(n) => n,
            Err(e) => return Ok(Err(e)),
        };
        sqlx::query("UPDATE kv SET value = ? WHERE tenant_id = ? AND bucket = ? AND `key` = ?")
            .bind(now.to_string().into_bytes())
            .bind(tenant.as_str())
            .bind(bucket)
            .bind(key)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Ok(now))
    }
}
