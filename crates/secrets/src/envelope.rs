//! Sealing and opening one secret version.
//!
//! ```text
//! data key  = 32 random bytes, fresh for every version
//! ciphertext = AES-256-GCM(data key, nonce, value,          ad = context)
//! wrapped    = AES-256-GCM(KEK,      wrap nonce, data key,  ad = context ‖ KEK id)
//! context    = "runplane-secret/1" ‖ len-prefixed tenant ‖ name ‖ version
//! ```
//!
//! Both layers authenticate the context, so bytes copied to another tenant, name or
//! version fail to open, and a data key cannot be unwrapped under a different KEK id.
//! The stored form is a small JSON object (base64 fields) so an operator can see which
//! KEK a version is wrapped under without any key.

use aes_gcm::aead::{Aead, Payload};
use aes_gcm::{Aes256Gcm, KeyInit, Nonce};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::{KeyRing, SecretsError};

const FORMAT: &str = "runplane-envelope/1";
const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD_NO_PAD;

/// Which secret version a ciphertext belongs to: the associated data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SecretContext<'a> {
    pub tenant: &'a str,
    pub name: &'a str,
    pub version: u64,
}

impl SecretContext<'_> {
    /// Length-prefixed, so no choice of names can make two contexts collide.
    fn associated_data(&self) -> Vec<u8> {
        let mut ad = Vec::with_capacity(32 + self.tenant.len() + self.name.len());
        ad.extend_from_slice(b"runplane-secret/1");
        for part in [self.tenant.as_bytes(), self.name.as_bytes()] {
            ad.extend_from_slice(&(part.len() as u32).to_be_bytes());
            ad.extend_from_slice(part);
        }
        ad.extend_from_slice(&self.version.to_be_bytes());
        ad
    }

    fn wrap_data(&self, kek: &str) -> Vec<u8> {
        let mut ad = self.associated_data();
        ad.extend_from_slice(b"/kek/");
        ad.extend_from_slice(kek.as_bytes());
        ad
    }
}

/// The stored form of one version.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Envelope {
    format: String,
    kek: String,
    wrap_nonce: String,
    wrapped_key: String,
    nonce: String,
    ciphertext: String,
}

/// An opened version: the value, and the KEK it was wrapped under.
pub struct Opened {
    pub plaintext: Zeroizing<Vec<u8>>,
    pub kek: String,
}

impl std::fmt::Debug for Opened {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Opened(<{} bytes redacted>, kek {})", self.plaintext.len(), self.kek)
    }
}

fn cipher(key: &[u8; 32]) -> Aes256Gcm {
    // A 32-byte slice is always a valid AES-256 key.
    Aes256Gcm::new_from_slice(key).expect("AES-256 takes a 32-byte key")
}

fn encrypt(key: &[u8; 32], nonce: &[u8; 12], msg: &[u8], aad: &[u8]) -> Vec<u8> {
    // Encryption fails only for plaintexts beyond GCM's 64 GiB limit, which the secrets
    // port's size limit rules out long before.
    cipher(key).encrypt(&Nonce::from(*nonce), Payload { msg, aad }).expect("AES-GCM encrypts any secret-sized value")
}

/// Seals `value` as version `ctx.version`, under the ring's current KEK.
pub fn seal(ring: &KeyRing, ctx: &SecretContext<'_>, value: &[u8]) -> Result<Vec<u8>, SecretsError> {
    let data_key = crate::random::<32>()?;
    let nonce = crate::random::<12>()?;
    let wrap_nonce = crate::random::<12>()?;
    let kek = ring.current();
    let ciphertext = encrypt(&data_key, &nonce, value, &ctx.associated_data());
    let wrapped = encrypt(kek.key(), &wrap_nonce, data_key.as_slice(), &ctx.wrap_data(kek.id()));
    let envelope = Envelope {
        format: FORMAT.into(),
        kek: kek.id().to_owned(),
        wrap_nonce: B64.encode(wrap_nonce.as_slice()),
        wrapped_key: B64.encode(wrapped),
        nonce: B64.encode(nonce.as_slice()),
        ciphertext: B64.encode(ciphertext),
    };
    Ok(serde_json::to_vec(&envelope).expect("an envelope always serializes"))
}

fn parse(ctx: &SecretContext<'_>, sealed: &[u8]) -> Result<Envelope, SecretsError> {
    let format = |why: String| SecretsError::Format { name: ctx.name.to_owned(), version: ctx.version, why };
    let e: Envelope = serde_json::from_slice(sealed).map_err(|_| format("the stored bytes are not an envelope".into()))?;
    if e.format != FORMAT {
        return Err(format(format!("format {:?}, expected {FORMAT:?}", e.format)));
    }
    Ok(e)
}

fn nonce(ctx: &SecretContext<'_>, b64: &str) -> Result<[u8; 12], SecretsError> {
    B64.decode(b64).ok().and_then(|b| <[u8; 12]>::try_from(b.as_slice()).ok()).ok_or_else(|| SecretsError::Format {
        name: ctx.name.to_owned(),
        version: ctx.version,
        why: "a nonce is not 12 bytes of base64".into(),
    })
}

fn bytes(ctx: &SecretContext<'_>, b64: &str) -> Result<Vec<u8>, SecretsError> {
    B64.decode(b64).map_err(|_| SecretsError::Format { name: ctx.name.to_owned(), version: ctx.version, why: "a field is not base64".into() })
}

/// Unwraps the data key of an envelope.
fn data_key(ring: &KeyRing, ctx: &SecretContext<'_>, e: &Envelope) -> Result<Zeroizing<[u8; 32]>, SecretsError> {
    let tampered = || SecretsError::Tampered { name: ctx.name.to_owned(), version: ctx.version };
    let kek = ring
        .get(&e.kek)
        .ok_or_else(|| SecretsError::UnknownKek { name: ctx.name.to_owned(), version: ctx.version, kek: e.kek.clone() })?;
    let wrapped = bytes(ctx, &e.wrapped_key)?;
    let key = Zeroizing::new(
        cipher(kek.key())
            .decrypt(&Nonce::from(nonce(ctx, &e.wrap_nonce)?), Payload { msg: &wrapped, aad: &ctx.wrap_data(kek.id()) })
            .map_err(|_| tampered())?,
    );
    let key: [u8; 32] = key.as_slice().try_into().map_err(|_| tampered())?;
    Ok(Zeroizing::new(key))
}

/// Opens a sealed version; fails when the bytes were altered or belong to another
/// context.
pub fn open(ring: &KeyRing, ctx: &SecretContext<'_>, sealed: &[u8]) -> Result<Opened, SecretsError> {
    let e = parse(ctx, sealed)?;
    let key = data_key(ring, ctx, &e)?;
    let ciphertext = bytes(ctx, &e.ciphertext)?;
    let plaintext = cipher(&key)
        .decrypt(&Nonce::from(nonce(ctx, &e.nonce)?), Payload { msg: &ciphertext, aad: &ctx.associated_data() })
        .map_err(|_| SecretsError::Tampered { name: ctx.name.to_owned(), version: ctx.version })?;
    Ok(Opened { plaintext: Zeroizing::new(plaintext), kek: e.kek })
}

/// Re-wraps a version's data key under the ring's current KEK (the value's ciphertext
/// is unchanged). `None` when it is already wrapped under the current KEK.
pub fn rewrap(ring: &KeyRing, ctx: &SecretContext<'_>, sealed: &[u8]) -> Result<Option<Vec<u8>>, SecretsError> {
    let mut e = parse(ctx, sealed)?;
    let current = ring.current();
    if e.kek == current.id() {
        return Ok(None);
    }
    let key = data_key(ring, ctx, &e)?;
    let wrap_nonce = crate::random::<12>()?;
    e.wrapped_key = B64.encode(encrypt(current.key(), &wrap_nonce, key.as_slice(), &ctx.wrap_data(current.id())));
    e.wrap_nonce = B64.encode(wrap_nonce.as_slice());
    e.kek = current.id().to_owned();
    Ok(Some(serde_json::to_vec(&e).expect("an envelope always serializes")))
}

#[cfg(test)]
mod tests {
    use super::*;

    const CTX: SecretContext<'static> = SecretContext { tenant: "acme", name: "webhook-key", version: 3 };

    #[test]
    fn seals_and_opens_without_plaintext_in_the_stored_bytes() {
        let ring = KeyRing::generate().expect("ring");
        let sealed = seal(&ring, &CTX, b"hunter2-hunter2").expect("seal");
        assert!(!sealed.windows(7).any(|w| w == b"hunter2"), "no plaintext in the envelope");
        let opened = open(&ring, &CTX, &sealed).expect("open");
        assert_eq!(opened.plaintext.as_slice(), b"hunter2-hunter2");
        assert_eq!(opened.kek, "kek-1");
        assert_ne!(seal(&ring, &CTX, b"hunter2-hunter2").expect("again"), sealed, "a fresh data key and nonce every time");
    }

    #[test]
    fn a_moved_ciphertext_does_not_open() {
        let ring = KeyRing::generate().expect("ring");
        let sealed = seal(&ring, &CTX, b"v").expect("seal");
        for other in [
            SecretContext { tenant: "other", ..CTX },
            SecretContext { name: "other", ..CTX },
            SecretContext { version: 4, ..CTX },
            // Length-prefixing: moving a character between tenant and name is a different context.
            SecretContext { tenant: "acmew", name: "ebhook-key", ..CTX },
        ] {
            assert!(matches!(open(&ring, &other, &sealed), Err(SecretsError::Tampered { .. })), "{other:?}");
        }
    }

    #[test]
    fn flipped_bytes_and_foreign_rings_fail_closed() {
        let ring = KeyRing::generate().expect("ring");
        let sealed = seal(&ring, &CTX, b"value").expect("seal");
        let mut e: serde_json::Value = serde_json::from_slice(&sealed).expect("json");
        for field in ["wrapped_key", "ciphertext", "nonce", "wrap_nonce"] {
            let mut bad = e.clone();
            let mut raw = B64.decode(bad[field].as_str().expect("str")).expect("b64");
            raw[0] ^= 1;
            bad[field] = B64.encode(raw).into();
            let bad = serde_json::to_vec(&bad).expect("json");
            assert!(matches!(open(&ring, &CTX, &bad), Err(SecretsError::Tampered { .. })), "{field}");
        }
        e["kek"] = "kek-9".into();
        let bad = serde_json::to_vec(&e).expect("json");
        assert!(matches!(open(&ring, &CTX, &bad), Err(SecretsError::UnknownKek { .. })));
        let stranger = KeyRing::generate().expect("another ring with the same id");
        assert!(matches!(open(&stranger, &CTX, &sealed), Err(SecretsError::Tampered { .. })));
        assert!(matches!(open(&ring, &CTX, b"plaintext from before"), Err(SecretsError::Format { .. })));
    }

    #[test]
    fn rotation_keeps_old_versions_readable_and_rewraps() {
        let ring = KeyRing::generate().expect("ring");
        let sealed = seal(&ring, &CTX, b"old").expect("seal");
        let rotated = ring.rotated().expect("rotate");
        assert_eq!(open(&rotated, &CTX, &sealed).expect("old version").plaintext.as_slice(), b"old");
        let rewrapped = rewrap(&rotated, &CTX, &sealed).expect("rewrap").expect("was under kek-1");
        let opened = open(&rotated, &CTX, &rewrapped).expect("open");
        assert_eq!((opened.plaintext.as_slice(), opened.kek.as_str()), (b"old".as_slice(), "kek-2"));
        assert!(rewrap(&rotated, &CTX, &rewrapped).expect("rewrap").is_none(), "already current");
        assert!(open(&ring, &CTX, &rewrapped).is_err(), "the old ring does not hold kek-2");
    }
}
