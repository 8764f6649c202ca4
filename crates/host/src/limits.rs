//! What one invocation may use beyond the sandbox's fixed limits — the tenant's quota as
//! the node hands it down — and the two things enforcing it while the guest runs: the
//! quota [`Meter`] and the invocation's [`CpuTurn`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use runplane_tenancy::{Budget, Entry, FairGate, FlowLimits, Pass, Resource};

/// Per-invocation limits from the tenant's quota. `None` means the sandbox default;
/// a value above the sandbox's own limit is capped by it.
#[derive(Debug, Clone, Default)]
pub struct Limits {
    /// Linear-memory cap (the tenant's `max_memory_mb`).
    pub memory_bytes: Option<usize>,
    /// Fuel this invocation may burn (what is left of the tenant's CPU window).
    pub fuel: Option<u64>,
    /// The tenant's outbound-HTTP budget for the current window, drawn from as bytes
    /// move. `None`: not metered (replay serves responses from the journal).
    pub network: Option<Arc<Budget>>,
    /// The tenant's share of CPU turns (its tier's weight); 0 counts as 1.
    pub weight: u32,
}

/// A quota the invocation ran into. It ends the invocation with this error, whatever
/// the capability answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotaViolation {
    pub resource: Resource,
    pub message: String,
}

/// Trap payload: the invocation was stopped because it exceeded a quota.
#[derive(Debug, thiserror::Error)]
#[error("quota exceeded")]
pub(crate) struct QuotaStop;

/// Where the first quota violation of an invocation is kept; shared with the futures
/// the host functions create.
#[derive(Debug, Clone, Default)]
pub(crate) struct Meter {
    violation: Arc<Mutex<Option<QuotaViolation>>>,
}

impl Meter {
    pub(crate) fn violate(&self, resource: Resource, message: String) {
        let mut v = self.violation.lock().unwrap_or_else(|p| p.into_inner());
        if v.is_none() {
            *v = Some(QuotaViolation { resource, message });
        }
    }

    pub(crate) fn violation(&self) -> Option<QuotaViolation> {
        self.violation.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Traps the guest if a quota was exceeded (checked at every port call and tick).
    pub(crate) fn check(&self) -> wasmtime::Result<()> {
        if self.violation.lock().unwrap_or_else(|p| p.into_inner()).is_some() {
            return Err(wasmtime::Error::new(QuotaStop));
        }
        Ok(())
    }
}

/// The right to execute wasm on one of the node's CPU slots. Held while the guest
/// computes; given back at every epoch tick and around every port call, and taken
/// again through the host's [`FairGate`], so a tenant flooding the node with CPU-bound
/// work gets its weighted share of the slots and no more.
#[derive(Clone)]
pub(crate) struct CpuTurn {
    gate: FairGate,
    /// The slots CPU-bound guests may hold (`[sandbox] cpu_bound_slots`), when fewer
    /// than all: a CPU-bound guest passes it before it queues for a turn.
    bound: Option<FairGate>,
    held_bound: Arc<Mutex<Option<Pass>>>,
    flow: Arc<str>,
    weight: u32,
    held: Arc<Mutex<Option<Pass>>>,
    /// When the current turn began.
    since: Arc<Mutex<Option<std::time::Instant>>>,
    /// Whether a CPU-bound guest is demoted below the node's threads
    /// (`[sandbox] demote_cpu_bound`, where the platform allows it).
    demote: bool,
    /// Set once the guest has given a whole turn up at a tick: it is CPU-bound.
    cpu_bound: Arc<AtomicBool>,
}

impl CpuTurn {
    pub(crate) fn new(gate: FairGate, bound: Option<FairGate>, flow: &str, weight: u32, demote: bool) -> Self {
        CpuTurn {
            gate,
            bound,
            held_bound: Arc::default(),
            flow: flow.into(),
            weight: weight.max(1),
            held: Arc::default(),
            since: Arc::default(),
            demote,
            cpu_bound: Arc::default(),
        }
    }

    fn limits(&self) -> FlowLimits {
        // An unbounded queue never refuses.
        FlowLimits { weight: self.weight, max_running: u32::MAX, max_queued: usize::MAX }
    }

    /// Sets the calling sandbox thread's scheduling policy for this guest, which is
    /// about to execute on it: below the node's threads once the guest proved
    /// CPU-bound, normal before (threads run one guest after another).
    fn on_sandbox_thread(&self) {
        if self.demote {
            crate::threads::set_idle(self.cpu_bound.load(Ordering::Relaxed));
        }
    }

    pub(crate) async fn acquire(&self) {
        if let Some(bound) = self.bound.as_ref().filter(|_| self.cpu_bound.load(Ordering::Relaxed)) {
            let pass = match bound.queue(&self.flow, self.limits(), 1) {
                Ok(entry) => Some(entry.granted().await),
                Err(_) => None,
            };
            *self.held_bound.lock().unwrap_or_else(|p| p.into_inner()) = pass;
        }
        self.take(self.queue()).await;
    }

    /// Gets in line for a turn now; [`CpuTurn::take`] waits for it (anywhere).
    pub(crate) fn queue(&self) -> Option<Entry> {
        self.gate.queue(&self.flow, self.limits(), 1).ok()
    }

    /// Waits for the turn `entry` is in line for, and holds it. Called on the sandbox
    /// thread the guest then executes on, whose scheduling policy it sets.
    pub(crate) async fn take(&self, entry: Option<Entry>) {
        let pass = match entry {
            Some(e) => Some(e.granted().await),
            None => None,
        };
        *self.held.lock().unwrap_or_else(|p| p.into_inner()) = pass;
        *self.since.lock().unwrap_or_else(|p| p.into_inner()) = Some(std::time::Instant::now());
        self.on_sandbox_thread();
    }

    /// Whether the current turn is over: it has lasted [`crate::FIRST_TURN`] for a
    /// guest that never gave a turn up, one [`crate::EPOCH_TICK`] for a CPU-bound one. A
    /// tick arrives at any phase of a turn; counting from the turn's start means a
    /// short request is not sent back to the queue mid-way.
    pub(crate) fn used(&self) -> bool {
        let turn = if self.cpu_bound.load(Ordering::Relaxed) { crate::EPOCH_TICK } else { crate::FIRST_TURN };
        self.since.lock().unwrap_or_else(|p| p.into_inner()).is_none_or(|t| t.elapsed() >= turn)
    }

    /// Whether the guest has given a whole turn up (it is CPU-bound).
    pub(crate) fn is_cpu_bound(&self) -> bool {
        self.cpu_bound.load(Ordering::Relaxed)
    }

    pub(crate) fn release(&self) {
        let pass = self.held.lock().unwrap_or_else(|p| p.into_inner()).take();
        drop(pass);
        let bound = self.held_bound.lock().unwrap_or_else(|p| p.into_inner()).take();
        drop(bound);
    }

    /// Gives the turn back, lets other tasks on this thread run, and queues for the
    /// next turn.
    pub(crate) async fn yield_turn(self) {
        self.release();
        // It gave up a whole turn: CPU-bound from now on.
        self.cpu_bound.store(true, Ordering::Relaxed);
        crate::threads::yield_if_idle();
        tokio::task::yield_now().await;
        self.acquire().await;
    }
}

/// What every port call needs besides its arguments.
#[derive(Clone)]
pub(crate) struct PortIo {
    pub(crate) timeout: Duration,
    pub(crate) meter: Meter,
    pub(crate) cpu: CpuTurn,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn cpu_bound_guests_hold_no_more_than_their_slots_and_leave_the_rest_to_short_ones() {
        let (all, bound) = (FairGate::new(2), FairGate::new(1));
        let turn = |flow: &str| CpuTurn::new(all.clone(), Some(bound.clone()), flow, 1, false);
        let (first, second, short) = (turn("a"), turn("b"), turn("c"));
        for t in [&first, &second] {
            t.cpu_bound.store(true, Ordering::Relaxed);
        }
        let soon = Duration::from_millis(100);
        first.acquire().await;
        assert_eq!(all.running(), 1);
        // A second CPU-bound guest waits, though a turn is free...
        assert!(tokio::time::timeout(soon, second.acquire()).await.is_err(), "a second CPU-bound guest got the reserved turn");
        // ...which a short guest gets at once.
        tokio::time::timeout(soon, short.acquire()).await.expect("a short guest waited while a turn was free");
        assert_eq!(all.running(), 2);
        short.release();
        first.release();
        assert_eq!((all.running(), bound.running()), (0, 0), "a released turn is given back to both gates");
        tokio::time::timeout(soon, second.acquire()).await.expect("the CPU-bound turn was not passed on");
        second.release();
    }
}
