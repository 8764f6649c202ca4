//! Oversized request bodies are answered 413 with the `ErrorResponse`, also for a
//! client that writes the whole body before it reads anything (Python's `urllib`, most
//! SDKs): the node answers from `Content-Length` at once and then drains the rest
//! (lingering close) instead of resetting the connection under the client.

use reqwest::Method;
use runplane_node::Mode;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{ADMIN, TestNode};

const BODY: usize = 64 << 20;

/// Writes the request head and the whole body, then reads the whole answer.
async fn write_all_then_read(node: &TestNode, head: String, body: &[u8]) -> (u16, String, Value) {
    let mut stream = tokio::net::TcpStream::connect(node.running.addr).await.expect("connect");
    stream.write_all(head.as_bytes()).await.expect("write the head");
    stream.write_all(body).await.expect("the whole body is written without the connection being reset");
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.expect("the answer is read without the connection being reset");
    let text = String::from_utf8_lossy(&answer).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP answer");
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).expect("a status line");
    (status, head.to_ascii_lowercase(), serde_json::from_str(body).unwrap_or(Value::String(body.to_owned())))
}

fn assert_too_large(status: u16, head: &str, body: &Value) {
    assert_eq!(status, 413, "{head}\n{body}");
    assert_eq!(body["error"]["code"], "body_too_large", "{body}");
    assert!(body["error"]["message"].as_str().is_some_and(|m| m.contains("limit")), "{body}");
    assert_eq!(body["protocol_version"], "1.0", "{body}");
    assert!(head.contains("connection: close"), "{head}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_64_mib_body_gets_413_from_a_client_that_writes_it_all_before_reading() {
    let node = TestNode::start(|_| {}).await;
    let key = node.tenant("acme", Mode::Shared).await;
    node.deploy("orders", runplane_examples::ORDERS, "orders", &[]).await;
    let body = vec![b'x'; BODY];

    // Tenant traffic, with Content-Length: refused before the credential is even looked at.
    let head = format!(
        "POST /apps/orders/orders HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {key}\r\ncontent-type: application/json\r\ncontent-length: {BODY}\r\n\r\n"
    );
    let (status, head, answer) = write_all_then_read(&node, head, &body).await;
    assert_too_large(status, &head, &answer);
    assert!(answer["error"]["message"].as_str().is_some_and(|m| m.contains("node.max_body_bytes")), "{answer}");

    // Chunked, so only reading tells the size: refused once the limit is passed.
    let mut chunked = Vec::with_capacity(BODY + 1024);
    for piece in body.chunks(1 << 20) {
        chunked.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        chunked.extend_from_slice(piece);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let head = format!("POST /apps/orders/orders HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {key}\r\ntransfer-encoding: chunked\r\n\r\n");
    let (status, head, answer) = write_all_then_read(&node, head, &chunked).await;
    assert_too_large(status, &head, &answer);

    // The admin API's component upload limit (64 MiB): one byte over it.
    let upload = vec![0u8; BODY + 1];
    let head = format!(
        "POST /v1/capabilities?name=big&version=1.0.0 HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {ADMIN}\r\ncontent-length: {}\r\n\r\n",
        upload.len()
    );
    let (status, head, answer) = write_all_then_read(&node, head, &upload).await;
    assert_too_large(status, &head, &answer);

    // The node is unharmed and nothing was stored.
    let (s, list) = node.admin(Method::GET, "/v1/capabilities", None).await;
    assert!(s.is_success(), "{list}");
    assert!(!list.to_string().contains("\"big\""), "{list}");
    let (s, _) = node.app(&key, Method::GET, "/apps/orders/orders", None).await;
    assert!(s.is_success());
}
