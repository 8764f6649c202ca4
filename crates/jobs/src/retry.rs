//! Retry policies: when a failed attempt is followed by another, and after how long.
//!
//! A failure has an error code. Whether it is retryable is decided in this order:
//! the policy's `non_retryable_error_codes` (never retried), then the default class of
//! the code ([`retryable_by_default`]), and then the attempt count: the attempt that
//! reaches `maximum_attempts` is final, not retryable. The delay before attempt `n + 1`
//! is `initial_interval × coefficient^(n − 1)`, capped at `maximum_interval`, less a
//! jitter drawn from the job and attempt (the same inputs, the same delay: no hidden
//! randomness).

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

fn initial_default() -> u64 {
    1_000
}
fn coefficient_default() -> f64 {
    2.0
}
fn maximum_interval_default() -> u64 {
    300_000
}
fn maximum_attempts_default() -> u32 {
    3
}
fn jitter_default() -> f64 {
    0.1
}

/// Most attempts a policy may allow.
pub const MAX_ATTEMPTS: u32 = 100;

/// How a job's failed attempts are retried.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RetryPolicy {
    /// Milliseconds before the second attempt (default 1000).
    #[serde(default = "initial_default")]
    pub initial_interval_ms: u64,
    /// Each further delay is the last times this (default 2.0; 1.0: constant).
    #[serde(default = "coefficient_default")]
    pub backoff_coefficient: f64,
    /// No delay is longer than this (default 300000, five minutes).
    #[serde(default = "maximum_interval_default")]
    pub maximum_interval_ms: u64,
    /// Attempts in all, the first included (default 3; 1: never retried).
    #[serde(default = "maximum_attempts_default")]
    pub maximum_attempts: u32,
    /// Error codes never retried, whatever their default class.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub non_retryable_error_codes: Vec<String>,
    /// The share of each delay that may be taken off at random (0 to 1, default 0.1),
    /// so many jobs failing together do not retry together.
    #[serde(default = "jitter_default")]
    pub jitter: f64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            initial_interval_ms: initial_default(),
            backoff_coefficient: coefficient_default(),
            maximum_interval_ms: maximum_interval_default(),
            maximum_attempts: maximum_attempts_default(),
            non_retryable_error_codes: Vec::new(),
            jitter: jitter_default(),
        }
    }
}

/// What follows a failed attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AfterFailure {
    /// Another attempt, not before this many milliseconds.
    Retry { delay_ms: u64 },
    /// No more: the run has failed; why.
    GiveUp { reason: String },
}

/// Whether a failure with `code` is worth another attempt when the policy says nothing
/// of it. Failures the same input would meet again are not: running out of CPU budget,
/// memory or port calls, an oversized response, a missing export, refused input,
/// non-determinism. Those of the moment are: a deadline, a busy sandbox, a quota
/// window, an unavailable backend, an abandoned attempt (its node died), a trap (it
/// may follow a backend error the capability did not handle), and the task's own
/// failures (`task_failed` or the code it gave).
pub fn retryable_by_default(code: &str) -> bool {
    !matches!(
        code,
        "cpu_budget_exceeded"
            | "memory_limit_exceeded"
            | "port_call_limit_exceeded"
            | "response_too_large"
            | "missing_export"
            | "invalid_input"
            | "non_deterministic"
            | "cancelled"
    )
}

impl RetryPolicy {
    /// Why this policy cannot be used, if it cannot.
    pub fn check(&self) -> Result<(), String> {
        if !(1..=MAX_ATTEMPTS).contains(&self.maximum_attempts) {
            return Err(format!("retry.maximum_attempts is between 1 and {MAX_ATTEMPTS}"));
        }
        if self.initial_interval_ms == 0 || self.initial_interval_ms > 86_400_000 {
            return Err("retry.initial_interval_ms is between 1 and 86400000 (a day)".into());
        }
        if self.maximum_interval_ms < self.initial_interval_ms || self.maximum_interval_ms > 7 * 86_400_000 {
            return Err("retry.maximum_interval_ms is at least initial_interval_ms and at most 604800000 (a week)".into());
        }
        if !self.backoff_coefficient.is_finite() || !(1.0..=100.0).contains(&self.backoff_coefficient) {
            return Err("retry.backoff_coefficient is between 1.0 and 100.0".into());
        }
        if !self.jitter.is_finite() || !(0.0..=1.0).contains(&self.jitter) {
            return Err("retry.jitter is between 0 and 1".into());
        }
        if let Some(c) = self.non_retryable_error_codes.iter().find(|c| !valid_code(c)) {
            return Err(format!("retry.non_retryable_error_codes: {c:?} is not an error code (1-64 of a-z, 0-9 and '_')"));
        }
        Ok(())
    }

    /// Whether a failure with `code` may be retried, the attempt count aside.
    pub fn retryable(&self, code: &str) -> bool {
        !self.non_retryable_error_codes.iter().any(|c| c == code) && retryable_by_default(code)
    }

    /// After attempt `attempt` (1 for the first) failed with `code`: another, or not.
    /// `seed` draws the jitter (the node passes [`jitter_seed`] of the job and attempt).
    pub fn after_failure(&self, attempt: u32, code: &str, seed: u64) -> AfterFailure {
        if !self.retryable(code) {
            let why = if self.non_retryable_error_codes.iter().any(|c| c == code) { "the retry policy lists it as non-retryable" } else { "the same input would fail the same way" };
            return AfterFailure::GiveUp { reason: format!("attempt {attempt} failed with {code}, which is not retried: {why}") };
        }
        if attempt >= self.maximum_attempts {
            return AfterFailure::GiveUp { reason: format!("attempt {attempt} failed with {code}; maximum_attempts {} reached", self.maximum_attempts) };
        }
        AfterFailure::Retry { delay_ms: self.delay_after(attempt, seed) }
    }

    /// The delay before attempt `attempt + 1`.
    pub fn delay_after(&self, attempt: u32, seed: u64) -> u64 {
        let exponent = attempt.saturating_sub(1).min(64) as i32;
        let raw = self.initial_interval_ms as f64 * self.backoff_coefficient.powi(exponent);
        let capped = raw.min(self.maximum_interval_ms as f64);
        // A fraction in [0, 1) from the seed, taken off up to `jitter` of the delay.
        let unit = (seed >> 11) as f64 / (1u64 << 53) as f64;
        (capped * (1.0 - self.jitter * unit)).round().max(1.0) as u64
    }
}

/// The jitter seed of attempt `attempt` of job `job_id`.
pub fn jitter_seed(job_id: &str, attempt: u32) -> u64 {
    let digest = Sha256::new().chain_update(job_id.as_bytes()).chain_update(b"\0").chain_update(attempt.to_be_bytes()).finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

/// An error code: 1-64 of a-z, 0-9 and '_'.
pub fn valid_code(code: &str) -> bool {
    (1..=64).contains(&code.len()) && code.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// The code and message of a task's own failure: a message `"<code>: <text>"` whose
/// code is valid names its code; any other is `task_failed`.
pub fn task_failure(message: &str) -> (String, String) {
    // The host writes a task's refused input as "invalid input: <why>".
    if let Some(why) = message.strip_prefix("invalid input: ") {
        return ("invalid_input".to_owned(), why.to_owned());
    }
    match message.split_once(": ") {
        Some((code, rest)) if valid_code(code) => (code.to_owned(), rest.to_owned()),
        _ => ("task_failed".to_owned(), message.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_by_the_coefficient_up_to_the_cap_less_the_jitter() {
        let p = RetryPolicy { initial_interval_ms: 1000, backoff_coefficient: 2.0, maximum_interval_ms: 5000, jitter: 0.0, ..RetryPolicy::default() };
        let delays: Vec<u64> = (1..=5).map(|a| p.delay_after(a, 12345)).collect();
        assert_eq!(delays, vec![1000, 2000, 4000, 5000, 5000]);
        let j = RetryPolicy { jitter: 0.5, ..p };
        for a in 1..=5 {
            let d = j.delay_after(a, jitter_seed("job", a));
            assert!(d <= delays[a as usize - 1] && d * 2 >= delays[a as usize - 1], "{a}: {d}");
            assert_eq!(d, j.delay_after(a, jitter_seed("job", a)), "the same inputs, the same delay");
        }
    }

    #[test]
    fn the_last_attempt_and_non_retryable_codes_give_up() {
        let p = RetryPolicy { maximum_attempts: 3, non_retryable_error_codes: vec!["payment_declined".into()], ..RetryPolicy::default() };
        assert!(matches!(p.after_failure(1, "capability_trapped", 1), AfterFailure::Retry { .. }));
        assert!(matches!(p.after_failure(2, "deadline_exceeded", 1), AfterFailure::Retry { .. }));
        let AfterFailure::GiveUp { reason } = p.after_failure(3, "capability_trapped", 1) else { panic!("the third is the last") };
        assert!(reason.contains("maximum_attempts 3"), "{reason}");
        assert!(matches!(p.after_failure(1, "payment_declined", 1), AfterFailure::GiveUp { .. }));
        assert!(matches!(p.after_failure(1, "cpu_budget_exceeded", 1), AfterFailure::GiveUp { .. }));
        assert_eq!(task_failure("payment_declined: card expired"), ("payment_declined".into(), "card expired".into()));
        assert_eq!(task_failure("Oops: it broke").0, "task_failed");
    }

    #[test]
    fn policies_that_cannot_run_are_refused() {
        for bad in [
            RetryPolicy { maximum_attempts: 0, ..RetryPolicy::default() },
            RetryPolicy { initial_interval_ms: 0, ..RetryPolicy::default() },
            RetryPolicy { maximum_interval_ms: 10, ..RetryPolicy::default() },
            RetryPolicy { backoff_coefficient: 0.5, ..RetryPolicy::default() },
            RetryPolicy { jitter: 2.0, ..RetryPolicy::default() },
            RetryPolicy { non_retryable_error_codes: vec!["Bad Code".into()], ..RetryPolicy::default() },
        ] {
            assert!(bad.check().is_err(), "{bad:?}");
        }
        assert!(RetryPolicy::default().check().is_ok());
    }
}
