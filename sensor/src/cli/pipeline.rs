//! What happens to an event after capture: serialise once, hand to every
//! output that wants events. (Rules and alerts plug in here.)

use std::sync::Arc;

use anyhow::Result;

use crate::events::Event;
use crate::metrics::{Health, Metrics};
use crate::sinks::{Output, OutputConfig, RecordKind};

pub struct Pipeline {
    outputs: Vec<Output>,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    pub events: u64,
    pub output_errors: u64,
}

impl Pipeline {
    pub fn new(
        outputs: &[OutputConfig],
        metrics: Arc<Metrics>,
        health: Arc<Health>,
    ) -> Result<Pipeline> {
        let outputs = outputs
            .iter()
            .map(Output::open)
            .collect::<Result<Vec<_>>>()?;
        Ok(Pipeline {
            outputs,
            metrics,
            health,
            events: 0,
            output_errors: 0,
        })
    }

    fn write(&mut self, kind: RecordKind, line: &str) {
        for out in self.outputs.iter_mut().filter(|o| o.wants(kind)) {
            match out.write_line(line) {
                Ok(()) => {
                    self.metrics.sink_result(&out.name, true);
                    self.health.sink_ok(&out.name);
                }
                Err(e) => {
                    self.output_errors += 1;
                    self.metrics.sink_result(&out.name, false);
                    self.health.sink_failed(&out.name);
                    tracing::error!("{e:#}");
                }
            }
        }
    }

    pub fn handle_event(&mut self, ev: &Event) {
        self.events += 1;
        self.metrics.event(ev.kind.as_str());
        match serde_json::to_string(ev) {
            Ok(line) => self.write(RecordKind::Event, &line),
            Err(e) => tracing::error!("serialising event: {e}"),
        }
    }

    pub fn flush(&mut self) {
        for out in &mut self.outputs {
            if let Err(e) = out.flush() {
                tracing::error!("{e:#}");
            }
        }
    }
}
