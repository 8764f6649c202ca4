//! Records put/get through Runplane's PostgreSQL adapter (the record-store port:
//! runtime role, row-level security, tenant set per transaction) against the same
//! operations with raw sqlx on the same database (owner role, no RLS, one statement
//! each). Prints a table and the ratio; writes JSON (default `target/bench/records.json`).
//!
//! Usage: `cargo run --release -p runplane-bench --bin records-bench -- [SECONDS] [CONCURRENCY]`
//! PostgreSQL from `RUNPLANE_TEST_POSTGRES_URL` (default `postgres://postgres@127.0.0.1:5432/postgres`).

use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use runplane_adapters::postgres::{PgSettings, PgStore, provision};
use runplane_adapters::testing;
use runplane_ports::{RecordStore, TenantId};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

const BODY: &str = r#"{"currency":"EUR","item":"tea","quantity":2,"status":"open"}"#;

/// Runs `op(worker, n)` from `workers` tasks for `duration`; returns ops/s.
async fn measure<F, Fut>(workers: usize, duration: Duration, op: F) -> anyhow::Result<f64>
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
{
    let op = Arc::new(op);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..workers {
        let op = op.clone();
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            while started.elapsed() < duration {
                op(w, n).await?;
                n += 1;
            }
            anyhow::Ok(n)
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await??;
    }
    Ok(total as f64 / started.elapsed().as_secs_f64())
}

async fn raw_put(pool: &PgPool, id: &str) -> anyhow::Result<()> {
    sqlx::query(
        "INSERT INTO records (tenant_id, collection, id, revision, body) VALUES ($1, $2, $3, 1, $4)
         ON CONFLICT (tenant_id, collection, id) DO UPDATE SET revision = records.revision + 1, body = EXCLUDED.body
         RETURNING revision",
    )
    .bind("bench")
    .bind("orders")
    .bind(id)
    .bind(BODY)
    .fetch_one(pool)
    .await?;
    Ok(())
}

async fn raw_get(pool: &PgPool, id: &str) -> anyhow::Result<()> {
    sqlx::query("SELECT revision, body FROM records WHERE tenant_id = $1 AND collection = $2 AND id = $3")
        .bind("bench")
        .bind("orders")
        .bind(id)
        .fetch_optional(pool)
        .await?;
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let seconds: u64 = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(5);
    let workers: usize = std::env::args().nth(2).and_then(|s| s.parse().ok()).unwrap_or(16);
    let out = std::env::var("BENCH_OUT").unwrap_or_else(|_| "target/bench/records.json".into());
    let duration = Duration::from_secs(seconds);
    let url = testing::postgres_url();
    let settings = PgSettings {
        admin: PgConnectOptions::from_str(&url)?,
        database: testing::unique_name("rp_bench"),
        runtime_role: "runplane_bench_runtime".into(),
        runtime_password: None,
        timeout: Duration::from_secs(5),
        max_connections: workers as u32,
    };
    provision(&settings).await?;
    let store = Arc::new(PgStore::connect_lazy(&settings));
    // The owner bypasses nothing here: FORCE RLS applies to it too, so the raw baseline
    // runs as a superuser, the fastest path PostgreSQL offers.
    let raw = PgPoolOptions::new().max_connections(workers as u32).connect_with(settings.admin.clone().database(&settings.database)).await?;
    let tenant = TenantId::new("bench")?;

    let ids = |w: usize, n: u64| format!("w{w}-{}", n % 1000);
    let s = store.clone();
    let t = tenant.clone();
    let rp_put = measure(workers, duration, move |w, n| {
        let (s, t) = (s.clone(), t.clone());
        async move {
            s.put(&t, "orders", &ids(w, n), BODY, None).await?;
            Ok(())
        }
    })
    .await?;
    let r = raw.clone();
    let raw_put_rate = measure(workers, duration, move |w, n| {
        let r = r.clone();
        async move { raw_put(&r, &ids(w, n)).await }
    })
    .await?;
    let s = store.clone();
    let t = tenant.clone();
    let rp_get = measure(workers, duration, move |w, n| {
        let (s, t) = (s.clone(), t.clone());
        async move {
            s.get(&t, "orders", &ids(w, n)).await?;
            Ok(())
        }
    })
    .await?;
    let r = raw.clone();
    let raw_get_rate = measure(workers, duration, move |w, n| {
        let r = r.clone();
        async move { raw_get(&r, &ids(w, n)).await }
    })
    .await?;

    println!("\nrecords on PostgreSQL, {workers} concurrent workers, {seconds} s each");
    println!("{:<10} {:>16} {:>16} {:>8}", "op", "runplane ops/s", "raw sqlx ops/s", "ratio");
    println!("{:<10} {:>16.0} {:>16.0} {:>8.2}", "put", rp_put, raw_put_rate, rp_put / raw_put_rate);
    println!("{:<10} {:>16.0} {:>16.0} {:>8.2}", "get", rp_get, raw_get_rate, rp_get / raw_get_rate);
    println!("(target: runplane / raw ≥ 0.70)");
    let json = serde_json::json!({
        "benchmark": "records-postgres", "seconds": seconds, "workers": workers,
        "put": {"runplane_ops_per_s": rp_put, "raw_sqlx_ops_per_s": raw_put_rate, "ratio": rp_put / raw_put_rate},
        "get": {"runplane_ops_per_s": rp_get, "raw_sqlx_ops_per_s": raw_get_rate, "ratio": rp_get / raw_get_rate},
    });
    if let Some(parent) = std::path::Path::new(&out).parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&out, serde_json::to_string_pretty(&json)?)?;
    println!("wrote {out}");
    store.pool().close().await;
    raw.close().await;
    let mut conn = sqlx::ConnectOptions::connect(&settings.admin).await?;
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", settings.database))).execute(&mut conn).await?;
    Ok(())
}
