//! The MCP session tracker: follows sessions (by the keyed hash of their id),
//! clients and TCP flows across events, and writes what it knows at each MCP
//! message into `Event::mcp_context` for rules. It must see events in capture
//! order, so it runs before events are sharded to rule workers.

use std::collections::{BTreeMap, VecDeque};
use std::net::IpAddr;
use std::num::NonZeroUsize;

use lru::LruCache;

use super::config::McpConfig;
use super::names::{decode_header_value, NAME_BEARING_METHODS};
use crate::events::{
    Event, EventKind, HttpInfo, McpClientContext, McpContext, McpHeaderCheck, McpRequestSummary,
    McpSessionContext, McpTransport, SessionEnd, SessionIdOrigin, SessionState,
};

const NS: i64 = 1_000_000_000;
/// Methods counted per session or client; more distinct names are counted under "other".
const MAX_METHODS: usize = 64;
/// Protocol versions remembered per stateless client.
const MAX_VERSIONS_PER_CLIENT: usize = 8;
/// Sessions are checked for idle expiry at most this often (event time).
const SWEEP_EVERY_NS: i64 = 60 * NS;

/// What the tracker counted since it started (for metrics and the final log).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrackerCounters {
    pub sessions_issued: u64,
    pub sessions_ended: u64,
    /// Live sessions forgotten to stay within `mcp.max_sessions`.
    pub sessions_evicted: u64,
    pub ended_evicted: u64,
    pub clients_evicted: u64,
    pub flows_evicted: u64,
    /// Requests dropped from a flow's queue past `mcp.max_pending_per_flow`.
    pub pending_dropped: u64,
    /// MCP-looking responses with no request to pair with (sensor started mid-flow, lost events).
    pub unpaired_responses: u64,
}

impl TrackerCounters {
    /// Everything forgotten to stay within the `[mcp]` bounds.
    pub fn evictions(&self) -> u64 {
        self.sessions_evicted
            + self.ended_evicted
            + self.clients_evicted
            + self.flows_evicted
            + self.pending_dropped
    }
}

struct Session {
    transport: McpTransport,
    issuer: IpAddr,
    /// The issuer's client entry, whose `live_sessions` this session counts in.
    client: Option<ClientKey>,
    issued_ns: i64,
    last_ns: i64,
    initialize_answered: bool,
    initialized: bool,
    version: Option<String>,
    requests: u64,
    methods: BTreeMap<String, u64>,
}

struct Ended {
    why: SessionEnd,
    at_ns: i64,
    issuer: IpAddr,
}

/// A client address towards one server (ip, port).
type ClientKey = (IpAddr, IpAddr, u16);
/// (client ip, client port, server ip, server port).
type FlowKey = (IpAddr, u16, IpAddr, u16);

#[derive(Default)]
struct Client {
    live_sessions: u32,
    challenged_ns: Option<i64>,
    versions: Vec<String>,
    requests: u64,
    methods: BTreeMap<String, u64>,
}

/// Counts `method`, or "other" once `methods` holds `MAX_METHODS` names.
fn count_method(methods: &mut BTreeMap<String, u64>, method: &str) {
    let name = if methods.len() < MAX_METHODS || methods.contains_key(method) {
        method
    } else {
        "other"
    };
    *methods.entry(name.to_string()).or_insert(0) += 1;
}

/// A request waiting for its response on one TCP flow.
#[derive(Default)]
struct Pending {
    mcp: bool,
    http_method: String,
    rpc_method: Option<String>,
    session_hash: Option<String>,
    authorization: bool,
    origin: Option<String>,
    host: Option<String>,
    endpoint: bool,
    origin_refused: bool,
    host_refused: bool,
    transport: Option<McpTransport>,
}

/// See the module documentation. Not `Sync`: one tracker, one thread.
pub struct Tracker {
    cfg: McpConfig,
    sessions: LruCache<String, Session>,
    ended: LruCache<String, Ended>,
    clients: LruCache<ClientKey, Client>,
    flows: LruCache<FlowKey, VecDeque<Pending>>,
    first_ns: Option<i64>,
    last_sweep_ns: i64,
    /// The CPU budget has the kernel sampling connections now
    /// (`capture.cpu_budget_percent`), and until when the view counts as partial.
    sampling: bool,
    sampled_until_ns: i64,
    counters: TrackerCounters,
}

fn cap(n: usize) -> NonZeroUsize {
    NonZeroUsize::new(n).unwrap_or(NonZeroUsize::MIN)
}

fn header<'a>(http: &'a HttpInfo, name: &str) -> Option<&'a str> {
    http.headers.get(name).map(String::as_str)
}

/// `/mcp` matches `/mcp`, `/mcp/`, `/mcp/x`, `/mcp?x`; never `/mcpx`.
fn path_matches(path: &str, endpoint: &str) -> bool {
    let endpoint = endpoint.trim_end_matches('/');
    match path.strip_prefix(endpoint) {
        Some(rest) => rest.is_empty() || rest.starts_with('/') || rest.starts_with('?'),
        None => false,
    }
}

fn is_loopback_name(host: &str) -> bool {
    ["localhost", "127.0.0.1", "[::1]", "::1"]
        .iter()
        .any(|n| n.eq_ignore_ascii_case(host))
}

/// `value` equals `pattern` (ASCII case-insensitive), or `pattern` ends in
/// `:*` and `value` is the same with any port (`http://localhost:*`).
fn allowed(value: &str, pattern: &str) -> bool {
    if value.eq_ignore_ascii_case(pattern) {
        return true;
    }
    let Some(prefix) = pattern.strip_suffix('*').filter(|p| p.ends_with(':')) else {
        return false;
    };
    value.len() > prefix.len()
        && value.is_char_boundary(prefix.len())
        && value[..prefix.len()].eq_ignore_ascii_case(prefix)
        && value[prefix.len()..].bytes().all(|b| b.is_ascii_digit())
}

fn is_2xx(status: u16) -> bool {
    (200..300).contains(&status)
}

/// The host part of a Host header value (`[::1]:8080` → `[::1]`, `a:80` → `a`).
fn host_without_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.split_inclusive(']').next().unwrap_or(host);
    }
    match host.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) && !h.contains(':') => h,
        _ => host,
    }
}

impl Tracker {
    pub fn new(cfg: &McpConfig) -> Tracker {
        Tracker {
            cfg: cfg.clone(),
            sessions: LruCache::new(cap(cfg.max_sessions)),
            ended: LruCache::new(cap(cfg.max_ended_sessions)),
            clients: LruCache::new(cap(cfg.max_clients)),
            flows: LruCache::new(cap(cfg.max_flows)),
            first_ns: None,
            last_sweep_ns: 0,
            sampling: false,
            sampled_until_ns: i64::MIN,
            counters: TrackerCounters::default(),
        }
    }

    /// Sessions tracked now (live, not ended).
    pub fn live_sessions(&self) -> usize {
        self.sessions.len()
    }

    pub fn counters(&self) -> &TrackerCounters {
        &self.counters
    }

    /// Whether the kernel inspects only a sample of connections now. While it
    /// does, and for `mcp.warmup_secs` after, handshakes, issued ids and ends
    /// may have gone unseen: contexts say `sampled` so rules do not read a gap
    /// as an attack.
    pub fn set_sampling(&mut self, on: bool) {
        self.sampling = on;
    }

    /// Follows one event and, for MCP traffic, sets `ev.mcp_context`.
    pub fn observe(&mut self, ev: &mut Event) {
        if !self.cfg.enabled || ev.http.is_none() {
            return;
        }
        let now = ev.time.unix_ns();
        let first = *self.first_ns.get_or_insert(now);
        if now - self.last_sweep_ns >= SWEEP_EVERY_NS {
            self.last_sweep_ns = now;
            self.expire_idle(now);
        }
        let warm = now - first >= secs(self.cfg.warmup_secs);
        if self.sampling {
            self.sampled_until_ns = now.saturating_add(secs(self.cfg.warmup_secs));
        }
        let sampled = self.sampling || now < self.sampled_until_ns;
        let ctx = match ev.kind {
            EventKind::HttpRequest => self.on_request(ev, now),
            EventKind::HttpResponse => self.on_response(ev, now),
            _ => None,
        };
        ev.mcp_context = ctx.map(|mut c| {
            c.tracker_warm = warm;
            c.sampled = sampled;
            c
        });
    }

    fn is_endpoint(&self, path: &str) -> bool {
        self.cfg
            .endpoint_paths
            .iter()
            .any(|e| path_matches(path, e))
    }

    /// An Origin outside `mcp.allowed_origins`. With an empty list only a
    /// loopback server reached from a loopback page passes (the SDK's default).
    fn origin_refused(&self, origin: Option<&str>, server: Option<IpAddr>) -> bool {
        let Some(origin) = origin else { return false };
        if !self.cfg.allowed_origins.is_empty() {
            return !self.cfg.allowed_origins.iter().any(|a| allowed(origin, a));
        }
        let host = origin.split_once("://").map_or(origin, |(_, rest)| rest);
        !(server.is_some_and(|ip| ip.is_loopback()) && is_loopback_name(host_without_port(host)))
    }

    /// A Host outside `mcp.allowed_hosts`. With an empty list only loopback
    /// servers are checked: they must be reached by a loopback name.
    fn host_refused(&self, host: Option<&str>, server: Option<IpAddr>) -> bool {
        let Some(host) = host else { return false };
        if !self.cfg.allowed_hosts.is_empty() {
            return !self
                .cfg
                .allowed_hosts
                .iter()
                .any(|a| allowed(host, a) || host_without_port(host).eq_ignore_ascii_case(a));
        }
        // DNS rebinding: a local server reached under a foreign name.
        server.is_some_and(|ip| ip.is_loopback()) && !is_loopback_name(host_without_port(host))
    }

    fn on_request(&mut self, ev: &Event, now: i64) -> Option<McpContext> {
        let http = ev.http.as_ref()?;
        let path = http.path.as_deref().unwrap_or("");
        let endpoint = self.is_endpoint(path);
        let jsonrpc = http.mcp.as_ref().is_some_and(|m| m.jsonrpc);
        // A `method` counts only in a JSON-RPC body.
        let rpc_method = http
            .mcp
            .as_ref()
            .filter(|m| m.jsonrpc)
            .and_then(|m| m.method.clone());
        let version = header(http, "mcp-protocol-version");
        let method_header = header(http, "mcp-method");
        let mcp = endpoint
            || jsonrpc
            || http.mcp_session.is_some()
            || version.is_some()
            || method_header.is_some();
        let server = ev.dst.as_ref().map(|d| d.ip);
        let origin = header(http, "origin");
        let host = header(http, "host");
        let mut pending = Pending {
            mcp,
            http_method: http.method.clone().unwrap_or_default(),
            ..Pending::default()
        };
        if !mcp {
            self.enqueue(ev, pending);
            return None;
        }
        let stateless = version.is_some_and(|v| self.cfg.stateless_versions.iter().any(|s| s == v))
            || (method_header.is_some() && http.mcp_session.is_none());
        let known_sse = http
            .mcp_session
            .as_ref()
            .and_then(|s| self.sessions.peek(&s.hash))
            .is_some_and(|s| s.transport == McpTransport::Sse);
        let transport = match &http.mcp_session {
            Some(s) if s.origin == SessionIdOrigin::Query || known_sse => McpTransport::Sse,
            Some(_) => McpTransport::Session,
            None if stateless => McpTransport::Stateless,
            None if rpc_method.as_deref() == Some("initialize") => McpTransport::Session,
            None => McpTransport::Unknown,
        };
        let client_ip = ev.src.as_ref().map(|s| s.ip);
        let session = match (&http.mcp_session, client_ip) {
            (Some(shape), Some(ip)) => {
                Some(self.session_on_request(&shape.hash, ip, version, rpc_method.as_deref(), now))
            }
            _ => None,
        };
        let mut client = McpClientContext::default();
        if let Some(key) = client_key(ev) {
            let window = secs(self.cfg.auth_challenge_secs);
            let c = self.client_mut(key);
            client.live_sessions = c.live_sessions;
            client.auth_challenged = c.challenged_ns.is_some_and(|t| now - t <= window);
            if transport == McpTransport::Stateless {
                c.requests += 1;
                if let Some(v) = version {
                    if !c.versions.iter().any(|x| x == v) {
                        if c.versions.len() >= MAX_VERSIONS_PER_CLIENT {
                            c.versions.remove(0);
                        }
                        c.versions.push(v.to_string());
                    }
                }
                if let Some(m) = rpc_method.as_deref() {
                    count_method(&mut c.methods, m);
                }
                client.versions = c.versions.clone();
                client.requests = c.requests;
                client.methods = c.methods.clone();
            }
        }
        let header_check = (transport == McpTransport::Stateless && jsonrpc)
            .then(|| check_headers(http, rpc_method.as_deref()));
        let origin_refused = self.origin_refused(origin, server);
        let host_refused = self.host_refused(host, server);
        pending.rpc_method = rpc_method;
        pending.session_hash = http.mcp_session.as_ref().map(|s| s.hash.clone());
        pending.authorization = http.credentials.contains_key("authorization");
        pending.origin = origin.map(str::to_string);
        pending.host = host.map(str::to_string);
        pending.endpoint = endpoint;
        pending.origin_refused = origin_refused;
        pending.host_refused = host_refused;
        pending.transport = Some(transport);
        self.enqueue(ev, pending);
        Some(McpContext {
            transport,
            endpoint,
            tracker_warm: false,
            sampled: false,
            origin_refused,
            host_refused,
            session,
            client,
            request: None,
            header_check,
        })
    }

    fn session_on_request(
        &mut self,
        hash: &str,
        client_ip: IpAddr,
        version: Option<&str>,
        rpc_method: Option<&str>,
        now: i64,
    ) -> McpSessionContext {
        let idle = secs(self.cfg.session_idle_secs);
        if self
            .sessions
            .peek(hash)
            .is_some_and(|s| now - s.last_ns > idle)
        {
            self.end(hash, SessionEnd::Expired, now);
        }
        if let Some(s) = self.sessions.get_mut(hash) {
            let idle_ms = ms(now - s.last_ns);
            s.last_ns = now;
            s.requests += 1;
            if let Some(m) = rpc_method {
                count_method(&mut s.methods, m);
                if m == "notifications/initialized" && s.initialize_answered {
                    s.initialized = true;
                }
            }
            let mut version_changed = false;
            if let Some(v) = version {
                match &s.version {
                    None => s.version = Some(v.to_string()),
                    Some(old) => version_changed = old != v,
                }
            }
            return McpSessionContext {
                hash: hash.to_string(),
                state: SessionState::Live,
                ended_by: None,
                ended_here: false,
                issuer: Some(s.issuer),
                client_changed: s.issuer != client_ip,
                initialized: s.initialized,
                version: s.version.clone(),
                version_changed,
                requests: s.requests,
                methods: s.methods.clone(),
                age_ms: ms(now - s.issued_ns),
                idle_ms,
            };
        }
        let ttl = secs(self.cfg.ended_ttl_secs);
        if self.ended.peek(hash).is_some_and(|e| now - e.at_ns > ttl) {
            self.ended.pop(hash);
        }
        match self.ended.get(hash) {
            Some(e) => McpSessionContext {
                hash: hash.to_string(),
                state: SessionState::Ended,
                ended_by: Some(e.why),
                ended_here: false,
                issuer: Some(e.issuer),
                client_changed: e.issuer != client_ip,
                initialized: false,
                version: None,
                version_changed: false,
                requests: 0,
                methods: BTreeMap::new(),
                age_ms: 0,
                idle_ms: 0,
            },
            None => unknown_session(hash),
        }
    }

    fn on_response(&mut self, ev: &Event, now: i64) -> Option<McpContext> {
        let http = ev.http.as_ref()?;
        let status = http.status.unwrap_or(0);
        let (client, server) = (ev.dst.as_ref(), ev.src.as_ref());
        let flow = match (client, server) {
            (Some(c), Some(s)) => Some((c.ip, c.port, s.ip, s.port)),
            _ => None,
        };
        // 1xx answers come before the real response: the request stays queued.
        let req = match flow {
            Some(f) if status >= 200 => self.flows.get_mut(&f).and_then(VecDeque::pop_front),
            _ => None,
        };
        let sse_endpoint = http.mcp.as_ref().is_some_and(|m| m.sse_endpoint);
        let issues = http.mcp_session.is_some() || sse_endpoint;
        let req = match req {
            Some(r) if r.mcp => r,
            Some(_) if !issues => return None,
            Some(r) => r,
            None if !issues => return None,
            None => {
                self.counters.unpaired_responses += 1;
                Pending::default()
            }
        };
        let client_ip = client.map(|c| c.ip);
        if let Some(key) = client_key_response(ev) {
            if status == 401 {
                self.client_mut(key).challenged_ns = Some(now);
            }
        }
        let mut transport = req.transport.unwrap_or(McpTransport::Unknown);
        let mut session = None;
        if let (Some(shape), Some(ip)) = (&http.mcp_session, client_ip) {
            let legacy = shape.origin == SessionIdOrigin::SseEndpoint || sse_endpoint;
            let answers_initialize = req.rpc_method.as_deref() == Some("initialize");
            let unknown = self.sessions.peek(&shape.hash).is_none();
            if legacy && unknown && is_2xx(status) {
                transport = McpTransport::Sse;
                session = Some(self.issue(&shape.hash, ip, McpTransport::Sse, false, now, ev));
            } else if unknown && is_2xx(status) && answers_initialize && req.session_hash.is_none()
            {
                transport = McpTransport::Session;
                session = Some(self.issue(&shape.hash, ip, McpTransport::Session, true, now, ev));
            }
        }
        if session.is_none() {
            let hash = req
                .session_hash
                .clone()
                .or_else(|| http.mcp_session.as_ref().map(|s| s.hash.clone()));
            if let (Some(hash), Some(ip)) = (hash, client_ip) {
                session = Some(self.session_on_response(&hash, ip, &req, status, now));
            }
        }
        Some(McpContext {
            transport,
            endpoint: req.endpoint,
            tracker_warm: false,
            sampled: false,
            origin_refused: req.origin_refused,
            host_refused: req.host_refused,
            session,
            client: McpClientContext {
                live_sessions: client_key_response(ev)
                    .and_then(|k| self.clients.peek(&k))
                    .map_or(0, |c| c.live_sessions),
                ..McpClientContext::default()
            },
            request: Some(McpRequestSummary {
                method: req.http_method,
                rpc_method: req.rpc_method,
                had_session: req.session_hash.is_some(),
                had_authorization: req.authorization,
                origin: req.origin,
                host: req.host,
            }),
            header_check: None,
        })
    }

    /// A response to a request on an existing (or unknown) session.
    fn session_on_response(
        &mut self,
        hash: &str,
        client_ip: IpAddr,
        req: &Pending,
        status: u16,
        now: i64,
    ) -> McpSessionContext {
        let ends = if req.session_hash.as_deref() != Some(hash) {
            None
        } else if status == 404 {
            Some(SessionEnd::NotFound)
        } else if req.http_method == "DELETE" && is_2xx(status) {
            Some(SessionEnd::Delete)
        } else {
            None
        };
        if let Some(s) = self.sessions.get_mut(hash) {
            s.last_ns = now;
            if is_2xx(status) && req.rpc_method.as_deref() == Some("initialize") {
                s.initialize_answered = true;
            }
        }
        let mut ctx = match self.sessions.peek(hash) {
            Some(s) => McpSessionContext {
                hash: hash.to_string(),
                state: SessionState::Live,
                ended_by: None,
                ended_here: false,
                issuer: Some(s.issuer),
                client_changed: s.issuer != client_ip,
                initialized: s.initialized,
                version: s.version.clone(),
                version_changed: false,
                requests: s.requests,
                methods: s.methods.clone(),
                age_ms: ms(now - s.issued_ns),
                idle_ms: 0,
            },
            None => match self.ended.peek(hash) {
                Some(e) => McpSessionContext {
                    state: SessionState::Ended,
                    ended_by: Some(e.why),
                    issuer: Some(e.issuer),
                    client_changed: e.issuer != client_ip,
                    ..unknown_session(hash)
                },
                None => unknown_session(hash),
            },
        };
        if let Some(why) = ends {
            if ctx.state == SessionState::Live {
                self.end(hash, why, now);
                ctx.state = SessionState::Ended;
                ctx.ended_by = Some(why);
                ctx.ended_here = true;
            }
        }
        ctx
    }

    fn issue(
        &mut self,
        hash: &str,
        client_ip: IpAddr,
        transport: McpTransport,
        initialize_answered: bool,
        now: i64,
        ev: &Event,
    ) -> McpSessionContext {
        self.ended.pop(hash);
        let key = client_key_response(ev);
        let session = Session {
            transport,
            issuer: client_ip,
            client: key,
            issued_ns: now,
            last_ns: now,
            initialize_answered,
            initialized: false,
            version: None,
            requests: 0,
            methods: BTreeMap::new(),
        };
        if let Some((old_hash, old)) = self.sessions.push(hash.to_string(), session) {
            if old_hash != hash {
                self.counters.sessions_evicted += 1;
                self.release(&old);
            }
        }
        self.counters.sessions_issued += 1;
        if let Some(key) = key {
            self.client_mut(key).live_sessions += 1;
        }
        McpSessionContext {
            hash: hash.to_string(),
            state: SessionState::Issued,
            ended_by: None,
            ended_here: false,
            issuer: Some(client_ip),
            client_changed: false,
            initialized: false,
            version: None,
            version_changed: false,
            requests: 0,
            methods: BTreeMap::new(),
            age_ms: 0,
            idle_ms: 0,
        }
    }

    /// Ends a live session and remembers its id for reuse detection.
    fn end(&mut self, hash: &str, why: SessionEnd, now: i64) {
        let Some(s) = self.sessions.pop(hash) else {
            return;
        };
        self.release(&s);
        self.counters.sessions_ended += 1;
        let ended = Ended {
            why,
            at_ns: now,
            issuer: s.issuer,
        };
        if let Some((old, _)) = self.ended.push(hash.to_string(), ended) {
            if old != hash {
                self.counters.ended_evicted += 1;
            }
        }
    }

    /// The issuing client holds one live session less.
    fn release(&mut self, s: &Session) {
        if let Some(c) = s.client.and_then(|k| self.clients.peek_mut(&k)) {
            c.live_sessions = c.live_sessions.saturating_sub(1);
        }
    }

    fn expire_idle(&mut self, now: i64) {
        let idle = secs(self.cfg.session_idle_secs);
        let stale: Vec<String> = self
            .sessions
            .iter()
            .filter(|(_, s)| now - s.last_ns > idle)
            .map(|(h, _)| h.clone())
            .collect();
        for h in stale {
            self.end(&h, SessionEnd::Expired, now);
        }
    }

    fn client_mut(&mut self, key: ClientKey) -> &mut Client {
        if !self.clients.contains(&key) {
            if let Some((old, _)) = self.clients.push(key, Client::default()) {
                if old != key {
                    self.counters.clients_evicted += 1;
                }
            }
        }
        self.clients.get_or_insert_mut(key, Client::default)
    }

    fn enqueue(&mut self, ev: &Event, pending: Pending) {
        let (Some(c), Some(s)) = (ev.src.as_ref(), ev.dst.as_ref()) else {
            return;
        };
        let key = (c.ip, c.port, s.ip, s.port);
        if !self.flows.contains(&key) {
            if let Some((old, _)) = self.flows.push(key, VecDeque::new()) {
                if old != key {
                    self.counters.flows_evicted += 1;
                }
            }
        }
        let max = self.cfg.max_pending_per_flow;
        if let Some(q) = self.flows.get_mut(&key) {
            if q.len() >= max {
                q.pop_front();
                self.counters.pending_dropped += 1;
            }
            q.push_back(pending);
        }
    }
}

fn unknown_session(hash: &str) -> McpSessionContext {
    McpSessionContext {
        hash: hash.to_string(),
        state: SessionState::Unknown,
        ended_by: None,
        ended_here: false,
        issuer: None,
        client_changed: false,
        initialized: false,
        version: None,
        version_changed: false,
        requests: 0,
        methods: BTreeMap::new(),
        age_ms: 0,
        idle_ms: 0,
    }
}

fn client_key(ev: &Event) -> Option<ClientKey> {
    match (ev.src.as_ref(), ev.dst.as_ref()) {
        (Some(c), Some(s)) => Some((c.ip, s.ip, s.port)),
        _ => None,
    }
}

fn client_key_response(ev: &Event) -> Option<ClientKey> {
    match (ev.dst.as_ref(), ev.src.as_ref()) {
        (Some(c), Some(s)) => Some((c.ip, s.ip, s.port)),
        _ => None,
    }
}

fn secs(s: u64) -> i64 {
    i64::try_from(s).unwrap_or(i64::MAX / NS).saturating_mul(NS)
}

fn ms(ns: i64) -> u64 {
    u64::try_from(ns / 1_000_000).unwrap_or(0)
}

/// Stateless form: the routing headers against the body the kernel read.
fn check_headers(http: &HttpInfo, rpc_method: Option<&str>) -> McpHeaderCheck {
    let body = http.mcp.as_ref();
    let decided = body.is_some_and(|m| m.body_scan == "complete");
    let truncated = |name: &str| http.truncated_headers.iter().any(|h| h == name);
    let mut check = McpHeaderCheck::default();
    for name in ["mcp-protocol-version", "mcp-method"] {
        if header(http, name).is_none() {
            check.missing.push(name.to_string());
        }
    }
    let method_truncated = body.is_some_and(|m| m.method_truncated);
    check.method_matches = match (header(http, "mcp-method"), rpc_method) {
        (Some(h), Some(b)) => Some(prefix_equal(
            h,
            truncated("mcp-method"),
            b,
            method_truncated,
        )),
        (Some(_), None) if decided => Some(false),
        _ => None,
    };
    if rpc_method.is_some_and(|m| NAME_BEARING_METHODS.contains(&m)) {
        let body_name = body.and_then(|b| b.params_name.as_deref());
        let name_truncated = body.is_some_and(|b| b.params_name_truncated);
        match header(http, "mcp-name") {
            None => {
                // A name-bearing call without a name in the body needs no header.
                if body_name.is_some() || !decided {
                    check.missing.push("mcp-name".to_string());
                }
            }
            Some(h) => {
                check.name_matches = match (decode_header_value(h), body_name) {
                    (None, _) => Some(false),
                    (Some(v), Some(b)) => Some(prefix_equal(
                        &v,
                        truncated("mcp-name") && !h.starts_with("=?"),
                        b,
                        name_truncated,
                    )),
                    (Some(_), None) if decided => Some(false),
                    (Some(_), None) => None,
                };
            }
        }
    }
    check
}

/// Equal, or (when one side was cut at a kernel bound) one a prefix of the other.
fn prefix_equal(a: &str, a_cut: bool, b: &str, b_cut: bool) -> bool {
    a == b || (a_cut && b.starts_with(a)) || (b_cut && a.starts_with(b))
}

#[cfg(test)]
mod tests;
