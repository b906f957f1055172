//! Hostile and broken rules: refused at load with file and line, or contained at
//! evaluation (counted per rule) while the other rules keep firing. Reload via
//! the API: a changed set takes effect, a broken set is refused and the old one
//! keeps firing.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use gatewatch::alerts::SensorIdentity;
use gatewatch::events::Event;
use gatewatch::rules::{fixtures, Evaluator, RuleSet, RuleState, RulesConfig};

const GOOD: &str = r#"
let rule = #{ id: "T-GOOD", title: "admin", severity: "low", description: "d",
              kinds: ["http_request"], mitre: ["T1190"], throttle: false };
if ev.http.path == "/admin" { "admin hit" }
"#;

fn header(id: &str) -> String {
    format!(
        "let rule = #{{ id: \"{id}\", title: \"t\", severity: \"high\", description: \"d\", kinds: [\"http_request\"], throttle: false }};\n"
    )
}

fn write(dir: &Path, name: &str, src: &str) {
    std::fs::write(dir.join(name), src).unwrap();
}

fn admin_event() -> Event {
    fixtures::build_event(&serde_json::json!({ "http": { "path": "/admin" } }), 0).unwrap()
}

fn sensor() -> SensorIdentity {
    SensorIdentity {
        host: "h".into(),
        sensor_id: "s".into(),
    }
}

fn evaluator(set: RuleSet) -> (Arc<RuleSet>, Evaluator) {
    let set = Arc::new(set);
    let state = Arc::new(RuleState::new(&RulesConfig::default()));
    let ev = Evaluator::new(set.clone(), state, sensor());
    (set, ev)
}

/// Loads GOOD plus one hostile rule, evaluates one event, and returns the
/// stats of the hostile rule; asserts that GOOD still fired and that it was quick.
fn contained(body: &str) -> gatewatch::rules::RuleStatsSnapshot {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a_good.rhai", GOOD);
    write(dir.path(), "b_hostile.rhai", &(header("T-BAD") + body));
    let set = RuleSet::load_dir(dir.path(), &RulesConfig::default())
        .unwrap_or_else(|e| panic!("hostile rule should load and be contained at run time: {e}"));
    let (set, mut ev) = evaluator(set);
    let started = Instant::now();
    for _ in 0..3 {
        let alerts = ev.evaluate(&admin_event());
        assert_eq!(alerts.len(), 1, "the good rule still fires");
        assert_eq!(alerts[0].rule_id(), "T-GOOD");
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "contained quickly"
    );
    let stats = set.stats();
    let bad = stats.iter().find(|s| s.rule_id == "T-BAD").unwrap().clone();
    assert_eq!(bad.evaluations, 3);
    assert_eq!(bad.matches, 0);
    let err = bad.last_error.clone().unwrap();
    assert!(
        err.contains("b_hostile.rhai:"),
        "names file and line: {err}"
    );
    bad
}

#[test]
fn infinite_loop_is_stopped_by_the_operations_budget() {
    let s = contained("loop { }\n");
    assert_eq!(s.budget_exceeded, 3, "{s:?}");
    assert!(s.last_error.unwrap().contains("b_hostile.rhai:2"));
}

#[test]
fn huge_string_is_stopped_by_the_size_limit() {
    // Doubling would reach 100 MB in 27 steps.
    let s = contained("let s = \"x\";\nwhile s.len() < 100_000_000 { s += s; }\ns.len() > 0\n");
    assert_eq!(s.budget_exceeded, 3, "{s:?}");
}

#[test]
fn deep_recursion_is_stopped_by_the_call_depth_limit() {
    let s = contained("fn down(n) { down(n + 1) }\ndown(0)\n");
    assert_eq!(s.budget_exceeded, 3, "{s:?}");
}

#[test]
fn runtime_type_error_is_counted_and_skipped() {
    let s = contained("\nlet n = ev.http.header_count - \"x\";\nn > 1\n");
    assert_eq!(s.errors, 3, "{s:?}");
    assert!(s.last_error.unwrap().contains("b_hostile.rhai:3"));
}

#[test]
fn wrong_return_type_is_an_error() {
    let s = contained("[1, 2, 3]\n");
    assert_eq!(s.errors, 3, "{s:?}");
}

fn refused(files: &[(&str, &str)]) -> String {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a_good.rhai", GOOD);
    for (name, src) in files {
        write(dir.path(), name, src);
    }
    match RuleSet::load_dir(dir.path(), &RulesConfig::default()) {
        Ok(_) => panic!("should be refused"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn syntax_error_is_refused_with_file_and_line() {
    let msg = refused(&[(
        "b_broken.rhai",
        &(header("T-SYN") + "\nif ev.http.path == {\n"),
    )]);
    assert!(msg.contains("b_broken.rhai:"), "{msg}");
    assert!(msg.contains("syntax error"), "{msg}");
}

#[test]
fn unknown_variable_is_refused_at_load() {
    let msg = refused(&[(
        "b_typo.rhai",
        &(header("T-TYPO") + "\n\nif evt.kind == \"x\" { true }\n"),
    )]);
    assert!(msg.contains("b_typo.rhai:4"), "{msg}");
}

#[test]
fn eval_and_import_are_disabled() {
    let msg = refused(&[("b_eval.rhai", &(header("T-EVAL") + "eval(\"1 + 1\")\n"))]);
    assert!(msg.contains("b_eval.rhai:2"), "{msg}");
    let msg = refused(&[(
        "b_import.rhai",
        &(header("T-IMP") + "import \"os\" as os;\n"),
    )]);
    assert!(msg.contains("b_import.rhai:2"), "{msg}");
}

#[test]
fn deeply_nested_expression_is_refused_at_load() {
    let deep = format!("{}1{}", "(".repeat(500), ")".repeat(500));
    let msg = refused(&[("b_deep.rhai", &(header("T-DEEP") + deep.as_str()))]);
    assert!(msg.contains("b_deep.rhai:"), "{msg}");
}

#[test]
fn bad_headers_are_refused_with_reasons() {
    let msg = refused(&[
        ("b1.rhai", "true\n"),
        ("b2.rhai", "let rule = #{ id: \"X\", title: \"t\", severity: \"urgent\", description: \"d\", kinds: [\"http_request\"] };\n"),
        ("b3.rhai", "let rule = #{ id: \"Y\", title: \"t\", severity: \"low\", description: \"d\", kinds: [\"http_request\"], mitre: [\"1190\"] };\n"),
        ("b4.rhai", "let rule = #{ id: \"T-GOOD\", title: \"t\", severity: \"low\", description: \"d\", kinds: [\"http_request\"] };\n"),
        ("b5.rhai", "let rule = #{ id: \"Z\", title: \"t\", severity: \"low\", description: \"d\", kinds: [\"http_request\"], serverity: 1 };\n"),
        ("b6.rhai", "let rule = #{ id: \"W\", title: \"t\", severity: \"low\", description: \"d\" };\n"),
        ("b7.rhai", "let rule = #{ id: loop {}, title: \"t\" };\n"),
    ]);
    for needle in [
        "b1.rhai:1",
        "severity \"urgent\"",
        "mitre id \"1190\"",
        "already used by",
        "unknown key `serverity`",
        "`kinds`",
        "b7.rhai:1",
    ] {
        assert!(msg.contains(needle), "missing {needle:?} in:\n{msg}");
    }
}

#[test]
fn reload_takes_effect_and_broken_set_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a_good.rhai", GOOD);
    write(
        dir.path(),
        "b_other.rhai",
        &(header("T-OTHER") + "if ev.http.path == \"/old\" { \"old\" }\n"),
    );
    let cfg = RulesConfig::default();
    let (_, mut ev) = evaluator(RuleSet::load_dir(dir.path(), &cfg).unwrap());
    let event =
        |p: &str| fixtures::build_event(&serde_json::json!({ "http": { "path": p } }), 0).unwrap();
    assert_eq!(ev.evaluate(&event("/old")).len(), 1);
    assert_eq!(ev.evaluate(&event("/new")).len(), 0);

    // One rule changed: the new condition applies after set_ruleset.
    write(
        dir.path(),
        "b_other.rhai",
        &(header("T-OTHER") + "if ev.http.path == \"/new\" { \"new\" }\n"),
    );
    let new_set = Arc::new(RuleSet::load_dir(dir.path(), &cfg).unwrap());
    ev.set_ruleset(new_set);
    assert_eq!(ev.evaluate(&event("/old")).len(), 0);
    let a = ev.evaluate(&event("/new"));
    assert_eq!(a.len(), 1);
    assert_eq!(a[0].summary(), "new");

    // A broken rule: the load is refused with file:line, the running set stays.
    write(
        dir.path(),
        "c_broken.rhai",
        &(header("T-BROKEN") + "if ev.http.path == \"/x\" {\n"),
    );
    let err = RuleSet::load_dir(dir.path(), &cfg).unwrap_err();
    assert_eq!(err.0.len(), 1);
    assert!(err.to_string().contains("c_broken.rhai:"), "{err}");
    assert!(err.0[0].line.is_some());
    assert_eq!(
        ev.evaluate(&event("/admin")).len(),
        1,
        "old set keeps firing"
    );
    assert_eq!(ev.evaluate(&event("/new")).len(), 1);
}

/// One rule's writes to `ev` or `config` never reach another rule, nor a later
/// event: meddling rules (each way of writing in a rule of its own, so that
/// one refused write does not hide the next) run first, on every event, and
/// the last rule still sees the event and the config as they came.
#[test]
fn a_rule_cannot_change_what_other_rules_or_later_events_see() {
    let dir = tempfile::tempdir().unwrap();
    let writes = [
        r#"ev.http.path = "/elsewhere";"#,
        r#"ev.http.credentials.authorization = #{ present: true };"#,
        r#"ev["http"]["path"] = "/elsewhere";"#,
        r#"ev.http.headers.mixin(#{ "x-meddled": "1" });"#,
        r#"ev.http.headers.clear();"#,
        r#"ev.http.remove("path");"#,
        r#"config.thresholds.meddled = 1;"#,
        r#"config["thresholds"]["meddled"] = 1;"#,
        r#"config.thresholds.mixin(#{ meddled: 1 });"#,
        r#"config.thresholds.clear();"#,
        r#"config.remove("thresholds");"#,
        r#"config.meddled = 1;"#,
        r#"let t = config.thresholds; t.meddled = 1; let h = ev.http; h.path = "/x";"#,
    ];
    for (i, w) in writes.iter().enumerate() {
        write(
            dir.path(),
            &format!("a{i:02}_meddler.rhai"),
            &(header(&format!("T-MEDDLE-{i:02}")) + *w + "\n()\n"),
        );
    }
    write(dir.path(), "b_good.rhai", GOOD);
    write(
        dir.path(),
        "c_intact.rhai",
        &(header("T-INTACT")
            + r#"
if config.thresholds.len() > 0 && !("meddled" in config) && !("meddled" in config.thresholds)
   && ev.http.path == "/admin" && ev.http.credentials.len() == 0
   && !("x-meddled" in ev.http.headers) { "intact" }
"#),
    );
    let set = RuleSet::load_dir(dir.path(), &RulesConfig::default()).unwrap();
    let (set, mut ev) = evaluator(set);
    for round in 0..3 {
        let alerts = ev.evaluate(&admin_event());
        let ids: Vec<&str> = alerts.iter().map(|a| a.rule_id()).collect();
        let errors: Vec<String> = set
            .stats()
            .iter()
            .map(|s| format!("{} {:?}", s.rule_id, s.last_error))
            .collect();
        assert!(
            ids.contains(&"T-GOOD"),
            "round {round}: {ids:?} {errors:#?}"
        );
        assert!(
            ids.contains(&"T-INTACT"),
            "round {round}: {ids:?} {errors:#?}"
        );
    }
}

#[test]
fn a_rule_within_its_operations_but_slow_is_stopped_by_the_wall_clock() {
    // 7,936-element array sorted and reversed: few operations, much time.
    let s = contained(
        "let a = []; for i in 0..7936 { a.push(7936 - i); }\nfor j in 0..5000 { a.sort(); a.reverse(); }\n",
    );
    assert_eq!(s.budget_exceeded, 3, "{s:?}");
    assert!(
        s.last_error
            .as_deref()
            .unwrap_or("")
            .contains("wall-clock limit"),
        "{s:?}"
    );
}

/// A call to a function that exists nowhere (file, process or network access
/// the sandbox does not offer) is refused at load, with file and line, not
/// left to fail on the first event that reaches it; functions the rule
/// defines and the engine's own are fine.
#[test]
fn unknown_functions_are_refused_at_check_time() {
    for (call, name) in [
        ("open(\"/etc/shadow\")", "open"),
        ("system(\"id\")", "system"),
        ("ev.http.path.exec()", "exec"),
        ("std::fs::read(\"x\")", "Undefined module: std"),
    ] {
        let body = format!("\nif ev.http.path == \"/x\" {{\n  let x = {call};\n}}\n");
        let src = header("T-UNK") + body.as_str();
        let msg = refused(&[("b_unknown.rhai", &src)]);
        assert!(msg.contains("b_unknown.rhai:4"), "{call}: {msg}");
        assert!(msg.contains(name), "{call}: {msg}");
        assert!(
            name.contains("module") || msg.contains("unknown function"),
            "{call}: {msg}"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let ok = header("T-OK")
        + "fn twice(x) { x * 2 }\nif twice(ev.http.path.len()) > 2 && path_matches(ev.http.path, [\"/a\"]) { \"hit\" }\n";
    write(dir.path(), "ok.rhai", &ok);
    RuleSet::load_dir(dir.path(), &RulesConfig::default()).expect("own and engine functions load");
}
