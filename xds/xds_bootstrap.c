/* xds_bootstrap.c - dynamic_resources: ADS over gRPC (SotW or delta) or REST
 * polling; CDS/LDS over ADS or REST; per-resource config sources. */
#include "xds_bootstrap.h"

#include "../proxy/common.h"
#include "../proxy/config/cfg.h"
#include "../proxy/server.h"

static const char *const versions[] = { "AUTO", "V2", "V3" };
static const char *const api_types[] = { "DEPRECATED_AND_UNAVAILABLE_DO_NOT_USE", "REST", "GRPC",
					 "DELTA_GRPC", "AGGREGATED_GRPC", "AGGREGATED_DELTA_GRPC" };
enum { AT_REST = 1, AT_GRPC, AT_DELTA, AT_AGG, AT_AGG_DELTA };

static int parse_grpc_service(struct cfg_ctx *c, const json_t *a, struct xds_api_source *o)
{
	static const char *const gf[] = { "envoy_grpc", "google_grpc", "timeout", "initial_metadata",
					  "retry_policy", NULL };
	static const char *const ef[] = { "cluster_name", "authority", NULL };
	const json_t *gs, *g, *e;
	int rc = RM_ERROR;

	if (!(gs = cfg_enter_req(c, a, "grpc_services")))
		return RM_ERROR;
	if (cfg_expect_array(c, gs))
		goto out;
	if (json_array_size(gs) != 1) {
		cfg_fail(c, "exactly one gRPC service is supported");
		goto out;
	}
	g = cfg_enter_idx(c, gs, 0);
	if (cfg_expect_object(c, g) || cfg_check_fields(c, g, gf) ||
	    cfg_reject_fields(c, g, gf + 1, "not supported yet (envoy_grpc only)") ||
	    !(e = cfg_enter_req(c, g, "envoy_grpc")))
		goto out_g;
	if (!cfg_expect_object(c, e) && !cfg_check_fields(c, e, ef) &&
	    !cfg_string_req(c, e, "cluster_name", &o->cluster) &&
	    !cfg_string(c, e, "authority", &o->authority))
		rc = RM_OK;
	cfg_leave(c);
out_g:
	cfg_leave(c);
out:
	cfg_leave(c);
	return rc;
}

int xds_api_source_parse(struct cfg_ctx *c, const json_t *a, struct xds_api_source *o)
{
	static const char *const f[] = { "api_type", "transport_api_version", "grpc_services",
					 "cluster_names", "refresh_delay", "request_timeout",
					 "set_node_on_first_message_only", "rate_limit_settings",
					 "config_validators", NULL };
	const json_t *cn;
	int type = 0, ver = 2;

	memset(o, 0, sizeof(*o));
	o->refresh_ms = 1000;
	o->timeout_ms = 1000;
	if (cfg_expect_object(c, a) || cfg_check_fields(c, a, f) ||
	    cfg_reject_fields(c, a, f + 7, "not supported yet") ||
	    cfg_enum(c, a, "api_type", api_types, ARRAY_SIZE(api_types), &type) ||
	    cfg_enum(c, a, "transport_api_version", versions, 3, &ver) ||
	    cfg_bool(c, a, "set_node_on_first_message_only", &o->node_first_only) ||
	    cfg_duration_ms(c, a, "refresh_delay", &o->refresh_ms) ||
	    cfg_duration_ms(c, a, "request_timeout", &o->timeout_ms))
		return RM_ERROR;
	if (type == 0)
		return cfg_fail_field(c, a, "api_type", "must be REST, GRPC, DELTA_GRPC, "
				      "AGGREGATED_GRPC or AGGREGATED_DELTA_GRPC");
	if (ver != 2)
		return cfg_fail_field(c, a, "transport_api_version", "must be V3");
	o->rest = type == AT_REST;
	o->delta = type == AT_DELTA || type == AT_AGG_DELTA;
	if (!o->rest) {
		if (cfg_get(a, "cluster_names"))
			return cfg_fail_field(c, a, "cluster_names", "only for api_type REST (gRPC "
					      "uses grpc_services)");
		return parse_grpc_service(c, a, o);
	}
	if (cfg_get(a, "grpc_services"))
		return cfg_fail_field(c, a, "grpc_services", "not for api_type REST (uses cluster_names)");
	if (!o->refresh_ms)
		return cfg_fail_field(c, a, "refresh_delay", "must be positive");
	if (!o->timeout_ms)
		return cfg_fail_field(c, a, "request_timeout", "must be positive");
	if (!(cn = cfg_enter_req(c, a, "cluster_names")))
		return RM_ERROR;
	int rc = cfg_expect_array(c, cn);
	if (!rc && json_array_size(cn) != 1)
		rc = cfg_fail(c, "exactly one cluster is supported");
	if (!rc && !(o->cluster = json_string_value(json_array_get(cn, 0))))
		rc = cfg_fail(c, "expected a list of cluster names");
	cfg_leave(c);
	return rc;
}

/* The source fields common to every ConfigSource; *acs: api_config_source or
 * NULL (ads). */
static int parse_config_source(struct cfg_ctx *c, const json_t *s, uint64_t *timeout_ms,
			       struct xds_api_source *api, bool *has_api)
{
	static const char *const f[] = { "ads", "initial_fetch_timeout", "resource_api_version",
					 "api_config_source", "path", "path_config_source", "self",
					 "authorities", NULL };
	static const char *const unsupported[] = { "path", "path_config_source", "self",
						   "authorities", NULL };
	static const char *const empty[] = { NULL };
	const json_t *a;
	int ver = 2, rc;
	if (cfg_expect_object(c, s) || cfg_check_fields(c, s, f) ||
	    cfg_duration_ms(c, s, "initial_fetch_timeout", timeout_ms) ||
	    cfg_enum(c, s, "resource_api_version", versions, 3, &ver))
		return RM_ERROR;
	if (ver == 1)
		return cfg_fail_field(c, s, "resource_api_version", "only V3 is supported");
	if (cfg_reject_fields(c, s, unsupported, "not supported yet: only ads or api_config_source "
			      "(files, self and xdstp authorities are not)"))
		return RM_ERROR;
	if (!!cfg_get(s, "ads") == !!cfg_get(s, "api_config_source"))
		return cfg_fail(c, "exactly one of ads, api_config_source is required");
	*has_api = false;
	if ((a = cfg_enter(c, s, "api_config_source"))) {
		rc = xds_api_source_parse(c, a, api);
		cfg_leave(c);
		*has_api = true;
		return rc;
	}
	a = cfg_enter(c, s, "ads");
	rc = cfg_expect_object(c, a) || cfg_check_fields(c, a, empty);
	cfg_leave(c);
	return rc ? RM_ERROR : RM_OK;
}

int xds_resource_source_parse_shape(struct cfg_ctx *c, const json_t *s, uint64_t *timeout_ms)
{
	struct xds_api_source api;
	bool has_api;
	*timeout_ms = 15000;
	return parse_config_source(c, s, timeout_ms, &api, &has_api) ? RM_ERROR : RM_OK;
}

int xds_resource_source_parse(struct cfg_ctx *c, const json_t *s, uint64_t *timeout_ms,
			      const char **api_cluster)
{
	struct xds_api_source api;
	bool has_api;
	const struct xds_bootstrap *x = &g_server.xds;
	*timeout_ms = 15000;
	if (parse_config_source(c, s, timeout_ms, &api, &has_api))
		return RM_ERROR;
	if (api_cluster)
		*api_cluster = has_api ? api.cluster : NULL;
	if (!x->enabled)   /* the bootstrap's own resources: dynamic_resources comes later */
		return RM_OK;
	if (!has_api) {
		if (x->rest)
			return cfg_fail_field(c, s, "ads", "ads: {} needs dynamic_resources.ads_config "
					      "(this bootstrap polls REST: use api_config_source REST)");
		return RM_OK;
	}
	if (api.rest != x->rest)
		return cfg_fail_field(c, s, "api_config_source", "api_type %s: %s", api.rest ? "REST" : "GRPC",
				      x->rest ? "this bootstrap polls REST (mixing REST and gRPC "
				      "sources is not supported yet)" : "this bootstrap uses ADS (REST "
				      "sources beside ADS are not supported yet)");
	if (strcmp(api.cluster, x->cluster))
		return cfg_fail_field(c, s, "api_config_source", "cluster '%s': resources are fetched "
				      "from the bootstrap's xDS cluster '%s' (other clusters are not "
				      "supported yet)", api.cluster, x->cluster);
	return RM_OK;
}

static int parse_ads(struct cfg_ctx *c, const json_t *a, struct xds_bootstrap *x)
{
	struct xds_api_source api;
	const char *t = json_string_value(cfg_get(a, "api_type"));
	if ((t && !strcmp(t, "REST")) || json_integer_value(cfg_get(a, "api_type")) == AT_REST ||
	    (!xds_api_source_parse(c, a, &api) && api.rest))
		return cfg_fail_field(c, a, "api_type", "ads_config must be a gRPC api_type (GRPC / "
				      "AGGREGATED_GRPC or DELTA_GRPC / AGGREGATED_DELTA_GRPC); for REST "
				      "polling put api_config_source in cds_config / lds_config");
	if (c->failed)
		return RM_ERROR;
	if (cfg_get(a, "refresh_delay") || cfg_get(a, "request_timeout"))
		return cfg_fail_field(c, a, cfg_get(a, "refresh_delay") ? "refresh_delay"
					    : "request_timeout", "only for api_type REST");
	x->delta = api.delta;
	x->node_first_only = api.node_first_only;
	x->cluster = xstrdup(api.cluster);
	x->authority = xstrdup(api.authority && *api.authority ? api.authority : api.cluster);
	return RM_OK;
}

/* cds_config / lds_config: {ads: {}} (needs ads_config) or api_config_source
 * REST (all REST sources name one cluster). */
static int parse_source(struct cfg_ctx *c, const json_t *s, uint64_t *timeout_ms,
			struct xds_bootstrap *x, bool have_ads)
{
	struct xds_api_source api;
	bool has_api;
	if (parse_config_source(c, s, timeout_ms, &api, &has_api))
		return RM_ERROR;
	if (!has_api) {
		if (!have_ads)
			return cfg_fail_field(c, s, "ads", "ads: {} needs dynamic_resources.ads_config");
		return RM_OK;
	}
	if (!api.rest)
		return cfg_fail_field(c, s, "api_config_source", "per-type gRPC streams are not "
				      "supported yet: use ads: {} with dynamic_resources.ads_config, "
				      "or api_type REST");
	if (have_ads)
		return cfg_fail_field(c, s, "api_config_source", "REST beside ads_config is not "
				      "supported yet (use ads: {})");
	if (x->rest && strcmp(x->cluster, api.cluster))
		return cfg_fail_field(c, s, "api_config_source", "all REST sources must name the same "
				      "cluster ('%s')", x->cluster);
	if (!x->rest) {
		x->rest = true;
		x->cluster = xstrdup(api.cluster);
		x->authority = xstrdup(api.cluster);
		x->refresh_ms = api.refresh_ms;
		x->request_timeout_ms = api.timeout_ms;
	}
	return RM_OK;
}

int xds_bootstrap_parse(struct cfg_ctx *c, const json_t *dr, struct xds_bootstrap *x)
{
	static const char *const f[] = { "ads_config", "cds_config", "lds_config",
					 "cds_resources_locator", "lds_resources_locator", NULL };
	const json_t *v;
	int rc;
	bool have_ads = false;
	x->cds_timeout_ms = x->lds_timeout_ms = 15000;
	if (cfg_expect_object(c, dr) || cfg_check_fields(c, dr, f))
		return RM_ERROR;
	if (cfg_reject_fields(c, dr, f + 3, "not supported yet (xdstp:// locators)"))
		return RM_ERROR;
	if ((v = cfg_enter(c, dr, "ads_config"))) {
		rc = parse_ads(c, v, x);
		cfg_leave(c);
		if (rc)
			return RM_ERROR;
		have_ads = true;
	}
	if ((v = cfg_enter(c, dr, "cds_config"))) {
		rc = parse_source(c, v, &x->cds_timeout_ms, x, have_ads);
		cfg_leave(c);
		if (rc)
			return RM_ERROR;
		x->cds = true;
	}
	if ((v = cfg_enter(c, dr, "lds_config"))) {
		rc = parse_source(c, v, &x->lds_timeout_ms, x, have_ads);
		cfg_leave(c);
		if (rc)
			return RM_ERROR;
		x->lds = true;
	}
	if (!have_ads && !x->rest)
		return cfg_fail(c, "missing required field 'ads_config' (or a cds_config / lds_config "
				   "api_config_source with api_type REST)");
	x->enabled = true;
	return RM_OK;
}

void xds_bootstrap_free(struct xds_bootstrap *x)
{
	free(x->cluster);
	free(x->authority);
	x->cluster = x->authority = NULL;
	x->enabled = false;
	x->rest = false;
}
