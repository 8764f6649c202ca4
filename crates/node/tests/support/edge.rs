//! Connection hygiene at the node's edge (`[http]`): slowloris clients are cut off by
//! the header timeout and do not slow a normal client; keep-alive connections idle
//! longer than the header timeout; oversized heads get 431; connections past the limit
//! per source address are closed.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use super::TestNode;

/// Reads one response's status line and headers (and a small body) from `s`.
async fn response(s: &mut TcpStream) -> Option<String> {
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
