//! The admin API under `/v1/` (admin token). Every action writes an audit event to the
//! instance's admin log.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use runplane_audit::{LogId, Outcome};
use runplane_ports::{SecretValue, TenantId};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::api::params::{Path, Query, page_limit};
use crate::api::{JsonBody, PageParams, paginate, versioned};
use crate::auth::{KeyOwner, hash_secret, new_id, new_secret};
use crate::config::Mode;
use crate::control::{CapabilityVersion, Deployment, Tenant};
use crate::error::ApiError;
use crate::node::Node;


fn tenant_id(id: &str) -> Result<TenantId, ApiError> {
    TenantId::new(id).map_err(|e| ApiError::bad_request("invalid_tenant_id", e.to_string()))
}

pub(crate) fn known_tenant(node: &Node, id: &str) -> Result<Tenant, ApiError> {
    tenant_id(id)?;
    node.tenant(id).ok_or_else(|| ApiError::not_found(format!("tenant {id} does not exist; list tenants with GET /v1/tenants")))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTenant {
    /// 1-63 characters of a-z, 0-9 and '-'.
    pub id: String,
    /// `shared` or `dedicated`; defaults to the node's mode.
    pub mode: Option<Mode>,
    /// Defaults to `free`.
    pub tier: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct TenantCreated {
    pub tenant: Tenant,
    /// The tenant's first API key. Shown once; only its hash is stored.
    pub api_key: String,
    pub key_id: String,
}

/// Create a tenant and its first API key.
#[utoipa::path(post, path = "/v1/tenants", request_body = CreateTenant, security(("admin_token" = [])),
    responses((status = 201, body = TenantCreated), (status = 400, body = crate::error::ErrorResponse), (status = 409, body = crate::error::ErrorResponse)))]
pub async fn create_tenant(State(node): State<Arc<Node>>, JsonBody(req): JsonBody<CreateTenant>) -> Result<Response, ApiError> {
    tenant_id(&req.id)?;
    let mode = req.mode.unwrap_or(node.config.mode);
    if node.config.mode == Mode::Dedicated && !node.tenants.read().unwrap_or_else(|p| p.into_inner()).is_empty() {
        return Err(ApiError::conflict("this is a dedicated instance, which has exactly one tenant; run a shared-mode node for more"));
    }
    let tier = req.tier.unwrap_or_else(|| "free".into());
    if !["free", "pro", "enterprise", "custom"].contains(&tier.as_str()) {
        return Err(ApiError::bad_request("invalid_tier", format!("tier {tier:?} is not one of free, pro, enterprise, custom")));
    }
    let tenant = Tenant {
        id: req.id.clone(),
        mode,
        status: "active".into(),
        tier,
        created_at: runplane_audit::rfc3339_utc(node.now()),
        provisioning: "pending".into(),
        provisioning_error: None,
    };
    // The tenant is recorded first (pending), so a provisioning interrupted by a crash
    // is resumed at the next start; it serves no traffic until provisioning is ready.
    if !node.control.insert_tenant(&tenant).await? {
        return Err(ApiError::conflict(format!("tenant {} already exists", tenant.id)));
    }
    let (api_key, key_id) = issue_key(&node, &tenant.id).await?;
    node.tenants.write().unwrap_or_else(|p| p.into_inner()).insert(tenant.id.clone(), tenant.clone());
    let provisioned = node.provision(&tenant.id).await;
    let tenant = known_tenant(&node, &tenant.id)?;
    let mut ev = node.event("admin", Some(&tenant.id), "tenant.create", &tenant.id, Outcome::ok(Some(201)));
    ev.details.insert("after".into(), serde_json::to_value(&tenant).unwrap_or_default());
    ev.details.insert("key_id".into(), key_id.clone().into());
    if let Err(e) = &provisioned {
        ev.outcome = Outcome::error("provisioning_failed", Some(503));
        ev.details.insert("provisioning_error".into(), e.message.clone().into());
    }
    node.audit_admin(ev).await?;
    match provisioned {
        Ok(()) => Ok((StatusCode::CREATED, versioned(TenantCreated { tenant, api_key, key_id })).into_response()),
        Err(e) => Err(ApiError::unavailable(format!(
            "tenant {} was created but provisioning its stores failed: {}; fix the backend and POST /v1/tenants/{}/provision to resume (its key: {key_id})",
            tenant.id,
            e.message.clone(),
            tenant.id
        ))),
    }
}

/// Provision (or resume provisioning) a tenant's stores.
#[utoipa::path(post, path = "/v1/tenants/{id}/provision", security(("admin_token" = [])), responses((status = 200, body = Tenant), (status = 503, body = crate::error::ErrorResponse)))]
pub async fn provision_tenant(State(node): State<Arc<Node>>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let before = known_tenant(&node, &id)?;
    let result = node.provision(&id).await;
    let after = known_tenant(&node, &id)?;
    let outcome = match &result {
        Ok(()) => Outcome::ok(Some(200)),
        Err(_) => Outcome::error("provisioning_failed", Some(503)),
    };
    let mut ev = node.event("admin", Some(&id), "tenant.provision", &id, outcome);
    ev.details.insert("before".into(), serde_json::to_value(&before).unwrap_or_default());
    ev.details.insert("after".into(), serde_json::to_value(&after).unwrap_or_default());
    node.audit_admin(ev).await?;
    result?;
    Ok(versioned(after).into_response())
}

async fn issue_key(node: &Node, tenant: &str) -> Result<(String, String), ApiError> {
    let key = new_secret(&node.entropy, "rpk_");
    let key_id = new_id(&node.entropy, "key_");
    let hash = hash_secret(&key);
    node.control.insert_key(&hash, &key_id, tenant, &runplane_audit::rfc3339_utc(node.now())).await?;
    node.keys.insert(hash, KeyOwner { tenant: tenant.to_owned(), key_id: key_id.clone() });
    Ok((key, key_id))
}

#[derive(Serialize, ToSchema)]
pub struct TenantList {
    pub items: Vec<Tenant>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// List tenants.
#[utoipa::path(get, path = "/v1/tenants", params(PageParams), security(("admin_token" = [])), responses((status = 200, body = TenantList)))]
pub async fn list_tenants(State(node): State<Arc<Node>>, Query(page): Query<PageParams>) -> Result<Response, ApiError> {
    let (items, next_cursor) = paginate(node.control.tenants().await?, |t| t.id.clone(), &page)?;
    Ok(versioned(TenantList { items, next_cursor }).into_response())
}

/// Show one tenant.
#[utoipa::path(get, path = "/v1/tenants/{id}", security(("admin_token" = [])), responses((status = 200, body = Tenant), (status = 404, body = crate::error::ErrorResponse)))]
pub async fn get_tenant(State(node): State<Arc<Node>>, Path(id): Path<String>) -> Result<Response, ApiError> {
    Ok(versioned(known_tenant(&node, &id)?).into_response())
}

async fn set_status(node: &Arc<Node>, id: &str, status: &str, action: &str) -> Result<Response, ApiError> {
    let before = known_tenant(node, id)?;
    node.control.set_tenant_status(id, status).await?;
    let mut after = before.clone();
    after.status = status.into();
    node.tenants.write().unwrap_or_else(|p| p.into_inner()).insert(id.to_owned(), after.clone());
    let mut ev = node.event("admin", Some(id), action, id, Outcome::ok(Some(200)));
    ev.details.insert("before".into(), before.status.into());
    ev.details.insert("after".into(), status.into());
    node.audit_admin(ev).await?;
    Ok(versioned(after).into_response())
}

/// Suspend a tenant: its traffic gets 403 until resumed. Its data is kept.
#[utoipa::path(post, path = "/v1/tenants/{id}/suspend", security(("admin_token" = [])), responses((status = 200, body = Tenant), (status = 404, body = crate::error::ErrorResponse)))]
pub async fn suspend_tenant(State(node): State<Arc<Node>>, Path(id): Path<String>) -> Result<Response, ApiError> {
    set_status(&node, &id, "suspended", "tenant.suspend").await
}

/// Resume a suspended tenant.
#[utoipa::path(post, path = "/v1/tenants/{id}/resume", security(("admin_token" = [])), responses((status = 200, body = Tenant), (status = 404, body = crate::error::ErrorResponse)))]
pub async fn resume_tenant(State(node): State<Arc<Node>>, Path(id): Path<String>) -> Result<Response, ApiError> {
    set_status(&node, &id, "active", "tenant.resume").await
}

/// Delete a tenant and revoke its keys. (Its data files are kept for the retention
/// period; removing them is an operator action.)
#[utoipa::path(delete, path = "/v1/tenants/{id}", security(("admin_token" = [])), responses((status = 204), (status = 404, body = crate::error::ErrorResponse)))]
pub async fn delete_tenant(State(node): State<Arc<Node>>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let before = known_tenant(&node, &id)?;
    // Its jobs go first: no attempt starts for a tenant that is gone, and their slots
    // are free at once.
    let cancelled = match node.control.has_open_jobs().await? {
        true => node.control.cancel_tenant_jobs(&id, "the tenant was removed", &runplane_audit::rfc3339_utc(node.now())).await?,
        false => 0,
    };
    node.control.delete_tenant(&id).await?;
    node.keys.remove_tenant(&id);
    node.tenants.write().unwrap_or_else(|p| p.into_inner()).remove(&id);
    node.bindings.forget(&id).await;
    let mut ev = node.event("admin", Some(&id), "tenant.delete", &id, Outcome::ok(Some(204)));
    ev.details.insert("before".into(), serde_json::to_value(&before).unwrap_or_default());
    if cancelled > 0 {
        ev.details.insert("jobs_cancelled".into(), cancelled.into());
    }
    node.audit_admin(ev).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Serialize, ToSchema)]
pub struct KeyCreated {
    pub tenant: String,
    pub key_id: String,
    /// Shown once; only its hash is stored.
    pub api_key: String,
}

/// Issue another API key for a tenant.
#[utoipa::path(post, path = "/v1/tenants/{id}/keys", security(("admin_token" = [])), responses((status = 201, body = KeyCreated), (status = 404, body = crate::error::ErrorResponse)))]
pub async fn create_key(State(node): State<Arc<Node>>, Path(id): Path<String>) -> Result<Response, ApiError> {
    known_tenant(&node, &id)?;
    let (api_key, key_id) = issue_key(&node, &id).await?;
    let mut ev = node.event("admin", Some(&id), "tenant.key.create", &id, Outcome::ok(Some(201)));
    ev.details.insert("key_id".into(), key_id.clone().into());
    node.audit_admin(ev).await?;
    Ok((StatusCode::CREATED, versioned(KeyCreated { tenant: id, key_id, api_key })).into_response())
}

/// Delete one of a tenant's API keys: requests with it are refused from then on (on
/// every node of the instance, once it has followed the change).
#[utoipa::path(delete, path = "/v1/tenants/{id}/keys/{key_id}", security(("admin_token" = [])), responses((status = 204), (status = 404, body = crate::error::ErrorResponse)))]
pub async fn delete_key(State(node): State<Arc<Node>>, Path((id, key_id)): Path<(String, String)>) -> Result<Response, ApiError> {
    known_tenant(&node, &id)?;
    if !node.control.delete_key(&id, &key_id).await? {
        return Err(ApiError::not_found(format!("tenant {id} has no key {key_id}; list its keys in the audit log (tenant.key.create events)")));
    }
    node.keys.remove_key(&key_id);
    node.audit_admin(node.event("admin", Some(&id), "tenant.key.delete", &key_id, Outcome::ok(Some(204)))).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutSecret {
    /// The secret's value (UTF-8). Never returned by any endpoint.
    pub value: String,
}

#[derive(Serialize, ToSchema)]
pub struct SecretVersion {
    pub name: String,
    pub version: u64,
}

/// Store a new version of a tenant's secret.
#[utoipa::path(put, path = "/v1/tenants/{id}/secrets/{name}", request_body = PutSecret, security(("admin_token" = [])), responses((status = 200, body = SecretVersion), (status = 404, body = crate::error::ErrorResponse)))]
pub async fn put_secret(
    State(node): State<Arc<Node>>,
   
    Path((id, name)): Path<(String, String)>,
    JsonBody(req): JsonBody<PutSecret>,
) -> Result<Response, ApiError> {
    let tenant = known_tenant(&node, &id)?;
    // Checked here, as topics are, whatever the backend would accept.
    runplane_ports::validate_name("secret", &name, 128).map_err(|e| ApiError::bad_request("invalid_secret_name", e.to_string()))?;
    let ports = node.bindings.ports(&id, tenant.mode).await?;
    let version = ports.secrets.put(&tenant_id(&id)?, &name, SecretValue::new(req.value.into_bytes())).await?;
    let mut ev = node.event("admin", Some(&id), "secret.put", &format!("{id}/{name}"), Outcome::ok(Some(200)));
    ev.details.insert("version".into(), version.into());
    node.audit_admin(ev).await?;
    Ok(versioned(SecretVersion { name, version }).into_response())
}

#[derive(Serialize, ToSchema)]
pub struct SecretList {
    /// Names and versions only; values are never listed.
    pub items: Vec<SecretVersion>,
}

/// List a tenant's secrets (names and versions, never values).
#[utoipa::path(get, path = "/v1/tenants/{id}/secrets", security(("admin_token" = [])), responses((status = 200, body = SecretList)))]
pub async fn list_secrets(State(node): State<Arc<Node>>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let tenant = known_tenant(&node, &id)?;
    let ports = node.bindings.ports(&id, tenant.mode).await?;
    let items = ports.secrets.list(&tenant_id(&id)?).await?.into_iter().map(|s| SecretVersion { name: s.name, version: s.version }).collect();
    Ok(versioned(SecretList { items }).into_response())
}

#[derive(Deserialize, IntoParams)]
pub struct PushParams {
    /// Capability name: 1-64 characters of a-z, 0-9 and '-'.
    pub name: String,
    /// Version, e.g. `1.2.0`.
    pub version: String,
}

fn check_capability_name(name: &str, version: &str) -> Result<(), ApiError> {
    let name_ok = !name.is_empty() && name.len() <= 64 && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    let version_ok = !version.is_empty() && version.len() <= 64 && version.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-+".contains(&b));
    if !name_ok {
        return Err(ApiError::bad_request("invalid_name", format!("capability name {name:?} must be 1-64 characters of a-z, 0-9 and '-'")));
    }
    if !version_ok {
        return Err(ApiError::bad_request("invalid_version", format!("version {version:?} must be 1-64 characters of A-Z, a-z, 0-9, '.', '_', '-', '+'")));
    }
    Ok(())
}

/// Push a capability component (`application/wasm` body). Refused if it imports
/// anything outside Runplane's world. Pushing the same bytes again is a no-op.
#[utoipa::path(post, path = "/v1/capabilities", params(PushParams), request_body(content = Vec<u8>, content_type = "application/wasm"),
    security(("admin_token" = [])),
    responses((status = 201, body = CapabilityVersion), (status = 200, body = CapabilityVersion), (status = 400, body = crate::error::ErrorResponse), (status = 409, body = crate::error::ErrorResponse)))]
pub async fn push_capability(
    State(node): State<Arc<Node>>,
   
    Query(params): Query<PushParams>,
    body: Bytes,
) -> Result<Response, ApiError> {
    check_capability_name(&params.name, &params.version)?;
    let label = format!("{}@{}", params.name, params.version);
    let digest = runplane_cjson::sha256_hex(&body);
    if let Some(existing) = node.control.capability(&params.name, &params.version).await? {
        if existing.digest == digest {
            return Ok(versioned(existing).into_response());
        }
        return Err(ApiError::conflict(format!(
            "{label} exists with digest {}; versions are immutable, push under a new version",
            existing.digest
        )));
    }
    let info = match node.host.inspect(&label, &body) {
        Ok(info) => info,
        Err(e) => {
            let err = ApiError::from(e);
            let mut ev = node.event("admin", None, "capability.push", &label, Outcome::denied(&err.code, Some(err.status.as_u16())));
            ev.capability_digest = Some(digest);
            node.audit_admin(ev).await?;
            return Err(err);
        }
    };
    let created_at = runplane_audit::rfc3339_utc(node.now());
    node.control.store_component(&digest, &body, &created_at).await?;
    let cap = CapabilityVersion {
        name: params.name,
        version: params.version,
        digest: digest.clone(),
        size_bytes: body.len() as u64,
        exports: serde_json::to_value(info.exports).unwrap_or_default(),
        imports: info.imports,
        created_at,
    };
    if !node.control.insert_capability(&cap).await? {
        return Err(ApiError::conflict(format!("{label} was pushed concurrently; list capabilities to see it")));
    }
    let mut ev = node.event("admin", None, "capability.push", &label, Outcome::ok(Some(201)));
    ev.capability_digest = Some(digest);
    node.audit_admin(ev).await?;
    Ok((StatusCode::CREATED, versioned(cap)).into_response())
}

#[derive(Serialize, ToSchema)]
pub struct CapabilityList {
    pub items: Vec<CapabilityVersion>,
    pub next_cursor: Option<String>,
}

/// List pushed capability versions.
#[utoipa::path(get, path = "/v1/capabilities", params(PageParams), security(("admin_token" = [])), responses((status = 200, body = CapabilityList)))]
pub async fn list_capabilities(State(node): State<Arc<Node>>, Query(page): Query<PageParams>) -> Result<Response, ApiError> {
    let mut all = node.control.capabilities().await?;
    all.sort_by(|a, b| (&a.name, &a.version).cmp(&(&b.name, &b.version)));
    let (items, next_cursor) = paginate(all, |c| format!("{}@{}", c.name, c.version), &page)?;
    Ok(versioned(CapabilityList { items, next_cursor }).into_response())
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Deploy {
    pub capability: String,
    pub version: String,
    /// Defaults to the capability name.
    pub route: Option<String>,
    #[serde(default)]
    pub allow_hosts: Vec<String>,
    #[serde(default)]
    pub subscriptions: Vec<String>,
    /// A feature flag gating the route: tenants for whom it is off get 403.
    pub flag: Option<String>,
}

/// Deploy a capability version to a route (replacing what was there).
#[utoipa::path(post, path = "/v1/deployments", request_body = Deploy, security(("admin_token" = [])),
    responses((status = 201, body = Deployment), (status = 400, body = crate::error::ErrorResponse), (status = 404, body = crate::error::ErrorResponse)))]
pub async fn deploy(State(node): State<Arc<Node>>, JsonBody(req): JsonBody<Deploy>) -> Result<Response, ApiError> {
    check_capability_name(&req.capability, &req.version)?;
    let route = req.route.clone().unwrap_or_else(|| req.capability.clone());
    check_capability_name(&route, "x").map_err(|_| ApiError::bad_request("invalid_route", format!("route {route:?} must be 1-64 characters of a-z, 0-9 and '-'")))?;
    for h in &req.allow_hosts {
        if h.is_empty() || h.contains(['/', ' ', '@']) {
            return Err(ApiError::bad_request("invalid_allow_host", format!("allow_hosts entry {h:?} must be host, host:port or *.domain")));
        }
    }
    for t in &req.subscriptions {
        runplane_ports::validate_name("topic", t, 128).map_err(|e| ApiError::bad_request("invalid_topic", e.to_string()))?;
    }
    let cap = node.control.capability(&req.capability, &req.version).await?.ok_or_else(|| {
        ApiError::not_found(format!("{}@{} has not been pushed; push it with POST /v1/capabilities first", req.capability, req.version))
    })?;
    let env = node.config.environment.clone();
    if node.controlplane.environment(&env).is_some_and(|e| e.policies.require_promotion)
        && node.controlplane.release(&env, &cap.name, &cap.version).is_none()
    {
        return Err(ApiError::conflict(format!(
            "environment {env} requires promotion: {}@{} has not been promoted into it; promote it with POST /v1/environments/{env}/promote",
            cap.name, cap.version
        )));
    }
    if let Some(f) = &req.flag {
        runplane_policy::flags::validate_feature_id(f).map_err(|e| ApiError::bad_request("invalid_flag", e.to_string()))?;
    }
    if let Some(live) = node.live_rollout(&route) {
        return Err(ApiError::conflict(format!(
            "rollout {} of route {route} is in progress; promote or abort it (POST /v1/rollouts/{}/abort), or start a new rollout with POST /v1/rollouts, which supersedes it",
            live.rollout.rollout_id, live.rollout.rollout_id
        )));
    }
    let before = node.deployment(&route).map(|d| d.deployment.clone());
    let d = Deployment {
        flag: req.flag,
        route: route.clone(),
        capability: cap.name,
        version: cap.version,
        digest: cap.digest,
        allow_hosts: req.allow_hosts,
        subscriptions: req.subscriptions,
        created_at: runplane_audit::rfc3339_utc(node.now()),
    };
    node.activate(d.clone()).await?;
    if let Some(b) = &before {
        node.remember_previous(b, &d.created_at).await?;
    }
    node.control.upsert_deployment(&d).await?;
    if node.controlplane.release(&env, &d.capability, &d.version).is_none() {
        let release = crate::controlplane::Release {
            environment: env.clone(),
            capability: d.capability.clone(),
            version: d.version.clone(),
            digest: d.digest.clone(),
            promoted_from: None,
            at: d.created_at.clone(),
            actor: "deploy".into(),
        };
        node.controlplane.record_release(release, &d.created_at).await?;
    }
    let mut ev = node.event("admin", None, "deployment.create", &route, Outcome::ok(Some(201)));
    ev.capability_digest = Some(d.digest.clone());
    ev.details.insert("before".into(), serde_json::to_value(&before).unwrap_or_default());
    ev.details.insert("after".into(), serde_json::to_value(&d).unwrap_or_default());
    node.audit_admin(ev).await?;
    Ok((StatusCode::CREATED, versioned(d)).into_response())
}

#[derive(Serialize, ToSchema)]
pub struct DeploymentList {
    pub items: Vec<Deployment>,
    pub next_cursor: Option<String>,
}

/// List deployments.
#[utoipa::path(get, path = "/v1/deployments", params(PageParams), security(("admin_token" = [])), responses((status = 200, body = DeploymentList)))]
pub async fn list_deployments(State(node): State<Arc<Node>>, Query(page): Query<PageParams>) -> Result<Response, ApiError> {
    let (items, next_cursor) = paginate(node.control.deployments().await?, |d| d.route.clone(), &page)?;
    Ok(versioned(DeploymentList { items, next_cursor }).into_response())
}

/// Take a route out of service.
#[utoipa::path(delete, path = "/v1/deployments/{route}", security(("admin_token" = [])),
    responses((status = 204), (status = 404, body = crate::error::ErrorResponse), (status = 409, description = "a rollout of the route is in progress", body = crate::error::ErrorResponse)))]
pub async fn undeploy(State(node): State<Arc<Node>>, Path(route): Path<String>) -> Result<Response, ApiError> {
    if let Some(live) = node.live_rollout(&route) {
        return Err(ApiError::conflict(format!(
            "rollout {} of route {route} is in progress; abort it first (POST /v1/rollouts/{}/abort)",
            live.rollout.rollout_id, live.rollout.rollout_id
        )));
    }
    if !node.control.delete_deployment(&route).await? {
        return Err(ApiError::not_found(format!("nothing is deployed on route {route}")));
    }
    let before = node.deployment(&route).map(|d| d.deployment.clone());
    node.deactivate(&route).await;
    let mut ev = node.event("admin", None, "deployment.delete", &route, Outcome::ok(Some(204)));
    ev.details.insert("before".into(), serde_json::to_value(&before).unwrap_or_default());
    node.audit_admin(ev).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Serialize, ToSchema)]
pub struct AuditLogInfo {
    /// `admin` or `tenant:<id>`.
    pub log: String,
    pub size: u64,
    /// Why the log failed the node's start-up integrity check (it is then not
    /// extended, and its tenant's invocations answer 503); absent when intact.
    pub refused: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct AuditLogList {
    pub items: Vec<AuditLogInfo>,
}

/// List audit logs and their sizes.
#[utoipa::path(get, path = "/v1/audit/logs", security(("admin_token" = [])), responses((status = 200, body = AuditLogList)))]
pub async fn audit_logs(State(node): State<Arc<Node>>) -> Result<Response, ApiError> {
    let refused = node.audit.refused();
    let items = node
        .audit
        .logs()
        .await?
        .into_iter()
        .map(|(l, size)| AuditLogInfo { refused: refused.get(&l).cloned(), log: l.to_string(), size })
        .collect();
    Ok(versioned(AuditLogList { items }).into_response())
}

#[derive(Deserialize, IntoParams)]
pub struct EventsParams {
    /// `admin` or `tenant:<id>`.
    pub log: String,
    /// Cursor: the index to start from (default 0).
    pub cursor: Option<u64>,
    /// 1-1000, default 100.
    pub limit: Option<u32>,
}

#[derive(Serialize, ToSchema)]
pub struct AuditEventPage {
    #[schema(value_type = Vec<Object>)]
    pub items: Vec<runplane_audit::StoredEvent>,
    pub next_cursor: Option<u64>,
}

/// Read a log's events in order.
#[utoipa::path(get, path = "/v1/audit/events", params(EventsParams), security(("admin_token" = [])), responses((status = 200, body = AuditEventPage), (status = 400, body = crate::error::ErrorResponse)))]
pub async fn audit_events(State(node): State<Arc<Node>>, Query(p): Query<EventsParams>) -> Result<Response, ApiError> {
    let log = parse_log(&p.log)?;
    let limit = page_limit(p.limit)?;
    let from = p.cursor.unwrap_or(0);
    let items = node.audit.read(&log, from, limit).await?;
    let next_cursor = (items.len() as u32 == limit).then(|| from.checked_add(u64::from(limit))).flatten();
    Ok(versioned(AuditEventPage { items, next_cursor }).into_response())
}

fn parse_log(log: &str) -> Result<LogId, ApiError> {
    LogId::parse(log).ok_or_else(|| ApiError::bad_request("invalid_log", format!("log {log:?} must be 'admin' or 'tenant:<id>'")))
}

#[derive(Serialize, ToSchema)]
pub struct AuditKey {
    /// The note verifier key checkpoints are signed with: `<name>+<key id>+<base64 key>`.
    pub verifier_key: String,
    /// The key's name, `runplane/<instance id>`; a log's checkpoint origin is `<name>/<log>`.
    pub key_name: String,
}

/// The instance's public audit key (pin it to verify exports offline).
#[utoipa::path(get, path = "/v1/audit/key", security(("admin_token" = [])), responses((status = 200, body = AuditKey)))]
pub async fn audit_key(State(node): State<Arc<Node>>) -> Result<Response, ApiError> {
    let v = node.audit.verifier();
    Ok(versioned(AuditKey { verifier_key: v.key_string(), key_name: v.name().to_owned() }).into_response())
}

#[derive(Serialize, ToSchema)]
pub struct CheckpointInfo {
    pub log: String,
    pub size: u64,
    /// Lowercase hex RFC 9162 root.
    pub root: String,
    /// The C2SP signed note.
    pub note: String,
}

impl From<runplane_audit::SignedCheckpoint> for CheckpointInfo {
    fn from(c: runplane_audit::SignedCheckpoint) -> Self {
        CheckpointInfo { log: c.log.to_string(), size: c.size, root: c.root, note: c.note }
    }
}

/// The latest signed checkpoint of a log (signed now if the log grew since the last).
#[utoipa::path(get, path = "/v1/audit/logs/{log}/checkpoint", params(("log" = String, Path, description = "`admin` or `tenant:<id>`")), security(("admin_token" = [])), responses((status = 200, body = CheckpointInfo), (status = 404, body = crate::error::ErrorResponse)))]
pub async fn audit_checkpoint(State(node): State<Arc<Node>>, Path(log): Path<String>) -> Result<Response, ApiError> {
    let cp = node.audit.checkpoint(&parse_log(&log)?).await?;
    Ok(versioned(CheckpointInfo::from(cp)).into_response())
}

#[derive(Serialize, ToSchema)]
pub struct CheckpointList {
    pub items: Vec<CheckpointInfo>,
}

/// Every checkpoint signed for a log, oldest first.
#[utoipa::path(get, path = "/v1/audit/logs/{log}/checkpoints", params(("log" = String, Path, description = "`admin` or `tenant:<id>`")), security(("admin_token" = [])), responses((status = 200, body = CheckpointList)))]
pub async fn audit_checkpoints(State(node): State<Arc<Node>>, Path(log): Path<String>) -> Result<Response, ApiError> {
    let items = node.audit.checkpoints(&parse_log(&log)?).await?.into_iter().map(CheckpointInfo::from).collect();
    Ok(versioned(CheckpointList { items }).into_response())
}

#[derive(Deserialize, IntoParams)]
pub struct EntriesParams {
    /// Cursor: the index to start from (default 0).
    pub cursor: Option<u64>,
    /// 1-1000, default 100.
    pub limit: Option<u32>,
}

#[derive(Serialize, ToSchema)]
pub struct AuditEntry {
    pub index: u64,
    /// The event's canonical JSON, exactly the Merkle leaf's bytes.
    pub entry: String,
    /// Lowercase hex `SHA-256(0x00 ‖ entry)`.
    pub leaf_hash: String,
}

#[derive(Serialize, ToSchema)]
pub struct AuditEntryPage {
    pub items: Vec<AuditEntry>,
    pub next_cursor: Option<u64>,
}

/// A log's entries as stored (the exact leaf bytes), for export and verification.
#[utoipa::path(get, path = "/v1/audit/logs/{log}/entries", params(("log" = String, Path, description = "`admin` or `tenant:<id>`"), EntriesParams), security(("admin_token" = [])), responses((status = 200, body = AuditEntryPage)))]
pub async fn audit_entries(State(node): State<Arc<Node>>, Path(log): Path<String>, Query(p): Query<EntriesParams>) -> Result<Response, ApiError> {
    let log = parse_log(&log)?;
    let limit = page_limit(p.limit)?;
    let from = p.cursor.unwrap_or(0);
    let items: Vec<AuditEntry> =
        node.audit.read_raw(&log, from, limit).await?.into_iter().map(|(index, entry, leaf_hash)| AuditEntry { index, entry, leaf_hash }).collect();
    let next_cursor = (items.len() as u32 == limit).then(|| from.checked_add(u64::from(limit))).flatten();
    Ok(versioned(AuditEntryPage { items, next_cursor }).into_response())
}

#[derive(Deserialize, IntoParams)]
pub struct InclusionParams {
    pub index: u64,
    /// The tree size to prove against (default: the log's current size).
    pub size: Option<u64>,
}

#[derive(Serialize, ToSchema)]
pub struct InclusionProof {
    pub log: String,
    pub index: u64,
    pub size: u64,
    /// Lowercase hex leaf hash of the entry.
    pub leaf_hash: String,
    /// Lowercase hex root of the tree of `size` entries.
    pub root: String,
    /// RFC 9162 §2.1.3 audit path, lowercase hex, leaf to root.
    pub proof: Vec<String>,
}

/// An RFC 9162 inclusion proof of one entry.
#[utoipa::path(get, path = "/v1/audit/logs/{log}/proof/inclusion", params(("log" = String, Path, description = "`admin` or `tenant:<id>`"), InclusionParams), security(("admin_token" = [])), responses((status = 200, body = InclusionProof), (status = 400, body = crate::error::ErrorResponse)))]
pub async fn audit_inclusion(State(node): State<Arc<Node>>, Path(log): Path<String>, Query(p): Query<InclusionParams>) -> Result<Response, ApiError> {
    let log = parse_log(&log)?;
    let size = match p.size {
        Some(s) => s,
        None => node.audit.tree_head(&log).await?.0,
    };
    let proof = node.audit.inclusion_proof(&log, p.index, size).await?;
    let root = node.audit.root_at(&log, size).await?;
    let leaf_hash = node.audit.read_raw(&log, p.index, 1).await?.pop().map(|(_, _, l)| l).unwrap_or_default();
    Ok(versioned(InclusionProof { log: log.to_string(), index: p.index, size, leaf_hash, root: hex::encode(root), proof: proof.iter().map(hex::encode).collect() })
        .into_response())
}

#[derive(Deserialize, IntoParams)]
pub struct ConsistencyParams {
    /// The older size.
    pub first: u64,
    /// The newer size (default: the log's current size).
    pub second: Option<u64>,
}

#[derive(Serialize, ToSchema)]
pub struct ConsistencyProof {
    pub log: String,
    pub first: u64,
    pub second: u64,
    pub first_root: String,
    pub second_root: String,
    /// RFC 9162 §2.1.4 consistency proof, lowercase hex.
    pub proof: Vec<String>,
}

/// An RFC 9162 consistency proof between two sizes of a log.
#[utoipa::path(get, path = "/v1/audit/logs/{log}/proof/consistency", params(("log" = String, Path, description = "`admin` or `tenant:<id>`"), ConsistencyParams), security(("admin_token" = [])), responses((status = 200, body = ConsistencyProof), (status = 400, body = crate::error::ErrorResponse)))]
pub async fn audit_consistency(State(node): State<Arc<Node>>, Path(log): Path<String>, Query(p): Query<ConsistencyParams>) -> Result<Response, ApiError> {
    let log = parse_log(&log)?;
    let second = match p.second {
        Some(s) => s,
        None => node.audit.tree_head(&log).await?.0,
    };
    let proof = node.audit.consistency_proof(&log, p.first, second).await?;
    let (first_root, second_root) = (node.audit.root_at(&log, p.first).await?, node.audit.root_at(&log, second).await?);
    Ok(versioned(ConsistencyProof {
        log: log.to_string(),
        first: p.first,
        second,
        first_root: hex::encode(first_root),
        second_root: hex::encode(second_root),
        proof: proof.iter().map(hex::encode).collect(),
    })
    .into_response())
}

/// Re-execute a journaled invocation: same component digest, execution context and
/// request, every port call served from its journal. Reports "identical" (response
/// bytes and audit leaf) or the first port call that diverged. Audited.
#[utoipa::path(post, path = "/v1/replay/{invocation_id}", params(("invocation_id" = String, Path, description = "from the x-runplane-invocation-id response header or the audit event")), security(("admin_token" = [])), responses((status = 200, body = crate::replay::ReplayReport), (status = 404, body = crate::error::ErrorResponse)))]
pub async fn replay_invocation(State(node): State<Arc<Node>>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let result = crate::replay::replay(&node, &id).await;
    let outcome = match &result {
        Ok(r) if r.identical => Outcome::ok(Some(200)),
        Ok(_) => Outcome::error("non_deterministic", Some(200)),
        Err(e) => Outcome::error(&e.code, Some(e.status.as_u16())),
    };
    let tenant = result.as_ref().ok().and_then(|r| r.log.strip_prefix("tenant:").map(str::to_owned));
    let mut ev = node.event("admin", tenant.as_deref(), "invocation.replay", &id, outcome);
    if let Ok(r) = &result {
        ev.details.insert("report".into(), serde_json::to_value(r).unwrap_or_default());
    }
    node.audit_admin(ev).await?;
    Ok(versioned(result?).into_response())
}

/// Replay a whole log: recompute its root from the stored events and compare it with
/// the stored root. Audited.
#[utoipa::path(post, path = "/v1/audit/logs/{log}/replay", params(("log" = String, Path, description = "`admin` or `tenant:<id>`")), security(("admin_token" = [])), responses((status = 200, body = crate::replay::LogReplayReport)))]
pub async fn replay_log(State(node): State<Arc<Node>>, Path(log): Path<String>) -> Result<Response, ApiError> {
    let log = parse_log(&log)?;
    let report = crate::replay::replay_log(&node, &log).await?;
    let outcome = if report.identical { Outcome::ok(Some(200)) } else { Outcome::error("root_mismatch", Some(200)) };
    let mut ev = node.event("admin", None, "audit.replay", log.as_str(), outcome);
    ev.details.insert("report".into(), serde_json::to_value(&report).unwrap_or_default());
    node.audit_admin(ev).await?;
    Ok(versioned(report).into_response())
}
