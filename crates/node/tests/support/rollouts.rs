//! Progressive delivery on a real node (spec §8): a trapping and a flaky candidate are
//! aborted by themselves and nobody outside the cohort ever met them (proved from the
//! tenants' audit logs); a healthy one goes through timed and indefinite pauses and is
//! promoted; too little traffic is inconclusive, never a pass; supersede, retry, undo
//! and the revision guard; every `/apps/` answer names the version that served it.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use super::*;

/// `GET path` as `key`: the status and the `x-runplane-capability` header.
async fn version_of(node: &TestNode, key: &str, path: &str) -> (StatusCode, String) {
    let r = node.http.get(node.url(path)).bearer_auth(key).send().await.expect("request");
    let served = r.headers().get("x-runplane-capability").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    (r.status(), served)
}

/// A node serving `greet@1.0.0` (hello) on route `greet` with `n` tenants; their keys.
async fn greet_with_tenants(n: usize) -> (TestNode, Vec<(String, String)>) {
    // The walk-through's traffic outruns the default admin limit.
    let node = TestNode::start(|c| c.rate_limits.admin_burst = 100_000).await;
    let mut keys = Vec::new();
    for i in 0..n {
        let id = format!("t{i:03}");
        keys.push((id.clone(), node.tenant(&id, Mode::Shared).await));
    }
    node.deploy("greet", runplane_examples::HELLO, "greet", &[]).await;
    (node, keys)
}

async fn start_rollout(node: &TestNode, body: Value) -> Value {
    let (s, r) = node.admin(Method::POST, "/v1/rollouts", Some(body)).await;
    assert_eq!(s, StatusCode::CREATED, "{r}");
    r
}

async fn rollout(node: &TestNode, id: &str) -> Value {
    let (s, r) = node.admin(Method::GET, &format!("/v1/rollouts/{id}"), None).await;
    assert_eq!(s, StatusCode::OK, "{r}");
    r
}

/// Sends a request from every tenant until `done` says so or `limit` passes; the
/// versions each tenant was served.
async fn traffic_until(node: &TestNode, keys: &[(String, String)], limit: Duration, mut done: impl AsyncFnMut() -> bool) -> BTreeMap<String, BTreeSet<String>> {
    let mut served: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let start = Instant::now();
    while start.elapsed() < limit {
        for (id, key) in keys {
            let (_, v) = version_of(node, key, "/apps/greet/?iters=10").await;
            served.entry(id.clone()).or_default().insert(v);
        }
        if done().await {
            return served;
        }
    }
    panic!("not done within {limit:?}");
}

/// The digests of every invocation in a tenant's audit log.
async fn invoked_digests(node: &TestNode, tenant: &str) -> BTreeSet<String> {
    let (_, page) = node.admin(Method::GET, &format!("/v1/audit/events?log=tenant:{tenant}&limit=1000"), None).await;
    page["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter(|e| e["event"]["action"] == "invoke.http")
        .filter_map(|e| e["event"]["capability_digest"].as_str().map(str::to_owned))
        .collect()
}

/// A candidate that traps on every request, at 30 %, under the default analysis: the
/// fast-trip guard aborts it within seconds; afterwards only v1 answers; the tenants
/// outside the cohort were never served by it, by their audit logs.
#[tokio::test]
async fn a_trapping_canary_is_aborted_by_itself_and_nobody_outside_the_cohort_met_it() {
    // 30 tenants at 30 %: some in the cohort, some out, but for a chance of 2e-5.
    let (node, keys) = greet_with_tenants(30).await;
    let (s, v2) = node.push("greet", "2.0.0", runplane_examples::TRAPPER).await;
    assert_eq!(s, StatusCode::CREATED);
    let r = start_rollout(&node, json!({"route": "greet", "capability": "greet@2.0.0", "strategy": "canary", "steps": [{"set_weight": 30}, {"pause": {}}]})).await;
    let id = r["rollout_id"].as_str().expect("id").to_owned();
    assert_eq!((r["phase"].as_str(), r["weight"].as_f64()), (Some("paused"), Some(30.0)), "{r}");

    // Every tenant sends until the rollout is aborted; the first failed answer from v2
    // starts the clock.
    let (mut first_bad, mut aborted) = (None::<Instant>, None::<Instant>);
    let mut served: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while aborted.is_none() {
        assert!(Instant::now() < deadline, "not aborted within 30 s");
        for (tenant, key) in &keys {
            let (s, v) = version_of(&node, key, "/apps/greet/").await;
            if v == "greet@2.0.0" && s.is_server_error() && first_bad.is_none() {
                first_bad = Some(Instant::now());
            }
            served.entry(tenant.clone()).or_default().insert(v);
        }
        if rollout(&node, &id).await["phase"] == "aborted" {
            aborted = Some(Instant::now());
        }
    }
    let (first_bad, aborted) = (first_bad.expect("v2 answered someone"), aborted.expect("aborted"));
    eprintln!("trapping canary: aborted {:?} after v2's first failed answer", aborted - first_bad);
    for (_, key) in &keys {
        let (s, v) = version_of(&node, key, "/apps/greet/").await;
        assert_eq!((s, v.as_str()), (StatusCode::OK, "greet@1.0.0"), "after the abort only v1 answers");
    }
    let r = rollout(&node, &id).await;
    assert!(r["abort_reason"].as_str().is_some_and(|w| w.contains("fast trip")), "{r}");

    let v1 = node.admin(Method::GET, "/v1/deployments", None).await.1["items"][0]["digest"].as_str().expect("digest").to_owned();
    let v2 = v2["digest"].as_str().expect("digest").to_owned();
    let mut met = 0;
    for (tenant, versions) in &served {
        let digests = invoked_digests(&node, tenant).await;
        if versions.contains("greet@2.0.0") {
            met += 1;
            assert!(digests.contains(&v2), "{tenant} was served v2 and its log says so");
        } else {
            assert_eq!(digests, BTreeSet::from([v1.clone()]), "{tenant}, outside the cohort, was only ever served v1");
        }
    }
    assert!((1..keys.len()).contains(&met), "some tenants, not all, were in the cohort: {met}");
    // The abort is an admin event with the controller's reason.
    let (_, events) = node.admin(Method::GET, "/v1/admin-events?limit=1000", None).await;
    assert!(events["items"].as_array().expect("items").iter().any(|e| e["action_type"] == "rollout.abort" && e["actor"] == "rollout-controller"), "{events}");
    let (_, metrics) = node.admin(Method::GET, "/metrics", None).await;
    let text = metrics.as_str().unwrap_or_default().to_owned();
    assert!(text.contains("runplane_rollout_phase{route=\"greet\",phase=\"aborted\"} 1"), "{text}");
}

/// A candidate failing one request in four is aborted by the default analysis (error
/// rate over stable's plus 5 points) at its first measurement.
#[tokio::test]
async fn a_flaky_canary_fails_the_default_analysis() {
    let (node, keys) = greet_with_tenants(12).await;
    let (s, _) = node.push("greet", "2.0.0", runplane_examples::FLAKY).await;
    assert_eq!(s, StatusCode::CREATED);
    let r = start_rollout(&node, json!({"route": "greet", "capability": "greet@2.0.0", "strategy": "canary", "steps": [{"set_weight": 50}, {"pause": {}}]})).await;
    let id = r["rollout_id"].as_str().expect("id").to_owned();
    let started = Instant::now();
    traffic_until(&node, &keys, Duration::from_secs(40), async || rollout(&node, &id).await["phase"] == "aborted").await;
    let r = rollout(&node, &id).await;
    let measurement = r["history"].as_array().expect("history").iter().rev().find_map(|d| d.get("measurement").cloned()).expect("a measurement");
    assert_eq!(measurement["verdict"], "fail", "{measurement}");
    assert!(measurement["checks"].as_array().expect("checks").iter().any(|c| c["metric"] == "error_rate" && c["verdict"] == "fail"), "{measurement}");
    eprintln!("flaky canary: aborted {:?} after it started", started.elapsed());
}

/// A healthy candidate passes a timed pause, waits at an indefinite one, is promoted by
/// the operator and becomes the route's deployment; undo goes back to v1 at once.
#[tokio::test]
async fn a_healthy_canary_is_promoted_through_its_pauses_and_can_be_undone() {
    let (node, keys) = greet_with_tenants(6).await;
    let (s, _) = node.push("greet", "2.0.0", runplane_examples::CPU_BURN).await;
    assert_eq!(s, StatusCode::CREATED);
    let r = start_rollout(&node, json!({"route": "greet", "capability": "greet@2.0.0", "strategy": "canary", "steps": [{"set_weight": 20}, {"pause": {"seconds": 2}}, {"set_weight": 50}, {"pause": {}}]})).await;
    let id = r["rollout_id"].as_str().expect("id").to_owned();
    assert_eq!((r["step"].as_u64(), r["weight"].as_f64()), (Some(1), Some(20.0)), "{r}");
    let (s, body) = node.admin(Method::POST, "/v1/deployments", Some(json!({"capability": "greet", "version": "2.0.0", "route": "greet"}))).await;
    assert_eq!(s, StatusCode::CONFLICT, "no plain deploy over a rollout in progress: {body}");
    let (s, body) = node.admin(Method::DELETE, "/v1/deployments/greet", None).await;
    assert_eq!(s, StatusCode::CONFLICT, "nor an undeploy: {body}");
    traffic_until(&node, &keys, Duration::from_secs(20), async || rollout(&node, &id).await["paused_by"] == "step").await;
    let r = rollout(&node, &id).await;
    assert_eq!((r["step"].as_u64(), r["weight"].as_f64()), (Some(3), Some(50.0)), "past the timed pause, at the indefinite one: {r}");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(rollout(&node, &id).await["phase"], "paused", "an indefinite pause waits");
    // The revision guard: a stale revision is refused.
    let revision = r["revision"].as_u64().expect("revision");
    let (s, body) = node.admin(Method::POST, &format!("/v1/rollouts/{id}/promote?revision={}", revision + 100), None).await;
    assert_eq!(s, StatusCode::CONFLICT, "{body}");
    let (s, body) = node.admin(Method::POST, &format!("/v1/rollouts/{id}/promote"), None).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(body["phase"], "promoted", "{body}");
    for (_, key) in &keys {
        assert_eq!(version_of(&node, key, "/apps/greet/?iters=10").await, (StatusCode::OK, "greet@2.0.0".to_owned()));
    }
    let (_, d) = node.admin(Method::GET, "/v1/deployments", None).await;
    assert_eq!(d["items"][0]["version"], "2.0.0", "the promotion moved the deployment: {d}");

    let (s, body) = node.admin(Method::POST, "/v1/deployments/greet/undo", None).await;
    assert_eq!((s, body["deployment"]["version"].as_str()), (StatusCode::OK, Some("1.0.0")), "{body}");
    for (_, key) in &keys {
        assert_eq!(version_of(&node, key, "/apps/greet/").await, (StatusCode::OK, "greet@1.0.0".to_owned()));
    }
    let (s, _) = node.admin(Method::POST, "/v1/deployments/greet/undo", None).await;
    assert_eq!(s, StatusCode::CONFLICT, "nothing further back");
}

/// An analysis step with too little traffic stays inconclusive — never a pass — and
/// the step waits.
#[tokio::test]
async fn too_little_traffic_is_inconclusive_never_a_pass() {
    let (node, keys) = greet_with_tenants(2).await;
    node.push("greet", "2.0.0", runplane_examples::CPU_BURN).await;
    let steps = json!([{"set_weight": 50}, {"analysis": {"interval_secs": 1, "min_samples": 1000, "error_rate": {"max": 0.01}}}]);
    // t000 is pinned to the candidate, so it has traffic whatever the buckets say.
    let r = start_rollout(&node, json!({"route": "greet", "capability": "greet@2.0.0", "strategy": "canary", "include": ["t000"], "steps": steps})).await;
    let id = r["rollout_id"].as_str().expect("id").to_owned();
    traffic_until(&node, &keys, Duration::from_secs(20), async || {
        let r = rollout(&node, &id).await;
        r["history"].as_array().expect("history").iter().filter(|d| d.get("measurement").is_some()).count() >= 3
    })
    .await;
    let r = rollout(&node, &id).await;
    assert_eq!(r["phase"], "progressing", "{r}");
    let verdicts: Vec<&str> = r["history"].as_array().expect("history").iter().filter_map(|d| d["measurement"]["verdict"].as_str()).collect();
    assert!(verdicts.iter().all(|v| *v == "inconclusive"), "{verdicts:?}");
    assert!(r["metrics"]["candidate"]["requests"].as_u64().is_some_and(|n| n > 0), "the view shows the counters: {r}");
}

/// A new rollout of the same route supersedes the running one; an aborted rollout is
/// retried from step 0 with the same cohort; pause and resume; operations on a
/// finished rollout are refused saying why.
#[tokio::test]
async fn supersede_retry_pause_and_resume() {
    let (node, keys) = greet_with_tenants(16).await;
    node.push("greet", "2.0.0", runplane_examples::CPU_BURN).await;
    node.push("greet", "3.0.0", runplane_examples::FLAKY).await;
    let spec = |v: &str| json!({"route": "greet", "capability": format!("greet@{v}"), "strategy": "canary", "steps": [{"set_weight": 50}, {"pause": {}}]});
    let first = start_rollout(&node, spec("2.0.0")).await["rollout_id"].as_str().expect("id").to_owned();
    let cohort: Vec<String> = {
        let mut v = Vec::new();
        for (_, key) in &keys {
            v.push(version_of(&node, key, "/apps/greet/?iters=10").await.1);
        }
        v
    };
    assert!(cohort.contains(&"greet@2.0.0".to_owned()) && cohort.contains(&"greet@1.0.0".to_owned()), "{cohort:?}");
    // Sticky: the same tenants again.
    for ((_, key), was) in keys.iter().zip(&cohort) {
        assert_eq!(&version_of(&node, key, "/apps/greet/?iters=10").await.1, was);
    }
    let (s, body) = node.admin(Method::POST, &format!("/v1/rollouts/{first}/pause"), None).await;
    assert_eq!(s, StatusCode::CONFLICT, "already paused at the step: {body}");
    let (s, body) = node.admin(Method::POST, &format!("/v1/rollouts/{first}/abort?reason=testing"), None).await;
    assert_eq!((s, body["phase"].as_str()), (StatusCode::OK, Some("aborted")), "{body}");
    for (_, key) in &keys {
        assert_eq!(version_of(&node, key, "/apps/greet/").await.1, "greet@1.0.0");
    }
    let (s, body) = node.admin(Method::POST, &format!("/v1/rollouts/{first}/promote"), None).await;
    assert!(s == StatusCode::CONFLICT && body["error"]["message"].as_str().is_some_and(|m| m.contains("retry")), "{body}");
    let (s, body) = node.admin(Method::POST, &format!("/v1/rollouts/{first}/retry"), None).await;
    assert_eq!((s, body["phase"].as_str(), body["step"].as_u64()), (StatusCode::OK, Some("paused"), Some(1)), "{body}");
    for ((_, key), was) in keys.iter().zip(&cohort) {
        assert_eq!(&version_of(&node, key, "/apps/greet/?iters=10").await.1, was, "a retry keeps the cohort");
    }
    let (s, body) = node.admin(Method::POST, &format!("/v1/rollouts/{first}/resume"), None).await;
    assert_eq!((s, body["phase"].as_str()), (StatusCode::OK, Some("promoted")), "resume goes past the pause, the last step: {body}");

    let second = start_rollout(&node, spec("3.0.0")).await["rollout_id"].as_str().expect("id").to_owned();
    let third = start_rollout(&node, spec("1.0.0")).await;
    assert_eq!(third["stable"]["version"], "2.0.0", "v2 was promoted: it is the stable the next rollout starts from");
    assert_eq!(rollout(&node, &second).await["phase"], "superseded", "a new rollout of the route supersedes the running one");
    let (s, body) = node.admin(Method::POST, &format!("/v1/rollouts/{second}/abort"), None).await;
    assert!(s == StatusCode::CONFLICT && body["error"]["message"].as_str().is_some_and(|m| m.contains("superseded")), "{body}");
    let (_, list) = node.admin(Method::GET, "/v1/rollouts?route=greet", None).await;
    assert_eq!(list["items"].as_array().map(Vec::len), Some(3), "{list}");
    let (s, body) = node.admin(Method::POST, "/v1/rollouts", Some(json!({"route": "greet", "capability": "greet@2.0.0", "strategy": "canary", "steps": [{"set_weight": 500}]}))).await;
    assert!(s.is_client_error() && body["error"]["message"].as_str().is_some_and(|m| m.contains("from 0 to 100")), "{body}");
    let (s, body) = node.admin(Method::POST, "/v1/rollouts", Some(json!({"route": "nowhere", "capability": "greet@2.0.0", "strategy": "canary"}))).await;
    assert!(s == StatusCode::NOT_FOUND && body["error"]["message"].as_str().is_some_and(|m| m.contains("POST /v1/deployments")), "{body}");
}

/// Blue-green under load: 16 clients send all the while; the preview serves only the
/// named tenant; the switch and the switch back fail no request, and each is seen by
/// the next request.
#[tokio::test]
async fn blue_green_switches_and_switches_back_under_load_failing_no_request() {
    let (node, keys) = greet_with_tenants(8).await;
    node.push("greet", "2.0.0", runplane_examples::CPU_BURN).await;
    let r = start_rollout(&node, json!({"route": "greet", "capability": "greet@2.0.0", "strategy": "blue-green", "include": ["t000"], "post_promotion_secs": 3600})).await;
    let id = r["rollout_id"].as_str().expect("id").to_owned();
    assert_eq!((r["phase"].as_str(), r["paused_by"].as_str()), (Some("paused"), Some("preview")), "{r}");
    assert_eq!(version_of(&node, &keys[0].1, "/apps/greet/?iters=10").await.1, "greet@2.0.0", "the preview");
    for (_, key) in &keys[1..] {
        assert_eq!(version_of(&node, key, "/apps/greet/?iters=10").await.1, "greet@1.0.0", "not in the preview");
    }
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let clients: Vec<_> = (0..16)
        .map(|i| {
            let (http, url, key, stop) = (node.http.clone(), node.url("/apps/greet/?iters=10"), keys[i % keys.len()].1.clone(), stop.clone());
            tokio::spawn(async move {
                let (mut ok, mut failed, mut seen) = (0u64, Vec::new(), BTreeSet::new());
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    match http.get(&url).bearer_auth(&key).send().await {
                        Ok(r) if r.status() == StatusCode::OK => {
                            seen.insert(r.headers().get("x-runplane-capability").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned());
                            ok += 1;
                        }
                        Ok(r) => failed.push(r.status().to_string()),
                        Err(e) => failed.push(e.to_string()),
                    }
                }
                (ok, failed, seen)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let switch = Instant::now();
    let (s, body) = node.admin(Method::POST, &format!("/v1/rollouts/{id}/promote"), None).await;
    assert_eq!((s, body["phase"].as_str()), (StatusCode::OK, Some("progressing")), "switched, in the window: {body}");
    assert_eq!(version_of(&node, &keys[5].1, "/apps/greet/?iters=10").await.1, "greet@2.0.0", "everyone at once");
    eprintln!("blue-green: the switch served by the next request {:?} after it was asked for", switch.elapsed());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (s, body) = node.admin(Method::POST, &format!("/v1/rollouts/{id}/abort?reason=switch%20back"), None).await;
    assert_eq!((s, body["phase"].as_str()), (StatusCode::OK, Some("aborted")), "{body}");
    assert_eq!(version_of(&node, &keys[5].1, "/apps/greet/?iters=10").await.1, "greet@1.0.0", "everyone back at once");
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (mut total, mut seen) = (0, BTreeSet::new());
    for c in clients {
        let (ok, failed, s) = c.await.expect("client");
        assert!(failed.is_empty(), "failed requests: {failed:?}");
        total += ok;
        seen.extend(s);
    }
    assert!(total > 100 && seen.contains("greet@1.0.0") && seen.contains("greet@2.0.0"), "{total} requests, versions {seen:?}");
}

/// Three nodes (`node-0` … `node-2`) of one instance on PostgreSQL, NATS and the S3
/// server, on the real clock; `None` when one of those is down (outside CI).
async fn three_nodes() -> Option<(super::backends::SharedInstance, Vec<TestNode>)> {
    use runplane_adapters::testing;
    if !testing::service_up("PostgreSQL", &testing::postgres_url()).await
        || !testing::service_up("NATS", &testing::nats_url()).await
        || !testing::service_up("S3-compatible server (moto)", &testing::s3_endpoint()).await
    {
        return None;
    }
    let instance = super::backends::SharedInstance::new().await;
    let clock: Arc<dyn runplane_node::Clock> = Arc::new(runplane_node::SystemClock);
    let mut nodes = Vec::new();
    for n in 0..3 {
        nodes.push(instance.start(&format!("node-{n}"), clock.clone(), runplane_node::entropy::Entropy::Os, "").await);
    }
    Some((instance, nodes))
}

/// Three nodes of one instance on PostgreSQL: a rollout started on one is served by
/// all; a trapping candidate hit only through the other two is aborted by the leader
/// from their summed counters; the abort reaches every node (the time it takes is
/// printed).
#[tokio::test]
async fn three_nodes_share_a_rollout_its_counters_and_its_abort() {
    let Some((instance, nodes)) = three_nodes().await else { return };
    let first = &nodes[0];
    let mut keys = Vec::new();
    for i in 0..10 {
        let id = format!("t{i:03}");
        keys.push(first.tenant(&id, Mode::Shared).await);
    }
    first.deploy("greet", runplane_examples::HELLO, "greet", &[]).await;
    let (s, _) = first.push("greet", "2.0.0", runplane_examples::TRAPPER).await;
    assert_eq!(s, StatusCode::CREATED);
    let r = start_rollout(first, json!({"route": "greet", "capability": "greet@2.0.0", "strategy": "canary", "include": ["t000"], "steps": [{"set_weight": 50}, {"pause": {}}]})).await;
    let id = r["rollout_id"].as_str().expect("id").to_owned();
    // Every node serves the rollout: the pinned tenant gets v2 (a trap: 500) everywhere.
    let started = Instant::now();
    for node in &nodes {
        while version_of(node, &keys[0], "/apps/greet/").await.1 != "greet@2.0.0" {
            assert!(started.elapsed() < Duration::from_secs(10), "a node does not serve the rollout");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    eprintln!("three nodes: the rollout reached every node {:?} after it started", started.elapsed());
    // Traffic through nodes 1 and 2 only, until the rollout is aborted.
    let deadline = Instant::now() + Duration::from_secs(30);
    let aborted = loop {
        for node in &nodes[1..] {
            for key in &keys {
                version_of(node, key, "/apps/greet/").await;
            }
        }
        if rollout(first, &id).await["phase"] == "aborted" {
            break Instant::now();
        }
        assert!(Instant::now() < deadline, "not aborted within 30 s");
    };
    for node in &nodes {
        while version_of(node, &keys[0], "/apps/greet/").await.1 != "greet@1.0.0" {
            assert!(aborted.elapsed() < Duration::from_secs(10), "a node still serves the aborted candidate");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    eprintln!("three nodes: the abort reached every node {:?} after it was stored", aborted.elapsed());
    let r = rollout(first, &id).await;
    assert!(r["abort_reason"].as_str().is_some_and(|w| w.contains("fast trip")), "{r}");
    drop(nodes);
    instance.remove().await;
}

/// Residency: a tenant pinned to eu-west, bound to backends located there, is refused
/// on a us-east node with 421 naming its region, while an unpinned tenant is served; a
/// configuration binding a pinned tenant to a backend of another region (or to the
/// node's own files) is refused at start, naming each port.
#[tokio::test]
async fn an_eu_pinned_tenant_is_refused_on_a_us_node_and_a_us_binding_is_refused_at_start() {
    let base = |extra: &str| {
        format!(
            "[node]\nregion = \"us-east\"\n[backends.eu-db]\nkind = \"postgres\"\nurl = \"postgres://eu.example:5432/x\"\nlocation = \"eu-west\"\n\
             [backends.eu-bus]\nkind = \"nats\"\nurl = \"nats://eu.example:4222\"\nlocation = \"eu-west\"\n\
             [backends.eu-s3]\nkind = \"s3\"\nbucket = \"eu\"\nlocation = \"eu-west\"\n\
             [backends.us-db]\nkind = \"postgres\"\nurl = \"postgres://us.example:5432/x\"\nlocation = \"us-east\"\n\
             [audit]\nstore = \"eu-db\"\n[tenant_regions]\nacme = \"eu-west\"\n{extra}"
        )
    };
    let eu = "[tenant_bindings.acme]\nrecords = \"eu-db\"\nkv = \"eu-db\"\nevents = \"eu-db\"\nsecrets = \"eu-db\"\nmessaging = \"eu-bus\"\nblobs = \"eu-s3\"\n";
    assert!(NodeConfig::parse(&base(eu), |_| None).is_ok(), "every port of acme in eu-west");
    let us = eu.replace("records = \"eu-db\"", "records = \"us-db\"");
    let problems = NodeConfig::parse(&base(&us), |_| None).err().expect("refused").join("\n");
    assert!(problems.contains("tenant_bindings.acme.records") && problems.contains("\"us-db\"") && problems.contains("us-east"), "{problems}");
    let problems = NodeConfig::parse(&base(""), |_| None).err().expect("refused").join("\n");
    assert!(problems.contains("bindings.records") && problems.contains("\"sqlite\"") && problems.contains("bindings.blobs"), "node-local files are in the node's region: {problems}");
    // Its journals hold its requests: the audit store is held to the pin too.
    let problems = NodeConfig::parse(&base(eu).replace("store = \"eu-db\"", "store = \"us-db\""), |_| None).err().expect("refused").join("\n");
    assert!(problems.contains("audit.store") && problems.contains("\"us-db\"") && !problems.contains("tenant_bindings"), "{problems}");
    let problems = NodeConfig::parse(&base(eu).replace("store = \"eu-db\"\n", ""), |_| None).err().expect("refused").join("\n");
    assert!(problems.contains("audit.store") && problems.contains("\"sqlite\""), "the default audit.db is on the US node: {problems}");

    // At runtime: the pin alone, on a node whose region is not the tenant's.
    let node = TestNode::start(|c| {
        c.region = "us-east".into();
        c.tenant_regions.insert("acme".into(), "eu-west".into());
    })
    .await;
    let acme = node.tenant("acme", Mode::Shared).await;
    let globex = node.tenant("globex", Mode::Shared).await;
    node.deploy("hello", runplane_examples::HELLO, "hello", &[]).await;
    let (s, body) = node.app(&acme, Method::GET, "/apps/hello/", None).await;
    assert_eq!((s.as_u16(), body["error"]["code"].as_str(), body["error"]["details"]["region"].as_str()), (421, Some("wrong_region"), Some("eu-west")), "{body}");
    let (s, _) = node.app(&globex, Method::GET, "/apps/hello/", None).await;
    assert_eq!(s, StatusCode::OK, "an unpinned tenant is served");
}

/// A release group of two routes: one cohort for both; a trapping candidate on one
/// route aborts the other's too; retry, promote and abort act on every member.
#[tokio::test]
async fn a_release_group_shares_its_cohort_and_goes_back_together() {
    let (node, keys) = greet_with_tenants(20).await;
    node.deploy("front", runplane_examples::HELLO, "front", &[]).await;
    node.push("greet", "2.0.0", runplane_examples::TRAPPER).await;
    node.push("front", "2.0.0", runplane_examples::CPU_BURN).await;
    let body = json!({"members": [{"route": "greet", "capability": "greet@2.0.0"}, {"route": "front", "capability": "front@2.0.0"}], "strategy": "canary", "steps": [{"set_weight": 50}, {"pause": {}}]});
    let (s, g) = node.admin(Method::POST, "/v1/release-groups", Some(body)).await;
    assert_eq!(s, StatusCode::CREATED, "{g}");
    let group = g["group_id"].as_str().expect("group").to_owned();
    // One cohort: each tenant is on both candidates or on neither.
    for (_, key) in &keys {
        let front = version_of(&node, key, "/apps/front/?iters=10").await.1 == "front@2.0.0";
        let greet = version_of(&node, key, "/apps/greet/").await.1 == "greet@2.0.0";
        assert_eq!(front, greet, "a tenant is in both cohorts or neither");
    }
    // greet's candidate traps: its abort takes front back too.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        for (_, key) in &keys {
            version_of(&node, key, "/apps/greet/").await;
        }
        let (_, g) = node.admin(Method::GET, &format!("/v1/release-groups/{group}"), None).await;
        if g["members"].as_array().expect("members").iter().all(|m| m["phase"] == "aborted") {
            let front = g["members"].as_array().expect("members").iter().find(|m| m["route"] == "front").expect("front").clone();
            assert!(front["abort_reason"].as_str().is_some_and(|w| w.contains("release group") && w.contains("greet")), "{front}");
            break;
        }
        assert!(Instant::now() < deadline, "the group was not aborted: {g}");
    }
    for (_, key) in &keys {
        assert_eq!(version_of(&node, key, "/apps/front/?iters=10").await.1, "front@1.0.0");
    }
    let (s, g) = node.admin(Method::POST, &format!("/v1/release-groups/{group}/retry"), None).await;
    assert_eq!(s, StatusCode::OK, "{g}");
    assert!(g["members"].as_array().expect("members").iter().all(|m| m["phase"] == "paused"), "{g}");
    let (s, g) = node.admin(Method::POST, &format!("/v1/release-groups/{group}/abort?reason=done"), None).await;
    assert_eq!(s, StatusCode::OK, "{g}");
    assert!(g["members"].as_array().expect("members").iter().all(|m| m["phase"] == "aborted"), "{g}");
    let (s, body) = node.admin(Method::POST, "/v1/release-groups", Some(json!({"members": [{"route": "greet", "capability": "greet@2.0.0"}], "strategy": "canary"}))).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "one member is not a group: {body}");
}

/// Rolling across three nodes on PostgreSQL: one node at a time, in waves; a
/// candidate failing in wave two sends every node back to stable.
#[tokio::test]
async fn a_rolling_rollout_goes_node_by_node_and_a_failure_in_wave_two_reverts_every_node() {
    let Some((instance, nodes)) = three_nodes().await else { return };
    let first = &nodes[0];
    let key = first.tenant("acme", Mode::Shared).await;
    first.deploy("greet", runplane_examples::HELLO, "greet", &[]).await;
    first.push("greet", "2.0.0", runplane_examples::TRAPPER).await;
    let r = start_rollout(first, json!({"route": "greet", "capability": "greet@2.0.0", "strategy": "rolling", "wave_secs": 3})).await;
    let id = r["rollout_id"].as_str().expect("id").to_owned();
    assert_eq!(r["waves"], json!([["node-0"], ["node-1"], ["node-2"]]), "{r}");
    // Wave one: node-0 alone serves the candidate (one request each: no burst yet).
    let served = async |want: [&str; 3]| {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let mut got = Vec::new();
            for node in &nodes {
                got.push(version_of(node, &key, "/apps/greet/").await.1);
            }
            if got.iter().zip(want).all(|(g, w)| g == w) {
                return;
            }
            assert!(Instant::now() < deadline, "nodes serve {got:?}, not {want:?}");
            // One request per node per tick: too few traps for the guard to trip.
            tokio::time::sleep(Duration::from_millis(1100)).await;
        }
    };
    served(["greet@2.0.0", "greet@1.0.0", "greet@1.0.0"]).await;
    // Wave two: node-1 joins; traffic through it trips the guard.
    let deadline = Instant::now() + Duration::from_secs(20);
    while rollout(first, &id).await["wave"] != 2 {
        assert!(Instant::now() < deadline, "no second wave");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for _ in 0..10 {
        version_of(&nodes[1], &key, "/apps/greet/").await;
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while rollout(first, &id).await["phase"] != "aborted" {
        assert!(Instant::now() < deadline, "not aborted");
        for _ in 0..5 {
            version_of(&nodes[1], &key, "/apps/greet/").await;
        }
    }
    served(["greet@1.0.0", "greet@1.0.0", "greet@1.0.0"]).await;
    let r = rollout(first, &id).await;
    let waves: Vec<&str> = r["history"].as_array().expect("history").iter().filter(|d| d["action"] == "wave").filter_map(|d| d["message"].as_str()).collect();
    assert_eq!(waves.len(), 2, "{waves:?}");
    drop(nodes);
    instance.remove().await;
}

/// Message deliveries follow the cohort as requests do: with acme pinned to the
/// candidate, acme's order.created is handled by v2 and globex's by v1 (their audit
/// logs' capability digests say so).
#[tokio::test]
async fn message_deliveries_follow_the_cohort() {
    let node = TestNode::start(|_| {}).await;
    let acme = node.tenant("acme", Mode::Shared).await;
    let globex = node.tenant("globex", Mode::Shared).await;
    for t in ["acme", "globex"] {
        node.admin(Method::PUT, &format!("/v1/tenants/{t}/secrets/webhook-signing-key"), Some(json!({"value": format!("key-{t}")}))).await;
    }
    node.deploy("orders", runplane_examples::ORDERS, "orders", &["order.created"]).await;
    let (s, v2) = node.push("orders", "2.0.0", &runplane_examples::tagged(runplane_examples::ORDERS, "v2")).await;
    assert_eq!(s, StatusCode::CREATED, "{v2}");
    let v2 = v2["digest"].as_str().expect("digest").to_owned();
    start_rollout(&node, json!({"route": "orders", "capability": "orders@2.0.0", "strategy": "canary", "include": ["acme"], "steps": [{"pause": {}}]})).await;
    for key in [&acme, &globex] {
        let (s, body) = node.app(key, Method::POST, "/apps/orders/orders", Some(json!({"item": "tea", "quantity": 1}))).await;
        assert_eq!(s, StatusCode::CREATED, "{body}");
    }
    let delivered = async |tenant: &str| -> String {
        let started = Instant::now();
        loop {
            let (_, page) = node.admin(Method::GET, &format!("/v1/audit/events?log=tenant:{tenant}&limit=1000"), None).await;
            let found = page["items"].as_array().expect("items").iter().find(|e| e["event"]["action"] == "invoke.message").and_then(|e| e["event"]["capability_digest"].as_str().map(str::to_owned));
            if let Some(d) = found {
                return d;
            }
            assert!(started.elapsed() < Duration::from_secs(10), "no delivery for {tenant}: {page}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    assert_eq!(delivered("acme").await, v2, "acme's message went to the candidate");
    assert_ne!(delivered("globex").await, v2, "globex's stayed on stable");
}

/// A real Prometheus server (Debian's `prometheus`) scraping a node every second.
struct PrometheusServer {
    child: std::process::Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for PrometheusServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A free port on loopback for a server started next.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port()
}

/// The `prometheus` binary, if installed; under `CI=true` a missing one fails the test.
fn prometheus_binary() -> Option<std::path::PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| std::env::split_paths(&paths).map(|d| d.join("prometheus")).find(|p| p.is_file()));
    if found.is_none() {
        let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
        assert!(!ci, "prometheus is not installed and CI=true: install it (scripts/test.sh does: apt-get install prometheus)");
        eprintln!("SKIPPED: prometheus is not installed; install Debian's prometheus package (CI fails instead)");
    }
    found
}

impl PrometheusServer {
    /// Starts on `port`, scraping `target`'s `/metrics` every second; waits until ready.
    async fn start(binary: &std::path::Path, port: u16, target: std::net::SocketAddr) -> PrometheusServer {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: runplane\n    static_configs:\n      - targets: [\"{target}\"]\n"),
        )
        .expect("config");
        let log = std::fs::File::create(dir.path().join("prometheus.log")).expect("log");
        let child = std::process::Command::new(binary)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("prometheus starts");
        let server = PrometheusServer { child, url: format!("http://127.0.0.1:{port}"), _dir: dir };
        let http = reqwest::Client::new();
        let started = Instant::now();
        while !http.get(format!("{}/-/ready", server.url)).send().await.is_ok_and(|r| r.status().is_success()) {
            assert!(started.elapsed() < Duration::from_secs(30), "prometheus not ready within 30 s; see its log in {}", server._dir.path().display());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        server
    }
}

/// The candidate's share of 5xx answers over the window, from the node's
/// `runplane_invocations_total` as Prometheus scraped it (`or vector(0)`: no error
/// series yet is no error).
const ERROR_SHARE: &str = r#"(sum(increase(runplane_invocations_total{capability="{{capability}}@{{candidate_version}}",outcome="error_response"}[{{window}}])) or vector(0)) / sum(increase(runplane_invocations_total{capability="{{capability}}@{{candidate_version}}"}[{{window}}]))"#;

/// An analysis step that asks Prometheus (the background analysis lets everything
/// through, so the query alone decides).
fn prometheus_canary(capability: &str, query: &str, extra: Value) -> Value {
    let mut analysis = json!({"interval_secs": 6, "min_samples": 10, "prometheus": [{"name": "error_share", "query": query, "max": 0.05}]});
    if let (Some(a), Some(e)) = (analysis.as_object_mut(), extra.as_object()) {
        a.extend(e.clone());
    }
    json!({"route": "greet", "capability": capability, "strategy": "canary", "analysis": {"error_rate": {"max": 1.0}}, "steps": [{"set_weight": 50}, {"analysis": analysis}]})
}

/// The Prometheus-query provider against a real Prometheus scraping the node: a flaky
/// candidate's error share (about 25 %) over the query's 5 % aborts it, naming the
/// query and its value; a healthy one (0) is promoted; a query Prometheus refuses is an
/// `error` that aborts at the consecutive-error limit, saying what Prometheus said; a
/// node with no `prometheus_url` refuses such a rollout at the start.
#[tokio::test]
async fn an_analysis_querying_a_real_prometheus_aborts_a_flaky_candidate_and_promotes_a_healthy_one() {
    let Some(binary) = prometheus_binary() else { return };
    let port = free_port();
    let node = TestNode::start(|c| {
        c.rate_limits.admin_burst = 100_000;
        c.prometheus = Some(runplane_node::prometheus::PrometheusSettings { url: format!("http://127.0.0.1:{port}"), timeout: Duration::from_secs(5), token_env: None });
    })
    .await;
    let _prometheus = PrometheusServer::start(&binary, port, node.running.addr).await;
    let mut keys = Vec::new();
    for i in 0..12 {
        let id = format!("t{i:03}");
        keys.push((id.clone(), node.tenant(&id, Mode::Shared).await));
    }
    node.deploy("greet", runplane_examples::HELLO, "greet", &[]).await;
    let (s, _) = node.push("greet", "2.0.0", runplane_examples::FLAKY).await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, _) = node.push("greet", "3.0.0", &runplane_examples::tagged(runplane_examples::HELLO, "v3")).await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, _) = node.push("greet", "4.0.0", &runplane_examples::tagged(runplane_examples::HELLO, "v4")).await;
    assert_eq!(s, StatusCode::CREATED);
    let ended = async |id: &str| {
        let r = rollout(&node, id).await;
        !matches!(r["phase"].as_str(), Some("progressing" | "paused"))
    };
    let measured = |r: &Value| -> Vec<Value> {
        r["history"].as_array().expect("history").iter().filter_map(|d| d.get("measurement").cloned()).filter(|m| m["checks"].as_array().is_some_and(|c| c.iter().any(|c| c["metric"] == "prometheus:error_share"))).collect()
    };

    // Flaky: about one answer in four is a 500.
    let id = start_rollout(&node, prometheus_canary("greet@2.0.0", ERROR_SHARE, json!({}))).await["rollout_id"].as_str().expect("id").to_owned();
    traffic_until(&node, &keys, Duration::from_secs(60), async || ended(&id).await).await;
    let r = rollout(&node, &id).await;
    assert_eq!(r["phase"], "aborted", "{r:#}");
    let failed = measured(&r).pop().unwrap_or_else(|| panic!("a measurement with the query: {r:#}"));
    let check = failed["checks"].as_array().expect("checks").iter().find(|c| c["metric"] == "prometheus:error_share").expect("check").clone();
    let share = check["value"].as_f64().expect("a value");
    assert!((failed["verdict"] == "fail") && (0.08..0.5).contains(&share) && check["limit"] == 0.05, "{failed:#}");
    eprintln!("prometheus analysis: the flaky candidate's error share {share:.3}, aborted");

    // Healthy: no 5xx at all; `or vector(0)` makes that a 0, and it passes.
    let id = start_rollout(&node, prometheus_canary("greet@3.0.0", ERROR_SHARE, json!({}))).await["rollout_id"].as_str().expect("id").to_owned();
    traffic_until(&node, &keys, Duration::from_secs(60), async || ended(&id).await).await;
    let r = rollout(&node, &id).await;
    assert_eq!(r["phase"], "promoted", "{r:#}");
    let passed = measured(&r).pop().expect("measured");
    assert_eq!((passed["verdict"].as_str(), passed["checks"][0]["metric"].as_str(), passed["checks"][0]["value"].as_f64()), (Some("pass"), Some("prometheus:error_share"), Some(0.0)), "{passed:#}");

    // A query Prometheus refuses: errors, then the abort at the limit, with its words.
    let id = start_rollout(&node, prometheus_canary("greet@4.0.0", "sum(rate(", json!({"consecutive_error_limit": 2}))).await["rollout_id"].as_str().expect("id").to_owned();
    traffic_until(&node, &keys, Duration::from_secs(60), async || ended(&id).await).await;
    let r = rollout(&node, &id).await;
    assert_eq!(r["phase"], "aborted", "{r:#}");
    assert!(r["abort_reason"].as_str().is_some_and(|w| w.contains("consecutive_error_limit 2")), "{r:#}");
    let said = r["history"].as_array().expect("history").iter().filter_map(|d| d["message"].as_str()).find(|m| m.contains("prometheus query error_share")).unwrap_or_default().to_owned();
    assert!(said.contains("bad_data"), "the measurement says what Prometheus said: {said}");

    // Without a Prometheus server configured, such a rollout is refused at the start.
    let plain = TestNode::start(|_| {}).await;
    plain.deploy("greet", runplane_examples::HELLO, "greet", &[]).await;
    plain.push("greet", "2.0.0", runplane_examples::FLAKY).await;
    let (s, body) = plain.admin(Method::POST, "/v1/rollouts", Some(prometheus_canary("greet@2.0.0", ERROR_SHARE, json!({})))).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{body}");
    assert!(body["error"]["message"].as_str().is_some_and(|m| m.contains("[rollouts] prometheus_url")), "{body}");
}

/// A node that restarts mid-rollout counts on from the counts it last published, so
/// the instance's sum (what the analysis measures) does not drop to what it served
/// since the restart.
#[tokio::test]
async fn a_node_restarted_mid_rollout_counts_on_from_what_it_published() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = || {
        let mut c = NodeConfig::embedded("127.0.0.1:0".parse().expect("addr"), dir.path().to_path_buf());
        c.admin_token = Some(ADMIN.into());
        c.rate_limits.admin_burst = 100_000;
        c
    };
    let node = TestNode { running: Node::start(config()).await.expect("start"), _dir: tempfile::tempdir().expect("tempdir"), http: Client::new() };
    let mut keys = Vec::new();
    for i in 0..8 {
        let id = format!("t{i:03}");
        keys.push((id.clone(), node.tenant(&id, Mode::Shared).await));
    }
    node.deploy("greet", runplane_examples::HELLO, "greet", &[]).await;
    node.push("greet", "2.0.0", &runplane_examples::tagged(runplane_examples::HELLO, "v2")).await;
    let id = start_rollout(&node, json!({"route": "greet", "capability": "greet@2.0.0", "strategy": "canary", "steps": [{"set_weight": 50}, {"pause": {}}]})).await["rollout_id"].as_str().expect("id").to_owned();
    for _ in 0..5 {
        for (_, key) in &keys {
            version_of(&node, key, "/apps/greet/").await;
        }
    }
    // Published within a tick.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let total = |r: &Value| r["metrics"]["candidate"]["requests"].as_u64().unwrap_or(0) + r["metrics"]["stable"]["requests"].as_u64().unwrap_or(0);
    let before = total(&rollout(&node, &id).await);
    assert_eq!(before, 40, "every request counted once");
    let TestNode { running, _dir, http } = node;
    drop(http);
    running.drain().await;

    let node = TestNode { running: Node::start(config()).await.expect("restart"), _dir, http: Client::new() };
    // Several ticks after the restart: the node has published again, from where it was.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(total(&rollout(&node, &id).await), before, "the counts go on after the restart");
    for (_, key) in &keys {
        version_of(&node, key, "/apps/greet/").await;
    }
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(total(&rollout(&node, &id).await), before + 8);
}
