//! The instance's nodes (`/v1/cluster/…`): membership and remote drain.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use runplane_ports::PROTOCOL_VERSION;
use serde::Serialize;
use utoipa::ToSchema;

use crate::control::ClusterNode;
use crate::error::ApiError;
use crate::node::Node;

/// A node as the admin API shows it.
#[derive(Serialize, ToSchema)]
pub struct ClusterNodeView {
    #[serde(flatten)]
    pub node: ClusterNode,
    /// The last heartbeat, RFC 3339 UTC (the control store's clock).
    pub last_heartbeat: String,
}

/// A node's last heartbeat as RFC 3339 UTC.
pub(crate) fn heartbeat_time(node: &ClusterNode) -> String {
    runplane_audit::rfc3339_utc(u128::try_from(node.last_heartbeat_ms).unwrap_or(0) * 1_000_000)
}

#[derive(Serialize, ToSchema)]
pub struct ClusterNodes {
    /// Every node the instance has seen, by id: `ready`, `draining` or `gone`.
    pub nodes: Vec<ClusterNodeView>,
    /// The node holding the leader lease now, if any does.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub leader: Option<String>,
    pub protocol_version: &'static str,
}

/// The instance's nodes as the membership table knows them. A node whose heartbeat is
/// older than `[control] node_ttl_ms` shows as `gone`.
#[utoipa::path(get, path = "/v1/cluster/nodes", security(("admin_token" = [])), responses((status = 200, body = ClusterNodes), (status = 503, body = crate::error::ErrorResponse)))]
pub async fn list_nodes(State(node): State<Arc<Node>>) -> Result<Response, ApiError> {
    let nodes = node.control.nodes(node.config.control.node_ttl).await?.into_iter().map(|n| ClusterNodeView { last_heartbeat: heartbeat_time(&n), node: n }).collect();
    let leader = node.control.lease_holder(crate::cluster::LEADER).await?;
    Ok(axum::Json(ClusterNodes { nodes, leader, protocol_version: PROTOCOL_VERSION }).into_response())
}

#[derive(Serialize, ToSchema)]
pub struct DrainRequested {
    pub node_id: String,
    /// `draining`: the node sees it at its next heartbeat, turns `/readyz` 503, lets its
    /// in-flight requests finish and exits.
    pub state: String,
}

/// Drain a node remotely (`runplane operate drain-node NODE`): as if it got SIGTERM.
#[utoipa::path(post, path = "/v1/cluster/nodes/{node_id}/drain", security(("admin_token" = [])), responses((status = 202, body = DrainRequested), (status = 404, body = crate::error::ErrorResponse)))]
pub async fn drain_node(State(node): State<Arc<Node>>, Path(node_id): Path<String>) -> Result<Response, ApiError> {
    if !node.control.set_node_state(&node_id, "draining").await? {
        return Err(ApiError::not_found(format!("no node {node_id} is registered; list them with GET /v1/cluster/nodes")));
    }
    if node_id == node.config.node_id {
        node.drain.request();
    }
    node.audit_admin(node.event("admin", None, "cluster.drain", &node_id, runplane_audit::Outcome::ok(Some(202)))).await?;
    Ok((StatusCode::ACCEPTED, crate::api::versioned(DrainRequested { node_id, state: "draining".into() })).into_response())
}
