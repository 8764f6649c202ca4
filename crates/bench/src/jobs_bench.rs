//! Job dispatch benchmark (issue: jobs and artifacts). Not a test.
//!
//! One node (embedded SQLite control store, durable audit), the `worker` task on route
//! `work`, `[jobs] max_running_per_tenant` = 64. C clients submit N jobs whose task
//! does nothing but answer (`{"op": "echo"}`), each over the HTTP API with a tenant
//! key; the bench reports the submit rate and the end-to-end dispatch rate: from the
//! first submit until the node's `runplane_job_attempts_total{outcome="passed"}` counts
//! all N (each job: inserted, claimed with its lease, run as a task with its audit
//! event and journal, ended in the store).
//!
//! Usage: `cargo run --release -p runplane-bench --bin jobs-bench -- [JOBS] [CLIENTS]`
//! (default 2000 jobs, 16 clients); JSON to `target/bench/jobs.json` (or `$BENCH_OUT`).

#[path = "load.rs"]
mod load;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::{Value, json};

use load::{percentile, request};

const ADMIN: &str = "bench-admin-token-0123456789abcdef";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let jobs: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(2000);
    let clients: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(16).max(1);
    let out = std::env::var("BENCH_OUT").unwrap_or_else(|_| "target/bench/jobs.json".into());

    let dir = tempfile::tempdir()?;
    let mut config = runplane_node::NodeConfig::embedded("127.0.0.1:0".parse()?, dir.path().to_path_buf());
    config.admin_token = Some(ADMIN.into());
    config.jobs.max_running_per_tenant = 64;
    let node = runplane_node::Node::start(config).await?;
    let addr = node.addr;
    let created = request(addr, "POST", "/v1/tenants", Some(ADMIN), Some(json!({"id": "bench", "tier": "enterprise"}).to_string().into())).await?;
    let key = serde_json::from_slice::<Value>(&created)?["api_key"].as_str().unwrap_or_default().to_owned();
    request(addr, "POST", "/v1/capabilities?name=worker&version=1.0.0", Some(ADMIN), Some(Bytes::from_static(runplane_examples::WORKER))).await?;
    request(addr, "POST", "/v1/deployments", Some(ADMIN), Some(json!({"capability": "worker", "version": "1.0.0", "route": "work"}).to_string().into())).await?;

    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let submitters: Vec<_> = (0..clients)
        .map(|_| {
            let (next, key) = (next.clone(), key.clone());
            tokio::spawn(async move {
                let (mut latencies, mut errors) = (Vec::new(), 0u64);
                while next.fetch_add(1, Ordering::Relaxed) < jobs {
                    let t = Instant::now();
                    match request(addr, "POST", "/v1/jobs", Some(&key), Some(json!({"route": "work", "input": {"op": "echo"}}).to_string().into())).await {
                        Ok(_) => latencies.push(t.elapsed().as_micros() as u64),
                        Err(_) => errors += 1,
                    }
                }
                (latencies, errors)
            })
        })
        .collect();
    let (mut submit_us, mut errors) = (Vec::new(), 0);
    for s in submitters {
        let (l, e) = s.await?;
        submit_us.extend(l);
        errors += e;
    }
    let submitted = started.elapsed();
    submit_us.sort_unstable();
    let accepted = submit_us.len();
    let finished = loop {
        let passed = passed_attempts(addr).await?;
        if passed >= accepted as u64 {
            break started.elapsed();
        }
        anyhow::ensure!(started.elapsed() < Duration::from_secs(600), "only {passed} of {accepted} jobs passed within 10 minutes");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let submit_rate = accepted as f64 / submitted.as_secs_f64();
    let dispatch_rate = accepted as f64 / finished.as_secs_f64();
    println!("{accepted} jobs submitted by {clients} clients ({errors} refused)");
    println!("{:<40} {:>12}", "submit rate (jobs/s)", format!("{submit_rate:.0}"));
    println!("{:<40} {:>12}", "submit latency p50 / p99 (ms)", format!("{:.1} / {:.1}", percentile(&submit_us, 0.5) / 1000.0, percentile(&submit_us, 0.99) / 1000.0));
    println!("{:<40} {:>12}", "end to end: all passed (jobs/s)", format!("{dispatch_rate:.0}"));
    println!("{:<40} {:>12}", "last job passed after (s)", format!("{:.2}", finished.as_secs_f64()));
    let json = json!({
        "benchmark": "job-dispatch", "jobs": accepted, "clients": clients, "refused": errors,
        "submit_jobs_per_second": submit_rate, "submit_p50_ms": percentile(&submit_us, 0.5) / 1000.0, "submit_p99_ms": percentile(&submit_us, 0.99) / 1000.0,
        "dispatch_jobs_per_second": dispatch_rate, "all_passed_after_secs": finished.as_secs_f64(),
    });
    if let Some(parent) = std::path::Path::new(&out).parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&out, serde_json::to_string_pretty(&json)?)?;
    println!("wrote {out}");
    node.drain().await;
    Ok(())
}

/// `runplane_job_attempts_total{outcome="passed"}` from the node's metrics.
async fn passed_attempts(addr: SocketAddr) -> anyhow::Result<u64> {
    let text = String::from_utf8(request(addr, "GET", "/metrics", None, None).await?.to_vec())?;
    Ok(text
        .lines()
        .find(|l| l.starts_with("runplane_job_attempts_total{outcome=\"passed\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0) as u64)
}
