/* cp_catalog.c - the service catalog of remora-cp (--catalog FILE): a short
 * YAML description of services and listeners compiled into the Envoy
 * resources the directory format holds (clusters, endpoints, listeners,
 * routes), which then take the same encode/validate path (cp_config.c).
 * Envoy fragments the catalog passes through (route match, retry policy)
 * are the catalog's own json_t nodes, so errors inside them still resolve
 * to file:line:col.  Format: docs/control-plane.md "Service catalog". */
#include "cp.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "../../proxy/common.h"
#include "../../proxy/config/cfg.h"

#define HCM_TYPE "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
#define ROUTER_TYPE "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
#define LRL_TYPE "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit"
#define HPO_TYPE "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions"

struct cat {
	const char *file;
	const struct cfg_src *src;
	char *err;
	size_t errlen;
};

static int bad(struct cat *c, const json_t *obj, const char *key, const json_t *node,
	       const char *path, const char *fmt, ...) __attribute__((format(printf, 6, 7)));
static int bad(struct cat *c, const json_t *obj, const char *key, const json_t *node,
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
static int check_keys(struct cat *c, const json_t *obj, const char *path, const char *const *allowed)
{
	const char *k;
	json_t *v;
	if (!json_is_object(obj))
		return bad(c, NULL, NULL, obj, path, "expected a mapping");
	json_object_foreach((json_t *)obj, k, v) {
		const char *const *a;
		for (a = allowed; *a && strcmp(*a, k); a++)
			;
		if (!*a) {
			char p[300];
			snprintf(p, sizeof(p), "%s.%s", path, k);
			return bad(c, obj, k, NULL, p, "unknown field '%s'", k);
		}
	}
	return 0;
}

static const char *get_str(struct cat *c, const json_t *obj, const char *key, const char *path,
			   const char *def, int *rc)
{
	json_t *v = json_object_get(obj, key);
	if (!v) {
		if (!def)
			*rc = bad(c, NULL, NULL, obj, path, "'%s' is required", key);
		return def;
	}
	if (!json_is_string(v)) {
		*rc = bad(c, obj, key, NULL, path, "'%s' must be a string", key);
		return def;
	}
	return json_string_value(v);
}

static int service(struct cat *c, const json_t *s, size_t i, json_t *clusters, json_t *endpoints)
{
	static const char *const keys[] = { "name", "endpoints", "connect_timeout", "lb_policy",
					    "http2", NULL };
	char path[64];
	int rc = 0;
	snprintf(path, sizeof(path), "services[%zu]", i);
	if (check_keys(c, s, path, keys))
		return -1;
	const char *name = get_str(c, s, "name", path, NULL, &rc);
	const char *ct = get_str(c, s, "connect_timeout", path, "1s", &rc);
	const char *lb = get_str(c, s, "lb_policy", path, "ROUND_ROBIN", &rc);
	if (rc)
		return -1;
	json_t *cl = json_pack("{s:s, s:s, s:s, s:s, s:{s:{s:{}, s:s}}}", "name", name, "type", "EDS",
			       "connect_timeout", ct, "lb_policy", lb, "eds_cluster_config",
			       "eds_config", "ads", "resource_api_version", "V3");
	json_t *h2 = json_object_get(s, "http2");
	if (h2 && !json_is_boolean(h2)) {
		json_decref(cl);
		return bad(c, s, "http2", NULL, path, "'http2' must be true or false");
	}
	if (json_is_true(h2))
		json_object_set_new(cl, "typed_extension_protocol_options",
				    json_pack("{s:{s:s, s:{s:{}}}}",
					      "envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
					      "@type", HPO_TYPE, "explicit_http_config",
					      "http2_protocol_options"));
	json_array_append_new(clusters, cl);

	json_t *eps = json_object_get(s, "endpoints"), *lbe = json_array();
	if (eps && !json_is_array(eps)) {
		json_decref(lbe);
		return bad(c, s, "endpoints", NULL, path, "'endpoints' must be a list of host:port");
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
			return bad(c, NULL, NULL, e, p, "expected \"host:port\"");
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
	if (check_keys(c, r, path, keys))
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
			bad(c, r, "to", NULL, path, "unknown service '%s'", json_string_value(to));
			goto fail;
		}
		json_object_set(action, "cluster", to);
	} else if (json_is_object(to) && json_object_size(to)) {
		json_t *wc = json_array(), *w;
		const char *svc;
		json_object_foreach(to, svc, w) {
			if (!has_service(services, svc)) {
				json_decref(wc);
				bad(c, to, svc, NULL, path, "unknown service '%s'", svc);
				goto fail;
			}
			if (!json_is_integer(w) || json_integer_value(w) < 0) {
				json_decref(wc);
				bad(c, to, svc, NULL, path, "the weight of '%s' must be an integer >= 0", svc);
				goto fail;
			}
			json_array_append_new(wc, json_pack("{s:s, s:O}", "name", svc, "weight", w));
		}
		json_object_set_new(action, "weighted_clusters", json_pack("{s:o}", "clusters", wc));
	} else {
		bad(c, to ? r : NULL, "to", to ? NULL : r, path,
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

static int listener(struct cat *c, const json_t *l, size_t i, const json_t *services,
		    json_t *listeners, json_t *routes)
{
	static const char *const keys[] = { "name", "address", "port", "routes", "rate_limit", NULL };
	char path[64];
	int rc = 0;
	snprintf(path, sizeof(path), "listeners[%zu]", i);
	if (check_keys(c, l, path, keys))
		return -1;
	const char *name = get_str(c, l, "name", path, NULL, &rc);
	const char *addr = get_str(c, l, "address", path, "0.0.0.0", &rc);
	if (rc)
		return -1;
	json_t *port = json_object_get(l, "port");
	if (!json_is_integer(port) || json_integer_value(port) <= 0 || json_integer_value(port) > 65535)
		return bad(c, port ? l : NULL, "port", port ? NULL : l, path,
			   "'port' must be a port number");
	json_t *filters = json_array();
	json_t *rl = json_object_get(l, "rate_limit");
	if (rl) {
		static const char *const rkeys[] = { "requests_per_second", NULL };
		char p[96];
		snprintf(p, sizeof(p), "%s.rate_limit", path);
		json_t *rps = json_object_get(rl, "requests_per_second");
		if (check_keys(c, rl, p, rkeys) || !json_is_integer(rps) || json_integer_value(rps) <= 0) {
			json_decref(filters);
			return c->err[0] ? -1 : bad(c, rl, "requests_per_second", NULL, p,
						    "'requests_per_second' must be an integer > 0");
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
	json_array_append_new(listeners, json_pack(
		"{s:s, s:{s:{s:s, s:O}}, s:[{s:[{s:s, s:{s:s, s:s, s:{s:s, s:{s:{}, s:s}}, s:o}}]}]}",
		"name", name, "address", "socket_address", "address", addr, "port_value", port,
		"filter_chains", "filters", "name", "envoy.filters.network.http_connection_manager",
		"typed_config", "@type", HCM_TYPE, "stat_prefix", name, "rds", "route_config_name", name,
		"config_source", "ads", "resource_api_version", "V3", "http_filters", filters));

	json_t *rs = json_object_get(l, "routes"), *out = json_array();
	if (!json_is_array(rs)) {
		json_decref(out);
		return bad(c, rs ? l : NULL, "routes", rs ? NULL : l, path, "'routes' must be a list");
	}
	for (size_t k = 0; k < json_array_size(rs); k++) {
		char p[96];
		snprintf(p, sizeof(p), "%s.routes[%zu]", path, k);
		json_t *r = route(c, json_array_get(rs, k), p, services);
		if (!r) {
			json_decref(out);
			return -1;
		}
		json_array_append_new(out, r);
	}
	json_array_append_new(routes, json_pack("{s:s, s:[{s:s, s:[s], s:o}]}", "name", name,
						"virtual_hosts", "name", name, "domains", "*", "routes",
						out));
	return 0;
}

json_t *cp_catalog_compile(const json_t *cat, const struct cfg_src *src, const char *file,
			   char *err, size_t errlen)
{
	static const char *const keys[] = { "services", "listeners", NULL };
	struct cat c = { file, src, err, errlen };
	err[0] = 0;
	if (check_keys(&c, cat, "<catalog>", keys))
		return NULL;
	json_t *services = json_object_get(cat, "services"), *ls = json_object_get(cat, "listeners");
	if ((services && !json_is_array(services)) || (ls && !json_is_array(ls))) {
		bad(&c, cat, services && !json_is_array(services) ? "services" : "listeners", NULL,
		    "<catalog>", "'services' and 'listeners' must be lists");
		return NULL;
	}
	json_t *doc = json_pack("{s:[], s:[], s:[], s:[]}", "clusters", "endpoints", "listeners", "routes");
	for (size_t i = 0; i < json_array_size(services); i++)
		if (service(&c, json_array_get(services, i), i, json_object_get(doc, "clusters"),
			    json_object_get(doc, "endpoints")))
			goto fail;
	for (size_t i = 0; i < json_array_size(ls); i++)
		if (listener(&c, json_array_get(ls, i), i, services, json_object_get(doc, "listeners"),
			     json_object_get(doc, "routes")))
			goto fail;
	return doc;
fail:
	json_decref(doc);
	return NULL;
}
