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

/* Whether to parse this packet or TLS call. `conn` identifies the connection
 * in 64 bits that are the same in both of its directions; murmur3's 64-bit
 * finaliser over the keyed value spreads neighbouring ports and pointers over
 * the 65536 buckets. During a grace, a skipped connection that has a message
 * under way (an entry in `flows` under `flow_key`) finishes it. */
static __always_inline int gw_inspected(__u64 conn, void *flows, const void *flow_key)
{
	__u32 zero = 0;
	struct gw_admit_state *st = bpf_map_lookup_elem(&gw_admit, &zero);
	__u64 h;

	if (!st)
		return 1;
	h = conn ^ st->key;
	h ^= h >> 33;
	h *= 0xff51afd7ed558ccdULL;
	h ^= h >> 33;
	h *= 0xc4ceb9fe1a85ec53ULL;
	h ^= h >> 33;
	if ((h & 0xffff) < st->admit || (st->grace && bpf_map_lookup_elem(flows, flow_key)))
		return 1;
	gw_count(GW_CNT_SHED_PACKETS);
	return 0;
}

/* Run `parse` (a statement) for an inspected connection: always without a
 * budget; with one, when gw_inspected says so, timed into GW_CNT_PARSE_NS. */
#define gw_budgeted(conn, flows, flow_key, parse)                                          \
	do {                                                                               \
		if (!gw_budget_on) {                                                       \
			parse;                                                             \
		} else if (gw_inspected(conn, flows, flow_key)) {                          \
			__u64 __t0 = bpf_ktime_get_ns();                                   \
			parse;                                                             \
			gw_count_add(GW_CNT_PARSE_NS, bpf_ktime_get_ns() - __t0);          \
		}                                                                          \
	} while (0)

#endif
