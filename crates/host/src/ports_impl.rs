//! Binds the WIT port imports to the tenant's [`runplane_ports::PortSet`].
//!
//! Every function counts against the invocation's port-call limit, goes through the
//! invocation's [`crate::journal::Journal`] (recorded, or served back on replay), converts between
//! WIT and Rust types, canonicalises JSON bodies (so every adapter stores the same
//! bytes) and passes the invocation's tenant — which the capability never sees.

use runplane_ports as ports;
use wasmtime::component::{Linker, Resource};

use crate::state::{InvocationState, Ports};

pub(crate) mod bindings {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "runplane:ports/host",
        imports: { default: async | trappable },
        exports: { default: async },
        require_store_data_send: true,
        with: {
            "wasi:io": wasmtime_wasi::p2::bindings::io,
            "wasi:clocks": wasmtime_wasi::p2::bindings::clocks,
            "wasi:http": wasmtime_wasi_http::p2::bindings::http,
            "wasi:keyvalue/store.bucket": super::KvBucket,
            "wasi:keyvalue/atomics.cas": super::KvCas,
        },
    });
}

use bindings::runplane::ports::{blobs, events, messaging, records, secrets, telemetry, types};
use bindings::wasi::{config, keyvalue, logging};

/// A `wasi:keyvalue` bucket opened by the capability.
pub struct KvBucket {
    name: String,
}

/// A pending compare-and-swap: the value seen when it was created.
pub struct KvCas {
    bucket: String,
    key: String,
    seen: Option<Vec<u8>>,
}

/// Largest JSON document a capability may store through the records or events port.
const MAX_JSON_BYTES: usize = 1 << 20;

pub(crate) fn add_to_linker(linker: &mut Linker<InvocationState>) -> wasmtime::Result<()> {
    fn get(s: &mut InvocationState) -> &mut InvocationState {
        s
    }
    types::add_to_linker::<_, Ports>(linker, get)?;
    records::add_to_linker::<_, Ports>(linker, get)?;
    events::add_to_linker::<_, Ports>(linker, get)?;
    messaging::add_to_linker::<_, Ports>(linker, get)?;
    blobs::add_to_linker::<_, Ports>(linker, get)?;
    secrets::add_to_linker::<_, Ports>(linker, get)?;
    telemetry::add_to_linker::<_, Ports>(linker, get)?;
    keyvalue::store::add_to_linker::<_, Ports>(linker, get)?;
    keyvalue::atomics::add_to_linker::<_, Ports>(linker, get)?;
    keyvalue::batch::add_to_linker::<_, Ports>(linker, get)?;
    config::store::add_to_linker::<_, Ports>(linker, get)?;
    logging::logging::add_to_linker::<_, Ports>(linker, get)?;
    Ok(())
}

type PortResult<T> = wasmtime::Result<Result<T, types::PortError>>;

/// The WIT form of a port error. Its text is already neutral (adapters log their
/// detail); a full backend reaches the capability as `unavailable` with the
/// storage-full reason, since the WIT variant is part of every capability's interface.
fn to_wit(e: ports::PortError) -> types::PortError {
    match e {
        ports::PortError::NotFound(m) => types::PortError::NotFound(m),
        ports::PortError::Conflict(m) => types::PortError::Conflict(m),
        ports::PortError::QuotaExceeded(m) => types::PortError::QuotaExceeded(m),
        ports::PortError::Unavailable(m) | ports::PortError::StorageFull(m) => types::PortError::Unavailable(m),
        ports::PortError::Invalid(m) => types::PortError::Invalid(m),
    }
}

fn kv_err(e: ports::PortError) -> keyvalue::store::Error {
    match e {
        ports::PortError::NotFound(_) => keyvalue::store::Error::NoSuchStore,
        other => keyvalue::store::Error::Other(other.to_string()),
    }
}

/// Bounds a backend call: past `limit` it fails with `unavailable`, whatever the
/// adapter's own timeouts, so a silent backend never holds an invocation.
///
/// The invocation's CPU turn is given back while it waits, and a quota the backend
/// reports (the tenant's disk) is noted on the invocation's meter.
async fn bounded<T>(io: &crate::limits::PortIo, call: impl Future<Output = Result<T, ports::PortError>>) -> Result<T, ports::PortError> {
    io.cpu.release();
    let result = match tokio::time::timeout(io.timeout, call).await {
        Ok(r) => r,
        Err(_) => {
            let ms = io.timeout.as_millis();
            tracing::warn!(target: ports::LOG_TARGET, timeout_ms = ms as u64, "a port backend did not answer in time (port_timeout_ms)");
            Err(ports::PortError::Unavailable(format!("the backend did not answer within {ms} ms; retry later")))
        }
    };
    io.cpu.acquire().await;
    if let Err(ports::PortError::QuotaExceeded(m)) = &result {
        io.meter.violate(runplane_tenancy::Resource::Disk, m.clone());
    }
    result
}

/// Parses `text` as JSON and returns its canonical form.
fn canonical(what: &str, text: &str) -> Result<String, types::PortError> {
    if text.len() > MAX_JSON_BYTES {
        return Err(types::PortError::Invalid(format!(
            "{what} is {} bytes; the limit is {MAX_JSON_BYTES}",
            text.len()
        )));
    }
    runplane_cjson::parse_canonical(text).map_err(|e| types::PortError::Invalid(format!("{what}: {e}")))
}

fn record_to_wit(r: ports::Record) -> records::Record {
    records::Record { collection: r.collection, id: r.id, revision: r.revision, body: r.body }
}

fn meta_to_wit(m: ports::ObjectMeta) -> blobs::ObjectMeta {
    blobs::ObjectMeta {
        container: m.container,
        name: m.name,
        size: m.size,
        content_type: m.content_type,
        digest: m.digest,
    }
}

impl types::Host for InvocationState {}

impl records::Host for InvocationState {
    async fn put(
        &mut self,
        collection: String,
        id: String,
        body: String,
        expected_revision: Option<u64>,
    ) -> PortResult<records::Record> {
        self.count_call()?;
        let body = match canonical("record body", &body) {
            Ok(b) => b,
            Err(e) => return Ok(Err(e)),
        };
        let r = self.journal.observe("records.put", &(&collection, &id, &body, expected_revision), bounded(&self.io, self.ports.records.put(&self.context.tenant, &collection, &id, &body, expected_revision))).await?;
        Ok(r.map(record_to_wit).map_err(to_wit))
    }

    async fn get(&mut self, collection: String, id: String) -> PortResult<Option<records::Record>> {
        self.count_call()?;
        let r = self.journal.observe("records.get", &(&collection, &id), bounded(&self.io, self.ports.records.get(&self.context.tenant, &collection, &id))).await?;
        Ok(r.map(|o| o.map(record_to_wit)).map_err(to_wit))
    }

    async fn delete(&mut self, collection: String, id: String, expected_revision: Option<u64>) -> PortResult<bool> {
        self.count_call()?;
        let r = self.journal.observe("records.delete", &(&collection, &id, expected_revision), bounded(&self.io, self.ports.records.delete(&self.context.tenant, &collection, &id, expected_revision))).await?;
        Ok(r.map_err(to_wit))
    }

    async fn query(
        &mut self,
        collection: String,
        filters: Vec<records::Filter>,
        limit: u32,
        cursor: Option<String>,
    ) -> PortResult<records::Page> {
        self.count_call()?;
        let mut parsed = Vec::with_capacity(filters.len());
        for f in filters {
            match serde_json::from_str(&f.value) {
                Ok(value) => parsed.push(ports::Filter { field: f.field, value }),
                Err(e) => {
                    return Ok(Err(types::PortError::Invalid(format!(
                        "filter value for field {:?} is not JSON: {e}",
                        f.field
                    ))));
                }
            }
        }
        let args = (&collection, parsed.iter().map(|f| (&f.field, &f.value)).collect::<Vec<_>>(), limit, &cursor);
        let r = self.journal.observe("records.query", &args, bounded(&self.io, self.ports.records.query(&self.context.tenant, &collection, &parsed, limit, cursor.as_deref()))).await?;
        Ok(r.map(|p| records::Page { items: p.items.into_iter().map(record_to_wit).collect(), next_cursor: p.next_cursor })
            .map_err(to_wit))
    }
}

impl events::Host for InvocationState {
    async fn append(
        &mut self,
        stream: String,
        new_events: Vec<events::NewEvent>,
        expected_version: Option<u64>,
    ) -> PortResult<u64> {
        self.count_call()?;
        let mut batch = Vec::with_capacity(new_events.len());
        for e in new_events {
            match canonical("event data", &e.data) {
                Ok(data) => batch.push(ports::NewEvent { event_type: e.event_type, data }),
                Err(err) => return Ok(Err(err)),
            }
        }
        let args = (&stream, batch.iter().map(|e| (&e.event_type, &e.data)).collect::<Vec<_>>(), expected_version);
        let r = self.journal.observe("events.append", &args, bounded(&self.io, self.ports.events.append(&self.context.tenant, &stream, &batch, expected_version))).await?;
        Ok(r.map_err(to_wit))
    }

    async fn read(&mut self, stream: String, from: u64, limit: u32) -> PortResult<Vec<events::StoredEvent>> {
        self.count_call()?;
        let r = self.journal.observe("events.read", &(&stream, from, limit), bounded(&self.io, self.ports.events.read(&self.context.tenant, &stream, from, limit))).await?;
        Ok(r.map(|v| {
            v.into_iter()
                .map(|e| events::StoredEvent { stream: e.stream, version: e.version, event_type: e.event_type, data: e.data })
                .collect()
        })
        .map_err(to_wit))
    }
}

impl messaging::Host for InvocationState {
    async fn publish(&mut self, topic: String, payload: Vec<u8>, headers: Vec<(String, String)>) -> PortResult<()> {
        self.count_call()?;
        let args = (&topic, runplane_cjson::sha256_hex(&payload), headers.clone());
        let r = self.journal.observe("messaging.publish", &args, bounded(&self.io, self.ports.messaging.publish(&self.context.tenant, &topic, ports::Message { payload, headers }))).await?;
        Ok(r.map_err(to_wit))
    }
}

impl blobs::Host for InvocationState {
    async fn put(
        &mut self,
        container: String,
        name: String,
        data: Vec<u8>,
        content_type: Option<String>,
    ) -> PortResult<blobs::ObjectMeta> {
        self.count_call()?;
        let args = (&container, &name, runplane_cjson::sha256_hex(&data), &content_type);
        let r = self.journal.observe("blobs.put", &args, bounded(&self.io, self.ports.blobs.put(&self.context.tenant, &container, &name, data, content_type.as_deref()))).await?;
        Ok(r.map(meta_to_wit).map_err(to_wit))
    }

    async fn get(&mut self, container: String, name: String, range: Option<(u64, u64)>) -> PortResult<Option<Vec<u8>>> {
        self.count_call()?;
        let r = self.journal.observe("blobs.get", &(&container, &name, range), bounded(&self.io, self.ports.blobs.get(&self.context.tenant, &container, &name, range))).await?;
        Ok(r.map_err(to_wit))
    }

    async fn delete(&mut self, container: String, name: String) -> PortResult<bool> {
        self.count_call()?;
        Ok(self.journal.observe("blobs.delete", &(&container, &name), bounded(&self.io, self.ports.blobs.delete(&self.context.tenant, &container, &name))).await?.map_err(to_wit))
    }

    async fn list(&mut self, container: String, prefix: String) -> PortResult<Vec<blobs::ObjectMeta>> {
        self.count_call()?;
        let r = self.journal.observe("blobs.list", &(&container, &prefix), bounded(&self.io, self.ports.blobs.list(&self.context.tenant, &container, &prefix))).await?;
        Ok(r.map(|v| v.into_iter().map(meta_to_wit).collect()).map_err(to_wit))
    }

    async fn metadata(&mut self, container: String, name: String) -> PortResult<Option<blobs::ObjectMeta>> {
        self.count_call()?;
        let r = self.journal.observe("blobs.metadata", &(&container, &name), bounded(&self.io, self.ports.blobs.metadata(&self.context.tenant, &container, &name))).await?;
        Ok(r.map(|o| o.map(meta_to_wit)).map_err(to_wit))
    }
}

impl secrets::Host for InvocationState {
    async fn get(&mut self, name: String) -> PortResult<Vec<u8>> {
        self.count_call()?;
        // The value itself is never journaled: only its digest, checked again on replay.
        let fingerprint = |r: &Result<ports::SecretValue, ports::PortError>| match r {
            Ok(v) => serde_json::json!({ "Ok": runplane_cjson::sha256_hex(v.expose()) }),
            Err(e) => serde_json::json!({ "Err": e }),
        };
        let read = bounded(&self.io, self.ports.secrets.get(&self.context.tenant, &name));
        match self.journal.observe_private("secrets.get", &&name, read, fingerprint).await? {
            Ok(value) => {
                let bytes = value.expose().to_vec();
                self.revealed.push(bytes.clone());
                Ok(Ok(bytes))
            }
            Err(e) => Ok(Err(to_wit(e))),
        }
    }
}

impl telemetry::Host for InvocationState {
    async fn counter(&mut self, name: String, delta: u64, labels: Vec<(String, String)>) -> wasmtime::Result<()> {
        self.count_call()?;
        if !self.journal.is_replay() {
            self.ports.telemetry.counter(&self.telemetry_scope, &name, delta, &labels);
        }
        Ok(())
    }

    async fn histogram(&mut self, name: String, value: f64, labels: Vec<(String, String)>) -> wasmtime::Result<()> {
        self.count_call()?;
        if !self.journal.is_replay() {
            self.ports.telemetry.histogram(&self.telemetry_scope, &name, value, &labels);
        }
        Ok(())
    }
}

impl logging::logging::Host for InvocationState {
    async fn log(&mut self, level: logging::logging::Level, context: String, message: String) -> wasmtime::Result<()> {
        self.count_call()?;
        use logging::logging::Level as L;
        let level = match level {
            L::Trace => ports::Level::Trace,
            L::Debug => ports::Level::Debug,
            L::Info => ports::Level::Info,
            L::Warn => ports::Level::Warn,
            L::Error => ports::Level::Error,
            L::Critical => ports::Level::Critical,
        };
        let message = self.redact(&message);
        if !self.journal.is_replay() {
            self.ports.telemetry.log(&self.telemetry_scope, level, &context, &message);
        }
        Ok(())
    }
}

impl config::store::Host for InvocationState {
    async fn get(&mut self, key: String) -> wasmtime::Result<Result<Option<String>, config::store::Error>> {
        self.count_call()?;
        let value = self.ports.config.get(&self.context.tenant, &self.context.capability, &key);
        Ok(Ok(self.journal.observe("config.get", &&key, async { value }).await?))
    }

    async fn get_all(&mut self) -> wasmtime::Result<Result<Vec<(String, String)>, config::store::Error>> {
        self.count_call()?;
        let all = self.ports.config.get_all(&self.context.tenant, &self.context.capability);
        Ok(Ok(self.journal.observe("config.get-all", &(), async { all }).await?))
    }
}

type KvResult<T> = wasmtime::Result<Result<T, keyvalue::store::Error>>;

impl InvocationState {
    fn bucket_name(&mut self, bucket: &Resource<KvBucket>) -> wasmtime::Result<String> {
        Ok(self.table().get(bucket)?.name.clone())
    }
}

impl keyvalue::store::Host for InvocationState {
    async fn open(&mut self, identifier: String) -> KvResult<Resource<KvBucket>> {
        self.count_call()?;
        if let Err(e) = ports::validate_name("bucket", &identifier, 128) {
            return Ok(Err(kv_err(e)));
        }
        Ok(Ok(self.table().push(KvBucket { name: identifier })?))
    }
}

impl keyvalue::store::HostBucket for InvocationState {
    async fn get(&mut self, bucket: Resource<KvBucket>, key: String) -> KvResult<Option<Vec<u8>>> {
        self.count_call()?;
        let name = self.bucket_name(&bucket)?;
        Ok(self.journal.observe("kv.get", &(&name, &key), bounded(&self.io, self.ports.kv.get(&self.context.tenant, &name, &key))).await?.map_err(kv_err))
    }

    async fn set(&mut self, bucket: Resource<KvBucket>, key: String, value: Vec<u8>) -> KvResult<()> {
        self.count_call()?;
        let name = self.bucket_name(&bucket)?;
        let args = (&name, &key, runplane_cjson::sha256_hex(&value));
        Ok(self.journal.observe("kv.set", &args, bounded(&self.io, self.ports.kv.set(&self.context.tenant, &name, &key, &value))).await?.map_err(kv_err))
    }

    async fn delete(&mut self, bucket: Resource<KvBucket>, key: String) -> KvResult<()> {
        self.count_call()?;
        let name = self.bucket_name(&bucket)?;
        Ok(self.journal.observe("kv.delete", &(&name, &key), bounded(&self.io, self.ports.kv.delete(&self.context.tenant, &name, &key))).await?.map_err(kv_err))
    }

    async fn exists(&mut self, bucket: Resource<KvBucket>, key: String) -> KvResult<bool> {
        self.count_call()?;
        let name = self.bucket_name(&bucket)?;
        Ok(self.journal.observe("kv.exists", &(&name, &key), bounded(&self.io, self.ports.kv.exists(&self.context.tenant, &name, &key))).await?.map_err(kv_err))
    }

    async fn list_keys(&mut self, bucket: Resource<KvBucket>, cursor: Option<String>) -> KvResult<keyvalue::store::KeyResponse> {
        self.count_call()?;
        let name = self.bucket_name(&bucket)?;
        let r = self.journal.observe("kv.list-keys", &(&name, &cursor), bounded(&self.io, self.ports.kv.list_keys(&self.context.tenant, &name, cursor.as_deref()))).await?;
        Ok(r.map(|p| keyvalue::store::KeyResponse { keys: p.keys, cursor: p.cursor }).map_err(kv_err))
    }

    async fn drop(&mut self, bucket: Resource<KvBucket>) -> wasmtime::Result<()> {
        self.table().delete(bucket)?;
        Ok(())
    }
}

impl keyvalue::atomics::Host for InvocationState {
    async fn increment(&mut self, bucket: Resource<KvBucket>, key: String, delta: i64) -> KvResult<i64> {
        self.count_call()?;
        let name = self.bucket_name(&bucket)?;
        Ok(self.journal.observe("kv.increment", &(&name, &key, delta), bounded(&self.io, self.ports.kv.increment(&self.context.tenant, &name, &key, delta))).await?.map_err(kv_err))
    }

    async fn swap(
        &mut self,
        cas: Resource<KvCas>,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), keyvalue::atomics::CasError>> {
        self.count_call()?;
        let (bucket, key, seen) = {
            let c = self.table().get(&cas)?;
            (c.bucket.clone(), c.key.clone(), c.seen.clone())
        };
        let args = (&bucket, &key, seen.as_deref().map(runplane_cjson::sha256_hex), runplane_cjson::sha256_hex(&value));
        let swapped = bounded(&self.io, self.ports.kv.compare_and_swap(&self.context.tenant, &bucket, &key, seen.as_deref(), &value));
        match self.journal.observe("kv.compare-and-swap", &args, swapped).await? {
            Ok(true) => {
                self.table().delete(cas)?;
                Ok(Ok(()))
            }
            Ok(false) => {
                // Hand the capability a fresh CAS holding the current value, so it can retry.
                let current = self.journal.observe("kv.get", &(&bucket, &key), bounded(&self.io, self.ports.kv.get(&self.context.tenant, &bucket, &key))).await?;
                match current {
                    Ok(now) => {
                        self.table().get_mut(&cas)?.seen = now;
                        Ok(Err(keyvalue::atomics::CasError::CasFailed(cas)))
                    }
                    Err(e) => Ok(Err(keyvalue::atomics::CasError::StoreError(kv_err(e)))),
                }
            }
            Err(e) => Ok(Err(keyvalue::atomics::CasError::StoreError(kv_err(e)))),
        }
    }
}

impl keyvalue::atomics::HostCas for InvocationState {
    async fn new(&mut self, bucket: Resource<KvBucket>, key: String) -> KvResult<Resource<KvCas>> {
        self.count_call()?;
        let name = self.bucket_name(&bucket)?;
        match self.journal.observe("kv.get", &(&name, &key), bounded(&self.io, self.ports.kv.get(&self.context.tenant, &name, &key))).await? {
            Ok(seen) => Ok(Ok(self.table().push(KvCas { bucket: name, key, seen })?)),
            Err(e) => Ok(Err(kv_err(e))),
        }
    }

    async fn current(&mut self, cas: Resource<KvCas>) -> KvResult<Option<Vec<u8>>> {
        Ok(Ok(self.table().get(&cas)?.seen.clone()))
    }

    async fn drop(&mut self, cas: Resource<KvCas>) -> wasmtime::Result<()> {
        self.table().delete(cas)?;
        Ok(())
    }
}

impl keyvalue::batch::Host for InvocationState {
    async fn get_many(
        &mut self,
        bucket: Resource<KvBucket>,
        keys: Vec<String>,
    ) -> KvResult<Vec<(String, Option<Vec<u8>>)>> {
        let name = self.bucket_name(&bucket)?;
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            self.count_call()?;
            match self.journal.observe("kv.get", &(&name, &key), bounded(&self.io, self.ports.kv.get(&self.context.tenant, &name, &key))).await? {
                Ok(v) => out.push((key, v)),
                Err(e) => return Ok(Err(kv_err(e))),
            }
        }
        Ok(Ok(out))
    }

    async fn set_many(&mut self, bucket: Resource<KvBucket>, key_values: Vec<(String, Vec<u8>)>) -> KvResult<()> {
        let name = self.bucket_name(&bucket)?;
        for (key, value) in key_values {
            self.count_call()?;
            let args = (&name, &key, runplane_cjson::sha256_hex(&value));
            if let Err(e) = self.journal.observe("kv.set", &args, bounded(&self.io, self.ports.kv.set(&self.context.tenant, &name, &key, &value))).await? {
                return Ok(Err(kv_err(e)));
            }
        }
        Ok(Ok(()))
    }

    async fn delete_many(&mut self, bucket: Resource<KvBucket>, keys: Vec<String>) -> KvResult<()> {
        let name = self.bucket_name(&bucket)?;
        for key in keys {
            self.count_call()?;
            if let Err(e) = self.journal.observe("kv.delete", &(&name, &key), bounded(&self.io, self.ports.kv.delete(&self.context.tenant, &name, &key))).await? {
                return Ok(Err(kv_err(e)));
            }
        }
        Ok(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_capability_sees_only_the_kind_and_the_neutral_reason() {
        let detail = "Generic LocalFileSystem error: Unable to copy data to file: No space left on device (os error 28)";
        let full = to_wit(ports::PortError::storage_full("blob store", detail));
        assert!(matches!(&full, types::PortError::Unavailable(m) if m == ports::STORAGE_FULL), "{full:?}");
        let down = to_wit(ports::PortError::unavailable("sqlite", "disk I/O error"));
        assert!(matches!(&down, types::PortError::Unavailable(m) if m == ports::UNAVAILABLE), "{down:?}");
        assert!(matches!(kv_err(ports::PortError::storage_full("sqlite", detail)), keyvalue::store::Error::Other(m) if !m.contains("os error")));
    }
}
