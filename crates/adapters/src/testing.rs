//! Reaching the real services the test suites run against (PostgreSQL, MariaDB/MySQL,
//! NATS, RabbitMQ, an S3-compatible server), for this crate's tests and the node's.
//!
//! Each service's address comes from an environment variable with the local default.
//! When a service cannot be reached, the test is skipped with a loud message, except
//! under `CI=true`, where it fails: CI must never pass by skipping.

use std::time::Duration;

/// `RUNPLANE_TEST_POSTGRES_URL`, default `postgres://postgres@127.0.0.1:5432/postgres`.
pub fn postgres_url() -> String {
    std::env::var("RUNPLANE_TEST_POSTGRES_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// `RUNPLANE_TEST_MYSQL_URL`, default `mysql://root@127.0.0.1:3306/test`.
pub fn mysql_url() -> String {
    std::env::var("RUNPLANE_TEST_MYSQL_URL").unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/test".into())
}

/// `RUNPLANE_TEST_NATS_URL`, default `nats://127.0.0.1:4222`.
pub fn nats_url() -> String {
    std::env::var("RUNPLANE_TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into())
}

/// `RUNPLANE_TEST_AMQP_URL`, default `amqp://guest:guest@127.0.0.1:5672/%2f`.
pub fn amqp_url() -> String {
    std::env::var("RUNPLANE_TEST_AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

/// `RUNPLANE_TEST_S3_ENDPOINT`, default `http://127.0.0.1:9000` (moto's server, started
/// by `scripts/test.sh`).
pub fn s3_endpoint() -> String {
    std::env::var("RUNPLANE_TEST_S3_ENDPOINT").unwrap_or_else(|_| "http://127.0.0.1:9000".into())
}

/// Whether `url`'s host and port accept a TCP connection within two seconds. When not:
/// panics under `CI=true`, otherwise prints why the test is skipped and returns false.
pub async fn service_up(name: &str, url: &str) -> bool {
    let authority = url.split("://").nth(1).unwrap_or(url);
    let authority = authority.rsplit('@').next().unwrap_or(authority);
    let host_port = authority.split('/').next().unwrap_or(authority).to_owned();
    let reachable = matches!(
        tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(&host_port)).await,
        Ok(Ok(_))
    );
    if !reachable {
        let ci = std::env::var("CI").map(|v| v == "true" || v == "1").unwrap_or(false);
        assert!(!ci, "{name} is not reachable at {host_port} and CI=true: start it (scripts/test.sh does) instead of skipping");
        eprintln!("SKIPPED: {name} is not reachable at {host_port}; start it to run this test (CI fails instead)");
    }
    reachable
}

/// A name no other test run will pick: `prefix` plus a random suffix of a-z and 0-9.
pub fn unique_name(prefix: &str) -> String {
    use rand::Rng as _;
    let mut bytes = [0u8; 10];
    rand::rng().fill_bytes(&mut bytes);
    let suffix: String = bytes.iter().map(|b| char::from(b"abcdefghijklmnopqrstuvwxyz0123456789"[usize::from(*b) % 36])).collect();
    format!("{prefix}_{suffix}")
}

/// Creates `bucket` on the S3-compatible test server (moto accepts unsigned requests).
pub async fn create_s3_bucket(endpoint: &str, bucket: &str) {
    let response = reqwest::Client::new()
        .put(format!("{endpoint}/{bucket}"))
        .send()
        .await
        .expect("the S3 test server answers");
    assert!(response.status().is_success(), "creating bucket {bucket}: {}", response.status());
}
