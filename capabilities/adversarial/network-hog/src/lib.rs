//! Adversarial component for the egress tests: GETs `?url=` (URL-encoded, absolute
//! http(s)) `?n=` times (default 1000) through `wasi:http/outgoing-handler`, reading
//! every body. Answers 200 with the total body bytes, or 502 with the error of the
//! first request that fails.

wit_bindgen::generate!({ path: "../../../wit", world: "runplane:ports/http-capability", generate_all });

use wasi::http::types as t;

struct Bad;

impl runplane_sdk::HttpHandler for Bad {
    fn handle(request: runplane_sdk::Request) -> runplane_sdk::Response {
        let url = request.query_param("url").unwrap_or_default();
        let n: u64 = request.query_param("n").and_then(|v| v.parse().ok()).unwrap_or(1000);
        let mut total: u64 = 0;
        for _ in 0..n {
            match get(&url) {
                Ok(bytes) => total += bytes,
                Err(e) => return runplane_sdk::Response::text(502, e),
            }
        }
        runplane_sdk::Response::text(200, total.to_string())
    }
}

/// GETs `url` and returns the length of the response body.
fn get(url: &str) -> Result<u64, String> {
    let (scheme, rest) = url.split_once("://").ok_or_else(|| format!("not an absolute http(s) URL: {url:?}"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let request = t::OutgoingRequest::new(t::Fields::new());
    let _ = request.set_method(&t::Method::Get);
    let _ = request.set_scheme(Some(&if scheme == "https" { t::Scheme::Https } else { t::Scheme::Http }));
    let _ = request.set_authority(Some(authority));
    let _ = request.set_path_with_query(Some(path));
    let body = request.body().map_err(|_| "request body unavailable".to_string())?;
    let future = wasi::http::outgoing_handler::handle(request, None).map_err(|e| format!("outbound request refused: {e:?}"))?;
    let _ = t::OutgoingBody::finish(body, None);
    future.subscribe().block();
    let response = match future.get() {
        Some(Ok(Ok(response))) => response,
        Some(Ok(Err(e))) => return Err(format!("outbound request failed: {e:?}")),
        _ => return Err("outbound request failed".into()),
    };
    let incoming = response.consume().map_err(|_| "response body unavailable".to_string())?;
    let mut bytes: u64 = 0;
    {
        let stream = incoming.stream().map_err(|_| "response body unavailable".to_string())?;
        loop {
            match stream.blocking_read(64 * 1024) {
                Ok(chunk) => bytes += chunk.len() as u64,
                Err(wasi::io::streams::StreamError::Closed) => break,
                Err(e) => return Err(format!("reading the response body failed: {e:?}")),
            }
        }
    }
    let _ = t::IncomingBody::finish(incoming);
    Ok(bytes)
}

runplane_sdk::http_glue!(Bad);
export!(Bad);
