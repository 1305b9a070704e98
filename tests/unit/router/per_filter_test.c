/* per_filter_test.c - typed_per_filter_config: resolution against the HTTP
 * filter chain, route > virtual host > route configuration precedence,
 * FilterConfig {disabled, config, is_optional}, and config errors at their
 * exact path (through the whole bootstrap compiler). */
#include "test.h"
#include "bootstrap_helper.h"
#include "proxy/server.h"
#include "proxy/filter.h"
#include "proxy/snapshot.h"
#include "proxy/router/route.h"
#include "proxy/config/yaml_json.h"
#include "filters/http/fault/fault.h"

/* ---- route table level ------------------------------------------------------ */

static char last_err[1024];

/* The chain: fault ("f"), local_ratelimit ("rl"), router. */
static const char *const chain_names[] = { "f", "rl", "envoy.filters.http.router" };

static struct route_config *compile_rc(const char *text, struct stats_store *st)
{
	char *s = strdup(text);
	json_error_t je;
	struct cfg_ctx c;
	struct build_ctx b = { .stats = st };
	const struct http_filter_ops *ops[3] = {
		http_filter_find("envoy.filters.http.fault", NULL),
		http_filter_find("envoy.filters.http.local_ratelimit", NULL),
		http_filter_find("envoy.filters.http.router", NULL),
	};
	struct route_filters rf = { chain_names, ops, 3, &b };

	for (char *p = s; *p; p++)
		if (*p == '\'')
			*p = '"';
	json_t *j = json_loads(s, 0, &je);
	free(s);
	if (!j) {
		fprintf(stderr, "  test bug: bad JSON: %s\n", je.text);
		test_failed_checks++;
		return NULL;
	}
	cfg_init(&c, NULL, NULL);
	struct route_config *rc = route_config_compile(&c, j, &rf);
	snprintf(last_err, sizeof(last_err), "%s", c.err);
	json_decref(j);
	return rc;
}

static const struct route_entry *match(const struct route_config *rc, const char *host,
				       const char *path)
{
	struct http_headers h;
	const struct virtual_host *vh;
	hdrs_init(&h);
	hdrs_add(&h, ":authority", 10, host, strlen(host));
	hdrs_add(&h, ":path", 5, path, strlen(path));
	hdrs_add(&h, ":method", 7, "GET", 3);
	const struct route_entry *re = route_match(rc, &h, &vh);
	hdrs_free(&h);
	return re;
}

#define FAULT(code) "{'@type': '" FAULT_TYPE "', 'abort': {'http_status': " #code \
	", 'percentage': {'numerator': 100}}}"
#define FC "type.googleapis.com/envoy.config.route.v3.FilterConfig"

static const char *const table =
	"{'name': 'rc', 'typed_per_filter_config': {'f': " FAULT(501) "},"
	" 'virtual_hosts': ["
	"  {'name': 'a', 'domains': ['a'], 'typed_per_filter_config': {'f': " FAULT(502) "},"
	"   'routes': ["
	"    {'match': {'prefix': '/own'}, 'route': {'cluster': 'c'},"
	"     'typed_per_filter_config': {'f': " FAULT(503) "}},"
	"    {'match': {'prefix': '/off'}, 'route': {'cluster': 'c'},"
	"     'typed_per_filter_config': {'f': {'@type': '" FC "', 'disabled': true}}},"
	"    {'match': {'prefix': '/'}, 'route': {'cluster': 'c'}}]},"
	"  {'name': 'b', 'domains': ['b'], 'routes': ["
	"    {'match': {'prefix': '/rl'}, 'route': {'cluster': 'c'},"
	"     'typed_per_filter_config': {'rl': {'@type': 'type.googleapis.com/envoy.extensions."
	"filters.http.local_ratelimit.v3.LocalRateLimit', 'stat_prefix': 'per_route',"
	"      'token_bucket': {'max_tokens': 1, 'fill_interval': '60s'}},"
	"      'not_in_chain': {'@type': '" FC "', 'disabled': true}}},"
	"    {'match': {'prefix': '/'}, 'route': {'cluster': 'c'}}]}]}";

static uint32_t abort_of(const struct route_entry *re)
{
	if (!re || !re->filter_cfgs || re->filter_cfgs[0].state != ROUTE_FILTER_ENABLED ||
	    !re->filter_cfgs[0].cfg)
		return 0;
	return ((const struct fault_cfg *)re->filter_cfgs[0].cfg)->abort_http;
}

TEST(per_filter_most_specific_wins)
{
	struct stats_store *st = stats_store_new(1);
	struct route_config *rc = compile_rc(table, st);
	CHECK_STR(last_err, "");
	CHECK(rc != NULL);
	if (!rc) {
		stats_store_free(st);
		return;
	}
	CHECK_INT(abort_of(match(rc, "a", "/own")), 503);   /* route */
	CHECK_INT(abort_of(match(rc, "a", "/x")), 502);     /* virtual host */
	CHECK_INT(abort_of(match(rc, "b", "/x")), 501);     /* route configuration */
	const struct route_entry *off = match(rc, "a", "/off");
	CHECK(off && off->filter_cfgs && off->filter_cfgs[0].state == ROUTE_FILTER_DISABLED);
	CHECK(off && off->filter_cfgs && off->filter_cfgs[0].cfg == NULL);
	const struct route_entry *rl = match(rc, "b", "/rl");
	CHECK(rl && rl->filter_cfgs && rl->filter_cfgs[1].state == ROUTE_FILTER_ENABLED &&
	      rl->filter_cfgs[1].cfg != NULL);
	CHECK_INT(abort_of(rl), 501);                       /* other filters still inherit */
	CHECK(rl && rl->filter_cfgs && rl->filter_cfgs[2].state == ROUTE_FILTER_UNSET);
	route_config_free(rc);   /* frees every per-route config (ASan) */
	stats_store_free(st);
}

TEST(per_filter_no_config_anywhere)
{
	struct stats_store *st = stats_store_new(1);
	struct route_config *rc = compile_rc(
		"{'virtual_hosts': [{'name': 'a', 'domains': ['*'], 'routes': "
		"[{'match': {'prefix': '/'}, 'route': {'cluster': 'c'}, "
		"'typed_per_filter_config': {}}]}]}", st);
	CHECK(rc != NULL);
	const struct route_entry *re = rc ? match(rc, "x", "/") : NULL;
	CHECK(re && re->filter_cfgs == NULL);   /* nothing allocated for the route */
	route_config_free(rc);
	stats_store_free(st);
}

TEST(per_filter_enable_and_optional)
{
	struct stats_store *st = stats_store_new(1);
	struct route_config *rc = compile_rc(
		"{'virtual_hosts': [{'name': 'a', 'domains': ['*'], 'routes': "
		"[{'match': {'prefix': '/'}, 'route': {'cluster': 'c'}, "
		"'typed_per_filter_config': {'f': {'@type': '" FC "', 'config': {}},"
		" 'rl': {'@type': '" FC "', 'is_optional': true, 'config': "
		"{'@type': 'type.googleapis.com/some.unknown.Filter'}}}}]}]}", st);
	CHECK_STR(last_err, "");
	const struct route_entry *re = rc ? match(rc, "x", "/") : NULL;
	CHECK(re && re->filter_cfgs && re->filter_cfgs[0].state == ROUTE_FILTER_ENABLED &&
	      re->filter_cfgs[0].cfg == NULL);
	CHECK(re && re->filter_cfgs && re->filter_cfgs[1].state == ROUTE_FILTER_UNSET);
	route_config_free(rc);
	stats_store_free(st);
}

TEST(per_filter_needs_a_chain)
{
	struct cfg_ctx c;
	json_t *j = json_loads("{\"typed_per_filter_config\": {\"f\": {}}}", 0, NULL);
	cfg_init(&c, NULL, NULL);
	CHECK(route_config_compile(&c, j, NULL) == NULL);
	CHECK_STR(c.err, "typed_per_filter_config: not supported here (no HTTP filter chain)");
	json_decref(j);
}

/* ---- through the bootstrap (HCM) ---------------------------------------------- */


static void expect(const char *yaml, const char *msg)
{
	char err[1024];
	bool ok = test_bootstrap_ok(yaml, err, sizeof(err));
	CHECK(msg[0] ? !ok : ok);
	CHECK_STR(err, msg);
}

#define HEAD \
	"static_resources:\n" \
	"  clusters:\n" \
	"  - name: b\n" \
	"    load_assignment: {endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: 9}}}}]}]}\n" \
	"  listeners:\n" \
	"  - address: {socket_address: {address: 127.0.0.1, port_value: 1}}\n" \
	"    filter_chains:\n" \
	"    - filters:\n" \
	"      - name: envoy.filters.network.http_connection_manager\n" \
	"        typed_config:\n" \
	"          \"@type\": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager\n" \
	"          stat_prefix: in\n" \
	"          http_filters:\n" \
	"          - name: fault\n" \
	"            typed_config: {\"@type\": " FAULT_TYPE "}\n" \
	"          - name: envoy.filters.http.router\n" \
	"            typed_config: {\"@type\": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}\n" \
	"          route_config:\n" \
	"            virtual_hosts:\n" \
	"            - name: v\n" \
	"              domains: [\"*\"]\n" \
	"              routes:\n" \
	"              - match: {prefix: /}\n" \
	"                route: {cluster: b}\n" \
	"                typed_per_filter_config:\n"
#define VH_PATH "static_resources.listeners[0].filter_chains[0].filters[0].typed_config." \
	"route_config.virtual_hosts[0]"
#define RT_PATH VH_PATH ".routes[0].typed_per_filter_config"

TEST(per_filter_good_bootstrap)
{
	expect(HEAD
	       "                  fault: {\"@type\": " FAULT_TYPE ", abort: {http_status: 503}}\n"
	       "                  elsewhere: {\"@type\": " FAULT_TYPE "}\n", "");
}

TEST(per_filter_unknown_type)
{
	expect(HEAD "                  fault: {\"@type\": type.googleapis.com/x.Y}\n",
	       "t.yaml:26:19: " RT_PATH ".fault: no registered HTTP filter for 'fault' with type "
	       "URL 'type.googleapis.com/x.Y'");
}

TEST(per_filter_filter_without_per_route_support)
{
	expect(HEAD "                  envoy.filters.http.router: {\"@type\": "
	       "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}\n",
	       "t.yaml:26:19: " RT_PATH ".envoy.filters.http.router: the HTTP filter "
	       "envoy.filters.http.router does not support virtual host or route specific "
	       "configuration");
}

TEST(per_filter_bad_config)
{
	expect(HEAD "                  fault: {\"@type\": " FAULT_TYPE ", abort: {http_status: 99}}\n",
	       "t.yaml:26:114: " RT_PATH ".fault.abort.http_status: must be in 200..599");
}

TEST(per_filter_wrong_type_for_name)
{
	expect(HEAD "                  fault: {\"@type\": type.googleapis.com/envoy.extensions.filters."
	       "http.local_ratelimit.v3.LocalRateLimit, stat_prefix: x}\n",
	       "t.yaml:26:19: " RT_PATH ".fault: the HTTP filter named 'fault' is "
	       "envoy.filters.http.fault, not envoy.filters.http.local_ratelimit");
}

TEST(per_filter_config_required)
{
	expect(HEAD "                  fault: {\"@type\": " FC "}\n",
	       "t.yaml:26:19: " RT_PATH ".fault: empty per-route configuration for filter 'fault' "
	       "(set config, or disabled: true)");
}

TEST(per_filter_router_cannot_be_disabled)
{
	expect(HEAD "                  envoy.filters.http.router: {\"@type\": " FC ", disabled: true}\n",
	       "t.yaml:26:19: " RT_PATH ".envoy.filters.http.router: the terminal filter "
	       "envoy.filters.http.router cannot be disabled");
}

TEST(per_filter_unknown_field_in_filter_config)
{
	expect(HEAD "                  fault: {\"@type\": " FC ", disable: true}\n",
	       "t.yaml:26:92: " RT_PATH ".fault.disable: unknown field 'disable'");
}

TEST(per_filter_vhost_level_error_path)
{
	/* an unknown name is accepted (Envoy), but its config is still checked */
	expect(HEAD "                  fault: {\"@type\": " FC ", disabled: true}\n"
	       "              typed_per_filter_config:\n"
	       "                nope: {\"@type\": " FAULT_TYPE ", delay: {}}\n",
	       "t.yaml:28:103: " VH_PATH ".typed_per_filter_config.nope.delay: one of "
	       "'fixed_delay' or 'header_delay' is required");
}

#define HCM_ONLY_ROUTER_DISABLED \
	"static_resources:\n" \
	"  listeners:\n" \
	"  - address: {socket_address: {address: 127.0.0.1, port_value: 1}}\n" \
	"    filter_chains:\n" \
	"    - filters:\n" \
	"      - name: envoy.filters.network.http_connection_manager\n" \
	"        typed_config:\n" \
	"          \"@type\": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager\n" \
	"          stat_prefix: in\n" \
	"          http_filters:\n" \
	"          - name: envoy.filters.http.router\n" \
	"            disabled: true\n" \
	"            typed_config: {\"@type\": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}\n" \
	"          route_config: {}\n"

TEST(per_filter_router_http_filter_cannot_be_disabled)
{
	expect(HCM_ONLY_ROUTER_DISABLED,
	       "t.yaml:12:13: static_resources.listeners[0].filter_chains[0].filters[0].typed_config."
	       "http_filters[0].disabled: the terminal filter envoy.filters.http.router cannot be "
	       "disabled");
}

TEST(per_filter_http_filter_disabled_must_be_bool)
{
	char y[4096];
	snprintf(y, sizeof(y), "%s", HEAD "                  fault: {\"@type\": " FC ", disabled: true}\n");
	char *p = strstr(y, "          - name: fault\n");
	CHECK(p != NULL);
	if (!p)
		return;
	/* insert "disabled: 3" after the filter's name line */
	char rest[4096];
	p += strlen("          - name: fault\n");
	snprintf(rest, sizeof(rest), "%s", p);
	snprintf(p, sizeof(y) - (size_t)(p - y), "            disabled: 3\n%s", rest);
	expect(y, "t.yaml:15:13: static_resources.listeners[0].filter_chains[0].filters[0]."
		  "typed_config.http_filters[0].disabled: expected true or false");
}
