/* ratelimit_action_test.c - RateLimit actions: parsing and descriptors
 * (proxy/router/ratelimit_action.h), and the route table hook. */
#include "test.h"

#include <stdarg.h>

#include "proxy/router/ratelimit_action.h"
#include "proxy/router/route.h"

static char last_err[1024];

/* JSON text with ' for " -> json_t (caller decrefs). */
static json_t *jload(const char *text)
{
	char *s = strdup(text);
	json_error_t je;
	for (char *p = s; *p; p++)
		if (*p == '\'')
			*p = '"';
	json_t *j = json_loads(s, 0, &je);
	if (!j) {
		fprintf(stderr, "  test bug: bad JSON: %s\n%s\n", je.text, s);
		test_failed_checks++;
	}
	free(s);
	return j;
}

/* Compile {'rate_limits': [...]} text; NULL with last_err on error (or when
 * the list is empty). */
static struct rl_policy_list *compile(const char *text, bool *ok)
{
	json_t *j = jload(text);
	struct cfg_ctx c;
	struct rl_policy_list *l = NULL;
	cfg_init(&c, NULL, NULL);
	int rc = j ? rl_policy_list_compile(&c, j, "rate_limits", &l) : RM_ERROR;
	snprintf(last_err, sizeof(last_err), "%s", c.err);
	CHECK_INT(c.depth, 0);
	if (ok)
		*ok = rc == RM_OK;
	json_decref(j);
	return l;
}

static const char *compile_err(const char *text)
{
	bool ok;
	struct rl_policy_list *l = compile(text, &ok);
	CHECK(!ok);
	rl_policy_list_free(l);
	return last_err;
}

/* Descriptors rendered as "k=v,k=v;k=v" (one ';' after each). */
struct out {
	char s[512];
	size_t len;
};

static bool collect(const struct rl_descriptor *d, void *arg)
{
	struct out *o = arg;
	for (uint32_t i = 0; i < d->n; i++)
		o->len += (size_t)snprintf(o->s + o->len, sizeof(o->s) - o->len, "%s%.*s=%.*s",
					   i ? "," : "", (int)d->e[i].key_len, d->e[i].key,
					   (int)d->e[i].value_len, d->e[i].value);
	o->len += (size_t)snprintf(o->s + o->len, sizeof(o->s) - o->len, ";");
	return true;
}

static const char *descs(const struct rl_policy_list *l, uint32_t stage, const char *peer,
			 const char *path, ...)
{
	static struct out o;
	struct http_headers h;
	va_list ap;
	const char *n, *v;

	hdrs_init(&h);
	hdrs_add_cstr(&h, ":path", path);
	va_start(ap, path);
	while ((n = va_arg(ap, const char *)) && (v = va_arg(ap, const char *)))
		hdrs_add_cstr(&h, n, v);
	va_end(ap);
	struct rl_input in = { .req = &h, .peer_ip = peer, .local_cluster = "mesh-a",
			       .dest_cluster = "backend" };
	memset(&o, 0, sizeof(o));
	unsigned k = rl_policy_list_descriptors(l, stage, &in, collect, &o);
	size_t semis = 0;
	for (size_t i = 0; i < o.len; i++)
		semis += o.s[i] == ';';
	CHECK_INT(k, semis);
	hdrs_free(&h);
	return o.s;
}
#define DESCS(l, stage, peer, ...) descs((l), (stage), (peer), __VA_ARGS__, NULL)

TEST(rl_simple_actions)
{
	bool ok;
	struct rl_policy_list *l = compile(
		"{'rate_limits': ["
		" {'actions': [{'generic_key': {'descriptor_value': 'gk'}}]},"
		" {'actions': [{'generic_key': {'descriptor_key': 'k', 'descriptor_value': 'v'}},"
		"              {'source_cluster': {}}, {'destination_cluster': {}},"
		"              {'remote_address': {}}]},"
		" {'stage': 1, 'disable_key': 'x', 'actions': [{'generic_key': {'descriptor_value': 's1'}}]}"
		"]}", &ok);
	CHECK(ok);
	CHECK_INT(rl_policy_list_size(l), 3);
	CHECK_STR(DESCS(l, 0, "10.1.2.3", "/"),
		  "generic_key=gk;k=v,source_cluster=mesh-a,destination_cluster=backend,"
		  "remote_address=10.1.2.3;");
	CHECK_STR(DESCS(l, 1, "10.1.2.3", "/"), "generic_key=s1;");
	CHECK_STR(DESCS(l, 2, "10.1.2.3", "/"), "");
	/* no peer address: the second RateLimit yields nothing */
	CHECK_STR(DESCS(l, 0, NULL, "/"), "generic_key=gk;");
	rl_policy_list_free(l);
}

TEST(rl_request_headers)
{
	struct rl_policy_list *l = compile(
		"{'rate_limits': ["
		" {'actions': [{'request_headers': {'header_name': 'X-User', 'descriptor_key': 'user'}},"
		"              {'generic_key': {'descriptor_value': 'g'}}]},"
		" {'actions': [{'request_headers': {'header_name': 'x-tenant', 'descriptor_key': 't',"
		"                                   'skip_if_absent': true}},"
		"              {'request_headers': {'header_name': ':path', 'descriptor_key': 'path'}}]},"
		" {'actions': [{'request_headers': {'header_name': 'x-only', 'descriptor_key': 'o',"
		"                                   'skip_if_absent': true}}]}"
		"]}", NULL);
	CHECK(l);
	/* header absent without skip_if_absent: the whole descriptor is dropped;
	 * skipped action: the rest still counts; all skipped: nothing */
	CHECK_STR(DESCS(l, 0, NULL, "/a"), "path=/a;");
	CHECK_STR(DESCS(l, 0, NULL, "/a", "x-user", "bob", "x-tenant", "t1"),
		  "user=bob,generic_key=g;t=t1,path=/a;");
	CHECK_STR(DESCS(l, 0, NULL, "/b", "x-only", "1"), "path=/b;o=1;");
	rl_policy_list_free(l);
}

TEST(rl_match_actions)
{
	struct rl_policy_list *l = compile(
		"{'rate_limits': ["
		" {'actions': [{'header_value_match': {'descriptor_value': 'get',"
		"   'headers': [{'name': ':method', 'string_match': {'exact': 'GET'}}]}}]},"
		" {'actions': [{'header_value_match': {'descriptor_key': 'nm', 'descriptor_value': 'no-get',"
		"   'expect_match': false,"
		"   'headers': [{'name': ':method', 'string_match': {'exact': 'GET'}}]}}]},"
		" {'actions': [{'query_parameter_value_match': {'descriptor_value': 'dbg',"
		"   'query_parameters': [{'name': 'debug', 'string_match': {'exact': '1'}}]}}]}"
		"]}", NULL);
	CHECK(l);
	CHECK_STR(DESCS(l, 0, NULL, "/", ":method", "GET"), "header_match=get;");
	CHECK_STR(DESCS(l, 0, NULL, "/", ":method", "POST"), "nm=no-get;");
	CHECK_STR(DESCS(l, 0, NULL, "/x?a=2&debug=1", ":method", "PUT"),
		  "nm=no-get;query_match=dbg;");
	CHECK_STR(DESCS(l, 0, NULL, "/x?debug=0", ":method", "GET"), "header_match=get;");
	rl_policy_list_free(l);
}

TEST(rl_masked_remote_address)
{
	struct rl_policy_list *l = compile(
		"{'rate_limits': ["
		" {'actions': [{'masked_remote_address': {'v4_prefix_mask_len': 24,"
		"                                         'v6_prefix_mask_len': 64}}]},"
		" {'actions': [{'masked_remote_address': {}}, {'masked_remote_address': {'v4_prefix_mask_len': 12}}]}"
		"]}", NULL);
	CHECK(l);
	CHECK_STR(DESCS(l, 0, "10.1.2.3", "/"),
		  "masked_remote_address=10.1.2.0/24;"
		  "masked_remote_address=10.1.2.3/32,masked_remote_address=10.0.0.0/12;");
	CHECK_STR(DESCS(l, 0, "2001:db8:1:2:3::9", "/"),
		  "masked_remote_address=2001:db8:1:2::/64;"
		  "masked_remote_address=2001:db8:1:2:3::9/128,"
		  "masked_remote_address=2001:db8:1:2:3::9/128;");
	CHECK_STR(DESCS(l, 0, "not-an-ip", "/"), "");
	rl_policy_list_free(l);
}

TEST(rl_parse_errors)
{
	bool ok;
	struct rl_policy_list *l = compile("{'rate_limits': []}", &ok);
	CHECK(ok);
	CHECK(!l);
	l = compile("{}", &ok);
	CHECK(ok);
	CHECK(!l);
	CHECK_CONTAINS(compile_err("{'rate_limits': [{'actions': [{'metadata': {}}]}]}"),
		       "rate_limits[0].actions[0].metadata: not supported yet");
	CHECK_CONTAINS(compile_err("{'rate_limits': [{'actions': [{'bogus': {}}]}]}"),
		       "rate_limits[0].actions[0]");
	CHECK_CONTAINS(compile_err("{'rate_limits': [{'actions': []}]}"),
		       "rate_limits[0].actions: at least one action");
	CHECK_CONTAINS(compile_err("{'rate_limits': [{}]}"), "rate_limits[0].actions");
	CHECK_CONTAINS(compile_err("{'rate_limits': [{'stage': 11, 'actions': [{'remote_address': {}}]}]}"),
		       "rate_limits[0].stage: must be at most 10");
	CHECK_CONTAINS(compile_err("{'rate_limits': [{'limit': {}, 'actions': [{'remote_address': {}}]}]}"),
		       "rate_limits[0].limit: not supported yet");
	CHECK_CONTAINS(compile_err("{'rate_limits': [{'actions': [{'remote_address': {}, 'generic_key': {}}]}]}"),
		       "only one action");
	CHECK_CONTAINS(compile_err("{'rate_limits': [{'actions': [{'generic_key': {}}]}]}"),
		       "rate_limits[0].actions[0].generic_key.descriptor_value");
	CHECK_CONTAINS(compile_err("{'rate_limits': [{'actions': [{'request_headers': {'header_name': 'a'}}]}]}"),
		       "request_headers.descriptor_key");
	CHECK_CONTAINS(compile_err("{'rate_limits': [{'actions': [{'header_value_match': {'descriptor_value': 'v'}}]}]}"),
		       "header_value_match.headers");
	CHECK_CONTAINS(compile_err("{'rate_limits': [{'actions': [{'masked_remote_address': {'v4_prefix_mask_len': 33}}]}]}"),
		       "v4_prefix_mask_len: must be at most 32");
	CHECK_CONTAINS(compile_err("{'rate_limits': [{'actions': [{'source_cluster': {'x': 1}}]}]}"),
		       "source_cluster.x");
}

/* The route table keeps the route's and its virtual host's lists. */
TEST(rl_route_table_hook)
{
	json_t *j = jload(
		"{'virtual_hosts': [{'name': 'v', 'domains': ['*'],"
		"  'rate_limits': [{'actions': [{'generic_key': {'descriptor_value': 'vh'}}]}],"
		"  'routes': [{'name': 'r1', 'match': {'prefix': '/a'}, 'route': {'cluster': 'c',"
		"     'rate_limits': [{'actions': [{'generic_key': {'descriptor_value': 'rt'}}]}]}},"
		"    {'name': 'r2', 'match': {'prefix': '/'}, 'route': {'cluster': 'c'}}]}]}");
	struct cfg_ctx c;
	cfg_init(&c, NULL, NULL);
	struct route_config *rc = route_config_compile(&c, j, NULL);
	CHECK(rc);
	struct http_headers h;
	hdrs_init(&h);
	hdrs_add_cstr(&h, ":authority", "x");
	hdrs_add_cstr(&h, ":path", "/a");
	const struct route_entry *re = route_match(rc, &h, NULL);
	CHECK(re && re->rate_limits && re->vh_rate_limits);
	if (re) {
		CHECK_STR(DESCS(re->rate_limits, 0, NULL, "/"), "generic_key=rt;");
		CHECK_STR(DESCS(re->vh_rate_limits, 0, NULL, "/"), "generic_key=vh;");
	}
	hdrs_free(&h);
	hdrs_init(&h);
	hdrs_add_cstr(&h, ":authority", "x");
	hdrs_add_cstr(&h, ":path", "/b");
	re = route_match(rc, &h, NULL);
	CHECK(re && !re->rate_limits && re->vh_rate_limits);
	hdrs_free(&h);
	route_config_free(rc);
	json_decref(j);

	j = jload("{'virtual_hosts': [{'name': 'v', 'domains': ['*'], 'routes': [{'match': "
		  "{'prefix': '/'}, 'route': {'cluster': 'c', 'rate_limits': [{'actions': "
		  "[{'extension': {}}]}]}}]}]}");
	cfg_init(&c, NULL, NULL);
	rc = route_config_compile(&c, j, NULL);
	CHECK(!rc);
	CHECK_CONTAINS(c.err, "virtual_hosts[0].routes[0].route.rate_limits[0].actions[0].extension: "
			      "not supported yet");
	CHECK_INT(c.depth, 0);
	json_decref(j);
}
