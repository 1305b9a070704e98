/* fault.h - envoy.filters.http.fault: inject delays and aborts.
 *
 * The parsed HTTPFault config (immutable, shared by every worker through the
 * snapshot) and the pure helpers the filter uses per request, exposed for
 * the unit tests.  The filter itself is fault_filter_ops (filters/registry.c).
 *
 * Envoy semantics kept (source/extensions/filters/http/fault/):
 *  - a delay is decided first (percentage, then duration); the request is
 *    held for it, and when the timer fires the abort is decided; otherwise
 *    the abort is decided at once;
 *  - header_delay / header_abort take the value from x-envoy-fault-delay-request
 *    (ms) / x-envoy-fault-abort-request (HTTP status in 200..599) or
 *    x-envoy-fault-abort-grpc-request; the *-percentage headers lower the
 *    configured numerator (min of both, same denominator); only the first
 *    value of a header counts; an absent or malformed header means no fault;
 *  - a per-route HTTPFault (typed_per_filter_config) replaces these settings
 *    for its route; stats and the active-fault count stay the filter's;
 *  - response_rate_limit (fixed_limit {limit_kbps} or header_limit {},
 *    whose value comes from x-envoy-fault-throughput-response in KiB/s, its
 *    percentage lowered by x-envoy-fault-throughput-response-percentage) is
 *    decided with the request, before the delay; the response body (not its
 *    headers) is then sent at that rate, limit_kbps * 1024 bytes per second in
 *    50 ms slices, trailers after the body; it counts as an active fault
 *    until the stream ends;
 *  - a fault is injected only while fewer than max_active_faults are active
 *    (faults_overflow counts the refusals); a request counts once however
 *    many faults it gets, and stops counting when its delay ends without an
 *    abort. */
#ifndef REMORA_FILTERS_HTTP_FAULT_H
#define REMORA_FILTERS_HTTP_FAULT_H

#include "proxy/filter.h"
#include "stats/stats.h"

struct http_headers;
struct header_match_list;

#define FAULT_TYPE "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"

/* http.<prefix>.fault.* */
#define FAULT_STATS(X)                                                              \
	X(COUNTER, delays_injected) X(COUNTER, aborts_injected)                    \
	X(COUNTER, faults_overflow) X(GAUGE, active_faults)                        \
	X(COUNTER, response_rl_injected)
enum { FAULT_STATS(STATS_ENUM) FAULT_STATS_N };

/* envoy.type.v3.FractionalPercent: hit when rnd % denom < num. */
struct fault_pct {
	uint32_t num;
	uint32_t denom;                  /* 100, 10000 or 1000000 */
};

enum fault_delay_kind { FAULT_DELAY_NONE, FAULT_DELAY_FIXED, FAULT_DELAY_HEADER };
enum fault_abort_kind { FAULT_ABORT_NONE, FAULT_ABORT_HTTP, FAULT_ABORT_GRPC, FAULT_ABORT_HEADER };
enum fault_rl_kind { FAULT_RL_NONE, FAULT_RL_FIXED, FAULT_RL_HEADER };

/* Mutable state shared by every worker using one config. */
struct fault_shared {
	uint64_t active;                 /* faults active now (atomic); only kept
	                                    when max_active_faults is set */
};

struct fault_cfg {
	enum fault_delay_kind delay;
	uint64_t delay_ms;               /* FIXED */
	struct fault_pct delay_pct;
	enum fault_abort_kind abort;
	uint32_t abort_http;             /* HTTP: 200..599 */
	uint32_t abort_grpc;             /* GRPC */
	struct fault_pct abort_pct;
	enum fault_rl_kind rl;           /* response_rate_limit */
	uint64_t rl_kbps;                /* FIXED: KiB/s, >= 1 */
	struct fault_pct rl_pct;
	char *upstream_cluster;          /* owned; NULL = any */
	struct header_match_list *headers; /* owned; NULL = any */
	bool has_max_active;
	uint32_t max_active;             /* max_active_faults */
	struct fault_shared *shared;     /* owned */
	struct stats_scope *stats;       /* owned: http.<prefix>.fault.* */
};

/* Is rnd (uniform 64-bit) inside percentage p?  Envoy's
 * evaluateFractionalPercent: rnd % denom < num (num > denom: always). */
static inline bool fault_pct_hit(struct fault_pct p, uint64_t rnd)
{
	return p.denom && rnd % p.denom < p.num;
}

/* The effective percentage for a header-controlled fault: the configured one
 * with its numerator lowered to the value of header `name` when that is a
 * valid unsigned 32-bit integer (first value only). */
struct fault_pct fault_header_pct(struct fault_pct configured, const struct http_headers *h,
				  const char *name);

/* Unsigned decimal value of the first `name` header, optional surrounding
 * blanks; false if absent, malformed or above max. */
bool fault_header_u64(const struct http_headers *h, const char *name, uint64_t max,
		      uint64_t *out);

/* The abort to inject for request h if the percentage drawn with rnd hits:
 * returns the HTTP status (0 = none) and sets *grpc to the gRPC status, or
 * -1 when the abort is an HTTP one.  Envoy's FaultFilter::abortStatus. */
int fault_abort_status(const struct fault_cfg *cfg, const struct http_headers *h, uint64_t rnd,
		       int *grpc);

/* The delay in ms to inject for request h if the percentage drawn with rnd
 * hits (0 = none).  Envoy's FaultFilter::delayDuration. */
uint64_t fault_delay_ms(const struct fault_cfg *cfg, const struct http_headers *h, uint64_t rnd);

/* The response rate limit in KiB/s for request h if the percentage drawn
 * with rnd hits (0 = none). */
uint64_t fault_response_kbps(const struct fault_cfg *cfg, const struct http_headers *h,
			     uint64_t rnd);


extern const struct http_filter_ops fault_filter_ops;

#endif
