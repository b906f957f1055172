//! The header-name table the kernel parser consults at every colon: which
//! headers are copied (and into which slot), which are credentials (hashed,
//! never copied) and which drive anomaly checks.

use thiserror::Error;

/// Mirrors `GW_HDR_SLOTS`, `GW_HDR_NAME_LEN` and `enum gw_hdr_special` in bpf/include/gw_events.h.
pub const HDR_SLOTS: usize = 12;
pub const HDR_NAME_LEN: usize = 32;
const HS_NONE: u8 = 0;
const HS_CRED: u8 = 1;
const HS_CONTENT_LENGTH: u8 = 2;
const HS_TRANSFER_ENCODING: u8 = 3;
const HS_HOST: u8 = 4;
const HS_MCP_SESSION: u8 = 5;
const HS_CONTENT_TYPE: u8 = 6;
const NO_SLOT: u8 = 0xff;

/// Credential headers in `enum gw_cred_slot` order; their values never leave the kernel.
pub const CREDENTIAL_HEADERS: [&str; 5] = [
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
    "x-api-key",
];

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
    #[error("at most {HDR_SLOTS} headers can be copied, {0} were configured")]
    TooMany(usize),
    #[error("header {0:?} is listed twice")]
    Duplicate(String),
}

/// One entry of the kernel's `gw_hdr_names` map.
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

fn special_of(name: &str) -> u8 {
    match name {
        "content-length" => HS_CONTENT_LENGTH,
        "transfer-encoding" => HS_TRANSFER_ENCODING,
        "host" => HS_HOST,
        "content-type" => HS_CONTENT_TYPE,
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
