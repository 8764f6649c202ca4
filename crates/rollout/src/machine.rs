//! The rollout itself: its state, how time and metrics move it ([`Rollout::tick`]) and
//! the operations ([`Rollout::promote`], [`Rollout::abort`], …). Every change bumps
//! `revision` and appends a [`Decision`] saying what and why.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::analysis::{Analysis, Counters, Measurement, OnInconclusive, QueryContext, QueryValue, Verdict, evaluate, fast_trip};
use crate::cohort::bucket;
use crate::spec::{Pause, RolloutSpec, Stickiness, Step, Strategy, Weight};

/// Why a rollout or an operation on it was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RolloutError {
    /// The request cannot run as written (400).
    #[error("{0}")]
    Invalid(String),
    /// Not now: the rollout's phase or revision is not what the operation needs (409).
    #[error("{0}")]
    Conflict(String),
}

impl RolloutError {
    pub fn invalid(m: impl Into<String>) -> Self {
        RolloutError::Invalid(m.into())
    }
    pub fn conflict(m: impl Into<String>) -> Self {
        RolloutError::Conflict(m.into())
    }
}

/// A capability version as a rollout names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Version {
    pub capability: String,
    pub version: String,
    /// `sha256:<hex>` of the component.
    pub digest: String,
}

impl Version {
    /// `name@version`, as the `x-runplane-capability` header writes it.
    pub fn label(&self) -> String {
        format!("{}@{}", self.capability, self.version)
    }
}

/// Where a rollout is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Moving through its steps (blue-green: switched, in the post-promotion window).
    Progressing,
    /// Waiting: an indefinite pause step, an operator's pause, a blue-green preview,
    /// or an inconclusive analysis set to pause.
    Paused,
    /// Done: the candidate serves everyone and is the route's stable version.
    Promoted,
    /// Everyone back on stable, until retried.
    Aborted,
    /// A newer rollout of the route took over; final.
    Superseded,
}

impl Phase {
    pub fn is_final(self) -> bool {
        matches!(self, Phase::Promoted | Phase::Superseded)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Progressing => "progressing",
            Phase::Paused => "paused",
            Phase::Promoted => "promoted",
            Phase::Aborted => "aborted",
            Phase::Superseded => "superseded",
        }
    }
}

/// Which version serves a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Stable,
    Candidate,
}

/// The counters of both versions at one moment (summed over the instance's nodes).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Mark {
    pub at_ms: u64,
    pub candidate: Counters,
    pub stable: Counters,
    /// The answers to the Prometheus queries due at this moment
    /// ([`Rollout::queries_due`]); not kept once measured.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub external: Vec<QueryValue>,
}

/// An analysis in progress: where its window starts and what it has concluded so far.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Run {
    pub since: Mark,
    pub measurements: u32,
    pub passes: u32,
    pub failures: u32,
    pub inconclusive: u32,
    /// Measurements in a row that could not be taken.
    pub errors_in_row: u32,
}

/// One thing the rollout decided, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Decision {
    pub at_ms: u64,
    /// The rollout's revision after it.
    pub revision: u64,
    /// `start`, `weight`, `cohort`, `pause`, `resume`, `step`, `measurement`, `promote`,
    /// `switch`, `promoted`, `abort`, `retry`, `superseded`.
    pub action: String,
    pub step: usize,
    pub weight: Weight,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub measurement: Option<Measurement>,
}

/// Most decisions a rollout keeps (every one is also an admin event).
pub const MAX_HISTORY: usize = 500;

/// A rollout of one route.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Rollout {
    pub rollout_id: String,
    pub route: String,
    /// Bumped by every change; operations may name the revision they expect.
    pub revision: u64,
    pub strategy: Strategy,
    pub stable: Version,
    pub candidate: Version,
    pub steps: Vec<Step>,
    /// Background analysis (through every step; blue-green: before and after the switch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysis: Option<Analysis>,
    pub stickiness: Stickiness,
    /// Mixed into every subject's hash: each rollout draws its own cohort (the members
    /// of a release group share one, so a tenant is in all their cohorts or none).
    pub salt: String,
    /// The release group it belongs to: its members are started, promoted and aborted
    /// together.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Tenants on the candidate whatever their bucket.
    pub include: BTreeSet<String>,
    /// Tenants on stable until the rollout is promoted.
    pub exclude: BTreeSet<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub post_promotion_secs: Option<u64>,
    /// Rolling: the waves of node ids, planned at the start from the ready nodes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub waves: Vec<Vec<String>>,
    /// Rolling: how many waves are active (their nodes serve the candidate).
    #[serde(default)]
    pub wave: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wave_secs: Option<u64>,
    pub phase: Phase,
    /// The step being worked on (`steps.len()`: all done).
    pub step: usize,
    pub weight: Weight,
    pub step_started_ms: u64,
    /// Why it is paused: `step`, `operator`, `preview` or `inconclusive`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused_by: Option<String>,
    /// Blue-green: when the switch happened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub switched_at_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abort_reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inline: Option<Run>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub background: Option<Run>,
    /// The fast-trip guard's last look.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guard: Option<Mark>,
    pub created_ms: u64,
    pub updated_ms: u64,
    pub history: Vec<Decision>,
}

impl Rollout {
    /// A new rollout of `route` from `stable` to `candidate` (the spec validated), with
    /// the counters as they are now.
    pub fn start(rollout_id: String, route: String, stable: Version, candidate: Version, spec: RolloutSpec, salt: String, now_ms: u64, counters: &Mark) -> Rollout {
        let mut r = Rollout {
            rollout_id,
            route,
            revision: 0,
            strategy: spec.strategy,
            stable,
            candidate,
            steps: spec.steps,
            analysis: spec.analysis,
            stickiness: spec.stickiness,
            salt,
            group: None,
            include: spec.include.into_iter().collect(),
            exclude: spec.exclude.into_iter().collect(),
            post_promotion_secs: spec.post_promotion_secs,
            waves: Vec::new(),
            wave: 0,
            wave_secs: spec.wave_secs,
            phase: Phase::Progressing,
            step: 0,
            weight: Weight(0),
            step_started_ms: now_ms,
            paused_by: None,
            switched_at_ms: None,
            abort_reason: None,
            inline: None,
            background: None,
            guard: None,
            created_ms: now_ms,
            updated_ms: now_ms,
            history: Vec::new(),
        };
        r.begin(now_ms, counters, "start", format!("{} rollout of {} from {} to {}", r.strategy.as_str(), r.route, r.stable.label(), r.candidate.label()));
        r
    }

    /// Puts the rollout at its first step (a start, or a retry).
    fn begin(&mut self, now_ms: u64, counters: &Mark, action: &str, message: String) {
        self.phase = Phase::Progressing;
        self.step = 0;
        self.weight = Weight(0);
        self.step_started_ms = now_ms;
        self.paused_by = None;
        self.switched_at_ms = None;
        self.abort_reason = None;
        self.inline = None;
        self.wave = 0;
        let mark = Mark { at_ms: now_ms, external: Vec::new(), ..counters.clone() };
        self.background = self.analysis.as_ref().map(|_| Run { since: mark.clone(), ..Run::default() });
        self.guard = Some(mark);
        self.record(now_ms, action, message, None);
        match self.strategy {
            Strategy::AllAtOnce => self.finish(now_ms, "all at once: the candidate serves everyone"),
            Strategy::BlueGreen => {
                self.phase = Phase::Paused;
                self.paused_by = Some("preview".into());
                let who = if self.include.is_empty() { "nobody yet".to_owned() } else { self.include.iter().cloned().collect::<Vec<_>>().join(", ") };
                self.record(now_ms, "pause", format!("preview: the candidate serves only {who} until promoted"), None);
            }
            Strategy::Canary => self.run_steps(now_ms, counters),
            // The first wave starts at the first tick, once the node set is planned.
            Strategy::Rolling => {}
        }
    }

    /// Plans a rolling rollout's waves from the ready nodes `(id, region)`: regions in
    /// `region_order` first, in that order, then the rest; by id within a region;
    /// `per_wave` nodes to a wave.
    pub fn plan_waves(&mut self, mut nodes: Vec<(String, String)>, region_order: &[String], per_wave: usize) {
        let rank = |region: &str| region_order.iter().position(|r| r == region).unwrap_or(region_order.len());
        nodes.sort_by(|a, b| (rank(&a.1), &a.0).cmp(&(rank(&b.1), &b.0)));
        self.waves = nodes.chunks(per_wave.max(1)).map(|c| c.iter().map(|(id, _)| id.clone()).collect()).collect();
    }

    /// Which version serves `tenant` on node `node`: for a rolling rollout, the
    /// candidate on the nodes of the active waves; otherwise [`Rollout::choose`].
    pub fn choose_on(&self, node: &str, tenant: &str, session: Option<&str>) -> Side {
        if self.strategy != Strategy::Rolling || !self.is_active() {
            return self.choose(tenant, session);
        }
        if self.waves.iter().take(self.wave).flatten().any(|n| n == node) { Side::Candidate } else { Side::Stable }
    }

    /// Which version serves `tenant` (and `session`, with session stickiness).
    pub fn choose(&self, tenant: &str, session: Option<&str>) -> Side {
        match self.phase {
            Phase::Promoted => Side::Candidate,
            Phase::Aborted | Phase::Superseded => Side::Stable,
            Phase::Progressing | Phase::Paused => {
                if self.exclude.contains(tenant) {
                    Side::Stable
                } else if self.include.contains(tenant) {
                    Side::Candidate
                } else if self.weight.0 == 0 {
                    Side::Stable
                } else {
                    let session = if self.stickiness == Stickiness::Session { session } else { None };
                    if bucket(&self.salt, tenant, session) < self.weight.0 { Side::Candidate } else { Side::Stable }
                }
            }
        }
    }

    /// Whether time and metrics can still move it (not promoted, aborted or superseded).
    pub fn is_active(&self) -> bool {
        matches!(self.phase, Phase::Progressing | Phase::Paused)
    }

    /// Refuses an operation that names another revision than the current one.
    pub fn check_revision(&self, expected: Option<u64>) -> Result<(), RolloutError> {
        match expected {
            Some(e) if e != self.revision => Err(RolloutError::conflict(format!(
                "rollout {} is at revision {}, not {e}: someone else changed it; read it again and decide",
                self.rollout_id, self.revision
            ))),
            _ => Ok(()),
        }
    }

    fn record(&mut self, at_ms: u64, action: &str, message: String, measurement: Option<Measurement>) {
        self.revision += 1;
        self.updated_ms = at_ms;
        self.history.push(Decision { at_ms, revision: self.revision, action: action.into(), step: self.step, weight: self.weight, message, measurement });
        if self.history.len() > MAX_HISTORY {
            let extra = self.history.len() - MAX_HISTORY;
            self.history.drain(..extra);
        }
    }

    /// The last decision (what an admin event records of a change).
    pub fn last_decision(&self) -> Option<&Decision> {
        self.history.last()
    }

    fn finish(&mut self, now_ms: u64, why: &str) {
        self.weight = Weight::FULL;
        self.phase = Phase::Promoted;
        self.paused_by = None;
        self.inline = None;
        self.background = None;
        self.guard = None;
        self.record(now_ms, "promoted", format!("{why}; {} is the route's stable version", self.candidate.label()), None);
    }

    fn abort_with(&mut self, now_ms: u64, reason: String) {
        self.weight = Weight(0);
        self.phase = Phase::Aborted;
        self.paused_by = None;
        self.switched_at_ms = None;
        self.inline = None;
        self.background = None;
        self.guard = None;
        self.abort_reason = Some(reason.clone());
        self.record(now_ms, "abort", format!("{reason}; everyone is back on {}", self.stable.label()), None);
    }

    /// Moves the rollout on with time and the current counters (`Err`: they could not
    /// be collected, and why). Whether anything changed.
    pub fn tick(&mut self, now_ms: u64, counters: Result<&Mark, String>) -> bool {
        if !self.is_active() {
            return false;
        }
        let before = self.revision;
        match &counters {
            Ok(now) => {
                if let Some(g) = &self.guard
                    && let Some(why) = fast_trip(&now.candidate.since(&g.candidate))
                {
                    self.abort_with(now_ms, why);
                    return true;
                }
                self.guard = Some(Mark { at_ms: now_ms, external: Vec::new(), ..(*now).clone() });
                self.background_analysis(now_ms, Ok(*now));
            }
            Err(e) => self.background_analysis(now_ms, Err(e.clone())),
        }
        if !self.is_active() || self.phase == Phase::Paused {
            return self.revision != before;
        }
        if let Some(at) = self.switched_at_ms {
            let window = self.post_promotion_secs.unwrap_or(0) * 1000;
            if now_ms >= at + window {
                self.finish(now_ms, "the post-promotion window passed without a failed analysis");
            }
            return self.revision != before;
        }
        if self.strategy == Strategy::Rolling {
            self.next_wave(now_ms);
            return self.revision != before;
        }
        if let Ok(now) = counters {
            self.run_steps(now_ms, now);
        }
        self.revision != before
    }

    /// The Prometheus queries (placeholders filled in) that [`Rollout::tick`] at
    /// `now_ms` will measure: the background analysis's and the current analysis
    /// step's, when their interval has passed. The node asks them and passes the
    /// answers in [`Mark::external`].
    pub fn queries_due(&self, now_ms: u64) -> Vec<String> {
        let mut due = Vec::new();
        if !self.is_active() {
            return due;
        }
        let mut add = |a: &Analysis, run: &Run| {
            if now_ms >= run.since.at_ms + a.interval_secs * 1000 {
                let ctx = self.query_context(run, now_ms);
                due.extend(a.prometheus.iter().map(|q| q.render(&ctx)).filter(|q| !due.contains(q)).collect::<Vec<_>>());
            }
        };
        if let (Some(a), Some(run)) = (&self.analysis, &self.background) {
            add(a, run);
        }
        if self.strategy != Strategy::Rolling
            && self.switched_at_ms.is_none()
            && let (Some(Step::Analysis(a)), Some(run)) = (self.steps.get(self.step), &self.inline)
        {
            add(a, run);
        }
        due
    }

    /// What a query's placeholders become for a measurement of `run` at `now_ms`.
    fn query_context<'a>(&'a self, run: &Run, now_ms: u64) -> QueryContext<'a> {
        QueryContext {
            route: &self.route,
            capability: &self.candidate.capability,
            candidate_version: &self.candidate.version,
            stable_capability: &self.stable.capability,
            stable_version: &self.stable.version,
            window_secs: (now_ms.saturating_sub(run.since.at_ms) / 1000).max(1),
        }
    }

    /// Rolling: the next wave once the current one has served `wave_secs`; after the
    /// last, promoted.
    fn next_wave(&mut self, now_ms: u64) {
        let due = self.wave == 0 || now_ms >= self.step_started_ms + self.wave_secs.unwrap_or(30) * 1000;
        if !due {
            return;
        }
        if self.wave >= self.waves.len() {
            self.finish(now_ms, &format!("every wave served {} s without a failed analysis", self.wave_secs.unwrap_or(30)));
            return;
        }
        let nodes = self.waves[self.wave].join(", ");
        self.wave += 1;
        self.step = self.wave;
        self.step_started_ms = now_ms;
        self.weight = Weight(((self.wave * 10_000) / self.waves.len().max(1)) as u32);
        self.record(now_ms, "wave", format!("wave {} of {}: {nodes} serve{} {}", self.wave, self.waves.len(), if self.waves[self.wave - 1].len() == 1 { "s" } else { "" }, self.candidate.label()), None);
    }

    /// The background analysis, when a measurement is due.
    fn background_analysis(&mut self, now_ms: u64, counters: Result<&Mark, String>) {
        let (Some(a), Some(run)) = (self.analysis.clone(), self.background.as_ref()) else { return };
        if now_ms < run.since.at_ms + a.interval_secs * 1000 {
            return;
        }
        let mut run = run.clone();
        let outcome = self.measure(&a, &mut run, now_ms, counters, "background analysis");
        if self.is_active() {
            self.background = Some(run);
        }
        if let Some(Outcome::Abort(why)) = outcome {
            self.abort_with(now_ms, why);
        }
    }

    /// Takes one measurement of `a` over the window of `run`; records it. What it
    /// means for the rollout.
    fn measure(&mut self, a: &Analysis, run: &mut Run, now_ms: u64, counters: Result<&Mark, String>, what: &str) -> Option<Outcome> {
        run.measurements += 1;
        let now = match counters {
            Err(e) => {
                run.errors_in_row += 1;
                self.record(now_ms, "measurement", format!("{what}: error ({} in a row): {e}", run.errors_in_row), None);
                return (run.errors_in_row >= a.consecutive_error_limit)
                    .then(|| Outcome::Abort(format!("{what}: {} measurements in a row could not be taken (consecutive_error_limit {})", run.errors_in_row, a.consecutive_error_limit)));
            }
            Ok(now) => now,
        };
        // Every query this measurement needs, answered, or it could not be taken.
        let ctx = self.query_context(run, now_ms);
        let mut answers = Vec::new();
        for q in &a.prometheus {
            let sent = q.render(&ctx);
            match now.external.iter().find(|v| v.query == sent) {
                Some(QueryValue { error: None, value, .. }) => answers.push(q.check(*value)),
                found => {
                    let why = found.and_then(|v| v.error.clone()).unwrap_or_else(|| "it was not asked".into());
                    run.errors_in_row += 1;
                    self.record(now_ms, "measurement", format!("{what}: error ({} in a row): prometheus query {}: {why}", run.errors_in_row, q.name), None);
                    return (run.errors_in_row >= a.consecutive_error_limit)
                        .then(|| Outcome::Abort(format!("{what}: {} measurements in a row could not be taken (consecutive_error_limit {})", run.errors_in_row, a.consecutive_error_limit)));
                }
            }
        }
        run.errors_in_row = 0;
        let window = (now_ms.saturating_sub(run.since.at_ms)) as f64 / 1000.0;
        let m = evaluate(a, &now.candidate.since(&run.since.candidate), &now.stable.since(&run.since.stable), window).with_checks(answers);
        run.since = Mark { at_ms: now_ms, external: Vec::new(), ..now.clone() };
        let verdict = m.verdict;
        let message = format!("{what}: {} ({})", verdict_str(verdict), m.reason);
        self.record(now_ms, "measurement", message, Some(m));
        match verdict {
            Verdict::Pass => {
                run.passes += 1;
                Some(Outcome::Pass)
            }
            Verdict::Fail => {
                run.failures += 1;
                (run.failures > a.failure_limit).then(|| Outcome::Abort(format!("{what} failed {} times (failure_limit {})", run.failures, a.failure_limit)))
            }
            Verdict::Inconclusive => {
                run.inconclusive += 1;
                match a.inconclusive {
                    OnInconclusive::Continue => None,
                    OnInconclusive::Pause => Some(Outcome::Pause),
                    OnInconclusive::Abort => Some(Outcome::Abort(format!("{what} was inconclusive and is set to abort then"))),
                }
            }
            Verdict::Error => None,
        }
    }

    /// Works through the canary's steps as far as time and analysis allow.
    fn run_steps(&mut self, now_ms: u64, counters: &Mark) {
        while self.phase == Phase::Progressing && self.step < self.steps.len() {
            match self.steps[self.step].clone() {
                Step::SetWeight(w) => {
                    self.weight = w;
                    self.record(now_ms, "weight", format!("step {}: the candidate serves {} % of subjects", self.step, w.percent()), None);
                    self.next_step(now_ms);
                }
                Step::SetCohort(c) => {
                    self.include.extend(c.tenants.iter().cloned());
                    self.record(now_ms, "cohort", format!("step {}: the candidate serves {} whatever their bucket", self.step, c.tenants.join(", ")), None);
                    self.next_step(now_ms);
                }
                Step::Pause(Pause { seconds: Some(s) }) => {
                    if now_ms < self.step_started_ms + s * 1000 {
                        return;
                    }
                    self.record(now_ms, "step", format!("step {}: the {s} s pause is over", self.step), None);
                    self.next_step(now_ms);
                }
                Step::Pause(Pause { seconds: None }) => {
                    if self.paused_by.is_none() {
                        self.phase = Phase::Paused;
                        self.paused_by = Some("step".into());
                        self.record(now_ms, "pause", format!("step {}: paused until promoted or resumed", self.step), None);
                    }
                    return;
                }
                Step::Analysis(a) => {
                    // The window starts when the step does.
                    let mut run = self.inline.take().unwrap_or_else(|| Run { since: Mark { at_ms: now_ms, external: Vec::new(), ..counters.clone() }, ..Run::default() });
                    if now_ms < run.since.at_ms + a.interval_secs * 1000 {
                        self.inline = Some(run);
                        return;
                    }
                    let what = format!("step {} analysis", self.step);
                    match self.measure(&a, &mut run, now_ms, Ok(counters), &what) {
                        Some(Outcome::Abort(why)) => return self.abort_with(now_ms, why),
                        Some(Outcome::Pause) => {
                            self.inline = Some(run);
                            self.phase = Phase::Paused;
                            self.paused_by = Some("inconclusive".into());
                            return;
                        }
                        Some(Outcome::Pass) if run.passes >= a.count => self.next_step(now_ms),
                        _ => {
                            self.inline = Some(run);
                            return;
                        }
                    }
                }
            }
        }
        if self.phase == Phase::Progressing && self.step >= self.steps.len() && self.strategy == Strategy::Canary {
            self.finish(now_ms, "every step passed");
        }
    }

    fn next_step(&mut self, now_ms: u64) {
        self.step += 1;
        self.step_started_ms = now_ms;
        self.inline = None;
    }

    fn refuse_unless_active(&self, op: &str) -> Result<(), RolloutError> {
        match self.phase {
            Phase::Progressing | Phase::Paused => Ok(()),
            Phase::Aborted => Err(RolloutError::conflict(format!("rollout {} is aborted; retry it before you {op} it", self.rollout_id))),
            Phase::Promoted => Err(RolloutError::conflict(format!("rollout {} is already promoted; start a new rollout to change the route", self.rollout_id))),
            Phase::Superseded => Err(RolloutError::conflict(format!("rollout {} was superseded by a newer rollout of {}", self.rollout_id, self.route))),
        }
    }

    /// The next step now: ends a pause or an analysis step early; a blue-green preview
    /// switches (and its post-promotion window begins); in that window, promotes fully.
    pub fn promote(&mut self, now_ms: u64, counters: &Mark) -> Result<(), RolloutError> {
        self.refuse_unless_active("promote")?;
        if self.strategy == Strategy::Rolling {
            // The next wave now.
            self.phase = Phase::Progressing;
            self.paused_by = None;
            self.step_started_ms = 0;
            self.next_wave(now_ms);
            return Ok(());
        }
        if self.strategy == Strategy::BlueGreen {
            if self.switched_at_ms.is_some() {
                self.finish(now_ms, "promoted by an operator during the post-promotion window");
                return Ok(());
            }
            self.weight = Weight::FULL;
            self.phase = Phase::Progressing;
            self.paused_by = None;
            self.switched_at_ms = Some(now_ms);
            let mark = Mark { at_ms: now_ms, external: Vec::new(), ..counters.clone() };
            self.background = self.analysis.as_ref().map(|_| Run { since: mark.clone(), ..Run::default() });
            self.guard = Some(mark);
            let window = self.post_promotion_secs.unwrap_or(0);
            self.record(now_ms, "switch", format!("switched: {} serves everyone; it switches back on a failed analysis within {window} s", self.candidate.label()), None);
            return Ok(());
        }
        let was = self.step;
        self.phase = Phase::Progressing;
        self.paused_by = None;
        self.next_step(now_ms);
        self.record(now_ms, "promote", format!("step {was} ended by an operator"), None);
        self.run_steps(now_ms, counters);
        Ok(())
    }

    /// Everyone on the candidate now, and it becomes stable.
    pub fn promote_fully(&mut self, now_ms: u64) -> Result<(), RolloutError> {
        self.refuse_unless_active("promote")?;
        self.finish(now_ms, "promoted fully by an operator");
        Ok(())
    }

    /// Everyone back on stable at once; final until retried.
    pub fn abort(&mut self, now_ms: u64, reason: &str) -> Result<(), RolloutError> {
        self.refuse_unless_active("abort")?;
        self.abort_with(now_ms, format!("aborted by an operator: {reason}"));
        Ok(())
    }

    /// An aborted rollout from its first step again (the same cohort: the salt stays).
    pub fn retry(&mut self, now_ms: u64, counters: &Mark) -> Result<(), RolloutError> {
        if self.phase != Phase::Aborted {
            return Err(RolloutError::conflict(format!("only an aborted rollout is retried; rollout {} is {}", self.rollout_id, self.phase.as_str())));
        }
        self.begin(now_ms, counters, "retry", "retried from step 0".into());
        Ok(())
    }

    /// Holds the rollout where it is (analysis keeps measuring; the guard keeps watch).
    pub fn pause(&mut self, now_ms: u64) -> Result<(), RolloutError> {
        self.refuse_unless_active("pause")?;
        if self.phase == Phase::Paused {
            return Err(RolloutError::conflict(format!("rollout {} is already paused ({})", self.rollout_id, self.paused_by.as_deref().unwrap_or("paused"))));
        }
        self.phase = Phase::Paused;
        self.paused_by = Some("operator".into());
        self.record(now_ms, "pause", "paused by an operator".into(), None);
        Ok(())
    }

    /// Lets a paused rollout go on; at an indefinite pause step, goes past it.
    pub fn resume(&mut self, now_ms: u64, counters: &Mark) -> Result<(), RolloutError> {
        self.refuse_unless_active("resume")?;
        match self.paused_by.as_deref() {
            None => return Err(RolloutError::conflict(format!("rollout {} is not paused", self.rollout_id))),
            Some("preview") => return Err(RolloutError::conflict("a blue-green preview ends with promote (the switch), not resume")),
            Some("step") => self.next_step(now_ms),
            Some(_) => {}
        }
        self.phase = Phase::Progressing;
        self.paused_by = None;
        self.record(now_ms, "resume", "resumed by an operator".into(), None);
        self.run_steps(now_ms, counters);
        Ok(())
    }

    /// Another member of its release group was aborted: this one goes back to stable
    /// too. `false` if it was not moving.
    pub fn abort_with_group(&mut self, now_ms: u64, member: &str, why: &str) -> bool {
        if !self.is_active() {
            return false;
        }
        self.abort_with(now_ms, format!("release group {}: member {member} was aborted ({why})", self.group.as_deref().unwrap_or("?")));
        true
    }

    /// A newer rollout of the route took over: this one is final, on stable.
    pub fn supersede(&mut self, now_ms: u64, by: &str) {
        if self.is_active() || self.phase == Phase::Aborted {
            self.weight = Weight(0);
            self.phase = Phase::Superseded;
            self.paused_by = None;
            self.inline = None;
            self.background = None;
            self.guard = None;
            self.record(now_ms, "superseded", format!("superseded by rollout {by}"), None);
        }
    }
}

enum Outcome {
    Pass,
    Pause,
    Abort(String),
}

fn verdict_str(v: Verdict) -> &'static str {
    match v {
        Verdict::Pass => "pass",
        Verdict::Fail => "fail",
        Verdict::Inconclusive => "inconclusive",
        Verdict::Error => "error",
    }
}
