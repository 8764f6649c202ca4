//! The routing decision's added cost per request while a rollout moves (issue 19:
//! target < 2 µs median). Not a test.
//!
//! Measures in-process what `/apps/{route}` adds when a route has a live rollout: the
//! map read for the route's rollout (an `RwLock<HashMap>`, as the node keeps them) and
//! `Rollout::choose` — pins, then the salted SHA-256 bucket of the tenant (or tenant
//! and session) — over 10,000 distinct tenants, for tenant and session stickiness, a
//! pinned tenant and a route without a rollout (the map read alone).
//!
//! Usage: `cargo bench -p runplane-rollout --bench choose [-- ITERATIONS]`
//! Writes JSON to `target/bench/rollout.json` (or `$BENCH_OUT`).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Instant;

use runplane_rollout::{Mark, Rollout, RolloutSpec, Version};
use serde_json::json;

fn version(v: &str) -> Version {
    Version { capability: "greet".into(), version: v.into(), digest: format!("sha256:{v}") }
}

fn rollout(stickiness: &str) -> anyhow::Result<Rollout> {
    let spec: RolloutSpec = serde_json::from_value(json!({"strategy": "canary", "stickiness": stickiness, "include": ["pinned"], "steps": [{"set_weight": 20}, {"pause": {}}]}))?;
    let spec = spec.validate().map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(Rollout::start("bench".into(), "greet".into(), version("1"), version("2"), spec, "01a25119-218e-7736-8b11-14ac01ad7e44".into(), 0, &Mark::default()))
}

/// Nanoseconds per call of `f(i)`, sorted.
fn time(iterations: usize, mut f: impl FnMut(usize)) -> Vec<u64> {
    for i in 0..10_000 {
        f(i);
    }
    let mut t = Vec::with_capacity(iterations);
    for i in 0..iterations {
        let started = Instant::now();
        f(i);
        t.push(started.elapsed().as_nanos() as u64);
    }
    t.sort_unstable();
    t
}

fn pct(sorted: &[u64], q: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted.get(i).copied().unwrap_or(0) as f64 / 1000.0
}

fn main() -> anyhow::Result<()> {
    // `cargo bench` passes `--bench`; the first number given is the iteration count.
    let iterations: usize = std::env::args().skip(1).find_map(|s| s.parse().ok()).unwrap_or(1_000_000);
    // Benches run in the crate's directory: the workspace's target/bench is two up.
    let out = std::env::var("BENCH_OUT").unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/../../target/bench/rollout.json").into());
    let tenants: Vec<String> = (0..10_000).map(|i| format!("tenant-{i:05}")).collect();
    let sessions: Vec<String> = (0..10_000).map(|i| format!("session-{i:05}")).collect();
    let live: RwLock<HashMap<String, Arc<Rollout>>> = RwLock::new(HashMap::from([("greet".to_string(), Arc::new(rollout("tenant")?)), ("sticky".to_string(), Arc::new(rollout("session")?))]));
    let decide = |route: &str, tenant: &str, session: Option<&str>| {
        let r = live.read().unwrap_or_else(|p| p.into_inner()).get(route).cloned();
        r.map(|r| r.choose(tenant, session))
    };
    let none = time(iterations, |i| {
        std::hint::black_box(decide("plain", &tenants[i % tenants.len()], None));
    });
    let by_tenant = time(iterations, |i| {
        std::hint::black_box(decide("greet", &tenants[i % tenants.len()], None));
    });
    let by_session = time(iterations, |i| {
        std::hint::black_box(decide("sticky", &tenants[i % tenants.len()], Some(&sessions[(i / 7) % sessions.len()])));
    });
    let pinned = time(iterations, |_| {
        std::hint::black_box(decide("greet", "pinned", None));
    });
    let share = tenants.iter().filter(|t| decide("greet", t, None) == Some(runplane_rollout::Side::Candidate)).count() as f64 / tenants.len() as f64;

    println!("\n{:<52} {:>10} {:>10}", "routing decision per request (in-process)", "p50 µs", "p99 µs");
    for (name, t) in [("no rollout on the route (the map read)", &none), ("rollout, tenant stickiness", &by_tenant), ("rollout, session stickiness", &by_session), ("rollout, a pinned tenant", &pinned)] {
        println!("{name:<52} {:>10.3} {:>10.3}", pct(t, 0.5), pct(t, 0.99));
    }
    let added = pct(&by_tenant, 0.5) - pct(&none, 0.5);
    println!("{:<52} {:>10.3}   (target < 2 µs)", "added by a live rollout (median, tenant)", added);
    println!("{:<52} {:>10.1} %  (weight 20 %, 10,000 tenants)", "share on the candidate", share * 100.0);
    let json = json!({
        "benchmark": "rollout-routing-decision",
        "iterations": iterations,
        "no_rollout_p50_us": pct(&none, 0.5), "tenant_p50_us": pct(&by_tenant, 0.5), "tenant_p99_us": pct(&by_tenant, 0.99),
        "session_p50_us": pct(&by_session, 0.5), "session_p99_us": pct(&by_session, 0.99), "pinned_p50_us": pct(&pinned, 0.5),
        "added_p50_us": added, "target_added_p50_us": 2.0, "candidate_share_at_20": share,
    });
    if let Some(parent) = std::path::Path::new(&out).parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&out, serde_json::to_string_pretty(&json)?)?;
    println!("\nwrote {out}");
    Ok(())
}
