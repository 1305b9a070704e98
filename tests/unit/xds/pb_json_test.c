/* pb_json_test.c - protobuf -> proto3 JSON: messages encoded by protoc-c and by
 * `protoc --encode` (text format; the official Envoy protos when
 * tests/xds/node_modules is installed, else Remora's subset), converted and
 * compiled by the same config compiler as YAML. */
#include "test.h"
#include <stdlib.h>
#include <unistd.h>
#include "xds/pb_json.h"
#include "proxy/server.h"
#include "proxy/upstream/cluster.h"
#include "envoy/config/cluster/v3/subset.pb-c.h"
#include "envoy/service/discovery/v3/subset.pb-c.h"
#include "google/protobuf/any.pb-c.h"
#include "google/protobuf/duration.pb-c.h"
#include "google/protobuf/wrappers.pb-c.h"

static struct server srv;

/* Compile a cluster JSON through the bootstrap compiler.  err: "" if OK. */
static bool compile_cluster(json_t *cl, char *err, size_t errlen)
{
	struct cfg_ctx c;
	json_t *root = json_pack("{s:{s:[O]}}", "static_resources", "clusters", cl);
	memset(&srv, 0, sizeof(srv));
	srv.nworkers = 1;
	srv.stats = stats_store_new(2);
	cfg_init(&c, NULL, NULL);
	struct snapshot *s = config_build_bootstrap(&c, root, &srv);
	snprintf(err, errlen, "%s", c.err);
	json_decref(root);
	snapshot_unref(s);
	stats_store_free(srv.stats);
	return s != NULL;
}

static size_t pack(const ProtobufCMessage *m, uint8_t **out)
{
	size_t n = protobuf_c_message_get_packed_size(m);
	*out = malloc(n ? n : 1);
	protobuf_c_message_pack(m, *out);
	return n;
}

TEST(pb_json_cluster_from_protoc_c)
{
	Envoy__Config__Cluster__V3__Cluster cl = ENVOY__CONFIG__CLUSTER__V3__CLUSTER__INIT;
	Envoy__Config__Cluster__V3__Cluster__EdsClusterConfig eds =
		ENVOY__CONFIG__CLUSTER__V3__CLUSTER__EDS_CLUSTER_CONFIG__INIT;
	Envoy__Config__Core__V3__ConfigSource cs = ENVOY__CONFIG__CORE__V3__CONFIG_SOURCE__INIT;
	Envoy__Config__Core__V3__AggregatedConfigSource ads = ENVOY__CONFIG__CORE__V3__AGGREGATED_CONFIG_SOURCE__INIT;
	Google__Protobuf__Duration d = GOOGLE__PROTOBUF__DURATION__INIT;
	Google__Protobuf__UInt32Value lim = GOOGLE__PROTOBUF__UINT32_VALUE__INIT;
	struct pb_json_ctx ctx = { 0 };
	uint8_t *buf;
	char err[1024];

	cl.name = "backend";
	cl.cluster_discovery_type_case = ENVOY__CONFIG__CLUSTER__V3__CLUSTER__CLUSTER_DISCOVERY_TYPE_TYPE;
	cl.type = ENVOY__CONFIG__CLUSTER__V3__CLUSTER__DISCOVERY_TYPE__EDS;
	cl.lb_policy = ENVOY__CONFIG__CLUSTER__V3__CLUSTER__LB_POLICY__LEAST_REQUEST;
	d.seconds = 1;
	d.nanos = 500000000;
	cl.connect_timeout = &d;
	lim.value = 32768;
	cl.per_connection_buffer_limit_bytes = &lim;
	cs.config_source_specifier_case = ENVOY__CONFIG__CORE__V3__CONFIG_SOURCE__CONFIG_SOURCE_SPECIFIER_ADS;
	cs.ads = &ads;
	eds.eds_config = &cs;
	eds.service_name = "backend-svc";
	cl.eds_cluster_config = &eds;

	size_t n = pack(&cl.base, &buf);
	json_t *j = pb_any_to_json(&ctx, "type.googleapis.com/envoy.config.cluster.v3.Cluster", buf, n,
				   "resources[0]");
	free(buf);
	CHECK(j != NULL);
	if (!j) {
		fprintf(stderr, "  %s\n", ctx.err);
		return;
	}
	CHECK_STR(json_string_value(json_object_get(j, "@type")),
		  "type.googleapis.com/envoy.config.cluster.v3.Cluster");
	CHECK_STR(json_string_value(json_object_get(j, "type")), "EDS");
	CHECK_STR(json_string_value(json_object_get(j, "lb_policy")), "LEAST_REQUEST");
	CHECK_STR(json_string_value(json_object_get(j, "connect_timeout")), "1.500s");
	CHECK_INT(json_integer_value(json_object_get(j, "per_connection_buffer_limit_bytes")), 32768);
	json_t *e = json_object_get(j, "eds_cluster_config");
	CHECK(json_is_object(json_object_get(json_object_get(e, "eds_config"), "ads")));
	CHECK_STR(json_string_value(json_object_get(e, "service_name")), "backend-svc");
	json_object_del(j, "@type");
	CHECK(compile_cluster(j, err, sizeof(err)));
	if (err[0])
		fprintf(stderr, "  %s\n", err);
	json_decref(j);
}

TEST(pb_json_unknown_field_names_path)
{
	/* A Cluster carrying field 40 (filters: upstream network filters, not in the subset). */
	static const uint8_t wire[] = { 0x0a, 0x01, 'c', 0xc2, 0x02, 0x02, 0x0a, 0x00 };
	struct pb_json_ctx ctx = { 0 };
	json_t *j = pb_any_to_json(&ctx, "type.googleapis.com/envoy.config.cluster.v3.Cluster", wire,
				   sizeof(wire), "resources[3]");
	CHECK(j == NULL);
	CHECK_CONTAINS(ctx.err, "resources[3]: field 'filters' (number 40) of "
			   "envoy.config.cluster.v3.Cluster is not supported yet");
	/* a number Envoy does not have either */
	static const uint8_t wire2[] = { 0x0a, 0x01, 'c', 0xb8, 0x3e, 0x01 };   /* field 999 varint */
	j = pb_any_to_json(&ctx, "type.googleapis.com/envoy.config.cluster.v3.Cluster", wire2,
			   sizeof(wire2), "r");
	CHECK(j == NULL);
	CHECK_CONTAINS(ctx.err, "r: unknown field number 999 in envoy.config.cluster.v3.Cluster");
	json_decref(j);

	struct pb_json_ctx lax = { .flags = PB_JSON_ALLOW_UNKNOWN };
	j = pb_any_to_json(&lax, "type.googleapis.com/envoy.config.cluster.v3.Cluster", wire,
			   sizeof(wire), "resources[3]");
	CHECK(j != NULL);
	CHECK_INT(lax.unknown_seen, 1);
	CHECK_STR(json_string_value(json_object_get(j, "name")), "c");
	json_decref(j);
}

TEST(pb_json_unknown_type_and_garbage)
{
	static const uint8_t junk[] = { 0xff, 0xff, 0xff };
	struct pb_json_ctx ctx = { 0 };
	CHECK(pb_any_to_json(&ctx, "type.googleapis.com/envoy.nope.v3.Thing", junk, 0, "r") == NULL);
	CHECK_CONTAINS(ctx.err, "unknown or unsupported type");
	CHECK(pb_any_to_json(&ctx, "type.googleapis.com/envoy.config.cluster.v3.Cluster", junk,
			     sizeof(junk), "r") == NULL);
	CHECK_CONTAINS(ctx.err, "r: malformed envoy.config.cluster.v3.Cluster payload");
	CHECK(pb_find_descriptor("google.protobuf.Duration") != NULL);
}

/* Text format -> binary with protoc; NULL if protoc or the protos are missing. */
static uint8_t *protoc_encode(const char *type, const char *text, size_t *len)
{
	char cmd[1024], tin[] = "/tmp/pbjsonXXXXXX";
	int fd = mkstemp(tin);
	FILE *f = fdopen(fd, "w");
	fputs(text, f);
	fclose(f);
	if (system("test -d tests/xds/node_modules/@grpc/grpc-js-xds/deps") == 0)
		snprintf(cmd, sizeof(cmd), "sh tests/xds/protos.sh encode %s < %s", type, tin);
	else
		snprintf(cmd, sizeof(cmd),
			 "protoc -Ixds/proto -I/usr/include --encode=%s $(cd xds/proto && find . -name '*.proto' | sed 's|^./||') < %s",
			 type, tin);
	FILE *p = popen(cmd, "r");
	uint8_t *buf = malloc(65536);
	*len = p ? fread(buf, 1, 65536, p) : 0;
	int rc = p ? pclose(p) : -1;
	unlink(tin);
	if (rc != 0 || !*len) {
		free(buf);
		return NULL;
	}
	return buf;
}

TEST(pb_json_discovery_response_from_protoc_text)
{
	const char *text =
		"version_info: \"7\"\n"
		"type_url: \"type.googleapis.com/envoy.config.listener.v3.Listener\"\n"
		"nonce: \"n1\"\n"
		"resources {\n"
		"  [type.googleapis.com/envoy.config.listener.v3.Listener] {\n"
		"    name: \"l1\"\n"
		"    address { socket_address { address: \"127.0.0.1\" port_value: 10000 } }\n"
		"    filter_chains { filters {\n"
		"      name: \"envoy.filters.network.http_connection_manager\"\n"
		"      typed_config {\n"
		"        [type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager] {\n"
		"          stat_prefix: \"in\"\n"
		"          rds { route_config_name: \"r1\" config_source { ads {} } }\n"
		"          http_filters { name: \"envoy.filters.http.router\"\n"
		"            typed_config { [type.googleapis.com/envoy.extensions.filters.http.router.v3.Router] {} } }\n"
		"          common_http_protocol_options { idle_timeout { seconds: 30 } max_headers_count { value: 50 } }\n"
		"        }\n"
		"      }\n"
		"    } }\n"
		"  }\n"
		"}\n";
	size_t len;
	uint8_t *buf = protoc_encode("envoy.service.discovery.v3.DiscoveryResponse", text, &len);
	CHECK(buf != NULL);
	if (!buf)
		return;
	Envoy__Service__Discovery__V3__DiscoveryResponse *r =
		envoy__service__discovery__v3__discovery_response__unpack(NULL, len, buf);
	free(buf);
	CHECK(r != NULL);
	if (!r)
		return;
	CHECK_STR(r->version_info, "7");
	CHECK_INT(r->n_resources, 1);
	struct pb_json_ctx ctx = { 0 };
	json_t *j = pb_any_to_json(&ctx, r->resources[0]->type_url, r->resources[0]->value.data,
				   r->resources[0]->value.len, "resources[0]");
	CHECK(j != NULL);
	if (j) {
		char *s = json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER);
		CHECK_CONTAINS(s, "\"name\":\"l1\"");
		CHECK_CONTAINS(s, "\"port_value\":10000");
		CHECK_CONTAINS(s, "\"@type\":\"type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager\"");
		CHECK_CONTAINS(s, "\"rds\":{\"config_source\":{\"ads\":{}},\"route_config_name\":\"r1\"}");
		CHECK_CONTAINS(s, "\"idle_timeout\":\"30s\"");
		CHECK_CONTAINS(s, "\"max_headers_count\":50");
		CHECK_CONTAINS(s, "{\"@type\":\"type.googleapis.com/envoy.extensions.filters.http.router.v3.Router\"}");
		free(s);
	} else {
		fprintf(stderr, "  %s\n", ctx.err);
	}
	json_decref(j);
	envoy__service__discovery__v3__discovery_response__free_unpacked(r, NULL);
}

TEST(pb_json_struct_map_and_wkt_any)
{
	const char *text =
		"cluster_name: \"c\"\n"
		"endpoints { lb_endpoints {\n"
		"  endpoint { address { socket_address { address: \"10.0.0.1\" port_value: 80 } } }\n"
		"  health_status: DEGRADED\n"
		"  load_balancing_weight { value: 3 }\n"
		"  metadata { filter_metadata { key: \"envoy.lb\" value { fields { key: \"canary\" value { bool_value: true } }\n"
		"     fields { key: \"n\" value { number_value: 1.5 } } fields { key: \"l\" value { list_value { values { string_value: \"x\" } values { null_value: NULL_VALUE } } } } } } }\n"
		"} }\n"
		"policy { overprovisioning_factor { value: 140 } }\n";
	size_t len;
	uint8_t *buf = protoc_encode("envoy.config.endpoint.v3.ClusterLoadAssignment", text, &len);
	CHECK(buf != NULL);
	if (!buf)
		return;
	struct pb_json_ctx ctx = { 0 };
	json_t *j = pb_any_to_json(&ctx, "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment",
				   buf, len, "");
	free(buf);
	CHECK(j != NULL);
	if (j) {
		char *s = json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER);
		CHECK_CONTAINS(s, "\"health_status\":\"DEGRADED\"");
		CHECK_CONTAINS(s, "\"load_balancing_weight\":3");
		CHECK_CONTAINS(s, "\"filter_metadata\":{\"envoy.lb\":{");
		CHECK_CONTAINS(s, "\"canary\":true");
		CHECK_CONTAINS(s, "\"n\":1.5");
		CHECK_CONTAINS(s, "\"l\":[\"x\",null]");
		CHECK_CONTAINS(s, "\"overprovisioning_factor\":140");
		free(s);
	}
	json_decref(j);

	/* An Any holding a WKT: {"@type", "value"} */
	Google__Protobuf__Duration d = GOOGLE__PROTOBUF__DURATION__INIT;
	d.seconds = 0;
	d.nanos = 250000000;
	uint8_t *db;
	size_t dn = pack(&d.base, &db);
	j = pb_any_to_json(&ctx, "type.googleapis.com/google.protobuf.Duration", db, dn, "");
	free(db);
	CHECK(j && !strcmp(json_string_value(json_object_get(j, "value")), "0.250s"));
	json_decref(j);
}

/* REST: canonical proto3 JSON keys (lowerCamelCase) -> the proto field names,
 * through Any payloads and maps; map keys, Struct contents and unknown keys
 * stay as they are. */
TEST(pb_json_snake_keys_rest)
{
	json_error_t je;
	json_t *j = json_loads(
		"{\"name\":\"l\",\"perConnectionBufferLimitBytes\":5,"
		"\"filterChains\":[{\"filters\":[{\"name\":\"hcm\",\"typedConfig\":{\"@type\":"
		"\"type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."
		"HttpConnectionManager\",\"statPrefix\":\"p\",\"rds\":{\"routeConfigName\":\"r\"}}}]}],"
		"\"metadata\":{\"filterMetadata\":{\"myKey\":{\"camelInside\":1}}},"
		"\"someUnknownField\":1}", 0, &je);
	CHECK(j != NULL);
	pb_json_snake_keys(j, "type.googleapis.com/envoy.config.listener.v3.Listener");
	CHECK(json_object_get(j, "per_connection_buffer_limit_bytes") != NULL);
	const json_t *f = json_array_get(json_object_get(json_array_get(json_object_get(j,
		"filter_chains"), 0), "filters"), 0);
	CHECK(f != NULL);
	const json_t *tc = json_object_get(f, "typed_config");
	CHECK(tc != NULL);
	CHECK_STR(json_string_value(json_object_get(tc, "stat_prefix")), "p");
	CHECK_STR(json_string_value(json_object_get(json_object_get(tc, "rds"), "route_config_name")), "r");
	/* Struct contents and map keys untouched; unknown keys left for the compiler */
	const json_t *fm = json_object_get(json_object_get(j, "metadata"), "filter_metadata");
	CHECK(fm != NULL);
	CHECK(json_object_get(json_object_get(fm, "myKey"), "camelInside") != NULL);
	CHECK(json_object_get(j, "someUnknownField") != NULL);
	json_decref(j);
}
