/* access_log_format.h - Envoy access-log command operators: parse a format
 * once, render it per request.
 *
 * This module does no I/O and keeps no global state (the hostname is read
 * once when a format is compiled): it turns a text format
 * ("[%START_TIME%] \"%REQ(:METHOD)% ...\"\n") or a json_format struct into a
 * compiled struct al_format, and renders one struct al_record (what the
 * connection manager or tcp_proxy knows about a finished stream) into a
 * caller-owned buffer.  Sinks, filters and buffering live in access_log.h.
 *
 * Why stats/: DESIGN.md puts "tracing and access-log sinks" there, it is
 * already the home of the other renderers (Prometheus, text, JSON), and the
 * Makefile compiles every .c under it without a new top-level directory. */
#ifndef REMORA_ACCESS_LOG_FORMAT_H
#define REMORA_ACCESS_LOG_FORMAT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

struct http_headers;
struct sockaddr;
struct cfg_ctx;

/* Envoy's response flags, in Envoy's order (the order %RESPONSE_FLAGS% lists
 * them, comma separated): X(short name, long name). */
#define AL_RESPONSE_FLAGS(X)                                                    \
	X(LH, FailedLocalHealthCheck) X(UH, NoHealthyUpstream)                  \
	X(UT, UpstreamRequestTimeout) X(LR, LocalReset)                         \
	X(UR, UpstreamRemoteReset) X(UF, UpstreamConnectionFailure)             \
	X(UC, UpstreamConnectionTermination) X(UO, UpstreamOverflow)            \
	X(NR, NoRouteFound) X(DI, DelayInjected) X(FI, FaultInjected)           \
	X(RL, RateLimited) X(UAEX, UnauthorizedExternalService)                 \
	X(RLSE, RateLimitServiceError) X(DC, DownstreamConnectionTermination)   \
	X(URX, UpstreamRetryLimitExceeded) X(SI, StreamIdleTimeout)             \
	X(IH, InvalidEnvoyRequestHeaders) X(DPE, DownstreamProtocolError)       \
	X(UMSDR, UpstreamMaxStreamDurationReached)                              \
	X(RFCF, ResponseFromCacheFilter) X(NFCF, NoFilterConfigFound)           \
	X(DT, DurationTimeout) X(UPE, UpstreamProtocolError)                    \
	X(NC, NoClusterFound) X(OM, OverloadManagerTerminated)                  \
	X(DF, DnsResolutionFailed) X(DO, DropOverload)                          \
	X(DR, DownstreamRemoteReset)
#define AL_RF_ENUM(s, l) RF_##s,
enum response_flag { AL_RESPONSE_FLAGS(AL_RF_ENUM) RF_COUNT };
#define RF_BIT(f) (1u << (f))

/* Flag index for a short name ("UH"), -1 if unknown. */
int al_response_flag_parse(const char *shortname);

/* Everything an access log line may show about one finished stream or TCP
 * connection.  Pointers are borrowed for the duration of al_format_render;
 * NULL / negative means "not set" (rendered "-", JSON null). */
struct al_record {
	const struct http_headers *req;       /* request headers (pseudo-headers included) */
	const struct http_headers *resp;      /* response headers */
	const struct http_headers *trailers;  /* response trailers */
	const char *protocol;                 /* "HTTP/1.1", "HTTP/2"; NULL for TCP */
	int response_code;                    /* 0: none (TCP, or no response) */
	const char *details;                  /* response code details */
	uint32_t flags;                       /* RF_BIT(...) set */
	uint64_t bytes_received, bytes_sent;  /* body bytes (HTTP) / bytes (TCP) */
	uint64_t start_wall_ns;               /* CLOCK_REALTIME of the start */
	int64_t duration_ns;                  /* start .. end of the stream */
	int64_t request_duration_ns;          /* start .. last request byte, -1 */
	int64_t response_duration_ns;         /* start .. first response byte, -1 */
	const char *upstream_host;            /* "ip:port" */
	const char *upstream_cluster;
	const struct sockaddr *upstream_local;
	const char *upstream_failure;         /* transport failure reason */
	const struct sockaddr *downstream_remote, *downstream_local;
	const char *peer_uri_san;             /* TLS peer certificate URI SAN (hook) */
	const char *sni;                      /* requested server name */
	const char *route_name;
	uint64_t connection_id;
	uint32_t attempts;                    /* upstream request attempts (0: none) */
};

/* What a compiled format reads, so the caller can skip collecting it. */
#define AL_NEED_RESP      0x1u            /* %RESP(...)% */
#define AL_NEED_TRAILERS  0x2u            /* %TRAILER(...)% */
#define AL_NEED_UP_LOCAL  0x4u            /* %UPSTREAM_LOCAL_ADDRESS% */

struct al_format;

/* A growable output buffer (caller-owned, reused between renders). */
struct al_buf {
	char *p;
	size_t len, cap;
};
void al_buf_free(struct al_buf *b);
/* Free this thread's rendering scratch (thread exit). */
void al_format_thread_exit(void);

/* Envoy's default text format (with the trailing newline). */
extern const char AL_DEFAULT_FORMAT[];

/* Compile a text format.  On error returns NULL and writes a message naming
 * the operator to err.  omit_empty: unset values render as "" not "-". */
struct al_format *al_format_text(const char *fmt, bool omit_empty, char *err, size_t errlen);
/* Compile a json_format (a jansson object: string values are formats,
 * nested objects recurse, other JSON values are copied).  A value that is
 * exactly one operator keeps its type (numbers stay numbers); unset values
 * are null, or the key is left out with omit_empty. */
struct al_format *al_format_json(const void *json_obj, bool omit_empty, char *err, size_t errlen);
void al_format_free(struct al_format *f);
unsigned al_format_needs(const struct al_format *f);
bool al_format_is_json(const struct al_format *f);

/* Append one rendered line to out (JSON formats end with "\n"). */
void al_format_render(const struct al_format *f, const struct al_record *r, struct al_buf *out);

/* Bytes a JSON string cannot hold as they are: 1 for control bytes, '"',
 * '\\' and DEL; 2 for bytes >= 0x80. */
extern const uint8_t al_json_special[256];

/* Length of the prefix of s[0..n) that goes into a JSON string unescaped
 * (no control byte, '"', '\\' or DEL; with high, no byte >= 0x80 either).
 * Eight bytes at a time (exact "any byte" tests from Bit Twiddling Hacks,
 * hasless/haszero); the rest bytewise through the table.  Inline: it runs
 * for every string of every access-log line and span. */
static inline size_t al_json_safe_len(const char *s, size_t n, bool high)
{
	const uint64_t ones = 0x0101010101010101ull, highs = 0x8080808080808080ull;
	const uint8_t stop = high ? 3 : 1;
	size_t i = 0;
	for (; i + 8 <= n; i += 8) {
		uint64_t x, q, bs, del;
		__builtin_memcpy(&x, s + i, 8);
		q = x ^ (ones * '"');
		bs = x ^ (ones * '\\');
		del = x ^ (ones * 0x7f);
		uint64_t hit = ((x - ones * 0x20) & ~x) | ((q - ones) & ~q) | ((bs - ones) & ~bs) |
			       ((del - ones) & ~del) | (high ? x : 0);
		if (hit & highs)
			break;
	}
	while (i < n && !(al_json_special[(uint8_t)s[i]] & stop))
		i++;
	return i;
}
/* memcpy for short strings (most header values, tags and names are under
 * 16 bytes): two overlapping word moves instead of a libc call.  (GCC's -Warray-bounds
 * cannot see that a small constant n never reaches the memcpy branch.) */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Warray-bounds"
#pragma GCC diagnostic ignored "-Wstringop-overread"
#pragma GCC diagnostic ignored "-Wstringop-overflow"
#endif
static inline void al_copy_short(char *d, const char *s, size_t n)
{
	uint64_t a, b;
	uint32_t c, e;
	if (n >= 8 && n <= 16) {
		memcpy(&a, s, 8);
		memcpy(&b, s + n - 8, 8);
		memcpy(d, &a, 8);
		memcpy(d + n - 8, &b, 8);
	} else if (n >= 4 && n < 8) {
		memcpy(&c, s, 4);
		memcpy(&e, s + n - 4, 4);
		memcpy(d, &c, 4);
		memcpy(d + n - 4, &e, 4);
	} else if (n < 4) {
		for (size_t i = 0; i < n; i++)
			d[i] = s[i];
	} else {
		memcpy(d, s, n);
	}
}
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif


/* "UH,URX" (short) or "NoHealthyUpstream,..." (long) into buf; "-" if none.
 * Returns the length. */
size_t al_flags_string(uint32_t flags, bool long_names, char *buf, size_t cap);

#endif
