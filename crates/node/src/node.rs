use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use runplane_adapters::static_config::StaticConfig;
use runplane_adapters::telemetry::PrometheusTelemetry;
use runplane_audit::{AuditEvent, AuditStore, LogId, NoteSigner, Outcome, Receipt};
use runplane_host::{AllowList, Host, LoadedCapability};
use runplane_ports::{ConfigStore, PROTOCOL_VERSION};
use tokio::task::JoinHandle;

use crate::auth::{KeyIndex, hash_secret, new_secret};
use crate::bindings::{BindingResolver, binding_digest};
use crate::entropy::Entropy;
use crate::clock::{Clock, SystemClock};
use crate::config::NodeConfig;
use crate::control::{ControlStore, Deployment, Tenant};
use crate::error::ApiError;
use crate::metrics::Metrics;

/// A deployment ready to serve: its record, its compiled component and its policy.
pub(crate) struct ActiveDeployment {
    pub(crate) deployment: Deployment,
    pub(crate) capability: Arc<LoadedCapability>,
    pub(crate) allow: AllowList,
}

/// The state every request handler shares.
pub struct Node {
    pub(crate) config: NodeConfig,
    pub(crate) host: Host,
    pub(crate) control: ControlStore,
    pub(crate) audit: AuditStore,
    pub(crate) keys: KeyIndex,
    pub(crate) tenants: RwLock<HashMap<String, Tenant>>,
    pub(crate) deployments: RwLock<HashMap<String, Arc<ActiveDeployment>>>,
    pub(crate) bindings: BindingResolver,
    /// Versioned configuration (spec §7.1): the snapshot each invocation sees.
    pub(crate) config_sets: Arc<crate::configsets::ConfigSets>,
    pub(crate) admin_token_hash: String,
    pub(crate) metrics: Metrics,
    pub(crate) clock: Arc<dyn Clock>,
    /// Admission: the global cap, each tenant's concurrency and queue, fair turns.
    pub(crate) scheduler: runplane_tenancy::TenantScheduler,
    pub(crate) quotas: crate::quotas::Quotas,
    /// Registered runtime contracts by id, with the route they bind.
    pub(crate) contracts: RwLock<HashMap<String, crate::api::tenancy::ContractEntry>>,
    pub(crate) subscriptions: tokio::sync::Mutex<HashMap<String, Vec<JoinHandle<()>>>>,
    pub(crate) entropy: Entropy,
    /// The binding set's version number (bumped whenever what serves a port changes).
    pub(crate) binding_version: String,
    /// The key-encryption keys of every tenant's secrets, and where they come from.
    pub(crate) keyring: runplane_secrets::SharedKeyRing,
    pub(crate) kek_source: KekSource,
    /// Capability tokens: the signing authority and the verifier (spec §7.4).
    pub(crate) tokens: crate::auth::Tokens,
    /// Flags, domains, environments, pauses, revoked tokens (spec §7.3-7.6).
    pub(crate) controlplane: crate::controlplane::ControlPlane,
    /// Where journals past their retention window go (`[audit] archive`).
    pub(crate) journal_archive: Option<Arc<dyn runplane_ports::BlobStore>>,
    /// Whether the node is draining; stops the listener ([`RunningNode::drain`]).
    pub(crate) drain: crate::drain::Drain,
    /// Whether the cached control state is current enough to act on.
    pub(crate) freshness: crate::follower::Freshness,
    /// The leader lease, when this node holds it.
    pub(crate) leadership: crate::cluster::Leadership,
    /// The address this node listens on, as membership reports it.
    pub(crate) advertised: std::sync::OnceLock<String>,
    /// The listener's certificates, when it speaks TLS.
    pub(crate) tls: std::sync::OnceLock<Arc<crate::tls::Certificates>>,
    /// The admin listener's (`[tls.admin]` applied), when it has one and TLS is on.
    pub(crate) admin_tls: std::sync::OnceLock<Arc<crate::tls::Certificates>>,
    /// The instance metadata listener's (TLS 1.3, client certificates required).
    pub(crate) metadata_tls: std::sync::OnceLock<Arc<crate::tls::Certificates>>,
    /// The instance metadata listener's address, once bound.
    pub(crate) metadata_addr: std::sync::OnceLock<SocketAddr>,
    /// Requests per second at the edge (`[rate_limits]`).
    pub(crate) limits: crate::ratelimit::RateLimits,
    /// The rollouts this node routes by, and their counters.
    pub(crate) rollouts: crate::rollouts::Rollouts,
    /// The Prometheus server rollout analyses may query (`[rollouts] prometheus_url`).
    pub(crate) prometheus: Option<crate::prometheus::PrometheusSource>,
    /// Wakes the job controller before its next tick (a job submitted, a slot freed).
    pub(crate) job_wake: tokio::sync::Notify,
}

/// Where the key-encryption keys of secrets come from.
#[derive(Debug, Clone)]
pub(crate) enum KekSource {
    /// A key file the node may append a rotated key to.
    File(std::path::PathBuf),
    /// An environment variable: rotation is the operator's (add a key there, restart).
    Env(String),
}

/// A node serving on a socket.
pub struct RunningNode {
    pub node: Arc<Node>,
    pub addr: SocketAddr,
    /// The admin listener's address, when `[node] admin_listen` gives it one.
    pub admin_addr: Option<SocketAddr>,
    /// The instance metadata listener's address, when `[node] metadata_listen` gives it one.
    pub metadata_addr: Option<SocketAddr>,
    /// The admin token, when this start generated it (first start without one configured).
    pub generated_admin_token: Option<String>,
    pub server: JoinHandle<()>,
}

impl RunningNode {
    /// Leaves without failing a request (see [`crate::drain`]): `/readyz` turns 503,
    /// after `[node] drain_delay_ms` the listener stops accepting, and in-flight
    /// requests finish (for at most the sandbox deadline plus [`crate::drain::GRACE`]).
    pub async fn drain(self) -> crate::drain::DrainOutcome {
        let node = self.node;
        node.drain.begin();
        // Membership shows `draining` from the next heartbeat; tell it now.
        let _ = node.control.set_node_state(&node.config.node_id, "draining").await;
        let delay = node.config.drain_delay;
        tracing::info!(delay_ms = delay.as_millis() as u64, "draining: /readyz answers 503; the listener closes after the delay");
        tokio::time::sleep(delay).await;
        node.drain.stop_accepting();
        let limit = node.config.sandbox.deadline() + crate::drain::GRACE;
        let outcome = match tokio::time::timeout(limit, self.server).await {
            Ok(_) => {
                tracing::info!("drained: every connection has closed");
                crate::drain::DrainOutcome::Finished
            }
            Err(_) => {
                tracing::warn!(waited_ms = limit.as_millis() as u64, "drain: connections still open after the longest invocation deadline; closing them");
                crate::drain::DrainOutcome::TimedOut
            }
        };
        node.leave().await;
        outcome
    }
}

impl Node {
    /// Opens the data directory, restores state and starts serving on `config.listen`.
    pub async fn start(config: NodeConfig) -> anyhow::Result<RunningNode> {
        Self::start_with_clock(config, Arc::new(SystemClock)).await
    }

    /// [`Node::start`] with an injected clock.
    pub async fn start_with_clock(config: NodeConfig, clock: Arc<dyn Clock>) -> anyhow::Result<RunningNode> {
        Self::start_with(config, clock, Entropy::Os).await
    }

    /// [`Node::start`] with an injected clock and source of ids and seeds.
    pub async fn start_with(config: NodeConfig, clock: Arc<dyn Clock>, entropy: Entropy) -> anyhow::Result<RunningNode> {
        let data_dir = config.data_dir.clone();
        std::fs::create_dir_all(&data_dir)
            .map_err(|e| anyhow::anyhow!("cannot create the data directory {}: {e}", data_dir.display()))?;
        // Certificates from files first: a bad file fails the start before anything
        // else is opened. The instance CA's come once the control store is open.
        let mut tls = match &config.tls {
            Some(t) if t.instance_lifetime().is_none() => Some(crate::tls::Certificates::open(t, &data_dir, config.listen)?),
            _ => None,
        };
        let prometheus = config.prometheus.as_ref().map(crate::prometheus::PrometheusSource::new).transpose().map_err(|e| anyhow::anyhow!("{e}"))?;
        let control = open_control(&config).await?;
        // The watermark is read before any state: what is loaded next is at least as
        // new, and the follower takes it from there.
        let loaded_at = std::time::Instant::now();
        let head = control.head().await?;
        let signer = instance_signer(&config, &entropy)?;
        let audit = open_audit(&config, signer).await?;
        for (log, why) in audit.refused() {
            tracing::error!(%log, problem = %why, "audit log failed its start-up integrity check: its tenant's invocations answer 503 until it is restored");
        }
        let host = Host::new(config.sandbox.clone(), data_dir.join("cache"))?;
        let metrics = Metrics::new();
        let telemetry = Arc::new(PrometheusTelemetry::new(&metrics.registry));

        let tenant_config: BTreeMap<(String, String), BTreeMap<String, String>> = config
            .tenant_config
            .iter()
            .flat_map(|(t, caps)| caps.iter().map(move |(c, kv)| ((t.clone(), c.clone()), kv.clone())))
            .collect();
        let file_config = StaticConfig::new(config.capability_config.clone(), tenant_config);
        let config_sets = Arc::new(crate::configsets::ConfigSets::new(&config.environment, file_config, &control.config_versions().await?)?);
        let config_store: Arc<dyn ConfigStore> = config_sets.clone();
        let (keyring, kek_source) = load_keyring(&config)?;
        let token_key = config.token_key_file.clone().unwrap_or_else(|| config.data_dir.join("token.key"));
        let tokens = crate::auth::Tokens::load(&token_key, &entropy)?;
        if control.is_shared() {
            same_keys_as_the_instance(&control, &config, &audit, &tokens, &keyring).await?;
        }
        let instance_id = audit.verifier().name().trim_start_matches("runplane/").to_owned();
        let controlplane = crate::controlplane::ControlPlane::load(control.clone(), instance_id).await?;
        let bindings = BindingResolver::new(&config, config_store.clone(), telemetry, keyring.clone()).await?;
        let journal_archive = Some(bindings.journal_archive(config.audit_archive.as_deref()).await?);
        let binding_version = binding_version(&control, &binding_digest(&config)).await?;

        let (admin_token_hash, generated_admin_token) = admin_token(&config, &control, &entropy).await?;
        let keys = KeyIndex::default();
        keys.replace_all(control.keys().await?);
        let tenants = control.tenants().await?.into_iter().map(|t| (t.id.clone(), t)).collect();
        let quotas = crate::quotas::Quotas::load(control.clone(), config.sandbox.fuel, config.scheduler.max_queued_per_tenant, config.control.usage_sync).await?;

        let shared = control.is_shared();
        let max_staleness = config.control.max_staleness;
        let config_limits = config.rate_limits.clone();
        let node = Arc::new(Node {
            scheduler: runplane_tenancy::TenantScheduler::new(config.sandbox.max_instances),
            quotas,
            contracts: RwLock::new(HashMap::new()),
            config,
            host,
            control,
            audit,
            keys,
            tenants: RwLock::new(tenants),
            deployments: RwLock::new(HashMap::new()),
            bindings,
            config_sets,
            admin_token_hash,
            metrics,
            clock,
            subscriptions: tokio::sync::Mutex::new(HashMap::new()),
            entropy,
            binding_version,
            keyring,
            kek_source,
            tokens,
            controlplane,
            journal_archive,
            drain: crate::drain::Drain::default(),
            freshness: crate::follower::Freshness::new(shared, max_staleness),
            leadership: crate::cluster::Leadership::default(),
            advertised: std::sync::OnceLock::new(),
            tls: tls.take().map(std::sync::OnceLock::from).unwrap_or_default(),
            admin_tls: std::sync::OnceLock::new(),
            metadata_tls: std::sync::OnceLock::new(),
            metadata_addr: std::sync::OnceLock::new(),
            limits: crate::ratelimit::RateLimits::new(&config_limits),
            rollouts: crate::rollouts::Rollouts::default(),
            prometheus,
            job_wake: tokio::sync::Notify::new(),
        });
        for d in node.control.deployments().await? {
            let route = d.route.clone();
            if let Err(e) = node.activate(d).await {
                tracing::error!(%route, error = %e, "could not restore deployment; it will answer 404 until deployed again");
            }
        }
        crate::api::tenancy::load_contracts(&node).await?;
        if let Err(e) = node.reload_rollouts().await {
            tracing::error!(error = %e.message, "could not restore the rollouts in progress; their routes serve their stable versions until the next change");
        }
        if let Some(t) = &node.config.tls
            && let Some(lifetime) = t.instance_lifetime()
        {
            crate::ca::ensure(&node).await.map_err(|e| anyhow::anyhow!("{}", e.message))?;
            crate::ca::write_files(&node, lifetime).await.map_err(|e| anyhow::anyhow!("{}", e.message))?;
            let certs = crate::tls::Certificates::open(&t.resolved(&node.config.data_dir), &node.config.data_dir, node.config.listen)?;
            let _ = node.tls.set(certs);
            crate::ca::spawn_renewal(node.clone());
        }
        crate::archiver::spawn(node.clone());
        crate::ratelimit::spawn_tidy(node.clone());
        crate::rollouts::spawn(node.clone());
        crate::jobs::spawn(node.clone());

        let listener = tokio::net::TcpListener::bind(node.config.listen)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}; choose another address with --listen", node.config.listen))?;
        let addr = listener.local_addr()?;
        let _ = node.advertised.set(addr.to_string());
        if node.control.is_shared() {
            crate::cluster::refuse_a_live_namesake(&node).await?;
        }
        crate::follower::spawn(node.clone(), head, loaded_at);
        crate::cluster::spawn(node.clone()).await;
        let app = crate::api::router(node.clone());
        if let (Some(certs), Some(settings)) = (node.tls.get(), &node.config.tls) {
            crate::tls::spawn_reloader(certs.clone(), settings.reload_check, node.drain.stopped());
        }
        let limits = node.config.http.clone();
        use crate::server::Surface;
        let (data_dir, tls) = (&node.config.data_dir, node.tls.get().and(node.config.tls.as_ref()));
        let mut extra = Vec::new();
        if let Some(at) = node.config.admin_listen {
            let bound = bind_listener(&node, at, "[node] admin_listen", tls.map(|t| t.resolved(data_dir).for_admin()), &node.admin_tls).await?;
            tracing::info!(admin_addr = %bound.1, "admin API listening on its own address");
            extra.push((bound, node.admin_tls.get().cloned(), Surface::Admin));
        }
        if let Some(at) = node.config.metadata_listen {
            // The configuration check made sure there is a client CA to verify against.
            let settings = node.config.tls.as_ref().and_then(|t| t.for_metadata()).map(|t| t.resolved(data_dir));
            let bound = bind_listener(&node, at, "[node] metadata_listen", settings, &node.metadata_tls).await?;
            let _ = node.metadata_addr.set(bound.1);
            tracing::info!(metadata_addr = %bound.1, "instance metadata interface listening (TLS 1.3, client certificates required)");
            extra.push((bound, node.metadata_tls.get().cloned(), Surface::Metadata));
        }
        let admin_addr = extra.iter().find(|(_, _, s)| *s == Surface::Admin).map(|((_, a), _, _)| *a);
        let metadata_addr = extra.iter().find(|(_, _, s)| *s == Surface::Metadata).map(|((_, a), _, _)| *a);
        let listener = crate::listener::LingeringListener::new(listener, node.tls.get().cloned(), limits.clone());
        let surface = if admin_addr.is_some() { Surface::Tenant } else { Surface::All };
        let mut servers = vec![tokio::spawn({
            let (app, limits, stopped) = (app.clone(), limits.clone(), node.drain.stopped());
            async move { crate::server::serve(listener, app, &limits, surface, stopped).await }
        })];
        for ((bound, _), certs, surface) in extra {
            let listener = crate::listener::LingeringListener::new(bound, certs, limits.clone());
            let (app, limits, stopped) = (app.clone(), limits.clone(), node.drain.stopped());
            servers.push(tokio::spawn(async move { crate::server::serve(listener, app, &limits, surface, stopped).await }));
        }
        // Drained when every listener has closed and its connections with it.
        let server = tokio::spawn(async move {
            for s in servers {
                let _ = s.await;
            }
        });
        tracing::info!(%addr, scheme = node.scheme(), node_id = %node.config.node_id, mode = node.config.mode.as_str(), "runplane node listening");
        Ok(RunningNode { node, addr, admin_addr, metadata_addr, generated_admin_token, server })
    }

    /// `https` when the listener speaks TLS, else `http`.
    pub fn scheme(&self) -> &'static str {
        if self.tls.get().is_some() { "https" } else { "http" }
    }

    /// Reads the TLS certificate files again (SIGHUP): new handshakes present the new
    /// pair; on error the old one keeps serving. `Ok(None)` without TLS.
    pub fn reload_tls(&self) -> Result<Option<crate::tls::ServingCertificate>, crate::tls::TlsError> {
        for other in [self.admin_tls.get(), self.metadata_tls.get()].into_iter().flatten() {
            other.reload()?;
        }
        self.tls.get().map(|c| c.reload()).transpose()
    }

    /// Whether a drain has begun (`/readyz` answers 503).
    pub fn is_draining(&self) -> bool {
        self.drain.is_draining()
    }

    /// Resolves once an operator asked this node to drain (`runplane operate
    /// drain-node`); the caller then drains it as on SIGTERM.
    pub async fn drain_requested(&self) {
        self.drain.requested().await
    }

    /// The node's configuration.
    pub fn config(&self) -> &NodeConfig {
        &self.config
    }

    pub(crate) fn now(&self) -> u128 {
        self.clock.now_unix_nanos()
    }

    /// Whole seconds since the Unix epoch (quota windows).
    pub(crate) fn now_secs(&self) -> u64 {
        (self.now() / 1_000_000_000) as u64
    }

    pub(crate) fn contract(&self, id: &str) -> Result<crate::api::tenancy::ContractEntry, ApiError> {
        self.contracts
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned()
            .ok_or_else(|| ApiError::not_found(format!("contract {id} is not registered; register it with POST /v1/contracts")))
    }

    pub(crate) fn tenant(&self, id: &str) -> Option<Tenant> {
        self.tenants.read().unwrap_or_else(|p| p.into_inner()).get(id).cloned()
    }

    pub(crate) fn deployment(&self, route: &str) -> Option<Arc<ActiveDeployment>> {
        self.deployments.read().unwrap_or_else(|p| p.into_inner()).get(route).cloned()
    }

    /// Compiles the deployment's component, makes it live on its route and starts its
    /// subscriptions.
    pub(crate) async fn activate(self: &Arc<Self>, d: Deployment) -> Result<(), ApiError> {
        let bytes = self.control.component(&d.digest).await?;
        let name = format!("{}@{}", d.capability, d.version);
        let capability = self.host.load(&name, &d.digest, &bytes).await?;
        if !d.subscriptions.is_empty() && !capability.exports.message_handler {
            return Err(ApiError::bad_request(
                "no_message_handler",
                format!("{name} does not export runplane:ports/message-handler, so it cannot subscribe to topics; remove the subscriptions or target the http-subscriber world"),
            ));
        }
        let active = Arc::new(ActiveDeployment { allow: AllowList::new(d.allow_hosts.clone()), capability, deployment: d.clone() });
        self.deployments.write().unwrap_or_else(|p| p.into_inner()).insert(d.route.clone(), active.clone());
        crate::subscriptions::restart(self, &active).await;
        Ok(())
    }

    /// Takes a route out of service.
    pub(crate) async fn deactivate(&self, route: &str) {
        self.deployments.write().unwrap_or_else(|p| p.into_inner()).remove(route);
        if let Some(tasks) = self.subscriptions.lock().await.remove(route) {
            for t in tasks {
                t.abort();
            }
        }
    }

    /// A skeleton audit event stamped with the node's clock.
    pub(crate) fn event(&self, actor: &str, tenant: Option<&str>, action: &str, target: &str, outcome: Outcome) -> AuditEvent {
        AuditEvent {
            protocol_version: PROTOCOL_VERSION.into(),
            event_id: self.entropy.uuid().to_string(),
            time: runplane_audit::rfc3339_utc(self.now()),
            actor: actor.into(),
            tenant: tenant.map(str::to_owned),
            action: action.into(),
            target: target.into(),
            outcome,
            context: None,
            request_digest: None,
            response_digest: None,
            capability_digest: None,
            binding_set_version: Some(self.binding_version.clone()),
            config_version: Some(self.config_sets.snapshot().version()),
            usage: None,
            details: BTreeMap::new(),
        }
    }

    /// Provisions a tenant's stores (spec §4.4) and records the result: `ready`, or
    /// `failed` with the reason. Idempotent: every step checks what exists first.
    pub(crate) async fn provision(&self, id: &str) -> Result<(), ApiError> {
        let tenant = self.tenant(id).ok_or_else(|| ApiError::not_found(format!("no tenant {id}")))?;
        let result = async {
            self.bindings.provision(id, tenant.mode).await?;
            self.seed(id, tenant.mode).await
        }
        .await;
        let (state, error) = match &result {
            Ok(()) => ("ready", None),
            Err(e) => ("failed", Some(e.message.clone())),
        };
        self.control.set_provisioning(id, state, error.as_deref()).await?;
        if let Some(t) = self.tenants.write().unwrap_or_else(|p| p.into_inner()).get_mut(id) {
            t.provisioning = state.to_owned();
            t.provisioning_error = error;
        }
        match &result {
            Ok(()) => tracing::info!(tenant = %id, "tenant provisioned"),
            Err(e) => tracing::warn!(tenant = %id, error = %e.message, "tenant provisioning failed"),
        }
        result
    }

    /// Loads `[provisioning] seed_file` into a tenant's stores. Records are created only
    /// when absent, so re-running never overwrites what the tenant changed since.
    async fn seed(&self, id: &str, mode: crate::config::Mode) -> Result<(), ApiError> {
        let Some(path) = &self.config.seed_file else { return Ok(()) };
        let text = std::fs::read_to_string(path)
            .map_err(|e| ApiError::unavailable(format!("cannot read the seed file {}: {e}", path.display())))?;
        let seed: Seed = serde_json::from_str(&text)
            .map_err(|e| ApiError::unavailable(format!("the seed file {} is not valid: {e}", path.display())))?;
        let ports = self.bindings.ports(id, mode).await?;
        let tenant = runplane_ports::TenantId::new(id).map_err(ApiError::from)?;
        for r in seed.records {
            let body = runplane_cjson::to_string(&r.body).map_err(|e| ApiError::unavailable(format!("seed record {}/{}: {e}", r.collection, r.id)))?;
            match ports.records.put(&tenant, &r.collection, &r.id, &body, Some(0)).await {
                Ok(_) | Err(runplane_ports::PortError::Conflict(_)) => {}
                Err(e) => return Err(ApiError::unavailable(format!("seeding record {}/{}: {e}", r.collection, r.id))),
            }
        }
        for kv in seed.kv {
            ports
                .kv
                .compare_and_swap(&tenant, &kv.bucket, &kv.key, None, kv.value.as_bytes())
                .await
                .map_err(|e| ApiError::unavailable(format!("seeding key {}/{}: {e}", kv.bucket, kv.key)))?;
        }
        Ok(())
    }

    /// Records what an admin handler did. Inside an admin request the facts go into the
    /// request's one `AdminEvent`, which the gate writes after the handler answered
    /// (see [`crate::api::gate`]); elsewhere the event is appended to the admin log at
    /// once. Fail closed either way.
    pub(crate) async fn audit_admin(&self, event: AuditEvent) -> Result<(), ApiError> {
        if crate::api::gate::in_admin_request() {
            crate::api::gate::annotate(|r| {
                if r.tenant.is_none() {
                    r.tenant = event.tenant.clone();
                }
                if !r.targets.contains(&event.target) {
                    r.targets.insert(0, event.target.clone());
                }
                if event.capability_digest.is_some() {
                    r.capability_digest = event.capability_digest.clone();
                }
                if event.outcome.status != "ok" {
                    r.outcome = Some(event.outcome.clone());
                }
                r.details.extend(event.details.clone());
            });
            return Ok(());
        }
        self.append(LogId::admin(), event).await.map(|_| ())
    }

    pub(crate) async fn append(&self, log: LogId, event: AuditEvent) -> Result<Receipt, ApiError> {
        self.audit.append(log, &event).await.map_err(|e| {
            self.metrics.audit_failures.inc();
            ApiError::from(e)
        })
    }
}

/// The key-encryption keys: from the environment variable `[secrets] kek_env` when it
/// is set, else from `[secrets] kek_file` (default `<data_dir>/secrets.kek`), created
/// with one new key at first start.
fn load_keyring(config: &NodeConfig) -> anyhow::Result<(runplane_secrets::SharedKeyRing, KekSource)> {
    use runplane_secrets::KeyRing;
    if let Ok(text) = std::env::var(&config.kek_env) {
        let ring = KeyRing::parse(&text).map_err(|e| anyhow::anyhow!("{} holds no usable key-encryption keys: {e}", config.kek_env))?;
        return Ok((ring.shared(), KekSource::Env(config.kek_env.clone())));
    }
    let path = config.kek_file.clone().unwrap_or_else(|| config.data_dir.join("secrets.kek"));
    let ring = match std::fs::read_to_string(&path) {
        Ok(text) => KeyRing::parse(&text).map_err(|e| {
            anyhow::anyhow!("the key file {} is unusable ({e}); restore it from a backup — without it no stored secret can be read", path.display())
        })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let ring = KeyRing::generate()?;
            write_private(&path, ring.to_text().as_bytes())
                .map_err(|e| anyhow::anyhow!("cannot write the key file {}: {e}", path.display()))?;
            tracing::info!(path = %path.display(), "created the key-encryption key file for secrets; back it up");
            ring
        }
        Err(e) => return Err(anyhow::anyhow!("cannot read the key file {}: {e}", path.display())),
    };
    Ok((ring.shared(), KekSource::File(path)))
}

impl Node {
    /// Adds a new key-encryption key and makes it current; versions wrapped under older
    /// keys are re-wrapped as they are read. Returns the key ids before and after.
    pub(crate) fn rotate_kek(&self) -> Result<(Vec<String>, Vec<String>), ApiError> {
        if self.control.is_shared() {
            return Err(ApiError::conflict(
                "the key-encryption keys are shared by every node of this instance; rotate by appending a key to the key file of every node, then restart the nodes one by one",
            ));
        }
        let path = match &self.kek_source {
            KekSource::File(path) => path,
            KekSource::Env(var) => {
                return Err(ApiError::conflict(format!(
                    "the key-encryption keys come from the environment variable {var}; rotate by appending a key to it and restarting the node"
                )));
            }
        };
        let mut guard = self.keyring.write().unwrap_or_else(|p| p.into_inner());
        let before: Vec<String> = guard.ids().into_iter().map(str::to_owned).collect();
        let rotated = guard.rotated().map_err(|e| ApiError::unavailable(e.to_string()))?;
        // The file is written (and synced) before the new key is used, so no version is
        // ever wrapped under a key that a restart would not find.
        let tmp = path.with_extension("kek.tmp");
        write_private(&tmp, rotated.to_text().as_bytes())
            .and_then(|()| std::fs::rename(&tmp, path))
            .map_err(|e| ApiError::unavailable(format!("cannot write the key file {}: {e}; the keys were not rotated", path.display())))?;
        let after = rotated.ids().into_iter().map(str::to_owned).collect();
        *guard = Arc::new(rotated);
        Ok((before, after))
    }
}

/// Resolves the admin token: configured, previously generated, or generated now.
async fn admin_token(config: &NodeConfig, control: &ControlStore, entropy: &Entropy) -> anyhow::Result<(String, Option<String>)> {
    if let Some(token) = &config.admin_token {
        return Ok((hash_secret(token), None));
    }
    if let Some(hash) = control.setting("admin_token_hash").await? {
        return Ok((hash, None));
    }
    let token = new_secret(entropy, "rpa_");
    let path = config.data_dir.join("admin-token");
    write_private(&path, token.as_bytes())?;
    control.set_setting("admin_token_hash", &hash_secret(&token)).await?;
    tracing::info!(path = %path.display(), "generated an admin token");
    Ok((hash_secret(&token), Some(token)))
}

/// The audit store: `<data_dir>/audit.db`, or the backend `[audit] store` names — on
/// PostgreSQL the schema `runplane_audit` of its shared database, on MySQL the database
/// `<database>_audit` (created if missing) — which every node of the instance appends to.
async fn open_audit(config: &NodeConfig, signer: NoteSigner) -> anyhow::Result<AuditStore> {
    use crate::config::Backend;
    let Some(name) = &config.audit_store else {
        return Ok(AuditStore::open(&config.data_dir.join("audit.db"), signer).await?);
    };
    match config.backends.get(name) {
        Some(Backend::Postgres { .. }) => {
            let options = provision_postgres(config, name, "audit store").await?;
            AuditStore::open_postgres(options, signer, config.backend_timeout).await.map_err(|e| anyhow::anyhow!("audit store {name:?}: {e}"))
        }
        Some(Backend::MySql { url, database, .. }) => {
            let server: sqlx::mysql::MySqlConnectOptions =
                url.parse().map_err(|_| anyhow::anyhow!("audit store {name:?}: the url is not a valid MySQL URL"))?;
            AuditStore::open_mysql(server, &format!("{database}_audit"), signer, config.backend_timeout)
                .await
                .map_err(|e| anyhow::anyhow!("audit store {name:?}: {e}; start MySQL/MariaDB or fix [backends.{name}]"))
        }
        _ => anyhow::bail!("the audit store {name:?} is not a postgres or mysql backend"),
    }
}

/// Makes sure the database of the postgres backend `name` exists (with its runtime
/// role and the records' migrations) and returns the owner's options for it.
async fn provision_postgres(config: &NodeConfig, name: &str, what: &str) -> anyhow::Result<sqlx::postgres::PgConnectOptions> {
    use crate::config::Backend;
    let Some(Backend::Postgres { url, database, runtime_role, runtime_password, max_connections }) = config.backends.get(name) else {
        anyhow::bail!("the {what} {name:?} is not a postgres backend");
    };
    let admin: sqlx::postgres::PgConnectOptions =
        url.parse().map_err(|_| anyhow::anyhow!("{what} {name:?}: the url is not a valid PostgreSQL URL"))?;
    let settings = runplane_adapters::postgres::PgSettings {
        admin: admin.clone(),
        database: database.clone(),
        runtime_role: runtime_role.clone(),
        runtime_password: runtime_password.clone(),
        timeout: config.backend_timeout,
        max_connections: *max_connections,
    };
    runplane_adapters::postgres::provision(&settings)
        .await
        .map_err(|e| anyhow::anyhow!("{what} {name:?}: {e}; start PostgreSQL or fix [backends.{name}]"))?;
    Ok(admin.database(database))
}

/// The control store: the embedded `control.db`, or the backend `[control] store`
/// names — on PostgreSQL the schema `runplane_control` of its shared database, on MySQL
/// the database `<database>_control` — which every node of the instance shares.
async fn open_control(config: &NodeConfig) -> anyhow::Result<ControlStore> {
    use crate::config::Backend;
    use crate::control::Home;
    let home = match &config.control_store {
        None => Home::Embedded,
        Some(name) => match config.backends.get(name) {
            Some(Backend::Postgres { url, database, .. }) => {
                provision_postgres(config, name, "control store").await?;
                Home::Postgres { url: url.clone(), database: database.clone() }
            }
            Some(Backend::MySql { url, database, .. }) => Home::MySql { url: url.clone(), database: database.clone() },
            _ => anyhow::bail!("the control store {name:?} is not a postgres or mysql backend"),
        },
    };
    let name = config.control_store.as_deref().unwrap_or("sqlite");
    ControlStore::open(&home, &config.data_dir, config.backend_timeout)
        .await
        .map_err(|e| anyhow::anyhow!("control store {name:?}: {e}; make sure it is running and reachable, or fix [backends.{name}]"))
}

/// With a shared control store every node must hold the instance's keys: the first
/// node to start records each key's public half or fingerprint, and a node whose key
/// differs is refused, naming the file (it would sign checkpoints or tokens the others
/// reject, or seal secrets they cannot open).
async fn same_keys_as_the_instance(
    control: &ControlStore,
    config: &NodeConfig,
    audit: &AuditStore,
    tokens: &crate::auth::Tokens,
    keyring: &runplane_secrets::SharedKeyRing,
) -> anyhow::Result<()> {
    let refuse = |what: &str, file: String, setting: &str| {
        anyhow::anyhow!(
            "{what} {file} is not the one the other nodes of this instance use (the control store records another for {setting}); give this node the same key file as the first node"
        )
    };
    let audit_key = audit.verifier().key_string();
    if control.setting_or_insert("instance.audit_key", &audit_key).await? != audit_key {
        let file = config.audit_key_file.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "instance.key".into());
        return Err(refuse("the instance key ([audit] key_file)", file, "instance.audit_key"));
    }
    let token_key = tokens.authority.public_key().to_string();
    if control.setting_or_insert("instance.token_key", &token_key).await? != token_key {
        let file = config.token_key_file.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "token.key".into());
        return Err(refuse("the token key ([tokens] key_file)", file, "instance.token_key"));
    }
    let fingerprints = keyring.read().unwrap_or_else(|p| p.into_inner()).fingerprints();
    for (id, fingerprint) in fingerprints {
        let setting = format!("instance.kek.{id}");
        if control.setting_or_insert(&setting, &fingerprint).await? != fingerprint {
            let file = config.kek_file.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| format!("${}", config.kek_env));
            return Err(refuse(&format!("the key-encryption key {id} ([secrets] kek_file)"), file, &setting));
        }
    }
    Ok(())
}

/// The instance's audit signing key: read from `[audit] key_file` (default
/// `<data_dir>/instance.key`), or created there at first start (mode 0600) with a new
/// instance id. The key's name, `runplane/<instance id>`, names every checkpoint.
fn instance_signer(config: &NodeConfig, entropy: &Entropy) -> anyhow::Result<NoteSigner> {
    let path = config.audit_key_file.clone().unwrap_or_else(|| config.data_dir.join("instance.key"));
    match std::fs::read_to_string(&path) {
        Ok(text) => NoteSigner::parse(&text).map_err(|e| {
            anyhow::anyhow!("the instance key {} is unusable ({e}); restore it from a backup — a new key would sign checkpoints no verifier trusts", path.display())
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut seed = [0u8; 32];
            entropy.fill(&mut seed);
            let signer = NoteSigner::new(&format!("runplane/{}", entropy.uuid()), seed)?;
            write_private(&path, format!("{}\n", signer.key_string()).as_bytes())
                .map_err(|e| anyhow::anyhow!("cannot write the instance key {}: {e}", path.display()))?;
            tracing::info!(path = %path.display(), key = %signer.verifier().key_string(), "created the instance's audit signing key");
            Ok(signer)
        }
        Err(e) => Err(anyhow::anyhow!("cannot read the instance key {}: {e}", path.display())),
    }
}

/// The version number of the binding set with `digest`: the same set keeps its number
/// across restarts; a changed set gets the next one.
async fn binding_version(control: &ControlStore, digest: &str) -> anyhow::Result<String> {
    let key = format!("binding_set.{digest}");
    if let Some(v) = control.setting(&key).await? {
        return Ok(v);
    }
    let latest: u64 = control.setting("binding_set.latest").await?.and_then(|v| v.parse().ok()).unwrap_or(0);
    let version = (latest + 1).to_string();
    control.set_setting(&key, &version).await?;
    control.set_setting("binding_set.latest", &version).await?;
    Ok(version)
}

/// `[provisioning] seed_file`: data every new tenant starts with.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Seed {
    #[serde(default)]
    records: Vec<SeedRecord>,
    #[serde(default)]
    kv: Vec<SeedKey>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SeedRecord {
    collection: String,
    id: String,
    body: serde_json::Value,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SeedKey {
    bucket: String,
    key: String,
    value: String,
}

/// Writes a file readable only by its owner.
pub fn write_private(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    options.mode(0o600);
    let mut f = options.open(path)?;
    f.write_all(bytes)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    }
    f.sync_all()
}

/// Binds one of the node's further listeners (`[node] admin_listen`,
/// `metadata_listen`) and, when `tls` is given, opens its certificates into `slot` and
/// keeps them reloaded.
async fn bind_listener(
    node: &Arc<Node>,
    at: SocketAddr,
    setting: &str,
    tls: Option<crate::tls::TlsSettings>,
    slot: &std::sync::OnceLock<Arc<crate::tls::Certificates>>,
) -> anyhow::Result<(tokio::net::TcpListener, SocketAddr)> {
    let bound = tokio::net::TcpListener::bind(at).await.map_err(|e| anyhow::anyhow!("cannot listen on {at} ({setting}): {e}; choose another address"))?;
    let addr = bound.local_addr()?;
    if let (Some(settings), Some(t)) = (tls, &node.config.tls) {
        let certs = crate::tls::Certificates::open(&settings, &node.config.data_dir, at)?;
        crate::tls::spawn_reloader(certs.clone(), t.reload_check, node.drain.stopped());
        let _ = slot.set(certs);
    }
    Ok((bound, addr))
}
