/* pb_encode_test.c - proto3 JSON -> protobuf (xds/pb_encode.c): real Envoy
 * resources written as YAML go json -> pb -> json (through pb_json.c, the
 * decoder Remora uses) and must come back equal; errors name the field path
 * and, with the YAML position table, the file:line:col. */
#include "test.h"
#include <stdlib.h>
#include "xds/pb_encode.h"
#include "xds/pb_json.h"
#include "proxy/config/yaml_json.h"
#include "envoy/config/cluster/v3/subset.pb-c.h"
#include "google/protobuf/duration.pb-c.h"

static json_t *yaml(const char *text)
{
	char err[512];
	json_t *j = yaml_load_buffer("test.yaml", text, strlen(text), NULL, err, sizeof(err));
	if (!j)
		fprintf(stderr, "  yaml: %s\n", err);
	return j;
}

/* json -> pb -> json; returns the decoded JSON (new ref) or NULL. */
static json_t *round_trip(const json_t *in)
{
	struct pb_encode_ctx ec;
	struct pb_json_ctx dc = { 0 };
	char *url = NULL;
	uint8_t *bytes = NULL;
	size_t len = 0;
	if (pb_encode_any_payload(&ec, in, NULL, "resources[0]", &url, &bytes, &len)) {
		fprintf(stderr, "  encode: %s\n", ec.err);
		return NULL;
	}
	json_t *out = pb_any_to_json(&dc, url, bytes, len, "resources[0]");
	if (!out)
		fprintf(stderr, "  decode: %s\n", dc.err);
	free(url);
	free(bytes);
	return out;
}

static void check_round_trip(const char *text)
{
	json_t *in = yaml(text);
	CHECK(in != NULL);
	if (!in)
		return;
	json_t *out = round_trip(in);
	CHECK(out != NULL);
	if (out && !json_equal(in, out)) {
		char *a = json_dumps(in, JSON_SORT_KEYS), *b = json_dumps(out, JSON_SORT_KEYS);
		CHECK_STR(b, a);
		free(a);
		free(b);
	}
	json_decref(in);
	json_decref(out);
}

TEST(pb_encode_cluster_eds)
{
	check_round_trip(
		"'@type': type.googleapis.com/envoy.config.cluster.v3.Cluster\n"
		"name: backend\n"
		"type: EDS\n"
		"connect_timeout: 1.500s\n"
		"lb_policy: LEAST_REQUEST\n"
		"per_connection_buffer_limit_bytes: 32768\n"
		"eds_cluster_config:\n"
		"  service_name: backend-svc\n"
		"  eds_config: {ads: {}, resource_api_version: V3}\n"
		"circuit_breakers:\n"
		"  thresholds: [{priority: HIGH, max_connections: 10, max_retries: 3}]\n"
		"outlier_detection: {consecutive_5xx: 5, base_ejection_time: 30s}\n"
		"typed_extension_protocol_options:\n"
		"  envoy.extensions.upstreams.http.v3.HttpProtocolOptions:\n"
		"    '@type': type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions\n"
		"    explicit_http_config: {http2_protocol_options: {}}\n");
}

TEST(pb_encode_listener_hcm_rds)
{
	check_round_trip(
		"'@type': type.googleapis.com/envoy.config.listener.v3.Listener\n"
		"name: ingress\n"
		"address: {socket_address: {address: 0.0.0.0, port_value: 8080}}\n"
		"filter_chains:\n"
		"- filters:\n"
		"  - name: envoy.filters.network.http_connection_manager\n"
		"    typed_config:\n"
		"      '@type': type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager\n"
		"      stat_prefix: ingress\n"
		"      rds: {route_config_name: local, config_source: {ads: {}, resource_api_version: V3}}\n"
		"      http_filters:\n"
		"      - name: envoy.filters.http.fault\n"
		"        typed_config:\n"
		"          '@type': type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault\n"
		"          abort: {http_status: 503, percentage: {numerator: 10, denominator: TEN_THOUSAND}}\n"
		"      - name: envoy.filters.http.router\n"
		"        typed_config: {'@type': type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}\n");
}

TEST(pb_encode_route_config)
{
	check_round_trip(
		"'@type': type.googleapis.com/envoy.config.route.v3.RouteConfiguration\n"
		"name: local\n"
		"virtual_hosts:\n"
		"- name: all\n"
		"  domains: ['*']\n"
		"  routes:\n"
		"  - match: {prefix: /api, headers: [{name: x-env, string_match: {exact: canary}}]}\n"
		"    route:\n"
		"      weighted_clusters:\n"
		"        clusters: [{name: a, weight: 90}, {name: b, weight: 10}]\n"
		"      timeout: 2s\n"
		"      retry_policy: {retry_on: 5xx, num_retries: 2, per_try_timeout: 0.250s}\n"
		"  - match: {safe_regex: {regex: '^/v[0-9]+/'}}\n"
		"    direct_response: {status: 404, body: {inline_string: nope}}\n"
		"    metadata: {filter_metadata: {x: {n: 1.5, s: str, l: [true, null], o: {k: v}}}}\n");
}

TEST(pb_encode_cla_and_secret)
{
	check_round_trip(
		"'@type': type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment\n"
		"cluster_name: backend-svc\n"
		"endpoints:\n"
		"- locality: {zone: z1}\n"
		"  load_balancing_weight: 3\n"
		"  lb_endpoints:\n"
		"  - endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: 9001}}}\n"
		"    health_status: HEALTHY\n"
		"  - endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: 9002}}}\n"
		"    load_balancing_weight: 2\n");
	check_round_trip(
		"'@type': type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret\n"
		"name: cert\n"
		"tls_certificate:\n"
		"  certificate_chain: {inline_bytes: LS0tLS1CRUdJTg==}\n"
		"  private_key: {inline_string: key}\n");
}

TEST(pb_encode_well_known_any_payloads)
{
	/* Anys of well-known types carry their JSON form under "value". */
	check_round_trip("'@type': type.googleapis.com/google.protobuf.Duration\nvalue: 2.500s\n");
	check_round_trip("'@type': type.googleapis.com/google.protobuf.UInt32Value\nvalue: 7\n");
	check_round_trip("'@type': type.googleapis.com/google.protobuf.Struct\nvalue: {a: [1.5, x]}\n");
	check_round_trip("'@type': type.googleapis.com/google.protobuf.Empty\nvalue: {}\n");
}

TEST(pb_encode_scalars_and_camel_case)
{
	json_t *in = json_pack("{s:s, s:s, s:s, s:s, s:i}", "@type",
			       "type.googleapis.com/envoy.config.cluster.v3.Cluster", "name", "c",
			       "connectTimeout", "0.000000001s", "type", "STATIC",
			       "perConnectionBufferLimitBytes", 7);
	json_t *out = round_trip(in);
	CHECK(out != NULL);
	if (out) {
		CHECK_STR(json_string_value(json_object_get(out, "connect_timeout")), "0.000000001s");
		CHECK_INT(json_integer_value(json_object_get(out, "per_connection_buffer_limit_bytes")), 7);
	}
	json_decref(in);
	json_decref(out);

	/* int64 as a string, and the bytes equal protoc-c's for the same message. */
	struct pb_encode_ctx c;
	uint8_t *b = NULL;
	size_t n = 0;
	json_t *d = json_pack("{s:{s:s, s:i}}", "x", "seconds", "-5", "nanos", -5);
	CHECK_INT(pb_encode_json(&c, &google__protobuf__duration__descriptor, json_object_get(d, "x"),
				 "", &b, &n), -1);   /* Duration is a string in JSON */
	CHECK_CONTAINS(c.err, "duration");
	json_decref(d);

	json_t *cl = json_pack("{s:s, s:s}", "name", "x", "connect_timeout", "-1.5s");
	CHECK_INT(pb_encode_json(&c, &envoy__config__cluster__v3__cluster__descriptor, cl, "", &b, &n), 0);
	Envoy__Config__Cluster__V3__Cluster *m =
		envoy__config__cluster__v3__cluster__unpack(NULL, n, b);
	CHECK(m != NULL);
	if (m) {
		CHECK_STR(m->name, "x");
		CHECK(m->connect_timeout && m->connect_timeout->seconds == -1 &&
		      m->connect_timeout->nanos == -500000000);
		envoy__config__cluster__v3__cluster__free_unpacked(m, NULL);
	}
	free(b);
	json_decref(cl);
}

TEST(pb_encode_errors_name_the_path_and_position)
{
	const char *text =
		"'@type': type.googleapis.com/envoy.config.cluster.v3.Cluster\n"
		"name: backend\n"
		"load_assignment:\n"
		"  cluster_name: backend\n"
		"  endpoints:\n"
		"  - lb_endpoints:\n"
		"    - endpoint: {address: {socket_address: {address: x, port_valu: 1}}}\n";
	struct cfg_src *src = NULL;
	char err[256];
	json_t *in = yaml_load_buffer("t.yaml", text, strlen(text), &src, err, sizeof(err));
	struct pb_encode_ctx c;
	char *url = NULL;
	uint8_t *b = NULL;
	size_t n;
	CHECK(in != NULL);
	CHECK_INT(pb_encode_any_payload(&c, in, NULL, "clusters[0]", &url, &b, &n), -1);
	CHECK_CONTAINS(c.err, "clusters[0].load_assignment.endpoints[0].lb_endpoints[0].endpoint."
			      "address.socket_address.port_valu: unknown field 'port_valu'");
	int line = 0, col = 0;
	CHECK(c.err_obj != NULL);
	CHECK_INT(cfg_src_key_pos(src, c.err_obj, c.err_key, &line, &col), 0);
	CHECK_INT(line, 7);
	json_decref(in);
	cfg_src_free(src);

	/* Wrong types, enum names, oneof conflicts, unknown @type. */
	static const struct {
		const char *yaml, *want;
	} bad[] = {
		{ "'@type': type.googleapis.com/envoy.config.cluster.v3.Cluster\ntype: NOPE\n",
		  "type: unknown value 'NOPE'" },
		{ "'@type': type.googleapis.com/envoy.config.cluster.v3.Cluster\nname: [1]\n",
		  "name: expected a string" },
		{ "'@type': type.googleapis.com/envoy.config.route.v3.Route\nmatch: {prefix: /}\nroute: {cluster: a}\ndirect_response: {status: 200}\n",
		  "are members of the same oneof" },
		{ "'@type': type.googleapis.com/envoy.config.cluster.v3.Nope\n", "unknown or unsupported type" },
		{ "name: x\n", "needs \"@type\"" },
		{ "'@type': type.googleapis.com/envoy.config.cluster.v3.Cluster\nper_connection_buffer_limit_bytes: -1\n",
		  "out of range" },
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		json_t *j = yaml(bad[i].yaml);
		CHECK_INT(pb_encode_any_payload(&c, j, NULL, "r", &url, &b, &n), -1);
		CHECK_CONTAINS(c.err, bad[i].want);
		json_decref(j);
	}
}
