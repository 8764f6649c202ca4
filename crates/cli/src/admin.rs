//! Admin subcommands: thin clients of the node's admin API.

use std::path::PathBuf;

use anyhow::{Context, anyhow, bail};
use clap::{Args, Subcommand};
use serde_json::{Value, json};

#[derive(Args)]
pub struct Target {
    /// The node's base URL.
    #[arg(long, env = "RUNPLANE_NODE", default_value = "http://127.0.0.1:8080", global = true)]
    node: String,
    /// Admin token (default: read from <data-dir>/admin-token).
    #[arg(long, env = "RUNPLANE_ADMIN_TOKEN", global = true, hide_env_values = true)]
    token: Option<String>,
    /// The node's data directory, to find its admin token.
    #[arg(long, env = "RUNPLANE_DATA_DIR", default_value = "./runplane-data", global = true)]
    data_dir: PathBuf,
    /// A CA certificate (PEM) to trust for an https node beside the public roots: the
    /// node's own CA (for `runplane up --tls`, <data-dir>/tls/ca.pem).
    #[arg(long, env = "RUNPLANE_CA_FILE", global = true)]
    ca_file: Option<PathBuf>,
}

#[derive(Subcommand)]
pub enum AdminCommand {
    /// Manage tenants.
    Tenant {
        #[command(subcommand)]
        cmd: TenantCmd,
        #[command(flatten)]
        target: Target,
    },
    /// Manage a tenant's secrets (values are never shown).
    Secret {
        #[command(subcommand)]
        cmd: SecretCmd,
        #[command(flatten)]
        target: Target,
    },
    /// Push and list capability components.
    Capability {
        #[command(subcommand)]
        cmd: CapabilityCmd,
        #[command(flatten)]
        target: Target,
    },
    /// Register and show runtime contracts.
    Contract {
        #[command(subcommand)]
        cmd: ContractCmd,
        #[command(flatten)]
        target: Target,
    },
    /// Deploy NAME@VERSION to a route (or `deploy list`).
    Deploy {
        /// `name@version`, or `list`.
        capability: String,
        #[arg(long)]
        route: Option<String>,
        /// Host outbound HTTP may reach (repeatable).
        #[arg(long = "allow-host")]
        allow_hosts: Vec<String>,
        /// Topic delivered to the message handler (repeatable).
        #[arg(long = "subscribe")]
        subscriptions: Vec<String>,
        /// Gate the route with a feature flag: tenants for whom it is off get 403
        /// flag_disabled (an undefined flag is off; `runplane flag set` defines it).
        #[arg(long)]
        flag: Option<String>,
        #[command(flatten)]
        target: Target,
    },
    /// Take a route out of service.
    Undeploy {
        route: String,
        #[command(flatten)]
        target: Target,
    },
    /// Re-execute a journaled invocation and check it reproduces its response and audit
    /// leaf byte for byte (exit status 1 and the first divergent port call if not).
    Replay {
        invocation_id: String,
        #[command(flatten)]
        target: Target,
    },
    /// Read audit logs.
    Audit {
        #[command(subcommand)]
        cmd: AuditCmd,
        #[command(flatten)]
        target: Target,
    },
    /// Versioned configuration sets (every change is a new revision).
    Config {
        #[command(subcommand)]
        cmd: crate::control::ConfigCmd,
        #[command(flatten)]
        target: Target,
    },
    /// Feature flags, instance-wide or per tenant.
    Flag {
        #[command(subcommand)]
        cmd: crate::control::FlagCmd,
        #[command(flatten)]
        target: Target,
    },
    /// The domain registry and tenants' active domains.
    Domain {
        #[command(subcommand)]
        cmd: crate::control::DomainCmd,
        #[command(flatten)]
        target: Target,
    },
    /// Capability tokens: mint, attenuate (offline), revoke.
    Token {
        #[command(subcommand)]
        cmd: crate::control::TokenCmd,
        #[command(flatten)]
        target: Target,
    },
    /// Environments and promotion.
    Env {
        #[command(subcommand)]
        cmd: crate::control::EnvCmd,
        #[command(flatten)]
        target: Target,
    },
    /// The instance certificate authority: init, rotate, issue, revoke, list.
    Ca {
        #[command(subcommand)]
        cmd: crate::control::CaCmd,
        #[command(flatten)]
        target: Target,
    },
    /// Jobs: submit (--wait), list, show, attempts, cancel. --token: a tenant key, or an admin one with --tenant.
    Job {
        #[command(subcommand)]
        cmd: crate::job::JobCmd,
        #[command(flatten)]
        target: Target,
    },
    /// Progressive delivery: start, status (--watch), promote, abort, retry, pause, resume.
    Rollout {
        #[command(subcommand)]
        cmd: crate::rollout::RolloutCmd,
        #[command(flatten)]
        target: Target,
    },
    /// Put ROUTE back on its previous version at once.
    Undo {
        route: String,
        #[command(flatten)]
        target: Target,
    },
    /// Operator actions: pause/resume a route, drain a tenant.
    Operate {
        #[command(subcommand)]
        cmd: crate::control::OperateCmd,
        #[command(flatten)]
        target: Target,
    },
}

#[derive(Subcommand)]
pub enum TenantCmd {
    /// Create a tenant; prints its first API key.
    Create {
        id: String,
        /// shared or dedicated.
        #[arg(long)]
        mode: Option<String>,
        #[arg(long)]
        tier: Option<String>,
    },
    List,
    Suspend { id: String },
    Resume { id: String },
    Delete { id: String },
    /// Resume provisioning a tenant whose provisioning failed (each step is idempotent).
    Provision { id: String },
    /// Issue another API key.
    Key { id: String },
    /// Show a tenant's quota and usage; with any option, change those fields (audited).
    Quota {
        id: String,
        #[arg(long)]
        cpu_seconds: Option<u64>,
        #[arg(long)]
        memory_mb: Option<u64>,
        #[arg(long)]
        disk_mb: Option<u64>,
        #[arg(long)]
        network_kb: Option<u64>,
        #[arg(long)]
        concurrent_tasks: Option<u32>,
        #[arg(long)]
        window_seconds: Option<u64>,
        /// Why (recorded in the audit event).
        #[arg(long)]
        reason: Option<String>,
    },
}

#[derive(Subcommand)]
pub enum ContractCmd {
    /// Register a runtime contract (a JSON file) for the task export on a route.
    Register {
        file: PathBuf,
        #[arg(long)]
        route: String,
    },
    Show { id: String },
}

#[derive(Subcommand)]
pub enum SecretCmd {
    /// Store a new version (a rotation); the value is read from stdin.
    Put { tenant: String, name: String },
    List { tenant: String },
    /// Rotate the key-encryption key (old versions stay readable, re-wrapped lazily).
    RotateKek,
}

#[derive(Subcommand)]
pub enum CapabilityCmd {
    /// Push a .wasm component.
    Push {
        file: PathBuf,
        #[arg(long)]
        name: String,
        #[arg(long)]
        version: String,
    },
    List,
}

#[derive(Subcommand)]
pub enum AuditCmd {
    /// List logs and their sizes.
    Logs,
    /// Print a log's events (`admin` or `tenant:<id>`).
    Events {
        log: String,
        #[arg(long, default_value_t = 0)]
        from: u64,
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// Print the instance's public audit key (pin it for `audit verify --key`).
    Key,
    /// Recompute a log's root from its stored events and compare it with the stored root.
    Replay { log: String },
    /// Print a log's latest signed checkpoint (signing one if the log grew).
    Checkpoint {
        log: String,
        /// Also write the signed note to this file (to pass to `audit verify --since` later).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Print an RFC 9162 inclusion or consistency proof.
    Proof {
        #[command(subcommand)]
        cmd: ProofCmd,
    },
    /// Write a log's entries, latest checkpoint and public key to a bundle file.
    Export {
        log: String,
        #[arg(long)]
        out: PathBuf,
    },
    /// Verify an exported bundle offline: root, signature, and consistency with an
    /// earlier checkpoint. Needs no node.
    Verify {
        bundle: PathBuf,
        /// A signed checkpoint saved earlier (`audit checkpoint --out`); the log must extend it.
        #[arg(long)]
        since: Option<PathBuf>,
        /// The verifier key to trust (default: the one in the bundle).
        #[arg(long)]
        key: Option<String>,
    },
}

#[derive(Subcommand)]
pub enum ProofCmd {
    /// That entry INDEX is in the log at SIZE (default: now).
    Inclusion {
        log: String,
        index: u64,
        #[arg(long)]
        size: Option<u64>,
    },
    /// That the log at SECOND (default: now) extends the log at FIRST.
    Consistency {
        log: String,
        first: u64,
        second: Option<u64>,
    },
}

/// An authenticated admin API client.
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Client {
    pub fn new(base: &str, token: String) -> Self {
        Client { http: reqwest::Client::new(), base: base.trim_end_matches('/').to_owned(), token }
    }

    /// A client that also trusts the CA certificate(s) in `ca_file` (PEM).
    pub fn with_ca(base: &str, token: String, ca_file: &std::path::Path) -> anyhow::Result<Self> {
        let pem = std::fs::read(ca_file).with_context(|| format!("cannot read the CA file {}", ca_file.display()))?;
        let mut builder = reqwest::Client::builder();
        for cert in reqwest::Certificate::from_pem_bundle(&pem).with_context(|| format!("{} holds no PEM certificate", ca_file.display()))? {
            builder = builder.add_root_certificate(cert);
        }
        let http = builder.build().context("cannot set up the HTTPS client")?;
        Ok(Client { http, base: base.trim_end_matches('/').to_owned(), token })
    }

    pub(crate) fn from_target(t: &Target) -> anyhow::Result<Self> {
        let token = match &t.token {
            Some(t) => t.clone(),
            None => {
                let path = t.data_dir.join("admin-token");
                std::fs::read_to_string(&path)
                    .map(|s| s.trim().to_owned())
                    .with_context(|| format!("no admin token: pass --token, set RUNPLANE_ADMIN_TOKEN, or point --data-dir at the node's data directory (could not read {})", path.display()))?
            }
        };
        match &t.ca_file {
            Some(ca) => Client::with_ca(&t.node, token, ca),
            None => Ok(Client::new(&t.node, token)),
        }
    }

    pub async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        let mut req = self.http.request(method, format!("{}{path}", self.base)).bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        Self::finish(req.send().await.with_context(|| format!("cannot reach the node at {}; is it running?", self.base))?).await
    }

    pub async fn push(&self, name: &str, version: &str, bytes: Vec<u8>) -> anyhow::Result<Value> {
        let req = self
            .http
            .post(format!("{}/v1/capabilities", self.base))
            .query(&[("name", name), ("version", version)])
            .bearer_auth(&self.token)
            .header("content-type", "application/wasm")
            .body(bytes);
        Self::finish(req.send().await.with_context(|| format!("cannot reach the node at {}; is it running?", self.base))?).await
    }

    async fn finish(resp: reqwest::Response) -> anyhow::Result<Value> {
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        let value: Value = if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::String(text)) };
        if status.is_success() {
            return Ok(value);
        }
        match value.pointer("/error/message").and_then(Value::as_str) {
            Some(msg) => Err(anyhow!("{} (HTTP {status})", crate::hints::for_cli(msg))),
            None => Err(anyhow!("the node answered HTTP {status}: {value}")),
        }
    }
}

/// `s` as one URL path segment or query value: every byte but `A-Z a-z 0-9 - . _ ~`
/// percent-encoded, so a name holding `/`, `?`, `#` or `%` reaches the node as typed
/// instead of naming another resource.
pub(crate) fn seg(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

pub(crate) fn print(v: &Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

pub async fn run(cmd: AdminCommand) -> anyhow::Result<()> {
    use reqwest::Method;
    match cmd {
        AdminCommand::Tenant { cmd, target } => {
            let c = Client::from_target(&target)?;
            let v = match cmd {
                TenantCmd::Create { id, mode, tier } => c.call(Method::POST, "/v1/tenants", Some(json!({"id": id, "mode": mode, "tier": tier}))).await?,
                TenantCmd::List => c.call(Method::GET, "/v1/tenants", None).await?,
                TenantCmd::Suspend { id } => c.call(Method::POST, &format!("/v1/tenants/{}/suspend", seg(&id)), None).await?,
                TenantCmd::Resume { id } => c.call(Method::POST, &format!("/v1/tenants/{}/resume", seg(&id)), None).await?,
                TenantCmd::Delete { id } => {
                    c.call(Method::DELETE, &format!("/v1/tenants/{}", seg(&id)), None).await?;
                    println!("deleted tenant {id} and revoked its keys; its data is kept for the retention period");
                    return Ok(());
                }
                TenantCmd::Provision { id } => c.call(Method::POST, &format!("/v1/tenants/{}/provision", seg(&id)), None).await?,
                TenantCmd::Key { id } => c.call(Method::POST, &format!("/v1/tenants/{}/keys", seg(&id)), None).await?,
                TenantCmd::Quota { id, cpu_seconds, memory_mb, disk_mb, network_kb, concurrent_tasks, window_seconds, reason } => {
                    let path = format!("/v1/tenants/{}/quota", seg(&id));
                    let changes = [
                        ("max_cpu_seconds", cpu_seconds),
                        ("max_memory_mb", memory_mb),
                        ("max_disk_mb", disk_mb),
                        ("max_network_kb", network_kb),
                        ("max_concurrent_tasks", concurrent_tasks.map(u64::from)),
                        ("window_seconds", window_seconds),
                    ];
                    if changes.iter().all(|(_, v)| v.is_none()) {
                        c.call(Method::GET, &path, None).await?
                    } else {
                        let mut quota = c.call(Method::GET, &path, None).await?["quota"].clone();
                        for (field, value) in changes {
                            if let Some(v) = value {
                                quota[field] = json!(v);
                            }
                        }
                        c.call(Method::PUT, &path, Some(json!({"quota": quota, "reason": reason}))).await?
                    }
                }
            };
            print(&v);
        }
        AdminCommand::Contract { cmd, target } => {
            let c = Client::from_target(&target)?;
            let v = match cmd {
                ContractCmd::Register { file, route } => {
                    let text = std::fs::read_to_string(&file).with_context(|| format!("cannot read the contract file {}", file.display()))?;
                    let contract: Value = serde_json::from_str(&text).with_context(|| format!("{} is not JSON", file.display()))?;
                    c.call(Method::POST, "/v1/contracts", Some(json!({"route": route, "contract": contract}))).await?
                }
                ContractCmd::Show { id } => c.call(Method::GET, &format!("/v1/contracts/{}", seg(&id)), None).await?,
            };
            print(&v);
        }
        AdminCommand::Secret { cmd, target } => {
            let c = Client::from_target(&target)?;
            let v = match cmd {
                SecretCmd::Put { tenant, name } => {
                    // Before reading the value: a name the node refuses (or that cannot be
                    // one path segment, like `..`) fails at once.
                    runplane_ports::validate_name("secret", &name, 128).map_err(|e| anyhow!("{e}"))?;
                    let mut value = String::new();
                    std::io::Read::read_to_string(&mut std::io::stdin(), &mut value).context("cannot read the secret from stdin")?;
                    let value = value.trim_end_matches(['\n', '\r']).to_owned();
                    if value.is_empty() {
                        bail!("the secret value on stdin is empty; pipe the value in, e.g. printf %s \"$VALUE\" | runplane secret put TENANT NAME");
                    }
                    c.call(Method::PUT, &format!("/v1/tenants/{}/secrets/{}", seg(&tenant), seg(&name)), Some(json!({"value": value}))).await?
                }
                SecretCmd::List { tenant } => c.call(Method::GET, &format!("/v1/tenants/{}/secrets", seg(&tenant)), None).await?,
                SecretCmd::RotateKek => c.call(Method::POST, "/v1/secrets/kek/rotate", None).await?,
            };
            print(&v);
        }
        AdminCommand::Capability { cmd, target } => {
            let c = Client::from_target(&target)?;
            let v = match cmd {
                CapabilityCmd::Push { file, name, version } => {
                    let bytes = std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
                    c.push(&name, &version, bytes).await?
                }
                CapabilityCmd::List => c.call(Method::GET, "/v1/capabilities", None).await?,
            };
            print(&v);
        }
        AdminCommand::Deploy { capability, route, allow_hosts, subscriptions, flag, target } => {
            let c = Client::from_target(&target)?;
            if capability == "list" {
                print(&c.call(Method::GET, "/v1/deployments", None).await?);
                return Ok(());
            }
            let (name, version) = capability
                .split_once('@')
                .ok_or_else(|| anyhow!("{capability:?} is not name@version, e.g. orders@1.0.0"))?;
            let body = json!({"capability": name, "version": version, "route": route, "allow_hosts": allow_hosts, "subscriptions": subscriptions, "flag": flag});
            print(&c.call(Method::POST, "/v1/deployments", Some(body)).await?);
        }
        AdminCommand::Undeploy { route, target } => {
            Client::from_target(&target)?.call(Method::DELETE, &format!("/v1/deployments/{}", seg(&route)), None).await?;
            println!("route {route} undeployed");
        }
        AdminCommand::Replay { invocation_id, target } => {
            let v = Client::from_target(&target)?.call(Method::POST, &format!("/v1/replay/{}", seg(&invocation_id)), None).await?;
            print(&v);
            if v["identical"] != Value::Bool(true) {
                match v["divergence"].as_object() {
                    Some(d) => bail!(
                        "invocation {invocation_id} is not deterministic: at port call #{} the original made {}, the replay made {}",
                        d.get("index").unwrap_or(&Value::Null),
                        d.get("expected").and_then(Value::as_str).unwrap_or("?"),
                        d.get("found").and_then(Value::as_str).unwrap_or("?")
                    ),
                    None => bail!("invocation {invocation_id} replayed to a different result; differing event fields: {}", v["differing_fields"]),
                }
            }
            println!("identical: invocation {invocation_id} reproduces its response and audit leaf");
        }
        AdminCommand::Config { cmd, target } => crate::control::config(&Client::from_target(&target)?, cmd).await?,
        AdminCommand::Flag { cmd, target } => crate::control::flag(&Client::from_target(&target)?, cmd).await?,
        AdminCommand::Domain { cmd, target } => crate::control::domain(&Client::from_target(&target)?, cmd).await?,
        AdminCommand::Token { cmd: crate::control::TokenCmd::Attenuate { token, operations, routes, expires_in_secs }, .. } => {
            crate::control::attenuate(&token, operations, routes, expires_in_secs)?
        }
        AdminCommand::Token { cmd, target } => crate::control::token(&Client::from_target(&target)?, cmd).await?,
        AdminCommand::Env { cmd, target } => crate::control::env(&Client::from_target(&target)?, cmd).await?,
        AdminCommand::Operate { cmd, target } => crate::control::operate(&Client::from_target(&target)?, cmd).await?,
        AdminCommand::Ca { cmd, target } => crate::control::ca(&Client::from_target(&target)?, cmd).await?,
        AdminCommand::Job { cmd, target } => crate::job::run(&Client::from_target(&target)?, cmd).await?,
        AdminCommand::Rollout { cmd, target } => crate::rollout::run(&Client::from_target(&target)?, cmd).await?,
        AdminCommand::Undo { route, target } => crate::rollout::undo(&Client::from_target(&target)?, &route).await?,
        AdminCommand::Audit { cmd: AuditCmd::Verify { bundle, since, key }, .. } => verify_bundle(&bundle, since.as_deref(), key.as_deref())?,
        AdminCommand::Audit { cmd: AuditCmd::Export { log, out }, target } => export_bundle(&Client::from_target(&target)?, &log, &out).await?,
        AdminCommand::Audit { cmd, target } => {
            let c = Client::from_target(&target)?;
            let v = match cmd {
                AuditCmd::Logs => c.call(Method::GET, "/v1/audit/logs", None).await?,
                AuditCmd::Events { log, from, limit } => {
                    c.call(Method::GET, &format!("/v1/audit/events?log={}&cursor={from}&limit={limit}", seg(&log)), None).await?
                }
                AuditCmd::Key => c.call(Method::GET, "/v1/audit/key", None).await?,
                AuditCmd::Replay { log } => {
                    let v = c.call(Method::POST, &format!("/v1/audit/logs/{}/replay", seg(&log)), None).await?;
                    if v["identical"] != Value::Bool(true) {
                        print(&v);
                        bail!("log {log}: the root recomputed from the stored events differs from the stored root: {}", v["problem"]);
                    }
                    v
                }
                AuditCmd::Checkpoint { log, out } => {
                    let v = c.call(Method::GET, &format!("/v1/audit/logs/{}/checkpoint", seg(&log)), None).await?;
                    if let Some(out) = out {
                        let note = v["note"].as_str().ok_or_else(|| anyhow!("the node's checkpoint answer has no note"))?;
                        std::fs::write(&out, note).with_context(|| format!("cannot write {}", out.display()))?;
                    }
                    v
                }
                AuditCmd::Proof { cmd: ProofCmd::Inclusion { log, index, size } } => {
                    let size = size.map(|s| format!("&size={s}")).unwrap_or_default();
                    c.call(Method::GET, &format!("/v1/audit/logs/{}/proof/inclusion?index={index}{size}", seg(&log)), None).await?
                }
                AuditCmd::Proof { cmd: ProofCmd::Consistency { log, first, second } } => {
                    let second = second.map(|s| format!("&second={s}")).unwrap_or_default();
                    c.call(Method::GET, &format!("/v1/audit/logs/{}/proof/consistency?first={first}{second}", seg(&log)), None).await?
                }
                AuditCmd::Export { .. } | AuditCmd::Verify { .. } => unreachable!("handled above"),
            };
            print(&v);
        }
    }
    Ok(())
}

/// Fetches the latest checkpoint, then every entry up to its size, and writes a bundle.
async fn export_bundle(c: &Client, log: &str, out: &std::path::Path) -> anyhow::Result<()> {
    use reqwest::Method;
    let key = c.call(Method::GET, "/v1/audit/key", None).await?;
    let cp = c.call(Method::GET, &format!("/v1/audit/logs/{}/checkpoint", seg(log)), None).await?;
    let size = cp["size"].as_u64().ok_or_else(|| anyhow!("the node's checkpoint answer has no size"))?;
    let (mut entries, mut leaf_hashes) = (Vec::new(), Vec::new());
    while (entries.len() as u64) < size {
        let page = c.call(Method::GET, &format!("/v1/audit/logs/{}/entries?cursor={}&limit=1000", seg(log), entries.len()), None).await?;
        let items = page["items"].as_array().cloned().unwrap_or_default();
        if items.is_empty() {
            bail!("the node returned {} entries of log {log} but its checkpoint has {size}; the log may be damaged", entries.len());
        }
        for item in items.into_iter().take(size as usize - entries.len()) {
            entries.push(item["entry"].as_str().unwrap_or_default().to_owned());
            leaf_hashes.push(item["leaf_hash"].as_str().unwrap_or_default().to_owned());
        }
        eprint!("\rexported {}/{size} entries", entries.len());
    }
    eprintln!();
    let bundle = runplane_audit::bundle::Bundle {
        format: runplane_audit::bundle::BUNDLE_FORMAT.into(),
        protocol_version: "1.0".into(),
        log: log.to_owned(),
        verifier_key: key["verifier_key"].as_str().unwrap_or_default().to_owned(),
        checkpoint: cp["note"].as_str().unwrap_or_default().to_owned(),
        entries,
        leaf_hashes,
    };
    std::fs::write(out, serde_json::to_vec(&bundle)?).with_context(|| format!("cannot write {}", out.display()))?;
    println!("wrote {} ({size} entries of {log}, checkpoint root {})", out.display(), cp["root"].as_str().unwrap_or_default());
    Ok(())
}

/// `audit verify`: offline, from the bundle alone.
fn verify_bundle(path: &std::path::Path, since: Option<&std::path::Path>, key: Option<&str>) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let bundle: runplane_audit::bundle::Bundle =
        serde_json::from_str(&text).with_context(|| format!("{} is not an audit bundle (write one with `runplane audit export`)", path.display()))?;
    let earlier = since.map(|p| std::fs::read_to_string(p).with_context(|| format!("cannot read the checkpoint {}", p.display()))).transpose()?;
    match runplane_audit::bundle::verify(&bundle, earlier.as_deref(), key) {
        Ok(r) => {
            let checked_with = if key.is_some() { "the key given with --key" } else { "the key inside the bundle" };
            println!(
                "OK: log {} — {} entries, root {}, signature by {} valid (checked with {checked_with})",
                r.log,
                r.size,
                hex_of(&r.root),
                bundle.verifier_key.split('+').next().unwrap_or("")
            );
            if key.is_none() {
                eprintln!(
                    "warning: the signature was checked with the key inside the bundle, which whoever wrote the bundle chose too: \
                     this shows the bundle is consistent with itself, not that the instance signed it. Pass the instance's key \
                     with --key (`runplane audit key` prints it; keep it where the bundle's writer cannot change it)"
                );
            }
            if let Some((size, root)) = r.consistent_with {
                println!("OK: consistent with the earlier checkpoint of size {size} (root {})", hex_of(&root));
            }
            Ok(())
        }
        Err(e) => bail!("verification FAILED for {}: {e}", path.display()),
    }
}

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
