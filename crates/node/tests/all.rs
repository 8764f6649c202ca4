//! End-to-end tests of a node: real HTTP, real components, real SQLite and files.

use std::sync::Arc;
use std::time::Duration;

use reqwest::{Client, Method, StatusCode};
use runplane_node::{Mode, Node, NodeConfig, RunningNode};
use serde_json::{Value, json};

const ADMIN: &str = "test-admin-token-0123456789abcdef";

struct TestNode {
    running: RunningNode,
    _dir: tempfile::TempDir,
    http: Client,
}

impl TestNode {
    async fn start(tune: impl FnOnce(&mut NodeConfig)) -> Self {
        Self::start_with(tune, None).await
    }

    /// With `seed`, the node's clock steps 1 ms per read from a fixed instant and its ids
    /// and seeds come from that seed: the same workload gives the same bytes.
    async fn start_with(tune: impl FnOnce(&mut NodeConfig), seed: Option<u64>) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = NodeConfig::embedded("127.0.0.1:0".parse().expect("addr"), dir.path().to_path_buf());
        config.admin_token = Some(ADMIN.into());
        config.capability_config.insert("orders".into(), [("currency".to_string(), "EUR".to_string())].into());
        tune(&mut config);
        let running = match seed {
            None => Node::start(config).await.expect("node starts"),
            Some(seed) => Node::start_with(config, Arc::new(SteppingClock::default()), runplane_node::entropy::Entropy::seeded(seed))
                .await
                .expect("node starts"),
        };
        TestNode { running, _dir: dir, http: Client::new() }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.running.addr)
    }

    async fn admin(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut req = self.http.request(method, self.url(path)).bearer_auth(ADMIN);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status();
        let text = resp.text().await.expect("body");
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    async fn push(&self, name: &str, version: &str, bytes: &[u8]) -> (StatusCode, Value) {
        let resp = self
            .http
            .post(self.url("/v1/capabilities"))
            .query(&[("name", name), ("version", version)])
            .bearer_auth(ADMIN)
            .body(bytes.to_vec())
            .send()
            .await
            .expect("push");
        let status = resp.status();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    async fn deploy(&self, name: &str, bytes: &[u8], route: &str, subscriptions: &[&str]) {
        let (status, body) = self.push(name, "1.0.0", bytes).await;
        assert!(status.is_success(), "push {name}: {status} {body}");
        let (status, body) = self
            .admin(Method::POST, "/v1/deployments", Some(json!({"capability": name, "version": "1.0.0", "route": route, "subscriptions": subscriptions})))
            .await;
        assert_eq!(status, StatusCode::CREATED, "deploy {name}: {body}");
    }

    async fn tenant(&self, id: &str, mode: Mode) -> String {
        let (status, body) = self.admin(Method::POST, "/v1/tenants", Some(json!({"id": id, "mode": mode.as_str()}))).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["api_key"].as_str().expect("api_key").to_owned()
    }

    async fn app(&self, key: &str, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut req = self.http.request(method, self.url(path)).bearer_auth(key);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status();
        let text = resp.text().await.expect("body");
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }
}

/// A clock that starts at 2026-01-01T00:00:00Z and advances 1 ms per read.
#[derive(Default)]
struct SteppingClock(std::sync::atomic::AtomicU64);

/// A clock that starts at 2026-01-01T00:00:00Z and advances 1 ms only when the test
/// says so: reads by a node's background loops (which run when they run) change
/// nothing, so several nodes sharing it see the same instants a lone node would.
#[derive(Default)]
struct TickClock(std::sync::atomic::AtomicU64);

impl TickClock {
    fn tick(&self) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }

    /// Moves the clock on by `ms`.
    fn advance(&self, ms: u64) {
        self.0.fetch_add(ms, std::sync::atomic::Ordering::SeqCst);
    }
}

impl runplane_node::Clock for TickClock {
    fn now_unix_nanos(&self) -> u128 {
        1_767_225_600_000_000_000u128 + u128::from(self.0.load(std::sync::atomic::Ordering::SeqCst)) * 1_000_000
    }
}

impl runplane_node::Clock for SteppingClock {
    fn now_unix_nanos(&self) -> u128 {
        let step = self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        1_767_225_600_000_000_000u128 + u128::from(step) * 1_000_000
    }
}

/// A node whose `orders` (pushed, not deployed) posts its webhook to `receiver`, served
/// on a local port; tenant acme with its signing secret. Returns the node, acme's key
/// and the receiver's address.
async fn orders_with_webhook(receiver: axum::Router) -> (TestNode, String, std::net::SocketAddr) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let hook = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, receiver).await });
    let node = TestNode::start(|c| {
        c.capability_config.get_mut("orders").expect("orders config").insert("webhook-url".into(), format!("http://{hook}/hook"));
    })
    .await;
    let acme = node.tenant("acme", Mode::Shared).await;
    node.admin(Method::PUT, "/v1/tenants/acme/secrets/webhook-signing-key", Some(json!({"value": "SECRET-VALUE-acme"}))).await;
    let (s, _) = node.push("orders", "1.0.0", runplane_examples::ORDERS).await;
    assert_eq!(s, StatusCode::CREATED);
    (node, acme, hook)
}

#[path = "support/load.rs"]
mod load;

#[path = "support/bodies.rs"]
mod bodies;

#[path = "support/backends.rs"]
mod backends;

#[path = "support/tls.rs"]
mod tls;

#[path = "support/edge.rs"]
mod edge;

/// A node with acme and globex (shared), initech (dedicated) and orders deployed.
async fn orders_node() -> (TestNode, String, String, String) {
    let node = TestNode::start(|_| {}).await;
    let acme = node.tenant("acme", Mode::Shared).await;
    let globex = node.tenant("globex", Mode::Shared).await;
    let initech = node.tenant("initech", Mode::Dedicated).await;
    for t in ["acme", "globex", "initech"] {
        let (s, _) = node
            .admin(Method::PUT, &format!("/v1/tenants/{t}/secrets/webhook-signing-key"), Some(json!({"value": format!("SECRET-VALUE-{t}")})))
            .await;
        assert_eq!(s, StatusCode::OK);
    }
    node.deploy("orders", runplane_examples::ORDERS, "orders", &["order.created"]).await;
    (node, acme, globex, initech)
}

#[tokio::test]
async fn orders_round_trip_and_tenant_isolation() {
    let (node, acme, globex, initech) = orders_node().await;

    let (s, order) = node.app(&acme, Method::POST, "/apps/orders/orders", Some(json!({"item": "tea", "quantity": 2}))).await;
    assert_eq!(s, StatusCode::CREATED, "{order}");
    let id = order["id"].as_str().expect("id").to_owned();
    assert!(id.starts_with("ord_"));
    assert_eq!(order["currency"], "EUR");

    let (s, got) = node.app(&acme, Method::GET, &format!("/apps/orders/orders/{id}"), None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(got["id"], id.as_str());

    // Another tenant, shared or dedicated, cannot see it by any path.
    for key in [&globex, &initech] {
        let (s, _) = node.app(key, Method::GET, &format!("/apps/orders/orders/{id}"), None).await;
        assert_eq!(s, StatusCode::NOT_FOUND);
        let (s, _) = node.app(key, Method::GET, &format!("/apps/orders/orders/{id}/invoice"), None).await;
        assert_eq!(s, StatusCode::NOT_FOUND);
        let (s, list) = node.app(key, Method::GET, "/apps/orders/orders", None).await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(list["items"].as_array().map(Vec::len), Some(0), "{list}");
        let (s, _) = node.app(key, Method::DELETE, &format!("/apps/orders/orders/{id}"), None).await;
        assert_eq!(s, StatusCode::NOT_FOUND);
    }
    // Crafted ids and traversal attempts find nothing and break nothing.
    for path in [
        format!("/apps/orders/orders/..%2F{id}"),
        format!("/apps/orders/orders/%2e%2e%2fglobex%2f{id}"),
        "/apps/orders/orders/' OR '1'='1".to_string(),
        format!("/apps/orders/orders/{id}%00"),
        "/apps/orders/orders?limit=1000&cursor=Z2xvYmV4".to_string(),
    ] {
        let (s, body) = node.app(&globex, Method::GET, &path, None).await;
        assert!(s.is_client_error() || (s == StatusCode::OK && body["items"].as_array().map(Vec::len) == Some(0)), "{path}: {s} {body}");
    }

    let (s, list) = node.app(&acme, Method::GET, "/apps/orders/orders", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(list["items"].as_array().map(Vec::len), Some(1));

    // The dedicated tenant's data lives in its own file.
    let (s, _) = node.app(&initech, Method::POST, "/apps/orders/orders", Some(json!({"item": "stapler", "quantity": 1}))).await;
    assert_eq!(s, StatusCode::CREATED);
    assert!(node.running.node.config().data_dir.join("tenants/initech/ports.db").exists());

    // The subscription delivered order.created to the handler, in acme's scope only.
    let mut notified = Value::Null;
    for _ in 0..50 {
        let (_, stats) = node.app(&acme, Method::GET, "/apps/orders/stats", None).await;
        if stats["notifications"] == 1 {
            notified = stats;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(notified["notifications"], 1, "message handler ran for acme: {notified}");
    let (_, gstats) = node.app(&globex, Method::GET, "/apps/orders/stats", None).await;
    assert_eq!(gstats["orders_created"], 0, "{gstats}");
}

#[tokio::test]
async fn every_invocation_and_admin_action_is_audited_without_secrets() {
    let (node, acme, _globex, _initech) = orders_node().await;
    let (s, _) = node.app(&acme, Method::POST, "/apps/orders/orders", Some(json!({"item": "tea", "quantity": 1}))).await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, _) = node.app(&acme, Method::GET, "/apps/orders/orders/ord_missing", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    let (s, page) = node.admin(Method::GET, "/v1/audit/events?log=tenant:acme", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(page["protocol_version"], "1.0");
    let items = page["items"].as_array().expect("items").clone();
    let invocations: Vec<&Value> = items.iter().filter(|e| e["event"]["action"] == "invoke.http").collect();
    assert_eq!(invocations.len(), 2, "{page}");
    let ev = &invocations[0]["event"];
    for field in ["time", "actor", "tenant", "action", "target", "outcome", "context", "request_digest", "response_digest", "capability_digest", "binding_set_version", "config_version", "usage"] {
        assert!(!ev[field].is_null(), "audit event lacks {field}: {ev}");
    }
    assert_eq!(ev["context"]["protocol_version"], "1.0");
    assert!(ev["context"]["execution_seed"].is_u64());
    // Hashes are over canonical JSON.
    for item in &items {
        let canonical = runplane_cjson::to_string(&item["event"]).expect("canonical");
        assert_eq!(runplane_cjson::sha256_hex(canonical.as_bytes()), item["event_hash"].as_str().expect("hash"));
    }
    let (_, admin) = node.admin(Method::GET, "/v1/audit/events?log=admin&limit=1000", None).await;
    let actions: Vec<&str> = admin["items"].as_array().expect("items").iter().filter_map(|e| e["event"]["action"].as_str()).collect();
    for a in ["tenant.create", "secret.put", "capability.push", "deploy"] {
        assert!(actions.contains(&a), "admin log lacks {a}: {actions:?}");
    }
    let everything = format!("{page}{admin}");
    assert!(!everything.contains("SECRET-VALUE"), "a secret value leaked into the audit log");
    let (_, secrets) = node.admin(Method::GET, "/v1/tenants/acme/secrets", None).await;
    assert!(!secrets.to_string().contains("SECRET-VALUE"));
    assert_eq!(secrets["items"][0]["name"], "webhook-signing-key");
}

#[tokio::test]
async fn components_with_forbidden_imports_are_refused_by_name() {
    let node = TestNode::start(|_| {}).await;
    for (name, bytes, offending) in [
        ("sockets", runplane_examples::IMPORTS_SOCKETS, "wasi:sockets/"),
        ("filesystem", runplane_examples::IMPORTS_FILESYSTEM, "wasi:filesystem/"),
        ("unknown", runplane_examples::IMPORTS_UNKNOWN, "evil:backdoor/"),
    ] {
        let (s, body) = node.push(name, "1.0.0", bytes).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{name}: {body}");
        assert_eq!(body["error"]["code"], "forbidden_imports");
        let msg = body["error"]["message"].as_str().expect("message");
        assert!(msg.contains(offending), "{name}: message must name the import: {msg}");
        assert!(msg.contains("may import only") && msg.contains("runplane:ports/records"), "{msg}");
        assert_eq!(body["protocol_version"], "1.0");
    }
    let (_, caps) = node.admin(Method::GET, "/v1/capabilities", None).await;
    assert_eq!(caps["items"].as_array().map(Vec::len), Some(0), "nothing refused was stored");
    // The bundled examples pass the same check.
    for (name, bytes) in [("orders", runplane_examples::ORDERS), ("hello", runplane_examples::HELLO)] {
        let (s, body) = node.push(name, "1.0.0", bytes).await;
        assert_eq!(s, StatusCode::CREATED, "{name}: {body}");
    }
}

#[tokio::test]
async fn runaway_components_fail_alone_while_other_tenants_are_served() {
    let node = Arc::new(
        TestNode::start(|c| {
            c.sandbox.deadline_ms = 1_000;
            c.sandbox.memory_limit_bytes = 48 << 20;
            c.sandbox.max_response_bytes = 1 << 20;
            // Enough fuel that the wall-clock deadline, not the CPU budget, stops the loop.
            c.sandbox.fuel = u64::MAX / 4;
        })
        .await,
    );
    let acme = node.tenant("acme", Mode::Shared).await;
    let globex = node.tenant("globex", Mode::Shared).await;
    node.deploy("spin-loop", runplane_examples::SPIN_LOOP, "spin", &[]).await;
    node.deploy("memory-bomb", runplane_examples::MEMORY_BOMB, "bomb", &[]).await;
    node.deploy("hello", runplane_examples::HELLO, "hello", &[]).await;

    let n = node.clone();
    let k = acme.clone();
    let spin = tokio::spawn(async move {
        let started = std::time::Instant::now();
        let r = n.app(&k, Method::GET, "/apps/spin/", None).await;
        (r, started.elapsed())
    });
    let n = node.clone();
    let k = acme.clone();
    let bomb = tokio::spawn(async move { n.app(&k, Method::GET, "/apps/bomb/", None).await });

    // While both run, the other tenant is served promptly.
    tokio::time::sleep(Duration::from_millis(100)).await;
    for _ in 0..5 {
        let started = std::time::Instant::now();
        let (s, body) = node.app(&globex, Method::GET, "/apps/hello/", None).await;
        assert_eq!(s, StatusCode::OK, "{body}");
        assert!(started.elapsed() < Duration::from_millis(900), "hello took {:?} during the flood", started.elapsed());
    }

    let ((s, body), took) = spin.await.expect("join");
    assert_eq!(s, StatusCode::GATEWAY_TIMEOUT, "{body}");
    assert_eq!(body["error"]["code"], "deadline_exceeded");
    assert!(took < Duration::from_secs(3), "the deadline was enforced: {took:?}");
    let (s, body) = bomb.await.expect("join");
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["code"], "memory_limit_exceeded");

    // Unbounded recursion and an oversized response fail cleanly too.
    node.deploy("deep-recursion", runplane_examples::DEEP_RECURSION, "deep", &[]).await;
    node.deploy("huge-output", runplane_examples::HUGE_OUTPUT, "huge", &[]).await;
    let (s, body) = node.app(&acme, Method::GET, "/apps/deep/", None).await;
    assert_eq!(s, StatusCode::BAD_GATEWAY, "{body}");
    // Rust's shadow stack lives in linear memory, so the overflow shows as an
    // out-of-bounds access (or a wasm stack overflow for frames on the native stack).
    assert_eq!(body["error"]["code"], "capability_trapped", "{body}");
    assert!(body["error"]["message"].as_str().is_some_and(|m| m.contains("stack overflow") || m.contains("out of bounds")), "{body}");
    let (s, body) = node.app(&acme, Method::GET, "/apps/huge/", None).await;
    assert_eq!(s, StatusCode::BAD_GATEWAY, "{body}");
    assert_eq!(body["error"]["code"], "response_too_large");

    // And the node is still healthy afterwards.
    let (s, _) = node.app(&acme, Method::GET, "/apps/hello/", None).await;
    assert_eq!(s, StatusCode::OK);
    let (_, audit) = node.admin(Method::GET, "/v1/audit/events?log=tenant:acme", None).await;
    let codes: Vec<&str> = audit["items"].as_array().expect("items").iter().filter_map(|e| e["event"]["outcome"]["code"].as_str()).collect();
    assert!(codes.contains(&"deadline_exceeded") && codes.contains(&"memory_limit_exceeded"), "{codes:?}");
}

#[tokio::test]
async fn bad_input_gets_clear_client_errors() {
    let (node, acme, _globex, _initech) = orders_node().await;
    let check = |s: StatusCode, body: &Value, code: &str| {
        assert!(s.is_client_error(), "{code}: {s} {body}");
        assert_eq!(body["error"]["code"], code, "{body}");
        assert_eq!(body["protocol_version"], "1.0");
        assert!(body["error"]["message"].as_str().is_some_and(|m| m.len() > 10));
    };

    // Malformed JSON to the admin API.
    let resp = node.http.post(node.url("/v1/tenants")).bearer_auth(ADMIN).header("content-type", "application/json").body("{\"id\": ").send().await.expect("send");
    let s = resp.status();
    check(s, &resp.json().await.expect("json"), "invalid_json");
    // Wrong shape, bad ids.
    let (s, b) = node.admin(Method::POST, "/v1/tenants", Some(json!({"id": 42}))).await;
    check(s, &b, "invalid_request");
    let (s, b) = node.admin(Method::POST, "/v1/tenants", Some(json!({"id": "../etc"}))).await;
    check(s, &b, "invalid_tenant_id");
    let (s, b) = node.admin(Method::POST, "/v1/tenants", Some(json!({"id": "acme"}))).await;
    check(s, &b, "conflict");
    // Oversized body.
    let big = "x".repeat(2 << 20);
    let resp = node.http.post(node.url("/apps/orders/orders")).bearer_auth(&acme).body(big).send().await.expect("send");
    let s = resp.status();
    check(s, &resp.json().await.expect("json"), "body_too_large");
    // Unknown routes.
    let (s, b) = node.admin(Method::GET, "/v2/nothing", None).await;
    check(s, &b, "not_found");
    let (s, b) = node.app(&acme, Method::GET, "/apps/nothing/here", None).await;
    check(s, &b, "not_found");
    // Wrong credentials.
    let (s, b) = node.app("rpk_wrong", Method::GET, "/apps/orders/orders", None).await;
    check(s, &b, "unauthorized");
    let resp = node.http.get(node.url("/apps/orders/orders")).send().await.expect("send");
    let s = resp.status();
    check(s, &resp.json().await.expect("json"), "unauthorized");
    // A tenant key is a valid credential, but its role does not reach the admin API.
    let (s, b) = node.app(&acme, Method::GET, "/v1/tenants", None).await;
    check(s, &b, "forbidden");
    // Truncated and non-wasm uploads.
    let truncated = &runplane_examples::HELLO[..runplane_examples::HELLO.len() / 2];
    let (s, b) = node.push("broken", "1.0.0", truncated).await;
    check(s, &b, "not_a_component");
    let (s, b) = node.push("text", "1.0.0", b"hello, I am not wasm").await;
    check(s, &b, "not_a_component");
    let (s, b) = node.push("Bad Name", "1.0.0", runplane_examples::HELLO).await;
    check(s, &b, "invalid_name");
    // Malformed JSON to the capability is the capability's 400, and the node survives.
    let resp = node.http.post(node.url("/apps/orders/orders")).bearer_auth(&acme).header("content-type", "application/json").body("{not json").send().await.expect("send");
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let (s, _) = node.admin(Method::GET, "/healthz", None).await;
    assert_eq!(s, StatusCode::OK);
}

#[tokio::test]
async fn suspended_and_deleted_tenants_are_refused() {
    let (node, acme, globex, _initech) = orders_node().await;
    let (s, _) = node.admin(Method::POST, "/v1/tenants/acme/suspend", None).await;
    assert_eq!(s, StatusCode::OK);
    let (s, b) = node.app(&acme, Method::GET, "/apps/orders/orders", None).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{b}");
    let (s, _) = node.app(&globex, Method::GET, "/apps/orders/orders", None).await;
    assert_eq!(s, StatusCode::OK, "other tenants are unaffected");
    let (s, _) = node.admin(Method::POST, "/v1/tenants/acme/resume", None).await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = node.app(&acme, Method::GET, "/apps/orders/orders", None).await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = node.admin(Method::DELETE, "/v1/tenants/acme", None).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _) = node.app(&acme, Method::GET, "/apps/orders/orders", None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (_, list) = node.admin(Method::GET, "/v1/tenants", None).await;
    let ids: Vec<&str> = list["items"].as_array().expect("items").iter().filter_map(|t| t["id"].as_str()).collect();
    assert_eq!(ids, vec!["globex", "initech"]);
    // Cursor pagination.
    let (_, first) = node.admin(Method::GET, "/v1/tenants?limit=1", None).await;
    assert_eq!(first["items"][0]["id"], "globex");
    let cursor = first["next_cursor"].as_str().expect("a next page");
    let (_, second) = node.admin(Method::GET, &format!("/v1/tenants?limit=1&cursor={cursor}"), None).await;
    assert_eq!(second["items"][0]["id"], "initech");
    assert!(second["next_cursor"].is_null());
}

#[tokio::test]
async fn openapi_health_and_metrics_are_served() {
    let (node, acme, _g, _i) = orders_node().await;
    let (s, _) = node.app(&acme, Method::GET, "/apps/orders/orders", None).await;
    assert_eq!(s, StatusCode::OK);
    let (s, doc) = node.admin(Method::GET, "/v1/openapi.json", None).await;
    assert_eq!(s, StatusCode::OK);
    assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")));
    for path in ["/v1/tenants", "/v1/capabilities", "/v1/deployments", "/v1/audit/events", "/healthz", "/metrics"] {
        assert!(doc["paths"][path].is_object(), "OpenAPI lacks {path}");
    }
    let (s, health) = node.admin(Method::GET, "/healthz", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(health["status"], "ok");
    assert_eq!(health["protocol_version"], "1.0");
    let metrics = node.http.get(node.url("/metrics")).send().await.expect("metrics").text().await.expect("text");
    assert!(metrics.contains("runplane_invocations_total"), "{metrics}");
    assert!(metrics.contains("runplane_invocations_in_flight"));
}

#[tokio::test]
async fn state_survives_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = || {
        let mut c = NodeConfig::embedded("127.0.0.1:0".parse().expect("addr"), dir.path().to_path_buf());
        c.admin_token = Some(ADMIN.into());
        c
    };
    let first = Node::start(config()).await.expect("start");
    let http = Client::new();
    let base = format!("http://{}", first.addr);
    let created: Value = http.post(format!("{base}/v1/tenants")).bearer_auth(ADMIN).json(&json!({"id": "acme"})).send().await.expect("send").json().await.expect("json");
    let key = created["api_key"].as_str().expect("key").to_owned();
    http.post(format!("{base}/v1/capabilities?name=orders&version=1.0.0")).bearer_auth(ADMIN).body(runplane_examples::ORDERS.to_vec()).send().await.expect("push");
    http.post(format!("{base}/v1/deployments")).bearer_auth(ADMIN).json(&json!({"capability": "orders", "version": "1.0.0"})).send().await.expect("deploy");
    let order: Value = http.post(format!("{base}/apps/orders/orders")).bearer_auth(&key).json(&json!({"item": "tea", "quantity": 1})).send().await.expect("send").json().await.expect("json");
    first.server.abort();
    drop(first);

    let second = Node::start(config()).await.expect("restart");
    let base = format!("http://{}", second.addr);
    let resp = http.get(format!("{base}/apps/orders/orders/{}", order["id"].as_str().expect("id"))).bearer_auth(&key).send().await.expect("send");
    assert_eq!(resp.status(), StatusCode::OK, "tenant, key, deployment and record survived the restart");
    // The compiled component came from the on-disk cache.
    assert!(std::fs::read_dir(dir.path().join("cache")).expect("cache dir").count() >= 1);
}

#[tokio::test]
async fn the_cpu_budget_stops_a_loop_deterministically() {
    let node = TestNode::start(|c| c.sandbox.fuel = 50_000_000).await;
    let acme = node.tenant("acme", Mode::Shared).await;
    node.deploy("spin-loop", runplane_examples::SPIN_LOOP, "spin", &[]).await;
    let (s, body) = node.app(&acme, Method::GET, "/apps/spin/", None).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["code"], "cpu_budget_exceeded");
}

#[tokio::test]
async fn outbound_http_reaches_only_allow_listed_hosts() {
    use axum::routing::post;
    // A local webhook receiver that records what it got.
    /// (x-signature header, body) of each webhook call.
    type Received = Arc<tokio::sync::Mutex<Vec<(Option<String>, String)>>>;
    let received: Received = Arc::default();
    let sink = received.clone();
    let app = axum::Router::new().route(
        "/hook",
        post(move |headers: axum::http::HeaderMap, body: String| {
            let sink = sink.clone();
            async move {
                let sig = headers.get("x-signature").and_then(|v| v.to_str().ok()).map(str::to_owned);
                sink.lock().await.push((sig, body));
                "ok"
            }
        }),
    );
    let (node, acme, hook) = orders_with_webhook(app).await;

    // Not on the allow-list: refused, nothing arrives.
    let (s, body) = node.admin(Method::POST, "/v1/deployments", Some(json!({"capability": "orders", "version": "1.0.0"}))).await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
    let (_, order) = node.app(&acme, Method::POST, "/apps/orders/orders", Some(json!({"item": "tea", "quantity": 1}))).await;
    let id = order["id"].as_str().expect("id").to_owned();
    let (s, body) = node.app(&acme, Method::POST, &format!("/apps/orders/orders/{id}/notify"), None).await;
    assert_eq!(s, StatusCode::BAD_GATEWAY, "{body}");
    assert!(body["error"].as_str().is_some_and(|e| e.contains("HttpRequestDenied")), "{body}");
    assert!(received.lock().await.is_empty());

    // On the allow-list: delivered, signed with the tenant's secret.
    let (s, body) = node
        .admin(Method::POST, "/v1/deployments", Some(json!({"capability": "orders", "version": "1.0.0", "allow_hosts": [hook.to_string()]})))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
    let (s, body) = node.app(&acme, Method::POST, &format!("/apps/orders/orders/{id}/notify"), None).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(body["status"], 200);
    let got = received.lock().await.clone();
    assert_eq!(got.len(), 1);
    let (sig, sent) = &got[0];
    assert!(sent.contains(&id));
    assert_eq!(sig.as_deref(), order["signature"].as_str(), "the webhook carries the order's signature");
    assert!(!sent.contains("SECRET-VALUE"), "the secret itself never leaves");
}

/// Everything the node logs, across all tests in this binary.
fn captured_logs() -> &'static Arc<std::sync::Mutex<Vec<u8>>> {
    static LOGS: std::sync::OnceLock<Arc<std::sync::Mutex<Vec<u8>>>> = std::sync::OnceLock::new();
    LOGS.get_or_init(|| {
        let buf: Arc<std::sync::Mutex<Vec<u8>>> = Arc::default();
        let writer = buf.clone();
        let make = move || LogWriter(writer.clone());
        // sqlx at debug: every statement it runs is captured, so a statement carrying
        // a password (CREATE ROLE … PASSWORD) would be caught by the tests.
        let filter = tracing_subscriber::EnvFilter::new("info,wasmtime=warn,cranelift=warn,sqlx=debug");
        let _ = tracing_subscriber::fmt().with_env_filter(filter).with_ansi(false).with_writer(make).try_init();
        buf
    })
}

struct LogWriter(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for LogWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn secrets_never_reach_logs_or_audit_events() {
    let logs = captured_logs();
    let node = TestNode::start(|_| {}).await;
    let acme = node.tenant("acme", Mode::Shared).await;
    let (s, _) = node.admin(Method::PUT, "/v1/tenants/acme/secrets/api-token", Some(json!({"value": "TOP-SECRET-7f3a9c"}))).await;
    assert_eq!(s, StatusCode::OK);
    node.deploy("leak-secret", runplane_examples::LEAK_SECRET, "leak", &[]).await;
    let (s, body) = node.app(&acme, Method::GET, "/apps/leak/", None).await;
    assert_eq!(s, StatusCode::OK, "{body}");

    let text = String::from_utf8_lossy(&logs.lock().unwrap_or_else(|p| p.into_inner())).into_owned();
    for channel in ["stdout leak", "stderr leak", "logging leak"] {
        assert!(text.contains(&format!("{channel}: [REDACTED]")), "{channel} was captured and redacted:\n{text}");
    }
    assert!(!text.contains("TOP-SECRET-7f3a9c"), "a secret value reached the logs");
    // Whatever of the suite ran so far (TLS and CA tests among it): no private key.
    assert!(!text.contains("PRIVATE KEY"), "a PEM private key reached the logs");
    let (_, admin) = node.admin(Method::GET, "/v1/audit/events?log=admin&limit=1000", None).await;
    let (_, tenant) = node.admin(Method::GET, "/v1/audit/events?log=tenant:acme&limit=1000", None).await;
    assert!(!format!("{admin}{tenant}").contains("TOP-SECRET"), "a secret value reached the audit log");
}

/// Journal and replay (spec §6.3): every kind of `orders` invocation — records, events,
/// blobs, key-value, config, a secret and an allow-listed outbound call — replays as
/// identical (response bytes and audit leaf) without touching a backend or the
/// network again; a secret rotated since is caught as non-determinism at the call
/// that read it; a whole log replays to its stored root.
#[tokio::test]
async fn journaled_invocations_replay_identically_and_divergence_is_named() {
    use axum::routing::post;
    let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = calls.clone();
    let app = axum::Router::new().route(
        "/hook",
        post(move || {
            let n = counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async move { format!("accepted #{n}") }
        }),
    );
    let (node, acme, hook) = orders_with_webhook(app).await;
    let (s, body) = node
        .admin(Method::POST, "/v1/deployments", Some(json!({"capability": "orders", "version": "1.0.0", "allow_hosts": [hook.to_string()]})))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{body}");

    let invoke = |method: Method, path: String, body: Option<Value>| {
        let req = node.http.request(method, node.url(&path)).bearer_auth(&acme);
        let req = match body {
            Some(b) => req.json(&b),
            None => req,
        };
        async move {
            let resp = req.send().await.expect("request");
            let id = resp.headers().get("x-runplane-invocation-id").and_then(|v| v.to_str().ok()).expect("invocation id").to_owned();
            (resp.status(), id, resp.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let (s, create, order) = invoke(Method::POST, "/apps/orders/orders".into(), Some(json!({"item": "thé", "quantity": 2}))).await;
    assert_eq!(s, StatusCode::CREATED);
    let id = order["id"].as_str().expect("id").to_owned();
    let mut ids = vec![create];
    for (method, path, body) in [
        (Method::GET, format!("/apps/orders/orders/{id}"), None),
        (Method::PUT, format!("/apps/orders/orders/{id}"), Some(json!({"item": "thé", "quantity": 3, "revision": 1}))),
        (Method::GET, "/apps/orders/orders?limit=5".into(), None),
        (Method::GET, format!("/apps/orders/orders/{id}/invoice"), None),
        (Method::GET, "/apps/orders/events".into(), None),
        (Method::GET, "/apps/orders/stats".into(), None),
        (Method::GET, "/apps/orders/orders/ord_missing".into(), None),
        (Method::POST, "/apps/orders/orders".into(), Some(json!({"item": ""}))),
        (Method::POST, format!("/apps/orders/orders/{id}/notify"), None),
    ] {
        let (s, inv, body) = invoke(method, path.clone(), body).await;
        assert!(s.as_u16() < 500, "{path}: {s} {body}");
        ids.push(inv);
    }
    let notify = ids.last().cloned().expect("notify");
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1, "the webhook was called once");
    let (_, before) = node.admin(Method::GET, "/v1/audit/logs", None).await;

    for inv in &ids {
        let (s, report) = node.admin(Method::POST, &format!("/v1/replay/{inv}"), None).await;
        assert_eq!(s, StatusCode::OK, "{report}");
        assert_eq!(report["identical"], true, "invocation {inv} did not replay identically: {report}");
        assert_eq!(report["replayed_event_hash"], report["event_hash"]);
    }
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1, "a replay never calls out again");
    let (_, after) = node.admin(Method::GET, "/v1/audit/logs", None).await;
    let size = |v: &Value, log: &str| v["items"].as_array().expect("items").iter().find(|l| l["log"] == log).map(|l| l["size"].clone());
    assert_eq!(size(&before, "tenant:acme"), size(&after, "tenant:acme"), "a replay writes nothing to the tenant's log");
    let (_, stored) = node.app(&acme, Method::GET, "/apps/orders/orders?limit=50", None).await;
    assert_eq!(stored["items"].as_array().map(Vec::len), Some(1), "a replay stores nothing: {stored}");

    // A value from outside the journal changed: the secret was rotated since.
    node.admin(Method::PUT, "/v1/tenants/acme/secrets/webhook-signing-key", Some(json!({"value": "ROTATED"}))).await;
    let (s, report) = node.admin(Method::POST, &format!("/v1/replay/{notify}"), None).await;
    assert_eq!(s, StatusCode::OK, "{report}");
    assert_eq!(report["identical"], false);
    let divergence = &report["divergence"];
    assert!(divergence["expected"].as_str().is_some_and(|e| e.starts_with("secrets.get")), "{report}");
    assert!(divergence["found"].as_str().is_some_and(|f| f.contains("rotated")), "{report}");
    assert!(!report.to_string().contains("ROTATED") && !report.to_string().contains("SECRET-VALUE"), "no secret in the report");

    let (s, log) = node.admin(Method::POST, "/v1/audit/logs/tenant:acme/replay", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(log["identical"], true, "{log}");
    let (s, _) = node.admin(Method::POST, "/v1/replay/00000000-0000-4000-8000-000000000000", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (_, admin) = node.admin(Method::GET, "/v1/audit/events?log=admin&limit=1000", None).await;
    let replays = admin["items"].as_array().expect("items").iter().filter(|e| e["event"]["action"] == "replay").count();
    assert_eq!(replays, ids.len() + 3, "every replay request (each invocation, the log, the unknown id) is an admin event");
}

/// A message delivered to a handler is journaled too (what it received, what it read)
/// and replays identically.
#[tokio::test]
async fn message_deliveries_replay_identically() {
    let (node, acme, _globex, _initech) = orders_node().await;
    let (s, _) = node.app(&acme, Method::POST, "/apps/orders/orders", Some(json!({"item": "tea", "quantity": 1}))).await;
    assert_eq!(s, StatusCode::CREATED);
    let started = std::time::Instant::now();
    let delivery = loop {
        let (_, page) = node.admin(Method::GET, "/v1/audit/events?log=tenant:acme&limit=1000", None).await;
        let found = page["items"].as_array().expect("items").iter().find(|e| e["event"]["action"] == "invoke.message").cloned();
        if let Some(e) = found {
            break e;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "the order.created message was not delivered: {page}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(delivery["event"]["outcome"]["status"], "ok", "{delivery}");
    assert!(delivery["event"]["details"]["journal_digest"].as_str().is_some_and(|d| d.starts_with("sha256:")), "{delivery}");
    let id = delivery["event"]["context"]["invocation_id"].as_str().expect("invocation id");
    let (s, report) = node.admin(Method::POST, &format!("/v1/replay/{id}"), None).await;
    assert_eq!(s, StatusCode::OK, "{report}");
    assert_eq!(report["identical"], true, "{report}");
}

#[path = "support/tenancy.rs"]
mod tenancy;

#[path = "support/controlplane.rs"]
mod controlplane;

#[path = "support/storage.rs"]
mod storage;

#[path = "support/schemathesis.rs"]
mod schemathesis;

#[path = "support/rollouts.rs"]
mod rollouts;

#[path = "support/jobs.rs"]
mod jobs;
