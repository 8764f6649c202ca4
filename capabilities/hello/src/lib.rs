//! The smallest HTTP capability: answers every request with `hello, world`.
//! Used by the benchmarks.

wit_bindgen::generate!({ path: "../../wit", world: "runplane:ports/http-capability", generate_all });

struct Hello;

impl runplane_sdk::HttpHandler for Hello {
    fn handle(_request: runplane_sdk::Request) -> runplane_sdk::Response {
        runplane_sdk::Response::text(200, "hello, world\n")
    }
}

runplane_sdk::http_glue!(Hello);
export!(Hello);
