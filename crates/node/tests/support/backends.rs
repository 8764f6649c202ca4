//! The node on real backends: the same workload gives the same bytes on SQLite,
//! PostgreSQL and MariaDB in both modes; a PostgreSQL outage hurts only the tenants
//! bound to it; messaging bound per tenant (NATS, RabbitMQ) delivers each tenant's
//! messages from its own broker only; no connection string or password is ever logged.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use runplane_adapters::testing;
use runplane_node::config::{Backend, Bindings};
use runplane_node::entropy::Entropy;
use runplane_node::{Mode, Node, NodeConfig};
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};

use super::{ADMIN, TestNode, TickClock, captured_logs};

/// Binds the four SQL ports of every tenant to `name`.
fn bind_sql(config: &mut NodeConfig, name: &str, backend: Backend) {
    config.backends.insert(name.to_owned(), backend);
    config.bindings = Bindings {
        records: name.into(),
        kv: name.into(),
        events: name.into(),
        secrets: name.into(),
        ..Bindings::default()
    };
}

/// One response, as bytes.
type Exchange = (String, u16, Vec<u8>);

/// Who answers the workload: one node, or several of one instance in turn. Admin calls
/// go to the first, and each admin change is awaited on every node before traffic goes
/// on; with a [`TickClock`] the clock advances 1 ms before each call.
struct Nodes<'a> {
    all: Vec<&'a TestNode>,
    clock: Option<&'a TickClock>,
    control: Option<&'a runplane_control::ControlStore>,
}

impl<'a> Nodes<'a> {
    fn one(node: &'a TestNode) -> Self {
        Nodes { all: vec![node], clock: None, control: None }
    }

    fn admin(&self) -> &'a TestNode {
        self.all[0]
    }

    /// The node for the `n`th call, after the clock's tick.
    fn turn(&self, n: usize) -> &'a TestNode {
        if let Some(c) = self.clock {
            c.tick();
        }
        self.all[n % self.all.len()]
    }

    /// Waits until every node has applied the control store's head.
    async fn converge(&self) {
        let Some(control) = self.control else { return };
        let head = control.head().await.expect("control head");
        let started = Instant::now();
        for node in &self.all {
            loop {
                let ready: Value = node.http.get(node.url("/readyz")).send().await.expect("readyz").json().await.expect("json");
                if ready["control_revision"].as_u64().is_some_and(|r| r >= head) {
                    break;
                }
                assert!(started.elapsed() < Duration::from_secs(10), "a node did not reach revision {head}: {ready}");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    }
}

async fn call(nodes: &Nodes<'_>, key: &str, method: Method, path: &str, body: Option<Value>, log: &mut Vec<Exchange>) -> Value {
    let node = nodes.turn(log.len());
    let mut req = node.http.request(method.clone(), node.url(path)).bearer_auth(key);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    let bytes = resp.bytes().await.expect("body").to_vec();
    let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    log.push((format!("{method} {path}"), status, bytes));
    value
}

/// The scripted workload: creates, reads, lists, updates, deletes, events, blobs,
/// counters and error answers, for one shared and one dedicated tenant.
async fn workload(nodes: &Nodes<'_>) -> (Vec<Exchange>, BTreeMap<String, Vec<String>>) {
    let node = nodes.admin();
    let mut log = Vec::new();
    let mut keys = Vec::new();
    for (tenant, mode) in [("acme", Mode::Shared), ("initech", Mode::Dedicated)] {
        keys.push((tenant, node.tenant(tenant, mode).await));
        let (s, _) = node
            .admin(Method::PUT, &format!("/v1/tenants/{tenant}/secrets/webhook-signing-key"), Some(json!({"value": "k"})))
            .await;
        assert_eq!(s, StatusCode::OK);
    }
    node.deploy("orders", runplane_examples::ORDERS, "orders", &[]).await;
    nodes.converge().await;
    for (_, key) in &keys {
        let mut ids = Vec::new();
        for (item, quantity) in [("tea", 2), ("Zürich chocolate 🍫", 1), ("coffee", 12)] {
            let order = call(nodes, key, Method::POST, "/apps/orders/orders", Some(json!({"item": item, "quantity": quantity})), &mut log).await;
            ids.push(order["id"].as_str().expect("order id").to_owned());
        }
        call(nodes, key, Method::GET, &format!("/apps/orders/orders/{}", ids[0]), None, &mut log).await;
        call(nodes, key, Method::GET, "/apps/orders/orders", None, &mut log).await;
        call(nodes, key, Method::GET, "/apps/orders/orders?limit=1", None, &mut log).await;
        call(nodes, key, Method::PUT, &format!("/apps/orders/orders/{}", ids[1]), Some(json!({"item": "matcha", "quantity": 3})), &mut log).await;
        call(nodes, key, Method::DELETE, &format!("/apps/orders/orders/{}", ids[2]), None, &mut log).await;
        call(nodes, key, Method::GET, &format!("/apps/orders/orders/{}", ids[2]), None, &mut log).await;
        call(nodes, key, Method::GET, &format!("/apps/orders/orders/{}/invoice", ids[0]), None, &mut log).await;
        call(nodes, key, Method::GET, "/apps/orders/events", None, &mut log).await;
        call(nodes, key, Method::GET, "/apps/orders/stats", None, &mut log).await;
        call(nodes, key, Method::POST, "/apps/orders/orders", Some(json!({"item": ""})), &mut log).await;
    }
    let mut hashes = BTreeMap::new();
    let reader = nodes.all[nodes.all.len() - 1];
    for log_id in ["admin", "tenant:acme", "tenant:initech"] {
        let (s, page) = reader.admin(Method::GET, &format!("/v1/audit/events?log={log_id}&limit=1000"), None).await;
        assert_eq!(s, StatusCode::OK, "{page}");
        let items = page["items"].as_array().expect("items");
        hashes.insert(log_id.to_owned(), items.iter().map(|e| e["event_hash"].as_str().expect("hash").to_owned()).collect());
    }
    (log, hashes)
}

/// Rows in `records` of the database at `url` (as its owner; a superuser bypasses RLS).
async fn rows_in(url: &str) -> i64 {
    const COUNT: &str = "SELECT COUNT(*) FROM records";
    if url.starts_with("postgres") {
        let pool = sqlx::postgres::PgPoolOptions::new().max_connections(1).connect(url).await.expect("connect to count rows");
        sqlx::query_scalar::<_, i64>(COUNT).fetch_one(&pool).await.expect("count")
    } else {
        let pool = sqlx::mysql::MySqlPoolOptions::new().max_connections(1).connect(url).await.expect("connect to count rows");
        sqlx::query_scalar::<_, i64>(COUNT).fetch_one(&pool).await.expect("count")
    }
}

pub(super) fn postgres_backend(database: &str, url: &str, runtime_password: Option<&str>) -> Backend {
    Backend::Postgres {
        url: url.to_owned(),
        database: database.to_owned(),
        runtime_role: "runplane_test_runtime".into(),
        runtime_password: runtime_password.map(str::to_owned),
        max_connections: 4,
    }
}

pub(super) async fn drop_postgres(url: &str, databases: &[String]) {
    use sqlx::{ConnectOptions, Connection};
    let Ok(options) = url.parse::<sqlx::postgres::PgConnectOptions>() else { return };
    let Ok(mut conn) = options.connect().await else { return };
    for db in databases {
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS \"{db}\" WITH (FORCE)"))).execute(&mut conn).await;
    }
    let _ = conn.close().await;
}

pub(super) async fn drop_mysql(url: &str, databases: &[String]) {
    use sqlx::{ConnectOptions, Connection};
    let Ok(options) = url.parse::<sqlx::mysql::MySqlConnectOptions>() else { return };
    let Ok(mut conn) = options.connect().await else { return };
    for db in databases {
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS `{db}`"))).execute(&mut conn).await;
    }
    let _ = conn.close().await;
}

#[tokio::test]
async fn same_binary_same_bytes_on_every_sql_backend_and_mode() {
    let pg_url = testing::postgres_url();
    let my_url = testing::mysql_url();
    let s3 = testing::s3_endpoint();
    let (pg_up, my_up, s3_up) = (
        testing::service_up("PostgreSQL", &pg_url).await,
        testing::service_up("MariaDB/MySQL", &my_url).await,
        testing::service_up("S3-compatible server (moto)", &s3).await,
    );
    const SEED: u64 = 0x5eed;

    let reference = TestNode::start_with(|_| {}, Some(SEED)).await;
    let (expected_log, expected_hashes) = workload(&Nodes::one(&reference)).await;
    assert!(expected_log.iter().any(|(_, s, _)| *s == 201) && expected_log.iter().any(|(_, s, _)| *s == 404));
    assert_eq!(expected_hashes["tenant:acme"].len(), expected_log.len() / 2, "one audit event per invocation");

    let compare = |name: &str, log: &[Exchange], hashes: &BTreeMap<String, Vec<String>>| {
        assert_eq!(log.len(), expected_log.len(), "{name}: same number of exchanges");
        for (got, want) in log.iter().zip(&expected_log) {
            assert_eq!(
                got,
                want,
                "{name}: {} answered differently from SQLite:\n  got  {} {}\n  want {} {}",
                want.0,
                got.1,
                String::from_utf8_lossy(&got.2),
                want.1,
                String::from_utf8_lossy(&want.2)
            );
        }
        assert_eq!(hashes, &expected_hashes, "{name}: audit event hashes differ from SQLite's");
    };

    if pg_up {
        let db = testing::unique_name("rp_same");
        let node = TestNode::start_with(|c| bind_sql(c, "pg", postgres_backend(&db, &pg_url, None)), Some(SEED)).await;
        let (log, hashes) = workload(&Nodes::one(&node)).await;
        compare("PostgreSQL", &log, &hashes);
        for database in [db.clone(), format!("{db}_t_initech")] {
            assert!(rows_in(&format!("{}/{database}", pg_url.rsplit_once('/').map_or(pg_url.as_str(), |(b, _)| b))).await > 0, "{database} holds the records");
        }
        drop(node);
        drop_postgres(&pg_url, &[db.clone(), format!("{db}_t_initech")]).await;
    }
    if my_up {
        let db = testing::unique_name("rp_same");
        let backend = Backend::MySql { url: my_url.clone(), database: db.clone(), max_connections: 4 };
        let node = TestNode::start_with(|c| bind_sql(c, "maria", backend), Some(SEED)).await;
        let (log, hashes) = workload(&Nodes::one(&node)).await;
        compare("MariaDB", &log, &hashes);
        for database in [db.clone(), format!("{db}_t_initech")] {
            assert!(rows_in(&format!("{}/{database}", my_url.rsplit_once('/').map_or(my_url.as_str(), |(b, _)| b))).await > 0, "{database} holds the records");
        }
        drop(node);
        drop_mysql(&my_url, &[db.clone(), format!("{db}_t_initech")]).await;
    }
    if s3_up {
        let bucket = testing::unique_name("rp-same").replace('_', "-");
        testing::create_s3_bucket(&s3, &bucket).await;
        let backend = Backend::S3 {
            bucket,
            region: "us-east-1".into(),
            endpoint: Some(s3.clone()),
            access_key_id: Some("test".into()),
            secret_access_key: Some("test".into()),
            prefix: None,
        };
        let node = TestNode::start_with(
            |c| {
                c.backends.insert("s3".into(), backend);
                c.bindings.blobs = "s3".into();
            },
            Some(SEED),
        )
        .await;
        let (log, hashes) = workload(&Nodes::one(&node)).await;
        compare("S3 blobs", &log, &hashes);
    }
}

/// One instance's shared infrastructure for in-process nodes: control state, audit
/// and records on one PostgreSQL database, messaging on NATS, blobs on the S3 test
/// server, and one set of key files.
pub(super) struct SharedInstance {
    dir: tempfile::TempDir,
    database: String,
    prefix: String,
    bucket: String,
}

impl SharedInstance {
    pub(super) async fn new() -> Self {
        let bucket = testing::unique_name("rp-scale").replace('_', "-");
        testing::create_s3_bucket(&testing::s3_endpoint(), &bucket).await;
        SharedInstance { dir: tempfile::tempdir().expect("tempdir"), database: testing::unique_name("rp_scale"), prefix: testing::unique_name("rps"), bucket }
    }

    /// Starts node `id` of the instance, configured as an operator would (the config
    /// passes the shared-store checks), on `clock` and `entropy`; `extra` is appended.
    pub(super) async fn start(&self, id: &str, clock: Arc<dyn runplane_node::Clock>, entropy: Entropy, extra: &str) -> TestNode {
        let data = tempfile::tempdir().expect("tempdir");
        let keys = self.dir.path();
        let text = format!(
            r#"[node]
id = "{id}"
listen = "127.0.0.1:0"
data_dir = {data:?}
admin_token = "{ADMIN}"

[backends.db]
kind = "postgres"
url = "{pg}"
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
{extra}
"#,
            data = data.path().display().to_string(),
            pg = testing::postgres_url(),
            database = self.database,
            nats = testing::nats_url(),
            prefix = self.prefix,
            bucket = self.bucket,
            s3 = testing::s3_endpoint(),
            audit_key = keys.join("instance.key").display().to_string(),
            token_key = keys.join("token.key").display().to_string(),
            kek = keys.join("secrets.kek").display().to_string(),
        );
        let config = NodeConfig::parse(&text, |_| None).unwrap_or_else(|problems| panic!("the instance's config: {problems:?}"));
        let running = Node::start_with(config, clock, entropy).await.expect("node starts");
        TestNode { running, _dir: data, http: reqwest::Client::new() }
    }

    pub(super) async fn control(&self) -> runplane_control::ControlStore {
        let home = runplane_control::Home::Postgres { url: testing::postgres_url(), database: self.database.clone() };
        runplane_control::ControlStore::open(&home, self.dir.path(), Duration::from_secs(5)).await.expect("open the control store")
    }

    pub(super) async fn remove(self) {
        drop_postgres(&testing::postgres_url(), &[self.database.clone(), format!("{}_t_initech", self.database)]).await;
    }
}

/// Scaling never changes results (S0-IX): with the same injected clock and entropy, the
/// workload sent to three nodes of one instance in turn gives the same responses, byte
/// for byte, and the same audit leaves as sent to one node of such an instance.
#[tokio::test]
async fn three_nodes_give_the_same_responses_and_audit_leaves_as_one() {
    if !testing::service_up("PostgreSQL", &testing::postgres_url()).await
        || !testing::service_up("NATS", &testing::nats_url()).await
        || !testing::service_up("S3-compatible server (moto)", &testing::s3_endpoint()).await
    {
        return;
    }
    const SEED: u64 = 0x5ca1e;
    let mut runs = Vec::new();
    for size in [1, 3] {
        let instance = SharedInstance::new().await;
        let (clock, entropy) = (Arc::new(TickClock::default()), Entropy::seeded(SEED));
        let mut nodes = Vec::new();
        for n in 0..size {
            nodes.push(instance.start(&format!("node-{n}"), clock.clone(), entropy.clone(), "").await);
        }
        let control = instance.control().await;
        let run = workload(&Nodes { all: nodes.iter().collect(), clock: Some(&clock), control: Some(&control) }).await;
        drop(nodes);
        instance.remove().await;
        runs.push(run);
    }
    let (one, three) = (&runs[0], &runs[1]);
    assert!(one.0.iter().any(|(_, s, _)| *s == 201) && one.0.iter().any(|(_, s, _)| *s == 404), "the workload creates and misses");
    assert_eq!(one.0.len(), three.0.len());
    for (got, want) in three.0.iter().zip(&one.0) {
        assert_eq!(got, want, "{} answered differently through three nodes:\n  got  {} {}\n  want {} {}", want.0, got.1, String::from_utf8_lossy(&got.2), want.1, String::from_utf8_lossy(&want.2));
    }
    assert_eq!(three.1, one.1, "the audit leaves differ between one node and three");
    assert_eq!(one.1["tenant:acme"].len(), one.0.len() / 2, "one audit event per invocation");
}

/// A TCP proxy in front of PostgreSQL that the test can cut: cutting closes every
/// proxied connection and leaves new ones hanging (a dead network, not a refusal).
struct Proxy {
    addr: std::net::SocketAddr,
    cut: std::sync::Arc<AtomicBool>,
    epoch: std::sync::Arc<tokio::sync::watch::Sender<u64>>,
}

impl Proxy {
    async fn start(upstream: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("addr");
        let cut = std::sync::Arc::new(AtomicBool::new(false));
        let (epoch, _) = tokio::sync::watch::channel(0u64);
        let epoch = std::sync::Arc::new(epoch);
        let (c, e) = (cut.clone(), epoch.clone());
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let (cut, mut closed) = (c.clone(), e.subscribe());
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    if cut.load(Ordering::SeqCst) {
                        // Hold the socket open and say nothing until the test ends.
                        let _ = closed.changed().await;
                        tokio::time::sleep(Duration::from_secs(3600)).await;
                        return;
                    }
                    let Ok(mut server) = TcpStream::connect(&upstream).await else { return };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = closed.changed() => {}
                    }
                });
            }
        });
        Proxy { addr, cut, epoch }
    }

    fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        self.epoch.send_modify(|e| *e += 1);
    }

    fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

#[tokio::test]
async fn a_postgres_outage_gives_503s_to_its_tenants_only_and_heals_without_restart() {
    let logs = captured_logs();
    let pg_url = testing::postgres_url();
    if !testing::service_up("PostgreSQL", &pg_url).await {
        return;
    }
    let upstream = pg_url.split('@').nth(1).and_then(|r| r.split('/').next()).unwrap_or("127.0.0.1:5432").to_owned();
    let proxy = Proxy::start(upstream).await;
    // Trust authentication ignores passwords, so these only have to never be logged.
    let (password, runtime_password) = ("Owner-Pw-d41d8cd98f", "Runtime-Pw-8f00b204e9");
    let url = format!("postgres://postgres:{password}@{}/postgres", proxy.addr);
    let db = testing::unique_name("rp_outage");
    let node = TestNode::start(|c| {
        c.backends.insert("pg".into(), postgres_backend(&db, &url, Some(runtime_password)));
        c.tenant_bindings.insert(
            "pgco".into(),
            Bindings { records: "pg".into(), kv: "pg".into(), events: "pg".into(), secrets: "pg".into(), ..Bindings::default() },
        );
        c.backend_timeout = Duration::from_millis(1000);
    })
    .await;
    let pg_key = node.tenant("pgco", Mode::Shared).await;
    let lite_key = node.tenant("liteco", Mode::Shared).await;
    for t in ["pgco", "liteco"] {
        let (s, body) = node.admin(Method::PUT, &format!("/v1/tenants/{t}/secrets/webhook-signing-key"), Some(json!({"value": "k"}))).await;
        assert_eq!(s, StatusCode::OK, "{body}");
    }
    node.deploy("orders", runplane_examples::ORDERS, "orders", &[]).await;

    let mut acknowledged = Vec::new();
    for i in 0..5 {
        let (s, order) = node.app(&pg_key, Method::POST, "/apps/orders/orders", Some(json!({"item": format!("before-{i}"), "quantity": 1}))).await;
        assert_eq!(s, StatusCode::CREATED, "{order}");
        acknowledged.push(order["id"].as_str().expect("id").to_owned());
    }

    proxy.cut();
    let mut bodies = String::new();
    for i in 0..3 {
        let started = Instant::now();
        let (s, body) = node.app(&pg_key, Method::POST, "/apps/orders/orders", Some(json!({"item": format!("during-{i}"), "quantity": 1}))).await;
        let took = started.elapsed();
        assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "a tenant on the cut database gets 503: {body}");
        assert!(took < Duration::from_secs(5), "the 503 came after {took:?}, past the bound");
        bodies.push_str(&body.to_string());
        let (s, body) = node.app(&lite_key, Method::POST, "/apps/orders/orders", Some(json!({"item": "unaffected", "quantity": 1}))).await;
        assert_eq!(s, StatusCode::CREATED, "the SQLite tenant is unaffected: {body}");
    }

    proxy.restore();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (s, body) = node.app(&pg_key, Method::POST, "/apps/orders/orders", Some(json!({"item": "after", "quantity": 1}))).await;
        if s == StatusCode::CREATED {
            break;
        }
        assert!(Instant::now() < deadline, "no recovery after the database returned: {s} {body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for id in &acknowledged {
        let (s, body) = node.app(&pg_key, Method::GET, &format!("/apps/orders/orders/{id}"), None).await;
        assert_eq!(s, StatusCode::OK, "acknowledged order {id} survived the outage: {body}");
    }

    let (_, tenants) = node.admin(Method::GET, "/v1/tenants", None).await;
    let text = String::from_utf8_lossy(&logs.lock().unwrap_or_else(|p| p.into_inner())).into_owned();
    for leak in [password, runtime_password, url.as_str(), "postgres://"] {
        assert!(!text.contains(leak), "the logs contain {leak:?}");
        assert!(!bodies.contains(leak) && !tenants.to_string().contains(leak), "an API answer contains {leak:?}");
    }
    drop(node);
    drop_postgres(&pg_url, &[db]).await;
    let _ = ADMIN;
}

/// A NATS backend on the test server with a prefix (and so a stream) of its own.
fn nats_backend(prefix: &str) -> Backend {
    Backend::Nats { url: testing::nats_url(), prefix: prefix.to_owned(), max_age_secs: 600, max_bytes: 64 << 20 }
}

/// The bus of `backend`, opened by the test as another publisher would, and a
/// subscription on it in a group of its own: it receives every message that lands there,
/// whoever else consumes them.
async fn observer(backend: &Backend) -> (Box<dyn runplane_ports::MessageBus>, Box<dyn runplane_ports::Subscription>) {
    use runplane_adapters::amqp_bus::{AmqpBus, AmqpSettings};
    use runplane_adapters::nats_bus::{NatsBus, NatsSettings};
    let timeout = Duration::from_secs(5);
    let bus: Box<dyn runplane_ports::MessageBus> = match backend {
        Backend::Nats { url, prefix, max_age_secs, max_bytes } => {
            let bus = NatsBus::connect(NatsSettings {
                url: url.clone(),
                prefix: prefix.clone(),
                timeout,
                max_age: Duration::from_secs(*max_age_secs),
                max_bytes: *max_bytes,
            })
            .await
            .expect("observer connects to NATS");
            Box::new(bus)
        }
        Backend::RabbitMq { url, prefix } => {
            Box::new(AmqpBus::new(AmqpSettings { url: url.clone(), prefix: prefix.clone(), timeout }).expect("observer settings"))
        }
        other => panic!("{other:?} is not a broker"),
    };
    let subscription = bus.subscribe("order.created", "observer").await.expect("observer subscribes");
    (bus, subscription)
}

/// The tenants of the next `count` deliveries (sorted), then checks nothing else arrives.
async fn observed(sub: &mut Box<dyn runplane_ports::Subscription>, count: usize, place: &str) -> Vec<String> {
    let mut tenants = Vec::new();
    for _ in 0..count {
        let delivery = tokio::time::timeout(Duration::from_secs(10), sub.next())
            .await
            .unwrap_or_else(|_| panic!("{place}: only {} of {count} messages arrived: {tenants:?}", tenants.len()))
            .unwrap_or_else(|| panic!("{place}: the observer's subscription ended"));
        tenants.push(delivery.tenant.as_str().to_owned());
        sub.ack().await.expect("observer acks");
    }
    if let Ok(Some(extra)) = tokio::time::timeout(Duration::from_millis(500), sub.next()).await {
        panic!("{place}: an unexpected message for {} arrived after {tenants:?}", extra.tenant.as_str());
    }
    tenants.sort();
    tenants
}

/// Waits until `tenant`'s order handler has counted `want` notifications, failing as
/// soon as it counts more (a message delivered twice or to the wrong tenant).
async fn notifications_settle(node: &TestNode, key: &str, tenant: &str, want: u64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (s, stats) = node.app(key, Method::GET, "/apps/orders/stats", None).await;
        assert_eq!(s, StatusCode::OK, "{tenant}: {stats}");
        let got = stats["notifications"].as_u64().unwrap_or(0);
        assert!(got <= want, "{tenant}'s handler ran {got} times for {want} messages: {stats}");
        if got == want {
            break;
        }
        assert!(Instant::now() < deadline, "{tenant}'s handler ran {got} of {want} times: {stats}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn orders_deployment_with_subscription(node: &TestNode, tenants: &[(&str, Mode)]) -> Vec<String> {
    let mut keys = Vec::new();
    for (tenant, mode) in tenants {
        keys.push(node.tenant(tenant, *mode).await);
        let (s, body) = node.admin(Method::PUT, &format!("/v1/tenants/{tenant}/secrets/webhook-signing-key"), Some(json!({"value": "k"}))).await;
        assert_eq!(s, StatusCode::OK, "{body}");
    }
    node.deploy("orders", runplane_examples::ORDERS, "orders", &["order.created"]).await;
    keys
}

#[tokio::test]
async fn messaging_bound_per_tenant_delivers_each_tenants_messages_from_its_own_broker() {
    let logs = captured_logs();
    let (nats_url, amqp_url) = (testing::nats_url(), testing::amqp_url());
    let (nats_up, amqp_up) = (testing::service_up("NATS", &nats_url).await, testing::service_up("RabbitMQ", &amqp_url).await);
    if !(nats_up && amqp_up) {
        return;
    }
    // alpha: the instance's NATS bus; bravo: RabbitMQ of its own; charlie (dedicated):
    // the same NATS server under a prefix of its own; delta: a broker that is down.
    let shared = nats_backend(&testing::unique_name("rp_shared"));
    let bravo_broker = Backend::RabbitMq { url: amqp_url.clone(), prefix: testing::unique_name("rp_bravo") };
    let charlie_broker = nats_backend(&testing::unique_name("rp_charlie"));
    let dead_password = "Dead-Broker-Pw-5d41402abc";
    let dead_port = TcpListener::bind("127.0.0.1:0").await.expect("bind").local_addr().expect("addr").port();
    let dead_url = format!("amqp://guest:{dead_password}@127.0.0.1:{dead_port}/%2f");
    let dead = Backend::RabbitMq { url: dead_url.clone(), prefix: testing::unique_name("rp_dead") };
    let mut watch = [observer(&shared).await, observer(&bravo_broker).await, observer(&charlie_broker).await];

    let node = TestNode::start(|c| {
        for (name, backend) in [("bus", shared), ("bravo-rabbit", bravo_broker), ("charlie-nats", charlie_broker), ("dead", dead)] {
            c.backends.insert(name.into(), backend);
        }
        c.bindings.messaging = "bus".into();
        for (tenant, bus) in [("bravo", "bravo-rabbit"), ("charlie", "charlie-nats"), ("delta", "dead")] {
            c.tenant_bindings.insert(tenant.into(), Bindings { messaging: bus.into(), ..Bindings::default() });
        }
        c.backend_timeout = Duration::from_millis(1500);
    })
    .await;
    let tenants = [("alpha", Mode::Shared), ("bravo", Mode::Shared), ("charlie", Mode::Dedicated)];
    let keys = orders_deployment_with_subscription(&node, &tenants).await;

    // Provisioning checks the tenant's own bus: delta's broker is down, so delta is not ready.
    let (s, body) = node.admin(Method::POST, "/v1/tenants", Some(json!({"id": "delta"}))).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    let (_, delta) = node.admin(Method::GET, "/v1/tenants/delta", None).await;
    assert_eq!(delta["provisioning"], "failed", "{delta}");
    assert!(delta["provisioning_error"].as_str().is_some_and(|e| e.contains("messaging backend \"dead\"")), "{delta}");

    // Messages for a tenant on a bus it is not bound to (put there by something else
    // using the broker) never reach its handler: bravo's on the shared bus, alpha's on
    // bravo's broker.
    let forged = |tenant: &str| (runplane_ports::TenantId::new(tenant).expect("tenant id"), runplane_ports::Message { payload: b"{}".to_vec(), headers: vec![] });
    for (bus, tenant) in [(0, "bravo"), (1, "alpha")] {
        let (id, message) = forged(tenant);
        watch[bus].0.publish(&id, "order.created", message).await.expect("the test publishes on the broker");
    }

    // Each tenant publishes a different number of orders, so any message delivered to
    // the wrong handler (or twice) changes a count.
    for (i, key) in keys.iter().enumerate() {
        for n in 0..=i {
            let (s, order) = node.app(key, Method::POST, "/apps/orders/orders", Some(json!({"item": format!("item-{n}"), "quantity": 1}))).await;
            assert_eq!(s, StatusCode::CREATED, "{}: {order}", tenants[i].0);
        }
    }
    for (i, key) in keys.iter().enumerate() {
        notifications_settle(&node, key, tenants[i].0, i as u64 + 1).await;
    }
    // The orders' messages landed on the tenant's own broker and nowhere else.
    let expected: [&[&str]; 3] = [&["alpha", "bravo"], &["alpha", "bravo", "bravo"], &["charlie", "charlie", "charlie"]];
    for (i, (_, sub)) in watch.iter_mut().enumerate() {
        let place = format!("{}'s broker", tenants[i].0);
        assert_eq!(observed(sub, expected[i].len(), &place).await, expected[i], "{place}: the tenants of its messages (one forged)");
    }
    for (i, (tenant, _)) in tenants.iter().enumerate() {
        notifications_settle(&node, &keys[i], tenant, i as u64 + 1).await;
        let (_, page) = node.admin(Method::GET, &format!("/v1/audit/events?log=tenant:{tenant}&limit=1000"), None).await;
        let deliveries: Vec<&Value> = page["items"].as_array().expect("items").iter().filter(|e| e["event"]["action"] == "invoke.message").collect();
        assert_eq!(deliveries.len(), i + 1, "{tenant}: one audited delivery per message: {page}");
        assert!(deliveries.iter().all(|e| e["event"]["outcome"]["status"] == "ok" && e["event"]["tenant"] == *tenant), "{deliveries:?}");
    }

    let text = String::from_utf8_lossy(&logs.lock().unwrap_or_else(|p| p.into_inner())).into_owned();
    assert!(text.contains("dropping a message for a tenant bound to another messaging backend"), "the forged messages were dropped loudly");
    for leak in [dead_password, dead_url.as_str(), amqp_url.as_str()] {
        assert!(!text.contains(leak), "the logs contain {leak:?}");
        assert!(!delta.to_string().contains(leak) && !body.to_string().contains(leak), "an API answer contains {leak:?}");
    }
}

#[tokio::test]
async fn a_tenants_broker_away_at_deploy_is_subscribed_when_it_returns() {
    let amqp_url = testing::amqp_url();
    if !testing::service_up("RabbitMQ", &amqp_url).await {
        return;
    }
    let upstream = amqp_url.rsplit('@').next().and_then(|r| r.split('/').next()).unwrap_or("127.0.0.1:5672").to_owned();
    let proxy = Proxy::start(upstream).await;
    let (credentials, vhost) = amqp_url
        .split_once("://")
        .and_then(|(_, rest)| rest.rsplit_once('@'))
        .map(|(user, rest)| (user.to_owned(), rest.split_once('/').map_or("", |(_, v)| v).to_owned()))
        .unwrap_or(("guest:guest".into(), "%2f".into()));
    let flaky = Backend::RabbitMq { url: format!("amqp://{credentials}@{}/{vhost}", proxy.addr), prefix: testing::unique_name("rp_flaky") };
    let node = TestNode::start(|c| {
        c.backends.insert("flaky".into(), flaky);
        c.tenant_bindings.insert("bravo".into(), Bindings { messaging: "flaky".into(), ..Bindings::default() });
        c.backend_timeout = Duration::from_millis(1000);
    })
    .await;
    let bravo = node.tenant("bravo", Mode::Shared).await;
    let alpha = node.tenant("alpha", Mode::Shared).await;
    proxy.cut();
    // The deployment is made while bravo's broker does not answer; alpha (in-process bus)
    // is served and delivered to meanwhile.
    node.deploy("orders", runplane_examples::ORDERS, "orders", &["order.created"]).await;
    let (s, body) = node.app(&alpha, Method::POST, "/apps/orders/orders", Some(json!({"item": "tea", "quantity": 1}))).await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
    notifications_settle(&node, &alpha, "alpha", 1).await;
    let (s, body) = node.app(&bravo, Method::POST, "/apps/orders/orders", Some(json!({"item": "tea", "quantity": 1}))).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "bravo cannot publish while its broker is away: {body}");

    proxy.restore();
    // Without a redeploy, bravo's orders reach its handler once the subscription is back
    // (messages published before its queue existed had nowhere to go).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (s, body) = node.app(&bravo, Method::POST, "/apps/orders/orders", Some(json!({"item": "tea", "quantity": 1}))).await;
        assert!(s == StatusCode::CREATED || s == StatusCode::SERVICE_UNAVAILABLE, "{s} {body}");
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (_, stats) = node.app(&bravo, Method::GET, "/apps/orders/stats", None).await;
        if stats["notifications"].as_u64().unwrap_or(0) >= 1 {
            break;
        }
        assert!(Instant::now() < deadline, "bravo's messages are still not delivered after its broker returned: {stats}");
    }
}

#[tokio::test]
async fn two_nodes_on_one_postgres_keep_one_consistent_log_per_tenant() {
    let url = testing::postgres_url();
    if !testing::service_up("PostgreSQL", &url).await {
        return;
    }
    let db = testing::unique_name("rp_twonode");
    two_nodes_keep_one_consistent_log_per_tenant(postgres_backend(&db, &url, None)).await;
    drop_postgres(&url, &[db]).await;
}

#[tokio::test]
async fn two_nodes_on_one_mariadb_keep_one_consistent_log_per_tenant() {
    let url = testing::mysql_url();
    if !testing::service_up("MariaDB/MySQL", &url).await {
        return;
    }
    let db = testing::unique_name("rp_twonode");
    two_nodes_keep_one_consistent_log_per_tenant(Backend::MySql { url: url.clone(), database: db.clone(), max_connections: 4 }).await;
    drop_mysql(&url, &[db.clone(), format!("{db}_audit")]).await;
}

/// Two nodes of one instance (sharing its key file) bound to the same database, for
/// the tenant's stores and for the audit logs: concurrent invocations on both append to
/// one `tenant:acme` log — dense, unforked, the same signed checkpoint from either node.
async fn two_nodes_keep_one_consistent_log_per_tenant(backend: Backend) {
    let key_dir = tempfile::tempdir().expect("tempdir");
    let key_file = key_dir.path().join("instance.key");
    let tune = |c: &mut NodeConfig| {
        bind_sql(c, "shared-db", backend.clone());
        c.audit_store = Some("shared-db".into());
        c.audit_key_file = Some(key_file.clone());
    };
    let a = TestNode::start(tune).await;
    let b = TestNode::start(tune).await;
    let key_a = a.tenant("acme", Mode::Shared).await;
    let key_b = b.tenant("acme", Mode::Shared).await;
    a.deploy("orders", runplane_examples::ORDERS, "orders", &[]).await;
    b.deploy("orders", runplane_examples::ORDERS, "orders", &[]).await;

    let mut load = Vec::new();
    for (node, key) in [(&a, &key_a), (&b, &key_b)] {
        for w in 0..4 {
            let (http, url, key) = (node.http.clone(), node.url("/apps/orders/orders"), key.clone());
            load.push(tokio::spawn(async move {
                for n in 0..10 {
                    let resp = http.post(&url).bearer_auth(&key).json(&json!({"item": format!("w{w}-{n}"), "quantity": 1})).send().await.expect("post");
                    let status = resp.status();
                    assert_eq!(status, StatusCode::CREATED, "{}", resp.text().await.unwrap_or_default());
                }
            }));
        }
    }
    for l in load {
        l.await.expect("load");
    }

    let (_, ca) = a.admin(Method::GET, "/v1/audit/logs/tenant:acme/checkpoint", None).await;
    let (_, cb) = b.admin(Method::GET, "/v1/audit/logs/tenant:acme/checkpoint", None).await;
    assert!(ca["size"].as_u64().is_some_and(|s| s >= 80), "{ca}");
    assert_eq!(ca["note"], cb["note"], "both nodes sign the same checkpoint of the one log");
    let (_, page) = a.admin(Method::GET, "/v1/audit/logs/tenant:acme/entries?limit=1000", None).await;
    let indexes: Vec<u64> = page["items"].as_array().expect("items").iter().filter_map(|e| e["index"].as_u64()).collect();
    assert_eq!(indexes, (0..indexes.len() as u64).collect::<Vec<_>>(), "dense, no duplicates");
    let nodes: std::collections::BTreeSet<String> = page["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|e| serde_json::from_str::<Value>(e["entry"].as_str()?).ok())
        .filter(|e| e["action"] == "invoke.http")
        .filter_map(|e| e["context"]["invocation_id"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(nodes.len(), 80, "every invocation of both nodes is in the one log");
    for node in [&a, &b] {
        let (s, replay) = node.admin(Method::POST, "/v1/audit/logs/tenant:acme/replay", None).await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(replay["identical"], true, "{replay}");
    }
}

/// A node that cannot reach its shared control store stops vouching for its caches:
/// after `[control] max_staleness_ms` its tenant traffic, admin API and `/readyz` answer
/// 503 saying why (`/livez` stays 200), and it serves again once the store is back.
#[tokio::test]
async fn a_node_cut_off_from_its_shared_control_store_goes_stale_then_recovers() {
    let pg_url = testing::postgres_url();
    if !testing::service_up("PostgreSQL", &pg_url).await {
        return;
    }
    let upstream = pg_url.split('@').nth(1).and_then(|r| r.split('/').next()).unwrap_or("127.0.0.1:5432").to_owned();
    let proxy = Proxy::start(upstream).await;
    let url = format!("postgres://postgres@{}/postgres", proxy.addr);
    let db = testing::unique_name("rp_stale");
    let node = TestNode::start(|c| {
        c.backends.insert("ctl".into(), postgres_backend(&db, &url, None));
        c.control_store = Some("ctl".into());
        c.control.max_staleness = Duration::from_millis(1500);
        c.control.poll = Duration::from_millis(200);
        c.backend_timeout = Duration::from_millis(500);
    })
    .await;
    let key = node.tenant("acme", Mode::Shared).await;
    node.deploy("hello", runplane_examples::HELLO, "hello", &[]).await;
    assert_eq!(node.app(&key, Method::GET, "/apps/hello/", None).await.0, StatusCode::OK);
    let ready: Value = node.http.get(node.url("/readyz")).send().await.expect("readyz").json().await.expect("json");
    assert_eq!(ready["status"], "ready");
    assert!(ready["control_revision"].as_u64().is_some_and(|r| r > 0), "{ready}");

    proxy.cut();
    let cut = Instant::now();
    let body = loop {
        let (s, body) = node.app(&key, Method::GET, "/apps/hello/", None).await;
        if s == StatusCode::SERVICE_UNAVAILABLE {
            break body;
        }
        assert_eq!(s, StatusCode::OK, "{body}");
        assert!(cut.elapsed() < Duration::from_secs(10), "the node kept serving long after it lost its control store");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let stale_after = cut.elapsed();
    assert!(stale_after >= Duration::from_millis(1000), "it served from its caches for about max_staleness first ({stale_after:?})");
    let message = body["error"]["message"].as_str().unwrap_or_default().to_owned();
    assert!(message.contains("cannot vouch for its control state") && message.contains("max_staleness_ms"), "{message}");
    let (s, _) = node.admin(Method::GET, "/v1/tenants", None).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "the admin API refuses too");
    let ready = node.http.get(node.url("/readyz")).send().await.expect("readyz");
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(ready.json::<Value>().await.expect("json")["status"], "stale");
    assert_eq!(node.http.get(node.url("/livez")).send().await.expect("livez").status(), StatusCode::OK);

    proxy.restore();
    let back = Instant::now();
    loop {
        if node.app(&key, Method::GET, "/apps/hello/", None).await.0 == StatusCode::OK {
            break;
        }
        assert!(back.elapsed() < Duration::from_secs(15), "the node did not recover after its control store returned");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(node.http.get(node.url("/readyz")).send().await.expect("readyz").status(), StatusCode::OK);
}
