//! Running one invocation: a fresh store per call, limits armed, errors classified.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use runplane_ports::{ExecutionContext, PortSet};
use wasmtime::{Store, Trap, UpdateDeadline};
use wasmtime_wasi_http::WasiHttpView;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;

use crate::ports_impl::bindings::exports::runplane::ports::task::TaskError;
use crate::limits::CpuTurn;
use crate::state::{InvocationState, MemoryLimitExceeded, PortCallLimitExceeded};
use crate::{AllowList, Host, InvokeError, LoadedCapability};

/// Extra time past the wasm deadline allowed for host calls to unwind.
const HOST_GRACE: Duration = Duration::from_millis(250);

/// Everything one invocation needs besides its input.
pub struct Invocation {
    pub context: Arc<ExecutionContext>,
    pub ports: PortSet,
    pub allow: AllowList,
    /// [`Journal::record`] for a live invocation, [`Journal::replay`] to re-execute one.
    pub journal: crate::Journal,
    /// The tenant's quota as it applies to this invocation.
    pub limits: crate::Limits,
}

/// What an invocation consumed; recorded in its audit event.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct InvocationReport {
    pub fuel_consumed: u64,
    pub memory_peak_bytes: usize,
    pub port_calls: u32,
    pub stdout_bytes: usize,
    pub stderr_bytes: usize,
    /// Outbound HTTP bytes sent and received.
    pub network_bytes: u64,
    /// The fuel this invocation was given (the sandbox's, or less when the tenant's CPU
    /// window had less left).
    pub fuel_budget: u64,
    /// How long instantiating the component took, in nanoseconds (0 if it did not get
    /// that far).
    pub instantiate_ns: u64,
}

/// A fully buffered HTTP response from a capability.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

impl Host {
    /// Whether an invocation of `cap` starts on the caller's thread (see
    /// [`crate::SandboxConfig::inline_light_guests`]).
    fn starts_inline(&self, cap: &LoadedCapability) -> bool {
        self.config.inline_light_guests && !cap.cpu_bound_last.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn new_store(&self, inv: Invocation) -> Store<InvocationState> {
        let cpu = CpuTurn::new(self.cpu.clone(), self.cpu_bound.clone(), inv.context.tenant.as_str(), inv.limits.weight, self.demote);
        let state = InvocationState::new(&self.config, inv.context, inv.ports, inv.allow, inv.journal, &inv.limits, cpu.clone());
        let meter = state.io.meter.clone();
        let fuel = state.fuel_budget;
        let mut store = Store::new(self.engine(), state);
        store.limiter(|s| &mut s.limiter);
        let _ = store.set_fuel(fuel);
        // Every epoch tick the guest gives back its CPU turn and queues for the next one
        // (tenants take turns by weight), so a CPU-bound capability never holds a slot
        // or a worker thread for long; at the wall-clock deadline it is interrupted.
        let deadline = std::time::Instant::now() + self.config.deadline();
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |_| {
            meter.check()?;
            if std::time::Instant::now() >= deadline {
                return Ok(UpdateDeadline::Interrupt);
            }
            // Yield only a whole turn: a tick may come just after the turn began.
            if !cpu.used() {
                return Ok(UpdateDeadline::Continue(1));
            }
            Ok(UpdateDeadline::YieldCustom(1, Box::pin(cpu.clone().yield_turn())))
        });
        store
    }

    /// Serves one HTTP request with the capability's `wasi:http/incoming-handler`.
    /// `request.uri()` is what the capability sees (the node strips the route prefix).
    pub async fn handle_http(
        &self,
        cap: &LoadedCapability,
        inv: Invocation,
        request: http::Request<Bytes>,
    ) -> (Result<HttpResponse, InvokeError>, InvocationReport) {
        let Some(proxy) = cap.proxy.clone() else {
            return (Err(InvokeError::MissingExport { export: "wasi:http/incoming-handler" }), InvocationReport::default());
        };
        let mut store = self.new_store(inv);
        let (parts, body) = request.into_parts();
        let request = hyper::Request::from_parts(
            parts,
            Full::new(body).map_err(|never: std::convert::Infallible| -> wasmtime_wasi_http::Error { match never {} }),
        );
        let (sender, receiver) = tokio::sync::oneshot::channel();
        let prepared: wasmtime::Result<_> = (|| {
            let req = store.data_mut().http().new_incoming_request(Scheme::Http, request)?;
            let out = store.data_mut().http().new_response_outparam(sender)?;
            Ok((req, out))
        })();
        let (req, out) = match prepared {
            Ok(x) => x,
            Err(e) => return (Err(InvokeError::Failed(format!("could not pass the request in: {e}"))), InvocationReport::default()),
        };

        let limits = self.config.clone();
        // The guest runs on the sandbox runtime (its own threads), so the node's HTTP
        // and audit work never queues behind wasm — or, if it was light last time, starts
        // here and moves there once CPU-bound; the response is collected here.
        let cpu = store.data().io.cpu.clone();
        let guest = self.sandbox.spawn(&cpu, self.starts_inline(cap), async move {
            let result = async {
                let started = std::time::Instant::now();
                let instance = proxy.instantiate_async(&mut store).await?;
                store.data_mut().instantiate_ns = started.elapsed().as_nanos() as u64;
                instance.wasi_http_incoming_handler().call_handle(&mut store, req, out).await
            }
            .await;
            (result, store)
        });
        // The response head arrives through the outparam; the body streams while the
        // guest may still run, so collect it under the same deadline and size limit.
        let collect = async {
            let response = receiver.await.ok()?;
            Some(match response {
                Ok(resp) => {
                    let (parts, body) = resp.into_parts();
                    match Limited::new(body, limits.max_response_bytes).collect().await {
                        Ok(b) => Ok(HttpResponse {
                            status: parts.status.as_u16(),
                            headers: parts
                                .headers
                                .iter()
                                .map(|(k, v)| (k.as_str().to_owned(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
                                .collect(),
                            body: b.to_bytes(),
                        }),
                        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
                            Err(InvokeError::ResponseTooLarge { limit_bytes: limits.max_response_bytes })
                        }
                        Err(e) => Err(InvokeError::Failed(format!("response body: {e}"))),
                    }
                }
                Err(code) => Err(InvokeError::Failed(format!("the capability answered with error {code:?}"))),
            })
        };
        let deadline = limits.deadline() + HOST_GRACE;
        let both = async {
            tokio::pin!(guest, collect);
            let (mut finished, mut collected) = (None, None);
            loop {
                tokio::select! {
                    g = &mut guest, if finished.is_none() => {
                        let Some(g) = g else { break };
                        // A trapped guest never answers; its outparam lives on in the
                        // store, so stop waiting for a response.
                        let trapped = g.0.is_err();
                        finished = Some(g);
                        if trapped || collected.is_some() {
                            break;
                        }
                    }
                    c = &mut collect, if collected.is_none() => {
                        collected = Some(c);
                        if finished.is_some() {
                            break;
                        }
                    }
                }
            }
            (finished, collected.flatten())
        };
        let Ok((Some((guest_result, store)), collected)) = tokio::time::timeout(deadline, both).await else {
            return (Err(InvokeError::Deadline { deadline_ms: limits.deadline_ms }), InvocationReport::default());
        };
        let report = report(&store);
        let violation = finish(cap, &store);
        drop(store);
        let outcome = match (collected, guest_result) {
            // A trap wins over a partial response: the invocation did not complete.
            (_, Err(e)) => Err(classify(e, &limits, report.fuel_budget)),
            (Some(r), Ok(())) => r,
            (None, Ok(())) => Err(InvokeError::Failed("the capability returned without setting a response".into())),
        };
        (violation.map_or(outcome, |v| Err(InvokeError::QuotaExceeded(v))), report)
    }

    /// Runs the capability's `runplane:ports/task.run` export.
    pub async fn run_task(
        &self,
        cap: &LoadedCapability,
        inv: Invocation,
        input: String,
    ) -> (Result<Result<String, String>, InvokeError>, InvocationReport) {
        let Some(indices) = cap.task.clone() else {
            return (Err(InvokeError::MissingExport { export: "runplane:ports/task" }), InvocationReport::default());
        };
        let pre = cap.pre.clone();
        let store = self.new_store(inv);
        self.run_guest(cap, store, move |mut store| async move {
            let result = async {
                let started = std::time::Instant::now();
                let instance = pre.instantiate_async(&mut store).await?;
                store.data_mut().instantiate_ns = started.elapsed().as_nanos() as u64;
                let guest = indices.load(&mut store, &instance)?;
                guest.call_run(&mut store, &input).await
            }
            .await;
            let mapped = result.map(|r| {
                r.map_err(|e| match e {
                    TaskError::InvalidInput(m) => format!("invalid input: {m}"),
                    TaskError::Failed(m) => m,
                })
            });
            (mapped, store)
        })
        .await
    }

    /// Delivers one message to the capability's `runplane:ports/message-handler` export.
    pub async fn deliver_message(
        &self,
        cap: &LoadedCapability,
        inv: Invocation,
        topic: String,
        payload: Vec<u8>,
        headers: Vec<(String, String)>,
    ) -> (Result<Result<(), String>, InvokeError>, InvocationReport) {
        let Some(indices) = cap.message.clone() else {
            return (Err(InvokeError::MissingExport { export: "runplane:ports/message-handler" }), InvocationReport::default());
        };
        let pre = cap.pre.clone();
        let store = self.new_store(inv);
        self.run_guest(cap, store, move |mut store| async move {
            let result = async {
                let started = std::time::Instant::now();
                let instance = pre.instantiate_async(&mut store).await?;
                store.data_mut().instantiate_ns = started.elapsed().as_nanos() as u64;
                let guest = indices.load(&mut store, &instance)?;
                guest.call_on_message(&mut store, &topic, &payload, &headers).await
            }
            .await;
            (result, store)
        })
        .await
    }

    async fn run_guest<T, F, Fut>(&self, cap: &LoadedCapability, store: Store<InvocationState>, f: F) -> (Result<T, InvokeError>, InvocationReport)
    where
        T: Send + 'static,
        F: FnOnce(Store<InvocationState>) -> Fut,
        Fut: Future<Output = (wasmtime::Result<T>, Store<InvocationState>)> + Send + 'static,
    {
        let limits = self.config.clone();
        let cpu = store.data().io.cpu.clone();
        match tokio::time::timeout(limits.deadline() + HOST_GRACE, self.sandbox.spawn(&cpu, self.starts_inline(cap), f(store))).await {
            Ok(None) => (Err(InvokeError::Failed("the sandbox runtime stopped the invocation".into())), InvocationReport::default()),
            Ok(Some((result, store))) => {
                let report = report(&store);
                match finish(cap, &store) {
                    Some(v) => (Err(InvokeError::QuotaExceeded(v)), report),
                    None => (result.map_err(|e| classify(e, &limits, report.fuel_budget)), report),
                }
            }
            Err(_) => (Err(InvokeError::Deadline { deadline_ms: limits.deadline_ms }), InvocationReport::default()),
        }
    }
}

/// Ends an invocation: gives back its CPU turn, notes whether it proved CPU-bound (where
/// the capability's next invocation starts), and returns the quota it ran into, if any
/// (which then decides its outcome, whatever the capability answered).
fn finish(cap: &LoadedCapability, store: &Store<InvocationState>) -> Option<crate::QuotaViolation> {
    let data = store.data();
    data.io.cpu.release();
    cap.cpu_bound_last.store(data.io.cpu.is_cpu_bound(), std::sync::atomic::Ordering::Relaxed);
    data.io.meter.violation()
}

fn report(store: &Store<InvocationState>) -> InvocationReport {
    let fuel_left = store.get_fuel().unwrap_or(0);
    let data = store.data();
    let stdout = data.stdout.contents();
    let stderr = data.stderr.contents();
    for (stream, bytes) in [("stdout", &stdout), ("stderr", &stderr)] {
        if !bytes.is_empty() {
            let text = data.redact(&String::from_utf8_lossy(bytes));
            tracing::info!(
                target: "runplane::capability",
                tenant = %data.context.tenant,
                capability = %data.context.capability,
                invocation_id = %data.context.invocation_id,
                trace_id = %data.context.trace_id,
                stream,
                "{}",
                text.trim_end()
            );
        }
    }
    InvocationReport {
        fuel_consumed: data_fuel_budget(store).saturating_sub(fuel_left),
        memory_peak_bytes: data.limiter.peak,
        port_calls: data.port_calls,
        stdout_bytes: stdout.len(),
        stderr_bytes: stderr.len(),
        network_bytes: data.network_bytes(),
        fuel_budget: data.fuel_budget,
        instantiate_ns: data.instantiate_ns,
    }
}

fn data_fuel_budget(store: &Store<InvocationState>) -> u64 {
    store.data().fuel_budget
}

/// Turns a wasmtime error into the invocation error a user can act on.
fn classify(e: wasmtime::Error, limits: &crate::SandboxConfig, fuel_given: u64) -> InvokeError {
    if let Some(m) = e.downcast_ref::<MemoryLimitExceeded>() {
        return InvokeError::MemoryLimit { limit_bytes: m.0 };
    }
    if e.downcast_ref::<crate::limits::QuotaStop>().is_some() {
        // `finish` reports the violation itself; this is only reached without one.
        return InvokeError::Failed("stopped by a quota".into());
    }
    if let Some(d) = e.downcast_ref::<crate::Divergence>() {
        return InvokeError::NonDeterministic(d.clone());
    }
    if let Some(p) = e.downcast_ref::<PortCallLimitExceeded>() {
        return InvokeError::TooManyPortCalls { limit: p.0 };
    }
    if let Some(trap) = e.downcast_ref::<Trap>() {
        return match trap {
            // Less fuel than the sandbox's own budget means the tenant's CPU window
            // was the limit.
            Trap::OutOfFuel if fuel_given < limits.fuel => InvokeError::QuotaExceeded(crate::QuotaViolation {
                resource: runplane_tenancy::Resource::Cpu,
                message: format!(
                    "the tenant's CPU quota (max_cpu_seconds) for this window is used up ({fuel_given} fuel were left); wait for the next window or ask for a larger quota"
                ),
            }),
            Trap::OutOfFuel => InvokeError::OutOfFuel { fuel: fuel_given },
            Trap::Interrupt => InvokeError::Deadline { deadline_ms: limits.deadline_ms },
            Trap::StackOverflow => InvokeError::Trap("wasm stack overflow (the capability recursed too deeply)".into()),
            other => InvokeError::Trap(other.to_string()),
        };
    }
    let text = format!("{e:#}");
    if text.contains("maximum concurrent") || text.contains("pooling allocator") {
        return InvokeError::Busy(limits.max_instances);
    }
    InvokeError::Failed(text)
}
