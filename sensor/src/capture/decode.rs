//! Turns the kernel's fixed-layout `gw_http_event` records into typed events.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use thiserror::Error;

use super::clock::BootClock;
use super::skel::types::{gw_event_hdr, gw_http_event, gw_mcp_body, gw_mcp_sess};
use crate::events::{
    CaptureSource, Credential, Direction, Endpoint, Event, EventKind, HttpInfo, McpInfo,
    ProcessInfo, SessionIdOrigin, SessionIdShape,
};

const EV_HTTP_REQUEST: u32 = 1;
const EV_HTTP_RESPONSE: u32 = 2;

/// Anomaly bits (`GW_AN_*` in gw_events.h) and their names in events.
pub const ANOMALY_NAMES: [(u32, &str); 19] = [
    (1 << 0, "crlf_in_value"),
    (1 << 1, "duplicate_content_length"),
    (1 << 2, "cl_and_te"),
    (1 << 3, "non_ascii"),
    (1 << 4, "truncated"),
    (1 << 5, "path_truncated"),
    (1 << 6, "value_truncated"),
    (1 << 7, "obs_fold"),
    (1 << 8, "malformed_header_line"),
    (1 << 9, "invalid_content_length"),
    (1 << 10, "duplicate_host"),
    (1 << 11, "out_of_order"),
    (1 << 12, "control_char"),
    (1 << 13, "bare_lf"),
    (1 << 14, "malformed_start_line"),
    (1 << 15, "unknown_method"),
    (1 << 16, "userinfo_removed"),
    (1 << 17, "framing_header_lookalike"),
    (1 << 18, "connection_names_framing_header"),
];

const SCHEMES: [&str; 6] = ["none", "bearer", "basic", "digest", "negotiate", "other"];

#[derive(Debug, Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("event record of {got} bytes, expected {want}")]
    Size { got: usize, want: usize },
    #[error("unknown event kind {0}")]
    Kind(u32),
}

/// Everything the decoder needs besides the bytes.
pub struct Decoder {
    pub slot_names: Vec<String>,
    pub clock: BootClock,
    pub source: CaptureSource,
    ifnames: BTreeMap<u32, Option<String>>,
}

impl Decoder {
    pub fn new(slot_names: Vec<String>, source: CaptureSource) -> Self {
        Decoder {
            slot_names,
            clock: BootClock::now(),
            source,
            ifnames: BTreeMap::new(),
        }
    }

    /// Decode one ring-buffer record. `time_override` (ns since the epoch) replaces
    /// the kernel timestamp, e.g. with a pcap packet's capture time.
    pub fn decode(
        &mut self,
        data: &[u8],
        time_override: Option<i128>,
    ) -> Result<Event, DecodeError> {
        let want = std::mem::size_of::<gw_http_event>();
        if data.len() < want {
            return Err(DecodeError::Size {
                got: data.len(),
                want,
            });
        }
        // Ring-buffer records are 8-byte aligned: read in place, not copied
        // (the record is about 2 KB). A misaligned slice (a test's, a pcap
        // replay's copy) is copied once.
        let copied: gw_http_event;
        let raw: &gw_http_event = if data
            .as_ptr()
            .align_offset(std::mem::align_of::<gw_http_event>())
            == 0
        {
            // SAFETY: gw_http_event is a plain-old-data #[repr(C)] struct
            // generated from the BPF object's BTF; any bit pattern is valid,
            // the length was checked above and the pointer is aligned; the
            // reference lives no longer than `data`.
            unsafe { &*data.as_ptr().cast::<gw_http_event>() }
        } else {
            // SAFETY: as above, read without an alignment requirement.
            copied = unsafe { std::ptr::read_unaligned(data.as_ptr().cast::<gw_http_event>()) };
            &copied
        };
        let kind = match raw.hdr.kind {
            EV_HTTP_REQUEST => EventKind::HttpRequest,
            EV_HTTP_RESPONSE => EventKind::HttpResponse,
            other => return Err(DecodeError::Kind(other)),
        };
        let time_ns = time_override.unwrap_or_else(|| self.clock.to_unix_ns(raw.hdr.ts_boot_ns));
        let (src, dst) = endpoints(&raw.hdr);
        let replay = self.source == CaptureSource::Replay;
        let iface = if replay || raw.hdr.ifindex == 0 {
            None
        } else {
            self.ifname(raw.hdr.ifindex)
        };
        Ok(Event {
            kind,
            time: crate::events::EventTime::from_unix_ns(time_ns),
            source: if raw.hdr.source == 1 {
                CaptureSource::Tls
            } else {
                self.source
            },
            iface,
            ifindex: if replay { 0 } else { raw.hdr.ifindex },
            direction: match (replay, raw.hdr.direction) {
                (true, _) => Direction::Unknown,
                (false, 0) => Direction::Ingress,
                (false, 1) => Direction::Egress,
                _ => Direction::Unknown,
            },
            src,
            dst,
            process: process(&raw.hdr),
            http: Some(self.http(raw)),
            stats: None,
            l4: None,
            mcp_context: None,
        })
    }

    fn http(&self, raw: &gw_http_event) -> HttpInfo {
        let mut headers = BTreeMap::new();
        let mut truncated_headers = Vec::new();
        for (slot, hv) in raw.hdrs.iter().enumerate() {
            if hv.present == 0 {
                continue;
            }
            let Some(name) = self.slot_names.get(slot) else {
                continue;
            };
            let len = usize::from(hv.len).min(hv.value.len());
            headers.insert(name.clone(), text(&hv.value[..len]));
            if hv.truncated != 0 {
                truncated_headers.push(name.clone());
            }
        }
        let mut credentials = BTreeMap::new();
        let mut empty_credential = false;
        for (i, c) in raw.creds.iter().enumerate() {
            if c.present == 0 {
                continue;
            }
            // `Authorization:` with nothing after it authenticates nobody: it
            // is absent for rules (GW-HTTP-001 must still fire), flagged.
            if c.len == 0 {
                empty_credential = true;
                continue;
            }
            let name = super::headers::CREDENTIAL_HEADERS[i.min(4)];
            credentials.insert(
                name.to_string(),
                Credential {
                    scheme: SCHEMES
                        .get(usize::from(c.scheme))
                        .copied()
                        .unwrap_or("other")
                        .to_string(),
                    length: c.len,
                    hash: format!("{:016x}", c.hash),
                    hash_truncated: c.hash_truncated != 0,
                },
            );
        }
        let mut anomalies: Vec<String> = ANOMALY_NAMES
            .iter()
            .filter(|(bit, _)| raw.anomalies & bit != 0)
            .map(|(_, name)| name.to_string())
            .collect();
        if empty_credential {
            anomalies.push("empty_credential".to_string());
        }
        let is_response = raw.is_response != 0;
        let method_len = usize::from(raw.method_len).min(raw.method.len());
        let path_len = usize::from(raw.path_len).min(raw.path.len());
        let mut info = HttpInfo {
            method: (!is_response).then(|| text(&raw.method[..method_len])),
            path: (!is_response).then(|| text(&raw.path[..path_len])),
            path_normalized: if is_response {
                None
            } else {
                super::target::normalize(unsigned(&raw.path[..path_len])).map(|p| text_of(&p))
            },
            path_truncated: raw.anomalies & (1 << 5) != 0,
            version: match raw.version_minor {
                0 => "HTTP/1.0".to_string(),
                1 => "HTTP/1.1".to_string(),
                _ => "invalid".to_string(),
            },
            status: is_response.then_some(raw.status),
            headers,
            truncated_headers,
            header_count: raw.header_count,
            header_bytes: raw.header_bytes,
            content_length: (raw.content_length != u64::MAX).then_some(raw.content_length),
            credentials,
            anomalies,
            segments: u32::from(raw.segments.max(1)),
            mcp_session: None,
            mcp: None,
        };
        info.mcp_session = session_shape(&raw.mcp_sess);
        info.mcp = mcp_info(&raw.mcp, &info);
        info
    }

    fn ifname(&mut self, ifindex: u32) -> Option<String> {
        self.ifnames
            .entry(ifindex)
            .or_insert_with(|| super::attach::ifname(ifindex))
            .clone()
    }
}

/// Names of `enum gw_scan_result` (bpf/include/gw_events.h).
const SCAN_RESULTS: [&str; 6] = ["", "complete", "window", "not_json", "no_body", "ended"];

fn session_shape(s: &gw_mcp_sess) -> Option<SessionIdShape> {
    if s.present == 0 {
        return None;
    }
    let origin = match s.origin {
        1 => SessionIdOrigin::Header,
        2 => SessionIdOrigin::Query,
        3 => SessionIdOrigin::SseEndpoint,
        _ => return None,
    };
    Some(SessionIdShape {
        origin,
        length: s.len,
        hash: format!("{:016x}", s.hash),
        hash_truncated: s.hash_truncated != 0,
        distinct_bytes: u32::from(s.distinct),
        outside_visible_ascii: s.outside_visible != 0,
    })
}

/// The MCP block: present when the body is JSON-RPC (or an SSE endpoint
/// event), or when the message carries MCP headers (then `body_scan` says what
/// the body was). Plain web and JSON API traffic gets none.
fn mcp_info(m: &gw_mcp_body, info: &HttpInfo) -> Option<McpInfo> {
    let result = SCAN_RESULTS
        .get(usize::from(m.result))
        .copied()
        .unwrap_or("ended");
    let mcp_headers = info.mcp_session.is_some()
        || ["mcp-protocol-version", "mcp-method", "mcp-name"]
            .iter()
            .any(|h| info.headers.contains_key(*h));
    if !(m.jsonrpc != 0 || m.sse_endpoint != 0 || (mcp_headers && !result.is_empty())) {
        return None;
    }
    let method_len = usize::from(m.method_len).min(m.method.len());
    let name_len = usize::from(m.name_len).min(m.name.len());
    Some(McpInfo {
        jsonrpc: m.jsonrpc != 0,
        batch: m.batch != 0,
        method: (method_len > 0).then(|| text(&m.method[..method_len])),
        method_truncated: m.method_truncated != 0,
        has_id: m.has_id != 0,
        params_name: (name_len > 0).then(|| text(&m.name[..name_len])),
        params_name_truncated: m.name_truncated != 0,
        has_result: m.has_result != 0,
        has_error: m.has_error != 0,
        body_scan: if result.is_empty() { "ended" } else { result }.to_string(),
        body_bytes_scanned: m.scanned,
        sse_endpoint: m.sse_endpoint != 0,
    })
}

/// Bytes from the wire as text: valid UTF-8 stays, anything else is escaped
/// (`\xNN`), so a hostile header can never produce invalid JSON or a terminal escape.
/// Bytes from the wire as text a reader can trust: ASCII control bytes and
/// invalid UTF-8 as `\xNN`, a backslash as `\x5c` (so that a literal `\x1b`
/// in a path never reads like an escaped ESC), and characters that change how
/// text displays without showing (C1 controls, bidirectional overrides such
/// as U+202E, line and paragraph separators, zero-width characters, the BOM)
/// as `\u{XXXX}`.
fn text(bytes: &[i8]) -> String {
    text_of(unsigned(bytes))
}

/// The kernel's `char` arrays as the bytes they are.
fn unsigned(bytes: &[i8]) -> &[u8] {
    // SAFETY: i8 and u8 have the same size and alignment, and every bit
    // pattern is valid for both.
    unsafe { std::slice::from_raw_parts(bytes.as_ptr().cast::<u8>(), bytes.len()) }
}

/// [`text`] of bytes already unsigned.
fn text_of(bytes: &[u8]) -> String {
    // Nearly every value is printable ASCII with no backslash: one copy.
    if bytes
        .iter()
        .all(|b| (0x20..0x7f).contains(b) && *b != b'\\')
    {
        // All ASCII, so valid UTF-8.
        return String::from_utf8_lossy(bytes).into_owned();
    }
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        for ch in chunk.valid().chars() {
            if ch.is_ascii_control() || ch == '\\' {
                out.push_str(&format!("\\x{:02x}", ch as u32));
            } else if ch.is_control() || is_invisible(ch) {
                out.push_str(&format!("\\u{{{:04x}}}", ch as u32));
            } else {
                out.push(ch);
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

/// Format characters that reorder or hide text (Unicode Cf, Zl, Zp of use in
/// spoofing: bidi embeddings/overrides/isolates, zero-width, separators, BOM).
fn is_invisible(ch: char) -> bool {
    matches!(ch as u32,
        0x00ad | 0x061c | 0x180e | 0x200b..=0x200f | 0x2028..=0x202e | 0x2060..=0x2069 | 0xfeff)
}

#[cfg(test)]
mod text_tests {
    use super::text;

    fn t(s: &[u8]) -> String {
        text(&s.iter().map(|b| *b as i8).collect::<Vec<_>>())
    }

    #[test]
    fn escapes_are_unambiguous_and_invisible_characters_are_shown() {
        // A real ESC byte and the four characters `\x1b` read differently.
        assert_eq!(t(b"/a\x1b"), r"/a\x1b");
        assert_eq!(t(br"/a\x1b"), r"/a\x5cx1b");
        // Invalid UTF-8 stays a byte escape; U+0085 (NEL) is a code point.
        assert_eq!(t(b"/\x85"), r"/\x85");
        assert_eq!(t("/\u{85}".as_bytes()), r"/\u{0085}");
        // Bidi override and line separator never reach the output as such.
        assert_eq!(
            t("/admin\u{202e}txt.exe".as_bytes()),
            r"/admin\u{202e}txt.exe"
        );
        assert_eq!(t("/a\u{2028}b".as_bytes()), r"/a\u{2028}b");
        assert_eq!(t("/caf\u{e9}".as_bytes()), "/caf\u{e9}");
    }
}

fn endpoints(h: &gw_event_hdr) -> (Option<Endpoint>, Option<Endpoint>) {
    let addr = |a: &[u8; 16]| -> Option<IpAddr> {
        match h.ip_version {
            4 => Some(IpAddr::V4(Ipv4Addr::new(a[0], a[1], a[2], a[3]))),
            6 => Some(IpAddr::V6(Ipv6Addr::from(*a))),
            _ => None,
        }
    };
    (
        addr(&h.saddr).map(|ip| Endpoint { ip, port: h.sport }),
        addr(&h.daddr).map(|ip| Endpoint { ip, port: h.dport }),
    )
}

fn process(h: &gw_event_hdr) -> Option<ProcessInfo> {
    if h.has_process == 0 && h.cgroup_id == 0 {
        return None;
    }
    let comm_len = h.comm.iter().position(|c| *c == 0).unwrap_or(h.comm.len());
    Some(ProcessInfo {
        pid: (h.has_process != 0).then_some(h.pid),
        comm: (h.has_process != 0).then(|| text(&h.comm[..comm_len])),
        cgroup_id: (h.cgroup_id != 0).then_some(h.cgroup_id),
    })
}

/// RFC 3339 UTC with nanoseconds.
pub fn format_time(unix_ns: i128) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(unix_ns)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| "1970-01-01T00:00:00Z".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_escapes_controls_and_invalid_utf8() {
        let raw: Vec<i8> = b"a\x1b[31m\xffz".iter().map(|b| *b as i8).collect();
        assert_eq!(text(&raw), "a\\x1b[31m\\xffz");
    }

    #[test]
    fn short_record_is_an_error_not_a_panic() {
        let mut d = Decoder::new(vec![], CaptureSource::Net);
        assert!(matches!(
            d.decode(&[0u8; 10], None),
            Err(DecodeError::Size { .. })
        ));
    }

    #[test]
    fn time_formats_as_rfc3339() {
        assert_eq!(
            format_time(1_700_000_000_123_456_789),
            "2023-11-14T22:13:20.123456789Z"
        );
    }
}
