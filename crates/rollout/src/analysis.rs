//! Analysis of per-version metrics: what a window of requests says about the candidate
//! next to stable.
//!
//! The node counts, per version, requests, error responses (5xx from the capability),
//! traps and deadline hits, and a latency histogram ([`Counters`], cumulative and
//! summed over the instance's nodes). A measurement takes the difference of two such
//! snapshots — the window — and checks each configured threshold:
//!
//! - `max`: the candidate's value is at most this;
//! - `relative` (with `slack`): at most stable's value over the same window times
//!   `relative`, plus `slack`. With fewer than `min_samples` stable requests in the
//!   window (everyone is on the candidate), stable counts as perfect for a rate (0)
//!   and as unknown for latency.
//!
//! The verdict is `fail` if any check fails, `inconclusive` if the candidate had fewer
//! than `min_samples` requests (or a latency check had nothing to compare with) —
//! never counted as a pass or a fail — else `pass`. `error` is the node's verdict when
//! it could not collect the metrics.
//!
//! **Metrics from outside** ([`PrometheusQuery`]): an analysis may also hold PromQL
//! queries, each giving one number held to `min`/`max`. Which queries a tick needs is
//! decided here ([`PrometheusQuery::render`], with the window and the versions filled
//! in); the node asks its Prometheus server and passes the values back in the
//! [`Mark`](crate::Mark). An empty result is `inconclusive`; a query that could not be
//! answered makes the measurement an `error`.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Upper bounds of the latency buckets, in microseconds (the last is unbounded).
pub const LATENCY_BOUNDS_US: [u64; 15] = [250, 500, 1_000, 2_000, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000, 5_000_000, 10_000_000];

/// A latency histogram: `buckets[i]` counts requests at most `LATENCY_BOUNDS_US[i]`
/// (the last bucket: longer than every bound).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Histogram {
    pub buckets: Vec<u64>,
}

impl Histogram {
    pub fn record(&mut self, micros: u64) {
        if self.buckets.len() != LATENCY_BOUNDS_US.len() + 1 {
            self.buckets.resize(LATENCY_BOUNDS_US.len() + 1, 0);
        }
        let i = LATENCY_BOUNDS_US.iter().position(|b| micros <= *b).unwrap_or(LATENCY_BOUNDS_US.len());
        self.buckets[i] += 1;
    }

    fn get(&self, i: usize) -> u64 {
        self.buckets.get(i).copied().unwrap_or(0)
    }

    /// `self - earlier`, bucket by bucket (a counter that went down, from a node that
    /// restarted, counts from zero).
    pub fn since(&self, earlier: &Histogram) -> Histogram {
        Histogram { buckets: (0..=LATENCY_BOUNDS_US.len()).map(|i| delta(self.get(i), earlier.get(i))).collect() }
    }

    pub fn add(&mut self, other: &Histogram) {
        self.buckets.resize(LATENCY_BOUNDS_US.len() + 1, 0);
        for (i, b) in self.buckets.iter_mut().enumerate() {
            *b += other.get(i);
        }
    }

    /// The upper bound (ms) of the bucket holding the `q` quantile; `None` when empty.
    /// Past the last bound, twice it.
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        let total: u64 = self.buckets.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = (q * total as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for i in 0..=LATENCY_BOUNDS_US.len() {
            seen += self.get(i);
            if seen >= rank {
                let bound = LATENCY_BOUNDS_US.get(i).copied().unwrap_or(LATENCY_BOUNDS_US[LATENCY_BOUNDS_US.len() - 1] * 2);
                return Some(bound as f64 / 1000.0);
            }
        }
        None
    }
}

fn delta(now: u64, then: u64) -> u64 {
    if now >= then { now - then } else { now }
}

/// What one version did, cumulative.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Counters {
    pub requests: u64,
    /// Responses with a 5xx status from the capability itself.
    pub errors: u64,
    pub traps: u64,
    /// Invocations stopped at the sandbox deadline.
    pub deadlines: u64,
    pub latency: Histogram,
}

impl Counters {
    /// The window between `earlier` and `self`.
    pub fn since(&self, earlier: &Counters) -> Counters {
        Counters {
            requests: delta(self.requests, earlier.requests),
            errors: delta(self.errors, earlier.errors),
            traps: delta(self.traps, earlier.traps),
            deadlines: delta(self.deadlines, earlier.deadlines),
            latency: self.latency.since(&earlier.latency),
        }
    }

    /// Adds another node's counters.
    pub fn add(&mut self, other: &Counters) {
        self.requests += other.requests;
        self.errors += other.errors;
        self.traps += other.traps;
        self.deadlines += other.deadlines;
        self.latency.add(&other.latency);
    }

    pub fn error_rate(&self) -> Option<f64> {
        (self.requests > 0).then(|| self.errors as f64 / self.requests as f64)
    }

    /// Traps and deadline hits per request.
    pub fn trap_rate(&self) -> Option<f64> {
        (self.requests > 0).then(|| (self.traps + self.deadlines) as f64 / self.requests as f64)
    }
}

/// A limit on one metric: absolute, relative to stable, or both.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Threshold {
    /// The candidate's value is at most this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    /// The candidate's value is at most stable's (same window) times this, plus `slack`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relative: Option<f64>,
    #[serde(default)]
    pub slack: f64,
}

/// What an inconclusive measurement does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OnInconclusive {
    /// Keep measuring (the step waits for enough traffic).
    #[default]
    Continue,
    /// Pause the rollout for an operator.
    Pause,
    /// Abort the rollout.
    Abort,
}

fn interval_default() -> u64 {
    10
}
fn min_samples_default() -> u64 {
    20
}
fn count_default() -> u32 {
    1
}
fn consecutive_error_default() -> u32 {
    3
}

/// How to judge the candidate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Analysis {
    /// Seconds between measurements; each measures the window since the last.
    #[serde(default = "interval_default")]
    pub interval_secs: u64,
    /// Fewer candidate requests than this in a window: `inconclusive`.
    #[serde(default = "min_samples_default")]
    pub min_samples: u64,
    /// As a step: passing measurements that end it.
    #[serde(default = "count_default")]
    pub count: u32,
    /// Error responses (5xx from the capability) per request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_rate: Option<Threshold>,
    /// Traps and deadline hits per request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trap_rate: Option<Threshold>,
    /// The 99th percentile of latency, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p99_latency_ms: Option<Threshold>,
    /// Failed measurements tolerated; one more aborts.
    #[serde(default)]
    pub failure_limit: u32,
    /// Measurements in a row that could not be taken (`error`) before aborting.
    #[serde(default = "consecutive_error_default")]
    pub consecutive_error_limit: u32,
    #[serde(default)]
    pub inconclusive: OnInconclusive,
    /// Queries to the node's Prometheus server (`[rollouts] prometheus_url`), each
    /// checked at every measurement beside the thresholds above.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prometheus: Vec<PrometheusQuery>,
}

/// Most Prometheus queries one analysis holds.
pub const MAX_QUERIES: usize = 8;
/// The placeholders a query may use, and what each becomes.
pub const PLACEHOLDERS: [&str; 6] = ["{{route}}", "{{capability}}", "{{candidate_version}}", "{{stable_capability}}", "{{stable_version}}", "{{window}}"];

/// One metric from a Prometheus server: a PromQL query whose result is one number (a
/// scalar, or an instant vector of at most one series; none is `inconclusive`), held to
/// `min` and `max`.
///
/// ```
/// # use runplane_rollout::analysis::{PrometheusQuery, QueryContext};
/// let q = PrometheusQuery {
///     name: "error_share".into(),
///     query: r#"sum(increase(runplane_invocations_total{capability="{{capability}}",version="{{candidate_version}}",outcome!="ok"}[{{window}}]))"#.into(),
///     max: Some(0.05),
///     min: None,
/// };
/// let ctx = QueryContext { route: "greet", capability: "greet", candidate_version: "2.0.0", stable_capability: "greet", stable_version: "1.0.0", window_secs: 10 };
/// assert!(q.render(&ctx).contains(r#"version="2.0.0",outcome!="ok"}[10s]"#));
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PrometheusQuery {
    /// Names the check in measurements (`prometheus:<name>`): 1-64 of a-z, 0-9 and '_'.
    pub name: String,
    /// PromQL. `{{route}}`, `{{capability}}`, `{{candidate_version}}`,
    /// `{{stable_capability}}` and `{{stable_version}}` become the rollout's;
    /// `{{window}}` the measurement's window as a range (`10s`).
    pub query: String,
    /// The value is at most this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    /// The value is at least this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
}

/// What a query's placeholders become at one measurement.
#[derive(Debug, Clone, Copy)]
pub struct QueryContext<'a> {
    pub route: &'a str,
    pub capability: &'a str,
    pub candidate_version: &'a str,
    pub stable_capability: &'a str,
    pub stable_version: &'a str,
    /// The measurement's window in whole seconds (at least 1).
    pub window_secs: u64,
}

impl PrometheusQuery {
    /// The query with its placeholders filled in.
    pub fn render(&self, ctx: &QueryContext) -> String {
        let window = format!("{}s", ctx.window_secs.max(1));
        let values = [ctx.route, ctx.capability, ctx.candidate_version, ctx.stable_capability, ctx.stable_version, window.as_str()];
        PLACEHOLDERS.iter().zip(values).fold(self.query.clone(), |q, (p, v)| q.replace(p, v))
    }

    /// Judges the value the server gave (`None`: an empty result).
    pub fn check(&self, value: Option<f64>) -> Check {
        let verdict = match value {
            None => Verdict::Inconclusive,
            Some(v) if self.max.is_some_and(|m| v > m + 1e-12) || self.min.is_some_and(|m| v < m - 1e-12) => Verdict::Fail,
            Some(_) => Verdict::Pass,
        };
        Check { metric: format!("prometheus:{}", self.name), value, limit: self.max, min: self.min, verdict }
    }

    fn problem(&self) -> Option<String> {
        let name = &self.name;
        if name.is_empty() || name.len() > 64 || !name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_') {
            return Some(format!("prometheus query name {name:?} is 1-64 characters of a-z, 0-9 and '_'"));
        }
        if self.query.trim().is_empty() || self.query.len() > 4096 {
            return Some(format!("prometheus query {name}: the query is 1-4096 characters of PromQL"));
        }
        let mut rest = self.query.as_str();
        while let Some(at) = rest.find("{{") {
            let tail = &rest[at..];
            if !PLACEHOLDERS.iter().any(|p| tail.starts_with(p)) {
                let shown: String = tail.chars().take(24).collect();
                return Some(format!("prometheus query {name}: unknown placeholder at {shown:?}; known: {}", PLACEHOLDERS.join(", ")));
            }
            rest = &tail[2..];
        }
        if self.max.is_none() && self.min.is_none() {
            return Some(format!("prometheus query {name} needs max, min or both"));
        }
        if self.max.is_some_and(|v| !v.is_finite()) || self.min.is_some_and(|v| !v.is_finite()) {
            return Some(format!("prometheus query {name}: max and min are finite numbers"));
        }
        if let (Some(lo), Some(hi)) = (self.min, self.max)
            && lo > hi
        {
            return Some(format!("prometheus query {name}: min {lo} is above max {hi}; no value could pass"));
        }
        None
    }
}

/// A query's answer as the node collected it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct QueryValue {
    /// The query as sent (placeholders filled in).
    pub query: String,
    /// `None` with no `error`: the result was empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    /// Why the server gave no answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Analysis {
    /// What a canary or blue-green rollout runs when it names no analysis: every 10 s,
    /// with at least 20 requests, the candidate's error rate at most stable's plus 5
    /// points and its trap rate at most stable's plus 1 point; the first failure aborts.
    pub fn default_background() -> Analysis {
        Analysis {
            interval_secs: 10,
            min_samples: 20,
            count: 1,
            error_rate: Some(Threshold { max: None, relative: Some(1.0), slack: 0.05 }),
            trap_rate: Some(Threshold { max: None, relative: Some(1.0), slack: 0.01 }),
            p99_latency_ms: None,
            failure_limit: 0,
            consecutive_error_limit: 3,
            inconclusive: OnInconclusive::Continue,
            prometheus: Vec::new(),
        }
    }

    /// An analysis that names no threshold checks the default ones (error and trap
    /// rates against stable, as [`Analysis::default_background`]).
    pub fn complete(&mut self) {
        if self.error_rate.is_none() && self.trap_rate.is_none() && self.p99_latency_ms.is_none() && self.prometheus.is_empty() {
            let d = Analysis::default_background();
            self.error_rate = d.error_rate;
            self.trap_rate = d.trap_rate;
        }
    }

    /// Why this analysis cannot run, if it cannot.
    pub fn check(&self) -> Result<(), String> {
        if !(1..=3600).contains(&self.interval_secs) {
            return Err("interval_secs is between 1 and 3600".into());
        }
        if self.min_samples == 0 {
            return Err("min_samples is at least 1".into());
        }
        if self.count == 0 {
            return Err("count is at least 1".into());
        }
        if self.error_rate.is_none() && self.trap_rate.is_none() && self.p99_latency_ms.is_none() && self.prometheus.is_empty() {
            return Err("an analysis checks at least one of error_rate, trap_rate, p99_latency_ms and prometheus".into());
        }
        if self.prometheus.len() > MAX_QUERIES {
            return Err(format!("an analysis holds at most {MAX_QUERIES} prometheus queries"));
        }
        if let Some(p) = self.prometheus.iter().find_map(PrometheusQuery::problem) {
            return Err(p);
        }
        if let Some(q) = self.prometheus.iter().enumerate().find(|(i, q)| self.prometheus[..*i].iter().any(|o| o.name == q.name)).map(|(_, q)| q) {
            return Err(format!("two prometheus queries are named {}; names are unique within an analysis", q.name));
        }
        for (name, t, rate) in [("error_rate", &self.error_rate, true), ("trap_rate", &self.trap_rate, true), ("p99_latency_ms", &self.p99_latency_ms, false)] {
            let Some(t) = t else { continue };
            if t.max.is_none() && t.relative.is_none() {
                return Err(format!("{name} needs max, relative or both"));
            }
            let bad = |v: f64| !v.is_finite() || v < 0.0 || (rate && v > 1.0);
            if t.max.is_some_and(bad) || bad(t.slack) {
                return Err(format!("{name}: max and slack are {}", if rate { "rates from 0 to 1" } else { "milliseconds, 0 or more" }));
            }
            if t.relative.is_some_and(|r| !r.is_finite() || r <= 0.0) {
                return Err(format!("{name}: relative is a factor above 0 (1.0: no worse than stable)"));
            }
        }
        Ok(())
    }
}

/// What a measurement concluded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Pass,
    Fail,
    Inconclusive,
    Error,
}

/// One version's window, as a measurement shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Sample {
    pub requests: u64,
    pub errors: u64,
    pub traps: u64,
    pub deadlines: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_rate: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trap_rate: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p99_latency_ms: Option<f64>,
}

impl Sample {
    pub fn of(c: &Counters) -> Sample {
        Sample {
            requests: c.requests,
            errors: c.errors,
            traps: c.traps,
            deadlines: c.deadlines,
            error_rate: c.error_rate(),
            trap_rate: c.trap_rate(),
            p99_latency_ms: c.latency.quantile_ms(0.99),
        }
    }
}

/// One threshold checked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Check {
    pub metric: String,
    /// The candidate's value (absent: no data).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    /// The limit it was held to (absent: nothing to compare with).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<f64>,
    /// The lower limit (Prometheus queries with `min`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    /// `pass`, `fail` or `inconclusive`.
    pub verdict: Verdict,
}

/// A measurement: the inputs, each check, the verdict and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Measurement {
    pub verdict: Verdict,
    pub window_secs: f64,
    pub min_samples: u64,
    pub candidate: Sample,
    pub stable: Sample,
    pub checks: Vec<Check>,
    pub reason: String,
}

/// Judges the candidate's window next to stable's over the same window.
pub fn evaluate(a: &Analysis, candidate: &Counters, stable: &Counters, window_secs: f64) -> Measurement {
    let (cand, stab) = (Sample::of(candidate), Sample::of(stable));
    let mut checks = Vec::new();
    let enough = candidate.requests >= a.min_samples;
    let stable_known = stable.requests >= a.min_samples;
    for (metric, threshold, value, base, rate) in [
        ("error_rate", &a.error_rate, cand.error_rate, stab.error_rate, true),
        ("trap_rate", &a.trap_rate, cand.trap_rate, stab.trap_rate, true),
        ("p99_latency_ms", &a.p99_latency_ms, cand.p99_latency_ms, stab.p99_latency_ms, false),
    ] {
        let Some(t) = threshold else { continue };
        let base = if stable_known { base } else if rate { Some(0.0) } else { None };
        let relative = t.relative.map(|r| base.map(|b| b * r + t.slack));
        let limit = match (t.max, relative) {
            (Some(m), Some(Some(r))) => Some(m.min(r)),
            (Some(m), _) => Some(m),
            (None, Some(r)) => r,
            (None, None) => None,
        };
        // A relative limit with nothing to compare with leaves the check open.
        let open = matches!(relative, Some(None));
        let verdict = match (value, limit) {
            _ if !enough => Verdict::Inconclusive,
            (Some(v), Some(l)) if v > l + 1e-12 => Verdict::Fail,
            (Some(_), Some(_)) if open => Verdict::Inconclusive,
            (Some(_), Some(_)) => Verdict::Pass,
            _ => Verdict::Inconclusive,
        };
        checks.push(Check { metric: metric.into(), value, limit, min: None, verdict });
    }
    let mut m = Measurement { verdict: Verdict::Inconclusive, window_secs, min_samples: a.min_samples, candidate: cand, stable: stab, checks, reason: String::new() };
    m.conclude();
    m
}

impl Measurement {
    /// Adds the checks of Prometheus queries and concludes again.
    pub fn with_checks(mut self, more: impl IntoIterator<Item = Check>) -> Measurement {
        let enough = self.candidate.requests >= self.min_samples;
        self.checks.extend(more.into_iter().map(|c| if enough { c } else { Check { verdict: Verdict::Inconclusive, ..c } }));
        self.conclude();
        self
    }

    /// The verdict from the checks: too few samples is inconclusive whatever they say;
    /// then any failed check fails; then any open check leaves it inconclusive.
    fn conclude(&mut self) {
        let failed: Vec<&str> = self.checks.iter().filter(|c| c.verdict == Verdict::Fail).map(|c| c.metric.as_str()).collect();
        let open: Vec<&str> = self.checks.iter().filter(|c| c.verdict == Verdict::Inconclusive).map(|c| c.metric.as_str()).collect();
        (self.verdict, self.reason) = if self.candidate.requests < self.min_samples {
            (Verdict::Inconclusive, format!("{} candidate requests in the window, fewer than min_samples {}", self.candidate.requests, self.min_samples))
        } else if !failed.is_empty() {
            (Verdict::Fail, format!("over the limit: {}", failed.join(", ")))
        } else if !open.is_empty() {
            (Verdict::Inconclusive, format!("nothing to judge {} by (too little stable traffic, or an empty query result)", open.join(", ")))
        } else {
            (Verdict::Pass, "every check within its limit".into())
        };
    }
}

/// Traps or deadline hits in a row that trip the guard at once.
pub const TRIP_TRAPS: u64 = 3;
/// Error responses that, at half the requests or more, trip the guard.
pub const TRIP_ERRORS: u64 = 10;

/// The fast-trip guard over a short window of the candidate (the node's ticks, about a
/// second): a burst of traps (at least [`TRIP_TRAPS`], half the requests or more) or of
/// errors (at least [`TRIP_ERRORS`], half or more) aborts without waiting for the next
/// measurement. Why, if it trips.
pub fn fast_trip(candidate: &Counters) -> Option<String> {
    let failed = candidate.traps + candidate.deadlines;
    if failed >= TRIP_TRAPS && failed * 2 >= candidate.requests {
        return Some(format!("fast trip: {failed} traps or deadline hits in {} candidate requests", candidate.requests));
    }
    if candidate.errors >= TRIP_ERRORS && candidate.errors * 2 >= candidate.requests {
        return Some(format!("fast trip: {} error responses in {} candidate requests", candidate.errors, candidate.requests));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counters(requests: u64, errors: u64, traps: u64) -> Counters {
        Counters { requests, errors, traps, ..Default::default() }
    }

    #[test]
    fn too_few_samples_is_inconclusive_never_pass_or_fail() {
        let a = Analysis::default_background();
        let m = evaluate(&a, &counters(5, 5, 0), &counters(100, 0, 0), 10.0);
        assert_eq!(m.verdict, Verdict::Inconclusive, "{m:?}");
        assert!(m.reason.contains("min_samples"));
        assert_eq!(evaluate(&a, &counters(0, 0, 0), &counters(0, 0, 0), 10.0).verdict, Verdict::Inconclusive);
    }

    #[test]
    fn relative_limits_follow_stable_and_treat_absent_stable_as_perfect() {
        let a = Analysis::default_background();
        // Stable fails 10 %; the candidate 12 %: within stable + 5 points.
        assert_eq!(evaluate(&a, &counters(100, 12, 0), &counters(100, 10, 0), 10.0).verdict, Verdict::Pass);
        let m = evaluate(&a, &counters(100, 20, 0), &counters(100, 10, 0), 10.0);
        assert_eq!(m.verdict, Verdict::Fail);
        assert!(m.checks[0].limit.is_some_and(|l| (l - 0.15).abs() < 1e-9), "{:?}", m.checks[0]);
        assert!(m.reason.contains("error_rate"), "{}", m.reason);
        // No stable traffic: stable counts as 0 errors.
        assert_eq!(evaluate(&a, &counters(100, 4, 0), &counters(0, 0, 0), 10.0).verdict, Verdict::Pass);
        assert_eq!(evaluate(&a, &counters(100, 6, 0), &counters(0, 0, 0), 10.0).verdict, Verdict::Fail);
        assert_eq!(evaluate(&a, &counters(100, 0, 2), &counters(100, 0, 0), 10.0).verdict, Verdict::Fail, "traps: stable + 1 point");
    }

    #[test]
    fn latency_is_judged_from_the_histogram() {
        let a = Analysis { p99_latency_ms: Some(Threshold { max: Some(10.0), relative: None, slack: 0.0 }), error_rate: None, trap_rate: None, ..Analysis::default_background() };
        let mut fast = counters(100, 0, 0);
        let mut slow = counters(100, 0, 0);
        for i in 0..100 {
            fast.latency.record(800 + i);
            slow.latency.record(if i < 95 { 900 } else { 40_000 });
        }
        assert_eq!(evaluate(&a, &fast, &counters(0, 0, 0), 10.0).verdict, Verdict::Pass);
        let m = evaluate(&a, &slow, &counters(0, 0, 0), 10.0);
        assert_eq!((m.verdict, m.candidate.p99_latency_ms), (Verdict::Fail, Some(50.0)));
        // Relative latency with no stable traffic has nothing to compare with.
        let rel = Analysis { p99_latency_ms: Some(Threshold { max: None, relative: Some(1.2), slack: 0.0 }), ..a };
        assert_eq!(evaluate(&rel, &fast, &counters(0, 0, 0), 10.0).verdict, Verdict::Inconclusive);
    }

    #[test]
    fn windows_are_differences_and_survive_a_node_restart() {
        let mut later = counters(150, 10, 1);
        later.latency.record(300);
        let w = later.since(&counters(100, 4, 1));
        assert_eq!((w.requests, w.errors, w.traps), (50, 6, 0));
        assert_eq!(counters(3, 0, 0).since(&counters(100, 0, 0)).requests, 3, "a counter that went down restarted");
    }

    #[test]
    fn the_guard_trips_on_bursts_only() {
        assert!(fast_trip(&counters(4, 0, 3)).is_some());
        assert!(fast_trip(&counters(100, 0, 3)).is_none(), "3 traps in 100 is for the analysis to judge");
        assert!(fast_trip(&counters(12, 10, 0)).is_some());
        assert!(fast_trip(&counters(12, 5, 0)).is_none());
    }

    #[test]
    fn analyses_that_cannot_run_are_refused() {
        let ok = Analysis::default_background();
        assert!(ok.check().is_ok());
        let cases = [
            Analysis { interval_secs: 0, ..ok.clone() },
            Analysis { min_samples: 0, ..ok.clone() },
            Analysis { error_rate: None, trap_rate: None, ..ok.clone() },
            Analysis { error_rate: Some(Threshold { max: Some(1.5), relative: None, slack: 0.0 }), ..ok.clone() },
            Analysis { error_rate: Some(Threshold::default()), ..ok.clone() },
            Analysis { trap_rate: Some(Threshold { max: None, relative: Some(0.0), slack: 0.0 }), ..ok.clone() },
        ];
        for c in cases {
            assert!(c.check().is_err(), "{c:?}");
        }
    }
}
