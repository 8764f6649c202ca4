//! The admin API's one policy enforcement point (spec §7.4, §7.5).
//!
//! Every `/v1/` route is listed in [`ADMIN_ROUTES`] with the operation it performs and
//! where its target tenant comes from. [`admin_gate`] runs before the handler (before
//! its body is even parsed): it authenticates the credential, authorizes the operation
//! for the target tenant, and after the handler has answered writes **exactly one**
//! `AdminEvent` to the instance's admin log — for reads, for failures, and for refused
//! attempts beyond a token's rights. A `/v1/` route missing from the table is refused
//! (fail closed), so a new endpoint cannot silently skip authorization or auditing.
//!
//! Handlers add what only they know (before/after, extra targets, details) through
//! [`annotate`], which writes into the request's [`AdminRecord`].

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::extract::{MatchedPath, RawPathParams, Request, State};
use axum::http::{HeaderMap, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use runplane_audit::{AuditEvent, LogId, Outcome};
use serde::Serialize;
use utoipa::ToSchema;

use crate::auth::Actor;
use crate::error::ApiError;
use crate::node::Node;

/// Where an admin route's target tenant comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TenantFrom {
    /// An instance-wide operation.
    None,
    /// The `{id}` path parameter.
    Path,
    /// The `{scope}` of a config set (`tenant:<id>:<capability>`).
    ConfigScope,
}

/// One admin route: method, path template (as in the router and the OpenAPI
/// document), operation, target tenant.
pub struct AdminRoute {
    pub method: &'static str,
    pub path: &'static str,
    pub operation: &'static str,
    pub tenant: TenantFrom,
}

const fn r(method: &'static str, path: &'static str, operation: &'static str, tenant: TenantFrom) -> AdminRoute {
    AdminRoute { method, path, operation, tenant }
}

use TenantFrom::{ConfigScope, None as Instance, Path as InPath};

/// Every admin route. The operation names are `runplane_policy`'s catalogue.
pub const ADMIN_ROUTES: &[AdminRoute] = &[
    r("POST", "/v1/tenants", "tenant.create", Instance),
    r("GET", "/v1/tenants", "tenant.list", Instance),
    r("GET", "/v1/tenants/{id}", "tenant.read", InPath),
    r("DELETE", "/v1/tenants/{id}", "tenant.delete", InPath),
    r("POST", "/v1/tenants/{id}/provision", "tenant.provision", InPath),
    r("POST", "/v1/tenants/{id}/suspend", "tenant.suspend", InPath),
    r("POST", "/v1/tenants/{id}/resume", "tenant.resume", InPath),
    r("POST", "/v1/tenants/{id}/drain", "tenant.drain", InPath),
    r("POST", "/v1/tenants/{id}/keys", "key.create", InPath),
    r("DELETE", "/v1/tenants/{id}/keys/{key_id}", "key.delete", InPath),
    r("POST", "/v1/ca", "ca.manage", Instance),
    r("GET", "/v1/ca", "ca.read", Instance),
    r("POST", "/v1/ca/rotate", "ca.manage", Instance),
    r("POST", "/v1/ca/certificates", "ca.issue", Instance),
    r("GET", "/v1/ca/certificates", "ca.read", Instance),
    r("POST", "/v1/ca/certificates/{serial}/revoke", "ca.revoke", Instance),
    r("POST", "/v1/tls/reload", "tls.reload", Instance),
    r("GET", "/v1/instance/metadata", "instance.metadata", Instance),
    r("GET", "/v1/cluster/nodes", "cluster.read", Instance),
    r("POST", "/v1/cluster/nodes/{node_id}/drain", "cluster.drain", Instance),
    r("GET", "/v1/tenants/{id}/quota", "quota.read", InPath),
    r("PUT", "/v1/tenants/{id}/quota", "quota.set", InPath),
    r("GET", "/v1/tenants/{id}/secrets", "secret.list", InPath),
    r("PUT", "/v1/tenants/{id}/secrets/{name}", "secret.put", InPath),
    r("POST", "/v1/secrets/kek/rotate", "secret.rotate_kek", Instance),
    r("POST", "/v1/scheduler/plan", "scheduler.plan", Instance),
    r("POST", "/v1/contracts", "contract.register", Instance),
    r("GET", "/v1/contracts/{id}", "contract.read", Instance),
    r("POST", "/v1/capabilities", "capability.push", Instance),
    r("GET", "/v1/capabilities", "capability.list", Instance),
    r("POST", "/v1/deployments", "deploy", Instance),
    r("GET", "/v1/deployments", "deployment.list", Instance),
    r("DELETE", "/v1/deployments/{route}", "undeploy", Instance),
    r("POST", "/v1/rollouts", "rollout.start", Instance),
    r("GET", "/v1/rollouts", "rollout.read", Instance),
    r("GET", "/v1/rollouts/{id}", "rollout.read", Instance),
    r("POST", "/v1/rollouts/{id}/promote", "rollout.promote", Instance),
    r("POST", "/v1/rollouts/{id}/abort", "rollout.abort", Instance),
    r("POST", "/v1/rollouts/{id}/retry", "rollout.retry", Instance),
    r("POST", "/v1/rollouts/{id}/pause", "rollout.pause", Instance),
    r("POST", "/v1/rollouts/{id}/resume", "rollout.resume", Instance),
    r("POST", "/v1/deployments/{route}/undo", "deployment.undo", Instance),
    r("POST", "/v1/release-groups", "rollout.start", Instance),
    r("GET", "/v1/release-groups/{id}", "rollout.read", Instance),
    r("POST", "/v1/release-groups/{id}/promote", "rollout.promote", Instance),
    r("POST", "/v1/release-groups/{id}/abort", "rollout.abort", Instance),
    r("POST", "/v1/release-groups/{id}/retry", "rollout.retry", Instance),
    r("POST", "/v1/release-groups/{id}/pause", "rollout.pause", Instance),
    r("POST", "/v1/release-groups/{id}/resume", "rollout.resume", Instance),
    r("POST", "/v1/deployments/{route}/pause", "deployment.pause", Instance),
    r("POST", "/v1/deployments/{route}/resume", "deployment.resume", Instance),
    r("GET", "/v1/environments", "environment.list", Instance),
    r("PUT", "/v1/environments/{name}", "environment.set", Instance),
    r("POST", "/v1/environments/{name}/promote", "promote", Instance),
    r("GET", "/v1/config", "config.read", Instance),
    r("GET", "/v1/config/versions", "config.read", Instance),
    r("PUT", "/v1/config/sets/{scope}", "config.set", ConfigScope),
    r("POST", "/v1/config/sets/{scope}/rollback", "config.rollback", ConfigScope),
    r("GET", "/v1/flags", "flag.list", Instance),
    r("PUT", "/v1/flags/{feature}", "flag.set", Instance),
    r("DELETE", "/v1/flags/{feature}", "flag.delete", Instance),
    r("GET", "/v1/tenants/{id}/flags", "flag.list", InPath),
    r("PUT", "/v1/tenants/{id}/flags/{feature}", "flag.set", InPath),
    r("DELETE", "/v1/tenants/{id}/flags/{feature}", "flag.delete", InPath),
    r("GET", "/v1/domains", "domain.list", Instance),
    r("PUT", "/v1/domains/{domain}", "domain.register", Instance),
    r("GET", "/v1/tenants/{id}/domains", "domain.list", InPath),
    r("POST", "/v1/tenants/{id}/domains/{domain}", "domain.activate", InPath),
    r("DELETE", "/v1/tenants/{id}/domains/{domain}", "domain.deactivate", InPath),
    r("POST", "/v1/tokens", "token.mint", Instance),
    r("POST", "/v1/tenants/{id}/tokens", "token.mint", InPath),
    r("POST", "/v1/tokens/revoke", "token.revoke", Instance),
    r("GET", "/v1/tokens/revoked", "token.list", Instance),
    r("GET", "/v1/admin-events", "audit.read", Instance),
    r("GET", "/v1/audit/logs", "audit.read", Instance),
    r("GET", "/v1/audit/events", "audit.read", Instance),
    r("GET", "/v1/audit/key", "audit.read", Instance),
    r("GET", "/v1/audit/logs/{log}/checkpoint", "audit.read", Instance),
    r("GET", "/v1/audit/logs/{log}/checkpoints", "audit.read", Instance),
    r("GET", "/v1/audit/logs/{log}/entries", "audit.read", Instance),
    r("GET", "/v1/audit/logs/{log}/proof/inclusion", "audit.read", Instance),
    r("GET", "/v1/audit/logs/{log}/proof/consistency", "audit.read", Instance),
    r("POST", "/v1/audit/logs/{log}/replay", "replay", Instance),
    r("POST", "/v1/replay/{invocation_id}", "replay", Instance),
];

/// `/v1/` routes that are not admin actions: the public API document, and tenant
/// traffic, which is authorized and audited in the tenant's own log.
pub const NOT_ADMIN: &[&str] = &[
    "/v1/openapi.json",
    "/v1/contracts/{id}/execute",
    "/v1/tokens/exchange",
    // Jobs take a tenant's credential or an admin one; the handlers authorize both and
    // write the admin event for an admin caller (`api/jobs.rs`).
    "/v1/jobs",
    "/v1/jobs/{id}",
    "/v1/jobs/{id}/attempts",
    "/v1/jobs/{id}/cancel",
];

/// What the handler adds to its request's admin event.
#[derive(Default)]
pub struct AdminRecord {
    pub tenant: Option<String>,
    pub targets: Vec<String>,
    pub details: BTreeMap<String, serde_json::Value>,
    pub capability_digest: Option<String>,
    /// Set when the handler decided the outcome itself (e.g. `denied` for a refused push).
    pub outcome: Option<Outcome>,
}

tokio::task_local! {
    static RECORD: Arc<Mutex<AdminRecord>>;
}

/// Adds to the current request's admin event (no-op outside an admin request).
pub fn annotate(f: impl FnOnce(&mut AdminRecord)) {
    let _ = RECORD.try_with(|r| f(&mut r.lock().unwrap_or_else(|p| p.into_inner())));
}

/// Whether the caller is inside an admin request (its event is written by the gate).
pub fn in_admin_request() -> bool {
    RECORD.try_with(|_| ()).is_ok()
}

fn route_of(method: &Method, path: &str) -> Option<&'static AdminRoute> {
    ADMIN_ROUTES.iter().find(|r| r.path == path && r.method == method.as_str())
}

/// The target tenant of a request, from its path parameters.
fn target_tenant(route: &AdminRoute, params: &RawPathParams) -> Option<String> {
    let param = |name: &str| params.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_owned());
    match route.tenant {
        TenantFrom::None => None,
        TenantFrom::Path => param("id"),
        TenantFrom::ConfigScope => param("scope").and_then(|s| crate::configsets::Scope::parse(&s).ok()?.tenant().map(str::to_owned)),
    }
}

/// The `X-Runplane-Reason` header (why the actor did it), bounded.
fn reason(headers: &HeaderMap) -> Option<String> {
    let r = headers.get("x-runplane-reason")?.to_str().ok()?.trim();
    (!r.is_empty()).then(|| r.chars().take(512).collect())
}

/// The middleware (a `route_layer`, so it sees the matched route).
pub async fn admin_gate(State(node): State<Arc<Node>>, req: Request, next: Next) -> Response {
    let Some(matched) = req.extensions().get::<MatchedPath>().map(|m| m.as_str().to_owned()) else {
        return next.run(req).await;
    };
    if !matched.starts_with("/v1/") || NOT_ADMIN.contains(&matched.as_str()) {
        return next.run(req).await;
    }
    let Some(route) = route_of(req.method(), &matched) else {
        if ADMIN_ROUTES.iter().any(|r| r.path == matched) {
            // A method the route does not serve: the router answers 405 with Allow.
            return next.run(req).await;
        }
        // Fail closed: a route without a policy entry is never served.
        return ApiError::forbidden(format!("{} {matched} has no authorization policy; this is a bug in Runplane, please report it", req.method()))
            .into_response();
    };
    // A node that cannot vouch for its control state acts on none of it.
    if let Err(e) = node.freshness.check() {
        return e.into_response();
    }
    let (mut parts, body) = req.into_parts();
    let params = match <RawPathParams as axum::extract::FromRequestParts<()>>::from_request_parts(&mut parts, &()).await {
        Ok(p) => p,
        Err(e) => return ApiError::bad_request("invalid_path", format!("{e}")).into_response(),
    };
    let tenant = target_tenant(route, &params);
    let path_target = params.iter().next().map(|(_, v)| v.to_owned());
    let why = reason(&parts.headers);
    // Mutual TLS: the certificate (if any) goes into the admin event beside the token,
    // and where [tls] admin_client_certificate = "required", there is no admin API
    // without one.
    let certificate = parts.extensions.get::<crate::tls::PeerCertificate>().and_then(|p| p.get().cloned());
    let metadata_surface = parts.extensions.get::<crate::server::Surface>() == Some(&crate::server::Surface::Metadata);
    if certificate.is_none() && (metadata_surface || node.tls.get().is_some_and(|t| t.admin_needs_client_certificate())) {
        return ApiError::unauthorized(
            "the admin API of this node needs a client certificate ([tls] admin_client_certificate = \"required\"): connect with one issued by the CA in [tls] client_ca_file, as well as your token",
        )
        .into_response();
    }
    let actor = match node.authorize(&parts.headers, route.operation, tenant.as_deref()) {
        Ok(actor) => actor,
        Err(crate::auth::Refusal::Unauthenticated(e)) => return node.unauthenticated(&parts.extensions, e).await.into_response(),
        Err(crate::auth::Refusal::Forbidden(actor, e)) => {
            // An attempt beyond the credential's rights: refused, and audited.
            let mut ev = node.event(&actor.name, tenant.as_deref(), route.operation, path_target.as_deref().unwrap_or(&matched), Outcome::denied("forbidden", Some(403)));
            fill_admin_details(&mut ev, &actor, why, path_target.into_iter().collect(), None);
            add_certificate(&mut ev, certificate.as_ref());
            if let Err(audit) = node.append(LogId::admin(), ev).await {
                return audit.into_response();
            }
            return e.into_response();
        }
    };
    // The instance metadata interface validates every request by a signed token
    // (S0-XIII): a capability token, never the bootstrap admin token or a tenant key.
    if metadata_surface && actor.token_id.is_none() {
        return ApiError::unauthorized(
            "the instance metadata interface takes only signed capability tokens: mint one with POST /v1/tokens (role auditor or operator) and send it with your client certificate",
        )
        .into_response();
    }
    if let Err(t) = node.limits.admin(&actor.name) {
        return node.throttled(t, &actor.name, None).await.into_response();
    }
    let record = Arc::new(Mutex::new(AdminRecord { tenant: tenant.clone(), targets: path_target.iter().cloned().collect(), ..Default::default() }));
    let req = Request::from_parts(parts, body);
    let response = match crate::api::idempotency::begin(&node, route.operation, &actor.name, req).await {
        Ok(crate::api::idempotency::Begin::Proceed(req, claimed)) => {
            let response = RECORD.scope(record.clone(), next.run(req)).await;
            match claimed {
                Some(c) => crate::api::idempotency::finish(&node, c, response).await,
                None => response,
            }
        }
        Ok(crate::api::idempotency::Begin::Answered(response)) => {
            record.lock().unwrap_or_else(|p| p.into_inner()).details.insert("idempotent_replay".into(), true.into());
            response
        }
        Err(e) => e.into_response(),
    };

    let record = std::mem::take(&mut *record.lock().unwrap_or_else(|p| p.into_inner()));
    let status = response.status();
    let outcome = record.outcome.clone().unwrap_or_else(|| {
        if status.is_success() {
            Outcome::ok(Some(status.as_u16()))
        } else {
            Outcome::error(&status.canonical_reason().unwrap_or("error").to_lowercase().replace(' ', "_"), Some(status.as_u16()))
        }
    });
    let target = record.targets.first().cloned().unwrap_or_else(|| matched.clone());
    let mut ev = node.event(&actor.name, record.tenant.as_deref(), route.operation, &target, outcome);
    ev.capability_digest = record.capability_digest;
    fill_admin_details(&mut ev, &actor, why, record.targets, Some(record.details));
    add_certificate(&mut ev, certificate.as_ref());
    // Fail closed: an admin action that could not be audited is not acknowledged.
    match node.append(LogId::admin(), ev).await {
        Ok(_) => response,
        Err(e) => e.into_response(),
    }
}

/// Records the client certificate the actor's connection presented.
fn add_certificate(ev: &mut AuditEvent, certificate: Option<&crate::tls::ClientCertificate>) {
    if let Some(c) = certificate {
        ev.details.insert("client_certificate".into(), serde_json::json!({"subject": c.subject, "sha256": c.sha256}));
    }
}

fn fill_admin_details(ev: &mut AuditEvent, actor: &Actor, reason: Option<String>, targets: Vec<String>, details: Option<BTreeMap<String, serde_json::Value>>) {
    if let Some(details) = details {
        ev.details.extend(details);
    }
    if let Some(r) = reason {
        ev.details.entry("reason".into()).or_insert(r.into());
    }
    ev.details.insert("targets".into(), targets.into());
    ev.details.insert("role".into(), actor.role.as_str().into());
    if let Some(id) = &actor.token_id {
        ev.details.insert("token_id".into(), id.clone().into());
    }
}

/// An admin action as spec §7.5 names it: a typed view of an admin-log event.
#[derive(Debug, Serialize, ToSchema)]
pub struct AdminEvent {
    pub admin_event_id: String,
    pub action_type: String,
    pub actor: String,
    pub observed_at_utc: String,
    pub reason: Option<String>,
    pub targets: Vec<String>,
    #[schema(value_type = Option<Object>)]
    pub before: Option<serde_json::Value>,
    #[schema(value_type = Option<Object>)]
    pub after: Option<serde_json::Value>,
    /// `ok`, `error` or `denied`, with the code and HTTP status.
    #[schema(value_type = Object)]
    pub result: Outcome,
    /// The index of the event in the admin log (for inclusion proofs).
    pub log_index: u64,
}

impl AdminEvent {
    pub fn from_audit(index: u64, ev: &AuditEvent) -> AdminEvent {
        let targets = ev
            .details
            .get("targets")
            .and_then(|t| serde_json::from_value::<Vec<String>>(t.clone()).ok())
            .filter(|t| !t.is_empty())
            .unwrap_or_else(|| vec![ev.target.clone()]);
        AdminEvent {
            admin_event_id: ev.event_id.clone(),
            action_type: ev.action.clone(),
            actor: ev.actor.clone(),
            observed_at_utc: ev.time.clone(),
            reason: ev.details.get("reason").and_then(|r| r.as_str()).map(str::to_owned),
            targets,
            before: ev.details.get("before").cloned(),
            after: ev.details.get("after").cloned(),
            result: ev.outcome.clone(),
            log_index: index,
        }
    }
}
