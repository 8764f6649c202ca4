//! Wiring bindings: which adapters serve each tenant (spec §4.2, §4.3).
//!
//! Shared tenants use one SQLite file and one blob root, with the tenant id leading
//! every key and path; dedicated tenants get their own file and root. The capability
//! binary and the host code are identical in both; only the `PortSet` differs.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use runplane_adapters::object_blobs::ObjectBlobStore;
use runplane_adapters::memory_bus::InProcessBus;
use runplane_adapters::sqlite::SqliteStore;
use runplane_ports::{ConfigStore, PortSet, Telemetry};
use tokio::sync::Mutex;

use crate::config::{Bindings, Mode};
use crate::error::ApiError;

/// Resolves and caches each tenant's `PortSet`.
pub struct BindingResolver {
    data_dir: PathBuf,
    bindings: Bindings,
    bus: Arc<InProcessBus>,
    config: Arc<dyn ConfigStore>,
    telemetry: Arc<dyn Telemetry>,
    shared: tokio::sync::OnceCell<PortSet>,
    dedicated: Mutex<HashMap<String, PortSet>>,
    /// Identifies the binding set in audit events.
    version: String,
}

impl BindingResolver {
    pub fn new(
        data_dir: PathBuf,
        bindings: Bindings,
        bus: Arc<InProcessBus>,
        config: Arc<dyn ConfigStore>,
        telemetry: Arc<dyn Telemetry>,
    ) -> Self {
        let version = runplane_cjson::hash_serialize(&bindings)
            .map(|h| format!("sha256:{}", &h[..16]))
            .unwrap_or_else(|_| "unknown".into());
        BindingResolver {
            data_dir,
            bindings,
            bus,
            config,
            telemetry,
            shared: tokio::sync::OnceCell::new(),
            dedicated: Mutex::new(HashMap::new()),
            version,
        }
    }

    /// The binding set's version (a digest of which adapter serves which port).
    pub fn version(&self) -> &str {
        &self.version
    }

    pub fn bus(&self) -> Arc<InProcessBus> {
        self.bus.clone()
    }

    /// Opens (and provisions on first use) the stores of `tenant` in `mode`.
    pub async fn ports(&self, tenant: &str, mode: Mode) -> Result<PortSet, ApiError> {
        match mode {
            Mode::Shared => self
                .shared
                .get_or_try_init(|| self.open(self.data_dir.join("shared")))
                .await
                .cloned(),
            Mode::Dedicated => {
                let mut map = self.dedicated.lock().await;
                if let Some(p) = map.get(tenant) {
                    return Ok(p.clone());
                }
                let ports = self.open(self.data_dir.join("tenants").join(tenant)).await?;
                map.insert(tenant.to_owned(), ports.clone());
                Ok(ports)
            }
        }
    }

    /// Forgets a dedicated tenant's stores (after deletion).
    pub async fn forget(&self, tenant: &str) {
        self.dedicated.lock().await.remove(tenant);
    }

    async fn open(&self, dir: PathBuf) -> Result<PortSet, ApiError> {
        debug_assert_eq!(self.bindings, Bindings::default(), "only the embedded adapters exist in this build");
        let sql = SqliteStore::open(&dir.join("ports.db"))
            .await
            .map_err(|e| ApiError::unavailable(format!("could not open the tenant's SQLite store: {e}")))?;
        let blobs = ObjectBlobStore::open(&dir.join("blobs"))
            .map_err(|e| ApiError::unavailable(format!("could not open the tenant's blob store: {e}")))?;
        let sql = Arc::new(sql);
        Ok(PortSet {
            records: sql.clone(),
            kv: sql.clone(),
            events: sql.clone(),
            secrets: sql,
            messaging: self.bus.clone(),
            blobs: Arc::new(blobs),
            config: self.config.clone(),
            telemetry: self.telemetry.clone(),
        })
    }
}
