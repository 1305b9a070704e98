/* hcm.c - envoy.filters.network.http_connection_manager: streams, the filter
 * chain and the HTTP/1.1 downstream codec (HTTP/2 is h2_codec.c).
 *
 * HTTP/1: one request is processed at a time per connection; pipelined requests wait
 * in the input buffer (bounded: reading stops past the buffer limit) and are
 * parsed once the current response is complete, so responses stay in order.
 * Request bodies stream to the filters chunk by chunk; the response streams
 * back the same way.  Destruction is deferred to hc->deferred so that no
 * object is freed under a callback that is still running. */
#include "hcm-t.h"
#include "proxy/http/grpc.h"

#include <event2/buffer.h>
#include "proxy/conn.h"
#include <time.h>
#include <arpa/inet.h>
#include "proxy/worker.h"
#include "proxy/overload.h"
#include "proxy/log.h"
#include "proxy/snapshot.h"
#include "proxy/router/route.h"
#include "tls/tls.h"

static void hc_process(struct hcm_conn *hc);
static bool hc_detect(struct hcm_conn *hc);
static void arm_wait_timer(struct hcm_conn *hc);
static void stream_destroy(struct http_stream *s);
static void hc_schedule(struct hcm_conn *hc);

/* ---- small helpers ---------------------------------------------------------- */

static inline unsigned shard_of(const struct hcm_conn *hc)
{
	return hc->super.w->shard;
}

static void set_timer(struct event *ev, uint64_t ms)
{
	struct timeval tv = { (time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000 };
	evtimer_add(ev, &tv);
}

static void gen_uuid4(char out[37])
{
	static const char hex[] = "0123456789abcdef";
	uint64_t a = rand_u64(), b = rand_u64();
	unsigned char r[16];
	memcpy(r, &a, 8);
	memcpy(r + 8, &b, 8);
	r[6] = (r[6] & 0x0f) | 0x40;
	r[8] = (r[8] & 0x3f) | 0x80;
	char *p = out;
	for (int i = 0; i < 16; i++) {
		if (i == 4 || i == 6 || i == 8 || i == 10)
			*p++ = '-';
		*p++ = hex[r[i] >> 4];
		*p++ = hex[r[i] & 15];
	}
	*p = 0;
}

/* Cached "date" header value, refreshed once per second per thread. */
static const char *http_date(void)
{
	static __thread char buf[64];
	static __thread time_t last;
	time_t t = time(NULL);
	if (t != last) {
		struct tm tm;
		gmtime_r(&t, &tm);
		strftime(buf, sizeof(buf), "%a, %d %b %Y %H:%M:%S GMT", &tm);
		last = t;
	}
	return buf;
}

/* ---- connection lifetime ------------------------------------------------------ */

static void hc_destroy(struct downstream *d)
{
	struct hcm_conn *hc = (struct hcm_conn *)d;
	unsigned sh = d->w->shard;
	if (hc->s) {
		stats_inc(hc->cfg->stats, sh, downstream_cx_destroy_active_rq);
		if (!hc->s->done && !hc->tunnel)
			hc->s->rflags |= RF_BIT(RF_DC);   /* the client went away mid-stream */
		stream_destroy(hc->s);
	}
	if (hc->h2) {
		h2_conn_free(hc);   /* destroys the live streams first */
		hc->h2 = NULL;
	}
	if (hc->tunnel)
		stats_dec(hc->cfg->stats, sh, downstream_cx_upgrades_active);
	stats_dec(hc->cfg->stats, sh, downstream_cx_active);
	if (hc->proto == 1)
		stats_dec(hc->cfg->stats, sh, downstream_cx_http1_active);
	else if (hc->proto == 2)
		stats_dec(hc->cfg->stats, sh, downstream_cx_http2_active);
	stats_inc(hc->cfg->stats, sh, downstream_cx_destroy);
	stats_hist_record(hc->cfg->stats, sh, downstream_cx_length_ms,
			  (double)(now_ms() - d->start_ms));
	if (hc->timer)
		event_free(hc->timer);
	if (hc->deferred)
		event_free(hc->deferred);
	if (hc->conn_state) {
		for (size_t i = 0; i < hc->cfg->nfilters; i++)
			if (hc->conn_state[i])
				hc->cfg->filters[i].ops->conn_state_free(hc->conn_state[i]);
		free(hc->conn_state);
	}
}

/* Close the connection at the next safe point. */
static void hc_close(struct hcm_conn *hc, bool remote)
{
	if (hc->dead)
		return;
	hc->dead = true;
	stats_inc(hc->cfg->stats, shard_of(hc),
		  remote ? downstream_cx_destroy_remote : downstream_cx_destroy_local);
	if (hc->super.bev)
		conn_disable_read(hc->super.bev);
	hc_schedule(hc);
}

/* Close once everything written so far has been flushed. */
static void hc_close_after_flush(struct hcm_conn *hc)
{
	hc->closing = true;
	conn_disable_read(hc->super.bev);
	if (!evbuffer_get_length(conn_output(hc->super.bev)))
		hc_close(hc, false);
}

static void hc_schedule(struct hcm_conn *hc)
{
	event_active(hc->deferred, EV_TIMEOUT, 0);
}

/* ---- streams ---------------------------------------------------------------------- */

/* Streams are recycled through a per-thread free list that keeps their
 * evbuffer, timer and header storage, so a request allocates nothing in
 * the common case (STYLE.md §7). */
#define STREAM_CACHE_MAX 256
static __thread struct http_stream *stream_cache;
static __thread unsigned stream_cache_n;

static void stream_release(struct http_stream *s)
{
	hdrs_free(&s->req.hdrs);
	hdrs_free(&s->resp_hdrs);
	hdrs_free(&s->resp_trailers);
	free(s->filters);
	evbuffer_free(s->tmp);
	if (s->timer)
		event_free(s->timer);
	free(s);
}

static void hcm_thread_exit(void)
{
	while (stream_cache) {
		struct http_stream *s = stream_cache;
		stream_cache = s->next_free;
		stream_release(s);
	}
	stream_cache_n = 0;
	h2_thread_exit();
	al_thread_exit();
}

/* Envoy logs a stream when it is destroyed: everything about it is known. */
static void stream_log(struct http_stream *s)
{
	struct hcm_conn *hc = s->hc;
	const struct hcm_cfg *cfg = hc->cfg;
	struct timespec ts;
	uint64_t now = now_ns(), dur = now - s->start_ns;
	clock_gettime(CLOCK_REALTIME, &ts);
	uint64_t wall = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
	/* the peer's URI SAN and SNI come from the TLS transport socket */
	struct tls_conn *tc = hc->super.bev ? conn_tls(hc->super.bev) : NULL;
	struct al_record r = {
		.req = &s->req.hdrs,
		.resp = cfg->al_needs & AL_NEED_RESP ? &s->resp_hdrs : NULL,
		.trailers = cfg->al_needs & AL_NEED_TRAILERS ? &s->resp_trailers : NULL,
		.protocol = hc->proto == 2 ? "HTTP/2" : s->req.version_minor == 0 ? "HTTP/1.0" : "HTTP/1.1",
		.response_code = s->status,
		.details = s->details ? s->details : s->status ? "via_upstream" : NULL,
		.flags = s->rflags,
		.bytes_received = s->bytes_rx,
		.bytes_sent = s->bytes_tx,
		.start_wall_ns = wall - dur,
		.duration_ns = (int64_t)dur,
		.request_duration_ns = s->req_end_ns ? (int64_t)(s->req_end_ns - s->start_ns) : -1,
		.response_duration_ns = s->resp_start_ns ? (int64_t)(s->resp_start_ns - s->start_ns) : -1,
		.upstream_host = s->up_host[0] ? s->up_host : NULL,
		.upstream_cluster = s->up_cluster,
		.upstream_local = s->up_local.ss_family ? (const struct sockaddr *)&s->up_local : NULL,
		.upstream_failure = s->up_failure[0] ? s->up_failure : NULL,
		.downstream_remote = (const struct sockaddr *)&hc->super.peer,
		.downstream_local = (const struct sockaddr *)&hc->super.local,
		.peer_uri_san = tc ? tls_conn_peer_uri_san(tc) : NULL,
		.sni = tc ? tls_conn_sni(tc) : NULL,
		.route_name = s->route ? s->route->name : NULL,
		.connection_id = hc->conn_id,
		.attempts = s->attempts,
	};
	al_list_log(cfg->access_logs, &r, shard_of(hc));
}

/* Record the stream's span (sampled streams only; no lock, no allocation). */
static void stream_trace(struct http_stream *s)
{
	struct hcm_conn *hc = s->hc;
	struct trace_end e = {
		.req = &s->req.hdrs,
		.protocol = hc->proto == 2 ? "HTTP/2" : s->req.version_minor == 0 ? "HTTP/1.0" : "HTTP/1.1",
		.status = s->status,
		.rflags = s->rflags,
		.up_cluster = s->up_cluster,
		.up_host = s->up_host[0] ? s->up_host : NULL,
		.start_ns = s->start_ns,
	};
	trace_finish(hc->cfg->tracing, &s->trace, &e, hc->super.w->id, shard_of(hc));
}

static void stream_destroy(struct http_stream *s)
{
	struct hcm_conn *hc = s->hc;
	if (hc->cfg->access_logs)
		stream_log(s);
	if (s->trace.active)
		stream_trace(s);
	if (hc->proto == 2)
		h2_stream_detach(s);
	for (size_t i = 0; i < s->nfilters; i++)
		if (s->filters[i].ops && s->filters[i].ops->destroy)
			s->filters[i].ops->destroy(s->filters[i].ctx);
	if (s->counted_active)
		stats_dec(hc->cfg->stats, shard_of(hc), downstream_rq_active);
	/* after the filters and the access log: they may still read the
	 * route, which lives in this snapshot */
	if (s->snap_ref)
		snapshot_unref(s->snap);
	s->snap = NULL;
	s->snap_ref = false;
	s->rc = NULL;
	s->route = NULL;
	s->vh = NULL;
	h1_chunked_free(&s->chunked);
	if (hc->s == s)
		hc->s = NULL;
	if (stream_cache_n >= STREAM_CACHE_MAX) {
		stream_release(s);
		return;
	}
	hdrs_clear(&s->req.hdrs);
	hdrs_clear(&s->resp_hdrs);
	hdrs_clear(&s->resp_trailers);
	evbuffer_drain(s->tmp, evbuffer_get_length(s->tmp));
	if (s->timer)
		event_del(s->timer);
	s->next_free = stream_cache;
	stream_cache = s;
	stream_cache_n++;
}

/* The current stream is finished: account for it and move on. */
static void stream_finish(struct http_stream *s)
{
	struct hcm_conn *hc = s->hc;
	unsigned sh = shard_of(hc);
	if (s->done)
		return;
	s->done = true;
	stats_inc(hc->cfg->stats, sh, downstream_rq_completed);
	stats_hist_record(hc->cfg->stats, sh, downstream_rq_time,
			  (double)(now_ns() - s->start_ns) / 1e6);
	if (hc->proto == 2) {
		if (unlikely(overload_saturated(OL_DISABLE_KEEPALIVE)) && !hc->close_after) {
			/* GOAWAY once the streams in flight finished */
			stats_inc(hc->cfg->stats, shard_of(hc), downstream_cx_overload_disable_keepalive);
			hc->close_after = true;
		}
		/* the codec keeps what it still has to send; s goes at the next safe point */
		if (!s->queued) {
			s->queued = true;
			s->qnext = NULL;
			h2_queue_push(hc, s);
		}
	} else if (!s->req_done || s->resp_close || downstream_draining(&hc->super)) {
		hc->close_after = true;
	}
	hc_schedule(hc);
}

static void stream_timer_cb(evutil_socket_t fd, short what, void *arg);
static void stream_arm(struct http_stream *s);

static struct http_stream *stream_new(struct hcm_conn *hc)
{
	const struct hcm_cfg *cfg = hc->cfg;
	struct worker *w = hc->super.w;
	struct http_stream *s = stream_cache;

	if (s) {
		/* keep the reusable storage, reset everything else */
		struct http_headers hdrs = s->req.hdrs, rh = s->resp_hdrs, rt = s->resp_trailers;
		struct evbuffer *tmp = s->tmp;
		struct event *timer = s->timer;
		struct filter_inst *filters = s->filters;
		size_t cap = s->filters_cap;
		stream_cache = s->next_free;
		stream_cache_n--;
		memset(s, 0, sizeof(*s));
		s->req.hdrs = hdrs;
		s->resp_hdrs = rh;
		s->resp_trailers = rt;
		s->tmp = tmp;
		s->timer = timer;
		s->filters = filters;
		s->filters_cap = cap;
	} else {
		s = xcalloc(1, sizeof(*s));
		hdrs_init(&s->req.hdrs);
		hdrs_init(&s->resp_hdrs);
		hdrs_init(&s->resp_trailers);
		s->tmp = evbuffer_new();
	}
	if (s->filters_cap < cfg->nfilters) {
		s->filters = xrealloc(s->filters, cfg->nfilters * sizeof(*s->filters));
		s->filters_cap = cfg->nfilters;
	}
	memset(s->filters, 0, cfg->nfilters * sizeof(*s->filters));
	s->hc = hc;
	s->start_ns = now_ns();
	s->last_activity_ms = s->start_ns / 1000000;
	s->nfilters = 0;   /* grows as filter instances are created */
	s->idle_ms = overload_timeout(OL_TIMER_STREAM_IDLE, cfg->stream_idle_timeout_ms);
	s->max_dur_ms = cfg->max_stream_duration_ms;
	if (cfg->request_timeout_ms || s->idle_ms || cfg->max_stream_duration_ms) {
		uint64_t t = UINT64_MAX;
		if (cfg->request_timeout_ms)
			t = cfg->request_timeout_ms;
		if (s->idle_ms && s->idle_ms < t)
			t = s->idle_ms;
		if (cfg->max_stream_duration_ms && cfg->max_stream_duration_ms < t)
			t = cfg->max_stream_duration_ms;
		if (!s->timer)
			s->timer = evtimer_new(w->base, stream_timer_cb, s);
		worker_timer_add(w, s->timer, t);
	}
	return s;
}

/* ---- entry points for the codecs (hcm-t.h) ---------------------------------------- */

struct http_stream *hcm_stream_new(struct hcm_conn *hc) { return stream_new(hc); }
void hcm_stream_destroy(struct http_stream *s) { stream_destroy(s); }
void hcm_stream_finish(struct http_stream *s) { stream_finish(s); }
void hcm_schedule(struct hcm_conn *hc) { hc_schedule(hc); }
void hcm_close(struct hcm_conn *hc, bool remote) { hc_close(hc, remote); }
void hcm_close_after_flush(struct hcm_conn *hc) { hc_close_after_flush(hc); }

/* HTTP/2: no stream is live; arm the connection idle timer. */
void hcm_arm_idle(struct hcm_conn *hc)
{
	if (hc->cfg->idle_timeout_ms)
		set_timer(hc->timer, overload_timeout(OL_TIMER_CX_IDLE, hc->cfg->idle_timeout_ms));
}

/* ---- filter chain: decode ------------------------------------------------------- */

/* Run decode_headers from filter s->decode_next on.  A non-terminal filter
 * returning STOP holds the headers (and leaves the body unread in the
 * socket buffer) until it calls http_stream_continue_decoding(). */
static void run_decode_headers(struct http_stream *s, bool end_stream)
{
	s->headers_end = end_stream;
	for (size_t i = s->decode_next; i < s->nfilters && !s->done; i++) {
		const struct http_filter_ops *ops = s->filters[i].ops;
		s->decode_next = (uint32_t)i + 1;
		if (ops->decode_headers &&
		    ops->decode_headers(s->filters[i].ctx, s, &s->req.hdrs, end_stream) == FILTER_STOP) {
			if (!ops->terminal && !s->done)
				s->headers_held = true;
			return;
		}
	}
}

void http_stream_continue_decoding(struct http_stream *s)
{
	if (!s->headers_held || s->done)
		return;
	s->headers_held = false;
	run_decode_headers(s, s->headers_end);
	if (!s->headers_held) {
		if (s->hc->proto == 2)
			h2_stream_resume(s);
		hc_schedule(s->hc);   /* read the body, outside the caller's stack */
	}
}

static void run_decode_data(struct http_stream *s, struct evbuffer *data, bool end_stream)
{
	s->last_activity_ms = now_ms();
	s->bytes_rx += evbuffer_get_length(data);
	if (end_stream)
		s->req_end_ns = now_ns();
	for (size_t i = 0; i < s->nfilters && !s->done; i++) {
		const struct http_filter_ops *ops = s->filters[i].ops;
		if (ops->decode_data && ops->decode_data(s->filters[i].ctx, s, data, end_stream) == FILTER_STOP)
			break;
	}
	evbuffer_drain(data, evbuffer_get_length(data));
}

static void run_decode_trailers(struct http_stream *s, struct http_headers *t)
{
	s->req_end_ns = now_ns();
	for (size_t i = 0; i < s->nfilters && !s->done; i++) {
		const struct http_filter_ops *ops = s->filters[i].ops;
		if (ops->decode_trailers && ops->decode_trailers(s->filters[i].ctx, s, t) == FILTER_STOP)
			return;
	}
}

void hcm_run_decode_data(struct http_stream *s, struct evbuffer *d, bool end) { run_decode_data(s, d, end); }
void hcm_run_decode_trailers(struct http_stream *s, struct http_headers *t) { run_decode_trailers(s, t); }

/* ---- stream API for filters ------------------------------------------------------- */

struct worker *http_stream_worker(const struct http_stream *s) { return s->hc->super.w; }

void http_stream_set_max_duration(struct http_stream *s, uint64_t ms)
{
	s->max_dur_ms = ms;
	if (!s->upgrade)
		stream_arm(s);
}

void http_stream_set_idle_timeout(struct http_stream *s, uint64_t ms)
{
	s->idle_ms = ms;
	if (!s->upgrade)
		stream_arm(s);
}
struct snapshot *http_stream_snapshot(const struct http_stream *s)
{
	return s->snap ? s->snap : s->hc->super.snap;
}
const struct route_config *http_stream_route_config(const struct http_stream *s)
{
	return s->rc ? s->rc : s->hc->cfg->rc;
}
struct stats_scope *http_stream_stats(const struct http_stream *s) { return s->hc->cfg->stats; }
struct http_headers *http_stream_request(struct http_stream *s) { return &s->req.hdrs; }
bool http_stream_is_upgrade(const struct http_stream *s) { return s->upgrade; }
bool http_stream_is_http2(const struct http_stream *s) { return s->hc->h2 != NULL; }
const char *http_stream_peer_ip(const struct http_stream *s) { return s->hc->super.peer_ip; }
void http_stream_addresses(const struct http_stream *s, const struct sockaddr **peer,
			   const struct sockaddr **local)
{
	*peer = (const struct sockaddr *)&s->hc->super.peer;
	*local = (const struct sockaddr *)&s->hc->super.local;
}
const struct downstream *http_stream_downstream(const struct http_stream *s) { return &s->hc->super; }
uint64_t http_stream_start_ns(const struct http_stream *s) { return s->start_ns; }
bool http_stream_response_started(const struct http_stream *s) { return s->resp_started; }

void http_stream_set_response_flag(struct http_stream *s, enum response_flag f)
{
	s->rflags |= RF_BIT(f);
}

bool http_stream_has_response_flag(const struct http_stream *s, enum response_flag f)
{
	return (s->rflags & RF_BIT(f)) != 0;
}

void http_stream_set_upstream_cluster(struct http_stream *s, const char *cluster)
{
	s->up_cluster = cluster;
}

void http_stream_set_upstream_host(struct http_stream *s, const char *host)
{
	s->attempts++;
	trace_upstream_start(&s->trace);
	/* every request: a plain copy (snprintf cost ~600 instructions) */
	size_t n = host ? strnlen(host, sizeof(s->up_host) - 1) : 0;
	if (n)
		memcpy(s->up_host, host, n);
	s->up_host[n] = '\0';
}

void http_stream_set_upstream_fd(struct http_stream *s, int fd)
{
	socklen_t len = sizeof(s->up_local);
	if (!(s->hc->cfg->al_needs & AL_NEED_UP_LOCAL) ||
	    getsockname(fd, (struct sockaddr *)&s->up_local, &len))
		s->up_local.ss_family = 0;
}

void http_stream_set_upstream_failure(struct http_stream *s, const char *reason)
{
	snprintf(s->up_failure, sizeof(s->up_failure), "%s", reason ? reason : "");
}
bool http_stream_downstream_blocked(const struct http_stream *s) { return s->blocked || s->encode_hold; }
bool http_stream_output_blocked(const struct http_stream *s) { return s->blocked; }

const struct route_entry *http_stream_route(const struct http_stream *s,
					    const struct virtual_host **vh_out)
{
	if (vh_out)
		*vh_out = s->vh;
	return s->route;
}

const void *http_stream_per_route_config(const struct http_stream *s, const void *filter_cfg)
{
	const struct hcm_cfg *cfg = s->hc->cfg;
	const struct route_filter_cfg *pf = s->route ? s->route->filter_cfgs : NULL;
	if (!pf)
		return NULL;
	for (size_t i = 0; i < cfg->nfilters; i++)
		if (cfg->filters[i].cfg == filter_cfg)
			return pf[i].cfg;
	return NULL;
}

void **http_stream_conn_state(struct http_stream *s, const void *filter_cfg)
{
	struct hcm_conn *hc = s->hc;
	const struct hcm_cfg *cfg = hc->cfg;
	for (size_t i = 0; i < cfg->nfilters; i++) {
		if (cfg->filters[i].cfg != filter_cfg)
			continue;
		if (!cfg->filters[i].ops->conn_state_free)
			die("filter %s keeps connection state without conn_state_free",
			    cfg->filters[i].ops->name);
		if (!hc->conn_state)
			hc->conn_state = xcalloc(cfg->nfilters, sizeof(*hc->conn_state));
		return &hc->conn_state[i];
	}
	die("http_stream_conn_state: unknown filter config");
}

void http_stream_pause_decoding(struct http_stream *s)
{
	s->paused = true;
	/* HTTP/2: the stream's window stops opening; other streams go on */
	if (s->hc->proto != 2)
		conn_disable_read(s->hc->super.bev);
}

void http_stream_resume_decoding(struct http_stream *s)
{
	if (!s->paused)
		return;
	s->paused = false;
	if (s->hc->proto == 2)
		h2_stream_resume(s);
	hc_schedule(s->hc);   /* process buffered input outside the caller's stack */
}

static void check_blocked(struct http_stream *s)
{
	struct hcm_conn *hc = s->hc;
	struct evbuffer *out = conn_output(hc->super.bev);
	uint32_t limit = hc->super.lcfg->buffer_limit;
	if (evbuffer_get_length(out) > limit) {
		s->blocked = true;
		conn_set_write_lowat(hc->super.bev, limit / 2);
	}
}

/* Codec-neutral part of the response head: the filters' encode_headers
 * hooks, then Envoy's server / date / x-request-id handling. */
int hcm_response_prepare(struct http_stream *s, struct http_headers *h, bool end_stream)
{
	const struct hcm_cfg *cfg = s->hc->cfg;
	const char *st = hdrs_get(h, ":status", NULL);
	int status = st ? atoi(st) : 500;

	s->resp_started = true;
	s->status = status;
	s->last_activity_ms = now_ms();
	s->resp_start_ns = now_ns();
	for (size_t i = s->nfilters; i-- > 0;) {
		const struct http_filter_ops *ops = s->filters[i].ops;
		if (ops->encode_headers)
			ops->encode_headers(s->filters[i].ctx, s, h, end_stream);
	}
	/* Envoy's response header handling. */
	if (cfg->server_mode == SERVER_HDR_OVERWRITE)
		hdrs_set(h, "server", cfg->server_name, strlen(cfg->server_name));
	else if (cfg->server_mode == SERVER_HDR_APPEND_IF_ABSENT && hdrs_find(h, "server", 6, 0) < 0)
		hdrs_add(h, "server", 6, cfg->server_name, strlen(cfg->server_name));
	if (hdrs_find(h, "date", 4, 0) < 0) {
		const char *d = http_date();
		hdrs_add(h, "date", 4, d, strlen(d));
	}
	if (cfg->always_set_request_id_in_response) {
		size_t n;
		const char *rid = hdrs_get(&s->req.hdrs, "x-request-id", &n);
		if (rid)
			hdrs_set(h, "x-request-id", rid, n);
	}
	if (cfg->al_needs & AL_NEED_RESP)
		hdrs_copy(&s->resp_hdrs, h);   /* for %RESP(...)%: the codec consumes h */
	return status;
}

void http_stream_encode_headers(struct http_stream *s, struct http_headers *h, bool end_stream)
{
	struct hcm_conn *hc = s->hc;
	const struct hcm_cfg *cfg = hc->cfg;
	struct evbuffer *out = conn_output(hc->super.bev);
	bool upgrade = false;

	if (s->resp_started || hc->dead)
		return;
	if (hc->proto == 2) {
		h2_encode_headers(s, h, end_stream);
		return;
	}
	int status = hcm_response_prepare(s, h, end_stream);
	bool connect_ok = s->upgrade && s->req.connect && status >= 200 && status < 300;
	if ((status == 101 && s->upgrade) || connect_ok)
		upgrade = true;
	bool has_len = hdrs_find(h, "content-length", 14, 0) >= 0;
	if (end_stream && !has_len && status != 204 && status != 304 && !(status < 200) && !s->is_head) {
		hdrs_add(h, "content-length", 14, "0", 1);
		has_len = true;
	}
	if (connect_ok)
		hdrs_del(h, "content-length");   /* a 2xx to CONNECT has no body: tunnel */
	s->resp_chunked = !end_stream && !has_len && !upgrade && status >= 200 && status != 204 &&
			  status != 304 && !s->is_head && s->req.version_minor >= 1;
	bool close = hc->close_after || hc->closing || downstream_draining(&hc->super) || !s->req.keep_alive;
	if (!close && unlikely(overload_saturated(OL_DISABLE_KEEPALIVE))) {
		stats_inc(cfg->stats, shard_of(hc), downstream_cx_overload_disable_keepalive);
		close = true;
	}
	if (!end_stream && !has_len && !s->resp_chunked && !upgrade && !s->is_head &&
	    status >= 200 && status != 204 && status != 304)
		close = true;   /* HTTP/1.0 client: body delimited by close */
	s->resp_close = close;
	if (connect_ok)
		close = false;
	h1_encode_response(out, h, s->req.version_minor, s->resp_chunked, !close,
			   upgrade && !connect_ok);
	hdrs_clear(h);
	stats_code_inc(cfg->stats, shard_of(hc), 0, status);
	if (upgrade) {
		hc->tunnel = true;
		stats_inc(cfg->stats, shard_of(hc), downstream_cx_upgrades_total);
		stats_inc(cfg->stats, shard_of(hc), downstream_cx_upgrades_active);
		if (s->timer)
			event_del(s->timer);
		/* bytes that arrived after the upgrade request belong to the tunnel */
		hc_schedule(hc);
		return;
	}
	if (end_stream) {
		s->resp_done = true;
		stream_finish(s);
	}
	check_blocked(s);
}

/* Position of the filter whose per-stream context is ctx. */
static size_t filter_index(const struct http_stream *s, const void *ctx)
{
	for (size_t i = 0; i < s->nfilters; i++)
		if (s->filters[i].ctx == ctx)
			return i;
	die("http stream: unknown filter context");
}

/* Run the encode_data hooks of filters [0, start) (in reverse order), then
 * write.  A hook returning STOP has taken the data: nothing more happens. */
static void encode_data_from(struct http_stream *s, size_t start, struct evbuffer *data,
			     bool end_stream)
{
	struct hcm_conn *hc = s->hc;
	struct evbuffer *out = conn_output(hc->super.bev);
	size_t n = evbuffer_get_length(data);

	if (hc->dead || s->resp_done) {
		evbuffer_drain(data, n);
		return;
	}
	s->last_activity_ms = now_ms();
	for (size_t i = start; i-- > 0;) {
		const struct http_filter_ops *ops = s->filters[i].ops;
		if (ops->encode_data && ops->encode_data(s->filters[i].ctx, s, data, end_stream) ==
					    FILTER_STOP) {
			evbuffer_drain(data, evbuffer_get_length(data));   /* contract: taken */
			return;
		}
	}
	n = evbuffer_get_length(data);
	s->bytes_tx += n;
	if (hc->proto == 2) {
		h2_encode_data(s, data, end_stream);
		return;
	}
	stats_add(hc->cfg->stats, shard_of(hc), downstream_cx_tx_bytes_total, (int64_t)n);
	if (s->is_head) {
		evbuffer_drain(data, n);
	} else if (s->resp_chunked) {
		if (n)
			h1_encode_chunk(out, data);
		if (end_stream)
			h1_encode_last_chunk(out, NULL);
	} else {
		evbuffer_add_buffer(out, data);
	}
	if (end_stream) {
		s->resp_done = true;
		if (hc->tunnel)
			hc_close_after_flush(hc);
		else
			stream_finish(s);
	}
	check_blocked(s);
}

void http_stream_encode_data(struct http_stream *s, struct evbuffer *data, bool end_stream)
{
	encode_data_from(s, s->nfilters, data, end_stream);
}

void http_stream_encode_data_from(struct http_stream *s, const void *ctx, struct evbuffer *data,
				  bool end_stream)
{
	encode_data_from(s, filter_index(s, ctx), data, end_stream);
}

static void encode_trailers_from(struct http_stream *s, size_t start, struct http_headers *t)
{
	struct hcm_conn *hc = s->hc;
	if (hc->dead || s->resp_done)
		return;
	for (size_t i = start; i-- > 0;) {
		const struct http_filter_ops *ops = s->filters[i].ops;
		if (ops->encode_trailers &&
		    ops->encode_trailers(s->filters[i].ctx, s, t) == FILTER_STOP)
			return;
	}
	if (hc->cfg->al_needs & AL_NEED_TRAILERS)
		hdrs_copy(&s->resp_trailers, t);
	if (hc->proto == 2) {
		h2_encode_trailers(s, t);
		return;
	}
	if (s->resp_chunked)
		h1_encode_last_chunk(conn_output(hc->super.bev), t);
	s->resp_done = true;
	stream_finish(s);
}

void http_stream_encode_trailers(struct http_stream *s, struct http_headers *t)
{
	encode_trailers_from(s, s->nfilters, t);
}

void http_stream_encode_trailers_from(struct http_stream *s, const void *ctx,
				      struct http_headers *t)
{
	encode_trailers_from(s, filter_index(s, ctx), t);
}

void http_stream_set_encode_hold(struct http_stream *s, bool hold)
{
	if (s->encode_hold == hold)
		return;
	s->encode_hold = hold;
	if (hold || s->blocked || s->hc->dead || s->resp_done)
		return;
	/* the source may produce again (as when the socket drains) */
	for (size_t i = 0; i < s->nfilters; i++)
		if (s->filters[i].ops->on_downstream_writable)
			s->filters[i].ops->on_downstream_writable(s->filters[i].ctx, s);
}

void http_stream_reset(struct http_stream *s, const char *details)
{
	struct hcm_conn *hc = s->hc;
	s->details = details;
	if (!s->rflags)
		s->rflags |= RF_BIT(RF_LR);   /* a reset no other cause claimed */
	stats_inc(hc->cfg->stats, shard_of(hc), downstream_rq_tx_reset);
	if (hc->proto == 2) {
		h2_reset_stream(s);   /* RST_STREAM; the connection and other streams go on */
		if (!s->done) {
			s->resp_done = true;
			stream_finish(s);
		}
		return;
	}
	if (!s->done) {
		s->done = true;
		stats_inc(hc->cfg->stats, shard_of(hc), downstream_rq_completed);
	}
	hc_close(hc, false);
}

/* grpc-message is percent-encoded (gRPC over HTTP/2 spec): bytes outside
 * 0x20..0x7e and '%' become %XX. */
static void grpc_message_add(struct http_headers *h, const char *msg)
{
	size_t n = strlen(msg), o = 0;
	char buf[512];
	for (size_t i = 0; i < n && o + 3 < sizeof(buf); i++) {
		unsigned char ch = (unsigned char)msg[i];
		if (ch < 0x20 || ch > 0x7e || ch == '%') {
			static const char hex[] = "0123456789ABCDEF";
			buf[o++] = '%';
			buf[o++] = hex[ch >> 4];
			buf[o++] = hex[ch & 15];
		} else {
			buf[o++] = (char)ch;
		}
	}
	hdrs_add(h, "grpc-message", 12, buf, o);
}

void http_stream_send_local_reply(struct http_stream *s, int status, const char *body,
				  const char *details)
{
	http_stream_send_local_reply_grpc(s, status, -1, body, details);
}

void http_stream_send_local_reply_grpc(struct http_stream *s, int status, int grpc_status,
				       const char *body, const char *details)
{
	struct http_headers h;
	char st[8], len[24];
	size_t blen = body ? strlen(body) : 0;

	s->details = details;
	if (s->resp_started) {
		stats_inc(s->hc->cfg->stats, shard_of(s->hc), rq_reset_after_downstream_response_started);
		http_stream_reset(s, details);
		return;
	}
	hdrs_init(&h);
	if (grpc_is_request(&s->req.hdrs)) {
		/* Trailers-only gRPC response (Envoy's local reply for gRPC). */
		snprintf(st, sizeof(st), "%d", grpc_status >= 0 ? grpc_status :
					       grpc_status_from_http(status));
		hdrs_add(&h, ":status", 7, "200", 3);
		hdrs_add(&h, "content-type", 12, "application/grpc", 16);
		hdrs_add(&h, "grpc-status", 11, st, strlen(st));
		if (blen)
			grpc_message_add(&h, body);
		http_stream_encode_headers(s, &h, true);
		hdrs_free(&h);
		return;
	}
	snprintf(st, sizeof(st), "%d", status);
	snprintf(len, sizeof(len), "%zu", blen);
	hdrs_add(&h, ":status", 7, st, strlen(st));
	if (blen)
		hdrs_add(&h, "content-type", 12, "text/plain", 10);
	hdrs_add(&h, "content-length", 14, len, strlen(len));
	if (!blen) {
		http_stream_encode_headers(s, &h, true);
	} else {
		http_stream_encode_headers(s, &h, false);
		struct evbuffer *b = evbuffer_new();
		evbuffer_add(b, body, blen);
		http_stream_encode_data(s, b, true);
		evbuffer_free(b);
	}
	hdrs_free(&h);
}

/* A reply for a request the codec rejected: no stream/filters involved. */
static void hc_protocol_error(struct hcm_conn *hc, int status, const char *reason)
{
	struct evbuffer *out = conn_output(hc->super.bev);
	unsigned sh = shard_of(hc);
	stats_inc(hc->cfg->stats, sh, downstream_cx_protocol_error);
	stats_code_inc(hc->cfg->stats, sh, 0, status);
	if (status == 413)
		stats_inc(hc->cfg->stats, sh, downstream_rq_too_large);
	log_debug("downstream protocol error from %s: %d %s", hc->super.peer_ip, status, reason);
	evbuffer_add_printf(out,
			    "HTTP/1.1 %d %s\r\ncontent-length: %zu\r\ncontent-type: text/plain\r\n"
			    "date: %s\r\nserver: %s\r\nconnection: close\r\n\r\n%s",
			    status, http_reason(status), strlen(reason), http_date(),
			    hc->cfg->server_name, reason);
	if (hc->s) {
		hc->s->done = true;   /* the codec aborted it */
		hc->s->status = status;
		hc->s->details = reason;
		hc->s->rflags |= RF_BIT(RF_DPE);
		stream_destroy(hc->s);
	}
	hc_close_after_flush(hc);
}

/* ---- timers ----------------------------------------------------------------------- */

static void stream_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct http_stream *s = arg;
	struct hcm_conn *hc = s->hc;
	const struct hcm_cfg *cfg = hc->cfg;
	uint64_t now = now_ms(), start = s->start_ns / 1000000;
	(void)fd;
	(void)what;
	if (s->max_dur_ms && now - start >= s->max_dur_ms) {
		s->rflags |= RF_BIT(RF_DT);
		http_stream_send_local_reply(s, 408, "downstream duration timeout", "max_duration_timeout");
		return;
	}
	if (cfg->request_timeout_ms && !s->req_done && now - start >= cfg->request_timeout_ms) {
		stats_inc(cfg->stats, shard_of(hc), downstream_rq_timeout);
		http_stream_send_local_reply(s, 408, "request timeout", "request_overall_timeout");
		return;
	}
	if (s->idle_ms && now - s->last_activity_ms >= s->idle_ms) {
		stats_inc(cfg->stats, shard_of(hc), downstream_rq_idle_timeout);
		s->rflags |= RF_BIT(RF_SI);
		http_stream_send_local_reply(s, 408, "stream timeout", "stream_idle_timeout");
		return;
	}
	stream_arm(s);
}

/* Arm the stream timer for the nearest remaining deadline (none: disarm). */
static void stream_arm(struct http_stream *s)
{
	const struct hcm_cfg *cfg = s->hc->cfg;
	uint64_t now = now_ms(), start = s->start_ns / 1000000, next = UINT64_MAX;
	if (s->max_dur_ms)
		next = MIN(next, start + s->max_dur_ms > now ? start + s->max_dur_ms - now : 1);
	if (cfg->request_timeout_ms && !s->req_done)
		next = MIN(next, start + cfg->request_timeout_ms > now ?
				 start + cfg->request_timeout_ms - now : 1);
	if (s->idle_ms)
		next = MIN(next, s->last_activity_ms + s->idle_ms > now ?
				 s->last_activity_ms + s->idle_ms - now : 1);
	if (next == UINT64_MAX) {
		if (s->timer)
			event_del(s->timer);
		return;
	}
	if (!s->timer)
		s->timer = evtimer_new(s->hc->super.w->base, stream_timer_cb, s);
	set_timer(s->timer, next ? next : 1);
}

static void hc_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct hcm_conn *hc = arg;
	(void)fd;
	(void)what;
	if (hc->s)
		return;
	if (hc->proto == 2) {
		if (hc->closing || hc->dead) {
			hc_close(hc, false);   /* a GOAWAY the peer never read: give up */
			return;
		}
		if (!hcm_h2_idle(hc))
			return;
		stats_inc(hc->cfg->stats, shard_of(hc), downstream_cx_idle_timeout);
		h2_conn_drain(hc);   /* GOAWAY, then close */
		return;
	}
	if (hc->in_head_timer) {
		stats_inc(hc->cfg->stats, shard_of(hc), downstream_rq_header_timeout);
		hc_protocol_error(hc, 408, "request header timeout");
		return;
	}
	stats_inc(hc->cfg->stats, shard_of(hc), downstream_cx_idle_timeout);
	hc_close(hc, false);
}

static void arm_wait_timer(struct hcm_conn *hc)
{
	size_t buffered = evbuffer_get_length(conn_input(hc->super.bev));
	if (buffered && hc->cfg->request_headers_timeout_ms) {
		if (!hc->in_head_timer) {
			hc->in_head_timer = true;
			set_timer(hc->timer, hc->cfg->request_headers_timeout_ms);
		}
		return;
	}
	hc->in_head_timer = false;
	if (hc->cfg->idle_timeout_ms && !buffered)
		set_timer(hc->timer, overload_timeout(OL_TIMER_CX_IDLE, hc->cfg->idle_timeout_ms));
	else
		event_del(hc->timer);
}

/* ---- request parsing ----------------------------------------------------------------- */

static bool cidr_match(const struct hcm_cidr *c, const uint8_t *a)
{
	unsigned bits = c->prefix_len, full = bits / 8, rest = bits % 8;
	if (memcmp(c->addr, a, full))
		return false;
	return !rest || ((c->addr[full] ^ a[full]) & (0xffu << (8 - rest)) & 0xff) == 0;
}

/* Is the downstream peer internal (internal_address_config)?  Without that
 * config, Envoy's default: loopback and RFC 1918 / unique-local addresses. */
bool hcm_peer_internal(const struct hcm_cfg *cfg, const struct sockaddr *sa)
{
	uint8_t a[16];
	int fam = sa->sa_family;
	if (fam == AF_INET) {
		memcpy(a, &((const struct sockaddr_in *)(const void *)sa)->sin_addr, 4);
	} else if (fam == AF_INET6) {
		memcpy(a, &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr, 16);
		if (!memcmp(a, "\0\0\0\0\0\0\0\0\0\0\xff\xff", 12)) {   /* v4-mapped */
			memmove(a, a + 12, 4);
			fam = AF_INET;
		}
	} else {
		return fam == AF_UNIX;
	}
	if (cfg->internal_configured) {
		for (size_t i = 0; i < cfg->ninternal; i++)
			if (cfg->internal[i].family == fam && cidr_match(&cfg->internal[i], a))
				return true;
		return false;
	}
	if (fam == AF_INET)
		return a[0] == 127 || a[0] == 10 || (a[0] == 172 && (a[1] & 0xf0) == 16) ||
		       (a[0] == 192 && a[1] == 168);
	static const uint8_t lo6[16] = { [15] = 1 };
	return !memcmp(a, lo6, 16) || (a[0] & 0xfe) == 0xfc;
}

static void prepare_request(struct hcm_conn *hc, struct http_stream *s)
{
	const struct hcm_cfg *cfg = hc->cfg;
	struct http_headers *h = &s->req.hdrs;
	size_t n;

	const char *fwd_proto = conn_is_tls(hc->super.bev) ? "https" : "http";
	hdrs_set(h, ":scheme", "http", 4);
	/* x-forwarded-for / x-forwarded-proto */
	if (cfg->use_remote_address) {
		const char *xff = hdrs_get(h, "x-forwarded-for", &n);
		const char *ip = hc->super.peer_ip;
		if (xff) {
			char *v = xasprintf("%.*s,%s", (int)n, xff, ip);
			hdrs_set(h, "x-forwarded-for", v, strlen(v));
			free(v);
		} else {
			hdrs_add(h, "x-forwarded-for", 15, ip, strlen(ip));
		}
		hdrs_set(h, "x-forwarded-proto", fwd_proto, strlen(fwd_proto));
	} else if (hdrs_find(h, "x-forwarded-proto", 17, 0) < 0) {
		hdrs_add(h, "x-forwarded-proto", 17, fwd_proto, strlen(fwd_proto));
	}
	hcm_tls_request_headers(hc, h);   /* :scheme https, x-forwarded-client-cert */
	/* x-request-id, as Envoy's ConnectionManagerUtility: an edge request
	 * (use_remote_address and a peer that is not internal) gets a new id
	 * unless preserve_external_request_id; any request without one gets one. */
	if (cfg->generate_request_id) {
		bool have = hdrs_find(h, "x-request-id", 12, 0) >= 0;
		bool edge = cfg->use_remote_address &&
			    !hcm_peer_internal(cfg, (const struct sockaddr *)&hc->super.peer);
		if (!have || (edge && !cfg->preserve_external_request_id)) {
			char id[37];
			gen_uuid4(id);
			hdrs_set(h, "x-request-id", id, 36);
		}
	}
	if (s->req.expect_continue) {
		if (hc->cfg->proxy_100_continue && s->body != H1_BODY_NONE) {
			/* the header goes upstream; its 100 comes back through
			 * http_stream_encode_100_continue */
			s->expect_100 = true;
		} else {
			hdrs_del(h, "expect");
			if (s->body != H1_BODY_NONE)
				evbuffer_add(conn_output(hc->super.bev),
					     "HTTP/1.1 100 Continue\r\n\r\n", 25);
		}
	}
}

void http_stream_encode_100_continue(struct http_stream *s)
{
	if (!s->expect_100 || s->sent_100 || s->resp_started || s->done || s->hc->dead)
		return;
	s->sent_100 = true;
	if (s->hc->proto == 2) {
		h2_encode_100_continue(s);
		return;
	}
	evbuffer_add(conn_output(s->hc->super.bev), "HTTP/1.1 100 Continue\r\n\r\n", 25);
}

bool hcm_upgrade_type_allowed(const struct hcm_cfg *cfg, const char *type, size_t n)
{
	for (size_t i = 0; i < cfg->nupgrades; i++)
		if (strlen(cfg->upgrades[i]) == n && mem_ieq(cfg->upgrades[i], type, n))
			return true;
	return false;
}

static bool upgrade_allowed(const struct hcm_cfg *cfg, const struct http_headers *h)
{
	size_t n;
	const char *u = hdrs_get(h, "upgrade", &n);
	return u && hcm_upgrade_type_allowed(cfg, u, n);
}

/* Is chain filter i on for this route?  The most specific
 * typed_per_filter_config decides (FilterConfig disabled: off; any other
 * entry: on); without one, http_filters[i].disabled does. */
static bool filter_enabled(const struct hcm_cfg *cfg, const struct route_entry *re, size_t i)
{
	const struct route_filter_cfg *pf = re && re->filter_cfgs ? &re->filter_cfgs[i] : NULL;
	if (pf && pf->state != ROUTE_FILTER_UNSET)
		return pf->state == ROUTE_FILTER_ENABLED;
	return !cfg->filters[i].disabled;
}

/* Try to parse the next request head.  Returns true if a stream started. */
static bool hc_parse_head(struct hcm_conn *hc)
{
	struct evbuffer *in = conn_input(hc->super.bev);
	const struct hcm_cfg *cfg = hc->cfg;
	size_t len = evbuffer_get_length(in);
	uint32_t max = cfg->limits.max_head_bytes;
	struct h1_error err = { 0, NULL };
	unsigned sh = shard_of(hc);

	if (!len)
		return false;
	size_t look = MIN(len, (size_t)max + 4);
	const char *p = (const char *)evbuffer_pullup(in, (ssize_t)look);
	long r = h1_head_end(&hc->scan, p, look, max);
	if (r < 0 || (r == 0 && look > max)) {
		hc_protocol_error(hc, 431, "headers_too_large");
		return false;
	}
	if (r == 0)
		return false;

	struct http_stream *s = stream_new(hc);
	hc->s = s;
	memset(&hc->scan, 0, sizeof(hc->scan));
	event_del(hc->timer);
	hc->in_head_timer = false;
	if (h1_parse_head(H1_REQUEST, p, (size_t)r, 0, &cfg->limits, &s->req, &err)) {
		evbuffer_drain(in, (size_t)r);
		hc_protocol_error(hc, err.status ? err.status : 400, err.reason ? err.reason : "bad_request");
		return false;
	}
	evbuffer_drain(in, (size_t)r);
	stats_add(cfg->stats, sh, downstream_cx_rx_bytes_total, r);
	hc->nrequests++;
	stats_inc(cfg->stats, sh, downstream_rq_total);
	stats_inc(cfg->stats, sh, downstream_rq_http1_total);
	stats_inc(cfg->stats, sh, downstream_rq_active);
	s->counted_active = true;
	s->body = s->req.body;
	s->remaining = s->req.content_length;
	if (s->body == H1_BODY_CHUNKED)
		h1_chunked_init(&s->chunked, &cfg->limits);
	{
		size_t ml;
		const char *m = hdrs_get(&s->req.hdrs, ":method", &ml);
		s->is_head = m && ml == 4 && !memcmp(m, "HEAD", 4);
	}
	if (s->req.version_minor == 0) {
		/* Envoy's default: HTTP/1.0 only with accept_http_10. */
		if (!cfg->accept_http_10) {
			s->req_done = s->body == H1_BODY_NONE;
			hc->close_after = true;
			http_stream_send_local_reply(s, 426, NULL, "low_version");
			return true;
		}
		if (hdrs_find(&s->req.hdrs, ":authority", 10, 0) < 0 && cfg->default_host_http_10)
			hdrs_set(&s->req.hdrs, ":authority", cfg->default_host_http_10,
				 strlen(cfg->default_host_http_10));
	}
	if (s->req.connect) {
		bool ok = false;
		for (size_t i = 0; i < cfg->nupgrades && !ok; i++)
			ok = !strcmp(cfg->upgrades[i], "connect");
		if (!ok) {
			/* Envoy answers 403 to upgrades the HCM is not configured for. */
			hc->close_after = true;
			http_stream_send_local_reply(s, 403, NULL, "upgrade_failed");
			return true;
		}
		s->upgrade = true;
	}
	if (s->req.upgrade) {
		if (!upgrade_allowed(cfg, &s->req.hdrs)) {
			/* Envoy answers 403 to upgrades the HCM is not configured for. */
			s->req_done = true;
			http_stream_send_local_reply(s, 403, NULL, "upgrade_failed");
			return true;
		}
		s->upgrade = true;
	}
	if (downstream_draining(&hc->super))
		s->req.keep_alive = false;
	hcm_stream_begin(s, s->body == H1_BODY_NONE && !s->upgrade);
	return true;
}

/* Take the configuration current when the request headers arrived: the
 * worker's snapshot (clusters; a reference unless it is the connection's)
 * and, with RDS, the newest route table of this HCM's slot on this worker
 * (it lives in that snapshot).  A pointer load and at most one atomic. */
static void stream_bind_config(struct http_stream *s)
{
	struct hcm_conn *hc = s->hc;
	const struct hcm_cfg *cfg = hc->cfg;
	struct worker *w = hc->super.w;
	const struct route_config *rc = NULL;

	if (s->snap)
		return;
	s->snap = hc->super.snap;
	if (w->snap != s->snap) {
		s->snap = snapshot_ref(w->snap);
		s->snap_ref = true;
	}
	if (cfg->slot && w->id < cfg->slot->nworkers)
		rc = cfg->slot->cur[w->id];
	s->rc = rc ? rc : cfg->rc;
}

void hcm_stream_begin(struct http_stream *s, bool end)
{
	struct hcm_conn *hc = s->hc;
	const struct hcm_cfg *cfg = hc->cfg;

	prepare_request(hc, s);
	if (cfg->tracing)   /* SERVER span unless the listener is OUTBOUND */
		trace_begin(cfg->tracing, &s->trace, &s->req.hdrs,
			    hcm_peer_internal(cfg, (const struct sockaddr *)&hc->super.peer),
			    hc->super.lcfg->direction != LISTENER_OUTBOUND, shard_of(hc));
	/* The route is matched once, here, before any filter runs (Envoy caches
	 * it on the stream the same way): per-route filter configs and the
	 * router use this match.  Filters that change headers do not cause a
	 * new match (no clearRouteCache). */
	stream_bind_config(s);
	s->route = route_match(s->rc, &s->req.hdrs, &s->vh);
	if (unlikely(overload_saturated(OL_STOP_ACCEPTING_RQ))) {
		/* Envoy: 503 "envoy overloaded", flag OM, before any filter runs */
		stats_inc(cfg->stats, shard_of(hc), downstream_rq_overload_close);
		s->rflags |= RF_BIT(RF_OM);
		if (end) {
			s->req_done = true;
			s->req_end_ns = now_ns();
		}
		http_stream_send_local_reply(s, 503, "envoy overloaded", "overload_manager");
		return;
	}
	for (size_t i = 0; i < cfg->nfilters; i++) {
		const struct http_filter_ops *ops = cfg->filters[i].ops;
		if (!filter_enabled(cfg, s->route, i))
			continue;
		struct filter_inst *fi = &s->filters[s->nfilters++];
		fi->ops = ops;
		fi->ctx = ops->create ? ops->create(s, cfg->filters[i].cfg) : NULL;
	}
	if (end) {
		s->req_done = true;
		s->req_end_ns = now_ns();
	}
	run_decode_headers(s, end);
}

/* Feed available body bytes to the filters. */
static void hc_read_body(struct hcm_conn *hc, struct http_stream *s)
{
	struct evbuffer *in = conn_input(hc->super.bev);
	const struct hcm_cfg *cfg = hc->cfg;

	while (!s->req_done && !s->paused && !hc->dead && !s->done) {
		size_t len = evbuffer_get_length(in);
		if (!len)
			return;
		if (s->body == H1_BODY_LENGTH) {
			size_t n = (size_t)MIN((uint64_t)len, s->remaining);
			evbuffer_remove_buffer(in, s->tmp, n);
			s->remaining -= n;
			stats_add(cfg->stats, shard_of(hc), downstream_cx_rx_bytes_total, (int64_t)n);
			if (!s->remaining)
				s->req_done = true;
			run_decode_data(s, s->tmp, s->req_done);
			continue;
		}
		if (s->body == H1_BODY_CHUNKED) {
			struct evbuffer_iovec v;
			struct h1_error err = { 0, NULL };
			size_t off = 0, dlen = 0;
			if (evbuffer_peek(in, -1, NULL, &v, 1) < 1)
				return;
			long r = h1_chunked_feed(&s->chunked, v.iov_base, v.iov_len, &off, &dlen, &err);
			if (r < 0) {
				if (s->resp_started) {
					s->rflags |= RF_BIT(RF_DPE);
					http_stream_reset(s, err.reason);
				} else {
					stats_inc(cfg->stats, shard_of(hc), downstream_cx_protocol_error);
					s->rflags |= RF_BIT(RF_DPE);
					http_stream_send_local_reply(s, err.status ? err.status : 400,
								     err.reason, err.reason);
					hc->close_after = true;
				}
				return;
			}
			stats_add(cfg->stats, shard_of(hc), downstream_cx_rx_bytes_total, r);
			evbuffer_drain(in, off);
			if (dlen)
				evbuffer_remove_buffer(in, s->tmp, dlen);
			evbuffer_drain(in, (size_t)r - off - dlen);
			if (s->chunked.done) {
				s->req_done = true;
				if (s->chunked.trailers.n) {
					if (evbuffer_get_length(s->tmp))
						run_decode_data(s, s->tmp, false);
					run_decode_trailers(s, &s->chunked.trailers);
				} else {
					run_decode_data(s, s->tmp, true);
				}
			} else if (dlen) {
				run_decode_data(s, s->tmp, false);
			} else if (r == 0) {
				return;   /* need more bytes */
			}
			continue;
		}
		if (s->upgrade) {
			if (!hc->tunnel)
				return;   /* wait for the 101 before forwarding bytes */
			evbuffer_add_buffer(s->tmp, in);
			run_decode_data(s, s->tmp, false);
			continue;
		}
		return;
	}
}

static void set_proto(struct hcm_conn *hc, uint8_t proto)
{
	unsigned sh = shard_of(hc);
	hc->proto = proto;
	if (proto == 2) {
		stats_inc(hc->cfg->stats, sh, downstream_cx_http2_total);
		stats_inc(hc->cfg->stats, sh, downstream_cx_http2_active);
		h2_conn_start(hc);
	} else {
		stats_inc(hc->cfg->stats, sh, downstream_cx_http1_total);
		stats_inc(hc->cfg->stats, sh, downstream_cx_http1_active);
	}
}

/* codec_type AUTO: HTTP/2 when the client starts with the connection preface
 * (h2c with prior knowledge), else HTTP/1.  False: wait for more bytes. */
static bool hc_detect(struct hcm_conn *hc)
{
	struct evbuffer *in = conn_input(hc->super.bev);
	size_t len = MIN(evbuffer_get_length(in), (size_t)24);
	int alpn = hcm_alpn_proto(hc);   /* TLS: ALPN decides */
	if (alpn) {
		set_proto(hc, (uint8_t)alpn);
		return true;
	}
	if (!len) {
		arm_wait_timer(hc);
		return false;
	}
	int m = h2_preface_match((const char *)evbuffer_pullup(in, (ssize_t)len), len);
	if (m < 0) {
		conn_enable_read(hc->super.bev);
		return false;
	}
	set_proto(hc, m ? 2 : 1);
	return true;
}

/* Drive the connection: parse heads, stream bodies, keep order. */
static void hc_process(struct hcm_conn *hc)
{
	struct evbuffer *in = conn_input(hc->super.bev);
	struct http_stream *s;

	if (hc->dead || hc->closing)
		return;
	if (!hc->proto && !hc_detect(hc))
		return;
	if (hc->proto == 2) {
		h2_conn_process(hc);
		return;
	}
	if (!hc->s && !hc_parse_head(hc)) {
		if (!hc->dead && !hc->closing && !hc->s)
			arm_wait_timer(hc);
	}
	s = hc->s;
	if (s && !s->done && !hc->dead && !s->headers_held && (!s->req_done || hc->tunnel))
		hc_read_body(hc, s);
	if (hc->dead || hc->closing)
		return;
	/* Pipelined requests and early tunnel bytes wait in the input buffer
	 * while they cannot be consumed; bound what we accept. */
	s = hc->s;
	bool paused = s && (s->paused || s->headers_held);
	bool consuming = s && !s->done && !s->req_done && !paused && (!s->upgrade || hc->tunnel);
	bool want_read = !paused &&
			 (consuming || evbuffer_get_length(in) <= hc->super.lcfg->buffer_limit);
	if (want_read)
		conn_enable_read(hc->super.bev);
	else
		conn_disable_read(hc->super.bev);
}

/* Deferred work: destroy finished streams, close, or start the next request. */
static void hc_deferred_cb(evutil_socket_t fd, short what, void *arg)
{
	struct hcm_conn *hc = arg;
	(void)fd;
	(void)what;
	if (hc->dead) {
		downstream_close(&hc->super);
		return;
	}
	if (hc->proto == 2) {
		if (!hc->closing)
			h2_conn_process(hc);
		return;
	}
	if (hc->s && hc->s->done) {
		stream_destroy(hc->s);
		if (hc->close_after) {
			hc_close_after_flush(hc);
			return;
		}
	}
	hc_process(hc);
}

/* ---- conn callbacks ------------------------------------------------------------ */

static void hc_read_cb(struct conn *bev, void *arg)
{
	(void)bev;
	hc_process(arg);
}

static void hc_write_cb(struct conn *bev, void *arg)
{
	struct hcm_conn *hc = arg;
	struct http_stream *s = hc->s;
	if (hc->closing && !evbuffer_get_length(conn_output(bev))) {
		hc_close(hc, false);
		return;
	}
	if (hc->proto == 2) {
		h2_conn_on_write(hc);
		return;
	}
	if (s && s->blocked) {
		s->blocked = false;
		conn_set_write_lowat(bev, 0);
		for (size_t i = 0; i < s->nfilters; i++)
			if (s->filters[i].ops->on_downstream_writable)
				s->filters[i].ops->on_downstream_writable(s->filters[i].ctx, s);
	}
}

static void hc_event_cb(struct conn *bev, short what, void *arg)
{
	struct hcm_conn *hc = arg;
	struct http_stream *s = hc->s;
	(void)bev;
	if (hc->proto == 2) {
		h2_conn_eof(hc);   /* resets the live streams */
		hc_close(hc, true);
		return;
	}
	if ((what & CONN_EOF) && s && !s->done) {
		if (hc->tunnel) {
			/* client closed its side of the tunnel: pass the rest (also
			 * what a pause left in the input), then end */
			hc_read_body(hc, s);
			evbuffer_add_buffer(s->tmp, conn_input(hc->super.bev));
			run_decode_data(s, s->tmp, true);
			s->req_done = true;
			return;
		}
		if (s->req_done && !s->resp_done && !hc->closing) {
			/* half-close after a full request: still answer (HTTP/1.0 style) */
			hc->close_after = true;
			return;
		}
	}
	if (s && !s->done) {
		stats_inc(hc->cfg->stats, shard_of(hc), downstream_rq_rx_reset);
		for (size_t i = 0; i < s->nfilters; i++)
			if (s->filters[i].ops->on_reset)
				s->filters[i].ops->on_reset(s->filters[i].ctx, s);
	}
	hc_close(hc, true);
}

/* ---- drain and accept ---------------------------------------------------------------------- */

static void hc_drain(struct downstream *d)
{
	struct hcm_conn *hc = (struct hcm_conn *)d;
	if (hc->proto == 2 && d->drain_goaway_ms && !d->w->draining)
		return;   /* its listener was replaced: GOAWAY in the second half of the drain time */
	if (hc->proto == 2) {
		if (hcm_h2_idle(hc))
			stats_inc(hc->cfg->stats, shard_of(hc), downstream_cx_drain_close);
		h2_conn_drain(hc);
		return;
	}
	if (!hc->s && d->drain_deadline_ms && !d->w->draining) {
		/* its listener was replaced: an idle keep-alive connection is not
		 * closed under a client that may be sending (its next response says
		 * connection: close); closed at the drain deadline otherwise */
		return;
	}
	if (!hc->s) {
		stats_inc(hc->cfg->stats, shard_of(hc), downstream_cx_drain_close);
		hc_close(hc, false);
	} else {
		hc->close_after = true;
	}
}

static const struct downstream_ops hcm_downstream_ops = {
	.drain = hc_drain,
	.destroy = hc_destroy,
};

static void hcm_on_accept(const struct accept_info *ai, const void *vcfg)
{
	const struct hcm_cfg *cfg = vcfg;
	struct hcm_conn *hc = (struct hcm_conn *)downstream_new(sizeof(*hc), ai);
	unsigned sh = ai->w->shard;

	hc->super.ops = &hcm_downstream_ops;
	hc->cfg = cfg;
	if (cfg->access_logs)
		hc->conn_id = al_next_connection_id();
	hc->timer = evtimer_new(ai->w->base, hc_timer_cb, hc);
	hc->deferred = event_new(ai->w->base, -1, 0, hc_deferred_cb, hc);
	stats_inc(cfg->stats, sh, downstream_cx_total);
	stats_inc(cfg->stats, sh, downstream_cx_active);
	conn_setcb(hc->super.bev, hc_read_cb, hc_write_cb, hc_event_cb, hc);
	conn_enable_read(hc->super.bev);
	if (cfg->codec != HCM_CODEC_AUTO)
		set_proto(hc, cfg->codec == HCM_CODEC_HTTP2 ? 2 : 1);
	if (hc->proto == 2)
		hc_schedule(hc);   /* send our SETTINGS */
	else
		arm_wait_timer(hc);
}

const struct network_filter_ops hcm_filter_ops = {
	.name = "envoy.filters.network.http_connection_manager",
	.worker_snapshot = hcm_worker_snapshot,
	.type_url = HCM_TYPE,
	.parse_config = hcm_parse_config,
	.free_config = hcm_free_config,
	.on_accept = hcm_on_accept,
	.thread_exit = hcm_thread_exit,
};
