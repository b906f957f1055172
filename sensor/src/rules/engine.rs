//! The sandboxed Rhai engine every rule runs in: limits, no `eval`, no module
//! imports, `print`/`debug` to tracing, `()` tolerant property access, and the
//! helpers rules call (stateful ones backed by the shared [`RuleState`]).

use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use rhai::{Array, Dynamic, Engine, ImmutableString, Map, INT};

use crate::rules::net::ip_in_list;
use crate::rules::state::RuleState;

/// Per-worker context the helpers read: the current event time and rule.
pub(crate) struct EvalCtx {
    pub now_ns: AtomicI64,
    /// Index of the running rule in `ids`.
    pub current: AtomicUsize,
    ids: RwLock<Vec<Arc<str>>>,
    pub state: Arc<RuleState>,
}

impl EvalCtx {
    pub fn new(state: Arc<RuleState>) -> Arc<EvalCtx> {
        Arc::new(EvalCtx {
            now_ns: AtomicI64::new(0),
            current: AtomicUsize::new(0),
            ids: RwLock::new(Vec::new()),
            state,
        })
    }
    /// The running rule's id (namespaces the helpers' keys per rule).
    fn rule(&self) -> Arc<str> {
        let i = self.current.load(Ordering::Relaxed);
        let ids = match self.ids.read() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        ids.get(i).cloned().unwrap_or_else(|| Arc::from(""))
    }
    /// The ids of the rule set being evaluated, in rule order.
    pub fn set_rules(&self, ids: Vec<Arc<str>>) {
        match self.ids.write() {
            Ok(mut g) => *g = ids,
            Err(p) => *p.into_inner() = ids,
        }
    }
}

/// Limits for one rule evaluation on one event.
pub(crate) const MAX_CALL_LEVELS: usize = 16;
pub(crate) const MAX_EXPR_DEPTH: usize = 64;
pub(crate) const MAX_FN_EXPR_DEPTH: usize = 32;
pub(crate) const MAX_STRING_SIZE: usize = 64 * 1024;
pub(crate) const MAX_ARRAY_SIZE: usize = 10_000;
pub(crate) const MAX_MAP_SIZE: usize = 10_000;

/// Wall-clock time one rule may spend on one event. The operations budget
/// bounds steps, not time: one `sort` of a 7,936-element array is a single
/// operation, and 5,000 of them took 3 s. Past this the evaluation is stopped,
/// counted and skipped like an exhausted operations budget.
pub(crate) const MAX_EVAL_TIME: std::time::Duration = std::time::Duration::from_millis(50);
/// Operations between two clock reads (a read costs tens of ns; an
/// operation costs less).
const CLOCK_EVERY_OPS: u64 = 32;

thread_local! {
    /// When the evaluation running on this thread started (each worker runs
    /// its own engine, one evaluation at a time).
    static EVAL_STARTED: std::cell::Cell<Option<std::time::Instant>> =
        const { std::cell::Cell::new(None) };
}

/// Start the wall-clock limit for one evaluation on this thread; it ends with
/// the guard (outside an evaluation, e.g. a rule header at load, no limit runs).
pub(crate) fn start_eval_clock() -> EvalClock {
    EVAL_STARTED.set(Some(std::time::Instant::now()));
    EvalClock
}

pub(crate) struct EvalClock;

impl Drop for EvalClock {
    fn drop(&mut self) {
        EVAL_STARTED.set(None);
    }
}

/// A sandboxed engine with the helpers registered.
pub(crate) fn new_engine(max_operations: u64, ctx: Arc<EvalCtx>) -> Engine {
    let mut e = Engine::new();
    e.set_max_operations(max_operations)
        .set_max_call_levels(MAX_CALL_LEVELS)
        .set_max_expr_depths(MAX_EXPR_DEPTH, MAX_FN_EXPR_DEPTH)
        .set_max_string_size(MAX_STRING_SIZE)
        .set_max_array_size(MAX_ARRAY_SIZE)
        .set_max_map_size(MAX_MAP_SIZE)
        .set_max_variables(256)
        .set_max_functions(64)
        .set_max_modules(0)
        .set_strict_variables(true)
        .set_fail_on_invalid_map_property(false)
        // Interning every `let` string costs more than it saves: events are short-lived.
        .set_max_strings_interned(0);
    e.on_progress(|ops| {
        if ops % CLOCK_EVERY_OPS != 0 {
            return None;
        }
        let started = EVAL_STARTED.get()?;
        (started.elapsed() > MAX_EVAL_TIME).then(|| {
            Dynamic::from(format!(
                "wall-clock limit of {} ms per evaluation exceeded",
                MAX_EVAL_TIME.as_millis()
            ))
        })
    });
    e.disable_symbol("eval");
    e.disable_symbol("import");
    e.set_module_resolver(rhai::module_resolvers::DummyModuleResolver::new());
    e.on_print(|s| tracing::debug!(target: "gatewatch::rules", "print: {s}"));
    e.on_debug(|s, src, pos| {
        tracing::debug!(target: "gatewatch::rules", "debug {}:{pos}: {s}", src.unwrap_or(""))
    });

    // Missing blocks read as (): `ev.http.credentials.authorization.scheme` is ()
    // when there is no Authorization, `"x" in ()` is false.
    e.register_indexer_get(|_: &mut (), _: ImmutableString| Dynamic::UNIT);
    e.register_indexer_get(|_: &mut (), _: INT| Dynamic::UNIT);
    e.register_fn("contains", |_: &mut (), _: Dynamic| false);
    e.register_fn("len", |_: &mut ()| 0 as INT);
    e.register_fn("to_lower", |_: &mut ()| Dynamic::UNIT);
    e.register_fn("to_upper", |_: &mut ()| Dynamic::UNIT);

    // Lists arrive as `Dynamic` and are read in place: an `Array` parameter
    // costs one more conversion per call.
    e.register_fn("ip_in", |ip: Dynamic, list: Dynamic| -> bool {
        let Some(ip) = as_str(&ip) else { return false };
        let Some(list) = list.read_lock::<Array>() else {
            return false;
        };
        let items: Vec<ImmutableString> = list.iter().filter_map(as_str).collect();
        ip_in_list(&ip, items.iter().map(|s| s.as_str()))
    });
    e.register_fn("path_matches", |path: Dynamic, list: Dynamic| -> bool {
        let Some(path) = path.read_lock::<ImmutableString>() else {
            return false;
        };
        let Some(list) = list.read_lock::<Array>() else {
            return false;
        };
        list.iter().any(|p| {
            p.read_lock::<ImmutableString>()
                .is_some_and(|p| path_matches(&path, &p))
        })
    });
    e.register_fn("contains_any", |s: Dynamic, list: Dynamic| -> bool {
        let Some(s) = s.read_lock::<ImmutableString>() else {
            return false;
        };
        let Some(list) = list.read_lock::<Array>() else {
            return false;
        };
        contains_any(&s, &list)
    });
    e.register_fn("alert", |summary: ImmutableString| -> Map {
        let mut m = Map::new();
        m.insert("summary".into(), summary.into());
        m
    });
    e.register_fn(
        "alert",
        |summary: ImmutableString, mut fields: Map| -> Map {
            fields.insert("summary".into(), summary.into());
            fields
        },
    );

    let c = ctx.clone();
    e.register_fn(
        "count_in_window",
        move |key: Dynamic, window_secs: INT| -> INT {
            let now = c.now_ns.load(Ordering::Relaxed);
            c.state
                .count_in_window(&c.rule(), &key_text(&key), secs_to_ns(window_secs), now)
        },
    );
    let c = ctx.clone();
    e.register_fn(
        "distinct_in_window",
        move |key: Dynamic, value: Dynamic, window_secs: INT| -> INT {
            let now = c.now_ns.load(Ordering::Relaxed);
            c.state.distinct_in_window(
                &c.rule(),
                &key_text(&key),
                &key_text(&value),
                secs_to_ns(window_secs),
                now,
            )
        },
    );
    let c = ctx;
    e.register_fn("first_seen", move |key: Dynamic| -> bool {
        c.state.first_seen(&c.rule(), &key_text(&key))
    });
    e
}

fn as_str(d: &Dynamic) -> Option<ImmutableString> {
    d.clone().into_immutable_string().ok()
}

fn key_text(d: &Dynamic) -> String {
    if d.is_unit() {
        return String::new();
    }
    // Keys are nearly always strings: skip the formatter for them.
    match d.read_lock::<ImmutableString>() {
        Some(s) => s.as_str().to_string(),
        None => d.to_string(),
    }
}

fn secs_to_ns(secs: INT) -> i64 {
    secs.clamp(1, 366 * 86_400) * 1_000_000_000
}

/// `/admin` matches `/admin`, `/admin/x`, `/admin?q`; `/adm*` is a plain prefix.
pub(crate) fn path_matches(path: &str, pattern: &str) -> bool {
    if let Some(prefix) = pattern.strip_suffix('*') {
        return path.starts_with(prefix);
    }
    match path.strip_prefix(pattern) {
        Some(rest) => {
            rest.is_empty()
                || pattern.ends_with('/')
                || rest.starts_with('/')
                || rest.starts_with('?')
                || rest.starts_with('#')
        }
        None => false,
    }
}

/// Lists of needles seen on this thread, each with its automaton. A list is
/// the config's or a rule's literal: its strings stay the same objects from
/// event to event, so it is recognised by identity (the entry holds them, so
/// an address cannot be reused while cached). A list built afresh per event
/// misses every time and is searched needle by needle instead.
const NEEDLE_LISTS_CACHED: usize = 16;

thread_local! {
    static NEEDLE_LISTS: std::cell::RefCell<Vec<(Vec<ImmutableString>, aho_corasick::AhoCorasick)>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// True if `hay` contains any string of `list`, ignoring ASCII case.
pub(crate) fn contains_any(hay: &str, list: &Array) -> bool {
    let strings = || {
        list.iter()
            .filter_map(|n| n.read_lock::<ImmutableString>().map(|n| n.clone()))
    };
    NEEDLE_LISTS.with(|cache| {
        let mut cache = cache.borrow_mut();
        // Compared in place: no list is collected on a cache hit.
        let same = |cached: &[ImmutableString]| {
            let mut n = 0;
            let all = strings().all(|s| {
                n += 1;
                cached.get(n - 1).is_some_and(|c| c.ptr_eq(&s))
            });
            all && n == cached.len()
        };
        if let Some((_, ac)) = cache.iter().find(|(cached, _)| same(cached)) {
            return ac.is_match(hay);
        }
        let needles: Vec<ImmutableString> = strings().collect();
        let built = aho_corasick::AhoCorasick::builder()
            .ascii_case_insensitive(true)
            .build(needles.iter().map(|n| n.as_bytes()));
        match built {
            Ok(ac) => {
                let hit = ac.is_match(hay);
                if cache.len() >= NEEDLE_LISTS_CACHED {
                    cache.remove(0);
                }
                cache.push((needles, ac));
                hit
            }
            Err(_) => {
                let lower = hay.to_ascii_lowercase();
                needles
                    .iter()
                    .any(|n| contains_ignore_ascii_case(&lower, n))
            }
        }
    })
}

/// `hay_lower` is already ASCII lower-case; the needle may be of any case.
pub(crate) fn contains_ignore_ascii_case(hay_lower: &str, needle: &str) -> bool {
    if needle.bytes().any(|b| b.is_ascii_uppercase()) {
        hay_lower.contains(needle.to_ascii_lowercase().as_str())
    } else {
        hay_lower.contains(needle)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_patterns() {
        assert!(path_matches("/admin", "/admin"));
        assert!(path_matches("/admin/users", "/admin"));
        assert!(path_matches("/admin?x=1", "/admin"));
        assert!(!path_matches("/administrator", "/admin"));
        assert!(path_matches("/administrator", "/admin*"));
        assert!(!path_matches("/", "/admin"));
    }

    #[test]
    fn contains_any_cached_and_uncached_agree() {
        let list: Array = ["SQLMap", "nikto", ""]
            .iter()
            .map(|s| Dynamic::from(*s))
            .collect();
        let some: Array = ["sqlmap", "nikto"]
            .iter()
            .map(|s| Dynamic::from(*s))
            .collect();
        for _ in 0..3 {
            assert!(contains_any("Mozilla sqlmap/1.7", &some));
            assert!(contains_any("NIKTO", &some));
            assert!(!contains_any("curl/8.5", &some));
            // The empty needle matches anything, as `contains("")` does.
            assert!(contains_any("curl/8.5", &list));
            assert!(!contains_any("curl/8.5", &Array::new()));
        }
        // More lists than the cache holds, each a fresh allocation: still right.
        for i in 0..(NEEDLE_LISTS_CACHED * 2) {
            let l: Array = vec![Dynamic::from(format!("tool{i}"))];
            assert!(contains_any(&format!("x TOOL{i} y"), &l));
            assert!(!contains_any("x y", &l));
        }
    }

    #[test]
    fn case_insensitive_contains() {
        assert!(contains_ignore_ascii_case("mozilla sqlmap/1.7", "SQLMap"));
        assert!(contains_ignore_ascii_case("mozilla sqlmap/1.7", "sqlmap"));
        assert!(!contains_ignore_ascii_case("curl/8", "sqlmap"));
    }
}
