//! Rollout benchmark (issue: progressive delivery). Not a test.
//!
//! How long a version switch takes to reach every node of an instance: N nodes (in this
//! process, each with its own listener, data dir and audit log) share one control
//! store on PostgreSQL, as a multi-node instance does. On every node a poller sends the
//! `hello` route a request every `RB_PACE_MS` (default 2) as a tenant, on a keep-alive
//! connection, and notes when the version in `x-runplane-capability` changes. Each
//! round:
//!
//! 1. a blue-green rollout to a candidate starts (its preview pinned to a second
//!    tenant, whose requests show when every node has the candidate compiled);
//! 2. **switch**: `promote` on node 0; the time until every node's poller has been
//!    served by the candidate;
//! 3. **switch back**: `abort` inside the post-promotion window; the time until every
//!    node serves stable again.
//!
//! The time runs from just before the operation is sent to the first answer from the
//! new version on the last node, so it includes the operation's own commit and the
//! change feed (`[control] notify`: PostgreSQL LISTEN/NOTIFY, polling behind it).
//!
//! Usage: `cargo run --release -p runplane-bench --bin rollout-bench -- [ROUNDS] [NODES]`
//! (default 20 rounds, 3 nodes); PostgreSQL from `RUNPLANE_TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`); JSON to `target/bench/rollout-switch.json`
//! (or `$BENCH_OUT`).

#[path = "load.rs"]
mod load;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

use load::{percentile, request};

const ADMIN: &str = "bench-admin-token-0123456789abcdef";

/// When each node's poller was first served each version, in order.
type Seen = Arc<Mutex<Vec<(Instant, String)>>>;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let rounds: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(20);
    let count: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(3).max(1);
    let pace = Duration::from_millis(std::env::var("RB_PACE_MS").ok().and_then(|v| v.parse().ok()).unwrap_or(2));
    let out = std::env::var("BENCH_OUT").unwrap_or_else(|_| "target/bench/rollout-switch.json".into());
    let url = std::env::var("RUNPLANE_TEST_POSTGRES_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let database = format!("rp_rollout_bench_{}", std::process::id());

    let dirs: Vec<tempfile::TempDir> = (0..count).map(|_| tempfile::tempdir()).collect::<Result<_, _>>()?;
    let mut nodes = Vec::new();
    for (i, dir) in dirs.iter().enumerate() {
        let mut config = runplane_node::NodeConfig::embedded("127.0.0.1:0".parse()?, dir.path().to_path_buf());
        config.node_id = format!("node-{i}");
        config.admin_token = Some(ADMIN.into());
        config.rate_limits.admin_burst = 100_000;
        config.backends.insert(
            "pg".into(),
            runplane_node::config::Backend::Postgres {
                url: url.clone(),
                database: database.clone(),
                runtime_role: "runplane_bench_runtime".into(),
                runtime_password: None,
                max_connections: 8,
            },
        );
        config.control_store = Some("pg".into());
        // One instance, one set of keys: the first node's.
        if i > 0 {
            config.audit_key_file = Some(dirs[0].path().join("instance.key"));
            config.token_key_file = Some(dirs[0].path().join("token.key"));
            config.kek_file = Some(dirs[0].path().join("secrets.kek"));
        }
        nodes.push(runplane_node::Node::start(config).await?);
    }
    let addrs: Vec<SocketAddr> = nodes.iter().map(|n| n.addr).collect();
    println!("{count} nodes sharing a control store on PostgreSQL (database {database}); a request every {} ms per node", pace.as_millis());

    let first = addrs[0];
    let tenant = |id: &'static str| async move {
        let created = request(first, "POST", "/v1/tenants", Some(ADMIN), Some(json!({"id": id}).to_string().into())).await?;
        anyhow::Ok(serde_json::from_slice::<Value>(&created)?["api_key"].as_str().unwrap_or_default().to_owned())
    };
    let (key, preview_key) = (tenant("bench").await?, tenant("preview").await?);
    request(first, "POST", "/v1/capabilities?name=greet&version=1.0.0", Some(ADMIN), Some(Bytes::from_static(runplane_examples::HELLO))).await?;
    request(first, "POST", "/v1/capabilities?name=greet&version=2.0.0", Some(ADMIN), Some(runplane_examples::tagged(runplane_examples::HELLO, "v2").into())).await?;
    request(first, "POST", "/v1/deployments", Some(ADMIN), Some(json!({"capability": "greet", "version": "1.0.0", "route": "greet"}).to_string().into())).await?;

    // Every node serves the route before the pollers start (the feed brings the deploy).
    for addr in &addrs {
        wait_served(*addr, &key, "greet@1.0.0", Duration::from_secs(30)).await?;
    }
    let seen: Vec<Seen> = addrs.iter().map(|_| Seen::default()).collect();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let pollers: Vec<_> = addrs.iter().zip(&seen).map(|(a, s)| tokio::spawn(poll(*a, key.clone(), pace, s.clone(), stop.clone()))).collect();

    let (mut switch_ms, mut back_ms, mut op_ms) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        let body = json!({"route": "greet", "capability": "greet@2.0.0", "strategy": "blue-green", "include": ["preview"], "post_promotion_secs": 600});
        let started = request(first, "POST", "/v1/rollouts", Some(ADMIN), Some(body.to_string().into())).await?;
        let id = serde_json::from_slice::<Value>(&started)?["rollout_id"].as_str().unwrap_or_default().to_owned();
        // The preview tenant is served the candidate once a node has it compiled.
        for addr in &addrs {
            wait_served(*addr, &preview_key, "greet@2.0.0", Duration::from_secs(30)).await?;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;

        let t0 = Instant::now();
        request(first, "POST", &format!("/v1/rollouts/{id}/promote"), Some(ADMIN), None).await?;
        op_ms.push(t0.elapsed().as_secs_f64() * 1e3);
        switch_ms.push(reach_all(&seen, t0, "greet@2.0.0").await? * 1e3);
        tokio::time::sleep(Duration::from_millis(100)).await;

        let t0 = Instant::now();
        request(first, "POST", &format!("/v1/rollouts/{id}/abort?reason=bench"), Some(ADMIN), None).await?;
        op_ms.push(t0.elapsed().as_secs_f64() * 1e3);
        back_ms.push(reach_all(&seen, t0, "greet@1.0.0").await? * 1e3);
        println!("round {:>3}: switch {:>7.1} ms, switch back {:>7.1} ms", round + 1, switch_ms[round], back_ms[round]);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut errors = 0;
    for p in pollers {
        errors += p.await.unwrap_or(1);
    }

    let stats = |v: &[f64]| {
        let mut us: Vec<u64> = v.iter().map(|ms| (ms * 1000.0) as u64).collect();
        us.sort_unstable();
        (percentile(&us, 0.5) / 1000.0, percentile(&us, 0.99) / 1000.0, us.last().copied().unwrap_or(0) as f64 / 1000.0)
    };
    println!("\n{:<36} {:>8} {:>10} {:>10} {:>10}", "to every node", "rounds", "p50 ms", "p99 ms", "max ms");
    let mut rows = Vec::new();
    for (name, v) in [("switch (promote a blue-green)", &switch_ms), ("switch back (abort after the switch)", &back_ms), ("the operation's own answer", &op_ms)] {
        let (p50, p99, max) = stats(v);
        println!("{name:<36} {:>8} {p50:>10.1} {p99:>10.1} {max:>10.1}", v.len());
        rows.push(json!({"measure": name, "samples": v.len(), "p50_ms": p50, "p99_ms": p99, "max_ms": max}));
    }
    println!("poller requests that failed: {errors}");
    let json = json!({"benchmark": "rollout-switch", "nodes": count, "rounds": rounds, "pace_ms": pace.as_millis() as u64, "results": rows, "failed_requests": errors});
    if let Some(parent) = std::path::Path::new(&out).parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&out, serde_json::to_string_pretty(&json)?)?;
    println!("wrote {out}");
    for n in nodes {
        n.drain().await;
    }
    Ok(())
}

/// The version `x-runplane-capability` names in the answer to `GET /apps/greet/` as `key`.
async fn served(addr: SocketAddr, key: &str) -> anyhow::Result<String> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let req = hyper::Request::get("/apps/greet/").header("host", addr.to_string()).header("authorization", format!("Bearer {key}")).body(Empty::<Bytes>::new())?;
    let resp = sender.send_request(req).await?;
    Ok(resp.headers().get("x-runplane-capability").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned())
}

async fn wait_served(addr: SocketAddr, key: &str, version: &str, limit: Duration) -> anyhow::Result<()> {
    let start = Instant::now();
    while served(addr, key).await.ok().as_deref() != Some(version) {
        anyhow::ensure!(start.elapsed() < limit, "node {addr} did not serve {version} within {limit:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

/// Requests every `pace` on one keep-alive connection until `stop`; each change of the
/// version served is noted with its time. The requests that failed.
async fn poll(addr: SocketAddr, key: String, pace: Duration, seen: Seen, stop: Arc<std::sync::atomic::AtomicBool>) -> u64 {
    let mut errors = 0;
    let mut last = String::new();
    'connect: while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let Ok(stream) = tokio::net::TcpStream::connect(addr).await else {
            errors += 1;
            tokio::time::sleep(pace).await;
            continue;
        };
        let _ = stream.set_nodelay(true);
        let Ok((mut sender, conn)) = hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(stream)).await else {
            errors += 1;
            continue;
        };
        tokio::spawn(conn);
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            let Ok(req) = hyper::Request::get("/apps/greet/").header("host", addr.to_string()).header("authorization", format!("Bearer {key}")).body(Empty::new()) else {
                return errors + 1;
            };
            let resp = match sender.send_request(req).await {
                Ok(r) => r,
                Err(_) => {
                    errors += 1;
                    continue 'connect;
                }
            };
            let at = Instant::now();
            let ok = resp.status().is_success();
            let version = resp.headers().get("x-runplane-capability").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
            if resp.into_body().collect().await.is_err() || !ok {
                errors += 1;
            }
            if version != last {
                seen.lock().unwrap_or_else(|p| p.into_inner()).push((at, version.clone()));
                last = version;
            }
            tokio::time::sleep(pace).await;
        }
    }
    errors
}

/// Seconds from `t0` until every node's poller has been served `version` after it.
async fn reach_all(seen: &[Seen], t0: Instant, version: &str) -> anyhow::Result<f64> {
    let limit = Duration::from_secs(30);
    loop {
        let firsts: Vec<Option<Instant>> =
            seen.iter().map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).iter().find(|(at, v)| *at >= t0 && v == version).map(|(at, _)| *at)).collect();
        if firsts.iter().all(Option::is_some) {
            return Ok(firsts.into_iter().flatten().map(|at| at - t0).max().unwrap_or_default().as_secs_f64());
        }
        anyhow::ensure!(t0.elapsed() < limit, "{version} did not reach every node within {limit:?}");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}
