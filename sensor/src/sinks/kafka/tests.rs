//! Fault injection against librdkafka's in-process mock cluster: broker down,
//! request errors, a slow broker, a restart with a non-empty spool. Deadlines
//! are generous bounds for progress, never timing assertions.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};

use super::*;

const TOPIC: &str = "alerts";

fn cluster() -> MockCluster<'static, DefaultProducerContext> {
    let c = MockCluster::new(1).unwrap();
    c.create_topic(TOPIC, 2, 1).unwrap();
    c
}

fn config(dir: &std::path::Path) -> KafkaConfig {
    let mut cfg = KafkaConfig {
        spool_dir: dir.to_path_buf(),
        retry_backoff_ms: 100,
        flush_timeout_ms: 300,
        ..KafkaConfig::default()
    };
    cfg.properties
        .insert("message.timeout.ms".into(), "1500".into());
    cfg
}

fn alert_json(i: usize) -> (String, String) {
    let id = format!("{i:032x}");
    (
        id.clone(),
        format!("{{\"finding_info\":{{\"uid\":\"{id}\"}},\"n\":{i}}}"),
    )
}

fn send(sink: &mut KafkaSink, range: std::ops::Range<usize>) {
    for i in range {
        let (id, json) = alert_json(i);
        sink.send_alert(0, &format!("10.0.0.{}", i % 3), &id, &json)
            .unwrap();
    }
}

/// Pumps the sink until `want` acknowledgements (bounded).
fn wait_acked(sink: &mut KafkaSink, metrics: &Metrics, want: u64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while metrics.kafka_acked.get() < want && Instant::now() < deadline {
        sink.tick();
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        metrics.kafka_acked.get() >= want,
        "acked {} of {want}",
        metrics.kafka_acked.get()
    );
}

/// Every alert id on the topic, with the key and headers checked.
fn consume_ids(bootstrap: &str, want: usize) -> Vec<String> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "gw-test")
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    consumer.subscribe(&[TOPIC]).unwrap();
    let mut ids = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while ids.len() < want && Instant::now() < deadline {
        let Some(msg) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let msg = msg.unwrap();
        let headers = msg.headers().unwrap();
        let id = headers
            .iter()
            .find(|h| h.key == "alert_id")
            .and_then(|h| h.value)
            .map(|v| String::from_utf8_lossy(v).to_string())
            .unwrap();
        let kind = headers
            .iter()
            .find(|h| h.key == "kind")
            .and_then(|h| h.value);
        assert_eq!(kind, Some(&b"alert"[..]));
        let n = u32::from_str_radix(&id, 16).unwrap();
        assert_eq!(msg.key(), Some(format!("10.0.0.{}", n % 3).as_bytes()));
        let body: serde_json::Value = serde_json::from_slice(msg.payload().unwrap()).unwrap();
        assert_eq!(body["finding_info"]["uid"], id.as_str());
        ids.push(id);
    }
    ids
}

fn assert_all_delivered(ids: &[String], n: usize) {
    let unique: HashSet<&String> = ids.iter().collect();
    for i in 0..n {
        assert!(unique.contains(&alert_json(i).0), "alert {i} lost");
    }
}

#[test]
fn delivers_every_alert_keyed_with_id_header() {
    let c = cluster();
    let dir = tempfile::tempdir().unwrap();
    let metrics = Arc::new(Metrics::new());
    let mut sink = KafkaSink::open(
        &c.bootstrap_servers(),
        TOPIC,
        None,
        &config(dir.path()),
        Arc::clone(&metrics),
    )
    .unwrap();
    send(&mut sink, 0..500);
    wait_acked(&mut sink, &metrics, 500);
    sink.tick();
    assert_eq!(metrics.kafka_spool_depth.get(), 0);
    assert_eq!(metrics.kafka_dropped.get(), 0);
    drop(sink);
    let ids = consume_ids(&c.bootstrap_servers(), 500);
    assert_eq!(
        ids.len(),
        500,
        "idempotent producer, no failures: no duplicates"
    );
    assert_all_delivered(&ids, 500);
}

#[test]
fn broker_down_spools_and_resends_when_it_returns() {
    let c = cluster();
    let dir = tempfile::tempdir().unwrap();
    let metrics = Arc::new(Metrics::new());
    let mut sink = KafkaSink::open(
        &c.bootstrap_servers(),
        TOPIC,
        None,
        &config(dir.path()),
        Arc::clone(&metrics),
    )
    .unwrap();
    send(&mut sink, 0..50);
    wait_acked(&mut sink, &metrics, 50);
    c.broker_down(1).unwrap();
    send(&mut sink, 50..300);
    // Past message.timeout.ms the deliveries fail and the alerts stay spooled.
    let deadline = Instant::now() + Duration::from_secs(30);
    while metrics.kafka_retried.get() == 0 && Instant::now() < deadline {
        sink.tick();
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        metrics.kafka_retried.get() > 0,
        "failed deliveries are sent again"
    );
    assert!(metrics.kafka_spool_depth.get() > 0);
    c.broker_up(1).unwrap();
    wait_acked(&mut sink, &metrics, 300);
    let deadline = Instant::now() + Duration::from_secs(30);
    while metrics.kafka_spool_depth.get() > 0 && Instant::now() < deadline {
        sink.tick();
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(metrics.kafka_spool_depth.get(), 0);
    drop(sink);
    let ids = consume_ids(&c.bootstrap_servers(), 300);
    assert_all_delivered(&ids, 300);
}

#[test]
fn produce_request_errors_and_a_slow_broker_lose_nothing() {
    let c = cluster();
    c.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS; 8],
    );
    c.broker_round_trip_time(1, Duration::from_millis(300))
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let metrics = Arc::new(Metrics::new());
    let mut sink = KafkaSink::open(
        &c.bootstrap_servers(),
        TOPIC,
        None,
        &config(dir.path()),
        Arc::clone(&metrics),
    )
    .unwrap();
    send(&mut sink, 0..200);
    wait_acked(&mut sink, &metrics, 200);
    drop(sink);
    let ids = consume_ids(&c.bootstrap_servers(), 200);
    assert_all_delivered(&ids, 200);
}

#[test]
fn restart_sends_the_spool_left_by_the_last_run_first() {
    let c = cluster();
    let dir = tempfile::tempdir().unwrap();
    c.broker_down(1).unwrap();
    {
        let metrics = Arc::new(Metrics::new());
        let mut sink = KafkaSink::open(
            &c.bootstrap_servers(),
            TOPIC,
            None,
            &config(dir.path()),
            Arc::clone(&metrics),
        )
        .unwrap();
        send(&mut sink, 0..120);
        drop(sink);
        assert_eq!(
            metrics.kafka_spool_depth.get(),
            120,
            "unacknowledged alerts stay on disk"
        );
    }
    c.broker_up(1).unwrap();
    let metrics = Arc::new(Metrics::new());
    let mut sink = KafkaSink::open(
        &c.bootstrap_servers(),
        TOPIC,
        None,
        &config(dir.path()),
        Arc::clone(&metrics),
    )
    .unwrap();
    send(&mut sink, 120..130);
    wait_acked(&mut sink, &metrics, 130);
    drop(sink);
    let ids = consume_ids(&c.bootstrap_servers(), 130);
    assert_all_delivered(&ids, 130);
    // The spool is sent in order: the first run's alerts come before the new ones
    // on each partition (one key stays on one partition).
    let pos = |i: usize| ids.iter().position(|x| *x == alert_json(i).0).unwrap();
    assert!(pos(0) < pos(120) || pos(0) < pos(121) || pos(0) < pos(122));
}

#[test]
fn secrets_in_properties_are_not_in_debug_output() {
    let mut cfg = KafkaConfig::default();
    cfg.properties
        .insert("sasl.password".into(), "hunter2-secret".into());
    let s = format!("{cfg:?}");
    assert!(s.contains("sasl.password") && !s.contains("hunter2"), "{s}");
    cfg.properties.insert("acks".into(), "1".into());
    assert!(cfg.validate().is_err());
}

#[test]
fn full_spool_drops_oldest_and_reports_it_as_an_alert() {
    let c = cluster();
    c.broker_down(1).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = KafkaConfig {
        spool_max_mb: 1,
        ..config(dir.path())
    };
    let metrics = Arc::new(Metrics::new());
    let mut sink = KafkaSink::open(
        &c.bootstrap_servers(),
        TOPIC,
        None,
        &cfg,
        Arc::clone(&metrics),
    )
    .unwrap();
    let pad = "p".repeat(2000);
    for i in 0..1000 {
        let (id, _) = alert_json(i);
        sink.send_alert(0, "10.0.0.1", &id, &format!("{{\"pad\":\"{pad}\"}}"))
            .unwrap();
    }
    let dropped = sink.take_drops();
    assert!(dropped > 0);
    assert_eq!(metrics.kafka_dropped.get(), dropped);
    assert!(metrics.kafka_spool_bytes.get() <= 1 << 20);
    let alert = crate::alerts::delivery_drop_alert(dropped);
    assert_eq!(alert.rule_id(), "GW-SENSOR-002");
    let schema: serde_json::Value =
        serde_json::from_str(include_str!("../../../../schemas/alert.schema.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&alert.to_json()).unwrap();
    assert!(jsonschema::validator_for(&schema).unwrap().is_valid(&v));
    assert_eq!(v["gatewatch"]["fields"]["alerts_dropped"], dropped);
}

#[test]
fn events_go_to_their_own_topic_with_kind_event() {
    let c = cluster();
    c.create_topic("alerts-events", 1, 1).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let metrics = Arc::new(Metrics::new());
    let cfg = KafkaConfig {
        flush_timeout_ms: 30_000,
        ..config(dir.path())
    };
    let mut sink = KafkaSink::open(
        &c.bootstrap_servers(),
        TOPIC,
        None,
        &cfg,
        Arc::clone(&metrics),
    )
    .unwrap();
    for i in 0..5 {
        sink.send_event(&format!("{{\"kind\":\"http_request\",\"n\":{i}}}"));
    }
    drop(sink);
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", c.bootstrap_servers())
        .set("group.id", "gw-test-events")
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    consumer.subscribe(&["alerts-events"]).unwrap();
    let mut got = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while got < 5 && Instant::now() < deadline {
        if let Some(Ok(msg)) = consumer.poll(Duration::from_millis(200)) {
            let kind = msg
                .headers()
                .and_then(|h| h.iter().find(|h| h.key == "kind").and_then(|h| h.value));
            assert_eq!(kind, Some(&b"event"[..]));
            got += 1;
        }
    }
    assert_eq!(got, 5, "{}", metrics.render());
    // Events are best effort: never in the alerts spool.
    assert_eq!(metrics.kafka_spooled.get() + metrics.kafka_sent.get(), 0);
}
