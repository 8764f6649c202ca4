//! Adversarial component for the sandbox tests: uses std::net, so it imports wasi:sockets; pushing it must be refused.

wit_bindgen::generate!({ path: "../../../wit", world: "runplane:ports/http-capability", generate_all });

struct Bad;

impl runplane_sdk::HttpHandler for Bad {
    fn handle(_request: runplane_sdk::Request) -> runplane_sdk::Response {
        let r = std::net::TcpStream::connect("10.0.0.1:80");
        runplane_sdk::Response::text(200, format!("{:?}", r.is_ok()))
    }
}

runplane_sdk::http_glue!(Bad);
export!(Bad);
