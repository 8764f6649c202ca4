//! The rows of the control store, as the admin API shows them.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// How tenants' data is kept apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Many tenants share infrastructure; adapters scope every key by tenant.
    Shared,
    /// Each tenant has its own database file and blob root.
    Dedicated,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Shared => "shared",
            Mode::Dedicated => "dedicated",
        }
    }
}

/// A tenant as the admin API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Tenant {
    pub id: String,
    /// `shared` or `dedicated`.
    pub mode: Mode,
    /// `active` or `suspended`.
    pub status: String,
    pub tier: String,
    pub created_at: String,
    /// `pending`, `ready` or `failed` (spec §4.4): traffic is served only when `ready`.
    pub provisioning: String,
    /// Why provisioning stopped, when it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provisioning_error: Option<String>,
}

/// A pushed capability version.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CapabilityVersion {
    pub name: String,
    pub version: String,
    pub digest: String,
    pub size_bytes: u64,
    #[schema(value_type = Object)]
    pub exports: serde_json::Value,
    pub imports: Vec<String>,
    pub created_at: String,
}

/// A capability version made live on a route.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Deployment {
    /// Tenant traffic reaches it at `/apps/{route}/…`.
    pub route: String,
    pub capability: String,
    pub version: String,
    pub digest: String,
    /// Hosts outbound HTTP may reach (`host`, `host:port`, `*.domain`).
    pub allow_hosts: Vec<String>,
    /// Topics delivered to the capability's message handler.
    pub subscriptions: Vec<String>,
    /// The feature flag gating the route: tenants for whom it is off get 403.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flag: Option<String>,
    pub created_at: String,
}

/// One stored configuration revision.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ConfigVersionRow {
    pub version: u64,
    pub scope: String,
    /// The whole set of this scope at this revision (canonical JSON of string values).
    pub content: String,
    pub created_at: String,
    pub actor: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// For a rollback: the revision whose content this one restores.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restored_from: Option<u64>,
}

/// One node of the instance as the membership table knows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ClusterNode {
    pub node_id: String,
    /// The node's `[node] region` label.
    pub region: String,
    /// Where it listens, as it reported.
    pub address: String,
    /// The node's Runplane version.
    pub version: String,
    pub started_at: String,
    /// The last heartbeat, in milliseconds since the epoch of the control store's clock
    /// (stamped by the store; ignored when writing one). The admin API shows it as
    /// RFC 3339.
    #[serde(skip)]
    pub last_heartbeat_ms: i64,
    /// `ready`, `draining` or `gone` (no heartbeat within the node TTL, or deregistered).
    pub state: String,
    /// Invocations running on it at its last heartbeat.
    pub in_flight: u64,
}

/// A rollout's state as the control store keeps it: the body is the rollout crate's
/// JSON, the other columns what queries select on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRollout {
    pub rollout_id: String,
    pub route: String,
    pub revision: u64,
    /// Still moving (progressing or paused).
    pub active: bool,
    pub body: String,
    pub updated_at: String,
}
