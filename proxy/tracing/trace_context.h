/* trace_context.h - distributed trace context in request headers.
 *
 * Pure functions (no I/O, no allocation): parse the three header formats a
 * mesh meets and format the ones Remora sends upstream.
 *   B3 multi:  x-b3-traceid (16 or 32 hex), x-b3-spanid (16 hex),
 *              x-b3-parentspanid (16 hex), x-b3-sampled (1/0, true/false),
 *              x-b3-flags (1 = debug, implies sampled)
 *   B3 single: b3: {traceid}-{spanid}[-{1|0|d}[-{parentspanid}]] or just {1|0|d}
 *   W3C:       traceparent: 00-{32 hex trace}-{16 hex parent}-{2 hex flags};
 *              tracestate is opaque and forwarded as it is.
 * Malformed values are ignored (the format counts as absent); nothing here
 * can fail otherwise.  Hex is accepted in either case on input (B3 peers
 * differ) except traceparent, which the W3C spec makes lowercase-only; output
 * is lowercase. */
#ifndef REMORA_TRACE_CONTEXT_H
#define REMORA_TRACE_CONTEXT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct http_headers;

enum tc_format { TC_NONE = 0, TC_B3 = 1, TC_B3_SINGLE = 2, TC_W3C = 3 };

struct trace_ctx {
	uint64_t trace_hi;     /* 0 for a 64-bit trace id */
	uint64_t trace_lo;     /* never 0 when ids are set */
	uint64_t span_id;      /* the caller's span; 0: no ids (sampling only) */
	uint64_t parent_id;    /* the caller's parent (B3 only), 0: none */
	int sampled;           /* -1 not said, 0 no, 1 yes */
	bool debug;            /* B3 flags / "d" */
	bool id128;            /* the trace id was given as 32 hex digits */
};

/* Parse exactly n hex digits (n <= 16) into *out; false on any other char. */
bool tc_hex_parse(const char *s, size_t n, bool lower_only, uint64_t *out);
/* Write v as 16 lowercase hex digits (no NUL). */
void tc_hex16(uint64_t v, char out[16]);

/* Each returns true when the value(s) held a usable context (ids, or for
 * B3 a sampling decision alone) and fills *out (untouched otherwise).
 * Values are (pointer, length) and may be NULL when the header is absent. */
bool tc_parse_b3_multi(const char *trace, size_t tn, const char *span, size_t sn,
		       const char *parent, size_t pn, const char *sampled, size_t dn,
		       const char *flags, size_t fn, struct trace_ctx *out);
bool tc_parse_b3_single(const char *v, size_t n, struct trace_ctx *out);
bool tc_parse_traceparent(const char *v, size_t n, struct trace_ctx *out);

/* Look for a context in h: B3 multi first, then b3, then traceparent (the
 * order Envoy's Zipkin tracer uses; w3c_first: traceparent first, as the
 * OpenTelemetry tracer).  Returns the format found, TC_NONE if none. */
enum tc_format tc_extract(const struct http_headers *h, bool w3c_first, struct trace_ctx *out);

/* Formatting.  trace ids print as 32 digits when trace_hi != 0 or id128,
 * else 16.  Each returns the length written (no NUL is added). */
size_t tc_format_trace_id(uint64_t hi, uint64_t lo, bool id128, char out[32]);
/* "00-<trace 32>-<span 16>-0x" (55 bytes). */
size_t tc_format_traceparent(uint64_t hi, uint64_t lo, uint64_t span, bool sampled, char out[55]);
/* "<trace>-<span>-<1|0>[-<parent>]" (at most 68 bytes). */
size_t tc_format_b3_single(uint64_t hi, uint64_t lo, bool id128, uint64_t span, bool sampled,
			   uint64_t parent, char out[68]);

/* A random non-zero 64-bit id (per-thread generator, no lock). */
uint64_t tc_new_id(void);

#endif
