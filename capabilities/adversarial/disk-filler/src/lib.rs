//! Adversarial component for the quota tests: writes 64 KiB records to collection `fill`
//! (`r0`, `r1`, …) until `?max=N` (default 1 000 000) are written or a put fails; the
//! host must stop it at the tenant's disk quota. Answers 507 with the port error's
//! message when a put fails, else 200 with the number written.

wit_bindgen::generate!({ path: "../../../wit", world: "runplane:ports/http-capability", generate_all });

use runplane::ports::records;
use runplane::ports::types::PortError;

struct Bad;

/// Size of each record's JSON body in bytes.
const RECORD_BYTES: usize = 64 * 1024;

impl runplane_sdk::HttpHandler for Bad {
    fn handle(request: runplane_sdk::Request) -> runplane_sdk::Response {
        let max: u64 = request.query_param("max").and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
        let body = format!("{{\"pad\":\"{}\"}}", "x".repeat(RECORD_BYTES - r#"{"pad":""}"#.len()));
        let mut written: u64 = 0;
        while written < max {
            if let Err(e) = records::put("fill", &format!("r{written}"), &body, None) {
                let message = match e {
                    PortError::NotFound(m) | PortError::Conflict(m) | PortError::QuotaExceeded(m) | PortError::Unavailable(m) | PortError::Invalid(m) => m,
                };
                return runplane_sdk::Response::text(507, message);
            }
            written += 1;
        }
        runplane_sdk::Response::text(200, written.to_string())
    }
}

runplane_sdk::http_glue!(Bad);
export!(Bad);
