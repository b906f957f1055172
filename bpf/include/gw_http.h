/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Bounded, resumable HTTP/1.x header parser shared by the packet path (TC) and
 * the TLS path (uprobes). It is a byte-at-a-time state machine whose whole state
 * lives in struct gw_work, so a header block split across TCP segments (or
 * SSL_write calls) parses exactly as if it were contiguous. Credential header
 * values are never stored: they feed a keyed SipHash and are dropped. */
#ifndef GW_HTTP_H
#define GW_HTTP_H

#include "gw_events.h"
#include "gw_siphash.h"

#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "gatewatch's BPF parser assumes a little-endian target"
#endif

enum gw_state {
	GW_S_IDLE = 0,
	GW_S_METHOD,
	GW_S_PATH,
	GW_S_VERSION,
	GW_S_STATUS,
	GW_S_REASON,
	GW_S_LINE_LF, /* saw CR ending a line, expect LF */
	GW_S_LINE_START,
	GW_S_NAME,
	GW_S_VALUE,
	GW_S_END_LF, /* saw CR on the empty line, expect LF */
	GW_S_DONE,
	GW_S_ABORT, /* window exceeded: emit what we have, flagged */
	GW_S_BODY, /* skipping a body between pipelined messages */
	GW_S_DISCARD, /* not HTTP after all: no event */
	GW_S_JBODY, /* headers done; scanning the body's first bytes for JSON-RPC */
	GW_S_SCANNED, /* body scan decided: the message is ready to emit */
	GW_S_CHUNKS, /* skipping a chunked body (message emitted) through its framing */
	GW_S_BODY_END, /* the chunked body just ended: the next message may follow */
};

/* JSON scanner states (gw_parse_state.jstate). */
enum gw_jstate {
	GW_J_START = 0, /* before the first non-blank byte */
	GW_J_KEY_OR_END, /* in an object: a key, ',' or '}' */
	GW_J_KEY, /* inside a key string */
	GW_J_KEY_ESC,
	GW_J_COLON,
	GW_J_VALUE, /* a value, or ']' / ',' in an array */
	GW_J_STR, /* inside a string value */
	GW_J_STR_ESC,
	GW_J_SCALAR, /* number, true, false, null */
	GW_J_AFTER, /* after a value: ',' or a closing bracket */
};

/* What a JSON key at a depth that matters means (gw_parse_state.jkey). */
enum gw_jkey {
	GW_JK_OTHER = 0,
	GW_JK_JSONRPC,
	GW_JK_METHOD,
	GW_JK_ID,
	GW_JK_RESULT,
	GW_JK_ERROR,
	GW_JK_PARAMS,
	GW_JK_NAME, /* params.name / params.uri */
};

/* SSE framing states for text/event-stream bodies (gw_parse_state.sse). */
enum gw_sse {
	GW_SSE_LINE = 0, /* at a line start: a field name */
	GW_SSE_FIELD,
	GW_SSE_VALUE_SP, /* after ':', one optional space */
	GW_SSE_VALUE,
	GW_SSE_SKIP, /* rest of a line we do not read */
};

/* Chunked transfer coding around a scanned body (gw_parse_state.jchunk_st). */
enum gw_chunk_st {
	GW_CH_SIZE = 0, /* hex digits of a chunk-size line */
	GW_CH_EXT, /* chunk extensions: up to LF */
	GW_CH_DATA,
	GW_CH_DATA_END, /* the CRLF after a chunk's data */
	GW_CH_TRAILER, /* after the last chunk: a trailer line, or the empty line that ends the body */
	GW_CH_TRAILER_LINE,
};

#define GW_CT_OTHER 0
#define GW_CT_JSON 1
#define GW_CT_SSE 2

/* What of a message under way derives from secret bytes: the hash state and
 * first bytes of a credential or session id value, and the set of byte values
 * a session id holds. Never emitted; when a message is saved between
 * segments it goes to a stash userspace cannot read (gw_flow_store). */
struct gw_secret_part {
	struct gw_siphash sip;
	__u64 scheme; /* first 8 bytes of a credential value, lower-cased */
	__u64 seen[4]; /* bitmap of the byte values of a session id */
};

struct gw_parse_state {
	struct gw_secret_part sec;
	__u64 cl_value;
	__u64 body_remaining;
	__u64 version; /* "HTTP/1.x" accumulated little-endian */
	__u32 next_seq; /* TCP: the sequence number the next segment must carry */
	__u32 bytes; /* header block bytes consumed so far */
	__u32 val_total; /* bytes of the current header value */
	__u8 state;
	__u8 name_len;
	__u8 cur_slot; /* copy slot of the current header, 0xff for none */
	__u8 cur_special;
	__u8 cur_cred;
	__u8 scheme_len;
	__u8 scheme_done;
	__u8 val_started;
	__u8 ver_len;
	__u8 status_digits;
	__u8 cl_seen;
	__u8 cl_bad; /* 0 digits so far, 2 digits then blanks, 1 not a length */
	__u8 te_seen;
	__u8 te_chunked_only; /* unused by rules; decides whether a body can be skipped */
	__u8 host_seen;
	__u8 line_cr; /* the line being ended saw CR */
	__u8 is_connect;
	__u8 abs_form; /* absolute-form target: 1 scheme, 2 authority, 3 path (0: not one) */
	__u16 abs_auth; /* path offset where the authority starts */
	__u8 secret_stashed; /* 1: ps.sec is in the stash map; 2: it could not be stashed */
	__u8 secret_lost; /* the value being hashed lost its hash state: flag its hash */
	/* Content-Type's first 16 bytes, lower-cased, and what they say */
	__u8 ct_kind;
	__u8 ct_len;
	/* query string of the request target (and of an SSE endpoint URL) */
	__u8 in_query;
	__u8 qname_len;
	__u8 qval; /* 0 none, 1 session_id (masked, hashed), 2 masked, 3 allow-listed (clear) */
	__u8 sess_active; /* the session id being hashed will be recorded */
	/* body scan */
	__u8 jstate;
	__u8 jdepth;
	__u8 jbase; /* depth of the message object: 1, or 2 inside a batch */
	__u8 jkey; /* enum gw_jkey of the key whose value comes next */
	__u8 jklen;
	__u8 jcap; /* copying a string value: 1 method, 2 name */
	__u8 jchunked; /* chunked body: enum gw_chunk_st frames the bytes scanned */
	__u8 jparams; /* inside the params object (depth jbase + 1) */
	__u8 jname_done;
	__u8 sse; /* enum gw_sse */
	__u8 sse_field; /* 1 event, 2 data, 0 other */
	__u8 sse_event_endpoint;
	__u8 sse_vlen;
	__u8 sse_data_json; /* this data: line holds JSON for the scanner */
	__u32 jstack; /* bit d set: the container at depth d is an array */
	__u64 ctype[2];
	__u8 jbody_cl; /* the body length is known: body_remaining counts down */
	__u8 jchunk_st; /* enum gw_chunk_st */
	__u32 jchunk_left; /* data bytes left in the current chunk */
	__u64 qname[2]; /* first 16 bytes of a query parameter name */
	__u64 jk[2]; /* first 8 bytes of the current key (second word spare) */
	__u64 sse_val; /* first 8 bytes of an SSE field name or event value */
	struct gw_hdr_name_key name;
	/* An 8-byte store at any masked name index (n & 31) stays inside the
	 * struct: 6.1's verifier may know only the mask, not the n <= 24 check. */
	__u8 _name_tail[8];
};

struct gw_work {
	struct gw_http_event ev;
	struct gw_parse_state ps;
};

struct gw_hash_key {
	__u64 k0;
	__u64 k1;
};

/* Maps every user of the parser needs. Each .bpf.c includes this once, so each
 * object declares its own copy; userspace makes the TLS object reuse the packet
 * object's maps (bpf_map__reuse_fd before load), so both programs hash with the
 * same key, read the same header table and write one ring buffer and one set of
 * counters. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct gw_hash_key);
} gw_hash_key SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, GW_HDR_TABLE);
	__type(key, __u32);
	__type(value, struct gw_hdr_slot);
} gw_hdr_table SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, GW_CNT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} gw_counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 16 << 20);
} gw_events SEC(".maps");

/* Per-CPU scratch space of each program (never shared between objects): the
 * message under construction and the chunk of bytes being fed to the parser. */
struct gw_chunk {
	__u8 b[GW_CHUNK];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct gw_work);
} gw_scratch SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct gw_chunk);
} gw_chunks SEC(".maps");

/* Maximum header block bytes parsed per message; userspace may lower it. */
const volatile __u32 gw_parse_window = 16384;
/* Body bytes scanned for JSON-RPC metadata per message; 0 turns the scan off. */
const volatile __u32 gw_body_scan_window = 512;
/* A message waiting for its body is emitted ("ended") when the next bytes of
 * its flow arrive later than this after its start (a silent SSE stream, a
 * client that stalls). Other bounds: the window, FIN/RST, a sequence gap. */
const volatile __u64 gw_body_wait_ns = 1000000000ULL;
/* Test only: 1 runs every byte through the one-byte state machines, never a
 * multi-byte step. That path is the reference the multi-byte steps must
 * match exactly (sensor/tests/kernel_parser.rs compares the two). */
const volatile __u8 gw_byte_path_only = 0;
/* Seed of gw_hdr_hash; userspace picks it with the table's layout. */
const volatile __u64 gw_hdr_seed = 0;
/* Query parameters whose values stay in clear (capture.query_clear): names of
 * 1..16 bytes, lower-cased, as two little-endian words. Every other value is
 * masked: a secret in a URL is a credential like any other. */
#define GW_QUERY_CLEAR_MAX 8
const volatile __u8 gw_nquery_clear = 0;
const volatile __u8 gw_qclear_len[GW_QUERY_CLEAR_MAX] = {};
const volatile __u64 gw_qclear_w0[GW_QUERY_CLEAR_MAX] = {};
const volatile __u64 gw_qclear_w1[GW_QUERY_CLEAR_MAX] = {};

static __always_inline void gw_count_add(__u32 idx, __u64 n)
{
	__u64 *v = bpf_map_lookup_elem(&gw_counters, &idx);

	if (v)
		*v += n;
}

static __always_inline void gw_count(__u32 idx)
{
	gw_count_add(idx, 1);
}

#define GW_C8(a, b, c, d, e, f, g, h)                                                    \
	((__u64)(a) | ((__u64)(b) << 8) | ((__u64)(c) << 16) | ((__u64)(d) << 24) |          \
	 ((__u64)(e) << 32) | ((__u64)(f) << 40) | ((__u64)(g) << 48) | ((__u64)(h) << 56))

/* The low n bytes (0 <= n <= 8), without a branch: two shifts, so that
 * n == 8 never shifts by 64. */
static __always_inline __u64 gw_mask(__u32 n)
{
	return ((1ULL << (4 * n)) << (4 * n)) - 1;
}

/* Whether a payload byte can begin a message: every method token and
 * "HTTP/1.x" start with an upper-case letter. The rest is decided when the
 * token ends (gw_method_done), so a start line split anywhere, even after one
 * byte, is still recognised. */
static __always_inline int gw_may_start(__u8 b)
{
	return b >= 'A' && b <= 'Z';
}

/* How many of the first avail (1..8) bytes of start (little endian) are CR or
 * LF: empty lines before a request line, which servers skip (RFC 9112 §2.2;
 * nginx takes bare LFs and lone CRs too), so the sensor must not stop there. */
static __always_inline __u32 gw_leading_eol(__u64 start, __u64 avail)
{
	__u32 i, n = 0;

#pragma unroll
	for (i = 0; i < 8; i++) {
		__u8 c = start >> (8 * i);

		if (i >= avail || (c != '\r' && c != '\n'))
			break;
		n++;
	}
	return n;
}

static __always_inline int gw_known_method(__u64 m, __u8 n)
{
	switch (n) {
	case 3:
		return (m & gw_mask(3)) == GW_C8('G', 'E', 'T', 0, 0, 0, 0, 0) ||
		       (m & gw_mask(3)) == GW_C8('P', 'U', 'T', 0, 0, 0, 0, 0);
	case 4:
		return (m & gw_mask(4)) == GW_C8('P', 'O', 'S', 'T', 0, 0, 0, 0) ||
		       (m & gw_mask(4)) == GW_C8('H', 'E', 'A', 'D', 0, 0, 0, 0);
	case 5:
		return (m & gw_mask(5)) == GW_C8('P', 'A', 'T', 'C', 'H', 0, 0, 0) ||
		       (m & gw_mask(5)) == GW_C8('T', 'R', 'A', 'C', 'E', 0, 0, 0);
	case 6:
		return (m & gw_mask(6)) == GW_C8('D', 'E', 'L', 'E', 'T', 'E', 0, 0);
	case 7:
		return (m & gw_mask(7)) == GW_C8('O', 'P', 'T', 'I', 'O', 'N', 'S', 0) ||
		       (m & gw_mask(7)) == GW_C8('C', 'O', 'N', 'N', 'E', 'C', 'T', 0);
	}
	return 0;
}

/* Reset the message part of the work area. Strings are length-delimited, so bytes
 * past a length are never read; only lengths and flags need clearing. */
static __always_inline void gw_msg_init(struct gw_work *w)
{
	struct gw_http_event *ev = &w->ev;
	struct gw_parse_state *ps = &w->ps;
	int i;

	ev->hdr.kind = GW_EV_HTTP_REQUEST; /* until the start line says "HTTP/1.x" */
	ev->hdr.ts_boot_ns = bpf_ktime_get_boot_ns();
	ev->content_length = ~0ULL;
	ev->anomalies = 0;
	ev->header_count = 0;
	ev->header_bytes = 0;
	ev->status = 0;
	ev->path_len = 0;
	ev->method_len = 0;
	ev->version_minor = 0xff;
	ev->is_response = 0;
	ev->segments = 0;
#pragma unroll
	for (i = 0; i < GW_CRED_SLOTS; i++) {
		ev->creds[i].present = 0;
		ev->creds[i].hash = 0;
		ev->creds[i].len = 0;
		ev->creds[i].scheme = 0;
		ev->creds[i].hash_truncated = 0;
	}
#pragma unroll
	for (i = 0; i < GW_HDR_SLOTS; i++) {
		ev->hdrs[i].present = 0;
		ev->hdrs[i].len = 0;
		ev->hdrs[i].truncated = 0;
	}
	__builtin_memset(&ev->mcp_sess, 0, sizeof(ev->mcp_sess));
	__builtin_memset(&ev->mcp, 0, __builtin_offsetof(struct gw_mcp_body, method));
	__builtin_memset(ps, 0, sizeof(*ps));
	ps->state = GW_S_METHOD;
	ps->cur_slot = 0xff;
	ps->cur_cred = 0xff;
}

static __always_inline __u8 gw_lower(__u8 b)
{
	return (b >= 'A' && b <= 'Z') ? b + 32 : b;
}

static __always_inline void gw_header_begin(struct gw_parse_state *ps)
{
	ps->name_len = 0;
	__builtin_memset(&ps->name, 0, sizeof(ps->name));
	ps->cur_slot = 0xff;
	ps->cur_special = GW_HS_NONE;
	ps->cur_cred = 0xff;
	ps->val_total = 0;
	ps->val_started = 0;
	ps->sec.scheme = 0;
	ps->scheme_len = 0;
	ps->scheme_done = 0;
	ps->line_cr = 0;
}

static __always_inline __u8 gw_scheme_of(__u64 s)
{
	if (s == GW_C8('b', 'e', 'a', 'r', 'e', 'r', 0, 0))
		return GW_SCHEME_BEARER;
	if (s == GW_C8('b', 'a', 's', 'i', 'c', 0, 0, 0))
		return GW_SCHEME_BASIC;
	if (s == GW_C8('d', 'i', 'g', 'e', 's', 't', 0, 0))
		return GW_SCHEME_DIGEST;
	if (s == GW_C8('n', 'e', 'g', 'o', 't', 'i', 'a', 't'))
		return GW_SCHEME_NEGOTIATE; /* "negotiate": 9 letters, first 8 compared */
	return GW_SCHEME_OTHER;
}

/* ---- MCP session ids: hashed like credentials, shape kept, value dropped ---- */

static __always_inline void gw_sess_begin(struct gw_work *w, __u8 origin)
{
	struct gw_parse_state *ps = &w->ps;
	struct gw_hash_key *key;
	__u32 zero = 0;

	/* The first id of a message wins; a second one is not hashed. */
	ps->sess_active = !w->ev.mcp_sess.present;
	if (!ps->sess_active)
		return;
	key = bpf_map_lookup_elem(&gw_hash_key, &zero);
	if (key)
		gw_siphash_init(&ps->sec.sip, key->k0, key->k1);
	else
		gw_siphash_init(&ps->sec.sip, 0, 0);
	w->ev.mcp_sess.origin = origin;
	w->ev.mcp_sess.len = 0;
	w->ev.mcp_sess.outside_visible = 0;
	__builtin_memset(w->ps.sec.seen, 0, sizeof(w->ps.sec.seen));
}

static __always_inline void gw_sess_byte(struct gw_work *w, __u8 b)
{
	struct gw_mcp_sess *ms = &w->ev.mcp_sess;

	if (!w->ps.sess_active)
		return;
	gw_siphash_byte(&w->ps.sec.sip, b);
	ms->len++;
	w->ps.sec.seen[(b >> 6) & 3] |= 1ULL << (b & 63);
	if (b < 0x21 || b > 0x7e)
		ms->outside_visible = 1;
}

static __always_inline void gw_sess_end(struct gw_work *w, int cut)
{
	struct gw_mcp_sess *ms = &w->ev.mcp_sess;

	if (!w->ps.sess_active)
		return;
	ms->hash = gw_siphash_final(&w->ps.sec.sip);
	ms->distinct = __builtin_popcountll(w->ps.sec.seen[0]) + __builtin_popcountll(w->ps.sec.seen[1]) +
		       __builtin_popcountll(w->ps.sec.seen[2]) + __builtin_popcountll(w->ps.sec.seen[3]);
	ms->hash_truncated = cut | w->ps.secret_lost;
	w->ps.secret_lost = 0;
	ms->present = 1;
	w->ps.sess_active = 0;
	__builtin_memset(&w->ps.sec.sip, 0, sizeof(w->ps.sec.sip));
	__builtin_memset(w->ps.sec.seen, 0, sizeof(w->ps.sec.seen));
}

/* Whether a query parameter name (n bytes, lower-cased, in two words) is
 * allow-listed to keep its value in clear. */
static __always_inline int gw_query_clear(__u64 w0, __u64 w1, __u8 n)
{
	int i;

	for (i = 0; i < GW_QUERY_CLEAR_MAX; i++) {
		if (i >= gw_nquery_clear)
			return 0;
		if (gw_qclear_len[i] == n && gw_qclear_w0[i] == w0 && gw_qclear_w1[i] == w1)
			return 1;
	}
	return 0;
}

/* One byte of a URL (request target, or an SSE endpoint's data: URL). In the
 * query string every value is masked with '*' (its length kept) but for the
 * allow-listed names (gw_query_clear); session_id's is also hashed as the MCP
 * session. Names are matched lower-cased; a name spelled another way
 * (percent-encoded, say) is simply not allow-listed: masked. The parameter
 * names stay visible. Returns the byte to keep. */
static __always_inline __u8 gw_query_byte(struct gw_work *w, __u8 b, __u8 origin)
{
	struct gw_parse_state *ps = &w->ps;
	__u8 n = ps->qname_len;

	if (!ps->in_query) {
		if (b == '?') {
			ps->in_query = 1;
			ps->qname_len = 0;
			ps->qname[0] = ps->qname[1] = 0;
			ps->qval = 0;
		}
		return b;
	}
	if (b == '&' || b == '#' || b == ';') {
		if (ps->qval == 1)
			gw_sess_end(w, 0);
		ps->qval = 0;
		ps->qname_len = 0;
		ps->qname[0] = ps->qname[1] = 0;
		if (b == '#')
			ps->in_query = 0;
		return b;
	}
	if (ps->qval == 1) {
		gw_sess_byte(w, b);
		return '*';
	}
	if (ps->qval == 2)
		return '*';
	if (ps->qval)
		return b;
	if (b == '=') {
		if (n == 10 && ps->qname[0] == GW_C8('s', 'e', 's', 's', 'i', 'o', 'n', '_') &&
		    ps->qname[1] == GW_C8('i', 'd', 0, 0, 0, 0, 0, 0)) {
			ps->qval = 1;
			gw_sess_begin(w, origin);
		} else if (n <= 16 && gw_query_clear(ps->qname[0], ps->qname[1], n)) {
			ps->qval = 3;
		} else {
			ps->qval = 2;
		}
		return b;
	}
	if (n < 16)
		ps->qname[(n >> 3) & 1] |= ((__u64)gw_lower(b)) << (8 * (n & 7));
	if (n <= 16)
		ps->qname_len = n + 1;
	return b;
}

/* Out of line: the query and session code is rare, and keeping it out of the
 * per-byte step keeps that step small. Verified once per program. */
__noinline int gw_query_byte_g(struct gw_work *w, __u32 b, __u32 origin)
{
	if (!w)
		return b & 0xff;
	return gw_query_byte(w, b, origin);
}

__noinline int gw_sess_byte_g(struct gw_work *w, __u32 b)
{
	if (!w)
		return 0;
	gw_sess_byte(w, b);
	return 0;
}

/* End of a URL: a session id still being read is complete. */
static __always_inline void gw_query_end(struct gw_work *w)
{
	if (w->ps.qval == 1)
		gw_sess_end(w, 0);
	w->ps.qval = 0;
	w->ps.in_query = 0;
}

/* Unaligned 8-byte load (x86-64 and arm64 take them; the verifier allows
 * them there). A memcpy of unknown alignment compiles to eight byte loads. */
static __always_inline __u64 gw_ld8(const void *p)
{
	return *(const __u64 *)p;
}

/* Every store of a multi-byte step writes only the bytes it took (the rest
 * zero): past a step's k bytes a word holds later bytes of the stream or
 * stale chunk bytes of an earlier packet, which may be a credential, and
 * the whole event record goes to the ring buffer. */
static __always_inline void gw_st8(void *p, __u64 v)
{
	*(__u64 *)p = v;
}

#define GW_HDR_MUL 0x9e3779b97f4a7c15ULL

/* Home slot of a header name: its four zero-padded words and its length,
 * multiply-xor mixed; the top bits pick the slot. Mirrored by
 * capture::headers::name_hash (a kernel test checks that every configured
 * name is found). */
static __always_inline __u32 gw_hdr_hash(__u64 w0, __u64 w1, __u64 w2, __u64 w3, __u32 len)
{
	__u64 h = gw_hdr_seed ^ len;

	h = (h ^ w0) * GW_HDR_MUL;
	h = (h ^ (h >> 29) ^ w1) * GW_HDR_MUL;
	h = (h ^ (h >> 29) ^ w2) * GW_HDR_MUL;
	h = (h ^ (h >> 29) ^ w3) * GW_HDR_MUL;
	return h >> 57; /* log2(GW_HDR_TABLE) top bits */
}

/* The table entry of the header name just read, or NULL. */
static __always_inline struct gw_hdr_info *gw_hdr_find(struct gw_parse_state *ps)
{
	__u64 w0 = gw_ld8(&ps->name.name[0]), w1 = gw_ld8(&ps->name.name[8]);
	__u64 w2 = gw_ld8(&ps->name.name[16]), w3 = gw_ld8(&ps->name.name[24]);
	__u32 h = gw_hdr_hash(w0, w1, w2, w3, ps->name_len);
	int i;

#pragma unroll
	for (i = 0; i < GW_HDR_PROBES; i++) {
		__u32 idx = (h + i) & (GW_HDR_TABLE - 1);
		struct gw_hdr_slot *s = bpf_map_lookup_elem(&gw_hdr_table, &idx);

		if (!s || !s->len)
			return 0;
		if (s->len == ps->name_len && gw_ld8(&s->name.name[0]) == w0 &&
		    gw_ld8(&s->name.name[8]) == w1 && gw_ld8(&s->name.name[16]) == w2 &&
		    gw_ld8(&s->name.name[24]) == w3)
			return &s->info;
	}
	return 0;
}

/* Called at a header's colon: look the name up in the configured table. */
static __always_inline void gw_header_name_done(struct gw_work *w)
{
	struct gw_parse_state *ps = &w->ps;
	struct gw_hdr_info *hi;
	struct gw_hash_key *key;
	__u32 zero = 0;

	if (ps->name_len == 0 || ps->name_len > GW_HDR_NAME_LEN)
		return;
	hi = gw_hdr_find(ps);
	if (!hi)
		return;
	ps->cur_slot = hi->slot;
	ps->cur_special = hi->special;
	if (hi->special == GW_HS_CRED && hi->cred < GW_CRED_SLOTS) {
		ps->cur_cred = hi->cred;
		key = bpf_map_lookup_elem(&gw_hash_key, &zero);
		if (key)
			gw_siphash_init(&ps->sec.sip, key->k0, key->k1);
		else
			gw_siphash_init(&ps->sec.sip, 0, 0);
	} else if (hi->special == GW_HS_CONTENT_LENGTH) {
		if (ps->cl_seen)
			w->ev.anomalies |= GW_AN_DUP_CONTENT_LENGTH;
		ps->cl_seen = 1;
		ps->cl_value = 0;
	} else if (hi->special == GW_HS_TRANSFER_ENCODING) {
		ps->te_seen = 1;
	} else if (hi->special == GW_HS_MCP_SESSION) {
		gw_sess_begin(w, GW_SESS_HEADER);
	} else if (hi->special == GW_HS_CONTENT_TYPE || hi->special == GW_HS_CONNECTION) {
		ps->ct_len = 0; /* Connection's tokens go through the same 16-byte buffer */
		ps->ctype[0] = ps->ctype[1] = 0;
	} else if (hi->special == GW_HS_FRAMING_LOOKALIKE) {
		/* Transfer_Encoding: servers that map '_' to '-' (CGI-style
		 * environments, some frameworks) frame by it; proxies do not. */
		w->ev.anomalies |= GW_AN_FRAMING_LOOKALIKE;
	} else if (hi->special == GW_HS_HOST) {
		if (ps->host_seen)
			w->ev.anomalies |= GW_AN_DUP_HOST;
		ps->host_seen = 1;
	}
	if (ps->cur_slot < GW_HDR_SLOTS) {
		/* First occurrence wins; a repeated header is not copied again. */
		if (w->ev.hdrs[ps->cur_slot].present)
			ps->cur_slot = 0xff;
		else
			w->ev.hdrs[ps->cur_slot].present = 1;
	}
}

/* Authorization and Proxy-Authorization start with a scheme; cookies and
 * API keys do not, and are hashed exactly as sent. */
static __always_inline int gw_cred_has_scheme(__u8 c)
{
	return c == GW_CRED_AUTHORIZATION || c == GW_CRED_PROXY_AUTHORIZATION;
}

/* One token of a Connection value ended: a hop-by-hop Content-Length or
 * Transfer-Encoding makes a proxy strip the framing the next hop relies on. */
static __always_inline void gw_connection_token_done(struct gw_work *w)
{
	struct gw_parse_state *ps = &w->ps;

	if ((ps->ct_len == 14 && ps->ctype[0] == GW_C8('c', 'o', 'n', 't', 'e', 'n', 't', '-') &&
	     (ps->ctype[1] & gw_mask(6)) == GW_C8('l', 'e', 'n', 'g', 't', 'h', 0, 0)) ||
	    (ps->ct_len == 17 && ps->ctype[0] == GW_C8('t', 'r', 'a', 'n', 's', 'f', 'e', 'r') &&
	     ps->ctype[1] == GW_C8('-', 'e', 'n', 'c', 'o', 'd', 'i', 'n')))
		w->ev.anomalies |= GW_AN_CONNECTION_FRAMING;
	ps->ct_len = 0;
	ps->ctype[0] = ps->ctype[1] = 0;
}

/* Called at the end of a header line (or when the window closes mid-value). */
static __always_inline void gw_header_value_done(struct gw_work *w, int cut)
{
	struct gw_parse_state *ps = &w->ps;
	__u8 c = ps->cur_cred;

	if (ps->cur_special == GW_HS_CRED && c < GW_CRED_SLOTS) {
		struct gw_cred *cr = &w->ev.creds[c];

		cr->present = 1;
		cr->len = ps->val_total;
		cr->hash = gw_siphash_final(&ps->sec.sip);
		cr->hash_truncated = cut | ps->secret_lost;
		ps->secret_lost = 0;
		if (c == GW_CRED_AUTHORIZATION || c == GW_CRED_PROXY_AUTHORIZATION)
			cr->scheme = ps->scheme_done ? gw_scheme_of(ps->sec.scheme) : GW_SCHEME_OTHER;
		else
			cr->scheme = GW_SCHEME_OTHER;
		/* Forget the secret's first bytes as soon as they are classified. */
		ps->sec.scheme = 0;
		__builtin_memset(&ps->sec.sip, 0, sizeof(ps->sec.sip));
	} else if (ps->cur_special == GW_HS_CONTENT_LENGTH) {
		if (ps->cl_bad == 1 || ps->val_total == 0)
			w->ev.anomalies |= GW_AN_INVALID_CL;
		else if (!(w->ev.anomalies & GW_AN_DUP_CONTENT_LENGTH))
			w->ev.content_length = ps->cl_value;
	} else if (ps->cur_special == GW_HS_TRANSFER_ENCODING) {
		/* Any TE value means the body length is not CL; we skip no body then. */
		ps->te_chunked_only = 1;
	} else if (ps->cur_special == GW_HS_CONNECTION) {
		gw_connection_token_done(w);
	} else if (ps->cur_special == GW_HS_MCP_SESSION) {
		gw_sess_end(w, cut);
	} else if (ps->cur_special == GW_HS_CONTENT_TYPE) {
		if (ps->ctype[0] == GW_C8('a', 'p', 'p', 'l', 'i', 'c', 'a', 't') &&
		    ps->ctype[1] == GW_C8('i', 'o', 'n', '/', 'j', 's', 'o', 'n'))
			ps->ct_kind = GW_CT_JSON;
		else if (ps->ctype[0] == GW_C8('t', 'e', 'x', 't', '/', 'e', 'v', 'e') &&
			 ps->ctype[1] == GW_C8('n', 't', '-', 's', 't', 'r', 'e', 'a'))
			ps->ct_kind = GW_CT_SSE;
	}
	w->ev.header_count++;
}

static __always_inline void gw_value_byte(struct gw_work *w, __u8 b)
{
	struct gw_parse_state *ps = &w->ps;
	__u8 slot = ps->cur_slot;

	if (!ps->val_started) {
		if (b == ' ' || b == '\t')
			return; /* leading OWS */
		ps->val_started = 1;
	}
	ps->val_total++;
	if (b >= 0x80)
		w->ev.anomalies |= GW_AN_NON_ASCII;
	else if (b < 0x20 && b != '\t')
		w->ev.anomalies |= GW_AN_CONTROL_CHAR;

	if (ps->cur_special == GW_HS_CRED) {
		/* An auth scheme is case-insensitive (RFC 9110 §11.1): hashed
		 * lower-cased, so "bEarer T" and "Bearer T" are one credential. */
		gw_siphash_byte(&ps->sec.sip, !ps->scheme_done && gw_cred_has_scheme(ps->cur_cred) ? gw_lower(b) : b);
		if (!ps->scheme_done) {
			if (b == ' ')
				ps->scheme_done = 1;
			else if (ps->scheme_len < 8)
				ps->sec.scheme |= ((__u64)gw_lower(b)) << (8 * ps->scheme_len++);
			else
				ps->scheme_len = 9; /* longer than any known scheme */
		}
		return;
	}
	if (ps->cur_special == GW_HS_MCP_SESSION) {
		gw_sess_byte_g(w, b);
		return;
	}
	if (ps->cur_special == GW_HS_CONNECTION) {
		if (b == ',')
			gw_connection_token_done(w);
		else if (b != ' ' && b != '\t' && ps->ct_len < 255 && ps->ct_len++ < 16)
			ps->ctype[((ps->ct_len - 1) >> 3) & 1] |= ((__u64)gw_lower(b))
								 << (8 * ((ps->ct_len - 1) & 7));
	}
	if (ps->cur_special == GW_HS_CONTENT_TYPE && ps->ct_len < 16) {
		ps->ctype[(ps->ct_len >> 3) & 1] |= ((__u64)gw_lower(b)) << (8 * (ps->ct_len & 7));
		ps->ct_len++;
	}
	if (ps->cur_special == GW_HS_CONTENT_LENGTH) {
		/* digits, then optional trailing blanks (OWS, RFC 9110 §5.5: valid,
		 * servers accept it); a digit after a blank is not a length */
		if (b >= '0' && b <= '9' && ps->cl_bad == 0 && ps->cl_value < 100000000000000ULL)
			ps->cl_value = ps->cl_value * 10 + (b - '0');
		else if ((b == ' ' || b == '\t') && ps->cl_bad != 1)
			ps->cl_bad = 2;
		else
			ps->cl_bad = 1;
	}
	if (slot < GW_HDR_SLOTS) {
		struct gw_hdr_value *hv = &w->ev.hdrs[slot];
		__u8 n = hv->len;

		if (n < GW_HDR_VALUE_LEN) {
			hv->value[n & (GW_HDR_VALUE_LEN - 1)] = b;
			hv->len = n + 1;
		} else {
			hv->truncated = 1;
			w->ev.anomalies |= GW_AN_VALUE_TRUNCATED;
		}
	}
}

/* Bytes of an absolute-form target's authority that are copied. */
#define GW_AUTH_COPY 64

/* A byte of an absolute-form target ("http://user:pass@host/p"), before it
 * is copied: tracks scheme, authority and path, and at an '@' in the
 * authority removes the userinfo copied so far (a password in the clear;
 * RFC 9110 §4.2.4 forbids sending it). Returns 1 when the byte is consumed. */
static __always_inline int gw_abs_byte(struct gw_work *w, __u8 b)
{
	struct gw_parse_state *ps = &w->ps;
	struct gw_http_event *ev = &w->ev;
	__u32 n = ev->path_len, i;

	if (ps->abs_form == 0) {
		ps->abs_form = 1;
	} else if (ps->abs_form == 1) {
		if (b == '/' && n >= 2 && n <= GW_PATH_LEN && ev->path[(n - 1) & (GW_PATH_LEN - 1)] == '/' &&
		    ev->path[(n - 2) & (GW_PATH_LEN - 1)] == ':') {
			ps->abs_form = 2;
			ps->abs_auth = n + 1;
		} else if (n > 8) {
			ps->abs_form = 3; /* longer than "https://": not a scheme we know */
		}
	} else if (ps->abs_form == 2) {
		if (b == '/' || b == '?' || b == '#') {
			ps->abs_form = 3;
		} else if (b == '@') {
			/* Zeroed, not only cut: the whole path array goes to the ring.
			 * Branch-free over the authority's GW_AUTH_COPY bytes (all that is
			 * ever copied of it): byte a+i is kept only when a+i >= n. */
#pragma unroll
			for (i = 0; i < GW_AUTH_COPY; i++) {
				__u32 j = ps->abs_auth + i;
				__u8 keep = (__u8)(((j - n) >> 31) - 1);

				ev->path[j & (GW_PATH_LEN - 1)] &= keep;
			}
			if (ps->abs_auth < n)
				ev->path_len = ps->abs_auth;
			ev->anomalies |= GW_AN_USERINFO;
			return 1;
		} else if (n >= ps->abs_auth + GW_AUTH_COPY) {
			/* An authority longer than the bytes the '@' erasure covers is not
			 * copied further (flagged): userinfo never outlives its '@'. */
			ev->anomalies |= GW_AN_PATH_TRUNCATED;
			return 1;
		}
	}
	return 0;
}

/* The first token of a start line ended (at a space). Returns 1 when the
 * bytes are not HTTP after all. */
static __always_inline int gw_method_done(struct gw_work *w)
{
	struct gw_http_event *ev = &w->ev;
	struct gw_parse_state *ps = &w->ps;
	__u8 n = ev->method_len;
	__u64 m = 0;

	__builtin_memcpy(&m, ev->method, 8);
	if (n == 8 && (m & gw_mask(7)) == GW_C8('H', 'T', 'T', 'P', '/', '1', '.', 0) &&
	    ((m >> 56) == '0' || (m >> 56) == '1')) {
		/* A status line: this message is a response. */
		ev->hdr.kind = GW_EV_HTTP_RESPONSE;
		ev->is_response = 1;
		ev->version_minor = (m >> 56) - '0';
		ev->method_len = 0;
		ps->state = GW_S_STATUS;
		return 0;
	}
	if (n < 3)
		return 1;
	if (!gw_known_method(m, n))
		ev->anomalies |= GW_AN_UNKNOWN_METHOD;
	ps->is_connect = n == 7 && (m & gw_mask(7)) == GW_C8('C', 'O', 'N', 'N', 'E', 'C', 'T', 0);
	ps->state = GW_S_PATH;
	return 0;
}

/* One byte through the state machine. Returns 1 when the message ended. */
static __always_inline int gw_http_step(struct gw_work *w, __u8 b)
{
	struct gw_parse_state *ps = &w->ps;
	struct gw_http_event *ev = &w->ev;

	if (ps->bytes >= gw_parse_window) {
		if (ps->state == GW_S_VALUE)
			gw_header_value_done(w, 1);
		ev->anomalies |= GW_AN_TRUNCATED;
		ps->state = GW_S_ABORT;
		return 1;
	}
	ps->bytes++;

	switch (ps->state) {
	case GW_S_METHOD:
		if (b == ' ' || (b == '\t' && ev->method_len >= 3)) {
			/* A tab separates words for lenient servers (RFC 9112 §3): flagged. */
			if (b == '\t')
				ev->anomalies |= GW_AN_MALFORMED_START;
			if (gw_method_done(w))
				goto discard;
			return 0;
		}
		/* A method is a token of upper-case letters; "HTTP/1.x" also has '/', '.', digits. */
		if (ev->method_len >= GW_METHOD_LEN ||
		    !((b >= 'A' && b <= 'Z') || b == '-' || b == '_' ||
		      (ev->method_len >= 4 && (b == '/' || b == '.' || (b >= '0' && b <= '9')))))
			goto discard;
		ev->method[ev->method_len & (GW_METHOD_LEN - 1)] = b;
		ev->method_len++;
		return 0;
	case GW_S_PATH:
		/* origin-form "/...", asterisk-form "*", absolute-form "http..."; CONNECT takes host:port */
		if (ev->path_len == 0 && !ps->is_connect && b != '/' && b != '*' && b != 'h' && b != 'H' &&
		    b != ' ' && b != '\t')
			goto discard;
		if (ev->path_len == 0 && (b == ' ' || b == '\t')) {
			/* More blanks before the target: servers that split on whitespace
			 * (Python's http.server, many frameworks) still find it. */
			ev->anomalies |= GW_AN_MALFORMED_START;
			return 0;
		}
		if (b == ' ' || b == '\t') {
			if (b == '\t')
				ev->anomalies |= GW_AN_MALFORMED_START;
			gw_query_end(w);
			ps->state = GW_S_VERSION;
		} else if (b == '\r' || b == '\n') {
			/* HTTP/0.9 style request line or garbage: no version */
			gw_query_end(w);
			ev->anomalies |= GW_AN_MALFORMED_START;
			ps->line_cr = b == '\r';
			ps->state = b == '\r' ? GW_S_LINE_LF : GW_S_LINE_START;
			if (b == '\n')
				gw_header_begin(ps);
		} else {
			if (b >= 0x80)
				ev->anomalies |= GW_AN_NON_ASCII;
			else if (b < 0x20)
				ev->anomalies |= GW_AN_CONTROL_CHAR;
			if ((ps->abs_form || (ev->path_len == 0 && (b == 'h' || b == 'H'))) &&
			    ps->abs_form != 3 && gw_abs_byte(w, b))
				return 0;
			if (ps->in_query || b == '?')
				b = gw_query_byte_g(w, b, GW_SESS_QUERY);
			if (ev->path_len < GW_PATH_LEN) {
				ev->path[ev->path_len & (GW_PATH_LEN - 1)] = b;
				ev->path_len++;
			} else {
				ev->anomalies |= GW_AN_PATH_TRUNCATED;
			}
		}
		return 0;
	case GW_S_VERSION:
		if (ps->ver_len == 0 && (b == ' ' || b == '\t')) {
			ev->anomalies |= GW_AN_MALFORMED_START; /* more blanks before the version */
			return 0;
		}
		if (b == '\r' || b == '\n') {
			if ((ps->version & gw_mask(7)) == GW_C8('H', 'T', 'T', 'P', '/', '1', '.', 0) &&
			    ps->ver_len == 8 && ((ps->version >> 56) == '0' || (ps->version >> 56) == '1'))
				ev->version_minor = (ps->version >> 56) - '0';
			else
				ev->anomalies |= GW_AN_MALFORMED_START;
			if (b == '\n')
				ev->anomalies |= GW_AN_BARE_LF;
			gw_header_begin(ps);
			ps->state = b == '\r' ? GW_S_LINE_LF : GW_S_LINE_START;
		} else if (ps->ver_len < 8) {
			ps->version |= ((__u64)b) << (8 * ps->ver_len);
			ps->ver_len++;
		} else {
			ps->ver_len = 9;
		}
		return 0;
	case GW_S_STATUS:
		if (b >= '0' && b <= '9' && ps->status_digits < 3) {
			ev->status = ev->status * 10 + (b - '0');
			ps->status_digits++;
			return 0;
		}
		if (ps->status_digits != 3)
			ev->anomalies |= GW_AN_MALFORMED_START;
		ps->status_digits = 3;
		/* fall through: the byte after the code belongs to the reason */
		if (b != '\r' && b != '\n') {
			ps->state = GW_S_REASON;
			return 0;
		}
		gw_header_begin(ps);
		if (b == '\n')
			ev->anomalies |= GW_AN_BARE_LF;
		ps->state = b == '\r' ? GW_S_LINE_LF : GW_S_LINE_START;
		return 0;
	case GW_S_REASON:
		if (b == '\r' || b == '\n') {
			gw_header_begin(ps);
			if (b == '\n')
				ev->anomalies |= GW_AN_BARE_LF;
			ps->state = b == '\r' ? GW_S_LINE_LF : GW_S_LINE_START;
		}
		return 0;
	case GW_S_LINE_LF:
		if (b == '\n') {
			gw_header_begin(ps);
			ps->state = GW_S_LINE_START;
			return 0;
		}
		/* CR not followed by LF: a bare CR inside the header block */
		ev->anomalies |= GW_AN_CRLF_IN_VALUE;
		gw_header_begin(ps);
		ps->state = GW_S_LINE_START;
		/* fall through: reprocess this byte as a line start */
	case GW_S_LINE_START:
		if (b == '\r') {
			ps->state = GW_S_END_LF;
			return 0;
		}
		if (b == '\n') {
			ev->anomalies |= GW_AN_BARE_LF;
			goto done;
		}
		if (b == ' ' || b == '\t') {
			/* obs-fold: continuation of the previous value, deprecated and a smuggling vector */
			ev->anomalies |= GW_AN_OBS_FOLD;
			ps->state = GW_S_VALUE;
			ps->val_started = 1;
			return 0;
		}
		ps->state = GW_S_NAME;
		/* fall through: first byte of a name */
	case GW_S_NAME:
		if (b == ':') {
			gw_header_name_done(w);
			ps->state = GW_S_VALUE;
			return 0;
		}
		if (b == '\r' || b == '\n' || b == ' ' || b == '\t' || b < 0x21 || b > 0x7e) {
			/* whitespace before the colon ("Content-Length : 5"), or no colon */
			ev->anomalies |= GW_AN_MALFORMED_LINE;
			if (b == '\r' || b == '\n') {
				ev->header_count++;
				ps->state = b == '\r' ? GW_S_LINE_LF : GW_S_LINE_START;
				if (b == '\n')
					gw_header_begin(ps);
			}
			return 0;
		}
		if (ps->name_len < GW_HDR_NAME_LEN)
			ps->name.name[ps->name_len & (GW_HDR_NAME_LEN - 1)] = gw_lower(b);
		if (ps->name_len <= GW_HDR_NAME_LEN)
			ps->name_len++;
		return 0;
	case GW_S_VALUE:
		if (b == '\r') {
			gw_header_value_done(w, 0);
			ps->state = GW_S_LINE_LF;
			return 0;
		}
		if (b == '\n') {
			ev->anomalies |= GW_AN_BARE_LF;
			gw_header_value_done(w, 0);
			gw_header_begin(ps);
			ps->state = GW_S_LINE_START;
			return 0;
		}
		gw_value_byte(w, b);
		return 0;
	case GW_S_END_LF:
		if (b != '\n')
			ev->anomalies |= GW_AN_CRLF_IN_VALUE;
		goto done;
	default:
		return 1;
	}
discard:
	ps->state = GW_S_DISCARD;
	return 1;
done:
	ps->state = GW_S_DONE;
	ev->header_bytes = ps->bytes;
	if (ps->cl_seen && ps->te_seen)
		ev->anomalies |= GW_AN_CL_AND_TE;
	return 1;
}


/* ---- Body scan: JSON-RPC metadata from the first bytes of a body ----
 *
 * A small resumable JSON tokenizer: it tracks nesting and reads only the keys
 * of the message object (jsonrpc, method, id, result, error, params) and of
 * its params object (name, uri). Only the method and params.name/uri strings
 * are copied, bounded; every other body byte is looked at and dropped. */

static __always_inline int gw_ws(__u8 b)
{
	return b == ' ' || b == '\t' || b == '\r' || b == '\n';
}

/* The first 8 bytes of a short token, little endian; *len counts to 9 and
 * stops, so 9 means "longer than 8" and never matches an 8-byte constant. */
static __always_inline void gw_acc8(__u64 *acc, __u8 *len, __u8 b)
{
	if (*len < 8)
		*acc |= ((__u64)b) << (8 * (*len & 7));
	if (*len <= 8)
		(*len)++;
}

static __always_inline void gw_jcap_byte(struct gw_work *w, __u8 b)
{
	struct gw_mcp_body *m = &w->ev.mcp;

	/* Method and name are printable ASCII on the way out; anything else is '?'. */
	if (b < 0x20 || b > 0x7e)
		b = '?';
	if (w->ps.jcap == 1) {
		if (m->method_len < GW_MCP_METHOD_LEN) {
			m->method[m->method_len & (GW_MCP_METHOD_LEN - 1)] = b;
			m->method_len++;
		} else {
			m->method_truncated = 1;
		}
	} else if (w->ps.jcap == 2) {
		if (m->name_len < GW_MCP_NAME_LEN) {
			m->name[m->name_len & (GW_MCP_NAME_LEN - 1)] = b;
			m->name_len++;
		} else {
			m->name_truncated = 1;
		}
	}
}

static __always_inline __u8 gw_jkey_of(struct gw_parse_state *ps)
{
	__u64 k = ps->jk[0];
	__u8 n = ps->jklen;

	if (ps->jdepth == ps->jbase) {
		if (n == 7 && k == GW_C8('j', 's', 'o', 'n', 'r', 'p', 'c', 0))
			return GW_JK_JSONRPC;
		if (n == 6 && k == GW_C8('m', 'e', 't', 'h', 'o', 'd', 0, 0))
			return GW_JK_METHOD;
		if (n == 2 && k == GW_C8('i', 'd', 0, 0, 0, 0, 0, 0))
			return GW_JK_ID;
		if (n == 6 && k == GW_C8('r', 'e', 's', 'u', 'l', 't', 0, 0))
			return GW_JK_RESULT;
		if (n == 5 && k == GW_C8('e', 'r', 'r', 'o', 'r', 0, 0, 0))
			return GW_JK_ERROR;
		if (n == 6 && k == GW_C8('p', 'a', 'r', 'a', 'm', 's', 0, 0))
			return GW_JK_PARAMS;
	} else if (ps->jparams && ps->jdepth == ps->jbase + 1) {
		if ((n == 4 && k == GW_C8('n', 'a', 'm', 'e', 0, 0, 0, 0)) ||
		    (n == 3 && k == GW_C8('u', 'r', 'i', 0, 0, 0, 0, 0)))
			return GW_JK_NAME;
	}
	return GW_JK_OTHER;
}

/* Everything the scan looks for is known: stop early (tool arguments that
 * follow params.name are never read). */
static __always_inline int gw_json_decided(struct gw_work *w)
{
	struct gw_mcp_body *m = &w->ev.mcp;

	return m->jsonrpc && m->has_id &&
	       ((m->method_len && w->ps.jname_done) || m->has_result || m->has_error);
}

/* Open a container; 0 when nesting is too deep to follow. */
static __always_inline int gw_jpush(struct gw_parse_state *ps, int is_array)
{
	if (ps->jdepth >= 30)
		return 0;
	ps->jdepth++;
	if (is_array)
		ps->jstack |= 1u << (ps->jdepth & 31);
	else
		ps->jstack &= ~(1u << (ps->jdepth & 31));
	return 1;
}

/* Close a container; 1 when that closed the message object. */
static __always_inline int gw_jpop(struct gw_parse_state *ps)
{
	if (ps->jparams && ps->jdepth == ps->jbase + 1) {
		ps->jparams = 0;
		ps->jname_done = 1;
	}
	if (ps->jdepth == 0)
		return 1;
	ps->jdepth--;
	return ps->jdepth < ps->jbase;
}

/* One body byte through the JSON tokenizer. Returns 1 when the scan is
 * decided (ev.mcp.result set). */
static __always_inline int gw_json_step(struct gw_work *w, __u8 b)
{
	struct gw_parse_state *ps = &w->ps;
	struct gw_mcp_body *m = &w->ev.mcp;

	switch (ps->jstate) {
	case GW_J_START:
		if (gw_ws(b))
			return 0;
		if (b == '{') {
			ps->jbase = 1;
			gw_jpush(ps, 0);
			ps->jstate = GW_J_KEY_OR_END;
			return 0;
		}
		if (b == '[' && !m->batch) {
			m->batch = 1;
			ps->jbase = 2;
			gw_jpush(ps, 1);
			ps->jstate = GW_J_VALUE;
			return 0;
		}
		goto not_json;
	case GW_J_KEY_OR_END:
		if (gw_ws(b) || b == ',')
			return 0;
		if (b == '"') {
			ps->jk[0] = 0;
			ps->jklen = 0;
			ps->jstate = GW_J_KEY;
			return 0;
		}
		if (b == '}')
			goto close;
		goto not_json;
	case GW_J_KEY:
		if (b == '\\') {
			ps->jklen = 9; /* escaped keys are never ones we read */
			ps->jstate = GW_J_KEY_ESC;
			return 0;
		}
		if (b == '"') {
			ps->jkey = gw_jkey_of(ps);
			ps->jstate = GW_J_COLON;
			return 0;
		}
		gw_acc8(&ps->jk[0], &ps->jklen, b);
		return 0;
	case GW_J_KEY_ESC:
		ps->jstate = GW_J_KEY;
		return 0;
	case GW_J_COLON:
		if (gw_ws(b))
			return 0;
		if (b != ':')
			goto not_json;
		if (ps->jkey == GW_JK_JSONRPC)
			m->jsonrpc = 1;
		else if (ps->jkey == GW_JK_ID)
			m->has_id = 1;
		else if (ps->jkey == GW_JK_RESULT)
			m->has_result = 1;
		else if (ps->jkey == GW_JK_ERROR)
			m->has_error = 1;
		ps->jstate = GW_J_VALUE;
		return 0;
	case GW_J_VALUE:
		if (gw_ws(b) || b == ',')
			return 0;
		if (b == '"') {
			if (ps->jkey == GW_JK_METHOD && m->method_len == 0)
				ps->jcap = 1;
			else if (ps->jkey == GW_JK_NAME && m->name_len == 0)
				ps->jcap = 2;
			else
				ps->jcap = 0;
			ps->jstate = GW_J_STR;
			return 0;
		}
		if (b == '{') {
			if (ps->jkey == GW_JK_PARAMS && ps->jdepth == ps->jbase)
				ps->jparams = 1;
			ps->jkey = GW_JK_OTHER;
			if (!gw_jpush(ps, 0))
				goto window;
			ps->jstate = GW_J_KEY_OR_END;
			return 0;
		}
		if (b == '[') {
			ps->jkey = GW_JK_OTHER;
			if (!gw_jpush(ps, 1))
				goto window;
			return 0;
		}
		if (b == ']')
			goto close;
		if (b == '}')
			goto not_json;
		ps->jkey = GW_JK_OTHER;
		ps->jstate = GW_J_SCALAR;
		return 0;
	case GW_J_STR:
		if (b == '"') {
			if (ps->jcap == 2)
				ps->jname_done = 1;
			ps->jcap = 0;
			ps->jkey = GW_JK_OTHER;
			ps->jstate = GW_J_AFTER;
			goto value_done;
		}
		if (b == '\\')
			ps->jstate = GW_J_STR_ESC;
		gw_jcap_byte(w, b); /* escapes are kept as sent */
		return 0;
	case GW_J_STR_ESC:
		gw_jcap_byte(w, b);
		ps->jstate = GW_J_STR;
		return 0;
	case GW_J_SCALAR:
		if (!(gw_ws(b) || b == ',' || b == '}' || b == ']'))
			return 0;
		ps->jstate = GW_J_AFTER;
		if (gw_json_decided(w))
			goto complete;
		/* fall through: the delimiter belongs to the container */
	case GW_J_AFTER:
		if (gw_ws(b))
			return 0;
		if (b == ',') {
			ps->jstate = ((ps->jstack >> (ps->jdepth & 31)) & 1) ? GW_J_VALUE : GW_J_KEY_OR_END;
			return 0;
		}
		if (b == '}' || b == ']')
			goto close;
		goto not_json;
	default:
		return 1;
	}
close:
	ps->jstate = GW_J_AFTER;
	if (gw_jpop(ps))
		goto complete;
value_done:
	if (gw_json_decided(w))
		goto complete;
	return 0;
complete:
	m->result = GW_SCAN_COMPLETE;
	return 1;
window:
	m->result = GW_SCAN_WINDOW;
	return 1;
not_json:
	m->result = GW_SCAN_NOT_JSON;
	return 1;
}

/* One byte of a text/event-stream body: SSE fields; the legacy transport's
 * `event: endpoint` (its data: URL's session_id is hashed), or JSON data lines
 * handed to the JSON tokenizer. Returns 1 when decided. */
static __always_inline int gw_sse_step(struct gw_work *w, __u8 b)
{
	struct gw_parse_state *ps = &w->ps;
	struct gw_mcp_body *m = &w->ev.mcp;

	if (b == '\r')
		return 0; /* CRLF and LF line ends alike */
	switch (ps->sse) {
	case GW_SSE_LINE:
		if (b == '\n') {
			/* blank line: one event ended */
			if (m->sse_endpoint || m->jsonrpc) {
				if (!m->result)
					m->result = GW_SCAN_COMPLETE;
				return 1;
			}
			ps->sse_event_endpoint = 0;
			return 0;
		}
		if (b == ':') {
			ps->sse = GW_SSE_SKIP; /* comment */
			return 0;
		}
		ps->sse_val = b;
		ps->sse_vlen = 1;
		ps->sse = GW_SSE_FIELD;
		return 0;
	case GW_SSE_FIELD:
		if (b == '\n') {
			ps->sse = GW_SSE_LINE;
			return 0;
		}
		if (b != ':') {
			gw_acc8(&ps->sse_val, &ps->sse_vlen, b);
			return 0;
		}
		ps->sse_field = 0;
		if (ps->sse_vlen == 5 && ps->sse_val == GW_C8('e', 'v', 'e', 'n', 't', 0, 0, 0))
			ps->sse_field = 1;
		else if (ps->sse_vlen == 4 && ps->sse_val == GW_C8('d', 'a', 't', 'a', 0, 0, 0, 0))
			ps->sse_field = 2;
		ps->sse_val = 0;
		ps->sse_vlen = 0;
		ps->in_query = 0;
		ps->qval = 0;
		ps->sse = GW_SSE_VALUE_SP;
		return 0;
	case GW_SSE_VALUE_SP:
		ps->sse = GW_SSE_VALUE;
		if (b == ' ')
			return 0;
		/* fall through */
	case GW_SSE_VALUE:
		if (b == '\n') {
			if (ps->sse_field == 1) {
				ps->sse_event_endpoint =
					ps->sse_vlen == 8 &&
					ps->sse_val == GW_C8('e', 'n', 'd', 'p', 'o', 'i', 'n', 't');
				if (ps->sse_event_endpoint)
					m->sse_endpoint = 1;
			} else if (ps->sse_field == 2 && ps->sse_event_endpoint) {
				gw_query_end(w);
			} else if (ps->sse_field == 2 && ps->jstate != GW_J_START) {
				/* a data line ends a JSON value (multi-line data is not followed) */
				if (!m->result)
					m->result = m->jsonrpc ? GW_SCAN_COMPLETE : GW_SCAN_ENDED;
				return 1;
			}
			ps->sse = GW_SSE_LINE;
			return 0;
		}
		if (ps->sse_field == 1) {
			gw_acc8(&ps->sse_val, &ps->sse_vlen, b);
		} else if (ps->sse_field == 2 && ps->sse_event_endpoint) {
			gw_query_byte(w, b, GW_SESS_SSE_ENDPOINT);
		} else if (ps->sse_field == 2) {
			if (gw_json_step(w, b))
				return 1;
		}
		return 0;
	default: /* GW_SSE_SKIP */
		if (b == '\n')
			ps->sse = GW_SSE_LINE;
		return 0;
	}
}

enum { GW_CS_MORE = 0, GW_CS_LINE_END, GW_CS_BAD };

/* One byte of a chunk-size line (RFC 9112 §7.1): hex digits into
 * jchunk_left, extensions after ';' or a blank. GW_CS_LINE_END at its LF,
 * GW_CS_BAD for a byte no chunk-size line holds. */
static __always_inline int gw_chunk_size_byte(struct gw_parse_state *ps, __u8 b)
{
	if (b >= '0' && b <= '9')
		ps->jchunk_left = (ps->jchunk_left << 4) | (b - '0');
	else if ((b | 0x20) >= 'a' && (b | 0x20) <= 'f')
		ps->jchunk_left = (ps->jchunk_left << 4) | ((b | 0x20) - 'a' + 10);
	else if (b == ';' || b == ' ' || b == '\t')
		ps->jchunk_st = GW_CH_EXT;
	else if (b == '\n')
		return GW_CS_LINE_END;
	else if (b != '\r')
		return GW_CS_BAD;
	return GW_CS_MORE;
}

/* One body byte: chunk-size line, SSE or JSON, the scan window and the
 * body's end. Global: verified once, called from the parse loop's callback. */
__noinline int gw_body_step(struct gw_work *w, __u32 byte)
{
	struct gw_parse_state *ps;
	struct gw_mcp_body *m;
	__u8 b = byte;
	int done = 0, data = 1, cs;

	if (!w)
		return 1;
	ps = &w->ps;
	m = &w->ev.mcp;
	if (ps->jbody_cl && ps->body_remaining > 0)
		ps->body_remaining--;
	if (ps->jchunked) {
		/* Chunk framing is looked at and dropped; only chunk data is scanned. */
		data = 0;
		switch (ps->jchunk_st) {
		case GW_CH_SIZE:
			cs = gw_chunk_size_byte(ps, b);
			if (cs == GW_CS_LINE_END)
				goto size_done;
			if (cs == GW_CS_BAD)
				goto ended; /* not chunked framing after all */
			if (ps->jchunk_left > 0x0fffffff)
				ps->jchunk_left = 0x0fffffff; /* far beyond any window */
			break;
		case GW_CH_EXT:
			if (b == '\n')
				goto size_done;
			break;
		case GW_CH_DATA:
			data = 1;
			if (--ps->jchunk_left == 0)
				ps->jchunk_st = GW_CH_DATA_END;
			break;
		default: /* GW_CH_DATA_END */
			if (b == '\n') {
				ps->jchunk_st = GW_CH_SIZE;
				ps->jchunk_left = 0;
			}
			break;
		}
		m->scanned++; /* framing counts against the window too */
		goto check;
size_done:
		if (ps->jchunk_left == 0)
			goto ended; /* last chunk: the body ended */
		ps->jchunk_st = GW_CH_DATA;
		m->scanned++;
		goto check;
	}
check:
	if (data) {
		if (ps->ct_kind == GW_CT_SSE && w->ev.is_response)
			done = gw_sse_step(w, b);
		else
			done = gw_json_step(w, b);
		if (!ps->jchunked)
			m->scanned++;
	}
	if (!done && m->scanned >= gw_body_scan_window) {
		m->result = GW_SCAN_WINDOW;
		done = 1;
	}
	if (!done && ps->jbody_cl && ps->body_remaining == 0)
		goto ended;
	if (done)
		ps->state = GW_S_SCANNED;
	return done;
ended:
	m->result = gw_json_decided(w) ? GW_SCAN_COMPLETE : GW_SCAN_ENDED;
	ps->state = GW_S_SCANNED;
	return 1;
}

/* Headers done: decide whether the body is scanned. Returns 1 when it is
 * (state GW_S_JBODY), 0 when the message is ready to emit. Either way
 * body_remaining holds the Content-Length body still to skip. */
static __always_inline int gw_body_scan_begin(struct gw_work *w)
{
	struct gw_http_event *ev = &w->ev;
	struct gw_parse_state *ps = &w->ps;
	__u64 cl = ev->content_length;
	int chunked = ps->te_chunked_only;

	ps->body_remaining = cl != ~0ULL ? cl : 0;
	if (gw_body_scan_window == 0)
		return 0;
	if (!ev->is_response) {
		/* Only JSON bodies are waited for: any other request is emitted at
		 * once, so a client that never sends its body delays nothing else. */
		if (!chunked && (cl == ~0ULL || cl == 0)) {
			ev->mcp.result = GW_SCAN_NO_BODY;
			return 0;
		}
		if (ps->ct_kind != GW_CT_JSON)
			return 0;
	} else {
		if (ps->ct_kind == GW_CT_OTHER)
			return 0;
		if ((ev->status >= 100 && ev->status < 200) || ev->status == 204 || ev->status == 304)
			return 0;
		if (!chunked && cl == 0) {
			ev->mcp.result = GW_SCAN_NO_BODY;
			return 0;
		}
	}
	ps->jbody_cl = !chunked && cl != ~0ULL;
	ps->jchunked = chunked;
	ps->jchunk_st = GW_CH_SIZE;
	ps->jchunk_left = 0;
	ps->state = GW_S_JBODY;
	return 1;
}

/* The message waited longer than gw_body_wait_ns for the rest of its body. */
static __always_inline int gw_body_wait_over(struct gw_work *w)
{
	return w->ps.state == GW_S_JBODY &&
	       bpf_ktime_get_boot_ns() - w->ev.hdr.ts_boot_ns > gw_body_wait_ns;
}

/* A scan that could not finish (next message, flow end, lost segment). */
static __always_inline void gw_body_scan_abandon(struct gw_work *w)
{
	if (w->ps.state == GW_S_JBODY) {
		w->ev.mcp.result = GW_SCAN_ENDED;
		w->ps.state = GW_S_SCANNED;
	}
}

/* Hide a value's range from the compiler, so that the mask of an index that
 * follows is kept even where the compiler knows it changes nothing (an
 * earlier bound check): 6.1's verifier can lose that bound across a stack
 * spill and must see the mask itself ("R2 max value is outside of the
 * allowed memory range"). */
#define gw_opaque(x) asm volatile("" : "+r"(x))

#define GW_ONES 0x0101010101010101ULL
#define GW_HIGHS 0x8080808080808080ULL
#define GW_LOWS 0x7f7f7f7f7f7f7f7fULL
/* Per byte of a little-endian word: high bit set where the byte is below n
 * (n <= 128). A borrow can flag bytes above the first one below n, never
 * below it: the lowest flag is exact, and only the lowest is ever used. */
#define GW_HAS_LESS(x, n) (((x) - GW_ONES * (n)) & ~(x) & GW_HIGHS)

/* ---- Multi-byte steps ----
 *
 * Each takes the next k (1..8) bytes of the chunk in one step, where k runs
 * up to the first byte that needs the byte path (a delimiter, a control or
 * non-ASCII byte, a state change). The result is exactly that of k calls of
 * gw_http_step / gw_body_step: sensor/tests/kernel_parser.rs runs the byte
 * path (gw_byte_path_only) against this one on a corpus split at every
 * offset. */

/* Exact per byte: high bit set where the byte equals c. */
static __always_inline __u64 gw_eq8(__u64 x, __u8 c)
{
	__u64 y = x ^ (GW_ONES * c);

	return ~(((y & GW_LOWS) + GW_LOWS) | y) & GW_HIGHS;
}

static __always_inline __u64 gw_ws8(__u64 x)
{
	return gw_eq8(x, ' ') | gw_eq8(x, '\t') | gw_eq8(x, '\r') | gw_eq8(x, '\n');
}

/* Index of the lowest flagged byte (high bit set), 8 when none; at most max. */
static __always_inline __u32 gw_first8(__u64 flags, __u32 max)
{
	__u64 below;
	__u32 k = 8;

	if (flags) {
		below = ((flags & (~flags + 1)) >> 7) - 1; /* 0xff in each byte below it */
		k = ((below & GW_ONES) * GW_ONES) >> 56;
	}
	return k < max ? k : max;
}

/* High bit set in each byte that is 'A'..'Z'. Bytes >= 0x80 may disturb the
 * bytes above them, never those below: callers keep only bytes below the
 * first such. */
static __always_inline __u64 gw_upper8(__u64 v)
{
	return (v + GW_ONES * (0x80 - 'A')) & ~(v + GW_ONES * (0x80 - 'Z' - 1)) & GW_HIGHS;
}

/* 'A'..'Z' -> 'a'..'z', per byte (see gw_upper8 for bytes >= 0x80). */
static __always_inline __u64 gw_lower8(__u64 v)
{
	return v | (gw_upper8(v) >> 2);
}

/* gw_acc8 of the k (1..8) low bytes of v. */
static __always_inline void gw_acc8k(__u64 *acc, __u8 *len, __u64 v, __u32 k)
{
	__u32 n = *len;

	if (n < 8)
		*acc |= (v & gw_mask(k < 8 - n ? k : 8 - n)) << (8 * n);
	n += k;
	*len = n > 9 ? 9 : n;
}

/* An MCP session id's bytes: gw_sess_byte of the k low bytes of v. */
static __always_inline void gw_sess_bytes(struct gw_work *w, __u64 v, __u32 k)
{
	struct gw_mcp_sess *ms = &w->ev.mcp_sess;
	int i;

	if (!w->ps.sess_active)
		return;
	gw_siphash_bytes(&w->ps.sec.sip, v, k);
	ms->len += k;
#pragma unroll
	for (i = 0; i < 8; i++) {
		__u8 b = v >> (8 * i);

		if (i >= k)
			break;
		w->ps.sec.seen[(b >> 6) & 3] |= 1ULL << (b & 63);
		if (b < 0x21 || b > 0x7e)
			ms->outside_visible = 1;
	}
}

/* Append up to 16 - n of the k low bytes of v to a 16-byte prefix buffer
 * (two words, n bytes filled); returns how many were taken. */
static __always_inline __u32 gw_put16(__u64 *acc, __u32 n, __u64 v, __u32 k)
{
	__u32 take, off;
	__u64 lv;

	if (n >= 16)
		return 0;
	take = k < 16 - n ? k : 16 - n;
	lv = v & gw_mask(take);
	off = n & 7;
	if (n < 8) {
		acc[0] |= lv << (8 * off);
		if (off && off + take > 8)
			acc[1] |= lv >> (8 * (8 - off));
	} else {
		acc[1] |= lv << (8 * off);
	}
	return take;
}

/* Content-Type's first 16 bytes, lower-cased: the k low bytes of v. */
static __always_inline void gw_ctype_bytes(struct gw_parse_state *ps, __u64 v, __u32 k)
{
	ps->ct_len += gw_put16(ps->ctype, ps->ct_len, gw_lower8(v), k);
}

/* A credential value's first bytes, up to and with the space that ends an
 * auth scheme: hashed, and (lower-cased) the scheme's first 8 bytes kept, as
 * gw_value_byte does for them (for every credential header; only
 * Authorization and Proxy-Authorization report the scheme). */
static __always_inline __u32 gw_scheme_fast(struct gw_work *w, __u64 v, __u32 avail)
{
	struct gw_parse_state *ps = &w->ps;
	__u32 k, all;

	k = gw_first8(GW_HAS_LESS(v, 0x20) | (v & GW_HIGHS) | gw_eq8(v, ' '), avail);
	all = k;
	if (k < avail && ((v >> (8 * k)) & 0xff) == ' ')
		all = k + 1; /* the space: the scheme is done */
	if (!all)
		return 0;
	if (k)
		gw_acc8k(&ps->sec.scheme, &ps->scheme_len, gw_lower8(v), k);
	if (all > k)
		ps->scheme_done = 1;
	ps->val_started = 1;
	/* the scheme hashed lower-cased, as on the byte path (the space stays) */
	gw_siphash_bytes(&ps->sec.sip, gw_cred_has_scheme(ps->cur_cred) ? gw_lower8(v) : v, all);
	ps->val_total += all;
	ps->bytes += all;
	return all;
}

/* A query parameter name's first 16 bytes: the k low bytes of v, as
 * gw_query_byte keeps them (the length counts to 17 and stops). */
static __always_inline void gw_qname_bytes(struct gw_parse_state *ps, __u64 v, __u32 k)
{
	__u32 n = ps->qname_len;

	gw_put16(ps->qname, n, gw_lower8(v), k);
	n += k;
	ps->qname_len = n > 17 ? 17 : n;
}

/* Header value bytes, up to the first CR, LF, tab, control or non-ASCII byte.
 * The byte path keeps Content-Length digits, the Authorization scheme and the
 * last bytes before the copy bound. */
static __always_inline __u32 gw_value_fast(struct gw_work *w, __u64 v, __u32 avail)
{
	struct gw_parse_state *ps = &w->ps;
	__u8 slot = ps->cur_slot, sp = ps->cur_special;
	struct gw_hdr_value *hv = 0;
	__u32 k;

	if (sp == GW_HS_CONTENT_LENGTH || sp == GW_HS_CONNECTION)
		return 0; /* short values the byte path reads token by token */
	if (sp == GW_HS_CRED && !ps->scheme_done)
		return gw_scheme_fast(w, v, avail);
	k = gw_first8(GW_HAS_LESS(v, 0x20) | (v & GW_HIGHS), avail);
	if (!k)
		return 0;
	if (slot < GW_HDR_SLOTS) {
		hv = &w->ev.hdrs[slot];
		if (hv->len > GW_HDR_VALUE_LEN - 8 && hv->len < GW_HDR_VALUE_LEN)
			return 0;
	}
	ps->val_started = 1;
	if (sp == GW_HS_CRED)
		gw_siphash_bytes(&ps->sec.sip, v, k);
	else if (sp == GW_HS_MCP_SESSION)
		gw_sess_bytes(w, v, k);
	else if (sp == GW_HS_CONTENT_TYPE)
		gw_ctype_bytes(ps, v, k);
	if (hv) {
		__u8 n = hv->len;

		if (n <= GW_HDR_VALUE_LEN - 8) {
			/* only the k bytes taken: the rest of the word may be
			 * stale chunk bytes of another packet (see gw_st8) */
			gw_opaque(n);
			gw_st8(&hv->value[n & (GW_HDR_VALUE_LEN - 1)], v & gw_mask(k));
			hv->len = n + k;
		} else {
			hv->truncated = 1;
			w->ev.anomalies |= GW_AN_VALUE_TRUNCATED;
		}
	}
	ps->val_total += k;
	ps->bytes += k;
	return k;
}

/* Header name bytes, lower-cased (the name buffer stays zero past its
 * length): token bytes only, no ':', space, control, DEL or non-ASCII byte
 * (at a line start that also leaves CR, LF, SP and HTAB to the byte path). */
static __always_inline __u32 gw_name_fast(struct gw_parse_state *ps, __u64 v, __u32 avail)
{
	__u32 k, n = ps->name_len;

	if (n > GW_HDR_NAME_LEN - 8)
		return 0;
	k = gw_first8((v & GW_HIGHS) | GW_HAS_LESS(v, 0x21) | gw_eq8(v, ':') | gw_eq8(v, 0x7f), avail);
	if (!k)
		return 0;
	v = gw_lower8(v) & gw_mask(k);
	gw_opaque(n);
	gw_st8(&ps->name.name[n & (GW_HDR_NAME_LEN - 1)], v);
	ps->name_len = n + k;
	ps->state = GW_S_NAME;
	ps->bytes += k;
	return k;
}

/* Header lines, in one step as far as the avail bytes go: the LF after a
 * start line's CR, or the CRLF that ends a value, and the next name's first
 * bytes; name bytes; the colon (the
 * table lookup), leading OWS and the value's first bytes; value bytes. Each
 * part is what the byte path does with those bytes. */
static __always_inline __u32 gw_header_fast(struct gw_work *w, __u64 v, __u32 avail)
{
	struct gw_parse_state *ps = &w->ps;
	__u32 k, total = 0;

	if (ps->state == GW_S_LINE_LF && (v & 0xff) == '\n') {
		/* the LF of a start line's CRLF */
		gw_header_begin(ps);
		ps->state = GW_S_LINE_START;
		ps->bytes += 1;
		total = 1;
		v >>= 8;
		avail -= 1;
	}
	if (ps->state == GW_S_VALUE && avail >= 2 && (v & 0xffff) == ('\r' | ('\n' << 8))) {
		gw_header_value_done(w, 0);
		gw_header_begin(ps);
		ps->state = GW_S_LINE_START;
		ps->bytes += 2;
		total = 2;
		v >>= 16;
		avail -= 2;
	}
	if (avail && (ps->state == GW_S_LINE_START || ps->state == GW_S_NAME)) {
		k = gw_name_fast(ps, v, avail);
		total += k;
		if (k >= avail)
			return total;
		v >>= 8 * k;
		avail -= k;
	}
	if (avail && ps->state == GW_S_NAME && (v & 0xff) == ':') {
		gw_header_name_done(w);
		ps->state = GW_S_VALUE;
		ps->bytes += 1;
		total += 1;
		v >>= 8;
		avail -= 1;
	}
	if (avail && ps->state == GW_S_VALUE && !ps->val_started) {
		/* leading OWS */
		k = gw_first8(~(gw_eq8(v, ' ') | gw_eq8(v, '\t')) & GW_HIGHS, avail);
		ps->bytes += k;
		total += k;
		if (k >= avail)
			return total;
		v >>= 8 * k;
		avail -= k;
	}
	if (avail && ps->state == GW_S_VALUE)
		total += gw_value_fast(w, v, avail);
	return total;
}

/* Header block bytes: request target, version, reason phrase, header names,
 * leading whitespace of values, values. Returns the bytes taken (0: none). */
static __always_inline __u32 gw_http_fast(struct gw_work *w, __u64 v, __u32 avail)
{
	struct gw_parse_state *ps = &w->ps;
	struct gw_http_event *ev = &w->ev;
	__u64 stop;
	__u32 k, n;

	/* the byte that meets the window goes the byte path, which flags it */
	if (ps->bytes >= gw_parse_window)
		return 0;
	if (avail > gw_parse_window - ps->bytes)
		avail = gw_parse_window - ps->bytes;

	switch (ps->state) {
	case GW_S_METHOD:
		n = ev->method_len;
		if (n > GW_METHOD_LEN - 8)
			return 0;
		/* upper-case letters, '-' and '_' (the digits, '/' and '.' of
		 * "HTTP/1.x", and the space, go the byte path) */
		k = gw_first8(~(gw_upper8(v) | gw_eq8(v, '-') | gw_eq8(v, '_')) & GW_HIGHS, avail);
		if (!k)
			return 0;
		gw_opaque(n);
		gw_st8(&ev->method[n & (GW_METHOD_LEN - 1)], v & gw_mask(k));
		ev->method_len = n + k;
		break;
	case GW_S_PATH:
		n = ev->path_len;
		/* the first byte: '/' here, anything else the byte path checks; so
		 * does an absolute-form target's scheme and authority */
		if ((n == 0 && (v & 0xff) != '/') || n > GW_PATH_LEN - 8 || ps->abs_form == 1 ||
		    ps->abs_form == 2)
			return 0;
		stop = (v & GW_HIGHS) | GW_HAS_LESS(v, 0x21) | gw_eq8(v, '?');
		if (ps->in_query) {
			/* a query parameter's name or value; delimiters go the byte path */
			stop |= gw_eq8(v, '&') | gw_eq8(v, '#') | gw_eq8(v, ';');
			if (!ps->qval)
				stop |= gw_eq8(v, '=');
		}
		k = gw_first8(stop, avail);
		if (!k)
			return 0;
		if (ps->in_query) {
			if (!ps->qval) {
				gw_qname_bytes(ps, v, k);
			} else if (ps->qval == 1) {
				gw_sess_bytes(w, v, k); /* session_id: hashed, masked */
				v = GW_ONES * '*';
			} else if (ps->qval == 2) {
				v = GW_ONES * '*'; /* not allow-listed: masked */
			}
		}
		gw_opaque(n);
		gw_st8(&ev->path[n & (GW_PATH_LEN - 1)], v & gw_mask(k));
		ev->path_len = n + k;
		break;
	case GW_S_VERSION:
		/* (blanks before the version go the byte path, which skips and flags them) */
		k = gw_first8(gw_eq8(v, '\r') | gw_eq8(v, '\n') |
				      (ps->ver_len ? 0 : gw_eq8(v, ' ') | gw_eq8(v, '\t')),
			      avail);
		if (!k)
			return 0;
		gw_acc8k(&ps->version, &ps->ver_len, v, k);
		break;
	case GW_S_REASON:
		k = gw_first8(gw_eq8(v, '\r') | gw_eq8(v, '\n'), avail);
		break;
	case GW_S_LINE_LF:
	case GW_S_LINE_START:
	case GW_S_NAME:
	case GW_S_VALUE:
		return gw_header_fast(w, v, avail);
	default:
		return 0;
	}
	ps->bytes += k;
	return k;
}

/* JSON body bytes that change nothing but the position: blanks (and commas
 * where the tokenizer skips them), the inside of a string not being copied,
 * of a key (its first 8 bytes kept), of a number or literal. Returns how
 * many of the avail (1..8) low bytes of v were taken. */
static __always_inline __u32 gw_json_skip(struct gw_parse_state *ps, __u64 v, __u32 avail)
{
	__u8 b = v; /* when the first byte stops the run, say so before any word math */
	__u64 stop;
	__u32 k;

	switch (ps->jstate) {
	case GW_J_STR:
		if (ps->jcap || b == '"' || b == '\\')
			return 0;
		stop = gw_eq8(v, '"') | gw_eq8(v, '\\');
		break;
	case GW_J_KEY:
		if (b == '"' || b == '\\')
			return 0;
		k = gw_first8(gw_eq8(v, '"') | gw_eq8(v, '\\'), avail);
		if (k)
			gw_acc8k(&ps->jk[0], &ps->jklen, v, k);
		return k;
	case GW_J_SCALAR:
		if (gw_ws(b) || b == ',' || b == '}' || b == ']')
			return 0;
		stop = gw_ws8(v) | gw_eq8(v, ',') | gw_eq8(v, '}') | gw_eq8(v, ']');
		break;
	case GW_J_START:
	case GW_J_COLON:
	case GW_J_AFTER:
		if (!gw_ws(b))
			return 0;
		stop = ~gw_ws8(v) & GW_HIGHS;
		break;
	case GW_J_KEY_OR_END:
	case GW_J_VALUE:
		if (!gw_ws(b) && b != ',')
			return 0;
		stop = ~(gw_ws8(v) | gw_eq8(v, ',')) & GW_HIGHS;
		break;
	default:
		return 0;
	}
	return gw_first8(stop, avail);
}

#define GW_STEP_END 0x10000 /* gw_step: the message ended, or no byte is left */
#define GW_STEPS_PER_CB 16
#define GW_BODY_RUN 64

/* One token of a body run at chunk offset p, at most room bytes: a
 * gw_json_skip run, else one byte through gw_json_step. Returns the bytes
 * taken (0: none, the chunk's last bytes go gw_step's byte path), with
 * GW_STEP_END set when the scan decided. Global: verified once. */
__noinline int gw_body_tok(struct gw_work *w, struct gw_chunk *ch, __u64 p, __u64 room)
{
	__u32 k;

	if (!w || !ch || !room || p > GW_CHUNK - 8)
		return 0;
	k = gw_json_skip(&w->ps, gw_ld8(&ch->b[p]), room > 8 ? 8 : room);
	if (k)
		return k;
	return gw_json_step(w, ch->b[p]) ? 1 | GW_STEP_END : 1;
}

/* A run of JSON body bytes in one call (up to GW_BODY_RUN tokens), stopping
 * short of the byte that meets the scan window or the body's end, so that
 * gw_body_step's window, length and counting bookkeeping is done once for
 * the run with the same result. Returns the bytes taken (GW_STEP_END set
 * when the scan decided); 0 for chunked and SSE bodies, which go byte by
 * byte through gw_body_step. Global: verified once. */
__noinline int gw_body_run(struct gw_work *w, struct gw_chunk *ch, __u64 pos, __u64 len)
{
	struct gw_parse_state *ps;
	struct gw_mcp_body *m;
	__u64 limit, n = 0;
	int i, r, done = 0;

	if (!w || !ch || pos >= len || pos >= GW_CHUNK)
		return 0;
	ps = &w->ps;
	m = &w->ev.mcp;
	if (ps->jchunked || (ps->ct_kind == GW_CT_SSE && w->ev.is_response))
		return 0;
	if (m->scanned + 1 >= gw_body_scan_window)
		return 0;
	limit = len - pos;
	if (limit > gw_body_scan_window - 1 - m->scanned)
		limit = gw_body_scan_window - 1 - m->scanned;
	if (ps->jbody_cl) {
		if (ps->body_remaining <= 1)
			return 0;
		if (limit > ps->body_remaining - 1)
			limit = ps->body_remaining - 1;
	}
	for (i = 0; i < GW_BODY_RUN && n < limit; i++) {
		r = gw_body_tok(w, ch, pos + n, limit - n);
		if (!r)
			break;
		n += r & 0xff;
		if (r & GW_STEP_END) {
			done = 1;
			break;
		}
	}
	if (ps->jbody_cl)
		ps->body_remaining -= n;
	m->scanned += n;
	if (done) {
		ps->state = GW_S_SCANNED;
		return n | GW_STEP_END;
	}
	return n;
}

/* bpf_loop context: the work area and the chunk of bytes being fed. */
struct gw_feed_ctx {
	struct gw_work *w;
	struct gw_chunk *ch;
	__u32 consumed; /* bytes of the chunk taken so far */
	__u32 len; /* bytes in the chunk */
};

/* One parse step at pos: a run of bytes when a multi-byte step applies, else
 * one byte through the state machines. Returns the bytes taken, with
 * GW_STEP_END set when the message ended. Global: verified once. */
/* A chunked body between pipelined messages (its message already emitted),
 * skipped through its framing (RFC 9112 §7.1): chunk data in one step, size
 * lines, extensions and trailers a byte at a time, so that the request after
 * it in the same segment is parsed. Returns the bytes taken, | GW_STEP_END
 * when the body ended (GW_S_BODY_END) or its framing was not chunked after
 * all (GW_S_DISCARD: the rest is not parsed; a server would refuse it too). */
static __always_inline int gw_chunk_skip(struct gw_work *w, struct gw_chunk *ch, __u64 p, __u64 avail)
{
	struct gw_parse_state *ps = &w->ps;
	int cs;
	__u8 b;

	if (ps->jchunk_st == GW_CH_DATA) {
		__u32 n = avail < ps->jchunk_left ? avail : ps->jchunk_left;

		if (n == 0 || n > GW_CHUNK)
			n = 1;
		ps->jchunk_left -= n;
		if (ps->jchunk_left == 0)
			ps->jchunk_st = GW_CH_DATA_END;
		return n;
	}
	b = ch->b[p & (GW_CHUNK - 1)];
	switch (ps->jchunk_st) {
	case GW_CH_SIZE:
		cs = gw_chunk_size_byte(ps, b);
		if (cs == GW_CS_LINE_END)
			goto size_done;
		if (cs == GW_CS_BAD || ps->jchunk_left > 0x0fffffff)
			goto bad; /* not chunked framing (no chunk is that large either) */
		return 1;
	case GW_CH_EXT:
		if (b == '\n')
			goto size_done;
		return 1;
	case GW_CH_DATA_END:
		if (b == '\n') {
			ps->jchunk_st = GW_CH_SIZE;
			ps->jchunk_left = 0;
		} else if (b != '\r') {
			goto bad;
		}
		return 1;
	case GW_CH_TRAILER:
		if (b == '\n') {
			ps->state = GW_S_BODY_END;
			return 1 | GW_STEP_END;
		}
		if (b != '\r')
			ps->jchunk_st = GW_CH_TRAILER_LINE;
		return 1;
	default: /* GW_CH_TRAILER_LINE */
		if (b == '\n')
			ps->jchunk_st = GW_CH_TRAILER;
		return 1;
	}
size_done:
	ps->jchunk_st = ps->jchunk_left ? GW_CH_DATA : GW_CH_TRAILER;
	return 1;
bad:
	ps->state = GW_S_DISCARD;
	return 1 | GW_STEP_END;
}

/* After its message went out: skip the chunked body that follows. */
static __always_inline void gw_chunks_begin(struct gw_work *w)
{
	w->ps.state = GW_S_CHUNKS;
	w->ps.jchunk_st = GW_CH_SIZE;
	w->ps.jchunk_left = 0;
}

__noinline int gw_step(struct gw_work *w, struct gw_chunk *ch, __u64 pos, __u64 len)
{
	__u64 p;
	__u32 avail, k;
	__u8 b;

	if (!w || !ch || pos >= len || pos >= GW_CHUNK)
		return GW_STEP_END;
	p = pos & (GW_CHUNK - 1);
	if (w->ps.state == GW_S_CHUNKS)
		return gw_chunk_skip(w, ch, p, len - pos);
	if (!gw_byte_path_only && p <= GW_CHUNK - 8) {
		if (w->ps.state == GW_S_JBODY) {
			k = gw_body_run(w, ch, pos, len);
		} else {
			avail = len - pos;
			if (avail > 8)
				avail = 8;
			/* bytes past len are stale: never more than avail are taken */
			k = gw_http_fast(w, gw_ld8(&ch->b[p]), avail);
		}
		if (k)
			return k;
	}
	b = ch->b[p];
	if (w->ps.state == GW_S_JBODY)
		return gw_body_step(w, b) ? 1 | GW_STEP_END : 1;
	return gw_http_step(w, b) ? 1 | GW_STEP_END : 1;
}

/* Up to GW_STEPS_PER_CB steps per bpf_loop iteration. Callers run bpf_loop
 * for len iterations; it stops once every byte is consumed or the message
 * ended. */
static long gw_feed_cb(__u64 idx, void *data)
{
	struct gw_feed_ctx *c = data;
	int i, r;

	for (i = 0; i < GW_STEPS_PER_CB; i++) {
		r = gw_step(c->w, c->ch, c->consumed, c->len);
		c->consumed += r & 0xffff;
		if (r & GW_STEP_END)
			return 1;
	}
	return 0;
}

/* Parse one chunk of len bytes (1..GW_CHUNK) with bpf_loop; returns the bytes
 * taken. A global function of its own, so that its callers' chunk loops never
 * hold values across the bpf_loop call: with them, the precision backtracking
 * of some kernels (6.18.44) stops with "verifier bug: backtracking call
 * unexpected regs" at that call and rejects the program (-EFAULT). Verified
 * once, for both the packet and the TLS program. */
__noinline int gw_feed_chunk(struct gw_work *w, struct gw_chunk *ch, __u32 len)
{
	struct gw_feed_ctx ctx = {};

	if (!w || !ch || len == 0 || len > GW_CHUNK)
		return 0;
	ctx.w = w;
	ctx.ch = ch;
	ctx.len = len;
	bpf_loop(len, gw_feed_cb, &ctx, 0);
	return ctx.consumed;
}

/* Finish an aborted or completed message before it is emitted. */
static __always_inline void gw_msg_finish(struct gw_work *w)
{
	if (w->ps.state != GW_S_DONE) {
		w->ev.header_bytes = w->ps.bytes;
		if (w->ps.cl_seen && w->ps.te_seen)
			w->ev.anomalies |= GW_AN_CL_AND_TE;
	}
}

static __always_inline void gw_emit(struct gw_work *w)
{
	gw_msg_finish(w);
	if (bpf_ringbuf_output(&gw_events, &w->ev, sizeof(w->ev), 0))
		gw_count(GW_CNT_RINGBUF_DROPS);
	gw_count(w->ev.is_response ? GW_CNT_HTTP_RESPONSES : GW_CNT_HTTP_REQUESTS);
	if (w->ev.anomalies & GW_AN_TRUNCATED)
		gw_count(GW_CNT_TRUNCATED);
	if (w->ev.anomalies & (GW_AN_MALFORMED_START | GW_AN_MALFORMED_LINE))
		gw_count(GW_CNT_MALFORMED);
}

/* Emit as a global function: verified once, however many call sites. */
__noinline int gw_emit_msg(struct gw_work *w)
{
	if (!w)
		return 0;
	gw_emit(w);
	return 0;
}

/* Whether a message is in its start line or header block. */
static __always_inline int gw_in_header_block(__u8 state)
{
	return state >= GW_S_METHOD && state <= GW_S_END_LF;
}

/* Emit a message whose header block will never complete (its flow ended,
 * FIN or RST, or was reset): what was parsed, flagged truncated. Servers
 * answer such requests (nginx and http.server serve "GET /admin/\r\n" + FIN),
 * so the sensor must not lose them. A credential cut mid-value is closed as
 * truncated too (its hash covers what arrived). */
__noinline int gw_emit_cut(struct gw_work *w)
{
	if (!w)
		return 0;
	if (w->ps.state == GW_S_VALUE)
		gw_header_value_done(w, 1);
	w->ev.anomalies |= GW_AN_TRUNCATED;
	gw_emit(w);
	return 0;
}

/* Consume the current message's body from [*pos, len). Returns 1 when the body
 * continues past len (the caller saves its state), 0 when it ended here. */
static __always_inline int gw_body_consume(struct gw_work *w, __u32 *pos, __u32 len)
{
	__u64 left = w->ps.body_remaining;
	__u32 avail = len - *pos;

	if (left <= avail) {
		*pos += left;
		w->ps.body_remaining = 0;
		return 0;
	}
	w->ps.body_remaining = left - avail;
	w->ps.state = GW_S_BODY;
	*pos = len;
	return 1;
}

/* ---- saving a message under way between segments (or SSL calls) ---- */

/* A message under way waits in a flow table (a BPF_MAP_TYPE_HASH of struct
 * gw_work) that userspace reads: the sweep (capture/sweep.rs) takes out what
 * waited too long. Its secret part goes to a stash map instead, created
 * BPF_F_WRONLY so that no syscall (the sensor's own included) can read it
 * back; only the programs do, when the flow resumes. */
#define GW_SECRET_STASH(name, key_type)                                                  \
	struct {                                                                         \
		__uint(type, BPF_MAP_TYPE_LRU_HASH);                                     \
		__uint(max_entries, 2048);                                               \
		__uint(map_flags, BPF_F_WRONLY);                                         \
		__type(key, key_type);                                                   \
		__type(value, struct gw_secret_part);                                    \
	} name SEC(".maps")

static __always_inline int gw_secret_pending(const struct gw_secret_part *sec)
{
	return (sec->sip.v0 | sec->sip.v1 | sec->sip.m | sec->sip.len | sec->scheme | sec->seen[0] |
		sec->seen[1] | sec->seen[2] | sec->seen[3]) != 0;
}

/* Save w under key: the secret part into stash, the rest into flows. Returns
 * 0, or -1 when flows is full (no entry is ever evicted to make room: the
 * caller emits the message now, truncated, and the loss is counted). */
static __always_inline int gw_flow_store(void *flows, void *stash, const void *key,
					 struct gw_work *w)
{
	w->ps.secret_stashed = 0;
	if (gw_secret_pending(&w->ps.sec)) {
		w->ps.secret_stashed = bpf_map_update_elem(stash, key, &w->ps.sec, BPF_ANY) ? 2 : 1;
		__builtin_memset(&w->ps.sec, 0, sizeof(w->ps.sec));
	}
	if (bpf_map_update_elem(flows, key, w, BPF_ANY) == 0) {
		gw_count(GW_CNT_FLOW_SAVED);
		return 0;
	}
	gw_count(GW_CNT_FLOW_TABLE_FULL);
	if (w->ps.secret_stashed == 1) {
		struct gw_secret_part *sp = bpf_map_lookup_elem(stash, key);

		if (sp)
			bpf_probe_read_kernel(&w->ps.sec, sizeof(w->ps.sec), sp);
		else
			w->ps.secret_lost = 1;
		bpf_map_delete_elem(stash, key);
	} else if (w->ps.secret_stashed == 2) {
		w->ps.secret_lost = 1;
	}
	w->ps.secret_stashed = 0;
	return -1;
}

/* After a saved message was copied back into w (and deleted from its flow
 * table): bring its secret part back from the stash. */
static __always_inline void gw_flow_unstash(void *stash, const void *key, struct gw_work *w)
{
	struct gw_secret_part *sp;

	if (!w->ps.secret_stashed)
		return;
	sp = w->ps.secret_stashed == 1 ? bpf_map_lookup_elem(stash, key) : 0;
	if (sp) {
		bpf_probe_read_kernel(&w->ps.sec, sizeof(w->ps.sec), sp);
		bpf_map_delete_elem(stash, key);
	} else {
		w->ps.secret_lost = 1;
		gw_count(GW_CNT_SECRET_LOST);
	}
	w->ps.secret_stashed = 0;
}

/* A message that could not be saved (gw_flow_store returned -1) is emitted
 * now with what it has: a scanned body is ended, a header block is cut. */
static __always_inline void gw_emit_unsaved(struct gw_work *w)
{
	if (w->ps.state == GW_S_JBODY) {
		gw_body_scan_abandon(w);
		gw_emit_msg(w);
	} else if (gw_in_header_block(w->ps.state)) {
		gw_emit_cut(w);
	}
	/* GW_S_BODY: the message went out already; only its body goes unskipped. */
}

#endif
