//! One line of the audit file: parsing and hash check, shared by writer (resume)
//! and verifier.

use serde::de::IgnoredAny;
use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::canonical::{is_hash_hex, to_hex, write_canonical, HASH_PREFIX_LEN};

/// The fields of a record that the chain needs; `payload` must be present but is
/// only looked at through the hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RecordMeta {
    pub seq: u64,
    pub time: String,
    pub kind: String,
    pub prev_hash: String,
    pub hash: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRecord {
    seq: u64,
    time: String,
    kind: String,
    prev_hash: String,
    hash: String,
    #[allow(dead_code)]
    payload: IgnoredAny,
}

/// Why a line is not a good record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum LineError {
    /// Not JSON, or not a record (missing / extra / mistyped fields).
    Malformed(String),
    /// Well-formed, but `hash` is not the hash of its content.
    HashMismatch {
        meta: Box<RecordMeta>,
        computed: String,
    },
}

/// Parses the fields of a record line (no trailing newline) without checking its hash.
pub(crate) fn parse_meta(line: &[u8]) -> Result<RecordMeta, LineError> {
    if line.is_empty() {
        return Err(LineError::Malformed("empty line".into()));
    }
    let raw: RawRecord = serde_json::from_slice(line)
        .map_err(|e| LineError::Malformed(format!("not a valid audit record: {e}")))?;
    if !is_hash_hex(&raw.hash) {
        return Err(LineError::Malformed(
            "`hash` is not 64 lower-case hex digits".into(),
        ));
    }
    if !is_hash_hex(&raw.prev_hash) {
        return Err(LineError::Malformed(
            "`prev_hash` is not 64 lower-case hex digits".into(),
        ));
    }
    Ok(RecordMeta {
        seq: raw.seq,
        time: raw.time,
        kind: raw.kind,
        prev_hash: raw.prev_hash,
        hash: raw.hash,
    })
}

/// Parses a record line and checks that its `hash` matches its content.
pub(crate) fn check_line(line: &[u8]) -> Result<RecordMeta, LineError> {
    let meta = parse_meta(line)?;
    let computed = content_hash(line, &meta.hash)?;
    if computed != meta.hash {
        return Err(LineError::HashMismatch {
            meta: Box::new(meta),
            computed,
        });
    }
    Ok(meta)
}

/// SHA-256 of the canonical form of the record without `hash`. Fast path: the
/// line has the writer's shape (`{"hash":"<claimed>",` + canonical rest), so the
/// bytes are hashed as they are; otherwise the line is parsed and re-serialised.
fn content_hash(line: &[u8], claimed: &str) -> Result<String, LineError> {
    if line.len() > HASH_PREFIX_LEN
        && line.starts_with(b"{\"hash\":\"")
        && &line[9..73] == claimed.as_bytes()
        && &line[73..HASH_PREFIX_LEN] == b"\","
    {
        let mut h = Sha256::new();
        h.update(b"{");
        h.update(&line[HASH_PREFIX_LEN..]);
        return Ok(to_hex(h.finalize().as_slice()));
    }
    let mut value: Value = serde_json::from_slice(line)
        .map_err(|e| LineError::Malformed(format!("not valid JSON: {e}")))?;
    if let Value::Object(map) = &mut value {
        map.remove("hash");
    }
    let mut buf = Vec::with_capacity(line.len());
    write_canonical(&value, &mut buf);
    Ok(to_hex(Sha256::digest(&buf).as_slice()))
}

/// Builds the line for a new record (with trailing newline) into `out`; returns its hash.
pub(crate) fn build_line(
    kind: &str,
    payload: &Value,
    prev_hash: &str,
    seq: u64,
    time: &str,
    body: &mut Vec<u8>,
    out: &mut Vec<u8>,
) -> String {
    // Keys in canonical (sorted) order: kind, payload, prev_hash, seq, time.
    body.clear();
    body.extend_from_slice(b"{\"kind\":");
    write_canonical(&Value::String(kind.to_owned()), body);
    body.extend_from_slice(b",\"payload\":");
    write_canonical(payload, body);
    body.extend_from_slice(b",\"prev_hash\":");
    write_canonical(&Value::String(prev_hash.to_owned()), body);
    body.extend_from_slice(b",\"seq\":");
    body.extend_from_slice(seq.to_string().as_bytes());
    body.extend_from_slice(b",\"time\":");
    write_canonical(&Value::String(time.to_owned()), body);
    body.push(b'}');
    let hash = to_hex(Sha256::digest(&body[..]).as_slice());
    out.clear();
    out.extend_from_slice(b"{\"hash\":\"");
    out.extend_from_slice(hash.as_bytes());
    out.extend_from_slice(b"\",");
    out.extend_from_slice(&body[1..]);
    out.push(b'\n');
    hash
}

#[cfg(test)]
mod tests {
    use super::super::canonical::{canonical, sha256_hex, GENESIS_HASH};
    use super::*;
    use serde_json::json;

    #[test]
    fn built_line_is_canonical_and_checks() {
        let payload = json!({"z": 1, "a": "x\ny", "f": 0.25});
        let (mut body, mut out) = (Vec::new(), Vec::new());
        let hash = build_line(
            "alert",
            &payload,
            GENESIS_HASH,
            1,
            "2026-01-01T00:00:00Z",
            &mut body,
            &mut out,
        );
        let line = &out[..out.len() - 1];
        let meta = check_line(line).unwrap();
        assert_eq!((meta.seq, meta.hash.as_str()), (1, hash.as_str()));
        // The line is exactly the canonical form of the full record.
        let v: Value = serde_json::from_slice(line).unwrap();
        assert_eq!(canonical(&v), line);
        // And the hash is over the canonical form without `hash`.
        let mut v2 = v.clone();
        v2.as_object_mut().unwrap().remove("hash");
        assert_eq!(sha256_hex(&canonical(&v2)), hash);
    }

    #[test]
    fn reformatted_line_still_checks_by_reserialising() {
        let (mut body, mut out) = (Vec::new(), Vec::new());
        build_line(
            "alert",
            &json!({"b": [1, 2]}),
            GENESIS_HASH,
            1,
            "t",
            &mut body,
            &mut out,
        );
        let v: Value = serde_json::from_slice(&out).unwrap();
        let pretty = serde_json::to_vec_pretty(&v).unwrap();
        assert!(check_line(&pretty).is_ok());
    }

    #[test]
    fn bad_lines_are_malformed() {
        for l in [&b""[..], b"not json", b"{}", b"[1]", br#"{"seq":1}"#] {
            assert!(
                matches!(check_line(l), Err(LineError::Malformed(_))),
                "{l:?}"
            );
        }
    }
}
