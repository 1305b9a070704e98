/* route_match_fuzz.c - libFuzzer target for route matching (proxy/router).
 *
 * Two fixed route tables (with safe_regex routes, regex header matchers,
 * regex rewrites, wildcard domains, redirects, weighted clusters; one with
 * ignore_port_in_host_matching) are compiled once; each input becomes a
 * request that is matched against both, hashed by the route's hash_policy,
 * then run through the request and response transformations and the
 * redirect Location builder.
 *
 * Input: byte 0 = flags (bit 0: TLS, bit 1: small Location buffer, bit 2: a
 * peer IP for the source_ip hash policy), then lines: ":authority", ":path",
 * then "name: value" header lines.
 *
 * Build and run (from the repository root):
 *   clang-14 -g -O1 -fsanitize=fuzzer,address,undefined -D_GNU_SOURCE -I. \
 *     $(pkg-config --cflags jansson libpcre2-8 libxxhash) tests/fuzz/route_match_fuzz.c \
 *     proxy/router/route.c proxy/router/route_match.c proxy/router/route_regex.c \
 *     proxy/config/cfg.c proxy/http/headers.c proxy/common.c proxy/log.c \
 *     $(pkg-config --libs jansson libpcre2-8 libxxhash) -lm -o /tmp/route_match_fuzz
 *   /tmp/route_match_fuzz -max_total_time=20 tests/fuzz/corpus/route_match */
#include <jansson.h>
#include <netinet/in.h>

#include "proxy/router/route.h"

static const char table_json[] =
	"{\"name\": \"fuzz\", %s"
	" \"request_headers_to_add\": [{\"header\": {\"key\": \"x-rc\", \"value\": \"1\"}}],"
	" \"response_headers_to_add\": [{\"header\": {\"key\": \"x-resp\", \"value\": \"rc\"},"
	"   \"append_action\": \"ADD_IF_ABSENT\"}],"
	" \"virtual_hosts\": ["
	"  {\"name\": \"api\", \"domains\": [\"api.example.com\", \"api.example.com:8080\", \"*.api.example.com\"],"
	"   \"request_headers_to_remove\": [\"x-internal\"],"
	"   \"routes\": ["
	"    {\"name\": \"users\", \"match\": {\"safe_regex\": {\"regex\": \"/users/([0-9]+)(/.*)?\"},"
	"      \"headers\": [{\"name\": \"x-version\", \"safe_regex_match\": {\"regex\": \"v[0-9]+(\\\\.[0-9]+)*\"}}]},"
	"     \"route\": {\"cluster\": \"users\", \"regex_rewrite\": {\"pattern\": {\"regex\": \"^/users/([0-9]+)\"},"
	"       \"substitution\": \"/u/\\\\1\"}}},"
	"    {\"name\": \"greedy\", \"match\": {\"safe_regex\": {\"regex\": \"(a+)+b|(x*)*y|[^/]*/.*\\\\.(png|jpe?g)\"}},"
	"     \"route\": {\"cluster\": \"img\", \"regex_rewrite\": {\"pattern\": {\"regex\": \"a*|/\"},"
	"       \"substitution\": \"<\\\\0>\"}}},"
	"    {\"name\": \"hdr\", \"match\": {\"prefix\": \"/h\", \"headers\": ["
	"      {\"name\": \"cookie\", \"string_match\": {\"safe_regex\": {\"regex\": \".*session=[a-f0-9]{8,}.*\"}}},"
	"      {\"name\": \"x-a\", \"string_match\": {\"contains\": \"Z\", \"ignore_case\": true}, \"invert_match\": true},"
	"      {\"name\": \"x-b\", \"present_match\": false}]},"
	"     \"route\": {\"weighted_clusters\": {\"clusters\": ["
	"       {\"name\": \"w1\", \"weight\": 3, \"request_headers_to_add\": [{\"header\": {\"key\": \"x-w\", \"value\": \"1\"}}]},"
	"       {\"name\": \"w2\", \"weight\": 7, \"response_headers_to_remove\": [\"server\"]}]},"
	"      \"host_rewrite_literal\": \"backend:9000\", \"append_x_forwarded_host\": true}},"
	"    {\"name\": \"q\", \"match\": {\"path_separated_prefix\": \"/q\", \"case_sensitive\": false,"
	"      \"query_parameters\": [{\"name\": \"k\", \"string_match\": {\"safe_regex\": {\"regex\": \"[^&]*\"}}},"
	"        {\"name\": \"p\", \"present_match\": true}]},"
	"     \"route\": {\"cluster\": \"q\", \"prefix_rewrite\": \"/query\", \"hash_policy\": ["
	"       {\"cookie\": {\"name\": \"session\"}}, {\"header\": {\"header_name\": \"x-a\"}, \"terminal\": true},"
	"       {\"query_parameter\": {\"name\": \"k\"}}, {\"connection_properties\": {\"source_ip\": true}}]}},"
	"    {\"name\": \"redir\", \"match\": {\"prefix\": \"/r\"}, \"redirect\": {\"https_redirect\": true,"
	"      \"prefix_rewrite\": \"/R\", \"strip_query\": true}},"
	"    {\"name\": \"redir2\", \"match\": {\"prefix\": \"/2\"}, \"redirect\": {\"port_redirect\": 8443,"
	"      \"path_redirect\": \"/other\", \"response_code\": \"PERMANENT_REDIRECT\"}},"
	"    {\"name\": \"direct\", \"match\": {\"path\": \"/health\"}, \"direct_response\": {\"status\": 200,"
	"      \"body\": {\"inline_string\": \"ok\"}}},"
	"    {\"name\": \"rest\", \"match\": {\"prefix\": \"/\"}, \"route\": {\"cluster\": \"rest\","
	"      \"prefix_rewrite\": \"/base/\"},"
	"     \"response_headers_to_add\": [{\"header\": {\"key\": \"x-route\", \"value\": \"rest\"},"
	"       \"append_action\": \"OVERWRITE_IF_EXISTS\"}]}]},"
	"  {\"name\": \"wild\", \"domains\": [\"*-bar.example.com\", \"shop.*\", \"[::1]\"],"
	"   \"routes\": [{\"name\": \"wild\", \"match\": {\"safe_regex\": {\"regex\": \"/(?i:shop|cart)/[\\\\w-]+\"}},"
	"     \"redirect\": {\"host_redirect\": \"shop.example.com\", \"scheme_redirect\": \"https\"}}]},"
	"  {\"name\": \"default\", \"domains\": [\"*\"],"
	"   \"routes\": [{\"name\": \"any\", \"match\": {\"prefix\": \"\"}, \"route\": {\"cluster\": \"default\"}}]}"
	" ]}";

static struct route_config *tables[2];

static struct route_config *build(const char *extra)
{
	char text[sizeof(table_json) + 256];
	json_error_t je;
	struct cfg_ctx c;

	snprintf(text, sizeof(text), table_json, extra);
	json_t *j = json_loads(text, 0, &je);
	if (!j) {
		fprintf(stderr, "route_match_fuzz: bad table JSON: %s at %d:%d\n", je.text, je.line,
			je.column);
		abort();
	}
	cfg_init(&c, NULL, NULL);
	struct route_config *rc = route_config_compile(&c, j, NULL);
	json_decref(j);
	if (!rc) {
		fprintf(stderr, "route_match_fuzz: table does not compile: %s\n", c.err);
		abort();
	}
	return rc;
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	tables[0] = build("");
	tables[1] = build("\"ignore_port_in_host_matching\": true, "
			  "\"most_specific_header_mutations_wins\": true,");
	return 0;
}

static void parse_request(struct http_headers *h, const char *p, size_t n)
{
	int line = 0;

	hdrs_add_cstr(h, ":method", "GET");
	while (n) {
		const char *nl = memchr(p, '\n', n);
		size_t len = nl ? (size_t)(nl - p) : n;
		if (line == 0) {
			hdrs_add(h, ":authority", 10, p, len);
		} else if (line == 1) {
			hdrs_add(h, ":path", 5, p, len);
		} else if (len) {
			const char *colon = memchr(p + 1, ':', len - 1);
			size_t nlen = colon ? (size_t)(colon - p) : len;
			const char *v = colon ? colon + 1 : p + len;
			size_t vlen = len - nlen - (colon ? 1 : 0);
			while (vlen && *v == ' ') {
				v++;
				vlen--;
			}
			hdrs_add(h, p, nlen, v, vlen);
		}
		line++;
		if (!nl)
			break;
		n -= len + 1;
		p = nl + 1;
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	bool tls = data[0] & 1;
	size_t loc_cap = (data[0] & 2) ? 24 : 1024;
	uint64_t rnd = 0;
	for (size_t i = 0; i < size; i++)
		rnd = rnd * 131 + data[i];

	for (int t = 0; t < 2; t++) {
		struct http_headers req, resp;
		const struct virtual_host *vh;
		const struct weighted_cluster *wc = NULL;
		char loc[1024];

		hdrs_init(&req);
		parse_request(&req, (const char *)data + 1, size - 1);
		const struct route_entry *re = route_match(tables[t], &req, &vh);
		hdrs_init(&resp);
		hdrs_add_cstr(&resp, ":status", "200");
		hdrs_add_cstr(&resp, "server", "upstream");
		if (re) {
			switch (re->kind) {
			case ROUTE_ACTION_ROUTE:
				if (!route_pick_cluster(re, rnd, &wc))
					abort();
				uint64_t hash;
				struct sockaddr_in pa = { .sin_family = AF_INET, .sin_port = htons(5000) };
				struct route_hash_conn hc = { (data[0] & 4) ? "10.0.0.1" : NULL,
							      (struct sockaddr *)&pa, (struct sockaddr *)&pa };
				struct route_cookies gen;
				(void)route_hash(re, &req, &hc, &gen, &hash);
				route_add_set_cookies(re, &gen, &resp);
				route_apply_request(tables[t], vh, re, wc, &req);
				break;
			case ROUTE_ACTION_REDIRECT: {
				int n = route_redirect_location(re, &req, tls, loc, loc_cap);
				if (n >= 0 && ((size_t)n >= loc_cap || loc[n] != '\0'))
					abort();
				break;
			}
			case ROUTE_ACTION_DIRECT:
				if (re->direct_status != 200)
					abort();
				break;
			}
		}
		route_apply_response(tables[t], vh, re, wc, &resp);
		hdrs_free(&resp);
		hdrs_free(&req);
	}
	return 0;
}
