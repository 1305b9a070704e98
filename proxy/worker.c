/* worker.c - worker threads, message queues, listeners, downstream list. */
#include "worker.h"

#include <errno.h>
#include <unistd.h>
#include <sys/eventfd.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include "conn.h"
#include <event2/thread.h>
#include "server.h"
#include "downstream.h"
#include "filter.h"
#include "log.h"
#include "config/address.h"
#include "upstream/pool.h"
#include "upstream/original_dst.h"

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

/* ---- downstream connections ---------------------------------------------- */

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

static const struct filter_chain *match_chain(const struct listener_cfg *l, uint16_t dport)
{
	for (size_t i = 0; i < l->nchains; i++)
		if (!l->chains[i].dst_port || l->chains[i].dst_port == dport)
			return &l->chains[i];
	return l->default_chain;
}

/* Run l's listener filters on a, in order.  false: close the socket. */
static bool run_listener_filters(const struct listener_cfg *l, struct listener_accept *a,
				 struct worker *w)
{
	for (size_t i = 0; i < l->nlfilters; i++)
		if (l->lfilters[i].ops->on_accept(a, l->lfilters[i].cfg, w) != LF_CONTINUE)
			return false;
	return true;
}

static void accept_cb(struct evconnlistener *evl, evutil_socket_t fd, struct sockaddr *sa,
		      int salen, void *arg)
{
	struct worker_listener *wl = arg;
	struct worker *w = wl->w;
	struct listener_cfg *l = wl->cfg;
	struct listener_accept la;
	(void)evl;

	if (w->draining) {
		evutil_closesocket(fd);
		return;
	}
	la.fd = fd;
	la.peer = sa;
	la.locallen = sizeof(la.local);
	la.local_restored = false;
	getsockname(fd, (struct sockaddr *)&la.local, &la.locallen);
	if (!run_listener_filters(l, &la, w)) {
		evutil_closesocket(fd);
		return;
	}
	if (l->use_original_dst && la.local_restored) {
		/* Envoy's hand-off: the listener of the original destination (in
		 * this worker's snapshot) takes the connection and runs its own
		 * listener filters; it does not hand off again.  None: this
		 * listener's own chains serve it (passthrough). */
		struct listener_cfg *t = snapshot_find_listener_by_addr(w->snap,
									(struct sockaddr *)&la.local);
		if (t && t != l) {
			l = t;
			if (!run_listener_filters(l, &la, w)) {
				evutil_closesocket(fd);
				return;
			}
		}
	}
	const struct filter_chain *fc = match_chain(l, sockaddr_port((struct sockaddr *)&la.local));
	if (!fc) {
		stats_inc(l->stats, w->shard, LS_no_filter_chain_match);
		evutil_closesocket(fd);
		return;
	}
	struct accept_info ai = { w, NULL, l, sa, (socklen_t)salen, &la.local, la.local_restored };
	for (size_t i = 0; i < fc->npre; i++) {
		if (!fc->pre[i].ops->on_new_connection(&ai, fc->pre[i].cfg)) {
			evutil_closesocket(fd);
			return;
		}
	}
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	struct conn *bev = conn_new(w->base, fd);
	if (!bev) {
		evutil_closesocket(fd);
		return;
	}
	/* The filter allocates its connection struct with downstream_new(). */
	ai.bev = bev;
	fc->ops->on_accept(&ai, fc->cfg);
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
			die("evconnlistener_new");
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

void worker_msg_drain(struct worker *w, void *arg)
{
	worker_msg_stop_listeners(w, arg);
	w->draining = true;
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

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	current_worker = w;
	start_listeners(w);
	event_base_dispatch(w->base);
	/* Shutdown: close whatever is left. */
	worker_msg_stop_listeners(w, NULL);
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
	w->snap = s;
	main_post(unref_snapshot_main, old);
}
