//! Tenant quotas at run time (spec §5.2): each tenant's `ExecutionQuota` (its own, or
//! its tier's defaults), the windows its CPU and network budgets are drawn from, and its
//! metered disk usage — persisted in the control store so it survives restarts.
//!
//! Where each field is enforced:
//! - `max_concurrent_tasks`: at admission, by the [`TenantScheduler`];
//! - `max_cpu_seconds`: each invocation reserves fuel from the window's budget (at most
//!   the sandbox's per-invocation fuel) and gives back what it did not burn; an empty
//!   window is refused at admission with `Retry-After` = the window's end;
//! - `max_memory_mb`: the sandbox's memory cap for the invocation;
//! - `max_disk_mb`: every write through records, state, events and blobs
//!   ([`meter_ports`]) — a write that would pass it fails with `quota-exceeded`;
//! - `max_network_kb`: outbound HTTP bytes, counted by the host as they move.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use async_trait::async_trait;
use runplane_host::Limits;
use runplane_ports::{
    BlobStore, EventStore, KeyValueStore, KeyPage, NewEvent, ObjectMeta, Page, PortError, PortResult, PortSet, Record, RecordStore,
    StoredEvent, TenantId, Filter,
};
use runplane_tenancy::{Budget, ExecutionQuota, Resource, Share, Tier, WindowedBudget};
use tokio::sync::Notify;

use crate::control::ControlStore;
use crate::error::ApiError;

/// The tenant's tier (an unknown stored value counts as the lowest).
pub(crate) fn tier_of(tenant: &crate::control::Tenant) -> Tier {
    Tier::parse(&tenant.tier).unwrap_or(Tier::Free)
}

/// One tenant's quota state.
pub(crate) struct TenantQuota {
    quota: Mutex<(ExecutionQuota, bool)>,
    cpu: WindowedBudget,
    network: WindowedBudget,
    disk_bytes: AtomicI64,
    disk_dirty: AtomicBool,
    /// Disk-usage change here not yet added to the store.
    disk_unsynced: AtomicI64,
    /// This node's share of the instance-wide windows (shared control store only).
    cpu_sync: Mutex<Option<WindowSync>>,
    network_sync: Mutex<Option<WindowSync>>,
}

/// Where a node stands with one instance-wide window: what it reported of its own use,
/// and what of the others' it has taken from its local budget.
struct WindowSync {
    start: u64,
    budget: Arc<Budget>,
    /// Own use before `budget` replaced an earlier one in the same window (a resize).
    base_own: u64,
    reported: u64,
    /// Others' use already removed from `budget`.
    applied: u64,
}

impl TenantQuota {
    fn new(quota: ExecutionQuota, custom: bool, now_secs: u64, disk: i64) -> Self {
        TenantQuota {
            quota: Mutex::new((quota, custom)),
            cpu: WindowedBudget::new(now_secs, quota.window_seconds, quota.cpu_fuel()),
            network: WindowedBudget::new(now_secs, quota.window_seconds, quota.network_bytes()),
            disk_bytes: AtomicI64::new(disk),
            disk_dirty: AtomicBool::new(false),
            disk_unsynced: AtomicI64::new(0),
            cpu_sync: Mutex::new(None),
            network_sync: Mutex::new(None),
        }
    }

    pub(crate) fn quota(&self) -> ExecutionQuota {
        self.quota.lock().unwrap_or_else(|p| p.into_inner()).0
    }

    fn is_custom(&self) -> bool {
        self.quota.lock().unwrap_or_else(|p| p.into_inner()).1
    }

    pub(crate) fn disk_bytes(&self) -> i64 {
        self.disk_bytes.load(Ordering::Relaxed)
    }
}

/// What admission gives an invocation: its limits, its share of the scheduler, and the
/// CPU window to charge afterwards.
pub(crate) struct Admitted {
    pub(crate) limits: Limits,
    pub(crate) share: Share,
    cpu: Arc<Budget>,
}

impl Admitted {
    /// No quota applies (the scheduler is turned off).
    pub(crate) fn unlimited() -> Self {
        Admitted {
            limits: Limits { weight: 1, ..Limits::default() },
            share: Share { weight: 1, max_concurrent: u32::MAX, max_queued: usize::MAX },
            cpu: Arc::new(Budget::new(0)),
        }
    }

    /// Charges the fuel the invocation burned to its window.
    pub(crate) fn settle(&self, fuel_consumed: u64) {
        self.cpu.take_up_to(fuel_consumed);
    }
}

/// A quota refused before an invocation ran.
#[derive(Debug, Clone)]
pub(crate) struct Refusal {
    pub(crate) resource: Resource,
    pub(crate) message: String,
    pub(crate) retry_after_secs: u64,
}

/// Every tenant's quota state. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Quotas {
    inner: Arc<Inner>,
}

struct Inner {
    tenants: RwLock<HashMap<String, Arc<TenantQuota>>>,
    custom: RwLock<HashMap<String, ExecutionQuota>>,
    disk_loaded: RwLock<HashMap<String, i64>>,
    control: ControlStore,
    flush: Arc<Notify>,
    sandbox_fuel: u64,
    max_queued: usize,
    /// Ready nodes of the instance (1 on the embedded store): each admits its share of
    /// a tenant's `max_concurrent_tasks`.
    nodes: std::sync::atomic::AtomicU32,
}

impl Quotas {
    /// Loads custom quotas and persisted disk usage, and starts the task that writes
    /// usage changes back (coalesced: one transaction per burst of writes).
    pub(crate) async fn load(control: ControlStore, sandbox_fuel: u64, max_queued: usize, usage_sync: std::time::Duration) -> Result<Self, ApiError> {
        let shared_every = control.is_shared().then_some(usage_sync);
        let mut custom = HashMap::new();
        for (tenant, json) in control.quotas().await? {
            let q: ExecutionQuota = serde_json::from_str(&json)
                .map_err(|e| ApiError::unavailable(format!("the stored quota of tenant {tenant} cannot be read: {e}")))?;
            custom.insert(tenant, q);
        }
        let disk_loaded = control.disk_usage().await?.into_iter().collect();
        let quotas = Quotas {
            inner: Arc::new(Inner {
                tenants: RwLock::default(),
                custom: RwLock::new(custom),
                disk_loaded: RwLock::new(disk_loaded),
                control,
                flush: Arc::new(Notify::new()),
                sandbox_fuel,
                max_queued,
                nodes: std::sync::atomic::AtomicU32::new(1),
            }),
        };
        let weak = Arc::downgrade(&quotas.inner);
        tokio::spawn(async move { share_usage(weak, shared_every).await });
        Ok(quotas)
    }

    /// The tenant's quota state, created on first use from its own quota or its tier's.
    pub(crate) fn tenant(&self, tenant: &str, tier: Tier, now_secs: u64) -> Arc<TenantQuota> {
        if let Some(t) = self.inner.tenants.read().unwrap_or_else(|p| p.into_inner()).get(tenant) {
            return t.clone();
        }
        let custom = self.inner.custom.read().unwrap_or_else(|p| p.into_inner()).get(tenant).copied();
        let disk = self.inner.disk_loaded.read().unwrap_or_else(|p| p.into_inner()).get(tenant).copied().unwrap_or(0);
        let state = Arc::new(TenantQuota::new(custom.unwrap_or_else(|| tier.default_quota()), custom.is_some(), now_secs, disk));
        self.inner.tenants.write().unwrap_or_else(|p| p.into_inner()).entry(tenant.to_owned()).or_insert(state).clone()
    }

    /// Whether the tenant has a quota of its own (rather than its tier's).
    pub(crate) fn is_custom(&self, tenant: &str, tier: Tier, now_secs: u64) -> bool {
        self.tenant(tenant, tier, now_secs).is_custom()
    }

    /// Sets a tenant's quota (persisted first); it applies from the next invocation.
    pub(crate) async fn set(&self, tenant: &str, tier: Tier, quota: ExecutionQuota, now_secs: u64, at: &str) -> Result<(), ApiError> {
        let json = serde_json::to_string(&quota).map_err(|e| ApiError::unavailable(format!("quota: {e}")))?;
        self.inner.control.set_quota(tenant, &json, at).await?;
        self.inner.custom.write().unwrap_or_else(|p| p.into_inner()).insert(tenant.to_owned(), quota);
        Self::apply(&self.tenant(tenant, tier, now_secs), (quota, true), &|| now_secs);
        Ok(())
    }

    /// Makes `want` the tenant's quota, resizing its windows (keeping what was used).
    /// The clock is read only when the quota changes (a seeded node's clock is read by
    /// requests alone otherwise).
    fn apply(state: &TenantQuota, want: (ExecutionQuota, bool), now_secs: &(dyn Fn() -> u64 + Sync)) {
        let old = {
            let mut guard = state.quota.lock().unwrap_or_else(|p| p.into_inner());
            if *guard == want {
                return;
            }
            std::mem::replace(&mut *guard, want).0
        };
        let quota = want.0;
        let now_secs = now_secs();
        state.cpu.resize(now_secs, old.window_seconds, old.cpu_fuel(), quota.window_seconds, quota.cpu_fuel());
        state.network.resize(now_secs, old.window_seconds, old.network_bytes(), quota.window_seconds, quota.network_bytes());
    }

    /// Applies the quotas the store holds now (another node changed one); `tier`
    /// gives each tenant's tier for those back on their tier's defaults.
    pub(crate) async fn reload(&self, now_secs: &(dyn Fn() -> u64 + Sync), tier: impl Fn(&str) -> Tier) -> Result<(), ApiError> {
        let mut custom = HashMap::new();
        for (tenant, json) in self.inner.control.quotas().await? {
            let q: ExecutionQuota = serde_json::from_str(&json)
                .map_err(|e| ApiError::unavailable(format!("the stored quota of tenant {tenant} cannot be read: {e}")))?;
            custom.insert(tenant, q);
        }
        *self.inner.custom.write().unwrap_or_else(|p| p.into_inner()) = custom.clone();
        let states: Vec<(String, Arc<TenantQuota>)> =
            self.inner.tenants.read().unwrap_or_else(|p| p.into_inner()).iter().map(|(id, s)| (id.clone(), s.clone())).collect();
        for (id, state) in states {
            let want = match custom.get(&id) {
                Some(q) => (*q, true),
                None => (tier(&id).default_quota(), false),
            };
            Self::apply(&state, want, now_secs);
        }
        Ok(())
    }

    /// Admission checks of the quota (the scheduler checks concurrency): a CPU window
    /// with nothing left is refused until it ends. The invocation may burn what is left
    /// (at most the sandbox's fuel) and is charged what it burned; invocations running
    /// at once each see the same remainder, so a window can be overdrawn by at most
    /// `max_concurrent_tasks - 1` invocations' fuel — reserving instead would let one
    /// invocation lock its tenant's whole window.
    pub(crate) fn admit(&self, tenant: &str, tier: Tier, now_secs: u64) -> Result<Admitted, Refusal> {
        let state = self.tenant(tenant, tier, now_secs);
        let q = state.quota();
        let (cpu, cpu_ends) = state.cpu.at(now_secs, q.window_seconds, q.cpu_fuel());
        let fuel = cpu.left().min(self.inner.sandbox_fuel);
        if fuel == 0 {
            return Err(Refusal {
                resource: Resource::Cpu,
                message: format!(
                    "tenant {tenant} has used its CPU quota of {} s for this {} s window; retry after {} s or ask for a larger max_cpu_seconds",
                    q.max_cpu_seconds,
                    q.window_seconds,
                    cpu_ends.saturating_sub(now_secs)
                ),
                retry_after_secs: cpu_ends.saturating_sub(now_secs).max(1),
            });
        }
        let (network, _) = state.network.at(now_secs, q.window_seconds, q.network_bytes());
        Ok(Admitted {
            limits: Limits {
                memory_bytes: usize::try_from(q.memory_bytes()).ok(),
                fuel: Some(fuel),
                network: Some(network),
                weight: tier.weight(),
            },
            share: Share { weight: tier.weight(), max_concurrent: self.node_share(q.max_concurrent_tasks), max_queued: self.inner.max_queued },
            cpu,
        })
    }

    /// This node's part of a tenant's concurrency limit: `ceil(limit / ready nodes)`, so
    /// the instance runs at most `limit + nodes - 1` of its invocations at once.
    fn node_share(&self, limit: u32) -> u32 {
        limit.div_ceil(self.inner.nodes.load(Ordering::Relaxed).max(1)).max(1)
    }

    /// Records how many nodes are ready (from membership).
    pub(crate) fn set_nodes(&self, ready: u32) {
        self.inner.nodes.store(ready.max(1), Ordering::Relaxed);
    }

    /// Seconds until the tenant's current window ends (the `Retry-After` of a rate quota).
    pub(crate) fn window_left(&self, tenant: &str, tier: Tier, now_secs: u64) -> u64 {
        let q = self.tenant(tenant, tier, now_secs).quota();
        let w = q.window_seconds.max(1);
        (w - now_secs % w).max(1)
    }

    /// Usage in the current window, for the admin API.
    pub(crate) fn usage(&self, tenant: &str, tier: Tier, now_secs: u64) -> (u64, u64, i64) {
        let state = self.tenant(tenant, tier, now_secs);
        let q = state.quota();
        let (cpu, _) = state.cpu.at(now_secs, q.window_seconds, q.cpu_fuel());
        let (net, _) = state.network.at(now_secs, q.window_seconds, q.network_bytes());
        (q.cpu_fuel().saturating_sub(cpu.left()), q.network_bytes().saturating_sub(net.left()), state.disk_bytes())
    }

    fn changed(&self, state: &TenantQuota) {
        state.disk_dirty.store(true, Ordering::Release);
        self.inner.flush.notify_one();
    }
}

/// Wraps the stores of a tenant's ports so every write is metered against its disk
/// quota. Replay never reaches these (it is served from the journal).
pub(crate) fn meter_ports(quotas: &Quotas, state: Arc<TenantQuota>, ports: PortSet) -> PortSet {
    let meter = DiskMeter { quotas: quotas.clone(), state };
    PortSet {
        records: Arc::new(Metered { inner: ports.records, meter: meter.clone() }),
        kv: Arc::new(Metered { inner: ports.kv, meter: meter.clone() }),
        events: Arc::new(Metered { inner: ports.events, meter: meter.clone() }),
        blobs: Arc::new(Metered { inner: ports.blobs, meter }),
        ..ports
    }
}

#[derive(Clone)]
struct DiskMeter {
    quotas: Quotas,
    state: Arc<TenantQuota>,
}

impl DiskMeter {
    /// Refuses a write that would grow usage past the quota (shrinking is always fine).
    fn check(&self, delta: i64) -> PortResult<()> {
        if delta <= 0 {
            return Ok(());
        }
        let limit = self.state.quota().disk_bytes() as i64;
        let used = self.state.disk_bytes();
        if used.saturating_add(delta) > limit {
            return Err(PortError::QuotaExceeded(format!(
                "this write of {delta} bytes would take the tenant past its disk quota of {} MB ({used} bytes in use); delete data or ask for a larger max_disk_mb",
                limit >> 20
            )));
        }
        Ok(())
    }

    fn add(&self, delta: i64) {
        if delta != 0 {
            self.state.disk_bytes.fetch_add(delta, Ordering::AcqRel);
            self.state.disk_unsynced.fetch_add(delta, Ordering::AcqRel);
            self.quotas.changed(&self.state);
        }
    }
}

struct Metered<T: ?Sized> {
    inner: Arc<T>,
    meter: DiskMeter,
}

fn len(s: &str) -> i64 {
    s.len() as i64
}

#[async_trait]
impl RecordStore for Metered<dyn RecordStore> {
    async fn put(&self, tenant: &TenantId, collection: &str, id: &str, body: &str, expected_revision: Option<u64>) -> PortResult<Record> {
        let old = self.inner.get(tenant, collection, id).await?.map_or(0, |r| len(&r.id) + len(&r.body));
        let delta = len(id) + len(body) - old;
        self.meter.check(delta)?;
        let r = self.inner.put(tenant, collection, id, body, expected_revision).await?;
        self.meter.add(delta);
        Ok(r)
    }

    async fn get(&self, tenant: &TenantId, collection: &str, id: &str) -> PortResult<Option<Record>> {
        self.inner.get(tenant, collection, id).await
    }

    async fn delete(&self, tenant: &TenantId, collection: &str, id: &str, expected_revision: Option<u64>) -> PortResult<bool> {
        let old = self.inner.get(tenant, collection, id).await?.map_or(0, |r| len(&r.id) + len(&r.body));
        let deleted = self.inner.delete(tenant, collection, id, expected_revision).await?;
        if deleted {
            self.meter.add(-old);
        }
        Ok(deleted)
    }

    async fn query(&self, tenant: &TenantId, collection: &str, filters: &[Filter], limit: u32, cursor: Option<&str>) -> PortResult<Page> {
        self.inner.query(tenant, collection, filters, limit, cursor).await
    }
}

#[async_trait]
impl KeyValueStore for Metered<dyn KeyValueStore> {
    async fn get(&self, tenant: &TenantId, bucket: &str, key: &str) -> PortResult<Option<Vec<u8>>> {
        self.inner.get(tenant, bucket, key).await
    }

    async fn set(&self, tenant: &TenantId, bucket: &str, key: &str, value: &[u8]) -> PortResult<()> {
        let old = self.inner.get(tenant, bucket, key).await?.map_or(0, |v| len(key) + v.len() as i64);
        let delta = len(key) + value.len() as i64 - old;
        self.meter.check(delta)?;
        self.inner.set(tenant, bucket, key, value).await?;
        self.meter.add(delta);
        Ok(())
    }

    async fn delete(&self, tenant: &TenantId, bucket: &str, key: &str) -> PortResult<()> {
        let old = self.inner.get(tenant, bucket, key).await?.map_or(0, |v| len(key) + v.len() as i64);
        self.inner.delete(tenant, bucket, key).await?;
        self.meter.add(-old);
        Ok(())
    }

    async fn exists(&self, tenant: &TenantId, bucket: &str, key: &str) -> PortResult<bool> {
        self.inner.exists(tenant, bucket, key).await
    }

    async fn list_keys(&self, tenant: &TenantId, bucket: &str, cursor: Option<&str>) -> PortResult<KeyPage> {
        self.inner.list_keys(tenant, bucket, cursor).await
    }

    async fn increment(&self, tenant: &TenantId, bucket: &str, key: &str, delta: i64) -> PortResult<i64> {
        // A counter holds at most 20 digits: charge a new key its worst case.
        let new_key = !self.inner.exists(tenant, bucket, key).await?;
        let size = if new_key { len(key) + 20 } else { 0 };
        self.meter.check(size)?;
        let v = self.inner.increment(tenant, bucket, key, delta).await?;
        self.meter.add(size);
        Ok(v)
    }

    async fn compare_and_swap(&self, tenant: &TenantId, bucket: &str, key: &str, expected: Option<&[u8]>, new: &[u8]) -> PortResult<bool> {
        let old = expected.map_or(0, |v| len(key) + v.len() as i64);
        let delta = len(key) + new.len() as i64 - old;
        self.meter.check(delta)?;
        let swapped = self.inner.compare_and_swap(tenant, bucket, key, expected, new).await?;
        if swapped {
            self.meter.add(delta);
        }
        Ok(swapped)
    }
}

#[async_trait]
impl EventStore for Metered<dyn EventStore> {
    async fn append(&self, tenant: &TenantId, stream: &str, events: &[NewEvent], expected_version: Option<u64>) -> PortResult<u64> {
        let delta: i64 = events.iter().map(|e| len(stream) + len(&e.event_type) + len(&e.data)).sum();
        self.meter.check(delta)?;
        let v = self.inner.append(tenant, stream, events, expected_version).await?;
        self.meter.add(delta);
        Ok(v)
    }

    async fn read(&self, tenant: &TenantId, stream: &str, from: u64, limit: u32) -> PortResult<Vec<StoredEvent>> {
        self.inner.read(tenant, stream, from, limit).await
    }
}

#[async_trait]
impl BlobStore for Metered<dyn BlobStore> {
    async fn put(&self, tenant: &TenantId, container: &str, name: &str, data: Vec<u8>, content_type: Option<&str>) -> PortResult<ObjectMeta> {
        let old = self.inner.metadata(tenant, container, name).await?.map_or(0, |m| len(name) + m.size as i64);
        let delta = len(name) + data.len() as i64 - old;
        self.meter.check(delta)?;
        let meta = self.inner.put(tenant, container, name, data, content_type).await?;
        self.meter.add(delta);
        Ok(meta)
    }

    async fn get(&self, tenant: &TenantId, container: &str, name: &str, range: Option<(u64, u64)>) -> PortResult<Option<Vec<u8>>> {
        self.inner.get(tenant, container, name, range).await
    }

    async fn delete(&self, tenant: &TenantId, container: &str, name: &str) -> PortResult<bool> {
        let old = self.inner.metadata(tenant, container, name).await?.map_or(0, |m| len(name) + m.size as i64);
        let deleted = self.inner.delete(tenant, container, name).await?;
        if deleted {
            self.meter.add(-old);
        }
        Ok(deleted)
    }

    async fn list(&self, tenant: &TenantId, container: &str, prefix: &str) -> PortResult<Vec<ObjectMeta>> {
        self.inner.list(tenant, container, prefix).await
    }

    async fn metadata(&self, tenant: &TenantId, container: &str, name: &str) -> PortResult<Option<ObjectMeta>> {
        self.inner.metadata(tenant, container, name).await
    }
}

/// The one loop that writes usage back to the control store: each tenant's disk-usage
/// change (coalesced: one transaction per burst of writes), and with a shared store,
/// every `every`, this node's use of each instance-wide CPU and network window, reading
/// back what the whole instance used and taking the others' part from the local
/// budgets. The slack: a node learns what the others used within one interval.
async fn share_usage(weak: std::sync::Weak<Inner>, every: Option<std::time::Duration>) {
    loop {
        let Some(inner) = weak.upgrade() else { return };
        let notified = inner.flush.clone();
        let notified = notified.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let states: Vec<(String, Arc<TenantQuota>)> =
            inner.tenants.read().unwrap_or_else(|p| p.into_inner()).iter().map(|(id, t)| (id.clone(), t.clone())).collect();
        let failed = sync_disk(&inner, &states, every.is_some()).await.is_err() || (every.is_some() && sync_windows(&inner, &states).await.is_err());
        drop(inner);
        match (failed, every) {
            (true, _) => tokio::time::sleep(std::time::Duration::from_secs(1)).await,
            (false, Some(every)) => {
                let _ = tokio::time::timeout(every, notified).await;
            }
            (false, None) => notified.await,
        }
    }
}

/// Adds disk-usage changes to the store and takes the instance's totals as the local
/// view (with a shared store, every tenant's; alone, the changed ones').
async fn sync_disk(inner: &Inner, states: &[(String, Arc<TenantQuota>)], all: bool) -> Result<(), ()> {
    let changed: Vec<(String, i64, &Arc<TenantQuota>)> = states
        .iter()
        .filter(|(_, t)| t.disk_dirty.swap(false, Ordering::AcqRel) || all)
        .map(|(id, t)| (id.clone(), t.disk_unsynced.swap(0, Ordering::AcqRel), t))
        .collect();
    if changed.is_empty() {
        return Ok(());
    }
    let deltas: Vec<(String, i64)> = changed.iter().map(|(id, d, _)| (id.clone(), *d)).collect();
    match inner.control.add_disk_usage(&deltas).await {
        Ok(totals) => {
            for ((_, _, t), total) in changed.iter().zip(totals) {
                t.disk_bytes.store(total + t.disk_unsynced.load(Ordering::Acquire), Ordering::Release);
            }
            Ok(())
        }
        Err(e) => {
            tracing::error!(error = %e, "could not persist disk usage; retrying");
            for (_, d, t) in &changed {
                t.disk_unsynced.fetch_add(*d, Ordering::AcqRel);
                t.disk_dirty.store(true, Ordering::Release);
            }
            Err(())
        }
    }
}

/// Reports this node's use of every current window and charges the others' use.
async fn sync_windows(inner: &Inner, states: &[(String, Arc<TenantQuota>)]) -> Result<(), ()> {
    let mut uses = Vec::new();
    let mut slots = Vec::new();
    for (id, t) in states {
        for (resource, window, sync) in [("cpu", &t.cpu, &t.cpu_sync), ("network", &t.network, &t.network_sync)] {
            let (start, budget) = window.current();
            let mut guard = sync.lock().unwrap_or_else(|p| p.into_inner());
            let s = match guard.as_mut() {
                Some(s) if s.start == start => {
                    if !Arc::ptr_eq(&s.budget, &budget) {
                        // A resize replaced the budget; it already holds what was used.
                        s.base_own = s.reported;
                        s.budget = budget.clone();
                    }
                    s
                }
                _ => guard.insert(WindowSync { start, budget: budget.clone(), base_own: 0, reported: 0, applied: 0 }),
            };
            let own = s.base_own + budget.drawn();
            let delta = own.saturating_sub(s.reported);
            uses.push((id.clone(), resource, start, delta));
            slots.push((sync, start, delta));
        }
    }
    if uses.is_empty() {
        return Ok(());
    }
    let totals = inner.control.add_window_usage(&uses).await.map_err(|e| tracing::warn!(error = %e, "could not share quota windows with the instance; retrying"))?;
    for ((sync, start, delta), total) in slots.into_iter().zip(totals) {
        let mut guard = sync.lock().unwrap_or_else(|p| p.into_inner());
        let Some(s) = guard.as_mut().filter(|s| s.start == start) else { continue };
        s.reported += delta;
        let others = total.saturating_sub(s.reported);
        let charge = others.saturating_sub(s.applied);
        s.budget.charge_elsewhere(charge);
        s.applied += charge;
    }
    Ok(())
}
