//! Jobs (spec §9) as pure decisions: no store, no clock, no engine.
//!
//! Four questions are answered here and nowhere else:
//!
//! - **Is this failure retried, and when?** [`retry`]: a [`RetryPolicy`] (intervals,
//!   backoff, maximum attempts, non-retryable codes, jitter drawn from the job and
//!   attempt) over error codes whose default class is documented
//!   ([`retry::retryable_by_default`]).
//! - **What does an attempt's end mean?** [`attempt`]: append-only
//!   [`JobAttemptRecord`]s, leases, [`attempt::conclude`], concurrency slots.
//! - **When is a schedule due?** [`schedule`]: cron in an IANA time zone with the DST
//!   rules written down, catch-up after downtime (`none`, `latest`, `all`, a window,
//!   every missed tick named) and overlap policies.
//! - **May this step start?** [`dag`]: "no PASS → no read" over a DAG of steps.
//!
//! Time comes in as Unix milliseconds from the caller (the node's injectable clock), so
//! a test runs a year of schedule in a moment.

pub mod attempt;
pub mod dag;
pub mod retry;
pub mod schedule;

pub use attempt::{Concurrency, JobAttemptRecord, JobStatus};
pub use retry::RetryPolicy;
pub use schedule::{Schedule, ScheduleSpec};
