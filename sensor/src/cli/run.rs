//! `gatewatch run`: load, attach, stream until SIGINT/SIGTERM, detach.
//!
//! Threads: this one polls the ring buffer and the kernel counters; rule
//! workers (one Rhai engine each) evaluate events sharded by flow; one writer
//! thread owns the outputs, the audit trail and the alert metrics.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use crossbeam_channel::RecvTimeoutError;
use libbpf_rs::RingBufferBuilder;

use super::pipeline::Pipeline;
use super::workers::{CurrentRules, Dispatcher, Output, Workers};
use super::RunArgs;
use crate::alerts::SensorIdentity;
use crate::audit::{AuditWriter, FsyncPolicy};
use crate::capture::attach::attach_iface;
use crate::capture::clock::BootClock;
use crate::capture::counters::KernelCounters;
use crate::capture::decode::Decoder;
use crate::capture::governor::{self, Budget};
use crate::capture::tls::TlsProbe;
use crate::capture::Probe;
use crate::config::Config;
use crate::events::{CaptureSource, Direction, Event, EventKind, SensorStats};
use crate::mcp::Tracker;
use crate::metrics::{Health, Metrics, MetricsServer};
use crate::rules::loader::load_configured;
use crate::rules::{RuleSet, RuleState};
use crate::sinks::OutputConfig;

/// The config with the command line's overrides applied.
pub fn effective_config(args: &RunArgs) -> Result<Config> {
    let mut cfg = Config::load(args.config.as_deref())?;
    if !args.ifaces.is_empty() {
        cfg.sensor.interfaces = args.ifaces.clone();
    }
    if let Some(dir) = &args.rules {
        cfg.rules.dir = dir.clone();
    }
    if !args.outputs.is_empty() {
        cfg.outputs = args
            .outputs
            .iter()
            .map(|spec| OutputConfig {
                kafka: cfg.kafka.clone(),
                ..OutputConfig::from_spec(spec.clone())
            })
            .collect();
    }
    Ok(cfg)
}

pub fn load_rules(cfg: &Config) -> Result<RuleSet> {
    load_configured(&cfg.rules).map_err(|e| anyhow::anyhow!("loading rules: {e}"))
}

fn identity(cfg: &Config) -> SensorIdentity {
    let mut id = SensorIdentity::local();
    if let Some(s) = &cfg.sensor.sensor_id {
        id.sensor_id = s.clone();
    }
    id
}

fn ruleset_record(set: &RuleSet, reason: &str) -> serde_json::Value {
    serde_json::json!({
        "reason": reason,
        "dir": set.dir().display().to_string(),
        "rules": set.rules().iter().map(|r| serde_json::json!({"id": r.meta.id, "file": r.file})).collect::<Vec<_>>(),
    })
}

pub fn run_cmd(args: RunArgs) -> Result<()> {
    let cfg = effective_config(&args)?;
    let rules = load_rules(&cfg)?;
    if args.check_config {
        println!("config ok; {} rules", rules.len());
        return check_capture(&cfg);
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
    let audit = if cfg.audit.enabled {
        Some(AuditWriter::open(&cfg.audit).with_context(|| {
            format!(
                "opening the audit trail {} (audit.path)",
                cfg.audit.path.display()
            )
        })?)
    } else {
        None
    };
    let fsync_on_tick = matches!(cfg.audit.fsync, FsyncPolicy::IntervalMs(_));

    let (probe, tls) = load_capture(&cfg)?;
    let mut attachments = Vec::new();
    if probe.has_packet_programs() {
        for iface in &cfg.sensor.interfaces {
            attachments.push(attach_iface(
                &probe.skel.progs.gw_tc_ingress,
                &probe.skel.progs.gw_tc_egress,
                iface,
                cfg.capture.attach_mode,
            )?);
        }
    }
    let degraded = degraded_paths(
        cfg.tls.enabled,
        probe.has_packet_programs(),
        tls.as_ref().map(|t| t.endpoints),
    );
    publish_capture_metrics(&metrics, &cfg, &probe, tls.as_ref());
    if !degraded.is_empty() {
        tracing::warn!(
            missing = ?degraded,
            "running with part of the capture missing (sensor_stats.degraded, \
             capture_program_loaded, GW-SENSOR-003); `gatewatch doctor` says why"
        );
    }

    let stop = Arc::new(AtomicBool::new(false));
    let reload = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop)).context("installing signal handler")?;
    }
    signal_hook::flag::register(signal_hook::consts::SIGHUP, Arc::clone(&reload))
        .context("installing SIGHUP handler")?;

    // capture → (bounded, per worker) → rule workers → (bounded) → writer.
    // A full queue blocks the reader; the kernel ring buffer absorbs the burst;
    // past that the kernel counts drops, which are reported. Never silent.
    let n_workers = cfg.rules.workers.max(1);
    // Workers hand the writer batches: the bound counts events, as configured.
    let (out_tx, out_rx) = crossbeam_channel::bounded::<Output>(
        cfg.sensor
            .queue_capacity
            .div_ceil(super::workers::BATCH)
            .max(1),
    );
    let current = CurrentRules::new(rules);
    let state = Arc::new(RuleState::new(&cfg.rules));
    let worker_priority = super::workers::ThreadPriority {
        nice: cfg.sensor.worker_nice,
        batch: cfg.sensor.worker_batch,
    };
    let workers = Workers::spawn(
        n_workers,
        current.clone(),
        Arc::clone(&state),
        identity(&cfg),
        cfg.sensor.queue_capacity / n_workers,
        worker_priority,
        out_tx.clone(),
    )?;
    let mut pipeline = Pipeline::new(
        &cfg.outputs,
        Arc::clone(&metrics),
        Arc::clone(&health),
        audit,
    )?;
    pipeline.ruleset_change(&ruleset_record(&current.get(), "start"));
    let writer = std::thread::Builder::new()
        .name("gw-writer".into())
        .spawn(move || {
            super::workers::lower_thread_priority(worker_priority);
            let mut last_tick = Instant::now();
            loop {
                match out_rx.recv_timeout(Duration::from_millis(500)) {
                    Ok(Output::Events(batch)) => {
                        for e in &batch {
                            pipeline.handle(e.kind, e.line.as_deref(), &e.alerts);
                        }
                        // Batch writes under load, but never sit on events when idle.
                        if out_rx.is_empty() || pipeline.events % 256 < batch.len() as u64 {
                            pipeline.flush();
                        }
                    }
                    Ok(Output::RulesetChange(v)) => pipeline.ruleset_change(&v),
                    Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => break,
                }
                if last_tick.elapsed() >= Duration::from_secs(1) {
                    pipeline.tick(fsync_on_tick);
                    last_tick = Instant::now();
                }
            }
            pipeline.flush();
            pipeline.tick(fsync_on_tick);
            pipeline
        })
        .context("starting writer thread")?;

    let decode_errors = Arc::new(AtomicU64::new(0));
    let mut decoder = Decoder::new(probe.table.slot_names.clone(), CaptureSource::Net);
    // Shared by the ring callback and this loop (one thread): events go to
    // the workers in batches, flushed after every drain.
    let dispatch: Rc<std::cell::RefCell<Dispatcher>> =
        Rc::new(std::cell::RefCell::new(workers.dispatcher()));
    let ring_dispatch = Rc::clone(&dispatch);
    let ring_errors = Arc::clone(&decode_errors);
    // The MCP tracker needs capture order, so it runs here, before sharding.
    let mut tracker = Tracker::new(&cfg.mcp);
    // Set by the CPU budget below, read by the tracker (same thread).
    let sampling = Rc::new(Cell::new(false));
    let tracker_sampling = Rc::clone(&sampling);
    let tracker_metrics = Arc::clone(&metrics);
    let mut builder = RingBufferBuilder::new();
    builder
        .add(&probe.skel.maps.gw_events, move |data: &[u8]| {
            match decoder.decode(data, None) {
                Ok(mut ev) => {
                    tracker.set_sampling(tracker_sampling.get());
                    tracker.observe(&mut ev);
                    tracker_metrics
                        .session_tracker_size
                        .set(i64::try_from(tracker.live_sessions()).unwrap_or(i64::MAX));
                    let counted = tracker.counters();
                    tracker_metrics
                        .mcp_sessions_issued
                        .set_total(counted.sessions_issued);
                    tracker_metrics
                        .mcp_tracker_evictions
                        .set_total(counted.evictions());
                    if !ring_dispatch.borrow_mut().dispatch(ev) {
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
    // Early L4 alarms (capture/l4.rs): keys whose burst crossed a rule
    // threshold, taken out of the window at once by the loop below.
    let alarms: Rc<std::cell::RefCell<Vec<Vec<u8>>>> = Rc::default();
    let alarm_sink = Rc::clone(&alarms);
    builder
        .add(&probe.skel.maps.gw_l4_alarms, move |data: &[u8]| {
            let mut a = alarm_sink.borrow_mut();
            if a.len() < 4096 {
                a.push(data.to_vec());
            }
            0
        })
        .context("opening the L4 alarm ring")?;
    let ring = builder.build().context("opening ring buffer")?;
    tracing::info!(
        interfaces = ?cfg.sensor.interfaces,
        outputs = cfg.outputs.len(),
        rules = current.get().len(),
        workers = n_workers,
        "gatewatch running; SIGINT or SIGTERM to stop, SIGHUP to reload rules"
    );

    let interval = Duration::from_secs(cfg.sensor.stats_interval_secs);
    let mut last = probe.counters().unwrap_or_default();
    let mut last_at = Instant::now();
    let mut drops_total = 0u64;
    let mut last_decode_errors = 0u64;
    let mut l4 = crate::capture::l4::L4Windows::default();
    let mut l4_alarm = crate::capture::l4::AlarmThresholds::from_rules(&cfg.rules);
    if let Err(e) = crate::capture::l4::set_alarms(&probe, &cfg.l4, &l4_alarm) {
        tracing::warn!("early L4 alarms off: {e:#}");
    }
    let ring_poll = Duration::from_millis(cfg.sensor.ring_poll_ms);
    // Messages left by silent flows in the kernel's flow tables (capture/sweep.rs).
    let sweep_limits = crate::capture::sweep::SweepLimits {
        body_wait_ns: u64::from(cfg.capture.body_wait_ms) * 1_000_000,
        idle_ns: u64::from(cfg.capture.flow_idle_secs) * 1_000_000_000,
    };
    let mut flows_expired = 0u64;
    let mut sweep_decoder = Decoder::new(probe.table.slot_names.clone(), CaptureSource::Net);
    let mut sweep_at = Instant::now();
    let mut budget = (cfg.capture.cpu_budget_percent > 0.0).then(|| {
        Budget::new(
            cfg.capture.cpu_budget_percent,
            Duration::from_millis(u64::from(cfg.capture.body_wait_ms)),
            last.get("parse_ns"),
            last.get("tcp_payload_packets"),
        )
    });
    let mut inspected_percent = 100.0;
    while !stop.load(Ordering::Relaxed) {
        if reload.swap(false, Ordering::Relaxed) {
            if let Some(rules_cfg) = reload_rules(&args, &current, &out_tx) {
                // The kernel's alarm thresholds follow the reloaded [rules.thresholds].
                l4_alarm = crate::capture::l4::AlarmThresholds::from_rules(&rules_cfg);
                if let Err(e) = crate::capture::l4::set_alarms(&probe, &cfg.l4, &l4_alarm) {
                    tracing::warn!("early L4 alarms: {e:#}");
                }
            }
        }
        if cfg.l4.enabled && l4.due(&cfg.l4) {
            match l4.flush(&probe, &cfg.l4, BootClock::now_unix_ns()) {
                Ok(events) => {
                    for ev in events {
                        dispatch.borrow_mut().dispatch(ev);
                    }
                }
                Err(e) => tracing::warn!("l4 counters: {e:#}"),
            }
        }
        // Drain on a timer instead of waking on every event: at a few thousand
        // events/s, per-event wake-ups of this thread and of the workers cost
        // the gateway more latency than the parsing does; the ring
        // (capture.ringbuf_mb) holds far more than one interval. Drained in
        // slices: under overload it never empties, and stats, the CPU budget
        // and the sweep below must still get their turn.
        let drain_at = Instant::now();
        let emptied = loop {
            let n = ring.consume_raw_n(DRAIN_SLICE);
            if n < 0 {
                if !stop.load(Ordering::Relaxed) {
                    tracing::warn!(
                        "ring buffer: {}",
                        std::io::Error::from_raw_os_error(n.saturating_neg())
                    );
                }
                break true;
            }
            if (n as usize) < DRAIN_SLICE {
                break true;
            }
            if drain_at.elapsed() >= DRAIN_TURN || stop.load(Ordering::Relaxed) {
                break false;
            }
        };
        let raised = std::mem::take(&mut *alarms.borrow_mut());
        if cfg.l4.enabled {
            for key in &raised {
                l4.raised(key);
            }
            match l4.cut_raised(&probe, &cfg.l4, &l4_alarm, BootClock::now_unix_ns()) {
                Ok(events) => {
                    for ev in events {
                        dispatch.borrow_mut().dispatch(ev);
                    }
                }
                Err(e) => tracing::warn!("l4 alarm: {e:#}"),
            }
        }
        dispatch.borrow_mut().flush();
        if emptied {
            std::thread::sleep(ring_poll);
        }
        if sweep_at.elapsed() >= Duration::from_secs(1) {
            sweep_at = Instant::now();
            let swept = crate::capture::sweep::sweep(
                &probe,
                tls.as_ref(),
                sweep_limits,
                &mut sweep_decoder,
            );
            decode_errors.fetch_add(swept.decode_errors, Ordering::Relaxed);
            flows_expired += swept.expired;
            for ev in swept.events {
                dispatch.borrow_mut().dispatch(ev);
            }
        }
        let now = probe.counters().unwrap_or(last);
        metrics.packets_seen.set_total(now.get("packets_seen"));
        metrics.ringbuf_drops.set_total(now.get("ringbuf_drops"));
        metrics.parse_truncations.set_total(now.get("truncated"));
        health.note_ringbuf_drops(now.get("ringbuf_drops"));
        metrics
            .capture_shed_packets
            .set_total(now.get("shed_packets"));
        if let Some(step) = budget
            .as_mut()
            .and_then(|b| b.poll(now.get("parse_ns"), now.get("tcp_payload_packets")))
        {
            if let Err(e) = probe.set_admission(step.admit, step.new_key, step.grace) {
                tracing::warn!("CPU budget: {e:#}");
            }
            let was = inspected_percent;
            inspected_percent = governor::percent(step.admit);
            sampling.set(step.admit < governor::ADMIT_ALL);
            metrics
                .capture_inspected_ratio
                .set(inspected_percent / 100.0);
            if was >= 100.0 {
                tracing::warn!(
                    budget_percent = cfg.capture.cpu_budget_percent,
                    inspected_percent,
                    "CPU budget spent: inspecting a sample of connections"
                );
            } else if inspected_percent >= 100.0 {
                tracing::info!("CPU budget: inspecting every connection again");
            }
        }
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
            dispatch.borrow_mut().dispatch(stats_event(
                &d,
                last_at.elapsed(),
                drops_total,
                dec - last_decode_errors,
                std::mem::take(&mut flows_expired),
                inspected_percent,
                &degraded,
            ));
            dispatch.borrow_mut().flush();
            publish_rule_metrics(&metrics, &current.get());
            last_decode_errors = dec;
            last = now;
            last_at = Instant::now();
        }
    }

    tracing::info!("stopping: detaching from interfaces");
    drop(attachments);
    drop(tls);
    let _ = ring.consume();
    drop(ring);
    dispatch.borrow_mut().flush();
    drop(dispatch);
    workers.join();
    drop(out_tx);
    let pipeline = writer
        .join()
        .map_err(|_| anyhow::anyhow!("writer thread panicked"))?;
    publish_rule_metrics(&metrics, &current.get());
    drop(metrics_server);
    let totals = probe.counters().unwrap_or_default();
    tracing::info!(
        events = pipeline.events,
        alerts = pipeline.alerts,
        packets = totals.get("packets_seen"),
        ringbuf_drops = totals.get("ringbuf_drops"),
        "stopped"
    );
    Ok(())
}

/// SIGHUP: compile and check the new set first; a broken set is refused with
/// every error's file and line, and the running set stays.
/// Reload config and rules (SIGHUP); the new `[rules]` section when the set
/// was taken, None when the running one stays.
fn reload_rules(
    args: &RunArgs,
    current: &CurrentRules,
    out: &crossbeam_channel::Sender<Output>,
) -> Option<crate::rules::RulesConfig> {
    let cfg = match effective_config(args) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("rule reload refused, config invalid ({e:#}); the running rules stay");
            return None;
        }
    };
    match load_rules(&cfg) {
        Ok(set) => {
            let record = ruleset_record(&set, "reload");
            tracing::info!(rules = set.len(), "rules reloaded");
            current.replace(set);
            let _ = out.send(Output::RulesetChange(record));
            Some(cfg.rules)
        }
        Err(e) => {
            tracing::error!(
                "rule reload refused; the running {} rules stay: {e:#}",
                current.get().len()
            );
            None
        }
    }
}

fn publish_rule_metrics(metrics: &Metrics, set: &RuleSet) {
    for s in set.stats() {
        metrics
            .rule_evaluations
            .with(&[&s.rule_id])
            .set_total(s.evaluations);
        metrics
            .rule_errors
            .with(&[&s.rule_id])
            .set_total(s.errors + s.budget_exceeded);
        metrics
            .alerts_suppressed
            .with(&[&s.rule_id])
            .set_total(s.suppressed);
    }
}

/// Load the packet and TLS programs, each on its own: a kernel that refuses
/// one still runs the other (saying so). Fails when neither can capture.
pub fn load_capture(cfg: &Config) -> Result<(Probe, Option<TlsProbe>)> {
    crate::capture::verifier::use_state_dir(&cfg.sensor.state_dir);
    let probe = Probe::load_degradable(&cfg.capture, &cfg.l4)?;
    // TLS plaintext via libssl uprobes; failures are logged, packet capture goes on.
    let tls = TlsProbe::start(&probe, &cfg.tls);
    if let Some(f) = &probe.packet_failure {
        if tls.is_none() {
            anyhow::bail!(
                "no capture can run on this kernel: {f}\n  TLS capture: {}",
                if cfg.tls.enabled {
                    "unavailable too (see the error above)"
                } else {
                    "disabled (tls.enabled = false)"
                }
            );
        }
        tracing::warn!("packet capture unavailable, TLS capture only (see the error above)");
    }
    Ok((probe, tls))
}

/// `--check-config`: load the programs (verified, not attached) and say what
/// would run. Fails when nothing can capture; without the privileges to load,
/// says so and leaves the verdict to the start itself.
fn check_capture(cfg: &Config) -> Result<()> {
    crate::capture::verifier::use_state_dir(&cfg.sensor.state_dir);
    let loaded = Probe::load_degradable(&cfg.capture, &cfg.l4).and_then(|probe| {
        let tls = if cfg.tls.enabled {
            match crate::capture::tls::verify_only(&probe) {
                Ok((_, endpoints)) => Some(endpoints),
                Err(e) => {
                    tracing::error!("TLS capture unavailable: {e:#}");
                    None
                }
            }
        } else {
            None
        };
        if !probe.has_packet_programs() && tls.is_none() {
            anyhow::bail!("no capture can run on this kernel (see the errors above)");
        }
        Ok((probe, tls))
    });
    match loaded {
        Ok((probe, tls)) => {
            let missing = degraded_paths(cfg.tls.enabled, probe.has_packet_programs(), tls);
            if missing.is_empty() {
                println!("capture ok: packet and TLS programs load on this kernel");
            } else {
                println!(
                    "capture degraded: {} will not run on this kernel (`gatewatch doctor` says why)",
                    missing.join(", ")
                );
            }
            Ok(())
        }
        Err(e) => match e.downcast_ref::<crate::capture::verifier::LoadFailure>() {
            Some(f) if f.kind == crate::capture::verifier::FailureKind::Permission => {
                println!("capture not checked: {f}");
                Ok(())
            }
            _ => Err(e),
        },
    }
}

/// The capture paths that should run but do not (sensor_stats.degraded):
/// from whether the packet programs loaded and, for TLS, `Some(endpoints)`
/// when its programs loaded (`tls_enabled` false: TLS is not expected).
pub fn degraded_paths(tls_enabled: bool, packet: bool, tls: Option<bool>) -> Vec<String> {
    let mut out = Vec::new();
    if !packet {
        out.push("packet".to_string());
    }
    if tls_enabled {
        match tls {
            None => out.push("tls".to_string()),
            Some(false) => out.push("tls_endpoints".to_string()),
            Some(true) => {}
        }
    }
    out
}

fn publish_capture_metrics(metrics: &Metrics, cfg: &Config, probe: &Probe, tls: Option<&TlsProbe>) {
    let loaded = &metrics.capture_program_loaded;
    loaded
        .with(&["packet"])
        .set(i64::from(probe.has_packet_programs()));
    if cfg.tls.enabled {
        loaded.with(&["tls"]).set(i64::from(tls.is_some()));
        loaded
            .with(&["tls_endpoints"])
            .set(i64::from(tls.is_some_and(|t| t.endpoints)));
    }
}

/// Records taken from the ring per call, and how long one drain may run
/// before the main loop's other duties get a turn.
const DRAIN_SLICE: usize = 1024;
const DRAIN_TURN: Duration = Duration::from_millis(100);

fn stats_event(
    d: &KernelCounters,
    elapsed: Duration,
    drops_total: u64,
    decode_errors: u64,
    flows_expired: u64,
    inspected_percent: f64,
    degraded: &[String],
) -> Event {
    Event {
        kind: EventKind::SensorStats,
        time: crate::events::EventTime::from_unix_ns(BootClock::now_unix_ns()),
        source: CaptureSource::Sensor,
        iface: None,
        ifindex: 0,
        direction: Direction::Unknown,
        src: None,
        dst: None,
        process: None,
        http: None,
        l4: None,
        mcp_context: None,
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
            flow_table_full: d.get("flow_table_full"),
            flows_expired,
            pipeline_left: d.get("pipeline_left"),
            overlap_trimmed: d.get("overlap_trimmed"),
            tcp_fragments: d.get("tcp_fragments"),
            decode_errors,
            shed_packets: d.get("shed_packets"),
            inspected_percent,
            degraded: degraded.to_vec(),
        }),
    }
}
