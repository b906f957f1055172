//! The `[rules]` config section: where the rules live, how the engine runs them,
//! and the values rules read as `config.*`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Where packages install the default pack.
pub const DEFAULT_RULES_DIR: &str = "/usr/share/gatewatch/rules";

/// `[rules]` in gatewatch.toml. Every key is optional.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RulesConfig {
    /// Directory of `*.rhai` rules (searched recursively). When it is the
    /// packaged default and does not exist, the pack built into the binary is used.
    pub dir: PathBuf,
    /// Local rules (e.g. `/etc/gatewatch/rules.d`): a local rule replaces the
    /// pack's rule with the same id; new ids are added.
    pub local_dir: Option<PathBuf>,
    /// Rule-evaluation worker threads. One by default: with the native
    /// pre-filter one worker evaluates the pack at about 250k events/s, and on
    /// a 2-core gateway a second one costs more in contention (shared rule
    /// state, counters) than it adds (http_overhead.py: 97-99% captured and
    /// a 0.47 throughput ratio with one, 91-93% and 0.40 with two).
    pub workers: usize,
    /// Keys kept by the stateful helpers (count/distinct/first_seen) across all
    /// rules; the least recently used key is evicted (and counted) past this.
    pub state_max_keys: usize,
    /// Default throttle: at most `throttle_alerts` alerts per rule and key in
    /// `throttle_per_secs` seconds; 0 alerts disables throttling.
    pub throttle_alerts: u32,
    pub throttle_per_secs: u64,
    /// (rule, key) pairs the throttle remembers (least recently used evicted).
    pub throttle_max_keys: usize,
    /// Operations one rule may spend on one event before it is stopped.
    pub max_operations: u64,

    // ---- visible to rules as `config.*` ----
    /// Path prefixes that require an Authorization header (`/admin` covers
    /// `/admin/x`; a trailing `*` is a plain prefix).
    pub protected_paths: Vec<String>,
    /// Peers allowed to send X-Forwarded-For (IP or CIDR).
    pub trusted_proxies: Vec<String>,
    /// Origins browsers may send (exact, e.g. `https://app.example.com`).
    pub allowed_origins: Vec<String>,
    /// Case-insensitive substrings of User-Agent values that name a scanner.
    pub scanner_user_agents: Vec<String>,
    /// Header-block size above which a request is flagged.
    pub max_header_bytes: u64,
    /// Free-form numbers and strings for rules (`config.thresholds.NAME`).
    pub thresholds: BTreeMap<String, Threshold>,
    /// The `[mcp]` section, copied here when the config is loaded (`config.mcp.*`).
    #[serde(skip)]
    pub mcp: crate::mcp::McpConfig,
}

/// A value in `[rules.thresholds]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Threshold {
    Int(i64),
    Float(f64),
    Bool(bool),
    Str(String),
    List(Vec<String>),
}

impl Default for RulesConfig {
    fn default() -> Self {
        RulesConfig {
            dir: PathBuf::from(DEFAULT_RULES_DIR),
            local_dir: None,
            workers: 1,
            state_max_keys: 100_000,
            throttle_alerts: 5,
            throttle_per_secs: 60,
            throttle_max_keys: 50_000,
            max_operations: 50_000,
            protected_paths: ["/admin", "/internal", "/actuator", "/api/admin"]
                .map(String::from)
                .to_vec(),
            trusted_proxies: ["127.0.0.0/8", "::1/128"].map(String::from).to_vec(),
            allowed_origins: Vec::new(),
            scanner_user_agents: [
                "sqlmap",
                "nikto",
                "nuclei",
                "masscan",
                "zgrab",
                "gobuster",
                "dirbuster",
                "wpscan",
                "nmap",
                "acunetix",
                "nessus",
                "openvas",
                "ffuf",
                "feroxbuster",
                "wfuzz",
                "whatweb",
                "jaeles",
                "arachni",
                "w3af",
            ]
            .map(String::from)
            .to_vec(),
            max_header_bytes: 8192,
            thresholds: [
                ("credential_sources", Threshold::Int(5)),
                ("credential_window_secs", Threshold::Int(300)),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
            mcp: crate::mcp::McpConfig::default(),
        }
    }
}

/// Rule worker threads, at most.
pub const MAX_WORKERS: usize = 256;

impl RulesConfig {
    /// Checks values a rule set cannot work with. Errors name the key.
    pub fn validate(&self) -> Result<(), String> {
        // One thread and one Rhai engine each: more than a few per core only
        // costs memory and context switches.
        if !(1..=MAX_WORKERS).contains(&self.workers) {
            return Err(format!(
                "rules.workers must be between 1 and {MAX_WORKERS}, got {}",
                self.workers
            ));
        }
        if self.state_max_keys == 0 {
            return Err("rules.state_max_keys must be at least 1".into());
        }
        if self.throttle_max_keys == 0 {
            return Err("rules.throttle_max_keys must be at least 1".into());
        }
        if self.throttle_alerts > 0 && self.throttle_per_secs == 0 {
            return Err("rules.throttle_per_secs must be at least 1".into());
        }
        if self.max_operations == 0 {
            return Err("rules.max_operations must be at least 1".into());
        }
        for p in &self.trusted_proxies {
            if crate::rules::net::IpNet::parse(p).is_none() {
                return Err(format!(
                    "rules.trusted_proxies: {p:?} is not an IP address or CIDR"
                ));
            }
        }
        Ok(())
    }

    /// The `config` object map rules see.
    pub(crate) fn to_rhai(&self) -> rhai::Map {
        use rhai::{Array, Dynamic};
        let list = |v: &[String]| -> Dynamic {
            v.iter()
                .map(|s| Dynamic::from(s.clone()))
                .collect::<Array>()
                .into()
        };
        let mut m = rhai::Map::new();
        m.insert("protected_paths".into(), list(&self.protected_paths));
        m.insert("trusted_proxies".into(), list(&self.trusted_proxies));
        m.insert("allowed_origins".into(), list(&self.allowed_origins));
        // Lower-cased once here, so rules compare without allocating.
        let scanners: Vec<String> = self
            .scanner_user_agents
            .iter()
            .map(|s| s.to_ascii_lowercase())
            .collect();
        m.insert("scanner_user_agents".into(), list(&scanners));
        m.insert(
            "max_header_bytes".into(),
            Dynamic::from(i64::try_from(self.max_header_bytes).unwrap_or(i64::MAX)),
        );
        let mut t = rhai::Map::new();
        for (k, v) in &self.thresholds {
            let d = match v {
                Threshold::Int(i) => Dynamic::from(*i),
                Threshold::Float(f) => Dynamic::from(*f),
                Threshold::Bool(b) => Dynamic::from(*b),
                Threshold::Str(s) => Dynamic::from(s.clone()),
                Threshold::List(l) => list(l),
            };
            t.insert(k.as_str().into(), d);
        }
        m.insert("thresholds".into(), t.into());
        m.insert("mcp".into(), self.mcp.to_rhai().into());
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_toml_section_and_rejects_unknown_keys() {
        let cfg: RulesConfig = toml::from_str(
            r#"
            dir = "rules"
            protected_paths = ["/x"]
            [thresholds]
            credential_sources = 3
            ratio = 0.5
            "#,
        )
        .unwrap();
        assert_eq!(cfg.dir, PathBuf::from("rules"));
        assert_eq!(cfg.thresholds["credential_sources"], Threshold::Int(3));
        assert_eq!(cfg.thresholds["ratio"], Threshold::Float(0.5));
        assert_eq!(cfg.workers, 1);
        assert!(toml::from_str::<RulesConfig>("protected_path = []").is_err());
        assert!(RulesConfig::default().validate().is_ok());
    }
}
