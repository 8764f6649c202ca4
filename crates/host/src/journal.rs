//! The invocation journal (spec §6.3): every port call a capability makes — what it
//! asked (a digest of the arguments) and what it was handed back — in order. Time and
//! randomness need no entries: they derive from the execution context (accept time,
//! seed), which the audit event records.
//!
//! Recording runs each call and keeps its outcome. Replaying checks that the capability
//! makes the same call with the same arguments at the same position and hands it the
//! recorded outcome without touching any backend, so a replay has no effects; the first
//! call that differs is a [`Divergence`] naming both sides (the model of Temporal's
//! replayer). Secret values are never journaled: only their digest, and a replay reads
//! the secret again and checks the digest.

use std::sync::{Arc, Mutex};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// One port call as journaled.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Observation {
    /// The port function: `records.get`, `kv.set`, `http.send`, …
    pub call: String,
    /// Lowercase hex SHA-256 of the canonical JSON of the call's arguments.
    pub args: String,
    /// What the capability was handed back, as JSON (for secrets, the value's digest).
    pub result: serde_json::Value,
}

/// Where a replay first differed from the journal.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize)]
#[error("non-determinism at port call #{index}: the original invocation made {expected}, the replay made {found}")]
pub struct Divergence {
    /// 0-based position of the call in the invocation.
    pub index: usize,
    /// What the original made there, as a noun phrase ("the original made …").
    pub expected: String,
    /// What the replay made there instead, likewise ("the replay made …").
    pub found: String,
}

enum Mode {
    Record,
    Replay { next: usize },
}

struct Inner {
    mode: Mode,
    entries: Vec<Observation>,
    divergence: Option<Divergence>,
}

/// The journal of one invocation; cheap to clone (the outbound HTTP hooks hold one).
#[derive(Clone)]
pub struct Journal(Arc<Mutex<Inner>>);

impl Journal {
    /// A journal that runs every call and records it.
    pub fn record() -> Self {
        Journal(Arc::new(Mutex::new(Inner { mode: Mode::Record, entries: Vec::new(), divergence: None })))
    }

    /// A journal that serves `entries` back in order and checks each call against them.
    pub fn replay(entries: Vec<Observation>) -> Self {
        Journal(Arc::new(Mutex::new(Inner { mode: Mode::Replay { next: 0 }, entries, divergence: None })))
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn is_replay(&self) -> bool {
        matches!(self.inner().mode, Mode::Replay { .. })
    }

    /// The recorded observations (in record mode, everything the invocation saw).
    pub fn observations(&self) -> Vec<Observation> {
        self.inner().entries.clone()
    }

    /// After a replay: the first divergence, including a capability that stopped
    /// before making every journaled call.
    pub fn finish_replay(&self) -> Result<(), Divergence> {
        let inner = self.inner();
        if let Some(d) = &inner.divergence {
            return Err(d.clone());
        }
        match inner.mode {
            Mode::Replay { next } if next < inner.entries.len() => Err(Divergence {
                index: next,
                expected: describe(&inner.entries[next].call, &inner.entries[next].args),
                found: "no further call (the capability finished earlier)".into(),
            }),
            _ => Ok(()),
        }
    }

    /// In record mode, awaits `call` and journals its outcome. In replay mode, checks
    /// the call against the journal and returns the journaled outcome; `call` is
    /// dropped unpolled, so no backend is touched.
    pub(crate) async fn observe<T, F>(&self, name: &str, args: &impl Serialize, call: F) -> wasmtime::Result<T>
    where
        T: Serialize + DeserializeOwned,
        F: Future<Output = T>,
    {
        let digest = args_digest(args);
        if let Some(recorded) = self.next_replayed(name, &digest)? {
            return serde_json::from_value(recorded).map_err(|e| wasmtime::Error::msg(format!("journal entry for {name} is unreadable: {e}")));
        }
        let outcome = call.await;
        let result = serde_json::to_value(&outcome).map_err(|e| wasmtime::Error::msg(format!("cannot journal {name}: {e}")))?;
        self.inner().entries.push(Observation { call: name.to_owned(), args: digest, result });
        Ok(outcome)
    }

    /// Like [`Journal::observe`] for a value whose *content* must not be journaled
    /// (secrets): the journal keeps `fingerprint(outcome)`, and a replay runs the call
    /// again and compares fingerprints.
    pub(crate) async fn observe_private<T, F>(&self, name: &str, args: &impl Serialize, call: F, fingerprint: impl Fn(&T) -> serde_json::Value) -> wasmtime::Result<T>
    where
        F: Future<Output = T>,
    {
        let digest = args_digest(args);
        let recorded = self.next_replayed(name, &digest)?;
        let outcome = call.await;
        let print = fingerprint(&outcome);
        match recorded {
            Some(r) if r != print => {
                let index = match self.inner().mode {
                    Mode::Replay { next } => next - 1,
                    Mode::Record => 0,
                };
                let d = Divergence {
                    index,
                    expected: format!("{} returning value {}", describe(name, &digest), r),
                    found: format!("the same call, which returns a different value now ({print}); was it rotated since?"),
                };
                self.inner().divergence = Some(d.clone());
                Err(wasmtime::Error::new(d))
            }
            Some(_) => Ok(outcome),
            None => {
                self.inner().entries.push(Observation { call: name.to_owned(), args: digest, result: print });
                Ok(outcome)
            }
        }
    }

    /// In replay mode: the journaled result of the next call after checking it is
    /// `name(args)`; `None` in record mode.
    fn next_replayed(&self, name: &str, digest: &str) -> wasmtime::Result<Option<serde_json::Value>> {
        let mut inner = self.inner();
        let Mode::Replay { next } = inner.mode else {
            return Ok(None);
        };
        if inner.divergence.is_some() {
            return Err(wasmtime::Error::msg("replay already diverged"));
        }
        let found = describe(name, digest);
        let divergence = match inner.entries.get(next) {
            None => Some(Divergence { index: next, expected: "no further call (the original finished here)".into(), found }),
            Some(o) if o.call != name || o.args != digest => Some(Divergence { index: next, expected: describe(&o.call, &o.args), found }),
            Some(_) => None,
        };
        if let Some(d) = divergence {
            inner.divergence = Some(d.clone());
            return Err(wasmtime::Error::new(d));
        }
        inner.mode = Mode::Replay { next: next + 1 };
        Ok(Some(inner.entries[next].result.clone()))
    }
}

fn args_digest(args: &impl Serialize) -> String {
    runplane_cjson::hash_serialize(args).unwrap_or_else(|e| format!("unhashable arguments: {e}"))
}

fn describe(call: &str, args: &str) -> String {
    format!("{call} (arguments {})", &args[..args.len().min(16)])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn replay_serves_the_record_and_names_the_first_divergence() {
        let j = Journal::record();
        let a: Result<u32, String> = j.observe("records.get", &("c", "1"), async { Ok(7) }).await.expect("record");
        let b: u32 = j.observe("kv.get", &("b", "k"), async { 9 }).await.expect("record");
        assert_eq!((a, b), (Ok(7), 9));

        let r = Journal::replay(j.observations());
        let a: Result<u32, String> = r.observe("records.get", &("c", "1"), async { panic!("a replay touches no backend") }).await.expect("replay");
        assert_eq!(a, Ok(7));
        let err = r.observe::<u32, _>("kv.get", &("b", "other"), async { 0 }).await.expect_err("different arguments");
        assert!(err.to_string().contains("#1"), "{err}");
        assert_eq!(r.finish_replay().expect_err("diverged").index, 1);

        let short = Journal::replay(j.observations());
        let _: Result<u32, String> = short.observe("records.get", &("c", "1"), async { Ok(0) }).await.expect("replay");
        assert!(short.finish_replay().expect_err("stopped early").found.contains("finished earlier"));
    }

    #[tokio::test]
    async fn private_values_are_journaled_by_fingerprint_only() {
        let j = Journal::record();
        let fp = |v: &String| serde_json::Value::String(runplane_cjson::sha256_hex(v.as_bytes()));
        j.observe_private("secrets.get", &"k", async { "hunter2".to_owned() }, fp).await.expect("record");
        assert!(!serde_json::to_string(&j.observations()).expect("json").contains("hunter2"));
        let same = Journal::replay(j.observations());
        assert_eq!(same.observe_private("secrets.get", &"k", async { "hunter2".to_owned() }, fp).await.expect("same value"), "hunter2");
        let rotated = Journal::replay(j.observations());
        let err = rotated.observe_private("secrets.get", &"k", async { "new".to_owned() }, fp).await.expect_err("rotated");
        assert!(err.to_string().contains("rotated"), "{err}");
    }
}
