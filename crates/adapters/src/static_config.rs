//! Configuration values from `runplane.toml` (the embedded default for `wasi:config`).

use std::collections::BTreeMap;

use runplane_ports::{ConfigStore, TenantId};
use sha2::{Digest, Sha256};

/// Values per capability name, with per-tenant overrides; immutable once built.
#[derive(Debug, Clone, Default)]
pub struct StaticConfig {
    by_capability: BTreeMap<String, BTreeMap<String, String>>,
    by_tenant: BTreeMap<(String, String), BTreeMap<String, String>>,
    version: String,
}

impl StaticConfig {
    /// `by_capability[name]` are the deployment's values; `by_tenant[(tenant, name)]`
    /// override them for one tenant. The version is a digest of all of it.
    pub fn new(
        by_capability: BTreeMap<String, BTreeMap<String, String>>,
        by_tenant: BTreeMap<(String, String), BTreeMap<String, String>>,
    ) -> Self {
        let mut h = Sha256::new();
        for (cap, values) in &by_capability {
            for (k, v) in values {
                h.update(format!("c\0{cap}\0{k}\0{v}\n"));
            }
        }
        for ((tenant, cap), values) in &by_tenant {
            for (k, v) in values {
                h.update(format!("t\0{tenant}\0{cap}\0{k}\0{v}\n"));
            }
        }
        let version = format!("sha256:{}", &hex::encode(h.finalize())[..16]);
        StaticConfig { by_capability, by_tenant, version }
    }
}

/// The capability name without its `@version`.
fn base(capability: &str) -> &str {
    capability.split('@').next().unwrap_or(capability)
}

impl ConfigStore for StaticConfig {
    fn get(&self, tenant: &TenantId, capability: &str, key: &str) -> Option<String> {
        let cap = base(capability);
        self.by_tenant
            .get(&(tenant.as_str().to_owned(), cap.to_owned()))
            .and_then(|m| m.get(key))
            .or_else(|| self.by_capability.get(cap).and_then(|m| m.get(key)))
            .cloned()
    }

    fn get_all(&self, tenant: &TenantId, capability: &str) -> Vec<(String, String)> {
        let cap = base(capability);
        let mut all = self.by_capability.get(cap).cloned().unwrap_or_default();
        if let Some(over) = self.by_tenant.get(&(tenant.as_str().to_owned(), cap.to_owned())) {
            all.extend(over.clone());
        }
        all.into_iter().collect()
    }

    fn version(&self) -> String {
        self.version.clone()
    }
}
