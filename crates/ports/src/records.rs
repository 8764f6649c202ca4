//! The record store port: collections of JSON documents.

use async_trait::async_trait;
use serde::Serialize;

use crate::{PortResult, TenantId};

/// A stored document. `body` is canonical JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Record {
    pub collection: String,
    pub id: String,
    /// 1 after the first write, +1 on each write.
    pub revision: u64,
    pub body: String,
}

/// Field equality: the document's top-level `field` equals `value`.
#[derive(Debug, Clone, PartialEq)]
pub struct Filter {
    pub field: String,
    pub value: serde_json::Value,
}

/// A page of query results ordered by id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Page {
    pub items: Vec<Record>,
    /// Opaque; pass back to continue. `None` on the last page.
    pub next_cursor: Option<String>,
}

/// Collections of JSON documents, isolated per tenant.
///
/// Bodies arrive as canonical JSON (the host canonicalises them) and are returned
/// byte-for-byte, so every adapter answers identically.
#[async_trait]
pub trait RecordStore: Send + Sync {
    /// Create or replace. `expected_revision`: `Some(0)` = must not exist, `Some(n)` =
    /// stored revision must be `n`, otherwise [`crate::PortError::Conflict`].
    async fn put(
        &self,
        tenant: &TenantId,
        collection: &str,
        id: &str,
        body: &str,
        expected_revision: Option<u64>,
    ) -> PortResult<Record>;

    /// Read one document.
    async fn get(&self, tenant: &TenantId, collection: &str, id: &str) -> PortResult<Option<Record>>;

    /// Delete; `Ok(false)` if it did not exist.
    async fn delete(
        &self,
        tenant: &TenantId,
        collection: &str,
        id: &str,
        expected_revision: Option<u64>,
    ) -> PortResult<bool>;

    /// Documents matching every filter, ordered by id, at most `limit` (1-1000).
    async fn query(
        &self,
        tenant: &TenantId,
        collection: &str,
        filters: &[Filter],
        limit: u32,
        cursor: Option<&str>,
    ) -> PortResult<Page>;
}
