//! [`EnvelopeSecrets`]: the secrets port over a store of sealed versions.

use std::sync::Arc;

use async_trait::async_trait;
use runplane_ports::{PortError, PortResult, SealedSecretStore, SecretInfo, SecretStore, SecretValue, TenantId};

use crate::envelope::{SecretContext, open, rewrap, seal};
use crate::{KeyRing, SharedKeyRing};

/// How often `put` retries when another writer took the next version number.
const PUT_ATTEMPTS: usize = 8;

/// Seals on `put`, opens on `get`, and re-wraps a version under the current KEK the
/// first time it is read after a rotation.
pub struct EnvelopeSecrets {
    store: Arc<dyn SealedSecretStore>,
    ring: SharedKeyRing,
}

impl EnvelopeSecrets {
    pub fn new(store: Arc<dyn SealedSecretStore>, ring: SharedKeyRing) -> Self {
        EnvelopeSecrets { store, ring }
    }

    fn ring(&self) -> Arc<KeyRing> {
        self.ring.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// One version's value (rotation keeps every version readable).
    pub async fn get_version(&self, tenant: &TenantId, name: &str, version: u64) -> PortResult<SecretValue> {
        let sealed = self
            .store
            .version(tenant, name, version)
            .await?
            .ok_or_else(|| PortError::NotFound(format!("secret {name} version {version}")))?;
        self.open(tenant, name, version, sealed.sealed).await
    }

    async fn open(&self, tenant: &TenantId, name: &str, version: u64, sealed: Vec<u8>) -> PortResult<SecretValue> {
        let ring = self.ring();
        let ctx = SecretContext { tenant: tenant.as_str(), name, version };
        let opened = open(&ring, &ctx, &sealed)?;
        if opened.kek != ring.current_id() {
            // Lazy re-wrap. Best effort: a failure here leaves a readable version under
            // the older KEK, and the next read tries again.
            if let Ok(Some(rewrapped)) = rewrap(&ring, &ctx, &sealed) {
                let _ = self.store.replace(tenant, name, version, &sealed, &rewrapped).await;
            }
        }
        Ok(SecretValue::new(opened.plaintext.to_vec()))
    }
}

#[async_trait]
impl SecretStore for EnvelopeSecrets {
    async fn get(&self, tenant: &TenantId, name: &str) -> PortResult<SecretValue> {
        let latest = self.store.latest(tenant, name).await?.ok_or_else(|| PortError::NotFound(format!("secret {name}")))?;
        self.open(tenant, name, latest.version, latest.sealed).await
    }

    async fn put(&self, tenant: &TenantId, name: &str, value: SecretValue) -> PortResult<u64> {
        for _ in 0..PUT_ATTEMPTS {
            let next = self.store.latest(tenant, name).await?.map_or(1, |v| v.version + 1);
            // The version is part of the associated data, so it is fixed before sealing
            // and the insert claims exactly that number.
            let sealed = seal(&self.ring(), &SecretContext { tenant: tenant.as_str(), name, version: next }, value.expose())?;
            match self.store.insert(tenant, name, next, &sealed).await {
                Ok(()) => return Ok(next),
                Err(PortError::Conflict(_)) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(PortError::Conflict(format!("secret {name} is being written by many writers at once; retry")))
    }

    async fn list(&self, tenant: &TenantId) -> PortResult<Vec<SecretInfo>> {
        self.store.list(tenant).await
    }
}
