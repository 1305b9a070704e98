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
	bool rest;                   /* no ads_config: cds/lds_config api_config_source REST;
				      * every type is polled (cluster: the REST cluster) */
	uint64_t refresh_ms;         /* api_config_source.refresh_delay (1 s) */
	uint64_t request_timeout_ms; /* api_config_source.request_timeout (1 s) */
};

/* A ConfigSource's api_config_source, as Remora supports it. */
struct xds_api_source {
	bool rest;                   /* api_type REST (else a GRPC type) */
	bool delta;                  /* DELTA_GRPC / AGGREGATED_DELTA_GRPC */
	const char *cluster;         /* cluster_names[0] (REST) / envoy_grpc.cluster_name;
				      * borrowed from the JSON */
	const char *authority;       /* envoy_grpc.authority or NULL */
	uint64_t refresh_ms, timeout_ms;
	bool node_first_only;
};

/* Parse an api_config_source object (the walker is positioned on it). */
int xds_api_source_parse(struct cfg_ctx *c, const json_t *a, struct xds_api_source *out);
/* The same ConfigSource checked for shape only (any cluster name, whatever
 * the bootstrap's transport): for secrets served in-process. */
int xds_resource_source_parse_shape(struct cfg_ctx *c, const json_t *s, uint64_t *timeout_ms);
/* A per-resource ConfigSource (eds_config, rds.config_source, sds_config):
 * {ads: {}} or api_config_source (REST or GRPC; served by the bootstrap's
 * transport: the ADS stream, or REST polling of the REST cluster).  Checks
 * the source against the bootstrap's transport when it is known
 * (g_server.xds.enabled).  *timeout_ms: initial_fetch_timeout (set to 15 s,
 * then the field); *api_cluster (may be NULL): the api_config_source's
 * cluster, NULL for ads. */
int xds_resource_source_parse(struct cfg_ctx *c, const json_t *s, uint64_t *timeout_ms,
			      const char **api_cluster);

/* Parse dynamic_resources (cfg walker; errors name the field). */
int xds_bootstrap_parse(struct cfg_ctx *c, const json_t *dr, struct xds_bootstrap *out);
void xds_bootstrap_free(struct xds_bootstrap *x);

#endif
