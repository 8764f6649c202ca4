//! The scheduler's promises (spec §5.3): deterministic plans and hashes, weights
//! honoured, bounded queues; and the async gate under real concurrency.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use runplane_tenancy::{FairGate, FlowLimits, Share, Task, TenantScheduler, TenantTasks, schedule_hash};

fn set(tenant: &str, weight: u32, n: usize, cost: u64) -> TenantTasks {
    TenantTasks {
        tenant: tenant.into(),
        share: Share { weight, max_concurrent: 1_000, max_queued: 0 },
        tasks: (0..n).map(|i| Task { task_id: format!("{tenant}-{i:05}"), cost: cost + (i as u64 % 3) }).collect(),
    }
}

#[test]
fn the_same_task_set_gives_the_same_schedule_and_hash_in_any_order() {
    let s = TenantScheduler::new(4);
    let sets = vec![set("acme", 1, 50, 2), set("globex", 4, 80, 1), set("initech", 8, 20, 5)];
    let a = s.schedule_all(&sets).unwrap();
    let mut shuffled = sets.clone();
    shuffled.reverse();
    for t in &mut shuffled {
        t.tasks.reverse();
        t.tasks.rotate_left(7);
    }
    let b = s.schedule_all(&shuffled).unwrap();
    assert_eq!(a, b);
    assert_eq!(schedule_hash(&a).unwrap(), schedule_hash(&b).unwrap());
    assert_eq!(a.tasks.len(), 150);
    // A different set (one task's cost changed) gives a different hash.
    let mut changed = sets.clone();
    changed[0].tasks[0].cost += 1;
    assert_ne!(schedule_hash(&a).unwrap(), schedule_hash(&s.schedule_all(&changed).unwrap()).unwrap());
    // The hash is SHA-256 over the canonical JSON, as spec §6.1 defines it.
    let canonical = runplane_cjson::from_serialize(&a).unwrap();
    assert_eq!(schedule_hash(&a).unwrap(), runplane_cjson::sha256_hex(canonical.as_bytes()));
}

#[test]
fn weights_are_honoured_within_a_tolerance_over_many_tasks() {
    // Three backlogged tenants with weights 1, 2 and 5 on one worker: over the first
    // 800 starts each gets its weight's share of the service, within 2 %.
    let s = TenantScheduler::new(1);
    let sets = vec![set("a", 1, 2_000, 1), set("b", 2, 2_000, 1), set("c", 5, 2_000, 1)];
    let plan = s.schedule_all(&sets).unwrap();
    let horizon = plan.tasks.iter().take(800).map(|t| t.cost).sum::<u64>();
    let served = |tenant: &str| plan.tasks.iter().take(800).filter(|t| t.tenant == tenant).map(|t| t.cost).sum::<u64>() as f64 / horizon as f64;
    for (tenant, expected) in [("a", 1.0 / 8.0), ("b", 2.0 / 8.0), ("c", 5.0 / 8.0)] {
        let got = served(tenant);
        assert!((got - expected).abs() < 0.02, "tenant {tenant}: {got:.3} of the service, expected {expected:.3}");
    }
}

#[test]
fn a_tenant_never_runs_more_than_its_concurrency_in_a_plan() {
    let s = TenantScheduler::new(8);
    let mut sets = vec![set("a", 1, 40, 3)];
    sets[0].share.max_concurrent = 2;
    let plan = s.schedule_all(&sets).unwrap();
    for t in &plan.tasks {
        let overlapping = plan.tasks.iter().filter(|o| o.starts_at <= t.starts_at && t.starts_at < o.starts_at + o.cost).count();
        assert!(overlapping <= 2, "{overlapping} running at {}", t.starts_at);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_refuses_at_once_and_a_cancelled_waiter_frees_its_place() {
    let s = TenantScheduler::new(4);
    let share = Share { weight: 1, max_concurrent: 1, max_queued: 2 };
    let running = s.admit("a", share).await.unwrap();
    let w1 = tokio::spawn({
        let s = s.clone();
        async move { s.admit("a", share).await.map(drop) }
    });
    let w2 = tokio::spawn({
        let s = s.clone();
        async move { s.admit("a", share).await.map(drop) }
    });
    while s.queued_in("a") < 2 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let refused = s.admit("a", share).await.unwrap_err();
    assert_eq!(refused.queued, 2);
    assert!(refused.to_string().contains("retry after"), "{refused}");
    // Another tenant is not affected by a's full queue.
    drop(s.admit("b", share).await.unwrap());
    // A waiter that gives up leaves no place taken.
    w2.abort();
    let _ = w2.await;
    drop(running);
    w1.await.unwrap().unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!((s.running(), s.queued()), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gate_never_exceeds_its_capacity_and_serves_a_light_flow_promptly() {
    let gate = FairGate::new(2);
    let inside = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let heavy = FlowLimits { weight: 1, max_running: u32::MAX, max_queued: usize::MAX };
    let mut tasks = Vec::new();
    for _ in 0..40 {
        let (gate, inside, peak) = (gate.clone(), inside.clone(), peak.clone());
        tasks.push(tokio::spawn(async move {
            for _ in 0..20 {
                let _pass = gate.enter("heavy", heavy, 1).await.unwrap();
                let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(1)).await;
                inside.fetch_sub(1, Ordering::SeqCst);
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(20)).await;
    // With 40 heavy waiters queued, a light flow is let in after about one turn.
    let started = std::time::Instant::now();
    drop(gate.enter("light", heavy, 1).await.unwrap());
    let waited = started.elapsed();
    for t in tasks {
        t.await.unwrap();
    }
    assert!(peak.load(Ordering::SeqCst) <= 2);
    assert!(waited < Duration::from_millis(200), "the light flow waited {waited:?} behind a backlog of 40");
}

/// `FairGate::queue` puts a caller in line at once (synchronously), the pass may be
/// awaited on another runtime, and an entry dropped at any stage never holds a place.
#[test]
fn a_queued_entry_keeps_its_place_in_line_and_frees_it_when_dropped() {
    let limits = FlowLimits { weight: 1, max_running: u32::MAX, max_queued: usize::MAX };
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let gate = FairGate::new(1);
    // Granted at once, dropped unclaimed: the place comes back.
    drop(gate.queue("a", limits, 1).unwrap());
    assert_eq!(gate.running(), 0);
    let first = rt.block_on(gate.queue("a", limits, 1).unwrap().granted());
    // In line before anyone who queues later, even before being awaited.
    let early = gate.queue("b", limits, 1).unwrap();
    let late = gate.queue("c", limits, 1).unwrap();
    assert_eq!(gate.queued(), 2);
    drop(first);
    // The grant went to the earlier entry; dropping it unclaimed passes the place on.
    assert_eq!(gate.running(), 1);
    drop(early);
    assert_eq!((gate.running(), gate.queued()), (1, 0));
    let pass = rt.block_on(late.granted());
    assert_eq!(gate.running_in("c"), 1);
    drop(pass);
    assert_eq!(gate.running(), 0);
    // Dropped while still waiting: the queue forgets it.
    let holder = rt.block_on(gate.queue("a", limits, 1).unwrap().granted());
    drop(gate.queue("b", limits, 1).unwrap());
    assert_eq!(gate.queued(), 0);
    drop(holder);
    assert_eq!(gate.running(), 0);
}
