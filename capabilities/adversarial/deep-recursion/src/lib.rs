//! Adversarial component for the sandbox tests: recurses without bound; the fixed
//! wasm stack must stop it.

wit_bindgen::generate!({ path: "../../../wit", world: "runplane:ports/http-capability", generate_all });

struct Bad;

impl runplane_sdk::HttpHandler for Bad {
    fn handle(_request: runplane_sdk::Request) -> runplane_sdk::Response {
        runplane_sdk::Response::text(200, format!("{}", dive(std::hint::black_box(1))))
    }
}

#[allow(unconditional_recursion)]
fn dive(n: u64) -> u64 {
    let pad = std::hint::black_box([n; 16]);
    pad[0] + dive(n + 1) + pad[15]
}

runplane_sdk::http_glue!(Bad);
export!(Bad);
