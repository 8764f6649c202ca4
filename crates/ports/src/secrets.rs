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

/// One stored secret version, sealed: opaque bytes to the store that keeps it.
#[derive(Clone, PartialEq, Eq)]
pub struct SealedVersion {
    pub version: u64,
    pub sealed: Vec<u8>,
}

impl fmt::Debug for SealedVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SealedVersion({}, <{} bytes>)", self.version, self.sealed.len())
    }
}

/// Where sealed secret versions live (a SQL store of the tenant's binding). It never
/// sees a plaintext: the envelope layer above it (`runplane-secrets`) seals before
/// [`SealedSecretStore::insert`] and opens after a read, and implements [`SecretStore`].
#[async_trait]
pub trait SealedSecretStore: Send + Sync {
    /// The highest version of `name`, if any.
    async fn latest(&self, tenant: &TenantId, name: &str) -> PortResult<Option<SealedVersion>>;
    /// One version of `name`, if it exists.
    async fn version(&self, tenant: &TenantId, name: &str, version: u64) -> PortResult<Option<SealedVersion>>;
    /// Stores `version` of `name`; [`crate::PortError::Conflict`] if it exists already
    /// (another writer took that number: read the latest and retry).
    async fn insert(&self, tenant: &TenantId, name: &str, version: u64, sealed: &[u8]) -> PortResult<()>;
    /// Replaces the bytes of an existing version when they still equal `expected`
    /// (re-wrapping under a new key-encryption key); `false` when they did not.
    async fn replace(&self, tenant: &TenantId, name: &str, version: u64, expected: &[u8], sealed: &[u8]) -> PortResult<bool>;
    /// Names and highest versions.
    async fn list(&self, tenant: &TenantId) -> PortResult<Vec<SecretInfo>>;
}
