//! The OpenAPI document as the node serves it at `/v1/openapi.json`.
//!
//! utoipa generates it from the handlers' annotations ([`crate::api::ops::ApiDoc`]);
//! this module adds, in one place, what the annotations cannot say or would repeat on
//! every operation:
//!
//! - the answers every operation shares because a shared layer gives them: 401/403, the
//!   429 of the rate limits and the fail-closed 503 of the admin gate, 400 from the path and query extractors, 400,
//!   413, 415 and 422 from the JSON body extractor;
//! - `protocol_version` on every JSON answer (the [`crate::api::Versioned`] wrapper);
//! - the patterns, enums and bounds the handlers enforce on path and query parameters
//!   and on body fields of types other crates own.
//!
//! The suite runs schemathesis with every check against a node with demo data
//! (`tests/support/schemathesis.rs`): an answer or a refusal this document does not
//! describe fails it.

use std::sync::OnceLock;

use serde_json::{Map, Value, json};
use utoipa::OpenApi as _;

use crate::api::gate::ADMIN_ROUTES;

/// A tenant id (`runplane_ports::TenantId`).
pub const TENANT_ID: &str = "^[a-z0-9][a-z0-9-]{0,62}$";
/// An audit log: `admin` or `tenant:<tenant id>`.
pub const LOG: &str = "^(?:admin|tenant:[a-z0-9][a-z0-9-]{0,62})$";
/// Capability names, routes and environment names.
pub const NAME: &str = "^[a-z0-9-]{1,64}$";
/// A capability version.
pub const VERSION: &str = "^[A-Za-z0-9._+-]{1,64}$";
/// A capability version as `name@version`.
pub const CAPABILITY_LABEL: &str = "^[a-z0-9-]{1,64}@[A-Za-z0-9._+-]{1,64}$";
/// A feature flag id (`runplane_policy::flags::validate_feature_id`).
pub const FEATURE: &str = "^[a-z0-9._-]{1,128}$";
/// A domain id, and the capability names a domain lists.
pub const DOMAIN: &str = "^[a-z0-9_-]{1,64}$";
/// A config scope (`configsets::Scope`).
pub const SCOPE: &str = "^(?:environment:[a-z0-9-]{1,64}|capability:[a-z0-9-]{1,64}|tenant:[a-z0-9][a-z0-9-]{0,62}:[a-z0-9-]{1,64})$";
/// A contract id: `sha256:` and the hex digest of its canonical content.
pub const CONTRACT_ID: &str = "^sha256:[0-9a-f]{64}$";
/// An invocation id (a UUID as the node writes it).
pub const INVOCATION_ID: &str = "^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$";
/// A name `runplane_ports::validate_name` accepts: '/'-separated segments of printable
/// characters other than '\', none of them empty, `.` or `..`.
pub const PORT_NAME: &str = r"^(?:[^\u0000-\u001f\u007f-\u009f\\/.][^\u0000-\u001f\u007f-\u009f\\/]*|\.[^\u0000-\u001f\u007f-\u009f\\/.][^\u0000-\u001f\u007f-\u009f\\/]*|\.\.[^\u0000-\u001f\u007f-\u009f\\/]+)(?:/(?:[^\u0000-\u001f\u007f-\u009f\\/.][^\u0000-\u001f\u007f-\u009f\\/]*|\.[^\u0000-\u001f\u007f-\u009f\\/.][^\u0000-\u001f\u007f-\u009f\\/]*|\.\.[^\u0000-\u001f\u007f-\u009f\\/]+))*$";
/// Printable: no control character (`char::is_control`).
const PRINTABLE: &str = r"[^\u0000-\u001f\u007f-\u009f]";
/// An RFC 3339 UTC time as `runplane_policy::flags::parse_rfc3339` reads it (years
/// 1970-9999, real days of the month, seconds up to 60).
const RFC3339_UTC: &str = concat!(
    r"^(?:(?:19[7-9][0-9]|[2-9][0-9]{3})-(?:(?:0[1-9]|1[0-2])-(?:0[1-9]|1[0-9]|2[0-8])|(?:0[13-9]|1[0-2])-(?:29|30)|(?:0[13578]|1[02])-31)",
    r"|(?:19(?:7[26]|8[048]|9[26])|[2-9][0-9](?:0[48]|[2468][048]|[13579][26])|(?:[2468][048]|[13579][26])00)-02-29)",
    r"[Tt](?:[01][0-9]|2[0-3]):[0-5][0-9]:(?:[0-5][0-9]|60)(?:\.[0-9]+)?(?:[Zz]|\+00:00)$"
);

/// The document, built once.
pub fn document() -> &'static Value {
    static DOC: OnceLock<Value> = OnceLock::new();
    DOC.get_or_init(|| {
        let mut doc = serde_json::to_value(crate::api::ops::ApiDoc::openapi()).unwrap_or_else(|_| json!({}));
        add_components(&mut doc);
        constrain_bodies(&mut doc);
        merge_strict_flattens(&mut doc);
        for_each_operation(&mut doc, |path, method, op| {
            // Tags name the part of the API (`admin`, `controlplane`, …), not a Rust module.
            if let Some(Value::Array(tags)) = op.get_mut("tags") {
                for t in tags.iter_mut() {
                    if let Some(name) = t.as_str().and_then(|t| t.strip_prefix("crate::api::")) {
                        *t = Value::String(name.to_owned());
                    }
                }
            }
            constrain_parameters(path, op);
            constrain_operation_body(path, method, op);
            add_shared_responses(path, method, op);
        });
        version_responses(&mut doc);
        unsigned_integers(&mut doc);
        doc
    })
}

fn for_each_operation(doc: &mut Value, mut f: impl FnMut(&str, &str, &mut Map<String, Value>)) {
    let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) else { return };
    for (path, item) in paths.iter_mut() {
        let Some(item) = item.as_object_mut() else { continue };
        for (method, op) in item.iter_mut() {
            if let Some(op) = op.as_object_mut() {
                f(path, method, op);
            }
        }
    }
}

fn schemas(doc: &mut Value) -> Option<&mut Map<String, Value>> {
    doc.pointer_mut("/components/schemas").and_then(Value::as_object_mut)
}

fn error_response(description: &str) -> Value {
    json!({"description": description, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}}})
}

/// Adds `status` to an operation's responses, or appends `description` to the one the
/// handler declared.
fn add_response(op: &mut Map<String, Value>, status: &str, description: &str) {
    let responses = op.entry("responses").or_insert_with(|| json!({}));
    let Some(responses) = responses.as_object_mut() else { return };
    match responses.get_mut(status) {
        None => {
            responses.insert(status.to_owned(), error_response(description));
        }
        Some(existing) => {
            let old = existing.get("description").and_then(Value::as_str).unwrap_or_default().to_owned();
            let new = if old.is_empty() { description.to_owned() } else if old.contains(description) { old } else { format!("{old}; or {description}") };
            existing["description"] = Value::String(new);
        }
    }
}

fn add_shared_responses(path: &str, method: &str, op: &mut Map<String, Value>) {
    let secured = op.get("security").and_then(Value::as_array).is_some_and(|s| s.iter().any(|r| r.as_object().is_some_and(|r| !r.is_empty())));
    let gated = ADMIN_ROUTES.iter().any(|r| r.path == path && r.method.eq_ignore_ascii_case(method));
    let params = op.get("parameters").and_then(Value::as_array).cloned().unwrap_or_default();
    let has = |place: &str| params.iter().any(|p| p["in"] == place);
    let body = op.get("requestBody").and_then(|b| b.get("content")).and_then(Value::as_object).map(|c| c.keys().cloned().collect::<Vec<_>>());
    if secured {
        add_response(op, "401", "no credential, or one this node does not accept (`unauthorized`)");
        add_response(op, "429", "too many requests: this credential's rate ([rate_limits] admin_per_second), or this address's requests without a valid credential; `Retry-After` says when to retry (`rate_limited`)");
    }
    if gated {
        add_response(op, "403", "the credential's role does not allow this operation on this target (`forbidden`)");
        add_response(op, "503", "a store is unavailable, or the admin log cannot be written: the action is not performed (`unavailable`)");
    }
    if has("path") {
        add_response(op, "400", "a path parameter is not valid (its code names which)");
        let names = |param: &str| path.contains(&format!("{{{param}}}"));
        if names("id") && path.starts_with("/v1/tenants/") {
            add_response(op, "404", "the tenant does not exist");
        }
        if names("id") && path.starts_with("/v1/contracts/") {
            add_response(op, "404", "the contract is not registered");
        }
        if names("log") {
            add_response(op, "404", "the log does not exist");
        }
        if names("route") {
            add_response(op, "404", "nothing is deployed on the route");
        }
        if names("invocation_id") {
            add_response(op, "404", "no journaled invocation has that id");
        }
        if names("domain") && path.starts_with("/v1/tenants/") {
            add_response(op, "404", "the domain is not registered, or not active for the tenant");
        }
    }
    if has("query") {
        add_response(op, "400", "a query parameter is not valid (`invalid_query`, `invalid_limit`, `invalid_cursor`, …)");
    }
    let creating = ADMIN_ROUTES.iter().any(|r| r.path == path && r.method.eq_ignore_ascii_case(method) && crate::api::idempotency::CREATING.contains(&r.operation));
    if creating {
        let params = op.entry("parameters").or_insert_with(|| json!([]));
        if let Some(params) = params.as_array_mut() {
            params.push(json!({
                "name": "Idempotency-Key", "in": "header", "required": false,
                "description": "Makes a retried create safe: the first answer to this key is kept for 24 hours and repeated (with `Idempotent-Replayed: true`) on any node of the instance.",
                "schema": {"type": "string", "pattern": "^[!-~]{1,255}$"}
            }));
        }
        add_response(op, "400", "the Idempotency-Key is not 1-255 visible ASCII characters (`invalid_idempotency_key`)");
        add_response(op, "409", "a request with this Idempotency-Key is still being answered (`conflict`)");
        add_response(op, "422", "this Idempotency-Key was used for a different request (`idempotency_key_reused`)");
    }
    if let Some(types) = body {
        add_response(op, "413", "the body is larger than the node accepts (`body_too_large`)");
        if types.iter().any(|t| t == "application/json") {
            add_response(op, "400", "the body is not JSON (`invalid_json`) or a field's value is not valid (its code names which)");
            add_response(op, "415", "the body is not sent as `Content-Type: application/json` (`unsupported_media_type`)");
            add_response(op, "422", "the JSON body does not have the documented shape (`invalid_request`)");
        }
    }
    // An empty description is valid OpenAPI but tells a reader nothing.
    if let Some(responses) = op.get_mut("responses").and_then(Value::as_object_mut) {
        for (status, r) in responses.iter_mut() {
            if r.get("description").and_then(Value::as_str).is_some_and(str::is_empty) {
                r["description"] = Value::String(default_description(status).to_owned());
            }
        }
    }
}

fn default_description(status: &str) -> &'static str {
    match status {
        "200" => "done",
        "201" => "created",
        "204" => "done; no body",
        "400" => "the request is not valid (the error's code and message say why)",
        "403" => "refused (the error's code says why)",
        "404" => "the thing named does not exist",
        "409" => "the request conflicts with the current state",
        "422" => "refused: the input does not satisfy what it is checked against",
        "503" => "unavailable for now; retry later",
        _ => "see the error's code and message",
    }
}

/// Every JSON answer but this document carries `protocol_version`.
fn version_responses(doc: &mut Value) {
    let strict: Vec<String> = schemas(doc)
        .map(|s| s.iter().filter(|(_, v)| v["additionalProperties"] == json!(false) && v.get("properties").is_some()).map(|(k, _)| k.clone()).collect())
        .unwrap_or_default();
    let carries_version = |doc: &Value, name: &str| doc.pointer(&format!("/components/schemas/{name}/properties/protocol_version")).is_some();
    let mut copies = Vec::new();
    let snapshot = doc.clone();
    for_each_operation(doc, |path, _, op| {
        if path == "/v1/openapi.json" {
            return;
        }
        let Some(responses) = op.get_mut("responses").and_then(Value::as_object_mut) else { return };
        for r in responses.values_mut() {
            let Some(schema) = r.pointer_mut("/content/application~1json/schema") else { continue };
            let target = schema.get("$ref").and_then(Value::as_str).and_then(|s| s.strip_prefix("#/components/schemas/")).map(str::to_owned);
            match target {
                Some(name) if carries_version(&snapshot, &name) => {}
                // A strict type (no other properties allowed) cannot be extended by
                // allOf: its answers get a copy that names protocol_version too.
                Some(name) if strict.contains(&name) => {
                    let copy = format!("{name}Response");
                    *schema = json!({"$ref": format!("#/components/schemas/{copy}")});
                    copies.push((name, copy));
                }
                _ => *schema = json!({"allOf": [schema.take(), {"$ref": "#/components/schemas/ProtocolVersion"}]}),
            }
        }
    });
    let Some(all) = schemas(doc) else { return };
    for (name, copy) in copies {
        let Some(mut s) = all.get(&name).cloned() else { continue };
        s["properties"]["protocol_version"] = json!({"type": "string", "const": runplane_ports::PROTOCOL_VERSION});
        if let Some(req) = s.get_mut("required").and_then(Value::as_array_mut) {
            req.push(json!("protocol_version"));
        } else {
            s["required"] = json!(["protocol_version"]);
        }
        all.insert(copy, s);
    }
}

/// utoipa writes `u32`/`u64` as `int32`/`int64`, whose ranges are signed: an unsigned
/// integer is stated with its own upper bound instead.
fn unsigned_integers(v: &mut Value) {
    match v {
        Value::Object(map) => {
            let integer = map.get("type").is_some_and(|t| t == "integer" || t.as_array().is_some_and(|a| a.iter().any(|t| t == "integer")));
            let unsigned = map.get("minimum").and_then(Value::as_f64).is_some_and(|m| m >= 0.0);
            if integer && unsigned {
                let max = match map.get("format").and_then(Value::as_str) {
                    Some("int32") => Some(u64::from(u32::MAX)),
                    Some("int64") => Some(u64::MAX),
                    _ => None,
                };
                if let Some(max) = max {
                    map.remove("format");
                    let stated = map.get("maximum").and_then(Value::as_u64).unwrap_or(max);
                    map.insert("maximum".into(), json!(stated.min(max)));
                }
            }
            map.values_mut().for_each(unsigned_integers);
        }
        Value::Array(items) => items.iter_mut().for_each(unsigned_integers),
        _ => {}
    }
}

fn add_components(doc: &mut Value) {
    let Some(all) = schemas(doc) else { return };
    all.insert(
        "ProtocolVersion".into(),
        json!({
            "type": "object",
            "description": "Every JSON answer carries the protocol version it speaks.",
            "required": ["protocol_version"],
            "properties": {"protocol_version": {"type": "string", "const": runplane_ports::PROTOCOL_VERSION}}
        }),
    );
    all.insert(
        "TenantTasks".into(),
        json!({
            "type": "object",
            "description": "One tenant's task set; tenants and each tenant's task ids must be unique.",
            "required": ["tenant", "share", "tasks"],
            "properties": {
                "tenant": {"type": "string", "minLength": 1},
                "share": {
                    "type": "object",
                    "required": ["weight", "max_concurrent", "max_queued"],
                    "properties": {
                        "weight": {"type": "integer", "minimum": 0, "maximum": u32::MAX},
                        "max_concurrent": {"type": "integer", "minimum": 0, "maximum": u32::MAX},
                        "max_queued": {"type": "integer", "minimum": 0, "maximum": u64::MAX}
                    }
                },
                "tasks": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["task_id"],
                        "properties": {"task_id": {"type": "string"}, "cost": {"type": "integer", "minimum": 0, "maximum": u64::MAX, "default": 1}}
                    }
                }
            }
        }),
    );
}

/// A serde `flatten` of a strict type renders as `allOf` of a schema that forbids every
/// other property; the flattening type's own fields then violate it. Such schemas are
/// merged into one object.
fn merge_strict_flattens(doc: &mut Value) {
    let Some(all) = schemas(doc) else { return };
    let snapshot = all.clone();
    let resolve = |v: &Value| -> Value {
        match v.get("$ref").and_then(Value::as_str).and_then(|r| r.strip_prefix("#/components/schemas/")) {
            Some(name) => snapshot.get(name).cloned().unwrap_or(Value::Null),
            None => v.clone(),
        }
    };
    for schema in all.values_mut() {
        let Some(parts) = schema.get("allOf").and_then(Value::as_array).cloned() else { continue };
        let parts: Vec<Value> = parts.iter().map(resolve).collect();
        if !parts.iter().any(|p| p["additionalProperties"] == json!(false)) {
            continue;
        }
        let mut properties = Map::new();
        let mut required = Vec::new();
        for p in &parts {
            if let Some(props) = p.get("properties").and_then(Value::as_object) {
                properties.extend(props.clone());
            }
            if let Some(r) = p.get("required").and_then(Value::as_array) {
                required.extend(r.iter().cloned());
            }
        }
        let description = schema.get("description").cloned();
        *schema = json!({"type": "object", "required": required, "properties": properties});
        if let Some(d) = description {
            schema["description"] = d;
        }
    }
}

/// Merges `patch` into the object at `pointer` (a missing place is a bug this module's
/// test reports).
fn merge(doc: &mut Value, pointer: &str, patch: Value) -> bool {
    let (Some(target), Value::Object(patch)) = (doc.pointer_mut(pointer), patch) else { return false };
    let Some(target) = target.as_object_mut() else { return false };
    for (k, v) in patch {
        target.insert(k, v);
    }
    true
}

/// `enum` on a field that may also be `null` (an `Option`).
fn one_of_or_null(values: &[&str]) -> Value {
    let mut v: Vec<Value> = values.iter().map(|s| json!(s)).collect();
    v.push(Value::Null);
    Value::Array(v)
}

/// What the handlers check on body fields, by place in the document.
fn body_constraints() -> Vec<(&'static str, Value)> {
    let tiers = ["free", "pro", "enterprise", "custom"];
    let ports: Vec<&str> = crate::config::Port::ALL.iter().map(|p| p.key()).collect();
    let roles: Vec<&str> = runplane_policy::tokens::Role::ALL.iter().map(|r| r.as_str()).collect();
    let subject = r#"^[^\u0000-\u001f\u007f-\u009f"\\]{1,128}$"#;
    let variant_name = format!("^{PRINTABLE}{{1,64}}$");
    let domain_name = format!(
        "^{PRINTABLE}*[^\\u0000-\\u0020\\u007f-\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]{PRINTABLE}*$"
    );
    vec![
        ("/components/schemas/CreateTenant/properties/id", json!({"pattern": TENANT_ID})),
        ("/components/schemas/AdminEvent/properties/before", json!({"type": ["object", "array", "string", "number", "boolean", "null"], "description": "the target as it was (its shape is the action's)"})),
        ("/components/schemas/AdminEvent/properties/after", json!({"type": ["object", "array", "string", "number", "boolean", "null"], "description": "the target as it is now (its shape is the action's)"})),
        ("/components/schemas/RegisterContract/properties/route", json!({"pattern": NAME})),
        ("/components/schemas/CreateTenant/properties/tier", json!({"enum": one_of_or_null(&tiers)})),
        ("/components/schemas/Deploy/properties/capability", json!({"pattern": NAME})),
        ("/components/schemas/Deploy/properties/version", json!({"pattern": VERSION})),
        ("/components/schemas/Deploy/properties/route", json!({"pattern": NAME})),
        ("/components/schemas/Deploy/properties/flag", json!({"pattern": FEATURE})),
        ("/components/schemas/Deploy/properties/allow_hosts/items", json!({"pattern": "^[^/ @]+$", "description": "host, host:port or *.domain"})),
        ("/components/schemas/Deploy/properties/subscriptions/items", json!({"pattern": PORT_NAME, "maxLength": 128, "description": "a topic: at most 128 bytes of UTF-8"})),
        ("/components/schemas/MintToken/properties/role", json!({"enum": roles})),
        ("/components/schemas/MintToken/properties/subject", json!({"pattern": subject})),
        ("/components/schemas/MintToken/properties/ttl_secs", json!({"minimum": 1, "maximum": crate::api::tokens::MAX_TTL_SECS})),
        ("/components/schemas/PutFlag/properties/entitlement_tier", json!({"enum": one_of_or_null(&tiers)})),
        ("/components/schemas/PutFlag/properties/activation_date", json!({"pattern": RFC3339_UTC})),
        ("/components/schemas/PutFlag/properties/rollout_percent", json!({"maximum": 100})),
        ("/components/schemas/PutFlag/properties/variants", json!({"items": {"$ref": "#/components/schemas/Variant"}})),
        ("/components/schemas/Variant/properties/name", json!({"pattern": variant_name})),
        ("/components/schemas/CapabilityDomain/properties/domain_id", json!({"pattern": DOMAIN})),
        ("/components/schemas/CapabilityDomain/properties/domain_name", json!({"pattern": domain_name, "maxLength": 128})),
        ("/components/schemas/CapabilityDomain/properties/capabilities/items", json!({"pattern": DOMAIN})),
        ("/components/schemas/CapabilityDomain/properties/dependencies/items", json!({"pattern": DOMAIN})),
        ("/components/schemas/ExecutionQuota/properties/max_concurrent_tasks", json!({"minimum": 1})),
        ("/components/schemas/ExecutionQuota/properties/window_seconds", json!({"minimum": 1})),
        ("/components/schemas/ExecutionQuota/properties/max_memory_mb", json!({"minimum": 1, "maximum": 1u64 << 20})),
        (
            "/components/schemas/ExecutionQuota/properties/max_cpu_seconds",
            json!({"maximum": u64::MAX / runplane_tenancy::quota::FUEL_PER_CPU_SECOND}),
        ),
        ("/components/schemas/ExecutionQuota/properties/max_disk_mb", json!({"maximum": u64::MAX >> 20})),
        ("/components/schemas/ExecutionQuota/properties/max_network_kb", json!({"maximum": u64::MAX >> 10})),
        ("/components/schemas/PlanRequest/properties/sets", json!({"items": {"$ref": "#/components/schemas/TenantTasks"}})),
        ("/components/schemas/RuntimeContract/properties/protocol_version", json!({"pattern": r"^1(?:\..*)?$"})),
        ("/components/schemas/RuntimeContract/properties/contract_id", json!({"pattern": CONTRACT_ID})),
        ("/components/schemas/RuntimeContract/properties/capability_requirements", json!({"items": {"type": "string", "enum": runplane_tenancy::contract::KNOWN_PORTS}})),
        ("/components/schemas/ResourceLimits/properties/max_fuel", json!({"minimum": 1})),
        ("/components/schemas/ResourceLimits/properties/max_memory_mb", json!({"minimum": 1})),
        ("/components/schemas/ResourceLimits/properties/deadline_ms", json!({"minimum": 1})),
        ("/components/schemas/ResourceLimits/properties/max_output_bytes", json!({"minimum": 1})),
        (
            "/components/schemas/SetConfig/properties/values",
            json!({"propertyNames": {"pattern": "^[A-Za-z0-9._-]{1,128}$"}, "additionalProperties": {"type": "string", "maxLength": 65536}, "maxProperties": 1000}),
        ),
        ("/components/schemas/SubmitJob/properties/route", json!({"pattern": NAME})),
        ("/components/schemas/SubmitJob/properties/tenant", json!({"pattern": TENANT_ID})),
        ("/components/schemas/SubmitJob/properties/pool", json!({"pattern": "^[a-z0-9_-]{1,64}$"})),
        ("/components/schemas/SubmitJob/properties/idempotency_key", json!({"pattern": "^[^\\u0000-\\u001f\\u007f]{1,191}$"})),
        ("/components/schemas/SubmitJob/properties/correlation_ids", json!({"maxProperties": 16, "propertyNames": {"minLength": 1, "maxLength": 64}, "additionalProperties": {"type": "string", "maxLength": 256}})),
        ("/components/schemas/RetryPolicy/properties/maximum_attempts", json!({"minimum": 1, "maximum": runplane_jobs::retry::MAX_ATTEMPTS})),
        ("/components/schemas/RetryPolicy/properties/initial_interval_ms", json!({"minimum": 1, "maximum": 86_400_000u64})),
        ("/components/schemas/RetryPolicy/properties/maximum_interval_ms", json!({"minimum": 1, "maximum": 604_800_000u64})),
        ("/components/schemas/RetryPolicy/properties/backoff_coefficient", json!({"minimum": 1.0, "maximum": 100.0})),
        ("/components/schemas/RetryPolicy/properties/jitter", json!({"minimum": 0.0, "maximum": 1.0})),
        ("/components/schemas/RetryPolicy/properties/non_retryable_error_codes/items", json!({"pattern": "^[a-z0-9_]{1,64}$"})),
        ("/components/schemas/StartRollout/properties/route", json!({"pattern": NAME})),
        ("/components/schemas/GroupMember/properties/route", json!({"pattern": NAME})),
        ("/components/schemas/GroupMember/properties/capability", json!({"pattern": CAPABILITY_LABEL})),
        ("/components/schemas/StartGroup/properties/members", json!({"minItems": 2, "maxItems": crate::api::rollouts::MAX_GROUP})),
        ("/components/schemas/StartGroup/properties/steps", json!({"maxItems": runplane_rollout::spec::MAX_STEPS})),
        ("/components/schemas/StartGroup/properties/include", json!({"maxItems": runplane_rollout::spec::MAX_PINS})),
        ("/components/schemas/StartGroup/properties/include/items", json!({"pattern": TENANT_ID})),
        ("/components/schemas/StartGroup/properties/exclude", json!({"maxItems": runplane_rollout::spec::MAX_PINS})),
        ("/components/schemas/StartGroup/properties/exclude/items", json!({"pattern": TENANT_ID})),
        ("/components/schemas/StartGroup/properties/post_promotion_secs", json!({"maximum": runplane_rollout::spec::MAX_PAUSE_SECS})),
        ("/components/schemas/StartGroup/properties/max_unavailable", json!({"minimum": 1})),
        ("/components/schemas/StartGroup/properties/wave_secs", json!({"minimum": 1, "maximum": runplane_rollout::spec::MAX_PAUSE_SECS})),
        ("/components/schemas/StartRollout/properties/capability", json!({"pattern": CAPABILITY_LABEL})),
        ("/components/schemas/StartRollout/properties/include", json!({"maxItems": runplane_rollout::spec::MAX_PINS})),
        ("/components/schemas/StartRollout/properties/include/items", json!({"pattern": TENANT_ID})),
        ("/components/schemas/StartRollout/properties/exclude", json!({"maxItems": runplane_rollout::spec::MAX_PINS})),
        ("/components/schemas/StartRollout/properties/exclude/items", json!({"pattern": TENANT_ID})),
        // Each step is an object of exactly one key.
        ("/components/schemas/Step/oneOf/0", json!({"additionalProperties": false})),
        ("/components/schemas/Step/oneOf/1", json!({"additionalProperties": false})),
        ("/components/schemas/Step/oneOf/2", json!({"additionalProperties": false})),
        ("/components/schemas/Step/oneOf/3", json!({"additionalProperties": false})),
        ("/components/schemas/StartRollout/properties/steps", json!({"maxItems": runplane_rollout::spec::MAX_STEPS})),
        ("/components/schemas/StartRollout/properties/post_promotion_secs", json!({"maximum": runplane_rollout::spec::MAX_PAUSE_SECS})),
        ("/components/schemas/StartRollout/properties/max_unavailable", json!({"minimum": 1})),
        ("/components/schemas/StartRollout/properties/wave_secs", json!({"minimum": 1, "maximum": runplane_rollout::spec::MAX_PAUSE_SECS})),
        ("/components/schemas/Pause/properties/seconds", json!({"maximum": runplane_rollout::spec::MAX_PAUSE_SECS})),
        ("/components/schemas/Cohort/properties/tenants", json!({"minItems": 1, "maxItems": runplane_rollout::spec::MAX_PINS})),
        ("/components/schemas/Cohort/properties/tenants/items", json!({"pattern": TENANT_ID})),
        ("/components/schemas/Analysis/properties/interval_secs", json!({"minimum": 1, "maximum": 3600})),
        ("/components/schemas/Analysis/properties/min_samples", json!({"minimum": 1})),
        ("/components/schemas/Analysis/properties/count", json!({"minimum": 1})),
        ("/components/schemas/Threshold/properties/max", json!({"minimum": 0})),
        ("/components/schemas/Threshold/properties/slack", json!({"minimum": 0})),
        ("/components/schemas/Threshold/properties/relative", json!({"exclusiveMinimum": 0})),
        ("/components/schemas/Environment/properties/name", json!({"pattern": NAME})),
        ("/components/schemas/Environment/properties/promotes_from", json!({"pattern": NAME})),
        ("/components/schemas/Environment/properties/bindings", json!({"propertyNames": {"enum": ports}})),
        ("/components/schemas/Revoke/properties/revocation_id", json!({"pattern": "^[0-9A-Fa-f]{1,256}$"})),
        (
            "/components/schemas/Revoke",
            json!({"oneOf": [
                {"required": ["revocation_id"], "properties": {"revocation_id": {"type": "string"}, "token": {"type": "null"}, "chain": {"const": false}}},
                {"required": ["token"], "properties": {"token": {"type": "string"}, "revocation_id": {"type": "null"}}}
            ]}),
        ),
    ]
}

fn constrain_bodies(doc: &mut Value) {
    for (pointer, patch) in body_constraints() {
        if !merge(doc, pointer, patch) {
            tracing::error!(pointer, "the OpenAPI document has no such place; a constraint is not stated");
        }
    }
}

/// Constraints that differ between operations sharing a body type.
fn constrain_operation_body(path: &str, method: &str, op: &mut Map<String, Value>) {
    // A component upload is bytes, not an array of numbers.
    if let Some(schema) = op.get_mut("requestBody").and_then(|b| b.pointer_mut("/content/application~1wasm/schema")) {
        *schema = json!({"type": "string", "format": "binary", "description": "a WebAssembly component (wasm32-wasip2)"});
    }
    let roles = |tenant: bool| -> Vec<&'static str> {
        runplane_policy::tokens::Role::ALL.iter().filter(|r| r.is_tenant_scoped() == tenant).map(|r| r.as_str()).collect()
    };
    let role_enum = match (method, path) {
        ("post", "/v1/tokens") => roles(false),
        ("post", "/v1/tenants/{id}/tokens") => roles(true),
        _ => return,
    };
    if let Some(schema) = op.get_mut("requestBody").and_then(|b| b.pointer_mut("/content/application~1json/schema")) {
        *schema = json!({"allOf": [schema.take(), {"properties": {"role": {"enum": role_enum}}}]});
    }
}

/// What the handlers check on a path or query parameter, by operation and name.
fn parameter_constraint(path: &str, name: &str) -> Option<Value> {
    Some(match name {
        "id" if path.starts_with("/v1/tenants/") => json!({"pattern": TENANT_ID}),
        "id" if path.starts_with("/v1/contracts/") => json!({"pattern": CONTRACT_ID}),
        "log" => json!({"pattern": LOG}),
        "route" => json!({"pattern": NAME}),
        "feature" => json!({"pattern": FEATURE}),
        "domain" => json!({"pattern": DOMAIN}),
        "name" if path.starts_with("/v1/environments/") || path == "/v1/capabilities" => json!({"pattern": NAME}),
        "name" if path.contains("/secrets/") => json!({"pattern": PORT_NAME, "maxLength": 128}),
        "version" if path == "/v1/capabilities" => json!({"pattern": VERSION}),
        "scope" if path.starts_with("/v1/config/sets/") => json!({"pattern": SCOPE}),
        "invocation_id" => json!({"pattern": INVOCATION_ID}),
        "id" if path.starts_with("/v1/rollouts/") || path.starts_with("/v1/release-groups/") || path.starts_with("/v1/jobs/") => json!({"pattern": INVOCATION_ID}),
        "tenant" if path.starts_with("/v1/jobs") => json!({"pattern": TENANT_ID}),
        "reason" if path.starts_with("/v1/jobs/") => json!({"maxLength": 512}),
        "limit" => json!({"minimum": 1, "maximum": crate::api::params::MAX_PAGE}),
        "timeout_secs" => json!({"maximum": crate::api::controlplane::MAX_DRAIN_SECS}),
        _ => return None,
    })
}

fn constrain_parameters(path: &str, op: &mut Map<String, Value>) {
    let Some(params) = op.get_mut("parameters").and_then(Value::as_array_mut) else { return };
    for p in params.iter_mut() {
        let name = p["name"].as_str().unwrap_or_default().to_owned();
        let Some(schema) = p.get_mut("schema").and_then(Value::as_object_mut) else { continue };
        // An optional query parameter is one that is left out; it is never `null`.
        if let Some(Value::Array(types)) = schema.get_mut("type") {
            types.retain(|t| t != "null");
            if types.len() == 1 {
                let only = types.remove(0);
                schema.insert("type".into(), only);
            }
        }
        if let Some(Value::Object(patch)) = parameter_constraint(path, &name) {
            schema.extend(patch);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_constraint_has_its_place_in_the_document() {
        let mut doc = serde_json::to_value(crate::api::ops::ApiDoc::openapi()).expect("document");
        add_components(&mut doc);
        for (pointer, patch) in body_constraints() {
            assert!(merge(&mut doc, pointer, patch), "{pointer} is not in the document");
        }
    }
}
