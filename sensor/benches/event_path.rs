//! What one captured HTTP message costs the sensor process, stage by stage,
//! for the request and response `integration-tests/bench/http_overhead.py`
//! sends (a GET with a bearer token, a query string and a User-Agent; a 200
//! with a JSON body), through the default rule pack and a JSONL output.
//!
//! Stages, each timed alone over the same events, then the chain end to end
//! on one thread:
//!   decode      kernel record bytes -> typed Event
//!   tracker     MCP session tracker (capture order, before sharding)
//!   queue       shard + bounded channel hand-off to a worker
//!   rules       the default pack (pre-filter, Rhai where it can fire)
//!   serialise   Event -> one JSON line
//!   writer      metrics, the JSONL output (buffered, flushed every 256)
//!
//! `cargo bench --bench event_path [-- N]` (N events per stage, default 200000).
//! Also prints heap allocations per event per stage (a counting allocator).

use std::alloc::{GlobalAlloc, Layout};
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use gatewatch::alerts::SensorIdentity;
use gatewatch::capture::decode::Decoder;
use gatewatch::capture::headers::{HeaderTable, DEFAULT_HEADERS};
use gatewatch::capture::skel::types::gw_http_event;
use gatewatch::cli::pipeline::Pipeline;
use gatewatch::events::{CaptureSource, Event};
use gatewatch::mcp::Tracker;
use gatewatch::metrics::{Health, Metrics};
use gatewatch::rules::{Evaluator, RuleSet, RuleState, RulesConfig};
use gatewatch::sinks::{OutputConfig, OutputSpec};

/// mimalloc (the sensor's allocator), counting allocations.
struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded as is.
        unsafe { mimalloc::MiMalloc.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: forwarded as is.
        unsafe { mimalloc::MiMalloc.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded as is.
        unsafe { mimalloc::MiMalloc.realloc(p, l, n) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn put(dst: &mut [i8], s: &[u8]) -> usize {
    let n = s.len().min(dst.len());
    for (d, b) in dst.iter_mut().zip(&s[..n]) {
        *d = *b as i8;
    }
    n
}

/// The kernel's record of the bench's request or response.
fn record(table: &HeaderTable, response: bool, i: u32) -> Vec<u8> {
    let mut r = gw_http_event::default();
    r.hdr.kind = if response { 2 } else { 1 };
    r.hdr.ts_boot_ns = 1_000_000_000 + u64::from(i) * 10_000;
    r.hdr.ifindex = 0;
    r.hdr.ip_version = 4;
    let (client, server) = ([10, 234, 0, 1], [10, 234, 0, 2]);
    let (s, d) = if response {
        (server, client)
    } else {
        (client, server)
    };
    r.hdr.saddr[..4].copy_from_slice(&s);
    r.hdr.daddr[..4].copy_from_slice(&d);
    let port = 40_000 + (i % 64) as u16;
    (r.hdr.sport, r.hdr.dport) = if response { (8080, port) } else { (port, 8080) };
    r.version_minor = 1;
    r.segments = 1;
    let mut header = |name: &str, value: &str| {
        if let Some(slot) = table.slot_names.iter().position(|n| n == name) {
            let h = &mut r.hdrs[slot];
            h.present = 1;
            h.len = put(&mut h.value, value.as_bytes()) as u8;
        }
    };
    if response {
        header("content-type", "application/json");
        header("content-length", "27");
        r.status = 200;
        r.is_response = 1;
        r.header_count = 5;
        r.header_bytes = 160;
        r.content_length = 27;
    } else {
        header("host", "10.234.0.2:8080");
        header("user-agent", "gatewatch-bench/1");
        r.method_len = put(&mut r.method, b"GET") as u8;
        r.path_len = put(&mut r.path, b"/api/v1/items?id=7") as u16;
        r.header_count = 3;
        r.header_bytes = 120;
        r.creds[0].present = 1;
        r.creds[0].scheme = 1;
        r.creds[0].len = 35;
        r.creds[0].hash = 0xb58c_a030_60dd_5f26;
    }
    // SAFETY: a plain-old-data struct viewed as its bytes.
    let bytes = unsafe {
        std::slice::from_raw_parts(
            (&r as *const gw_http_event).cast::<u8>(),
            std::mem::size_of::<gw_http_event>(),
        )
    };
    bytes.to_vec()
}

struct Stage {
    name: &'static str,
    ns: f64,
    allocs: f64,
}

fn time<F: FnMut(usize)>(name: &'static str, n: usize, mut f: F) -> Stage {
    let a0 = ALLOCS.load(Ordering::Relaxed);
    let t = Instant::now();
    for i in 0..n {
        f(i);
    }
    let ns = t.elapsed().as_nanos() as f64 / n as f64;
    let allocs = (ALLOCS.load(Ordering::Relaxed) - a0) as f64 / n as f64;
    Stage { name, ns, allocs }
}

fn main() {
    let n: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(200_000);
    let table = HeaderTable::new(&DEFAULT_HEADERS).expect("default headers");
    let records: Vec<Vec<u8>> = (0..1024u32)
        .map(|i| record(&table, i % 2 == 1, i))
        .collect();
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../rules");
    let rules_cfg = RulesConfig::default();
    let set = Arc::new(RuleSet::load_dir(&dir, &rules_cfg).expect("default pack"));
    let sensor = SensorIdentity {
        host: "bench".into(),
        sensor_id: "bench".into(),
    };
    let mut decoder = Decoder::new(table.slot_names.clone(), CaptureSource::Net);
    let events: Vec<Event> = records
        .iter()
        .map(|r| decoder.decode(r, None).expect("bench record"))
        .collect();
    let mut tracker = Tracker::new(&Default::default());
    let mut eval = Evaluator::new(set.clone(), Arc::new(RuleState::new(&rules_cfg)), sensor);
    let out_dir = tempfile::tempdir().expect("tempdir");
    let metrics = Arc::new(Metrics::new());
    let health = Arc::new(Health::new(
        std::time::Duration::from_secs(60),
        std::time::Duration::from_secs(60),
    ));
    let mut pipeline = Pipeline::new(
        &[OutputConfig::from_spec(OutputSpec::Jsonl(
            out_dir.path().join("events.jsonl"),
        ))],
        metrics,
        health,
        None,
    )
    .expect("pipeline");
    let (tx, rx) = crossbeam_channel::bounded::<Event>(4096);
    let lines: Vec<String> = events
        .iter()
        .map(|e| serde_json::to_string(e).expect("json"))
        .collect();
    let pick = |i: usize| i % events.len();

    // Warm-up: caches, the throttle, the rule state.
    for e in events.iter().cycle().take(20_000) {
        black_box(eval.evaluate(e));
    }
    let stages = vec![
        time("decode", n, |i| {
            black_box(decoder.decode(&records[pick(i)], None).ok());
        }),
        time("tracker", n, |i| {
            let mut e = events[pick(i)].clone();
            tracker.observe(&mut e);
            black_box(e);
        }),
        time("queue", n, |i| {
            let _ = tx.send(events[pick(i)].clone());
            black_box(rx.recv().ok());
        }),
        time("rules", n, |i| {
            black_box(eval.evaluate(&events[pick(i)]));
        }),
        time("serialise", n, |i| {
            black_box(serde_json::to_string(&events[pick(i)]).ok());
        }),
        time("writer", n, |i| {
            let e = &events[pick(i)];
            pipeline.handle(e.kind, Some(&lines[pick(i)]), &[]);
            if i % 256 == 0 {
                pipeline.flush();
            }
        }),
    ];
    // The clone the tracker and queue stages make is not a cost of the sensor.
    let clone = time("(event clone)", n, |i| {
        black_box(events[pick(i)].clone());
    });
    println!(
        "event_path: {n} events per stage, half requests half responses, {} rules",
        set.len()
    );
    let mut sum = 0.0;
    let mut allocs = 0.0;
    for s in &stages {
        let (ns, a) = if s.name == "tracker" || s.name == "queue" {
            (
                (s.ns - clone.ns).max(0.0),
                (s.allocs - clone.allocs).max(0.0),
            )
        } else {
            (s.ns, s.allocs)
        };
        sum += ns;
        allocs += a;
        println!(
            "  {:<10} {:>8.0} ns/event  {:>6.1} allocs/event",
            s.name, ns, a
        );
    }
    println!(
        "  {:<10} {:>8.0} ns/event  {:>6.1} allocs/event",
        "sum", sum, allocs
    );

    // End to end on one thread, as the chain runs it.
    let whole = time("chain", n, |i| {
        let Ok(mut e) = decoder.decode(&records[pick(i)], None) else {
            return;
        };
        tracker.observe(&mut e);
        let _ = tx.send(e);
        let Ok(e) = rx.recv() else { return };
        let alerts = eval.evaluate(&e);
        let line = serde_json::to_string(&e).ok();
        pipeline.handle(e.kind, line.as_deref(), &alerts);
        if i % 256 == 0 {
            pipeline.flush();
        }
    });
    pipeline.flush();
    println!(
        "  chain      {:>8.0} ns/event  {:>6.1} allocs/event  ({:.0} events/s on one core)",
        whole.ns,
        whole.allocs,
        1e9 / whole.ns
    );
    println!(
        "  rule evaluations skipped by the pre-filter: {}",
        eval.prefiltered()
    );
    for r in set.stats().iter().filter(|r| r.evaluations > 0) {
        println!(
            "  ran in Rhai: {:<12} {:>9} evaluations, {:>6.2} us each",
            r.rule_id,
            r.evaluations,
            r.eval_ns as f64 / r.evaluations as f64 / 1e3
        );
    }
}
