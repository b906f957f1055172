//! In-kernel L4 counters, driven with BPF_PROG_TEST_RUN (root only).

mod common;

use gatewatch::capture::l4::{flush, L4Config};
use gatewatch::capture::replay::run_frames;
use gatewatch::capture::{CaptureConfig, Probe};

use common::{v4_ctl, Flow};

const SYN: u8 = 0x02;
const SYNACK: u8 = 0x12;
const RST: u8 = 0x04;

#[test]
fn syn_flood_and_scan_are_counted_per_key_not_per_packet() {
    require_root!();
    let cfg = L4Config::default();
    let probe = Probe::load_with(&CaptureConfig::default(), &cfg).unwrap();
    let mut frames = Vec::new();
    // 300 SYNs from 300 spoofed sources in 10.9.0.0/16 to 10.0.0.2:8080, 10 answered.
    for i in 0..300u32 {
        let flow = Flow {
            src: [10, 9, (i / 250) as u8, (i % 250) as u8 + 1],
            dst: [10, 0, 0, 2],
            sport: 1024 + i as u16,
            dport: 8080,
        };
        frames.push(v4_ctl(&flow, SYN));
    }
    for i in 0..10u16 {
        let back = Flow {
            src: [10, 0, 0, 2],
            dst: [10, 9, 0, 1],
            sport: 8080,
            dport: 1024 + i,
        };
        frames.push(v4_ctl(&back, SYNACK));
    }
    // A vertical scan: one source, 100 ports, answered by RSTs.
    for port in 1..=100u16 {
        let scan = Flow {
            src: [192, 0, 2, 77],
            dst: [10, 0, 0, 3],
            sport: 40000,
            dport: port,
        };
        frames.push(v4_ctl(&scan, SYN));
    }
    assert!(
        run_frames(&probe, &frames).unwrap().is_empty(),
        "L4 counting emits no per-packet events"
    );

    let events = flush(&probe, &cfg, 1000, 0).unwrap();
    let l4: Vec<_> = events.iter().filter_map(|e| e.l4.as_ref()).collect();
    let svc = l4
        .iter()
        .find(|w| w.scope == "service" && w.port == Some(8080))
        .expect("service window");
    assert_eq!(svc.syn, 300);
    assert_eq!(svc.synack, 10);
    assert!((svc.synack_ratio.unwrap() - 10.0 / 300.0).abs() < 1e-9);
    let ds = svc.distinct_sources.unwrap();
    assert!(ds >= 200, "300 sources estimated as {ds}");
    assert!(!svc.top_sources.is_empty());

    let scanner = l4
        .iter()
        .find(|w| w.scope == "source" && w.prefix.as_deref() == Some("192.0.2.0/24"))
        .expect("source window");
    assert_eq!(scanner.syn, 100);
    let dp = scanner.distinct_ports.unwrap();
    assert!((80..=125).contains(&dp), "100 ports estimated as {dp}");
    assert_eq!(scanner.distinct_hosts, Some(1));

    // Cleared after a flush: the next window starts from zero.
    assert!(flush(&probe, &cfg, 1000, 0).unwrap().is_empty());
    // Below min_packets, no event.
    let one = Flow {
        src: [10, 1, 1, 1],
        dst: [10, 0, 0, 9],
        sport: 5,
        dport: 80,
    };
    run_frames(&probe, &[v4_ctl(&one, SYN), v4_ctl(&one, RST)]).unwrap();
    assert!(flush(&probe, &cfg, 1000, 0).unwrap().is_empty());
}

#[test]
fn a_full_table_is_counted_never_silent() {
    require_root!();
    let cfg = L4Config {
        table_size: 64,
        ..Default::default()
    };
    let probe = Probe::load_with(&CaptureConfig::default(), &cfg).unwrap();
    let frames: Vec<_> = (0..200u32)
        .map(|i| {
            v4_ctl(
                &Flow {
                    src: [10, (i / 200) as u8, (i % 200) as u8, 1],
                    dst: [10, 0, 0, 2],
                    sport: 1000,
                    dport: 2000 + i as u16,
                },
                SYN,
            )
        })
        .collect();
    run_frames(&probe, &frames).unwrap();
    assert!(probe.counters().unwrap().get("l4_map_full") > 0);
}
