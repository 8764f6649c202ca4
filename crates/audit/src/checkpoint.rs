//! Signed checkpoints: the C2SP `tlog-checkpoint` body inside a C2SP `signed-note`,
//! signed with Ed25519 — the format of Go's `golang.org/x/mod/sumdb/note`, so the
//! standard tooling of transparency logs reads Runplane's checkpoints.
//!
//! ```text
//! runplane/6f1c…/tenant:acme          origin: names the log
//! 42                                  tree size, decimal
//! qH2q…=                              root hash, standard base64
//!                                     blank line
//! — runplane/6f1c… AbCd…              em dash, key name, base64(key id ‖ signature)
//! ```
//!
//! The key ID is the first 4 bytes of `SHA-256(name ‖ "\n" ‖ 0x01 ‖ public key)`; the
//! signed message is the note text (the body, ending in a newline). Keys are written
//! as note key strings: `PRIVATE+KEY+<name>+<id hex>+<base64(0x01 ‖ seed)>` for the
//! signer, `<name>+<id hex>+<base64(0x01 ‖ public key)>` for verifiers. Pure: no I/O.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::{Signer as _, SigningKey, Verifier as _, VerifyingKey};
use sha2::{Digest, Sha256};

use crate::merkle::Hash;

/// The signature-type byte of Ed25519 in note keys.
const ED25519: u8 = 0x01;
const SIGNATURE_PREFIX: &str = "\u{2014} ";

/// Why a key, a note or a checkpoint was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoteError {
    #[error("malformed key: {0}")]
    BadKey(String),
    #[error("malformed note: {0}")]
    Malformed(String),
    #[error("the note carries no signature by key {name} ({id:08x}); it is not signed by this log's key")]
    NoSignature { name: String, id: u32 },
    #[error("the signature by key {name} ({id:08x}) does not verify: the note was altered or signed by another key")]
    BadSignature { name: String, id: u32 },
    #[error("malformed checkpoint: {0}")]
    BadCheckpoint(String),
}

/// Whether `name` can be a key name or a checkpoint origin: non-empty, no whitespace, no `+`.
fn valid_name(name: &str) -> bool {
    !name.is_empty() && !name.chars().any(|c| c.is_whitespace() || c == '+')
}

fn key_id(name: &str, public: &[u8; 32]) -> u32 {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update(b"\n");
    h.update([ED25519]);
    h.update(public);
    let d = h.finalize();
    u32::from_be_bytes([d[0], d[1], d[2], d[3]])
}

/// Decodes `<id hex>+<base64(0x01 ‖ 32 bytes)>` for `name`.
fn decode_key(name: &str, id_hex: &str, data: &str) -> Result<(u32, [u8; 32]), NoteError> {
    if !valid_name(name) {
        return Err(NoteError::BadKey(format!("key name {name:?} is empty or has a space or '+'")));
    }
    if id_hex.len() != 8 {
        return Err(NoteError::BadKey(format!("key id {id_hex:?} is not 8 hex digits")));
    }
    let id = u32::from_str_radix(id_hex, 16).map_err(|_| NoteError::BadKey(format!("key id {id_hex:?} is not hex")))?;
    let bytes = B64.decode(data).map_err(|_| NoteError::BadKey("key data is not base64".into()))?;
    match bytes.split_first() {
        Some((&ED25519, rest)) if rest.len() == 32 => {
            let mut key = [0u8; 32];
            key.copy_from_slice(rest);
            Ok((id, key))
        }
        Some((&ED25519, rest)) => Err(NoteError::BadKey(format!("an Ed25519 key has 32 bytes, found {}", rest.len()))),
        _ => Err(NoteError::BadKey("only Ed25519 keys (type 0x01) are supported".into())),
    }
}

/// An Ed25519 note signer (the instance's audit key).
pub struct NoteSigner {
    name: String,
    id: u32,
    key: SigningKey,
}

impl NoteSigner {
    /// A signer named `name` from a 32-byte Ed25519 seed.
    pub fn new(name: &str, seed: [u8; 32]) -> Result<Self, NoteError> {
        if !valid_name(name) {
            return Err(NoteError::BadKey(format!("key name {name:?} is empty or has a space or '+'")));
        }
        let key = SigningKey::from_bytes(&seed);
        Ok(NoteSigner { name: name.to_owned(), id: key_id(name, key.verifying_key().as_bytes()), key })
    }

    /// Parses `PRIVATE+KEY+<name>+<id hex>+<base64(0x01 ‖ seed)>`.
    pub fn parse(s: &str) -> Result<Self, NoteError> {
        let rest = s.trim().strip_prefix("PRIVATE+KEY+").ok_or_else(|| NoteError::BadKey("a signer key starts with PRIVATE+KEY+".into()))?;
        let mut parts = rest.splitn(3, '+');
        let (Some(name), Some(id_hex), Some(data)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(NoteError::BadKey("expected PRIVATE+KEY+<name>+<id>+<key>".into()));
        };
        let (id, seed) = decode_key(name, id_hex, data)?;
        let signer = NoteSigner::new(name, seed)?;
        if signer.id != id {
            return Err(NoteError::BadKey(format!("key id {id:08x} does not match the key (expected {:08x})", signer.id)));
        }
        Ok(signer)
    }

    /// The signer key string (secret: write it to a 0600 file only).
    pub fn key_string(&self) -> String {
        let mut data = vec![ED25519];
        data.extend_from_slice(self.key.as_bytes());
        format!("PRIVATE+KEY+{}+{:08x}+{}", self.name, self.id, B64.encode(data))
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The matching verifier.
    pub fn verifier(&self) -> NoteVerifier {
        NoteVerifier { name: self.name.clone(), id: self.id, key: self.key.verifying_key() }
    }

    /// Signs `text` (which must end in a newline) and returns the signed note.
    pub fn sign(&self, text: &str) -> Result<String, NoteError> {
        if !text.ends_with('\n') {
            return Err(NoteError::Malformed("note text must end with a newline".into()));
        }
        let signature = self.key.sign(text.as_bytes());
        let mut blob = self.id.to_be_bytes().to_vec();
        blob.extend_from_slice(&signature.to_bytes());
        Ok(format!("{text}\n{SIGNATURE_PREFIX}{} {}\n", self.name, B64.encode(blob)))
    }
}

/// An Ed25519 note verifier (the instance's public audit key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoteVerifier {
    name: String,
    id: u32,
    key: VerifyingKey,
}

impl NoteVerifier {
    /// Parses `<name>+<id hex>+<base64(0x01 ‖ public key)>`.
    pub fn parse(s: &str) -> Result<Self, NoteError> {
        let mut parts = s.trim().splitn(3, '+');
        let (Some(name), Some(id_hex), Some(data)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(NoteError::BadKey("expected <name>+<id>+<key>".into()));
        };
        let (id, public) = decode_key(name, id_hex, data)?;
        if key_id(name, &public) != id {
            return Err(NoteError::BadKey(format!("key id {id:08x} does not match the key (expected {:08x})", key_id(name, &public))));
        }
        let key = VerifyingKey::from_bytes(&public).map_err(|_| NoteError::BadKey("not a valid Ed25519 public key".into()))?;
        Ok(NoteVerifier { name: name.to_owned(), id, key })
    }

    pub fn key_string(&self) -> String {
        let mut data = vec![ED25519];
        data.extend_from_slice(self.key.as_bytes());
        format!("{}+{:08x}+{}", self.name, self.id, B64.encode(data))
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Checks that `note` carries a valid signature by this key; returns its text.
    /// Signatures by other keys are ignored, as note verifiers do.
    pub fn open<'a>(&self, note: &'a str) -> Result<&'a str, NoteError> {
        let split = note.rfind("\n\n").ok_or_else(|| NoteError::Malformed("no blank line before the signatures".into()))?;
        let (text, signatures) = (&note[..=split], &note[split + 2..]);
        if !signatures.ends_with('\n') {
            return Err(NoteError::Malformed("the signature block must end with a newline".into()));
        }
        for line in signatures.lines() {
            let rest = line.strip_prefix(SIGNATURE_PREFIX).ok_or_else(|| NoteError::Malformed(format!("signature line {line:?} does not start with an em dash and a space")))?;
            let (name, blob) = rest.split_once(' ').ok_or_else(|| NoteError::Malformed(format!("signature line {line:?} has no signature")))?;
            let blob = B64.decode(blob).map_err(|_| NoteError::Malformed(format!("signature of {name} is not base64")))?;
            if name != self.name || blob.len() < 4 || blob[..4] != self.id.to_be_bytes() {
                continue;
            }
            let bad = || NoteError::BadSignature { name: self.name.clone(), id: self.id };
            let sig = ed25519_dalek::Signature::from_slice(&blob[4..]).map_err(|_| bad())?;
            self.key.verify(text.as_bytes(), &sig).map_err(|_| bad())?;
            return Ok(text);
        }
        Err(NoteError::NoSignature { name: self.name.clone(), id: self.id })
    }
}

/// A checkpoint: a log's origin, size and root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub origin: String,
    pub size: u64,
    pub root: Hash,
}

impl Checkpoint {
    /// The note text: origin, size and base64 root, one per line.
    pub fn body(&self) -> String {
        format!("{}\n{}\n{}\n", self.origin, self.size, B64.encode(self.root))
    }

    /// Parses a checkpoint body (extension lines after the root are allowed and ignored).
    pub fn parse(text: &str) -> Result<Self, NoteError> {
        let bad = |m: &str| NoteError::BadCheckpoint(m.to_owned());
        let mut lines = text.split('\n');
        let origin = lines.next().filter(|o| !o.is_empty()).ok_or_else(|| bad("the first line (origin) is empty"))?;
        let size = lines.next().ok_or_else(|| bad("no size line"))?;
        if size.is_empty() || !size.bytes().all(|b| b.is_ascii_digit()) || (size.len() > 1 && size.starts_with('0')) {
            return Err(bad(&format!("size {size:?} is not a decimal number without leading zeros")));
        }
        let size = size.parse().map_err(|_| bad("size does not fit in 64 bits"))?;
        let root = lines.next().ok_or_else(|| bad("no root line"))?;
        let root: Hash = B64
            .decode(root)
            .ok()
            .and_then(|r| r.try_into().ok())
            .ok_or_else(|| bad(&format!("root {root:?} is not the base64 of 32 bytes")))?;
        Ok(Checkpoint { origin: origin.to_owned(), size, root })
    }

    /// Parses a signed note, checks `verifier`'s signature and returns the checkpoint.
    pub fn open(note: &str, verifier: &NoteVerifier) -> Result<Self, NoteError> {
        Checkpoint::parse(verifier.open(note)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example key pair of Go's `golang.org/x/mod/sumdb/note` documentation.
    const GO_SIGNER: &str = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz";
    const GO_VERIFIER: &str = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
    const GO_TEXT: &str = "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n";
    const GO_SIGNED: &str = "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n\n\u{2014} PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n";

    #[test]
    fn go_note_example_round_trips() {
        let signer = NoteSigner::parse(GO_SIGNER).expect("signer");
        assert_eq!(signer.key_string(), GO_SIGNER);
        assert_eq!(signer.verifier().key_string(), GO_VERIFIER);
        assert_eq!(signer.sign(GO_TEXT).expect("sign"), GO_SIGNED, "Ed25519 is deterministic: same bytes as Go");
        let verifier = NoteVerifier::parse(GO_VERIFIER).expect("verifier");
        assert_eq!(verifier.open(GO_SIGNED).expect("verifies"), GO_TEXT);
    }

    #[test]
    fn altered_notes_and_other_keys_are_refused() {
        let signer = NoteSigner::new("runplane/test", [7; 32]).expect("signer");
        let cp = Checkpoint { origin: "runplane/test/admin".into(), size: 42, root: [9; 32] };
        let note = signer.sign(&cp.body()).expect("sign");
        assert_eq!(Checkpoint::open(&note, &signer.verifier()).expect("opens"), cp);

        let altered = note.replacen("42", "43", 1);
        assert!(matches!(Checkpoint::open(&altered, &signer.verifier()), Err(NoteError::BadSignature { .. })));
        let other = NoteSigner::new("runplane/test", [8; 32]).expect("signer");
        assert!(matches!(Checkpoint::open(&note, &other.verifier()), Err(NoteError::NoSignature { .. })));
        assert!(matches!(Checkpoint::open("no blank line", &signer.verifier()), Err(NoteError::Malformed(_))));
    }

    #[test]
    fn checkpoint_bodies_are_strict() {
        assert!(Checkpoint::parse("o\n007\nAAAA\n").is_err(), "leading zeros");
        assert!(Checkpoint::parse("o\n7\nAAAA\n").is_err(), "root is not 32 bytes");
        assert!(Checkpoint::parse("\n7\n").is_err(), "empty origin");
        let cp = Checkpoint { origin: "o".into(), size: 0, root: [0; 32] };
        assert_eq!(Checkpoint::parse(&format!("{}ext line\n", cp.body())).expect("extension lines"), cp);
        assert!(NoteSigner::new("has space", [1; 32]).is_err());
        assert!(NoteSigner::new("has+plus", [1; 32]).is_err());
    }
}
