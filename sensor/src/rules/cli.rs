//! `gatewatch rules check [DIR]` and `gatewatch rules test [DIR]`.

use std::fmt::Write;
use std::path::Path;
use std::sync::Arc;

use crate::rules::fixtures::{self, Expect};
use crate::rules::{RuleSet, RulesConfig};

/// Compiles every rule in `dir`. Ok(true) when the set loads; errors are printed
/// with file and line.
pub fn check(dir: &Path, cfg: &RulesConfig) -> anyhow::Result<bool> {
    let mut out = String::new();
    let ok = check_to(dir, cfg, &mut out)?;
    print!("{out}");
    Ok(ok)
}

/// `check`, writing its table into `out`.
pub fn check_to(dir: &Path, cfg: &RulesConfig, out: &mut String) -> anyhow::Result<bool> {
    match RuleSet::load_dir(dir, cfg) {
        Ok(set) => {
            writeln!(
                out,
                "{:<16} {:<9} {:<28} {:<10} FILE",
                "RULE", "SEVERITY", "KINDS", "PREFILTER"
            )?;
            let mut native = 0;
            for r in set.rules() {
                // Whether some of the rule's conditions are decided in Rust
                // before Rhai runs (rules/README.md, "Cheap rules").
                let pre = if r.has_prefilter() {
                    native += 1;
                    "native"
                } else {
                    "-"
                };
                writeln!(
                    out,
                    "{:<16} {:<9} {:<28} {:<10} {}",
                    r.meta.id,
                    r.meta.severity.as_str(),
                    r.meta.kinds.join(","),
                    pre,
                    r.file
                )?;
            }
            writeln!(
                out,
                "ok: {} rules in {} ({native} with a native pre-filter)",
                set.len(),
                dir.display()
            )?;
            Ok(true)
        }
        Err(e) => {
            write!(out, "{e}")?;
            Ok(false)
        }
    }
}

/// Loads the rules in `dir` and runs each rule's fixtures; prints a pass/fail
/// table. Ok(true) when the set loads and every case passes.
pub fn test(dir: &Path, cfg: &RulesConfig) -> anyhow::Result<bool> {
    let mut out = String::new();
    let ok = test_to(dir, cfg, &mut out)?;
    print!("{out}");
    Ok(ok)
}

/// `test`, writing its table into `out`.
pub fn test_to(dir: &Path, cfg: &RulesConfig, out: &mut String) -> anyhow::Result<bool> {
    let set = match RuleSet::load_dir(dir, cfg) {
        Ok(s) => Arc::new(s),
        Err(e) => {
            write!(out, "{e}")?;
            return Ok(false);
        }
    };
    let report = fixtures::run(&set);
    writeln!(out, "{:<16} {:<6} {:<5} CASE", "RULE", "EXPECT", "")?;
    for r in &report.results {
        let expect = match r.expect {
            Expect::Fire => "fire",
            Expect::Quiet => "quiet",
        };
        let verdict = if r.passed { "ok" } else { "FAIL" };
        writeln!(
            out,
            "{:<16} {:<6} {:<5} {}",
            r.rule_id, expect, verdict, r.case
        )?;
        if !r.passed {
            writeln!(out, "{:<29}  -> {}", "", r.detail)?;
        }
    }
    for (file, msg) in &report.broken {
        writeln!(out, "FAIL fixture file {}: {msg}", file.display())?;
    }
    for id in &report.untested {
        writeln!(out, "warning: {id} has no fixtures")?;
    }
    writeln!(
        out,
        "{} passed, {} failed",
        report.passed(),
        report.failed()
    )?;
    Ok(report.ok())
}
