//! Control-plane subcommands (spec §7): config sets, flags, domains, tokens,
//! environments, operator actions. Thin clients of the admin API, except token
//! attenuation, which needs no node: a holder narrows its own token offline.

use std::collections::BTreeMap;

use anyhow::{Context, bail};
use clap::Subcommand;
use reqwest::Method;
use serde_json::{Value, json};

use crate::admin::{Client, print, seg};

#[derive(Subcommand)]
pub enum ConfigCmd {
    /// Show every scope's current set and the config version.
    Show,
    /// The revision history (of one scope with --scope).
    History {
        #[arg(long)]
        scope: Option<String>,
    },
    /// Replace a scope's set (`environment:<env>`, `capability:<name>`,
    /// `tenant:<tenant>:<name>`) with KEY=VALUE pairs.
    Set {
        scope: String,
        /// KEY=VALUE (repeatable); the whole new set.
        values: Vec<String>,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Make an older revision of a scope current again (as a new revision).
    Rollback {
        scope: String,
        to_version: u64,
        #[arg(long)]
        reason: Option<String>,
    },
}

#[derive(Subcommand)]
pub enum FlagCmd {
    /// Instance flags, or a tenant's with --tenant.
    List {
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Create or change a flag. Only the fields given change: the flag is read and
    /// written back with them (a concurrent change between the two is overwritten).
    /// `none` removes a --percent, --tier or --activation-date.
    Set {
        feature: String,
        /// Switch it on or off: true or false (required to create a flag).
        #[arg(long)]
        enabled: Option<bool>,
        #[arg(long)]
        tenant: Option<String>,
        /// 0-100: the share of tenants it is on for (`none`: every tenant).
        #[arg(long)]
        percent: Option<Change<u32>>,
        /// Minimum tier: free, pro or enterprise (`none`: every tier).
        #[arg(long)]
        tier: Option<Change<String>>,
        /// RFC 3339 UTC instant before which it is off (`none`: at once).
        #[arg(long)]
        activation_date: Option<Change<String>>,
    },
    /// Delete a flag; a tenant's (--tenant) gives way to the instance flag again.
    Delete {
        feature: String,
        #[arg(long)]
        tenant: Option<String>,
    },
}

#[derive(Subcommand)]
pub enum DomainCmd {
    /// The registry.
    List,
    /// Register a domain from a JSON file (`CapabilityDomain`).
    Register { file: std::path::PathBuf },
    /// A tenant's active domains and its tier's limit.
    Show { tenant: String },
    Activate { tenant: String, domain: String },
    Deactivate { tenant: String, domain: String },
}

#[derive(Subcommand)]
pub enum TokenCmd {
    /// Mint a token: instance-wide roles, or with --tenant tenant-admin / tenant.
    Mint {
        role: String,
        #[arg(long)]
        subject: String,
        #[arg(long)]
        tenant: Option<String>,
        #[arg(long)]
        ttl_secs: Option<u64>,
    },
    /// Narrow a token offline (no node needed): the result can do only what both allow.
    Attenuate {
        token: String,
        /// Operations it may still perform (repeatable), e.g. audit.read.
        #[arg(long = "operation")]
        operations: Vec<String>,
        /// Routes it may still invoke (repeatable).
        #[arg(long = "route")]
        routes: Vec<String>,
        /// Expire this many seconds from now.
        #[arg(long)]
        expires_in_secs: Option<u64>,
    },
    /// Revoke a token and every token narrowed from it (not the token it was narrowed
    /// from), or every token carrying one revocation id: refused from their next use.
    Revoke {
        token_or_id: String,
        /// Revoke the whole chain: the tokens it was narrowed from too, and everything
        /// narrowed from any of them.
        #[arg(long)]
        chain: bool,
        #[arg(long)]
        reason: Option<String>,
    },
    /// List revoked token ids.
    Revoked,
}

#[derive(Subcommand)]
pub enum EnvCmd {
    /// The registry, with releases.
    List,
    /// Create or change an environment from a JSON file.
    Set { name: String, file: std::path::PathBuf },
    /// Promote NAME@VERSION into an environment.
    Promote {
        environment: String,
        capability: String,
        #[arg(long)]
        from: Option<String>,
        #[arg(long)]
        reason: Option<String>,
    },
}

#[derive(Subcommand)]
pub enum OperateCmd {
    Pause { route: String },
    Resume { route: String },
    /// Suspend a tenant and wait for its running invocations to finish.
    Drain {
        tenant: String,
        #[arg(long, default_value_t = 30)]
        timeout_secs: u64,
    },
    /// Drain a node of the instance as SIGTERM would: its /readyz turns 503, it
    /// finishes what it runs, deregisters and exits.
    DrainNode {
        #[arg(value_name = "NODE")]
        node_id: String,
    },
    /// The instance's nodes: state, region, address, last heartbeat, in-flight.
    Nodes,
    /// Have the node read its TLS certificate files again (as SIGHUP does).
    ReloadTls,
}

#[derive(Subcommand)]
pub enum CaCmd {
    /// Create the instance certificate authority.
    Init,
    /// Replace it: a new authority signs from now on; the old ones stay trusted for the overlap.
    Rotate {
        #[arg(long, default_value_t = 86_400)]
        overlap_secs: u64,
    },
    /// Issue a certificate: the key is made here and never sent; writes OUT.pem, OUT.key
    /// (mode 0600) and OUT.ca.pem (the bundle to trust).
    Issue {
        /// `client` (mutual TLS) or `node`.
        #[arg(long, default_value = "client")]
        kind: String,
        /// Who it identifies (its common name).
        #[arg(long)]
        subject: String,
        /// A DNS name or IP address it is for (repeatable).
        #[arg(long = "name")]
        names: Vec<String>,
        #[arg(long)]
        lifetime_secs: Option<u64>,
        /// Where to write it: OUT.pem, OUT.key, OUT.ca.pem.
        #[arg(long)]
        out: std::path::PathBuf,
    },
    /// Revoke a certificate by serial: every node refuses it from its next handshake.
    Revoke {
        serial: String,
        #[arg(long)]
        reason: Option<String>,
    },
    /// The authorities and every issued certificate.
    List,
}

pub async fn ca(c: &Client, cmd: CaCmd) -> anyhow::Result<()> {
    let v = match cmd {
        CaCmd::Init => c.call(Method::POST, "/v1/ca", None).await?,
        CaCmd::Rotate { overlap_secs } => c.call(Method::POST, "/v1/ca/rotate", Some(json!({"overlap_secs": overlap_secs}))).await?,
        CaCmd::Issue { kind, subject, names, lifetime_secs, out } => {
            let key = rcgen::KeyPair::generate().context("cannot make a key")?;
            let mut params = rcgen::CertificateParams::new(names.clone()).context("a --name is not a valid DNS name or IP address")?;
            params.distinguished_name.push(rcgen::DnType::CommonName, subject.as_str());
            let csr = params.serialize_request(&key).context("cannot make the certificate signing request")?.pem().context("cannot write the request")?;
            let body = json!({"kind": kind, "subject": subject, "names": names, "lifetime_secs": lifetime_secs, "csr_pem": csr});
            let issued = c.call(Method::POST, "/v1/ca/certificates", Some(body)).await?;
            let with = |ext: &str| std::path::PathBuf::from(format!("{}.{ext}", out.display()));
            runplane_node::write_private(&with("key"), key.serialize_pem().as_bytes()).with_context(|| format!("cannot write {}", with("key").display()))?;
            std::fs::write(with("pem"), issued["certificate_pem"].as_str().unwrap_or_default()).with_context(|| format!("cannot write {}", with("pem").display()))?;
            std::fs::write(with("ca.pem"), issued["trust_bundle_pem"].as_str().unwrap_or_default()).with_context(|| format!("cannot write {}", with("ca.pem").display()))?;
            eprintln!("wrote {} , {} (private, mode 0600) and {}", with("pem").display(), with("key").display(), with("ca.pem").display());
            issued["certificate"].clone()
        }
        CaCmd::Revoke { serial, reason } => c.call(Method::POST, &format!("/v1/ca/certificates/{}/revoke", seg(&serial)), Some(json!({"reason": reason}))).await?,
        CaCmd::List => {
            let authorities = c.call(Method::GET, "/v1/ca", None).await?;
            let certificates = c.call(Method::GET, "/v1/ca/certificates", None).await?;
            json!({"authorities": authorities["authorities"], "certificates": certificates["items"]})
        }
    };
    print(&v);
    Ok(())
}

pub async fn config(c: &Client, cmd: ConfigCmd) -> anyhow::Result<()> {
    let v = match cmd {
        ConfigCmd::Show => c.call(Method::GET, "/v1/config", None).await?,
        ConfigCmd::History { scope } => {
            let q = scope.map(|s| format!("?scope={}", seg(&s))).unwrap_or_default();
            c.call(Method::GET, &format!("/v1/config/versions{q}"), None).await?
        }
        ConfigCmd::Set { scope, values, reason } => {
            let mut map = BTreeMap::new();
            for kv in values {
                let Some((k, v)) = kv.split_once('=') else { bail!("{kv:?} is not KEY=VALUE") };
                map.insert(k.to_owned(), v.to_owned());
            }
            c.call(Method::PUT, &format!("/v1/config/sets/{}", seg(&scope)), Some(json!({"values": map, "reason": reason}))).await?
        }
        ConfigCmd::Rollback { scope, to_version, reason } => {
            c.call(Method::POST, &format!("/v1/config/sets/{}/rollback", seg(&scope)), Some(json!({"to_version": to_version, "reason": reason}))).await?
        }
    };
    print(&v);
    Ok(())
}

fn flag_path(tenant: &Option<String>, feature: &str) -> String {
    match tenant {
        Some(t) => format!("/v1/tenants/{}/flags/{}", seg(t), seg(feature)),
        None => format!("/v1/flags/{}", seg(feature)),
    }
}

/// A value an option sets, or `none` to remove it.
#[derive(Debug, Clone, PartialEq)]
pub enum Change<T> {
    Set(T),
    Clear,
}

impl<T: std::str::FromStr> std::str::FromStr for Change<T>
where
    T::Err: std::fmt::Display,
{
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if s == "none" {
            return Ok(Change::Clear);
        }
        s.parse().map(Change::Set).map_err(|e| format!("{e} (or `none` to remove it)"))
    }
}

/// Applies an option to one field of a flag read from the node.
fn change<T: serde::Serialize>(flag: &mut serde_json::Map<String, Value>, field: &str, c: Option<Change<T>>) {
    match c {
        None => {}
        Some(Change::Clear) => {
            flag.remove(field);
        }
        Some(Change::Set(v)) => {
            flag.insert(field.to_owned(), json!(v));
        }
    }
}

/// `flag set`: reads the flag, changes the given fields and writes it back, so a field
/// left out keeps its value (the API's PUT replaces the whole flag).
async fn set_flag(
    c: &Client,
    feature: &str,
    tenant: &Option<String>,
    enabled: Option<bool>,
    percent: Option<Change<u32>>,
    tier: Option<Change<String>>,
    activation_date: Option<Change<String>>,
) -> anyhow::Result<Value> {
    if enabled.is_none() && percent.is_none() && tier.is_none() && activation_date.is_none() {
        bail!("nothing to change: give --enabled true|false, --percent, --tier or --activation-date");
    }
    if let Some(Change::Set(p)) = percent
        && p > 100
    {
        bail!("--percent {p} is not a share: give 0-100, or none for every tenant");
    }
    let list = match tenant {
        Some(t) => format!("/v1/tenants/{}/flags", seg(t)),
        None => "/v1/flags".to_owned(),
    };
    let current = c.call(Method::GET, &list, None).await?["items"]
        .as_array()
        .and_then(|items| items.iter().find(|f| f["feature_id"] == feature).cloned());
    let whose = tenant.as_ref().map(|t| format!("tenant {t} has no flag {feature}")).unwrap_or_else(|| format!("there is no instance flag {feature}"));
    let mut flag = match current {
        Some(Value::Object(f)) => f,
        _ if enabled.is_none() => bail!("{whose}; create it with --enabled true (or --enabled false)"),
        _ => serde_json::Map::new(),
    };
    if let Some(e) = enabled {
        flag.insert("enabled".into(), e.into());
    }
    change(&mut flag, "rollout_percent", percent);
    change(&mut flag, "entitlement_tier", tier);
    change(&mut flag, "activation_date", activation_date);
    // The path names the flag and the node its instance: the body carries neither.
    flag.remove("feature_id");
    flag.remove("instance_id");
    c.call(Method::PUT, &flag_path(tenant, feature), Some(Value::Object(flag))).await
}

pub async fn flag(c: &Client, cmd: FlagCmd) -> anyhow::Result<()> {
    let v = match cmd {
        FlagCmd::List { tenant: Some(t) } => c.call(Method::GET, &format!("/v1/tenants/{}/flags", seg(&t)), None).await?,
        FlagCmd::List { tenant: None } => c.call(Method::GET, "/v1/flags", None).await?,
        FlagCmd::Set { feature, enabled, tenant, percent, tier, activation_date } => {
            set_flag(c, &feature, &tenant, enabled, percent, tier, activation_date).await?
        }
        FlagCmd::Delete { feature, tenant } => {
            c.call(Method::DELETE, &flag_path(&tenant, &feature), None).await?;
            match tenant {
                Some(t) => println!("deleted tenant {t}'s flag {feature}; the instance flag {feature}, if any, applies to {t} again"),
                None => println!("deleted the instance flag {feature}; tenants without a flag {feature} of their own now have it off"),
            }
            return Ok(());
        }
    };
    print(&v);
    Ok(())
}

fn json_file(file: &std::path::Path) -> anyhow::Result<Value> {
    let text = std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not JSON", file.display()))
}

pub async fn domain(c: &Client, cmd: DomainCmd) -> anyhow::Result<()> {
    let v = match cmd {
        DomainCmd::List => c.call(Method::GET, "/v1/domains", None).await?,
        DomainCmd::Register { file } => {
            let d = json_file(&file)?;
            let id = d["domain_id"].as_str().with_context(|| format!("{} has no domain_id", file.display()))?.to_owned();
            c.call(Method::PUT, &format!("/v1/domains/{}", seg(&id)), Some(d)).await?
        }
        DomainCmd::Show { tenant } => c.call(Method::GET, &format!("/v1/tenants/{}/domains", seg(&tenant)), None).await?,
        DomainCmd::Activate { tenant, domain } => c.call(Method::POST, &format!("/v1/tenants/{}/domains/{}", seg(&tenant), seg(&domain)), None).await?,
        DomainCmd::Deactivate { tenant, domain } => c.call(Method::DELETE, &format!("/v1/tenants/{}/domains/{}", seg(&tenant), seg(&domain)), None).await?,
    };
    print(&v);
    Ok(())
}

pub async fn token(c: &Client, cmd: TokenCmd) -> anyhow::Result<()> {
    let v = match cmd {
        TokenCmd::Mint { role, subject, tenant, ttl_secs } => {
            let path = tenant.map(|t| format!("/v1/tenants/{}/tokens", seg(&t))).unwrap_or_else(|| "/v1/tokens".into());
            c.call(Method::POST, &path, Some(json!({"role": role, "subject": subject, "ttl_secs": ttl_secs}))).await?
        }
        TokenCmd::Revoke { token_or_id, chain, reason } => {
            let body = if token_or_id.bytes().all(|b| b.is_ascii_hexdigit()) {
                if chain {
                    bail!("--chain needs the token itself: a revocation id names one block of it");
                }
                json!({"revocation_id": token_or_id, "reason": reason})
            } else {
                json!({"token": token_or_id, "chain": chain, "reason": reason})
            };
            let v = c.call(Method::POST, "/v1/tokens/revoke", Some(body)).await?;
            let ids = |key: &str| -> Vec<String> {
                v[key].as_array().map(|a| a.iter().filter_map(Value::as_str).map(str::to_owned).collect()).unwrap_or_default()
            };
            println!("revoked {}", v["effect"].as_str().unwrap_or("the token"));
            println!("  revocation ids revoked: {}", ids("revoked").join(", "));
            let kept = ids("not_revoked");
            if !kept.is_empty() {
                println!("  not revoked (the tokens it was narrowed from): {}; add --chain to revoke them too", kept.join(", "));
            }
            return Ok(());
        }
        TokenCmd::Revoked => c.call(Method::GET, "/v1/tokens/revoked", None).await?,
        TokenCmd::Attenuate { .. } => unreachable!("handled offline"),
    };
    print(&v);
    Ok(())
}

/// Narrows a token offline and prints the new one.
pub fn attenuate(token: &str, operations: Vec<String>, routes: Vec<String>, expires_in_secs: Option<u64>) -> anyhow::Result<()> {
    if operations.is_empty() && routes.is_empty() && expires_in_secs.is_none() {
        bail!("name at least one restriction: --operation, --route or --expires-in-secs");
    }
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let restriction = runplane_policy::tokens::Restriction {
        operations: (!operations.is_empty()).then_some(operations),
        tenant: None,
        routes: (!routes.is_empty()).then_some(routes),
        expires_unix_secs: expires_in_secs.map(|s| now + s),
    };
    let narrowed = runplane_policy::tokens::attenuate(token, &restriction).context("the token cannot be attenuated")?;
    println!("{narrowed}");
    Ok(())
}

pub async fn env(c: &Client, cmd: EnvCmd) -> anyhow::Result<()> {
    let v = match cmd {
        EnvCmd::List => c.call(Method::GET, "/v1/environments", None).await?,
        EnvCmd::Set { name, file } => c.call(Method::PUT, &format!("/v1/environments/{}", seg(&name)), Some(json_file(&file)?)).await?,
        EnvCmd::Promote { environment, capability, from, reason } => {
            let Some((name, version)) = capability.split_once('@') else { bail!("{capability:?} is not NAME@VERSION") };
            let body = json!({"capability": name, "version": version, "from": from, "reason": reason});
            c.call(Method::POST, &format!("/v1/environments/{}/promote", seg(&environment)), Some(body)).await?
        }
    };
    print(&v);
    Ok(())
}

pub async fn operate(c: &Client, cmd: OperateCmd) -> anyhow::Result<()> {
    let v = match cmd {
        OperateCmd::Pause { route } => c.call(Method::POST, &format!("/v1/deployments/{}/pause", seg(&route)), None).await?,
        OperateCmd::Resume { route } => c.call(Method::POST, &format!("/v1/deployments/{}/resume", seg(&route)), None).await?,
        OperateCmd::Drain { tenant, timeout_secs } => c.call(Method::POST, &format!("/v1/tenants/{}/drain?timeout_secs={timeout_secs}", seg(&tenant)), None).await?,
        OperateCmd::DrainNode { node_id } => c.call(Method::POST, &format!("/v1/cluster/nodes/{}/drain", seg(&node_id)), None).await?,
        OperateCmd::Nodes => c.call(Method::GET, "/v1/cluster/nodes", None).await?,
        OperateCmd::ReloadTls => c.call(Method::POST, "/v1/tls/reload", None).await?,
    };
    print(&v);
    Ok(())
}
