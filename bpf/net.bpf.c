// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* gatewatch packet path: TC (tcx or clsact) on ingress and egress. Recognises
 * HTTP/1.x by content on any TCP port, parses headers with the shared bounded
 * parser and emits metadata events. Never drops or modifies a packet. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "include/gw_http.h"
#include "include/gw_l4.h"
#include "include/gw_budget.h"

#define TC_ACT_OK 0
#define ETH_HLEN 14
#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD
#define ETH_P_8021Q 0x8100
#define ETH_P_8021AD 0x88A8
#define IPPROTO_TCP_ 6
#define GW_MAX_MSGS_PER_PKT 16
#define GW_MAX_CHUNKS_PER_PKT 16

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Optional port filter: when gw_nports > 0, only these ports (either side). */
const volatile __u32 gw_nports = 0;
const volatile __u16 gw_ports[16] = {};

struct gw_flow_key {
	__u8 saddr[16];
	__u8 daddr[16];
	__u16 sport;
	__u16 dport;
	__u32 ip_version;
};

/* Messages whose header block (or body) continues in a later segment. A
 * plain hash, not an LRU: an LRU evicts a victim's message silently when a
 * flood of partial flows fills it; this one refuses the newcomer, which is
 * then emitted at once and counted (gw_flow_store). Userspace sizes it from
 * memory and its sweep expires what went silent. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 2048);
	__type(key, struct gw_flow_key);
	__type(value, struct gw_work);
} gw_flows SEC(".maps");

/* The secret part of each gw_flows entry (see GW_SECRET_STASH). */
GW_SECRET_STASH(gw_flow_secrets, struct gw_flow_key);


struct gw_pkt {
	struct gw_flow_key fk;
	__u32 seq;
	__u8 tcp_flags;
	__u32 poff; /* payload offset in the skb */
	__u32 plen; /* payload length (from the IP header, not skb->len) */
};

/* Test only: 1 reads every header with bpf_skb_load_bytes, as for a frame
 * whose headers are not in the linear area (BPF_PROG_TEST_RUN's frames always
 * are). sensor/tests/kernel_parser.rs compares the two paths. */
const volatile __u8 gw_skb_loads_only = 0;

/* Copy the header at [off, off + sizeof(*dst)) of the frame into *dst: read
 * straight from the linear area when it is all there (no helper call), else
 * with bpf_skb_load_bytes, which also reaches paged data. The same bytes and
 * the same result (0, or < 0 past the end of the frame) either way: skb->data
 * is where bpf_skb_load_bytes counts from, and the linear area is a prefix of
 * the frame. The copy is made here so that only scalars and one stack copy
 * flow on (the verifier does not see two kinds of pointer downstream). Loads
 * are as wide as the header's fields, aligned or not: x86-64 and arm64 (the
 * only targets, see build.rs) have efficient unaligned access, so the
 * verifier allows it. */
#define gw_load_hdr(skb, off, dst)                                                       \
	({                                                                               \
		void *__end = (void *)(long)(skb)->data_end;                             \
		const typeof(*(dst)) *__src = (void *)(long)(skb)->data + (off);         \
		long __ret = 0;                                                          \
		if (!gw_skb_loads_only && (void *)(__src + 1) <= __end)                  \
			*(dst) = *__src;                                                 \
		else                                                                     \
			__ret = bpf_skb_load_bytes(skb, off, dst, sizeof(*(dst)));       \
		__ret;                                                                   \
	})

static __always_inline int gw_parse_l3l4(struct __sk_buff *skb, struct gw_pkt *p)
{
	__u32 off = ETH_HLEN;
	__u16 proto;
	__u8 l4;
	__u32 l3_total;

	if (gw_load_hdr(skb, 12, &proto) < 0)
		return -1;
	proto = bpf_ntohs(proto);
	/* Up to two VLAN tags still in the frame (offloaded tags are not in the data). */
	if (proto == ETH_P_8021Q || proto == ETH_P_8021AD) {
		if (gw_load_hdr(skb, off + 2, &proto) < 0)
			return -1;
		proto = bpf_ntohs(proto);
		off += 4;
		if (proto == ETH_P_8021Q || proto == ETH_P_8021AD) {
			if (gw_load_hdr(skb, off + 2, &proto) < 0)
				return -1;
			proto = bpf_ntohs(proto);
			off += 4;
		}
	}

	if (proto == ETH_P_IP) {
		struct iphdr ip;

		if (gw_load_hdr(skb, off, &ip) < 0) {
			gw_count(GW_CNT_SHORT_HEADERS);
			return -1;
		}
		if (ip.ihl < 5) {
			gw_count(GW_CNT_SHORT_HEADERS);
			return -1;
		}
		if (ip.frag_off & bpf_htons(0x3fff)) {
			gw_count(GW_CNT_FRAGMENTS);
			/* Servers reassemble TCP in fragments and answer it; the sensor
			 * does not parse it, so it says so (a known evasion). */
			if (ip.protocol == IPPROTO_TCP_)
				gw_count(GW_CNT_TCP_FRAGMENTS);
			return -1;
		}
		if (ip.protocol != IPPROTO_TCP_)
			return -1;
		__builtin_memcpy(p->fk.saddr, &ip.saddr, 4);
		__builtin_memcpy(p->fk.daddr, &ip.daddr, 4);
		p->fk.ip_version = 4;
		l3_total = bpf_ntohs(ip.tot_len);
		if (l3_total == 0) /* GSO/BIG TCP: length not in the header */
			l3_total = skb->len - off;
		if (l3_total < ip.ihl * 4) {
			gw_count(GW_CNT_SHORT_HEADERS);
			return -1;
		}
		l3_total -= ip.ihl * 4;
		off += ip.ihl * 4;
	} else if (proto == ETH_P_IPV6) {
		struct ipv6hdr ip6;
		int i;

		if (gw_load_hdr(skb, off, &ip6) < 0) {
			gw_count(GW_CNT_SHORT_HEADERS);
			return -1;
		}
		__builtin_memcpy(p->fk.saddr, &ip6.saddr, 16);
		__builtin_memcpy(p->fk.daddr, &ip6.daddr, 16);
		p->fk.ip_version = 6;
		l3_total = bpf_ntohs(ip6.payload_len);
		if (l3_total == 0)
			l3_total = skb->len - off - sizeof(ip6);
		off += sizeof(ip6);
		l4 = ip6.nexthdr;
		/* Skip a bounded number of extension headers. */
#pragma unroll
		for (i = 0; i < 4; i++) {
			struct {
				__u8 next;
				__u8 len; /* in 8-byte units, not counting the first 8 */
			} ext;
			__u32 elen;

			if (l4 != 0 && l4 != 43 && l4 != 60 && l4 != 44)
				break;
			if (gw_load_hdr(skb, off, &ext) < 0)
				return -1;
			if (l4 == 44) { /* fragment header */
				gw_count(GW_CNT_FRAGMENTS);
				if (ext.next == IPPROTO_TCP_)
					gw_count(GW_CNT_TCP_FRAGMENTS);
				return -1;
			}
			elen = (ext.len + 1) * 8;
			if (l3_total < elen)
				return -1;
			l3_total -= elen;
			off += elen;
			l4 = ext.next;
		}
		if (l4 != IPPROTO_TCP_)
			return -1;
	} else {
		gw_count(GW_CNT_NON_IP);
		return -1;
	}

	{
		struct tcphdr tcp;
		__u32 doff;

		if (gw_load_hdr(skb, off, &tcp) < 0) {
			gw_count(GW_CNT_SHORT_HEADERS);
			return -1;
		}
		doff = tcp.doff * 4;
		if (doff < sizeof(tcp) || l3_total < doff) {
			gw_count(GW_CNT_SHORT_HEADERS);
			return -1;
		}
		p->fk.sport = bpf_ntohs(tcp.source);
		p->fk.dport = bpf_ntohs(tcp.dest);
		p->seq = bpf_ntohl(tcp.seq);
		p->tcp_flags = ((__u8 *)&tcp)[13];
		p->poff = off + doff;
		p->plen = l3_total - doff;
		if (p->poff + p->plen > skb->len) {
			/* Captured frame shorter than its IP header claims (snaplen). */
			gw_count(GW_CNT_SHORT_HEADERS);
			if (p->poff >= skb->len)
				return -1;
			p->plen = skb->len - p->poff;
		}
	}
	return 0;
}

static __always_inline int gw_port_allowed(struct gw_pkt *p)
{
	__u32 i;

	if (gw_nports == 0)
		return 1;
#pragma unroll
	for (i = 0; i < 16; i++) {
		if (i >= gw_nports)
			break;
		if (gw_ports[i] == p->fk.sport || gw_ports[i] == p->fk.dport)
			return 1;
	}
	return 0;
}

/* A connection as 64 bits that are the same in both directions: the two
 * address words xor-ed, the two ports ordered. */
static __always_inline __u64 gw_conn_id(struct gw_pkt *p)
{
	__u32 lo = p->fk.sport < p->fk.dport ? p->fk.sport : p->fk.dport;
	__u32 hi = p->fk.sport < p->fk.dport ? p->fk.dport : p->fk.sport;

	return (__u64)(gw_addr_word(p->fk.saddr) ^ gw_addr_word(p->fk.daddr)) |
	       ((__u64)((lo << 16) | hi) << 32);
}

static __always_inline void gw_fill_hdr(struct gw_work *w, struct __sk_buff *skb, struct gw_pkt *p,
					__u8 dir)
{
	struct gw_event_hdr *h = &w->ev.hdr;

	h->ifindex = skb->ifindex;
	h->direction = dir;
	h->source = GW_SRC_NET;
	h->ip_version = p->fk.ip_version;
	__builtin_memcpy(h->saddr, p->fk.saddr, 16);
	__builtin_memcpy(h->daddr, p->fk.daddr, 16);
	h->sport = p->fk.sport;
	h->dport = p->fk.dport;
	h->pid = 0;
	h->has_process = 0;
	/* The socket's cgroup is known on egress of locally generated traffic. */
	h->cgroup_id = dir == GW_DIR_EGRESS ? bpf_skb_cgroup_id(skb) : 0;
}

/* Feed payload bytes [pos, plen) to the parser, chunk by chunk, until the
 * message ends or the payload does. Returns the new position. A global
 * (non-inlined) function: the verifier checks it once, not once per caller path. */
__noinline int gw_feed_payload(struct __sk_buff *skb, struct gw_pkt *p, struct gw_work *w,
			       struct gw_chunk *ch, __u32 pos)
{
	int c;

	if (!skb || !p || !w || !ch)
		return pos;
	for (c = 0; c < GW_MAX_CHUNKS_PER_PKT; c++) {
		__u64 n;

		if (pos >= p->plen)
			return pos;
		n = p->plen - pos;
		if (n > GW_CHUNK)
			n = GW_CHUNK;
		if (n == 0)
			return pos;
		/* identity for 1..GW_CHUNK, and a bound the verifier can see */
		n = ((n - 1) & (GW_CHUNK - 1)) + 1;
		if (bpf_skb_load_bytes(skb, p->poff + pos, ch->b, n) < 0)
			return pos;
		pos += gw_feed_chunk(w, ch, n);
		if (w->ps.state == GW_S_DONE || w->ps.state == GW_S_ABORT ||
		    w->ps.state == GW_S_DISCARD || w->ps.state == GW_S_SCANNED ||
		    w->ps.state == GW_S_BODY_END)
			return pos;
	}
	return pos;
}

/* Start a new message at the current position: reset the work area and stamp
 * the flow. Global for the same reason as gw_feed_payload. */
__noinline int gw_start_msg(struct __sk_buff *skb, struct gw_pkt *p, struct gw_work *w, int dir)
{
	if (!skb || !p || !w)
		return 0;
	gw_msg_init(w);
	gw_fill_hdr(w, skb, p, dir);
	return 0;
}


/* Save the message under way until the flow's next segment; with the table
 * full, emit it now instead (counted in gw_flow_store). */
static __always_inline void gw_save_flow(struct gw_pkt *p, struct gw_work *w)
{
	w->ps.next_seq = p->seq + p->plen;
	if (gw_flow_store(&gw_flows, &gw_flow_secrets, &p->fk, w) < 0)
		gw_emit_unsaved(w);
}

/* Take the flow's saved message into w (and out of the table). */
static __always_inline void gw_take_flow(struct gw_flow_key *fk, struct gw_work *saved, struct gw_work *w)
{
	bpf_probe_read_kernel(w, sizeof(*w), saved);
	bpf_map_delete_elem(&gw_flows, fk);
	gw_flow_unstash(&gw_flow_secrets, fk, w);
}

/* Skip body bytes of the current message; returns 1 if the body continues
 * past this packet (flow state saved). */
static __always_inline int gw_skip_body(struct gw_pkt *p, struct gw_work *w, __u32 *pos)
{
	if (!gw_body_consume(w, pos, p->plen))
		return 0;
	gw_save_flow(p, w);
	return 1;
}

/* Skip a chunked body from *pos. Returns 1 when nothing more of this packet
 * is parsed (the body continues in the next segment: saved; or its framing
 * was not chunked, or it outlasts the packet's parse), 0 when it ended here
 * (state GW_S_BODY_END) and the next message may follow. */
static __always_inline int gw_skip_chunks(struct __sk_buff *skb, struct gw_pkt *p, struct gw_work *w,
					  struct gw_chunk *ch, __u32 *pos)
{
	*pos = gw_feed_payload(skb, p, w, ch, *pos);
	if (w->ps.state == GW_S_BODY_END)
		return 0;
	if (w->ps.state == GW_S_CHUNKS && *pos >= p->plen)
		gw_save_flow(p, w);
	else if (w->ps.state == GW_S_CHUNKS)
		gw_count(GW_CNT_PIPELINE_LEFT); /* longer than one packet's parse */
	return 1;
}

/* The first avail (1..8) bytes at off into the low bytes of *start, the rest
 * zero, as bpf_skb_load_bytes(skb, off, start, avail) leaves them: one load
 * from the linear area when 8 bytes are there, else the helper. (The offset
 * bound keeps the packet pointer's range one the verifier can check.) */
static __always_inline long gw_load_start(struct __sk_buff *skb, __u32 off, __u64 avail, __u64 *start)
{
	void *end = (void *)(long)skb->data_end;
	const __u64 *src = (void *)(long)skb->data + (off & 0x7fff);

	if (!gw_skb_loads_only && off <= 0x7fff && (void *)(src + 1) <= end) {
		*start = *src & gw_mask(avail);
		return 0;
	}
	return bpf_skb_load_bytes(skb, off, start, avail);
}

static __always_inline void gw_http_packet(struct __sk_buff *skb, struct gw_pkt *p, __u8 dir)
{
	__u32 zero = 0, pos = 0;
	struct gw_work *w, *saved;
	struct gw_chunk *ch;
	int resumed = 0, msg, crlf_skips = 0, odd_lead = 0;
	__u32 lead;

	w = bpf_map_lookup_elem(&gw_scratch, &zero);
	ch = bpf_map_lookup_elem(&gw_chunks, &zero);
	if (!w || !ch)
		return;

	saved = bpf_map_lookup_elem(&gw_flows, &p->fk);
	if (saved) {
		__s32 delta = (__s32)(p->seq - saved->ps.next_seq);

		if (delta < 0) {
			/* Bytes already parsed: a retransmission, or a segment that overlaps
			 * them. The receiving stack keeps the first copy (Linux does), so the
			 * overlap is skipped and only the new bytes are parsed. */
			if ((__u32)(-delta) >= p->plen)
				return;
			pos = (__u32)(-delta);
			gw_count(GW_CNT_OVERLAP_TRIMMED);
			delta = 0;
		}
		if (delta > 0) {
			/* A segment is missing: what we had is emitted, flagged, never guessed at. */
			/* (a start line not yet confirmed as HTTP is dropped quietly) */
			__u8 st = saved->ps.state;

			gw_take_flow(&p->fk, saved, w);
			if (st != GW_S_BODY && st != GW_S_CHUNKS && st != GW_S_METHOD) {
				if (w->ps.state == GW_S_JBODY)
					gw_body_scan_abandon(w); /* headers were whole; the body was not */
				else if (w->ps.state == GW_S_VALUE)
					gw_header_value_done(w, 1); /* a hash cut by the gap is flagged */
				w->ev.anomalies |= w->ps.state == GW_S_SCANNED ? 0 : GW_AN_OUT_OF_ORDER | GW_AN_TRUNCATED;
				gw_emit_msg(w);
			}
			gw_count(GW_CNT_FLOW_LOST);
		} else {
			gw_take_flow(&p->fk, saved, w);
			gw_count(GW_CNT_FLOW_CONTINUED);
			resumed = 1;
			if (gw_body_wait_over(w)) {
				/* Waited too long for its body: emit it, then skip or drop the body. */
				gw_body_scan_abandon(w);
				gw_emit_msg(w);
				if (!w->ps.jbody_cl)
					return; /* the rest of a chunked or unbounded body is not parsed */
				w->ps.state = GW_S_BODY;
			}
			if (w->ps.state == GW_S_BODY && gw_skip_body(p, w, &pos))
				return;
			if (w->ps.state == GW_S_CHUNKS && gw_skip_chunks(skb, p, w, ch, &pos))
				return;
			if (w->ps.state == GW_S_BODY || w->ps.state == GW_S_BODY_END) {
				resumed = 0;
				w->ps.state = GW_S_IDLE;
			}
		}
	}

	for (msg = 0; msg < GW_MAX_MSGS_PER_PKT; msg++) {
		if (!resumed) {
			__u64 start = 0, avail;

			if (pos >= p->plen)
				return;
			avail = p->plen - pos;
			if (avail > 8)
				avail = 8;
			avail = ((avail - 1) & 7) + 1;
			if (gw_load_start(skb, p->poff + pos, avail, &start) < 0)
				return;
			/* RFC 9112 2.2: empty lines before a request line are ignored, so a
			 * CRLF between pipelined messages must not hide the next one; other
			 * line ends (bare LF, lone CR) are skipped too, and flagged. */
			lead = gw_leading_eol(start, avail);
			if (lead && crlf_skips < 2) {
				if ((lead & 1) || (start & gw_mask(lead)) != (0x0a0d0a0d0a0d0a0dULL & gw_mask(lead)))
					odd_lead = 1; /* not CRLF pairs */
				crlf_skips++;
				pos += lead;
				msg--;
				continue;
			}
			if (!gw_may_start(start & 0xff))
				return;
			gw_start_msg(skb, p, w, dir);
			if (odd_lead)
				w->ev.anomalies |= GW_AN_BARE_LF;
			odd_lead = 0;
		}
		resumed = 0;
		if (w->ev.segments < 255 && w->ps.state != GW_S_JBODY)
			w->ev.segments++;
		pos = gw_feed_payload(skb, p, w, ch, pos);

		if (w->ps.state == GW_S_DISCARD) {
			gw_count(GW_CNT_NOT_HTTP);
			return;
		}
		if (w->ps.state == GW_S_ABORT) {
			gw_emit_msg(w); /* header block past the window: the rest of the message is unparsed */
			return;
		}
		/* Headers done: maybe read the body's first bytes (JSON-RPC) before emitting. */
		if (w->ps.state == GW_S_DONE && gw_body_scan_begin(w) && pos < p->plen)
			pos = gw_feed_payload(skb, p, w, ch, pos);
		if (w->ps.state != GW_S_DONE && w->ps.state != GW_S_SCANNED) {
			if (pos >= p->plen) {
				gw_save_flow(p, w); /* header block or scanned body continues */
			} else {
				if (w->ps.state == GW_S_JBODY)
					gw_body_scan_abandon(w);
				else
					w->ev.anomalies |= GW_AN_TRUNCATED;
				gw_emit_msg(w);
			}
			return;
		}
		gw_emit_msg(w);
		/* Pipelining: skip the rest of the body (Content-Length, or chunked
		 * through its framing), then look for the next message. */
		if (w->ps.te_chunked_only) {
			if (w->ps.state != GW_S_DONE)
				return; /* a scanned chunked body: where its framing stands is not kept */
			gw_chunks_begin(w);
			if (gw_skip_chunks(skb, p, w, ch, &pos))
				return;
			w->ps.state = GW_S_IDLE;
			continue;
		}
		if (w->ev.content_length != ~0ULL) {
			if (gw_skip_body(p, w, &pos))
				return;
		} else if (w->ev.is_response) {
			return; /* response without length: body runs to connection close */
		}
	}
	/* The per-packet message limit left bytes unparsed: said, never silent. */
	if (pos < p->plen)
		gw_count(GW_CNT_PIPELINE_LEFT);
}

/* The flow ended (FIN/RST) while a message waited for its body: emit it now,
 * its scan marked "ended", rather than leave it in the flow table. */
static __always_inline void gw_flow_end_key(struct gw_flow_key *fk, __u32 end_seq, int own)
{
	struct gw_work *saved, *w;
	__u32 zero = 0;

	saved = bpf_map_lookup_elem(&gw_flows, fk);
	if (!saved)
		return;
	w = bpf_map_lookup_elem(&gw_scratch, &zero);
	if (!w) {
		bpf_map_delete_elem(&gw_flows, fk);
		return;
	}
	/* Every state leaves the table: a plain hash keeps what is not taken out. */
	gw_take_flow(fk, saved, w);
	/* The flow's own FIN/RST comes after bytes never seen (a segment lost, or
	 * sent before the one that started the message): said, never guessed. */
	if (own && (__s32)(end_seq - w->ps.next_seq) > 0) {
		gw_count(GW_CNT_FLOW_LOST);
		if (w->ps.state != GW_S_BODY && w->ps.state != GW_S_CHUNKS)
			w->ev.anomalies |= GW_AN_OUT_OF_ORDER;
	}
	if (w->ps.state == GW_S_BODY || w->ps.state == GW_S_CHUNKS)
		return; /* its message went out already */
	if (w->ps.state == GW_S_JBODY) {
		gw_body_scan_abandon(w);
		gw_emit_msg(w);
	} else {
		gw_emit_cut(w); /* a header block the flow's end cut short */
	}
}

static __always_inline void gw_flow_end(struct gw_pkt *p)
{
	struct gw_flow_key rev;

	gw_flow_end_key(&p->fk, p->seq + p->plen, 1);
	if (!(p->tcp_flags & TCP_FL_RST))
		return;
	/* A reset ends both directions: a reply waiting for its body too. */
	__builtin_memcpy(rev.saddr, p->fk.daddr, 16);
	__builtin_memcpy(rev.daddr, p->fk.saddr, 16);
	rev.sport = p->fk.dport;
	rev.dport = p->fk.sport;
	rev.ip_version = p->fk.ip_version;
	gw_flow_end_key(&rev, 0, 0);
}

/* The L4 counters of one packet, in a frame of its own (a static subprogram,
 * verified in its caller's context): its two map keys then stay off the stack
 * of the main program, whose depth adds up with the parser's call chain
 * against the verifier's 512-byte limit (6.1 counts it strictly). */
static __noinline void gw_l4_packet(struct gw_pkt *p)
{
	gw_l4_count(p->fk.saddr, p->fk.daddr, p->fk.sport, p->fk.dport, p->fk.ip_version, p->tcp_flags);
}

static __always_inline int gw_handle(struct __sk_buff *skb, __u8 dir)
{
	struct gw_pkt p = {};

	gw_count(GW_CNT_PACKETS);
	if (gw_parse_l3l4(skb, &p) < 0)
		return TC_ACT_OK;
	/* Each packet is counted once: on ingress, and a local service's SYN-ACK on egress. */
	if (dir == GW_DIR_INGRESS || (p.tcp_flags & (TCP_FL_SYN | TCP_FL_ACK)) == (TCP_FL_SYN | TCP_FL_ACK))
		gw_l4_packet(&p);
	if (!gw_port_allowed(&p))
		return TC_ACT_OK;
	if (p.plen > 0) {
		gw_count(GW_CNT_TCP_PAYLOAD);
		gw_budgeted(gw_conn_id(&p), &gw_flows, &p.fk, gw_http_packet(skb, &p, dir));
	}
	if (p.tcp_flags & (TCP_FL_FIN | TCP_FL_RST))
		gw_flow_end(&p);
	return TC_ACT_OK;
}

SEC("tcx/ingress")
int gw_tc_ingress(struct __sk_buff *skb)
{
	return gw_handle(skb, GW_DIR_INGRESS);
}

SEC("tcx/egress")
int gw_tc_egress(struct __sk_buff *skb)
{
	return gw_handle(skb, GW_DIR_EGRESS);
}
