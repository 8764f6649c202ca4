/// Why a component could not be accepted or prepared.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// The bytes are not a WebAssembly component (or are truncated).
    #[error("{name} is not a valid WebAssembly component: {reason}; build it for wasm32-wasip2 (cargo build --target wasm32-wasip2) and upload the .wasm file")]
    NotAComponent { name: String, reason: String },
    /// The component imports interfaces outside Runplane's world.
    #[error("capability {name} imports {}, which Runplane does not provide; capabilities may import only: {}", .offending.join(", "), .allowed.join(", "))]
    ForbiddenImports { name: String, offending: Vec<String>, allowed: Vec<String> },
    /// The component exports nothing Runplane can call.
    #[error("capability {name} exports none of wasi:http/incoming-handler, runplane:ports/task or runplane:ports/message-handler; target one of the worlds in wit/ports.wit")]
    NoEntryPoint { name: String },
    /// Building the engine, linking or compiling failed.
    #[error("wasm engine error: {0:#}")]
    Engine(wasmtime::Error),
    /// The compiled-component cache could not be used.
    #[error("compiled-component cache at {path}: {source}")]
    Cache { path: String, source: std::io::Error },
}

/// Why one invocation failed. Only that invocation fails; the node keeps serving.
#[derive(Debug, Clone, thiserror::Error)]
pub enum InvokeError {
    #[error("the capability ran past its wall-clock deadline of {deadline_ms} ms and was stopped")]
    Deadline { deadline_ms: u64 },
    #[error("the capability used up its CPU budget ({fuel} fuel) and was stopped")]
    OutOfFuel { fuel: u64 },
    #[error("the capability tried to grow its memory past the limit of {limit_bytes} bytes and was stopped")]
    MemoryLimit { limit_bytes: usize },
    #[error("the capability's response is larger than the limit of {limit_bytes} bytes")]
    ResponseTooLarge { limit_bytes: usize },
    #[error("the capability made more than {limit} port calls in one invocation and was stopped")]
    TooManyPortCalls { limit: u32 },
    #[error("the capability does not export {export}")]
    MissingExport { export: &'static str },
    #[error("all {0} sandbox slots are busy; retry shortly")]
    Busy(u32),
    #[error("the capability trapped: {0}")]
    Trap(String),
    #[error("the capability failed: {0}")]
    Failed(String),
    /// Only on replay: the capability did not repeat what the journal recorded.
    #[error("{0}")]
    NonDeterministic(crate::Divergence),
    /// The invocation ran into one of its tenant's quotas and was stopped.
    #[error("{} quota exceeded: {}", .0.resource.as_str(), .0.message)]
    QuotaExceeded(crate::QuotaViolation),
}

impl InvokeError {
    /// A stable code for audit events, metrics and API errors.
    pub fn code(&self) -> &'static str {
        match self {
            InvokeError::Deadline { .. } => "deadline_exceeded",
            InvokeError::OutOfFuel { .. } => "cpu_budget_exceeded",
            InvokeError::MemoryLimit { .. } => "memory_limit_exceeded",
            InvokeError::ResponseTooLarge { .. } => "response_too_large",
            InvokeError::TooManyPortCalls { .. } => "port_call_limit_exceeded",
            InvokeError::MissingExport { .. } => "missing_export",
            InvokeError::Busy(_) => "sandbox_busy",
            InvokeError::Trap(_) => "capability_trapped",
            InvokeError::Failed(_) => "capability_failed",
            InvokeError::NonDeterministic(_) => "non_deterministic",
            InvokeError::QuotaExceeded(_) => "quota_exceeded",
        }
    }
}
