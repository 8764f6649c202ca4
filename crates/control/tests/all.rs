//! The control store on each home — the embedded SQLite file, PostgreSQL, MariaDB —
//! with several handles on one shared home standing for several nodes: revisions are
//! contiguous and ordered under concurrent writers, refused creates leave no revision,
//! components pushed through one node load on another, leases have one holder at a
//! time with epochs that only grow and a stale epoch's write is refused, notifications
//! arrive and a killed listener says so, and several nodes migrate one fresh store at
//! once.

use std::path::Path;
use std::time::Duration;

use runplane_adapters::testing;
use runplane_control::feed::{Family, Follower, Step};
use runplane_control::lease::Outcome;
use runplane_control::{ControlError, ControlStore, Deployment, Hint, Home, Mode, StoredRollout, Tenant};
use sqlx::Connection;

const TIMEOUT: Duration = Duration::from_secs(5);

/// A fresh shared home of each kind this machine reaches (a new PostgreSQL database,
/// a new MySQL database name), or none when the service is down outside CI.
async fn fresh_homes() -> Vec<(&'static str, Home)> {
    let mut homes = vec![];
    let pg = testing::postgres_url();
    if testing::service_up("PostgreSQL", &pg).await {
        let database = testing::unique_name("rp_control");
        let mut conn = sqlx::PgConnection::connect(&pg).await.expect("connect to PostgreSQL");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {database}"))).execute(&mut conn).await.expect("create database");
        homes.push(("postgres", Home::Postgres { url: pg, database }));
    }
    let my = testing::mysql_url();
    if testing::service_up("MariaDB", &my).await {
        homes.push(("mysql", Home::MySql { url: my, database: testing::unique_name("rp") }));
    }
    homes
}

async fn open(home: &Home, dir: &Path) -> ControlStore {
    ControlStore::open(home, dir, TIMEOUT).await.expect("open the control store")
}

fn tenant(id: &str) -> Tenant {
    Tenant {
        id: id.into(),
        mode: Mode::Shared,
        status: "active".into(),
        tier: "pro".into(),
        created_at: "2026-12-04T00:00:00Z".into(),
        provisioning: "ready".into(),
        provisioning_error: None,
    }
}

/// Every mutation bumps the revision by one and records its family; a refused create
/// leaves none; a follower of the feed reloads exactly the families touched.
async fn revisions_follow_mutations(store: &ControlStore) {
    let start = store.head().await.expect("head");
    assert!(store.insert_tenant(&tenant("acme")).await.expect("insert"));
    assert!(!store.insert_tenant(&tenant("acme")).await.expect("insert again"), "a taken id is refused");
    store.insert_key("hash-1", "key-1", "acme", "2026-12-04T00:00:00Z").await.expect("key");
    store.put_document("flag", "instance/beta", "{}", "2026-12-04T00:00:00Z").await.expect("document");
    let head = store.head().await.expect("head");
    assert_eq!(head, start + 3, "three changes, the refused create left no revision");
    let changes = store.changes(start, head).await.expect("changes");
    let families: Vec<&str> = changes.iter().map(|c| c.family.as_str()).collect();
    assert_eq!(families, ["tenants", "keys", "documents"]);
    assert_eq!(
        Follower::at(start).plan(head, &changes),
        Step::Apply { reload: [Family::Tenants, Family::Keys, Family::Documents].into(), through: head }
    );
    assert!(store.delete_tenant("acme").await.expect("delete"));
    assert!(store.keys().await.expect("keys").is_empty(), "deleting a tenant deletes its keys");
    // Create-if-absent: the second create of one id loses and changes nothing.
    let before = store.head().await.expect("head");
    assert!(store.insert_document("ca.authority", "1", "{\"a\":1}", "2026-12-06T00:00:00Z").await.expect("insert"));
    assert!(!store.insert_document("ca.authority", "1", "{\"a\":2}", "2026-12-06T00:00:00Z").await.expect("insert again"));
    assert_eq!(store.documents("ca.authority").await.expect("documents"), [("1".to_string(), "{\"a\":1}".to_string())]);
    assert_eq!(store.head().await.expect("head"), before + 1, "the refused create left no revision");
}

#[tokio::test]
async fn the_embedded_home_records_revisions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&Home::Embedded, dir.path()).await;
    assert!(!store.is_shared());
    revisions_follow_mutations(&store).await;
    // A restart finds the same revision.
    let head = store.head().await.expect("head");
    drop(store);
    assert_eq!(open(&Home::Embedded, dir.path()).await.head().await.expect("head"), head);
}

#[tokio::test]
async fn shared_homes_behave_as_one_store_for_several_nodes() {
    for (kind, home) in fresh_homes().await {
        eprintln!("-- {kind}");
        // Four nodes start at once on a fresh store: the migrations run once.
        let dirs: Vec<_> = (0..4).map(|_| tempfile::tempdir().expect("tempdir")).collect();
        let stores = futures::future::join_all(dirs.iter().map(|d| ControlStore::open(&home, d.path(), TIMEOUT))).await;
        let stores: Vec<ControlStore> = stores.into_iter().map(|s| s.unwrap_or_else(|e| panic!("{kind}: open: {e}"))).collect();
        let (a, b) = (&stores[0], &stores[1]);
        assert!(a.is_shared());
        revisions_follow_mutations(a).await;

        // Concurrent writers on four nodes: revisions stay contiguous, configuration
        // versions unique.
        let start = a.head().await.expect("head");
        let writes = stores.iter().enumerate().flat_map(|(n, s)| {
            (0..10).map(move |i| async move {
                let row = runplane_control::ConfigVersionRow {
                    version: 0,
                    scope: "environment:default".into(),
                    content: format!("{{\"n\":\"{n}-{i}\"}}"),
                    created_at: "2026-12-04T00:00:00Z".into(),
                    actor: format!("node-{n}"),
                    reason: None,
                    restored_from: None,
                };
                s.insert_config_version(&row).await.expect("config version")
            })
        });
        let mut versions = futures::future::join_all(writes).await;
        versions.sort();
        assert_eq!(versions, (1..=40).collect::<Vec<u64>>(), "{kind}: every append got its own next version");
        let head = a.head().await.expect("head");
        assert_eq!(head, start + 40);
        let changes = b.changes(start, head).await.expect("changes");
        assert_eq!(changes.iter().map(|c| c.revision).collect::<Vec<_>>(), (start + 1..=head).collect::<Vec<_>>(), "{kind}: no gap, in order");

        // Component bytes pushed through one node load on another (and are cached).
        let bytes = b"\0asm not really".to_vec();
        let digest = runplane_cjson::sha256_hex(&bytes);
        a.store_component(&digest, &bytes, "2026-12-04T00:00:00Z").await.expect("store component");
        assert_eq!(b.component(&digest).await.expect("load on the other node"), bytes);
        assert!(dirs[1].path().join("components").join(format!("{digest}.wasm")).exists(), "{kind}: kept in the local cache");
        assert!(matches!(b.component(&"0".repeat(64)).await, Err(ControlError::Unavailable(_))));

        // Leases: one holder; an expired lease goes to the next with the next epoch;
        // the old holder can neither renew nor write under its epoch.
        let ttl = Duration::from_millis(1500);
        let (won, held) = a.acquire_lease("leader", "node-a", None, ttl).await.expect("lease");
        let Outcome::Holding { epoch: e1, acquired: true } = won else { panic!("{kind}: the first node takes the free lease: {won:?}") };
        assert!(held.is_some());
        let (lost, _) = b.acquire_lease("leader", "node-b", None, ttl).await.expect("lease");
        assert_eq!(lost, Outcome::HeldBy { holder: "node-a".into(), epoch: e1 });
        let (renewed, _) = a.acquire_lease("leader", "node-a", Some(e1), ttl).await.expect("renew");
        assert_eq!(renewed, Outcome::Holding { epoch: e1, acquired: false });
        assert_eq!(a.lease_holder("leader").await.expect("holder").as_deref(), Some("node-a"));
        tokio::time::sleep(ttl + Duration::from_millis(300)).await;
        let (taken, _) = b.acquire_lease("leader", "node-b", None, ttl).await.expect("take over");
        let Outcome::Holding { epoch: e2, acquired: true } = taken else { panic!("{kind}: an expired lease is taken: {taken:?}") };
        assert_eq!(e2, e1 + 1);
        let (stale, _) = a.acquire_lease("leader", "node-a", Some(e1), ttl).await.expect("stale renew");
        assert_eq!(stale, Outcome::HeldBy { holder: "node-b".into(), epoch: e2 });
        assert!(matches!(a.fenced_prune("leader", "node-a", e1, Duration::from_secs(3600)).await, Err(ControlError::StaleEpoch { stale, .. }) if stale == e1));
        b.fenced_prune("leader", "node-b", e2, Duration::from_secs(3600)).await.expect("the holder's fenced write");
        let epochs = a.lease_epochs("leader").await.expect("epochs");
        assert_eq!(epochs.iter().map(|e| (e.epoch, e.holder.as_str())).collect::<Vec<_>>(), [(e1, "node-a"), (e2, "node-b")]);
        assert!(epochs[1].previous_expired_ms <= epochs[1].acquired_ms, "{kind}: epoch {e2} began after epoch {e1} expired: {epochs:?}");
        b.release_lease("leader", "node-b", e2).await.expect("release");
        assert_eq!(a.lease_holder("leader").await.expect("holder"), None, "{kind}: a released lease is free at once");

        // Membership: a heartbeat registers; a lapsed one shows as gone.
        let mut member = runplane_control::ClusterNode {
            node_id: "node-a".into(),
            region: "eu".into(),
            address: "127.0.0.1:1".into(),
            version: "0.1.0".into(),
            started_at: "2026-12-04T00:00:00Z".into(),
            last_heartbeat_ms: 0,
            state: "ready".into(),
            in_flight: 2,
        };
        a.heartbeat(&member).await.expect("heartbeat");
        member.node_id = "node-b".into();
        b.heartbeat(&member).await.expect("heartbeat");
        let nodes = b.nodes(Duration::from_secs(5)).await.expect("nodes");
        assert_eq!(nodes.iter().map(|n| (n.node_id.as_str(), n.state.as_str())).collect::<Vec<_>>(), [("node-a", "ready"), ("node-b", "ready")]);
        tokio::time::sleep(Duration::from_millis(600)).await;
        b.heartbeat(&member).await.expect("heartbeat");
        let nodes = b.nodes(Duration::from_millis(500)).await.expect("nodes");
        assert_eq!(nodes.iter().map(|n| (n.node_id.as_str(), n.state.as_str())).collect::<Vec<_>>(), [("node-a", "gone"), ("node-b", "ready")]);
        assert!(nodes[0].last_heartbeat_ms < nodes[1].last_heartbeat_ms, "heartbeats in the store's clock");
    }
}

#[tokio::test]
async fn postgres_notifies_followers_and_a_killed_listener_says_it_was_lost() {
    let Some((_, home)) = fresh_homes().await.into_iter().find(|(k, _)| *k == "postgres") else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&home, dir.path()).await;
    let mut hints = store.hints().await.expect("listen").expect("PostgreSQL has notifications");
    store.set_setting("probe", "1").await.expect("write");
    let head = store.head().await.expect("head");
    let hint = tokio::time::timeout(Duration::from_secs(5), hints.next()).await.expect("a notification in time").expect("hint");
    assert_eq!(hint, Hint::Changed(head));
    // Kill every listening backend but ours: the listener reports the loss.
    let Home::Postgres { url, database } = &home else { unreachable!() };
    let mut admin = sqlx::PgConnection::connect(url).await.expect("connect");
    let killed: Vec<bool> = sqlx::query_scalar("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND query LIKE 'LISTEN%'")
        .bind(database)
        .fetch_all(&mut admin)
        .await
        .expect("terminate");
    assert!(!killed.is_empty(), "the listener's backend was found");
    let hint = tokio::time::timeout(Duration::from_secs(5), hints.next()).await.expect("an answer in time").expect("hint");
    assert_eq!(hint, Hint::Lost);
    // It reconnects at the next call and hears again.
    let next = tokio::spawn(async move { tokio::time::timeout(Duration::from_secs(10), hints.next()).await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    store.set_setting("probe", "2").await.expect("write");
    let hint = next.await.expect("join").expect("in time").expect("hint");
    assert!(matches!(hint, Hint::Changed(_)), "{hint:?}");
}

fn stored(id: &str, revision: u64, active: bool, body: &str) -> StoredRollout {
    StoredRollout { rollout_id: id.into(), route: "orders".into(), revision, active, body: body.into(), updated_at: "2026-12-07T00:00:00Z".into() }
}

/// Rollouts: a change is a compare and swap on the revision (the loser learns it lost
/// and nothing of its write remains); superseding marks the old one in the same
/// transaction as the new one's insert; a promotion moves the route's deployment with
/// the rollout, one transaction, two changes in the feed; per-node counters are kept
/// apart from the feed and forgotten once a rollout stops.
async fn rollouts_swap_on_their_revision(store: &ControlStore) {
    assert!(store.insert_rollout(&stored("r1", 1, true, "{\"v\":1}"), None, None).await.expect("insert"));
    assert!(!store.insert_rollout(&stored("r1", 1, true, "{}"), None, None).await.expect("again"), "one id, one rollout");
    assert!(store.update_rollout(&stored("r1", 2, true, "{\"v\":2}"), 1, None).await.expect("swap"));
    assert!(!store.update_rollout(&stored("r1", 3, true, "{\"v\":\"lost\"}"), 1, None).await.expect("stale swap"), "a stale revision loses");
    assert_eq!(store.rollout("r1").await.expect("read").map(|r| (r.revision, r.body)), Some((2, "{\"v\":2}".to_string())));
    // A stale supersede inserts nothing.
    assert!(!store.insert_rollout(&stored("r2", 1, true, "{}"), Some((&stored("r1", 3, false, "{}"), 1)), None).await.expect("stale supersede"));
    assert!(store.rollout("r2").await.expect("read").is_none());
    assert!(store.insert_rollout(&stored("r2", 1, true, "{}"), Some((&stored("r1", 3, false, "{\"superseded\":true}"), 2)), None).await.expect("supersede"));
    let active: Vec<String> = store.active_rollouts().await.expect("active").into_iter().map(|r| r.rollout_id).collect();
    assert_eq!(active, ["r2"]);
    store.put_rollout_metrics("r2", "node-a", "{\"n\":1}", 1).await.expect("metrics");
    store.put_rollout_metrics("r2", "node-a", "{\"n\":2}", 2).await.expect("metrics again");
    store.put_rollout_metrics("r2", "node-b", "{\"n\":5}", 2).await.expect("metrics b");
    store.put_rollout_metrics("r1", "node-a", "{}", 2).await.expect("metrics of the old one");
    assert_eq!(store.rollout_metrics("r2").await.expect("read").len(), 2);
    assert_eq!(store.rollout_metrics("r2").await.expect("read")[0].1, "{\"n\":2}");
    let before = store.head().await.expect("head");
    let d = Deployment {
        route: "orders".into(),
        capability: "orders".into(),
        version: "2.0.0".into(),
        digest: "sha256:2".into(),
        allow_hosts: vec![],
        subscriptions: vec![],
        flag: None,
        created_at: "2026-12-07T00:00:00Z".into(),
    };
    assert!(store.update_rollout(&stored("r2", 2, false, "{\"promoted\":true}"), 1, Some(&d)).await.expect("promote"));
    let head = store.head().await.expect("head");
    let families: Vec<String> = store.changes(before, head).await.expect("changes").into_iter().map(|c| c.family).collect();
    assert_eq!(families, ["rollouts", "deployments"]);
    assert_eq!(store.deployments().await.expect("deployments").iter().find(|x| x.route == "orders").map(|x| x.version.clone()), Some("2.0.0".into()));
    assert!(store.active_rollouts().await.expect("active").is_empty());
    assert_eq!(store.rollouts(Some("orders"), 10).await.expect("list").len(), 2);
    assert_eq!(store.prune_rollout_metrics().await.expect("prune"), 3, "counters of stopped rollouts go");
}

#[tokio::test]
async fn rollouts_swap_on_their_revision_in_every_home() {
    let dir = tempfile::tempdir().expect("tempdir");
    rollouts_swap_on_their_revision(&open(&Home::Embedded, dir.path()).await).await;
    for (kind, home) in fresh_homes().await {
        eprintln!("-- {kind}");
        let dir = tempfile::tempdir().expect("tempdir");
        rollouts_swap_on_their_revision(&open(&home, dir.path()).await).await;
    }
}

/// Jobs: one run per idempotency key; a claim, a finish and an abandonment each move a
/// job only from where they expect it; running attempts are the slots.
async fn jobs_move_only_from_where_they_are_expected(store: &ControlStore) {
    use runplane_control::{AttemptEnd, EndedBy, JobMove, StoredAttempt, StoredJob};
    let job = |id: &str, key: &str| StoredJob {
        job_id: id.into(),
        tenant_id: "acme".into(),
        route: "work".into(),
        idempotency_key: key.into(),
        status: "queued".into(),
        attempts: 0,
        not_before_ms: 100,
        pool: Some("gpu".into()),
        spec: "{}".into(),
        output: None,
        reason: None,
        created_at: "2026-01-01T00:00:00Z".into(),
        updated_at: "2026-01-01T00:00:00Z".into(),
    };
    assert_eq!(store.insert_job(&job("j1", "k1")).await.expect("insert"), Ok(()));
    let again = store.insert_job(&job("j2", "k1")).await.expect("insert");
    assert_eq!(again.expect_err("the same key").job_id, "j1", "the same key gives the same run");
    assert!(store.due_jobs(99, 10).await.expect("due").is_empty(), "not before its time");
    assert_eq!(store.due_jobs(100, 10).await.expect("due").len(), 1);

    let attempt = |n: u32, holder: &str| StoredAttempt {
        job_id: "j1".into(),
        attempt_number: n,
        attempt_id: format!("a{n}"),
        tenant_id: "acme".into(),
        pool: Some("gpu".into()),
        status: "running".into(),
        created_at: "2026-01-01T00:00:01Z".into(),
        updated_at: "2026-01-01T00:00:01Z".into(),
        correlation_ids: "{}".into(),
        error_code: None,
        retryable: None,
        error_message: None,
        holder: Some(holder.into()),
        lease_expires_ms: 1_000,
    };
    assert!(store.claim_attempt(0, &attempt(1, "node-a")).await.expect("claim"));
    assert!(!store.claim_attempt(0, &attempt(1, "node-b")).await.expect("claim"), "claimed once");
    let held = store.running("acme", Some("gpu")).await.expect("running");
    assert_eq!((held.tenant, held.pool), (1, 1));
    assert!(store.renew_attempt("j1", 1, "node-a", 2_000).await.expect("renew"));
    assert!(!store.renew_attempt("j1", 1, "node-b", 9_000).await.expect("renew"), "only its holder renews");
    assert!(store.expired_attempts(1_999, 10).await.expect("expired").is_empty());

    // Its node died: the lease runs out, the attempt is abandoned and the job queued.
    let expired = store.expired_attempts(2_001, 10).await.expect("expired");
    assert_eq!(expired.len(), 1);
    let abandoned = AttemptEnd { status: "abandoned".into(), error_code: Some("abandoned".into()), retryable: Some(true), error_message: Some("lease expired".into()), at: "t".into() };
    let requeue = JobMove { status: "queued".into(), not_before_ms: 3_000, output: None, reason: None, at: "t".into() };
    assert!(store.end_attempt("j1", 1, EndedBy::ExpiredBefore(2_001), &abandoned, &requeue).await.expect("abandon"));
    let late = AttemptEnd { status: "passed".into(), error_code: None, retryable: None, error_message: None, at: "t".into() };
    let passed = JobMove { status: "passed".into(), not_before_ms: 0, output: Some("{}".into()), reason: None, at: "t".into() };
    assert!(!store.end_attempt("j1", 1, EndedBy::Holder("node-a"), &late, &passed).await.expect("end"), "an abandoned attempt's late answer changes nothing");
    assert_eq!(store.running("acme", Some("gpu")).await.expect("running"), runplane_control::Running::default(), "its slot went with it");

    assert!(store.claim_attempt(1, &StoredAttempt { lease_expires_ms: 10_000, ..attempt(2, "node-b") }).await.expect("claim"));
    assert!(store.end_attempt("j1", 2, EndedBy::Holder("node-b"), &late, &passed).await.expect("end"));
    let attempts = store.attempts("j1").await.expect("attempts");
    assert_eq!(attempts.iter().map(|a| a.status.as_str()).collect::<Vec<_>>(), vec!["abandoned", "passed"], "append-only: each attempt keeps its own end");
    assert_eq!(attempts[0].retryable, Some(true));
    let j = store.job("j1").await.expect("job").expect("exists");
    assert_eq!((j.status.as_str(), j.attempts, j.output.as_deref()), ("passed", 2, Some("{}")));
    assert!(!store.cancel_job("j1", "late", "t").await.expect("cancel"), "a final job is not cancelled");

    assert_eq!(store.insert_job(&job("j3", "k3")).await.expect("insert"), Ok(()));
    assert_eq!(store.cancel_tenant_jobs("acme", "tenant removed", "t").await.expect("cancel"), 1);
    assert_eq!(store.job("j3").await.expect("job").expect("exists").status, "cancelled");
    assert_eq!(store.jobs(Some("acme"), 10).await.expect("jobs").len(), 2);
    assert!(store.jobs(Some("globex"), 10).await.expect("jobs").is_empty());
}

#[tokio::test]
async fn jobs_move_only_from_where_they_are_expected_in_every_home() {
    let dir = tempfile::tempdir().expect("tempdir");
    jobs_move_only_from_where_they_are_expected(&open(&Home::Embedded, dir.path()).await).await;
    for (kind, home) in fresh_homes().await {
        eprintln!("-- {kind}");
        let dir = tempfile::tempdir().expect("tempdir");
        jobs_move_only_from_where_they_are_expected(&open(&home, dir.path()).await).await;
    }
}
