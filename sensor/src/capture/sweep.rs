//! Messages left in the kernel's flow tables by flows that went silent.
//!
//! The kernel keeps a message under way in a flow table (`gw_flows` for the
//! packet path, `gw_tls_conns` for TLS) until its flow's next bytes, FIN or
//! RST. The tables are plain hashes that never evict (an LRU would drop a
//! victim's message silently when a flood of partial flows fills it), so what
//! a silent or vanished flow leaves behind is taken out here, once a second,
//! with lookup-and-delete in one call (the kernel and the sweep never both
//! emit one message):
//! - a message waiting for its body longer than `capture.body_wait_ms` is
//!   emitted with `body_scan: "ended"`;
//! - a header block that has not ended `capture.flow_idle_secs` after it
//!   began is emitted flagged `truncated` (servers answer such requests);
//! - a body being skipped that long is forgotten, counted as expired.
//!
//! The secret part of a message cut mid-credential is not in these tables
//! but in a stash the kernel created write-only for userspace
//! (`GW_SECRET_STASH`); the sweep can delete its entry, never read it.

use libbpf_rs::{MapCore, MapFlags};

use super::decode::Decoder;
use super::skel::types::{gw_http_event, gw_work};
use super::Probe;
use crate::events::Event;

/// `enum gw_state` values in bpf/include/gw_http.h.
const STATE_METHOD: u8 = 1;
const STATE_END_LF: u8 = 10;
const STATE_BODY: u8 = 13;
const STATE_JBODY: u8 = 15;
/// `GW_SCAN_ENDED` in gw_events.h.
const SCAN_ENDED: u8 = 5;
/// `GW_AN_TRUNCATED` in gw_events.h.
const AN_TRUNCATED: u32 = 1 << 4;
/// `GW_AN_CL_AND_TE` in gw_events.h.
const AN_CL_AND_TE: u32 = 1 << 2;

/// When an entry has waited too long.
#[derive(Debug, Clone, Copy)]
pub struct SweepLimits {
    /// A message waiting for its body (`capture.body_wait_ms`).
    pub body_wait_ns: u64,
    /// A header block or a skipped body (`capture.flow_idle_secs`).
    pub idle_ns: u64,
}

/// What one sweep took out.
#[derive(Debug, Default)]
pub struct SweepOutcome {
    pub events: Vec<Event>,
    /// Entries that could not be decoded (a size mismatch: a bug, counted).
    pub decode_errors: u64,
    /// Entries taken out: header blocks emitted truncated and skipped bodies forgotten.
    pub expired: u64,
}

fn read_work(bytes: &[u8]) -> Option<gw_work> {
    if bytes.len() < std::mem::size_of::<gw_work>() {
        return None;
    }
    // SAFETY: gw_work is plain-old-data generated from the object's BTF; any bit
    // pattern is valid and the length was checked.
    Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<gw_work>()) })
}

fn in_header_block(state: u8) -> bool {
    (STATE_METHOD..=STATE_END_LF).contains(&state)
}

/// What the sweep does with an entry of this state and age, if anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Keep,
    /// Emit with the body scan ended.
    EndScan,
    /// Emit the header block, truncated.
    Cut,
    /// Forget (a body being skipped; its message went out already).
    Forget,
}

fn verdict(w: &gw_work, now: u64, limits: SweepLimits) -> Verdict {
    let age = now.saturating_sub(w.ev.hdr.ts_boot_ns);
    let state = w.ps.state;
    if state == STATE_JBODY {
        return if age > limits.body_wait_ns {
            Verdict::EndScan
        } else {
            Verdict::Keep
        };
    }
    if age <= limits.idle_ns {
        return Verdict::Keep;
    }
    if in_header_block(state) {
        Verdict::Cut
    } else if state == STATE_BODY {
        Verdict::Forget
    } else {
        // No other state is ever saved; an entry in one is stale all the same.
        Verdict::Forget
    }
}

/// Sweeps both tables of `probe` (and of the TLS probe, when loaded).
pub fn sweep(
    probe: &Probe,
    tls: Option<&super::tls::TlsProbe>,
    limits: SweepLimits,
    decoder: &mut Decoder,
) -> SweepOutcome {
    let mut out = SweepOutcome::default();
    let maps = &probe.skel.maps;
    sweep_table(
        &maps.gw_flows,
        &maps.gw_flow_secrets,
        limits,
        decoder,
        &mut out,
    );
    if let Some(t) = tls {
        let m = &t.skel.maps;
        sweep_table(
            &m.gw_tls_conns,
            &m.gw_tls_secrets,
            limits,
            decoder,
            &mut out,
        );
    }
    out
}

fn sweep_table(
    table: &impl MapCore,
    stash: &impl MapCore,
    limits: SweepLimits,
    decoder: &mut Decoder,
    out: &mut SweepOutcome,
) {
    let now = super::clock::boot_ns();
    let keys: Vec<Vec<u8>> = table.keys().collect();
    for key in keys {
        let Ok(Some(value)) = table.lookup(&key, MapFlags::ANY) else {
            continue;
        };
        let Some(w) = read_work(&value) else {
            out.decode_errors += 1;
            continue;
        };
        let first = verdict(&w, now, limits);
        if first == Verdict::Keep {
            continue;
        }
        let Ok(Some(taken)) = table.lookup_and_delete(&key) else {
            continue; // the kernel took it first
        };
        let Some(mut w) = read_work(&taken) else {
            out.decode_errors += 1;
            continue;
        };
        if verdict(&w, now, limits) != first {
            // Replaced between the two reads by a newer message: put it back.
            let _ = table.update(&key, &taken, MapFlags::NO_EXIST);
            continue;
        }
        if w.ps.secret_stashed != 0 {
            // Its hash state can never be completed now; the kernel stashed it
            // where only the programs read. Deleting is all userspace may do.
            let _ = stash.delete(&key);
        }
        match first {
            Verdict::EndScan => w.ev.mcp.result = SCAN_ENDED,
            Verdict::Cut => {
                out.expired += 1;
                w.ev.anomalies |= AN_TRUNCATED;
                w.ev.header_bytes = w.ps.bytes;
                if w.ps.cl_seen != 0 && w.ps.te_seen != 0 {
                    w.ev.anomalies |= AN_CL_AND_TE;
                }
            }
            Verdict::Forget => {
                out.expired += 1;
                continue;
            }
            Verdict::Keep => continue,
        }
        // SAFETY: gw_http_event is plain-old-data; the slice covers exactly it.
        let bytes = unsafe {
            std::slice::from_raw_parts(
                (&w.ev as *const gw_http_event).cast::<u8>(),
                std::mem::size_of::<gw_http_event>(),
            )
        };
        match decoder.decode(bytes, None) {
            Ok(ev) => out.events.push(ev),
            Err(_) => out.decode_errors += 1,
        }
    }
}
