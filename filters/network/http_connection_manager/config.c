/* config.c - parse HttpConnectionManager typed_config into struct hcm_cfg. */
#include "hcm-t.h"
#include "proxy/snapshot.h"
#include "proxy/router/route.h"
#include "proxy/upstream/cluster.h"
#include "proxy/worker.h"
#include "proxy/overload.h"
#include "proxy/server.h"
#include "xds/xds_bootstrap.h"
#include <pthread.h>
#include <arpa/inet.h>

static const struct stat_desc hcm_stat_desc[] = { HCM_STATS(STATS_DESC) };

static const char *const hcm_fields[] = {
	"stat_prefix", "codec_type", "route_config", "rds", "http_filters", "generate_request_id",
	"preserve_external_request_id", "always_set_request_id_in_response", "use_remote_address",
	"xff_num_trusted_hops", "server_name", "server_header_transformation",
	"common_http_protocol_options", "max_request_headers_kb", "request_timeout",
	"request_headers_timeout", "stream_idle_timeout", "upgrade_configs", "http_protocol_options",
	"drain_timeout", "delayed_close_timeout", "http2_protocol_options", "access_log",
	"internal_address_config", "forward_client_cert_details", "set_current_client_cert_details",
	"tracing", "proxy_100_continue", NULL
};
static const char *const codec_names[] = { "AUTO", "HTTP1", "HTTP2", "HTTP3" };
static const char *const server_modes[] = { "OVERWRITE", "APPEND_IF_ABSENT", "PASS_THROUGH" };

/* ---- RDS slots (see struct rds_slot) --------------------------------------------
 * The registry is touched when an HCM config is parsed (main thread) or freed
 * (any thread: the last reference to a snapshot may drop on a worker), never
 * on the request path. */

static pthread_mutex_t slot_lock = PTHREAD_MUTEX_INITIALIZER;
static struct rds_slot *slots;

static char *slot_key(const struct hcm_cfg *cfg, const char *rds_name, size_t *len)
{
	size_t n = strlen(rds_name) + strlen(cfg->stat_prefix) + 2;
	for (size_t i = 0; i < cfg->nfilters; i++)
		n += strlen(cfg->filters[i].name) + strlen(cfg->filters[i].ops->name) + 2;
	char *k = xmalloc(n), *p = k;
	p = stpcpy(p, rds_name) + 1;
	p = stpcpy(p, cfg->stat_prefix) + 1;
	for (size_t i = 0; i < cfg->nfilters; i++) {
		p = stpcpy(p, cfg->filters[i].name) + 1;
		p = stpcpy(p, cfg->filters[i].ops->name) + 1;
	}
	*len = n;
	return k;
}

/* The slot of (rds_name, cfg's prefix and filters): shared, or new.  O(slots). */
static struct rds_slot *slot_get(const struct hcm_cfg *cfg, const char *rds_name,
				 unsigned nworkers)
{
	size_t len;
	char *key = slot_key(cfg, rds_name, &len);
	struct rds_slot *sl;
	pthread_mutex_lock(&slot_lock);
	for (sl = slots; sl; sl = sl->next)
		if (sl->keylen == len && !memcmp(sl->key, key, len))
			break;
	if (sl) {
		sl->refcnt++;
		free(key);
	} else {
		sl = xcalloc(1, sizeof(*sl));
		sl->refcnt = 1;
		sl->key = key;
		sl->keylen = len;
		sl->nworkers = nworkers ? nworkers : 1;
		sl->cur = xcalloc(sl->nworkers, sizeof(*sl->cur));
		sl->next = slots;
		slots = sl;
	}
	pthread_mutex_unlock(&slot_lock);
	return sl;
}

static void slot_put(struct rds_slot *sl)
{
	if (!sl)
		return;
	pthread_mutex_lock(&slot_lock);
	bool last = --sl->refcnt == 0;
	if (last)
		for (struct rds_slot **pp = &slots; *pp; pp = &(*pp)->next)
			if (*pp == sl) {
				*pp = sl->next;
				break;
			}
	pthread_mutex_unlock(&slot_lock);
	if (!last)
		return;
	free(sl->cur);
	free(sl->key);
	free(sl);
}

void hcm_worker_snapshot(const void *v, struct worker *w, bool entering)
{
	const struct hcm_cfg *cfg = v;
	struct rds_slot *sl = cfg->slot;
	if (!sl || w->id >= sl->nworkers)
		return;
	sl->cur[w->id] = entering ? cfg->rc : NULL;
}

void hcm_free_config(void *v)
{
	struct hcm_cfg *cfg = v;
	if (!cfg)
		return;
	slot_put(cfg->slot);
	cfg->slot = NULL;
	route_config_free(cfg->rc);   /* before the filters: it holds their per-route configs */
	cfg->rc = NULL;
	for (size_t i = 0; i < cfg->nfilters; i++) {
		if (cfg->filters[i].ops && cfg->filters[i].ops->free_config)
			cfg->filters[i].ops->free_config(cfg->filters[i].cfg);
		free(cfg->filters[i].name);
	}
	free(cfg->filters);
	for (size_t i = 0; i < cfg->nupgrades; i++)
		free(cfg->upgrades[i]);
	free(cfg->upgrades);
	al_list_free(cfg->access_logs);
	trace_cfg_free(cfg->tracing);
	free(cfg->internal);
	stats_scope_free(cfg->stats);
	h2_stats_unref(cfg->h2stats);
	free(cfg->stat_prefix);
	free(cfg->server_name);
	free(cfg->default_host_http_10);
	free(cfg);
}

static int parse_http_filters(struct cfg_ctx *c, const json_t *arr, struct hcm_cfg *cfg,
			      struct build_ctx *b)
{
	static const char *const f[] = { "name", "typed_config", "is_optional", "disabled", NULL };
	if (cfg_expect_array(c, arr))
		return RM_ERROR;
	size_t n = json_array_size(arr);
	cfg->filters = xcalloc(n ? n : 1, sizeof(*cfg->filters));
	for (size_t i = 0; i < n; i++) {
		const json_t *e = cfg_enter_idx(c, arr, i), *tc;
		const char *name = NULL, *type = NULL;
		const struct http_filter_ops *ops;
		bool disabled = false, optional = false;
		int rc = RM_ERROR;
		if (cfg_expect_object(c, e) || cfg_check_fields(c, e, f) ||
		    cfg_string_req(c, e, "name", &name) || cfg_bool(c, e, "disabled", &disabled) ||
		    cfg_bool(c, e, "is_optional", &optional))
			goto out;
		tc = cfg_get(e, "typed_config");
		if (tc && json_is_object(tc))
			type = json_string_value(json_object_get(tc, "@type"));
		ops = http_filter_find(name, type);
		if (!ops) {
			cfg_enter(c, e, type ? "typed_config" : "name");
			cfg_fail(c, "unknown or unsupported HTTP filter '%s'%s%s", type ? type : name,
				 type ? "" : " (no typed_config @type)", "");
			cfg_leave(c);
			goto out;
		}
		if (ops->terminal != (i == n - 1)) {
			cfg_fail(c, ops->terminal ? "terminal filter '%s' must be the last in the chain"
						  : "the last filter must be terminal (a router), not '%s'",
				 ops->name);
			goto out;
		}
		if (disabled && ops->terminal) {
			cfg_fail_field(c, e, "disabled", "the terminal filter %s cannot be disabled", ops->name);
			goto out;
		}
		tc = cfg_enter(c, e, "typed_config");
		cfg->filters[i].ops = ops;
		cfg->filters[i].cfg = ops->parse_config ? ops->parse_config(c, tc, b) : NULL;
		if (tc)
			cfg_leave(c);
		if (c->failed)
			goto out;
		cfg->filters[i].name = xstrdup(name);
		cfg->filters[i].disabled = disabled;
		cfg->nfilters++;
		rc = RM_OK;
out:
		cfg_leave(c);
		if (rc)
			return rc;
	}
	if (!n)
		return cfg_fail(c, "at least one HTTP filter (envoy.filters.http.router) is required");
	return RM_OK;
}

static int parse_upgrades(struct cfg_ctx *c, const json_t *arr, struct hcm_cfg *cfg)
{
	static const char *const f[] = { "upgrade_type", "enabled", NULL };
	if (cfg_expect_array(c, arr))
		return RM_ERROR;
	cfg->upgrades = xcalloc(json_array_size(arr) + 1, sizeof(char *));
	for (size_t i = 0; i < json_array_size(arr); i++) {
		const json_t *e = cfg_enter_idx(c, arr, i);
		const char *t = NULL;
		bool enabled = true;
		int rc = cfg_expect_object(c, e) || cfg_check_fields(c, e, f) ||
			 cfg_string_req(c, e, "upgrade_type", &t) || cfg_bool(c, e, "enabled", &enabled);
		cfg_leave(c);
		if (rc)
			return RM_ERROR;
		if (!enabled)
			continue;
		char *lt = xstrdup(t);
		for (char *p = lt; *p; p++)
			*p = (char)(*p >= 'A' && *p <= 'Z' ? *p + 32 : *p);
		if (!strcmp(lt, "websocket"))
			cfg->websocket = true;
		cfg->upgrades[cfg->nupgrades++] = lt;
	}
	return RM_OK;
}

/* internal_address_config: unix_sockets, cidr_ranges[{address_prefix, prefix_len}]. */
static int parse_internal(struct cfg_ctx *c, const json_t *v, struct hcm_cfg *cfg)
{
	static const char *const f[] = { "unix_sockets", "cidr_ranges", NULL };
	static const char *const rf[] = { "address_prefix", "prefix_len", NULL };
	const json_t *arr;
	bool unix_sockets = false;
	if (cfg_expect_object(c, v) || cfg_check_fields(c, v, f) ||
	    cfg_bool(c, v, "unix_sockets", &unix_sockets))
		return RM_ERROR;
	cfg->internal_configured = true;
	if (!(arr = cfg_enter(c, v, "cidr_ranges")))
		return RM_OK;
	int rc = cfg_expect_array(c, arr);
	if (!rc)
		cfg->internal = xcalloc(json_array_size(arr) + 1, sizeof(*cfg->internal));
	for (size_t i = 0; !rc && i < json_array_size(arr); i++) {
		const json_t *e = cfg_enter_idx(c, arr, i);
		const char *pfx = NULL;
		uint32_t plen = 0;
		struct hcm_cidr *cr = &cfg->internal[cfg->ninternal];
		rc = cfg_expect_object(c, e) || cfg_check_fields(c, e, rf) ||
		     cfg_string_req(c, e, "address_prefix", &pfx) || cfg_u32(c, e, "prefix_len", &plen);
		if (!rc) {
			if (inet_pton(AF_INET, pfx, cr->addr) == 1)
				cr->family = AF_INET;
			else if (inet_pton(AF_INET6, pfx, cr->addr) == 1)
				cr->family = AF_INET6;
			else
				rc = cfg_fail_field(c, e, "address_prefix", "not an IP address");
		}
		if (!rc && plen > (cr->family == AF_INET ? 32u : 128u))
			rc = cfg_fail_field(c, e, "prefix_len", "too long for the address");
		cr->prefix_len = plen;
		if (!rc)
			cfg->ninternal++;
		cfg_leave(c);
	}
	cfg_leave(c);
	return rc ? RM_ERROR : RM_OK;
}

struct cluster_check {
	struct cfg_ctx *c;
	struct build_ctx *b;
	int rc;
};

static void check_cluster(const char *name, void *arg)
{
	struct cluster_check *cc = arg;
	if (!cc->rc && !snapshot_find_cluster(cc->b->snap, name))
		cc->rc = cfg_fail(cc->c, "route references unknown cluster '%s'", name);
}

/* rds {config_source (ads, or api_config_source served by the bootstrap's
 * xDS transport), route_config_name}: exclusive with route_config; *out is
 * the received RouteConfiguration (proto3 JSON). */
static int hcm_parse_rds(struct cfg_ctx *c, const json_t *j, struct build_ctx *b,
			 const json_t **out, const char **out_name)
{
	static const char *const f[] = { "config_source", "route_config_name", NULL };
	const json_t *r, *s;
	const char *name = NULL;
	uint64_t t;
	int rc = RM_ERROR;

	if (cfg_get(j, "route_config"))
		return cfg_fail_field(c, j, "route_config", "route_config and rds are exclusive");
	r = cfg_enter(c, j, "rds");
	if (cfg_expect_object(c, r) || cfg_check_fields(c, r, f) ||
	    cfg_string_req(c, r, "route_config_name", &name) ||
	    !(s = cfg_enter_req(c, r, "config_source")))
		goto out;
	rc = xds_resource_source_parse(c, s, &t, NULL);
	*out_name = name;
	if (!rc && !(*out = b->rds_lookup ? b->rds_lookup(b->rds_arg, name) : NULL))
		rc = cfg_fail(c, "RDS route configuration '%s' is not available (rds needs "
				 "dynamic_resources; the xDS client compiles a listener "
				 "once its routes arrived)", name);
	cfg_leave(c);
out:
	cfg_leave(c);
	return rc;
}

void *hcm_parse_config(struct cfg_ctx *c, const json_t *j, struct build_ctx *b)
{
	struct hcm_cfg *cfg = xcalloc(1, sizeof(*cfg));
	const char *prefix = NULL, *server = NULL;
	const json_t *v;
	int codec = 0;
	uint32_t kb = 60, maxh = 100;

	cfg->generate_request_id = true;
	cfg->idle_timeout_ms = 3600 * 1000;
	cfg->stream_idle_timeout_ms = 300 * 1000;
	if (cfg_expect_object(c, j) || cfg_check_fields(c, j, hcm_fields) ||
	    cfg_string_req(c, j, "stat_prefix", &prefix) ||
	    cfg_enum(c, j, "codec_type", codec_names, ARRAY_SIZE(codec_names), &codec) ||
	    cfg_bool(c, j, "generate_request_id", &cfg->generate_request_id) ||
	    cfg_bool(c, j, "preserve_external_request_id", &cfg->preserve_external_request_id) ||
	    cfg_bool(c, j, "proxy_100_continue", &cfg->proxy_100_continue) ||
	    cfg_bool(c, j, "always_set_request_id_in_response", &cfg->always_set_request_id_in_response) ||
	    cfg_bool(c, j, "use_remote_address", &cfg->use_remote_address) ||
	    cfg_u32(c, j, "xff_num_trusted_hops", &cfg->xff_num_trusted_hops) ||
	    cfg_string(c, j, "server_name", &server) ||
	    cfg_enum(c, j, "server_header_transformation", server_modes, 3, (int *)&cfg->server_mode) ||
	    cfg_u32(c, j, "max_request_headers_kb", &kb) ||
	    cfg_duration_ms(c, j, "request_timeout", &cfg->request_timeout_ms) ||
	    cfg_duration_ms(c, j, "request_headers_timeout", &cfg->request_headers_timeout_ms) ||
	    cfg_duration_ms(c, j, "stream_idle_timeout", &cfg->stream_idle_timeout_ms) ||
	    hcm_parse_client_cert(c, j, cfg))
		goto error;
	if (codec == 3) {
		cfg_fail_field(c, j, "codec_type", "codec_type %s is not supported yet (AUTO, HTTP1 and HTTP2 are)", codec_names[codec]);
		goto error;
	}
	cfg->codec = codec == 1 ? HCM_CODEC_HTTP1 : codec == 2 ? HCM_CODEC_HTTP2 : HCM_CODEC_AUTO;
	h2_options_defaults(&cfg->h2);
	if ((v = cfg_enter(c, j, "http2_protocol_options"))) {
		int rc = h2_options_parse(c, v, &cfg->h2, true);
		cfg_leave(c);
		if (rc)
			goto error;
	}
	cfg->h2stats = h2_stats_ref(b->stats);
	cfg->max_requests_per_io_cycle =
		runtime_max_requests_per_io_cycle(b->srv ? b->srv->runtime : NULL);
	if (kb < 1 || kb > 8192) {
		cfg_fail_field(c, j, "max_request_headers_kb", "must be in 1..8192");
		goto error;
	}
	if ((v = cfg_enter(c, j, "common_http_protocol_options"))) {
		static const char *const f[] = { "idle_timeout", "max_headers_count",
						 "max_stream_duration", "headers_with_underscores_action", NULL };
		int rc = cfg_expect_object(c, v) || cfg_check_fields(c, v, f) ||
			 cfg_duration_ms(c, v, "idle_timeout", &cfg->idle_timeout_ms) ||
			 cfg_u32(c, v, "max_headers_count", &maxh) ||
			 cfg_duration_ms(c, v, "max_stream_duration", &cfg->max_stream_duration_ms);
		if (!rc && cfg_get(v, "headers_with_underscores_action")) {
			rc = cfg_fail_field(c, v, "headers_with_underscores_action", "not supported yet");
		}
		cfg_leave(c);
		if (rc)
			goto error;
	}
	if ((v = cfg_enter(c, j, "http_protocol_options"))) {
		static const char *const f[] = { "accept_http_10", "default_host_for_http_10", NULL };
		const char *dh = NULL;
		int rc = cfg_expect_object(c, v) || cfg_check_fields(c, v, f) ||
			 cfg_bool(c, v, "accept_http_10", &cfg->accept_http_10) ||
			 cfg_string(c, v, "default_host_for_http_10", &dh);
		cfg_leave(c);
		if (rc)
			goto error;
		if (dh && *dh)
			cfg->default_host_http_10 = xstrdup(dh);
	}
	if (cfg_get(j, "drain_timeout") || cfg_get(j, "delayed_close_timeout")) {
		uint64_t ignored;
		/* accepted and validated; HTTP/1 drains per request */
		if (cfg_duration_ms(c, j, "drain_timeout", &ignored) ||
		    cfg_duration_ms(c, j, "delayed_close_timeout", &ignored))
			goto error;
	}
	cfg->limits.max_head_bytes = kb * 1024;
	cfg->limits.max_headers = maxh;
	cfg->server_name = xstrdup(server ? server : "envoy");
	cfg->stat_prefix = xstrdup(prefix);
	{
		char *scope = xasprintf("http.%s", prefix);
		cfg->stats = stats_scope_new(b->stats, scope, "http", "envoy_http_conn_manager_prefix",
					     prefix, hcm_stat_desc, HCM_STATS_N);
		stats_scope_add_family(cfg->stats, "downstream_rq");
		free(scope);
	}
	if ((v = cfg_enter(c, j, "upgrade_configs"))) {
		int rc = parse_upgrades(c, v, cfg);
		cfg_leave(c);
		if (rc)
			goto error;
	}
	if ((v = cfg_enter(c, j, "internal_address_config"))) {
		int rc = parse_internal(c, v, cfg);
		cfg_leave(c);
		if (rc)
			goto error;
	}
	if (al_list_parse(c, j, b, false, &cfg->access_logs))
		goto error;
	cfg->al_needs = al_list_needs(cfg->access_logs);
	if (trace_cfg_parse(c, j, b, cfg->stat_prefix, &cfg->tracing))
		goto error;
	/* rds: the RouteConfiguration comes from the xDS layer (b->rds_lookup),
	 * which only compiles a listener once its routes arrived (warming) */
	const json_t *rds_rc = NULL;
	const char *rds_name = NULL;
	if (cfg_get(j, "rds") && hcm_parse_rds(c, j, b, &rds_rc, &rds_name))
		goto error;
	if (!(v = cfg_enter_req(c, j, "http_filters")))
		goto error;
	/* http_filters first: the route table resolves its
	 * typed_per_filter_config against the chain */
	{
		b->http_stat_prefix = cfg->stat_prefix;   /* filters name their stats after it */
		int rc = parse_http_filters(c, v, cfg, b);
		b->http_stat_prefix = NULL;
		cfg_leave(c);
		if (rc)
			goto error;
	}
	if (rds_rc)
		v = cfg_enter(c, j, "rds");
	else if (!(v = cfg_enter_req(c, j, "route_config")))
		goto error;
	if (rds_rc)
		v = rds_rc;
	{
		/* validate_clusters is a RouteConfiguration field the table
		 * compiler does not need: handle it here (default true for
		 * static route configs, as Envoy). */
		bool validate = rds_rc == NULL;   /* Envoy: false for RDS */
		json_t *copy = NULL;
		const json_t *rcj = v;
		if (json_is_object(v) && cfg_get(v, "validate_clusters")) {
			if (cfg_bool(c, v, "validate_clusters", &validate)) {
				cfg_leave(c);
				goto error;
			}
			copy = json_copy((json_t *)v);
			json_object_del(copy, "validate_clusters");
			json_object_del(copy, "validateClusters");
			rcj = copy;
		}
		const char **names = xcalloc(cfg->nfilters, sizeof(*names));
		const struct http_filter_ops **ops = xcalloc(cfg->nfilters, sizeof(*ops));
		for (size_t i = 0; i < cfg->nfilters; i++) {
			names[i] = cfg->filters[i].name;
			ops[i] = cfg->filters[i].ops;
		}
		struct route_filters rf = { names, ops, (uint32_t)cfg->nfilters, b };
		b->http_stat_prefix = cfg->stat_prefix;
		cfg->rc = route_config_compile(c, rcj, &rf);
		b->http_stat_prefix = NULL;
		free(names);
		free(ops);
		if (cfg->rc && validate) {
			struct cluster_check cc = { c, b, RM_OK };
			route_config_for_each_cluster(cfg->rc, check_cluster, &cc);
		}
		json_decref(copy);
	}
	cfg_leave(c);
	if (!cfg->rc || c->failed)
		goto error;
	if (rds_rc)
		cfg->slot = slot_get(cfg, rds_name, b->nworkers);
	return cfg;
error:
	hcm_free_config(cfg);
	return NULL;
}
