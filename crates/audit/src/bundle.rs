//! Offline verification of an exported log: a bundle holds a log's entries (their
//! exact canonical JSON bytes, the Merkle leaves), a signed checkpoint and the public
//! key; [`verify`] recomputes everything from those bytes alone. Pure: no I/O.

use serde::{Deserialize, Serialize};

use crate::checkpoint::{Checkpoint, NoteError, NoteVerifier};
use crate::merkle::{self, Hash};
use crate::tree::Frontier;

/// The format tag of a bundle.
pub const BUNDLE_FORMAT: &str = "runplane-audit-bundle/1";

/// What `runplane audit export` writes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Bundle {
    pub format: String,
    pub protocol_version: String,
    /// `admin` or `tenant:<id>`.
    pub log: String,
    /// The note verifier key of the instance (`<name>+<id>+<key>`).
    pub verifier_key: String,
    /// The signed checkpoint the entries are checked against.
    pub checkpoint: String,
    /// Entry `i` is the canonical JSON of event `i`: the exact leaf bytes.
    pub entries: Vec<String>,
    /// Lowercase hex leaf hashes as the node stored them, when exported (lets a
    /// report name the first entry that differs from what the node recorded).
    #[serde(default)]
    pub leaf_hashes: Vec<String>,
}

/// What a successful verification established.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub log: String,
    pub size: u64,
    pub root: Hash,
    /// The earlier checkpoint the log was proven consistent with.
    pub consistent_with: Option<(u64, Hash)>,
}

/// Why a bundle did not verify; each says which index or which hash.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("not a Runplane audit bundle: {0}")]
    Format(String),
    #[error("the checkpoint does not verify: {0}")]
    Signature(NoteError),
    #[error("the checkpoint is for {found:?} but the bundle holds log {expected:?}")]
    Origin { expected: String, found: String },
    #[error("the checkpoint covers {size} entries but the bundle holds only {have}: entries were removed")]
    Missing { size: u64, have: u64 },
    #[error("entry {index}: it hashes to {computed} but the node recorded leaf hash {recorded}: the entry was altered")]
    Entry { index: u64, computed: String, recorded: String },
    #[error("the {size} entries give root {computed} but the signed checkpoint says {signed}: an entry was altered, removed or reordered")]
    Root { size: u64, computed: String, signed: String },
    #[error("the earlier checkpoint (size {size}) does not verify: {problem}")]
    Earlier { size: u64, problem: String },
    #[error("the log is not consistent with the earlier checkpoint of size {size}: it recorded root {earlier} but the entries give {computed}; history was rewritten")]
    Inconsistent { size: u64, earlier: String, computed: String },
}

/// Checks `bundle`: the checkpoint's signature (by `pinned_key` if given, else by the
/// key in the bundle), every entry against the recorded leaf hashes, the root of the
/// checkpoint's size, and — with `earlier`, a previously saved signed checkpoint —
/// that the log only grew since (a consistency proof from the entries, verified).
pub fn verify(bundle: &Bundle, earlier: Option<&str>, pinned_key: Option<&str>) -> Result<Report, VerifyError> {
    if bundle.format != BUNDLE_FORMAT {
        return Err(VerifyError::Format(format!("format is {:?}, expected {BUNDLE_FORMAT:?}", bundle.format)));
    }
    if bundle.protocol_version.split('.').next() != Some("1") {
        return Err(VerifyError::Format(format!("protocol version {:?} is not 1.x", bundle.protocol_version)));
    }
    let verifier = NoteVerifier::parse(pinned_key.unwrap_or(&bundle.verifier_key)).map_err(VerifyError::Signature)?;
    let cp = Checkpoint::open(&bundle.checkpoint, &verifier).map_err(VerifyError::Signature)?;
    let expected_origin = format!("{}/{}", verifier.name(), bundle.log);
    if cp.origin != expected_origin {
        return Err(VerifyError::Origin { expected: expected_origin, found: cp.origin });
    }
    let have = bundle.entries.len() as u64;
    if have < cp.size {
        return Err(VerifyError::Missing { size: cp.size, have });
    }
    let earlier = earlier
        .map(|note| {
            let e = Checkpoint::open(note, &verifier).map_err(|e| VerifyError::Earlier { size: 0, problem: e.to_string() })?;
            if e.origin != expected_origin {
                return Err(VerifyError::Earlier { size: e.size, problem: format!("it is for {:?}, not {expected_origin:?}", e.origin) });
            }
            if e.size > cp.size {
                return Err(VerifyError::Earlier { size: e.size, problem: format!("it is newer than the bundle's checkpoint (size {})", cp.size) });
            }
            Ok(e)
        })
        .transpose()?;

    let mut leaves = Vec::with_capacity(cp.size as usize);
    let mut frontier = Frontier::default();
    let mut earlier_root = None;
    for (index, entry) in bundle.entries.iter().take(cp.size as usize).enumerate() {
        let leaf = merkle::leaf_hash(entry.as_bytes());
        if let Some(recorded) = bundle.leaf_hashes.get(index)
            && *recorded != hex::encode(leaf)
        {
            return Err(VerifyError::Entry { index: index as u64, computed: hex::encode(leaf), recorded: recorded.clone() });
        }
        if earlier.as_ref().is_some_and(|e| e.size == frontier.size()) {
            earlier_root = Some(frontier.root());
        }
        frontier.push(leaf, |_, _| {});
        leaves.push(leaf);
    }
    if earlier.as_ref().is_some_and(|e| e.size == frontier.size()) {
        earlier_root = Some(frontier.root());
    }
    let root = frontier.root();
    if root != cp.root {
        return Err(VerifyError::Root { size: cp.size, computed: hex::encode(root), signed: hex::encode(cp.root) });
    }
    let consistent_with = match (earlier, earlier_root) {
        (Some(e), Some(computed)) => {
            // Prove it the way a monitor without the entries would: a consistency proof
            // between the two roots, checked by the RFC 9162 verifier.
            let proof = merkle::consistency_proof(e.size as usize, &leaves).unwrap_or_default();
            if computed != e.root || merkle::verify_consistency(e.size, cp.size, &proof, &e.root, &root).is_err() {
                return Err(VerifyError::Inconsistent { size: e.size, earlier: hex::encode(e.root), computed: hex::encode(computed) });
            }
            Some((e.size, e.root))
        }
        _ => None,
    };
    Ok(Report { log: bundle.log.clone(), size: cp.size, root, consistent_with })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::NoteSigner;

    fn signer() -> NoteSigner {
        NoteSigner::new("runplane/t", [3; 32]).expect("signer")
    }

    fn bundle(n: usize) -> (Bundle, Vec<String>) {
        let s = signer();
        let entries: Vec<String> = (0..n).map(|i| format!("{{\"n\":{i}}}")).collect();
        let leaves: Vec<Hash> = entries.iter().map(|e| merkle::leaf_hash(e.as_bytes())).collect();
        let note = |size: usize| {
            s.sign(&Checkpoint { origin: "runplane/t/admin".into(), size: size as u64, root: merkle::root(&leaves[..size]) }.body()).expect("sign")
        };
        let b = Bundle {
            format: BUNDLE_FORMAT.into(),
            protocol_version: "1.0".into(),
            log: "admin".into(),
            verifier_key: s.verifier().key_string(),
            checkpoint: note(n),
            entries,
            leaf_hashes: leaves.iter().map(hex::encode).collect(),
        };
        (b, (0..=n).map(note).collect())
    }

    #[test]
    fn an_intact_bundle_verifies_with_and_without_an_earlier_checkpoint() {
        let (b, notes) = bundle(21);
        assert_eq!(verify(&b, None, None).expect("verifies").size, 21);
        for (m, note) in notes.iter().enumerate() {
            let r = verify(&b, Some(note), Some(&b.verifier_key)).unwrap_or_else(|e| panic!("since {m}: {e}"));
            assert_eq!(r.consistent_with.map(|c| c.0), Some(m as u64));
        }
    }

    #[test]
    fn tampering_is_reported_with_the_index_or_the_hash() {
        let (b, notes) = bundle(21);
        let mut edited = b.clone();
        edited.entries[7] = "{\"n\":700}".into();
        assert!(matches!(verify(&edited, None, None), Err(VerifyError::Entry { index: 7, .. })));

        edited.leaf_hashes.clear();
        assert!(matches!(verify(&edited, None, None), Err(VerifyError::Root { size: 21, .. })));

        let mut reordered = b.clone();
        reordered.entries.swap(2, 3);
        reordered.leaf_hashes.swap(2, 3);
        assert!(matches!(verify(&reordered, None, None), Err(VerifyError::Root { .. })));

        let mut truncated = b.clone();
        truncated.entries.pop();
        assert!(matches!(verify(&truncated, None, None), Err(VerifyError::Missing { size: 21, have: 20 })));

        let mut forged = b.clone();
        forged.checkpoint = forged.checkpoint.replacen("\n21\n", "\n20\n", 1);
        assert!(matches!(verify(&forged, None, None), Err(VerifyError::Signature(NoteError::BadSignature { .. }))));

        let other = NoteSigner::new("runplane/t", [4; 32]).expect("signer").verifier().key_string();
        assert!(matches!(verify(&b, None, Some(&other)), Err(VerifyError::Signature(NoteError::NoSignature { .. }))));

        // History rewritten before an earlier checkpoint: a bundle re-signed over
        // altered entries is not consistent with what was saved.
        let (mut rewritten, _) = bundle(21);
        rewritten.entries[1] = "{\"n\":\"rewritten\"}".into();
        rewritten.leaf_hashes.clear();
        let leaves: Vec<Hash> = rewritten.entries.iter().map(|e| merkle::leaf_hash(e.as_bytes())).collect();
        rewritten.checkpoint = signer().sign(&Checkpoint { origin: "runplane/t/admin".into(), size: 21, root: merkle::root(&leaves) }.body()).expect("sign");
        assert!(verify(&rewritten, None, None).is_ok(), "self-consistent on its own");
        assert!(matches!(verify(&rewritten, Some(&notes[10]), None), Err(VerifyError::Inconsistent { size: 10, .. })));
    }
}
