//! `[audit]` section of the config file.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// When the writer calls `fsync(2)` (`sync_data`) on the active audit file.
///
/// In TOML: `fsync = "always"`, `fsync = "never"` or `fsync = { interval_ms = 100 }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FsyncPolicy {
    /// After every record: a record that `append` returned for is on disk.
    Always,
    /// After a record when at least this many milliseconds passed since the last
    /// sync (and on [`AuditWriter::sync`](super::AuditWriter::sync) / drop). A crash
    /// loses at most that window.
    IntervalMs(u64),
    /// Never explicitly; the kernel writes back when it wants.
    Never,
}

impl Default for FsyncPolicy {
    fn default() -> Self {
        FsyncPolicy::IntervalMs(1000)
    }
}

/// Kinds of records the pipeline may put in the trail. The writer also writes
/// `rotation` records itself (first record of every file after the first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditKind {
    /// An alert that a rule raised (payload: the alert JSON).
    Alert,
    /// An MCP session was initialised or ended (payload: session summary).
    McpSession,
    /// The rule set was loaded or reloaded (payload: rule ids, hashes, who/why).
    RulesetChange,
    /// Written by the writer as the first record of a continued file.
    Rotation,
}

impl AuditKind {
    /// The `kind` string written into records.
    pub fn as_str(self) -> &'static str {
        match self {
            AuditKind::Alert => "alert",
            AuditKind::McpSession => "mcp_session",
            AuditKind::RulesetChange => "ruleset_change",
            AuditKind::Rotation => "rotation",
        }
    }
}

/// `[audit]` config section.
///
/// ```toml
/// [audit]
/// enabled = true
/// path = "/var/lib/gatewatch/audit/audit.jsonl"
/// fsync = { interval_ms = 1000 }     # or "always" / "never"
/// rotate_bytes = 104857600           # 0 = no size rotation
/// rotate_secs = 86400                # 0 = no age rotation
/// record_alerts = true
/// record_mcp_sessions = false
/// record_ruleset_changes = false
/// anchors_path = "/var/lib/gatewatch/audit/anchors.jsonl"   # optional
/// anchor_interval_secs = 300
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// Whether the daemon keeps an audit trail at all.
    pub enabled: bool,
    /// The active file. Rotated files are renamed next to it to
    /// `<stem>-<first seq, 20 digits>-<UTC time>.<ext>`.
    pub path: PathBuf,
    /// fsync policy for the active file.
    pub fsync: FsyncPolicy,
    /// Rotate before a record when the active file has at least this many bytes (0 = never).
    pub rotate_bytes: u64,
    /// Rotate before a record when the active file's first record is this old (0 = never).
    pub rotate_secs: u64,
    /// Record alerts (kind `alert`).
    pub record_alerts: bool,
    /// Record MCP session starts/ends (kind `mcp_session`).
    pub record_mcp_sessions: bool,
    /// Record rule set loads and reloads (kind `ruleset_change`).
    pub record_ruleset_changes: bool,
    /// If set, [`AuditWriter::maybe_anchor`](super::AuditWriter::maybe_anchor) and
    /// [`AuditWriter::anchor_now`](super::AuditWriter::anchor_now) also append the
    /// head to this file (one JSON object per line).
    pub anchors_path: Option<PathBuf>,
    /// How often `maybe_anchor` yields a head (0 = never).
    pub anchor_interval_secs: u64,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            enabled: true,
            // `{state_dir}` is expanded by the config loader.
            path: PathBuf::from("{state_dir}/audit/audit.jsonl"),
            fsync: FsyncPolicy::default(),
            rotate_bytes: 100 * 1024 * 1024,
            rotate_secs: 24 * 3600,
            record_alerts: true,
            record_mcp_sessions: false,
            record_ruleset_changes: false,
            anchors_path: None,
            anchor_interval_secs: 300,
        }
    }
}

impl AuditConfig {
    /// Whether records of `kind` are kept (what [`AuditWriter::record`](super::AuditWriter::record) checks).
    pub fn records(&self, kind: AuditKind) -> bool {
        match kind {
            AuditKind::Alert => self.record_alerts,
            AuditKind::McpSession => self.record_mcp_sessions,
            AuditKind::RulesetChange => self.record_ruleset_changes,
            AuditKind::Rotation => true,
        }
    }

    pub(crate) fn anchor_interval(&self) -> Option<Duration> {
        (self.anchor_interval_secs > 0).then(|| Duration::from_secs(self.anchor_interval_secs))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_forms_of_fsync_and_defaults() {
        let c: AuditConfig = toml::from_str("fsync = \"always\"").unwrap();
        assert_eq!(c.fsync, FsyncPolicy::Always);
        assert!(c.record_alerts && !c.record_mcp_sessions);
        let c: AuditConfig = toml::from_str("fsync = { interval_ms = 100 }").unwrap();
        assert_eq!(c.fsync, FsyncPolicy::IntervalMs(100));
        let c: AuditConfig = toml::from_str("fsync = \"never\"\nrotate_bytes = 0").unwrap();
        assert_eq!((c.fsync, c.rotate_bytes), (FsyncPolicy::Never, 0));
        let c: AuditConfig = toml::from_str("").unwrap();
        assert_eq!(c, AuditConfig::default());
    }

    #[test]
    fn unknown_key_is_named() {
        let err = toml::from_str::<AuditConfig>("rotate_byte = 5").unwrap_err();
        assert!(err.to_string().contains("rotate_byte"), "{err}");
    }
}
