//! Durable audit appends per second with group commit (entry, leaf hash, stored
//! subtree hashes and head, one fsync'd transaction per batch) at 1 and 64 concurrent
//! writers, next to the raw SHA-256 rate of this machine: the physical limit is two
//! hashes per leaf (event hash and leaf hash) plus ~1/15 interior hash. Prints a table
//! and writes JSON (default `target/bench/audit.json`; `BENCH_OUT` overrides).
//!
//! Usage: `cargo bench -p runplane-audit --bench append -- [SECONDS]`

use std::time::{Duration, Instant};

use runplane_audit::{AuditEvent, AuditStore, LogId, Outcome};

fn event(n: u64) -> AuditEvent {
    AuditEvent {
        protocol_version: "1.0".into(),
        event_id: format!("00000000-0000-4000-8000-{n:012}"),
        time: runplane_audit::rfc3339_utc(1_795_000_000_000_000_000 + u128::from(n)),
        actor: "tenant:bench/key_0123456789abcdef".into(),
        tenant: Some("bench".into()),
        action: "invoke.http".into(),
        target: "hello".into(),
        outcome: Outcome::ok(Some(200)),
        context: None,
        request_digest: Some(format!("sha256:{}", runplane_cjson::sha256_hex(&n.to_le_bytes()))),
        response_digest: Some(format!("sha256:{}", runplane_cjson::sha256_hex(&(n + 1).to_le_bytes()))),
        capability_digest: Some(runplane_cjson::sha256_hex(b"hello")),
        binding_set_version: Some("sha256:0123456789abcdef".into()),
        config_version: Some("sha256:0123456789abcdef".into()),
        usage: None,
        details: Default::default(),
    }
}

async fn run(writers: usize, duration: Duration) -> anyhow::Result<f64> {
    let dir = tempfile::tempdir()?;
    let signer = runplane_audit::NoteSigner::new("runplane/bench", [1; 32])?;
    let store = AuditStore::open(&dir.path().join("audit.db"), signer).await?;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..writers {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            while started.elapsed() < duration {
                store.append(LogId::tenant("bench"), &event(w as u64 * 1_000_000_000 + n)).await?;
                n += 1;
            }
            anyhow::Ok(n)
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await??;
    }
    let rate = total as f64 / started.elapsed().as_secs_f64();
    // Every acknowledged append is in the tree, which checks end to end.
    store.check(&LogId::tenant("bench")).await?;
    Ok(rate)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let seconds: u64 = std::env::args().skip(1).find_map(|s| s.parse().ok()).unwrap_or(5);
    let out = std::env::var("BENCH_OUT").unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/../../target/bench/audit.json").into());
    let duration = Duration::from_secs(seconds);
    let one = run(1, duration).await?;
    let many = run(64, duration).await?;
    let leaf = runplane_cjson::from_serialize(&event(1))?;
    let started = Instant::now();
    let mut hashes = 0u64;
    while started.elapsed() < Duration::from_secs(1) {
        for _ in 0..1000 {
            std::hint::black_box(runplane_audit::merkle::leaf_hash(leaf.as_bytes()));
        }
        hashes += 1000;
    }
    let hash_rate = hashes as f64 / started.elapsed().as_secs_f64();
    println!("\n{:<40} {:>14}", "durable audit appends (group commit)", "events/s");
    println!("{:<40} {:>14.0}", "1 writer", one);
    println!("{:<40} {:>14.0}", "64 writers", many);
    println!("{:<40} {:>14.0}", format!("raw SHA-256 of a {}-byte leaf", leaf.len()), hash_rate);
    println!("\n64 writers / (hash rate / 2) = {:.4}   (target ≥ 50,000 appends/s with 64 writers)", many / (hash_rate / 2.0));
    let json = serde_json::json!({"benchmark": "audit-append", "seconds": seconds, "appends_per_s_1_writer": one, "appends_per_s_64_writers": many, "sha256_per_s": hash_rate, "leaf_bytes": leaf.len()});
    if let Some(parent) = std::path::Path::new(&out).parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&out, serde_json::to_string_pretty(&json)?)?;
    println!("wrote {out}");
    Ok(())
}
