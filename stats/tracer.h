/* tracer.h - HCM `tracing`: sampling, trace context, spans, export.
 *
 * Config: HttpConnectionManager.tracing is compiled once into a read-only
 * struct trace_cfg (owned by the HCM config).  Its provider (Zipkin or
 * OpenTelemetry) is a struct tracer shared by every HCM config with the
 * same provider settings, so an xDS update keeps the exporter and its
 * buffered spans.
 *
 * Request path (worker, no lock, no allocation):
 *  - trace_begin(), once the request head is prepared: the tracing decision
 *    (Envoy's: x-envoy-force-trace from an internal peer, x-client-trace-id
 *    with client_sampling, random_sampling on the x-request-id hash, then
 *    overall_sampling), the incoming context (B3 multi, b3, traceparent),
 *    the stream's span ids, and the child context written into the request
 *    headers that go upstream (B3 multi for Zipkin, traceparent for
 *    OpenTelemetry, and any other format the request already carried);
 *  - trace_finish(), when the stream is destroyed: a sampled stream's span
 *    (and its upstream span with spawn_upstream_span) is copied into this
 *    worker's fixed-size ring for the tracer; a full ring drops the span and
 *    counts tracing.<provider>.spans_dropped.
 * Main thread: every 100 ms (sooner when a worker's ring is a quarter full) the
 * rings are drained and the spans rendered as JSON; a batch is POSTed to
 * the collector cluster (proxy/upstream/async_http.h) once it holds
 * TRACER_BATCH spans or every second (timer_flushed). */
#ifndef REMORA_TRACER_H
#define REMORA_TRACER_H

#include <jansson.h>
#include <event2/event.h>
#include "../proxy/common.h"

struct cfg_ctx;
struct build_ctx;
struct http_headers;
struct trace_cfg;
struct evbuffer;

#define TRACER_BATCH 1000           /* spans per report at most */
#define TRACER_FLUSH_MS 1000
#define TRACER_RING_SLOTS 512       /* spans per worker per tracer */

/* Per-stream tracing state, embedded in the stream (zeroed per stream). */
struct trace_state {
	uint64_t trace_hi, trace_lo;
	uint64_t span_id, parent_id;     /* the stream's span; parent 0: root */
	uint64_t up_span_id;             /* spawn_upstream_span: the upstream (CLIENT) span */
	uint64_t up_start_ns;            /* first upstream attempt, 0: none */
	bool active;                     /* trace_begin ran */
	bool sampled;
	bool shared;                     /* Zipkin shared span (SERVER side of the caller's span) */
	bool id128;
	bool server;                     /* SERVER span (else CLIENT) */
};

/* What the HCM knows when a stream ends. */
struct trace_end {
	const struct http_headers *req;
	const char *protocol;            /* "HTTP/1.1" */
	int status;                      /* 0: no response (reset) */
	uint32_t rflags;                 /* RF_BIT() set */
	const char *up_cluster, *up_host; /* may be NULL */
	uint64_t start_ns;               /* monotonic stream start */
};

/* Compile member "tracing" of the HCM config j (absent: *out NULL).
 * stat_prefix names http.<prefix>.tracing.*.  RM_OK / RM_ERROR after cfg_fail. */
int trace_cfg_parse(struct cfg_ctx *c, const json_t *j, struct build_ctx *b,
		    const char *stat_prefix, struct trace_cfg **out);
void trace_cfg_free(struct trace_cfg *tc);   /* NULL ok; main thread */

/* Worker.  internal: the peer is internal (x-envoy-force-trace is honoured);
 * server: SERVER span (ingress) else CLIENT (egress); shard: stats shard. */
void trace_begin(const struct trace_cfg *tc, struct trace_state *ts, struct http_headers *h,
		 bool internal, bool server, unsigned shard);
/* Worker: the stream's first upstream attempt starts now. */
static inline void trace_upstream_start(struct trace_state *ts)
{
	if (ts->active && !ts->up_start_ns)
		ts->up_start_ns = now_ns();
}
/* Worker (worker_id = current worker's id, shard its stats shard). */
void trace_finish(const struct trace_cfg *tc, const struct trace_state *ts,
		  const struct trace_end *e, unsigned worker_id, unsigned shard);

/* Main thread: start the flush timer on base / stop it and abort reports
 * in flight (shutdown).  Tracers created before tracer_start wait for it. */
void tracer_start(struct event_base *base);
void tracer_stop(void);
/* Main thread: drain every ring and send what is due now (tests, shutdown). */
void tracer_flush_all(bool force);

/* Exposed for tests: render the spans buffered in the ring of worker w of
 * tc's tracer as the provider's JSON report body into out; returns the
 * number of spans. */
size_t tracer_render_pending(const struct trace_cfg *tc, struct evbuffer *out);

#endif
