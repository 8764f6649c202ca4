//! Architecture tests for the ports crate.

use std::collections::{BTreeSet, HashMap};
use std::process::Command;

/// Crates that mean infrastructure: a database, broker, HTTP stack, cloud SDK, wasm
/// engine or async runtime. The ports crate must not reach any of them, even
/// transitively.
const INFRASTRUCTURE: &[&str] = &[
    "sqlx", "sqlx-core", "rusqlite", "libsqlite3-sys", "tokio-postgres", "postgres", "mysql_async",
    "async-nats", "lapin", "rdkafka", "redis", "object_store", "aws-sdk-s3", "aws-config",
    "hyper", "reqwest", "axum", "tower", "http", "h2", "rustls", "tokio", "wasmtime",
    "wasmtime-wasi", "wasmtime-wasi-http", "tonic", "opentelemetry",
];

/// Every path from `root` to a crate in `forbidden`, through normal (shipped)
/// dependencies, by `cargo metadata` over the workspace.
fn forbidden_paths(root: &str, forbidden: &[&str]) -> Vec<String> {
    let out = Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1", "--manifest-path"])
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml"))
        .output()
        .expect("run cargo metadata");
    assert!(out.status.success(), "cargo metadata failed: {}", String::from_utf8_lossy(&out.stderr));
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).expect("cargo metadata JSON");

    let names: HashMap<&str, &str> = meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["id"].as_str().unwrap(), p["name"].as_str().unwrap()))
        .collect();
    let nodes: HashMap<&str, &serde_json::Value> = meta["resolve"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| (n["id"].as_str().unwrap(), n))
        .collect();
    let root_id = names.iter().find(|(_, n)| **n == root).map(|(id, _)| *id).unwrap_or_else(|| panic!("{root} is not in the workspace"));

    // Walk normal (non-dev, non-build) dependencies only: that is what ships.
    let mut seen = BTreeSet::new();
    let mut stack = vec![(root_id, vec![root.to_string()])];
    let mut violations = Vec::new();
    while let Some((id, path)) = stack.pop() {
        if !seen.insert(id) {
            continue;
        }
        for dep in nodes[id]["deps"].as_array().unwrap() {
            let normal = dep["dep_kinds"].as_array().unwrap().iter().any(|k| k["kind"].is_null());
            if !normal {
                continue;
            }
            let dep_id = dep["pkg"].as_str().unwrap();
            let name = names[dep_id];
            let mut p = path.clone();
            p.push(name.to_string());
            if forbidden.contains(&name) {
                violations.push(p.join(" -> "));
            }
            stack.push((dep_id, p));
        }
    }
    violations
}

#[test]
fn ports_depend_on_no_infrastructure_crate() {
    let violations = forbidden_paths("runplane-ports", INFRASTRUCTURE);
    assert!(
        violations.is_empty(),
        "runplane-ports must depend on no infrastructure crate, but reaches:\n  {}",
        violations.join("\n  ")
    );
}

/// The pure crates (decisions, canonical JSON, envelope crypto) reach no database,
/// broker, HTTP stack or engine. `tokio` is allowed for them: the tenancy crate's
/// gates use its synchronisation primitives (`tokio::sync`), never its I/O.
#[test]
fn pure_crates_depend_on_no_infrastructure_crate() {
    let forbidden: Vec<&str> = INFRASTRUCTURE.iter().copied().filter(|c| *c != "tokio").collect();
    for root in ["runplane-cjson", "runplane-tenancy", "runplane-policy", "runplane-secrets", "runplane-rollout", "runplane-jobs"] {
        let violations = forbidden_paths(root, &forbidden);
        assert!(violations.is_empty(), "{root} must stay pure, but reaches:\n  {}", violations.join("\n  "));
    }
}

/// The control store speaks SQL and nothing else: no HTTP stack, broker, object store
/// or engine (the node drives it; it never reaches back).
#[test]
fn the_control_crate_reaches_only_sql() {
    let forbidden: Vec<&str> = INFRASTRUCTURE.iter().copied().filter(|c| !["sqlx", "sqlx-core", "libsqlite3-sys", "tokio"].contains(c)).collect();
    let violations = forbidden_paths("runplane-control", &forbidden);
    assert!(violations.is_empty(), "runplane-control must reach only SQL, but reaches:\n  {}", violations.join("\n  "));
}

#[test]
fn tenant_ids_are_restricted_to_safe_characters() {
    use runplane_ports::TenantId;
    for ok in ["acme", "a", "tenant-01", "0abc"] {
        assert!(TenantId::new(ok).is_ok(), "{ok}");
    }
    for bad in ["", "-x", "Acme", "a/b", "a.b", "a b", "ä", &"x".repeat(64)] {
        assert!(TenantId::new(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn names_refuse_path_traversal() {
    use runplane_ports::validate_name;
    for ok in ["invoices", "a/b/c.txt", "ord_1.json", "ünïcode"] {
        assert!(validate_name("object", ok, 256).is_ok(), "{ok}");
    }
    for bad in ["", "../x", "a/../b", "/abs", "a//b", "a/", ".", "a\\b", "a\0b", "x\n"] {
        assert!(validate_name("object", bad, 256).is_err(), "{bad:?}");
    }
}
