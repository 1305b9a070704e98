/* xds_bootstrap.c - dynamic_resources: ADS over gRPC (SotW or delta), CDS/LDS over ADS. */
#include "xds_bootstrap.h"

#include "../proxy/common.h"
#include "../proxy/config/cfg.h"

static const char *const versions[] = { "AUTO", "V2", "V3" };

/* ConfigSource {ads: {}, initial_fetch_timeout, resource_api_version}. */
static int parse_source(struct cfg_ctx *c, const json_t *s, uint64_t *timeout_ms)
{
	static const char *const f[] = { "ads", "initial_fetch_timeout", "resource_api_version",
					 "api_config_source", "path", "path_config_source", "self",
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
	if (cfg_reject_fields(c, s, f + 3, "not supported yet: only {ads: {}} "
			      "(per-type gRPC streams, REST and files are not)"))
		return RM_ERROR;
	if (!(a = cfg_enter_req(c, s, "ads")))
		return RM_ERROR;
	rc = cfg_expect_object(c, a) || cfg_check_fields(c, a, empty);
	cfg_leave(c);
	return rc ? RM_ERROR : RM_OK;
}

static int parse_ads(struct cfg_ctx *c, const json_t *a, struct xds_bootstrap *x)
{
	static const char *const f[] = { "api_type", "transport_api_version", "grpc_services",
					 "set_node_on_first_message_only", "cluster_names",
					 "refresh_delay", "request_timeout", "rate_limit_settings",
					 "config_validators", NULL };
	static const char *const types[] = { "DEPRECATED_AND_UNAVAILABLE_DO_NOT_USE", "REST", "GRPC",
					     "DELTA_GRPC", "", "AGGREGATED_GRPC",
					     "AGGREGATED_DELTA_GRPC" };
	static const char *const gf[] = { "envoy_grpc", "google_grpc", "timeout", "initial_metadata",
					  "retry_policy", NULL };
	static const char *const ef[] = { "cluster_name", "authority", NULL };
	const json_t *gs, *g, *e;
	const char *cluster = NULL, *auth = NULL;
	int type = 0, ver = 2, rc = RM_ERROR;

	if (cfg_expect_object(c, a) || cfg_check_fields(c, a, f) ||
	    cfg_enum(c, a, "api_type", types, ARRAY_SIZE(types), &type) ||
	    cfg_enum(c, a, "transport_api_version", versions, 3, &ver) ||
	    cfg_bool(c, a, "set_node_on_first_message_only", &x->node_first_only))
		return RM_ERROR;
	if (type != 2 && type != 5 && type != 3 && type != 6)
		return cfg_fail_field(c, a, "api_type", "only GRPC / AGGREGATED_GRPC (state of the "
				      "world) and DELTA_GRPC / AGGREGATED_DELTA_GRPC are supported; "
				      "REST is not yet");
	x->delta = type == 3 || type == 6;
	if (ver != 2)
		return cfg_fail_field(c, a, "transport_api_version", "must be V3");
	if (cfg_reject_fields(c, a, f + 4, "not supported yet"))
		return RM_ERROR;
	if (!(gs = cfg_enter_req(c, a, "grpc_services")))
		return RM_ERROR;
	if (cfg_expect_array(c, gs))
		goto out;
	if (json_array_size(gs) != 1) {
		cfg_fail(c, "exactly one gRPC service is supported");
		goto out;
	}
	g = cfg_enter_idx(c, gs, 0);
	if (cfg_expect_object(c, g) || cfg_check_fields(c, g, gf))
		goto out_g;
	if (cfg_reject_fields(c, g, gf + 1, "not supported yet (envoy_grpc only)"))
		goto out_g;
	if (!(e = cfg_enter_req(c, g, "envoy_grpc")))
		goto out_g;
	if (!cfg_expect_object(c, e) && !cfg_check_fields(c, e, ef) &&
	    !cfg_string_req(c, e, "cluster_name", &cluster) && !cfg_string(c, e, "authority", &auth)) {
		x->cluster = xstrdup(cluster);
		x->authority = xstrdup(auth && *auth ? auth : cluster);
		rc = RM_OK;
	}
	cfg_leave(c);
out_g:
	cfg_leave(c);
out:
	cfg_leave(c);
	return rc;
}

int xds_bootstrap_parse(struct cfg_ctx *c, const json_t *dr, struct xds_bootstrap *x)
{
	static const char *const f[] = { "ads_config", "cds_config", "lds_config",
					 "cds_resources_locator", "lds_resources_locator", NULL };
	const json_t *v;
	int rc;
	x->cds_timeout_ms = x->lds_timeout_ms = 15000;
	if (cfg_expect_object(c, dr) || cfg_check_fields(c, dr, f))
		return RM_ERROR;
	if (cfg_reject_fields(c, dr, f + 3, "not supported yet (xdstp:// locators)"))
		return RM_ERROR;
	if (!(v = cfg_enter_req(c, dr, "ads_config")))
		return RM_ERROR;
	rc = parse_ads(c, v, x);
	cfg_leave(c);
	if (rc)
		return RM_ERROR;
	if ((v = cfg_enter(c, dr, "cds_config"))) {
		rc = parse_source(c, v, &x->cds_timeout_ms);
		cfg_leave(c);
		if (rc)
			return RM_ERROR;
		x->cds = true;
	}
	if ((v = cfg_enter(c, dr, "lds_config"))) {
		rc = parse_source(c, v, &x->lds_timeout_ms);
		cfg_leave(c);
		if (rc)
			return RM_ERROR;
		x->lds = true;
	}
	x->enabled = true;
	return RM_OK;
}

void xds_bootstrap_free(struct xds_bootstrap *x)
{
	free(x->cluster);
	free(x->authority);
	x->cluster = x->authority = NULL;
	x->enabled = false;
}
