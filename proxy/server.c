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
#include "router/route.h"
#include "../stats/admin.h"
#include "../tls/tls.h"
#include "../tls/ca_client.h"
#include "../xds/ads.h"
#include "../stats/tracer.h"

struct server g_server;

static const struct stat_desc server_stat_desc[] = { SERVER_STATS(STATS_DESC) };

#define LM_STATS(X) X(GAUGE, total_listeners_active) X(GAUGE, total_listeners_draining) \
	X(COUNTER, listener_added) X(COUNTER, listener_create_success) X(COUNTER, listener_create_failure)
enum { LM_STATS(STATS_ENUM) LM_STATS_N };
static const struct stat_desc lm_stat_desc[] = { LM_STATS(STATS_DESC) };

/* Read one or two unsigned/"max" words from a file; false if absent. */
static bool read_words(const char *path, char *a, size_t al, char *b, size_t bl)
{
	FILE *f = fopen(path, "r");
	char line[128];
	bool ok = false;
	if (!f)
		return false;
	if (fgets(line, sizeof(line), f)) {
		char fmt[32];
		snprintf(fmt, sizeof(fmt), "%%%zus %%%zus", al - 1, bl - 1);
		b[0] = '\0';
		ok = sscanf(line, fmt, a, b) >= 1;
	}
	fclose(f);
	return ok;
}

/* The smallest CPU quota (rounded up to whole CPUs) set on dir or any of
 * its ancestors below mount; 0 = none.  v2: cpu.max "QUOTA PERIOD" or
 * "max PERIOD"; v1: cpu.cfs_quota_us (-1 = none) / cpu.cfs_period_us.  A
 * path that does not exist under the mount (a container whose cgroup
 * namespace is not private shows the host's path while the mount is its
 * own cgroup) is skipped: the walk goes up to the mount root. */
static unsigned quota_walk(const char *mount, const char *dir, bool v2)
{
	char path[1024], cur[512], a[32], b[32];
	unsigned best = 0;
	snprintf(cur, sizeof(cur), "%s", dir);
	for (;;) {
		unsigned long q = 0, period = 0;
		bool have = false;
		size_t n = strlen(cur);
		while (n > 1 && cur[n - 1] == '/')
			cur[--n] = '\0';
		const char *sep = (n == 1 && cur[0] == '/') || !n ? "" : cur;
		if (v2) {
			snprintf(path, sizeof(path), "%s%s/cpu.max", mount, sep);
			if (read_words(path, a, sizeof(a), b, sizeof(b)) && strcmp(a, "max")) {
				q = strtoul(a, NULL, 10);
				period = strtoul(b, NULL, 10);
				have = true;
			}
		} else {
			snprintf(path, sizeof(path), "%s%s/cpu.cfs_quota_us", mount, sep);
			if (read_words(path, a, sizeof(a), b, sizeof(b)) && a[0] != '-') {
				q = strtoul(a, NULL, 10);
				snprintf(path, sizeof(path), "%s%s/cpu.cfs_period_us", mount, sep);
				if (read_words(path, a, sizeof(a), b, sizeof(b)))
					period = strtoul(a, NULL, 10);
				have = true;
			}
		}
		if (have && q && period) {
			unsigned c = (unsigned)((q + period - 1) / period);
			if (c && (!best || c < best))
				best = c;
		}
		char *slash = strrchr(cur, '/');
		if (!slash || !*sep)
			break;
		if (slash == cur)
			cur[1] = '\0';
		else
			*slash = '\0';
	}
	return best;
}

unsigned cgroup_cpu_quota(const char *root, const char *self_cgroup)
{
	char line[1024], mount[512];
	unsigned best = 0;
	const char *p = self_cgroup;
	while (p && *p) {
		size_t len = strcspn(p, "\n");
		snprintf(line, sizeof(line), "%.*s", (int)len, p);
		p += len + (p[len] == '\n');
		/* "ID:controllers:path" */
		char *c1 = strchr(line, ':'), *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
		if (!c2)
			continue;
		*c1 = '\0';
		*c2 = '\0';
		const char *ctrls = c1 + 1, *path = c2 + 1;
		unsigned q = 0;
		if (!strcmp(line, "0") && !*ctrls) {
			/* v2: the unified hierarchy at root, or root/unified (hybrid) */
			snprintf(mount, sizeof(mount), "%s", root);
			q = quota_walk(mount, path, true);
			if (!q) {
				snprintf(mount, sizeof(mount), "%s/unified", root);
				q = quota_walk(mount, path, true);
			}
		} else {
			bool cpu = false;
			char tmp[256];
			snprintf(tmp, sizeof(tmp), "%s", ctrls);
			for (char *save = NULL, *t = strtok_r(tmp, ",", &save); t; t = strtok_r(NULL, ",", &save))
				cpu |= !strcmp(t, "cpu");
			if (!cpu)
				continue;
			snprintf(mount, sizeof(mount), "%s/%s", root, ctrls);
			q = quota_walk(mount, path, false);
			if (!q) {
				snprintf(mount, sizeof(mount), "%s/cpu", root);
				q = quota_walk(mount, path, false);
			}
		}
		if (q && (!best || q < best))
			best = q;
	}
	return best;
}

/* CPUs we may actually use: the affinity mask, capped by the cgroup CPU
 * quota (v2 cpu.max or v1 cfs_quota_us of our cgroup and its ancestors,
 * rounded up), never the host's count. */
unsigned server_default_concurrency(void)
{
	cpu_set_t set;
	unsigned n = 1;
	char buf[4096];
	if (!sched_getaffinity(0, sizeof(set), &set))
		n = (unsigned)CPU_COUNT(&set);
	FILE *f = fopen("/proc/self/cgroup", "r");
	if (f) {
		size_t len = fread(buf, 1, sizeof(buf) - 1, f);
		buf[len] = '\0';
		fclose(f);
		unsigned q = cgroup_cpu_quota("/sys/fs/cgroup", buf);
		if (q >= 1 && q < n)
			n = q;
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

/* LDS, while the update is applied (so that it can be NACKed): bind the
 * sockets of a new listener (or of a new version at another address) now;
 * a new version of a published listener at the same address takes over its
 * sockets at publication instead.  RM_ERROR with err when the address cannot
 * be bound (in use by another process). */
int server_xds_bind_listener(struct server *srv, struct listener_cfg *l, char *err, size_t errlen)
{
	char e[256], a[80];
	if (l->fds || !l->bind_to_port || xds_same_listener(srv->snap, l))
		return RM_OK;
	int *fds = xmalloc(srv->nworkers * sizeof(int));
	for (unsigned w = 0; w < srv->nworkers; w++) {
		fds[w] = open_listener_socket(&l->addr, l->addrlen, l->backlog, e, sizeof(e));
		if (fds[w] < 0) {
			for (unsigned k = 0; k < w; k++)
				close(fds[k]);
			free(fds);
			sockaddr_format((struct sockaddr *)&l->addr, a, sizeof(a));
			snprintf(err, errlen, "address %s: %s", a, e);
			stats_inc(srv->lm_stats, 0, listener_create_failure);
			return RM_ERROR;
		}
		if (w == 0 && sockaddr_port((struct sockaddr *)&l->addr) == 0) {
			socklen_t sl = sizeof(l->addr);
			getsockname(fds[0], (struct sockaddr *)&l->addr, &sl);
		}
	}
	l->fds = fds;
	l->nfds = srv->nworkers;
	stats_inc(srv->lm_stats, 0, listener_create_success);
	stats_inc(srv->lm_stats, 0, listener_added);
	return RM_OK;
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
		const struct listener_cfg *same = xds_same_listener(old, l);
		if (same && !workers_running && same->fds) {
			/* before the workers start (an initial fetch published
			 * in steps) nobody hands sockets over: move them */
			memcpy(l->fds, same->fds, srv->nworkers * sizeof(int));
			for (unsigned w = 0; w < srv->nworkers; w++)
				same->fds[w] = -1;
			continue;
		}
		if (same)
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

void server_init_release(struct server *srv)
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
	long active = server_active_connections(srv);
	bool may_exit_idle = !srv->drain_wait_outbound || srv->opt.exit_on_zero_active;
	(void)fd;
	(void)what;
	if ((active == 0 && may_exit_idle) || now_ms() >= srv->drain_deadline_ms) {
		if (active)
			log_warn("drain time over with %ld connection(s) open; closing them", active);
		else
			log_info("drained: no active connections");
		finish(srv);
		return;
	}
	struct timeval tv = { 0, 50 * 1000 };
	evtimer_add(srv->drain_timer, &tv);
}

static void post_all(struct server *srv, void (*fn)(struct worker *, void *), void *arg)
{
	for (unsigned i = 0; i < srv->nworkers && workers_running; i++)
		worker_post(&srv->workers[i], fn, arg);
}

/* Listeners with a socket whose traffic_direction is OUTBOUND. */
static bool has_outbound_listeners(const struct server *srv)
{
	for (size_t i = 0; srv->snap && i < srv->snap->nlisteners; i++)
		if (srv->snap->listeners[i]->direction == LISTENER_OUTBOUND &&
		    srv->snap->listeners[i]->bind_to_port)
			return true;
	return false;
}

static int64_t bound_listeners(const struct server *srv, unsigned dir_mask)
{
	int64_t n = 0;
	for (size_t i = 0; srv->snap && i < srv->snap->nlisteners; i++)
		if (srv->snap->listeners[i]->bind_to_port &&
		    (dir_mask & WDRAIN_DIR(srv->snap->listeners[i]->direction)))
			n++;
	return n;
}

static void start_drain_timer(struct server *srv)
{
	srv->drain_deadline_ms = now_ms() + (uint64_t)srv->opt.drain_time_s * 1000;
	if (!srv->drain_timer)
		srv->drain_timer = evtimer_new(srv->base, drain_tick, srv);
	struct timeval tv = { 0, 20 * 1000 };
	evtimer_add(srv->drain_timer, &tv);
}

/* Leave LIVE: /ready answers 503 from now on. */
static bool enter_draining(struct server *srv)
{
	if (srv->state == SERVER_DRAINING)
		return false;
	srv->state = SERVER_DRAINING;
	stats_gauge_set(srv->server_stats, SRV_state, SERVER_DRAINING);
	stats_gauge_set(srv->server_stats, SRV_live, 0);
	return true;
}

static void graceful_tick(evutil_socket_t fd, short what, void *arg)
{
	struct server *srv = arg;
	(void)fd;
	(void)what;
	post_all(srv, worker_msg_drain_some, (void *)(uintptr_t)(srv->graceful_flags | WDRAIN_LISTENERS));
	srv->graceful_flags = 0;
}

void server_drain_listeners(struct server *srv, bool inbound_only, bool graceful, bool skip_exit)
{
	unsigned dirs = inbound_only ? WDRAIN_DIR(LISTENER_INBOUND) : WDRAIN_DIRS;
	int64_t n = bound_listeners(srv, dirs);
	if (!graceful) {
		post_all(srv, worker_msg_drain_some, (void *)(uintptr_t)(dirs | WDRAIN_LISTENERS));
		stats_gauge_set(srv->lm_stats, total_listeners_active,
				bound_listeners(srv, WDRAIN_DIRS) - n);
		return;
	}
	/* Envoy: a graceful drain that already runs is not restarted */
	if (srv->graceful_timer && evtimer_pending(srv->graceful_timer, NULL))
		return;
	post_all(srv, worker_msg_drain_some, (void *)(uintptr_t)(dirs | WDRAIN_CONNS));
	stats_gauge_set(srv->lm_stats, total_listeners_draining, n);
	if (skip_exit)
		return;
	srv->graceful_flags = dirs;
	if (!srv->graceful_timer)
		srv->graceful_timer = evtimer_new(srv->base, graceful_tick, srv);
	struct timeval tv = { (time_t)srv->opt.drain_time_s, 0 };
	evtimer_add(srv->graceful_timer, &tv);
}

void server_begin_drain(struct server *srv, bool immediate)
{
	if (immediate) {
		log_info("shutting down");
		enter_draining(srv);
		finish(srv);
		return;
	}
	if (!enter_draining(srv))
		return;
	if (!workers_running) {
		finish(srv);
		return;
	}
	/* A sidecar: inbound stops first; outbound keeps working for the
	 * application's own shutdown. */
	unsigned dirs = WDRAIN_DIR(LISTENER_INBOUND) | WDRAIN_DIR(LISTENER_UNSPECIFIED);
	srv->drain_wait_outbound = has_outbound_listeners(srv);
	log_info("draining inbound listeners (up to %u s%s), then exiting", srv->opt.drain_time_s,
		 srv->drain_wait_outbound
			 ? (srv->opt.exit_on_zero_active ? "; outbound serves until no connection is left"
							 : "; outbound serves until then")
			 : "");
	post_all(srv, worker_msg_drain_some, (void *)(uintptr_t)(dirs | WDRAIN_LISTENERS | WDRAIN_CONNS));
	stats_gauge_set(srv->lm_stats, total_listeners_active, bound_listeners(srv, ~dirs & WDRAIN_DIRS));
	stats_gauge_set(srv->lm_stats, total_listeners_draining, bound_listeners(srv, dirs));
	start_drain_timer(srv);
}

void server_quit(struct server *srv)
{
	bool first = enter_draining(srv);
	if (!workers_running) {
		finish(srv);
		return;
	}
	log_info("quit requested: draining every listener (up to %u s), then exiting",
		 srv->opt.drain_time_s);
	srv->drain_wait_outbound = false;
	post_all(srv, worker_msg_drain, NULL);
	stats_gauge_set(srv->lm_stats, total_listeners_active, 0);
	if (first || !srv->drain_timer || !evtimer_pending(srv->drain_timer, NULL))
		start_drain_timer(srv);
}

static void signal_cb(evutil_socket_t sig, short what, void *arg)
{
	(void)what;
	struct server *srv = arg;
	log_info("received signal %d", (int)sig);
	/* a second SIGTERM/SIGINT while draining: stop waiting */
	server_begin_drain(srv, srv->state == SERVER_DRAINING && srv->drain_timer &&
				     evtimer_pending(srv->drain_timer, NULL));
}

static void snap_free_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
	snapshot_free_deferred();
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
	stats_gauge_set(srv->server_stats, SRV_route_tables_active, route_config_live());
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

	if (srv->opt.config_path && srv->opt.config_yaml) {
		/* Envoy merges the two; not supported yet */
		fprintf(stderr, "remora: give either -c FILE or --config-yaml, not both\n");
		goto out;
	}
	if (srv->opt.config_yaml) {
		const char *y = srv->opt.config_yaml;
		root = yaml_load_buffer("--config-yaml", y, strlen(y), &src, err, sizeof(err));
		srv->opt.config_path = "--config-yaml";
	} else if (!srv->opt.config_path) {
		fprintf(stderr, "remora: no configuration given (-c FILE or --config-yaml)\n");
		goto out;
	} else {
		root = load_config(srv->opt.config_path, &src, err, sizeof(err));
	}
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
	tls_secrets_start(srv->base);   /* certificate file watching, expiry gauge */
	tracer_start(srv->base);        /* span export (HCM tracing) */
	overload_start(&srv->overload, srv->base, srv->stats);
	srv->snap_free_ev = event_new(srv->base, -1, 0, snap_free_cb, srv);
	snapshot_defer_frees_to(srv->snap_free_ev);
	srv->tick_ev = event_new(srv->base, -1, EV_PERSIST, tick_cb, srv);
	struct timeval sec = { 1, 0 };
	event_add(srv->tick_ev, &sec);
	tick_cb(-1, 0, srv);

	/* Clusters initialize first (DNS may take a moment); workers and their
	 * listeners start once every cluster knows its first membership. */
	srv->state = SERVER_INITIALIZING;
	cluster_publish_hook = publish_hostset;
	srv->clusters_pending = srv->snap->nclusters + 1 + (srv->xds.enabled ? 1 : 0) +
				(ca_client_enabled() ? 1 : 0);
	for (size_t i = 0; i < srv->snap->nclusters; i++)
		cluster_start(srv->snap->clusters[i], srv->base, cluster_initialized, srv);
	if (srv->xds.enabled)   /* its +1 ends with the initial fetch (or its timeout) */
		srv->ads = ads_start(srv);
	ca_client_start(srv);   /* its +1 ends with the first workload certificate */
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
	/* The workers have stopped: snapshots they released wait on the list. */
	snapshot_defer_frees_to(NULL);
	if (srv->snap_free_ev)
		event_free(srv->snap_free_ev);
	srv->snap_free_ev = NULL;
	ads_free(srv->ads);
	ca_client_stop();
	srv->ads = NULL;
	xds_bootstrap_free(&srv->xds);
	xds_sources_free();
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
		if (w->ldrain_ev)
			event_free(w->ldrain_ev);
		snapshot_unref(w->snap);
		if (w->base)
			event_base_free(w->base);
		pthread_mutex_destroy(&w->mq_lock);
		if (w->efd > 0)
			close(w->efd);
	}
	free(srv->workers);
	srv->workers = NULL;
	tracer_stop();
	snapshot_unref(srv->snap);
	srv->snap = NULL;
	overload_stop();
	overload_cfg_free(&srv->overload);
	json_decref(srv->runtime);
	srv->runtime = NULL;
	tls_secrets_stop();
	if (srv->sigterm_ev)
		event_free(srv->sigterm_ev);
	if (srv->sigint_ev)
		event_free(srv->sigint_ev);
	if (srv->tick_ev)
		event_free(srv->tick_ev);
	if (srv->drain_timer)
		event_free(srv->drain_timer);
	if (srv->graceful_timer)
		event_free(srv->graceful_timer);
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
