//! Adversarial component for the sandbox tests: answers with a 16 MiB body; the host's response limit must stop it.

wit_bindgen::generate!({ path: "../../../wit", world: "runplane:ports/http-capability", generate_all });

struct Bad;

impl runplane_sdk::HttpHandler for Bad {
    fn handle(_request: runplane_sdk::Request) -> runplane_sdk::Response {
        runplane_sdk::Response { status: 200, headers: vec![], body: vec![b'x'; 16 << 20] }
    }
}

runplane_sdk::http_glue!(Bad);
export!(Bad);
