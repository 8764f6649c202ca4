//! SQLite adapter for records, key-value state, events and secrets (the embedded default).
//!
//! One [`SqliteStore`] is one database file. Shared mode gives all tenants one file;
//! dedicated mode gives each tenant its own. Either way `tenant_id` leads every key and
//! every statement filters on it, so a tenant can only ever address its own rows.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use runplane_ports::{
    EventStore, Filter, KeyPage, KeyValueStore, NewEvent, Page, PortError, PortResult, Record, RecordStore,
    SealedSecretStore, SealedVersion, SecretInfo, StoredEvent, TenantId, validate_name,
};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{AssertSqlSafe, Row};

use crate::sql::{secret_version, FilterKind, KEY_PAGE, MAX_NAME, check_append, check_filters, check_key, check_limit, filter_number, parse_counter, revision};
use crate::{decode_cursor, encode_cursor};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// Records, key-value, events and secrets in one SQLite database file.
#[derive(Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
}

fn db_err(e: sqlx::Error) -> PortError {
    match &e {
        sqlx::Error::Database(d) if d.message().contains("database is locked") => {
            PortError::unavailable("sqlite", "the database is busy; retry")
        }
        _ => crate::sql::db_err("sqlite", e),
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` and runs migrations.
    pub async fn open(path: &Path) -> Result<Self, sqlx::Error> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(sqlx::Error::Io)?;
        }
        let options = SqliteConnectOptions::from_str("sqlite:")?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(5))
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options)
            .await?;
        MIGRATOR.run(&pool).await?;
        Ok(SqliteStore { pool })
    }

    /// Checks the database answers.
    pub fn health(&self) -> futures::future::BoxFuture<'_, PortResult<()>> {
        Box::pin(async move { sqlx::query("SELECT 1").execute(&self.pool).await.map(|_| ()).map_err(db_err) })
    }

    /// The underlying pool.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }
}

#[async_trait]
impl RecordStore for SqliteStore {
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
        let row = match expected_revision {
            None => sqlx::query(
                "INSERT INTO records (tenant_id, collection, id, revision, body) VALUES (?1, ?2, ?3, 1, ?4)
                 ON CONFLICT (tenant_id, collection, id) DO UPDATE SET revision = revision + 1, body = excluded.body
                 RETURNING revision",
            )
            .bind(t)
            .bind(collection)
            .bind(id)
            .bind(body)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)?,
            Some(0) => sqlx::query(
                "INSERT INTO records (tenant_id, collection, id, revision, body) VALUES (?1, ?2, ?3, 1, ?4)
                 ON CONFLICT (tenant_id, collection, id) DO NOTHING RETURNING revision",
            )
            .bind(t)
            .bind(collection)
            .bind(id)
            .bind(body)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)?,
            Some(expected) => sqlx::query(
                "UPDATE records SET revision = revision + 1, body = ?4
                 WHERE tenant_id = ?1 AND collection = ?2 AND id = ?3 AND revision = ?5 RETURNING revision",
            )
            .bind(t)
            .bind(collection)
            .bind(id)
            .bind(body)
            .bind(revision(expected)?)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)?,
        };
        match row {
            Some(row) => Ok(Record {
                collection: collection.to_owned(),
                id: id.to_owned(),
                revision: row.get::<i64, _>(0) as u64,
                body: body.to_owned(),
            }),
            None => Err(match expected_revision {
                Some(0) => PortError::Conflict(format!("record {collection}/{id} already exists")),
                Some(n) => PortError::Conflict(format!("record {collection}/{id} is not at revision {n}")),
                None => PortError::unavailable("sqlite", "the upsert returned no row"),
            }),
        }
    }

    async fn get(&self, tenant: &TenantId, collection: &str, id: &str) -> PortResult<Option<Record>> {
        validate_name("collection", collection, MAX_NAME)?;
        check_key("record id", id)?;
        let row = sqlx::query("SELECT revision, body FROM records WHERE tenant_id = ?1 AND collection = ?2 AND id = ?3")
            .bind(tenant.as_str())
            .bind(collection)
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)?;
        Ok(row.map(|r| Record {
            collection: collection.to_owned(),
            id: id.to_owned(),
            revision: r.get::<i64, _>(0) as u64,
            body: r.get(1),
        }))
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
        let t = tenant.as_str();
        match expected_revision {
            None => {
                let r = sqlx::query("DELETE FROM records WHERE tenant_id = ?1 AND collection = ?2 AND id = ?3")
                    .bind(t)
                    .bind(collection)
                    .bind(id)
                    .execute(&self.pool)
                    .await
                    .map_err(db_err)?;
                Ok(r.rows_affected() > 0)
            }
            Some(expected) => {
                let r = sqlx::query(
                    "DELETE FROM records WHERE tenant_id = ?1 AND collection = ?2 AND id = ?3 AND revision = ?4",
                )
                .bind(t)
                .bind(collection)
                .bind(id)
                .bind(revision(expected)?)
                .execute(&self.pool)
                .await
                .map_err(db_err)?;
                if r.rows_affected() > 0 {
                    return Ok(true);
                }
                match RecordStore::get(self, tenant, collection, id).await? {
                    Some(_) => Err(PortError::Conflict(format!("record {collection}/{id} is not at revision {expected}"))),
                    None => Ok(false),
                }
            }
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
        let mut sql = String::from("SELECT id, revision, body FROM records WHERE tenant_id = ? AND collection = ?");
        let kinds = check_filters(filters)?;
        for (f, kind) in filters.iter().zip(&kinds) {
            // Same JSON type and equal value, as on every adapter; the field name is
            // restricted to [A-Za-z0-9_-] by check_filters, so it is safe in the path.
            let path = format!("'$.\"{}\"'", f.field);
            sql.push_str(&match kind {
                FilterKind::Null => format!(" AND json_type(body, {path}) = 'null'"),
                FilterKind::Bool(true) => format!(" AND json_type(body, {path}) = 'true'"),
                FilterKind::Bool(false) => format!(" AND json_type(body, {path}) = 'false'"),
                FilterKind::Number => format!(" AND json_type(body, {path}) IN ('integer', 'real') AND json_extract(body, {path}) = ?"),
                FilterKind::String => format!(" AND json_type(body, {path}) = 'text' AND json_extract(body, {path}) = ?"),
            });
        }
        if after.is_some() {
            sql.push_str(" AND id > ?");
        }
        sql.push_str(" ORDER BY id LIMIT ?");
        let mut q = sqlx::query(AssertSqlSafe(sql)).bind(tenant.as_str()).bind(collection);
        for (f, kind) in filters.iter().zip(&kinds) {
            q = match kind {
                FilterKind::Number => match f.value.as_i64() {
                    Some(i) => q.bind(i),
                    None => q.bind(filter_number(&f.value)),
                },
                FilterKind::String => q.bind(f.value.as_str().unwrap_or_default().to_owned()),
                FilterKind::Null | FilterKind::Bool(_) => q,
            };
        }
        if let Some(a) = &after {
            q = q.bind(a.clone());
        }
        let rows = q.bind(limit + 1).fetch_all(&self.pool).await.map_err(db_err)?;
        let more = rows.len() as i64 > limit;
        let items: Vec<Record> = rows
            .into_iter()
            .take(limit as usize)
            .map(|r| Record {
                collection: collection.to_owned(),
                id: r.get(0),
                revision: r.get::<i64, _>(1) as u64,
                body: r.get(2),
            })
            .collect();
        let next_cursor = if more { items.last().map(|r| encode_cursor(&r.id)) } else { None };
        Ok(Page { items, next_cursor })
    }
}

#[async_trait]
impl KeyValueStore for SqliteStore {
    async fn get(&self, tenant: &TenantId, bucket: &str, key: &str) -> PortResult<Option<Vec<u8>>> {
        validate_name("bucket", bucket, MAX_NAME)?;
        check_key("key", key)?;
        let row = sqlx::query("SELECT value FROM kv WHERE tenant_id = ?1 AND bucket = ?2 AND key = ?3")
            .bind(tenant.as_str())
            .bind(bucket)
            .bind(key)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)?;
        Ok(row.map(|r| r.get(0)))
    }

    async fn set(&self, tenant: &TenantId, bucket: &str, key: &str, value: &[u8]) -> PortResult<()> {
        validate_name("bucket", bucket, MAX_NAME)?;
        check_key("key", key)?;
        sqlx::query(
            "INSERT INTO kv (tenant_id, bucket, key, value) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (tenant_id, bucket, key) DO UPDATE SET value = excluded.value",
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
        sqlx::query("DELETE FROM kv WHERE tenant_id = ?1 AND bucket = ?2 AND key = ?3")
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
        let rows = sqlx::query(
            "SELECT key FROM kv WHERE tenant_id = ?1 AND bucket = ?2 AND key > ?3 ORDER BY key LIMIT ?4",
        )
        .bind(tenant.as_str())
        .bind(bucket)
        .bind(after)
        .bind(KEY_PAGE + 1)
        .fetch_all(&self.pool)
        .await
        .map_err(db_err)?;
        let more = rows.len() as i64 > KEY_PAGE;
        let keys: Vec<String> = rows.into_iter().take(KEY_PAGE as usize).map(|r| r.get(0)).collect();
        let cursor = if more { keys.last().map(|k| encode_cursor(k)) } else { None };
        Ok(KeyPage { keys, cursor })
    }

    async fn increment(&self, tenant: &TenantId, bucket: &str, key: &str, delta: i64) -> PortResult<i64> {
        validate_name("bucket", bucket, MAX_NAME)?;
        check_key("key", key)?;
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await.map_err(db_err)?;
        let current: Option<Vec<u8>> =
            sqlx::query_scalar("SELECT value FROM kv WHERE tenant_id = ?1 AND bucket = ?2 AND key = ?3")
                .bind(tenant.as_str())
                .bind(bucket)
                .bind(key)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db_err)?;
        let now = parse_counter(bucket, key, current.as_deref())?
            .checked_add(delta)
            .ok_or_else(|| PortError::Invalid(format!("incrementing {bucket}/{key} by {delta} overflows a 64-bit integer")))?;
        sqlx::query(
            "INSERT INTO kv (tenant_id, bucket, key, value) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (tenant_id, bucket, key) DO UPDATE SET value = excluded.value",
        )
        .bind(tenant.as_str())
        .bind(bucket)
        .bind(key)
        .bind(now.to_string().into_bytes())
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        Ok(now)
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
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await.map_err(db_err)?;
        let current: Option<Vec<u8>> =
            sqlx::query_scalar("SELECT value FROM kv WHERE tenant_id = ?1 AND bucket = ?2 AND key = ?3")
                .bind(tenant.as_str())
                .bind(bucket)
                .bind(key)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db_err)?;
        if current.as_deref() != expected {
            return Ok(false);
        }
        sqlx::query(
            "INSERT INTO kv (tenant_id, bucket, key, value) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (tenant_id, bucket, key) DO UPDATE SET value = excluded.value",
        )
        .bind(tenant.as_str())
        .bind(bucket)
        .bind(key)
        .bind(new)
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        Ok(true)
    }
}

#[async_trait]
impl EventStore for SqliteStore {
    async fn append(
        &self,
        tenant: &TenantId,
        stream: &str,
        events: &[NewEvent],
        expected_version: Option<u64>,
    ) -> PortResult<u64> {
        validate_name("stream", stream, MAX_NAME)?;
        check_append(events)?;
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await.map_err(db_err)?;
        let last: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(version), 0) FROM events WHERE tenant_id = ?1 AND stream = ?2")
            .bind(tenant.as_str())
            .bind(stream)
            .fetch_one(&mut *tx)
            .await
            .map_err(db_err)?;
        if let Some(expected) = expected_version
            && expected != last as u64
        {
            return Err(PortError::Conflict(format!(
                "stream {stream} is at version {last}, expected {expected}"
            )));
        }
        for (i, e) in events.iter().enumerate() {
            sqlx::query("INSERT INTO events (tenant_id, stream, version, event_type, data) VALUES (?1, ?2, ?3, ?4, ?5)")
                .bind(tenant.as_str())
                .bind(stream)
                .bind(last + 1 + i as i64)
                .bind(&e.event_type)
                .bind(&e.data)
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
        }
        tx.commit().await.map_err(db_err)?;
        Ok(last as u64 + events.len() as u64)
    }

    async fn read(&self, tenant: &TenantId, stream: &str, from: u64, limit: u32) -> PortResult<Vec<StoredEvent>> {
        validate_name("stream", stream, MAX_NAME)?;
        let limit = check_limit(limit)?;
        let rows = sqlx::query(
            "SELECT version, event_type, data FROM events WHERE tenant_id = ?1 AND stream = ?2 AND version >= ?3
             ORDER BY version LIMIT ?4",
        )
        .bind(tenant.as_str())
        .bind(stream)
        .bind(revision(from)?)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(rows
            .into_iter()
            .map(|r| StoredEvent {
                stream: stream.to_owned(),
                version: r.get::<i64, _>(0) as u64,
                event_type: r.get(1),
                data: r.get(2),
            })
            .collect())
    }
}

/// Sealed secret versions of the embedded node, in the same database; the
/// envelope layer (`runplane-secrets`) seals and opens them.
#[async_trait]
impl SealedSecretStore for SqliteStore {
    async fn latest(&self, tenant: &TenantId, name: &str) -> PortResult<Option<SealedVersion>> {
        validate_name("secret", name, MAX_NAME)?;
        let row = sqlx::query("SELECT version, value FROM secrets WHERE tenant_id = ?1 AND name = ?2 ORDER BY version DESC LIMIT 1")
            .bind(tenant.as_str())
            .bind(name)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)?;
        Ok(row.map(|r| SealedVersion { version: r.get::<i64, _>(0) as u64, sealed: r.get(1) }))
    }

    async fn version(&self, tenant: &TenantId, name: &str, version: u64) -> PortResult<Option<SealedVersion>> {
        validate_name("secret", name, MAX_NAME)?;
        let sealed: Option<Vec<u8>> = sqlx::query_scalar("SELECT value FROM secrets WHERE tenant_id = ?1 AND name = ?2 AND version = ?3")
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
        sqlx::query("INSERT INTO secrets (tenant_id, name, version, value) VALUES (?1, ?2, ?3, ?4)")
            .bind(tenant.as_str())
            .bind(name)
            .bind(secret_version(version)?)
            .bind(sealed)
            .execute(&self.pool)
            .await
            .map_err(|e| match &e {
                sqlx::Error::Database(d) if d.is_unique_violation() => {
                    PortError::Conflict(format!("secret {name} version {version} was written concurrently; retry"))
                }
                _ => db_err(e),
            })?;
        Ok(())
    }

    async fn replace(&self, tenant: &TenantId, name: &str, version: u64, expected: &[u8], sealed: &[u8]) -> PortResult<bool> {
        validate_name("secret", name, MAX_NAME)?;
        let done = sqlx::query("UPDATE secrets SET value = ?5 WHERE tenant_id = ?1 AND name = ?2 AND version = ?3 AND value = ?4")
            .bind(tenant.as_str())
            .bind(name)
            .bind(secret_version(version)?)
            .bind(expected)
            .bind(sealed)
            .execute(&self.pool)
            .await
            .map_err(db_err)?;
        Ok(done.rows_affected() == 1)
    }

    async fn list(&self, tenant: &TenantId) -> PortResult<Vec<SecretInfo>> {
        let rows = sqlx::query("SELECT name, MAX(version) FROM secrets WHERE tenant_id = ?1 GROUP BY name ORDER BY name")
            .bind(tenant.as_str())
            .fetch_all(&self.pool)
            .await
            .map_err(db_err)?;
        Ok(rows.into_iter().map(|r| SecretInfo { name: r.get(0), version: r.get::<i64, _>(1) as u64 }).collect())
    }
}
