//! The event store port: append-only streams with optimistic concurrency.

use async_trait::async_trait;
use serde::Serialize;

use crate::{PortResult, TenantId};

/// An event to append. `data` is canonical JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    pub event_type: String,
    pub data: String,
}

/// An event as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct StoredEvent {
    pub stream: String,
    /// Position in the stream, from 1.
    pub version: u64,
    pub event_type: String,
    pub data: String,
}

/// Named streams of events, isolated per tenant.
#[async_trait]
pub trait EventStore: Send + Sync {
    /// Appends; with `expected_version` only if the stream's last version equals it
    /// (0 = empty), otherwise [`crate::PortError::Conflict`]. Without one the events go
    /// at the end, and concurrent appenders never get a conflict (adapters serialise
    /// them). Returns the new last version.
    async fn append(
        &self,
        tenant: &TenantId,
        stream: &str,
        events: &[NewEvent],
        expected_version: Option<u64>,
    ) -> PortResult<u64>;

    /// Events with `version >= from`, at most `limit` (1-1000), in order.
    async fn read(&self, tenant: &TenantId, stream: &str, from: u64, limit: u32) -> PortResult<Vec<StoredEvent>>;
}
