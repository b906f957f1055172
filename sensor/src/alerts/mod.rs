//! Alerts: what a matching rule produces, serialised as an OCSF 1.x Detection
//! Finding (class_uid 2004) that `schemas/alert.schema.json` describes, and the
//! per-(rule, key) throttle that turns an alert storm into one alert plus a count.

pub mod throttle;

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::events::Event;

/// OCSF schema version the alerts follow.
pub const OCSF_VERSION: &str = "1.3.0";

/// Who raised an alert: goes into every alert.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SensorIdentity {
    pub host: String,
    pub sensor_id: String,
}

impl SensorIdentity {
    /// The local host name for both fields (`sensor_id` overridable by config).
    pub fn local() -> SensorIdentity {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|s| s.trim().to_string())
            .ok()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "localhost".to_string());
        SensorIdentity {
            sensor_id: host.clone(),
            host,
        }
    }
}

/// Rule severity, ordered. OCSF severity_id 1..=5.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    pub fn parse(s: &str) -> Option<Severity> {
        Some(match s.to_ascii_lowercase().as_str() {
            "info" | "informational" => Severity::Info,
            "low" => Severity::Low,
            "medium" => Severity::Medium,
            "high" => Severity::High,
            "critical" => Severity::Critical,
            _ => return None,
        })
    }
    /// Lower-case name as rules write it (also the metrics label).
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }
    pub fn ocsf_id(self) -> u8 {
        self as u8 + 1
    }
    pub fn ocsf_name(self) -> &'static str {
        match self {
            Severity::Info => "Informational",
            Severity::Low => "Low",
            Severity::Medium => "Medium",
            Severity::High => "High",
            Severity::Critical => "Critical",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One alert. Serialises to the JSON of `schemas/alert.schema.json`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Alert {
    class_uid: u32,
    class_name: &'static str,
    category_uid: u32,
    category_name: &'static str,
    activity_id: u32,
    activity_name: &'static str,
    type_uid: u32,
    type_name: &'static str,
    severity_id: u8,
    severity: &'static str,
    status_id: u32,
    status: &'static str,
    /// Epoch milliseconds of the triggering event.
    time: i64,
    /// The rule's summary of this finding.
    message: String,
    metadata: Metadata,
    finding_info: FindingInfo,
    evidences: Vec<Evidence>,
    gatewatch: GatewatchInfo,
    #[serde(skip)]
    sev: Severity,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
struct Metadata {
    product: Product,
    version: &'static str,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
struct Product {
    name: &'static str,
    vendor_name: &'static str,
    version: &'static str,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
struct FindingInfo {
    uid: String,
    title: String,
    desc: String,
    analytic: Analytic,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    attacks: Vec<Attack>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    references: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
struct Analytic {
    uid: String,
    name: String,
    #[serde(rename = "type")]
    type_: &'static str,
    type_id: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
struct Attack {
    technique: Technique,
    #[serde(skip_serializing_if = "Option::is_none")]
    sub_technique: Option<Technique>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
struct Technique {
    uid: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'static str>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
struct Evidence {
    data: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    src_endpoint: Option<NetEndpoint>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dst_endpoint: Option<NetEndpoint>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
struct NetEndpoint {
    ip: String,
    port: u16,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
struct GatewatchInfo {
    rule_id: String,
    rule_file: String,
    event_kind: String,
    throttle_key: String,
    suppressed_count: u64,
    sensor: SensorIdentity,
    fields: serde_json::Map<String, Value>,
}

/// What the engine knows when a rule matched; `Alert::new` turns it into an alert.
#[derive(Debug, Clone)]
pub struct AlertParts<'a> {
    pub rule_id: &'a str,
    pub rule_file: &'a str,
    pub title: &'a str,
    pub description: &'a str,
    pub severity: Severity,
    pub mitre: &'a [String],
    pub references: &'a [String],
    pub summary: String,
    pub throttle_key: String,
    pub suppressed_count: u64,
    pub fields: serde_json::Map<String, Value>,
    pub event: &'a Event,
    pub event_time_ms: i64,
    pub sensor: &'a SensorIdentity,
}

impl Alert {
    pub fn new(p: AlertParts<'_>) -> Alert {
        let attacks = p
            .mitre
            .iter()
            .map(|id| {
                let (base, sub) = match id.split_once('.') {
                    Some((base, _)) => (base.to_string(), Some(id.clone())),
                    None => (id.clone(), None),
                };
                Attack {
                    technique: Technique {
                        name: technique_name(&base),
                        uid: base,
                    },
                    sub_technique: sub.map(|s| Technique {
                        name: technique_name(&s),
                        uid: s,
                    }),
                }
            })
            .collect();
        let endpoint = |e: &Option<crate::events::Endpoint>| {
            e.as_ref().map(|e| NetEndpoint {
                ip: e.ip.to_string(),
                port: e.port,
            })
        };
        Alert {
            class_uid: 2004,
            class_name: "Detection Finding",
            category_uid: 2,
            category_name: "Findings",
            activity_id: 1,
            activity_name: "Create",
            type_uid: 200401,
            type_name: "Detection Finding: Create",
            severity_id: p.severity.ocsf_id(),
            severity: p.severity.ocsf_name(),
            status_id: 1,
            status: "New",
            time: p.event_time_ms,
            message: p.summary,
            metadata: Metadata {
                product: Product {
                    name: "gatewatch",
                    vendor_name: "gatewatch",
                    version: env!("CARGO_PKG_VERSION"),
                },
                version: OCSF_VERSION,
            },
            finding_info: FindingInfo {
                uid: new_alert_id(),
                title: p.title.to_string(),
                desc: p.description.to_string(),
                analytic: Analytic {
                    uid: p.rule_id.to_string(),
                    name: p.title.to_string(),
                    type_: "Rule",
                    type_id: 1,
                },
                attacks,
                references: p.references.to_vec(),
            },
            evidences: vec![Evidence {
                data: serde_json::to_value(p.event).unwrap_or(Value::Null),
                src_endpoint: endpoint(&p.event.src),
                dst_endpoint: endpoint(&p.event.dst),
            }],
            gatewatch: GatewatchInfo {
                rule_id: p.rule_id.to_string(),
                rule_file: p.rule_file.to_string(),
                event_kind: p.event.kind.as_str().to_string(),
                throttle_key: p.throttle_key,
                suppressed_count: p.suppressed_count,
                sensor: p.sensor.clone(),
                fields: p.fields,
            },
            sev: p.severity,
        }
    }

    /// Unique id of this alert (OCSF `finding_info.uid`, 32 hex digits).
    pub fn id(&self) -> &str {
        &self.finding_info.uid
    }
    pub fn rule_id(&self) -> &str {
        &self.gatewatch.rule_id
    }
    pub fn severity(&self) -> Severity {
        self.sev
    }
    pub fn summary(&self) -> &str {
        &self.message
    }
    pub fn time_ms(&self) -> i64 {
        self.time
    }
    pub fn throttle_key(&self) -> &str {
        &self.gatewatch.throttle_key
    }
    /// Alerts this one stands for that the throttle held back before it.
    pub fn suppressed_count(&self) -> u64 {
        self.gatewatch.suppressed_count
    }
    /// Extra fields the rule attached.
    pub fn fields(&self) -> &serde_json::Map<String, Value> {
        &self.gatewatch.fields
    }
    /// Partition key for ordered delivery (Kafka): the source address of the
    /// triggering event, so one source's alerts stay in order; without one, the
    /// sensor id.
    pub fn key(&self) -> &str {
        self.evidences
            .first()
            .and_then(|e| e.src_endpoint.as_ref())
            .map(|e| e.ip.as_str())
            .unwrap_or(&self.gatewatch.sensor.sensor_id)
    }
    /// The alert as one JSON line.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// Random 128-bit id as 32 lower-case hex digits.
fn new_alert_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static FALLBACK: AtomicU64 = AtomicU64::new(0);
    let mut b = [0u8; 16];
    if getrandom::fill(&mut b).is_err() {
        // No entropy source: still unique within this process.
        let n = FALLBACK.fetch_add(1, Ordering::Relaxed);
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        b[..8].copy_from_slice(&t.to_be_bytes());
        b[8..].copy_from_slice(&n.to_be_bytes());
    }
    let mut s = String::with_capacity(32);
    for x in b {
        s.push_str(&format!("{x:02x}"));
    }
    s
}

/// Names of the ATT&CK techniques the default pack uses (others go without a name).
fn technique_name(uid: &str) -> Option<&'static str> {
    Some(match uid {
        "T1190" => "Exploit Public-Facing Application",
        "T1595" => "Active Scanning",
        "T1595.002" => "Vulnerability Scanning",
        "T1595.003" => "Wordlist Scanning",
        "T1078" => "Valid Accounts",
        "T1110" => "Brute Force",
        "T1552" => "Unsecured Credentials",
        "T1040" => "Network Sniffing",
        "T1562" => "Impair Defenses",
        "T1562.001" => "Disable or Modify Tools",
        "T1499" => "Endpoint Denial of Service",
        "T1090" => "Proxy",
        "T1550" => "Use Alternate Authentication Material",
        "T1036" => "Masquerading",
        "T1027" => "Obfuscated Files or Information",
        _ => return None,
    })
}

/// The alert for alerts the Kafka spool had to drop (full spool, corrupt
/// record): raised by the sensor itself, so a loss is never silent.
pub fn delivery_drop_alert(dropped: u64) -> Alert {
    use crate::capture::clock::BootClock;
    use crate::events::{CaptureSource, Direction, EventKind};
    let now_ns = BootClock::now_unix_ns();
    let event = Event {
        kind: EventKind::SensorStats,
        time: crate::events::EventTime::from_unix_ns(now_ns),
        source: CaptureSource::Sensor,
        iface: None,
        ifindex: 0,
        direction: Direction::Unknown,
        src: None,
        dst: None,
        process: None,
        http: None,
        l4: None,
        stats: None,
        mcp_context: None,
    };
    let mut fields = serde_json::Map::new();
    fields.insert("alerts_dropped".into(), Value::from(dropped));
    Alert::new(AlertParts {
        rule_id: "GW-SENSOR-002",
        rule_file: "(built in: Kafka sink)",
        title: "Alerts dropped by the Kafka sink",
        description: "The Kafka spool was full (kafka.spool_max_mb) or held a corrupt record, so alerts were dropped, oldest first, before the broker acknowledged them.",
        severity: Severity::High,
        mitre: &[],
        references: &[],
        summary: format!("{dropped} alert(s) dropped by the Kafka sink before delivery"),
        throttle_key: "kafka".into(),
        suppressed_count: 0,
        fields,
        event: &event,
        event_time_ms: (now_ns / 1_000_000) as i64,
        sensor: &SensorIdentity::local(),
    })
}
