//! Counters, gauges and labelled families, and their Prometheus text rendering.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// Series per labelled family beyond which new label sets are folded into one
/// series whose label values are all `_other` (guards memory against a label
/// value that comes from traffic).
pub const MAX_SERIES_PER_FAMILY: usize = 2000;

/// Prefix of every metric name.
pub const PREFIX: &str = "gatewatch_";

/// A monotonic counter.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds one.
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    /// Mirrors a monotonic total kept elsewhere (e.g. a per-CPU BPF map summed by
    /// userspace). Never goes backwards: a smaller `total` is ignored.
    pub fn set_total(&self, total: u64) {
        self.0.fetch_max(total, Ordering::Relaxed);
    }
    /// Current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down.
#[derive(Debug, Default)]
pub struct Gauge(AtomicI64);

impl Gauge {
    /// Sets the value.
    pub fn set(&self, v: i64) {
        self.0.store(v, Ordering::Relaxed);
    }
    /// Adds one.
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    /// Subtracts one.
    pub fn dec(&self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
    /// Adds `d` (may be negative).
    pub fn add(&self, d: i64) {
        self.0.fetch_add(d, Ordering::Relaxed);
    }
    /// Current value.
    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A floating-point gauge (ratios such as map fill levels).
#[derive(Debug, Default)]
pub struct FloatGauge(AtomicU64);

impl FloatGauge {
    /// Sets the value.
    pub fn set(&self, v: f64) {
        self.0.store(v.to_bits(), Ordering::Relaxed);
    }
    /// Current value.
    pub fn get(&self) -> f64 {
        f64::from_bits(self.0.load(Ordering::Relaxed))
    }
}

/// A counter of seconds, kept in nanoseconds (exact under concurrent adds).
#[derive(Debug, Default)]
pub struct SecondsCounter(AtomicU64);

impl SecondsCounter {
    /// Adds a duration.
    pub fn add(&self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.0.fetch_add(ns, Ordering::Relaxed);
    }
    /// Total in seconds.
    pub fn get_seconds(&self) -> f64 {
        self.0.load(Ordering::Relaxed) as f64 / 1e9
    }
}

/// How a metric kind renders.
pub trait Sample: Default + Send + Sync {
    /// `counter` or `gauge`.
    const TYPE: &'static str;
    /// The sample value in Prometheus text format.
    fn render_value(&self, out: &mut String);
}

impl Sample for Counter {
    const TYPE: &'static str = "counter";
    fn render_value(&self, out: &mut String) {
        let _ = write!(out, "{}", self.get());
    }
}

impl Sample for Gauge {
    const TYPE: &'static str = "gauge";
    fn render_value(&self, out: &mut String) {
        let _ = write!(out, "{}", self.get());
    }
}

impl Sample for FloatGauge {
    const TYPE: &'static str = "gauge";
    fn render_value(&self, out: &mut String) {
        write_float(out, self.get());
    }
}

impl Sample for SecondsCounter {
    const TYPE: &'static str = "counter";
    fn render_value(&self, out: &mut String) {
        write_float(out, self.get_seconds());
    }
}

fn write_float(out: &mut String, v: f64) {
    if v.is_nan() {
        out.push_str("NaN");
    } else if v.is_infinite() {
        out.push_str(if v > 0.0 { "+Inf" } else { "-Inf" });
    } else {
        let _ = write!(out, "{v}");
    }
}

/// Label values and the metric of one series.
type Series<M> = (Vec<String>, Arc<M>);

/// A metric with labels: one series per distinct set of label values.
#[derive(Debug)]
pub struct Family<M> {
    label_names: &'static [&'static str],
    series: RwLock<BTreeMap<String, Series<M>>>,
}

impl<M: Sample> Family<M> {
    /// A family with these label names.
    pub fn new(label_names: &'static [&'static str]) -> Self {
        Family {
            label_names,
            series: RwLock::new(BTreeMap::new()),
        }
    }

    /// The series for these label values (in the order of the label names),
    /// created on first use. Keep the returned handle on hot paths to skip the
    /// lookup. Too few values are padded with "", extra ones ignored.
    pub fn with(&self, values: &[&str]) -> Arc<M> {
        let n = self.label_names.len();
        // Key: the values joined by NUL (a value containing NUL may share a series
        // with another; label values are rule ids, sink names and kinds).
        let joined;
        let key: &str = if n == 1 && values.len() == 1 {
            values[0]
        } else {
            joined = (0..n)
                .map(|i| values.get(i).copied().unwrap_or(""))
                .collect::<Vec<_>>()
                .join("\0");
            &joined
        };
        {
            let map = self.series.read().unwrap_or_else(|e| e.into_inner());
            if let Some((_, m)) = map.get(key) {
                return Arc::clone(m);
            }
        }
        let mut map = self.series.write().unwrap_or_else(|e| e.into_inner());
        let (key, vals) = if !map.contains_key(key) && map.len() >= MAX_SERIES_PER_FAMILY {
            (vec!["_other"; n].join("\0"), vec!["_other".to_owned(); n])
        } else {
            let vals = (0..n)
                .map(|i| values.get(i).copied().unwrap_or("").to_owned())
                .collect();
            (key.to_owned(), vals)
        };
        let entry = map
            .entry(key)
            .or_insert_with(|| (vals, Arc::new(M::default())));
        Arc::clone(&entry.1)
    }

    /// Label names.
    pub fn label_names(&self) -> &'static [&'static str] {
        self.label_names
    }

    /// Number of series.
    pub fn len(&self) -> usize {
        self.series.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// True if no series exists yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn snapshot(&self) -> Vec<(Vec<String>, Arc<M>)> {
        let map = self.series.read().unwrap_or_else(|e| e.into_inner());
        map.values()
            .map(|(k, v)| (k.clone(), Arc::clone(v)))
            .collect()
    }
}

/// Escapes a label value: `\` → `\\`, `"` → `\"`, newline → `\n`.
pub fn escape_label_value(v: &str, out: &mut String) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

fn escape_help(v: &str, out: &mut String) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// Writes `# HELP` and `# TYPE` lines.
pub(crate) fn header(out: &mut String, name: &str, help: &str, ty: &str) {
    out.push_str("# HELP ");
    out.push_str(PREFIX);
    out.push_str(name);
    out.push(' ');
    escape_help(help, out);
    out.push_str("\n# TYPE ");
    out.push_str(PREFIX);
    out.push_str(name);
    out.push(' ');
    out.push_str(ty);
    out.push('\n');
}

/// Renders one unlabelled metric.
pub(crate) fn render_single<M: Sample>(out: &mut String, name: &str, help: &str, m: &M) {
    header(out, name, help, M::TYPE);
    out.push_str(PREFIX);
    out.push_str(name);
    out.push(' ');
    m.render_value(out);
    out.push('\n');
}

/// Renders a family (header even when it has no series yet).
pub(crate) fn render_family<M: Sample>(out: &mut String, name: &str, help: &str, f: &Family<M>) {
    header(out, name, help, M::TYPE);
    for (values, m) in f.snapshot() {
        out.push_str(PREFIX);
        out.push_str(name);
        out.push('{');
        for (i, (k, v)) in f.label_names.iter().zip(&values).enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(k);
            out.push_str("=\"");
            escape_label_value(v, out);
            out.push('"');
        }
        out.push_str("} ");
        m.render_value(out);
        out.push('\n');
    }
}

/// Every metric the sensor exports. One instance, shared as `Arc<Metrics>`.
///
/// Names below are without the `gatewatch_` prefix; counters end in `_total`.
#[derive(Debug)]
pub struct Metrics {
    /// `packets_seen_total`: packets the TC programs looked at (mirror of the BPF counter).
    pub packets_seen: Counter,
    /// `events_total{kind}`: events decoded from the ring buffer, by event kind.
    pub events_by_kind: Family<Counter>,
    /// `ringbuf_drops_total`: ring-buffer reservation failures (events lost in the kernel).
    pub ringbuf_drops: Counter,
    /// `parse_truncations_total`: header blocks cut at the kernel parse window.
    pub parse_truncations: Counter,
    /// `capture_shed_packets_total`: payload packets (and TLS calls) left uninspected by the CPU budget.
    pub capture_shed_packets: Counter,
    /// `capture_inspected_ratio`: share 0..1 of connections inspected (1 without a budget).
    pub capture_inspected_ratio: FloatGauge,
    /// `capture_program_loaded{program}`: 1 when that capture path runs, 0
    /// when the kernel refused it or it could not attach (packet, tls, tls_endpoints).
    pub capture_program_loaded: Family<Gauge>,
    /// `rule_evaluations_total{rule}`.
    pub rule_evaluations: Family<Counter>,
    /// `rule_errors_total{rule}`: evaluations that errored or ran out of budget.
    pub rule_errors: Family<Counter>,
    /// `rule_eval_seconds_total{rule}`: time spent evaluating each rule.
    pub rule_eval_seconds: Family<SecondsCounter>,
    /// `alerts_total{rule,severity}`: alerts that passed throttling.
    pub alerts: Family<Counter>,
    /// `alerts_suppressed_total{rule}`: alerts dropped by throttling.
    pub alerts_suppressed: Family<Counter>,
    /// `sink_sent_total{sink}`: records a sink wrote or handed on.
    pub sink_sent: Family<Counter>,
    /// `sink_errors_total{sink}`: failed sink writes.
    pub sink_errors: Family<Counter>,
    /// `kafka_sent_total`: messages handed to the Kafka producer.
    pub kafka_sent: Counter,
    /// `kafka_acked_total`: messages the broker acknowledged.
    pub kafka_acked: Counter,
    /// `kafka_spooled_total`: messages written to the on-disk spool.
    pub kafka_spooled: Counter,
    /// `kafka_dropped_total`: messages lost (spool full or unrecoverable error).
    pub kafka_dropped: Counter,
    /// `kafka_retried_total`: alerts sent again after a failed or unknown delivery.
    pub kafka_retried: Counter,
    /// `kafka_spool_depth`: alerts held in the spool, not yet acknowledged.
    pub kafka_spool_depth: Gauge,
    /// `kafka_spool_bytes`: bytes those alerts take on disk.
    pub kafka_spool_bytes: Gauge,
    /// `kafka_spool_corrupt_bytes_total`: bytes of a corrupt spool tail cut off at start.
    pub kafka_spool_corrupt: Counter,
    /// `session_tracker_size`: MCP sessions currently tracked.
    pub session_tracker_size: Gauge,
    /// `mcp_sessions_issued_total`: MCP sessions the tracker saw issued.
    pub mcp_sessions_issued: Counter,
    /// `mcp_tracker_evictions_total`: sessions, ended ids, clients, flows or queued
    /// requests the MCP tracker forgot to stay within its `[mcp]` bounds.
    pub mcp_tracker_evictions: Counter,
    /// `bpf_map_pressure{map}`: fill ratio 0..1 of a BPF map.
    pub bpf_map_pressure: Family<FloatGauge>,
    /// `audit_records_total`: records appended to the audit trail.
    pub audit_records: Counter,
    /// `audit_errors_total`: failed audit appends.
    pub audit_errors: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// All metrics at zero.
    pub fn new() -> Self {
        Metrics {
            packets_seen: Counter::default(),
            events_by_kind: Family::new(&["kind"]),
            ringbuf_drops: Counter::default(),
            parse_truncations: Counter::default(),
            capture_shed_packets: Counter::default(),
            capture_inspected_ratio: {
                let g = FloatGauge::default();
                g.set(1.0);
                g
            },
            capture_program_loaded: Family::new(&["program"]),
            rule_evaluations: Family::new(&["rule"]),
            rule_errors: Family::new(&["rule"]),
            rule_eval_seconds: Family::new(&["rule"]),
            alerts: Family::new(&["rule", "severity"]),
            alerts_suppressed: Family::new(&["rule"]),
            sink_sent: Family::new(&["sink"]),
            sink_errors: Family::new(&["sink"]),
            kafka_sent: Counter::default(),
            kafka_acked: Counter::default(),
            kafka_spooled: Counter::default(),
            kafka_dropped: Counter::default(),
            kafka_retried: Counter::default(),
            kafka_spool_depth: Gauge::default(),
            kafka_spool_bytes: Gauge::default(),
            kafka_spool_corrupt: Counter::default(),
            session_tracker_size: Gauge::default(),
            mcp_sessions_issued: Counter::default(),
            mcp_tracker_evictions: Counter::default(),
            bpf_map_pressure: Family::new(&["map"]),
            audit_records: Counter::default(),
            audit_errors: Counter::default(),
        }
    }

    /// One event of `kind` decoded.
    pub fn event(&self, kind: &str) {
        self.events_by_kind.with(&[kind]).inc();
    }

    /// One evaluation of `rule` that took `took`; `ok == false` also counts an error.
    pub fn rule_evaluated(&self, rule: &str, took: Duration, ok: bool) {
        self.rule_evaluations.with(&[rule]).inc();
        self.rule_eval_seconds.with(&[rule]).add(took);
        if !ok {
            self.rule_errors.with(&[rule]).inc();
        }
    }

    /// One alert of `rule` with `severity` emitted.
    pub fn alert(&self, rule: &str, severity: &str) {
        self.alerts.with(&[rule, severity]).inc();
    }

    /// `n` alerts of `rule` suppressed by throttling.
    pub fn alerts_suppressed(&self, rule: &str, n: u64) {
        self.alerts_suppressed.with(&[rule]).add(n);
    }

    /// A sink write succeeded (`ok`) or failed.
    pub fn sink_result(&self, sink: &str, ok: bool) {
        if ok {
            self.sink_sent.with(&[sink]).inc();
        } else {
            self.sink_errors.with(&[sink]).inc();
        }
    }

    /// The whole registry in Prometheus text exposition format 0.0.4.
    pub fn render(&self) -> String {
        let mut o = String::with_capacity(4096);
        render_single(
            &mut o,
            "packets_seen_total",
            "Packets the TC programs inspected.",
            &self.packets_seen,
        );
        render_family(
            &mut o,
            "events_total",
            "Events decoded from the ring buffer, by kind.",
            &self.events_by_kind,
        );
        render_single(
            &mut o,
            "ringbuf_drops_total",
            "Events lost because the BPF ring buffer was full.",
            &self.ringbuf_drops,
        );
        render_single(
            &mut o,
            "parse_truncations_total",
            "HTTP header blocks cut at the kernel parse window.",
            &self.parse_truncations,
        );
        render_single(
            &mut o,
            "capture_shed_packets_total",
            "Payload packets and TLS calls left uninspected because capture.cpu_budget_percent was spent.",
            &self.capture_shed_packets,
        );
        render_single(
            &mut o,
            "capture_inspected_ratio",
            "Share of connections the kernel inspects (1 = all; below 1 only under a CPU budget).",
            &self.capture_inspected_ratio,
        );
        render_family(
            &mut o,
            "capture_program_loaded",
            "1 when the capture path runs, 0 when the kernel refused it or it could not attach.",
            &self.capture_program_loaded,
        );
        render_family(
            &mut o,
            "rule_evaluations_total",
            "Rule evaluations.",
            &self.rule_evaluations,
        );
        render_family(
            &mut o,
            "rule_errors_total",
            "Rule evaluations that failed or exceeded their budget.",
            &self.rule_errors,
        );
        render_family(
            &mut o,
            "rule_eval_seconds_total",
            "Seconds spent evaluating rules.",
            &self.rule_eval_seconds,
        );
        render_family(
            &mut o,
            "alerts_total",
            "Alerts emitted after throttling.",
            &self.alerts,
        );
        render_family(
            &mut o,
            "alerts_suppressed_total",
            "Alerts suppressed by throttling.",
            &self.alerts_suppressed,
        );
        render_family(
            &mut o,
            "sink_sent_total",
            "Records written by each sink.",
            &self.sink_sent,
        );
        render_family(
            &mut o,
            "sink_errors_total",
            "Failed writes of each sink.",
            &self.sink_errors,
        );
        render_single(
            &mut o,
            "kafka_sent_total",
            "Messages handed to the Kafka producer.",
            &self.kafka_sent,
        );
        render_single(
            &mut o,
            "kafka_acked_total",
            "Messages acknowledged by Kafka.",
            &self.kafka_acked,
        );
        render_single(
            &mut o,
            "kafka_spooled_total",
            "Messages written to the on-disk spool.",
            &self.kafka_spooled,
        );
        render_single(
            &mut o,
            "kafka_dropped_total",
            "Messages lost by the Kafka sink.",
            &self.kafka_dropped,
        );
        render_single(
            &mut o,
            "kafka_retried_total",
            "Alerts sent to Kafka again after a failed delivery.",
            &self.kafka_retried,
        );
        render_single(
            &mut o,
            "kafka_spool_depth",
            "Alerts in the Kafka spool not yet acknowledged.",
            &self.kafka_spool_depth,
        );
        render_single(
            &mut o,
            "kafka_spool_bytes",
            "Bytes of the alerts in the Kafka spool.",
            &self.kafka_spool_bytes,
        );
        render_single(
            &mut o,
            "kafka_spool_corrupt_bytes_total",
            "Bytes of a corrupt Kafka spool tail cut off at start.",
            &self.kafka_spool_corrupt,
        );
        render_single(
            &mut o,
            "session_tracker_size",
            "MCP sessions currently tracked.",
            &self.session_tracker_size,
        );
        render_single(
            &mut o,
            "mcp_sessions_issued_total",
            "MCP sessions the tracker saw issued.",
            &self.mcp_sessions_issued,
        );
        render_single(
            &mut o,
            "mcp_tracker_evictions_total",
            "Entries the MCP tracker forgot to stay within its bounds.",
            &self.mcp_tracker_evictions,
        );
        render_family(
            &mut o,
            "bpf_map_pressure",
            "Fill ratio (0..1) of BPF maps.",
            &self.bpf_map_pressure,
        );
        render_single(
            &mut o,
            "audit_records_total",
            "Records appended to the audit trail.",
            &self.audit_records,
        );
        render_single(
            &mut o,
            "audit_errors_total",
            "Failed audit trail appends.",
            &self.audit_errors,
        );
        header(&mut o, "build_info", "Build information.", "gauge");
        let _ = writeln!(
            o,
            "{PREFIX}build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        );
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_help_type_and_escaped_labels() {
        let m = Metrics::new();
        m.packets_seen.add(3);
        m.alert("weird\"rule\\x\ny", "high");
        m.rule_evaluated("r", Duration::from_millis(1500), false);
        m.bpf_map_pressure.with(&["conns"]).set(0.25);
        let s = m.render();
        assert!(s.contains(
            "# TYPE gatewatch_packets_seen_total counter\ngatewatch_packets_seen_total 3\n"
        ));
        assert!(
            s.contains(r#"gatewatch_alerts_total{rule="weird\"rule\\x\ny",severity="high"} 1"#),
            "{s}"
        );
        assert!(s.contains("gatewatch_rule_eval_seconds_total{rule=\"r\"} 1.5\n"));
        assert!(s.contains("gatewatch_rule_errors_total{rule=\"r\"} 1\n"));
        assert!(s.contains("gatewatch_bpf_map_pressure{map=\"conns\"} 0.25\n"));
        assert!(s.ends_with('\n'));
    }

    #[test]
    fn counter_total_never_goes_back_and_family_is_capped() {
        let c = Counter::default();
        c.set_total(10);
        c.set_total(5);
        assert_eq!(c.get(), 10);
        let f: Family<Counter> = Family::new(&["k"]);
        for i in 0..(MAX_SERIES_PER_FAMILY + 50) {
            f.with(&[&i.to_string()]).inc();
        }
        assert_eq!(f.len(), MAX_SERIES_PER_FAMILY + 1);
        assert_eq!(f.with(&["_other"]).get(), 50);
        // Wrong arity does not panic.
        f.with(&[]).inc();
        f.with(&["a", "b"]).inc();
    }
}
