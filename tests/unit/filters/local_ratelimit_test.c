/* local_ratelimit_test.c - config of the HTTP and network local rate limit
 * filters and of network filter chains with a non-terminal filter: good
 * configs compile, bad ones fail with the exact path, position and message. */
#include "test.h"
#include "proxy/server.h"
#include "proxy/filter.h"
#include "proxy/config/yaml_json.h"
#include "proxy/upstream/cluster.h"
#include "bootstrap_helper.h"

/* Expect failure with exactly msg. */
static void expect_error(const char *yaml, const char *msg)
{
	char err[1024];
	struct snapshot *s = test_bootstrap(yaml, err, sizeof(err));
	CHECK(s == NULL);
	if (s)
		test_bootstrap_done(s);
	CHECK_STR(err, msg);
}

#define CLUSTER \
	"static_resources:\n" \
	"  clusters:\n" \
	"  - name: b\n" \
	"    load_assignment: {endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: 9}}}}]}]}\n" \
	"  listeners:\n" \
	"  - address: {socket_address: {address: 127.0.0.1, port_value: 1}}\n" \
	"    filter_chains:\n" \
	"    - filters:\n"
#define TCP_PROXY \
	"      - name: envoy.filters.network.tcp_proxy\n" \
	"        typed_config:\n" \
	"          \"@type\": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy\n" \
	"          stat_prefix: t\n" \
	"          cluster: b\n"
#define NET_LRL_HEAD \
	"      - name: envoy.filters.network.local_ratelimit\n" \
	"        typed_config:\n" \
	"          \"@type\": type.googleapis.com/envoy.extensions.filters.network.local_ratelimit.v3.LocalRateLimit\n"
#define NET_LRL NET_LRL_HEAD \
	"          stat_prefix: conns\n" \
	"          token_bucket: {max_tokens: 5, fill_interval: 1s}\n"

/* ---- network filter chains ---- */

TEST(chain_nonterminal_then_terminal)
{
	char err[1024];
	struct snapshot *s = test_bootstrap(CLUSTER NET_LRL NET_LRL TCP_PROXY, err, sizeof(err));
	CHECK_STR(err, "");
	CHECK(s != NULL);
	if (!s)
		return;
	const struct filter_chain *fc = &s->listeners[0]->chains[0];
	CHECK_INT(fc->npre, 2);
	CHECK_STR(fc->pre[0].ops->name, "envoy.filters.network.local_ratelimit");
	CHECK_STR(fc->ops->name, "envoy.filters.network.tcp_proxy");
	test_bootstrap_done(s);
}

TEST(chain_terminal_must_be_last)
{
	expect_error(CLUSTER TCP_PROXY NET_LRL,
		     "t.yaml:9:9: static_resources.listeners[0].filter_chains[0].filters[0]: terminal "
		     "network filter 'envoy.filters.network.tcp_proxy' must be the last in the chain");
}

TEST(chain_needs_terminal)
{
	expect_error(CLUSTER NET_LRL,
		     "t.yaml:9:9: static_resources.listeners[0].filter_chains[0].filters[0]: the last "
		     "network filter must be terminal (tcp_proxy or http_connection_manager), not "
		     "'envoy.filters.network.local_ratelimit'");
}

TEST(chain_bad_filter_after_good_one_frees)
{
	/* the first filter's config is freed when the second fails (ASan) */
	expect_error(CLUSTER NET_LRL NET_LRL_HEAD "          stat_prefix: x\n" TCP_PROXY,
		     "t.yaml:16:11: static_resources.listeners[0].filter_chains[0].filters[1]"
		     ".typed_config.token_bucket: missing required field 'token_bucket'");
}

/* ---- network local_ratelimit ---- */

TEST(net_lrl_fill_interval_min)
{
	expect_error(CLUSTER NET_LRL_HEAD "          stat_prefix: c\n"
		     "          token_bucket: {max_tokens: 5, fill_interval: 0.01s}\n" TCP_PROXY,
		     "t.yaml:13:41: static_resources.listeners[0].filter_chains[0].filters[0]"
		     ".typed_config.token_bucket.fill_interval: local rate limit token bucket fill "
		     "timer must be >= 50ms");
}

TEST(net_lrl_max_tokens_required)
{
	expect_error(CLUSTER NET_LRL_HEAD "          stat_prefix: c\n"
		     "          token_bucket: {fill_interval: 1s}\n" TCP_PROXY,
		     "t.yaml:13:25: static_resources.listeners[0].filter_chains[0].filters[0]"
		     ".typed_config.token_bucket.max_tokens: missing required field 'max_tokens'");
}

TEST(net_lrl_share_key_not_yet)
{
	expect_error(CLUSTER NET_LRL "          share_key: k\n" TCP_PROXY,
		     "t.yaml:14:11: static_resources.listeners[0].filter_chains[0].filters[0]"
		     ".typed_config.share_key: not supported yet (each filter has its own bucket)");
}

TEST(net_lrl_runtime_enabled)
{
	char err[1024];
	struct snapshot *s = test_bootstrap(CLUSTER NET_LRL
				     "          runtime_enabled: {default_value: false, runtime_key: k}\n"
				     TCP_PROXY, err, sizeof(err));
	CHECK_STR(err, "");
	if (s)
		test_bootstrap_done(s);
	expect_error(CLUSTER NET_LRL "          runtime_enabled: {runtime_key: k}\n" TCP_PROXY,
		     "t.yaml:14:28: static_resources.listeners[0].filter_chains[0].filters[0]"
		     ".typed_config.runtime_enabled.default_value: missing required field "
		     "'default_value'");
}

/* ---- HTTP local_ratelimit ---- */

#define HCM \
	"      - name: envoy.filters.network.http_connection_manager\n" \
	"        typed_config:\n" \
	"          \"@type\": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager\n" \
	"          stat_prefix: ingress\n" \
	"          route_config: {virtual_hosts: [{name: a, domains: ['*'], routes: [{match: {prefix: /}, route: {cluster: b}}]}]}\n" \
	"          http_filters:\n" \
	"          - name: envoy.filters.http.local_ratelimit\n" \
	"            typed_config:\n" \
	"              \"@type\": type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit\n"
#define ROUTER \
	"          - name: envoy.filters.http.router\n" \
	"            typed_config: {\"@type\": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}\n"
#define P "              "
#define LRL_PATH "static_resources.listeners[0].filter_chains[0].filters[0].typed_config.http_filters[0].typed_config"

TEST(http_lrl_full_config)
{
	char err[1024];
	struct snapshot *s = test_bootstrap(CLUSTER HCM
		P "stat_prefix: rl\n"
		P "token_bucket: {max_tokens: 20, tokens_per_fill: 4, fill_interval: 0.2s}\n"
		P "filter_enabled: {runtime_key: a, default_value: {numerator: 100, denominator: HUNDRED}}\n"
		P "filter_enforced: {default_value: {numerator: 500000, denominator: MILLION}}\n"
		P "status: {code: 503}\n"
		P "response_headers_to_add: [{append_action: OVERWRITE_IF_EXISTS_OR_ADD, header: {key: x-rl, value: 'yes'}}]\n"
		P "request_headers_to_add_when_not_enforced: [{header: {key: x-shadow, value: '1'}}]\n"
		P "local_rate_limit_per_downstream_connection: true\n"
		P "enable_x_ratelimit_headers: DRAFT_VERSION_03\n"
		P "descriptors: [{entries: [{key: k, value: v}, {key: k2, value: v2}],"
		  " token_bucket: {max_tokens: 1, fill_interval: 1s}},"
		  " {entries: [{key: k, value: v}], token_bucket: {max_tokens: 5, fill_interval: 60s}}]\n"
		P "stage: 3\n"
		P "vh_rate_limits: INCLUDE\n"
		P "always_consume_default_token_bucket: false\n"
		P "rate_limits: [{stage: 3, actions: [{generic_key: {descriptor_value: v, descriptor_key: k}}]}]\n"
		ROUTER, err, sizeof(err));
	CHECK_STR(err, "");
	CHECK(s != NULL);
	if (s)
		test_bootstrap_done(s);
}

TEST(http_lrl_errors)
{
	expect_error(CLUSTER HCM P "token_bucket: {max_tokens: 1, fill_interval: 1s}\n" ROUTER,
		     "t.yaml:17:15: " LRL_PATH ".stat_prefix: missing required field 'stat_prefix'");
	expect_error(CLUSTER HCM P "stat_prefix: rl\n"
		     P "token_bucket: {max_tokens: 0, fill_interval: 1s}\n" ROUTER,
		     "t.yaml:19:30: " LRL_PATH ".token_bucket.max_tokens: must be greater than 0");
	expect_error(CLUSTER HCM P "stat_prefix: rl\n"
		     P "token_bucket: {max_tokens: 1, fill_interval: 1s, fill_rate: 2}\n" ROUTER,
		     "t.yaml:19:64: " LRL_PATH ".token_bucket.fill_rate: unknown field 'fill_rate'");
	expect_error(CLUSTER HCM P "stat_prefix: rl\n"
		     P "filter_enabled: {default_value: {numerator: 1, denominator: PERCENT}}\n" ROUTER,
		     "t.yaml:19:62: " LRL_PATH ".filter_enabled.default_value.denominator: "
		     "unknown value 'PERCENT' (expected one of HUNDRED, TEN_THOUSAND, MILLION)");
	expect_error(CLUSTER HCM P "stat_prefix: rl\n"
		     P "filter_enforced: {runtime_key: k}\n" ROUTER,
		     "t.yaml:19:32: " LRL_PATH ".filter_enforced.default_value: missing required "
		     "field 'default_value'");
	expect_error(CLUSTER HCM P "stat_prefix: rl\n" P "status: {code: 99}\n" ROUTER,
		     "t.yaml:19:24: " LRL_PATH ".status.code: must be an HTTP status in 200..599");
	expect_error(CLUSTER HCM P "stat_prefix: rl\n"
		     P "descriptors: [{entries: [{key: a}], token_bucket: {max_tokens: 1, fill_interval: 1s}}]\n"
		     ROUTER,
		     "t.yaml:19:40: " LRL_PATH ".descriptors[0].entries[0]: an empty value (a wildcard "
		     "descriptor) is not supported yet");
	expect_error(CLUSTER HCM P "stat_prefix: rl\n"
		     P "descriptors: [{entries: [{key: a, value: b}]}]\n" ROUTER,
		     "t.yaml:19:29: " LRL_PATH ".descriptors[0].token_bucket: missing required field "
		     "'token_bucket'");
	expect_error(CLUSTER HCM P "stat_prefix: rl\n"
		     P "descriptors: [{entries: [{key: a, value: b}], token_bucket: {max_tokens: 1, fill_interval: 1s}},"
		     " {entries: [{key: a, value: b}], token_bucket: {max_tokens: 2, fill_interval: 1s}}]\n"
		     ROUTER,
		     "t.yaml:19:112: " LRL_PATH ".descriptors[1]: duplicate descriptor (same entries as "
		     "descriptors[0])");
	expect_error(CLUSTER HCM P "stat_prefix: rl\n" P "stage: 11\n" ROUTER,
		     "t.yaml:19:15: " LRL_PATH ".stage: must be at most 10");
	expect_error(CLUSTER HCM P "stat_prefix: rl\n" P "vh_rate_limits: SOMETIMES\n" ROUTER,
		     "t.yaml:19:15: " LRL_PATH ".vh_rate_limits: unknown value 'SOMETIMES' "
		     "(expected one of OVERRIDE, INCLUDE, IGNORE)");
	expect_error(CLUSTER HCM P "stat_prefix: rl\n"
		     P "rate_limits: [{actions: [{dynamic_metadata: {}}]}]\n" ROUTER,
		     "t.yaml:19:41: " LRL_PATH ".rate_limits[0].actions[0].dynamic_metadata: not "
		     "supported yet");
	expect_error(CLUSTER HCM P "stat_prefix: rl\n" P "max_dynamic_descriptors: 5\n" ROUTER,
		     "t.yaml:19:15: " LRL_PATH ".max_dynamic_descriptors: not supported yet by Remora's "
		     "local_ratelimit");
	expect_error(CLUSTER HCM P "stat_prefix: rl\n"
		     P "response_headers_to_add: [{header: {key: ':status', value: '1'}}]\n" ROUTER,
		     "t.yaml:19:51: " LRL_PATH ".response_headers_to_add[0].header.key: "
		     ":-prefixed or host headers may not be modified");
	expect_error(CLUSTER HCM P "stat_prefix: rl\n" P "enable_x_ratelimit_headers: DRAFT\n" ROUTER,
		     "t.yaml:19:15: " LRL_PATH ".enable_x_ratelimit_headers: unknown value 'DRAFT' "
		     "(expected one of OFF, DRAFT_VERSION_03)");
}
