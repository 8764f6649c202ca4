//! Creating orders under concurrency (issue 15): the bundled `orders` example on a node
//! with embedded defaults, one free-tier tenant (8 concurrent tasks), `orders` subscribed
//! to its own `order.created`. Each row is a closed loop of C clients POSTing
//! `{"item":"tea","quantity":2}` for D seconds; then the bench waits until the
//! subscriber has handled every message and reports how long that took. A last row
//! reads `GET /apps/orders/orders?limit=5` at 8 clients and reports the bytes each read
//! adds to the hot audit store and makes the process write.
//!
//! Prints a table and writes JSON (default `target/bench/orders.json`).
//!
//! Usage: `cargo run --release -p runplane-bench --bin orders-bench -- [SECONDS] [CLIENTS,CLIENTS,...]`

use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::{Value, json};

#[path = "load.rs"]
mod load;

use load::{Call, load_with, request};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let seconds: u64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(5);
    let clients: Vec<usize> = args.get(2).map_or_else(|| vec![1, 4, 16, 32], |s| s.split(',').filter_map(|c| c.trim().parse().ok()).collect());
    let out = std::env::var("BENCH_OUT").unwrap_or_else(|_| "target/bench/orders.json".into());

    let dir = tempfile::tempdir()?;
    let mut config = runplane_node::NodeConfig::embedded("127.0.0.1:0".parse()?, dir.path().to_path_buf());
    let admin = "bench-admin-token-0123456789abcdef".to_string();
    config.admin_token = Some(admin.clone());
    let node = runplane_node::Node::start(config).await?;
    let addr = node.addr;
    let created = request(addr, "POST", "/v1/tenants", Some(&admin), Some(json!({"id": "acme", "tier": "free"}).to_string().into())).await?;
    let key = serde_json::from_slice::<Value>(&created)?["api_key"].as_str().unwrap_or_default().to_owned();
    request(addr, "POST", "/v1/capabilities?name=orders&version=1.0.0", Some(&admin), Some(Bytes::from_static(runplane_examples::ORDERS))).await?;
    let deployment = json!({"capability": "orders", "version": "1.0.0", "subscriptions": ["order.created"]});
    request(addr, "POST", "/v1/deployments", Some(&admin), Some(deployment.to_string().into())).await?;

    let call = Call { method: hyper::Method::POST, path: "/apps/orders/orders".into(), body: Some(Bytes::from_static(br#"{"item":"tea","quantity":2}"#)) };
    let mut rows = Vec::new();
    for c in &clients {
        let r = load_with(&format!("{c} clients"), addr, &call, Some(&key), Duration::from_secs(seconds), *c).await;
        // Let the subscriber catch up before the next row, so rows do not share a backlog.
        let drain = drained(addr, &key).await?;
        rows.push((c, r, drain));
    }

    // Reads: the list the issue-16 storage figures were taken on, at 8 clients. Every
    // read is an audited invocation whose journal holds the records it read.
    let list = Call { method: hyper::Method::GET, path: "/apps/orders/orders?limit=5".into(), body: None };
    let audit_db = dir.path().join("audit.db");
    let (stored_before, written_before) = (load::stored_bytes(&audit_db).await?, load::written_bytes());
    let reads = load_with("list, 8 clients", addr, &list, Some(&key), Duration::from_secs(seconds), 8).await;
    let per_read = |after: u64, before: u64| (after as f64 - before as f64) / reads.requests.max(1) as f64;
    let stored_per_read = per_read(load::stored_bytes(&audit_db).await?, stored_before);
    let written_per_read = load::written_bytes().zip(written_before).map(|(a, b)| per_read(a, b));

    println!("\n{:<12} {:>10} {:>8} {:>10} {:>10} {:>10} {:>14}", "clients", "created", "errors", "req/s", "p50 µs", "p99 µs", "drained after");
    for (c, r, d) in &rows {
        println!("{:<12} {:>10} {:>8} {:>10.0} {:>10.0} {:>10.0} {:>12.2} s", c, r.requests, r.errors, r.rps, r.p50_us, r.p99_us, d.as_secs_f64());
    }
    println!(
        "\nlist reads (GET /apps/orders/orders?limit=5, 8 clients): {} requests, {} errors, {:.0} req/s, p50 {:.0} µs, p99 {:.0} µs",
        reads.requests, reads.errors, reads.rps, reads.p50_us, reads.p99_us
    );
    match written_per_read {
        Some(w) => println!("per list read: {stored_per_read:.0} bytes kept in the hot audit store, {w:.0} bytes written by the process"),
        None => println!("per list read: {stored_per_read:.0} bytes kept in the hot audit store"),
    }
    let json = json!({
        "benchmark": "orders-create",
        "seconds": seconds,
        "results": rows.iter().map(|(c, r, d)| json!({"clients": c, "created": r.requests, "errors": r.errors, "rps": r.rps, "p50_us": r.p50_us, "p99_us": r.p99_us, "drained_after_s": d.as_secs_f64()})).collect::<Vec<_>>(),
        "list_reads": {"clients": 8, "requests": reads.requests, "errors": reads.errors, "rps": reads.rps, "p50_us": reads.p50_us, "p99_us": reads.p99_us,
                       "audit_bytes_stored_per_read": stored_per_read, "bytes_written_per_read": written_per_read},
    });
    if let Some(parent) = std::path::Path::new(&out).parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&out, serde_json::to_string_pretty(&json)?)?;
    println!("wrote {out}");
    Ok(())
}

/// Waits until every created order's message was handled (the example counts both).
async fn drained(addr: std::net::SocketAddr, key: &str) -> anyhow::Result<Duration> {
    let started = Instant::now();
    loop {
        let stats: Value = serde_json::from_slice(&request(addr, "GET", "/apps/orders/stats", Some(key), None).await?)?;
        if stats["notifications"].as_u64() >= stats["orders_created"].as_u64() {
            return Ok(started.elapsed());
        }
        anyhow::ensure!(started.elapsed() < Duration::from_secs(300), "the subscriber did not catch up in 5 minutes: {stats}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
