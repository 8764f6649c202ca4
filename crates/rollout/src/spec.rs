//! What an operator asks for: a strategy, its steps and analysis, and how cohorts
//! stick. [`RolloutSpec::validate`] refuses what cannot run, saying why, and fills in
//! the defaults.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::analysis::Analysis;
use crate::cohort::BUCKETS;
use crate::machine::RolloutError;

/// How a route moves from its stable version to the candidate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    /// Everyone at once (a deploy that is recorded as a rollout and can be undone).
    AllAtOnce,
    /// Weight raised step by step, with analysis between steps.
    Canary,
    /// The candidate reachable only by the named tenants (a preview) until promoted,
    /// then switched to at once, with analysis after the switch and an automatic
    /// switch back within the window.
    BlueGreen,
    /// Node by node (waves of `max_unavailable`, in `region_order`), each wave served
    /// for `wave_secs` under the background analysis before the next; a failure sends
    /// every node back to stable.
    Rolling,
}

/// What keeps a subject on its version.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Stickiness {
    /// The tenant: all of a tenant's requests go to one version.
    #[default]
    Tenant,
    /// The tenant and its `x-runplane-session`: each session keeps its version.
    Session,
}

/// A share of traffic, in hundredths of a percent (JSON: a percentage, `0.1` to `100`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Weight(pub u32);

impl Weight {
    pub const FULL: Weight = Weight(BUCKETS);

    /// A percentage with at most two decimals, 0 to 100.
    pub fn from_percent(p: f64) -> Result<Weight, RolloutError> {
        let hundredths = (p * 100.0).round();
        if !(0.0..=100.0).contains(&p) || (p * 100.0 - hundredths).abs() > 1e-6 {
            return Err(RolloutError::invalid(format!("a weight is a percentage from 0 to 100 with at most two decimals (0.1 is the smallest useful step); {p} is not")));
        }
        Ok(Weight(hundredths as u32))
    }

    pub fn percent(self) -> f64 {
        f64::from(self.0) / 100.0
    }
}

/// In the OpenAPI document a weight is the percentage it is written as.
impl utoipa::PartialSchema for Weight {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::Number)
            .minimum(Some(0.0))
            .maximum(Some(100.0))
            .multiple_of(Some(0.01))
            .description(Some("a percentage, at most two decimals"))
            .into()
    }
}

impl utoipa::ToSchema for Weight {}

impl Serialize for Weight {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.0 % 100 == 0 { s.serialize_u32(self.0 / 100) } else { s.serialize_f64(self.percent()) }
    }
}

impl<'de> Deserialize<'de> for Weight {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let p = f64::deserialize(d)?;
        Weight::from_percent(p).map_err(serde::de::Error::custom)
    }
}

/// One step of a canary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Step {
    /// `{"set_weight": 20}`: this share of subjects (by their sticky bucket) gets the
    /// candidate.
    SetWeight(Weight),
    /// `{"pause": {"seconds": 60}}` waits that long; `{"pause": {}}` waits until
    /// promoted or resumed.
    Pause(Pause),
    /// `{"analysis": {...}}`: measure until `count` measurements pass (next step) or
    /// the analysis fails (abort).
    Analysis(Analysis),
    /// `{"set_cohort": {"tenants": ["acme"]}}`: these tenants get the candidate from
    /// now on, whatever their bucket.
    SetCohort(Cohort),
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Pause {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seconds: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Cohort {
    pub tenants: Vec<String>,
}

/// A canary without steps: 10 %, a minute, 50 %, a minute, then everyone.
pub fn default_canary_steps() -> Vec<Step> {
    vec![
        Step::SetWeight(Weight(1_000)),
        Step::Pause(Pause { seconds: Some(60) }),
        Step::SetWeight(Weight(5_000)),
        Step::Pause(Pause { seconds: Some(60) }),
    ]
}

/// Longest timed pause: a week.
pub const MAX_PAUSE_SECS: u64 = 7 * 24 * 3600;
/// Most steps a rollout may have.
pub const MAX_STEPS: usize = 100;
/// Most tenants a rollout may name (pins in and out together).
pub const MAX_PINS: usize = 10_000;

/// A rollout as asked for (the body of `POST /v1/rollouts`, less the capability).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RolloutSpec {
    pub strategy: Strategy,
    /// Canary steps; without any, [`default_canary_steps`]. Other strategies take none.
    #[serde(default)]
    pub steps: Vec<Step>,
    /// Background analysis, measured through every step. A canary or blue-green
    /// rollout without one runs [`Analysis::default_background`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysis: Option<Analysis>,
    #[serde(default)]
    pub stickiness: Stickiness,
    /// Tenants that get the candidate from the start (blue-green: the preview).
    #[serde(default)]
    pub include: Vec<String>,
    /// Tenants that keep stable until the rollout is promoted.
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Blue-green: how long after the switch the analysis may switch back (default 60).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub post_promotion_secs: Option<u64>,
    /// Rolling: nodes activated per wave (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_unavailable: Option<u32>,
    /// Rolling: how long each wave serves before the next (default 30).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wave_secs: Option<u64>,
    /// Rolling: regions in the order their nodes are activated (others after them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub region_order: Vec<String>,
}

impl RolloutSpec {
    /// The spec with its defaults filled in, or why it cannot run.
    pub fn validate(mut self) -> Result<RolloutSpec, RolloutError> {
        match self.strategy {
            Strategy::Canary if self.steps.is_empty() => self.steps = default_canary_steps(),
            Strategy::Canary => {}
            other if !self.steps.is_empty() => {
                return Err(RolloutError::invalid(format!("steps belong to canary rollouts; a {} rollout takes none", other.as_str())));
            }
            _ => {}
        }
        if self.steps.len() > MAX_STEPS {
            return Err(RolloutError::invalid(format!("a rollout has at most {MAX_STEPS} steps; this one has {}", self.steps.len())));
        }
        for step in &mut self.steps {
            if let Step::Analysis(a) = step {
                a.complete();
            }
        }
        if let Some(a) = &mut self.analysis {
            a.complete();
        }
        for (i, step) in self.steps.iter().enumerate() {
            match step {
                Step::Pause(Pause { seconds: Some(s) }) if *s > MAX_PAUSE_SECS => {
                    return Err(RolloutError::invalid(format!("step {i}: a timed pause lasts at most {MAX_PAUSE_SECS} seconds (a week); use {{\"pause\": {{}}}} to wait for an operator")));
                }
                Step::Analysis(a) => a.check().map_err(|e| RolloutError::invalid(format!("step {i}: {e}")))?,
                Step::SetCohort(c) if c.tenants.is_empty() => return Err(RolloutError::invalid(format!("step {i}: set_cohort names no tenant"))),
                _ => {}
            }
        }
        match (self.strategy, self.max_unavailable, self.wave_secs) {
            (Strategy::Rolling, m, w) => {
                if m == Some(0) {
                    return Err(RolloutError::invalid("max_unavailable is at least 1"));
                }
                if w.is_some_and(|w| w == 0 || w > MAX_PAUSE_SECS) {
                    return Err(RolloutError::invalid(format!("wave_secs is between 1 and {MAX_PAUSE_SECS}")));
                }
                self.max_unavailable.get_or_insert(1);
                self.wave_secs.get_or_insert(30);
            }
            (_, None, None) if self.region_order.is_empty() => {}
            _ => return Err(RolloutError::invalid("max_unavailable, wave_secs and region_order belong to rolling rollouts")),
        }
        if matches!(self.strategy, Strategy::Canary | Strategy::BlueGreen | Strategy::Rolling) && self.analysis.is_none() {
            self.analysis = Some(Analysis::default_background());
        }
        if let Some(a) = &self.analysis {
            a.check().map_err(|e| RolloutError::invalid(format!("analysis: {e}")))?;
        }
        let pins = self.include.len() + self.exclude.len() + self.steps.iter().map(|s| if let Step::SetCohort(c) = s { c.tenants.len() } else { 0 }).sum::<usize>();
        if pins > MAX_PINS {
            return Err(RolloutError::invalid(format!("a rollout names at most {MAX_PINS} tenants; this one names {pins}")));
        }
        if let Some(t) = self.include.iter().find(|t| self.exclude.contains(t)) {
            return Err(RolloutError::invalid(format!("tenant {t} is both included and excluded")));
        }
        match (self.strategy, self.post_promotion_secs) {
            (Strategy::BlueGreen, None) => self.post_promotion_secs = Some(60),
            (Strategy::BlueGreen, Some(s)) if s > MAX_PAUSE_SECS => {
                return Err(RolloutError::invalid(format!("post_promotion_secs is at most {MAX_PAUSE_SECS} (a week)")));
            }
            (Strategy::BlueGreen, _) => {}
            (_, Some(_)) => return Err(RolloutError::invalid("post_promotion_secs belongs to blue-green rollouts")),
            _ => {}
        }
        Ok(self)
    }
}

impl Strategy {
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::AllAtOnce => "all-at-once",
            Strategy::Canary => "canary",
            Strategy::BlueGreen => "blue-green",
            Strategy::Rolling => "rolling",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: serde_json::Value) -> Result<RolloutSpec, String> {
        let s: RolloutSpec = serde_json::from_value(json).map_err(|e| e.to_string())?;
        s.validate().map_err(|e| e.to_string())
    }

    #[test]
    fn steps_read_as_the_interface_writes_them() {
        let s = spec(serde_json::json!({"strategy": "canary", "steps": [{"set_weight": 0.1}, {"pause": {"seconds": 5}}, {"pause": {}}, {"set_weight": 20}, {"analysis": {"interval_secs": 5}}, {"set_cohort": {"tenants": ["acme"]}}]})).expect("valid");
        assert_eq!(s.steps[0], Step::SetWeight(Weight(10)));
        assert_eq!(s.steps[1], Step::Pause(Pause { seconds: Some(5) }));
        assert_eq!(s.steps[2], Step::Pause(Pause { seconds: None }));
        assert_eq!(s.steps[3], Step::SetWeight(Weight(2_000)));
        assert!(s.analysis.is_some(), "the default background analysis");
        assert_eq!(serde_json::to_value(&s.steps[0]).expect("json"), serde_json::json!({"set_weight": 0.1}));
        assert_eq!(serde_json::to_value(&s.steps[3]).expect("json"), serde_json::json!({"set_weight": 20}));
    }

    #[test]
    fn what_cannot_run_is_refused_saying_why() {
        for (bad, says) in [
            (serde_json::json!({"strategy": "canary", "steps": [{"set_weight": 120}]}), "from 0 to 100"),
            (serde_json::json!({"strategy": "canary", "steps": [{"set_weight": 0.001}]}), "two decimals"),
            (serde_json::json!({"strategy": "canary", "steps": [{"pause": {"seconds": 9999999}}]}), "at most"),
            (serde_json::json!({"strategy": "canary", "steps": [{"jump": 1}]}), "unknown variant"),
            (serde_json::json!({"strategy": "blue-green", "steps": [{"set_weight": 5}]}), "takes none"),
            (serde_json::json!({"strategy": "canary", "include": ["a"], "exclude": ["a"]}), "both included and excluded"),
            (serde_json::json!({"strategy": "canary", "steps": [{"set_cohort": {"tenants": []}}]}), "names no tenant"),
            (serde_json::json!({"strategy": "canary", "post_promotion_secs": 5}), "blue-green"),
            (serde_json::json!({"strategy": "rolling", "max_unavailable": 0}), "at least 1"),
            (serde_json::json!({"strategy": "canary", "wave_secs": 5}), "rolling"),
        ] {
            let e = spec(bad.clone()).expect_err("refused");
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn a_canary_without_steps_gets_the_default_ones_and_blue_green_a_window() {
        assert_eq!(spec(serde_json::json!({"strategy": "canary"})).expect("valid").steps, default_canary_steps());
        let bg = spec(serde_json::json!({"strategy": "blue-green", "include": ["qa"]})).expect("valid");
        assert_eq!((bg.post_promotion_secs, bg.analysis.is_some()), (Some(60), true));
        assert_eq!(spec(serde_json::json!({"strategy": "all-at-once"})).expect("valid").analysis, None);
    }
}
