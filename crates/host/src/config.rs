use std::time::Duration;

use serde::Deserialize;

/// Per-invocation limits and pool sizing (the `[sandbox]` table of `runplane.toml`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SandboxConfig {
    /// Linear-memory cap per invocation, in bytes.
    pub memory_limit_bytes: usize,
    /// Fuel (roughly, wasm instructions) one invocation may burn.
    pub fuel: u64,
    /// Wall-clock deadline of one invocation, in milliseconds.
    pub deadline_ms: u64,
    /// Largest response body a capability may return, in bytes.
    pub max_response_bytes: usize,
    /// How many port calls one invocation may make.
    pub max_port_calls: u32,
    /// Concurrent instances the pooling allocator reserves room for.
    pub max_instances: u32,
    /// Fixed maximum wasm stack, in bytes.
    pub max_wasm_stack_bytes: usize,
    /// Bytes of stdout/stderr kept per invocation (the rest is dropped and counted).
    pub max_log_bytes: usize,
    /// Bytes of each reused linear memory reset in place rather than decommitted.
    pub keep_resident_bytes: usize,
    /// Longest one port call may wait for its backend before it fails with
    /// `unavailable` (whatever the adapter's own timeouts), in milliseconds.
    pub port_timeout_ms: u64,
    /// Guests executing wasm at once (0: one per available core). Others wait for a
    /// turn, shared between tenants by weight; a turn lasts 1 ms for a guest that never
    /// gave one up, one epoch tick (0.25 ms) for a CPU-bound one.
    pub cpu_slots: u32,
    /// Of those, how many guests that proved CPU-bound (gave up a whole turn) may hold
    /// at once (0: one fewer than `cpu_slots`, at least one). The others stay for short
    /// guests, so a tenant flooding the node with CPU-heavy work leaves a core to light
    /// requests and to the node's own threads; CPU-bound tenants share theirs by weight.
    /// Equal to `cpu_slots`: CPU-bound work may fill every core.
    pub cpu_bound_slots: u32,
    /// Run a guest that has used a whole CPU turn (a CPU-bound one) under Linux
    /// `SCHED_IDLE` for the rest of its invocation: then a node thread that wakes (a
    /// request arrived, a commit returned) preempts it at once instead of waiting out
    /// its time slice. Short guests keep the normal policy. Other platforms: ignored.
    pub demote_cpu_bound: bool,
    /// Keep each sandbox thread on one core (threads spread over the cores the process
    /// may use). A guest's thread that a node thread preempts then waits only for that
    /// thread, instead of moving to a core where another guest runs and waiting out
    /// that guest's time slice. Off by default: with a core kept free of CPU-bound work
    /// (`cpu_bound_slots`) pinning no longer shortened the light tenant's tail, and a
    /// pinned guest cannot move to an idle core (tenancy-bench: `hello` throughput
    /// 0.87–0.88 of the unscheduled node pinned, 0.92–0.95 not).
    pub pin_threads: bool,
    /// Start a guest whose capability's last invocation was not CPU-bound on the thread
    /// that received the request, and move it to the sandbox's threads only if it gives
    /// a whole turn up (after its first turn, 1 ms). A light request then costs
    /// no hand-over between runtimes (two thread wake-ups and their context switches;
    /// http-bench: see README). It still waits for a CPU turn like every guest.
    pub inline_light_guests: bool,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        SandboxConfig {
            memory_limit_bytes: 64 << 20,
            fuel: 2_000_000_000,
            deadline_ms: 5_000,
            max_response_bytes: 8 << 20,
            max_port_calls: 10_000,
            max_instances: 256,
            max_wasm_stack_bytes: 512 << 10,
            max_log_bytes: 64 << 10,
            keep_resident_bytes: 8 << 20,
            port_timeout_ms: 3_000,
            cpu_slots: 0,
            cpu_bound_slots: 0,
            demote_cpu_bound: true,
            pin_threads: false,
            inline_light_guests: true,
        }
    }
}

impl SandboxConfig {
    /// The CPU slots in effect.
    pub fn cpu_slots(&self) -> u32 {
        match self.cpu_slots {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get() as u32),
            n => n,
        }
    }

    /// The CPU slots CPU-bound guests may hold at once, in effect.
    pub fn cpu_bound_slots(&self) -> u32 {
        let all = self.cpu_slots();
        match self.cpu_bound_slots {
            0 => all.saturating_sub(1).max(1),
            n => n.min(all),
        }
    }

    /// The wall-clock deadline as a duration.
    pub fn deadline(&self) -> Duration {
        Duration::from_millis(self.deadline_ms)
    }
}
