//! The MCP session tracker and the default rule pack together, on event
//! sequences shaped like what the MCP Python SDK puts on the wire (recorded with
//! tshark: header order, connections, which responses echo Mcp-Session-Id). Clean
//! sessions in each wire form raise no GW-MCP alert; anomalies raise theirs.

use std::sync::Arc;

use serde_json::{json, Value};

use gatewatch::alerts::SensorIdentity;
use gatewatch::events::Event;
use gatewatch::mcp::{McpConfig, Tracker};
use gatewatch::rules::fixtures::build_event;
use gatewatch::rules::{Evaluator, RuleSet, RuleState, RulesConfig};

const SID: &str = "5e551011deadbeef";
const CLI: &str = "10.231.0.1";
const SRV: &str = "10.231.0.2";

struct Wire {
    tracker: Tracker,
    eval: Evaluator,
    t: usize,
    alerts: Vec<String>,
}

impl Wire {
    fn new(mcp: McpConfig) -> Wire {
        let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../rules");
        let cfg = RulesConfig {
            mcp: mcp.clone(),
            ..RulesConfig::default()
        };
        let set = Arc::new(RuleSet::load_dir(&dir, &cfg).expect("the pack loads"));
        Wire {
            tracker: Tracker::new(&mcp),
            eval: Evaluator::new(set, Arc::new(RuleState::new(&cfg)), SensorIdentity::local()),
            t: 0,
            alerts: Vec::new(),
        }
    }

    fn send(&mut self, partial: Value) -> Event {
        let mut ev = build_event(&partial, self.t).expect("valid event");
        self.t += 1;
        self.tracker.observe(&mut ev);
        for a in self.eval.evaluate(&ev) {
            if a.rule_id().starts_with("GW-MCP") {
                self.alerts
                    .push(format!("{}: {}", a.rule_id(), a.summary()));
            }
        }
        ev
    }

    fn mcp_alerts(&self) -> Vec<&str> {
        self.alerts
            .iter()
            .map(|a| a.split(':').next().unwrap_or(""))
            .collect()
    }
}

fn shape(origin: &str, hash: &str, len: u32) -> Value {
    json!({ "origin": origin, "length": len, "hash": hash, "distinct_bytes": 16 })
}

/// A request from CLI:port to SRV:srv_port.
fn request(port: u16, srv_port: u16, method: &str, path: &str, extra: Value) -> Value {
    let mut ev = json!({
        "kind": "http_request",
        "src": { "ip": CLI, "port": port }, "dst": { "ip": SRV, "port": srv_port },
        "http": { "method": method, "path": path,
                  "headers": { "host": format!("{SRV}:{srv_port}"), "user-agent": "python-httpx2/2.16.2",
                               "content-type": "application/json" } }
    });
    merge(&mut ev, &extra);
    ev
}

fn response(port: u16, srv_port: u16, status: u16, extra: Value) -> Value {
    let mut ev = json!({
        "kind": "http_response",
        "src": { "ip": SRV, "port": srv_port }, "dst": { "ip": CLI, "port": port },
        "http": { "status": status, "headers": { "content-type": "application/json" } }
    });
    merge(&mut ev, &extra);
    ev
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

fn body(method: &str) -> Value {
    json!({ "jsonrpc": true, "method": method, "has_id": !method.starts_with("notifications/"),
            "body_scan": "complete" })
}

fn with_session(method: Option<&str>, version: &str) -> Value {
    let mut v = json!({ "http": { "mcp_session": shape("header", SID, 32),
                                  "headers": { "mcp-protocol-version": version } } });
    if let Some(m) = method {
        v["http"]["mcp"] = body(m);
    }
    v
}

fn echoed() -> Value {
    json!({ "http": { "mcp_session": shape("header", SID, 32) } })
}

/// The SDK's session-based run (mode="legacy"), as recorded: initialize,
/// notifications/initialized, the GET stream on a second connection, tools/list,
/// tools/call, DELETE, and the GET stream's late response header.
fn sdk_session_run(w: &mut Wire) {
    w.send(request(
        54572,
        8801,
        "POST",
        "/mcp",
        json!({ "http": { "mcp": body("initialize") } }),
    ));
    w.send(response(54572, 8801, 200, echoed()));
    w.send(request(
        54572,
        8801,
        "POST",
        "/mcp",
        with_session(Some("notifications/initialized"), "2025-11-25"),
    ));
    w.send(request(
        54578,
        8801,
        "GET",
        "/mcp",
        with_session(None, "2025-11-25"),
    ));
    w.send(response(54572, 8801, 202, echoed()));
    w.send(request(
        54592,
        8801,
        "POST",
        "/mcp",
        with_session(Some("tools/list"), "2025-11-25"),
    ));
    w.send(response(54592, 8801, 200, echoed()));
    w.send(request(
        54592,
        8801,
        "POST",
        "/mcp",
        with_session(Some("tools/call"), "2025-11-25"),
    ));
    w.send(response(54592, 8801, 200, echoed()));
    w.send(request(
        54592,
        8801,
        "DELETE",
        "/mcp",
        with_session(None, "2025-11-25"),
    ));
    let end = w.send(response(54592, 8801, 200, echoed()));
    let s = end
        .mcp_context
        .and_then(|c| c.session)
        .expect("session context");
    assert!(s.ended_here);
    w.send(response(
        54578,
        8801,
        200,
        json!({ "http": { "headers": { "content-type": "text/event-stream" },
                          "mcp_session": shape("header", SID, 32) } }),
    ));
}

fn clean_config() -> McpConfig {
    McpConfig {
        warmup_secs: 0,
        ..McpConfig::default()
    }
}

#[test]
fn clean_sdk_session_based_run_raises_nothing() {
    let mut w = Wire::new(clean_config());
    sdk_session_run(&mut w);
    assert!(w.alerts.is_empty(), "{:#?}", w.alerts);
    assert_eq!(w.tracker.counters().sessions_issued, 1);
    assert_eq!(w.tracker.live_sessions(), 0);
}

#[test]
fn clean_sdk_stateless_run_raises_nothing() {
    let mut w = Wire::new(clean_config());
    for (method, name) in [
        ("server/discover", None),
        ("tools/list", None),
        ("tools/call", Some("echo")),
    ] {
        let mut headers = json!({ "mcp-protocol-version": "2026-07-28", "mcp-method": method });
        let mut b = body(method);
        if let Some(n) = name {
            headers["mcp-name"] = json!(n);
            b["params_name"] = json!(n);
        }
        let ev = w.send(request(
            54608,
            8801,
            "POST",
            "/mcp",
            json!({ "http": { "headers": headers, "mcp": b } }),
        ));
        let check = ev
            .mcp_context
            .and_then(|c| c.header_check)
            .expect("checked");
        assert_eq!(check.method_matches, Some(true));
        w.send(response(54608, 8801, 200, json!({})));
    }
    assert!(w.alerts.is_empty(), "{:#?}", w.alerts);
}

#[test]
fn clean_sdk_legacy_sse_run_raises_nothing() {
    let mut w = Wire::new(clean_config());
    w.send(request(
        54016,
        8803,
        "GET",
        "/sse",
        json!({ "http": { "headers": { "accept": "text/event-stream" } } }),
    ));
    w.send(response(
        54016,
        8803,
        200,
        json!({ "http": { "headers": { "content-type": "text/event-stream" },
                          "mcp_session": shape("sse_endpoint", SID, 32),
                          "mcp": { "jsonrpc": false, "body_scan": "not_json", "sse_endpoint": true } } }),
    ));
    for m in [
        "initialize",
        "notifications/initialized",
        "tools/list",
        "tools/call",
    ] {
        w.send(request(
            54018,
            8803,
            "POST",
            "/messages/?session_id=<masked>",
            json!({ "http": { "mcp": body(m), "mcp_session": shape("query", SID, 32) } }),
        ));
        w.send(response(54018, 8803, 202, json!({})));
    }
    assert!(w.alerts.is_empty(), "{:#?}", w.alerts);
}

#[test]
fn session_anomalies_raise_their_rules() {
    let mut w = Wire::new(clean_config());
    sdk_session_run(&mut w);
    // Reuse after DELETE (the server answers 404), from a second address too.
    let mut reuse = request(
        40000,
        8801,
        "POST",
        "/mcp",
        with_session(Some("tools/call"), "2025-11-25"),
    );
    reuse["src"]["ip"] = json!("10.231.0.3");
    w.send(reuse);
    let mut nf = response(40000, 8801, 404, json!({}));
    nf["dst"]["ip"] = json!("10.231.0.3");
    w.send(nf);
    assert!(w.mcp_alerts().contains(&"GW-MCP-003"), "{:#?}", w.alerts);

    // A fresh session: tools/call before notifications/initialized, then without the id.
    let fresh = "00112233445566ff";
    w.send(request(
        50000,
        8801,
        "POST",
        "/mcp",
        json!({ "http": { "mcp": body("initialize") } }),
    ));
    w.send(response(
        50000,
        8801,
        200,
        json!({ "http": { "mcp_session": shape("header", fresh, 32) } }),
    ));
    let mut early = with_session(Some("tools/call"), "2025-11-25");
    early["http"]["mcp_session"]["hash"] = json!(fresh);
    w.send(request(50000, 8801, "POST", "/mcp", early));
    w.send(response(50000, 8801, 200, json!({})));
    w.send(request(
        50002,
        8801,
        "POST",
        "/mcp",
        json!({ "http": { "mcp": body("tools/list") } }),
    ));
    let got = w.mcp_alerts();
    assert!(got.contains(&"GW-MCP-005"), "{:#?}", w.alerts);
    assert!(got.contains(&"GW-MCP-001"), "{:#?}", w.alerts);
}

#[test]
fn guessing_ids_raises_404_burst_and_unknown_session() {
    let mut w = Wire::new(clean_config());
    for i in 0..6u16 {
        let mut r = with_session(Some("tools/list"), "2025-11-25");
        r["http"]["mcp_session"]["hash"] = json!(format!("{:016x}", 0xabc0 + i));
        w.send(request(41000 + i, 8801, "POST", "/mcp", r));
        w.send(response(41000 + i, 8801, 404, json!({})));
    }
    let got = w.mcp_alerts();
    assert!(got.contains(&"GW-MCP-004"), "{:#?}", w.alerts);
    assert!(got.contains(&"GW-MCP-003"), "{:#?}", w.alerts);
}
