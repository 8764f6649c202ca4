//! The conformance suite: one set of test functions per port that every adapter of
//! that port must pass (the pattern of `object_store`'s `integration` module).
//!
//! Each function panics with a message naming the broken expectation. Adapters' tests
//! call them against a fresh backend; pass two tenant ids to check isolation.

use runplane_ports::{
    BlobStore, EventStore, Filter, KeyValueStore, Message, MessageBus, NewEvent, PortError, RecordStore, SealedSecretStore,
    TenantId,
};

fn tenants() -> (TenantId, TenantId) {
    (TenantId::new("tenant-a").expect("valid"), TenantId::new("tenant-b").expect("valid"))
}

/// Records: revisions, conflicts, not-found, ordering, pagination, filters, unicode,
/// large values and tenant isolation.
pub async fn records(store: &dyn RecordStore) {
    let (a, b) = tenants();
    let r1 = store.put(&a, "orders", "o1", r#"{"item":"tea","n":1}"#, Some(0)).await.expect("create");
    assert_eq!(r1.revision, 1, "first write has revision 1");
    assert!(matches!(store.put(&a, "orders", "o1", "{}", Some(0)).await, Err(PortError::Conflict(_))), "create over existing conflicts");
    assert!(matches!(store.put(&a, "orders", "o1", "{}", Some(7)).await, Err(PortError::Conflict(_))), "wrong revision conflicts");
    let r2 = store.put(&a, "orders", "o1", r#"{"item":"tea","n":2}"#, Some(1)).await.expect("update at revision");
    assert_eq!(r2.revision, 2);
    let r3 = store.put(&a, "orders", "o1", r#"{"item":"tea","n":3}"#, None).await.expect("blind update");
    assert_eq!(r3.revision, 3);
    assert_eq!(store.get(&a, "orders", "o1").await.expect("get").expect("present").body, r#"{"item":"tea","n":3}"#);
    assert!(store.get(&a, "orders", "missing").await.expect("get").is_none(), "absent is None");

    // Isolation: tenant b sees nothing of a, and its writes land in its own space.
    assert!(store.get(&b, "orders", "o1").await.expect("get").is_none(), "tenant b must not see tenant a's record");
    assert!(!store.delete(&b, "orders", "o1", None).await.expect("delete"), "tenant b must not delete tenant a's record");
    store.put(&b, "orders", "o1", r#"{"owner":"b"}"#, Some(0)).await.expect("b creates the same id");
    assert_eq!(store.get(&a, "orders", "o1").await.expect("get").expect("present").revision, 3, "a's record is untouched");
    let b_page = store.query(&b, "orders", &[], 100, None).await.expect("query b");
    assert_eq!(b_page.items.len(), 1, "tenant b lists only its own records");

    // Unicode ids and bodies, large bodies.
    let big = format!(r#"{{"blob":"{}"}}"#, "x".repeat(256 * 1024));
    store.put(&a, "orders", "ünï-😀", r#"{"name":"\u00e9\ud83d\ude00"}"#, None).await.expect("unicode id");
    store.put(&a, "big", "one", &big, None).await.expect("large body");
    assert_eq!(store.get(&a, "big", "one").await.expect("get").expect("present").body.len(), big.len());

    // Ordering and pagination: ids in byte order, every item exactly once.
    for i in (0..25).rev() {
        let body = format!(r#"{{"i":{i},"even":{},"tag":"t{}"}}"#, i % 2 == 0, i % 3);
        store.put(&a, "paged", &format!("id-{i:03}"), &body, None).await.expect("put paged");
    }
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = store.query(&a, "paged", &[], 7, cursor.as_deref()).await.expect("page");
        assert!(page.items.len() <= 7);
        seen.extend(page.items.iter().map(|r| r.id.clone()));
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    let expected: Vec<String> = (0..25).map(|i| format!("id-{i:03}")).collect();
    assert_eq!(seen, expected, "pagination returns every record once, ordered by id");

    let evens = store
        .query(&a, "paged", &[Filter { field: "even".into(), value: serde_json::json!(true) }], 100, None)
        .await
        .expect("filter bool");
    assert_eq!(evens.items.len(), 13);
    let t1 = store
        .query(
            &a,
            "paged",
            &[
                Filter { field: "tag".into(), value: serde_json::json!("t1") },
                Filter { field: "even".into(), value: serde_json::json!(false) },
            ],
            100,
            None,
        )
        .await
        .expect("filter two fields");
    assert!(t1.items.iter().all(|r| r.body.contains(r#""tag":"t1""#) && r.body.contains(r#""even":false"#)));
    let by_num = store
        .query(&a, "paged", &[Filter { field: "i".into(), value: serde_json::json!(12) }], 100, None)
        .await
        .expect("filter number");
    assert_eq!(by_num.items.len(), 1);
    assert_eq!(by_num.items[0].id, "id-012");
    assert!(store.query(&b, "paged", &[], 100, None).await.expect("query b").items.is_empty(), "no cross-tenant query results");

    // Filters are type-strict and numbers compare numerically, on every adapter.
    store.put(&a, "typed", "n1", r#"{"v":1}"#, None).await.expect("put");
    store.put(&a, "typed", "n2", r#"{"v":1.0}"#, None).await.expect("put");
    store.put(&a, "typed", "s1", r#"{"v":"1"}"#, None).await.expect("put");
    store.put(&a, "typed", "t1", r#"{"v":true}"#, None).await.expect("put");
    store.put(&a, "typed", "z0", r#"{"v":null}"#, None).await.expect("put");
    store.put(&a, "typed", "zz", r#"{"w":1}"#, None).await.expect("put");
    let ids = |p: runplane_ports::Page| p.items.into_iter().map(|r| r.id).collect::<Vec<_>>();
    let by = |v: serde_json::Value| vec![Filter { field: "v".into(), value: v }];
    assert_eq!(ids(store.query(&a, "typed", &by(serde_json::json!(1)), 10, None).await.expect("q")), ["n1", "n2"], "1 matches 1 and 1.0 only");
    assert_eq!(ids(store.query(&a, "typed", &by(serde_json::json!("1")), 10, None).await.expect("q")), ["s1"], "a string never matches a number");
    assert_eq!(ids(store.query(&a, "typed", &by(serde_json::json!(true)), 10, None).await.expect("q")), ["t1"], "true never matches 1");
    assert_eq!(ids(store.query(&a, "typed", &by(serde_json::Value::Null), 10, None).await.expect("q")), ["z0"], "null matches JSON null, not a missing field");

    // Ids order by bytes everywhere: upper case before lower case, a trailing space is a different id.
    for id in ["b", "a ", "a", "B", "é"] {
        store.put(&a, "bytes", id, "{}", Some(0)).await.expect("distinct ids");
    }
    assert_eq!(ids(store.query(&a, "bytes", &[], 10, None).await.expect("q")), ["B", "a", "a ", "b", "é"]);

    // Bad input is refused, not executed.
    for bad in ["", "../x", "a//b"] {
        assert!(matches!(store.put(&a, bad, "x", "{}", None).await, Err(PortError::Invalid(_))), "collection {bad:?} refused");
    }
    assert!(matches!(
        store.query(&a, "paged", &[Filter { field: "x') OR 1=1 --".into(), value: serde_json::json!(1) }], 10, None).await,
        Err(PortError::Invalid(_))
    ));
    assert!(matches!(store.query(&a, "paged", &[], 10, Some("not-a-cursor!")).await, Err(PortError::Invalid(_))));

    // Delete with revision.
    assert!(matches!(store.delete(&a, "orders", "o1", Some(1)).await, Err(PortError::Conflict(_))));
    assert!(store.delete(&a, "orders", "o1", Some(3)).await.expect("delete"));
    assert!(!store.delete(&a, "orders", "o1", None).await.expect("delete again"));
    assert!(store.get(&b, "orders", "o1").await.expect("get").is_some(), "b's record survives a's delete");
}

/// Key-value: get/set/delete, binary values, increment, CAS, listing, isolation.
pub async fn key_value(store: &dyn KeyValueStore) {
    let (a, b) = tenants();
    let binary: Vec<u8> = (0..=255u8).collect();
    store.set(&a, "bucket", "k", &binary).await.expect("set");
    assert_eq!(store.get(&a, "bucket", "k").await.expect("get"), Some(binary.clone()), "binary values round-trip");
    assert!(store.exists(&a, "bucket", "k").await.expect("exists"));
    assert_eq!(store.get(&b, "bucket", "k").await.expect("get"), None, "tenant b must not see tenant a's key");
    store.set(&b, "bucket", "k", b"b").await.expect("set b");
    assert_eq!(store.get(&a, "bucket", "k").await.expect("get"), Some(binary));

    assert_eq!(store.increment(&a, "c", "n", 5).await.expect("inc"), 5);
    assert_eq!(store.increment(&a, "c", "n", -2).await.expect("inc"), 3);
    assert_eq!(store.increment(&b, "c", "n", 1).await.expect("inc b"), 1, "counters are per tenant");
    assert!(matches!(store.increment(&a, "bucket", "k", 1).await, Err(PortError::Invalid(_))), "non-numeric value");

    assert!(store.compare_and_swap(&a, "cas", "x", None, b"1").await.expect("cas create"));
    assert!(!store.compare_and_swap(&a, "cas", "x", None, b"2").await.expect("cas stale"));
    assert!(store.compare_and_swap(&a, "cas", "x", Some(b"1"), b"2").await.expect("cas"));
    assert_eq!(store.get(&a, "cas", "x").await.expect("get"), Some(b"2".to_vec()));
    assert!(!store.compare_and_swap(&b, "cas", "x", Some(b"2"), b"3").await.expect("cas b"), "b cannot swap a's value");

    // Concurrent increments and CAS lose nothing and let exactly one swapper win.
    let incs = futures::future::join_all((0..20).map(|_| store.increment(&a, "c", "race", 1))).await;
    assert!(incs.iter().all(|r| r.is_ok()), "concurrent increments succeed: {incs:?}");
    assert_eq!(store.get(&a, "c", "race").await.expect("get"), Some(b"20".to_vec()));
    let values: Vec<[u8; 1]> = (0..10u8).map(|i| [i]).collect();
    let swaps = futures::future::join_all(values.iter().map(|v| store.compare_and_swap(&a, "cas", "race", None, v))).await;
    assert_eq!(swaps.iter().filter(|r| matches!(r, Ok(true))).count(), 1, "exactly one creator wins: {swaps:?}");

    for i in 0..1005 {
        store.set(&a, "many", &format!("key-{i:05}"), b"v").await.expect("set many");
    }
    let first = store.list_keys(&a, "many", None).await.expect("list");
    assert_eq!(first.keys.len(), 1000);
    let second = store.list_keys(&a, "many", first.cursor.as_deref()).await.expect("list 2");
    assert_eq!(second.keys.len(), 5);
    assert!(second.cursor.is_none());
    assert!(store.list_keys(&b, "many", None).await.expect("list b").keys.is_empty());

    // Keys that look like another tenant's prefix are just keys.
    let longer = TenantId::new("tenant-a-x").expect("valid");
    store.set(&longer, "bucket", "k2", b"x").await.expect("set longer");
    store.set(&a, "bucket", "x/../tenant-b/k", b"y").await.expect("odd key");
    assert_eq!(store.get(&a, "bucket", "k2").await.expect("get"), None, "prefix collision across tenants");
    assert_eq!(store.get(&b, "bucket", "k").await.expect("get b"), Some(b"b".to_vec()), "an odd key does not reach another tenant");
    store.delete(&a, "bucket", "k").await.expect("delete");
    store.delete(&a, "bucket", "k").await.expect("delete absent is fine");
    assert!(!store.exists(&a, "bucket", "k").await.expect("exists"));
    assert!(store.exists(&b, "bucket", "k").await.expect("exists b"));
}

/// Events: expected versions, ordering, reading from a position, isolation.
pub async fn events(store: &dyn EventStore) {
    let (a, b) = tenants();
    let ev = |t: &str, d: &str| NewEvent { event_type: t.into(), data: d.into() };
    assert_eq!(store.append(&a, "s", &[ev("created", "{}"), ev("paid", r#"{"amount":1.5}"#)], Some(0)).await.expect("append"), 2);
    assert!(matches!(store.append(&a, "s", &[ev("x", "{}")], Some(1)).await, Err(PortError::Conflict(_))));
    assert_eq!(store.append(&a, "s", &[ev("shipped", r#"{"to":"Zürich"}"#)], Some(2)).await.expect("append"), 3);
    assert_eq!(store.append(&a, "s", &[ev("noted", "{}")], None).await.expect("append any"), 4);
    assert_eq!(store.append(&b, "s", &[ev("other", "{}")], Some(0)).await.expect("b's own stream"), 1);

    let all = store.read(&a, "s", 1, 100).await.expect("read");
    assert_eq!(all.iter().map(|e| e.version).collect::<Vec<_>>(), vec![1, 2, 3, 4]);
    assert_eq!(all[2].data, r#"{"to":"Zürich"}"#);
    let tail = store.read(&a, "s", 3, 1).await.expect("read tail");
    assert_eq!(tail.len(), 1);
    assert_eq!(tail[0].event_type, "shipped");
    assert_eq!(store.read(&b, "s", 1, 100).await.expect("read b").len(), 1, "streams are per tenant");
    assert!(store.read(&a, "empty", 1, 10).await.expect("read empty").is_empty());

    // Appends without an expected version never conflict, however many race; each
    // gets its own dense place.
    let racers = (0..32).map(|i| {
        let a = a.clone();
        async move { store.append(&a, "busy", &[ev("n", &format!("{{\"i\":{i}}}"))], None).await }
    });
    let mut versions: Vec<u64> = futures::future::join_all(racers)
        .await
        .into_iter()
        .map(|r| r.expect("an append without an expected version never fails for contention"))
        .collect();
    versions.sort_unstable();
    assert_eq!(versions, (1..=32).collect::<Vec<u64>>());
}

/// Blobs: put/get/range/list/metadata/delete, binary and large data, path traversal, isolation.
pub async fn blobs(store: &dyn BlobStore) {
    let (a, b) = tenants();
    let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let meta = store.put(&a, "docs", "dir/file.bin", data.clone(), Some("application/octet-stream")).await.expect("put");
    assert_eq!(meta.size, 100_000);
    assert_eq!(meta.digest.len(), 64);
    assert_eq!(store.get(&a, "docs", "dir/file.bin", None).await.expect("get"), Some(data.clone()));
    assert_eq!(store.get(&a, "docs", "dir/file.bin", Some((10, 20))).await.expect("range"), Some(data[10..20].to_vec()));
    assert_eq!(
        store.metadata(&a, "docs", "dir/file.bin").await.expect("meta").expect("present").content_type.as_deref(),
        Some("application/octet-stream")
    );
    assert_eq!(store.get(&b, "docs", "dir/file.bin", None).await.expect("get b"), None, "tenant b must not read a's object");
    assert!(store.list(&b, "docs", "").await.expect("list b").is_empty());

    store.put(&a, "docs", "dir/ünï 😀.txt", "héllo".as_bytes().to_vec(), Some("text/plain")).await.expect("unicode name");
    store.put(&a, "docs", "other.txt", b"o".to_vec(), None).await.expect("put other");
    let listed: Vec<String> = store.list(&a, "docs", "dir/").await.expect("list").into_iter().map(|m| m.name).collect();
    assert_eq!(listed, vec!["dir/file.bin".to_string(), "dir/ünï 😀.txt".to_string()]);

    for bad in ["../../etc/passwd", "../tenant-b/docs/x", "a/../../b", "/abs", "a//b", "a\\b"] {
        assert!(matches!(store.get(&a, "docs", bad, None).await, Err(PortError::Invalid(_))), "name {bad:?} refused");
        assert!(matches!(store.put(&a, "docs", bad, vec![1], None).await, Err(PortError::Invalid(_))), "name {bad:?} refused");
    }
    for bad in ["..", "a/b", ""] {
        assert!(matches!(store.list(&a, bad, "").await, Err(PortError::Invalid(_))), "container {bad:?} refused");
    }
    assert!(matches!(store.list(&a, "docs", "../").await, Err(PortError::Invalid(_))));

    // A tenant whose id extends another's is still a different prefix.
    let longer = TenantId::new("tenant-a-x").expect("valid");
    store.put(&longer, "docs", "dir/mine.txt", b"x".to_vec(), None).await.expect("put longer");
    assert!(store.list(&a, "docs", "").await.expect("list").iter().all(|m| m.name != "dir/mine.txt"), "prefix collision across tenants");
    assert_eq!(store.get(&a, "docs", "dir/mine.txt", None).await.expect("get"), None);
    assert!(!store.delete(&b, "docs", "other.txt").await.expect("b delete"), "b cannot delete a's object");
    assert!(store.delete(&a, "docs", "other.txt").await.expect("delete"));
    assert!(!store.delete(&a, "docs", "other.txt").await.expect("delete again"));
    assert_eq!(store.get(&a, "docs", "other.txt", None).await.expect("get"), None);
}

/// Messaging: a subscription receives each publication once, tagged with its tenant,
/// with payload and headers unchanged; groups share or each get the messages.
pub async fn messaging(bus: &dyn MessageBus) {
    use std::time::Duration;
    let (a, b) = tenants();
    let wait = Duration::from_secs(10);
    let mut sub = bus.subscribe("order.created", "conformance").await.expect("subscribe");
    let headers = vec![("k".to_string(), "v".to_string()), ("ünï".to_string(), "a=b; c".to_string()), ("k".to_string(), "again".to_string())];
    bus.publish(&a, "order.created", Message { payload: vec![0, 1, 2, 255], headers: headers.clone() }).await.expect("publish a");
    bus.publish(&b, "order.created", Message { payload: b"b".to_vec(), headers: vec![] }).await.expect("publish b");
    bus.publish(&a, "other.topic", Message { payload: b"x".to_vec(), headers: vec![] }).await.expect("publish other");
    let first = tokio::time::timeout(wait, sub.next()).await.expect("delivery").expect("open");
    sub.ack().await.expect("ack");
    assert_eq!(first.tenant, a);
    assert_eq!(first.topic, "order.created");
    assert_eq!(first.message.payload, vec![0, 1, 2, 255], "binary payloads arrive unchanged");
    assert_eq!(first.message.headers, headers, "headers arrive in order, repeats and unicode included");
    let second = tokio::time::timeout(wait, sub.next()).await.expect("delivery").expect("open");
    sub.ack().await.expect("ack");
    assert_eq!(second.tenant, b, "each delivery names the publishing tenant");
    assert!(
        tokio::time::timeout(Duration::from_millis(500), sub.next()).await.is_err(),
        "no delivery from another topic"
    );

    // A large payload, and ordering of one publisher's messages.
    let big: Vec<u8> = (0..512 * 1024u32).map(|i| (i % 253) as u8).collect();
    bus.publish(&a, "order.created", Message { payload: big.clone(), headers: vec![] }).await.expect("publish big");
    for i in 0..20u8 {
        bus.publish(&a, "order.created", Message { payload: vec![i], headers: vec![] }).await.expect("publish seq");
    }
    let got = tokio::time::timeout(wait, sub.next()).await.expect("delivery").expect("open");
    sub.ack().await.expect("ack");
    assert_eq!(got.message.payload, big);
    for i in 0..20u8 {
        let d = tokio::time::timeout(wait, sub.next()).await.expect("delivery").expect("open");
        sub.ack().await.expect("ack");
        assert_eq!(d.message.payload, vec![i], "one publisher's messages arrive in order");
    }

    // Another group gets every message; two members of one group share them.
    let mut other = bus.subscribe("group.topic", "other-group").await.expect("subscribe");
    let mut member1 = bus.subscribe("group.topic", "shared-group").await.expect("subscribe");
    let mut member2 = bus.subscribe("group.topic", "shared-group").await.expect("subscribe");
    for i in 0..10u8 {
        bus.publish(&a, "group.topic", Message { payload: vec![i], headers: vec![] }).await.expect("publish");
    }
    for _ in 0..10 {
        tokio::time::timeout(wait, other.next()).await.expect("the other group gets every message").expect("open");
        other.ack().await.expect("ack");
    }
    let mut shared = Vec::new();
    while shared.len() < 10 {
        let d = tokio::select! {
            d = member1.next() => d.map(|d| (1, d)),
            d = member2.next() => d.map(|d| (2, d)),
            _ = tokio::time::sleep(wait) => None,
        };
        let (who, d) = d.expect("the shared group gets every message");
        if who == 1 { member1.ack().await.expect("ack") } else { member2.ack().await.expect("ack") }
        shared.push(d.message.payload[0]);
    }
    shared.sort();
    assert_eq!(shared, (0..10u8).collect::<Vec<_>>(), "each message reaches the shared group exactly once");

    for bad in ["bad topic", "a*", "a>", "a#", ""] {
        assert!(
            matches!(bus.publish(&a, bad, Message { payload: vec![], headers: vec![] }).await, Err(PortError::Invalid(_))),
            "topic {bad:?} refused"
        );
    }
    assert!(matches!(bus.subscribe("ok", "Bad.Group").await, Err(PortError::Invalid(_))));
}

/// Sealed secrets: versions taken once, compare-and-replace, listing without values,
/// isolation. (What the bytes mean is the envelope layer's business, not the store's.)
pub async fn secrets(store: &dyn SealedSecretStore) {
    let (a, b) = tenants();
    assert_eq!(store.latest(&a, "api-key").await.expect("latest"), None);
    store.insert(&a, "api-key", 1, b"sealed-1").await.expect("insert v1");
    store.insert(&a, "api-key", 2, b"sealed-2").await.expect("insert v2");
    assert!(
        matches!(store.insert(&a, "api-key", 2, b"other").await, Err(PortError::Conflict(_))),
        "a version is taken once"
    );
    assert!(matches!(store.insert(&a, "api-key", 0, b"x").await, Err(PortError::Invalid(_))), "versions start at 1");
    let latest = store.latest(&a, "api-key").await.expect("latest").expect("exists");
    assert_eq!((latest.version, latest.sealed.as_slice()), (2, b"sealed-2".as_slice()));
    assert_eq!(store.version(&a, "api-key", 1).await.expect("v1").expect("exists").sealed, b"sealed-1");
    assert_eq!(store.version(&a, "api-key", 3).await.expect("v3"), None);
    assert!(!store.replace(&a, "api-key", 1, b"not-it", b"rewrapped").await.expect("replace"), "stale bytes are not replaced");
    assert!(store.replace(&a, "api-key", 1, b"sealed-1", b"rewrapped").await.expect("replace"));
    assert_eq!(store.version(&a, "api-key", 1).await.expect("v1").expect("exists").sealed, b"rewrapped");
    assert_eq!(store.latest(&b, "api-key").await.expect("latest b"), None, "b cannot read a's secret");
    assert!(!store.replace(&b, "api-key", 1, b"rewrapped", b"stolen").await.expect("replace b"), "b cannot replace a's secret");
    let listed = store.list(&a).await.expect("list");
    assert_eq!(listed.len(), 1);
    assert_eq!((listed[0].name.as_str(), listed[0].version), ("api-key", 2));
    assert!(store.list(&b).await.expect("list b").is_empty());
}
