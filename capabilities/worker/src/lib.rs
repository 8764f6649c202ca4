//! `worker`: a task capability for the jobs tests and walk-through. Its input says what
//! the attempt does:
//!
//! - `{"op": "echo", ...}`: answers `{"echo": <input>}`;
//! - `{"op": "fail", "code": "c"}`: fails with `c: ...` every time (a poison task);
//! - `{"op": "trap"}`: traps;
//! - `{"op": "spin", "iters": N}`: N rounds of integer mixing (a long attempt);
//! - `{"op": "until", "key": "k", "passes_on": n}`: counts its attempts in the
//!   key-value port under `k` and fails (`not_yet`) until the n-th, which answers
//!   `{"passed_on": n}`.

wit_bindgen::generate!({ path: "../../wit", world: "runplane:ports/task-capability", generate_all });

use exports::runplane::ports::task::{Guest, TaskError};
use serde_json::{Value, json};

struct Worker;

impl Guest for Worker {
    fn run(input: String) -> Result<String, TaskError> {
        let input: Value = serde_json::from_str(&input).map_err(|e| TaskError::InvalidInput(format!("input is not JSON: {e}")))?;
        match input["op"].as_str() {
            Some("echo") => Ok(json!({ "echo": input }).to_string()),
            Some("fail") => Err(TaskError::Failed(format!("{}: this task always fails", input["code"].as_str().unwrap_or("poison")))),
            Some("trap") => panic!("worker: asked to trap"),
            Some("spin") => {
                let iters = input["iters"].as_u64().unwrap_or(1_000_000);
                let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
                for i in 0..iters {
                    x = (x ^ i).wrapping_mul(0xbf58_476d_1ce4_e5b9).rotate_left(31);
                }
                Ok(json!({ "spun": iters, "x": x }).to_string())
            }
            Some("until") => {
                let key = input["key"].as_str().unwrap_or("attempts");
                let passes_on = input["passes_on"].as_u64().unwrap_or(1);
                let bucket = wasi::keyvalue::store::open("worker").map_err(|e| TaskError::Failed(format!("kv_unavailable: {e:?}")))?;
                let n = wasi::keyvalue::atomics::increment(&bucket, key, 1).map_err(|e| TaskError::Failed(format!("kv_unavailable: {e:?}")))?;
                if (n as u64) < passes_on {
                    return Err(TaskError::Failed(format!("not_yet: attempt {n} of the {passes_on} it takes")));
                }
                Ok(json!({ "passed_on": n }).to_string())
            }
            _ => Err(TaskError::InvalidInput("expected op echo, fail, trap, spin or until".into())),
        }
    }
}

export!(Worker);
