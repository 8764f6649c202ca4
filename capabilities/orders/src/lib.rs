//! `orders`: the example capability that exercises every port.
//!
//! REST CRUD on records, an `order.created` event and message, an invoice blob, a
//! config value, a secret used to sign a webhook, an allow-listed outbound call, a
//! key-value counter, logs and metrics. It knows nothing of tenants, modes or
//! technologies: the host scopes every port call to the caller's tenant.

wit_bindgen::generate!({ path: "../../wit", world: "runplane:ports/capability", generate_all });

use hmac::{Hmac, Mac};
use runplane::ports::types::PortError;
use runplane::ports::{blobs, events, messaging, records, secrets, telemetry};
use runplane_sdk::{Request, Response};
use serde_json::{Map, Value, json};
use wasi::logging::logging::{Level, log};

struct Orders;

const COLLECTION: &str = "orders";
const STREAM: &str = "orders";

fn port_error(e: PortError) -> Response {
    match e {
        PortError::NotFound(m) => Response::error(404, m),
        PortError::Conflict(m) => Response::error(409, m),
        PortError::QuotaExceeded(m) => Response::error(507, m),
        PortError::Unavailable(m) => Response::error(503, m),
        PortError::Invalid(m) => Response::error(400, m),
    }
}

impl runplane_sdk::HttpHandler for Orders {
    fn handle(req: Request) -> Response {
        let segments = req.segments();
        let segs: Vec<&str> = segments.iter().map(String::as_str).collect();
        let result = match (req.method.as_str(), segs.as_slice()) {
            ("POST", ["orders"]) => create(&req),
            ("GET", ["orders"]) => list(&req),
            ("GET", ["orders", id]) => fetch(id),
            ("PUT", ["orders", id]) => update(&req, id),
            ("DELETE", ["orders", id]) => remove(id),
            ("GET", ["orders", id, "invoice"]) => invoice(id),
            ("POST", ["orders", id, "notify"]) => notify(id),
            ("GET", ["events"]) => read_events(&req),
            ("GET", ["stats"]) => stats(),
            (_, ["orders"]) | (_, ["orders", _]) | (_, ["orders", _, "invoice" | "notify"]) | (_, ["events" | "stats"]) => {
                Err(Response::error(405, format!("{} is not allowed on {}", req.method, req.path)))
            }
            _ => Err(Response::error(404, format!("no such resource: {}", req.path))),
        };
        result.unwrap_or_else(|e| e)
    }
}

type Outcome = Result<Response, Response>;

fn now_rfc3339() -> String {
    let t = wasi::clocks::wall_clock::now();
    runplane_sdk::rfc3339(t.seconds, t.nanoseconds)
}

fn new_id() -> String {
    format!("ord_{:016x}", wasi::random::random::get_random_u64())
}

fn stored(record: &records::Record) -> Result<Value, Response> {
    let mut v: Value = serde_json::from_str(&record.body).map_err(|e| Response::error(500, format!("stored order is not JSON: {e}")))?;
    if let Some(o) = v.as_object_mut() {
        o.insert("revision".into(), json!(record.revision));
    }
    Ok(v)
}

fn validate(body: &Value) -> Result<Map<String, Value>, Response> {
    let obj = body.as_object().ok_or_else(|| Response::error(400, "an order must be a JSON object"))?;
    match obj.get("item") {
        Some(Value::String(s)) if !s.is_empty() => {}
        _ => return Err(Response::error(400, "field 'item' must be a non-empty string")),
    }
    match obj.get("quantity").and_then(Value::as_i64) {
        Some(q) if q >= 1 => {}
        _ => return Err(Response::error(400, "field 'quantity' must be an integer of at least 1")),
    }
    Ok(obj.clone())
}

fn signature(order: &Value) -> Option<String> {
    let key = secrets::get("webhook-signing-key").ok()?;
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&key).ok()?;
    mac.update(serde_json::to_string(order).unwrap_or_default().as_bytes());
    Some(hex::encode(mac.finalize().into_bytes()))
}

fn bucket() -> Result<wasi::keyvalue::store::Bucket, Response> {
    wasi::keyvalue::store::open("stats").map_err(|e| Response::error(503, format!("state store: {e:?}")))
}

fn create(req: &Request) -> Outcome {
    let body = req.json().map_err(|e| Response::error(400, e))?;
    let mut order = validate(&body)?;
    let id = new_id();
    let currency = wasi::config::store::get("currency").ok().flatten().unwrap_or_else(|| "EUR".into());
    order.insert("id".into(), json!(id));
    order.insert("currency".into(), json!(currency));
    order.insert("created_at".into(), json!(now_rfc3339()));
    order.remove("revision");
    let order = Value::Object(order);
    let text = serde_json::to_string(&order).unwrap_or_default();

    let record = records::put(COLLECTION, &id, &text, Some(0)).map_err(port_error)?;
    events::append(STREAM, &[events::NewEvent { event_type: "order.created".into(), data: text.clone() }], None)
        .map_err(port_error)?;
    messaging::publish("order.created", text.as_bytes(), &[("content-type".into(), "application/json".into())])
        .map_err(port_error)?;
    let invoice = format!(
        "INVOICE {id}\nitem: {}\nquantity: {}\ncurrency: {currency}\n",
        order["item"].as_str().unwrap_or_default(),
        order["quantity"]
    );
    blobs::put("invoices", &format!("{id}.txt"), invoice.as_bytes(), Some("text/plain")).map_err(port_error)?;
    let bucket = bucket()?;
    wasi::keyvalue::atomics::increment(&bucket, "orders_created", 1).map_err(|e| Response::error(503, format!("state store: {e:?}")))?;
    telemetry::counter("orders_created", 1, &[("currency".into(), currency.clone())]);
    log(Level::Info, "orders", &format!("created order {id}"));

    let mut out = stored(&record)?;
    if let (Some(sig), Some(o)) = (signature(&order), out.as_object_mut()) {
        o.insert("signature".into(), json!(sig));
    }
    Ok(Response::json(201, &out))
}

fn fetch(id: &str) -> Outcome {
    match records::get(COLLECTION, id).map_err(port_error)? {
        Some(r) => Ok(Response::json(200, &stored(&r)?)),
        None => Err(Response::error(404, format!("order {id} not found"))),
    }
}

fn list(req: &Request) -> Outcome {
    let limit = req.query_param("limit").and_then(|l| l.parse().ok()).unwrap_or(50u32).clamp(1, 1000);
    let cursor = req.query_param("cursor").filter(|c| !c.is_empty());
    let page = records::query(COLLECTION, &[], limit, cursor.as_deref()).map_err(port_error)?;
    let items: Result<Vec<Value>, Response> = page.items.iter().map(stored).collect();
    Ok(Response::json(200, &json!({ "items": items?, "next_cursor": page.next_cursor })))
}

fn update(req: &Request, id: &str) -> Outcome {
    let body = req.json().map_err(|e| Response::error(400, e))?;
    let mut order = validate(&body)?;
    let existing = records::get(COLLECTION, id).map_err(port_error)?.ok_or_else(|| Response::error(404, format!("order {id} not found")))?;
    let expected = match req.header("if-match") {
        Some(v) => Some(v.trim_matches('"').parse::<u64>().map_err(|_| Response::error(400, "If-Match must be a revision number"))?),
        None => Some(existing.revision),
    };
    let old: Value = serde_json::from_str(&existing.body).unwrap_or(Value::Null);
    for keep in ["id", "created_at", "currency"] {
        if let Some(v) = old.get(keep) {
            order.insert(keep.into(), v.clone());
        }
    }
    order.remove("revision");
    let text = serde_json::to_string(&Value::Object(order)).unwrap_or_default();
    let record = records::put(COLLECTION, id, &text, expected).map_err(port_error)?;
    events::append(STREAM, &[events::NewEvent { event_type: "order.updated".into(), data: text }], None).map_err(port_error)?;
    Ok(Response::json(200, &stored(&record)?))
}

fn remove(id: &str) -> Outcome {
    if records::delete(COLLECTION, id, None).map_err(port_error)? {
        let _ = blobs::delete("invoices", &format!("{id}.txt"));
        events::append(STREAM, &[events::NewEvent { event_type: "order.deleted".into(), data: json!({"id": id}).to_string() }], None)
            .map_err(port_error)?;
        Ok(Response::empty(204))
    } else {
        Err(Response::error(404, format!("order {id} not found")))
    }
}

fn invoice(id: &str) -> Outcome {
    match blobs::get("invoices", &format!("{id}.txt"), None).map_err(port_error)? {
        Some(bytes) => Ok(Response { status: 200, headers: vec![("content-type".into(), "text/plain".into())], body: bytes }),
        None => Err(Response::error(404, format!("no invoice for order {id}"))),
    }
}

fn read_events(req: &Request) -> Outcome {
    let from = req.query_param("from").and_then(|f| f.parse().ok()).unwrap_or(1u64);
    let list = events::read(STREAM, from, 100).map_err(port_error)?;
    let items: Vec<Value> = list
        .into_iter()
        .map(|e| json!({ "version": e.version, "type": e.event_type, "data": serde_json::from_str::<Value>(&e.data).unwrap_or(Value::Null) }))
        .collect();
    Ok(Response::json(200, &json!({ "items": items })))
}

fn counter(bucket: &wasi::keyvalue::store::Bucket, key: &str) -> i64 {
    bucket.get(key).ok().flatten().and_then(|v| String::from_utf8(v).ok()).and_then(|s| s.parse().ok()).unwrap_or(0)
}

fn stats() -> Outcome {
    let bucket = bucket()?;
    Ok(Response::json(200, &json!({
        "orders_created": counter(&bucket, "orders_created"),
        "notifications": counter(&bucket, "notifications"),
    })))
}

/// Posts the order to the configured webhook, signed with the tenant's secret.
fn notify(id: &str) -> Outcome {
    use wasi::http::types as t;
    let record = records::get(COLLECTION, id).map_err(port_error)?.ok_or_else(|| Response::error(404, format!("order {id} not found")))?;
    let url = wasi::config::store::get("webhook-url")
        .ok()
        .flatten()
        .ok_or_else(|| Response::error(503, "no webhook-url is configured for this deployment"))?;
    let (scheme, rest) = url.split_once("://").ok_or_else(|| Response::error(503, "webhook-url must be an absolute http(s) URL"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let order: Value = serde_json::from_str(&record.body).unwrap_or(Value::Null);
    let headers = t::Fields::new();
    let _ = headers.append("content-type", b"application/json");
    if let Some(sig) = signature(&order) {
        let _ = headers.append("x-signature", sig.as_bytes());
    }
    let request = t::OutgoingRequest::new(headers);
    let _ = request.set_method(&t::Method::Post);
    let _ = request.set_scheme(Some(&if scheme == "https" { t::Scheme::Https } else { t::Scheme::Http }));
    let _ = request.set_authority(Some(authority));
    let _ = request.set_path_with_query(Some(path));
    let body = request.body().map_err(|_| Response::error(500, "request body unavailable"))?;
    {
        let stream = body.write().map_err(|_| Response::error(500, "request body unavailable"))?;
        let _ = stream.blocking_write_and_flush(record.body.as_bytes());
    }
    let future = wasi::http::outgoing_handler::handle(request, None).map_err(|e| Response::error(502, format!("outbound request refused: {e:?}")))?;
    let _ = t::OutgoingBody::finish(body, None);
    future.subscribe().block();
    let status = match future.get() {
        Some(Ok(Ok(resp))) => resp.status(),
        Some(Ok(Err(e))) => return Err(Response::error(502, format!("outbound request failed: {e:?}"))),
        _ => return Err(Response::error(502, "outbound request failed")),
    };
    Ok(Response::json(200, &json!({ "status": status })))
}

impl exports::runplane::ports::message_handler::Guest for Orders {
    fn on_message(topic: String, _payload: Vec<u8>, _headers: Vec<(String, String)>) -> Result<(), String> {
        if topic != "order.created" {
            return Ok(());
        }
        let bucket = wasi::keyvalue::store::open("stats").map_err(|e| format!("{e:?}"))?;
        wasi::keyvalue::atomics::increment(&bucket, "notifications", 1).map_err(|e| format!("{e:?}"))?;
        Ok(())
    }
}

/// The task export: `{"op": "count"}` counts this tenant's orders;
/// `{"op": "total", "item": "tea"}` sums the quantity ordered of one item.
impl exports::runplane::ports::task::Guest for Orders {
    fn run(input: String) -> Result<String, exports::runplane::ports::task::TaskError> {
        use exports::runplane::ports::task::TaskError;
        let input: Value = serde_json::from_str(&input).map_err(|e| TaskError::InvalidInput(format!("input is not JSON: {e}")))?;
        let filters = match (input["op"].as_str(), input.get("item")) {
            (Some("count"), _) => Vec::new(),
            (Some("total"), Some(item)) => vec![records::Filter { field: "item".into(), value: item.to_string() }],
            _ => return Err(TaskError::InvalidInput("expected {\"op\":\"count\"} or {\"op\":\"total\",\"item\":…}".into())),
        };
        let (mut count, mut quantity) = (0u64, 0i64);
        let mut cursor: Option<String> = None;
        loop {
            let page = records::query(COLLECTION, &filters, 1000, cursor.as_deref()).map_err(|e| TaskError::Failed(format!("{e:?}")))?;
            for r in &page.items {
                count += 1;
                quantity += serde_json::from_str::<Value>(&r.body).ok().and_then(|v| v["quantity"].as_i64()).unwrap_or(0);
            }
            match page.next_cursor {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        Ok(json!({ "orders": count, "quantity": quantity }).to_string())
    }
}

runplane_sdk::http_glue!(Orders);
export!(Orders);
