/* catalog_test.c - xds/cp/cp_catalog.c + cp_catalog_authz.c: the service
 * catalog compiled into Envoy resources, compared with golden JSON files
 * (tests/unit/xds/cp/golden/; REMORA_UPDATE_GOLDEN=1 rewrites them), and
 * catalog mistakes reported with file:line:col and the field path.
 * Run from the repository root (tests/run.sh does). */
#include "test.h"

#include <stdlib.h>
#include "proxy/config/yaml_json.h"
#include "xds/cp/cp_catalog.c"
#include "xds/cp/cp_catalog_authz.c"

#define GOLDEN_DIR "tests/unit/xds/cp/golden/"

/* Compile text; the document as sorted, indented JSON (malloc'd) or NULL
 * with err. */
static char *compile(const char *text, char *err, size_t errlen)
{
	struct cfg_src *src = NULL;
	json_t *cat = yaml_load_buffer("catalog.yaml", text, strlen(text), &src, err, errlen);
	if (!cat)
		return NULL;
	json_t *doc = cp_catalog_compile(cat, src, "catalog.yaml", err, errlen);
	char *out = doc ? json_dumps(doc, JSON_SORT_KEYS | JSON_INDENT(1)) : NULL;
	json_decref(doc);
	json_decref(cat);
	cfg_src_free(src);
	return out;
}

static char *slurp(const char *path)
{
	FILE *f = fopen(path, "r");
	if (!f)
		return NULL;
	fseek(f, 0, SEEK_END);
	long n = ftell(f);
	fseek(f, 0, SEEK_SET);
	char *b = malloc((size_t)n + 1);
	size_t got = fread(b, 1, (size_t)n, f);
	b[got] = 0;
	fclose(f);
	return b;
}

static void check_golden(const char *text, const char *name)
{
	char err[512], path[256];
	char *got = compile(text, err, sizeof(err));
	CHECK(got != NULL);
	if (!got) {
		fprintf(stderr, "  compile error: %s\n", err);
		return;
	}
	snprintf(path, sizeof(path), GOLDEN_DIR "%s", name);
	if (getenv("REMORA_UPDATE_GOLDEN")) {
		FILE *f = fopen(path, "w");
		fprintf(f, "%s\n", got);
		fclose(f);
	}
	char *want = slurp(path);
	CHECK(want != NULL);
	if (want) {
		size_t n = strlen(want);
		if (n && want[n - 1] == '\n')
			want[n - 1] = 0;
		if (strcmp(got, want)) {
			test_failed_checks++;
			fprintf(stderr, "  %s differs from the compiled catalog:\n%s\n", path, got);
		}
	}
	free(want);
	free(got);
}

/* Standalone listeners: HTTP rules (DENY + ALLOW, from/to/when, the old
 * `allow` merged into the ALLOW filter), PERMISSIVE (tls + raw_buffer chains,
 * tls_inspector), DISABLE (plaintext, no TLS origination), a TCP service
 * with network RBAC and a weighted tcp_proxy. */
static const char *const STANDALONE =
	"trust_domain: example.org\n"
	"services:\n"
	"- name: web\n"
	"  endpoints: ['127.0.0.1:9001']\n"
	"  identity: {namespace: prod, serviceAccount: web}\n"
	"  allow: [{from: {namespace: ops}}]\n"
	"  rules:\n"
	"  - action: DENY\n"
	"    to: {paths: ['/admin/*', '*.php'], methods: [DELETE]}\n"
	"  - action: DENY\n"
	"    from: {not_namespaces: [prod]}\n"
	"    to: [{paths: [/private]}, {ports: ['9443']}]\n"
	"  - from: [{principals: ['example.org/ns/prod/sa/frontend', 'spiffe://example.org/ns/qa/*']},\n"
	"           {namespaces: ['*'], not_principals: ['*/sa/robot'], ip_blocks: [10.0.0.0/8, 'fd00::1']}]\n"
	"    to: {methods: [GET, HEAD], not_paths: ['/secret/*']}\n"
	"    when:\n"
	"    - {key: 'request.headers[X-Version]', values: [v1, 'v2*'], not_values: ['*-beta']}\n"
	"    - {key: source.ip, not_values: [192.168.0.0/16]}\n"
	"    - {key: destination.port, values: [8080]}\n"
	"- name: web-local\n"
	"  endpoints: ['127.0.0.1:9002']\n"
	"- name: open\n"
	"  mtls: PERMISSIVE\n"
	"  identity: {namespace: prod, serviceAccount: open}\n"
	"  endpoints: ['127.0.0.1:9003']\n"
	"- name: plain\n"
	"  mtls: DISABLE\n"
	"  identity: {namespace: prod, serviceAccount: plain}\n"
	"  endpoints: ['127.0.0.1:9004']\n"
	"  rules: [{action: DENY, from: {ip_blocks: [127.0.0.2]}}]\n"
	"- name: db\n"
	"  protocol: tcp\n"
	"  identity: {namespace: prod, serviceAccount: db}\n"
	"  endpoints: ['127.0.0.1:9005']\n"
	"  rules:\n"
	"  - {action: DENY, from: {principals: [example.org/ns/prod/sa/batch]}}\n"
	"  - {from: {namespaces: [prod]}, to: {ports: [5432]}}\n"
	"- name: db-a\n"
	"  protocol: tcp\n"
	"  endpoints: ['127.0.0.1:9006']\n"
	"- name: db-b\n"
	"  protocol: tcp\n"
	"  endpoints: ['127.0.0.1:9007']\n"
	"listeners:\n"
	"- {name: web-in, port: 8080, service: web, routes: [{to: web-local}]}\n"
	"- {name: open-in, port: 8081, service: open, routes: [{to: web-local}]}\n"
	"- {name: plain-in, port: 8082, service: plain, routes: [{to: web-local}]}\n"
	"- {name: db-in, port: 5432, service: db, to: {db-a: 90, db-b: 10, web: 0}}\n"
	"- {name: db-out, address: 127.0.0.1, port: 15432, to: db, nodes: [client]}\n";

TEST(catalog_standalone_golden)
{
	check_golden(STANDALONE, "catalog_standalone.json");
}

/* Behind the capture: every inbound listener is a chain of virtualInbound
 * (destination_port), PERMISSIVE adds the raw_buffer chain and tls_inspector
 * after original_dst (virtualOutbound's listener filters unchanged). */
static const char *const SIDECAR =
	"sidecar: {outbound_port: 15001, inbound_port: 15006}\n"
	"services:\n"
	"- name: api\n"
	"  mtls: PERMISSIVE\n"
	"  endpoints: ['10.0.0.2:8080']\n"
	"  rules: [{action: DENY, to: {paths: ['/api/internal/*']}}]\n"
	"- name: app\n"
	"  endpoints: ['127.0.0.1:8080']\n"
	"- name: cache\n"
	"  protocol: tcp\n"
	"  endpoints: ['10.0.0.2:6379']\n"
	"  rules: [{from: {principals: [cluster.local/ns/default/sa/client]}}]\n"
	"- name: cache-app\n"
	"  protocol: tcp\n"
	"  endpoints: ['127.0.0.1:6379']\n"
	"listeners:\n"
	"- {name: api-in, port: 8080, service: api, routes: [{to: app}]}\n"
	"- {name: cache-in, port: 6379, service: cache, to: cache-app}\n";

TEST(catalog_sidecar_golden)
{
	check_golden(SIDECAR, "catalog_sidecar.json");
}

/* No rules: exactly what the catalog compiled before rules existed (no
 * RBAC filter, STRICT chain). */
TEST(catalog_no_rules_no_rbac)
{
	char err[512];
	char *got = compile("services: [{name: a, endpoints: ['127.0.0.1:1']}]\n"
			    "listeners: [{name: l, port: 1000, service: a, routes: [{to: a}]}]\n",
			    err, sizeof(err));
	CHECK(got != NULL);
	CHECK(got && !strstr(got, "rbac"));
	CHECK(got && strstr(got, "\"require_client_certificate\": true"));
	CHECK(got && !strstr(got, "tls_inspector"));
	free(got);
}

struct bad_case {
	const char *text;
	const char *err;   /* expected prefix of the error */
};

#define SVC "services:\n- name: s\n  endpoints: ['127.0.0.1:1']\n"

static const struct bad_case BAD[] = {
	{ SVC "  rules: [{action: AUDIT}]\n",
	  "catalog.yaml:4:12: services[0].rules[0]: 'action' must be ALLOW or DENY (AUDIT is not "
	  "supported)" },
	{ SVC "  rules: [{to: {paths: ['/a*b']}}]\n",
	  "catalog.yaml:4:25: services[0].rules[0].to.paths[0]: '*' may only start or end a value" },
	{ SVC "  rules: [{to: {paths: [api]}}]\n",
	  "catalog.yaml:4:25: services[0].rules[0].to.paths[0]: a path starts with '/'" },
	{ SVC "  rules: [{from: {namespace: [a]}}]\n",
	  "catalog.yaml:4:19: services[0].rules[0].from.namespace: unknown field 'namespace'" },
	{ SVC "  rules: [{from: {}}]\n",
	  "catalog.yaml:4:18: services[0].rules[0].from: an empty entry" },
	{ SVC "  rules: [{from: {ip_blocks: [10.0.0.0/33]}}]\n",
	  "catalog.yaml:4:31: services[0].rules[0].from.ip_blocks[0]: expected an address or a CIDR" },
	{ SVC "  rules: [{to: {ports: [0]}}]\n",
	  "catalog.yaml:4:25: services[0].rules[0].to.ports[0]: expected a port number" },
	{ SVC "  rules: [{to: {methods: []}}]\n",
	  "catalog.yaml:4:17: services[0].rules[0].to.methods: 'methods' must be a non-empty list" },
	{ SVC "  rules: [{when: [{key: 'request.auth.claims[iss]', values: [x]}]}]\n",
	  "catalog.yaml:4:20: services[0].rules[0].when[0]: unsupported key 'request.auth.claims[iss]'" },
	{ SVC "  rules: [{when: [{key: source.ip}]}]\n",
	  "catalog.yaml:4:19: services[0].rules[0].when[0]: 'values' or 'not_values' is required" },
	{ SVC "  protocol: tcp\n  rules: [{to: {methods: [GET]}}]\n",
	  "catalog.yaml:5:17: services[0].rules[0].to.methods: 'methods' needs an HTTP service" },
	{ SVC "  protocol: tcp\n  rules: [{when: [{key: 'request.headers[a]', values: [x]}]}]\n",
	  "catalog.yaml:5:20: services[0].rules[0].when[0]: 'request.headers[a]' needs an HTTP" },
	{ SVC "  mtls: ON\n", "catalog.yaml:4:3: services[0]: 'mtls' must be STRICT, PERMISSIVE or "
	  "DISABLE" },
	{ SVC "  protocol: udp\n", "catalog.yaml:4:3: services[0]: 'protocol' must be http or tcp" },
	{ SVC "  protocol: tcp\n  http2: true\n", "catalog.yaml:5:3: services[0]: 'http2' needs" },
	{ SVC "listeners: [{name: l, port: 1, service: s, to: s}]\n",
	  "catalog.yaml:4:32: listeners[0]: service 's' is protocol: http, its listener needs "
	  "'routes'" },
	{ SVC "listeners: [{name: l, port: 1}]\n",
	  "catalog.yaml:4:13: listeners[0]: give 'routes' (an HTTP listener) or 'to'" },
	{ SVC "listeners: [{name: l, port: 1, routes: [], to: s}]\n",
	  "catalog.yaml:4:44: listeners[0]: give 'routes' (an HTTP listener) or 'to' (a TCP "
	  "listener), not both" },
	{ SVC "listeners: [{name: l, port: 1, to: {s: 0}}]\n",
	  "catalog.yaml:4:32: listeners[0]: at least one weight must be > 0" },
	{ SVC "listeners: [{name: l, port: 1, to: nope}]\n",
	  "catalog.yaml:4:32: listeners[0]: unknown service 'nope'" },
	{ SVC "- name: s\n  endpoints: []\n",
	  "catalog.yaml:4:3: services[1]: service 's' is defined twice" },
};

TEST(catalog_errors_have_positions)
{
	for (size_t i = 0; i < sizeof(BAD) / sizeof(BAD[0]); i++) {
		char err[512] = "";
		char *got = compile(BAD[i].text, err, sizeof(err));
		CHECK(got == NULL);
		free(got);
		if (strncmp(err, BAD[i].err, strlen(BAD[i].err))) {
			test_failed_checks++;
			fprintf(stderr, "  case %zu: got \"%s\"\n           want \"%s...\"\n", i, err,
				BAD[i].err);
		}
	}
}
