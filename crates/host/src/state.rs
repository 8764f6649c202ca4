//! The per-invocation store data: WASI contexts, the tenant's ports and the limits.

use std::sync::Arc;

use runplane_ports::{ExecutionContext, PortSet, TelemetryScope};
use wasmtime::component::{HasData, Linker, ResourceTable};
use wasmtime::ResourceLimiter;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use crate::clock::{VirtualMonotonicClock, VirtualWallClock, seeded_rngs};
use crate::limits::{CpuTurn, Limits, Meter, PortIo};
use crate::outbound::{AllowList, OutboundHooks};
use crate::SandboxConfig;

/// Trap payload: the component grew memory past its cap.
#[derive(Debug, thiserror::Error)]
#[error("memory limit of {0} bytes exceeded")]
pub(crate) struct MemoryLimitExceeded(pub(crate) usize);

/// Trap payload: the component made too many port calls.
#[derive(Debug, thiserror::Error)]
#[error("port call limit of {0} exceeded")]
pub(crate) struct PortCallLimitExceeded(pub(crate) u32);

/// What the host functions of one invocation can see.
pub struct InvocationState {
    wasi: WasiCtx,
    table: ResourceTable,
    http: WasiHttpCtx,
    hooks: OutboundHooks,
    pub(crate) limiter: MemoryCap,
    pub(crate) context: Arc<ExecutionContext>,
    pub(crate) ports: PortSet,
    pub(crate) journal: crate::Journal,
    pub(crate) io: PortIo,
    pub(crate) telemetry_scope: TelemetryScope,
    pub(crate) port_calls: u32,
    /// How long instantiating the component took (from the pooling allocator).
    pub(crate) instantiate_ns: u64,
    max_port_calls: u32,
    pub(crate) fuel_budget: u64,
    /// Secret values handed to the capability, redacted from anything it logs.
    pub(crate) revealed: Vec<Vec<u8>>,
    pub(crate) stdout: MemoryOutputPipe,
    pub(crate) stderr: MemoryOutputPipe,
}

impl InvocationState {
    pub(crate) fn new(
        config: &SandboxConfig,
        context: Arc<ExecutionContext>,
        ports: PortSet,
        allow: AllowList,
        journal: crate::Journal,
        limits: &Limits,
        cpu: CpuTurn,
    ) -> Self {
        let stdout = MemoryOutputPipe::new(config.max_log_bytes);
        let stderr = MemoryOutputPipe::new(config.max_log_bytes);
        let (secure, insecure, insecure_seed) = seeded_rngs(context.execution_seed);
        let meter = Meter::default();
        // No environment, no arguments, empty stdin, no preopens, no sockets: the
        // builder's defaults grant nothing, and we add only the virtual clock and rng.
        let wasi = WasiCtx::builder()
            .wall_clock(VirtualWallClock::new(context.accepted_at_unix_nanos))
            .monotonic_clock(VirtualMonotonicClock::new())
            .secure_random(secure)
            .insecure_random(insecure)
            .insecure_random_seed(insecure_seed)
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        let telemetry_scope = TelemetryScope {
            tenant: context.tenant.clone(),
            capability: context.capability.clone(),
            trace_id: context.trace_id.clone(),
            invocation_id: context.invocation_id.clone(),
        };
        InvocationState {
            wasi,
            table: ResourceTable::new(),
            http: WasiHttpCtx::new(),
            hooks: OutboundHooks {
                allow,
                journal: journal.clone(),
                max_body_bytes: config.max_response_bytes,
                network: limits.network.clone(),
                meter: meter.clone(),
                bytes: Default::default(),
            },
            journal,
            io: PortIo { timeout: std::time::Duration::from_millis(config.port_timeout_ms), meter, cpu },
            limiter: MemoryCap { limit: limits.memory_bytes.map_or(config.memory_limit_bytes, |m| m.min(config.memory_limit_bytes)), peak: 0 },
            context,
            ports,
            telemetry_scope,
            port_calls: 0,
            instantiate_ns: 0,
            max_port_calls: config.max_port_calls,
            fuel_budget: limits.fuel.map_or(config.fuel, |f| f.min(config.fuel)),
            revealed: Vec::new(),
            stdout,
            stderr,
        }
    }

    /// Counts a port call; traps the invocation past the limit.
    pub(crate) fn count_call(&mut self) -> wasmtime::Result<()> {
        self.io.meter.check()?;
        self.port_calls += 1;
        if self.port_calls > self.max_port_calls {
            return Err(wasmtime::Error::new(PortCallLimitExceeded(self.max_port_calls)));
        }
        Ok(())
    }

    /// Outbound HTTP bytes this invocation moved.
    pub(crate) fn network_bytes(&self) -> u64 {
        self.hooks.bytes.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub(crate) fn table(&mut self) -> &mut ResourceTable {
        &mut self.table
    }

    /// Replaces every secret value this invocation received with `[REDACTED]`.
    pub(crate) fn redact(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for secret in &self.revealed {
            if let Ok(s) = std::str::from_utf8(secret)
                && !s.is_empty()
            {
                out = out.replace(s, "[REDACTED]");
            }
        }
        out
    }
}

/// Per-invocation memory cap; a growth past it traps at once with a clear cause.
pub(crate) struct MemoryCap {
    pub(crate) limit: usize,
    pub(crate) peak: usize,
}

impl ResourceLimiter for MemoryCap {
    fn memory_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.limit {
            return Err(wasmtime::Error::new(MemoryLimitExceeded(self.limit)));
        }
        self.peak = self.peak.max(desired);
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }
}

impl WasiView for InvocationState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl WasiHttpView for InvocationState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView { hooks: &mut self.hooks, table: &mut self.table, ctx: &mut self.http }
    }
}

/// `HasData` marker binding the port interfaces to `InvocationState` itself.
pub(crate) struct Ports;

impl HasData for Ports {
    type Data<'a> = &'a mut InvocationState;
}

/// Adds exactly the allowed imports (see [`crate::ALLOWED_IMPORTS`]) to the linker:
/// nothing for filesystems or sockets exists in it.
pub(crate) fn add_to_linker(linker: &mut Linker<InvocationState>) -> wasmtime::Result<()> {
    use wasmtime_wasi::cli::{WasiCli, WasiCliView as _};
    use wasmtime_wasi::p2::bindings::{cli, random};
    use wasmtime_wasi::random::WasiRandom;

    // wasi:io, wall and monotonic clocks, random, stdin/stdout/stderr.
    wasmtime_wasi::p2::add_to_linker_proxy_interfaces_async(linker)?;
    random::insecure::add_to_linker::<_, WasiRandom>(linker, |t| t.wasi.random())?;
    random::insecure_seed::add_to_linker::<_, WasiRandom>(linker, |t| t.wasi.random())?;
    cli::environment::add_to_linker::<_, WasiCli>(linker, InvocationState::cli)?;
    cli::exit::add_to_linker::<_, WasiCli>(linker, InvocationState::cli)?;
    cli::terminal_input::add_to_linker::<_, WasiCli>(linker, InvocationState::cli)?;
    cli::terminal_output::add_to_linker::<_, WasiCli>(linker, InvocationState::cli)?;
    cli::terminal_stdin::add_to_linker::<_, WasiCli>(linker, InvocationState::cli)?;
    cli::terminal_stdout::add_to_linker::<_, WasiCli>(linker, InvocationState::cli)?;
    cli::terminal_stderr::add_to_linker::<_, WasiCli>(linker, InvocationState::cli)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(linker)?;
    crate::ports_impl::add_to_linker(linker)?;
    Ok(())
}
