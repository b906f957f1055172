//! `gatewatch replay`: a pcap through the kernel program, events out.

use anyhow::Result;

use super::pipeline::Pipeline;
use super::ReplayArgs;
use crate::capture::{replay, Probe};
use crate::config::Config;
use crate::sinks::{OutputConfig, OutputSpec};

pub fn replay_cmd(args: ReplayArgs) -> Result<()> {
    let cfg = Config::load(args.config.as_deref())?;
    let outputs: Vec<OutputConfig> = if args.outputs.is_empty() {
        vec![OutputConfig {
            spec: OutputSpec::Stdout,
            events: true,
            alerts: true,
        }]
    } else {
        args.outputs
            .into_iter()
            .map(|spec| OutputConfig {
                spec,
                events: true,
                alerts: true,
            })
            .collect()
    };
    let metrics = std::sync::Arc::new(crate::metrics::Metrics::new());
    let health = std::sync::Arc::new(crate::metrics::Health::from_config(&cfg.metrics));
    let mut pipeline = Pipeline::new(&outputs, metrics, health)?;
    let probe = Probe::load_with(&cfg.capture, &cfg.l4)?;
    let stats = replay::replay(&probe, &args.pcap, |ev| {
        pipeline.handle_event(&ev);
        Ok(())
    })?;
    pipeline.flush();
    let counters = probe.counters()?;
    let summary = serde_json::json!({
        "replay": stats,
        "kernel": counters.as_pairs().collect::<std::collections::BTreeMap<_, _>>(),
    });
    eprintln!("{summary}");
    Ok(())
}
