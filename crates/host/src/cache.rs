//! Compiled components, cached by digest: in memory for the node's lifetime and on
//! disk across restarts (keyed by digest and engine configuration, so a changed engine
//! never loads stale machine code).

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};
use tokio::sync::OnceCell;
use wasmtime::component::{Component, InstancePre, Linker};
use wasmtime::Engine;
use wasmtime_wasi_http::p2::bindings::ProxyPre;

use crate::ports_impl::bindings::exports::runplane::ports::{message_handler, task};
use crate::state::InvocationState;
use crate::{Exports, HostError};

/// A component compiled and pre-instantiated, ready to invoke.
pub struct LoadedCapability {
    /// `name@version`.
    pub name: String,
    /// Lowercase hex SHA-256 of the component bytes.
    pub digest: String,
    pub exports: Exports,
    pub(crate) pre: InstancePre<InvocationState>,
    pub(crate) proxy: Option<ProxyPre<InvocationState>>,
    pub(crate) task: Option<task::GuestIndices>,
    pub(crate) message: Option<message_handler::GuestIndices>,
    /// Whether its last invocation proved CPU-bound: the next one then starts on the
    /// sandbox's threads rather than on the caller's ([`crate::SandboxConfig::inline_light_guests`]).
    pub(crate) cpu_bound_last: std::sync::atomic::AtomicBool,
}

impl LoadedCapability {
    /// Whether its last invocation proved CPU-bound (gave a whole CPU turn up), so that
    /// the next one starts on the sandbox's threads rather than on the caller's.
    pub fn last_was_cpu_bound(&self) -> bool {
        self.cpu_bound_last.load(std::sync::atomic::Ordering::Relaxed)
    }
}

type Slot = Arc<OnceCell<Arc<LoadedCapability>>>;

pub(crate) struct ComponentCache {
    dir: PathBuf,
    engine_key: String,
    loaded: Mutex<HashMap<String, Slot>>,
}

impl ComponentCache {
    pub(crate) fn new(dir: PathBuf, engine: &Engine) -> Result<Self, HostError> {
        std::fs::create_dir_all(&dir)
            .map_err(|source| HostError::Cache { path: dir.display().to_string(), source })?;
        let mut h = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut h);
        Ok(ComponentCache { dir, engine_key: format!("{:016x}", h.finish()), loaded: Mutex::new(HashMap::new()) })
    }

    pub(crate) async fn load(
        &self,
        engine: &Engine,
        linker: &Linker<InvocationState>,
        name: &str,
        digest: &str,
        bytes: &[u8],
    ) -> Result<Arc<LoadedCapability>, HostError> {
        let slot = {
            let mut map = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
            map.entry(digest.to_owned()).or_default().clone()
        };
        slot.get_or_try_init(|| self.compile(engine, linker, name, digest, bytes)).await.cloned()
    }

    async fn compile(
        &self,
        engine: &Engine,
        linker: &Linker<InvocationState>,
        name: &str,
        digest: &str,
        bytes: &[u8],
    ) -> Result<Arc<LoadedCapability>, HostError> {
        let actual = hex::encode(Sha256::digest(bytes));
        if actual != digest {
            return Err(HostError::NotAComponent {
                name: name.to_owned(),
                reason: format!("its SHA-256 is {actual}, expected {digest}"),
            });
        }
        let path = self.dir.join(format!("{digest}.{}.cwasm", self.engine_key));
        let component = match self.read_cached(engine, &path) {
            Some(c) => c,
            None => {
                let engine2 = engine.clone();
                let owned = bytes.to_vec();
                let component = tokio::task::spawn_blocking(move || Component::new(&engine2, &owned))
                    .await
                    .map_err(|e| HostError::Engine(wasmtime::Error::msg(e.to_string())))?
                    .map_err(HostError::Engine)?;
                self.write_cached(&component, &path);
                component
            }
        };
        let pre = linker.instantiate_pre(&component).map_err(HostError::Engine)?;
        let proxy = ProxyPre::new(pre.clone()).ok();
        let task = task::GuestIndices::new(&pre).ok();
        let message = message_handler::GuestIndices::new(&pre).ok();
        let exports = Exports { http: proxy.is_some(), task: task.is_some(), message_handler: message.is_some() };
        Ok(Arc::new(LoadedCapability { name: name.to_owned(), digest: digest.to_owned(), exports, pre, proxy, task, message, cpu_bound_last: Default::default() }))
    }

    fn read_cached(&self, engine: &Engine, path: &std::path::Path) -> Option<Component> {
        if !path.exists() {
            return None;
        }
        // SAFETY: the file was written by `write_cached` into the node's own data
        // directory from `Component::serialize` of this engine configuration (the key
        // is in the file name); wasmtime also checks the header's compatibility.
        match unsafe { Component::deserialize_file(engine, path) } {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "ignoring unusable compiled-component cache entry");
                None
            }
        }
    }

    fn write_cached(&self, component: &Component, path: &std::path::Path) {
        let result = component.serialize().map_err(|e| std::io::Error::other(e.to_string())).and_then(|bytes| {
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, bytes)?;
            std::fs::rename(&tmp, path)
        });
        if let Err(e) = result {
            tracing::warn!(path = %path.display(), error = %e, "could not write compiled-component cache entry; will recompile after restart");
        }
    }
}
