/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* CPU budget (capture.cpu_budget_percent), shared by the packet and TLS
 * programs. Off by default: every connection is inspected. When on, both
 * programs time their own parsing (GW_CNT_PARSE_NS) and userspace keeps the
 * cost within budget by lowering gw_admit[0], the share of connections (out
 * of 65536) whose bytes are parsed (sensor/src/capture/governor.rs). The
 * choice is per connection, by a seeded hash that is the same in both
 * directions, so a request and its response are inspected or skipped
 * together and a skipped message's later segments are skipped too. It is made
 * before any flow lookup: a skipped packet or call costs a hash and a counter.
 * The TLS object reuses the packet object's gw_admit map. */
#ifndef GW_BUDGET_H
#define GW_BUDGET_H

const volatile __u8 gw_budget_on = 0;
const volatile __u64 gw_admit_seed = 0;

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} gw_admit SEC(".maps");

/* Whether a connection, given as 64 bits that are the same in both of its
 * directions, is inspected. murmur3's 64-bit finaliser over the seeded value
 * spreads neighbouring ports and pointers over the 65536 buckets. */
static __always_inline int gw_admitted(__u64 conn)
{
	__u32 zero = 0, *admit;
	__u64 h = conn ^ gw_admit_seed;

	h ^= h >> 33;
	h *= 0xff51afd7ed558ccdULL;
	h ^= h >> 33;
	h *= 0xc4ceb9fe1a85ec53ULL;
	h ^= h >> 33;
	admit = bpf_map_lookup_elem(&gw_admit, &zero);
	if (!admit || (h & 0xffff) < *admit)
		return 1;
	gw_count(GW_CNT_SHED_PACKETS);
	return 0;
}

#endif
