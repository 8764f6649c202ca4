//! The conformance suite run against the embedded adapters.

use runplane_adapters::{conformance, fs_blobs::FsBlobStore, memory_bus::InProcessBus, sqlite::SqliteStore};

async fn sqlite() -> (tempfile::TempDir, SqliteStore) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteStore::open(&dir.path().join("ports.db")).await.expect("open sqlite");
    (dir, store)
}

#[tokio::test]
async fn sqlite_records() {
    let (_d, s) = sqlite().await;
    conformance::records(&s).await;
}

#[tokio::test]
async fn sqlite_key_value() {
    let (_d, s) = sqlite().await;
    conformance::key_value(&s).await;
}

#[tokio::test]
async fn sqlite_events() {
    let (_d, s) = sqlite().await;
    conformance::events(&s).await;
}

#[tokio::test]
async fn sqlite_secrets() {
    let (_d, s) = sqlite().await;
    conformance::secrets(&s).await;
}

#[tokio::test]
async fn filesystem_blobs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = FsBlobStore::open(dir.path()).expect("open");
    conformance::blobs(&store).await;
    // Nothing was written outside the root.
    assert!(!dir.path().parent().expect("parent").join("etc").exists());
}

#[tokio::test]
async fn in_process_messaging() {
    conformance::messaging(&InProcessBus::new()).await;
}
