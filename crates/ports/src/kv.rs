//! The key-value state port (served to capabilities as `wasi:keyvalue`).

use async_trait::async_trait;

use crate::{PortResult, TenantId};

/// One page of keys.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KeyPage {
    pub keys: Vec<String>,
    /// Opaque; `None` on the last page.
    pub cursor: Option<String>,
}

/// Buckets of byte values, isolated per tenant.
#[async_trait]
pub trait KeyValueStore: Send + Sync {
    async fn get(&self, tenant: &TenantId, bucket: &str, key: &str) -> PortResult<Option<Vec<u8>>>;
    async fn set(&self, tenant: &TenantId, bucket: &str, key: &str, value: &[u8]) -> PortResult<()>;
    /// Deleting an absent key is not an error.
    async fn delete(&self, tenant: &TenantId, bucket: &str, key: &str) -> PortResult<()>;
    async fn exists(&self, tenant: &TenantId, bucket: &str, key: &str) -> PortResult<bool>;
    /// Keys in byte order, a page at a time.
    async fn list_keys(&self, tenant: &TenantId, bucket: &str, cursor: Option<&str>) -> PortResult<KeyPage>;
    /// Atomically add `delta` to the value read as a decimal i64 (absent = 0); returns the new value.
    async fn increment(&self, tenant: &TenantId, bucket: &str, key: &str, delta: i64) -> PortResult<i64>;
    /// Atomically set `new` if the current value equals `expected` (`None` = absent).
    /// Returns whether the swap happened.
    async fn compare_and_swap(
        &self,
        tenant: &TenantId,
        bucket: &str,
        key: &str,
        expected: Option<&[u8]>,
        new: &[u8],
    ) -> PortResult<bool>;
}
