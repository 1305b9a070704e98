/* worker.c - worker threads, message queues, listeners, downstream list. */
#include "worker.h"

#include <errno.h>
#include <unistd.h>
#include <sys/eventfd.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include "conn.h"
#include <event2/thread.h>
#include <event2/event_struct.h>
#include "server.h"
#include "downstream.h"
#include "filter.h"
#include "log.h"
#include "config/address.h"
#include "upstream/pool.h"
#include "upstream/original_dst.h"
#include "filter_chain_match.h"

__thread struct worker *current_worker;

static void msg_cb(evutil_socket_t fd, short what, void *arg)
{
	struct worker *w = arg;
	struct worker_msg *m;
	uint64_t n;
	(void)what;
	if (read(fd, &n, sizeof(n)) < 0 && errno != EAGAIN)
		die("eventfd read: %s", strerror(errno));
	pthread_mutex_lock(&w->mq_lock);
	m = w->mq_head;
	w->mq_head = w->mq_tail = NULL;
	pthread_mutex_unlock(&w->mq_lock);
	while (m) {
		struct worker_msg *next = m->next;
		m->fn(w, m->arg);
		free(m);
		m = next;
	}
}

void worker_post(struct worker *w, void (*fn)(struct worker *w, void *arg), void *arg)
{
	struct worker_msg *m = xmalloc(sizeof(*m));
	m->fn = fn;
	m->arg = arg;
	m->next = NULL;
	pthread_mutex_lock(&w->mq_lock);
	if (w->mq_tail)
		w->mq_tail->next = m;
	else
		w->mq_head = m;
	w->mq_tail = m;
	pthread_mutex_unlock(&w->mq_lock);
	uint64_t one = 1;
	if (write(w->efd, &one, sizeof(one)) < 0 && errno != EAGAIN)
		die("eventfd write: %s", strerror(errno));
}

struct main_msg {
	void (*fn)(void *arg);
	void *arg;
};

static void main_msg_cb(evutil_socket_t fd, short what, void *arg)
{
	struct main_msg *m = arg;
	(void)fd;
	(void)what;
	m->fn(m->arg);
	free(m);
}

void main_post(void (*fn)(void *arg), void *arg)
{
	struct main_msg *m = xmalloc(sizeof(*m));
	m->fn = fn;
	m->arg = arg;
	/* event_base_once is thread-safe once evthread_use_pthreads() ran. */
	struct timeval zero = { 0, 0 };
	if (event_base_once(g_server.base, -1, EV_TIMEOUT, main_msg_cb, m, &zero))
		die("event_base_once");
}

/* ---- connection limits ------------------------------------------------------ */

/* Admit an accepted socket under the overload actions, the listener's
 * connection limit and the global one (overload.h); false: refused and
 * counted, the caller closes it.  What is taken here is given back by
 * cx_release(l): by downstream_close(), or by accept_drop() when the
 * socket never becomes a connection. */
static bool cx_admit(struct worker *w, struct listener_cfg *l)
{
	if (unlikely(overload_saturated(OL_STOP_ACCEPTING_CX))) {
		stats_inc(l->stats, w->shard, LS_downstream_cx_overload_reject);
		return false;
	}
	if (l->cx_limit &&
	    __atomic_add_fetch(&l->cx_open, 1, __ATOMIC_RELAXED) > (long)l->cx_limit) {
		__atomic_sub_fetch(&l->cx_open, 1, __ATOMIC_RELAXED);
		stats_inc(l->stats, w->shard, LS_downstream_cx_overflow);
		return false;
	}
	if (!overload_cx_take()) {
		if (l->cx_limit)
			__atomic_sub_fetch(&l->cx_open, 1, __ATOMIC_RELAXED);
		stats_inc(l->stats, w->shard, LS_downstream_global_cx_overflow);
		return false;
	}
	return true;
}

/* l: the listener charged by cx_admit (NULL after a failed admit). */
static void cx_release(struct listener_cfg *l)
{
	if (!l)
		return;
	if (l->cx_limit)
		__atomic_sub_fetch(&l->cx_open, 1, __ATOMIC_RELAXED);
	overload_cx_release();
}

/* ---- downstream connections ---------------------------------------------- */

/* The post-handshake hook of an accepted TLS connection whose filter chain
 * has filters with on_handshake (network RBAC): they judge the connection now
 * that the peer's certificate is known.  Runs inside conn's handshake step,
 * before the terminal filter reads anything; false closes the connection. */
static bool downstream_handshake_done(struct conn *c, void *arg)
{
	struct downstream *d = arg;
	(void)c;
	for (size_t i = 0; i < d->fc->npre; i++) {
		const struct net_filter *f = &d->fc->pre[i];
		if (f->ops->on_handshake && !f->ops->on_handshake(d, f->cfg))
			return false;
	}
	return true;
}

struct downstream *downstream_new(size_t size, const struct accept_info *ai)
{
	struct downstream *d = xcalloc(1, size);
	struct worker *w = ai->w;
	struct conn *bev = ai->bev;
	struct listener_cfg *lcfg = ai->lcfg;
	const struct sockaddr *peer = ai->peer;
	socklen_t peerlen = ai->peerlen;
	socklen_t ll = sizeof(d->local);
	d->w = w;
	d->bev = bev;
	d->snap = snapshot_ref(w->snap);
	d->lcfg = lcfg;
	memcpy(&d->peer, peer, MIN((size_t)peerlen, sizeof(d->peer)));
	if (ai->local)
		d->local = *ai->local;
	else
		getsockname(conn_fd(bev), (struct sockaddr *)&d->local, &ll);
	d->local_restored = ai->local_restored;
	d->fc = ai->fc;
	if (bev->tls && ai->fc)
		for (size_t i = 0; i < ai->fc->npre; i++)
			if (ai->fc->pre[i].ops->on_handshake) {
				bev->hs_done = downstream_handshake_done;
				bev->hs_arg = d;
				break;
			}
	d->cx_charged = ai->cx_charged;
	sockaddr_ip(peer, d->peer_ip, sizeof(d->peer_ip));
	d->start_ms = now_ms();
	d->next = w->conns;
	if (w->conns)
		w->conns->prev = d;
	w->conns = d;
	__atomic_add_fetch(&w->nconns, 1, __ATOMIC_RELAXED);
	stats_inc(lcfg->stats, w->shard, LS_downstream_cx_total);
	stats_inc(lcfg->stats, w->shard, LS_downstream_cx_active);
	return d;
}

void downstream_close(struct downstream *d)
{
	struct worker *w = d->w;
	if (d->prev)
		d->prev->next = d->next;
	else
		w->conns = d->next;
	if (d->next)
		d->next->prev = d->prev;
	__atomic_sub_fetch(&w->nconns, 1, __ATOMIC_RELAXED);
	cx_release(d->cx_charged);
	stats_dec(d->lcfg->stats, w->shard, LS_downstream_cx_active);
	stats_inc(d->lcfg->stats, w->shard, LS_downstream_cx_destroy);
	stats_hist_record(d->lcfg->stats, w->shard, LS_downstream_cx_length_ms,
			  (double)(now_ms() - d->start_ms));
	if (d->bev)
		conn_free(d->bev);
	d->bev = NULL;
	struct snapshot *snap = d->snap;
	if (d->ops && d->ops->destroy)
		d->ops->destroy(d);
	free(d);
	snapshot_unref(snap);
}

/* ---- accept ---------------------------------------------------------------- */

/* ---- listener filters ---------------------------------------------------- */

/* One accepted socket going through its listener filters.  It lives on the
 * accept callback's stack while every filter is synchronous (no allocation);
 * it moves into a struct lf_wait on the heap only when an inspector must
 * wait for the client's first bytes. */
struct lf_state {
	struct listener_cfg *l;              /* current listener (in the worker's snapshot) */
	size_t next;                         /* next listener filter of l to run */
	bool handed_off;                     /* use_original_dst hand-off done (or skipped) */
	struct listener_cfg *charged;        /* admitted under its limits (cx_admit) */
	struct sockaddr_storage peer;
	socklen_t peerlen;
	struct listener_accept la;           /* la.peer points at peer */
};

struct lf_wait {
	struct lf_state st;
	struct worker *w;
	struct snapshot *snap;               /* ref: st.l lives in it */
	struct event rd;                     /* edge-triggered readability of st.la.fd */
	struct event timer;                  /* listener_filters_timeout */
	bool timer_armed;
	struct listener_cfg *gauge_l;        /* listener counting it in downstream_pre_cx_active */
	struct lf_wait *prev, *next;         /* w->lf_waits */
};

enum { LFS_DONE, LFS_AGAIN, LFS_CLOSE };

void listener_accept_set_alpn1(struct listener_accept *a, const char *proto)
{
	size_t n = strlen(proto);
	if (n > 254)
		n = 254;
	a->alpn[0] = (uint8_t)n;
	memcpy(a->alpn + 1, proto, n);
	a->alpn_len = (uint16_t)(n + 1);
}

/* Peek at what the client sent and let the inspector f judge it. */
static int lf_inspect(struct worker *w, struct lf_state *st, const struct listener_filter *f)
{
	size_t max = f->ops->max_read_bytes ? f->ops->max_read_bytes(f->cfg) : LF_PEEK_MAX;
	if (max > LF_PEEK_MAX)
		max = LF_PEEK_MAX;
	if (!w->lf_buf)
		w->lf_buf = xmalloc(LF_PEEK_MAX);
	ssize_t n = recv(st->la.fd, w->lf_buf, max, MSG_PEEK | MSG_DONTWAIT);
	if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
		return LFS_AGAIN;
	if (n == 0) {
		/* the client closed before the filters decided */
		stats_inc(st->l->stats, w->shard, LS_downstream_listener_filter_remote_close);
		return LFS_CLOSE;
	}
	if (n < 0) {
		f->ops->on_data(&st->la, f->cfg, w, NULL, 0);
		return LFS_CLOSE;
	}
	switch (f->ops->on_data(&st->la, f->cfg, w, w->lf_buf, (size_t)n)) {
	case LF_CLOSE:
		return LFS_CLOSE;
	case LF_AGAIN:
		/* a full buffer decides */
		return (size_t)n < max ? LFS_AGAIN : LFS_DONE;
	default:
		return LFS_DONE;
	}
}

/* Run listener filters from where st stopped, then the use_original_dst
 * hand-off (whose target runs its own filters, once). */
static int lf_advance(struct worker *w, struct lf_state *st)
{
	for (;;) {
		struct listener_cfg *l = st->l;
		while (st->next < l->nlfilters) {
			const struct listener_filter *f = &l->lfilters[st->next];
			int r;
			if (f->disabled &&
			    lf_pred_match(f->disabled, sockaddr_port((struct sockaddr *)&st->la.local)))
				r = LFS_DONE;   /* filter_disabled: e.g. no detection on opaque ports */
			else if (f->ops->on_data)
				r = lf_inspect(w, st, f);
			else
				r = f->ops->on_accept(&st->la, f->cfg, w) == LF_CONTINUE ? LFS_DONE : LFS_CLOSE;
			if (r != LFS_DONE)
				return r;
			st->next++;
		}
		if (st->handed_off || !l->use_original_dst || !st->la.local_restored)
			return LFS_DONE;
		/* Envoy's hand-off: the listener of the original destination (in
		 * this worker's snapshot) takes the connection and runs its own
		 * listener filters; it does not hand off again.  None: this
		 * listener's own chains serve it (passthrough). */
		st->handed_off = true;
		struct listener_cfg *t = snapshot_find_listener_by_addr(w->snap,
									(struct sockaddr *)&st->la.local);
		if (!t || t == l)
			return LFS_DONE;
		st->l = t;
		st->next = 0;
	}
}

static const struct filter_chain *match_chain(const struct listener_cfg *l,
					      const struct listener_accept *la)
{
	struct fcm_input in = {
		.local = (const struct sockaddr *)&la->local,
		.peer = la->peer,
		.server_name = la->server_name,
		.transport_protocol = la->transport_protocol ? la->transport_protocol : "raw_buffer",
		.alpn = la->alpn,
		.alpn_len = la->alpn_len,
	};
	long i = l->nchains ? fcm_select(l->chain_match, l->nchains, &in) : -1;
	return i >= 0 ? &l->chains[i] : l->default_chain;
}

/* A socket that will not become a connection: close it, give back its
 * admission. */
static void accept_drop(struct lf_state *st)
{
	evutil_closesocket(st->la.fd);
	cx_release(st->charged);
	st->charged = NULL;
}

/* The listener filters are done: choose the filter chain, run its
 * non-terminal filters, hand the socket to the terminal one. */
static void accept_finish(struct worker *w, struct lf_state *st)
{
	struct listener_cfg *l = st->l;
	int fd = st->la.fd;
	const struct filter_chain *fc = match_chain(l, &st->la);
	if (!fc) {
		stats_inc(l->stats, w->shard, LS_no_filter_chain_match);
		accept_drop(st);
		return;
	}
	struct accept_info ai = { w, NULL, l, (struct sockaddr *)&st->peer, st->peerlen,
				  &st->la.local, st->la.local_restored, fc, st->la.server_name, st->charged };
	for (size_t i = 0; i < fc->npre; i++) {
		if (!fc->pre[i].ops->on_new_connection(&ai, fc->pre[i].cfg)) {
			accept_drop(st);
			return;
		}
	}
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	struct conn *bev = conn_new(w->base, fd);
	if (!bev) {
		accept_drop(st);
		return;
	}
	if (fc->tls)
		conn_set_tls(bev, fc->tls, true, NULL);   /* handshake before any filter reads */
	/* The filter allocates its connection struct with downstream_new(). */
	ai.bev = bev;
	fc->ops->on_accept(&ai, fc->cfg);
}

static void lf_wait_free(struct lf_wait *p, bool close_fd)
{
	struct worker *w = p->w;
	event_del(&p->rd);
	event_del(&p->timer);
	if (p->prev)
		p->prev->next = p->next;
	else
		w->lf_waits = p->next;
	if (p->next)
		p->next->prev = p->prev;
	stats_dec(p->gauge_l->stats, w->shard, LS_downstream_pre_cx_active);
	if (close_fd)
		accept_drop(&p->st);
	snapshot_unref(p->snap);
	free(p);
}

static void lf_wait_arm_timer(struct lf_wait *p)
{
	if (!p->timer_armed && p->st.l->lf_timeout_ms) {
		worker_timer_add(p->w, &p->timer, p->st.l->lf_timeout_ms);
		p->timer_armed = true;
	}
}

/* Continue p after an event; it is freed on every path but AGAIN. */
static void lf_wait_resume(struct lf_wait *p)
{
	int r = lf_advance(p->w, &p->st);
	if (r == LFS_AGAIN) {
		if (p->st.l != p->gauge_l) {
			/* handed off: the target listener's timeout starts now */
			stats_dec(p->gauge_l->stats, p->w->shard, LS_downstream_pre_cx_active);
			p->gauge_l = p->st.l;
			stats_inc(p->gauge_l->stats, p->w->shard, LS_downstream_pre_cx_active);
			event_del(&p->timer);
			p->timer_armed = false;
		}
		lf_wait_arm_timer(p);
		return;
	}
	if (r == LFS_CLOSE) {
		lf_wait_free(p, true);
		return;
	}
	/* The listener may belong to a snapshot older than the worker's:
	 * p->snap keeps it alive until the connection took its own reference
	 * (downstream_new refs the worker's current snapshot; a listener
	 * removed by xDS meanwhile is the xDS side's to handle). */
	struct lf_state st = p->st;
	st.la.peer = (const struct sockaddr *)&st.peer;
	struct worker *w = p->w;
	struct snapshot *snap = snapshot_ref(p->snap);
	lf_wait_free(p, false);
	accept_finish(w, &st);
	snapshot_unref(snap);
}

static void lf_read_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	lf_wait_resume(arg);
}

static void lf_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
	struct lf_wait *p = arg;
	(void)fd;
	(void)what;
	p->timer_armed = false;
	stats_inc(p->st.l->stats, p->w->shard, LS_downstream_pre_cx_timeout);
	if (!p->st.l->lf_continue_on_timeout) {
		lf_wait_free(p, true);
		return;
	}
	/* Envoy: skip this listener's remaining filters and go on with what
	 * is known (a server-first protocol reaches the default chain). */
	p->st.next = p->st.l->nlfilters;
	lf_wait_resume(p);
}

/* st is on the stack and an inspector must wait: move it to the heap. */
static void lf_wait_start(struct worker *w, const struct lf_state *st)
{
	struct lf_wait *p = xcalloc(1, sizeof(*p));
	p->st = *st;
	p->st.la.peer = (const struct sockaddr *)&p->st.peer;
	p->w = w;
	p->snap = snapshot_ref(w->snap);
	event_assign(&p->rd, w->base, st->la.fd, EV_READ | EV_PERSIST | EV_ET, lf_read_cb, p);
	evtimer_assign(&p->timer, w->base, lf_timeout_cb, p);
	event_add(&p->rd, NULL);
	p->next = w->lf_waits;
	if (w->lf_waits)
		w->lf_waits->prev = p;
	w->lf_waits = p;
	p->gauge_l = p->st.l;
	stats_inc(p->gauge_l->stats, w->shard, LS_downstream_pre_cx_active);
	lf_wait_arm_timer(p);
}

static void accept_cb(struct evconnlistener *evl, evutil_socket_t fd, struct sockaddr *sa,
		      int salen, void *arg)
{
	struct worker_listener *wl = arg;
	struct worker *w = wl->w;
	struct lf_state st;
	(void)evl;

	if (w->draining) {
		evutil_closesocket(fd);
		return;
	}
	if (!cx_admit(w, wl->cfg)) {
		evutil_closesocket(fd);
		return;
	}
	st.charged = wl->cfg;
	st.l = wl->cfg;
	st.next = 0;
	st.handed_off = false;
	st.peerlen = (socklen_t)MIN((size_t)salen, sizeof(st.peer));
	memcpy(&st.peer, sa, st.peerlen);
	st.la.fd = fd;
	st.la.peer = (const struct sockaddr *)&st.peer;
	st.la.locallen = sizeof(st.la.local);
	st.la.local_restored = false;
	st.la.transport_protocol = NULL;
	st.la.server_name[0] = '\0';
	st.la.alpn_len = 0;
	getsockname(fd, (struct sockaddr *)&st.la.local, &st.la.locallen);
	switch (lf_advance(w, &st)) {
	case LFS_CLOSE:
		accept_drop(&st);
		return;
	case LFS_AGAIN:
		lf_wait_start(w, &st);
		return;
	default:
		accept_finish(w, &st);
	}
}

/* Close sockets still in listener filters (all, or those of listeners
 * matching dir_mask). */
static void lf_close_waiting(struct worker *w, unsigned dir_mask)
{
	struct lf_wait *p = w->lf_waits;
	while (p) {
		struct lf_wait *next = p->next;
		if (dir_mask & WDRAIN_DIR(p->st.l->direction))
			lf_wait_free(p, true);
		p = next;
	}
}

static void accept_error_cb(struct evconnlistener *evl, void *arg)
{
	int e = EVUTIL_SOCKET_ERROR();
	(void)evl;
	(void)arg;
	/* EMFILE and friends: back off briefly instead of spinning. */
	log_warn("accept failed: %s", evutil_socket_error_to_string(e));
}

static void start_listeners(struct worker *w)
{
	struct snapshot *s = w->snap;
	w->nlisteners = s->nlisteners;
	w->listeners = xcalloc(s->nlisteners ? s->nlisteners : 1, sizeof(*w->listeners));
	for (size_t i = 0; i < s->nlisteners; i++) {
		struct listener_cfg *l = s->listeners[i];
		struct worker_listener *wl = &w->listeners[i];
		wl->cfg = l;
		wl->w = w;
		if (!l->bind_to_port)
			continue;   /* a hand-off target only: no socket */
		wl->evl = evconnlistener_new(w->base, accept_cb, wl,
					     LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE, -1, l->fds[w->id]);
		if (!wl->evl)
			die("evconnlistener_new (listener '%s' fd %d snap %llu)", l->name, l->fds[w->id], (unsigned long long)s->version);
		l->fds[w->id] = -1;
		evconnlistener_set_error_cb(wl->evl, accept_error_cb);
	}
}

void worker_msg_stop_listeners(struct worker *w, void *arg)
{
	(void)arg;
	for (size_t i = 0; i < w->nlisteners; i++) {
		if (w->listeners[i].evl)
			evconnlistener_free(w->listeners[i].evl);
		w->listeners[i].evl = NULL;
	}
}

void worker_msg_drain_some(struct worker *w, void *arg)
{
	unsigned flags = (unsigned)(uintptr_t)arg;
	for (size_t i = 0; i < w->nlisteners; i++) {
		struct worker_listener *wl = &w->listeners[i];
		if (!(flags & WDRAIN_LISTENERS) || !wl->evl ||
		    !(flags & WDRAIN_DIR(wl->cfg->direction)))
			continue;
		evconnlistener_free(wl->evl);
		wl->evl = NULL;
	}
	if (!(flags & WDRAIN_CONNS))
		return;
	w->drain_dirs |= flags & WDRAIN_DIRS;
	lf_close_waiting(w, flags & WDRAIN_DIRS);
	struct downstream *d = w->conns;
	while (d) {
		struct downstream *next = d->next;
		if ((flags & WDRAIN_DIR(d->lcfg->direction)) && !d->draining) {
			d->draining = true;
			if (d->ops && d->ops->drain)
				d->ops->drain(d);
		}
		d = next;
	}
}

void worker_msg_drain(struct worker *w, void *arg)
{
	worker_msg_stop_listeners(w, arg);
	w->draining = true;
	lf_close_waiting(w, WDRAIN_DIRS);
	/* Ask every connection to finish; iterate carefully: drain may close. */
	struct downstream *d = w->conns;
	while (d) {
		struct downstream *next = d->next;
		if (d->ops && d->ops->drain)
			d->ops->drain(d);
		d = next;
	}
	for (size_t i = 0; i < w->snap->nclusters; i++)
		pool_close_idle_all(w, w->snap->clusters[i]);
}

void worker_msg_exit(struct worker *w, void *arg)
{
	(void)arg;
	event_base_loopbreak(w->base);
}

void worker_timer_add(struct worker *w, struct event *ev, uint64_t ms)
{
	struct timeval tv = { (time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000 };
	for (unsigned i = 0; i < w->nct; i++) {
		if (w->ct_ms[i] == ms) {
			event_add(ev, w->ct_tv[i]);
			return;
		}
	}
	if (w->nct < ARRAY_SIZE(w->ct_ms)) {
		const struct timeval *ct = event_base_init_common_timeout(w->base, &tv);
		if (ct) {
			w->ct_ms[w->nct] = ms;
			w->ct_tv[w->nct++] = ct;
			event_add(ev, ct);
			return;
		}
	}
	event_add(ev, &tv);
}

static void chain_notify(struct worker *w, const struct filter_chain *fc, bool entering)
{
	for (size_t i = 0; i < fc->npre; i++)
		if (fc->pre[i].ops->worker_snapshot)
			fc->pre[i].ops->worker_snapshot(fc->pre[i].cfg, w, entering);
	if (fc->ops && fc->ops->worker_snapshot)
		fc->ops->worker_snapshot(fc->cfg, w, entering);
}

/* Tell the network filters of every listener of s that w leaves or enters
 * it (network_filter_ops.worker_snapshot).  O(filter chains). */
static void snapshot_notify(struct worker *w, const struct snapshot *s, bool entering)
{
	for (size_t i = 0; s && i < s->nlisteners; i++) {
		const struct listener_cfg *l = s->listeners[i];
		for (size_t k = 0; k < l->nchains; k++)
			chain_notify(w, &l->chains[k], entering);
		if (l->default_chain)
			chain_notify(w, l->default_chain, entering);
	}
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	current_worker = w;
	snapshot_notify(w, w->snap, true);
	start_listeners(w);
	event_base_dispatch(w->base);
	/* Shutdown: close whatever is left. */
	worker_msg_stop_listeners(w, NULL);
	lf_close_waiting(w, WDRAIN_DIRS);
	free(w->lf_buf);
	w->lf_buf = NULL;
	while (w->conns)
		downstream_close(w->conns);
	/* Every request is gone: free this worker's pools. */
	for (size_t i = 0; i < w->snap->nclusters; i++)
		if (w->snap->clusters[i]->odst)
			original_dst_worker_exit(w->snap->clusters[i], w);
	for (size_t i = 0; i < w->snap->nclusters; i++) {
		struct hostset *hs = w->snap->clusters[i]->workers[w->id].hs;
		for (size_t k = 0; hs && k < hs->n; k++)
			pool_orphan(w, hs->hosts[k]);
	}
	filters_thread_exit();
	return NULL;
}

void worker_init(struct worker *w, unsigned id)
{
	memset(w, 0, sizeof(*w));
	w->id = id;
	w->shard = id + 1;
	/* A worker's base is only ever touched by its own thread, so it runs
	 * without libevent's locks; the main thread wakes it through an
	 * eventfd instead of a cross-thread event_active(). */
	struct event_config *ec = event_config_new();
	event_config_set_flag(ec, EVENT_BASE_FLAG_NOLOCK);
	event_config_set_flag(ec, EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST);
	w->base = event_base_new_with_config(ec);
	event_config_free(ec);
	if (!w->base)
		die("event_base_new");
	pthread_mutex_init(&w->mq_lock, NULL);
	w->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (w->efd < 0)
		die("eventfd: %s", strerror(errno));
	w->msg_ev = event_new(w->base, w->efd, EV_READ | EV_PERSIST, msg_cb, w);
	event_add(w->msg_ev, NULL);
}

int worker_start(struct worker *w)
{
	if (pthread_create(&w->thread, NULL, worker_main, w))
		return RM_ERROR;
	return RM_OK;
}

/* ---- dynamic configuration (xDS): swap to a new snapshot ------------------- */

static void unref_snapshot_main(void *arg)
{
	snapshot_unref(arg);
}

/* The drain time of replaced listeners ended: close what is still open. */
static void ldrain_cb(evutil_socket_t fd, short what, void *arg)
{
	struct worker *w = arg;
	uint64_t now = now_ms(), next = 0;
	(void)fd;
	(void)what;
	struct downstream *d = w->conns;
	while (d) {
		struct downstream *n = d->next;
		if (d->drain_deadline_ms && !d->closed) {
			if (d->drain_deadline_ms <= now) {
				downstream_close(d);
				d = n;
				continue;
			}
			if (d->drain_goaway_ms && d->drain_goaway_ms <= now) {
				d->drain_goaway_ms = 0;   /* second half: HTTP/2 GOAWAY */
				if (d->ops && d->ops->drain)
					d->ops->drain(d);
			}
			uint64_t t = d->drain_goaway_ms ? d->drain_goaway_ms : d->drain_deadline_ms;
			if (!next || t < next)
				next = t;
		}
		d = n;
	}
	if (next) {
		struct timeval tv = { (time_t)((next - now) / 1000), (suseconds_t)((next - now) % 1000) * 1000 };
		event_add(w->ldrain_ev, &tv);
	}
}

/* Does a connection accepted on listener version o drain with snapshot s:
 * its listener was removed, or replaced by a version whose configuration
 * changed (not a recompilation for routes or clusters: same JSON)? */
static bool listener_replaced(const struct listener_cfg *o, const struct snapshot *s)
{
	for (size_t i = 0; i < s->nlisteners; i++) {
		const struct listener_cfg *l = s->listeners[i];
		if (l == o)
			return false;
		if (!strcmp(l->name, o->name))
			return !(l->json && o->json && (l->json == o->json || json_equal(l->json, o->json)));
	}
	return true;
}

/* Listeners removed or replaced (see listener_replaced): their connections
 * drain for --drain-time-s (HTTP/1.1: connection: close on the next response;
 * HTTP/2: GOAWAY after half the drain time, so that clients that do not retry
 * refused streams (h2load) see none during short updates; then closed), as
 * Envoy drains the filter chains of an updated listener.  Nothing to do unless a listener of the worker's current set
 * changed; then O(connections) with a small per-version memo. */
static void drain_replaced(struct worker *w, const struct snapshot *s)
{
	bool changed = false;
	for (size_t k = 0; !changed && k < w->nlisteners; k++)
		changed = listener_replaced(w->listeners[k].cfg, s);
	if (!changed || w->draining)
		return;
	const struct listener_cfg *memo_l[32];
	bool memo_v[32];
	size_t nmemo = 0;
	uint64_t now = now_ms(), drain_ms = (uint64_t)g_server.opt.drain_time_s * 1000;
	uint64_t deadline = now + drain_ms;
	bool any = false;
	struct downstream *d = w->conns;
	while (d) {
		struct downstream *n = d->next;
		if (!d->draining && !d->closed) {
			size_t i;
			bool hit;
			for (i = 0; i < nmemo && memo_l[i] != d->lcfg; i++)
				;
			if (i < nmemo) {
				hit = memo_v[i];
			} else {
				hit = listener_replaced(d->lcfg, s);
				if (nmemo < ARRAY_SIZE(memo_l)) {
					memo_l[nmemo] = d->lcfg;
					memo_v[nmemo++] = hit;
				}
			}
			if (hit) {
				d->draining = true;
				d->drain_deadline_ms = deadline;
				d->drain_goaway_ms = now + drain_ms / 2;
				any = true;
				if (d->ops && d->ops->drain)
					d->ops->drain(d);
			}
		}
		d = n;
	}
	if (any) {
		if (!w->ldrain_ev)
			w->ldrain_ev = evtimer_new(w->base, ldrain_cb, w);
		if (!evtimer_pending(w->ldrain_ev, NULL)) {
			uint64_t ms = drain_ms / 2;
			struct timeval tv = { (time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000 };
			event_add(w->ldrain_ev, &tv);
		}
	}
}

/* arg: a new snapshot (a reference for this worker).  Listeners the new
 * snapshot shares with the old one (same listener_cfg object), and new
 * versions of a listener with the same name and address, keep the socket
 * (no connection in the accept queue is lost); other new ones get the socket
 * the main thread bound for this worker; listeners that are gone stop
 * accepting (their connections finish on the snapshot they hold).  New
 * connections use the new snapshot. */
void worker_msg_set_snapshot(struct worker *w, void *arg)
{
	struct snapshot *s = arg, *old = w->snap;
	struct worker_listener *nl = xcalloc(s->nlisteners ? s->nlisteners : 1, sizeof(*nl));

	drain_replaced(w, s);

	for (size_t i = 0; i < s->nlisteners; i++) {
		struct listener_cfg *l = s->listeners[i];
		struct worker_listener *wl = &nl[i];
		wl->cfg = l;
		wl->w = w;
		/* the same object, else its previous version (same name and
		 * address: the main thread bound no new socket for it) */
		for (size_t k = 0; k < w->nlisteners; k++) {
			const struct listener_cfg *o = w->listeners[k].cfg;
			bool same = o == l || (o->addrlen == l->addrlen &&
					       !memcmp(&o->addr, &l->addr, l->addrlen) &&
					       o->bind_to_port == l->bind_to_port &&
					       !strcmp(o->name, l->name) && l->fds && l->fds[w->id] < 0);
			if (same && w->listeners[k].evl) {
				wl->evl = w->listeners[k].evl;
				w->listeners[k].evl = NULL;
				evconnlistener_set_cb(wl->evl, accept_cb, wl);
				break;
			}
		}
		if (wl->evl || w->draining || !l->bind_to_port || !l->fds || l->fds[w->id] < 0)
			continue;
		wl->evl = evconnlistener_new(w->base, accept_cb, wl,
					     LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE, -1, l->fds[w->id]);
		if (!wl->evl)
			die("evconnlistener_new");
		l->fds[w->id] = -1;
		evconnlistener_set_error_cb(wl->evl, accept_error_cb);
	}
	for (size_t k = 0; k < w->nlisteners; k++)
		if (w->listeners[k].evl)
			evconnlistener_free(w->listeners[k].evl);
	free(w->listeners);
	w->listeners = nl;
	w->nlisteners = s->nlisteners;
	/* Clusters that left (removed, or replaced by a new version): their
	 * hosts' pools are orphaned (idle connections close, busy ones finish),
	 * else an idle pooled connection and its host would keep each other
	 * alive.  O(clusters) with a per-worker mark. */
	for (size_t i = 0; i < s->nclusters; i++)
		s->clusters[i]->workers[w->id].snap_mark = s->version;
	for (size_t i = 0; old && i < old->nclusters; i++) {
		struct cluster *cl = old->clusters[i];
		struct hostset *hs = cl->workers[w->id].hs;
		if (cl->workers[w->id].snap_mark == s->version || cl->odst)
			continue;
		for (size_t k = 0; hs && k < hs->n; k++)
			pool_orphan(w, hs->hosts[k]);
	}
	/* per-worker filter state (RDS route tables) follows the new snapshot
	 * before any request runs on it */
	snapshot_notify(w, old, false);
	snapshot_notify(w, s, true);
	w->snap = s;
	main_post(unref_snapshot_main, old);
}
