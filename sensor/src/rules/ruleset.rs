//! Loading a directory of rules into a [`RuleSet`]: every `*.rhai` file is
//! compiled once, its `let rule = #{ ... };` header evaluated and checked, and
//! the rest kept as the condition AST. All or nothing: one bad file refuses the set.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use rhai::{Dynamic, Map, Position, Scope, AST};

use crate::alerts::throttle::ThrottleSpec;
use crate::alerts::Severity;
use crate::rules::engine::{new_engine, EvalCtx};
use crate::rules::state::RuleState;
use crate::rules::RulesConfig;

/// Metadata of one rule, from its `let rule = #{ ... };` header.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleMeta {
    pub id: String,
    pub title: String,
    pub severity: Severity,
    pub description: String,
    /// Event kinds the rule is evaluated on (`"*"` for all).
    pub kinds: Vec<String>,
    /// MITRE ATT&CK technique ids, e.g. `T1190`, `T1595.002`.
    pub mitre: Vec<String>,
    pub references: Vec<String>,
    /// `None`: every match alerts.
    pub throttle: Option<ThrottleSpec>,
    /// Event fields of which at least one must be present and non-empty for the
    /// condition to run at all (dotted paths under `ev`, e.g. `http.mcp`).
    /// Checked natively, so a rule for rare traffic costs nothing on the rest.
    pub requires: Vec<Vec<String>>,
}

/// One compiled rule.
#[derive(Debug, Clone)]
pub struct Rule {
    pub meta: RuleMeta,
    /// Path of the file as given under the rules directory.
    pub file: String,
    pub(crate) id: Arc<str>,
    pub(crate) ast: Arc<AST>,
    /// The header map, visible to the condition as `rule`.
    pub(crate) header: Dynamic,
    /// Whether the rule assigns through a property or index chain (`a.b = `,
    /// `a[k] = `): only such a rule can add a key to `ev` or `config`, so only
    /// its evaluations are checked for it (eval.rs, wrote_to_views).
    pub(crate) writes_through_chain: bool,
    /// What must hold for the condition to return a match (rules/prefilter.rs).
    pub(crate) guard: Option<crate::rules::prefilter::Guard>,
    /// The parts of `ev` the condition (and its `requires`) read.
    pub(crate) reads: crate::rules::event_map::Projection,
    /// `meta.requires`, each path compiled for the typed event.
    pub(crate) requires_check: Vec<crate::rules::event_map::Presence>,
}

impl Rule {
    /// Whether the pre-filter decides some of this rule's conditions natively.
    pub fn has_prefilter(&self) -> bool {
        self.guard.is_some()
    }
}

/// Counters of one rule, shared by every worker evaluating the set.
#[derive(Debug, Default)]
pub struct RuleCounters {
    pub evaluations: AtomicU64,
    pub matches: AtomicU64,
    pub errors: AtomicU64,
    pub budget_exceeded: AtomicU64,
    pub suppressed: AtomicU64,
    pub eval_ns: AtomicU64,
    pub(crate) last_error: Mutex<Option<String>>,
}

/// A point-in-time copy of one rule's counters (for metrics).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleStatsSnapshot {
    pub rule_id: String,
    pub severity: Severity,
    pub evaluations: u64,
    /// Matches before throttling.
    pub matches: u64,
    /// Runtime errors (type errors, missing functions...), budget excluded.
    pub errors: u64,
    /// Stopped for exceeding operations, size, or call-depth limits.
    pub budget_exceeded: u64,
    /// Alerts held back by the throttle.
    pub suppressed: u64,
    pub eval_ns: u64,
    /// The last error as `file:line: message`.
    pub last_error: Option<String>,
}

/// A loaded, immutable rule set; share it as `Arc<RuleSet>`.
#[derive(Debug)]
pub struct RuleSet {
    pub(crate) rules: Vec<Rule>,
    pub(crate) counters: Vec<RuleCounters>,
    by_kind: HashMap<String, Vec<usize>>,
    any_kind: Vec<usize>,
    pub(crate) config: RulesConfig,
    pub(crate) config_map: Dynamic,
    dir: PathBuf,
}

/// One reason a rule file was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleLoadError {
    pub file: PathBuf,
    pub line: Option<usize>,
    pub message: String,
}

impl fmt::Display for RuleLoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(l) => write!(f, "{}:{l}: {}", self.file.display(), self.message),
            None => write!(f, "{}: {}", self.file.display(), self.message),
        }
    }
}

/// Every reason a rule set was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleLoadErrors(pub Vec<RuleLoadError>);

impl fmt::Display for RuleLoadErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "rule set refused ({} error{}):",
            self.0.len(),
            if self.0.len() == 1 { "" } else { "s" }
        )?;
        for e in &self.0 {
            writeln!(f, "  {e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for RuleLoadErrors {}

const META_KEYS: &[&str] = &[
    "id",
    "title",
    "severity",
    "description",
    "kinds",
    "mitre",
    "references",
    "throttle",
    "enabled",
    "requires",
];

impl RuleSet {
    /// Loads every `*.rhai` under `dir` (recursively, in path order).
    pub fn load_dir(dir: &Path, cfg: &RulesConfig) -> Result<RuleSet, RuleLoadErrors> {
        let one = |message: String| {
            RuleLoadErrors(vec![RuleLoadError {
                file: dir.to_path_buf(),
                line: None,
                message,
            }])
        };
        cfg.validate().map_err(one)?;
        let mut files = Vec::new();
        collect_rhai(dir, &mut files).map_err(|e| one(format!("cannot read rules: {e}")))?;
        if files.is_empty() {
            return Err(one("no *.rhai rule files".into()));
        }
        files.sort();
        let mut sources = Vec::with_capacity(files.len());
        let mut errors = Vec::new();
        for f in files {
            match std::fs::read_to_string(&f) {
                Ok(src) => sources.push((f, src)),
                Err(e) => errors.push(RuleLoadError {
                    file: f,
                    line: None,
                    message: format!("cannot read: {e}"),
                }),
            }
        }
        if !errors.is_empty() {
            return Err(RuleLoadErrors(errors));
        }
        Self::from_sources(dir, sources, cfg)
    }

    /// Builds a set from (file name, source) pairs; what `load_dir` does after reading.
    pub fn from_sources(
        dir: &Path,
        sources: Vec<(PathBuf, String)>,
        cfg: &RulesConfig,
    ) -> Result<RuleSet, RuleLoadErrors> {
        let ctx = EvalCtx::new(Arc::new(RuleState::new(&RulesConfig {
            state_max_keys: 16,
            throttle_max_keys: 16,
            ..RulesConfig::default()
        })));
        let engine = new_engine(cfg.max_operations, ctx);
        let mut rules: Vec<Rule> = Vec::new();
        let mut errors = Vec::new();
        let mut seen: HashMap<String, PathBuf> = HashMap::new();
        for (file, src) in sources {
            match compile_rule(&engine, &file, &src, cfg) {
                Ok(Some(rule)) => {
                    if let Some(other) = seen.get(&rule.meta.id) {
                        errors.push(RuleLoadError {
                            file: file.clone(),
                            line: None,
                            message: format!(
                                "rule id {} is already used by {}",
                                rule.meta.id,
                                other.display()
                            ),
                        });
                        continue;
                    }
                    seen.insert(rule.meta.id.clone(), file.clone());
                    rules.push(rule);
                }
                Ok(None) => {} // enabled: false
                Err(e) => errors.push(e),
            }
        }
        if !errors.is_empty() {
            return Err(RuleLoadErrors(errors));
        }
        let mut by_kind: HashMap<String, Vec<usize>> = HashMap::new();
        let mut any_kind = Vec::new();
        for (i, r) in rules.iter().enumerate() {
            for k in &r.meta.kinds {
                if k == "*" {
                    any_kind.push(i);
                } else {
                    by_kind.entry(k.clone()).or_default().push(i);
                }
            }
        }
        for v in by_kind.values_mut() {
            v.extend(&any_kind);
            v.sort_unstable();
            v.dedup();
        }
        let counters = rules.iter().map(|_| RuleCounters::default()).collect();
        Ok(RuleSet {
            rules,
            counters,
            by_kind,
            any_kind,
            config_map: Dynamic::from_map(cfg.to_rhai()),
            config: cfg.clone(),
            dir: dir.to_path_buf(),
        })
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }
    pub fn len(&self) -> usize {
        self.rules.len()
    }
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }
    pub fn dir(&self) -> &Path {
        &self.dir
    }
    pub fn config(&self) -> &RulesConfig {
        &self.config
    }

    /// Indexes of the rules that want events of `kind`.
    pub(crate) fn for_kind(&self, kind: &str) -> &[usize] {
        self.by_kind
            .get(kind)
            .map(Vec::as_slice)
            .unwrap_or(&self.any_kind)
    }

    /// The counters of every rule, in rule order.
    pub fn stats(&self) -> Vec<RuleStatsSnapshot> {
        self.rules
            .iter()
            .zip(&self.counters)
            .map(|(r, c)| RuleStatsSnapshot {
                rule_id: r.meta.id.clone(),
                severity: r.meta.severity,
                evaluations: c.evaluations.load(Ordering::Relaxed),
                matches: c.matches.load(Ordering::Relaxed),
                errors: c.errors.load(Ordering::Relaxed),
                budget_exceeded: c.budget_exceeded.load(Ordering::Relaxed),
                suppressed: c.suppressed.load(Ordering::Relaxed),
                eval_ns: c.eval_ns.load(Ordering::Relaxed),
                last_error: match c.last_error.lock() {
                    Ok(g) => g.clone(),
                    Err(p) => p.into_inner().clone(),
                },
            })
            .collect()
    }
}

fn collect_rhai(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        let hidden = entry.file_name().to_string_lossy().starts_with('.');
        if hidden {
            continue;
        }
        let ty = entry.file_type()?;
        if ty.is_dir() {
            collect_rhai(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "rhai") {
            out.push(path);
        }
    }
    Ok(())
}

fn line_of(p: Position) -> Option<usize> {
    p.line()
}

/// Functions Rhai handles itself: never in the engine's signature list.
const KEYWORD_FUNCTIONS: [&str; 9] = [
    "print",
    "debug",
    "type_of",
    "Fn",
    "call",
    "curry",
    "is_shared",
    "is_def_var",
    "is_def_fn",
];

/// Calls in `ast` to functions that exist nowhere: not registered in the
/// engine or its packages, not defined in the file. Rhai resolves calls only
/// when they run, so without this `open("/etc/shadow")` or `system("id")`
/// would pass `rules check` and fail on the first event that reaches them.
fn unknown_calls(engine: &rhai::Engine, ast: &AST) -> Vec<(String, Option<usize>)> {
    use rhai::{ASTNode, Expr};
    let mut known: std::collections::HashSet<String> = engine
        .collect_fn_metadata(
            None,
            |f| {
                Some(if f.namespace.is_empty() {
                    f.metadata.name.to_string()
                } else {
                    format!("{}::{}", f.namespace, f.metadata.name)
                })
            },
            true,
        )
        .into_iter()
        .collect();
    known.extend(ast.iter_functions().map(|f| f.name.to_string()));
    known.extend(KEYWORD_FUNCTIONS.iter().map(|s| s.to_string()));
    let mut unknown = Vec::new();
    ast.walk(&mut |path: &[ASTNode]| {
        let Some(ASTNode::Expr(e)) = path.last() else {
            return true;
        };
        let (call, pos) = match e {
            Expr::FnCall(f, pos) | Expr::MethodCall(f, pos) => (f, *pos),
            _ => return true,
        };
        if call.op_token.is_some()
            || !call
                .name
                .starts_with(|c: char| c.is_alphabetic() || c == '_')
        {
            return true; // an operator
        }
        let name = if call.namespace.is_empty() {
            call.name.to_string()
        } else {
            format!("{}::{}", call.namespace, call.name)
        };
        if !known.contains(&name) {
            unknown.push((name, pos.line()));
        }
        true
    });
    unknown
}

/// Compiles one file; `Ok(None)` for a rule with `enabled: false`.
fn compile_rule(
    engine: &rhai::Engine,
    file: &Path,
    src: &str,
    cfg: &RulesConfig,
) -> Result<Option<Rule>, RuleLoadError> {
    let err = |line: Option<usize>, message: String| RuleLoadError {
        file: file.to_path_buf(),
        line,
        message,
    };
    // `ev` and `config` exist at run time; declared here so that strict
    // variables catch typos at load (plain variables: no constant folding).
    let mut declared = Scope::new();
    declared.push("ev", ()).push("config", ());
    let ast = engine.compile_with_scope(&declared, src).map_err(|e| {
        err(
            line_of(e.1),
            format!("syntax error: {}", e.0).replace(" (line", " (at line"),
        )
    })?;
    if let Some((name, line)) = unknown_calls(engine, &ast).into_iter().next() {
        return Err(err(
            line,
            format!(
                "unknown function `{name}`: neither the rule engine (see rules/README.md) nor this \
                 file defines it, and rules cannot reach files, processes or the network"
            ),
        ));
    }
    let stmts = ast.statements();
    let Some(first) = stmts.first() else {
        return Err(err(Some(1), "empty rule file".into()));
    };
    let header_line = line_of(first.position()).or(Some(1));
    let header = AST::new([first.clone()], rhai::Module::new());
    let mut scope = Scope::new();
    engine
        .run_ast_with_scope(&mut scope, &header)
        .map_err(|e| {
            err(
                line_of(e.position()).or(header_line),
                format!("rule header: {e}"),
            )
        })?;
    let Some(meta) = scope.get_value::<Map>("rule") else {
        return Err(err(
            header_line,
            "a rule file starts with `let rule = #{ id: \"...\", title: \"...\", ... };`".into(),
        ));
    };
    let hdr = |m: String| err(header_line, m);
    for k in meta.keys() {
        if !META_KEYS.contains(&k.as_str()) {
            return Err(hdr(format!(
                "unknown key `{k}` in rule header (known: {})",
                META_KEYS.join(", ")
            )));
        }
    }
    if let Some(enabled) = meta.get("enabled") {
        match enabled.as_bool() {
            Ok(true) => {}
            Ok(false) => return Ok(None),
            Err(_) => return Err(hdr("`enabled` must be true or false".into())),
        }
    }
    let text = |k: &str, required: bool| -> Result<String, RuleLoadError> {
        match meta.get(k) {
            None if !required => Ok(String::new()),
            None => Err(hdr(format!("rule header lacks `{k}`"))),
            Some(v) => match v.clone().into_string() {
                Ok(s) if !s.trim().is_empty() || !required => Ok(s.trim().to_string()),
                Ok(_) => Err(hdr(format!("`{k}` is empty"))),
                Err(t) => Err(hdr(format!("`{k}` must be a string, not {t}"))),
            },
        }
    };
    let list = |k: &str| -> Result<Vec<String>, RuleLoadError> {
        match meta.get(k) {
            None => Ok(Vec::new()),
            Some(v) => {
                let arr = v
                    .clone()
                    .into_array()
                    .map_err(|t| hdr(format!("`{k}` must be an array of strings, not {t}")))?;
                arr.into_iter()
                    .map(|x| {
                        x.into_string().map_err(|t| {
                            hdr(format!("`{k}` must be an array of strings (found {t})"))
                        })
                    })
                    .collect()
            }
        }
    };
    let id = text("id", true)?;
    if !id
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
    {
        return Err(hdr(format!(
            "id {id:?} may hold only letters, digits, '-', '_' and '.'"
        )));
    }
    let title = text("title", true)?;
    let description = text("description", true)?;
    let sev_text = text("severity", true)?;
    let severity = Severity::parse(&sev_text).ok_or_else(|| {
        hdr(format!(
            "severity {sev_text:?} is not one of info, low, medium, high, critical"
        ))
    })?;
    let kinds = list("kinds")?;
    if kinds.is_empty() {
        return Err(hdr(
            "`kinds` lists the event kinds the rule wants, e.g. [\"http_request\"] (\"*\" for all)"
                .into(),
        ));
    }
    let mitre = list("mitre")?;
    for t in &mitre {
        if !is_attack_id(t) {
            return Err(hdr(format!(
                "mitre id {t:?} is not a technique id like T1190 or T1595.002"
            )));
        }
    }
    let references = list("references")?;
    let mut requires = Vec::new();
    for path in list("requires")? {
        let path = path.strip_prefix("ev.").unwrap_or(&path).to_string();
        let parts: Vec<String> = path.split('.').map(str::to_string).collect();
        if parts.iter().any(|p| p.is_empty()) {
            return Err(hdr(format!(
                "`requires` entry {path:?} is not a dotted event path like \"http.mcp\""
            )));
        }
        requires.push(parts);
    }
    let throttle =
        match meta.get("throttle") {
            None => ThrottleSpec::new(cfg.throttle_alerts, cfg.throttle_per_secs),
            Some(v) if v.as_bool() == Ok(false) => None,
            Some(v) => {
                let m = v.clone().try_cast::<Map>().ok_or_else(|| {
                    hdr("`throttle` is false or #{ alerts: N, per_secs: S }".into())
                })?;
                let num = |k: &str, default: i64| -> Result<i64, RuleLoadError> {
                    match m.get(k) {
                        None => Ok(default),
                        Some(v) => v.as_int().ok().filter(|n| *n >= 0).ok_or_else(|| {
                            hdr(format!("throttle.{k} must be a whole number >= 0"))
                        }),
                    }
                };
                for k in m.keys() {
                    if k != "alerts" && k != "per_secs" {
                        return Err(hdr(format!(
                            "unknown key `throttle.{k}` (known: alerts, per_secs)"
                        )));
                    }
                }
                let alerts = num("alerts", i64::from(cfg.throttle_alerts))?;
                let per = num("per_secs", cfg.throttle_per_secs as i64)?;
                ThrottleSpec::new(
                    u32::try_from(alerts).unwrap_or(u32::MAX),
                    u64::try_from(per).unwrap_or(0),
                )
            }
        };
    let condition = AST::new(stmts[1..].iter().cloned(), ast.shared_lib().clone());
    use crate::rules::event_map::Projection;
    let requires_check: Vec<crate::rules::event_map::Presence> = requires
        .iter()
        .map(|p| crate::rules::event_map::Presence::compile(p))
        .collect();
    let reads = match crate::rules::prefilter::ev_reads(&condition) {
        Some(paths) => Projection::of_paths(paths.iter().map(|p| p.as_slice()))
            .union(Projection::of_paths(requires.iter().map(|p| p.as_slice()))),
        None => Projection::ALL,
    };
    Ok(Some(Rule {
        id: Arc::from(id.as_str()),
        meta: RuleMeta {
            id,
            title,
            severity,
            description,
            kinds,
            mitre,
            references,
            throttle,
            requires,
        },
        file: file.display().to_string(),
        writes_through_chain: writes_through_chain(&condition),
        guard: crate::rules::prefilter::Guard::of(&condition),
        reads,
        requires_check,
        ast: Arc::new(condition),
        header: Dynamic::from_map(meta),
    }))
}

/// Any assignment (or op-assignment) whose target is `x.y` or `x[i]`, in the
/// rule's statements or its functions.
fn writes_through_chain(ast: &AST) -> bool {
    use rhai::{ASTNode, Expr, Stmt};
    let mut found = false;
    ast.walk(&mut |path: &[ASTNode]| {
        if let Some(ASTNode::Stmt(Stmt::Assignment(x))) = path.last() {
            if matches!(x.1.lhs, Expr::Dot(..) | Expr::Index(..)) {
                found = true;
                return false;
            }
        }
        true
    });
    found
}

fn is_attack_id(s: &str) -> bool {
    let Some(rest) = s.strip_prefix('T') else {
        return false;
    };
    let (main, sub) = match rest.split_once('.') {
        Some((m, s)) => (m, Some(s)),
        None => (rest, None),
    };
    main.len() == 4
        && main.bytes().all(|b| b.is_ascii_digit())
        && sub.is_none_or(|s| s.len() == 3 && s.bytes().all(|b| b.is_ascii_digit()))
}
