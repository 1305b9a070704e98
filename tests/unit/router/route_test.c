/* route_test.c - RouteConfiguration compile and match (proxy/router/route.h).
 *
 * Configs are JSON text written with single quotes (turned into double
 * quotes before parsing) so they stay readable in C strings. */
#include "test.h"

#include <pthread.h>
#include <stdarg.h>
#include <arpa/inet.h>
#include <netinet/in.h>

#include "proxy/router/route.h"

/* ------------------------------------------------------------------------
 * Helpers */

static char last_err[1024];

/* Compile JSON text whose strings use ' instead of ".  NULL on error, with
 * the walker's message in last_err. */
static struct route_config *compile(const char *text)
{
	char *s = strdup(text);
	json_error_t je;
	struct cfg_ctx c;

	for (char *p = s; *p; p++)
		if (*p == '\'')
			*p = '"';
	json_t *j = json_loads(s, 0, &je);
	if (!j) {
		fprintf(stderr, "  test bug: bad JSON: %s at %d:%d\n%s\n", je.text, je.line,
			je.column, s);
		free(s);
		test_failed_checks++;
		return NULL;
	}
	cfg_init(&c, NULL, NULL);
	struct route_config *rc = route_config_compile(&c, j, NULL);
	snprintf(last_err, sizeof(last_err), "%s", c.err);
	if (!rc)
		CHECK(c.failed);
	CHECK_INT(c.depth, 0);
	json_decref(j);
	free(s);
	return rc;
}

/* Compile text that must fail; returns the error text. */
static const char *compile_err(const char *text)
{
	struct route_config *rc = compile(text);
	if (rc) {
		fprintf(stderr, "  expected a compile error for: %s\n", text);
		test_failed_checks++;
		route_config_free(rc);
		return "(compiled)";
	}
	return last_err;
}

/* A request: authority (NULL = none), path, then name/value pairs, NULL. */
static void req_set(struct http_headers *h, const char *authority, const char *path, ...)
{
	va_list ap;
	const char *n, *v;

	hdrs_init(h);
	hdrs_add_cstr(h, ":method", "GET");
	hdrs_add_cstr(h, ":scheme", "http");
	if (authority)
		hdrs_add_cstr(h, ":authority", authority);
	if (path)
		hdrs_add_cstr(h, ":path", path);
	va_start(ap, path);
	while ((n = va_arg(ap, const char *)) && (v = va_arg(ap, const char *)))
		hdrs_add_cstr(h, n, v);
	va_end(ap);
}

/* Name of the route matched for authority/path (+ headers), "-" if none. */
#define MATCH(rc, ...) match_name((rc), __VA_ARGS__, NULL)
static const char *match_name(const struct route_config *rc, const char *authority,
			      const char *path, ...)
{
	static char out[128];
	struct http_headers h;
	va_list ap;
	const char *n, *v;

	hdrs_init(&h);
	if (authority)
		hdrs_add_cstr(&h, ":authority", authority);
	if (path)
		hdrs_add_cstr(&h, ":path", path);
	va_start(ap, path);
	while ((n = va_arg(ap, const char *)) && (v = va_arg(ap, const char *)))
		hdrs_add_cstr(&h, n, v);
	va_end(ap);
	const struct virtual_host *vh = (void *)1;
	const struct route_entry *re = route_match(rc, &h, &vh);
	snprintf(out, sizeof(out), "%s", re ? (re->name ? re->name : "(unnamed)") : "-");
	if (!re && !vh)
		snprintf(out, sizeof(out), "-novh");
	hdrs_free(&h);
	return out;
}

/* All values of name joined by "|" (for checking header maps). */
static const char *values(const struct http_headers *h, const char *name)
{
	static char out[512];
	size_t len = 0;
	bool found = false;

	out[0] = '\0';
	for (int i = hdrs_find(h, name, strlen(name), 0); i >= 0;
	     i = hdrs_find(h, name, strlen(name), i + 1)) {
		len += (size_t)snprintf(out + len, sizeof(out) - len, "%s%s", found ? "|" : "",
					hdrs_value(h, (uint32_t)i));
		found = true;
	}
	return found ? out : "(absent)";
}

/* ------------------------------------------------------------------------
 * Virtual host selection */

static const char *const domains_cfg =
	"{'name': 'rc', 'virtual_hosts': ["
	" {'name': 'exact', 'domains': ['api.example.com', 'Other.Example.com'],"
	"  'routes': [{'name': 'exact', 'match': {'prefix': '/'}, 'route': {'cluster': 'a'}}]},"
	" {'name': 'suffix', 'domains': ['*.example.com'],"
	"  'routes': [{'name': 'suffix', 'match': {'prefix': '/'}, 'route': {'cluster': 'b'}}]},"
	" {'name': 'longsuffix', 'domains': ['*-bar.example.com'],"
	"  'routes': [{'name': 'longsuffix', 'match': {'prefix': '/'}, 'route': {'cluster': 'c'}}]},"
	" {'name': 'prefix', 'domains': ['api.*'],"
	"  'routes': [{'name': 'prefix', 'match': {'prefix': '/'}, 'route': {'cluster': 'd'}}]},"
	" {'name': 'longprefix', 'domains': ['api-v2.*'],"
	"  'routes': [{'name': 'longprefix', 'match': {'prefix': '/'}, 'route': {'cluster': 'e'}}]},"
	" {'name': 'default', 'domains': ['*'],"
	"  'routes': [{'name': 'default', 'match': {'prefix': '/'}, 'route': {'cluster': 'f'}}]}"
	"]}";

TEST(vhost_domain_kinds_and_precedence)
{
	struct route_config *rc = compile(domains_cfg);
	CHECK(rc != NULL);
	if (!rc)
		return;
	CHECK_STR(route_config_name(rc), "rc");
	CHECK_STR(MATCH(rc, "api.example.com", "/"), "exact");
	CHECK_STR(MATCH(rc, "API.Example.COM", "/"), "exact");      /* case-insensitive */
	CHECK_STR(MATCH(rc, "other.example.com", "/"), "exact");    /* domain lowercased */
	CHECK_STR(MATCH(rc, "foo.example.com", "/"), "suffix");
	CHECK_STR(MATCH(rc, "a.b.EXAMPLE.com", "/"), "suffix");
	CHECK_STR(MATCH(rc, "foo-bar.example.com", "/"), "longsuffix");  /* longest suffix */
	CHECK_STR(MATCH(rc, "-bar.example.com", "/"), "suffix");    /* '*' must match >= 1 char */
	CHECK_STR(MATCH(rc, ".example.com", "/"), "default");
	CHECK_STR(MATCH(rc, "api.other.org", "/"), "prefix");
	CHECK_STR(MATCH(rc, "api-v2.other.org", "/"), "longprefix");  /* longest prefix */
	CHECK_STR(MATCH(rc, "api.", "/"), "default");               /* '*' must match >= 1 char */
	CHECK_STR(MATCH(rc, "api.x.example.com", "/"), "suffix");   /* suffix beats prefix */
	CHECK_STR(MATCH(rc, "unknown.org", "/"), "default");
	CHECK_STR(MATCH(rc, NULL, "/"), "-novh");                   /* no :authority */
	route_config_free(rc);
}

TEST(vhost_case_folding_is_ascii_only)
{
	/* '@' '[' '`' '{' sit next to 'A'..'Z' / 'a'..'z'; bytes >= 0x80 are
	 * never folded.  Lengths cover whole 8-byte words and short tails. */
	struct route_config *rc = compile(
		"{'virtual_hosts': ["
		" {'name': 'odd', 'domains': ['ab@[z.example.com', 'caf\xc3\xa9.example.org', '*.long-suffix-domain.example.net'],"
		"  'routes': [{'name': 'odd', 'match': {'prefix': '/'}, 'route': {'cluster': 'a'}}]},"
		" {'name': 'default', 'domains': ['*'],"
		"  'routes': [{'name': 'default', 'match': {'prefix': '/'}, 'route': {'cluster': 'b'}}]}]}");
	CHECK(rc != NULL);
	if (!rc)
		return;
	CHECK_STR(MATCH(rc, "AB@[Z.EXAMPLE.COM", "/"), "odd");
	CHECK_STR(MATCH(rc, "ab`{z.example.com", "/"), "default");
	CHECK_STR(MATCH(rc, "CAF\xc3\xa9.Example.Org", "/"), "odd");
	CHECK_STR(MATCH(rc, "caf\xc3\x89.example.org", "/"), "default");
	CHECK_STR(MATCH(rc, "X.LONG-SUFFIX-DOMAIN.EXAMPLE.NET", "/"), "odd");
	CHECK_STR(MATCH(rc, "x.long-suffix-domain.example.ne", "/"), "default");
	route_config_free(rc);
}

TEST(vhost_none_and_route_none)
{
	struct route_config *rc = compile(
		"{'virtual_hosts': [{'name': 'v', 'domains': ['a.com'],"
		" 'routes': [{'name': 'r', 'match': {'prefix': '/x'}, 'route': {'cluster': 'c'}}]}]}");
	CHECK(rc != NULL);
	if (!rc)
		return;
	CHECK_STR(MATCH(rc, "b.com", "/x"), "-novh");
	CHECK_STR(MATCH(rc, "a.com", "/y"), "-");     /* vhost found, no route */
	CHECK_STR(MATCH(rc, "a.com", "/x"), "r");
	CHECK_STR(MATCH(rc, "a.com", NULL), "-");     /* no :path */

	struct http_headers h;
	req_set(&h, "a.com", "/y", NULL);
	const struct virtual_host *vh = NULL;
	CHECK(route_match(rc, &h, &vh) == NULL);
	CHECK(vh != NULL);
	hdrs_free(&h);
	req_set(&h, "zzz", "/x", NULL);
	vh = (void *)1;
	CHECK(route_match(rc, &h, &vh) == NULL);
	CHECK(vh == NULL);
	hdrs_free(&h);
	route_config_free(rc);

	/* Only a "*" host: matches without any :authority. */
	rc = compile("{'virtual_hosts': [{'name': 'v', 'domains': ['*'],"
		     " 'routes': [{'name': 'r', 'match': {'prefix': '/'}, 'route': {'cluster': 'c'}}]}]}");
	CHECK(rc != NULL);
	if (rc)
		CHECK_STR(MATCH(rc, NULL, "/"), "r");
	route_config_free(rc);

	/* No virtual hosts at all. */
	rc = compile("{'name': 'empty'}");
	CHECK(rc != NULL);
	if (rc)
		CHECK_STR(MATCH(rc, "a", "/"), "-novh");
	route_config_free(rc);
}

static const char *const port_cfg =
	"{%s 'virtual_hosts': ["
	" {'name': 'plain', 'domains': ['example.com', '[::1]'],"
	"  'routes': [{'name': 'plain', 'match': {'prefix': '/'}, 'route': {'cluster': 'a'}}]},"
	" {'name': 'port', 'domains': ['example.com:8080'],"
	"  'routes': [{'name': 'port', 'match': {'prefix': '/'}, 'route': {'cluster': 'b'}}]},"
	" {'name': 'default', 'domains': ['*'],"
	"  'routes': [{'name': 'default', 'match': {'prefix': '/'}, 'route': {'cluster': 'c'}}]}"
	"]}";

TEST(vhost_port_handling)
{
	char text[1024];

	/* Envoy's default: the :authority is matched as-is, port included. */
	snprintf(text, sizeof(text), port_cfg, "");
	struct route_config *rc = compile(text);
	CHECK(rc != NULL);
	if (!rc)
		return;
	CHECK_STR(MATCH(rc, "example.com", "/"), "plain");
	CHECK_STR(MATCH(rc, "example.com:8080", "/"), "port");
	CHECK_STR(MATCH(rc, "example.com:9090", "/"), "default");
	CHECK_STR(MATCH(rc, "[::1]:80", "/"), "default");
	route_config_free(rc);

	/* ignore_port_in_host_matching: the port is dropped before matching. */
	snprintf(text, sizeof(text), port_cfg, "'ignore_port_in_host_matching': true,");
	rc = compile(text);
	CHECK(rc != NULL);
	if (!rc)
		return;
	CHECK_STR(MATCH(rc, "example.com:9090", "/"), "plain");
	CHECK_STR(MATCH(rc, "example.com:8080", "/"), "plain");
	CHECK_STR(MATCH(rc, "[::1]:80", "/"), "plain");
	CHECK_STR(MATCH(rc, "[::1]", "/"), "plain");
	route_config_free(rc);
}

/* ------------------------------------------------------------------------
 * Path matching */

TEST(route_path_specifiers)
{
	struct route_config *rc = compile(
		"{'virtual_hosts': [{'name': 'v', 'domains': ['*'], 'routes': ["
		" {'name': 'exact', 'match': {'path': '/exact'}, 'route': {'cluster': 'c'}},"
		" {'name': 'sep', 'match': {'path_separated_prefix': '/sep'}, 'route': {'cluster': 'c'}},"
		" {'name': 'regex', 'match': {'safe_regex': {'regex': '/re/[0-9]+'}}, 'route': {'cluster': 'c'}},"
		" {'name': 'alt', 'match': {'safe_regex': {'google_re2': {}, 'regex': 'a|ab'}}, 'route': {'cluster': 'c'}},"
		" {'name': 'ci', 'match': {'prefix': '/CI/', 'case_sensitive': false}, 'route': {'cluster': 'c'}},"
		" {'name': 'cipath', 'match': {'path': '/Upper', 'caseSensitive': false}, 'route': {'cluster': 'c'}},"
		" {'name': 'cs', 'match': {'prefix': '/Case'}, 'route': {'cluster': 'c'}},"
		" {'name': 'prefix', 'match': {'prefix': '/p'}, 'route': {'cluster': 'c'}}"
		"]}]}");
	CHECK(rc != NULL);
	if (!rc)
		return;
	CHECK_STR(MATCH(rc, "h", "/exact"), "exact");
	CHECK_STR(MATCH(rc, "h", "/exact?q=1"), "exact");       /* query ignored */
	CHECK_STR(MATCH(rc, "h", "/exact#frag"), "exact");
	CHECK_STR(MATCH(rc, "h", "/exact/"), "-");
	CHECK_STR(MATCH(rc, "h", "/EXACT"), "-");
	CHECK_STR(MATCH(rc, "h", "/sep"), "sep");
	CHECK_STR(MATCH(rc, "h", "/sep/x"), "sep");
	CHECK_STR(MATCH(rc, "h", "/sep?x=1"), "sep");
	CHECK_STR(MATCH(rc, "h", "/separate"), "-");
	CHECK_STR(MATCH(rc, "h", "/re/123"), "regex");
	CHECK_STR(MATCH(rc, "h", "/re/123?x=y"), "regex");      /* regex sees no query */
	CHECK_STR(MATCH(rc, "h", "/re/123/x"), "-");            /* full match, not search */
	CHECK_STR(MATCH(rc, "h", "x/re/123"), "-");
	CHECK_STR(MATCH(rc, "h", "ab"), "alt");                 /* anchoring covers alternation */
	CHECK_STR(MATCH(rc, "h", "/ci/x"), "ci");
	CHECK_STR(MATCH(rc, "h", "/Ci/x"), "ci");
	CHECK_STR(MATCH(rc, "h", "/uPPer"), "cipath");
	CHECK_STR(MATCH(rc, "h", "/case"), "-");                /* case_sensitive default true */
	CHECK_STR(MATCH(rc, "h", "/Case/1"), "cs");
	CHECK_STR(MATCH(rc, "h", "/p"), "prefix");
	CHECK_STR(MATCH(rc, "h", "/pq?x"), "prefix");
	CHECK_STR(MATCH(rc, "h", "/q"), "-");
	route_config_free(rc);
}

TEST(route_first_match_wins)
{
	struct route_config *rc = compile(
		"{'virtual_hosts': [{'name': 'v', 'domains': ['*'], 'routes': ["
		" {'name': 'first', 'match': {'prefix': '/a'}, 'route': {'cluster': 'c1'}},"
		" {'name': 'second', 'match': {'path': '/ab'}, 'route': {'cluster': 'c2'}},"
		" {'name': 'third', 'match': {'prefix': '/'}, 'route': {'cluster': 'c3'}}"
		"]}]}");
	CHECK(rc != NULL);
	if (!rc)
		return;
	CHECK_STR(MATCH(rc, "h", "/ab"), "first");
	CHECK_STR(MATCH(rc, "h", "/b"), "third");
	route_config_free(rc);
}

/* ------------------------------------------------------------------------
 * Header and query parameter matchers */

static const char *const headers_cfg =
	"{'virtual_hosts': [{'name': 'v', 'domains': ['*'], 'routes': ["
	" {'name': 'exact', 'match': {'prefix': '/exact', 'headers': [{'name': 'X-A', 'exact_match': 'one'}]}, 'route': {'cluster': 'c'}},"
	" {'name': 'prefix', 'match': {'prefix': '/prefix', 'headers': [{'name': 'x-a', 'prefix_match': 'pre'}]}, 'route': {'cluster': 'c'}},"
	" {'name': 'suffix', 'match': {'prefix': '/suffix', 'headers': [{'name': 'x-a', 'suffix_match': 'fix'}]}, 'route': {'cluster': 'c'}},"
	" {'name': 'contains', 'match': {'prefix': '/contains', 'headers': [{'name': 'x-a', 'contains_match': 'mid'}]}, 'route': {'cluster': 'c'}},"
	" {'name': 'regex', 'match': {'prefix': '/regex', 'headers': [{'name': 'x-a', 'safe_regex_match': {'regex': 'v[0-9]'}}]}, 'route': {'cluster': 'c'}},"
	" {'name': 'present', 'match': {'prefix': '/present', 'headers': [{'name': 'x-a', 'present_match': true}]}, 'route': {'cluster': 'c'}},"
	" {'name': 'absent', 'match': {'prefix': '/absent', 'headers': [{'name': 'x-a', 'present_match': false}]}, 'route': {'cluster': 'c'}},"
	" {'name': 'bare', 'match': {'prefix': '/bare', 'headers': [{'name': 'x-a'}]}, 'route': {'cluster': 'c'}},"
	" {'name': 'sm_ic', 'match': {'prefix': '/smic', 'headers': [{'name': 'x-a', 'string_match': {'exact': 'MiXeD', 'ignore_case': true}}]}, 'route': {'cluster': 'c'}},"
	" {'name': 'sm_cs', 'match': {'prefix': '/smcs', 'headers': [{'name': 'x-a', 'string_match': {'prefix': 'Ab'}}]}, 'route': {'cluster': 'c'}},"
	" {'name': 'sm_contains_ic', 'match': {'prefix': '/smci', 'headers': [{'name': 'x-a', 'string_match': {'contains': 'XY', 'ignore_case': true}}]}, 'route': {'cluster': 'c'}},"
	" {'name': 'sm_re', 'match': {'prefix': '/smre', 'headers': [{'name': 'x-a', 'string_match': {'safe_regex': {'regex': '[a-c]+'}}}]}, 'route': {'cluster': 'c'}},"
	" {'name': 'invert', 'match': {'prefix': '/invert', 'headers': [{'name': 'x-a', 'exact_match': 'no', 'invert_match': true}]}, 'route': {'cluster': 'c'}},"
	" {'name': 'invpresent', 'match': {'prefix': '/invpresent', 'headers': [{'name': 'x-a', 'present_match': true, 'invert_match': true}]}, 'route': {'cluster': 'c'}},"
	" {'name': 'empty', 'match': {'prefix': '/empty', 'headers': [{'name': 'x-a', 'string_match': {'exact': ''}, 'treat_missing_header_as_empty': true}]}, 'route': {'cluster': 'c'}},"
	" {'name': 'method', 'match': {'prefix': '/method', 'headers': [{'name': ':method', 'exact_match': 'POST'}]}, 'route': {'cluster': 'c'}},"
	" {'name': 'two', 'match': {'prefix': '/two', 'headers': [{'name': 'x-a', 'exact_match': '1'}, {'name': 'x-b', 'exact_match': '2'}]}, 'route': {'cluster': 'c'}}"
	"]}]}";

TEST(route_header_matchers)
{
	struct route_config *rc = compile(headers_cfg);
	CHECK(rc != NULL);
	if (!rc)
		return;
	CHECK_STR(MATCH(rc, "h", "/exact", "x-a", "one"), "exact");
	CHECK_STR(MATCH(rc, "h", "/exact", "x-a", "One"), "-");
	CHECK_STR(MATCH(rc, "h", "/exact"), "-");
	CHECK_STR(MATCH(rc, "h", "/prefix", "x-a", "prefab"), "prefix");
	CHECK_STR(MATCH(rc, "h", "/prefix", "x-a", "xpre"), "-");
	CHECK_STR(MATCH(rc, "h", "/suffix", "x-a", "postfix"), "suffix");
	CHECK_STR(MATCH(rc, "h", "/suffix", "x-a", "fixed"), "-");
	CHECK_STR(MATCH(rc, "h", "/contains", "x-a", "amidst"), "contains");
	CHECK_STR(MATCH(rc, "h", "/contains", "x-a", "MID"), "-");
	CHECK_STR(MATCH(rc, "h", "/regex", "x-a", "v7"), "regex");
	CHECK_STR(MATCH(rc, "h", "/regex", "x-a", "v77"), "-");     /* full match */
	CHECK_STR(MATCH(rc, "h", "/present", "x-a", ""), "present");
	CHECK_STR(MATCH(rc, "h", "/present"), "-");
	CHECK_STR(MATCH(rc, "h", "/absent"), "absent");
	CHECK_STR(MATCH(rc, "h", "/absent", "x-a", "1"), "-");
	CHECK_STR(MATCH(rc, "h", "/bare", "x-a", "anything"), "bare");
	CHECK_STR(MATCH(rc, "h", "/bare"), "-");
	CHECK_STR(MATCH(rc, "h", "/smic", "x-a", "mixed"), "sm_ic");
	CHECK_STR(MATCH(rc, "h", "/smcs", "x-a", "Abc"), "sm_cs");
	CHECK_STR(MATCH(rc, "h", "/smcs", "x-a", "abc"), "-");
	CHECK_STR(MATCH(rc, "h", "/smci", "x-a", "..xy.."), "sm_contains_ic");
	CHECK_STR(MATCH(rc, "h", "/smci", "x-a", "..x.y.."), "-");
	CHECK_STR(MATCH(rc, "h", "/smre", "x-a", "abcab"), "sm_re");
	CHECK_STR(MATCH(rc, "h", "/smre", "x-a", "abd"), "-");
	CHECK_STR(MATCH(rc, "h", "/invert", "x-a", "yes"), "invert");
	CHECK_STR(MATCH(rc, "h", "/invert", "x-a", "no"), "-");
	CHECK_STR(MATCH(rc, "h", "/invert"), "-");          /* missing header never matches */
	CHECK_STR(MATCH(rc, "h", "/invpresent"), "invpresent");
	CHECK_STR(MATCH(rc, "h", "/invpresent", "x-a", "1"), "-");
	CHECK_STR(MATCH(rc, "h", "/empty"), "empty");        /* treat_missing_header_as_empty */
	CHECK_STR(MATCH(rc, "h", "/empty", "x-a", "v"), "-");
	CHECK_STR(MATCH(rc, "h", "/method", ":method", "POST"), "method");
	CHECK_STR(MATCH(rc, "h", "/method", ":method", "GET"), "-");
	CHECK_STR(MATCH(rc, "h", "/two", "x-a", "1", "x-b", "2"), "two");
	CHECK_STR(MATCH(rc, "h", "/two", "x-a", "1"), "-");
	/* several fields: values joined with "," before matching */
	CHECK_STR(MATCH(rc, "h", "/suffix", "x-a", "a", "x-a", "fix"), "suffix");
	CHECK_STR(MATCH(rc, "h", "/exact", "x-a", "one", "x-a", "one"), "-");
	CHECK_STR(MATCH(rc, "h", "/contains", "x-a", "m", "x-a", "id"), "-");   /* "m,id" */
	CHECK_STR(MATCH(rc, "h", "/smre", "x-a", "ab", "x-a", "c"), "-");       /* "ab,c" */
	route_config_free(rc);
}

TEST(route_header_join_large)
{
	/* Joined values beyond the stack buffer take the heap path. */
	struct route_config *rc = compile(
		"{'virtual_hosts': [{'name': 'v', 'domains': ['*'], 'routes': ["
		" {'name': 'r', 'match': {'prefix': '/', 'headers': [{'name': 'x', 'suffix_match': ',end'}]}, 'route': {'cluster': 'c'}}"
		"]}]}");
	CHECK(rc != NULL);
	if (!rc)
		return;
	char big[1500];
	memset(big, 'a', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	CHECK_STR(MATCH(rc, "h", "/", "x", big, "x", "end"), "r");
	CHECK_STR(MATCH(rc, "h", "/", "x", big, "x", "nope"), "-");
	route_config_free(rc);
}

TEST(route_query_parameters)
{
	struct route_config *rc = compile(
		"{'virtual_hosts': [{'name': 'v', 'domains': ['*'], 'routes': ["
		" {'name': 'exact', 'match': {'prefix': '/e', 'query_parameters': [{'name': 'debug', 'string_match': {'exact': 'true'}}]}, 'route': {'cluster': 'c'}},"
		" {'name': 'present', 'match': {'prefix': '/p', 'query_parameters': [{'name': 'id', 'present_match': true}]}, 'route': {'cluster': 'c'}},"
		" {'name': 'bare', 'match': {'prefix': '/b', 'query_parameters': [{'name': 'flag'}]}, 'route': {'cluster': 'c'}},"
		" {'name': 'ic', 'match': {'prefix': '/i', 'query_parameters': [{'name': 'v', 'string_match': {'prefix': 'AB', 'ignore_case': true}}]}, 'route': {'cluster': 'c'}}"
		"]}]}");
	CHECK(rc != NULL);
	if (!rc)
		return;
	CHECK_STR(MATCH(rc, "h", "/e?debug=true"), "exact");
	CHECK_STR(MATCH(rc, "h", "/e?x=1&debug=true&y"), "exact");
	CHECK_STR(MATCH(rc, "h", "/e?debug=false"), "-");
	CHECK_STR(MATCH(rc, "h", "/e?debug=false&debug=true"), "-");  /* first value counts */
	CHECK_STR(MATCH(rc, "h", "/e?xdebug=true"), "-");
	CHECK_STR(MATCH(rc, "h", "/e"), "-");
	CHECK_STR(MATCH(rc, "h", "/e?debug=%74rue"), "-");            /* no percent-decoding */
	CHECK_STR(MATCH(rc, "h", "/p?id="), "present");
	CHECK_STR(MATCH(rc, "h", "/p?id"), "present");
	CHECK_STR(MATCH(rc, "h", "/p?idx=1"), "-");
	CHECK_STR(MATCH(rc, "h", "/b?a&&flag"), "bare");
	CHECK_STR(MATCH(rc, "h", "/i?v=abc"), "ic");
	CHECK_STR(MATCH(rc, "h", "/i?v=xab"), "-");
	route_config_free(rc);
}

/* ------------------------------------------------------------------------
 * Route actions */

TEST(route_action_fields_and_timeouts)
{
	struct route_config *rc = compile(
		"{'virtual_hosts': [{'name': 'v', 'domains': ['*'], 'routes': ["
		" {'name': 'dflt', 'match': {'path': '/d'}, 'route': {'cluster': 'c1'}},"
		" {'name': 'zero', 'match': {'path': '/z'}, 'route': {'cluster': 'c2', 'timeout': '0s', 'idle_timeout': '2.5s'}},"
		" {'name': 'obj', 'match': {'path': '/o'}, 'route': {'cluster': 'c3', 'timeout': {'seconds': 3, 'nanos': 500000000}}}"
		"]}]}");
	CHECK(rc != NULL);
	if (!rc)
		return;
	struct http_headers h;
	req_set(&h, "h", "/d", NULL);
	const struct route_entry *re = route_match(rc, &h, NULL);
	CHECK(re != NULL);
	if (re) {
		CHECK_INT(re->kind, ROUTE_ACTION_ROUTE);
		CHECK_STR(re->cluster, "c1");
		CHECK_INT(re->timeout_ms, 15000);
		CHECK_INT(re->idle_timeout_ms, 0);
		CHECK_STR(route_pick_cluster(re, 12345, NULL), "c1");
	}
	hdrs_free(&h);
	req_set(&h, "h", "/z", NULL);
	re = route_match(rc, &h, NULL);
	CHECK(re && re->timeout_ms == 0 && re->idle_timeout_ms == 2500);
	hdrs_free(&h);
	req_set(&h, "h", "/o", NULL);
	re = route_match(rc, &h, NULL);
	CHECK(re && re->timeout_ms == 3500);
	hdrs_free(&h);
	route_config_free(rc);
}

TEST(route_weighted_clusters)
{
	struct route_config *rc = compile(
		"{'virtual_hosts': [{'name': 'v', 'domains': ['*'], 'routes': ["
		" {'name': 'w', 'match': {'prefix': '/'}, 'route': {'weighted_clusters': {'clusters': ["
		"   {'name': 'a', 'weight': 10}, {'name': 'zero', 'weight': 0},"
		"   {'name': 'b', 'weight': 30}, {'name': 'c', 'weight': '60'}]}}}"
		"]}]}");
	CHECK(rc != NULL);
	if (!rc)
		return;
	struct http_headers h;
	req_set(&h, "h", "/", NULL);
	const struct route_entry *re = route_match(rc, &h, NULL);
	hdrs_free(&h);
	CHECK(re != NULL);
	if (!re)
		goto out;
	CHECK(re->cluster == NULL);
	CHECK_INT(re->nwclusters, 4);
	CHECK_INT(re->total_weight, 100);
	const struct weighted_cluster *wc = NULL;
	CHECK_STR(route_pick_cluster(re, 0, &wc), "a");
	CHECK(wc == &re->wclusters[0]);
	CHECK_STR(route_pick_cluster(re, 9, NULL), "a");
	CHECK_STR(route_pick_cluster(re, 10, &wc), "b");     /* zero weight never picked */
	CHECK(wc == &re->wclusters[2]);
	CHECK_STR(route_pick_cluster(re, 39, NULL), "b");
	CHECK_STR(route_pick_cluster(re, 40, NULL), "c");
	CHECK_STR(route_pick_cluster(re, 99, NULL), "c");
	CHECK_STR(route_pick_cluster(re, 100, NULL), "a");   /* modulo total */
	CHECK_STR(route_pick_cluster(re, UINT64_MAX, NULL), "b");  /* 2^64-1 % 100 = 15 */
	int counts[3] = { 0, 0, 0 };
	for (uint64_t r = 0; r < 1000; r++) {
		const char *n = route_pick_cluster(re, r * 7919, NULL);
		counts[n[0] - 'a']++;
	}
	CHECK_INT(counts[0], 100);
	CHECK_INT(counts[1], 300);
	CHECK_INT(counts[2], 600);
out:
	route_config_free(rc);
}

struct seen { char names[8][16]; int n; };

static void collect(const char *name, void *arg)
{
	struct seen *s = arg;
	if (s->n < 8)
		snprintf(s->names[s->n++], sizeof(s->names[0]), "%s", name);
}

TEST(route_for_each_cluster)
{
	struct route_config *rc = compile(
		"{'virtual_hosts': ["
		" {'name': 'v1', 'domains': ['a'], 'routes': ["
		"  {'match': {'prefix': '/1'}, 'route': {'cluster': 'one'}},"
		"  {'match': {'prefix': '/2'}, 'redirect': {'host_redirect': 'x'}},"
		"  {'match': {'prefix': '/3'}, 'route': {'weighted_clusters': {'clusters': [{'name': 'w1', 'weight': 1}, {'name': 'w2', 'weight': 1}]}}}]},"
		" {'name': 'v2', 'domains': ['b'], 'routes': ["
		"  {'match': {'prefix': '/'}, 'direct_response': {'status': 200}},"
		"  {'match': {'prefix': '/'}, 'route': {'cluster': 'two'}}]}"
		"]}");
	CHECK(rc != NULL);
	if (!rc)
		return;
	struct seen s = { .n = 0 };
	route_config_for_each_cluster(rc, collect, &s);
	CHECK_INT(s.n, 4);
	CHECK_STR(s.names[0], "one");
	CHECK_STR(s.names[1], "w1");
	CHECK_STR(s.names[2], "w2");
	CHECK_STR(s.names[3], "two");
	route_config_free(rc);
}

/* Match authority/path in rc, apply the request side, return the map. */
static const struct route_entry *apply_req(const struct route_config *rc, struct http_headers *h,
					   const char *authority, const char *path)
{
	const struct virtual_host *vh;
	const struct weighted_cluster *wc = NULL;

	req_set(h, authority, path, NULL);
	const struct route_entry *re = route_match(rc, h, &vh);
	CHECK(re != NULL);
	if (!re)
		return NULL;
	route_pick_cluster(re, 0, &wc);
	route_apply_request(rc, vh, re, wc, h);
	return re;
}

TEST(route_prefix_rewrite)
{
	struct route_config *rc = compile(
		"{'virtual_hosts': [{'name': 'v', 'domains': ['*'], 'routes': ["
		" {'match': {'prefix': '/api/'}, 'route': {'cluster': 'c', 'prefix_rewrite': '/v2/'}},"
		" {'match': {'prefix': '/CI', 'case_sensitive': false}, 'route': {'cluster': 'c', 'prefix_rewrite': '/ci'}},"
		" {'match': {'path': '/old'}, 'route': {'cluster': 'c', 'prefix_rewrite': '/new'}},"
		" {'match': {'path_separated_prefix': '/sep'}, 'route': {'cluster': 'c', 'prefix_rewrite': '/'}},"
		" {'match': {'safe_regex': {'regex': '/rx/.*'}}, 'route': {'cluster': 'c', 'prefix_rewrite': '/whole'}},"
		" {'match': {'prefix': '/keep'}, 'route': {'cluster': 'c', 'prefix_rewrite': ''}}"
		"]}]}");
	CHECK(rc != NULL);
	if (!rc)
		return;
	struct http_headers h;
	apply_req(rc, &h, "h", "/api/users?id=1");
	CHECK_STR(values(&h, ":path"), "/v2/users?id=1");
	hdrs_free(&h);
	apply_req(rc, &h, "h", "/cIx/y");
	CHECK_STR(values(&h, ":path"), "/cix/y");
	hdrs_free(&h);
	apply_req(rc, &h, "h", "/old?a=b");
	CHECK_STR(values(&h, ":path"), "/new?a=b");
	hdrs_free(&h);
	apply_req(rc, &h, "h", "/sep/rest");
	CHECK_STR(values(&h, ":path"), "//rest");
	hdrs_free(&h);
	apply_req(rc, &h, "h", "/rx/a/b?q");
	CHECK_STR(values(&h, ":path"), "/whole?q");   /* regex route: whole path replaced */
	hdrs_free(&h);
	apply_req(rc, &h, "h", "/keep/x");
	CHECK_STR(values(&h, ":path"), "/keep/x");    /* "" = no rewrite (proto3 default) */
	hdrs_free(&h);
	route_config_free(rc);
}

TEST(route_regex_rewrite)
{
	struct route_config *rc = compile(
		"{'virtual_hosts': [{'name': 'v', 'domains': ['*'], 'routes': ["
		" {'match': {'prefix': '/svc/'}, 'route': {'cluster': 'c', 'regex_rewrite': {'pattern': {'regex': '^/svc/([^/]+)/v([0-9]+)/(.*)$'}, 'substitution': '/\\\\3/\\\\1?ver=\\\\2'}}},"
		" {'match': {'prefix': '/all/'}, 'route': {'cluster': 'c', 'regex_rewrite': {'pattern': {'regex': 'one'}, 'substitution': 'two'}}},"
		" {'match': {'prefix': '/empty'}, 'route': {'cluster': 'c', 'regex_rewrite': {'pattern': {'regex': 'x*'}, 'substitution': '-'}}},"
		" {'match': {'prefix': '/bs'}, 'route': {'cluster': 'c', 'regex_rewrite': {'pattern': {'regex': '(b)s'}, 'substitution': '\\\\\\\\\\\\0'}}}"
		"]}]}");
	CHECK(rc != NULL);
	if (!rc)
		return;
	struct http_headers h;
	apply_req(rc, &h, "h", "/svc/users/v3/list/all");
	CHECK_STR(values(&h, ":path"), "/list/all/users?ver=3");
	hdrs_free(&h);
	apply_req(rc, &h, "h", "/all/one/x/one?q=one");
	CHECK_STR(values(&h, ":path"), "/all/two/x/two?q=one");   /* query untouched */
	hdrs_free(&h);
	apply_req(rc, &h, "h", "/empty");
	CHECK_STR(values(&h, ":path"), "-/-e-m-p-t-y-");          /* RE2 GlobalReplace semantics */
	hdrs_free(&h);
	apply_req(rc, &h, "h", "/bs");
	CHECK_STR(values(&h, ":path"), "/\\bs");                   /* "\\" and "\0" */
	hdrs_free(&h);
	route_config_free(rc);
}

TEST(route_host_rewrite)
{
	struct route_config *rc = compile(
		"{'virtual_hosts': [{'name': 'v', 'domains': ['*'], 'routes': ["
		" {'match': {'prefix': '/plain'}, 'route': {'cluster': 'c', 'host_rewrite_literal': 'upstream.local'}},"
		" {'match': {'prefix': '/xfh'}, 'route': {'cluster': 'c', 'host_rewrite_literal': 'up:81', 'append_x_forwarded_host': true}}"
		"]}]}");
	CHECK(rc != NULL);
	if (!rc)
		return;
	struct http_headers h;
	apply_req(rc, &h, "front.example", "/plain");
	CHECK_STR(values(&h, ":authority"), "upstream.local");
	CHECK_STR(values(&h, "x-forwarded-host"), "(absent)");   /* Envoy: only when asked */
	hdrs_free(&h);
	apply_req(rc, &h, "front.example", "/xfh");
	CHECK_STR(values(&h, ":authority"), "up:81");
	CHECK_STR(values(&h, "x-forwarded-host"), "front.example");
	hdrs_free(&h);

	/* An existing x-forwarded-host is appended to, unless it already ends
	 * with this host. */
	const struct virtual_host *vh;
	req_set(&h, "front.example", "/xfh", "x-forwarded-host", "edge.example", NULL);
	const struct route_entry *re = route_match(rc, &h, &vh);
	CHECK(re != NULL);
	if (re) {
		route_apply_request(rc, vh, re, NULL, &h);
		CHECK_STR(values(&h, "x-forwarded-host"), "edge.example,front.example");
	}
	hdrs_free(&h);
	req_set(&h, "front.example", "/xfh", "x-forwarded-host", "a, front.example", NULL);
	re = route_match(rc, &h, &vh);
	if (re) {
		route_apply_request(rc, vh, re, NULL, &h);
		CHECK_STR(values(&h, "x-forwarded-host"), "a, front.example");
	}
	hdrs_free(&h);
	route_config_free(rc);
}

/* ------------------------------------------------------------------------
 * Redirects and direct responses */

static const char *const redirect_cfg =
	"{'virtual_hosts': [{'name': 'v', 'domains': ['*'], 'routes': ["
	" {'name': 'https', 'match': {'prefix': '/https'}, 'redirect': {'https_redirect': true}},"
	" {'name': 'host', 'match': {'prefix': '/host'}, 'redirect': {'host_redirect': 'new.example', 'response_code': 'FOUND'}},"
	" {'name': 'port', 'match': {'prefix': '/port'}, 'redirect': {'port_redirect': 8443, 'response_code': 'PERMANENT_REDIRECT'}},"
	" {'name': 'hostport', 'match': {'prefix': '/hp'}, 'redirect': {'host_redirect': 'n.example:1', 'port_redirect': 2}},"
	" {'name': 'path', 'match': {'prefix': '/path'}, 'redirect': {'path_redirect': '/elsewhere', 'response_code': 'SEE_OTHER'}},"
	" {'name': 'pathq', 'match': {'prefix': '/pq'}, 'redirect': {'path_redirect': '/p?fixed=1', 'strip_query': true}},"
	" {'name': 'strip', 'match': {'prefix': '/strip'}, 'redirect': {'strip_query': true, 'response_code': 'TEMPORARY_REDIRECT'}},"
	" {'name': 'prefix', 'match': {'prefix': '/old/'}, 'redirect': {'prefix_rewrite': '/new/'}},"
	" {'name': 'scheme', 'match': {'prefix': '/scheme'}, 'redirect': {'scheme_redirect': 'HTTP'}},"
	" {'name': 'rel', 'match': {'prefix': '/rel'}, 'redirect': {'path_redirect': 'rel'}},"
	" {'name': 'numcode', 'match': {'prefix': '/num'}, 'redirect': {'response_code': 1}}"
	"]}]}";

/* Location for authority/path; "" if none, "-1" if it does not fit. */
static const char *location(const struct route_config *rc, const char *authority,
			    const char *path, bool tls, size_t buflen, int *status)
{
	static char buf[512];
	struct http_headers h;

	req_set(&h, authority, path, NULL);
	const struct route_entry *re = route_match(rc, &h, NULL);
	buf[0] = '\0';
	if (re && re->kind == ROUTE_ACTION_REDIRECT) {
		if (status)
			*status = re->redirect_status;
		int n = route_redirect_location(re, &h, tls, buf, buflen);
		if (n < 0)
			snprintf(buf, sizeof(buf), "-1");
		else if ((size_t)n != strlen(buf))
			snprintf(buf, sizeof(buf), "bad length");
	}
	hdrs_free(&h);
	return buf;
}

TEST(route_redirects)
{
	struct route_config *rc = compile(redirect_cfg);
	int st = 0;
	CHECK(rc != NULL);
	if (!rc)
		return;
	CHECK_STR(location(rc, "example.com", "/https/x?a=1", false, 512, &st),
		  "https://example.com/https/x?a=1");
	CHECK_INT(st, 301);
	/* scheme changes http->https: the old scheme's default port goes */
	CHECK_STR(location(rc, "example.com:80", "/https", false, 512, NULL),
		  "https://example.com/https");
	CHECK_STR(location(rc, "example.com:8080", "/https", false, 512, NULL),
		  "https://example.com:8080/https");
	CHECK_STR(location(rc, "example.com:443", "/https", false, 512, NULL),
		  "https://example.com:443/https");   /* :443 is not http's default */
	CHECK_STR(location(rc, "example.com:443", "/https", true, 512, NULL),
		  "https://example.com:443/https");   /* same scheme: untouched */
	CHECK_STR(location(rc, "[::1]:80", "/https", false, 512, NULL), "https://[::1]/https");
	CHECK_STR(location(rc, "example.com:443", "/scheme", true, 512, NULL),
		  "http://example.com/scheme");       /* https->http drops :443; lowercased */
	CHECK_STR(location(rc, "example.com:80", "/scheme", true, 512, NULL),
		  "http://example.com:80/scheme");    /* :80 is not https's default: kept */
	CHECK_STR(location(rc, "example.com", "/host/a?b", false, 512, &st),
		  "http://new.example/host/a?b");
	CHECK_INT(st, 302);
	CHECK_STR(location(rc, "example.com:9000", "/port", true, 512, &st),
		  "https://example.com:8443/port");
	CHECK_INT(st, 308);
	CHECK_STR(location(rc, "[::1]:9000", "/port", true, 512, NULL), "https://[::1]:8443/port");
	CHECK_STR(location(rc, "x", "/hp", false, 512, NULL), "http://n.example:2/hp");
	CHECK_STR(location(rc, "example.com", "/path/1?x=y", false, 512, &st),
		  "http://example.com/elsewhere?x=y");
	CHECK_INT(st, 303);
	CHECK_STR(location(rc, "example.com", "/pq?x=y", false, 512, NULL),
		  "http://example.com/p?fixed=1");    /* its own query wins, kept despite strip_query */
	CHECK_STR(location(rc, "example.com", "/strip/a?x=y", false, 512, &st),
		  "http://example.com/strip/a");
	CHECK_INT(st, 307);
	CHECK_STR(location(rc, "example.com", "/old/thing?k=v", false, 512, NULL),
		  "http://example.com/new/thing?k=v");
	CHECK_STR(location(rc, "example.com", "/rel", false, 512, NULL), "http://example.com/rel");
	CHECK_STR(location(rc, "example.com", "/num", false, 512, &st), "http://example.com/num");
	CHECK_INT(st, 302);
	/* buffer sizes: exact fit (with NUL), one byte short */
	const char *want = "http://new.example/host";
	CHECK_STR(location(rc, "e", "/host", false, strlen(want) + 1, NULL), want);
	CHECK_STR(location(rc, "e", "/host", false, strlen(want), NULL), "-1");
	CHECK_STR(location(rc, "e", "/rel", false, strlen("http://e/rel") + 1, NULL), "http://e/rel");
	CHECK_STR(location(rc, "e", "/rel", false, strlen("http://e/rel"), NULL), "-1");
	CHECK_STR(location(rc, "e", "/host", false, 0, NULL), "-1");
	route_config_free(rc);
}

TEST(route_direct_response)
{
	struct route_config *rc = compile(
		"{'virtual_hosts': [{'name': 'v', 'domains': ['*'], 'routes': ["
		" {'name': 's', 'match': {'prefix': '/s'}, 'direct_response': {'status': 404, 'body': {'inline_string': 'not here'}}},"
		" {'name': 'b', 'match': {'prefix': '/b'}, 'direct_response': {'status': 200, 'body': {'inline_bytes': 'aGk-Pw'}}},"
		" {'name': 'n', 'match': {'prefix': '/n'}, 'direct_response': {'status': 503}}"
		"]}]}");
	CHECK(rc != NULL);
	if (!rc)
		return;
	struct http_headers h;
	req_set(&h, "h", "/s", NULL);
	const struct route_entry *re = route_match(rc, &h, NULL);
	CHECK(re && re->kind == ROUTE_ACTION_DIRECT && re->direct_status == 404);
	if (re) {
		CHECK_INT(re->direct_body_len, 8);
		CHECK_STR(re->direct_body, "not here");
		CHECK(route_pick_cluster(re, 0, NULL) == NULL);
	}
	hdrs_free(&h);
	req_set(&h, "h", "/b", NULL);
	re = route_match(rc, &h, NULL);
	CHECK(re && re->direct_status == 200 && re->direct_body_len == 4 &&
	      !memcmp(re->direct_body, "hi>?", 4));   /* URL-safe base64, no padding */
	hdrs_free(&h);
	req_set(&h, "h", "/n", NULL);
	re = route_match(rc, &h, NULL);
	CHECK(re && re->direct_status == 503 && re->direct_body == NULL);
	hdrs_free(&h);
	route_config_free(rc);
}

/* ------------------------------------------------------------------------
 * Header mutations */

static const char *const mut_cfg =
	"{%s"
	" 'request_headers_to_add': [{'header': {'key': 'x-level', 'value': 'rc'}, 'append_action': 'OVERWRITE_IF_EXISTS_OR_ADD'},"
	"                            {'header': {'key': 'x-rc', 'value': '1'}}],"
	" 'request_headers_to_remove': ['x-drop-rc'],"
	" 'response_headers_to_add': [{'header': {'key': 'x-resp', 'value': 'rc'}}],"
	" 'virtual_hosts': [{'name': 'v', 'domains': ['*'],"
	"  'request_headers_to_add': [{'header': {'key': 'x-level', 'value': 'vh'}, 'append': false}],"
	"  'request_headers_to_remove': ['X-Drop-VH'],"
	"  'response_headers_to_add': [{'header': {'key': 'x-resp', 'value': 'vh'}}],"
	"  'routes': [{'match': {'prefix': '/'}, 'route': {'weighted_clusters': {'clusters': [{'name': 'w', 'weight': 1,"
	"      'request_headers_to_add': [{'header': {'key': 'x-level', 'value': 'wc'}}],"
	"      'response_headers_to_add': [{'header': {'key': 'x-resp', 'value': 'wc'}}],"
	"      'response_headers_to_remove': ['server']}]}},"
	"   'request_headers_to_add': [{'header': {'key': 'x-level', 'value': 'route'}, 'append_action': 'APPEND_IF_EXISTS_OR_ADD'}],"
	"   'response_headers_to_add': [{'header': {'key': 'x-resp', 'value': 'route'}}]}]}]}";

TEST(route_header_mutation_levels)
{
	char text[4096];

	snprintf(text, sizeof(text), mut_cfg, "");
	struct route_config *rc = compile(text);
	CHECK(rc != NULL);
	if (!rc)
		return;
	struct http_headers h;
	const struct virtual_host *vh;
	const struct weighted_cluster *wc;
	req_set(&h, "h", "/", "x-level", "client", "x-drop-rc", "1", "x-drop-vh", "1", "x-keep", "1",
		NULL);
	const struct route_entry *re = route_match(rc, &h, &vh);
	CHECK(re != NULL);
	if (!re)
		goto out;
	route_pick_cluster(re, 0, &wc);
	CHECK(wc != NULL);
	route_apply_request(rc, vh, re, wc, &h);
	/* wc appends, route appends, vh overwrites (append: false), rc overwrites */
	CHECK_STR(values(&h, "x-level"), "rc");
	CHECK_STR(values(&h, "x-rc"), "1");
	CHECK_STR(values(&h, "x-drop-rc"), "(absent)");
	CHECK_STR(values(&h, "x-drop-vh"), "(absent)");
	CHECK_STR(values(&h, "x-keep"), "1");
	hdrs_free(&h);

	hdrs_init(&h);
	hdrs_add_cstr(&h, ":status", "200");
	hdrs_add_cstr(&h, "server", "upstream");
	route_apply_response(rc, vh, re, wc, &h);
	CHECK_STR(values(&h, "x-resp"), "wc|route|vh|rc");   /* most specific first */
	CHECK_STR(values(&h, "server"), "(absent)");
	hdrs_free(&h);

	/* No route (e.g. a 404 local reply): only the route config's level. */
	hdrs_init(&h);
	route_apply_response(rc, NULL, NULL, NULL, &h);
	CHECK_STR(values(&h, "x-resp"), "rc");
	hdrs_free(&h);
	route_config_free(rc);

	/* most_specific_header_mutations_wins reverses route/vh/rc. */
	snprintf(text, sizeof(text), mut_cfg, "'most_specific_header_mutations_wins': true,");
	rc = compile(text);
	CHECK(rc != NULL);
	if (!rc)
		return;
	req_set(&h, "h", "/", "x-level", "client", NULL);
	re = route_match(rc, &h, &vh);
	if (re) {
		route_pick_cluster(re, 0, &wc);
		route_apply_request(rc, vh, re, wc, &h);
		CHECK_STR(values(&h, "x-level"), "vh|route");
	}
	hdrs_free(&h);
	hdrs_init(&h);
	if (re) {
		route_apply_response(rc, vh, re, wc, &h);
		CHECK_STR(values(&h, "x-resp"), "wc|rc|vh|route");
	}
	hdrs_free(&h);
out:
	route_config_free(rc);
}

TEST(route_header_append_actions)
{
	struct route_config *rc = compile(
		"{'virtual_hosts': [{'name': 'v', 'domains': ['*'], 'routes': [{'match': {'prefix': '/'}, 'route': {'cluster': 'c'},"
		" 'request_headers_to_remove': ['x-gone'],"
		" 'request_headers_to_add': ["
		"  {'header': {'key': 'x-append', 'value': 'new'}},"
		"  {'header': {'key': 'x-absent-yes', 'value': 'added'}, 'append_action': 'ADD_IF_ABSENT'},"
		"  {'header': {'key': 'x-absent-no', 'value': 'added'}, 'append_action': 'ADD_IF_ABSENT'},"
		"  {'header': {'key': 'x-over', 'value': 'over'}, 'append_action': 'OVERWRITE_IF_EXISTS_OR_ADD'},"
		"  {'header': {'key': 'x-over-new', 'value': 'over'}, 'append_action': 'OVERWRITE_IF_EXISTS_OR_ADD'},"
		"  {'header': {'key': 'x-ifexists-yes', 'value': 'over'}, 'append_action': 'OVERWRITE_IF_EXISTS'},"
		"  {'header': {'key': 'x-ifexists-no', 'value': 'over'}, 'append_action': 'OVERWRITE_IF_EXISTS'},"
		"  {'header': {'key': 'x-gone', 'value': 'readded'}, 'append_action': 'ADD_IF_ABSENT'},"
		"  {'header': {'key': 'x-empty', 'value': ''}},"
		"  {'header': {'key': 'x-empty-kept', 'value': ''}, 'keep_empty_value': true},"
		"  {'header': {'key': 'x-twice', 'value': '1'}, 'append_action': 'ADD_IF_ABSENT'},"
		"  {'header': {'key': 'x-twice', 'value': '2'}, 'append_action': 'ADD_IF_ABSENT'},"
		"  {'header': {'key': 'X-Mixed', 'value': 'v'}, 'append_action': 2}"
		" ]}]}]}");
	CHECK(rc != NULL);
	if (!rc)
		return;
	struct http_headers h;
	const struct virtual_host *vh;
	req_set(&h, "h", "/", "x-append", "old", "x-absent-no", "orig", "x-over", "a", "x-over", "b",
		"x-ifexists-yes", "orig", "x-gone", "1", NULL);
	const struct route_entry *re = route_match(rc, &h, &vh);
	CHECK(re != NULL);
	if (re)
		route_apply_request(rc, vh, re, NULL, &h);
	CHECK_STR(values(&h, "x-append"), "old|new");
	CHECK_STR(values(&h, "x-absent-yes"), "added");
	CHECK_STR(values(&h, "x-absent-no"), "orig");
	CHECK_STR(values(&h, "x-over"), "over");
	CHECK_STR(values(&h, "x-over-new"), "over");
	CHECK_STR(values(&h, "x-ifexists-yes"), "over");
	CHECK_STR(values(&h, "x-ifexists-no"), "(absent)");
	CHECK_STR(values(&h, "x-gone"), "readded");          /* removal happens first */
	CHECK_STR(values(&h, "x-empty"), "(absent)");
	CHECK_STR(values(&h, "x-empty-kept"), "");
	CHECK(hdrs_find(&h, "x-empty-kept", 12, 0) >= 0);
	CHECK_STR(values(&h, "x-twice"), "1|2");             /* judged before this level adds */
	CHECK_STR(values(&h, "x-mixed"), "v");
	hdrs_free(&h);
	route_config_free(rc);
}

/* ------------------------------------------------------------------------
 * Compile errors */

#define VH(routes) "{'name': 'rc1', 'virtual_hosts': [{'name': 'v', 'domains': ['*'], 'routes': [" routes "]}]}"
#define OK_ROUTE "{'match': {'prefix': '/'}, 'route': {'cluster': 'c'}}"

TEST(route_compile_errors)
{
	CHECK_STR(compile_err(VH(OK_ROUTE ", {'match': {'prefx': '/'}, 'route': {'cluster': 'c'}}")),
		  "virtual_hosts[0].routes[1].match.prefx: unknown field 'prefx'");
	CHECK_STR(compile_err("{'virtual_hosts': [], 'vhosts': []}"), "vhosts: unknown field 'vhosts'");
	CHECK_STR(compile_err(VH("{'match': {'prefix': '/'}, 'route': {'cluster': 'c', 'no_such_policy': {}}}")),
		  "virtual_hosts[0].routes[0].route.no_such_policy: unknown field 'no_such_policy'");
	CHECK_STR(compile_err(VH("{'match': {'prefix': '/'}}")),
		  "virtual_hosts[0].routes[0]: one of 'route', 'redirect' or 'direct_response' is required");
	CHECK_STR(compile_err(VH("{'match': {'prefix': '/'}, 'route': {'cluster': 'c'}, 'redirect': {}}")),
		  "virtual_hosts[0].routes[0]: only one of 'route', 'redirect' or 'direct_response' may "
		  "be set ('route' and 'redirect' are both set)");
	CHECK_STR(compile_err(VH("{'route': {'cluster': 'c'}}")),
		  "virtual_hosts[0].routes[0].match: missing required field 'match'");
	CHECK_STR(compile_err(VH("{'match': {}, 'route': {'cluster': 'c'}}")),
		  "virtual_hosts[0].routes[0].match: one of 'prefix', 'path', 'safe_regex', "
		  "'path_separated_prefix' or 'connect_matcher' is required");
	CHECK_STR(compile_err(VH("{'match': {'prefix': '/'}, 'route': {}}")),
		  "virtual_hosts[0].routes[0].route: one of 'cluster' or 'weighted_clusters' is required");
	/* bad regexes: PCRE2's message at the regex field */
	CHECK_CONTAINS(compile_err(VH("{'match': {'safe_regex': {'regex': '/a(b'}}, 'route': {'cluster': 'c'}}")),
		       "virtual_hosts[0].routes[0].match.safe_regex.regex: invalid regex '/a(b': missing closing parenthesis");
	CHECK_CONTAINS(compile_err(VH("{'match': {'prefix': '/', 'headers': [{'name': 'x', 'safe_regex_match': {'regex': '[z-a]'}}]}, 'route': {'cluster': 'c'}}")),
		       "virtual_hosts[0].routes[0].match.headers[0].safe_regex_match.regex: invalid regex '[z-a]'");
	CHECK_CONTAINS(compile_err(VH("{'match': {'prefix': '/'}, 'route': {'cluster': 'c', 'regex_rewrite': {'pattern': {'regex': '*x'}, 'substitution': ''}}}")),
		       "virtual_hosts[0].routes[0].route.regex_rewrite.pattern.regex: invalid regex '*x'");
	CHECK_STR(compile_err(VH("{'match': {'prefix': '/'}, 'route': {'cluster': 'c', 'regex_rewrite': {'pattern': {'regex': '(a)'}, 'substitution': '\\\\2'}}}")),
		  "virtual_hosts[0].routes[0].route.regex_rewrite.substitution: substitution refers to "
		  "group \\2 but the pattern has only 1 capture group");
	CHECK_STR(compile_err(VH("{'match': {'prefix': '/'}, 'route': {'cluster': 'c', 'prefix_rewrite': '/x', 'regex_rewrite': {'pattern': {'regex': 'a'}, 'substitution': 'b'}}}")),
		  "virtual_hosts[0].routes[0].route: only one of 'prefix_rewrite' or 'regex_rewrite' may "
		  "be set ('prefix_rewrite' and 'regex_rewrite' are both set)");
	/* duplicate domains, across virtual hosts and case-insensitively */
	CHECK_STR(compile_err("{'name': 'r', 'virtual_hosts': ["
			      "{'name': 'a', 'domains': ['x.com', '*.y.com']},"
			      "{'name': 'b', 'domains': ['z.com', '*.Y.com']}]}"),
		  "virtual_hosts[1].domains[1]: only unique values for domains are permitted: duplicate "
		  "entry of domain '*.Y.com' in route configuration 'r'");
	CHECK_STR(compile_err("{'name': 'r', 'virtual_hosts': ["
			      "{'name': 'a', 'domains': ['*']}, {'name': 'b', 'domains': ['*']}]}"),
		  "virtual_hosts[1].domains[0]: only a single wildcard domain '*' is permitted in route "
		  "configuration 'r'");
	CHECK_STR(compile_err("{'virtual_hosts': [{'name': 'a', 'domains': []}]}"),
		  "virtual_hosts[0].domains: at least one domain is required");
	CHECK_STR(compile_err("{'virtual_hosts': [{'domains': ['a']}]}"),
		  "virtual_hosts[0].name: missing required field 'name'");
	/* weights */
	CHECK_STR(compile_err(VH("{'match': {'prefix': '/'}, 'route': {'weighted_clusters': {'clusters': [{'name': 'a', 'weight': 0}, {'name': 'b', 'weight': 0}]}}}")),
		  "virtual_hosts[0].routes[0].route.weighted_clusters: Sum of weights in the "
		  "weighted_cluster must be greater than 0.");
	CHECK_STR(compile_err(VH("{'match': {'prefix': '/'}, 'route': {'weighted_clusters': {'clusters': [{'name': 'a', 'weight': 1}], 'total_weight': 100}}}")),
		  "virtual_hosts[0].routes[0].route.weighted_clusters.total_weight: Sum of weights in the "
		  "weighted_cluster should add up to 100 (they add up to 1)");
	CHECK_STR(compile_err(VH("{'match': {'prefix': '/'}, 'route': {'weighted_clusters': {'clusters': [{'name': 'a'}]}}}")),
		  "virtual_hosts[0].routes[0].route.weighted_clusters.clusters[0].weight: missing "
		  "required field 'weight'");
	route_config_free(NULL);   /* NULL is fine */
}

TEST(route_compile_errors_more)
{
	/* header mutations */
	CHECK_STR(compile_err("{'request_headers_to_add': [{'header': {'key': ':path', 'value': '/'}}]}"),
		  "request_headers_to_add[0].header.key: :-prefixed or host headers may not be modified");
	CHECK_STR(compile_err("{'virtual_hosts': [{'name': 'v', 'domains': ['*'], 'response_headers_to_add': [{'header': {'key': 'Host', 'value': 'x'}}]}]}"),
		  "virtual_hosts[0].response_headers_to_add[0].header.key: :-prefixed or host headers "
		  "may not be modified");
	CHECK_STR(compile_err(VH("{'match': {'prefix': '/'}, 'route': {'cluster': 'c'}, 'request_headers_to_remove': ['x-ok', 'HOST']}")),
		  "virtual_hosts[0].routes[0].request_headers_to_remove[1]: :-prefixed or host headers "
		  "may not be removed");
	CHECK_STR(compile_err("{'response_headers_to_remove': [':status']}"),
		  "response_headers_to_remove[0]: :-prefixed or host headers may not be removed");
	CHECK_STR(compile_err("{'request_headers_to_add': [{'header': {'key': 'x', 'value': 'y'}, 'append': true, 'append_action': 'ADD_IF_ABSENT'}]}"),
		  "request_headers_to_add[0]: Both append and append_action are set and it's not allowed");
	CHECK_STR(compile_err("{'request_headers_to_add': [{'header': {'key': 'x', 'value': 'y'}, 'append_action': 'SOMETIMES'}]}"),
		  "request_headers_to_add[0].append_action: unknown value 'SOMETIMES' (expected one of "
		  "APPEND_IF_EXISTS_OR_ADD, ADD_IF_ABSENT, OVERWRITE_IF_EXISTS_OR_ADD, OVERWRITE_IF_EXISTS)");
	CHECK_STR(compile_err("{'request_headers_to_add': [{'header': {'key': 'bad key', 'value': 'y'}}]}"),
		  "request_headers_to_add[0].header.key: invalid header name 'bad key'");
	CHECK_STR(compile_err("{'request_headers_to_add': [{'header': {'key': 'x', 'value': 'a\\r\\nb: c'}}]}"),
		  "request_headers_to_add[0].header.value: must be a valid header value (no CR or LF, at "
		  "most 16384 bytes)");
	CHECK_STR(compile_err("{'request_headers_to_add': [{'header': {'key': 'x', 'raw_value': 'eA=='}}]}"),
		  "request_headers_to_add[0].header.raw_value: unknown field 'raw_value'");
	/* matchers */
	CHECK_STR(compile_err(VH("{'match': {'path_separated_prefix': '/a/'}, 'route': {'cluster': 'c'}}")),
		  "virtual_hosts[0].routes[0].match.path_separated_prefix: '/a/' is not a valid separated "
		  "prefix (it must not contain '?' or '#' nor end with '/')");
	CHECK_STR(compile_err(VH("{'match': {'prefix': '/', 'path': '/'}, 'route': {'cluster': 'c'}}")),
		  "virtual_hosts[0].routes[0].match: only one of 'prefix', 'path', 'safe_regex', "
		  "'path_separated_prefix' or 'connect_matcher' may be set ('prefix' and 'path' are both set)");
	CHECK_STR(compile_err(VH("{'match': {'prefix': '/', 'headers': [{'name': 'x', 'string_match': {'safe_regex': {'regex': 'a'}, 'ignore_case': true}}]}, 'route': {'cluster': 'c'}}")),
		  "virtual_hosts[0].routes[0].match.headers[0].string_match: ignore_case has no effect "
		  "for safe_regex");
	CHECK_STR(compile_err(VH("{'match': {'prefix': '/', 'headers': [{'name': 'x', 'prefix_match': ''}]}, 'route': {'cluster': 'c'}}")),
		  "virtual_hosts[0].routes[0].match.headers[0].prefix_match: must not be empty");
	CHECK_STR(compile_err(VH("{'match': {'prefix': '/', 'headers': [{'name': 'x', 'range_match': {'start': 1, 'end': 2}}]}, 'route': {'cluster': 'c'}}")),
		  "virtual_hosts[0].routes[0].match.headers[0].range_match: unknown field 'range_match'");
	CHECK_STR(compile_err(VH("{'match': {'prefix': '/', 'query_parameters': [{'name': 'q', 'string_match': {}}]}, 'route': {'cluster': 'c'}}")),
		  "virtual_hosts[0].routes[0].match.query_parameters[0].string_match: one of 'exact', "
		  "'prefix', 'suffix', 'contains' or 'safe_regex' is required");
	CHECK_STR(compile_err(VH("{'match': {'safe_regex': {'regex': ''}}, 'route': {'cluster': 'c'}}")),
		  "virtual_hosts[0].routes[0].match.safe_regex.regex: must not be empty");
	/* actions */
	CHECK_STR(compile_err(VH("{'match': {'prefix': '/'}, 'route': {'cluster': 'c', 'timeout': '5'}}")),
		  "virtual_hosts[0].routes[0].route.timeout: invalid duration '5' (expected e.g. \"1.5s\")");
	CHECK_STR(compile_err(VH("{'match': {'prefix': '/'}, 'direct_response': {'status': 99}}")),
		  "virtual_hosts[0].routes[0].direct_response.status: expected an HTTP status in 200..599");
	CHECK_STR(compile_err(VH("{'match': {'prefix': '/'}, 'direct_response': {}}")),
		  "virtual_hosts[0].routes[0].direct_response.status: missing required field 'status'");
	CHECK_STR(compile_err(VH("{'match': {'prefix': '/'}, 'direct_response': {'status': 200, 'body': {'filename': '/etc/passwd'}}}")),
		  "virtual_hosts[0].routes[0].direct_response.body.filename: unknown field 'filename'");
	CHECK_STR(compile_err(VH("{'match': {'prefix': '/'}, 'direct_response': {'status': 200, 'body': {'inline_bytes': '!!'}}}")),
		  "virtual_hosts[0].routes[0].direct_response.body.inline_bytes: invalid base64");
	CHECK_STR(compile_err("{'max_direct_response_body_size_bytes': 4, 'virtual_hosts': [{'name': 'v', 'domains': ['*'], 'routes': "
			      "[{'match': {'prefix': '/'}, 'direct_response': {'status': 200, 'body': {'inline_string': 'hello'}}}]}]}"),
		  "virtual_hosts[0].routes[0].direct_response.body: response body size is 5 bytes; "
		  "maximum is 4");
	CHECK_STR(compile_err(VH("{'match': {'prefix': '/'}, 'redirect': {'response_code': 'GONE'}}")),
		  "virtual_hosts[0].routes[0].redirect.response_code: unknown value 'GONE' (expected one "
		  "of MOVED_PERMANENTLY, FOUND, SEE_OTHER, TEMPORARY_REDIRECT, PERMANENT_REDIRECT)");
	CHECK_STR(compile_err(VH("{'match': {'prefix': '/'}, 'redirect': {'https_redirect': true, 'scheme_redirect': 'ftp'}}")),
		  "virtual_hosts[0].routes[0].redirect: only one of 'https_redirect' or 'scheme_redirect' "
		  "may be set ('https_redirect' and 'scheme_redirect' are both set)");
	CHECK_STR(compile_err(VH("{'match': {'prefix': '/'}, 'redirect': {'port_redirect': 70000}}")),
		  "virtual_hosts[0].routes[0].redirect.port_redirect: expected a port in 0..65535");
	CHECK_STR(compile_err(VH("{'match': {'prefix': '/'}, 'route': {'cluster': ''}}")),
		  "virtual_hosts[0].routes[0].route.cluster: must not be empty");
	CHECK_STR(compile_err(VH("{'match': {'prefix': '/'}, 'route': {'cluster': 7}}")),
		  "virtual_hosts[0].routes[0].route.cluster: expected a string");
	CHECK_STR(compile_err("{'virtual_hosts': {}}"), "virtual_hosts: expected a list");
	CHECK_STR(compile_err("[]"), "<root>: expected an object");
}

TEST(route_camel_case_keys)
{
	/* proto3 JSON: lowerCamelCase names are accepted everywhere. */
	struct route_config *rc = compile(
		"{'virtualHosts': [{'name': 'v', 'domains': ['*'], 'routes': ["
		" {'name': 'r', 'match': {'pathSeparatedPrefix': '/a', 'queryParameters': [{'name': 'x', 'presentMatch': true}]},"
		"  'route': {'cluster': 'c', 'prefixRewrite': '/b', 'hostRewriteLiteral': 'h2'},"
		"  'requestHeadersToAdd': [{'header': {'key': 'k', 'value': 'v'}, 'appendAction': 'ADD_IF_ABSENT', 'keepEmptyValue': false}]}"
		"]}]}");
	CHECK(rc != NULL);
	if (!rc)
		return;
	struct http_headers h;
	apply_req(rc, &h, "h", "/a/z?x");
	CHECK_STR(values(&h, ":path"), "/b/z?x");
	CHECK_STR(values(&h, ":authority"), "h2");
	CHECK_STR(values(&h, "k"), "v");
	hdrs_free(&h);
	route_config_free(rc);
}

/* Workers share one table and match regexes concurrently. */
struct mt_arg {
	const struct route_config *rc;
	int ok;
};

static void *mt_worker(void *p)
{
	struct mt_arg *a = p;
	char path[64];

	for (int i = 0; i < 2000; i++) {
		struct http_headers h;
		const struct virtual_host *vh;
		snprintf(path, sizeof(path), "/item/%d/detail", i);
		req_set(&h, "h", path, "x-v", i % 2 ? "odd" : "even", NULL);
		const struct route_entry *re = route_match(a->rc, &h, &vh);
		if (re && re->name && !strcmp(re->name, i % 2 ? "odd" : "even")) {
			route_apply_request(a->rc, vh, re, NULL, &h);
			size_t n;
			const char *np = hdrs_get(&h, ":path", &n);
			char want[64];
			snprintf(want, sizeof(want), "/detail/%d", i);
			if (np && !strcmp(np, want))
				a->ok++;
		}
		hdrs_free(&h);
	}
	return NULL;
}

TEST(route_concurrent_regex)
{
	struct route_config *rc = compile(
		"{'virtual_hosts': [{'name': 'v', 'domains': ['*'], 'routes': ["
		" {'name': 'odd', 'match': {'safe_regex': {'regex': '/item/([0-9]+)/(\\\\w+)'}, 'headers': [{'name': 'x-v', 'safe_regex_match': {'regex': 'o.d'}}]},"
		"  'route': {'cluster': 'c', 'regex_rewrite': {'pattern': {'regex': '^/item/([0-9]+)/(\\\\w+)$'}, 'substitution': '/\\\\2/\\\\1'}}},"
		" {'name': 'even', 'match': {'safe_regex': {'regex': '/item/[0-9]*[02468]/.*'}},"
		"  'route': {'cluster': 'c', 'regex_rewrite': {'pattern': {'regex': '/item/([0-9]+)/(detail)'}, 'substitution': '/\\\\2/\\\\1'}}}"
		"]}]}");
	CHECK(rc != NULL);
	if (!rc)
		return;
	pthread_t t[4];
	struct mt_arg a[4];
	for (int i = 0; i < 4; i++) {
		a[i].rc = rc;
		a[i].ok = 0;
		pthread_create(&t[i], NULL, mt_worker, &a[i]);
	}
	for (int i = 0; i < 4; i++) {
		pthread_join(t[i], NULL);
		CHECK_INT(a[i].ok, 2000);
	}
	route_config_free(rc);
}

/* CONNECT requests (no :path) match only connect_matcher routes; other
 * requests never match them.  connect_config marks CONNECT termination. */
TEST(route_connect_matcher)
{
	struct route_config *rc = compile(
		"{'virtual_hosts': [{'name': 'v', 'domains': ['*'], 'routes': ["
		"{'name': 'tunnel', 'match': {'connect_matcher': {}}, 'route': {'cluster': 'c',"
		" 'upgrade_configs': [{'upgrade_type': 'CONNECT', 'connect_config': {}}]}},"
		"{'name': 'fwd', 'match': {'connect_matcher': {}, 'headers': [{'name': 'x-fwd', 'present_match': true}]},"
		" 'route': {'cluster': 'c'}},"
		"{'name': 'all', 'match': {'prefix': '/'}, 'route': {'cluster': 'c'}}]}]}");
	CHECK(rc != NULL);
	if (!rc)
		return;
	struct http_headers h;
	const struct virtual_host *vh;
	hdrs_init(&h);
	hdrs_add_cstr(&h, ":method", "CONNECT");
	hdrs_add_cstr(&h, ":authority", "example.com:443");
	const struct route_entry *re = route_match(rc, &h, &vh);
	CHECK(re && re->name && !strcmp(re->name, "tunnel"));
	CHECK(re && re->connect_terminate);
	hdrs_free(&h);
	/* a GET to "/" skips the connect_matcher routes */
	CHECK_STR(MATCH(rc, "example.com", "/x"), "all");
	/* a CONNECT without connect_matcher routes matching gets nothing */
	struct route_config *rc2 = compile(
		"{'virtual_hosts': [{'name': 'v', 'domains': ['*'], 'routes': ["
		"{'name': 'all', 'match': {'prefix': '/'}, 'route': {'cluster': 'c'}}]}]}");
	hdrs_init(&h);
	hdrs_add_cstr(&h, ":method", "CONNECT");
	hdrs_add_cstr(&h, ":authority", "example.com:443");
	CHECK(rc2 && route_match(rc2, &h, &vh) == NULL);
	hdrs_free(&h);
	route_config_free(rc2);
	route_config_free(rc);
	CHECK_CONTAINS(compile_err("{'virtual_hosts': [{'name': 'v', 'domains': ['*'], 'routes': ["
				   "{'match': {'prefix': '/'}, 'route': {'cluster': 'c', 'upgrade_configs':"
				   " [{'upgrade_type': 'websocket', 'connect_config': {}}]}}]}]}"),
		       "connect_config is only valid with upgrade_type CONNECT");
	CHECK_CONTAINS(compile_err(VH("{'match': {'connect_matcher': {'x': 1}}, 'route': {'cluster': 'c'}}")),
		       "match.connect_matcher.x: unknown field 'x'");
}

/* RetryPolicy: route-level, inherited from the virtual host, defaults, errors. */
TEST(route_retry_policy)
{
	struct route_config *rc = compile(
		"{'virtual_hosts': [{'name': 'v', 'domains': ['*'], 'include_request_attempt_count': true,"
		" 'retry_policy': {'retry_on': 'connect-failure', 'num_retries': 5},"
		" 'routes': ["
		"{'name': 'own', 'match': {'prefix': '/own'}, 'route': {'cluster': 'c', 'retry_policy':"
		" {'retry_on': '5xx,reset, retriable-status-codes', 'num_retries': 3, 'per_try_timeout': '0.25s',"
		"  'retriable_status_codes': [418], 'retry_back_off': {'base_interval': '0.010s'},"
		"  'retry_host_predicate': [{'name': 'envoy.retry_host_predicates.previous_hosts'}],"
		"  'host_selection_retry_max_attempts': 3}}},"
		"{'name': 'inherit', 'match': {'prefix': '/'}, 'route': {'cluster': 'c'}}]}]}");
	CHECK(rc != NULL);
	if (!rc)
		return;
	struct http_headers h;
	const struct virtual_host *vh;
	req_set(&h, "a", "/own", NULL);
	const struct route_entry *re = route_match(rc, &h, &vh);
	hdrs_free(&h);
	CHECK(re && re->retry);
	if (re && re->retry) {
		const struct retry_policy *rp = re->retry;
		CHECK_INT(rp->retry_on, RETRY_ON_5XX | RETRY_ON_RESET | RETRY_ON_RETRIABLE_CODES);
		CHECK_INT(rp->num_retries, 3);
		CHECK_INT(rp->per_try_timeout_ms, 250);
		CHECK_INT(rp->backoff_base_ms, 10);
		CHECK_INT(rp->backoff_max_ms, 100);
		CHECK(rp->previous_hosts);
		CHECK_INT(rp->host_selection_max_attempts, 3);
		CHECK(retry_on_status(rp->retry_on, rp, 418, -1));
		CHECK(retry_on_status(rp->retry_on, rp, 503, -1));
		CHECK(!retry_on_status(rp->retry_on, rp, 404, -1));
		CHECK(re->attempt_count_in_request);
	}
	req_set(&h, "a", "/x", NULL);
	re = route_match(rc, &h, &vh);
	hdrs_free(&h);
	CHECK(re && re->retry && re->retry->retry_on == RETRY_ON_CONNECT_FAILURE &&
	      re->retry->num_retries == 5 && re->retry->backoff_base_ms == 25 &&
	      re->retry->backoff_max_ms == 250);
	route_config_free(rc);

	uint32_t on = 0;
	const char *bad = NULL;
	size_t badlen = 0;
	CHECK_INT(retry_on_parse("gateway-error, unavailable,cancelled", 36, &on, &bad, &badlen), RM_OK);
	CHECK_INT(on, RETRY_ON_GATEWAY_ERROR | RETRY_ON_GRPC_UNAVAILABLE | RETRY_ON_GRPC_CANCELLED);
	CHECK(retry_on_status(on, NULL, 200, 14));
	CHECK(!retry_on_status(on, NULL, 500, -1));
	CHECK(retry_on_status(on, NULL, 504, -1));
	CHECK_INT(retry_on_parse("5xx,bogus", 9, &on, &bad, &badlen), RM_ERROR);
	CHECK(badlen == 5 && !memcmp(bad, "bogus", 5));

	CHECK_STR(compile_err(VH("{'match': {'prefix': '/'}, 'route': {'cluster': 'c', 'retry_policy':"
				 " {'retry_on': '5xx,sometimes'}}}")),
		  "virtual_hosts[0].routes[0].route.retry_policy.retry_on: unsupported retry_on value 'sometimes'");
	CHECK_STR(compile_err(VH("{'match': {'prefix': '/'}, 'route': {'cluster': 'c', 'retry_policy':"
				 " {'retry_back_off': {'max_interval': '1s'}}}}")),
		  "virtual_hosts[0].routes[0].route.retry_policy.retry_back_off.base_interval: "
		  "missing required field 'base_interval'");
	CHECK_CONTAINS(compile_err(VH("{'match': {'prefix': '/'}, 'route': {'cluster': 'c', 'retry_policy':"
				      " {'retry_host_predicate': [{'name': 'envoy.retry_host_predicates.omit_canary_hosts'}]}}}")),
		       "unsupported retry host predicate 'envoy.retry_host_predicates.omit_canary_hosts'");
	CHECK_STR(compile_err(VH("{'match': {'prefix': '/'}, 'route': {'cluster': 'c', 'retry_policy':"
				 " {'retriable_status_codes': [99]}}}")),
		  "virtual_hosts[0].routes[0].route.retry_policy.retriable_status_codes[0]: "
		  "expected an HTTP status code (100..599)");
}

/* HedgePolicy: route-level wins over the virtual host's (even when false);
 * only what Envoy does by default is supported. */
TEST(route_hedge_policy)
{
	struct route_config *rc = compile(
		"{'virtual_hosts': [{'name': 'v', 'domains': ['*'],"
		" 'hedge_policy': {'hedge_on_per_try_timeout': true, 'initial_requests': 1,"
		"  'additional_request_chance': {'default_value': {'numerator': 0, 'denominator': 'HUNDRED'}}},"
		" 'routes': ["
		"{'name': 'off', 'match': {'prefix': '/off'}, 'route': {'cluster': 'c',"
		" 'hedge_policy': {'hedge_on_per_try_timeout': false}}},"
		"{'name': 'inherit', 'match': {'prefix': '/'}, 'route': {'cluster': 'c'}}]},"
		" {'name': 'w', 'domains': ['w'], 'routes': ["
		"{'name': 'on', 'match': {'prefix': '/'}, 'route': {'cluster': 'c',"
		" 'hedgePolicy': {'hedgeOnPerTryTimeout': true}}}]}]}");
	CHECK(rc != NULL);
	if (!rc)
		return;
	struct http_headers h;
	const struct virtual_host *vh;
	const struct route_entry *re;
	req_set(&h, "a", "/off", NULL);
	re = route_match(rc, &h, &vh);
	hdrs_free(&h);
	CHECK(re && !re->hedge_on_per_try_timeout);
	req_set(&h, "a", "/x", NULL);
	re = route_match(rc, &h, &vh);
	hdrs_free(&h);
	CHECK(re && re->hedge_on_per_try_timeout);
	req_set(&h, "w", "/x", NULL);
	re = route_match(rc, &h, &vh);
	hdrs_free(&h);
	CHECK(re && re->hedge_on_per_try_timeout);
	route_config_free(rc);

	CHECK_STR(compile_err(VH("{'match': {'prefix': '/'}, 'route': {'cluster': 'c', 'hedge_policy':"
				 " {'initial_requests': 2}}}")),
		  "virtual_hosts[0].routes[0].route.hedge_policy.initial_requests: "
		  "initial_requests other than 1 is not supported yet");
	CHECK_STR(compile_err(VH("{'match': {'prefix': '/'}, 'route': {'cluster': 'c', 'hedge_policy':"
				 " {'additional_request_chance': {'default_value': {'numerator': 5}}}}}")),
		  "virtual_hosts[0].routes[0].route.hedge_policy.additional_request_chance.default_value."
		  "numerator: additional_request_chance above 0 is not supported yet");
	CHECK_STR(compile_err(VH("{'match': {'prefix': '/'}, 'route': {'cluster': 'c', 'hedge_policy':"
				 " {'hedge_on_per_try_timeout': true, 'hedge_always': 1}}}")),
		  "virtual_hosts[0].routes[0].route.hedge_policy.hedge_always: unknown field 'hedge_always'");
	CHECK_STR(compile_err(VH("{'match': {'prefix': '/'}, 'route': {'cluster': 'c', 'hedge_policy':"
				 " {'hedge_on_per_try_timeout': 'yes'}}}")),
		  "virtual_hosts[0].routes[0].route.hedge_policy.hedge_on_per_try_timeout: expected true or false");
	CHECK_STR(compile_err("{'virtual_hosts': [{'name': 'v', 'domains': ['*'], 'hedge_policy':"
			      " {'initial_requests': 0}, 'routes': []}]}"),
		  "virtual_hosts[0].hedge_policy.initial_requests: "
		  "initial_requests other than 1 is not supported yet");
}

/* retry_on retriable-headers: retriable_headers (any matches),
 * retriable_request_headers, x-envoy-retriable-header-names. */
TEST(route_retriable_headers)
{
	struct route_config *rc = compile(VH(
		"{'match': {'prefix': '/'}, 'route': {'cluster': 'c', 'retry_policy':"
		" {'retry_on': 'retriable-headers', 'retriable_headers': ["
		"  {'name': 'x-upstream-pushback'},"
		"  {'name': ':status', 'string_match': {'exact': '418'}}],"
		"  'retriable_request_headers': [{'name': ':method', 'string_match': {'exact': 'GET'}},"
		"  {'name': 'x-retry-me', 'present_match': true}]}}}"));
	CHECK(rc != NULL);
	if (!rc)
		return;
	struct http_headers req, resp;
	const struct virtual_host *vh;
	req_set(&req, "a", "/", NULL);
	const struct route_entry *re = route_match(rc, &req, &vh);
	CHECK(re && re->retry);
	if (re && re->retry) {
		const struct retry_policy *rp = re->retry;
		CHECK_INT(rp->retry_on, RETRY_ON_RETRIABLE_HEADERS);
		CHECK(retry_request_allowed(rp, &req));   /* GET */
		hdrs_init(&resp);
		hdrs_add_cstr(&resp, ":status", "200");
		CHECK(!retry_on_headers(rp->retry_on, rp, &req, &resp));
		hdrs_add_cstr(&resp, "x-upstream-pushback", "1");
		CHECK(retry_on_headers(rp->retry_on, rp, &req, &resp));
		CHECK(!retry_on_headers(RETRY_ON_5XX, rp, &req, &resp));   /* needs the retry_on bit */
		hdrs_free(&resp);
		hdrs_init(&resp);
		hdrs_add_cstr(&resp, ":status", "418");
		CHECK(retry_on_headers(rp->retry_on, rp, &req, &resp));
		hdrs_free(&resp);
		/* names from the request, trimmed, case-insensitive */
		hdrs_init(&resp);
		hdrs_add_cstr(&resp, ":status", "200");
		hdrs_add_cstr(&resp, "x-two", "v");
		CHECK(!retry_on_headers(rp->retry_on, rp, &req, &resp));
		hdrs_add_cstr(&req, "x-envoy-retriable-header-names", "x-one, X-Two ");
		CHECK(retry_on_headers(rp->retry_on, rp, &req, &resp));
		CHECK(!retry_on_headers(rp->retry_on, NULL, NULL, &resp));
		hdrs_free(&resp);
		hdrs_free(&req);
		req_set(&req, "a", "/", NULL);
		hdrs_set(&req, ":method", "POST", 4);
		CHECK(!retry_request_allowed(rp, &req));
		hdrs_add_cstr(&req, "x-retry-me", "");
		CHECK(retry_request_allowed(rp, &req));
		CHECK(retry_request_allowed(NULL, &req));
	}
	hdrs_free(&req);
	route_config_free(rc);

	CHECK_STR(compile_err(VH("{'match': {'prefix': '/'}, 'route': {'cluster': 'c', 'retry_policy':"
				 " {'retriable_headers': [{'name': 'x', 'exact_matchh': 'y'}]}}}")),
		  "virtual_hosts[0].routes[0].route.retry_policy.retriable_headers[0].exact_matchh: "
		  "unknown field 'exact_matchh'");
	CHECK_CONTAINS(compile_err(VH("{'match': {'prefix': '/'}, 'route': {'cluster': 'c', 'retry_policy':"
				      " {'retriable_request_headers': {'name': 'x'}}}}")),
		       "virtual_hosts[0].routes[0].route.retry_policy.retriable_request_headers");
}

/* ------------------------------------------------------------------------
 * Hash policies */

#include <xxhash.h>

#define HP_ROUTE(policies) \
	VH("{'name': 'h', 'match': {'prefix': '/'}, 'route': {'cluster': 'c', 'hash_policy': [" \
	   policies "]}}, {'name': 'plain', 'match': {'prefix': '/'}, 'route': {'cluster': 'c'}}")
#define HP_ERR(policies) compile_err(HP_ROUTE(policies))

TEST(route_hash_policy_compile_errors)
{
	CHECK_STR(HP_ERR("{}"),
		  "virtual_hosts[0].routes[0].route.hash_policy[0]: one of 'header', 'cookie', "
		  "'connection_properties', 'query_parameter' or 'filter_state' is required");
	CHECK_STR(HP_ERR("{'header': {'header_name': 'x'}, 'query_parameter': {'name': 'q'}}"),
		  "virtual_hosts[0].routes[0].route.hash_policy[0]: only one of 'header', 'cookie', "
		  "'connection_properties', 'query_parameter' or 'filter_state' may be set ('header' "
		  "and 'query_parameter' are both set)");
	CHECK_STR(HP_ERR("{'header': {'header_name': 'x'}}, {'header': {}}"),
		  "virtual_hosts[0].routes[0].route.hash_policy[1].header.header_name: missing "
		  "required field 'header_name'");
	CHECK_STR(HP_ERR("{'header': {'header_name': 'bad name'}}"),
		  "virtual_hosts[0].routes[0].route.hash_policy[0].header.header_name: invalid header "
		  "name 'bad name'");
	CHECK_STR(HP_ERR("{'header': {'header_name': 'x', 'regex_rewrite': {}}}"),
		  "virtual_hosts[0].routes[0].route.hash_policy[0].header.regex_rewrite: not supported yet");
	CHECK_STR(HP_ERR("{'cookie': {'name': 's', 'ttl': 'soon'}}"),
		  "virtual_hosts[0].routes[0].route.hash_policy[0].cookie.ttl: invalid duration 'soon' "
		  "(expected e.g. \"1.5s\")");
	CHECK_STR(HP_ERR("{'cookie': {'name': 's', 'ttl': '1s', 'attributes': [{'value': 'v'}]}}"),
		  "virtual_hosts[0].routes[0].route.hash_policy[0].cookie.attributes[0].name: missing "
		  "required field 'name'");
	CHECK_STR(HP_ERR("{'cookie': {'name': 's', 'ttl': '1s', 'attributes': [{'name': ''}]}}"),
		  "virtual_hosts[0].routes[0].route.hash_policy[0].cookie.attributes[0].name: must be 1 "
		  "to 16384 bytes without CR or LF");
	CHECK_STR(HP_ERR("{'cookie': {'name': 's', 'ttl': '1s', 'attributes': [{'name': 'a', 'x': 1}]}}"),
		  "virtual_hosts[0].routes[0].route.hash_policy[0].cookie.attributes[0].x: unknown field 'x'");
	CHECK_STR(HP_ERR("{'cookie': {'name': 's', 'ttl': '1s', 'attributes': [{'name': 'a', 'value': 'b\\r\\nX: 1'}]}}"),
		  "virtual_hosts[0].routes[0].route.hash_policy[0].cookie.attributes[0].value: must be at "
		  "most 16384 bytes without CR or LF");
	CHECK_STR(HP_ERR("{'cookie': {'name': 's', 'ttl': '1s', 'path': '/\\n'}}"),
		  "virtual_hosts[0].routes[0].route.hash_policy[0].cookie.path: must be at most 16384 "
		  "bytes without CR or LF");
	CHECK_STR(compile_err(VH("{'match': {'prefix': '/'}, 'route': {'cluster': 'c', 'priority': 'LOW'}}")),
		  "virtual_hosts[0].routes[0].route.priority: unknown value 'LOW' (expected one of "
		  "DEFAULT, HIGH)");
	CHECK_STR(HP_ERR("{'cookie': {'name': ''}}"),
		  "virtual_hosts[0].routes[0].route.hash_policy[0].cookie.name: must be 1 to 16384 "
		  "bytes long");
	CHECK_STR(HP_ERR("{'query_parameter': {'name': 'q', 'value': 1}}"),
		  "virtual_hosts[0].routes[0].route.hash_policy[0].query_parameter.value: unknown field 'value'");
	CHECK_STR(HP_ERR("{'filter_state': {'key': 'k'}}"),
		  "virtual_hosts[0].routes[0].route.hash_policy[0].filter_state: not supported yet");
	CHECK_STR(HP_ERR("{'connection_properties': {'source_ip': 'yes'}}"),
		  "virtual_hosts[0].routes[0].route.hash_policy[0].connection_properties.source_ip: "
		  "expected true or false");
	CHECK_STR(HP_ERR("{'header': {'header_name': 'x'}, 'terminal': 1, 'extra': 2}"),
		  "virtual_hosts[0].routes[0].route.hash_policy[0].extra: unknown field 'extra'");
	CHECK_STR(compile_err(VH("{'match': {'prefix': '/'}, 'route': {'cluster': 'c', 'hash_policy': {}}}")),
		  "virtual_hosts[0].routes[0].route.hash_policy: expected a list");
}

static uint64_t xxh(const char *s)
{
	return XXH64(s, strlen(s), 0);
}

static uint64_t rotl1(uint64_t h)
{
	return (h << 1) | (h >> 63);
}

/* route_hash for the first route of rc ('h') on path + headers (NULL ends). */
static bool hash_of(const struct route_config *rc, const char *peer, uint64_t *out,
		    const char *path, ...)
{
	struct http_headers h;
	const struct virtual_host *vh;
	va_list ap;
	const char *n, *v;

	hdrs_init(&h);
	hdrs_add_cstr(&h, ":authority", "h");
	hdrs_add_cstr(&h, ":path", path);
	va_start(ap, path);
	while ((n = va_arg(ap, const char *)) && (v = va_arg(ap, const char *)))
		hdrs_add_cstr(&h, n, v);
	va_end(ap);
	const struct route_entry *re = route_match(rc, &h, &vh);
	*out = 0xdeadull;
	struct route_hash_conn hc = { peer, NULL, NULL };
	bool got = re && route_hash(re, &h, &hc, NULL, out);
	if (!got)
		CHECK(*out == 0xdeadull);   /* untouched without a hash */
	hdrs_free(&h);
	return got;
}

TEST(route_hash_header)
{
	struct route_config *rc = compile(HP_ROUTE("{'header': {'header_name': 'X-User'}}"));
	uint64_t a, b;
	CHECK(rc != NULL);
	if (!rc)
		return;
	CHECK(!hash_of(rc, "10.0.0.1", &a, "/", NULL));                      /* absent: no hash */
	CHECK(!hash_of(rc, "10.0.0.1", &a, "/", "x-other", "alice", NULL));
	CHECK(hash_of(rc, "10.0.0.1", &a, "/", "x-user", "alice", NULL));
	CHECK(a == xxh("alice"));
	CHECK(hash_of(rc, "10.0.0.2", &b, "/x?y=1", "x-user", "alice", NULL));  /* stable */
	CHECK(a == b);
	CHECK(hash_of(rc, "10.0.0.1", &b, "/", "x-user", "bob", NULL));
	CHECK(a != b);
	CHECK(hash_of(rc, NULL, &b, "/", "x-user", "", NULL));                /* empty counts */
	CHECK(b == xxh(""));
	/* several fields: sorted, chained; their order does not matter */
	CHECK(hash_of(rc, NULL, &a, "/", "x-user", "b", "x-user", "a", NULL));
	CHECK(hash_of(rc, NULL, &b, "/", "x-user", "a", "x-user", "b", NULL));
	CHECK(a == b);
	CHECK(a == XXH64("b", 1, XXH64("a", 1, 0)));
	route_config_free(rc);
}

TEST(route_hash_cookie_query_source_ip)
{
	struct route_config *rc = compile(HP_ROUTE("{'cookie': {'name': 'sess', 'path': '/'}}"));
	uint64_t a;
	CHECK(rc != NULL);
	if (!rc)
		return;
	CHECK(!hash_of(rc, NULL, &a, "/", NULL));
	CHECK(!hash_of(rc, NULL, &a, "/", "cookie", "other=1; sessx=2", NULL));
	CHECK(!hash_of(rc, NULL, &a, "/", "cookie", "sess=", NULL));        /* empty: absent */
	CHECK(hash_of(rc, NULL, &a, "/", "cookie", "a=1;  sess=\"abc\"; b=2", NULL));
	CHECK(a == xxh("abc"));
	CHECK(hash_of(rc, NULL, &a, "/", "cookie", "a=1", "cookie", "sess=xyz", NULL));
	CHECK(a == xxh("xyz"));
	route_config_free(rc);

	rc = compile(HP_ROUTE("{'query_parameter': {'name': 'user'}}"));
	CHECK(rc != NULL);
	if (!rc)
		return;
	CHECK(!hash_of(rc, NULL, &a, "/p", NULL));
	CHECK(!hash_of(rc, NULL, &a, "/p?username=x", NULL));
	CHECK(hash_of(rc, NULL, &a, "/p?a=1&user=al%20ice&user=bob", NULL));   /* first, raw */
	CHECK(a == xxh("al%20ice"));
	CHECK(hash_of(rc, NULL, &a, "/p?user", NULL));
	CHECK(a == xxh(""));
	route_config_free(rc);

	rc = compile(HP_ROUTE("{'connection_properties': {'source_ip': true}}"));
	CHECK(rc != NULL);
	if (!rc)
		return;
	CHECK(!hash_of(rc, NULL, &a, "/", NULL));
	CHECK(hash_of(rc, "10.1.2.3", &a, "/", NULL));
	CHECK(a == xxh("10.1.2.3"));
	CHECK(hash_of(rc, "::1", &a, "/", NULL));
	CHECK(a == xxh("::1"));
	route_config_free(rc);

	rc = compile(HP_ROUTE("{'connection_properties': {'source_ip': false}}"));
	CHECK(rc != NULL);
	if (rc)
		CHECK(!hash_of(rc, "10.1.2.3", &a, "/", NULL));
	route_config_free(rc);
}

TEST(route_hash_combine_and_terminal)
{
	struct route_config *rc = compile(HP_ROUTE(
		"{'header': {'header_name': 'x-a'}}, {'query_parameter': {'name': 'q'}},"
		"{'header': {'header_name': 'x-a'}}"));
	uint64_t a;
	CHECK(rc != NULL);
	if (!rc)
		return;
	CHECK(hash_of(rc, NULL, &a, "/?q=2", "x-a", "1", NULL));
	CHECK(a == (rotl1(rotl1(xxh("1")) ^ xxh("2")) ^ xxh("1")));
	CHECK(hash_of(rc, NULL, &a, "/?q=2", NULL));          /* only the policies that apply */
	CHECK(a == xxh("2"));
	/* a duplicated policy does not cancel itself out */
	CHECK(hash_of(rc, NULL, &a, "/", "x-a", "1", NULL));
	CHECK(a == (rotl1(xxh("1")) ^ xxh("1")));
	CHECK(a != 0);
	route_config_free(rc);

	rc = compile(HP_ROUTE(
		"{'header': {'header_name': 'x-a'}, 'terminal': true}, {'query_parameter': {'name': 'q'}}"));
	CHECK(rc != NULL);
	if (!rc)
		return;
	CHECK(hash_of(rc, NULL, &a, "/?q=2", "x-a", "1", NULL));   /* terminal with a hash: stop */
	CHECK(a == xxh("1"));
	CHECK(hash_of(rc, NULL, &a, "/?q=2", NULL));               /* terminal without: go on */
	CHECK(a == xxh("2"));
	route_config_free(rc);

	/* a route without hash_policy never has a hash */
	rc = compile(VH(OK_ROUTE));
	CHECK(rc != NULL);
	if (rc)
		CHECK(!hash_of(rc, "10.0.0.1", &a, "/", "x-a", "1", NULL));
	route_config_free(rc);
}

/* Envoy's cookie generation: absent cookie + ttl -> value = hex(xxHash64(peer
 * address + local address)), hashed like a received cookie, and a
 * Set-Cookie in makeSetCookieValue's format. */
TEST(route_hash_cookie_generation)
{
	struct route_config *rc = compile(HP_ROUTE(
		"{'cookie': {'name': 'sess', 'ttl': '3600s', 'path': '/app', 'attributes': "
		"[{'name': 'SameSite', 'value': 'Lax'}, {'name': 'Secure'}]}}"));
	struct sockaddr_in peer = { .sin_family = AF_INET, .sin_port = htons(5000) };
	struct sockaddr_in local = { .sin_family = AF_INET, .sin_port = htons(80) };
	inet_pton(AF_INET, "10.0.0.1", &peer.sin_addr);
	inet_pton(AF_INET, "10.0.0.2", &local.sin_addr);
	struct route_hash_conn hc = { "10.0.0.1", (struct sockaddr *)&peer, (struct sockaddr *)&local };
	struct http_headers h, resp;
	struct route_cookies gen;
	uint64_t hash = 0;
	char hex[17], want[256];
	CHECK(rc);
	if (!rc)
		return;
	uint64_t v = xxh("10.0.0.1:500010.0.0.2:80");
	snprintf(hex, sizeof(hex), "%016llx", (unsigned long long)v);

	hdrs_init(&h);
	hdrs_add_cstr(&h, ":authority", "h");
	hdrs_add_cstr(&h, ":path", "/");
	const struct route_entry *re = route_match(rc, &h, NULL);
	CHECK(re && re->priority == 0);
	CHECK(route_hash(re, &h, &hc, &gen, &hash));
	CHECK(gen.policies == 1 && gen.value == v);
	CHECK(hash == xxh(hex));
	hdrs_init(&resp);
	route_add_set_cookies(re, &gen, &resp);
	snprintf(want, sizeof(want), "sess=\"%s\"; Max-Age=3600; Path=/app; SameSite=Lax; Secure; HttpOnly",
		 hex);
	CHECK_STR(hdrs_get(&resp, "set-cookie", NULL), want);
	hdrs_free(&resp);

	/* replaying the cookie: the same hash, nothing generated */
	uint64_t again = 0;
	snprintf(want, sizeof(want), "sess=\"%s\"", hex);
	hdrs_add_cstr(&h, "cookie", want);
	CHECK(route_hash(re, &h, &hc, &gen, &again));
	CHECK(again == hash && gen.policies == 0);
	hdrs_init(&resp);
	route_add_set_cookies(re, &gen, &resp);
	CHECK(!hdrs_get(&resp, "set-cookie", NULL));
	hdrs_free(&resp);
	hdrs_free(&h);

	/* without the connection addresses (or gen) nothing is generated */
	hdrs_init(&h);
	hdrs_add_cstr(&h, ":authority", "h");
	hdrs_add_cstr(&h, ":path", "/");
	CHECK(!route_hash(re, &h, &(struct route_hash_conn){ "10.0.0.1", NULL, NULL }, &gen, &hash));
	CHECK(!route_hash(re, &h, &hc, NULL, &hash));

	/* IPv6 peer: "[::1]:5000" */
	struct sockaddr_in6 p6 = { .sin6_family = AF_INET6, .sin6_port = htons(5000) };
	struct sockaddr_in6 l6 = { .sin6_family = AF_INET6, .sin6_port = htons(80) };
	inet_pton(AF_INET6, "::1", &p6.sin6_addr);
	inet_pton(AF_INET6, "::1", &l6.sin6_addr);
	struct route_hash_conn hc6 = { "::1", (struct sockaddr *)&p6, (struct sockaddr *)&l6 };
	CHECK(route_hash(re, &h, &hc6, &gen, &hash));
	CHECK(gen.value == xxh("[::1]:5000[::1]:80"));
	hdrs_free(&h);
	route_config_free(rc);

	/* ttl 0: a session cookie (no Max-Age); no path; a policy without ttl
	 * never generates; the priority is parsed */
	rc = compile(VH("{'name': 'h', 'match': {'prefix': '/'}, 'route': {'cluster': 'c', "
			"'priority': 'HIGH', 'hash_policy': [{'cookie': {'name': 'plain'}}, "
			"{'cookie': {'name': 's2', 'ttl': '0s'}}]}}"));
	CHECK(rc);
	if (!rc)
		return;
	hdrs_init(&h);
	hdrs_add_cstr(&h, ":authority", "h");
	hdrs_add_cstr(&h, ":path", "/");
	re = route_match(rc, &h, NULL);
	CHECK(re && re->priority == 1);
	CHECK(route_hash(re, &h, &hc, &gen, &hash));
	CHECK(gen.policies == 2);
	CHECK(hash == xxh(hex));   /* only the generated cookie contributed */
	hdrs_init(&resp);
	route_add_set_cookies(re, &gen, &resp);
	snprintf(want, sizeof(want), "s2=\"%s\"; HttpOnly", hex);
	CHECK_STR(hdrs_get(&resp, "set-cookie", NULL), want);
	hdrs_free(&resp);
	hdrs_free(&h);
	route_config_free(rc);
}

TEST(route_grpc_timeout)
{
	uint64_t ms = 0;
	CHECK_INT(grpc_timeout_parse("100m", 4, &ms), RM_OK);
	CHECK_INT(ms, 100);
	CHECK_INT(grpc_timeout_parse("5S", 2, &ms), RM_OK);
	CHECK_INT(ms, 5000);
	CHECK_INT(grpc_timeout_parse("2M", 2, &ms), RM_OK);
	CHECK_INT(ms, 120000);
	CHECK_INT(grpc_timeout_parse("1H", 2, &ms), RM_OK);
	CHECK_INT(ms, 3600000);
	CHECK_INT(grpc_timeout_parse("1500u", 5, &ms), RM_OK);
	CHECK_INT(ms, 2);
	CHECK_INT(grpc_timeout_parse("1n", 2, &ms), RM_OK);
	CHECK_INT(ms, 1);
	CHECK_INT(grpc_timeout_parse("m", 1, &ms), RM_ERROR);
	CHECK_INT(grpc_timeout_parse("123456789S", 10, &ms), RM_ERROR);   /* > 8 digits */
	CHECK_INT(grpc_timeout_parse("10x", 3, &ms), RM_ERROR);
	CHECK_INT(grpc_timeout_parse("-1S", 3, &ms), RM_ERROR);
	struct route_config *rc = compile(VH(
		"{'match': {'prefix': '/'}, 'route': {'cluster': 'c', 'max_stream_duration':"
		" {'grpc_timeout_header_max': '0.5s', 'grpc_timeout_header_offset': '0.01s'}}}"));
	CHECK(rc != NULL);
	if (rc) {
		struct http_headers h;
		const struct virtual_host *vh;
		req_set(&h, "a", "/", NULL);
		const struct route_entry *re = route_match(rc, &h, &vh);
		CHECK(re && re->grpc_timeout_max_ms == 500 && re->grpc_timeout_offset_ms == 10);
		hdrs_free(&h);
		route_config_free(rc);
	}
	CHECK_CONTAINS(compile_err(VH("{'match': {'prefix': '/'}, 'route': {'cluster': 'c',"
				      " 'max_stream_duration': {'max_stream_duration': 5}}}")),
		       "route.max_stream_duration.max_stream_duration: invalid duration");
}
