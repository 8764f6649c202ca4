//! The closed-loop load generator the HTTP benchmarks share, and a one-shot request.
#![allow(dead_code)] // each bench binary includes this file and uses part of it

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

/// What one load run measured.
#[allow(dead_code)]
pub struct Result {
    pub name: String,
    pub requests: u64,
    pub errors: u64,
    pub rps: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    /// Every request's latency, sorted (to combine runs).
    pub latencies_us: Vec<u64>,
    pub seconds: f64,
}

impl Result {
    /// What `seconds` of load measured: the successful requests' latencies and the
    /// failures.
    pub fn from_latencies(name: &str, mut latencies: Vec<u64>, errors: u64, seconds: f64) -> Result {
        latencies.sort_unstable();
        Result {
            name: name.into(),
            requests: latencies.len() as u64,
            errors,
            rps: latencies.len() as f64 / seconds.max(1e-9),
            p50_us: percentile(&latencies, 0.50),
            p99_us: percentile(&latencies, 0.99),
            latencies_us: latencies,
            seconds,
        }
    }

    /// Several runs of the same load as one: requests over their total time.
    #[allow(dead_code)]
    pub fn combine(name: &str, runs: Vec<Result>) -> Result {
        let seconds: f64 = runs.iter().map(|r| r.seconds).sum();
        let errors = runs.iter().map(|r| r.errors).sum();
        let latencies = runs.into_iter().flat_map(|r| r.latencies_us).collect();
        Result::from_latencies(name, latencies, errors, seconds)
    }
}

/// The `p` quantile of sorted latencies (0 if there are none).
pub fn percentile(sorted: &[u64], p: f64) -> f64 {
    sorted.get(((sorted.len() as f64 * p) as usize).min(sorted.len().saturating_sub(1))).copied().unwrap_or(0) as f64
}

/// One request on a fresh connection; fails unless the status is 2xx.
pub async fn request(addr: SocketAddr, method: &str, path: &str, token: Option<&str>, body: Option<Bytes>) -> anyhow::Result<Bytes> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let mut req = hyper::Request::builder().method(method).uri(path).header("host", addr.to_string()).header("content-type", "application/json");
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let resp = sender.send_request(req.body(Full::new(body.unwrap_or_default()))?).await?;
    let status = resp.status();
    let bytes = resp.into_body().collect().await?.to_bytes();
    anyhow::ensure!(status.is_success(), "{method} {path}: {status} {}", String::from_utf8_lossy(&bytes));
    Ok(bytes)
}

/// Closed-loop load: each connection sends the next request when the last answered.
pub async fn load(name: &str, addr: SocketAddr, path: &str, key: Option<&str>, duration: Duration, connections: usize) -> Result {
    load_with(name, addr, &Call::get(path), key, duration, connections).await
}

/// One kind of request a load sends over and over.
#[derive(Clone)]
pub struct Call {
    pub method: hyper::Method,
    pub path: String,
    /// Sent as `application/json` when present.
    pub body: Option<Bytes>,
}

impl Call {
    pub fn get(path: &str) -> Call {
        Call { method: hyper::Method::GET, path: path.to_owned(), body: None }
    }
}

/// [`load`] of any request.
pub async fn load_with(name: &str, addr: SocketAddr, call: &Call, key: Option<&str>, duration: Duration, connections: usize) -> Result {
    // Warm up (compiles caches, opens stores).
    let _ = one_connection_with(addr, call, key, Duration::from_millis(500)).await;
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let call = call.clone();
        let key = key.map(str::to_owned);
        tasks.push(tokio::spawn(async move { one_connection_with(addr, &call, key.as_deref(), duration).await }));
    }
    let mut latencies = Vec::new();
    let mut errors = 0;
    for t in tasks {
        if let Ok((l, e)) = t.await {
            latencies.extend(l);
            errors += e;
        }
    }
    Result::from_latencies(name, latencies, errors, duration.as_secs_f64())
}

/// GET requests on one keep-alive connection for `duration`: latencies (µs) of the
/// successful ones and the number of failures.
pub async fn one_connection(addr: SocketAddr, path: &str, key: Option<&str>, duration: Duration) -> (Vec<u64>, u64) {
    one_connection_with(addr, &Call::get(path), key, duration).await
}

/// [`one_connection`] of any request.
pub async fn one_connection_with(addr: SocketAddr, call: &Call, key: Option<&str>, duration: Duration) -> (Vec<u64>, u64) {
    let mut latencies = Vec::new();
    let mut errors = 0;
    let Ok(stream) = tokio::net::TcpStream::connect(addr).await else { return (latencies, 1) };
    let Ok((mut sender, conn)) = hyper::client::conn::http1::handshake::<_, Full<Bytes>>(TokioIo::new(stream)).await else { return (latencies, 1) };
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            eprintln!("load: the connection ended: {e:?}");
        }
    });
    let end = Instant::now() + duration;
    while Instant::now() < end {
        let mut req = hyper::Request::builder().method(call.method.clone()).uri(call.path.as_str()).header("host", addr.to_string());
        if let Some(k) = key {
            req = req.header("authorization", format!("Bearer {k}"));
        }
        if call.body.is_some() {
            req = req.header("content-type", "application/json");
        }
        let Ok(req) = req.body(Full::new(call.body.clone().unwrap_or_default())) else { break };
        // A keep-alive connection takes the next request only once it has finished
        // the previous exchange; sending earlier fails with "connection was not ready".
        if let Err(e) = sender.ready().await {
            eprintln!("load: the connection closed after {} requests: {e:?}", latencies.len());
            errors += 1;
            break;
        }
        let started = Instant::now();
        match sender.send_request(req).await {
            Ok(resp) => {
                let ok = resp.status().is_success();
                let _ = resp.into_body().collect().await;
                if ok {
                    latencies.push(started.elapsed().as_micros() as u64);
                } else {
                    errors += 1;
                }
            }
            Err(e) => {
                eprintln!("load: a request failed after {} on this connection: {e:?}", latencies.len());
                errors += 1;
                break;
            }
        }
    }
    (latencies, errors)
}

/// Bytes the audit store's pages hold: its WAL checkpointed into the file first (from a
/// second connection, as a reader would), so pages still in the WAL count too.
pub async fn stored_bytes(db: &std::path::Path) -> anyhow::Result<u64> {
    use sqlx::Connection as _;
    let options = sqlx::sqlite::SqliteConnectOptions::new().filename(db).read_only(false);
    let mut conn = sqlx::SqliteConnection::connect_with(&options).await?;
    sqlx::query("PRAGMA wal_checkpoint(PASSIVE)").execute(&mut conn).await?;
    let pages: i64 = sqlx::query_scalar("PRAGMA page_count").fetch_one(&mut conn).await?;
    let free: i64 = sqlx::query_scalar("PRAGMA freelist_count").fetch_one(&mut conn).await?;
    let size: i64 = sqlx::query_scalar("PRAGMA page_size").fetch_one(&mut conn).await?;
    conn.close().await?;
    Ok(((pages - free) * size) as u64)
}

/// Bytes this process has caused to be written to storage so far (Linux only).
pub fn written_bytes() -> Option<u64> {
    let io = std::fs::read_to_string("/proc/self/io").ok()?;
    io.lines().find_map(|l| l.strip_prefix("write_bytes: ")).and_then(|v| v.trim().parse().ok())
}
