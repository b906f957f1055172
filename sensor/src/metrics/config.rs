//! `[metrics]` section of the config file.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// `[metrics]` config section.
///
/// ```toml
/// [metrics]
/// enabled = true
/// listen = "127.0.0.1:9464"
/// health_drop_window_secs = 60    # /healthz is 503 while ring-buffer drops grew this recently
/// health_sink_failure_secs = 30   # /healthz is 503 when a sink has failed this long
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Serve `/metrics` and `/healthz` at all.
    pub enabled: bool,
    /// Address to listen on. Keep it on loopback unless a scraper needs it elsewhere:
    /// there is no authentication.
    pub listen: SocketAddr,
    /// Unhealthy while the ring-buffer drop counter increased within this many seconds.
    pub health_drop_window_secs: u64,
    /// Unhealthy when a sink has been failing (no success since its first failure)
    /// for at least this many seconds.
    pub health_sink_failure_secs: u64,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            enabled: true,
            listen: SocketAddr::from(([127, 0, 0, 1], 9464)),
            health_drop_window_secs: 60,
            health_sink_failure_secs: 30,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_rejects_unknown_keys() {
        let c: MetricsConfig = toml::from_str("listen = \"127.0.0.1:0\"").unwrap();
        assert_eq!(c.listen.port(), 0);
        assert!(c.enabled);
        assert_eq!(
            toml::from_str::<MetricsConfig>("").unwrap(),
            MetricsConfig::default()
        );
        let e = toml::from_str::<MetricsConfig>("listn = \"x\"").unwrap_err();
        assert!(e.to_string().contains("listn"), "{e}");
        assert!(toml::from_str::<MetricsConfig>("listen = \"not an address\"").is_err());
    }
}
