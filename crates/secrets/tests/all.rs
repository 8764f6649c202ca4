//! Envelope secrets over the real SQLite adapter: what is stored, what moves, what
//! survives a key-encryption-key rotation.

use std::sync::Arc;

use runplane_adapters::sqlite::SqliteStore;
use runplane_ports::{SealedSecretStore, SecretStore, SecretValue, TenantId};
use runplane_secrets::{EnvelopeSecrets, KeyRing};

async fn store(dir: &tempfile::TempDir) -> Arc<SqliteStore> {
    Arc::new(SqliteStore::open(&dir.path().join("secrets.db")).await.expect("open sqlite"))
}

fn tenant(id: &str) -> TenantId {
    TenantId::new(id).expect("tenant id")
}

#[tokio::test]
async fn stored_bytes_hold_no_plaintext_and_do_not_move() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sealed = store(&dir).await;
    let secrets = EnvelopeSecrets::new(sealed.clone(), KeyRing::generate().expect("ring").shared());
    let (a, b) = (tenant("acme"), tenant("globex"));
    assert_eq!(secrets.put(&a, "webhook", SecretValue::new(b"s3cr3t-value-A1".to_vec())).await.expect("put"), 1);
    assert_eq!(secrets.put(&a, "webhook", SecretValue::new(b"s3cr3t-value-A2".to_vec())).await.expect("put"), 2);
    assert_eq!(secrets.get(&a, "webhook").await.expect("get").expose(), b"s3cr3t-value-A2");
    assert_eq!(secrets.get_version(&a, "webhook", 1).await.expect("v1").expose(), b"s3cr3t-value-A1");

    // The database file, read raw, contains neither value.
    drop(secrets);
    let raw = std::fs::read(dir.path().join("secrets.db")).expect("db file");
    let wal = std::fs::read(dir.path().join("secrets.db-wal")).unwrap_or_default();
    for bytes in [&raw, &wal] {
        assert!(!bytes.windows(12).any(|w| w == b"s3cr3t-value"), "no plaintext in the stored bytes");
    }

    // Copy version 1's bytes to another tenant, another name, another version.
    let v1 = sealed.version(&a, "webhook", 1).await.expect("read").expect("v1").sealed;
    let secrets = EnvelopeSecrets::new(sealed.clone(), KeyRing::generate().expect("ring").shared());
    sealed.insert(&b, "webhook", 1, &v1).await.expect("plant in b");
    sealed.insert(&a, "other-name", 1, &v1).await.expect("plant under another name");
    sealed.insert(&a, "webhook", 3, &v1).await.expect("plant as v3");
    for (t, name, version) in [(&b, "webhook", 1), (&a, "other-name", 1), (&a, "webhook", 3)] {
        let e = secrets.get_version(t, name, version).await.expect_err("a moved ciphertext must not open");
        let msg = e.to_string();
        assert!(!msg.contains("s3cr3t"), "errors never carry a value: {msg}");
    }
}

#[tokio::test]
async fn kek_rotation_keeps_every_version_readable_and_rewraps_lazily() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sealed = store(&dir).await;
    let ring = KeyRing::generate().expect("ring").shared();
    let secrets = EnvelopeSecrets::new(sealed.clone(), ring.clone());
    let a = tenant("acme");
    secrets.put(&a, "db-password", SecretValue::new(b"first".to_vec())).await.expect("put v1");
    secrets.put(&a, "db-password", SecretValue::new(b"second".to_vec())).await.expect("put v2");
    let kek_of = |bytes: &[u8]| serde_json::from_slice::<serde_json::Value>(bytes).expect("envelope")["kek"].as_str().map(str::to_owned);

    let rotated = ring.read().expect("ring").rotated().expect("rotate");
    *ring.write().expect("ring") = Arc::new(rotated);

    // Before any read both versions are still wrapped under kek-1 …
    let v2 = sealed.version(&a, "db-password", 2).await.expect("read").expect("v2").sealed;
    assert_eq!(kek_of(&v2).as_deref(), Some("kek-1"));
    // … reading opens them and re-wraps the one read.
    assert_eq!(secrets.get(&a, "db-password").await.expect("current").expose(), b"second");
    let v2 = sealed.version(&a, "db-password", 2).await.expect("read").expect("v2").sealed;
    assert_eq!(kek_of(&v2).as_deref(), Some("kek-2"), "re-wrapped on read");
    let v1 = sealed.version(&a, "db-password", 1).await.expect("read").expect("v1").sealed;
    assert_eq!(kek_of(&v1).as_deref(), Some("kek-1"), "versions not read stay as they were");
    assert_eq!(secrets.get_version(&a, "db-password", 1).await.expect("v1").expose(), b"first");

    // A secret rotation (a new version) after the KEK rotation is wrapped under kek-2.
    assert_eq!(secrets.put(&a, "db-password", SecretValue::new(b"third".to_vec())).await.expect("put v3"), 3);
    let v3 = sealed.latest(&a, "db-password").await.expect("read").expect("v3").sealed;
    assert_eq!(kek_of(&v3).as_deref(), Some("kek-2"));
    let listed = secrets.list(&a).await.expect("list");
    assert_eq!((listed[0].name.as_str(), listed[0].version), ("db-password", 3));
}

#[tokio::test]
async fn concurrent_puts_each_get_their_own_version() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sealed = store(&dir).await;
    let secrets = Arc::new(EnvelopeSecrets::new(sealed, KeyRing::generate().expect("ring").shared()));
    let a = tenant("acme");
    let mut tasks = Vec::new();
    for i in 0..6u8 {
        let (s, a) = (secrets.clone(), a.clone());
        tasks.push(tokio::spawn(async move { s.put(&a, "k", SecretValue::new(vec![i])).await }));
    }
    let mut versions = Vec::new();
    for t in tasks {
        versions.push(t.await.expect("join").expect("put"));
    }
    versions.sort();
    assert_eq!(versions, [1, 2, 3, 4, 5, 6]);
    for v in 1..=6 {
        assert_eq!(secrets.get_version(&a, "k", v).await.expect("open").expose().len(), 1);
    }
}
