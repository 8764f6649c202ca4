//! The node's Prometheus metrics (served at `/metrics`), including the signals an
//! autoscaler needs: in-flight invocations and invocation latency.

use std::sync::{Arc, Mutex};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct InvocationLabels {
    /// `name@version`.
    pub capability: String,
    pub kind: String,
    /// `ok`, `error_response` (the capability answered 5xx) or the failure's code
    /// (`trap`, `deadline`, …).
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub surface: String,
    pub status: String,
}

/// Every metric the node exports, registered in one registry shared with the
/// telemetry adapter.
#[derive(Clone)]
pub struct Metrics {
    pub registry: Arc<Mutex<Registry>>,
    pub invocations: Family<InvocationLabels, Counter>,
    pub invocation_seconds: Family<InvocationLabels, Histogram>,
    pub in_flight: Gauge,
    pub requests: Family<RequestLabels, Counter>,
    pub audit_failures: Counter,
    pub quota_violations: Family<QuotaLabels, Counter>,
    /// Requests refused by a rate limit at the edge.
    pub rate_limited: Family<LimitLabels, Counter>,
    pub scheduler_queued: Gauge,
    /// Invocations of each tenant waiting for a turn (set at scrape time).
    pub tenant_queued: Family<TenantLabels, Gauge>,
    /// Invocations of each tenant running (set at scrape time).
    pub tenant_running: Family<TenantLabels, Gauge>,
    /// Invocation journals by where they are, and their bytes there.
    pub audit_journals: Family<JournalLabels, Gauge>,
    pub audit_journal_bytes: Family<JournalLabels, Gauge>,
    /// Bytes the embedded audit store's files take (database and WAL).
    pub audit_store_bytes: Gauge,
    /// The candidate's share of each route's rollout, in percent.
    pub rollout_weight: Family<RolloutLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    /// 1 for the phase each route's latest rollout is in, 0 for the others.
    pub rollout_phase: Family<PhaseLabels, Gauge>,
    /// Job attempts that ended, by outcome (`passed`, `failed`, `abandoned`).
    pub job_attempts: Family<JobLabels, Counter>,
    /// How long job attempts ran.
    pub job_attempt_seconds: Histogram,
    /// Job attempts running on this node now.
    pub jobs_running: Gauge,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct JobLabels {
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RolloutLabels {
    pub route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabels {
    pub route: String,
    /// `progressing`, `paused`, `promoted`, `aborted` or `superseded`.
    pub phase: String,
}

/// Sets a route's rollout gauges to what `r` says.
pub(crate) fn rollout_gauges(m: &Metrics, route: &str, r: &runplane_rollout::Rollout) {
    m.rollout_weight.get_or_create(&RolloutLabels { route: route.to_owned() }).set(r.weight.percent());
    for phase in ["progressing", "paused", "promoted", "aborted", "superseded"] {
        m.rollout_phase.get_or_create(&PhaseLabels { route: route.to_owned(), phase: phase.into() }).set(i64::from(phase == r.phase.as_str()));
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct JournalLabels {
    /// `hot` (in the audit store) or `archived`.
    pub state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TenantLabels {
    pub tenant: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LimitLabels {
    /// `admin`, `tenant` or `unauthenticated`.
    pub limit: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QuotaLabels {
    pub tenant: String,
    pub resource: String,
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("runplane");
        let invocations = Family::<InvocationLabels, Counter>::default();
        let invocation_seconds = Family::<InvocationLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0001, 2.0, 18))
        });
        let in_flight = Gauge::default();
        let requests = Family::<RequestLabels, Counter>::default();
        let audit_failures = Counter::default();
        registry.register("invocations", "Capability invocations by outcome", invocations.clone());
        registry.register("invocation_duration_seconds", "Capability invocation latency", invocation_seconds.clone());
        registry.register("invocations_in_flight", "Invocations running now", in_flight.clone());
        registry.register("http_requests", "HTTP requests by surface and status", requests.clone());
        registry.register("audit_append_failures", "Audit appends that failed (the action was refused)", audit_failures.clone());
        let quota_violations = Family::<QuotaLabels, Counter>::default();
        let scheduler_queued = Gauge::default();
        let rate_limited = Family::<LimitLabels, Counter>::default();
        registry.register("rate_limited", "Requests refused by a rate limit at the edge ([rate_limits])", rate_limited.clone());
        registry.register("quota_violations", "Invocations stopped or refused by a tenant quota", quota_violations.clone());
        registry.register("scheduler_queued", "Invocations waiting for their tenant's turn", scheduler_queued.clone());
        let tenant_queued = Family::<TenantLabels, Gauge>::default();
        let tenant_running = Family::<TenantLabels, Gauge>::default();
        registry.register("tenant_queued", "Invocations of a tenant waiting for a turn", tenant_queued.clone());
        registry.register("tenant_running", "Invocations of a tenant running", tenant_running.clone());
        let audit_journals = Family::<JournalLabels, Gauge>::default();
        let audit_journal_bytes = Family::<JournalLabels, Gauge>::default();
        let audit_store_bytes = Gauge::default();
        registry.register("audit_journals", "Invocation journals in the hot audit store and in the archive", audit_journals.clone());
        registry.register("audit_journal_bytes", "Bytes of invocation journals in the hot audit store (compressed) and in the archive", audit_journal_bytes.clone());
        registry.register("audit_store_bytes", "Bytes the embedded audit store's files take on disk (database and WAL)", audit_store_bytes.clone());
        let rollout_weight = Family::<RolloutLabels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
        let rollout_phase = Family::<PhaseLabels, Gauge>::default();
        registry.register("rollout_weight_percent", "The candidate's share of the route's rollout, in percent", rollout_weight.clone());
        registry.register("rollout_phase", "1 for the phase the route's latest rollout is in", rollout_phase.clone());
        let job_attempts = Family::<JobLabels, Counter>::default();
        let job_attempt_seconds = Histogram::new(exponential_buckets(0.001, 2.0, 20));
        let jobs_running = Gauge::default();
        registry.register("job_attempts", "Job attempts that ended, by outcome (ids are in the logs and audit events)", job_attempts.clone());
        registry.register("job_attempt_duration_seconds", "How long job attempts ran", job_attempt_seconds.clone());
        registry.register("jobs_running", "Job attempts running on this node", jobs_running.clone());
        Metrics {
            job_attempts,
            job_attempt_seconds,
            jobs_running,
            rollout_weight,
            rollout_phase,
            audit_journals,
            audit_journal_bytes,
            audit_store_bytes,
            registry: Arc::new(Mutex::new(registry)),
            invocations,
            invocation_seconds,
            in_flight,
            requests,
            audit_failures,
            quota_violations,
            rate_limited,
            scheduler_queued,
            tenant_queued,
            tenant_running,
        }
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let registry = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        if prometheus_client::encoding::text::encode(&mut out, &registry).is_err() {
            out.clear();
        }
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
