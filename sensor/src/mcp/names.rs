//! Stateless-form routing headers: which methods carry `Mcp-Name`, and the
//! `=?base64?...?=` form for values that are not header-safe.

/// Methods whose `params.name` / `params.uri` is mirrored in `Mcp-Name`.
pub const NAME_BEARING_METHODS: &[&str] = &["tools/call", "prompts/get", "resources/read"];

/// The value an `Mcp-Name` header stands for: verbatim, or decoded from
/// `=?base64?PAYLOAD?=`. `None` when the sentinel holds broken base64 or non-UTF-8.
pub fn decode_header_value(value: &str) -> Option<String> {
    match value
        .strip_prefix("=?base64?")
        .and_then(|v| v.strip_suffix("?="))
    {
        Some(payload) => String::from_utf8(base64_decode(payload)?).ok(),
        None => Some(value.to_string()),
    }
}

/// Standard alphabet with padding (RFC 4648 §4); anything else is `None`.
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let bytes = text.as_bytes();
    if !bytes.len().is_multiple_of(4) {
        return None;
    }
    let value = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let mut out = Vec::with_capacity(bytes.len() / 4 * 3);
    let chunks = bytes.len() / 4;
    for (i, chunk) in bytes.chunks_exact(4).enumerate() {
        let pad = chunk.iter().rev().take_while(|&&c| c == b'=').count();
        if pad > 2 || (pad > 0 && i + 1 != chunks) {
            return None;
        }
        let mut n = 0u32;
        for &c in &chunk[..4 - pad] {
            n = (n << 6) | value(c)?;
        }
        n <<= 6 * pad as u32;
        let decoded = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&decoded[..3 - pad]);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_and_base64_values() {
        assert_eq!(decode_header_value("echo").as_deref(), Some("echo"));
        // "héllo wörld" is not header-safe; base64 of its UTF-8.
        assert_eq!(
            decode_header_value("=?base64?aMOpbGxvIHfDtnJsZA==?=").as_deref(),
            Some("héllo wörld")
        );
        assert_eq!(
            decode_header_value("=?base64?YWI=?=").as_deref(),
            Some("ab")
        );
        assert_eq!(
            decode_header_value("=?base64?YWJj?=").as_deref(),
            Some("abc")
        );
        assert_eq!(decode_header_value("=?base64?not base64?="), None);
        assert_eq!(decode_header_value("=?base64?YQ==YQ==?="), None);
        assert_eq!(decode_header_value("=?base64?/w==?="), None, "not UTF-8");
    }
}
