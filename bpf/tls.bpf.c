// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* gatewatch TLS path: uprobes on OpenSSL's libssl (SSL_read, SSL_read_ex,
 * SSL_write, SSL_write_ex) run the shared header parser over the plaintext the
 * application reads or writes. Reads are parsed when the call returns (only then
 * is the length known); writes too, with the length the call reports as written,
 * so a write retried after SSL_ERROR_WANT_WRITE is parsed once, and a failed one
 * never. The connection's endpoints come from the socket the call does I/O on
 * (raw tracepoints sock_send_length/sock_recv_length while a call of this
 * thread is in flight) and are cached per connection for calls that OpenSSL
 * serves from its own buffer.
 *
 * Userspace makes this object reuse the packet object's gw_hash_key,
 * gw_hdr_table, gw_counters, gw_admit and gw_events maps, so a credential hashes the same
 * on both paths and every event leaves through one ring buffer. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>

#include "include/gw_http.h"
#include "include/gw_budget.h"

#define GW_TLS_MAX_CHUNKS 8 /* GW_CHUNK bytes each: 16 KiB parsed per call at most */
#define GW_TLS_MAX_MSGS 4 /* pipelined messages looked for in one call's buffer */
#define GW_AF_INET 2
#define GW_AF_INET6 10

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* A connection's endpoints, local side first. */
struct gw_tls_ends {
	__u8 local[16]; /* IPv4 in the first 4 bytes */
	__u8 remote[16];
	__u16 lport; /* host byte order */
	__u16 rport;
	__u8 ip_version; /* 0 when not known */
	__u8 _pad[3];
};

/* A call in flight, by thread (pid_tgid): saved at entry, used at return. */
struct gw_tls_args {
	__u64 ssl;
	__u64 buf;
	__u64 lenp; /* size_t *readbytes / *written of the _ex variants; 0 otherwise */
	struct gw_tls_ends ends; /* filled by the sock tracepoints when the call did socket I/O */
};

/* Stream key: one parser state per process, SSL object and direction. */
struct gw_tls_key {
	__u64 ssl;
	__u32 tgid;
	__u32 dir;
};

/* What a return probe hands to the parser. */
struct gw_tls_call {
	struct gw_tls_key key;
	struct gw_tls_ends ends;
	__u64 buf;
	__u32 len;
	__u32 _pad;
};

/* LRU: a thread that dies inside SSL_read leaves an entry that ages out. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, struct gw_tls_args);
} gw_tls_reads SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, struct gw_tls_args);
} gw_tls_writes SEC(".maps");

/* Messages whose header block (or body) continues in a later SSL call. A
 * plain hash, as gw_flows in net.bpf.c (full: the newcomer is emitted and
 * counted, never a victim evicted); the userspace sweep expires entries of
 * connections that went silent or closed. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 2048);
	__type(key, struct gw_tls_key);
	__type(value, struct gw_work);
} gw_tls_conns SEC(".maps");

/* The secret part of each gw_tls_conns entry (see GW_SECRET_STASH). */
GW_SECRET_STASH(gw_tls_secrets, struct gw_tls_key);

/* Endpoints per connection (key.dir is always 0 here). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 8192);
	__type(key, struct gw_tls_key);
	__type(value, struct gw_tls_ends);
} gw_tls_socks SEC(".maps");

/* ---- endpoints: the socket the SSL call reads from or writes to ---- */

static __always_inline void gw_tls_sock_ends(struct sock *sk, struct gw_tls_ends *e)
{
	__u16 family = BPF_CORE_READ(sk, __sk_common.skc_family);

	if (family == GW_AF_INET) {
		__be32 l = BPF_CORE_READ(sk, __sk_common.skc_rcv_saddr);
		__be32 r = BPF_CORE_READ(sk, __sk_common.skc_daddr);

		__builtin_memcpy(e->local, &l, 4);
		__builtin_memcpy(e->remote, &r, 4);
		e->ip_version = 4;
	} else if (family == GW_AF_INET6) {
		BPF_CORE_READ_INTO(&e->local, sk, __sk_common.skc_v6_rcv_saddr);
		BPF_CORE_READ_INTO(&e->remote, sk, __sk_common.skc_v6_daddr);
		e->ip_version = 6;
		/* A dual-stack socket talking to an IPv4 peer: ::ffff:a.b.c.d */
		if (((__u64 *)e->remote)[0] == 0 && ((__u32 *)e->remote)[2] == bpf_htonl(0xffff)) {
			__builtin_memcpy(e->local, e->local + 12, 4);
			__builtin_memcpy(e->remote, e->remote + 12, 4);
			e->ip_version = 4;
		}
	} else {
		return;
	}
	e->lport = BPF_CORE_READ(sk, __sk_common.skc_num);
	e->rport = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
}

/* Socket I/O by a thread that is inside an SSL call: that call's socket. A read
 * may write (TLS 1.3 key update) and a write may read, so both maps are checked.
 * Only the first socket of a call counts; non-IP sockets leave it unknown. */
static __always_inline void gw_tls_note_sock(struct sock *sk)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct gw_tls_args *a = bpf_map_lookup_elem(&gw_tls_reads, &id);

	if (!a)
		a = bpf_map_lookup_elem(&gw_tls_writes, &id);
	if (!a || a->ends.ip_version)
		return;
	gw_tls_sock_ends(sk, &a->ends);
}

/* Fired by sock_sendmsg_nosec / sock_recvmsg_nosec (Linux >= 6.3) for every
 * socket send and receive, read(2)/write(2) included; args[0] is the sock. Raw
 * tracepoints: no tracefs and no BPF trampoline needed. */
SEC("raw_tp/sock_send_length")
int gw_tls_sock_send(struct bpf_raw_tracepoint_args *ctx)
{
	gw_tls_note_sock((struct sock *)ctx->args[0]);
	return 0;
}

SEC("raw_tp/sock_recv_length")
int gw_tls_sock_recv(struct bpf_raw_tracepoint_args *ctx)
{
	gw_tls_note_sock((struct sock *)ctx->args[0]);
	return 0;
}

/* ---- parsing ---- */

static __always_inline void gw_tls_fill_hdr(struct gw_work *w, struct gw_tls_call *c)
{
	struct gw_event_hdr *h = &w->ev.hdr;
	struct gw_tls_ends *e = &c->ends;
	__u64 id = bpf_get_current_pid_tgid();

	h->ifindex = 0;
	h->direction = c->key.dir;
	h->source = GW_SRC_TLS;
	h->ip_version = e->ip_version;
	/* Ingress (SSL_read): the peer sent it. Egress (SSL_write): we send it. */
	if (c->key.dir == GW_DIR_INGRESS) {
		__builtin_memcpy(h->saddr, e->remote, 16);
		__builtin_memcpy(h->daddr, e->local, 16);
		h->sport = e->rport;
		h->dport = e->lport;
	} else {
		__builtin_memcpy(h->saddr, e->local, 16);
		__builtin_memcpy(h->daddr, e->remote, 16);
		h->sport = e->lport;
		h->dport = e->rport;
	}
	h->pid = id >> 32;
	h->has_process = 1;
	h->cgroup_id = bpf_get_current_cgroup_id();
	bpf_get_current_comm(h->comm, sizeof(h->comm));
}

/* Feed call bytes [pos, len) to the parser chunk by chunk until the message ends
 * or the bytes do. Returns the new position. Global: verified once. */
__noinline int gw_tls_feed(struct gw_tls_call *c, struct gw_work *w, struct gw_chunk *ch, __u32 pos)
{
	int i;

	if (!c || !w || !ch)
		return pos;
	for (i = 0; i < GW_TLS_MAX_CHUNKS; i++) {
		__u64 n;

		if (pos >= c->len)
			return pos;
		n = c->len - pos;
		if (n > GW_CHUNK)
			n = GW_CHUNK;
		/* identity for 1..GW_CHUNK, and a bound the verifier can see */
		n = ((n - 1) & (GW_CHUNK - 1)) + 1;
		if (bpf_probe_read_user(ch->b, n, (void *)(c->buf + pos)) < 0) {
			/* Not readable (paged out): what was parsed is emitted, flagged. */
			w->ev.anomalies |= GW_AN_TRUNCATED;
			return c->len;
		}
		pos += gw_feed_chunk(w, ch, n);
		if (w->ps.state == GW_S_DONE || w->ps.state == GW_S_ABORT ||
		    w->ps.state == GW_S_DISCARD || w->ps.state == GW_S_SCANNED ||
		    w->ps.state == GW_S_BODY_END)
			return pos;
	}
	return pos;
}

__noinline int gw_tls_start_msg(struct gw_tls_call *c, struct gw_work *w)
{
	if (!c || !w)
		return 0;
	gw_msg_init(w);
	gw_tls_fill_hdr(w, c);
	return 0;
}


static __always_inline void gw_tls_save(struct gw_tls_call *c, struct gw_work *w)
{
	/* Keys go through the stack: 6.1's verifier refuses a map key that points
	 * into a global function's argument (R2 type=mem expected=fp, ...). */
	struct gw_tls_key key = c->key;

	if (gw_flow_store(&gw_tls_conns, &gw_tls_secrets, &key, w) < 0)
		gw_emit_unsaved(w);
}

/* Skip body bytes; returns 1 when the body continues past this call (state saved). */
static __always_inline int gw_tls_skip_body(struct gw_tls_call *c, struct gw_work *w, __u32 *pos)
{
	if (!gw_body_consume(w, pos, c->len))
		return 0;
	gw_tls_save(c, w);
	return 1;
}

/* Skip a chunked body from *pos; 1 when nothing more of this call is parsed
 * (continues in the next call: saved), 0 when it ended here. */
static __always_inline int gw_tls_skip_chunks(struct gw_tls_call *c, struct gw_work *w,
					      struct gw_chunk *ch, __u32 *pos)
{
	*pos = gw_tls_feed(c, w, ch, *pos);
	if (w->ps.state == GW_S_BODY_END)
		return 0;
	if (w->ps.state == GW_S_CHUNKS && *pos >= c->len)
		gw_tls_save(c, w);
	else if (w->ps.state == GW_S_CHUNKS)
		gw_count(GW_CNT_PIPELINE_LEFT);
	return 1;
}

/* One SSL call's plaintext: resume the connection's message or look for new
 * ones, exactly as the packet path does with TCP payloads (minus sequence
 * numbers: a TLS stream arrives in order and complete). */
__noinline int gw_tls_data(struct gw_tls_call *c)
{
	__u32 zero = 0, pos = 0;
	struct gw_work *w, *saved;
	struct gw_chunk *ch;
	int resumed = 0, msg, crlf_skips = 0, odd_lead = 0;
	__u32 lead;
	struct gw_tls_key key;

	if (!c)
		return 0;
	w = bpf_map_lookup_elem(&gw_scratch, &zero);
	ch = bpf_map_lookup_elem(&gw_chunks, &zero);
	if (!w || !ch)
		return 0;

	key = c->key; /* on the stack: see gw_tls_save */
	saved = bpf_map_lookup_elem(&gw_tls_conns, &key);
	if (saved) {
		bpf_probe_read_kernel(w, sizeof(*w), saved);
		bpf_map_delete_elem(&gw_tls_conns, &key);
		gw_flow_unstash(&gw_tls_secrets, &key, w);
		gw_count(GW_CNT_FLOW_CONTINUED);
		resumed = 1;
		if (gw_body_wait_over(w)) {
			/* Waited too long for its body: emit it, then skip or drop the body. */
			gw_body_scan_abandon(w);
			gw_emit_msg(w);
			if (!w->ps.jbody_cl)
				return 0; /* the rest of a chunked or unbounded body is not parsed */
			w->ps.state = GW_S_BODY;
		}
		if (w->ps.state == GW_S_BODY) {
			if (gw_tls_skip_body(c, w, &pos))
				return 0;
			resumed = 0;
			w->ps.state = GW_S_IDLE;
		}
		if (w->ps.state == GW_S_CHUNKS) {
			if (gw_tls_skip_chunks(c, w, ch, &pos))
				return 0;
			resumed = 0;
			w->ps.state = GW_S_IDLE;
		}
	}

	for (msg = 0; msg < GW_TLS_MAX_MSGS; msg++) {
		if (!resumed) {
			__u64 start = 0, avail;

			if (pos >= c->len)
				return 0;
			avail = c->len - pos;
			if (avail > 8)
				avail = 8;
			avail = ((avail - 1) & 7) + 1;
			if (bpf_probe_read_user(&start, avail, (void *)(c->buf + pos)) < 0)
				return 0;
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
				return 0;
			gw_tls_start_msg(c, w);
			if (odd_lead)
				w->ev.anomalies |= GW_AN_BARE_LF;
			odd_lead = 0;
		}
		resumed = 0;
		if (w->ev.segments < 255 && w->ps.state != GW_S_JBODY)
			w->ev.segments++;
		pos = gw_tls_feed(c, w, ch, pos);

		if (w->ps.state == GW_S_DISCARD) {
			gw_count(GW_CNT_NOT_HTTP);
			return 0;
		}
		if (w->ps.state == GW_S_ABORT) {
			gw_emit_msg(w);
			return 0;
		}
		/* Headers done: maybe read the body's first bytes (JSON-RPC) before emitting. */
		if (w->ps.state == GW_S_DONE && gw_body_scan_begin(w) && pos < c->len)
			pos = gw_tls_feed(c, w, ch, pos);
		if (w->ps.state != GW_S_DONE && w->ps.state != GW_S_SCANNED) {
			if (pos >= c->len && !(w->ev.anomalies & GW_AN_TRUNCATED)) {
				gw_tls_save(c, w); /* header block or scanned body continues in the next call */
			} else {
				if (w->ps.state == GW_S_JBODY)
					gw_body_scan_abandon(w);
				else
					w->ev.anomalies |= GW_AN_TRUNCATED;
				gw_emit_msg(w);
			}
			return 0;
		}
		gw_emit_msg(w);
		if (w->ps.te_chunked_only) {
			/* skip the chunked body through its framing, as the packet path does */
			if (w->ps.state != GW_S_DONE)
				return 0;
			gw_chunks_begin(w);
			if (gw_tls_skip_chunks(c, w, ch, &pos))
				return 0;
			w->ps.state = GW_S_IDLE;
			continue;
		}
		if (w->ev.content_length != ~0ULL) {
			if (gw_tls_skip_body(c, w, &pos))
				return 0;
		} else if (w->ev.is_response) {
			return 0;
		}
	}
	if (pos < c->len)
		gw_count(GW_CNT_PIPELINE_LEFT);
	return 0;
}

/* ---- the probes ---- */

static __always_inline int gw_tls_enter(void *map, void *ssl, const void *buf, void *lenp)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct gw_tls_args a = {};

	a.ssl = (__u64)ssl;
	a.buf = (__u64)buf;
	a.lenp = (__u64)lenp;
	bpf_map_update_elem(map, &id, &a, BPF_ANY);
	return 0;
}

/* `ex`: the _ex variant (returns 1 on success, the length is in *lenp). */
static __always_inline int gw_tls_exit(void *map, long rc, int ex, __u32 dir)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct gw_tls_args *a = bpf_map_lookup_elem(map, &id);
	struct gw_tls_call c = {};
	struct gw_tls_key sk = {};
	struct gw_tls_ends *known;
	__u64 len = 0;

	if (!a)
		return 0;
	if (ex) {
		if ((int)rc != 1 || !a->lenp ||
		    bpf_probe_read_user(&len, sizeof(len), (void *)a->lenp) < 0)
			goto out;
	} else {
		if ((int)rc <= 0)
			goto out;
		len = (__u64)(int)rc;
	}
	if (len == 0 || len > 0x7fffffff)
		goto out;
	c.key.ssl = a->ssl;
	c.key.tgid = id >> 32;
	c.key.dir = dir;
	c.buf = a->buf;
	c.len = len;
	c.ends = a->ends;
	bpf_map_delete_elem(map, &id);

	sk.ssl = c.key.ssl;
	sk.tgid = c.key.tgid;
	if (c.ends.ip_version)
		bpf_map_update_elem(&gw_tls_socks, &sk, &c.ends, BPF_ANY);
	else if ((known = bpf_map_lookup_elem(&gw_tls_socks, &sk)))
		c.ends = *known;
	/* one SSL object, both directions: one decision */
	gw_budgeted(c.key.ssl ^ ((__u64)c.key.tgid << 32), &gw_tls_conns, &c.key,
		    gw_tls_data(&c));
	return 0;
out:
	bpf_map_delete_elem(map, &id);
	return 0;
}

/* int SSL_read(SSL *s, void *buf, int num) */
SEC("uprobe")
int BPF_KPROBE(gw_ssl_read, void *ssl, void *buf)
{
	return gw_tls_enter(&gw_tls_reads, ssl, buf, 0);
}

SEC("uretprobe")
int BPF_KRETPROBE(gw_ssl_read_ret, long rc)
{
	return gw_tls_exit(&gw_tls_reads, rc, 0, GW_DIR_INGRESS);
}

/* int SSL_read_ex(SSL *s, void *buf, size_t num, size_t *readbytes) */
SEC("uprobe")
int BPF_KPROBE(gw_ssl_read_ex, void *ssl, void *buf, __u64 num, void *readbytes)
{
	return gw_tls_enter(&gw_tls_reads, ssl, buf, readbytes);
}

SEC("uretprobe")
int BPF_KRETPROBE(gw_ssl_read_ex_ret, long rc)
{
	return gw_tls_exit(&gw_tls_reads, rc, 1, GW_DIR_INGRESS);
}

/* int SSL_write(SSL *s, const void *buf, int num) */
SEC("uprobe")
int BPF_KPROBE(gw_ssl_write, void *ssl, const void *buf)
{
	return gw_tls_enter(&gw_tls_writes, ssl, buf, 0);
}

SEC("uretprobe")
int BPF_KRETPROBE(gw_ssl_write_ret, long rc)
{
	return gw_tls_exit(&gw_tls_writes, rc, 0, GW_DIR_EGRESS);
}

/* int SSL_write_ex(SSL *s, const void *buf, size_t num, size_t *written) */
SEC("uprobe")
int BPF_KPROBE(gw_ssl_write_ex, void *ssl, const void *buf, __u64 num, void *written)
{
	return gw_tls_enter(&gw_tls_writes, ssl, buf, written);
}

SEC("uretprobe")
int BPF_KRETPROBE(gw_ssl_write_ex_ret, long rc)
{
	return gw_tls_exit(&gw_tls_writes, rc, 1, GW_DIR_EGRESS);
}
