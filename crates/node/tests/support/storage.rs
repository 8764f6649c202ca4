//! Storage failures: an adapter's own words never reach a capability or its caller
//! (they go to the node's log), and `/healthz` reports the data directory's storage.

use reqwest::{Method, StatusCode};
use serde_json::json;

use super::{TestNode, captured_logs, orders_node};

/// The size of the filesystem holding `dir`, as `df` reports it.
fn df_size(dir: &std::path::Path) -> u64 {
    let out = std::process::Command::new("df").args(["-B1", "--output=size"]).arg(dir).output().expect("run df");
    assert!(out.status.success(), "df failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).lines().nth(1).and_then(|l| l.trim().parse().ok()).expect("df prints a size")
}

#[tokio::test]
async fn healthz_reports_the_data_directorys_storage() {
    let node = TestNode::start(|_| {}).await;
    let (s, health) = node.admin(Method::GET, "/healthz", None).await;
    assert_eq!(s, StatusCode::OK, "{health}");
    let storage = &health["storage"];
    let (available, total, low) = (
        storage["available_bytes"].as_u64().expect("available_bytes"),
        storage["total_bytes"].as_u64().expect("total_bytes"),
        storage["low_below_bytes"].as_u64().expect("low_below_bytes"),
    );
    let data_dir = node.running.node.config().data_dir.clone();
    assert_eq!(total, df_size(&data_dir), "the data directory's filesystem is the one measured: {health}");
    assert!(available <= total, "{health}");
    assert_eq!(low, (total / 100 * 5).max(256 << 20), "{health}");
    // This machine may be low on space; the status must follow the numbers either way.
    let (expect_storage, expect_node) = if available < low { ("low", "degraded") } else { ("ok", "ok") };
    assert_eq!(storage["status"], expect_storage, "{health}");
    assert_eq!(health["status"], expect_node, "{health}");
    assert_eq!(health["checks"]["storage"], true, "{health}");
    assert!(storage.get("error").is_none(), "{health}");
    assert!(!health.to_string().contains(&data_dir.display().to_string()), "the data directory's path is not shown: {health}");
    assert!(std::fs::read_dir(&data_dir).expect("list").flatten().all(|e| !e.file_name().to_string_lossy().starts_with(".healthz")), "the probe file is removed");

    // The document says so.
    let (_, doc) = node.admin(Method::GET, "/v1/openapi.json", None).await;
    let schemas = &doc["components"]["schemas"];
    assert!(schemas["Health"]["properties"]["storage"].is_object(), "{}", schemas["Health"]);
    assert!(schemas["StorageHealth"]["properties"]["available_bytes"].is_object(), "{}", schemas["StorageHealth"]);
}

/// The blob store's directory is broken under a running node (a file where its `data`
/// directory was): creating an order, which writes an invoice blob, fails. The caller
/// and the capability get the kind and a neutral reason; the detail is in the log.
#[tokio::test]
async fn an_adapter_failure_reaches_the_caller_only_as_a_neutral_reason() {
    let logs = captured_logs();
    let (node, acme, _globex, _initech) = orders_node().await;
    let data_dir = node.running.node.config().data_dir.clone();
    let blobs = data_dir.join("shared/blobs/data");
    if blobs.exists() {
        std::fs::remove_dir_all(&blobs).expect("remove the blob data directory");
    }
    std::fs::create_dir_all(data_dir.join("shared/blobs")).expect("blob root");
    std::fs::write(&blobs, b"not a directory").expect("a file where the blob data directory was");

    let (s, body) = node.app(&acme, Method::POST, "/apps/orders/orders", Some(json!({"item": "tea", "quantity": 2}))).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"], runplane_ports::UNAVAILABLE, "{body}");
    let text = body.to_string();
    for leak in ["LocalFileSystem", "blob store", "os error", "Not a directory", "shared/blobs", &data_dir.display().to_string()] {
        assert!(!text.contains(leak), "{leak:?} reached the caller: {text}");
    }

    let logged = String::from_utf8_lossy(&logs.lock().unwrap_or_else(|p| p.into_inner())).into_owned();
    assert!(
        logged.lines().any(|l| l.contains(runplane_ports::LOG_TARGET) && l.contains("blob store") && l.contains("Not a directory")),
        "the detail is in the node's log"
    );
    // The node itself can still write its data directory.
    let (s, health) = node.admin(Method::GET, "/healthz", None).await;
    assert_eq!(s, StatusCode::OK, "{health}");
}

/// Journals past their window leave the hot store for the archive (`[audit]
/// journal_retention_hours = 0`, archiver every second): the metrics say so, the log
/// still replays to its stored root, and an archived invocation replays identically
/// from its archive segment.
#[tokio::test]
async fn an_archived_invocation_replays_identically_and_its_log_still_verifies() {
    let node = TestNode::start(|c| {
        c.journal_retention.default_hours = 0;
        c.journal_retention.archive_every = std::time::Duration::from_secs(1);
    })
    .await;
    let acme = node.tenant("acme", super::Mode::Shared).await;
    node.deploy("orders", runplane_examples::ORDERS, "orders", &["order.created"]).await;
    let mut invocations = Vec::new();
    for i in 0..3 {
        let (s, order) = node.app(&acme, Method::POST, "/apps/orders/orders", Some(json!({"item": format!("tea-{i}"), "quantity": 1}))).await;
        assert_eq!(s, StatusCode::CREATED, "{order}");
    }
    let resp = node.http.get(node.url("/apps/orders/orders?limit=5")).bearer_auth(&acme).send().await.expect("list");
    assert_eq!(resp.status(), StatusCode::OK);
    invocations.push(resp.headers()["x-runplane-invocation-id"].to_str().expect("id").to_owned());

    // Wait for the archiver to move every journal (the message deliveries' too).
    let archived = |metrics: &str, state: &str| -> u64 {
        metrics
            .lines()
            .find(|l| l.starts_with(&format!("runplane_audit_journals{{state=\"{state}\"}}")))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let started = std::time::Instant::now();
    loop {
        let metrics = node.http.get(node.url("/metrics")).send().await.expect("metrics").text().await.expect("text");
        if archived(&metrics, "archived") >= 4 && archived(&metrics, "hot") == 0 {
            assert!(metrics.contains("runplane_audit_journal_bytes{state=\"archived\"}"), "{metrics}");
            assert!(metrics.contains("runplane_audit_store_bytes "), "{metrics}");
            break;
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(20), "journals were not archived within 20 s:\n{metrics}");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert!(std::fs::read_dir(node.running.node.config().data_dir.join("audit-archive")).is_ok(), "the archive lives in <data_dir>/audit-archive");

    for inv in &invocations {
        let (s, report) = node.admin(Method::POST, &format!("/v1/replay/{inv}"), None).await;
        assert_eq!(s, StatusCode::OK, "{report}");
        assert_eq!(report["identical"], true, "archived invocation {inv} did not replay identically: {report}");
    }
    let (s, log) = node.admin(Method::POST, "/v1/audit/logs/tenant:acme/replay", None).await;
    assert_eq!(s, StatusCode::OK, "{log}");
    assert_eq!(log["identical"], true, "the compacted log no longer replays to its root: {log}");
}
