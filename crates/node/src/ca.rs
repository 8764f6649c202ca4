//! The instance certificate authority (spec §11): short-lived node and client
//! certificates, revocation distributed through the control store, rotation with an
//! overlap in which both authorities are trusted.
//!
//! **State.** Authorities and issued certificates are control-store documents
//! (`ca.authority`, id = generation; `ca.certificate`, id = serial), so every node of an
//! instance sees the same CA and the same revocations through the change feed. An
//! authority's private key is sealed under the instance KEK (`SecretContext` tenant
//! `instance`, name `ca/<generation>`) and never leaves the node unsealed; issuing a
//! client certificate takes a CSR (`runplane ca issue` makes the key on the operator's
//! machine), so no private key is in an admin request, answer or event.
//!
//! **Trust.** The bundle is every authority not past its `retire_after` (rotation sets
//! it on the older ones: the overlap); each has a revocation list (possibly empty: an
//! authority without one would leave its certificates' status unknown, which rustls
//! refuses), regenerated from the documents whenever they change.
//!
//! **Nodes** with `[tls] instance_ca = true` serve a certificate issued to themselves
//! (`certificate_lifetime_secs`, default 1 day) and renew it at two thirds of its
//! lifetime, or at once when the CA rotated; the bundle and lists go to
//! `<data_dir>/tls/instance-ca.pem` and `instance-ca.crl` and the listener reloads
//! them, so a revoked client certificate is refused at its next handshake on every
//! node. Validity is wall-clock time (what TLS peers check), not the node's `Clock`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::ApiError;
use crate::node::Node;

/// Document kinds.
pub const AUTHORITY: &str = "ca.authority";
pub const ISSUED: &str = "ca.certificate";
/// How long an authority is valid.
const CA_LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// The longest a certificate from it may live, and the default for client certificates.
pub const MAX_LIFETIME_SECS: u64 = 90 * 24 * 3600;
pub const DEFAULT_CLIENT_LIFETIME_SECS: u64 = 7 * 24 * 3600;
/// How far a certificate's validity starts before its issue (clocks drift).
const BACKDATE_SECS: u64 = 60;
/// How long the revocation lists claim to be current (they are remade on every change).
const CRL_VALIDITY: Duration = Duration::from_secs(7 * 24 * 3600);

/// One authority as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct AuthorityDoc {
    generation: u64,
    certificate_pem: String,
    /// The private key (PEM), sealed under the KEK, hex.
    key_sealed: String,
    created_at: String,
    not_after: String,
    /// Unix seconds after which it is no longer trusted (set when a newer one replaced it).
    retire_after: Option<u64>,
}

/// One issued certificate, as stored and listed.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct IssuedCertificate {
    /// Lowercase hex.
    pub serial: String,
    /// The generation of the authority that signed it.
    pub authority: u64,
    /// `node` or `client`.
    pub kind: String,
    pub subject: String,
    pub not_after: String,
    pub issued_at: String,
    pub revoked_at: Option<String>,
    pub revocation_reason: Option<String>,
}

/// An authority, as shown.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AuthorityView {
    pub generation: u64,
    pub not_after: String,
    /// When it stops being trusted (after a rotation), if it does.
    pub retire_after: Option<String>,
    /// Whether clients and nodes trust it now.
    pub trusted: bool,
    pub certificate_pem: String,
}

/// `GET /v1/ca`: the authorities and what to trust.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CaView {
    pub authorities: Vec<AuthorityView>,
    /// The certificates of every trusted authority (PEM): what a client should trust.
    pub trust_bundle_pem: String,
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn rfc3339(secs: u64) -> String {
    runplane_audit::rfc3339_utc(u128::from(secs) * 1_000_000_000)
}

fn offset(secs: u64) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp(i64::try_from(secs).unwrap_or(i64::MAX)).unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

fn sealing(generation: u64) -> String {
    format!("ca/{generation}")
}

fn unavailable(what: &str, e: impl std::fmt::Display) -> ApiError {
    ApiError::unavailable(format!("the instance CA cannot {what}: {e}"))
}

async fn authorities(node: &Node) -> Result<Vec<AuthorityDoc>, ApiError> {
    let mut out: Vec<AuthorityDoc> = Vec::new();
    for (id, body) in node.control.documents(AUTHORITY).await? {
        out.push(serde_json::from_str(&body).map_err(|e| ApiError::unavailable(format!("the instance CA's authority {id} in the control store does not parse: {e}")))?);
    }
    out.sort_by_key(|a| a.generation);
    Ok(out)
}

/// Every certificate the instance CA issued, oldest first.
pub(crate) async fn issued(node: &Node) -> Result<Vec<IssuedCertificate>, ApiError> {
    let mut out: Vec<IssuedCertificate> = Vec::new();
    for (id, body) in node.control.documents(ISSUED).await? {
        out.push(serde_json::from_str(&body).map_err(|e| ApiError::unavailable(format!("the issued certificate {id} in the control store does not parse: {e}")))?);
    }
    out.sort_by(|a, b| a.issued_at.cmp(&b.issued_at).then(a.serial.cmp(&b.serial)));
    Ok(out)
}

fn trusted(a: &AuthorityDoc, now: u64) -> bool {
    a.retire_after.is_none_or(|t| now < t)
}

/// A fresh authority of `generation`, its key sealed.
fn new_authority(node: &Node, generation: u64) -> Result<AuthorityDoc, ApiError> {
    let key = rcgen::KeyPair::generate().map_err(|e| unavailable("make a key", e))?;
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name.push(rcgen::DnType::CommonName, format!("Runplane instance CA {generation}"));
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
    params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign, rcgen::KeyUsagePurpose::DigitalSignature];
    let now = unix_now();
    params.not_before = offset(now.saturating_sub(300));
    params.not_after = offset(now + CA_LIFETIME.as_secs());
    let cert = params.self_signed(&key).map_err(|e| unavailable("sign its certificate", e))?;
    let ring = node.keyring.read().unwrap_or_else(|p| p.into_inner()).clone();
    let name = sealing(generation);
    let sealed = runplane_secrets::seal(&ring, &runplane_secrets::SecretContext { tenant: "instance", name: &name, version: 0 }, key.serialize_pem().as_bytes())
        .map_err(|e| unavailable("seal its key", e))?;
    Ok(AuthorityDoc {
        generation,
        certificate_pem: cert.pem(),
        key_sealed: hex::encode(sealed),
        created_at: rfc3339(now),
        not_after: rfc3339(now + CA_LIFETIME.as_secs()),
        retire_after: None,
    })
}

/// The signer of an authority (its key unsealed for the moment of signing).
fn issuer(node: &Node, a: &AuthorityDoc) -> Result<rcgen::Issuer<'static, rcgen::KeyPair>, ApiError> {
    let sealed = hex::decode(&a.key_sealed).map_err(|e| unavailable("read its key", e))?;
    let ring = node.keyring.read().unwrap_or_else(|p| p.into_inner()).clone();
    let name = sealing(a.generation);
    let opened = runplane_secrets::open(&ring, &runplane_secrets::SecretContext { tenant: "instance", name: &name, version: 0 }, &sealed)
        .map_err(|e| unavailable("unseal its key (is this node's KEK the instance's?)", e))?;
    let pem = std::str::from_utf8(&opened.plaintext).map_err(|e| unavailable("read its key", e))?;
    let key = rcgen::KeyPair::from_pem(pem).map_err(|e| unavailable("read its key", e))?;
    rcgen::Issuer::from_ca_cert_pem(&a.certificate_pem, key).map_err(|e| unavailable("read its certificate", e))
}

async fn put(node: &Node, kind: &str, id: &str, body: &impl Serialize) -> Result<(), ApiError> {
    let json = serde_json::to_string(body).map_err(|e| unavailable("record it", e))?;
    node.control.put_document(kind, id, &json, &rfc3339(unix_now())).await?;
    Ok(())
}

/// Creates the instance's first authority; `409` if it has one.
pub(crate) async fn init(node: &Node) -> Result<AuthorityView, ApiError> {
    if !authorities(node).await?.is_empty() {
        return Err(ApiError::conflict("the instance CA exists; rotate it with POST /v1/ca/rotate"));
    }
    let a = new_authority(node, 1)?;
    let json = serde_json::to_string(&a).map_err(|e| unavailable("record it", e))?;
    if !node.control.insert_document(AUTHORITY, "1", &json, &a.created_at).await? {
        return Err(ApiError::conflict("the instance CA was created by another request just now; see it with GET /v1/ca"));
    }
    Ok(view(&a, unix_now()))
}

/// Makes sure the instance has an authority (a node serving instance-CA certificates
/// at the first start of its instance); several nodes at once create one between them.
pub(crate) async fn ensure(node: &Node) -> Result<(), ApiError> {
    if authorities(node).await?.is_empty() {
        let a = new_authority(node, 1)?;
        let json = serde_json::to_string(&a).map_err(|e| unavailable("record it", e))?;
        node.control.insert_document(AUTHORITY, "1", &json, &a.created_at).await?;
    }
    Ok(())
}

/// A new authority; the ones before it stay trusted for `overlap_secs` more.
pub(crate) async fn rotate(node: &Node, overlap_secs: u64) -> Result<AuthorityView, ApiError> {
    let existing = authorities(node).await?;
    let Some(last) = existing.last() else {
        return Err(ApiError::conflict("the instance has no CA to rotate; create it with POST /v1/ca"));
    };
    let a = new_authority(node, last.generation + 1)?;
    let json = serde_json::to_string(&a).map_err(|e| unavailable("record it", e))?;
    if !node.control.insert_document(AUTHORITY, &a.generation.to_string(), &json, &a.created_at).await? {
        return Err(ApiError::conflict("another rotation of the instance CA happened just now; see it with GET /v1/ca"));
    }
    // Whole seconds: one more, so the overlap is at least what was asked.
    let retire = unix_now() + overlap_secs + 1;
    for mut old in existing {
        if old.retire_after.is_none_or(|t| t > retire) {
            old.retire_after = Some(retire);
            put(node, AUTHORITY, &old.generation.to_string(), &old).await?;
        }
    }
    Ok(view(&a, unix_now()))
}

fn view(a: &AuthorityDoc, now: u64) -> AuthorityView {
    AuthorityView {
        generation: a.generation,
        not_after: a.not_after.clone(),
        retire_after: a.retire_after.map(rfc3339),
        trusted: trusted(a, now),
        certificate_pem: a.certificate_pem.clone(),
    }
}

/// The authorities and the bundle to trust.
pub(crate) async fn show(node: &Node) -> Result<CaView, ApiError> {
    let now = unix_now();
    let all = authorities(node).await?;
    let trust_bundle_pem = all.iter().filter(|a| trusted(a, now)).map(|a| a.certificate_pem.as_str()).collect();
    Ok(CaView { authorities: all.iter().map(|a| view(a, now)).collect(), trust_bundle_pem })
}

/// What a certificate is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A node's serving (and node-to-node client) certificate.
    Node,
    /// A client's (an operator's, a service's) certificate for mutual TLS.
    Client,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Node => "node",
            Kind::Client => "client",
        }
    }
}

/// Signs a certificate for `subject` from the current authority, with the public key
/// of `csr_pem` or of `key` (a node's own), and records it.
async fn sign(node: &Node, kind: Kind, subject: &str, names: &[String], lifetime_secs: u64, public: Public<'_>) -> Result<(IssuedCertificate, String), ApiError> {
    let now = unix_now();
    let all = authorities(node).await?;
    let Some(current) = all.iter().rev().find(|a| trusted(a, now)) else {
        return Err(ApiError::conflict("the instance has no CA; create it with POST /v1/ca"));
    };
    let issuer = issuer(node, current)?;
    let mut params = rcgen::CertificateParams::new(names.to_vec()).map_err(|e| ApiError::bad_request("invalid_name", format!("a name for the certificate is not valid: {e}")))?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(rcgen::DnType::CommonName, subject);
    params.not_before = offset(now.saturating_sub(BACKDATE_SECS));
    params.not_after = offset(now + lifetime_secs);
    params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = match kind {
        Kind::Node => vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth, rcgen::ExtendedKeyUsagePurpose::ClientAuth],
        Kind::Client => vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth],
    };
    let mut serial = [0u8; 16];
    node.entropy.fill(&mut serial);
    serial[0] &= 0x7f;
    params.serial_number = Some(rcgen::SerialNumber::from_slice(&serial));
    let cert = match public {
        Public::Csr(pem) => {
            let mut csr = rcgen::CertificateSigningRequestParams::from_pem(pem)
                .map_err(|e| ApiError::bad_request("invalid_csr", format!("csr_pem is not a PEM certificate signing request ({e}); `runplane ca issue` makes one")))?;
            csr.params = params;
            csr.signed_by(&issuer).map_err(|e| unavailable("sign the certificate", e))?
        }
        Public::Key(key) => params.signed_by(key, &issuer).map_err(|e| unavailable("sign the certificate", e))?,
    };
    let record = IssuedCertificate {
        serial: hex::encode(serial),
        authority: current.generation,
        kind: kind.as_str().into(),
        subject: subject.into(),
        not_after: rfc3339(now + lifetime_secs),
        issued_at: rfc3339(now),
        revoked_at: None,
        revocation_reason: None,
    };
    put(node, ISSUED, &record.serial, &record).await?;
    Ok((record, cert.pem()))
}

enum Public<'a> {
    Csr(&'a str),
    Key(&'a rcgen::KeyPair),
}

/// Issues a certificate for a CSR.
pub(crate) async fn issue(node: &Node, kind: Kind, subject: &str, names: &[String], lifetime_secs: u64, csr_pem: &str) -> Result<(IssuedCertificate, String), ApiError> {
    sign(node, kind, subject, names, lifetime_secs, Public::Csr(csr_pem)).await
}

/// Revokes a certificate: from the next handshake on, no node accepts it.
pub(crate) async fn revoke(node: &Node, serial: &str, reason: Option<String>) -> Result<IssuedCertificate, ApiError> {
    let mut cert = issued(node)
        .await?
        .into_iter()
        .find(|c| c.serial == serial)
        .ok_or_else(|| ApiError::not_found(format!("the instance CA issued no certificate with serial {serial}; list them with GET /v1/ca/certificates")))?;
    if cert.revoked_at.is_none() {
        cert.revoked_at = Some(rfc3339(unix_now()));
        cert.revocation_reason = reason;
        put(node, ISSUED, serial, &cert).await?;
    }
    Ok(cert)
}

/// How long after expiry an issued certificate's record is kept (a revocation list
/// need not name an expired certificate; the record stays for audits a while).
pub const KEEP_EXPIRED: Duration = Duration::from_secs(30 * 24 * 3600);

/// Deletes the records of certificates expired over [`KEEP_EXPIRED`] ago (the leader's
/// work: every renewal adds one). Returns how many.
pub(crate) async fn prune(node: &Node) -> Result<usize, ApiError> {
    let cutoff = rfc3339(unix_now().saturating_sub(KEEP_EXPIRED.as_secs()));
    let mut pruned = 0;
    // RFC 3339 UTC of one format: text order is time order.
    for c in issued(node).await?.into_iter().filter(|c| c.not_after < cutoff) {
        if node.control.delete_document(ISSUED, &c.serial).await? {
            pruned += 1;
        }
    }
    Ok(pruned)
}

/// Where a node serving instance-CA certificates keeps them (caches: remade at start).
pub struct InstanceFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub trust: PathBuf,
    pub crl: PathBuf,
}

impl InstanceFiles {
    pub fn under(data_dir: &std::path::Path) -> Self {
        let dir = data_dir.join("tls");
        InstanceFiles { cert: dir.join("instance-node.pem"), key: dir.join("instance-node.key"), trust: dir.join("instance-ca.pem"), crl: dir.join("instance-ca.crl") }
    }
}

/// Writes the trust bundle and revocation lists from the control store, and the node's
/// own certificate when it has none, it is due for renewal (two thirds of `lifetime`
/// gone) or its authority is no longer the current one. Returns whether anything
/// changed.
pub(crate) async fn write_files(node: &Node, lifetime: Duration) -> Result<bool, ApiError> {
    let files = InstanceFiles::under(&node.config.data_dir);
    std::fs::create_dir_all(files.cert.parent().unwrap_or(&node.config.data_dir)).map_err(|e| unavailable("write its files", e))?;
    let now = unix_now();
    let all = authorities(node).await?;
    let certs = issued(node).await?;
    let trust: String = all.iter().filter(|a| trusted(a, now)).map(|a| a.certificate_pem.as_str()).collect();
    let mut crls = String::new();
    for a in all.iter().filter(|a| trusted(a, now)) {
        let revoked = certs
            .iter()
            .filter(|c| c.authority == a.generation && c.revoked_at.is_some())
            .filter_map(|c| {
                Some(rcgen::RevokedCertParams {
                    serial_number: rcgen::SerialNumber::from_slice(&hex::decode(&c.serial).ok()?),
                    revocation_time: offset(now.saturating_sub(1)),
                    reason_code: Some(rcgen::RevocationReason::Unspecified),
                    invalidity_date: None,
                })
            })
            .collect();
        let params = rcgen::CertificateRevocationListParams {
            this_update: offset(now.saturating_sub(60)),
            next_update: offset(now + CRL_VALIDITY.as_secs()),
            crl_number: rcgen::SerialNumber::from(now),
            issuing_distribution_point: None,
            revoked_certs: revoked,
            key_identifier_method: rcgen::KeyIdMethod::Sha256,
        };
        let crl = params.signed_by(&issuer(node, a)?).map_err(|e| unavailable("sign its revocation list", e))?;
        crls.push_str(&crl.pem().map_err(|e| unavailable("write its revocation list", e))?);
    }
    let mut changed = replace(&files.trust, trust.as_bytes(), false)?;
    changed |= replace(&files.crl, crls.as_bytes(), false)?;

    let current = all.iter().rev().find(|a| trusted(a, now)).map(|a| a.generation);
    let due = match std::fs::read(&files.cert).ok().and_then(|pem| own_certificate(&pem)) {
        Some((issued_by, not_before, not_after)) => {
            // Two thirds of the lifetime from the issue (not from the backdated start).
            let issued = (not_before + BACKDATE_SECS).min(not_after);
            let renew_at = issued + (not_after - issued) * 2 / 3;
            now >= renew_at || !issued_by.ends_with(&format!("CN=Runplane instance CA {}", current.unwrap_or(0)))
        }
        None => true,
    };
    if due {
        let key = rcgen::KeyPair::generate().map_err(|e| unavailable("make a key", e))?;
        let names = node_names(node);
        let (_, pem) = sign(node, Kind::Node, &node.config.node_id, &names, lifetime.as_secs().max(1), Public::Key(&key)).await?;
        // The key first: until the certificate follows, the pair does not match and
        // the listener keeps the old one.
        replace(&files.key, key.serialize_pem().as_bytes(), true)?;
        replace(&files.cert, pem.as_bytes(), false)?;
        changed = true;
    }
    Ok(changed)
}

/// The names a node's own certificate carries: loopback, the listen address, its id.
fn node_names(node: &Node) -> Vec<String> {
    let mut names = vec!["localhost".to_string(), "127.0.0.1".into(), "::1".into(), node.config.node_id.to_lowercase()];
    let ip = node.config.listen.ip();
    if !ip.is_unspecified() && !ip.is_loopback() {
        names.push(ip.to_string());
    }
    names.retain(|n| !n.contains('_'));
    names
}

/// Issuer, notBefore and notAfter (Unix seconds) of a PEM certificate.
fn own_certificate(pem: &[u8]) -> Option<(String, u64, u64)> {
    use rustls::pki_types::pem::PemObject as _;
    let der = rustls::pki_types::CertificateDer::pem_slice_iter(pem).next()?.ok()?;
    let (_, c) = x509_parser::parse_x509_certificate(der.as_ref()).ok()?;
    let v = c.validity();
    Some((c.issuer().to_string(), u64::try_from(v.not_before.timestamp()).ok()?, u64::try_from(v.not_after.timestamp()).ok()?))
}

/// Writes `bytes` to `path` through a file beside it and a rename (a reader sees the
/// old file or the new one, whole) unless it holds them already; whether it wrote.
fn replace(path: &std::path::Path, bytes: &[u8], private: bool) -> Result<bool, ApiError> {
    if std::fs::read(path).is_ok_and(|old| old == bytes) {
        return Ok(false);
    }
    let tmp = path.with_extension("new");
    if private {
        crate::node::write_private(&tmp, bytes).map_err(|e| unavailable("write its files", e))?;
    } else {
        std::fs::write(&tmp, bytes).map_err(|e| unavailable("write its files", e))?;
    }
    std::fs::rename(&tmp, path).map_err(|e| unavailable("write its files", e))?;
    Ok(true)
}

/// Brings the files up to date and, when they changed, has the listener use them.
pub(crate) async fn refresh(node: &Node) {
    let Some(lifetime) = node.config.tls.as_ref().and_then(|t| t.instance_lifetime()) else { return };
    match write_files(node, lifetime).await {
        Ok(true) => match node.reload_tls() {
            Ok(Some(s)) => tracing::info!(subject = %s.subject, not_after = %s.not_after, "instance CA files updated: new handshakes use them"),
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "the instance CA files were updated but do not load; the previous ones keep serving"),
        },
        Ok(false) => {}
        Err(e) => tracing::warn!(error = %e.message, "cannot bring the instance CA files up to date; retrying"),
    }
}

/// Renews the node's certificate on time, and keeps the trust files current, until
/// the node stops.
pub(crate) fn spawn_renewal(node: Arc<Node>) {
    let Some(lifetime) = node.config.tls.as_ref().and_then(|t| t.instance_lifetime()) else { return };
    // Often enough to renew at two thirds with a sixth of the lifetime to spare.
    let every = (lifetime / 6).clamp(Duration::from_millis(200), Duration::from_secs(300));
    tokio::spawn(async move {
        let stopped = node.drain.stopped();
        let mut stopped = std::pin::pin!(stopped);
        loop {
            tokio::select! {
                _ = &mut stopped => return,
                _ = tokio::time::sleep(every) => refresh(&node).await,
            }
        }
    });
}
