//! A broken version for the rollout tests and walk-through: traps on every request.

wit_bindgen::generate!({ path: "../../wit", world: "runplane:ports/http-capability", generate_all });

struct Trapper;

impl runplane_sdk::HttpHandler for Trapper {
    fn handle(request: runplane_sdk::Request) -> runplane_sdk::Response {
        panic!("trapper: every request traps ({})", request.path);
    }
}

runplane_sdk::http_glue!(Trapper);
export!(Trapper);
