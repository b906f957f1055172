//! Sinks: where events and alerts go. Each sink takes ready JSON lines; what
//! goes where (events, alerts, or both) is decided by the output's config.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use serde::Deserialize;

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
#[serde(deny_unknown_fields)]
pub struct OutputConfig {
    pub spec: OutputSpec,
    #[serde(default = "yes")]
    pub events: bool,
    #[serde(default = "yes")]
    pub alerts: bool,
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
}

pub struct Output {
    pub name: String,
    events: bool,
    alerts: bool,
    writer: Writer,
    pub written: u64,
}

impl Output {
    pub fn open(cfg: &OutputConfig) -> Result<Output> {
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
            OutputSpec::Kafka { .. } => {
                bail!("the kafka output is not built yet in this version; use stdout or jsonl:PATH")
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
        };
        r.with_context(|| format!("writing to {}", self.name))?;
        self.written += 1;
        Ok(())
    }

    pub fn flush(&mut self) -> Result<()> {
        match &mut self.writer {
            Writer::Stdout(out) => out.flush(),
            Writer::File(f) => f.flush(),
        }
        .with_context(|| format!("flushing {}", self.name))
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
