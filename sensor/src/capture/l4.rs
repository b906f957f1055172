//! L4 window counters: read and clear the kernel's per-CPU `gw_l4` map once per
//! window and turn each active key into an `l4_window` event. The event rate is
//! bounded by keys x windows, never by packets.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use libbpf_rs::{MapCore, MapFlags};
use serde::Deserialize;

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

/// The early-alarm thresholds, from the same `[rules.thresholds]` the L4
/// rules read: `syn_flood_rate` (GW-L4-001/002), `rst_storm_rate`
/// (GW-L4-005) and the smaller of `scan_min_ports` / `scan_min_hosts`
/// (GW-L4-003/004). A key's window is cut and reported as soon as it holds
/// as many SYNs (RSTs, distinct ports or hosts) as the rules need in a whole
/// window: its rate over that window can only be higher.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AlarmThresholds {
    pub syn_rate: f64,
    pub rst_rate: f64,
    pub scan_min: u64,
}

impl AlarmThresholds {
    pub fn from_rules(rules: &crate::rules::RulesConfig) -> Self {
        use crate::rules::Threshold;
        let num = |name: &str, default: f64| match rules.thresholds.get(name) {
            Some(Threshold::Int(i)) => *i as f64,
            Some(Threshold::Float(f)) => *f,
            _ => default,
        };
        AlarmThresholds {
            syn_rate: num("syn_flood_rate", 1000.0),
            rst_rate: num("rst_storm_rate", 1000.0),
            scan_min: num("scan_min_ports", 25.0)
                .min(num("scan_min_hosts", 25.0))
                .max(1.0) as u64,
        }
    }

    /// Counts in one window that meet the thresholds: (SYNs, RSTs) of a service.
    fn counts(&self, window: Duration) -> (u64, u64) {
        let secs = window.as_secs_f64();
        let n = |rate: f64| {
            if rate > 0.0 {
                (rate * secs).ceil().max(1.0) as u64
            } else {
                0
            }
        };
        (n(self.syn_rate), n(self.rst_rate))
    }
}

/// Write the alarm thresholds into the kernel (at start and on every reload):
/// each CPU raises a key when its own count reaches its share, so the sum over
/// CPUs is at least the threshold on one of them by the time it is met.
pub fn set_alarms(probe: &Probe, cfg: &L4Config, t: &AlarmThresholds) -> Result<()> {
    let ncpu = libbpf_rs::num_possible_cpus().map_or(1, |n| n.max(1) as u64);
    let share = |n: u64| {
        if n == 0 {
            0
        } else {
            n.div_ceil(ncpu).clamp(1, u64::from(u32::MAX)) as u32
        }
    };
    let (syn, rst) = t.counts(Duration::from_millis(cfg.window_ms));
    let a = super::skel::types::gw_l4_alarm_cfg {
        svc_syn: share(syn),
        svc_rst: share(rst),
        // a scan sends at least one SYN per port or host it looks for
        src_syn: share(t.scan_min),
        ..Default::default()
    };
    // SAFETY: plain-old-data generated from BTF, viewed as its bytes.
    let bytes = unsafe {
        std::slice::from_raw_parts(
            (&a as *const super::skel::types::gw_l4_alarm_cfg).cast::<u8>(),
            std::mem::size_of_val(&a),
        )
    };
    probe
        .skel
        .maps
        .gw_l4_alarm
        .update(&0u32.to_ne_bytes(), bytes, MapFlags::ANY)
        .context("writing the L4 alarm thresholds")
}

/// Sum a key's per-CPU counters; `delete` takes it out of the map too (the
/// kernel starts a fresh entry with its next packet; a packet counted between
/// the read and the delete is lost: a few at most, on a key being flooded).
fn read_key(map: &impl MapCore, k: &[u8], delete: bool) -> Result<Option<Entry>> {
    let per_cpu = map
        .lookup_percpu(k, MapFlags::ANY)
        .context("reading l4 counters")?;
    if delete {
        let _ = map.delete(k);
    }
    let (Some(per_cpu), Some(key)) = (per_cpu, read_pod::<gw_l4_key>(k)) else {
        return Ok(None);
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
    Ok(Some(Entry { key, val: sum }))
}

fn take(map: &impl MapCore, k: &[u8]) -> Result<Option<Entry>> {
    read_key(map, k, true)
}

#[derive(Debug)]
pub struct L4Windows {
    window_start: Instant,
    /// Keys whose window an alarm cut: when their next window began.
    early: HashMap<Vec<u8>, Instant>,
    /// Keys raised by the kernel whose sum over CPUs has not met the
    /// threshold yet: looked at again every RECHECK.
    pending: std::collections::HashSet<Vec<u8>>,
    checked_at: Option<Instant>,
}

impl Default for L4Windows {
    fn default() -> Self {
        L4Windows {
            window_start: Instant::now(),
            early: HashMap::new(),
            pending: Default::default(),
            checked_at: None,
        }
    }
}

/// Keys raised at once, at most, and how often they are read again: the
/// bound on the syscalls alarms cost (a busy network raises many source
/// prefixes whose distinct ports or hosts stay below a scan's).
const MAX_PENDING: usize = 1024;
const RECHECK: Duration = Duration::from_millis(20);

impl L4Windows {
    /// Whether the regular window has run its length.
    pub fn due(&self, cfg: &L4Config) -> bool {
        self.window_start.elapsed() >= Duration::from_millis(cfg.window_ms)
    }

    /// An alarm record from the kernel: the key is looked at from now on.
    pub fn raised(&mut self, key: &[u8]) {
        if self.pending.len() < MAX_PENDING {
            self.pending.insert(key.to_vec());
        }
    }

    /// Raised keys whose counts meet a threshold: their windows are cut now
    /// and returned as partial windows. A partial window's rates are its
    /// counts over the whole window length (`l4.window_ms` of config): the
    /// least the window would have shown, so a rule decides on it exactly as
    /// it would have at the window's end.
    pub fn cut_raised(
        &mut self,
        probe: &Probe,
        cfg: &L4Config,
        t: &AlarmThresholds,
        now_unix_ns: i128,
    ) -> Result<Vec<Event>> {
        if self.pending.is_empty() || self.checked_at.is_some_and(|t| t.elapsed() < RECHECK) {
            return Ok(Vec::new());
        }
        self.checked_at = Some(Instant::now());
        let length = Duration::from_millis(cfg.window_ms);
        let (syn_min, rst_min) = t.counts(length);
        let map = &probe.skel.maps.gw_l4;
        let keys: Vec<Vec<u8>> = self.pending.iter().cloned().collect();
        let mut out = Vec::new();
        for key in keys {
            // A window already cut once runs its full length: one partial
            // window per flood onset, not one per threshold's worth of SYNs.
            if self.early.get(&key).is_some_and(|at| at.elapsed() < length) {
                self.pending.remove(&key);
                continue;
            }
            let Some(e) = read_key(map, &key, false)? else {
                self.pending.remove(&key);
                continue;
            };
            let v = &e.val;
            let met = if e.key.scope == 0 {
                (syn_min > 0 && v.syn >= syn_min) || (rst_min > 0 && v.rst >= rst_min)
            } else {
                estimate(&v.bits_a).0 >= t.scan_min || estimate(&v.bits_b).0 >= t.scan_min
            };
            if !met {
                continue;
            }
            self.pending.remove(&key);
            let Some(e) = take(map, &key)? else {
                continue;
            };
            let now = Instant::now();
            let began = self.early.get(&key).copied().unwrap_or(self.window_start);
            self.early.insert(key, now);
            let window_ms = now.duration_since(began).as_millis().max(1) as u64;
            let sources = if e.key.scope == 0 {
                top_sources(map, cfg)?
            } else {
                Vec::new()
            };
            out.extend(event_of(
                cfg,
                &e,
                window_ms,
                &sources,
                Some(length),
                now_unix_ns,
            ));
        }
        Ok(out)
    }

    /// The regular flush: every key whose window has run its length (keys cut
    /// by an alarm wait until theirs has).
    pub fn flush(
        &mut self,
        probe: &Probe,
        cfg: &L4Config,
        now_unix_ns: i128,
    ) -> Result<Vec<Event>> {
        let now = Instant::now();
        let length = Duration::from_millis(cfg.window_ms);
        let regular_ms = now.duration_since(self.window_start).as_millis().max(1) as u64;
        self.window_start = now;
        let map = &probe.skel.maps.gw_l4;
        let keys: Vec<Vec<u8>> = map.keys().collect();
        let mut entries = Vec::with_capacity(keys.len());
        for k in keys {
            let window_ms = match self.early.get(&k) {
                Some(&at) if now.duration_since(at) < length => continue,
                Some(&at) => now.duration_since(at).as_millis().max(1) as u64,
                None => regular_ms,
            };
            self.early.remove(&k);
            self.pending.remove(&k);
            if let Some(e) = take(map, &k)? {
                entries.push((e, window_ms));
            }
        }
        // Keys cut by an alarm that saw no packet since: their window is over.
        self.early.retain(|_, at| now.duration_since(*at) < length);

        let prefix_len = |v: u8| if v == 4 { cfg.prefix_v4 } else { cfg.prefix_v6 };
        let mut sources: Vec<TopSource> = entries
            .iter()
            .filter(|(e, _)| e.key.scope == 1 && e.val.syn > 0)
            .filter_map(|(e, _)| {
                addr(&e.key.addr, e.key.ip_version).map(|ip| TopSource {
                    prefix: format!("{ip}/{}", prefix_len(e.key.ip_version)),
                    syn: e.val.syn,
                })
            })
            .collect();
        sources.sort_by_key(|s| std::cmp::Reverse(s.syn));
        sources.truncate(cfg.top_sources);
        Ok(entries
            .iter()
            .filter_map(|(e, ms)| event_of(cfg, e, *ms, &sources, None, now_unix_ns))
            .collect())
    }
}

/// The busiest source prefixes counted so far (read, not taken): for a
/// service window cut early. At most TOP_SCAN keys are read.
fn top_sources(map: &impl MapCore, cfg: &L4Config) -> Result<Vec<TopSource>> {
    const TOP_SCAN: usize = 4096;
    let mut found = Vec::new();
    for k in map.keys().take(TOP_SCAN) {
        if k.get(19) != Some(&1) {
            continue; // struct gw_l4_key's scope byte: sources only
        }
        if let Some(e) = read_key(map, &k, false)? {
            if e.val.syn == 0 {
                continue;
            }
            if let Some(ip) = addr(&e.key.addr, e.key.ip_version) {
                let len = if e.key.ip_version == 4 {
                    cfg.prefix_v4
                } else {
                    cfg.prefix_v6
                };
                found.push(TopSource {
                    prefix: format!("{ip}/{len}"),
                    syn: e.val.syn,
                });
            }
        }
    }
    found.sort_by_key(|s| std::cmp::Reverse(s.syn));
    found.truncate(cfg.top_sources);
    Ok(found)
}

/// One key's window as an `l4_window` event (None below `min_packets`).
/// `partial_of`: the window length a partial window's rates are taken over.
fn event_of(
    cfg: &L4Config,
    e: &Entry,
    window_ms: u64,
    sources: &[TopSource],
    partial_of: Option<Duration>,
    now_unix_ns: i128,
) -> Option<Event> {
    let partial = partial_of.is_some();
    let v = &e.val;
    if !partial && v.syn + v.rst < cfg.min_packets && v.synack + v.fin < cfg.min_packets {
        return None;
    }
    let ip = addr(&e.key.addr, e.key.ip_version)?;
    let prefix_len = if e.key.ip_version == 4 {
        cfg.prefix_v4
    } else {
        cfg.prefix_v6
    };
    let service = e.key.scope == 0;
    let (a, sat_a) = estimate(&v.bits_a);
    let (b, sat_b) = estimate(&v.bits_b);
    let secs = match partial_of {
        Some(length) => length.as_secs_f64().max(1e-3),
        None => (window_ms.max(1) as f64) / 1000.0,
    };
    let (syn_rate, rst_rate) = (v.syn as f64 / secs, v.rst as f64 / secs);
    let l4 = L4Window {
        scope: if service { "service" } else { "source" }.to_string(),
        ip,
        port: service.then_some(e.key.port),
        prefix: (!service).then(|| format!("{ip}/{prefix_len}")),
        window_ms,
        syn: v.syn,
        synack: v.synack,
        rst: v.rst,
        fin: v.fin,
        syn_rate,
        rst_rate,
        partial,
        synack_ratio: (service && v.syn > 0).then(|| v.synack as f64 / v.syn as f64),
        distinct_sources: (service && v.syn > 0).then_some(a),
        distinct_ports: (!service && v.syn > 0).then_some(a),
        distinct_hosts: (!service && v.syn > 0).then_some(b),
        estimate_saturated: v.syn > 0 && (sat_a || (!service && sat_b)),
        top_sources: if service && v.syn > 0 {
            sources.to_vec()
        } else {
            Vec::new()
        },
    };
    Some(Event {
        kind: EventKind::L4Window,
        time: crate::events::EventTime::from_unix_ns(now_unix_ns),
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
    })
}

/// Read and clear every key at once; returns the window's events (tests and
/// tools that do not keep an [`L4Windows`]).
pub fn flush(
    probe: &Probe,
    cfg: &L4Config,
    window_ms: u64,
    now_unix_ns: i128,
) -> Result<Vec<Event>> {
    let mut w = L4Windows {
        window_start: Instant::now()
            .checked_sub(Duration::from_millis(window_ms))
            .unwrap_or_else(Instant::now),
        ..L4Windows::default()
    };
    w.flush(probe, cfg, now_unix_ns)
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
