/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* CPU budget (capture.cpu_budget_percent), shared by the packet and TLS
 * programs. Off by default: every connection is inspected. When on, both
 * programs time their own parsing (GW_CNT_PARSE_NS) and userspace keeps the
 * cost within budget by lowering the share of connections (out of 65536)
 * whose bytes are parsed (sensor/src/capture/governor.rs).
 *
 * The choice is per connection, by a keyed hash that is the same in both
 * directions, so a request and its response are inspected or skipped together
 * and a skipped message's later segments are skipped too. It is made before
 * any flow lookup: a skipped packet costs a hash and a counter. While
 * sampling, userspace draws a new key every few seconds so that a gateway with
 * a few long-lived connections (behind a load balancer) has each of them
 * inspected in turn; for a grace period after a new key (body_wait_ms, set
 * and cleared by userspace so that skipped packets never read a clock), a
 * message already under way is finished rather than cut. The TLS object reuses the packet
 * object's gw_admit map. */
#ifndef GW_BUDGET_H
#define GW_BUDGET_H

const volatile __u8 gw_budget_on = 0;

/* Written by userspace only (one writer); a reader may see a torn update for
 * one packet, which costs at most that packet's sampling decision. */
struct gw_admit_state {
	__u64 key; /* the hash key, fresh per load and per rotation */
	__u32 admit; /* connections whose bucket is below this are inspected */
	__u32 grace; /* 1 for body_wait_ms after a new key (userspace clears it) */
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct gw_admit_state);
} gw_admit SEC(".maps");

enum gw_admission {
	GW_SKIP = 0,
	GW_INSPECT = 1,
	/* skip, unless this connection has a message under way (key just rotated) */
	GW_SKIP_IF_IDLE = 2,
};

/* The decision for a connection given as 64 bits that are the same in both of
 * its directions. murmur3's 64-bit finaliser over the keyed value spreads
 * neighbouring ports and pointers over the 65536 buckets. */
static __always_inline int gw_admission(__u64 conn)
{
	__u32 zero = 0;
	struct gw_admit_state *st = bpf_map_lookup_elem(&gw_admit, &zero);
	__u64 h;

	if (!st)
		return GW_INSPECT;
	h = conn ^ st->key;
	h ^= h >> 33;
	h *= 0xff51afd7ed558ccdULL;
	h ^= h >> 33;
	h *= 0xc4ceb9fe1a85ec53ULL;
	h ^= h >> 33;
	if ((h & 0xffff) < st->admit)
		return GW_INSPECT;
	if (st->grace)
		return GW_SKIP_IF_IDLE;
	return GW_SKIP;
}

#endif
