//! Adversarial component for the sandbox tests: allocates and touches memory until the host's cap stops it.

wit_bindgen::generate!({ path: "../../../wit", world: "runplane:ports/http-capability", generate_all });

struct Bad;

impl runplane_sdk::HttpHandler for Bad {
    fn handle(_request: runplane_sdk::Request) -> runplane_sdk::Response {
        let mut hoard: Vec<Vec<u8>> = Vec::new();
        loop {
            let mut chunk = vec![0u8; 1 << 20];
            for i in (0..chunk.len()).step_by(4096) {
                chunk[i] = 1;
            }
            hoard.push(std::hint::black_box(chunk));
        }
    }
}

runplane_sdk::http_glue!(Bad);
export!(Bad);
