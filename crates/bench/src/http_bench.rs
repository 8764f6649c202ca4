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
//! Usage: `cargo run --release -p runplane-bench --bin http-bench -- [SECONDS] [CONNECTIONS]`

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
    let node = runplane_node::Node::start(config).await?;
    let key = setup_runplane(node.addr, &admin).await?;
    results.push(load("runplane (auth + audit)", node.addr, "/apps/hello/", Some(&key), duration, connections).await);

    // Native hyper hello: the ceiling for this machine and load generator.
    let native = native_hello().await?;
    results.push(load("native hyper", native, "/", None, duration, connections).await);

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
            let r = load("wasmtime serve", wasmtime_addr, "/", None, duration, connections).await;
            let _ = child.kill();
            if r.requests > 0 {
                wasmtime_result = Some(r.rps);
                results.push(r);
            } else {
                eprintln!("wasmtime serve answered no request; skipped");
            }
        }
        Err(_) => eprintln!("wasmtime is not installed; the `wasmtime serve` comparison is skipped"),
    }

    println!("\n{:<28} {:>10} {:>8} {:>12} {:>10} {:>10}", "target", "requests", "errors", "req/s", "p50 µs", "p99 µs");
    for r in &results {
        println!("{:<28} {:>10} {:>8} {:>12.0} {:>10.0} {:>10.0}", r.name, r.requests, r.errors, r.rps, r.p50_us, r.p99_us);
    }
    let runplane_rps = results[0].rps;
    let native_rps = results[1].rps;
    println!("\nrunplane / native hyper   = {:.3}", runplane_rps / native_rps);
    if let Some(w) = wasmtime_result {
        println!("runplane / wasmtime serve = {:.3}   (target ≥ 0.8)", runplane_rps / w);
    }

    let json = json!({
        "benchmark": "http-hello",
        "seconds": seconds,
        "connections": connections,
        "results": results.iter().map(|r| json!({"target": r.name, "requests": r.requests, "errors": r.errors, "rps": r.rps, "p50_us": r.p50_us, "p99_us": r.p99_us})).collect::<Vec<_>>(),
        "ratio_runplane_to_native": runplane_rps / native_rps,
        "ratio_runplane_to_wasmtime_serve": wasmtime_result.map(|w| runplane_rps / w),
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

