//! L4 window counters: read and clear the kernel's per-CPU `gw_l4` map once per
//! window and turn each active key into an `l4_window` event. The event rate is
//! bounded by keys x windows, never by packets.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use anyhow::{Context, Result};
use libbpf_rs::{MapCore, MapFlags};
use serde::Deserialize;

use super::decode::format_time;
use super::skel::types::{gw_l4_key, gw_l4_val};
use super::Probe;
use crate::events::{CaptureSource, Direction, Event, EventKind, L4Window, TopSource};

/// `[l4]` section of the config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct L4Config {
    pub enabled: bool,
    /// Window length; also how often the map is read.
    pub window_ms: u64,
    /// Keys (services + source prefixes) counted per window before new keys are
    /// refused (counted as `l4_map_full`).
    pub table_size: u32,
    pub prefix_v4: u8,
    pub prefix_v6: u8,
    /// Keys with fewer SYNs and RSTs than this in a window produce no event.
    pub min_packets: u64,
    /// How many source prefixes `top_sources` lists.
    pub top_sources: usize,
}

impl Default for L4Config {
    fn default() -> Self {
        L4Config {
            enabled: true,
            window_ms: 1000,
            table_size: 16384,
            prefix_v4: 24,
            prefix_v6: 64,
            min_packets: 5,
            top_sources: 5,
        }
    }
}

impl L4Config {
    pub fn validate(&self) -> Result<()> {
        anyhow::ensure!(
            (100..=60_000).contains(&self.window_ms),
            "l4.window_ms: must be 100..=60000"
        );
        anyhow::ensure!(
            (64..=1_048_576).contains(&self.table_size),
            "l4.table_size: must be 64..=1048576"
        );
        anyhow::ensure!(self.prefix_v4 <= 32, "l4.prefix_v4: must be 0..=32");
        anyhow::ensure!(self.prefix_v6 <= 128, "l4.prefix_v6: must be 0..=128");
        Ok(())
    }
}

const BITS: f64 = 256.0;

/// Linear counting over a 256-bit bitmap: (estimate, saturated).
fn estimate(bits: &[u64; 4]) -> (u64, bool) {
    let set: u32 = bits.iter().map(|w| w.count_ones()).sum();
    if set as f64 >= BITS {
        // Every bit set: at least this many; linear counting cannot say more.
        return ((BITS * BITS.ln()).round() as u64, true);
    }
    let zero = BITS - set as f64;
    (
        (-BITS * (zero / BITS).ln()).round() as u64,
        set as f64 > BITS * 0.9,
    )
}

fn addr(raw: &[u8; 16], ip_version: u8) -> Option<IpAddr> {
    match ip_version {
        4 => Some(IpAddr::V4(Ipv4Addr::new(raw[0], raw[1], raw[2], raw[3]))),
        6 => Some(IpAddr::V6(Ipv6Addr::from(*raw))),
        _ => None,
    }
}

struct Entry {
    key: gw_l4_key,
    val: gw_l4_val,
}

/// Read and clear every key; returns the window's events.
pub fn flush(
    probe: &Probe,
    cfg: &L4Config,
    window_ms: u64,
    now_unix_ns: i128,
) -> Result<Vec<Event>> {
    let map = &probe.skel.maps.gw_l4;
    let keys: Vec<Vec<u8>> = map.keys().collect();
    let mut entries = Vec::with_capacity(keys.len());
    for k in keys {
        let per_cpu = map
            .lookup_percpu(&k, MapFlags::ANY)
            .context("reading l4 counters")?;
        // A key read and then deleted may lose the few packets counted in between: documented.
        let _ = map.delete(&k);
        let (Some(per_cpu), Some(key)) = (per_cpu, read_pod::<gw_l4_key>(&k)) else {
            continue;
        };
        let mut sum = gw_l4_val::default();
        for cpu in per_cpu {
            if let Some(v) = read_pod::<gw_l4_val>(&cpu) {
                sum.syn += v.syn;
                sum.synack += v.synack;
                sum.rst += v.rst;
                sum.fin += v.fin;
                for i in 0..4 {
                    sum.bits_a[i] |= v.bits_a[i];
                    sum.bits_b[i] |= v.bits_b[i];
                }
            }
        }
        entries.push(Entry { key, val: sum });
    }

    let prefix_len = |v: u8| if v == 4 { cfg.prefix_v4 } else { cfg.prefix_v6 };
    let mut sources: Vec<TopSource> = entries
        .iter()
        .filter(|e| e.key.scope == 1 && e.val.syn > 0)
        .filter_map(|e| {
            addr(&e.key.addr, e.key.ip_version).map(|ip| TopSource {
                prefix: format!("{ip}/{}", prefix_len(e.key.ip_version)),
                syn: e.val.syn,
            })
        })
        .collect();
    sources.sort_by_key(|s| std::cmp::Reverse(s.syn));
    sources.truncate(cfg.top_sources);

    let secs = (window_ms.max(1) as f64) / 1000.0;
    let time = format_time(now_unix_ns);
    let mut events = Vec::new();
    for e in entries {
        let v = &e.val;
        if v.syn + v.rst < cfg.min_packets && v.synack + v.fin < cfg.min_packets {
            continue;
        }
        let Some(ip) = addr(&e.key.addr, e.key.ip_version) else {
            continue;
        };
        let service = e.key.scope == 0;
        let (a, sat_a) = estimate(&v.bits_a);
        let (b, sat_b) = estimate(&v.bits_b);
        let l4 = L4Window {
            scope: if service { "service" } else { "source" }.to_string(),
            ip,
            port: service.then_some(e.key.port),
            prefix: (!service).then(|| format!("{ip}/{}", prefix_len(e.key.ip_version))),
            window_ms,
            syn: v.syn,
            synack: v.synack,
            rst: v.rst,
            fin: v.fin,
            syn_rate: v.syn as f64 / secs,
            synack_ratio: (service && v.syn > 0).then(|| v.synack as f64 / v.syn as f64),
            distinct_sources: (service && v.syn > 0).then_some(a),
            distinct_ports: (!service && v.syn > 0).then_some(a),
            distinct_hosts: (!service && v.syn > 0).then_some(b),
            estimate_saturated: v.syn > 0 && (sat_a || (!service && sat_b)),
            top_sources: if service && v.syn > 0 {
                sources.clone()
            } else {
                Vec::new()
            },
        };
        events.push(Event {
            kind: EventKind::L4Window,
            time: time.clone(),
            source: CaptureSource::Net,
            iface: None,
            ifindex: 0,
            direction: Direction::Ingress,
            src: None,
            dst: None,
            process: None,
            http: None,
            stats: None,
            l4: Some(l4),
            mcp_context: None,
        });
    }
    Ok(events)
}

fn read_pod<T: Default + Copy>(bytes: &[u8]) -> Option<T> {
    if bytes.len() < std::mem::size_of::<T>() {
        return None;
    }
    // SAFETY: T is a plain-old-data #[repr(C)] type generated from BTF; length checked.
    Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linear_counting_estimates() {
        assert_eq!(estimate(&[0; 4]), (0, false));
        assert_eq!(estimate(&[1, 0, 0, 0]).0, 1);
        let (n, sat) = estimate(&[u64::MAX; 4]);
        assert!(sat && n >= 1000);
        // 100 set bits of 256 estimate ~126 distinct values.
        let bits = [u64::MAX, (1u64 << 36) - 1, 0, 0];
        let (n, sat) = estimate(&bits);
        assert!((120..=132).contains(&n), "{n}");
        assert!(!sat);
    }
}
