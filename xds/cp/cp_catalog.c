/* cp_catalog.c - the service catalog of remora-cp (--catalog FILE): a short
 * YAML description of services and listeners compiled into the Envoy
 * resources the directory format holds (clusters, endpoints, listeners,
 * routes), which then take the same encode/validate path (cp_config.c).
 * Envoy fragments the catalog passes through (route match, retry policy)
 * are the catalog's own json_t nodes, so errors inside them still resolve
 * to file:line:col.  Format: docs/control-plane.md "Service catalog".
 * Authorization rules (`rules`, `allow`) are compiled by cp_catalog_authz.c;
 * this file places them, with the mTLS mode, on the inbound chains. */
#include "cp.h"
#include "cp_catalog.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "../../proxy/common.h"
#include "../../proxy/config/cfg.h"

#define HCM_TYPE "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
#define ROUTER_TYPE "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
#define LRL_TYPE "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit"
#define HPO_TYPE "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
#define RBAC_TYPE "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC"
#define UTLS_TYPE "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"
#define DTLS_TYPE "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"
#define ODST_TYPE "type.googleapis.com/envoy.extensions.filters.listener.original_dst.v3.OriginalDst"
#define NRBAC_TYPE "type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC"
#define TI_TYPE "type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector"
#define TCP_TYPE "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"

/* An SDS secret reference: `default` and `ROOTCA` are what the certificate
 * client installs in-process (docs/tls.md); over ADS otherwise. */
static json_t *sds(const char *name)
{
	return json_pack("{s:s, s:{s:{}, s:s}}", "name", name, "sds_config", "ads",
			 "resource_api_version", "V3");
}

int cat_bad(struct cat *c, const json_t *obj, const char *key, const json_t *node,
	    const char *path, const char *fmt, ...)
{
	char msg[512];
	int line = 0, col = 0;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if ((obj && !cfg_src_key_pos(c->src, obj, key, &line, &col)) ||
	    (node && !cfg_src_node_pos(c->src, node, &line, &col)))
		snprintf(c->err, c->errlen, "%s:%d:%d: %s: %s", c->file, line, col, path, msg);
	else
		snprintf(c->err, c->errlen, "%s: %s: %s", c->file, path, msg);
	return -1;
}

/* Every key of obj must be in allowed (NULL-terminated). */
json_t *cat_map(struct cat *c, const json_t *l, const char *path, cat_map_fn *fn, const void *arg)
{
	json_t *out = json_array();
	for (size_t i = 0; i < json_array_size(l); i++) {
		char p[512];
		snprintf(p, sizeof(p), "%s[%zu]", path, i);
		json_t *n = fn(c, json_array_get(l, i), p, arg);
		if (!n) {
			json_decref(out);
			return NULL;
		}
		json_array_append_new(out, n);
	}
	return out;
}

int cat_check_keys(struct cat *c, const json_t *obj, const char *path, const char *const *allowed)
{
	const char *k;
	json_t *v;
	if (!json_is_object(obj))
		return cat_bad(c, NULL, NULL, obj, path, "expected a mapping");
	json_object_foreach((json_t *)obj, k, v) {
		const char *const *a;
		for (a = allowed; *a && strcmp(*a, k); a++)
			;
		if (!*a) {
			char p[300];
			snprintf(p, sizeof(p), "%s.%s", path, k);
			return cat_bad(c, obj, k, NULL, p, "unknown field '%s'", k);
		}
	}
	return 0;
}

const char *cat_get_str(struct cat *c, const json_t *obj, const char *key, const char *path,
			const char *def, int *rc)
{
	json_t *v = json_object_get(obj, key);
	if (!v) {
		if (!def)
			*rc = cat_bad(c, NULL, NULL, obj, path, "'%s' is required", key);
		return def;
	}
	if (!json_is_string(v)) {
		*rc = cat_bad(c, obj, key, NULL, path, "'%s' must be a string", key);
		return def;
	}
	return json_string_value(v);
}

/* {namespace, serviceAccount} -> its SPIFFE ID (sa may be omitted when
 * want_sa is false: then a prefix ".../sa/"). */
int cat_spiffe(struct cat *c, const json_t *id, const char *path, bool want_sa, char *out,
	       size_t outlen)
{
	static const char *const keys[] = { "namespace", "serviceAccount", NULL };
	int rc = 0;
	if (cat_check_keys(c, id, path, keys))
		return -1;
	const char *ns = cat_get_str(c, id, "namespace", path, NULL, &rc);
	const char *sa = cat_get_str(c, id, "serviceAccount", path, want_sa ? NULL : "", &rc);
	if (rc)
		return -1;
	if (!*ns || strchr(ns, '/') || strchr(sa, '/'))
		return cat_bad(c, NULL, NULL, id, path, "namespace and serviceAccount must be non-empty "
			       "names without '/'");
	snprintf(out, outlen, "spiffe://%s/ns/%s/sa/%s", c->td, ns, sa);
	return 0;
}

static int identity(struct cat *c, const json_t *id, const char *path, char *out, size_t outlen)
{
	return cat_spiffe(c, id, path, true, out, outlen);
}

/* "STRICT" | "PERMISSIVE" | "DISABLE" (default STRICT) and "http" | "tcp"
 * (default http) of service s; -1 with c->err. */
static int service_modes(struct cat *c, const json_t *s, const char *path, enum cat_mtls *mtls,
			 bool *tcp)
{
	static const char *const modes[] = { "STRICT", "PERMISSIVE", "DISABLE" };
	int rc = 0;
	const char *m = cat_get_str(c, s, "mtls", path, "STRICT", &rc);
	const char *proto = cat_get_str(c, s, "protocol", path, "http", &rc);
	if (rc)
		return -1;
	size_t k;
	for (k = 0; k < ARRAY_SIZE(modes) && strcmp(modes[k], m); k++)
		;
	if (k == ARRAY_SIZE(modes))
		return cat_bad(c, s, "mtls", NULL, path, "'mtls' must be STRICT, PERMISSIVE or DISABLE");
	*mtls = (enum cat_mtls)k;
	if (strcmp(proto, "http") && strcmp(proto, "tcp"))
		return cat_bad(c, s, "protocol", NULL, path, "'protocol' must be http or tcp");
	*tcp = !strcmp(proto, "tcp");
	return 0;
}

static int service(struct cat *c, const json_t *s, size_t i, json_t *clusters, json_t *endpoints)
{
	static const char *const keys[] = { "name", "endpoints", "connect_timeout", "lb_policy",
					    "http2", "identity", "allow", "rules", "mtls", "protocol",
					    NULL };
	char path[64];
	int rc = 0;
	enum cat_mtls mtls = CAT_MTLS_STRICT;
	bool tcp = false;
	snprintf(path, sizeof(path), "services[%zu]", i);
	if (cat_check_keys(c, s, path, keys))
		return -1;
	const char *name = cat_get_str(c, s, "name", path, NULL, &rc);
	const char *ct = cat_get_str(c, s, "connect_timeout", path, "1s", &rc);
	const char *lb = cat_get_str(c, s, "lb_policy", path, "ROUND_ROBIN", &rc);
	if (rc || service_modes(c, s, path, &mtls, &tcp))
		return -1;
	if (json_object_get(c->authz, name))
		return cat_bad(c, s, "name", NULL, path, "service '%s' is defined twice", name);
	json_t *h2 = json_object_get(s, "http2");
	if (h2 && !json_is_boolean(h2))
		return cat_bad(c, s, "http2", NULL, path, "'http2' must be true or false");
	if (json_is_true(h2) && tcp)
		return cat_bad(c, s, "http2", NULL, path, "'http2' needs protocol: http");
	/* the authorization of its inbound listeners, kept for listener() */
	json_t *deny, *allow;
	if (cat_authz_compile(c, s, path, tcp, &deny, &allow))
		return -1;
	json_t *az = json_pack("{s:i, s:b}", "mtls", (int)mtls, "tcp", tcp);
	if (deny)
		json_object_set_new(az, "deny", deny);
	if (allow)
		json_object_set_new(az, "allow", allow);
	json_object_set_new(c->authz, name, az);

	json_t *cl = json_pack("{s:s, s:s, s:s, s:s, s:{s:{s:{}, s:s}}}", "name", name, "type", "EDS",
			       "connect_timeout", ct, "lb_policy", lb, "eds_cluster_config",
			       "eds_config", "ads", "resource_api_version", "V3");
	if (json_is_true(h2))
		json_object_set_new(cl, "typed_extension_protocol_options",
				    json_pack("{s:{s:s, s:{s:{}}}}",
					      "envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
					      "@type", HPO_TYPE, "explicit_http_config",
					      "http2_protocol_options"));
	json_t *id = json_object_get(s, "identity");
	if (id) {
		char p[96], san[512];
		snprintf(p, sizeof(p), "%s.identity", path);
		if (identity(c, id, p, san, sizeof(san))) {
			json_decref(cl);
			return -1;
		}
		/* mTLS to the service (unless it takes plaintext only): our
		 * `default` certificate, its chain checked against ROOTCA and
		 * its SPIFFE ID as the SAN */
		if (mtls != CAT_MTLS_DISABLE)
			json_object_set_new(cl, "transport_socket", json_pack(
				"{s:s, s:{s:s, s:{s:[o], s:{s:{s:[{s:s, s:{s:s}}]}, s:o}}}}",
				"name", "envoy.transport_sockets.tls", "typed_config", "@type", UTLS_TYPE,
				"common_tls_context", "tls_certificate_sds_secret_configs", sds("default"),
				"combined_validation_context", "default_validation_context",
				"match_typed_subject_alt_names", "san_type", "URI", "matcher", "exact", san,
				"validation_context_sds_secret_config", sds("ROOTCA")));
	}
	json_array_append_new(clusters, cl);

	json_t *eps = json_object_get(s, "endpoints"), *lbe = json_array();
	if (eps && !json_is_array(eps)) {
		json_decref(lbe);
		return cat_bad(c, s, "endpoints", NULL, path, "'endpoints' must be a list of host:port");
	}
	for (size_t k = 0; k < json_array_size(eps); k++) {
		const json_t *e = json_array_get(eps, k);
		const char *hp = json_string_value(e);
		const char *colon = hp ? strrchr(hp, ':') : NULL;
		char *end;
		long port = colon ? strtol(colon + 1, &end, 10) : -1;
		if (!colon || colon == hp || *end || port <= 0 || port > 65535) {
			char p[96];
			snprintf(p, sizeof(p), "%s.endpoints[%zu]", path, k);
			json_decref(lbe);
			return cat_bad(c, NULL, NULL, e, p, "expected \"host:port\"");
		}
		char host[256];
		snprintf(host, sizeof(host), "%.*s", (int)(colon - hp), hp);
		if (host[0] == '[' && host[strlen(host) - 1] == ']') {
			memmove(host, host + 1, strlen(host));
			host[strlen(host) - 1] = 0;
		}
		json_array_append_new(lbe, json_pack("{s:{s:{s:{s:s, s:I}}}}", "endpoint", "address",
						     "socket_address", "address", host, "port_value",
						     (json_int_t)port));
	}
	json_array_append_new(endpoints, json_pack("{s:s, s:[{s:o}]}", "cluster_name", name,
						   "endpoints", "lb_endpoints", lbe));
	return 0;
}

static bool has_service(const json_t *services, const char *name)
{
	for (size_t i = 0; i < json_array_size(services); i++)
		if (!strcmp(json_string_value(json_object_get(json_array_get(services, i), "name")) ?: "",
			    name))
			return true;
	return false;
}

static json_t *route(struct cat *c, const json_t *r, const char *path, const json_t *services)
{
	static const char *const keys[] = { "match", "to", "timeout", "retries", NULL };
	if (cat_check_keys(c, r, path, keys))
		return NULL;
	json_t *to = json_object_get(r, "to"), *action = json_object();
	json_t *out = json_object();
	json_t *match = json_object_get(r, "match");
	if (match)
		json_object_set(out, "match", match);   /* the catalog's node: positions */
	else
		json_object_set_new(out, "match", json_pack("{s:s}", "prefix", "/"));
	if (json_is_string(to)) {
		if (!has_service(services, json_string_value(to))) {
			cat_bad(c, r, "to", NULL, path, "unknown service '%s'", json_string_value(to));
			goto fail;
		}
		json_object_set(action, "cluster", to);
	} else if (json_is_object(to) && json_object_size(to)) {
		json_t *wc = json_array(), *w;
		const char *svc;
		json_object_foreach(to, svc, w) {
			if (!has_service(services, svc)) {
				json_decref(wc);
				cat_bad(c, to, svc, NULL, path, "unknown service '%s'", svc);
				goto fail;
			}
			if (!json_is_integer(w) || json_integer_value(w) < 0) {
				json_decref(wc);
				cat_bad(c, to, svc, NULL, path, "the weight of '%s' must be an integer >= 0", svc);
				goto fail;
			}
			json_array_append_new(wc, json_pack("{s:s, s:O}", "name", svc, "weight", w));
		}
		json_object_set_new(action, "weighted_clusters", json_pack("{s:o}", "clusters", wc));
	} else {
		cat_bad(c, to ? r : NULL, "to", to ? NULL : r, path,
		    "'to' must name a service or map services to weights");
		goto fail;
	}
	if (json_object_get(r, "timeout"))
		json_object_set(action, "timeout", json_object_get(r, "timeout"));
	if (json_object_get(r, "retries"))
		json_object_set(action, "retry_policy", json_object_get(r, "retries"));
	json_object_set_new(out, "route", action);
	return out;
fail:
	json_decref(action);
	json_decref(out);
	return NULL;
}

/* The `to` of a TCP listener (a service, or services to weights) -> its
 * tcp_proxy network filter (new reference), NULL with c->err. */
static json_t *tcp_proxy(struct cat *c, const json_t *l, const char *name, const char *path,
			 const json_t *services)
{
	json_t *to = json_object_get(l, "to");
	json_t *tp = json_pack("{s:s, s:s}", "@type", TCP_TYPE, "stat_prefix", name);
	if (json_is_string(to)) {
		if (!has_service(services, json_string_value(to))) {
			cat_bad(c, l, "to", NULL, path, "unknown service '%s'", json_string_value(to));
			goto fail;
		}
		json_object_set(tp, "cluster", to);
	} else if (json_is_object(to) && json_object_size(to)) {
		json_t *wc = json_array(), *w;
		const char *svc;
		json_object_foreach(to, svc, w) {
			if (!has_service(services, svc) || !json_is_integer(w) ||
			    json_integer_value(w) < 0) {
				json_decref(wc);
				if (!has_service(services, svc))
					cat_bad(c, to, svc, NULL, path, "unknown service '%s'", svc);
				else
					cat_bad(c, to, svc, NULL, path, "the weight of '%s' must be an "
						"integer >= 0", svc);
				goto fail;
			}
			if (json_integer_value(w))   /* tcp_proxy's weights are >= 1 */
				json_array_append_new(wc, json_pack("{s:s, s:O}", "name", svc, "weight", w));
		}
		if (!json_array_size(wc)) {
			json_decref(wc);
			cat_bad(c, l, "to", NULL, path, "at least one weight must be > 0");
			goto fail;
		}
		json_object_set_new(tp, "weighted_clusters", json_pack("{s:o}", "clusters", wc));
	} else {
		cat_bad(c, l, "to", NULL, path, "'to' must name a service or map services to weights");
		goto fail;
	}
	return json_pack("{s:s, s:o}", "name", "envoy.filters.network.tcp_proxy", "typed_config", tp);
fail:
	json_decref(tp);
	return NULL;
}

static json_t *http_rbac(const json_t *rules, const char *stat_prefix)
{
	return json_pack("{s:s, s:{s:s, s:s, s:O}}", "name", "envoy.filters.http.rbac",
			 "typed_config", "@type", RBAC_TYPE, "rules_stat_prefix", stat_prefix,
			 "rules", rules);
}

static json_t *net_rbac(const json_t *rules, const char *stat_prefix)
{
	return json_pack("{s:s, s:{s:s, s:s, s:O}}", "name", "envoy.filters.network.rbac",
			 "typed_config", "@type", NRBAC_TYPE, "stat_prefix", stat_prefix, "rules",
			 rules);
}

/* The HTTP filters of an HTTP listener: the service's RBAC DENY then ALLOW
 * filters, the local rate limit, the router (new reference). */
static json_t *http_filters(struct cat *c, const json_t *l, const char *name, const char *path,
			    const json_t *az)
{
	json_t *filters = json_array();
	if (az && json_object_get(az, "deny"))
		json_array_append_new(filters, http_rbac(json_object_get(az, "deny"), "catalog_deny."));
	if (az && json_object_get(az, "allow"))
		json_array_append_new(filters, http_rbac(json_object_get(az, "allow"), "catalog."));
	json_t *rl = json_object_get(l, "rate_limit");
	if (rl) {
		static const char *const rkeys[] = { "requests_per_second", NULL };
		char p[96];
		snprintf(p, sizeof(p), "%s.rate_limit", path);
		json_t *rps = json_object_get(rl, "requests_per_second");
		if (cat_check_keys(c, rl, p, rkeys) || !json_is_integer(rps) ||
		    json_integer_value(rps) <= 0) {
			json_decref(filters);
			if (!c->err[0])
				cat_bad(c, rl, "requests_per_second", NULL, p,
					"'requests_per_second' must be an integer > 0");
			return NULL;
		}
		json_array_append_new(filters, json_pack(
			"{s:s, s:{s:s, s:s, s:{s:O, s:O, s:s}, s:{s:{s:i, s:s}, s:s}, s:{s:{s:i, s:s}, s:s}}}",
			"name", "envoy.filters.http.local_ratelimit", "typed_config", "@type", LRL_TYPE,
			"stat_prefix", name, "token_bucket", "max_tokens", rps, "tokens_per_fill", rps,
			"fill_interval", "1s", "filter_enabled", "default_value", "numerator", 100,
			"denominator", "HUNDRED", "runtime_key", "rl_enabled", "filter_enforced",
			"default_value", "numerator", 100, "denominator", "HUNDRED", "runtime_key",
			"rl_enforced"));
	}
	json_array_append_new(filters, json_pack("{s:s, s:{s:s}}", "name", "envoy.filters.http.router",
						 "typed_config", "@type", ROUTER_TYPE));
	return filters;
}

/* The network filters of one filter chain (new reference), NULL with c->err:
 * HTTP: the connection manager with RDS; TCP: the service's network RBAC
 * DENY then ALLOW filters (stats tcp.<name>.deny.rbac.* and
 * tcp.<name>.rbac.*), then tcp_proxy. */
static json_t *chain_filters(struct cat *c, const json_t *l, const char *name, const char *path,
			     const json_t *services, const json_t *az, bool tcp)
{
	if (!tcp) {
		json_t *hf = http_filters(c, l, name, path, az);
		if (!hf)
			return NULL;
		return json_pack("[{s:s, s:{s:s, s:s, s:{s:s, s:{s:{}, s:s}}, s:o}}]",
				 "name", "envoy.filters.network.http_connection_manager",
				 "typed_config", "@type", HCM_TYPE, "stat_prefix", name, "rds",
				 "route_config_name", name, "config_source", "ads",
				 "resource_api_version", "V3", "http_filters", hf);
	}
	json_t *tp = tcp_proxy(c, l, name, path, services), *nf = json_array();
	if (!tp) {
		json_decref(nf);
		return NULL;
	}
	char sp[300];
	if (az && json_object_get(az, "deny")) {
		snprintf(sp, sizeof(sp), "tcp.%s.deny", name);
		json_array_append_new(nf, net_rbac(json_object_get(az, "deny"), sp));
	}
	if (az && json_object_get(az, "allow")) {
		snprintf(sp, sizeof(sp), "tcp.%s", name);
		json_array_append_new(nf, net_rbac(json_object_get(az, "allow"), sp));
	}
	json_array_append_new(nf, tp);
	return nf;
}

/* The filter chains of a listener (new reference) for the service's mTLS
 * mode: STRICT one chain requiring a client certificate; PERMISSIVE that
 * chain for transport_protocol tls plus a plaintext one for raw_buffer (the
 * listener needs tls_inspector, as Istio's virtualInbound); DISABLE one
 * plaintext chain.  Not a service's inbound listener (az NULL): plaintext. */
static json_t *chains(json_t *filters, enum cat_mtls mode, bool inbound)
{
	json_t *chain = json_pack("{s:o}", "filters", filters);
	if (!inbound || mode == CAT_MTLS_DISABLE)
		return json_pack("[o]", chain);
	json_t *raw = mode == CAT_MTLS_PERMISSIVE ? json_deep_copy(chain) : NULL;
	json_object_set_new(chain, "transport_socket", json_pack(
		"{s:s, s:{s:s, s:{s:[o], s:o}, s:b}}", "name", "envoy.transport_sockets.tls",
		"typed_config", "@type", DTLS_TYPE, "common_tls_context",
		"tls_certificate_sds_secret_configs", sds("default"),
		"validation_context_sds_secret_config", sds("ROOTCA"),
		"require_client_certificate", 1));
	if (!raw)
		return json_pack("[o]", chain);
	json_object_set_new(chain, "filter_chain_match", json_pack("{s:s}", "transport_protocol",
								   "tls"));
	json_object_set_new(raw, "filter_chain_match", json_pack("{s:s}", "transport_protocol",
								 "raw_buffer"));
	return json_pack("[o, o]", chain, raw);
}

static json_t *tls_inspector(void)
{
	return json_pack("{s:s, s:{s:s}}", "name", "envoy.filters.listener.tls_inspector",
			 "typed_config", "@type", TI_TYPE);
}

static json_t *route_elem(struct cat *c, const json_t *r, const char *path, const void *services)
{
	return route(c, r, path, services);
}

/* The route configuration of an HTTP listener (new reference). */
static json_t *route_config(struct cat *c, const json_t *l, const char *name, const char *path,
			    const json_t *services)
{
	json_t *rs = json_object_get(l, "routes"), *out;
	char p[400];
	if (!json_is_array(rs)) {
		cat_bad(c, l, "routes", NULL, path, "'routes' must be a list");
		return NULL;
	}
	snprintf(p, sizeof(p), "%s.routes", path);
	if (!(out = cat_map(c, rs, p, route_elem, services)))
		return NULL;
	return json_pack("{s:s, s:[{s:s, s:[s], s:o}]}", "name", name, "virtual_hosts", "name",
			 name, "domains", "*", "routes", out);
}

/* nodes: a non-empty list of names, or absent. */
static int check_nodes(struct cat *c, const json_t *l, const char *path)
{
	json_t *nodes = json_object_get(l, "nodes");
	if (nodes && (!json_is_array(nodes) || !json_array_size(nodes)))
		return cat_bad(c, l, "nodes", NULL, path, "'nodes' must be a non-empty list of node "
			       "cluster or node id names");
	for (size_t k = 0; k < json_array_size(nodes); k++)
		if (!json_is_string(json_array_get(nodes, k)) ||
		    !*json_string_value(json_array_get(nodes, k)))
			return cat_bad(c, NULL, NULL, json_array_get(nodes, k), path,
				       "'nodes' entries must be names");
	return 0;
}

static int listener(struct cat *c, const json_t *l, size_t i, const json_t *services,
		    json_t *listeners, json_t *routes)
{
	static const char *const keys[] = { "name", "address", "port", "routes", "to", "rate_limit",
					    "service", "bind", "nodes", NULL };
	char path[64];
	int rc = 0;
	snprintf(path, sizeof(path), "listeners[%zu]", i);
	if (cat_check_keys(c, l, path, keys))
		return -1;
	const char *name = cat_get_str(c, l, "name", path, NULL, &rc);
	const char *addr = cat_get_str(c, l, "address", path, "0.0.0.0", &rc);
	if (rc)
		return -1;
	json_t *port = json_object_get(l, "port");
	if (!json_is_integer(port) || json_integer_value(port) <= 0 || json_integer_value(port) > 65535)
		return cat_bad(c, port ? l : NULL, "port", port ? NULL : l, path,
			       "'port' must be a port number");
	json_t *bind = json_object_get(l, "bind");
	if (bind && !json_is_boolean(bind))
		return cat_bad(c, l, "bind", NULL, path, "'bind' must be true or false");
	if (check_nodes(c, l, path))
		return -1;
	/* HTTP (`routes`) or TCP (`to`) */
	bool has_routes = json_object_get(l, "routes") != NULL, tcp = json_object_get(l, "to") != NULL;
	if (has_routes == tcp)
		return cat_bad(c, has_routes ? l : NULL, "to", has_routes ? NULL : l, path,
			       "give 'routes' (an HTTP listener) or 'to' (a TCP listener)%s",
			       has_routes ? ", not both" : "");
	if (tcp && json_object_get(l, "rate_limit"))
		return cat_bad(c, l, "rate_limit", NULL, path, "'rate_limit' needs an HTTP listener "
			       "('routes')");
	/* inbound for a service: its mTLS mode, its rules as RBAC */
	json_t *svcname = json_object_get(l, "service");
	const json_t *az = NULL;
	enum cat_mtls mode = CAT_MTLS_STRICT;
	if (svcname) {
		az = json_is_string(svcname) ? json_object_get(c->authz, json_string_value(svcname))
					     : NULL;
		if (!az)
			return cat_bad(c, l, "service", NULL, path, "unknown service '%s'",
				       json_string_value(svcname) ?: "");
		mode = (enum cat_mtls)json_integer_value(json_object_get(az, "mtls"));
		if (json_is_true(json_object_get(az, "tcp")) != tcp)
			return cat_bad(c, l, "service", NULL, path, "service '%s' is protocol: %s, its "
				       "listener needs '%s'", json_string_value(svcname),
				       tcp ? "http" : "tcp", tcp ? "routes" : "to");
	}
	json_t *nf = chain_filters(c, l, name, path, services, az, tcp);
	if (!nf)
		return -1;
	json_t *rc_ = NULL;
	if (!tcp && !(rc_ = route_config(c, l, name, path, services))) {
		json_decref(nf);
		return -1;
	}
	json_t *fcs = chains(nf, mode, az != NULL), *lis = NULL;
	if (az && c->inbound) {
		/* with a sidecar inbound port: filter chains of virtualInbound
		 * for the original destination port */
		json_t *fc;
		size_t k;
		json_array_foreach(fcs, k, fc) {
			json_t *m = json_object_get(fc, "filter_chain_match");
			if (!m)
				json_object_set_new(fc, "filter_chain_match", m = json_object());
			json_object_set(m, "destination_port", port);
			json_array_append(json_object_get(c->inbound, "filter_chains"), fc);
		}
		json_decref(fcs);
		c->inbound_tls_inspector |= mode == CAT_MTLS_PERMISSIVE;
	} else {
		lis = json_pack("{s:s, s:{s:{s:s, s:O}}, s:o}", "name", name, "address",
				"socket_address", "address", addr, "port_value", port,
				"filter_chains", fcs);
		if (az && mode == CAT_MTLS_PERMISSIVE)
			json_object_set_new(lis, "listener_filters", json_pack("[o]", tls_inspector()));
		if (json_is_false(bind))
			json_object_set_new(lis, "bind_to_port", json_false());
	}
	json_t *nodes = json_object_get(l, "nodes");
	if (!nodes || !lis) {   /* a chain of virtualInbound: every node has it */
		if (lis)
			json_array_append_new(listeners, lis);
		if (rc_)
			json_array_append_new(routes, rc_);
		return 0;
	}
	/* placed on some nodes only (by node.cluster or node.id) */
	for (size_t k = 0; k < json_array_size(nodes); k++) {
		const char *nn = json_string_value(json_array_get(nodes, k));
		json_t *nd = json_object_get(c->nodes, nn);
		if (!nd) {
			nd = json_pack("{s:[], s:[]}", "listeners", "routes");
			json_object_set_new(c->nodes, nn, nd);
		}
		json_array_append(json_object_get(nd, "listeners"), lis);
		if (rc_)
			json_array_append(json_object_get(nd, "routes"), rc_);
	}
	json_decref(lis);
	json_decref(rc_);
	return 0;
}

static json_t *port_of(struct cat *c, const json_t *obj, const char *key, const char *path)
{
	json_t *p = json_object_get(obj, key);
	if (p && (!json_is_integer(p) || json_integer_value(p) <= 0 || json_integer_value(p) > 65535)) {
		cat_bad(c, obj, key, NULL, path, "'%s' must be a port number", key);
		return NULL;
	}
	return p;
}

/* sidecar: {outbound_port: 15001, inbound_port: 15006}: the capture
 * listeners of a sidecar behind remora-init.  virtualOutbound takes the
 * redirected outbound connections and hands them to the listener of their
 * original destination (catalog listeners with `bind: false`), else tunnels
 * them to it (PassthroughCluster); virtualInbound holds one filter chain per
 * inbound catalog listener (`service:`), matched on the original port. */
static int sidecar(struct cat *c, const json_t *sc, json_t *doc)
{
	static const char *const keys[] = { "outbound_port", "inbound_port", NULL };
	const char *path = "sidecar";
	if (cat_check_keys(c, sc, path, keys))
		return -1;
	json_t *op = port_of(c, sc, "outbound_port", path), *ip = NULL;
	if (c->err[0] || (ip = port_of(c, sc, "inbound_port", path), c->err[0]))
		return -1;
	json_t *odst = json_pack("[{s:s, s:{s:s}}]", "name", "envoy.filters.listener.original_dst",
				 "typed_config", "@type", ODST_TYPE);
	if (op) {
		json_array_append_new(json_object_get(doc, "clusters"), json_pack(
			"{s:s, s:s, s:s, s:s}", "name", "PassthroughCluster", "type", "ORIGINAL_DST",
			"lb_policy", "CLUSTER_PROVIDED", "connect_timeout", "2s"));
		json_array_append_new(json_object_get(doc, "listeners"), json_pack(
			"{s:s, s:{s:{s:s, s:O}}, s:b, s:O, s:[{s:[{s:s, s:{s:s, s:s, s:s}}]}]}",
			"name", "virtualOutbound", "address", "socket_address", "address", "0.0.0.0",
			"port_value", op, "use_original_dst", 1, "listener_filters", odst,
			"filter_chains", "filters", "name", "envoy.filters.network.tcp_proxy",
			"typed_config", "@type", TCP_TYPE, "stat_prefix", "PassthroughCluster",
			"cluster", "PassthroughCluster"));
	}
	if (ip)
		c->inbound = json_pack("{s:s, s:{s:{s:s, s:O}}, s:O, s:[]}", "name", "virtualInbound",
				       "address", "socket_address", "address", "0.0.0.0",
				       "port_value", ip, "listener_filters", odst, "filter_chains");
	json_decref(odst);
	return 0;
}

json_t *cp_catalog_compile(const json_t *cat, const struct cfg_src *src, const char *file,
			   char *err, size_t errlen)
{
	static const char *const keys[] = { "services", "listeners", "trust_domain", "sidecar", NULL };
	struct cat c = { .file = file, .src = src, .err = err, .errlen = errlen,
			 .td = "cluster.local", .authz = json_object() };
	int rc = 0;
	err[0] = 0;
	if (cat_check_keys(&c, cat, "<catalog>", keys))
		return NULL;
	c.td = cat_get_str(&c, cat, "trust_domain", "<catalog>", "cluster.local", &rc);
	if (rc)
		return NULL;
	if (!*c.td || strchr(c.td, '/')) {
		cat_bad(&c, cat, "trust_domain", NULL, "<catalog>", "'trust_domain' must be a domain name");
		return NULL;
	}
	json_t *services = json_object_get(cat, "services"), *ls = json_object_get(cat, "listeners");
	if ((services && !json_is_array(services)) || (ls && !json_is_array(ls))) {
		cat_bad(&c, cat, services && !json_is_array(services) ? "services" : "listeners", NULL,
		    "<catalog>", "'services' and 'listeners' must be lists");
		return NULL;
	}
	json_t *doc = json_pack("{s:[], s:[], s:[], s:[], s:{}}", "clusters", "endpoints", "listeners",
				"routes", "nodes");
	c.nodes = json_object_get(doc, "nodes");
	json_t *sc = json_object_get(cat, "sidecar");
	if (sc && sidecar(&c, sc, doc))
		goto fail;
	for (size_t i = 0; i < json_array_size(services); i++)
		if (service(&c, json_array_get(services, i), i, json_object_get(doc, "clusters"),
			    json_object_get(doc, "endpoints")))
			goto fail;
	for (size_t i = 0; i < json_array_size(ls); i++)
		if (listener(&c, json_array_get(ls, i), i, services, json_object_get(doc, "listeners"),
			     json_object_get(doc, "routes")))
			goto fail;
	if (c.inbound && c.inbound_tls_inspector) {
		/* a PERMISSIVE chain: tell TLS from plaintext after original_dst
		 * (a copy: virtualOutbound shares the original_dst list) */
		json_t *lf = json_copy(json_object_get(c.inbound, "listener_filters"));
		json_array_append_new(lf, tls_inspector());
		json_object_set_new(c.inbound, "listener_filters", lf);
	}
	if (c.inbound)
		json_array_append(json_object_get(doc, "listeners"), c.inbound);
	json_decref(c.inbound);
	json_decref(c.authz);
	return doc;
fail:
	json_decref(c.inbound);
	json_decref(c.authz);
	json_decref(doc);
	return NULL;
}
