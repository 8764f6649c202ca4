//! Tenant traffic: `/apps/{route}/…` with `Authorization: Bearer <tenant key>`.

use std::sync::Arc;
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use runplane_audit::{LogId, Outcome};
use runplane_host::{Invocation, Journal};
use runplane_ports::{ExecutionContext, PROTOCOL_VERSION, TenantId};

use runplane_tenancy::{Pass, Resource};

use crate::auth::bearer;
use crate::control::Tenant;
use crate::metrics::QuotaLabels;
use crate::quotas::{Admitted, meter_ports, tier_of};
use crate::error::{ApiError, invoke_error};
use crate::metrics::InvocationLabels;
use crate::node::Node;
use crate::replay::{Input, JournalRecord, complete_event};

/// Headers never passed to a capability: the tenant's credential stays at the boundary.
const STRIPPED_REQUEST_HEADERS: &[&str] = &["authorization", "cookie", "proxy-authorization"];
/// Hop-by-hop headers never copied from a capability's response.
const STRIPPED_RESPONSE_HEADERS: &[&str] = &["connection", "transfer-encoding", "keep-alive", "upgrade", "content-length"];

pub async fn serve_root(state: State<Arc<Node>>, Path(route): Path<String>, req: Request) -> Response {
    handle(state, route, String::new(), req).await
}

/// Call a deployed capability. The path after `/apps/{route}` is what the capability sees.
#[utoipa::path(get, path = "/apps/{route}/{rest}", security(("tenant_key" = [])),
    params(("route" = String, Path, description = "The deployment's route"), ("rest" = String, Path, description = "Path passed to the capability")),
    responses((status = 200, description = "Whatever the capability answers"), (status = 401, body = crate::error::ErrorResponse),
        (status = 403, body = crate::error::ErrorResponse), (status = 404, body = crate::error::ErrorResponse),
        (status = 421, description = "the tenant is pinned to another region (`wrong_region`; `details.region` names it)", body = crate::error::ErrorResponse),
        (status = 503, body = crate::error::ErrorResponse)))]
pub async fn serve(state: State<Arc<Node>>, Path((route, rest)): Path<(String, String)>, req: Request) -> Response {
    handle(state, route, rest, req).await
}

async fn handle(State(node): State<Arc<Node>>, route: String, rest: String, req: Request) -> Response {
    let result = invoke_http(&node, &route, &rest, req).await;
    let response = result.unwrap_or_else(IntoResponse::into_response);
    node.metrics
        .requests
        .get_or_create(&crate::metrics::RequestLabels { surface: "apps".into(), status: response.status().as_u16().to_string() })
        .inc();
    response
}

/// A W3C trace id from `traceparent`, or a fresh one.
fn trace_id(node: &Node, headers: &axum::http::HeaderMap) -> String {
    headers
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split('-').nth(1))
        .filter(|t| t.len() == 32 && t.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) && *t != "0".repeat(32))
        .map(str::to_owned)
        .unwrap_or_else(|| {
            let mut b = [0u8; 16];
            node.entropy.fill(&mut b);
            hex::encode(b)
        })
}

/// Builds the execution context at the boundary (spec §6.2).
pub(crate) fn new_context(node: &Node, tenant: &TenantId, agent_id: &str, session: Option<&str>, trace_id: String, capability: &str, digest: &str) -> ExecutionContext {
    let accepted_at_unix_nanos = node.now();
    let invocation_id = node.entropy.uuid_at(accepted_at_unix_nanos).to_string();
    ExecutionContext {
        protocol_version: PROTOCOL_VERSION.into(),
        session_id: session.map(str::to_owned).unwrap_or_else(|| invocation_id.clone()),
        invocation_id,
        agent_id: agent_id.to_owned(),
        trace_id,
        execution_seed: node.entropy.next_u64(),
        tenant: tenant.clone(),
        node_id: None,
        capability: capability.to_owned(),
        capability_digest: digest.to_owned(),
        accepted_at_unix_nanos,
    }
}

async fn invoke_http(node: &Arc<Node>, route: &str, rest: &str, req: Request) -> Result<Response, ApiError> {
    let (owner, tenant) = match bearer(req.headers()).and_then(|credential| node.check_tenant_request(credential, route)) {
        Ok(found) => found,
        Err(e) if e.status == StatusCode::UNAUTHORIZED => return Err(node.unauthenticated(req.extensions(), e).await),
        Err(e) => return Err(e),
    };
    // Before any expensive work (reading the body, ids, the audit of each refusal): a
    // tenant past its request rate or with its CPU window spent is refused cheaply.
    if let Err(t) = node.limits.tenant(&tenant.id) {
        return Err(node.throttled(t, &format!("tenant:{}/{}", tenant.id, owner.key_id), Some(&tenant.id)).await);
    }
    if node.config.scheduler.enabled
        && let Err(r) = node.quotas.admit(&tenant.id, tier_of(&tenant), node.now_secs())
    {
        return Err(refuse(node, &tenant.id, r.resource, r.message, r.retry_after_secs).await);
    }
    let stable = node
        .deployment(route)
        .ok_or_else(|| ApiError::not_found(format!("no capability is deployed on route {route}")))?;
    let session = req
        .headers()
        .get("x-runplane-session")
        .and_then(|v| v.to_str().ok())
        .filter(|s| !s.is_empty() && s.len() <= 128 && s.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_owned);
    // A rollout in progress decides the version (spec §8); every answer from here on
    // names it.
    let serving = node.serving(route, stable, &tenant.id, session.as_deref());
    let label = format!("{}@{}", serving.deployment.deployment.capability, serving.deployment.deployment.version);
    invoke_version(node, route, rest, req, owner, tenant, serving, session).await.map_err(|mut e| {
        e.headers.push(("x-runplane-capability", label));
        e
    })
}

/// Runs the invocation on the version `serving` chose, and counts how it ended for the
/// rollout's analysis.
#[allow(clippy::too_many_arguments)]
async fn invoke_version(
    node: &Arc<Node>,
    route: &str,
    rest: &str,
    req: Request,
    owner: crate::auth::KeyOwner,
    tenant: Tenant,
    serving: crate::rollouts::Serving,
    session: Option<String>,
) -> Result<Response, ApiError> {
    let deployment = &serving.deployment;
    let tenant_id = TenantId::new(&tenant.id)?;
    // An invocation that cannot be audited must not run (fail closed before any effect).
    node.audit.writable(&LogId::tenant(&tenant.id))?;

    let (parts, body) = req.into_parts();
    let limit = node.config.max_body_bytes;
    let body = axum::body::to_bytes(body, limit).await.map_err(|_| ApiError::too_large(limit))?;
    let cap = &deployment.capability;
    let context = Arc::new(new_context(node, &tenant_id, &owner.key_id, session.as_deref(), trace_id(node, &parts.headers), &cap.name, &cap.digest));

    // What the capability sees: its own path, the caller's headers minus credentials.
    let path_and_query = match parts.uri.query() {
        Some(q) => format!("/{rest}?{q}"),
        None => format!("/{rest}"),
    };
    let uri = format!("http://{route}.apps.runplane.internal{path_and_query}");
    let mut builder = http::Request::builder().method(parts.method.clone()).uri(uri.as_str());
    let mut seen_headers = Vec::new();
    for (k, v) in &parts.headers {
        if !STRIPPED_REQUEST_HEADERS.contains(&k.as_str()) && k != http::header::HOST {
            builder = builder.header(k, v);
            if let Ok(text) = v.to_str() {
                seen_headers.push((k.as_str().to_owned(), text.to_owned()));
            }
        }
    }
    let request = builder
        .body(body.clone())
        .map_err(|e| ApiError::bad_request("invalid_request", format!("the request cannot be passed on: {e}")))?;
    let request_digest = digest_request(parts.method.as_str(), &path_and_query, &body);

    let (admitted, _pass) = admit(node, &tenant).await?;
    let ports = tenant_ports(node, &tenant).await?;
    let config_version = ports.config.version();
    node.metrics.in_flight.inc();
    let started = Instant::now();
    let journal = Journal::record();
    let (outcome, report) = node
        .host
        .handle_http(
            cap,
            Invocation { context: context.clone(), ports, allow: deployment.allow.clone(), journal: journal.clone(), limits: admitted.limits.clone() },
            request,
        )
        .await;
    node.metrics.in_flight.dec();
    admitted.settle(report.fuel_consumed);
    serving.record(
        match &outcome {
            Ok(resp) => crate::rollouts::Ended::Answered(resp.status),
            Err(e) => crate::rollouts::Ended::of(e),
        },
        started.elapsed(),
    );

    let mut event = node.event(
        &format!("tenant:{}/{}", tenant.id, owner.key_id),
        Some(&tenant.id),
        "invoke.http",
        route,
        Outcome::ok(None),
    );
    event.context = Some((*context).clone());
    event.config_version = Some(config_version);
    event.request_digest = Some(request_digest);
    event.capability_digest = Some(cap.digest.clone());
    event.details.insert("method".into(), parts.method.as_str().into());
    event.details.insert("path".into(), format!("/{rest}").into());
    complete_event(&mut event, &outcome, &report, body.len() as u64);
    let record = JournalRecord {
        route: route.to_owned(),
        input: Input::Http { method: parts.method.as_str().to_owned(), uri, headers: seen_headers, body: Input::base64(&body) },
        allow_hosts: deployment.allow.entries().to_vec(),
        observations: journal.observations(),
    };
    let (journal_json, journal_digest) = record.encode()?;
    event.details.insert("journal_digest".into(), journal_digest.into());
    let labels = |o: &str| InvocationLabels { capability: cap.name.clone(), kind: "http".into(), outcome: o.into() };
    let result = match outcome {
        Ok(resp) => {
            // A 5xx the capability answered is its own failure, told apart for analyses
            // that query Prometheus (`outcome="error_response"`).
            let o = if resp.status >= 500 { "error_response" } else { "ok" };
            node.metrics.invocations.get_or_create(&labels(o)).inc();
            node.metrics.invocation_seconds.get_or_create(&labels(o)).observe(started.elapsed().as_secs_f64());
            Ok(resp)
        }
        Err(e) => {
            tracing::warn!(tenant = %tenant.id, route, invocation_id = %context.invocation_id, error = %e, "invocation failed");
            let api = quota_error(node, &tenant, invoke_error(&e), &e);
            node.metrics.invocations.get_or_create(&labels(e.code())).inc();
            Err(api)
        }
    };
    // Fail closed: an invocation that could not be audited is not acknowledged.
    node.audit
        .append_with_journal(LogId::tenant(&tenant.id), &event, &context.invocation_id, &journal_json, node.now_secs())
        .await
        .map_err(|e| {
            node.metrics.audit_failures.inc();
            ApiError::from(e)
        })?;

    let resp = result?;
    let mut out = Response::builder().status(StatusCode::from_u16(resp.status).unwrap_or(StatusCode::BAD_GATEWAY));
    for (k, v) in &resp.headers {
        if STRIPPED_RESPONSE_HEADERS.contains(&k.as_str()) {
            continue;
        }
        if let (Ok(k), Ok(v)) = (HeaderName::try_from(k.as_str()), HeaderValue::try_from(v.as_str())) {
            out = out.header(k, v);
        }
    }
    let d = &deployment.deployment;
    out = out
        .header("x-runplane-capability", format!("{}@{}", d.capability, d.version))
        .header("x-runplane-invocation-id", context.invocation_id.as_str())
        .header("x-runplane-trace-id", context.trace_id.as_str())
        .header("x-runplane-protocol-version", PROTOCOL_VERSION);
    out.body(Body::from(resp.body)).map_err(|e| ApiError::new(StatusCode::BAD_GATEWAY, "invalid_response", format!("the capability's response could not be sent: {e}")))
}

/// What every tenant request passes after its credential (spec §7.3, §7.5), in this
/// order: the route is not paused (503), the tenant is entitled to the capability's
/// domain (403 `not_entitled`), and the route's feature flag is on for the tenant (403
/// `flag_disabled`). All in memory: a few map reads.
pub(crate) fn check_request(node: &Node, tenant: &Tenant, route: &str, d: &crate::control::Deployment) -> Result<(), ApiError> {
    if node.controlplane.is_paused(route) {
        return Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "paused", format!("route {route} is paused by an operator; retry later")));
    }
    node.controlplane.check_entitled(&tenant.id, &d.capability)?;
    if let Some(flag) = &d.flag {
        let e = node.controlplane.flag_enabled(flag, &tenant.id, tier_of(tenant), node.now_secs());
        if !e.enabled {
            return Err(ApiError::forbidden_code(
                "flag_disabled",
                format!("route {route} is behind feature flag {flag}, which is off for tenant {} ({}); ask your administrator to enable it", tenant.id, e.reason.as_str()),
            ));
        }
    }
    Ok(())
}

/// The tenant a request's credential belongs to — a tenant API key, or a capability
/// token allowing `operation` — if that tenant may be served now (active and
/// provisioned). The tenant comes from the credential only.
pub(crate) fn serving_tenant(node: &Node, headers: &axum::http::HeaderMap, operation: &str, route: Option<&str>) -> Result<(crate::auth::KeyOwner, Tenant), ApiError> {
    serving_tenant_of(node, bearer(headers)?, operation, route)
}

impl Node {
    /// Everything a tenant request to `route` passes before admission: the credential
    /// (API key, or tenant token with every attenuation checked), the tenant's state,
    /// then [`check_request`]. Public so the policy bench measures exactly this path.
    pub fn check_tenant_request(&self, credential: &str, route: &str) -> Result<(crate::auth::KeyOwner, Tenant), ApiError> {
        let (owner, tenant) = serving_tenant_of(self, credential, "invoke", Some(route))?;
        let deployment = self.deployment(route).ok_or_else(|| ApiError::not_found(format!("no capability is deployed on route {route}")))?;
        check_request(self, &tenant, route, &deployment.deployment)?;
        Ok((owner, tenant))
    }
}

fn serving_tenant_of(node: &Node, credential: &str, operation: &str, route: Option<&str>) -> Result<(crate::auth::KeyOwner, Tenant), ApiError> {
    // A node that cannot vouch for its keys, tenants and revocations serves no one.
    node.freshness.check()?;
    let owner = node.tenant_credential(credential, operation, route)?;
    let tenant = node
        .tenant(&owner.tenant)
        .ok_or_else(|| ApiError::unauthorized("the API key is not valid; ask your administrator for a tenant key"))?;
    if tenant.status != "active" {
        return Err(ApiError::forbidden(format!("tenant {} is suspended; contact your administrator", tenant.id)));
    }
    // Residency: a pinned tenant is served only in its region (spec §8).
    if let Some(region) = node.config.tenant_regions.get(&tenant.id)
        && *region != node.config.region
    {
        return Err(ApiError::new(
            StatusCode::MISDIRECTED_REQUEST,
            "wrong_region",
            format!("tenant {}'s data stays in region {region}; this node is in {}: send its requests to a node of {region}", tenant.id, node.config.region),
        )
        .with_details(serde_json::json!({"region": region})));
    }
    if tenant.provisioning != "ready" {
        return Err(ApiError::unavailable(format!(
            "tenant {}'s stores are not provisioned yet ({}); retry shortly or ask your administrator",
            tenant.id, tenant.provisioning
        )));
    }
    Ok((owner, tenant))
}

/// Admits one invocation of `tenant`: its quota first (an exhausted CPU window is
/// refused until it ends), then its turn from the scheduler (a full queue is refused at
/// once). Every refusal is a 429 with `Retry-After` and a metric, and (the first of a
/// minute for its tenant and resource) an audit event in the tenant's log. The pass is
/// the right to run until dropped.
pub(crate) async fn admit(node: &Node, tenant: &Tenant) -> Result<(Admitted, Option<Pass>), ApiError> {
    if !node.config.scheduler.enabled {
        let pass = node.scheduler.admit("", Admitted::unlimited().share).await;
        return Ok((Admitted::unlimited(), pass.ok()));
    }
    let tier = tier_of(tenant);
    let admitted = match node.quotas.admit(&tenant.id, tier, node.now_secs()) {
        Ok(a) => a,
        Err(r) => return Err(refuse(node, &tenant.id, r.resource, r.message, r.retry_after_secs).await),
    };
    node.metrics.scheduler_queued.inc();
    let pass = node.scheduler.admit(&tenant.id, admitted.share).await;
    node.metrics.scheduler_queued.dec();
    match pass {
        Ok(pass) => Ok((admitted, Some(pass))),
        Err(rejected) => {
            Err(refuse(node, &tenant.id, Resource::Concurrency, rejected.to_string(), rejected.retry_after_secs).await)
        }
    }
}

/// The tenant's ports for an invocation: configuration frozen at the current snapshot
/// (its version goes in the audit event), writes metered against the disk quota.
pub(crate) async fn tenant_ports(node: &Node, tenant: &Tenant) -> Result<runplane_ports::PortSet, ApiError> {
    let mut ports = node.bindings.ports(&tenant.id, tenant.mode).await?;
    ports.config = node.config_sets.snapshot();
    if !node.config.scheduler.enabled {
        return Ok(ports);
    }
    Ok(meter_ports(&node.quotas, node.quotas.tenant(&tenant.id, tier_of(tenant), node.now_secs()), ports))
}

/// A quota refusal before the invocation ran: counted, answered with 429, and audited
/// the first time in a minute for its tenant and resource (a tenant that keeps sending
/// into a spent window costs the node a metric, not an audit commit per request).
async fn refuse(node: &Node, tenant: &str, resource: Resource, message: String, retry_after: u64) -> ApiError {
    node.metrics.quota_violations.get_or_create(&QuotaLabels { tenant: tenant.to_owned(), resource: resource.as_str().into() }).inc();
    if node.limits.quota_refusals.first(&(tenant.to_owned(), resource.as_str())) {
        let mut ev = node.event("runtime", Some(tenant), "quota.exceeded", tenant, Outcome::error("quota_exceeded", Some(429)));
        ev.details.insert("resource".into(), resource.as_str().into());
        ev.details.insert("message".into(), message.clone().into());
        // The refusal has no effect to protect, so it is answered even if the audit log
        // cannot take it (which `append` counts as an audit failure).
        let _ = node.append(LogId::tenant(tenant), ev).await;
    }
    let mut e = ApiError::new(StatusCode::TOO_MANY_REQUESTS, "quota_exceeded", message);
    e.headers.push(("retry-after", retry_after.to_string()));
    e
}

/// Adds what a quota violation inside the sandbox needs: the metric, and `Retry-After`
/// (the end of the window) for the rate-like quotas.
pub(crate) fn quota_error(node: &Node, tenant: &Tenant, mut api: ApiError, e: &runplane_host::InvokeError) -> ApiError {
    if let runplane_host::InvokeError::QuotaExceeded(v) = e {
        node.metrics.quota_violations.get_or_create(&QuotaLabels { tenant: tenant.id.clone(), resource: v.resource.as_str().into() }).inc();
        if matches!(v.resource, Resource::Cpu | Resource::Network) {
            api.headers.push(("retry-after", node.quotas.window_left(&tenant.id, tier_of(tenant), node.now_secs()).to_string()));
        }
    }
    api
}

/// `sha256:` of the canonical JSON of the request's method, path and body digest.
fn digest_request(method: &str, path: &str, body: &Bytes) -> String {
    let v = serde_json::json!({ "method": method, "path": path, "body_sha256": runplane_cjson::sha256_hex(body) });
    format!("sha256:{}", runplane_cjson::hash(&v).unwrap_or_default())
}
