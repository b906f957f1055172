//! Typed events: what the kernel saw, decoded into Rust and serialised to the JSON
//! that `schemas/event.schema.json` describes. Every stage after capture (rules,
//! sinks, audit) works on these types, never on raw kernel bytes.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// One event as it leaves the sensor. `kind` selects which of the optional blocks is set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub kind: EventKind,
    /// Wall-clock time: kept as the kernel's integer until output, written
    /// as RFC 3339 UTC with nanoseconds.
    pub time: EventTime,
    /// Which capture path produced it.
    pub source: CaptureSource,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iface: Option<String>,
    #[serde(default)]
    pub ifindex: u32,
    pub direction: Direction,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub src: Option<Endpoint>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dst: Option<Endpoint>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process: Option<ProcessInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stats: Option<SensorStats>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub l4: Option<L4Window>,
    /// What the MCP session tracker knows at this message (MCP traffic only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mcp_context: Option<McpContext>,
}

/// Nanoseconds since the Unix epoch, UTC. In JSON an RFC 3339 string with as
/// many fraction digits as it needs (`2026-01-15T10:00:00.5Z`), as the `time`
/// crate writes it; formatted here without it, once per output line, because
/// the time of every event passes through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct EventTime(pub i64);

impl EventTime {
    pub fn from_unix_ns(ns: i128) -> EventTime {
        EventTime(i64::try_from(ns.max(0)).unwrap_or(i64::MAX))
    }

    pub fn unix_ns(self) -> i64 {
        self.0
    }

    /// Parses RFC 3339 (any offset); `None` when it is not a time.
    pub fn parse(s: &str) -> Option<EventTime> {
        let t =
            time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()?;
        Some(EventTime::from_unix_ns(t.unix_timestamp_nanos()))
    }

    /// `YYYY-MM-DDTHH:MM:SS[.fraction]Z` into `out`, without allocating.
    pub fn write_rfc3339(self, out: &mut [u8; 30]) -> &str {
        let ns = self.0.max(0);
        let secs = ns / 1_000_000_000;
        let frac = (ns % 1_000_000_000) as u32;
        let (y, mo, d) = civil_from_days(secs.div_euclid(86_400));
        let sod = secs.rem_euclid(86_400);
        let (h, mi, se) = (sod / 3600, (sod / 60) % 60, sod % 60);
        let mut n = 0;
        let num = |v: i64, width: usize, out: &mut [u8; 30], n: &mut usize| {
            let mut v = v;
            for i in (0..width).rev() {
                out[*n + i] = b'0' + (v % 10) as u8;
                v /= 10;
            }
            *n += width;
        };
        num(y.clamp(0, 9999), 4, out, &mut n);
        for (sep, v) in [(b'-', mo), (b'-', d), (b'T', h), (b':', mi), (b':', se)] {
            out[n] = sep;
            n += 1;
            num(v, 2, out, &mut n);
        }
        if frac > 0 {
            out[n] = b'.';
            n += 1;
            let mut digits = 9;
            let mut f = frac;
            while f.is_multiple_of(10) {
                f /= 10;
                digits -= 1;
            }
            num(i64::from(f), digits, out, &mut n);
        }
        out[n] = b'Z';
        n += 1;
        // Only ASCII digits and separators were written.
        std::str::from_utf8(&out[..n]).unwrap_or("1970-01-01T00:00:00Z")
    }

    pub fn to_rfc3339(self) -> String {
        self.write_rfc3339(&mut [0; 30]).to_string()
    }
}

/// Days since 1970-01-01 to (year, month, day): Howard Hinnant's algorithm.
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

impl Serialize for EventTime {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.write_rfc3339(&mut [0; 30]))
    }
}

impl<'de> Deserialize<'de> for EventTime {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = std::borrow::Cow::<'de, str>::deserialize(d)?;
        EventTime::parse(&s)
            .ok_or_else(|| serde::de::Error::custom(format!("{s:?} is not an RFC 3339 time")))
    }
}

impl std::fmt::Display for EventTime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.write_rfc3339(&mut [0; 30]))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    HttpRequest,
    HttpResponse,
    /// Periodic snapshot of the sensor's own counters (drops, truncations, ...).
    SensorStats,
    /// One window of TCP flag counts for a service or a source prefix.
    L4Window,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::HttpRequest => "http_request",
            EventKind::HttpResponse => "http_response",
            EventKind::SensorStats => "sensor_stats",
            EventKind::L4Window => "l4_window",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CaptureSource {
    /// TC program on a live interface.
    Net,
    /// uprobes on libssl (plaintext after decryption).
    Tls,
    /// A pcap fed through the same TC program with BPF_PROG_TEST_RUN.
    Replay,
    /// The sensor itself (stats, health).
    Sensor,
}

impl CaptureSource {
    /// The serialized name.
    pub fn as_str(self) -> &'static str {
        match self {
            CaptureSource::Net => "net",
            CaptureSource::Tls => "tls",
            CaptureSource::Replay => "replay",
            CaptureSource::Sensor => "sensor",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    Ingress,
    Egress,
    Unknown,
}

impl Direction {
    /// The serialized name.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Ingress => "ingress",
            Direction::Egress => "egress",
            Direction::Unknown => "unknown",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    pub ip: IpAddr,
    pub port: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessInfo {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comm: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup_id: Option<u64>,
}

/// HTTP/1.x message metadata. Bodies and credential values never appear here.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct HttpInfo {
    /// Request method; absent on responses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// Request target as sent (bounded in the kernel; see `path_truncated`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default)]
    pub path_truncated: bool,
    /// The target as a server resolves it (capture/target.rs): what path
    /// rules match, so `//admin/`, `/%61dmin/` or `http://h/admin/` is `/admin/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_normalized: Option<String>,
    /// "HTTP/1.0" or "HTTP/1.1".
    pub version: String,
    /// Response status code; absent on requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Configured headers that were present, by lower-case name. A header that
    /// appears twice keeps its first value (and is counted in `header_count`).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Header names whose value was cut at the kernel's per-value bound.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub truncated_headers: Vec<String>,
    pub header_count: u32,
    /// Bytes of the header block including the start line and the final CRLF.
    pub header_bytes: u32,
    /// Parsed Content-Length, when present and numeric.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_length: Option<u64>,
    /// Credential headers that were present: never the value, only its shape and a keyed hash.
    #[serde(default)]
    pub credentials: BTreeMap<String, Credential>,
    /// Parser anomaly flags, e.g. "cl_and_te", "crlf_in_value" (see the schema for the list).
    #[serde(default)]
    pub anomalies: Vec<String>,
    /// TCP segments the header block spanned (1 when it fit in one).
    #[serde(default = "one")]
    pub segments: u32,
    /// MCP session id (`Mcp-Session-Id` header, or the legacy transport's
    /// `session_id` query parameter): bearer-like, so only its shape and a keyed hash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mcp_session: Option<SessionIdShape>,
    /// JSON-RPC metadata the kernel read from the first bytes of the body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mcp: Option<McpInfo>,
}

/// Where an MCP session id was carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionIdOrigin {
    /// `Mcp-Session-Id` header (Streamable HTTP).
    Header,
    /// `session_id=` in the request target (HTTP+SSE transport, 2024-11-05).
    Query,
    /// The `data:` URL of an SSE `event: endpoint` in a response body (HTTP+SSE transport).
    SseEndpoint,
}

/// What the kernel reveals about an MCP session id: never the id itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionIdShape {
    pub origin: SessionIdOrigin,
    /// Length of the id in bytes.
    pub length: u32,
    /// SipHash-2-4 under this run's key, 16 lower-case hex digits (same key as credentials).
    pub hash: String,
    #[serde(default)]
    pub hash_truncated: bool,
    /// Number of distinct byte values in the id (a cheap low-entropy signal).
    pub distinct_bytes: u32,
    /// Some byte lies outside 0x21..=0x7E (the spec's visible-ASCII range).
    #[serde(default)]
    pub outside_visible_ascii: bool,
}

/// JSON-RPC 2.0 metadata from the first bytes of an HTTP body. The body itself
/// never leaves the kernel (tool arguments can hold secrets).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct McpInfo {
    /// The body is a JSON object (or batch array) with a `"jsonrpc"` member.
    pub jsonrpc: bool,
    /// The body is a JSON array (a batch); only its first element is read.
    #[serde(default)]
    pub batch: bool,
    /// `method` of the (first) message, at most 64 bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    #[serde(default)]
    pub method_truncated: bool,
    /// The message has an `id` member (request or response, not a notification).
    #[serde(default)]
    pub has_id: bool,
    /// `params.name` (tools/call, prompts/get) or `params.uri` (resources/read), at most 128 bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub params_name: Option<String>,
    #[serde(default)]
    pub params_name_truncated: bool,
    /// Responses: the message has a `result` / an `error` member.
    #[serde(default)]
    pub has_result: bool,
    #[serde(default)]
    pub has_error: bool,
    /// How the body scan ended: "complete" (every member looked for was decided),
    /// "window" (stopped at the kernel's body-scan bound), "not_json", "no_body",
    /// or "ended" (the body or the flow ended first).
    pub body_scan: String,
    /// Body bytes the kernel looked at.
    #[serde(default)]
    pub body_bytes_scanned: u32,
    /// Response of Content-Type text/event-stream whose first SSE event is
    /// `event: endpoint` (HTTP+SSE transport); the session id in its URL is in `mcp_session`.
    #[serde(default)]
    pub sse_endpoint: bool,
}

fn one() -> u32 {
    1
}

/// Which MCP wire form a message belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum McpTransport {
    /// Streamable HTTP with `Mcp-Session-Id` (2025-03-26 .. 2025-11-25), or its
    /// session-less start (`initialize` before an id is issued).
    Session,
    /// Stateless Streamable HTTP (2026-07-28): per-request version and `Mcp-Method`.
    Stateless,
    /// The deprecated HTTP+SSE transport (2024-11-05): id in the query string.
    Sse,
    /// An MCP endpoint or JSON-RPC body, but nothing says which form yet.
    Unknown,
}

/// The tracker's view of one session id at this message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionState {
    /// This response issued the id (answer to `initialize`, or an SSE `endpoint` event).
    Issued,
    /// Issued earlier and not ended.
    Live,
    /// Ended earlier (see `ended_by`) and used again.
    Ended,
    /// Never seen issued by this sensor.
    Unknown,
}

/// Why a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionEnd {
    /// DELETE answered 2xx.
    Delete,
    /// The server answered 404 to a request carrying the id.
    NotFound,
    /// No traffic for `mcp.session_idle_secs`.
    Expired,
}

/// Session facts for rules. Keyed by the id's keyed hash: the id never leaves the kernel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct McpSessionContext {
    /// Keyed hash of the session id (same as `http.mcp_session.hash`).
    pub hash: String,
    pub state: SessionState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_by: Option<SessionEnd>,
    /// This message ended the session (2xx to DELETE, or 404).
    #[serde(default)]
    pub ended_here: bool,
    /// Client address the id was issued to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<IpAddr>,
    /// The request comes from another address than the one the id was issued to.
    #[serde(default)]
    pub client_changed: bool,
    /// `initialize` was answered 2xx and `notifications/initialized` followed.
    #[serde(default)]
    pub initialized: bool,
    /// `MCP-Protocol-Version` of the first request that carried one in this session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// This request's `MCP-Protocol-Version` differs from `version`.
    #[serde(default)]
    pub version_changed: bool,
    /// Requests seen on this session, this one included.
    #[serde(default)]
    pub requests: u64,
    /// Requests per JSON-RPC method on this session (at most 64 methods; the rest under "other").
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub methods: BTreeMap<String, u64>,
    /// Milliseconds since the id was issued.
    #[serde(default)]
    pub age_ms: u64,
    /// Milliseconds since the previous message on this session.
    #[serde(default)]
    pub idle_ms: u64,
}

/// Facts about the client address (towards this server) at this message.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct McpClientContext {
    /// Sessions issued to this client address by this server that have not ended.
    #[serde(default)]
    pub live_sessions: u32,
    /// The server answered this client 401 within `mcp.auth_challenge_secs`.
    #[serde(default)]
    pub auth_challenged: bool,
    /// Stateless form: protocol versions this client has used with this server.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub versions: Vec<String>,
    /// Stateless form: requests from this client to this server, this one included.
    #[serde(default)]
    pub requests: u64,
    /// Stateless form: requests per JSON-RPC method (at most 64 methods; the rest under "other").
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub methods: BTreeMap<String, u64>,
}

/// The request a response answers (paired per TCP flow, in HTTP/1.1 order).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct McpRequestSummary {
    /// HTTP method.
    pub method: String,
    /// JSON-RPC method of the request body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpc_method: Option<String>,
    /// The request carried a session id.
    #[serde(default)]
    pub had_session: bool,
    #[serde(default)]
    pub had_authorization: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
}

/// Stateless requests: do the routing headers agree with the body?
/// `None` where the body scan could not decide.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct McpHeaderCheck {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method_matches: Option<bool>,
    /// `Mcp-Name` (after `=?base64?...?=` decoding) against `params.name` / `params.uri`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name_matches: Option<bool>,
    /// Required headers that are absent (`mcp-protocol-version`, `mcp-method`, `mcp-name`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub missing: Vec<String>,
}

/// The MCP session tracker's view, attached to MCP requests and responses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct McpContext {
    pub transport: McpTransport,
    /// The request path (or the paired request's) is one of `mcp.endpoint_paths`.
    #[serde(default)]
    pub endpoint: bool,
    /// The tracker has seen `mcp.warmup_secs` of traffic: sessions older than the
    /// sensor are no longer expected.
    #[serde(default)]
    pub tracker_warm: bool,
    /// The sensor inspected only a sample of connections (CPU budget) now or
    /// within `mcp.warmup_secs`: sessions may have been issued, initialised or
    /// ended unseen.
    #[serde(default)]
    pub sampled: bool,
    /// The request (for a response: the request it answers) sent an `Origin`
    /// not in `mcp.allowed_origins` (empty list: not a loopback page to a loopback server).
    #[serde(default)]
    pub origin_refused: bool,
    /// Its `Host` is not in `mcp.allowed_hosts` (empty list: a loopback server
    /// reached by a name that is not a loopback name).
    #[serde(default)]
    pub host_refused: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<McpSessionContext>,
    #[serde(default)]
    pub client: McpClientContext,
    /// Responses: the request this answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<McpRequestSummary>,
    /// Stateless requests only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header_check: Option<McpHeaderCheck>,
}

/// What the kernel reveals about a credential header.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credential {
    /// "bearer", "basic", "digest", "negotiate", or "other" (always "other" for cookies).
    pub scheme: String,
    /// Length of the value in bytes (after leading whitespace).
    pub length: u32,
    /// SipHash-2-4 of the value under this run's 128-bit key, 16 lower-case hex digits.
    pub hash: String,
    /// True when the value was longer than the kernel hashes (the hash covers a prefix).
    #[serde(default)]
    pub hash_truncated: bool,
}

/// The sensor's own counters, as deltas since the previous snapshot and totals.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct SensorStats {
    pub interval_ms: u64,
    pub packets_seen: u64,
    pub http_messages: u64,
    pub ringbuf_drops: u64,
    pub ringbuf_drops_total: u64,
    pub truncated: u64,
    pub parse_errors: u64,
    pub flow_continuations: u64,
    pub flow_state_lost: u64,
    /// Messages that found their flow table full when they had to wait for
    /// a later segment: emitted at once, truncated (see capture.flow_table_mb).
    #[serde(default)]
    pub flow_table_full: u64,
    /// Entries the sweep took out of the flow tables after
    /// `capture.flow_idle_secs` without an end (header blocks are emitted truncated).
    #[serde(default)]
    pub flows_expired: u64,
    /// Packets (or SSL calls) whose bytes after the per-packet message limit
    /// (16 pipelined messages; 4 per SSL call) were not parsed.
    #[serde(default)]
    pub pipeline_left: u64,
    /// Segments that overlapped bytes already parsed; only their new bytes
    /// were parsed (the first copy wins, as in the Linux stack).
    #[serde(default)]
    pub overlap_trimmed: u64,
    /// IP fragments carrying TCP: never parsed (servers reassemble and answer
    /// them), so a sign of evasion on a gateway (rule GW-SENSOR-004).
    #[serde(default)]
    pub tcp_fragments: u64,
    /// Events userspace could not decode (size mismatch): a bug, counted, never silent.
    pub decode_errors: u64,
    /// Payload packets (and TLS read/write calls) left uninspected because the CPU budget
    /// (`capture.cpu_budget_percent`) was spent: sampled, counted, never silent.
    #[serde(default)]
    pub shed_packets: u64,
    /// Share of connections inspected at the end of the interval (100 without a budget).
    #[serde(default = "full_inspection")]
    pub inspected_percent: f64,
    /// Capture paths that do not run on this host ("packet": the TC programs,
    /// "tls": the libssl uprobes, "tls_endpoints": the socket tracepoints that
    /// give TLS events their addresses), because the kernel refused them or
    /// they could not attach. Empty when everything runs.
    #[serde(default)]
    pub degraded: Vec<String>,
}

fn full_inspection() -> f64 {
    100.0
}

/// TCP flag counts over one window, for one key: a service (destination
/// ip:port) or a source prefix. The kernel counts; one event per active key per window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct L4Window {
    /// "service" or "source".
    pub scope: String,
    /// Service address, or the network address of the source prefix.
    pub ip: IpAddr,
    /// Service port (absent for source prefixes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Source prefix in CIDR form (source scope only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    pub window_ms: u64,
    pub syn: u64,
    pub synack: u64,
    pub rst: u64,
    pub fin: u64,
    /// SYNs per second over the window. For a partial window, its SYNs over
    /// the whole window length (`l4.window_ms`): the least the window would
    /// have shown, so rules decide on it as they would have at its end.
    pub syn_rate: f64,
    /// RSTs per second, taken as `syn_rate` is.
    #[serde(default)]
    pub rst_rate: f64,
    /// The window was cut short by an early alarm: its counts already met a
    /// rule threshold, so they were sent at once (`window_ms` says how long
    /// it ran). The key's next window starts there; every packet is in
    /// exactly one window.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub partial: bool,
    /// SYN-ACKs answered per SYN (service scope; absent without SYNs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub synack_ratio: Option<f64>,
    /// Service: distinct source addresses that sent SYNs (estimate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub distinct_sources: Option<u64>,
    /// Source: distinct destination ports it sent SYNs to (estimate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub distinct_ports: Option<u64>,
    /// Source: distinct destination addresses it sent SYNs to (estimate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub distinct_hosts: Option<u64>,
    /// An estimate hit the top of what 256-bit linear counting measures: "at least".
    #[serde(default)]
    pub estimate_saturated: bool,
    /// Service scope: the busiest source prefixes of this window by SYNs (all services).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub top_sources: Vec<TopSource>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopSource {
    pub prefix: String,
    pub syn: u64,
}

#[cfg(test)]
mod time_tests {
    use super::EventTime;

    /// The hand-written formatter writes what the `time` crate writes.
    #[test]
    fn event_time_formats_as_the_time_crate_does() {
        // Whole seconds, millis, micros, nanos, and pseudo-random instants up to 2096.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut cases = vec![0i64, 1, 999_999_999, 1_000_000_000, 951_782_400_000_000_000];
        for _ in 0..20_000 {
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let ns = (x >> 2) as i64 % 4_000_000_000_000_000_000;
            cases.extend([
                ns,
                ns - ns % 1_000_000_000,
                ns - ns % 1_000_000,
                ns - ns % 1000,
            ]);
        }
        for ns in cases {
            let t = EventTime(ns);
            let want = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ns))
                .expect("in range")
                .format(&time::format_description::well_known::Rfc3339)
                .expect("formats");
            assert_eq!(t.to_rfc3339(), want, "{ns}");
            assert_eq!(EventTime::parse(&want), Some(t));
        }
        assert_eq!(
            EventTime(1_768_471_200_500_000_000).to_rfc3339(),
            "2026-01-15T10:00:00.5Z"
        );
        let json = serde_json::to_string(&EventTime(0)).expect("json");
        assert_eq!(json, "\"1970-01-01T00:00:00Z\"");
        assert!(serde_json::from_str::<EventTime>("\"yesterday\"").is_err());
    }
}
