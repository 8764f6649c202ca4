//! The config port (served to capabilities as `wasi:config/store`).

use crate::TenantId;

/// Read-only configuration values for a capability as seen by one tenant.
///
/// Synchronous: values are resolved when a deployment is bound, so reading one never
/// waits on I/O.
pub trait ConfigStore: Send + Sync {
    /// The value of `key` for `capability` and `tenant` (tenant values override
    /// deployment values).
    fn get(&self, tenant: &TenantId, capability: &str, key: &str) -> Option<String>;
    /// Every key and value, sorted by key.
    fn get_all(&self, tenant: &TenantId, capability: &str) -> Vec<(String, String)>;
    /// The version of the configuration these values come from (recorded in audit events).
    fn version(&self) -> String;
}
