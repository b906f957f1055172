//! Sinks: where events and alerts go. Each sink takes ready JSON lines; what
//! goes where (events, alerts, or both) is decided by the output's config.

pub mod kafka;
pub mod spool;

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use serde::Deserialize;

use crate::alerts::Alert;
use crate::metrics::Metrics;
pub use kafka::KafkaConfig;

/// Parsed `--output` SPEC: `stdout`, `jsonl:PATH` or `kafka:BROKERS/TOPIC`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutputSpec {
    Stdout,
    Jsonl(PathBuf),
    Kafka { brokers: String, topic: String },
}

impl std::str::FromStr for OutputSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "stdout" {
            return Ok(OutputSpec::Stdout);
        }
        if let Some(path) = s.strip_prefix("jsonl:") {
            if path.is_empty() {
                return Err(
                    "jsonl: needs a path, e.g. jsonl:/var/lib/gatewatch/events.jsonl".into(),
                );
            }
            return Ok(OutputSpec::Jsonl(PathBuf::from(path)));
        }
        if let Some(rest) = s.strip_prefix("kafka:") {
            let (brokers, topic) = rest
                .rsplit_once('/')
                .filter(|(b, t)| !b.is_empty() && !t.is_empty())
                .ok_or("kafka: needs BROKER[,BROKER]/TOPIC, e.g. kafka:127.0.0.1:9092/gatewatch-alerts")?;
            return Ok(OutputSpec::Kafka {
                brokers: brokers.to_string(),
                topic: topic.to_string(),
            });
        }
        Err(format!(
            "unknown output {s:?}: use stdout, jsonl:PATH or kafka:BROKER[,BROKER]/TOPIC"
        ))
    }
}

impl<'de> Deserialize<'de> for OutputSpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// One `[[output]]` entry of the config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(from = "OutputEntry")]
pub struct OutputConfig {
    pub spec: OutputSpec,
    /// Raw events too (default: yes, except for Kafka, where a SIEM wants alerts).
    pub events: bool,
    pub alerts: bool,
    /// Kafka: the topic for raw events (default: the alerts topic + `-events`).
    pub events_topic: Option<String>,
    /// Kafka: the `[kafka]` section, filled in by the config loader.
    pub kafka: KafkaConfig,
}

/// `[[output]]` as written in the file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OutputEntry {
    spec: OutputSpec,
    events: Option<bool>,
    #[serde(default = "yes")]
    alerts: bool,
    events_topic: Option<String>,
}

impl From<OutputEntry> for OutputConfig {
    fn from(e: OutputEntry) -> Self {
        let mut out = OutputConfig::from_spec(e.spec);
        out.events = e.events.unwrap_or(out.events);
        out.alerts = e.alerts;
        out.events_topic = e.events_topic;
        out
    }
}

impl OutputConfig {
    /// An output from `--output SPEC`: alerts, and events unless it is Kafka.
    pub fn from_spec(spec: OutputSpec) -> OutputConfig {
        OutputConfig {
            events: !matches!(spec, OutputSpec::Kafka { .. }),
            spec,
            alerts: true,
            events_topic: None,
            kafka: KafkaConfig::default(),
        }
    }
}

fn yes() -> bool {
    true
}

/// What a record is, so each output can take only what it wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordKind {
    Event,
    Alert,
}

enum Writer {
    Stdout(std::io::Stdout),
    File(BufWriter<File>),
    Kafka(Box<kafka::KafkaSink>),
}

pub struct Output {
    pub name: String,
    events: bool,
    alerts: bool,
    writer: Writer,
    pub written: u64,
}

impl Output {
    pub fn open(cfg: &OutputConfig, metrics: &Arc<Metrics>) -> Result<Output> {
        let writer = match &cfg.spec {
            OutputSpec::Stdout => Writer::Stdout(std::io::stdout()),
            OutputSpec::Jsonl(path) => {
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir)
                        .with_context(|| format!("creating directory {}", dir.display()))?;
                }
                let f = OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .with_context(|| format!("opening output file {}", path.display()))?;
                Writer::File(BufWriter::with_capacity(64 * 1024, f))
            }
            OutputSpec::Kafka { brokers, topic } => {
                Writer::Kafka(Box::new(kafka::KafkaSink::open(
                    brokers,
                    topic,
                    cfg.events_topic.as_deref(),
                    &cfg.kafka,
                    Arc::clone(metrics),
                )?))
            }
        };
        Ok(Output {
            name: match &cfg.spec {
                OutputSpec::Stdout => "stdout".into(),
                OutputSpec::Jsonl(p) => format!("jsonl:{}", p.display()),
                OutputSpec::Kafka { topic, .. } => format!("kafka:{topic}"),
            },
            events: cfg.events,
            alerts: cfg.alerts,
            writer,
            written: 0,
        })
    }

    pub fn wants(&self, kind: RecordKind) -> bool {
        match kind {
            RecordKind::Event => self.events,
            RecordKind::Alert => self.alerts,
        }
    }

    /// Write one JSON line. Stdout is flushed per line so pipes see events live.
    pub fn write_line(&mut self, line: &str) -> Result<()> {
        let r = match &mut self.writer {
            Writer::Stdout(out) => {
                let mut lock = out.lock();
                lock.write_all(line.as_bytes())
                    .and_then(|_| lock.write_all(b"\n"))
                    .and_then(|_| lock.flush())
            }
            Writer::File(f) => f
                .write_all(line.as_bytes())
                .and_then(|_| f.write_all(b"\n")),
            Writer::Kafka(k) => {
                k.send_event(line);
                Ok(())
            }
        };
        r.with_context(|| format!("writing to {}", self.name))?;
        self.written += 1;
        Ok(())
    }

    /// Write one alert (its JSON is `line`). Kafka keys it and spools it.
    pub fn write_alert(&mut self, alert: &Alert, line: &str) -> Result<()> {
        match &mut self.writer {
            Writer::Kafka(k) => {
                k.send_alert(alert.time_ms(), alert.key(), alert.id(), line)
                    .with_context(|| format!("writing to {}", self.name))?;
                self.written += 1;
                Ok(())
            }
            _ => self.write_line(line),
        }
    }

    pub fn flush(&mut self) -> Result<()> {
        match &mut self.writer {
            Writer::Stdout(out) => out.flush(),
            Writer::File(f) => f.flush(),
            Writer::Kafka(k) => {
                k.pump();
                Ok(())
            }
        }
        .with_context(|| format!("flushing {}", self.name))
    }

    /// Kafka: whether the broker acknowledges (a spooled alert is not yet
    /// delivered); None for sinks whose write is the delivery.
    pub fn delivering(&self) -> Option<bool> {
        match &self.writer {
            Writer::Kafka(k) => Some(k.delivering()),
            _ => None,
        }
    }

    /// Periodic upkeep (Kafka: retries, spool head on disk); returns alerts
    /// the sink had to drop since the last call.
    pub fn tick(&mut self) -> u64 {
        match &mut self.writer {
            Writer::Kafka(k) => {
                k.tick();
                k.take_drops()
            }
            _ => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse() {
        assert_eq!("stdout".parse(), Ok(OutputSpec::Stdout));
        assert_eq!(
            "jsonl:/tmp/x".parse(),
            Ok(OutputSpec::Jsonl("/tmp/x".into()))
        );
        assert_eq!(
            "kafka:a:9092,b:9092/alerts".parse(),
            Ok(OutputSpec::Kafka {
                brokers: "a:9092,b:9092".into(),
                topic: "alerts".into()
            })
        );
        assert!("kafka:/t".parse::<OutputSpec>().is_err());
        assert!("jsonl:".parse::<OutputSpec>().is_err());
        assert!("syslog".parse::<OutputSpec>().is_err());
    }
}
