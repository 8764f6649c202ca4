//! Audit tests: the Merkle math against the RFC 6962 vectors, the stored tree's proofs
//! against an independent verifier, checkpoints, tamper detection, and two writers on
//! one PostgreSQL.

use runplane_audit::merkle::{self, Hash};
use runplane_audit::{AuditError, AuditEvent, AuditStore, Checkpoint, LogId, NoteSigner, NoteVerifier, Outcome};

fn event(n: u64) -> AuditEvent {
    AuditEvent {
        protocol_version: "1.0".into(),
        event_id: format!("ev-{n}"),
        time: runplane_audit::rfc3339_utc(1_700_000_000_000_000_000 + u128::from(n)),
        actor: "admin".into(),
        tenant: Some("acme".into()),
        action: "test.append".into(),
        target: format!("thing-{n}"),
        outcome: Outcome::ok(Some(200)),
        context: None,
        request_digest: None,
        response_digest: None,
        capability_digest: None,
        binding_set_version: None,
        config_version: None,
        usage: None,
        details: Default::default(),
    }
}

fn signer() -> NoteSigner {
    NoteSigner::new("runplane/test-instance", [42; 32]).expect("signer")
}

async fn open(path: &std::path::Path) -> AuditStore {
    AuditStore::open(path, signer()).await.expect("open")
}

async fn fill(store: &AuditStore, log: LogId, n: u64) {
    let mut tasks = Vec::new();
    for i in 0..n {
        let (s, log) = (store.clone(), log.clone());
        tasks.push(tokio::spawn(async move { s.append(log, &event(i)).await.expect("append") }));
    }
    for t in tasks {
        t.await.expect("join");
    }
}

#[tokio::test]
async fn concurrent_appends_get_dense_indexes_and_survive_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("audit.db");
    let store = open(&path).await;
    let mut tasks = Vec::new();
    for n in 0..200u64 {
        let s = store.clone();
        tasks.push(tokio::spawn(async move {
            let log = if n % 2 == 0 { LogId::tenant("acme") } else { LogId::admin() };
            s.append(log, &event(n)).await.expect("append")
        }));
    }
    let mut receipts = Vec::new();
    for t in tasks {
        receipts.push(t.await.expect("join"));
    }
    let mut acme: Vec<u64> = receipts.iter().filter(|r| r.log == LogId::tenant("acme")).map(|r| r.index).collect();
    acme.sort();
    assert_eq!(acme, (0..100).collect::<Vec<_>>(), "indexes are dense and unique");
    let before = store.tree_head(&LogId::tenant("acme")).await.expect("head");
    drop(store);

    let reopened = open(&path).await;
    assert_eq!(reopened.check(&LogId::tenant("acme")).await.expect("check"), 100);
    assert_eq!(reopened.check(&LogId::admin()).await.expect("check"), 100);
    assert_eq!(reopened.tree_head(&LogId::tenant("acme")).await.expect("head"), before, "same root after reopen");
    let next = reopened.append(LogId::admin(), &event(999)).await.expect("append after reopen");
    assert_eq!(next.index, 100, "appends continue after the last stored index");
    let read = reopened.read(&LogId::tenant("acme"), 0, 1000).await.expect("read");
    let leaves: Vec<Hash> = read.iter().map(|r| hex::decode(&r.leaf_hash).expect("hex").try_into().expect("32 bytes")).collect();
    for r in &read {
        let canonical = runplane_cjson::to_string(&r.event).expect("canonical");
        assert_eq!(runplane_cjson::sha256_hex(canonical.as_bytes()), r.event_hash, "hash is over canonical JSON");
        assert_eq!(hex::encode(merkle::leaf_hash(canonical.as_bytes())), r.leaf_hash, "leaf is RFC 9162 over canonical JSON");
    }
    assert_eq!(reopened.tree_head(&LogId::tenant("acme")).await.expect("head").1, merkle::root(&leaves));
}

/// The property test of the stored tree: for random sizes, every proof the store
/// produces verifies with the independent verifier below (not the crate's own), and
/// flipping any byte of it makes verification fail.
#[tokio::test]
async fn store_proofs_verify_independently_and_fail_when_flipped() {
    use rand::{RngExt as _, SeedableRng as _};
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir.path().join("audit.db")).await;
    let log = LogId::tenant("acme");
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(7);
    let mut leaves: Vec<Hash> = Vec::new();
    for round in 0..6 {
        let grow = rng.random_range(1..400u64);
        fill(&store, log.clone(), grow).await;
        leaves = store
            .read(&log, 0, 1000)
            .await
            .expect("read")
            .iter()
            .chain(store.read(&log, 1000, 1000).await.expect("read").iter())
            .chain(store.read(&log, 2000, 1000).await.expect("read").iter())
            .map(|r| hex::decode(&r.leaf_hash).expect("hex").try_into().expect("32"))
            .collect();
        let n = leaves.len() as u64;
        for _ in 0..40 {
            let size = rng.random_range(1..=n);
            let index = rng.random_range(0..size);
            let root = store.root_at(&log, size).await.expect("root");
            assert_eq!(root, merkle::root(&leaves[..size as usize]), "root at {size}");
            let proof = store.inclusion_proof(&log, index, size).await.expect("proof");
            assert_eq!(independent::root_from_inclusion(index, size, &leaves[index as usize], &proof), Some(root), "round {round}: inclusion {index}/{size}");
            for j in 0..proof.len() {
                let mut bad = proof.clone();
                bad[j][rng.random_range(0..32)] ^= 1 << rng.random_range(0..8);
                assert_ne!(independent::root_from_inclusion(index, size, &leaves[index as usize], &bad), Some(root));
            }

            let first = rng.random_range(0..=size);
            let first_root = store.root_at(&log, first).await.expect("root");
            let proof = store.consistency_proof(&log, first, size).await.expect("proof");
            assert!(independent::consistent(first, size, &first_root, &root, &proof), "round {round}: consistency {first}->{size}");
            for j in 0..proof.len() {
                let mut bad = proof.clone();
                bad[j][rng.random_range(0..32)] ^= 1 << rng.random_range(0..8);
                assert!(!independent::consistent(first, size, &first_root, &root, &bad), "flipped consistency {first}->{size} hash {j}");
            }
        }
    }
    assert!(store.inclusion_proof(&log, 5, leaves.len() as u64 + 1).await.is_err(), "a size beyond the log is refused");
    assert!(store.consistency_proof(&log, 9, 3).await.is_err(), "sizes in the wrong order are refused");
}

#[tokio::test]
async fn checkpoints_are_signed_notes_that_grow_consistently() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir.path().join("audit.db")).await;
    let log = LogId::tenant("acme");
    fill(&store, log.clone(), 37).await;
    let first = store.checkpoint(&log).await.expect("checkpoint");
    assert_eq!(first.size, 37);
    assert!(first.note.starts_with("runplane/test-instance/tenant:acme\n37\n"), "{}", first.note);
    assert!(first.note.contains("\n\n\u{2014} runplane/test-instance "), "{}", first.note);
    let verifier = NoteVerifier::parse(&store.verifier().key_string()).expect("verifier key string parses");
    let cp = Checkpoint::open(&first.note, &verifier).expect("signature verifies");
    assert_eq!(hex::encode(cp.root), first.root);
    assert_eq!(store.checkpoint(&log).await.expect("again"), first, "no new signature without new entries");

    fill(&store, log.clone(), 20).await;
    let second = store.checkpoint(&log).await.expect("checkpoint");
    assert_eq!(second.size, 57);
    let proof = store.consistency_proof(&log, 37, 57).await.expect("proof");
    let (r1, r2) = (Checkpoint::open(&first.note, &verifier).expect("cp").root, Checkpoint::open(&second.note, &verifier).expect("cp").root);
    merkle::verify_consistency(37, 57, &proof, &r1, &r2).expect("consistent");
    assert_eq!(store.checkpoints(&log).await.expect("list").len(), 2);
    assert!(matches!(store.checkpoint(&LogId::tenant("nobody")).await, Err(AuditError::NoSuchLog(_))));
}

/// Opens the raw SQLite file with the append-only triggers dropped: what an attacker
/// with file access can do.
async fn raw(path: &std::path::Path) -> sqlx::SqlitePool {
    let pool = sqlx::SqlitePool::connect(&format!("sqlite:{}", path.display())).await.expect("connect");
    for t in ["audit_entries_no_update", "audit_entries_no_delete", "audit_nodes_no_update", "audit_nodes_no_delete", "audit_checkpoints_no_update", "audit_checkpoints_no_delete"] {
        sqlx::query(sqlx::AssertSqlSafe(format!("DROP TRIGGER IF EXISTS {t}"))).execute(&pool).await.expect("drop trigger");
    }
    pool
}

#[tokio::test]
async fn rows_cannot_be_updated_or_deleted_through_sql() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("audit.db");
    let store = open(&path).await;
    fill(&store, LogId::admin(), 20).await;
    store.checkpoint(&LogId::admin()).await.expect("checkpoint");
    drop(store);
    let pool = sqlx::SqlitePool::connect(&format!("sqlite:{}", path.display())).await.expect("connect");
    for sql in [
        "UPDATE audit_entries SET event = '{}' WHERE idx = 1",
        "DELETE FROM audit_entries WHERE idx = 1",
        "UPDATE audit_nodes SET hash = zeroblob(32)",
        "DELETE FROM audit_nodes",
        "UPDATE audit_checkpoints SET note = ''",
        "DELETE FROM audit_checkpoints",
    ] {
        assert!(sqlx::query(sql).execute(&pool).await.is_err(), "refused: {sql}");
    }
}

/// Each way of tampering, applied to a fresh copy of the same log: the start-up check
/// names where, refuses to extend that log, and keeps every other log working.
#[tokio::test]
async fn tampering_is_detected_at_open_and_the_log_is_not_extended() {
    // Events are stored packed; an attacker writes the edited JSON back as a plain row.
    let edited = event(17).canonical().expect("canonical").replace("thing-17", "thing-X").replace('\'', "''");
    let edit = format!("UPDATE audit_entries SET event = '{edited}', codec = 0 WHERE log = 'tenant:acme' AND idx = 17");
    let edit_and_hash = format!("UPDATE audit_entries SET event = '{edited}', codec = 0, leaf_hash = zeroblob(32) WHERE log = 'tenant:acme' AND idx = 17");
    let cases: [(&str, &str, &str); 7] = [
        ("edit an event", &edit, "index 17"),
        ("edit an event and its hashes", &edit_and_hash, "index 17"),
        ("delete an event", "DELETE FROM audit_entries WHERE log = 'tenant:acme' AND idx = 40", "entry 40 is missing"),
        (
            "reorder two events",
            "UPDATE audit_entries SET idx = -1 WHERE log = 'tenant:acme' AND idx = 3; \
             UPDATE audit_entries SET idx = 3 WHERE log = 'tenant:acme' AND idx = 4; \
             UPDATE audit_entries SET idx = 4 WHERE log = 'tenant:acme' AND idx = -1",
            "level 4 index 0",
        ),
        ("edit a stored subtree hash", "UPDATE audit_nodes SET hash = zeroblob(32) WHERE log = 'tenant:acme' AND level = 4 AND idx = 2", "level 4 index 2"),
        ("drop the last events and rewind the head", "DELETE FROM audit_entries WHERE log = 'tenant:acme' AND idx >= 60", "checkpoint of size 64"),
        ("edit the signed checkpoint", "UPDATE audit_checkpoints SET root = zeroblob(32) WHERE log = 'tenant:acme'", "checkpoint of size 64"),
    ];
    for (what, sql, expect) in cases {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit.db");
        let store = open(&path).await;
        for i in 0..64 {
            store.append(LogId::tenant("acme"), &event(i)).await.expect("append");
        }
        fill(&store, LogId::tenant("globex"), 10).await;
        store.checkpoint(&LogId::tenant("acme")).await.expect("checkpoint");
        drop(store);

        let pool = raw(&path).await;
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(&pool).await.unwrap_or_else(|e| panic!("{what}: {e}"));
        if what.contains("rewind") {
            // A careful attacker also rewrites the head and the subtree hashes so that
            // everything but the signed checkpoint agrees with 60 entries.
            let store_of_60 = tempfile::tempdir().expect("tempdir");
            let honest = open(&store_of_60.path().join("audit.db")).await;
            for i in 0..60 {
                honest.append(LogId::tenant("acme"), &event(i)).await.expect("append");
            }
            drop(honest);
            let honest_pool = sqlx::SqlitePool::connect(&format!("sqlite:{}", store_of_60.path().join("audit.db").display())).await.expect("connect");
            let head: (i64, Vec<u8>) = sqlx::query_as("SELECT size, frontier FROM audit_heads WHERE log = 'tenant:acme'").fetch_one(&honest_pool).await.expect("head");
            sqlx::query("UPDATE audit_heads SET size = ?1, frontier = ?2 WHERE log = 'tenant:acme'").bind(head.0).bind(head.1).execute(&pool).await.expect("rewind head");
            sqlx::query("DELETE FROM audit_nodes WHERE log = 'tenant:acme' AND level = 4 AND idx = 3").execute(&pool).await.expect("drop node");
        }
        pool.close().await;

        let store = open(&path).await;
        let refused = store.refused();
        let why = refused.get(&LogId::tenant("acme")).unwrap_or_else(|| panic!("{what}: not detected"));
        assert!(why.contains(expect), "{what}: {why}");
        let err = store.append(LogId::tenant("acme"), &event(100)).await.expect_err("a corrupt log is not extended");
        assert!(matches!(err, AuditError::Refused { .. }), "{what}: {err}");
        assert!(err.to_string().contains("restore it"), "says what to do: {err}");
        assert!(store.checkpoint(&LogId::tenant("acme")).await.is_err(), "{what}: no checkpoint of a corrupt log");
        assert_eq!(store.append(LogId::tenant("globex"), &event(100)).await.expect("other logs work").index, 10);
        assert!(!refused.contains_key(&LogId::tenant("globex")));
    }
}

/// Events written before the Merkle layout are moved into it, in order, once.
#[tokio::test]
async fn legacy_events_are_imported_into_the_tree() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("audit.db");
    {
        let pool = sqlx::SqlitePool::connect(&format!("sqlite:{}?mode=rwc", path.display())).await.expect("create");
        let migration = include_str!("../migrations/sqlite/0001_audit.sql");
        sqlx::raw_sql(sqlx::AssertSqlSafe(migration)).execute(&pool).await.expect("old schema");
        sqlx::query("CREATE TABLE _sqlx_migrations (version BIGINT PRIMARY KEY, description TEXT NOT NULL, installed_on TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP, success BOOLEAN NOT NULL, checksum BLOB NOT NULL, execution_time BIGINT NOT NULL)")
            .execute(&pool)
            .await
            .expect("migrations table");
        let checksum = <sha2::Sha384 as sha2::Digest>::digest(migration.as_bytes()).to_vec();
        sqlx::query("INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) VALUES (1, 'audit', TRUE, ?1, 0)").bind(checksum).execute(&pool).await.expect("record");
        for i in 0..5i64 {
            let json = event(i as u64).canonical().expect("canonical");
            sqlx::query("INSERT INTO audit_events (log, idx, event_hash, event) VALUES ('admin', ?1, ?2, ?3)")
                .bind(i)
                .bind(runplane_cjson::sha256_hex(json.as_bytes()))
                .bind(json)
                .execute(&pool)
                .await
                .expect("old row");
        }
        pool.close().await;
    }
    let store = open(&path).await;
    assert_eq!(store.check(&LogId::admin()).await.expect("check"), 5);
    assert_eq!(store.read(&LogId::admin(), 0, 10).await.expect("read")[3].event["event_id"], "ev-3");
    drop(store);
    assert_eq!(open(&path).await.check(&LogId::admin()).await.expect("imported once"), 5);
}

/// Two stores on one shared database (two nodes of an instance) appending to the same
/// logs at once: one log each, dense, no fork, and each store checks it.
async fn two_writers_share_one_consistent_log(a: AuditStore, b: AuditStore) {
    let mut tasks = Vec::new();
    for i in 0..600u64 {
        let s = if i % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(tokio::spawn(async move {
            let log = if i % 3 == 0 { LogId::admin() } else { LogId::tenant("acme") };
            let r = s.append(log.clone(), &event(i)).await.expect("append");
            if i % 50 == 0 {
                s.checkpoint(&log).await.expect("checkpoint while appending");
            }
            r
        }));
    }
    let mut indexes: std::collections::BTreeMap<LogId, Vec<u64>> = Default::default();
    for t in tasks {
        let r = t.await.expect("join");
        indexes.entry(r.log).or_default().push(r.index);
    }
    for (log, mut got) in indexes {
        got.sort();
        let n = got.len() as u64;
        assert_eq!(got, (0..n).collect::<Vec<_>>(), "{log}: dense, no duplicates");
        assert_eq!(a.check(&log).await.expect("a checks"), n);
        assert_eq!(b.check(&log).await.expect("b checks"), n);
        let (ca, cb) = (a.checkpoint(&log).await.expect("cp"), b.checkpoint(&log).await.expect("cp"));
        assert_eq!(ca, cb, "{log}: both nodes sign the same checkpoint");
    }
}

#[tokio::test]
async fn two_writers_on_one_postgres_share_one_consistent_log() {
    let admin_url = runplane_adapters::testing::postgres_url();
    if !runplane_adapters::testing::service_up("PostgreSQL", &admin_url).await {
        return;
    }
    let db = runplane_adapters::testing::unique_name("rp_audit");
    let admin = sqlx::PgPool::connect(&admin_url).await.expect("connect");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{db}\""))).execute(&admin).await.expect("create database");
    let options: sqlx::postgres::PgConnectOptions = admin_url.parse::<sqlx::postgres::PgConnectOptions>().expect("url").database(&db);
    let timeout = std::time::Duration::from_secs(5);
    // Both nodes start at once on a fresh database: schema and migrations happen once.
    let (a, b) = tokio::join!(AuditStore::open_postgres(options.clone(), signer(), timeout), AuditStore::open_postgres(options, signer(), timeout));
    let (a, b) = (a.expect("node a"), b.expect("node b"));
    two_writers_share_one_consistent_log(a, b).await;
    let _ = sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS \"{db}\" WITH (FORCE)"))).execute(&admin).await;
}

#[tokio::test]
async fn two_writers_on_one_mariadb_share_one_consistent_log() {
    let url = runplane_adapters::testing::mysql_url();
    if !runplane_adapters::testing::service_up("MariaDB/MySQL", &url).await {
        return;
    }
    let db = runplane_adapters::testing::unique_name("rp_audit");
    let server: sqlx::mysql::MySqlConnectOptions = url.parse().expect("RUNPLANE_TEST_MYSQL_URL is a MySQL URL");
    let timeout = std::time::Duration::from_secs(5);
    // Both nodes start at once on a fresh database: its migrations run once.
    let (a, b) = tokio::join!(AuditStore::open_mysql(server.clone(), &db, signer(), timeout), AuditStore::open_mysql(server.clone(), &db, signer(), timeout));
    two_writers_share_one_consistent_log(a.expect("node a"), b.expect("node b")).await;
    let pool = sqlx::MySqlPool::connect_with(server).await.expect("connect");
    let _ = sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS `{db}`"))).execute(&pool).await;
}

/// An independent RFC 9162 verifier (the bit-decomposition form used by
/// transparency-dev/merkle), so the store's proofs are not checked only by the code
/// that produced them.
mod independent {
    use runplane_audit::merkle::{Hash, node_hash};

    /// (inner, border): path hashes below the split with the right border, and above it.
    fn decompose(index: u64, size: u64) -> (usize, usize) {
        let inner = (64 - (index ^ (size - 1)).leading_zeros()) as usize;
        let border = (index >> inner).count_ones() as usize;
        (inner, border)
    }

    pub fn root_from_inclusion(index: u64, size: u64, leaf: &Hash, proof: &[Hash]) -> Option<Hash> {
        if index >= size {
            return None;
        }
        let (inner, border) = decompose(index, size);
        if proof.len() != inner + border {
            return None;
        }
        let mut h = *leaf;
        for (i, p) in proof[..inner].iter().enumerate() {
            h = if (index >> i) & 1 == 0 { node_hash(&h, p) } else { node_hash(p, &h) };
        }
        for p in &proof[inner..] {
            h = node_hash(p, &h);
        }
        Some(h)
    }

    pub fn consistent(size1: u64, size2: u64, root1: &Hash, root2: &Hash, proof: &[Hash]) -> bool {
        if size1 > size2 {
            return false;
        }
        if size1 == size2 {
            return proof.is_empty() && root1 == root2;
        }
        if size1 == 0 {
            return proof.is_empty();
        }
        let (inner, border) = decompose(size1 - 1, size2);
        let shift = size1.trailing_zeros() as usize;
        let inner = inner - shift;
        let (seed, rest) = if size1 == 1 << shift {
            (*root1, proof)
        } else {
            match proof.split_first() {
                Some((s, rest)) => (*s, rest),
                None => return false,
            }
        };
        if rest.len() != inner + border {
            return false;
        }
        let mask = (size1 - 1) >> shift;
        let mut h1 = seed;
        for (i, p) in rest[..inner].iter().enumerate() {
            if (mask >> i) & 1 == 1 {
                h1 = node_hash(p, &h1);
            }
        }
        for p in &rest[inner..] {
            h1 = node_hash(p, &h1);
        }
        let mut h2 = seed;
        for (i, p) in rest[..inner].iter().enumerate() {
            h2 = if (mask >> i) & 1 == 0 { node_hash(&h2, p) } else { node_hash(p, &h2) };
        }
        for p in &rest[inner..] {
            h2 = node_hash(p, &h2);
        }
        h1 == *root1 && h2 == *root2
    }
}

mod rfc6962 {
    use runplane_audit::merkle::{Hash, consistency_proof, inclusion_proof, leaf_hash, root, verify_consistency, verify_inclusion};

    /// The eight leaves of the RFC 6962 test data (certificate-transparency-go, transparency-dev/merkle).
    const LEAVES: [&str; 8] = ["", "00", "10", "2021", "3031", "40414243", "5051525354555657", "606162636465666768696a6b6c6d6e6f"];
    /// Their roots for sizes 1 to 8.
    const ROOTS: [&str; 8] = [
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    ];

    fn leaves(n: usize) -> Vec<Hash> {
        (0..n).map(|i| leaf_hash(format!("leaf {i}").as_bytes())).collect()
    }

    /// transparency-dev/merkle `proof/verify_test.go` `inclusionProofs`: (1-based leaf,
    /// tree size, audit path) over the eight RFC 6962 leaves.
    const INCLUSION: [(usize, usize, &[&str]); 5] = [
        (1, 1, &[]),
        (1, 8, &["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7", "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e", "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"]),
        (6, 8, &["bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b", "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0", "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
        (3, 3, &["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
        (2, 5, &["6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d", "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e", "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"]),
    ];
    /// The same file's `consistencyProofs`: (size 1, size 2, proof).
    const CONSISTENCY: [(usize, usize, &[&str]); 5] = [
        (1, 1, &[]),
        (1, 8, &["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7", "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e", "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"]),
        (6, 8, &["0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a", "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0", "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
        (2, 5, &["5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e", "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"]),
        (6, 7, &["0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a", "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f", "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
    ];

    #[test]
    fn a_size_zero_root_must_be_the_empty_root() {
        let l = leaves(3);
        verify_consistency(0, 3, &[], &root(&[]), &root(&l)).expect("the empty tree is extended by every tree");
        assert!(verify_consistency(0, 3, &[], &l[0], &root(&l)).is_err(), "a made-up size-0 root is refused");
        assert!(verify_consistency(0, 3, &[l[1]], &root(&[]), &root(&l)).is_err(), "size 0 needs an empty proof");
    }

    #[test]
    fn published_inclusion_and_consistency_vectors() {
        let hashes: Vec<Hash> = LEAVES.iter().map(|l| leaf_hash(&hex::decode(l).expect("hex"))).collect();
        let hex_all = |p: &[Hash]| p.iter().map(hex::encode).collect::<Vec<_>>();
        for (leaf, size, expected) in INCLUSION {
            let proof = inclusion_proof(leaf - 1, &hashes[..size]).expect("in range");
            assert_eq!(hex_all(&proof), expected, "inclusion of leaf {leaf} in {size}");
            verify_inclusion(&hashes[leaf - 1], (leaf - 1) as u64, size as u64, &proof, &root(&hashes[..size])).expect("verifies");
        }
        for (first, second, expected) in CONSISTENCY {
            let proof = consistency_proof(first, &hashes[..second]).expect("ordered");
            assert_eq!(hex_all(&proof), expected, "consistency {first} -> {second}");
            verify_consistency(first as u64, second as u64, &proof, &root(&hashes[..first]), &root(&hashes[..second])).expect("verifies");
        }
    }

    #[test]
    fn rfc6962_roots() {
        let hashes: Vec<Hash> = LEAVES.iter().map(|l| leaf_hash(&hex::decode(l).expect("hex"))).collect();
        for (size, expected) in ROOTS.iter().enumerate() {
            assert_eq!(hex::encode(root(&hashes[..=size])), *expected, "root of size {}", size + 1);
        }
        assert_eq!(hex::encode(root(&[])), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    }

    #[test]
    fn every_inclusion_proof_verifies_and_any_flipped_byte_fails() {
        for n in 1..=40 {
            let l = leaves(n);
            let r = root(&l);
            for i in 0..n {
                let proof = inclusion_proof(i, &l).expect("in range");
                verify_inclusion(&l[i], i as u64, n as u64, &proof, &r).unwrap_or_else(|e| panic!("n={n} i={i}: {e}"));
                for (j, _) in proof.iter().enumerate() {
                    let mut bad = proof.clone();
                    bad[j][(i + j) % 32] ^= 1;
                    assert!(verify_inclusion(&l[i], i as u64, n as u64, &bad, &r).is_err(), "n={n} i={i} flipped hash {j}");
                }
                let mut wrong_leaf = l[i];
                wrong_leaf[0] ^= 0x80;
                assert!(verify_inclusion(&wrong_leaf, i as u64, n as u64, &proof, &r).is_err());
                if n > 1 {
                    assert!(verify_inclusion(&l[i], ((i + 1) % n) as u64, n as u64, &proof, &r).is_err() || l[i] == l[(i + 1) % n]);
                }
            }
            assert!(verify_inclusion(&l[0], n as u64, n as u64, &[], &r).is_err());
        }
    }

    #[test]
    fn every_consistency_proof_verifies_and_any_flipped_byte_fails() {
        for n in 1..=40 {
            let l = leaves(n);
            let second = root(&l);
            for m in 0..=n {
                let first = root(&l[..m]);
                let proof = consistency_proof(m, &l).expect("m <= n");
                verify_consistency(m as u64, n as u64, &proof, &first, &second).unwrap_or_else(|e| panic!("m={m} n={n}: {e}"));
                for j in 0..proof.len() {
                    let mut bad = proof.clone();
                    bad[j][j % 32] ^= 1;
                    assert!(verify_consistency(m as u64, n as u64, &bad, &first, &second).is_err(), "m={m} n={n} flipped {j}");
                }
                if m > 0 && m < n {
                    let mut forged = first;
                    forged[31] ^= 1;
                    assert!(verify_consistency(m as u64, n as u64, &proof, &forged, &second).is_err(), "m={m} n={n} forged first root");
                }
            }
        }
    }
}

/// Journals past their window move to the archive: the hot bodies go, the log still
/// verifies end to end, each journal reads back byte for byte from its segment, a
/// journal within its window stays hot, and an altered segment is refused.
async fn journals_compact_past_their_window_and_read_back(store: AuditStore, archive_dir: &std::path::Path) {
    use runplane_ports::BlobStore as _;
    let archive = runplane_adapters::object_blobs::ObjectBlobStore::open(archive_dir).expect("archive store");
    let log = LogId::tenant("acme");
    let other = LogId::tenant("globex");
    let journal = |i: u64| format!("{{\"input\":{{\"body\":\"{}\"}},\"observations\":[{{\"n\":{i}}}],\"route\":\"orders\"}}", "x".repeat((i as usize % 3) * 400));
    for i in 0..40u64 {
        // acme's journals are recorded at t=1000+i; globex's late, at t=5000.
        store.append_with_journal(log.clone(), &event(i), &format!("inv-a-{i}"), &journal(i), 1000 + i).await.expect("append");
        store.append_with_journal(other.clone(), &event(i), &format!("inv-g-{i}"), &journal(i), 5000).await.expect("append");
    }
    let before = store.journal_usage();
    assert_eq!((before.hot, before.archived), (80, 0));

    // At t=2000 with a 900 s window, acme's first 40 journals are stale, globex's not.
    let report = store.archive_journals(&archive, 2000, |_| Some(900)).await.expect("archive");
    assert_eq!(report.journals, 40, "{report:?}");
    assert_eq!(report.segments.len(), 1);
    let after = store.journal_usage();
    assert_eq!((after.hot, after.archived), (40, 40), "{after:?}");
    assert!(after.hot_bytes < before.hot_bytes && after.archived_bytes > 0);
    // A second pass finds nothing more to move.
    assert_eq!(store.archive_journals(&archive, 2000, |_| Some(900)).await.expect("again").journals, 0);

    assert_eq!(store.check(&log).await.expect("acme verifies after compaction"), 40);
    assert_eq!(store.check(&other).await.expect("globex verifies"), 40);
    for i in [0u64, 17, 39] {
        let (l, index, body) = store.journal(&format!("inv-a-{i}"), Some(&archive)).await.expect("read").expect("found");
        assert_eq!((l, index, body), (log.clone(), i, journal(i)), "archived journal {i} reads back as written");
    }
    let (_, _, hot) = store.journal("inv-g-5", None).await.expect("read").expect("found");
    assert_eq!(hot, journal(5), "a journal inside its window stays hot");
    let refused = store.journal("inv-a-3", None).await.expect_err("no archive bound");
    assert!(refused.to_string().contains("[audit] archive"), "{refused}");

    // Alter the segment: the read is refused as corrupt, naming the segment.
    let tenant = runplane_ports::TenantId::new("acme").expect("tenant");
    let segment = &report.segments[0];
    let name = format!("journals/{segment}.json.zst");
    archive.put(&tenant, runplane_audit::ARCHIVE_CONTAINER, &name, b"not the segment".to_vec(), None).await.expect("overwrite");
    let err = store.journal("inv-a-3", Some(&archive)).await.expect_err("altered segment");
    assert!(matches!(err, AuditError::Corrupt { .. }) && err.to_string().contains(segment.as_str()), "{err}");
}

#[tokio::test]
async fn journals_compact_and_read_back_on_sqlite() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir.path().join("audit.db")).await;
    journals_compact_past_their_window_and_read_back(store, &dir.path().join("archive")).await;
    // The usage survives a reopen (counted from the store at open).
    let reopened = open(&dir.path().join("audit.db")).await;
    let usage = reopened.journal_usage();
    assert_eq!((usage.hot, usage.archived), (40, 40));
}

#[tokio::test]
async fn journals_compact_and_read_back_on_postgres() {
    let admin_url = runplane_adapters::testing::postgres_url();
    if !runplane_adapters::testing::service_up("PostgreSQL", &admin_url).await {
        return;
    }
    let db = runplane_adapters::testing::unique_name("rp_audit");
    let admin = sqlx::PgPool::connect(&admin_url).await.expect("connect");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{db}\""))).execute(&admin).await.expect("create database");
    let options: sqlx::postgres::PgConnectOptions = admin_url.parse::<sqlx::postgres::PgConnectOptions>().expect("url").database(&db);
    let store = AuditStore::open_postgres(options, signer(), std::time::Duration::from_secs(5)).await.expect("open");
    let dir = tempfile::tempdir().expect("tempdir");
    journals_compact_past_their_window_and_read_back(store, dir.path()).await;
    let _ = sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS \"{db}\" WITH (FORCE)"))).execute(&admin).await;
}

#[tokio::test]
async fn journals_compact_and_read_back_on_mariadb() {
    let url = runplane_adapters::testing::mysql_url();
    if !runplane_adapters::testing::service_up("MariaDB/MySQL", &url).await {
        return;
    }
    let db = runplane_adapters::testing::unique_name("rp_audit");
    let server: sqlx::mysql::MySqlConnectOptions = url.parse().expect("RUNPLANE_TEST_MYSQL_URL is a MySQL URL");
    let store = AuditStore::open_mysql(server.clone(), &db, signer(), std::time::Duration::from_secs(5)).await.expect("open");
    let dir = tempfile::tempdir().expect("tempdir");
    journals_compact_past_their_window_and_read_back(store, dir.path()).await;
    let pool = sqlx::MySqlPool::connect_with(server).await.expect("connect");
    let _ = sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS `{db}`"))).execute(&pool).await;
}

/// Forwards connections to `upstream`, holding what each client sends for `delay`
/// before the server gets it: every client-to-server round trip costs `delay` more,
/// so a round trip counted too many shows as time.
async fn delaying_proxy(upstream: std::net::SocketAddr, delay: std::time::Duration) -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the proxy");
    let addr = listener.local_addr().expect("proxy address");
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = tokio::net::TcpStream::connect(upstream).await else { continue };
            let (mut from_client, mut to_client) = client.into_split();
            let (mut from_server, mut to_server) = server.into_split();
            tokio::spawn(async move {
                let _ = tokio::io::copy(&mut from_server, &mut to_client).await;
            });
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(tokio::time::Instant, Vec<u8>)>();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 << 10];
                while let Ok(n @ 1..) = from_client.read(&mut buf).await {
                    if tx.send((tokio::time::Instant::now() + delay, buf[..n].to_vec())).is_err() {
                        break;
                    }
                }
            });
            tokio::spawn(async move {
                while let Some((due, bytes)) = rx.recv().await {
                    tokio::time::sleep_until(due).await;
                    if to_server.write_all(&bytes).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    addr
}

/// The PostgreSQL store writes a batch in one round trip (the stateless-nodes issue puts
/// it on every node's request path): through a link that adds 40 ms to each round trip,
/// an append (a batch of its own, journal included) takes one delay, not one per
/// statement (the transaction of seven statements it replaced took seven).
#[tokio::test]
async fn a_postgres_batch_costs_one_round_trip() {
    let admin_url = runplane_adapters::testing::postgres_url();
    if !runplane_adapters::testing::service_up("PostgreSQL", &admin_url).await {
        return;
    }
    let db = runplane_adapters::testing::unique_name("rp_audit");
    let admin = sqlx::PgPool::connect(&admin_url).await.expect("connect");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{db}\""))).execute(&admin).await.expect("create database");
    let direct: sqlx::postgres::PgConnectOptions = admin_url.parse::<sqlx::postgres::PgConnectOptions>().expect("url").database(&db);
    let upstream = tokio::net::lookup_host((direct.get_host(), direct.get_port())).await.expect("resolve").next().expect("an address");
    let delay = std::time::Duration::from_millis(40);
    let proxy = delaying_proxy(upstream, delay).await;
    let options = direct.host(&proxy.ip().to_string()).port(proxy.port());
    let store = AuditStore::open_postgres(options, signer(), std::time::Duration::from_secs(20)).await.expect("open through the proxy");
    let log = LogId::tenant("acme");
    let journal = r#"{"route":"hello","observations":[]}"#;
    // Warm: the head read once, the statement prepared on the connection.
    for i in 0..4u64 {
        store.append_with_journal(log.clone(), &event(i), &format!("inv-{i}"), journal, 1_700_000_000).await.expect("append");
    }
    let mut took = Vec::new();
    for i in 4..14u64 {
        let started = std::time::Instant::now();
        let r = store.append_with_journal(log.clone(), &event(i), &format!("inv-{i}"), journal, 1_700_000_000).await.expect("append");
        took.push(started.elapsed());
        assert_eq!(r.index, i);
    }
    took.sort();
    let median = took[took.len() / 2];
    assert!(median >= delay, "the proxy delays every round trip ({median:?})");
    assert!(median < delay * 2, "an append took {median:?} through a link of {delay:?} per round trip: more than one round trip per batch");
    assert_eq!(store.check(&log).await.expect("the log verifies"), 14);
    drop(store);
    let _ = sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS \"{db}\" WITH (FORCE)"))).execute(&admin).await;
}
