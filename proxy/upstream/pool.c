/* pool.c - upstream connection pools (per worker, per host): HTTP/1.1
 * connections here, HTTP/2 ones in h2_client.c, one pending queue. */
#include "pool.h"
#include "h2_client.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <event2/buffer.h>
#include "../worker.h"
#include "../log.h"

static void dispatch_cb(evutil_socket_t fd, short what, void *arg);
static struct pool_pending *pending_add(struct pool *p, enum cb_priority prio, void *arg);

static bool same_sni(const char *a, const char *b)
{
	return a == b || (a && b && !strcmp(a, b));
}

static struct pool *pool_for(struct worker *w, struct cluster *cl, struct host *h,
			     const char *sni)
{
	struct pool *p = h->pools[w->id];
	while (p && !same_sni(p->sni, sni))
		p = p->next_sni;
	if (!p) {
		p = xcalloc(1, sizeof(*p));
		p->host = host_ref(h);
		p->cl = cl;
		p->w = w;
		p->sni = sni ? xstrdup(sni) : NULL;
		p->dispatch = event_new(w->base, -1, 0, dispatch_cb, p);
		p->next_sni = h->pools[w->id];
		h->pools[w->id] = p;
	}
	return p;
}

/* Free an empty pool; its host slot is cleared (worker-owned). */
/* Only called with no connections and no queued requests left. */
static void pool_free(struct pool *p)
{
	if (p->dispatch)
		event_free(p->dispatch);
	struct pool **pp = &p->host->pools[p->w->id];
	while (*pp != p)
		pp = &(*pp)->next_sni;
	*pp = p->next_sni;
	host_unref(p->host);
	free(p->sni);
	free(p);
}

void pool_orphan(struct worker *w, struct host *h)
{
	struct pool *p = h->pools[w->id];
	while (p) {
		struct pool *next = p->next_sni;
		while (p->idle)
			pool_conn_close(p->idle, false);
		h2c_pool_close_idle(p);
		if (!p->nconns && !p->npending)
			pool_free(p);
		else
			p->orphan = true;   /* the last connection or queued request frees it */
		p = next;
	}
}

static void idle_unlink(struct upstream_conn *uc)
{
	struct pool *p = uc->pool;
	if (uc->prev)
		uc->prev->next = uc->next;
	else
		p->idle = uc->next;
	if (uc->next)
		uc->next->prev = uc->prev;
	uc->prev = uc->next = NULL;
	p->nidle--;
}

void pool_conn_close(struct upstream_conn *uc, bool remote)
{
	struct pool *p = uc->pool;

	if (uc->state == UC_IDLE)
		idle_unlink(uc);
	if (uc->timer)
		event_free(uc->timer);
	conn_free(uc->bev);
	enum cb_priority prio = uc->prio;
	uint64_t created = uc->created_ms;
	free(uc);
	pool_cx_closed(p, prio, created, remote);
}

void pool_cx_opened(struct pool *p, bool h2)
{
	struct cluster *cl = p->cl;
	unsigned sh = p->w->shard;
	p->nconns++;
	stats_inc(cl->stats, sh, upstream_cx_total);
	if (h2)
		stats_inc(cl->stats, sh, upstream_cx_http2_total);
	else
		stats_inc(cl->stats, sh, upstream_cx_http1_total);
	stats_inc(cl->stats, sh, upstream_cx_active);
	host_stat_add(p->host, sh, HOST_CX_TOTAL, 1);
	host_stat_add(p->host, sh, HOST_CX_ACTIVE, 1);
}

void pool_kick(struct pool *p)
{
	if (p->pend_head && !p->orphan)
		event_active(p->dispatch, EV_TIMEOUT, 0);
}

/* May free the pool (orphaned, or an auto_sni pool, and empty: a pool per
 * server name must not outlive its connections, or hosts named by clients
 * would pile up). */
void pool_cx_closed(struct pool *p, enum cb_priority prio, uint64_t created_ms, bool remote)
{
	unsigned sh = p->w->shard;
	stats_inc(p->cl->stats, sh, upstream_cx_destroy);
	stats_inc(p->cl->stats, sh, remote ? upstream_cx_destroy_remote : upstream_cx_destroy_local);
	stats_dec(p->cl->stats, sh, upstream_cx_active);
	stats_hist_record(p->cl->stats, sh, upstream_cx_length_ms, (double)(now_ms() - created_ms));
	host_stat_add(p->host, sh, HOST_CX_ACTIVE, -1);
	p->nconns--;
	cb_put(&p->cl->cbc[prio].cx);
	cb_put(&p->host->cb_cx);
	pool_kick(p);   /* capacity freed */
	if ((p->orphan || p->sni) && !p->nconns && !p->npending)
		pool_free(p);
}

static void idle_event_cb(struct conn *bev, short what, void *arg)
{
	(void)bev;
	(void)what;
	/* EOF, error, or unexpected bytes on an idle connection: drop it. */
	pool_conn_close(arg, true);
}

static void idle_read_cb(struct conn *bev, void *arg)
{
	(void)bev;
	pool_conn_close(arg, true);
}

static void idle_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
	struct upstream_conn *uc = arg;
	(void)fd;
	(void)what;
	stats_inc(uc->pool->cl->stats, uc->pool->w->shard, upstream_cx_idle_timeout);
	pool_conn_close(uc, false);
}

void pool_release(struct upstream_conn *uc, bool reusable)
{
	struct pool *p = uc->pool;
	struct cluster *cl = p->cl;

	if (reusable && cl->max_requests_per_connection &&
	    uc->nrequests >= cl->max_requests_per_connection) {
		stats_inc(cl->stats, p->w->shard, upstream_cx_max_requests);
		reusable = false;
	}
	/* an orphaned pool (its host left the host set) keeps no idle connection */
	if (!reusable || p->orphan || p->w->draining || evbuffer_get_length(conn_input(uc->bev))) {
		pool_conn_close(uc, false);
		return;
	}
	if (p->pend_head)
		event_active(p->dispatch, EV_TIMEOUT, 0);   /* a waiting request takes it */
	uc->state = UC_IDLE;
	uc->next = p->idle;
	uc->prev = NULL;
	if (p->idle)
		p->idle->prev = uc;
	p->idle = uc;
	p->nidle++;
	conn_setcb(uc->bev, idle_read_cb, NULL, idle_event_cb, uc);
	conn_set_write_lowat(uc->bev, 0);
	conn_enable_read(uc->bev);
	if (cl->idle_timeout_ms) {
		struct timeval tv = { (time_t)(cl->idle_timeout_ms / 1000),
				      (suseconds_t)(cl->idle_timeout_ms % 1000) * 1000 };
		event_assign(uc->timer, p->w->base, -1, 0, idle_timeout_cb, uc);
		event_add(uc->timer, &tv);
	}
}

static void connect_done(struct upstream_conn *uc, enum pool_err err, const char *detail)
{
	pool_ready_cb cb = uc->ready_cb;
	void *arg = uc->ready_arg;
	struct pool *p = uc->pool;
	unsigned sh = p->w->shard;

	event_del(uc->timer);
	uc->ready_cb = NULL;
	if (err) {
		stats_inc(p->cl->stats, sh, upstream_cx_connect_fail);
		if (err == POOL_E_TIMEOUT)
			stats_inc(p->cl->stats, sh, upstream_cx_connect_timeout);
		host_stat_add(p->host, sh, HOST_CX_CONNECT_FAIL, 1);
		pool_conn_close(uc, false);
		cb(arg, NULL, err, detail);
		return;
	}
	stats_hist_record(p->cl->stats, sh, upstream_cx_connect_ms,
			  (double)(now_ms() - uc->connect_start_ms));
	uc->state = UC_BUSY;
	cb(arg, uc, POOL_OK, NULL);
}

static void connect_event_cb(struct conn *bev, short what, void *arg)
{
	struct upstream_conn *uc = arg;
	if (what & CONN_CONNECTED) {
		connect_done(uc, POOL_OK, NULL);
		return;
	}
	int e = EVUTIL_SOCKET_ERROR();
	log_debug("upstream connect to %s failed: %s", uc->pool->host->addr_str,
		  evutil_socket_error_to_string(e));
	connect_done(uc, POOL_E_CONNECT_FAIL, "connection failure");
}

static void connect_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	connect_done(arg, POOL_E_TIMEOUT, "connection timeout");
}

static inline __attribute__((always_inline)) struct upstream_conn *take_idle(struct pool *p)
{
	struct upstream_conn *uc = p->idle;
	if (!uc)
		return NULL;
	idle_unlink(uc);
	event_del(uc->timer);
	uc->state = UC_BUSY;
	conn_setcb(uc->bev, NULL, NULL, NULL, NULL);
	return uc;
}

static struct upstream_conn *connect_new(struct pool *p, enum cb_priority prio, pool_ready_cb cb,
				       void *arg)
{
	struct worker *w = p->w;
	struct cluster *cl = p->cl;
	struct host *h = p->host;
	struct upstream_conn *uc = xcalloc(1, sizeof(*uc));
	uc->pool = p;
	uc->prio = prio;
	uc->state = UC_CONNECTING;
	uc->created_ms = uc->connect_start_ms = now_ms();
	uc->bev = conn_new(w->base, -1);
	uc->timer = evtimer_new(w->base, connect_timeout_cb, uc);
	uc->ready_cb = cb;
	uc->ready_arg = arg;
	pool_cx_opened(p, false);
	conn_setcb(uc->bev, NULL, NULL, connect_event_cb, uc);
	if (cl->tls) {
		conn_set_tls(uc->bev, cl->tls, false, p->sni);   /* NULL: the context's sni */
		if (p->sni && cl->ext->auto_san_validation)
			conn_tls_verify_sni(uc->bev);
	}
	/* Failures, even synchronous ones, are reported from the loop. */
	conn_connect(uc->bev, (struct sockaddr *)&h->addr, h->addrlen);
	struct timeval tv = { (time_t)(cl->connect_timeout_ms / 1000),
			      (suseconds_t)(cl->connect_timeout_ms % 1000) * 1000 };
	evtimer_add(uc->timer, &tv);
	return uc;
}

/* Reserve one connection under max_connections of priority prio
 * (cluster-wide) and its per-host max_connections.  The host's count is
 * shared by both priorities, the limits are not (Envoy's
 * canCreateConnection(priority)). */
static bool cx_reserve(struct cluster *cl, struct host *h, enum cb_priority prio)
{
	const struct cb_prio *b = &cl->cb[prio];
	if (!cb_take(&cl->cbc[prio].cx, b->max_connections))
		return false;
	if (!cb_take(&h->cb_cx, b->max_host_connections ? b->max_host_connections : UINT32_MAX)) {
		cb_put(&cl->cbc[prio].cx);
		return false;
	}
	return true;
}

int pool_get(struct worker *w, struct cluster *cl, struct host *h, const char *sni,
	     enum cb_priority prio, pool_ready_cb cb, void *arg, struct upstream_conn **out,
	     struct pool_pending **pend)
{
	struct pool *p = pool_for(w, cl, h, sni);

	*out = NULL;
	*pend = NULL;
	if ((*out = take_idle(p)))
		return RM_OK;
	if (cx_reserve(cl, h, prio)) {
		*out = connect_new(p, prio, cb, arg);
		return RM_AGAIN;
	}
	stats_inc(cl->stats, w->shard, upstream_cx_overflow);
	if (!cb_take(&cl->cbc[prio].pending, cl->cb[prio].max_pending)) {
		stats_inc(cl->stats, w->shard, upstream_rq_pending_overflow);
		if (p->sni && !p->nconns && !p->npending)
			pool_free(p);
		return RM_ERROR;
	}
	struct pool_pending *pp = pending_add(p, prio, arg);
	pp->cb = cb;
	*pend = pp;
	return RM_AGAIN;
}

static struct pool_pending *pending_add(struct pool *p, enum cb_priority prio, void *arg)
{
	struct cluster *cl = p->cl;
	struct pool_pending *pp = xcalloc(1, sizeof(*pp));
	pp->arg = arg;
	pp->pool = p;
	pp->prio = prio;
	pp->prev = p->pend_tail;
	if (p->pend_tail)
		p->pend_tail->next = pp;
	else
		p->pend_head = pp;
	p->pend_tail = pp;
	p->npending++;
	stats_inc(cl->stats, p->w->shard, upstream_rq_pending_total);
	stats_inc(cl->stats, p->w->shard, upstream_rq_pending_active);
	return pp;
}

/* Open HTTP/2 connections while the waiting requests outnumber what the
 * connecting ones are expected to take and max_connections allows. */
static void h2_grow(struct pool *p, enum cb_priority prio)
{
	while (p->npending_h2 > h2c_pool_promised(p)) {
		if (!cx_reserve(p->cl, p->host, prio)) {
			stats_inc(p->cl->stats, p->w->shard, upstream_cx_overflow);
			return;
		}
		h2c_conn_connect(p, prio);
	}
}

int pool_get_h2(struct worker *w, struct cluster *cl, struct host *h, const char *sni,
		enum cb_priority prio, pool_h2_ready_cb cb, void *arg, struct h2c_stream **out,
		struct pool_pending **pend)
{
	struct pool *p = pool_for(w, cl, h, sni);
	struct h2c_conn *c;

	*out = NULL;
	*pend = NULL;
	if (!p->npending_h2 && (c = h2c_pool_pick(p))) {
		*out = h2c_stream_new(c);
		return RM_OK;
	}
	/* Envoy counts a request waiting for an HTTP/2 connection as pending */
	if (!cb_take(&cl->cbc[prio].pending, cl->cb[prio].max_pending)) {
		stats_inc(cl->stats, w->shard, upstream_rq_pending_overflow);
		if (p->sni && !p->nconns && !p->npending)
			pool_free(p);
		return RM_ERROR;
	}
	struct pool_pending *pp = pending_add(p, prio, arg);
	pp->cb2 = cb;
	p->npending_h2++;
	*pend = pp;
	h2_grow(p, prio);
	return RM_AGAIN;
}

static void pending_unlink(struct pool_pending *pp)
{
	struct pool *p = pp->pool;
	if (pp->prev)
		pp->prev->next = pp->next;
	else
		p->pend_head = pp->next;
	if (pp->next)
		pp->next->prev = pp->prev;
	else
		p->pend_tail = pp->prev;
	p->npending--;
	if (pp->cb2)
		p->npending_h2--;
	cb_put(&p->cl->cbc[pp->prio].pending);
	stats_dec(p->cl->stats, p->w->shard, upstream_rq_pending_active);
}

void pool_pending_cancel(struct pool_pending *pp)
{
	if (!pp)
		return;
	struct pool *p = pp->pool;
	pending_unlink(pp);
	free(pp);
	if ((p->orphan || p->sni) && !p->nconns && !p->npending)
		pool_free(p);
}

/* Deferred: give idle connections, or new capacity, to waiting requests.
 * In FIFO order; a request whose priority has no connection to spare yet
 * does not hold back one of the other priority queued behind it. */
static void dispatch_cb(evutil_socket_t fd, short what, void *arg)
{
	struct pool *p = arg;
	struct pool_pending *pp = p->pend_head;
	(void)fd;
	(void)what;
	while (pp) {
		struct pool_pending *next = pp->next;
		if (pp->cb2) {
			struct h2c_conn *c = h2c_pool_pick(p);
			if (!c) {
				h2_grow(p, pp->prio);
				pp = next;
				continue;
			}
			pending_unlink(pp);
			pool_h2_ready_cb cb2 = pp->cb2;
			void *cbarg = pp->arg;
			free(pp);
			cb2(cbarg, h2c_stream_new(c), POOL_OK, NULL);
			pp = p->pend_head;
			continue;
		}
		struct upstream_conn *uc = take_idle(p);
		if (!uc) {
			if (!cx_reserve(p->cl, p->host, pp->prio)) {
				pp = next;   /* still at this priority's limit */
				continue;
			}
			pending_unlink(pp);
			uc = connect_new(p, pp->prio, pp->cb, pp->arg);
			/* the connect result reaches pp->cb through connect_done(); but
			 * the caller must learn the connecting conn to cancel it */
			pp->cb(pp->arg, uc, POOL_E_PENDING_CONNECTING, NULL);
			free(pp);
		} else {
			pending_unlink(pp);
			pool_ready_cb cb = pp->cb;
			void *cbarg = pp->arg;
			free(pp);
			cb(cbarg, uc, POOL_OK, NULL);
		}
		/* the callback may have cancelled other queued requests */
		pp = p->pend_head;
	}
}

void pool_close_idle_all(struct worker *w, struct cluster *cl)
{
	struct hostset *hs = cl->workers[w->id].hs;
	if (!hs)
		return;
	for (size_t i = 0; i < hs->n; i++) {
		for (struct pool *p = hs->hosts[i]->pools[w->id]; p; p = p->next_sni) {
			while (p->idle)
				pool_conn_close(p->idle, false);
			h2c_pool_close_idle(p);
		}
	}
}

void pool_h2_fail_pending(struct pool *p, unsigned n, enum pool_err err, const char *detail)
{
	struct pool_pending *pp = p->pend_head;
	while (pp && n) {
		struct pool_pending *next = pp->next;
		if (pp->cb2 && p->npending_h2 > h2c_pool_promised(p)) {
			pool_h2_ready_cb cb2 = pp->cb2;
			void *arg = pp->arg;
			pending_unlink(pp);
			free(pp);
			n--;
			cb2(arg, NULL, err, detail);
			next = p->pend_head;   /* the callback may have cancelled others */
		}
		pp = next;
	}
}
