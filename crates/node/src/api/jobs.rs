//! `/v1/jobs`: submit a job (a route's task with a JSON input, run once, retried by its
//! policy), read it and its attempts, cancel it.
//!
//! A tenant credential (API key or tenant token) acts on its own tenant's jobs only;
//! another tenant's are `404`, as if they did not exist. An admin credential names the
//! tenant (`"tenant"` in the body, `?tenant=` on the list) and needs the operation's
//! role; each of its calls is an admin event. Every submit and cancel is also an event
//! in the tenant's own log.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use runplane_audit::{LogId, Outcome};
use runplane_control::{StoredAttempt, StoredJob};
use runplane_jobs::{JobAttemptRecord, JobStatus, RetryPolicy};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::api::params::{Path, Query};
use crate::api::{JsonBody, versioned};
use crate::error::ApiError;
use crate::jobs::JobSpec;
use crate::node::Node;

/// `POST /v1/jobs`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubmitJob {
    /// The route whose capability's task export runs.
    pub route: String,
    /// The task's input (any JSON; default `{}`).
    #[serde(default)]
    #[schema(value_type = Object)]
    pub input: Option<serde_json::Value>,
    /// How failed attempts are retried (defaults: 3 attempts, 1 s doubling to 5 min, 10 % jitter).
    #[serde(default)]
    pub retry: Option<RetryPolicy>,
    /// The same key twice (per tenant) gives the same job: 1-191 printable characters.
    #[serde(default)]
    pub idempotency_key: Option<String>,
    /// A pool of `[jobs.pools]` whose slot each attempt takes.
    #[serde(default)]
    pub pool: Option<String>,
    /// With an admin credential: the tenant the job runs for.
    #[serde(default)]
    pub tenant: Option<String>,
    /// Ids to carry into every attempt's record (`run_id`, …).
    #[serde(default)]
    pub correlation_ids: BTreeMap<String, String>,
    /// Schedules are not served yet: a job with one is refused (400).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub schedule: Option<serde_json::Value>,
}

/// A job as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct JobView {
    pub job_id: String,
    pub tenant: String,
    pub route: String,
    pub idempotency_key: String,
    pub status: JobStatus,
    /// Attempts started so far.
    pub attempts: u32,
    /// While queued: the next attempt starts no earlier.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_attempt_at_utc: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
    #[schema(value_type = Object)]
    pub input: serde_json::Value,
    pub retry: RetryPolicy,
    /// The passing attempt's output.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub output: Option<serde_json::Value>,
    /// Why it failed or was cancelled.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub created_at_utc: String,
    pub updated_at_utc: String,
    /// `false` when this answer is an earlier submission's (the same idempotency key).
    pub created: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct JobList {
    pub items: Vec<JobView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AttemptList {
    pub items: Vec<JobAttemptRecord>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// With an admin credential: the tenant whose jobs to list.
    pub tenant: Option<String>,
    /// At most this many, newest first (1-1000, default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CancelQuery {
    /// Why (recorded on the job and its running attempt).
    pub reason: Option<String>,
}

/// Who is calling, for which tenant.
struct Caller {
    tenant: String,
    actor: String,
    admin: bool,
}

/// The caller of `op` on `tenant`'s jobs (`None`: the tenant is the credential's own).
fn caller(node: &Node, headers: &HeaderMap, op: &str, tenant: Option<&str>) -> Result<Caller, ApiError> {
    node.freshness.check()?;
    let token = crate::auth::bearer(headers)?;
    let as_tenant = node.tenant_credential(token, op, None);
    if let Ok(owner) = &as_tenant {
        if tenant.is_some_and(|t| t != owner.tenant) {
            return Err(ApiError::forbidden(format!("a credential of tenant {} acts on its own jobs only; leave \"tenant\" out", owner.tenant)));
        }
        if let Err(t) = node.limits.tenant(&owner.tenant) {
            return Err(ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", format!("tenant {} sends more than its rate limit: {t:?}", owner.tenant)));
        }
        return Ok(Caller { tenant: owner.tenant.clone(), actor: format!("tenant:{}/{}", owner.tenant, owner.key_id), admin: false });
    }
    let Some(t) = tenant else {
        // Not a tenant's credential, and no tenant named.
        return Err(match as_tenant {
            Err(e) if e.status == StatusCode::UNAUTHORIZED && node.authorize(headers, op, None).is_err() => e,
            _ => ApiError::bad_request("tenant_required", "an admin credential names the tenant: \"tenant\" in the body, or ?tenant= on a list"),
        });
    };
    match node.authorize(headers, op, Some(t)) {
        Ok(actor) => Ok(Caller { tenant: t.to_owned(), actor: actor.name, admin: true }),
        Err(crate::auth::Refusal::Unauthenticated(e)) => Err(e),
        Err(crate::auth::Refusal::Forbidden(_, e)) => Err(e),
    }
}

/// The job `id` as `op` by this caller may see it: another tenant's is not found.
async fn visible_job(node: &Node, headers: &HeaderMap, op: &str, id: &str) -> Result<(StoredJob, Caller), ApiError> {
    let missing = || ApiError::not_found(format!("no job {id}; list yours with GET /v1/jobs"));
    let job = node.control.job(id).await?;
    // The credential first, so an unknown id and another tenant's look the same.
    let caller = match caller(node, headers, op, None) {
        Ok(c) => c,
        Err(e) if e.code == "tenant_required" => caller(node, headers, op, Some(job.as_ref().map_or("-", |j| j.tenant_id.as_str())))?,
        Err(e) => return Err(e),
    };
    match job {
        Some(j) if j.tenant_id == caller.tenant => Ok((j, caller)),
        _ => Err(missing()),
    }
}

/// One event in the tenant's log (and the admin log for an admin caller).
async fn audit(node: &Node, caller: &Caller, op: &str, target: &str, details: serde_json::Value) -> Result<(), ApiError> {
    let mut logs = vec![LogId::tenant(&caller.tenant)];
    if caller.admin {
        logs.push(LogId::admin());
    }
    for log in logs {
        let mut ev = node.event(&caller.actor, Some(&caller.tenant), op, target, Outcome::ok(None));
        if let serde_json::Value::Object(m) = &details {
            ev.details.extend(m.clone());
        }
        node.append(log, ev).await?;
    }
    Ok(())
}

fn view(j: &StoredJob, created: bool) -> JobView {
    let spec: Option<JobSpec> = serde_json::from_str(&j.spec).ok();
    let status = j.status.parse().unwrap_or(JobStatus::Queued);
    JobView {
        job_id: j.job_id.clone(),
        tenant: j.tenant_id.clone(),
        route: j.route.clone(),
        idempotency_key: j.idempotency_key.clone(),
        status,
        attempts: j.attempts,
        next_attempt_at_utc: (status == JobStatus::Queued).then(|| runplane_audit::rfc3339_utc(j.not_before_ms.max(0) as u128 * 1_000_000)),
        pool: j.pool.clone(),
        input: spec.as_ref().map(|s| s.input.clone()).unwrap_or_default(),
        retry: spec.map(|s| s.retry).unwrap_or_default(),
        output: j.output.as_deref().map(|o| serde_json::from_str(o).unwrap_or_else(|_| serde_json::Value::String(o.to_owned()))),
        reason: j.reason.clone(),
        created_at_utc: j.created_at.clone(),
        updated_at_utc: j.updated_at.clone(),
        created,
    }
}

fn record(a: &StoredAttempt) -> JobAttemptRecord {
    JobAttemptRecord {
        job_id: a.job_id.clone(),
        attempt_id: a.attempt_id.clone(),
        status: a.status.parse().unwrap_or(JobStatus::Running),
        created_at_utc: a.created_at.clone(),
        updated_at_utc: a.updated_at.clone(),
        correlation_ids: serde_json::from_str(&a.correlation_ids).unwrap_or_default(),
        error_code: a.error_code.clone(),
        retryable: a.retryable,
        attempt_number: a.attempt_number,
        error_message: a.error_message.clone(),
    }
}

/// Submit a job: the route's task runs once with the input, retried by the policy.
#[utoipa::path(post, path = "/v1/jobs", request_body = SubmitJob, security(("tenant_key" = []), ("admin_token" = [])),
    responses((status = 201, body = JobView, description = "the job, queued"), (status = 200, body = JobView, description = "the job submitted earlier under the same idempotency key"),
        (status = 400, body = crate::error::ErrorResponse), (status = 401, body = crate::error::ErrorResponse), (status = 403, body = crate::error::ErrorResponse),
        (status = 404, body = crate::error::ErrorResponse, description = "no such route, or no such pool"),
        (status = 409, body = crate::error::ErrorResponse, description = "the route's capability exports no task"), (status = 429, body = crate::error::ErrorResponse),
        (status = 503, body = crate::error::ErrorResponse)))]
pub async fn submit(State(node): State<Arc<Node>>, headers: HeaderMap, JsonBody(req): JsonBody<SubmitJob>) -> Result<Response, ApiError> {
    let caller = caller(&node, &headers, "job.submit", req.tenant.as_deref())?;
    if node.tenant(&caller.tenant).is_none() {
        return Err(ApiError::not_found(format!("no tenant {}; create it with POST /v1/tenants", caller.tenant)));
    }
    if req.schedule.is_some() {
        return Err(ApiError::bad_request(
            "schedules_not_served",
            "this node does not run schedules yet; submit each run as its own job (with an idempotency key such as <schedule>@<nominal time>)",
        ));
    }
    let deployment = node.deployment(&req.route).ok_or_else(|| ApiError::not_found(format!("no capability is deployed on route {}; deploy one that exports runplane:ports/task", req.route)))?;
    if !deployment.capability.exports.task {
        return Err(ApiError::new(StatusCode::CONFLICT, "no_task_export", format!("{} on route {} exports no task (runplane:ports/task); a job runs a task", deployment.capability.name, req.route)));
    }
    let retry = req.retry.unwrap_or_default();
    retry.check().map_err(|e| ApiError::bad_request("invalid_retry", e))?;
    if let Some(p) = &req.pool
        && !node.config.jobs.pools.contains_key(p)
    {
        let known: Vec<&str> = node.config.jobs.pools.keys().map(String::as_str).collect();
        return Err(ApiError::not_found(format!("no pool {p} in [jobs.pools]; known: {}", if known.is_empty() { "none".into() } else { known.join(", ") })));
    }
    if let Some(k) = &req.idempotency_key
        && (k.is_empty() || k.chars().count() > 191 || k.chars().any(|c| c < ' ' || c == '\x7f'))
    {
        return Err(ApiError::bad_request("invalid_idempotency_key", "an idempotency key is 1-191 printable characters"));
    }
    if req.correlation_ids.len() > 16 || req.correlation_ids.iter().any(|(k, v)| k.is_empty() || k.chars().count() > 64 || v.chars().count() > 256) {
        return Err(ApiError::bad_request("invalid_correlation_ids", "at most 16 correlation ids, names of 1-64 characters, values of at most 256"));
    }
    let id = node.entropy.uuid_at(node.now()).to_string();
    let at = runplane_audit::rfc3339_utc(node.now());
    let spec = JobSpec { input: req.input.unwrap_or_else(|| serde_json::json!({})), retry, correlation_ids: req.correlation_ids };
    let job = StoredJob {
        job_id: id.clone(),
        tenant_id: caller.tenant.clone(),
        route: req.route.clone(),
        idempotency_key: req.idempotency_key.unwrap_or_else(|| id.clone()),
        status: "queued".into(),
        attempts: 0,
        not_before_ms: node.now_ms() as i64,
        pool: req.pool,
        spec: serde_json::to_string(&spec).map_err(|e| ApiError::internal(e.to_string()))?,
        output: None,
        reason: None,
        created_at: at.clone(),
        updated_at: at,
    };
    match node.control.insert_job(&job).await? {
        Ok(()) => {
            node.job_wake.notify_one();
            audit(&node, &caller, "job.submit", &id, serde_json::json!({"route": job.route, "idempotency_key": job.idempotency_key})).await?;
            Ok((StatusCode::CREATED, versioned(view(&job, true))).into_response())
        }
        Err(existing) => Ok((StatusCode::OK, versioned(view(&existing, false))).into_response()),
    }
}

/// The caller's jobs, newest first.
#[utoipa::path(get, path = "/v1/jobs", params(ListQuery), security(("tenant_key" = []), ("admin_token" = [])),
    responses((status = 200, body = JobList), (status = 400, body = crate::error::ErrorResponse), (status = 401, body = crate::error::ErrorResponse),
        (status = 403, body = crate::error::ErrorResponse), (status = 503, body = crate::error::ErrorResponse)))]
pub async fn list(State(node): State<Arc<Node>>, headers: HeaderMap, Query(q): Query<ListQuery>) -> Result<Response, ApiError> {
    let caller = caller(&node, &headers, "job.read", q.tenant.as_deref())?;
    let jobs = node.control.jobs(Some(&caller.tenant), crate::api::params::page_limit(q.limit)?).await?;
    if caller.admin {
        audit(&node, &caller, "job.read", "/v1/jobs", serde_json::json!({})).await?;
    }
    Ok(versioned(JobList { items: jobs.iter().map(|j| view(j, true)).collect() }).into_response())
}

/// One job.
#[utoipa::path(get, path = "/v1/jobs/{id}", params(("id" = String, Path, description = "the job id")), security(("tenant_key" = []), ("admin_token" = [])),
    responses((status = 200, body = JobView), (status = 401, body = crate::error::ErrorResponse), (status = 403, body = crate::error::ErrorResponse),
        (status = 404, body = crate::error::ErrorResponse), (status = 503, body = crate::error::ErrorResponse)))]
pub async fn get(State(node): State<Arc<Node>>, headers: HeaderMap, Path(id): Path<String>) -> Result<Response, ApiError> {
    let (job, caller) = visible_job(&node, &headers, "job.read", &id).await?;
    if caller.admin {
        audit(&node, &caller, "job.read", &id, serde_json::json!({})).await?;
    }
    Ok(versioned(view(&job, true)).into_response())
}

/// A job's attempts, first first: append-only, each with its own status and error.
#[utoipa::path(get, path = "/v1/jobs/{id}/attempts", params(("id" = String, Path, description = "the job id")), security(("tenant_key" = []), ("admin_token" = [])),
    responses((status = 200, body = AttemptList), (status = 401, body = crate::error::ErrorResponse), (status = 403, body = crate::error::ErrorResponse),
        (status = 404, body = crate::error::ErrorResponse), (status = 503, body = crate::error::ErrorResponse)))]
pub async fn attempts(State(node): State<Arc<Node>>, headers: HeaderMap, Path(id): Path<String>) -> Result<Response, ApiError> {
    let (job, caller) = visible_job(&node, &headers, "job.read", &id).await?;
    let attempts = node.control.attempts(&job.job_id).await?;
    if caller.admin {
        audit(&node, &caller, "job.read", &id, serde_json::json!({})).await?;
    }
    Ok(versioned(AttemptList { items: attempts.iter().map(record).collect() }).into_response())
}

/// Cancel a job that is queued or running: no attempt follows, and a running one's
/// slot is free at once (what its task still does is not recorded).
#[utoipa::path(post, path = "/v1/jobs/{id}/cancel", params(("id" = String, Path, description = "the job id"), CancelQuery), security(("tenant_key" = []), ("admin_token" = [])),
    responses((status = 200, body = JobView), (status = 401, body = crate::error::ErrorResponse), (status = 403, body = crate::error::ErrorResponse),
        (status = 404, body = crate::error::ErrorResponse), (status = 409, body = crate::error::ErrorResponse, description = "the job has ended already"),
        (status = 503, body = crate::error::ErrorResponse)))]
pub async fn cancel(State(node): State<Arc<Node>>, headers: HeaderMap, Path(id): Path<String>, Query(q): Query<CancelQuery>) -> Result<Response, ApiError> {
    let (job, caller) = visible_job(&node, &headers, "job.cancel", &id).await?;
    let reason: String = q.reason.unwrap_or_else(|| format!("cancelled by {}", caller.actor)).chars().take(512).collect();
    let at = runplane_audit::rfc3339_utc(node.now());
    if !node.control.cancel_job(&job.job_id, &reason, &at).await? {
        return Err(ApiError::conflict(format!("job {id} has ended already ({}); nothing to cancel", job.status)));
    }
    audit(&node, &caller, "job.cancel", &id, serde_json::json!({"reason": reason})).await?;
    let job = node.control.job(&id).await?.ok_or_else(|| ApiError::not_found(format!("no job {id}")))?;
    Ok(versioned(view(&job, true)).into_response())
}
