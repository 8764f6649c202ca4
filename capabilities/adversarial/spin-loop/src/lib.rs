//! Adversarial component for the sandbox tests: spins forever; the host's deadline must stop it.

wit_bindgen::generate!({ path: "../../../wit", world: "runplane:ports/http-capability", generate_all });

struct Bad;

impl runplane_sdk::HttpHandler for Bad {
    fn handle(_request: runplane_sdk::Request) -> runplane_sdk::Response {
        let mut n: u64 = 0;
        loop {
            n = std::hint::black_box(n.wrapping_add(1));
        }
    }
}

runplane_sdk::http_glue!(Bad);
export!(Bad);
