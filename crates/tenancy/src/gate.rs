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
        let waiting = {
            let mut inner = self.lock();
            if inner.running < self.capacity && inner.queue.can_start_now(flow, limits) {
                inner.queue.start_now(flow, limits, cost);
                inner.running += 1;
                None
            } else {
                let (tx, rx) = oneshot::channel();
                inner.queue.push(flow, limits, cost, tx).map_err(|(full, _)| full)?;
                // Places may be free for this flow while others wait at their own bounds.
                self.dispatch(&mut inner);
                Some(rx)
            }
        };
        let pass = Pass { gate: self.clone(), flow: flow.to_owned() };
        match waiting {
            None => Ok(pass),
            Some(rx) => {
                // Until the place is granted the pass is not ours: build it only after.
                let granted = WaitGuard { gate: self, flow, rx: Some(rx) };
                granted.wait().await;
                Ok(pass)
            }
        }
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

/// Waits for the grant; if dropped first, returns a grant that arrived meanwhile and
/// drops the queued entry, so a cancelled waiter never holds a place.
struct WaitGuard<'a> {
    gate: &'a FairGate,
    flow: &'a str,
    rx: Option<oneshot::Receiver<()>>,
}

impl WaitGuard<'_> {
    async fn wait(mut self) {
        if let Some(rx) = self.rx.as_mut() {
            // The sender is dropped only by `dispatch` after sending, or by `retain`
            // once this receiver is closed: while we wait, it ends in a grant.
            let _ = rx.await;
        }
        self.rx = None;
    }
}

impl Drop for WaitGuard<'_> {
    fn drop(&mut self) {
        let Some(mut rx) = self.rx.take() else { return };
        rx.close();
        if rx.try_recv().is_ok() {
            // Granted between the last poll and now: the place is ours, give it back.
            self.gate.release(self.flow);
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
