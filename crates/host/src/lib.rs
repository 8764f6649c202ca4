//! The wasmtime host: turns component bytes into something a node can invoke, safely.
//!
//! - [`Host::inspect`] checks a component against Runplane's world and refuses any
//!   import outside it (spec §2 invariant 1), naming each offending import.
//! - [`Host::load`] compiles once per digest (memory and on-disk cache keyed by digest
//!   and engine configuration) and pre-instantiates.
//! - [`Host::handle_http`], [`Host::run_task`] and [`Host::deliver_message`] run one
//!   invocation each in a fresh store from the pooling allocator, with a memory cap, a
//!   fuel budget, a wall-clock deadline, a virtual clock and seeded randomness, and bind
//!   the component's port imports to the tenant's [`runplane_ports::PortSet`].
//!
//! Architecture invariant: the host knows ports, not adapters. It never names a
//! database, broker or storage technology; the node hands it a `PortSet`.

mod cache;
mod clock;
mod config;
mod error;
mod imports;
mod invoke;
mod limits;
pub mod journal;
mod outbound;
mod ports_impl;
mod state;
mod threads;

pub use cache::LoadedCapability;
pub use config::SandboxConfig;
pub use error::{HostError, InvokeError};
pub use imports::{ALLOWED_IMPORTS, ComponentInfo, Exports};
pub use invoke::{HttpResponse, Invocation, InvocationReport};
pub use journal::{Divergence, Journal, Observation};
pub use limits::{Limits, QuotaViolation};
pub use outbound::AllowList;

use std::path::PathBuf;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use wasmtime::component::{Component, Linker};
use wasmtime::{Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use crate::limits::CpuTurn;
use crate::state::InvocationState;

/// How often the epoch advances: the length of a CPU turn, and the unit wall-clock
/// deadlines are measured in. At 5 ms a light tenant waited behind several turns of a
/// CPU-bound neighbour (tenancy-bench: p99 50 ms vs 2 ms alone); at 1 ms, 15 ms. With
/// the first turn taken before the hand-over and CPU-bound guests demoted: 3–7 ms at
/// 0.5 ms, 3–5 ms at 0.25 ms, for 1–3 % less of the neighbour's own throughput.
const EPOCH_TICK: Duration = Duration::from_micros(250);

/// How long a guest that has not yet proved CPU-bound keeps its turn before it yields:
/// long enough for a light request to finish in one turn. With every turn one tick,
/// 10–15 % of `hello` requests (150–500 µs of CPU in the node) outlasted their turn,
/// went back in line behind a CPU-bound neighbour and were demoted, which was most of
/// the light tenant's p99 under a flood (tenancy-bench). A CPU-bound guest has one such
/// turn per invocation; after it, one tick.
const FIRST_TURN: Duration = Duration::from_millis(1);

/// The engine, the linker with every allowed import, and the compiled-component cache.
pub struct Host {
    engine: Engine,
    linker: Linker<InvocationState>,
    cache: cache::ComponentCache,
    config: SandboxConfig,
    /// CPU turns: at most `cpu_slots` guests execute wasm at once, tenants by weight.
    cpu: runplane_tenancy::FairGate,
    /// The turns CPU-bound guests may hold at once, when fewer than `cpu`'s.
    cpu_bound: Option<runplane_tenancy::FairGate>,
    /// The threads guests run on (`cpu_slots` of them), apart from the node's.
    sandbox: SandboxRuntime,
    /// Whether CPU-bound guests run below the node's threads (config and platform).
    demote: bool,
    _ticker: Arc<EpochTicker>,
}

/// A tokio runtime for guests only. The node's runtime serves HTTP, audit and
/// admission; a CPU-bound guest there delays every request queued behind it on the
/// same worker (the noisy-neighbour bench showed it), so guests get threads of their
/// own, and the operating system shares the cores between the two. A guest whose
/// capability was light last time starts on the node's thread and moves here only if
/// it uses up its first turn ([`SandboxConfig::inline_light_guests`]): the hand-over
/// between runtimes cost a light request two wake-ups and their context switches.
struct SandboxRuntime(Option<tokio::runtime::Runtime>);

impl SandboxRuntime {
    fn new(threads: usize, pin: bool) -> std::io::Result<Self> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads.max(1))
            .thread_name("runplane-sandbox")
            // Guests arrive from the node's runtime, in the injection queue: look there
            // at every poll, not every 61, so a guest granted a turn is not left
            // behind guests that were woken on the thread itself.
            .global_queue_interval(1)
            .on_thread_start({
                let started = Arc::new(std::sync::atomic::AtomicUsize::new(0));
                move || {
                    if pin {
                        threads::pin_current(started.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
                    }
                }
            })
            .enable_all()
            .build()?;
        Ok(SandboxRuntime(Some(rt)))
    }

    /// Runs `fut` on the sandbox runtime once it has a CPU turn; dropping the returned
    /// future aborts it (a guest past its deadline stops at its next epoch tick).
    /// `None` if the task was cancelled or panicked.
    ///
    /// The guest gets in line for its first turn here, before it is handed over: it
    /// queues for the CPU the moment it arrives, and the grant wakes the sandbox task
    /// directly. Spawned first, a new guest waited for a busy sandbox thread to poll
    /// it before it could even queue, and a CPU-bound neighbour's guests took the
    /// turns meanwhile (tenancy-bench: the light tenant's spawn p99 was 3 ms); taking
    /// the turn on the caller's runtime and then spawning left the turn idle during
    /// the hand-over (tenancy-bench scheduling on/off 0.79–0.82, against 0.93–0.95 now).
    ///
    /// `inline`: the guest takes its turn and starts on the caller's thread instead, and
    /// moves here only once it gives a whole turn up (it proved CPU-bound), so a light
    /// guest finishes with no hand-over at all. The caller's thread is held at most one
    /// first turn.
    async fn spawn<F>(&self, cpu: &CpuTurn, inline: bool, fut: F) -> Option<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let entry = cpu.queue();
        if inline {
            cpu.take(entry).await;
            let mut fut = Box::pin(fut);
            let started = std::future::poll_fn(|cx| {
                // A panic stays inside the invocation, as on the sandbox's threads.
                match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| fut.as_mut().poll(cx))) {
                    Ok(Poll::Ready(out)) => Poll::Ready(Inline::Finished(out)),
                    // It yielded at a tick, its turn used up: the rest runs over there.
                    Ok(Poll::Pending) if cpu.is_cpu_bound() => Poll::Ready(Inline::CpuBound),
                    // Waiting for a port call: it stays, and its waker is this task's.
                    Ok(Poll::Pending) => Poll::Pending,
                    Err(_) => Poll::Ready(Inline::Panicked),
                }
            })
            .await;
            return match started {
                Inline::Finished(out) => Some(out),
                Inline::CpuBound => self.run_here(fut).await,
                Inline::Panicked => {
                    tracing::error!("a guest's invocation panicked on the node's thread; it is reported as stopped");
                    None
                }
            };
        }
        let turn = cpu.clone();
        self.run_here(async move {
            turn.take(entry).await;
            fut.await
        })
        .await
    }

    /// Runs `fut` on the sandbox runtime; dropping the returned future aborts it.
    async fn run_here<F>(&self, fut: F) -> Option<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let handle = self.0.as_ref().map(|rt| rt.spawn(fut));
        let mut guard = AbortOnDrop(handle);
        let out = match guard.0.as_mut() {
            Some(h) => h.await.ok(),
            None => None,
        };
        // Finished: nothing left to abort.
        let _ = guard.0.take();
        out
    }
}

/// How a guest started on the caller's thread left it.
enum Inline<T> {
    Finished(T),
    CpuBound,
    Panicked,
}

struct AbortOnDrop<T>(Option<tokio::task::JoinHandle<T>>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        if let Some(h) = &self.0 {
            h.abort();
        }
    }
}

impl Drop for SandboxRuntime {
    fn drop(&mut self) {
        // Dropping a runtime inside another runtime's async context would panic.
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

impl Host {
    /// Builds the engine (pooling allocator, fuel, epochs, deterministic float and SIMD
    /// behaviour, no threads) and the linker. `cache_dir` holds compiled components.
    pub fn new(config: SandboxConfig, cache_dir: PathBuf) -> Result<Self, HostError> {
        let engine = build_engine(&config).map_err(HostError::Engine)?;
        let mut linker = Linker::new(&engine);
        state::add_to_linker(&mut linker).map_err(HostError::Engine)?;
        let ticker = Arc::new(EpochTicker::start(engine.clone()));
        let cache = cache::ComponentCache::new(cache_dir, &engine)?;
        let cpu = runplane_tenancy::FairGate::new(config.cpu_slots() as usize);
        let cpu_bound = (config.cpu_bound_slots() < config.cpu_slots()).then(|| runplane_tenancy::FairGate::new(config.cpu_bound_slots() as usize));
        let sandbox = SandboxRuntime::new(config.cpu_slots() as usize, config.pin_threads)
            .map_err(|e| HostError::Engine(wasmtime::Error::msg(format!("cannot start the sandbox runtime: {e}"))))?;
        let demote = config.demote_cpu_bound && threads::can_demote();
        Ok(Host { engine, linker, cache, config, cpu, cpu_bound, sandbox, demote, _ticker: ticker })
    }

    /// The sandbox limits this host applies.
    pub fn config(&self) -> &SandboxConfig {
        &self.config
    }

    /// Validates `bytes` as a component that targets Runplane's world: parses it,
    /// refuses imports outside the allowed set, and reports its exports. Does not cache.
    pub fn inspect(&self, name: &str, bytes: &[u8]) -> Result<ComponentInfo, HostError> {
        imports::inspect(&self.engine, name, bytes)
    }

    /// Compiles (or fetches from cache) and pre-instantiates the component whose
    /// SHA-256 is `digest`. The bytes must already have passed [`Host::inspect`].
    pub async fn load(&self, name: &str, digest: &str, bytes: &[u8]) -> Result<Arc<LoadedCapability>, HostError> {
        self.cache.load(&self.engine, &self.linker, name, digest, bytes).await
    }

    pub(crate) fn engine(&self) -> &Engine {
        &self.engine
    }
}

fn build_engine(config: &SandboxConfig) -> wasmtime::Result<Engine> {
    let mut cfg = wasmtime::Config::new();
    cfg.wasm_component_model(true)
        .consume_fuel(true)
        .epoch_interruption(true)
        .max_wasm_stack(config.max_wasm_stack_bytes)
        .async_stack_size(config.max_wasm_stack_bytes + 1024 * 1024)
        // Determinism (spec §3.2): the same inputs give the same bits on every node.
        .cranelift_nan_canonicalization(true)
        .relaxed_simd_deterministic(true)
        // (No threads: wasmtime is built without its `threads` feature.)
        .parallel_compilation(true);

    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(config.max_instances)
        .total_core_instances(config.max_instances * 8)
        .total_memories(config.max_instances * 2)
        .total_tables(config.max_instances * 4)
        .max_memory_size(config.memory_limit_bytes)
        .max_component_instance_size(1 << 20)
        .max_core_instance_size(1 << 20)
        .total_stacks(config.max_instances)
        // Reset a reused slot's dirty pages in place instead of giving them back to the
        // kernel: the next invocation touches them again at once, and page faults would
        // cost more than the copy.
        .linear_memory_keep_resident(config.keep_resident_bytes)
        // With PAGEMAP_SCAN (Linux 6.7+) only the pages an invocation dirtied are reset.
        .pagemap_scan(wasmtime::Enabled::Auto)
        .table_keep_resident(64 << 10)
        .async_stack_keep_resident(128 << 10);
    cfg.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    Engine::new(&cfg)
}

/// Advances the engine's epoch every [`EPOCH_TICK`] on its own thread, so a component
/// spinning in a loop is interrupted at its deadline without cooperation.
struct EpochTicker {
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl EpochTicker {
    fn start(engine: Engine) -> Self {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        std::thread::Builder::new()
            .name("runplane-epoch".into())
            .spawn(move || {
                while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    engine.increment_epoch();
                }
            })
            .expect("spawn the epoch thread");
        EpochTicker { stop }
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Compiles a component without caching (tests and tools).
pub fn compile(engine: &Engine, bytes: &[u8]) -> wasmtime::Result<Component> {
    Component::new(engine, bytes)
}
