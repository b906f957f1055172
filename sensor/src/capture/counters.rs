//! Names of the kernel's per-CPU counters (`enum gw_counter`) and their sums.

use serde::Serialize;

/// In `enum gw_counter` order.
pub const COUNTER_NAMES: [&str; 22] = [
    "packets_seen",
    "tcp_payload_packets",
    "http_requests",
    "http_responses",
    "ringbuf_drops",
    "truncated",
    "malformed",
    "flow_continued",
    "flow_lost",
    "flow_saved",
    "non_ip",
    "short_headers",
    "fragments",
    "not_http",
    "l4_map_full",
    "shed_packets",
    "parse_ns",
    "flow_table_full",
    "pipeline_left",
    "secret_lost",
    "overlap_trimmed",
    "tcp_fragments",
];

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct KernelCounters {
    pub values: [u64; COUNTER_NAMES.len()],
}

impl KernelCounters {
    pub fn get(&self, name: &str) -> u64 {
        COUNTER_NAMES
            .iter()
            .position(|n| *n == name)
            .map(|i| self.values[i])
            .unwrap_or(0)
    }

    pub fn delta(&self, earlier: &KernelCounters) -> KernelCounters {
        let mut d = KernelCounters::default();
        for (i, v) in d.values.iter_mut().enumerate() {
            *v = self.values[i].saturating_sub(earlier.values[i]);
        }
        d
    }

    pub fn as_pairs(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        COUNTER_NAMES
            .iter()
            .copied()
            .zip(self.values.iter().copied())
    }
}
