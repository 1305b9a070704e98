/* rbac.c - envoy.filters.http.rbac (envoy.extensions.filters.http.rbac.v3.RBAC).
 *
 * Each request is judged once, on its headers, by the policy engine
 * (filters/common/rbac): shadow_rules only count (shadow_allowed /
 * shadow_denied), rules enforce: a denied request gets the local reply 403
 * "RBAC: access denied" (a gRPC request the trailers-only reply mapped from
 * it, as other local replies).  Without rules nothing is enforced.
 *
 * Per route (typed_per_filter_config RBACPerRoute): {rbac: RBAC} replaces
 * the filter's rules and shadow_rules for that route's requests (the stats
 * stay the filter's); an RBACPerRoute without rbac turns the filter off for
 * the route, as Envoy.
 *
 * Stats: http.<hcm stat_prefix>.rbac.<rules_stat_prefix>{allowed,denied}
 * and .rbac.<shadow_rules_stat_prefix>{shadow_allowed,shadow_denied}. */
#include "proxy/filter.h"
#include "proxy/snapshot.h"
#include "proxy/worker.h"
#include "proxy/http/stream.h"
#include "filters/common/rbac/rbac.h"
#include "filters/common/rbac/rbac_conn.h"

#define HRBAC_TYPE "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC"
#define HRBAC_ROUTE_TYPE "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBACPerRoute"

struct hrbac_cfg {
	struct rbac_engine *rules;       /* owned, NULL: nothing enforced */
	struct rbac_engine *shadow;      /* owned, NULL: no shadow decision */
	bool disabled;                   /* per-route: RBACPerRoute without rbac */
	struct rbac_stat_names names;    /* owned (filter level only) */
	struct stats_scope *stats;       /* owned (filter level only): http.<prefix>.rbac */
};

static const char *const hrbac_fields[] = {
	"rules", "matcher", "shadow_rules", "shadow_matcher", "shadow_rules_stat_prefix",
	"rules_stat_prefix", "track_per_rule_stats", NULL
};
static const char *const hrbac_not_yet[] = { "matcher", "shadow_matcher", NULL };

static void hrbac_free_config(void *v)
{
	struct hrbac_cfg *cfg = v;
	if (!cfg)
		return;
	rbac_engine_free(cfg->rules);
	rbac_engine_free(cfg->shadow);
	stats_scope_free(cfg->stats);   /* holds its own copy of the names */
	rbac_stat_names_free(&cfg->names);
	free(cfg);
}

/* The RBAC message fields shared by the filter and RBACPerRoute.rbac. */
static struct hrbac_cfg *parse_rbac(struct cfg_ctx *c, const json_t *j, const char **rp,
				    const char **sp)
{
	struct hrbac_cfg *cfg = xcalloc(1, sizeof(*cfg));
	bool track = false;
	if (cfg_expect_object(c, j) || cfg_check_fields(c, j, hrbac_fields) ||
	    cfg_reject_fields(c, j, hrbac_not_yet,
			      "not supported (use rules / shadow_rules)") ||
	    cfg_bool(c, j, "track_per_rule_stats", &track) ||
	    cfg_string(c, j, "rules_stat_prefix", rp) ||
	    cfg_string(c, j, "shadow_rules_stat_prefix", sp))
		goto error;
	if (track) {
		cfg_fail_field(c, j, "track_per_rule_stats", "not supported");
		goto error;
	}
	if (rbac_engine_parse(c, j, "rules", true, &cfg->rules) ||
	    rbac_engine_parse(c, j, "shadow_rules", true, &cfg->shadow))
		goto error;
	return cfg;
error:
	hrbac_free_config(cfg);
	return NULL;
}

static void *hrbac_parse_config(struct cfg_ctx *c, const json_t *j, struct build_ctx *b)
{
	const char *rp = NULL, *sp = NULL;
	struct hrbac_cfg *cfg = parse_rbac(c, j, &rp, &sp);
	if (!cfg)
		return NULL;
	const char *hcm = b->http_stat_prefix ? b->http_stat_prefix : "";
	char *scope = xasprintf("http.%s.rbac", hcm);
	rbac_stat_names_init(&cfg->names, rp, sp);
	/* the names are built per config: copied into the (shared-by-name) scope */
	struct stats_scope_spec spec = { .name = scope, .tag_prefix = "http.rbac",
					 .tag_name = "envoy_http_conn_manager_prefix", .tag_value = hcm,
					 .desc = cfg->names.desc, .ndesc = RBAC_STATS_N,
					 .flags = STATS_SCOPE_COPY_DESC };
	cfg->stats = stats_scope_get(b->stats, &spec);
	free(scope);
	return cfg;
}

/* RBACPerRoute {rbac}: rbac absent (or null) disables the filter there. */
static void *hrbac_parse_per_route(struct cfg_ctx *c, const json_t *j, struct build_ctx *b)
{
	static const char *const f[] = { "rbac", NULL };
	const char *rp = NULL, *sp = NULL;
	const json_t *r;
	struct hrbac_cfg *cfg;
	(void)b;
	if (cfg_expect_object(c, j) || cfg_check_fields(c, j, f))
		return NULL;
	if (!(r = cfg_enter(c, j, "rbac"))) {
		cfg = xcalloc(1, sizeof(*cfg));
		cfg->disabled = true;
		return cfg;
	}
	int depth = c->depth;
	cfg = parse_rbac(c, r, &rp, &sp);   /* the stat prefixes are the filter's */
	if (!cfg) {
		c->depth = depth;
		return NULL;
	}
	cfg_leave(c);
	return cfg;
}

/* No per-stream state: the context is the filter's config. */
static void *hrbac_create(struct http_stream *s, const void *cfg)
{
	(void)s;
	return (void *)cfg;
}

static enum filter_status hrbac_decode_headers(void *ctx, struct http_stream *s,
					       struct http_headers *h, bool end_stream)
{
	const struct hrbac_cfg *cfg = ctx;
	const struct hrbac_cfg *eff = http_stream_per_route_config(s, cfg);
	struct rbac_input in;
	unsigned shard = http_stream_worker(s)->shard;
	(void)end_stream;

	if (!eff)
		eff = cfg;
	if (eff->disabled || (!eff->rules && !eff->shadow))
		return FILTER_CONTINUE;
	rbac_input_from_downstream(http_stream_downstream(s), &in);
	in.headers = h;
	if (eff->shadow)
		stats_inc(cfg->stats, shard, rbac_engine_allowed(eff->shadow, &in, NULL)
						      ? RBAC_SHADOW_ALLOWED : RBAC_SHADOW_DENIED);
	if (!eff->rules)
		return FILTER_CONTINUE;
	if (rbac_engine_allowed(eff->rules, &in, NULL)) {
		stats_inc(cfg->stats, shard, RBAC_ALLOWED);
		return FILTER_CONTINUE;
	}
	stats_inc(cfg->stats, shard, RBAC_DENIED);
	http_stream_send_local_reply(s, 403, "RBAC: access denied", "rbac_access_denied");
	return FILTER_STOP;
}

const struct http_filter_ops http_rbac_filter_ops = {
	.name = "envoy.filters.http.rbac",
	.type_url = HRBAC_TYPE,
	.parse_config = hrbac_parse_config,
	.free_config = hrbac_free_config,
	.parse_per_route = hrbac_parse_per_route,
	.free_per_route = hrbac_free_config,
	.per_route_type_url = HRBAC_ROUTE_TYPE,
	.create = hrbac_create,
	.decode_headers = hrbac_decode_headers,
};
