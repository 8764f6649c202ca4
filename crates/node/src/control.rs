//! The node's control store (SQLite `control.db` under the data dir): tenants, API
//! keys, capabilities and deployments. Component bytes live beside it, content
//! addressed: `components/<sha256>.wasm`.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
use sqlx::Row;
use utoipa::ToSchema;

use crate::config::Mode;
use crate::error::ApiError;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// A tenant as the admin API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Tenant {
    pub id: String,
    /// `shared` or `dedicated`.
    pub mode: Mode,
    /// `active` or `suspended`.
    pub status: String,
    pub tier: String,
    pub created_at: String,
    /// `pending`, `ready` or `failed` (spec §4.4): traffic is served only when `ready`.
    pub provisioning: String,
    /// Why provisioning stopped, when it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provisioning_error: Option<String>,
}

/// A pushed capability version.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CapabilityVersion {
    pub name: String,
    pub version: String,
    pub digest: String,
    pub size_bytes: u64,
    #[schema(value_type = Object)]
    pub exports: serde_json::Value,
    pub imports: Vec<String>,
    pub created_at: String,
}

/// A capability version made live on a route.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Deployment {
    /// Tenant traffic reaches it at `/apps/{route}/…`.
    pub route: String,
    pub capability: String,
    pub version: String,
    pub digest: String,
    /// Hosts outbound HTTP may reach (`host`, `host:port`, `*.domain`).
    pub allow_hosts: Vec<String>,
    /// Topics delivered to the capability's message handler.
    pub subscriptions: Vec<String>,
    /// The feature flag gating the route: tenants for whom it is off get 403.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flag: Option<String>,
    pub created_at: String,
}

/// One stored configuration revision.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ConfigVersionRow {
    pub version: u64,
    pub scope: String,
    /// The whole set of this scope at this revision (canonical JSON of string values).
    pub content: String,
    pub created_at: String,
    pub actor: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// For a rollback: the revision whose content this one restores.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restored_from: Option<u64>,
}

#[derive(Clone)]
pub struct ControlStore {
    pool: SqlitePool,
    components: PathBuf,
}

fn db(e: sqlx::Error) -> ApiError {
    ApiError::unavailable(format!("control store: {e}"))
}

impl ControlStore {
    pub async fn open(data_dir: &Path) -> Result<Self, anyhow::Error> {
        std::fs::create_dir_all(data_dir.join("components"))?;
        let options = SqliteConnectOptions::from_str("sqlite:")?
            .filename(data_dir.join("control.db"))
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(5));
        let pool = SqlitePoolOptions::new().max_connections(4).connect_with(options).await?;
        MIGRATOR.run(&pool).await?;
        Ok(ControlStore { pool, components: data_dir.join("components") })
    }

    pub async fn setting(&self, key: &str) -> Result<Option<String>, ApiError> {
        sqlx::query_scalar("SELECT value FROM settings WHERE key = ?1").bind(key).fetch_optional(&self.pool).await.map_err(db)
    }

    pub async fn set_setting(&self, key: &str, value: &str) -> Result<(), ApiError> {
        sqlx::query("INSERT INTO settings (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = excluded.value")
            .bind(key)
            .bind(value)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(())
    }

    pub async fn tenants(&self) -> Result<Vec<Tenant>, ApiError> {
        let rows = sqlx::query("SELECT id, mode, status, tier, created_at, provisioning, provisioning_error FROM tenants ORDER BY id")
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
        Ok(rows
            .into_iter()
            .map(|r| Tenant {
                id: r.get(0),
                mode: if r.get::<String, _>(1) == "dedicated" { Mode::Dedicated } else { Mode::Shared },
                status: r.get(2),
                tier: r.get(3),
                created_at: r.get(4),
                provisioning: r.get(5),
                provisioning_error: r.get(6),
            })
            .collect())
    }

    /// Inserts a tenant; `Ok(false)` if the id is taken.
    pub async fn insert_tenant(&self, t: &Tenant) -> Result<bool, ApiError> {
        let r = sqlx::query("INSERT INTO tenants (id, mode, status, tier, created_at, provisioning) VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (id) DO NOTHING")
            .bind(&t.id)
            .bind(t.mode.as_str())
            .bind(&t.status)
            .bind(&t.tier)
            .bind(&t.created_at)
            .bind(&t.provisioning)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(r.rows_affected() == 1)
    }

    pub async fn set_tenant_status(&self, id: &str, status: &str) -> Result<bool, ApiError> {
        let r = sqlx::query("UPDATE tenants SET status = ?2 WHERE id = ?1")
            .bind(id)
            .bind(status)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(r.rows_affected() == 1)
    }

    pub async fn set_provisioning(&self, id: &str, state: &str, error: Option<&str>) -> Result<(), ApiError> {
        sqlx::query("UPDATE tenants SET provisioning = ?2, provisioning_error = ?3 WHERE id = ?1")
            .bind(id)
            .bind(state)
            .bind(error)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(())
    }

    pub async fn delete_tenant(&self, id: &str) -> Result<bool, ApiError> {
        let r = sqlx::query("DELETE FROM tenants WHERE id = ?1").bind(id).execute(&self.pool).await.map_err(db)?;
        Ok(r.rows_affected() == 1)
    }

    pub async fn insert_key(&self, key_hash: &str, key_id: &str, tenant: &str, created_at: &str) -> Result<(), ApiError> {
        sqlx::query("INSERT INTO api_keys (key_hash, key_id, tenant_id, created_at) VALUES (?1, ?2, ?3, ?4)")
            .bind(key_hash)
            .bind(key_id)
            .bind(tenant)
            .bind(created_at)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(())
    }

    /// Every key: `(key_hash, key_id, tenant_id)`.
    pub async fn keys(&self) -> Result<Vec<(String, String, String)>, ApiError> {
        let rows = sqlx::query("SELECT key_hash, key_id, tenant_id FROM api_keys").fetch_all(&self.pool).await.map_err(db)?;
        Ok(rows.into_iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect())
    }

    /// Stores the component bytes under their digest (idempotent).
    pub async fn store_component(&self, digest: &str, bytes: &[u8]) -> Result<(), ApiError> {
        let path = self.component_path(digest);
        if tokio::fs::try_exists(&path).await.unwrap_or(false) {
            return Ok(());
        }
        let tmp = path.with_extension("tmp");
        tokio::fs::write(&tmp, bytes).await.map_err(|e| ApiError::unavailable(format!("component store: {e}")))?;
        tokio::fs::rename(&tmp, &path).await.map_err(|e| ApiError::unavailable(format!("component store: {e}")))?;
        Ok(())
    }

    /// Reads component bytes and checks they still hash to `digest` (fail closed).
    pub async fn component(&self, digest: &str) -> Result<Vec<u8>, ApiError> {
        let bytes = tokio::fs::read(self.component_path(digest))
            .await
            .map_err(|e| ApiError::unavailable(format!("component {digest} is missing from the component store: {e}")))?;
        let actual = runplane_cjson::sha256_hex(&bytes);
        if actual != digest {
            return Err(ApiError::unavailable(format!(
                "component store corruption: {digest}.wasm hashes to {actual}; push the capability again"
            )));
        }
        Ok(bytes)
    }

    fn component_path(&self, digest: &str) -> PathBuf {
        self.components.join(format!("{digest}.wasm"))
    }

    /// Inserts a capability version; `Ok(false)` if that name@version exists already.
    pub async fn insert_capability(&self, c: &CapabilityVersion) -> Result<bool, ApiError> {
        let r = sqlx::query(
            "INSERT INTO capabilities (name, version, digest, size_bytes, exports, imports, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (name, version) DO NOTHING",
        )
        .bind(&c.name)
        .bind(&c.version)
        .bind(&c.digest)
        .bind(c.size_bytes as i64)
        .bind(c.exports.to_string())
        .bind(serde_json::to_string(&c.imports).unwrap_or_default())
        .bind(&c.created_at)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(r.rows_affected() == 1)
    }

    pub async fn capabilities(&self) -> Result<Vec<CapabilityVersion>, ApiError> {
        let rows = sqlx::query("SELECT name, version, digest, size_bytes, exports, imports, created_at FROM capabilities ORDER BY name, created_at, version")
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
        Ok(rows
            .into_iter()
            .map(|r| CapabilityVersion {
                name: r.get(0),
                version: r.get(1),
                digest: r.get(2),
                size_bytes: r.get::<i64, _>(3) as u64,
                exports: serde_json::from_str(&r.get::<String, _>(4)).unwrap_or(serde_json::Value::Null),
                imports: serde_json::from_str(&r.get::<String, _>(5)).unwrap_or_default(),
                created_at: r.get(6),
            })
            .collect())
    }

    pub async fn capability(&self, name: &str, version: &str) -> Result<Option<CapabilityVersion>, ApiError> {
        Ok(self.capabilities().await?.into_iter().find(|c| c.name == name && c.version == version))
    }

    pub async fn upsert_deployment(&self, d: &Deployment) -> Result<(), ApiError> {
        sqlx::query(
            "INSERT INTO deployments (route, capability, version, digest, allow_hosts, subscriptions, created_at, flag)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
             ON CONFLICT (route) DO UPDATE SET capability = excluded.capability, version = excluded.version,
               digest = excluded.digest, allow_hosts = excluded.allow_hosts, subscriptions = excluded.subscriptions,
               created_at = excluded.created_at, flag = excluded.flag",
        )
        .bind(&d.route)
        .bind(&d.capability)
        .bind(&d.version)
        .bind(&d.digest)
        .bind(serde_json::to_string(&d.allow_hosts).unwrap_or_default())
        .bind(serde_json::to_string(&d.subscriptions).unwrap_or_default())
        .bind(&d.created_at)
        .bind(&d.flag)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(())
    }

    pub async fn delete_deployment(&self, route: &str) -> Result<bool, ApiError> {
        let r = sqlx::query("DELETE FROM deployments WHERE route = ?1").bind(route).execute(&self.pool).await.map_err(db)?;
        Ok(r.rows_affected() == 1)
    }

    pub async fn deployments(&self) -> Result<Vec<Deployment>, ApiError> {
        let rows = sqlx::query("SELECT route, capability, version, digest, allow_hosts, subscriptions, created_at, flag FROM deployments ORDER BY route")
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
        Ok(rows
            .into_iter()
            .map(|r| Deployment {
                route: r.get(0),
                capability: r.get(1),
                version: r.get(2),
                digest: r.get(3),
                allow_hosts: serde_json::from_str(&r.get::<String, _>(4)).unwrap_or_default(),
                subscriptions: serde_json::from_str(&r.get::<String, _>(5)).unwrap_or_default(),
                created_at: r.get(6),
                flag: r.get(7),
            })
            .collect())
    }

    /// Every tenant's own quota (tenants without one use their tier's defaults).
    pub async fn quotas(&self) -> Result<Vec<(String, String)>, ApiError> {
        let rows = sqlx::query("SELECT tenant_id, quota FROM tenant_quotas").fetch_all(&self.pool).await.map_err(db)?;
        Ok(rows.into_iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    pub async fn set_quota(&self, tenant: &str, quota_json: &str, at: &str) -> Result<(), ApiError> {
        sqlx::query(
            "INSERT INTO tenant_quotas (tenant_id, quota, updated_at) VALUES (?1, ?2, ?3) \
             ON CONFLICT (tenant_id) DO UPDATE SET quota = excluded.quota, updated_at = excluded.updated_at",
        )
        .bind(tenant)
        .bind(quota_json)
        .bind(at)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(())
    }

    /// Metered disk bytes per tenant.
    pub async fn disk_usage(&self) -> Result<Vec<(String, i64)>, ApiError> {
        let rows = sqlx::query("SELECT tenant_id, disk_bytes FROM tenant_usage").fetch_all(&self.pool).await.map_err(db)?;
        Ok(rows.into_iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    /// Writes several tenants' disk usage in one transaction.
    pub async fn set_disk_usage(&self, usage: &[(String, i64)]) -> Result<(), ApiError> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        for (tenant, bytes) in usage {
            sqlx::query(
                "INSERT INTO tenant_usage (tenant_id, disk_bytes) VALUES (?1, ?2) \
                 ON CONFLICT (tenant_id) DO UPDATE SET disk_bytes = excluded.disk_bytes",
            )
            .bind(tenant)
            .bind(bytes)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        }
        tx.commit().await.map_err(db)
    }

    pub async fn insert_contract(&self, id: &str, route: &str, contract_json: &str, at: &str) -> Result<bool, ApiError> {
        let r = sqlx::query("INSERT INTO contracts (contract_id, route, contract, created_at) VALUES (?1, ?2, ?3, ?4) ON CONFLICT (contract_id) DO NOTHING")
            .bind(id)
            .bind(route)
            .bind(contract_json)
            .bind(at)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(r.rows_affected() == 1)
    }

    /// `(contract_id, route, contract JSON)` of every registered contract.
    pub async fn contracts(&self) -> Result<Vec<(String, String, String)>, ApiError> {
        let rows = sqlx::query("SELECT contract_id, route, contract FROM contracts ORDER BY contract_id").fetch_all(&self.pool).await.map_err(db)?;
        Ok(rows.into_iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect())
    }

    /// Every document of `kind`, `(id, JSON body)`, sorted by id.
    pub async fn documents(&self, kind: &str) -> Result<Vec<(String, String)>, ApiError> {
        let rows = sqlx::query("SELECT id, body FROM documents WHERE kind = ?1 ORDER BY id").bind(kind).fetch_all(&self.pool).await.map_err(db)?;
        Ok(rows.into_iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    /// Creates or replaces one document.
    pub async fn put_document(&self, kind: &str, id: &str, body: &str, at: &str) -> Result<(), ApiError> {
        sqlx::query(
            "INSERT INTO documents (kind, id, body, updated_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (kind, id) DO UPDATE SET body = excluded.body, updated_at = excluded.updated_at",
        )
        .bind(kind)
        .bind(id)
        .bind(body)
        .bind(at)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(())
    }

    /// Deletes one document; `false` if there was none.
    pub async fn delete_document(&self, kind: &str, id: &str) -> Result<bool, ApiError> {
        let r = sqlx::query("DELETE FROM documents WHERE kind = ?1 AND id = ?2").bind(kind).bind(id).execute(&self.pool).await.map_err(db)?;
        Ok(r.rows_affected() == 1)
    }

    /// Appends a configuration revision and returns its number.
    pub async fn insert_config_version(&self, v: &ConfigVersionRow) -> Result<u64, ApiError> {
        let version: i64 = sqlx::query_scalar(
            "INSERT INTO config_versions (version, scope, content, created_at, actor, reason, restored_from)
             SELECT COALESCE(MAX(version), 0) + 1, ?1, ?2, ?3, ?4, ?5, ?6 FROM config_versions
             RETURNING version",
        )
        .bind(&v.scope)
        .bind(&v.content)
        .bind(&v.created_at)
        .bind(&v.actor)
        .bind(&v.reason)
        .bind(v.restored_from.map(|n| n as i64))
        .fetch_one(&self.pool)
        .await
        .map_err(db)?;
        Ok(version as u64)
    }

    /// Every configuration revision, oldest first.
    pub async fn config_versions(&self) -> Result<Vec<ConfigVersionRow>, ApiError> {
        let rows = sqlx::query("SELECT version, scope, content, created_at, actor, reason, restored_from FROM config_versions ORDER BY version")
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
        Ok(rows
            .into_iter()
            .map(|r| ConfigVersionRow {
                version: r.get::<i64, _>(0) as u64,
                scope: r.get(1),
                content: r.get(2),
                created_at: r.get(3),
                actor: r.get(4),
                reason: r.get(5),
                restored_from: r.get::<Option<i64>, _>(6).map(|n| n as u64),
            })
            .collect())
    }

    pub async fn health(&self) -> bool {
        sqlx::query("SELECT 1").execute(&self.pool).await.is_ok()
    }
}
