/* h2_client.c - upstream HTTP/2 client codec (nghttp2) and multiplexed
 * pool connections.  See h2_client.h. */
#include "h2_client.h"

#include <nghttp2/nghttp2.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include "pool.h"
#include "../http/h2_flood.h"
#include "../conn.h"
#include "../worker.h"
#include "../log.h"

enum h2c_state { H2C_CONNECTING, H2C_READY, H2C_CLOSED };

/* pending notifications for the owner */
#define P_HEADERS  0x01
#define P_BODY     0x02
#define P_RESET    0x04
#define P_WRITABLE 0x08
#define P_CONTINUE 0x10

struct h2c_stream {
	struct h2c_conn *c;                  /* not owned; NULL once the connection is gone */
	int32_t id;                          /* 0 until the request is submitted */
	const struct h2c_owner_ops *ops;
	void *owner;
	struct http_headers hdrs;            /* response headers */
	struct http_headers *trailers;       /* owned: response trailers, may be NULL */
	struct http_headers *req_trailers;   /* owned: request trailers to send, may be NULL */
	struct evbuffer *in;                 /* owned: response DATA not consumed by the owner */
	struct evbuffer *out;                /* owned: request DATA not framed yet */
	uint32_t pend;                       /* P_* notifications to deliver */
	uint32_t reset_code;
	bool refused, head_seen, recv_end, send_end, deferred, out_blocked;
	bool ng_closed, released, counted, not_sent, in_cb, free_later;
	bool rst_recv;                       /* the peer sent RST_STREAM */
	struct h2c_stream *prev, *next;      /* connection's stream list */
};

struct h2c_conn {
	struct conn *bev;                    /* owned */
	struct pool *p;                      /* not owned */
	nghttp2_session *ng;                 /* owned */
	enum h2c_state state;
	enum cb_priority prio;               /* max_connections slot it holds */
	bool goaway, dead, remote_close, ping_out, kicked;
	bool lingering;                      /* flood: GOAWAY written, discarding input */
	bool shut_wr;                        /* lingering: FIN sent after the GOAWAY */
	enum h2_flood_kind flood;            /* the limit exceeded: GOAWAY and close */
	struct h2_flood fl;                  /* flood limits (h2_flood.h) */
	uint32_t ctl_queued;                 /* control frames nghttp2 queued for us
						(ACKs, RST_STREAMs; an estimate) */
	unsigned nactive;                    /* streams counted against capacity */
	uint32_t ntotal;                     /* streams opened in its life */
	uint32_t peer_max;                   /* peer's SETTINGS_MAX_CONCURRENT_STREAMS */
	uint32_t limit;                      /* output / per-stream buffer limit */
	uint64_t created_ms;
	struct event *timer;                 /* owned: connect timeout, then idle timeout */
	struct event *ev;                    /* owned: deferred pump */
	struct event *ping_timer;            /* owned: keepalive, may be NULL */
	struct h2c_stream *streams;
	struct h2c_conn *prev, *next;        /* pool's HTTP/2 list */
};

static const struct stat_desc h2c_stat_desc[] = { H2C_STATS(STATS_DESC) };

struct stats_scope *h2c_stats_new(struct stats_store *st, const char *cluster)
{
	char *name = xasprintf("cluster.%s.http2", cluster);
	struct stats_scope *s = stats_scope_new(st, name, "cluster.http2", "envoy_cluster_name",
						cluster, h2c_stat_desc, H2C_STATS_N);
	free(name);
	return s;
}

static inline struct cluster *ccl(const struct h2c_conn *c) { return c->p->cl; }
static inline unsigned csh(const struct h2c_conn *c) { return c->p->w->shard; }
static inline struct stats_scope *h2st(const struct h2c_conn *c) { return c->p->cl->ext->h2_stats; }

static void pump(struct h2c_conn *c);
static void conn_close(struct h2c_conn *c);

static void schedule(struct h2c_conn *c)
{
	if (c && c->state != H2C_CLOSED)
		event_active(c->ev, EV_TIMEOUT, 0);
}

static void timer_ms(struct event *ev, uint64_t ms)
{
	struct timeval tv = { (time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000 };
	evtimer_add(ev, &tv);
}

/* ---- streams ------------------------------------------------------------------ */

static void stream_uncount(struct h2c_stream *st)
{
	if (st->counted && st->c) {
		st->counted = false;
		st->c->nactive--;
		if (h2st(st->c))
			stats_dec(h2st(st->c), csh(st->c), streams_active);
		st->c->kicked = true;   /* capacity freed */
	}
}

static void stream_free(struct h2c_stream *st)
{
	if (st->c) {
		stream_uncount(st);
		if (st->prev)
			st->prev->next = st->next;
		else
			st->c->streams = st->next;
		if (st->next)
			st->next->prev = st->prev;
		if (st->id > 0 && !st->ng_closed)
			nghttp2_session_set_stream_user_data(st->c->ng, st->id, NULL);
	}
	hdrs_free(&st->hdrs);
	if (st->trailers) {
		hdrs_free(st->trailers);
		free(st->trailers);
	}
	if (st->req_trailers) {
		hdrs_free(st->req_trailers);
		free(st->req_trailers);
	}
	evbuffer_free(st->in);
	evbuffer_free(st->out);
	free(st);
}

struct h2c_stream *h2c_stream_new(struct h2c_conn *c)
{
	struct h2c_stream *st = xcalloc(1, sizeof(*st));
	hdrs_init(&st->hdrs);
	st->in = evbuffer_new();
	st->out = evbuffer_new();
	st->c = c;
	st->counted = true;
	st->next = c->streams;
	if (c->streams)
		c->streams->prev = st;
	c->streams = st;
	c->nactive++;
	c->ntotal++;
	if (h2st(c))
		stats_inc(h2st(c), csh(c), streams_active);
	event_del(c->timer);   /* not idle */
	return st;
}

void h2c_stream_set_owner(struct h2c_stream *st, const struct h2c_owner_ops *ops, void *arg)
{
	st->ops = ops;
	st->owner = arg;
}

static ssize_t data_read_cb(nghttp2_session *ng, int32_t id, uint8_t *buf, size_t length,
			    uint32_t *flags, nghttp2_data_source *src, void *ud)
{
	struct h2c_stream *st = src->ptr;
	struct h2c_conn *c = ud;
	(void)ng;
	if (!st)
		return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
	size_t n = MIN(length, evbuffer_get_length(st->out));
	if (n)
		evbuffer_remove(st->out, buf, n);
	if (!evbuffer_get_length(st->out) && st->send_end) {
		*flags |= NGHTTP2_DATA_FLAG_EOF;
		if (st->req_trailers) {
			nghttp2_nv nv[64];
			size_t k = 0;
			for (uint32_t i = 0; i < st->req_trailers->n && k < 64; i++) {
				nv[k].name = (uint8_t *)hdrs_name(st->req_trailers, i);
				nv[k].namelen = st->req_trailers->f[i].name_len;
				nv[k].value = (uint8_t *)hdrs_value(st->req_trailers, i);
				nv[k].valuelen = st->req_trailers->f[i].value_len;
				nv[k].flags = NGHTTP2_NV_FLAG_NONE;
				k++;
			}
			*flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
			nghttp2_submit_trailer(ng, id, nv, k);
		}
	} else if (!n) {
		st->deferred = true;
		return NGHTTP2_ERR_DEFERRED;
	}
	if (st->out_blocked && evbuffer_get_length(st->out) <= c->limit / 2) {
		st->out_blocked = false;
		st->pend |= P_WRITABLE;
	}
	return (ssize_t)n;
}

static size_t build_nva(const struct http_headers *h, nghttp2_nv *nv, size_t cap)
{
	static const struct { const char *n; size_t l; } drop[] = {
		{ "connection", 10 }, { "keep-alive", 10 }, { "proxy-connection", 16 },
		{ "transfer-encoding", 17 }, { "upgrade", 7 }, { "host", 4 },
	};
	size_t n = 0;
	for (int pass = 0; pass < 2; pass++)
		for (uint32_t i = 0; i < h->n && n < cap; i++) {
			const char *name = hdrs_name(h, i), *val = hdrs_value(h, i);
			size_t nl = h->f[i].name_len, vl = h->f[i].value_len;
			bool pseudo = nl && name[0] == ':';
			if (pseudo != (pass == 0))
				continue;
			bool skip = false;
			for (size_t k = 0; k < ARRAY_SIZE(drop) && !skip; k++)
				skip = nl == drop[k].l && !memcmp(name, drop[k].n, nl);
			/* HTTP/2 allows te only as "trailers" */
			if (nl == 2 && !memcmp(name, "te", 2) && !(vl == 8 && !strncasecmp(val, "trailers", 8)))
				skip = true;
			if (skip)
				continue;
			nv[n].name = (uint8_t *)name;
			nv[n].namelen = nl;
			nv[n].value = (uint8_t *)val;
			nv[n].valuelen = vl;
			nv[n].flags = NGHTTP2_NV_FLAG_NONE;
			n++;
		}
	return n;
}

void h2c_stream_send_headers(struct h2c_stream *st, const struct http_headers *h, bool end)
{
	struct h2c_conn *c = st->c;
	nghttp2_nv stack[64], *nv = h->n <= 64 ? stack : xmalloc(h->n * sizeof(*nv));
	size_t n = build_nva(h, nv, h->n);
	nghttp2_data_provider dp = { .source.ptr = st, .read_callback = data_read_cb };
	st->send_end = end;
	if (!c) {
		if (nv != stack)
			free(nv);
		return;
	}
	int32_t id = nghttp2_submit_request(c->ng, NULL, nv, n, end ? NULL : &dp, st);
	if (nv != stack)
		free(nv);
	if (id < 0) {
		/* cannot start a stream (GOAWAY raced): refused */
		st->refused = true;
		st->not_sent = true;
		st->pend |= P_RESET;
		stream_uncount(st);
	} else {
		st->id = id;
		h2_flood_stream_opened(&c->fl);   /* a stream we opened (Envoy's client count) */
	}
	schedule(c);
}

bool h2c_stream_send_data(struct h2c_stream *st, struct evbuffer *data, bool end)
{
	size_t n = evbuffer_get_length(data);
	if (!st->c || st->ng_closed || st->send_end) {
		evbuffer_drain(data, n);
		return false;
	}
	evbuffer_add_buffer(st->out, data);
	if (end)
		st->send_end = true;
	if (evbuffer_get_length(st->out) > st->c->limit)
		st->out_blocked = true;
	if (st->deferred && st->id > 0) {
		st->deferred = false;
		nghttp2_session_resume_data(st->c->ng, st->id);
	}
	schedule(st->c);
	return st->out_blocked;
}

void h2c_stream_send_trailers(struct h2c_stream *st, const struct http_headers *t)
{
	if (!st->c || st->ng_closed || st->send_end)
		return;
	if (t->n) {
		st->req_trailers = xmalloc(sizeof(*st->req_trailers));
		hdrs_init(st->req_trailers);
		hdrs_copy(st->req_trailers, t);
	}
	st->send_end = true;
	if (st->deferred && st->id > 0) {
		st->deferred = false;
		nghttp2_session_resume_data(st->c->ng, st->id);
	}
	schedule(st->c);
}

size_t h2c_stream_out_len(const struct h2c_stream *st) { return evbuffer_get_length(st->out); }
struct evbuffer *h2c_stream_input(struct h2c_stream *st) { return st->in; }
bool h2c_stream_recv_done(const struct h2c_stream *st) { return st->recv_end; }
struct http_headers *h2c_stream_trailers(struct h2c_stream *st) { return st->trailers; }

void h2c_stream_consumed(struct h2c_stream *st, size_t n)
{
	if (!st->c || !n)
		return;
	if (st->id > 0 && !st->ng_closed)
		nghttp2_session_consume(st->c->ng, st->id, n);
	else
		nghttp2_session_consume_connection(st->c->ng, n);
	schedule(st->c);
}

void h2c_stream_release(struct h2c_stream *st)
{
	if (!st)
		return;
	st->released = true;
	st->ops = NULL;
	st->owner = NULL;
	struct h2c_conn *c = st->c;
	if (c) {
		size_t left = evbuffer_get_length(st->in);
		if (left) {
			if (st->id > 0 && !st->ng_closed)
				nghttp2_session_consume(c->ng, st->id, left);
			else
				nghttp2_session_consume_connection(c->ng, left);
			evbuffer_drain(st->in, left);
		}
		if (st->id > 0 && !st->ng_closed) {
			/* still open: cancel it; freed when nghttp2 closes it */
			if (!(st->recv_end && st->send_end && !evbuffer_get_length(st->out))) {
				if (nghttp2_submit_rst_stream(c->ng, NGHTTP2_FLAG_NONE, st->id,
							      NGHTTP2_CANCEL) == 0)
					c->ctl_queued++;
				if (h2st(c))
					stats_inc(h2st(c), csh(c), tx_reset);
			}
			schedule(c);
			return;
		}
		schedule(c);
	}
	if (st->in_cb)
		st->free_later = true;
	else
		stream_free(st);
}

/* ---- nghttp2 callbacks ------------------------------------------------------------ */

/* Frames queued for the peer and not written to the socket yet: those in
 * the output buffer (fl) and those nghttp2 still holds. */
static enum h2_flood_kind outbound_check(struct h2c_conn *c)
{
	size_t queued = nghttp2_session_get_outbound_queue_size(c->ng);
	if (!queued)
		c->ctl_queued = 0;
	h2_flood_written(&c->fl, evbuffer_get_length(conn_output(c->bev)));
	return h2_flood_outbound(&c->fl, &ccl(c)->ext->h2, queued, c->ctl_queued);
}

static ssize_t send_cb(nghttp2_session *ng, const uint8_t *data, size_t len, int flags, void *ud)
{
	struct h2c_conn *c = ud;
	(void)ng;
	(void)flags;
	struct evbuffer *out = conn_output(c->bev);
	if (c->flood)
		return NGHTTP2_ERR_WOULDBLOCK;   /* closing: nothing more is framed */
	if (evbuffer_get_length(out) > c->limit)
		return NGHTTP2_ERR_WOULDBLOCK;
	evbuffer_add(out, data, len);
	stats_add(ccl(c)->stats, csh(c), upstream_cx_tx_bytes_total, (int64_t)len);
	/* nghttp2 hands us one whole frame per call (we never take part of
	 * one; DATA frames are copied into its buffer, header included) */
	uint8_t type = len >= 9 ? data[3] : 0xff;
	h2_flood_sent(&c->fl, len, type);
	if (h2_flood_is_control(type) && c->ctl_queued)
		c->ctl_queued--;
	c->flood = outbound_check(c);
	return (ssize_t)len;
}

/* Every frame header from the peer, before its payload is processed. */
static int on_begin_frame(nghttp2_session *ng, const nghttp2_frame_hd *hd, void *ud)
{
	struct h2c_conn *c = ud;
	enum h2_flood_kind k;
	(void)ng;
	k = h2_flood_inbound(&c->fl, &ccl(c)->ext->h2, hd->type, hd->flags, hd->length);
	if (!k)
		k = outbound_check(c);
	if (k) {
		c->flood = k;
		return NGHTTP2_ERR_CALLBACK_FAILURE;   /* stop parsing now */
	}
	return 0;
}

static struct h2c_stream *stream_of(struct h2c_conn *c, int32_t id)
{
	return nghttp2_session_get_stream_user_data(c->ng, id);
}

static int on_begin_headers(nghttp2_session *ng, const nghttp2_frame *f, void *ud)
{
	struct h2c_stream *st = stream_of(ud, f->hd.stream_id);
	(void)ng;
	if (!st)
		return 0;
	if (!st->head_seen) {
		hdrs_clear(&st->hdrs);
	} else if (!st->trailers) {
		st->trailers = xmalloc(sizeof(*st->trailers));
		hdrs_init(st->trailers);
	}
	return 0;
}

static int on_header(nghttp2_session *ng, const nghttp2_frame *f, const uint8_t *name, size_t nl,
		     const uint8_t *value, size_t vl, uint8_t flags, void *ud)
{
	struct h2c_stream *st = stream_of(ud, f->hd.stream_id);
	(void)ng;
	(void)flags;
	if (!st || f->hd.type != NGHTTP2_HEADERS)
		return 0;
	hdrs_add(st->head_seen ? st->trailers : &st->hdrs, (const char *)name, nl,
		 (const char *)value, vl);
	return 0;
}

static int on_frame_recv(nghttp2_session *ng, const nghttp2_frame *f, void *ud)
{
	struct h2c_conn *c = ud;
	struct h2c_stream *st;
	switch (f->hd.type) {
	case NGHTTP2_HEADERS:
		if (!(st = stream_of(c, f->hd.stream_id)) || st->released)
			return 0;
		if (!st->head_seen) {
			const char *sv = hdrs_get(&st->hdrs, ":status", NULL);
			int status = sv ? atoi(sv) : 0;
			if (status >= 100 && status < 200) {
				/* interim: the owner may pass a 100 on (proxy_100_continue) */
				hdrs_clear(&st->hdrs);
				if (status == 100)
					st->pend |= P_CONTINUE;
				return 0;
			}
			st->head_seen = true;
			st->pend |= P_HEADERS;
		} else {
			st->pend |= P_BODY;
			if (h2st(c))
				stats_inc(h2st(c), csh(c), trailers);
		}
		if (f->hd.flags & NGHTTP2_FLAG_END_STREAM)
			st->recv_end = true;
		break;
	case NGHTTP2_DATA:
		if ((f->hd.flags & NGHTTP2_FLAG_END_STREAM) && (st = stream_of(c, f->hd.stream_id))) {
			st->recv_end = true;
			st->pend |= P_BODY;
		}
		break;
	case NGHTTP2_SETTINGS:
		if (f->hd.flags & NGHTTP2_FLAG_ACK)
			break;
		c->ctl_queued++;   /* nghttp2 queues the SETTINGS ACK */
		c->peer_max = nghttp2_session_get_remote_settings(ng, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS);
		if (c->state == H2C_CONNECTING) {
			c->state = H2C_READY;
			event_del(c->timer);
		}
		c->kicked = true;
		break;
	case NGHTTP2_RST_STREAM:
		if ((st = stream_of(c, f->hd.stream_id)))
			st->rst_recv = true;
		break;
	case NGHTTP2_GOAWAY:
		c->goaway = true;
		c->kicked = true;   /* waiting requests need another connection */
		if (h2st(c))
			stats_inc(h2st(c), csh(c), goaway_received);
		break;
	case NGHTTP2_PING:
		if (!(f->hd.flags & NGHTTP2_FLAG_ACK))
			c->ctl_queued++;   /* nghttp2 queues the PING ACK */
		else if (c->ping_out) {
			c->ping_out = false;
			timer_ms(c->ping_timer, ccl(c)->ext->h2.keepalive_interval_ms);
		}
		break;
	default:
		break;
	}
	return 0;
}

static int on_data_chunk(nghttp2_session *ng, uint8_t flags, int32_t id, const uint8_t *data,
			 size_t len, void *ud)
{
	struct h2c_stream *st = stream_of(ud, id);
	(void)flags;
	if (!st || st->released) {
		nghttp2_session_consume(ng, id, len);
		return 0;
	}
	evbuffer_add(st->in, data, len);
	st->pend |= P_BODY;
	return 0;
}

static int on_stream_close(nghttp2_session *ng, int32_t id, uint32_t code, void *ud)
{
	struct h2c_conn *c = ud;
	struct h2c_stream *st = stream_of(c, id);
	(void)ng;
	if (!st)
		return 0;
	st->ng_closed = true;
	stream_uncount(st);
	if (st->released) {
		stream_free(st);
		return 0;
	}
	if (!st->recv_end) {
		st->reset_code = code;
		st->refused = code == NGHTTP2_REFUSED_STREAM || st->not_sent;
		st->pend |= P_RESET;
		if (h2st(c)) {
			if (st->refused)
				stats_inc(h2st(c), csh(c), refused_stream);
			if (code != NGHTTP2_NO_ERROR && !st->not_sent)
				stats_inc(h2st(c), csh(c), rx_reset);
		}
	}
	return 0;
}

static int on_frame_not_send(nghttp2_session *ng, const nghttp2_frame *f, int err, void *ud)
{
	struct h2c_stream *st;
	(void)err;
	if (f->hd.type != NGHTTP2_HEADERS || !(st = stream_of(ud, f->hd.stream_id)))
		return 0;
	/* the request never left (GOAWAY received, stream limit): refused,
	 * the peer processed nothing */
	st->not_sent = true;
	(void)ng;
	return 0;
}

static int on_invalid_frame(nghttp2_session *ng, const nghttp2_frame *f, int err, void *ud)
{
	struct h2c_conn *c = ud;
	(void)ng;
	(void)f;
	(void)err;
	c->ctl_queued++;   /* nghttp2 answers with RST_STREAM or GOAWAY */
	if (h2st(c))
		stats_inc(h2st(c), csh(c), rx_messaging_error);
	return 0;
}

/* ---- connection ------------------------------------------------------------------- */

static bool has_room(const struct h2c_conn *c)
{
	const struct cluster *cl = ccl(c);
	uint32_t cap = MIN(cl->ext->h2.max_concurrent_streams, c->peer_max);
	return c->state == H2C_READY && !c->goaway && !c->dead && !c->p->w->draining &&
	       c->nactive < cap &&
	       (!cl->max_requests_per_connection || c->ntotal < cl->max_requests_per_connection);
}

struct h2c_conn *h2c_pool_pick(struct pool *p)
{
	for (struct h2c_conn *c = p->h2; c; c = c->next)
		if (has_room(c))
			return c;
	return NULL;
}

unsigned h2c_pool_promised(const struct pool *p)
{
	unsigned n = 0;
	uint32_t cap = p->cl->ext->h2.max_concurrent_streams;
	if (p->cl->max_requests_per_connection && p->cl->max_requests_per_connection < cap)
		cap = p->cl->max_requests_per_connection;
	for (const struct h2c_conn *c = p->h2; c; c = c->next)
		if (c->state == H2C_CONNECTING)
			n = cap > UINT32_MAX - n ? UINT32_MAX : n + cap;
	return n;
}

/* Deliver the owners' notifications, one at a time (an owner callback may
 * add, release or reset streams of this connection). */
static void deliver(struct h2c_conn *c)
{
again:
	for (struct h2c_stream *st = c->streams; st; st = st->next) {
		if (!st->pend)
			continue;
		uint32_t pend = st->pend;
		if (st->released || !st->ops) {
			st->pend = 0;
			continue;
		}
		st->in_cb = true;
		if (pend & P_CONTINUE) {
			st->pend &= ~P_CONTINUE;
			if (st->ops->on_continue)
				st->ops->on_continue(st->owner, st);
		} else if (pend & P_HEADERS) {
			st->pend &= ~P_HEADERS;
			bool end = st->recv_end && !evbuffer_get_length(st->in) && !st->trailers;
			if (end)
				st->pend &= ~P_BODY;
			st->ops->on_headers(st->owner, st, &st->hdrs, end);
		} else if (pend & P_BODY) {
			st->pend &= ~P_BODY;
			st->ops->on_body(st->owner, st);
		} else if (pend & P_RESET) {
			st->pend = 0;
			st->ops->on_reset(st->owner, st, st->reset_code,
					  st->refused ? H2C_RESET_REFUSED :
					  st->rst_recv ? H2C_RESET_REMOTE : H2C_RESET_PROTOCOL);
		} else if (pend & P_WRITABLE) {
			st->pend &= ~P_WRITABLE;
			if (st->ops->on_writable)
				st->ops->on_writable(st->owner, st);
		}
		st->in_cb = false;
		if (st->free_later)
			stream_free(st);
		goto again;
	}
}

/* Detach every stream from c (they no longer count against it); the
 * caller hands the list to lost_streams() once it is done with c. */
static struct h2c_stream *detach_streams(struct h2c_conn *c)
{
	struct h2c_stream *list = c->streams;
	for (struct h2c_stream *st = list; st; st = st->next) {
		stream_uncount(st);
		st->c = NULL;
	}
	c->streams = NULL;
	return list;
}

/* Owners of streams detached from a lost connection: those without a
 * complete response are reset.  An owner may close connections (of this
 * pool too): the caller must not touch its connection afterwards. */
static void lost_streams(struct h2c_stream *list)
{
	struct h2c_stream *st, *next;
	for (st = list; st; st = next) {
		next = st->next;
		st->prev = st->next = NULL;
		if (st->released) {
			stream_free(st);
			continue;
		}
		if (!st->recv_end) {
			st->pend = 0;
			if (st->ops)
				st->ops->on_reset(st->owner, st, NGHTTP2_CONNECT_ERROR,
						  st->not_sent ? H2C_RESET_REFUSED : H2C_RESET_CONNECTION);
		} else if (st->pend && st->ops) {
			st->pend = 0;
			st->ops->on_body(st->owner, st);
		}
	}
}

static void conn_close(struct h2c_conn *c)
{
	struct pool *p = c->p;
	struct h2c_stream *list;
	bool remote = c->remote_close;

	if (c->state == H2C_CLOSED)
		return;
	c->state = H2C_CLOSED;
	if (c->prev)
		c->prev->next = c->next;
	else
		p->h2 = c->next;
	if (c->next)
		c->next->prev = c->prev;
	/* owners learn of the loss below, once c is gone */
	list = detach_streams(c);
	nghttp2_session_del(c->ng);
	conn_free(c->bev);
	event_free(c->timer);
	event_free(c->ev);
	if (c->ping_timer)
		event_free(c->ping_timer);
	h2_flood_free(&c->fl);
	enum cb_priority prio = c->prio;
	uint64_t created = c->created_ms;
	free(c);
	lost_streams(list);
	pool_cx_closed(p, prio, created, remote);
}

/* A flood limit was exceeded (c->flood): count it once, end every stream
 * as a connection reset, and write GOAWAY ENHANCE_YOUR_CALM ourselves
 * (whatever nghttp2 still queues is never framed).  An outbound flood
 * means the upstream does not read: what it has not started to receive is
 * dropped, so the GOAWAY follows the last whole frame.  Then the
 * connection lingers in the pool's list without room for streams: once the
 * GOAWAY is written the sending side is shut down (FIN after it) and input
 * is discarded (unread input at close would make the kernel answer with a
 * reset that destroys the GOAWAY); it closes when the upstream closes or
 * 1 s later (c->timer), or with the pool's idle connections.  c may be
 * freed on return (an owner may close idle connections). */
static void flood_close(struct h2c_conn *c)
{
	struct evbuffer *out = conn_output(c->bev);
	struct evbuffer *in = conn_input(c->bev);
	struct pool *p = c->p;

	if (h2st(c)) {
		stats_inc(h2st(c), csh(c), h2_flood_stat(outbound_flood, c->flood));
		stats_inc(h2st(c), csh(c), goaway_sent);
	}
	stats_inc(ccl(c)->stats, csh(c), upstream_cx_protocol_error);
	log_debug("upstream h2 %s: %s: GOAWAY ENHANCE_YOUR_CALM, closing", p->host->addr_str,
		  h2c_stat_desc[h2_flood_stat(outbound_flood, c->flood)].name);
	evbuffer_drain(in, evbuffer_get_length(in));
	/* last stream id 0: the upstream opens none (push is disabled) */
	size_t glen = h2_flood_goaway(&c->fl, c->flood, out, 0);
	stats_add(ccl(c)->stats, csh(c), upstream_cx_tx_bytes_total, (int64_t)glen);
	c->lingering = true;
	c->goaway = true;          /* no room for streams (has_room) */
	c->state = H2C_READY;      /* not promised to waiting requests any more */
	if (c->ping_timer)
		event_del(c->ping_timer);
	conn_set_write_lowat(c->bev, 0);   /* the write callback says when it is out */
	conn_enable_read(c->bev);
	event_del(c->timer);
	timer_ms(c->timer, 1000);
	struct h2c_stream *list = detach_streams(c);
	pool_kick(p);              /* waiting requests need another connection */
	lost_streams(list);
}

static void connect_failed(struct h2c_conn *c, enum pool_err err, const char *detail)
{
	struct pool *p = c->p;
	struct cluster *cl = ccl(c);
	uint32_t cap = cl->ext->h2.max_concurrent_streams;
	stats_inc(cl->stats, csh(c), upstream_cx_connect_fail);
	if (err == POOL_E_TIMEOUT)
		stats_inc(cl->stats, csh(c), upstream_cx_connect_timeout);
	host_stat_add(p->host, csh(c), HOST_CX_CONNECT_FAIL, 1);
	conn_close(c);
	/* the requests this connection was to take fail (the router retries) */
	pool_h2_fail_pending(p, cap, err, detail);
}

/* The connection's state after events: close it when it is dead, drained
 * (GOAWAY or max_requests_per_connection) and idle, or idle while the
 * worker drains or its host left the host set; otherwise keep the idle
 * timer. */
static void settle(struct h2c_conn *c)
{
	struct cluster *cl = ccl(c);
	if (c->dead) {
		conn_close(c);
		return;
	}
	if (c->state != H2C_READY)
		return;
	if (!c->nactive) {
		bool spent = cl->max_requests_per_connection && c->ntotal >= cl->max_requests_per_connection;
		if (spent)
			stats_inc(cl->stats, csh(c), upstream_cx_max_requests);
		if (c->goaway || spent || c->p->w->draining || c->p->orphan) {
			conn_close(c);
			return;
		}
		if (cl->idle_timeout_ms && !evtimer_pending(c->timer, NULL))
			timer_ms(c->timer, cl->idle_timeout_ms);
	}
	if (c->kicked) {
		c->kicked = false;
		pool_kick(c->p);
	}
}

static void pump(struct h2c_conn *c)
{
	bool more = false;
	if (c->lingering) {   /* after a flood: nothing but the close */
		if (c->dead)
			conn_close(c);
		return;
	}
	if (c->flood) {
		flood_close(c);
		return;
	}
	for (int i = 0; i < 8 && c->state != H2C_CLOSED; i++) {
		deliver(c);
		if (c->dead)
			break;
		if (nghttp2_session_send(c->ng)) {
			c->dead = true;
			break;
		}
		if (c->flood)
			break;
		more = false;
		for (struct h2c_stream *st = c->streams; st && !more; st = st->next)
			more = st->pend && !st->released && st->ops;
		if (!more)
			break;
	}
	if (c->state == H2C_CLOSED)
		return;
	if (c->flood && !c->dead) {
		flood_close(c);
		return;
	}
	if (more)
		schedule(c);   /* bounded work per event: the rest from the loop */
	if (!c->dead && !nghttp2_session_want_read(c->ng) && !nghttp2_session_want_write(c->ng))
		c->dead = true;
	settle(c);
}

static void ev_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	pump(arg);
}

static void read_cb(struct conn *bev, void *arg)
{
	struct h2c_conn *c = arg;
	struct evbuffer *in = conn_input(bev);
	if (c->lingering) {   /* after a flood: discard */
		evbuffer_drain(in, evbuffer_get_length(in));
		return;
	}
	while (evbuffer_get_length(in) && !c->dead && !c->flood) {
		struct evbuffer_iovec v;
		evbuffer_peek(in, -1, NULL, &v, 1);
		ssize_t n = nghttp2_session_mem_recv(c->ng, v.iov_base, v.iov_len);
		if (n < 0) {
			if (n == NGHTTP2_ERR_FLOODED)   /* nghttp2's bound on queued ACKs */
				c->flood = H2_FLOOD_OUTBOUND_CONTROL;
			else if (n == NGHTTP2_ERR_TOO_MANY_CONTINUATIONS)
				c->flood = H2_FLOOD_CONTINUATION;
			if (c->flood)
				break;   /* n may be the callback failure on_begin_frame asked for */
			log_debug("upstream h2 %s: %s", c->p->host->addr_str, nghttp2_strerror((int)n));
			stats_inc(ccl(c)->stats, csh(c), upstream_cx_protocol_error);
			c->dead = true;
			break;
		}
		evbuffer_drain(in, (size_t)n);
		stats_add(ccl(c)->stats, csh(c), upstream_cx_rx_bytes_total, n);
	}
	if (!c->flood && !c->dead)
		c->flood = outbound_check(c);   /* what the last frames queued */
	pump(c);
}

static void write_cb(struct conn *bev, void *arg)
{
	struct h2c_conn *c = arg;
	if (c->lingering) {
		if (!c->shut_wr && !evbuffer_get_length(conn_output(bev))) {
			c->shut_wr = true;
			conn_shutdown_write(bev);   /* FIN after the GOAWAY */
		}
		return;
	}
	pump(c);
}

static void event_cb(struct conn *bev, short what, void *arg)
{
	struct h2c_conn *c = arg;
	(void)bev;
	if (what & CONN_CONNECTED) {
		stats_hist_record(ccl(c)->stats, csh(c), upstream_cx_connect_ms,
				  (double)(now_ms() - c->created_ms));
		conn_enable_read(c->bev);
		pump(c);   /* preface + SETTINGS; ready once the peer's SETTINGS arrive */
		return;
	}
	if (c->state == H2C_CONNECTING) {
		connect_failed(c, POOL_E_CONNECT_FAIL, "connection failure");
		return;
	}
	if (c->lingering) {   /* the end of the close after a flood */
		conn_close(c);
		return;
	}
	c->remote_close = true;
	c->dead = true;
	pump(c);
}

static void timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct h2c_conn *c = arg;
	(void)fd;
	(void)what;
	if (c->state == H2C_CONNECTING) {
		connect_failed(c, POOL_E_TIMEOUT, "connection timeout");
		return;
	}
	if (c->lingering) {   /* the upstream did not close within 1 s of the GOAWAY */
		conn_close(c);
		return;
	}
	if (!c->nactive) {
		stats_inc(ccl(c)->stats, csh(c), upstream_cx_idle_timeout);
		conn_close(c);
	}
}

static void ping_cb(evutil_socket_t fd, short what, void *arg)
{
	struct h2c_conn *c = arg;
	(void)fd;
	(void)what;
	if (c->ping_out) {
		if (h2st(c))
			stats_inc(h2st(c), csh(c), keepalive_timeout);
		c->dead = true;
		pump(c);
		return;
	}
	c->ping_out = true;
	nghttp2_submit_ping(c->ng, NGHTTP2_FLAG_NONE, NULL);
	timer_ms(c->ping_timer, ccl(c)->ext->h2.keepalive_timeout_ms);
	pump(c);
}

struct h2c_conn *h2c_conn_connect(struct pool *p, int prio)
{
	struct cluster *cl = p->cl;
	struct host *h = p->host;
	struct worker *w = p->w;
	struct h2c_conn *c = xcalloc(1, sizeof(*c));
	nghttp2_session_callbacks *cbs;
	nghttp2_option *opt;

	c->p = p;
	c->prio = (enum cb_priority)prio;
	c->state = H2C_CONNECTING;
	c->created_ms = now_ms();
	c->peer_max = 100;
	c->limit = cl->buffer_limit < 16384 ? 16384 : cl->buffer_limit;
	h2_flood_init(&c->fl);
	c->bev = conn_new(w->base, -1);
	c->timer = evtimer_new(w->base, timer_cb, c);
	c->ev = event_new(w->base, -1, 0, ev_cb, c);
	if (nghttp2_session_callbacks_new(&cbs) || nghttp2_option_new(&opt))
		die("out of memory (nghttp2)");
	nghttp2_session_callbacks_set_send_callback(cbs, send_cb);
	nghttp2_session_callbacks_set_on_begin_headers_callback(cbs, on_begin_headers);
	nghttp2_session_callbacks_set_on_header_callback(cbs, on_header);
	nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, on_frame_recv);
	nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_data_chunk);
	nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_stream_close);
	nghttp2_session_callbacks_set_on_frame_not_send_callback(cbs, on_frame_not_send);
	nghttp2_session_callbacks_set_on_invalid_frame_recv_callback(cbs, on_invalid_frame);
	nghttp2_session_callbacks_set_on_begin_frame_callback(cbs, on_begin_frame);
	nghttp2_option_set_no_auto_window_update(opt, 1);
	/* nghttp2's own bound on the PING/SETTINGS ACKs it queues (a backstop
	 * for ours, which also counts those in the output buffer); its bound
	 * on CONTINUATION frames per header block stays at its default (8) */
	nghttp2_option_set_max_outbound_ack(opt, cl->ext->h2.max_outbound_control_frames);
	nghttp2_option_set_peer_max_concurrent_streams(opt, 100);
	nghttp2_option_set_no_closed_streams(opt, 1);   /* see h2_codec.c: unbounded otherwise */
	if (nghttp2_session_client_new2(&c->ng, cbs, c, opt))
		die("out of memory (nghttp2 session)");
	nghttp2_session_callbacks_del(cbs);
	nghttp2_option_del(opt);
	nghttp2_settings_entry iv[] = {
		{ NGHTTP2_SETTINGS_ENABLE_PUSH, 0 },
		{ NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, cl->ext->h2.initial_stream_window },
		{ NGHTTP2_SETTINGS_HEADER_TABLE_SIZE, cl->ext->h2.hpack_table_size },
	};
	nghttp2_submit_settings(c->ng, NGHTTP2_FLAG_NONE, iv, ARRAY_SIZE(iv));
	if (cl->ext->h2.initial_conn_window > 65535)
		nghttp2_session_set_local_window_size(c->ng, NGHTTP2_FLAG_NONE, 0,
						      (int32_t)cl->ext->h2.initial_conn_window);
	if (cl->ext->h2.keepalive_interval_ms) {
		c->ping_timer = evtimer_new(w->base, ping_cb, c);
		timer_ms(c->ping_timer, cl->ext->h2.keepalive_interval_ms);
	}
	c->next = p->h2;
	if (p->h2)
		p->h2->prev = c;
	p->h2 = c;
	pool_cx_opened(p, true);
	conn_setcb(c->bev, read_cb, write_cb, event_cb, c);
	conn_set_write_lowat(c->bev, c->limit / 2);
	/* UpstreamTlsContext: HTTP/2 over TLS.  ALPN offers what the context's
	 * alpn_protocols list (e.g. [h2]); the handshake completes before
	 * CONN_CONNECTED, so the preface goes out encrypted */
	if (cl->tls)
		conn_set_tls(c->bev, cl->tls, false, NULL);
	conn_connect(c->bev, (struct sockaddr *)&h->addr, h->addrlen);
	timer_ms(c->timer, cl->connect_timeout_ms);
	return c;
}

void h2c_pool_close_idle(struct pool *p)
{
	struct h2c_conn *c = p->h2, *next;
	for (; c; c = next) {
		next = c->next;
		if (!c->nactive)
			conn_close(c);
	}
}
