/* h2_codec.c - downstream HTTP/2 (h2c) for the connection manager, on nghttp2.
 *
 * Each HTTP/2 stream is an ordinary http_stream (own filter chain, timers,
 * router); this file only translates frames to the codec-neutral stream API
 * and back.  nghttp2 validates the HTTP messaging rules (pseudo-headers,
 * connection-specific headers, te, content-length against DATA) and answers
 * violations with RST_STREAM(PROTOCOL_ERROR); we count them.
 *
 * Lifetimes: struct h2_stream is the codec's per-stream state and lives until
 * nghttp2 closes the stream (it owns the response bytes still to be framed);
 * the http_stream lives until the HCM destroys it at a safe point.  Either
 * may go first; they point at each other and the pointer is cleared then.
 *
 * Flow control: automatic WINDOW_UPDATEs are off.  Request DATA is given back
 * to the peer's window (nghttp2_session_consume) only once the filters took
 * it; while a filter paused decoding it waits in h2_stream.in, so a slow
 * upstream bounds what a client can push.  Response DATA waits in
 * h2_stream.out and is framed without copying (NGHTTP2_DATA_FLAG_NO_COPY)
 * when the peer's window allows; past the listener's buffer limit the stream
 * reports itself blocked so the router stops reading its upstream. */
#include "hcm-t.h"
#include "proxy/http/h2_flood.h"

#include <nghttp2/nghttp2.h>
#include <event2/buffer.h>
#include "proxy/conn.h"
#include "proxy/worker.h"
#include "proxy/log.h"
#include "proxy/snapshot.h"

struct h2_stream {
	struct h2_conn *c;               /* not owned */
	struct http_stream *s;           /* not owned; NULL once the HCM destroyed it */
	int32_t id;
	struct evbuffer *in;             /* owned: request DATA the filters have not taken */
	struct evbuffer *out;            /* owned: response DATA not framed yet */
	struct http_headers trailers;    /* request trailers */
	struct http_headers resp_head;   /* response head submitted to nghttp2: the
					  * nv array points into it (NO_COPY) until
					  * the stream closes */
	struct http_headers *resp_trailers; /* owned, NULL: response trailers to send */
	uint32_t hbytes, hcount;         /* request header block so far (limits) */
	bool started;                    /* request head handed to the HCM */
	bool rx_rst;                     /* the client reset it (RST_STREAM) */
	uint64_t open_ms;                /* when its HEADERS arrived */
	bool in_end;                     /* END_STREAM received */
	bool end_delivered;              /* end of request given to the filters */
	bool have_trailers;
	bool has_authority, has_host;
	uint8_t ncookies;
	bool out_end;                    /* the response ends after out (and trailers) */
	bool deferred;                   /* data provider deferred: resume on more data */
	bool unblock;                    /* out drained below the low mark: tell filters */
	bool waiting;                    /* on the connection's wait list: its request
					  * starts in a later I/O cycle (max_requests_per_io_cycle) */
	bool wait_end;                   /* its HEADERS had END_STREAM */
	bool tunnel;                     /* CONNECT / upgrade accepted (2xx / 101): the
					  * stream is a byte tunnel (counts in
					  * downstream_cx_upgrades_active until it closes) */
	struct h2_stream *prev, *next;   /* the connection's codec streams */
	struct h2_stream *wprev, *wnext; /* the wait list */
};

struct h2_conn {
	struct hcm_conn *hc;             /* not owned (owner) */
	nghttp2_session *ses;            /* owned */
	struct h2_stream *streams;       /* owned list */
	struct http_stream *live;        /* HCM streams not destroyed yet (lnext list) */
	unsigned nlive;
	struct http_stream *qhead, *qtail; /* work queue (qnext) */
	struct event *ping_timer;        /* owned: keepalive interval, then timeout */
	uint32_t limit;                  /* listener buffer limit */
	bool ping_out;                   /* a keepalive PING awaits its ACK */
	bool goaway;                     /* GOAWAY submitted: close when idle */
	bool send_blocked;               /* output over the limit: wait for the writecb */
	bool in_send;
	/* Envoy's premature-reset defence (HTTP/2 "rapid reset"): streams the
	 * client reset within 1 s of opening, against all closed streams */
	uint32_t closed_streams, premature_resets;
	bool too_many_resets;            /* close the connection now */
	struct h2_stream *hdr_st;        /* stream of the header block being received
					  * (set by on_begin_headers; a block is never
					  * interleaved with another stream's frames) */
	/* flood limits (h2_flood.h) */
	struct h2_flood fl;
	uint32_t ctl_queued;             /* control frames nghttp2 holds for us (estimate:
					  * ACKs and resets it was asked for, less those
					  * framed; 0 whenever its queue is empty) */
	enum h2_flood_kind flood;        /* the limit exceeded: GOAWAY and close */
	bool lingering;                  /* flood: GOAWAY written, discarding input */
	bool shut_wr;                    /* flood: FIN sent after the GOAWAY */
	/* max_requests_per_io_cycle */
	uint32_t cycle_requests;         /* requests started in this I/O cycle */
	struct h2_stream *whead, *wtail; /* streams waiting to start (FIFO) */
	struct event *wait_ev;           /* owned, lazily: next-iteration timer */
};

#define H2_PREMATURE_RESET_MS 1000   /* overload.premature_reset_min_stream_lifetime_seconds */
#define H2_PREMATURE_RESET_COUNT 500 /* overload.premature_reset_total_stream_count */

static inline unsigned shard(const struct h2_conn *c) { return c->hc->super.w->shard; }
static inline struct stats_scope *h2st(const struct h2_conn *c) { return c->hc->cfg->h2stats; }
static inline struct stats_scope *hcmst(const struct h2_conn *c) { return c->hc->cfg->stats; }

/* ---- shared "http2" stats scope ---------------------------------------------- */

struct h2_scope_ref {
	struct stats_store *store;
	struct stats_scope *scope;
	unsigned refs;
	struct h2_scope_ref *next;
};
static struct h2_scope_ref *h2_scopes;   /* main thread only (config build/free) */
static const struct stat_desc h2_stat_desc[] = { H2_STATS(STATS_DESC) };

struct stats_scope *h2_stats_ref(struct stats_store *st)
{
	struct h2_scope_ref *r;
	for (r = h2_scopes; r; r = r->next)
		if (r->store == st) {
			r->refs++;
			return r->scope;
		}
	r = xcalloc(1, sizeof(*r));
	r->store = st;
	r->scope = stats_scope_new(st, "http2", "http2", NULL, NULL, h2_stat_desc, H2_STATS_N);
	r->refs = 1;
	r->next = h2_scopes;
	h2_scopes = r;
	return r->scope;
}

void h2_stats_unref(struct stats_scope *sc)
{
	for (struct h2_scope_ref **p = &h2_scopes; sc && *p; p = &(*p)->next) {
		struct h2_scope_ref *r = *p;
		if (r->scope != sc)
			continue;
		if (--r->refs == 0) {
			*p = r->next;
			stats_scope_free(r->scope);
			free(r);
		}
		return;
	}
}

/* ---- preface ------------------------------------------------------------------ */

static const char preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

int h2_preface_match(const char *buf, size_t len)
{
	size_t n = MIN(len, sizeof(preface) - 1);
	if (memcmp(buf, preface, n))
		return 0;
	return n == sizeof(preface) - 1 ? 1 : -1;
}

/* ---- codec streams (per-thread free list: no allocation per request) ---------- */

#define H2S_CACHE_MAX 256
static __thread struct h2_stream *h2s_cache;
static __thread unsigned h2s_cache_n;

static struct h2_stream *h2s_new(struct h2_conn *c, int32_t id)
{
	struct h2_stream *st = h2s_cache;
	if (st) {
		struct evbuffer *in = st->in, *out = st->out;
		struct http_headers t = st->trailers, rh = st->resp_head;
		h2s_cache = st->next;
		h2s_cache_n--;
		memset(st, 0, sizeof(*st));
		st->in = in;
		st->out = out;
		st->trailers = t;
		st->resp_head = rh;
	} else {
		st = xcalloc(1, sizeof(*st));
		st->in = evbuffer_new();
		st->out = evbuffer_new();
		hdrs_init(&st->trailers);
		hdrs_init(&st->resp_head);
	}
	st->c = c;
	st->id = id;
	st->open_ms = now_ms();
	st->next = c->streams;
	if (c->streams)
		c->streams->prev = st;
	c->streams = st;
	return st;
}

static void h2s_free(struct h2_stream *st)
{
	struct h2_conn *c = st->c;
	if (c->hdr_st == st)
		c->hdr_st = NULL;
	if (st->tunnel)
		stats_dec(hcmst(c), shard(c), downstream_cx_upgrades_active);
	if (st->waiting) {
		if (st->wprev)
			st->wprev->wnext = st->wnext;
		else
			c->whead = st->wnext;
		if (st->wnext)
			st->wnext->wprev = st->wprev;
		else
			c->wtail = st->wprev;
	}
	if (st->prev)
		st->prev->next = st->next;
	else
		c->streams = st->next;
	if (st->next)
		st->next->prev = st->prev;
	if (st->resp_trailers) {
		hdrs_free(st->resp_trailers);
		free(st->resp_trailers);
	}
	evbuffer_drain(st->in, evbuffer_get_length(st->in));
	evbuffer_drain(st->out, evbuffer_get_length(st->out));
	hdrs_clear(&st->trailers);
	hdrs_clear(&st->resp_head);
	if (h2s_cache_n >= H2S_CACHE_MAX) {
		evbuffer_free(st->in);
		evbuffer_free(st->out);
		hdrs_free(&st->trailers);
		hdrs_free(&st->resp_head);
		free(st);
		return;
	}
	st->next = h2s_cache;
	h2s_cache = st;
	h2s_cache_n++;
}

void h2_thread_exit(void)
{
	while (h2s_cache) {
		struct h2_stream *st = h2s_cache;
		h2s_cache = st->next;
		evbuffer_free(st->in);
		evbuffer_free(st->out);
		hdrs_free(&st->trailers);
		hdrs_free(&st->resp_head);
		free(st);
	}
	h2s_cache_n = 0;
}

void h2_queue_push(struct hcm_conn *hc, struct http_stream *s)
{
	struct h2_conn *c = hc->h2;
	s->qnext = NULL;
	if (c->qtail)
		c->qtail->qnext = s;
	else
		c->qhead = s;
	c->qtail = s;
}

static void queue(struct http_stream *s)
{
	if (s->queued)
		return;
	s->queued = true;
	h2_queue_push(s->hc, s);
	hcm_schedule(s->hc);
}

bool hcm_h2_idle(struct hcm_conn *hc)
{
	return !hc->h2 || hc->h2->nlive == 0;
}

/* ---- request path ------------------------------------------------------------- */

static void consume(struct h2_stream *st, size_t n)
{
	if (n)
		nghttp2_session_consume(st->c->ses, st->id, n);
}

/* Hand buffered request DATA / end / trailers to the filters, as far as the
 * stream lets us (not paused, headers not held). */
static void deliver(struct h2_stream *st)
{
	struct http_stream *s = st->s;
	if (!s || s->done || !st->started || s->paused || s->headers_held || st->end_delivered)
		return;
	if (unlikely(s->upgrade) && !st->tunnel)
		return;   /* as HTTP/1: tunnel bytes wait for the 101 / 2xx */
	size_t n = evbuffer_get_length(st->in);
	bool end = st->in_end && !st->have_trailers;
	if (n || end) {
		if (end) {
			st->end_delivered = true;
			s->req_done = true;
		}
		hcm_run_decode_data(s, st->in, end);
		if (st->s)
			consume(st, n);
		else
			nghttp2_session_consume_connection(st->c->ses, n);
	}
	s = st->s;
	if (s && !s->done && !s->paused && st->in_end && st->have_trailers && !st->end_delivered) {
		st->end_delivered = true;
		s->req_done = true;
		stats_inc(h2st(st->c), shard(st->c), trailers);
		hcm_run_decode_trailers(s, &st->trailers);
	}
}

/* Host -> :authority when the client sent no :authority (pseudo-headers stay
 * first); several cookie fields are joined with "; " for HTTP/1 upstreams. */
static void fix_request_head(struct h2_stream *st, struct http_headers *h)
{
	if (st->has_host && !st->has_authority) {
		struct http_headers n;
		size_t hl;
		const char *host = hdrs_get(h, "host", &hl);
		hdrs_init(&n);
		uint32_t i = 0;
		for (; i < h->n && hdrs_name(h, i)[0] == ':'; i++)
			hdrs_add(&n, hdrs_name(h, i), h->f[i].name_len, hdrs_value(h, i), h->f[i].value_len);
		hdrs_add(&n, ":authority", 10, host, hl);
		for (; i < h->n; i++)
			if (!(h->f[i].name_len == 4 && !memcmp(hdrs_name(h, i), "host", 4)))
				hdrs_add(&n, hdrs_name(h, i), h->f[i].name_len, hdrs_value(h, i),
					 h->f[i].value_len);
		hdrs_free(h);
		*h = n;
	} else if (st->has_host) {
		hdrs_del(h, "host");   /* :authority wins */
	}
	if (st->ncookies > 1) {
		size_t total = 0, o = 0;
		for (uint32_t i = 0; i < h->n; i++)
			if (h->f[i].name_len == 6 && !memcmp(hdrs_name(h, i), "cookie", 6))
				total += h->f[i].value_len + 2;
		char *v = xmalloc(total + 1);
		for (uint32_t i = 0; i < h->n; i++)
			if (h->f[i].name_len == 6 && !memcmp(hdrs_name(h, i), "cookie", 6)) {
				if (o) {
					memcpy(v + o, "; ", 2);
					o += 2;
				}
				memcpy(v + o, hdrs_value(h, i), h->f[i].value_len);
				o += h->f[i].value_len;
			}
		hdrs_set(h, "cookie", v, o);
		free(v);
	}
}

/* CONNECT on this stream (nghttp2 checked the pseudo-headers: plain CONNECT
 * has only :method and :authority; extended CONNECT (RFC 8441, accepted only
 * because we advertise SETTINGS_ENABLE_CONNECT_PROTOCOL) has :protocol,
 * :scheme, :path and :authority).  As Envoy, extended CONNECT becomes the
 * HTTP/1.1 upgrade it stands for (GET + "upgrade: <:protocol>"), so routing
 * and the router treat it like one; plain CONNECT stays CONNECT (matched by
 * connect_matcher routes).  False: refused (allow_connect off, or the
 * upgrade type is not in upgrade_configs): 403 as on HTTP/1. */
static bool connect_accept(struct h2_stream *st)
{
	struct http_stream *s = st->s;
	const struct hcm_cfg *cfg = s->hc->cfg;
	struct http_headers *h = &s->req.hdrs;
	size_t pl;
	if (!cfg->h2.allow_connect)
		return false;
	const char *proto = hdrs_get(h, ":protocol", &pl);
	if (!proto) {
		if (!hcm_upgrade_type_allowed(cfg, "connect", 7))
			return false;
		s->req.connect = true;
		s->upgrade = true;
		return true;
	}
	if (!hcm_upgrade_type_allowed(cfg, proto, pl))
		return false;
	/* rare path: a copy, since adding to the map may move its arena */
	char *type = xmalloc(pl + 1);
	memcpy(type, proto, pl);
	hdrs_del(h, ":protocol");
	hdrs_set(h, ":method", "GET", 3);
	hdrs_add(h, "upgrade", 7, type, pl);
	free(type);
	s->req.upgrade = true;
	s->upgrade = true;
	return true;
}

static void begin_request(struct h2_stream *st, bool end)
{
	struct http_stream *s = st->s;
	struct hcm_conn *hc = s->hc;
	const struct hcm_cfg *cfg = hc->cfg;
	unsigned sh = shard(st->c);
	size_t ml;

	fix_request_head(st, &s->req.hdrs);
	stats_inc(cfg->stats, sh, downstream_rq_total);
	stats_inc(cfg->stats, sh, downstream_rq_http2_total);
	stats_inc(cfg->stats, sh, downstream_rq_active);
	s->counted_active = true;
	hc->nrequests++;
	st->started = true;
	const char *m = hdrs_get(&s->req.hdrs, ":method", &ml);
	s->is_head = m && ml == 4 && !memcmp(m, "HEAD", 4);
	if (m && ml == 7 && !memcmp(m, "CONNECT", 7) && !connect_accept(st)) {
		st->end_delivered = true;
		s->req_done = end;
		http_stream_send_local_reply(s, 403, NULL, "upgrade_failed");
		return;
	}
	size_t el;
	const char *ex = hdrs_get(&s->req.hdrs, "expect", &el);
	if (ex && !end && el == 12 && !strncasecmp(ex, "100-continue", 12) &&
	    s->hc->cfg->proxy_100_continue) {
		s->expect_100 = true;   /* forwarded; the upstream's 100 comes back */
	} else if (ex) {
		/* Envoy (proxy_100_continue off): the HCM answers "expect:
		 * 100-continue" itself with a 100 HEADERS when a body is to
		 * follow, and the header does not go upstream */
		if (!end && el == 12 && !strncasecmp(ex, "100-continue", 12)) {
			static const nghttp2_nv cont[] = { {
				(uint8_t *)":status", (uint8_t *)"100", 7, 3,
				NGHTTP2_NV_FLAG_NO_COPY_NAME | NGHTTP2_NV_FLAG_NO_COPY_VALUE } };
			nghttp2_submit_headers(st->c->ses, NGHTTP2_FLAG_NONE, st->id, NULL,
					       cont, 1, NULL);
		}
		hdrs_del(&s->req.hdrs, "expect");
	}
	if (end)
		st->end_delivered = true;
	hcm_stream_begin(s, end);
}

/* ---- max_requests_per_io_cycle ------------------------------------------------- */

/* As Envoy's runtime key http.max_requests_per_io_cycle: a connection
 * starts at most that many requests (filter chains) per I/O cycle (a read
 * of its socket, or one run of its wait timer); the codec still parses
 * every frame, and the other requests wait, in order, for the next loop
 * iteration, so the worker polls its other connections in between. */

static void wait_cb(evutil_socket_t fd, short what, void *arg);

static void arm_wait(struct h2_conn *c)
{
	static const struct timeval zero = { 0, 0 };
	if (!c->wait_ev)
		c->wait_ev = evtimer_new(c->hc->super.w->base, wait_cb, c);
	/* a timer, not event_active: it fires after the next poll, with the
	 * I/O events of the other connections */
	if (!evtimer_pending(c->wait_ev, NULL))
		evtimer_add(c->wait_ev, &zero);
}

static void start_request(struct h2_stream *st, bool end)
{
	struct h2_conn *c = st->c;
	uint32_t lim = c->hc->cfg->max_requests_per_io_cycle;
	if (lim && (c->whead || c->cycle_requests >= lim)) {
		st->waiting = true;
		st->wait_end = end;
		st->wnext = NULL;
		st->wprev = c->wtail;
		if (c->wtail)
			c->wtail->wnext = st;
		else
			c->whead = st;
		c->wtail = st;
		stats_inc(h2st(c), shard(c), requests_deferred);
		arm_wait(c);
		return;
	}
	c->cycle_requests++;
	begin_request(st, end);
}

/* Start waiting requests while this cycle allows. */
static void run_waiting(struct h2_conn *c)
{
	uint32_t lim = c->hc->cfg->max_requests_per_io_cycle;
	while (c->whead && c->cycle_requests < lim && !c->hc->dead && !c->hc->closing) {
		struct h2_stream *st = c->whead;
		c->whead = st->wnext;
		if (c->whead)
			c->whead->wprev = NULL;
		else
			c->wtail = NULL;
		st->waiting = false;
		st->wprev = st->wnext = NULL;
		c->cycle_requests++;
		begin_request(st, st->wait_end);
		deliver(st);   /* body, end or trailers that arrived meanwhile */
	}
	if (c->whead)
		arm_wait(c);
}

static void wait_cb(evutil_socket_t fd, short what, void *arg)
{
	struct h2_conn *c = arg;
	(void)fd;
	(void)what;
	if (c->hc->dead || c->hc->closing)
		return;
	if (c->lingering) {   /* the end of a lingering close (flood_close) */
		hcm_close(c->hc, false);
		return;
	}
	c->cycle_requests = 0;
	run_waiting(c);
	h2_conn_process(c->hc);
}

/* ---- nghttp2 callbacks --------------------------------------------------------- */

static int on_begin_headers(nghttp2_session *ses, const nghttp2_frame *frame, void *ud)
{
	struct h2_conn *c = ud;
	c->hdr_st = NULL;
	if (frame->hd.type != NGHTTP2_HEADERS)
		return 0;
	if (frame->headers.cat != NGHTTP2_HCAT_REQUEST) {   /* trailers */
		c->hdr_st = nghttp2_session_get_stream_user_data(ses, frame->hd.stream_id);
		return 0;
	}
	struct h2_stream *st = h2s_new(c, frame->hd.stream_id);
	h2_flood_stream_opened(&c->fl);
	c->hdr_st = st;
	struct http_stream *s = hcm_stream_new(c->hc);
	st->s = s;
	s->h2s = st;
	s->req.version_minor = 1;
	s->req.keep_alive = true;
	s->lprev = NULL;
	s->lnext = c->live;
	if (c->live)
		c->live->lprev = s;
	c->live = s;
	if (!c->nlive++)
		event_del(c->hc->timer);   /* no longer idle */
	nghttp2_session_set_stream_user_data(ses, frame->hd.stream_id, st);
	stats_inc(h2st(c), shard(c), streams_active);
	return 0;
}

static int on_header(nghttp2_session *ses, const nghttp2_frame *frame, const uint8_t *name,
		     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags, void *ud)
{
	struct h2_conn *c = ud;
	struct h2_stream *st = c->hdr_st;
	const struct h1_limits *lim = &c->hc->cfg->limits;
	(void)flags;
	if (frame->hd.type != NGHTTP2_HEADERS)
		return 0;
	if (!st || st->id != frame->hd.stream_id)
		st = nghttp2_session_get_stream_user_data(ses, frame->hd.stream_id);
	if (!st || !st->s) {
		stats_inc(h2st(c), shard(c), headers_cb_no_stream);
		return 0;
	}
	st->hbytes += (uint32_t)(namelen + valuelen);
	st->hcount++;
	if (st->hbytes > lim->max_head_bytes || st->hcount > lim->max_headers) {
		/* nghttp2 resets the stream (INTERNAL_ERROR) */
		stats_inc(h2st(c), shard(c), header_overflow);
		return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
	}
	if (frame->headers.cat == NGHTTP2_HCAT_HEADERS) {
		hdrs_add(&st->trailers, (const char *)name, namelen, (const char *)value, valuelen);
		return 0;
	}
	if (namelen == 4 && !memcmp(name, "host", 4))
		st->has_host = true;
	else if (namelen == 10 && !memcmp(name, ":authority", 10))
		st->has_authority = true;
	else if (namelen == 6 && !memcmp(name, "cookie", 6) && st->ncookies < 255)
		st->ncookies++;
	hdrs_add(&st->s->req.hdrs, (const char *)name, namelen, (const char *)value, valuelen);
	return 0;
}

static void arm_ping(struct h2_conn *c, uint64_t ms)
{
	struct timeval tv = { (time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000 };
	evtimer_add(c->ping_timer, &tv);
}

static uint64_t ping_interval(const struct h2_conn *c)
{
	const struct h2_options *o = &c->hc->cfg->h2;
	uint64_t jit = o->keepalive_interval_ms * o->keepalive_jitter_pct / 100;
	return o->keepalive_interval_ms + (jit ? rand_u64() % (jit + 1) : 0);
}

static int on_frame_recv(nghttp2_session *ses, const nghttp2_frame *frame, void *ud)
{
	struct h2_conn *c = ud;
	struct h2_stream *st;
	bool end = frame->hd.flags & NGHTTP2_FLAG_END_STREAM;

	switch (frame->hd.type) {
	case NGHTTP2_HEADERS:
		st = nghttp2_session_get_stream_user_data(ses, frame->hd.stream_id);
		if (!st || !st->s)
			return 0;
		if (frame->headers.cat == NGHTTP2_HCAT_REQUEST) {
			st->in_end = end;
			start_request(st, end);
		} else if (end) {
			st->in_end = true;
			st->have_trailers = true;
			deliver(st);
		}
		break;
	case NGHTTP2_DATA:
		st = nghttp2_session_get_stream_user_data(ses, frame->hd.stream_id);
		if (st && end) {
			st->in_end = true;
			deliver(st);
		}
		break;
	case NGHTTP2_RST_STREAM:
		stats_inc(h2st(c), shard(c), rx_reset);
		st = nghttp2_session_get_stream_user_data(ses, frame->hd.stream_id);
		if (st)
			st->rx_rst = true;
		break;
	case NGHTTP2_PING:
		if (!(frame->hd.flags & NGHTTP2_FLAG_ACK))
			c->ctl_queued++;   /* nghttp2 queues the PING ACK */
		else if (c->ping_out) {
			c->ping_out = false;
			arm_ping(c, ping_interval(c));
		}
		break;
	case NGHTTP2_SETTINGS:
		if (!(frame->hd.flags & NGHTTP2_FLAG_ACK))
			c->ctl_queued++;   /* and the SETTINGS ACK */
		break;
	default:
		break;
	}
	return 0;
}

/* ---- flood limits (h2_flood.h) --------------------------------------------------- */

/* Frames queued for the peer and not written to the socket yet: those in the
 * output buffer (fl) and those nghttp2 still holds. */
static enum h2_flood_kind outbound_check(struct h2_conn *c)
{
	size_t queued = nghttp2_session_get_outbound_queue_size(c->ses);
	if (!queued)
		c->ctl_queued = 0;
	h2_flood_written(&c->fl, evbuffer_get_length(conn_output(c->hc->super.bev)));
	return h2_flood_outbound(&c->fl, &c->hc->cfg->h2, queued, c->ctl_queued);
}

/* Every frame header from the peer, before its payload is processed. */
static int on_begin_frame(nghttp2_session *ses, const nghttp2_frame_hd *hd, void *ud)
{
	struct h2_conn *c = ud;
	enum h2_flood_kind k;
	(void)ses;
	k = h2_flood_inbound(&c->fl, &c->hc->cfg->h2, hd->type, hd->flags, hd->length);
	if (!k)
		k = outbound_check(c);
	if (k) {
		c->flood = k;
		return NGHTTP2_ERR_CALLBACK_FAILURE;   /* stop parsing now */
	}
	return 0;
}

/* nghttp2 answers an invalid frame with RST_STREAM or GOAWAY. */
static int on_invalid_frame(nghttp2_session *ses, const nghttp2_frame *frame, int err, void *ud)
{
	struct h2_conn *c = ud;
	(void)ses;
	(void)frame;
	(void)err;
	c->ctl_queued++;
	return 0;
}

/* A flood limit was exceeded: count it, reset the streams, write GOAWAY
 * ENHANCE_YOUR_CALM ourselves (whatever nghttp2 still queues is never
 * framed).  An outbound flood means the peer does not read: what it has not
 * started to receive is dropped, so the GOAWAY follows the last whole
 * frame.  Then a lingering close: once the GOAWAY is written the sending
 * side is shut down (FIN after it) and whatever the peer still sends is
 * read and discarded, so the kernel does not answer unread input with a
 * reset that would destroy the GOAWAY; the connection closes when the peer
 * closes or 1 s later (wait_ev). */
static void flood_close(struct h2_conn *c)
{
	struct hcm_conn *hc = c->hc;
	struct evbuffer *out = conn_output(hc->super.bev);
	struct evbuffer *in = conn_input(hc->super.bev);
	uint32_t last = (uint32_t)nghttp2_session_get_last_proc_stream_id(c->ses) & 0x7fffffffu;

	stats_inc(h2st(c), shard(c), h2_flood_stat(outbound_flood, c->flood));
	log_debug("h2: %s from %s: GOAWAY ENHANCE_YOUR_CALM, closing",
		  h2_stat_desc[h2_flood_stat(outbound_flood, c->flood)].name, hc->super.peer_ip);
	evbuffer_drain(in, evbuffer_get_length(in));
	size_t glen = h2_flood_goaway(&c->fl, c->flood, out, last);
	stats_add(hcmst(c), shard(c), downstream_cx_tx_bytes_total, (int64_t)glen);
	stats_inc(h2st(c), shard(c), goaway_sent);
	stats_inc(hcmst(c), shard(c), downstream_cx_protocol_error);
	c->goaway = true;
	c->lingering = true;
	/* the streams end now: their filters see a reset (the router cancels
	 * its upstream request) and they are destroyed, so no timer of theirs
	 * runs during the lingering close */
	bool active = false;
	for (struct http_stream *s = c->live; s; s = s->lnext)
		active |= !s->done;
	if (active)
		stats_inc(hcmst(c), shard(c), downstream_cx_destroy_active_rq);
	h2_conn_eof(hc);
	c->qhead = c->qtail = NULL;   /* the work queue is never run again */
	while (c->live)
		hcm_stream_destroy(c->live);   /* unlinks itself (h2_stream_detach) */
	c->send_blocked = false;
	conn_set_write_lowat(hc->super.bev, 0);   /* the writecb says when it is out */
	conn_enable_read(hc->super.bev);
	event_del(hc->timer);
	if (!c->wait_ev)
		c->wait_ev = evtimer_new(hc->super.w->base, wait_cb, c);
	struct timeval tv = { 1, 0 };
	evtimer_add(c->wait_ev, &tv);
}

static int on_data_chunk(nghttp2_session *ses, uint8_t flags, int32_t id, const uint8_t *data,
			 size_t len, void *ud)
{
	struct h2_conn *c = ud;
	struct h2_stream *st = nghttp2_session_get_stream_user_data(ses, id);
	(void)flags;
	if (!st || !st->s || st->s->done || st->end_delivered) {
		nghttp2_session_consume(ses, id, len);   /* nobody wants it: reopen the window */
		return 0;
	}
	(void)c;
	evbuffer_add(st->in, data, len);
	deliver(st);
	return 0;
}

static int on_stream_close(nghttp2_session *ses, int32_t id, uint32_t error_code, void *ud)
{
	struct h2_conn *c = ud;
	struct h2_stream *st = nghttp2_session_get_stream_user_data(ses, id);
	if (!st)
		return 0;
	struct http_stream *s = st->s;
	size_t left = evbuffer_get_length(st->in);
	stats_dec(h2st(c), shard(c), streams_active);
	/* As Envoy: with fewer than 500 closed streams, close the connection
	 * once premature resets reach half of 500; after that, once they are
	 * more than half of all closed streams. */
	c->closed_streams++;
	if (st->rx_rst && now_ms() - st->open_ms < H2_PREMATURE_RESET_MS)
		c->premature_resets++;
	if (c->premature_resets &&
	    (c->closed_streams < H2_PREMATURE_RESET_COUNT ?
	     c->premature_resets * 2 >= H2_PREMATURE_RESET_COUNT :
	     c->premature_resets * 2 > c->closed_streams))
		c->too_many_resets = true;
	if (left)
		nghttp2_session_consume_connection(ses, left);
	if (s) {
		s->h2s = NULL;
		st->s = NULL;
		if (!s->done && !st->started) {
			s->done = true;   /* never reached the filters (e.g. header overflow) */
			queue(s);
		} else if (!s->done) {
			/* reset by the client or for a protocol error */
			if (st->started) {
				stats_inc(hcmst(c), shard(c), downstream_rq_rx_reset);
				for (size_t i = 0; i < s->nfilters; i++)
					if (s->filters[i].ops->on_reset)
						s->filters[i].ops->on_reset(s->filters[i].ctx, s);
			}
			s->resp_done = true;
			s->details = error_code ? "http2.remote_reset" : "http2.stream_closed";
			s->rflags |= RF_BIT(error_code ? RF_DR : RF_DC);
			hcm_stream_finish(s);
		}
	}
	h2s_free(st);
	return 0;
}

static int on_frame_send(nghttp2_session *ses, const nghttp2_frame *frame, void *ud)
{
	struct h2_conn *c = ud;
	switch (frame->hd.type) {
	case NGHTTP2_RST_STREAM:
		stats_inc(h2st(c), shard(c), tx_reset);
		/* we only ever reset with INTERNAL_ERROR or NO_ERROR ourselves:
		 * PROTOCOL_ERROR is nghttp2 enforcing the HTTP messaging rules
		 * (forbidden headers, pseudo-headers, content-length vs DATA) */
		if (frame->rst_stream.error_code == NGHTTP2_PROTOCOL_ERROR)
			stats_inc(h2st(c), shard(c), rx_messaging_error);
		break;
	case NGHTTP2_GOAWAY:
		stats_inc(h2st(c), shard(c), goaway_sent);
		if (frame->goaway.error_code != NGHTTP2_NO_ERROR)
			stats_inc(hcmst(c), shard(c), downstream_cx_protocol_error);
		break;
	case NGHTTP2_HEADERS:
	case NGHTTP2_DATA:
		/* A complete response before the complete request: ask the client
		 * to stop sending (RFC 9113 8.1, RST_STREAM NO_ERROR). */
		if ((frame->hd.flags & NGHTTP2_FLAG_END_STREAM) &&
		    nghttp2_session_get_stream_remote_close(ses, frame->hd.stream_id) == 0 &&
		    nghttp2_submit_rst_stream(ses, NGHTTP2_FLAG_NONE, frame->hd.stream_id,
					      NGHTTP2_NO_ERROR) == 0)
			c->ctl_queued++;
		break;
	default:
		break;
	}
	return 0;
}

static ssize_t send_cb(nghttp2_session *ses, const uint8_t *data, size_t len, int flags, void *ud)
{
	struct h2_conn *c = ud;
	struct evbuffer *out = conn_output(c->hc->super.bev);
	(void)ses;
	(void)flags;
	if (c->flood)
		return NGHTTP2_ERR_WOULDBLOCK;   /* closing: nothing more is framed */
	if (evbuffer_get_length(out) >= c->limit) {
		c->send_blocked = true;
		return NGHTTP2_ERR_WOULDBLOCK;
	}
	evbuffer_add(out, data, len);
	stats_add(hcmst(c), shard(c), downstream_cx_tx_bytes_total, (int64_t)len);
	/* nghttp2 hands us one frame per call (we never take part of one) */
	uint8_t type = len >= 9 ? data[3] : 0xff;
	h2_flood_sent(&c->fl, len, type);
	if (h2_flood_is_control(type) && c->ctl_queued)
		c->ctl_queued--;
	c->flood = outbound_check(c);
	return (ssize_t)len;
}

static int send_data_cb(nghttp2_session *ses, nghttp2_frame *frame, const uint8_t *framehd,
			size_t length, nghttp2_data_source *source, void *ud)
{
	struct h2_conn *c = ud;
	struct h2_stream *st = source->ptr;
	struct evbuffer *out = conn_output(c->hc->super.bev);
	(void)ses;
	if (c->flood)
		return NGHTTP2_ERR_WOULDBLOCK;
	if (evbuffer_get_length(out) >= c->limit) {
		c->send_blocked = true;
		return NGHTTP2_ERR_WOULDBLOCK;
	}
	if (frame->data.padlen > 0)   /* never requested (no select_padding callback) */
		return NGHTTP2_ERR_CALLBACK_FAILURE;
	evbuffer_add(out, framehd, 9);
	evbuffer_remove_buffer(st->out, out, length);
	stats_add(hcmst(c), shard(c), downstream_cx_tx_bytes_total, (int64_t)(length + 9));
	h2_flood_sent(&c->fl, length + 9, NGHTTP2_DATA);
	c->flood = outbound_check(c);
	if (st->s && st->s->blocked && !st->unblock &&
	    evbuffer_get_length(st->out) <= c->limit / 2) {
		st->unblock = true;
		queue(st->s);
	}
	return 0;
}

/* Connection-specific fields an HTTP/1 upstream may send (RFC 9113 8.2.2). */
static bool h2_forbidden(const char *name, size_t nl)
{
	switch (nl) {
	case 7:
		return !memcmp(name, "upgrade", 7);
	case 10:
		return !memcmp(name, "connection", 10) || !memcmp(name, "keep-alive", 10);
	case 16:
		return !memcmp(name, "proxy-connection", 16);
	case 17:
		return !memcmp(name, "transfer-encoding", 17);
	default:
		return false;
	}
}

/* nghttp2 name/value pairs pointing into h, pseudo-headers first.  The map
 * keeps pseudo-headers in front (headers.h) and its names lowercase, so one
 * pass normally does and nghttp2 need not copy them (NO_COPY_NAME/VALUE): h
 * must then stay untouched until the frame is serialised. */
static size_t build_nva(const struct http_headers *h, nghttp2_nv *nv, size_t cap)
{
	size_t n = 0;
	bool regular = false, unordered = false;
	for (uint32_t i = 0; i < h->n && n < cap; i++) {
		const char *name = hdrs_name(h, i);
		size_t nl = h->f[i].name_len;
		if (nl && name[0] == ':')
			unordered |= regular;
		else
			regular = true;
		if (h2_forbidden(name, nl))
			continue;
		nv[n].name = (uint8_t *)name;
		nv[n].namelen = nl;
		nv[n].value = (uint8_t *)hdrs_value(h, i);
		nv[n].valuelen = h->f[i].value_len;
		nv[n].flags = NGHTTP2_NV_FLAG_NO_COPY_NAME | NGHTTP2_NV_FLAG_NO_COPY_VALUE;
		n++;
	}
	if (unordered) {   /* stable partition: pseudo-headers first */
		size_t w = 0;
		for (size_t i = 0; i < n; i++) {
			if (!nv[i].namelen || nv[i].name[0] != ':')
				continue;
			nghttp2_nv t = nv[i];
			memmove(&nv[w + 1], &nv[w], (i - w) * sizeof(*nv));
			nv[w++] = t;
		}
	}
	return n;
}

/* Stack storage for the common case, heap for very large header maps. */
#define NVA_STACK 64
#define NVA_BEGIN(h)                                                                 \
	nghttp2_nv nv_stack[NVA_STACK], *nva = nv_stack;                             \
	if ((h)->n > NVA_STACK)                                                      \
		nva = xmalloc((h)->n * sizeof(*nva));                                \
	size_t nnv = build_nva((h), nva, (h)->n > NVA_STACK ? (h)->n : NVA_STACK)
#define NVA_END() do { if (nva != nv_stack) free(nva); } while (0)

static ssize_t data_read_cb(nghttp2_session *ses, int32_t id, uint8_t *buf, size_t length,
			    uint32_t *flags, nghttp2_data_source *source, void *ud)
{
	struct h2_stream *st = source->ptr;
	size_t avail = evbuffer_get_length(st->out);
	(void)buf;
	(void)ud;
	if (!avail && !st->out_end) {
		st->deferred = true;
		return NGHTTP2_ERR_DEFERRED;
	}
	size_t n = MIN(avail, length);
	*flags |= NGHTTP2_DATA_FLAG_NO_COPY;
	if (n == avail && st->out_end) {
		*flags |= NGHTTP2_DATA_FLAG_EOF;
		if (st->resp_trailers) {
			NVA_BEGIN(st->resp_trailers);
			if (nghttp2_submit_trailer(ses, id, nva, nnv) == 0)
				*flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
			NVA_END();
		}
	}
	return (ssize_t)n;
}

/* ---- response path (stream API, called by hcm.c) -------------------------------- */

void h2_encode_100_continue(struct http_stream *s)
{
	static const nghttp2_nv cont[] = { {
		(uint8_t *)":status", (uint8_t *)"100", 7, 3,
		NGHTTP2_NV_FLAG_NO_COPY_NAME | NGHTTP2_NV_FLAG_NO_COPY_VALUE } };
	struct h2_stream *st = s->h2s;
	if (!st)
		return;
	nghttp2_submit_headers(s->hc->h2->ses, NGHTTP2_FLAG_NONE, st->id, NULL, cont, 1, NULL);
	hcm_schedule(s->hc);
}

/* The response to an accepted CONNECT / upgrade: a 2xx to CONNECT or a 101
 * to an upgrade opens the tunnel.  On HTTP/2 that is :status 200 (RFC 8441
 * 5; the upgrade / connection fields are never sent on HTTP/2) and the
 * stream carries raw bytes both ways from now on; a 2xx to CONNECT has no
 * content-length (RFC 9113 8.5).  Other answers are ordinary responses. */
static void tunnel_open(struct http_stream *s, struct h2_stream *st, struct http_headers *h,
			int status)
{
	struct hcm_conn *hc = s->hc;
	if (s->req.connect ? status < 200 || status > 299 : status != 101)
		return;
	if (status == 101)
		hdrs_set(h, ":status", "200", 3);
	hdrs_del(h, "content-length");
	st->tunnel = true;
	stats_inc(hc->cfg->stats, shard(hc->h2), downstream_cx_upgrades_total);
	stats_inc(hc->cfg->stats, shard(hc->h2), downstream_cx_upgrades_active);
	if (s->timer)
		event_del(s->timer);   /* as HTTP/1: no request / idle timer on a tunnel */
	queue(s);   /* request DATA held until now (deliver) */
}

void h2_encode_headers(struct http_stream *s, struct http_headers *h, bool end)
{
	struct hcm_conn *hc = s->hc;
	struct h2_stream *st = s->h2s;
	int status = hcm_response_prepare(s, h, end);
	stats_code_inc(hc->cfg->stats, shard(hc->h2), 0, status);
	if (unlikely(s->upgrade) && st && !end)
		tunnel_open(s, st, h, status);
	if (st) {
		nghttp2_data_provider prd = { .source.ptr = st, .read_callback = data_read_cb };
		/* nghttp2 reads the names and values when it frames the HEADERS:
		 * the map moves to the codec stream until then, h gets its
		 * (empty) storage back */
		struct http_headers t = st->resp_head;
		st->resp_head = *h;
		*h = t;
		NVA_BEGIN(&st->resp_head);
		int rv = nghttp2_submit_response(hc->h2->ses, st->id, nva, nnv, end ? NULL : &prd);
		NVA_END();
		if (rv)
			log_debug("h2: submit_response on stream %d: %s", st->id, nghttp2_strerror(rv));
	}
	hdrs_clear(h);
	if (end) {
		s->resp_done = true;
		hcm_stream_finish(s);
	}
	hcm_schedule(hc);
}

static void out_more(struct h2_stream *st)
{
	if (st->deferred) {
		st->deferred = false;
		nghttp2_session_resume_data(st->c->ses, st->id);
	}
}

void h2_encode_data(struct http_stream *s, struct evbuffer *data, bool end)
{
	struct hcm_conn *hc = s->hc;
	struct h2_stream *st = s->h2s;
	s->last_activity_ms = now_ms();
	/* the encode_data filters already ran (hcm.c encode_data_from) */
	if (!st || s->is_head) {
		evbuffer_drain(data, evbuffer_get_length(data));
	} else {
		evbuffer_add_buffer(st->out, data);
		s->blocked = evbuffer_get_length(st->out) > hc->h2->limit;
	}
	if (st) {
		st->out_end = end;
		out_more(st);
	}
	if (end) {
		s->resp_done = true;
		hcm_stream_finish(s);
	}
	hcm_schedule(hc);
}

void h2_encode_trailers(struct http_stream *s, struct http_headers *t)
{
	struct h2_stream *st = s->h2s;
	if (st && t->n) {
		st->resp_trailers = xmalloc(sizeof(*st->resp_trailers));
		hdrs_init(st->resp_trailers);
		hdrs_copy(st->resp_trailers, t);
	}
	if (st) {
		st->out_end = true;
		out_more(st);
	}
	s->resp_done = true;
	hcm_stream_finish(s);
	hcm_schedule(s->hc);
}

void h2_reset_stream(struct http_stream *s)
{
	struct h2_stream *st = s->h2s;
	/* RFC 9113 8.5: a tunnel whose TCP side failed is reset with CONNECT_ERROR */
	if (st && nghttp2_submit_rst_stream(st->c->ses, NGHTTP2_FLAG_NONE, st->id,
					    st->tunnel ? NGHTTP2_CONNECT_ERROR :
							 NGHTTP2_INTERNAL_ERROR) == 0)
		st->c->ctl_queued++;
	hcm_schedule(s->hc);
}

void h2_stream_resume(struct http_stream *s)
{
	if (s->h2s)
		queue(s);
}

void h2_stream_detach(struct http_stream *s)
{
	struct h2_conn *c = s->hc->h2;
	if (s->h2s) {
		s->h2s->s = NULL;
		s->h2s = NULL;
	}
	if (s->lprev)
		s->lprev->lnext = s->lnext;
	else if (c->live == s)
		c->live = s->lnext;
	if (s->lnext)
		s->lnext->lprev = s->lprev;
	s->lprev = s->lnext = NULL;
	c->nlive--;
}

/* ---- connection ------------------------------------------------------------------ */

static void ping_cb(evutil_socket_t fd, short what, void *arg)
{
	struct h2_conn *c = arg;
	(void)fd;
	(void)what;
	if (c->hc->dead || c->hc->closing || c->flood)
		return;
	if (c->ping_out) {
		/* no PING ACK within connection_keepalive.timeout */
		stats_inc(h2st(c), shard(c), keepalive_timeout);
		log_debug("h2: keepalive timeout, closing %s", c->hc->super.peer_ip);
		nghttp2_session_terminate_session(c->ses, NGHTTP2_NO_ERROR);
		nghttp2_session_send(c->ses);
		hcm_close(c->hc, false);
		return;
	}
	nghttp2_submit_ping(c->ses, NGHTTP2_FLAG_NONE, NULL);
	c->ping_out = true;
	arm_ping(c, c->hc->cfg->h2.keepalive_timeout_ms);
	hcm_schedule(c->hc);
}

void h2_conn_start(struct hcm_conn *hc)
{
	const struct h2_options *o = &hc->cfg->h2;
	struct h2_conn *c = xcalloc(1, sizeof(*c));
	nghttp2_session_callbacks *cbs;
	nghttp2_option *opt;

	c->hc = hc;
	h2_flood_init(&c->fl);
	c->limit = hc->super.lcfg->buffer_limit;
	if (c->limit < 16384)
		c->limit = 16384;
	hc->h2 = c;
	if (nghttp2_session_callbacks_new(&cbs) || nghttp2_option_new(&opt))
		die("out of memory (nghttp2)");
	nghttp2_session_callbacks_set_send_callback(cbs, send_cb);
	nghttp2_session_callbacks_set_send_data_callback(cbs, send_data_cb);
	nghttp2_session_callbacks_set_on_begin_headers_callback(cbs, on_begin_headers);
	nghttp2_session_callbacks_set_on_header_callback(cbs, on_header);
	nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, on_frame_recv);
	nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_data_chunk);
	nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_stream_close);
	nghttp2_session_callbacks_set_on_frame_send_callback(cbs, on_frame_send);
	nghttp2_session_callbacks_set_on_begin_frame_callback(cbs, on_begin_frame);
	nghttp2_session_callbacks_set_on_invalid_frame_recv_callback(cbs, on_invalid_frame);
	nghttp2_option_set_no_auto_window_update(opt, 1);
	/* nghttp2's own bound on the PING/SETTINGS ACKs it queues (a backstop
	 * for ours, which also counts those in the output buffer) */
	nghttp2_option_set_max_outbound_ack(opt, o->max_outbound_control_frames);
	/* CONTINUATION frames per header block: nghttp2's default (8) unless
	 * max_request_headers_kb needs more 16 KiB frames */
	nghttp2_option_set_max_continuations(opt, MAX(8, hc->cfg->limits.max_head_bytes / 16384 + 2));
	/* nghttp2 keeps closed streams (for priority) up to our
	 * max_concurrent_streams, 2^31-1 by default: a long-lived connection
	 * grew by ~300 bytes per request (soak).  Priority is not used. */
	nghttp2_option_set_no_closed_streams(opt, 1);
	if (nghttp2_session_server_new2(&c->ses, cbs, c, opt))
		die("out of memory (nghttp2 session)");
	nghttp2_session_callbacks_del(cbs);
	nghttp2_option_del(opt);
	nghttp2_settings_entry iv[] = {
		{ NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, o->max_concurrent_streams },
		{ NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, o->initial_stream_window },
		{ NGHTTP2_SETTINGS_HEADER_TABLE_SIZE, o->hpack_table_size },
		/* RFC 9218: the dependency tree is not kept (nor honoured) */
		{ NGHTTP2_SETTINGS_NO_RFC7540_PRIORITIES, 1 },
		/* RFC 8441 extended CONNECT (WebSocket over HTTP/2); last, so
		 * it is left out without allow_connect */
		{ NGHTTP2_SETTINGS_ENABLE_CONNECT_PROTOCOL, 1 },
	};
	nghttp2_submit_settings(c->ses, NGHTTP2_FLAG_NONE, iv,
				ARRAY_SIZE(iv) - !o->allow_connect);
	if (o->initial_conn_window > 65535)
		nghttp2_session_set_local_window_size(c->ses, NGHTTP2_FLAG_NONE, 0,
						      (int32_t)o->initial_conn_window);
	if (o->keepalive_interval_ms) {
		c->ping_timer = evtimer_new(hc->super.w->base, ping_cb, c);
		arm_ping(c, ping_interval(c));
	}
	hcm_arm_idle(hc);
}

void h2_conn_free(struct hcm_conn *hc)
{
	struct h2_conn *c = hc->h2;
	bool active = false;
	while (c->live) {
		struct http_stream *s = c->live;
		active |= !s->done;
		hcm_stream_destroy(s);   /* unlinks itself (h2_stream_detach) */
	}
	if (active)
		stats_inc(hcmst(c), shard(c), downstream_cx_destroy_active_rq);
	while (c->streams) {
		stats_dec(h2st(c), shard(c), streams_active);
		h2s_free(c->streams);
	}
	nghttp2_session_del(c->ses);
	if (c->ping_timer)
		event_free(c->ping_timer);
	if (c->wait_ev)
		event_free(c->wait_ev);
	h2_flood_free(&c->fl);
	free(c);
}

void h2_conn_eof(struct hcm_conn *hc)
{
	struct h2_conn *c = hc->h2;
	for (struct http_stream *s = c->live; s; s = s->lnext) {
		if (s->done || !s->h2s || !s->h2s->started)
			continue;
		s->done = true;
		s->rflags |= RF_BIT(RF_DC);
		stats_inc(hcmst(c), shard(c), downstream_rq_rx_reset);
		for (size_t i = 0; i < s->nfilters; i++)
			if (s->filters[i].ops->on_reset)
				s->filters[i].ops->on_reset(s->filters[i].ctx, s);
	}
}

void h2_conn_drain(struct hcm_conn *hc)
{
	struct h2_conn *c = hc->h2;
	if (!c->goaway) {
		c->goaway = true;
		nghttp2_submit_goaway(c->ses, NGHTTP2_FLAG_NONE,
				      nghttp2_session_get_last_proc_stream_id(c->ses),
				      NGHTTP2_NO_ERROR, NULL, 0);
	}
	hc->close_after = true;
	hcm_schedule(hc);
}

static void run_queue(struct h2_conn *c)
{
	while (c->qhead && !c->hc->dead) {
		struct http_stream *s = c->qhead;
		c->qhead = s->qnext;
		if (!c->qhead)
			c->qtail = NULL;
		s->qnext = NULL;
		s->queued = false;
		if (s->done) {
			hcm_stream_destroy(s);
			continue;
		}
		struct h2_stream *st = s->h2s;
		if (!st)
			continue;
		if (st->unblock) {
			st->unblock = false;
			if (s->blocked && evbuffer_get_length(st->out) <= c->limit / 2) {
				s->blocked = false;
				for (size_t i = 0; i < s->nfilters && !s->done; i++)
					if (s->filters[i].ops->on_downstream_writable)
						s->filters[i].ops->on_downstream_writable(s->filters[i].ctx, s);
			}
		}
		if (s->h2s)
			deliver(s->h2s);
	}
}

/* Close once the GOAWAY (and whatever precedes it) is flushed; a peer that
 * does not read gets 1 s (Envoy's default delayed_close_timeout). */
static void close_after_flush(struct hcm_conn *hc)
{
	struct timeval tv = { 1, 0 };
	evtimer_add(hc->timer, &tv);
	hcm_close_after_flush(hc);
}

void h2_conn_process(struct hcm_conn *hc)
{
	struct h2_conn *c = hc->h2;
	struct conn *bev = hc->super.bev;
	struct evbuffer *in = conn_input(bev);

	if (hc->dead || hc->closing || c->in_send)
		return;
	if (c->flood) {
		if (!c->lingering)
			flood_close(c);
		else   /* lingering close after a flood: discard */
			evbuffer_drain(in, evbuffer_get_length(in));
		return;
	}
	if (evbuffer_get_length(in))
		c->cycle_requests = 0;   /* a read: a new I/O cycle */
	while (evbuffer_get_length(in) && !hc->dead && !c->too_many_resets && !c->flood) {
		struct evbuffer_iovec v;
		if (evbuffer_peek(in, -1, NULL, &v, 1) < 1)
			break;
		ssize_t rv = nghttp2_session_mem_recv(c->ses, v.iov_base, v.iov_len);
		if (rv < 0) {
			if (rv == NGHTTP2_ERR_FLOODED)   /* nghttp2's ACK bound */
				c->flood = H2_FLOOD_OUTBOUND_CONTROL;
			else if (rv == NGHTTP2_ERR_TOO_MANY_CONTINUATIONS)
				c->flood = H2_FLOOD_CONTINUATION;
			if (c->flood)
				break;   /* rv may be a callback failure we asked for */
			stats_inc(hcmst(c), shard(c), downstream_cx_protocol_error);
			log_debug("h2: %s from %s", nghttp2_strerror((int)rv), hc->super.peer_ip);
			evbuffer_drain(in, evbuffer_get_length(in));
			nghttp2_session_terminate_session(c->ses, NGHTTP2_PROTOCOL_ERROR);
			break;
		}
		stats_add(hcmst(c), shard(c), downstream_cx_rx_bytes_total, rv);
		evbuffer_drain(in, (size_t)rv);
	}
	if (!c->flood && !hc->dead)
		c->flood = outbound_check(c);   /* what the last frames queued */
	if (c->flood && !hc->dead) {
		flood_close(c);
		return;
	}
	if (c->too_many_resets && !hc->dead) {
		/* GOAWAY ENHANCE_YOUR_CALM, then close once it is written (at
		 * most 1 s for a peer that does not read); nothing more is read */
		stats_inc(hcmst(c), shard(c), downstream_rq_too_many_premature_resets);
		log_debug("h2: too many premature stream resets from %s: closing", hc->super.peer_ip);
		evbuffer_drain(in, evbuffer_get_length(in));
		nghttp2_session_terminate_session(c->ses, NGHTTP2_ENHANCE_YOUR_CALM);
		c->in_send = true;
		int rv = nghttp2_session_send(c->ses);
		c->in_send = false;
		if (rv)
			hcm_close(hc, false);
		else
			close_after_flush(hc);
		return;
	}
	for (int round = 0; round < 8 && !hc->dead; round++) {
		run_queue(c);
		if (hc->dead)
			return;
		c->in_send = true;
		int rv = nghttp2_session_send(c->ses);
		c->in_send = false;
		if (c->flood) {
			flood_close(c);
			return;
		}
		if (rv) {
			log_debug("h2: send: %s", nghttp2_strerror(rv));
			hcm_close(hc, false);
			return;
		}
		if (!c->qhead)
			break;
	}
	if (c->qhead)
		hcm_schedule(hc);   /* more work than one round allows: yield */
	if (c->send_blocked)
		conn_set_write_lowat(bev, c->limit / 2);
	if (!nghttp2_session_want_read(c->ses) && !nghttp2_session_want_write(c->ses)) {
		close_after_flush(hc);
		return;
	}
	if (c->nlive == 0) {
		if (hc->close_after && !c->goaway)
			h2_conn_drain(hc);
		if (hc->close_after && !nghttp2_session_want_write(c->ses)) {
			close_after_flush(hc);
			return;
		}
		if (!event_pending(hc->timer, EV_TIMEOUT, NULL))
			hcm_arm_idle(hc);
	}
	/* the peer must read what we write: stop reading while output piles up */
	if (evbuffer_get_length(conn_output(bev)) > c->limit)
		conn_disable_read(bev);
	else
		conn_enable_read(bev);
}

void h2_conn_on_write(struct hcm_conn *hc)
{
	struct h2_conn *c = hc->h2;
	if (c->lingering) {
		if (!c->shut_wr && !evbuffer_get_length(conn_output(hc->super.bev))) {
			c->shut_wr = true;
			conn_shutdown_write(hc->super.bev);   /* FIN after the GOAWAY */
		}
		return;
	}
	if (c->send_blocked) {
		c->send_blocked = false;
		conn_set_write_lowat(hc->super.bev, 0);
	}
	h2_conn_process(hc);
}
