//! The event as rules see it (`ev`): a Rhai object map with the same shape as
//! the event's JSON. Built by hand for the blocks every HTTP event carries,
//! because the generic serde path (`rhai::serde::to_dynamic`) costs about
//! 2.4 µs per event, a fifth of the whole rule pack's time. Rare blocks (stats,
//! L4 windows, MCP) still go through serde, so a new field can never be missed
//! there; a test checks that both paths give the same map for every fixture.

use rhai::{Array, Dynamic, ImmutableString, Map, INT};

use crate::events::{Credential, Endpoint, Event, HttpInfo, ProcessInfo};

fn int<T: TryInto<INT>>(v: T) -> Dynamic {
    Dynamic::from_int(v.try_into().unwrap_or(INT::MAX))
}

/// Straight to an ImmutableString: a short text needs one allocation, not two.
fn text(s: &str) -> Dynamic {
    Dynamic::from(ImmutableString::from(s))
}

/// Serde fallback for rarely present blocks: () if a block cannot be converted.
fn via_serde<T: serde::Serialize>(v: &T) -> Dynamic {
    rhai::serde::to_dynamic(v).unwrap_or(Dynamic::UNIT)
}

fn endpoint(e: &Endpoint) -> Dynamic {
    let mut m = Map::new();
    m.insert("ip".into(), text(&e.ip.to_string()));
    m.insert("port".into(), int(e.port));
    Dynamic::from_map(m)
}

fn process(p: &ProcessInfo) -> Dynamic {
    let mut m = Map::new();
    if let Some(pid) = p.pid {
        m.insert("pid".into(), int(pid));
    }
    if let Some(comm) = &p.comm {
        m.insert("comm".into(), text(comm));
    }
    if let Some(cg) = p.cgroup_id {
        m.insert("cgroup_id".into(), int(cg));
    }
    Dynamic::from_map(m)
}

fn credential(c: &Credential) -> Dynamic {
    let mut m = Map::new();
    m.insert("scheme".into(), text(&c.scheme));
    m.insert("length".into(), int(c.length));
    m.insert("hash".into(), text(&c.hash));
    m.insert(
        "hash_truncated".into(),
        Dynamic::from_bool(c.hash_truncated),
    );
    Dynamic::from_map(m)
}

fn strings(v: &[String]) -> Dynamic {
    Dynamic::from_array(v.iter().map(|s| text(s)).collect::<Array>())
}

fn http(h: &HttpInfo, keys: u32) -> Dynamic {
    let want = |i: usize| keys & (1 << i) != 0;
    let mut m = Map::new();
    if want(0) {
        if let Some(method) = &h.method {
            m.insert("method".into(), text(method));
        }
    }
    if want(1) {
        if let Some(path) = &h.path {
            m.insert("path".into(), text(path));
        }
    }
    if want(2) {
        if let Some(path) = &h.path_normalized {
            m.insert("path_normalized".into(), text(path));
        }
    }
    if want(3) {
        m.insert(
            "path_truncated".into(),
            Dynamic::from_bool(h.path_truncated),
        );
    }
    if want(4) {
        m.insert("version".into(), text(&h.version));
    }
    if want(5) {
        if let Some(status) = h.status {
            m.insert("status".into(), int(status));
        }
    }
    if want(6) {
        let headers: Map = h
            .headers
            .iter()
            .map(|(k, v)| (k.as_str().into(), text(v)))
            .collect();
        m.insert("headers".into(), Dynamic::from_map(headers));
    }
    if want(7) && !h.truncated_headers.is_empty() {
        m.insert("truncated_headers".into(), strings(&h.truncated_headers));
    }
    if want(8) {
        m.insert("header_count".into(), int(h.header_count));
    }
    if want(9) {
        m.insert("header_bytes".into(), int(h.header_bytes));
    }
    if want(10) {
        if let Some(cl) = h.content_length {
            m.insert("content_length".into(), int(cl));
        }
    }
    if want(11) {
        let creds: Map = h
            .credentials
            .iter()
            .map(|(k, c)| (k.as_str().into(), credential(c)))
            .collect();
        m.insert("credentials".into(), Dynamic::from_map(creds));
    }
    if want(12) {
        m.insert("anomalies".into(), strings(&h.anomalies));
    }
    if want(13) {
        m.insert("segments".into(), int(h.segments));
    }
    if want(14) {
        if let Some(s) = &h.mcp_session {
            m.insert("mcp_session".into(), via_serde(s));
        }
    }
    if want(15) {
        if let Some(mcp) = &h.mcp {
            m.insert("mcp".into(), via_serde(mcp));
        }
    }
    Dynamic::from_map(m)
}

/// Whether a rule's `requires` path is present (and non-empty) in `ev`,
/// decided on the event itself where that is cheap, so that an event no rule
/// can want is never converted. `None`: only the converted map can tell.
/// Mirrors `present` in `eval.rs` over the map [`event_to_dynamic`] builds.
/// The reference [`Presence`] (what evaluation uses) is tested against.
#[cfg(test)]
pub(crate) fn present_in_event(ev: &Event, path: &[String]) -> Option<bool> {
    let mut parts = [""; 4];
    if path.len() > parts.len() {
        return None;
    }
    for (p, s) in parts.iter_mut().zip(path) {
        *p = s.as_str();
    }
    match &parts[..path.len()] {
        ["http", rest @ ..] => {
            let Some(h) = &ev.http else {
                return Some(false);
            };
            match rest {
                // `http` always has keys; headers and credentials are maps of strings/maps.
                [] => Some(true),
                ["headers"] => Some(!h.headers.is_empty()),
                ["headers", name] => Some(h.headers.contains_key(*name)),
                // A header value is a string: nothing below it.
                ["headers", _, _, ..] => Some(false),
                ["credentials"] => Some(!h.credentials.is_empty()),
                ["credentials", name] => Some(h.credentials.contains_key(*name)),
                ["credentials", name, ..] if !h.credentials.contains_key(*name) => Some(false),
                ["anomalies"] => Some(!h.anomalies.is_empty()),
                ["anomalies", _, ..] => Some(false),
                ["mcp", ..] if h.mcp.is_none() => Some(false),
                ["mcp_session", ..] if h.mcp_session.is_none() => Some(false),
                _ => None,
            }
        }
        ["mcp_context", ..] if ev.mcp_context.is_none() => Some(false),
        ["l4", ..] if ev.l4.is_none() => Some(false),
        ["stats", ..] if ev.stats.is_none() => Some(false),
        _ => None,
    }
}

/// [`present_in_event`] for one path, worked out once at rule load: the
/// same answers without matching the path's strings on every event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Presence {
    /// `http`: present whenever the block is.
    Http,
    Headers,
    Header(String),
    Credentials,
    Credential(String),
    /// Below a credential: absent with it, otherwise the map decides.
    BelowCredential(String),
    Anomalies,
    Mcp,
    McpSession,
    /// Inside `http`, and never present there (below a header value or an anomaly).
    NeverInHttp,
    /// Inside `http`, decided by the map alone.
    HttpOther,
    McpContext,
    L4,
    Stats,
    Undecided,
}

impl Presence {
    pub(crate) fn compile(path: &[String]) -> Presence {
        let parts: Vec<&str> = path.iter().map(String::as_str).collect();
        if parts.len() > 4 {
            return Presence::Undecided;
        }
        match parts.as_slice() {
            ["http"] => Presence::Http,
            ["http", "headers"] => Presence::Headers,
            ["http", "headers", name] => Presence::Header((*name).to_string()),
            ["http", "headers", _, _, ..] => Presence::NeverInHttp,
            ["http", "credentials"] => Presence::Credentials,
            ["http", "credentials", name] => Presence::Credential((*name).to_string()),
            ["http", "credentials", name, ..] => Presence::BelowCredential((*name).to_string()),
            ["http", "anomalies"] => Presence::Anomalies,
            ["http", "anomalies", _, ..] => Presence::NeverInHttp,
            ["http", "mcp", ..] => Presence::Mcp,
            ["http", "mcp_session", ..] => Presence::McpSession,
            ["http", ..] => Presence::HttpOther,
            ["mcp_context", ..] => Presence::McpContext,
            ["l4", ..] => Presence::L4,
            ["stats", ..] => Presence::Stats,
            _ => Presence::Undecided,
        }
    }

    pub(crate) fn decide(&self, ev: &Event) -> Option<bool> {
        let in_http = |f: &dyn Fn(&HttpInfo) -> Option<bool>| match &ev.http {
            Some(h) => f(h),
            None => Some(false),
        };
        let absent_or_map = |present: bool| if present { None } else { Some(false) };
        match self {
            Presence::Http => in_http(&|_| Some(true)),
            Presence::Headers => in_http(&|h| Some(!h.headers.is_empty())),
            Presence::Header(n) => in_http(&|h| Some(h.headers.contains_key(n))),
            Presence::Credentials => in_http(&|h| Some(!h.credentials.is_empty())),
            Presence::Credential(n) => in_http(&|h| Some(h.credentials.contains_key(n))),
            Presence::BelowCredential(n) => {
                in_http(&|h| absent_or_map(h.credentials.contains_key(n)))
            }
            Presence::Anomalies => in_http(&|h| Some(!h.anomalies.is_empty())),
            Presence::Mcp => in_http(&|h| absent_or_map(h.mcp.is_some())),
            Presence::McpSession => in_http(&|h| absent_or_map(h.mcp_session.is_some())),
            Presence::NeverInHttp => in_http(&|_| Some(false)),
            Presence::HttpOther => in_http(&|_| None),
            Presence::McpContext => absent_or_map(ev.mcp_context.is_some()),
            Presence::L4 => absent_or_map(ev.l4.is_some()),
            Presence::Stats => absent_or_map(ev.stats.is_some()),
            Presence::Undecided => None,
        }
    }
}

/// Top-level keys of the rule map, in build order (bit i of `Projection::top`).
const TOP: [&str; 13] = [
    "kind",
    "time",
    "source",
    "iface",
    "ifindex",
    "direction",
    "src",
    "dst",
    "process",
    "http",
    "stats",
    "l4",
    "mcp_context",
];
const HTTP_BIT: u32 = 1 << 9;

/// Keys of `ev.http` (bit i of `Projection::http`).
const HTTP: [&str; 16] = [
    "method",
    "path",
    "path_normalized",
    "path_truncated",
    "version",
    "status",
    "headers",
    "truncated_headers",
    "header_count",
    "header_bytes",
    "content_length",
    "credentials",
    "anomalies",
    "segments",
    "mcp_session",
    "mcp",
];

/// The parts of `ev` the rules about to run can read: only those are built.
/// A rule that reads `ev.http.credentials.authorization.hash` and `ev.src.ip`
/// gets a map of those two blocks, not of every header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Projection {
    top: u32,
    http: u32,
}

impl Projection {
    pub(crate) const ALL: Projection = Projection {
        top: u32::MAX,
        http: u32::MAX,
    };

    /// What reading each of `paths` (below `ev`) needs.
    pub(crate) fn of_paths<'a, I, S>(paths: I) -> Projection
    where
        I: IntoIterator<Item = &'a [S]>,
        S: AsRef<str> + 'a,
    {
        let mut p = Projection::default();
        for path in paths {
            let Some(first) = path.first() else {
                return Projection::ALL;
            };
            let Some(i) = TOP.iter().position(|k| *k == first.as_ref()) else {
                // Not a key of the map: it reads as () whatever is built.
                continue;
            };
            p.top |= 1 << i;
            if i == 9 {
                match path
                    .get(1)
                    .and_then(|k| HTTP.iter().position(|h| *h == k.as_ref()))
                {
                    Some(j) => p.http |= 1 << j,
                    None if path.len() == 1 => p.http = u32::MAX,
                    None => {}
                }
            }
        }
        p
    }

    pub(crate) fn union(self, o: Projection) -> Projection {
        Projection {
            top: self.top | o.top,
            http: self.http | o.http,
        }
    }

    fn top(&self, key: usize) -> bool {
        self.top & (1 << key) != 0
    }
}

/// `ev` for the rules, whole.
#[cfg(test)]
pub fn event_to_dynamic(ev: &Event) -> Dynamic {
    event_to_dynamic_projected(ev, Projection::ALL)
}

/// `ev` with only the parts `p` names.
pub(crate) fn event_to_dynamic_projected(ev: &Event, p: Projection) -> Dynamic {
    let mut m = Map::new();
    if p.top(0) {
        m.insert("kind".into(), Dynamic::from(ev.kind.as_str()));
    }
    if p.top(1) {
        m.insert("time".into(), text(ev.time.write_rfc3339(&mut [0; 30])));
    }
    if p.top(2) {
        m.insert("source".into(), Dynamic::from(ev.source.as_str()));
    }
    if p.top(3) {
        if let Some(iface) = &ev.iface {
            m.insert("iface".into(), text(iface));
        }
    }
    if p.top(4) {
        m.insert("ifindex".into(), int(ev.ifindex));
    }
    if p.top(5) {
        m.insert("direction".into(), Dynamic::from(ev.direction.as_str()));
    }
    if p.top(6) {
        if let Some(src) = &ev.src {
            m.insert("src".into(), endpoint(src));
        }
    }
    if p.top(7) {
        if let Some(dst) = &ev.dst {
            m.insert("dst".into(), endpoint(dst));
        }
    }
    if p.top(8) {
        if let Some(pr) = &ev.process {
            m.insert("process".into(), process(pr));
        }
    }
    if p.top & HTTP_BIT != 0 {
        if let Some(h) = &ev.http {
            m.insert("http".into(), http(h, p.http));
        }
    }
    if p.top(10) {
        if let Some(s) = &ev.stats {
            m.insert("stats".into(), via_serde(s));
        }
    }
    if p.top(11) {
        if let Some(l4) = &ev.l4 {
            m.insert("l4".into(), via_serde(l4));
        }
    }
    if p.top(12) {
        if let Some(c) = &ev.mcp_context {
            m.insert("mcp_context".into(), via_serde(c));
        }
    }
    Dynamic::from_map(m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn as_json(d: &Dynamic) -> serde_json::Value {
        rhai::serde::from_dynamic::<serde_json::Value>(d).expect("convertible")
    }

    /// Every `requires` path of the shipped pack, and the shapes around them.
    const REQUIRES_PATHS: &[&str] = &[
        "http",
        "http.headers",
        "http.headers.user-agent",
        "http.headers.x-forwarded-for",
        "http.headers.mcp-protocol-version",
        "http.headers.host.deeper",
        "http.credentials",
        "http.credentials.authorization",
        "http.credentials.proxy-authorization",
        "http.credentials.authorization.scheme",
        "http.credentials.cookie.hash",
        "http.anomalies",
        "http.anomalies.0",
        "http.mcp",
        "http.mcp.method",
        "http.mcp_session",
        "http.status",
        "mcp_context",
        "mcp_context.session",
        "mcp_context.client.auth_challenged",
        "l4",
        "stats",
        "src.ip",
        "a.b.c.d.e",
    ];

    /// Every fixture event of the shipped pack, plus every optional block filled:
    /// the hand-built map equals the serde one.
    #[test]
    fn same_map_as_serde_for_every_fixture() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../rules");
        let mut checked = 0;
        let mut dirs = vec![root];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).expect("rules dir") {
                let path = entry.expect("entry").path();
                if path.is_dir() {
                    dirs.push(path);
                    continue;
                }
                if !path.to_string_lossy().ends_with(".tests.json") {
                    continue;
                }
                let text = std::fs::read_to_string(&path).expect("fixture");
                let v: serde_json::Value = serde_json::from_str(&text).expect("json");
                let cases = v.as_array().cloned().unwrap_or_default();
                for (i, case) in cases.iter().enumerate() {
                    let events = case
                        .get("events")
                        .and_then(|e| e.as_array())
                        .cloned()
                        .or_else(|| case.get("event").map(|e| vec![e.clone()]))
                        .unwrap_or_default();
                    for partial in events {
                        let ev = crate::rules::fixtures::build_event(&partial, i)
                            .expect("fixture event");
                        let map = event_to_dynamic(&ev);
                        let fast = as_json(&map);
                        let slow = as_json(&rhai::serde::to_dynamic(&ev).expect("serde"));
                        assert_eq!(fast, slow, "{}: case {i}", path.display());
                        // The native `requires` prefilter agrees with the map wherever it decides.
                        for p in REQUIRES_PATHS {
                            let p: Vec<String> = p.split('.').map(str::to_string).collect();
                            assert_eq!(
                                Presence::compile(&p).decide(&ev),
                                present_in_event(&ev, &p),
                                "{}: case {i}: compiled requires {p:?}",
                                path.display()
                            );
                            if let Some(native) = present_in_event(&ev, &p) {
                                assert_eq!(
                                    native,
                                    crate::rules::eval::present(&map, &p),
                                    "{}: case {i}: requires {p:?}",
                                    path.display()
                                );
                            }
                        }
                        checked += 1;
                    }
                }
            }
        }
        assert!(checked > 50, "only {checked} fixture events found");
    }
}
