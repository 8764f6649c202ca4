//! Per-request cost of the control plane on tenant traffic (issue: control plane).
//! Not a test.
//!
//! Measures `Node::check_tenant_request` — exactly what `/apps/{route}` runs before
//! admission — in-process, many times, in two setups:
//!
//! - **baseline**: a tenant API key (one SHA-256 and a map read), a route with no flag,
//!   no domain registry;
//! - **full**: a capability token (Biscuit, attenuated to the route) with its
//!   verification and authorization, a route behind a feature flag with a percentage
//!   rollout, and a domain entitlement check.
//!
//! The difference of the medians is the added overhead (target < 20 µs). Also shown:
//! the first use of a token (signature verification, before the cache holds it), and
//! whole `hello` requests over HTTP with each credential.
//!
//! Usage: `cargo run --release -p runplane-bench --bin policy-bench -- [ITERATIONS]`
//! Writes JSON to `target/bench/policy.json` (or `$BENCH_OUT`).

// Shared with the other benches; this one does not use the closed-loop `load`.
#[path = "load.rs"]
#[allow(dead_code)]
mod load;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::{Value, json};

const ADMIN: &str = "bench-admin-token-0123456789abcdef";

async fn admin(addr: SocketAddr, method: &str, path: &str, body: Value) -> anyhow::Result<Value> {
    let body = (!body.is_null()).then(|| Bytes::from(body.to_string()));
    let out = load::request(addr, method, path, Some(ADMIN), body).await?;
    Ok(serde_json::from_slice(&out).unwrap_or(Value::Null))
}

/// The `q` quantile of sorted nanoseconds, in microseconds.
fn percentile(sorted: &[u64], q: f64) -> f64 {
    load::percentile(sorted, q) / 1000.0
}

/// Nanoseconds per call of `f`, sorted.
fn time(iterations: usize, mut f: impl FnMut()) -> Vec<u64> {
    for _ in 0..1000 {
        f();
    }
    let mut t = Vec::with_capacity(iterations);
    for _ in 0..iterations {
        let started = Instant::now();
        f();
        t.push(started.elapsed().as_nanos() as u64);
    }
    t.sort_unstable();
    t
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let iterations: usize = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(100_000);
    let out = std::env::var("BENCH_OUT").unwrap_or_else(|_| "target/bench/policy.json".into());
    let dir = tempfile::tempdir()?;
    let mut config = runplane_node::NodeConfig::embedded("127.0.0.1:0".parse()?, dir.path().to_path_buf());
    config.admin_token = Some(ADMIN.into());
    let running = runplane_node::Node::start(config).await?;
    let addr = running.addr;
    let node = running.node.clone();

    let created = admin(addr, "POST", "/v1/tenants", json!({"id": "bench", "tier": "enterprise"})).await?;
    let key = created["api_key"].as_str().unwrap_or_default().to_owned();
    load::request(addr, "POST", "/v1/capabilities?name=hello&version=1.0.0", Some(ADMIN), Some(Bytes::from_static(runplane_examples::HELLO))).await?;
    admin(addr, "POST", "/v1/deployments", json!({"capability": "hello", "version": "1.0.0", "route": "plain"})).await?;

    // Baseline: API key, ungated route, no domains.
    let base = time(iterations, || {
        let _ = std::hint::black_box(node.check_tenant_request(&key, "plain"));
    });
    node.check_tenant_request(&key, "plain").map_err(|e| anyhow::anyhow!("baseline refused: {}", e.message))?;

    // Full: token attenuated to the route, flag with a rollout, domain entitlement.
    admin(addr, "POST", "/v1/deployments", json!({"capability": "hello", "version": "1.0.0", "route": "gated", "flag": "gate"})).await?;
    admin(addr, "PUT", "/v1/flags/gate", json!({"enabled": true, "rollout_percent": 100})).await?;
    admin(addr, "PUT", "/v1/domains/com", json!({"domain_id": "com", "domain_name": "Commerce", "capabilities": ["hello"], "dependencies": []})).await?;
    admin(addr, "POST", "/v1/tenants/bench/domains/com", Value::Null).await?;
    let minted = admin(addr, "POST", "/v1/tenants/bench/tokens", json!({"role": "tenant", "subject": "bench"})).await?;
    let token = minted["token"].as_str().unwrap_or_default().to_owned();
    let restriction = runplane_policy::tokens::Restriction { operations: None, tenant: None, routes: Some(vec!["gated".into()]), expires_unix_secs: None };
    let token = runplane_policy::tokens::attenuate(&token, &restriction)?;
    node.check_tenant_request(&token, "gated").map_err(|e| anyhow::anyhow!("full check refused: {}", e.message))?;
    let full = time(iterations, || {
        let _ = std::hint::black_box(node.check_tenant_request(&token, "gated"));
    });

    // First use of a token: signature verification before the cache holds it.
    let cold_n = (iterations / 100).clamp(100, 2000);
    let mut fresh = Vec::with_capacity(cold_n);
    for i in 0..cold_n {
        let m = admin(addr, "POST", "/v1/tenants/bench/tokens", json!({"role": "tenant", "subject": format!("cold-{i}")})).await?;
        fresh.push(m["token"].as_str().unwrap_or_default().to_owned());
    }
    let mut cold = Vec::with_capacity(cold_n);
    for t in &fresh {
        let started = Instant::now();
        let _ = std::hint::black_box(node.check_tenant_request(t, "gated"));
        cold.push(started.elapsed().as_nanos() as u64);
    }
    cold.sort_unstable();

    // Whole requests over HTTP (one connection, closed loop).
    let http_base = load::one_connection(addr, "/apps/plain/", Some(&key), Duration::from_secs(3)).await;
    let http_full = load::one_connection(addr, "/apps/gated/", Some(&token), Duration::from_secs(3)).await;
    // `one_connection` records microseconds.
    let http = |(mut t, errors): (Vec<u64>, u64)| {
        t.sort_unstable();
        (t.len(), errors, load::percentile(&t, 0.5), load::percentile(&t, 0.99))
    };
    let (hb, hf) = (http(http_base), http(http_full));

    let added = percentile(&full, 0.5) - percentile(&base, 0.5);
    println!("\n{:<58} {:>10} {:>10}", "check_tenant_request (in-process)", "p50 µs", "p99 µs");
    println!("{:<58} {:>10.2} {:>10.2}", "baseline: API key, no flag, no domains", percentile(&base, 0.5), percentile(&base, 0.99));
    println!("{:<58} {:>10.2} {:>10.2}", "full: attenuated token + flag rollout + entitlement", percentile(&full, 0.5), percentile(&full, 0.99));
    println!("{:<58} {:>10.2} {:>10.2}", format!("first use of a token ({cold_n} fresh tokens)"), percentile(&cold, 0.5), percentile(&cold, 0.99));
    println!("{:<58} {:>10.2}   (target < 20 µs)", "added by token + flag + entitlement (median)", added);
    println!("\n{:<58} {:>10} {:>10} {:>10}", "hello over HTTP, one connection", "p50 µs", "p99 µs", "requests");
    println!("{:<58} {:>10.0} {:>10.0} {:>10}", "API key, plain route", hb.2, hb.3, hb.0);
    println!("{:<58} {:>10.0} {:>10.0} {:>10}", "token, gated route", hf.2, hf.3, hf.0);
    let json = json!({
        "benchmark": "control-plane-per-request",
        "iterations": iterations,
        "baseline_p50_us": percentile(&base, 0.5), "baseline_p99_us": percentile(&base, 0.99),
        "full_p50_us": percentile(&full, 0.5), "full_p99_us": percentile(&full, 0.99),
        "cold_token_p50_us": percentile(&cold, 0.5), "cold_token_p99_us": percentile(&cold, 0.99),
        "added_p50_us": added, "target_added_p50_us": 20.0,
        "http_key_p50_us": hb.2, "http_key_p99_us": hb.3, "http_key_errors": hb.1,
        "http_token_p50_us": hf.2, "http_token_p99_us": hf.3, "http_token_errors": hf.1,
    });
    if let Some(parent) = std::path::Path::new(&out).parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&out, serde_json::to_string_pretty(&json)?)?;
    println!("wrote {out}");
    Ok(())
}
