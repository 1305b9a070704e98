/* pb_fast_test.c - the protobuf fast path for common Cluster and
 * ClusterLoadAssignment shapes (xds/pb_fast.c) builds exactly what the
 * general path (pb_json + cluster_parse / cluster_eds_update) builds, and
 * declines every shape it does not fully understand (the general path then
 * accepts it or names the error). */
#include "test.h"
#include <stdlib.h>
#include "proxy/common.h"
#include "proxy/server.h"
#include "proxy/snapshot.h"
#include "proxy/upstream/cluster.h"
#include "stats/stats.h"
#include "xds/pb_encode.h"
#include "xds/pb_fast.h"
#include "xds/pb_json.h"
#include "bootstrap_helper.h"

#define CDS "type.googleapis.com/envoy.config.cluster.v3.Cluster"
#define EDS "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"

/* JSON text -> protobuf bytes of type_url. */
static uint8_t *encode(const char *type_url, const char *text, size_t *len)
{
	struct pb_encode_ctx c;
	json_t *j = test_json(text);
	uint8_t *out = NULL;

	memset(&c, 0, sizeof(c));
	if (!j || pb_encode_json(&c, pb_find_descriptor(type_url), j, "", &out, len)) {
		fprintf(stderr, "encode: %s: %s\n", c.err, text);
		out = NULL;
	}
	json_decref(j);
	return out;
}

/* The general path: bytes -> proto3 JSON -> cluster_parse (NULL if rejected). */
static struct cluster *slow_cluster(const uint8_t *p, size_t n, struct build_ctx *b)
{
	struct pb_json_ctx pj = { 0 };
	struct cfg_ctx c;
	json_t *j = pb_any_to_json(&pj, CDS, p, n, "");
	struct cluster *cl;

	if (!j)
		return NULL;
	json_object_del(j, "@type");
	cfg_init(&c, NULL, NULL);
	c.flags |= CFG_F_SNAKE_KEYS;
	cl = cluster_parse(&c, j, b);
	json_decref(j);
	return cl;
}

static void same_cluster(const struct cluster *f, const struct cluster *s)
{
	CHECK_STR(f->name, s->name);
	CHECK_INT(f->type, s->type);
	CHECK_INT(f->lb, s->lb);
	CHECK_INT(f->proto, s->proto);
	CHECK_INT(f->connect_timeout_ms, s->connect_timeout_ms);
	CHECK_INT(f->idle_timeout_ms, s->idle_timeout_ms);
	CHECK_INT(f->buffer_limit, s->buffer_limit);
	CHECK_INT(f->max_requests_per_connection, s->max_requests_per_connection);
	CHECK_INT(f->panic_threshold, s->panic_threshold);
	CHECK_STR(f->eds_service_name, s->eds_service_name);
	CHECK((f->eds_service_name == f->name) == (s->eds_service_name == s->name));
	CHECK_INT(f->eds_fetch_timeout_ms, s->eds_fetch_timeout_ms);
	CHECK(!memcmp(f->cb, s->cb, sizeof(f->cb)));
	CHECK(f->ext == &cluster_ext_default && s->ext == &cluster_ext_default);
	CHECK(f->tls == NULL && s->tls == NULL && f->odst == NULL && s->odst == NULL);
	CHECK_INT(f->nworkers, s->nworkers);
	CHECK(f->stats && s->stats && f->stats->ndesc == s->stats->ndesc);
	CHECK_STR(f->stats->name, s->stats->name);
}

TEST(pb_fast_cluster_matches_cluster_parse)
{
	static const char *const ok[] = {
		"{\"name\":\"a\",\"type\":\"EDS\",\"eds_cluster_config\":{\"eds_config\":{\"ads\":{}}}}",
		"{\"name\":\"outbound|80||b.ns.svc\",\"type\":\"EDS\",\"connect_timeout\":\"1.5s\","
		"\"lb_policy\":\"LEAST_REQUEST\",\"eds_cluster_config\":{\"service_name\":\"svc\","
		"\"eds_config\":{\"ads\":{},\"resource_api_version\":\"V3\","
		"\"initial_fetch_timeout\":\"0.000500s\"}}}",
		"{\"name\":\"c\",\"type\":\"EDS\",\"lb_policy\":\"RANDOM\",\"connect_timeout\":\"0s\","
		"\"eds_cluster_config\":{\"service_name\":\"c\",\"eds_config\":{\"ads\":{},"
		"\"initial_fetch_timeout\":\"30s\"}}}",
		"{\"name\":\"d\",\"type\":\"EDS\",\"connect_timeout\":\"0.25s\",\"eds_cluster_config\":"
		"{\"eds_config\":{\"ads\":{},\"initial_fetch_timeout\":\"0s\"}}}",
	};
	/* valid, or not, but not the fast path's shape */
	static const char *const other[] = {
		"{\"name\":\"e\",\"type\":\"EDS\",\"lb_policy\":\"RING_HASH\",\"eds_cluster_config\":"
		"{\"eds_config\":{\"ads\":{}}}}",
		"{\"name\":\"f\",\"type\":\"EDS\",\"eds_cluster_config\":{\"eds_config\":{\"ads\":{}}},"
		"\"circuit_breakers\":{\"thresholds\":[{\"max_requests\":5}]}}",
		"{\"name\":\"g\",\"type\":\"STATIC\",\"load_assignment\":{\"cluster_name\":\"g\"}}",
		"{\"name\":\"h\",\"eds_cluster_config\":{\"eds_config\":{\"ads\":{}}}}",   /* STATIC */
		"{\"name\":\"i\",\"type\":\"EDS\",\"eds_cluster_config\":{\"eds_config\":{\"ads\":{},"
		"\"resource_api_version\":\"V2\"}}}",
		"{\"name\":\"j\",\"type\":\"EDS\",\"eds_cluster_config\":{\"eds_config\":"
		"{\"api_config_source\":{\"api_type\":\"GRPC\"}}}}",
		"{\"name\":\"k\",\"type\":\"EDS\",\"eds_cluster_config\":{\"eds_config\":{\"ads\":{}}},"
		"\"per_connection_buffer_limit_bytes\":1000}",
		"{\"name\":\"l\",\"type\":\"EDS\"}",
		"{\"name\":\"m\",\"type\":\"EDS\",\"eds_cluster_config\":{\"eds_config\":{\"ads\":{}}},"
		"\"connect_timeout\":\"-1s\"}",
	};
	struct stats_store *st = stats_store_new(3);
	struct build_ctx b = { .stats = st, .nworkers = 2 };
	bool was = g_server.xds.enabled;
	char *was_cluster = g_server.xds.cluster;

	g_server.xds.enabled = true;   /* an ads_config: ads {} sources are valid */
	g_server.xds.cluster = (char *)"xds";
	for (size_t i = 0; i < ARRAY_SIZE(ok); i++) {
		size_t n = 0;
		uint8_t *p = encode(CDS, ok[i], &n);
		struct cluster *f = NULL, *s;
		CHECK(p != NULL);
		if (!p)
			continue;
		CHECK(pb_fast_cluster(p, n, &b, &f));
		s = slow_cluster(p, n, &b);
		CHECK(f && s);
		if (f && s)
			same_cluster(f, s);
		cluster_unref(f);
		cluster_unref(s);
		free(p);
	}
	for (size_t i = 0; i < ARRAY_SIZE(other); i++) {
		size_t n = 0;
		uint8_t *p = encode(CDS, other[i], &n);
		struct cluster *f = NULL;
		CHECK(p != NULL);
		if (!p)
			continue;
		CHECK(!pb_fast_cluster(p, n, &b, &f));
		CHECK(f == NULL);
		free(p);
	}
	{
		/* an unknown field (a newer control plane): the general path
		 * reports or tolerates it */
		size_t n = 0;
		uint8_t *p = encode(CDS, ok[0], &n), *q = xmalloc(n + 3);
		struct cluster *f = NULL;
		memcpy(q, p, n);
		q[n] = 0xb8;       /* key of field 999, varint: (999 << 3) | 0 = 0x1f38 */
		q[n + 1] = 0x3e;
		q[n + 2] = 1;      /* value 1 */
		CHECK(!pb_fast_cluster(q, n + 3, &b, &f));
		CHECK(!pb_fast_cluster(p, n - 1, &b, &f));    /* truncated */
		free(p);
		free(q);
	}
	g_server.xds.enabled = was;
	g_server.xds.cluster = was_cluster;
	stats_store_free(st);
}

/* The endpoints the general path leaves in a fresh (not started) EDS
 * cluster, compared with the fast path's. */
TEST(pb_fast_cla_matches_cluster_eds_update)
{
	static const char *const ok[] = {
		"{\"cluster_name\":\"a\",\"endpoints\":[{\"lb_endpoints\":[{\"endpoint\":{\"address\":"
		"{\"socket_address\":{\"address\":\"10.0.0.1\",\"port_value\":8080}}}}]}]}",
		"{\"cluster_name\":\"b\",\"endpoints\":[{\"locality\":{\"region\":\"r\",\"zone\":\"z\"},"
		"\"lb_endpoints\":[{\"endpoint\":{\"address\":{\"socket_address\":{\"address\":\"::1\","
		"\"port_value\":9}}},\"load_balancing_weight\":7,\"health_status\":\"DEGRADED\"},"
		"{\"endpoint\":{\"address\":{\"socket_address\":{\"address\":\"10.0.0.2\"}}},"
		"\"health_status\":\"DRAINING\"}]},{\"lb_endpoints\":[{\"endpoint\":{\"address\":"
		"{\"socket_address\":{\"address\":\"10.0.0.3\",\"port_value\":65535,"
		"\"protocol\":\"TCP\",\"ipv4_compat\":true}}},\"health_status\":\"HEALTHY\"}]},{}]}",
		"{\"cluster_name\":\"c\"}",
	};
	static const char *const other[] = {
		"{\"cluster_name\":\"d\",\"endpoints\":[{\"lb_endpoints\":[{\"endpoint\":{\"address\":"
		"{\"socket_address\":{\"address\":\"10.0.0.1\"}}},\"metadata\":{\"filter_metadata\":"
		"{\"istio\":{\"k\":\"v\"}}}}]}]}",
		"{\"cluster_name\":\"e\",\"endpoints\":[{\"lb_endpoints\":[{\"endpoint\":{\"address\":"
		"{\"socket_address\":{\"address\":\"web.example\",\"port_value\":80}}}}]}]}",
		"{\"cluster_name\":\"f\",\"endpoints\":[{\"lb_endpoints\":[{\"endpoint\":{\"address\":"
		"{\"socket_address\":{\"address\":\"10.0.0.1\"}}},\"load_balancing_weight\":0}]}]}",
		"{\"cluster_name\":\"g\",\"endpoints\":[{\"priority\":1,\"lb_endpoints\":[]}]}",
		"{\"cluster_name\":\"h\",\"endpoints\":[{\"lb_endpoints\":[{\"endpoint\":{\"address\":"
		"{\"socket_address\":{\"address\":\"10.0.0.1\"}},\"hostname\":\"x\"}}]}]}",
		"{\"cluster_name\":\"i\",\"policy\":{\"overprovisioning_factor\":140}}",
		"{\"cluster_name\":\"j\",\"endpoints\":[{\"lb_endpoints\":[{\"endpoint\":{\"address\":"
		"{\"socket_address\":{\"address\":\"10.0.0.1\",\"protocol\":\"UDP\"}}}}]}]}",
		"{\"endpoints\":[]}",
	};
	struct stats_store *st = stats_store_new(3);
	struct build_ctx b = { .stats = st, .nworkers = 2 };

	for (size_t i = 0; i < ARRAY_SIZE(ok); i++) {
		size_t n = 0, ne = 0;
		uint8_t *p = encode(EDS, ok[i], &n);
		struct endpoint_cfg *eps = NULL;
		struct cluster *cl = cluster_new_eds(&b, "x", LB_ROUND_ROBIN, 1000, NULL, 15000);
		struct pb_json_ctx pj = { 0 };
		struct cfg_ctx c;
		json_t *j;
		CHECK(p != NULL);
		if (!p) {
			cluster_unref(cl);
			continue;
		}
		CHECK(pb_fast_cla(p, n, &eps, &ne));
		j = pb_any_to_json(&pj, EDS, p, n, "");
		CHECK(j != NULL);
		json_object_del(j, "@type");
		cfg_init(&c, NULL, NULL);
		c.flags |= CFG_F_SNAKE_KEYS;
		CHECK_INT(cluster_eds_update(cl, &c, j), RM_OK);   /* not started: kept */
		CHECK_INT(cl->nendpoints, ne);
		for (size_t k = 0; k < ne && k < cl->nendpoints; k++) {
			CHECK_STR(eps[k].address, cl->endpoints[k].address);
			CHECK_INT(eps[k].port, cl->endpoints[k].port);
			CHECK_INT(eps[k].weight, cl->endpoints[k].weight);
			CHECK_INT(eps[k].eds_flags, cl->endpoints[k].eds_flags);
		}
		for (size_t k = 0; k < ne; k++)
			free(eps[k].address);
		free(eps);
		json_decref(j);
		cluster_unref(cl);
		free(p);
	}
	for (size_t i = 0; i < ARRAY_SIZE(other); i++) {
		size_t n = 0, ne = 0;
		uint8_t *p = encode(EDS, other[i], &n);
		struct endpoint_cfg *eps = NULL;
		CHECK(p != NULL);
		if (!p)
			continue;
		CHECK(!pb_fast_cla(p, n, &eps, &ne));
		CHECK(eps == NULL);
		free(p);
	}
	stats_store_free(st);
}
