//! DAGs of steps and "no PASS → no read": a step starts only when every producer it
//! depends on has passed, and it reads the outputs of the attempt that passed.
//!
//! A producer that failed for good, was skipped or was cancelled never lets its
//! consumers start: they are skipped, naming the producer, and so are theirs. A
//! producer still retrying is neither: its consumers wait. The gating here is over
//! the steps' states; the node also verifies the artifacts a step reads before it
//! starts (a digest mismatch fails closed).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Most steps in one DAG.
pub const MAX_STEPS: usize = 100;

/// One step: a route's task with an input, after the steps it depends on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StepSpec {
    /// 1-64 of a-z, 0-9, '-' and '_'; unique in the DAG.
    pub name: String,
    pub route: String,
    /// The task's input (JSON); the outputs of `depends_on` are added to it under
    /// `"inputs"`, by producer name.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub input: serde_json::Value,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<String>,
}

/// Where a step is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum StepState {
    /// Not started: a producer has not passed yet.
    Waiting,
    Running,
    /// An attempt failed and another is due.
    Retrying,
    Passed,
    Failed,
    /// Never started: a producer failed, was skipped or was cancelled.
    Skipped,
    Cancelled,
}

impl StepState {
    /// Whether nothing more will happen to the step.
    pub fn is_final(self) -> bool {
        matches!(self, StepState::Passed | StepState::Failed | StepState::Skipped | StepState::Cancelled)
    }
}

/// Why a DAG cannot run, if it cannot: names, dependencies and cycles.
pub fn check(steps: &[StepSpec]) -> Result<(), String> {
    if steps.is_empty() || steps.len() > MAX_STEPS {
        return Err(format!("a DAG has 1 to {MAX_STEPS} steps; this one has {}", steps.len()));
    }
    let mut names = BTreeSet::new();
    for s in steps {
        if s.name.is_empty() || s.name.len() > 64 || !s.name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_') {
            return Err(format!("step name {:?} is 1-64 of a-z, 0-9, '-' and '_'", s.name));
        }
        if !names.insert(s.name.as_str()) {
            return Err(format!("two steps are named {}", s.name));
        }
    }
    for s in steps {
        if let Some(d) = s.depends_on.iter().find(|d| !names.contains(d.as_str())) {
            return Err(format!("step {} depends on {d}, which is not a step of this DAG", s.name));
        }
        if s.depends_on.contains(&s.name) {
            return Err(format!("step {} depends on itself", s.name));
        }
    }
    // Kahn's algorithm: what is left after removing every step with no unmet producer
    // is a cycle.
    let mut left: BTreeMap<&str, BTreeSet<&str>> = steps.iter().map(|s| (s.name.as_str(), s.depends_on.iter().map(String::as_str).collect())).collect();
    loop {
        let free: Vec<&str> = left.iter().filter(|(_, deps)| deps.is_empty()).map(|(n, _)| *n).collect();
        if free.is_empty() {
            break;
        }
        for n in &free {
            left.remove(n);
        }
        for deps in left.values_mut() {
            for n in &free {
                deps.remove(n);
            }
        }
    }
    if !left.is_empty() {
        return Err(format!("the steps {} depend on each other in a cycle", left.keys().copied().collect::<Vec<_>>().join(", ")));
    }
    Ok(())
}

/// What to do next with a DAG whose steps are in `states` (absent: waiting).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Next {
    /// Waiting steps whose every producer has passed: start them.
    pub start: Vec<String>,
    /// Waiting steps that never can start, and why: skip them.
    pub skip: Vec<(String, String)>,
}

/// Gates the waiting steps: "no PASS → no read".
pub fn next(steps: &[StepSpec], states: &BTreeMap<String, StepState>) -> Next {
    let state = |n: &str| states.get(n).copied().unwrap_or(StepState::Waiting);
    let mut out = Next::default();
    // Skips cascade within one call: a consumer of a step skipped here is skipped too.
    let mut skipped: BTreeMap<&str, String> = BTreeMap::new();
    let mut changed = true;
    while changed {
        changed = false;
        for s in steps {
            if state(&s.name) != StepState::Waiting || skipped.contains_key(s.name.as_str()) {
                continue;
            }
            let blocker = s.depends_on.iter().find_map(|d| match (state(d), skipped.contains_key(d.as_str())) {
                (_, true) => Some(format!("producer {d} was skipped")),
                (StepState::Failed, _) => Some(format!("producer {d} failed")),
                (StepState::Skipped, _) => Some(format!("producer {d} was skipped")),
                (StepState::Cancelled, _) => Some(format!("producer {d} was cancelled")),
                _ => None,
            });
            if let Some(why) = blocker {
                skipped.insert(&s.name, why);
                changed = true;
            }
        }
    }
    for s in steps {
        if let Some(why) = skipped.remove(s.name.as_str()) {
            out.skip.push((s.name.clone(), why));
        } else if state(&s.name) == StepState::Waiting && s.depends_on.iter().all(|d| state(d) == StepState::Passed) {
            out.start.push(s.name.clone());
        }
    }
    out
}

/// The DAG's outcome once every step is final: passed if every step passed.
pub fn outcome(steps: &[StepSpec], states: &BTreeMap<String, StepState>) -> Option<StepState> {
    let all: Vec<StepState> = steps.iter().map(|s| states.get(&s.name).copied().unwrap_or(StepState::Waiting)).collect();
    if !all.iter().all(|s| s.is_final()) {
        return None;
    }
    Some(if all.iter().all(|s| *s == StepState::Passed) {
        StepState::Passed
    } else if all.contains(&StepState::Cancelled) {
        StepState::Cancelled
    } else {
        StepState::Failed
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(name: &str, deps: &[&str]) -> StepSpec {
        StepSpec { name: name.into(), route: "r".into(), input: serde_json::Value::Null, depends_on: deps.iter().map(|d| d.to_string()).collect() }
    }

    fn states(list: &[(&str, StepState)]) -> BTreeMap<String, StepState> {
        list.iter().map(|(n, s)| (n.to_string(), *s)).collect()
    }

    #[test]
    fn a_consumer_starts_only_when_every_producer_passed() {
        let dag = [step("extract", &[]), step("clean", &[]), step("load", &["extract", "clean"])];
        assert_eq!(next(&dag, &states(&[])).start, vec!["extract", "clean"]);
        let half = states(&[("extract", StepState::Passed), ("clean", StepState::Running)]);
        assert!(next(&dag, &half).start.is_empty(), "clean has not passed");
        let retrying = states(&[("extract", StepState::Passed), ("clean", StepState::Retrying)]);
        assert_eq!(next(&dag, &retrying), Next::default(), "a producer still retrying holds its consumer, neither started nor skipped");
        let both = states(&[("extract", StepState::Passed), ("clean", StepState::Passed)]);
        assert_eq!(next(&dag, &both).start, vec!["load"]);
    }

    #[test]
    fn a_failed_skipped_or_cancelled_producer_skips_its_consumers_and_theirs() {
        let dag = [step("a", &[]), step("b", &["a"]), step("c", &["b"]), step("d", &[])];
        for (state, word) in [(StepState::Failed, "failed"), (StepState::Skipped, "skipped"), (StepState::Cancelled, "cancelled")] {
            let n = next(&dag, &states(&[("a", state), ("d", StepState::Passed)]));
            assert!(n.start.is_empty(), "{n:?}");
            assert_eq!(n.skip.iter().map(|(s, _)| s.as_str()).collect::<Vec<_>>(), vec!["b", "c"]);
            assert!(n.skip[0].1.contains(&format!("producer a {}", if word == "skipped" { "was skipped" } else if word == "cancelled" { "was cancelled" } else { "failed" })), "{n:?}");
        }
        let done = states(&[("a", StepState::Failed), ("b", StepState::Skipped), ("c", StepState::Skipped), ("d", StepState::Passed)]);
        assert_eq!(outcome(&dag, &done), Some(StepState::Failed));
    }

    #[test]
    fn dags_that_cannot_run_are_refused() {
        assert!(check(&[step("a", &["b"]), step("b", &["a"])]).expect_err("cycle").contains("cycle"));
        assert!(check(&[step("a", &["zz"])]).expect_err("unknown").contains("zz"));
        assert!(check(&[step("a", &[]), step("a", &[])]).is_err());
        assert!(check(&[step("A", &[])]).is_err());
        assert!(check(&[]).is_err());
        assert!(check(&[step("a", &[]), step("b", &["a"]), step("c", &["a", "b"])]).is_ok());
    }
}
