/* cluster_gauges_test.c - two versions of one cluster (the same name, so the
 * same cluster.<name>.* scopes, as after a CDS update while requests still
 * use the previous version): only the version that owns the gauges
 * (cluster_set_gauges_owner) writes membership_*, the circuit-breaker
 * gauges and outlier_detection.ejections_active; the other still counts. */
#include "test.h"

#include <jansson.h>
#include <stdlib.h>

#include "proxy/common.h"
#include "proxy/snapshot.h"
#include "proxy/worker.h"
#include "proxy/upstream/cluster.h"
#include "bootstrap_helper.h"

static struct event_base *base;

static uint64_t fixed_clock(void)
{
	return 1000000;
}

static void post_now(void (*fn)(void *arg), void *arg)
{
	fn(arg);
}

/* Version of cluster "g": n hosts, max_requests max_rq (remaining tracked),
 * one local-origin failure ejects. */
static struct cluster *version(size_t n, int max_rq, bool owner)
{
	char buf[4096];
	size_t off = 0;
	off += (size_t)snprintf(buf + off, sizeof(buf) - off,
				"{\"name\":\"g\",\"type\":\"STATIC\",\"outlier_detection\":"
				"{\"split_external_local_origin_errors\":true,"
				"\"consecutive_local_origin_failure\":1,\"max_ejection_percent\":100},"
				"\"circuit_breakers\":{\"thresholds\":[{\"max_requests\":%d,"
				"\"track_remaining\":true}]},"
				"\"load_assignment\":{\"endpoints\":[{\"lb_endpoints\":[", max_rq);
	for (size_t i = 0; i < n; i++)
		off += (size_t)snprintf(buf + off, sizeof(buf) - off,
					"%s{\"endpoint\":{\"address\":{\"socket_address\":"
					"{\"address\":\"10.0.1.%zu\",\"port_value\":80}}}}",
					i ? "," : "", i + 1);
	snprintf(buf + off, sizeof(buf) - off, "]}]}}");
	if (!base)
		base = event_base_new();
	outlier_clock = fixed_clock;
	outlier_post = post_now;
	struct cluster *cl = test_cluster_parse(buf, NULL, 0);
	if (!cl)
		return NULL;
	cl->gauges_off = !owner;   /* as xds/ads.c starts a version warming */
	test_cluster_start(cl, base);
	return cl;
}

#define G(cl, idx) stats_value((cl)->stats, (idx))
#define OD(cl, name) stats_value((cl)->ext->od_stats, OD_##name)
#define REMAINING_RQ CLUSTER_CB(CB_PRIO_DEFAULT, CB_remaining_rq)

TEST(cluster_gauges_written_by_the_version_in_force)
{
	struct cluster *v1 = version(2, 10, true);
	CHECK(v1);
	cluster_update_cb_gauges(v1);
	CHECK_INT(G(v1, membership_total), 2);
	CHECK_INT(G(v1, membership_healthy), 2);
	CHECK_INT(G(v1, REMAINING_RQ), 10);

	/* version 2 warms while version 1 is in force: it writes nothing */
	struct cluster *v2 = version(3, 50, false);
	CHECK(v2);
	CHECK(v2->stats == v1->stats);   /* one shared scope */
	cluster_update_cb_gauges(v2);
	CHECK_INT(G(v1, membership_total), 2);
	CHECK_INT(G(v1, REMAINING_RQ), 10);

	/* version 2 in force: its values at once */
	cluster_set_gauges_owner(v1, false);
	cluster_set_gauges_owner(v2, true);
	CHECK_INT(G(v2, membership_total), 3);
	CHECK_INT(G(v2, membership_healthy), 3);
	CHECK_INT(G(v2, REMAINING_RQ), 50);
	CHECK_INT(OD(v2, ejections_active), 0);

	/* the draining version ejects a host (republishing its host set) and
	 * refreshes its breakers: it counts, the gauges stay version 2's */
	int64_t ejections = OD(v1, ejections_total);
	cluster_outlier_report(v1, v1->hs->hosts[0], OUTLIER_LOCAL_CONNECT_FAILED, 0);
	CHECK(v1->hs->hosts[0]->health_flags & HOST_FAILED_OUTLIER);
	CHECK_INT(OD(v1, ejections_total), ejections + 1);
	CHECK_INT(OD(v2, ejections_active), 0);
	cluster_update_cb_gauges(v1);
	CHECK_INT(G(v2, membership_total), 3);
	CHECK_INT(G(v2, membership_healthy), 3);
	CHECK_INT(G(v2, REMAINING_RQ), 50);

	/* version 2's own ejection shows */
	cluster_outlier_report(v2, v2->hs->hosts[1], OUTLIER_LOCAL_CONNECT_FAILED, 0);
	CHECK_INT(OD(v2, ejections_active), 1);
	CHECK_INT(G(v2, membership_healthy), 2);
	cluster_unref(v1);
	cluster_unref(v2);
}
