//! Quotas, the scheduler at admission, runtime contracts and the adversarial components
//! (spec §5.2, §5.3, §6.6, §3.2), end to end.

use super::*;

/// Sets `tenant`'s quota through the admin API, starting from its tier's defaults.
async fn set_quota(node: &TestNode, tenant: &str, tune: impl FnOnce(&mut Value)) {
    let (s, view) = node.admin(Method::GET, &format!("/v1/tenants/{tenant}/quota"), None).await;
    assert_eq!(s, StatusCode::OK, "{view}");
    let mut quota = view["quota"].clone();
    tune(&mut quota);
    let (s, body) = node.admin(Method::PUT, &format!("/v1/tenants/{tenant}/quota"), Some(json!({"quota": quota, "reason": "test"}))).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(body["source"], "tenant");
}

async fn quota_view(node: &TestNode, tenant: &str) -> Value {
    node.admin(Method::GET, &format!("/v1/tenants/{tenant}/quota"), None).await.1
}

/// Outcome codes of a log's events, with the quota resource where there is one.
async fn outcomes(node: &TestNode, log: &str) -> Vec<(String, String, String)> {
    let (_, audit) = node.admin(Method::GET, &format!("/v1/audit/events?log={log}&limit=1000"), None).await;
    audit["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|e| {
            let ev = &e["event"];
            let resource = ev["details"]["quota"]["resource"].as_str().or(ev["details"]["resource"].as_str()).unwrap_or("").to_owned();
            let code = ev["outcome"]["code"].as_str().or(ev["outcome"]["status"].as_str()).unwrap_or("");
            (ev["action"].as_str().unwrap_or("").to_owned(), code.to_owned(), resource)
        })
        .collect()
}

/// A local HTTP server whose `/blob` answers `size` bytes.
async fn blob_server(size: usize) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let app = axum::Router::new().route("/blob", axum::routing::get(move || async move { "x".repeat(size) }));
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

async fn deploy_with_hosts(node: &TestNode, name: &str, bytes: &[u8], route: &str, hosts: &[String]) {
    let (s, body) = node.push(name, "1.0.0", bytes).await;
    assert!(s.is_success(), "{body}");
    let (s, body) = node
        .admin(Method::POST, "/v1/deployments", Some(json!({"capability": name, "version": "1.0.0", "route": route, "allow_hosts": hosts})))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
}

fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("statm");
    let pages: u64 = statm.split_whitespace().nth(1).and_then(|p| p.parse().ok()).expect("resident pages");
    pages * 4096
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adversarial_components_fail_alone_with_their_code_an_audit_event_and_a_metric() {
    let node = Arc::new(
        TestNode::start(|c| {
            c.sandbox.deadline_ms = 3_000;
            c.sandbox.memory_limit_bytes = 48 << 20;
            c.sandbox.max_port_calls = 2_000;
        })
        .await,
    );
    let mallory = node.tenant("mallory", Mode::Shared).await;
    let globex = node.tenant("globex", Mode::Shared).await;
    set_quota(&node, "mallory", |q| {
        q["max_disk_mb"] = json!(1);
        q["max_network_kb"] = json!(64);
    })
    .await;
    let blobs = blob_server(16 << 10).await;
    node.deploy("hello", runplane_examples::HELLO, "hello", &[]).await;
    node.deploy("port-flood", runplane_examples::PORT_FLOOD, "flood", &[]).await;
    node.deploy("disk-filler", runplane_examples::DISK_FILLER, "filler", &[]).await;
    node.deploy("memory-bomb", runplane_examples::MEMORY_BOMB, "bomb", &[]).await;
    deploy_with_hosts(&node, "network-hog", runplane_examples::NETWORK_HOG, "hog", &[blobs.to_string()]).await;

    // Warm up, then take the baseline the node's memory must return to.
    for _ in 0..3 {
        node.app(&globex, Method::GET, "/apps/hello/", None).await;
        node.app(&mallory, Method::GET, "/apps/bomb/", None).await;
    }
    let baseline = resident_bytes();

    // The light tenant's traffic runs throughout the attacks and must all succeed.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let light = tokio::spawn({
        let (node, key, stop) = (node.clone(), globex.clone(), stop.clone());
        async move {
            let mut served = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let (s, body) = node.app(&key, Method::GET, "/apps/hello/", None).await;
                assert_eq!(s, StatusCode::OK, "the other tenant's request failed during the attacks: {body}");
                served += 1;
            }
            served
        }
    });

    let hog_url = format!("/apps/hog/?url={}&n=20", format!("http://{blobs}/blob").replace(':', "%3A").replace('/', "%2F"));
    let attacks = [
        ("/apps/flood/", StatusCode::UNPROCESSABLE_ENTITY, "port_call_limit_exceeded"),
        ("/apps/filler/", StatusCode::INSUFFICIENT_STORAGE, "quota_exceeded"),
        (hog_url.as_str(), StatusCode::TOO_MANY_REQUESTS, "quota_exceeded"),
        ("/apps/bomb/", StatusCode::UNPROCESSABLE_ENTITY, "memory_limit_exceeded"),
    ];
    let mut running = Vec::new();
    for (path, status, code) in attacks {
        let (node, key, path) = (node.clone(), mallory.clone(), path.to_owned());
        running.push(tokio::spawn(async move {
            let resp = node.http.get(node.url(&path)).bearer_auth(&key).send().await.expect("send");
            let got = resp.status();
            let retry_after = resp.headers().get("retry-after").map(|v| v.to_str().unwrap_or("").to_owned());
            let body: Value = resp.json().await.unwrap_or(Value::Null);
            assert_eq!(got, status, "{path}: {body}");
            assert_eq!(body["error"]["code"], code, "{path}: {body}");
            if got == StatusCode::TOO_MANY_REQUESTS {
                assert!(retry_after.is_some_and(|v| v.parse::<u64>().is_ok_and(|s| s >= 1)), "{path}: 429 without Retry-After");
            }
        }));
    }
    for r in running {
        r.await.expect("attack");
    }
    for _ in 0..5 {
        let (s, body) = node.app(&mallory, Method::GET, "/apps/bomb/", None).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let served = light.await.expect("light traffic");
    assert!(served >= 5, "the other tenant was served only {served} times");

    // Each violation is in the attacker's audit log, and the victim's log has none.
    let log = outcomes(&node, "tenant:mallory").await;
    for (code, resource) in [("port_call_limit_exceeded", ""), ("quota_exceeded", "disk"), ("quota_exceeded", "network"), ("memory_limit_exceeded", "")] {
        assert!(log.iter().any(|(_, c, r)| c == code && r == resource), "no {code}/{resource} event in {log:?}");
    }
    assert!(outcomes(&node, "tenant:globex").await.iter().all(|(_, c, _)| c == "ok"));
    let metrics = node.http.get(node.url("/metrics")).send().await.expect("metrics").text().await.expect("text");
    for resource in ["disk", "network"] {
        let line = format!("runplane_quota_violations_total{{tenant=\"mallory\",resource=\"{resource}\"}}");
        assert!(metrics.contains(&line), "missing {line}");
    }

    // Memory returns to its baseline: eight 48 MiB bombs left no more than their pool
    // slots' resident pages behind.
    let after = resident_bytes();
    assert!(after < baseline + (96 << 20), "resident memory grew from {baseline} to {after} bytes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_concurrency_quota_queues_then_refuses_with_429() {
    let node = Arc::new(
        TestNode::start(|c| {
            c.sandbox.deadline_ms = 1_000;
            // The wall-clock deadline, not the CPU budget, ends the spins.
            c.sandbox.fuel = u64::MAX / 4;
            c.scheduler.max_queued_per_tenant = 1;
        })
        .await,
    );
    let busy = node.tenant("busy", Mode::Shared).await;
    let other = node.tenant("other", Mode::Shared).await;
    node.deploy("spin-loop", runplane_examples::SPIN_LOOP, "spin", &[]).await;
    node.deploy("hello", runplane_examples::HELLO, "hello", &[]).await;
    // Concurrency: one running, one waiting, the next refused at once with 429.
    set_quota(&node, "busy", |q| q["max_concurrent_tasks"] = json!(1)).await;
    let mut spins = Vec::new();
    for _ in 0..2 {
        let (node, key) = (node.clone(), busy.clone());
        spins.push(tokio::spawn(async move { node.app(&key, Method::GET, "/apps/spin/", None).await.0 }));
    }
    tokio::time::sleep(Duration::from_millis(150)).await;
    let resp = node.http.get(node.url("/apps/hello/")).bearer_auth(&busy).send().await.expect("send");
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(resp.headers().contains_key("retry-after"));
    let body: Value = resp.json().await.expect("json");
    assert!(body["error"]["message"].as_str().is_some_and(|m| m.contains("max_concurrent_tasks")), "{body}");
    // Another tenant is admitted meanwhile.
    assert_eq!(node.app(&other, Method::GET, "/apps/hello/", None).await.0, StatusCode::OK);
    for s in spins {
        // Both spins ran, one after the other, to their deadline.
        assert_eq!(s.await.expect("spin"), StatusCode::GATEWAY_TIMEOUT);
    }
    assert!(outcomes(&node, "tenant:busy").await.iter().any(|(a, c, r)| a == "quota.exceeded" && c == "quota_exceeded" && r == "concurrency"));

}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cpu_and_memory_quotas_are_enforced_per_tenant() {
    let node = Arc::new(
        TestNode::start(|c| {
            c.sandbox.deadline_ms = 5_000;
            c.sandbox.fuel = 400_000_000;
        })
        .await,
    );
    let cpu = node.tenant("cpu", Mode::Shared).await;
    let small = node.tenant("small", Mode::Shared).await;
    let other = node.tenant("other", Mode::Shared).await;
    node.deploy("spin-loop", runplane_examples::SPIN_LOOP, "spin", &[]).await;
    node.deploy("memory-bomb", runplane_examples::MEMORY_BOMB, "bomb", &[]).await;
    node.deploy("hello", runplane_examples::HELLO, "hello", &[]).await;

    // CPU: one second per window = 10⁹ fuel; each spin may burn 4·10⁸.
    set_quota(&node, "cpu", |q| q["max_cpu_seconds"] = json!(1)).await;
    for _ in 0..2 {
        let (s, body) = node.app(&cpu, Method::GET, "/apps/spin/", None).await;
        assert_eq!((s, body["error"]["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("cpu_budget_exceeded")), "{body}");
    }
    // The third gets only what is left of the window and is stopped by the quota.
    let (s, body) = node.app(&cpu, Method::GET, "/apps/spin/", None).await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert!(body["error"]["message"].as_str().is_some_and(|m| m.contains("max_cpu_seconds")), "{body}");
    // The fourth is refused before it runs, and so is every later one, cheaply: the
    // refusals of a minute are one audit event, not one each.
    for _ in 0..20 {
        let (s, body) = node.app(&cpu, Method::GET, "/apps/hello/", None).await;
        assert_eq!(s, StatusCode::TOO_MANY_REQUESTS, "{body}");
    }
    let refusals = outcomes(&node, "tenant:cpu").await.into_iter().filter(|(a, _, r)| a == "quota.exceeded" && r == "cpu").count();
    assert_eq!(refusals, 1, "21 refusals within a minute are audited once");
    let used = quota_view(&node, "cpu").await["usage"]["cpu_seconds"].as_f64().expect("cpu_seconds");
    assert!((used - 1.0).abs() < 1e-6, "used {used} s of CPU");
    // Other tenants' CPU is their own.
    assert_eq!(node.app(&other, Method::GET, "/apps/hello/", None).await.0, StatusCode::OK);

    // Memory: the tenant's cap is lower than the sandbox's.
    set_quota(&node, "small", |q| q["max_memory_mb"] = json!(16)).await;
    let (s, body) = node.app(&small, Method::GET, "/apps/bomb/", None).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(body["error"]["message"].as_str().is_some_and(|m| m.contains(&(16u64 << 20).to_string())), "{body}");

    // Changing a quota is an admin action with before and after.
    let admin = outcomes(&node, "admin").await;
    assert_eq!(admin.iter().filter(|(a, _, _)| a == "quota.set").count(), 2);
    let (s, body) = node.admin(Method::PUT, "/v1/tenants/cpu/quota", Some(json!({"quota": {"max_cpu_seconds": 1}}))).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "a partial quota is refused: {body}");
    let mut bad = quota_view(&node, "cpu").await["quota"].clone();
    bad["max_concurrent_tasks"] = json!(0);
    let (s, body) = node.admin(Method::PUT, "/v1/tenants/cpu/quota", Some(json!({"quota": bad}))).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{body}");
    let (s, _) = node.http.put(node.url("/v1/tenants/cpu/quota")).bearer_auth(&cpu).json(&json!({"quota": bad})).send().await.map(|r| (r.status(), ())).expect("send");
    assert_eq!(s, StatusCode::FORBIDDEN, "a tenant key cannot change quotas (and the attempt is audited)");
}

#[tokio::test]
async fn network_bytes_are_counted_on_the_real_outbound_path() {
    let blobs = blob_server(10 << 10).await;
    let node = TestNode::start(|_| {}).await;
    let key = node.tenant("acme", Mode::Shared).await;
    set_quota(&node, "acme", |q| q["max_network_kb"] = json!(64)).await;
    deploy_with_hosts(&node, "network-hog", runplane_examples::NETWORK_HOG, "hog", &[blobs.to_string()]).await;
    let url = |n: u32| format!("/apps/hog/?url=http%3A%2F%2F{}%3A{}%2Fblob&n={n}", blobs.ip(), blobs.port());
    let (s, body) = node.app(&key, Method::GET, &url(3), None).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(body, json!(30720), "the capability received three 10 KiB bodies");
    let counted = quota_view(&node, "acme").await["usage"]["network_bytes"].as_u64().expect("network_bytes");
    assert!((30_720..40_000).contains(&counted), "counted {counted} bytes for 30 KiB of bodies plus heads");
    let (s, body) = node.app(&key, Method::GET, &url(10), None).await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert!(body["error"]["message"].as_str().is_some_and(|m| m.contains("max_network_kb")), "{body}");
}

#[tokio::test]
async fn disk_usage_is_metered_on_every_write_and_survives_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = || {
        let mut c = NodeConfig::embedded("127.0.0.1:0".parse().expect("addr"), dir.path().to_path_buf());
        c.admin_token = Some(ADMIN.into());
        c
    };
    let first = TestNode { running: Node::start(config()).await.expect("start"), _dir: tempfile::tempdir().expect("tempdir"), http: Client::new() };
    let key = first.tenant("acme", Mode::Shared).await;
    set_quota(&first, "acme", |q| q["max_disk_mb"] = json!(1)).await;
    first.deploy("disk-filler", runplane_examples::DISK_FILLER, "filler", &[]).await;
    let (s, body) = first.app(&key, Method::GET, "/apps/filler/?max=5", None).await;
    assert_eq!((s, body), (StatusCode::OK, json!(5)));
    let record = (2 + 65_536) as i64; // id "rN" and the 64 KiB body
    let used = quota_view(&first, "acme").await["usage"]["disk_bytes"].as_i64().expect("disk_bytes");
    assert_eq!(used, 5 * record);
    // Overwriting the same records does not grow usage.
    let (s, _) = first.app(&key, Method::GET, "/apps/filler/?max=5", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(quota_view(&first, "acme").await["usage"]["disk_bytes"].as_i64(), Some(5 * record));
    tokio::time::sleep(Duration::from_millis(300)).await;
    first.running.server.abort();
    drop(first);

    let second = TestNode { running: Node::start(config()).await.expect("restart"), _dir: tempfile::tempdir().expect("tempdir"), http: Client::new() };
    assert_eq!(quota_view(&second, "acme").await["usage"]["disk_bytes"].as_i64(), Some(5 * record), "usage survived the restart");
    // Writing on past the quota: 507, and usage stays within it.
    let (s, body) = second.app(&key, Method::GET, "/apps/filler/?max=100", None).await;
    assert_eq!(s, StatusCode::INSUFFICIENT_STORAGE, "{body}");
    assert!(body["error"]["message"].as_str().is_some_and(|m| m.contains("max_disk_mb")), "{body}");
    let used = quota_view(&second, "acme").await["usage"]["disk_bytes"].as_i64().expect("disk_bytes");
    assert!(used <= 1 << 20 && used > (1 << 20) - record, "usage {used} after filling to the quota");
}

#[tokio::test]
async fn contracts_check_input_before_output_after_and_detect_tampering() {
    let (node, acme, _, _) = orders_node().await;
    for item in ["tea", "tea", "cake"] {
        let (s, body) = node.app(&acme, Method::POST, "/apps/orders/orders", Some(json!({"item": item, "quantity": 2}))).await;
        assert_eq!(s, StatusCode::CREATED, "{body}");
    }
    let ports = json!(["records", "kv", "events", "messaging", "blobs", "http", "config", "secrets", "telemetry"]);
    let contract = json!({
        "execution_seed": 42,
        "input_schema": {"type": "object", "required": ["op"], "properties": {"op": {"enum": ["count", "total"]}, "item": {"type": "string"}}, "additionalProperties": false},
        "output_schema": {"type": "object", "required": ["orders", "quantity"], "properties": {"orders": {"type": "integer"}, "quantity": {"type": "integer"}}},
        "capability_requirements": ports,
        "resource_limits": {"max_fuel": 100_000_000u64, "max_memory_mb": 32, "deadline_ms": 2000, "max_output_bytes": 1024},
        "protocol_version": "1.0"
    });
    let (s, reg) = node.admin(Method::POST, "/v1/contracts", Some(json!({"route": "orders", "contract": contract}))).await;
    assert_eq!(s, StatusCode::CREATED, "{reg}");
    let id = reg["contract_id"].as_str().expect("id").to_owned();
    assert!(id.starts_with("sha256:"));
    let execute = |input: Value| {
        let (node, key, id) = (&node, acme.clone(), id.clone());
        async move {
            let resp = node.http.post(node.url(&format!("/v1/contracts/{id}/execute"))).bearer_auth(&key).json(&input).send().await.expect("send");
            let status = resp.status();
            (status, resp.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let (s, out) = execute(json!({"op": "total", "item": "tea"})).await;
    assert_eq!(s, StatusCode::OK, "{out}");
    assert_eq!(out["output"], json!({"orders": 2, "quantity": 4}));

    // Invalid input is refused before anything runs: nothing is appended to the log.
    let before = outcomes(&node, "tenant:acme").await.len();
    let (s, out) = execute(json!({"op": "drop-tables"})).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{out}");
    assert_eq!(out["error"]["code"], "contract_input_invalid");
    assert!(out["error"]["message"].as_str().is_some_and(|m| m.contains("/op")), "{out}");
    assert_eq!(outcomes(&node, "tenant:acme").await.len(), before, "the task did not run");

    // Invalid output is refused after the run, and audited.
    let mut strict = contract.clone();
    strict["output_schema"]["required"] = json!(["orders", "quantity", "currency"]);
    let (s, reg2) = node.admin(Method::POST, "/v1/contracts", Some(json!({"route": "orders", "contract": strict}))).await;
    assert_eq!(s, StatusCode::CREATED, "{reg2}");
    let strict_id = reg2["contract_id"].as_str().expect("id");
    assert_ne!(strict_id, id, "a changed contract is a different contract");
    let resp = node.http.post(node.url(&format!("/v1/contracts/{strict_id}/execute"))).bearer_auth(&acme).json(&json!({"op": "count"})).send().await.expect("send");
    assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(resp.json::<Value>().await.expect("json")["error"]["code"], "contract_output_invalid");
    assert!(outcomes(&node, "tenant:acme").await.iter().any(|(a, c, _)| a == "invoke.contract" && c == "contract_output_invalid"));

    // Tampering: the stated id of one contract on altered content is a forgery.
    let mut tampered = contract.clone();
    tampered["contract_id"] = json!(id);
    tampered["resource_limits"]["max_fuel"] = json!(10_000_000_000u64);
    let (s, body) = node.admin(Method::POST, "/v1/contracts", Some(json!({"route": "orders", "contract": tampered}))).await;
    assert_eq!(s, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["code"], "contract_forged");

    // Requirements: a contract that does not grant every port the component uses.
    let mut narrow = contract.clone();
    narrow["capability_requirements"] = json!(["records"]);
    let (s, body) = node.admin(Method::POST, "/v1/contracts", Some(json!({"route": "orders", "contract": narrow}))).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{body}");
    assert!(body["error"]["message"].as_str().is_some_and(|m| m.contains("secrets")), "{body}");

    // The same input under the same contract gives the same output (its seed is fixed).
    let (_, a) = execute(json!({"op": "count"})).await;
    let (_, b) = execute(json!({"op": "count"})).await;
    assert_eq!(a["output"], b["output"]);
}

#[tokio::test]
async fn the_scheduler_plan_endpoint_is_deterministic() {
    let node = TestNode::start(|_| {}).await;
    let sets = |rev: bool| {
        let mut tasks: Vec<Value> = (0..20).map(|i| json!({"task_id": format!("t{i:02}"), "cost": 1 + i % 4})).collect();
        if rev {
            tasks.reverse();
        }
        json!({"sets": [
            {"tenant": "a", "share": {"weight": 1, "max_concurrent": 4, "max_queued": 10}, "tasks": tasks.clone()},
            {"tenant": "b", "share": {"weight": 4, "max_concurrent": 4, "max_queued": 10}, "tasks": tasks},
        ]})
    };
    let (s, one) = node.admin(Method::POST, "/v1/scheduler/plan", Some(sets(false))).await;
    assert_eq!(s, StatusCode::OK, "{one}");
    let (_, two) = node.admin(Method::POST, "/v1/scheduler/plan", Some(sets(true))).await;
    assert_eq!(one["schedule_hash"], two["schedule_hash"]);
    assert_eq!(one["schedule"]["tasks"].as_array().map(Vec::len), Some(40));
}
