/* cluster_json_test.c - a cluster keeps the resource it was compiled from
 * (src, set by its user: the bootstrap's or xDS's), which /config_dump
 * decodes back to the same JSON (the blob itself: xds/xres_test.c).  Also:
 * the cluster's one stats scope still carries every name, circuit breakers
 * included, with no worker storage before a worker uses it. */
#include "test.h"
#include <event2/buffer.h>

#include <jansson.h>
#include <string.h>
#include "xds/xres.h"

#include "proxy/common.h"
#include "proxy/snapshot.h"
#include "proxy/upstream/cluster.h"
#include "bootstrap_helper.h"

TEST(cluster_config_json_round_trips)
{
	json_t *j = test_json("{\"name\":\"web\",\"type\":\"STATIC\",\"connect_timeout\":\"0.25s\","
			      "\"load_assignment\":{\"cluster_name\":\"web\",\"endpoints\":[{\"lb_endpoints\":["
			      "{\"endpoint\":{\"address\":{\"socket_address\":"
			      "{\"address\":\"127.0.0.1\",\"port_value\":8080}}}}]}]}}");
	struct stats_store *st = stats_store_new(3);
	struct build_ctx b = { .stats = st, .nworkers = 2 };
	struct cfg_ctx c;
	struct cluster *cl;
	json_t *back;
	int n = 0, ncb = 0;

	CHECK(j != NULL);
	cfg_init(&c, NULL, NULL);
	cl = cluster_parse(&c, j, &b);
	CHECK(cl != NULL);
	if (!cl) {
		json_decref(j);
		stats_store_free(st);
		return;
	}
	back = cluster_config_json(cl);                  /* no src: an empty object */
	CHECK(json_is_object(back) && json_object_size(back) == 0);
	json_decref(back);
	cl->src = xblob_from_json(j);                    /* as config.c does */
	back = cluster_config_json(cl);
	CHECK(json_equal(back, j));
	json_decref(back);

	/* one scope for the cluster, circuit breakers included; no worker
	 * storage before a worker uses the cluster */
	stats_store_read_begin(st);
	for (struct stats_scope *s = stats_store_scopes(st); s; s = s->next) {
		if (!strncmp(s->name, "cluster.web", 11)) {
			n++;
			CHECK_STR(s->name, "cluster.web");
			CHECK_INT(s->nshards, 3);
			CHECK(s->shards[1] == NULL && s->shards[2] == NULL);
		}
	}
	stats_store_read_end(st);
	CHECK_INT(n, 1);
	{
		struct evbuffer *out = evbuffer_new();
		char err[64];
		const char *txt;

		CHECK_INT(stats_render_prometheus(st, out, "circuit_breakers", false, err,
						  sizeof(err)), RM_OK);
		evbuffer_add(out, "", 1);
		txt = (const char *)evbuffer_pullup(out, -1);
		for (const char *p = txt; (p = strstr(p, "envoy_cluster_circuit_breakers_")); p++)
			ncb++;
		CHECK_INT(ncb, 2 * 2 * CB_STATS_N);   /* TYPE line + sample, 2 priorities */
		CHECK_CONTAINS(txt, "envoy_cluster_circuit_breakers_high_rq_open"
			       "{envoy_cluster_name=\"web\"} 0\n");
		CHECK_CONTAINS(txt, "envoy_cluster_circuit_breakers_default_remaining_cx"
			       "{envoy_cluster_name=\"web\"} 0\n");
		evbuffer_free(out);
	}
	cluster_unref(cl);
	json_decref(j);
	stats_store_free(st);
}
