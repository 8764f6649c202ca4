//! `runplane up`: a node with embedded defaults, the bundled `orders` example and
//! three demo tenants (`acme` and `globex` shared, `initech` dedicated).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use reqwest::Method;
use runplane_node::{Mode, Node, NodeConfig};
use serde_json::{Value, json};

use crate::admin::Client;

const DEMO_TENANTS: [(&str, Mode); 3] = [("acme", Mode::Shared), ("globex", Mode::Shared), ("initech", Mode::Dedicated)];

pub async fn run(listen: SocketAddr, data_dir: PathBuf, tls: bool) -> anyhow::Result<()> {
    let mut config = NodeConfig::embedded(listen, data_dir.clone());
    if tls {
        config.tls = Some(runplane_node::tls::TlsSettings::development());
    }
    config.capability_config.insert("orders".into(), BTreeMap::from([("currency".to_string(), "EUR".to_string())]));
    config
        .tenant_config
        .insert("globex".into(), BTreeMap::from([("orders".to_string(), BTreeMap::from([("currency".to_string(), "USD".to_string())]))]));
    let running = Node::start(config).await?;
    let base = format!("{}://{}", running.node.scheme(), running.addr);
    let admin_token = match running.generated_admin_token.clone() {
        Some(t) => t,
        None => std::fs::read_to_string(data_dir.join("admin-token"))
            .map(|s| s.trim().to_owned())
            .context("this data directory has an admin token hash but no admin-token file; start with a fresh --data-dir")?,
    };
    let ca = runplane_node::tls::development_ca(&data_dir);
    let client = if tls { Client::with_ca(&base, admin_token.clone(), &ca)? } else { Client::new(&base, admin_token.clone()) };
    let curl = if tls { format!("curl --cacert {}", ca.display()) } else { "curl".to_owned() };

    let existing: Vec<String> = client
        .call(Method::GET, "/v1/tenants", None)
        .await?
        .get("items")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|t| t["id"].as_str().map(str::to_owned)).collect())
        .unwrap_or_default();
    let mut keys = BTreeMap::new();
    for (id, mode) in DEMO_TENANTS {
        let created = if existing.iter().any(|e| e == id) {
            client.call(Method::POST, &format!("/v1/tenants/{id}/keys"), None).await?
        } else {
            client.call(Method::POST, "/v1/tenants", Some(json!({"id": id, "mode": mode.as_str()}))).await?
        };
        let key = created["api_key"].as_str().context("the node returned no api_key")?.to_owned();
        client
            .call(Method::PUT, &format!("/v1/tenants/{id}/secrets/webhook-signing-key"), Some(json!({"value": format!("demo-signing-key-{id}")})))
            .await?;
        keys.insert(id.to_string(), key);
    }
    // Build metadata from the digest: a rebuilt example gets a new immutable version
    // instead of colliding with the one already in this data directory.
    let orders_version = format!("1.0.0+{}", &runplane_cjson::sha256_hex(runplane_examples::ORDERS)[..12]);
    client.push("orders", &orders_version, runplane_examples::ORDERS.to_vec()).await?;
    client
        .call(
            Method::POST,
            "/v1/deployments",
            Some(json!({"capability": "orders", "version": orders_version, "subscriptions": ["order.created"], "allow_hosts": ["127.0.0.1"]})),
        )
        .await?;

    let creds = json!({"admin_token": admin_token, "tenants": keys});
    let creds_path = data_dir.join("demo-credentials.json");
    runplane_node::write_private(&creds_path, serde_json::to_string_pretty(&creds)?.as_bytes())
        .with_context(|| format!("cannot write {}", creds_path.display()))?;

    let acme = &keys["acme"];
    println!(
        "\nRunplane is up at {base}\n\
         \n  credentials   {creds}  (admin token and one API key per demo tenant; mode 0600)\
         \n  tenants       acme, globex (shared), initech (dedicated)\
         \n  capability    orders@{orders_version} on /apps/orders/\
         \n  admin API     {base}/v1/   (OpenAPI: {base}/v1/openapi.json)\
         \n  health        {base}/healthz   metrics: {base}/metrics{tls_line}\
         \n\nTry it:\
         \n  {curl} -s -X POST {base}/apps/orders/orders -H 'Authorization: Bearer {acme}' -H 'content-type: application/json' -d '{{\"item\":\"tea\",\"quantity\":2}}'\
         \n  {curl} -s {base}/apps/orders/orders -H 'Authorization: Bearer {acme}'\
         \n\nPress Ctrl-C to stop.",
        creds = creds_path.display(),
        tls_line = if tls { format!("\n  TLS           development CA {} (trust it: curl --cacert, RUNPLANE_CA_FILE)", ca.display()) } else { String::new() },
    );
    crate::shutdown_signal().await;
    running.drain().await;
    Ok(())
}
