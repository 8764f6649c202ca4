//! Runplane's ports: what capabilities need from infrastructure, with no infrastructure in it.
//!
//! Each port is one trait (records, key-value state, events, messaging, blobs, secrets,
//! config, telemetry). The host binds a capability's WIT imports to these traits; the
//! adapters crate implements them on SQLite, brokers, object stores and so on.
//!
//! Every method takes the [`TenantId`] explicitly: the tenant is chosen at the boundary
//! from the caller's credential and isolation is the adapter's job, never the
//! capability's.
//!
//! Architecture invariant: this crate depends on no database, broker, HTTP, cloud or
//! wasm crate (checked by `tests/all.rs`).

mod error;
mod names;

pub mod blobs;
pub mod config;
pub mod events;
pub mod kv;
pub mod messaging;
pub mod records;
pub mod secrets;
pub mod telemetry;

pub use blobs::{BlobStore, ObjectMeta};
pub use config::ConfigStore;
pub use error::{LOG_TARGET, PortError, PortResult, STORAGE_FULL, UNAVAILABLE, is_storage_full};
pub use events::{EventStore, NewEvent, StoredEvent};
pub use kv::{KeyPage, KeyValueStore};
pub use messaging::{Delivery, Message, MessageBus, Subscription};
pub use names::{TenantId, validate_name};
pub use records::{Filter, Page, Record, RecordStore};
pub use secrets::{SealedSecretStore, SealedVersion, SecretInfo, SecretStore, SecretValue};
pub use telemetry::{Level, Telemetry, TelemetryScope};

use std::sync::Arc;

/// The protocol version every Runplane API response, event and signed object carries.
pub const PROTOCOL_VERSION: &str = "1.0";

/// The adapters serving one tenant: what a binding resolves to.
#[derive(Clone)]
pub struct PortSet {
    pub records: Arc<dyn RecordStore>,
    pub kv: Arc<dyn KeyValueStore>,
    pub events: Arc<dyn EventStore>,
    pub messaging: Arc<dyn MessageBus>,
    pub blobs: Arc<dyn BlobStore>,
    pub secrets: Arc<dyn SecretStore>,
    pub config: Arc<dyn ConfigStore>,
    pub telemetry: Arc<dyn Telemetry>,
}

mod context;
pub use context::ExecutionContext;
