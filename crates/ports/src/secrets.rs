//! The secrets port.

use std::fmt;

use async_trait::async_trait;
use serde::Serialize;

use crate::{PortResult, TenantId};

/// A secret's bytes. `Debug` and `Display` never show them.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretValue(Vec<u8>);

impl SecretValue {
    pub fn new(bytes: Vec<u8>) -> Self {
        SecretValue(bytes)
    }
    /// The bytes; call only to hand them to the capability that asked.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretValue(<{} bytes redacted>)", self.0.len())
    }
}

/// A secret's name and current version: all an admin listing ever shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SecretInfo {
    pub name: String,
    pub version: u64,
}

/// Named, versioned secrets per tenant.
#[async_trait]
pub trait SecretStore: Send + Sync {
    /// The current version's value.
    async fn get(&self, tenant: &TenantId, name: &str) -> PortResult<SecretValue>;
    /// Stores a new version; returns its number (from 1).
    async fn put(&self, tenant: &TenantId, name: &str, value: SecretValue) -> PortResult<u64>;
    /// Names and current versions, never values.
    async fn list(&self, tenant: &TenantId) -> PortResult<Vec<SecretInfo>>;
}
