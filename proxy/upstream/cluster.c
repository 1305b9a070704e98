/* cluster.c - cluster config, host sets, load balancing, DNS refresh. */
#include "cluster.h"

#include <netinet/in.h>
#include <event2/buffer.h>
#include "pool.h"
#include "../snapshot.h"
#include "../worker.h"
#include "../log.h"
#include "../config/address.h"

static const struct stat_desc cluster_stat_desc[] = { CLUSTER_STATS(STATS_DESC) };

void (*cluster_publish_hook)(struct cluster *cl, struct hostset *hs);

/* ---- hosts and host sets ---------------------------------------------- */

struct host *host_ref(struct host *h)
{
	__atomic_add_fetch(&h->refcnt, 1, __ATOMIC_RELAXED);
	return h;
}

void host_unref(struct host *h)
{
	if (!h || __atomic_sub_fetch(&h->refcnt, 1, __ATOMIC_ACQ_REL))
		return;
	free(h->hostname);
	free(h->stats);
	free(h->pools);
	free(h);
}

int64_t host_stat(const struct host *h, int idx)
{
	int64_t v = 0;
	for (unsigned s = 0; s < h->nshards; s++)
		v += __atomic_load_n(&h->stats[s * HOST_STATS_N + idx], __ATOMIC_RELAXED);
	return v;
}

static struct host *host_new(const struct sockaddr_storage *ss, const char *hostname,
			     uint32_t weight, unsigned nworkers)
{
	struct host *h = xcalloc(1, sizeof(*h));
	h->refcnt = 1;
	h->addr = *ss;
	h->addrlen = ss->ss_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
	sockaddr_format((struct sockaddr *)ss, h->addr_str, sizeof(h->addr_str));
	h->hostname = hostname ? xstrdup(hostname) : NULL;
	h->weight = weight ? weight : 1;
	h->nshards = nworkers + 1;
	h->stats = xcalloc(h->nshards * HOST_STATS_N, sizeof(int64_t));
	h->pools = xcalloc(nworkers ? nworkers : 1, sizeof(struct pool *));
	return h;
}

void hostset_unref(struct hostset *hs)
{
	if (!hs || __atomic_sub_fetch(&hs->refcnt, 1, __ATOMIC_ACQ_REL))
		return;
	for (size_t i = 0; i < hs->n; i++)
		host_unref(hs->hosts[i]);
	free(hs->hosts);
	lb_hash_free(hs->lbt);
	free(hs);
}

static struct hostset *hostset_new(struct host **hosts, size_t n)
{
	struct hostset *hs = xcalloc(1, sizeof(*hs));
	hs->refcnt = 1;
	hs->n = n;
	hs->hosts = hosts;
	for (size_t i = 0; i < n; i++) {
		hs->total_weight += hosts[i]->weight;
		if (hosts[i]->weight != hosts[0]->weight)
			hs->weighted = true;
	}
	return hs;
}

/* Main thread: the RING_HASH/MAGLEV table of a new host set, built before it
 * is published so workers only ever read it. */
static void hostset_build_lb(const struct cluster *cl, struct hostset *hs)
{
	if (!cluster_lb_is_hash(cl) || !hs->n)
		return;
	const char **keys = xmalloc(hs->n * sizeof(*keys));
	uint32_t *weights = xmalloc(hs->n * sizeof(*weights));
	for (size_t i = 0; i < hs->n; i++) {
		keys[i] = hs->hosts[i]->addr_str;
		weights[i] = hs->hosts[i]->weight;
	}
	hs->lbt = lb_hash_build(&cl->hash_cfg, keys, weights, hs->n);
	free(keys);
	free(weights);
}

/* Main thread: install a new host set and tell the workers. */
static void cluster_set_hostset(struct cluster *cl, struct hostset *hs)
{
	struct hostset *old = cl->hs;
	bool changed = !old || old->n != hs->n;
	for (size_t i = 0; !changed && i < hs->n; i++)
		changed = old->hosts[i] != hs->hosts[i];
	stats_inc(cl->stats, 0, update_attempt);
	if (!changed) {
		stats_inc(cl->stats, 0, update_no_rebuild);
		hostset_unref(hs);
		return;
	}
	stats_inc(cl->stats, 0, update_success);
	stats_inc(cl->stats, 0, membership_change);
	stats_gauge_set(cl->stats, membership_total, (int64_t)hs->n);
	stats_gauge_set(cl->stats, membership_healthy, (int64_t)hs->n);
	hostset_build_lb(cl, hs);
	cl->hs = hs;
	if (cluster_publish_hook)
		cluster_publish_hook(cl, hs);
	hostset_unref(old);
}

/* Worker w: adopt hs (a ref is passed in); orphan pools of hosts that left. */
void cluster_worker_set_hostset(struct cluster *cl, unsigned w, struct hostset *hs)
{
	struct cluster_worker *cw = &cl->workers[w];
	struct hostset *old = cw->hs;

	cw->hs = hs;
	free(cw->cur_weight);
	cw->cur_weight = hs && hs->weighted ? xcalloc(hs->n, sizeof(int64_t)) : NULL;
	if (old && current_worker) {
		for (size_t i = 0; i < old->n; i++) {
			bool kept = false;
			for (size_t j = 0; hs && j < hs->n && !kept; j++)
				kept = hs->hosts[j] == old->hosts[i];
			if (!kept)
				pool_orphan(current_worker, old->hosts[i]);
		}
	}
	hostset_unref(old);
}

/* ---- load balancing (worker) -------------------------------------------- */

struct host *cluster_pick_host(struct cluster *cl, struct worker *w)
{
	struct cluster_worker *cw = &cl->workers[w->id];
	struct hostset *hs = cw->hs;

	if (!hs || !hs->n)
		return NULL;
	if (hs->n == 1)
		return hs->hosts[0];
	if (hs->lbt)   /* RING_HASH/MAGLEV without a hash: random, as Envoy */
		return hs->hosts[lb_hash_lookup(hs->lbt, rand_u64())];
	switch (cl->lb) {
	case LB_RANDOM:
		if (hs->weighted) {
			uint32_t r = rand_below(hs->total_weight);
			for (size_t i = 0; i < hs->n; i++) {
				if (r < hs->hosts[i]->weight)
					return hs->hosts[i];
				r -= hs->hosts[i]->weight;
			}
		}
		return hs->hosts[rand_below((uint32_t)hs->n)];
	case LB_LEAST_REQUEST: {
		/* Power of N choices on this worker's view of active requests. */
		struct host *best = NULL;
		int64_t best_load = 0;
		for (uint32_t k = 0; k < cl->lr_choice_count; k++) {
			struct host *h = hs->hosts[rand_below((uint32_t)hs->n)];
			int64_t load = h->stats[w->shard * HOST_STATS_N + HOST_RQ_ACTIVE];
			/* weighted: compare load/weight */
			if (!best || load * best->weight < best_load * h->weight) {
				best = h;
				best_load = load;
			}
		}
		return best;
	}
	case LB_ROUND_ROBIN:
	default:
		if (hs->weighted && cw->cur_weight) {
			/* Smooth weighted round robin (nginx's algorithm). */
			size_t best = 0;
			for (size_t i = 0; i < hs->n; i++) {
				cw->cur_weight[i] += hs->hosts[i]->weight;
				if (cw->cur_weight[i] > cw->cur_weight[best])
					best = i;
			}
			cw->cur_weight[best] -= hs->total_weight;
			return hs->hosts[best];
		}
		return hs->hosts[cw->rr++ % hs->n];
	}
}

struct host *cluster_pick_host_hash(struct cluster *cl, struct worker *w, uint64_t hash,
				    bool have_hash)
{
	struct hostset *hs = cl->workers[w->id].hs;

	if (!have_hash || !hs || !hs->lbt)
		return cluster_pick_host(cl, w);
	return hs->hosts[lb_hash_lookup(hs->lbt, hash)];
}

/* ---- config ------------------------------------------------------------- */

static const char *const cluster_fields[] = {
	"name", "type", "connect_timeout", "lb_policy", "load_assignment",
	"per_connection_buffer_limit_bytes", "max_requests_per_connection",
	"dns_refresh_rate", "dns_lookup_family", "respect_dns_ttl", "typed_dns_resolver_config",
	"dns_resolvers", "common_http_protocol_options", "typed_extension_protocol_options",
	"least_request_lb_config", "round_robin_lb_config", "http_protocol_options",
	"ring_hash_lb_config", "maglev_lb_config", NULL
};
static const char *const type_names[] = { "STATIC", "STRICT_DNS", "LOGICAL_DNS", "EDS", "ORIGINAL_DST" };
static const char *const lb_names[] = { "ROUND_ROBIN", "LEAST_REQUEST", "RING_HASH", "RANDOM",
					"", "MAGLEV", "CLUSTER_PROVIDED", "LOAD_BALANCING_POLICY_CONFIG" };
static const char *const family_names[] = { "AUTO", "V4_ONLY", "V6_ONLY", "V4_PREFERRED", "ALL" };

#define HTTP_OPTS_TYPE "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
#define CARES_TYPE "type.googleapis.com/envoy.extensions.network.dns_resolver.cares.v3.CaresDnsResolverConfig"

static int parse_common_http(struct cfg_ctx *c, const json_t *o, struct cluster *cl)
{
	static const char *const f[] = { "idle_timeout", "max_requests_per_connection",
					 "max_connection_duration", "max_headers_count", NULL };
	if (cfg_expect_object(c, o) || cfg_check_fields(c, o, f) ||
	    cfg_duration_ms(c, o, "idle_timeout", &cl->idle_timeout_ms) ||
	    cfg_u32(c, o, "max_requests_per_connection", &cl->max_requests_per_connection))
		return RM_ERROR;
	if (cfg_get(o, "max_connection_duration") || cfg_get(o, "max_headers_count")) {
		const json_t *v = cfg_enter(c, o, cfg_get(o, "max_connection_duration") ?
						   "max_connection_duration" : "max_headers_count");
		(void)v;
		cfg_fail(c, "not supported yet");
		cfg_leave(c);
		return RM_ERROR;
	}
	return RM_OK;
}

static int parse_protocol_options(struct cfg_ctx *c, const json_t *m, struct cluster *cl)
{
	const char *key;
	const json_t *v;
	if (cfg_expect_object(c, m))
		return RM_ERROR;
	json_object_foreach((json_t *)m, key, v) {
		const char *type = NULL;
		const json_t *x;
		int rc = RM_OK;
		static const char *const f[] = { "common_http_protocol_options",
						 "explicit_http_config", "use_downstream_protocol_config", NULL };
		cfg_enter(c, m, key);
		if (strcmp(key, "envoy.extensions.upstreams.http.v3.HttpProtocolOptions")) {
			cfg_leave(c);
			cfg_enter(c, m, key);
			rc = cfg_fail(c, "unsupported protocol options '%s'", key);
			cfg_leave(c);
			return rc;
		}
		if (cfg_expect_object(c, v) || cfg_string(c, v, "@type", &type) ||
		    cfg_check_fields(c, v, f))
			rc = RM_ERROR;
		else if (type && strcmp(type, HTTP_OPTS_TYPE))
			rc = cfg_fail(c, "unexpected @type '%s'", type);
		if (!rc && (x = cfg_enter(c, v, "common_http_protocol_options"))) {
			rc = parse_common_http(c, x, cl);
			cfg_leave(c);
		}
		if (!rc && (x = cfg_enter(c, v, "explicit_http_config"))) {
			static const char *const ef[] = { "http_protocol_options", NULL };
			if (cfg_expect_object(c, x) || cfg_check_fields(c, x, ef))
				rc = RM_ERROR;
			cfg_leave(c);
		}
		if (!rc && (x = cfg_enter(c, v, "use_downstream_protocol_config"))) {
			rc = cfg_fail(c, "not supported yet (HTTP/2 upstreams arrive with the HTTP/2 work)");
			cfg_leave(c);
		}
		cfg_leave(c);
		if (rc)
			return rc;
	}
	return RM_OK;
}

static int parse_resolver_list(struct cfg_ctx *c, const json_t *arr, struct cluster *cl)
{
	if (cfg_expect_array(c, arr))
		return RM_ERROR;
	cl->nresolvers = json_array_size(arr);
	cl->resolvers = xcalloc(cl->nresolvers ? cl->nresolvers : 1, sizeof(*cl->resolvers));
	for (size_t i = 0; i < cl->nresolvers; i++) {
		socklen_t len;
		const json_t *a = cfg_enter_idx(c, arr, i);
		int rc = cfg_address(c, a, &cl->resolvers[i], &len);
		cfg_leave(c);
		if (rc)
			return rc;
	}
	return RM_OK;
}

static int parse_dns_resolver(struct cfg_ctx *c, const json_t *o, struct cluster *cl)
{
	static const char *const f[] = { "name", "typed_config", NULL };
	static const char *const cf[] = { "resolvers", "use_resolvers_as_fallback",
					  "filter_unroutable_families", "dns_resolver_options", NULL };
	const json_t *tc, *r;
	const char *type = NULL;
	int rc = RM_OK;
	if (cfg_expect_object(c, o) || cfg_check_fields(c, o, f))
		return RM_ERROR;
	if (!(tc = cfg_enter_req(c, o, "typed_config")))
		return RM_ERROR;
	if (cfg_expect_object(c, tc) || cfg_string(c, tc, "@type", &type) || cfg_check_fields(c, tc, cf))
		rc = RM_ERROR;
	else if (!type || strcmp(type, CARES_TYPE))
		rc = cfg_fail(c, "only envoy.network.dns_resolver.cares (%s) is supported", CARES_TYPE);
	else if ((r = cfg_enter(c, tc, "resolvers"))) {
		rc = parse_resolver_list(c, r, cl);
		cfg_leave(c);
	}
	cfg_leave(c);
	return rc;
}

/* ring_hash_lb_config and maglev_lb_config (each validated when present,
 * used when lb_policy selects it). */
static int parse_hash_lb_config(struct cfg_ctx *c, const json_t *j, struct cluster *cl)
{
	static const char *const rf[] = { "minimum_ring_size", "maximum_ring_size",
					  "hash_function", NULL };
	static const char *const mf[] = { "table_size", NULL };
	static const char *const hash_fns[] = { "XX_HASH", "MURMUR_HASH_2" };
	struct lb_hash_cfg *h = &cl->hash_cfg;
	const json_t *v;
	int fn = 0, rc = RM_OK;

	h->kind = cl->lb == LB_MAGLEV ? LB_HASH_MAGLEV : LB_HASH_RING;
	h->ring_min = LB_RING_MIN_DEFAULT;
	h->ring_max = LB_RING_MAX_DEFAULT;
	h->maglev_size = LB_MAGLEV_SIZE_DEFAULT;
	if ((v = cfg_enter(c, j, "ring_hash_lb_config"))) {
		if (cfg_expect_object(c, v) || cfg_check_fields(c, v, rf) ||
		    cfg_u64(c, v, "minimum_ring_size", &h->ring_min) ||
		    cfg_u64(c, v, "maximum_ring_size", &h->ring_max) ||
		    cfg_enum(c, v, "hash_function", hash_fns, ARRAY_SIZE(hash_fns), &fn))
			rc = RM_ERROR;
		else if (fn != 0) {
			cfg_enter(c, v, "hash_function");
			rc = cfg_fail(c, "MURMUR_HASH_2 is not supported yet (XX_HASH is)");
			cfg_leave(c);
		} else if (h->ring_min < 1 || h->ring_min > LB_RING_MAX_DEFAULT) {
			cfg_enter(c, v, "minimum_ring_size");
			rc = cfg_fail(c, "must be in 1..%u", LB_RING_MAX_DEFAULT);
			cfg_leave(c);
		} else if (h->ring_max < 1 || h->ring_max > LB_RING_MAX_DEFAULT) {
			cfg_enter(c, v, "maximum_ring_size");
			rc = cfg_fail(c, "must be in 1..%u", LB_RING_MAX_DEFAULT);
			cfg_leave(c);
		} else if (h->ring_min > h->ring_max) {
			rc = cfg_fail(c, "minimum_ring_size (%llu) > maximum_ring_size (%llu)",
				      (unsigned long long)h->ring_min,
				      (unsigned long long)h->ring_max);
		}
		cfg_leave(c);
		if (rc)
			return rc;
	}
	if ((v = cfg_enter(c, j, "maglev_lb_config"))) {
		if (cfg_expect_object(c, v) || cfg_check_fields(c, v, mf) ||
		    cfg_u64(c, v, "table_size", &h->maglev_size))
			rc = RM_ERROR;
		else if (!lb_is_prime(h->maglev_size) || h->maglev_size >= LB_MAGLEV_SIZE_MAX) {
			cfg_enter(c, v, "table_size");
			rc = cfg_fail(c, "the table size of maglev must be a prime number below %u",
				      LB_MAGLEV_SIZE_MAX);
			cfg_leave(c);
		}
		cfg_leave(c);
	}
	return rc;
}

static void add_endpoint(struct cluster *cl, const char *host, uint16_t port, uint32_t weight)
{
	cl->endpoints = xrealloc(cl->endpoints, (cl->nendpoints + 1) * sizeof(*cl->endpoints));
	cl->endpoints[cl->nendpoints].address = xstrdup(host);
	cl->endpoints[cl->nendpoints].port = port;
	cl->endpoints[cl->nendpoints++].weight = weight;
}

/* One lb_endpoints[] entry: {endpoint: {address}, load_balancing_weight}. */
static int parse_lb_endpoint(struct cfg_ctx *c, const json_t *lb, struct cluster *cl)
{
	static const char *const lbf[] = { "endpoint", "load_balancing_weight", "health_status",
					   "metadata", NULL };
	static const char *const epf[] = { "address", "hostname", "health_check_config", NULL };
	const json_t *ep, *addr;
	uint32_t weight = 1;
	const char *host;
	uint16_t port;
	int rc = RM_ERROR;

	if (cfg_expect_object(c, lb) || cfg_check_fields(c, lb, lbf) ||
	    cfg_u32(c, lb, "load_balancing_weight", &weight))
		return RM_ERROR;
	if (weight == 0) {
		cfg_enter(c, lb, "load_balancing_weight");
		cfg_fail(c, "must be at least 1");
		cfg_leave(c);
		return RM_ERROR;
	}
	if (!(ep = cfg_enter_req(c, lb, "endpoint")))
		return RM_ERROR;
	if (cfg_expect_object(c, ep) || cfg_check_fields(c, ep, epf) ||
	    !(addr = cfg_enter_req(c, ep, "address")))
		goto out;
	if (!cfg_socket_address_name(c, addr, &host, &port)) {
		struct sockaddr_storage ss;
		socklen_t len;
		/* STATIC endpoints must be IP literals; DNS types take names. */
		if (cl->type != CLUSTER_STATIC || !cfg_address(c, addr, &ss, &len)) {
			add_endpoint(cl, host, port, weight);
			rc = RM_OK;
		}
	}
	cfg_leave(c);
out:
	cfg_leave(c);
	return rc;
}

/* One endpoints[] (LocalityLbEndpoints) entry. */
static int parse_locality(struct cfg_ctx *c, const json_t *le, struct cluster *cl)
{
	static const char *const lef[] = { "lb_endpoints", "locality", "load_balancing_weight",
					   "priority", NULL };
	const json_t *lbs;
	uint32_t prio = 0;
	int rc = RM_OK;

	if (cfg_expect_object(c, le) || cfg_check_fields(c, le, lef) ||
	    cfg_u32(c, le, "priority", &prio))
		return RM_ERROR;
	if (prio != 0) {
		cfg_enter(c, le, "priority");
		cfg_fail(c, "only priority 0 is supported");
		cfg_leave(c);
		return RM_ERROR;
	}
	if (!(lbs = cfg_enter(c, le, "lb_endpoints")))
		return RM_OK;
	rc = cfg_expect_array(c, lbs);
	for (size_t j = 0; !rc && j < json_array_size(lbs); j++) {
		rc = parse_lb_endpoint(c, cfg_enter_idx(c, lbs, j), cl);
		cfg_leave(c);
	}
	cfg_leave(c);
	return rc;
}

static int parse_load_assignment(struct cfg_ctx *c, const json_t *la, struct cluster *cl)
{
	static const char *const laf[] = { "cluster_name", "endpoints", "policy", NULL };
	const json_t *eps;
	int rc;

	if (cfg_expect_object(c, la) || cfg_check_fields(c, la, laf))
		return RM_ERROR;
	if (!(eps = cfg_enter(c, la, "endpoints")))
		return RM_OK;
	rc = cfg_expect_array(c, eps);
	for (size_t i = 0; !rc && i < json_array_size(eps); i++) {
		rc = parse_locality(c, cfg_enter_idx(c, eps, i), cl);
		cfg_leave(c);
	}
	cfg_leave(c);
	return rc;
}

static void cluster_free(struct cluster *cl)
{
	if (!cl)
		return;
	if (cl->dns_timer)
		event_free(cl->dns_timer);
	if (cl->queries) {
		for (size_t i = 0; i < cl->nendpoints; i++)
			if (cl->queries[i])
				dns_cancel(cl->queries[i]);
	}
	dns_resolver_free(cl->dns);
	for (size_t i = 0; i < cl->nendpoints; i++) {
		free(cl->endpoints[i].address);
		if (cl->dns_addrs)
			free(cl->dns_addrs[i]);
	}
	free(cl->queries);
	free(cl->dns_args);
	free(cl->dns_addrs);
	free(cl->dns_naddrs);
	free(cl->endpoints);
	free(cl->resolvers);
	for (unsigned w = 0; cl->workers && w < cl->nworkers; w++) {
		hostset_unref(cl->workers[w].hs);
		free(cl->workers[w].cur_weight);
	}
	free(cl->workers);
	hostset_unref(cl->hs);
	stats_scope_free(cl->stats);
	json_decref(cl->json);
	free(cl->name);
	free(cl);
}

struct cluster *cluster_ref(struct cluster *cl)
{
	__atomic_add_fetch(&cl->refcnt, 1, __ATOMIC_RELAXED);
	return cl;
}

void cluster_unref(struct cluster *cl)
{
	if (cl && !__atomic_sub_fetch(&cl->refcnt, 1, __ATOMIC_ACQ_REL))
		cluster_free(cl);
}

struct cluster *cluster_parse(struct cfg_ctx *c, const json_t *j, struct build_ctx *b)
{
	struct cluster *cl = xcalloc(1, sizeof(*cl));
	const char *name = NULL;
	const json_t *v;
	int type = 0, lb = 0, fam = 0;
	uint32_t lim = 1024 * 1024;
	uint64_t refresh = 5000;

	cl->refcnt = 1;
	cl->connect_timeout_ms = 5000;
	cl->idle_timeout_ms = 3600 * 1000;
	cl->lr_choice_count = 2;
	if (cfg_expect_object(c, j) || cfg_check_fields(c, j, cluster_fields) ||
	    cfg_string_req(c, j, "name", &name) ||
	    cfg_enum(c, j, "type", type_names, ARRAY_SIZE(type_names), &type) ||
	    cfg_enum(c, j, "lb_policy", lb_names, ARRAY_SIZE(lb_names), &lb) ||
	    cfg_enum(c, j, "dns_lookup_family", family_names, ARRAY_SIZE(family_names), &fam) ||
	    cfg_duration_ms(c, j, "connect_timeout", &cl->connect_timeout_ms) ||
	    cfg_u32(c, j, "per_connection_buffer_limit_bytes", &lim) ||
	    cfg_u32(c, j, "max_requests_per_connection", &cl->max_requests_per_connection) ||
	    cfg_duration_ms(c, j, "dns_refresh_rate", &refresh) ||
	    cfg_bool(c, j, "respect_dns_ttl", &cl->respect_dns_ttl))
		goto error;
	cl->name = xstrdup(name);
	if (!*name) {
		cfg_enter(c, j, "name");
		cfg_fail(c, "must not be empty");
		cfg_leave(c);
		goto error;
	}
	if (type != CLUSTER_STATIC && type != CLUSTER_STRICT_DNS && type != CLUSTER_LOGICAL_DNS) {
		cfg_enter(c, j, "type");
		cfg_fail(c, "cluster type %s is not supported yet (STATIC, STRICT_DNS, LOGICAL_DNS are)",
			 type_names[type]);
		cfg_leave(c);
		goto error;
	}
	cl->type = type;
	if (lb == 0)
		cl->lb = LB_ROUND_ROBIN;
	else if (lb == 1)
		cl->lb = LB_LEAST_REQUEST;
	else if (lb == 3)
		cl->lb = LB_RANDOM;
	else if (lb == 2)
		cl->lb = LB_RING_HASH;
	else if (lb == 5)
		cl->lb = LB_MAGLEV;
	else {
		cfg_enter(c, j, "lb_policy");
		cfg_fail(c, "lb_policy %s is not supported yet (ROUND_ROBIN, LEAST_REQUEST, RANDOM, "
			 "RING_HASH, MAGLEV are)", lb_names[lb]);
		cfg_leave(c);
		goto error;
	}
	cl->dns_family = (enum dns_family)fam;
	cl->buffer_limit = lim;
	cl->dns_refresh_ms = refresh ? refresh : 5000;
	if ((v = cfg_enter(c, j, "least_request_lb_config"))) {
		static const char *const f[] = { "choice_count", NULL };
		int rc = cfg_expect_object(c, v) || cfg_check_fields(c, v, f) ||
			 cfg_u32(c, v, "choice_count", &cl->lr_choice_count);
		cfg_leave(c);
		if (rc)
			goto error;
		if (cl->lr_choice_count < 2)
			cl->lr_choice_count = 2;
	}
	if (parse_hash_lb_config(c, j, cl))
		goto error;
	if ((v = cfg_enter(c, j, "round_robin_lb_config"))) {
		static const char *const f[] = { NULL };
		int rc = cfg_expect_object(c, v) || cfg_check_fields(c, v, f);
		cfg_leave(c);
		if (rc)
			goto error;
	}
	if ((v = cfg_enter(c, j, "http_protocol_options"))) {
		static const char *const f[] = { NULL };
		int rc = cfg_expect_object(c, v) || cfg_check_fields(c, v, f);
		cfg_leave(c);
		if (rc)
			goto error;
	}
	if ((v = cfg_enter(c, j, "common_http_protocol_options"))) {
		int rc = parse_common_http(c, v, cl);
		cfg_leave(c);
		if (rc)
			goto error;
	}
	if ((v = cfg_enter(c, j, "typed_extension_protocol_options"))) {
		int rc = parse_protocol_options(c, v, cl);
		cfg_leave(c);
		if (rc)
			goto error;
	}
	if ((v = cfg_enter(c, j, "typed_dns_resolver_config"))) {
		int rc = parse_dns_resolver(c, v, cl);
		cfg_leave(c);
		if (rc)
			goto error;
	}
	if ((v = cfg_enter(c, j, "dns_resolvers"))) {
		int rc = parse_resolver_list(c, v, cl);
		cfg_leave(c);
		if (rc)
			goto error;
	}
	if ((v = cfg_enter(c, j, "load_assignment"))) {
		int rc = parse_load_assignment(c, v, cl);
		cfg_leave(c);
		if (rc)
			goto error;
	}
	if (cl->type == CLUSTER_LOGICAL_DNS && cl->nendpoints != 1) {
		cfg_enter(c, j, "load_assignment");
		cfg_fail(c, "LOGICAL_DNS clusters must have a single endpoint");
		cfg_leave(c);
		goto error;
	}
	cl->json = json_incref((json_t *)j);
	cl->nworkers = b->nworkers;
	cl->workers = xcalloc(b->nworkers ? b->nworkers : 1, sizeof(*cl->workers));
	{
		char *scope = xasprintf("cluster.%s", cl->name);
		cl->stats = stats_scope_new(b->stats, scope, "cluster", "envoy_cluster_name", cl->name,
					    cluster_stat_desc, CLUSTER_STATS_N);
		stats_scope_add_family(cl->stats, "upstream_rq");
		free(scope);
	}
	return cl;
error:
	cluster_free(cl);
	return NULL;
}

/* ---- membership (main thread) ------------------------------------------- */

static struct host *find_old_host(const struct cluster *cl, const struct sockaddr_storage *ss)
{
	if (!cl->hs)
		return NULL;
	for (size_t i = 0; i < cl->hs->n; i++) {
		struct host *h = cl->hs->hosts[i];
		if (h->addr.ss_family == ss->ss_family &&
		    !memcmp(&h->addr, ss, h->addrlen))
			return h;
	}
	return NULL;
}

static void publish_from_endpoints(struct cluster *cl)
{
	size_t cap = 0, n = 0;
	struct host **hosts = NULL;
	for (size_t i = 0; i < cl->nendpoints; i++) {
		struct endpoint_cfg *e = &cl->endpoints[i];
		size_t na = cl->type == CLUSTER_STATIC ? 1 : cl->dns_naddrs[i];
		if (cl->type == CLUSTER_LOGICAL_DNS && na > 1)
			na = 1;   /* LOGICAL_DNS: first address only, as Envoy */
		for (size_t k = 0; k < na; k++) {
			struct sockaddr_storage ss;
			socklen_t len;
			if (cl->type == CLUSTER_STATIC) {
				if (sockaddr_parse_ip(e->address, e->port, &ss, &len))
					continue;
			} else {
				ss = cl->dns_addrs[i][k];
			}
			bool dup = false;
			for (size_t m = 0; m < n && !dup; m++)
				dup = !memcmp(&hosts[m]->addr, &ss, hosts[m]->addrlen);
			if (dup)
				continue;
			struct host *h = find_old_host(cl, &ss);
			if (h && h->weight == e->weight)
				host_ref(h);
			else
				h = host_new(&ss, cl->type == CLUSTER_STATIC ? NULL : e->address,
					     e->weight, cl->nworkers);
			if (n == cap) {
				cap = cap ? cap * 2 : 4;
				hosts = xrealloc(hosts, cap * sizeof(*hosts));
			}
			hosts[n++] = h;
		}
	}
	cluster_set_hostset(cl, hostset_new(hosts, n));
}

static void dns_round(struct cluster *cl);

static void dns_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	dns_round(arg);
}

static void dns_round_done(struct cluster *cl)
{
	uint64_t next = cl->dns_refresh_ms;
	publish_from_endpoints(cl);
	if (cl->respect_dns_ttl && cl->dns_min_ttl_s)
		next = (uint64_t)cl->dns_min_ttl_s * 1000;
	struct timeval tv = { (time_t)(next / 1000), (suseconds_t)(next % 1000) * 1000 };
	evtimer_add(cl->dns_timer, &tv);
	if (!cl->initialized) {
		cl->initialized = true;
		if (cl->on_init)
			cl->on_init(cl, cl->on_init_arg);
	}
}


static void dns_answer(const struct dns_result *res, void *arg)
{
	struct dns_cb_arg *a = arg;
	struct cluster *cl = a->cl;
	size_t i = a->idx;
	cl->queries[i] = NULL;
	if (res->status == 0) {
		free(cl->dns_addrs[i]);
		cl->dns_addrs[i] = xmalloc((res->naddrs ? res->naddrs : 1) * sizeof(struct sockaddr_storage));
		memcpy(cl->dns_addrs[i], res->addrs, res->naddrs * sizeof(struct sockaddr_storage));
		cl->dns_naddrs[i] = res->naddrs;
		if (res->min_ttl_s && (!cl->dns_min_ttl_s || res->min_ttl_s < cl->dns_min_ttl_s))
			cl->dns_min_ttl_s = res->min_ttl_s;
	} else {
		stats_inc(cl->stats, 0, update_failure);
		log_warn("cluster '%s': DNS resolution of '%s' failed: %s", cl->name,
			 cl->endpoints[i].address, res->error ? res->error : "error");
	}
	if (--cl->dns_pending)
		return;
	dns_round_done(cl);
}

static void dns_round(struct cluster *cl)
{
	cl->dns_pending = cl->nendpoints;
	cl->dns_min_ttl_s = 0;
	for (size_t i = 0; i < cl->nendpoints; i++) {
		struct dns_cb_arg *a = &cl->dns_args[i];
		a->cl = cl;
		a->idx = i;
		cl->queries[i] = dns_resolve(cl->dns, cl->endpoints[i].address, cl->endpoints[i].port,
					     cl->dns_family, dns_answer, a);
	}
}

void cluster_start(struct cluster *cl, struct event_base *base,
		   void (*on_init)(struct cluster *cl, void *arg), void *arg)
{
	if (cl->type == CLUSTER_STATIC || cl->nendpoints == 0) {
		publish_from_endpoints(cl);
		cl->initialized = true;
		on_init(cl, arg);
		return;
	}
	char err[256];
	cl->on_init = on_init;
	cl->on_init_arg = arg;
	cl->dns = dns_resolver_new(base, cl->resolvers, cl->nresolvers, err, sizeof(err));
	if (!cl->dns) {
		log_error("cluster '%s': cannot create DNS resolver: %s", cl->name, err);
		cl->initialized = true;
		publish_from_endpoints(cl);
		on_init(cl, arg);
		return;
	}
	cl->queries = xcalloc(cl->nendpoints, sizeof(*cl->queries));
	cl->dns_args = xcalloc(cl->nendpoints, sizeof(*cl->dns_args));
	cl->dns_addrs = xcalloc(cl->nendpoints, sizeof(*cl->dns_addrs));
	cl->dns_naddrs = xcalloc(cl->nendpoints, sizeof(*cl->dns_naddrs));
	cl->dns_timer = evtimer_new(base, dns_timer_cb, cl);
	dns_round(cl);
}

/* ---- admin -------------------------------------------------------------- */

void cluster_dump_admin(const struct cluster *cl, struct evbuffer *out)
{
	static const char *const names[HOST_STATS_N] = { "cx_total", "cx_active", "cx_connect_fail",
		"rq_total", "rq_active", "rq_error", "rq_success", "rq_timeout" };
	static const int order[] = { HOST_CX_ACTIVE, HOST_CX_CONNECT_FAIL, HOST_CX_TOTAL,
		HOST_RQ_ACTIVE, HOST_RQ_ERROR, HOST_RQ_SUCCESS, HOST_RQ_TIMEOUT, HOST_RQ_TOTAL };
	const char *n = cl->name;
	evbuffer_add_printf(out, "%s::observability_name::%s\n", n, n);
	evbuffer_add_printf(out, "%s::default_priority::max_connections::1024\n", n);
	evbuffer_add_printf(out, "%s::default_priority::max_pending_requests::1024\n", n);
	evbuffer_add_printf(out, "%s::default_priority::max_requests::1024\n", n);
	evbuffer_add_printf(out, "%s::default_priority::max_retries::3\n", n);
	evbuffer_add_printf(out, "%s::added_via_api::false\n", n);
	for (size_t i = 0; cl->hs && i < cl->hs->n; i++) {
		const struct host *h = cl->hs->hosts[i];
		for (size_t k = 0; k < ARRAY_SIZE(order); k++)
			evbuffer_add_printf(out, "%s::%s::%s::%lld\n", n, h->addr_str, names[order[k]],
					    (long long)host_stat(h, order[k]));
		evbuffer_add_printf(out, "%s::%s::hostname::%s\n", n, h->addr_str,
				    h->hostname ? h->hostname : "");
		evbuffer_add_printf(out, "%s::%s::health_flags::healthy\n", n, h->addr_str);
		evbuffer_add_printf(out, "%s::%s::weight::%u\n", n, h->addr_str, h->weight);
		evbuffer_add_printf(out, "%s::%s::region::\n%s::%s::zone::\n%s::%s::sub_zone::\n",
				    n, h->addr_str, n, h->addr_str, n, h->addr_str);
		evbuffer_add_printf(out, "%s::%s::canary::false\n%s::%s::priority::0\n", n,
				    h->addr_str, n, h->addr_str);
		evbuffer_add_printf(out, "%s::%s::success_rate::-1\n%s::%s::local_origin_success_rate::-1\n",
				    n, h->addr_str, n, h->addr_str);
	}
}
