//! Rollouts on the node (spec §8): the decisions are `runplane-rollout`'s; this module
//! keeps them live.
//!
//! - **State** is a row per rollout in the control store ([`StoredRollout`]), changed
//!   only by compare and swap on its revision, so an operator's promote and the
//!   controller's tick never overwrite each other; the change feed brings every change
//!   to every node, which reloads its [`Live`] rollouts (the candidate compiled and
//!   ready beside stable).
//! - **Routing** ([`Node::serving`]) is in memory: one map read and, while a rollout
//!   moves, one hash of the tenant (and session).
//! - **Metrics**: each node counts, per rollout and version, requests, 5xx responses,
//!   traps, deadline hits and latency ([`VersionCounters`], atomics), and every
//!   [`TICK`] writes its cumulative counts to the store; the leader sums every node's,
//!   ticks each active rollout with them and writes what changed. Every decision it
//!   makes is an admin event (`rollout.<action>`, the measurement in its details). A
//!   node that restarts counts on from what it last published.
//! - **Promotion** moves the route's deployment to the candidate in the same
//!   transaction as the rollout, and records the version it replaced, so
//!   `POST /v1/deployments/{route}/undo` can go back.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use runplane_audit::Outcome;
use runplane_rollout::analysis::LATENCY_BOUNDS_US;
use runplane_rollout::{Counters, Histogram, Mark, Phase, Rollout, Side};
use serde::{Deserialize, Serialize};

use crate::control::{Deployment, StoredRollout};
use crate::error::ApiError;
use crate::node::{ActiveDeployment, Node};

/// How often nodes publish their counters and the leader ticks every rollout.
pub const TICK: Duration = Duration::from_secs(1);
/// Previous deployments of a route kept for undo.
pub const UNDO_DEPTH: usize = 10;
/// The document kind of a route's previous deployments (newest last).
pub const PREVIOUS: &str = "deployment.previous";

/// One version's counts on this node, since this node started serving the rollout.
#[derive(Default)]
pub(crate) struct VersionCounters {
    requests: AtomicU64,
    errors: AtomicU64,
    traps: AtomicU64,
    deadlines: AtomicU64,
    latency: [AtomicU64; LATENCY_BOUNDS_US.len() + 1],
}

/// How an invocation ended, as a rollout's analysis counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ended {
    /// The capability answered with this status.
    Answered(u16),
    /// It trapped or broke a sandbox limit: its own failure.
    Trapped,
    /// Stopped at the deadline.
    Deadline,
    /// Refused before or without running for reasons not of its making (busy, quota):
    /// not counted.
    NotCounted,
}

impl Ended {
    pub(crate) fn of(e: &runplane_host::InvokeError) -> Ended {
        use runplane_host::InvokeError as E;
        match e {
            E::Deadline { .. } => Ended::Deadline,
            E::Busy(_) | E::QuotaExceeded(_) => Ended::NotCounted,
            _ => Ended::Trapped,
        }
    }
}

impl VersionCounters {
    pub(crate) fn record(&self, ended: Ended, elapsed: Duration) {
        match ended {
            Ended::NotCounted => return,
            Ended::Answered(s) if s >= 500 => self.errors.fetch_add(1, Ordering::Relaxed),
            Ended::Answered(_) => 0,
            Ended::Trapped => self.traps.fetch_add(1, Ordering::Relaxed),
            Ended::Deadline => self.deadlines.fetch_add(1, Ordering::Relaxed),
        };
        self.requests.fetch_add(1, Ordering::Relaxed);
        let micros = elapsed.as_micros() as u64;
        let i = LATENCY_BOUNDS_US.iter().position(|b| micros <= *b).unwrap_or(LATENCY_BOUNDS_US.len());
        self.latency[i].fetch_add(1, Ordering::Relaxed);
    }

    /// Counters that go on from `c` (what this node published before it restarted).
    fn from_published(c: &Counters) -> VersionCounters {
        let v = VersionCounters::default();
        v.requests.store(c.requests, Ordering::Relaxed);
        v.errors.store(c.errors, Ordering::Relaxed);
        v.traps.store(c.traps, Ordering::Relaxed);
        v.deadlines.store(c.deadlines, Ordering::Relaxed);
        for (slot, n) in v.latency.iter().zip(&c.latency.buckets) {
            slot.store(*n, Ordering::Relaxed);
        }
        v
    }

    fn snapshot(&self) -> Counters {
        Counters {
            requests: self.requests.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            traps: self.traps.load(Ordering::Relaxed),
            deadlines: self.deadlines.load(Ordering::Relaxed),
            latency: Histogram { buckets: self.latency.iter().map(|b| b.load(Ordering::Relaxed)).collect() },
        }
    }
}

/// Both versions' counters of one rollout on this node.
#[derive(Default)]
pub(crate) struct PerVersion {
    pub(crate) stable: VersionCounters,
    pub(crate) candidate: VersionCounters,
}

impl PerVersion {
    pub(crate) fn of(&self, side: Side) -> &VersionCounters {
        match side {
            Side::Stable => &self.stable,
            Side::Candidate => &self.candidate,
        }
    }
}

/// What a node publishes for a rollout: its cumulative counts.
#[derive(Serialize, Deserialize, Default)]
struct Published {
    stable: Counters,
    candidate: Counters,
}

/// A rollout this node routes by.
pub(crate) struct Live {
    pub(crate) rollout: Rollout,
    pub(crate) candidate: Arc<ActiveDeployment>,
    pub(crate) counters: Arc<PerVersion>,
}

/// The node's live rollouts by route, and their counters by rollout id.
#[derive(Default)]
pub(crate) struct Rollouts {
    live: RwLock<HashMap<String, Arc<Live>>>,
    counters: Mutex<HashMap<String, Arc<PerVersion>>>,
}

/// Where a request goes: the deployment that serves it and, while a rollout moves,
/// the counters to record its outcome in.
pub(crate) struct Serving {
    pub(crate) deployment: Arc<ActiveDeployment>,
    pub(crate) counted: Option<(Arc<PerVersion>, Side)>,
}

impl Serving {
    pub(crate) fn record(&self, ended: Ended, elapsed: Duration) {
        if let Some((c, side)) = &self.counted {
            c.of(*side).record(ended, elapsed);
        }
    }
}

/// The rollout's state as stored.
pub(crate) fn stored(r: &Rollout, at: &str) -> Result<StoredRollout, ApiError> {
    let body = serde_json::to_string(r).map_err(|e| ApiError::internal(format!("a rollout could not be written as JSON: {e}")))?;
    Ok(StoredRollout { rollout_id: r.rollout_id.clone(), route: r.route.clone(), revision: r.revision, active: r.is_active(), body, updated_at: at.to_owned() })
}

/// The rollout a stored row holds.
pub(crate) fn parse(row: &StoredRollout) -> Result<Rollout, ApiError> {
    serde_json::from_str(&row.body).map_err(|e| ApiError::unavailable(format!("control store: rollout {} is unreadable ({e}); restore the control store from a backup", row.rollout_id)))
}

impl Node {
    /// Which version serves `tenant` on `route` (whose stable deployment is `stable`).
    pub(crate) fn serving(&self, route: &str, stable: Arc<ActiveDeployment>, tenant: &str, session: Option<&str>) -> Serving {
        let live = self.rollouts.live.read().unwrap_or_else(|p| p.into_inner()).get(route).cloned();
        let Some(live) = live else { return Serving { deployment: stable, counted: None } };
        // A deployment changed under the rollout (it would not start so): stable wins.
        if live.rollout.stable.digest != stable.capability.digest && live.rollout.candidate.digest != stable.capability.digest {
            return Serving { deployment: stable, counted: None };
        }
        match live.rollout.choose_on(&self.config.node_id, tenant, session) {
            Side::Candidate => Serving { deployment: live.candidate.clone(), counted: Some((live.counters.clone(), Side::Candidate)) },
            Side::Stable => Serving { deployment: stable, counted: Some((live.counters.clone(), Side::Stable)) },
        }
    }

    /// The live rollout of `route`, if one moves.
    pub(crate) fn live_rollout(&self, route: &str) -> Option<Arc<Live>> {
        self.rollouts.live.read().unwrap_or_else(|p| p.into_inner()).get(route).cloned()
    }

    /// Makes the live rollouts what the store says (the candidates compiled first).
    pub(crate) async fn reload_rollouts(self: &Arc<Self>) -> Result<(), ApiError> {
        let active = self.control.active_rollouts().await?;
        let mut next = HashMap::new();
        for row in &active {
            let rollout = parse(row)?;
            let known = self.rollouts.counters.lock().unwrap_or_else(|p| p.into_inner()).get(&rollout.rollout_id).cloned();
            let counters = match known {
                Some(c) => c,
                None => {
                    let seeded = Arc::new(self.published_counters(&rollout.rollout_id).await);
                    self.rollouts.counters.lock().unwrap_or_else(|p| p.into_inner()).entry(rollout.rollout_id.clone()).or_insert(seeded).clone()
                }
            };
            let candidate = match self.live_rollout(&rollout.route) {
                Some(l) if l.candidate.capability.digest == rollout.candidate.digest => l.candidate.clone(),
                _ => self.compile_candidate(&rollout).await?,
            };
            next.insert(rollout.route.clone(), Arc::new(Live { rollout, candidate, counters }));
        }
        for (route, live) in &next {
            crate::metrics::rollout_gauges(&self.metrics, route, &live.rollout);
        }
        let gone: Vec<Arc<Live>> = {
            let mut map = self.rollouts.live.write().unwrap_or_else(|p| p.into_inner());
            let gone = map.iter().filter(|(route, l)| next.get(*route).is_none_or(|n| n.rollout.rollout_id != l.rollout.rollout_id)).map(|(_, l)| l.clone()).collect();
            *map = next;
            gone
        };
        for l in gone {
            self.rollouts.counters.lock().unwrap_or_else(|p| p.into_inner()).remove(&l.rollout.rollout_id);
            // Its gauges show how it ended.
            if let Ok(Some(row)) = self.control.rollout(&l.rollout.rollout_id).await
                && let Ok(r) = parse(&row)
            {
                crate::metrics::rollout_gauges(&self.metrics, &r.route, &r);
            }
        }
        Ok(())
    }

    /// This node's counters of a rollout as it last published them: a node that
    /// restarts mid-rollout counts on from there (losing at most a [`TICK`]'s worth)
    /// instead of from zero, which would shrink the instance's sum under the analysis.
    async fn published_counters(&self, rollout_id: &str) -> PerVersion {
        let rows = match self.control.rollout_metrics(rollout_id).await {
            Ok(rows) => rows,
            Err(e) => {
                tracing::warn!(rollout_id, error = %e, "could not read this node's earlier rollout counters; counting from zero");
                return PerVersion::default();
            }
        };
        match rows.into_iter().find(|(node, _)| *node == self.config.node_id).map(|(_, body)| serde_json::from_str::<Published>(&body)) {
            Some(Ok(p)) => PerVersion { stable: VersionCounters::from_published(&p.stable), candidate: VersionCounters::from_published(&p.candidate) },
            Some(Err(e)) => {
                tracing::warn!(rollout_id, error = %e, "this node's earlier rollout counters are unreadable; counting from zero");
                PerVersion::default()
            }
            None => PerVersion::default(),
        }
    }

    /// The candidate of `rollout` as a deployment ready to serve (compiled, cached).
    pub(crate) async fn compile_candidate(&self, rollout: &Rollout) -> Result<Arc<ActiveDeployment>, ApiError> {
        let stable = self.deployment(&rollout.route).map(|d| d.deployment.clone());
        let base = stable.unwrap_or_else(|| Deployment {
            route: rollout.route.clone(),
            capability: rollout.candidate.capability.clone(),
            version: rollout.candidate.version.clone(),
            digest: rollout.candidate.digest.clone(),
            allow_hosts: vec![],
            subscriptions: vec![],
            flag: None,
            created_at: String::new(),
        });
        let d = Deployment { capability: rollout.candidate.capability.clone(), version: rollout.candidate.version.clone(), digest: rollout.candidate.digest.clone(), ..base };
        let bytes = self.control.component(&d.digest).await?;
        let capability = self.host.load(&rollout.candidate.label(), &d.digest, &bytes).await?;
        Ok(Arc::new(ActiveDeployment { allow: runplane_host::AllowList::new(d.allow_hosts.clone()), capability, deployment: d }))
    }

    /// The instance's counters of a rollout now: every node's, summed.
    pub(crate) async fn rollout_counters(&self, rollout_id: &str, now_ms: u64) -> Result<Mark, ApiError> {
        let mut mark = Mark { at_ms: now_ms, ..Mark::default() };
        for (node, body) in self.control.rollout_metrics(rollout_id).await? {
            match serde_json::from_str::<Published>(&body) {
                Ok(p) => {
                    mark.stable.add(&p.stable);
                    mark.candidate.add(&p.candidate);
                }
                Err(e) => tracing::warn!(rollout_id, node, error = %e, "unreadable rollout counters from a node; left out"),
            }
        }
        Ok(mark)
    }

    pub(crate) fn now_ms(&self) -> u64 {
        (self.now() / 1_000_000) as u64
    }

    /// Writes `next` over the stored rollout at `expected`, with the route's deployment
    /// moved to the candidate if it was promoted; then audits every decision after
    /// `expected` (outside an admin request; inside one, the gate's event carries them)
    /// and applies it here. `Ok(false)`: someone else changed it first.
    pub(crate) async fn commit_rollout(self: &Arc<Self>, next: &Rollout, expected: u64, actor: &str) -> Result<bool, ApiError> {
        let at = runplane_audit::rfc3339_utc(self.now());
        let promoted = next.phase == Phase::Promoted;
        let deployment = if promoted { Some(self.promoted_deployment(next, &at)?) } else { None };
        if !self.control.update_rollout(&stored(next, &at)?, expected, deployment.as_ref()).await? {
            return Ok(false);
        }
        self.audit_decisions(next, expected, actor).await?;
        self.apply_rollout_change(deployment).await?;
        // A release group goes back together.
        if let (runplane_rollout::Phase::Aborted, Some(group)) = (next.phase, &next.group) {
            let why = next.abort_reason.clone().unwrap_or_default();
            self.abort_group(group, Some(&next.rollout_id), &next.route, &why).await?;
        }
        Ok(true)
    }

    /// Aborts every moving member of release group `group` but `except`, because
    /// member `route` was aborted (`why`); each is an admin event by the controller.
    pub(crate) async fn abort_group(self: &Arc<Self>, group: &str, except: Option<&str>, route: &str, why: &str) -> Result<(), ApiError> {
        for row in self.control.active_rollouts().await? {
            let mut r = parse(&row)?;
            if r.group.as_deref() != Some(group) || Some(r.rollout_id.as_str()) == except {
                continue;
            }
            let expected = r.revision;
            if !r.abort_with_group(self.now_ms(), route, why) {
                continue;
            }
            let at = runplane_audit::rfc3339_utc(self.now());
            if self.control.update_rollout(&stored(&r, &at)?, expected, None).await? {
                for d in r.history.iter().filter(|d| d.revision > expected) {
                    let mut ev = self.event("rollout-controller", None, &format!("rollout.{}", d.action), &r.rollout_id, Outcome::ok(None));
                    ev.details.insert("route".into(), r.route.clone().into());
                    ev.details.insert("group".into(), group.into());
                    ev.details.insert("decision".into(), serde_json::to_value(d).unwrap_or_default());
                    self.append(runplane_audit::LogId::admin(), ev).await?;
                }
            }
        }
        self.reload_rollouts().await
    }

    /// The deployment a promotion leaves on the route (the one it replaces is kept for
    /// undo once the promotion is stored: [`Node::apply_rollout_change`]).
    pub(crate) fn promoted_deployment(&self, r: &Rollout, at: &str) -> Result<Deployment, ApiError> {
        let current = self.deployment(&r.route).map(|d| d.deployment.clone()).ok_or_else(|| ApiError::conflict(format!("route {} has no deployment to promote over", r.route)))?;
        Ok(Deployment { capability: r.candidate.capability.clone(), version: r.candidate.version.clone(), digest: r.candidate.digest.clone(), created_at: at.to_owned(), ..current })
    }

    /// Keeps `d` as the route's previous deployment (for undo), at most [`UNDO_DEPTH`].
    pub(crate) async fn remember_previous(&self, d: &Deployment, at: &str) -> Result<(), ApiError> {
        let mut previous = self.previous_deployments(&d.route).await?;
        if previous.last().is_some_and(|p| p.digest == d.digest) {
            return Ok(());
        }
        previous.push(d.clone());
        let extra = previous.len().saturating_sub(UNDO_DEPTH);
        previous.drain(..extra);
        let body = serde_json::to_string(&previous).map_err(|e| ApiError::internal(e.to_string()))?;
        self.control.put_document(PREVIOUS, &d.route, &body, at).await?;
        Ok(())
    }

    pub(crate) async fn previous_deployments(&self, route: &str) -> Result<Vec<Deployment>, ApiError> {
        let docs = self.control.documents(PREVIOUS).await?;
        match docs.into_iter().find(|(id, _)| id == route) {
            None => Ok(Vec::new()),
            Some((_, body)) => serde_json::from_str(&body).map_err(|e| ApiError::unavailable(format!("control store: the previous deployments of {route} are unreadable ({e})"))),
        }
    }

    /// Applies a committed change here at once (the feed brings it to the others); a
    /// promotion's replaced deployment is kept for undo.
    pub(crate) async fn apply_rollout_change(self: &Arc<Self>, deployment: Option<Deployment>) -> Result<(), ApiError> {
        if let Some(d) = deployment {
            if let Some(replaced) = self.deployment(&d.route) {
                self.remember_previous(&replaced.deployment, &d.created_at).await?;
            }
            self.activate(d).await?;
        }
        self.reload_rollouts().await
    }

    /// An admin event for each decision of `r` after revision `after`.
    pub(crate) async fn audit_decisions(&self, r: &Rollout, after: u64, actor: &str) -> Result<(), ApiError> {
        if crate::api::gate::in_admin_request() {
            let decisions: Vec<_> = r.history.iter().filter(|d| d.revision > after).cloned().collect();
            crate::api::gate::annotate(|rec| {
                rec.details.insert("decisions".into(), serde_json::to_value(&decisions).unwrap_or_default());
                rec.details.insert("phase".into(), r.phase.as_str().into());
            });
            return Ok(());
        }
        for d in r.history.iter().filter(|d| d.revision > after) {
            let mut ev = self.event(actor, None, &format!("rollout.{}", d.action), &r.rollout_id, Outcome::ok(None));
            ev.details.insert("route".into(), r.route.clone().into());
            ev.details.insert("decision".into(), serde_json::to_value(d).unwrap_or_default());
            ev.capability_digest = Some(r.candidate.digest.clone());
            self.append(runplane_audit::LogId::admin(), ev).await?;
        }
        Ok(())
    }
}

/// Every node: publishes its counters each [`TICK`]; the leader also ticks every
/// active rollout.
pub(crate) fn spawn(node: Arc<Node>) {
    tokio::spawn(async move {
        let stopped = node.drain.stopped();
        let mut stopped = std::pin::pin!(stopped);
        let mut ticks = 0u64;
        loop {
            tokio::select! {
                _ = &mut stopped => return,
                _ = tokio::time::sleep(TICK) => {}
            }
            if let Err(e) = publish(&node).await {
                tracing::warn!(error = %e.message, "could not publish rollout counters; the analysis misses this node's until it can");
            }
            // The live map follows the store: with no rollout moving, nothing to read.
            let moving = !node.rollouts.live.read().unwrap_or_else(|p| p.into_inner()).is_empty();
            if node.leader_epoch().is_some() {
                if moving {
                    control(&node).await;
                }
                ticks += 1;
                if ticks % 60 == 0
                    && let Err(e) = node.control.prune_rollout_metrics().await
                {
                    tracing::debug!(error = %e, "could not prune stopped rollouts' counters");
                }
            }
        }
    });
}

async fn publish(node: &Node) -> Result<(), ApiError> {
    let live: Vec<Arc<Live>> = node.rollouts.live.read().unwrap_or_else(|p| p.into_inner()).values().cloned().collect();
    for l in live {
        let p = Published { stable: l.counters.stable.snapshot(), candidate: l.counters.candidate.snapshot() };
        let body = serde_json::to_string(&p).map_err(|e| ApiError::internal(e.to_string()))?;
        node.control.put_rollout_metrics(&l.rollout.rollout_id, &node.config.node_id, &body, node.now_ms()).await?;
    }
    Ok(())
}

/// The leader's tick over every active rollout.
async fn control(node: &Arc<Node>) {
    let rows = match node.control.active_rollouts().await {
        Ok(rows) => rows,
        Err(e) => return tracing::warn!(error = %e, "rollout controller: cannot read the active rollouts"),
    };
    for row in rows {
        let Ok(mut r) = parse(&row) else { continue };
        let expected = r.revision;
        let now = node.now_ms();
        let mut counters = node.rollout_counters(&r.rollout_id, now).await.map_err(|e| e.message);
        if let Ok(mark) = &mut counters {
            mark.external = ask_due(node, &r, now).await;
        }
        if !r.tick(now, counters.as_ref().map_err(Clone::clone)) {
            continue;
        }
        match node.commit_rollout(&r, expected, "rollout-controller").await {
            Ok(true) => tracing::info!(rollout_id = %r.rollout_id, route = %r.route, phase = r.phase.as_str(), weight = r.weight.percent(), "rollout moved"),
            Ok(false) => tracing::debug!(rollout_id = %r.rollout_id, "rollout changed meanwhile; next tick"),
            Err(e) => tracing::warn!(rollout_id = %r.rollout_id, error = %e.message, "rollout controller: could not store the rollout's change"),
        }
    }
}

/// Asks the Prometheus server every query `r` measures at `now_ms`, at once.
async fn ask_due(node: &Node, r: &Rollout, now_ms: u64) -> Vec<runplane_rollout::QueryValue> {
    let due = r.queries_due(now_ms);
    if due.is_empty() {
        return Vec::new();
    }
    match &node.prometheus {
        Some(p) => futures::future::join_all(due.iter().map(|q| p.ask(q))).await,
        None => due
            .into_iter()
            .map(|query| runplane_rollout::QueryValue {
                query,
                value: None,
                error: Some("this node has no Prometheus server to ask: set [rollouts] prometheus_url on every node".into()),
            })
            .collect(),
    }
}
