/* server.c - main thread: startup, listener sockets, workers, signals, drain. */
#include "server.h"

#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <sched.h>
#include <signal.h>
#include <unistd.h>
#include <netinet/in.h>
#include <event2/thread.h>
#include "worker.h"
#include "log.h"
#include "config/yaml_json.h"
#include "config/address.h"
#include "upstream/cluster.h"
#include "../stats/admin.h"
#include "../xds/ads.h"

struct server g_server;

static const struct stat_desc server_stat_desc[] = { SERVER_STATS(STATS_DESC) };

#define LM_STATS(X) X(GAUGE, total_listeners_active) X(GAUGE, total_listeners_draining) \
	X(COUNTER, listener_added) X(COUNTER, listener_create_success) X(COUNTER, listener_create_failure)
enum { LM_STATS(STATS_ENUM) LM_STATS_N };
static const struct stat_desc lm_stat_desc[] = { LM_STATS(STATS_DESC) };

/* CPUs we may actually use: the affinity mask, capped by the cgroup v2
 * cpu.max quota (rounded up), never the host's count. */
unsigned server_default_concurrency(void)
{
	cpu_set_t set;
	unsigned n = 1;
	if (!sched_getaffinity(0, sizeof(set), &set))
		n = (unsigned)CPU_COUNT(&set);
	FILE *f = fopen("/sys/fs/cgroup/cpu.max", "r");
	if (f) {
		char quota[32];
		unsigned long period = 0;
		if (fscanf(f, "%31s %lu", quota, &period) == 2 && strcmp(quota, "max") && period) {
			unsigned long q = strtoul(quota, NULL, 10);
			unsigned c = (unsigned)((q + period - 1) / period);
			if (c >= 1 && c < n)
				n = c;
		}
		fclose(f);
	}
	return n ? n : 1;
}

long server_active_connections(const struct server *srv)
{
	long n = 0;
	for (unsigned i = 0; i < srv->nworkers; i++)
		n += __atomic_load_n(&srv->workers[i].nconns, __ATOMIC_RELAXED);
	return n;
}

/* ---- listener sockets ---------------------------------------------------------- */

static int open_listener_socket(const struct sockaddr_storage *ss, socklen_t len, int backlog,
				char *err, size_t errlen)
{
	int fd = socket(ss->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	int one = 1;
	if (fd < 0) {
		snprintf(err, errlen, "socket: %s", strerror(errno));
		return -1;
	}
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
	if (ss->ss_family == AF_INET6)
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
	if (bind(fd, (const struct sockaddr *)ss, len) < 0 || listen(fd, backlog) < 0) {
		snprintf(err, errlen, "cannot bind/listen: %s", strerror(errno));
		close(fd);
		return -1;
	}
	return fd;
}

/* One SO_REUSEPORT socket per worker; port 0 resolves once for all. */
static int bind_listeners(struct server *srv, struct snapshot *s)
{
	char err[256];
	for (size_t i = 0; i < s->nlisteners; i++) {
		struct listener_cfg *l = s->listeners[i];
		l->fds = xmalloc(srv->nworkers * sizeof(int));
		l->nfds = srv->nworkers;
		for (unsigned w = 0; w < srv->nworkers; w++)
			l->fds[w] = -1;
		/* bind_to_port: false: no socket; connections arrive only by
		 * use_original_dst hand-off from another listener */
		for (unsigned w = 0; w < srv->nworkers && l->bind_to_port; w++) {
			l->fds[w] = open_listener_socket(&l->addr, l->addrlen, l->backlog, err, sizeof(err));
			if (l->fds[w] < 0) {
				char a[80];
				sockaddr_format((struct sockaddr *)&l->addr, a, sizeof(a));
				log_error("listener '%s' on %s: %s", l->name, a, err);
				stats_inc(srv->lm_stats, 0, listener_create_failure);
				return RM_ERROR;
			}
			if (w == 0 && sockaddr_port((struct sockaddr *)&l->addr) == 0) {
				socklen_t sl = sizeof(l->addr);
				getsockname(l->fds[0], (struct sockaddr *)&l->addr, &sl);
			}
		}
		stats_inc(srv->lm_stats, 0, listener_create_success);
		stats_inc(srv->lm_stats, 0, listener_added);
	}
	stats_gauge_set(srv->lm_stats, total_listeners_active, (int64_t)s->nlisteners);
	snapshot_index_listeners(s);   /* port 0 listeners now have their real port */
	return RM_OK;
}

/* ---- host set publishing ----------------------------------------------------------- */

struct hs_msg {
	struct cluster *cl;
	struct hostset *hs;
};

static bool workers_running;

static void worker_set_hostset(struct worker *w, void *arg)
{
	struct hs_msg *m = arg;
	cluster_worker_set_hostset(m->cl, w->id, m->hs);
	cluster_unref(m->cl);
	free(m);
}

static void publish_hostset(struct cluster *cl, struct hostset *hs)
{
	struct server *srv = &g_server;
	for (unsigned i = 0; i < srv->nworkers; i++) {
		__atomic_add_fetch(&hs->refcnt, 1, __ATOMIC_RELAXED);
		if (!workers_running) {
			cluster_worker_set_hostset(cl, i, hs);
			continue;
		}
		struct hs_msg *m = xmalloc(sizeof(*m));
		m->cl = cluster_ref(cl);
		m->hs = hs;
		worker_post(&srv->workers[i], worker_set_hostset, m);
	}
}

/* ---- dynamic configuration (xDS) --------------------------------------------------------- */

/* Sockets for the listeners of s that have none yet (new listeners; shared
 * ones already live in the workers).  A listener that cannot bind is logged
 * and left without sockets (listener_create_failure). */
/* The listener of old that a new version l replaces in place: same name,
 * same address (workers then move their sockets to l: no socket churn). */
static const struct listener_cfg *xds_same_listener(const struct snapshot *old,
						    const struct listener_cfg *l)
{
	for (size_t i = 0; old && i < old->nlisteners; i++) {
		const struct listener_cfg *o = old->listeners[i];
		if (o != l && o->addrlen == l->addrlen && !memcmp(&o->addr, &l->addr, l->addrlen) &&
		    o->bind_to_port == l->bind_to_port && !strcmp(o->name, l->name))
			return o;
	}
	return NULL;
}

static void xds_bind_new_listeners(struct server *srv, struct snapshot *s, const struct snapshot *old)
{
	char err[256];
	for (size_t i = 0; i < s->nlisteners; i++) {
		struct listener_cfg *l = s->listeners[i];
		if (l->fds)
			continue;
		l->fds = xmalloc(srv->nworkers * sizeof(int));
		l->nfds = srv->nworkers;
		for (unsigned w = 0; w < srv->nworkers; w++)
			l->fds[w] = -1;
		if (xds_same_listener(old, l))
			continue;   /* the workers hand the old version's sockets over */
		for (unsigned w = 0; w < srv->nworkers && l->bind_to_port; w++) {
			l->fds[w] = open_listener_socket(&l->addr, l->addrlen, l->backlog, err, sizeof(err));
			if (l->fds[w] < 0) {
				log_error("listener '%s': %s", l->name, err);
				stats_inc(srv->lm_stats, 0, listener_create_failure);
				for (unsigned k = 0; k < w; k++) {
					close(l->fds[k]);
					l->fds[k] = -1;
				}
				break;
			}
			if (w == 0 && sockaddr_port((struct sockaddr *)&l->addr) == 0) {
				socklen_t sl = sizeof(l->addr);
				getsockname(l->fds[0], (struct sockaddr *)&l->addr, &sl);
			}
		}
		if (l->fds[0] >= 0 || !l->bind_to_port) {
			stats_inc(srv->lm_stats, 0, listener_create_success);
			stats_inc(srv->lm_stats, 0, listener_added);
		}
	}
	snapshot_index_listeners(s);
}

void server_xds_publish(struct server *srv, struct snapshot *s)
{
	struct snapshot *old = srv->snap;
	s->version = old ? old->version + 1 : 1;
	xds_bind_new_listeners(srv, s, old);
	srv->snap = s;
	stats_gauge_set(srv->lm_stats, total_listeners_active, (int64_t)s->nlisteners);
	if (workers_running && srv->state != SERVER_DRAINING)
		for (unsigned i = 0; i < srv->nworkers; i++)
			worker_post(&srv->workers[i], worker_msg_set_snapshot, snapshot_ref(s));
	snapshot_unref(old);
}

bool server_workers_running(void)
{
	return workers_running;
}

static void cluster_initialized(struct cluster *cl, void *arg);

void server_xds_initial_fetch_done(struct server *srv)
{
	cluster_initialized(NULL, srv);
}

/* ---- lifecycle ------------------------------------------------------------------------ */

static void start_workers(struct server *srv)
{
	for (unsigned i = 0; i < srv->nworkers; i++)
		srv->workers[i].snap = snapshot_ref(srv->snap);
	workers_running = true;
	for (unsigned i = 0; i < srv->nworkers; i++)
		if (worker_start(&srv->workers[i]))
			die("cannot start worker thread");
	srv->state = SERVER_LIVE;
	stats_gauge_set(srv->server_stats, SRV_state, SERVER_LIVE);
	stats_gauge_set(srv->server_stats, SRV_live, 1);
	log_info("all clusters initialized; %u worker(s) serving %zu listener(s)", srv->nworkers,
		 srv->snap->nlisteners);
}

static void cluster_initialized(struct cluster *cl, void *arg)
{
	struct server *srv = arg;
	(void)cl;
	if (srv->clusters_pending && --srv->clusters_pending == 0 && srv->state != SERVER_DRAINING)
		start_workers(srv);
}

static void finish(struct server *srv)
{
	for (unsigned i = 0; i < srv->nworkers; i++)
		worker_post(&srv->workers[i], worker_msg_exit, NULL);
	event_base_loopexit(srv->base, NULL);
}

static void drain_tick(evutil_socket_t fd, short what, void *arg)
{
	struct server *srv = arg;
	(void)fd;
	(void)what;
	if (server_active_connections(srv) == 0 || now_ms() >= srv->drain_deadline_ms) {
		if (server_active_connections(srv))
			log_warn("drain time over with %ld connection(s) open; closing them",
				 server_active_connections(srv));
		finish(srv);
		return;
	}
	struct timeval tv = { 0, 50 * 1000 };
	evtimer_add(srv->drain_timer, &tv);
}

void server_drain_listeners(struct server *srv)
{
	for (unsigned i = 0; i < srv->nworkers && workers_running; i++)
		worker_post(&srv->workers[i], worker_msg_stop_listeners, NULL);
	stats_gauge_set(srv->lm_stats, total_listeners_active, 0);
}

void server_begin_drain(struct server *srv, bool immediate)
{
	if (srv->state == SERVER_DRAINING && !immediate)
		return;
	log_info(immediate ? "shutting down" : "draining (up to %u s), then exiting",
		 srv->opt.drain_time_s);
	srv->state = SERVER_DRAINING;
	stats_gauge_set(srv->server_stats, SRV_state, SERVER_DRAINING);
	stats_gauge_set(srv->server_stats, SRV_live, 0);
	if (!workers_running || immediate) {
		finish(srv);
		return;
	}
	for (unsigned i = 0; i < srv->nworkers; i++)
		worker_post(&srv->workers[i], worker_msg_drain, NULL);
	srv->drain_deadline_ms = now_ms() + (uint64_t)srv->opt.drain_time_s * 1000;
	srv->drain_timer = evtimer_new(srv->base, drain_tick, srv);
	struct timeval tv = { 0, 20 * 1000 };
	evtimer_add(srv->drain_timer, &tv);
}

static void signal_cb(evutil_socket_t sig, short what, void *arg)
{
	(void)what;
	log_info("received signal %d", (int)sig);
	server_begin_drain(arg, false);
}

static void tick_cb(evutil_socket_t fd, short what, void *arg)
{
	struct server *srv = arg;
	(void)fd;
	(void)what;
	struct mallinfo2 mi = mallinfo2();
	stats_gauge_set(srv->server_stats, SRV_uptime, (int64_t)((now_ms() - srv->start_ms) / 1000));
	stats_gauge_set(srv->server_stats, SRV_memory_allocated, (int64_t)mi.uordblks);
	stats_gauge_set(srv->server_stats, SRV_memory_heap_size, (int64_t)(mi.arena + mi.hblkhd));
	stats_gauge_set(srv->server_stats, SRV_total_connections, server_active_connections(srv));
	for (size_t i = 0; srv->snap && i < srv->snap->nclusters; i++)
		cluster_update_cb_gauges(srv->snap->clusters[i]);
}

static json_t *load_config(const char *path, struct cfg_src **src, char *err, size_t errlen)
{
	size_t n = strlen(path);
	if (n > 5 && !strcmp(path + n - 5, ".json")) {
		*src = NULL;
		return json_load_config_file(path, err, errlen);
	}
	return yaml_load_file(path, src, err, errlen);
}

int server_run(struct server *srv)
{
	char err[1024];
	struct cfg_src *src = NULL;
	struct cfg_ctx c;
	json_t *root;
	int rc = 1;

	srv->start_ms = now_ms();
	srv->state = SERVER_PRE_INITIALIZING;
	if (!srv->nworkers)
		srv->nworkers = server_default_concurrency();
	srv->stats = stats_store_new(srv->nworkers + 1);
	srv->server_stats = stats_scope_new(srv->stats, "server", "server", NULL, NULL,
					    server_stat_desc, SERVER_STATS_N);
	srv->lm_stats = stats_scope_new(srv->stats, "listener_manager", "listener_manager", NULL, NULL,
					lm_stat_desc, LM_STATS_N);
	stats_gauge_set(srv->server_stats, SRV_concurrency, srv->nworkers);
	stats_gauge_set(srv->server_stats, SRV_state, SERVER_PRE_INITIALIZING);

	if (!srv->opt.config_path) {
		fprintf(stderr, "remora: no configuration given (-c FILE)\n");
		goto out;
	}
	root = load_config(srv->opt.config_path, &src, err, sizeof(err));
	if (!root) {
		fprintf(stderr, "%s\n", err);
		goto out;
	}
	cfg_init(&c, src, srv->opt.config_path);
	if (srv->opt.allow_unknown_fields)
		c.flags |= CFG_F_ALLOW_UNKNOWN;
	srv->snap = config_build_bootstrap(&c, root, srv);
	stats_add(srv->server_stats, 0, SRV_static_unknown_fields, (int64_t)cfg_unknown_fields_seen);
	json_decref(root);
	if (!srv->snap) {
		fprintf(stderr, "%s\n", c.err[0] ? c.err : "invalid configuration");
		cfg_src_free(src);
		goto out;
	}
	cfg_src_free(src);
	if (srv->opt.validate_only) {
		printf("configuration '%s' OK\n", srv->opt.config_path);
		rc = 0;
		goto out;
	}

	srv->base = event_base_new();
	if (!srv->base)
		die("event_base_new");
	srv->main_thread = pthread_self();
	srv->workers = xcalloc(srv->nworkers, sizeof(*srv->workers));
	for (unsigned i = 0; i < srv->nworkers; i++) {
		worker_init(&srv->workers[i], i);
		srv->workers[i].main_base = srv->base;
	}
	if (bind_listeners(srv, srv->snap))
		goto out;
	if (srv->has_admin) {
		srv->admin = admin_start(srv, err, sizeof(err));
		if (!srv->admin) {
			log_error("admin: %s", err);
			goto out;
		}
	}
	srv->sigterm_ev = evsignal_new(srv->base, SIGTERM, signal_cb, srv);
	srv->sigint_ev = evsignal_new(srv->base, SIGINT, signal_cb, srv);
	evsignal_add(srv->sigterm_ev, NULL);
	evsignal_add(srv->sigint_ev, NULL);
	srv->tick_ev = event_new(srv->base, -1, EV_PERSIST, tick_cb, srv);
	struct timeval sec = { 1, 0 };
	event_add(srv->tick_ev, &sec);
	tick_cb(-1, 0, srv);

	/* Clusters initialize first (DNS may take a moment); workers and their
	 * listeners start once every cluster knows its first membership. */
	srv->state = SERVER_INITIALIZING;
	cluster_publish_hook = publish_hostset;
	srv->clusters_pending = srv->snap->nclusters + 1 + (srv->xds.enabled ? 1 : 0);
	for (size_t i = 0; i < srv->snap->nclusters; i++)
		cluster_start(srv->snap->clusters[i], srv->base, cluster_initialized, srv);
	if (srv->xds.enabled)   /* its +1 ends with the initial fetch (or its timeout) */
		srv->ads = ads_start(srv);
	cluster_initialized(NULL, srv);   /* the +1: covers zero clusters */

	log_info("remora started (concurrency %u, config %s)", srv->nworkers, srv->opt.config_path);
	event_base_dispatch(srv->base);

	for (unsigned i = 0; i < srv->nworkers && workers_running; i++)
		pthread_join(srv->workers[i].thread, NULL);
	log_info("exiting");
	rc = srv->exit_code;
out:
	server_free(srv);
	return rc;
}

void server_free(struct server *srv)
{
	ads_free(srv->ads);
	srv->ads = NULL;
	xds_bootstrap_free(&srv->xds);
	cluster_publish_hook = NULL;
	admin_free(srv->admin);
	srv->admin = NULL;
	for (unsigned i = 0; srv->workers && i < srv->nworkers; i++) {
		struct worker *w = &srv->workers[i];
		/* Messages posted after the worker stopped (a DNS answer or a
		 * health change racing shutdown) are dropped; host-set messages
		 * hold references that must be released. */
		struct worker_msg *m = w->mq_head;
		while (m) {
			struct worker_msg *next = m->next;
			if (m->fn == worker_set_hostset) {
				struct hs_msg *hm = m->arg;
				hostset_unref(hm->hs);
				cluster_unref(hm->cl);
				free(hm);
			} else if (m->fn == worker_msg_set_snapshot) {
				snapshot_unref(m->arg);
			}
			free(m);
			m = next;
		}
		free(w->listeners);
		if (w->msg_ev)
			event_free(w->msg_ev);
		snapshot_unref(w->snap);
		if (w->base)
			event_base_free(w->base);
		pthread_mutex_destroy(&w->mq_lock);
		if (w->efd > 0)
			close(w->efd);
	}
	free(srv->workers);
	srv->workers = NULL;
	snapshot_unref(srv->snap);
	srv->snap = NULL;
	if (srv->sigterm_ev)
		event_free(srv->sigterm_ev);
	if (srv->sigint_ev)
		event_free(srv->sigint_ev);
	if (srv->tick_ev)
		event_free(srv->tick_ev);
	if (srv->drain_timer)
		event_free(srv->drain_timer);
	if (srv->base)
		event_base_free(srv->base);
	srv->base = NULL;
	stats_scope_free(srv->server_stats);
	stats_scope_free(srv->lm_stats);
	stats_store_free(srv->stats);
	free(srv->node_id);
	free(srv->node_cluster);
	free(srv->opt.argv_line);
}
