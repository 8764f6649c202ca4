//! The control store: every piece of control-plane state, in one of three homes — the
//! embedded SQLite file (`control.db` under the data dir, the single-node default), or
//! PostgreSQL (schema `runplane_control`) or MySQL/MariaDB (database
//! `<database>_control`) shared by every node of an instance.
//!
//! One code path serves all three through sqlx's `Any` driver: statements are written
//! once with `$1…` placeholders and [`translate`]d for MySQL; the few statements whose
//! syntax differs (upserts) are written twice, side by side. Every mutation of cached
//! state runs in a transaction that first bumps the revision row — which serialises
//! mutations, so revisions commit in order — and records a [`Change`] for followers
//! (on PostgreSQL it also sends a `NOTIFY` on [`CHANNEL`], delivered at commit).
//! Component bytes are content-addressed: files under `components/` in the embedded
//! home; in a shared home a table every node reads, with the files as a local cache.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use sqlx::any::{AnyConnectOptions, AnyPoolOptions, AnyRow};
use sqlx::AnyPool;
use sqlx::{Any, AssertSqlSafe, ConnectOptions, Connection, Executor, Row, Transaction};

use crate::error::{ControlError, Result};
use crate::feed::{Change, Family};
use crate::lease::{Held, Outcome};
use crate::types::{CapabilityVersion, ClusterNode, ConfigVersionRow, Deployment, Mode, StoredRollout, Tenant};

mod jobs;
pub use jobs::{AttemptEnd, EndedBy, JobMove, Running, StoredAttempt, StoredJob};

/// The PostgreSQL notification channel a mutation notifies (payload: its revision).
pub const CHANNEL: &str = "runplane_control";
/// The PostgreSQL schema of the control store.
pub const SCHEMA: &str = "runplane_control";

/// Where the control store lives (`[control] store`).
#[derive(Clone)]
pub enum Home {
    /// `control.db` and `components/` under the data dir.
    Embedded,
    /// The schema `runplane_control` of `database` on the server this URL reaches.
    Postgres { url: String, database: String },
    /// The database `<database>_control` on the server this URL reaches.
    MySql { url: String, database: String },
}

impl Home {
    /// Whether other nodes may share this home.
    pub fn is_shared(&self) -> bool {
        !matches!(self, Home::Embedded)
    }
}

impl std::fmt::Debug for Home {
    // URLs carry credentials: never print them.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Home::Embedded => write!(f, "Home::Embedded"),
            Home::Postgres { database, .. } => write!(f, "Home::Postgres({database}.{SCHEMA})"),
            Home::MySql { database, .. } => write!(f, "Home::MySql({database}_control)"),
        }
    }
}

/// Which SQL the store speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dialect {
    Sqlite,
    Postgres,
    MySql,
}

/// Rewrites a statement written for SQLite and PostgreSQL (`$1…` placeholders, each used
/// once and in order; `NOW_MS` for the store's clock in milliseconds since the epoch;
/// `SHARE_LOCK` and `ROW_LOCK` for a shared and an exclusive row lock, which SQLite's
/// one writer makes unnecessary) into `dialect`.
pub fn translate(dialect: Dialect, sql: &str) -> String {
    let now = match dialect {
        Dialect::Sqlite => "CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)",
        Dialect::Postgres => "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)",
        Dialect::MySql => "CAST(UNIX_TIMESTAMP(NOW(3)) * 1000 AS SIGNED)",
    };
    let lock = match dialect {
        Dialect::Sqlite => "",
        Dialect::Postgres => " FOR SHARE",
        Dialect::MySql => " LOCK IN SHARE MODE",
    };
    let row_lock = if dialect == Dialect::Sqlite { "" } else { " FOR UPDATE" };
    let sql = sql.replace("NOW_MS", now).replace(" SHARE_LOCK", lock).replace(" ROW_LOCK", row_lock);
    if dialect != Dialect::MySql {
        return sql;
    }
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    let mut next = 1u32;
    while let Some(c) = chars.next() {
        if c == '$' && chars.peek().is_some_and(char::is_ascii_digit) {
            let mut n = 0u32;
            while let Some(d) = chars.peek().and_then(|d| d.to_digit(10)) {
                n = n * 10 + d;
                chars.next();
            }
            debug_assert_eq!(n, next, "MySQL binds by position: placeholders must appear once each, in order: {sql}");
            next += 1;
            out.push('?');
        } else {
            out.push(c);
        }
    }
    out
}

/// The control store. Cheap to clone.
#[derive(Clone)]
pub struct ControlStore {
    pool: AnyPool,
    dialect: Dialect,
    shared: bool,
    components: PathBuf,
    /// The PostgreSQL URL, for the notification listener.
    listen_url: Option<String>,
}

/// One acquisition of a lease, from the log of epochs.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LeaseEpoch {
    pub epoch: u64,
    pub holder: String,
    /// When it was acquired (the store's clock, ms since the epoch).
    pub acquired_ms: i64,
    /// When the lease it took over had expired (0 for a first acquisition): never
    /// after `acquired_ms`.
    pub previous_expired_ms: i64,
}

/// Where an idempotency key stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// This request runs; its answer is recorded for retries.
    Claimed,
    /// The same key is being answered elsewhere right now.
    InProgress,
    /// The key was used for a different request.
    OtherRequest,
    /// Answered before: repeat this.
    Done { status: u16, response: String },
}

/// What the notification listener heard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hint {
    /// Another node committed this revision.
    Changed(u64),
    /// The listener's connection was lost (it reconnects at the next call): anything
    /// notified meanwhile was missed, so the follower resyncs in full.
    Lost,
}

/// A PostgreSQL `LISTEN` on [`CHANNEL`] (the other homes have none; followers poll).
pub struct Hints {
    listener: sqlx::postgres::PgListener,
}

impl Hints {
    /// Waits for the next hint.
    pub async fn next(&mut self) -> Result<Hint> {
        match self.listener.try_recv().await? {
            Some(n) => Ok(Hint::Changed(n.payload().parse().unwrap_or(0))),
            None => Ok(Hint::Lost),
        }
    }
}

fn corrupt(what: impl std::fmt::Display) -> ControlError {
    ControlError::Corrupt(what.to_string())
}

fn unavailable(what: impl std::fmt::Display) -> ControlError {
    ControlError::Unavailable(what.to_string())
}

fn valid_identifier(s: &str) -> bool {
    !s.is_empty() && s.len() <= 56 && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_') && !s.as_bytes()[0].is_ascii_digit()
}

impl ControlStore {
    /// Opens (creating and migrating as needed) the store in `home`; `data_dir` holds
    /// the embedded file and the component files (the store or, shared, a cache).
    /// Several nodes may open one shared home at once: migrations run under the
    /// database's advisory lock, schema creation included.
    pub async fn open(home: &Home, data_dir: &Path, timeout: Duration) -> Result<ControlStore> {
        sqlx::any::install_default_drivers();
        let components = data_dir.join("components");
        std::fs::create_dir_all(&components).map_err(|e| unavailable(format!("cannot create {}: {e}", components.display())))?;
        let (dialect, url) = match home {
            Home::Embedded => {
                let options = sqlx::sqlite::SqliteConnectOptions::new().filename(data_dir.join("control.db")).create_if_missing(true);
                (Dialect::Sqlite, options.to_url_lossy())
            }
            Home::Postgres { url, database } => {
                let mut url: url::Url = url.parse().map_err(|_| unavailable("the PostgreSQL URL is not valid"))?;
                url.set_path(&format!("/{database}"));
                (Dialect::Postgres, url)
            }
            Home::MySql { url, database } => {
                let db = format!("{database}_control");
                if !valid_identifier(&db) {
                    return Err(unavailable(format!("database {db:?} must be 1-56 characters of a-z, 0-9 and '_'")));
                }
                let mut url: url::Url = url.parse().map_err(|_| unavailable("the MySQL URL is not valid"))?;
                let server = AnyConnectOptions::from_url(&url)?;
                let mut conn = tokio::time::timeout(timeout, sqlx::AnyConnection::connect_with(&server))
                    .await
                    .map_err(|_| unavailable("connecting to MySQL timed out"))??;
                conn.execute(AssertSqlSafe(format!("CREATE DATABASE IF NOT EXISTS `{db}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"))).await?;
                let _ = conn.close().await;
                url.set_path(&format!("/{db}"));
                (Dialect::MySql, url)
            }
        };
        let options = AnyConnectOptions::from_url(&url)?.log_slow_statements(tracing::log::LevelFilter::Warn, Duration::from_secs(1));
        let timeout_ms = timeout.as_millis().max(1000) as u64;
        let pool = AnyPoolOptions::new()
            .max_connections(if dialect == Dialect::Sqlite { 4 } else { 8 })
            .acquire_timeout(timeout)
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    let setup: &[String] = &match dialect {
                        Dialect::Sqlite => vec![
                            "PRAGMA journal_mode = WAL".into(),
                            "PRAGMA synchronous = FULL".into(),
                            "PRAGMA foreign_keys = ON".into(),
                            "PRAGMA busy_timeout = 5000".into(),
                        ],
                        Dialect::Postgres => vec![format!("SET search_path TO {SCHEMA}"), format!("SET statement_timeout = {timeout_ms}")],
                        Dialect::MySql => vec![format!("SET SESSION innodb_lock_wait_timeout = {}", timeout_ms.div_ceil(1000))],
                    };
                    for s in setup {
                        conn.execute(AssertSqlSafe(s.clone())).await?;
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await?;
        let mut migrator = match dialect {
            Dialect::Sqlite => sqlx::migrate!("./migrations/sqlite"),
            Dialect::Postgres => {
                let mut m = sqlx::migrate!("./migrations/postgres");
                m.create_schema(SCHEMA);
                m.dangerous_set_table_name(format!("{SCHEMA}._sqlx_migrations"));
                m
            }
            Dialect::MySql => sqlx::migrate!("./migrations/mysql"),
        };
        let migrating = |e: sqlx::migrate::MigrateError| unavailable(format!("migrating the control store: {e}"));
        if dialect == Dialect::MySql {
            // sqlx takes MySQL's lock with GET_LOCK(name, -1), which MariaDB answers at
            // once with 0 (a negative timeout is not "forever" there), so several nodes
            // starting together ran the migrations at once. Take the lock here, checked.
            migrator.set_locking(false);
            let mut conn = pool.acquire().await?;
            let locked: Option<i64> = sqlx::query_scalar("SELECT GET_LOCK('runplane_control_migrations', ?)").bind(timeout.as_secs().max(1) as i64 * 6).fetch_one(&mut *conn).await?;
            if locked != Some(1) {
                return Err(unavailable("another node held the migration lock for too long; start this node again"));
            }
            let ran = migrator.run(&mut *conn).await;
            let _ = sqlx::query("SELECT RELEASE_LOCK('runplane_control_migrations')").execute(&mut *conn).await;
            ran.map_err(migrating)?;
        } else {
            migrator.set_locking(dialect != Dialect::Sqlite);
            migrator.run(&pool).await.map_err(migrating)?;
        }
        let listen_url = (dialect == Dialect::Postgres).then(|| url.to_string());
        Ok(ControlStore { pool, dialect, shared: home.is_shared(), components, listen_url })
    }

    /// Whether other nodes may share this store (PostgreSQL or MySQL).
    pub fn is_shared(&self) -> bool {
        self.shared
    }

    /// A listener for other nodes' changes, where the home has one (PostgreSQL).
    pub async fn hints(&self) -> Result<Option<Hints>> {
        let Some(url) = &self.listen_url else { return Ok(None) };
        let mut listener = sqlx::postgres::PgListener::connect(url).await?;
        listener.listen(CHANNEL).await?;
        Ok(Some(Hints { listener }))
    }

    /// The statement in this store's dialect (translated once, then kept).
    fn sql(&self, sql: &'static str) -> &'static str {
        if self.dialect != Dialect::MySql && !sql.contains("NOW_MS") && !sql.contains("_LOCK") {
            return sql;
        }
        static TRANSLATED: LazyLock<Mutex<HashMap<(Dialect, &'static str), &'static str>>> = LazyLock::new(Default::default);
        let mut cache = TRANSLATED.lock().unwrap_or_else(|p| p.into_inner());
        // Leaked once per (dialect, statement): the statements are the constants below.
        cache.entry((self.dialect, sql)).or_insert_with(|| Box::leak(translate(self.dialect, sql).into_boxed_str()))
    }

    /// `mysql` on MySQL, else `standard` (for the statements whose syntax differs).
    fn pick(&self, standard: &'static str, mysql: &'static str) -> &'static str {
        if self.dialect == Dialect::MySql { self.sql(mysql) } else { self.sql(standard) }
    }

    /// Starts a mutation of `family`: bumps the revision (taking the lock that orders
    /// every mutation) and records the change, in the returned transaction.
    async fn change(&self, family: Family, id: &str) -> Result<Transaction<'static, Any>> {
        let mut tx = self.pool.begin().await?;
        self.note(&mut tx, family, id).await?;
        Ok(tx)
    }

    /// Records one more change in a mutation's transaction (one that touches two
    /// families, such as a rollout promoted with its route's deployment).
    async fn note(&self, tx: &mut Transaction<'static, Any>, family: Family, id: &str) -> Result<()> {
        sqlx::query(self.sql("UPDATE control_head SET revision = revision + 1 WHERE id = 1")).execute(&mut **tx).await?;
        let revision: i64 = sqlx::query_scalar(self.sql("SELECT revision FROM control_head WHERE id = 1")).fetch_one(&mut **tx).await?;
        sqlx::query(self.sql("INSERT INTO control_changes (revision, kind, id, at_ms) VALUES ($1, $2, $3, NOW_MS)"))
            .bind(revision)
            .bind(family.as_str())
            .bind(id)
            .execute(&mut **tx)
            .await?;
        if self.dialect == Dialect::Postgres {
            (&mut **tx).execute(AssertSqlSafe(format!("NOTIFY {CHANNEL}, '{revision}'"))).await?;
        }
        Ok(())
    }

    /// Commits a mutation that changed something, rolls back one that did not (so a
    /// refused create leaves no revision behind).
    async fn finish(tx: Transaction<'static, Any>, changed: bool) -> Result<bool> {
        if changed { tx.commit().await? } else { tx.rollback().await? }
        Ok(changed)
    }

    // ---- the feed ----

    /// The store's current revision.
    pub async fn head(&self) -> Result<u64> {
        let r: i64 = sqlx::query_scalar(self.sql("SELECT revision FROM control_head WHERE id = 1")).fetch_one(&self.pool).await?;
        Ok(r as u64)
    }

    /// The changes with `after < revision <= through`, oldest first (at most
    /// [`crate::feed::MAX_BACKLOG`]).
    pub async fn changes(&self, after: u64, through: u64) -> Result<Vec<Change>> {
        let rows = sqlx::query(self.sql("SELECT revision, kind, id FROM control_changes WHERE revision > $1 AND revision <= $2 ORDER BY revision LIMIT 1000"))
            .bind(after as i64)
            .bind(through as i64)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|r| Ok(Change { revision: r.try_get::<i64, _>(0)? as u64, family: r.try_get(1)?, id: r.try_get(2)? })).collect()
    }

    pub async fn health(&self) -> bool {
        sqlx::query(self.sql("SELECT 1")).execute(&self.pool).await.is_ok()
    }

    // ---- settings ----

    pub async fn setting(&self, name: &str) -> Result<Option<String>> {
        Ok(sqlx::query_scalar(self.sql("SELECT value FROM settings WHERE name = $1")).bind(name).fetch_optional(&self.pool).await?)
    }

    pub async fn set_setting(&self, name: &str, value: &str) -> Result<()> {
        let mut tx = self.change(Family::Settings, name).await?;
        sqlx::query(self.pick(
            "INSERT INTO settings (name, value) VALUES ($1, $2) ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            "INSERT INTO settings (name, value) VALUES ($1, $2) ON DUPLICATE KEY UPDATE value = VALUES(value)",
        ))
        .bind(name)
        .bind(value)
        .execute(&mut *tx)
        .await?;
        Self::finish(tx, true).await.map(|_| ())
    }

    /// Sets `name` to `value` unless it has a value already; returns the value it has
    /// afterwards (so nodes starting together agree on the first writer's value).
    pub async fn setting_or_insert(&self, name: &str, value: &str) -> Result<String> {
        let mut tx = self.change(Family::Settings, name).await?;
        let r = sqlx::query(self.pick(
            "INSERT INTO settings (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
            "INSERT IGNORE INTO settings (name, value) VALUES ($1, $2)",
        ))
        .bind(name)
        .bind(value)
        .execute(&mut *tx)
        .await?;
        Self::finish(tx, r.rows_affected() == 1).await?;
        self.setting(name).await?.ok_or_else(|| corrupt(format!("setting {name} vanished right after it was written")))
    }

    // ---- tenants and keys ----

    pub async fn tenants(&self) -> Result<Vec<Tenant>> {
        let rows = sqlx::query(self.sql("SELECT id, mode, status, tier, created_at, provisioning, provisioning_error FROM tenants ORDER BY id"))
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(Tenant {
                    id: r.try_get(0)?,
                    mode: if r.try_get::<String, _>(1)? == "dedicated" { Mode::Dedicated } else { Mode::Shared },
                    status: r.try_get(2)?,
                    tier: r.try_get(3)?,
                    created_at: r.try_get(4)?,
                    provisioning: r.try_get(5)?,
                    provisioning_error: r.try_get(6)?,
                })
            })
            .collect()
    }

    /// Inserts a tenant; `Ok(false)` if the id is taken.
    pub async fn insert_tenant(&self, t: &Tenant) -> Result<bool> {
        let mut tx = self.change(Family::Tenants, &t.id).await?;
        let r = sqlx::query(self.pick(
            "INSERT INTO tenants (id, mode, status, tier, created_at, provisioning) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (id) DO NOTHING",
            "INSERT IGNORE INTO tenants (id, mode, status, tier, created_at, provisioning) VALUES ($1, $2, $3, $4, $5, $6)",
        ))
        .bind(&t.id)
        .bind(t.mode.as_str())
        .bind(&t.status)
        .bind(&t.tier)
        .bind(&t.created_at)
        .bind(&t.provisioning)
        .execute(&mut *tx)
        .await?;
        Self::finish(tx, r.rows_affected() == 1).await
    }

    pub async fn set_tenant_status(&self, id: &str, status: &str) -> Result<bool> {
        let mut tx = self.change(Family::Tenants, id).await?;
        let found: Option<String> = sqlx::query_scalar(self.sql("SELECT status FROM tenants WHERE id = $1")).bind(id).fetch_optional(&mut *tx).await?;
        if found.is_none() {
            return Self::finish(tx, false).await;
        }
        sqlx::query(self.sql("UPDATE tenants SET status = $1 WHERE id = $2")).bind(status).bind(id).execute(&mut *tx).await?;
        Self::finish(tx, true).await
    }

    pub async fn set_provisioning(&self, id: &str, state: &str, error: Option<&str>) -> Result<()> {
        let mut tx = self.change(Family::Tenants, id).await?;
        sqlx::query(self.sql("UPDATE tenants SET provisioning = $1, provisioning_error = $2 WHERE id = $3"))
            .bind(state)
            .bind(error)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        Self::finish(tx, true).await.map(|_| ())
    }

    /// Deletes a tenant and (by cascade) its keys.
    pub async fn delete_tenant(&self, id: &str) -> Result<bool> {
        let mut tx = self.change(Family::Tenants, id).await?;
        let r = sqlx::query(self.sql("DELETE FROM tenants WHERE id = $1")).bind(id).execute(&mut *tx).await?;
        Self::finish(tx, r.rows_affected() == 1).await
    }

    pub async fn insert_key(&self, key_hash: &str, key_id: &str, tenant: &str, created_at: &str) -> Result<()> {
        let mut tx = self.change(Family::Keys, key_id).await?;
        sqlx::query(self.sql("INSERT INTO api_keys (key_hash, key_id, tenant_id, created_at) VALUES ($1, $2, $3, $4)"))
            .bind(key_hash)
            .bind(key_id)
            .bind(tenant)
            .bind(created_at)
            .execute(&mut *tx)
            .await?;
        Self::finish(tx, true).await.map(|_| ())
    }

    /// Deletes one key by its public id; `false` if the tenant has no such key.
    pub async fn delete_key(&self, tenant: &str, key_id: &str) -> Result<bool> {
        let mut tx = self.change(Family::Keys, key_id).await?;
        let r = sqlx::query(self.sql("DELETE FROM api_keys WHERE key_id = $1 AND tenant_id = $2")).bind(key_id).bind(tenant).execute(&mut *tx).await?;
        Self::finish(tx, r.rows_affected() == 1).await
    }

    /// Every key: `(key_hash, key_id, tenant_id)`.
    pub async fn keys(&self) -> Result<Vec<(String, String, String)>> {
        let rows = sqlx::query(self.sql("SELECT key_hash, key_id, tenant_id FROM api_keys")).fetch_all(&self.pool).await?;
        rows.iter().map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?))).collect()
    }

    // ---- components ----

    fn component_path(&self, digest: &str) -> PathBuf {
        self.components.join(format!("{digest}.wasm"))
    }

    async fn cache_component(&self, digest: &str, bytes: &[u8]) -> Result<()> {
        let path = self.component_path(digest);
        if tokio::fs::try_exists(&path).await.unwrap_or(false) {
            return Ok(());
        }
        let tmp = path.with_extension(format!("{}.tmp", std::process::id()));
        tokio::fs::write(&tmp, bytes).await.map_err(|e| unavailable(format!("component store: {e}")))?;
        tokio::fs::rename(&tmp, &path).await.map_err(|e| unavailable(format!("component store: {e}")))?;
        Ok(())
    }

    /// Stores component bytes under their digest (idempotent): in the shared table,
    /// where every node finds them, and in the local files.
    pub async fn store_component(&self, digest: &str, bytes: &[u8], at: &str) -> Result<()> {
        if self.shared {
            sqlx::query(self.pick(
                "INSERT INTO components (digest, bytes, created_at) VALUES ($1, $2, $3) ON CONFLICT (digest) DO NOTHING",
                "INSERT IGNORE INTO components (digest, bytes, created_at) VALUES ($1, $2, $3)",
            ))
            .bind(digest)
            .bind(bytes.to_vec())
            .bind(at)
            .execute(&self.pool)
            .await?;
        }
        self.cache_component(digest, bytes).await
    }

    /// Reads component bytes and checks they still hash to `digest` (fail closed). In a
    /// shared store a component missing from the local files is fetched and kept.
    pub async fn component(&self, digest: &str) -> Result<Vec<u8>> {
        let local = tokio::fs::read(self.component_path(digest)).await;
        let (bytes, from_store) = match local {
            Ok(b) => (b, false),
            Err(e) if !self.shared => return Err(unavailable(format!("component {digest} is missing from the component store: {e}"))),
            Err(_) => {
                let b: Option<Vec<u8>> = sqlx::query_scalar(self.sql("SELECT bytes FROM components WHERE digest = $1")).bind(digest).fetch_optional(&self.pool).await?;
                (b.ok_or_else(|| unavailable(format!("component {digest} is missing from the shared component store; push the capability again")))?, true)
            }
        };
        let actual = runplane_cjson::sha256_hex(&bytes);
        if actual != digest {
            return Err(corrupt(format!("component {digest} hashes to {actual}; push the capability again")));
        }
        if from_store {
            self.cache_component(digest, &bytes).await?;
        }
        Ok(bytes)
    }

    // ---- capabilities and deployments ----

    /// Inserts a capability version; `Ok(false)` if that name@version exists already.
    pub async fn insert_capability(&self, c: &CapabilityVersion) -> Result<bool> {
        let mut tx = self.change(Family::Capabilities, &format!("{}@{}", c.name, c.version)).await?;
        let r = sqlx::query(self.pick(
            "INSERT INTO capabilities (name, version, digest, size_bytes, exports, imports, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (name, version) DO NOTHING",
            "INSERT IGNORE INTO capabilities (name, version, digest, size_bytes, exports, imports, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        ))
        .bind(&c.name)
        .bind(&c.version)
        .bind(&c.digest)
        .bind(c.size_bytes as i64)
        .bind(c.exports.to_string())
        .bind(serde_json::to_string(&c.imports).unwrap_or_default())
        .bind(&c.created_at)
        .execute(&mut *tx)
        .await?;
        Self::finish(tx, r.rows_affected() == 1).await
    }

    pub async fn capabilities(&self) -> Result<Vec<CapabilityVersion>> {
        let rows = sqlx::query(self.sql("SELECT name, version, digest, size_bytes, exports, imports, created_at FROM capabilities ORDER BY name, created_at, version"))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(capability_row).collect()
    }

    pub async fn capability(&self, name: &str, version: &str) -> Result<Option<CapabilityVersion>> {
        let row = sqlx::query(self.sql("SELECT name, version, digest, size_bytes, exports, imports, created_at FROM capabilities WHERE name = $1 AND version = $2"))
            .bind(name)
            .bind(version)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(capability_row).transpose()
    }

    pub async fn upsert_deployment(&self, d: &Deployment) -> Result<()> {
        let mut tx = self.change(Family::Deployments, &d.route).await?;
        self.write_deployment(&mut tx, d).await?;
        Self::finish(tx, true).await.map(|_| ())
    }

    async fn write_deployment(&self, tx: &mut Transaction<'static, Any>, d: &Deployment) -> Result<()> {
        sqlx::query(self.pick(
            "INSERT INTO deployments (route, capability, version, digest, allow_hosts, subscriptions, created_at, flag)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             ON CONFLICT (route) DO UPDATE SET capability = excluded.capability, version = excluded.version,
               digest = excluded.digest, allow_hosts = excluded.allow_hosts, subscriptions = excluded.subscriptions,
               created_at = excluded.created_at, flag = excluded.flag",
            "INSERT INTO deployments (route, capability, version, digest, allow_hosts, subscriptions, created_at, flag)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             ON DUPLICATE KEY UPDATE capability = VALUES(capability), version = VALUES(version),
               digest = VALUES(digest), allow_hosts = VALUES(allow_hosts), subscriptions = VALUES(subscriptions),
               created_at = VALUES(created_at), flag = VALUES(flag)",
        ))
        .bind(&d.route)
        .bind(&d.capability)
        .bind(&d.version)
        .bind(&d.digest)
        .bind(serde_json::to_string(&d.allow_hosts).unwrap_or_default())
        .bind(serde_json::to_string(&d.subscriptions).unwrap_or_default())
        .bind(&d.created_at)
        .bind(&d.flag)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    pub async fn delete_deployment(&self, route: &str) -> Result<bool> {
        let mut tx = self.change(Family::Deployments, route).await?;
        let r = sqlx::query(self.sql("DELETE FROM deployments WHERE route = $1")).bind(route).execute(&mut *tx).await?;
        Self::finish(tx, r.rows_affected() == 1).await
    }

    pub async fn deployments(&self) -> Result<Vec<Deployment>> {
        let rows = sqlx::query(self.sql("SELECT route, capability, version, digest, allow_hosts, subscriptions, created_at, flag FROM deployments ORDER BY route"))
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(Deployment {
                    route: r.try_get(0)?,
                    capability: r.try_get(1)?,
                    version: r.try_get(2)?,
                    digest: r.try_get(3)?,
                    allow_hosts: json_list(&r.try_get::<String, _>(4)?)?,
                    subscriptions: json_list(&r.try_get::<String, _>(5)?)?,
                    created_at: r.try_get(6)?,
                    flag: r.try_get(7)?,
                })
            })
            .collect()
    }

    // ---- rollouts ----

    /// Creates a rollout; with `supersede`, in the same transaction marks that one (at
    /// the revision given) as superseded; with `deployment` (a rollout promoted at its
    /// start), moves the route's deployment too. `false` if the rollout exists or the
    /// one to supersede moved on meanwhile (read it again).
    pub async fn insert_rollout(&self, r: &StoredRollout, supersede: Option<(&StoredRollout, u64)>, deployment: Option<&Deployment>) -> Result<bool> {
        let mut tx = self.change(Family::Rollouts, &r.rollout_id).await?;
        if let Some((old, expected)) = supersede
            && !self.swap_rollout(&mut tx, old, expected).await?
        {
            return Self::finish(tx, false).await;
        }
        if let Some(d) = deployment {
            self.note(&mut tx, Family::Deployments, &d.route).await?;
            self.write_deployment(&mut tx, d).await?;
        }
        let inserted = sqlx::query(self.pick(
            "INSERT INTO rollouts (rollout_id, route, revision, active, body, updated_at) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (rollout_id) DO NOTHING",
            "INSERT IGNORE INTO rollouts (rollout_id, route, revision, active, body, updated_at) VALUES ($1, $2, $3, $4, $5, $6)",
        ))
        .bind(&r.rollout_id)
        .bind(&r.route)
        .bind(r.revision as i64)
        .bind(i64::from(r.active))
        .bind(&r.body)
        .bind(&r.updated_at)
        .execute(&mut *tx)
        .await?;
        Self::finish(tx, inserted.rows_affected() == 1).await
    }

    /// Replaces a rollout's state if it is still at `expected` (compare and swap); with
    /// `deployment`, the route's deployment changes in the same transaction (a
    /// promotion). `false` if someone else changed it first.
    pub async fn update_rollout(&self, r: &StoredRollout, expected: u64, deployment: Option<&Deployment>) -> Result<bool> {
        let mut tx = self.change(Family::Rollouts, &r.rollout_id).await?;
        if !self.swap_rollout(&mut tx, r, expected).await? {
            return Self::finish(tx, false).await;
        }
        if let Some(d) = deployment {
            self.note(&mut tx, Family::Deployments, &d.route).await?;
            self.write_deployment(&mut tx, d).await?;
        }
        Self::finish(tx, true).await
    }

    async fn swap_rollout(&self, tx: &mut Transaction<'static, Any>, r: &StoredRollout, expected: u64) -> Result<bool> {
        let done = sqlx::query(self.sql("UPDATE rollouts SET revision = $1, active = $2, body = $3, updated_at = $4 WHERE rollout_id = $5 AND revision = $6"))
            .bind(r.revision as i64)
            .bind(i64::from(r.active))
            .bind(&r.body)
            .bind(&r.updated_at)
            .bind(&r.rollout_id)
            .bind(expected as i64)
            .execute(&mut **tx)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// The rollouts still moving (not promoted, aborted or superseded).
    pub async fn active_rollouts(&self) -> Result<Vec<StoredRollout>> {
        let rows = sqlx::query(self.sql("SELECT rollout_id, route, revision, active, body, updated_at FROM rollouts WHERE active = 1 ORDER BY rollout_id"))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(rollout_row).collect()
    }

    /// Every rollout, newest first (ids are UUID v7), at most `limit`, optionally of one route.
    pub async fn rollouts(&self, route: Option<&str>, limit: u32) -> Result<Vec<StoredRollout>> {
        let rows = match route {
            Some(route) => {
                sqlx::query(self.sql("SELECT rollout_id, route, revision, active, body, updated_at FROM rollouts WHERE route = $1 ORDER BY rollout_id DESC LIMIT $2"))
                    .bind(route)
                    .bind(i64::from(limit))
                    .fetch_all(&self.pool)
                    .await?
            }
            None => {
                sqlx::query(self.sql("SELECT rollout_id, route, revision, active, body, updated_at FROM rollouts ORDER BY rollout_id DESC LIMIT $1"))
                    .bind(i64::from(limit))
                    .fetch_all(&self.pool)
                    .await?
            }
        };
        rows.iter().map(rollout_row).collect()
    }

    pub async fn rollout(&self, id: &str) -> Result<Option<StoredRollout>> {
        let row = sqlx::query(self.sql("SELECT rollout_id, route, revision, active, body, updated_at FROM rollouts WHERE rollout_id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(rollout_row).transpose()
    }

    /// Writes this node's cumulative counters for a rollout (metrics: no revision).
    pub async fn put_rollout_metrics(&self, rollout_id: &str, node_id: &str, body: &str, now_ms: u64) -> Result<()> {
        sqlx::query(self.pick(
            "INSERT INTO rollout_metrics (rollout_id, node_id, body, updated_ms) VALUES ($1, $2, $3, $4)
             ON CONFLICT (rollout_id, node_id) DO UPDATE SET body = excluded.body, updated_ms = excluded.updated_ms",
            "INSERT INTO rollout_metrics (rollout_id, node_id, body, updated_ms) VALUES ($1, $2, $3, $4)
             ON DUPLICATE KEY UPDATE body = VALUES(body), updated_ms = VALUES(updated_ms)",
        ))
        .bind(rollout_id)
        .bind(node_id)
        .bind(body)
        .bind(now_ms as i64)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Every node's counters for a rollout: `(node id, body)`.
    pub async fn rollout_metrics(&self, rollout_id: &str) -> Result<Vec<(String, String)>> {
        let rows = sqlx::query(self.sql("SELECT node_id, body FROM rollout_metrics WHERE rollout_id = $1 ORDER BY node_id")).bind(rollout_id).fetch_all(&self.pool).await?;
        rows.iter().map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).collect()
    }

    /// Forgets the counters of rollouts that no longer move.
    pub async fn prune_rollout_metrics(&self) -> Result<u64> {
        let r = sqlx::query(self.sql("DELETE FROM rollout_metrics WHERE rollout_id NOT IN (SELECT rollout_id FROM rollouts WHERE active = 1)")).execute(&self.pool).await?;
        Ok(r.rows_affected())
    }

    // ---- quotas and usage ----

    /// Every tenant's own quota (tenants without one use their tier's defaults).
    pub async fn quotas(&self) -> Result<Vec<(String, String)>> {
        let rows = sqlx::query(self.sql("SELECT tenant_id, quota FROM tenant_quotas")).fetch_all(&self.pool).await?;
        rows.iter().map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).collect()
    }

    pub async fn set_quota(&self, tenant: &str, quota_json: &str, at: &str) -> Result<()> {
        let mut tx = self.change(Family::Quotas, tenant).await?;
        sqlx::query(self.pick(
            "INSERT INTO tenant_quotas (tenant_id, quota, updated_at) VALUES ($1, $2, $3)
             ON CONFLICT (tenant_id) DO UPDATE SET quota = excluded.quota, updated_at = excluded.updated_at",
            "INSERT INTO tenant_quotas (tenant_id, quota, updated_at) VALUES ($1, $2, $3)
             ON DUPLICATE KEY UPDATE quota = VALUES(quota), updated_at = VALUES(updated_at)",
        ))
        .bind(tenant)
        .bind(quota_json)
        .bind(at)
        .execute(&mut *tx)
        .await?;
        Self::finish(tx, true).await.map(|_| ())
    }

    /// Metered disk bytes per tenant.
    pub async fn disk_usage(&self) -> Result<Vec<(String, i64)>> {
        let rows = sqlx::query(self.sql("SELECT tenant_id, disk_bytes FROM tenant_usage")).fetch_all(&self.pool).await?;
        rows.iter().map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).collect()
    }

    /// Adds each tenant's disk-usage change on this node and returns the instance's
    /// totals after it, in one transaction (usage, not control state: no revision).
    pub async fn add_disk_usage(&self, deltas: &[(String, i64)]) -> Result<Vec<i64>> {
        let mut tx = self.pool.begin().await?;
        let mut totals = Vec::with_capacity(deltas.len());
        for (tenant, delta) in deltas {
            sqlx::query(self.pick(
                "INSERT INTO tenant_usage (tenant_id, disk_bytes) VALUES ($1, $2) ON CONFLICT (tenant_id) DO UPDATE SET disk_bytes = tenant_usage.disk_bytes + excluded.disk_bytes",
                "INSERT INTO tenant_usage (tenant_id, disk_bytes) VALUES ($1, $2) ON DUPLICATE KEY UPDATE disk_bytes = disk_bytes + VALUES(disk_bytes)",
            ))
            .bind(tenant)
            .bind(delta)
            .execute(&mut *tx)
            .await?;
            totals.push(sqlx::query_scalar(self.sql("SELECT disk_bytes FROM tenant_usage WHERE tenant_id = $1")).bind(tenant).fetch_one(&mut *tx).await?);
        }
        tx.commit().await?;
        Ok(totals)
    }

    /// Adds this node's use of each `(tenant, resource, window start)` and returns what
    /// the whole instance used of each, in one transaction.
    pub async fn add_window_usage(&self, uses: &[(String, &'static str, u64, u64)]) -> Result<Vec<u64>> {
        let mut tx = self.pool.begin().await?;
        let mut totals = Vec::with_capacity(uses.len());
        for (tenant, resource, start, used) in uses {
            sqlx::query(self.pick(
                "INSERT INTO tenant_windows (tenant_id, resource, window_start, used) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (tenant_id, resource, window_start) DO UPDATE SET used = tenant_windows.used + excluded.used",
                "INSERT INTO tenant_windows (tenant_id, resource, window_start, used) VALUES ($1, $2, $3, $4)
                 ON DUPLICATE KEY UPDATE used = used + VALUES(used)",
            ))
            .bind(tenant)
            .bind(*resource)
            .bind(*start as i64)
            .bind(*used as i64)
            .execute(&mut *tx)
            .await?;
            let total: i64 = sqlx::query_scalar(self.sql("SELECT used FROM tenant_windows WHERE tenant_id = $1 AND resource = $2 AND window_start = $3"))
                .bind(tenant)
                .bind(*resource)
                .bind(*start as i64)
                .fetch_one(&mut *tx)
                .await?;
            totals.push(total.max(0) as u64);
        }
        tx.commit().await?;
        Ok(totals)
    }

    /// Forgets windows that started before `before` (seconds since the epoch).
    pub async fn prune_windows(&self, before: u64) -> Result<u64> {
        let r = sqlx::query(self.sql("DELETE FROM tenant_windows WHERE window_start < $1")).bind(before as i64).execute(&self.pool).await?;
        Ok(r.rows_affected())
    }

    // ---- contracts, documents, configuration ----

    pub async fn insert_contract(&self, id: &str, route: &str, contract_json: &str, at: &str) -> Result<bool> {
        let mut tx = self.change(Family::Contracts, id).await?;
        let r = sqlx::query(self.pick(
            "INSERT INTO contracts (contract_id, route, contract, created_at) VALUES ($1, $2, $3, $4) ON CONFLICT (contract_id) DO NOTHING",
            "INSERT IGNORE INTO contracts (contract_id, route, contract, created_at) VALUES ($1, $2, $3, $4)",
        ))
        .bind(id)
        .bind(route)
        .bind(contract_json)
        .bind(at)
        .execute(&mut *tx)
        .await?;
        Self::finish(tx, r.rows_affected() == 1).await
    }

    /// `(contract_id, route, contract JSON)` of every registered contract.
    pub async fn contracts(&self) -> Result<Vec<(String, String, String)>> {
        let rows = sqlx::query(self.sql("SELECT contract_id, route, contract FROM contracts ORDER BY contract_id")).fetch_all(&self.pool).await?;
        rows.iter().map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?))).collect()
    }

    /// Every document of `kind`, `(id, JSON body)`, sorted by id.
    pub async fn documents(&self, kind: &str) -> Result<Vec<(String, String)>> {
        let rows = sqlx::query(self.sql("SELECT id, body FROM documents WHERE kind = $1 ORDER BY id")).bind(kind).fetch_all(&self.pool).await?;
        rows.iter().map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).collect()
    }

    /// Creates or replaces one document.
    pub async fn put_document(&self, kind: &str, id: &str, body: &str, at: &str) -> Result<()> {
        let mut tx = self.change(Family::Documents, &format!("{kind}/{id}")).await?;
        sqlx::query(self.pick(
            "INSERT INTO documents (kind, id, body, updated_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (kind, id) DO UPDATE SET body = excluded.body, updated_at = excluded.updated_at",
            "INSERT INTO documents (kind, id, body, updated_at) VALUES ($1, $2, $3, $4)
             ON DUPLICATE KEY UPDATE body = VALUES(body), updated_at = VALUES(updated_at)",
        ))
        .bind(kind)
        .bind(id)
        .bind(body)
        .bind(at)
        .execute(&mut *tx)
        .await?;
        Self::finish(tx, true).await.map(|_| ())
    }

    /// Creates one document unless one with its kind and id exists; `false` then (two
    /// nodes creating the same thing at once: exactly one wins).
    pub async fn insert_document(&self, kind: &str, id: &str, body: &str, at: &str) -> Result<bool> {
        let mut tx = self.change(Family::Documents, &format!("{kind}/{id}")).await?;
        let r = sqlx::query(self.pick(
            "INSERT INTO documents (kind, id, body, updated_at) VALUES ($1, $2, $3, $4) ON CONFLICT (kind, id) DO NOTHING",
            "INSERT IGNORE INTO documents (kind, id, body, updated_at) VALUES ($1, $2, $3, $4)",
        ))
        .bind(kind)
        .bind(id)
        .bind(body)
        .bind(at)
        .execute(&mut *tx)
        .await?;
        Self::finish(tx, r.rows_affected() == 1).await
    }

    /// Deletes one document; `false` if there was none.
    pub async fn delete_document(&self, kind: &str, id: &str) -> Result<bool> {
        let mut tx = self.change(Family::Documents, &format!("{kind}/{id}")).await?;
        let r = sqlx::query(self.sql("DELETE FROM documents WHERE kind = $1 AND id = $2")).bind(kind).bind(id).execute(&mut *tx).await?;
        Self::finish(tx, r.rows_affected() == 1).await
    }

    /// Appends a configuration revision and returns its number (one more than the
    /// last: the revision lock orders concurrent appends from several nodes).
    pub async fn insert_config_version(&self, v: &ConfigVersionRow) -> Result<u64> {
        let mut tx = self.change(Family::Config, &v.scope).await?;
        let last: Option<i64> = sqlx::query_scalar(self.sql("SELECT MAX(version) FROM config_versions")).fetch_one(&mut *tx).await?;
        let version = last.unwrap_or(0) + 1;
        sqlx::query(self.sql(
            "INSERT INTO config_versions (version, scope, content, created_at, actor, reason, restored_from) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        ))
        .bind(version)
        .bind(&v.scope)
        .bind(&v.content)
        .bind(&v.created_at)
        .bind(&v.actor)
        .bind(&v.reason)
        .bind(v.restored_from.map(|n| n as i64))
        .execute(&mut *tx)
        .await?;
        Self::finish(tx, true).await?;
        Ok(version as u64)
    }

    /// Every configuration revision, oldest first.
    pub async fn config_versions(&self) -> Result<Vec<ConfigVersionRow>> {
        let rows = sqlx::query(self.sql("SELECT version, scope, content, created_at, actor, reason, restored_from FROM config_versions ORDER BY version"))
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(ConfigVersionRow {
                    version: r.try_get::<i64, _>(0)? as u64,
                    scope: r.try_get(1)?,
                    content: r.try_get(2)?,
                    created_at: r.try_get(3)?,
                    actor: r.try_get(4)?,
                    reason: r.try_get(5)?,
                    restored_from: r.try_get::<Option<i64>, _>(6)?.map(|n| n as u64),
                })
            })
            .collect()
    }

    // ---- idempotency keys ----

    /// Claims `key` in `scope` for the request with fingerprint `request`: the first
    /// claim wins; a claim left unfinished for over a minute (its node died) may be
    /// taken again.
    pub async fn claim_idempotency(&self, scope: &str, key: &str, request: &str) -> Result<Claim> {
        let r = sqlx::query(self.pick(
            "INSERT INTO idempotency (scope, idem_key, request, status, response, created_ms) VALUES ($1, $2, $3, 0, '', NOW_MS) ON CONFLICT (scope, idem_key) DO NOTHING",
            "INSERT IGNORE INTO idempotency (scope, idem_key, request, status, response, created_ms) VALUES ($1, $2, $3, 0, '', NOW_MS)",
        ))
        .bind(scope)
        .bind(key)
        .bind(request)
        .execute(&self.pool)
        .await?;
        if r.rows_affected() == 1 {
            return Ok(Claim::Claimed);
        }
        let abandoned = sqlx::query(self.sql("UPDATE idempotency SET request = $1, created_ms = NOW_MS WHERE scope = $2 AND idem_key = $3 AND status = 0 AND created_ms < NOW_MS - 60000"))
            .bind(request)
            .bind(scope)
            .bind(key)
            .execute(&self.pool)
            .await?;
        if abandoned.rows_affected() == 1 {
            return Ok(Claim::Claimed);
        }
        let row = sqlx::query(self.sql("SELECT request, status, response FROM idempotency WHERE scope = $1 AND idem_key = $2")).bind(scope).bind(key).fetch_optional(&self.pool).await?;
        let Some(row) = row else { return Ok(Claim::InProgress) };
        let (stored, status, response): (String, i64, String) = (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
        Ok(match status {
            0 => Claim::InProgress,
            _ if stored != request => Claim::OtherRequest,
            s => Claim::Done { status: s as u16, response },
        })
    }

    /// Records the answer of a claimed key.
    pub async fn complete_idempotency(&self, scope: &str, key: &str, status: u16, response: &str) -> Result<()> {
        sqlx::query(self.sql("UPDATE idempotency SET status = $1, response = $2 WHERE scope = $3 AND idem_key = $4"))
            .bind(i64::from(status))
            .bind(response)
            .bind(scope)
            .bind(key)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Gives a claim up (the request failed; a retry may run it again).
    pub async fn release_idempotency(&self, scope: &str, key: &str) -> Result<()> {
        sqlx::query(self.sql("DELETE FROM idempotency WHERE scope = $1 AND idem_key = $2 AND status = 0")).bind(scope).bind(key).execute(&self.pool).await?;
        Ok(())
    }

    /// Forgets keys older than `older_than`.
    pub async fn prune_idempotency(&self, older_than: Duration) -> Result<u64> {
        let r = sqlx::query(self.sql("DELETE FROM idempotency WHERE created_ms < NOW_MS - $1")).bind(older_than.as_millis() as i64).execute(&self.pool).await?;
        Ok(r.rows_affected())
    }

    // ---- membership ----

    /// Records this node's heartbeat (creating its row at first).
    pub async fn heartbeat(&self, node: &ClusterNode) -> Result<()> {
        sqlx::query(self.pick(
            "INSERT INTO cluster_nodes (node_id, region, address, version, started_at, heartbeat_ms, state, in_flight)
             VALUES ($1, $2, $3, $4, $5, NOW_MS, $6, $7)
             ON CONFLICT (node_id) DO UPDATE SET region = excluded.region, address = excluded.address, version = excluded.version,
               started_at = excluded.started_at, heartbeat_ms = excluded.heartbeat_ms, state = excluded.state, in_flight = excluded.in_flight",
            "INSERT INTO cluster_nodes (node_id, region, address, version, started_at, heartbeat_ms, state, in_flight)
             VALUES ($1, $2, $3, $4, $5, NOW_MS, $6, $7)
             ON DUPLICATE KEY UPDATE region = VALUES(region), address = VALUES(address), version = VALUES(version),
               started_at = VALUES(started_at), heartbeat_ms = VALUES(heartbeat_ms), state = VALUES(state), in_flight = VALUES(in_flight)",
        ))
        .bind(&node.node_id)
        .bind(&node.region)
        .bind(&node.address)
        .bind(&node.version)
        .bind(&node.started_at)
        .bind(&node.state)
        .bind(node.in_flight as i64)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Every node the instance has seen; one whose heartbeat is older than `ttl` shows
    /// (and is recorded) as `gone`.
    pub async fn nodes(&self, ttl: Duration) -> Result<Vec<ClusterNode>> {
        sqlx::query(self.sql("UPDATE cluster_nodes SET state = 'gone' WHERE state <> 'gone' AND heartbeat_ms < NOW_MS - $1"))
            .bind(ttl.as_millis() as i64)
            .execute(&self.pool)
            .await?;
        let rows = sqlx::query(self.sql("SELECT node_id, region, address, version, started_at, heartbeat_ms, state, in_flight FROM cluster_nodes ORDER BY node_id"))
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(ClusterNode {
                    node_id: r.try_get(0)?,
                    region: r.try_get(1)?,
                    address: r.try_get(2)?,
                    version: r.try_get(3)?,
                    started_at: r.try_get(4)?,
                    last_heartbeat_ms: r.try_get(5)?,
                    state: r.try_get(6)?,
                    in_flight: r.try_get::<i64, _>(7)?.max(0) as u64,
                })
            })
            .collect()
    }

    /// Marks a node (`draining`, `gone`) without a heartbeat: a node deregistering
    /// itself, or an operator draining it remotely.
    pub async fn set_node_state(&self, node_id: &str, state: &str) -> Result<bool> {
        let r = sqlx::query(self.sql("UPDATE cluster_nodes SET state = $1 WHERE node_id = $2")).bind(state).bind(node_id).execute(&self.pool).await?;
        Ok(r.rows_affected() == 1)
    }

    /// The state recorded for one node (an operator's `draining` reaches it this way).
    pub async fn node_state(&self, node_id: &str) -> Result<Option<String>> {
        Ok(sqlx::query_scalar(self.sql("SELECT state FROM cluster_nodes WHERE node_id = $1")).bind(node_id).fetch_optional(&self.pool).await?)
    }

    // ---- leases ----

    /// Renews `name` for `holder` if it holds it at `epoch`, else takes it if it is
    /// free or expired (with the next epoch, logged in `lease_epochs`). `sent` is when
    /// this call began, from which the holder's own deadline is counted.
    pub async fn acquire_lease(&self, name: &str, holder: &str, held: Option<u64>, ttl: Duration) -> Result<(Outcome, Option<Held>)> {
        let sent = Instant::now();
        let ttl_ms = ttl.as_millis() as i64;
        let mut tx = self.pool.begin().await?;
        if let Some(epoch) = held {
            let r = sqlx::query(self.sql("UPDATE leases SET expires_ms = NOW_MS + $1 WHERE name = $2 AND holder = $3 AND epoch = $4 AND expires_ms > NOW_MS"))
                .bind(ttl_ms)
                .bind(name)
                .bind(holder)
                .bind(epoch as i64)
                .execute(&mut *tx)
                .await?;
            if r.rows_affected() == 1 {
                tx.commit().await?;
                return Ok((Outcome::Holding { epoch, acquired: false }, Some(Held::new(epoch, sent, ttl))));
            }
        }
        sqlx::query(self.pick(
            "INSERT INTO leases (name, holder, epoch, expires_ms) VALUES ($1, '', 0, 0) ON CONFLICT (name) DO NOTHING",
            "INSERT IGNORE INTO leases (name, holder, epoch, expires_ms) VALUES ($1, '', 0, 0)",
        ))
        .bind(name)
        .execute(&mut *tx)
        .await?;
        let previous: i64 = sqlx::query_scalar(self.sql("SELECT expires_ms FROM leases WHERE name = $1 ROW_LOCK")).bind(name).fetch_one(&mut *tx).await?;
        let taken = sqlx::query(self.sql("UPDATE leases SET holder = $1, epoch = epoch + 1, expires_ms = NOW_MS + $2 WHERE name = $3 AND expires_ms <= NOW_MS"))
            .bind(holder)
            .bind(ttl_ms)
            .bind(name)
            .execute(&mut *tx)
            .await?;
        let row = sqlx::query(self.sql("SELECT holder, epoch FROM leases WHERE name = $1")).bind(name).fetch_one(&mut *tx).await?;
        let (who, epoch): (String, i64) = (row.try_get(0)?, row.try_get(1)?);
        if taken.rows_affected() == 1 {
            sqlx::query(self.sql("INSERT INTO lease_epochs (name, epoch, holder, acquired_ms, previous_expired_ms) VALUES ($1, $2, $3, NOW_MS, $4)"))
                .bind(name)
                .bind(epoch)
                .bind(holder)
                .bind(previous)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            return Ok((Outcome::Holding { epoch: epoch as u64, acquired: true }, Some(Held::new(epoch as u64, sent, ttl))));
        }
        tx.commit().await?;
        Ok((Outcome::HeldBy { holder: who, epoch: epoch as u64 }, None))
    }

    /// Who holds `name` now (unexpired), if anyone.
    pub async fn lease_holder(&self, name: &str) -> Result<Option<String>> {
        let holder: Option<String> =
            sqlx::query_scalar(self.sql("SELECT holder FROM leases WHERE name = $1 AND expires_ms > NOW_MS")).bind(name).fetch_optional(&self.pool).await?;
        Ok(holder.filter(|h| !h.is_empty()))
    }

    /// Gives a lease up (a draining node hands its work over at once).
    pub async fn release_lease(&self, name: &str, holder: &str, epoch: u64) -> Result<()> {
        sqlx::query(self.sql("UPDATE leases SET expires_ms = 0 WHERE name = $1 AND holder = $2 AND epoch = $3"))
            .bind(name)
            .bind(holder)
            .bind(epoch as i64)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Every acquisition of `name`, oldest first.
    pub async fn lease_epochs(&self, name: &str) -> Result<Vec<LeaseEpoch>> {
        let rows = sqlx::query(self.sql("SELECT epoch, holder, acquired_ms, previous_expired_ms FROM lease_epochs WHERE name = $1 ORDER BY epoch"))
            .bind(name)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| Ok(LeaseEpoch { epoch: r.try_get::<i64, _>(0)? as u64, holder: r.try_get(1)?, acquired_ms: r.try_get(2)?, previous_expired_ms: r.try_get(3)? }))
            .collect()
    }

    /// The feed's pruning, fenced by a lease: it deletes only if `holder` still holds
    /// `name` at `epoch`, checked under a lock on the lease row in the same
    /// transaction; otherwise [`ControlError::StaleEpoch`] and nothing is written.
    pub async fn fenced_prune(&self, name: &str, holder: &str, epoch: u64, older_than: Duration) -> Result<u64> {
        let mut tx = self.pool.begin().await?;
        let current: Option<i64> = sqlx::query_scalar(self.sql("SELECT epoch FROM leases WHERE name = $1 AND holder = $2 AND expires_ms > NOW_MS SHARE_LOCK"))
            .bind(name)
            .bind(holder)
            .fetch_optional(&mut *tx)
            .await?;
        if current != Some(epoch as i64) {
            tx.rollback().await?;
            return Err(ControlError::StaleEpoch { name: name.into(), stale: epoch });
        }
        let r = sqlx::query(self.sql("DELETE FROM control_changes WHERE at_ms < NOW_MS - $1")).bind(older_than.as_millis() as i64).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(r.rows_affected())
    }
}

fn rollout_row(r: &AnyRow) -> Result<StoredRollout> {
    Ok(StoredRollout {
        rollout_id: r.try_get(0)?,
        route: r.try_get(1)?,
        revision: r.try_get::<i64, _>(2)? as u64,
        active: r.try_get::<i64, _>(3)? != 0,
        body: r.try_get(4)?,
        updated_at: r.try_get(5)?,
    })
}

fn json_list(s: &str) -> Result<Vec<String>> {
    serde_json::from_str(s).map_err(|e| corrupt(format!("a stored list is not JSON ({e})")))
}

fn capability_row(r: &AnyRow) -> Result<CapabilityVersion> {
    Ok(CapabilityVersion {
        name: r.try_get(0)?,
        version: r.try_get(1)?,
        digest: r.try_get(2)?,
        size_bytes: r.try_get::<i64, _>(3)?.max(0) as u64,
        exports: serde_json::from_str(&r.try_get::<String, _>(4)?).map_err(|e| corrupt(format!("stored exports are not JSON ({e})")))?,
        imports: json_list(&r.try_get::<String, _>(5)?)?,
        created_at: r.try_get(6)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mysql_gets_positional_placeholders_and_every_dialect_its_clock() {
        let sql = "UPDATE leases SET expires_ms = NOW_MS + $1 WHERE name = $2";
        assert_eq!(translate(Dialect::MySql, sql), "UPDATE leases SET expires_ms = CAST(UNIX_TIMESTAMP(NOW(3)) * 1000 AS SIGNED) + ? WHERE name = ?");
        assert!(translate(Dialect::Postgres, sql).contains("clock_timestamp()"));
        assert!(translate(Dialect::Postgres, sql).ends_with("name = $2"));
        assert!(translate(Dialect::Sqlite, sql).contains("julianday('now')"));
        assert_eq!(translate(Dialect::MySql, "SELECT 1 FROM t WHERE a = $1 SHARE_LOCK"), "SELECT 1 FROM t WHERE a = ? LOCK IN SHARE MODE");
        assert_eq!(translate(Dialect::Sqlite, "SELECT 1 FROM t WHERE a = $1 SHARE_LOCK"), "SELECT 1 FROM t WHERE a = $1");
    }
}
