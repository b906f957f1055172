//! Events per second through the whole default rule pack, with 1 and 2 worker
//! threads (one Evaluator each, shared RuleSet and RuleState), and the p50/p99
//! evaluation time per event. `cargo bench --bench rules_throughput [-- N]`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use gatewatch::alerts::SensorIdentity;
use gatewatch::events::Event;
use gatewatch::rules::{fixtures, Evaluator, RuleSet, RuleState, RulesConfig};
use serde_json::json;

// The sensor's allocator, so the numbers are the binary's.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A realistic mix: mostly clean requests and responses, some with credentials,
/// a few anomalies and scanners, and a stats event now and then.
fn corpus(n: usize) -> Vec<Event> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let t = format!(
            "2026-01-15T10:{:02}:{:02}.{:06}Z",
            (i / 60_000) % 60,
            (i / 1000) % 60,
            i % 1_000_000
        );
        let ip = format!("198.51.{}.{}", (i / 250) % 250, i % 250);
        let partial = match i % 20 {
            0 => json!({ "kind": "http_response", "time": t }),
            1..=3 => json!({ "kind": "http_response", "time": t, "http": { "status": 404 } }),
            4 => json!({ "time": t, "src": { "ip": ip }, "http": { "path": "/admin/settings" } }),
            5 => {
                json!({ "time": t, "src": { "ip": ip }, "http": { "method": "POST", "path": "/v1/chat/completions",
                 "credentials": { "authorization": { "scheme": "bearer", "length": 51, "hash": format!("{:016x}", i % 97) } } } })
            }
            6 => {
                json!({ "time": t, "src": { "ip": ip }, "http": { "headers": { "user-agent": "sqlmap/1.7", "host": "a" } } })
            }
            7 => json!({ "time": t, "src": { "ip": ip }, "http": { "anomalies": ["cl_and_te"] } }),
            8 if i % 1000 == 8 => json!({ "kind": "sensor_stats", "time": t }),
            _ => {
                json!({ "time": t, "src": { "ip": ip }, "http": { "path": format!("/api/v1/items/{i}"),
                 "headers": { "host": "api.example.com", "user-agent": "Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0",
                              "content-type": "application/json", "x-request-id": "3f2a9c" } } })
            }
        };
        out.push(fixtures::build_event(&partial, i).expect("bench event"));
    }
    out
}

fn run(
    set: &Arc<RuleSet>,
    events: &Arc<Vec<Event>>,
    workers: usize,
) -> (f64, Vec<Duration>, usize) {
    let state = Arc::new(RuleState::new(set.config()));
    let started = Instant::now();
    let handles: Vec<_> = (0..workers)
        .map(|w| {
            let set = set.clone();
            let state = state.clone();
            let events = events.clone();
            std::thread::spawn(move || {
                let mut ev = Evaluator::new(
                    set,
                    state,
                    SensorIdentity {
                        host: "bench".into(),
                        sensor_id: "bench".into(),
                    },
                );
                let mut lat = Vec::with_capacity(events.len() / workers + 1);
                let mut alerts = 0;
                for e in events.iter().skip(w).step_by(workers) {
                    let t = Instant::now();
                    alerts += ev.evaluate(e).len();
                    lat.push(t.elapsed());
                }
                (lat, alerts)
            })
        })
        .collect();
    let mut lat = Vec::new();
    let mut alerts = 0;
    for h in handles {
        let (l, a) = h.join().expect("worker");
        lat.extend(l);
        alerts += a;
    }
    let secs = started.elapsed().as_secs_f64();
    lat.sort_unstable();
    (events.len() as f64 / secs, lat, alerts)
}

fn pct(lat: &[Duration], p: f64) -> Duration {
    lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)]
}

fn main() {
    let n: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(200_000);
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../rules");
    let set = Arc::new(RuleSet::load_dir(&dir, &RulesConfig::default()).expect("default pack"));
    let events = Arc::new(corpus(n));
    println!("rules_throughput: {} rules, {} events", set.len(), n);
    // Warm-up.
    let _ = run(&set, &Arc::new(events[..n.min(20_000)].to_vec()), 1);
    for workers in [1, 2] {
        let (eps, lat, alerts) = run(&set, &events, workers);
        println!(
            "workers={workers}: {eps:>10.0} events/s  p50={:>6.2}us  p99={:>6.2}us  max={:>8.2}us  alerts={alerts}",
            pct(&lat, 0.50).as_secs_f64() * 1e6,
            pct(&lat, 0.99).as_secs_f64() * 1e6,
            lat.last().copied().unwrap_or_default().as_secs_f64() * 1e6,
        );
    }
    let stats = set.stats();
    println!("per rule (both runs): mean eval time");
    print_rule_stats(&stats);

    // The request and response the overhead bench (http_overhead.py) sends,
    // as the sensor captures them: what one gateway request costs the rules.
    let set = Arc::new(RuleSet::load_dir(&dir, &RulesConfig::default()).expect("default pack"));
    let mut ev = Evaluator::new(
        set.clone(),
        Arc::new(RuleState::new(set.config())),
        SensorIdentity {
            host: "bench".into(),
            sensor_id: "bench".into(),
        },
    );
    let req = fixtures::build_event(
        &json!({ "src": { "ip": "10.234.0.1" }, "http": { "path": "/api/v1/items?id=7",
            "headers": { "host": "10.234.0.2:8080", "user-agent": "gatewatch-bench/1" }, "header_count": 3,
            "credentials": { "authorization": { "scheme": "bearer", "length": 35, "hash": "b58ca03060dd5f26" } } } }),
        0,
    )
    .expect("request");
    let resp = fixtures::build_event(
        &json!({ "kind": "http_response", "http": { "status": 200, "content_length": 27,
            "headers": { "content-length": "27", "content-type": "application/json" } } }),
        1,
    )
    .expect("response");
    let reps = (n / 2).max(1);
    for (name, e) in [("request", &req), ("response", &resp)] {
        let started = Instant::now();
        for _ in 0..reps {
            std::hint::black_box(ev.evaluate(e));
        }
        println!(
            "bench gateway {name}: {:.2}us per event",
            started.elapsed().as_secs_f64() * 1e6 / reps as f64
        );
    }
    print_rule_stats(&set.stats());
}

fn print_rule_stats(stats: &[gatewatch::rules::RuleStatsSnapshot]) {
    for s in stats {
        if s.evaluations > 0 {
            println!(
                "  {:<14} {:>9} evals  {:>7.2}us  errors={} budget={}",
                s.rule_id,
                s.evaluations,
                s.eval_ns as f64 / s.evaluations as f64 / 1000.0,
                s.errors,
                s.budget_exceeded
            );
        }
    }
}
