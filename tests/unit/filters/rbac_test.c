/* rbac_test.c - the RBAC policy engine (filters/common/rbac): parsing with
 * exact error paths, and decisions for every principal and permission kind,
 * ALLOW and DENY. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include "test.h"
#include "proxy/config/yaml_json.h"
#include "proxy/http/headers.h"
#include "filters/common/rbac/rbac.h"

/* Parse `rules:` of the YAML document; NULL with err filled on failure. */
static struct rbac_engine *parse(const char *yaml, bool http, char *err, size_t errlen)
{
	struct cfg_src *src = NULL;
	struct cfg_ctx c;
	char lerr[256];
	struct rbac_engine *e = NULL;
	json_t *root = yaml_load_buffer("t.yaml", yaml, strlen(yaml), &src, lerr, sizeof(lerr));
	err[0] = 0;
	if (!root) {
		snprintf(err, errlen, "%s", lerr);
		return NULL;
	}
	cfg_init(&c, src, "t.yaml");
	if (rbac_engine_parse(&c, root, "rules", http, &e))
		snprintf(err, errlen, "%s", c.err);
	CHECK_INT(c.depth, 0);
	json_decref(root);
	cfg_src_free(src);
	return e;
}

static struct sockaddr_in sin4(const char *ip, int port)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port) };
	inet_pton(AF_INET, ip, &a.sin_addr);
	return a;
}

struct env {
	struct sockaddr_in peer, local;
	struct http_headers h;
	struct rbac_input in;
};

static void env_init(struct env *v, const char *peer, const char *local, int port)
{
	memset(v, 0, sizeof(*v));
	v->peer = sin4(peer, 40000);
	v->local = sin4(local, port);
	hdrs_init(&v->h);
	hdrs_add_cstr(&v->h, ":method", "GET");
	hdrs_add_cstr(&v->h, ":path", "/admin/x?q=1");
	hdrs_add_cstr(&v->h, ":authority", "svc.local");
	hdrs_add_cstr(&v->h, "x-user", "alice");
	v->in.direct_remote = (struct sockaddr *)&v->peer;
	v->in.remote = v->in.direct_remote;
	v->in.local = (struct sockaddr *)&v->local;
	v->in.headers = &v->h;
}

static bool allowed(const char *yaml, const struct rbac_input *in)
{
	char err[1024];
	struct rbac_engine *e = parse(yaml, true, err, sizeof(err));
	CHECK_STR(err, "");
	if (!e)
		return false;
	bool ok = rbac_engine_allowed(e, in, NULL);
	rbac_engine_free(e);
	return ok;
}

#define POL(perm, princ) \
	"rules:\n  policies:\n    p:\n      permissions: [" perm "]\n      principals: [" princ "]\n"
#define ALLOW(perm, princ) POL(perm, princ)
#define DENY(perm, princ) "rules:\n  action: DENY\n  policies:\n    p:\n      permissions: [" perm "]\n      principals: [" princ "]\n"

TEST(rbac_any_allow_and_deny)
{
	struct env v;
	env_init(&v, "10.1.2.3", "10.0.0.7", 8080);
	CHECK(allowed(ALLOW("{any: true}", "{any: true}"), &v.in));
	CHECK(!allowed(DENY("{any: true}", "{any: true}"), &v.in));
	/* ALLOW without policies denies all; DENY without policies allows all */
	CHECK(!allowed("rules: {}\n", &v.in));
	CHECK(allowed("rules: {action: DENY}\n", &v.in));
	hdrs_free(&v.h);
}

TEST(rbac_principals)
{
	struct env v;
	env_init(&v, "10.1.2.3", "10.0.0.7", 8080);
	/* authenticated: never on plaintext */
	CHECK(!allowed(ALLOW("{any: true}", "{authenticated: {}}"), &v.in));
	v.in.tls = true;   /* TLS without a client certificate */
	CHECK(allowed(ALLOW("{any: true}", "{authenticated: {}}"), &v.in));
	CHECK(!allowed(ALLOW("{any: true}", "{authenticated: {principal_name: {exact: spiffe://td/ns/a/sa/x}}}"), &v.in));
	v.in.principal = "spiffe://td/ns/a/sa/x";
	CHECK(allowed(ALLOW("{any: true}", "{authenticated: {principal_name: {exact: spiffe://td/ns/a/sa/x}}}"), &v.in));
	CHECK(allowed(ALLOW("{any: true}", "{authenticated: {principal_name: {prefix: spiffe://td/ns/a/}}}"), &v.in));
	CHECK(!allowed(ALLOW("{any: true}", "{authenticated: {principal_name: {exact: spiffe://td/ns/b/sa/x}}}"), &v.in));
	CHECK(allowed(ALLOW("{any: true}", "{authenticated: {principal_name: {safe_regex: {regex: 'spiffe://td/ns/[a-c]/sa/.*'}}}}"), &v.in));
	/* CIDRs */
	CHECK(allowed(ALLOW("{any: true}", "{source_ip: {address_prefix: 10.1.0.0, prefix_len: 16}}"), &v.in));
	CHECK(!allowed(ALLOW("{any: true}", "{source_ip: {address_prefix: 10.2.0.0, prefix_len: 16}}"), &v.in));
	CHECK(allowed(ALLOW("{any: true}", "{direct_remote_ip: {address_prefix: 10.1.2.3, prefix_len: 32}}"), &v.in));
	CHECK(allowed(ALLOW("{any: true}", "{remote_ip: {address_prefix: 10.0.0.0, prefix_len: 8}}"), &v.in));
	CHECK(!allowed(ALLOW("{any: true}", "{remote_ip: {address_prefix: '::', prefix_len: 0}}"), &v.in));
	/* header */
	CHECK(allowed(ALLOW("{any: true}", "{header: {name: x-user, string_match: {exact: alice}}}"), &v.in));
	CHECK(!allowed(ALLOW("{any: true}", "{header: {name: x-user, string_match: {exact: bob}}}"), &v.in));
	CHECK(allowed(ALLOW("{any: true}", "{header: {name: x-missing, present_match: true, invert_match: true}}"), &v.in));
	/* and / or / not */
	CHECK(allowed(ALLOW("{any: true}", "{and_ids: {ids: [{source_ip: {address_prefix: 10.0.0.0, prefix_len: 8}}, {header: {name: x-user, exact_match: alice}}]}}"), &v.in));
	CHECK(!allowed(ALLOW("{any: true}", "{and_ids: {ids: [{source_ip: {address_prefix: 10.0.0.0, prefix_len: 8}}, {header: {name: x-user, exact_match: bob}}]}}"), &v.in));
	CHECK(allowed(ALLOW("{any: true}", "{or_ids: {ids: [{source_ip: {address_prefix: 192.168.0.0, prefix_len: 16}}, {header: {name: x-user, exact_match: alice}}]}}"), &v.in));
	CHECK(!allowed(ALLOW("{any: true}", "{not_id: {header: {name: x-user, exact_match: alice}}}"), &v.in));
	CHECK(allowed(ALLOW("{any: true}", "{not_id: {header: {name: x-user, exact_match: bob}}}"), &v.in));
	/* any of the principals */
	CHECK(allowed(ALLOW("{any: true}", "{header: {name: x-user, exact_match: bob}}, {any: true}"), &v.in));
	hdrs_free(&v.h);
}

TEST(rbac_permissions)
{
	struct env v;
	env_init(&v, "10.1.2.3", "10.0.0.7", 8080);
	CHECK(allowed(ALLOW("{header: {name: ':method', exact_match: GET}}", "{any: true}"), &v.in));
	CHECK(!allowed(ALLOW("{header: {name: ':method', exact_match: POST}}", "{any: true}"), &v.in));
	CHECK(allowed(ALLOW("{header: {name: ':authority', string_match: {suffix: .local}}}", "{any: true}"), &v.in));
	CHECK(allowed(ALLOW("{header: {name: ':path', string_match: {prefix: /admin}}}", "{any: true}"), &v.in));
	/* url_path ignores the query */
	CHECK(allowed(ALLOW("{url_path: {path: {exact: /admin/x}}}", "{any: true}"), &v.in));
	CHECK(!allowed(ALLOW("{url_path: {path: {exact: /admin}}}", "{any: true}"), &v.in));
	CHECK(allowed(ALLOW("{url_path: {path: {prefix: /ADMIN, ignore_case: true}}}", "{any: true}"), &v.in));
	CHECK(allowed(ALLOW("{destination_port: 8080}", "{any: true}"), &v.in));
	CHECK(!allowed(ALLOW("{destination_port: 8081}", "{any: true}"), &v.in));
	CHECK(allowed(ALLOW("{destination_port_range: {start: 8000, end: 8081}}", "{any: true}"), &v.in));
	CHECK(!allowed(ALLOW("{destination_port_range: {start: 8000, end: 8080}}", "{any: true}"), &v.in));
	CHECK(allowed(ALLOW("{destination_ip: {address_prefix: 10.0.0.0, prefix_len: 24}}", "{any: true}"), &v.in));
	CHECK(!allowed(ALLOW("{destination_ip: {address_prefix: 10.0.1.0, prefix_len: 24}}", "{any: true}"), &v.in));
	CHECK(!allowed(ALLOW("{requested_server_name: {exact: a.example}}", "{any: true}"), &v.in));
	CHECK(allowed(ALLOW("{requested_server_name: {exact: ''}}", "{any: true}"), &v.in));
	v.in.sni = "a.example";
	CHECK(allowed(ALLOW("{requested_server_name: {exact: a.example}}", "{any: true}"), &v.in));
	CHECK(allowed(ALLOW("{and_rules: {rules: [{destination_port: 8080}, {header: {name: ':method', exact_match: GET}}]}}", "{any: true}"), &v.in));
	CHECK(!allowed(ALLOW("{and_rules: {rules: [{destination_port: 8080}, {header: {name: ':method', exact_match: PUT}}]}}", "{any: true}"), &v.in));
	CHECK(allowed(ALLOW("{or_rules: {rules: [{destination_port: 1}, {header: {name: ':method', exact_match: GET}}]}}", "{any: true}"), &v.in));
	CHECK(!allowed(ALLOW("{not_rule: {destination_port: 8080}}", "{any: true}"), &v.in));
	/* DENY of one path only */
	CHECK(!allowed(DENY("{url_path: {path: {prefix: /admin}}}", "{any: true}"), &v.in));
	CHECK(allowed(DENY("{url_path: {path: {prefix: /public}}}", "{any: true}"), &v.in));
	/* network: no headers, header rules never match */
	v.in.headers = NULL;
	CHECK(!allowed(ALLOW("{header: {name: ':method', exact_match: GET}}", "{any: true}"), &v.in));
	hdrs_free(&v.h);
}

TEST(rbac_matched_policy_name)
{
	char err[1024];
	struct env v;
	const char *name = NULL;
	env_init(&v, "10.1.2.3", "10.0.0.7", 8080);
	struct rbac_engine *e = parse("rules:\n  policies:\n    nope: {permissions: [{destination_port: 1}], principals: [{any: true}]}\n"
				      "    yes: {permissions: [{any: true}], principals: [{any: true}]}\n",
				      true, err, sizeof(err));
	CHECK_STR(err, "");
	CHECK(e && rbac_engine_allowed(e, &v.in, &name));
	CHECK_STR(name ? name : "(null)", "yes");
	rbac_engine_free(e);
	hdrs_free(&v.h);
}

static void expect_error(const char *yaml, bool http, const char *msg)
{
	char err[1024];
	struct rbac_engine *e = parse(yaml, http, err, sizeof(err));
	CHECK(e == NULL);
	rbac_engine_free(e);
	CHECK_STR(err, msg);
}

TEST(rbac_parse_errors)
{
	expect_error("rules: {action: LOG}\n", true,
		     "t.yaml:1:9: rules.action: LOG is not supported (use shadow_rules to count decisions without enforcing them)");
	expect_error("rules: {action: MAYBE}\n", true,
		     "t.yaml:1:9: rules.action: unknown value 'MAYBE' (expected one of ALLOW, DENY, LOG)");
	expect_error(POL("{any: true, destination_port: 1}", "{any: true}"), true,
		     "t.yaml:4:21: rules.policies.p.permissions[0]: a permission sets exactly one rule ('any' and 'destination_port' given)");
	expect_error(POL("{}", "{any: true}"), true,
		     "t.yaml:4:21: rules.policies.p.permissions[0]: a permission must set one rule");
	expect_error(POL("{any: true}", "{bogus: 1}"), true,
		     "t.yaml:5:21: rules.policies.p.principals[0].bogus: unknown field 'bogus'");
	expect_error(POL("{any: false}", "{any: true}"), true,
		     "t.yaml:4:22: rules.policies.p.permissions[0].any: must be true");
	expect_error(POL("{any: true}", "{source_ip: {address_prefix: 10.0.0.0, prefix_len: 33}}"), true,
		     "t.yaml:5:21: rules.policies.p.principals[0].source_ip: '10.0.0.0/33' is not an IP address with a prefix length that fits it");
	expect_error(POL("{destination_port: 70000}", "{any: true}"), true,
		     "t.yaml:4:22: rules.policies.p.permissions[0].destination_port: must be at most 65535");
	expect_error(POL("{any: true}", "{header: {name: x, exact_match: a}}"), false,
		     "t.yaml:5:21: rules.policies.p.principals[0].header: only the HTTP RBAC filter can match 'header'");
	expect_error(POL("{metadata: {}}", "{any: true}"), true,
		     "t.yaml:4:22: rules.policies.p.permissions[0].metadata: not supported");
	expect_error("rules:\n  policies:\n    p: {permissions: [{any: true}], principals: []}\n", true,
		     "t.yaml:3:37: rules.policies.p.principals: at least one entry is required");
	expect_error("rules:\n  policies:\n    p: {permissions: [{any: true}], principals: [{any: true}], condition: {}}\n", true,
		     "t.yaml:3:64: rules.policies.p.condition: CEL conditions are not supported");
	expect_error(POL("{any: true}", "{authenticated: {principal_name: {exact: a, prefix: b}}}"), true,
		     "t.yaml:5:37: rules.policies.p.principals[0].authenticated.principal_name: only one of 'exact', 'prefix', 'suffix', 'contains' or 'safe_regex' may be set ('exact' and 'prefix' are both set)");
}

TEST(rbac_absent_is_no_engine)
{
	char err[64];
	CHECK(parse("shadow_rules: {}\n", true, err, sizeof(err)) == NULL);
	CHECK_STR(err, "");
}
