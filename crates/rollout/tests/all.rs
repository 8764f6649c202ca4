//! The rollout machine driven by time and synthetic counters: steps, pauses, analysis
//! verdicts, the fast-trip guard, cohorts and every operation.

use runplane_rollout::analysis::Threshold;
use runplane_rollout::{Analysis, Counters, Mark, Phase, Rollout, RolloutSpec, Side, Step, Weight};

fn version(v: &str) -> runplane_rollout::Version {
    runplane_rollout::Version { capability: "orders".into(), version: v.into(), digest: format!("sha256:{v}") }
}

fn spec(json: serde_json::Value) -> RolloutSpec {
    serde_json::from_value::<RolloutSpec>(json).expect("spec").validate().expect("valid")
}

/// Cumulative counters the test moves forward: both versions, at a time.
#[derive(Default)]
struct Traffic {
    candidate: Counters,
    stable: Counters,
}

impl Traffic {
    /// `n` requests to each side, `bad` of the candidate's failing as `kind`.
    fn send(&mut self, n: u64, bad: u64, kind: &str) {
        self.stable.requests += n;
        self.candidate.requests += n;
        match kind {
            "error" => self.candidate.errors += bad,
            _ => self.candidate.traps += bad,
        }
        for _ in 0..n {
            self.candidate.latency.record(900);
            self.stable.latency.record(900);
        }
    }

    fn at(&self, ms: u64) -> Mark {
        Mark { at_ms: ms, candidate: self.candidate.clone(), stable: self.stable.clone(), external: Vec::new() }
    }
}

fn start(json: serde_json::Value, t: &Traffic) -> Rollout {
    Rollout::start("r1".into(), "orders".into(), version("1"), version("2"), spec(json), "salt".into(), 0, &t.at(0))
}

/// Ticks once a second from `from` to `to` (ms), sending `per_tick` healthy requests.
fn run(r: &mut Rollout, t: &mut Traffic, from: u64, to: u64, per_tick: u64) {
    let mut now = from;
    while now <= to {
        t.send(per_tick, 0, "error");
        r.tick(now, Ok(&t.at(now)));
        now += 1000;
    }
}

#[test]
fn a_healthy_canary_goes_through_every_step_and_honours_its_pauses() {
    let mut t = Traffic::default();
    let mut r = start(
        serde_json::json!({"strategy": "canary", "steps": [{"set_weight": 10}, {"pause": {"seconds": 5}}, {"set_weight": 50}, {"pause": {}}, {"analysis": {"interval_secs": 2, "min_samples": 5, "error_rate": {"max": 0.01}}}]}),
        &t,
    );
    assert_eq!((r.phase, r.weight, r.step), (Phase::Progressing, Weight(1_000), 1), "the first weight applies at once");
    run(&mut r, &mut t, 1000, 4000, 10);
    assert_eq!((r.weight, r.step), (Weight(1_000), 1), "the timed pause holds for 5 s");
    run(&mut r, &mut t, 5000, 6000, 10);
    assert_eq!((r.phase, r.weight, r.step, r.paused_by.as_deref()), (Phase::Paused, Weight(5_000), 3, Some("step")), "then 50 % and the indefinite pause");
    run(&mut r, &mut t, 7000, 60_000, 10);
    assert_eq!(r.phase, Phase::Paused, "an indefinite pause waits for an operator");
    r.resume(61_000, &t.at(61_000)).expect("resume");
    assert_eq!((r.phase, r.step), (Phase::Progressing, 4), "resume goes past the pause");
    run(&mut r, &mut t, 62_000, 64_000, 10);
    assert_eq!(r.phase, Phase::Promoted, "{:#?}", r.history);
    assert_eq!(r.choose("anyone", None), Side::Candidate);
    let actions: Vec<&str> = r.history.iter().map(|d| d.action.as_str()).collect();
    assert!(actions.contains(&"measurement") && actions.last() == Some(&"promoted"), "{actions:?}");
}

#[test]
fn too_little_traffic_is_inconclusive_and_never_passes_an_analysis_step() {
    let mut t = Traffic::default();
    let mut r = start(serde_json::json!({"strategy": "canary", "steps": [{"set_weight": 20}, {"analysis": {"interval_secs": 1, "min_samples": 50, "error_rate": {"max": 0.05}}}]}), &t);
    run(&mut r, &mut t, 1000, 120_000, 1);
    assert_eq!(r.phase, Phase::Progressing, "still waiting for enough samples");
    let verdicts: Vec<_> = r.history.iter().filter_map(|d| d.measurement.as_ref()).map(|m| m.verdict).collect();
    assert!(!verdicts.is_empty() && verdicts.iter().all(|v| *v == runplane_rollout::Verdict::Inconclusive), "{verdicts:?}");
    // With enough traffic the step passes.
    run(&mut r, &mut t, 121_000, 123_000, 100);
    assert_eq!(r.phase, Phase::Promoted);
}

#[test]
fn a_trapping_candidate_is_aborted_by_the_guard_within_a_tick() {
    let mut t = Traffic::default();
    let mut r = start(serde_json::json!({"strategy": "canary", "steps": [{"set_weight": 20}, {"pause": {}}]}), &t);
    run(&mut r, &mut t, 1000, 3000, 20);
    t.send(10, 10, "trap");
    r.tick(4000, Ok(&t.at(4000)));
    assert_eq!(r.phase, Phase::Aborted, "aborted on the first tick that sees the burst");
    assert!(r.abort_reason.as_deref().is_some_and(|w| w.contains("fast trip")), "{:?}", r.abort_reason);
    assert_eq!(r.choose("anyone", None), Side::Stable);
    assert_eq!(r.weight, Weight(0));
}

#[test]
fn a_candidate_failing_a_share_of_requests_fails_the_default_analysis() {
    let mut t = Traffic::default();
    let mut r = start(serde_json::json!({"strategy": "canary", "steps": [{"set_weight": 50}, {"pause": {}}]}), &t);
    // 20 % errors: below the guard's burst, over stable + 5 points.
    let mut now = 1000;
    while r.phase != Phase::Aborted && now < 60_000 {
        t.send(10, 2, "error");
        r.tick(now, Ok(&t.at(now)));
        now += 1000;
    }
    assert_eq!(r.phase, Phase::Aborted);
    assert!(now <= 11_000, "the first measurement (10 s) aborts: {now}");
    let m = r.history.iter().rev().find_map(|d| d.measurement.as_ref()).expect("a measurement");
    assert_eq!(m.verdict, runplane_rollout::Verdict::Fail);
    assert!(m.candidate.requests >= 20 && m.checks.iter().any(|c| c.metric == "error_rate"), "{m:?}");
}

#[test]
fn measurements_that_cannot_be_taken_abort_after_the_consecutive_error_limit() {
    let t = Traffic::default();
    let mut r = start(serde_json::json!({"strategy": "canary", "steps": [{"set_weight": 50}, {"pause": {}}]}), &t);
    for (i, now) in [10_000, 20_000].into_iter().enumerate() {
        r.tick(now, Err("the control store is unreachable".into()));
        assert_eq!(r.phase, Phase::Paused, "error {i} is not yet the limit");
    }
    r.tick(30_000, Err("the control store is unreachable".into()));
    assert_eq!(r.phase, Phase::Aborted);
}

#[test]
fn cohorts_are_sticky_shares_and_raising_the_weight_only_adds_members() {
    let t = Traffic::default();
    let mut r = start(serde_json::json!({"strategy": "canary", "steps": [{"set_weight": 20}, {"pause": {}}, {"set_weight": 50}, {"pause": {}}]}), &t);
    let tenants: Vec<String> = (0..2_000).map(|i| format!("tenant-{i}")).collect();
    let at_20: Vec<bool> = tenants.iter().map(|x| r.choose(x, None) == Side::Candidate).collect();
    let share = at_20.iter().filter(|c| **c).count() as f64 / 2_000.0;
    assert!((0.18..=0.22).contains(&share), "{share}");
    r.promote(1000, &t.at(1000)).expect("promote");
    assert_eq!(r.weight, Weight(5_000));
    for (x, was) in tenants.iter().zip(&at_20) {
        if *was {
            assert_eq!(r.choose(x, None), Side::Candidate, "{x} moved back to stable");
        }
    }
    let share = tenants.iter().filter(|x| r.choose(x, None) == Side::Candidate).count() as f64 / 2_000.0;
    assert!((0.48..=0.52).contains(&share), "{share}");
}

#[test]
fn with_session_stickiness_each_session_keeps_its_version() {
    let t = Traffic::default();
    let mut r = start(serde_json::json!({"strategy": "canary", "stickiness": "session", "steps": [{"set_weight": 30}, {"pause": {}}, {"set_weight": 60}, {"pause": {}}]}), &t);
    let sessions: Vec<String> = (0..500).map(|i| format!("s-{i}")).collect();
    let first: Vec<Side> = sessions.iter().map(|s| r.choose("acme", Some(s))).collect();
    assert!(first.contains(&Side::Candidate) && first.contains(&Side::Stable), "one tenant's sessions split");
    for _ in 0..3 {
        assert_eq!(sessions.iter().map(|s| r.choose("acme", Some(s))).collect::<Vec<_>>(), first, "the same answer every time");
    }
    r.promote(1000, &t.at(1000)).expect("promote");
    for (s, was) in sessions.iter().zip(&first) {
        if *was == Side::Candidate {
            assert_eq!(r.choose("acme", Some(s)), Side::Candidate);
        }
    }
}

#[test]
fn pins_come_before_the_hash() {
    let t = Traffic::default();
    let mut r = start(serde_json::json!({"strategy": "canary", "include": ["qa"], "exclude": ["bank"], "steps": [{"set_weight": 100}, {"pause": {}}, {"set_cohort": {"tenants": ["late"]}}, {"pause": {}}]}), &t);
    assert_eq!((r.choose("qa", None), r.choose("bank", None), r.choose("other", None)), (Side::Candidate, Side::Stable, Side::Candidate));
    r.abort(1000, "test").expect("abort");
    assert_eq!(r.choose("qa", None), Side::Stable, "an abort sends every cohort back");
    r.retry(2000, &t.at(2000)).expect("retry");
    r.promote(3000, &t.at(3000)).expect("past the pause");
    assert!(r.include.contains("late"), "set_cohort adds a pin");
}

#[test]
fn operations_are_guarded_by_phase_and_revision() {
    let t = Traffic::default();
    let mut r = start(serde_json::json!({"strategy": "canary", "steps": [{"set_weight": 10}, {"pause": {"seconds": 60}}]}), &t);
    let rev = r.revision;
    assert!(r.check_revision(Some(rev)).is_ok());
    assert!(r.check_revision(Some(rev + 1)).is_err());
    r.pause(1000).expect("pause");
    assert!(r.pause(1000).is_err(), "already paused");
    r.resume(2000, &t.at(2000)).expect("resume");
    assert!(r.retry(2000, &t.at(2000)).is_err(), "only an aborted rollout is retried");
    r.abort(3000, "bad idea").expect("abort");
    assert!(r.promote(4000, &t.at(4000)).is_err(), "an aborted rollout is not promoted until retried");
    r.retry(5000, &t.at(5000)).expect("retry");
    assert_eq!((r.phase, r.weight, r.step), (Phase::Progressing, Weight(1_000), 1), "from step 0 again");
    r.promote_fully(6000).expect("promote fully");
    assert_eq!(r.phase, Phase::Promoted);
    assert!(r.abort(7000, "too late").is_err(), "a promoted rollout is final");
    let mut other = start(serde_json::json!({"strategy": "canary"}), &t);
    other.supersede(8000, "r2");
    assert_eq!((other.phase, other.choose("x", None)), (Phase::Superseded, Side::Stable));
    assert!(other.resume(9000, &t.at(9000)).is_err());
    assert!(r.history.windows(2).all(|w| w[1].revision == w[0].revision + 1), "every decision is a revision");
}

#[test]
fn blue_green_previews_switches_and_switches_back_within_its_window() {
    let mut t = Traffic::default();
    let bg = serde_json::json!({"strategy": "blue-green", "include": ["qa"], "post_promotion_secs": 30});
    let mut r = start(bg.clone(), &t);
    assert_eq!((r.phase, r.paused_by.as_deref()), (Phase::Paused, Some("preview")));
    assert_eq!((r.choose("qa", None), r.choose("acme", None)), (Side::Candidate, Side::Stable), "only the preview sees it");
    assert!(r.resume(1000, &t.at(1000)).is_err(), "a preview ends with promote");
    r.promote(2000, &t.at(2000)).expect("switch");
    assert_eq!((r.choose("acme", None), r.phase), (Side::Candidate, Phase::Progressing), "everyone at once");
    run(&mut r, &mut t, 3000, 33_000, 10);
    assert_eq!(r.phase, Phase::Promoted, "the window passed");

    // A failure inside the window switches back.
    let mut t = Traffic::default();
    let mut r = start(bg, &t);
    r.promote(1000, &t.at(1000)).expect("switch");
    let mut now = 2000;
    while r.phase != Phase::Aborted && now < 30_000 {
        t.send(10, 2, "error");
        r.tick(now, Ok(&t.at(now)));
        now += 1000;
    }
    assert_eq!((r.phase, r.choose("acme", None)), (Phase::Aborted, Side::Stable), "switched back");
}

#[test]
fn all_at_once_is_promoted_at_the_start() {
    let t = Traffic::default();
    let r = start(serde_json::json!({"strategy": "all-at-once"}), &t);
    assert_eq!((r.phase, r.choose("x", None)), (Phase::Promoted, Side::Candidate));
}

#[test]
fn a_custom_analysis_relative_to_stable_is_explained() {
    let a = Analysis { p99_latency_ms: Some(Threshold { max: None, relative: Some(1.5), slack: 0.0 }), ..Analysis::default_background() };
    let mut t = Traffic::default();
    let mut r = Rollout::start(
        "r".into(),
        "orders".into(),
        version("1"),
        version("2"),
        RolloutSpec { strategy: runplane_rollout::Strategy::Canary, steps: vec![Step::SetWeight(Weight(5_000))], analysis: Some(a), stickiness: Default::default(), include: vec![], exclude: vec![], post_promotion_secs: None, max_unavailable: None, wave_secs: None, region_order: vec![] }
            .validate()
            .expect("valid"),
        "s".into(),
        0,
        &t.at(0),
    );
    // It promotes at once (one weight step), so measure a second rollout paused instead.
    assert_eq!(r.phase, Phase::Promoted);
    r.phase = Phase::Paused;
    r.paused_by = Some("operator".into());
    r.background = Some(runplane_rollout::Run { since: t.at(0), ..Default::default() });
    r.guard = Some(t.at(0));
    for i in 0..40 {
        t.stable.requests += 1;
        t.stable.latency.record(1_000);
        t.candidate.requests += 1;
        t.candidate.latency.record(if i < 30 { 1_000 } else { 40_000 });
    }
    r.tick(10_000, Ok(&t.at(10_000)));
    assert_eq!(r.phase, Phase::Aborted);
    let m = r.history.iter().rev().find_map(|d| d.measurement.clone()).expect("measurement");
    let check = m.checks.iter().find(|c| c.metric == "p99_latency_ms").expect("latency check");
    assert_eq!((check.value, check.limit), (Some(50.0), Some(1.5)), "{m:?}");
}

#[test]
fn a_group_member_goes_back_to_stable_when_another_is_aborted() {
    let t = Traffic::default();
    let mut r = start(serde_json::json!({"strategy": "canary", "steps": [{"set_weight": 50}, {"pause": {}}]}), &t);
    r.group = Some("g1".into());
    assert!(r.abort_with_group(1000, "payments", "fast trip"));
    assert_eq!((r.phase, r.weight), (Phase::Aborted, Weight(0)));
    assert!(r.abort_reason.as_deref().is_some_and(|w| w.contains("release group g1") && w.contains("payments")), "{:?}", r.abort_reason);
    assert!(!r.abort_with_group(2000, "payments", "again"), "only once");
}

#[test]
fn a_rolling_rollout_activates_its_waves_in_region_order_and_reverts_every_node_on_failure() {
    let mut t = Traffic::default();
    let mut r = start(serde_json::json!({"strategy": "rolling", "wave_secs": 5, "max_unavailable": 1, "region_order": ["eu-west"]}), &t);
    r.plan_waves(vec![("us-1".into(), "us-east".into()), ("eu-2".into(), "eu-west".into()), ("eu-1".into(), "eu-west".into())], &["eu-west".into()], 1);
    assert_eq!(r.waves, vec![vec!["eu-1".to_string()], vec!["eu-2".to_string()], vec!["us-1".to_string()]], "eu-west first, by id");
    assert_eq!(r.choose_on("eu-1", "acme", None), Side::Stable, "nothing before the first tick");
    run(&mut r, &mut t, 1000, 1000, 10);
    assert_eq!((r.wave, r.choose_on("eu-1", "acme", None), r.choose_on("eu-2", "acme", None)), (1, Side::Candidate, Side::Stable), "one node at a time");
    run(&mut r, &mut t, 2000, 6000, 10);
    assert_eq!(r.wave, 2, "the next wave after wave_secs");
    r.promote(6500, &t.at(6500)).expect("next wave now");
    assert_eq!((r.wave, r.choose_on("us-1", "x", None)), (3, Side::Candidate));
    // A failure in this wave sends every node back.
    t.send(10, 10, "trap");
    r.tick(7000, Ok(&t.at(7000)));
    assert_eq!(r.phase, Phase::Aborted);
    for n in ["eu-1", "eu-2", "us-1"] {
        assert_eq!(r.choose_on(n, "acme", None), Side::Stable, "{n} reverted");
    }
    r.retry(8000, &t.at(8000)).expect("retry");
    assert_eq!(r.wave, 0, "a retry starts from the first wave");
    run(&mut r, &mut t, 9000, 30_000, 10);
    assert_eq!(r.phase, Phase::Promoted, "{:?}", r.history.last());
}

/// Ticks from `from` to `to` (ms) as the node does: asks [`Rollout::queries_due`],
/// answers each with `answer`, then ticks with the answers in the mark.
fn run_with_queries(r: &mut Rollout, t: &mut Traffic, from: u64, to: u64, answer: &dyn Fn(&str) -> runplane_rollout::QueryValue) -> Vec<String> {
    let mut asked = Vec::new();
    let mut now = from;
    while now <= to && r.is_active() {
        t.send(10, 0, "error");
        let mut mark = t.at(now);
        for q in r.queries_due(now) {
            mark.external.push(answer(&q));
            asked.push(q);
        }
        r.tick(now, Ok(&mark));
        now += 1000;
    }
    asked
}

fn value(query: &str, v: Option<f64>) -> runplane_rollout::QueryValue {
    runplane_rollout::QueryValue { query: query.into(), value: v, error: None }
}

const ERROR_SHARE: &str = r#"sum(rate(runplane_invocations_total{capability="{{capability}}",version="{{candidate_version}}",outcome="error_response"}[{{window}}]))"#;

fn prometheus_canary() -> serde_json::Value {
    serde_json::json!({"strategy": "canary",
        "analysis": {"error_rate": {"max": 1.0}},
        "steps": [{"set_weight": 20}, {"analysis": {"interval_secs": 5, "min_samples": 5, "prometheus": [{"name": "error_share", "query": ERROR_SHARE, "max": 0.05}]}}]})
}

#[test]
fn prometheus_queries_are_asked_when_due_with_their_placeholders_filled_in() {
    let mut t = Traffic::default();
    let mut r = start(prometheus_canary(), &t);
    assert!(r.queries_due(0).is_empty(), "the analysis step's window has just begun");
    let asked = run_with_queries(&mut r, &mut t, 1000, 12_000, &|q| value(q, Some(0.01)));
    assert_eq!(r.phase, Phase::Promoted, "{:#?}", r.history);
    let sent = r#"sum(rate(runplane_invocations_total{capability="orders",version="2",outcome="error_response"}[5s]))"#;
    assert_eq!(asked, vec![sent.to_owned()], "asked once, at the end of the 5 s window");
    let m = r.history.iter().find_map(|d| d.measurement.as_ref().filter(|m| m.checks.iter().any(|c| c.metric == "prometheus:error_share"))).expect("a measurement with the query");
    let check = m.checks.iter().find(|c| c.metric == "prometheus:error_share").expect("check");
    assert_eq!((check.value, check.limit, m.verdict), (Some(0.01), Some(0.05), runplane_rollout::Verdict::Pass));
}

#[test]
fn a_prometheus_value_over_its_limit_aborts_and_an_empty_result_is_inconclusive() {
    let mut t = Traffic::default();
    let mut r = start(prometheus_canary(), &t);
    run_with_queries(&mut r, &mut t, 1000, 30_000, &|q| value(q, None));
    assert_eq!(r.phase, Phase::Progressing, "an empty result never passes: {:#?}", r.history);
    let last = r.history.iter().rev().find_map(|d| d.measurement.as_ref()).expect("measured");
    assert_eq!(last.verdict, runplane_rollout::Verdict::Inconclusive);
    assert!(last.reason.contains("prometheus:error_share"), "{}", last.reason);

    let mut r = start(prometheus_canary(), &t);
    run_with_queries(&mut r, &mut t, 31_000, 40_000, &|q| value(q, Some(0.25)));
    assert_eq!(r.phase, Phase::Aborted, "{:#?}", r.history);
    let failed = r.history.iter().rev().find_map(|d| d.measurement.as_ref()).expect("measured");
    assert!(failed.reason.contains("prometheus:error_share"), "{}", failed.reason);
}

#[test]
fn an_unanswered_prometheus_query_is_an_error_measurement_that_aborts_at_the_limit() {
    let mut t = Traffic::default();
    let mut spec = prometheus_canary();
    spec["steps"][1]["analysis"]["consecutive_error_limit"] = 2.into();
    let mut r = start(spec, &t);
    let down = |q: &str| runplane_rollout::QueryValue { query: q.into(), value: None, error: Some("connection refused".into()) };
    run_with_queries(&mut r, &mut t, 1000, 30_000, &down);
    assert_eq!(r.phase, Phase::Aborted, "{:#?}", r.history);
    let errors: Vec<&str> = r.history.iter().filter(|d| d.message.contains("error (")).map(|d| d.message.as_str()).collect();
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(errors[0].contains("prometheus query error_share: connection refused"), "{errors:?}");
    assert!(r.abort_reason.as_deref().is_some_and(|w| w.contains("consecutive_error_limit 2")), "{:?}", r.abort_reason);
}

#[test]
fn prometheus_queries_that_cannot_run_are_refused() {
    let with = |q: serde_json::Value| serde_json::from_value::<RolloutSpec>(serde_json::json!({"strategy": "canary", "steps": [{"analysis": {"prometheus": [q]}}]})).expect("spec").validate();
    for (q, says) in [
        (serde_json::json!({"name": "Bad-Name", "query": "up", "max": 1}), "a-z, 0-9"),
        (serde_json::json!({"name": "x", "query": "up{v=\"{{version}}\"}", "max": 1}), "unknown placeholder"),
        (serde_json::json!({"name": "x", "query": "up"}), "max, min or both"),
        (serde_json::json!({"name": "x", "query": "up", "min": 2, "max": 1}), "no value could pass"),
        (serde_json::json!({"name": "x", "query": " ", "max": 1}), "1-4096"),
    ] {
        let e = with(q.clone()).expect_err("refused");
        assert!(e.to_string().contains(says), "{q}: {e}");
    }
    let twice = serde_json::json!({"strategy": "canary", "steps": [{"analysis": {"prometheus": [{"name": "x", "query": "up", "max": 1}, {"name": "x", "query": "up", "min": 0}]}}]});
    assert!(serde_json::from_value::<RolloutSpec>(twice).expect("spec").validate().is_err());
    // Only queries: no default thresholds are added beside them.
    let only = with(serde_json::json!({"name": "up", "query": "up", "min": 1})).expect("valid");
    let Step::Analysis(a) = &only.steps[0] else { panic!("an analysis step") };
    assert!(a.error_rate.is_none() && a.trap_rate.is_none(), "{a:?}");
}
