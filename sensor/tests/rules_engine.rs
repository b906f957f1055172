//! Engine behaviour through the public API: missing blocks read as (), helpers,
//! throttling with suppressed counts, kind routing, alert accessors.

use std::path::Path;
use std::sync::Arc;

use gatewatch::alerts::{SensorIdentity, Severity};
use gatewatch::rules::{fixtures, Evaluator, RuleSet, RuleState, RulesConfig};
use serde_json::json;

fn set_of(rules: &[(&str, &str)], cfg: &RulesConfig) -> Arc<RuleSet> {
    let dir = tempfile::tempdir().unwrap();
    for (name, src) in rules {
        std::fs::write(dir.path().join(name), src).unwrap();
    }
    Arc::new(RuleSet::load_dir(dir.path(), cfg).unwrap_or_else(|e| panic!("{e}")))
}

fn evaluator(set: &Arc<RuleSet>) -> Evaluator {
    Evaluator::new(
        set.clone(),
        Arc::new(RuleState::new(set.config())),
        SensorIdentity {
            host: "host-a".into(),
            sensor_id: "gw-1".into(),
        },
    )
}

fn rule(id: &str, kinds: &str, extra: &str, body: &str) -> String {
    format!(
        "let rule = #{{ id: \"{id}\", title: \"title {id}\", severity: \"critical\", description: \"d\", kinds: {kinds}, mitre: [\"T1595.002\"]{extra} }};\n{body}"
    )
}

#[test]
fn missing_blocks_and_keys_read_as_unit() {
    let body = r#"
let a = ev.http.credentials.authorization.scheme;
let b = ev.http.headers["x-nope"];
let c = ev.stats.ringbuf_drops;
let d = ev.process.comm;
let e = "cl_and_te" in ev.stats.anomalies;
let f = ev.http.headers["x-nope"].to_lower();
if a == () && b == () && c == () && d == () && !e && f == () { "all unit" }
"#;
    let set = set_of(
        &[(
            "r.rhai",
            &rule("U", "[\"http_request\"]", ", throttle: false", body),
        )],
        &RulesConfig::default(),
    );
    let mut ev = evaluator(&set);
    let event = fixtures::build_event(&json!({}), 0).unwrap();
    let alerts = ev.evaluate(&event);
    assert_eq!(set.stats()[0].last_error, None);
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0].summary(), "all unit");
}

#[test]
fn storm_is_throttled_and_count_rides_on_next_alert() {
    let set = set_of(
        &[(
            "r.rhai",
            &rule(
                "S",
                "[\"http_request\"]",
                ", throttle: #{ alerts: 1, per_secs: 60 }",
                "#{ summary: `hit ${ev.http.path}`, key: \"k\", n: 1 }",
            ),
        )],
        &RulesConfig::default(),
    );
    let mut ev = evaluator(&set);
    let mut sent = Vec::new();
    for i in 0..100 {
        let e = fixtures::build_event(&json!({ "http": { "path": format!("/{i}") } }), i).unwrap();
        sent.extend(ev.evaluate(&e));
    }
    // 100 events over 100 s: one at 0 s, one at 60 s carrying the 59 held back.
    assert_eq!(sent.len(), 2);
    assert_eq!(sent[0].suppressed_count(), 0);
    assert_eq!(sent[1].suppressed_count(), 59);
    assert_eq!(sent[1].throttle_key(), "k");
    assert_eq!(sent[1].fields()["n"], json!(1));
    let s = &set.stats()[0];
    assert_eq!((s.evaluations, s.matches, s.suppressed), (100, 100, 98));
}

#[test]
fn routing_by_kind_and_wildcard() {
    let set = set_of(
        &[
            (
                "a.rhai",
                &rule("REQ", "[\"http_request\"]", ", throttle: false", "true"),
            ),
            (
                "b.rhai",
                &rule("ALL", "[\"*\"]", ", throttle: false", "ev.kind"),
            ),
            (
                "c.rhai",
                &rule(
                    "MCP",
                    "[\"mcp_request\", \"l4_window\"]",
                    ", throttle: false",
                    "true",
                ),
            ),
        ],
        &RulesConfig::default(),
    );
    let mut ev = evaluator(&set);
    let req = fixtures::build_event(&json!({}), 0).unwrap();
    let stats = fixtures::build_event(&json!({ "kind": "sensor_stats" }), 0).unwrap();
    let mut ids: Vec<_> = ev
        .evaluate(&req)
        .iter()
        .map(|a| a.rule_id().to_string())
        .collect();
    ids.sort();
    assert_eq!(ids, ["ALL", "REQ"]);
    let a = ev.evaluate(&stats);
    assert_eq!(a.len(), 1);
    assert_eq!(a[0].summary(), "sensor_stats");
    assert_eq!(set.stats()[2].evaluations, 0);
}

#[test]
fn alert_accessors_and_ocsf_fields() {
    let set = set_of(
        &[(
            "r.rhai",
            &rule(
                "GW-T-1",
                "[\"http_request\"]",
                "",
                "alert(\"boom\", #{ extra: [1, 2] })",
            ),
        )],
        &RulesConfig::default(),
    );
    let mut ev = evaluator(&set);
    let event = fixtures::build_event(&json!({ "src": { "ip": "192.0.2.9" }, "http": { "credentials": { "authorization": { "scheme": "bearer", "length": 10, "hash": "00112233445566ff" } } } }), 0).unwrap();
    let a = ev.evaluate(&event).remove(0);
    assert_eq!(a.rule_id(), "GW-T-1");
    assert_eq!(a.severity(), Severity::Critical);
    assert_eq!(a.key(), "192.0.2.9");
    let v = serde_json::to_value(&a).unwrap();
    assert_eq!(v["class_uid"], 2004);
    assert_eq!(v["type_uid"], 200401);
    assert_eq!(v["severity_id"], 5);
    assert_eq!(v["time"], 1_768_471_200_000i64);
    assert_eq!(v["finding_info"]["analytic"]["uid"], "GW-T-1");
    assert_eq!(v["finding_info"]["attacks"][0]["technique"]["uid"], "T1595");
    assert_eq!(
        v["finding_info"]["attacks"][0]["sub_technique"]["uid"],
        "T1595.002"
    );
    assert_eq!(v["gatewatch"]["sensor"]["sensor_id"], "gw-1");
    assert_eq!(v["gatewatch"]["fields"]["extra"], json!([1, 2]));
    assert_eq!(
        v["evidences"][0]["data"]["http"]["credentials"]["authorization"]["hash"],
        "00112233445566ff"
    );
    let other = ev.evaluate(&event).remove(0);
    assert_ne!(a.id(), other.id());
}

#[test]
fn config_is_visible_to_rules() {
    let cfg: RulesConfig = toml::from_str(
        r#"
        protected_paths = ["/secret"]
        trusted_proxies = ["192.0.2.0/24"]
        [thresholds]
        limit = 7
        "#,
    )
    .unwrap();
    let body = r#"if config.thresholds.limit == 7 && path_matches(ev.http.path, config.protected_paths) && ip_in(ev.src.ip, config.trusted_proxies) { true }"#;
    let set = set_of(
        &[("r.rhai", &rule("C", "[\"http_request\"]", "", body))],
        &cfg,
    );
    let mut ev = evaluator(&set);
    let yes = fixtures::build_event(
        &json!({ "src": { "ip": "192.0.2.1" }, "http": { "path": "/secret/x" } }),
        0,
    )
    .unwrap();
    let no = fixtures::build_event(
        &json!({ "src": { "ip": "198.51.100.1" }, "http": { "path": "/secret/x" } }),
        0,
    )
    .unwrap();
    assert_eq!(ev.evaluate(&yes).len(), 1);
    assert_eq!(ev.evaluate(&no).len(), 0);
}

/// One rule cannot change the config another rule (or the next event) sees.
#[test]
fn config_lists_cannot_be_changed_by_a_rule() {
    let cfg: RulesConfig = toml::from_str(r#"protected_paths = ["/secret"]"#).unwrap();
    // Every way a rule might try to grow or rewrite the list.
    let tamper = r#"
        let l = config.protected_paths; l.push("/x"); l.clear();
        try { config.protected_paths.push("/y"); } catch {}
        try { config.protected_paths.clear(); } catch {}
        try { config.protected_paths[0] = "/z"; } catch {}
        ()
    "#;
    let check = r#"if config.protected_paths.len() == 1 && config.protected_paths[0] == "/secret"
        && path_matches(ev.http.path, config.protected_paths) { true }"#;
    let set = set_of(
        &[
            ("a.rhai", &rule("A", "[\"http_request\"]", "", tamper)),
            ("b.rhai", &rule("B", "[\"http_request\"]", "", check)),
        ],
        &cfg,
    );
    let mut ev = evaluator(&set);
    let e = fixtures::build_event(&json!({ "http": { "path": "/secret" } }), 0).unwrap();
    for _ in 0..3 {
        let alerts = ev.evaluate(&e);
        let stats: Vec<_> = set
            .stats()
            .into_iter()
            .map(|s| (s.rule_id, s.last_error))
            .collect();
        assert_eq!(
            alerts.len(),
            1,
            "B still sees the configured list: {stats:?}"
        );
        assert_eq!(alerts[0].rule_id(), "B");
    }
}

#[test]
fn missing_rules_dir_is_an_error() {
    let e =
        RuleSet::load_dir(Path::new("/nonexistent/rules"), &RulesConfig::default()).unwrap_err();
    assert!(e.to_string().contains("/nonexistent/rules"), "{e}");
}

#[test]
fn workers_share_state() {
    let body = "let n = count_in_window(\"all\", 60); if n == 4 { `n=${n}` }";
    let set = set_of(
        &[(
            "r.rhai",
            &rule("W", "[\"http_request\"]", ", throttle: false", body),
        )],
        &RulesConfig::default(),
    );
    let state = Arc::new(RuleState::new(set.config()));
    let id = SensorIdentity {
        host: "h".into(),
        sensor_id: "s".into(),
    };
    let mut w1 = Evaluator::new(set.clone(), state.clone(), id.clone());
    let mut w2 = Evaluator::new(set.clone(), state, id);
    let e = fixtures::build_event(&json!({}), 0).unwrap();
    let mut n = 0;
    for _ in 0..2 {
        n += w1.evaluate(&e).len();
        n += w2.evaluate(&e).len();
    }
    assert_eq!(n, 1);
}
