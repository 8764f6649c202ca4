//! The `hello` comparison from a separate load generator (issue 16): `wrk` against a
//! `runplane up` process (demo data, `hello` deployed, tenant key auth, durable audit)
//! and against `wasmtime serve` on the same `.wasm`, alternating the two in R rounds
//! so drift on the machine weighs on both.
//!
//! Needs `wrk` and `wasmtime` on PATH and a release `runplane` binary (`cargo build
//! --release -p runplane`; `RUNPLANE_BIN` overrides where it is looked for). Prints a
//! table and writes JSON (default `target/bench/wrk.json`).
//!
//! Usage: `cargo run --release -p runplane-bench --bin wrk-bench -- [SECONDS] [CONNECTIONS] [ROUNDS]`

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::json;

#[path = "load.rs"]
mod load;

/// Kills the process when dropped.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let seconds: u64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(8);
    let connections: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(32);
    let rounds: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(3);
    let out = std::env::var("BENCH_OUT").unwrap_or_else(|_| "target/bench/wrk.json".into());
    let runplane = std::env::var("RUNPLANE_BIN").unwrap_or_else(|_| "target/release/runplane".into());
    for (tool, install) in [("wrk", "apt-get install wrk"), ("wasmtime", "cargo install wasmtime-cli --version 48.0.8 (see README)")] {
        anyhow::ensure!(Command::new(tool).arg("--version").output().is_ok(), "{tool} is not on PATH; install it with {install}");
    }
    anyhow::ensure!(std::path::Path::new(&runplane).exists(), "no runplane binary at {runplane}; build it with cargo build --release -p runplane or set RUNPLANE_BIN");

    let dir = tempfile::tempdir()?;
    let rp_addr = free_addr()?;
    let _node = Running(
        Command::new(&runplane)
            .args(["up", "--listen", &rp_addr.to_string(), "--data-dir"])
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| anyhow::anyhow!("cannot start {runplane}: {e}"))?,
    );
    let creds_path = dir.path().join("demo-credentials.json");
    let started = Instant::now();
    while !creds_path.exists() {
        anyhow::ensure!(started.elapsed() < Duration::from_secs(60), "runplane up wrote no credentials within 60 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let creds: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&creds_path)?)?;
    let admin = creds["admin_token"].as_str().unwrap_or_default().to_owned();
    let key = creds["tenants"]["acme"].as_str().unwrap_or_default().to_owned();
    load::request(rp_addr, "POST", "/v1/capabilities?name=hello&version=1.0.0", Some(&admin), Some(Bytes::from_static(runplane_examples::HELLO))).await?;
    load::request(rp_addr, "POST", "/v1/deployments", Some(&admin), Some(json!({"capability": "hello", "version": "1.0.0"}).to_string().into())).await?;

    let wasm = dir.path().join("hello.wasm");
    std::fs::write(&wasm, runplane_examples::HELLO)?;
    let wt_addr = free_addr()?;
    let _wasmtime = Running(
        Command::new("wasmtime")
            .args(["serve", "--addr", &wt_addr.to_string(), "-S", "cli"])
            .arg(&wasm)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| anyhow::anyhow!("cannot start wasmtime serve: {e}"))?,
    );
    tokio::time::sleep(Duration::from_secs(2)).await;

    let auth = format!("Authorization: Bearer {key}");
    let mut rows = Vec::new();
    for round in 1..=rounds {
        let rp = wrk(&format!("http://{rp_addr}/apps/hello/"), Some(&auth), seconds, connections)?;
        let wt = wrk(&format!("http://{wt_addr}/"), None, seconds, connections)?;
        println!("round {round}: runplane {:.0} req/s ({} non-2xx), wasmtime serve {:.0} req/s, ratio {:.3}", rp.rps, rp.non_2xx, wt.rps, rp.rps / wt.rps);
        rows.push((round, rp, wt));
    }
    let json = json!({
        "benchmark": "wrk-hello",
        "seconds": seconds,
        "connections": connections,
        "rounds": rows.iter().map(|(r, rp, wt)| json!({"round": r, "runplane_rps": rp.rps, "runplane_non_2xx": rp.non_2xx, "wasmtime_serve_rps": wt.rps, "ratio": rp.rps / wt.rps})).collect::<Vec<_>>(),
    });
    if let Some(parent) = std::path::Path::new(&out).parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&out, serde_json::to_string_pretty(&json)?)?;
    println!("wrote {out}");
    Ok(())
}

/// What one wrk run reported.
struct Wrk {
    rps: f64,
    non_2xx: u64,
}

/// Runs `wrk -t1` against `url` and reads its summary.
fn wrk(url: &str, header: Option<&str>, seconds: u64, connections: usize) -> anyhow::Result<Wrk> {
    let mut cmd = Command::new("wrk");
    cmd.args(["-t1", &format!("-c{connections}"), &format!("-d{seconds}s")]);
    if let Some(h) = header {
        cmd.args(["-H", h]);
    }
    let out = cmd.arg(url).output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let field = |prefix: &str| text.lines().find_map(|l| l.trim().strip_prefix(prefix).and_then(|v| v.trim().parse::<f64>().ok()));
    let rps = field("Requests/sec:").ok_or_else(|| anyhow::anyhow!("wrk printed no Requests/sec for {url}: {text}"))?;
    Ok(Wrk { rps, non_2xx: field("Non-2xx or 3xx responses:").unwrap_or(0.0) as u64 })
}

/// A loopback address nothing listens on yet.
fn free_addr() -> anyhow::Result<SocketAddr> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}
