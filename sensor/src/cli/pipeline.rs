//! The writer end of the path: event and alert lines to every output that
//! wants them, alerts into the audit trail, counts into metrics.

use std::sync::Arc;

use anyhow::Result;

use crate::alerts::Alert;
use crate::audit::{AuditKind, AuditWriter};
use crate::events::{Event, EventKind};
use crate::metrics::{Health, Metrics};
use crate::sinks::{Output, OutputConfig, RecordKind};

pub struct Pipeline {
    outputs: Vec<Output>,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    audit: Option<AuditWriter>,
    pub events: u64,
    pub alerts: u64,
    pub output_errors: u64,
}

impl Pipeline {
    pub fn new(
        outputs: &[OutputConfig],
        metrics: Arc<Metrics>,
        health: Arc<Health>,
        audit: Option<AuditWriter>,
    ) -> Result<Pipeline> {
        let outputs = outputs
            .iter()
            .map(|o| Output::open(o, &metrics))
            .collect::<Result<Vec<_>>>()?;
        Ok(Pipeline {
            outputs,
            metrics,
            health,
            audit,
            events: 0,
            alerts: 0,
            output_errors: 0,
        })
    }

    fn write(&mut self, kind: RecordKind, line: &str, alert: Option<&Alert>) {
        for out in self.outputs.iter_mut().filter(|o| o.wants(kind)) {
            let r = match alert {
                Some(a) => out.write_alert(a, line),
                None => out.write_line(line),
            };
            match r {
                Ok(()) => {
                    self.metrics.sink_result(&out.name, true);
                    // Kafka's health follows acknowledgements (see tick), not spooling.
                    if out.delivering().is_none() {
                        self.health.sink_ok(&out.name);
                    }
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

    /// An event already serialised by a worker, with the alerts it raised.
    pub fn handle(&mut self, kind: EventKind, line: Option<&str>, alerts: &[Alert]) {
        self.events += 1;
        self.metrics.event(kind.as_str());
        if let Some(line) = line {
            self.write(RecordKind::Event, line, None);
        }
        for alert in alerts {
            self.handle_alert(alert);
        }
    }

    pub fn handle_event(&mut self, ev: &Event, alerts: &[Alert]) {
        let line = serde_json::to_string(ev).ok();
        self.handle(ev.kind, line.as_deref(), alerts);
    }

    fn handle_alert(&mut self, alert: &Alert) {
        self.alerts += 1;
        self.metrics
            .alert(alert.rule_id(), alert.severity().as_str());
        self.write(RecordKind::Alert, &alert.to_json(), Some(alert));
        if let Some(audit) = self.audit.as_mut() {
            let value = serde_json::to_value(alert).unwrap_or(serde_json::Value::Null);
            match audit.record(AuditKind::Alert, &value) {
                Ok(_) => self.metrics.audit_records.inc(),
                Err(e) => {
                    self.metrics.audit_errors.inc();
                    tracing::error!("audit trail: {e}");
                }
            }
        }
    }

    pub fn ruleset_change(&mut self, value: &serde_json::Value) {
        if let Some(audit) = self.audit.as_mut() {
            if let Err(e) = audit.record(AuditKind::RulesetChange, value) {
                self.metrics.audit_errors.inc();
                tracing::error!("audit trail: {e}");
            }
        }
    }

    /// Periodic upkeep: fsync per policy, and log the chain head as an anchor when due.
    pub fn tick(&mut self, fsync_on_tick: bool) {
        let dropped: u64 = self.outputs.iter_mut().map(|o| o.tick()).sum();
        for out in &self.outputs {
            match out.delivering() {
                Some(true) => self.health.sink_ok(&out.name),
                Some(false) => self.health.sink_failed(&out.name),
                None => {}
            }
        }
        if dropped > 0 {
            // Never silent: the loss is an alert of its own on every output.
            self.handle_alert(&crate::alerts::delivery_drop_alert(dropped));
        }
        if let Some(audit) = self.audit.as_mut() {
            if fsync_on_tick {
                if let Err(e) = audit.sync() {
                    tracing::error!("audit trail: {e}");
                }
            }
            match audit.maybe_anchor() {
                Ok(Some(head)) => tracing::info!(seq = head.seq, hash = %head.hash, "audit anchor"),
                Ok(None) => {}
                Err(e) => tracing::error!("audit anchor: {e}"),
            }
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
