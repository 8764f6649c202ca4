//! Audit store tests: durability of acknowledged appends, dense indexes, tamper detection.

use runplane_audit::{AuditEvent, AuditStore, LogId, Outcome};

fn event(n: u64) -> AuditEvent {
    AuditEvent {
        protocol_version: "1.0".into(),
        event_id: format!("ev-{n}"),
        time: runplane_audit::rfc3339_utc(1_700_000_000_000_000_000 + u128::from(n)),
        actor: "admin".into(),
        tenant: Some("acme".into()),
        action: "test.append".into(),
        target: format!("thing-{n}"),
        outcome: Outcome::ok(Some(200)),
        context: None,
        request_digest: None,
        response_digest: None,
        capability_digest: None,
        binding_set_version: None,
        config_version: None,
        usage: None,
        details: Default::default(),
    }
}

#[tokio::test]
async fn concurrent_appends_get_dense_indexes_and_survive_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("audit.db");
    let store = AuditStore::open(&path).await.expect("open");
    let mut tasks = Vec::new();
    for n in 0..200u64 {
        let s = store.clone();
        tasks.push(tokio::spawn(async move {
            let log = if n % 2 == 0 { LogId::tenant("acme") } else { LogId::admin() };
            s.append(log, &event(n)).await.expect("append")
        }));
    }
    let mut receipts = Vec::new();
    for t in tasks {
        receipts.push(t.await.expect("join"));
    }
    let mut acme: Vec<u64> = receipts.iter().filter(|r| r.log == LogId::tenant("acme")).map(|r| r.index).collect();
    acme.sort();
    assert_eq!(acme, (0..100).collect::<Vec<_>>(), "indexes are dense and unique");
    drop(store);

    let reopened = AuditStore::open(&path).await.expect("reopen");
    assert_eq!(reopened.verify(&LogId::tenant("acme")).await.expect("verify"), 100);
    assert_eq!(reopened.verify(&LogId::admin()).await.expect("verify"), 100);
    let next = reopened.append(LogId::admin(), &event(999)).await.expect("append after reopen");
    assert_eq!(next.index, 100, "appends continue after the last stored index");
    let read = reopened.read(&LogId::tenant("acme"), 0, 1000).await.expect("read");
    for r in &read {
        let canonical = runplane_cjson::to_string(&r.event).expect("canonical");
        assert_eq!(runplane_cjson::sha256_hex(canonical.as_bytes()), r.event_hash, "hash is over canonical JSON");
    }
}

#[tokio::test]
async fn stored_events_cannot_be_updated_or_deleted_and_tampering_is_detected() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("audit.db");
    let store = AuditStore::open(&path).await.expect("open");
    for n in 0..3 {
        store.append(LogId::admin(), &event(n)).await.expect("append");
    }
    drop(store);

    let url = format!("sqlite:{}", path.display());
    let pool = sqlx::SqlitePool::connect(&url).await.expect("connect");
    assert!(sqlx::query("UPDATE audit_events SET event = '{}' WHERE idx = 1").execute(&pool).await.is_err(), "update refused");
    assert!(sqlx::query("DELETE FROM audit_events WHERE idx = 1").execute(&pool).await.is_err(), "delete refused");
    // A determined attacker drops the trigger first; verification still notices.
    sqlx::query("DROP TRIGGER audit_events_no_update").execute(&pool).await.expect("drop trigger");
    sqlx::query("UPDATE audit_events SET event = replace(event, 'thing-1', 'thing-X') WHERE idx = 1")
        .execute(&pool)
        .await
        .expect("tamper");
    pool.close().await;

    let store = AuditStore::open(&path).await.expect("reopen");
    let err = store.verify(&LogId::admin()).await.expect_err("tampering detected");
    assert!(err.to_string().contains("index 1"), "{err}");
}
