use std::fmt;

use crate::PortError;

/// A tenant's identifier: 1-63 characters of `a-z`, `0-9` and `-`, starting with a
/// letter or digit. Safe to use as a key prefix, a path segment and a subject token.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(transparent)]
pub struct TenantId(String);

impl TenantId {
    /// Validates `s` as a tenant id.
    pub fn new(s: &str) -> Result<Self, PortError> {
        let ok = !s.is_empty()
            && s.len() <= 63
            && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !s.starts_with('-');
        if ok {
            Ok(TenantId(s.to_owned()))
        } else {
            Err(PortError::Invalid(format!(
                "tenant id {s:?} is not valid: use 1-63 characters of a-z, 0-9 and '-', not starting with '-'"
            )))
        }
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for TenantId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        TenantId::new(&s).map_err(serde::de::Error::custom)
    }
}

/// Validates a name a capability chooses (collection, stream, bucket, container, topic,
/// key, object name) so adapters can use it in keys and paths without escaping surprises.
///
/// `what` names the kind of thing for the error message. Allowed: 1-`max` bytes, no
/// control characters, no `..` path segment, no leading `/`, no backslash.
pub fn validate_name(what: &str, name: &str, max: usize) -> Result<(), PortError> {
    let problem = if name.is_empty() {
        Some("is empty")
    } else if name.len() > max {
        Some("is too long")
    } else if name.chars().any(|c| c.is_control()) {
        Some("contains a control character")
    } else if name.contains('\\') {
        Some("contains a backslash")
    } else if name.starts_with('/') || name.ends_with('/') || name.contains("//") {
        Some("has an empty path segment")
    } else if name.split('/').any(|seg| seg == ".." || seg == ".") {
        Some("contains a '.' or '..' path segment")
    } else {
        None
    };
    match problem {
        None => Ok(()),
        Some(p) => Err(PortError::Invalid(format!(
            "{what} name {name:?} {p}; use 1-{max} printable characters, '/'-separated segments, no '.' or '..' segments"
        ))),
    }
}
