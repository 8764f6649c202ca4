//! Schedules: when a cron pattern in an IANA time zone is due, what happens to ticks
//! missed while nobody was watching, and what a tick does while an earlier run of the
//! same schedule is still going.
//!
//! - **Ticks** are instants: the pattern (five fields, minute to day of week) matched
//!   against the wall clock of `time_zone`, searched in real time (croner's search,
//!   the OCPS rules). Across a **DST gap** a fixed-time pattern (`30 2 * * *`) runs at
//!   the first minute after the gap on that day (03:00 where 02:00 jumps to 03:00);
//!   an interval pattern (`*/15 * * * *`) skips the times inside it. Across a **DST
//!   overlap** a fixed-time pattern runs once, at the first of the two, and an interval
//!   pattern runs at each match in both passes. Times are Unix milliseconds.
//! - **Catch-up** ([`catch_up`]): a tick evaluated more than [`LATE_AFTER_MS`] after its
//!   nominal time is late. Late ticks older than `catch_up.window_secs` are `missed`;
//!   the rest are run by `catch_up.mode`: `none` (each missed), `latest` (the newest
//!   runs, the others missed) or `all` (each runs, in nominal order). Every missed tick
//!   is reported with why, so it can be recorded.
//! - **Overlap** ([`admit`]): `skip` (default), `buffer_one`, `buffer_all`,
//!   `cancel_other`, `allow_all`.
//! - A tick's idempotency key is `<schedule>@<nominal time UTC>` ([`tick_key`]).

use std::str::FromStr;

use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use jiff::Timestamp;
use jiff::tz::TimeZone;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A tick evaluated more than this after its nominal time is late (a controller looks
/// every second; this leaves room for a slow store without calling every tick late).
pub const LATE_AFTER_MS: i64 = 5_000;
/// Most ticks one evaluation considers; older ones past this are missed.
pub const MAX_CATCH_UP: usize = 1_000;

fn utc() -> String {
    "UTC".into()
}
fn window_default() -> u64 {
    3_600
}

/// What a schedule says: `{"cron": "0 3 * * *", "time_zone": "Europe/Berlin", ...}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScheduleSpec {
    /// Five fields: minute, hour, day of month, month, day of week.
    pub cron: String,
    /// An IANA time zone (default `UTC`); the pattern is wall-clock time there.
    #[serde(default = "utc")]
    pub time_zone: String,
    #[serde(default)]
    pub overlap: Overlap,
    #[serde(default)]
    pub catch_up: CatchUp,
}

/// What a tick does while runs of the same schedule are still going.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Overlap {
    /// The tick is recorded as skipped.
    #[default]
    Skip,
    /// Held until the running one ends; at most one held (further ticks skipped).
    BufferOne,
    /// Every tick held, run one after another in order.
    BufferAll,
    /// The running ones are cancelled and the tick starts.
    CancelOther,
    /// The tick starts beside them.
    AllowAll,
}

/// Ticks that were missed while the schedule was not evaluated (the node was down).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CatchUp {
    #[serde(default)]
    pub mode: CatchUpMode,
    /// Late ticks older than this are missed whatever the mode (default 3600).
    #[serde(default = "window_default")]
    pub window_secs: u64,
}

impl Default for CatchUp {
    fn default() -> Self {
        CatchUp { mode: CatchUpMode::default(), window_secs: window_default() }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CatchUpMode {
    /// No late tick runs.
    None,
    /// The newest late tick runs; the older ones are missed.
    #[default]
    Latest,
    /// Every late tick in the window runs, in order.
    All,
}

/// A parsed schedule.
#[derive(Debug, Clone)]
pub struct Schedule {
    pub spec: ScheduleSpec,
    cron: Cron,
    zone: TimeZone,
}

impl Schedule {
    /// Parses and checks `spec`; why not, if it cannot run.
    pub fn new(spec: ScheduleSpec) -> Result<Schedule, String> {
        let fields = spec.cron.split_whitespace().count();
        if fields != 5 {
            return Err(format!(
                "schedule.cron {:?} has {fields} fields; give five: minute hour day-of-month month day-of-week (\"0 3 * * *\": 03:00 every day)",
                spec.cron
            ));
        }
        let cron = CronParser::builder()
            .seconds(Seconds::Disallowed)
            .year(Year::Disallowed)
            .build()
            .parse(&spec.cron)
            .map_err(|e| format!("schedule.cron {:?} is not a cron pattern: {e}", spec.cron))?;
        let zone = TimeZone::get(&spec.time_zone).map_err(|_| format!("schedule.time_zone {:?} is not an IANA time zone (like \"Europe/Berlin\" or \"UTC\")", spec.time_zone))?;
        if spec.catch_up.window_secs > 366 * 86_400 {
            return Err("schedule.catch_up.window_secs is at most 31622400 (a year)".into());
        }
        let s = Schedule { spec, cron, zone };
        if s.next_after(0).is_none() {
            return Err(format!("schedule.cron {:?} never matches", s.spec.cron));
        }
        Ok(s)
    }

    /// The first tick after `after_ms`.
    pub fn next_after(&self, after_ms: i64) -> Option<i64> {
        let at = Timestamp::from_millisecond(after_ms).ok()?.to_zoned(self.zone.clone());
        let next = self.cron.find_next_occurrence(&at, false).ok()?;
        Some(next.timestamp().as_millisecond())
    }

    /// The ticks after `after_ms` up to and including `until_ms`, at most `limit`.
    pub fn ticks(&self, after_ms: i64, until_ms: i64, limit: usize) -> Vec<i64> {
        let mut out = Vec::new();
        let mut at = after_ms;
        while out.len() < limit {
            match self.next_after(at) {
                Some(t) if t <= until_ms => {
                    out.push(t);
                    at = t;
                }
                _ => break,
            }
        }
        out
    }
}

impl FromStr for Schedule {
    type Err = String;

    /// A pattern alone, in UTC, with the default policies.
    fn from_str(cron: &str) -> Result<Self, String> {
        Schedule::new(ScheduleSpec { cron: cron.into(), time_zone: utc(), overlap: Overlap::default(), catch_up: CatchUp::default() })
    }
}

/// What becomes of one tick.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TickFate {
    Run,
    /// Not run, and why (recorded as a `missed` tick).
    Missed(String),
}

/// Decides the fate of each due tick (in nominal order) evaluated at `now_ms`.
pub fn catch_up(policy: &CatchUp, due: &[i64], now_ms: i64) -> Vec<(i64, TickFate)> {
    let late = |t: i64| now_ms - t > LATE_AFTER_MS;
    let newest_late_in_window = due.iter().copied().filter(|t| late(*t) && now_ms - *t <= policy.window_secs as i64 * 1000).max();
    due.iter()
        .map(|&t| {
            let fate = if !late(t) {
                TickFate::Run
            } else if now_ms - t > policy.window_secs as i64 * 1000 {
                TickFate::Missed(format!("late by {} s, outside the catch-up window of {} s", (now_ms - t) / 1000, policy.window_secs))
            } else {
                match policy.mode {
                    CatchUpMode::All => TickFate::Run,
                    CatchUpMode::None => TickFate::Missed(format!("late by {} s and catch_up.mode is none", (now_ms - t) / 1000)),
                    CatchUpMode::Latest if Some(t) == newest_late_in_window => TickFate::Run,
                    CatchUpMode::Latest => TickFate::Missed("a later missed tick runs instead (catch_up.mode latest)".into()),
                }
            };
            (t, fate)
        })
        .collect()
}

/// What a tick that should run does, given the schedule's runs still going (`active`)
/// and ticks already held for later (`held`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    Start,
    /// Held until the running ones end.
    Hold,
    /// Recorded as skipped, and why.
    Skip(String),
    /// The running ones are cancelled first.
    CancelOthersThenStart,
}

pub fn admit(overlap: Overlap, active: usize, held: usize) -> Admission {
    if active == 0 && held == 0 {
        return Admission::Start;
    }
    match overlap {
        Overlap::AllowAll => Admission::Start,
        Overlap::CancelOther => Admission::CancelOthersThenStart,
        Overlap::BufferAll => Admission::Hold,
        Overlap::BufferOne if held == 0 => Admission::Hold,
        Overlap::BufferOne => Admission::Skip("a run is going and one tick is already held (overlap buffer_one)".into()),
        Overlap::Skip => Admission::Skip(format!("{active} run(s) of this schedule still going (overlap skip)")),
    }
}

/// A tick's idempotency key: `<schedule>@<nominal time, RFC 3339 UTC>`.
pub fn tick_key(schedule_id: &str, nominal_ms: i64) -> String {
    let at = Timestamp::from_millisecond(nominal_ms).map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()).unwrap_or_else(|_| nominal_ms.to_string());
    format!("{schedule_id}@{at}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(s: &str) -> i64 {
        s.parse::<Timestamp>().expect("a timestamp").as_millisecond()
    }

    fn zoned(spec: &str, zone: &str) -> Schedule {
        Schedule::new(ScheduleSpec { cron: spec.into(), time_zone: zone.into(), overlap: Overlap::Skip, catch_up: CatchUp::default() }).expect("valid")
    }

    fn utc_times(s: &Schedule, from: &str, to: &str) -> Vec<String> {
        s.ticks(ms(from), ms(to), 100).into_iter().map(|t| Timestamp::from_millisecond(t).expect("ts").to_string()).collect()
    }

    #[test]
    fn a_year_of_a_daily_schedule_in_a_zone_with_dst_has_one_tick_a_day() {
        let s = zoned("30 2 * * *", "America/New_York");
        let ticks = s.ticks(ms("2026-01-01T00:00:00Z"), ms("2027-01-01T00:00:00Z"), 1000);
        assert_eq!(ticks.len(), 365, "one a day, the spring-forward day included");
        assert!(ticks.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn spring_forward_runs_a_fixed_time_after_the_gap_and_skips_interval_times_inside_it() {
        // 2026-03-08, New York: 02:00 EST jumps to 03:00 EDT (07:00 UTC).
        let fixed = zoned("30 2 * * *", "America/New_York");
        assert_eq!(utc_times(&fixed, "2026-03-07T12:00:00Z", "2026-03-09T12:00:00Z"), vec!["2026-03-08T07:00:00Z", "2026-03-09T06:30:00Z"], "03:00 EDT on the day of the gap, 02:30 EDT the next");
        let every_half_hour = zoned("*/30 * * * *", "America/New_York");
        assert_eq!(
            utc_times(&every_half_hour, "2026-03-08T06:00:00Z", "2026-03-08T07:40:00Z"),
            vec!["2026-03-08T06:30:00Z", "2026-03-08T07:00:00Z", "2026-03-08T07:30:00Z"],
            "01:30 EST, then 03:00 and 03:30 EDT: 02:00 and 02:30 do not exist"
        );
    }

    #[test]
    fn fall_back_runs_a_fixed_time_once_and_interval_times_in_both_passes() {
        // 2026-11-01, New York: 02:00 EDT falls back to 01:00 EST (06:00 UTC).
        let fixed = zoned("30 1 * * *", "America/New_York");
        assert_eq!(utc_times(&fixed, "2026-11-01T00:00:00Z", "2026-11-01T12:00:00Z"), vec!["2026-11-01T05:30:00Z"], "once, at 01:30 EDT");
        let every_half_hour = zoned("*/30 1 * * *", "America/New_York");
        assert_eq!(
            utc_times(&every_half_hour, "2026-11-01T00:00:00Z", "2026-11-01T12:00:00Z"),
            vec!["2026-11-01T05:00:00Z", "2026-11-01T05:30:00Z", "2026-11-01T06:00:00Z", "2026-11-01T06:30:00Z"],
            "01:00 and 01:30 in both passes"
        );
    }

    #[test]
    fn catch_up_runs_all_latest_or_none_and_misses_what_is_outside_the_window() {
        let s: Schedule = "* * * * *".parse().expect("valid");
        // Down for five ticks; evaluated 30 s after the fifth.
        let due = s.ticks(ms("2026-05-01T10:00:30Z"), ms("2026-05-01T10:05:30Z"), 100);
        assert_eq!(due.len(), 5);
        let now = ms("2026-05-01T10:05:30Z");
        let runs = |p: &CatchUp| catch_up(p, &due, now).into_iter().filter(|(_, f)| *f == TickFate::Run).map(|(t, _)| t).collect::<Vec<_>>();
        assert_eq!(runs(&CatchUp { mode: CatchUpMode::All, window_secs: 3600 }), due, "every one, in order");
        assert_eq!(runs(&CatchUp { mode: CatchUpMode::Latest, window_secs: 3600 }), vec![due[4]], "the newest only");
        assert!(runs(&CatchUp { mode: CatchUpMode::None, window_secs: 3600 }).is_empty());
        let outside = catch_up(&CatchUp { mode: CatchUpMode::All, window_secs: 10 }, &due, now);
        assert!(outside.iter().all(|(_, f)| matches!(f, TickFate::Missed(why) if why.contains("outside the catch-up window"))), "{outside:?}");
        // On time is never late.
        assert_eq!(catch_up(&CatchUp { mode: CatchUpMode::None, window_secs: 0 }, &[now - 1000], now), vec![(now - 1000, TickFate::Run)]);
    }

    #[test]
    fn each_overlap_policy_admits_as_documented() {
        assert_eq!(admit(Overlap::Skip, 0, 0), Admission::Start);
        assert!(matches!(admit(Overlap::Skip, 1, 0), Admission::Skip(_)));
        assert_eq!(admit(Overlap::BufferOne, 1, 0), Admission::Hold);
        assert!(matches!(admit(Overlap::BufferOne, 1, 1), Admission::Skip(_)));
        assert_eq!(admit(Overlap::BufferAll, 1, 5), Admission::Hold);
        assert_eq!(admit(Overlap::CancelOther, 2, 0), Admission::CancelOthersThenStart);
        assert_eq!(admit(Overlap::AllowAll, 3, 0), Admission::Start);
    }

    #[test]
    fn schedules_that_cannot_run_are_refused_saying_why() {
        let bad = |cron: &str, zone: &str| Schedule::new(ScheduleSpec { cron: cron.into(), time_zone: zone.into(), overlap: Overlap::Skip, catch_up: CatchUp::default() }).expect_err("refused");
        assert!(bad("0 0 3 * * *", "UTC").contains("five"));
        assert!(bad("61 * * * *", "UTC").contains("not a cron pattern"));
        assert!(bad("0 3 * * *", "Mars/Olympus").contains("IANA"));
        assert!(bad("0 0 31 2 *", "UTC").contains("never matches"));
        assert_eq!(tick_key("nightly", ms("2026-05-01T03:00:00Z")), "nightly@2026-05-01T03:00:00Z");
    }
}
