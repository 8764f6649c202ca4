//! Key-encryption keys.
//!
//! Text format (a key file, or the `RUNPLANE_KEK` environment variable): one key per
//! line, `<id> <base64 of 32 bytes>`; `#` starts a comment; `;` also separates keys so a
//! ring fits on one environment line. The **last** key is current: rotation appends.

use std::sync::{Arc, RwLock};

use base64::Engine as _;
use zeroize::Zeroizing;

use crate::SecretsError;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

pub(crate) struct Kek {
    id: String,
    key: Zeroizing<[u8; 32]>,
}

/// The key-encryption keys, oldest first; the last is current.
pub struct KeyRing {
    keys: Vec<Kek>,
}

/// A key ring the node can rotate while requests read it.
pub type SharedKeyRing = Arc<RwLock<Arc<KeyRing>>>;

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyRing(ids: {:?}, current: {:?})", self.ids(), self.current_id())
    }
}

impl KeyRing {
    /// Parses the text format. Refuses an empty ring, duplicate ids and keys that are
    /// not exactly 32 bytes.
    pub fn parse(text: &str) -> Result<KeyRing, SecretsError> {
        let mut keys: Vec<Kek> = Vec::new();
        for (n, line) in text.split(['\n', ';']).enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let mut parts = line.split_whitespace();
            let (Some(id), Some(b64), None) = (parts.next(), parts.next(), parts.next()) else {
                return Err(SecretsError::KeyRing(format!("entry {} is not '<id> <base64 key>'", n + 1)));
            };
            if !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') || id.len() > 64 {
                return Err(SecretsError::KeyRing(format!("key id {id:?} must be 1-64 characters of a-z, A-Z, 0-9, '-' and '_'")));
            }
            let bytes = Zeroizing::new(
                B64.decode(b64).map_err(|_| SecretsError::KeyRing(format!("key {id} is not valid base64")))?,
            );
            let key: [u8; 32] = bytes
                .as_slice()
                .try_into()
                .map_err(|_| SecretsError::KeyRing(format!("key {id} is {} bytes; a key-encryption key is 32 bytes", bytes.len())))?;
            if keys.iter().any(|k| k.id == id) {
                return Err(SecretsError::KeyRing(format!("key id {id} appears twice")));
            }
            keys.push(Kek { id: id.to_owned(), key: Zeroizing::new(key) });
        }
        if keys.is_empty() {
            return Err(SecretsError::KeyRing("it holds no key; generate one with `runplane secrets new-kek` or let the node create its key file".into()));
        }
        Ok(KeyRing { keys })
    }

    /// A ring with one new random key, `kek-1`.
    pub fn generate() -> Result<KeyRing, SecretsError> {
        Ok(KeyRing { keys: vec![Kek { id: "kek-1".into(), key: crate::random::<32>()? }] })
    }

    /// This ring plus a new random key, which becomes current (`kek-<n+1>`).
    pub fn rotated(&self) -> Result<KeyRing, SecretsError> {
        let mut n = self.keys.len() + 1;
        while self.keys.iter().any(|k| k.id == format!("kek-{n}")) {
            n += 1;
        }
        let mut keys: Vec<Kek> = self.keys.iter().map(|k| Kek { id: k.id.clone(), key: k.key.clone() }).collect();
        keys.push(Kek { id: format!("kek-{n}"), key: crate::random::<32>()? });
        Ok(KeyRing { keys })
    }

    /// The text format, for the key file (keep it mode 0600).
    pub fn to_text(&self) -> Zeroizing<String> {
        let mut text = String::from("# Runplane key-encryption keys: '<id> <base64>', the last one is current. Never remove a line.\n");
        for k in &self.keys {
            text.push_str(&format!("{} {}\n", k.id, B64.encode(k.key.as_slice())));
        }
        Zeroizing::new(text)
    }

    /// The id new versions are wrapped under.
    pub fn current_id(&self) -> &str {
        &self.current().id
    }

    /// Every key id, oldest first.
    pub fn ids(&self) -> Vec<&str> {
        self.keys.iter().map(|k| k.id.as_str()).collect()
    }

    pub(crate) fn current(&self) -> &Kek {
        // `parse`, `generate` and `rotated` never build an empty ring.
        self.keys.last().expect("a key ring holds at least one key")
    }

    pub(crate) fn get(&self, id: &str) -> Option<&Kek> {
        self.keys.iter().find(|k| k.id == id)
    }

    /// Wraps in an [`Arc`] and a lock, for sharing.
    /// Each key's id with a fingerprint of its material (SHA-256 over a fixed label and
    /// the key, as hex): what nodes sharing a control store compare to find a key file
    /// that differs, without ever storing a key.
    pub fn fingerprints(&self) -> Vec<(String, String)> {
        use sha2::{Digest, Sha256};
        self.keys
            .iter()
            .map(|k| {
                let mut h = Sha256::new();
                h.update(b"runplane kek fingerprint\0");
                h.update(k.key.as_slice());
                let hex: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
                (k.id.clone(), hex)
            })
            .collect()
    }

    pub fn shared(self) -> SharedKeyRing {
        Arc::new(RwLock::new(Arc::new(self)))
    }
}

impl Kek {
    pub(crate) fn id(&self) -> &str {
        &self.id
    }
    pub(crate) fn key(&self) -> &[u8; 32] {
        &self.key
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rotates_and_round_trips() {
        let ring = KeyRing::generate().expect("ring");
        assert_eq!(ring.current_id(), "kek-1");
        let rotated = ring.rotated().expect("rotate");
        assert_eq!(rotated.ids(), ["kek-1", "kek-2"]);
        let again = KeyRing::parse(&rotated.to_text()).expect("parse");
        assert_eq!(again.ids(), ["kek-1", "kek-2"]);
        assert_eq!(again.get("kek-1").map(|k| *k.key()), rotated.get("kek-1").map(|k| *k.key()));
        let one_line = format!("a {}; b {}", B64.encode([1u8; 32]), B64.encode([2u8; 32]));
        assert_eq!(KeyRing::parse(&one_line).expect("env form").current_id(), "b");
    }

    #[test]
    fn refuses_bad_rings_without_echoing_keys() {
        for (text, why) in [
            ("", "no key"),
            ("a AAAA", "3 bytes"),
            ("a !!!", "base64"),
            (&format!("a {0}\na {0}", B64.encode([0u8; 32])) as &str, "twice"),
            ("a b c", "is not"),
        ] {
            let e = KeyRing::parse(text).expect_err(text).to_string();
            assert!(e.contains(why), "{text:?}: {e}");
        }
        let ring = KeyRing::parse(&format!("k {}", B64.encode([7u8; 32]))).expect("ring");
        assert!(!format!("{ring:?}").contains(&B64.encode([7u8; 32])), "Debug never shows a key");
    }
}
