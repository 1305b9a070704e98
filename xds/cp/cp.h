/* cp.h - remora-cp internals: the resource snapshot read from --config-dir
 * (cp_config.c), the ADS/REST logic (cp_xds.c) and its stats. */
#ifndef REMORA_XDS_CP_CP_H
#define REMORA_XDS_CP_CP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <jansson.h>
#include "cp_server.h"

enum cp_type { CP_CDS, CP_EDS, CP_SDS, CP_LDS, CP_RDS, CP_NTYPES };   /* push order */

extern const char *const cp_type_url[CP_NTYPES];
extern const char *const cp_type_key[CP_NTYPES];    /* "clusters", ... (file keys, REST paths) */
extern const char *const cp_type_short[CP_NTYPES];  /* "cds", ... (stats labels) */
int cp_type_by_url(const char *url);                 /* -1 if unknown */

struct cp_resource {
	char *name;            /* owned */
	uint8_t *bytes;        /* owned: the serialized message (Any value) */
	size_t len;
	char version[17];      /* hex xxh64 of bytes */
	json_t *json;          /* owned: canonical JSON (decoded back), with "@type" */
};

/* One directory's resources, per type, sorted by name. */
struct cp_layer {
	char *name;                        /* owned: "" for the base, else the nodes/<name> */
	struct cp_resource *res[CP_NTYPES];
	size_t n[CP_NTYPES];
};

/* Everything read from --config-dir; immutable once loaded. */
struct cp_config {
	struct cp_layer base;
	struct cp_layer *nodes;            /* owned: nodes/<name>/ layers */
	size_t nnodes;
	unsigned generation;               /* 1, 2, ... per successful load */
};

/* Load dir (may be NULL) and the catalog file (may be NULL) into one config.
 * NULL with err ("file:line:col: ..." or "file: <field path>: ...") on error. */
struct cp_config *cp_config_load(const char *dir, const char *catalog, char *err, size_t errlen);

/* The service catalog (cp_catalog.c): compile the catalog tree (positions in
 * src) into a document {clusters, endpoints, listeners, routes} (new
 * reference; shares nodes with cat), or NULL with err. */
struct cfg_src;
json_t *cp_catalog_compile(const json_t *cat, const struct cfg_src *src, const char *file,
			   char *err, size_t errlen);
void cp_config_free(struct cp_config *c);
/* A resource (proto3 JSON, copied) that every later load adds to the base
 * layer unless the directory defines one of the same name: the CA's ROOTCA
 * Secret (xds/cp/ca.c).  Cleared at exit. */
void cp_config_add_builtin(enum cp_type t, const json_t *res);
void cp_config_clear_builtins(void);
/* The catalog services discovered from the Kubernetes API (a JSON array of
 * catalog `services` entries, copied; NULL clears) that every later load
 * merges under the catalog file's (or uses alone without one). */
void cp_config_set_discovered(const json_t *services);

/* The resources of one type a node sees: base, then nodes/<cluster>, then
 * nodes/<id> (later layers replace resources of the same name).  Fills *out
 * (malloc'd array of borrowed pointers, sorted by name; free it) and returns
 * the count; version (>= 17 bytes) gets the hash of the set. */
size_t cp_config_view(const struct cp_config *c, const char *node_id, const char *node_cluster,
		      enum cp_type t, const struct cp_resource ***out, char *version);

/* ---- the xDS side (cp_xds.c) ---- */
struct cp_xds;
struct cp_xds *cp_xds_new(struct cp_server **servers, size_t nservers);
/* Install a new config (owned by the caller; kept until the next one is set
 * and every push of the old one is done: the caller frees the old one after
 * this returns) and push to every stream. */
void cp_xds_set_config(struct cp_xds *x, const struct cp_config *c);
void cp_xds_set_error(struct cp_xds *x, const char *err);
void cp_xds_free(struct cp_xds *x);
/* Admin: GET /debug/config JSON, /metrics Prometheus text (malloc'd). */
char *cp_xds_debug_json(struct cp_xds *x);
char *cp_xds_metrics(struct cp_xds *x);
/* REST: POST /v3/discovery:<key> with a DiscoveryRequest JSON body.  Returns
 * the HTTP status (200, 304, 400, 404) and *body (malloc'd JSON or text). */
int cp_xds_rest(struct cp_xds *x, const char *key, const char *body, size_t len, char **out);

/* grpc.health.v1.Health/Check on s (cp_health.c); serving() says whether a
 * configuration is loaded. */
void cp_health_register(struct cp_server *s, bool (*serving)(void));

#endif
