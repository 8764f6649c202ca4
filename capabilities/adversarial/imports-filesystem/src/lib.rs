//! Adversarial component for the sandbox tests: uses std::fs, so it imports wasi:filesystem; pushing it must be refused.

wit_bindgen::generate!({ path: "../../../wit", world: "runplane:ports/http-capability", generate_all });

struct Bad;

impl runplane_sdk::HttpHandler for Bad {
    fn handle(_request: runplane_sdk::Request) -> runplane_sdk::Response {
        let r = std::fs::read_to_string("/etc/passwd");
        runplane_sdk::Response::text(200, r.unwrap_or_default())
    }
}

runplane_sdk::http_glue!(Bad);
export!(Bad);
