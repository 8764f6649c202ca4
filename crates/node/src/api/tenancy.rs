//! Tenancy on the admin API: quotas (`/v1/tenants/{id}/quota`), scheduler plans
//! (`/v1/scheduler/plan`) and runtime contracts (`/v1/contracts`, executed with a
//! tenant key at `/v1/contracts/{id}/execute`).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use runplane_audit::{LogId, Outcome};
use runplane_host::{Invocation, InvokeError, Journal, Limits};
use runplane_ports::TenantId;
use runplane_tenancy::contract::{ContractError, KNOWN_PORTS};
use runplane_tenancy::{ExecutionQuota, RuntimeContract, Schedule, TenantTasks, ValidatedContract, schedule_hash};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::api::admin::known_tenant;
use crate::api::apps::{admit, new_context, quota_error, serving_tenant, tenant_ports};
use crate::api::params::Path;
use crate::api::{JsonBody, versioned};
use crate::error::{ApiError, invoke_error};
use crate::node::Node;
use crate::quotas::tier_of;

/// A tenant's quota and what it has used.
#[derive(Serialize, ToSchema)]
pub struct QuotaView {
    pub tenant: String,
    pub tier: String,
    /// `tenant` when set for this tenant, `tier` when its tier's defaults apply.
    pub source: String,
    pub quota: ExecutionQuota,
    pub usage: QuotaUsage,
}

#[derive(Serialize, ToSchema)]
pub struct QuotaUsage {
    /// CPU used in the current window, in seconds (fuel / 10⁹).
    pub cpu_seconds: f64,
    pub network_bytes: u64,
    pub disk_bytes: i64,
    pub running: u32,
    pub queued: usize,
    /// Seconds until the window's budgets refill.
    pub window_resets_in_seconds: u64,
}

fn quota_view(node: &Node, tenant: &crate::control::Tenant) -> QuotaView {
    let tier = tier_of(tenant);
    let now = node.now_secs();
    let quota = node.quotas.tenant(&tenant.id, tier, now).quota();
    let (cpu_fuel, network_bytes, disk_bytes) = node.quotas.usage(&tenant.id, tier, now);
    QuotaView {
        tenant: tenant.id.clone(),
        tier: tenant.tier.clone(),
        source: if node.quotas.is_custom(&tenant.id, tier, now) { "tenant" } else { "tier" }.into(),
        quota,
        usage: QuotaUsage {
            cpu_seconds: cpu_fuel as f64 / runplane_tenancy::quota::FUEL_PER_CPU_SECOND as f64,
            network_bytes,
            disk_bytes,
            running: node.scheduler.running_in(&tenant.id),
            queued: node.scheduler.queued_in(&tenant.id),
            window_resets_in_seconds: node.quotas.window_left(&tenant.id, tier, now),
        },
    }
}

/// Show a tenant's quota and usage.
#[utoipa::path(get, path = "/v1/tenants/{id}/quota", security(("admin_token" = [])),
    responses((status = 200, body = QuotaView), (status = 404, body = crate::error::ErrorResponse)))]
pub async fn get_quota(State(node): State<Arc<Node>>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let tenant = known_tenant(&node, &id)?;
    Ok(versioned(quota_view(&node, &tenant)).into_response())
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetQuota {
    pub quota: ExecutionQuota,
    /// Why (recorded in the audit event).
    pub reason: Option<String>,
}

/// Set a tenant's quota; it applies from the next invocation. Audited with before/after.
#[utoipa::path(put, path = "/v1/tenants/{id}/quota", request_body = SetQuota, security(("admin_token" = [])),
    responses((status = 200, body = QuotaView), (status = 400, body = crate::error::ErrorResponse), (status = 404, body = crate::error::ErrorResponse)))]
pub async fn set_quota(State(node): State<Arc<Node>>, Path(id): Path<String>, JsonBody(req): JsonBody<SetQuota>) -> Result<Response, ApiError> {
    let tenant = known_tenant(&node, &id)?;
    req.quota.validate().map_err(|e| ApiError::bad_request("invalid_quota", e.to_string()))?;
    let tier = tier_of(&tenant);
    let now = node.now_secs();
    let before = node.quotas.tenant(&id, tier, now).quota();
    node.quotas.set(&id, tier, req.quota, now, &runplane_audit::rfc3339_utc(node.now())).await?;
    let mut ev = node.event("admin", Some(&id), "tenant.quota.set", &id, Outcome::ok(Some(200)));
    ev.details.insert("before".into(), serde_json::to_value(before).unwrap_or_default());
    ev.details.insert("after".into(), serde_json::to_value(req.quota).unwrap_or_default());
    if let Some(r) = req.reason {
        ev.details.insert("reason".into(), r.into());
    }
    node.audit_admin(ev).await?;
    Ok(versioned(quota_view(&node, &tenant)).into_response())
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlanRequest {
    #[schema(value_type = Vec<Object>)]
    pub sets: Vec<TenantTasks>,
}

#[derive(Serialize, ToSchema)]
pub struct Plan {
    #[schema(value_type = Object)]
    pub schedule: Schedule,
    /// SHA-256 of the canonical JSON of `schedule`.
    pub schedule_hash: String,
}

/// Plan a task set with this node's scheduler (deterministic: the same set gives the same
/// schedule and hash on every node with the same capacity).
#[utoipa::path(post, path = "/v1/scheduler/plan", request_body = PlanRequest, security(("admin_token" = [])),
    responses((status = 200, body = Plan), (status = 400, body = crate::error::ErrorResponse)))]
pub async fn plan(State(node): State<Arc<Node>>, JsonBody(req): JsonBody<PlanRequest>) -> Result<Response, ApiError> {
    let tasks: usize = req.sets.iter().map(|s| s.tasks.len()).sum();
    if tasks > 100_000 {
        return Err(ApiError::bad_request("plan_too_large", format!("{tasks} tasks; plan at most 100000 at once")));
    }
    let bad = |e: runplane_tenancy::Error| ApiError::bad_request("invalid_task_set", e.to_string());
    let schedule = node.scheduler.schedule_all(&req.sets).map_err(bad)?;
    let schedule_hash = schedule_hash(&schedule).map_err(bad)?;
    Ok(versioned(Plan { schedule, schedule_hash }).into_response())
}

/// A registered contract, bound to the task export on a route.
#[derive(Serialize, ToSchema)]
pub struct ContractView {
    pub contract_id: String,
    pub route: String,
    pub contract: RuntimeContract,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterContract {
    /// The deployment whose `runplane:ports/task` export runs under the contract.
    pub route: String,
    pub contract: RuntimeContract,
}

fn contract_error(e: ContractError) -> ApiError {
    match e {
        ContractError::Forged { .. } => ApiError::new(StatusCode::CONFLICT, "contract_forged", e.to_string()),
        ContractError::Input(_) => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "contract_input_invalid", e.to_string()),
        ContractError::Output(_) => ApiError::new(StatusCode::BAD_GATEWAY, "contract_output_invalid", e.to_string()),
        ContractError::Invalid(_) => ApiError::bad_request("invalid_contract", e.to_string()),
    }
}

/// The port a WIT import is, in a contract's vocabulary (`None`: a WASI basic every
/// component may use).
fn port_of(import: &str) -> Option<&'static str> {
    let iface = import.split('@').next().unwrap_or(import);
    let port = match iface {
        "runplane:ports/records" => "records",
        "runplane:ports/events" => "events",
        "runplane:ports/messaging" => "messaging",
        "runplane:ports/blobs" => "blobs",
        "runplane:ports/secrets" => "secrets",
        "runplane:ports/telemetry" | "wasi:logging/logging" => "telemetry",
        "wasi:config/store" => "config",
        "wasi:http/outgoing-handler" => "http",
        i if i.starts_with("wasi:keyvalue/") => "kv",
        _ => return None,
    };
    debug_assert!(KNOWN_PORTS.contains(&port));
    Some(port)
}

/// Checks that the component deployed on `route` exports a task and uses no port the
/// contract does not grant.
async fn check_requirements(node: &Node, route: &str, contract: &RuntimeContract) -> Result<(), ApiError> {
    let deployment = node
        .deployment(route)
        .ok_or_else(|| ApiError::not_found(format!("no capability is deployed on route {route}; deploy its task capability first")))?;
    if !deployment.capability.exports.task {
        return Err(ApiError::bad_request(
            "no_task_export",
            format!("{} on route {route} does not export runplane:ports/task, which contracts bind", deployment.capability.name),
        ));
    }
    let version = node
        .control
        .capability(&deployment.deployment.capability, &deployment.deployment.version)
        .await?
        .ok_or_else(|| ApiError::unavailable(format!("capability {} is deployed but not recorded", deployment.capability.name)))?;
    let mut missing: Vec<&str> = version.imports.iter().filter_map(|i| port_of(i)).filter(|p| !contract.capability_requirements.iter().any(|r| r == p)).collect();
    missing.sort_unstable();
    missing.dedup();
    if !missing.is_empty() {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "contract_requirements",
            format!(
                "{} imports the ports {} that the contract's capability_requirements do not grant; add them to the contract or deploy a component that does not use them",
                deployment.capability.name,
                missing.join(", ")
            ),
        ));
    }
    Ok(())
}

/// Register a runtime contract for the task export on a route. Its id is the hash of its
/// canonical content; a stated id that does not match is refused as a forgery.
#[utoipa::path(post, path = "/v1/contracts", request_body = RegisterContract, security(("admin_token" = [])),
    responses((status = 201, description = "registered", body = ContractView), (status = 200, description = "already registered (the same content)", body = ContractView),
        (status = 400, description = "the contract is not valid (`invalid_contract`: a schema does not compile, …) or the route's component exports no task (`no_task_export`)", body = crate::error::ErrorResponse),
        (status = 403, description = "the component imports ports the contract does not grant (`contract_requirements`)", body = crate::error::ErrorResponse),
        (status = 404, description = "nothing is deployed on the route", body = crate::error::ErrorResponse),
        (status = 409, description = "the stated contract_id is not the content's (`contract_forged`)", body = crate::error::ErrorResponse)))]
pub async fn register_contract(State(node): State<Arc<Node>>, JsonBody(req): JsonBody<RegisterContract>) -> Result<Response, ApiError> {
    let validated = req.contract.validate().map_err(contract_error)?;
    check_requirements(&node, &req.route, &validated.contract).await?;
    let json = runplane_cjson::from_serialize(&validated.contract).map_err(|e| ApiError::bad_request("invalid_contract", e.to_string()))?;
    let created = node.control.insert_contract(&validated.id, &req.route, &json, &runplane_audit::rfc3339_utc(node.now())).await?;
    let mut ev = node.event("admin", None, "contract.register", &validated.id, Outcome::ok(Some(if created { 201 } else { 200 })));
    ev.details.insert("route".into(), req.route.clone().into());
    node.audit_admin(ev).await?;
    let view = ContractView { contract_id: validated.id.clone(), route: req.route.clone(), contract: validated.contract.clone() };
    node.contracts.write().unwrap_or_else(|p| p.into_inner()).insert(validated.id.clone(), (req.route, Arc::new(validated)));
    Ok((if created { StatusCode::CREATED } else { StatusCode::OK }, versioned(view)).into_response())
}

/// Show a registered contract.
#[utoipa::path(get, path = "/v1/contracts/{id}", security(("admin_token" = [])),
    responses((status = 200, body = ContractView), (status = 404, body = crate::error::ErrorResponse)))]
pub async fn get_contract(State(node): State<Arc<Node>>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let (route, c) = node.contract(&id)?;
    Ok(versioned(ContractView { contract_id: c.id.clone(), route, contract: c.contract.clone() }).into_response())
}

#[derive(Serialize, ToSchema)]
pub struct ContractResult {
    pub contract_id: String,
    pub invocation_id: String,
    #[schema(value_type = Object)]
    pub output: serde_json::Value,
}

/// Execute a contract's task with a tenant key: the contract is checked, the input
/// validated before and the output after running, under the contract's limits.
#[utoipa::path(post, path = "/v1/contracts/{id}/execute", security(("tenant_key" = [])), request_body = Object,
    responses((status = 200, body = ContractResult),
        (status = 403, description = "the tenant may not run it now (suspended, not entitled, its flag is off) or the component uses ports the contract does not grant", body = crate::error::ErrorResponse),
        (status = 404, description = "the contract is not registered, or nothing is deployed on its route", body = crate::error::ErrorResponse),
        (status = 409, description = "the contract no longer matches its id (`contract_forged`)", body = crate::error::ErrorResponse),
        (status = 421, description = "the tenant is pinned to another region (`wrong_region`; `details.region` names it)", body = crate::error::ErrorResponse),
        (status = 413, description = "the execution ran into the tenant's memory quota", body = crate::error::ErrorResponse),
        (status = 422, description = "the input does not match the contract's input_schema (`contract_input_invalid`), the task refused it (`task_failed`), or the execution ran out of fuel or memory", body = crate::error::ErrorResponse),
        (status = 429, description = "the tenant's CPU quota or its queue is full; retry after Retry-After", body = crate::error::ErrorResponse),
        (status = 502, description = "the output does not match the contract (`contract_output_invalid`) or the task trapped", body = crate::error::ErrorResponse),
        (status = 503, description = "the route is paused, the host is busy, or the tenant's log cannot be written", body = crate::error::ErrorResponse),
        (status = 504, description = "the execution passed the contract's deadline", body = crate::error::ErrorResponse),
        (status = 507, description = "the tenant's disk quota is full", body = crate::error::ErrorResponse)))]
pub async fn execute_contract(State(node): State<Arc<Node>>, headers: HeaderMap, Path(id): Path<String>, JsonBody(input): JsonBody<serde_json::Value>) -> Result<Response, ApiError> {
    let (route, contract) = node.contract(&id)?;
    let (owner, tenant) = serving_tenant(&node, &headers, "contract.execute", Some(&route))?;
    // Before running: the contract is still what its id says, its requirements hold
    // for what is deployed now, and the input matches.
    let recomputed = contract.contract.computed_id().map_err(contract_error)?;
    if recomputed != contract.id {
        return Err(contract_error(ContractError::Forged { stated: contract.id.clone(), computed: recomputed }));
    }
    check_requirements(&node, &route, &contract.contract).await?;
    contract.check_input(&input).map_err(contract_error)?;
    let deployment = node.deployment(&route).ok_or_else(|| ApiError::not_found(format!("no capability is deployed on route {route}")))?;
    crate::api::apps::check_request(&node, &tenant, &route, &deployment.deployment)?;
    node.audit.writable(&LogId::tenant(&tenant.id))?;

    let (admitted, _pass) = admit(&node, &tenant).await?;
    let tenant_id = TenantId::new(&tenant.id)?;
    let cap = &deployment.capability;
    let mut context = new_context(&node, &tenant_id, &owner.key_id, None, node.entropy.uuid().simple().to_string(), &cap.name, &cap.digest);
    context.execution_seed = contract.contract.execution_seed;
    let context = Arc::new(context);
    let ports = tenant_ports(&node, &tenant).await?;
    let config_version = ports.config.version();
    let l = contract.contract.resource_limits;
    let limits = Limits {
        memory_bytes: admitted.limits.memory_bytes.map(|m| m.min(usize::try_from(l.max_memory_mb << 20).unwrap_or(usize::MAX))),
        fuel: admitted.limits.fuel.map(|f| f.min(l.max_fuel)),
        ..admitted.limits.clone()
    };
    let input_text = runplane_cjson::to_string(&input).map_err(|e| ApiError::bad_request("invalid_json", e.to_string()))?;
    let run = node.host.run_task(cap, Invocation { context: context.clone(), ports, allow: deployment.allow.clone(), journal: Journal::record(), limits }, input_text.clone());
    let (outcome, report) = match tokio::time::timeout(Duration::from_millis(l.deadline_ms), run).await {
        Ok(r) => r,
        Err(_) => (Err(InvokeError::Deadline { deadline_ms: l.deadline_ms }), Default::default()),
    };
    admitted.settle(report.fuel_consumed);

    // After running: the output is JSON, within its size limit, and matches its schema.
    let result: Result<serde_json::Value, ApiError> = match outcome {
        Err(e) => Err(quota_error(&node, &tenant, invoke_error(&e), &e)),
        Ok(Err(task_error)) => Err(ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "task_failed", format!("the task refused the input: {task_error}"))),
        Ok(Ok(text)) if text.len() as u64 > l.max_output_bytes => Err(contract_error(ContractError::Output(format!(
            "it is {} bytes; the contract allows {}",
            text.len(),
            l.max_output_bytes
        )))),
        Ok(Ok(text)) => match serde_json::from_str::<serde_json::Value>(&text) {
            Err(e) => Err(contract_error(ContractError::Output(format!("it is not JSON: {e}")))),
            Ok(v) => contract.check_output(&v).map(|()| v).map_err(contract_error),
        },
    };

    let mut ev = node.event(&format!("tenant:{}/{}", tenant.id, owner.key_id), Some(&tenant.id), "invoke.contract", &contract.id, Outcome::ok(Some(200)));
    ev.config_version = Some(config_version);
    ev.context = Some((*context).clone());
    ev.capability_digest = Some(cap.digest.clone());
    ev.request_digest = Some(format!("sha256:{}", runplane_cjson::sha256_hex(input_text.as_bytes())));
    ev.usage = Some(runplane_audit::Usage {
        fuel: report.fuel_consumed,
        memory_peak_bytes: report.memory_peak_bytes as u64,
        port_calls: report.port_calls,
        request_bytes: input_text.len() as u64,
        response_bytes: 0,
        network_bytes: report.network_bytes,
    });
    ev.details.insert("route".into(), route.into());
    match &result {
        Ok(v) => {
            let out = runplane_cjson::to_string(v).unwrap_or_default();
            ev.response_digest = Some(format!("sha256:{}", runplane_cjson::sha256_hex(out.as_bytes())));
        }
        Err(e) => ev.outcome = Outcome::error(&e.code, Some(e.status.as_u16())),
    }
    node.append(LogId::tenant(&tenant.id), ev).await?;
    let output = result?;
    Ok(versioned(ContractResult { contract_id: contract.id.clone(), invocation_id: context.invocation_id.clone(), output }).into_response())
}

/// Loads the registered contracts at start, re-deriving each id from the stored content
/// (a row edited behind the node's back is refused, not loaded).
pub(crate) async fn load_contracts(node: &Node) -> Result<(), ApiError> {
    for (id, route, json) in node.control.contracts().await? {
        let parsed: Result<RuntimeContract, _> = serde_json::from_str(&json);
        match parsed.map_err(|e| ContractError::Invalid(e.to_string())).and_then(|mut c| {
            c.contract_id = Some(id.clone());
            c.validate()
        }) {
            Ok(v) => {
                node.contracts.write().unwrap_or_else(|p| p.into_inner()).insert(id, (route, Arc::new(v)));
            }
            Err(e) => tracing::error!(contract_id = %id, error = %e, "a stored contract was refused; it cannot be executed"),
        }
    }
    Ok(())
}

pub(crate) type ContractEntry = (String, Arc<ValidatedContract>);
