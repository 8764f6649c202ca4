//! The control plane (spec §7), end to end: versioned config, envelope-encrypted
//! secrets, feature flags, domains and entitlements, capability tokens and roles, one
//! admin event per admin request (proved by walking the OpenAPI document),
//! environments and promotion, operator actions.

use super::*;

/// Sends `method path` with `credential` and an optional JSON body.
async fn call(node: &TestNode, credential: &str, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
    node.app(credential, method, path, body).await
}

/// Mints a token with the root admin token.
async fn mint(node: &TestNode, role: &str, tenant: Option<&str>) -> String {
    let path = match tenant {
        Some(t) => format!("/v1/tenants/{t}/tokens"),
        None => "/v1/tokens".into(),
    };
    let (s, body) = node.admin(Method::POST, &path, Some(json!({"role": role, "subject": format!("{role}@example.com")}))).await;
    assert_eq!(s, StatusCode::CREATED, "mint {role}: {body}");
    body["token"].as_str().expect("token").to_owned()
}

/// The admin log's size, read without adding to it (the read's own event is written
/// after the answer, so it is not counted in the answer).
async fn admin_log_size(node: &TestNode) -> u64 {
    let (_, logs) = node.admin(Method::GET, "/v1/audit/logs", None).await;
    logs["items"].as_array().expect("items").iter().find(|l| l["log"] == "admin").and_then(|l| l["size"].as_u64()).unwrap_or(0)
}

/// The admin event at `index`.
async fn admin_event(node: &TestNode, index: u64) -> Value {
    let (s, page) = node.admin(Method::GET, &format!("/v1/admin-events?cursor={index}&limit=1"), None).await;
    assert_eq!(s, StatusCode::OK, "{page}");
    page["items"][0].clone()
}

#[tokio::test]
async fn config_sets_are_versioned_recorded_per_invocation_and_rolled_back() {
    let (node, acme, globex, _) = orders_node().await;
    let order = |key: String| {
        let node = &node;
        async move {
            let (s, o) = node.app(&key, Method::POST, "/apps/orders/orders", Some(json!({"item": "tea", "quantity": 1}))).await;
            assert_eq!(s, StatusCode::CREATED, "{o}");
            o["currency"].as_str().expect("currency").to_owned()
        }
    };
    assert_eq!(order(acme.clone()).await, "EUR", "the file's value before any set");

    let set = |scope: &'static str, currency: &'static str| {
        let node = &node;
        async move {
            let (s, row) = node
                .admin(Method::PUT, &format!("/v1/config/sets/{scope}"), Some(json!({"values": {"currency": currency}, "reason": "pricing"})))
                .await;
            assert_eq!(s, StatusCode::OK, "{row}");
            row["version"].as_u64().expect("version")
        }
    };
    let v1 = set("capability:orders", "USD").await;
    assert_eq!(order(acme.clone()).await, "USD", "effective on the next request, no restart");
    let v2 = set("tenant:acme:orders", "GBP").await;
    assert_eq!((order(acme.clone()).await, order(globex.clone()).await), ("GBP".into(), "USD".into()), "a tenant's set is its own");
    let v3 = set("capability:orders", "CHF").await;
    assert_eq!(order(globex.clone()).await, "CHF");
    assert_eq!((v1, v2, v3), (1, 2, 3));

    // Every invocation's audit event names the config version it saw.
    let (_, page) = node.admin(Method::GET, "/v1/audit/events?log=tenant:globex&limit=1000", None).await;
    let seen: Vec<String> = page["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter(|e| e["event"]["action"] == "invoke.http")
        .map(|e| e["event"]["config_version"].as_str().expect("config_version").split('/').next().unwrap_or("").to_owned())
        .collect();
    assert_eq!(seen, ["2", "3"], "globex invoked at revisions 2 and 3");

    // Rollback is a new revision with the old content.
    let (s, row) = node.admin(Method::POST, "/v1/config/sets/capability:orders/rollback", Some(json!({"to_version": v1}))).await;
    assert_eq!(s, StatusCode::OK, "{row}");
    assert_eq!((row["version"].as_u64(), row["restored_from"].as_u64()), (Some(4), Some(v1)));
    assert_eq!(order(globex.clone()).await, "USD");
    let (s, _) = node.admin(Method::POST, "/v1/config/sets/capability:orders/rollback", Some(json!({"to_version": v2}))).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "revision 2 belongs to another scope");
    let (_, history) = node.admin(Method::GET, "/v1/config/versions?scope=capability:orders", None).await;
    assert_eq!(history["items"].as_array().map(Vec::len), Some(3), "history is kept: {history}");

    // Each change is an admin event with before and after.
    let (_, events) = node.admin(Method::GET, "/v1/admin-events?limit=1000", None).await;
    let changes: Vec<&Value> = events["items"].as_array().expect("items").iter().filter(|e| e["action_type"] == "config.set").collect();
    assert_eq!(changes.len(), 3);
    assert_eq!(changes[2]["before"]["currency"], "USD");
    assert_eq!(changes[2]["after"]["currency"], "CHF");
    assert_eq!(changes[2]["reason"], "pricing");

    for bad in [json!({"values": {"bad key": "x"}}), json!({"values": {}, "extra": 1})] {
        let (s, body) = node.admin(Method::PUT, "/v1/config/sets/capability:orders", Some(bad)).await;
        assert!(s.is_client_error(), "{body}");
    }
    let (s, _) = node.admin(Method::PUT, "/v1/config/sets/tenant:nobody:orders", Some(json!({"values": {}}))).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn secrets_are_sealed_rotated_and_never_leak_anywhere() {
    let logs = captured_logs();
    let node = TestNode::start(|_| {}).await;
    let acme = node.tenant("acme", Mode::Shared).await;
    let globex = node.tenant("globex", Mode::Shared).await;
    for value in ["SEALED-VALUE-one-4c1d", "SEALED-VALUE-two-9e2b"] {
        let (s, body) = node.admin(Method::PUT, "/v1/tenants/acme/secrets/api-token", Some(json!({"value": value}))).await;
        assert_eq!(s, StatusCode::OK, "{body}");
    }
    let (s, rotated) = node.admin(Method::POST, "/v1/secrets/kek/rotate", None).await;
    assert_eq!(s, StatusCode::OK, "{rotated}");
    assert_eq!(rotated["current"], "kek-2");
    node.deploy("leak-secret", runplane_examples::LEAK_SECRET, "leak", &[]).await;
    let (s, body) = node.app(&acme, Method::GET, "/apps/leak/", None).await;
    assert_eq!(s, StatusCode::OK, "the current version, sealed under the old KEK, still opens: {body}");
    // globex has no such secret; whatever the component answers, it is not acme's.
    let (_, other) = node.app(&globex, Method::GET, "/apps/leak/", None).await;
    // Errors around secrets name the secret, never a value.
    let (_, bad) = node.admin(Method::PUT, "/v1/tenants/acme/secrets/bad%20name", Some(json!({"value": "SEALED-VALUE-bad"}))).await;

    // The stored bytes hold no plaintext.
    let data_dir = node.running.node.config().data_dir.clone();
    let mut stored = Vec::new();
    for f in ["ports.db", "ports.db-wal"] {
        stored.extend(std::fs::read(data_dir.join("shared").join(f)).unwrap_or_default());
    }
    assert!(!stored.is_empty(), "the shared store exists");
    assert!(!stored.windows(12).any(|w| w == b"SEALED-VALUE"), "a plaintext secret is in the stored bytes");

    let (_, listing) = node.admin(Method::GET, "/v1/tenants/acme/secrets", None).await;
    assert_eq!((listing["items"][0]["name"].as_str(), listing["items"][0]["version"].as_u64()), (Some("api-token"), Some(2)));
    let (_, admin) = node.admin(Method::GET, "/v1/audit/events?log=admin&limit=1000", None).await;
    let (_, tenant) = node.admin(Method::GET, "/v1/audit/events?log=tenant:acme&limit=1000", None).await;
    let metrics = node.http.get(node.url("/metrics")).send().await.expect("metrics").text().await.expect("text");
    let text = String::from_utf8_lossy(&logs.lock().unwrap_or_else(|p| p.into_inner())).into_owned();
    let everything = format!("{listing}{admin}{tenant}{metrics}{bad}{rotated}{other}{text}");
    assert!(!everything.contains("SEALED-VALUE"), "a secret value reached a listing, an audit event, a metric, an error or a log");
    let key_file = std::fs::read_to_string(data_dir.join("secrets.kek")).expect("key file");
    let key = key_file.lines().last().and_then(|l| l.split_whitespace().nth(1)).expect("a key");
    assert!(!everything.contains(key), "key material leaked");

    // After a restart (same key file) every version still opens.
    let config = node.running.node.config().clone();
    node.running.server.abort();
    drop(node.running);
    let restarted = Node::start(NodeConfig { listen: "127.0.0.1:0".parse().expect("addr"), ..config }).await.expect("restart");
    let again = TestNode { running: restarted, _dir: node._dir, http: Client::new() };
    let (s, body) = again.app(&acme, Method::GET, "/apps/leak/", None).await;
    assert_eq!(s, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn flags_gate_routes_per_tenant_take_effect_at_once_and_roll_out_monotonically() {
    let node = TestNode::start(|_| {}).await;
    let mut keys = Vec::new();
    for i in 0..12 {
        keys.push((format!("t{i:02}"), node.tenant(&format!("t{i:02}"), Mode::Shared).await));
    }
    let (s, _) = node.push("hello", "1.0.0", runplane_examples::HELLO).await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, body) = node.admin(Method::POST, "/v1/deployments", Some(json!({"capability": "hello", "version": "1.0.0", "route": "hello", "flag": "new-hello"}))).await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
    let served = |node: &TestNode, key: String| {
        let url = node.url("/apps/hello/");
        let http = node.http.clone();
        async move {
            let r = http.get(url).bearer_auth(key).send().await.expect("request");
            let s = r.status();
            let body: Value = r.json().await.unwrap_or(Value::Null);
            if s == StatusCode::FORBIDDEN {
                assert_eq!(body["error"]["code"], "flag_disabled", "{body}");
            }
            s == StatusCode::OK
        }
    };
    let (a, b) = (keys[0].1.clone(), keys[1].1.clone());
    assert!(!served(&node, a.clone()).await, "an undefined flag is off");

    let flag = |enabled: bool, percent: Option<u32>| json!({"enabled": enabled, "rollout_percent": percent});
    let (s, body) = node.admin(Method::PUT, "/v1/flags/new-hello", Some(flag(true, None))).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert!(served(&node, a.clone()).await && served(&node, b.clone()).await, "toggled on: effective on the next request");

    // A tenant's own flag changes that tenant only, and deleting it restores the
    // instance flag (nothing lost).
    let (s, _) = node.admin(Method::PUT, "/v1/tenants/t00/flags/new-hello", Some(flag(false, None))).await;
    assert_eq!(s, StatusCode::OK);
    assert!(!served(&node, a.clone()).await && served(&node, b.clone()).await, "t00's toggle never changes t01");
    let (s, _) = node.admin(Method::DELETE, "/v1/tenants/t00/flags/new-hello", None).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert!(served(&node, a.clone()).await);

    // Percentage rollout by tenant: deterministic, and raising it never removes anyone.
    let mut previous: Vec<String> = Vec::new();
    for percent in [0, 20, 50, 80, 100] {
        let (s, _) = node.admin(Method::PUT, "/v1/flags/new-hello", Some(flag(true, Some(percent)))).await;
        assert_eq!(s, StatusCode::OK);
        let mut now_in = Vec::new();
        for (tenant, key) in &keys {
            if served(&node, key.clone()).await {
                now_in.push(tenant.clone());
            }
        }
        let again: Vec<String> = {
            let mut v = Vec::new();
            for (tenant, key) in &keys {
                if served(&node, key.clone()).await {
                    v.push(tenant.clone());
                }
            }
            v
        };
        assert_eq!(now_in, again, "the same subjects at the same percentage");
        assert!(previous.iter().all(|t| now_in.contains(t)), "raising to {percent}% removed someone: {previous:?} -> {now_in:?}");
        match percent {
            0 => assert!(now_in.is_empty()),
            100 => assert_eq!(now_in.len(), keys.len()),
            _ => {}
        }
        previous = now_in;
    }
    // Off again is one toggle, and the rollout settings survive it.
    let (_, body) = node.admin(Method::PUT, "/v1/flags/new-hello", Some(flag(false, Some(100)))).await;
    assert_eq!(body["rollout_percent"], 100);
    assert!(!served(&node, a.clone()).await);
}

#[tokio::test]
async fn domains_are_limited_by_tier_and_entitle_capabilities() {
    let node = TestNode::start(|_| {}).await;
    let acme = node.tenant("acme", Mode::Shared).await;
    node.deploy("hello", runplane_examples::HELLO, "hello", &[]).await;
    let domain = |id: &str, caps: &[&str], deps: &[&str]| json!({"domain_id": id, "domain_name": id.to_uppercase(), "capabilities": caps, "dependencies": deps});
    for (id, caps, deps) in [("com", vec!["hello"], vec![]), ("crm", vec![], vec![]), ("hr", vec![], vec![]), ("ops", vec![], vec![]), ("ana", vec![], vec!["com"])] {
        let (s, body) = node.admin(Method::PUT, &format!("/v1/domains/{id}"), Some(domain(id, &caps, &deps))).await;
        assert_eq!(s, StatusCode::OK, "{body}");
    }
    let (s, body) = node.admin(Method::PUT, "/v1/domains/bad", Some(domain("bad", &[], &["missing"]))).await;
    assert!(s.is_client_error(), "an unknown dependency is refused: {body}");

    // hello is in com, which acme has not activated.
    let (s, body) = node.app(&acme, Method::GET, "/apps/hello/", None).await;
    assert_eq!((s, body["error"]["code"].as_str()), (StatusCode::FORBIDDEN, Some("not_entitled")), "{body}");
    // A dependency must be active first.
    let (s, body) = node.admin(Method::POST, "/v1/tenants/acme/domains/ana", None).await;
    assert_eq!(s, StatusCode::CONFLICT, "{body}");
    assert!(body["error"]["message"].as_str().unwrap_or("").contains("com"), "{body}");

    for d in ["com", "crm", "hr"] {
        let (s, body) = node.admin(Method::POST, &format!("/v1/tenants/acme/domains/{d}"), None).await;
        assert_eq!(s, StatusCode::OK, "{body}");
    }
    let (s, body) = node.app(&acme, Method::GET, "/apps/hello/", None).await;
    assert_eq!(s, StatusCode::OK, "entitled from the next request: {body}");
    let (s, body) = node.admin(Method::POST, "/v1/tenants/acme/domains/ops", None).await;
    assert_eq!((s, body["error"]["code"].as_str()), (StatusCode::FORBIDDEN, Some("domain_limit")), "a free tenant has 3 domains: {body}");

    // Deactivation takes effect on the next request.
    let (s, body) = node.admin(Method::DELETE, "/v1/tenants/acme/domains/com", None).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let (s, _) = node.app(&acme, Method::GET, "/apps/hello/", None).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (_, view) = node.admin(Method::GET, "/v1/tenants/acme/domains", None).await;
    assert_eq!((view["limit"].as_u64(), view["active"].as_array().map(Vec::len)), (Some(3), Some(2)), "{view}");
}

#[tokio::test]
async fn tokens_carry_exactly_their_roles_and_escalation_is_refused_and_audited() {
    let node = TestNode::start(|_| {}).await;
    let acme = node.tenant("acme", Mode::Shared).await;
    node.tenant("globex", Mode::Shared).await;
    node.deploy("hello", runplane_examples::HELLO, "hello", &[]).await;
    let deployer = mint(&node, "deployer", None).await;
    let auditor = mint(&node, "auditor", None).await;
    let operator = mint(&node, "operator", None).await;
    let instance_admin = mint(&node, "instance-admin", None).await;
    let tenant_admin = mint(&node, "tenant-admin", Some("acme")).await;

    // (credential, method, path, body, allowed?)
    let secret = Some(json!({"value": "v"}));
    let deploy = Some(json!({"capability": "hello", "version": "1.0.0", "route": "hello"}));
    let matrix: Vec<(&str, Method, &str, Option<Value>, [bool; 5])> = vec![
        //                                                         deployer auditor operator inst-admin tenant-admin
        ("tenants", Method::GET, "/v1/tenants", None, [false, true, true, true, false]),
        ("deploy", Method::POST, "/v1/deployments", deploy, [true, false, false, true, false]),
        ("audit", Method::GET, "/v1/audit/logs", None, [false, true, true, true, false]),
        ("pause", Method::POST, "/v1/deployments/hello/pause", None, [false, false, true, true, false]),
        ("resume", Method::POST, "/v1/deployments/hello/resume", None, [false, false, true, true, false]),
        ("acme secret", Method::PUT, "/v1/tenants/acme/secrets/k", secret.clone(), [false, false, false, true, true]),
        ("globex secret", Method::PUT, "/v1/tenants/globex/secrets/k", secret, [false, false, false, true, false]),
        ("quota", Method::GET, "/v1/tenants/acme/quota", None, [false, true, false, true, true]),
        ("create tenant", Method::POST, "/v1/tenants", Some(json!({"id": "newco"})), [false, false, false, true, false]),
    ];
    let creds = [&deployer, &auditor, &operator, &instance_admin, &tenant_admin];
    for (what, method, path, body, allowed) in &matrix {
        for (i, cred) in creds.iter().enumerate() {
            let (s, resp) = call(&node, cred, method.clone(), path, body.clone()).await;
            if allowed[i] {
                assert!(s != StatusCode::FORBIDDEN && s != StatusCode::UNAUTHORIZED, "{what} with role #{i}: {s} {resp}");
            } else {
                assert_eq!(s, StatusCode::FORBIDDEN, "{what} with role #{i}: {resp}");
            }
        }
    }

    // A refused attempt is an admin event naming the token, with result denied.
    let before = admin_log_size(&node).await;
    let (s, _) = call(&node, &tenant_admin, Method::GET, "/v1/tenants/globex/secrets", None).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let ev = admin_event(&node, before + 1).await;
    assert_eq!((ev["action_type"].as_str(), ev["result"]["status"].as_str()), (Some("secret.list"), Some("denied")), "{ev}");
    assert!(ev["actor"].as_str().unwrap_or("").starts_with("token:"), "{ev}");
    // A tenant admin cannot mint itself a wider role.
    let (s, _) = call(&node, &tenant_admin, Method::POST, "/v1/tokens", Some(json!({"role": "instance-admin", "subject": "me"}))).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = call(&node, &tenant_admin, Method::POST, "/v1/tenants/acme/tokens", Some(json!({"role": "instance-admin", "subject": "me"}))).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = call(&node, &tenant_admin, Method::POST, "/v1/tenants/globex/tokens", Some(json!({"role": "tenant", "subject": "me"}))).await;
    assert_eq!(s, StatusCode::FORBIDDEN);

    // Attenuated offline: an instance-admin token narrowed to audit reads cannot deploy.
    let narrowed = runplane_policy::tokens::attenuate(
        &instance_admin,
        &runplane_policy::tokens::Restriction { operations: Some(vec!["audit.read".into()]), tenant: None, routes: None, expires_unix_secs: None },
    )
    .expect("attenuate");
    let (s, _) = call(&node, &narrowed, Method::GET, "/v1/audit/logs", None).await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = call(&node, &narrowed, Method::POST, "/v1/tenants", Some(json!({"id": "other"}))).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "attenuation cannot be undone");

    // API keys still work, and obtain a tenant token; revocation takes effect at once.
    let (s, ex) = node.app(&acme, Method::POST, "/v1/tokens/exchange", None).await;
    assert_eq!(s, StatusCode::CREATED, "{ex}");
    let tenant_token = ex["token"].as_str().expect("token").to_owned();
    let (s, body) = call(&node, &tenant_token, Method::GET, "/apps/hello/", None).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let (s, _) = call(&node, &tenant_token, Method::GET, "/v1/tenants/acme", None).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "a tenant token is for traffic only");
    let (s, body) = node.admin(Method::POST, "/v1/tokens/revoke", Some(json!({"token": tenant_token, "reason": "test"}))).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let (s, _) = call(&node, &tenant_token, Method::GET, "/apps/hello/", None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "revoked: refused at once");
    let (s, _) = call(&node, &deployer, Method::GET, "/v1/capabilities", None).await;
    assert_eq!(s, StatusCode::OK);
    let (s, body) = node.admin(Method::POST, "/v1/tokens/revoke", Some(json!({"token": deployer}))).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let (s, _) = call(&node, &deployer, Method::GET, "/v1/capabilities", None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    for garbage in ["not-a-token", "EnQKCgoIdGVzdA", "rpk_nope", "rpa_nope"] {
        let (s, _) = call(&node, garbage, Method::GET, "/v1/tenants", None).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{garbage}");
    }
}

/// Walks the OpenAPI document: every admin route, called with the root admin token,
/// adds exactly one admin event naming its operation — whatever the handler answers.
#[tokio::test]
async fn every_admin_endpoint_writes_exactly_one_admin_event() {
    // The walk is faster than the admin rate limit, which has its own test.
    let node = TestNode::start(|c| c.rate_limits.admin_burst = 100_000).await;
    node.tenant("walk", Mode::Shared).await;
    node.deploy("hello", runplane_examples::HELLO, "hello", &[]).await;
    let (_, doc) = node.admin(Method::GET, "/v1/openapi.json", None).await;
    let mut calls: Vec<(String, String)> = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in ["get", "put", "post", "delete"] {
            if item.get(method).is_some() {
                calls.push((method.to_uppercase(), path.clone()));
            }
        }
    }
    // Deleting the tenant last keeps it for the others.
    calls.sort_by_key(|(m, p)| (m == "DELETE" && p == "/v1/tenants/{id}", p.clone(), m.clone()));
    let routes = runplane_node::api::gate::ADMIN_ROUTES;
    let (mut walked, mut elsewhere) = (0, 0);
    for (method, template) in &calls {
        if !template.starts_with("/v1/") || runplane_node::api::gate::NOT_ADMIN.contains(&template.as_str()) {
            continue;
        }
        // Served on the metadata listener alone (mutual TLS 1.3): its admin event is
        // checked there (`tls::the_instance_metadata_interface_…`).
        if template.starts_with("/v1/instance/") {
            elsewhere += 1;
            continue;
        }
        let route = routes.iter().find(|r| r.path == template && r.method == method).unwrap_or_else(|| panic!("{method} {template} has no policy entry"));
        let path = template
            .replace("{id}", "walk")
            .replace("{name}", "walk-secret")
            .replace("{route}", "hello")
            .replace("{log}", "admin")
            .replace("{invocation_id}", "00000000-0000-0000-0000-000000000000")
            .replace("{scope}", "capability:hello")
            .replace("{feature}", "walk-flag")
            .replace("{domain}", "walk");
        let before = admin_log_size(&node).await;
        let body = if method == "GET" || method == "DELETE" { None } else { Some(json!({})) };
        let (status, resp) = node.admin(Method::from_bytes(method.as_bytes()).expect("method"), &path, body).await;
        let after = admin_log_size(&node).await;
        // `before`'s own read is the one extra event.
        assert_eq!(after - before, 2, "{method} {template} ({status} {resp}) wrote {} admin events", after - before - 1);
        let ev = admin_event(&node, before + 1).await;
        assert_eq!(ev["action_type"], route.operation, "{method} {template}: {ev}");
        assert_eq!(ev["result"]["http_status"].as_u64(), Some(u64::from(status.as_u16())), "{method} {template}");
        walked += 1;
    }
    assert!(walked + elsewhere >= routes.len(), "walked {walked} (and {elsewhere} served elsewhere) of {} admin routes", routes.len());
    // And no policy entry lacks its OpenAPI description.
    for r in routes {
        assert!(calls.iter().any(|(m, p)| m == r.method && p == r.path), "{} {} is not in the OpenAPI document", r.method, r.path);
    }
}

#[tokio::test]
async fn environments_promote_versions_and_operators_pause_and_drain() {
    let node = TestNode::start(|_| {}).await;
    let acme = node.tenant("acme", Mode::Shared).await;
    let deployer = mint(&node, "deployer", None).await;
    let auditor = mint(&node, "auditor", None).await;
    let env = |name: &str, from: Option<&str>, require: bool| {
        json!({"name": name, "bindings": {"records": "sqlite"}, "regions": ["eu-west"], "policies": {"require_promotion": require}, "promotes_from": from})
    };
    for (name, from, require) in [("dev", None, false), ("stage", Some("dev"), false), ("default", Some("stage"), true)] {
        let (s, body) = node.admin(Method::PUT, &format!("/v1/environments/{name}"), Some(env(name, from, require))).await;
        assert_eq!(s, StatusCode::OK, "{body}");
    }
    let (s, body) = node.admin(Method::PUT, "/v1/environments/bad", Some(json!({"name": "bad", "bindings": {"records": "nowhere"}}))).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{body}");
    let (s, _) = node.push("hello", "1.0.0", runplane_examples::HELLO).await;
    assert_eq!(s, StatusCode::CREATED);
    let deploy = json!({"capability": "hello", "version": "1.0.0", "route": "hello"});
    let (s, body) = node.admin(Method::POST, "/v1/deployments", Some(deploy.clone())).await;
    assert_eq!(s, StatusCode::CONFLICT, "this node's environment requires promotion: {body}");

    let promote = |to: &str| (format!("/v1/environments/{to}/promote"), json!({"capability": "hello", "version": "1.0.0", "reason": "release 1"}));
    let (p, b) = promote("stage");
    let (s, body) = call(&node, &deployer, Method::POST, &p, Some(b)).await;
    assert_eq!(s, StatusCode::CONFLICT, "not in dev yet: {body}");
    for to in ["dev", "stage"] {
        let (p, b) = promote(to);
        let (s, _) = call(&node, &auditor, Method::POST, &p, Some(b.clone())).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "an auditor cannot promote");
        let (s, body) = call(&node, &deployer, Method::POST, &p, Some(b)).await;
        assert_eq!(s, StatusCode::OK, "{to}: {body}");
    }
    let (p, b) = promote("default");
    let (s, body) = call(&node, &deployer, Method::POST, &p, Some(b)).await;
    assert_eq!((s, body["promoted_from"].as_str()), (StatusCode::OK, Some("stage")), "{body}");
    let (s, body) = call(&node, &deployer, Method::POST, "/v1/deployments", Some(deploy)).await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
    let (_, events) = node.admin(Method::GET, "/v1/admin-events?limit=1000", None).await;
    let promotions = events["items"].as_array().expect("items").iter().filter(|e| e["action_type"] == "promote" && e["result"]["status"] == "ok").count();
    assert_eq!(promotions, 3);

    // Operators pause a route (503) and resume it.
    let operator = mint(&node, "operator", None).await;
    let (s, _) = call(&node, &operator, Method::POST, "/v1/deployments/hello/pause", None).await;
    assert_eq!(s, StatusCode::OK);
    let (s, body) = node.app(&acme, Method::GET, "/apps/hello/", None).await;
    assert_eq!((s, body["error"]["code"].as_str()), (StatusCode::SERVICE_UNAVAILABLE, Some("paused")));
    let (s, _) = call(&node, &operator, Method::POST, "/v1/deployments/hello/resume", None).await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = node.app(&acme, Method::GET, "/apps/hello/", None).await;
    assert_eq!(s, StatusCode::OK);
    // Draining a tenant suspends it once nothing of it runs.
    let (s, body) = call(&node, &operator, Method::POST, "/v1/tenants/acme/drain?timeout_secs=5", None).await;
    assert_eq!((s, body["drained"].as_bool()), (StatusCode::OK, Some(true)), "{body}");
    let (s, _) = node.app(&acme, Method::GET, "/apps/hello/", None).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "a drained tenant is suspended");
}

/// A paused route holds its messages and handles them once resumed.
#[tokio::test]
async fn a_paused_subscriber_holds_its_messages_until_resumed() {
    let node = TestNode::start(|_| {}).await;
    let acme = node.tenant("acme", Mode::Shared).await;
    let (s, _) = node.admin(Method::PUT, "/v1/tenants/acme/secrets/webhook-signing-key", Some(json!({"value": "k"}))).await;
    assert_eq!(s, StatusCode::OK);
    node.deploy("orders", runplane_examples::ORDERS, "orders", &[]).await;
    node.deploy("orders", runplane_examples::ORDERS, "notify", &["order.created"]).await;
    let (s, _) = node.admin(Method::POST, "/v1/deployments/notify/pause", None).await;
    assert_eq!(s, StatusCode::OK);
    let (s, body) = node.app(&acme, Method::POST, "/apps/orders/orders", Some(json!({"item": "tea", "quantity": 1}))).await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
    let notifications = || async { node.app(&acme, Method::GET, "/apps/orders/stats", None).await.1["notifications"].as_u64().unwrap_or(0) };
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(notifications().await, 0, "held while paused");
    let (s, _) = node.admin(Method::POST, "/v1/deployments/notify/resume", None).await;
    assert_eq!(s, StatusCode::OK);
    let mut handled = 0;
    for _ in 0..50 {
        handled = notifications().await;
        if handled == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(handled, 1, "delivered once resumed");
}
