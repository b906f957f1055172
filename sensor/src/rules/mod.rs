//! The rules engine: SOC-written Rhai rules (one `.rhai` file per rule) evaluated
//! against every event in a sandbox, with stateful helpers owned by Rust.
//!
//! ```text
//! RuleSet::load_dir(dir, cfg)   all-or-nothing compile of rules/*.rhai
//! RuleState::new(cfg)           shared (Arc) helper + throttle state
//! Evaluator::new(set, state, id)  one per worker thread; evaluate(&Event) -> Vec<Alert>
//! ```
//!
//! The rule format is described in `rules/README.md`.

pub mod cli;
mod config;
mod engine;
mod eval;
mod event_map;
pub mod fixtures;
pub mod loader;
pub mod net;
mod prefilter;
mod ruleset;
mod state;

pub use config::{RulesConfig, Threshold};
pub use eval::Evaluator;
pub use ruleset::{
    Rule, RuleCounters, RuleLoadError, RuleLoadErrors, RuleMeta, RuleSet, RuleStatsSnapshot,
};
pub use state::RuleState;
