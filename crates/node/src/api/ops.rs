//! Health, metrics, the OpenAPI document and the fallback.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::{OpenApi, ToSchema};

use crate::api::versioned;
use crate::error::ApiError;
use crate::node::Node;

#[derive(Serialize, ToSchema)]
pub struct Health {
    /// `ok`, `degraded` (storage is low; 200) or `failing` (a check fails; 503).
    pub status: crate::health::NodeStatus,
    pub node_id: String,
    /// Each check and whether it passes: `control_store`, `audit_store`, `storage`
    /// (the data directory can be written).
    pub checks: std::collections::BTreeMap<String, bool>,
    /// The data directory's filesystem: space and whether a write succeeds.
    pub storage: crate::health::StorageHealth,
}

/// Liveness and dependency health.
#[utoipa::path(get, path = "/healthz", responses((status = 200, body = Health), (status = 503, body = Health)))]
pub async fn healthz(State(node): State<Arc<Node>>) -> Response {
    let mut checks = std::collections::BTreeMap::new();
    checks.insert("control_store".to_string(), node.control.health().await);
    checks.insert("audit_store".to_string(), node.audit.logs().await.is_ok());
    let data_dir = node.config.data_dir.clone();
    let storage = match tokio::task::spawn_blocking(move || crate::health::probe(&data_dir)).await {
        Ok(s) => s,
        Err(_) => crate::health::classify(None, &Err(std::io::Error::other("the storage probe stopped"))),
    };
    checks.insert("storage".to_string(), storage.status.writable());
    let health = crate::health::NodeStatus::of(checks.values().all(|v| *v), storage.status);
    let status = if health == crate::health::NodeStatus::Failing { StatusCode::SERVICE_UNAVAILABLE } else { StatusCode::OK };
    let body = Health { status: health, node_id: node.config.node_id.clone(), checks, storage };
    (status, versioned(body)).into_response()
}

#[derive(Serialize, ToSchema)]
pub struct Liveness {
    /// Always `live`: the process answers.
    pub status: String,
    pub node_id: String,
}

/// Whether the process answers; depends on no backend (a Kubernetes liveness probe).
#[utoipa::path(get, path = "/livez", responses((status = 200, body = Liveness)))]
pub async fn livez(State(node): State<Arc<Node>>) -> Response {
    versioned(Liveness { status: "live".into(), node_id: node.config.node_id.clone() }).into_response()
}

#[derive(Serialize, ToSchema)]
pub struct Readiness {
    /// `ready`; `draining` (503): the node is leaving, send traffic elsewhere; `stale`
    /// (503): it cannot confirm its control state is current (`[control] max_staleness_ms`).
    pub status: String,
    pub node_id: String,
    /// Why the node is not ready, when it is not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The control-store revision this node's caches hold.
    pub control_revision: u64,
}

/// Whether the node should get traffic: 200 once started (deployments restored), while
/// its control state is current and until a drain begins, else 503 (a Kubernetes readiness probe; a load balancer's
/// health check).
#[utoipa::path(get, path = "/readyz", responses((status = 200, body = Readiness), (status = 503, body = Readiness)))]
pub async fn readyz(State(node): State<Arc<Node>>) -> Response {
    let node_id = node.config.node_id.clone();
    let control_revision = node.freshness.revision();
    if node.is_draining() {
        let reason = Some("the node is draining (SIGTERM): it finishes what it has and stops; send new requests to another node".into());
        return (StatusCode::SERVICE_UNAVAILABLE, versioned(Readiness { status: "draining".into(), node_id, reason, control_revision })).into_response();
    }
    if let Err(e) = node.freshness.check() {
        return (StatusCode::SERVICE_UNAVAILABLE, versioned(Readiness { status: "stale".into(), node_id, reason: Some(e.message), control_revision })).into_response();
    }
    versioned(Readiness { status: "ready".into(), node_id, reason: None, control_revision }).into_response()
}

/// Prometheus text exposition.
#[utoipa::path(get, path = "/metrics", responses((status = 200, description = "Prometheus text format", content_type = "text/plain")))]
pub async fn metrics(State(node): State<Arc<Node>>) -> Response {
    let usage = node.audit.journal_usage();
    let state = |s: &str| crate::metrics::JournalLabels { state: s.into() };
    let clamp = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    node.metrics.audit_journals.get_or_create(&state("hot")).set(clamp(usage.hot));
    node.metrics.audit_journals.get_or_create(&state("archived")).set(clamp(usage.archived));
    node.metrics.audit_journal_bytes.get_or_create(&state("hot")).set(clamp(usage.hot_bytes));
    node.metrics.audit_journal_bytes.get_or_create(&state("archived")).set(clamp(usage.archived_bytes));
    // Per-tenant queue depth and running count, read from the scheduler at scrape time
    // (nothing on the request path).
    let tenants: Vec<String> = node.tenants.read().unwrap_or_else(|p| p.into_inner()).keys().cloned().collect();
    for id in tenants {
        let label = crate::metrics::TenantLabels { tenant: id.clone() };
        node.metrics.tenant_queued.get_or_create(&label).set(clamp(node.scheduler.queued_in(&id) as u64));
        node.metrics.tenant_running.get_or_create(&label).set(i64::from(node.scheduler.running_in(&id)));
    }
    if node.config.audit_store.is_none() {
        let file = |name: &str| std::fs::metadata(node.config.data_dir.join(name)).map(|m| m.len()).unwrap_or(0);
        node.metrics.audit_store_bytes.set(clamp(file("audit.db") + file("audit.db-wal")));
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], node.metrics.encode()).into_response()
}

/// This document.
#[utoipa::path(get, path = "/v1/openapi.json", responses((status = 200, description = "The OpenAPI 3.1 document (it has no protocol_version: OpenAPI allows no such field)", body = Object)))]
pub async fn openapi() -> Response {
    axum::Json(crate::api::openapi::document()).into_response()
}

pub async fn not_found(uri: Uri) -> ApiError {
    ApiError::not_found(format!(
        "no route {}; the API is under /v1 (see /v1/openapi.json) and tenant traffic under /apps/{{capability}}/",
        uri.path()
    ))
}

/// The OpenAPI document, generated from the handlers' annotations.
#[derive(OpenApi)]
#[openapi(
    info(title = "Runplane node API", version = "1.0", description = "Admin API and tenant traffic, both with `Authorization: Bearer <credential>`: a capability token (Biscuit) whose role allows the operation, the instance's root admin token, or (for tenant traffic and token exchange) a tenant API key. Every JSON response carries protocol_version."),
    paths(
        healthz, livez, readyz, metrics, openapi,
        crate::api::admin::create_tenant, crate::api::admin::list_tenants, crate::api::admin::get_tenant, crate::api::admin::provision_tenant,
        crate::api::admin::delete_tenant, crate::api::admin::suspend_tenant, crate::api::admin::resume_tenant,
        crate::api::admin::create_key, crate::api::admin::delete_key, crate::api::admin::list_secrets, crate::api::admin::put_secret,
        crate::api::admin::push_capability, crate::api::admin::list_capabilities,
        crate::api::admin::deploy, crate::api::admin::list_deployments, crate::api::admin::undeploy,
        crate::api::admin::audit_logs, crate::api::admin::audit_events, crate::api::admin::audit_key,
        crate::api::admin::audit_checkpoint, crate::api::admin::audit_checkpoints, crate::api::admin::audit_entries,
        crate::api::admin::audit_inclusion, crate::api::admin::audit_consistency, crate::api::admin::replay_log,
        crate::api::admin::replay_invocation,
        crate::api::tenancy::get_quota, crate::api::tenancy::set_quota, crate::api::tenancy::plan,
        crate::api::tenancy::register_contract, crate::api::tenancy::get_contract, crate::api::tenancy::execute_contract,
        crate::api::apps::serve,
        crate::api::controlplane::get_config, crate::api::controlplane::config_versions, crate::api::controlplane::set_config,
        crate::api::controlplane::rollback_config, crate::api::controlplane::list_flags, crate::api::controlplane::list_tenant_flags,
        crate::api::controlplane::put_flag, crate::api::controlplane::put_tenant_flag, crate::api::controlplane::delete_flag,
        crate::api::controlplane::delete_tenant_flag, crate::api::controlplane::list_domains, crate::api::controlplane::put_domain,
        crate::api::controlplane::list_tenant_domains, crate::api::controlplane::activate_domain, crate::api::controlplane::deactivate_domain,
        crate::api::controlplane::list_environments, crate::api::controlplane::put_environment, crate::api::controlplane::promote,
        crate::api::controlplane::pause_deployment, crate::api::controlplane::resume_deployment, crate::api::controlplane::drain_tenant,
        crate::api::controlplane::rotate_kek, crate::api::controlplane::admin_events,
        crate::api::tokens::mint_token, crate::api::tokens::mint_tenant_token, crate::api::tokens::exchange,
        crate::api::tokens::revoke, crate::api::tokens::list_revoked,
        crate::api::cluster::list_nodes, crate::api::cluster::drain_node, crate::api::instance::metadata,
        crate::api::rollouts::start, crate::api::rollouts::list, crate::api::rollouts::get, crate::api::rollouts::promote, crate::api::rollouts::abort,
        crate::api::rollouts::retry, crate::api::rollouts::pause, crate::api::rollouts::resume, crate::api::rollouts::undo,
        crate::api::rollouts::start_group, crate::api::rollouts::get_group, crate::api::rollouts::promote_group, crate::api::rollouts::abort_group,
        crate::api::rollouts::retry_group, crate::api::rollouts::pause_group, crate::api::rollouts::resume_group,
        crate::api::jobs::submit, crate::api::jobs::list, crate::api::jobs::get, crate::api::jobs::attempts, crate::api::jobs::cancel,
        crate::api::ca::init, crate::api::ca::show, crate::api::ca::rotate, crate::api::ca::issue, crate::api::ca::list, crate::api::ca::revoke, crate::api::ca::reload_tls,
    ),
    components(schemas(crate::error::ErrorResponse, crate::error::ErrorBody, runplane_policy::flags::Variant)),
    modifiers(&BearerAuth),
)]
pub struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme("admin_token", SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()));
        components.add_security_scheme("tenant_key", SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()));
    }
}
