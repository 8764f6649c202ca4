use std::collections::BTreeMap;

use runplane_ports::ExecutionContext;
use serde::{Deserialize, Serialize};

/// One audited action (spec §6.4). Serialised as canonical JSON, which is both what
/// is hashed and what a Merkle leaf holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEvent {
    pub protocol_version: String,
    pub event_id: String,
    /// RFC 3339 UTC, from the node's clock at the boundary.
    pub time: String,
    /// Who acted: `admin`, `tenant:<id>/key:<key id>`, `node`.
    pub actor: String,
    pub tenant: Option<String>,
    /// What was done: `invoke.http`, `invoke.message`, `tenant.create`, `capability.push`, …
    pub action: String,
    /// What it was done to: a route, a tenant, `name@version`, …
    pub target: String,
    pub outcome: Outcome,
    /// The invocation's execution context (absent for admin actions).
    pub context: Option<ExecutionContext>,
    /// `sha256:<hex>` of the request (method, path, body), never the body itself.
    pub request_digest: Option<String>,
    pub response_digest: Option<String>,
    pub capability_digest: Option<String>,
    pub binding_set_version: Option<String>,
    pub config_version: Option<String>,
    pub usage: Option<Usage>,
    /// Action-specific facts (an admin action's reason, before and after). Never secrets.
    #[serde(default)]
    pub details: BTreeMap<String, serde_json::Value>,
}

/// How the action ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    /// `ok`, `error` or `denied`.
    pub status: String,
    /// A stable error code when not ok.
    pub code: Option<String>,
    /// The HTTP status returned, when there was one.
    pub http_status: Option<u16>,
}

impl Outcome {
    pub fn ok(http_status: Option<u16>) -> Self {
        Outcome { status: "ok".into(), code: None, http_status }
    }
    pub fn error(code: &str, http_status: Option<u16>) -> Self {
        Outcome { status: "error".into(), code: Some(code.into()), http_status }
    }
    pub fn denied(code: &str, http_status: Option<u16>) -> Self {
        Outcome { status: "denied".into(), code: Some(code.into()), http_status }
    }
}

/// What an invocation consumed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Usage {
    pub fuel: u64,
    pub memory_peak_bytes: u64,
    pub port_calls: u32,
    pub request_bytes: u64,
    pub response_bytes: u64,
    /// Outbound HTTP bytes (absent when none, so events without network use hash as
    /// they did before this field existed).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub network_bytes: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl AuditEvent {
    /// The event's canonical JSON: the bytes that are hashed and become the Merkle leaf.
    pub fn canonical(&self) -> Result<String, runplane_cjson::CanonError> {
        runplane_cjson::from_serialize(self)
    }
}
