//! Tenancy benchmarks (issue: quotas and scheduling). Not tests.
//!
//! 1. **Noisy neighbour**: tenant B sends a light steady load (one request every
//!    `PACE` ms to `hello`) alone, then while tenant A floods the node at saturation with
//!    the CPU-heavy `cpu-burn` component on many connections. Reports B's p50/p99 in
//!    both phases and their ratio (target: B's p99 under the flood ≤ 2 × alone).
//! 2. **Scheduling overhead**: closed-loop `hello` throughput with quotas and the fair
//!    scheduler on, then on a node with them off (`[scheduler] enabled = false` and no
//!    CPU turns). Target ratio ≥ 0.9.
//!
//! Each comparison alternates its two conditions in `BENCH_ROUNDS` rounds (default 4)
//! of `SECONDS / rounds` each, so what drifts on the machine meanwhile (this VM's disk
//! latency does, by several times over tens of seconds) weighs on both sides alike.
//!
//! Usage: `cargo run --release -p runplane-bench --bin tenancy-bench -- [SECONDS] [FLOOD_CONNECTIONS] [BURN_ITERS]`
//! Writes JSON to `target/bench/tenancy.json` (or `$BENCH_OUT`). For investigation:
//! `BENCH_B_PATH` sends B elsewhere than `/apps/hello/`; `BENCH_CPU_SLOTS` and `BENCH_CPU_BOUND_SLOTS` override `sandbox.cpu_slots` and `sandbox.cpu_bound_slots`; `BENCH_PIN_THREADS=1` pins the sandbox threads and `BENCH_DEMOTE=0` keeps CPU-bound guests at the normal policy; `BENCH_GLOBAL_QUEUE_INTERVAL` and
//! `BENCH_EVENT_INTERVAL` tune the bench process's tokio runtime (node and load share it).

#[path = "load.rs"]
mod load;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use serde_json::json;

const ADMIN: &str = "bench-admin-token-0123456789abcdef";
/// B's pace: one request every this many milliseconds.
const PACE_MS: u64 = 20;

fn main() -> anyhow::Result<()> {
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    rt.enable_all();
    if let Some(n) = std::env::var("BENCH_GLOBAL_QUEUE_INTERVAL").ok().and_then(|v| v.parse().ok()) {
        rt.global_queue_interval(n);
    }
    if let Some(n) = std::env::var("BENCH_EVENT_INTERVAL").ok().and_then(|v| v.parse().ok()) {
        rt.event_interval(n);
    }
    rt.build()?.block_on(run())
}

async fn run() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let seconds: u64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(10);
    let flood: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(32);
    let iters: u64 = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(20_000_000);
    let out = std::env::var("BENCH_OUT").unwrap_or_else(|_| "target/bench/tenancy.json".into());
    let duration = Duration::from_secs(seconds);

    // 1. Noisy neighbour.
    let dir = tempfile::tempdir()?;
    let node = start(dir.path(), true).await?;
    let a = tenant(node.addr, "noisy", "free").await?;
    let b = tenant(node.addr, "quiet", "free").await?;
    // A's CPU window must outlast the run: a flood refused with 429s is another load
    // (requests, not CPU) than the one measured here.
    let unbounded = json!({"quota": {"max_cpu_seconds": 1u64 << 30, "max_memory_mb": 64, "max_disk_mb": 512, "max_network_kb": 524_288, "max_concurrent_tasks": 8, "window_seconds": 3600}});
    load::request(node.addr, "PUT", "/v1/tenants/noisy/quota", Some(ADMIN), Some(unbounded.to_string().into())).await?;
    deploy(node.addr, "hello", runplane_examples::HELLO).await?;
    deploy(node.addr, "cpu-burn", runplane_examples::CPU_BURN).await?;
    let burn_path = format!("/apps/cpu-burn/?iters={iters}");
    let started = Instant::now();
    load::request(node.addr, "GET", &burn_path, Some(&a), None).await?;
    let burn_ms = started.elapsed().as_secs_f64() * 1e3;

    // `BENCH_B_PATH` points B elsewhere (e.g. `/healthz`, or a route with nothing
    // deployed) to see which part of a request the flood slows.
    let b_path = std::env::var("BENCH_B_PATH").unwrap_or_else(|_| "/apps/hello/".into());
    let rounds: u32 = std::env::var("BENCH_ROUNDS").ok().and_then(|v| v.parse().ok()).filter(|&n| n > 0).unwrap_or(4);
    let round = duration / rounds;
    let (mut alone, mut flooded) = (Vec::new(), Vec::new());
    let (mut a_done, mut a_refused) = (0usize, 0u64);
    for _ in 0..rounds {
        alone.push(paced("B alone", node.addr, &b_path, &b, round).await);
        let flooders: Vec<_> = (0..flood)
            .map(|_| {
                let (path, key) = (burn_path.clone(), a.clone());
                let addr = node.addr;
                tokio::spawn(async move { load::one_connection(addr, &path, Some(&key), round + Duration::from_millis(700)).await })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(500)).await;
        flooded.push(paced("B under A's flood", node.addr, &b_path, &b, round).await);
        for f in flooders {
            let (l, e) = f.await?;
            a_done += l.len();
            a_refused += e;
        }
    }
    let (alone, flooded) = (load::Result::combine("B alone", alone), load::Result::combine("B under A's flood", flooded));
    drop(node);

    // 2. Scheduling on vs off: both nodes up at once, loaded in turns.
    let (on_dir, off_dir) = (tempfile::tempdir()?, tempfile::tempdir()?);
    let (on, off) = (start(on_dir.path(), true).await?, start(off_dir.path(), false).await?);
    // Enterprise: its concurrency quota (128) is above the 32 connections, so the run
    // measures the machinery, not a quota holding the tenant back.
    let (on_key, off_key) = (tenant(on.addr, "bench", "enterprise").await?, tenant(off.addr, "bench", "enterprise").await?);
    deploy(on.addr, "hello", runplane_examples::HELLO).await?;
    deploy(off.addr, "hello", runplane_examples::HELLO).await?;
    let (mut with, mut without) = (Vec::new(), Vec::new());
    for r in 0..rounds {
        // Which node goes first alternates too.
        for node_on in [r % 2 == 0, r % 2 == 1] {
            if node_on {
                with.push(load::load("quotas + scheduler on", on.addr, "/apps/hello/", Some(&on_key), round, 32).await);
            } else {
                without.push(load::load("quotas + scheduler off", off.addr, "/apps/hello/", Some(&off_key), round, 32).await);
            }
        }
    }
    let (with, without) = (load::Result::combine("quotas + scheduler on", with), load::Result::combine("quotas + scheduler off", without));
    drop((on, off));

    let ratio_p99 = flooded.p99_us / alone.p99_us.max(1.0);
    println!("\nnoisy neighbour: A floods cpu-burn ({iters} iterations ≈ {burn_ms:.0} ms alone) on {flood} connections; B sends hello every {PACE_MS} ms; {rounds} rounds of each");
    println!("{:<24} {:>9} {:>10} {:>10}", "B's latency", "requests", "p50 µs", "p99 µs");
    for r in [&alone, &flooded] {
        println!("{:<24} {:>9} {:>10.0} {:>10.0}", r.name, r.requests, r.p50_us, r.p99_us);
    }
    println!("B p99 under flood / alone = {ratio_p99:.2}   (target ≤ 2)");
    println!("A completed {a_done} cpu-burn requests ({a_refused} refused or failed) meanwhile; B errors: {}", flooded.errors);
    println!("\n{:<26} {:>10} {:>12} {:>10} {:>10}", "hello, 32 connections", "requests", "req/s", "p50 µs", "p99 µs");
    for r in [&with, &without] {
        println!("{:<26} {:>10} {:>12.0} {:>10.0} {:>10.0}", r.name, r.requests, r.rps, r.p50_us, r.p99_us);
    }
    let ratio_rps = with.rps / without.rps.max(1.0);
    println!("on / off = {ratio_rps:.3}   (target ≥ 0.9)");

    let json = json!({
        "benchmark": "tenancy",
        "seconds": seconds,
        "rounds": rounds,
        "noisy_neighbour": {
            "flood_connections": flood, "burn_iters": iters, "burn_ms_alone": burn_ms, "pace_ms": PACE_MS,
            "b_alone": {"requests": alone.requests, "errors": alone.errors, "p50_us": alone.p50_us, "p99_us": alone.p99_us},
            "b_under_flood": {"requests": flooded.requests, "errors": flooded.errors, "p50_us": flooded.p50_us, "p99_us": flooded.p99_us},
            "a_completed": a_done, "a_refused_or_failed": a_refused,
            "ratio_p99": ratio_p99, "target_ratio_p99": 2.0,
        },
        "scheduling_overhead": {
            "on": {"requests": with.requests, "rps": with.rps, "p50_us": with.p50_us, "p99_us": with.p99_us},
            "off": {"requests": without.requests, "rps": without.rps, "p50_us": without.p50_us, "p99_us": without.p99_us},
            "ratio_rps": ratio_rps, "target_ratio_rps": 0.9,
        },
    });
    if let Some(parent) = std::path::Path::new(&out).parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&out, serde_json::to_string_pretty(&json)?)?;
    println!("wrote {out}");
    Ok(())
}

async fn start(dir: &std::path::Path, scheduling: bool) -> anyhow::Result<runplane_node::RunningNode> {
    let mut config = runplane_node::NodeConfig::embedded("127.0.0.1:0".parse()?, dir.to_path_buf());
    config.admin_token = Some(ADMIN.into());
    config.scheduler.enabled = scheduling;
    if let Some(n) = std::env::var("BENCH_CPU_SLOTS").ok().and_then(|v| v.parse().ok()) {
        config.sandbox.cpu_slots = n;
    }
    if let Some(n) = std::env::var("BENCH_CPU_BOUND_SLOTS").ok().and_then(|v| v.parse().ok()) {
        config.sandbox.cpu_bound_slots = n;
    }
    if std::env::var("BENCH_DEMOTE").is_ok_and(|v| v == "0") {
        config.sandbox.demote_cpu_bound = false;
    }
    if std::env::var("BENCH_PIN_THREADS").is_ok_and(|v| v == "1") {
        config.sandbox.pin_threads = true;
    }
    if !scheduling {
        // No CPU turns either: as many guests run at once as the pool holds, on
        // threads the operating system schedules like any other.
        config.sandbox.cpu_slots = config.sandbox.max_instances;
        config.sandbox.cpu_bound_slots = config.sandbox.max_instances;
        config.sandbox.demote_cpu_bound = false;
        config.sandbox.pin_threads = false;
    }
    runplane_node::Node::start(config).await
}

async fn tenant(addr: SocketAddr, id: &str, tier: &str) -> anyhow::Result<String> {
    let created = load::request(addr, "POST", "/v1/tenants", Some(ADMIN), Some(json!({"id": id, "tier": tier}).to_string().into())).await?;
    Ok(serde_json::from_slice::<serde_json::Value>(&created)?["api_key"].as_str().unwrap_or_default().to_owned())
}

async fn deploy(addr: SocketAddr, name: &str, wasm: &'static [u8]) -> anyhow::Result<()> {
    load::request(addr, "POST", &format!("/v1/capabilities?name={name}&version=1.0.0"), Some(ADMIN), Some(Bytes::from_static(wasm))).await?;
    load::request(addr, "POST", "/v1/deployments", Some(ADMIN), Some(json!({"capability": name, "version": "1.0.0", "route": name}).to_string().into())).await?;
    Ok(())
}

/// One request every `PACE_MS` on one keep-alive connection (a light, steady tenant).
async fn paced(name: &str, addr: SocketAddr, path: &str, key: &str, duration: Duration) -> load::Result {
    let mut latencies = Vec::new();
    let mut errors = 0;
    let connect = async {
        let stream = tokio::net::TcpStream::connect(addr).await.ok()?;
        hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(stream)).await.ok()
    };
    if let Some((mut sender, conn)) = connect.await {
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                eprintln!("B's connection ended: {e:?}");
            }
        });
        let end = Instant::now() + duration;
        let mut tick = tokio::time::interval(Duration::from_millis(PACE_MS));
        while Instant::now() < end {
            tick.tick().await;
            let Ok(req) = hyper::Request::builder().uri(path).header("host", addr.to_string()).header("authorization", format!("Bearer {key}")).body(Empty::new())
            else {
                break;
            };
            // Wait until the keep-alive connection has finished the previous exchange.
            if let Err(e) = sender.ready().await {
                eprintln!("B's connection closed: {e:?}");
                errors += 1;
                break;
            }
            let started = Instant::now();
            match sender.send_request(req).await {
                Ok(resp) if resp.status().is_success() => {
                    let _ = resp.into_body().collect().await;
                    latencies.push(started.elapsed().as_micros() as u64);
                }
                Ok(resp) => {
                    let _ = resp.into_body().collect().await;
                    errors += 1;
                }
                Err(e) => {
                    eprintln!("B's connection failed after {:?}: {e}", started.elapsed());
                    errors += 1;
                    break;
                }
            }
        }
    }
    load::Result::from_latencies(name, latencies, errors, duration.as_secs_f64())
}
