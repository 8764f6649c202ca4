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

/// Refuses an analysis this node could not measure: Prometheus queries with no
/// `[rollouts] prometheus_url`.
fn can_measure(node: &Node, spec: &RolloutSpec) -> Result<(), ApiError> {
    let analyses = spec.analysis.iter().chain(spec.steps.iter().filter_map(|s| if let runplane_rollout::Step::Analysis(a) = s { Some(a) } else { None }));
    if node.prometheus.is_none()
        && let Some(q) = analyses.flat_map(|a| a.prometheus.iter()).next()
    {
        return Err(ApiError::bad_request(
            "invalid_rollout",
            format!("the analysis holds the Prometheus query {}, but this node has no Prometheus server to ask; set [rollouts] prometheus_url in every node's runplane.toml, or drop the query", q.name),
        ));
    }
    Ok(())
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
    /// Rolling: nodes per wave (default 1).
    pub max_unavailable: Option<u32>,
    /// Rolling: seconds each wave serves before the next (default 30).
    pub wave_secs: Option<u64>,
    /// Rolling: regions in the order their nodes are activated.
    #[serde(default)]
    pub region_order: Vec<String>,
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
            max_unavailable: self.max_unavailable,
            wave_secs: self.wave_secs,
            region_order: self.region_order.clone(),
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

/// The versions a rollout of `route` to `capability` moves between, checked.
async fn versions(node: &Node, route: &str, capability: &str) -> Result<(Version, Version), ApiError> {
    let (name, version) = split_label(capability)?;
    if !valid_name(route) {
        return Err(ApiError::bad_request("invalid_route", format!("route {route:?} must be 1-64 characters of a-z, 0-9 and '-'")));
    }
    let cap = node
        .control
        .capability(name, version)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("{name}@{version} has not been pushed; push it with POST /v1/capabilities first")))?;
    let stable = node
        .deployment(route)
        .ok_or_else(|| ApiError::not_found(format!("nothing is deployed on route {route}; deploy its first version with POST /v1/deployments, then roll out the next")))?;
    if stable.capability.digest == cap.digest {
        return Err(ApiError::conflict(format!("route {route} already serves {name}@{version}; push a new version to roll out")));
    }
    let d = &stable.deployment;
    Ok((Version { capability: d.capability.clone(), version: d.version.clone(), digest: d.digest.clone() }, Version { capability: cap.name, version: cap.version, digest: cap.digest }))
}

/// Stores a new rollout (its candidate compiled first), superseding the route's
/// running one in the same transaction, and makes it live here.
async fn begin(node: &Arc<Node>, rollout: &mut Rollout, spec: &RolloutSpec) -> Result<(), ApiError> {
    // The candidate compiles before anyone is sent to it.
    node.compile_candidate(rollout).await?;
    if rollout.strategy == runplane_rollout::Strategy::Rolling {
        let ready: Vec<(String, String)> =
            node.control.nodes(node.config.control.node_ttl).await?.into_iter().filter(|n| n.state == "ready").map(|n| (n.node_id, n.region)).collect();
        if ready.is_empty() {
            return Err(ApiError::unavailable("no node of the instance is ready to take a wave; retry when membership shows ready nodes (GET /v1/cluster/nodes)"));
        }
        rollout.plan_waves(ready, &spec.region_order, spec.max_unavailable.unwrap_or(1) as usize);
    }
    let rollout = &*rollout;
    let at = runplane_audit::rfc3339_utc(node.now());
    let route = &rollout.route;
    let superseded = match node.control.active_rollouts().await?.into_iter().find(|r| r.route == *route) {
        Some(row) => {
            let mut old = crate::rollouts::parse(&row)?;
            let expected = old.revision;
            old.supersede(node.now_ms(), &rollout.rollout_id);
            Some((crate::rollouts::stored(&old, &at)?, expected, old.rollout_id))
        }
        None => None,
    };
    let deployment = if rollout.phase == runplane_rollout::Phase::Promoted { Some(node.promoted_deployment(rollout, &at)?) } else { None };
    let row = crate::rollouts::stored(rollout, &at)?;
    if !node.control.insert_rollout(&row, superseded.as_ref().map(|(s, e, _)| (s, *e)), deployment.as_ref()).await? {
        return Err(ApiError::conflict(format!("the rollout of {route} changed while this one started; read it with GET /v1/rollouts?route={route} and try again")));
    }
    if let Some((_, _, old)) = superseded {
        crate::api::gate::annotate(|r| {
            r.details.entry("superseded".into()).or_insert_with(|| serde_json::Value::Array(vec![])).as_array_mut().map(|a| a.push(old.into()));
        });
    }
    node.apply_rollout_change(deployment).await
}

/// Start a rollout of a route to a new version. A rollout of the same route that still
/// moves is superseded (everyone back on its stable, then this one from step 0).
#[utoipa::path(post, path = "/v1/rollouts", request_body = StartRollout, security(("admin_token" = [])),
    responses((status = 201, body = RolloutView), (status = 400, body = crate::error::ErrorResponse), (status = 404, body = crate::error::ErrorResponse),
        (status = 409, body = crate::error::ErrorResponse)))]
pub async fn start(State(node): State<Arc<Node>>, JsonBody(req): JsonBody<StartRollout>) -> Result<Response, ApiError> {
    let (stable, candidate) = versions(&node, &req.route, &req.capability).await?;
    let spec = req.spec().validate()?;
    can_measure(&node, &spec)?;
    let now = node.now_ms();
    let id = node.entropy.uuid_at(node.now()).to_string();
    let mut rollout = Rollout::start(id.clone(), req.route.clone(), stable, candidate, spec.clone(), id.clone(), now, &Mark { at_ms: now, ..Mark::default() });
    begin(&node, &mut rollout, &spec).await?;
    node.audit_decisions(&rollout, 0, "admin").await?;
    crate::api::gate::annotate(|r| {
        r.targets.insert(0, id.clone());
        r.capability_digest = Some(rollout.candidate.digest.clone());
        r.details.insert("route".into(), req.route.clone().into());
    });
    Ok((StatusCode::CREATED, versioned(RolloutView { rollout, metrics: None })).into_response())
}

/// One member of a release group.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GroupMember {
    pub route: String,
    /// The candidate, `name@version`.
    pub capability: String,
}

/// `POST /v1/release-groups`: the members and one spec for all of them.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartGroup {
    /// 2-20 routes, each with its candidate (a capability and the one it calls).
    pub members: Vec<GroupMember>,
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
    /// Rolling: nodes per wave (default 1).
    pub max_unavailable: Option<u32>,
    /// Rolling: seconds each wave serves before the next (default 30).
    pub wave_secs: Option<u64>,
    /// Rolling: regions in the order their nodes are activated.
    #[serde(default)]
    pub region_order: Vec<String>,
}

/// A release group: its members' rollouts.
#[derive(Serialize, ToSchema)]
pub struct GroupView {
    pub group_id: String,
    pub members: Vec<Rollout>,
}

/// Most members a release group has.
pub const MAX_GROUP: usize = 20;

/// Roll several routes out together: one cohort for all (a tenant on the candidate of
/// one is on the candidate of every member), one spec; an abort of any member — by
/// its analysis or an operator — aborts them all; operations on the group apply to
/// every member.
#[utoipa::path(post, path = "/v1/release-groups", request_body = StartGroup, security(("admin_token" = [])),
    responses((status = 201, body = GroupView), (status = 400, body = crate::error::ErrorResponse), (status = 404, body = crate::error::ErrorResponse),
        (status = 409, body = crate::error::ErrorResponse)))]
pub async fn start_group(State(node): State<Arc<Node>>, JsonBody(req): JsonBody<StartGroup>) -> Result<Response, ApiError> {
    if !(2..=MAX_GROUP).contains(&req.members.len()) {
        return Err(ApiError::bad_request("invalid_group", format!("a release group has 2 to {MAX_GROUP} members; this one has {}", req.members.len())));
    }
    let mut routes = std::collections::BTreeSet::new();
    if let Some(m) = req.members.iter().find(|m| !routes.insert(m.route.as_str())) {
        return Err(ApiError::bad_request("invalid_group", format!("route {} is in the group twice", m.route)));
    }
    let spec = RolloutSpec {
        strategy: req.strategy,
        steps: req.steps.clone(),
        analysis: req.analysis.clone(),
        stickiness: req.stickiness,
        include: req.include.clone(),
        exclude: req.exclude.clone(),
        post_promotion_secs: req.post_promotion_secs,
        max_unavailable: req.max_unavailable,
        wave_secs: req.wave_secs,
        region_order: req.region_order.clone(),
    }
    .validate()?;
    can_measure(&node, &spec)?;
    // Every member is checked before any starts.
    let mut planned = Vec::new();
    for m in &req.members {
        planned.push((m.route.clone(), versions(&node, &m.route, &m.capability).await?));
    }
    let group = node.entropy.uuid_at(node.now()).to_string();
    let now = node.now_ms();
    let mut members = Vec::new();
    for (route, (stable, candidate)) in planned {
        let id = node.entropy.uuid_at(node.now()).to_string();
        let mut r = Rollout::start(id, route, stable, candidate, spec.clone(), group.clone(), now, &Mark { at_ms: now, ..Mark::default() });
        r.group = Some(group.clone());
        if let Err(e) = begin(&node, &mut r, &spec).await {
            // The members already started go back to stable.
            node.abort_group(&group, None, &r.route, &format!("the group could not start: {}", e.message)).await?;
            return Err(e);
        }
        members.push(r);
    }
    crate::api::gate::annotate(|rec| {
        rec.targets.insert(0, group.clone());
        rec.details.insert("members".into(), serde_json::to_value(members.iter().map(|m| (&m.route, &m.rollout_id)).collect::<Vec<_>>()).unwrap_or_default());
    });
    Ok((StatusCode::CREATED, versioned(GroupView { group_id: group, members })).into_response())
}

async fn group_members(node: &Node, group: &str) -> Result<Vec<Rollout>, ApiError> {
    let rows = node.control.rollouts(None, 1000).await?;
    let mut members = Vec::new();
    for row in &rows {
        let r = crate::rollouts::parse(row)?;
        if r.group.as_deref() == Some(group) {
            members.push(r);
        }
    }
    if members.is_empty() {
        return Err(ApiError::not_found(format!("no release group {group}")));
    }
    members.sort_by(|a, b| a.route.cmp(&b.route));
    Ok(members)
}

/// A release group's members.
#[utoipa::path(get, path = "/v1/release-groups/{id}", security(("admin_token" = [])), responses((status = 200, body = GroupView), (status = 404, body = crate::error::ErrorResponse)))]
pub async fn get_group(State(node): State<Arc<Node>>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let members = group_members(&node, &id).await?;
    Ok(versioned(GroupView { group_id: id, members }).into_response())
}

/// Applies one operation to every member of a group, in route order; the first refusal
/// stops it and says which member.
async fn operate_group(node: &Arc<Node>, group: &str, p: &OperateParams, op: impl Fn(&mut Rollout, u64, &Mark) -> Result<(), RolloutError>) -> Result<Response, ApiError> {
    let mut done = Vec::new();
    for member in group_members(node, group).await? {
        // Read again: aborting one member aborts the others (the group goes together).
        let mut r = load(node, &member.rollout_id).await?;
        if p.abort && r.phase == runplane_rollout::Phase::Aborted {
            done.push(r);
            continue;
        }
        let counters = node.rollout_counters(&r.rollout_id, node.now_ms()).await?;
        let expected = r.revision;
        op(&mut r, node.now_ms(), &counters).map_err(|e| ApiError::from(e).with_details(serde_json::json!({"member": r.route})))?;
        if !node.commit_rollout(&r, expected, "admin").await? {
            return Err(ApiError::conflict(format!("member {} of release group {group} changed meanwhile; read the group again and decide", r.route)));
        }
        done.push(r);
    }
    Ok(versioned(GroupView { group_id: group.to_owned(), members: done }).into_response())
}

macro_rules! group_operation {
    ($name:ident, $path:literal, $doc:literal, $aborts:literal, $op:expr) => {
        #[doc = $doc]
        #[utoipa::path(post, path = $path, params(OperateParams), security(("admin_token" = [])),
            responses((status = 200, body = GroupView), (status = 404, body = crate::error::ErrorResponse), (status = 409, body = crate::error::ErrorResponse)))]
        pub async fn $name(State(node): State<Arc<Node>>, Path(id): Path<String>, Query(mut p): Query<OperateParams>) -> Result<Response, ApiError> {
            p.abort = $aborts;
            let op: fn(&mut Rollout, u64, &Mark, &OperateParams) -> Result<(), RolloutError> = $op;
            operate_group(&node, &id, &p, |r, now, c| op(r, now, c, &p)).await
        }
    };
}

group_operation!(promote_group, "/v1/release-groups/{id}/promote", "Every member's next step (`?full=true`: everyone on every candidate now).", false, |r, now, c, p| {
    if p.full == Some(true) { r.promote_fully(now) } else { r.promote(now, c) }
});
group_operation!(abort_group, "/v1/release-groups/{id}/abort", "Every member back on stable at once.", true, |r, now, _, p| {
    r.abort(now, p.reason.as_deref().unwrap_or("no reason given"))
});
group_operation!(retry_group, "/v1/release-groups/{id}/retry", "Every aborted member from its first step again.", false, |r, now, c, _| r.retry(now, c));
group_operation!(pause_group, "/v1/release-groups/{id}/pause", "Hold every member where it is.", false, |r, now, _, _| r.pause(now));
group_operation!(resume_group, "/v1/release-groups/{id}/resume", "Let every paused member go on.", false, |r, now, c, _| r.resume(now, c));

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
    let metrics = if rollout.is_active() { Some(node.rollout_counters(&id, node.now_ms()).await?) } else { None };
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
    /// Set by the group's abort handler (not a parameter).
    #[serde(skip)]
    #[param(ignore)]
    pub abort: bool,
}

/// One operation on a stored rollout, guarded by its revision, committed by swap.
async fn operate(node: &Arc<Node>, id: &str, p: &OperateParams, op: impl Fn(&mut Rollout, u64, &Mark) -> Result<(), RolloutError>) -> Result<Response, ApiError> {
    let mut rollout = load(node, id).await?;
    rollout.check_revision(p.revision)?;
    let expected = rollout.revision;
    let counters = node.rollout_counters(id, node.now_ms()).await?;
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
