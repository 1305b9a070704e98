/* router.c - envoy.filters.http.router: route the stream to an upstream.
 *
 * Picks the route, the cluster and a host (the cluster's load balancer),
 * takes an HTTP/1.1 connection from the worker's pool, streams the request
 * (re-framed: content-length kept, otherwise chunked) and streams the
 * response back with back-pressure both ways.  The route timeout (default
 * 15 s) starts once the downstream request is complete, as in Envoy.
 * Retries, hedging and per-try timeouts arrive with the resilience work. */
#include <sys/socket.h>
#include <event2/buffer.h>
#include "proxy/conn.h"
#include "proxy/filter.h"
#include "proxy/worker.h"
#include "proxy/log.h"
#include "proxy/snapshot.h"
#include "proxy/http/stream.h"
#include "proxy/http/h1_parser.h"
#include "proxy/router/route.h"
#include "proxy/upstream/cluster.h"
#include "proxy/upstream/pool.h"
#include "proxy/upstream/original_dst.h"

#define ROUTER_TYPE "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
#define RESET_BEFORE_HEADERS "upstream connect error or disconnect/reset before headers. reset reason: "

struct router_cfg {
	bool suppress_envoy_headers;
};

struct router {
	struct http_stream *s;               /* not owned */
	const struct router_cfg *cfg;
	const struct route_entry *re;        /* in the stream's snapshot */
	const struct virtual_host *vh;
	const struct weighted_cluster *wc;
	struct cluster *cl;                  /* in the snapshot */
	struct host *host;                   /* ref */
	struct upstream_conn *uc;            /* owned while connecting/busy */
	struct pool_pending *pend;           /* queued for a connection (max_connections) */
	struct evbuffer *pending;            /* owned: body waiting for the connection */
	struct http_headers *pending_trailers; /* owned, may be NULL */
	struct event *timer;                 /* owned: route timeout */
	struct h1_scan scan;
	struct h1_head resp;
	struct h1_chunked rchunked;
	struct evbuffer *rtmp;               /* owned: scratch for response body */
	enum h1_body_kind rbody;
	uint64_t rremaining;
	uint64_t up_start_ns;
	bool connected, req_chunked, req_end, req_sent_end, head_done, resp_done;
	bool tunnel, paused_down, shut_up_wr, rq_active, chunked_init, cb_rq, need_host, failed;
	bool have_hash;                      /* hash_policy produced a hash (RING_HASH/MAGLEV) */
	uint64_t hash;
	uint64_t timeout_ms;                 /* route timeout, or from grpc-timeout */
	/* retries */
	const struct retry_policy *rp;       /* route's policy, may be NULL */
	uint32_t retry_on;                   /* policy + x-envoy-retry-on */
	uint32_t max_retries;                /* num_retries or x-envoy-max-retries */
	uint32_t attempt;                    /* 1 = first try */
	struct evbuffer *replay;             /* owned: request body kept for retries, NULL if none */
	uint32_t replay_limit;
	bool replay_overflow;                /* body outgrew the limit (or had trailers): no retry */
	bool retry_counted;                  /* this attempt holds a retry circuit-breaker slot */
	struct host *tried[8];               /* refs: hosts already tried (previous_hosts) */
	uint32_t ntried;
	struct event *try_timer;             /* owned: per-try timeout */
	struct event *backoff_timer;         /* owned: retry back-off */
	struct event *idle_timer;            /* owned: per_try_idle_timeout */
	uint64_t last_up_ms;                 /* last bytes to or from the upstream */
	struct router *next_free;            /* per-thread free list link */
};

enum fail_kind { FAIL_CONNECT, FAIL_RESET, FAIL_TIMEOUT, FAIL_STATUS };
static void send_head(struct router *r);
static void on_pool_ready(void *arg, struct upstream_conn *uc, enum pool_err err, const char *detail);
static bool retry_maybe(struct router *r, enum fail_kind kind, int status, int grpc);
static void attempt_start(struct router *r);

/* Router contexts are recycled per thread with their evbuffer, timer and
 * response-header storage (see the stream free list in the HCM). */
#define ROUTER_CACHE_MAX 256
static __thread struct router *router_cache;
static __thread unsigned router_cache_n;

/* ---- helpers --------------------------------------------------------------- */

static unsigned shard(const struct router *r)
{
	return http_stream_worker(r->s)->shard;
}

static void release_upstream(struct router *r, bool reusable)
{
	if (r->pend) {
		pool_pending_cancel(r->pend);
		r->pend = NULL;
	}
	if (!r->uc)
		return;
	struct upstream_conn *uc = r->uc;
	r->uc = NULL;
	if (uc->state == UC_BUSY && r->connected) {
		conn_setcb(uc->bev, NULL, NULL, NULL, NULL);
		pool_release(uc, reusable);
	} else {
		pool_conn_close(uc, false);
	}
}

/* The retry circuit-breaker slot is held from the first retry until the
 * request is finished. */
static void retry_slot_release(struct router *r)
{
	if (r->retry_counted) {
		__atomic_sub_fetch(&r->cl->cb_retries, 1, __ATOMIC_RELAXED);
		r->retry_counted = false;
	}
	if (r->cb_rq) {   /* the max_requests slot, held for the whole request */
		__atomic_sub_fetch(&r->cl->cb_rq, 1, __ATOMIC_RELAXED);
		r->cb_rq = false;
	}
}

static void rq_done(struct router *r, bool success)
{
	unsigned sh = shard(r);
	if (!r->rq_active)
		return;
	r->rq_active = false;
	stats_dec(r->cl->stats, sh, upstream_rq_active);
	stats_inc(r->cl->stats, sh, upstream_rq_completed);
	host_stat_add(r->host, sh, HOST_RQ_ACTIVE, -1);
	host_stat_add(r->host, sh, success ? HOST_RQ_SUCCESS : HOST_RQ_ERROR, 1);
}

/* Fail before a response started: local reply; after: reset. */
static void fail(struct router *r, int status, const char *body, const char *details)
{
	r->failed = true;
	event_del(r->timer);
	event_del(r->try_timer);
	if (r->idle_timer)
		event_del(r->idle_timer);
	release_upstream(r, false);
	rq_done(r, false);
	retry_slot_release(r);
	if (status)
		stats_code_inc(r->cl->stats, shard(r), 0, status);
	http_stream_send_local_reply(r->s, status, body, details);
}

static void write_body(struct router *r, struct evbuffer *data, bool end)
{
	struct evbuffer *out = conn_output(r->uc->bev);
	r->last_up_ms = now_ms();
	size_t n = evbuffer_get_length(data);
	stats_add(r->cl->stats, shard(r), upstream_cx_tx_bytes_total, (int64_t)n);
	if (r->req_chunked) {
		if (n)
			h1_encode_chunk(out, data);
		if (end)
			h1_encode_last_chunk(out, NULL);
	} else {
		evbuffer_add_buffer(out, data);
	}
	if (end)
		r->req_sent_end = true;
	uint32_t limit = r->cl->buffer_limit;
	if (evbuffer_get_length(out) > limit && !r->paused_down) {
		r->paused_down = true;
		conn_set_write_lowat(r->uc->bev, limit / 2);
		http_stream_pause_decoding(r->s);
	}
}

static void start_timer(struct router *r)
{
	uint64_t ms = r->timeout_ms;
	if (!ms || r->tunnel)
		return;
	worker_timer_add(http_stream_worker(r->s), r->timer, ms);
}

/* ---- upstream response ------------------------------------------------------ */

static void response_complete(struct router *r)
{
	bool reusable = r->resp.keep_alive && r->req_sent_end && r->rbody != H1_BODY_EOF;
	r->resp_done = true;
	event_del(r->timer);
	event_del(r->try_timer);
	if (r->idle_timer)
		event_del(r->idle_timer);
	rq_done(r, r->resp.status < 500);
	retry_slot_release(r);
	release_upstream(r, reusable);
}

static int read_head(struct router *r, struct evbuffer *in)
{
	unsigned flags = 0;
	size_t ml, len = evbuffer_get_length(in);
	struct http_headers *req = http_stream_request(r->s);
	const char *m = hdrs_get(req, ":method", &ml);
	struct h1_limits lim = { 96 * 1024, 200 };
	struct h1_error err = { 0, NULL };
	unsigned sh = shard(r);

	if (m && ml == 4 && !memcmp(m, "HEAD", 4))
		flags |= H1_F_REQ_HEAD;
	if (m && ml == 7 && !memcmp(m, "CONNECT", 7))
		flags |= H1_F_REQ_CONNECT;
	for (;;) {
		len = evbuffer_get_length(in);
		if (!len)
			return RM_AGAIN;
		size_t look = MIN(len, (size_t)lim.max_head_bytes + 4);
		const char *p = (const char *)evbuffer_pullup(in, (ssize_t)look);
		long n = h1_head_end(&r->scan, p, look, lim.max_head_bytes);
		if (n < 0 || (n == 0 && look > lim.max_head_bytes)) {
			stats_inc(r->cl->stats, sh, upstream_cx_protocol_error);
			fail(r, 503, RESET_BEFORE_HEADERS "protocol error", "upstream_reset_before_response_started");
			return RM_ERROR;
		}
		if (n == 0)
			return RM_AGAIN;
		hdrs_clear(&r->resp.hdrs);
		if (h1_parse_head(H1_RESPONSE, p, (size_t)n, flags, &lim, &r->resp, &err)) {
			stats_inc(r->cl->stats, sh, upstream_cx_protocol_error);
			fail(r, 503, RESET_BEFORE_HEADERS "protocol error", "upstream_reset_before_response_started");
			return RM_ERROR;
		}
		evbuffer_drain(in, (size_t)n);
		stats_add(r->cl->stats, sh, upstream_cx_rx_bytes_total, n);
		memset(&r->scan, 0, sizeof(r->scan));
		if (r->resp.status >= 100 && r->resp.status < 200 && r->resp.status != 101)
			continue;   /* 100 Continue etc.: the HCM answered the client itself */
		return RM_OK;
	}
}

static void deliver_head(struct router *r)
{
	char buf[32];
	unsigned sh = shard(r);
	int status = r->resp.status;
	bool end;

	r->head_done = true;
	event_del(r->try_timer);   /* the per-try timeout covers the wait for headers */
	if (r->attempt > 1) {
		/* a success is an answer the policy would not retry */
		const char *g = hdrs_get(&r->resp.hdrs, "grpc-status", NULL);
		if (!retry_on_status(r->retry_on, r->rp, status, g ? atoi(g) : -1))
			stats_inc(r->cl->stats, sh, upstream_rq_retry_success);
	}
	if (r->re->attempt_count_in_response) {
		snprintf(buf, sizeof(buf), "%u", r->attempt);
		hdrs_set(&r->resp.hdrs, "x-envoy-attempt-count", buf, strlen(buf));
	}
	bool connect = !!hdrs_get(http_stream_request(r->s), ":method", NULL) &&
		       hdrs_find(http_stream_request(r->s), ":path", 5, 0) < 0;
	if ((status == 101 || (connect && status >= 200 && status < 300)) &&
	    http_stream_is_upgrade(r->s)) {
		r->tunnel = true;
		if (r->timer)
			event_del(r->timer);
	}
	r->rbody = r->tunnel ? H1_BODY_EOF : r->resp.body;
	r->rremaining = r->resp.content_length;
	if (r->rbody == H1_BODY_CHUNKED) {
		h1_chunked_init(&r->rchunked, &(struct h1_limits){ 96 * 1024, 200 });
		r->chunked_init = true;
	}
	end = !r->tunnel && (r->rbody == H1_BODY_NONE ||
			     (r->rbody == H1_BODY_LENGTH && r->rremaining == 0));
	stats_code_inc(r->cl->stats, sh, 0, status);
	stats_hist_record(r->cl->stats, sh, upstream_rq_time,
			  (double)(now_ns() - r->up_start_ns) / 1e6);
	cluster_lb_observe(r->cl, http_stream_worker(r->s), r->host, (now_ns() - r->up_start_ns) / 1000);
	route_apply_response(http_stream_route_config(r->s), r->vh, r->re, r->wc, &r->resp.hdrs);
	if (!r->cfg->suppress_envoy_headers) {
		snprintf(buf, sizeof(buf), "%llu",
			 (unsigned long long)((now_ns() - r->up_start_ns) / 1000000));
		hdrs_set(&r->resp.hdrs, "x-envoy-upstream-service-time", buf, strlen(buf));
	}
	if (end)
		response_complete(r);
	http_stream_encode_headers(r->s, &r->resp.hdrs, end);
}

/* Move response body bytes downstream.  Returns false if it must stop. */
static bool deliver_body(struct router *r, struct evbuffer *in)
{
	while (!r->resp_done && evbuffer_get_length(in)) {
		size_t len = evbuffer_get_length(in);
		if (http_stream_downstream_blocked(r->s)) {
			conn_disable_read(r->uc->bev);
			return false;
		}
		stats_add(r->cl->stats, shard(r), upstream_cx_rx_bytes_total, (int64_t)len);
		if (r->rbody == H1_BODY_LENGTH) {
			size_t n = (size_t)MIN((uint64_t)len, r->rremaining);
			evbuffer_remove_buffer(in, r->rtmp, n);
			r->rremaining -= n;
			bool end = r->rremaining == 0;
			if (end)
				response_complete(r);
			http_stream_encode_data(r->s, r->rtmp, end);
			if (end)
				return false;
		} else if (r->rbody == H1_BODY_CHUNKED) {
			struct evbuffer_iovec v;
			struct h1_error err = { 0, NULL };
			size_t off = 0, dlen = 0;
			evbuffer_peek(in, -1, NULL, &v, 1);
			long n = h1_chunked_feed(&r->rchunked, v.iov_base, v.iov_len, &off, &dlen, &err);
			if (n < 0) {
				stats_inc(r->cl->stats, shard(r), upstream_cx_protocol_error);
				release_upstream(r, false);
				rq_done(r, false);
				http_stream_reset(r->s, "upstream_protocol_error");
				return false;
			}
			evbuffer_drain(in, off);
			if (dlen)
				evbuffer_remove_buffer(in, r->rtmp, dlen);
			evbuffer_drain(in, (size_t)n - off - dlen);
			if (r->rchunked.done) {
				response_complete(r);
				if (r->rchunked.trailers.n) {
					if (evbuffer_get_length(r->rtmp))
						http_stream_encode_data(r->s, r->rtmp, false);
					http_stream_encode_trailers(r->s, &r->rchunked.trailers);
				} else {
					http_stream_encode_data(r->s, r->rtmp, true);
				}
				return false;
			}
			if (dlen)
				http_stream_encode_data(r->s, r->rtmp, false);
			else if (n == 0)
				return true;
		} else {
			/* EOF-delimited body, or an upgraded tunnel */
			evbuffer_add_buffer(r->rtmp, in);
			http_stream_encode_data(r->s, r->rtmp, false);
		}
	}
	return true;
}

static void up_read(struct conn *bev, void *arg)
{
	struct router *r = arg;
	struct evbuffer *in = conn_input(bev);
	r->last_up_ms = now_ms();
	if (!r->head_done) {
		if (read_head(r, in) != RM_OK)
			return;
		cluster_outlier_report(r->cl, r->host, r->resp.status);
		if (r->retry_on) {
			const char *g = hdrs_get(&r->resp.hdrs, "grpc-status", NULL);
			if (retry_maybe(r, FAIL_STATUS, r->resp.status, g ? atoi(g) : -1))
				return;
		}
		deliver_head(r);
		if (r->resp_done || !r->uc)
			return;
	}
	deliver_body(r, in);
}

static void up_write(struct conn *bev, void *arg)
{
	struct router *r = arg;
	if (r->shut_up_wr && !evbuffer_get_length(conn_output(bev))) {
		shutdown(conn_fd(bev), SHUT_WR);
		r->shut_up_wr = false;
	}
	if (r->paused_down) {
		r->paused_down = false;
		conn_set_write_lowat(bev, 0);
		http_stream_resume_decoding(r->s);
	}
}

static void up_event(struct conn *bev, short what, void *arg)
{
	struct router *r = arg;
	unsigned sh = shard(r);
	(void)bev;
	if ((what & CONN_EOF) && r->head_done && (r->rbody == H1_BODY_EOF || r->tunnel)) {
		struct evbuffer *in = conn_input(r->uc->bev);
		if (evbuffer_get_length(in))
			evbuffer_add_buffer(r->rtmp, in);
		release_upstream(r, false);
		rq_done(r, true);
		r->resp_done = true;
		if (r->timer)
			event_del(r->timer);
		http_stream_encode_data(r->s, r->rtmp, true);
		return;
	}
	stats_inc(r->cl->stats, sh, upstream_rq_rx_reset);
	if (!r->head_done) {
		cluster_outlier_report(r->cl, r->host, 0);
		if (retry_maybe(r, FAIL_RESET, 0, -1))
			return;
		fail(r, 503, RESET_BEFORE_HEADERS "connection termination",
		     "upstream_reset_before_response_started");
		return;
	}
	release_upstream(r, false);
	rq_done(r, false);
	http_stream_reset(r->s, "upstream_reset_after_response_started");
}

static void timeout_cb(evutil_socket_t fd, short what, void *arg)
{
	struct router *r = arg;
	unsigned sh = shard(r);
	(void)fd;
	(void)what;
	stats_inc(r->cl->stats, sh, upstream_rq_timeout);
	host_stat_add(r->host, sh, HOST_RQ_TIMEOUT, 1);
	if (http_stream_response_started(r->s)) {
		release_upstream(r, false);
		rq_done(r, false);
		http_stream_reset(r->s, "upstream_response_timeout");
		return;
	}
	fail(r, 504, "upstream request timeout", "upstream_response_timeout");
}

/* A circuit breaker overflowed: 503 with x-envoy-overloaded, as Envoy. */
static void reply_overloaded(struct router *r)
{
	static const char body[] = RESET_BEFORE_HEADERS "overflow";
	struct http_headers rh;
	char len[16];
	event_del(r->timer);
	event_del(r->try_timer);
	r->failed = true;
	rq_done(r, false);
	retry_slot_release(r);
	stats_code_inc(r->cl->stats, shard(r), 0, 503);
	hdrs_init(&rh);
	snprintf(len, sizeof(len), "%zu", sizeof(body) - 1);
	hdrs_add(&rh, ":status", 7, "503", 3);
	hdrs_add(&rh, "x-envoy-overloaded", 18, "true", 4);
	hdrs_add(&rh, "content-type", 12, "text/plain", 10);
	hdrs_add(&rh, "content-length", 14, len, strlen(len));
	http_stream_encode_headers(r->s, &rh, false);
	struct evbuffer *b = evbuffer_new();
	evbuffer_add(b, body, sizeof(body) - 1);
	http_stream_encode_data(r->s, b, true);
	evbuffer_free(b);
	hdrs_free(&rh);
}

/* ---- retries ----------------------------------------------------------------- */

static void arm_try_timer(struct router *r)
{
	if (r->rp && r->rp->per_try_timeout_ms && r->req_end && r->uc && !r->head_done)
		worker_timer_add(http_stream_worker(r->s), r->try_timer, r->rp->per_try_timeout_ms);
}

static void try_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
	struct router *r = arg;
	unsigned sh = shard(r);
	(void)fd;
	(void)what;
	if (r->head_done)
		return;
	stats_inc(r->cl->stats, sh, upstream_rq_per_try_timeout);
	host_stat_add(r->host, sh, HOST_RQ_TIMEOUT, 1);
	cluster_outlier_report(r->cl, r->host, 0);
	if (retry_maybe(r, FAIL_TIMEOUT, 0, -1))
		return;
	fail(r, 504, "upstream request timeout", "upstream_per_try_timeout");
}

/* per_try_idle_timeout: no bytes to or from the upstream for that long
 * during an attempt: retried like a per-try timeout before the response,
 * a reset after it started. */
static void idle_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
	struct router *r = arg;
	uint64_t idle = r->rp->per_try_idle_timeout_ms, now = now_ms();
	unsigned sh = shard(r);
	(void)fd;
	(void)what;
	if (!r->uc || r->resp_done)
		return;
	if (now - r->last_up_ms < idle) {
		struct timeval tv = { (time_t)((r->last_up_ms + idle - now) / 1000),
				      (suseconds_t)((r->last_up_ms + idle - now) % 1000) * 1000 };
		evtimer_add(r->idle_timer, &tv);
		return;
	}
	stats_inc(r->cl->stats, sh, upstream_rq_per_try_idle_timeout);
	cluster_outlier_report(r->cl, r->host, 0);
	if (r->head_done) {
		release_upstream(r, false);
		rq_done(r, false);
		r->resp_done = true;
		http_stream_reset(r->s, "upstream_per_try_idle_timeout");
		return;
	}
	if (retry_maybe(r, FAIL_TIMEOUT, 0, -1))
		return;
	fail(r, 504, "upstream request timeout", "upstream_per_try_idle_timeout");
}

static void arm_idle_timer(struct router *r)
{
	if (!r->rp || !r->rp->per_try_idle_timeout_ms || r->tunnel)
		return;
	if (!r->idle_timer)
		r->idle_timer = evtimer_new(http_stream_worker(r->s)->base, idle_timeout_cb, r);
	r->last_up_ms = now_ms();
	worker_timer_add(http_stream_worker(r->s), r->idle_timer, r->rp->per_try_idle_timeout_ms);
}

static void backoff_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	attempt_start(arg);
}

/* End the current attempt (its connection is not reused). */
static void attempt_reset(struct router *r)
{
	event_del(r->try_timer);
	if (r->idle_timer)
		event_del(r->idle_timer);
	release_upstream(r, false);
	rq_done(r, false);
	if (r->chunked_init) {
		h1_chunked_free(&r->rchunked);
		r->chunked_init = false;
	}
	hdrs_clear(&r->resp.hdrs);
	memset(&r->scan, 0, sizeof(r->scan));
	evbuffer_drain(r->rtmp, evbuffer_get_length(r->rtmp));
	r->connected = r->req_sent_end = r->head_done = r->paused_down = false;
	host_unref(r->host);
	r->host = NULL;
}

/* A failure before the response started: retry if the policy, the attempt
 * count, the body buffer and the retry circuit breaker all allow it.
 * Returns true if a retry was scheduled (the attempt was reset). */
static bool retry_maybe(struct router *r, enum fail_kind kind, int status, int grpc)
{
	unsigned sh = shard(r);
	bool retriable;

	if (!r->retry_on || r->replay_overflow || http_stream_is_upgrade(r->s) ||
	    http_stream_response_started(r->s))
		return false;
	switch (kind) {
	case FAIL_CONNECT:
		retriable = r->retry_on & (RETRY_ON_CONNECT_FAILURE | RETRY_ON_5XX |
					   RETRY_ON_GATEWAY_ERROR | RETRY_ON_RESET);
		break;
	case FAIL_RESET:
	case FAIL_TIMEOUT:
		retriable = r->retry_on & (RETRY_ON_5XX | RETRY_ON_GATEWAY_ERROR | RETRY_ON_RESET);
		break;
	default:
		retriable = retry_on_status(r->retry_on, r->rp, status, grpc);
		break;
	}
	if (!retriable)
		return false;
	if (r->attempt > r->max_retries) {
		stats_inc(r->cl->stats, sh, upstream_rq_retry_limit_exceeded);
		return false;
	}
	if (!r->retry_counted) {
		int n = __atomic_add_fetch(&r->cl->cb_retries, 1, __ATOMIC_RELAXED);
		if ((uint32_t)n > cluster_retry_limit(r->cl)) {
			__atomic_sub_fetch(&r->cl->cb_retries, 1, __ATOMIC_RELAXED);
			stats_inc(r->cl->stats, sh, upstream_rq_retry_overflow);
			return false;
		}
		r->retry_counted = true;
	}
	if (kind == FAIL_STATUS)
		stats_code_inc(r->cl->stats, sh, 0, status);
	attempt_reset(r);
	r->attempt++;
	stats_inc(r->cl->stats, sh, upstream_rq_retry);
	stats_inc(r->cl->stats, sh, upstream_rq_retry_backoff_exponential);
	/* full jitter: uniform in [0, min(base * (2^n - 1), max)] */
	uint32_t n = r->attempt - 1;
	uint64_t cap = r->rp ? r->rp->backoff_base_ms : 25, max = r->rp ? r->rp->backoff_max_ms : 250;
	cap = n < 20 ? cap * ((1ull << n) - 1) : max;
	if (cap > max)
		cap = max;
	uint64_t delay = cap ? rand_u64() % (cap + 1) : 0;
	struct timeval tv = { (time_t)(delay / 1000), (suseconds_t)(delay % 1000) * 1000 };
	if (!r->backoff_timer)
		r->backoff_timer = evtimer_new(http_stream_worker(r->s)->base, backoff_cb, r);
	evtimer_add(r->backoff_timer, &tv);
	return true;
}

/* ---- sending the request ------------------------------------------------------ */

static bool tried_before(const struct router *r, const struct host *h)
{
	for (uint32_t i = 0; i < r->ntried; i++)
		if (r->tried[i] == h)
			return true;
	return false;
}

/* Start an attempt: pick a host (avoiding hosts already tried when the
 * previous_hosts predicate is set), take a connection. */
static void attempt_start(struct router *r)
{
	struct http_stream *s = r->s;
	struct worker *w = http_stream_worker(s);
	unsigned sh = w->shard;
	struct host *host = r->cl->odst ? original_dst_pick(r->cl, w, http_stream_downstream(s), http_stream_request(s))
					: cluster_pick_host_hash(r->cl, w, r->hash, r->have_hash);
	if (host && r->rp && r->rp->previous_hosts && !r->cl->odst) {
		/* consistent hashing would pick the same host again: reselect randomly */
		for (uint32_t k = 1; k < r->rp->host_selection_max_attempts && tried_before(r, host); k++)
			host = cluster_pick_host(r->cl, w);
	}
	if (!host) {
		stats_inc(r->cl->stats, sh, upstream_cx_none_healthy);
		fail(r, 503, "no healthy upstream", "no_healthy_upstream");
		return;
	}
	r->host = host_ref(host);
	if (r->ntried < ARRAY_SIZE(r->tried) && !tried_before(r, host))
		r->tried[r->ntried++] = host_ref(host);
	if (r->need_host)
		hdrs_set(http_stream_request(s), ":authority", host->addr_str, strlen(host->addr_str));
	r->rq_active = true;
	stats_inc(r->cl->stats, sh, upstream_rq_total);
	stats_inc(r->cl->stats, sh, upstream_rq_active);
	host_stat_add(host, sh, HOST_RQ_TOTAL, 1);
	host_stat_add(host, sh, HOST_RQ_ACTIVE, 1);
	r->up_start_ns = now_ns();
	struct upstream_conn *uc;
	struct pool_pending *pp;
	int rc = pool_get(w, r->cl, host, on_pool_ready, r, &uc, &pp);
	if (rc == RM_ERROR) {   /* max_connections and max_pending_requests both reached */
		reply_overloaded(r);
		return;
	}
	r->uc = uc;   /* connecting (or NULL while queued): cancelled by release_upstream() */
	r->pend = pp;
	arm_try_timer(r);
	if (rc == RM_OK)
		send_head(r);
}

static void send_head(struct router *r)
{
	struct http_headers *h = http_stream_request(r->s);
	struct evbuffer *out = conn_output(r->uc->bev);
	r->connected = true;
	r->uc->nrequests++;
	conn_setcb(r->uc->bev, up_read, up_write, up_event, r);
	arm_idle_timer(r);
	if (r->re->connect_terminate) {
		/* Terminate CONNECT: the TCP connection is the tunnel; answer 200
		 * ourselves and pass raw bytes both ways. */
		hdrs_clear(&r->resp.hdrs);
		hdrs_add(&r->resp.hdrs, ":status", 7, "200", 3);
		r->resp.status = 200;
		r->resp.keep_alive = false;
		conn_enable_read(r->uc->bev);
		deliver_head(r);
		if (r->pending && evbuffer_get_length(r->pending))
			evbuffer_add_buffer(conn_output(r->uc->bev), r->pending);
		return;
	}
	if (r->re->attempt_count_in_request) {
		char buf[16];
		snprintf(buf, sizeof(buf), "%u", r->attempt);
		hdrs_set(h, "x-envoy-attempt-count", buf, strlen(buf));
	}
	h1_encode_request(out, h, r->req_chunked, true, http_stream_is_upgrade(r->s));
	if (r->replay) {
		/* every attempt sends all the body received so far */
		struct evbuffer *copy = evbuffer_new();
		size_t n = evbuffer_get_length(r->replay);
		struct evbuffer_iovec v;
		if (n && evbuffer_reserve_space(copy, n, &v, 1) == 1) {
			evbuffer_copyout(r->replay, v.iov_base, n);
			v.iov_len = n;
			evbuffer_commit_space(copy, &v, 1);
		}
		if (n || r->req_end)
			write_body(r, copy, r->req_end);
		evbuffer_free(copy);
	} else if (r->pending && evbuffer_get_length(r->pending))
		write_body(r, r->pending, r->req_end && !r->pending_trailers);
	else if (r->req_end && !r->pending_trailers) {
		if (r->req_chunked)
			h1_encode_last_chunk(out, NULL);
		r->req_sent_end = true;
	}
	if (r->pending_trailers) {
		h1_encode_last_chunk(out, r->pending_trailers);
		r->req_sent_end = true;
	}
	conn_enable_read(r->uc->bev);
}

static void on_pool_ready(void *arg, struct upstream_conn *uc, enum pool_err err, const char *detail)
{
	struct router *r = arg;
	r->pend = NULL;
	if (err == POOL_E_PENDING_CONNECTING) {
		r->uc = uc;   /* left the queue; the connect result follows */
		return;
	}
	if (err) {
		r->uc = NULL;
		cluster_outlier_report(r->cl, r->host, 0);
		if (retry_maybe(r, FAIL_CONNECT, 0, -1))
			return;
		char body[160];
		snprintf(body, sizeof(body), RESET_BEFORE_HEADERS "%s", detail);
		fail(r, 503, body, "upstream_reset_before_response_started");
		return;
	}
	r->uc = uc;
	send_head(r);
}

/* ---- filter hooks --------------------------------------------------------------- */

static enum filter_status router_decode_headers(void *ctx, struct http_stream *s,
						struct http_headers *h, bool end_stream)
{
	struct router *r = ctx;
	const struct route_config *rc = http_stream_route_config(s);
	struct stats_scope *hs = http_stream_stats(s);
	struct worker *w = http_stream_worker(s);
	unsigned sh = w->shard;

	r->re = http_stream_route(s, &r->vh);   /* matched by the HCM before the filters */
	if (!r->re) {
		stats_inc(hs, sh, no_route);
		http_stream_send_local_reply(s, 404, NULL, "route_not_found");
		return FILTER_STOP;
	}
	if (r->re->kind == ROUTE_ACTION_DIRECT) {
		struct http_headers rh;
		char st[8], len[24];
		stats_inc(hs, sh, rq_direct_response);
		hdrs_init(&rh);
		snprintf(st, sizeof(st), "%u", r->re->direct_status);
		snprintf(len, sizeof(len), "%zu", r->re->direct_body_len);
		hdrs_add(&rh, ":status", 7, st, strlen(st));
		if (r->re->direct_body_len)
			hdrs_add(&rh, "content-type", 12, "text/plain", 10);
		hdrs_add(&rh, "content-length", 14, len, strlen(len));
		route_apply_response(rc, r->vh, r->re, NULL, &rh);
		if (!r->re->direct_body_len) {
			http_stream_encode_headers(s, &rh, true);
		} else {
			http_stream_encode_headers(s, &rh, false);
			struct evbuffer *b = evbuffer_new();
			evbuffer_add(b, r->re->direct_body, r->re->direct_body_len);
			http_stream_encode_data(s, b, true);
			evbuffer_free(b);
		}
		hdrs_free(&rh);
		return FILTER_STOP;
	}
	if (r->re->kind == ROUTE_ACTION_REDIRECT) {
		char loc[4096], st[8];
		struct http_headers rh;
		stats_inc(hs, sh, rq_redirect);
		if (route_redirect_location(r->re, h, false, loc, sizeof(loc)) < 0) {
			http_stream_send_local_reply(s, 500, "redirect location too long", "internal_redirect_failed");
			return FILTER_STOP;
		}
		hdrs_init(&rh);
		snprintf(st, sizeof(st), "%u", r->re->redirect_status);
		hdrs_add(&rh, ":status", 7, st, strlen(st));
		hdrs_add(&rh, "location", 8, loc, strlen(loc));
		hdrs_add(&rh, "content-length", 14, "0", 1);
		route_apply_response(rc, r->vh, r->re, NULL, &rh);
		http_stream_encode_headers(s, &rh, true);
		hdrs_free(&rh);
		return FILTER_STOP;
	}

	const char *cname = route_pick_cluster(r->re, rand_u64(), &r->wc);
	r->cl = cname ? snapshot_find_cluster(http_stream_snapshot(s), cname) : NULL;
	if (!r->cl) {
		stats_inc(hs, sh, no_cluster);
		http_stream_send_local_reply(s, 503, NULL, "cluster_not_found");
		return FILTER_STOP;
	}
	stats_inc(hs, sh, rq_total);
	/* max_requests circuit breaker: cluster-wide outstanding requests */
	if ((uint32_t)__atomic_add_fetch(&r->cl->cb_rq, 1, __ATOMIC_RELAXED) > r->cl->max_requests) {
		__atomic_sub_fetch(&r->cl->cb_rq, 1, __ATOMIC_RELAXED);
		stats_inc(r->cl->stats, sh, upstream_rq_pending_overflow);
		reply_overloaded(r);
		return FILTER_STOP;
	}
	r->cb_rq = true;
	/* RING_HASH/MAGLEV: hash the request as it came in (before rewrites). */
	r->have_hash = cluster_lb_is_hash(r->cl) &&
		       route_hash(r->re, h, http_stream_peer_ip(s), &r->hash);
	route_apply_request(rc, r->vh, r->re, r->wc, h);
	bool need_host = hdrs_find(h, ":authority", 10, 0) < 0;   /* HTTP/1.0 without Host */
	r->timeout_ms = r->re->timeout_ms;
	if (r->re->grpc_timeout_max_ms >= 0) {
		/* a grpc-timeout header bounds the request, capped by the route */
		size_t n;
		uint64_t gt;
		const char *v = hdrs_get(h, "grpc-timeout", &n);
		if (v && !grpc_timeout_parse(v, n, &gt)) {
			gt = gt > r->re->grpc_timeout_offset_ms ? gt - r->re->grpc_timeout_offset_ms : 1;
			if (r->re->grpc_timeout_max_ms && gt > (uint64_t)r->re->grpc_timeout_max_ms)
				gt = (uint64_t)r->re->grpc_timeout_max_ms;
			r->timeout_ms = gt;
		}
	}
	if (r->re->idle_timeout_ms)
		http_stream_set_idle_timeout(s, r->re->idle_timeout_ms);
	if (r->re->max_stream_duration_ms)
		http_stream_set_max_duration(s, r->re->max_stream_duration_ms);
	if (!r->cfg->suppress_envoy_headers && r->timeout_ms) {
		char buf[24];
		snprintf(buf, sizeof(buf), "%llu", (unsigned long long)r->timeout_ms);
		hdrs_set(h, "x-envoy-expected-rq-timeout-ms", buf, strlen(buf));
	}
	r->req_end = end_stream;
	r->req_chunked = !end_stream && !http_stream_is_upgrade(s) &&
			 hdrs_find(h, "content-length", 14, 0) < 0;
	r->need_host = need_host;
	/* retry policy: the route's, widened by x-envoy-retry-on / -max-retries */
	r->rp = r->re->retry;
	r->retry_on = r->rp ? r->rp->retry_on : 0;
	r->max_retries = r->rp ? r->rp->num_retries : 1;
	{
		size_t n;
		const char *v = hdrs_get(h, "x-envoy-retry-on", &n);
		if (v)
			retry_on_parse(v, n, &r->retry_on, NULL, NULL);   /* unknown tokens ignored */
		if ((v = hdrs_get(h, "x-envoy-max-retries", &n)))
			r->max_retries = (uint32_t)strtoul(v, NULL, 10);
	}
	r->attempt = 1;
	if (r->retry_on && r->max_retries && !end_stream) {
		r->replay = evbuffer_new();
		r->replay_limit = r->re->per_request_buffer_limit ? r->re->per_request_buffer_limit
								   : 1024 * 1024;
	}
	if (end_stream)
		start_timer(r);
	attempt_start(r);
	return FILTER_STOP;
}

/* Stop keeping the body for retries (it outgrew the limit, or has
 * trailers): the request is no longer retriable.  Not yet connected, the
 * copy becomes the body still to send. */
static void replay_drop(struct router *r)
{
	r->replay_overflow = true;
	if (!r->connected) {
		if (!r->pending)
			r->pending = evbuffer_new();
		evbuffer_add_buffer(r->pending, r->replay);
	}
	evbuffer_free(r->replay);
	r->replay = NULL;
}

static enum filter_status router_decode_data(void *ctx, struct http_stream *s,
					     struct evbuffer *data, bool end_stream)
{
	struct router *r = ctx;
	if (!r->cl || r->resp_done || r->failed)
		return FILTER_STOP;   /* local reply already sent */
	if (end_stream && !r->req_end) {
		r->req_end = true;
		start_timer(r);
		arm_try_timer(r);
	}
	if (r->replay) {
		/* keep a copy for retries while it fits; past the limit the
		 * request is no longer retriable */
		size_t n = evbuffer_get_length(data), have = evbuffer_get_length(r->replay);
		if (have + n > r->replay_limit) {
			replay_drop(r);
		} else {
			struct evbuffer_iovec v;
			if (n && evbuffer_reserve_space(r->replay, n, &v, 1) == 1) {
				evbuffer_copyout(data, v.iov_base, n);
				v.iov_len = n;
				evbuffer_commit_space(r->replay, &v, 1);
			}
			if (!(r->connected && r->uc)) {
				evbuffer_drain(data, n);   /* sent from the replay copy on connect */
				return FILTER_STOP;
			}
		}
	}
	if (r->connected && r->uc) {
		if (r->tunnel) {
			evbuffer_add_buffer(conn_output(r->uc->bev), data);
			if (end_stream) {
				r->shut_up_wr = true;
				up_write(r->uc->bev, r);
			}
			return FILTER_STOP;
		}
		write_body(r, data, end_stream);
		return FILTER_STOP;
	}
	if (!r->pending)
		r->pending = evbuffer_new();
	evbuffer_add_buffer(r->pending, data);
	if (evbuffer_get_length(r->pending) > r->cl->buffer_limit && !r->paused_down) {
		/* resumed once the connection is up and the buffer drains */
		r->paused_down = true;
		http_stream_pause_decoding(s);
	}
	return FILTER_STOP;
}

static enum filter_status router_decode_trailers(void *ctx, struct http_stream *s,
						 struct http_headers *t)
{
	struct router *r = ctx;
	(void)s;
	if (!r->cl || r->resp_done || r->failed)
		return FILTER_STOP;
	r->req_end = true;
	start_timer(r);
	if (r->replay)
		replay_drop(r);   /* trailers are not replayed: no retries for this request */
	if (r->connected && r->uc) {
		if (r->req_chunked)
			h1_encode_last_chunk(conn_output(r->uc->bev), t);
		r->req_sent_end = true;
		return FILTER_STOP;
	}
	r->pending_trailers = xmalloc(sizeof(*r->pending_trailers));
	hdrs_init(r->pending_trailers);
	hdrs_copy(r->pending_trailers, t);
	return FILTER_STOP;
}

static void router_on_downstream_writable(void *ctx, struct http_stream *s)
{
	struct router *r = ctx;
	(void)s;
	if (!r->uc || r->resp_done)
		return;
	conn_enable_read(r->uc->bev);
	deliver_body(r, conn_input(r->uc->bev));
}

static void router_on_reset(void *ctx, struct http_stream *s)
{
	struct router *r = ctx;
	(void)s;
	if (r->cl && !r->resp_done && !r->failed) {
		if (r->backoff_timer)
			event_del(r->backoff_timer);
		stats_inc(r->cl->stats, shard(r), upstream_rq_tx_reset);
		release_upstream(r, false);
		rq_done(r, false);
	}
}

static void *router_create(struct http_stream *s, const void *cfg)
{
	struct router *r = router_cache;
	if (r) {
		struct http_headers hdrs = r->resp.hdrs;
		struct evbuffer *rtmp = r->rtmp;
		struct event *timer = r->timer, *try_timer = r->try_timer, *backoff = r->backoff_timer;
		struct event *idle = r->idle_timer;
		router_cache = r->next_free;
		router_cache_n--;
		memset(r, 0, sizeof(*r));
		r->resp.hdrs = hdrs;
		r->rtmp = rtmp;
		r->timer = timer;
		r->try_timer = try_timer;
		r->backoff_timer = backoff;
		r->idle_timer = idle;
	} else {
		r = xcalloc(1, sizeof(*r));
		hdrs_init(&r->resp.hdrs);
		r->rtmp = evbuffer_new();
		r->timer = evtimer_new(http_stream_worker(s)->base, timeout_cb, r);
		r->try_timer = evtimer_new(http_stream_worker(s)->base, try_timeout_cb, r);
	}
	r->s = s;
	r->cfg = cfg;
	return r;
}

static void router_release(struct router *r)
{
	hdrs_free(&r->resp.hdrs);
	evbuffer_free(r->rtmp);
	event_free(r->timer);
	event_free(r->try_timer);
	if (r->backoff_timer)
		event_free(r->backoff_timer);
	if (r->idle_timer)
		event_free(r->idle_timer);
	free(r);
}

static void router_thread_exit(void)
{
	while (router_cache) {
		struct router *r = router_cache;
		router_cache = r->next_free;
		router_release(r);
	}
	router_cache_n = 0;
}

static void router_destroy(void *ctx)
{
	struct router *r = ctx;
	if (r->uc)
		release_upstream(r, false);
	if (r->host)
		rq_done(r, false);
	retry_slot_release(r);
	event_del(r->timer);
	event_del(r->try_timer);
	if (r->backoff_timer)
		event_del(r->backoff_timer);
	if (r->idle_timer)
		event_del(r->idle_timer);
	if (r->replay)
		evbuffer_free(r->replay);
	for (uint32_t i = 0; i < r->ntried; i++)
		host_unref(r->tried[i]);
	if (r->pending)
		evbuffer_free(r->pending);
	if (r->pending_trailers) {
		hdrs_free(r->pending_trailers);
		free(r->pending_trailers);
	}
	if (r->chunked_init)
		h1_chunked_free(&r->rchunked);
	host_unref(r->host);
	if (router_cache_n >= ROUTER_CACHE_MAX) {
		router_release(r);
		return;
	}
	hdrs_clear(&r->resp.hdrs);
	evbuffer_drain(r->rtmp, evbuffer_get_length(r->rtmp));
	r->next_free = router_cache;
	router_cache = r;
	router_cache_n++;
}

static void *router_parse_config(struct cfg_ctx *c, const json_t *j, struct build_ctx *b)
{
	static const char *const f[] = { "dynamic_stats", "suppress_envoy_headers",
					 "respect_expected_rq_timeout", "start_child_span", NULL };
	struct router_cfg *cfg = xcalloc(1, sizeof(*cfg));
	bool child = false;
	(void)b;
	if (j && (cfg_expect_object(c, j) || cfg_check_fields(c, j, f) ||
		  cfg_bool(c, j, "suppress_envoy_headers", &cfg->suppress_envoy_headers) ||
		  cfg_bool(c, j, "start_child_span", &child))) {
		free(cfg);
		return NULL;
	}
	return cfg;
}

const struct http_filter_ops router_filter_ops = {
	.name = "envoy.filters.http.router",
	.type_url = ROUTER_TYPE,
	.terminal = true,
	.parse_config = router_parse_config,
	.free_config = free,
	.create = router_create,
	.destroy = router_destroy,
	.decode_headers = router_decode_headers,
	.decode_data = router_decode_data,
	.decode_trailers = router_decode_trailers,
	.on_downstream_writable = router_on_downstream_writable,
	.on_reset = router_on_reset,
	.thread_exit = router_thread_exit,
};
