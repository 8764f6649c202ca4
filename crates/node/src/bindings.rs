//! Wiring bindings: which adapters serve each tenant (spec §4.2-§4.4).
//!
//! `runplane.toml` names backends (`[backends.*]` plus the built-ins `sqlite`,
//! `in-process`, `filesystem`), binds each port to one (`[bindings]`) and may override
//! that per tenant (`[tenant_bindings.<tenant>]`). A tenant in `shared` mode uses the
//! backend's shared database / prefix, where the adapter keeps tenants apart; a tenant in
//! `dedicated` mode gets its own database (`<database>_t_<tenant>`) or prefix
//! (`tenants/<tenant>`). Messaging is kept apart by the adapter's `<prefix>.<tenant>.`
//! subjects; a tenant that needs its own broker, account, vhost or prefix is bound to a
//! messaging backend of its own. Capability binaries and host code are identical either
//! way: only the `PortSet` differs.
//!
//! Opening is cheap and lazy (pools connect on first use, so the node serves tenants
//! whose backends are up while others are down); [`BindingResolver::provision`] does
//! the work that needs the backend: create the database, run migrations, check health.

use std::collections::HashMap;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use runplane_adapters::amqp_bus::{AmqpBus, AmqpSettings};
use runplane_adapters::memory_bus::InProcessBus;
use runplane_adapters::mysql::{self, MySqlSettings, MySqlStore};
use runplane_adapters::nats_bus::{NatsBus, NatsSettings};
use runplane_adapters::object_blobs::{ObjectBlobStore, S3Settings};
use runplane_adapters::postgres::{self, PgSettings, PgStore};
use runplane_adapters::sqlite::SqliteStore;
use runplane_ports::{
    ConfigStore, EventStore, KeyValueStore, MessageBus, PortError, PortSet, RecordStore, SealedSecretStore,
    Telemetry,
};
use runplane_secrets::{EnvelopeSecrets, SharedKeyRing};
use tokio::sync::Mutex;

use crate::config::{Backend, Bindings, Mode, NodeConfig, Port};
use crate::error::ApiError;

/// Where a tenant's data lives inside a backend.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Scope {
    /// The backend's shared database or prefix, tenants kept apart by the adapter.
    Shared,
    /// The tenant's own database or prefix.
    Tenant(String),
}

impl Scope {
    fn of(tenant: &str, mode: Mode) -> Self {
        match mode {
            Mode::Shared => Scope::Shared,
            Mode::Dedicated => Scope::Tenant(tenant.to_owned()),
        }
    }
}

/// One opened SQL store, serving records, key-value, events and secrets.
#[derive(Clone)]
enum SqlStore {
    Sqlite(Arc<SqliteStore>),
    Postgres(Arc<PgStore>, PgSettings),
    MySql(Arc<MySqlStore>, MySqlSettings),
}

impl SqlStore {
    fn records(&self) -> Arc<dyn RecordStore> {
        match self {
            SqlStore::Sqlite(s) => s.clone(),
            SqlStore::Postgres(s, _) => s.clone(),
            SqlStore::MySql(s, _) => s.clone(),
        }
    }
    fn kv(&self) -> Arc<dyn KeyValueStore> {
        match self {
            SqlStore::Sqlite(s) => s.clone(),
            SqlStore::Postgres(s, _) => s.clone(),
            SqlStore::MySql(s, _) => s.clone(),
        }
    }
    fn events(&self) -> Arc<dyn EventStore> {
        match self {
            SqlStore::Sqlite(s) => s.clone(),
            SqlStore::Postgres(s, _) => s.clone(),
            SqlStore::MySql(s, _) => s.clone(),
        }
    }
    fn sealed_secrets(&self) -> Arc<dyn SealedSecretStore> {
        match self {
            SqlStore::Sqlite(s) => s.clone(),
            SqlStore::Postgres(s, _) => s.clone(),
            SqlStore::MySql(s, _) => s.clone(),
        }
    }

    /// Creates the database and schema if needed, then checks the store answers.
    async fn provision(&self) -> Result<(), PortError> {
        match self {
            // Opening ran the migrations.
            SqlStore::Sqlite(s) => s.health().await,
            SqlStore::Postgres(s, settings) => {
                postgres::provision(settings).await?;
                s.health().await
            }
            SqlStore::MySql(s, settings) => {
                mysql::provision(settings).await?;
                s.health().await
            }
        }
    }
}

/// Resolves and caches each tenant's `PortSet`.
pub struct BindingResolver {
    data_dir: PathBuf,
    backends: std::collections::BTreeMap<String, Backend>,
    bindings: Bindings,
    tenant_bindings: std::collections::BTreeMap<String, Bindings>,
    timeout: Duration,
    config: Arc<dyn ConfigStore>,
    telemetry: Arc<dyn Telemetry>,
    /// The key-encryption keys every tenant's secrets are wrapped under.
    keyring: SharedKeyRing,
    sql: Mutex<HashMap<(String, Scope), SqlStore>>,
    blobs: Mutex<HashMap<(String, Scope), Arc<ObjectBlobStore>>>,
    /// One bus per messaging backend name, whatever the tenants' modes: a backend's
    /// prefix (or account, vhost) is the place, and tenants bound to it share it.
    buses: Mutex<HashMap<String, Bus>>,
    ports: Mutex<HashMap<String, PortSet>>,
}

/// One opened message bus.
#[derive(Clone)]
enum Bus {
    InProcess(Arc<InProcessBus>),
    Nats(Arc<NatsBus>),
    Amqp(Arc<AmqpBus>),
}

impl Bus {
    fn port(&self) -> Arc<dyn MessageBus> {
        match self {
            Bus::InProcess(b) => b.clone(),
            Bus::Nats(b) => b.clone(),
            Bus::Amqp(b) => b.clone(),
        }
    }

    /// Checks the broker answers (and, on NATS, that the stream exists).
    async fn health(&self) -> Result<(), PortError> {
        match self {
            Bus::InProcess(_) => Ok(()),
            Bus::Nats(b) => b.health().await,
            Bus::Amqp(b) => b.health().await,
        }
    }
}

/// A digest of what serves each port (kinds, databases, buckets; never credentials):
/// identifies a binding set.
pub fn binding_digest(config: &NodeConfig) -> String {
    let used = |b: &Bindings| -> serde_json::Value {
        Port::ALL
            .iter()
            .map(|p| {
                let name = b.get(*p);
                let public = config.backends.get(name).map(Backend::public).unwrap_or_default();
                (p.key().to_owned(), serde_json::json!({"backend": name, "is": public}))
            })
            .collect::<serde_json::Map<_, _>>()
            .into()
    };
    let doc = serde_json::json!({
        "default": used(&config.bindings),
        "tenants": config.tenant_bindings.iter().map(|(t, b)| (t.clone(), used(b))).collect::<serde_json::Map<_, _>>(),
    });
    runplane_cjson::hash(&doc).unwrap_or_default()
}

impl BindingResolver {
    /// Builds the resolver and opens the instance's message bus (connected in the
    /// background), so that bad settings for it stop the start. Tenants' own buses are
    /// opened on first use.
    pub async fn new(
        config: &NodeConfig,
        config_store: Arc<dyn ConfigStore>,
        telemetry: Arc<dyn Telemetry>,
        keyring: SharedKeyRing,
    ) -> anyhow::Result<Self> {
        let resolver = BindingResolver {
            keyring,
            data_dir: config.data_dir.clone(),
            backends: config.backends.clone(),
            bindings: config.bindings.clone(),
            tenant_bindings: config.tenant_bindings.clone(),
            timeout: config.backend_timeout,
            config: config_store,
            telemetry,
            sql: Mutex::new(HashMap::new()),
            blobs: Mutex::new(HashMap::new()),
            buses: Mutex::new(HashMap::new()),
            ports: Mutex::new(HashMap::new()),
        };
        resolver.bus(&config.bindings.messaging).await.map_err(|e| anyhow::anyhow!("{}", e.message))?;
        Ok(resolver)
    }

    fn bindings_of(&self, tenant: &str) -> &Bindings {
        self.tenant_bindings.get(tenant).unwrap_or(&self.bindings)
    }

    /// The name of the messaging backend `tenant` is bound to.
    pub fn messaging_backend_of(&self, tenant: &str) -> &str {
        &self.bindings_of(tenant).messaging
    }

    /// Every messaging backend some tenant is bound to (the instance's and the
    /// overrides'), each once: where subscriptions must listen.
    pub fn messaging_backends(&self) -> Vec<String> {
        let names: std::collections::BTreeSet<&String> =
            std::iter::once(&self.bindings.messaging).chain(self.tenant_bindings.values().map(|b| &b.messaging)).collect();
        names.into_iter().cloned().collect()
    }

    /// The message bus of the messaging backend `name` (opened on first use; network
    /// buses connect in the background).
    pub async fn bus_named(&self, name: &str) -> Result<Arc<dyn MessageBus>, ApiError> {
        Ok(self.bus(name).await?.port())
    }

    async fn bus(&self, name: &str) -> Result<Bus, ApiError> {
        let mut open = self.buses.lock().await;
        if let Some(b) = open.get(name) {
            return Ok(b.clone());
        }
        let unusable = |e: PortError| ApiError::unavailable(format!("messaging backend {name:?}: {e}"));
        let bus = match self.backends.get(name) {
            Some(Backend::InProcess) => Bus::InProcess(Arc::new(InProcessBus::new())),
            Some(Backend::Nats { url, prefix, max_age_secs, max_bytes }) => Bus::Nats(Arc::new(
                NatsBus::connect(NatsSettings {
                    url: url.clone(),
                    prefix: prefix.clone(),
                    timeout: self.timeout,
                    max_age: Duration::from_secs(*max_age_secs),
                    max_bytes: *max_bytes,
                })
                .await
                .map_err(unusable)?,
            )),
            Some(Backend::RabbitMq { url, prefix }) => Bus::Amqp(Arc::new(
                AmqpBus::new(AmqpSettings { url: url.clone(), prefix: prefix.clone(), timeout: self.timeout }).map_err(unusable)?,
            )),
            Some(other) => {
                return Err(ApiError::unavailable(format!("backend {name:?} ({}) cannot serve messaging", other.kind())));
            }
            None => return Err(ApiError::unavailable(format!("backend {name:?} is not configured"))),
        };
        open.insert(name.to_owned(), bus.clone());
        Ok(bus)
    }

    /// The stores of `tenant` in `mode` (opened on first use; no backend I/O for the
    /// network backends, whose pools connect lazily).
    pub async fn ports(&self, tenant: &str, mode: Mode) -> Result<PortSet, ApiError> {
        if let Some(p) = self.ports.lock().await.get(tenant) {
            return Ok(p.clone());
        }
        let scope = Scope::of(tenant, mode);
        let b = self.bindings_of(tenant).clone();
        let ports = PortSet {
            records: self.sql(&b.records, &scope).await?.records(),
            kv: self.sql(&b.kv, &scope).await?.kv(),
            events: self.sql(&b.events, &scope).await?.events(),
            secrets: Arc::new(EnvelopeSecrets::new(self.sql(&b.secrets, &scope).await?.sealed_secrets(), self.keyring.clone())),
            messaging: self.bus(&b.messaging).await?.port(),
            blobs: self.blob_store(&b.blobs, &scope).await?,
            config: self.config.clone(),
            telemetry: self.telemetry.clone(),
        };
        self.ports.lock().await.insert(tenant.to_owned(), ports.clone());
        Ok(ports)
    }

    /// Makes everything `tenant` needs exist and answer: databases, schemas and
    /// migrations, blob roots, the tenant's bus. Idempotent; safe to re-run after a failure.
    pub async fn provision(&self, tenant: &str, mode: Mode) -> Result<(), ApiError> {
        let scope = Scope::of(tenant, mode);
        let b = self.bindings_of(tenant).clone();
        let mut done = Vec::new();
        for port in [Port::Records, Port::Kv, Port::Events, Port::Secrets] {
            let name = b.get(port).to_owned();
            if done.contains(&name) {
                continue;
            }
            let store = self.sql(&name, &scope).await?;
            store
                .provision()
                .await
                .map_err(|e| ApiError::unavailable(format!("provisioning backend {name:?} for {}: {e}", port.key())))?;
            done.push(name);
        }
        self.blob_store(&b.blobs, &scope)
            .await?
            .health()
            .await
            .map_err(|e| ApiError::unavailable(format!("provisioning blob backend {:?}: {e}", b.blobs)))?;
        self.bus(&b.messaging)
            .await?
            .health()
            .await
            .map_err(|e| ApiError::unavailable(format!("provisioning messaging backend {:?}: {e}", b.messaging)))?;
        Ok(())
    }

    /// Forgets a tenant's stores (after deletion).
    pub async fn forget(&self, tenant: &str) {
        self.ports.lock().await.remove(tenant);
        let scope = Scope::Tenant(tenant.to_owned());
        self.sql.lock().await.retain(|(_, s), _| *s != scope);
        self.blobs.lock().await.retain(|(_, s), _| *s != scope);
    }

    async fn sql(&self, name: &str, scope: &Scope) -> Result<SqlStore, ApiError> {
        let key = (name.to_owned(), scope.clone());
        let mut open = self.sql.lock().await;
        if let Some(s) = open.get(&key) {
            return Ok(s.clone());
        }
        let backend = self
            .backends
            .get(name)
            .ok_or_else(|| ApiError::unavailable(format!("backend {name:?} is not configured")))?;
        let store = match backend {
            Backend::Sqlite => {
                let dir = match scope {
                    Scope::Shared => self.data_dir.join("shared"),
                    Scope::Tenant(t) => self.data_dir.join("tenants").join(t),
                };
                let s = SqliteStore::open(&dir.join("ports.db"))
                    .await
                    .map_err(|e| ApiError::unavailable(format!("could not open the tenant's SQLite store: {e}")))?;
                SqlStore::Sqlite(Arc::new(s))
            }
            Backend::Postgres { url, database, runtime_role, runtime_password, max_connections } => {
                let admin = sqlx::postgres::PgConnectOptions::from_str(url)
                    .map_err(|_| ApiError::unavailable(format!("backend {name:?}: the url is not a valid PostgreSQL URL")))?;
                let settings = PgSettings {
                    admin,
                    database: scoped_database(database, scope),
                    runtime_role: runtime_role.clone(),
                    runtime_password: runtime_password.clone(),
                    timeout: self.timeout,
                    max_connections: *max_connections,
                };
                SqlStore::Postgres(Arc::new(PgStore::connect_lazy(&settings)), settings)
            }
            Backend::MySql { url, database, max_connections } => {
                let server = sqlx::mysql::MySqlConnectOptions::from_str(url)
                    .map_err(|_| ApiError::unavailable(format!("backend {name:?}: the url is not a valid MySQL URL")))?;
                let settings = MySqlSettings {
                    server,
                    database: scoped_database(database, scope),
                    timeout: self.timeout,
                    max_connections: *max_connections,
                };
                SqlStore::MySql(Arc::new(MySqlStore::connect_lazy(&settings)), settings)
            }
            other => return Err(ApiError::unavailable(format!("backend {name:?} ({}) cannot serve SQL ports", other.kind()))),
        };
        open.insert(key, store.clone());
        Ok(store)
    }

    async fn blob_store(&self, name: &str, scope: &Scope) -> Result<Arc<ObjectBlobStore>, ApiError> {
        let key = (name.to_owned(), scope.clone());
        let mut open = self.blobs.lock().await;
        if let Some(s) = open.get(&key) {
            return Ok(s.clone());
        }
        let (dir, sub) = match scope {
            Scope::Shared => (self.data_dir.join("shared").join("blobs"), "shared".to_owned()),
            Scope::Tenant(t) => (self.data_dir.join("tenants").join(t).join("blobs"), format!("tenants/{t}")),
        };
        let store = Arc::new(self.open_blobs(name, dir, sub)?);
        open.insert(key, store.clone());
        Ok(store)
    }

    /// The store journals are archived to: blob backend `name` (`None`: the built-in
    /// filesystem one), at its own place (`<data_dir>/audit-archive`, or prefix
    /// `audit-archive` in a bucket), apart from every tenant's blobs, so no capability
    /// can reach it.
    pub async fn journal_archive(&self, name: Option<&str>) -> anyhow::Result<Arc<dyn runplane_ports::BlobStore>> {
        let store = self
            .open_blobs(name.unwrap_or("filesystem"), self.data_dir.join("audit-archive"), "audit-archive".into())
            .map_err(|e| anyhow::anyhow!("the journal archive ([audit] archive): {}", e.message))?;
        Ok(Arc::new(store))
    }

    /// Blob backend `name` at `dir` (filesystem) or under prefix `sub` (s3).
    fn open_blobs(&self, name: &str, dir: PathBuf, sub: String) -> Result<ObjectBlobStore, ApiError> {
        match self.backends.get(name) {
            Some(Backend::Filesystem) => ObjectBlobStore::open(&dir).map_err(|e| ApiError::unavailable(format!("could not open the blob store: {e}"))),
            Some(Backend::S3 { bucket, region, endpoint, access_key_id, secret_access_key, prefix }) => {
                let prefix = match prefix {
                    Some(p) if !p.is_empty() => format!("{}/{sub}", p.trim_end_matches('/')),
                    _ => sub,
                };
                ObjectBlobStore::open_s3(&S3Settings {
                    bucket: bucket.clone(),
                    region: region.clone(),
                    endpoint: endpoint.clone(),
                    access_key_id: access_key_id.clone(),
                    secret_access_key: secret_access_key.clone(),
                    prefix: Some(prefix),
                    timeout: self.timeout,
                })
                .map_err(|e| ApiError::unavailable(format!("blob backend {name:?}: {e}")))
            }
            _ => Err(ApiError::unavailable(format!("backend {name:?} cannot serve blobs"))),
        }
    }
}

/// The database of a scope: the shared one, or `<database>_t_<tenant>` (shortened with
/// a digest when it would pass PostgreSQL's 63-byte limit).
fn scoped_database(database: &str, scope: &Scope) -> String {
    match scope {
        Scope::Shared => database.to_owned(),
        Scope::Tenant(t) => {
            let name = format!("{database}_t_{}", t.replace('-', "_"));
            if name.len() <= 63 {
                name
            } else {
                let digest = runplane_cjson::sha256_hex(name.as_bytes());
                format!("{}_{}", &name[..46], &digest[..16])
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_binding_digest_covers_each_tenants_messaging_binding() {
        let mut config = NodeConfig::embedded("127.0.0.1:0".parse().expect("a valid literal address"), PathBuf::from("./data"));
        for (name, prefix) in [("premium", "premium"), ("premium_b", "premium_b")] {
            config.backends.insert(name.into(), Backend::RabbitMq { url: "amqp://guest:hunter2@127.0.0.1:5672/%2f".into(), prefix: prefix.into() });
        }
        let shared = binding_digest(&config);
        config.tenant_bindings.insert("bigcorp".into(), Bindings { messaging: "premium".into(), ..Bindings::default() });
        let own = binding_digest(&config);
        assert_ne!(shared, own, "binding a tenant's messaging elsewhere is a new binding set");
        if let Some(b) = config.tenant_bindings.get_mut("bigcorp") {
            b.messaging = "premium_b".into();
        }
        let other = binding_digest(&config);
        assert_ne!(own, other, "another messaging backend for the tenant is a new binding set");
        config.backends.insert("premium_b".into(), Backend::RabbitMq { url: "amqp://guest:hunter2@127.0.0.1:5672/%2f".into(), prefix: "moved".into() });
        assert_ne!(other, binding_digest(&config), "a new prefix for the tenant's backend is a new binding set");
    }
}
