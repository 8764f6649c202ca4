//! Jobs on the node (spec §9): what is retried, when and how often is
//! `runplane-jobs`'s; this module keeps the stored jobs moving and runs their attempts.
//!
//! - **One controller**, on the leader ([`spawn`], every [`TICK`], and at once when a
//!   job is submitted on this node or an attempt ends): it first abandons
//!   the running attempts whose lease expired (their node died; error `abandoned`,
//!   retryable), then starts the queued jobs that are due, each only if a slot is free
//!   (the tenant's `[jobs] max_running_per_tenant`, the job's `[jobs.pools]` pool) —
//!   the running attempts in the store *are* the slots, so a restart neither doubles
//!   nor leaks one.
//! - **An attempt** is claimed in the store (job `running`, attempt `running` with a
//!   lease) before its task starts, renewed every [`RENEW_MS`] while it runs, and ended
//!   with the job's next move in one transaction guarded by its holder: an attempt
//!   that was cancelled or abandoned meanwhile changes nothing when it answers late.
//! - **The task** runs as any invocation does: the route's deployment (a rollout's
//!   cohort rule included), the tenant's admission and quotas, its ports, a journal;
//!   each attempt is an `invoke.task` event in the tenant's log, replayable.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use runplane_audit::{LogId, Outcome};
use runplane_control::{AttemptEnd, EndedBy, JobMove, StoredAttempt, StoredJob};
use runplane_host::{Invocation, Journal};
use runplane_jobs::attempt::{Conclusion, Held, LEASE_MS, RENEW_MS, conclude, may_start};
use runplane_jobs::{Concurrency, RetryPolicy};
use runplane_ports::TenantId;
use serde::{Deserialize, Serialize};

use crate::error::ApiError;
use crate::node::Node;
use crate::replay::{Input, JournalRecord};

/// How often the controller looks for due jobs and expired leases.
pub const TICK: Duration = Duration::from_millis(200);
/// Most jobs one tick starts.
const STARTS_PER_TICK: u32 = 64;

/// `[jobs]`: the concurrency limits the operator sets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobSettings {
    /// Attempts of one tenant running at once, instance-wide.
    pub max_running_per_tenant: u32,
    /// Named pools and how many of their jobs' attempts may run at once.
    pub pools: BTreeMap<String, u32>,
}

impl Default for JobSettings {
    fn default() -> Self {
        JobSettings { max_running_per_tenant: 8, pools: BTreeMap::new() }
    }
}

/// What a job was submitted with, kept as the job's spec.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct JobSpec {
    pub(crate) input: serde_json::Value,
    pub(crate) retry: RetryPolicy,
    #[serde(default)]
    pub(crate) correlation_ids: BTreeMap<String, String>,
}

/// Every node runs the loop; only the leader acts in it.
pub(crate) fn spawn(node: Arc<Node>) {
    tokio::spawn(async move {
        let stopped = node.drain.stopped();
        let mut stopped = std::pin::pin!(stopped);
        loop {
            tokio::select! {
                _ = &mut stopped => return,
                _ = tokio::time::sleep(TICK) => {}
                _ = node.job_wake.notified() => {}
            }
            if node.leader_epoch().is_none() || node.drain.is_draining() {
                continue;
            }
            // A full batch started: there may be more due at once.
            loop {
                match tick(&node).await {
                    Ok(true) => continue,
                    Ok(false) => break,
                    Err(e) => {
                        tracing::warn!(error = %e.message, "job controller: the control store is unavailable; jobs wait until it is back");
                        break;
                    }
                }
            }
        }
    });
}

/// One pass: the expired leases, then the due jobs. Whether it started a full batch
/// (more may be due; jobs left waiting for a slot are looked at when one is freed or
/// at the next tick, not in a loop now).
async fn tick(node: &Arc<Node>) -> Result<bool, ApiError> {
    // With no job open, nothing to do, and no clock read: a node on a deterministic
    // clock gives the same bytes whether or not this loop runs.
    if !node.control.has_open_jobs().await? {
        return Ok(false);
    }
    let now = node.now_ms() as i64;
    for a in node.control.expired_attempts(now, STARTS_PER_TICK).await? {
        abandon(node, a, now).await?;
    }
    let due = node.control.due_jobs(now, STARTS_PER_TICK).await?;
    let full = due.len() == STARTS_PER_TICK as usize;
    let mut all_started = true;
    for job in due {
        all_started &= start(node, job, now).await?;
    }
    Ok(full && all_started)
}

/// An attempt whose node stopped: `abandoned`, and the retry policy decides.
async fn abandon(node: &Arc<Node>, a: StoredAttempt, now: i64) -> Result<(), ApiError> {
    let Some(job) = node.control.job(&a.job_id).await? else { return Ok(()) };
    let spec = spec_of(&job);
    let why = format!("the lease of {} expired: the node running it stopped", a.holder.as_deref().unwrap_or("its node"));
    let (end, next) = ending(node, &job.job_id, &spec.retry, a.attempt_number, Err(("abandoned".into(), why.clone())), now);
    if node.control.end_attempt(&a.job_id, a.attempt_number, EndedBy::ExpiredBefore(now), &end, &next).await? {
        tracing::warn!(job_id = %a.job_id, attempt = a.attempt_number, holder = ?a.holder, next = %next.status, "job attempt abandoned");
        let mut ev = node.event("job-controller", Some(&a.tenant_id), "job.attempt.abandoned", &a.job_id, Outcome::error("abandoned", None));
        ev.details.insert("attempt_id".into(), a.attempt_id.clone().into());
        ev.details.insert("attempt_number".into(), a.attempt_number.into());
        ev.details.insert("next".into(), next.status.clone().into());
        node.append(LogId::tenant(&a.tenant_id), ev).await?;
        node.metrics.job_attempts.get_or_create(&crate::metrics::JobLabels { outcome: "abandoned".into() }).inc();
    }
    Ok(())
}

/// Starts the next attempt of `job` if a slot is free; it runs on this node. Whether
/// it started.
async fn start(node: &Arc<Node>, job: StoredJob, now: i64) -> Result<bool, ApiError> {
    let held = node.control.running(&job.tenant_id, job.pool.as_deref()).await?;
    let settings = &node.config.jobs;
    let limits = Concurrency { job: None, pool: job.pool.clone() };
    let pool_limit = job.pool.as_ref().and_then(|p| settings.pools.get(p).copied());
    if let Err(why) = may_start(&limits, Some(settings.max_running_per_tenant), pool_limit, Held { job: 0, tenant: held.tenant, pool: held.pool }) {
        tracing::debug!(job_id = %job.job_id, why, "job waits for a slot");
        return Ok(false);
    }
    let spec = spec_of(&job);
    let at = runplane_audit::rfc3339_utc(node.now());
    let number = job.attempts + 1;
    let attempt_id = node.entropy.uuid_at(node.now()).to_string();
    let mut correlation = spec.correlation_ids.clone();
    correlation.insert("job_id".into(), job.job_id.clone());
    correlation.insert("idempotency_key".into(), job.idempotency_key.clone());
    let attempt = StoredAttempt {
        job_id: job.job_id.clone(),
        attempt_number: number,
        attempt_id,
        tenant_id: job.tenant_id.clone(),
        pool: job.pool.clone(),
        status: "running".into(),
        created_at: at.clone(),
        updated_at: at,
        correlation_ids: serde_json::to_string(&correlation).unwrap_or_else(|_| "{}".into()),
        error_code: None,
        retryable: None,
        error_message: None,
        holder: Some(node.config.node_id.clone()),
        lease_expires_ms: now + LEASE_MS,
    };
    if !node.control.claim_attempt(job.attempts, &attempt).await? {
        return Ok(false);
    }
    node.metrics.jobs_running.inc();
    let node = node.clone();
    tokio::spawn(async move {
        run_attempt(&node, job, spec, attempt).await;
        node.metrics.jobs_running.dec();
        // Its slot is free, and a retry may be due at once.
        node.job_wake.notify_one();
    });
    Ok(true)
}

/// The job's spec as stored (one written by this node; unreadable means altered).
fn spec_of(job: &StoredJob) -> JobSpec {
    serde_json::from_str(&job.spec).unwrap_or_else(|e| {
        tracing::error!(job_id = %job.job_id, error = %e, "a stored job's spec is unreadable; it runs with an empty input and no retries");
        JobSpec { input: serde_json::Value::Null, retry: RetryPolicy { maximum_attempts: 1, ..RetryPolicy::default() }, correlation_ids: BTreeMap::new() }
    })
}

/// What attempt `number` ending with `result` at `now` records, and where its job goes.
fn ending(node: &Node, job_id: &str, retry: &RetryPolicy, number: u32, result: Result<String, (String, String)>, now: i64) -> (AttemptEnd, JobMove) {
    let at = runplane_audit::rfc3339_utc(node.now());
    match result {
        Ok(output) => (
            AttemptEnd { status: "passed".into(), error_code: None, retryable: None, error_message: None, at: at.clone() },
            JobMove { status: "passed".into(), not_before_ms: now, output: Some(output), reason: None, at },
        ),
        Err((code, message)) => {
            let status = if code == "abandoned" { "abandoned" } else { "failed" };
            match conclude(retry, job_id, number, Err(&code), now) {
                Conclusion::Retry { at_ms } => (
                    AttemptEnd { status: status.into(), error_code: Some(code), retryable: Some(true), error_message: Some(message), at: at.clone() },
                    JobMove { status: "queued".into(), not_before_ms: at_ms, output: None, reason: None, at },
                ),
                Conclusion::Failed { reason } => (
                    AttemptEnd { status: status.into(), error_code: Some(code), retryable: Some(false), error_message: Some(message), at: at.clone() },
                    JobMove { status: "failed".into(), not_before_ms: now, output: None, reason: Some(reason), at },
                ),
                Conclusion::Passed => unreachable!("a failure never concludes as a pass"),
            }
        }
    }
}

async fn run_attempt(node: &Arc<Node>, job: StoredJob, spec: JobSpec, attempt: StoredAttempt) {
    let renewer = {
        let (node, job_id, number) = (node.clone(), job.job_id.clone(), attempt.attempt_number);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(RENEW_MS as u64)).await;
                let expires = node.now_ms() as i64 + LEASE_MS;
                match node.control.renew_attempt(&job_id, number, &node.config.node_id, expires).await {
                    Ok(true) => {}
                    // Cancelled or abandoned: nothing to hold any more.
                    Ok(false) => return,
                    Err(e) => tracing::warn!(%job_id, error = %e, "could not renew a job attempt's lease; it is abandoned if this lasts"),
                }
            }
        })
    };
    let started = std::time::Instant::now();
    let result = invoke(node, &job, &spec, &attempt).await;
    renewer.abort();
    let outcome = match &result {
        Ok(_) => "passed",
        Err(_) => "failed",
    };
    node.metrics.job_attempts.get_or_create(&crate::metrics::JobLabels { outcome: outcome.into() }).inc();
    node.metrics.job_attempt_seconds.observe(started.elapsed().as_secs_f64());
    let now = node.now_ms() as i64;
    let (end, next) = ending(node, &job.job_id, &spec.retry, attempt.attempt_number, result, now);
    match node.control.end_attempt(&job.job_id, attempt.attempt_number, EndedBy::Holder(&node.config.node_id), &end, &next).await {
        Ok(true) => tracing::info!(job_id = %job.job_id, attempt = attempt.attempt_number, status = %end.status, next = %next.status, "job attempt ended"),
        Ok(false) => tracing::info!(job_id = %job.job_id, attempt = attempt.attempt_number, "job attempt answered after it was cancelled or abandoned; its answer is not recorded"),
        Err(e) => tracing::warn!(job_id = %job.job_id, error = %e, "could not record a job attempt's end; its lease expires and the retry policy decides"),
    }
}

/// Runs the job's task once: its output, or the error code and message.
async fn invoke(node: &Arc<Node>, job: &StoredJob, spec: &JobSpec, attempt: &StoredAttempt) -> Result<String, (String, String)> {
    let api = |e: ApiError| (e.code.clone(), e.message);
    let tenant = node.tenant(&job.tenant_id).ok_or_else(|| ("tenant_removed".to_owned(), format!("tenant {} no longer exists", job.tenant_id)))?;
    if tenant.status != "active" {
        return Err(("tenant_suspended".into(), format!("tenant {} is suspended", tenant.id)));
    }
    let stable = node.deployment(&job.route).ok_or_else(|| ("route_not_deployed".to_owned(), format!("no capability is deployed on route {}", job.route)))?;
    // A rollout in progress: the same cohort rule as requests.
    let serving = node.serving(&job.route, stable, &tenant.id, None);
    let active = serving.deployment.clone();
    crate::api::apps::check_request(node, &tenant, &job.route, &active.deployment).map_err(api)?;
    node.audit.writable(&LogId::tenant(&tenant.id)).map_err(|e| api(e.into()))?;
    let tenant_id = TenantId::new(&tenant.id).map_err(|e| ("invalid_tenant".to_owned(), e.to_string()))?;
    let (admitted, _pass) = crate::api::apps::admit(node, &tenant).await.map_err(api)?;
    let ports = crate::api::apps::tenant_ports(node, &tenant).await.map_err(api)?;
    let config_version = ports.config.version();
    let cap = &active.capability;
    let context = Arc::new(crate::api::apps::new_context(node, &tenant_id, "job", None, job.job_id.replace('-', ""), &cap.name, &cap.digest));
    let input = runplane_cjson::to_string(&spec.input).map_err(|e| ("invalid_input".to_owned(), format!("the job's input cannot be written as canonical JSON: {e}")))?;
    let journal = Journal::record();
    let started = std::time::Instant::now();
    let (outcome, report) =
        node.host.run_task(cap, Invocation { context: context.clone(), ports, allow: active.allow.clone(), journal: journal.clone(), limits: admitted.limits.clone() }, input.clone()).await;
    admitted.settle(report.fuel_consumed);
    serving.record(
        match &outcome {
            Ok(Ok(_)) => crate::rollouts::Ended::Answered(200),
            Ok(Err(_)) => crate::rollouts::Ended::Answered(500),
            Err(e) => crate::rollouts::Ended::of(e),
        },
        started.elapsed(),
    );

    let mut event = node.event("job", Some(&tenant.id), "invoke.task", &job.route, Outcome::ok(None));
    event.config_version = Some(config_version);
    event.context = Some((*context).clone());
    event.capability_digest = Some(cap.digest.clone());
    event.request_digest = Some(format!("sha256:{}", runplane_cjson::sha256_hex(input.as_bytes())));
    event.details.insert("job_id".into(), job.job_id.clone().into());
    event.details.insert("attempt_id".into(), attempt.attempt_id.clone().into());
    event.details.insert("attempt_number".into(), attempt.attempt_number.into());
    crate::replay::complete_task_event(&mut event, &outcome, &report, input.len() as u64);
    let record = JournalRecord { route: job.route.clone(), input: Input::Task { input }, allow_hosts: active.allow.entries().to_vec(), observations: journal.observations() };
    let (json, digest) = record.encode().map_err(api)?;
    event.details.insert("journal_digest".into(), digest.into());
    // Fail closed: an attempt that could not be audited did not pass.
    node.audit.append_with_journal(LogId::tenant(&tenant.id), &event, &context.invocation_id, &json, node.now_secs()).await.map_err(|e| {
        node.metrics.audit_failures.inc();
        ("audit_unavailable".to_owned(), format!("the attempt could not be audited: {e}"))
    })?;
    match outcome {
        Ok(Ok(output)) => Ok(output),
        Ok(Err(message)) => Err(runplane_jobs::retry::task_failure(&message)),
        Err(e) => Err((e.code().to_owned(), e.to_string())),
    }
}
