//! The instance metadata interface (`/v1/instance/…`; seed S0-XIII): the version
//! metadata a federation server reads from an instance.
//!
//! It is served only on `[node] metadata_listen`, whose listener speaks TLS 1.3 alone
//! and completes no handshake without a client certificate from the client CA
//! ([`crate::tls::TlsSettings::for_metadata`]); the admin gate then takes only a signed
//! capability token with `instance.metadata`, applies the per-credential rate limit and
//! records the read, certificate included, in the admin log. Everything shown comes
//! from the node's memory: a read costs no store round trip.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::api::versioned;
use crate::error::ApiError;
use crate::node::Node;

/// A capability version serving a route.
#[derive(Serialize, ToSchema)]
pub struct DeployedVersion {
    pub route: String,
    pub capability: String,
    pub version: String,
    /// `sha256:<hex>` of the component's bytes.
    pub digest: String,
    /// When it was deployed (RFC 3339 UTC).
    pub deployed_at: String,
}

/// A domain module active for some of the instance's tenants.
#[derive(Serialize, ToSchema)]
pub struct ActiveDomain {
    pub domain_id: String,
    /// The capabilities it groups (every version of each).
    pub capabilities: Vec<String>,
    /// How many tenants have it active.
    pub tenants: usize,
}

/// What an instance reports about itself (S2-II's mandatory instance metadata).
#[derive(Serialize, ToSchema)]
pub struct InstanceMetadata {
    /// The instance's id (its audit logs' origin is `runplane/<instance_id>`).
    pub instance_id: String,
    /// The node that answered; every node of the instance reports the same state.
    pub node_id: String,
    /// The runtime plane's version (semantic versioning).
    pub runtime_version: String,
    /// `shared` (many tenants) or `dedicated` (one).
    pub mode: String,
    pub environment: String,
    pub region: String,
    /// Every capability version serving a route, by route.
    pub capabilities: Vec<DeployedVersion>,
    /// Domain modules active for at least one tenant.
    pub active_domains: Vec<ActiveDomain>,
    /// The latest `deployed_at` of `capabilities`: when what runs last changed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_deployed_at: Option<String>,
    /// The control-state revision this node has applied (the same on every node once
    /// they have caught up).
    pub control_revision: u64,
    /// The version of the configuration sets in force.
    pub config_version: String,
    /// This interface's address: where a federation server reaches the instance.
    pub handshake_endpoint: String,
    /// The certificate this listener presents.
    pub certificate: crate::tls::ServingCertificate,
}

/// The instance's version metadata (served on `[node] metadata_listen` only).
#[utoipa::path(get, path = "/v1/instance/metadata", security(("admin_token" = [])),
    responses((status = 200, body = InstanceMetadata),
        (status = 404, description = "this listener is not the instance metadata interface (`[node] metadata_listen`)", body = crate::error::ErrorResponse)))]
pub async fn metadata(State(node): State<Arc<Node>>) -> Result<Response, ApiError> {
    let (Some(addr), Some(certs)) = (node.metadata_addr.get(), node.metadata_tls.get()) else {
        return Err(ApiError::not_found("this node has no instance metadata interface; set [node] metadata_listen (with [tls] and a client CA)"));
    };
    let mut capabilities: Vec<DeployedVersion> = node
        .deployments
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .values()
        .map(|a| {
            let d = &a.deployment;
            DeployedVersion { route: d.route.clone(), capability: d.capability.clone(), version: d.version.clone(), digest: d.digest.clone(), deployed_at: d.created_at.clone() }
        })
        .collect();
    capabilities.sort_by(|a, b| a.route.cmp(&b.route));
    let registered: BTreeMap<String, Vec<String>> = node.controlplane.list_domains().into_iter().map(|d| (d.domain_id, d.capabilities)).collect();
    let active_domains = node
        .controlplane
        .domains_in_use()
        .into_iter()
        .map(|(domain_id, tenants)| ActiveDomain { capabilities: registered.get(&domain_id).cloned().unwrap_or_default(), domain_id, tenants })
        .collect();
    let last_deployed_at = capabilities.iter().map(|c| c.deployed_at.clone()).max();
    use runplane_ports::ConfigStore as _;
    Ok(versioned(InstanceMetadata {
        instance_id: node.controlplane.instance_id().to_owned(),
        node_id: node.config.node_id.clone(),
        runtime_version: env!("CARGO_PKG_VERSION").to_owned(),
        mode: node.config.mode.as_str().to_owned(),
        environment: node.config.environment.clone(),
        region: node.config.region.clone(),
        capabilities,
        active_domains,
        last_deployed_at,
        control_revision: node.freshness.revision(),
        config_version: node.config_sets.snapshot().version(),
        handshake_endpoint: format!("https://{addr}/v1/instance/metadata"),
        certificate: certs.serving(),
    })
    .into_response())
}
