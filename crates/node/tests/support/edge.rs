//! The node's edge: connection hygiene (`[http]`) — slowloris clients are cut off by
//! the header timeout and do not slow a normal client; keep-alive connections idle
//! longer than the header timeout; oversized heads get 431; connections past the limit
//! per source address are closed — and rate limits (`[rate_limits]`) per admin
//! credential, per tenant and per source of unauthenticated requests.

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use runplane_node::Mode;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use super::{ADMIN, TestNode};

/// Reads one response's status line and headers (and a small body) from `s`.
pub(super) async fn response(s: &mut (impl tokio::io::AsyncRead + Unpin)) -> Option<String> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = s.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).to_string();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len: usize = head
                .lines()
                .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap_or(0)))
                .unwrap_or(0);
            if body.len() >= len {
                return Some(head.to_owned());
            }
        }
    }
}

/// Whether the node closes `s` within `within` (a read sees EOF or an error).
async fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    let mut b = [0u8; 64];
    matches!(tokio::time::timeout(within, s.read(&mut b)).await, Ok(Ok(0) | Err(_)))
}

const LIVEZ: &[u8] = b"GET /livez HTTP/1.1\r\nhost: node\r\n\r\n";

/// `n` requests, each on a new connection; their latencies, sorted.
async fn latencies(node: &TestNode, n: usize) -> Vec<Duration> {
    let mut out = Vec::new();
    for _ in 0..n {
        let t = Instant::now();
        let mut s = TcpStream::connect(node.running.addr).await.expect("connect");
        s.write_all(LIVEZ).await.expect("write");
        assert!(response(&mut s).await.is_some_and(|h| h.starts_with("HTTP/1.1 200")));
        out.push(t.elapsed());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    out.sort();
    out
}

/// 500 connections sending their headers one byte a second: each is closed after
/// `header_read_timeout`, and meanwhile a normal client is served as fast as before.
#[tokio::test]
async fn slowloris_connections_are_cut_off_and_do_not_slow_a_normal_client() {
    let node = TestNode::start(|c| {
        c.http.header_read_timeout = Duration::from_secs(3);
        c.http.max_connections_per_source = 1000;
    })
    .await;
    let alone = latencies(&node, 50).await;

    let addr = node.running.addr;
    let started = Instant::now();
    let mut slow = Vec::new();
    for _ in 0..500 {
        slow.push(tokio::spawn(async move {
            let mut s = TcpStream::connect(addr).await.expect("connect");
            for b in b"GET /livez HTTP/1.1\r\nhost: node\r\nx-slow: ".iter().chain(b"a".repeat(100).iter()) {
                if s.write_all(&[*b]).await.is_err() {
                    return Some(started.elapsed());
                }
                let mut probe = [0u8; 1];
                match tokio::time::timeout(Duration::from_secs(1), s.read(&mut probe)).await {
                    Ok(Ok(0) | Err(_)) => return Some(started.elapsed()),
                    _ => {}
                }
            }
            None
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let under_attack = latencies(&node, 50).await;
    let mut cut = Vec::new();
    for s in slow {
        cut.push(s.await.expect("slow client").expect("the node closed the slow connection"));
    }
    let last = cut.iter().max().copied().unwrap_or_default();
    assert!(last < Duration::from_secs(8), "every slow connection is cut off after the 3 s header timeout (last at {last:?})");
    assert!(cut.iter().min().copied().unwrap_or_default() >= Duration::from_millis(2500), "none before it");
    let p = |v: &[Duration], q: f64| v[((v.len() as f64 * q) as usize).min(v.len() - 1)];
    eprintln!("normal client: alone p50 {:?} p99 {:?}; beside 500 slow clients p50 {:?} p99 {:?}", p(&alone, 0.5), p(&alone, 0.99), p(&under_attack, 0.5), p(&under_attack, 0.99));
    assert!(p(&under_attack, 0.5) <= p(&alone, 0.5) * 3 + Duration::from_millis(5), "the median stays where it was");
    assert!(p(&under_attack, 0.99) < Duration::from_millis(250), "no request waits behind the slow ones");
}

/// A keep-alive connection may idle longer than the header timeout (the idle timeout
/// applies between requests), and is closed after the idle timeout.
#[tokio::test]
async fn keep_alive_connections_idle_up_to_the_idle_timeout_not_the_header_timeout() {
    let node = TestNode::start(|c| {
        c.http.header_read_timeout = Duration::from_millis(400);
        c.http.idle_timeout = Duration::from_millis(1500);
    })
    .await;
    let mut s = TcpStream::connect(node.running.addr).await.expect("connect");
    s.write_all(LIVEZ).await.expect("write");
    assert!(response(&mut s).await.is_some());
    tokio::time::sleep(Duration::from_millis(900)).await;
    s.write_all(LIVEZ).await.expect("write after idling past the header timeout");
    assert!(response(&mut s).await.is_some_and(|h| h.starts_with("HTTP/1.1 200")), "still open after idling 900 ms");
    let idle = Instant::now();
    assert!(closed_within(&mut s, Duration::from_secs(4)).await, "closed after the idle timeout");
    assert!(idle.elapsed() >= Duration::from_millis(1300), "not before it: {:?}", idle.elapsed());

    // A connection that never sends anything gets the header timeout.
    let mut silent = TcpStream::connect(node.running.addr).await.expect("connect");
    let t = Instant::now();
    assert!(closed_within(&mut silent, Duration::from_secs(3)).await);
    assert!(t.elapsed() < Duration::from_millis(1200), "{:?}", t.elapsed());
}

/// A request head larger than `max_header_bytes` gets 431.
#[tokio::test]
async fn a_request_head_over_max_header_bytes_gets_431() {
    let node = TestNode::start(|c| c.http.max_header_bytes = 4096).await;
    let mut s = TcpStream::connect(node.running.addr).await.expect("connect");
    let head = format!("GET /livez HTTP/1.1\r\nhost: node\r\nx-big: {}\r\n\r\n", "b".repeat(5000));
    s.write_all(head.as_bytes()).await.expect("write");
    let answer = response(&mut s).await.expect("an answer");
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    let mut ok = TcpStream::connect(node.running.addr).await.expect("connect");
    let head = format!("GET /livez HTTP/1.1\r\nhost: node\r\nx-fits: {}\r\n\r\n", "b".repeat(3000));
    ok.write_all(head.as_bytes()).await.expect("write");
    assert!(response(&mut ok).await.is_some_and(|h| h.starts_with("HTTP/1.1 200")));
}

/// Past `max_connections_per_source` open connections from one address, a further
/// one is closed at once; when one closes, there is room again.
#[tokio::test]
async fn connections_past_the_per_source_limit_are_closed() {
    let node = TestNode::start(|c| c.http.max_connections_per_source = 4).await;
    let mut open = Vec::new();
    for _ in 0..4 {
        let mut s = TcpStream::connect(node.running.addr).await.expect("connect");
        s.write_all(LIVEZ).await.expect("write");
        assert!(response(&mut s).await.is_some());
        open.push(s);
    }
    let mut fifth = TcpStream::connect(node.running.addr).await.expect("the kernel accepts the TCP connection");
    let _ = fifth.write_all(LIVEZ).await;
    assert!(closed_within(&mut fifth, Duration::from_secs(2)).await, "the fifth connection from one address is closed");
    drop(open.pop());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut again = TcpStream::connect(node.running.addr).await.expect("connect");
    again.write_all(LIVEZ).await.expect("write");
    assert!(response(&mut again).await.is_some_and(|h| h.starts_with("HTTP/1.1 200")), "room again after one closed");
}

/// The admin API past its per-credential rate: 429 `rate_limited` with `Retry-After`;
/// the first throttling in a minute is one admin event naming the credential, the rest
/// are counted; another credential has its own bucket.
#[tokio::test]
async fn the_admin_api_past_a_credentials_rate_gets_429_and_one_admin_event() {
    let node = TestNode::start(|c| {
        c.rate_limits.admin_per_second = 2;
        c.rate_limits.admin_burst = 8;
    })
    .await;
    // An operator token, minted while the root token still has room.
    let (s, minted) = node.admin(Method::POST, "/v1/tokens", Some(json!({"role": "operator", "subject": "ops@example.com"}))).await;
    assert_eq!(s, StatusCode::CREATED, "{minted}");
    let operator = minted["token"].as_str().expect("token").to_owned();
    let mut refused = Vec::new();
    for _ in 0..20 {
        let resp = node.http.get(node.url("/v1/tenants")).bearer_auth(ADMIN).send().await.expect("send");
        if resp.status() == StatusCode::TOO_MANY_REQUESTS {
            let after = resp.headers().get("retry-after").and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
            let body: Value = resp.json().await.expect("json");
            refused.push((after, body));
        }
    }
    assert!(refused.len() >= 10, "past the burst the root token is refused: {} of 20", refused.len());
    let (after, body) = &refused[0];
    assert!(after.is_some_and(|s| s >= 1), "429 carries Retry-After");
    assert_eq!(body["error"]["code"], "rate_limited", "{body}");
    assert!(body["error"]["message"].as_str().is_some_and(|m| m.contains("admin_per_second")), "{body}");
    let other = node.http.get(node.url("/v1/tenants")).bearer_auth(&operator).send().await.expect("send");
    assert_eq!(other.status(), StatusCode::OK, "another credential is not throttled");

    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (s, page) = node.admin(Method::GET, "/v1/audit/events?log=admin&limit=1000", None).await;
    assert_eq!(s, StatusCode::OK, "{page}");
    let throttled: Vec<&Value> = page["items"].as_array().expect("items").iter().map(|e| &e["event"]).filter(|e| e["action"] == "ratelimit.throttled").collect();
    assert_eq!(throttled.len(), 1, "one admin event for the first throttling: {throttled:?}");
    assert_eq!(throttled[0]["actor"], "admin");
    assert_eq!(throttled[0]["outcome"]["code"], "rate_limited");
    let metrics = node.http.get(node.url("/metrics")).send().await.expect("metrics").text().await.expect("text");
    assert!(metrics.lines().any(|l| l.starts_with("runplane_rate_limited_total{limit=\"admin\"}")), "counted:\n{metrics}");
}

/// Requests without a valid credential from one address: 401 up to the burst, then 429;
/// a valid tenant key from the same address is still served.
#[tokio::test]
async fn unauthenticated_requests_from_one_address_are_limited_valid_ones_are_not() {
    let node = TestNode::start(|c| {
        c.rate_limits.unauthenticated_per_second = 1;
        c.rate_limits.unauthenticated_burst = 5;
    })
    .await;
    let key = node.tenant("acme", Mode::Shared).await;
    node.deploy("hello", runplane_examples::HELLO, "hello", &[]).await;
    let mut statuses = Vec::new();
    for n in 0..12 {
        let path = if n % 2 == 0 { "/apps/hello/" } else { "/v1/tenants" };
        statuses.push(node.http.get(node.url(path)).bearer_auth("not-a-key").send().await.expect("send").status());
    }
    assert_eq!(statuses[..5], [StatusCode::UNAUTHORIZED; 5], "{statuses:?}");
    assert!(statuses[6..].iter().all(|s| *s == StatusCode::TOO_MANY_REQUESTS), "{statuses:?}");
    assert_eq!(node.app(&key, Method::GET, "/apps/hello/", None).await.0, StatusCode::OK);
}

/// `tenant_per_second`: one tenant's flood is refused at the edge with 429 (one audit
/// event in its own log); another tenant is served.
#[tokio::test]
async fn a_tenant_past_its_request_rate_is_refused_at_the_edge_others_are_not() {
    let node = TestNode::start(|c| {
        c.rate_limits.tenant_per_second = 2;
        c.rate_limits.tenant_burst = 4;
    })
    .await;
    let flood = node.tenant("flood", Mode::Shared).await;
    let calm = node.tenant("calm", Mode::Shared).await;
    node.deploy("hello", runplane_examples::HELLO, "hello", &[]).await;
    let mut refused = 0;
    for _ in 0..20 {
        let (s, body) = node.app(&flood, Method::GET, "/apps/hello/", None).await;
        if s == StatusCode::TOO_MANY_REQUESTS {
            assert_eq!(body["error"]["code"], "rate_limited", "{body}");
            refused += 1;
        }
    }
    assert!(refused >= 14, "past the burst the tenant is refused: {refused}");
    assert_eq!(node.app(&calm, Method::GET, "/apps/hello/", None).await.0, StatusCode::OK);
    let (_, page) = node.admin(Method::GET, "/v1/audit/events?log=tenant:flood&limit=1000", None).await;
    let items = page["items"].as_array().expect("items");
    assert_eq!(items.iter().filter(|e| e["event"]["action"] == "ratelimit.throttled").count(), 1, "{page}");
    assert_eq!(items.iter().filter(|e| e["event"]["action"] == "invoke.http").count(), 20 - refused, "a refused request ran nothing");
}
