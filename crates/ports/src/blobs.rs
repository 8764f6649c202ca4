//! The blob port: containers of objects.

use async_trait::async_trait;
use serde::Serialize;

use crate::{PortResult, TenantId};

/// What is known about a stored object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct ObjectMeta {
    pub container: String,
    pub name: String,
    pub size: u64,
    pub content_type: Option<String>,
    /// Lowercase hex SHA-256 of the content.
    pub digest: String,
}

/// Containers of objects, isolated per tenant: a capability can never name a path
/// outside its tenant's prefix.
#[async_trait]
pub trait BlobStore: Send + Sync {
    async fn put(
        &self,
        tenant: &TenantId,
        container: &str,
        name: &str,
        data: Vec<u8>,
        content_type: Option<&str>,
    ) -> PortResult<ObjectMeta>;
    /// The object, or bytes `[start, end)` of it.
    async fn get(
        &self,
        tenant: &TenantId,
        container: &str,
        name: &str,
        range: Option<(u64, u64)>,
    ) -> PortResult<Option<Vec<u8>>>;
    async fn delete(&self, tenant: &TenantId, container: &str, name: &str) -> PortResult<bool>;
    /// Objects whose name starts with `prefix`, ordered by name.
    async fn list(&self, tenant: &TenantId, container: &str, prefix: &str) -> PortResult<Vec<ObjectMeta>>;
    async fn metadata(&self, tenant: &TenantId, container: &str, name: &str) -> PortResult<Option<ObjectMeta>>;
}
