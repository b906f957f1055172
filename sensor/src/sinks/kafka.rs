//! The Kafka sink: alerts to a topic with at-least-once delivery through
//! broker outages and sensor restarts; consumers dedupe on the alert id
//! (the `alert_id` header, also `finding_info.uid` in the JSON).
//!
//! Every alert is first appended to the on-disk spool ([`Spool`]), then handed
//! to an idempotent, acks=all producer whose own thread polls for delivery
//! reports. A record leaves the spool only when the broker acknowledged it and
//! everything before it. A failed delivery rewinds sending to that record after
//! a back-off: the writer thread never blocks on the broker. A fatal producer
//! error (e.g. a fresh broker that lost the idempotence state) recreates the
//! producer and resends from the spool's head.
//!
//! Raw events (off by default) go to their own topic, best effort: not spooled.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use crossbeam_channel::{Receiver, Sender};
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::ClientContext;
use serde::Deserialize;

use super::spool::Spool;
use crate::metrics::Metrics;

/// Opaque of a best-effort event message (alerts carry their spool offset).
const EVENT_OPAQUE: usize = usize::MAX;
/// Deliveries failing this long with no acknowledgement in between: start a
/// new producer. A fresh broker (e.g. memory storage after a restart) may not
/// know the producer id and reject it for ever without librdkafka calling it
/// fatal; during a plain outage a new producer costs nothing.
const RECREATE_AFTER: Duration = Duration::from_secs(15);
/// Latency samples kept for the p50/p99 in the shutdown summary.
const LATENCY_SAMPLES: usize = 200_000;

/// `[kafka]`: settings shared by every Kafka output.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// librdkafka properties passed through as they are: TLS (`security.protocol`,
    /// `ssl.ca.location`, …), SASL (`sasl.mechanism`, `sasl.username`,
    /// `sasl.password`), tuning. Values are never logged.
    pub properties: BTreeMap<String, String>,
    /// Where the spool lives (`{state_dir}` expands).
    pub spool_dir: PathBuf,
    /// Bound of one topic's spool in MiB; when full the oldest alerts go (counted).
    pub spool_max_mb: u64,
    /// On shutdown, how long to wait for acknowledgements before leaving the
    /// rest in the spool for the next start.
    pub flush_timeout_ms: u64,
    /// Alerts handed to the producer and not yet acknowledged, at most.
    pub max_in_flight: usize,
    /// Wait after a failed delivery before sending again from the spool.
    pub retry_backoff_ms: u64,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            properties: BTreeMap::new(),
            spool_dir: PathBuf::from("{state_dir}/kafka-spool"),
            spool_max_mb: 256,
            flush_timeout_ms: 5000,
            max_in_flight: 10_000,
            retry_backoff_ms: 1000,
        }
    }
}

// Property values may be secrets (sasl.password, ssl.key.password): keys only.
impl fmt::Debug for KafkaConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaConfig")
            .field("properties", &self.properties.keys().collect::<Vec<_>>())
            .field("spool_dir", &self.spool_dir)
            .field("spool_max_mb", &self.spool_max_mb)
            .field("flush_timeout_ms", &self.flush_timeout_ms)
            .field("max_in_flight", &self.max_in_flight)
            .field("retry_backoff_ms", &self.retry_backoff_ms)
            .finish()
    }
}

impl KafkaConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.spool_max_mb == 0 {
            return Err("kafka.spool_max_mb must be at least 1".into());
        }
        if self.max_in_flight == 0 {
            return Err("kafka.max_in_flight must be at least 1".into());
        }
        for key in ["bootstrap.servers", "enable.idempotence", "acks"] {
            if self.properties.contains_key(key) {
                return Err(format!(
                    "kafka.properties.\"{key}\" is set by gatewatch (brokers come from the output spec; idempotence and acks=all are how nothing is lost)"
                ));
            }
        }
        Ok(())
    }
}

/// A delivery report, passed from the producer's thread to the writer.
struct Delivery {
    generation: u64,
    offset: usize,
    error: Option<String>,
    at_ms: i64,
}

struct DeliveryContext {
    generation: u64,
    tx: Sender<Delivery>,
    metrics: Arc<Metrics>,
    events_sink: String,
}

impl ClientContext for DeliveryContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, msg: &str) {
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => tracing::error!(target: "librdkafka", "{fac}: {msg}"),
            RDKafkaLogLevel::Warning => tracing::warn!(target: "librdkafka", "{fac}: {msg}"),
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                tracing::info!(target: "librdkafka", "{fac}: {msg}")
            }
            RDKafkaLogLevel::Debug => tracing::debug!(target: "librdkafka", "{fac}: {msg}"),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        // Broker down and the like: deliveries fail and are retried from the spool.
        tracing::warn!(target: "librdkafka", "{error}: {reason}");
    }
}

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, offset: usize) {
        if offset == EVENT_OPAQUE {
            self.metrics.sink_result(&self.events_sink, result.is_ok());
            return;
        }
        let error = result.as_ref().err().map(|(e, _)| e.to_string());
        // The writer may be gone during shutdown: the record stays in the spool.
        let _ = self.tx.send(Delivery {
            generation: self.generation,
            offset,
            error,
            at_ms: now_ms(),
        });
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

pub struct KafkaSink {
    brokers: String,
    topic: String,
    events_topic: String,
    cfg: KafkaConfig,
    metrics: Arc<Metrics>,
    producer: ThreadedProducer<DeliveryContext>,
    generation: u64,
    tx: Sender<Delivery>,
    rx: Receiver<Delivery>,
    spool: Spool,
    /// Next spool offset to hand to the producer.
    send_pos: u64,
    /// Highest offset ever handed on: below it a send is a retry.
    sent_high: u64,
    /// Offsets handed to the producer and not yet reported, with copies and event time.
    in_flight: BTreeMap<u64, (u32, i64)>,
    in_flight_count: usize,
    retry_at: Option<Instant>,
    /// First failed delivery since the last acknowledgement.
    failing_since: Option<Instant>,
    drops_to_report: u64,
    latencies_ms: Vec<u32>,
}

impl KafkaSink {
    pub fn open(
        brokers: &str,
        topic: &str,
        events_topic: Option<&str>,
        cfg: &KafkaConfig,
        metrics: Arc<Metrics>,
    ) -> Result<KafkaSink> {
        let (spool, report) = Spool::open(&cfg.spool_dir, topic, cfg.spool_max_mb << 20)
            .with_context(|| {
                format!("opening the Kafka spool for topic {topic} (kafka.spool_dir)")
            })?;
        if report.corrupt_bytes > 0 {
            tracing::warn!(
                spool = %spool.path().display(),
                bytes = report.corrupt_bytes,
                "Kafka spool: a corrupt or torn tail was cut off (alerts in it are lost)"
            );
            metrics.kafka_spool_corrupt.add(report.corrupt_bytes);
        }
        if report.records > 0 {
            tracing::info!(
                records = report.records,
                "Kafka spool: sending alerts held from the last run first"
            );
        }
        let (tx, rx) = crossbeam_channel::unbounded();
        let events_topic = events_topic
            .map(str::to_string)
            .unwrap_or_else(|| format!("{topic}-events"));
        let producer = create_producer(
            brokers,
            cfg,
            0,
            tx.clone(),
            &metrics,
            &format!("kafka:{events_topic}"),
        )?;
        let head = spool.head();
        let mut sink = KafkaSink {
            brokers: brokers.to_string(),
            topic: topic.to_string(),
            events_topic,
            cfg: cfg.clone(),
            metrics,
            producer,
            generation: 0,
            tx,
            rx,
            spool,
            send_pos: head,
            sent_high: head,
            in_flight: BTreeMap::new(),
            in_flight_count: 0,
            retry_at: None,
            failing_since: None,
            drops_to_report: 0,
            latencies_ms: Vec::new(),
        };
        sink.publish_depth();
        sink.pump();
        Ok(sink)
    }

    /// Appends an alert to the spool and sends what the producer will take.
    pub fn send_alert(&mut self, time_ms: i64, key: &str, id: &str, json: &str) -> Result<()> {
        let (offset, dropped) = self
            .spool
            .append(time_ms, key, id, json.as_bytes())
            .context("Kafka spool")?;
        if dropped > 0 {
            self.metrics.kafka_dropped.add(dropped);
            self.drops_to_report += dropped;
            tracing::warn!(
                dropped,
                "Kafka spool full (kafka.spool_max_mb): oldest alerts dropped"
            );
        }
        self.pump();
        if offset.is_some_and(|o| o >= self.send_pos) {
            // Not handed on at once: broker down, backing off, or queue full.
            self.metrics.kafka_spooled.inc();
        }
        Ok(())
    }

    /// A raw event: best effort, to the events topic, never spooled.
    pub fn send_event(&mut self, json: &str) {
        let record = BaseRecord::with_opaque_to(&self.events_topic, EVENT_OPAQUE)
            .payload(json)
            .headers(OwnedHeaders::new().insert(Header {
                key: "kind",
                value: Some("event"),
            }));
        if self.producer.send::<(), str>(record).is_err() {
            self.metrics
                .sink_result(&format!("kafka:{}", self.events_topic), false);
        }
    }

    /// False while deliveries fail with no acknowledgement since (for /healthz).
    pub fn delivering(&self) -> bool {
        self.failing_since.is_none()
    }

    /// Alerts dropped since the last call (for the drop alert).
    pub fn take_drops(&mut self) -> u64 {
        std::mem::take(&mut self.drops_to_report)
    }

    /// Handles delivery reports and hands spooled alerts to the producer.
    pub fn pump(&mut self) {
        self.drain_reports();
        self.recover_from_fatal();
        if let Some(at) = self.retry_at {
            if Instant::now() < at {
                return;
            }
            self.retry_at = None;
        }
        self.send_pos = self.send_pos.max(self.spool.head());
        while self.send_pos < self.spool.end() && self.in_flight_count < self.cfg.max_in_flight {
            let rec = match self.spool.read_at(self.send_pos) {
                Ok(r) => r,
                Err(e) => {
                    // Only an edited or failing disk gets here: count, skip, go on.
                    tracing::error!("{e}; the record is skipped");
                    self.metrics.kafka_dropped.inc();
                    self.drops_to_report += 1;
                    let next = self.spool.next_offset(self.send_pos);
                    self.spool.forget(self.send_pos);
                    self.send_pos = next;
                    continue;
                }
            };
            let headers = OwnedHeaders::new()
                .insert(Header {
                    key: "alert_id",
                    value: Some(rec.id.as_str()),
                })
                .insert(Header {
                    key: "kind",
                    value: Some("alert"),
                });
            let record = BaseRecord::with_opaque_to(&self.topic, rec.offset as usize)
                .key(rec.key.as_str())
                .payload(rec.payload.as_slice())
                .headers(headers);
            match self.producer.send(record) {
                Ok(()) => {
                    let entry = self.in_flight.entry(rec.offset).or_insert((0, rec.time_ms));
                    entry.0 += 1;
                    self.in_flight_count += 1;
                    self.metrics.kafka_sent.inc();
                    if rec.offset < self.sent_high {
                        self.metrics.kafka_retried.inc();
                    }
                    self.send_pos = self.spool.next_offset(rec.offset);
                    self.sent_high = self.sent_high.max(self.send_pos);
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => break,
                Err((e, _)) => {
                    tracing::warn!("Kafka producer refused an alert ({e}); it stays in the spool");
                    self.back_off();
                    break;
                }
            }
        }
        self.publish_depth();
    }

    fn back_off(&mut self) {
        self.retry_at = Some(Instant::now() + Duration::from_millis(self.cfg.retry_backoff_ms));
    }

    fn drain_reports(&mut self) {
        let mut failed: Option<(u64, String)> = None;
        while let Ok(d) = self.rx.try_recv() {
            if d.generation != self.generation {
                continue;
            }
            let offset = d.offset as u64;
            let mut time_ms = None;
            if let Some(entry) = self.in_flight.get_mut(&offset) {
                time_ms = Some(entry.1);
                entry.0 -= 1;
                if entry.0 == 0 {
                    self.in_flight.remove(&offset);
                }
                self.in_flight_count = self.in_flight_count.saturating_sub(1);
            }
            match d.error {
                None => {
                    self.failing_since = None;
                    self.metrics.kafka_acked.inc();
                    if let (Some(t), true) = (time_ms, self.latencies_ms.len() < LATENCY_SAMPLES) {
                        self.latencies_ms
                            .push((d.at_ms - t).clamp(0, u32::MAX as i64) as u32);
                    }
                }
                // Another copy may have been acknowledged already: only what
                // is still held is sent again.
                Some(err) if offset >= self.spool.head() => {
                    if failed.as_ref().is_none_or(|(o, _)| offset < *o) {
                        failed = Some((offset, err));
                    }
                }
                Some(_) => {}
            }
        }
        if let Some((offset, err)) = failed {
            if self.retry_at.is_none() {
                tracing::warn!(
                    "Kafka delivery failed ({err}); alerts stay in the spool and are resent in {} ms",
                    self.cfg.retry_backoff_ms
                );
            }
            self.send_pos = self.send_pos.min(offset);
            self.back_off();
            let since = *self.failing_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= RECREATE_AFTER {
                self.recreate_producer(&format!(
                    "deliveries failing for {} s with no acknowledgement",
                    since.elapsed().as_secs()
                ));
                self.failing_since = Some(Instant::now());
            }
        }
        let first_in_flight = self.in_flight.keys().next().copied().unwrap_or(u64::MAX);
        self.spool
            .release_before(first_in_flight.min(self.send_pos));
    }

    fn recover_from_fatal(&mut self) {
        if let Some((code, reason)) = self.producer.client().fatal_error() {
            self.recreate_producer(&format!("fatal error {code:?}: {reason}"));
        }
    }

    /// A new producer (new producer id); unacknowledged alerts are resent from the spool.
    fn recreate_producer(&mut self, why: &str) {
        tracing::warn!(
            "Kafka producer: {why}; starting a new one and resending unacknowledged alerts from the spool"
        );
        let generation = self.generation + 1;
        match create_producer(
            &self.brokers,
            &self.cfg,
            generation,
            self.tx.clone(),
            &self.metrics,
            &format!("kafka:{}", self.events_topic),
        ) {
            Ok(p) => {
                self.producer = p;
                self.generation = generation;
                self.in_flight.clear();
                self.in_flight_count = 0;
                self.send_pos = self.spool.head();
            }
            Err(e) => {
                tracing::error!("recreating the Kafka producer: {e:#}");
                self.back_off();
            }
        }
    }

    fn publish_depth(&self) {
        self.metrics
            .kafka_spool_depth
            .set(self.spool.depth() as i64);
        self.metrics
            .kafka_spool_bytes
            .set(self.spool.bytes() as i64);
    }

    /// Once a second: progress, the head on disk, space back, data synced.
    pub fn tick(&mut self) {
        self.pump();
        if let Err(e) = self
            .spool
            .persist_head()
            .and_then(|_| self.spool.compact())
            .and_then(|_| self.spool.sync())
        {
            tracing::error!("{e}");
        }
    }

    /// p50, p99 and max of hand-off→ack latencies (ms) since the last call.
    pub fn take_latency_percentiles(&mut self) -> (u32, u32, u32) {
        let r = percentiles(&mut self.latencies_ms);
        self.latencies_ms.clear();
        r
    }

    /// Waits up to `flush_timeout_ms` for acknowledgements; the rest stays
    /// in the spool for the next start.
    pub fn close(&mut self) {
        let deadline = Instant::now() + Duration::from_millis(self.cfg.flush_timeout_ms);
        self.retry_at = None;
        loop {
            self.pump();
            let done = self.in_flight_count == 0 && self.send_pos >= self.spool.end();
            if done || Instant::now() >= deadline || self.retry_at.is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        // Raw events still queued get the rest of the time (then are purged).
        let left = deadline.saturating_duration_since(Instant::now());
        let _ = self.producer.flush(left.max(Duration::from_millis(200)));
        self.drain_reports();
        if let Err(e) = self.spool.persist_head().and_then(|_| self.spool.sync()) {
            tracing::error!("{e}");
        }
        let (p50, p99, max) = percentiles(&mut self.latencies_ms);
        tracing::info!(
            topic = %self.topic,
            sent = self.metrics.kafka_sent.get(),
            acked = self.metrics.kafka_acked.get(),
            retried = self.metrics.kafka_retried.get(),
            spooled = self.metrics.kafka_spooled.get(),
            dropped = self.metrics.kafka_dropped.get(),
            left_in_spool = self.spool.depth(),
            latency_p50_ms = p50,
            latency_p99_ms = p99,
            latency_max_ms = max,
            "kafka sink closed"
        );
    }
}

// Shutdown (the writer's pipeline is dropped): wait for acks, keep the rest.
impl Drop for KafkaSink {
    fn drop(&mut self) {
        self.close();
    }
}

fn percentiles(v: &mut [u32]) -> (u32, u32, u32) {
    if v.is_empty() {
        return (0, 0, 0);
    }
    v.sort_unstable();
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    (at(0.5), at(0.99), v[v.len() - 1])
}

fn create_producer(
    brokers: &str,
    cfg: &KafkaConfig,
    generation: u64,
    tx: Sender<Delivery>,
    metrics: &Arc<Metrics>,
    events_sink: &str,
) -> Result<ThreadedProducer<DeliveryContext>> {
    let mut cc = ClientConfig::new();
    // Defaults a SIEM feed wants; `kafka.properties` may tune all but the
    // three that make delivery safe (checked in validate).
    let defaults: HashMap<&str, &str> = [
        ("compression.type", "lz4"),
        ("linger.ms", "5"),
        ("message.timeout.ms", "10000"),
        ("socket.keepalive.enable", "true"),
        ("client.id", "gatewatch"),
    ]
    .into_iter()
    .collect();
    for (k, v) in &defaults {
        cc.set(*k, *v);
    }
    for (k, v) in &cfg.properties {
        cc.set(k, v);
    }
    cc.set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all");
    let context = DeliveryContext {
        generation,
        tx,
        metrics: Arc::clone(metrics),
        events_sink: events_sink.to_string(),
    };
    // librdkafka's message names the property, never its value.
    cc.create_with_context(context)
        .map_err(|e| anyhow::anyhow!("creating the Kafka producer for {brokers}: {e}"))
}

#[cfg(test)]
mod tests;
