//! Per-worker rule evaluation: one Rhai engine per thread, the event converted
//! to a Rhai map once and shared by every rule that wants its kind, errors and
//! budget overruns counted per rule, matches throttled into alerts.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use rhai::{Caches, Dynamic, Engine, EvalAltResult, Map, Scope};

use crate::alerts::throttle::Verdict;
use crate::alerts::{Alert, AlertParts, SensorIdentity};
use crate::events::Event;
use crate::rules::engine::{new_engine, EvalCtx};
use crate::rules::event_map::{event_to_dynamic_projected, Presence, Projection};
use crate::rules::prefilter::Guard;
use crate::rules::ruleset::{Rule, RuleCounters, RuleSet};
use crate::rules::state::RuleState;

/// Evaluates events against a rule set. One per worker thread (not `Sync`).
pub struct Evaluator {
    set: Arc<RuleSet>,
    state: Arc<RuleState>,
    sensor: SensorIdentity,
    ctx: Arc<EvalCtx>,
    engine: Engine,
    scope: Scope<'static>,
    /// This worker's copy of each rule's header (shared inside this worker
    /// only, so that pushing it is cheap and workers never touch one lock).
    headers: Vec<Dynamic>,
    /// Each rule's function-resolution cache, kept across events: a fresh one
    /// per evaluation re-resolved every helper call (a third of a cheap rule).
    caches: Vec<Caches>,
    /// Scratch list of the rules one event runs (kept to avoid an allocation).
    runnable: Vec<(usize, bool)>,
    /// Replaces the set's `config` map (fixtures that test other settings).
    config_override: Option<Dynamic>,
    /// Keys in `config`'s maps as pushed: a rule that adds one is caught.
    config_keys: usize,
    /// Each rule's guard bound to this worker's `config` (rules/prefilter.rs).
    guards: Vec<Option<Guard>>,
    /// Whether guards decide before Rhai runs (off: every rule runs, for the
    /// differential tests).
    prefilter: bool,
    /// Rule evaluations the guards ruled out, on this worker.
    prefiltered: u64,
    /// What the current event's map holds.
    projection: Projection,
}

/// Why one rule produced nothing for one event.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Failure {
    Budget(String),
    Error(String),
}

impl Evaluator {
    pub fn new(set: Arc<RuleSet>, state: Arc<RuleState>, sensor: SensorIdentity) -> Evaluator {
        let ctx = EvalCtx::new(state.clone());
        let engine = new_engine(set.config.max_operations, ctx.clone());
        let mut ev = Evaluator {
            set,
            state,
            sensor,
            ctx,
            engine,
            scope: Scope::new(),
            headers: Vec::new(),
            caches: Vec::new(),
            runnable: Vec::new(),
            config_override: None,
            config_keys: 0,
            guards: Vec::new(),
            prefilter: true,
            prefiltered: 0,
            projection: Projection::ALL,
        };
        ev.reset_scope();
        ev
    }

    fn reset_scope(&mut self) {
        self.scope.clear();
        // A private, unshared copy: it stays in the scope for every event.
        // Deliberately not shared: a shared list would let one rule's
        // `config.x.push(..)` change what every later rule sees.
        let config = self.config_copy();
        self.config_keys = map_keys(&config);
        self.guards = self
            .set
            .rules
            .iter()
            .map(|r| r.guard.as_ref().map(|g| g.bind(&config)))
            .collect();
        self.scope.push_constant_dynamic("config", config);
        self.ctx
            .set_rules(self.set.rules.iter().map(|r| r.id.clone()).collect());
        self.headers = self
            .set
            .rules
            .iter()
            .map(|r| r.header.flatten_clone().into_shared())
            .collect();
        // Indices follow the rule set; cached resolutions follow the engine.
        self.caches = self.set.rules.iter().map(|_| Caches::new()).collect();
    }

    /// A private copy of what rules see as `config`.
    fn config_copy(&self) -> Dynamic {
        match &self.config_override {
            Some(c) => c.flatten_clone(),
            None => self.set.config_map.flatten_clone(),
        }
    }

    /// Switches to a new rule set (reload). Stateful-helper state is kept.
    pub fn set_ruleset(&mut self, set: Arc<RuleSet>) {
        if set.config.max_operations != self.set.config.max_operations {
            self.engine = new_engine(set.config.max_operations, self.ctx.clone());
        }
        // reset_scope below drops every cached resolution with the old rules.
        self.set = set;
        self.reset_scope();
    }

    /// Rules see `config` instead of the set's config map (`None`: the set's again).
    pub fn set_config_override(&mut self, config: Option<Dynamic>) {
        self.config_override = config;
        self.reset_scope();
    }

    pub fn ruleset(&self) -> &Arc<RuleSet> {
        &self.set
    }

    /// Turns the native pre-filter and the partial event map off (`false`)
    /// or on; on by default.
    pub fn set_prefilter(&mut self, on: bool) {
        self.prefilter = on;
    }

    /// Rule evaluations the native pre-filter skipped on this evaluator.
    pub fn prefiltered(&self) -> u64 {
        self.prefiltered
    }

    /// Runs every rule that wants `ev.kind` and returns the alerts that pass the throttle.
    pub fn evaluate(&mut self, ev: &Event) -> Vec<Alert> {
        let set = self.set.clone();
        // Rules whose `requires` the event itself rules out never see it, and an
        // event no rule can want is never converted (most responses, on a
        // plain API gateway): (rule index, whether the map must still decide).
        let mut runnable = std::mem::take(&mut self.runnable);
        runnable.clear();
        for &i in set.for_kind(ev.kind.as_str()) {
            let requires = &set.rules[i].meta.requires;
            let check_map = if requires.is_empty() {
                false
            } else {
                match requires_in_event(ev, &set.rules[i].requires_check) {
                    Some(true) => false,
                    Some(false) => continue,
                    None => true,
                }
            };
            // A rule whose guard the event makes false cannot match: skipped
            // without Rhai, and without converting the event if no rule is left.
            if self.prefilter {
                if let Some(Some(g)) = self.guards.get(i) {
                    if g.rules_out(ev) {
                        self.prefiltered += 1;
                        continue;
                    }
                }
            }
            runnable.push((i, check_map));
        }
        if runnable.is_empty() {
            self.runnable = runnable;
            return Vec::new();
        }
        // Only the parts of the event the rules about to run read; all of it
        // with the fast paths off (the differential tests).
        let projection = if self.prefilter {
            runnable.iter().fold(Projection::default(), |p, &(i, _)| {
                p.union(set.rules[i].reads)
            })
        } else {
            Projection::ALL
        };
        self.projection = projection;
        let value = event_to_dynamic_projected(ev, projection);
        let now = ev.time.unix_ns();
        self.ctx.now_ns.store(now, Ordering::Relaxed);
        let base = self.scope.len();
        // Counted only when a rule that may write runs (see wrote_to_views).
        let ev_keys = if runnable
            .iter()
            .any(|&(i, _)| set.rules[i].writes_through_chain)
        {
            map_keys(&value)
        } else {
            0
        };
        self.scope.push_constant_dynamic("ev", value);
        let with_ev = self.scope.len();
        let mut alerts = Vec::new();
        // One clock read per rule: each rule's time runs to the next reading.
        let mut mark = Instant::now();
        for &(i, check_map) in &runnable {
            let rule = &set.rules[i];
            let counters = &set.counters[i];
            if check_map && !requires_met(&self.scope, &rule.meta.requires) {
                continue;
            }
            self.ctx.current.store(i, Ordering::Relaxed);
            self.scope
                .push_constant_dynamic("rule", self.headers[i].clone());
            let result = run_rule(&self.engine, &mut self.caches[i], &mut self.scope, rule);
            let now_mark = Instant::now();
            let took = now_mark.duration_since(mark);
            mark = now_mark;
            self.scope.rewind(with_ev);
            counters.evaluations.fetch_add(1, Ordering::Relaxed);
            if rule.writes_through_chain && self.wrote_to_views(ev, ev_keys) {
                record_failure(
                    counters,
                    Failure::Error(format!(
                        "{}: wrote to ev or config; rules get read-only views (the write was undone and the rule's result dropped)",
                        rule.file
                    )),
                );
                continue;
            }
            counters
                .eval_ns
                .fetch_add(took.as_nanos() as u64, Ordering::Relaxed);
            let outcome = match result {
                Ok(v) => interpret(rule, v),
                Err(e) => Err(classify(rule, &e)),
            };
            match outcome {
                Ok(None) => {}
                Ok(Some(m)) => {
                    counters.matches.fetch_add(1, Ordering::Relaxed);
                    if let Some(a) = self.make_alert(rule, counters, ev, now, m) {
                        alerts.push(a);
                    }
                    mark = Instant::now();
                }
                Err(f) => record_failure(counters, f),
            }
        }
        self.scope.rewind(base);
        self.runnable = runnable;
        alerts
    }

    /// Whether the rule just run added keys to `ev` or `config` (Rhai refuses
    /// writes to a constant's existing fields, but lets a new key be added to
    /// one of its maps). If so, both are put back as they were, so that no
    /// other rule and no later event sees the write.
    fn wrote_to_views(&mut self, ev: &Event, ev_keys: usize) -> bool {
        let ev_now = self.scope.get("ev").map_or(ev_keys, map_keys);
        let config_now = self.scope.get("config").map_or(self.config_keys, map_keys);
        if ev_now == ev_keys && config_now == self.config_keys {
            return false;
        }
        // Constants cannot be replaced in place: the scope is `config`, then
        // `ev` (reset_scope, evaluate), so both are pushed again in that order.
        let config = self.config_copy();
        debug_assert_eq!(self.scope.len(), 2, "scope is config, ev");
        self.scope.rewind(0);
        self.scope.push_constant_dynamic("config", config);
        self.scope
            .push_constant_dynamic("ev", event_to_dynamic_projected(ev, self.projection));
        true
    }

    fn make_alert(
        &self,
        rule: &Rule,
        counters: &RuleCounters,
        ev: &Event,
        now: i64,
        m: Match,
    ) -> Option<Alert> {
        let key = m.key.unwrap_or_else(|| {
            ev.src
                .as_ref()
                .map(|s| s.ip.to_string())
                .unwrap_or_default()
        });
        let suppressed = match rule.meta.throttle {
            None => 0,
            Some(spec) => match self.state.throttle.check(
                &rule.id,
                &key,
                spec,
                u64::try_from(now).unwrap_or(0),
            ) {
                Verdict::Pass { suppressed } => suppressed,
                Verdict::Suppress => {
                    counters.suppressed.fetch_add(1, Ordering::Relaxed);
                    return None;
                }
            },
        };
        Some(Alert::new(AlertParts {
            rule_id: &rule.meta.id,
            rule_file: &rule.file,
            title: &rule.meta.title,
            description: &rule.meta.description,
            severity: rule.meta.severity,
            mitre: &rule.meta.mitre,
            references: &rule.meta.references,
            summary: m.summary.unwrap_or_else(|| rule.meta.title.clone()),
            throttle_key: key,
            suppressed_count: suppressed,
            fields: m.fields,
            event: ev,
            event_time_ms: now.div_euclid(1_000_000),
            sensor: &self.sensor,
        }))
    }
}

/// Whether at least one of the `requires` paths is present in `ev` (an empty
/// array or map counts as absent, an empty string as present).
/// `eval_ast_with_scope` minus its fresh `Caches`: the same statements, lib
/// and operation budget (a new runtime state per call), but function calls
/// resolved on an earlier event stay resolved.
fn run_rule(
    engine: &Engine,
    caches: &mut Caches,
    scope: &mut Scope,
    rule: &Rule,
) -> Result<Dynamic, Box<EvalAltResult>> {
    let _clock = super::engine::start_eval_clock();
    let mut global = engine.new_global_runtime_state();
    global.lib.push(rule.ast.shared_lib().clone());
    global.source = rule.ast.source().map(Into::into);
    // Exported under rhai's `internals` feature; deprecated there only in
    // favour of the public API we are avoiding for its per-call cache.
    #[allow(deprecated)]
    engine.eval_statements_raw(&mut global, caches, scope, rule.ast.statements())
}

/// Keys in every map of `v`, nested maps and maps inside arrays included, but
/// for keys holding (): a method call on a missing property (`ev.http.x.len()`)
/// leaves such a key behind, and () reads the same as a missing key.
fn map_keys(v: &Dynamic) -> usize {
    if let Ok(m) = v.as_map_ref() {
        m.values()
            .map(|x| if x.is_unit() { 0 } else { 1 + map_keys(x) })
            .sum::<usize>()
    } else if let Ok(a) = v.as_array_ref() {
        a.iter().map(map_keys).sum()
    } else {
        0
    }
}

/// `requires` decided on the event: any path present, none present, or `None`
/// when some path needs the converted map.
fn requires_in_event(ev: &Event, requires: &[Presence]) -> Option<bool> {
    let mut undecided = false;
    for p in requires {
        match p.decide(ev) {
            Some(true) => return Some(true),
            Some(false) => {}
            None => undecided = true,
        }
    }
    if undecided {
        None
    } else {
        Some(false)
    }
}

fn requires_met(scope: &Scope, requires: &[Vec<String>]) -> bool {
    let Some(ev) = scope.get("ev") else {
        return true;
    };
    requires.iter().any(|path| present(ev, path))
}

/// Walks a dotted path by reference (no map is cloned).
pub(crate) fn present(v: &Dynamic, path: &[String]) -> bool {
    let Some((first, rest)) = path.split_first() else {
        return non_empty(v);
    };
    match v.as_map_ref() {
        Ok(m) => m
            .get(first.as_str())
            .is_some_and(|next| present(next, rest)),
        Err(_) => false,
    }
}

fn non_empty(v: &Dynamic) -> bool {
    if v.is_unit() {
        return false;
    }
    if let Ok(a) = v.as_array_ref() {
        return !a.is_empty();
    }
    if let Ok(m) = v.as_map_ref() {
        return !m.is_empty();
    }
    v.as_bool().unwrap_or(true)
}

/// What a rule's value said, when it matched.
struct Match {
    summary: Option<String>,
    key: Option<String>,
    fields: serde_json::Map<String, serde_json::Value>,
}

fn interpret(rule: &Rule, v: Dynamic) -> Result<Option<Match>, Failure> {
    let empty = || Match {
        summary: None,
        key: None,
        fields: serde_json::Map::new(),
    };
    if v.is_unit() {
        return Ok(None);
    }
    if let Ok(b) = v.as_bool() {
        return Ok(b.then(empty));
    }
    if v.is_string() {
        let s = v.into_string().unwrap_or_default();
        return Ok(Some(Match {
            summary: Some(s),
            ..empty()
        }));
    }
    let type_name = v.type_name();
    let Some(map) = v.try_cast::<Map>() else {
        return Err(Failure::Error(format!(
            "{}: the rule returned {type_name}; a rule returns (), true/false, a summary string or a map",
            rule.file
        )));
    };
    let mut m = empty();
    for (k, v) in map {
        match k.as_str() {
            "summary" => m.summary = Some(v.to_string()),
            "key" => {
                m.key = Some(if v.is_unit() {
                    String::new()
                } else {
                    v.to_string()
                })
            }
            _ => {
                let json = rhai::serde::from_dynamic::<serde_json::Value>(&v)
                    .unwrap_or_else(|_| serde_json::Value::String(v.to_string()));
                m.fields.insert(k.to_string(), json);
            }
        }
    }
    Ok(Some(m))
}

fn classify(rule: &Rule, e: &EvalAltResult) -> Failure {
    let at = match e.position().line() {
        Some(l) => format!("{}:{l}", rule.file),
        None => rule.file.clone(),
    };
    let msg = match e.unwrap_inner() {
        // The token says why (engine.rs: the wall-clock limit).
        EvalAltResult::ErrorTerminated(why, _) => format!("{at}: stopped: {why}"),
        _ => format!("{at}: {e}"),
    };
    match e.unwrap_inner() {
        EvalAltResult::ErrorTooManyOperations(..)
        | EvalAltResult::ErrorDataTooLarge(..)
        | EvalAltResult::ErrorStackOverflow(..)
        | EvalAltResult::ErrorTooManyVariables(..)
        | EvalAltResult::ErrorTerminated(..) => Failure::Budget(msg),
        _ => Failure::Error(msg),
    }
}

fn record_failure(c: &RuleCounters, f: Failure) {
    let (msg, first) = match f {
        Failure::Budget(m) => (m, c.budget_exceeded.fetch_add(1, Ordering::Relaxed) == 0),
        Failure::Error(m) => (m, c.errors.fetch_add(1, Ordering::Relaxed) == 0),
    };
    // Log the first failure of each kind per rule; later ones are counted.
    if first {
        tracing::warn!(target: "gatewatch::rules", "rule skipped for this event: {msg}");
    } else {
        tracing::debug!(target: "gatewatch::rules", "rule skipped for this event: {msg}");
    }
    match c.last_error.lock() {
        Ok(mut g) => *g = Some(msg),
        Err(p) => *p.into_inner() = Some(msg),
    }
}
