/* xds_bootstrap.h - the bootstrap's dynamic_resources, as Remora supports it. */
#ifndef REMORA_XDS_BOOTSTRAP_H
#define REMORA_XDS_BOOTSTRAP_H

#include <stdbool.h>
#include <stdint.h>
#include <jansson.h>

struct cfg_ctx;

struct xds_bootstrap {
	bool enabled;                /* dynamic_resources.ads_config present */
	char *cluster;               /* owned: ads_config.grpc_services[0].envoy_grpc.cluster_name */
	char *authority;             /* owned: envoy_grpc.authority, else the cluster name */
	bool delta;                  /* api_type (AGGREGATED_)DELTA_GRPC: DeltaAggregatedResources */
	bool node_first_only;        /* set_node_on_first_message_only */
	bool cds, lds;               /* cds_config / lds_config: {ads: {}} */
	uint64_t cds_timeout_ms;     /* cds_config.initial_fetch_timeout (15 s; 0 = wait forever) */
	uint64_t lds_timeout_ms;     /* lds_config.initial_fetch_timeout (15 s); also for RDS */
};

/* Parse dynamic_resources (cfg walker; errors name the field). */
int xds_bootstrap_parse(struct cfg_ctx *c, const json_t *dr, struct xds_bootstrap *out);
void xds_bootstrap_free(struct xds_bootstrap *x);

#endif
