//! Rule fixtures: examples that must and must not fire, kept next to each rule
//! as `NAME.tests.json` beside `NAME.rhai`, run by `gatewatch rules test`.
//!
//! A fixture file is a JSON array of cases:
//!
//! ```json
//! [
//!   { "name": "admin without auth", "expect": "fire",
//!     "event": { "http": { "path": "/admin/users" } } },
//!   { "name": "many sources", "expect": "fire",
//!     "events": [ { "src": { "ip": "198.51.100.1" } }, { "src": { "ip": "198.51.100.2" } } ] }
//! ]
//! ```
//!
//! Each event is a partial event laid over a template for its `kind` (default
//! `http_request`; `null` removes a key); an event without `time` gets the
//! template's time plus one second per position. `expect: "fire"` means the
//! case raises at least one alert from this rule (after the throttle);
//! `"quiet"` means it raises none. Optional checks: `alerts: N` (exact count
//! over the case), `first_alert_at: N` (1-based position of the event that
//! raises the first one), `summary_contains` (text in the last alert's
//! summary), `config` (laid over the `config` map rules see, for this case).
//! Every case runs on fresh state.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::{json, Value};

use crate::alerts::{Alert, SensorIdentity};
use crate::events::Event;
use crate::rules::{Evaluator, RuleSet, RuleState};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Expect {
    Fire,
    Quiet,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    pub name: String,
    pub expect: Expect,
    #[serde(default)]
    pub event: Option<Value>,
    #[serde(default)]
    pub events: Vec<Value>,
    #[serde(default)]
    pub alerts: Option<usize>,
    #[serde(default)]
    pub first_alert_at: Option<usize>,
    #[serde(default)]
    pub summary_contains: Option<String>,
    /// Laid over the `config` map rules see, for this case only
    /// (e.g. `{ "mcp": { "protected": true } }`).
    #[serde(default)]
    pub config: Option<Value>,
}

/// The outcome of one case.
#[derive(Debug, Clone)]
pub struct CaseResult {
    pub rule_id: String,
    pub case: String,
    pub expect: Expect,
    pub passed: bool,
    /// Why it failed (empty when passed).
    pub detail: String,
}

/// Everything `rules test` found.
#[derive(Debug, Default)]
pub struct Report {
    pub results: Vec<CaseResult>,
    /// Rules without a fixture file.
    pub untested: Vec<String>,
    /// Fixture files that could not be read or parsed: (file, message).
    pub broken: Vec<(PathBuf, String)>,
    /// Every alert any case produced (any rule), for schema checks.
    pub alerts: Vec<Alert>,
}

impl Report {
    pub fn passed(&self) -> usize {
        self.results.iter().filter(|r| r.passed).count()
    }
    pub fn failed(&self) -> usize {
        self.results.len() - self.passed() + self.broken.len()
    }
    pub fn ok(&self) -> bool {
        self.failed() == 0
    }
    /// Fire and quiet case counts for one rule.
    pub fn counts(&self, rule_id: &str) -> (usize, usize) {
        let of = |e| {
            self.results
                .iter()
                .filter(|r| r.rule_id == rule_id && r.expect == e)
                .count()
        };
        (of(Expect::Fire), of(Expect::Quiet))
    }
}

/// The fixture file of a rule file.
pub fn fixture_path(rule_file: &Path) -> PathBuf {
    rule_file.with_extension("tests.json")
}

/// The event template for `kind`.
pub fn template(kind: &str) -> Value {
    match kind {
        "sensor_stats" => json!({
            "kind": "sensor_stats", "time": "2026-01-15T10:00:00Z", "source": "sensor",
            "ifindex": 0, "direction": "unknown",
            "stats": { "interval_ms": 60000, "packets_seen": 1000, "http_messages": 100,
                       "ringbuf_drops": 0, "ringbuf_drops_total": 0, "truncated": 0,
                       "parse_errors": 0, "flow_continuations": 0, "flow_state_lost": 0,
                       "flow_table_full": 0, "flows_expired": 0, "pipeline_left": 0,
                       "overlap_trimmed": 0, "tcp_fragments": 0,
                       "decode_errors": 0, "shed_packets": 0, "inspected_percent": 100.0 }
        }),
        "l4_window" => json!({
            "kind": "l4_window", "time": "2026-01-15T10:00:00Z", "source": "net",
            "ifindex": 0, "direction": "ingress",
            "l4": { "scope": "service", "ip": "10.0.0.5", "port": 8080, "window_ms": 1000,
                    "syn": 20, "synack": 20, "rst": 0, "fin": 18, "syn_rate": 20.0,
                    "synack_ratio": 1.0, "distinct_sources": 3, "estimate_saturated": false }
        }),
        "http_response" => json!({
            "kind": "http_response", "time": "2026-01-15T10:00:00Z", "source": "net",
            "iface": "eth0", "ifindex": 2, "direction": "egress",
            "src": { "ip": "10.0.0.5", "port": 8080 }, "dst": { "ip": "203.0.113.10", "port": 51000 },
            "http": { "version": "HTTP/1.1", "status": 200,
                      "headers": { "content-type": "application/json" },
                      "header_count": 3, "header_bytes": 96, "credentials": {}, "anomalies": [],
                      "segments": 1 }
        }),
        other => json!({
            "kind": other, "time": "2026-01-15T10:00:00Z", "source": "net",
            "iface": "eth0", "ifindex": 2, "direction": "ingress",
            "src": { "ip": "203.0.113.10", "port": 51000 }, "dst": { "ip": "10.0.0.5", "port": 8080 },
            "http": { "method": "GET", "path": "/", "version": "HTTP/1.1",
                      "headers": { "host": "api.example.com", "user-agent": "curl/8.5.0" },
                      "header_count": 2, "header_bytes": 78, "credentials": {}, "anomalies": [],
                      "segments": 1 }
        }),
    }
}

fn merge(base: &mut Value, patch: &Value) {
    match (base, patch) {
        (Value::Object(b), Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    b.remove(k);
                } else if let Some(slot) = b.get_mut(k) {
                    merge(slot, v);
                } else {
                    b.insert(k.clone(), v.clone());
                }
            }
        }
        (b, p) => *b = p.clone(),
    }
}

/// Builds the event of position `i` in a case from its partial form.
pub fn build_event(partial: &Value, i: usize) -> Result<Event, String> {
    let kind = partial
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or("http_request");
    let mut ev = template(kind);
    if partial.get("time").is_none() {
        let t =
            time::OffsetDateTime::UNIX_EPOCH + time::Duration::seconds(1_768_471_200 + i as i64);
        let text = t
            .format(&time::format_description::well_known::Rfc3339)
            .map_err(|e| e.to_string())?;
        ev["time"] = Value::String(text);
    }
    merge(&mut ev, partial);
    let mut ev: Event = serde_json::from_value(ev).map_err(|e| format!("event {}: {e}", i + 1))?;
    // As decoding does for live events: the target as a server resolves it,
    // unless the fixture says otherwise.
    if let Some(h) = ev.http.as_mut() {
        if h.path_normalized.is_none() {
            h.path_normalized = h.path.as_deref().and_then(|p| {
                crate::capture::target::normalize(p.as_bytes())
                    .map(|n| String::from_utf8_lossy(&n).into_owned())
            });
        }
    }
    Ok(ev)
}

/// The set's `config` map with `patch` laid over it.
fn config_with(set: &RuleSet, patch: &Value) -> Result<rhai::Dynamic, String> {
    let mut base: Value = rhai::serde::from_dynamic(&set.config_map).map_err(|e| e.to_string())?;
    merge(&mut base, patch);
    rhai::serde::to_dynamic(&base).map_err(|e| e.to_string())
}

/// Runs the fixtures of every rule in `set` (files found next to each rule).
pub fn run(set: &Arc<RuleSet>) -> Report {
    run_with(set, true)
}

/// [`run`], with the native pre-filter on or off (the differential test).
pub fn run_with(set: &Arc<RuleSet>, prefilter: bool) -> Report {
    let mut report = Report::default();
    let sensor = SensorIdentity {
        host: "fixture-host".into(),
        sensor_id: "fixture-sensor".into(),
    };
    for (idx, rule) in set.rules().iter().enumerate() {
        let path = fixture_path(Path::new(&rule.file));
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                report.untested.push(rule.meta.id.clone());
                continue;
            }
            Err(e) => {
                report.broken.push((path, e.to_string()));
                continue;
            }
        };
        let cases: Vec<Case> = match serde_json::from_str(&text) {
            Ok(c) => c,
            Err(e) => {
                report.broken.push((path, e.to_string()));
                continue;
            }
        };
        for case in cases {
            let r = run_case(set, idx, &case, &sensor, prefilter, &mut report.alerts);
            report.results.push(r);
        }
    }
    report
}

fn run_case(
    set: &Arc<RuleSet>,
    idx: usize,
    case: &Case,
    sensor: &SensorIdentity,
    prefilter: bool,
    all_alerts: &mut Vec<Alert>,
) -> CaseResult {
    let rule = &set.rules()[idx];
    let id = rule.meta.id.as_str();
    let mut result = CaseResult {
        rule_id: id.to_string(),
        case: case.name.clone(),
        expect: case.expect,
        passed: false,
        detail: String::new(),
    };
    let partials: Vec<&Value> = case.event.iter().chain(case.events.iter()).collect();
    if partials.is_empty() {
        result.detail = "case has no `event` or `events`".into();
        return result;
    }
    let state = Arc::new(RuleState::new(set.config()));
    let mut ev = Evaluator::new(set.clone(), state, sensor.clone());
    ev.set_prefilter(prefilter);
    if let Some(patch) = &case.config {
        match config_with(set, patch) {
            Ok(c) => ev.set_config_override(Some(c)),
            Err(e) => {
                result.detail = format!("bad fixture config: {e}");
                return result;
            }
        }
    }
    let counters = &set.counters[idx];
    let failures_before =
        counters.errors.load(Ordering::Relaxed) + counters.budget_exceeded.load(Ordering::Relaxed);
    let mut total = 0usize;
    let mut first_at = None;
    let mut last_summary = String::new();
    for (i, p) in partials.iter().enumerate() {
        let event = match build_event(p, i) {
            Ok(e) => e,
            Err(e) => {
                result.detail = format!("bad fixture: {e}");
                return result;
            }
        };
        let alerts = ev.evaluate(&event);
        let mine: Vec<&Alert> = alerts.iter().filter(|a| a.rule_id() == id).collect();
        total += mine.len();
        if let Some(a) = mine.last() {
            first_at.get_or_insert(i + 1);
            last_summary = a.summary().to_string();
        }
        all_alerts.extend(alerts);
    }
    let failures_after =
        counters.errors.load(Ordering::Relaxed) + counters.budget_exceeded.load(Ordering::Relaxed);
    let mut problems = Vec::new();
    if failures_after > failures_before {
        let last = set.stats()[idx].last_error.clone().unwrap_or_default();
        problems.push(format!("rule failed: {last}"));
    }
    match case.expect {
        Expect::Fire if total == 0 => problems.push("expected an alert, got none".into()),
        Expect::Quiet if total > 0 => problems.push(format!("expected no alert, got {total}")),
        _ => {}
    }
    if let Some(n) = case.alerts {
        if n != total {
            problems.push(format!("expected {n} alerts over the case, got {total}"));
        }
    }
    if let Some(n) = case.first_alert_at {
        if first_at != Some(n) {
            problems.push(format!(
                "expected the first alert on event {n}, got it on {}",
                first_at.map_or("none".to_string(), |i| i.to_string())
            ));
        }
    }
    if let Some(s) = &case.summary_contains {
        if !last_summary.contains(s.as_str()) {
            problems.push(format!("summary {last_summary:?} lacks {s:?}"));
        }
    }
    result.passed = problems.is_empty();
    result.detail = problems.join("; ");
    result
}

/// Every fixture event of the shipped pack (`rules/`), for tests that hold a
/// fast path to the same answers as the slow one.
#[cfg(test)]
pub(crate) fn pack_events() -> Vec<Event> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../rules");
    let mut out = Vec::new();
    let mut dirs = vec![root];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        paths.sort();
        for path in paths {
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            if !path.to_string_lossy().ends_with(".tests.json") {
                continue;
            }
            let Ok(text) = std::fs::read_to_string(&path) else {
                continue;
            };
            let Ok(cases) = serde_json::from_str::<Vec<Case>>(&text) else {
                continue;
            };
            for case in cases {
                for (i, p) in case.event.iter().chain(case.events.iter()).enumerate() {
                    if let Ok(ev) = build_event(p, i) {
                        out.push(ev);
                    }
                }
            }
        }
    }
    out
}
