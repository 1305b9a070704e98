/* original_dst.c - ORIGINAL_DST clusters: hosts made on demand, per worker. */
#include "original_dst.h"

#include <netinet/in.h>
#include "pool.h"
#include "../downstream.h"
#include "../snapshot.h"
#include "../worker.h"
#include "../http/headers.h"
#include "../config/address.h"

static const struct stat_desc odst_stat_desc[] = { ODST_STATS(STATS_DESC) };

#define ODST_DEFAULT_HEADER "x-envoy-original-dst-host"
#define LB_CLUSTER_PROVIDED 6   /* index in cluster.c's lb_names */

int original_dst_parse(struct cfg_ctx *c, const json_t *j, struct cluster *cl, int *lb,
		       struct build_ctx *b)
{
	static const char *const f[] = { "use_http_header", "http_header_name",
					 "upstream_port_override", NULL };
	static const char *const not_here[] = { "load_assignment", "health_checks",
						"outlier_detection", "load_balancing_policy" };
	struct odst *o;
	const json_t *v;
	const char *hname = NULL;
	uint32_t port = 0;

	if (cl->type != CLUSTER_ORIGINAL_DST) {
		if (cfg_get(j, "original_dst_lb_config") || cfg_get(j, "cleanup_interval"))
			return cfg_fail_field(c, j, cfg_get(j, "cleanup_interval") ? "cleanup_interval"
							: "original_dst_lb_config",
					      "only ORIGINAL_DST clusters take this field");
		return RM_OK;
	}
	if (*lb != LB_CLUSTER_PROVIDED)
		return cfg_fail_field(c, j, "lb_policy",
				      "ORIGINAL_DST clusters must use lb_policy CLUSTER_PROVIDED");
	for (size_t i = 0; i < ARRAY_SIZE(not_here); i++)
		if (cfg_get(j, not_here[i]))
			return cfg_fail_field(c, j, not_here[i], "not supported for ORIGINAL_DST clusters%s",
					      i ? " (yet)" : ": hosts come from the connections");
	*lb = 0;
	o = xcalloc(1, sizeof(*o));
	cl->odst = o;
	o->cleanup_ms = 5000;
	if (cfg_duration_ms(c, j, "cleanup_interval", &o->cleanup_ms))
		return RM_ERROR;
	if (!o->cleanup_ms)
		return cfg_fail_field(c, j, "cleanup_interval", "must be greater than 0");
	if ((v = cfg_enter(c, j, "original_dst_lb_config"))) {
		int rc = cfg_expect_object(c, v) || cfg_check_fields(c, v, f) ||
			 cfg_bool(c, v, "use_http_header", &o->use_http_header) ||
			 cfg_string(c, v, "http_header_name", &hname) ||
			 cfg_u32(c, v, "upstream_port_override", &port);
		if (!rc && port > 65535)
			rc = cfg_fail_field(c, v, "upstream_port_override", "must be a port (1-65535)");
		cfg_leave(c);
		if (rc)
			return RM_ERROR;
	}
	o->port_override = (uint16_t)port;
	o->header = xstrdup(hname && *hname ? hname : ODST_DEFAULT_HEADER);
	for (char *p = o->header; *p; p++)
		if (*p >= 'A' && *p <= 'Z')
			*p = (char)(*p - 'A' + 'a');
	o->nworkers = b->nworkers;
	o->workers = xcalloc(b->nworkers ? b->nworkers : 1, sizeof(*o->workers));
	{
		char *scope = xasprintf("cluster.%s", cl->name);
		o->stats = stats_scope_new(b->stats, scope, "cluster", "envoy_cluster_name", cl->name,
					   odst_stat_desc, ODST_STATS_N);
		free(scope);
	}
	return RM_OK;
}

static void worker_table_free(struct odst_worker *ow)
{
	for (size_t i = 0; i < ow->cap; i++)
		host_unref(ow->tab[i].h);
	free(ow->tab);
	ow->tab = NULL;
	ow->cap = ow->n = 0;
	if (ow->timer)
		event_free(ow->timer);
	ow->timer = NULL;
}

void original_dst_free(struct odst *o)
{
	if (!o)
		return;
	for (unsigned i = 0; o->workers && i < o->nworkers; i++)
		worker_table_free(&o->workers[i]);
	free(o->workers);
	free(o->header);
	stats_scope_free(o->stats);
	free(o);
}

/* ---- the per-worker table ------------------------------------------------------ */

/* Addresses as struct sockaddr: a host keeps a compact union, the
 * destination a sockaddr_storage; only the family's own fields are read. */
static uint64_t addr_hash(const struct sockaddr *ss)
{
	uint64_t h = 1469598103934665603ull;
	const unsigned char *p;
	size_t n;
	if (ss->sa_family == AF_INET) {
		p = (const unsigned char *)&((const struct sockaddr_in *)ss)->sin_addr;
		n = 4;
	} else {
		p = (const unsigned char *)&((const struct sockaddr_in6 *)ss)->sin6_addr;
		n = 16;
	}
	h = (h ^ ss->sa_family) * 1099511628211ull;
	h = (h ^ sockaddr_port(ss)) * 1099511628211ull;
	while (n--)
		h = (h ^ *p++) * 1099511628211ull;
	return h ^ (h >> 29);
}

static bool addr_eq(const struct sockaddr *a, const struct sockaddr *b)
{
	if (a->sa_family != b->sa_family || sockaddr_port(a) != sockaddr_port(b))
		return false;
	if (a->sa_family == AF_INET)
		return ((const struct sockaddr_in *)a)->sin_addr.s_addr ==
		       ((const struct sockaddr_in *)b)->sin_addr.s_addr;
	return !memcmp(&((const struct sockaddr_in6 *)a)->sin6_addr,
		       &((const struct sockaddr_in6 *)b)->sin6_addr, 16);
}

static void table_put(struct odst_entry *tab, size_t cap, struct odst_entry e)
{
	size_t k = addr_hash(&e.h->addr.sa) & (cap - 1);
	while (tab[k].h)
		k = (k + 1) & (cap - 1);
	tab[k] = e;
}

static void table_grow(struct odst_worker *ow)
{
	size_t cap = ow->cap ? ow->cap * 2 : 16;
	struct odst_entry *tab = xcalloc(cap, sizeof(*tab));
	for (size_t i = 0; i < ow->cap; i++)
		if (ow->tab[i].h)
			table_put(tab, cap, ow->tab[i]);
	free(ow->tab);
	ow->tab = tab;
	ow->cap = cap;
}

static void arm_cleanup(struct odst_worker *ow)
{
	if (!evtimer_pending(ow->timer, NULL))
		worker_timer_add(ow->w, ow->timer, ow->cl->odst->cleanup_ms);
}

/* Envoy's sweep: hosts picked since the last sweep stay (and are marked
 * unused); the others leave the table, which is rebuilt without them (no
 * tombstones).  Connections still using a removed host keep it alive by
 * their references; its pool closes idle connections now and frees itself
 * when the busy ones are done. */
static void cleanup_cb(evutil_socket_t fd, short what, void *arg)
{
	struct odst_worker *ow = arg;
	struct cluster *cl = ow->cl;
	unsigned sh = ow->w->shard;
	struct odst_entry *tab = xcalloc(ow->cap, sizeof(*tab));
	size_t kept = 0;
	(void)fd;
	(void)what;
	for (size_t i = 0; i < ow->cap; i++) {
		struct odst_entry e = ow->tab[i];
		if (!e.h)
			continue;
		if (e.used) {
			e.used = false;
			table_put(tab, ow->cap, e);
			kept++;
			continue;
		}
		stats_add(cl->stats, sh, membership_total, -1);
		stats_add(cl->stats, sh, membership_healthy, -1);
		stats_inc(cl->stats, sh, membership_change);
		pool_orphan(ow->w, e.h);   /* idle connections close, busy ones finish */
		host_unref(e.h);
	}
	free(ow->tab);
	ow->tab = tab;
	ow->n = kept;
	if (kept)
		arm_cleanup(ow);
}

/* "10.0.0.1:80" / "[fd00::1]:80" -> ss.  RM_OK / RM_ERROR. */
static int parse_host_port(const char *v, size_t len, struct sockaddr_storage *ss)
{
	char buf[80];
	const char *colon, *ip = buf;
	socklen_t sl;
	unsigned long port = 0;
	if (!len || len >= sizeof(buf))
		return RM_ERROR;
	memcpy(buf, v, len);
	buf[len] = 0;
	if (!(colon = strrchr(buf, ':')) || !colon[1])
		return RM_ERROR;
	for (const char *p = colon + 1; *p; p++) {
		if (*p < '0' || *p > '9' || port > 65535)
			return RM_ERROR;
		port = port * 10 + (unsigned long)(*p - '0');
	}
	if (!port || port > 65535)
		return RM_ERROR;
	buf[colon - buf] = 0;
	if (buf[0] == '[') {
		size_t n = strlen(buf);
		if (n < 3 || buf[n - 1] != ']')
			return RM_ERROR;
		buf[n - 1] = 0;
		ip = buf + 1;
	} else if (strchr(buf, ':')) {
		return RM_ERROR;   /* IPv6 needs brackets */
	}
	return sockaddr_parse_ip(ip, (uint16_t)port, ss, &sl);
}

struct host *original_dst_pick(struct cluster *cl, struct worker *w, const struct downstream *d,
			       const struct http_headers *req)
{
	struct odst *o = cl->odst;
	struct odst_worker *ow = &o->workers[w->id];
	struct sockaddr_storage dst;
	const char *hv;
	size_t hlen;

	if (o->use_http_header && req && (hv = hdrs_get(req, o->header, &hlen))) {
		if (parse_host_port(hv, hlen, &dst)) {
			stats_inc(o->stats, w->shard, original_dst_host_invalid);
			return NULL;
		}
	} else if (d && d->local_restored) {
		dst = d->local;
	} else {
		return NULL;   /* not redirected: there is no original destination */
	}
	if (o->port_override)
		sockaddr_set_port(&dst, o->port_override);
	if (ow->cap) {
		size_t k = addr_hash((const struct sockaddr *)&dst) & (ow->cap - 1);
		while (ow->tab[k].h) {
			if (addr_eq(&ow->tab[k].h->addr.sa, (const struct sockaddr *)&dst)) {
				ow->tab[k].used = true;
				return ow->tab[k].h;
			}
			k = (k + 1) & (ow->cap - 1);
		}
	}
	/* a new destination for this worker */
	if (!ow->timer) {
		ow->w = w;
		ow->cl = cl;
		ow->timer = evtimer_new(w->base, cleanup_cb, ow);
	}
	if ((ow->n + 1) * 2 > ow->cap)
		table_grow(ow);
	struct host *h = host_new(cl, &dst, NULL, 1);
	table_put(ow->tab, ow->cap, (struct odst_entry){ h, true });
	ow->n++;
	stats_add(cl->stats, w->shard, membership_total, 1);
	stats_add(cl->stats, w->shard, membership_healthy, 1);
	stats_inc(cl->stats, w->shard, membership_change);
	arm_cleanup(ow);
	return h;
}

void original_dst_worker_exit(struct cluster *cl, struct worker *w)
{
	struct odst_worker *ow = &cl->odst->workers[w->id];
	for (size_t i = 0; i < ow->cap; i++)
		if (ow->tab[i].h)
			pool_orphan(w, ow->tab[i].h);
	worker_table_free(ow);
}

size_t original_dst_worker_hosts(const struct cluster *cl, const struct worker *w)
{
	return cl->odst->workers[w->id].n;
}
