//! Progressive delivery of capability versions (spec §8) as pure decisions.
//!
//! A [`Rollout`] moves one route from its stable version to a candidate, by a
//! [`Strategy`] and its [`Step`]s. Three questions are answered here and nowhere else:
//!
//! - **Which version serves this request?** [`Rollout::choose`]: pins first (tenants the
//!   rollout names), then a sticky hash of the rollout's salt with the tenant (or the
//!   tenant and session), then stable. Raising the weight only adds members
//!   ([`cohort`]).
//! - **What does the analysis conclude?** [`analysis::evaluate`] over the counters of a
//!   window: `pass`, `fail`, `inconclusive` (too few samples; never a pass or a fail)
//!   or `error` (the metrics could not be had). [`analysis::fast_trip`] catches a trap
//!   or error burst without waiting for an interval.
//! - **What happens next?** [`Rollout::tick`] (time passed, metrics measured) and the
//!   operations ([`Rollout::promote`], [`Rollout::abort`], …), each recording a
//!   [`Decision`] that says what was decided and why.
//!
//! Nothing here reads a clock, touches a store or serves a request: the node passes
//! the time and the metrics in, stores the result and routes by it.

pub mod analysis;
pub mod cohort;
mod machine;
pub mod spec;

pub use analysis::{Analysis, Counters, Histogram, Measurement, PrometheusQuery, QueryValue, Threshold, Verdict};
pub use machine::{Decision, Mark, Phase, Rollout, RolloutError, Run, Side, Version};
pub use spec::{RolloutSpec, Stickiness, Step, Strategy, Weight};
