//! The CPU-heavy capability of the noisy-neighbour benchmark: `?iters=N` (default
//! 1 000 000) rounds of a deterministic integer mix; answers with the final value.

wit_bindgen::generate!({ path: "../../wit", world: "runplane:ports/http-capability", generate_all });

struct Burn;

impl runplane_sdk::HttpHandler for Burn {
    fn handle(request: runplane_sdk::Request) -> runplane_sdk::Response {
        let iters: u64 = request.query_param("iters").and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for i in 0..iters {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x = std::hint::black_box(x.wrapping_mul(0x2545_F491_4F6C_DD1D).wrapping_add(i));
        }
        runplane_sdk::Response::text(200, x.to_string())
    }
}

runplane_sdk::http_glue!(Burn);
export!(Burn);
