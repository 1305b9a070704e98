/* filter.h - network and HTTP filter vtables, registered by Envoy extension
 * name and @type URL in filters/registry.c (one line per filter).
 *
 * Config is parsed once per snapshot into an immutable struct
 * (parse_config); per-connection / per-stream state is created from it. */
#ifndef REMORA_FILTER_H
#define REMORA_FILTER_H

#include <sys/socket.h>
#include "config/cfg.h"

struct worker;
struct downstream;
struct accept_info;
struct http_stream;
struct http_headers;
struct evbuffer;
struct build_ctx;

/* A listener filter chain is a list of network filters: zero or more
 * non-terminal ones (local_ratelimit) that may reject a new connection, then
 * one terminal filter (tcp_proxy, http_connection_manager) that takes it
 * over.  A filter is terminal iff it has on_accept. */
struct network_filter_ops {
	const char *name;                  /* "envoy.filters.network.tcp_proxy" */
	const char *type_url;              /* "type.googleapis.com/envoy...TcpProxy" */
	/* Parse typed_config (already stripped of nothing: "@type" is present).
	 * Returns an owned config or NULL after cfg_fail(). */
	void *(*parse_config)(struct cfg_ctx *c, const json_t *typed_config, struct build_ctx *b);
	void (*free_config)(void *cfg);
	/* Terminal filters: take ownership of the accepted connection (ai->bev). */
	void (*on_accept)(const struct accept_info *ai, const void *cfg);
	/* Non-terminal filters: judge a new connection before the terminal
	 * filter sees it, in chain order.  ai->bev is NULL (nothing is allocated
	 * yet).  Return false to close it at once (later filters do not run). */
	bool (*on_new_connection)(const struct accept_info *ai, const void *cfg);
	/* Non-terminal filters on a TLS filter chain: judge the connection once
	 * its TLS handshake completed, when the peer's identity is known
	 * (before the terminal filter reads a byte).  Return false to close it.
	 * May be NULL.  Called from downstream_handshake_done() (worker.c). */
	bool (*on_handshake)(const struct downstream *d, const void *cfg);
	/* A worker thread is exiting: free per-thread caches.  May be NULL. */
	void (*thread_exit)(void);
	/* Worker w swaps snapshots (on w's thread, before new work runs on the
	 * new one): called with entering false for every config of the snapshot
	 * it leaves, then true for every config of the one it enters (also for
	 * its first snapshot).  Lets per-worker state follow the newest config
	 * without locks (the HCM's RDS route tables).  May be NULL. */
	void (*worker_snapshot)(const void *cfg, struct worker *w, bool entering);
};

/* HTTP filter hooks return one of these.  STOP pauses the chain at this
 * filter; the filter resumes it with http_stream_continue_decoding() /
 * _encoding().  The router is terminal: it always returns STOP from decode
 * hooks and produces the response by calling the stream's encode functions. */
enum filter_status { FILTER_CONTINUE = 0, FILTER_STOP = 1 };

struct http_filter_ops {
	const char *name;                  /* "envoy.filters.http.router" */
	const char *type_url;
	bool terminal;                     /* must be last in the chain */
	void *(*parse_config)(struct cfg_ctx *c, const json_t *typed_config, struct build_ctx *b);
	void (*free_config)(void *cfg);
	/* typed_per_filter_config (route, virtual host or route configuration
	 * level; the most specific wins): parse one Any of this filter's type
	 * ("@type" present) into an owned, immutable config the route table
	 * keeps; NULL after cfg_fail().  The filter finds it per stream with
	 * http_stream_per_route_config().  NULL hooks: the filter has no
	 * per-route config (configuring one is an error; a FilterConfig
	 * {disabled: true} is accepted for any filter). */
	void *(*parse_per_route)(struct cfg_ctx *c, const json_t *typed_config, struct build_ctx *b);
	void (*free_per_route)(void *cfg);
	/* The per-route Any's @type when it is not type_url (RBAC's
	 * RBACPerRoute); NULL: the same message as the filter's. */
	const char *per_route_type_url;
	/* Per-stream state; may return NULL if the filter needs none.  The
	 * stream's route is already matched (http_stream_route()). */
	void *(*create)(struct http_stream *s, const void *cfg);
	void (*destroy)(void *ctx);
	/* Hooks; any may be NULL (CONTINUE). */
	enum filter_status (*decode_headers)(void *ctx, struct http_stream *s,
					     struct http_headers *h, bool end_stream);
	enum filter_status (*decode_data)(void *ctx, struct http_stream *s,
					  struct evbuffer *data, bool end_stream);
	enum filter_status (*decode_trailers)(void *ctx, struct http_stream *s,
					      struct http_headers *t);
	enum filter_status (*encode_headers)(void *ctx, struct http_stream *s,
					     struct http_headers *h, bool end_stream);
	/* STOP from encode_data / encode_trailers: the filter has taken the
	 * data (drained it into its own buffer) or trailers (copied) and sends
	 * them on later with http_stream_encode_data_from() /
	 * http_stream_encode_trailers_from(), which run only the filters
	 * before it.  Anything left in data is dropped. */
	enum filter_status (*encode_data)(void *ctx, struct http_stream *s,
					  struct evbuffer *data, bool end_stream);
	enum filter_status (*encode_trailers)(void *ctx, struct http_stream *s,
					      struct http_headers *t);
	/* The downstream side can take more data again (back-pressure released). */
	void (*on_downstream_writable)(void *ctx, struct http_stream *s);
	/* The downstream went away (reset / closed) before the stream finished. */
	void (*on_reset)(void *ctx, struct http_stream *s);
	/* Free what the filter stored with http_stream_conn_state() (required
	 * if it uses it; called when the downstream connection closes). */
	void (*conn_state_free)(void *state);
	/* A worker thread is exiting: free per-thread caches.  May be NULL. */
	void (*thread_exit)(void);
	/* Worker w swaps snapshots (on w's thread, before new work runs on the
	 * new one): called with entering false for every config of the snapshot
	 * it leaves, then true for every config of the one it enters (also for
	 * its first snapshot).  Lets per-worker state follow the newest config
	 * without locks (the HCM's RDS route tables).  May be NULL. */
	void (*worker_snapshot)(const void *cfg, struct worker *w, bool entering);
};

/* Listener filters (Envoy's listener_filters) run on a freshly accepted
 * socket, in order, before the filter chain is chosen.  They may rewrite
 * what the rest of the accept path sees: original_dst restores the local
 * address the connection was sent to before iptables redirected it;
 * inspectors (tls_inspector, http_inspector) look at the first bytes the
 * client sends, without consuming them (MSG_PEEK), and record the transport
 * protocol, SNI and application protocols for filter-chain matching.  The
 * stage is bounded by the listener's listener_filters_timeout. */
struct listener_accept {
	int fd;                            /* the accepted socket (not owned) */
	const struct sockaddr *peer;
	struct sockaddr_storage local;     /* getsockname(), or the restored original destination */
	socklen_t locallen;
	bool local_restored;               /* local is the original destination (SO_ORIGINAL_DST) */
	/* protocol detection; what filter_chain_match compares */
	const char *transport_protocol;    /* static string ("tls"); NULL: "raw_buffer" */
	char server_name[256];             /* SNI, "" if none */
	uint16_t alpn_len;                 /* bytes used in alpn */
	uint8_t alpn[256];                 /* application protocols, ALPN wire format
					      (length-prefixed), in the client's order */
};

enum lf_status {
	LF_CONTINUE = 0,                   /* next listener filter, then the filter chain */
	LF_CLOSE = 1,                      /* close the socket now */
	LF_AGAIN = 2,                      /* on_data only: need more bytes */
};

/* Set the application protocols to one name (inspectors). */
void listener_accept_set_alpn1(struct listener_accept *a, const char *proto);

struct listener_filter_ops {
	const char *name;                  /* "envoy.filters.listener.original_dst" */
	const char *type_url;
	/* Parse typed_config ("@type" present; may be NULL when the entry has
	 * none).  Returns an owned config (non-NULL) or NULL after cfg_fail(). */
	void *(*parse_config)(struct cfg_ctx *c, const json_t *typed_config, struct build_ctx *b);
	void (*free_config)(void *cfg);
	/* Synchronous filters: judge / annotate one accepted socket.  Worker
	 * thread, no allocation.  NULL for inspectors. */
	enum lf_status (*on_accept)(struct listener_accept *a, const void *cfg, struct worker *w);
	/* Inspectors: the most bytes on_data may need (the peek size). */
	size_t (*max_read_bytes)(const void *cfg);
	/* Inspectors: data[0..len) is everything the client has sent so far
	 * (peeked, still in the socket).  LF_AGAIN: call again when more has
	 * arrived; with len == max_read_bytes() the filter must decide (AGAIN
	 * then counts as CONTINUE).  data == NULL: the socket failed (count it;
	 * the socket is closed whatever is returned).  Worker thread. */
	enum lf_status (*on_data)(struct listener_accept *a, const void *cfg, struct worker *w,
				  const uint8_t *data, size_t len);
};

/* Call every filter's thread_exit hook (end of a worker thread). */
void filters_thread_exit(void);

const struct network_filter_ops *network_filter_find(const char *name, const char *type_url);
const struct http_filter_ops *http_filter_find(const char *name, const char *type_url);
/* The filter whose per-route config has this @type (per_route_type_url,
 * else type_url). */
const struct http_filter_ops *http_filter_find_per_route(const char *type_url);
const struct listener_filter_ops *listener_filter_find(const char *name, const char *type_url);

#endif
