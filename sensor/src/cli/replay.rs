//! `gatewatch replay`: a pcap through the kernel program and the rules, offline.

use std::sync::Arc;

use anyhow::Result;

use super::pipeline::Pipeline;
use super::ReplayArgs;
use crate::alerts::SensorIdentity;
use crate::capture::{replay, Probe};
use crate::config::Config;
use crate::mcp::Tracker;
use crate::metrics::{Health, Metrics};
use crate::rules::loader::load_configured;
use crate::rules::{Evaluator, RuleState};
use crate::sinks::{OutputConfig, OutputSpec};

pub fn replay_cmd(args: ReplayArgs) -> Result<()> {
    let mut cfg = Config::load(args.config.as_deref())?;
    if let Some(dir) = &args.rules {
        cfg.rules.dir = dir.clone();
    }
    let outputs: Vec<OutputConfig> = if args.outputs.is_empty() {
        vec![OutputConfig::from_spec(OutputSpec::Stdout)]
    } else {
        args.outputs
            .into_iter()
            .map(|spec| OutputConfig {
                kafka: cfg.kafka.clone(),
                ..OutputConfig::from_spec(spec)
            })
            .collect()
    };
    let rules = load_configured(&cfg.rules).map_err(|e| anyhow::anyhow!("loading rules: {e}"))?;
    let mut evaluator = Evaluator::new(
        Arc::new(rules),
        Arc::new(RuleState::new(&cfg.rules)),
        SensorIdentity::local(),
    );
    let metrics = Arc::new(Metrics::new());
    let health = Arc::new(Health::from_config(&cfg.metrics));
    // Replays do not write the audit trail: it records what the live sensor raised.
    let mut pipeline = Pipeline::new(&outputs, metrics, health, None)?;
    let probe = Probe::load_with(&cfg.capture, &cfg.l4)?;
    let mut tracker = Tracker::new(&cfg.mcp);
    let stats = replay::replay(&probe, &args.pcap, |mut ev| {
        tracker.observe(&mut ev);
        let alerts = evaluator.evaluate(&ev);
        pipeline.handle_event(&ev, &alerts);
        Ok(())
    })?;
    pipeline.flush();
    let counters = probe.counters()?;
    let summary = serde_json::json!({
        "replay": stats,
        "alerts": pipeline.alerts,
        "mcp": {
            "sessions_issued": tracker.counters().sessions_issued,
            "sessions_ended": tracker.counters().sessions_ended,
            "evictions": tracker.counters().evictions(),
            "unpaired_responses": tracker.counters().unpaired_responses,
        },
        "kernel": counters.as_pairs().collect::<std::collections::BTreeMap<_, _>>(),
    });
    eprintln!("{summary}");
    Ok(())
}
