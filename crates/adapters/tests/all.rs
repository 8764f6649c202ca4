//! The conformance suite run against the embedded adapters.

use runplane_adapters::{conformance, object_blobs::ObjectBlobStore, memory_bus::InProcessBus, sqlite::SqliteStore};

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
    let store = ObjectBlobStore::open(dir.path()).expect("open");
    conformance::blobs(&store).await;
    // Nothing was written outside the root.
    assert!(!dir.path().parent().expect("parent").join("etc").exists());
}

#[tokio::test]
async fn in_process_messaging() {
    conformance::messaging(&InProcessBus::new()).await;
}

mod postgres {
    use std::str::FromStr;
    use std::time::Duration;

    use runplane_adapters::postgres::{PgSettings, PgStore, provision};
    use runplane_adapters::{conformance, testing};
    use sqlx::postgres::PgConnectOptions;

    /// A freshly provisioned database of its own (dropped by the next run's cleanup is
    /// not needed: names are unique and small).
    pub async fn fresh() -> Option<(PgSettings, PgStore)> {
        let url = testing::postgres_url();
        if !testing::service_up("PostgreSQL", &url).await {
            return None;
        }
        let settings = PgSettings {
            admin: PgConnectOptions::from_str(&url).expect("RUNPLANE_TEST_POSTGRES_URL is a PostgreSQL URL"),
            database: testing::unique_name("rp_test"),
            runtime_role: "runplane_test_runtime".into(),
            runtime_password: None,
            timeout: Duration::from_secs(5),
            max_connections: 4,
        };
        provision(&settings).await.expect("provision a test database");
        let store = PgStore::connect_lazy(&settings);
        store.health().await.expect("the runtime role is fit for row-level security");
        Some((settings, store))
    }

    pub async fn drop_db(settings: &PgSettings) {
        use sqlx::{ConnectOptions, Connection};
        let mut conn = settings.admin.connect().await.expect("connect as owner");
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", settings.database)))
            .execute(&mut conn)
            .await;
        let _ = conn.close().await;
    }

    #[tokio::test]
    async fn postgres_conformance() {
        let Some((settings, s)) = fresh().await else { return };
        conformance::records(&s).await;
        conformance::key_value(&s).await;
        conformance::events(&s).await;
        conformance::secrets(&s).await;
        s.pool().close().await;
        drop_db(&settings).await;
    }
}

mod mysql {
    use std::str::FromStr;
    use std::time::Duration;

    use runplane_adapters::mysql::{MySqlSettings, MySqlStore, provision};
    use runplane_adapters::{conformance, testing};
    use sqlx::mysql::MySqlConnectOptions;

    pub async fn fresh() -> Option<(MySqlSettings, MySqlStore)> {
        let url = testing::mysql_url();
        if !testing::service_up("MariaDB/MySQL", &url).await {
            return None;
        }
        let settings = MySqlSettings {
            server: MySqlConnectOptions::from_str(&url).expect("RUNPLANE_TEST_MYSQL_URL is a MySQL URL"),
            database: testing::unique_name("rp_test"),
            timeout: Duration::from_secs(5),
            max_connections: 4,
        };
        provision(&settings).await.expect("provision a test database");
        let store = MySqlStore::connect_lazy(&settings);
        store.health().await.expect("healthy");
        Some((settings, store))
    }

    pub async fn drop_db(settings: &MySqlSettings) {
        use sqlx::{ConnectOptions, Connection};
        let mut conn = settings.server.connect().await.expect("connect");
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS `{}`", settings.database))).execute(&mut conn).await;
        let _ = conn.close().await;
    }

    #[tokio::test]
    async fn mysql_conformance() {
        let Some((settings, s)) = fresh().await else { return };
        conformance::records(&s).await;
        conformance::key_value(&s).await;
        conformance::events(&s).await;
        conformance::secrets(&s).await;
        s.pool().close().await;
        drop_db(&settings).await;
    }
}

mod brokers {
    use std::time::Duration;

    use runplane_adapters::amqp_bus::{AmqpBus, AmqpSettings};
    use runplane_adapters::nats_bus::{NatsBus, NatsSettings};
    use runplane_adapters::{conformance, testing};

    #[tokio::test]
    async fn nats_jetstream_messaging() {
        let url = testing::nats_url();
        if !testing::service_up("NATS", &url).await {
            return;
        }
        let bus = NatsBus::connect(NatsSettings {
            url,
            prefix: testing::unique_name("rpt"),
            timeout: Duration::from_secs(5),
            max_age: Duration::from_secs(600),
            max_bytes: 64 << 20,
        })
        .await
        .expect("connect");
        bus.health().await.expect("stream created");
        conformance::messaging(&bus).await;
    }

    #[tokio::test]
    async fn rabbitmq_messaging() {
        let url = testing::amqp_url();
        if !testing::service_up("RabbitMQ", &url).await {
            return;
        }
        let bus = AmqpBus::new(AmqpSettings { url, prefix: testing::unique_name("rpt"), timeout: Duration::from_secs(5) })
            .expect("settings");
        bus.health().await.expect("broker answers");
        conformance::messaging(&bus).await;
    }
}

#[tokio::test]
async fn s3_blobs() {
    use runplane_adapters::object_blobs::S3Settings;
    use runplane_adapters::testing;
    let endpoint = testing::s3_endpoint();
    if !testing::service_up("S3-compatible server (moto)", &endpoint).await {
        return;
    }
    let bucket = testing::unique_name("rpt").replace('_', "-");
    testing::create_s3_bucket(&endpoint, &bucket).await;
    let store = ObjectBlobStore::open_s3(&S3Settings {
        bucket,
        region: "us-east-1".into(),
        endpoint: Some(endpoint),
        access_key_id: Some("test".into()),
        secret_access_key: Some("test".into()),
        prefix: Some("instance-1".into()),
        timeout: std::time::Duration::from_secs(5),
    })
    .expect("settings");
    store.health().await.expect("reachable");
    conformance::blobs(&store).await;
}
