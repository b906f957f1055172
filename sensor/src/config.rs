//! The sensor's configuration: one TOML file, every section validated, every
//! error naming the file and the key. With no file, the embedded default.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Deserialize;

use crate::audit::AuditConfig;
use crate::capture::CaptureConfig;
use crate::metrics::MetricsConfig;
use crate::sinks::OutputConfig;

/// The embedded default, identical to packaging/gatewatch.toml.
pub const DEFAULT_CONFIG: &str = include_str!("../../packaging/gatewatch.toml");

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub sensor: SensorSection,
    #[serde(default)]
    pub capture: CaptureConfig,
    #[serde(default)]
    pub l4: crate::capture::l4::L4Config,
    #[serde(default)]
    pub tls: crate::capture::tls::TlsConfig,
    #[serde(default)]
    pub rules: crate::rules::RulesConfig,
    #[serde(default, rename = "output")]
    pub outputs: Vec<OutputConfig>,
    #[serde(default)]
    pub kafka: crate::sinks::KafkaConfig,
    #[serde(default)]
    pub audit: AuditConfig,
    #[serde(default)]
    pub metrics: MetricsConfig,
    #[serde(default)]
    pub mcp: crate::mcp::McpConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SensorSection {
    /// Interfaces to attach to.
    pub interfaces: Vec<String>,
    /// Where the sensor keeps its files (JSONL output, spool, audit trail).
    pub state_dir: PathBuf,
    /// Identifies this sensor in alerts; default: the host name.
    pub sensor_id: Option<String>,
    /// Seconds between `sensor_stats` events (also sent at once when drops happen).
    pub stats_interval_secs: u64,
    /// Capacity of the channel from capture to the pipeline, in events.
    pub queue_capacity: usize,
    /// Nice value (0..=19) of the rule workers and the writer: the gateway's own
    /// processes win the CPU; when the sensor cannot keep up, the kernel ring
    /// buffer fills and drops are counted and alerted on (GW-SENSOR-001).
    pub worker_nice: i32,
    /// Rule workers and the writer run as SCHED_BATCH: waking up, they never
    /// preempt the gateway's threads (less latency added under load).
    pub worker_batch: bool,
    /// Milliseconds between drains of the kernel ring buffer (1..=100): the
    /// sensor wakes on a timer, not per event, so it stays off the gateway's CPUs.
    pub ring_poll_ms: u64,
}

impl Default for SensorSection {
    fn default() -> Self {
        SensorSection {
            interfaces: vec!["lo".into()],
            state_dir: PathBuf::from("/var/lib/gatewatch"),
            sensor_id: None,
            stats_interval_secs: 60,
            queue_capacity: 4096,
            worker_nice: 10,
            worker_batch: true,
            ring_poll_ms: 10,
        }
    }
}

/// Events buffered between capture and the rule workers, at most.
pub const MAX_QUEUE_CAPACITY: usize = 1 << 20;

impl Config {
    pub fn parse(text: &str, origin: &str) -> Result<Config> {
        let mut cfg: Config = toml::from_str(text).map_err(|e| one_line_error(origin, text, &e))?;
        cfg.capture.validate().with_context(|| origin.to_string())?;
        cfg.l4.validate().with_context(|| origin.to_string())?;
        cfg.rules
            .validate()
            .map_err(|e| anyhow::anyhow!("{origin}: rules: {e}"))?;
        cfg.mcp
            .validate()
            .map_err(|e| anyhow::anyhow!("{origin}: {e}"))?;
        // Rules read the [mcp] values as `config.mcp.*`.
        cfg.rules.mcp = cfg.mcp.clone();
        // Channels are allocated whole at start: a huge capacity is memory
        // taken at once (1e12 took 3.8 GB before failing).
        if !(1..=MAX_QUEUE_CAPACITY).contains(&cfg.sensor.queue_capacity) {
            anyhow::bail!(
                "{origin}: sensor.queue_capacity must be between 1 and {MAX_QUEUE_CAPACITY}, got {}",
                cfg.sensor.queue_capacity
            );
        }
        if !(1..=100).contains(&cfg.sensor.ring_poll_ms) {
            anyhow::bail!("{origin}: sensor.ring_poll_ms must be between 1 and 100");
        }
        if !(0..=20).contains(&cfg.sensor.worker_nice) {
            anyhow::bail!("{origin}: sensor.worker_nice must be between 0 and 20 (20: SCHED_IDLE)");
        }
        if cfg.sensor.stats_interval_secs == 0 {
            anyhow::bail!("{origin}: sensor.stats_interval_secs must be at least 1");
        }
        // `{state_dir}` in a path is the configured state directory.
        let state = cfg.sensor.state_dir.display().to_string();
        let expand = |p: &mut PathBuf| {
            *p = PathBuf::from(p.display().to_string().replace("{state_dir}", &state))
        };
        cfg.kafka
            .validate()
            .map_err(|e| anyhow::anyhow!("{origin}: {e}"))?;
        expand(&mut cfg.kafka.spool_dir);
        for out in &mut cfg.outputs {
            if let crate::sinks::OutputSpec::Jsonl(p) = &mut out.spec {
                expand(p);
            }
            out.kafka = cfg.kafka.clone();
        }
        expand(&mut cfg.audit.path);
        if let Some(p) = cfg.audit.anchors_path.as_mut() {
            expand(p);
        }
        Ok(cfg)
    }

    pub fn load(path: Option<&Path>) -> Result<Config> {
        match path {
            None => Config::parse(DEFAULT_CONFIG, "embedded default config"),
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .with_context(|| format!("reading config file {}", p.display()))?;
                Config::parse(&text, &p.display().to_string())
            }
        }
    }
}

/// `FILE:LINE:COL: message` on one line, so `systemctl status` shows it whole.
fn one_line_error(origin: &str, text: &str, e: &toml::de::Error) -> anyhow::Error {
    let msg = e.message().trim().replace('\n', " ");
    match e.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let col = before.len() - before.rfind('\n').map(|i| i + 1).unwrap_or(0) + 1;
            anyhow::anyhow!("{origin}:{line}:{col}: {msg}")
        }
        None => anyhow::anyhow!("{origin}: {msg}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_default_is_valid() {
        let c = Config::load(None).unwrap();
        assert_eq!(c.sensor.interfaces, vec!["lo".to_string()]);
        assert_eq!(c.outputs.len(), 2);
    }

    #[test]
    fn packaged_config_is_valid_and_keeps_events_out_of_the_journal() {
        let c = Config::parse(include_str!("../../packaging/etc-gatewatch.toml"), "etc").unwrap();
        let stdout = c
            .outputs
            .iter()
            .find(|o| o.spec == crate::sinks::OutputSpec::Stdout)
            .unwrap();
        assert!(!stdout.events && stdout.alerts);
        assert_eq!(c.sensor.state_dir, PathBuf::from("/var/lib/gatewatch"));
        // TLS needs capabilities the packaged unit does not grant: opt-in.
        assert!(!c.tls.enabled);
        let d = Config::load(None).unwrap();
        assert!(d.tls.enabled);
        assert_eq!(format!("{:?}", c.capture), format!("{:?}", d.capture));
        assert_eq!(format!("{:?}", c.l4), format!("{:?}", d.l4));
        assert_eq!(c.mcp, d.mcp);
        // The packaged files spell out the code's defaults, and rules see them.
        assert_eq!(d.mcp, crate::mcp::McpConfig::default());
        assert_eq!(d.rules.mcp, d.mcp);
    }

    #[test]
    fn queue_and_worker_counts_are_bounded() {
        let e = Config::parse("[sensor]\nqueue_capacity = 1000000000000\n", "f").unwrap_err();
        assert!(
            format!("{e:#}").contains("sensor.queue_capacity must be between 1 and"),
            "{e:#}"
        );
        let e = Config::parse("[rules]\nworkers = 100000\n", "f").unwrap_err();
        assert!(
            format!("{e:#}").contains("rules.workers must be between 1 and 256"),
            "{e:#}"
        );
        let e = Config::parse("[capture]\nheaders = [\"x-vault-token\"]\n", "f").unwrap_err();
        assert!(
            format!("{e:#}").contains("looks like it carries a secret"),
            "{e:#}"
        );
    }

    #[test]
    fn mcp_errors_name_the_key() {
        let e = Config::parse("[mcp]\nmax_flows = 0\n", "f").unwrap_err();
        assert!(format!("{e:#}").contains("mcp.max_flows"), "{e:#}");
        let e = Config::parse("[mcp]\nprotect = true\n", "f").unwrap_err();
        assert!(
            format!("{e:#}").contains("unknown field `protect`"),
            "{e:#}"
        );
        let c = Config::parse("[mcp]\nrequire_auth = true\n", "f").unwrap();
        assert!(c.rules.mcp.require_auth);
    }

    #[test]
    fn unknown_key_names_key_and_file() {
        let e = Config::parse("[capture]\nheadrs = []\n", "/etc/gw.toml").unwrap_err();
        let msg = format!("{e:#}");
        assert!(
            msg.starts_with("/etc/gw.toml:2:1: unknown field `headrs`"),
            "{msg}"
        );
        assert!(!msg.contains('\n'), "one line: {msg}");
    }

    #[test]
    fn wrong_type_and_bad_values_are_errors() {
        assert!(Config::parse("[capture]\nparse_window = \"big\"\n", "f").is_err());
        let e = Config::parse("[capture]\nheaders = [\"cookie\"]\n", "f").unwrap_err();
        assert!(format!("{e:#}").contains("capture.headers"));
        assert!(Config::parse("[[output]]\nspec = \"syslog\"\n", "f").is_err());
        for bad in ["-5", "0.5", "100000", "nan"] {
            let e = Config::parse(&format!("[capture]\ncpu_budget_percent = {bad}\n"), "f")
                .unwrap_err();
            assert!(
                format!("{e:#}").contains("capture.cpu_budget_percent"),
                "{bad}: {e:#}"
            );
        }
        for good in ["0", "1", "12.5", "100"] {
            let text = format!("[capture]\ncpu_budget_percent = {good}\n");
            assert!(Config::parse(&text, "f").is_ok(), "{good}");
        }
    }
}
