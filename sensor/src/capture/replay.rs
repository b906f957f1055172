//! Offline replay: each frame of a pcap or pcapng file runs through the very
//! same TC program with BPF_PROG_TEST_RUN, and the events it emits are read
//! back from the ring buffer right after. Frames larger than test_run accepts
//! are re-segmented into TCP segments, which the kernel parser joins again.

use std::cell::RefCell;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;
use std::rc::Rc;
use std::time::Duration;

use anyhow::{Context, Result};
use libbpf_rs::{ProgramInput, RingBuffer, RingBufferBuilder};
use pcap_file::pcap::PcapReader;
use pcap_file::pcapng::blocks::interface_description::InterfaceDescriptionOption;
use pcap_file::pcapng::{Block, PcapNgReader};
use pcap_file::DataLink;
use serde::Serialize;
use thiserror::Error;

use super::decode::Decoder;
use super::Probe;
use crate::events::{CaptureSource, Event};

/// test_run copies at most about one page of packet data into its skb.
const MAX_TEST_RUN_FRAME: usize = 3000;
const SEGMENT_PAYLOAD: usize = 1400;

#[derive(Debug, Error)]
pub enum ReplayError {
    #[error("{path}: not a pcap or pcapng file ({detail})")]
    Format { path: String, detail: String },
    #[error("{path}: packet #{packet}: {detail}")]
    Packet {
        path: String,
        packet: u64,
        detail: String,
    },
}

/// What happened to the frames of one replay.
#[derive(Debug, Default, Clone, Serialize)]
pub struct ReplayStats {
    pub packets: u64,
    pub events: u64,
    pub skipped_link_type: u64,
    pub skipped_short: u64,
    pub resegmented: u64,
    /// Frames the kernel's test_run refused (e.g. an IP header cut short).
    pub skipped_invalid: u64,
    pub decode_errors: u64,
}

struct Frame {
    /// 1-based record number in the file, for messages.
    record: u64,
    ts_ns: i128,
    data: Vec<u8>,
}

/// Convert a captured frame to Ethernet, which is what the TC program expects.
fn to_ethernet(link: DataLink, data: &[u8]) -> Option<Vec<u8>> {
    let eth = |proto: u16, payload: &[u8]| {
        let mut v = Vec::with_capacity(payload.len() + 14);
        v.extend_from_slice(&[0u8; 12]);
        v.extend_from_slice(&proto.to_be_bytes());
        v.extend_from_slice(payload);
        v
    };
    let by_version = |payload: &[u8]| -> Option<Vec<u8>> {
        match payload.first()? >> 4 {
            4 => Some(eth(0x0800, payload)),
            6 => Some(eth(0x86dd, payload)),
            _ => None,
        }
    };
    match link {
        DataLink::ETHERNET => Some(data.to_vec()),
        DataLink::RAW | DataLink::IPV4 | DataLink::IPV6 => by_version(data),
        // BSD loopback: 4-byte address family, then IP.
        DataLink::NULL | DataLink::LOOP => by_version(data.get(4..)?),
        // Linux cooked capture v1: 16-byte header, protocol at 14..16.
        DataLink::LINUX_SLL => {
            let proto = u16::from_be_bytes([*data.get(14)?, *data.get(15)?]);
            Some(eth(proto, data.get(16..)?))
        }
        // v2: 20-byte header, protocol at 0..2.
        DataLink::LINUX_SLL2 => {
            let proto = u16::from_be_bytes([*data.first()?, *data.get(1)?]);
            Some(eth(proto, data.get(20..)?))
        }
        _ => None,
    }
}

/// Split an oversized TCP frame (GSO/GRO captures) into MSS-sized segments.
fn resegment(frame: &[u8]) -> Option<Vec<Vec<u8>>> {
    let mut l3 = 14;
    let mut proto = u16::from_be_bytes([*frame.get(12)?, *frame.get(13)?]);
    while proto == 0x8100 || proto == 0x88a8 {
        proto = u16::from_be_bytes([*frame.get(l3 + 2)?, *frame.get(l3 + 3)?]);
        l3 += 4;
    }
    let (l4, v6) = match proto {
        0x0800 => {
            let ihl = usize::from(frame.get(l3)? & 0x0f) * 4;
            if *frame.get(l3 + 9)? != 6 || ihl < 20 {
                return None;
            }
            (l3 + ihl, false)
        }
        0x86dd if *frame.get(l3 + 6)? == 6 => (l3 + 40, true),
        _ => return None,
    };
    // A data offset below the 20-byte TCP header is malformed: the stack
    // drops such a segment, and splitting it would index past the header.
    let doff = usize::from(frame.get(l4 + 12)? >> 4) * 4;
    if doff < 20 {
        return None;
    }
    let payload_at = l4 + doff;
    let payload = frame.get(payload_at..)?;
    let seq = u32::from_be_bytes(frame.get(l4 + 4..l4 + 8)?.try_into().ok()?);
    let mut out = Vec::new();
    for (i, chunk) in payload.chunks(SEGMENT_PAYLOAD).enumerate() {
        let mut seg = frame.get(..payload_at)?.to_vec();
        seg.extend_from_slice(chunk);
        let new_seq = seq.wrapping_add((i * SEGMENT_PAYLOAD) as u32);
        seg[l4 + 4..l4 + 8].copy_from_slice(&new_seq.to_be_bytes());
        if v6 {
            let len = (seg.len() - l3 - 40) as u16;
            seg[l3 + 4..l3 + 6].copy_from_slice(&len.to_be_bytes());
        } else {
            let len = (seg.len() - l3) as u16;
            seg[l3 + 2..l3 + 4].copy_from_slice(&len.to_be_bytes());
        }
        out.push(seg);
    }
    Some(out)
}

fn tsresol_ns(opts: &[InterfaceDescriptionOption]) -> (u128, u128) {
    // (multiplier, divisor) turning raw timestamp units into ns; default is µs.
    for o in opts {
        if let InterfaceDescriptionOption::IfTsResol(r) = o {
            let r = *r;
            if r & 0x80 == 0 {
                let exp = u32::from(r);
                return if exp <= 9 {
                    (10u128.pow(9 - exp), 1)
                } else {
                    (1, 10u128.pow((exp - 9).min(30)))
                };
            }
            let exp = u32::from(r & 0x7f).min(100);
            return (1_000_000_000, 1u128 << exp.min(127));
        }
    }
    (1000, 1)
}

/// Read every frame, failing with the packet number on a broken file.
fn read_frames(path: &Path, stats: &mut ReplayStats) -> Result<Vec<Frame>, ReplayError> {
    let name = path.display().to_string();
    let file = File::open(path).map_err(|e| ReplayError::Format {
        path: name.clone(),
        detail: e.to_string(),
    })?;
    frames_from(BufReader::new(file), &name, stats)
}

/// What `replay` makes of a capture before the kernel sees it: the frames
/// (re-segmented where test_run would refuse them) and the counted skips.
/// The fuzz target (fuzz/fuzz_targets/replay_pcap.rs) drives this with
/// arbitrary bytes: every length read from the file or a frame is checked.
pub fn parse_capture(bytes: &[u8]) -> Result<(Vec<Vec<u8>>, ReplayStats), ReplayError> {
    let mut stats = ReplayStats::default();
    let frames = frames_from(bytes, "<memory>", &mut stats)?;
    let mut out = Vec::new();
    for f in &frames {
        if let Some(pieces) = test_run_pieces(&f.data, &mut stats) {
            out.extend(pieces.into_iter().filter(|p| p.len() <= MAX_TEST_RUN_FRAME));
        }
    }
    Ok((out, stats))
}

/// The frame as test_run takes it: itself, or re-segmented when too large
/// (None, counted as short, when it cannot be split).
fn test_run_pieces(frame: &[u8], stats: &mut ReplayStats) -> Option<Vec<Vec<u8>>> {
    if frame.len() <= MAX_TEST_RUN_FRAME {
        return Some(vec![frame.to_vec()]);
    }
    stats.resegmented += 1;
    let pieces = resegment(frame);
    if pieces.is_none() {
        stats.skipped_short += 1;
    }
    pieces
}

fn frames_from(
    reader: impl Read,
    name: &str,
    stats: &mut ReplayStats,
) -> Result<Vec<Frame>, ReplayError> {
    let name = name.to_string();
    let mut reader = BufReader::new(reader);
    let magic = {
        use std::io::BufRead;
        let buf = reader.fill_buf().map_err(|e| ReplayError::Format {
            path: name.clone(),
            detail: format!("cannot read magic number: {e}"),
        })?;
        if buf.len() < 4 {
            return Err(ReplayError::Format {
                path: name.clone(),
                detail: "cannot read magic number: file shorter than 4 bytes".into(),
            });
        }
        [buf[0], buf[1], buf[2], buf[3]]
    };
    let mut frames = Vec::new();
    let mut n = 0u64;
    let push =
        |frames: &mut Vec<Frame>, stats: &mut ReplayStats, record, link, ts_ns, data: &[u8]| {
            match to_ethernet(link, data) {
                Some(eth) if eth.len() >= 14 => frames.push(Frame {
                    record,
                    ts_ns,
                    data: eth,
                }),
                Some(_) => stats.skipped_short += 1,
                None => stats.skipped_link_type += 1,
            }
        };
    if magic == [0x0a, 0x0d, 0x0d, 0x0a] {
        let mut r = PcapNgReader::new(reader).map_err(|e| ReplayError::Format {
            path: name.clone(),
            detail: e.to_string(),
        })?;
        while let Some(block) = r.next_block() {
            let block = block.map_err(|e| ReplayError::Packet {
                path: name.clone(),
                packet: n + 1,
                detail: format!("truncated or corrupt block: {e}"),
            })?;
            let (iface, ts_raw, data) = match block {
                Block::EnhancedPacket(epb) => (
                    epb.interface_id,
                    epb.timestamp.as_nanos(),
                    epb.data.into_owned(),
                ),
                Block::SimplePacket(spb) => (0, 0, spb.data.into_owned()),
                _ => continue,
            };
            n += 1;
            let idb = r
                .interfaces()
                .get(iface as usize)
                .ok_or_else(|| ReplayError::Packet {
                    path: name.clone(),
                    packet: n,
                    detail: format!("refers to interface {iface}, which the file never describes"),
                })?;
            let (mul, div) = tsresol_ns(&idb.options);
            let ts_ns = (ts_raw.saturating_mul(mul) / div) as i128;
            push(&mut frames, stats, n, idb.linktype, ts_ns, &data);
        }
    } else {
        let mut r = PcapReader::new(reader).map_err(|e| ReplayError::Format {
            path: name.clone(),
            detail: e.to_string(),
        })?;
        let link = r.header().datalink;
        while let Some(pkt) = r.next_packet() {
            n += 1;
            let pkt = pkt.map_err(|e| ReplayError::Packet {
                path: name.clone(),
                packet: n,
                detail: format!("truncated or corrupt record: {e}"),
            })?;
            push(
                &mut frames,
                stats,
                n,
                link,
                pkt.timestamp.as_nanos() as i128,
                &pkt.data,
            );
        }
    }
    stats.packets = n;
    Ok(frames)
}

type Records = Rc<RefCell<Vec<Vec<u8>>>>;

/// A ring buffer whose records are collected, to be read synchronously right
/// after each test_run (so every event is tied to the frame that caused it).
fn collecting_ring(probe: &Probe) -> Result<(RingBuffer<'static>, Records)> {
    let records: Records = Rc::default();
    let sink = Rc::clone(&records);
    let mut builder = RingBufferBuilder::new();
    builder
        .add(&probe.skel.maps.gw_events, move |data: &[u8]| {
            sink.borrow_mut().push(data.to_vec());
            0
        })
        .context("opening ring buffer")?;
    Ok((builder.build().context("opening ring buffer")?, records))
}

/// Replay `path` through the loaded program; `emit` gets each event in order.
pub fn replay(
    probe: &Probe,
    path: &Path,
    mut emit: impl FnMut(Event) -> Result<()>,
) -> Result<ReplayStats> {
    let mut stats = ReplayStats::default();
    let frames = read_frames(path, &mut stats)?;
    let (ring, records) = collecting_ring(probe)?;
    let mut decoder = Decoder::new(probe.table.slot_names.clone(), CaptureSource::Replay);
    let prog = &probe.skel.progs.gw_tc_ingress;

    for frame in &frames {
        let Some(pieces) = test_run_pieces(&frame.data, &mut stats) else {
            continue;
        };
        for piece in pieces.iter().filter(|p| p.len() <= MAX_TEST_RUN_FRAME) {
            let input = ProgramInput {
                data_in: Some(piece),
                ..Default::default()
            };
            // The kernel refuses frames it cannot build an skb from (an IP header
            // cut short): a counted skip, like any other malformed frame.
            if let Err(e) = prog.test_run(input) {
                stats.skipped_invalid += 1;
                tracing::debug!("{}: packet #{}: not run: {e}", path.display(), frame.record);
            }
        }
        ring.consume().context("reading ring buffer")?;
        for rec in records.borrow_mut().drain(..) {
            match decoder.decode(&rec, Some(frame.ts_ns)) {
                Ok(ev) => {
                    stats.events += 1;
                    emit(ev)?;
                }
                Err(e) => {
                    stats.decode_errors += 1;
                    tracing::warn!("undecodable event after packet #{}: {e}", frame.record);
                }
            }
        }
    }
    let _ = ring.poll(Duration::ZERO);
    Ok(stats)
}

/// Run Ethernet frames through the program and return the events they produce,
/// in order. Used by tests and benchmarks; frames must fit test_run's limit.
pub fn run_frames(probe: &Probe, frames: &[Vec<u8>]) -> Result<Vec<Event>> {
    let mut decoder = Decoder::new(probe.table.slot_names.clone(), CaptureSource::Replay);
    run_frames_raw(probe, frames)?
        .iter()
        .map(|rec| Ok(decoder.decode(rec, Some(0))?))
        .collect()
}

/// The ring-buffer records themselves, byte for byte, as userspace receives
/// them before decoding: what tests search for secrets the kernel must not let out.
pub fn run_frames_raw(probe: &Probe, frames: &[Vec<u8>]) -> Result<Vec<Vec<u8>>> {
    let (ring, records) = collecting_ring(probe)?;
    let mut out = Vec::new();
    for (i, frame) in frames.iter().enumerate() {
        let input = ProgramInput {
            data_in: Some(frame),
            ..Default::default()
        };
        probe
            .skel
            .progs
            .gw_tc_ingress
            .test_run(input)
            .with_context(|| format!("frame #{}: BPF_PROG_TEST_RUN", i + 1))?;
        ring.consume().context("reading ring buffer")?;
        out.extend(records.borrow_mut().drain(..));
    }
    Ok(out)
}

/// Time the program on one frame with test_run's repeat: average ns per run.
pub fn time_frame(probe: &Probe, frame: &[u8], repeat: u32) -> Result<u128> {
    let input = ProgramInput {
        data_in: Some(frame),
        repeat,
        ..Default::default()
    };
    let out = probe
        .skel
        .progs
        .gw_tc_ingress
        .test_run(input)
        .context("BPF_PROG_TEST_RUN")?;
    Ok(out.duration.as_nanos())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sll2_becomes_ethernet() {
        let mut f = vec![0x08, 0x00];
        f.extend_from_slice(&[0u8; 18]);
        f.extend_from_slice(&[0x45, 0, 0, 20]);
        let e = to_ethernet(DataLink::LINUX_SLL2, &f).unwrap();
        assert_eq!(&e[12..14], &[0x08, 0x00]);
        assert_eq!(e[14], 0x45);
    }

    #[test]
    fn garbage_link_is_none_not_panic() {
        assert!(to_ethernet(DataLink::LINUX_SLL, &[1, 2, 3]).is_none());
        assert!(to_ethernet(DataLink::RAW, &[]).is_none());
        assert!(resegment(&[0u8; 5]).is_none());
    }

    /// An oversized IPv4 TCP frame as GRO captures have them.
    fn big_tcp_frame() -> Vec<u8> {
        let mut f = vec![0u8; 12];
        f.extend_from_slice(&[0x08, 0x00]);
        f.extend_from_slice(&[
            0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 6, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
        ]);
        f.extend_from_slice(&[
            0x1f, 0x90, 0x30, 0x39, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x18, 0xff, 0xff, 0, 0, 0, 0,
        ]);
        f.extend(std::iter::repeat_n(b'A', 3 * MAX_TEST_RUN_FRAME));
        f
    }

    #[test]
    fn a_tcp_data_offset_below_the_header_is_refused_not_a_panic() {
        let mut f = big_tcp_frame();
        assert!(resegment(&f).is_some_and(|p| p.len() > 1));
        for doff in 0..5u8 {
            f[14 + 20 + 12] = doff << 4;
            assert!(resegment(&f).is_none(), "data offset {doff}");
        }
    }

    #[test]
    fn mutated_oversized_frames_never_panic() {
        // A cheap in-suite mutator (xorshift): bytes of the link, IP and TCP
        // headers set at random, lengths cut anywhere.
        let base = big_tcp_frame();
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..20_000 {
            let mut f = base.clone();
            for _ in 0..(next() % 6 + 1) {
                let i = (next() % 60) as usize;
                f[i] = next() as u8;
            }
            let cut = (next() as usize) % (f.len() + 1);
            f.truncate(cut.max(next() as usize % 80));
            if let Some(pieces) = resegment(&f) {
                assert!(pieces.iter().all(|p| !p.is_empty()));
            }
        }
    }
}
