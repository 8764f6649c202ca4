//! Graceful drain (spec §13, issue 17 item 7): how a node leaves without failing a
//! request.
//!
//! [`RunningNode::drain`](crate::node::RunningNode::drain), on SIGTERM or Ctrl-C:
//! 1. `/readyz` answers 503 `draining` at once (a load balancer or Kubernetes stops
//!    sending new traffic); everything else is still served;
//! 2. after `[node] drain_delay_ms` (time for the load balancer to notice) the node
//!    stops accepting connections, closes idle keep-alive connections and lets each
//!    in-flight request finish (an invocation ends by its deadline at the latest);
//! 3. once every connection has closed, or the longest invocation deadline plus
//!    [`GRACE`] has passed, the process exits 0.
//!
//! `runplane operate drain-node NODE` (`POST /v1/cluster/nodes/{id}/drain`) records
//! `draining` for the node in the membership table; the node sees it at its next
//! heartbeat and drains the same way. At the end the node deregisters (`gone`) and
//! gives up the leader lease if it held it.
//!
//! `/livez` never depends on this or on any backend: it says the process answers.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::watch;

/// Added to the sandbox deadline: the longest a drain waits for in-flight requests
/// after it stopped accepting (writing the answer and the audit commit come after the
/// invocation's deadline).
pub const GRACE: Duration = Duration::from_secs(2);

/// Whether the node is draining, and the signal that stops its listener.
pub struct Drain {
    draining: AtomicBool,
    stop: watch::Sender<bool>,
    /// An operator asked for a drain (`runplane operate drain-node`).
    requested: tokio::sync::Notify,
}

impl Default for Drain {
    fn default() -> Self {
        Drain { draining: AtomicBool::new(false), stop: watch::channel(false).0, requested: tokio::sync::Notify::new() }
    }
}

impl Drain {
    /// Whether a drain has begun (`/readyz` answers 503).
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Asks the process to drain as it would on SIGTERM (what [`Drain::requested`]
    /// waits for).
    pub(crate) fn request(&self) {
        self.requested.notify_one();
    }

    /// Resolves once an operator asked this node to drain.
    pub async fn requested(&self) {
        self.requested.notified().await
    }

    pub(crate) fn begin(&self) {
        self.draining.store(true, Ordering::Release);
    }

    /// Tells the listener to stop accepting and the connections to close once idle.
    pub(crate) fn stop_accepting(&self) {
        self.stop.send_replace(true);
    }

    /// Whether the listener was told to stop (the node is on its way out).
    pub(crate) fn is_stopped(&self) -> bool {
        *self.stop.borrow()
    }

    /// Resolves once [`Drain::stop_accepting`] has been called.
    pub(crate) fn stopped(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut rx = self.stop.subscribe();
        async move {
            // An error means the sender is gone, i.e. the node itself: stop too.
            let _ = rx.wait_for(|stop| *stop).await;
        }
    }
}

/// How a drain ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DrainOutcome {
    /// Every connection closed on its own.
    Finished,
    /// Connections were still open when the wait ran out; they are dropped.
    TimedOut,
}
