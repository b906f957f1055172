//! The `[mcp]` config section: what the session tracker treats as MCP, its
//! memory bounds, and the values MCP rules read as `config.mcp.*`.

use serde::Deserialize;

/// `[mcp]` in gatewatch.toml. Every key is optional.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct McpConfig {
    /// Run the session tracker (rules still see the kernel's MCP fields without it).
    pub enabled: bool,
    /// Request paths of MCP endpoints (`/mcp` covers `/mcp?x` and `/mcp/x`). JSON-RPC
    /// bodies and MCP headers on other paths are tracked too; these make the
    /// path-based rules (Authorization, Origin/Host) apply.
    pub endpoint_paths: Vec<String>,
    /// Origins allowed to reach the endpoints (exact, e.g. `https://app.example.com`,
    /// or `http://localhost:*` for any port). Empty: only a loopback page
    /// (localhost, 127.0.0.1, [::1]) talking to a loopback server passes.
    pub allowed_origins: Vec<String>,
    /// `Host` values allowed (with or without port, or `name:*`). Empty: only
    /// loopback servers are checked, and must be reached as localhost / 127.0.0.1 / [::1].
    pub allowed_hosts: Vec<String>,
    /// The endpoints require `Authorization`.
    pub require_auth: bool,
    /// Request bodies above this Content-Length are flagged.
    pub max_content_length: u64,
    /// More than this many `tools/call` per session or client in `tools_call_burst_secs` is a burst.
    pub tools_call_burst: u64,
    pub tools_call_burst_secs: u64,
    /// 404s to requests carrying a session id, per client, in `not_found_burst_secs`.
    pub not_found_burst: u64,
    pub not_found_burst_secs: u64,
    /// Session ids shorter than this, or with fewer distinct bytes, are flagged.
    pub min_session_id_length: u32,
    pub min_session_id_distinct_bytes: u32,
    /// Protocol versions in use; anything else in `MCP-Protocol-Version` is flagged.
    pub known_versions: Vec<String>,
    /// Versions of the stateless form (per-request envelope, no sessions).
    pub stateless_versions: Vec<String>,
    /// JSON-RPC methods of the spec; others are flagged.
    pub known_methods: Vec<String>,
    /// Tracked sessions (least recently used forgotten past this, and counted).
    pub max_sessions: usize,
    /// Ended session ids remembered for reuse detection, and for how long.
    pub max_ended_sessions: usize,
    pub ended_ttl_secs: u64,
    /// A session with no traffic for this long is ended as `expired`.
    pub session_idle_secs: u64,
    /// Client addresses tracked (per server), and TCP flows with requests awaiting a response.
    pub max_clients: usize,
    pub max_flows: usize,
    /// Requests awaiting a response per flow (HTTP/1.1 pipelining depth kept).
    pub max_pending_per_flow: usize,
    /// A 401 counts as a challenge to its client for this long.
    pub auth_challenge_secs: u64,
    /// Sessions older than the sensor are expected during this first stretch of
    /// traffic; `mcp_context.tracker_warm` is false until it has passed.
    pub warmup_secs: u64,
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// Methods of the MCP specification (2024-11-05 .. 2026-07-28).
pub const SPEC_METHODS: &[&str] = &[
    "initialize",
    "ping",
    "server/discover",
    "tools/list",
    "tools/call",
    "resources/list",
    "resources/templates/list",
    "resources/read",
    "resources/subscribe",
    "resources/unsubscribe",
    "prompts/list",
    "prompts/get",
    "completion/complete",
    "logging/setLevel",
    "sampling/createMessage",
    "roots/list",
    "elicitation/create",
    "tasks/get",
    "tasks/result",
    "tasks/list",
    "tasks/cancel",
    "subscriptions/listen",
    "notifications/initialized",
    "notifications/cancelled",
    "notifications/progress",
    "notifications/message",
    "notifications/roots/list_changed",
    "notifications/resources/updated",
    "notifications/resources/list_changed",
    "notifications/tools/list_changed",
    "notifications/prompts/list_changed",
    "notifications/elicitation/complete",
    "notifications/tasks/status",
    "notifications/subscriptions/acknowledged",
];

impl Default for McpConfig {
    fn default() -> Self {
        McpConfig {
            enabled: true,
            endpoint_paths: strings(&["/mcp", "/sse", "/messages"]),
            allowed_origins: Vec::new(),
            allowed_hosts: Vec::new(),
            require_auth: false,
            max_content_length: 1_048_576,
            tools_call_burst: 30,
            tools_call_burst_secs: 10,
            not_found_burst: 5,
            not_found_burst_secs: 60,
            min_session_id_length: 16,
            min_session_id_distinct_bytes: 8,
            known_versions: strings(&[
                "2024-11-05",
                "2025-03-26",
                "2025-06-18",
                "2025-11-25",
                "2026-07-28",
            ]),
            stateless_versions: strings(&["2026-07-28"]),
            known_methods: strings(SPEC_METHODS),
            max_sessions: 50_000,
            max_ended_sessions: 50_000,
            ended_ttl_secs: 86_400,
            session_idle_secs: 3_600,
            max_clients: 50_000,
            max_flows: 50_000,
            max_pending_per_flow: 32,
            auth_challenge_secs: 300,
            warmup_secs: 60,
        }
    }
}

impl McpConfig {
    /// Checks values the tracker cannot work with. Errors name the key.
    pub fn validate(&self) -> Result<(), String> {
        for (key, v) in [
            ("mcp.max_sessions", self.max_sessions),
            ("mcp.max_ended_sessions", self.max_ended_sessions),
            ("mcp.max_clients", self.max_clients),
            ("mcp.max_flows", self.max_flows),
            ("mcp.max_pending_per_flow", self.max_pending_per_flow),
        ] {
            if v == 0 {
                return Err(format!("{key} must be at least 1"));
            }
        }
        for (key, v) in [
            ("mcp.session_idle_secs", self.session_idle_secs),
            ("mcp.ended_ttl_secs", self.ended_ttl_secs),
            ("mcp.tools_call_burst_secs", self.tools_call_burst_secs),
            ("mcp.not_found_burst_secs", self.not_found_burst_secs),
        ] {
            if v == 0 {
                return Err(format!("{key} must be at least 1"));
            }
        }
        if let Some(p) = self.endpoint_paths.iter().find(|p| !p.starts_with('/')) {
            return Err(format!("mcp.endpoint_paths: {p:?} must start with '/'"));
        }
        Ok(())
    }

    /// The `config.mcp` map rules see.
    pub(crate) fn to_rhai(&self) -> rhai::Map {
        use rhai::{Array, Dynamic};
        let list = |v: &[String]| -> Dynamic {
            v.iter()
                .map(|s| Dynamic::from(s.clone()))
                .collect::<Array>()
                .into()
        };
        let int = |v: u64| Dynamic::from(i64::try_from(v).unwrap_or(i64::MAX));
        let mut m = rhai::Map::new();
        m.insert("enabled".into(), Dynamic::from(self.enabled));
        m.insert("endpoint_paths".into(), list(&self.endpoint_paths));
        m.insert("allowed_origins".into(), list(&self.allowed_origins));
        m.insert("allowed_hosts".into(), list(&self.allowed_hosts));
        m.insert("require_auth".into(), Dynamic::from(self.require_auth));
        m.insert("max_content_length".into(), int(self.max_content_length));
        m.insert("tools_call_burst".into(), int(self.tools_call_burst));
        m.insert(
            "tools_call_burst_secs".into(),
            int(self.tools_call_burst_secs),
        );
        m.insert("not_found_burst".into(), int(self.not_found_burst));
        m.insert(
            "not_found_burst_secs".into(),
            int(self.not_found_burst_secs),
        );
        m.insert(
            "min_session_id_length".into(),
            int(u64::from(self.min_session_id_length)),
        );
        m.insert(
            "min_session_id_distinct_bytes".into(),
            int(u64::from(self.min_session_id_distinct_bytes)),
        );
        m.insert("known_versions".into(), list(&self.known_versions));
        m.insert("stateless_versions".into(), list(&self.stateless_versions));
        m.insert("known_methods".into(), list(&self.known_methods));
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_unknown_keys_are_refused() {
        assert!(McpConfig::default().validate().is_ok());
        let c: McpConfig = toml::from_str("require_auth = true\nmax_sessions = 10\n").unwrap();
        assert!(c.require_auth);
        assert_eq!(c.max_sessions, 10);
        assert!(toml::from_str::<McpConfig>("protect = true").is_err());
        let bad = McpConfig {
            max_flows: 0,
            ..McpConfig::default()
        };
        assert!(bad.validate().unwrap_err().contains("mcp.max_flows"));
    }
}
