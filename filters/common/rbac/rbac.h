/* rbac.h - the RBAC policy engine shared by envoy.filters.http.rbac and
 * envoy.filters.network.rbac (envoy.config.rbac.v3.RBAC).
 *
 * The parser does no I/O: it turns an RBAC message (proto3 JSON) into an
 * immutable tree of permissions and principals that every worker reads
 * without locks.  Evaluation takes a struct rbac_input describing the
 * connection (and, for HTTP, the request headers) and never allocates.
 *
 * Semantics (Envoy's RoleBasedAccessControlEngineImpl): a policy matches
 * when any of its permissions and any of its principals match.  ALLOW: the
 * request is allowed iff some policy matches; DENY: it is denied iff some
 * policy matches.  An RBAC message without `action` is ALLOW; with no
 * policies, ALLOW denies everything and DENY allows everything.  LOG is
 * refused ("not supported"), as are CEL conditions.
 *
 * Principals: any, authenticated {principal_name} (StringMatcher on the
 * peer certificate's first URI SAN, else first DNS SAN, else subject; without
 * principal_name: any peer that presented a certificate), source_ip,
 * direct_remote_ip, remote_ip (CIDR), header (HTTP only), url_path (HTTP
 * only), and_ids, or_ids, not_id.
 * Permissions: any, header (incl. :method, :path, :authority; HTTP only),
 * url_path {path: StringMatcher} (the :path without query and fragment;
 * HTTP only), destination_ip, destination_port, destination_port_range,
 * requested_server_name (StringMatcher on the SNI, "" without one),
 * and_rules, or_rules, not_rule. */
#ifndef REMORA_FILTERS_COMMON_RBAC_H
#define REMORA_FILTERS_COMMON_RBAC_H

#include <sys/socket.h>
#include "proxy/config/cfg.h"
#include "stats/stats.h"

struct http_headers;
struct rbac_engine;

/* What a decision looks at.  Any pointer may be NULL (then a matcher that
 * needs it does not match). */
struct rbac_input {
	const struct sockaddr *direct_remote;  /* the downstream peer (source_ip, direct_remote_ip) */
	const struct sockaddr *remote;         /* remote_ip (the same as direct_remote here) */
	const struct sockaddr *local;          /* destination_ip / destination_port */
	const char *sni;                       /* requested_server_name; NULL = "" */
	bool tls;                              /* the connection is TLS (authenticated without
						  principal_name matches, as Envoy) */
	const char *principal;                 /* the peer certificate's URI SAN, else DNS SAN,
						  else subject; NULL: no certificate */
	const struct http_headers *headers;    /* request headers; NULL for network RBAC */
};

/* Parse member `name` of obj (an RBAC message) into *out.  Absent: *out =
 * NULL and RM_OK (no engine: the filter allows everything for it).  http:
 * header / url_path matchers are allowed (network RBAC refuses them).
 * RM_ERROR after cfg_fail with the field path; the walker is balanced either
 * way.  The caller owns *out (rbac_engine_free, NULL ok). */
int rbac_engine_parse(struct cfg_ctx *c, const json_t *obj, const char *name, bool http,
		      struct rbac_engine **out);
void rbac_engine_free(struct rbac_engine *e);

/* The decision for in: true = allowed.  *policy (if not NULL) gets the name
 * of the policy that matched (owned by e), or NULL.  No allocation. */
bool rbac_engine_allowed(const struct rbac_engine *e, const struct rbac_input *in,
			 const char **policy);

/* The stats both filters keep, with Envoy's names: <scope>.rbac.<rules
 * prefix>allowed / denied and <shadow prefix>shadow_allowed / shadow_denied.
 * The leaf names depend on the configured prefixes, so the descriptor array
 * is built per config (owned by the struct). */
enum { RBAC_ALLOWED, RBAC_DENIED, RBAC_SHADOW_ALLOWED, RBAC_SHADOW_DENIED, RBAC_STATS_N };
struct rbac_stat_names {
	struct stat_desc *desc;                /* owned [RBAC_STATS_N], names owned */
};
/* Fill names for the given prefixes (either may be NULL / ""). */
void rbac_stat_names_init(struct rbac_stat_names *n, const char *rules_prefix,
			  const char *shadow_prefix);
void rbac_stat_names_free(struct rbac_stat_names *n);

#endif
