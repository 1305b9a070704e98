/* config.c - compile an Envoy v3 bootstrap into a snapshot.
 *
 * Supported: node, admin.address, static_resources.listeners and .clusters,
 * overload_manager and layered_runtime static layers (proxy/overload.c).
 * Anything else is an error naming the field (DESIGN.md: never silently
 * ignored).  Clusters are compiled first so that filters can resolve the
 * clusters they reference. */
#include "snapshot.h"
#include <pthread.h>
#include <event2/event.h>

#include <unistd.h>
#include <netinet/in.h>
#include "server.h"
#include "filter.h"
#include "filter_chain_match.h"
#include "log.h"
#include "config/address.h"
#include "upstream/cluster.h"
#include "../xds/xres.h"
#include "tls/tls.h"

static const struct stat_desc listener_stat_desc[] = { LISTENER_STATS(STATS_DESC) };

/* ---- snapshot lifetime --------------------------------------------------------- */

struct snapshot *snapshot_ref(struct snapshot *s)
{
	__atomic_add_fetch(&s->refcnt, 1, __ATOMIC_RELAXED);
	return s;
}

static void filter_chain_free(struct filter_chain *fc);

static void listener_free(struct listener_cfg *l)
{
	if (!l || __atomic_sub_fetch(&l->refcnt, 1, __ATOMIC_ACQ_REL) > 0)
		return;
	json_decref(l->json);
	for (size_t i = 0; i < l->nchains; i++) {
		filter_chain_free(&l->chains[i]);
		if (l->chain_match)
			fcm_free(&l->chain_match[i]);
	}
	free(l->chains);
	free(l->chain_match);
	if (l->default_chain)
		filter_chain_free(l->default_chain);
	free(l->default_chain);
	for (size_t i = 0; i < l->nlfilters; i++) {
		l->lfilters[i].ops->free_config(l->lfilters[i].cfg);
		lf_pred_free(l->lfilters[i].disabled);
		free(l->lfilters[i].disabled);
	}
	free(l->lfilters);
	if (l->fds) {
		for (unsigned i = 0; i < l->nfds; i++)
			if (l->fds[i] >= 0)
				close(l->fds[i]);
		free(l->fds);
	}
	stats_scope_free(l->stats);
	free(l->name);
	free(l);
}

static pthread_mutex_t defer_lock = PTHREAD_MUTEX_INITIALIZER;
static struct snapshot *deferred;            /* under defer_lock, through ->defer_next */
static struct event *defer_ev;               /* under defer_lock; NULL: free inline */
static pthread_t defer_main;

static void snapshot_free(struct snapshot *s);

void snapshot_defer_frees_to(struct event *ev)
{
	pthread_mutex_lock(&defer_lock);
	defer_ev = ev;
	defer_main = pthread_self();
	pthread_mutex_unlock(&defer_lock);
	if (!ev)
		snapshot_free_deferred();
}

void snapshot_free_deferred(void)
{
	struct snapshot *s;

	pthread_mutex_lock(&defer_lock);
	s = deferred;
	deferred = NULL;
	pthread_mutex_unlock(&defer_lock);
	while (s) {
		struct snapshot *n = s->defer_next;

		snapshot_free(s);
		s = n;
	}
}

void snapshot_unref(struct snapshot *s)
{
	if (!s || __atomic_sub_fetch(&s->refcnt, 1, __ATOMIC_ACQ_REL))
		return;
	pthread_mutex_lock(&defer_lock);
	if (defer_ev && !pthread_equal(pthread_self(), defer_main)) {
		s->defer_next = deferred;
		deferred = s;
		event_active(defer_ev, EV_READ, 0);   /* thread-safe; coalesces */
		pthread_mutex_unlock(&defer_lock);
		return;
	}
	pthread_mutex_unlock(&defer_lock);
	snapshot_free(s);
}

static void snapshot_free(struct snapshot *s)
{
	for (size_t i = 0; i < s->nlisteners; i++)
		listener_free(s->listeners[i]);
	free(s->listeners);
	for (size_t i = 0; i < s->nclusters; i++)
		cluster_unref(s->clusters[i]);
	free(s->clusters);
	free(s->cl_hash);
	free(s->l_hash);
	json_decref(s->bootstrap);
	free(s);
}

static uint64_t hash_str(const char *s)
{
	uint64_t h = 1469598103934665603ull;
	while (*s)
		h = (h ^ (unsigned char)*s++) * 1099511628211ull;
	return h;
}

void snapshot_index_clusters(struct snapshot *s)
{
	size_t size = 8;
	while (size < s->nclusters * 2)
		size *= 2;
	free(s->cl_hash);
	s->cl_hash = xcalloc(size, sizeof(*s->cl_hash));
	s->cl_hash_size = size;
	for (size_t i = 0; i < s->nclusters; i++) {
		size_t k = hash_str(s->clusters[i]->name) & (size - 1);
		while (s->cl_hash[k])
			k = (k + 1) & (size - 1);
		s->cl_hash[k] = s->clusters[i];
	}
}

struct cluster *snapshot_find_cluster(const struct snapshot *s, const char *name)
{
	if (!s->cl_hash_size)
		return NULL;
	size_t k = hash_str(name) & (s->cl_hash_size - 1);
	while (s->cl_hash[k]) {
		if (!strcmp(s->cl_hash[k]->name, name))
			return s->cl_hash[k];
		k = (k + 1) & (s->cl_hash_size - 1);
	}
	return NULL;
}

/* Hash of a listener address: family, port and IP (no allocation). */
static uint64_t hash_addr(const struct sockaddr *sa)
{
	uint64_t h = 1469598103934665603ull;
	const unsigned char *p;
	size_t n;
	if (sa->sa_family == AF_INET) {
		p = (const unsigned char *)&((const struct sockaddr_in *)sa)->sin_addr;
		n = 4;
	} else {
		p = (const unsigned char *)&((const struct sockaddr_in6 *)sa)->sin6_addr;
		n = 16;
	}
	h = (h ^ sa->sa_family) * 1099511628211ull;
	h = (h ^ sockaddr_port(sa)) * 1099511628211ull;
	while (n--)
		h = (h ^ *p++) * 1099511628211ull;
	return h;
}

static bool addr_equal(const struct sockaddr *a, const struct sockaddr *b)
{
	if (a->sa_family != b->sa_family || sockaddr_port(a) != sockaddr_port(b))
		return false;
	if (a->sa_family == AF_INET)
		return ((const struct sockaddr_in *)a)->sin_addr.s_addr ==
		       ((const struct sockaddr_in *)b)->sin_addr.s_addr;
	return a->sa_family == AF_INET6 &&
	       !memcmp(&((const struct sockaddr_in6 *)a)->sin6_addr,
		       &((const struct sockaddr_in6 *)b)->sin6_addr, 16);
}

void snapshot_index_listeners(struct snapshot *s)
{
	size_t size = 8;
	while (size < s->nlisteners * 2)
		size *= 2;
	free(s->l_hash);
	s->l_hash = xcalloc(size, sizeof(*s->l_hash));
	s->l_hash_size = size;
	for (size_t i = 0; i < s->nlisteners; i++) {
		const struct sockaddr *sa = (const struct sockaddr *)&s->listeners[i]->addr;
		if (sa->sa_family != AF_INET && sa->sa_family != AF_INET6)
			continue;
		size_t k = hash_addr(sa) & (size - 1);
		while (s->l_hash[k])
			k = (k + 1) & (size - 1);
		s->l_hash[k] = s->listeners[i];
	}
}

static struct listener_cfg *find_listener_exact(const struct snapshot *s, const struct sockaddr *sa)
{
	size_t k = hash_addr(sa) & (s->l_hash_size - 1);
	while (s->l_hash[k]) {
		if (addr_equal((const struct sockaddr *)&s->l_hash[k]->addr, sa))
			return s->l_hash[k];
		k = (k + 1) & (s->l_hash_size - 1);
	}
	return NULL;
}

struct listener_cfg *snapshot_find_listener_by_addr(const struct snapshot *s,
						    const struct sockaddr *sa)
{
	struct sockaddr_storage any;
	struct listener_cfg *l;
	if (!s->l_hash_size || (sa->sa_family != AF_INET && sa->sa_family != AF_INET6))
		return NULL;
	if ((l = find_listener_exact(s, sa)))
		return l;
	/* the wildcard listener of the same port and family */
	memset(&any, 0, sizeof(any));
	any.ss_family = sa->sa_family;
	sockaddr_set_port(&any, sockaddr_port(sa));
	return find_listener_exact(s, (const struct sockaddr *)&any);
}

/* ---- listeners ---------------------------------------------------------------- */

/* listener_filters[]: {name, typed_config}, found by @type (or name). */
static int parse_listener_filters(struct cfg_ctx *c, const json_t *arr, struct listener_cfg *l,
				  struct build_ctx *b)
{
	static const char *const ff[] = { "name", "typed_config", "filter_disabled", NULL };
	if (cfg_expect_array(c, arr))
		return RM_ERROR;
	size_t n = json_array_size(arr);
	l->lfilters = xcalloc(n ? n : 1, sizeof(*l->lfilters));
	for (size_t i = 0; i < n; i++) {
		const json_t *e = cfg_enter_idx(c, arr, i), *tc;
		const char *name = NULL, *type = NULL;
		int rc = cfg_expect_object(c, e) || cfg_check_fields(c, e, ff) ||
			 cfg_string_req(c, e, "name", &name);
		const struct listener_filter_ops *ops = NULL;
		void *cfg = NULL;
		if (!rc) {
			tc = cfg_get(e, "typed_config");
			if (tc && json_is_object(tc))
				type = json_string_value(json_object_get(tc, "@type"));
			if (!(ops = listener_filter_find(name, type)))
				rc = cfg_fail_field(c, e, type ? "typed_config" : "name",
						    "unknown or unsupported listener filter '%s' "
						    "(original_dst, tls_inspector and http_inspector are supported)",
						    type ? type : name);
		}
		if (!rc) {
			tc = cfg_enter(c, e, "typed_config");
			cfg = ops->parse_config(c, tc, b);
			if (tc)
				cfg_leave(c);
			if (!cfg)
				rc = RM_ERROR;
		}
		struct lf_pred *dis = NULL;
		const json_t *dj;
		if (!rc && (dj = cfg_enter(c, e, "filter_disabled"))) {
			dis = xcalloc(1, sizeof(*dis));
			rc = lf_pred_parse(c, dj, dis);
			cfg_leave(c);
		}
		cfg_leave(c);
		if (rc) {
			if (cfg)
				ops->free_config(cfg);
			lf_pred_free(dis);
			free(dis);
			return RM_ERROR;
		}
		l->lfilters[l->nlfilters].ops = ops;
		l->lfilters[l->nlfilters].disabled = dis;
		l->lfilters[l->nlfilters++].cfg = cfg;
	}
	return RM_OK;
}

/* One entry of filter_chains[].filters: find the filter, parse its config. */
static int parse_network_filter(struct cfg_ctx *c, const json_t *e, struct net_filter *out,
				struct build_ctx *b)
{
	static const char *const ff[] = { "name", "typed_config", NULL };
	const char *name = NULL, *type = NULL;
	const json_t *tc;

	if (cfg_expect_object(c, e) || cfg_check_fields(c, e, ff) ||
	    cfg_string_req(c, e, "name", &name))
		return RM_ERROR;
	tc = cfg_get(e, "typed_config");
	if (tc && json_is_object(tc))
		type = json_string_value(json_object_get(tc, "@type"));
	out->ops = network_filter_find(name, type);
	if (!out->ops) {
		cfg_enter(c, e, type ? "typed_config" : "name");
		cfg_fail(c, "unknown or unsupported network filter '%s'", type ? type : name);
		cfg_leave(c);
		return RM_ERROR;
	}
	if (!(tc = cfg_enter_req(c, e, "typed_config")))
		return RM_ERROR;
	out->cfg = out->ops->parse_config(c, tc, b);
	cfg_leave(c);
	if (!out->cfg) {
		out->ops = NULL;
		return RM_ERROR;
	}
	return RM_OK;
}

static void filter_chain_free(struct filter_chain *fc)
{
	for (size_t i = 0; i < fc->npre; i++)
		fc->pre[i].ops->free_config(fc->pre[i].cfg);
	free(fc->pre);
	fc->pre = NULL;
	fc->npre = 0;
	if (fc->ops)
		fc->ops->free_config(fc->cfg);
	fc->ops = NULL;
	fc->cfg = NULL;
	tls_ctx_free(fc->tls);
	fc->tls = NULL;
}

/* filters[]: non-terminal filters first, exactly one terminal filter last. */
/* match: where filter_chain_match goes; NULL for default_filter_chain (which
 * has none). */
static int parse_filter_chain(struct cfg_ctx *c, const json_t *fc, struct filter_chain *out,
			      struct fc_match *match, struct build_ctx *b)
{
	static const char *const f[] = { "filter_chain_match", "filters", "name", "transport_socket",
					 NULL };
	const json_t *v, *arr;

	if (cfg_expect_object(c, fc) || cfg_check_fields(c, fc, f))
		return RM_ERROR;
	if ((v = cfg_enter(c, fc, "filter_chain_match"))) {
		int rc = match ? fcm_parse(c, v, match)
			       : cfg_fail(c, "default_filter_chain has no filter_chain_match");
		cfg_leave(c);
		if (rc)
			return RM_ERROR;
		out->dst_port = match->dst_port;
	}
	if (!(arr = cfg_enter_req(c, fc, "filters")))
		return RM_ERROR;
	int rc = cfg_expect_array(c, arr);
	size_t n = rc ? 0 : json_array_size(arr);
	if (!rc && !n)
		rc = cfg_fail(c, "at least one network filter is required");
	if (!rc && n > 1)
		out->pre = xcalloc(n - 1, sizeof(*out->pre));
	for (size_t i = 0; !rc && i < n; i++) {
		struct net_filter nf = { NULL, NULL };
		bool last = i == n - 1;
		rc = parse_network_filter(c, cfg_enter_idx(c, arr, i), &nf, b);
		if (!rc && last != (nf.ops->on_accept != NULL))
			rc = cfg_fail(c, last ? "the last network filter must be terminal "
						"(tcp_proxy or http_connection_manager), not '%s'"
					      : "terminal network filter '%s' must be the last in the chain",
				      nf.ops->name);
		cfg_leave(c);
		if (rc) {
			if (nf.ops)
				nf.ops->free_config(nf.cfg);
		} else if (last) {
			out->ops = nf.ops;
			out->cfg = nf.cfg;
		} else {
			out->pre[out->npre++] = nf;
		}
	}
	cfg_leave(c);
	if (rc)
		filter_chain_free(out);
	return rc;
}

/* A chain's transport_socket (TLS; tls/tls.h); c is positioned on the chain. */
static int chain_tls_one(struct cfg_ctx *c, const json_t *fc, struct filter_chain *chain,
			 const char *stat_prefix, struct build_ctx *b)
{
	const json_t *ts;
	int rc = RM_OK;
	if ((ts = cfg_enter(c, fc, "transport_socket"))) {
		char *scope = xasprintf("listener.%s", stat_prefix);
		rc = tls_transport_socket_parse(c, ts, true, b, scope, "listener",
						"envoy_listener_address", stat_prefix, &chain->tls);
		free(scope);
		cfg_leave(c);
	}
	return rc;
}

/* filter_chains[i].transport_socket of every chain. */
static int parse_chain_tls(struct cfg_ctx *c, const json_t *chains, struct listener_cfg *l,
			   const char *stat_prefix, struct build_ctx *b)
{
	int rc = RM_OK;
	for (size_t i = 0; !rc && i < l->nchains; i++) {
		const json_t *fc = cfg_enter_idx(c, chains, i);
		rc = chain_tls_one(c, fc, &l->chains[i], stat_prefix, b);
		cfg_leave(c);
	}
	return rc;
}

static struct listener_cfg *parse_listener(struct cfg_ctx *c, const json_t *j, struct build_ctx *b)
{
	static const char *const f[] = { "name", "address", "filter_chains",
					 "per_connection_buffer_limit_bytes", "enable_reuse_port",
					 "traffic_direction", "stat_prefix", "listener_filters",
					 "listener_filters_timeout", "continue_on_listener_filters_timeout",
					 "use_original_dst", "bind_to_port", "default_filter_chain", NULL };
	struct listener_cfg *l = xcalloc(1, sizeof(*l));
	const char *name = NULL, *prefix = NULL;

	l->refcnt = 1;
	const json_t *v;
	uint32_t lim = 1024 * 1024;

	l->backlog = 1024;
	l->bind_to_port = true;
	l->lf_timeout_ms = 15000;
	if (cfg_expect_object(c, j) || cfg_check_fields(c, j, f) || cfg_string(c, j, "name", &name) ||
	    cfg_string(c, j, "stat_prefix", &prefix) ||
	    cfg_bool(c, j, "use_original_dst", &l->use_original_dst) ||
	    cfg_bool(c, j, "bind_to_port", &l->bind_to_port) ||
	    cfg_duration_ms(c, j, "listener_filters_timeout", &l->lf_timeout_ms) ||
	    cfg_bool(c, j, "continue_on_listener_filters_timeout", &l->lf_continue_on_timeout) ||
	    cfg_u32(c, j, "per_connection_buffer_limit_bytes", &lim))
		goto error;
	if (cfg_get(j, "traffic_direction")) {
		static const char *const dirs[] = { "UNSPECIFIED", "INBOUND", "OUTBOUND" };
		if (cfg_enum(c, j, "traffic_direction", dirs, 3, &l->direction))
			goto error;
	}
	if (cfg_get(j, "enable_reuse_port")) {
		bool reuse = true;
		if (cfg_bool(c, j, "enable_reuse_port", &reuse))
			goto error;
	}
	if ((v = cfg_enter(c, j, "listener_filters"))) {
		int rc = parse_listener_filters(c, v, l, b);
		cfg_leave(c);
		if (rc)
			goto error;
	}
	l->buffer_limit = lim ? lim : 1024 * 1024;
	if (!(v = cfg_enter_req(c, j, "address")))
		goto error;
	if (cfg_address(c, v, &l->addr, &l->addrlen)) {
		cfg_leave(c);
		goto error;
	}
	cfg_leave(c);
	sockaddr_format((struct sockaddr *)&l->addr, l->addr_str, sizeof(l->addr_str));
	for (char *p = l->addr_str; *p; p++)
		if (*p == ':')
			*p = '_';
	l->name = xstrdup(name ? name : l->addr_str);
	if (b->srv)
		l->cx_limit = runtime_listener_limit(b->srv->runtime, l->name);
	if (!cfg_get(j, "filter_chains") && cfg_get(j, "default_filter_chain"))
		v = NULL;   /* only the default chain */
	else if (!(v = cfg_enter_req(c, j, "filter_chains")))
		goto error;
	if (v && cfg_expect_array(c, v)) {
		cfg_leave(c);
		goto error;
	}
	l->nchains = v ? json_array_size(v) : 0;
	l->chains = xcalloc(l->nchains ? l->nchains : 1, sizeof(*l->chains));
	l->chain_match = xcalloc(l->nchains ? l->nchains : 1, sizeof(*l->chain_match));
	if (l->nchains > FCM_MAX_CHAINS) {
		cfg_fail(c, "at most %d filter chains per listener are supported", FCM_MAX_CHAINS);
		cfg_leave(c);
		goto error;
	}
	for (size_t i = 0; i < l->nchains; i++) {
		const json_t *fc = cfg_enter_idx(c, v, i);
		int rc = parse_filter_chain(c, fc, &l->chains[i], &l->chain_match[i], b);
		for (size_t k = 0; !rc && k < i; k++)
			if (fcm_overlap(&l->chain_match[k], &l->chain_match[i]))
				rc = cfg_fail(c, "multiple filter chains with the same matching rules "
						 "are defined (filter_chains[%zu] and [%zu])", k, i);
		cfg_leave(c);
		if (rc) {
			cfg_leave(c);
			goto error;
		}
	}
	if (v && !l->nchains && !cfg_get(j, "default_filter_chain")) {
		cfg_fail(c, "at least one filter chain is required");
		cfg_leave(c);
		goto error;
	}
	{
		const char *sp = prefix ? prefix : l->addr_str;
		if (v && parse_chain_tls(c, v, l, sp, b)) {
			cfg_leave(c);
			goto error;
		}
		if (v)
			cfg_leave(c);
		if ((v = cfg_enter(c, j, "default_filter_chain"))) {
			l->default_chain = xcalloc(1, sizeof(*l->default_chain));
			int rc = parse_filter_chain(c, v, l->default_chain, NULL, b);
			if (!rc)
				rc = chain_tls_one(c, v, l->default_chain, sp, b);
			cfg_leave(c);
			if (rc)
				goto error;
		}
	}
	{
		const char *sp = prefix ? prefix : l->addr_str;
		char *scope = xasprintf("listener.%s", sp);
		l->stats = stats_scope_new(b->stats, scope, "listener", "envoy_listener_address", sp,
					   listener_stat_desc, LISTENER_STATS_N);
		free(scope);
	}
	return l;
error:
	listener_free(l);
	return NULL;
}

/* ---- dynamic configuration (xDS) ------------------------------------------------- */

struct listener_cfg *listener_parse(struct cfg_ctx *c, const json_t *j, struct build_ctx *b)
{
	struct listener_cfg *l = parse_listener(c, j, b);
	if (l)
		l->json = json_incref((json_t *)j);
	return l;
}

struct listener_cfg *listener_ref(struct listener_cfg *l)
{
	__atomic_add_fetch(&l->refcnt, 1, __ATOMIC_RELAXED);
	return l;
}

void listener_unref(struct listener_cfg *l)
{
	listener_free(l);
}

struct snapshot *snapshot_compose(struct cluster *const *clusters, size_t nclusters,
				  struct listener_cfg *const *listeners, size_t nlisteners,
				  const json_t *bootstrap)
{
	struct snapshot *s = xcalloc(1, sizeof(*s));
	s->refcnt = 1;
	s->clusters = xcalloc(nclusters + 1, sizeof(*s->clusters));
	for (size_t i = 0; i < nclusters; i++)
		s->clusters[s->nclusters++] = cluster_ref(clusters[i]);
	s->listeners = xcalloc(nlisteners + 1, sizeof(*s->listeners));
	for (size_t i = 0; i < nlisteners; i++)
		s->listeners[s->nlisteners++] = listener_ref(listeners[i]);
	snapshot_index_clusters(s);
	snapshot_index_listeners(s);
	s->bootstrap = bootstrap ? json_incref((json_t *)bootstrap) : NULL;
	return s;
}

/* ---- bootstrap ------------------------------------------------------------------- */

static int parse_node(struct cfg_ctx *c, const json_t *n, struct server *srv)
{
	static const char *const f[] = { "id", "cluster", "metadata", "locality",
					 "user_agent_name", NULL };
	const char *id = NULL, *cl = NULL;
	if (cfg_expect_object(c, n) || cfg_check_fields(c, n, f) || cfg_string(c, n, "id", &id) ||
	    cfg_string(c, n, "cluster", &cl))
		return RM_ERROR;
	if (id && !srv->node_id)
		srv->node_id = xstrdup(id);
	if (cl && !srv->node_cluster)
		srv->node_cluster = xstrdup(cl);
	return RM_OK;
}

static int parse_admin(struct cfg_ctx *c, const json_t *a, struct server *srv)
{
	static const char *const f[] = { "address", "access_log", "access_log_path", "profile_path", NULL };
	const json_t *v;
	if (cfg_expect_object(c, a) || cfg_check_fields(c, a, f))
		return RM_ERROR;
	if (cfg_get(a, "access_log")) {
		cfg_fail_field(c, a, "access_log", "admin access logs are not supported yet");
		return RM_ERROR;
	}
	if ((v = cfg_enter(c, a, "address"))) {
		int rc = cfg_address(c, v, &srv->admin_addr, &srv->admin_addrlen);
		cfg_leave(c);
		if (rc)
			return RM_ERROR;
		srv->has_admin = true;
	}
	return RM_OK;
}

/* dynamic_resources (its server clusters are checked with the other sources
 * once the whole bootstrap is compiled); xDS needs node.id and node.cluster
 * (Envoy's rule). */
static int parse_dynamic_resources(struct cfg_ctx *c, const json_t *v, struct snapshot *s,
				   struct server *srv)
{
	(void)s;
	xds_bootstrap_free(&srv->xds);
	if (xds_bootstrap_parse(c, v, &srv->xds))
		return RM_ERROR;
	if (!srv->node_id || !*srv->node_id || !srv->node_cluster || !*srv->node_cluster)
		return cfg_fail(c, "node 'id' and 'cluster' are required. Set it either in 'node' "
			       "config or via --service-node and --service-cluster options.");
	return RM_OK;
}

/* stats_config: histogram_bucket_settings, use_all_default_tags. */
static int parse_stats_config(struct cfg_ctx *c, const json_t *v, struct server *srv)
{
	static const char *const f[] = { "stats_tags", "use_all_default_tags", "stats_matcher",
					 "histogram_bucket_settings", NULL };
	static const char *const rej[] = { "stats_tags", "stats_matcher", NULL };
	static const char *const hf[] = { "match", "buckets", NULL };
	static const char *const mf[] = { "exact", "prefix", "suffix", "contains", "safe_regex",
					  "ignore_case", NULL };
	static const char *const kinds[] = { "exact", "prefix", "suffix", "contains" };
	bool all_tags = true;
	const json_t *arr;
	if (cfg_expect_object(c, v) || cfg_check_fields(c, v, f) ||
	    cfg_reject_fields(c, v, rej, "not supported (Envoy's default tag extraction is always on)") ||
	    cfg_bool(c, v, "use_all_default_tags", &all_tags))
		return RM_ERROR;
	if (!all_tags)
		return cfg_fail_field(c, v, "use_all_default_tags",
				      "false is not supported (Envoy's default tags are always extracted)");
	if (!(arr = cfg_enter(c, v, "histogram_bucket_settings")))
		return RM_OK;
	int rc = cfg_expect_array(c, arr);
	for (size_t i = 0; !rc && i < json_array_size(arr); i++) {
		const json_t *e = cfg_enter_idx(c, arr, i), *m, *b;
		const char *str = NULL;
		int kind = -1;
		double bounds[STATS_HIST_MAX_BOUNDS];
		size_t n = 0;
		rc = cfg_expect_object(c, e) || cfg_check_fields(c, e, hf) ||
		     !(m = cfg_enter_req(c, e, "match"));
		if (!rc) {
			bool ic = false;
			rc = cfg_expect_object(c, m) || cfg_check_fields(c, m, mf) ||
			     cfg_bool(c, m, "ignore_case", &ic);
			if (!rc && (ic || cfg_get(m, "safe_regex")))
				rc = cfg_fail(c, "only exact, prefix, suffix and contains matches are supported");
			for (int k = 0; !rc && k < 4; k++) {
				const char *sv = NULL;
				if ((rc = cfg_string(c, m, kinds[k], &sv)))
					break;
				if (sv && kind >= 0)
					rc = cfg_fail(c, "one of exact, prefix, suffix, contains");
				else if (sv) {
					kind = k;
					str = sv;
				}
			}
			if (!rc && kind < 0)
				rc = cfg_fail(c, "one of exact, prefix, suffix, contains is required");
			cfg_leave(c);
		}
		if (!rc && !(b = cfg_enter_req(c, e, "buckets")))
			rc = RM_ERROR;
		else if (!rc) {
			rc = cfg_expect_array(c, b);
			n = json_array_size(b);
			if (!rc && (n == 0 || n > STATS_HIST_MAX_BOUNDS))
				rc = cfg_fail(c, "1..%d buckets", STATS_HIST_MAX_BOUNDS);
			for (size_t k = 0; !rc && k < n; k++) {
				const json_t *x = cfg_enter_idx(c, b, k);
				if (!json_is_number(x) || json_number_value(x) <= 0 ||
				    (k && json_number_value(x) <= bounds[k - 1]))
					rc = cfg_fail(c, "buckets must be positive and ascending");
				else
					bounds[k] = json_number_value(x);
				cfg_leave(c);
			}
			cfg_leave(c);
		}
		if (!rc)
			stats_store_add_bucket_rule(srv->stats, (enum stats_match)kind, str, bounds,
						    (unsigned)n);
		cfg_leave(c);
	}
	cfg_leave(c);
	return rc ? RM_ERROR : RM_OK;
}

struct snapshot *config_build_bootstrap(struct cfg_ctx *c, const json_t *root, struct server *srv)
{
	static const char *const f[] = { "node", "admin", "static_resources", "dynamic_resources",
					 "stats_config", "overload_manager", "layered_runtime", NULL };
	static const char *const sf[] = { "listeners", "clusters", "secrets", NULL };
	struct snapshot *s = xcalloc(1, sizeof(*s));
	struct build_ctx b = { .srv = srv, .snap = s, .stats = srv->stats, .nworkers = srv->nworkers };
	const json_t *v, *sr;

	s->refcnt = 1;
	s->version = 1;
	if (cfg_expect_object(c, root) || cfg_check_fields(c, root, f))
		goto error;
	if ((v = cfg_enter(c, root, "node"))) {
		int rc = parse_node(c, v, srv);
		cfg_leave(c);
		if (rc)
			goto error;
	}
	if ((v = cfg_enter(c, root, "stats_config"))) {   /* before any scope with histograms */
		int rc = parse_stats_config(c, v, srv);
		cfg_leave(c);
		if (rc)
			goto error;
	}
	if ((v = cfg_enter(c, root, "admin"))) {
		int rc = parse_admin(c, v, srv);
		cfg_leave(c);
		if (rc)
			goto error;
	}
	if ((v = cfg_enter(c, root, "layered_runtime"))) {   /* before the listeners */
		json_decref(srv->runtime);
		int rc = runtime_parse(c, v, &srv->runtime);
		cfg_leave(c);
		if (rc)
			goto error;
	}
	if ((v = cfg_enter(c, root, "overload_manager"))) {
		overload_cfg_free(&srv->overload);
		int rc = overload_parse(c, v, &srv->overload);
		cfg_leave(c);
		if (rc)
			goto error;
	}
	if (!srv->overload.max_global_cx)   /* the monitor wins over the older runtime key */
		srv->overload.max_global_cx = runtime_global_cx_limit(srv->runtime);
	if ((sr = cfg_enter(c, root, "static_resources"))) {
		if (cfg_expect_object(c, sr) || cfg_check_fields(c, sr, sf))
			goto error_sr;
		if ((v = cfg_enter(c, sr, "secrets"))) {   /* before their users */
			if (tls_secrets_parse(c, v))
				goto error_v;
			cfg_leave(c);
		}
		if ((v = cfg_enter(c, sr, "clusters"))) {
			if (cfg_expect_array(c, v))
				goto error_v;
			s->clusters = xcalloc(json_array_size(v) + 1, sizeof(*s->clusters));
			for (size_t i = 0; i < json_array_size(v); i++) {
				const json_t *cj = cfg_enter_idx(c, v, i);
				struct cluster *cl = cluster_parse(c, cj, &b);
				if (cl)   /* for /config_dump */
					cl->src = xblob_from_json(cj);
				if (cl && snapshot_find_cluster(s, cl->name)) {
					cfg_fail_field(c, cj, "name", "duplicate cluster name '%s'", cl->name);
					cluster_unref(cl);
					cl = NULL;
				}
				cfg_leave(c);
				if (!cl)
					goto error_v;
				s->clusters[s->nclusters++] = cl;
				snapshot_index_clusters(s);
			}
			cfg_leave(c);
		}
		if ((v = cfg_enter(c, sr, "listeners"))) {
			if (cfg_expect_array(c, v))
				goto error_v;
			s->listeners = xcalloc(json_array_size(v) + 1, sizeof(*s->listeners));
			for (size_t i = 0; i < json_array_size(v); i++) {
				const json_t *lj = cfg_enter_idx(c, v, i);
				struct listener_cfg *l = parse_listener(c, lj, &b);
				for (size_t k = 0; l && k < s->nlisteners; k++) {
					if (!strcmp(s->listeners[k]->name, l->name)) {
						cfg_fail(c, "duplicate listener name '%s'", l->name);
					} else if (s->listeners[k]->addrlen == l->addrlen &&
						   !memcmp(&s->listeners[k]->addr, &l->addr, l->addrlen)) {
						cfg_fail_field(c, lj, "address", "listener '%s' uses the same address as listener '%s'",
							 l->name, s->listeners[k]->name);
					} else {
						continue;
					}
					listener_free(l);
					l = NULL;
				}
				cfg_leave(c);
				if (!l)
					goto error_v;
				s->listeners[s->nlisteners++] = l;
			}
			snapshot_index_listeners(s);
			cfg_leave(c);
		}
		cfg_leave(c);
	}
	if ((v = cfg_enter(c, root, "dynamic_resources"))) {
		int rc = parse_dynamic_resources(c, v, s, srv);
		cfg_leave(c);
		if (rc)
			goto error;
	}
	{
		/* sds_config without dynamic_resources is an error (tls/); with it,
		 * every source is checked here (xds/xds_bootstrap.c) */
		char err[512];
		if (!srv->xds.enabled && tls_sds_check_sources(NULL, err, sizeof(err))) {
			cfg_fail(c, "%s", err);
			goto error;
		}
		tls_sds_check_sources(NULL, NULL, 0);   /* forget what was collected */
		if (xds_bootstrap_check_sources(&srv->xds, s, c))
			goto error;
	}
	s->bootstrap = json_incref((json_t *)root);
	return s;
error_v:
	cfg_leave(c);
error_sr:
	cfg_leave(c);
error:
	tls_sds_check_sources(NULL, NULL, 0);   /* forget what was collected */
	xds_bootstrap_check_sources(&srv->xds, NULL, c);
	snapshot_unref(s);
	return NULL;
}
