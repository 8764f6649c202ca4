//! Progressive delivery (`/v1/rollouts`, `/v1/deployments/{route}/undo`; spec §8):
//! start a rollout, read it, and operate on it. The decisions are `runplane-rollout`'s;
//! the state lives in the control store ([`crate::rollouts`]).
//!
//! Every operation is guarded by the rollout's revision: `?revision=N` makes it apply
//! only to that revision (409 otherwise), and two operators acting at once never
//! overwrite each other (compare and swap; the loser gets 409 and reads again).

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use runplane_audit::Outcome;
use runplane_rollout::{Mark, Rollout, RolloutError, RolloutSpec, Version};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::api::params::{Path, Query};
use crate::api::{JsonBody, versioned};
use crate::control::Deployment;
use crate::error::ApiError;
use crate::node::Node;

impl From<RolloutError> for ApiError {
    fn from(e: RolloutError) -> Self {
        match e {
            RolloutError::Invalid(m) => ApiError::bad_request("invalid_rollout", m),
            RolloutError::Conflict(m) => ApiError::conflict(m),
        }
    }
}

/// `POST /v1/rollouts`: the route, the candidate and a [`RolloutSpec`]'s fields
/// (written out, not flattened: a flattened body would lose exact numbers).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartRollout {
    /// The route to roll out; it must have a deployment (its stable version).
    pub route: String,
    /// The candidate, `name@version`, pushed before.
    pub capability: String,
    pub strategy: runplane_rollout::Strategy,
    #[serde(default)]
    pub steps: Vec<runplane_rollout::Step>,
    pub analysis: Option<runplane_rollout::Analysis>,
    #[serde(default)]
    pub stickiness: runplane_rollout::Stickiness,
    #[serde(default)]
    pub include: Vec<String>,
    #[serde(default)]
    pub exclude: Vec<String>,
    pub post_promotion_secs: Option<u64>,
}

impl StartRollout {
    fn spec(&self) -> RolloutSpec {
        RolloutSpec {
            strategy: self.strategy,
            steps: self.steps.clone(),
            analysis: self.analysis.clone(),
            stickiness: self.stickiness,
            include: self.include.clone(),
            exclude: self.exclude.clone(),
            post_promotion_secs: self.post_promotion_secs,
        }
    }
}

/// A rollout as the API shows it.
#[derive(Serialize, ToSchema)]
pub struct RolloutView {
    #[serde(flatten)]
    pub rollout: Rollout,
    /// The instance's counters of both versions since the rollout started (every
    /// node's, summed); absent once it stopped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics: Option<Mark>,
}

fn valid_name(s: &str) -> bool {
    (1..=64).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

fn split_label(label: &str) -> Result<(&str, &str), ApiError> {
    label
        .split_once('@')
        .filter(|(n, v)| !n.is_empty() && !v.is_empty())
        .ok_or_else(|| ApiError::bad_request("invalid_capability", format!("capability {label:?} must be written name@version, as pushed")))
}

/// Start a rollout of a route to a new version. A rollout of the same route that still
/// moves is superseded (everyone back on its stable, then this one from step 0).
#[utoipa::path(post, path = "/v1/rollouts", request_body = StartRollout, security(("admin_token" = [])),
    responses((status = 201, body = RolloutView), (status = 400, body = crate::error::ErrorResponse), (status = 404, body = crate::error::ErrorResponse),
        (status = 409, body = crate::error::ErrorResponse)))]
pub async fn start(State(node): State<Arc<Node>>, JsonBody(req): JsonBody<StartRollout>) -> Result<Response, ApiError> {
    let (name, version) = split_label(&req.capability)?;
    if !valid_name(&req.route) {
        return Err(ApiError::bad_request("invalid_route", format!("route {:?} must be 1-64 characters of a-z, 0-9 and '-'", req.route)));
    }
    let cap = node
        .control
        .capability(name, version)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("{name}@{version} has not been pushed; push it with POST /v1/capabilities first")))?;
    let stable = node.deployment(&req.route).ok_or_else(|| {
        ApiError::not_found(format!("nothing is deployed on route {}; deploy its first version with POST /v1/deployments, then roll out the next", req.route))
    })?;
    if stable.capability.digest == cap.digest {
        return Err(ApiError::conflict(format!("route {} already serves {name}@{version}; push a new version to roll out", req.route)));
    }
    let spec = req.spec().validate()?;
    let now = node.now_ms();
    let id = node.entropy.uuid_at(node.now()).to_string();
    let stable_version = Version { capability: stable.deployment.capability.clone(), version: stable.deployment.version.clone(), digest: stable.deployment.digest.clone() };
    let candidate = Version { capability: cap.name.clone(), version: cap.version.clone(), digest: cap.digest.clone() };
    let rollout = Rollout::start(id.clone(), req.route.clone(), stable_version, candidate, spec, id.clone(), now, &Mark { at_ms: now, ..Mark::default() });
    // The candidate compiles before anyone is sent to it.
    node.compile_candidate(&rollout).await?;
    let at = runplane_audit::rfc3339_utc(node.now());
    let superseded = match node.control.active_rollouts().await?.into_iter().find(|r| r.route == req.route) {
        Some(row) => {
            let mut old = crate::rollouts::parse(&row)?;
            let expected = old.revision;
            old.supersede(now, &id);
            Some((crate::rollouts::stored(&old, &at)?, expected, old))
        }
        None => None,
    };
    let deployment = if rollout.phase == runplane_rollout::Phase::Promoted { Some(node.promoted_deployment(&rollout, &at).await?) } else { None };
    let row = crate::rollouts::stored(&rollout, &at)?;
    if !node.control.insert_rollout(&row, superseded.as_ref().map(|(s, e, _)| (s, *e)), deployment.as_ref()).await? {
        return Err(ApiError::conflict(format!("the rollout of {} changed while this one started; read it with GET /v1/rollouts?route={} and try again", req.route, req.route)));
    }
    if let Some((_, _, old)) = &superseded {
        crate::api::gate::annotate(|r| {
            r.details.insert("superseded".into(), old.rollout_id.clone().into());
        });
    }
    node.audit_decisions(&rollout, 0, "admin").await?;
    crate::api::gate::annotate(|r| {
        r.targets.insert(0, id.clone());
        r.capability_digest = Some(cap.digest.clone());
        r.details.insert("route".into(), req.route.clone().into());
    });
    node.apply_rollout_change(deployment).await?;
    Ok((StatusCode::CREATED, versioned(RolloutView { rollout, metrics: None })).into_response())
}

#[derive(Deserialize, IntoParams)]
pub struct ListParams {
    /// Only this route's rollouts.
    pub route: Option<String>,
    /// 1-1000, default 100: the newest first.
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
}

#[derive(Serialize, ToSchema)]
pub struct RolloutList {
    pub items: Vec<Rollout>,
}

/// Rollouts, newest first.
#[utoipa::path(get, path = "/v1/rollouts", params(ListParams), security(("admin_token" = [])), responses((status = 200, body = RolloutList)))]
pub async fn list(State(node): State<Arc<Node>>, Query(p): Query<ListParams>) -> Result<Response, ApiError> {
    if let Some(route) = &p.route
        && !valid_name(route)
    {
        return Err(ApiError::bad_request("invalid_route", format!("route {route:?} must be 1-64 characters of a-z, 0-9 and '-'")));
    }
    let limit = p.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::bad_request("invalid_limit", "limit is between 1 and 1000"));
    }
    let rows = node.control.rollouts(p.route.as_deref(), limit).await?;
    let items = rows.iter().map(crate::rollouts::parse).collect::<Result<Vec<_>, _>>()?;
    Ok(versioned(RolloutList { items }).into_response())
}

async fn load(node: &Node, id: &str) -> Result<Rollout, ApiError> {
    let row = node.control.rollout(id).await?.ok_or_else(|| ApiError::not_found(format!("no rollout {id}; list them with GET /v1/rollouts")))?;
    crate::rollouts::parse(&row)
}

/// A rollout: phase, step, weight, the decision history and both versions' metrics.
#[utoipa::path(get, path = "/v1/rollouts/{id}", security(("admin_token" = [])), responses((status = 200, body = RolloutView), (status = 404, body = crate::error::ErrorResponse)))]
pub async fn get(State(node): State<Arc<Node>>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let rollout = load(&node, &id).await?;
    let metrics = if rollout.is_active() { Some(node.rollout_counters(&id).await?) } else { None };
    Ok(versioned(RolloutView { rollout, metrics }).into_response())
}

#[derive(Deserialize, IntoParams)]
pub struct OperateParams {
    /// Act only if the rollout is at this revision (409 otherwise).
    pub revision: Option<u64>,
    /// `promote` only: everyone on the candidate now, skipping the remaining steps.
    pub full: Option<bool>,
    /// `abort` only: why (recorded in the decision).
    pub reason: Option<String>,
}

/// One operation on a stored rollout, guarded by its revision, committed by swap.
async fn operate(node: &Arc<Node>, id: &str, p: &OperateParams, op: impl Fn(&mut Rollout, u64, &Mark) -> Result<(), RolloutError>) -> Result<Response, ApiError> {
    let mut rollout = load(node, id).await?;
    rollout.check_revision(p.revision)?;
    let expected = rollout.revision;
    let counters = node.rollout_counters(id).await?;
    op(&mut rollout, node.now_ms(), &counters)?;
    if !node.commit_rollout(&rollout, expected, "admin").await? {
        return Err(ApiError::conflict(format!("rollout {id} changed while this operation ran (now past revision {expected}); read it again and decide")));
    }
    crate::api::gate::annotate(|r| {
        r.capability_digest = Some(rollout.candidate.digest.clone());
        r.details.insert("route".into(), rollout.route.clone().into());
    });
    Ok(versioned(RolloutView { rollout, metrics: None }).into_response())
}

/// The next step now (`?full=true`: everyone on the candidate now); a blue-green
/// preview switches.
#[utoipa::path(post, path = "/v1/rollouts/{id}/promote", params(OperateParams), security(("admin_token" = [])),
    responses((status = 200, body = RolloutView), (status = 404, body = crate::error::ErrorResponse), (status = 409, body = crate::error::ErrorResponse)))]
pub async fn promote(State(node): State<Arc<Node>>, Path(id): Path<String>, Query(p): Query<OperateParams>) -> Result<Response, ApiError> {
    let full = p.full == Some(true);
    operate(&node, &id, &p, |r, now, c| if full { r.promote_fully(now) } else { r.promote(now, c) }).await
}

/// Everyone back on stable at once; final until retried.
#[utoipa::path(post, path = "/v1/rollouts/{id}/abort", params(OperateParams), security(("admin_token" = [])),
    responses((status = 200, body = RolloutView), (status = 404, body = crate::error::ErrorResponse), (status = 409, body = crate::error::ErrorResponse)))]
pub async fn abort(State(node): State<Arc<Node>>, Path(id): Path<String>, Query(p): Query<OperateParams>) -> Result<Response, ApiError> {
    let reason = p.reason.clone().unwrap_or_else(|| "no reason given".into());
    operate(&node, &id, &p, |r, now, _| r.abort(now, &reason)).await
}

/// An aborted rollout from its first step again (the same cohorts).
#[utoipa::path(post, path = "/v1/rollouts/{id}/retry", params(OperateParams), security(("admin_token" = [])),
    responses((status = 200, body = RolloutView), (status = 404, body = crate::error::ErrorResponse), (status = 409, body = crate::error::ErrorResponse)))]
pub async fn retry(State(node): State<Arc<Node>>, Path(id): Path<String>, Query(p): Query<OperateParams>) -> Result<Response, ApiError> {
    operate(&node, &id, &p, |r, now, c| r.retry(now, c)).await
}

/// Hold the rollout where it is; analysis and the fast-trip guard keep watching.
#[utoipa::path(post, path = "/v1/rollouts/{id}/pause", params(OperateParams), security(("admin_token" = [])),
    responses((status = 200, body = RolloutView), (status = 404, body = crate::error::ErrorResponse), (status = 409, body = crate::error::ErrorResponse)))]
pub async fn pause(State(node): State<Arc<Node>>, Path(id): Path<String>, Query(p): Query<OperateParams>) -> Result<Response, ApiError> {
    operate(&node, &id, &p, |r, now, _| r.pause(now)).await
}

/// Let a paused rollout go on (at an indefinite pause step: past it).
#[utoipa::path(post, path = "/v1/rollouts/{id}/resume", params(OperateParams), security(("admin_token" = [])),
    responses((status = 200, body = RolloutView), (status = 404, body = crate::error::ErrorResponse), (status = 409, body = crate::error::ErrorResponse)))]
pub async fn resume(State(node): State<Arc<Node>>, Path(id): Path<String>, Query(p): Query<OperateParams>) -> Result<Response, ApiError> {
    operate(&node, &id, &p, |r, now, c| r.resume(now, c)).await
}

#[derive(Serialize, ToSchema)]
pub struct Undone {
    /// What the route serves now.
    pub deployment: Deployment,
    /// What it served before the undo.
    pub replaced: Deployment,
}

/// Back to the route's previous stable version at once (it stays compiled in the
/// cache). Refused while a rollout of the route moves: abort it instead.
#[utoipa::path(post, path = "/v1/deployments/{route}/undo", security(("admin_token" = [])),
    responses((status = 200, body = Undone), (status = 404, body = crate::error::ErrorResponse), (status = 409, body = crate::error::ErrorResponse)))]
pub async fn undo(State(node): State<Arc<Node>>, Path(route): Path<String>) -> Result<Response, ApiError> {
    let current = node.deployment(&route).map(|d| d.deployment.clone()).ok_or_else(|| ApiError::not_found(format!("nothing is deployed on route {route}")))?;
    if let Some(live) = node.live_rollout(&route) {
        return Err(ApiError::conflict(format!(
            "rollout {} of route {route} is in progress; abort it with POST /v1/rollouts/{}/abort (everyone goes back to stable at once)",
            live.rollout.rollout_id, live.rollout.rollout_id
        )));
    }
    let mut previous = node.previous_deployments(&route).await?;
    let Some(back) = previous.pop() else {
        return Err(ApiError::conflict(format!("route {route} has no previous version to go back to")));
    };
    let at = runplane_audit::rfc3339_utc(node.now());
    let restored = Deployment { created_at: at.clone(), ..back };
    node.activate(restored.clone()).await?;
    node.control.upsert_deployment(&restored).await?;
    let body = serde_json::to_string(&previous).map_err(|e| ApiError::internal(e.to_string()))?;
    node.control.put_document(crate::rollouts::PREVIOUS, &route, &body, &at).await?;
    let mut ev = node.event("admin", None, "deployment.undo", &route, Outcome::ok(Some(200)));
    ev.capability_digest = Some(restored.digest.clone());
    ev.details.insert("before".into(), serde_json::to_value(&current).unwrap_or_default());
    ev.details.insert("after".into(), serde_json::to_value(&restored).unwrap_or_default());
    node.audit_admin(ev).await?;
    Ok(versioned(Undone { deployment: restored, replaced: current }).into_response())
}
