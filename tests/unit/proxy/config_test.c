/* config_test.c - the bootstrap compiler: good configs build, bad ones fail
 * with the exact field path and file:line:col. */
#include "test.h"
#include "proxy/server.h"
#include "proxy/config/yaml_json.h"
#include "bootstrap_helper.h"
#include "proxy/upstream/cluster.h"

#define HCM_HEAD \
	"static_resources:\n" \
	"  clusters:\n" \
	"  - name: backend\n" \
	"    connect_timeout: 1s\n" \
	"    load_assignment:\n" \
	"      endpoints:\n" \
	"      - lb_endpoints:\n" \
	"        - endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: 8080}}}\n" \
	"  listeners:\n" \
	"  - name: l\n" \
	"    address: {socket_address: {address: 127.0.0.1, port_value: 10000}}\n" \
	"    filter_chains:\n" \
	"    - filters:\n" \
	"      - name: envoy.filters.network.http_connection_manager\n" \
	"        typed_config:\n" \
	"          \"@type\": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager\n" \
	"          stat_prefix: ingress\n" \
	"          http_filters:\n" \
	"          - name: envoy.filters.http.router\n" \
	"            typed_config: {\"@type\": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}\n"

TEST(config_good_hcm)
{
	char err[1024];
	const char *y = HCM_HEAD
		"          route_config:\n"
		"            virtual_hosts:\n"
		"            - name: all\n"
		"              domains: [\"*\"]\n"
		"              routes:\n"
		"              - match: {prefix: /}\n"
		"                route: {cluster: backend}\n";
	CHECK(test_bootstrap_ok(y, err, sizeof(err)));
	CHECK_STR(err, "");
}

TEST(config_unknown_route_field)
{
	char err[1024];
	const char *y = HCM_HEAD
		"          route_config:\n"
		"            virtual_hosts:\n"
		"            - name: all\n"
		"              domains: [\"*\"]\n"
		"              routes:\n"
		"              - match: {prefx: /}\n"
		"                route: {cluster: backend}\n";
	CHECK(!test_bootstrap_ok(y, err, sizeof(err)));
	CHECK_STR(err, "t.yaml:26:25: static_resources.listeners[0].filter_chains[0].filters[0]"
		       ".typed_config.route_config.virtual_hosts[0].routes[0].match.prefx: "
		       "unknown field 'prefx'");
}

TEST(config_route_unknown_cluster)
{
	char err[1024];
	const char *y = HCM_HEAD
		"          route_config:\n"
		"            virtual_hosts:\n"
		"            - name: all\n"
		"              domains: [\"*\"]\n"
		"              routes:\n"
		"              - match: {prefix: /}\n"
		"                route: {cluster: nope}\n";
	CHECK(!test_bootstrap_ok(y, err, sizeof(err)));
	CHECK_CONTAINS(err, "typed_config.route_config: route references unknown cluster 'nope'");
	/* with validate_clusters: false it compiles (503 at run time) */
	const char *y2 = HCM_HEAD
		"          route_config:\n"
		"            validate_clusters: false\n"
		"            virtual_hosts:\n"
		"            - name: all\n"
		"              domains: [\"*\"]\n"
		"              routes:\n"
		"              - match: {prefix: /}\n"
		"                route: {cluster: nope}\n";
	CHECK(test_bootstrap_ok(y2, err, sizeof(err)));
}

TEST(config_bad_port)
{
	char err[1024];
	const char *y =
		"static_resources:\n"
		"  listeners:\n"
		"  - name: l\n"
		"    address: {socket_address: {address: 127.0.0.1, port_value: 70000}}\n"
		"    filter_chains: []\n";
	CHECK(!test_bootstrap_ok(y, err, sizeof(err)));
	CHECK_STR(err, "t.yaml:4:52: static_resources.listeners[0].address.socket_address.port_value: "
		       "expected an integer in 0..65535");
}

TEST(config_wrong_type_and_missing)
{
	char err[1024];
	CHECK(!test_bootstrap_ok("static_resources:\n  clusters:\n  - connect_timeout: 1s\n", err, sizeof(err)));
	CHECK_CONTAINS(err, "static_resources.clusters[0].name: missing required field 'name'");
	CHECK(!test_bootstrap_ok("static_resources:\n  clusters:\n  - name: a\n    connect_timeout: 5\n", err,
		      sizeof(err)));
	CHECK_CONTAINS(err, "t.yaml:4:5: static_resources.clusters[0].connect_timeout: invalid duration");
	CHECK(!test_bootstrap_ok("static_resources:\n  clusters:\n  - name: a\n    type: EDS\n", err, sizeof(err)));
	CHECK_CONTAINS(err, "static_resources.clusters[0].eds_cluster_config: missing required field");
	CHECK(!test_bootstrap_ok("static_resources:\n  clusters:\n  - name: a\n  - name: a\n", err, sizeof(err)));
	CHECK_CONTAINS(err, "static_resources.clusters[1].name: duplicate cluster name 'a'");
	CHECK(!test_bootstrap_ok("dynamic_resources: {}\n", err, sizeof(err)));
	CHECK_CONTAINS(err, "missing required field 'ads_config'");
}

TEST(config_static_cluster_needs_ip)
{
	char err[1024];
	const char *y =
		"static_resources:\n"
		"  clusters:\n"
		"  - name: a\n"
		"    type: STATIC\n"
		"    load_assignment:\n"
		"      endpoints:\n"
		"      - lb_endpoints:\n"
		"        - endpoint: {address: {socket_address: {address: example.com, port_value: 80}}}\n";
	CHECK(!test_bootstrap_ok(y, err, sizeof(err)));
	CHECK_CONTAINS(err, "endpoint.address.socket_address.address: 'example.com' is not an IP address");
	/* the same endpoint is fine for STRICT_DNS */
	char y2[1024];
	snprintf(y2, sizeof(y2), "%s", y);
	char *p = strstr(y2, "STATIC");
	memmove(p + 10, p + 6, strlen(p + 6) + 1);
	memcpy(p, "STRICT_DNS", 10);
	CHECK(test_bootstrap_ok(y2, err, sizeof(err)));
}

TEST(config_unknown_network_filter)
{
	char err[1024];
	const char *y =
		"static_resources:\n"
		"  listeners:\n"
		"  - address: {socket_address: {address: 127.0.0.1, port_value: 1}}\n"
		"    filter_chains:\n"
		"    - filters:\n"
		"      - name: envoy.filters.network.redis_proxy\n"
		"        typed_config: {\"@type\": type.googleapis.com/envoy.extensions.filters.network.redis_proxy.v3.RedisProxy}\n";
	CHECK(!test_bootstrap_ok(y, err, sizeof(err)));
	CHECK_CONTAINS(err, "filters[0].typed_config: unknown or unsupported network filter "
			    "'type.googleapis.com/envoy.extensions.filters.network.redis_proxy.v3.RedisProxy'");
}

TEST(config_tcp_proxy)
{
	char err[1024];
	const char *y =
		"static_resources:\n"
		"  clusters:\n"
		"  - name: b\n"
		"    load_assignment: {endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: 9}}}}]}]}\n"
		"  listeners:\n"
		"  - address: {socket_address: {address: 127.0.0.1, port_value: 1}}\n"
		"    filter_chains:\n"
		"    - filters:\n"
		"      - name: envoy.filters.network.tcp_proxy\n"
		"        typed_config:\n"
		"          \"@type\": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy\n"
		"          stat_prefix: t\n"
		"          cluster: c\n";
	CHECK(!test_bootstrap_ok(y, err, sizeof(err)));
	CHECK_STR(err, "t.yaml:13:11: static_resources.listeners[0].filter_chains[0].filters[0]"
		       ".typed_config.cluster: unknown cluster 'c'");
}

TEST(config_cluster_hash_lb)
{
	char err[1024];
#define C1 "static_resources:\n  clusters:\n  - name: a\n"
	CHECK(test_bootstrap_ok(C1 "    lb_policy: RING_HASH\n    ring_hash_lb_config: {minimum_ring_size: 16, "
		      "maximum_ring_size: 4096, hash_function: XX_HASH}\n", err, sizeof(err)));
	CHECK(test_bootstrap_ok(C1 "    lb_policy: MAGLEV\n    maglev_lb_config: {table_size: 307}\n", err,
		      sizeof(err)));
	CHECK(!test_bootstrap_ok(C1 "    lb_policy: MAGLEV\n    maglev_lb_config: {table_size: 1000}\n", err,
		      sizeof(err)));
	CHECK_CONTAINS(err, "static_resources.clusters[0].maglev_lb_config.table_size: the table size "
		       "of maglev must be a prime number below 5000011");
	CHECK(!test_bootstrap_ok(C1 "    lb_policy: RING_HASH\n    ring_hash_lb_config: {minimum_ring_size: 100, "
		      "maximum_ring_size: 10}\n", err, sizeof(err)));
	CHECK_CONTAINS(err, "static_resources.clusters[0].ring_hash_lb_config: minimum_ring_size (100) > "
		       "maximum_ring_size (10)");
	CHECK(!test_bootstrap_ok(C1 "    lb_policy: RING_HASH\n    ring_hash_lb_config: {maximum_ring_size: 8388609}\n",
		      err, sizeof(err)));
	CHECK_CONTAINS(err, "ring_hash_lb_config.maximum_ring_size: must be in 1..8388608");
	CHECK(!test_bootstrap_ok(C1 "    lb_policy: RING_HASH\n    ring_hash_lb_config: {hash_function: MURMUR_HASH_2}\n",
		      err, sizeof(err)));
	CHECK_CONTAINS(err, "ring_hash_lb_config.hash_function: MURMUR_HASH_2 is not supported yet");
	CHECK(!test_bootstrap_ok(C1 "    lb_policy: RING_HASH\n    ring_hash_lb_config: {ring_size: 1}\n",
		      err, sizeof(err)));
	CHECK_CONTAINS(err, "ring_hash_lb_config.ring_size: unknown field 'ring_size'");
	CHECK(!test_bootstrap_ok(C1 "    lb_policy: CLUSTER_PROVIDED\n", err, sizeof(err)));
	CHECK_CONTAINS(err, "lb_policy: lb_policy CLUSTER_PROVIDED is not supported yet");
#undef C1
}

/* Out-of-range percents are errors, never converted (a huge double into
 * uint32_t is undefined behaviour; found by the xds_response fuzzer). */
TEST(config_percent_out_of_range)
{
	char err[1024];
	const char *y = "static_resources:\n  clusters:\n  - name: a\n"
			"    common_lb_config: {healthy_panic_threshold: {value: 3.4e175}}\n";
	CHECK(!test_bootstrap_ok(y, err, sizeof(err)));
	CHECK_CONTAINS(err, "static_resources.clusters[0].common_lb_config.healthy_panic_threshold: "
			    "must be in 0..100");
	y = "static_resources:\n  clusters:\n  - name: a\n"
	    "    common_lb_config: {healthy_panic_threshold: {value: -1e300}}\n";
	CHECK(!test_bootstrap_ok(y, err, sizeof(err)));
	CHECK_CONTAINS(err, "must be in 0..100");
}
