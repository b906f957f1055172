//! Messages left waiting in the kernel's flow table for a body that never came.
//!
//! The kernel emits a message that waits for its body (a JSON-RPC POST) when the
//! body arrives, at FIN/RST, or when the flow's next bytes come after
//! `capture.body_wait_ms`. A flow that goes completely silent sends no next
//! bytes, so once a second this sweep takes such entries out of the map (lookup
//! and delete in one call: the kernel and the sweep never both emit one) and
//! hands them on as events with `body_scan: "ended"`. Without it they would sit
//! until the LRU evicted them, and vanish uncounted.

use libbpf_rs::{MapCore, MapFlags};

use super::decode::Decoder;
use super::skel::types::{gw_http_event, gw_work};
use super::Probe;
use crate::events::Event;

/// `GW_S_JBODY` and `GW_SCAN_ENDED` in bpf/include/gw_http.h / gw_events.h.
const STATE_JBODY: u8 = 15;
const SCAN_ENDED: u8 = 5;

fn read_work(bytes: &[u8]) -> Option<gw_work> {
    if bytes.len() < std::mem::size_of::<gw_work>() {
        return None;
    }
    // SAFETY: gw_work is plain-old-data generated from the object's BTF; any bit
    // pattern is valid and the length was checked.
    Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<gw_work>()) })
}

/// Takes out every entry that has waited longer than `wait_ns` for its body and
/// returns the events, plus how many entries could not be decoded.
pub fn release_waiting(probe: &Probe, wait_ns: u64, decoder: &mut Decoder) -> (Vec<Event>, u64) {
    let map = &probe.skel.maps.gw_flows;
    let now = super::clock::boot_ns();
    let mut out = Vec::new();
    let mut errors = 0;
    let keys: Vec<Vec<u8>> = map.keys().collect();
    for key in keys {
        let Ok(Some(value)) = map.lookup(&key, MapFlags::ANY) else {
            continue;
        };
        let Some(w) = read_work(&value) else {
            errors += 1;
            continue;
        };
        if w.ps.state != STATE_JBODY || now.saturating_sub(w.ev.hdr.ts_boot_ns) <= wait_ns {
            continue;
        }
        let Ok(Some(taken)) = map.lookup_and_delete(&key) else {
            continue; // the kernel took it first
        };
        let Some(mut w) = read_work(&taken) else {
            errors += 1;
            continue;
        };
        if w.ps.state != STATE_JBODY {
            // Replaced between the two reads by a newer message: put it back.
            let _ = map.update(&key, &taken, MapFlags::NO_EXIST);
            continue;
        }
        w.ev.mcp.result = SCAN_ENDED;
        // SAFETY: gw_http_event is plain-old-data; the slice covers exactly it.
        let bytes = unsafe {
            std::slice::from_raw_parts(
                (&w.ev as *const gw_http_event).cast::<u8>(),
                std::mem::size_of::<gw_http_event>(),
            )
        };
        match decoder.decode(bytes, None) {
            Ok(ev) => out.push(ev),
            Err(_) => errors += 1,
        }
    }
    (out, errors)
}
