//! TLS on the node's listener (spec §11): rustls, certificates from files or a
//! development CA generated into the data dir, a minimum protocol version, and reload
//! without restart.
//!
//! - **From files** (`[tls] cert_file` and `key_file`, PEM): any CA — cert-manager in
//!   Kubernetes, a corporate PKI. The chain is presented as written (leaf first).
//! - **Development** (`[tls] generate = true`, or `runplane up --tls`): at first start a
//!   local CA (`<data_dir>/tls/ca.pem`, its key beside it, mode 0600) and a leaf for
//!   `localhost`, `127.0.0.1`, `::1` and the listen address are written; a leaf within
//!   [`DEV_RENEW_BEFORE`] of expiry is re-issued at start. `curl --cacert
//!   <data_dir>/tls/ca.pem https://…` trusts it.
//!
//! **Reload.** The serving certificate sits behind [`Certificates`], which rustls asks
//! at every handshake. [`Certificates::reload`] reads both files again and swaps only a
//! pair that parses, matches and is within its validity: a half-written update (the
//! certificate replaced, the key not yet) leaves the old pair serving and is tried
//! again. The node calls it every `[tls] reload_check_ms` when the files' bytes changed
//! (Kubernetes swaps a secret's files through a symlink: content, not mtime, is
//! compared) and on SIGHUP. Established connections keep the certificate they
//! negotiated; new handshakes get the new one.
//!
//! Private keys are read, handed to rustls and never logged, shown or written anywhere
//! but their own file.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use sha2::{Digest as _, Sha256};

/// A development leaf this close to expiry is re-issued at start.
pub const DEV_RENEW_BEFORE: Duration = Duration::from_secs(30 * 24 * 3600);
/// How long a development leaf is valid.
const DEV_LEAF_LIFETIME: Duration = Duration::from_secs(90 * 24 * 3600);
/// How long the development CA is valid.
const DEV_CA_LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// Longest a client may take to complete its handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The lowest protocol version a listener accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MinVersion {
    Tls12,
    Tls13,
}

impl MinVersion {
    pub fn parse(v: &str) -> Option<Self> {
        match v {
            "1.2" => Some(MinVersion::Tls12),
            "1.3" => Some(MinVersion::Tls13),
            _ => None,
        }
    }

    fn versions(self) -> &'static [&'static rustls::SupportedProtocolVersion] {
        static TLS13_ONLY: [&rustls::SupportedProtocolVersion; 1] = [&rustls::version::TLS13];
        match self {
            MinVersion::Tls12 => rustls::ALL_VERSIONS,
            MinVersion::Tls13 => &TLS13_ONLY,
        }
    }
}

/// Where the serving certificate comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertSource {
    /// PEM files written by someone else (and replaced by them: reloaded).
    Files { cert: PathBuf, key: PathBuf },
    /// A development CA and leaf under `<data_dir>/tls`.
    Development,
    /// Issued to the node by the instance CA ([`crate::ca`]), `lifetime` long, renewed
    /// by the node at two thirds of it.
    InstanceCa { lifetime: Duration },
}

/// `[tls]`: how the listener speaks TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    pub source: CertSource,
    /// `[tls] min_version`, default `1.2`.
    pub min_version: MinVersion,
    /// `[tls] reload_check_ms`, default 2000: how often the files are compared.
    pub reload_check: Duration,
    /// Mutual TLS, when `[tls] client_ca_file` is set.
    pub client: Option<ClientAuth>,
    /// `[tls.admin]`: how the admin listener (`[node] admin_listen`) differs.
    pub admin: Option<ListenerOverride>,
}

/// What one listener changes of `[tls]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListenerOverride {
    pub min_version: Option<MinVersion>,
    /// `client_auth` on this listener: `Some(true)` required, `Some(false)` optional.
    pub client_required: Option<bool>,
}

impl TlsSettings {
    /// Development certificates, TLS 1.2 and up (what `runplane up --tls` uses).
    pub fn development() -> Self {
        TlsSettings { source: CertSource::Development, min_version: MinVersion::Tls12, reload_check: Duration::from_secs(2), client: None, admin: None }
    }

    /// The certificate lifetime, when the instance CA issues the node's certificate.
    pub fn instance_lifetime(&self) -> Option<Duration> {
        match self.source {
            CertSource::InstanceCa { lifetime } => Some(lifetime),
            _ => None,
        }
    }

    /// The settings of the admin listener: these with `[tls.admin]` applied.
    pub fn for_admin(&self) -> Self {
        let mut s = self.clone();
        if let Some(o) = &self.admin {
            if let Some(m) = o.min_version {
                s.min_version = m;
            }
            if let (Some(required), Some(c)) = (o.client_required, &mut s.client) {
                c.required = required;
            }
        }
        s
    }

    /// The settings of the instance metadata listener (`[node] metadata_listen`):
    /// TLS 1.3 only and a client certificate required, whatever `[tls]` says for the
    /// other listeners. `None` without a CA to verify clients against (`client_ca_file`
    /// or the instance CA).
    pub fn for_metadata(&self) -> Option<Self> {
        let mut s = self.clone();
        s.min_version = MinVersion::Tls13;
        s.admin = None;
        match &mut s.client {
            Some(c) => {
                c.required = true;
                c.admin_required = true;
            }
            // The instance CA's bundle and revocation lists, filled in by `resolved`.
            None if self.instance_lifetime().is_some() => {
                s.client = Some(ClientAuth { ca_file: PathBuf::new(), crl_file: None, required: true, admin_required: true });
            }
            None => return None,
        }
        Some(s)
    }

    /// These settings with the instance CA's files under `data_dir` in place: its
    /// certificate for the node's, its bundle and revocation lists for the client CA.
    pub fn resolved(&self, data_dir: &Path) -> Self {
        let mut s = self.clone();
        if self.instance_lifetime().is_some() {
            let f = crate::ca::InstanceFiles::under(data_dir);
            s.source = CertSource::Files { cert: f.cert, key: f.key };
            if let Some(c) = &mut s.client {
                c.ca_file = f.trust;
                c.crl_file = Some(f.crl);
            }
        }
        s
    }
}

/// Mutual TLS: which client certificates the listener accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientAuth {
    /// `[tls] client_ca_file`: the CA certificates (PEM) client certificates must chain to.
    pub ca_file: PathBuf,
    /// `[tls] client_crl_file`: revocation lists (PEM) of that CA; a revoked
    /// certificate is refused at its next handshake.
    pub crl_file: Option<PathBuf>,
    /// `[tls] client_auth = "required"`: a handshake without a certificate fails;
    /// `"optional"` (the default): a certificate is verified when given.
    pub required: bool,
    /// `[tls] admin_client_certificate = "required"`: the admin API answers 401 to a
    /// connection without a verified certificate (tenant traffic does not need one).
    pub admin_required: bool,
}

/// The verified client certificate of a connection, as the admin log records it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ClientCertificate {
    pub subject: String,
    /// SHA-256 of its DER (lowercase hex).
    pub sha256: String,
}

/// A request extension: the client certificate its connection presented (set once
/// the handshake is done; empty without one or without TLS).
#[derive(Clone, Default)]
pub struct PeerCertificate(pub Arc<std::sync::OnceLock<ClientCertificate>>);

impl PeerCertificate {
    pub fn get(&self) -> Option<&ClientCertificate> {
        self.0.get()
    }

    /// Records the leaf of a completed handshake.
    pub(crate) fn set(&self, leaf: &CertificateDer<'_>) {
        let subject = x509_parser::parse_x509_certificate(leaf.as_ref()).map(|(_, c)| c.subject().to_string()).unwrap_or_default();
        let _ = self.0.set(ClientCertificate { subject, sha256: hex::encode(Sha256::digest(leaf.as_ref())) });
    }
}

/// What went wrong with a certificate or key, in words an operator can act on.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TlsError(String);

fn err(message: String) -> TlsError {
    TlsError(message)
}

/// The crypto the node's TLS uses (ring, as its brokers' clients do).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// What is serving now, as shown to operators.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct ServingCertificate {
    /// The leaf's subject.
    pub subject: String,
    /// The leaf's issuer.
    pub issuer: String,
    /// End of validity (RFC 3339).
    pub not_after: String,
    /// SHA-256 of the leaf's DER (lowercase hex), what `openssl x509 -fingerprint -sha256` shows.
    pub sha256: String,
}

struct Loaded {
    key: Arc<CertifiedKey>,
    info: ServingCertificate,
    verifier: Arc<dyn rustls::server::danger::ClientCertVerifier>,
    /// SHA-256 over every file's bytes, to see whether they changed.
    stamp: [u8; 32],
}

/// The certificate rustls presents, asked at every handshake.
#[derive(Debug)]
struct Resolver(RwLock<Arc<CertifiedKey>>);

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.read().unwrap_or_else(|p| p.into_inner()).clone())
    }
}

/// The listener's certificate and client verification, swappable while the node runs.
pub struct Certificates {
    files: (PathBuf, PathBuf),
    settings: TlsSettings,
    provider: Arc<CryptoProvider>,
    resolver: Arc<Resolver>,
    config: RwLock<Arc<rustls::ServerConfig>>,
    info: RwLock<ServingCertificate>,
    stamp: Mutex<[u8; 32]>,
}

impl std::fmt::Debug for Certificates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Certificates").field("cert_file", &self.files.0).finish_non_exhaustive()
    }
}

impl Certificates {
    /// Loads the pair named by `source` (generating development certificates first when
    /// asked), refusing one that does not parse, does not match or has expired.
    pub fn open(settings: &TlsSettings, data_dir: &Path, listen: std::net::SocketAddr) -> Result<Arc<Self>, TlsError> {
        let files = match &settings.source {
            CertSource::Files { cert, key } => (cert.clone(), key.clone()),
            CertSource::Development => development(data_dir, listen)?,
            CertSource::InstanceCa { .. } => return Err(err("the instance CA's files are to be written and the settings resolved first".into())),
        };
        let provider = provider();
        let loaded = load(&files, settings.client.as_ref(), &provider)?;
        let resolver = Arc::new(Resolver(RwLock::new(loaded.key)));
        let config = server_config(&provider, settings.min_version, loaded.verifier, resolver.clone())?;
        Ok(Arc::new(Certificates {
            files,
            settings: settings.clone(),
            provider,
            resolver,
            config: RwLock::new(config),
            info: RwLock::new(loaded.info),
            stamp: Mutex::new(loaded.stamp),
        }))
    }

    /// The acceptor for the next connection (the current certificate and client CA).
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.config.read().unwrap_or_else(|p| p.into_inner()).clone())
    }

    /// Whether the admin API needs a verified client certificate.
    pub fn admin_needs_client_certificate(&self) -> bool {
        self.settings.client.as_ref().is_some_and(|c| c.admin_required)
    }

    /// What is serving now.
    pub fn serving(&self) -> ServingCertificate {
        self.info.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Whether the files' bytes differ from what is serving.
    pub fn changed(&self) -> bool {
        read_all(&self.files, self.settings.client.as_ref()).is_ok_and(|bytes| stamp(&bytes) != *self.stamp.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Reads the files again and, when they hold a good pair (and client CA and
    /// revocation lists), uses them from the next handshake on. On error the old ones
    /// keep serving.
    pub fn reload(&self) -> Result<ServingCertificate, TlsError> {
        let loaded = load(&self.files, self.settings.client.as_ref(), &self.provider)?;
        let config = server_config(&self.provider, self.settings.min_version, loaded.verifier, self.resolver.clone())?;
        *self.resolver.0.write().unwrap_or_else(|p| p.into_inner()) = loaded.key;
        *self.config.write().unwrap_or_else(|p| p.into_inner()) = config;
        *self.info.write().unwrap_or_else(|p| p.into_inner()) = loaded.info.clone();
        *self.stamp.lock().unwrap_or_else(|p| p.into_inner()) = loaded.stamp;
        Ok(loaded.info)
    }
}

/// The rustls configuration of a listener: its versions, client verification and the
/// (swappable) certificate.
fn server_config(
    provider: &Arc<CryptoProvider>,
    min_version: MinVersion,
    verifier: Arc<dyn rustls::server::danger::ClientCertVerifier>,
    resolver: Arc<Resolver>,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let mut config = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(min_version.versions())
        .map_err(|e| err(format!("cannot configure TLS: {e}")))?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The bytes of every file the listener's TLS is made of, in a fixed order.
fn read_all(files: &(PathBuf, PathBuf), client: Option<&ClientAuth>) -> std::io::Result<Vec<Vec<u8>>> {
    let mut paths = vec![files.0.clone(), files.1.clone()];
    if let Some(c) = client {
        paths.push(c.ca_file.clone());
        paths.extend(c.crl_file.clone());
    }
    paths.iter().map(std::fs::read).collect()
}

/// How client certificates are verified: not at all, or against the client CA (and its
/// revocation lists), required or optional.
/// Also returns the bytes it read (for the change stamp).
fn client_verifier(client: Option<&ClientAuth>, provider: &Arc<CryptoProvider>) -> Result<(Arc<dyn rustls::server::danger::ClientCertVerifier>, Vec<Vec<u8>>), TlsError> {
    let Some(c) = client else { return Ok((rustls::server::WebPkiClientVerifier::no_client_auth(), Vec::new())) };
    let mut read = Vec::new();
    let pem = std::fs::read(&c.ca_file).map_err(|e| err(format!("cannot read the client CA {}: {e}", c.ca_file.display())))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| err(format!("{} is not PEM ({e}); write the CA certificates clients' certificates chain to", c.ca_file.display())))?;
        roots.add(cert).map_err(|e| err(format!("{} holds a certificate that cannot be a trust anchor: {e}", c.ca_file.display())))?;
    }
    if roots.is_empty() {
        return Err(err(format!("{} holds no CA certificate (PEM, BEGIN CERTIFICATE)", c.ca_file.display())));
    }
    read.push(pem);
    let mut builder = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
    if let Some(crl_file) = &c.crl_file {
        let pem = std::fs::read(crl_file).map_err(|e| err(format!("cannot read the revocation list {}: {e}", crl_file.display())))?;
        let crls = rustls::pki_types::CertificateRevocationListDer::pem_slice_iter(&pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| err(format!("{} is not a PEM revocation list ({e})", crl_file.display())))?;
        builder = builder.with_crls(crls);
        read.push(pem);
    }
    if !c.required {
        builder = builder.allow_unauthenticated();
    }
    let verifier = builder.build().map_err(|e| err(format!("cannot verify client certificates with {}: {e}", c.ca_file.display())))?;
    Ok((verifier, read))
}

/// Watches the files and reloads a changed pair every `every` until the node stops.
pub fn spawn_reloader(certs: Arc<Certificates>, every: Duration, stopped: impl std::future::Future<Output = ()> + Send + 'static) {
    tokio::spawn(async move {
        let mut stopped = std::pin::pin!(stopped);
        let mut failing = false;
        loop {
            tokio::select! {
                _ = &mut stopped => return,
                _ = tokio::time::sleep(every) => {}
            }
            if !certs.changed() {
                continue;
            }
            match certs.reload() {
                Ok(s) => {
                    failing = false;
                    tracing::info!(subject = %s.subject, not_after = %s.not_after, sha256 = %s.sha256, "TLS certificate files changed: new handshakes present the new certificate");
                }
                // A half-written update is normal for one check; say so once.
                Err(e) if !failing => {
                    failing = true;
                    tracing::warn!(error = %e, "TLS certificate files changed but do not hold a usable pair yet; the old certificate keeps serving");
                }
                Err(_) => {}
            }
        }
    });
}

fn stamp(files: &[Vec<u8>]) -> [u8; 32] {
    let mut h = Sha256::new();
    for f in files {
        h.update((f.len() as u64).to_le_bytes());
        h.update(f);
    }
    h.finalize().into()
}

fn load(files: &(PathBuf, PathBuf), client: Option<&ClientAuth>, provider: &Arc<CryptoProvider>) -> Result<Loaded, TlsError> {
    let (verifier, client_files) = client_verifier(client, provider)?;
    let (cert_file, key_file) = (files.0.as_path(), files.1.as_path());
    let cert_pem = std::fs::read(cert_file).map_err(|e| err(format!("cannot read the TLS certificate {}: {e}", cert_file.display())))?;
    let key_pem = std::fs::read(key_file).map_err(|e| err(format!("cannot read the TLS key {}: {e}", key_file.display())))?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| err(format!("{} is not a PEM certificate chain ({e}); write the leaf first, then its intermediates", cert_file.display())))?;
    let Some(leaf) = chain.first() else {
        return Err(err(format!("{} holds no certificate; write the leaf (PEM, BEGIN CERTIFICATE) first, then its intermediates", cert_file.display())));
    };
    // The key's own error text is never shown: it could quote key material.
    let key = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|_| err(format!("{} holds no PEM private key (PKCS#8, PKCS#1 or SEC1)", key_file.display())))?;
    let signing = provider
        .key_provider
        .load_private_key(key)
        .map_err(|_| err(format!("the private key in {} is of a kind TLS cannot use (use ECDSA P-256/P-384, Ed25519 or RSA)", key_file.display())))?;
    let certified = CertifiedKey::new(chain.clone(), signing);
    certified.keys_match().map_err(|_| {
        err(format!("the key in {} does not belong to the certificate in {}; replace both files together", key_file.display(), cert_file.display()))
    })?;
    let (_, parsed) = x509_parser::parse_x509_certificate(leaf.as_ref()).map_err(|e| err(format!("{}: the leaf certificate does not parse: {e}", cert_file.display())))?;
    let info = describe(leaf, &parsed);
    if !parsed.validity().is_valid() {
        return Err(err(format!(
            "the certificate in {} is not valid now (valid from {} to {}); renew it",
            cert_file.display(),
            parsed.validity().not_before,
            parsed.validity().not_after
        )));
    }
    let stamp = stamp(&[vec![cert_pem, key_pem], client_files].concat());
    Ok(Loaded { key: Arc::new(certified), info, verifier, stamp })
}

fn describe(leaf: &CertificateDer<'_>, parsed: &x509_parser::certificate::X509Certificate<'_>) -> ServingCertificate {
    let not_after = parsed.validity().not_after.timestamp();
    ServingCertificate {
        subject: parsed.subject().to_string(),
        issuer: parsed.issuer().to_string(),
        not_after: runplane_audit::rfc3339_utc(u128::try_from(not_after).unwrap_or(0) * 1_000_000_000),
        sha256: hex::encode(Sha256::digest(leaf.as_ref())),
    }
}

/// The development CA's certificate under `data_dir`.
pub fn development_ca(data_dir: &Path) -> PathBuf {
    data_dir.join("tls").join("ca.pem")
}

/// Makes sure `<data_dir>/tls` holds a development CA and a current leaf for `listen`;
/// returns the leaf's certificate and key files.
fn development(data_dir: &Path, listen: std::net::SocketAddr) -> Result<(PathBuf, PathBuf), TlsError> {
    let dir = data_dir.join("tls");
    std::fs::create_dir_all(&dir).map_err(|e| err(format!("cannot create {}: {e}", dir.display())))?;
    let (ca_cert, ca_key, leaf_cert, leaf_key) = (dir.join("ca.pem"), dir.join("ca.key"), dir.join("node.pem"), dir.join("node.key"));
    let write = |path: &Path, bytes: &[u8]| crate::node::write_private(path, bytes).map_err(|e| err(format!("cannot write {}: {e}", path.display())));
    let now = time_now();

    let issuer = if ca_cert.exists() && ca_key.exists() {
        let key_pem = std::fs::read_to_string(&ca_key).map_err(|e| err(format!("cannot read {}: {e}", ca_key.display())))?;
        let cert_pem = std::fs::read_to_string(&ca_cert).map_err(|e| err(format!("cannot read {}: {e}", ca_cert.display())))?;
        let key = rcgen::KeyPair::from_pem(&key_pem).map_err(|_| err(format!("{} is not the development CA's key; delete {} to make a new CA", ca_key.display(), dir.display())))?;
        rcgen::Issuer::from_ca_cert_pem(&cert_pem, key).map_err(|e| err(format!("{} does not parse ({e}); delete {} to make a new CA", ca_cert.display(), dir.display())))?
    } else {
        let key = rcgen::KeyPair::generate().map_err(|e| err(format!("cannot generate a key: {e}")))?;
        let mut params = rcgen::CertificateParams::default();
        params.distinguished_name.push(rcgen::DnType::CommonName, "Runplane development CA");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
        params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign, rcgen::KeyUsagePurpose::DigitalSignature];
        params.not_before = now - time::Duration::minutes(5);
        params.not_after = now + DEV_CA_LIFETIME;
        let cert = params.self_signed(&key).map_err(|e| err(format!("cannot make the development CA: {e}")))?;
        write(&ca_key, key.serialize_pem().as_bytes())?;
        write(&ca_cert, cert.pem().as_bytes())?;
        rcgen::Issuer::new(params, key)
    };

    let current = std::fs::read(&leaf_cert)
        .ok()
        .and_then(|pem| CertificateDer::pem_slice_iter(&pem).next()?.ok())
        .and_then(|der| {
            let (_, parsed) = x509_parser::parse_x509_certificate(der.as_ref()).ok()?;
            let left = parsed.validity().time_to_expiration()?;
            Some(left.whole_seconds() as u64 > DEV_RENEW_BEFORE.as_secs() && leaf_key.exists())
        })
        .unwrap_or(false);
    if !current {
        let key = rcgen::KeyPair::generate().map_err(|e| err(format!("cannot generate a key: {e}")))?;
        let mut names = vec!["localhost".to_string(), "127.0.0.1".into(), "::1".into()];
        if !listen.ip().is_unspecified() && !listen.ip().is_loopback() {
            names.push(listen.ip().to_string());
        }
        let mut params = rcgen::CertificateParams::new(names).map_err(|e| err(format!("cannot name the development certificate: {e}")))?;
        params.distinguished_name.push(rcgen::DnType::CommonName, "runplane node (development)");
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        params.not_before = now - time::Duration::minutes(5);
        params.not_after = now + DEV_LEAF_LIFETIME;
        let cert = params.signed_by(&key, &issuer).map_err(|e| err(format!("cannot issue the development certificate: {e}")))?;
        write(&leaf_key, key.serialize_pem().as_bytes())?;
        write(&leaf_cert, cert.pem().as_bytes())?;
    }
    Ok((leaf_cert, leaf_key))
}

fn time_now() -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc()
}
