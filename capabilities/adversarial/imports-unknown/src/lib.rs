//! Adversarial component for the sandbox tests: imports `evil:backdoor/shell`, an
//! interface outside Runplane's world; pushing it must be refused.

wit_bindgen::generate!({ path: "wit", world: "evil:backdoor/unknown-import", generate_all });

struct Bad;

impl runplane_sdk::HttpHandler for Bad {
    fn handle(_request: runplane_sdk::Request) -> runplane_sdk::Response {
        runplane_sdk::Response::text(200, evil::backdoor::shell::exec("id"))
    }
}

runplane_sdk::http_glue!(Bad);
export!(Bad);
