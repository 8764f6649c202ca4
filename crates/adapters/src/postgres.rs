//! PostgreSQL adapter for records, key-value state, events and secrets.
//!
//! Shared mode keeps every tenant in one database: `tenant_id` leads every key, and
//! row-level security is ENABLEd and FORCEd on every table (`migrations/postgres`). The
//! store connects as a *runtime role* that owns no table and has no BYPASSRLS; each
//! operation runs in a transaction that first sets `runplane.tenant` with
//! `set_config(..., true)`, which ends with the transaction, so a pooled connection never
//! carries one tenant's setting into another's work and an unset tenant sees no row.
//! Dedicated mode is the same schema in a database of the tenant's own.
//!
//! [`provision`] (run with the owner's connection) creates the database and the runtime
//! role, runs the migrations and grants the runtime role what it needs; it is idempotent.

use std::time::Duration;

use async_trait::async_trait;
use runplane_ports::{
    EventStore, Filter, KeyPage, KeyValueStore, NewEvent, Page, PortError, PortResult, Record, RecordStore,
    SealedSecretStore, SealedVersion, SecretInfo, StoredEvent, TenantId, validate_name,
};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{AssertSqlSafe, ConnectOptions, Connection, Postgres, Row, Transaction};

use crate::sql::{secret_version, 
    KEY_PAGE, MAX_NAME, check_append, check_filters, check_key, check_limit, db_code, revision,
};
use crate::{decode_cursor, encode_cursor};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

const BACKEND: &str = "postgres";
const UNIQUE_VIOLATION: &str = "23505";
const DUPLICATE_OBJECT: &str = "42710";
const DUPLICATE_DATABASE: &str = "42P04";

fn db_err(e: sqlx::Error) -> PortError {
    match db_code(&e).as_deref() {
        // Invalid JSON text, or a \u0000 escape that PostgreSQL cannot store.
        Some("22P02") | Some("22P05") | Some("22021") => {
            PortError::Invalid("the document cannot be stored: the store refuses it as JSON text (a \\u0000 escape?)".into())
        }
        _ => crate::sql::db_err(BACKEND, e),
    }
}

/// Where a PostgreSQL store lives and how the node reaches it.
#[derive(Clone)]
pub struct PgSettings {
    /// The owner's connection (any database on the server): used only to provision.
    pub admin: PgConnectOptions,
    /// The database holding the tables (created by [`provision`]).
    pub database: String,
    /// The role traffic connects as: owns nothing, no BYPASSRLS (created by [`provision`]).
    pub runtime_role: String,
    pub runtime_password: Option<String>,
    /// Upper bound on waiting for a connection and on one statement.
    pub timeout: Duration,
    pub max_connections: u32,
}

impl std::fmt::Debug for PgSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the connection options: they hold the host, user and password.
        f.debug_struct("PgSettings").field("database", &self.database).field("runtime_role", &self.runtime_role).finish_non_exhaustive()
    }
}

/// A name usable as a PostgreSQL identifier without quoting surprises.
pub fn valid_identifier(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && !name.as_bytes()[0].is_ascii_digit()
}

impl PgSettings {
    fn runtime_options(&self) -> PgConnectOptions {
        let mut o = self
            .admin
            .clone()
            .database(&self.database)
            .username(&self.runtime_role)
            .options([("statement_timeout", format!("{}", self.timeout.as_millis()))])
            .application_name("runplane");
        if let Some(p) = &self.runtime_password {
            o = o.password(p);
        }
        o.log_slow_statements(tracing::log::LevelFilter::Warn, Duration::from_secs(1))
    }
}

/// Creates the database and the runtime role if missing, runs the migrations as the
/// owner and grants the runtime role row access. Safe to run again at any point.
pub fn provision(settings: &PgSettings) -> futures::future::BoxFuture<'_, PortResult<()>> {
    // Boxed as Send here, where the lifetimes are concrete, so callers can spawn it.
    Box::pin(async move {
        if !valid_identifier(&settings.database) || !valid_identifier(&settings.runtime_role) {
            return Err(PortError::Invalid(format!(
                "database {:?} and runtime role {:?} must be 1-63 characters of a-z, 0-9 and '_', not starting with a digit",
                settings.database, settings.runtime_role
            )));
        }
        // Statements here can carry a password: never log them.
        let admin = settings.admin.clone().disable_statement_logging();
        let mut conn = tokio::time::timeout(settings.timeout, admin.connect())
            .await
            .map_err(|_| PortError::unavailable(BACKEND, "connecting as the owner timed out"))?
            .map_err(db_err)?;
        let exists: Option<i32> = sqlx::query_scalar("SELECT 1 FROM pg_database WHERE datname = $1")
            .bind(&settings.database)
            .fetch_optional(&mut conn)
            .await
            .map_err(db_err)?;
        if exists.is_none() {
            let r = sqlx::query(AssertSqlSafe(format!("CREATE DATABASE \"{}\"", settings.database))).execute(&mut conn).await;
            // Another node provisioning at the same moment may win the race; PostgreSQL
            // then reports the catalogue's unique index rather than the duplicate.
            if let Err(e) = r
                && !matches!(db_code(&e).as_deref(), Some(DUPLICATE_DATABASE | UNIQUE_VIOLATION))
            {
                return Err(db_err(e));
            }
        }
        let role: Option<(bool, bool)> = sqlx::query_as("SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = $1")
            .bind(&settings.runtime_role)
            .fetch_optional(&mut conn)
            .await
            .map_err(db_err)?;
        let password = match &settings.runtime_password {
            Some(p) => format!(" PASSWORD '{}'", p.replace('\'', "''")),
            None => String::new(),
        };
        match role {
            None => {
                let r = sqlx::query(AssertSqlSafe(format!(
                    "CREATE ROLE \"{}\" LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE{password}",
                    settings.runtime_role
                )))
                .execute(&mut conn)
                .await;
                if let Err(e) = r
                    && !matches!(db_code(&e).as_deref(), Some(DUPLICATE_OBJECT | UNIQUE_VIOLATION))
                {
                    return Err(db_err(e));
                }
            }
            Some((true, _)) | Some((_, true)) => {
                return Err(PortError::Invalid(format!(
                    "runtime role {:?} is a superuser or has BYPASSRLS, so row-level security would not hold; choose another role",
                    settings.runtime_role
                )));
            }
            Some(_) if !password.is_empty() => {
                sqlx::query(AssertSqlSafe(format!("ALTER ROLE \"{}\"{password}", settings.runtime_role)))
                    .execute(&mut conn)
                    .await
                    .map_err(db_err)?;
            }
            Some(_) => {}
        }
        let _ = conn.close().await;

        // A one-connection pool: the migrator takes a pool.
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(settings.timeout)
            .connect_with(admin.clone().database(&settings.database))
            .await
            .map_err(db_err)?;
        MIGRATOR
            .run(&pool)
            .await
            .map_err(|e| PortError::unavailable(BACKEND, format_args!("the migrations failed: {e}")))?;
        let role = &settings.runtime_role;
        for grant in [
            format!("GRANT CONNECT ON DATABASE \"{}\" TO \"{role}\"", settings.database),
            format!("GRANT USAGE ON SCHEMA public TO \"{role}\""),
            format!("GRANT SELECT, INSERT, UPDATE, DELETE ON records, kv, events, secrets TO \"{role}\""),
            format!("GRANT EXECUTE ON FUNCTION runplane_get_record(TEXT, TEXT, TEXT) TO \"{role}\""),
            format!("GRANT EXECUTE ON FUNCTION runplane_put_record(TEXT, TEXT, TEXT, TEXT) TO \"{role}\""),
        ] {
            sqlx::query(AssertSqlSafe(grant)).execute(&pool).await.map_err(db_err)?;
        }
        pool.close().await;
        Ok(())
    })
}

/// Records, key-value, events and secrets in one PostgreSQL database, reached as the
/// runtime role under row-level security.
#[derive(Clone)]
pub struct PgStore {
    pool: PgPool,
}

impl PgStore {
    /// A store whose pool connects on first use (so a node starts while the database is
    /// down, and reconnects by itself when it returns). Run [`provision`] first.
    pub fn connect_lazy(settings: &PgSettings) -> Self {
        let pool = PgPoolOptions::new()
            .max_connections(settings.max_connections)
            .min_connections(0)
            .acquire_timeout(settings.timeout)
            .idle_timeout(Some(Duration::from_secs(60)))
            .test_before_acquire(false)
            .connect_lazy_with(settings.runtime_options());
        PgStore { pool }
    }

    /// The pool (for tests and health checks).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Checks the database answers and that the runtime role is fit for row-level
    /// security: not a superuser, no BYPASSRLS, owner of none of the tables.
    pub fn health(&self) -> futures::future::BoxFuture<'_, PortResult<()>> {
        Box::pin(self.check_role())
    }

    async fn check_role(&self) -> PortResult<()> {
        let (sup, bypass, owned): (bool, bool, i64) = sqlx::query_as(
            "SELECT r.rolsuper, r.rolbypassrls,
                    (SELECT count(*) FROM pg_tables t WHERE t.schemaname = 'public' AND t.tableowner = current_user
                       AND t.tablename IN ('records', 'kv', 'events', 'secrets'))
               FROM pg_roles r WHERE r.rolname = current_user",
        )
        .fetch_one(&self.pool)
        .await
        .map_err(db_err)?;
        if sup || bypass || owned > 0 {
            return Err(PortError::Invalid(
                "the runtime role is a superuser, has BYPASSRLS or owns the tables, so row-level security would not hold".into(),
            ));
        }
        Ok(())
    }

    /// A transaction in which `tenant` is the only tenant whose rows are visible.
    /// The tenant id is restricted to `[a-z0-9-]` by [`TenantId`], so it is a safe literal;
    /// sending it with `BEGIN` saves a round trip.
    async fn begin(&self, tenant: &TenantId) -> PortResult<Transaction<'static, Postgres>> {
        debug_assert!(tenant.as_str().bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'));
        self.pool
            .begin_with(AssertSqlSafe(format!(
                "BEGIN; SELECT set_config('runplane.tenant', '{}', true)",
                tenant.as_str()
            )))
            .await
            .map_err(db_err)
    }
}

#[async_trait]
impl RecordStore for PgStore {
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
        if expected_revision.is_none() {
            // One round trip, like reads (migrations/postgres/0003).
            let revision: i64 = sqlx::query_scalar("SELECT runplane_put_record($1, $2, $3, $4)")
                .bind(t)
                .bind(collection)
                .bind(id)
                .bind(body)
                .fetch_one(&self.pool)
                .await
                .map_err(db_err)?;
            return Ok(Record { collection: collection.to_owned(), id: id.to_owned(), revision: revision as u64, body: body.to_owned() });
        }
        let mut tx = self.begin(tenant).await?;
        let row = match expected_revision {
            None => None,
            Some(0) => sqlx::query(
                "INSERT INTO records (tenant_id, collection, id, revision, body) VALUES ($1, $2, $3, 1, $4)
                 ON CONFLICT (tenant_id, collection, id) DO NOTHING RETURNING revision",
            )
            .bind(t)
            .bind(collection)
            .bind(id)
            .bind(body)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_err)?,
            Some(expected) => sqlx::query(
                "UPDATE records SET revision = revision + 1, body = $4
                 WHERE tenant_id = $1 AND collection = $2 AND id = $3 AND revision = $5 RETURNING revision",
            )
            .bind(t)
            .bind(collection)
            .bind(id)
            .bind(body)
            .bind(revision(expected)?)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_err)?,
        };
        tx.commit().await.map_err(db_err)?;
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
                None => PortError::unavailable(BACKEND, "the upsert returned no row"),
            }),
        }
    }

    async fn get(&self, tenant: &TenantId, collection: &str, id: &str) -> PortResult<Option<Record>> {
        validate_name("collection", collection, MAX_NAME)?;
        check_key("record id", id)?;
        // One round trip: the function sets the tenant for this statement's own
        // transaction, then reads under row-level security (migrations/postgres/0002).
        let row = sqlx::query("SELECT revision, body FROM runplane_get_record($1, $2, $3)")
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
        let mut tx = self.begin(tenant).await?;
        let deleted = sqlx::query(
            "DELETE FROM records WHERE tenant_id = $1 AND collection = $2 AND id = $3 AND ($4::bigint IS NULL OR revision = $4)",
        )
        .bind(tenant.as_str())
        .bind(collection)
        .bind(id)
        .bind(expected_revision.map(revision).transpose()?)
        .execute(&mut *tx)
        .await
        .map_err(db_err)?
        .rows_affected();
        let exists = if deleted == 0 && expected_revision.is_some() {
            sqlx::query_scalar::<_, i32>("SELECT 1 FROM records WHERE tenant_id = $1 AND collection = $2 AND id = $3")
                .bind(tenant.as_str())
                .bind(collection)
                .bind(id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db_err)?
                .is_some()
        } else {
            false
        };
        tx.commit().await.map_err(db_err)?;
        match (deleted, expected_revision) {
            (0, Some(expected)) if exists => {
                Err(PortError::Conflict(format!("record {collection}/{id} is not at revision {expected}")))
            }
            (n, _) => Ok(n > 0),
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
        let mut sql = String::from("SELECT id, revision, body FROM records WHERE tenant_id = $1 AND collection = $2");
        let mut n = 2;
        for _ in &kinds {
            // jsonb equality is type-strict and compares numbers numerically.
            sql.push_str(&format!(" AND doc -> ${}::text = ${}::jsonb", n + 1, n + 2));
            n += 2;
        }
        if after.is_some() {
            n += 1;
            sql.push_str(&format!(" AND id > ${n}"));
        }
        sql.push_str(&format!(" ORDER BY id LIMIT ${}", n + 1));
        let mut q = sqlx::query(AssertSqlSafe(sql)).bind(tenant.as_str()).bind(collection);
        for f in filters {
            q = q.bind(f.field.clone()).bind(f.value.to_string());
        }
        if let Some(a) = &after {
            q = q.bind(a.clone());
        }
        let mut tx = self.begin(tenant).await?;
        let rows = q.bind(limit + 1).fetch_all(&mut *tx).await.map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
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
impl KeyValueStore for PgStore {
    async fn get(&self, tenant: &TenantId, bucket: &str, key: &str) -> PortResult<Option<Vec<u8>>> {
        validate_name("bucket", bucket, MAX_NAME)?;
        check_key("key", key)?;
        let mut tx = self.begin(tenant).await?;
        let v = sqlx::query_scalar("SELECT value FROM kv WHERE tenant_id = $1 AND bucket = $2 AND key = $3")
            .bind(tenant.as_str())
            .bind(bucket)
            .bind(key)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        Ok(v)
    }

    async fn set(&self, tenant: &TenantId, bucket: &str, key: &str, value: &[u8]) -> PortResult<()> {
        validate_name("bucket", bucket, MAX_NAME)?;
        check_key("key", key)?;
        let mut tx = self.begin(tenant).await?;
        sqlx::query(
            "INSERT INTO kv (tenant_id, bucket, key, value) VALUES ($1, $2, $3, $4)
             ON CONFLICT (tenant_id, bucket, key) DO UPDATE SET value = EXCLUDED.value",
        )
        .bind(tenant.as_str())
        .bind(bucket)
        .bind(key)
        .bind(value)
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        tx.commit().await.map_err(db_err)
    }

    async fn delete(&self, tenant: &TenantId, bucket: &str, key: &str) -> PortResult<()> {
        validate_name("bucket", bucket, MAX_NAME)?;
        check_key("key", key)?;
        let mut tx = self.begin(tenant).await?;
        sqlx::query("DELETE FROM kv WHERE tenant_id = $1 AND bucket = $2 AND key = $3")
            .bind(tenant.as_str())
            .bind(bucket)
            .bind(key)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        tx.commit().await.map_err(db_err)
    }

    async fn exists(&self, tenant: &TenantId, bucket: &str, key: &str) -> PortResult<bool> {
        Ok(KeyValueStore::get(self, tenant, bucket, key).await?.is_some())
    }

    async fn list_keys(&self, tenant: &TenantId, bucket: &str, cursor: Option<&str>) -> PortResult<KeyPage> {
        validate_name("bucket", bucket, MAX_NAME)?;
        let after = cursor.map(decode_cursor).transpose()?.unwrap_or_default();
        let mut tx = self.begin(tenant).await?;
        let keys: Vec<String> = sqlx::query_scalar(
            "SELECT key FROM kv WHERE tenant_id = $1 AND bucket = $2 AND key > $3 ORDER BY key LIMIT $4",
        )
        .bind(tenant.as_str())
        .bind(bucket)
        .bind(after)
        .bind(KEY_PAGE + 1)
        .fetch_all(&mut *tx)
        .await
        .map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        let more = keys.len() as i64 > KEY_PAGE;
        let keys: Vec<String> = keys.into_iter().take(KEY_PAGE as usize).collect();
        let cursor = if more { keys.last().map(|k| encode_cursor(k)) } else { None };
        Ok(KeyPage { keys, cursor })
    }

    async fn increment(&self, tenant: &TenantId, bucket: &str, key: &str, delta: i64) -> PortResult<i64> {
        validate_name("bucket", bucket, MAX_NAME)?;
        check_key("key", key)?;
        let mut tx = self.begin(tenant).await?;
        // Make the row exist, then lock it: concurrent increments serialise on the lock.
        sqlx::query("INSERT INTO kv (tenant_id, bucket, key, value) VALUES ($1, $2, $3, '\\x30') ON CONFLICT DO NOTHING")
            .bind(tenant.as_str())
            .bind(bucket)
            .bind(key)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        let current: Vec<u8> =
            sqlx::query_scalar("SELECT value FROM kv WHERE tenant_id = $1 AND bucket = $2 AND key = $3 FOR UPDATE")
                .bind(tenant.as_str())
                .bind(bucket)
                .bind(key)
                .fetch_one(&mut *tx)
                .await
                .map_err(db_err)?;
        let now = crate::sql::parse_counter(bucket, key, Some(&current))?
            .checked_add(delta)
            .ok_or_else(|| PortError::Invalid(format!("incrementing {bucket}/{key} by {delta} overflows a 64-bit integer")))?;
        sqlx::query("UPDATE kv SET value = $4 WHERE tenant_id = $1 AND bucket = $2 AND key = $3")
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
        let mut tx = self.begin(tenant).await?;
        // One statement each way, so the check and the write are atomic.
        let swapped = match expected {
            None => sqlx::query(
                "INSERT INTO kv (tenant_id, bucket, key, value) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
            )
            .bind(tenant.as_str())
            .bind(bucket)
            .bind(key)
            .bind(new)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?,
            Some(old) => sqlx::query("UPDATE kv SET value = $4 WHERE tenant_id = $1 AND bucket = $2 AND key = $3 AND value = $5")
                .bind(tenant.as_str())
                .bind(bucket)
                .bind(key)
                .bind(new)
                .bind(old)
                .execute(&mut *tx)
                .await
                .map_err(db_err)?,
        }
        .rows_affected()
            == 1;
        tx.commit().await.map_err(db_err)?;
        Ok(swapped)
    }
}

#[async_trait]
impl EventStore for PgStore {
    async fn append(
        &self,
        tenant: &TenantId,
        stream: &str,
        events: &[NewEvent],
        expected_version: Option<u64>,
    ) -> PortResult<u64> {
        validate_name("stream", stream, MAX_NAME)?;
        check_append(events)?;
        let types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
        let data: Vec<&str> = events.iter().map(|e| e.data.as_str()).collect();
        // Appenders of one stream take turns under a transaction-scoped advisory lock
        // (released at commit or rollback), so an append without an expected version
        // never fails for contention. The primary key stays the guard of last resort.
        for _attempt in 0..8 {
            let mut tx = self.begin(tenant).await?;
            sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
                .bind(format!("runplane.events/{}/{stream}", tenant.as_str()))
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
            let last: i64 =
                sqlx::query_scalar("SELECT COALESCE(MAX(version), 0) FROM events WHERE tenant_id = $1 AND stream = $2")
                    .bind(tenant.as_str())
                    .bind(stream)
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(db_err)?;
            if let Some(expected) = expected_version
                && expected != last as u64
            {
                return Err(PortError::Conflict(format!("stream {stream} is at version {last}, expected {expected}")));
            }
            let inserted = sqlx::query(
                "INSERT INTO events (tenant_id, stream, version, event_type, data)
                 SELECT $1, $2, $3 + n, t, d FROM UNNEST($4::text[], $5::text[]) WITH ORDINALITY AS x(t, d, n)",
            )
            .bind(tenant.as_str())
            .bind(stream)
            .bind(last)
            .bind(&types)
            .bind(&data)
            .execute(&mut *tx)
            .await;
            match inserted {
                Ok(_) => {
                    tx.commit().await.map_err(db_err)?;
                    return Ok(last as u64 + events.len() as u64);
                }
                Err(e) if db_code(&e).as_deref() == Some(UNIQUE_VIOLATION) => {
                    if expected_version.is_some() {
                        return Err(PortError::Conflict(format!("stream {stream} was appended to concurrently")));
                    }
                }
                Err(e) => return Err(db_err(e)),
            }
        }
        Err(PortError::Conflict(format!("stream {stream} is contended; retry")))
    }

    async fn read(&self, tenant: &TenantId, stream: &str, from: u64, limit: u32) -> PortResult<Vec<StoredEvent>> {
        validate_name("stream", stream, MAX_NAME)?;
        let limit = check_limit(limit)?;
        let mut tx = self.begin(tenant).await?;
        let rows = sqlx::query(
            "SELECT version, event_type, data FROM events WHERE tenant_id = $1 AND stream = $2 AND version >= $3
             ORDER BY version LIMIT $4",
        )
        .bind(tenant.as_str())
        .bind(stream)
        .bind(revision(from)?)
        .bind(limit)
        .fetch_all(&mut *tx)
        .await
        .map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
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

/// Sealed secret versions (under the tenant's row-level security).
#[async_trait]
impl SealedSecretStore for PgStore {
    async fn latest(&self, tenant: &TenantId, name: &str) -> PortResult<Option<SealedVersion>> {
        validate_name("secret", name, MAX_NAME)?;
        let mut tx = self.begin(tenant).await?;
        let row = sqlx::query("SELECT version, value FROM secrets WHERE tenant_id = $1 AND name = $2 ORDER BY version DESC LIMIT 1")
            .bind(tenant.as_str())
            .bind(name)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        Ok(row.map(|r| SealedVersion { version: r.get::<i64, _>(0) as u64, sealed: r.get(1) }))
    }

    async fn version(&self, tenant: &TenantId, name: &str, version: u64) -> PortResult<Option<SealedVersion>> {
        validate_name("secret", name, MAX_NAME)?;
        let mut tx = self.begin(tenant).await?;
        let sealed: Option<Vec<u8>> = sqlx::query_scalar("SELECT value FROM secrets WHERE tenant_id = $1 AND name = $2 AND version = $3")
            .bind(tenant.as_str())
            .bind(name)
            .bind(secret_version(version)?)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        Ok(sealed.map(|sealed| SealedVersion { version, sealed }))
    }

    async fn insert(&self, tenant: &TenantId, name: &str, version: u64, sealed: &[u8]) -> PortResult<()> {
        validate_name("secret", name, MAX_NAME)?;
        let mut tx = self.begin(tenant).await?;
        sqlx::query("INSERT INTO secrets (tenant_id, name, version, value) VALUES ($1, $2, $3, $4)")
            .bind(tenant.as_str())
            .bind(name)
            .bind(secret_version(version)?)
            .bind(sealed)
            .execute(&mut *tx)
            .await
            .map_err(|e| match db_code(&e).as_deref() {
                Some(UNIQUE_VIOLATION) => PortError::Conflict(format!("secret {name} version {version} was written concurrently; retry")),
                _ => db_err(e),
            })?;
        tx.commit().await.map_err(db_err)?;
        Ok(())
    }

    async fn replace(&self, tenant: &TenantId, name: &str, version: u64, expected: &[u8], sealed: &[u8]) -> PortResult<bool> {
        validate_name("secret", name, MAX_NAME)?;
        let mut tx = self.begin(tenant).await?;
        let done = sqlx::query("UPDATE secrets SET value = $5 WHERE tenant_id = $1 AND name = $2 AND version = $3 AND value = $4")
            .bind(tenant.as_str())
            .bind(name)
            .bind(secret_version(version)?)
            .bind(expected)
            .bind(sealed)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        Ok(done.rows_affected() == 1)
    }

    async fn list(&self, tenant: &TenantId) -> PortResult<Vec<SecretInfo>> {
        let mut tx = self.begin(tenant).await?;
        let rows = sqlx::query("SELECT name, MAX(version) FROM secrets WHERE tenant_id = $1 GROUP BY name ORDER BY name")
            .bind(tenant.as_str())
            .fetch_all(&mut *tx)
            .await
            .map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        Ok(rows.into_iter().map(|r| SecretInfo { name: r.get(0), version: r.get::<i64, _>(1) as u64 }).collect())
    }
}
