//! Feature flags (spec §7.3) in the structure of seed S0-XIII-A, evaluated in the
//! runtime, never inside capabilities.
//!
//! Percentage rollouts hash `"<feature_id>:<subject>"` with murmur3 (x86, 32-bit, seed
//! 0) into a bucket 1-100, as Unleash's `normalizedHash` does: a subject is in when its
//! bucket ≤ the percentage, so raising the percentage never removes anyone already in.

use std::collections::{BTreeMap, BTreeSet};

use runplane_tenancy::Tier;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::PolicyError;

/// The seed of variant selection: Unleash's, so a flag's variants and its rollout
/// buckets come from independent hashes of the same key.
pub const VARIANT_SEED: u32 = 86_028_157;

/// One flag, instance-wide or for one tenant (the S0-XIII-A structure plus a rollout
/// percentage and variants).
///
/// ```
/// use runplane_policy::flags::FeatureFlag;
/// let f: FeatureFlag = serde_json::from_str(
///     r#"{"feature_id": "checkout-v2", "enabled": true, "instance_id": "i-1", "rollout_percent": 25}"#,
/// ).unwrap();
/// f.validate().unwrap();
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FeatureFlag {
    /// 1-128 characters of a-z, 0-9, `.`, `_` and `-`.
    pub feature_id: String,
    /// The switch; off wins over everything else.
    pub enabled: bool,
    /// The lowest tier it is on for (`free` < `pro` < `enterprise`; `custom` ranks as
    /// `enterprise`); absent = every tier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entitlement_tier: Option<String>,
    /// The instance the flag belongs to.
    pub instance_id: String,
    /// RFC 3339 UTC (`2026-11-23T10:00:00Z`); before it the flag is off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activation_date: Option<String>,
    /// 0-100: the share of subjects it is on for; absent = everyone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout_percent: Option<u32>,
    /// Variants an enabled evaluation picks from by weight; empty = no variant.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub variants: Vec<Variant>,
}

/// A named variant of a flag and its relative weight.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Variant {
    /// 1-64 characters, unique within the flag.
    pub name: String,
    /// Relative weight; a subject lands on this variant with probability weight / total.
    pub weight: u32,
}

/// Why an evaluation came out as it did, in the order the checks run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// No flag with that id applies (undefined flags are off).
    Unknown,
    /// The flag is switched off.
    Disabled,
    /// The activation date has not come (or cannot be read: a flag fails closed).
    NotYetActive,
    /// The tenant's tier is below the flag's entitlement tier.
    TierTooLow,
    /// The subject's rollout bucket is above the percentage.
    OutsideRollout,
    /// Every check passed.
    Enabled,
}

impl Reason {
    /// A sentence for messages (the node puts it in the 403 of a flag-gated route).
    /// The serialized form is the snake_case variant name.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Unknown => "the flag is not defined",
            Reason::Disabled => "the flag is disabled",
            Reason::NotYetActive => "the flag's activation date has not come",
            Reason::TierTooLow => "the tenant's tier is below the flag's",
            Reason::OutsideRollout => "the tenant is outside the flag's rollout percentage",
            Reason::Enabled => "enabled",
        }
    }
}

/// The outcome of evaluating a flag for one subject.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Evaluation {
    /// Whether the feature is on.
    pub enabled: bool,
    /// The variant picked, when on and the flag has variants.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    /// Why.
    pub reason: Reason,
}

impl Evaluation {
    fn off(reason: Reason) -> Evaluation {
        Evaluation { enabled: false, variant: None, reason }
    }
}

/// Who a flag is evaluated for, and when.
#[derive(Debug, Clone, Copy)]
pub struct FlagContext<'a> {
    /// The tenant, which selects its own flags over the instance's.
    pub tenant: &'a str,
    /// The tenant's tier, for `entitlement_tier`.
    pub tier: Tier,
    /// The rollout subject (the tenant id, unless a finer subject such as a user is
    /// chosen).
    pub subject: &'a str,
    /// Now, as seconds since the Unix epoch (injected: this crate reads no clock).
    pub now_unix_secs: u64,
}

/// Checks a feature id: 1-128 characters of a-z, 0-9, `.`, `_` and `-`.
pub fn validate_feature_id(id: &str) -> Result<(), PolicyError> {
    if id.is_empty() || id.len() > 128 || !id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b)) {
        return Err(PolicyError::Invalid(format!("feature id {id:?} is not valid; use 1-128 characters of a-z, 0-9, '.', '_' and '-'")));
    }
    Ok(())
}

/// Entitlement order: custom installations get at least what enterprise gets.
fn tier_rank(t: Tier) -> u8 {
    match t {
        Tier::Free => 0,
        Tier::Pro => 1,
        Tier::Enterprise | Tier::Custom => 2,
    }
}

impl FeatureFlag {
    /// Refuses a flag the runtime could not evaluate as its author meant, naming the
    /// field and what it must be.
    pub fn validate(&self) -> Result<(), PolicyError> {
        validate_feature_id(&self.feature_id)?;
        let id = &self.feature_id;
        if let Some(p) = self.rollout_percent
            && p > 100
        {
            return Err(PolicyError::Invalid(format!("flag {id}: rollout_percent is {p}; use 0-100 (or omit it for everyone)")));
        }
        if let Some(t) = &self.entitlement_tier {
            Tier::parse(t).map_err(|_| PolicyError::Invalid(format!("flag {id}: entitlement_tier {t:?} is not a tier; use free, pro, enterprise or custom")))?;
        }
        if let Some(d) = &self.activation_date {
            parse_rfc3339(d).ok_or_else(|| {
                PolicyError::Invalid(format!("flag {id}: activation_date {d:?} is not an RFC 3339 UTC time; write it like 2026-11-23T10:00:00Z"))
            })?;
        }
        let mut names = BTreeSet::new();
        for v in &self.variants {
            if v.name.is_empty() || v.name.chars().count() > 64 || v.name.chars().any(char::is_control) {
                return Err(PolicyError::Invalid(format!("flag {id}: variant name {:?} must be 1-64 printable characters", v.name)));
            }
            if !names.insert(v.name.as_str()) {
                return Err(PolicyError::Invalid(format!("flag {id}: variant {:?} appears twice; variant names must be unique", v.name)));
            }
        }
        if !self.variants.is_empty() && self.total_weight() == 0 {
            return Err(PolicyError::Invalid(format!("flag {id}: the variants' weights sum to 0; give at least one variant a weight above 0")));
        }
        Ok(())
    }

    fn total_weight(&self) -> u64 {
        self.variants.iter().map(|v| u64::from(v.weight)).sum()
    }

    /// Evaluates this flag for one subject. Pure: the same flag and context always give
    /// the same answer.
    ///
    /// An unreadable `activation_date` or `entitlement_tier` (a flag that skipped
    /// [`validate`](Self::validate)) fails closed: the flag is off.
    pub fn evaluate(&self, ctx: &FlagContext<'_>) -> Evaluation {
        if !self.enabled {
            return Evaluation::off(Reason::Disabled);
        }
        if let Some(d) = &self.activation_date {
            match parse_rfc3339(d) {
                Some(at) if ctx.now_unix_secs >= at => {}
                _ => return Evaluation::off(Reason::NotYetActive),
            }
        }
        if let Some(t) = &self.entitlement_tier {
            match Tier::parse(t) {
                Ok(min) if tier_rank(ctx.tier) >= tier_rank(min) => {}
                _ => return Evaluation::off(Reason::TierTooLow),
            }
        }
        let key = format!("{}:{}", self.feature_id, ctx.subject);
        if let Some(p) = self.rollout_percent
            && bucket(&key) > p
        {
            return Evaluation::off(Reason::OutsideRollout);
        }
        Evaluation { enabled: true, variant: self.pick_variant(&key), reason: Reason::Enabled }
    }

    /// The variant of `key` by cumulative weight, from a hash independent of the
    /// rollout bucket (as Unleash does).
    fn pick_variant(&self, key: &str) -> Option<String> {
        let total = self.total_weight();
        if total == 0 {
            // No variants, or only weightless ones (an unvalidated flag): nothing to pick.
            return None;
        }
        let mut pick = u64::from(murmur3_32(key.as_bytes(), VARIANT_SEED)) % total;
        for v in &self.variants {
            let w = u64::from(v.weight);
            if pick < w {
                return Some(v.name.clone());
            }
            pick -= w;
        }
        None
    }
}

/// murmur3 x86 32-bit of `bytes` with `seed` (the hash Unleash and flagd use for
/// rollouts).
pub fn murmur3_32(bytes: &[u8], seed: u32) -> u32 {
    // The murmur3 crate reads from an io::Read; reading an in-memory slice cannot fail.
    murmur3::murmur3_32(&mut std::io::Cursor::new(bytes), seed).expect("reading from memory cannot fail")
}

/// The rollout bucket, 1-100, of a key (`"<feature_id>:<subject>"`): murmur3 with seed
/// 0, modulo 100, plus 1, as Unleash's `normalizedHash`. A subject is in a rollout of
/// `p` percent when its bucket is at most `p`, so raising `p` never removes anyone.
pub fn bucket(key: &str) -> u32 {
    murmur3_32(key.as_bytes(), 0) % 100 + 1
}

/// Seconds since the Unix epoch of an RFC 3339 UTC time,
/// `YYYY-MM-DDTHH:MM:SS[.fraction](Z|+00:00)`, or `None` when it is not one. The
/// fraction is dropped (seconds precision); a leap second (`:60`) counts as the next
/// second. Years 1970-9999.
pub fn parse_rfc3339(s: &str) -> Option<u64> {
    let s = s.strip_suffix(['Z', 'z']).or_else(|| s.strip_suffix("+00:00"))?;
    let b = s.as_bytes();
    if b.len() < 19 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't') || b[13] != b':' || b[16] != b':' {
        return None;
    }
    // The fraction, if any, is '.' and at least one digit.
    let rest = &b[19..];
    if !rest.is_empty() && (rest[0] != b'.' || rest.len() < 2 || !rest[1..].iter().all(u8::is_ascii_digit)) {
        return None;
    }
    let num = |from: usize, to: usize| -> Option<u64> {
        let digits = &b[from..to];
        if !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        Some(digits.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0')))
    };
    let (y, m, d) = (num(0, 4)?, num(5, 7)?, num(8, 10)?);
    let (h, min, sec) = (num(11, 13)?, num(14, 16)?, num(17, 19)?);
    if !(1970..=9999).contains(&y) || !(1..=12).contains(&m) || d < 1 || d > days_in_month(y, m) || h > 23 || min > 59 || sec > 60 {
        return None;
    }
    Some(days_from_civil(y, m, d) * 86_400 + h * 3_600 + min * 60 + sec)
}

fn days_in_month(y: u64, m: u64) -> u64 {
    match m {
        2 if (y.is_multiple_of(4) && !y.is_multiple_of(100)) || y.is_multiple_of(400) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// `days_from_civil`, for years ≥ 1970 so everything stays unsigned).
fn days_from_civil(y: u64, m: u64, d: u64) -> u64 {
    let (y, m) = if m <= 2 { (y - 1, m + 9) } else { (y, m - 3) };
    let era = y / 400;
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Instance flags, and each tenant's own flags, which replace an instance flag of the
/// same id for that tenant alone.
///
/// The set stores what it is given; validate flags ([`FeatureFlag::validate`]) before
/// setting them.
#[derive(Debug, Clone, Default)]
pub struct FlagSet {
    instance: BTreeMap<String, FeatureFlag>,
    tenants: BTreeMap<String, BTreeMap<String, FeatureFlag>>,
}

impl FlagSet {
    /// Sets (or replaces) an instance-wide flag.
    pub fn set_instance(&mut self, flag: FeatureFlag) {
        self.instance.insert(flag.feature_id.clone(), flag);
    }

    /// Sets (or replaces) `tenant`'s own flag, which overrides the instance flag of the
    /// same id for that tenant only.
    pub fn set_tenant(&mut self, tenant: &str, flag: FeatureFlag) {
        self.tenants.entry(tenant.to_owned()).or_default().insert(flag.feature_id.clone(), flag);
    }

    /// Removes an instance flag, returning it.
    pub fn remove_instance(&mut self, feature: &str) -> Option<FeatureFlag> {
        self.instance.remove(feature)
    }

    /// Removes `tenant`'s own flag, returning it; the instance flag (if any) applies
    /// to the tenant again.
    pub fn remove_tenant(&mut self, tenant: &str, feature: &str) -> Option<FeatureFlag> {
        let flags = self.tenants.get_mut(tenant)?;
        let removed = flags.remove(feature);
        if flags.is_empty() {
            self.tenants.remove(tenant);
        }
        removed
    }

    /// The instance flags, by id.
    pub fn instance_flags(&self) -> Vec<&FeatureFlag> {
        self.instance.values().collect()
    }

    /// `tenant`'s own flags (not the instance flags it inherits), by id.
    pub fn tenant_flags(&self, tenant: &str) -> Vec<&FeatureFlag> {
        self.tenants.get(tenant).map(|m| m.values().collect()).unwrap_or_default()
    }

    /// The flag that applies to `tenant`: its own, else the instance's.
    pub fn effective(&self, feature: &str, tenant: &str) -> Option<&FeatureFlag> {
        self.tenants.get(tenant).and_then(|m| m.get(feature)).or_else(|| self.instance.get(feature))
    }

    /// Evaluates the flag that applies to `ctx.tenant`; an undefined flag is off with
    /// [`Reason::Unknown`].
    pub fn evaluate(&self, feature: &str, ctx: &FlagContext<'_>) -> Evaluation {
        match self.effective(feature, ctx.tenant) {
            Some(f) => f.evaluate(ctx),
            None => Evaluation::off(Reason::Unknown),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flag(id: &str, percent: Option<u32>) -> FeatureFlag {
        FeatureFlag {
            feature_id: id.into(),
            enabled: true,
            entitlement_tier: None,
            instance_id: "i".into(),
            activation_date: None,
            rollout_percent: percent,
            variants: vec![],
        }
    }

    fn ctx<'a>(tenant: &'a str, tier: Tier, now: u64) -> FlagContext<'a> {
        FlagContext { tenant, tier, subject: tenant, now_unix_secs: now }
    }

    #[test]
    fn murmur3_matches_the_reference_vectors() {
        // SMHasher's MurmurHash3_x86_32 (the vectors most ports test against).
        assert_eq!(murmur3_32(b"", 0), 0);
        assert_eq!(murmur3_32(b"", 1), 0x514E_28B7);
        assert_eq!(murmur3_32(b"", 0xFFFF_FFFF), 0x81F1_6F39);
        assert_eq!(murmur3_32(b"\0\0\0\0", 0), 0x2362_F9DE);
        assert_eq!(murmur3_32(b"aaaa", 0x9747_B28C), 0x5A97_808A);
        assert_eq!(murmur3_32(b"abc", 0), 0xB3DD_93FA);
        assert_eq!(murmur3_32(b"Hello, world!", 0x9747_B28C), 0x2488_4CBA);
        assert_eq!(murmur3_32(b"hello", 0), 0x248B_FA47);
        assert_eq!(murmur3_32(b"The quick brown fox jumps over the lazy dog", 0), 0x2E4F_F723);
    }

    #[test]
    fn rollout_is_deterministic_monotonic_and_proportional() {
        let subjects: Vec<String> = (0..10_000).map(|i| format!("tenant-{i}")).collect();
        let mut previous = vec![false; subjects.len()];
        for p in [0, 1, 5, 10, 25, 33, 50, 75, 99, 100] {
            let f = flag("checkout-v2", Some(p));
            let now: Vec<bool> = subjects.iter().map(|s| f.evaluate(&ctx(s, Tier::Free, 0)).enabled).collect();
            let again: Vec<bool> = subjects.iter().map(|s| f.evaluate(&ctx(s, Tier::Free, 0)).enabled).collect();
            assert_eq!(now, again, "deterministic");
            let lost = previous.iter().zip(&now).filter(|(was, is)| **was && !**is).count();
            assert_eq!(lost, 0, "raising to {p}% removed {lost} subjects");
            let share = now.iter().filter(|b| **b).count() as f64 / subjects.len() as f64 * 100.0;
            assert!((share - f64::from(p)).abs() < 1.5, "{p}%: {share:.2}% of subjects are in");
            previous = now;
        }
        assert!(previous.iter().all(|b| *b), "100% is everyone");
        // Out-of-rollout subjects say so.
        let f = flag("checkout-v2", Some(0));
        assert_eq!(f.evaluate(&ctx("tenant-1", Tier::Free, 0)).reason, Reason::OutsideRollout);
    }

    #[test]
    fn each_flag_buckets_subjects_independently() {
        // The key includes the feature id, so one subject is not first in every rollout.
        let (a, b) = (flag("a", Some(10)), flag("b", Some(10)));
        let both = (0..10_000)
            .map(|i| format!("s{i}"))
            .filter(|s| a.evaluate(&ctx(s, Tier::Free, 0)).enabled && b.evaluate(&ctx(s, Tier::Free, 0)).enabled)
            .count();
        assert!((50..=150).contains(&both), "{both} of 10,000 in both 10% rollouts (expected about 100)");
    }

    #[test]
    fn tenant_flags_are_isolated_and_reversible() {
        let mut set = FlagSet::default();
        set.set_instance(flag("x", None));
        let before: Vec<Evaluation> = (0..100).map(|i| set.evaluate("x", &ctx(&format!("b{i}"), Tier::Free, 0))).collect();
        set.set_tenant("a", FeatureFlag { enabled: false, ..flag("x", None) });
        set.set_tenant("a", flag("only-a", None));
        assert_eq!(set.evaluate("x", &ctx("a", Tier::Free, 0)).reason, Reason::Disabled);
        let after: Vec<Evaluation> = (0..100).map(|i| set.evaluate("x", &ctx(&format!("b{i}"), Tier::Free, 0))).collect();
        assert_eq!(before, after, "a's override never changes another tenant");
        assert_eq!(set.evaluate("only-a", &ctx("b0", Tier::Free, 0)).reason, Reason::Unknown);
        assert!(set.evaluate("only-a", &ctx("a", Tier::Free, 0)).enabled);
        assert_eq!(set.tenant_flags("a").len(), 2);
        assert_eq!(set.instance_flags().len(), 1);
        assert!(set.remove_tenant("a", "x").is_some());
        assert!(set.evaluate("x", &ctx("a", Tier::Free, 0)).enabled, "removing the override restores the instance flag");
        assert!(set.remove_tenant("nobody", "x").is_none());
        assert!(set.remove_instance("x").is_some());
        assert_eq!(set.evaluate("x", &ctx("a", Tier::Free, 0)).reason, Reason::Unknown);
    }

    #[test]
    fn tier_and_activation_date() {
        let f = FeatureFlag { entitlement_tier: Some("pro".into()), activation_date: Some("2026-11-23T10:00:00Z".into()), ..flag("y", None) };
        f.validate().expect("valid");
        let at = parse_rfc3339("2026-11-23T10:00:00Z").expect("date");
        assert_eq!(at, 1_795_428_000);
        assert_eq!(f.evaluate(&ctx("a", Tier::Pro, at - 1)).reason, Reason::NotYetActive);
        assert_eq!(f.evaluate(&ctx("a", Tier::Free, at)).reason, Reason::TierTooLow);
        for tier in [Tier::Pro, Tier::Enterprise, Tier::Custom] {
            assert_eq!(f.evaluate(&ctx("a", tier, at)), Evaluation { enabled: true, variant: None, reason: Reason::Enabled });
        }
        let ent = FeatureFlag { entitlement_tier: Some("enterprise".into()), ..flag("e", None) };
        assert!(ent.evaluate(&ctx("a", Tier::Custom, 0)).enabled, "custom ranks as enterprise");
        assert_eq!(ent.evaluate(&ctx("a", Tier::Pro, 0)).reason, Reason::TierTooLow);
        // Off wins over everything.
        assert_eq!(FeatureFlag { enabled: false, ..f.clone() }.evaluate(&ctx("a", Tier::Pro, at)).reason, Reason::Disabled);
        // Unvalidated garbage fails closed.
        let broken = FeatureFlag { activation_date: Some("soon".into()), ..flag("b", None) };
        assert_eq!(broken.evaluate(&ctx("a", Tier::Enterprise, u64::MAX)).reason, Reason::NotYetActive);
        let broken = FeatureFlag { entitlement_tier: Some("gold".into()), ..flag("b", None) };
        assert_eq!(broken.evaluate(&ctx("a", Tier::Enterprise, 0)).reason, Reason::TierTooLow);
    }

    #[test]
    fn rfc3339_dates() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_rfc3339("2000-02-29T12:34:56+00:00"), Some(951_827_696));
        assert_eq!(parse_rfc3339("2026-11-23T10:00:00.999Z"), Some(1_795_428_000), "fractions are dropped");
        assert_eq!(parse_rfc3339("2024-12-31T23:59:59Z"), Some(1_735_689_599));
        for bad in [
            "", "2026-11-23", "2026-11-23T10:00:00", "2026-11-23T10:00:00+01:00", "2026-02-29T00:00:00Z", "2026-04-31T00:00:00Z",
            "2026-13-01T00:00:00Z", "2026-11-23T24:00:00Z", "1969-12-31T23:59:59Z", "2026-1-23T10:00:00Z", "+026-11-23T10:00:00Z",
            "2026-11-23T10:00:00.Z", "2026-11-23 10:00:00Z", "tomorrow",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn variants_follow_their_weights_and_stick() {
        let v = FeatureFlag { variants: vec![Variant { name: "red".into(), weight: 1 }, Variant { name: "blue".into(), weight: 3 }], ..flag("z", None) };
        v.validate().expect("valid");
        let picks: Vec<String> = (0..8000).filter_map(|i| v.evaluate(&ctx(&format!("t{i}"), Tier::Free, 0)).variant).collect();
        assert_eq!(picks.len(), 8000, "every enabled evaluation picks a variant");
        let blue = picks.iter().filter(|p| *p == "blue").count() as f64 / picks.len() as f64;
        assert!((blue - 0.75).abs() < 0.03, "{blue}");
        assert_eq!(v.evaluate(&ctx("t1", Tier::Free, 0)), v.evaluate(&ctx("t1", Tier::Free, 0)));
        let zero = FeatureFlag { variants: vec![Variant { name: "off".into(), weight: 0 }, Variant { name: "on".into(), weight: 5 }], ..flag("w", None) };
        assert!((0..200).all(|i| zero.evaluate(&ctx(&format!("t{i}"), Tier::Free, 0)).variant.as_deref() == Some("on")));
    }

    #[test]
    fn invalid_flags_are_refused_with_the_field() {
        let cases = [
            (FeatureFlag { rollout_percent: Some(101), ..flag("a", None) }, "rollout_percent"),
            (flag("Bad Id", None), "feature id"),
            (flag("", None), "feature id"),
            (flag(&"x".repeat(129), None), "feature id"),
            (FeatureFlag { activation_date: Some("tomorrow".into()), ..flag("a", None) }, "activation_date"),
            (FeatureFlag { entitlement_tier: Some("gold".into()), ..flag("a", None) }, "entitlement_tier"),
            (FeatureFlag { variants: vec![Variant { name: "a".into(), weight: 1 }, Variant { name: "a".into(), weight: 1 }], ..flag("a", None) }, "unique"),
            (FeatureFlag { variants: vec![Variant { name: "a".into(), weight: 0 }], ..flag("a", None) }, "sum to 0"),
        ];
        for (bad, field) in cases {
            let e = bad.validate().expect_err(field).to_string();
            assert!(e.contains(field), "{e}");
        }
        flag(&format!("{}zz", "a.b_c-9".repeat(18)), Some(100)).validate().expect("128 characters");
    }

    #[test]
    fn flags_round_trip_through_json() {
        let f = FeatureFlag { rollout_percent: Some(10), variants: vec![Variant { name: "a".into(), weight: 1 }], ..flag("a", None) };
        let json = serde_json::to_value(&f).expect("serialize");
        assert_eq!(json, serde_json::json!({"feature_id": "a", "enabled": true, "instance_id": "i", "rollout_percent": 10, "variants": [{"name": "a", "weight": 1}]}));
        assert_eq!(serde_json::from_value::<FeatureFlag>(json).expect("deserialize"), f);
        assert!(serde_json::from_str::<FeatureFlag>(r#"{"feature_id":"a","enabled":true,"instance_id":"i","colour":"red"}"#).is_err(), "unknown fields");
        let e = serde_json::to_value(Evaluation::off(Reason::NotYetActive)).expect("serialize");
        assert_eq!(e, serde_json::json!({"enabled": false, "reason": "not_yet_active"}));
    }
}
