//! Several `runplane serve` processes as one instance on loopback: control state,
//! audit and records on one PostgreSQL (or MariaDB), messaging on NATS, blobs on the
//! S3-compatible test server, clients round-robin across the nodes.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use runplane_adapters::testing;
use serde_json::{Value, json};

use super::{BIN, Child};

pub const ADMIN: &str = "cluster-test-admin-token-0123456789";

/// Where the instance keeps its state.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Sql {
    Postgres,
    MariaDb,
}

/// One instance's shared settings.
pub struct Instance {
    pub dir: tempfile::TempDir,
    pub sql: Sql,
    pub database: String,
    prefix: String,
    bucket: String,
    pub http: reqwest::Client,
}

/// One node process.
pub struct NodeProc {
    pub id: String,
    pub port: u16,
    pub child: Option<Child>,
}

impl NodeProc {
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn pid(&self) -> String {
        self.child.as_ref().map(|c| c.0.id().to_string()).unwrap_or_default()
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

impl Instance {
    /// A fresh instance's names, or `None` when a service is down (outside CI).
    pub async fn new(sql: Sql) -> Option<Instance> {
        let url = match sql {
            Sql::Postgres => testing::postgres_url(),
            Sql::MariaDb => testing::mysql_url(),
        };
        let name = if sql == Sql::Postgres { "PostgreSQL" } else { "MariaDB" };
        if !testing::service_up(name, &url).await
            || !testing::service_up("NATS", &testing::nats_url()).await
            || !testing::service_up("the S3 test server", &testing::s3_endpoint()).await
        {
            return None;
        }
        let bucket = testing::unique_name("rp-cluster").replace('_', "-");
        testing::create_s3_bucket(&testing::s3_endpoint(), &bucket).await;
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("keys")).expect("keys dir");
        Some(Instance {
            dir,
            sql,
            database: testing::unique_name("rp_cluster"),
            prefix: testing::unique_name("rpc"),
            bucket,
            http: reqwest::Client::builder().timeout(Duration::from_secs(30)).build().expect("client"),
        })
    }

    fn keys(&self) -> PathBuf {
        self.dir.path().join("keys")
    }

    /// The configuration of node `id` (`extra` is appended, e.g. a `[control]` table).
    pub fn config(&self, id: &str, port: u16, extra: &str) -> String {
        let (kind, url) = match self.sql {
            Sql::Postgres => ("postgres", testing::postgres_url()),
            Sql::MariaDb => ("mysql", testing::mysql_url()),
        };
        let keys = self.keys();
        format!(
            r#"[node]
id = "{id}"
listen = "127.0.0.1:{port}"
data_dir = {data:?}
admin_token = "{ADMIN}"
region = "eu-west"
drain_delay_ms = 300

[sandbox]
deadline_ms = 10000
fuel = 400000000000

[backends.db]
kind = "{kind}"
url = "{url}"
database = "{database}"

[backends.bus]
kind = "nats"
url = "{nats}"
prefix = "{prefix}"
# JetStream reserves a stream's max_bytes from its storage: test streams stay small.
max_bytes = 16777216
max_age_secs = 600

[backends.objects]
kind = "s3"
bucket = "{bucket}"
endpoint = "{s3}"
access_key_id = "test"
secret_access_key = "test"

[bindings]
records = "db"
kv = "db"
events = "db"
secrets = "db"
messaging = "bus"
blobs = "objects"

[audit]
store = "db"
key_file = {audit_key:?}

[tokens]
key_file = {token_key:?}

[secrets]
kek_file = {kek:?}

[config.orders]
currency = "EUR"

[control]
store = "db"
node_ttl_ms = 2000
heartbeat_ms = 500
lease_ttl_ms = 3000
{extra}
"#,
            data = self.dir.path().join(id).display().to_string(),
            database = self.database,
            nats = testing::nats_url(),
            prefix = self.prefix,
            bucket = self.bucket,
            s3 = testing::s3_endpoint(),
            audit_key = keys.join("instance.key").display().to_string(),
            token_key = keys.join("token.key").display().to_string(),
            kek = keys.join("secrets.kek").display().to_string(),
        )
    }

    /// Starts node `id` with `extra` configuration and waits until it is ready.
    pub async fn start(&self, id: &str, extra: &str) -> NodeProc {
        let port = free_port();
        let config = self.dir.path().join(format!("{id}.toml"));
        std::fs::write(&config, self.config(id, port, extra)).expect("write config");
        let log = std::fs::File::create(self.dir.path().join(format!("{id}.log"))).expect("log file");
        let child = Child(
            Command::new(BIN)
                .args(["serve", "--config"])
                .arg(&config)
                .env("RUST_LOG", "info")
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("spawn runplane serve"),
        );
        let mut node = NodeProc { id: id.into(), port, child: Some(child) };
        let started = Instant::now();
        loop {
            if let Ok(r) = self.http.get(node.url("/readyz")).send().await
                && r.status() == StatusCode::OK
            {
                return node;
            }
            if let Some(c) = &mut node.child
                && let Ok(Some(status)) = c.0.try_wait()
            {
                panic!("node {id} exited at start ({status}):\n{}", self.log(id));
            }
            assert!(started.elapsed() < Duration::from_secs(90), "node {id} did not become ready:\n{}", self.log(id));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// What node `id` wrote to stderr.
    pub fn log(&self, id: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("{id}.log"))).unwrap_or_default()
    }

    pub async fn admin(&self, node: &NodeProc, method: reqwest::Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut req = self.http.request(method, node.url(path)).bearer_auth(ADMIN);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("admin request");
        let status = resp.status();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    pub async fn push_and_deploy(&self, node: &NodeProc, name: &str, wasm: &[u8], flag: Option<&str>) {
        let r = self.http.post(node.url(&format!("/v1/capabilities?name={name}&version=1.0.0"))).bearer_auth(ADMIN).body(wasm.to_vec()).send().await.expect("push");
        assert!(r.status().is_success(), "push {name}: {}", r.status());
        let (s, body) = self.admin(node, reqwest::Method::POST, "/v1/deployments", Some(json!({"capability": name, "version": "1.0.0", "route": name, "flag": flag}))).await;
        assert!(s.is_success(), "deploy {name}: {s} {body}");
    }

    /// The status tenant traffic with `credential` gets from `node` on `path`.
    pub async fn call(&self, node: &NodeProc, credential: &str, path: &str) -> StatusCode {
        match self.http.get(node.url(path)).bearer_auth(credential).send().await {
            Ok(r) => r.status(),
            Err(_) => StatusCode::BAD_GATEWAY,
        }
    }

    /// How long until `node` answers `want` on `path` (polling every 2 ms), or panics
    /// after `limit`.
    pub async fn until(&self, node: &NodeProc, credential: &str, path: &str, want: StatusCode, limit: Duration) -> Duration {
        let t = Instant::now();
        loop {
            if self.call(node, credential, path).await == want {
                return t.elapsed();
            }
            assert!(t.elapsed() < limit, "{} did not answer {want} on {path} within {limit:?}", node.id);
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// The log of leader-lease epochs, read through the control store itself (the API
    /// does not show it).
    pub async fn lease_epochs(&self) -> Vec<runplane_control::LeaseEpoch> {
        let home = match self.sql {
            Sql::Postgres => runplane_control::Home::Postgres { url: testing::postgres_url(), database: self.database.clone() },
            Sql::MariaDb => runplane_control::Home::MySql { url: testing::mysql_url(), database: self.database.clone() },
        };
        let store = runplane_control::ControlStore::open(&home, &self.dir.path().join("reader"), Duration::from_secs(5)).await.expect("open the control store");
        store.lease_epochs("leader").await.expect("epochs")
    }
}

/// Sends SIGTERM or SIGKILL.
pub fn signal(node: &NodeProc, sig: &str) {
    assert!(Command::new("kill").args([sig, &node.pid()]).status().expect("kill").success());
}

/// Percentile of sorted durations.
pub fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}
