/* xds_bootstrap.h - the bootstrap's dynamic_resources and xDS ConfigSources,
 * as Remora supports them.
 *
 * Every ConfigSource resolves to a *source*: the ADS stream (`ads: {}`, or an
 * api_config_source of an AGGREGATED_* type naming the ADS cluster), a
 * per-type gRPC stream (api_config_source GRPC / DELTA_GRPC), or REST polling
 * (api_config_source REST).  Sources are interned by a key string that holds
 * everything that tells them apart (transport, cluster, authority, options):
 * the xDS client opens one transport per (source, type), or one ADS stream for
 * every type using `ads`, as Envoy does.  Main thread only. */
#ifndef REMORA_XDS_BOOTSTRAP_H
#define REMORA_XDS_BOOTSTRAP_H

#include <stdbool.h>
#include <stdint.h>
#include <jansson.h>

struct cfg_ctx;
struct snapshot;

enum xds_kind { XDS_ADS, XDS_GRPC, XDS_REST };

/* One grpc_services[] entry of a gRPC source. */
struct xds_grpc_svc {
	const char *cluster;         /* owned: envoy_grpc.cluster_name (a static cluster) */
	const char *authority;       /* owned: envoy_grpc.authority, else the cluster name */
	json_t *md;                  /* owned, NULL if none: initial_metadata as
				      * [[name, value], ...], names lowercased and checked */
};

/* grpc_services[] Remora accepts: the primary and a failover (Envoy's xDS
 * failover: at most two). */
#define XDS_MAX_GRPC_SERVICES 2
/* initial_metadata entries per grpc_service. */
#define XDS_MAX_METADATA 16

/* One interned source (xds_source_get); lives until xds_sources_free. */
struct xds_source {
	const char *key;             /* owned by the registry: "ads", "grpc|..." or "rest|..." */
	enum xds_kind kind;
	bool delta;                  /* DELTA_GRPC (per-type gRPC; ADS: the bootstrap's) */
	const char *cluster;         /* the static cluster of the server (gRPC: svc[0]'s) */
	const char *authority;       /* envoy_grpc.authority, else the cluster name (svc[0]'s) */
	struct xds_grpc_svc svc[XDS_MAX_GRPC_SERVICES]; /* gRPC: grpc_services[] */
	unsigned nsvc;               /* gRPC: 1, or 2 with a failover server */
	bool node_first_only;        /* set_node_on_first_message_only */
	uint64_t refresh_ms;         /* REST: refresh_delay (1 s) */
	uint64_t timeout_ms;         /* REST: request_timeout (1 s) */
};

#define XDS_ADS_KEY "ads"

struct xds_bootstrap {
	bool enabled;                /* dynamic_resources present */
	char *cluster;               /* owned: ads_config's cluster, NULL without ads_config */
	char *authority;             /* owned: ads_config envoy_grpc.authority, else the cluster */
	char *cluster2, *authority2; /* owned: ads_config grpc_services[1] (failover), or NULL */
	json_t *md, *md2;            /* owned: the two services' initial_metadata, or NULL */
	bool delta;                  /* ads_config api_type (AGGREGATED_)DELTA_GRPC */
	bool node_first_only;        /* ads_config set_node_on_first_message_only */
	bool cds, lds;               /* cds_config / lds_config present */
	const char *cds_key, *lds_key; /* their sources (interned keys; XDS_ADS_KEY for ads) */
	uint64_t cds_timeout_ms;     /* cds_config.initial_fetch_timeout (15 s; 0 = wait forever) */
	uint64_t lds_timeout_ms;     /* lds_config.initial_fetch_timeout (15 s; RDS: each
				      * rds.config_source has its own, xds/ads.c) */
};

/* A ConfigSource's api_config_source, as parsed (borrowed strings). */
struct xds_api_source {
	bool rest;                   /* api_type REST (else a GRPC type) */
	bool delta;                  /* DELTA_GRPC / AGGREGATED_DELTA_GRPC */
	bool aggregated;             /* AGGREGATED_GRPC / AGGREGATED_DELTA_GRPC */
	const char *cluster;         /* cluster_names[0] (REST) / envoy_grpc.cluster_name;
				      * borrowed from the JSON */
	const char *authority;       /* envoy_grpc.authority or NULL */
	json_t *md;                  /* owned ref, NULL if none: initial_metadata (see
				      * struct xds_grpc_svc); xds_api_source_done frees */
	const char *cluster2;        /* grpc_services[1] (failover): cluster, or NULL */
	const char *authority2;
	json_t *md2;                 /* owned ref, as md */
	uint64_t refresh_ms, timeout_ms;
	bool node_first_only;
};

/* Parse an api_config_source object (the walker is positioned on it); then
 * xds_api_source_done (also after an error). */
int xds_api_source_parse(struct cfg_ctx *c, const json_t *a, struct xds_api_source *out);
void xds_api_source_done(struct xds_api_source *api);
/* The same ConfigSource checked for shape only (any cluster name, whatever
 * the bootstrap's transport): for secrets served in-process. */
int xds_resource_source_parse_shape(struct cfg_ctx *c, const json_t *s, uint64_t *timeout_ms);
/* A per-resource ConfigSource (eds_config, rds.config_source, sds_config):
 * {ads: {}} (needs ads_config) or api_config_source (REST, GRPC or
 * DELTA_GRPC: a source of its own; AGGREGATED_*: the ADS stream, so its
 * cluster must be the ADS cluster).  Sources in the bootstrap itself are
 * checked once dynamic_resources is known (xds_bootstrap_check_sources).
 * *timeout_ms: initial_fetch_timeout (set to 15 s, then the field);
 * *api_cluster (may be NULL): the api_config_source's cluster, NULL for
 * ads. */
int xds_resource_source_parse(struct cfg_ctx *c, const json_t *s, uint64_t *timeout_ms,
			      const char **api_cluster);

/* The interned source key of a ConfigSource (proto3 JSON, already validated
 * by the compiler: snake_case or camelCase keys), NULL if it is not one.
 * ads and AGGREGATED_* api sources give XDS_ADS_KEY. */
const char *xds_source_key(const json_t *config_source);
/* The source of a key returned above; NULL for an unknown key. */
const struct xds_source *xds_source_get(const char *key);
/* SDS: the source of the named secret (the last sds_config seen naming it:
 * tls/context.c notes it), XDS_ADS_KEY if none was noted. */
void xds_sds_source_note(const char *secret, const json_t *sds_config);
const char *xds_sds_source(const char *secret);

/* Parse dynamic_resources (cfg walker; errors name the field). */
int xds_bootstrap_parse(struct cfg_ctx *c, const json_t *dr, struct xds_bootstrap *out);
/* After the whole bootstrap: every source named in it (dynamic_resources and
 * the per-resource sources of static clusters, listeners and secrets) has a
 * static, non-EDS cluster, and `ads` has an ads_config.  Forgets what was
 * collected either way (s NULL: only that). */
int xds_bootstrap_check_sources(const struct xds_bootstrap *x, const struct snapshot *s,
				struct cfg_ctx *c);
void xds_bootstrap_free(struct xds_bootstrap *x);
/* Free the source registry (at exit; keys become invalid). */
void xds_sources_free(void);

#endif
