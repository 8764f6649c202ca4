//! Topic names and their broker form, shared by every messaging adapter.
//!
//! In shared mode a tenant's message goes to `<prefix>.<tenant>.<topic>` (a NATS subject
//! or an AMQP routing key); a subscription listens on `<prefix>.*.<topic>` and learns the
//! tenant from the second token, which the publishing adapter set, never the capability.
//! Tenant ids contain no `.`, so one `*` token matches exactly the tenant.

use runplane_ports::{PortError, PortResult, validate_name};

/// Checks a topic a capability names.
pub(crate) fn check_topic(topic: &str) -> PortResult<()> {
    validate_name("topic", topic, 128)?;
    if topic.contains(['*', '>', '#', ' ']) {
        return Err(PortError::Invalid(format!("topic {topic:?} must not contain '*', '>', '#' or spaces")));
    }
    Ok(())
}

/// Checks a broker prefix (subject prefix, stream, exchange and queue names).
pub(crate) fn check_prefix(broker: &str, prefix: &str) -> PortResult<()> {
    let ok = !prefix.is_empty() && prefix.len() <= 32 && prefix.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(PortError::Invalid(format!("{broker} prefix {prefix:?} must be 1-32 characters of a-z, 0-9 and '_'")))
    }
}

/// Checks a subscription group name.
pub(crate) fn check_group(group: &str) -> PortResult<()> {
    let ok = !group.is_empty()
        && group.len() <= 64
        && group.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(PortError::Invalid(format!("subscription group {group:?} must be 1-64 characters of a-z, 0-9, '_' and '-'")))
    }
}

/// The topic as subject tokens: `.`-separated segments stay tokens; any other byte
/// outside `A-Za-z0-9_-` is percent-encoded (so the mapping is one-to-one). A topic with
/// an empty segment has all its dots encoded.
pub(crate) fn encode_topic(topic: &str) -> String {
    let keep_dots = !topic.starts_with('.') && !topic.ends_with('.') && !topic.contains("..");
    let mut out = String::with_capacity(topic.len());
    for b in topic.bytes() {
        if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || (b == b'.' && keep_dots) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The inverse of [`encode_topic`].
pub(crate) fn decode_topic(token: &str) -> Option<String> {
    let bytes = token.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = token.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Splits `<prefix>.<tenant>.<topic>` back into tenant and topic.
pub(crate) fn split_subject<'s>(prefix: &str, subject: &'s str) -> Option<(&'s str, &'s str)> {
    let rest = subject.strip_prefix(prefix)?.strip_prefix('.')?;
    rest.split_once('.')
}

/// Message headers travel as one JSON array of pairs, so order, repeats and any
/// characters survive every broker unchanged.
pub(crate) const HEADERS_KEY: &str = "runplane-headers";

pub(crate) fn encode_headers(headers: &[(String, String)]) -> String {
    serde_json::to_string(headers).unwrap_or_else(|_| "[]".into())
}

pub(crate) fn decode_headers(text: &str) -> Vec<(String, String)> {
    serde_json::from_str(text).unwrap_or_default()
}

/// Lowercase hex SHA-256 of `s` (names broker objects derived from a topic).
pub(crate) fn digest(s: &str) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(s.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_round_trip_and_never_collide() {
        let topics = ["order.created", "a..b", ".x", "ünï", "a%2Eb", "a.b", "x/y"];
        let encoded: Vec<String> = topics.iter().map(|t| encode_topic(t)).collect();
        for (t, e) in topics.iter().zip(&encoded) {
            assert_eq!(decode_topic(e).as_deref(), Some(*t));
            assert!(!e.contains(['*', '>', '#', ' ']));
            assert!(!e.split('.').any(str::is_empty), "{e} has an empty token");
        }
        let mut unique = encoded.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), encoded.len());
        assert_eq!(split_subject("rp", "rp.acme.order.created"), Some(("acme", "order.created")));
    }
}
