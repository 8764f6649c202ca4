//! Host tests: import checking and deterministic execution.

use std::sync::Arc;

use bytes::Bytes;
use runplane_adapters::{object_blobs::ObjectBlobStore, memory_bus::InProcessBus, sqlite::SqliteStore, static_config::StaticConfig};
use runplane_host::{AllowList, Host, HostError, Invocation, SandboxConfig};
use runplane_ports::{ExecutionContext, Level, PortSet, Telemetry, TelemetryScope, TenantId};

struct NoTelemetry;
impl Telemetry for NoTelemetry {
    fn log(&self, _: &TelemetryScope, _: Level, _: &str, _: &str) {}
    fn counter(&self, _: &TelemetryScope, _: &str, _: u64, _: &[(String, String)]) {}
    fn histogram(&self, _: &TelemetryScope, _: &str, _: f64, _: &[(String, String)]) {}
}

async fn ports(dir: &std::path::Path) -> PortSet {
    let sql = Arc::new(SqliteStore::open(&dir.join("ports.db")).await.expect("sqlite"));
    PortSet {
        records: sql.clone(),
        kv: sql.clone(),
        events: sql.clone(),
        secrets: Arc::new(runplane_secrets::EnvelopeSecrets::new(sql, runplane_secrets::KeyRing::generate().expect("key ring").shared())),
        messaging: Arc::new(InProcessBus::new()),
        blobs: Arc::new(ObjectBlobStore::open(&dir.join("blobs")).expect("blobs")),
        config: Arc::new(StaticConfig::default()),
        telemetry: Arc::new(NoTelemetry),
    }
}

fn context(seed: u64, digest: &str) -> Arc<ExecutionContext> {
    Arc::new(ExecutionContext {
        protocol_version: "1.0".into(),
        invocation_id: "inv-1".into(),
        session_id: "s".into(),
        agent_id: "key_test".into(),
        trace_id: "0af7651916cd43dd8448eb211c80319c".into(),
        execution_seed: seed,
        tenant: TenantId::new("acme").expect("tenant"),
        node_id: None,
        capability: "orders@1.0.0".into(),
        capability_digest: digest.into(),
        accepted_at_unix_nanos: 1_795_000_000_000_000_000,
    })
}

fn host(dir: &std::path::Path) -> Host {
    Host::new(SandboxConfig::default(), dir.join("cache")).expect("host")
}

#[test]
fn examples_pass_the_import_check_and_forbidden_ones_are_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let host = host(dir.path());
    for (name, bytes) in runplane_examples::all() {
        let result = host.inspect(name, bytes);
        match *name {
            "imports_sockets" | "imports_filesystem" | "imports_unknown" => match result {
                Err(HostError::ForbiddenImports { offending, .. }) => {
                    let prefix = match *name {
                        "imports_sockets" => "wasi:sockets/",
                        "imports_filesystem" => "wasi:filesystem/",
                        _ => "evil:backdoor/shell",
                    };
                    assert!(offending.iter().any(|o| o.starts_with(prefix)), "{name}: {offending:?}");
                    assert!(offending.iter().all(|o| !o.starts_with("runplane:") && !o.starts_with("wasi:io/")), "{offending:?}");
                }
                other => panic!("{name} must be refused, got {other:?}"),
            },
            _ => {
                let info = result.unwrap_or_else(|e| panic!("{name}: {e}"));
                if *name == "worker" {
                    assert!(info.exports.task && !info.exports.http, "worker exports the task only");
                } else {
                    assert!(info.exports.http, "{name} exports wasi:http");
                }
            }
        }
    }
    assert!(matches!(host.inspect("core", b"\0asm\x01\0\0\0"), Err(HostError::NotAComponent { .. })));
}

async fn create_order(host: &Host, dir: &std::path::Path, seed: u64) -> (u16, Bytes) {
    let digest = runplane_cjson::sha256_hex(runplane_examples::ORDERS);
    let cap = host.load("orders@1.0.0", &digest, runplane_examples::ORDERS).await.expect("load");
    let request = http::Request::builder()
        .method("POST")
        .uri("http://orders.test/orders")
        .header("content-type", "application/json")
        .body(Bytes::from_static(br#"{"item":"tea","quantity":2}"#))
        .expect("request");
    let inv = Invocation { context: context(seed, &digest), ports: ports(dir).await, allow: AllowList::default(), journal: runplane_host::Journal::record(), limits: Default::default() };
    let (result, report) = host.handle_http(&cap, inv, request).await;
    let resp = result.expect("invocation");
    assert!(report.port_calls > 3, "{report:?}");
    (resp.status, resp.body)
}

#[tokio::test]
async fn the_same_context_and_input_give_the_same_bytes() {
    let a = tempfile::tempdir().expect("tempdir");
    let b = tempfile::tempdir().expect("tempdir");
    let host = host(a.path());
    let (s1, body1) = create_order(&host, a.path(), 42).await;
    let (s2, body2) = create_order(&host, b.path(), 42).await;
    assert_eq!(s1, 201, "{}", String::from_utf8_lossy(&body1));
    assert_eq!((s1, &body1), (s2, &body2), "deterministic: same seed, same clock, fresh stores");
    let text = String::from_utf8_lossy(&body1);
    assert!(text.contains("2026-11-18T11:06:40"), "the clock is the accept time: {text}");
    let c = tempfile::tempdir().expect("tempdir");
    let (_, body3) = create_order(&host, c.path(), 43).await;
    assert_ne!(body1, body3, "a different seed gives a different id");
}

async fn run_task(host: &Host, dir: &std::path::Path, input: &str) -> Result<String, String> {
    let digest = runplane_cjson::sha256_hex(runplane_examples::ORDERS);
    let cap = host.load("orders@1.0.0", &digest, runplane_examples::ORDERS).await.expect("load");
    assert!(cap.exports.task && cap.exports.http && cap.exports.message_handler);
    let inv = Invocation { context: context(9, &digest), ports: ports(dir).await, allow: AllowList::default(), journal: runplane_host::Journal::record(), limits: Default::default() };
    host.run_task(&cap, inv, input.to_string()).await.0.expect("invocation")
}

#[tokio::test]
async fn task_exports_run_against_the_same_ports() {
    let dir = tempfile::tempdir().expect("tempdir");
    let host = host(dir.path());
    // Two orders with distinct seeds, so distinct ids.
    create_order(&host, dir.path(), 1).await;
    create_order(&host, dir.path(), 2).await;
    assert_eq!(run_task(&host, dir.path(), r#"{"op":"total","item":"tea"}"#).await, Ok(r#"{"orders":2,"quantity":4}"#.to_string()));
    assert_eq!(run_task(&host, dir.path(), r#"{"op":"total","item":"coffee"}"#).await, Ok(r#"{"orders":0,"quantity":0}"#.to_string()));
    let refused = run_task(&host, dir.path(), r#"{"op":"explode"}"#).await.expect_err("invalid input");
    assert!(refused.starts_with("invalid input"), "{refused}");
}

/// A backend that accepts connections and never answers (a hung database): the
/// adapter's own timeout is a minute, but the host bounds every port call, so the
/// invocation fails fast with `unavailable` and the capability answers 503.
#[tokio::test]
async fn a_silent_backend_gives_unavailable_within_the_port_timeout() {
    use runplane_adapters::postgres::{PgSettings, PgStore};
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = silent.local_addr().expect("addr").port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((conn, _)) = silent.accept().await {
            held.push(conn); // accepted, never read from or written to
        }
    });
    let settings = PgSettings {
        admin: format!("postgres://postgres@127.0.0.1:{port}/postgres").parse().expect("url"),
        database: "silent".into(),
        runtime_role: "runplane_runtime".into(),
        runtime_password: None,
        timeout: std::time::Duration::from_secs(60),
        max_connections: 2,
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let mut ports = ports(dir.path()).await;
    ports.records = Arc::new(PgStore::connect_lazy(&settings));
    let host = Host::new(SandboxConfig { port_timeout_ms: 300, ..SandboxConfig::default() }, dir.path().join("cache")).expect("host");
    let digest = runplane_cjson::sha256_hex(runplane_examples::ORDERS);
    let cap = host.load("orders@1.0.0", &digest, runplane_examples::ORDERS).await.expect("load");
    let request = http::Request::builder()
        .method("POST")
        .uri("http://orders.test/orders")
        .body(Bytes::from_static(br#"{"item":"tea","quantity":2}"#))
        .expect("request");
    let started = std::time::Instant::now();
    let inv = Invocation { context: context(1, &digest), ports, allow: AllowList::default(), journal: runplane_host::Journal::record(), limits: Default::default() };
    let (result, _) = host.handle_http(&cap, inv, request).await;
    let resp = result.expect("the capability handles the port error");
    assert_eq!(resp.status, 503, "{}", String::from_utf8_lossy(&resp.body));
    assert!(String::from_utf8_lossy(&resp.body).contains("did not answer within 300 ms"), "{}", String::from_utf8_lossy(&resp.body));
    assert!(started.elapsed() < std::time::Duration::from_secs(3), "took {:?}", started.elapsed());
}

async fn get(host: &Host, dir: &std::path::Path, name: &str, bytes: &[u8], uri: &str) -> (Arc<runplane_host::LoadedCapability>, u16, Bytes) {
    let digest = runplane_cjson::sha256_hex(bytes);
    let cap = host.load(name, &digest, bytes).await.expect("load");
    let request = http::Request::builder().uri(uri).body(Bytes::new()).expect("request");
    let inv = Invocation { context: context(5, &digest), ports: ports(dir).await, allow: AllowList::default(), journal: runplane_host::Journal::record(), limits: Default::default() };
    let (result, _) = host.handle_http(&cap, inv, request).await;
    let resp = result.expect("invocation");
    (cap, resp.status, resp.body)
}

/// A light guest starts on the caller's thread and finishes there; a guest that uses up
/// its first CPU turn moves to the sandbox's threads and still answers the same; the
/// capability's next invocation then starts over there, and one that is light again
/// brings it back (`SandboxConfig::inline_light_guests`).
#[tokio::test]
async fn light_guests_run_inline_and_cpu_bound_ones_move_to_the_sandbox() {
    let dir = tempfile::tempdir().expect("tempdir");
    let host = host(dir.path());
    // A turn is wall-clock time: on a loaded machine (the whole suite runs at once) a
    // light guest is sometimes preempted past its first turn. So each light case may
    // take a few tries; one that is always classified CPU-bound still fails.
    assert!(light_in_some_try(&host, dir.path(), "hello@1.0.0", runplane_examples::HELLO, "http://hello.test/").await, "hello finishes within its first turn");

    // Tens of milliseconds of CPU: well past the 1 ms first turn.
    let burn_uri = "http://burn.test/?iters=20000000";
    let (burn, status, heavy) = get(&host, dir.path(), "burn@1.0.0", runplane_examples::CPU_BURN, burn_uri).await;
    assert_eq!(status, 200);
    assert!(burn.last_was_cpu_bound(), "a long burn gives turns up");
    // The same input on the sandbox's threads from its start gives the same answer.
    let (burn, _, again) = get(&host, dir.path(), "burn@1.0.0", runplane_examples::CPU_BURN, burn_uri).await;
    assert_eq!(heavy, again);
    assert!(burn.last_was_cpu_bound());
    let light_again = light_in_some_try(&host, dir.path(), "burn@1.0.0", runplane_examples::CPU_BURN, "http://burn.test/?iters=10").await;
    assert!(light_again, "a light invocation starts inline again next time");
}

/// Whether one of up to ten invocations (each answering 200) finished within its first
/// CPU turn.
async fn light_in_some_try(host: &Host, dir: &std::path::Path, name: &str, bytes: &[u8], uri: &str) -> bool {
    for _ in 0..10 {
        let (cap, status, _) = get(host, dir, name, bytes, uri).await;
        assert_eq!(status, 200);
        if !cap.last_was_cpu_bound() {
            return true;
        }
    }
    false
}
