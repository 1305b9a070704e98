/* xds_bootstrap_test.c - dynamic_resources: what is accepted, and errors that
 * name the field. */
#include "test.h"
#include "xds/xds_bootstrap.h"
#include "proxy/config/cfg.h"
#include "proxy/config/yaml_json.h"

/* Parse the YAML text of a dynamic_resources object; err gets the message. */
static int parse(const char *yaml, struct xds_bootstrap *x, char *err, size_t errlen)
{
	struct cfg_src *src = NULL;
	struct cfg_ctx c;
	char lerr[256];
	json_t *root = yaml_load_buffer("t.yaml", yaml, strlen(yaml), &src, lerr, sizeof(lerr));
	if (!root) {
		snprintf(err, errlen, "%s", lerr);
		return RM_ERROR;
	}
	cfg_init(&c, src, "t.yaml");
	memset(x, 0, sizeof(*x));
	const json_t *dr = cfg_enter(&c, root, "dynamic_resources");
	int rc = xds_bootstrap_parse(&c, dr, x);
	cfg_leave(&c);
	snprintf(err, errlen, "%s", c.err);
	json_decref(root);
	cfg_src_free(src);
	return rc;
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

TEST(xds_bootstrap_errors_name_the_field)
{
	struct xds_bootstrap x;
	char err[512];
	CHECK_INT(parse("dynamic_resources:\n  ads_config: {api_type: REST, grpc_services: "
			"[{envoy_grpc: {cluster_name: x}}]}\n", &x, err, sizeof(err)), RM_ERROR);
	CHECK_CONTAINS(err, "dynamic_resources.ads_config.api_type: only GRPC");
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
	CHECK_CONTAINS(err, "dynamic_resources.cds_config.api_config_source: not supported yet");
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
	CHECK_CONTAINS(err, "exactly one gRPC service");
	xds_bootstrap_free(&x);
}
