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
};

struct gw_parse_state {
	struct gw_siphash sip;
	__u64 cl_value;
	__u64 body_remaining;
	__u64 scheme; /* first 8 bytes of a credential value, lower-cased */
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
	__u8 cl_bad;
	__u8 te_seen;
	__u8 te_chunked_only; /* unused by rules; decides whether a body can be skipped */
	__u8 host_seen;
	__u8 line_cr; /* the line being ended saw CR */
	__u8 is_connect;
	struct gw_hdr_name_key name;
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
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, struct gw_hdr_name_key);
	__type(value, struct gw_hdr_info);
} gw_hdr_names SEC(".maps");

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

static __always_inline void gw_count(__u32 idx)
{
	__u64 *v = bpf_map_lookup_elem(&gw_counters, &idx);

	if (v)
		*v += 1;
}

#define GW_C8(a, b, c, d, e, f, g, h)                                                    \
	((__u64)(a) | ((__u64)(b) << 8) | ((__u64)(c) << 16) | ((__u64)(d) << 24) |          \
	 ((__u64)(e) << 32) | ((__u64)(f) << 40) | ((__u64)(g) << 48) | ((__u64)(h) << 56))

static __always_inline __u64 gw_mask(int n)
{
	return n >= 8 ? ~0ULL : ((1ULL << (8 * n)) - 1);
}

/* Whether a payload byte can begin a message: every method token and
 * "HTTP/1.x" start with an upper-case letter. The rest is decided when the
 * token ends (gw_method_done), so a start line split anywhere, even after one
 * byte, is still recognised. */
static __always_inline int gw_may_start(__u8 b)
{
	return b >= 'A' && b <= 'Z';
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
	ps->scheme = 0;
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

/* Called at a header's colon: look the name up in the configured table. */
static __always_inline void gw_header_name_done(struct gw_work *w)
{
	struct gw_parse_state *ps = &w->ps;
	struct gw_hdr_info *hi;
	struct gw_hash_key *key;
	__u32 zero = 0;

	if (ps->name_len == 0 || ps->name_len > GW_HDR_NAME_LEN)
		return;
	hi = bpf_map_lookup_elem(&gw_hdr_names, &ps->name);
	if (!hi)
		return;
	ps->cur_slot = hi->slot;
	ps->cur_special = hi->special;
	if (hi->special == GW_HS_CRED && hi->cred < GW_CRED_SLOTS) {
		ps->cur_cred = hi->cred;
		key = bpf_map_lookup_elem(&gw_hash_key, &zero);
		if (key)
			gw_siphash_init(&ps->sip, key->k0, key->k1);
		else
			gw_siphash_init(&ps->sip, 0, 0);
	} else if (hi->special == GW_HS_CONTENT_LENGTH) {
		if (ps->cl_seen)
			w->ev.anomalies |= GW_AN_DUP_CONTENT_LENGTH;
		ps->cl_seen = 1;
		ps->cl_value = 0;
	} else if (hi->special == GW_HS_TRANSFER_ENCODING) {
		ps->te_seen = 1;
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

/* Called at the end of a header line (or when the window closes mid-value). */
static __always_inline void gw_header_value_done(struct gw_work *w, int cut)
{
	struct gw_parse_state *ps = &w->ps;
	__u8 c = ps->cur_cred;

	if (ps->cur_special == GW_HS_CRED && c < GW_CRED_SLOTS) {
		struct gw_cred *cr = &w->ev.creds[c];

		cr->present = 1;
		cr->len = ps->val_total;
		cr->hash = gw_siphash_final(&ps->sip);
		cr->hash_truncated = cut;
		if (c == GW_CRED_AUTHORIZATION || c == GW_CRED_PROXY_AUTHORIZATION)
			cr->scheme = ps->scheme_done ? gw_scheme_of(ps->scheme) : GW_SCHEME_OTHER;
		else
			cr->scheme = GW_SCHEME_OTHER;
		/* Forget the secret's first bytes as soon as they are classified. */
		ps->scheme = 0;
		__builtin_memset(&ps->sip, 0, sizeof(ps->sip));
	} else if (ps->cur_special == GW_HS_CONTENT_LENGTH) {
		if (ps->cl_bad || ps->val_total == 0)
			w->ev.anomalies |= GW_AN_INVALID_CL;
		else if (!(w->ev.anomalies & GW_AN_DUP_CONTENT_LENGTH))
			w->ev.content_length = ps->cl_value;
	} else if (ps->cur_special == GW_HS_TRANSFER_ENCODING) {
		/* Any TE value means the body length is not CL; we skip no body then. */
		ps->te_chunked_only = 1;
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
		gw_siphash_byte(&ps->sip, b);
		if (!ps->scheme_done) {
			if (b == ' ')
				ps->scheme_done = 1;
			else if (ps->scheme_len < 8)
				ps->scheme |= ((__u64)gw_lower(b)) << (8 * ps->scheme_len++);
			else
				ps->scheme_len = 9; /* longer than any known scheme */
		}
		return;
	}
	if (ps->cur_special == GW_HS_CONTENT_LENGTH) {
		if (b >= '0' && b <= '9' && ps->cl_value < 100000000000000ULL)
			ps->cl_value = ps->cl_value * 10 + (b - '0');
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
		if (b == ' ') {
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
		    b != ' ')
			goto discard;
		if (b == ' ') {
			ps->state = GW_S_VERSION;
		} else if (b == '\r' || b == '\n') {
			/* HTTP/0.9 style request line or garbage: no version */
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
			if (ev->path_len < GW_PATH_LEN) {
				ev->path[ev->path_len & (GW_PATH_LEN - 1)] = b;
				ev->path_len++;
			} else {
				ev->anomalies |= GW_AN_PATH_TRUNCATED;
			}
		}
		return 0;
	case GW_S_VERSION:
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

#define GW_ONES 0x0101010101010101ULL
#define GW_HIGHS 0x8080808080808080ULL
/* Per byte of a little-endian word: high bit set where the byte is zero /
 * below n (n <= 128). Exact as to whether any byte qualifies. */
#define GW_HAS_ZERO(x) (((x) - GW_ONES) & ~(x) & GW_HIGHS)
#define GW_HAS_LESS(x, n) (((x) - GW_ONES * (n)) & ~(x) & GW_HIGHS)

/* Eight header-value bytes in one step (SWAR): taken only when the eight
 * bytes are all printable ASCII (no CR, LF, tab, control or non-ASCII byte,
 * which need the byte-at-a-time path) and nothing per-byte is pending (leading
 * whitespace, the auth scheme, Content-Length digits, the value bound, the
 * parse window). Returns 1 when it consumed the eight bytes, 0 to fall back.
 * Same result as eight gw_http_step calls; the kernel tests check both paths. */
static __always_inline int gw_value_fast8(struct gw_work *w, __u8 *buf, __u32 pos)
{
	struct gw_parse_state *ps = &w->ps;
	__u8 slot = ps->cur_slot;
	__u64 v;

	if (ps->state != GW_S_VALUE || !ps->val_started || pos > GW_CHUNK - 8)
		return 0;
	if (ps->bytes + 8 > gw_parse_window)
		return 0;
	if (ps->cur_special == GW_HS_CONTENT_LENGTH)
		return 0;
	/* the auth scheme is read byte by byte up to its space; other credentials have none */
	if (ps->cur_special == GW_HS_CRED && !ps->scheme_done &&
	    (ps->cur_cred == GW_CRED_AUTHORIZATION || ps->cur_cred == GW_CRED_PROXY_AUTHORIZATION))
		return 0;
	__builtin_memcpy(&v, &buf[pos], 8);
	/* any byte < 0x20, or any byte >= 0x80 */
	if (GW_HAS_LESS(v, 0x20) | (v & GW_HIGHS))
		return 0;
	if (ps->cur_special == GW_HS_CRED) {
		gw_siphash_word(&ps->sip, v);
	} else if (slot < GW_HDR_SLOTS) {
		struct gw_hdr_value *hv = &w->ev.hdrs[slot];
		__u8 n = hv->len;

		if (n <= GW_HDR_VALUE_LEN - 8) {
			__builtin_memcpy(&hv->value[n & (GW_HDR_VALUE_LEN - 1)], &v, 8);
			hv->len = n + 8;
		} else if (n < GW_HDR_VALUE_LEN) {
			return 0; /* the byte path fills the last few bytes and flags the cut */
		} else {
			hv->truncated = 1;
			w->ev.anomalies |= GW_AN_VALUE_TRUNCATED;
		}
	}
	ps->bytes += 8;
	ps->val_total += 8;
	return 1;
}

/* Eight header-name bytes in one step: all token characters (no ':', space,
 * control, DEL or non-ASCII byte) and room for all eight in the name buffer.
 * They are lower-cased as the byte path does. Returns 1 when consumed. */
static __always_inline int gw_name_fast8(struct gw_work *w, __u8 *buf, __u32 pos)
{
	struct gw_parse_state *ps = &w->ps;
	__u8 n = ps->name_len;
	__u64 v, upper;

	if (ps->state != GW_S_NAME || pos > GW_CHUNK - 8 || n > GW_HDR_NAME_LEN - 8)
		return 0;
	if (ps->bytes + 8 > gw_parse_window)
		return 0;
	__builtin_memcpy(&v, &buf[pos], 8);
	if ((v & GW_HIGHS) | GW_HAS_LESS(v, 0x21) | GW_HAS_ZERO(v ^ (GW_ONES * ':')) |
	    GW_HAS_ZERO(v ^ (GW_ONES * 0x7f)))
		return 0;
	/* 'A'..'Z' -> 'a'..'z': bytes >= 'A' and not > 'Z' get 0x20 added */
	upper = (v + GW_ONES * (0x80 - 'A')) & ~(v + GW_ONES * (0x80 - 'Z' - 1)) & GW_HIGHS;
	v |= upper >> 2;
	__builtin_memcpy(&ps->name.name[n & (GW_HDR_NAME_LEN - 1)], &v, 8);
	ps->name_len = n + 8;
	ps->bytes += 8;
	return 1;
}

/* bpf_loop context: the work area and the chunk of bytes being fed. */
struct gw_feed_ctx {
	struct gw_work *w;
	__u8 *buf;
	__u32 consumed; /* bytes of buf taken so far */
	__u32 len; /* bytes in buf */
};

/* One parse step: eight value bytes when the fast path allows, else one byte.
 * Callers run bpf_loop for len iterations; the loop stops early once every
 * byte is consumed or the message ended. */
static long gw_feed_cb(__u64 idx, void *data)
{
	struct gw_feed_ctx *c = data;
	struct gw_work *w = c->w;
	__u8 *buf = c->buf;
	__u32 pos = c->consumed;

	if (!w || !buf || pos >= c->len || pos >= GW_CHUNK)
		return 1;
	if (pos + 8 <= c->len && (gw_value_fast8(w, buf, pos) || gw_name_fast8(w, buf, pos))) {
		c->consumed = pos + 8;
		return 0;
	}
	c->consumed = pos + 1;
	return gw_http_step(w, buf[pos & (GW_CHUNK - 1)]);
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

#endif
