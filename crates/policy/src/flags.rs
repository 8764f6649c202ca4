//! Feature flags (spec §7.3) in the structure of seed S0-XIII-A, evaluated in the
//! runtime, never inside capabilities.
//!
//! Percentage rollouts hash `"<feature_id>:<subject>"` with murmur3 (x86, 32-bit, seed
//! 0) into a bucket 1-100, as Unleash's `normalizedHash` does: a subject is in when its
//! bucket ≤ the percentage, so raising the percentage never removes anyone already in.

use std::collections::BTreeMap;

use runplane_tenancy::Tier;
use serde::{Deserialize, Serialize};

use crate::PolicyError;

/// The seed Unleash uses for variant selection, so variants and rollout buckets are
/// independent.
const VARIANT_SEED: u32 = 86_028_157;

/// One flag, instance-wide or for one tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FeatureFlag {
    pub feature_id: String,
    pub enabled: bool,
    /// The lowest tier it is on for (`free` < `pro` < `enterprise` = `custom`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entitlement_tier: Option<String>,
    pub instance_id: String,
    /// RFC 3339 UTC (`2026-11-23T10:00:00Z`); before it the flag is off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activation_date: Option<String>,
    /// 0-100: the share of subjects it is on for; absent = everyone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout_percent: Option<u32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = Vec<Object>)]
    pub variants: Vec<Variant>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Variant {
    pub name: String,
    pub weight: u32,
}

/// Why an evaluation came out as it did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    Unknown,
    Disabled,
    NotYetActive,
    TierTooLow,
    OutsideRollout,
    Enabled,
}

impl Reason {
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

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Evaluation {
    pub enabled: bool,
    pub variant: Option<String>,
    pub reason: Reason,
}

/// Who a flag is evaluated for, and when.
pub struct FlagContext<'a> {
    pub tenant: &'a str,
    pub tier: Tier,
    /// The rollout subject (the tenant id, unless a finer subject is chosen).
    pub subject: &'a str,
    pub now_unix_secs: u64,
}

/// Checks a feature id: 1-128 characters of a-z, 0-9, '.', '_' and '-'.
pub fn validate_feature_id(id: &str) -> Result<(), PolicyError> {
    if id.is_empty() || id.len() > 128 || !id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b)) {
        return Err(PolicyError::Invalid(format!("feature id {id:?} must be 1-128 characters of a-z, 0-9, '.', '_' and '-'")));
    }
    Ok(())
}

fn tier_rank(t: Tier) -> u8 {
    match t {
        Tier::Free => 0,
        Tier::Pro => 1,
        Tier::Enterprise | Tier::Custom => 2,
    }
}

impl FeatureFlag {
    pub fn validate(&self) -> Result<(), PolicyError> {
        validate_feature_id(&self.feature_id)?;
        if let Some(p) = self.rollout_percent
            && p > 100
        {
            return Err(PolicyError::Invalid(format!("flag {}: rollout_percent is {p}; it must be 0-100", self.feature_id)));
        }
        if let Some(t) = &self.entitlement_tier {
            Tier::parse(t).map_err(|_| PolicyError::Invalid(format!("flag {}: entitlement_tier {t:?} is not free, pro, enterprise or custom", self.feature_id)))?;
        }
        if let Some(d) = &self.activation_date {
            parse_rfc3339(d).ok_or_else(|| PolicyError::Invalid(format!("flag {}: activation_date {d:?} is not RFC 3339 UTC like 2026-11-23T10:00:00Z", self.feature_id)))?;
        }
        let mut names = std::collections::BTreeSet::new();
        for v in &self.variants {
            if v.name.is_empty() || v.name.len() > 64 || !names.insert(v.name.as_str()) {
                return Err(PolicyError::Invalid(format!("flag {}: variant names must be 1-64 characters and unique", self.feature_id)));
            }
        }
        if !self.variants.is_empty() && self.variants.iter().map(|v| u64::from(v.weight)).sum::<u64>() == 0 {
            return Err(PolicyError::Invalid(format!("flag {}: the variants' weights sum to 0", self.feature_id)));
        }
        Ok(())
    }

    /// Evaluates this flag for one subject (pure: same inputs, same answer).
    pub fn evaluate(&self, ctx: &FlagContext<'_>) -> Evaluation {
        let off = |reason| Evaluation { enabled: false, variant: None, reason };
        if !self.enabled {
            return off(Reason::Disabled);
        }
        if let Some(at) = self.activation_date.as_deref().and_then(parse_rfc3339)
            && ctx.now_unix_secs < at
        {
            return off(Reason::NotYetActive);
        }
        if let Some(min) = self.entitlement_tier.as_deref().and_then(|t| Tier::parse(t).ok())
            && tier_rank(ctx.tier) < tier_rank(min)
        {
            return off(Reason::TierTooLow);
        }
        let key = format!("{}:{}", self.feature_id, ctx.subject);
        if let Some(p) = self.rollout_percent
            && bucket(&key) > p
        {
            return off(Reason::OutsideRollout);
        }
        let variant = (!self.variants.is_empty()).then(|| {
            let total: u64 = self.variants.iter().map(|v| u64::from(v.weight)).sum();
            let mut pick = u64::from(murmur3_32(key.as_bytes(), VARIANT_SEED)) % total.max(1);
            let mut chosen = &self.variants[0];
            for v in &self.variants {
                if pick < u64::from(v.weight) {
                    chosen = v;
                    break;
                }
                pick -= u64::from(v.weight);
            }
            chosen.name.clone()
        });
        Evaluation { enabled: true, variant, reason: Reason::Enabled }
    }
}

/// murmur3 x86 32-bit.
pub fn murmur3_32(bytes: &[u8], seed: u32) -> u32 {
    // Reading from an in-memory cursor cannot fail.
    murmur3::murmur3_32(&mut std::io::Cursor::new(bytes), seed).expect("reading from memory")
}

/// The rollout bucket 1-100 of a key.
pub fn bucket(key: &str) -> u32 {
    murmur3_32(key.as_bytes(), 0) % 100 + 1
}

/// Seconds since the Unix epoch of `YYYY-MM-DDTHH:MM:SS(Z|+00:00)`.
pub fn parse_rfc3339(s: &str) -> Option<u64> {
    let s = s.strip_suffix('Z').or_else(|| s.strip_suffix("+00:00"))?;
    let (date, time) = s.split_once('T')?;
    let d: Vec<u64> = date.split('-').map(|p| p.parse().ok()).collect::<Option<_>>()?;
    let t: Vec<u64> = time.split(':').map(|p| p.parse().ok()).collect::<Option<_>>()?;
    let ([y, m, day], [h, min, sec]) = (d.as_slice(), t.as_slice()) else { return None };
    if !(1970..=9999).contains(y) || !(1..=12).contains(m) || !(1..=31).contains(day) || *h > 23 || *min > 59 || *sec > 60 {
        return None;
    }
    // Days from civil (Howard Hinnant's algorithm).
    let (y, m) = if *m <= 2 { (y - 1, m + 9) } else { (*y, m - 3) };
    let era = y / 400;
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + h * 3600 + min * 60 + sec)
}

/// Instance flags, and each tenant's own flags (which replace an instance flag of the
/// same id for that tenant alone).
#[derive(Debug, Clone, Default)]
pub struct FlagSet {
    instance: BTreeMap<String, FeatureFlag>,
    tenants: BTreeMap<String, BTreeMap<String, FeatureFlag>>,
}

impl FlagSet {
    pub fn set_instance(&mut self, flag: FeatureFlag) {
        self.instance.insert(flag.feature_id.clone(), flag);
    }
    pub fn set_tenant(&mut self, tenant: &str, flag: FeatureFlag) {
        self.tenants.entry(tenant.to_owned()).or_default().insert(flag.feature_id.clone(), flag);
    }
    pub fn remove_instance(&mut self, feature: &str) -> Option<FeatureFlag> {
        self.instance.remove(feature)
    }
    pub fn remove_tenant(&mut self, tenant: &str, feature: &str) -> Option<FeatureFlag> {
        self.tenants.get_mut(tenant).and_then(|m| m.remove(feature))
    }
    pub fn instance_flags(&self) -> Vec<&FeatureFlag> {
        self.instance.values().collect()
    }
    pub fn tenant_flags(&self, tenant: &str) -> Vec<&FeatureFlag> {
        self.tenants.get(tenant).map(|m| m.values().collect()).unwrap_or_default()
    }

    /// The flag that applies to `tenant`, evaluated; an undefined flag is off.
    pub fn evaluate(&self, feature: &str, ctx: &FlagContext<'_>) -> Evaluation {
        let flag = self.tenants.get(ctx.tenant).and_then(|m| m.get(feature)).or_else(|| self.instance.get(feature));
        match flag {
            Some(f) => f.evaluate(ctx),
            None => Evaluation { enabled: false, variant: None, reason: Reason::Unknown },
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
        // From the reference implementation (SMHasher) and Unleash's test suite.
        assert_eq!(murmur3_32(b"", 0), 0);
        assert_eq!(murmur3_32(b"", 1), 0x514E_28B7);
        assert_eq!(murmur3_32(b"hello", 0), 0x248B_FA47);
        assert_eq!(murmur3_32(b"The quick brown fox jumps over the lazy dog", 0), 0x2E4F_F723);
    }

    #[test]
    fn rollout_is_deterministic_monotonic_and_proportional() {
        let subjects: Vec<String> = (0..10_000).map(|i| format!("tenant-{i}")).collect();
        let mut previous = vec![false; subjects.len()];
        for p in [0, 1, 5, 10, 25, 50, 75, 99, 100] {
            let f = flag("checkout-v2", Some(p));
            let now: Vec<bool> = subjects.iter().map(|s| f.evaluate(&ctx(s, Tier::Free, 0)).enabled).collect();
            let again: Vec<bool> = subjects.iter().map(|s| f.evaluate(&ctx(s, Tier::Free, 0)).enabled).collect();
            assert_eq!(now, again);
            assert!(previous.iter().zip(&now).all(|(was, is)| !was || *is), "raising to {p}% removed a subject");
            let share = now.iter().filter(|b| **b).count() as f64 / subjects.len() as f64 * 100.0;
            assert!((share - f64::from(p)).abs() < 2.0, "{p}%: {share:.2}%");
            previous = now;
        }
    }

    #[test]
    fn tenant_flags_are_isolated_and_reversible() {
        let mut set = FlagSet::default();
        set.set_instance(flag("x", None));
        set.set_tenant("a", FeatureFlag { enabled: false, ..flag("x", None) });
        assert!(!set.evaluate("x", &ctx("a", Tier::Free, 0)).enabled);
        assert!(set.evaluate("x", &ctx("b", Tier::Free, 0)).enabled, "a's flag never changes b");
        set.remove_tenant("a", "x");
        assert!(set.evaluate("x", &ctx("a", Tier::Free, 0)).enabled);
        assert_eq!(set.evaluate("nope", &ctx("a", Tier::Free, 0)).reason, Reason::Unknown);
    }

    #[test]
    fn tier_activation_date_and_variants() {
        let f = FeatureFlag { entitlement_tier: Some("pro".into()), activation_date: Some("2026-11-23T10:00:00Z".into()), ..flag("y", None) };
        f.validate().expect("valid");
        let at = parse_rfc3339("2026-11-23T10:00:00Z").expect("date");
        assert_eq!(at, 1_795_428_000);
        assert_eq!(f.evaluate(&ctx("a", Tier::Pro, at - 1)).reason, Reason::NotYetActive);
        assert_eq!(f.evaluate(&ctx("a", Tier::Free, at)).reason, Reason::TierTooLow);
        assert!(f.evaluate(&ctx("a", Tier::Enterprise, at)).enabled);
        let v = FeatureFlag { variants: vec![Variant { name: "red".into(), weight: 1 }, Variant { name: "blue".into(), weight: 3 }], ..flag("z", None) };
        let picks: Vec<String> = (0..4000).filter_map(|i| v.evaluate(&ctx(&format!("t{i}"), Tier::Free, 0)).variant).collect();
        let blue = picks.iter().filter(|p| *p == "blue").count() as f64 / picks.len() as f64;
        assert!((blue - 0.75).abs() < 0.03, "{blue}");
        for bad in [FeatureFlag { rollout_percent: Some(101), ..flag("a", None) }, flag("Bad Id", None), FeatureFlag { activation_date: Some("tomorrow".into()), ..flag("a", None) }] {
            assert!(bad.validate().is_err());
        }
    }
}
