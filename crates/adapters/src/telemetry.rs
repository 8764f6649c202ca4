//! Capability telemetry to `tracing` logs and Prometheus metrics.

use std::sync::{Arc, Mutex};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use runplane_ports::{Level, Telemetry, TelemetryScope};

/// Labels of a capability-emitted metric. Capability labels are folded into one
/// canonical string so a capability cannot explode the label schema.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CapabilityMetricLabels {
    pub tenant: String,
    pub capability: String,
    pub name: String,
    pub labels: String,
}

/// Sends logs to `tracing` and metrics to a Prometheus registry shared with the node.
#[derive(Clone)]
pub struct PrometheusTelemetry {
    counters: Family<CapabilityMetricLabels, Counter>,
    histograms: Family<CapabilityMetricLabels, Histogram>,
}

impl PrometheusTelemetry {
    /// Registers the capability metric families in `registry`.
    pub fn new(registry: &Arc<Mutex<Registry>>) -> Self {
        let counters = Family::<CapabilityMetricLabels, Counter>::default();
        let histograms = Family::<CapabilityMetricLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.001, 4.0, 12))
        });
        let mut r = registry.lock().unwrap_or_else(|p| p.into_inner());
        r.register("runplane_capability_counter", "Counters emitted by capabilities", counters.clone());
        r.register("runplane_capability_histogram", "Histograms emitted by capabilities", histograms.clone());
        PrometheusTelemetry { counters, histograms }
    }
}

fn labels(scope: &TelemetryScope, name: &str, extra: &[(String, String)]) -> CapabilityMetricLabels {
    let mut pairs: Vec<String> = extra.iter().map(|(k, v)| format!("{k}={v}")).collect();
    pairs.sort();
    CapabilityMetricLabels {
        tenant: scope.tenant.to_string(),
        capability: scope.capability.clone(),
        name: name.chars().take(64).collect(),
        labels: pairs.join(",").chars().take(256).collect(),
    }
}

impl Telemetry for PrometheusTelemetry {
    fn log(&self, scope: &TelemetryScope, level: Level, context: &str, message: &str) {
        macro_rules! emit {
            ($lvl:ident) => {
                tracing::$lvl!(
                    target: "runplane::capability",
                    tenant = %scope.tenant,
                    capability = %scope.capability,
                    trace_id = %scope.trace_id,
                    invocation_id = %scope.invocation_id,
                    context,
                    "{message}"
                )
            };
        }
        match level {
            Level::Trace => emit!(trace),
            Level::Debug => emit!(debug),
            Level::Info => emit!(info),
            Level::Warn => emit!(warn),
            Level::Error | Level::Critical => emit!(error),
        }
    }

    fn counter(&self, scope: &TelemetryScope, name: &str, delta: u64, extra: &[(String, String)]) {
        self.counters.get_or_create(&labels(scope, name, extra)).inc_by(delta);
    }

    fn histogram(&self, scope: &TelemetryScope, name: &str, value: f64, extra: &[(String, String)]) {
        if value.is_finite() {
            self.histograms.get_or_create(&labels(scope, name, extra)).observe(value);
        }
    }
}
