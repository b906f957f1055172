//! Helpers for tests that load the real BPF programs: root check and frame builders.
#![allow(dead_code)]

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Skip (with a visible note) when not root: loading BPF needs privileges.
#[macro_export]
macro_rules! require_root {
    () => {
        if !common::is_root() {
            eprintln!("SKIPPED: needs root to load BPF programs");
            return;
        }
    };
}

pub struct Flow {
    pub src: [u8; 4],
    pub dst: [u8; 4],
    pub sport: u16,
    pub dport: u16,
}

pub const FLOW: Flow = Flow {
    src: [10, 0, 0, 1],
    dst: [10, 0, 0, 2],
    sport: 40000,
    dport: 8080,
};

fn tcp(sport: u16, dport: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
    tcp_flags(sport, dport, seq, 0x18, payload)
}

fn tcp_flags(sport: u16, dport: u16, seq: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut t = Vec::with_capacity(20 + payload.len());
    t.extend_from_slice(&sport.to_be_bytes());
    t.extend_from_slice(&dport.to_be_bytes());
    t.extend_from_slice(&seq.to_be_bytes());
    t.extend_from_slice(&0u32.to_be_bytes());
    t.extend_from_slice(&[0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
    t.extend_from_slice(payload);
    t
}

/// Ethernet + IPv4 + TCP frame.
pub fn v4(flow: &Flow, seq: u32, payload: &[u8]) -> Vec<u8> {
    v4_vlan(flow, seq, payload, None)
}

/// Ethernet + IPv4 + TCP frame with the given TCP flags and no payload.
pub fn v4_ctl(flow: &Flow, flags: u8) -> Vec<u8> {
    v4_seg(flow, tcp_flags(flow.sport, flow.dport, 1, flags, b""), None)
}

pub fn v4_vlan(flow: &Flow, seq: u32, payload: &[u8], vlan: Option<u16>) -> Vec<u8> {
    v4_seg(flow, tcp(flow.sport, flow.dport, seq, payload), vlan)
}

fn v4_seg(flow: &Flow, seg: Vec<u8>, vlan: Option<u16>) -> Vec<u8> {
    let mut f = vec![0u8; 12];
    if let Some(id) = vlan {
        f.extend_from_slice(&[0x81, 0x00]);
        f.extend_from_slice(&id.to_be_bytes());
    }
    f.extend_from_slice(&[0x08, 0x00]);
    let total = (20 + seg.len()) as u16;
    f.extend_from_slice(&[0x45, 0]);
    f.extend_from_slice(&total.to_be_bytes());
    f.extend_from_slice(&[0, 0, 0x40, 0, 64, 6, 0, 0]);
    f.extend_from_slice(&flow.src);
    f.extend_from_slice(&flow.dst);
    f.extend_from_slice(&seg);
    f
}

/// Ethernet + IPv6 + TCP frame.
pub fn v6(
    src: [u8; 16],
    dst: [u8; 16],
    sport: u16,
    dport: u16,
    seq: u32,
    payload: &[u8],
) -> Vec<u8> {
    let seg = tcp(sport, dport, seq, payload);
    let mut f = vec![0u8; 12];
    f.extend_from_slice(&[0x86, 0xdd]);
    f.extend_from_slice(&[0x60, 0, 0, 0]);
    f.extend_from_slice(&(seg.len() as u16).to_be_bytes());
    f.extend_from_slice(&[6, 64]);
    f.extend_from_slice(&src);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&seg);
    f
}
