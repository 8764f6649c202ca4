//! Jobs on a real node (spec §9): append-only attempts under a retry policy (its delays
//! on the injected clock), a producer that passes on its third attempt, one run per
//! idempotency key, pools of slots, cancel, tenant isolation, and a job attempt
//! replayed from its journal.

use std::time::{Duration, Instant};

use super::*;

/// A node serving the `worker` task on route `work`, with tenants acme and globex.
async fn worker_node(tune: impl FnOnce(&mut NodeConfig)) -> (TestNode, String, String) {
    let node = TestNode::start(|c| {
        c.rate_limits.admin_burst = 100_000;
        tune(c);
    })
    .await;
    let acme = node.tenant("acme", Mode::Shared).await;
    let globex = node.tenant("globex", Mode::Shared).await;
    node.deploy("worker", runplane_examples::WORKER, "work", &[]).await;
    (node, acme, globex)
}

async fn submit(node: &TestNode, key: &str, body: Value) -> (StatusCode, Value) {
    node.app(key, Method::POST, "/v1/jobs", Some(body)).await
}

/// Polls the job until `done` says so (or 30 s pass).
async fn job_until(node: &TestNode, key: &str, id: &str, done: impl Fn(&Value) -> bool) -> Value {
    let started = Instant::now();
    loop {
        let (s, job) = node.app(key, Method::GET, &format!("/v1/jobs/{id}"), None).await;
        assert_eq!(s, StatusCode::OK, "{job}");
        if done(&job) {
            return job;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "the job did not get there: {job}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn attempts(node: &TestNode, key: &str, id: &str) -> Vec<Value> {
    let (s, page) = node.app(key, Method::GET, &format!("/v1/jobs/{id}/attempts"), None).await;
    assert_eq!(s, StatusCode::OK, "{page}");
    assert_eq!(page["protocol_version"], "1.0");
    page["items"].as_array().expect("items").clone()
}

fn is_final(job: &Value) -> bool {
    matches!(job["status"].as_str(), Some("passed" | "failed" | "cancelled"))
}

/// A poison task under `maximum_attempts = 3` leaves exactly three attempts, each with
/// its own error, the last not retryable; on the injected clock, the second starts only
/// once 1 s has passed after the first failed and the third only after 2 s more.
#[tokio::test]
async fn a_poison_job_leaves_exactly_maximum_attempts_spaced_by_the_policy_on_the_injected_clock() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = NodeConfig::embedded("127.0.0.1:0".parse().expect("addr"), dir.path().to_path_buf());
    config.admin_token = Some(ADMIN.into());
    let clock = Arc::new(TickClock::default());
    let node = TestNode { running: Node::start_with_clock(config, clock.clone()).await.expect("start"), _dir: dir, http: Client::new() };
    let acme = node.tenant("acme", Mode::Shared).await;
    node.deploy("worker", runplane_examples::WORKER, "work", &[]).await;
    let retry = json!({"maximum_attempts": 3, "initial_interval_ms": 1000, "backoff_coefficient": 2.0, "jitter": 0});
    let (s, job) = submit(&node, &acme, json!({"route": "work", "input": {"op": "fail", "code": "poison"}, "retry": retry})).await;
    assert_eq!(s, StatusCode::CREATED, "{job}");
    assert_eq!((job["status"].as_str(), job["attempts"].as_u64()), (Some("queued"), Some(0)), "{job}");
    let id = job["job_id"].as_str().expect("id").to_owned();

    // The clock stands still unless moved: each wait below is real time in which the
    // controller looks again and again.
    let settle = || tokio::time::sleep(Duration::from_millis(1200));
    job_until(&node, &acme, &id, |j| j["attempts"] == 1 && j["status"] == "queued").await;
    clock.advance(999);
    settle().await;
    assert_eq!(attempts(&node, &acme, &id).await.len(), 1, "999 ms after the first failure: no second attempt");
    clock.advance(1);
    job_until(&node, &acme, &id, |j| j["attempts"] == 2 && j["status"] == "queued").await;
    clock.advance(1999);
    settle().await;
    assert_eq!(attempts(&node, &acme, &id).await.len(), 2, "the second delay is 2 s");
    clock.advance(1);
    let job = job_until(&node, &acme, &id, is_final).await;
    assert_eq!(job["status"], "failed", "{job}");
    assert!(job["reason"].as_str().is_some_and(|r| r.contains("maximum_attempts 3")), "{job}");
    // And no fourth, however long.
    clock.advance(3_600_000);
    settle().await;
    let list = attempts(&node, &acme, &id).await;
    assert_eq!(list.len(), 3, "{list:#?}");
    for (i, a) in list.iter().enumerate() {
        assert_eq!((a["status"].as_str(), a["error_code"].as_str(), a["attempt_number"].as_u64()), (Some("failed"), Some("poison"), Some(i as u64 + 1)), "{a}");
        assert_eq!(a["job_id"], id.as_str());
        for field in ["attempt_id", "created_at_utc", "updated_at_utc"] {
            assert!(a[field].is_string(), "{field} in {a}");
        }
        assert_eq!(a["correlation_ids"]["job_id"], id.as_str());
    }
    let retryable: Vec<bool> = list.iter().map(|a| a["retryable"].as_bool().expect("retryable")).collect();
    assert_eq!(retryable, vec![true, true, false], "the last is not retryable");
}

/// A task that passes on its third attempt: the job passes once, with that attempt's
/// output, and the two failures before it are kept.
#[tokio::test]
async fn a_task_passing_on_its_third_attempt_passes_once_with_that_output() {
    let (node, acme, _) = worker_node(|_| {}).await;
    let retry = json!({"maximum_attempts": 5, "initial_interval_ms": 50, "jitter": 0});
    let (s, job) = submit(&node, &acme, json!({"route": "work", "input": {"op": "until", "key": "third", "passes_on": 3}, "retry": retry})).await;
    assert_eq!(s, StatusCode::CREATED, "{job}");
    let id = job["job_id"].as_str().expect("id").to_owned();
    let job = job_until(&node, &acme, &id, is_final).await;
    assert_eq!((job["status"].as_str(), job["attempts"].as_u64(), &job["output"]), (Some("passed"), Some(3), &json!({"passed_on": 3})), "{job}");
    let list = attempts(&node, &acme, &id).await;
    let seen: Vec<(&str, Option<&str>)> = list.iter().map(|a| (a["status"].as_str().unwrap_or_default(), a["error_code"].as_str())).collect();
    assert_eq!(seen, vec![("failed", Some("not_yet")), ("failed", Some("not_yet")), ("passed", None)]);

    // Each attempt is an invoke.task event in acme's log, replayable from its journal.
    let (_, page) = node.admin(Method::GET, "/v1/audit/events?log=tenant:acme&limit=1000", None).await;
    let tasks: Vec<&Value> = page["items"].as_array().expect("items").iter().filter(|e| e["event"]["action"] == "invoke.task").collect();
    assert_eq!(tasks.len(), 3, "{page}");
    let last = tasks.iter().find(|e| e["event"]["details"]["attempt_number"] == 3).expect("the third");
    assert_eq!(last["event"]["outcome"]["status"], "ok", "{last}");
    let invocation = last["event"]["context"]["invocation_id"].as_str().expect("invocation id");
    let (s, report) = node.admin(Method::POST, &format!("/v1/replay/{invocation}"), None).await;
    assert_eq!(s, StatusCode::OK, "{report}");
    assert_eq!(report["identical"], true, "a job attempt replays from its journal: {report}");
}

/// The same idempotency key twice is the same job; without one, two submissions are two.
#[tokio::test]
async fn the_same_idempotency_key_gives_the_same_job() {
    let (node, acme, globex) = worker_node(|_| {}).await;
    let body = json!({"route": "work", "input": {"op": "echo"}, "idempotency_key": "nightly@2026-05-01T03:00:00Z"});
    let (s1, first) = submit(&node, &acme, body.clone()).await;
    let (s2, second) = submit(&node, &acme, body.clone()).await;
    assert_eq!((s1, s2), (StatusCode::CREATED, StatusCode::OK), "{first} {second}");
    assert_eq!(first["job_id"], second["job_id"]);
    assert_eq!((first["created"].as_bool(), second["created"].as_bool()), (Some(true), Some(false)));
    // Another tenant's key space is its own.
    let (s3, other) = submit(&node, &globex, body).await;
    assert_eq!(s3, StatusCode::CREATED, "{other}");
    assert_ne!(other["job_id"], first["job_id"]);
    let id = first["job_id"].as_str().expect("id");
    let job = job_until(&node, &acme, id, is_final).await;
    assert_eq!((job["status"].as_str(), job["output"]["echo"]["op"].as_str()), (Some("passed"), Some("echo")), "{job}");
    assert_eq!(attempts(&node, &acme, id).await.len(), 1, "one run");
}

/// A pool of one slot: while a long job in it runs, a second stays queued; cancel
/// frees the slot at once (the second runs), a cancelled job is final, and the pool's
/// attempts never overlapped.
#[tokio::test]
async fn a_pool_of_one_slot_runs_one_attempt_at_a_time_and_cancel_frees_it() {
    let (node, acme, _) = worker_node(|c| {
        c.jobs.pools.insert("solo".into(), 1);
        // A spin of some seconds, outlasting a loaded machine's scheduling; cancel
        // frees its slot but does not stop its CPU, so it is kept well under the
        // deadline.
        c.sandbox.deadline_ms = 30_000;
        c.sandbox.fuel = 1 << 42;
    })
    .await;
    let long = json!({"route": "work", "input": {"op": "spin", "iters": 2_000_000_000u64}, "pool": "solo", "retry": {"maximum_attempts": 1}});
    let (_, a) = submit(&node, &acme, long).await;
    let a = a["job_id"].as_str().expect("a").to_owned();
    job_until(&node, &acme, &a, |j| j["status"] == "running").await;
    let (_, b) = submit(&node, &acme, json!({"route": "work", "input": {"op": "echo"}, "pool": "solo"})).await;
    let b = b["job_id"].as_str().expect("b").to_owned();
    for _ in 0..10 {
        let (_, jb) = node.app(&acme, Method::GET, &format!("/v1/jobs/{b}"), None).await;
        assert_eq!(jb["status"], "queued", "the pool's one slot is taken: {jb}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (s, cancelled) = node.app(&acme, Method::POST, &format!("/v1/jobs/{a}/cancel?reason=enough"), None).await;
    assert_eq!((s, cancelled["status"].as_str(), cancelled["reason"].as_str()), (StatusCode::OK, Some("cancelled"), Some("enough")), "{cancelled}");
    let jb = job_until(&node, &acme, &b, is_final).await;
    assert_eq!(jb["status"], "passed", "the freed slot ran the second: {jb}");
    let (s, again) = node.app(&acme, Method::POST, &format!("/v1/jobs/{a}/cancel"), None).await;
    assert_eq!(s, StatusCode::CONFLICT, "{again}");
    let list = attempts(&node, &acme, &a).await;
    assert_eq!((list.len(), list[0]["status"].as_str(), list[0]["retryable"].as_bool()), (1, Some("cancelled"), Some(false)), "{list:#?}");
    let cancelled_at = list[0]["updated_at_utc"].as_str().expect("ended").to_owned();
    let second = attempts(&node, &acme, &b).await;
    assert!(second[0]["created_at_utc"].as_str().expect("started") >= cancelled_at.as_str(), "the second started after the slot was freed: {list:?} {second:?}");
    let (s, bad) = submit(&node, &acme, json!({"route": "work", "pool": "nope"})).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{bad}");
    assert!(bad["error"]["message"].as_str().is_some_and(|m| m.contains("solo")), "{bad}");
}

/// Tenants see, cancel and read only their own jobs (another's is 404, as if it did
/// not exist); an admin names the tenant; bad input is refused saying why.
#[tokio::test]
async fn a_tenant_cannot_see_cancel_or_read_another_tenants_jobs() {
    let (node, acme, globex) = worker_node(|_| {}).await;
    let (_, job) = submit(&node, &acme, json!({"route": "work", "input": {"op": "echo", "secret": "acme-only"}})).await;
    let id = job["job_id"].as_str().expect("id").to_owned();
    job_until(&node, &acme, &id, is_final).await;
    for (method, path) in [(Method::GET, format!("/v1/jobs/{id}")), (Method::GET, format!("/v1/jobs/{id}/attempts")), (Method::POST, format!("/v1/jobs/{id}/cancel"))] {
        let (s, body) = node.app(&globex, method.clone(), &path, None).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{method} {path}: {body}");
        assert!(!body.to_string().contains("acme-only"));
    }
    let (_, mine) = node.app(&globex, Method::GET, "/v1/jobs", None).await;
    assert_eq!(mine["items"].as_array().map(Vec::len), Some(0), "{mine}");
    let (s, body) = submit(&node, &globex, json!({"route": "work", "tenant": "acme"})).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "a tenant cannot submit for another: {body}");

    // The admin token: names the tenant, and each call is an admin event.
    let (s, body) = node.admin(Method::POST, "/v1/jobs", Some(json!({"route": "work"}))).await;
    assert_eq!((s, body["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("tenant_required")), "{body}");
    let (s, body) = node.admin(Method::POST, "/v1/jobs", Some(json!({"route": "work", "tenant": "globex", "input": {"op": "echo"}}))).await;
    assert_eq!((s, body["tenant"].as_str()), (StatusCode::CREATED, Some("globex")), "{body}");
    let (s, body) = node.admin(Method::GET, &format!("/v1/jobs/{id}"), None).await;
    assert_eq!((s, body["tenant"].as_str()), (StatusCode::OK, Some("acme")), "{body}");
    let (_, events) = node.admin(Method::GET, "/v1/admin-events?limit=1000", None).await;
    assert!(events["items"].as_array().expect("items").iter().any(|e| e["action_type"] == "job.submit"), "{events}");

    for (body, code) in [
        (json!({"route": "nowhere"}), StatusCode::NOT_FOUND),
        (json!({"route": "work", "retry": {"maximum_attempts": 0}}), StatusCode::BAD_REQUEST),
        (json!({"route": "work", "schedule": {"cron": "* * * * *"}}), StatusCode::BAD_REQUEST),
        (json!({"route": "work", "idempotency_key": ""}), StatusCode::BAD_REQUEST),
        (json!({"route": "work", "surprise": 1}), StatusCode::UNPROCESSABLE_ENTITY),
    ] {
        let (s, answer) = submit(&node, &acme, body.clone()).await;
        assert_eq!(s, code, "{body}: {answer}");
    }
    // Removing a tenant cancels its jobs that have not ended (a day-long retry delay
    // keeps this one queued).
    let (_, waiting) = submit(&node, &globex, json!({"route": "work", "input": {"op": "fail"}, "retry": {"initial_interval_ms": 86_400_000u64, "maximum_interval_ms": 86_400_000u64}})).await;
    let waiting = waiting["job_id"].as_str().expect("id").to_owned();
    job_until(&node, &globex, &waiting, |j| j["attempts"] == 1 && j["status"] == "queued").await;
    let (s, _) = node.admin(Method::DELETE, "/v1/tenants/globex", None).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (_, gone) = node.admin(Method::GET, &format!("/v1/jobs/{waiting}"), None).await;
    assert_eq!((gone["status"].as_str(), gone["reason"].as_str()), (Some("cancelled"), Some("the tenant was removed")), "{gone}");
    let (s, _) = node.app("not-a-key", Method::GET, "/v1/jobs", None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    node.deploy("hello", runplane_examples::HELLO, "hello", &[]).await;
    let (s, body) = submit(&node, &acme, json!({"route": "hello"})).await;
    assert_eq!((s, body["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("no_task_export")), "{body}");
}

/// Jobs follow a rollout's cohort as requests do: with acme pinned to the candidate,
/// acme's job runs on v2 and globex's on v1 (their attempts' audit events say so).
#[tokio::test]
async fn jobs_follow_the_rollouts_cohort() {
    let (node, acme, globex) = worker_node(|_| {}).await;
    let (s, v2) = node.push("worker", "2.0.0", &runplane_examples::tagged(runplane_examples::WORKER, "v2")).await;
    assert_eq!(s, StatusCode::CREATED, "{v2}");
    let v2 = v2["digest"].as_str().expect("digest").to_owned();
    let (s, r) = node.admin(Method::POST, "/v1/rollouts", Some(json!({"route": "work", "capability": "worker@2.0.0", "strategy": "canary", "include": ["acme"], "steps": [{"pause": {}}]}))).await;
    assert_eq!(s, StatusCode::CREATED, "{r}");
    let digest_of = async |tenant: &str, key: &str| -> String {
        let (_, job) = submit(&node, key, json!({"route": "work", "input": {"op": "echo"}})).await;
        let id = job["job_id"].as_str().expect("id").to_owned();
        job_until(&node, key, &id, is_final).await;
        let (_, page) = node.admin(Method::GET, &format!("/v1/audit/events?log=tenant:{tenant}&limit=1000"), None).await;
        page["items"].as_array().expect("items").iter().find(|e| e["event"]["action"] == "invoke.task" && e["event"]["details"]["job_id"] == id.as_str()).expect("the attempt's event")["event"]["capability_digest"]
            .as_str()
            .expect("digest")
            .to_owned()
    };
    assert_eq!(digest_of("acme", &acme).await, v2, "acme, in the cohort, ran on the candidate");
    assert_ne!(digest_of("globex", &globex).await, v2, "globex stayed on stable");
}
