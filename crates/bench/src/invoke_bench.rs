//! Per-invocation cost of the `hello` component on the host alone (no HTTP server,
//! no audit): fresh store from the pooling allocator, instantiate, handle, collect.
//! Prints a table and writes JSON (default `target/bench/invoke.json`).
//!
//! Usage: `cargo run --release -p runplane-bench --bin invoke-bench -- [ITERATIONS]`

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use runplane_adapters::{object_blobs::ObjectBlobStore, memory_bus::InProcessBus, sqlite::SqliteStore, static_config::StaticConfig};
use runplane_host::{AllowList, Host, Invocation, SandboxConfig};
use runplane_ports::{ExecutionContext, Level, PortSet, Telemetry, TelemetryScope, TenantId};

struct NoTelemetry;
impl Telemetry for NoTelemetry {
    fn log(&self, _: &TelemetryScope, _: Level, _: &str, _: &str) {}
    fn counter(&self, _: &TelemetryScope, _: &str, _: u64, _: &[(String, String)]) {}
    fn histogram(&self, _: &TelemetryScope, _: &str, _: f64, _: &[(String, String)]) {}
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let iterations: usize = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(20_000);
    let out = std::env::var("BENCH_OUT").unwrap_or_else(|_| "target/bench/invoke.json".into());
    let dir = tempfile::tempdir()?;
    let mut sandbox = SandboxConfig::default();
    // A small pool keeps the address-space reservation small (for valgrind and friends).
    if let Some(n) = std::env::var("BENCH_MAX_INSTANCES").ok().and_then(|v| v.parse().ok()) {
        sandbox.max_instances = n;
    }
    let host = Host::new(sandbox, dir.path().join("cache"))?;
    let digest = runplane_cjson::sha256_hex(runplane_examples::HELLO);
    let cap = host.load("hello@1.0.0", &digest, runplane_examples::HELLO).await?;
    let sql = Arc::new(SqliteStore::open(&dir.path().join("ports.db")).await?);
    let ports = PortSet {
        records: sql.clone(),
        kv: sql.clone(),
        events: sql.clone(),
        secrets: Arc::new(runplane_secrets::EnvelopeSecrets::new(sql, runplane_secrets::KeyRing::generate()?.shared())),
        messaging: Arc::new(InProcessBus::new()),
        blobs: Arc::new(ObjectBlobStore::open(&dir.path().join("blobs"))?),
        config: Arc::new(StaticConfig::default()),
        telemetry: Arc::new(NoTelemetry),
    };
    let context = Arc::new(ExecutionContext {
        protocol_version: "1.0".into(),
        invocation_id: "bench".into(),
        session_id: "bench".into(),
        agent_id: "bench".into(),
        trace_id: "0af7651916cd43dd8448eb211c80319c".into(),
        execution_seed: 7,
        tenant: TenantId::new("bench")?,
        node_id: None,
        capability: "hello@1.0.0".into(),
        capability_digest: digest,
        accepted_at_unix_nanos: 0,
    });
    let mut times = Vec::with_capacity(iterations);
    let mut instantiations = Vec::with_capacity(iterations);
    for i in 0..iterations + 500 {
        let request = http::Request::builder().uri("http://hello.bench/").body(Bytes::new())?;
        let inv = Invocation { context: context.clone(), ports: ports.clone(), allow: AllowList::default(), journal: runplane_host::Journal::record(), limits: Default::default() };
        let started = Instant::now();
        let (result, report) = host.handle_http(&cap, inv, request).await;
        let took = started.elapsed();
        result?;
        if i >= 500 {
            times.push(took.as_nanos() as u64);
            instantiations.push(report.instantiate_ns);
        }
    }
    times.sort_unstable();
    instantiations.sort_unstable();
    let at = |v: &[u64], q: f64| v[((v.len() as f64 * q) as usize).min(v.len() - 1)] as f64 / 1000.0;
    let p = |q: f64| at(&times, q);
    let inst = |q: f64| at(&instantiations, q);
    println!("\n{:<34} {:>10} {:>10} {:>10}", "hello, host only", "p50 µs", "p99 µs", "per s");
    println!("{:<34} {:>10.1} {:>10.1} {:>10.0}", format!("{iterations} sequential invocations"), p(0.5), p(0.99), 1e6 / p(0.5));
    println!("{:<34} {:>10.1} {:>10.1} {:>10}", "  of which instantiation", inst(0.5), inst(0.99), "");
    println!("instantiation median {:.1} µs   (target < 50)", inst(0.5));
    let json = serde_json::json!({
        "benchmark": "invoke-hello", "iterations": iterations, "p50_us": p(0.5), "p99_us": p(0.99),
        "instantiate_p50_us": inst(0.5), "instantiate_p99_us": inst(0.99), "target_instantiate_p50_us": 50.0,
    });
    if let Some(parent) = std::path::Path::new(&out).parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&out, serde_json::to_string_pretty(&json)?)?;
    println!("wrote {out}");
    Ok(())
}
