//! Rate limits at the edge (spec §11): GCRA buckets (governor), checked before any
//! expensive work.
//!
//! | limit (`[rate_limits]`) | key | default |
//! |---|---|---|
//! | `admin_per_second`, `admin_burst` | the admin credential (`Actor::name`) | 50/s, burst 100 |
//! | `tenant_per_second`, `tenant_burst` | the tenant, on `/apps/…` | off (0) |
//! | `unauthenticated_per_second`, `unauthenticated_burst` | the source address of a request without a valid credential | 10/s, burst 20 |
//!
//! Past a limit the answer is `429 rate_limited` with `Retry-After` (whole seconds until
//! the next request would pass). The first refusal of a key in a minute is an audit
//! event (`ratelimit.throttled`); every refusal is counted in
//! `runplane_rate_limited_total{limit}`. Buckets of keys not seen for a while are dropped
//! every minute, so a flood of distinct sources does not grow memory without bound.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use governor::clock::{Clock as _, DefaultClock};
use governor::{Quota, RateLimiter};

/// How long after a key's audited refusal its next refusal is audited again.
pub const NOTE_EVERY: Duration = Duration::from_secs(60);

/// `[rate_limits]`: requests per second and bursts; a rate of 0 turns that limit off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateSettings {
    pub admin_per_second: u32,
    pub admin_burst: u32,
    pub tenant_per_second: u32,
    pub tenant_burst: u32,
    pub unauthenticated_per_second: u32,
    pub unauthenticated_burst: u32,
}

impl Default for RateSettings {
    fn default() -> Self {
        RateSettings { admin_per_second: 50, admin_burst: 100, tenant_per_second: 0, tenant_burst: 0, unauthenticated_per_second: 10, unauthenticated_burst: 20 }
    }
}

/// Which limit refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    Admin,
    Tenant,
    Unauthenticated,
}

impl Limit {
    pub fn as_str(self) -> &'static str {
        match self {
            Limit::Admin => "admin",
            Limit::Tenant => "tenant",
            Limit::Unauthenticated => "unauthenticated",
        }
    }
}

/// A refusal: how long to wait, and whether this one is to be audited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Throttled {
    pub limit: Limit,
    pub retry_after_secs: u64,
    pub note: bool,
}

type Keyed<K> = RateLimiter<K, governor::state::keyed::DefaultKeyedStateStore<K>, DefaultClock>;

/// When each key's last audited refusal was: a refusal is audited when its key's last
/// one is [`NOTE_EVERY`] ago or more, so a client that keeps sending writes one event a
/// minute, not one per request.
pub struct Noted<K: Hash + Eq + Clone>(Mutex<HashMap<K, Instant>>);

impl<K: Hash + Eq + Clone> Default for Noted<K> {
    fn default() -> Self {
        Noted(Mutex::new(HashMap::new()))
    }
}

impl<K: Hash + Eq + Clone> Noted<K> {
    /// Whether this refusal of `key` is to be audited (and, if so, remembers it).
    pub fn first(&self, key: &K) -> bool {
        let now = Instant::now();
        let mut noted = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let first = noted.get(key).is_none_or(|at| now.duration_since(*at) >= NOTE_EVERY);
        if first {
            noted.insert(key.clone(), now);
        }
        first
    }

    /// Forgets keys noted longer ago than [`NOTE_EVERY`].
    pub fn tidy(&self) {
        let now = Instant::now();
        self.0.lock().unwrap_or_else(|p| p.into_inner()).retain(|_, at| now.duration_since(*at) < NOTE_EVERY);
    }
}

struct Bucket<K: Hash + Eq + Clone> {
    limiter: Keyed<K>,
    noted: Noted<K>,
}

impl<K: Hash + Eq + Clone> Bucket<K> {
    fn new(per_second: u32, burst: u32) -> Option<Self> {
        let rate = NonZeroU32::new(per_second)?;
        let burst = NonZeroU32::new(burst).unwrap_or(rate);
        Some(Bucket { limiter: RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst)), noted: Noted::default() })
    }

    fn check(&self, key: &K, limit: Limit) -> Result<(), Throttled> {
        let Err(not_until) = self.limiter.check_key(key) else { return Ok(()) };
        let wait = not_until.wait_time_from(DefaultClock::default().now());
        Err(Throttled { limit, retry_after_secs: wait.as_secs_f64().ceil().max(1.0) as u64, note: self.noted.first(key) })
    }

    fn tidy(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
        self.noted.tidy();
    }
}

/// The node's limits.
pub struct RateLimits {
    admin: Option<Bucket<String>>,
    tenant: Option<Bucket<String>>,
    unauthenticated: Option<Bucket<IpAddr>>,
    /// Quota refusals (tenant, resource) already audited this minute.
    pub(crate) quota_refusals: Noted<(String, &'static str)>,
}

impl RateLimits {
    pub fn new(s: &RateSettings) -> Self {
        RateLimits {
            admin: Bucket::new(s.admin_per_second, s.admin_burst),
            tenant: Bucket::new(s.tenant_per_second, s.tenant_burst),
            unauthenticated: Bucket::new(s.unauthenticated_per_second, s.unauthenticated_burst),
            quota_refusals: Noted::default(),
        }
    }

    /// One admin request by `actor`.
    pub fn admin(&self, actor: &str) -> Result<(), Throttled> {
        self.admin.as_ref().map_or(Ok(()), |b| b.check(&actor.to_owned(), Limit::Admin))
    }

    /// One tenant request.
    pub fn tenant(&self, tenant: &str) -> Result<(), Throttled> {
        self.tenant.as_ref().map_or(Ok(()), |b| b.check(&tenant.to_owned(), Limit::Tenant))
    }

    /// One request from `source` without a valid credential.
    pub fn unauthenticated(&self, source: IpAddr) -> Result<(), Throttled> {
        self.unauthenticated.as_ref().map_or(Ok(()), |b| b.check(&source, Limit::Unauthenticated))
    }

    /// Drops the state of keys whose buckets are full again.
    pub fn tidy(&self) {
        if let Some(b) = &self.admin {
            b.tidy();
        }
        if let Some(b) = &self.tenant {
            b.tidy();
        }
        if let Some(b) = &self.unauthenticated {
            b.tidy();
        }
        self.quota_refusals.tidy();
    }
}

/// Tidies the node's buckets every minute while it runs.
pub(crate) fn spawn_tidy(node: std::sync::Arc<crate::node::Node>) {
    tokio::spawn(async move {
        let stopped = node.drain.stopped();
        let mut stopped = std::pin::pin!(stopped);
        loop {
            tokio::select! {
                _ = &mut stopped => return,
                _ = tokio::time::sleep(NOTE_EVERY) => node.limits.tidy(),
            }
        }
    });
}

impl crate::node::Node {
    /// A request without a valid credential: its 401, or a 429 once its source address
    /// has sent too many.
    pub(crate) async fn unauthenticated(&self, extensions: &axum::http::Extensions, refusal: crate::error::ApiError) -> crate::error::ApiError {
        let Some(axum::extract::ConnectInfo(peer)) = extensions.get::<axum::extract::ConnectInfo<std::net::SocketAddr>>() else { return refusal };
        match self.limits.unauthenticated(peer.ip()) {
            Ok(()) => refusal,
            Err(t) => self.throttled(t, &format!("source:{}", peer.ip()), None).await,
        }
    }

    /// The answer to a throttled request: `429 rate_limited` with `Retry-After`,
    /// counted, and (the first time in a minute for its key) an audit event naming who
    /// was throttled, in the tenant's log for tenant traffic, else the admin log.
    pub(crate) async fn throttled(&self, t: Throttled, who: &str, tenant: Option<&str>) -> crate::error::ApiError {
        self.metrics.rate_limited.get_or_create(&crate::metrics::LimitLabels { limit: t.limit.as_str().into() }).inc();
        if t.note {
            let mut ev = self.event(who, tenant, "ratelimit.throttled", t.limit.as_str(), runplane_audit::Outcome::denied("rate_limited", Some(429)));
            ev.details.insert("retry_after_secs".into(), t.retry_after_secs.into());
            let log = match (t.limit, tenant) {
                (Limit::Tenant, Some(id)) => runplane_audit::LogId::tenant(id),
                _ => runplane_audit::LogId::admin(),
            };
            // A refusal has no effect to protect: answered even if the log cannot take it.
            let _ = self.append(log, ev).await;
        }
        let what = match t.limit {
            Limit::Admin => "this credential has sent more admin requests than [rate_limits] admin_per_second allows",
            Limit::Tenant => "this tenant has sent more requests than [rate_limits] tenant_per_second allows",
            Limit::Unauthenticated => "too many requests without a valid credential came from this address ([rate_limits] unauthenticated_per_second)",
        };
        let mut e = crate::error::ApiError::new(axum::http::StatusCode::TOO_MANY_REQUESTS, "rate_limited", format!("{what}; retry after {} s", t.retry_after_secs));
        e.headers.push(("retry-after", t.retry_after_secs.to_string()));
        e
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_passes_then_429_with_retry_after_and_only_the_first_is_noted() {
        let limits = RateLimits::new(&RateSettings { admin_per_second: 2, admin_burst: 3, ..RateSettings::default() });
        for _ in 0..3 {
            assert!(limits.admin("admin").is_ok());
        }
        let first = limits.admin("admin").expect_err("past the burst");
        assert_eq!((first.limit, first.retry_after_secs, first.note), (Limit::Admin, 1, true));
        let second = limits.admin("admin").expect_err("still past it");
        assert!(!second.note, "the second refusal in a minute is not audited again");
        assert!(limits.admin("token:other").is_ok(), "each credential has its own bucket");
        assert!(limits.tenant("acme").is_ok(), "the tenant limit is off by default");
        limits.tidy();
    }
}
