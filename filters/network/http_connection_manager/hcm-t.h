/* hcm-t.h - http_connection_manager types (private to this directory). */
#ifndef REMORA_HCM_T_H
#define REMORA_HCM_T_H

#include <event2/event.h>
#include "proxy/filter.h"
#include "proxy/downstream.h"
#include "proxy/http/h1_parser.h"
#include "proxy/http/stream.h"

#define HCM_TYPE "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"

enum server_header_mode { SERVER_HDR_OVERWRITE, SERVER_HDR_APPEND_IF_ABSENT, SERVER_HDR_PASS_THROUGH };

struct hcm_filter_cfg {
	const struct http_filter_ops *ops;
	void *cfg;                       /* owned via ops->free_config */
	char *name;                      /* owned: http_filters[].name (per-route configs) */
	bool disabled;                   /* http_filters[].disabled: off unless a route
	                                    enables it (typed_per_filter_config) */
};

struct hcm_cfg {
	char *stat_prefix;               /* owned */
	struct stats_scope *stats;       /* owned: http.<prefix>.* */
	struct route_config *rc;         /* owned */
	struct hcm_filter_cfg *filters;  /* owned [nfilters]; last is terminal */
	size_t nfilters;
	struct h1_limits limits;         /* max_request_headers_kb, max_headers_count */
	bool generate_request_id;        /* default true */
	bool preserve_external_request_id;
	bool always_set_request_id_in_response;
	bool use_remote_address;
	uint32_t xff_num_trusted_hops;
	char *server_name;               /* owned; default "envoy" */
	enum server_header_mode server_mode;
	uint64_t idle_timeout_ms;        /* common_http_protocol_options.idle_timeout (1 h) */
	uint64_t request_timeout_ms;     /* 0 = off */
	uint64_t request_headers_timeout_ms; /* 0 = off */
	uint64_t stream_idle_timeout_ms; /* 5 min default; 0 = off */
	uint64_t max_stream_duration_ms; /* 0 = off */
	bool accept_http_10;             /* http_protocol_options.accept_http_10 */
	char *default_host_http_10;      /* owned, may be NULL: default_host_for_http_10 */
	bool websocket;                  /* upgrade_configs has websocket */
	char **upgrades;                 /* owned [nupgrades] lowercase upgrade types */
	size_t nupgrades;
};

struct hcm_conn;

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
	                                    = no route; in hc->cfg->rc (not owned) */
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
	int status;
	const char *details;             /* static */
	uint64_t start_ns;
	uint64_t last_activity_ms;
	uint64_t idle_ms;                /* stream idle timeout: HCM's, or the route's idle_timeout */
	uint64_t max_dur_ms;             /* max stream duration: HCM's, or the route's */
	struct event *timer;             /* owned: request / stream idle / max duration */
};

struct hcm_conn {
	struct downstream super;         /* must be first */
	const struct hcm_cfg *cfg;       /* in super.snap */
	struct http_stream *s;           /* current stream, NULL between requests */
	struct h1_scan scan;
	struct event *timer;             /* owned: idle / request headers timeout */
	struct event *deferred;          /* owned: runs deferred completion work */
	void **conn_state;               /* owned [cfg->nfilters], lazily: per-connection
	                                    filter state (http_stream_conn_state), each
	                                    freed by its filter's conn_state_free */
	uint32_t nrequests;
	bool close_after;                /* close when the current response is flushed */
	bool closing;                    /* flushing, then close */
	bool tunnel;                     /* upgrade established: raw bytes */
	bool read_paused;
	bool in_head_timer;
	bool dead;                       /* close requested while busy */
};

void *hcm_parse_config(struct cfg_ctx *c, const json_t *j, struct build_ctx *b);
void hcm_free_config(void *cfg);

#endif
