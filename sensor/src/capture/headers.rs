//! The header-name table the kernel parser consults at every colon: which
//! headers are copied (and into which slot), which are credentials (hashed,
//! never copied) and which drive anomaly checks.

use thiserror::Error;

/// Mirrors `GW_HDR_SLOTS`, `GW_HDR_NAME_LEN`, `GW_HDR_TABLE`, `GW_HDR_PROBES`
/// and `enum gw_hdr_special` in bpf/include/gw_events.h.
pub const HDR_SLOTS: usize = 12;
pub const HDR_NAME_LEN: usize = 32;
/// Slots of the kernel's open-addressing name table (`gw_hdr_table`).
pub const HDR_TABLE: usize = 128;
/// A name sits at most this many slots from its home slot (linear probing).
pub const HDR_PROBES: usize = 4;
/// Size of `struct gw_hdr_slot`: name, info, length, padding.
pub const HDR_SLOT_SIZE: usize = HDR_NAME_LEN + 8;
const HDR_MUL: u64 = 0x9e37_79b9_7f4a_7c15;
const HS_NONE: u8 = 0;
const HS_CRED: u8 = 1;
const HS_CONTENT_LENGTH: u8 = 2;
const HS_TRANSFER_ENCODING: u8 = 3;
const HS_HOST: u8 = 4;
const HS_MCP_SESSION: u8 = 5;
const HS_CONTENT_TYPE: u8 = 6;
const HS_FRAMING_LOOKALIKE: u8 = 7;
const HS_CONNECTION: u8 = 8;
const NO_SLOT: u8 = 0xff;

/// Credential headers in `enum gw_cred_slot` order; their values never leave the kernel.
pub const CREDENTIAL_HEADERS: [&str; 5] = [
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
    "x-api-key",
];

/// Parts of a header name that say its value is a secret (x-vault-token,
/// x-client-secret, x-amz-security-token, x-auth-key, ...): such a header is
/// never copied. Challenges (www-authenticate, proxy-authenticate) carry
/// schemes and realms, not secrets.
const SECRET_WORDS: [&str; 9] = [
    "token",
    "secret",
    "key",
    "auth",
    "passw",
    "session",
    "cookie",
    "credential",
    "signature",
];
const NOT_SECRET: [&str; 2] = ["www-authenticate", "proxy-authenticate"];

/// Whether a header or query parameter name says its value is a secret.
pub fn looks_secret(name: &str) -> bool {
    secret_word(name).is_some()
}

fn secret_word(name: &str) -> Option<&'static str> {
    if NOT_SECRET.contains(&name) {
        return None;
    }
    SECRET_WORDS.iter().copied().find(|w| name.contains(w))
}

/// MCP session ids are bearer-like: hashed in the kernel like credentials,
/// with their shape (length, distinct bytes, visible-ASCII check) kept.
pub const SESSION_HEADER: &str = "mcp-session-id";

/// Headers copied by default (DESIGN.md, with the MCP headers the rules read;
/// Mcp-Session-Id is hashed, not copied).
pub const DEFAULT_HEADERS: [&str; 12] = [
    "host",
    "user-agent",
    "content-type",
    "content-length",
    "transfer-encoding",
    "x-forwarded-for",
    "x-request-id",
    "origin",
    "mcp-protocol-version",
    "mcp-method",
    "mcp-name",
    "www-authenticate",
];

#[derive(Debug, Error, PartialEq, Eq)]
pub enum HeaderConfigError {
    #[error("header name {0:?} is not a valid HTTP token")]
    InvalidName(String),
    #[error("header name {0:?} is longer than {HDR_NAME_LEN} bytes")]
    TooLong(String),
    #[error(
        "header {0:?} carries credentials and is never copied; it is always hashed in the kernel"
    )]
    Credential(String),
    #[error(
        "header {0:?} looks like it carries a secret (its name contains {1:?}): its value is never \
         copied out of the kernel; only authorization, proxy-authorization, cookie, set-cookie and \
         x-api-key are hashed there"
    )]
    CredentialLike(String, &'static str),
    #[error("at most {HDR_SLOTS} headers can be copied, {0} were configured")]
    TooMany(usize),
    #[error("header {0:?} is listed twice")]
    Duplicate(String),
}

/// One entry of the kernel's `gw_hdr_table` map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderEntry {
    pub name: String,
    pub slot: u8,
    pub special: u8,
    pub cred: u8,
}

impl HeaderEntry {
    pub fn key_bytes(&self) -> [u8; HDR_NAME_LEN] {
        let mut key = [0u8; HDR_NAME_LEN];
        key[..self.name.len()].copy_from_slice(self.name.as_bytes());
        key
    }

    pub fn value_bytes(&self) -> [u8; 4] {
        [self.slot, self.special, self.cred, 0]
    }

    /// The entry as a `struct gw_hdr_slot`: name, info, name length.
    pub fn slot_bytes(&self) -> [u8; HDR_SLOT_SIZE] {
        let mut b = [0u8; HDR_SLOT_SIZE];
        b[..HDR_NAME_LEN].copy_from_slice(&self.key_bytes());
        b[HDR_NAME_LEN..HDR_NAME_LEN + 4].copy_from_slice(&self.value_bytes());
        b[HDR_NAME_LEN + 4] = self.name.len() as u8;
        b
    }
}

/// Home slot of a lower-case header name (at most `HDR_NAME_LEN` bytes) in
/// the kernel's table: the same function as `gw_hdr_hash` in
/// bpf/include/gw_http.h, over the name's four zero-padded little-endian
/// words and its length.
pub fn name_hash(name: &[u8], seed: u64) -> usize {
    let mut key = [0u8; HDR_NAME_LEN];
    key[..name.len()].copy_from_slice(name);
    let word = |i: usize| {
        let mut w = [0u8; 8];
        w.copy_from_slice(&key[i * 8..i * 8 + 8]);
        u64::from_le_bytes(w)
    };
    let mut h = seed ^ name.len() as u64;
    h = (h ^ word(0)).wrapping_mul(HDR_MUL);
    for i in 1..4 {
        h = (h ^ (h >> 29) ^ word(i)).wrapping_mul(HDR_MUL);
    }
    (h >> 57) as usize
}

/// The validated table plus the slot → name mapping userspace needs to decode events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderTable {
    pub entries: Vec<HeaderEntry>,
    pub slot_names: Vec<String>,
}

fn is_token(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

impl HeaderTable {
    pub fn new<S: AsRef<str>>(copied: &[S]) -> Result<Self, HeaderConfigError> {
        if copied.len() > HDR_SLOTS {
            return Err(HeaderConfigError::TooMany(copied.len()));
        }
        let mut entries: Vec<HeaderEntry> = Vec::new();
        let mut slot_names = Vec::new();
        for raw in copied {
            let name = raw.as_ref().trim().to_ascii_lowercase();
            if !is_token(&name) {
                return Err(HeaderConfigError::InvalidName(raw.as_ref().to_string()));
            }
            if name.len() > HDR_NAME_LEN {
                return Err(HeaderConfigError::TooLong(name));
            }
            if CREDENTIAL_HEADERS.contains(&name.as_str()) || name == SESSION_HEADER {
                return Err(HeaderConfigError::Credential(name));
            }
            if let Some(word) = secret_word(&name) {
                return Err(HeaderConfigError::CredentialLike(name, word));
            }
            if slot_names.contains(&name) {
                return Err(HeaderConfigError::Duplicate(name));
            }
            let slot = slot_names.len() as u8;
            slot_names.push(name.clone());
            entries.push(HeaderEntry {
                special: special_of(&name),
                name,
                slot,
                cred: 0,
            });
        }
        // Headers the parser needs for its anomaly checks, even when not copied.
        for name in [
            "content-length",
            "transfer-encoding",
            "host",
            "content-type",
            "connection",
            "transfer_encoding",
            "content_length",
        ] {
            if !slot_names.iter().any(|n| n == name) {
                entries.push(HeaderEntry {
                    name: name.to_string(),
                    slot: NO_SLOT,
                    special: special_of(name),
                    cred: 0,
                });
            }
        }
        for (i, name) in CREDENTIAL_HEADERS.iter().enumerate() {
            entries.push(HeaderEntry {
                name: name.to_string(),
                slot: NO_SLOT,
                special: HS_CRED,
                cred: i as u8,
            });
        }
        entries.push(HeaderEntry {
            name: SESSION_HEADER.to_string(),
            slot: NO_SLOT,
            special: HS_MCP_SESSION,
            cred: 0,
        });
        Ok(HeaderTable {
            entries,
            slot_names,
        })
    }
}

impl HeaderTable {
    /// Where each entry goes in the kernel's table under `seed`: slot →
    /// index into `entries`. None when some name would sit more than
    /// `HDR_PROBES` slots from its home (then another seed is tried).
    pub fn layout(&self, seed: u64) -> Option<Vec<Option<usize>>> {
        let mut slots = vec![None; HDR_TABLE];
        for (i, e) in self.entries.iter().enumerate() {
            let home = name_hash(e.name.as_bytes(), seed);
            let at = (0..HDR_PROBES)
                .map(|p| (home + p) % HDR_TABLE)
                .find(|s| slots[*s].is_none())?;
            slots[at] = Some(i);
        }
        Some(slots)
    }
}

fn special_of(name: &str) -> u8 {
    match name {
        "content-length" => HS_CONTENT_LENGTH,
        "transfer-encoding" => HS_TRANSFER_ENCODING,
        "host" => HS_HOST,
        "content-type" => HS_CONTENT_TYPE,
        "transfer_encoding" | "content_length" => HS_FRAMING_LOOKALIKE,
        "connection" => HS_CONNECTION,
        _ => HS_NONE,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_table_has_credentials_and_checks() {
        let t = HeaderTable::new(&DEFAULT_HEADERS).unwrap();
        assert_eq!(t.slot_names.len(), 12);
        let sess = t.entries.iter().find(|e| e.name == SESSION_HEADER).unwrap();
        assert_eq!((sess.slot, sess.special), (NO_SLOT, HS_MCP_SESSION));
        assert!(t
            .entries
            .iter()
            .any(|e| e.name == "authorization" && e.special == HS_CRED));
        let cl = t
            .entries
            .iter()
            .find(|e| e.name == "content-length")
            .unwrap();
        assert_eq!(cl.special, HS_CONTENT_LENGTH);
        assert_eq!(cl.slot, 3);
    }

    #[test]
    fn credentials_cannot_be_copied() {
        assert_eq!(
            HeaderTable::new(&["Cookie"]),
            Err(HeaderConfigError::Credential("cookie".into()))
        );
        for name in [
            "x-vault-token",
            "X-Client-Secret",
            "x-amz-security-token",
            "x-auth-user",
            "x-session",
            "x-db-password",
            "x-goog-api-key",
        ] {
            assert!(
                matches!(
                    HeaderTable::new(&[name]),
                    Err(HeaderConfigError::CredentialLike(..))
                ),
                "{name} accepted"
            );
        }
        assert!(HeaderTable::new(&["www-authenticate", "keep-alive", "x-request-id"]).is_ok());
        assert!(matches!(
            HeaderTable::new(&["bad name"]),
            Err(HeaderConfigError::InvalidName(_))
        ));
        assert_eq!(
            HeaderTable::new(&["Mcp-Session-Id"]),
            Err(HeaderConfigError::Credential("mcp-session-id".into()))
        );
        let many: Vec<String> = (0..13).map(|i| format!("x-h{i}")).collect();
        assert_eq!(HeaderTable::new(&many), Err(HeaderConfigError::TooMany(13)));
    }

    /// What the kernel does at a colon: probe from the home slot until the
    /// name or an empty slot.
    fn kernel_lookup<'a>(
        t: &'a HeaderTable,
        slots: &[Option<usize>],
        name: &str,
        seed: u64,
    ) -> Option<&'a HeaderEntry> {
        let home = name_hash(name.as_bytes(), seed);
        for p in 0..HDR_PROBES {
            let e = &t.entries[slots[(home + p) % HDR_TABLE]?];
            if e.name == name {
                return Some(e);
            }
        }
        None
    }

    #[test]
    fn every_name_is_found_within_the_probe_bound_and_others_are_not() {
        let full: Vec<String> = (0..12)
            .map(|i| format!("x-a-rather-long-header-name-{i:02}"))
            .collect();
        for copied in [DEFAULT_HEADERS.map(String::from).to_vec(), full] {
            let t = HeaderTable::new(&copied).unwrap();
            let mut placed = 0;
            for seed in 0..200u64 {
                let seed = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15);
                let Some(slots) = t.layout(seed) else {
                    continue;
                };
                placed += 1;
                assert_eq!(slots.iter().flatten().count(), t.entries.len());
                for e in &t.entries {
                    assert_eq!(kernel_lookup(&t, &slots, &e.name, seed), Some(e));
                }
                for other in ["accept", "x-a-rather-long-header-name-12", "hos", "hostt"] {
                    assert_eq!(kernel_lookup(&t, &slots, other, seed), None);
                }
            }
            // Almost every seed works: the loader never runs out of them.
            assert!(placed > 150, "only {placed} of 200 seeds place the table");
        }
    }

    /// That this hash is the kernel's is checked on a loaded program by
    /// tests/kernel_parser.rs (every_configured_header_is_found_by_the_kernel).
    #[test]
    fn name_hash_stays_in_the_table_and_follows_the_seed() {
        assert_eq!(slot_bytes_len(), HDR_SLOT_SIZE);
        let a = name_hash(b"host", 0);
        let b = name_hash(b"host", 1);
        let c = name_hash(b"x-a-rather-long-header-name-0123", 0);
        assert!(a < HDR_TABLE && b < HDR_TABLE && c < HDR_TABLE);
        assert_ne!(
            (0..64).map(|s| name_hash(b"host", s)).collect::<Vec<_>>(),
            vec![a; 64],
            "the seed moves names"
        );
    }

    fn slot_bytes_len() -> usize {
        HeaderTable::new(&["host"]).unwrap().entries[0]
            .slot_bytes()
            .len()
    }

    #[test]
    fn checks_stay_without_copy() {
        let t = HeaderTable::new(&["host"]).unwrap();
        let te = t
            .entries
            .iter()
            .find(|e| e.name == "transfer-encoding")
            .unwrap();
        assert_eq!(te.slot, NO_SLOT);
        assert_eq!(te.special, HS_TRANSFER_ENCODING);
    }
}
