//! Edge benchmarks (issue: security binding). Not tests.
//!
//! 1. **HTTPS vs HTTP**: closed-loop `hello` with a tenant key on C keep-alive
//!    connections, against a node serving HTTPS (development certificate, TLS 1.3) and
//!    one serving plain HTTP, alternating rounds. Ratio HTTPS / HTTP.
//! 2. **New TLS handshakes**: C loops of connect + handshake + `GET /livez` + close;
//!    handshakes per second and their latency (the same over plain TCP beside it).
//! 3. **A spent tenant's flood**: tenant A's CPU window is used up, then A floods the
//!    node on C connections (every request refused with 429 at the edge) while tenant B
//!    sends `hello` every 5 ms; B's p99 under the flood / alone (target ≤ 1.5). The
//!    flood is closed-loop (as fast as refusals come back), or `EDGE_FLOOD_RPS`
//!    requests a second in all.
//!
//! Usage: `cargo run --release -p runplane-bench --bin edge-bench -- [SECONDS] [CONNECTIONS]`;
//! JSON to `target/bench/edge.json` (or `$BENCH_OUT`).

#[path = "load.rs"]
mod load;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::io::{AsyncRead, AsyncWrite};

const ADMIN: &str = "bench-admin-token-0123456789abcdef";
const PACE_MS: u64 = 5;

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// How the bench reaches a node: plain TCP, or TLS trusting its development CA.
#[derive(Clone)]
struct Dial {
    addr: SocketAddr,
    tls: Option<tokio_rustls::TlsConnector>,
}

impl Dial {
    async fn connect(&self) -> anyhow::Result<Box<dyn Io>> {
        let tcp = tokio::net::TcpStream::connect(self.addr).await?;
        tcp.set_nodelay(true)?;
        Ok(match &self.tls {
            None => Box::new(tcp),
            Some(c) => Box::new(c.connect(rustls::pki_types::ServerName::try_from("localhost")?, tcp).await?),
        })
    }

    /// One request on a fresh connection: its status.
    async fn once(&self, method: &str, path: &str, token: &str, body: Option<String>) -> anyhow::Result<(u16, Bytes)> {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(self.connect().await?)).await?;
        tokio::spawn(conn);
        let req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", "localhost")
            .header("authorization", format!("Bearer {token}"))
            .header("content-type", "application/json")
            .body(http_body_util::Full::new(Bytes::from(body.unwrap_or_default())))?;
        let resp = sender.send_request(req).await?;
        let status = resp.status().as_u16();
        Ok((status, resp.into_body().collect().await?.to_bytes()))
    }
}

/// Requests on one keep-alive connection for `duration` (every `pace` if given):
/// latencies in µs, errors.
async fn keep_alive(dial: &Dial, path: &str, key: &str, duration: Duration, pace: Option<Duration>, want: u16) -> (Vec<u64>, u64) {
    let (mut lat, mut errors) = (Vec::new(), 0);
    let Ok(io) = dial.connect().await else { return (lat, 1) };
    let Ok((mut sender, conn)) = hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(io)).await else { return (lat, 1) };
    tokio::spawn(conn);
    let end = Instant::now() + duration;
    let mut tick = pace.map(tokio::time::interval);
    while Instant::now() < end {
        if let Some(t) = &mut tick {
            t.tick().await;
        }
        if sender.ready().await.is_err() {
            return (lat, errors + 1);
        }
        let Ok(req) = hyper::Request::builder().uri(path).header("host", "localhost").header("authorization", format!("Bearer {key}")).body(Empty::new()) else { break };
        let t = Instant::now();
        match sender.send_request(req).await {
            Ok(resp) if resp.status().as_u16() == want => {
                let _ = resp.into_body().collect().await;
                lat.push(t.elapsed().as_micros() as u64);
            }
            _ => errors += 1,
        }
    }
    (lat, errors)
}

async fn closed_loop(name: &str, dial: &Dial, path: &str, key: &str, duration: Duration, connections: usize) -> load::Result {
    let tasks: Vec<_> = (0..connections)
        .map(|_| {
            let (dial, path, key) = (dial.clone(), path.to_owned(), key.to_owned());
            tokio::spawn(async move { keep_alive(&dial, &path, &key, duration, None, 200).await })
        })
        .collect();
    gather(name, tasks, duration).await
}

/// The latencies and errors of `tasks`, as one result over `duration`.
async fn gather(name: &str, tasks: Vec<tokio::task::JoinHandle<(Vec<u64>, u64)>>, duration: Duration) -> load::Result {
    let (mut lat, mut errors) = (Vec::new(), 0);
    for t in tasks {
        if let Ok((l, e)) = t.await {
            lat.extend(l);
            errors += e;
        }
    }
    load::Result::from_latencies(name, lat, errors, duration.as_secs_f64())
}

/// New connection per request: connect (+ handshake) + `GET /livez` + close.
async fn fresh_connections(name: &str, dial: &Dial, duration: Duration, connections: usize) -> load::Result {
    let tasks: Vec<_> = (0..connections)
        .map(|_| {
            let dial = dial.clone();
            tokio::spawn(async move {
                let (mut lat, mut errors) = (Vec::new(), 0u64);
                let end = Instant::now() + duration;
                while Instant::now() < end {
                    let t = Instant::now();
                    match dial.once("GET", "/livez", "", None).await {
                        Ok((200, _)) => lat.push(t.elapsed().as_micros() as u64),
                        _ => errors += 1,
                    }
                }
                (lat, errors)
            })
        })
        .collect();
    gather(name, tasks, duration).await
}

async fn start(dir: &std::path::Path, tls: bool) -> anyhow::Result<(runplane_node::RunningNode, Dial)> {
    let mut config = runplane_node::NodeConfig::embedded("127.0.0.1:0".parse()?, dir.to_path_buf());
    config.admin_token = Some(ADMIN.into());
    // The bench floods from one address: no per-source limit in the way.
    config.rate_limits.unauthenticated_per_second = 1_000_000;
    config.rate_limits.unauthenticated_burst = 1_000_000;
    config.http.max_connections_per_source = 100_000;
    if tls {
        let mut t = runplane_node::tls::TlsSettings::development();
        t.min_version = runplane_node::tls::MinVersion::Tls13;
        config.tls = Some(t);
    }
    let node = runplane_node::Node::start(config).await?;
    let connector = if tls {
        let mut roots = rustls::RootCertStore::empty();
        let pem = std::fs::read(runplane_node::tls::development_ca(dir))?;
        for c in <rustls::pki_types::CertificateDer as rustls::pki_types::pem::PemObject>::pem_slice_iter(&pem) {
            roots.add(c?)?;
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(rustls::ALL_VERSIONS)?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Some(tokio_rustls::TlsConnector::from(Arc::new(config)))
    } else {
        None
    };
    let dial = Dial { addr: node.addr, tls: connector };
    Ok((node, dial))
}

/// A tenant with `hello` deployed (once per node); its key.
async fn tenant(dial: &Dial, id: &str, deploy: bool) -> anyhow::Result<String> {
    let (s, body) = dial.once("POST", "/v1/tenants", ADMIN, Some(json!({"id": id, "mode": "shared", "tier": "enterprise"}).to_string())).await?;
    anyhow::ensure!(s == 201, "create {id}: {s} {}", String::from_utf8_lossy(&body));
    let key = serde_json::from_slice::<serde_json::Value>(&body)?["api_key"].as_str().unwrap_or_default().to_owned();
    if deploy {
        for (name, wasm) in [("hello", runplane_examples::HELLO), ("cpu-burn", runplane_examples::CPU_BURN)] {
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(dial.connect().await?)).await?;
            tokio::spawn(conn);
            let req = hyper::Request::builder()
                .method("POST")
                .uri(format!("/v1/capabilities?name={name}&version=1.0.0"))
                .header("host", "localhost")
                .header("authorization", format!("Bearer {ADMIN}"))
                .body(http_body_util::Full::new(Bytes::from_static(wasm)))?;
            anyhow::ensure!(sender.send_request(req).await?.status().is_success(), "push {name}");
            let (s, body) = dial.once("POST", "/v1/deployments", ADMIN, Some(json!({"capability": name, "version": "1.0.0"}).to_string())).await?;
            anyhow::ensure!(s == 201, "deploy {name}: {s} {}", String::from_utf8_lossy(&body));
        }
    }
    Ok(key)
}

fn row(r: &load::Result) {
    println!("{:<34} {:>9} {:>10.0} {:>9.0} {:>9.0} {:>7}", r.name, r.requests, r.rps, r.p50_us, r.p99_us, r.errors);
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let seconds: u64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(10);
    let connections: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(32);
    let out = std::env::var("BENCH_OUT").unwrap_or_else(|_| "target/bench/edge.json".into());
    let rounds = 2;
    let round = Duration::from_secs((seconds / rounds).max(1));

    let (plain_dir, tls_dir) = (tempfile::tempdir()?, tempfile::tempdir()?);
    let (_plain_node, plain) = start(plain_dir.path(), false).await?;
    let (_tls_node, tls) = start(tls_dir.path(), true).await?;
    let plain_key = tenant(&plain, "bench", true).await?;
    let tls_key = tenant(&tls, "bench", true).await?;

    // 1. keep-alive throughput, alternating.
    let (mut https_runs, mut http_runs) = (Vec::new(), Vec::new());
    let _ = closed_loop("warm", &tls, "/apps/hello/", &tls_key, Duration::from_millis(500), 4).await;
    let _ = closed_loop("warm", &plain, "/apps/hello/", &plain_key, Duration::from_millis(500), 4).await;
    for _ in 0..rounds {
        https_runs.push(closed_loop("hello over HTTPS (TLS 1.3)", &tls, "/apps/hello/", &tls_key, round, connections).await);
        http_runs.push(closed_loop("hello over HTTP", &plain, "/apps/hello/", &plain_key, round, connections).await);
    }
    let (https, http) = (load::Result::combine("hello over HTTPS (TLS 1.3)", https_runs), load::Result::combine("hello over HTTP", http_runs));

    // 2. new connections.
    let handshakes = fresh_connections("new TLS connection + /livez", &tls, round, connections).await;
    let tcp = fresh_connections("new TCP connection + /livez", &plain, round, connections).await;

    // 3. a spent tenant floods while another is served.
    let spent = tenant(&plain, "spent", false).await?;
    let calm = tenant(&plain, "calm", false).await?;
    let quota = json!({"quota": {"max_cpu_seconds": 1, "max_memory_mb": 64, "max_disk_mb": 64, "max_network_kb": 1024, "max_concurrent_tasks": 8, "window_seconds": 3600}});
    let (s, body) = plain.once("PUT", "/v1/tenants/spent/quota", ADMIN, Some(quota.to_string())).await?;
    anyhow::ensure!(s == 200, "quota: {s} {}", String::from_utf8_lossy(&body));
    let started = Instant::now();
    loop {
        let (s, _) = plain.once("GET", "/apps/cpu-burn/?iters=200000000", &spent, None).await?;
        if s == 429 {
            break;
        }
        anyhow::ensure!(started.elapsed() < Duration::from_secs(120), "the spent tenant's window did not run out");
    }
    let pace = Some(Duration::from_millis(PACE_MS));
    let flood_rps: u64 = std::env::var("EDGE_FLOOD_RPS").ok().and_then(|v| v.parse().ok()).unwrap_or(0);
    let flood_pace = (flood_rps > 0).then(|| Duration::from_secs_f64(connections as f64 / flood_rps as f64));
    let (mut alone, mut flooded, mut refused) = (Vec::new(), Vec::new(), 0usize);
    for _ in 0..rounds {
        let (l, e) = keep_alive(&plain, "/apps/hello/", &calm, round, pace, 200).await;
        alone.push(load::Result::from_latencies("B alone", l, e, round.as_secs_f64()));
        let flood: Vec<_> = (0..connections)
            .map(|_| {
                let (plain, spent) = (plain.clone(), spent.clone());
                tokio::spawn(async move { keep_alive(&plain, "/apps/hello/", &spent, round, flood_pace, 429).await })
            })
            .collect();
        let (l, e) = keep_alive(&plain, "/apps/hello/", &calm, round, pace, 200).await;
        flooded.push(load::Result::from_latencies("B beside A's refused flood", l, e, round.as_secs_f64()));
        for f in flood {
            if let Ok((l, _)) = f.await {
                refused += l.len();
            }
        }
    }
    let (alone, flooded) = (load::Result::combine("B alone", alone), load::Result::combine("B beside A's refused flood", flooded));
    let refused_per_sec = refused as f64 / (round.as_secs_f64() * rounds as f64);

    println!("\n{:<34} {:>9} {:>10} {:>9} {:>9} {:>7}", "", "requests", "req/s", "p50 µs", "p99 µs", "errors");
    for r in [&https, &http, &handshakes, &tcp, &alone, &flooded] {
        row(r);
    }
    let ratio = https.rps / http.rps.max(1.0);
    let flood_ratio = flooded.p99_us / alone.p99_us.max(1.0);
    println!("HTTPS / HTTP keep-alive throughput = {ratio:.3}");
    println!("new TLS handshakes per second = {:.0} (TCP only: {:.0})", handshakes.rps, tcp.rps);
    println!("B p99 beside A's flood / alone = {flood_ratio:.2} (target ≤ 1.5); A was refused {refused_per_sec:.0} times a second");

    let view = |r: &load::Result| json!({"requests": r.requests, "rps": r.rps, "p50_us": r.p50_us, "p99_us": r.p99_us, "errors": r.errors});
    let json = json!({
        "benchmark": "edge",
        "seconds": seconds,
        "connections": connections,
        "https_keep_alive": view(&https),
        "http_keep_alive": view(&http),
        "ratio_https_to_http": ratio,
        "tls_handshakes": view(&handshakes),
        "tcp_connections": view(&tcp),
        "refused_flood": {"flood_rps_asked": flood_rps, "b_alone": view(&alone), "b_beside_flood": view(&flooded), "ratio_p99": flood_ratio, "target_ratio_p99": 1.5, "a_refused_per_second": refused_per_sec},
    });
    if let Some(parent) = std::path::Path::new(&out).parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&out, serde_json::to_string_pretty(&json)?)?;
    println!("wrote {out}");
    Ok(())
}
