//! The default rule pack: every rule has fixtures that pass, with at least two
//! firing and two quiet cases, and every alert they produce validates against
//! schemas/alert.schema.json (its evidence against schemas/event.schema.json).

use std::path::PathBuf;
use std::sync::Arc;

use gatewatch::rules::{fixtures, RuleSet, RulesConfig};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn schema(name: &str) -> jsonschema::Validator {
    let text = std::fs::read_to_string(repo().join("schemas").join(name)).unwrap();
    let value: serde_json::Value = serde_json::from_str(&text).unwrap();
    jsonschema::validator_for(&value).unwrap()
}

#[test]
fn cli_test_passes_on_default_pack() {
    let dir = repo().join("rules");
    assert!(gatewatch::rules::cli::check(&dir, &RulesConfig::default()).unwrap());
    assert!(gatewatch::rules::cli::test(&dir, &RulesConfig::default()).unwrap());
}

#[test]
fn every_rule_has_two_firing_and_two_quiet_fixtures() {
    let set = Arc::new(RuleSet::load_dir(&repo().join("rules"), &RulesConfig::default()).unwrap());
    assert!(set.len() >= 10, "default pack has {} rules", set.len());
    let report = fixtures::run(&set);
    assert!(
        report.untested.is_empty(),
        "untested: {:?}",
        report.untested
    );
    assert!(report.broken.is_empty(), "broken: {:?}", report.broken);
    for r in set.rules() {
        let (fire, quiet) = report.counts(&r.meta.id);
        assert!(
            fire >= 2 && quiet >= 2,
            "{}: {fire} fire, {quiet} quiet",
            r.meta.id
        );
        assert!(!r.meta.mitre.is_empty(), "{} has no MITRE id", r.meta.id);
    }
    let failed: Vec<_> = report.results.iter().filter(|r| !r.passed).collect();
    assert!(failed.is_empty(), "{failed:#?}");
    for s in set.stats() {
        assert_eq!(s.errors + s.budget_exceeded, 0, "{s:?}");
    }
}

#[test]
fn fixture_alerts_validate_against_the_schema() {
    let alert_schema = schema("alert.schema.json");
    let event_schema = schema("event.schema.json");
    let set = Arc::new(RuleSet::load_dir(&repo().join("rules"), &RulesConfig::default()).unwrap());
    let report = fixtures::run(&set);
    assert!(
        report.alerts.len() >= 20,
        "only {} alerts",
        report.alerts.len()
    );
    let mut rules_seen = std::collections::BTreeSet::new();
    for a in &report.alerts {
        let v = serde_json::to_value(a).unwrap();
        let errors: Vec<String> = alert_schema
            .iter_errors(&v)
            .map(|e| format!("{e} at {}", e.instance_path))
            .collect();
        assert!(errors.is_empty(), "{}: {errors:#?}\n{v:#}", a.rule_id());
        let ev = &v["evidences"][0]["data"];
        let errors: Vec<String> = event_schema
            .iter_errors(ev)
            .map(|e| format!("{e} at {}", e.instance_path))
            .collect();
        assert!(errors.is_empty(), "{} evidence: {errors:#?}", a.rule_id());
        assert_eq!(a.id().len(), 32);
        assert!(!a.key().is_empty());
        rules_seen.insert(a.rule_id().to_string());
    }
    assert_eq!(rules_seen.len(), set.len(), "every rule produced alerts");
}
