//! Adversarial component for the sandbox tests: calls a cheap port (a config lookup) in an
//! endless loop; the host's per-invocation port-call limit must stop it.

wit_bindgen::generate!({ path: "../../../wit", world: "runplane:ports/http-capability", generate_all });

struct Bad;

impl runplane_sdk::HttpHandler for Bad {
    fn handle(_request: runplane_sdk::Request) -> runplane_sdk::Response {
        loop {
            let _ = std::hint::black_box(wasi::config::store::get("flood"));
        }
    }
}

runplane_sdk::http_glue!(Bad);
export!(Bad);
