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

mod merkle {
    use runplane_audit::merkle::{Hash, consistency_proof, inclusion_proof, leaf_hash, root, verify_consistency, verify_inclusion};

    /// The eight leaves of the RFC 6962 test data (certificate-transparency-go, transparency-dev/merkle).
    const LEAVES: [&str; 8] = ["", "00", "10", "2021", "3031", "40414243", "5051525354555657", "606162636465666768696a6b6c6d6e6f"];
    /// Their roots for sizes 1 to 8.
    const ROOTS: [&str; 8] = [
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    ];

    fn leaves(n: usize) -> Vec<Hash> {
        (0..n).map(|i| leaf_hash(format!("leaf {i}").as_bytes())).collect()
    }

    #[test]
    fn rfc6962_roots() {
        let hashes: Vec<Hash> = LEAVES.iter().map(|l| leaf_hash(&hex::decode(l).expect("hex"))).collect();
        for (size, expected) in ROOTS.iter().enumerate() {
            assert_eq!(hex::encode(root(&hashes[..=size])), *expected, "root of size {}", size + 1);
        }
        assert_eq!(hex::encode(root(&[])), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    }

    #[test]
    fn every_inclusion_proof_verifies_and_any_flipped_byte_fails() {
        for n in 1..=40 {
            let l = leaves(n);
            let r = root(&l);
            for i in 0..n {
                let proof = inclusion_proof(i, &l).expect("in range");
                verify_inclusion(&l[i], i as u64, n as u64, &proof, &r).unwrap_or_else(|e| panic!("n={n} i={i}: {e}"));
                for (j, _) in proof.iter().enumerate() {
                    let mut bad = proof.clone();
                    bad[j][(i + j) % 32] ^= 1;
                    assert!(verify_inclusion(&l[i], i as u64, n as u64, &bad, &r).is_err(), "n={n} i={i} flipped hash {j}");
                }
                let mut wrong_leaf = l[i];
                wrong_leaf[0] ^= 0x80;
                assert!(verify_inclusion(&wrong_leaf, i as u64, n as u64, &proof, &r).is_err());
                if n > 1 {
                    assert!(verify_inclusion(&l[i], ((i + 1) % n) as u64, n as u64, &proof, &r).is_err() || l[i] == l[(i + 1) % n]);
                }
            }
            assert!(verify_inclusion(&l[0], n as u64, n as u64, &[], &r).is_err());
        }
    }

    #[test]
    fn every_consistency_proof_verifies_and_any_flipped_byte_fails() {
        for n in 1..=40 {
            let l = leaves(n);
            let second = root(&l);
            for m in 0..=n {
                let first = root(&l[..m]);
                let proof = consistency_proof(m, &l).expect("m <= n");
                verify_consistency(m as u64, n as u64, &proof, &first, &second).unwrap_or_else(|e| panic!("m={m} n={n}: {e}"));
                for j in 0..proof.len() {
                    let mut bad = proof.clone();
                    bad[j][j % 32] ^= 1;
                    assert!(verify_consistency(m as u64, n as u64, &bad, &first, &second).is_err(), "m={m} n={n} flipped {j}");
                }
                if m > 0 && m < n {
                    let mut forged = first;
                    forged[31] ^= 1;
                    assert!(verify_consistency(m as u64, n as u64, &proof, &forged, &second).is_err(), "m={m} n={n} forged first root");
                }
            }
        }
    }
}
