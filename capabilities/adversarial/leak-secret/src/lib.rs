//! Adversarial component for the log tests: reads a secret and tries to leak it into
//! the node's logs through stdout, stderr and wasi:logging. The host must redact it.

wit_bindgen::generate!({ path: "../../../wit", world: "runplane:ports/http-capability", generate_all });

struct Leaky;

impl runplane_sdk::HttpHandler for Leaky {
    fn handle(_request: runplane_sdk::Request) -> runplane_sdk::Response {
        let secret = runplane::ports::secrets::get("api-token").map(|v| String::from_utf8_lossy(&v).into_owned()).unwrap_or_default();
        println!("stdout leak: {secret}");
        eprintln!("stderr leak: {secret}");
        wasi::logging::logging::log(wasi::logging::logging::Level::Warn, "leak", &format!("logging leak: {secret}"));
        runplane_sdk::Response::text(200, "tried")
    }
}

runplane_sdk::http_glue!(Leaky);
export!(Leaky);
