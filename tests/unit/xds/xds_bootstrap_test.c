/* xds_bootstrap_test.c - dynamic_resources: what is accepted, and errors that
 * name the field. */
#include "test.h"
#include "xds/xds_bootstrap.h"
#include "proxy/config/cfg.h"
#include "proxy/config/yaml_json.h"
#include "bootstrap_helper.h"

/* Parse the YAML text of a dynamic_resources object; err gets the message. */
static int parse(const char *yaml, struct xds_bootstrap *x, char *err, size_t errlen)
{
	struct test_yaml t;
	const json_t *dr;
	memset(x, 0, sizeof(*x));
	if (test_yaml_enter(&t, yaml, "dynamic_resources", &dr, err, errlen))
		return RM_ERROR;
	return test_yaml_leave(&t, xds_bootstrap_parse(&t.c, dr, x), err, errlen);
}

#define ADS "dynamic_resources:\n" \
	"  ads_config:\n" \
	"    api_type: GRPC\n" \
	"    transport_api_version: V3\n" \
	"    set_node_on_first_message_only: true\n" \
	"    grpc_services: [{envoy_grpc: {cluster_name: xds}}]\n"

TEST(xds_bootstrap_good)
{
	struct xds_bootstrap x;
	char err[512];
	CHECK_INT(parse(ADS "  cds_config: {ads: {}, resource_api_version: V3, initial_fetch_timeout: 2s}\n"
			"  lds_config: {ads: {}}\n", &x, err, sizeof(err)), RM_OK);
	CHECK_STR(err, "");
	CHECK(x.enabled && x.cds && x.lds && x.node_first_only);
	CHECK_STR(x.cluster, "xds");
	CHECK_STR(x.authority, "xds");
	CHECK_INT(x.cds_timeout_ms, 2000);
	CHECK_INT(x.lds_timeout_ms, 15000);
	xds_bootstrap_free(&x);
	/* only ADS, no CDS/LDS: allowed (nothing subscribed) */
	CHECK_INT(parse(ADS, &x, err, sizeof(err)), RM_OK);
	CHECK(!x.cds && !x.lds);
	xds_bootstrap_free(&x);
}

TEST(xds_bootstrap_rest)
{
	struct xds_bootstrap x;
	char err[512];
	CHECK_INT(parse("dynamic_resources:\n  cds_config: {api_config_source: {api_type: REST, "
			"transport_api_version: V3, cluster_names: [rest], refresh_delay: 0.25s, "
			"request_timeout: 2s}, resource_api_version: V3}\n  lds_config: "
			"{api_config_source: {api_type: REST, cluster_names: [rest2]}}\n", &x, err,
			sizeof(err)), RM_OK);
	CHECK(x.enabled && x.cds && x.lds && !x.cluster);
	const struct xds_source *c = xds_source_get(x.cds_key), *l = xds_source_get(x.lds_key);
	CHECK(c && l && c != l);
	CHECK_INT(c->kind, XDS_REST);
	CHECK_STR(c->cluster, "rest");
	CHECK_INT(c->refresh_ms, 250);
	CHECK_INT(c->timeout_ms, 2000);
	CHECK_STR(l->cluster, "rest2");
	CHECK_INT(l->refresh_ms, 1000);
	xds_bootstrap_free(&x);
}

/* Per-type gRPC streams, and every kind of source mixed with ADS. */
TEST(xds_bootstrap_mixed_sources)
{
	struct xds_bootstrap x;
	char err[512];
	CHECK_INT(parse("dynamic_resources:\n  cds_config: {api_config_source: {api_type: GRPC, "
			"transport_api_version: V3, grpc_services: [{envoy_grpc: {cluster_name: cp}}]}}\n"
			"  lds_config: {api_config_source: {api_type: DELTA_GRPC, "
			"set_node_on_first_message_only: true, "
			"grpc_services: [{envoy_grpc: {cluster_name: cp, authority: a.b}}]}}\n",
			&x, err, sizeof(err)), RM_OK);
	CHECK_STR(err, "");
	const struct xds_source *c = xds_source_get(x.cds_key), *l = xds_source_get(x.lds_key);
	CHECK(c && l && c != l && !x.cluster);
	CHECK_INT(c->kind, XDS_GRPC);
	CHECK(!c->delta && l->delta && l->node_first_only && !c->node_first_only);
	CHECK_STR(c->authority, "cp");
	CHECK_STR(l->authority, "a.b");
	xds_bootstrap_free(&x);
	/* REST beside ADS; AGGREGATED_GRPC naming the ADS cluster is ADS */
	CHECK_INT(parse(ADS "  cds_config: {ads: {}}\n  lds_config: {api_config_source: "
			"{api_type: REST, cluster_names: [r]}}\n", &x, err, sizeof(err)), RM_OK);
	CHECK_STR(x.cds_key, XDS_ADS_KEY);
	CHECK_INT(xds_source_get(x.lds_key)->kind, XDS_REST);
	xds_bootstrap_free(&x);
	CHECK_INT(parse(ADS "  cds_config: {api_config_source: {api_type: AGGREGATED_GRPC, "
			"grpc_services: [{envoy_grpc: {cluster_name: xds}}]}}\n", &x, err, sizeof(err)),
		  RM_OK);
	CHECK_STR(x.cds_key, XDS_ADS_KEY);
	xds_bootstrap_free(&x);
	CHECK_INT(parse(ADS "  cds_config: {api_config_source: {api_type: AGGREGATED_GRPC, "
			"grpc_services: [{envoy_grpc: {cluster_name: other}}]}}\n", &x, err, sizeof(err)),
		  RM_ERROR);
	CHECK_CONTAINS(err, "dynamic_resources.cds_config.api_config_source: cluster 'other': an "
		       "AGGREGATED_* api_type is served on the ADS stream");
	xds_bootstrap_free(&x);
	/* the same options intern to the same source; any difference is another */
	json_t *a = json_loads("{\"api_config_source\": {\"api_type\": \"GRPC\", \"grpcServices\": "
			       "[{\"envoyGrpc\": {\"clusterName\": \"cp\"}}]}}", 0, NULL);
	json_t *b = json_loads("{\"api_config_source\": {\"api_type\": \"DELTA_GRPC\", \"grpc_services\": "
			       "[{\"envoy_grpc\": {\"cluster_name\": \"cp\"}}]}}", 0, NULL);
	json_t *ads = json_loads("{\"ads\": {}}", 0, NULL);
	const char *ka = xds_source_key(a), *kb = xds_source_key(b);
	CHECK(ka && kb && strcmp(ka, kb));
	CHECK(ka == xds_source_key(a));
	CHECK_STR(xds_source_key(ads), XDS_ADS_KEY);
	CHECK(xds_source_key(NULL) == NULL);
	json_decref(a);
	json_decref(b);
	json_decref(ads);
	/* secrets: the source noted for the name, else ADS */
	json_t *rest = json_loads("{\"api_config_source\": {\"api_type\": \"REST\", "
				  "\"cluster_names\": [\"r\"]}}", 0, NULL);
	xds_sds_source_note("cert", rest);
	CHECK_INT(xds_source_get(xds_sds_source("cert"))->kind, XDS_REST);
	CHECK_STR(xds_sds_source("other"), XDS_ADS_KEY);
	json_decref(rest);
	xds_sources_free();
}

TEST(xds_bootstrap_errors_name_the_field)
{
	struct xds_bootstrap x;
	char err[512];
	CHECK_INT(parse("dynamic_resources:\n  ads_config: {api_type: REST, grpc_services: "
			"[{envoy_grpc: {cluster_name: x}}]}\n", &x, err, sizeof(err)), RM_ERROR);
	CHECK_CONTAINS(err, "dynamic_resources.ads_config.api_type: ads_config must be a gRPC api_type");
	xds_bootstrap_free(&x);
	/* delta: DELTA_GRPC and AGGREGATED_DELTA_GRPC */
	CHECK_INT(parse("dynamic_resources:\n  ads_config: {api_type: DELTA_GRPC, grpc_services: "
			"[{envoy_grpc: {cluster_name: x}}]}\n", &x, err, sizeof(err)), RM_OK);
	CHECK(x.delta);
	xds_bootstrap_free(&x);
	CHECK_INT(parse("dynamic_resources:\n  ads_config: {api_type: AGGREGATED_DELTA_GRPC, "
			"grpc_services: [{envoy_grpc: {cluster_name: x}}]}\n", &x, err, sizeof(err)),
		  RM_OK);
	CHECK(x.delta);
	xds_bootstrap_free(&x);
	CHECK_INT(parse("dynamic_resources:\n  ads_config: {api_type: GRPC, grpc_services: "
			"[{envoy_grpc: {cluster_name: x}}]}\n", &x, err, sizeof(err)), RM_OK);
	CHECK(!x.delta);
	xds_bootstrap_free(&x);
	CHECK_INT(parse("dynamic_resources:\n  ads_config: {api_type: GRPC, grpc_services: "
			"[{google_grpc: {}}]}\n", &x, err, sizeof(err)), RM_ERROR);
	CHECK_CONTAINS(err, "dynamic_resources.ads_config.grpc_services[0].google_grpc: not supported yet");
	xds_bootstrap_free(&x);
	CHECK_INT(parse(ADS "  cds_config: {api_config_source: {api_type: REST}}\n", &x, err,
			sizeof(err)), RM_ERROR);
	CHECK_CONTAINS(err, "dynamic_resources.cds_config.api_config_source.cluster_names: missing");
	xds_bootstrap_free(&x);
	CHECK_INT(parse("dynamic_resources:\n  cds_config: {ads: {}}\n", &x, err, sizeof(err)),
		  RM_ERROR);
	CHECK_CONTAINS(err, "dynamic_resources.cds_config.ads: ads: {} needs dynamic_resources.ads_config");
	xds_bootstrap_free(&x);
	CHECK_INT(parse("dynamic_resources:\n  cds_config: {api_config_source: {api_type: GRPC, "
			"refresh_delay: 1s, grpc_services: [{envoy_grpc: {cluster_name: x}}]}}\n", &x, err,
			sizeof(err)), RM_ERROR);
	CHECK_CONTAINS(err, "dynamic_resources.cds_config.api_config_source.refresh_delay: only for "
		       "api_type REST");
	xds_bootstrap_free(&x);
	CHECK_INT(parse("dynamic_resources:\n  cds_config: {api_config_source: {api_type: REST, "
			"cluster_names: [a], refresh_delay: 0s}}\n", &x, err, sizeof(err)), RM_ERROR);
	CHECK_CONTAINS(err, "refresh_delay: must be positive");
	xds_bootstrap_free(&x);
	CHECK_INT(parse(ADS "  lds_config: {ads: {}, resource_api_version: V2}\n", &x, err,
			sizeof(err)), RM_ERROR);
	CHECK_CONTAINS(err, "dynamic_resources.lds_config.resource_api_version: only V3");
	xds_bootstrap_free(&x);
	CHECK_INT(parse(ADS "  lds_config: {ads: {}, bogus: 1}\n", &x, err, sizeof(err)), RM_ERROR);
	CHECK_CONTAINS(err, "dynamic_resources.lds_config.bogus: unknown field 'bogus'");
	xds_bootstrap_free(&x);
	CHECK_INT(parse("dynamic_resources:\n  ads_config: {api_type: GRPC, grpc_services: []}\n", &x,
			err, sizeof(err)), RM_ERROR);
	CHECK_CONTAINS(err, "one or two gRPC services");
	xds_bootstrap_free(&x);
	CHECK_INT(parse("dynamic_resources:\n  ads_config: {api_type: GRPC, grpc_services: ["
			"{envoy_grpc: {cluster_name: a}}, {envoy_grpc: {cluster_name: b}}, "
			"{envoy_grpc: {cluster_name: c}}]}\n", &x, err, sizeof(err)), RM_ERROR);
	CHECK_CONTAINS(err, "dynamic_resources.ads_config.grpc_services: one or two gRPC services");
	xds_bootstrap_free(&x);
	/* a failover server; initial_metadata keys lowercased (Envoy) */
	CHECK_INT(parse("dynamic_resources:\n  ads_config: {api_type: GRPC, grpc_services: ["
			"{envoy_grpc: {cluster_name: p}, initial_metadata: [{key: X-Token, value: s1}]}, "
			"{envoy_grpc: {cluster_name: f, authority: fa}}]}\n", &x, err, sizeof(err)),
		  RM_OK);
	CHECK_STR(x.cluster, "p");
	CHECK_STR(x.cluster2, "f");
	CHECK_STR(x.authority2, "fa");
	CHECK_STR(json_string_value(json_array_get(json_array_get(x.md, 0), 0)), "x-token");
	CHECK_STR(json_string_value(json_array_get(json_array_get(x.md, 0), 1)), "s1");
	CHECK(x.md2 == NULL);
	xds_bootstrap_free(&x);
	static const char *const bad[][2] = {
		{ ":authority", "pseudo-headers cannot be set" },
		{ "Content-Type", "'content-type' is set by the gRPC transport" },
		{ "grpc-timeout", "reserved by gRPC" },
		{ "a b", "not a valid header name" },
	};
	for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
		char y[512];
		snprintf(y, sizeof(y), "dynamic_resources:\n  cds_config: {api_config_source: "
			 "{api_type: GRPC, grpc_services: [{envoy_grpc: {cluster_name: x}, "
			 "initial_metadata: [{key: '%s', value: v}]}]}}\n", bad[i][0]);
		CHECK_INT(parse(y, &x, err, sizeof(err)), RM_ERROR);
		CHECK_CONTAINS(err, "dynamic_resources.cds_config.api_config_source.grpc_services[0]."
			       "initial_metadata[0].key");
		CHECK_CONTAINS(err, bad[i][1]);
		xds_bootstrap_free(&x);
	}
	CHECK_INT(parse("dynamic_resources:\n  cds_config: {api_config_source: {api_type: GRPC, "
			"grpc_services: [{envoy_grpc: {cluster_name: x}, initial_metadata: "
			"[{key: k, raw_value: dg==}]}]}}\n", &x, err, sizeof(err)), RM_ERROR);
	CHECK_CONTAINS(err, "initial_metadata[0].raw_value");
	xds_bootstrap_free(&x);
}
