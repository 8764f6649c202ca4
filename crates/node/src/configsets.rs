//! Versioned configuration (spec §7.1), served to capabilities through `wasi:config`.
//!
//! A *set* is the whole map of string values of one scope; every change stores a new
//! immutable set under the next instance-wide *revision*. What an invocation sees is a
//! [`ConfigSnapshot`] taken when it starts — the file's `[config]`/`[tenant_config]`
//! values, overlaid by the node's environment set, the capability's set, then the
//! tenant's set for that capability — and its audit event records the snapshot's
//! version, so replay and auditors know exactly which values it read.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use runplane_adapters::static_config::StaticConfig;
use runplane_ports::{ConfigStore, TenantId};

use crate::control::ConfigVersionRow;
use crate::error::ApiError;

/// Where a set applies.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    /// Every capability of an environment.
    Environment(String),
    /// One capability (by name, every version), every tenant.
    Capability(String),
    /// One capability for one tenant.
    Tenant { tenant: String, capability: String },
}

fn ident_ok(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

impl Scope {
    /// Parses `environment:<env>`, `capability:<name>` or `tenant:<tenant>:<name>`.
    pub fn parse(s: &str) -> Result<Scope, ApiError> {
        let bad = || {
            ApiError::bad_request(
                "invalid_scope",
                format!("config scope {s:?} is not one of environment:<env>, capability:<name>, tenant:<tenant>:<name> (names of a-z, 0-9 and '-')"),
            )
        };
        let parts: Vec<&str> = s.split(':').collect();
        let scope = match parts.as_slice() {
            ["environment", e] => Scope::Environment((*e).to_owned()),
            ["capability", c] => Scope::Capability((*c).to_owned()),
            ["tenant", t, c] => Scope::Tenant { tenant: (*t).to_owned(), capability: (*c).to_owned() },
            _ => return Err(bad()),
        };
        let names_ok = match &scope {
            Scope::Environment(n) | Scope::Capability(n) => ident_ok(n),
            Scope::Tenant { tenant, capability } => ident_ok(tenant) && ident_ok(capability),
        };
        if names_ok { Ok(scope) } else { Err(bad()) }
    }

    /// The tenant a tenant-scoped set belongs to (for authorization).
    pub fn tenant(&self) -> Option<&str> {
        match self {
            Scope::Tenant { tenant, .. } => Some(tenant),
            _ => None,
        }
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Scope::Environment(e) => write!(f, "environment:{e}"),
            Scope::Capability(c) => write!(f, "capability:{c}"),
            Scope::Tenant { tenant, capability } => write!(f, "tenant:{tenant}:{capability}"),
        }
    }
}

/// Keys: 1-128 characters of a-z, A-Z, 0-9, '.', '_' and '-'; values: up to 64 KiB.
pub fn validate_values(values: &BTreeMap<String, String>) -> Result<(), ApiError> {
    if values.len() > 1000 {
        return Err(ApiError::bad_request("invalid_config", format!("a config set holds at most 1000 keys, not {}", values.len())));
    }
    for (k, v) in values {
        if k.is_empty() || k.len() > 128 || !k.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)) {
            return Err(ApiError::bad_request("invalid_config", format!("config key {k:?} must be 1-128 characters of a-z, A-Z, 0-9, '.', '_' and '-'")));
        }
        if v.len() > 64 * 1024 {
            return Err(ApiError::bad_request("invalid_config", format!("the value of config key {k} is {} bytes; the limit is 65536", v.len())));
        }
    }
    Ok(())
}

/// The values one invocation sees, frozen at one revision.
pub struct ConfigSnapshot {
    revision: u64,
    version: String,
    environment: String,
    file: Arc<StaticConfig>,
    sets: BTreeMap<Scope, BTreeMap<String, String>>,
}

impl ConfigSnapshot {
    /// The instance's config revision this snapshot is at (0 before any change).
    pub fn revision(&self) -> u64 {
        self.revision
    }

    fn merged(&self, tenant: &TenantId, capability: &str) -> BTreeMap<String, String> {
        let cap = capability.split('@').next().unwrap_or(capability);
        let mut all: BTreeMap<String, String> = self.file.get_all(tenant, cap).into_iter().collect();
        for scope in [
            Scope::Environment(self.environment.clone()),
            Scope::Capability(cap.to_owned()),
            Scope::Tenant { tenant: tenant.as_str().to_owned(), capability: cap.to_owned() },
        ] {
            if let Some(set) = self.sets.get(&scope) {
                all.extend(set.iter().map(|(k, v)| (k.clone(), v.clone())));
            }
        }
        all
    }
}

impl ConfigStore for ConfigSnapshot {
    fn get(&self, tenant: &TenantId, capability: &str, key: &str) -> Option<String> {
        self.merged(tenant, capability).remove(key)
    }

    fn get_all(&self, tenant: &TenantId, capability: &str) -> Vec<(String, String)> {
        self.merged(tenant, capability).into_iter().collect()
    }

    /// `<revision>/<digest of the file's values>`: both parts of what the values depend on.
    fn version(&self) -> String {
        self.version.clone()
    }
}

/// The current snapshot, swapped whole on every change (readers never lock for long).
pub struct ConfigSets {
    current: RwLock<Arc<ConfigSnapshot>>,
}

impl ConfigSets {
    /// Builds the snapshot at the latest of `history` over the file's values.
    pub fn new(environment: &str, file: StaticConfig, history: &[ConfigVersionRow]) -> Result<Self, ApiError> {
        let snapshot = Self::build(environment.to_owned(), Arc::new(file), history)?;
        Ok(ConfigSets { current: RwLock::new(Arc::new(snapshot)) })
    }

    fn build(environment: String, file: Arc<StaticConfig>, history: &[ConfigVersionRow]) -> Result<ConfigSnapshot, ApiError> {
        let mut sets = BTreeMap::new();
        let mut revision = 0;
        for row in history {
            let scope = Scope::parse(&row.scope)?;
            let values: BTreeMap<String, String> = serde_json::from_str(&row.content).map_err(|e| {
                ApiError::unavailable(format!("config revision {} in the control store is unreadable: {e}", row.version))
            })?;
            sets.insert(scope, values);
            revision = revision.max(row.version);
        }
        let version = format!("{revision}/{}", file.version());
        Ok(ConfigSnapshot { revision, version, environment, file, sets })
    }

    /// The snapshot new invocations see.
    pub fn snapshot(&self) -> Arc<ConfigSnapshot> {
        self.current.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Rebuilds from the full history (after a change was stored).
    pub fn reload(&self, history: &[ConfigVersionRow]) -> Result<(), ApiError> {
        let old = self.snapshot();
        let next = Self::build(old.environment.clone(), old.file.clone(), history)?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(next);
        Ok(())
    }
}

/// The node's live view for long-lived holders (subscriptions, seeding): each read goes
/// to the current snapshot. Invocations take a [`ConfigSnapshot`] instead.
impl ConfigStore for ConfigSets {
    fn get(&self, tenant: &TenantId, capability: &str, key: &str) -> Option<String> {
        self.snapshot().get(tenant, capability, key)
    }
    fn get_all(&self, tenant: &TenantId, capability: &str) -> Vec<(String, String)> {
        self.snapshot().get_all(tenant, capability)
    }
    fn version(&self) -> String {
        self.snapshot().version()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(version: u64, scope: &str, content: &str) -> ConfigVersionRow {
        ConfigVersionRow {
            version,
            scope: scope.into(),
            content: content.into(),
            created_at: "2026-11-23T00:00:00Z".into(),
            actor: "test".into(),
            reason: None,
            restored_from: None,
        }
    }

    #[test]
    fn layers_and_freezes() {
        let file = StaticConfig::new(BTreeMap::from([("orders".into(), BTreeMap::from([("currency".into(), "EUR".into())]))]), BTreeMap::new());
        let sets = ConfigSets::new("prod", file, &[]).expect("sets");
        let acme = TenantId::new("acme").expect("id");
        let before = sets.snapshot();
        assert_eq!(before.get(&acme, "orders@1.0.0", "currency").as_deref(), Some("EUR"));
        sets.reload(&[
            row(1, "environment:prod", r#"{"region":"eu","currency":"CHF"}"#),
            row(2, "capability:orders", r#"{"currency":"USD"}"#),
            row(3, "tenant:acme:orders", r#"{"currency":"GBP"}"#),
            row(4, "environment:dev", r#"{"region":"us"}"#),
        ])
        .expect("reload");
        let now = sets.snapshot();
        assert_eq!(now.get(&acme, "orders", "currency").as_deref(), Some("GBP"));
        assert_eq!(now.get(&TenantId::new("globex").expect("id"), "orders", "currency").as_deref(), Some("USD"));
        assert_eq!(now.get(&acme, "orders", "region").as_deref(), Some("eu"), "only the node's environment applies");
        assert_eq!(before.get(&acme, "orders", "currency").as_deref(), Some("EUR"), "a snapshot never changes");
        assert!(now.version().starts_with("4/") && before.version().starts_with("0/"));
    }

    #[test]
    fn scopes_parse_strictly() {
        for ok in ["environment:prod", "capability:orders", "tenant:acme:orders"] {
            assert_eq!(Scope::parse(ok).expect(ok).to_string(), ok);
        }
        for bad in ["", "capability:", "tenant:acme", "capability:Orders", "other:x", "tenant:a:b:c"] {
            assert!(Scope::parse(bad).is_err(), "{bad}");
        }
    }
}
