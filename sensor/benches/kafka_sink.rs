//! Kafka sink throughput and latency into a local tansu broker on loopback
//! (memory storage): alerts/s sustained through the whole sink (spool append,
//! idempotent acks=all producer, lz4) until every alert is acknowledged, and
//! the p50/p99 from the alert being handed to the sink (right after the rule
//! matched) to the broker's acknowledgement, at saturation and at a steady rate.
//! A plain main: `cargo bench --bench kafka_sink`. Needs tansu
//! (integration-tests/install-tansu.sh; TANSU_BIN overrides); skips without it.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use gatewatch::metrics::Metrics;
use gatewatch::sinks::kafka::{KafkaConfig, KafkaSink};

const TOPIC: &str = "gw-bench";

fn tansu_bin() -> Option<PathBuf> {
    let p = std::env::var_os("TANSU_BIN")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .map(|h| PathBuf::from(h).join(".cache/gatewatch-tools/bin/tansu"))
        })?;
    p.exists().then_some(p)
}

struct Broker(Child);

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_broker(bin: &PathBuf) -> (Broker, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port");
    let url = format!("tcp://127.0.0.1:{port}");
    let child = Command::new(bin)
        .args([
            "broker",
            "--listener-url",
            &url,
            "--advertised-listener-url",
            &url,
        ])
        .args(["--storage-engine", "memory://tansu/"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting tansu");
    let broker = Broker(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ok = Command::new(bin)
            .args([
                "topic",
                "create",
                TOPIC,
                "--broker",
                &url,
                "--partitions",
                "3",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            break;
        }
        assert!(Instant::now() < deadline, "tansu did not come up");
        std::thread::sleep(Duration::from_millis(200));
    }
    (broker, format!("127.0.0.1:{port}"))
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// An OCSF-shaped alert of about 1.2 KB.
fn alert(i: u64) -> (String, String) {
    let id = format!("{i:032x}");
    let pad = "x".repeat(900);
    let json = format!(
        r#"{{"class_uid":2004,"severity_id":2,"time":{},"finding_info":{{"uid":"{id}","title":"bench"}},"message":"{pad}","evidences":[{{"src_endpoint":{{"ip":"10.0.{}.{}","port":40000}}}}]}}"#,
        now_ms(),
        (i / 250) % 250,
        i % 250
    );
    (id, json)
}

fn run(sink: &mut KafkaSink, metrics: &Metrics, n: u64, rate: Option<f64>, from: u64) -> f64 {
    let start = Instant::now();
    let acked0 = metrics.kafka_acked.get();
    for i in 0..n {
        if let Some(r) = rate {
            let due = start + Duration::from_secs_f64(i as f64 / r);
            if let Some(d) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(d);
            }
        }
        let (id, json) = alert(from + i);
        let key = format!("10.0.{}.{}", ((from + i) / 250) % 250, (from + i) % 250);
        sink.send_alert(now_ms(), &key, &id, &json)
            .expect("spool append");
    }
    let deadline = Instant::now() + Duration::from_secs(300);
    while metrics.kafka_acked.get() - acked0 < n && Instant::now() < deadline {
        sink.pump();
        std::thread::sleep(Duration::from_millis(1));
    }
    let elapsed = start.elapsed().as_secs_f64();
    assert_eq!(
        metrics.kafka_acked.get() - acked0,
        n,
        "not all acknowledged"
    );
    n as f64 / elapsed
}

fn main() {
    let Some(bin) = tansu_bin() else {
        println!("kafka_sink: tansu not found (run integration-tests/install-tansu.sh); skipped");
        return;
    };
    let (_broker, bootstrap) = start_broker(&bin);
    let dir = tempfile::tempdir().expect("temp dir");
    let cfg = KafkaConfig {
        spool_dir: dir.path().to_path_buf(),
        ..KafkaConfig::default()
    };
    let metrics = Arc::new(Metrics::new());
    let mut sink =
        KafkaSink::open(&bootstrap, TOPIC, None, &cfg, Arc::clone(&metrics)).expect("sink");
    // Warm-up: connections, metadata, producer id.
    run(&mut sink, &metrics, 1000, None, 0);
    sink.take_latency_percentiles();

    let n = 50_000;
    let rate = run(&mut sink, &metrics, n, None, 1_000_000);
    let (p50, p99, max) = sink.take_latency_percentiles();
    println!(
        "kafka_sink saturation: {n} alerts (~1.2 KB) in {:.0} alerts/s sustained; hand-off->ack p50 {p50} ms, p99 {p99} ms, max {max} ms",
        rate
    );
    for steady in [1000.0, 5000.0] {
        let m = (steady * 5.0) as u64;
        run(
            &mut sink,
            &metrics,
            m,
            Some(steady),
            2_000_000 + steady as u64 * 10,
        );
        let (p50, p99, max) = sink.take_latency_percentiles();
        println!(
            "kafka_sink steady {steady:.0}/s for 5 s: hand-off->ack p50 {p50} ms, p99 {p99} ms, max {max} ms"
        );
    }
    println!(
        "kafka_sink totals: sent {} acked {} retried {} dropped {}",
        metrics.kafka_sent.get(),
        metrics.kafka_acked.get(),
        metrics.kafka_retried.get(),
        metrics.kafka_dropped.get()
    );
}
