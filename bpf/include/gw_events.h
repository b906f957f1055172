/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Event layouts shared by the kernel programs and (through the generated
 * skeleton types) by userspace. Change one side, rebuild both. */
#ifndef GW_EVENTS_H
#define GW_EVENTS_H

#define GW_METHOD_LEN 16
#define GW_PATH_LEN 256
#define GW_HDR_SLOTS 12
#define GW_HDR_VALUE_LEN 128
#define GW_HDR_NAME_LEN 32
#define GW_CHUNK 2048 /* bytes copied out of a packet per parse step; power of two */
#define GW_MCP_METHOD_LEN 64
#define GW_MCP_NAME_LEN 128

/* Credential headers: never copied, only shape + keyed hash. */
enum gw_cred_slot {
	GW_CRED_AUTHORIZATION = 0,
	GW_CRED_PROXY_AUTHORIZATION,
	GW_CRED_COOKIE,
	GW_CRED_SET_COOKIE,
	GW_CRED_X_API_KEY,
	GW_CRED_SLOTS,
};

enum gw_scheme {
	GW_SCHEME_NONE = 0,
	GW_SCHEME_BEARER,
	GW_SCHEME_BASIC,
	GW_SCHEME_DIGEST,
	GW_SCHEME_NEGOTIATE,
	GW_SCHEME_OTHER,
};

enum gw_event_kind {
	GW_EV_HTTP_REQUEST = 1,
	GW_EV_HTTP_RESPONSE = 2,
};

enum gw_direction {
	GW_DIR_INGRESS = 0,
	GW_DIR_EGRESS = 1,
	GW_DIR_UNKNOWN = 2,
};

enum gw_source {
	GW_SRC_NET = 0,
	GW_SRC_TLS = 1,
};

/* Anomaly bits on an HTTP message. Names in userspace: events/mod.rs. */
#define GW_AN_CRLF_IN_VALUE (1u << 0)
#define GW_AN_DUP_CONTENT_LENGTH (1u << 1)
#define GW_AN_CL_AND_TE (1u << 2)
#define GW_AN_NON_ASCII (1u << 3)
#define GW_AN_TRUNCATED (1u << 4)
#define GW_AN_PATH_TRUNCATED (1u << 5)
#define GW_AN_VALUE_TRUNCATED (1u << 6)
#define GW_AN_OBS_FOLD (1u << 7)
#define GW_AN_MALFORMED_LINE (1u << 8)
#define GW_AN_INVALID_CL (1u << 9)
#define GW_AN_DUP_HOST (1u << 10)
#define GW_AN_OUT_OF_ORDER (1u << 11)
#define GW_AN_CONTROL_CHAR (1u << 12)
#define GW_AN_BARE_LF (1u << 13)
#define GW_AN_MALFORMED_START (1u << 14)
#define GW_AN_UNKNOWN_METHOD (1u << 15)
#define GW_AN_USERINFO (1u << 16) /* userinfo (user:pass@) in an absolute-form target: removed */
#define GW_AN_FRAMING_LOOKALIKE (1u << 17) /* Transfer_Encoding / Content_Length: a framing header in disguise */
#define GW_AN_CONNECTION_FRAMING (1u << 18) /* Connection names a framing header (Content-Length, Transfer-Encoding) */

struct gw_cred {
	__u64 hash;
	__u32 len;
	__u8 present;
	__u8 scheme;
	__u8 hash_truncated;
	__u8 _pad;
};

struct gw_hdr_value {
	__u8 len;
	__u8 present;
	__u8 truncated;
	__u8 _pad;
	char value[GW_HDR_VALUE_LEN];
};

/* Common to every event: when, where, which flow, which process. */
struct gw_event_hdr {
	__u64 ts_boot_ns; /* bpf_ktime_get_boot_ns() */
	__u64 cgroup_id;
	__u32 kind;
	__u32 ifindex;
	__u32 pid;
	__u8 direction;
	__u8 source;
	__u8 ip_version; /* 4 or 6; 0 when unknown */
	__u8 has_process;
	__u8 saddr[16]; /* IPv4 in the first 4 bytes */
	__u8 daddr[16];
	__u16 sport; /* host byte order */
	__u16 dport;
	char comm[16];
};

/* Where an MCP session id was carried. */
enum gw_sess_origin {
	GW_SESS_NONE = 0,
	GW_SESS_HEADER, /* Mcp-Session-Id */
	GW_SESS_QUERY, /* session_id= in the request target (HTTP+SSE transport) */
	GW_SESS_SSE_ENDPOINT, /* session_id= in the data: URL of an SSE "endpoint" event */
};

/* An MCP session id: a bearer-like secret, so only its shape and keyed hash. */
struct gw_mcp_sess {
	__u64 hash;
	__u32 len;
	__u16 distinct; /* distinct byte values: the bitmap's popcount */
	__u16 _pad;
	__u8 present;
	__u8 origin;
	__u8 hash_truncated;
	__u8 outside_visible; /* some byte outside 0x21..0x7e */
};

/* How the body scan ended (userspace names: capture/decode.rs). */
enum gw_scan_result {
	GW_SCAN_NONE = 0, /* not attempted (no JSON/SSE content, or disabled) */
	GW_SCAN_COMPLETE,
	GW_SCAN_WINDOW,
	GW_SCAN_NOT_JSON,
	GW_SCAN_NO_BODY,
	GW_SCAN_ENDED,
};

/* JSON-RPC metadata from the first bytes of a body. The body never leaves. */
struct gw_mcp_body {
	__u32 scanned; /* body bytes looked at */
	__u8 result; /* enum gw_scan_result */
	__u8 jsonrpc;
	__u8 batch;
	__u8 has_id;
	__u8 has_result;
	__u8 has_error;
	__u8 sse_endpoint;
	__u8 method_len;
	__u8 method_truncated;
	__u8 name_len;
	__u8 name_truncated;
	__u8 _pad;
	char method[GW_MCP_METHOD_LEN];
	char name[GW_MCP_NAME_LEN]; /* params.name or params.uri */
};

struct gw_http_event {
	struct gw_event_hdr hdr;
	__u64 content_length; /* ~0 when absent or invalid */
	__u32 anomalies;
	__u32 header_count;
	__u32 header_bytes;
	__u16 status;
	__u16 path_len;
	__u8 method_len;
	__u8 version_minor; /* 0, 1; 0xff when the version was malformed */
	__u8 is_response;
	__u8 segments;
	char method[GW_METHOD_LEN];
	char path[GW_PATH_LEN];
	struct gw_cred creds[GW_CRED_SLOTS];
	struct gw_hdr_value hdrs[GW_HDR_SLOTS];
	struct gw_mcp_sess mcp_sess;
	struct gw_mcp_body mcp;
};

/* What a known header name means to the parser (in its gw_hdr_table slot). */
enum gw_hdr_special {
	GW_HS_NONE = 0,
	GW_HS_CRED, /* cred slot in .cred */
	GW_HS_CONTENT_LENGTH,
	GW_HS_TRANSFER_ENCODING,
	GW_HS_HOST,
	GW_HS_MCP_SESSION, /* Mcp-Session-Id: hashed like a credential, never copied */
	GW_HS_CONTENT_TYPE, /* decides whether a body is scanned for JSON-RPC */
	GW_HS_FRAMING_LOOKALIKE, /* transfer_encoding, content_length: some servers take them as framing */
	GW_HS_CONNECTION, /* its tokens must not name a framing header */
};

struct gw_hdr_name_key {
	char name[GW_HDR_NAME_LEN]; /* lower-case, zero padded */
};

struct gw_hdr_info {
	__u8 slot; /* copy slot, 0xff for none */
	__u8 special;
	__u8 cred;
	__u8 _pad;
};

/* The known header names: an open-addressing table of GW_HDR_TABLE slots.
 * A name lives within GW_HDR_PROBES slots after gw_hdr_hash(name) (linear
 * probing; userspace, capture/headers.rs, places the names with the same
 * hash and picks another seed if one would land further). */
#define GW_HDR_TABLE 128
#define GW_HDR_PROBES 4

struct gw_hdr_slot {
	struct gw_hdr_name_key name;
	struct gw_hdr_info info;
	__u8 len; /* name length; 0: empty slot */
	__u8 _pad[3];
};

/* Per-CPU counters, index into gw_counters. Userspace names: capture/counters.rs. */
enum gw_counter {
	GW_CNT_PACKETS = 0,
	GW_CNT_TCP_PAYLOAD,
	GW_CNT_HTTP_REQUESTS,
	GW_CNT_HTTP_RESPONSES,
	GW_CNT_RINGBUF_DROPS,
	GW_CNT_TRUNCATED,
	GW_CNT_MALFORMED,
	GW_CNT_FLOW_CONTINUED,
	GW_CNT_FLOW_LOST,
	GW_CNT_FLOW_SAVED,
	GW_CNT_NON_IP,
	GW_CNT_SHORT_HEADERS,
	GW_CNT_FRAGMENTS,
	GW_CNT_NOT_HTTP, /* looked like a start line, was not one */
	GW_CNT_L4_MAP_FULL, /* L4 counter map had no room for a new key */
	GW_CNT_SHED_PACKETS, /* payload packets and TLS calls the CPU budget left uninspected */
	GW_CNT_PARSE_NS, /* ns spent parsing inspected payload packets (only with a budget) */
	GW_CNT_FLOW_TABLE_FULL, /* a message to save found its flow table full: emitted at once, truncated */
	GW_CNT_PIPELINE_LEFT, /* payload left unparsed after the per-packet message limit */
	GW_CNT_SECRET_LOST, /* a stashed hash state was gone on resume: that hash is flagged truncated */
	GW_CNT_OVERLAP_TRIMMED, /* segments that overlapped bytes already parsed: the new bytes parsed */
	GW_CNT_TCP_FRAGMENTS, /* IP fragments carrying TCP: never parsed, an evasion sign (rule GW-SENSOR-004) */
	GW_CNT_MAX,
};

#endif
