/* h2_client.h - upstream HTTP/2 (h2c, prior knowledge) on nghttp2, and the
 * multiplexed side of the per-worker, per-host pools (pool.h).
 *
 * A pool's HTTP/2 connections each carry up to min(the cluster's
 * max_concurrent_streams, the peer's SETTINGS_MAX_CONCURRENT_STREAMS)
 * streams, and at most max_requests_per_connection in their life; past that
 * a new connection opens (under max_connections).  A connection takes
 * streams only once the peer's SETTINGS arrived, so the peer's limit is
 * known.  Requests that cannot get a stream at once wait in the pool's
 * pending queue (max_pending_requests) until a connection is ready or a
 * stream frees up.  GOAWAY drains a connection: streams the peer accepted
 * finish, the others end as refused (retriable), new streams go to a new
 * connection.
 *
 * Flood limits (the cluster's http2_protocol_options max_outbound_frames,
 * max_outbound_control_frames, max_consecutive_inbound_frames_with_empty_payload,
 * max_inbound_priority_frames_per_stream,
 * max_inbound_window_update_frames_per_data_frame_sent; rules in
 * proxy/http/h2_flood.h) apply to the upstream as to a downstream client:
 * past one, cluster.<name>.http2.<kind>_flood is counted once, every
 * stream of the connection ends as a connection reset (H2C_RESET_CONNECTION:
 * the router answers 503 UC or retries), GOAWAY ENHANCE_YOUR_CALM is
 * written after the last whole frame, and the connection lingers (takes no
 * stream, discards its input) until the GOAWAY is out and the peer closes,
 * at most 1 s.
 *
 * Streams are codec-neutral for their owner (the router): headers arrive as
 * a header map, body bytes in an evbuffer the owner drains at its own pace
 * (window updates follow what it consumed: a slow downstream bounds memory
 * by the stream window), trailers as a header map.  Owner callbacks never
 * run under an nghttp2 callback: they run after the frames were parsed,
 * from the connection's read callback or its deferred event.
 *
 * TLS (ALPN h2) will plug in at h2c_conn_connect(): the transport below is a
 * struct conn, whatever it carries. */
#ifndef REMORA_UPSTREAM_H2_CLIENT_H
#define REMORA_UPSTREAM_H2_CLIENT_H

#include "../http/headers.h"
#include "../http/h2_flood.h"
#include "../../stats/stats.h"

struct evbuffer;
struct h2c_stream;
struct h2c_conn;
struct pool;
struct stats_store;

/* cluster.<name>.http2.* (upstream side of Envoy's http2.* codec stats). */
#define H2C_STATS(X)                                                                  \
	X(COUNTER, rx_reset) X(COUNTER, tx_reset) X(COUNTER, rx_messaging_error)     \
	X(COUNTER, trailers) X(COUNTER, keepalive_timeout) X(COUNTER, goaway_received) \
	X(COUNTER, refused_stream) X(GAUGE, streams_active)                          \
	H2_FLOOD_STATS(X) X(COUNTER, goaway_sent)
enum { H2C_STATS(STATS_ENUM) H2C_STATS_N };

/* Create the cluster's http2 scope (main thread). */
struct stats_scope *h2c_stats_new(struct stats_store *st, const char *cluster);

/* Why a stream ended before its response did (the router maps these to
 * Envoy's response flags: UR, UR, UC, UPE). */
enum h2c_reset {
	H2C_RESET_REMOTE,       /* RST_STREAM from the peer */
	H2C_RESET_REFUSED,      /* REFUSED_STREAM, or above a GOAWAY's last stream id, or
				   never sent: the peer processed nothing (retriable) */
	H2C_RESET_CONNECTION,   /* the connection was lost */
	H2C_RESET_PROTOCOL,     /* reset here: the response broke HTTP/2 messaging rules
				   (bad headers, content-length not matching DATA) */
};

/* Owner callbacks.  arg is the one given to h2c_stream_set_owner(). */
struct h2c_owner_ops {
	/* final response headers (1xx skipped): h is the stream's map, the
	 * owner may take its contents; end: no body follows */
	void (*on_headers)(void *arg, struct h2c_stream *s, struct http_headers *h, bool end);
	/* body bytes in h2c_stream_input(), or the end (h2c_stream_recv_done),
	 * possibly with trailers (h2c_stream_trailers()) */
	void (*on_body)(void *arg, struct h2c_stream *s);
	/* the stream ended before its response did (code: the HTTP/2 error
	 * code; why: see enum h2c_reset) */
	void (*on_reset)(void *arg, struct h2c_stream *s, uint32_t code, enum h2c_reset why);
	/* request body queued for the upstream drained to half the limit */
	void (*on_writable)(void *arg, struct h2c_stream *s);
	/* a 100 Continue arrived (before the final headers; may be NULL) */
	void (*on_continue)(void *arg, struct h2c_stream *s);
};

void h2c_stream_set_owner(struct h2c_stream *s, const struct h2c_owner_ops *ops, void *arg);
/* Send the request head (pseudo-headers first; connection-specific headers
 * dropped, te kept only as "trailers").  end: no body. */
void h2c_stream_send_headers(struct h2c_stream *s, const struct http_headers *h, bool end);
/* Queue request body (drains data); end: last bytes.  Returns true when
 * the queue passed the limit: stop sending until on_writable. */
bool h2c_stream_send_data(struct h2c_stream *s, struct evbuffer *data, bool end);
/* Request trailers (copied); ends the request. */
void h2c_stream_send_trailers(struct h2c_stream *s, const struct http_headers *t);
/* Request bytes queued, not yet framed (the owner's back-pressure signal). */
size_t h2c_stream_out_len(const struct h2c_stream *s);
/* Response body received and not consumed yet. */
struct evbuffer *h2c_stream_input(struct h2c_stream *s);
/* The owner drained n bytes of the input: open the windows by n. */
void h2c_stream_consumed(struct h2c_stream *s, size_t n);
/* The response ended (END_STREAM seen); the input may still hold bytes. */
bool h2c_stream_recv_done(const struct h2c_stream *s);
/* Response trailers, or NULL. */
struct http_headers *h2c_stream_trailers(struct h2c_stream *s);
/* The owner is done with the stream: RST_STREAM(CANCEL) if it is still
 * open, unconsumed input given back to the connection window.  The stream
 * must not be used afterwards. */
void h2c_stream_release(struct h2c_stream *s);

/* ---- pool side (pool.c) ---------------------------------------------------- */

/* A ready connection of pool p with room for one more stream, or NULL. */
struct h2c_conn *h2c_pool_pick(struct pool *p);
/* A new stream on c (counts against its capacity). */
struct h2c_stream *h2c_stream_new(struct h2c_conn *c);
/* Open a connection for pool p (the connection breaker is already taken
 * with priority prio). */
struct h2c_conn *h2c_conn_connect(struct pool *p, int prio);
/* Streams the connecting connections of p are expected to take. */
unsigned h2c_pool_promised(const struct pool *p);
/* Close idle HTTP/2 connections of p (drain, orphaned host). */
void h2c_pool_close_idle(struct pool *p);

#endif
