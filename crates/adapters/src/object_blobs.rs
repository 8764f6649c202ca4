//! Blobs through `object_store`: on the local filesystem (the embedded default) or on
//! S3-compatible storage (AWS S3, MinIO, Ceph, moto, …). One layout for both.
//!
//! Layout under the root (a directory, or a bucket and optional key prefix): `data/<tenant>/<container>/<name>` holds the bytes and
//! `meta/<tenant>/<container>/<name>` a small JSON document with the content type and
//! digest. Every path is built here from a validated tenant id, container and name, so
//! a capability cannot name anything outside its tenant's prefix.

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use futures::TryStreamExt;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use runplane_ports::{BlobStore, ObjectMeta, PortError, PortResult, TenantId, validate_name};
use sha2::{Digest, Sha256};

/// Largest single object.
const MAX_OBJECT_BYTES: usize = 64 << 20;

/// Blob containers in a directory or an S3 bucket.
#[derive(Clone)]
pub struct ObjectBlobStore {
    store: Arc<dyn ObjectStore>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Meta {
    content_type: Option<String>,
    digest: String,
    size: u64,
}

/// Where an S3-compatible bucket is. Credentials, when absent, come from the usual
/// AWS environment and instance metadata.
#[derive(Clone)]
pub struct S3Settings {
    pub bucket: String,
    pub region: String,
    /// For S3-compatible servers (`http://127.0.0.1:9000`); `None` for AWS.
    pub endpoint: Option<String>,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    /// A key prefix inside the bucket (e.g. one per dedicated tenant).
    pub prefix: Option<String>,
    pub timeout: std::time::Duration,
}

impl std::fmt::Debug for S3Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Settings").field("bucket", &self.bucket).field("prefix", &self.prefix).finish_non_exhaustive()
    }
}

/// The port error for a failed `object_store` call. Its message names paths and URLs
/// (never credentials): it goes to the node's log only.
fn store_err(e: object_store::Error) -> PortError {
    if runplane_ports::is_storage_full(&e) {
        PortError::storage_full("blob store", e)
    } else {
        PortError::unavailable("blob store", e)
    }
}

impl ObjectBlobStore {
    /// Uses `root` (created if missing) as the store's root directory.
    pub fn open(root: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(root)?;
        let store = LocalFileSystem::new_with_prefix(root).map_err(std::io::Error::other)?;
        Ok(ObjectBlobStore { store: Arc::new(store) })
    }

    /// Blobs in an S3-compatible bucket (which must exist), under `settings.prefix`.
    pub fn open_s3(settings: &S3Settings) -> PortResult<Self> {
        use object_store::aws::AmazonS3Builder;
        use object_store::{ClientOptions, RetryConfig};
        let mut builder = AmazonS3Builder::new()
            .with_bucket_name(&settings.bucket)
            .with_region(&settings.region)
            .with_client_options(
                ClientOptions::new()
                    .with_timeout(settings.timeout)
                    .with_connect_timeout(settings.timeout)
                    .with_allow_http(settings.endpoint.as_deref().is_some_and(|e| e.starts_with("http://"))),
            )
            .with_retry(RetryConfig { max_retries: 2, retry_timeout: settings.timeout, ..Default::default() });
        if let Some(endpoint) = &settings.endpoint {
            builder = builder.with_endpoint(endpoint).with_virtual_hosted_style_request(false);
        }
        if let (Some(id), Some(secret)) = (&settings.access_key_id, &settings.secret_access_key) {
            builder = builder.with_access_key_id(id).with_secret_access_key(secret);
        }
        // Never the builder's error text: it can quote the configuration.
        let s3 = builder.build().map_err(|_| PortError::Invalid("the S3 settings are incomplete or invalid (bucket, region, endpoint)".into()))?;
        let store: Arc<dyn ObjectStore> = match settings.prefix.as_deref().filter(|p| !p.is_empty()) {
            Some(prefix) => Arc::new(object_store::prefix::PrefixStore::new(s3, prefix)),
            None => Arc::new(s3),
        };
        Ok(ObjectBlobStore { store })
    }

    /// Checks the store answers (lists one page under `meta/`).
    pub async fn health(&self) -> PortResult<()> {
        let prefix = ObjectPath::from("meta");
        self.store.list_with_delimiter(Some(&prefix)).await.map(|_| ()).map_err(store_err)
    }

    /// Wraps any `object_store` backend.
    pub fn with_store(store: Arc<dyn ObjectStore>) -> Self {
        ObjectBlobStore { store }
    }

    fn paths(&self, tenant: &TenantId, container: &str, name: &str) -> PortResult<(ObjectPath, ObjectPath)> {
        check_container(container)?;
        validate_name("object", name, 512)?;
        let rel = format!("{}/{container}/{name}", tenant.as_str());
        let data = ObjectPath::parse(format!("data/{rel}")).map_err(|e| PortError::Invalid(format!("object name {name:?}: {e}")))?;
        let meta = ObjectPath::parse(format!("meta/{rel}")).map_err(|e| PortError::Invalid(format!("object name {name:?}: {e}")))?;
        Ok((data, meta))
    }

    async fn read_meta(&self, path: &ObjectPath) -> PortResult<Option<Meta>> {
        match self.store.get(path).await {
            Ok(r) => {
                let bytes = r.bytes().await.map_err(store_err)?;
                serde_json::from_slice(&bytes)
                    .map(Some)
                    .map_err(|e| PortError::unavailable("blob store", format!("corrupt metadata at {path}: {e}")))
            }
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(store_err(e)),
        }
    }
}

fn check_container(container: &str) -> PortResult<()> {
    validate_name("container", container, 128)?;
    if container.contains('/') {
        return Err(PortError::Invalid(format!("container name {container:?} must not contain '/'")));
    }
    Ok(())
}

#[async_trait]
impl BlobStore for ObjectBlobStore {
    async fn put(
        &self,
        tenant: &TenantId,
        container: &str,
        name: &str,
        data: Vec<u8>,
        content_type: Option<&str>,
    ) -> PortResult<ObjectMeta> {
        let (data_path, meta_path) = self.paths(tenant, container, name)?;
        if data.len() > MAX_OBJECT_BYTES {
            return Err(PortError::Invalid(format!(
                "object {container}/{name} is {} bytes; the limit is {MAX_OBJECT_BYTES}",
                data.len()
            )));
        }
        let meta = Meta {
            content_type: content_type.map(str::to_owned),
            digest: hex::encode(Sha256::digest(&data)),
            size: data.len() as u64,
        };
        let meta_json = serde_json::to_vec(&meta).map_err(|e| PortError::Invalid(e.to_string()))?;
        self.store.put(&data_path, PutPayload::from(data)).await.map_err(store_err)?;
        self.store.put(&meta_path, PutPayload::from(meta_json)).await.map_err(store_err)?;
        Ok(ObjectMeta {
            container: container.to_owned(),
            name: name.to_owned(),
            size: meta.size,
            content_type: meta.content_type,
            digest: meta.digest,
        })
    }

    async fn get(
        &self,
        tenant: &TenantId,
        container: &str,
        name: &str,
        range: Option<(u64, u64)>,
    ) -> PortResult<Option<Vec<u8>>> {
        let (data_path, _) = self.paths(tenant, container, name)?;
        let result = match range {
            Some((start, end)) => {
                if start > end {
                    return Err(PortError::Invalid(format!("range {start}..{end} is reversed")));
                }
                let head = match self.store.head(&data_path).await {
                    Ok(h) => h,
                    Err(object_store::Error::NotFound { .. }) => return Ok(None),
                    Err(e) => return Err(store_err(e)),
                };
                let end = end.min(head.size);
                let start = start.min(end);
                self.store.get_range(&data_path, start..end).await.map(|b| b.to_vec())
            }
            None => match self.store.get(&data_path).await {
                Ok(r) => r.bytes().await.map(|b| b.to_vec()),
                Err(e) => Err(e),
            },
        };
        match result {
            Ok(bytes) => Ok(Some(bytes)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(store_err(e)),
        }
    }

    async fn delete(&self, tenant: &TenantId, container: &str, name: &str) -> PortResult<bool> {
        let (data_path, meta_path) = self.paths(tenant, container, name)?;
        let existed = match self.store.head(&data_path).await {
            Ok(_) => true,
            Err(object_store::Error::NotFound { .. }) => false,
            Err(e) => return Err(store_err(e)),
        };
        if existed {
            self.store.delete(&data_path).await.map_err(store_err)?;
            match self.store.delete(&meta_path).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(store_err(e)),
            }
        }
        Ok(existed)
    }

    async fn list(&self, tenant: &TenantId, container: &str, prefix: &str) -> PortResult<Vec<ObjectMeta>> {
        check_container(container)?;
        if prefix.contains("..") || prefix.chars().any(char::is_control) || prefix.starts_with('/') {
            return Err(PortError::Invalid(format!("list prefix {prefix:?} must not contain '..', control characters or a leading '/'")));
        }
        let base = format!("data/{}/{container}", tenant.as_str());
        let base_path = ObjectPath::parse(&base).map_err(|e| PortError::Invalid(e.to_string()))?;
        let listed: Vec<object_store::ObjectMeta> =
            self.store.list(Some(&base_path)).try_collect().await.map_err(store_err)?;
        let mut out = Vec::new();
        for o in listed {
            let full = o.location.as_ref();
            let Some(name) = full.strip_prefix(&format!("{base}/")) else { continue };
            if !name.starts_with(prefix) {
                continue;
            }
            let meta_path = ObjectPath::parse(format!("meta/{}/{container}/{name}", tenant.as_str()))
                .map_err(|e| PortError::Invalid(e.to_string()))?;
            let meta = self.read_meta(&meta_path).await?;
            out.push(ObjectMeta {
                container: container.to_owned(),
                name: name.to_owned(),
                size: o.size,
                content_type: meta.as_ref().and_then(|m| m.content_type.clone()),
                digest: meta.map(|m| m.digest).unwrap_or_default(),
            });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    async fn metadata(&self, tenant: &TenantId, container: &str, name: &str) -> PortResult<Option<ObjectMeta>> {
        let (_, meta_path) = self.paths(tenant, container, name)?;
        Ok(self.read_meta(&meta_path).await?.map(|m| ObjectMeta {
            container: container.to_owned(),
            name: name.to_owned(),
            size: m.size,
            content_type: m.content_type,
            digest: m.digest,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The error `LocalFileSystem` returned on a full disk, in its shape:
    /// `Generic { store: "LocalFileSystem" }` around its own error around the
    /// `io::Error` (the inner type is private to object_store, so a stand-in with the
    /// same `source` chain; the message is the one from the issue).
    fn enospc() -> object_store::Error {
        #[derive(Debug, thiserror::Error)]
        #[error("Unable to copy data to file: {source}")]
        struct UnableToCopyDataToFile {
            source: std::io::Error,
        }
        object_store::Error::Generic {
            store: "LocalFileSystem",
            source: Box::new(UnableToCopyDataToFile { source: std::io::Error::from_raw_os_error(28) }),
        }
    }

    #[test]
    fn a_full_disk_is_storage_full_and_the_capability_sees_no_adapter_detail() {
        let detail = enospc().to_string();
        assert!(detail.contains("No space left on device"), "{detail}");
        let e = store_err(enospc());
        assert_eq!(e, PortError::StorageFull(runplane_ports::STORAGE_FULL.into()));
        for leak in ["LocalFileSystem", "os error", "copy data", "blob store"] {
            assert!(!e.to_string().contains(leak), "{leak:?} reached the capability: {e}");
        }
    }

    #[test]
    fn other_store_errors_are_unavailable() {
        let e = store_err(object_store::Error::Generic {
            store: "S3",
            source: "Error performing PUT http://127.0.0.1:9000/bucket/data/acme/x in 12ms - connection refused".into(),
        });
        assert_eq!(e, PortError::Unavailable(runplane_ports::UNAVAILABLE.into()));
    }

    /// A real store on a real directory: a failure below it (here the root replaced by
    /// a file) reaches the capability as the neutral reason.
    #[tokio::test]
    async fn a_failing_local_store_answers_the_neutral_reason() {
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path().join("blobs");
        let store = ObjectBlobStore::open(&root).expect("open");
        std::fs::remove_dir_all(&root).expect("remove the root");
        std::fs::write(&root, b"not a directory").expect("a file where the root was");
        let tenant = TenantId::new("acme").expect("tenant");
        let e = store.put(&tenant, "docs", "a", vec![1, 2, 3], None).await.expect_err("the root is a file");
        assert_eq!(e, PortError::Unavailable(runplane_ports::UNAVAILABLE.into()));
    }
}
