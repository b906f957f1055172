//! `gatewatch run`: load, attach, stream until SIGINT/SIGTERM, detach.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use libbpf_rs::RingBufferBuilder;

use super::pipeline::Pipeline;
use super::RunArgs;
use crate::capture::attach::attach_iface;
use crate::capture::clock::BootClock;
use crate::capture::counters::KernelCounters;
use crate::capture::decode::{format_time, Decoder};
use crate::capture::Probe;
use crate::config::Config;
use crate::events::{CaptureSource, Direction, Event, EventKind, SensorStats};
use crate::metrics::{Health, Metrics, MetricsServer};
use crate::sinks::OutputConfig;

pub fn run_cmd(args: RunArgs) -> Result<()> {
    let mut cfg = Config::load(args.config.as_deref())?;
    if !args.ifaces.is_empty() {
        cfg.sensor.interfaces = args.ifaces.clone();
    }
    if !args.outputs.is_empty() {
        cfg.outputs = args
            .outputs
            .iter()
            .map(|spec| OutputConfig {
                spec: spec.clone(),
                events: true,
                alerts: true,
            })
            .collect();
    }
    if args.check_config {
        println!("config ok");
        return Ok(());
    }

    let metrics = Arc::new(Metrics::new());
    let health = Arc::new(Health::from_config(&cfg.metrics));
    let metrics_server = if cfg.metrics.enabled {
        let server = MetricsServer::start(&cfg.metrics, Arc::clone(&metrics), Arc::clone(&health))
            .with_context(|| {
                format!(
                    "starting the metrics endpoint on {} (metrics.listen)",
                    cfg.metrics.listen
                )
            })?;
        tracing::info!(listen = %server.local_addr(), "metrics on /metrics, health on /healthz");
        Some(server)
    } else {
        None
    };

    let probe = Probe::load_with(&cfg.capture, &cfg.l4)?;
    let mut attachments = Vec::new();
    for iface in &cfg.sensor.interfaces {
        attachments.push(attach_iface(
            &probe.skel.progs.gw_tc_ingress,
            &probe.skel.progs.gw_tc_egress,
            iface,
            cfg.capture.attach_mode,
        )?);
    }
    // TLS plaintext via uprobes on libssl; None when disabled or unavailable (logged).
    let tls = crate::capture::tls::TlsProbe::start(&probe, &cfg.tls);

    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop)).context("installing signal handler")?;
    }

    // Capture → pipeline: a bounded queue. When it is full the reader blocks,
    // the kernel ring buffer absorbs the burst, and past that the kernel counts drops.
    let (tx, rx) = crossbeam_channel::bounded::<Event>(cfg.sensor.queue_capacity);
    let mut pipeline = Pipeline::new(&cfg.outputs, Arc::clone(&metrics), Arc::clone(&health))?;
    let worker = std::thread::Builder::new()
        .name("gw-pipeline".into())
        .spawn(move || {
            for ev in rx.iter() {
                pipeline.handle_event(&ev);
                // Batch writes under load, but never sit on events when idle.
                if rx.is_empty() || pipeline.events % 256 == 0 {
                    pipeline.flush();
                }
            }
            pipeline.flush();
            pipeline
        })
        .context("starting pipeline thread")?;

    let decode_errors = Arc::new(AtomicU64::new(0));
    let mut decoder = Decoder::new(probe.table.slot_names.clone(), CaptureSource::Net);
    let ring_tx = tx.clone();
    let ring_errors = Arc::clone(&decode_errors);
    let mut builder = RingBufferBuilder::new();
    builder
        .add(&probe.skel.maps.gw_events, move |data: &[u8]| {
            match decoder.decode(data, None) {
                Ok(ev) => {
                    if ring_tx.send(ev).is_err() {
                        return -1;
                    }
                }
                Err(e) => {
                    ring_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!("undecodable kernel event: {e}");
                }
            }
            0
        })
        .context("opening ring buffer")?;
    let ring = builder.build().context("opening ring buffer")?;
    tracing::info!(
        interfaces = ?cfg.sensor.interfaces,
        outputs = cfg.outputs.len(),
        "gatewatch running; SIGINT or SIGTERM to stop"
    );

    let interval = Duration::from_secs(cfg.sensor.stats_interval_secs);
    let mut last = probe.counters().unwrap_or_default();
    let mut last_at = Instant::now();
    let mut drops_total = 0u64;
    let mut last_decode_errors = 0u64;
    let l4_window = Duration::from_millis(cfg.l4.window_ms);
    let mut l4_at = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        if cfg.l4.enabled && l4_at.elapsed() >= l4_window {
            let window_ms = l4_at.elapsed().as_millis() as u64;
            l4_at = Instant::now();
            match crate::capture::l4::flush(&probe, &cfg.l4, window_ms, BootClock::now_unix_ns()) {
                Ok(events) => {
                    for ev in events {
                        let _ = tx.send(ev);
                    }
                }
                Err(e) => tracing::warn!("l4 counters: {e:#}"),
            }
        }
        if let Err(e) = ring.poll(Duration::from_millis(100)) {
            if !stop.load(Ordering::Relaxed) {
                tracing::warn!("ring buffer poll: {e}");
            }
        }
        let now = probe.counters().unwrap_or(last);
        metrics.packets_seen.set_total(now.get("packets_seen"));
        metrics.ringbuf_drops.set_total(now.get("ringbuf_drops"));
        metrics.parse_truncations.set_total(now.get("truncated"));
        health.note_ringbuf_drops(now.get("ringbuf_drops"));
        let d = now.delta(&last);
        let new_drops = d.get("ringbuf_drops");
        if new_drops > 0 || last_at.elapsed() >= interval {
            let dec = decode_errors.load(Ordering::Relaxed);
            if new_drops > 0 {
                tracing::warn!(
                    dropped = new_drops,
                    "kernel ring buffer full: events dropped"
                );
            }
            drops_total += new_drops;
            let ev = stats_event(&d, last_at.elapsed(), drops_total, dec - last_decode_errors);
            last_decode_errors = dec;
            let _ = tx.send(ev);
            last = now;
            last_at = Instant::now();
        }
    }

    tracing::info!("stopping: detaching from interfaces");
    drop(attachments);
    drop(tls);
    let _ = ring.consume();
    drop(ring);
    drop(tx);
    let pipeline = worker
        .join()
        .map_err(|_| anyhow::anyhow!("pipeline thread panicked"))?;
    drop(metrics_server);
    let totals = probe.counters().unwrap_or_default();
    tracing::info!(
        events = pipeline.events,
        packets = totals.get("packets_seen"),
        ringbuf_drops = totals.get("ringbuf_drops"),
        "stopped"
    );
    Ok(())
}

fn stats_event(
    d: &KernelCounters,
    elapsed: Duration,
    drops_total: u64,
    decode_errors: u64,
) -> Event {
    Event {
        kind: EventKind::SensorStats,
        time: format_time(BootClock::now_unix_ns()),
        source: CaptureSource::Sensor,
        iface: None,
        ifindex: 0,
        direction: Direction::Unknown,
        src: None,
        dst: None,
        process: None,
        http: None,
        l4: None,
        stats: Some(SensorStats {
            interval_ms: elapsed.as_millis() as u64,
            packets_seen: d.get("packets_seen"),
            http_messages: d.get("http_requests") + d.get("http_responses"),
            ringbuf_drops: d.get("ringbuf_drops"),
            ringbuf_drops_total: drops_total,
            truncated: d.get("truncated"),
            parse_errors: d.get("malformed"),
            flow_continuations: d.get("flow_continued"),
            flow_state_lost: d.get("flow_lost"),
            decode_errors,
        }),
    }
}
