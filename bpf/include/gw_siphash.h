/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Streaming SipHash-2-4, fed one byte at a time so that a credential value that
 * spans packets or parse chunks hashes exactly as if it were contiguous. */
#ifndef GW_SIPHASH_H
#define GW_SIPHASH_H

struct gw_siphash {
	__u64 v0, v1, v2, v3;
	__u64 m; /* pending message bytes, little endian */
	__u32 len; /* bytes fed so far */
	__u32 _pad;
};

#define GW_ROTL(x, b) (((x) << (b)) | ((x) >> (64 - (b))))
#define GW_SIPROUND(s)                                                                   \
	do {                                                                             \
		s->v0 += s->v1; s->v1 = GW_ROTL(s->v1, 13); s->v1 ^= s->v0;              \
		s->v0 = GW_ROTL(s->v0, 32);                                              \
		s->v2 += s->v3; s->v3 = GW_ROTL(s->v3, 16); s->v3 ^= s->v2;              \
		s->v0 += s->v3; s->v3 = GW_ROTL(s->v3, 21); s->v3 ^= s->v0;              \
		s->v2 += s->v1; s->v1 = GW_ROTL(s->v1, 17); s->v1 ^= s->v2;              \
		s->v2 = GW_ROTL(s->v2, 32);                                              \
	} while (0)

static __always_inline void gw_siphash_init(struct gw_siphash *s, __u64 k0, __u64 k1)
{
	s->v0 = k0 ^ 0x736f6d6570736575ULL;
	s->v1 = k1 ^ 0x646f72616e646f6dULL;
	s->v2 = k0 ^ 0x6c7967656e657261ULL;
	s->v3 = k1 ^ 0x7465646279746573ULL;
	s->m = 0;
	s->len = 0;
}

static __always_inline void gw_siphash_byte(struct gw_siphash *s, __u8 b)
{
	s->m |= ((__u64)b) << (8 * (s->len & 7));
	s->len++;
	if ((s->len & 7) == 0) {
		s->v3 ^= s->m;
		GW_SIPROUND(s);
		GW_SIPROUND(s);
		s->v0 ^= s->m;
		s->m = 0;
	}
}

/* Eight bytes at once (little endian), at any alignment of what came before:
 * the same result as eight gw_siphash_byte calls. */
static __always_inline void gw_siphash_word(struct gw_siphash *s, __u64 v)
{
	__u32 r = s->len & 7;
	__u64 m;

	if (r == 0) {
		m = v;
	} else {
		m = s->m | (v << (8 * r));
		s->m = v >> (64 - 8 * r);
	}
	s->len += 8;
	s->v3 ^= m;
	GW_SIPROUND(s);
	GW_SIPROUND(s);
	s->v0 ^= m;
	if (r == 0)
		s->m = 0;
}

/* The k (1..8) low bytes of v: the same result as k gw_siphash_byte calls. */
static __always_inline void gw_siphash_bytes(struct gw_siphash *s, __u64 v, __u32 k)
{
	__u32 r = s->len & 7;
	__u64 m;

	if (k >= 8) {
		gw_siphash_word(s, v);
		return;
	}
	v &= (1ULL << (8 * k)) - 1;
	s->len += k;
	if (r + k < 8) {
		s->m |= v << (8 * r);
		return;
	}
	/* a block completes; r > 0 since k < 8 */
	m = s->m | (v << (8 * r));
	s->v3 ^= m;
	GW_SIPROUND(s);
	GW_SIPROUND(s);
	s->v0 ^= m;
	s->m = v >> (64 - 8 * r);
}

static __always_inline __u64 gw_siphash_final(struct gw_siphash *s)
{
	__u64 b = (((__u64)s->len) << 56) | s->m;

	s->v3 ^= b;
	GW_SIPROUND(s);
	GW_SIPROUND(s);
	s->v0 ^= b;
	s->v2 ^= 0xff;
	GW_SIPROUND(s);
	GW_SIPROUND(s);
	GW_SIPROUND(s);
	GW_SIPROUND(s);
	return s->v0 ^ s->v1 ^ s->v2 ^ s->v3;
}

#endif
