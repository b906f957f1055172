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

/// Early alarms: with the default thresholds (1000 SYN/s, 1 s windows), the
/// kernel raises a flooded service key once per CPU when that CPU's count
/// reaches its share; userspace cuts the key's window as soon as the sum
/// meets the threshold and returns it as a partial window the rule fires on.
/// Below the threshold nothing is raised; every SYN is in exactly one window.
#[test]
fn a_flood_raises_an_early_alarm_and_its_window_is_cut_at_the_threshold() {
    use gatewatch::capture::l4::{set_alarms, AlarmThresholds, L4Windows};
    use libbpf_rs::RingBufferBuilder;
    use std::cell::RefCell;
    use std::rc::Rc;
    require_root!();
    let cfg = L4Config::default();
    let probe = Probe::load_with(&CaptureConfig::default(), &cfg).unwrap();
    let t = AlarmThresholds::from_rules(&gatewatch::rules::RulesConfig::default());
    set_alarms(&probe, &cfg, &t).unwrap();
    let raised: Rc<RefCell<Vec<Vec<u8>>>> = Rc::default();
    let sink = Rc::clone(&raised);
    let mut b = RingBufferBuilder::new();
    b.add(&probe.skel.maps.gw_l4_alarms, move |d: &[u8]| {
        sink.borrow_mut().push(d.to_vec());
        0
    })
    .unwrap();
    let ring = b.build().unwrap();
    let syns = |n: u32, dport: u16| -> Vec<Vec<u8>> {
        (0..n)
            .map(|i| {
                v4_ctl(
                    &Flow {
                        src: [10, 8, (i / 250) as u8, (i % 250) as u8 + 1],
                        dst: [10, 0, 0, 2],
                        sport: 2000 + (i % 60000) as u16,
                        dport,
                    },
                    SYN,
                )
            })
            .collect()
    };
    let mut windows = L4Windows::default();
    // struct gw_l4_key: addr[16], port, ip_version, scope (0 service, 1 source)
    let services = |r: &[Vec<u8>]| r.iter().filter(|k| k[19] == 0).count();
    // 400 SYNs: below any CPU's share of 1000 -> no service alarm (their
    // source prefixes are raised: 25 SYNs may be a scan, the rules judge).
    run_frames(&probe, &syns(400, 9000)).unwrap();
    ring.consume().unwrap();
    assert_eq!(services(&raised.borrow()), 0, "raised below the threshold");
    // 1200 SYNs to another service, all on this CPU (test_run): raised once.
    run_frames(&probe, &syns(1200, 9001)).unwrap();
    ring.consume().unwrap();
    assert_eq!(
        services(&raised.borrow()),
        1,
        "one record per CPU and window"
    );
    for k in raised.borrow().iter() {
        windows.raised(k);
    }
    let cut: Vec<_> = windows
        .cut_raised(&probe, &cfg, &t, 0)
        .unwrap()
        .into_iter()
        .filter(|e| e.l4.as_ref().is_some_and(|w| w.scope == "service"))
        .collect();
    assert_eq!(cut.len(), 1);
    let w = cut[0].l4.as_ref().unwrap();
    assert!(w.partial && w.port == Some(9001) && w.syn == 1200, "{w:?}");
    assert!(w.syn_rate >= 1000.0, "{w:?}");
    // The rest of the flood lands in the key's next window, never twice.
    run_frames(&probe, &syns(300, 9001)).unwrap();
    let rest = flush(&probe, &cfg, 1000, 0).unwrap();
    let later: u64 = rest
        .iter()
        .filter_map(|e| e.l4.as_ref())
        .filter(|w| w.port == Some(9001))
        .map(|w| w.syn)
        .sum();
    assert_eq!(later, 300);
}
