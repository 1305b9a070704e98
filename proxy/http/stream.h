/* stream.h - what an HTTP filter may do with its stream.
 *
 * A stream is one request/response exchange on a downstream connection.  It
 * is codec-neutral: filters see header maps (headers.h) and body chunks in
 * evbuffers.  The connection manager owns streams; a filter must not keep a
 * stream pointer past its destroy hook.  Every function here is worker-only.
 *
 * Completion and destruction are deferred: when a filter finishes the
 * response from inside a callback, the stream (and possibly the connection)
 * is destroyed after the current callback returns, never under it. */
#ifndef REMORA_HTTP_STREAM_H
#define REMORA_HTTP_STREAM_H

#include "headers.h"
#include "../../stats/stats.h"
#include "../../stats/access_log_format.h"

struct http_stream;
struct evbuffer;
struct worker;
struct snapshot;
struct route_config;
struct route_entry;
struct virtual_host;
struct downstream;

/* HCM stats (http.<stat_prefix>.*), including the router's. */
#define HCM_STATS(X)                                                                    \
	X(COUNTER, downstream_cx_total) X(GAUGE, downstream_cx_active)                 \
	X(COUNTER, downstream_cx_http1_total) X(GAUGE, downstream_cx_http1_active)     \
	X(COUNTER, downstream_cx_http2_total) X(GAUGE, downstream_cx_http2_active)     \
	X(COUNTER, downstream_cx_destroy) X(COUNTER, downstream_cx_destroy_remote)     \
	X(COUNTER, downstream_cx_destroy_local) X(COUNTER, downstream_cx_destroy_active_rq) \
	X(COUNTER, downstream_cx_protocol_error) X(COUNTER, downstream_cx_idle_timeout) \
	X(COUNTER, downstream_cx_drain_close) X(COUNTER, downstream_cx_upgrades_total) \
	X(GAUGE, downstream_cx_upgrades_active) X(COUNTER, downstream_cx_rx_bytes_total) \
	X(COUNTER, downstream_cx_tx_bytes_total) X(HISTOGRAM, downstream_cx_length_ms) \
	X(COUNTER, downstream_rq_total) X(COUNTER, downstream_rq_http1_total)          \
	X(COUNTER, downstream_rq_http2_total)                                           \
	X(GAUGE, downstream_rq_active) X(COUNTER, downstream_rq_completed)             \
	X(COUNTER, downstream_rq_timeout) X(COUNTER, downstream_rq_idle_timeout)       \
	X(COUNTER, downstream_rq_header_timeout) X(COUNTER, downstream_rq_rx_reset)    \
	X(COUNTER, downstream_rq_tx_reset) X(COUNTER, downstream_rq_too_large)         \
	X(COUNTER, downstream_rq_ws_on_non_ws_route) X(HISTOGRAM, downstream_rq_time)  \
	X(COUNTER, no_route) X(COUNTER, no_cluster) X(COUNTER, rq_redirect)            \
	X(COUNTER, rq_direct_response) X(COUNTER, rq_total)                            \
	X(COUNTER, rq_reset_after_downstream_response_started)                       \
	X(COUNTER, downstream_rq_too_many_premature_resets)                             \
	X(COUNTER, downstream_rq_overload_close) X(COUNTER, downstream_cx_overload_disable_keepalive)
enum { HCM_STATS(STATS_ENUM) HCM_STATS_N };

struct worker *http_stream_worker(const struct http_stream *s);
struct snapshot *http_stream_snapshot(const struct http_stream *s);
const struct route_config *http_stream_route_config(const struct http_stream *s);
struct stats_scope *http_stream_stats(const struct http_stream *s);
/* The request headers (mutable until the router sends them). */
struct http_headers *http_stream_request(struct http_stream *s);
/* True if the request is an accepted upgrade (WebSocket): after a 101 the
 * stream carries raw bytes both ways until either side closes. */
bool http_stream_is_upgrade(const struct http_stream *s);
/* True if the downstream connection speaks HTTP/2 (use_downstream_protocol_config). */
bool http_stream_is_http2(const struct http_stream *s);
/* Downstream peer IP (text) and whether the downstream is TLS. */
const char *http_stream_peer_ip(const struct http_stream *s);
/* The downstream connection's peer and local socket addresses. */
struct sockaddr;
void http_stream_addresses(const struct http_stream *s, const struct sockaddr **peer,
			   const struct sockaddr **local);
/* The downstream connection (addresses; local_restored: original destination). */
const struct downstream *http_stream_downstream(const struct http_stream *s);
/* The downstream peer's TLS identity: its SPIFFE ID (first URI SAN), else
 * its first DNS SAN, else its certificate subject; NULL on plaintext or without a client
 * certificate.  Valid for the stream's lifetime.  (RBAC principals.) */
const char *http_stream_peer_principal(const struct http_stream *s);
/* The downstream connection is TLS. */
bool http_stream_downstream_tls(const struct http_stream *s);
uint64_t http_stream_start_ns(const struct http_stream *s);

/* The stream's route, matched once by the connection manager after the
 * request headers arrived and before the filter chain runs (NULL: no route
 * matched); *vh_out (if not NULL) gets its virtual host.  Header changes
 * made by filters do not re-match.  Both live in the stream's route table. */
const struct route_entry *http_stream_route(const struct http_stream *s,
					    const struct virtual_host **vh_out);
/* The most specific typed_per_filter_config (route > virtual host > route
 * configuration) of the filter whose parsed config is filter_cfg (the
 * pointer its create hook got) for the stream's route: that filter's
 * parse_per_route result, or NULL when none applies.  No allocation. */
const void *http_stream_per_route_config(const struct http_stream *s, const void *filter_cfg);

/* Per-connection state of the filter whose parsed config is filter_cfg
 * (e.g. a token bucket per downstream connection): a slot that lives as long
 * as the connection, NULL until the filter stores something.  When the
 * connection closes, the filter's ops->conn_state_free(state) frees it. */
void **http_stream_conn_state(struct http_stream *s, const void *filter_cfg);

/* Response path.  encode_headers takes the contents of h (h is left empty);
 * h must hold ":status".  encode_data drains data. */
void http_stream_encode_headers(struct http_stream *s, struct http_headers *h, bool end_stream);
void http_stream_encode_data(struct http_stream *s, struct evbuffer *data, bool end_stream);
void http_stream_encode_trailers(struct http_stream *s, struct http_headers *t);
/* The upstream answered 100 Continue: pass it to the client, once, if the
 * HCM forwards 100-continue (proxy_100_continue) and the client asked for
 * it; otherwise nothing (the HCM answered the client itself). */
void http_stream_encode_100_continue(struct http_stream *s);
/* A filter that returned STOP from encode_data / encode_trailers (it holds
 * response data, e.g. to pace it) sends it on with these: only the filters
 * before it (ctx: its per-stream context) run, then the codec. */
void http_stream_encode_data_from(struct http_stream *s, const void *ctx, struct evbuffer *data,
				  bool end_stream);
void http_stream_encode_trailers_from(struct http_stream *s, const void *ctx,
				      struct http_headers *t);
/* A reply made by the proxy (text/plain body, may be NULL).  For a gRPC
 * request (content-type application/grpc*) it is a trailers-only gRPC
 * response instead: :status 200, grpc-status mapped from status as Envoy's
 * httpToGrpcStatus, grpc-message = body.  If the response has already
 * started, the stream is reset instead.  details is a static
 * string recorded for logs (Envoy's response code details). */
void http_stream_send_local_reply(struct http_stream *s, int status, const char *body,
				  const char *details);
/* The same, with grpc_status (>= 0) replacing the one mapped from status
 * when the request is gRPC (Envoy's sendLocalReply grpc_status argument). */
void http_stream_send_local_reply_grpc(struct http_stream *s, int status, int grpc_status,
				       const char *body, const char *details);
/* Abort: HTTP/1 closes the downstream connection; HTTP/2 resets the stream
 * (RST_STREAM INTERNAL_ERROR) and the connection goes on. */
void http_stream_reset(struct http_stream *s, const char *details);
bool http_stream_response_started(const struct http_stream *s);

/* A non-terminal filter that returned STOP from decode_headers (e.g. to
 * delay the request) resumes the chain with this; the request body is not
 * read from the client until then.  STOP from decode_data/trailers of a
 * non-terminal filter is not supported yet (treated as CONTINUE). */
void http_stream_continue_decoding(struct http_stream *s);
/* Replace the stream's maximum duration (route max_stream_duration; 0 = none). */
void http_stream_set_max_duration(struct http_stream *s, uint64_t ms);
/* Replace the stream idle timeout (the route's idle_timeout; 0 = none). */
void http_stream_set_idle_timeout(struct http_stream *s, uint64_t ms);

/* Access-log data.  A code path that causes one of Envoy's response flags
 * sets it (RF_UH, RF_UF, ... from access_log_format.h); flags accumulate.
 * The router reports the cluster it picked and each upstream
 * attempt's host (the attempt count is the number of host calls), the attempt connection's fd (its local
 * address is read only if a format shows it) and a transport failure
 * reason.  Strings are copied (the cluster name must live in the
 * stream's snapshot). */
void http_stream_set_response_flag(struct http_stream *s, enum response_flag f);
bool http_stream_has_response_flag(const struct http_stream *s, enum response_flag f);
void http_stream_set_upstream_cluster(struct http_stream *s, const char *cluster);
void http_stream_set_upstream_host(struct http_stream *s, const char *host);
void http_stream_set_upstream_fd(struct http_stream *s, int fd);
void http_stream_set_upstream_failure(struct http_stream *s, const char *reason);

/* Back-pressure.  After encode_data, if the downstream is blocked the filter
 * should stop reading its source until on_downstream_writable.  A filter that
 * cannot take more request body pauses decoding and resumes later. */
bool http_stream_downstream_blocked(const struct http_stream *s);
/* A filter holding response data sets this while its buffer is full: the
 * response source sees http_stream_downstream_blocked() and stops reading;
 * clearing it calls the filters' on_downstream_writable (unless the socket
 * itself is still blocked).  Reset with the stream. */
void http_stream_set_encode_hold(struct http_stream *s, bool hold);
/* Only the downstream socket's output over its limit (not encode holds). */
bool http_stream_output_blocked(const struct http_stream *s);
void http_stream_pause_decoding(struct http_stream *s);
void http_stream_resume_decoding(struct http_stream *s);

#endif
