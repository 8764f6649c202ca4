//! [`FairGate`]: at most `capacity` holders at once, and waiters let in by start-time
//! fair queuing across flows. The admission scheduler and the CPU gate are each one.

use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::oneshot;

use crate::fair::{FairQueue, FlowLimits, QueueFull};

struct Inner {
    queue: FairQueue<oneshot::Sender<()>>,
    running: usize,
}

/// An async gate with a global capacity and weighted fair queuing between flows.
#[derive(Clone)]
pub struct FairGate {
    inner: Arc<Mutex<Inner>>,
    capacity: usize,
}

/// Holding one of the gate's places; dropping it lets the next waiter in.
pub struct Pass {
    gate: FairGate,
    flow: String,
}

impl std::fmt::Debug for Pass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pass").field("flow", &self.flow).finish()
    }
}

impl FairGate {
    pub fn new(capacity: usize) -> Self {
        FairGate { inner: Arc::new(Mutex::new(Inner { queue: FairQueue::new(), running: 0 })), capacity: capacity.max(1) }
    }

    /// Places in use now.
    pub fn running(&self) -> usize {
        self.lock().running
    }

    /// Waiters now, over all flows, and in one flow.
    pub fn queued(&self) -> usize {
        self.lock().queue.queued()
    }

    pub fn queued_in(&self, flow: &str) -> usize {
        self.lock().queue.queued_in(flow)
    }

    pub fn running_in(&self, flow: &str) -> u32 {
        self.lock().queue.running_in(flow)
    }

    /// Waits for a place for `flow`. Fails at once, without waiting, when the flow's
    /// queue is full. A caller that stops waiting (its future dropped) gives up its
    /// turn; no place is lost.
    pub async fn enter(&self, flow: &str, limits: FlowLimits, cost: u64) -> Result<Pass, QueueFull> {
        Ok(self.queue(flow, limits, cost)?.granted().await)
    }

    /// Takes a place for `flow` now if one is free, or a place in its queue: the
    /// caller is in line from this moment, and awaits [`Entry::granted`] (possibly on
    /// another thread or runtime) for the pass. Dropping the entry gives the place up.
    pub fn queue(&self, flow: &str, limits: FlowLimits, cost: u64) -> Result<Entry, QueueFull> {
        let mut inner = self.lock();
        let rx = if inner.running < self.capacity && inner.queue.can_start_now(flow, limits) {
            inner.queue.start_now(flow, limits, cost);
            inner.running += 1;
            None
        } else {
            let (tx, rx) = oneshot::channel();
            inner.queue.push(flow, limits, cost, tx).map_err(|(full, _)| full)?;
            // Places may be free for this flow while others wait at their own bounds.
            self.dispatch(&mut inner);
            Some(rx)
        };
        Ok(Entry { gate: self.clone(), flow: flow.to_owned(), rx, claimed: false })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding this lock leaves only counters, which stay consistent.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A place was freed: hand places to waiters while there are any.
    fn release(&self, flow: &str) {
        let mut inner = self.lock();
        inner.queue.done(flow);
        inner.running = inner.running.saturating_sub(1);
        self.dispatch(&mut inner);
    }

    fn dispatch(&self, inner: &mut Inner) {
        while inner.running < self.capacity {
            let Some(next) = inner.queue.pop() else { break };
            inner.running += 1;
            if next.item.send(()).is_err() {
                // The waiter went away between queueing and now.
                inner.queue.done(&next.flow);
                inner.running -= 1;
            }
        }
    }
}

/// A place in a [`FairGate`]'s line, taken by [`FairGate::queue`]. If dropped before
/// [`Entry::granted`] finishes, a grant that arrived meanwhile is given back and the
/// queued entry removed, so a cancelled waiter never holds a place.
pub struct Entry {
    gate: FairGate,
    flow: String,
    /// `None`: the place was free at once.
    rx: Option<oneshot::Receiver<()>>,
    /// The pass was handed out: the place is the pass's to give back.
    claimed: bool,
}

impl Entry {
    /// Waits until the place is granted.
    pub async fn granted(mut self) -> Pass {
        if let Some(rx) = self.rx.as_mut() {
            // The sender is dropped only by `dispatch` after sending, or by `retain`
            // once this receiver is closed: while we wait, it ends in a grant.
            let _ = rx.await;
        }
        self.rx = None;
        self.claimed = true;
        // Until the place is granted the pass is not ours: build it only now.
        Pass { gate: self.gate.clone(), flow: self.flow.clone() }
    }
}

impl Drop for Entry {
    fn drop(&mut self) {
        if self.claimed {
            return;
        }
        let Some(mut rx) = self.rx.take() else {
            // Granted at once and never claimed: give the place back.
            self.gate.release(&self.flow);
            return;
        };
        rx.close();
        if rx.try_recv().is_ok() {
            // Granted between the last poll and now: the place is ours, give it back.
            self.gate.release(&self.flow);
        } else {
            self.gate.lock().queue.retain(|tx| !tx.is_closed());
        }
    }
}

impl Drop for Pass {
    fn drop(&mut self) {
        self.gate.release(&self.flow);
    }
}
