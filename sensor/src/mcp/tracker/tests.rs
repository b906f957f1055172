use serde_json::{json, Value};

use super::*;
use crate::rules::fixtures::build_event;

const CLIENT: &str = "203.0.113.10";
const OTHER: &str = "198.51.100.7";
const ID: &str = "a1b2c3d4e5f60718";

/// A request from `ip:port` to the MCP server, `patch` laid over the fixture template.
fn req(t: usize, ip: &str, port: u16, patch: Value) -> Event {
    let mut base = json!({
        "kind": "http_request",
        "src": { "ip": ip, "port": port },
        "http": { "method": "POST", "path": "/mcp",
                  "headers": { "host": "mcp.example.com", "content-type": "application/json" } }
    });
    merge(&mut base, &patch);
    build_event(&base, t).expect("valid test event")
}

fn resp(t: usize, ip: &str, port: u16, status: u16, patch: Value) -> Event {
    let mut base = json!({
        "kind": "http_response",
        "dst": { "ip": ip, "port": port },
        "http": { "status": status }
    });
    merge(&mut base, &patch);
    build_event(&base, t).expect("valid test event")
}

fn merge(base: &mut Value, patch: &Value) {
    match (base, patch) {
        (Value::Object(b), Value::Object(p)) => {
            for (k, v) in p {
                match b.get_mut(k) {
                    Some(slot) => merge(slot, v),
                    None => {
                        b.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (b, p) => *b = p.clone(),
    }
}

fn rpc(method: &str) -> Value {
    json!({ "jsonrpc": true, "method": method, "has_id": !method.starts_with("notifications/"),
            "body_scan": "complete" })
}

fn shape(origin: &str) -> Value {
    json!({ "origin": origin, "length": 32, "hash": ID, "distinct_bytes": 16 })
}

fn with_session(method: &str, version: &str) -> Value {
    json!({ "http": { "mcp": rpc(method), "mcp_session": shape("header"),
                      "headers": { "mcp-protocol-version": version } } })
}

fn seen(t: &mut Tracker, mut ev: Event) -> McpContext {
    t.observe(&mut ev);
    ev.mcp_context.expect("an MCP event gets a context")
}

/// initialize → 200 with an id → notifications/initialized; returns the tracker.
fn initialised(cfg: &McpConfig) -> Tracker {
    let mut t = Tracker::new(cfg);
    let c = seen(
        &mut t,
        req(
            0,
            CLIENT,
            51000,
            json!({ "http": { "mcp": rpc("initialize") } }),
        ),
    );
    assert_eq!(c.transport, McpTransport::Session);
    assert!(c.session.is_none());
    let c = seen(
        &mut t,
        resp(
            1,
            CLIENT,
            51000,
            200,
            json!({ "http": { "mcp_session": shape("header") } }),
        ),
    );
    let s = c.session.expect("issued");
    assert_eq!(s.state, SessionState::Issued);
    assert_eq!(s.issuer, Some(CLIENT.parse().unwrap()));
    assert_eq!(c.request.unwrap().rpc_method.as_deref(), Some("initialize"));
    let c = seen(
        &mut t,
        req(
            2,
            CLIENT,
            51000,
            with_session("notifications/initialized", "2025-11-25"),
        ),
    );
    let s = c.session.unwrap();
    assert!(s.initialized);
    assert_eq!(s.version.as_deref(), Some("2025-11-25"));
    assert_eq!(c.client.live_sessions, 1);
    seen(&mut t, resp(3, CLIENT, 51000, 202, json!({})));
    t
}

#[test]
fn session_lifecycle_until_delete_and_reuse() {
    let mut t = initialised(&McpConfig::default());
    let c = seen(
        &mut t,
        req(4, CLIENT, 51002, with_session("tools/list", "2025-11-25")),
    );
    let s = c.session.unwrap();
    assert_eq!(s.state, SessionState::Live);
    assert!(!s.client_changed && !s.version_changed);
    assert_eq!(s.requests, 2);
    assert_eq!(s.methods.get("tools/list"), Some(&1));
    assert_eq!(s.idle_ms, 1000, "one fixture second since the 202");
    seen(&mut t, resp(5, CLIENT, 51002, 200, json!({})));

    let mut delete = req(6, CLIENT, 51002, with_session("x", "2025-11-25"));
    if let Some(h) = delete.http.as_mut() {
        h.method = Some("DELETE".into());
        h.mcp = None;
    }
    seen(&mut t, delete);
    let c = seen(&mut t, resp(7, CLIENT, 51002, 200, json!({})));
    let s = c.session.unwrap();
    assert_eq!(
        (s.state, s.ended_by, s.ended_here),
        (SessionState::Ended, Some(SessionEnd::Delete), true)
    );
    assert_eq!(t.live_sessions(), 0);

    let c = seen(
        &mut t,
        req(8, CLIENT, 51004, with_session("tools/call", "2025-11-25")),
    );
    let s = c.session.unwrap();
    assert_eq!(s.state, SessionState::Ended);
    assert_eq!(s.ended_by, Some(SessionEnd::Delete));
    assert_eq!(c.client.live_sessions, 0);
    assert_eq!(t.counters().sessions_ended, 1);
}

#[test]
fn second_client_address_and_version_change_are_seen() {
    let mut t = initialised(&McpConfig::default());
    let c = seen(
        &mut t,
        req(4, OTHER, 40000, with_session("tools/call", "2025-06-18")),
    );
    let s = c.session.unwrap();
    assert!(s.client_changed);
    assert!(s.version_changed);
    assert_eq!(
        s.version.as_deref(),
        Some("2025-11-25"),
        "the negotiated one stays"
    );
}

#[test]
fn method_before_initialized_notification() {
    let mut t = Tracker::new(&McpConfig::default());
    seen(
        &mut t,
        req(
            0,
            CLIENT,
            51000,
            json!({ "http": { "mcp": rpc("initialize") } }),
        ),
    );
    seen(
        &mut t,
        resp(
            1,
            CLIENT,
            51000,
            200,
            json!({ "http": { "mcp_session": shape("header") } }),
        ),
    );
    let c = seen(
        &mut t,
        req(2, CLIENT, 51000, with_session("tools/call", "2025-11-25")),
    );
    assert!(!c.session.unwrap().initialized);
}

#[test]
fn unknown_id_and_404_ends_the_session() {
    let mut t = Tracker::new(&McpConfig::default());
    let c = seen(
        &mut t,
        req(0, CLIENT, 51000, with_session("tools/list", "2025-11-25")),
    );
    assert_eq!(c.session.unwrap().state, SessionState::Unknown);
    assert!(!c.tracker_warm);

    let mut t = initialised(&McpConfig::default());
    seen(
        &mut t,
        req(4, CLIENT, 51000, with_session("tools/list", "2025-11-25")),
    );
    let c = seen(&mut t, resp(5, CLIENT, 51000, 404, json!({})));
    let s = c.session.unwrap();
    assert_eq!(s.ended_by, Some(SessionEnd::NotFound));
    assert!(c.request.unwrap().had_session);
    let c = seen(
        &mut t,
        req(6, CLIENT, 51000, with_session("tools/list", "2025-11-25")),
    );
    assert_eq!(c.session.unwrap().ended_by, Some(SessionEnd::NotFound));
}

#[test]
fn responses_pair_in_order_per_flow_and_1xx_waits() {
    let mut t = Tracker::new(&McpConfig::default());
    seen(
        &mut t,
        req(
            0,
            CLIENT,
            51000,
            json!({ "http": { "mcp": rpc("tools/list") } }),
        ),
    );
    seen(
        &mut t,
        req(
            1,
            CLIENT,
            51000,
            json!({ "http": { "mcp": rpc("tools/call") } }),
        ),
    );
    // A request on another flow does not disturb this one.
    seen(
        &mut t,
        req(2, CLIENT, 51001, json!({ "http": { "mcp": rpc("ping") } })),
    );
    let mut cont = resp(3, CLIENT, 51000, 100, json!({}));
    t.observe(&mut cont);
    assert!(
        cont.mcp_context.is_none(),
        "100 Continue pairs with nothing"
    );
    let c = seen(&mut t, resp(4, CLIENT, 51000, 200, json!({})));
    assert_eq!(c.request.unwrap().rpc_method.as_deref(), Some("tools/list"));
    let c = seen(&mut t, resp(5, CLIENT, 51000, 200, json!({})));
    assert_eq!(c.request.unwrap().rpc_method.as_deref(), Some("tools/call"));
    // Nothing left to pair: a plain response is not MCP.
    let mut ev = resp(6, CLIENT, 51000, 200, json!({}));
    t.observe(&mut ev);
    assert!(ev.mcp_context.is_none());
}

#[test]
fn legacy_sse_endpoint_issues_the_query_session() {
    let mut t = Tracker::new(&McpConfig::default());
    let mut get = req(0, CLIENT, 52000, json!({ "http": { "path": "/sse" } }));
    if let Some(h) = get.http.as_mut() {
        h.method = Some("GET".into());
    }
    seen(&mut t, get);
    let c = seen(
        &mut t,
        resp(
            1,
            CLIENT,
            52000,
            200,
            json!({ "http": {
                "headers": { "content-type": "text/event-stream" },
                "mcp_session": shape("sse_endpoint"),
                "mcp": { "jsonrpc": false, "body_scan": "not_json", "sse_endpoint": true } } }),
        ),
    );
    assert_eq!(c.transport, McpTransport::Sse);
    assert_eq!(c.session.unwrap().state, SessionState::Issued);
    let c = seen(
        &mut t,
        req(
            2,
            CLIENT,
            52002,
            json!({ "http": { "path": "/messages/?session_id=<masked>",
                              "mcp": rpc("initialize"), "mcp_session": shape("query") } }),
        ),
    );
    assert_eq!(c.transport, McpTransport::Sse);
    assert_eq!(c.session.unwrap().state, SessionState::Live);
    seen(&mut t, resp(3, CLIENT, 52002, 202, json!({})));
    let c = seen(
        &mut t,
        req(
            4,
            CLIENT,
            52002,
            json!({ "http": { "path": "/messages/?session_id=<masked>",
                              "mcp": rpc("notifications/initialized"), "mcp_session": shape("query") } }),
        ),
    );
    assert!(c.session.unwrap().initialized);
}

#[test]
fn stateless_headers_are_checked_against_the_body() {
    let mut t = Tracker::new(&McpConfig::default());
    let stateless = |method: &str, hdr_method: &str, name_hdr: Option<&str>, name: &str| {
        let mut headers = json!({ "mcp-protocol-version": "2026-07-28", "mcp-method": hdr_method });
        if let Some(n) = name_hdr {
            headers["mcp-name"] = json!(n);
        }
        let mut body = rpc(method);
        body["params_name"] = json!(name);
        json!({ "http": { "headers": headers, "mcp": body } })
    };
    let c = seen(
        &mut t,
        req(
            0,
            CLIENT,
            51000,
            stateless("tools/call", "tools/call", Some("echo"), "echo"),
        ),
    );
    assert_eq!(c.transport, McpTransport::Stateless);
    let h = c.header_check.unwrap();
    assert_eq!((h.method_matches, h.name_matches), (Some(true), Some(true)));
    assert!(h.missing.is_empty());
    assert_eq!(c.client.versions, vec!["2026-07-28".to_string()]);

    let c = seen(
        &mut t,
        req(
            1,
            CLIENT,
            51000,
            stateless(
                "tools/call",
                "tools/list",
                Some("=?base64?ZWNobw==?="),
                "echo",
            ),
        ),
    );
    let h = c.header_check.unwrap();
    assert_eq!(
        (h.method_matches, h.name_matches),
        (Some(false), Some(true))
    );
    assert_eq!(c.client.requests, 2);
    assert_eq!(c.client.methods.get("tools/call"), Some(&2));

    let c = seen(
        &mut t,
        req(
            2,
            CLIENT,
            51000,
            stateless("tools/call", "tools/call", Some("other"), "echo"),
        ),
    );
    assert_eq!(c.header_check.unwrap().name_matches, Some(false));

    let c = seen(
        &mut t,
        req(
            3,
            CLIENT,
            51000,
            stateless("tools/call", "tools/call", None, "echo"),
        ),
    );
    assert_eq!(
        c.header_check.unwrap().missing,
        vec!["mcp-name".to_string()]
    );
}

#[test]
fn origin_and_host_allow_lists() {
    let cfg = McpConfig {
        allowed_origins: vec!["https://app.example.com".into()],
        ..McpConfig::default()
    };
    let mut t = Tracker::new(&cfg);
    let c = seen(
        &mut t,
        req(
            0,
            CLIENT,
            51000,
            json!({ "http": { "headers": { "origin": "https://evil.example" } } }),
        ),
    );
    assert!(c.origin_refused && !c.host_refused);
    let c = seen(&mut t, resp(1, CLIENT, 51000, 200, json!({})));
    assert!(
        c.origin_refused,
        "the response carries its request's verdict"
    );
    let c = seen(
        &mut t,
        req(
            2,
            CLIENT,
            51000,
            json!({ "http": { "headers": { "origin": "https://app.example.com" } } }),
        ),
    );
    assert!(!c.origin_refused);

    // A loopback server reached under a foreign name: DNS rebinding.
    let ev = json!({ "dst": { "ip": "127.0.0.1", "port": 8000 },
                     "http": { "headers": { "host": "attacker.example:8000" } } });
    let c = seen(&mut t, req(3, "127.0.0.1", 51000, ev));
    assert!(c.host_refused);
    let ev = json!({ "dst": { "ip": "127.0.0.1", "port": 8000 },
                     "http": { "headers": { "host": "localhost:8000" } } });
    let c = seen(&mut t, req(4, "127.0.0.1", 51002, ev));
    assert!(!c.host_refused);
    assert_eq!(host_without_port("[::1]:8000"), "[::1]");
    assert!(allowed("http://localhost:6274", "http://localhost:*"));
    assert!(!allowed("http://localhost.evil:6274", "http://localhost:*"));
    assert!(!allowed("http://localhost:", "http://localhost:*"));

    // No list: any Origin towards a remote server, or a foreign one towards loopback.
    let mut t = Tracker::new(&McpConfig::default());
    let c = seen(
        &mut t,
        req(
            0,
            CLIENT,
            51000,
            json!({ "http": { "headers": { "origin": "http://localhost:6274" } } }),
        ),
    );
    assert!(c.origin_refused);
    let local = |origin: &str| {
        json!({ "dst": { "ip": "127.0.0.1", "port": 8000 },
                "http": { "headers": { "host": "127.0.0.1:8000", "origin": origin } } })
    };
    let c = seen(
        &mut t,
        req(1, "127.0.0.1", 51000, local("http://localhost:6274")),
    );
    assert!(!c.origin_refused && !c.host_refused);
    let c = seen(
        &mut t,
        req(2, "127.0.0.1", 51002, local("https://evil.example")),
    );
    assert!(c.origin_refused);
}

#[test]
fn memory_is_bounded_and_evictions_counted() {
    let cfg = McpConfig {
        max_sessions: 2,
        max_flows: 4,
        max_pending_per_flow: 2,
        ..McpConfig::default()
    };
    let mut t = Tracker::new(&cfg);
    for i in 0..5u16 {
        let mut s = shape("header");
        s["hash"] = json!(format!("{:016x}", i));
        seen(
            &mut t,
            req(
                2 * i as usize,
                CLIENT,
                50000 + i,
                json!({ "http": { "mcp": rpc("initialize") } }),
            ),
        );
        seen(
            &mut t,
            resp(
                2 * i as usize + 1,
                CLIENT,
                50000 + i,
                200,
                json!({ "http": { "mcp_session": s } }),
            ),
        );
    }
    assert_eq!(t.live_sessions(), 2);
    assert_eq!(t.counters().sessions_evicted, 3);
    assert_eq!(t.counters().flows_evicted, 1);
    for i in 0..3 {
        seen(&mut t, req(20 + i, CLIENT, 60000, json!({})));
    }
    assert_eq!(t.counters().pending_dropped, 1);
}

#[test]
fn idle_sessions_expire() {
    let cfg = McpConfig {
        session_idle_secs: 5,
        ..McpConfig::default()
    };
    let mut t = initialised(&cfg);
    let c = seen(
        &mut t,
        req(30, CLIENT, 51000, with_session("tools/list", "2025-11-25")),
    );
    let s = c.session.unwrap();
    assert_eq!(s.ended_by, Some(SessionEnd::Expired));
    assert!(
        !c.tracker_warm,
        "30 s of traffic is inside the 60 s warm-up"
    );
}

#[test]
fn non_mcp_traffic_gets_no_context() {
    let mut t = Tracker::new(&McpConfig::default());
    let mut ev = req(
        0,
        CLIENT,
        51000,
        json!({ "http": { "path": "/index.html", "method": "GET" } }),
    );
    t.observe(&mut ev);
    assert!(ev.mcp_context.is_none());
    let disabled = McpConfig {
        enabled: false,
        ..McpConfig::default()
    };
    let mut t = Tracker::new(&disabled);
    let mut ev = req(
        0,
        CLIENT,
        51000,
        json!({ "http": { "mcp": rpc("initialize") } }),
    );
    t.observe(&mut ev);
    assert!(ev.mcp_context.is_none());
}

#[test]
fn contexts_validate_against_the_event_schema() {
    let text = include_str!("../../../../schemas/event.schema.json");
    let schema: Value = serde_json::from_str(text).unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let mut t = initialised(&McpConfig::default());
    let events = [
        req(4, OTHER, 40000, with_session("tools/call", "2025-06-18")),
        resp(5, OTHER, 40000, 404, json!({})),
        req(6, CLIENT, 51000, with_session("tools/list", "2025-11-25")),
    ];
    for mut ev in events {
        t.observe(&mut ev);
        assert!(ev.mcp_context.is_some());
        let v = serde_json::to_value(&ev).unwrap();
        let errors: Vec<String> = validator
            .iter_errors(&v)
            .map(|e| format!("{e} at {}", e.instance_path))
            .collect();
        assert!(errors.is_empty(), "{errors:#?}\n{v:#}");
    }
}

#[test]
fn contexts_say_sampled_while_the_budget_samples_and_for_the_warmup_after() {
    let cfg = McpConfig {
        warmup_secs: 30,
        ..McpConfig::default()
    };
    let mut t = Tracker::new(&cfg);
    let ask = |t: &mut Tracker, at: usize| {
        seen(
            t,
            req(at, CLIENT, 51000, with_session("tools/list", "2025-11-25")),
        )
    };
    assert!(!ask(&mut t, 0).sampled, "no budget, no sampling");
    t.set_sampling(true);
    assert!(ask(&mut t, 10).sampled);
    t.set_sampling(false);
    // Sessions issued or initialised during the spell may have gone unseen
    // until warmup_secs after its last event.
    assert!(ask(&mut t, 39).sampled);
    assert!(!ask(&mut t, 41).sampled);
}
