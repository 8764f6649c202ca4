//! Start-time fair queuing (Goyal, Vin and Cheng, 1996): the pure core of both the
//! admission scheduler and the CPU gate.
//!
//! Each flow (a tenant) has a weight. An item enqueued by a flow is tagged
//! `start = max(V, last finish of the flow)` and `finish = start + cost / weight`; the
//! queue always dispatches the eligible head with the smallest start tag (ties: the
//! earlier enqueued), and the virtual time `V` becomes that start tag. A flow that has
//! been idle re-enters at `V`, so it waits behind at most one item of each busy flow,
//! and over a long run each backlogged flow receives service in proportion to its
//! weight. Tags are integers, so the same pushes and pops give the same order on every
//! machine.

use std::collections::{BTreeMap, VecDeque};

/// Virtual-time units per unit of cost at weight 1.
const SCALE: u128 = 1 << 20;

/// Why an item was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueFull {
    /// The flow's queue bound.
    pub capacity: usize,
}

/// The per-flow parameters: its share and its bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowLimits {
    /// Relative share of service (≥ 1).
    pub weight: u32,
    /// Items of this flow that may be in service at once.
    pub max_running: u32,
    /// Items that may wait; one more is refused with [`QueueFull`].
    pub max_queued: usize,
}

#[derive(Debug)]
struct Entry<T> {
    start: u128,
    seq: u64,
    item: T,
}

#[derive(Debug)]
struct Flow<T> {
    limits: FlowLimits,
    last_finish: u128,
    running: u32,
    queue: VecDeque<Entry<T>>,
}

/// A tagged item handed out by [`FairQueue::pop`].
#[derive(Debug, PartialEq, Eq)]
pub struct Dispatched<T> {
    pub flow: String,
    pub start_tag: u128,
    pub item: T,
}

/// Start-time fair queue over named flows. Not thread-safe by itself: callers hold it
/// behind one lock (see [`crate::gate::FairGate`]).
#[derive(Debug)]
pub struct FairQueue<T> {
    flows: BTreeMap<String, Flow<T>>,
    virtual_time: u128,
    seq: u64,
    queued: usize,
}

impl<T> Default for FairQueue<T> {
    fn default() -> Self {
        FairQueue { flows: BTreeMap::new(), virtual_time: 0, seq: 0, queued: 0 }
    }
}

impl<T> FairQueue<T> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Items waiting, over all flows.
    pub fn queued(&self) -> usize {
        self.queued
    }

    /// Items waiting in one flow.
    pub fn queued_in(&self, flow: &str) -> usize {
        self.flows.get(flow).map_or(0, |f| f.queue.len())
    }

    /// Items of `flow` in service.
    pub fn running_in(&self, flow: &str) -> u32 {
        self.flows.get(flow).map_or(0, |f| f.running)
    }

    /// Whether `flow` could start an item at once: nothing of anyone is waiting (so no
    /// one is overtaken) and the flow is below its own concurrency bound.
    pub fn can_start_now(&self, flow: &str, limits: FlowLimits) -> bool {
        self.queued == 0 && self.running_in(flow) < limits.max_running.max(1)
    }

    /// Marks one item of `flow` as in service without queueing it (the fast path when
    /// [`FairQueue::can_start_now`] holds). It is tagged like a queued item, so a flow
    /// that always takes the fast path still accrues its share.
    pub fn start_now(&mut self, flow: &str, limits: FlowLimits, cost: u64) {
        let vt = self.virtual_time;
        let f = self.flow(flow, limits);
        let start = vt.max(f.last_finish);
        f.last_finish = start + tag_len(cost, limits.weight);
        f.running += 1;
        self.virtual_time = start;
    }

    /// Queues `item` for `flow`, tagging it. `limits` replace the flow's previous ones
    /// (a changed quota applies from the next item on).
    pub fn push(&mut self, flow: &str, limits: FlowLimits, cost: u64, item: T) -> Result<(), (QueueFull, T)> {
        let vt = self.virtual_time;
        let seq = self.seq;
        let f = self.flow(flow, limits);
        if f.queue.len() >= limits.max_queued {
            return Err((QueueFull { capacity: limits.max_queued }, item));
        }
        let start = vt.max(f.last_finish);
        f.last_finish = start + tag_len(cost, limits.weight);
        f.queue.push_back(Entry { start, seq, item });
        self.seq += 1;
        self.queued += 1;
        Ok(())
    }

    /// Takes the eligible head with the smallest start tag and counts it as running.
    pub fn pop(&mut self) -> Option<Dispatched<T>> {
        let (name, _) = self
            .flows
            .iter()
            .filter(|(_, f)| f.running < f.limits.max_running.max(1))
            .filter_map(|(name, f)| f.queue.front().map(|e| (name, (e.start, e.seq))))
            .min_by_key(|(_, key)| *key)?;
        let name = name.clone();
        let f = self.flows.get_mut(&name)?;
        let entry = f.queue.pop_front()?;
        f.running += 1;
        self.queued -= 1;
        self.virtual_time = self.virtual_time.max(entry.start);
        Some(Dispatched { flow: name, start_tag: entry.start, item: entry.item })
    }

    /// An item of `flow` left service. Idle flows with nothing queued are forgotten
    /// except for their finish tag, which `virtual_time` soon overtakes anyway.
    pub fn done(&mut self, flow: &str) {
        if let Some(f) = self.flows.get_mut(flow) {
            f.running = f.running.saturating_sub(1);
            if f.running == 0 && f.queue.is_empty() && f.last_finish <= self.virtual_time {
                self.flows.remove(flow);
            }
        }
    }

    /// Removes every queued item `keep` rejects (e.g. callers that went away).
    pub fn retain(&mut self, mut keep: impl FnMut(&T) -> bool) {
        let mut removed = 0;
        for f in self.flows.values_mut() {
            let before = f.queue.len();
            f.queue.retain(|e| keep(&e.item));
            removed += before - f.queue.len();
        }
        self.queued -= removed;
    }

    fn flow(&mut self, name: &str, limits: FlowLimits) -> &mut Flow<T> {
        let f = self
            .flows
            .entry(name.to_owned())
            .or_insert_with(|| Flow { limits, last_finish: 0, running: 0, queue: VecDeque::new() });
        f.limits = limits;
        f
    }
}

fn tag_len(cost: u64, weight: u32) -> u128 {
    u128::from(cost.max(1)) * SCALE / u128::from(weight.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(weight: u32) -> FlowLimits {
        FlowLimits { weight, max_running: u32::MAX, max_queued: usize::MAX }
    }

    #[test]
    fn backlogged_flows_share_by_weight() {
        let mut q = FairQueue::new();
        for i in 0..300 {
            q.push("a", limits(1), 1, i).unwrap();
            q.push("b", limits(2), 1, i).unwrap();
        }
        let first: Vec<String> = (0..300).map(|_| {
            let d = q.pop().unwrap();
            q.done(&d.flow);
            d.flow
        }).collect();
        let b = first.iter().filter(|f| *f == "b").count();
        assert!((195..=205).contains(&b), "b got {b} of 300");
    }

    #[test]
    fn a_new_flow_overtakes_a_backlog() {
        let mut q = FairQueue::new();
        for i in 0..100 {
            q.push("heavy", limits(1), 1, i).unwrap();
        }
        for _ in 0..10 {
            let d = q.pop().unwrap();
            q.done(&d.flow);
        }
        q.push("light", limits(1), 1, 0).unwrap();
        let next: Vec<String> = (0..2).map(|_| q.pop().unwrap().flow).collect();
        assert!(next.contains(&"light".to_owned()), "{next:?}");
    }

    #[test]
    fn bounds_are_respected() {
        let mut q = FairQueue::new();
        let l = FlowLimits { weight: 1, max_running: 1, max_queued: 2 };
        q.push("a", l, 1, 1).unwrap();
        q.push("a", l, 1, 2).unwrap();
        assert_eq!(q.push("a", l, 1, 3).unwrap_err().0, QueueFull { capacity: 2 });
        assert_eq!(q.pop().unwrap().item, 1);
        assert!(q.pop().is_none(), "a is at its concurrency bound");
        q.done("a");
        assert_eq!(q.pop().unwrap().item, 2);
    }
}
