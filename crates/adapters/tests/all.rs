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

    /// Row-level security holds for the runtime role on its own: no tenant set sees and
    /// writes nothing; tenant A set reaches no row of tenant B; a pooled connection
    /// reused across tenants carries no setting over.
    #[tokio::test]
    async fn postgres_row_level_security_holds_for_the_runtime_role() {
        use runplane_ports::{RecordStore, TenantId};
        use sqlx::postgres::PgPoolOptions;
        let Some((settings, store)) = fresh().await else { return };
        let (a, b) = (TenantId::new("tenant-a").expect("id"), TenantId::new("tenant-b").expect("id"));
        store.put(&a, "c", "a1", r#"{"v":1}"#, None).await.expect("put a");
        store.put(&b, "c", "b1", r#"{"v":2}"#, None).await.expect("put b");

        // The role the node connects as: not superuser, no BYPASSRLS, owns nothing.
        let runtime = settings.admin.clone().database(&settings.database).username(&settings.runtime_role);
        let pool = PgPoolOptions::new().max_connections(1).connect_with(runtime).await.expect("connect as runtime role");
        let (sup, bypass): (bool, bool) = sqlx::query_as("SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user")
            .fetch_one(&pool)
            .await
            .expect("role");
        assert!(!sup && !bypass, "the runtime role must not bypass row-level security");
        let owned: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_tables WHERE schemaname = 'public' AND tableowner = current_user")
            .fetch_one(&pool)
            .await
            .expect("owner");
        assert_eq!(owned, 0, "the runtime role owns no table");

        // No tenant set: nothing is visible or writable.
        for table in ["records", "kv", "events", "secrets"] {
            let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}"))).fetch_one(&pool).await.expect("count");
            assert_eq!(n, 0, "{table}: rows visible with no tenant set");
        }
        let insert = "INSERT INTO records (tenant_id, collection, id, revision, body) VALUES ($1, 'c', 'x', 1, '{}')";
        assert!(sqlx::query(insert).bind("tenant-b").execute(&pool).await.is_err(), "an insert with no tenant set is refused");

        // Tenant A set: tenant B's rows cannot be read, changed, deleted or added to.
        let mut tx = pool.begin().await.expect("begin");
        sqlx::query("SELECT set_config('runplane.tenant', 'tenant-a', true)").execute(&mut *tx).await.expect("set tenant");
        let seen: Vec<String> = sqlx::query_scalar("SELECT id FROM records").fetch_all(&mut *tx).await.expect("select");
        assert_eq!(seen, ["a1"], "tenant a sees only its own rows");
        let b_rows: i64 = sqlx::query_scalar("SELECT count(*) FROM records WHERE tenant_id = 'tenant-b'").fetch_one(&mut *tx).await.expect("count");
        assert_eq!(b_rows, 0);
        let updated = sqlx::query("UPDATE records SET body = '{\"pwned\":true}' WHERE tenant_id = 'tenant-b'").execute(&mut *tx).await.expect("update");
        assert_eq!(updated.rows_affected(), 0, "tenant a cannot change b's rows");
        let deleted = sqlx::query("DELETE FROM records WHERE tenant_id = 'tenant-b'").execute(&mut *tx).await.expect("delete");
        assert_eq!(deleted.rows_affected(), 0, "tenant a cannot delete b's rows");
        tx.commit().await.expect("commit");
        let mut tx = pool.begin().await.expect("begin");
        sqlx::query("SELECT set_config('runplane.tenant', 'tenant-a', true)").execute(&mut *tx).await.expect("set tenant");
        assert!(sqlx::query(insert).bind("tenant-b").execute(&mut *tx).await.is_err(), "tenant a cannot write a row of tenant b");
        drop(tx);

        // The same (only) pooled connection, after tenant a's transaction: no setting left.
        let left: Option<String> = sqlx::query_scalar("SELECT NULLIF(current_setting('runplane.tenant', true), '')").fetch_one(&pool).await.expect("setting");
        assert_eq!(left, None, "a pooled connection carries no tenant into the next transaction");
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM records").fetch_one(&pool).await.expect("count");
        assert_eq!(n, 0);

        // Through the store with a single pooled connection, alternating tenants.
        let one = PgStore::connect_lazy(&PgSettings { max_connections: 1, ..settings.clone() });
        for _ in 0..3 {
            assert!(one.get(&a, "c", "b1").await.expect("get").is_none());
            assert!(one.get(&b, "c", "b1").await.expect("get").is_some());
            assert!(one.get(&b, "c", "a1").await.expect("get").is_none());
            let left: Option<String> = sqlx::query_scalar("SELECT NULLIF(current_setting('runplane.tenant', true), '')")
                .fetch_one(one.pool())
                .await
                .expect("setting");
            assert_eq!(left, None, "a read leaves no tenant on its pooled connection");
        }
        b_is_intact(&store, &b).await;
        pool.close().await;
        store.pool().close().await;
        one.pool().close().await;
        drop_db(&settings).await;
    }

    async fn b_is_intact(store: &PgStore, b: &runplane_ports::TenantId) {
        use runplane_ports::RecordStore;
        let r = store.get(b, "c", "b1").await.expect("get").expect("b's record exists");
        assert_eq!(r.body, r#"{"v":2}"#, "b's record is unchanged");
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
        // Three nodes provisioning one fresh database at once: its migrations run once.
        let (a, b, c) = tokio::join!(provision(&settings), provision(&settings), provision(&settings));
        for r in [a, b, c] {
            r.expect("provision a test database");
        }
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
