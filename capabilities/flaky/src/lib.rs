//! A faulty version for the rollout tests and walk-through: answers like `hello`, but
//! one request in four, at random (the host's seeded randomness), with a 500.

wit_bindgen::generate!({ path: "../../wit", world: "runplane:ports/http-capability", generate_all });

struct Flaky;

impl runplane_sdk::HttpHandler for Flaky {
    fn handle(_request: runplane_sdk::Request) -> runplane_sdk::Response {
        // RandomState draws its keys from wasi:random, which the host seeds per invocation.
        use std::hash::{BuildHasher, Hasher};
        let draw = std::collections::hash_map::RandomState::new().build_hasher().finish();
        if draw % 4 == 0 {
            return runplane_sdk::Response::error(500, "flaky: this one failed");
        }
        runplane_sdk::Response::text(200, "hello, world\n")
    }
}

runplane_sdk::http_glue!(Flaky);
export!(Flaky);
