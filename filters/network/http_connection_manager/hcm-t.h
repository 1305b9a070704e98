/* hcm-t.h - http_connection_manager types (private to this directory). */
#ifndef REMORA_HCM_T_H
#define REMORA_HCM_T_H

#include <event2/event.h>
#include "proxy/filter.h"
#include "proxy/downstream.h"
#include "proxy/http/h1_parser.h"
#include "proxy/http/stream.h"
#include "proxy/http/h2_options.h"
#include "proxy/http/h2_flood.h"
#include "stats/access_log.h"
#include "stats/tracer.h"

#define HCM_TYPE "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"

enum server_header_mode { SERVER_HDR_OVERWRITE, SERVER_HDR_APPEND_IF_ABSENT, SERVER_HDR_PASS_THROUGH };

struct hcm_filter_cfg {
	const struct http_filter_ops *ops;
	void *cfg;                       /* owned via ops->free_config */
	char *name;                      /* owned: http_filters[].name (per-route configs) */
	bool disabled;                   /* http_filters[].disabled: off unless a route
	                                    enables it (typed_per_filter_config) */
};

enum hcm_codec { HCM_CODEC_AUTO, HCM_CODEC_HTTP1, HCM_CODEC_HTTP2 };

/* forward_client_cert_details (Envoy's enum order). */
enum hcm_fcc { HCM_FCC_SANITIZE, HCM_FCC_FORWARD_ONLY, HCM_FCC_APPEND_FORWARD,
	       HCM_FCC_SANITIZE_SET, HCM_FCC_ALWAYS_FORWARD_ONLY };

/* http2_protocol_options (Envoy's defaults in parentheses). */
/* HTTP/2 codec stats, rooted at "http2." as in Envoy (one scope shared by
 * every connection manager; see h2_stats_ref()). */
#define H2_STATS(X)                                                                     \
	X(COUNTER, rx_reset) X(COUNTER, tx_reset) X(COUNTER, header_overflow)          \
	X(COUNTER, rx_messaging_error) X(COUNTER, trailers) X(COUNTER, keepalive_timeout) \
	X(COUNTER, goaway_sent) X(COUNTER, headers_cb_no_stream) X(GAUGE, streams_active)  \
	H2_FLOOD_STATS(X) X(COUNTER, requests_deferred)
enum { H2_STATS(STATS_ENUM) H2_STATS_N };

/* RDS: the newest route table per worker for every version of an HCM with
 * the same rds.route_config_name, stat_prefix and http_filters (names and
 * types, in order: a route table's typed_per_filter_config slots are indexed
 * by chain position, so only such HCMs can share tables).  Every version of
 * that HCM shares one slot (found in a registry when parsed), so a
 * connection opened on an older listener version serves each new request
 * with the route table of the newest version its worker runs.
 *
 * cur[w] is written and read only by worker w (hcm_worker_snapshot, on each
 * snapshot swap): NULL, or the rc of an HCM using this slot in w's current
 * snapshot (not owned: a stream that uses it holds a reference to that
 * snapshot).  No lock on the request path. */
struct rds_slot {
	int refcnt;                      /* HCM configs using it (registry lock) */
	char *key;                       /* owned: name, prefix, filters, NUL-separated */
	size_t keylen;
	unsigned nworkers;
	const struct route_config **cur; /* owned array [nworkers]; entries not owned */
	struct rds_slot *next;           /* registry list (registry lock) */
};

struct hcm_cfg {
	char *stat_prefix;               /* owned */
	struct stats_scope *stats;       /* owned: http.<prefix>.* */
	struct route_config *rc;         /* owned: the table this config was compiled
	                                    with (inline route_config, or the RDS
	                                    RouteConfiguration known then) */
	struct rds_slot *slot;           /* one reference; NULL without rds */
	struct hcm_filter_cfg *filters;  /* owned [nfilters]; last is terminal */
	size_t nfilters;
	struct h1_limits limits;         /* max_request_headers_kb, max_headers_count */
	bool generate_request_id;        /* default true */
	bool preserve_external_request_id;
	bool always_set_request_id_in_response;
	bool use_remote_address;
	struct hcm_cidr *internal;       /* owned [ninternal]: internal_address_config.cidr_ranges */
	size_t ninternal;
	bool internal_configured;        /* internal_address_config present (else Envoy's
	                                    default: loopback and private ranges are internal) */
	struct al_list *access_logs;     /* owned, NULL: none (access_log[]) */
	unsigned al_needs;               /* AL_NEED_* of access_logs */
	struct trace_cfg *tracing;       /* owned, NULL: no tracing (tracing with a provider) */
	uint32_t xff_num_trusted_hops;
	char *server_name;               /* owned; default "envoy" */
	enum server_header_mode server_mode;
	uint64_t idle_timeout_ms;        /* common_http_protocol_options.idle_timeout (1 h) */
	uint64_t request_timeout_ms;     /* 0 = off */
	uint64_t request_headers_timeout_ms; /* 0 = off */
	uint64_t stream_idle_timeout_ms; /* 5 min default; 0 = off */
	uint64_t max_stream_duration_ms; /* 0 = off */
	bool accept_http_10;             /* http_protocol_options.accept_http_10 */
	bool proxy_100_continue;         /* forward "expect: 100-continue" and the
	                                    upstream's 100 instead of answering it */
	char *default_host_http_10;      /* owned, may be NULL: default_host_for_http_10 */
	bool websocket;                  /* upgrade_configs has websocket */
	char **upgrades;                 /* owned [nupgrades] lowercase upgrade types */
	size_t nupgrades;
	enum hcm_codec codec;            /* codec_type (AUTO: HTTP/2 if the client
	                                    starts with the connection preface) */
	struct h2_options h2;           /* http2_protocol_options */
	uint32_t max_requests_per_io_cycle; /* runtime http.max_requests_per_io_cycle:
	                                    new requests one connection starts per
	                                    I/O cycle, the rest wait for the next
	                                    loop iteration; 0 = no limit */
	struct stats_scope *h2stats;     /* shared "http2" scope, one reference */
	enum hcm_fcc fcc_mode;           /* forward_client_cert_details (SANITIZE) */
	unsigned fcc_details;            /* set_current_client_cert_details: TLS_XFCC_* */
};

/* A CIDR range (internal_address_config.cidr_ranges). */
struct hcm_cidr {
	int family;                      /* AF_INET / AF_INET6 */
	uint8_t addr[16];
	unsigned prefix_len;
};

struct hcm_conn;
struct h2_conn;
struct h2_stream;

struct filter_inst {
	const struct http_filter_ops *ops;
	void *ctx;
};

struct http_stream {
	struct hcm_conn *hc;             /* not owned */
	struct h1_head req;              /* parsed request head; req.hdrs is the request */
	enum h1_body_kind body;          /* request body framing */
	uint64_t remaining;              /* LENGTH: bytes still expected */
	struct h1_chunked chunked;       /* CHUNKED decoder */
	struct evbuffer *tmp;            /* owned: scratch for body chunks */
	const struct route_entry *route; /* matched once before the filter chain, NULL
	                                    = no route; in rc (not owned) */
	const struct route_config *rc;   /* the route table matched against (set with
	                                    the request headers; NULL before): the
	                                    connection's, or with RDS the newest its
	                                    worker knows; lives in snap */
	struct snapshot *snap;           /* the worker's snapshot when the headers
	                                    arrived (routes and clusters come from
	                                    it); a reference when it is not the
	                                    connection's (snap_ref), NULL before */
	bool snap_ref;
	const struct virtual_host *vh;   /* the route's virtual host (not owned) */
	struct filter_inst *filters;     /* owned [filters_cap]: the filters that run
	                                    (those disabled for the route are skipped) */
	size_t nfilters, filters_cap;
	struct http_stream *next_free;   /* per-thread free list link */
	bool req_done;                   /* end_stream delivered to the filters */
	bool resp_started, resp_done, resp_chunked, resp_close;
	bool upgrade;                    /* accepted upgrade request */
	bool is_head;
	bool done;                       /* complete; destroy at the next safe point */
	bool paused;                     /* a filter paused decoding */
	bool headers_held;               /* a non-terminal filter returned STOP from
	                                    decode_headers; body waits in the socket */
	bool headers_end;                /* end_stream of the held headers */
	uint32_t decode_next;            /* filter to run when decoding continues */
	bool blocked;                    /* downstream output over the limit */
	bool encode_hold;                /* a filter holding response data asked the
	                                    source to stop (http_stream_set_encode_hold) */
	bool counted_active;
	bool expect_100;                 /* proxy_100_continue: the client waits for the
	                                    upstream's 100 Continue */
	bool sent_100;                   /* it was passed on (once per stream) */
	int status;
	const char *details;             /* static */
	uint64_t start_ns;
	uint64_t last_activity_ms;
	uint64_t idle_ms;                /* stream idle timeout: HCM's, or the route's idle_timeout */
	uint64_t max_dur_ms;             /* max stream duration: HCM's, or the route's */
	struct event *timer;             /* owned: request / stream idle / max duration */
	/* access log (http_stream_set_* and the codecs fill these): */
	uint32_t rflags;                 /* RF_BIT(response_flag) set */
	uint64_t bytes_rx, bytes_tx;     /* request / response body bytes */
	uint64_t req_end_ns, resp_start_ns; /* 0: not yet */
	uint32_t attempts;               /* upstream attempts */
	const char *up_cluster;          /* in the snapshot (not owned), NULL: none */
	char up_host[64];                /* "ip:port" of the last upstream host, "" none */
	char up_failure[96];             /* upstream transport failure reason */
	struct sockaddr_storage up_local;/* family 0: unknown */
	struct http_headers resp_hdrs;   /* copy of the response headers (only when a
	                                    format reads them); storage kept on recycle */
	struct http_headers resp_trailers; /* same, trailers */
	struct trace_state trace;        /* tracing (stats/tracer.h); zeroed per stream */
	/* HTTP/2 only (zero for HTTP/1): */
	struct h2_stream *h2s;           /* codec state; NULL once the codec closed the
	                                    stream (owned by the h2 connection) */
	struct http_stream *lprev, *lnext; /* the connection's live streams */
	struct http_stream *qnext;       /* the connection's work queue */
	bool queued;                     /* on the work queue */
};

struct hcm_conn {
	struct downstream super;         /* must be first */
	const struct hcm_cfg *cfg;       /* in super.snap */
	struct http_stream *s;           /* HTTP/1: current stream, NULL between requests */
	struct h2_conn *h2;              /* owned: HTTP/2 codec, NULL for HTTP/1 */
	uint8_t proto;                   /* 0 undecided (AUTO), 1 HTTP/1, 2 HTTP/2 */
	struct h1_scan scan;
	struct event *timer;             /* owned: idle / request headers timeout */
	struct event *deferred;          /* owned: runs deferred completion work */
	void **conn_state;               /* owned [cfg->nfilters], lazily: per-connection
	                                    filter state (http_stream_conn_state), each
	                                    freed by its filter's conn_state_free */
	uint32_t nrequests;
	uint64_t conn_id;                /* %CONNECTION_ID% */
	bool close_after;                /* close when the current response is flushed */
	bool closing;                    /* flushing, then close */
	bool tunnel;                     /* upgrade established: raw bytes */
	bool read_paused;
	bool in_head_timer;
	bool dead;                       /* close requested while busy */
};

void *hcm_parse_config(struct cfg_ctx *c, const json_t *j, struct build_ctx *b);
/* network_filter_ops.worker_snapshot: keep slot->cur[w->id] current. */
void hcm_worker_snapshot(const void *cfg, struct worker *w, bool entering);

/* ---- TLS downstreams (tls_hooks.c) ---- */
int hcm_parse_client_cert(struct cfg_ctx *c, const json_t *j, struct hcm_cfg *cfg);
int hcm_alpn_proto(struct hcm_conn *hc);       /* 2 "h2", 1 "http/1.1", 0 none */
void hcm_tls_request_headers(struct hcm_conn *hc, struct http_headers *h);
void hcm_free_config(void *cfg);

/* ---- shared by the codecs (hcm.c) ---- */
struct http_stream *hcm_stream_new(struct hcm_conn *hc);
/* Request head is in s->req.hdrs (pseudo-headers first): prepare it, match
 * the route, create the filters and run decode_headers. */
void hcm_stream_begin(struct http_stream *s, bool end_stream);
void hcm_stream_destroy(struct http_stream *s);
void hcm_run_decode_data(struct http_stream *s, struct evbuffer *data, bool end_stream);
void hcm_run_decode_trailers(struct http_stream *s, struct http_headers *t);
/* Filters' encode_headers hooks, then server/date/x-request-id; returns the status. */
int hcm_response_prepare(struct http_stream *s, struct http_headers *h, bool end_stream);
void hcm_stream_finish(struct http_stream *s);
void hcm_schedule(struct hcm_conn *hc);
void hcm_close(struct hcm_conn *hc, bool remote);
void hcm_close_after_flush(struct hcm_conn *hc);
void hcm_arm_idle(struct hcm_conn *hc);
/* Is type (any case) listed in upgrade_configs?  CONNECT is "connect". */
bool hcm_upgrade_type_allowed(const struct hcm_cfg *cfg, const char *type, size_t n);
/* Is the peer internal for x-request-id (internal_address_config)? */
bool hcm_peer_internal(const struct hcm_cfg *cfg, const struct sockaddr *sa);

/* ---- HTTP/2 codec (h2_codec.c) ---- */
/* Does buf start like the HTTP/2 client preface?  1 yes, 0 no, -1 need more. */
int h2_preface_match(const char *buf, size_t len);
void h2_conn_start(struct hcm_conn *hc);       /* sends SETTINGS */
void h2_conn_free(struct hcm_conn *hc);        /* after the streams are gone */
void h2_conn_process(struct hcm_conn *hc);     /* read input, run the work queue, send */
void h2_conn_on_write(struct hcm_conn *hc);    /* output drained below the low mark */
void h2_conn_drain(struct hcm_conn *hc);       /* GOAWAY, close when idle */
void h2_conn_eof(struct hcm_conn *hc);         /* peer closed: reset live streams */
void h2_stream_detach(struct http_stream *s);  /* the HCM destroys s */
void h2_encode_headers(struct http_stream *s, struct http_headers *h, bool end_stream);
void h2_encode_data(struct http_stream *s, struct evbuffer *data, bool end_stream);
void h2_encode_trailers(struct http_stream *s, struct http_headers *t);
void h2_encode_100_continue(struct http_stream *s);   /* a :status 100 HEADERS */
void h2_reset_stream(struct http_stream *s);
void h2_stream_resume(struct http_stream *s);  /* decoding resumed / continued */
void h2_queue_push(struct hcm_conn *hc, struct http_stream *s); /* s->queued was set */
bool hcm_h2_idle(struct hcm_conn *hc);         /* HTTP/2 with no live stream */
void h2_thread_exit(void);                     /* free the per-thread stream cache */
struct stats_scope *h2_stats_ref(struct stats_store *st);
void h2_stats_unref(struct stats_scope *sc);

#endif
