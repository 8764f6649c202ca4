//! Adapters: Runplane's ports implemented on concrete technology.
//!
//! One module per backend, side by side (the `object_store` layout):
//!
//! | port | embedded default |
//! |---|---|
//! | records, key-value, events, secrets | [`sqlite`] |
//! | messaging | [`memory_bus`] (in-process broker) |
//! | blobs | [`object_blobs`] (local filesystem through `object_store`) |
//! | config | [`static_config`] (values from `runplane.toml`) |
//! | telemetry | [`telemetry`] (`tracing` logs, Prometheus metrics) |
//!
//! [`conformance`] holds the test functions every adapter of a port must pass.
//!
//! Architecture invariant: adapters contain no business logic and know nothing of
//! capabilities; they get a tenant id with every call and keep tenants apart.

pub mod conformance;
pub mod object_blobs;
pub mod memory_bus;
pub mod mysql;
pub mod nats_bus;
pub mod amqp_bus;
pub mod postgres;
mod sql;
pub mod sqlite;
pub mod static_config;
pub mod telemetry;
mod topics;
pub mod testing;

use base64::Engine as _;

/// Encodes a pagination position as an opaque cursor.
pub(crate) fn encode_cursor(position: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(position.as_bytes())
}

/// Decodes a cursor made by [`encode_cursor`].
pub(crate) fn decode_cursor(cursor: &str) -> Result<String, runplane_ports::PortError> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(cursor)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| runplane_ports::PortError::Invalid(format!("cursor {cursor:?} is not one this store issued; pass back next_cursor unchanged")))
}
