//! The node as one of an instance's nodes: its membership heartbeat (and the remote
//! drain it carries) and the leader lease for once-per-instance work
//! (`runplane_control::lease`). Both run on every home; on the embedded store the one
//! node is the only member and always wins the lease.
//!
//! What runs only on the leader: resuming provisioning a crash interrupted, pruning
//! the change feed and idempotency keys past a day, and archiving journals past their
//! retention window.

use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use runplane_control::ClusterNode;
use runplane_control::lease::{Held, Outcome, renew_every};

use crate::node::Node;

/// The lease the leader holds.
pub const LEADER: &str = "leader";
/// Changes older than this leave the feed (a node further behind resyncs in full).
const FEED_RETENTION: Duration = Duration::from_secs(3600);

/// The leader lease as this node holds it, if it does.
#[derive(Default)]
pub(crate) struct Leadership {
    held: Mutex<Option<Held>>,
}

impl Leadership {
    /// The epoch this node may act under now, if it is the leader.
    pub(crate) fn epoch(&self) -> Option<u64> {
        let held = *self.held.lock().unwrap_or_else(|p| p.into_inner());
        held.filter(|h| h.may_act(Instant::now())).map(|h| h.epoch)
    }

    fn set(&self, held: Option<Held>) {
        *self.held.lock().unwrap_or_else(|p| p.into_inner()) = held;
    }

    fn take(&self) -> Option<Held> {
        self.held.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

impl Node {
    /// This node's membership row as of now.
    fn member(&self, started_at: &str) -> ClusterNode {
        ClusterNode {
            node_id: self.config.node_id.clone(),
            region: self.config.region.clone(),
            address: self.advertised.get().cloned().unwrap_or_default(),
            version: env!("CARGO_PKG_VERSION").into(),
            started_at: started_at.into(),
            last_heartbeat_ms: 0,
            state: if self.is_draining() { "draining" } else { "ready" }.into(),
            in_flight: self.metrics.in_flight.get().max(0) as u64,
        }
    }

    /// The epoch of the leader lease, if this node holds it now.
    pub(crate) fn leader_epoch(&self) -> Option<u64> {
        self.leadership.epoch()
    }

    /// Leaves the instance at the end of a drain: `gone` in membership, the lease
    /// handed back so another node takes over at once.
    pub(crate) async fn leave(&self) {
        if let Some(h) = self.leadership.take()
            && let Err(e) = self.control.release_lease(LEADER, &self.config.node_id, h.epoch).await
        {
            tracing::warn!(error = %e, "could not hand back the leader lease; another node takes it when it expires");
        }
        if let Err(e) = self.control.set_node_state(&self.config.node_id, "gone").await {
            tracing::warn!(error = %e, "could not deregister; the others mark this node gone when its heartbeat lapses");
        }
    }
}

/// Refuses to start beside a live node with the same `[node] id` elsewhere: the two
/// would share one membership row and one lease holder name, so both would believe
/// they led. (The same id at the same address is this node restarting.)
pub(crate) async fn refuse_a_live_namesake(node: &Node) -> anyhow::Result<()> {
    let me = &node.config.node_id;
    let here = node.advertised.get().cloned().unwrap_or_default();
    let nodes = node.control.nodes(node.config.control.node_ttl).await?;
    if let Some(other) = nodes.iter().find(|n| &n.node_id == me && n.state != "gone" && n.address != here) {
        anyhow::bail!(
            "node id {me:?} is in use by a live node at {} (last heartbeat {}); give every node its own [node] id, or wait [control] node_ttl_ms ({} ms) if that node has just stopped",
            other.address,
            crate::api::cluster::heartbeat_time(other),
            node.config.control.node_ttl.as_millis()
        );
    }
    Ok(())
}

/// Starts the heartbeat and the leader-lease loops. The first try for the lease is made
/// here, before the node serves: if this node becomes the leader, the provisioning it
/// resumes is what was unfinished at start, never a tenant being created right now.
pub(crate) async fn spawn(node: Arc<Node>) {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let started_at = runplane_audit::rfc3339_utc(now.as_nanos());
    let n = node.clone();
    tokio::spawn(async move { heartbeat(n, started_at).await });
    let held = term(&node, None).await;
    tokio::spawn(async move { lead(node, held).await });
}

async fn heartbeat(node: Arc<Node>, started_at: String) {
    let every = node.config.control.heartbeat;
    loop {
        if node.drain.is_stopped() {
            return;
        }
        // A drain an operator recorded reaches the node here.
        match node.control.node_state(&node.config.node_id).await {
            Ok(Some(state)) if state == "draining" && !node.is_draining() => {
                tracing::info!("an operator asked this node to drain");
                node.drain.request();
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "cannot read this node's membership row"),
        }
        if let Err(e) = node.control.heartbeat(&node.member(&started_at)).await {
            tracing::warn!(error = %e, "membership heartbeat failed; the other nodes mark this one gone after [control] node_ttl_ms");
        }
        if node.control.is_shared() {
            // Each node admits its share of a tenant's concurrency limit.
            match node.control.nodes(node.config.control.node_ttl).await {
                Ok(nodes) => node.quotas.set_nodes(nodes.iter().filter(|n| n.state == "ready").count() as u32),
                Err(e) => tracing::warn!(error = %e, "cannot count the instance's nodes"),
            }
        }
        tokio::time::sleep(every).await;
    }
}

async fn lead(node: Arc<Node>, mut held: Option<u64>) {
    let ttl = node.config.control.lease_ttl;
    loop {
        tokio::time::sleep(renew_every(ttl)).await;
        if node.drain.is_stopped() {
            return;
        }
        held = term(&node, held).await;
    }
}

/// One renewal (or acquisition) of the leader lease, and what the leader then does;
/// returns the epoch held afterwards.
async fn term(node: &Arc<Node>, held: Option<u64>) -> Option<u64> {
    let id = &node.config.node_id;
    match node.control.acquire_lease(LEADER, id, held, node.config.control.lease_ttl).await {
        Ok((Outcome::Holding { epoch, acquired }, h)) => {
            node.leadership.set(h);
            if acquired {
                tracing::info!(epoch, "this node is the leader");
                became_leader(node).await;
            }
            leader_tick(node, epoch).await;
            Some(epoch)
        }
        Ok((Outcome::HeldBy { holder, epoch }, _)) => {
            if held.is_some() {
                tracing::warn!(%holder, epoch, "lost the leader lease");
            }
            node.leadership.set(None);
            None
        }
        Err(e) => {
            // Without an answer the lease lapses by itself; Held::may_act stops this
            // node acting on it in time.
            tracing::warn!(error = %e, "cannot renew the leader lease");
            held
        }
    }
}

/// What a new leader does once.
async fn became_leader(node: &Arc<Node>) {
    let unfinished: Vec<String> =
        node.tenants.read().unwrap_or_else(|p| p.into_inner()).values().filter(|t| t.provisioning != "ready").map(|t| t.id.clone()).collect();
    for id in unfinished {
        let node = node.clone();
        tokio::spawn(async move {
            if let Err(e) = node.provision(&id).await {
                tracing::warn!(tenant = %id, error = %e.message, "provisioning is still failing; resume with POST /v1/tenants/{id}/provision");
            }
        });
    }
}

/// What the leader does at every renewal.
async fn leader_tick(node: &Node, epoch: u64) {
    match node.control.fenced_prune(LEADER, &node.config.node_id, epoch, FEED_RETENTION).await {
        Ok(0) => {}
        Ok(n) => tracing::debug!(pruned = n, "pruned the change feed"),
        Err(e) => tracing::warn!(error = %e, "could not prune the change feed"),
    }
    if let Err(e) = node.control.prune_idempotency(crate::api::idempotency::KEPT).await {
        tracing::warn!(error = %e, "could not prune old idempotency keys");
    }
    // Windows that began over 31 days ago are over for any quota worth having.
    let month_ago = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_secs().saturating_sub(31 * 86_400);
    if let Err(e) = node.control.prune_windows(month_ago).await {
        tracing::warn!(error = %e, "could not prune old quota windows");
    }
    match crate::ca::prune(node).await {
        Ok(0) => {}
        Ok(n) => tracing::debug!(pruned = n, "pruned the records of long-expired certificates"),
        Err(e) => tracing::warn!(error = %e.message, "could not prune the records of long-expired certificates"),
    }
}
