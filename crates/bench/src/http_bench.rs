//! HTTP benchmark of the `hello` component (issue: node core).
//!
//! Drives each target with the same closed-loop load generator (C keep-alive
//! connections for D seconds) and prints requests/s, p50 and p99, then the ratios,
//! and writes JSON (default `target/bench/http.json`).
//!
//! Targets: Runplane (tenant key auth + durable audit on every request), a native
//! hyper "hello" server (the ceiling), and `wasmtime serve` on the same `.wasm` when a
//! `wasmtime` binary is on PATH (extra flags from `WASMTIME_SERVE_FLAGS`).
//!
//! Then, on the Runplane node: a lone request at a time (p50/p99 of one keep-alive
//! connection, every answer durable in the audit log) beside this disk's raw
//! `fdatasync` latency (4 KiB append + `fdatasync`, the floor of a durable commit), and
//! the bytes the hot audit store keeps and the process writes per invocation.
//!
//! Beside req/s each target gets its CPU cost per request: the CPU time the server and
//! this process's load generator spent (user + system, from `/proc`), over the requests
//! answered. On a machine whose cores are all busy, throughput is cores / that cost, and
//! the cost varies far less from run to run than req/s does.
//!
//! Usage: `cargo run --release -p runplane-bench --bin http-bench -- [SECONDS] [CONNECTIONS]`
//! (`HTTP_BENCH_INLINE=0`: every guest handed to the sandbox threads, for comparison;
//! `HTTP_BENCH_CONTROL=postgres`: the control store on PostgreSQL, as several nodes
//! would share it — a fresh database at `RUNPLANE_TEST_POSTGRES_URL`'s server;
//! `HTTP_BENCH_AUDIT=postgres`: the audit store there too).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::json;

#[path = "load.rs"]
mod load;

use load::{load, request};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let seconds: u64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(10);
    let connections: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(32);
    let out = std::env::var("BENCH_OUT").unwrap_or_else(|_| "target/bench/http.json".into());
    let duration = Duration::from_secs(seconds);

    let mut results = Vec::new();

    // Runplane: a real node, a real tenant key, audit on.
    let dir = tempfile::tempdir()?;
    let mut config = runplane_node::NodeConfig::embedded("127.0.0.1:0".parse()?, dir.path().to_path_buf());
    let admin = "bench-admin-token-0123456789abcdef".to_string();
    config.admin_token = Some(admin.clone());
    // HTTP_BENCH_INLINE=0 measures the node with every guest handed to the sandbox threads.
    config.sandbox.inline_light_guests = std::env::var("HTTP_BENCH_INLINE").map_or(true, |v| v != "0");
    let on_postgres = |var: &str| std::env::var(var).is_ok_and(|v| v == "postgres");
    let (pg_control, pg_audit) = (on_postgres("HTTP_BENCH_CONTROL"), on_postgres("HTTP_BENCH_AUDIT"));
    if pg_control || pg_audit {
        let url = std::env::var("RUNPLANE_TEST_POSTGRES_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
        config.backends.insert(
            "pg".into(),
            runplane_node::config::Backend::Postgres {
                url,
                database: format!("rp_bench_{}", std::process::id()),
                runtime_role: "runplane_bench_runtime".into(),
                runtime_password: None,
                max_connections: 16,
            },
        );
        config.control_store = pg_control.then(|| "pg".into());
        config.audit_store = pg_audit.then(|| "pg".into());
    }
    let stores = format!("control on {}, audit on {}", if pg_control { "postgres" } else { "sqlite" }, if pg_audit { "postgres" } else { "sqlite" });
    println!("runplane: {stores}");
    let node = runplane_node::Node::start(config).await?;
    let key = setup_runplane(node.addr, &admin).await?;
    let audit_db = dir.path().join("audit.db");
    let stored = |db: std::path::PathBuf| async move { if pg_audit { Ok(0) } else { load::stored_bytes(&db).await } };
    let (stored_before, written_before) = (stored(audit_db.clone()).await?, load::written_bytes());
    let cpu_before = cpu_seconds("self");
    results.push(load("runplane (auth + audit)", node.addr, "/apps/hello/", Some(&key), duration, connections).await);
    let mut cpu_us = vec![cpu_per_request(cpu_before, cpu_seconds("self"), &results[0])];
    let invocations = results[0].requests.max(1) as f64;
    let stored_per = (stored(audit_db.clone()).await? as f64 - stored_before as f64) / invocations;
    let written_per = load::written_bytes().zip(written_before).map(|(a, b)| (a - b) as f64 / invocations);

    // One request at a time: the latency a lone caller sees, durable commit included.
    let (lone, lone_errors) = load::one_connection(node.addr, "/apps/hello/", Some(&key), Duration::from_secs(seconds.clamp(2, 5))).await;
    let lone = load::Result::from_latencies("runplane, one at a time", lone, lone_errors, seconds.clamp(2, 5) as f64);
    let floor = fdatasync_floor(dir.path(), 2000)?;

    // Native hyper hello: the ceiling for this machine and load generator.
    let native = native_hello().await?;
    let cpu_before = cpu_seconds("self");
    results.push(load("native hyper", native, "/", None, duration, connections).await);
    cpu_us.push(cpu_per_request(cpu_before, cpu_seconds("self"), &results[1]));

    // wasmtime serve, if installed.
    let wasm_path = dir.path().join("hello.wasm");
    std::fs::write(&wasm_path, runplane_examples::HELLO)?;
    let wasmtime_addr: SocketAddr = "127.0.0.1:18799".parse()?;
    // Extra `wasmtime serve` flags, e.g. WASMTIME_SERVE_FLAGS="-O pooling-allocator=y".
    let extra: Vec<String> = std::env::var("WASMTIME_SERVE_FLAGS").unwrap_or_default().split_whitespace().map(str::to_owned).collect();
    let wasmtime = std::process::Command::new("wasmtime")
        .args(["serve", "--addr", &wasmtime_addr.to_string(), "-S", "cli"])
        .args(&extra)
        .arg(&wasm_path)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
    let mut wasmtime_result = None;
    match wasmtime {
        Ok(mut child) => {
            tokio::time::sleep(Duration::from_secs(2)).await;
            let server = child.id().to_string();
            let cpu_before = sum(cpu_seconds("self"), cpu_seconds(&server));
            let r = load("wasmtime serve", wasmtime_addr, "/", None, duration, connections).await;
            let cpu_after = sum(cpu_seconds("self"), cpu_seconds(&server));
            let _ = child.kill();
            if r.requests > 0 {
                wasmtime_result = Some(r.rps);
                cpu_us.push(cpu_per_request(cpu_before, cpu_after, &r));
                results.push(r);
            } else {
                eprintln!("wasmtime serve answered no request; skipped");
            }
        }
        Err(_) => eprintln!("wasmtime is not installed; the `wasmtime serve` comparison is skipped"),
    }

    println!("\n{:<28} {:>10} {:>8} {:>12} {:>10} {:>10} {:>14}", "target", "requests", "errors", "req/s", "p50 µs", "p99 µs", "CPU µs / req");
    for (r, cpu) in results.iter().zip(&cpu_us) {
        let cpu = cpu.map_or("-".to_owned(), |c| format!("{c:.0}"));
        println!("{:<28} {:>10} {:>8} {:>12.0} {:>10.0} {:>10.0} {:>14}", r.name, r.requests, r.errors, r.rps, r.p50_us, r.p99_us, cpu);
    }
    let runplane_rps = results[0].rps;
    let native_rps = results[1].rps;
    println!("\nrunplane / native hyper   = {:.3}", runplane_rps / native_rps);
    if let Some(w) = wasmtime_result {
        println!("runplane / wasmtime serve = {:.3}   (target ≥ 1.0)", runplane_rps / w);
    }
    println!("\nlone request (1 connection): {} requests, p50 {:.0} µs, p99 {:.0} µs", lone.requests, lone.p50_us, lone.p99_us);
    println!("raw fdatasync (4 KiB append): p50 {:.0} µs, p99 {:.0} µs ({:.0} syncs/s at p50)", floor.0, floor.1, 1e6 / floor.0.max(1.0));
    match written_per {
        Some(w) => println!("per invocation: {stored_per:.0} bytes kept in the hot audit store, {w:.0} bytes written by the process"),
        None => println!("per invocation: {stored_per:.0} bytes kept in the hot audit store"),
    }

    let json = json!({
        "benchmark": "http-hello",
        "stores": stores,
        "seconds": seconds,
        "connections": connections,
        "results": results.iter().zip(&cpu_us).map(|(r, cpu)| json!({"target": r.name, "requests": r.requests, "errors": r.errors, "rps": r.rps, "p50_us": r.p50_us, "p99_us": r.p99_us, "cpu_us_per_request": cpu})).collect::<Vec<_>>(),
        "ratio_runplane_to_native": runplane_rps / native_rps,
        "ratio_runplane_to_wasmtime_serve": wasmtime_result.map(|w| runplane_rps / w),
        "lone_request": {"requests": lone.requests, "errors": lone.errors, "p50_us": lone.p50_us, "p99_us": lone.p99_us},
        "fdatasync_4k": {"p50_us": floor.0, "p99_us": floor.1},
        "audit_bytes_stored_per_invocation": stored_per,
        "bytes_written_per_invocation": written_per,
    });
    if let Some(parent) = std::path::Path::new(&out).parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&out, serde_json::to_string_pretty(&json)?)?;
    println!("wrote {out}");
    Ok(())
}

async fn setup_runplane(addr: SocketAddr, admin: &str) -> anyhow::Result<String> {
    let created = request(addr, "POST", "/v1/tenants", Some(admin), Some(json!({"id": "bench"}).to_string().into())).await?;
    let key = serde_json::from_slice::<serde_json::Value>(&created)?["api_key"].as_str().unwrap_or_default().to_owned();
    request(addr, "POST", "/v1/capabilities?name=hello&version=1.0.0", Some(admin), Some(Bytes::from_static(runplane_examples::HELLO))).await?;
    request(addr, "POST", "/v1/deployments", Some(admin), Some(json!({"capability": "hello", "version": "1.0.0"}).to_string().into())).await?;
    Ok(key)
}

/// CPU seconds (user + system) process `pid` ("self" for this one) has used so far.
fn cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start at field 3.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i - 3).and_then(|v| v.parse::<f64>().ok());
    // utime and stime are fields 14 and 15, in USER_HZ (100 per second on Linux).
    Some((ticks(14)? + ticks(15)?) / 100.0)
}

fn sum(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    Some(a? + b?)
}

/// CPU µs spent per answered request between two readings.
fn cpu_per_request(before: Option<f64>, after: Option<f64>, run: &load::Result) -> Option<f64> {
    Some((after? - before?) * 1e6 / run.requests.max(1) as f64)
}

/// The disk's durable-write floor where the data dir is: p50 and p99 (µs) of a 4 KiB
/// append followed by `fdatasync`, `n` times.
fn fdatasync_floor(dir: &std::path::Path, n: usize) -> anyhow::Result<(f64, f64)> {
    use std::io::Write as _;
    let path = dir.join("fdatasync-probe");
    let mut file = std::fs::OpenOptions::new().create(true).append(true).open(&path)?;
    let page = [0x5au8; 4096];
    let mut lat = Vec::with_capacity(n);
    for _ in 0..n {
        file.write_all(&page)?;
        let t = std::time::Instant::now();
        file.sync_data()?;
        lat.push(t.elapsed().as_micros() as u64);
    }
    drop(file);
    std::fs::remove_file(&path)?;
    lat.sort_unstable();
    Ok((load::percentile(&lat, 0.5), load::percentile(&lat, 0.99)))
}

async fn native_hello() -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let svc = service_fn(|_req| async { Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from_static(b"hello, world\n")))) });
                let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
            });
        }
    });
    Ok(addr)
}

