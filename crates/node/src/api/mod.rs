//! The HTTP surface: one router, one error type ([`crate::error::ApiError`]).

pub mod admin;
pub mod apps;
pub mod ca;
pub mod cluster;
pub mod controlplane;
pub mod gate;
pub(crate) mod idempotency;
pub mod instance;
pub mod jobs;
pub mod openapi;
pub mod ops;
pub mod rollouts;
pub mod params;
pub mod tenancy;
pub mod tokens;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{any, delete, get, post, put};
use serde::Serialize;

use crate::error::MAX_BODY_SETTING;
use crate::node::Node;

pub use params::{PageParams, paginate};

/// Wraps a JSON response body with `protocol_version` (spec §6.5).
#[derive(Serialize)]
pub struct Versioned<T: Serialize> {
    #[serde(flatten)]
    pub body: T,
    pub protocol_version: &'static str,
}

/// `Json(Versioned { body, protocol_version: "1.0" })`.
pub fn versioned<T: Serialize>(body: T) -> axum::Json<Versioned<T>> {
    axum::Json(Versioned { body, protocol_version: runplane_ports::PROTOCOL_VERSION })
}

/// Every route of the node.
pub fn router(node: Arc<Node>) -> Router {
    let max_body = node.config.max_body_bytes;
    Router::new()
        .route("/healthz", get(ops::healthz))
        .route("/livez", get(ops::livez))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .route("/v1/openapi.json", get(ops::openapi))
        .route("/v1/tenants", post(admin::create_tenant).get(admin::list_tenants))
        .route("/v1/tenants/{id}", delete(admin::delete_tenant).get(admin::get_tenant))
        .route("/v1/tenants/{id}/provision", post(admin::provision_tenant))
        .route("/v1/tenants/{id}/suspend", post(admin::suspend_tenant))
        .route("/v1/tenants/{id}/resume", post(admin::resume_tenant))
        .route("/v1/tenants/{id}/keys", post(admin::create_key))
        .route("/v1/tenants/{id}/keys/{key_id}", delete(admin::delete_key))
        .route("/v1/ca", post(ca::init).get(ca::show))
        .route("/v1/ca/rotate", post(ca::rotate))
        .route("/v1/ca/certificates", post(ca::issue).get(ca::list))
        .route("/v1/ca/certificates/{serial}/revoke", post(ca::revoke))
        .route("/v1/tls/reload", post(ca::reload_tls))
        .route("/v1/instance/metadata", get(instance::metadata))
        .route("/v1/cluster/nodes", get(cluster::list_nodes))
        .route("/v1/cluster/nodes/{node_id}/drain", post(cluster::drain_node))
        .route("/v1/tenants/{id}/drain", post(controlplane::drain_tenant))
        .route("/v1/tenants/{id}/flags", get(controlplane::list_tenant_flags))
        .route("/v1/tenants/{id}/flags/{feature}", put(controlplane::put_tenant_flag).delete(controlplane::delete_tenant_flag))
        .route("/v1/tenants/{id}/domains", get(controlplane::list_tenant_domains))
        .route("/v1/tenants/{id}/domains/{domain}", post(controlplane::activate_domain).delete(controlplane::deactivate_domain))
        .route("/v1/tenants/{id}/tokens", post(tokens::mint_tenant_token))
        .route("/v1/tokens", post(tokens::mint_token))
        .route("/v1/tokens/exchange", post(tokens::exchange))
        .route("/v1/tokens/revoke", post(tokens::revoke))
        .route("/v1/tokens/revoked", get(tokens::list_revoked))
        .route("/v1/flags", get(controlplane::list_flags))
        .route("/v1/flags/{feature}", put(controlplane::put_flag).delete(controlplane::delete_flag))
        .route("/v1/domains", get(controlplane::list_domains))
        .route("/v1/domains/{domain}", put(controlplane::put_domain))
        .route("/v1/config", get(controlplane::get_config))
        .route("/v1/config/versions", get(controlplane::config_versions))
        .route("/v1/config/sets/{scope}", put(controlplane::set_config))
        .route("/v1/config/sets/{scope}/rollback", post(controlplane::rollback_config))
        .route("/v1/environments", get(controlplane::list_environments))
        .route("/v1/environments/{name}", put(controlplane::put_environment))
        .route("/v1/environments/{name}/promote", post(controlplane::promote))
        .route("/v1/jobs", post(jobs::submit).get(jobs::list))
        .route("/v1/jobs/{id}", get(jobs::get))
        .route("/v1/jobs/{id}/attempts", get(jobs::attempts))
        .route("/v1/jobs/{id}/cancel", post(jobs::cancel))
        .route("/v1/rollouts", post(rollouts::start).get(rollouts::list))
        .route("/v1/rollouts/{id}", get(rollouts::get))
        .route("/v1/rollouts/{id}/promote", post(rollouts::promote))
        .route("/v1/rollouts/{id}/abort", post(rollouts::abort))
        .route("/v1/rollouts/{id}/retry", post(rollouts::retry))
        .route("/v1/rollouts/{id}/pause", post(rollouts::pause))
        .route("/v1/rollouts/{id}/resume", post(rollouts::resume))
        .route("/v1/deployments/{route}/undo", post(rollouts::undo))
        .route("/v1/release-groups", post(rollouts::start_group))
        .route("/v1/release-groups/{id}", get(rollouts::get_group))
        .route("/v1/release-groups/{id}/promote", post(rollouts::promote_group))
        .route("/v1/release-groups/{id}/abort", post(rollouts::abort_group))
        .route("/v1/release-groups/{id}/retry", post(rollouts::retry_group))
        .route("/v1/release-groups/{id}/pause", post(rollouts::pause_group))
        .route("/v1/release-groups/{id}/resume", post(rollouts::resume_group))
        .route("/v1/deployments/{route}/pause", post(controlplane::pause_deployment))
        .route("/v1/deployments/{route}/resume", post(controlplane::resume_deployment))
        .route("/v1/secrets/kek/rotate", post(controlplane::rotate_kek))
        .route("/v1/admin-events", get(controlplane::admin_events))
        .route("/v1/tenants/{id}/quota", get(tenancy::get_quota).put(tenancy::set_quota))
        .route("/v1/scheduler/plan", post(tenancy::plan))
        .route("/v1/contracts", post(tenancy::register_contract))
        .route("/v1/contracts/{id}", get(tenancy::get_contract))
        .route("/v1/contracts/{id}/execute", post(tenancy::execute_contract))
        .route("/v1/tenants/{id}/secrets", get(admin::list_secrets))
        .route("/v1/tenants/{id}/secrets/{name}", put(admin::put_secret))
        .route(
            "/v1/capabilities",
            post(admin::push_capability).get(admin::list_capabilities).layer(DefaultBodyLimit::max(MAX_UPLOAD_BYTES)),
        )
        .route("/v1/deployments", post(admin::deploy).get(admin::list_deployments))
        .route("/v1/deployments/{route}", delete(admin::undeploy))
        .route("/v1/audit/logs", get(admin::audit_logs))
        .route("/v1/audit/events", get(admin::audit_events))
        .route("/v1/audit/key", get(admin::audit_key))
        .route("/v1/audit/logs/{log}/replay", post(admin::replay_log))
        .route("/v1/replay/{invocation_id}", post(admin::replay_invocation))
        .route("/v1/audit/logs/{log}/checkpoint", get(admin::audit_checkpoint))
        .route("/v1/audit/logs/{log}/checkpoints", get(admin::audit_checkpoints))
        .route("/v1/audit/logs/{log}/entries", get(admin::audit_entries))
        .route("/v1/audit/logs/{log}/proof/inclusion", get(admin::audit_inclusion))
        .route("/v1/audit/logs/{log}/proof/consistency", get(admin::audit_consistency))
        .route("/apps/{route}", any(apps::serve_root))
        .route("/apps/{route}/", any(apps::serve_root))
        .route("/apps/{route}/{*rest}", any(apps::serve))
        .route_layer(axum::middleware::from_fn_with_state(node.clone(), gate::admin_gate))
        .fallback(ops::not_found)
        .layer(axum::middleware::from_fn(only_this_surface))
        .layer(DefaultBodyLimit::max(max_body))
        .layer(axum::middleware::from_fn_with_state(node.clone(), refuse_oversized_bodies))
        .with_state(node)
}

/// With a separate admin listener, each listener answers only its own routes (404
/// saying where the others are).
async fn only_this_surface(req: axum::extract::Request, next: axum::middleware::Next) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    let surface = req.extensions().get::<crate::server::Surface>().copied().unwrap_or(crate::server::Surface::All);
    if surface.serves(req.uri().path()) {
        return next.run(req).await;
    }
    use crate::server::Surface;
    let message = if req.uri().path().starts_with("/v1/instance/") {
        "the instance metadata interface is served only on its own listener ([node] metadata_listen), over TLS 1.3 with a client certificate"
    } else {
        match surface {
            Surface::Tenant => "the admin API is not served on this listener; use the node's admin listener ([node] admin_listen)",
            Surface::Metadata => "this listener serves only the instance metadata interface (/v1/instance/metadata); use the node's listen or admin address",
            _ => "tenant traffic is not served on the admin listener; use the node's listen address",
        }
    };
    crate::error::ApiError::not_found(message).into_response()
}

/// Largest component upload (`POST /v1/capabilities`); other bodies are bounded by
/// `node.max_body_bytes`.
pub const MAX_UPLOAD_BYTES: usize = 64 << 20;

/// Refuses a body whose `Content-Length` is over the limit before any of it is read
/// or the credential is checked, so a client that sends the whole body before reading
/// gets its 413 at once (the listener's lingering close lets it read the answer).
async fn refuse_oversized_bodies(
    axum::extract::State(node): axum::extract::State<Arc<Node>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    let declared = req
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if let Some(declared) = declared {
        let (limit, setting) = if req.uri().path() == "/v1/capabilities" {
            (MAX_UPLOAD_BYTES, "the component upload limit: build a smaller component (release profile, opt-level \"s\", strip = true)")
        } else {
            (node.config.max_body_bytes, MAX_BODY_SETTING)
        };
        if declared > limit as u64 {
            return crate::error::ApiError::too_large_for(limit, setting).into_response();
        }
    }
    next.run(req).await
}

/// A JSON request body whose rejections are [`crate::error::ApiError`]s.
pub struct JsonBody<T>(pub T);

impl<T, S> axum::extract::FromRequest<S> for JsonBody<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = crate::error::ApiError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, Self::Rejection> {
        use axum::extract::rejection::JsonRejection as R;
        if !is_json(req.headers()) {
            return Err(crate::error::ApiError::new(
                axum::http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send the body as JSON with Content-Type: application/json",
            ));
        }
        let bytes = match <axum::body::Bytes as axum::extract::FromRequest<S>>::from_request(req, state).await {
            Ok(b) => b,
            Err(e) if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE => {
                return Err(crate::error::ApiError::body_too_large("the request body is larger than this endpoint accepts; send less"));
            }
            Err(e) => return Err(crate::error::ApiError::bad_request("invalid_body", e.body_text())),
        };
        let parsed = match axum::Json::<T>::from_bytes(&bytes) {
            // JSON has one kind of number: `2.0` is the integer 2 wherever one is expected
            // (JSON Schema says so too); serde refuses it, so whole floats are tried as integers.
            Err(R::JsonDataError(e)) => serde_json::from_slice::<serde_json::Value>(&bytes)
                .ok()
                .and_then(|mut v| whole_floats_to_integers(&mut v).then_some(v))
                .and_then(|v| serde_json::to_vec(&v).ok())
                .and_then(|b| axum::Json::<T>::from_bytes(&b).ok())
                .ok_or(R::JsonDataError(e)),
            other => other,
        };
        match parsed {
            Ok(axum::Json(v)) => Ok(JsonBody(v)),
            Err(R::JsonSyntaxError(e)) => Err(crate::error::ApiError::bad_request(
                "invalid_json",
                format!("the body is not valid JSON: {}", e.body_text()),
            )),
            Err(R::JsonDataError(e)) => Err(crate::error::ApiError::new(
                axum::http::StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_request",
                format!("the JSON body does not have the expected shape: {}", e.body_text()),
            )),
            Err(e) => Err(crate::error::ApiError::bad_request("invalid_body", e.body_text())),
        }
    }
}

/// `Content-Type: application/json` (parameters allowed) or `application/<x>+json`.
fn is_json(headers: &axum::http::HeaderMap) -> bool {
    let Some(ct) = headers.get(axum::http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) else { return false };
    let ct = ct.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    ct == "application/json" || (ct.starts_with("application/") && ct.ends_with("+json"))
}

/// Rewrites every float with no fraction that an `i64`/`u64` holds exactly as an
/// integer; whether anything changed.
fn whole_floats_to_integers(v: &mut serde_json::Value) -> bool {
    use serde_json::Value;
    match v {
        Value::Number(n) if n.is_f64() => {
            let f = n.as_f64().unwrap_or(f64::NAN);
            // Below 2^53 a float is exactly the integer it spells.
            if f.fract() == 0.0 && f.abs() < 9_007_199_254_740_992.0 {
                *v = Value::from(f as i64);
                return true;
            }
            false
        }
        Value::Array(items) => items.iter_mut().fold(false, |changed, i| whole_floats_to_integers(i) | changed),
        Value::Object(map) => map.values_mut().fold(false, |changed, i| whole_floats_to_integers(i) | changed),
        _ => false,
    }
}
