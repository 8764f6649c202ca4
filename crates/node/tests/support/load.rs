//! The bundled example under concurrent load, on every messaging binding: 32 clients
//! creating orders for one free-tier tenant (8 concurrent tasks) for 10 s get no error
//! answer, and every order's `order.created` message is handled by each subscribed
//! route. A publisher holds one of its tenant's places while it publishes; the
//! subscriber needs one of the same places to run, so a publish that waited for the
//! subscriber would deadlock against admission (issue 15).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use reqwest::Method;
use runplane_adapters::testing;
use runplane_node::config::{Backend, Bindings};
use runplane_node::{Mode, NodeConfig};
use serde_json::json;

use super::TestNode;

const CLIENTS: usize = 32;
const LOAD: Duration = Duration::from_secs(10);
/// The routes `orders` is deployed on, each subscribed to `order.created`.
const ROUTES: [&str; 2] = ["orders", "orders-ledger"];

/// Runs the load against a node tuned by `bind`; `exact` when the bus delivers exactly
/// once (in process), otherwise at least once.
async fn orders_under_load(bind: impl FnOnce(&mut NodeConfig), exact: bool) {
    let node = TestNode::start(bind).await;
    let key = node.tenant("acme", Mode::Shared).await;
    let (s, body) = node.admin(Method::GET, "/v1/tenants/acme/quota", None).await;
    assert!(s.is_success(), "{body}");
    assert_eq!(body["quota"]["max_concurrent_tasks"], json!(8), "acme is on the free tier: {body}");
    node.admin(Method::PUT, "/v1/tenants/acme/secrets/webhook-signing-key", Some(json!({"value": "k"}))).await;
    let (s, body) = node.push("orders", "1.0.0", runplane_examples::ORDERS).await;
    assert!(s.is_success(), "{body}");
    for route in ROUTES {
        let (s, body) = node
            .admin(Method::POST, "/v1/deployments", Some(json!({"capability": "orders", "version": "1.0.0", "route": route, "subscriptions": ["order.created"]})))
            .await;
        assert!(s.is_success(), "deploy on {route}: {body}");
    }

    let url = node.url("/apps/orders/orders");
    let deadline = Instant::now() + LOAD;
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (http, url, key) = (node.http.clone(), url.clone(), key.clone());
            tokio::spawn(async move {
                let mut answers: BTreeMap<u16, (u64, String)> = BTreeMap::new();
                while Instant::now() < deadline {
                    let resp = http.post(&url).bearer_auth(&key).json(&json!({"item": "tea", "quantity": 2})).send().await;
                    let (status, text) = match resp {
                        Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
                        Err(e) => (0, e.to_string()),
                    };
                    let entry = answers.entry(status).or_insert((0, text));
                    entry.0 += 1;
                }
                answers
            })
        })
        .collect();
    let mut answers: BTreeMap<u16, (u64, String)> = BTreeMap::new();
    for c in clients {
        for (status, (n, example)) in c.await.expect("client task") {
            answers.entry(status).or_insert((0, example)).0 += n;
        }
    }
    let created = answers.get(&201).map_or(0, |a| a.0);
    let refused: Vec<_> = answers.iter().filter(|(s, _)| **s != 201).collect();
    assert!(refused.is_empty(), "every create must succeed; {created} did, these did not: {refused:?}");
    eprintln!("{created} orders created by {CLIENTS} clients in {LOAD:?} ({:.0}/s)", created as f64 / LOAD.as_secs_f64());
    assert!(created > 100, "only {created} orders in {LOAD:?}");

    // Every message handled by each route: the audit log has one `invoke.message` per
    // delivery, its target the route; wait for the backlog to drain.
    let drained = Instant::now() + Duration::from_secs(120);
    loop {
        let handled = message_events(&node).await;
        let done = ROUTES.iter().all(|r| handled.get(*r).is_some_and(|h| h.ok >= created));
        if done || Instant::now() > drained {
            for route in ROUTES {
                let h = handled.get(route).cloned().unwrap_or_default();
                assert_eq!(h.failed, 0, "deliveries to {route} failed: {h:?}");
                assert!(h.ok >= created, "{route} handled {} of {created} messages: {h:?}", h.ok);
                if exact {
                    assert_eq!(h.ok, created, "the in-process broker delivers each message once to {route}");
                }
            }
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let (_, stats) = node.app(&key, Method::GET, "/apps/orders/stats", None).await;
    assert_eq!(stats["orders_created"], json!(created), "{stats}");
    let notified = stats["notifications"].as_u64().unwrap_or(0);
    assert!(notified >= 2 * created, "both routes' handlers counted: {notified} of {}", 2 * created);
}

#[derive(Debug, Default, Clone)]
struct Handled {
    ok: u64,
    failed: u64,
}

/// `invoke.message` events of acme's log, per route.
async fn message_events(node: &TestNode) -> BTreeMap<String, Handled> {
    let mut out: BTreeMap<String, Handled> = BTreeMap::new();
    let mut from = 0u64;
    loop {
        let (s, page) = node.admin(Method::GET, &format!("/v1/audit/events?log=tenant:acme&cursor={from}&limit=1000"), None).await;
        assert!(s.is_success(), "{page}");
        let items = page["items"].as_array().cloned().unwrap_or_default();
        for item in &items {
            let event = &item["event"];
            if event["action"] != json!("invoke.message") {
                continue;
            }
            let route = event["target"].as_str().unwrap_or_default().to_owned();
            let h = out.entry(route).or_default();
            if event["outcome"]["status"] == json!("ok") { h.ok += 1 } else { h.failed += 1 }
        }
        match page["next_cursor"].as_u64() {
            Some(next) if !items.is_empty() => from = next,
            _ => break,
        }
    }
    out
}

fn messaging_on(config: &mut NodeConfig, name: &str, backend: Backend, sql: Option<(&str, Backend)>) {
    config.backends.insert(name.to_owned(), backend);
    let mut bindings = Bindings { messaging: name.into(), ..Bindings::default() };
    if let Some((sql_name, sql_backend)) = sql {
        config.backends.insert(sql_name.to_owned(), sql_backend);
        bindings.records = sql_name.into();
        bindings.kv = sql_name.into();
        bindings.events = sql_name.into();
        bindings.secrets = sql_name.into();
    }
    config.bindings = bindings;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_under_load_on_the_in_process_broker_lose_nothing_and_refuse_nothing() {
    orders_under_load(|_| {}, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_under_load_on_nats_and_postgres_lose_nothing_and_refuse_nothing() {
    let (nats, pg) = (testing::nats_url(), testing::postgres_url());
    if !(testing::service_up("NATS", &nats).await && testing::service_up("PostgreSQL", &pg).await) {
        return;
    }
    let nats_backend = Backend::Nats { url: nats, prefix: testing::unique_name("rp_load"), max_age_secs: 600, max_bytes: 256 << 20 };
    let db = testing::unique_name("rp_load");
    let pg_backend = super::backends::postgres_backend(&db, &pg, None);
    orders_under_load(|c| messaging_on(c, "nats", nats_backend, Some(("pg", pg_backend))), false).await;
    super::backends::drop_postgres(&pg, &[db]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_under_load_on_rabbitmq_and_mariadb_lose_nothing_and_refuse_nothing() {
    let (amqp, my) = (testing::amqp_url(), testing::mysql_url());
    if !(testing::service_up("RabbitMQ", &amqp).await && testing::service_up("MariaDB", &my).await) {
        return;
    }
    let amqp_backend = Backend::RabbitMq { url: amqp, prefix: testing::unique_name("rp_load") };
    let db = testing::unique_name("rp_load");
    let my_backend = Backend::MySql { url: my.clone(), database: db.clone(), max_connections: 8 };
    orders_under_load(|c| messaging_on(c, "rabbit", amqp_backend, Some(("maria", my_backend))), false).await;
    super::backends::drop_mysql(&my, &[db]).await;
}
