//! Following a shared control store (see `runplane_control::feed`): a loop that reads
//! the change feed — woken by a PostgreSQL notification, or by the poll every
//! `[control] poll_ms` — and reloads the caches the changes touched, so every lookup
//! on the request path stays in memory. [`Freshness`] says whether the node may act on
//! those caches: a node that has not confirmed it is current for `[control]
//! max_staleness_ms` refuses tenant and admin traffic with 503 rather than serve a
//! revoked key or a suspended tenant.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use runplane_control::feed::{Family, Follower, MAX_BACKLOG, Step};
use runplane_control::{Hint, Hints};

use crate::error::ApiError;
use crate::node::Node;

/// When the node last confirmed its caches were current. On the embedded store the
/// node is the only writer and always current.
pub(crate) struct Freshness {
    shared: bool,
    max: Duration,
    base: Instant,
    /// Nanoseconds after `base` of the last confirmation, plus one (0: never).
    confirmed: AtomicU64,
    revision: AtomicU64,
    last_error: Mutex<Option<String>>,
}

impl Freshness {
    pub(crate) fn new(shared: bool, max: Duration) -> Freshness {
        Freshness { shared, max, base: Instant::now(), confirmed: AtomicU64::new(0), revision: AtomicU64::new(0), last_error: Mutex::new(None) }
    }

    /// Records that the caches held everything committed as of `at`, through `revision`.
    fn confirm(&self, at: Instant, revision: u64) {
        let nanos = at.saturating_duration_since(self.base).as_nanos() as u64 + 1;
        self.confirmed.fetch_max(nanos, Ordering::AcqRel);
        self.revision.store(revision, Ordering::Release);
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    fn failed(&self, why: String) {
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(why);
    }

    fn confirmed_at(&self) -> Option<Instant> {
        match self.confirmed.load(Ordering::Acquire) {
            0 => None,
            n => Some(self.base + Duration::from_nanos(n - 1)),
        }
    }

    /// The revision the caches hold.
    pub(crate) fn revision(&self) -> u64 {
        self.revision.load(Ordering::Acquire)
    }

    /// Ok while the node may act on its caches; else the 503 that says why.
    pub(crate) fn check(&self) -> Result<(), ApiError> {
        if !self.shared {
            return Ok(());
        }
        runplane_control::feed::staleness(self.confirmed_at(), Instant::now(), self.max).map_err(|age| {
            let why = self.last_error.lock().unwrap_or_else(|p| p.into_inner()).clone().unwrap_or_else(|| "it has not caught up yet".into());
            ApiError::unavailable(format!(
                "this node cannot vouch for its control state: it last confirmed it was current {} ms ago, more than [control] max_staleness_ms = {} ({why}); retry on another node",
                age.as_millis(),
                self.max.as_millis()
            ))
        })
    }
}

/// Starts following the store from `head` (what the node loaded at start).
pub(crate) fn spawn(node: Arc<Node>, head: u64, loaded_at: Instant) {
    node.freshness.confirm(loaded_at, head);
    if !node.control.is_shared() {
        return;
    }
    tokio::spawn(async move {
        let mut follower = Follower::at(head);
        let poll = node.config.control.poll;
        let mut hints: Option<Hints> = None;
        let mut resync = false;
        loop {
            if hints.is_none() && node.config.control.notify {
                // Bounded: on a network that swallows packets the connect would hang, and
                // the poll below must still run.
                let listening = tokio::time::timeout(node.config.backend_timeout, node.control.hints()).await;
                match listening.unwrap_or_else(|_| Err(runplane_control::ControlError::Unavailable("connecting the listener timed out".into()))) {
                    Ok(h) => {
                        // Listening began after the last read: anything before it is
                        // in the feed, anything after it will be notified.
                        resync |= h.is_some();
                        hints = h;
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot listen for control-store notifications; polling every {} ms", poll.as_millis()),
                }
            }
            if !resync {
                match wait(&mut hints, poll).await {
                    Wake::Poll | Wake::Hint => {}
                    Wake::Lost => {
                        tracing::info!("the control-store notification listener lost its connection; resyncing in full");
                        resync = true;
                    }
                }
            }
            let started = Instant::now();
            match catch_up(&node, &mut follower, resync).await {
                Ok(()) => {
                    resync = false;
                    node.freshness.confirm(started, follower.watermark());
                }
                Err(e) => {
                    tracing::warn!(error = %e.message, "cannot read the control store's change feed; this node goes stale after [control] max_staleness_ms");
                    node.freshness.failed(e.message);
                    tokio::time::sleep(poll).await;
                }
            }
        }
    });
}

enum Wake {
    Poll,
    Hint,
    Lost,
}

async fn wait(hints: &mut Option<Hints>, poll: Duration) -> Wake {
    let Some(h) = hints else {
        tokio::time::sleep(poll).await;
        return Wake::Poll;
    };
    tokio::select! {
        _ = tokio::time::sleep(poll) => Wake::Poll,
        hint = h.next() => match hint {
            Ok(Hint::Changed(_)) => Wake::Hint,
            Ok(Hint::Lost) => Wake::Lost,
            Err(e) => {
                tracing::warn!(error = %e, "the control-store notification listener failed; polling until it is back");
                *hints = None;
                Wake::Lost
            }
        },
    }
}

/// Reads the head and the changes after the watermark and applies them.
async fn catch_up(node: &Arc<Node>, follower: &mut Follower, resync: bool) -> Result<(), ApiError> {
    let head = node.control.head().await?;
    let w = follower.watermark();
    let step = if resync {
        Step::Resync { head, why: "the notification listener (re)connected".into() }
    } else {
        let changes = if head > w && head - w <= MAX_BACKLOG { node.control.changes(w, head).await? } else { Vec::new() };
        follower.plan(head, &changes)
    };
    match step {
        Step::Current => {}
        Step::Apply { reload, through } => {
            node.reload(&reload).await?;
            follower.advance(through);
        }
        Step::Resync { head, why } => {
            tracing::info!(%why, head, "reloading all control state");
            node.reload(&Family::ALL.into_iter().collect()).await?;
            follower.reset(head);
        }
    }
    Ok(())
}

impl Node {
    /// Reloads the cached families from the store.
    pub(crate) async fn reload(self: &Arc<Self>, families: &BTreeSet<Family>) -> Result<(), ApiError> {
        if families.contains(&Family::Tenants) || families.contains(&Family::Keys) {
            // Deleting a tenant deletes its keys (in the same transaction).
            let tenants = self.control.tenants().await?;
            let keys = self.control.keys().await?;
            *self.tenants.write().unwrap_or_else(|p| p.into_inner()) = tenants.into_iter().map(|t| (t.id.clone(), t)).collect();
            self.keys.replace_all(keys);
        }
        if families.contains(&Family::Quotas) || families.contains(&Family::Tenants) {
            self.quotas.reload(&|| self.now_secs(), |id| self.tenant(id).map(|t| crate::quotas::tier_of(&t)).unwrap_or(runplane_tenancy::Tier::Free)).await?;
        }
        if families.contains(&Family::Documents) {
            self.controlplane.reload().await?;
            // The instance CA's authorities and revocations are documents too.
            crate::ca::refresh(self).await;
        }
        if families.contains(&Family::Config) {
            self.config_sets.reload(&self.control.config_versions().await?)?;
        }
        if families.contains(&Family::Contracts) {
            crate::api::tenancy::load_contracts(self).await?;
        }
        if families.contains(&Family::Deployments) {
            self.reload_deployments().await?;
        }
        if families.contains(&Family::Rollouts) || families.contains(&Family::Deployments) {
            self.reload_rollouts().await?;
        }
        Ok(())
    }

    /// Makes the live routes what the store says: new or changed deployments are
    /// compiled and activated, removed ones taken out of service.
    async fn reload_deployments(self: &Arc<Self>) -> Result<(), ApiError> {
        let stored = self.control.deployments().await?;
        let live: Vec<String> = self.deployments.read().unwrap_or_else(|p| p.into_inner()).keys().cloned().collect();
        for route in live {
            if !stored.iter().any(|d| d.route == route) {
                self.deactivate(&route).await;
                tracing::info!(%route, "deployment removed on another node: route taken out of service");
            }
        }
        for d in stored {
            if self.deployment(&d.route).is_some_and(|a| a.deployment == d) {
                continue;
            }
            let route = d.route.clone();
            match self.activate(d).await {
                Ok(()) => tracing::info!(%route, "deployment changed on another node: now live here"),
                Err(e) => tracing::error!(%route, error = %e, "a deployment made on another node cannot be activated here"),
            }
        }
        Ok(())
    }
}
