/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Per-window L4 counters for flood and scan detection. The kernel only counts;
 * userspace reads and clears the map every window and emits one summary event
 * per key, so a flood of millions of packets costs a bounded number of events. */
#ifndef GW_L4_H
#define GW_L4_H

enum gw_l4_scope {
	GW_L4_SERVICE = 0, /* a destination ip:port (SYN-ACK: the answering service) */
	GW_L4_SOURCE = 1, /* a source prefix (/24, /64 by default) */
};

struct gw_l4_key {
	__u8 addr[16];
	__u16 port; /* 0 for source prefixes */
	__u8 ip_version;
	__u8 scope;
};

/* Distinct-value estimates use 256-bit bitmaps (linear counting in userspace):
 * accurate to a few hundred distinct values, reported as saturated beyond. */
struct gw_l4_val {
	__u64 syn;
	__u64 synack;
	__u64 rst;
	__u64 fin;
	__u64 bits_a[4]; /* service: source addresses; source: destination ports */
	__u64 bits_b[4]; /* source: destination addresses */
};

/* Early alarms: when one CPU's count for a key in the current window reaches
 * its share of a rule threshold, the key is reported at once (gw_l4_alarms);
 * userspace sums the CPUs and cuts the key's window as soon as the threshold
 * is met, so a flood alerts within the second it starts, not after the
 * window. Per CPU, from the rule thresholds (capture/l4.rs), rewritten on
 * every reload; 0 turns an alarm off. */
struct gw_l4_alarm_cfg {
	__u32 svc_syn; /* service: SYNs per CPU per window */
	__u32 svc_rst; /* service: RSTs per CPU per window */
	__u32 src_syn; /* source prefix: SYNs per CPU per window (scans) */
	__u32 _pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct gw_l4_alarm_cfg);
} gw_l4_alarm SEC(".maps");

/* Keys whose count reached an alarm threshold (struct gw_l4_key records):
 * at most one record per key, CPU and counter in a window. */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 64 << 10);
} gw_l4_alarms SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 16384);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct gw_l4_key);
	__type(value, struct gw_l4_val);
} gw_l4 SEC(".maps");

const volatile __u8 gw_l4_enabled = 1;
const volatile __u8 gw_l4_prefix_v4 = 24;
const volatile __u8 gw_l4_prefix_v6 = 64;

#define TCP_FL_FIN 0x01
#define TCP_FL_SYN 0x02
#define TCP_FL_RST 0x04
#define TCP_FL_ACK 0x10

/* murmur3's finaliser: behaves like a random hash even on sequential ports,
 * which linear counting assumes (a too-even spread would overestimate). */
static __always_inline __u32 gw_bit_of(__u32 h)
{
	h ^= h >> 16;
	h *= 0x85ebca6bu;
	h ^= h >> 13;
	h *= 0xc2b2ae35u;
	h ^= h >> 16;
	return h & 255;
}

static __always_inline __u32 gw_addr_word(const __u8 *a)
{
	__u32 w[4];

	__builtin_memcpy(w, a, 16);
	return w[0] ^ w[1] ^ w[2] ^ w[3];
}

static __always_inline void gw_set_bit(__u64 *bits, __u32 b)
{
	bits[(b >> 6) & 3] |= 1ULL << (b & 63);
}

static __always_inline struct gw_l4_val *gw_l4_slot(struct gw_l4_key *k)
{
	struct gw_l4_val *v = bpf_map_lookup_elem(&gw_l4, k);
	struct gw_l4_val zero = {};

	if (v)
		return v;
	/* EEXIST from a racing CPU is fine: the lookup below finds its entry. */
	bpf_map_update_elem(&gw_l4, k, &zero, BPF_NOEXIST);
	v = bpf_map_lookup_elem(&gw_l4, k);
	if (!v)
		gw_count(GW_CNT_L4_MAP_FULL); /* map pressure: counted, reported, never silent */
	return v;
}

/* Raise the key's alarm: once per CPU, counter and window (the per-CPU count
 * passes each threshold exactly once before userspace resets the key). */
static __always_inline void gw_l4_raise(struct gw_l4_key *k)
{
	bpf_ringbuf_output(&gw_l4_alarms, k, sizeof(*k), 0);
}

static __always_inline void gw_l4_prefix(__u8 *dst, const __u8 *src, __u32 ip_version)
{
	int bits = ip_version == 4 ? gw_l4_prefix_v4 : gw_l4_prefix_v6;
	int i;

#pragma unroll
	for (i = 0; i < 16; i++) {
		int keep = bits - i * 8;

		if (keep >= 8)
			dst[i] = src[i];
		else if (keep <= 0)
			dst[i] = 0;
		else
			dst[i] = src[i] & (__u8)(0xff << (8 - keep));
	}
}

static __always_inline void gw_l4_count(const __u8 *saddr, const __u8 *daddr, __u16 sport, __u16 dport,
					__u32 ip_version, __u8 flags)
{
	struct gw_l4_key svc = {}, src = {};
	struct gw_l4_alarm_cfg *a;
	struct gw_l4_val *v;
	__u32 zero = 0;
	int syn = (flags & TCP_FL_SYN) && !(flags & TCP_FL_ACK);
	int synack = (flags & TCP_FL_SYN) && (flags & TCP_FL_ACK);
	int rst = flags & TCP_FL_RST;
	int fin = flags & TCP_FL_FIN;

	if (!gw_l4_enabled || !(syn || synack || rst || fin))
		return;
	svc.ip_version = ip_version;
	svc.scope = GW_L4_SERVICE;
	if (synack) {
		/* the service answering: its address is the source */
		__builtin_memcpy(svc.addr, saddr, 16);
		svc.port = sport;
	} else {
		__builtin_memcpy(svc.addr, daddr, 16);
		svc.port = dport;
	}
	v = gw_l4_slot(&svc);
	if (v) {
		if (syn) {
			v->syn++;
			gw_set_bit(v->bits_a, gw_bit_of(gw_addr_word(saddr)));
		}
		if (synack)
			v->synack++;
		if (rst)
			v->rst++;
		if (fin)
			v->fin++;
	}
	if (!(syn || rst))
		return;
	a = bpf_map_lookup_elem(&gw_l4_alarm, &zero);
	if (v && a && ((syn && v->syn == a->svc_syn) || (rst && v->rst == a->svc_rst)))
		gw_l4_raise(&svc);
	src.ip_version = ip_version;
	src.scope = GW_L4_SOURCE;
	gw_l4_prefix(src.addr, saddr, ip_version);
	v = gw_l4_slot(&src);
	if (v) {
		if (syn) {
			v->syn++;
			gw_set_bit(v->bits_a, gw_bit_of(dport));
			gw_set_bit(v->bits_b, gw_bit_of(gw_addr_word(daddr)));
		}
		if (rst)
			v->rst++;
		if (syn && a && v->syn == a->src_syn)
			gw_l4_raise(&src);
	}
}

#endif
