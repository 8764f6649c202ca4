//! The `runplane` binary as a user runs it.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_runplane");

fn canon(input: &str, args: &[&str]) -> (bool, String, String) {
    let mut child = Command::new(BIN).arg("canon").args(args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn");
    child.stdin.take().expect("stdin").write_all(input.as_bytes()).expect("write");
    let out = child.wait_with_output().expect("wait");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).trim().to_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn canon_prints_canonical_json_and_hashes() {
    let (ok, out, _) = canon(r#"{"b": 1.0, "a": ["é", 1e-7]}"#, &[]);
    assert!(ok);
    assert_eq!(out, r#"{"a":["\u00e9",1e-07],"b":1.0}"#);
    let (ok, out, _) = canon(r#"{"b": 1.0, "a": ["é", 1e-7]}"#, &["--hash"]);
    assert!(ok);
    assert_eq!(out, runplane_cjson::sha256_hex(br#"{"a":["\u00e9",1e-07],"b":1.0}"#));
    for bad in ["{", "NaN", "[1e999]", ""] {
        let (ok, _, err) = canon(bad, &[]);
        assert!(!ok, "{bad:?} must fail");
        assert!(err.starts_with("error: "), "{err}");
    }
}

struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn up_starts_a_demo_node_with_credentials() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let _child = Child(
        Command::new(BIN)
            .args(["up", "--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn runplane up"),
    );
    let creds_path = dir.path().join("demo-credentials.json");
    let started = Instant::now();
    while !creds_path.exists() {
        assert!(started.elapsed() < Duration::from_secs(60), "runplane up wrote no credentials within 60 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&creds_path).expect("meta").permissions().mode() & 0o777, 0o600);
    }
    let creds: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&creds_path).expect("read")).expect("json");
    assert!(creds["admin_token"].as_str().is_some_and(|t| t.len() > 20));
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let key = |t: &str| creds["tenants"][t].as_str().expect("tenant key").to_owned();

    let order: serde_json::Value = http
        .post(format!("{base}/apps/orders/orders"))
        .bearer_auth(key("acme"))
        .json(&serde_json::json!({"item": "tea", "quantity": 2}))
        .send()
        .await
        .expect("post")
        .json()
        .await
        .expect("json");
    let id = order["id"].as_str().expect("id");
    for (tenant, status) in [("acme", 200), ("globex", 404), ("initech", 404)] {
        let resp = http.get(format!("{base}/apps/orders/orders/{id}")).bearer_auth(key(tenant)).send().await.expect("get");
        assert_eq!(resp.status().as_u16(), status, "{tenant}");
    }
    let tenants: serde_json::Value =
        http.get(format!("{base}/v1/tenants")).bearer_auth(creds["admin_token"].as_str().expect("token")).send().await.expect("list").json().await.expect("json");
    let modes: Vec<(String, String)> = tenants["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|t| (t["id"].as_str().unwrap_or_default().to_owned(), t["mode"].as_str().unwrap_or_default().to_owned()))
        .collect();
    assert_eq!(
        modes,
        vec![("acme".into(), "shared".into()), ("globex".into(), "shared".into()), ("initech".into(), "dedicated".into())]
    );
    for path in ["/healthz", "/metrics", "/v1/openapi.json"] {
        assert!(http.get(format!("{base}{path}")).send().await.expect("get").status().is_success(), "{path}");
    }

    // The admin subcommands find the token in the data directory.
    let admin = |args: &[&str]| {
        let out = Command::new(BIN).args(args).args(["--node", &base, "--data-dir"]).arg(dir.path()).output().expect("run");
        (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (ok, out, err) = admin(&["tenant", "create", "hooli", "--tier", "pro"]);
    assert!(ok, "{err}");
    assert!(out.contains("\"api_key\"") && out.contains("hooli"), "{out}");
    let (ok, out, _) = admin(&["tenant", "list"]);
    assert!(ok && out.contains("hooli") && out.contains("initech"), "{out}");
    let (ok, out, _) = admin(&["deploy", "list"]);
    assert!(ok && out.contains("orders"), "{out}");
    let (ok, out, _) = admin(&["capability", "list"]);
    assert!(ok && out.contains("\"digest\""), "{out}");
    let (ok, _, err) = admin(&["tenant", "suspend", "nobody"]);
    assert!(!ok && err.contains("does not exist"), "{err}");
    let (ok, out, _) = admin(&["audit", "events", "admin"]);
    assert!(ok && out.contains("tenant.create"), "{out}");
}

#[test]
fn serve_reports_every_config_problem() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("runplane.toml");
    std::fs::write(&path, "[node]\nlisten = \"nowhere\"\nmode = \"sideways\"\n[bindings]\nrecords = \"oracle\"\n").expect("write");
    let out = Command::new(BIN).args(["serve", "--config"]).arg(&path).output().expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    for needle in ["3 problem(s)", "node.listen", "node.mode", "bindings.records"] {
        assert!(err.contains(needle), "missing {needle}: {err}");
    }
}

#[tokio::test]
async fn serve_starts_a_node_from_a_config_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let config = format!(
        "[node]\nid = \"edge-7\"\nlisten = \"127.0.0.1:{port}\"\ndata_dir = {:?}\nadmin_token = \"${{TEST_ADMIN_TOKEN}}\"\n\n[sandbox]\ndeadline_ms = 2000\n\n[config.orders]\ncurrency = \"CHF\"\n",
        dir.path().join("data").display().to_string()
    );
    let path = dir.path().join("runplane.toml");
    std::fs::write(&path, config).expect("write");
    let token = "serve-test-admin-token-0123456789";
    let _child = Child(
        Command::new(BIN)
            .args(["serve", "--config"])
            .arg(&path)
            .env("TEST_ADMIN_TOKEN", token)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn runplane serve"),
    );
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let started = Instant::now();
    let health = loop {
        if let Ok(r) = http.get(format!("{base}/healthz")).send().await {
            break r.json::<serde_json::Value>().await.expect("json");
        }
        assert!(started.elapsed() < Duration::from_secs(60), "runplane serve did not come up");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(health["node_id"], "edge-7");
    let resp = http.get(format!("{base}/v1/tenants")).bearer_auth(token).send().await.expect("list");
    assert_eq!(resp.status(), 200, "the admin token came from the environment");
    assert!(!dir.path().join("data/admin-token").exists(), "no token is generated when one is configured");
}

async fn up_once(dir: &std::path::Path) -> (Child, String, serde_json::Value) {
    let creds_path = dir.join("demo-credentials.json");
    let _ = std::fs::remove_file(&creds_path);
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let child = Child(
        Command::new(BIN)
            .args(["up", "--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn runplane up"),
    );
    let started = Instant::now();
    while !creds_path.exists() {
        assert!(started.elapsed() < Duration::from_secs(60), "runplane up wrote no credentials within 60 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let creds = serde_json::from_str(&std::fs::read_to_string(&creds_path).expect("read")).expect("json");
    (child, format!("http://127.0.0.1:{port}"), creds)
}

#[tokio::test]
async fn up_again_on_the_same_data_dir_keeps_the_data() {
    let dir = tempfile::tempdir().expect("tempdir");
    let http = reqwest::Client::new();
    let (first, base, creds) = up_once(dir.path()).await;
    let old_key = creds["tenants"]["acme"].as_str().expect("key").to_owned();
    let order: serde_json::Value = http
        .post(format!("{base}/apps/orders/orders"))
        .bearer_auth(&old_key)
        .json(&serde_json::json!({"item": "tea", "quantity": 1}))
        .send()
        .await
        .expect("post")
        .json()
        .await
        .expect("json");
    drop(first);

    let (_second, base, creds) = up_once(dir.path()).await;
    let new_key = creds["tenants"]["acme"].as_str().expect("key").to_owned();
    assert_ne!(old_key, new_key, "a second start issues fresh demo keys");
    for key in [&old_key, &new_key] {
        let resp = http.get(format!("{base}/apps/orders/orders/{}", order["id"].as_str().expect("id"))).bearer_auth(key).send().await.expect("get");
        assert_eq!(resp.status(), 200, "the order and both keys survive");
    }
}
