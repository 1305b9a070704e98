/* config_dump.h - /config_dump's query parameters (Envoy's admin semantics)
 * over an assembled dump.  Pure JSON in, JSON or an error out: no server
 * state, so it is unit-tested on its own (tests/unit/stats/config_dump_test.c).
 *
 *   resource=<field>   only the elements of that repeated field of the first
 *                      dump that has it, each wrapped with its element type
 *                      ("@type": ".../envoy.admin.v3.ClustersConfigDump.DynamicCluster");
 *                      a field no dump has: 404 "<field> not found in config dump";
 *                      a field that is not repeated: 400.
 *   mask=<paths>       a FieldMask (comma-separated dotted snake_case paths).
 *                      Alone: applied to each dump; a dump the mask does not fit
 *                      (a path naming no field of it) is left out, none fitting
 *                      is 400.  With resource: applied to each element, paths
 *                      into its resource (the Any field: "cluster.name") trim
 *                      the resource; an invalid path is 400.  As protobuf's
 *                      TrimMessage: repeated fields are kept whole.
 *   name_regex=<re>    only resources whose name fully matches (PCRE2; Envoy
 *                      uses RE2): clusters, listeners, route configurations,
 *                      endpoint configs (cluster_name), secrets.  Invalid: 400.
 * include_eds is the caller's (it decides whether the EndpointsConfigDump is
 * built at all). */
#ifndef REMORA_STATS_CONFIG_DUMP_H
#define REMORA_STATS_CONFIG_DUMP_H

#include <jansson.h>

struct config_dump_query {
	const char *resource;       /* NULL: all */
	const char *mask;           /* NULL or "": none */
	const char *name_regex;     /* NULL or "": every name */
};

/* configs: the dumps in Envoy's order, each an object with "@type"
 * (type.googleapis.com/envoy.admin.v3.*ConfigDump); modified in place.
 * Returns the HTTP status: 200 with *out = {"configs": [...]} (new ref), or
 * 400/404 with *msg = the error text (caller frees). */
int config_dump_query(json_t *configs, const struct config_dump_query *q, json_t **out,
		      char **msg);

/* Secrets are never dumped (Envoy's MessageUtil::redact): every
 * "private_key" and "password" (DataSource) in j becomes
 * {"inline_string": "[redacted]"}. */
void config_dump_redact(json_t *j);

#endif
