//! The telemetry port: logs and metrics emitted by capabilities.

/// A log level, as in `wasi:logging`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
    Critical,
}

/// Where capability logs and metrics go. Every call carries the tenant, capability and
/// trace id so they correlate with the invocation.
pub trait Telemetry: Send + Sync {
    fn log(&self, scope: &TelemetryScope, level: Level, context: &str, message: &str);
    fn counter(&self, scope: &TelemetryScope, name: &str, delta: u64, labels: &[(String, String)]);
    fn histogram(&self, scope: &TelemetryScope, name: &str, value: f64, labels: &[(String, String)]);
}

/// Who emitted a log line or metric.
#[derive(Debug, Clone)]
pub struct TelemetryScope {
    pub tenant: crate::TenantId,
    pub capability: String,
    pub trace_id: String,
    pub invocation_id: String,
}
