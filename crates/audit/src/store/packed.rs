//! How the embedded (SQLite) store keeps an event's canonical JSON: zstd-compressed
//! against a dictionary built into the binary ([`DICTIONARY`]), so the keys and the
//! shape every event shares cost next to nothing. An invocation event of about 1.3 KB
//! is kept in about 600 bytes, which also packs several entries into each page the
//! writer commits. The canonical JSON (what is hashed into the leaf) never changes:
//! the store unpacks it on the way out, and verification recomputes the leaf from it.
//!
//! [`DICTIONARY`] is part of the stored format: rows written with
//! [`EventCodec::ZstdV1`] need exactly these bytes to be read. A new dictionary is a
//! new codec number beside this one, never an edit (a test pins its digest).

use super::AuditError;

/// How an entry's event is stored (column `codec` of `audit_entries`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EventCodec {
    /// The canonical JSON as it is (rows written before packing).
    Plain = 0,
    /// zstd against [`DICTIONARY`].
    ZstdV1 = 1,
}

/// zstd level: one of the fast (negative) levels. Packing runs on the appending
/// caller's thread, in every append: at level 1 a 1.3 KB invocation event took ~5 µs
/// and became ~410 bytes, at -1 it takes ~3 µs for ~600 bytes, and the audit append
/// bench (64 writers, CPU-bound on two cores) went from ~70k to ~79k events/s.
const LEVEL: i32 = -1;
/// The largest event this store unpacks: far above any event the node writes (admin
/// events carry at most a config set's before and after).
const MAX_EVENT_BYTES: u64 = 64 << 20;

/// What events have in common: their keys in canonical order and the values many of
/// them repeat (invocations over HTTP and messages, admin actions, outcomes, usage).
pub(crate) const DICTIONARY: &[u8] = br#"{"action":"tenant.create","actor":"admin","binding_set_version":"1","capability_digest":null,"config_version":"0/sha256:","context":null,"details":{"reason":"","role":"instance-admin","targets":[]},"event_id":"","outcome":{"code":null,"http_status":200,"status":"ok"},"protocol_version":"1.0","request_digest":null,"response_digest":null,"target":"/v1/tenants","tenant":null,"time":"2026-01-01T00:00:00.000000000Z","usage":null}
{"action":"invoke.message","actor":"tenant:","binding_set_version":"1","capability_digest":"","config_version":"0/sha256:","context":{"accepted_at_unix_nanos":1,"agent_id":"","capability":"@1.0.0+","capability_digest":"","execution_seed":1,"invocation_id":"","node_id":"node-1","protocol_version":"1.0","session_id":"","tenant":"","trace_id":""},"details":{"journal_digest":"sha256:","subject":"","message_id":""},"event_id":"","outcome":{"code":"quota_exceeded","http_status":429,"status":"denied"},"protocol_version":"1.0","request_digest":"sha256:","response_digest":"sha256:","target":"","tenant":"","time":"2026-01-01T00:00:00.000000000Z","usage":{"fuel":1,"memory_peak_bytes":1114112,"port_calls":1,"request_bytes":0,"response_bytes":0}}
{"action":"invoke.http","actor":"tenant:/key_","binding_set_version":"1","capability_digest":"","config_version":"0/sha256:","context":{"accepted_at_unix_nanos":1,"agent_id":"key_","capability":"@1.0.0+","capability_digest":"","execution_seed":1,"invocation_id":"","node_id":"node-1","protocol_version":"1.0","session_id":"","tenant":"","trace_id":""},"details":{"journal_digest":"sha256:","method":"GET","path":"/"},"event_id":"","outcome":{"code":null,"http_status":200,"status":"ok"},"protocol_version":"1.0","request_digest":"sha256:","response_digest":"sha256:","target":"","tenant":"","time":"2026-01-01T00:00:00.000000000Z","usage":{"fuel":1,"memory_peak_bytes":1114112,"port_calls":1,"request_bytes":0,"response_bytes":0}}"#;

impl EventCodec {
    pub(crate) fn from_stored(n: i64) -> Result<Self, AuditError> {
        match n {
            0 => Ok(EventCodec::Plain),
            1 => Ok(EventCodec::ZstdV1),
            other => Err(AuditError::Unavailable(format!("an audit event is stored with codec {other}, which this version does not know; run a newer Runplane"))),
        }
    }

    /// The canonical JSON of an event stored as `stored`.
    pub(crate) fn unpack(self, stored: Vec<u8>) -> Result<String, AuditError> {
        let bytes = match self {
            EventCodec::Plain => stored,
            EventCodec::ZstdV1 => unpack(&stored)?,
        };
        String::from_utf8(bytes).map_err(|_| AuditError::Unavailable("a stored audit event is not UTF-8".into()))
    }
}

/// [`DICTIONARY`] digested once for compression and for decompression: a context that
/// references a prepared dictionary starts each event from its tables instead of
/// loading the dictionary again.
static PACKING: std::sync::LazyLock<zstd::dict::EncoderDictionary<'static>> = std::sync::LazyLock::new(|| zstd::dict::EncoderDictionary::copy(DICTIONARY, LEVEL));
static UNPACKING: std::sync::LazyLock<zstd::dict::DecoderDictionary<'static>> = std::sync::LazyLock::new(|| zstd::dict::DecoderDictionary::copy(DICTIONARY));

thread_local! {
    // One context per thread, reused: making one per event would cost more than
    // compressing the event.
    static PACKER: std::cell::RefCell<Option<zstd::bulk::Compressor<'static>>> = const { std::cell::RefCell::new(None) };
    static UNPACKER: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> = const { std::cell::RefCell::new(None) };
}

/// `json` packed with [`EventCodec::ZstdV1`].
pub(crate) fn pack(json: &str) -> Result<Vec<u8>, AuditError> {
    let failed = |e: std::io::Error| AuditError::Unavailable(format!("an audit event could not be compressed: {e}"));
    PACKER.with(|p| {
        let mut p = p.borrow_mut();
        let packer = match &mut *p {
            Some(packer) => packer,
            empty => empty.insert(zstd::bulk::Compressor::with_prepared_dictionary(&PACKING).map_err(failed)?),
        };
        packer.compress(json.as_bytes()).map_err(failed)
    })
}

fn unpack(stored: &[u8]) -> Result<Vec<u8>, AuditError> {
    let corrupt = |why: String| AuditError::Unavailable(format!("a stored audit event does not decompress ({why}); the audit file is damaged: verify the log"));
    // Packed frames carry their size: the buffer is allocated once, exactly.
    let size = match zstd::zstd_safe::get_frame_content_size(stored) {
        Ok(Some(n)) if n <= MAX_EVENT_BYTES => n as usize,
        Ok(Some(n)) => return Err(corrupt(format!("it claims {n} bytes"))),
        _ => return Err(corrupt("no content size".into())),
    };
    UNPACKER.with(|u| {
        let mut u = u.borrow_mut();
        let unpacker = match &mut *u {
            Some(unpacker) => unpacker,
            empty => empty.insert(zstd::bulk::Decompressor::with_prepared_dictionary(&UNPACKING).map_err(|e| corrupt(e.to_string()))?),
        };
        let mut out = Vec::with_capacity(size);
        unpacker.decompress_to_buffer(stored, &mut out).map_err(|e| corrupt(e.to_string()))?;
        Ok(out)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_packs_small_and_unpacks_to_the_same_bytes() {
        let json = r#"{"action":"invoke.http","actor":"tenant:acme/key_2363e8f3fd92e28c","binding_set_version":"1","capability_digest":"bed0ff23d36d6e805df2fafa36140efbb03984d836fec7d97143b00a77c283e2","config_version":"0/sha256:efde958eeeb0a86e","context":{"accepted_at_unix_nanos":1796301940631615891,"agent_id":"key_2363e8f3fd92e28c","capability":"orders@1.0.0+bed0ff23d36d","capability_digest":"bed0ff23d36d6e805df2fafa36140efbb03984d836fec7d97143b00a77c283e2","execution_seed":13350209698099992074,"invocation_id":"01a23bf0-6797-70e5-9162-15205bddfe76","node_id":"node-1","protocol_version":"1.0","session_id":"01a23bf0-6797-70e5-9162-15205bddfe76","tenant":"acme","trace_id":"6763a7af941751c88b2813d4756203e4"},"details":{"journal_digest":"sha256:304d73a680c94b8996ccf35f906f4e40f563a8bbfb96e618d8a14394a3f9b6ab","method":"GET","path":"/orders"},"event_id":"73748b17-0758-4347-b279-e330809b690f","outcome":{"code":null,"http_status":200,"status":"ok"},"protocol_version":"1.0","request_digest":"sha256:301ecfd6e7126405e3614cb0445db57da856c0dae228ac589275da47e2879401","response_digest":"sha256:9042d9f7534df78e65efb193e400810e2c1e2783fedca29012f144214ef7744d","target":"orders","tenant":"acme","time":"2026-12-03T12:45:40.632196434Z","usage":{"fuel":141001,"memory_peak_bytes":1114112,"port_calls":1,"request_bytes":0,"response_bytes":700}}"#;
        let packed = pack(json).expect("pack");
        assert!(packed.len() * 2 < json.len(), "{} bytes packed from {}", packed.len(), json.len());
        assert_eq!(EventCodec::ZstdV1.unpack(packed).expect("unpack"), json);
        assert_eq!(EventCodec::Plain.unpack(json.as_bytes().to_vec()).expect("plain"), json);
    }

    #[test]
    fn damaged_or_unknown_rows_are_errors_not_panics() {
        assert!(EventCodec::ZstdV1.unpack(b"not zstd".to_vec()).is_err());
        let mut packed = pack(r#"{"a":1}"#).expect("pack");
        packed.truncate(packed.len() - 1);
        assert!(EventCodec::ZstdV1.unpack(packed).is_err());
        assert!(EventCodec::from_stored(7).is_err());
    }

    /// Rows packed with codec 1 need exactly this dictionary: changing it would make
    /// them unreadable. A new dictionary is a new codec.
    #[test]
    fn the_v1_dictionary_never_changes() {
        assert_eq!(runplane_cjson::sha256_hex(DICTIONARY), PINNED, "DICTIONARY is part of the stored format; add a codec instead of editing it");
    }
    const PINNED: &str = "70c3bf01521396dc8aae7b94b04a96a93b76bf79f169b62f436bae32564106c2";
}
