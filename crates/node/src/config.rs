//! `runplane.toml`: the one configuration loader.
//!
//! The whole file is checked before the node starts and every problem is reported
//! with its place (`node.listen: …`), not just the first: one bad or unknown key never
//! hides another. `${VAR}` in a string value is replaced by the environment variable
//! `VAR`; an unset variable is reported once, and nothing else about that value.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;

use runplane_host::SandboxConfig;

pub use runplane_control::Mode;

/// A validated node configuration.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Stable node id (never derived from the host name).
    pub node_id: String,
    pub listen: SocketAddr,
    /// `[node] admin_listen`: the admin API (`/v1/…`, `/metrics`) on a listener of its
    /// own; `listen` then serves tenant traffic and the probes only.
    pub admin_listen: Option<SocketAddr>,
    /// `[node] metadata_listen`: the instance metadata interface (S0-XIII: the version
    /// metadata a federation server reads), on a listener of its own that speaks only
    /// TLS 1.3 with a client certificate required.
    pub metadata_listen: Option<SocketAddr>,
    pub data_dir: PathBuf,
    /// The instance's mode: `shared` hosts many tenants; `dedicated` exactly one.
    pub mode: Mode,
    /// The environment this node serves (`[node] environment`, default `default`): its
    /// config set applies, and its releases are what it deploys (spec §7.6).
    pub environment: String,
    /// Admin token; when absent, one is generated at first start and written to
    /// `<data_dir>/admin-token` (mode 0600).
    pub admin_token: Option<String>,
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// How long a draining node keeps accepting connections after `/readyz` turned
    /// 503 (`[node] drain_delay_ms`, default 0): the time a load balancer needs to stop
    /// sending it traffic.
    pub drain_delay: std::time::Duration,
    pub sandbox: SandboxConfig,
    /// The tenant-fair scheduler (`[scheduler]`).
    pub scheduler: SchedulerConfig,
    /// Named infrastructure: the built-ins plus `[backends.*]`.
    pub backends: BTreeMap<String, Backend>,
    /// Which backend serves each port, for every tenant unless overridden.
    pub bindings: Bindings,
    /// Per-tenant overrides (`[tenant_bindings.<tenant>]`): e.g. a premium tenant on its
    /// own database, or on its own broker (or broker prefix) for messaging.
    pub tenant_bindings: BTreeMap<String, Bindings>,
    /// Upper bound on waiting for any backend (connect, acquire, statement, publish).
    pub backend_timeout: std::time::Duration,
    /// Seed data loaded into every newly provisioned tenant (`[provisioning] seed_file`).
    pub seed_file: Option<PathBuf>,
    /// The instance's audit signing key (`[audit] key_file`; default
    /// `<data_dir>/instance.key`, created at first start). Nodes of one instance share it.
    pub audit_key_file: Option<PathBuf>,
    /// Where the audit logs live (`[audit] store`): `None` for `<data_dir>/audit.db`, or
    /// the name of a postgres or mysql backend, shared by every node of the instance.
    pub audit_store: Option<String>,
    /// Where journals past their retention window are archived (`[audit] archive`): a
    /// filesystem or s3 backend; `None` for `<data_dir>/audit-archive`.
    pub audit_archive: Option<String>,
    /// `[control] store`: the postgres or mysql backend holding control state shared by
    /// every node of the instance; `None` is the embedded `control.db`.
    pub control_store: Option<String>,
    /// The rest of `[control]`: how nodes follow the shared store.
    pub control: ControlSettings,
    /// `[node] region`: the region label this node reports in membership, and where
    /// its node-local backends (sqlite, in-process, filesystem) keep their data.
    pub region: String,
    /// `[backends.<name>] location`: the region a remote backend keeps its data in
    /// (unset: the node's region).
    pub backend_locations: BTreeMap<String, String>,
    /// `[tenant_regions]`: tenants whose data stays in one region (residency). Every
    /// backend such a tenant is bound to must be in it, or the node refuses to start;
    /// its traffic to a node of another region is refused with 421.
    pub tenant_regions: BTreeMap<String, String>,
    /// `[tokens] key_file`: the capability-token signing key (default
    /// `<data_dir>/token.key`, created at first start).
    pub token_key_file: Option<PathBuf>,
    /// `[tls]`: how the listener speaks TLS; `None` is plain HTTP.
    pub tls: Option<crate::tls::TlsSettings>,
    /// `[http]`: connection hygiene (timeouts, header size, connections per source).
    pub http: crate::server::HttpLimits,
    /// `[rate_limits]`: requests per second per admin credential, tenant and source.
    pub rate_limits: crate::ratelimit::RateSettings,
    /// `[rollouts] prometheus_url`: the Prometheus server rollout analyses may query.
    pub prometheus: Option<crate::prometheus::PrometheusSettings>,
    /// `[jobs]`: job concurrency per tenant and per named pool.
    pub jobs: crate::jobs::JobSettings,
    /// How long journals stay in the hot audit store (`[audit] journal_retention_hours`,
    /// and per tier `[audit.journal_retention_hours_by_tier]`); events and their
    /// hashes stay forever.
    pub journal_retention: JournalRetention,
    /// The key-encryption keys of secrets (`[secrets] kek_file`; default
    /// `<data_dir>/secrets.kek`, created at first start with mode 0600).
    pub kek_file: Option<PathBuf>,
    /// The environment variable that, when set, holds the key-encryption keys instead of
    /// the file (`[secrets] kek_env`, default `RUNPLANE_KEK`).
    pub kek_env: String,
    /// `wasi:config` values per capability name.
    pub capability_config: BTreeMap<String, BTreeMap<String, String>>,
    /// Per-tenant overrides: `tenant → capability → key → value`.
    pub tenant_config: BTreeMap<String, BTreeMap<String, BTreeMap<String, String>>>,
}

/// The backend (by name, from `[backends.*]` or a built-in) serving each port.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Bindings {
    pub records: String,
    pub kv: String,
    pub events: String,
    pub messaging: String,
    pub blobs: String,
    pub secrets: String,
}

impl Default for Bindings {
    fn default() -> Self {
        Bindings {
            records: "sqlite".into(),
            kv: "sqlite".into(),
            events: "sqlite".into(),
            messaging: "in-process".into(),
            blobs: "filesystem".into(),
            secrets: "sqlite".into(),
        }
    }
}

impl Bindings {
    /// The named backend serving `port`.
    pub fn get(&self, port: Port) -> &str {
        match port {
            Port::Records => &self.records,
            Port::Kv => &self.kv,
            Port::Events => &self.events,
            Port::Secrets => &self.secrets,
            Port::Messaging => &self.messaging,
            Port::Blobs => &self.blobs,
        }
    }

    fn slot(&mut self, port: Port) -> &mut String {
        match port {
            Port::Records => &mut self.records,
            Port::Kv => &mut self.kv,
            Port::Events => &mut self.events,
            Port::Secrets => &mut self.secrets,
            Port::Messaging => &mut self.messaging,
            Port::Blobs => &mut self.blobs,
        }
    }
}

/// A port that a binding names a backend for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Port {
    Records,
    Kv,
    Events,
    Secrets,
    Messaging,
    Blobs,
}

impl Port {
    pub const ALL: [Port; 6] = [Port::Records, Port::Kv, Port::Events, Port::Secrets, Port::Messaging, Port::Blobs];

    pub fn key(self) -> &'static str {
        match self {
            Port::Records => "records",
            Port::Kv => "kv",
            Port::Events => "events",
            Port::Secrets => "secrets",
            Port::Messaging => "messaging",
            Port::Blobs => "blobs",
        }
    }

    /// Which kind of backend can serve it.
    fn family(self) -> Family {
        match self {
            Port::Records | Port::Kv | Port::Events | Port::Secrets => Family::Sql,
            Port::Messaging => Family::Bus,
            Port::Blobs => Family::Blobs,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    Sql,
    Bus,
    Blobs,
}

/// A named piece of infrastructure (`[backends.<name>]`). Credentials live only here
/// and are never logged, serialised or shown in an error.
#[derive(Clone)]
pub enum Backend {
    /// SQLite files under the data dir (built in as `sqlite`).
    Sqlite,
    Postgres {
        /// The owner's connection, used to provision.
        url: String,
        /// The shared database; a dedicated tenant gets `<database>_t_<tenant>`.
        database: String,
        runtime_role: String,
        runtime_password: Option<String>,
        max_connections: u32,
    },
    MySql {
        url: String,
        database: String,
        max_connections: u32,
    },
    /// The in-process broker (built in as `in-process`).
    InProcess,
    Nats {
        url: String,
        prefix: String,
        max_age_secs: u64,
        max_bytes: i64,
    },
    RabbitMq {
        url: String,
        prefix: String,
    },
    /// Blobs under the data dir (built in as `filesystem`).
    Filesystem,
    S3 {
        bucket: String,
        region: String,
        endpoint: Option<String>,
        access_key_id: Option<String>,
        secret_access_key: Option<String>,
        prefix: Option<String>,
    },
}

impl Backend {
    pub fn kind(&self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres { .. } => "postgres",
            Backend::MySql { .. } => "mysql",
            Backend::InProcess => "in-process",
            Backend::Nats { .. } => "nats",
            Backend::RabbitMq { .. } => "rabbitmq",
            Backend::Filesystem => "filesystem",
            Backend::S3 { .. } => "s3",
        }
    }

    fn family(&self) -> Family {
        match self {
            Backend::Sqlite | Backend::Postgres { .. } | Backend::MySql { .. } => Family::Sql,
            Backend::InProcess | Backend::Nats { .. } | Backend::RabbitMq { .. } => Family::Bus,
            Backend::Filesystem | Backend::S3 { .. } => Family::Blobs,
        }
    }

    /// What may be shown and hashed: the kind and where data lives, never URLs or credentials.
    pub fn public(&self) -> serde_json::Value {
        match self {
            Backend::Postgres { database, runtime_role, .. } => {
                serde_json::json!({"kind": "postgres", "database": database, "runtime_role": runtime_role})
            }
            Backend::MySql { database, .. } => serde_json::json!({"kind": "mysql", "database": database}),
            Backend::Nats { prefix, .. } => serde_json::json!({"kind": "nats", "prefix": prefix}),
            Backend::RabbitMq { prefix, .. } => serde_json::json!({"kind": "rabbitmq", "prefix": prefix}),
            Backend::S3 { bucket, prefix, .. } => serde_json::json!({"kind": "s3", "bucket": bucket, "prefix": prefix}),
            other => serde_json::json!({"kind": other.kind()}),
        }
    }
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Backend({})", self.public())
    }
}

/// The built-in backends, always available by these names.
pub fn builtin_backends() -> BTreeMap<String, Backend> {
    BTreeMap::from([
        ("sqlite".to_owned(), Backend::Sqlite),
        ("in-process".to_owned(), Backend::InProcess),
        ("filesystem".to_owned(), Backend::Filesystem),
    ])
}

/// The `[scheduler]` table. The global cap on running invocations is
/// `sandbox.max_instances` (what the pooling allocator has room for).
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SchedulerConfig {
    /// Invocations of one tenant that may wait for a turn; one more gets 429.
    pub max_queued_per_tenant: usize,
    /// `false` turns off quotas and fair admission (only the global cap remains): for
    /// measuring their cost, never for a node serving several tenants.
    pub enabled: bool,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig { max_queued_per_tenant: 128, enabled: true }
    }
}

impl NodeConfig {
    /// The embedded defaults `runplane up` uses.
    pub fn embedded(listen: SocketAddr, data_dir: PathBuf) -> Self {
        NodeConfig {
            node_id: "node-1".into(),
            listen,
            admin_listen: None,
            metadata_listen: None,
            data_dir,
            mode: Mode::Shared,
            environment: "default".into(),
            admin_token: None,
            max_body_bytes: 1 << 20,
            drain_delay: std::time::Duration::ZERO,
            sandbox: SandboxConfig::default(),
            scheduler: SchedulerConfig::default(),
            backends: builtin_backends(),
            bindings: Bindings::default(),
            tenant_bindings: BTreeMap::new(),
            backend_locations: BTreeMap::new(),
            tenant_regions: BTreeMap::new(),
            backend_timeout: std::time::Duration::from_secs(3),
            seed_file: None,
            audit_key_file: None,
            audit_store: None,
            audit_archive: None,
            control_store: None,
            control: ControlSettings::default(),
            region: "default".into(),
            token_key_file: None,
            tls: None,
            http: crate::server::HttpLimits::default(),
            rate_limits: crate::ratelimit::RateSettings::default(),
            prometheus: None,
            jobs: crate::jobs::JobSettings::default(),
            journal_retention: JournalRetention::default(),
            kek_file: None,
            kek_env: "RUNPLANE_KEK".into(),
            capability_config: BTreeMap::new(),
            tenant_config: BTreeMap::new(),
        }
    }

    /// Reads and validates a `runplane.toml`.
    pub fn load(path: &std::path::Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.display().to_string(),
            problems: vec![format!("cannot read the file: {e}")],
        })?;
        Self::parse(&text, |k| std::env::var(k).ok()).map_err(|problems| ConfigError {
            file: path.display().to_string(),
            problems,
        })
    }

    /// Parses configuration text; `env` resolves `${VAR}` references.
    pub fn parse(text: &str, env: impl Fn(&str) -> Option<String>) -> Result<Self, Vec<String>> {
        let mut table: toml::Table = text.parse().map_err(|e: toml::de::Error| vec![format!("TOML syntax: {e}")])?;
        let mut c = Checker { problems: Vec::new(), unresolved: BTreeSet::new() };
        substitute_env(&mut table, "", &env, &mut c);

        let mut cfg = NodeConfig::embedded(
            "127.0.0.1:8080".parse().expect("a valid literal address"),
            PathBuf::from("./data"),
        );
        c.only_keys(
            &table,
            "",
            &["node", "sandbox", "scheduler", "backends", "bindings", "tenant_bindings", "tenant_regions", "provisioning", "audit", "secrets", "config", "tenant_config", "control", "tokens", "tls", "http", "rate_limits", "rollouts", "jobs"],
        );

        if let Some(node) = c.table(&table, "node") {
            c.only_keys(node, "node", &["id", "listen", "admin_listen", "metadata_listen", "data_dir", "mode", "environment", "admin_token", "max_body_bytes", "drain_delay_ms", "region"]);
            if let Some(v) = c.get::<String>(node, "node", "region") {
                if !valid_region(&v) {
                    c.problem("node.region", "must be 1-64 characters of a-z, 0-9 and '-'");
                } else {
                    cfg.region = v;
                }
            }
            if let Some(v) = c.get::<String>(node, "node", "environment") {
                if v.is_empty() || v.len() > 64 || !v.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') {
                    c.problem("node.environment", "must be 1-64 characters of a-z, 0-9 and '-'");
                } else {
                    cfg.environment = v;
                }
            }
            if let Some(v) = c.get::<String>(node, "node", "id") {
                if v.is_empty() || v.len() > 64 || !v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
                    c.problem("node.id", "must be 1-64 characters of A-Z, a-z, 0-9, '-' and '_'");
                } else {
                    cfg.node_id = v;
                }
            }
            if let Some(v) = c.get::<String>(node, "node", "listen") {
                match v.parse() {
                    Ok(a) => cfg.listen = a,
                    Err(_) => c.problem("node.listen", &format!("{v:?} is not a socket address; write it like \"127.0.0.1:8080\"")),
                }
            }
            if let Some(v) = c.get::<String>(node, "node", "admin_listen") {
                match v.parse() {
                    Ok(a) => cfg.admin_listen = Some(a),
                    Err(_) => c.problem("node.admin_listen", &format!("{v:?} is not a socket address; write it like \"127.0.0.1:9090\"")),
                }
            }
            if let Some(v) = c.get::<String>(node, "node", "metadata_listen") {
                match v.parse() {
                    Ok(a) => cfg.metadata_listen = Some(a),
                    Err(_) => c.problem("node.metadata_listen", &format!("{v:?} is not a socket address; write it like \"127.0.0.1:9443\"")),
                }
            }
            if let Some(v) = c.get::<String>(node, "node", "data_dir") {
                cfg.data_dir = PathBuf::from(v);
            }
            if let Some(v) = c.get::<Mode>(node, "node", "mode") {
                cfg.mode = v;
            }
            if let Some(v) = c.get::<String>(node, "node", "admin_token") {
                if v.len() < 24 {
                    c.problem("node.admin_token", "is shorter than 24 characters; use a long random value (or omit it to have one generated)");
                } else {
                    cfg.admin_token = Some(v);
                }
            }
            if let Some(v) = c.get::<u64>(node, "node", "max_body_bytes") {
                if v == 0 || v > 64 << 20 {
                    c.problem("node.max_body_bytes", "must be between 1 and 67108864");
                } else {
                    cfg.max_body_bytes = v as usize;
                }
            }
            if let Some(v) = c.get::<u64>(node, "node", "drain_delay_ms") {
                if v > 600_000 {
                    c.problem("node.drain_delay_ms", "must be at most 600000 (ten minutes)");
                } else {
                    cfg.drain_delay = std::time::Duration::from_millis(v);
                }
            }
        }
        if let Some(s) = c.settings::<SandboxConfig>(&table, "sandbox") {
            if s.memory_limit_bytes < (1 << 20) {
                c.problem("sandbox.memory_limit_bytes", "must be at least 1048576 (1 MiB)");
            }
            if s.fuel == 0 {
                // Every invocation would run out at its first instruction, reported as
                // an exhausted CPU quota (429) that the tenant never used.
                c.problem("sandbox.fuel", "must be positive (it bounds one invocation's CPU work; default 2000000000)");
            }
            if s.deadline_ms == 0 {
                c.problem("sandbox.deadline_ms", "must be positive");
            }
            if s.max_instances == 0 {
                c.problem("sandbox.max_instances", "must be positive");
            }
            cfg.sandbox = s;
        }
        if let Some(s) = c.settings::<SchedulerConfig>(&table, "scheduler") {
            if s.max_queued_per_tenant == 0 {
                c.problem("scheduler.max_queued_per_tenant", "must be positive");
            }
            cfg.scheduler = s;
        }
        if let Some(backends) = c.table(&table, "backends") {
            for (name, value) in backends {
                let place = format!("backends.{name}");
                if cfg.backends.contains_key(name) {
                    c.problem(&place, "is a built-in backend name; choose another name");
                    continue;
                }
                if name.is_empty() || name.len() > 64 || !name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_') {
                    c.problem(&place, "the name must be 1-64 characters of a-z, 0-9, '-' and '_'");
                    continue;
                }
                let Some(t) = value.as_table() else {
                    c.problem(&place, "must be a table with a `kind`");
                    continue;
                };
                // `location` is every remote kind's; the rest is the kind's own.
                let mut t = t.clone();
                if let Some(loc) = t.remove("location") {
                    match loc.as_str().filter(|v| valid_region(v)) {
                        Some(v) => {
                            cfg.backend_locations.insert(name.clone(), v.to_owned());
                        }
                        None => c.problem(&format!("{place}.location"), "is a region label: 1-64 characters of a-z, 0-9 and '-'"),
                    }
                }
                if let Some(backend) = parse_backend(&mut c, &place, &t) {
                    cfg.backends.insert(name.clone(), backend);
                }
            }
        }
        if let Some(b) = c.table(&table, "bindings") {
            let mut bindings = Bindings::default();
            parse_bindings(&mut c, "bindings", b, &cfg.backends, &mut bindings);
            cfg.bindings = bindings;
        }
        if let Some(tb) = c.table(&table, "tenant_bindings") {
            for (tenant, value) in tb {
                let place = format!("tenant_bindings.{tenant}");
                if runplane_ports::TenantId::new(tenant).is_err() {
                    c.problem(&place, "is not a valid tenant id (a-z, 0-9, '-')");
                    continue;
                }
                let Some(t) = value.as_table() else {
                    c.problem(&place, "must be a table of port = backend name");
                    continue;
                };
                let mut bindings = cfg.bindings.clone();
                parse_bindings(&mut c, &place, t, &cfg.backends, &mut bindings);
                cfg.tenant_bindings.insert(tenant.clone(), bindings);
            }
            check_distinct_brokers(&mut c, &cfg);
        }
        if let Some(tr) = c.table(&table, "tenant_regions") {
            for (tenant, region) in tr {
                let place = format!("tenant_regions.{tenant}");
                if runplane_ports::TenantId::new(tenant).is_err() {
                    c.problem(&place, "is not a valid tenant id (a-z, 0-9, '-')");
                } else if let Some(r) = region.as_str().filter(|r| valid_region(r)) {
                    cfg.tenant_regions.insert(tenant.clone(), r.to_owned());
                } else {
                    c.problem(&place, "is a region label: 1-64 characters of a-z, 0-9 and '-'");
                }
            }
        }
        if let Some(p) = c.table(&table, "provisioning") {
            c.only_keys(p, "provisioning", &["seed_file", "backend_timeout_ms"]);
            if let Some(v) = c.get::<String>(p, "provisioning", "seed_file") {
                cfg.seed_file = Some(PathBuf::from(v));
            }
            if let Some(v) = c.get::<u64>(p, "provisioning", "backend_timeout_ms") {
                if !(100..=60_000).contains(&v) {
                    c.problem("provisioning.backend_timeout_ms", "must be between 100 and 60000");
                } else {
                    cfg.backend_timeout = std::time::Duration::from_millis(v);
                }
            }
        }
        if let Some(a) = c.table(&table, "audit") {
            c.only_keys(a, "audit", &["key_file", "store", "archive", "journal_retention_hours", "journal_retention_hours_by_tier", "archive_every_secs"]);
            if let Some(v) = c.get::<String>(a, "audit", "archive") {
                cfg.audit_archive = Some(v);
            }
            if let Some(v) = c.get::<u64>(a, "audit", "journal_retention_hours") {
                cfg.journal_retention.default_hours = v;
            }
            if let Some(v) = c.get::<u64>(a, "audit", "archive_every_secs") {
                if !(1..=86_400).contains(&v) {
                    c.problem("audit.archive_every_secs", "must be between 1 and 86400");
                } else {
                    cfg.journal_retention.archive_every = std::time::Duration::from_secs(v);
                }
            }
            if let Some(by_tier) = c.get::<BTreeMap<String, u64>>(a, "audit", "journal_retention_hours_by_tier") {
                for (tier, hours) in by_tier {
                    match runplane_tenancy::Tier::parse(&tier) {
                        Ok(t) => {
                            cfg.journal_retention.by_tier.insert(t.as_str().to_owned(), hours);
                        }
                        Err(e) => c.problem(&format!("audit.journal_retention_hours_by_tier.{tier}"), &e.to_string()),
                    }
                }
            }
            if let Some(v) = c.get::<String>(a, "audit", "key_file") {
                cfg.audit_key_file = Some(PathBuf::from(v));
            }
            if let Some(v) = c.get::<String>(a, "audit", "store")
                && v != "sqlite"
            {
                cfg.audit_store = Some(v);
            }
        }
        if let Some(t) = c.table(&table, "control") {
            c.only_keys(t, "control", &["store", "max_staleness_ms", "poll_ms", "notify", "heartbeat_ms", "node_ttl_ms", "lease_ttl_ms", "usage_sync_ms"]);
            if let Some(v) = c.get::<String>(t, "control", "store")
                && v != "sqlite"
            {
                cfg.control_store = Some(v);
            }
            let ms = |c: &mut Checker, key: &str, range: std::ops::RangeInclusive<u64>, into: &mut std::time::Duration| {
                if let Some(v) = c.get::<u64>(t, "control", key) {
                    if range.contains(&v) {
                        *into = std::time::Duration::from_millis(v);
                    } else {
                        c.problem(&format!("control.{key}"), &format!("must be between {} and {}", range.start(), range.end()));
                    }
                }
            };
            let s = &mut cfg.control;
            ms(&mut c, "max_staleness_ms", 1_000..=3_600_000, &mut s.max_staleness);
            ms(&mut c, "poll_ms", 50..=60_000, &mut s.poll);
            ms(&mut c, "heartbeat_ms", 100..=60_000, &mut s.heartbeat);
            ms(&mut c, "node_ttl_ms", 500..=600_000, &mut s.node_ttl);
            ms(&mut c, "lease_ttl_ms", 1_000..=600_000, &mut s.lease_ttl);
            ms(&mut c, "usage_sync_ms", 50..=60_000, &mut s.usage_sync);
            if let Some(v) = c.get::<bool>(t, "control", "notify") {
                s.notify = v;
            }
            if s.poll >= s.max_staleness {
                c.problem("control.poll_ms", "must be shorter than control.max_staleness_ms, or every node would go stale between two polls");
            }
            if s.heartbeat >= s.node_ttl {
                c.problem("control.heartbeat_ms", "must be shorter than control.node_ttl_ms, or live nodes would show as gone");
            }
        }
        if let Some(t) = c.table(&table, "tokens") {
            c.only_keys(t, "tokens", &["key_file"]);
            if let Some(v) = c.get::<String>(t, "tokens", "key_file") {
                cfg.token_key_file = Some(PathBuf::from(v));
            }
        }
        if let Some(t) = c.table(&table, "tls") {
            cfg.tls = parse_tls(&mut c, t);
        }
        if cfg.metadata_listen.is_some() && cfg.tls.as_ref().and_then(|t| t.for_metadata()).is_none() {
            c.problem(
                "node.metadata_listen",
                "the instance metadata interface speaks only TLS 1.3 with a client certificate: set [tls] with client_ca_file (the CA your federation server's client certificate chains to), or instance_ca = true",
            );
        }
        if let Some(t) = c.table(&table, "rate_limits") {
            const KEYS: [&str; 6] = ["admin_per_second", "admin_burst", "tenant_per_second", "tenant_burst", "unauthenticated_per_second", "unauthenticated_burst"];
            c.only_keys(t, "rate_limits", &KEYS);
            let r = &mut cfg.rate_limits;
            for (key, slot) in KEYS.iter().zip([
                &mut r.admin_per_second,
                &mut r.admin_burst,
                &mut r.tenant_per_second,
                &mut r.tenant_burst,
                &mut r.unauthenticated_per_second,
                &mut r.unauthenticated_burst,
            ]) {
                match c.get::<u64>(t, "rate_limits", key) {
                    Some(v) if v <= 1_000_000 => *slot = v as u32,
                    Some(_) => c.problem(&format!("rate_limits.{key}"), "must be between 0 (off) and 1000000"),
                    None => {}
                }
            }
            if r.admin_per_second == 0 {
                c.problem("rate_limits.admin_per_second", "cannot be 0: the admin API is always rate-limited per credential (at most 100/s by default: 50)");
            }
            if r.tenant_per_second > 0 && r.tenant_burst == 0 {
                r.tenant_burst = r.tenant_per_second;
            }
        }
        if let Some(t) = c.table(&table, "rollouts") {
            c.only_keys(t, "rollouts", &["prometheus_url", "prometheus_timeout_ms", "prometheus_token_env"]);
            let url = c.get::<String>(t, "rollouts", "prometheus_url");
            let timeout = match c.get::<u64>(t, "rollouts", "prometheus_timeout_ms") {
                Some(v) if (100..=60_000).contains(&v) => std::time::Duration::from_millis(v),
                Some(_) => {
                    c.problem("rollouts.prometheus_timeout_ms", "must be between 100 and 60000");
                    std::time::Duration::from_secs(5)
                }
                None => std::time::Duration::from_secs(5),
            };
            let token_env = c.get::<String>(t, "rollouts", "prometheus_token_env");
            if token_env.as_ref().is_some_and(|v| v.is_empty() || !v.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')) {
                c.problem("rollouts.prometheus_token_env", "must be an environment variable name of A-Z, 0-9 and '_'");
            }
            match url {
                Some(u) if u.starts_with("http://") || u.starts_with("https://") => {
                    if u.contains("/api/v1") {
                        c.problem("rollouts.prometheus_url", &format!("{u:?} names the API path; give the server's base address (\"http://prometheus:9090\"), Runplane adds /api/v1/query"));
                    } else {
                        cfg.prometheus = Some(crate::prometheus::PrometheusSettings { url: u, timeout, token_env });
                    }
                }
                Some(u) => c.problem("rollouts.prometheus_url", &format!("{u:?} is not an http:// or https:// address; write it like \"http://prometheus:9090\"")),
                None if token_env.is_some() || t.contains_key("prometheus_timeout_ms") => c.problem("rollouts.prometheus_url", "is needed by prometheus_timeout_ms and prometheus_token_env; set it, or remove them"),
                None => {}
            }
        }
        if let Some(t) = c.table(&table, "jobs") {
            c.only_keys(t, "jobs", &["max_running_per_tenant", "pools"]);
            match c.get::<u64>(t, "jobs", "max_running_per_tenant") {
                Some(v) if (1..=10_000).contains(&v) => cfg.jobs.max_running_per_tenant = v as u32,
                Some(_) => c.problem("jobs.max_running_per_tenant", "must be between 1 and 10000"),
                None => {}
            }
            if let Some(pools) = c.table(t, "pools") {
                for (name, v) in pools {
                    let valid = (1..=64).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
                    match v.as_integer() {
                        _ if !valid => c.problem(&format!("jobs.pools.{name}"), "a pool name is 1-64 of a-z, 0-9, '-' and '_'"),
                        Some(n) if (1..=10_000).contains(&n) => {
                            cfg.jobs.pools.insert(name.clone(), n as u32);
                        }
                        _ => c.problem(&format!("jobs.pools.{name}"), &format!("must be a whole number of slots between 1 and 10000 (found {v})")),
                    }
                }
            }
        }
        if let Some(t) = c.table(&table, "http") {
            c.only_keys(t, "http", &["header_read_timeout_ms", "idle_timeout_ms", "max_header_bytes", "max_connections_per_source"]);
            let ms = |c: &mut Checker, key: &str, default: std::time::Duration| match c.get::<u64>(t, "http", key) {
                Some(v) if (100..=3_600_000).contains(&v) => std::time::Duration::from_millis(v),
                Some(_) => {
                    c.problem(&format!("http.{key}"), "must be between 100 and 3600000");
                    default
                }
                None => default,
            };
            let d = crate::server::HttpLimits::default();
            cfg.http.header_read_timeout = ms(&mut c, "header_read_timeout_ms", d.header_read_timeout);
            cfg.http.idle_timeout = ms(&mut c, "idle_timeout_ms", d.idle_timeout);
            match c.get::<u64>(t, "http", "max_header_bytes") {
                Some(v) if (1024..=1 << 20).contains(&v) => cfg.http.max_header_bytes = v as usize,
                Some(_) => c.problem("http.max_header_bytes", "must be between 1024 and 1048576"),
                None => {}
            }
            match c.get::<u64>(t, "http", "max_connections_per_source") {
                Some(v) if (1..=1_000_000).contains(&v) => cfg.http.max_connections_per_source = v as usize,
                Some(_) => c.problem("http.max_connections_per_source", "must be between 1 and 1000000"),
                None => {}
            }
        }
        if let Some(t) = c.table(&table, "secrets") {
            c.only_keys(t, "secrets", &["kek_file", "kek_env"]);
            if let Some(v) = c.get::<String>(t, "secrets", "kek_file") {
                cfg.kek_file = Some(PathBuf::from(v));
            }
            if let Some(v) = c.get::<String>(t, "secrets", "kek_env") {
                if v.is_empty() || !v.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_') {
                    c.problem("secrets.kek_env", "must be an environment variable name of A-Z, 0-9 and '_'");
                } else {
                    cfg.kek_env = v;
                }
            }
        }
        if let Some(conf) = table.get("config")
            && c.string_leaves(conf, "config", 2, "[config] maps capability names to tables of string values")
        {
            match conf.clone().try_into::<BTreeMap<String, BTreeMap<String, String>>>() {
                Ok(m) => cfg.capability_config = m,
                Err(e) => c.problem("config", &format!("must map capability names to tables of string values: {}", e.message())),
            }
        }
        if let Some(conf) = table.get("tenant_config")
            && c.string_leaves(conf, "tenant_config", 3, "[tenant_config] maps tenant → capability → key → string value")
        {
            match conf.clone().try_into::<BTreeMap<String, BTreeMap<String, BTreeMap<String, String>>>>() {
                Ok(m) => {
                    for t in m.keys() {
                        if runplane_ports::TenantId::new(t).is_err() {
                            c.problem(&format!("tenant_config.{t}"), "is not a valid tenant id (a-z, 0-9, '-')");
                        }
                    }
                    cfg.tenant_config = m;
                }
                Err(e) => c.problem("tenant_config", &format!("must map tenant → capability → key → string value: {}", e.message())),
            }
        }
        if let Some(name) = &cfg.audit_archive {
            match cfg.backends.get(name) {
                Some(Backend::Filesystem | Backend::S3 { .. }) => {}
                Some(other) => c.problem("audit.archive", &format!("backend {name:?} is a {} backend; journals are archived to a filesystem or s3 backend", other.kind())),
                None => c.problem("audit.archive", &format!("no backend is named {name:?}; define it under [backends.{name}] (kind filesystem or s3)")),
            }
        }
        if let Some(name) = &cfg.audit_store {
            match cfg.backends.get(name) {
                Some(Backend::Postgres { .. } | Backend::MySql { .. }) => {}
                Some(other) => c.problem("audit.store", &format!("backend {name:?} is a {} backend; the audit logs live in \"sqlite\" (the default), a postgres or a mysql backend", other.kind())),
                None => c.problem("audit.store", &format!("no backend is named {name:?}; define it under [backends.{name}] or use \"sqlite\"")),
            }
        }
        if let Some(name) = &cfg.control_store {
            match cfg.backends.get(name) {
                Some(Backend::Postgres { .. } | Backend::MySql { .. }) => check_shared(&mut c, &cfg, name, env(&cfg.kek_env).is_some()),
                Some(other) => c.problem("control.store", &format!("backend {name:?} is a {} backend; the control store lives in \"sqlite\" (the default, one node) or a postgres or mysql backend every node shares", other.kind())),
                None => c.problem("control.store", &format!("no backend is named {name:?}; define it under [backends.{name}] (kind postgres or mysql) or use \"sqlite\"")),
            }
        }
        check_residency(&mut c, &cfg);
        if c.problems.is_empty() { Ok(cfg) } else { Err(c.problems) }
    }

    /// The region `backend` keeps its data in: its `location`, or (node-local kinds,
    /// and remote ones without one) this node's.
    pub fn location_of(&self, backend: &str) -> &str {
        match self.backends.get(backend) {
            Some(Backend::Sqlite | Backend::InProcess | Backend::Filesystem) | None => &self.region,
            Some(_) => self.backend_locations.get(backend).map_or(&self.region, String::as_str),
        }
    }
}

fn valid_region(v: &str) -> bool {
    (1..=64).contains(&v.len()) && v.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// Residency (spec §8): a tenant pinned to a region is bound only to backends of that
/// region, on every node of the instance (background work such as provisioning may run
/// on any), and its audit logs (store and archive) are kept there; each port or store
/// that is not is refused by name.
fn check_residency(c: &mut Checker, cfg: &NodeConfig) {
    for (tenant, region) in &cfg.tenant_regions {
        let (place, bindings) = match cfg.tenant_bindings.get(tenant) {
            Some(b) => (format!("tenant_bindings.{tenant}"), b),
            None => ("bindings".to_owned(), &cfg.bindings),
        };
        for port in Port::ALL {
            let name = bindings.get(port);
            let at = cfg.location_of(name);
            if at != region {
                c.problem(
                    &format!("{place}.{}", port.key()),
                    &format!(
                        "tenant {tenant} is pinned to region {region} ([tenant_regions]), but its {} is bound to backend {name:?}, which keeps its data in {at}; bind it under [tenant_bindings.{tenant}] to a backend with location = {region:?}",
                        port.key()
                    ),
                );
            }
        }
        // Journals hold the requests' bodies: the audit logs are the tenant's data too.
        let store = cfg.audit_store.as_deref().unwrap_or("sqlite");
        for (place, name) in std::iter::once(("audit.store", store)).chain(cfg.audit_archive.as_deref().map(|a| ("audit.archive", a))) {
            let at = cfg.location_of(name);
            if at != region {
                c.problem(
                    place,
                    &format!(
                        "tenant {tenant} is pinned to region {region} ([tenant_regions]), but the audit logs (whose journals hold its requests' bodies) go to backend {name:?}, which keeps its data in {at}; \
                         point it at a backend with location = {region:?} (one audit store serves every tenant: tenants pinned to different regions need an instance per region)"
                    ),
                );
            }
        }
    }
}

/// With a shared control store the node is one of several: everything else the
/// instance keeps must be shared too, or a blob written through one node would be
/// missing on the next and a message published on one would never reach another's
/// subscribers. Node-local backends and per-node key files are refused by name.
fn check_shared(c: &mut Checker, cfg: &NodeConfig, control: &str, kek_in_env: bool) {
    let why = format!("with a shared control store ([control] store = {control:?}) every node must see the same data");
    let bound = std::iter::once(("bindings".to_owned(), &cfg.bindings))
        .chain(cfg.tenant_bindings.iter().map(|(t, b)| (format!("tenant_bindings.{t}"), b)));
    for (place, bindings) in bound {
        for port in Port::ALL {
            let name = bindings.get(port);
            let Some(backend) = cfg.backends.get(name) else { continue };
            let instead = match backend {
                Backend::Sqlite => "a postgres or mysql backend",
                Backend::InProcess => "a nats or rabbitmq backend",
                Backend::Filesystem => "an s3 backend",
                _ => continue,
            };
            c.problem(
                &format!("{place}.{}", port.key()),
                &format!("is bound to {name:?}, a node-local {} backend; {why}: bind {instead} instead", backend.kind()),
            );
        }
    }
    if cfg.audit_store.is_none() {
        c.problem("audit.store", &format!("is the node-local audit.db; {why}: set [audit] store = {control:?} (or another postgres or mysql backend)"));
    }
    if let Some(name) = &cfg.audit_archive
        && matches!(cfg.backends.get(name), Some(Backend::Filesystem))
    {
        c.problem("audit.archive", &format!("is {name:?}, a node-local filesystem backend; {why}: archive to an s3 backend"));
    }
    let key = |c: &mut Checker, place: &str, set: bool, what: &str| {
        if !set {
            c.problem(place, &format!("is not set, so each node would create its own {what} in its data dir; {why}: give every node the same key file (copy the first node's)"));
        }
    };
    key(c, "audit.key_file", cfg.audit_key_file.is_some(), "instance signing key");
    key(c, "tokens.key_file", cfg.token_key_file.is_some(), "token signing key");
    key(c, "secrets.kek_file", cfg.kek_file.is_some() || kek_in_env, "key-encryption key for secrets (or set the environment variable [secrets] kek_env names)");
}

/// `[control]`: how a node follows a shared control store.
#[derive(Debug, Clone)]
pub struct ControlSettings {
    /// A node that has not confirmed it is current for this long answers tenant and
    /// admin traffic with 503 (`max_staleness_ms`, default 30000).
    pub max_staleness: std::time::Duration,
    /// The safety-net poll of the change feed (`poll_ms`, default 500).
    pub poll: std::time::Duration,
    /// Whether PostgreSQL notifications wake followers at once (`notify`, default true).
    pub notify: bool,
    /// Membership heartbeat (`heartbeat_ms`, default 1000).
    pub heartbeat: std::time::Duration,
    /// A node whose heartbeat is older is `gone` (`node_ttl_ms`, default 5000).
    pub node_ttl: std::time::Duration,
    /// The leader lease's TTL (`lease_ttl_ms`, default 10000).
    pub lease_ttl: std::time::Duration,
    /// How often a node adds its use of each tenant's CPU and network windows and disk
    /// to the instance's, and learns the others' (`usage_sync_ms`, default 250): the
    /// slack of instance-wide quotas.
    pub usage_sync: std::time::Duration,
}

impl Default for ControlSettings {
    fn default() -> Self {
        use std::time::Duration;
        ControlSettings {
            max_staleness: Duration::from_secs(30),
            poll: Duration::from_millis(500),
            notify: true,
            heartbeat: Duration::from_secs(1),
            node_ttl: Duration::from_secs(5),
            lease_ttl: Duration::from_secs(10),
            usage_sync: Duration::from_millis(250),
        }
    }
}

/// `[tls]`: certificate files or generated development certificates, the minimum
/// protocol version and how often the files are checked for a replacement.
fn parse_tls(c: &mut Checker, t: &toml::Table) -> Option<crate::tls::TlsSettings> {
    use crate::tls::{CertSource, MinVersion, TlsSettings};
    c.only_keys(
        t,
        "tls",
        &[
            "cert_file", "key_file", "generate", "instance_ca", "certificate_lifetime_secs", "min_version", "reload_check_ms", "client_ca_file", "client_crl_file", "client_auth",
            "admin_client_certificate", "admin",
        ],
    );
    let mut settings = TlsSettings::development();
    let generate = c.get::<bool>(t, "tls", "generate").unwrap_or(false);
    let instance = c.get::<bool>(t, "tls", "instance_ca").unwrap_or(false);
    match (c.get::<String>(t, "tls", "cert_file"), c.get::<String>(t, "tls", "key_file"), generate, instance) {
        (Some(cert), Some(key), false, false) => settings.source = CertSource::Files { cert: PathBuf::from(cert), key: PathBuf::from(key) },
        (None, None, true, false) => settings.source = CertSource::Development,
        (None, None, false, true) => {
            let secs = c.get::<u64>(t, "tls", "certificate_lifetime_secs").unwrap_or(86_400);
            if !(1..=crate::ca::MAX_LIFETIME_SECS).contains(&secs) {
                c.problem("tls.certificate_lifetime_secs", &format!("must be between 1 and {}", crate::ca::MAX_LIFETIME_SECS));
            }
            settings.source = CertSource::InstanceCa { lifetime: std::time::Duration::from_secs(secs.max(1)) };
        }
        (Some(_), None, false, false) | (None, Some(_), false, false) => {
            c.problem("tls", "needs cert_file and key_file together (PEM): the certificate chain and its private key");
            return None;
        }
        (None, None, false, false) => {
            c.problem("tls", "needs cert_file and key_file (PEM), generate = true for a development CA and certificate under <data_dir>/tls, or instance_ca = true for certificates from the instance CA");
            return None;
        }
        _ => {
            c.problem("tls", "takes one source of certificates: cert_file and key_file, generate = true, or instance_ca = true");
            return None;
        }
    }
    if !instance && t.contains_key("certificate_lifetime_secs") {
        c.problem("tls.certificate_lifetime_secs", "applies only with instance_ca = true");
    }
    if let Some(admin) = c.table(t, "admin") {
        c.only_keys(admin, "tls.admin", &["min_version", "client_auth"]);
        let mut o = crate::tls::ListenerOverride::default();
        if let Some(v) = c.get::<String>(admin, "tls.admin", "min_version") {
            match MinVersion::parse(&v) {
                Some(m) => o.min_version = Some(m),
                None => c.problem("tls.admin.min_version", &format!("{v:?} is not a TLS version this node speaks; write \"1.2\" or \"1.3\"")),
            }
        }
        match c.get::<String>(admin, "tls.admin", "client_auth").as_deref() {
            None => {}
            Some("required") => o.client_required = Some(true),
            Some("optional") => o.client_required = Some(false),
            Some(other) => c.problem("tls.admin.client_auth", &format!("{other:?} is neither \"required\" nor \"optional\"")),
        }
        settings.admin = Some(o);
    }
    if let Some(v) = c.get::<String>(t, "tls", "min_version") {
        match MinVersion::parse(&v) {
            Some(m) => settings.min_version = m,
            None => c.problem("tls.min_version", &format!("{v:?} is not a TLS version this node speaks; write \"1.2\" or \"1.3\"")),
        }
    }
    if let Some(ms) = c.get::<u64>(t, "tls", "reload_check_ms") {
        if !(100..=3_600_000).contains(&ms) {
            c.problem("tls.reload_check_ms", "must be between 100 and 3600000");
        } else {
            settings.reload_check = std::time::Duration::from_millis(ms);
        }
    }
    let required = |c: &mut Checker, key: &str| match c.get::<String>(t, "tls", key).as_deref() {
        None | Some("optional") => false,
        Some("required") => true,
        Some(other) => {
            c.problem(&format!("tls.{key}"), &format!("{other:?} is neither \"required\" nor \"optional\""));
            false
        }
    };
    let (client_auth, admin) = (required(c, "client_auth"), required(c, "admin_client_certificate"));
    match c.get::<String>(t, "tls", "client_ca_file") {
        Some(_) if instance => c.problem("tls.client_ca_file", "is the instance CA itself with instance_ca = true; leave it out"),
        // The instance CA's bundle and revocation lists, resolved at start.
        None if instance && (t.contains_key("client_auth") || t.contains_key("admin_client_certificate")) => {
            settings.client = Some(crate::tls::ClientAuth { ca_file: PathBuf::new(), crl_file: None, required: client_auth, admin_required: admin })
        }
        Some(ca) => {
            settings.client = Some(crate::tls::ClientAuth {
                ca_file: PathBuf::from(ca),
                crl_file: c.get::<String>(t, "tls", "client_crl_file").map(PathBuf::from),
                required: client_auth,
                admin_required: admin,
            })
        }
        None => {
            for key in ["client_auth", "admin_client_certificate", "client_crl_file"] {
                if t.contains_key(key) {
                    c.problem(&format!("tls.{key}"), "needs tls.client_ca_file: the CA (PEM) client certificates must chain to");
                }
            }
        }
    }
    if settings.client.is_none() && settings.admin.as_ref().is_some_and(|a| a.client_required.is_some()) {
        c.problem("tls.admin.client_auth", "needs tls.client_ca_file (or instance_ca = true): the CA client certificates must chain to");
    }
    Some(settings)
}

fn parse_backend(c: &mut Checker, place: &str, t: &toml::Table) -> Option<Backend> {
    let kind = c.get::<String>(t, place, "kind")?;
    let ident = |c: &mut Checker, key: &str, default: &str| -> String {
        let v = c.get::<String>(t, place, key).unwrap_or_else(|| default.to_owned());
        if !runplane_adapters::postgres::valid_identifier(&v) {
            c.problem(&format!("{place}.{key}"), "must be 1-63 characters of a-z, 0-9 and '_', not starting with a digit");
        }
        v
    };
    let required = |c: &mut Checker, key: &str| -> String {
        match c.get::<String>(t, place, key) {
            Some(v) if !v.is_empty() => v,
            _ => {
                c.problem(&format!("{place}.{key}"), "is required for this kind");
                String::new()
            }
        }
    };
    let pool = |c: &mut Checker| -> u32 {
        match c.get::<u32>(t, place, "max_connections") {
            Some(n) if (1..=1000).contains(&n) => n,
            Some(_) => {
                c.problem(&format!("{place}.max_connections"), "must be between 1 and 1000");
                16
            }
            None => 16,
        }
    };
    // URLs are checked by scheme only: the text may hold a password and is never echoed.
    let url = |c: &mut Checker, schemes: &[&str]| -> String {
        let v = required(c, "url");
        if !v.is_empty() && !schemes.iter().any(|s| v.starts_with(&format!("{s}://"))) {
            c.problem(&format!("{place}.url"), &format!("must start with {}", schemes.iter().map(|s| format!("{s}://")).collect::<Vec<_>>().join(" or ")));
        }
        v
    };
    let backend = match kind.as_str() {
        "postgres" => {
            c.only_keys(t, place, &["kind", "url", "database", "runtime_role", "runtime_password", "max_connections"]);
            Backend::Postgres {
                url: url(c, &["postgres", "postgresql"]),
                database: ident(c, "database", "runplane"),
                runtime_role: ident(c, "runtime_role", "runplane_runtime"),
                runtime_password: c.get::<String>(t, place, "runtime_password"),
                max_connections: pool(c),
            }
        }
        "mysql" => {
            c.only_keys(t, place, &["kind", "url", "database", "max_connections"]);
            Backend::MySql { url: url(c, &["mysql", "mariadb"]), database: ident(c, "database", "runplane"), max_connections: pool(c) }
        }
        "nats" => {
            c.only_keys(t, place, &["kind", "url", "prefix", "max_age_secs", "max_bytes"]);
            Backend::Nats {
                url: url(c, &["nats", "tls"]),
                prefix: ident(c, "prefix", "runplane"),
                max_age_secs: c.get::<u64>(t, place, "max_age_secs").unwrap_or(7 * 24 * 3600),
                max_bytes: c.get::<i64>(t, place, "max_bytes").unwrap_or(1 << 30),
            }
        }
        "rabbitmq" => {
            c.only_keys(t, place, &["kind", "url", "prefix"]);
            Backend::RabbitMq { url: url(c, &["amqp", "amqps"]), prefix: ident(c, "prefix", "runplane") }
        }
        "s3" => {
            c.only_keys(t, place, &["kind", "bucket", "region", "endpoint", "access_key_id", "secret_access_key", "prefix"]);
            let endpoint = c.get::<String>(t, place, "endpoint");
            if let Some(e) = &endpoint
                && !e.starts_with("http://")
                && !e.starts_with("https://")
            {
                c.problem(&format!("{place}.endpoint"), "must start with http:// or https://");
            }
            Backend::S3 {
                bucket: required(c, "bucket"),
                region: c.get::<String>(t, place, "region").unwrap_or_else(|| "us-east-1".into()),
                endpoint,
                access_key_id: c.get::<String>(t, place, "access_key_id"),
                secret_access_key: c.get::<String>(t, place, "secret_access_key"),
                prefix: c.get::<String>(t, place, "prefix"),
            }
        }
        "sqlite" | "in-process" | "filesystem" => {
            c.problem(&format!("{place}.kind"), &format!("{kind:?} is built in; bind the name {kind:?} directly instead of declaring it"));
            return None;
        }
        other => {
            c.problem(&format!("{place}.kind"), &format!("{other:?} is not a backend kind; use postgres, mysql, nats, rabbitmq or s3"));
            return None;
        }
    };
    Some(backend)
}

fn parse_bindings(
    c: &mut Checker,
    place: &str,
    t: &toml::Table,
    backends: &BTreeMap<String, Backend>,
    into: &mut Bindings,
) {
    c.only_keys(t, place, &Port::ALL.map(Port::key));
    for port in Port::ALL {
        let Some(name) = c.get::<String>(t, place, port.key()) else { continue };
        let here = format!("{place}.{}", port.key());
        match backends.get(&name) {
            None => c.problem(&here, &format!("no backend is named {name:?}; declare [backends.{name}] or use a built-in (sqlite, in-process, filesystem)")),
            Some(b) if b.family() != port.family() => {
                c.problem(&here, &format!("backend {name:?} is a {} backend, which cannot serve {}", b.kind(), port.key()))
            }
            Some(_) => *into.slot(port) = name,
        }
    }
}

/// Refuses two bound messaging backends that name the same broker (kind, URL) with the
/// same prefix: their subscriptions would share one consumer, and each would drop the
/// other's tenants' messages as not coming from their bus.
fn check_distinct_brokers(c: &mut Checker, cfg: &NodeConfig) {
    let mut seen: BTreeMap<(&str, &str, &str), &str> = BTreeMap::new();
    let bound = std::iter::once(("bindings".to_owned(), &cfg.bindings))
        .chain(cfg.tenant_bindings.iter().map(|(t, b)| (format!("tenant_bindings.{t}"), b)));
    for (place, bindings) in bound {
        let name = bindings.messaging.as_str();
        let broker = match cfg.backends.get(name) {
            Some(Backend::Nats { url, prefix, .. }) => ("nats", url.as_str(), prefix.as_str()),
            Some(Backend::RabbitMq { url, prefix }) => ("rabbitmq", url.as_str(), prefix.as_str()),
            _ => continue,
        };
        match seen.get(&broker) {
            Some(other) if *other != name => c.problem(
                &format!("{place}.messaging"),
                &format!("backend {name:?} reaches the same {} broker with the same prefix {:?} as backend {other:?}; give [backends.{name}] its own prefix, or bind {other:?} instead", broker.0, broker.2),
            ),
            Some(_) => {}
            None => {
                seen.insert(broker, name);
            }
        }
    }
}

/// Every problem found in a configuration file.
#[derive(Debug, thiserror::Error)]
#[error("{file} has {} problem(s); fix them and start again:\n  {}", .problems.len(), .problems.join("\n  "))]
pub struct ConfigError {
    pub file: String,
    pub problems: Vec<String>,
}

struct Checker {
    problems: Vec<String>,
    /// Places holding a `${VAR}` that could not be substituted: that is reported once,
    /// and nothing else about them (what is left of the value is not what was meant).
    unresolved: BTreeSet<String>,
}

impl Checker {
    fn problem(&mut self, place: &str, what: &str) {
        if self.unresolved.iter().any(|u| u.strip_prefix(place).is_some_and(|rest| rest.is_empty() || rest.starts_with('['))) {
            return;
        }
        self.problems.push(format!("{place}: {what}"));
    }

    /// A `${VAR}` at `place` could not be substituted.
    fn unresolved(&mut self, place: &str, what: &str) {
        self.unresolved.insert(place.to_owned());
        let problem = format!("{place}: {what}");
        if !self.problems.contains(&problem) {
            self.problems.push(problem);
        }
    }

    /// A table of settings (`[sandbox]`, `[scheduler]`) as `T`, whose serde defaults
    /// fill absent keys. Each key is tried on its own first, so an unknown key or a bad
    /// value is reported with its place and never hides another; the valid keys are kept.
    fn settings<T: serde::de::DeserializeOwned>(&mut self, table: &toml::Table, key: &str) -> Option<T> {
        let t = self.table(table, key)?;
        let mut valid = toml::Table::new();
        for (k, v) in t {
            let alone = toml::Table::from_iter([(k.clone(), v.clone())]);
            match toml::Value::Table(alone).try_into::<T>() {
                Ok(_) => {
                    valid.insert(k.clone(), v.clone());
                }
                Err(e) => self.problem(&format!("{key}.{k}"), &format!("{} (found {v})", plain(e.message()))),
            }
        }
        match toml::Value::Table(valid).try_into::<T>() {
            Ok(x) => Some(x),
            Err(e) => {
                self.problem(key, &plain(e.message()));
                None
            }
        }
    }

    /// Reports every place under `v` that is not a table (above `depth` 0) or a string
    /// (at the leaves); true if there is none.
    fn string_leaves(&mut self, v: &toml::Value, place: &str, depth: usize, shape: &str) -> bool {
        match (v, depth) {
            (toml::Value::String(_), 0) => true,
            (_, 0) => {
                self.problem(place, &format!("must be a string (found {v}); write it in quotes ({shape})"));
                false
            }
            (toml::Value::Table(t), _) => {
                let mut ok = true;
                for (k, inner) in t {
                    ok &= self.string_leaves(inner, &format!("{place}.{k}"), depth - 1, shape);
                }
                ok
            }
            _ => {
                self.problem(place, &format!("must be a table (found {v}); {shape}"));
                false
            }
        }
    }

    fn only_keys(&mut self, table: &toml::Table, place: &str, known: &[&str]) {
        for key in table.keys() {
            if !known.contains(&key.as_str()) {
                let full = if place.is_empty() { key.clone() } else { format!("{place}.{key}") };
                self.problem(&full, &format!("unknown key; known keys here: {}", known.join(", ")));
            }
        }
    }

    fn table<'t>(&mut self, table: &'t toml::Table, key: &str) -> Option<&'t toml::Table> {
        match table.get(key) {
            None => None,
            Some(toml::Value::Table(t)) => Some(t),
            Some(_) => {
                self.problem(key, "must be a table");
                None
            }
        }
    }

    fn get<T: serde::de::DeserializeOwned>(&mut self, table: &toml::Table, place: &str, key: &str) -> Option<T> {
        let v = table.get(key)?;
        match v.clone().try_into::<T>() {
            Ok(x) => Some(x),
            Err(e) => {
                self.problem(&format!("{place}.{key}"), &format!("{} (found {v})", plain(e.message())));
                None
            }
        }
    }
}

/// serde's type names in words a configuration's reader knows.
fn plain(message: &str) -> String {
    let mut m = message.to_owned();
    for (rust, words) in [
        ("expected usize", "expected a whole number, 0 or more"),
        ("expected u64", "expected a whole number, 0 or more"),
        ("expected u32", "expected a whole number from 0 to 4294967295"),
        ("expected i64", "expected a whole number"),
        ("expected a boolean", "expected true or false"),
    ] {
        m = m.replace(rust, words);
    }
    m
}

fn substitute_env(table: &mut toml::Table, place: &str, env: &dyn Fn(&str) -> Option<String>, c: &mut Checker) {
    for (k, v) in table.iter_mut() {
        let here = if place.is_empty() { k.clone() } else { format!("{place}.{k}") };
        substitute_value(v, &here, env, c);
    }
}

fn substitute_value(v: &mut toml::Value, place: &str, env: &dyn Fn(&str) -> Option<String>, c: &mut Checker) {
    match v {
        toml::Value::String(s) => {
            let mut out = String::new();
            let mut rest = s.as_str();
            while let Some(start) = rest.find("${") {
                out.push_str(&rest[..start]);
                let after = &rest[start + 2..];
                match after.find('}') {
                    Some(end) => {
                        let name = &after[..end];
                        match env(name) {
                            Some(value) => out.push_str(&value),
                            None => c.unresolved(place, &format!("environment variable {name} is not set")),
                        }
                        rest = &after[end + 1..];
                    }
                    None => {
                        c.unresolved(place, "unterminated ${ in the value; close it with }");
                        rest = "";
                    }
                }
            }
            out.push_str(rest);
            *s = out;
        }
        toml::Value::Table(t) => substitute_env(t, place, env, c),
        toml::Value::Array(a) => {
            for (i, item) in a.iter_mut().enumerate() {
                substitute_value(item, &format!("{place}[{i}]"), env, c);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_every_problem_with_its_place() {
        let text = r#"
            [node]
            listen = "not an address"
            mode = "sideways"
            colour = "blue"
            admin_token = "${MISSING_TOKEN}"
            [backends.pg]
            kind = "postgres"
            url = "mysql://root:hunter2@db/x"
            database = "Bad-Name"
            [bindings]
            records = "oracle"
            blobs = "sqlite"
            [tenant_bindings.acme]
            messaging = "pg"
            [tenant_bindings.globex]
            messaging = "nowhere"
            [sandbox]
            deadline_ms = 0
        "#;
        let problems = NodeConfig::parse(text, |_| None).expect_err("invalid");
        let all = problems.join("\n");
        for needle in [
            "node.listen",
            "node.mode",
            "node.colour",
            "MISSING_TOKEN",
            "bindings.records",
            "bindings.blobs",
            "backends.pg.url",
            "backends.pg.database",
            "tenant_bindings.acme.messaging: backend \"pg\" is a postgres backend, which cannot serve messaging",
            "tenant_bindings.globex.messaging: no backend is named \"nowhere\"",
            "sandbox.deadline_ms",
        ] {
            assert!(all.contains(needle), "missing {needle} in:\n{all}");
        }
        assert!(!all.contains("hunter2"), "a problem never quotes a URL or password:\n{all}");
    }

    #[test]
    fn the_prometheus_server_of_rollout_analyses_is_checked() {
        let ok = NodeConfig::parse("[rollouts]\nprometheus_url = \"http://prom:9090\"\nprometheus_timeout_ms = 2000\nprometheus_token_env = \"PROM_TOKEN\"\n", |_| None).expect("valid");
        let p = ok.prometheus.expect("set");
        assert_eq!((p.url.as_str(), p.timeout.as_millis(), p.token_env.as_deref()), ("http://prom:9090", 2000, Some("PROM_TOKEN")));
        for (text, place) in [
            ("prometheus_url = \"prom:9090\"", "rollouts.prometheus_url"),
            ("prometheus_url = \"http://prom:9090/api/v1/query\"", "names the API path"),
            ("prometheus_url = \"http://prom:9090\"\nprometheus_timeout_ms = 5", "rollouts.prometheus_timeout_ms"),
            ("prometheus_timeout_ms = 500", "is needed by"),
            ("prometheus_url = \"http://p\"\nprometheus_token_env = \"lower\"", "rollouts.prometheus_token_env"),
            ("prometheus = \"x\"", "rollouts.prometheus: unknown key"),
        ] {
            let all = NodeConfig::parse(&format!("[rollouts]\n{text}\n"), |_| None).expect_err("refused").join("\n");
            assert!(all.contains(place), "{text}: {all}");
        }
    }

    #[test]
    fn settings_tables_report_every_bad_key_with_its_name() {
        let text = r#"
            [sandbox]
            colour = "blue"
            memory_limit_bytes = -1
            fuel = 0
            deadline_ms = "soon"
            max_instances = 16
            [scheduler]
            max_queued_per_tenant = 0
            typo = 1
            [config.orders]
            currency = "CHF"
            retries = 3
        "#;
        let problems = NodeConfig::parse(text, |_| None).expect_err("invalid");
        let all = problems.join("\n");
        for needle in [
            "sandbox.colour: unknown field `colour`",
            "sandbox.memory_limit_bytes: invalid value: integer `-1`, expected a whole number, 0 or more (found -1)",
            "sandbox.fuel: must be positive",
            "sandbox.deadline_ms: invalid type: string \"soon\"",
            "scheduler.max_queued_per_tenant: must be positive",
            "scheduler.typo: unknown field `typo`",
            "config.orders.retries: must be a string (found 3)",
        ] {
            assert!(all.contains(needle), "missing {needle} in:\n{all}");
        }
        assert_eq!(problems.len(), 7, "one problem each, nothing about the valid keys:\n{all}");
    }

    #[test]
    fn an_unset_variable_is_the_only_problem_of_its_value() {
        let text = r#"
            [node]
            admin_token = "${NO_TOKEN}"
            listen = "${NO_LISTEN}"
            [backends.pg]
            kind = "postgres"
            url = "${NO_PG_URL}"
        "#;
        let mut problems = NodeConfig::parse(text, |_| None).expect_err("invalid");
        problems.sort();
        assert_eq!(
            problems,
            vec![
                "backends.pg.url: environment variable NO_PG_URL is not set",
                "node.admin_token: environment variable NO_TOKEN is not set",
                "node.listen: environment variable NO_LISTEN is not set",
            ]
        );
    }

    #[test]
    fn messaging_can_be_bound_per_tenant() {
        let text = r#"
            [backends.bus]
            kind = "nats"
            url = "nats://127.0.0.1:4222"
            [backends.premium]
            kind = "rabbitmq"
            url = "amqp://guest:guest@127.0.0.1:5672/%2f"
            prefix = "premium"
            [bindings]
            messaging = "bus"
            [tenant_bindings.bigcorp]
            messaging = "premium"
            [tenant_bindings.smallco]
            records = "sqlite"
        "#;
        let cfg = NodeConfig::parse(text, |_| None).expect("valid");
        assert_eq!(cfg.bindings.messaging, "bus");
        assert_eq!(cfg.tenant_bindings["bigcorp"].messaging, "premium");
        assert_eq!(cfg.tenant_bindings["smallco"].messaging, "bus", "a tenant without an override keeps the instance's bus");
    }

    #[test]
    fn two_names_for_one_broker_prefix_are_refused() {
        let text = r#"
            [backends.bus]
            kind = "nats"
            url = "nats://user:hunter2@127.0.0.1:4222"
            [backends.alias]
            kind = "nats"
            url = "nats://user:hunter2@127.0.0.1:4222"
            [backends.own]
            kind = "nats"
            url = "nats://user:hunter2@127.0.0.1:4222"
            prefix = "bigcorp"
            [bindings]
            messaging = "bus"
            [tenant_bindings.acme]
            messaging = "alias"
            [tenant_bindings.bigcorp]
            messaging = "own"
            [tenant_bindings.globex]
            messaging = "bus"
        "#;
        let problems = NodeConfig::parse(text, |_| None).expect_err("invalid");
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].starts_with("tenant_bindings.acme.messaging: backend \"alias\" reaches the same nats broker"), "{problems:?}");
        assert!(!problems[0].contains("hunter2"), "{problems:?}");
    }

    #[test]
    fn substitutes_environment_variables() {
        let text = "[node]\nadmin_token = \"${TOKEN}\"\nlisten = \"127.0.0.1:9000\"\n[config.orders]\ncurrency = \"CHF\"\n";
        let cfg = NodeConfig::parse(text, |k| (k == "TOKEN").then(|| "x".repeat(32))).expect("valid");
        assert_eq!(cfg.admin_token.as_deref(), Some("x".repeat(32).as_str()));
        assert_eq!(cfg.listen.port(), 9000);
        assert_eq!(cfg.capability_config["orders"]["currency"], "CHF");
    }
}

/// How long invocation journals stay in the hot audit store before they are archived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalRetention {
    /// Hours for tenants of a tier not listed in `by_tier` (default 168, a week).
    pub default_hours: u64,
    /// Hours per tier name (`free`, `pro`, `enterprise`, `custom`).
    pub by_tier: BTreeMap<String, u64>,
    /// How often the archiver runs (default 5 minutes).
    pub archive_every: std::time::Duration,
}

impl Default for JournalRetention {
    fn default() -> Self {
        JournalRetention { default_hours: 168, by_tier: BTreeMap::new(), archive_every: std::time::Duration::from_secs(300) }
    }
}

impl JournalRetention {
    /// The window of a tenant of `tier`, in seconds.
    pub fn window_secs(&self, tier: &str) -> u64 {
        self.by_tier.get(tier).copied().unwrap_or(self.default_hours).saturating_mul(3600)
    }
}
