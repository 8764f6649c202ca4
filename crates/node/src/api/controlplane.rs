//! The control plane on the admin API (spec §7): versioned config sets, feature flags,
//! domains and entitlements, environments and promotion, operator actions, the
//! key-encryption key, and the typed admin-event listing. Authorization and the one
//! `AdminEvent` per request are the gate's ([`crate::api::gate`]); handlers annotate
//! it with before and after.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use runplane_policy::domains::CapabilityDomain;
use runplane_policy::flags::FeatureFlag;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::api::admin::known_tenant;
use crate::api::gate::{AdminEvent, annotate};
use crate::api::params::{Path, Query, page_limit};
use crate::api::{JsonBody, versioned};
use crate::configsets::{Scope, validate_values};
use crate::control::ConfigVersionRow;
use crate::controlplane::{Environment, Release};
use crate::error::ApiError;
use crate::node::Node;
use crate::quotas::tier_of;

fn note_change<B: Serialize, A: Serialize>(before: &B, after: &A) {
    let (before, after) = (serde_json::to_value(before).unwrap_or_default(), serde_json::to_value(after).unwrap_or_default());
    annotate(|r| {
        r.details.insert("before".into(), before);
        r.details.insert("after".into(), after);
    });
}

fn now(node: &Node) -> String {
    runplane_audit::rfc3339_utc(node.now())
}

// ---------------------------------------------------------------- config (§7.1)

/// The configuration now: its version and every scope's current set.
#[derive(Serialize, ToSchema)]
pub struct ConfigView {
    /// `<revision>/<digest of the file's values>`, as recorded in audit events.
    pub version: String,
    pub revision: u64,
    /// The environment whose set this node applies.
    pub environment: String,
    pub sets: BTreeMap<String, BTreeMap<String, String>>,
}

/// Show the current configuration sets.
#[utoipa::path(get, path = "/v1/config", security(("admin_token" = [])), responses((status = 200, body = ConfigView)))]
pub async fn get_config(State(node): State<Arc<Node>>) -> Result<Response, ApiError> {
    let mut sets = BTreeMap::new();
    for row in node.control.config_versions().await? {
        sets.insert(row.scope.clone(), serde_json::from_str(&row.content).unwrap_or_default());
    }
    let snap = node.config_sets.snapshot();
    use runplane_ports::ConfigStore as _;
    Ok(versioned(ConfigView { version: snap.version(), revision: snap.revision(), environment: node.config.environment.clone(), sets }).into_response())
}

#[derive(Deserialize, IntoParams)]
pub struct VersionsParams {
    /// Only this scope's revisions.
    pub scope: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct ConfigVersions {
    pub items: Vec<ConfigVersionRow>,
}

/// The history of configuration revisions (every set ever stored, oldest first).
#[utoipa::path(get, path = "/v1/config/versions", params(VersionsParams), security(("admin_token" = [])), responses((status = 200, body = ConfigVersions)))]
pub async fn config_versions(State(node): State<Arc<Node>>, Query(p): Query<VersionsParams>) -> Result<Response, ApiError> {
    let items = node.control.config_versions().await?.into_iter().filter(|r| p.scope.as_ref().is_none_or(|s| *s == r.scope)).collect();
    Ok(versioned(ConfigVersions { items }).into_response())
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetConfig {
    /// The whole new set of the scope (keys not listed are gone from it).
    pub values: BTreeMap<String, String>,
    pub reason: Option<String>,
}

/// Store a new immutable set for a scope; invocations from the next one on see it.
#[utoipa::path(put, path = "/v1/config/sets/{scope}", request_body = SetConfig, security(("admin_token" = [])),
    params(("scope" = String, Path, description = "`environment:<env>`, `capability:<name>` or `tenant:<tenant>:<name>`")),
    responses((status = 200, body = ConfigVersionRow), (status = 400, body = crate::error::ErrorResponse),
        (status = 404, description = "the scope's tenant does not exist", body = crate::error::ErrorResponse)))]
pub async fn set_config(State(node): State<Arc<Node>>, Path(scope): Path<String>, JsonBody(req): JsonBody<SetConfig>) -> Result<Response, ApiError> {
    let scope = Scope::parse(&scope)?;
    if let Some(t) = scope.tenant() {
        known_tenant(&node, t)?;
    }
    validate_values(&req.values)?;
    let values = serde_json::to_value(&req.values).map_err(|e| ApiError::bad_request("invalid_config", e.to_string()))?;
    let content = runplane_cjson::to_string(&values).map_err(|e| ApiError::bad_request("invalid_config", e.to_string()))?;
    store_config(&node, scope, content, req.reason, None).await
}

async fn store_config(node: &Node, scope: Scope, content: String, reason: Option<String>, restored_from: Option<u64>) -> Result<Response, ApiError> {
    let history = node.control.config_versions().await?;
    let before = history.iter().rev().find(|r| r.scope == scope.to_string()).map(|r| r.content.clone());
    let mut row = ConfigVersionRow {
        version: 0,
        scope: scope.to_string(),
        content,
        created_at: now(node),
        actor: "admin".into(),
        reason: reason.clone(),
        restored_from,
    };
    row.version = node.control.insert_config_version(&row).await?;
    // Re-read rather than append to `history`: a concurrent change may have taken a
    // revision in between, and the snapshot must hold it too.
    node.config_sets.reload(&node.control.config_versions().await?)?;
    let parse = |c: &str| serde_json::from_str::<serde_json::Value>(c).unwrap_or_default();
    let (b, a) = (before.as_deref().map(parse), parse(&row.content));
    let version = row.version;
    annotate(|r| {
        r.targets.insert(0, scope.to_string());
        r.tenant = scope.tenant().map(str::to_owned).or(r.tenant.take());
        r.details.insert("before".into(), b.into());
        r.details.insert("after".into(), a);
        r.details.insert("config_version".into(), version.into());
        if let Some(from) = restored_from {
            r.details.insert("restored_from".into(), from.into());
        }
        if let Some(reason) = reason {
            r.details.insert("reason".into(), reason.into());
        }
    });
    Ok(versioned(row).into_response())
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RollbackConfig {
    /// The revision (of the same scope) whose content becomes current again.
    pub to_version: u64,
    pub reason: Option<String>,
}

/// Roll a scope back: a new revision with an older revision's content.
#[utoipa::path(post, path = "/v1/config/sets/{scope}/rollback", request_body = RollbackConfig, security(("admin_token" = [])),
    params(("scope" = String, Path, description = "the scope to roll back")),
    responses((status = 200, body = ConfigVersionRow), (status = 404, body = crate::error::ErrorResponse)))]
pub async fn rollback_config(State(node): State<Arc<Node>>, Path(scope): Path<String>, JsonBody(req): JsonBody<RollbackConfig>) -> Result<Response, ApiError> {
    let scope = Scope::parse(&scope)?;
    let old = node
        .control
        .config_versions()
        .await?
        .into_iter()
        .find(|r| r.version == req.to_version && r.scope == scope.to_string())
        .ok_or_else(|| ApiError::not_found(format!("scope {scope} has no revision {}; list them with GET /v1/config/versions?scope={scope}", req.to_version)))?;
    store_config(&node, scope, old.content, req.reason, Some(old.version)).await
}

// ---------------------------------------------------------------- flags (§7.3)

#[derive(Serialize, ToSchema)]
pub struct FlagList {
    pub items: Vec<FeatureFlag>,
}

/// Instance-wide feature flags.
#[utoipa::path(get, path = "/v1/flags", security(("admin_token" = [])), responses((status = 200, body = FlagList)))]
pub async fn list_flags(State(node): State<Arc<Node>>) -> Result<Response, ApiError> {
    Ok(versioned(FlagList { items: node.controlplane.list_flags(None) }).into_response())
}

/// One tenant's own flags (they override instance flags of the same id for it alone).
#[utoipa::path(get, path = "/v1/tenants/{id}/flags", security(("admin_token" = [])), responses((status = 200, body = FlagList)))]
pub async fn list_tenant_flags(State(node): State<Arc<Node>>, Path(id): Path<String>) -> Result<Response, ApiError> {
    known_tenant(&node, &id)?;
    Ok(versioned(FlagList { items: node.controlplane.list_flags(Some(&id)) }).into_response())
}

/// The body of a flag write: the flag without its id (the path names it).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutFlag {
    pub enabled: bool,
    /// Minimum tier: `free`, `pro`, `enterprise`.
    pub entitlement_tier: Option<String>,
    /// RFC 3339 UTC; the flag is off before it.
    pub activation_date: Option<String>,
    /// 0-100: the share of subjects (tenants) it is on for.
    pub rollout_percent: Option<u32>,
    #[serde(default)]
    #[schema(value_type = Vec<Object>)]
    pub variants: Vec<runplane_policy::flags::Variant>,
}

fn flag_of(node: &Node, feature: String, req: PutFlag) -> FeatureFlag {
    FeatureFlag {
        feature_id: feature,
        enabled: req.enabled,
        entitlement_tier: req.entitlement_tier,
        instance_id: node.controlplane.instance_id().to_owned(),
        activation_date: req.activation_date,
        rollout_percent: req.rollout_percent,
        variants: req.variants,
    }
}

/// Create, change or toggle an instance flag; effective on the next request.
#[utoipa::path(put, path = "/v1/flags/{feature}", request_body = PutFlag, security(("admin_token" = [])),
    responses((status = 200, body = FeatureFlag), (status = 400, description = "the flag is not valid (`invalid_flag`: variant names repeat, or the weights sum to 0)", body = crate::error::ErrorResponse)))]
pub async fn put_flag(State(node): State<Arc<Node>>, Path(feature): Path<String>, JsonBody(req): JsonBody<PutFlag>) -> Result<Response, ApiError> {
    let flag = flag_of(&node, feature, req);
    let before = node.controlplane.set_flag(None, flag.clone(), &now(&node)).await?;
    note_change(&before, &flag);
    Ok(versioned(flag).into_response())
}

/// Create, change or toggle a tenant's flag; effective on its next request, for it alone.
#[utoipa::path(put, path = "/v1/tenants/{id}/flags/{feature}", request_body = PutFlag, security(("admin_token" = [])),
    responses((status = 200, body = FeatureFlag), (status = 400, description = "the flag is not valid (`invalid_flag`: variant names repeat, or the weights sum to 0)", body = crate::error::ErrorResponse),
        (status = 404, body = crate::error::ErrorResponse)))]
pub async fn put_tenant_flag(State(node): State<Arc<Node>>, Path((id, feature)): Path<(String, String)>, JsonBody(req): JsonBody<PutFlag>) -> Result<Response, ApiError> {
    known_tenant(&node, &id)?;
    let flag = flag_of(&node, feature, req);
    let before = node.controlplane.set_flag(Some(&id), flag.clone(), &now(&node)).await?;
    note_change(&before, &flag);
    Ok(versioned(flag).into_response())
}

/// Delete an instance flag.
#[utoipa::path(delete, path = "/v1/flags/{feature}", security(("admin_token" = [])), responses((status = 204), (status = 404, body = crate::error::ErrorResponse)))]
pub async fn delete_flag(State(node): State<Arc<Node>>, Path(feature): Path<String>) -> Result<Response, ApiError> {
    let before = node.controlplane.delete_flag(None, &feature).await?.ok_or_else(|| ApiError::not_found(format!("no instance flag {feature}")))?;
    note_change(&Some(before), &None::<()>);
    Ok(axum::http::StatusCode::NO_CONTENT.into_response())
}

/// Delete a tenant's flag (the instance flag, if any, applies to it again).
#[utoipa::path(delete, path = "/v1/tenants/{id}/flags/{feature}", security(("admin_token" = [])), responses((status = 204), (status = 404, body = crate::error::ErrorResponse)))]
pub async fn delete_tenant_flag(State(node): State<Arc<Node>>, Path((id, feature)): Path<(String, String)>) -> Result<Response, ApiError> {
    known_tenant(&node, &id)?;
    let before = node
        .controlplane
        .delete_flag(Some(&id), &feature)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("tenant {id} has no flag {feature}")))?;
    note_change(&Some(before), &None::<()>);
    Ok(axum::http::StatusCode::NO_CONTENT.into_response())
}

// ---------------------------------------------------------------- domains (§7.3)

#[derive(Serialize, ToSchema)]
pub struct DomainList {
    #[schema(value_type = Vec<Object>)]
    pub items: Vec<CapabilityDomain>,
}

/// The domain registry.
#[utoipa::path(get, path = "/v1/domains", security(("admin_token" = [])), responses((status = 200, body = DomainList)))]
pub async fn list_domains(State(node): State<Arc<Node>>) -> Result<Response, ApiError> {
    Ok(versioned(DomainList { items: node.controlplane.list_domains() }).into_response())
}

/// Register or replace a domain (its dependencies must be registered).
#[utoipa::path(put, path = "/v1/domains/{domain}", request_body = CapabilityDomain, security(("admin_token" = [])),
    responses((status = 200, body = CapabilityDomain), (status = 400, description = "the body's domain_id differs from the path's, or a dependency is not registered or closes a cycle", body = crate::error::ErrorResponse)))]
pub async fn put_domain(State(node): State<Arc<Node>>, Path(domain): Path<String>, JsonBody(d): JsonBody<CapabilityDomain>) -> Result<Response, ApiError> {
    if d.domain_id != domain {
        return Err(ApiError::bad_request("invalid_domain", format!("the body's domain_id {:?} differs from the path's {domain:?}", d.domain_id)));
    }
    let before = node.controlplane.register_domain(d.clone(), &now(&node)).await?;
    note_change(&before, &d);
    Ok(versioned(d).into_response())
}

#[derive(Serialize, ToSchema)]
pub struct TenantDomains {
    pub tenant: String,
    pub tier: String,
    /// How many domains the tier allows (`null`: unlimited).
    pub limit: Option<usize>,
    pub active: Vec<String>,
}

fn tenant_domains(node: &Node, tenant: &crate::control::Tenant) -> TenantDomains {
    TenantDomains {
        tenant: tenant.id.clone(),
        tier: tenant.tier.clone(),
        limit: runplane_policy::domains::domain_limit(tier_of(tenant)),
        active: node.controlplane.active_domains(&tenant.id).into_iter().collect(),
    }
}

/// A tenant's active domains and its tier's limit.
#[utoipa::path(get, path = "/v1/tenants/{id}/domains", security(("admin_token" = [])), responses((status = 200, body = TenantDomains)))]
pub async fn list_tenant_domains(State(node): State<Arc<Node>>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let tenant = known_tenant(&node, &id)?;
    Ok(versioned(tenant_domains(&node, &tenant)).into_response())
}

/// Activate a domain for a tenant (tier limit and dependencies checked).
#[utoipa::path(post, path = "/v1/tenants/{id}/domains/{domain}", security(("admin_token" = [])),
    responses((status = 200, body = TenantDomains), (status = 403, body = crate::error::ErrorResponse), (status = 409, body = crate::error::ErrorResponse)))]
pub async fn activate_domain(State(node): State<Arc<Node>>, Path((id, domain)): Path<(String, String)>) -> Result<Response, ApiError> {
    let tenant = known_tenant(&node, &id)?;
    let before = node.controlplane.activate_domain(&id, tier_of(&tenant), &domain, &now(&node)).await?;
    let after = tenant_domains(&node, &tenant);
    note_change(&before, &after.active);
    Ok(versioned(after).into_response())
}

/// Deactivate a domain for a tenant; its capabilities answer 403 from the next request.
#[utoipa::path(delete, path = "/v1/tenants/{id}/domains/{domain}", security(("admin_token" = [])),
    responses((status = 200, body = TenantDomains), (status = 409, body = crate::error::ErrorResponse)))]
pub async fn deactivate_domain(State(node): State<Arc<Node>>, Path((id, domain)): Path<(String, String)>) -> Result<Response, ApiError> {
    let tenant = known_tenant(&node, &id)?;
    let before = node.controlplane.deactivate_domain(&id, &domain).await?;
    let after = tenant_domains(&node, &tenant);
    note_change(&before, &after.active);
    Ok(versioned(after).into_response())
}

// ---------------------------------------------------------------- environments (§7.6)

#[derive(Serialize, ToSchema)]
pub struct EnvironmentList {
    /// The environment this node serves.
    pub serving: String,
    pub items: Vec<EnvironmentView>,
}

#[derive(Serialize, ToSchema)]
pub struct EnvironmentView {
    #[serde(flatten)]
    pub environment: Environment,
    pub releases: Vec<Release>,
}

/// The environment registry, with each environment's releases.
#[utoipa::path(get, path = "/v1/environments", security(("admin_token" = [])), responses((status = 200, body = EnvironmentList)))]
pub async fn list_environments(State(node): State<Arc<Node>>) -> Result<Response, ApiError> {
    let items = node
        .controlplane
        .list_environments()
        .into_iter()
        .map(|e| EnvironmentView { releases: node.controlplane.releases(&e.name), environment: e })
        .collect();
    Ok(versioned(EnvironmentList { serving: node.config.environment.clone(), items }).into_response())
}

fn check_env_name(name: &str) -> Result<(), ApiError> {
    if name.is_empty() || name.len() > 64 || !name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') {
        return Err(ApiError::bad_request("invalid_environment", format!("environment name {name:?} must be 1-64 characters of a-z, 0-9 and '-'")));
    }
    Ok(())
}

/// Create or change an environment: bindings, region labels, policies.
#[utoipa::path(put, path = "/v1/environments/{name}", request_body = Environment, security(("admin_token" = [])), responses((status = 200, body = Environment), (status = 400, body = crate::error::ErrorResponse)))]
pub async fn put_environment(State(node): State<Arc<Node>>, Path(name): Path<String>, JsonBody(env): JsonBody<Environment>) -> Result<Response, ApiError> {
    check_env_name(&name)?;
    if env.name != name {
        return Err(ApiError::bad_request("invalid_environment", format!("the body's name {:?} differs from the path's {name:?}", env.name)));
    }
    for (port, backend) in &env.bindings {
        if !crate::config::Port::ALL.iter().any(|p| p.key() == port) {
            return Err(ApiError::bad_request("invalid_environment", format!("{port:?} is not a port; ports are records, kv, events, secrets, messaging, blobs")));
        }
        if !node.config.backends.contains_key(backend) {
            return Err(ApiError::bad_request("invalid_environment", format!("backend {backend:?} (for {port}) is not configured on this node")));
        }
    }
    if let Some(from) = &env.promotes_from {
        check_env_name(from)?;
    }
    let before = node.controlplane.set_environment(env.clone(), &now(&node)).await?;
    note_change(&before, &env);
    Ok(versioned(env).into_response())
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Promote {
    pub capability: String,
    pub version: String,
    /// The environment it is promoted from; default: the target's `promotes_from`.
    pub from: Option<String>,
    pub reason: Option<String>,
}

/// Promote a capability version into an environment. It must be released in the
/// environment it comes from (deployed there, or promoted into it); the first
/// environment of a chain (no `promotes_from`) takes any pushed version.
#[utoipa::path(post, path = "/v1/environments/{name}/promote", request_body = Promote, security(("admin_token" = [])),
    responses((status = 200, body = Release), (status = 404, body = crate::error::ErrorResponse), (status = 409, body = crate::error::ErrorResponse)))]
pub async fn promote(State(node): State<Arc<Node>>, Path(name): Path<String>, JsonBody(req): JsonBody<Promote>) -> Result<Response, ApiError> {
    let target = node
        .controlplane
        .environment(&name)
        .ok_or_else(|| ApiError::not_found(format!("environment {name} is not registered; create it with PUT /v1/environments/{name}")))?;
    // The first environment of a chain (no `promotes_from`) takes pushed versions
    // directly; every later one only what its predecessor has.
    let (digest, promoted_from) = match req.from.or(target.promotes_from.clone()) {
        Some(from) => {
            if from == name {
                return Err(ApiError::bad_request("no_source", "an environment cannot be promoted from itself"));
            }
            let source = node.controlplane.release(&from, &req.capability, &req.version).ok_or_else(|| {
                ApiError::conflict(format!("{}@{} is not released in {from}; deploy or promote it there first", req.capability, req.version))
            })?;
            (source.digest, Some(from))
        }
        None => {
            let cap = node.control.capability(&req.capability, &req.version).await?.ok_or_else(|| {
                ApiError::not_found(format!("{}@{} has not been pushed; push it with POST /v1/capabilities first", req.capability, req.version))
            })?;
            (cap.digest, None)
        }
    };
    let before = node.controlplane.release(&name, &req.capability, &req.version);
    let release = Release {
        environment: name.clone(),
        capability: req.capability,
        version: req.version,
        digest,
        promoted_from,
        at: now(&node),
        actor: "admin".into(),
    };
    node.controlplane.record_release(release.clone(), &now(&node)).await?;
    note_change(&before, &release);
    annotate(|r| {
        r.targets.insert(0, format!("{}/{}@{}", release.environment, release.capability, release.version));
        if let Some(reason) = req.reason {
            r.details.insert("reason".into(), reason.into());
        }
    });
    Ok(versioned(release).into_response())
}

// ---------------------------------------------------------------- operator actions (§7.5)

#[derive(Serialize, ToSchema)]
pub struct PauseState {
    pub route: String,
    pub paused: bool,
}

async fn set_paused(node: &Node, route: String, paused: bool) -> Result<Response, ApiError> {
    if node.deployment(&route).is_none() {
        return Err(ApiError::not_found(format!("no capability is deployed on route {route}")));
    }
    let before = node.controlplane.set_paused(&route, paused, &now(node)).await?;
    note_change(&PauseState { route: route.clone(), paused: before }, &PauseState { route: route.clone(), paused });
    Ok(versioned(PauseState { route, paused }).into_response())
}

/// Pause a deployment: new requests answer 503 until it is resumed.
#[utoipa::path(post, path = "/v1/deployments/{route}/pause", security(("admin_token" = [])), responses((status = 200, body = PauseState), (status = 404, body = crate::error::ErrorResponse)))]
pub async fn pause_deployment(State(node): State<Arc<Node>>, Path(route): Path<String>) -> Result<Response, ApiError> {
    set_paused(&node, route, true).await
}

/// Resume a paused deployment.
#[utoipa::path(post, path = "/v1/deployments/{route}/resume", security(("admin_token" = [])), responses((status = 200, body = PauseState), (status = 404, body = crate::error::ErrorResponse)))]
pub async fn resume_deployment(State(node): State<Arc<Node>>, Path(route): Path<String>) -> Result<Response, ApiError> {
    set_paused(&node, route, false).await
}

#[derive(Deserialize, IntoParams)]
pub struct DrainParams {
    /// How long to wait for running invocations, in seconds (default 30, at most 300).
    pub timeout_secs: Option<u64>,
}

/// The longest a drain waits.
pub const MAX_DRAIN_SECS: u64 = 300;

#[derive(Serialize, ToSchema)]
pub struct DrainResult {
    pub tenant: String,
    /// The tenant is suspended: nothing new is admitted.
    pub status: String,
    pub running: u32,
    pub queued: usize,
    /// Whether everything finished within the timeout.
    pub drained: bool,
}

/// Drain a tenant: suspend it (nothing new is admitted) and wait for its running and
/// queued invocations to finish. Resume it with `POST /v1/tenants/{id}/resume`.
#[utoipa::path(post, path = "/v1/tenants/{id}/drain", params(DrainParams), security(("admin_token" = [])), responses((status = 200, body = DrainResult), (status = 404, body = crate::error::ErrorResponse)))]
pub async fn drain_tenant(State(node): State<Arc<Node>>, Path(id): Path<String>, Query(p): Query<DrainParams>) -> Result<Response, ApiError> {
    let before = known_tenant(&node, &id)?;
    let timeout = match p.timeout_secs {
        None => 30,
        Some(t) if t <= MAX_DRAIN_SECS => t,
        Some(t) => {
            return Err(ApiError::bad_request(
                "invalid_timeout",
                format!("timeout_secs {t} is longer than a drain waits ({MAX_DRAIN_SECS} s); drain again if invocations are still running"),
            ));
        }
    };
    node.control.set_tenant_status(&id, "suspended").await?;
    if let Some(t) = node.tenants.write().unwrap_or_else(|p| p.into_inner()).get_mut(&id) {
        t.status = "suspended".into();
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(timeout);
    let drained = loop {
        if node.scheduler.running_in(&id) == 0 && node.scheduler.queued_in(&id) == 0 {
            break true;
        }
        if tokio::time::Instant::now() >= deadline {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let result = DrainResult { tenant: id.clone(), status: "suspended".into(), running: node.scheduler.running_in(&id), queued: node.scheduler.queued_in(&id), drained };
    note_change(&before.status, &"suspended");
    annotate(|r| {
        r.details.insert("drained".into(), drained.into());
    });
    Ok(versioned(result).into_response())
}

// ---------------------------------------------------------------- secrets: KEK (§7.2)

#[derive(Serialize, ToSchema)]
pub struct KekRotated {
    /// Key ids before and after (never key material).
    pub before: Vec<String>,
    pub after: Vec<String>,
    pub current: String,
}

/// Rotate the key-encryption key: a new key becomes current; versions wrapped under an
/// older one stay readable and are re-wrapped when next read.
#[utoipa::path(post, path = "/v1/secrets/kek/rotate", security(("admin_token" = [])), responses((status = 200, body = KekRotated), (status = 409, body = crate::error::ErrorResponse)))]
pub async fn rotate_kek(State(node): State<Arc<Node>>) -> Result<Response, ApiError> {
    let (before, after) = node.rotate_kek()?;
    note_change(&before, &after);
    let current = after.last().cloned().unwrap_or_default();
    Ok(versioned(KekRotated { before, after, current }).into_response())
}

// ---------------------------------------------------------------- admin events (§7.5)

#[derive(Deserialize, IntoParams)]
pub struct AdminEventsParams {
    /// The admin-log index to start at (default 0).
    pub cursor: Option<u64>,
    /// 1-1000, default 100.
    pub limit: Option<u32>,
}

#[derive(Serialize, ToSchema)]
pub struct AdminEventPage {
    pub items: Vec<AdminEvent>,
    pub next_cursor: Option<u64>,
}

/// The admin log as `AdminEvent`s (actor, reason, targets, before/after, result).
#[utoipa::path(get, path = "/v1/admin-events", params(AdminEventsParams), security(("admin_token" = [])), responses((status = 200, body = AdminEventPage)))]
pub async fn admin_events(State(node): State<Arc<Node>>, Query(p): Query<AdminEventsParams>) -> Result<Response, ApiError> {
    let limit = page_limit(p.limit)?;
    let from = p.cursor.unwrap_or(0);
    let stored = node.audit.read(&runplane_audit::LogId::admin(), from, limit).await?;
    let items: Vec<AdminEvent> = stored
        .iter()
        .filter_map(|s| serde_json::from_value::<runplane_audit::AuditEvent>(s.event.clone()).ok().map(|e| AdminEvent::from_audit(s.index, &e)))
        .collect();
    let next_cursor = (items.len() as u32 == limit).then(|| from.checked_add(u64::from(limit))).flatten();
    Ok(versioned(AdminEventPage { items, next_cursor }).into_response())
}
