//! Canonical JSON and record hashing for the audit chain.
//!
//! # Canonical form (what an auditor re-implements)
//!
//! The hash of a record is `hex(SHA-256(C))` (lower-case hex, 64 characters) where
//! `C` is the UTF-8 bytes of the record **without its `hash` member**, serialised as:
//!
//! * object keys sorted by their UTF-8 bytes, recursively (nested objects too);
//!   array order is kept;
//! * no whitespace at all: separators are `,` and `:`;
//! * strings as serde_json writes them: `"` and `\` escaped as `\"` and `\\`,
//!   `\b \f \n \r \t` as those two-character escapes, every other control
//!   character below U+0020 as `\u00XX` with lower-case hex, everything else
//!   (including `/`, DEL and all non-ASCII) written raw as UTF-8;
//! * numbers as serde_json writes them: integers in plain decimal, floats in the
//!   shortest form that reads back to the same `f64` (ryu), e.g. `1.5`, `1e16`;
//! * `true`, `false`, `null` as such.
//!
//! The writer puts the `hash` member first and then the canonical bytes, so every
//! line it writes has the shape
//!
//! ```text
//! {"hash":"<64 hex>",<C without its leading '{'>
//! ```
//!
//! An auditor therefore does not need to re-serialise anything: take the line,
//! drop its first 75 bytes (`{"hash":"` + 64 hex + `",`), put back a `{`, and
//! SHA-256 the result. In Python:
//!
//! ```python
//! import hashlib, json
//! line = raw_line.rstrip(b"\n")
//! claimed = json.loads(line)["hash"]
//! body = b"{" + line[75:]
//! assert hashlib.sha256(body).hexdigest() == claimed
//! # or, re-serialising (identical for records without floats in exponent form):
//! rec = json.loads(line); rec.pop("hash")
//! c = json.dumps(rec, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
//! assert hashlib.sha256(c.encode()).hexdigest() == claimed
//! ```
//!
//! The genesis `prev_hash` (first record of a fresh chain) is 64 ASCII zeros.

use serde_json::Value;
use sha2::{Digest, Sha256};

/// `prev_hash` of the first record of a fresh chain.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Byte length of the `{"hash":"<64 hex>",` prefix the writer puts on every line.
pub const HASH_PREFIX_LEN: usize = 75;

/// Appends the canonical serialisation of `value` to `out`.
pub fn write_canonical(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(n) => out.extend_from_slice(n.to_string().as_bytes()),
        Value::String(s) => write_string(s, out),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(item, out);
            }
            out.push(b']');
        }
        Value::Object(map) => {
            // Sort explicitly: serde_json's map is only sorted when the
            // `preserve_order` feature is off, and any crate in the build may turn it on.
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push(b'{');
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_string(k, out);
                out.push(b':');
                write_canonical(v, out);
            }
            out.push(b'}');
        }
    }
}

/// Canonical serialisation of `value` as bytes.
pub fn canonical(value: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    write_canonical(value, &mut out);
    out
}

fn write_string(s: &str, out: &mut Vec<u8>) {
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let esc: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0x00..=0x1f => {
                out.extend_from_slice(&bytes[start..i]);
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.extend_from_slice(b"\\u00");
                out.push(HEX[usize::from(b >> 4)]);
                out.push(HEX[usize::from(b & 0xf)]);
                start = i + 1;
                continue;
            }
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        out.extend_from_slice(esc);
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// Lower-case hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    to_hex(digest.as_slice())
}

/// Lower-case hex of `bytes`.
pub fn to_hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        s.push(char::from(HEX[usize::from(b >> 4)]));
        s.push(char::from(HEX[usize::from(b & 0xf)]));
    }
    s
}

/// True if `s` is 64 lower-case hex digits (the shape of every hash in the chain).
pub fn is_hash_hex(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn sorts_keys_recursively_without_whitespace() {
        let v = json!({"b": 1, "a": {"z": [3, {"y": true, "x": null}], "c": "s"}});
        assert_eq!(
            String::from_utf8(canonical(&v)).unwrap(),
            r#"{"a":{"c":"s","z":[3,{"x":null,"y":true}]},"b":1}"#
        );
    }

    #[test]
    fn string_escapes_match_serde_json() {
        let s = "q\"b\\n\n r\r t\t \u{8}\u{c}\u{1}\u{1f}\u{7f} / é 😀";
        let v = Value::String(s.to_owned());
        assert_eq!(canonical(&v), serde_json::to_vec(&v).unwrap());
    }

    #[test]
    fn numbers_match_serde_json() {
        for v in [
            json!(0),
            json!(-7),
            json!(u64::MAX),
            json!(1.5),
            json!(1e16),
            json!(1e-7),
        ] {
            assert_eq!(canonical(&v), serde_json::to_vec(&v).unwrap());
        }
    }

    #[test]
    fn sha256_of_empty_is_known() {
        assert_eq!(
            sha256_hex(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert!(is_hash_hex(GENESIS_HASH));
        assert_eq!(r#"{"hash":""#.len() + 64 + 2, HASH_PREFIX_LEN);
    }
}
