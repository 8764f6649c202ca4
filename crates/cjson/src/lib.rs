//! Canonical JSON and the hash over it (spec §6.1).
//!
//! [`to_string`] produces exactly the bytes of Python 3's
//! `json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)`:
//! keys sorted by code point, no whitespace, every non-ASCII character escaped as
//! `\uXXXX` (astral characters as surrogate pairs), integers exact at any size,
//! floats in Python's `repr` form (shortest round-trip digits, a tie between two equally
//! near ones broken to the even digit). NaN and ±Infinity are refused.
//!
//! ```
//! let v = serde_json::json!({"b": 1.0, "a": "é", "c": [1e-7, 10000000000000000.0]});
//! assert_eq!(runplane_cjson::to_string(&v).unwrap(), r#"{"a":"\u00e9","b":1.0,"c":[1e-07,1e+16]}"#);
//! ```
//!
//! Every hash Runplane computes over structured data is [`hash`]: the lowercase hex
//! SHA-256 of these bytes.

use std::fmt::Write as _;

use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// Why a value has no canonical form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CanonError {
    /// The text is not JSON.
    #[error("invalid JSON: {message}; check the input is one complete JSON value")]
    InvalidJson { message: String },
    /// A number is NaN or infinite (or overflows a 64-bit float).
    #[error("the number at {path} is not finite; canonical JSON has no NaN or Infinity, so send a finite number or a string")]
    NonFinite { path: String },
    /// A value could not be serialised to JSON at all.
    #[error("cannot serialise to JSON: {message}")]
    Serialize { message: String },
}

/// The canonical JSON text of `value`.
pub fn to_string(value: &Value) -> Result<String, CanonError> {
    let mut out = String::with_capacity(128);
    let mut path = String::from("$");
    write_value(&mut out, value, &mut path)?;
    Ok(out)
}

/// The canonical JSON bytes of `value`.
pub fn to_vec(value: &Value) -> Result<Vec<u8>, CanonError> {
    to_string(value).map(String::into_bytes)
}

/// Serialises `v` with serde, then canonicalises.
pub fn from_serialize<T: Serialize + ?Sized>(v: &T) -> Result<String, CanonError> {
    let value = serde_json::to_value(v).map_err(|e| CanonError::Serialize { message: e.to_string() })?;
    to_string(&value)
}

/// Lowercase hex SHA-256 of the canonical JSON of `value`.
pub fn hash(value: &Value) -> Result<String, CanonError> {
    Ok(sha256_hex(to_string(value)?.as_bytes()))
}

/// Lowercase hex SHA-256 of the canonical JSON of a serialisable value.
pub fn hash_serialize<T: Serialize + ?Sized>(v: &T) -> Result<String, CanonError> {
    Ok(sha256_hex(from_serialize(v)?.as_bytes()))
}

/// Lowercase hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Parses any JSON text and returns its canonical form.
pub fn parse_canonical(text: &str) -> Result<String, CanonError> {
    let value: Value = serde_json::from_str(text).map_err(|e| CanonError::InvalidJson { message: e.to_string() })?;
    to_string(&value)
}

fn write_value(out: &mut String, value: &Value, path: &mut String) -> Result<(), CanonError> {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(true) => out.push_str("true"),
        Value::Bool(false) => out.push_str("false"),
        Value::Number(n) => write_number(out, &n.to_string(), path)?,
        Value::String(s) => write_string(out, s),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                let len = path.len();
                let _ = write!(path, "[{i}]");
                write_value(out, item, path)?;
                path.truncate(len);
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            // UTF-8 byte order is code point order, which is how Python sorts str keys.
            keys.sort_unstable();
            out.push('{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_string(out, key);
                out.push(':');
                let len = path.len();
                let _ = write!(path, ".{key}");
                write_value(out, &map[key], path)?;
                path.truncate(len);
            }
            out.push('}');
        }
    }
    Ok(())
}

/// `literal` is the number as written (serde_json's `arbitrary_precision` keeps it).
fn write_number(out: &mut String, literal: &str, path: &str) -> Result<(), CanonError> {
    let is_float = literal.bytes().any(|b| matches!(b, b'.' | b'e' | b'E'));
    if !is_float {
        // Python reads an integer literal exactly and prints it back; only "-0" changes.
        let digits = literal.strip_prefix('-').unwrap_or(literal);
        if digits.bytes().all(|b| b == b'0') {
            out.push('0');
        } else {
            out.push_str(literal);
        }
        return Ok(());
    }
    let f: f64 = literal.parse().map_err(|_| CanonError::NonFinite { path: path.to_owned() })?;
    if !f.is_finite() {
        return Err(CanonError::NonFinite { path: path.to_owned() });
    }
    write_float(out, f);
    Ok(())
}

/// Python's `float.__repr__` for a finite `f`: the shortest digits that read back as `f`,
/// in exponent form when the decimal exponent is below -4 or at least 16.
///
/// When two digit strings of that shortest length are equally near `f` (27581622253495.0625
/// lies exactly between …062 and …063), Python (David Gay's dtoa, mode 0) takes the one
/// ending in an even digit. Ryū makes the same choice; Rust's own `{:e}` and `{:?}` round
/// such ties up, so they are not used here. Only Ryū's digits and decimal point are taken:
/// its layout (`1e16`, `1e-7`) is not Python's.
fn write_float(out: &mut String, f: f64) {
    if f.is_sign_negative() {
        out.push('-');
    }
    let mut buffer = ryu::Buffer::new();
    let (digits, decpt) = digits_and_point(buffer.format_finite(f.abs()));
    if digits.is_empty() {
        out.push_str("0.0");
        return;
    }
    let n = digits.len() as i32;
    if (-4 < decpt) && (decpt <= 16) {
        if decpt <= 0 {
            out.push_str("0.");
            out.extend(std::iter::repeat_n('0', (-decpt) as usize));
            out.push_str(&digits);
        } else if decpt >= n {
            out.push_str(&digits);
            out.extend(std::iter::repeat_n('0', (decpt - n) as usize));
            out.push_str(".0");
        } else {
            out.push_str(&digits[..decpt as usize]);
            out.push('.');
            out.push_str(&digits[decpt as usize..]);
        }
    } else {
        out.push_str(&digits[..1]);
        if n > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        let e = decpt - 1;
        let _ = write!(out, "e{}{:02}", if e < 0 { '-' } else { '+' }, e.abs());
    }
}

/// The significant digits of a non-negative decimal numeral (`27581622253495.062`,
/// `1e16`, `1.5e-7`, `0.001`, `0.0`) without leading or trailing zeros, and the position of
/// the decimal point relative to them: the value is `0.<digits> × 10^decpt`.
fn digits_and_point(text: &str) -> (String, i32) {
    let (mantissa, exp) = text.split_once(['e', 'E']).unwrap_or((text, "0"));
    // Ryū writes a plain integer exponent; the corpus tests pin its output.
    let exp: i32 = exp.parse().unwrap_or(0);
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let mut decpt = int.len() as i32 + exp;
    let mut digits = String::with_capacity(int.len() + frac.len());
    for c in int.chars().chain(frac.chars()) {
        if c == '0' && digits.is_empty() {
            decpt -= 1;
        } else {
            digits.push(c);
        }
    }
    digits.truncate(digits.trim_end_matches('0').len());
    (digits, decpt)
}

fn write_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            ' '..='~' => out.push(c),
            _ => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    let _ = write!(out, "\\u{unit:04x}");
                }
            }
        }
    }
    out.push('"');
}
