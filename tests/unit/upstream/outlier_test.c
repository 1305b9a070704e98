/* outlier_test.c - the detectors of proxy/upstream/outlier.c driven directly:
 * a STATIC cluster is parsed from JSON, results are reported as a filter
 * would, threshold crossings are handed to the "main thread" at once
 * (outlier_post) and ejection times run on a fake clock (outlier_clock).
 * Enforcement percentages are 0 or 100 only, so nothing here is random. */
#include "test.h"

#include <jansson.h>
#include <stdlib.h>

#include "proxy/common.h"
#include "proxy/snapshot.h"
#include "proxy/worker.h"
#include "proxy/upstream/cluster.h"
#include "bootstrap_helper.h"

static struct event_base *base;
static uint64_t fake_now = 1000000;

static uint64_t fake_clock(void)
{
	return fake_now;
}

static void post_now(void (*fn)(void *arg), void *arg)
{
	fn(arg);
}

/* A cluster of n hosts with outlier_detection = od (JSON object text);
 * NULL and the compiler's message in err if it does not compile. */
static struct cluster *make(size_t n, const char *od, char *err, size_t errlen)
{
	char buf[4096];
	size_t off = 0;
	off += (size_t)snprintf(buf + off, sizeof(buf) - off,
				"{\"name\":\"c\",\"type\":\"STATIC\",\"outlier_detection\":%s,"
				"\"load_assignment\":{\"endpoints\":[{\"lb_endpoints\":[", od);
	for (size_t i = 0; i < n; i++)
		off += (size_t)snprintf(buf + off, sizeof(buf) - off,
					"%s{\"endpoint\":{\"address\":{\"socket_address\":"
					"{\"address\":\"10.0.0.%zu\",\"port_value\":80}}}}",
					i ? "," : "", i + 1);
	snprintf(buf + off, sizeof(buf) - off, "]}]}}");
	if (!base)
		base = event_base_new();
	outlier_clock = fake_clock;
	outlier_post = post_now;
	struct cluster *cl = test_cluster_parse(buf, err, errlen);
	if (cl)
		test_cluster_start(cl, base);
	return cl;
}

static struct host *H(struct cluster *cl, size_t i)
{
	return cl->hs->hosts[i];
}

static bool ejected(struct cluster *cl, size_t i)
{
	return H(cl, i)->health_flags & HOST_FAILED_OUTLIER;
}

static void report(struct cluster *cl, size_t i, enum outlier_result r, int status, int times)
{
	for (int k = 0; k < times; k++)
		cluster_outlier_report(cl, H(cl, i), r, status);
}

#define OD(cl, name) stats_value((cl)->ext->od_stats, OD_##name)

TEST(outlier_split_off_maps_local_origin_to_5xx)
{
	struct cluster *cl = make(2, "{\"consecutive_5xx\":3,\"max_ejection_percent\":100}", NULL, 0);
	CHECK(cl && !cl->ext->od.split);
	/* connect failure, reset and timeout are 503, 503, 504: three 5xx */
	report(cl, 0, OUTLIER_LOCAL_CONNECT_FAILED, 0, 1);
	report(cl, 0, OUTLIER_LOCAL_RESET, 0, 1);
	CHECK(!ejected(cl, 0));
	report(cl, 0, OUTLIER_LOCAL_TIMEOUT, 0, 1);
	CHECK(ejected(cl, 0));
	CHECK_INT(OD(cl, ejections_enforced_consecutive_5xx), 1);
	CHECK_INT(OD(cl, ejections_detected_consecutive_local_origin_failure), 0);
	CHECK_INT(OD(cl, ejections_active), 1);
	/* they are failures of the external success-rate input too */
	CHECK_INT(host_stat(H(cl, 0), HOST_OD_EXT_ERR), 3);
	CHECK_INT(host_stat(H(cl, 0), HOST_OD_LO_ERR), 0);

	/* LOCAL_SUCCESS (connected, answered) is not a result by itself: the
	 * HTTP status that follows is; SUCCESS_FINAL (TCP) counts as a 200 */
	report(cl, 1, OUTLIER_LOCAL_CONNECT_FAILED, 0, 2);
	report(cl, 1, OUTLIER_LOCAL_SUCCESS, 0, 1);
	report(cl, 1, OUTLIER_LOCAL_CONNECT_FAILED, 0, 1);
	CHECK(ejected(cl, 1));
	cluster_unref(cl);

	cl = make(1, "{\"consecutive_5xx\":3}", NULL, 0);
	report(cl, 0, OUTLIER_LOCAL_CONNECT_FAILED, 0, 2);
	report(cl, 0, OUTLIER_LOCAL_SUCCESS_FINAL, 0, 1);
	report(cl, 0, OUTLIER_LOCAL_CONNECT_FAILED, 0, 2);
	report(cl, 0, OUTLIER_EXT_ORIGIN, 404, 1);
	report(cl, 0, OUTLIER_LOCAL_CONNECT_FAILED, 0, 2);
	CHECK(!ejected(cl, 0));
	CHECK_INT(host_stat(H(cl, 0), HOST_OD_EXT_OK), 2);
	cluster_unref(cl);
}

TEST(outlier_split_consecutive_local_origin_failure)
{
	char err[512];
	struct cluster *cl = make(3, "{\"split_external_local_origin_errors\":true,"
				  "\"consecutive_local_origin_failure\":3,\"consecutive_5xx\":4,"
				  "\"max_ejection_percent\":100}", err, sizeof(err));
	CHECK(cl);
	if (!cl) {
		fprintf(stderr, "%s\n", err);
		return;
	}
	CHECK(cl->ext->od.split && cl->ext->od.consecutive_lo == 3 && cl->ext->od.enforcing_lo == 100);
	/* host 0: a local success resets the run; failures of any local kind add up */
	report(cl, 0, OUTLIER_LOCAL_CONNECT_FAILED, 0, 2);
	report(cl, 0, OUTLIER_LOCAL_SUCCESS, 0, 1);
	report(cl, 0, OUTLIER_LOCAL_TIMEOUT, 0, 1);
	report(cl, 0, OUTLIER_LOCAL_RESET, 0, 1);
	CHECK(!ejected(cl, 0));
	/* an HTTP 5xx neither resets nor feeds the local-origin counter */
	report(cl, 0, OUTLIER_EXT_ORIGIN, 503, 1);
	CHECK(!ejected(cl, 0));
	report(cl, 0, OUTLIER_LOCAL_CONNECT_FAILED, 0, 1);
	CHECK(ejected(cl, 0));
	CHECK_INT(OD(cl, ejections_detected_consecutive_local_origin_failure), 1);
	CHECK_INT(OD(cl, ejections_enforced_consecutive_local_origin_failure), 1);
	CHECK_INT(OD(cl, ejections_enforced_consecutive_5xx), 0);
	CHECK_INT(OD(cl, ejections_enforced_total), 1);
	CHECK_INT(host_stat(H(cl, 0), HOST_OD_LO_ERR), 5);
	CHECK_INT(host_stat(H(cl, 0), HOST_OD_LO_OK), 1);
	CHECK_INT(host_stat(H(cl, 0), HOST_OD_EXT_ERR), 1);

	/* host 1 answers 500s: the local-origin detector sees successes only */
	for (int k = 0; k < 3; k++) {
		report(cl, 1, OUTLIER_LOCAL_SUCCESS, 0, 1);
		report(cl, 1, OUTLIER_EXT_ORIGIN, 500, 1);
	}
	CHECK(!ejected(cl, 1));
	CHECK_INT(H(cl, 1)->od->consecutive_lo, 0);
	CHECK_INT(H(cl, 1)->od->consecutive_5xx, 3);
	/* ... while the external detectors see the 5xx: the 4th ejects */
	report(cl, 1, OUTLIER_LOCAL_SUCCESS, 0, 1);
	report(cl, 1, OUTLIER_EXT_ORIGIN, 500, 1);
	CHECK(ejected(cl, 1));
	CHECK_INT(OD(cl, ejections_enforced_consecutive_5xx), 1);
	CHECK_INT(OD(cl, ejections_enforced_consecutive_local_origin_failure), 1);

	/* host 2: local failures do not feed consecutive_5xx in split mode */
	report(cl, 2, OUTLIER_EXT_ORIGIN, 500, 3);
	report(cl, 2, OUTLIER_LOCAL_TIMEOUT, 0, 2);
	report(cl, 2, OUTLIER_EXT_ORIGIN, 200, 1);
	report(cl, 2, OUTLIER_EXT_ORIGIN, 500, 3);
	CHECK(!ejected(cl, 2));
	CHECK_INT(H(cl, 2)->od->consecutive_lo, 2);   /* the 200 did not reset it either */
	cluster_unref(cl);
}

TEST(outlier_local_origin_not_enforced_is_detected_again)
{
	struct cluster *cl = make(1, "{\"split_external_local_origin_errors\":true,"
				  "\"consecutive_local_origin_failure\":2,"
				  "\"enforcing_consecutive_local_origin_failure\":0}", NULL, 0);
	CHECK(cl);
	report(cl, 0, OUTLIER_LOCAL_CONNECT_FAILED, 0, 2);
	CHECK(!ejected(cl, 0));
	CHECK_INT(OD(cl, ejections_detected_consecutive_local_origin_failure), 1);
	CHECK_INT(H(cl, 0)->od->consecutive_lo, 0);   /* restarts, as Envoy */
	report(cl, 0, OUTLIER_LOCAL_CONNECT_FAILED, 0, 3);
	CHECK_INT(OD(cl, ejections_detected_consecutive_local_origin_failure), 2);
	CHECK_INT(OD(cl, ejections_enforced_consecutive_local_origin_failure), 0);
	CHECK_INT(OD(cl, ejections_enforced_total), 0);
	cluster_unref(cl);
}

TEST(outlier_uneject_on_fake_clock)
{
	struct cluster *cl = make(2, "{\"split_external_local_origin_errors\":true,"
				  "\"consecutive_local_origin_failure\":1,\"base_ejection_time\":\"10s\","
				  "\"max_ejection_percent\":100}", NULL, 0);
	CHECK(cl);
	report(cl, 0, OUTLIER_LOCAL_CONNECT_FAILED, 0, 1);
	CHECK(ejected(cl, 0));
	fake_now += 9999;
	outlier_interval(cl);
	CHECK(ejected(cl, 0));
	fake_now += 1;
	outlier_interval(cl);
	CHECK(!ejected(cl, 0));
	CHECK_INT(OD(cl, ejections_active), 0);
	/* the second ejection lasts twice as long */
	report(cl, 0, OUTLIER_LOCAL_CONNECT_FAILED, 0, 1);
	CHECK(ejected(cl, 0));
	fake_now += 19999;
	outlier_interval(cl);
	CHECK(ejected(cl, 0));
	fake_now += 1;
	outlier_interval(cl);
	CHECK(!ejected(cl, 0));
	cluster_unref(cl);
}

TEST(outlier_local_origin_failure_percentage_and_success_rate)
{
	/* five hosts, ten attempts each in the interval; host 0 never connects.
	 * External failure percentage is detected (host 1 answers 500s) but not
	 * enforced (its default 0 %); local-origin failure percentage is
	 * enforced here. */
	struct cluster *cl = make(5, "{\"split_external_local_origin_errors\":true,"
				  "\"consecutive_local_origin_failure\":0,\"consecutive_5xx\":0,"
				  "\"consecutive_gateway_failure\":0,\"max_ejection_percent\":100,"
				  "\"failure_percentage_request_volume\":10,\"failure_percentage_threshold\":50,"
				  "\"failure_percentage_minimum_hosts\":4,"
				  "\"success_rate_request_volume\":1000,"
				  "\"enforcing_failure_percentage_local_origin\":100}", NULL, 0);
	CHECK(cl && cl->ext->od.enforcing_lo_fp == 100 && cl->ext->od.enforcing_lo_sr == 100);
	report(cl, 0, OUTLIER_LOCAL_CONNECT_FAILED, 0, 10);
	for (size_t i = 1; i < 5; i++) {
		report(cl, i, OUTLIER_LOCAL_SUCCESS, 0, 10);
		report(cl, i, OUTLIER_EXT_ORIGIN, i == 1 ? 500 : 200, 10);
	}
	outlier_interval(cl);
	CHECK(ejected(cl, 0));
	CHECK(!ejected(cl, 1));
	CHECK_INT(OD(cl, ejections_enforced_local_origin_failure_percentage), 1);
	CHECK_INT(OD(cl, ejections_detected_failure_percentage), 1);
	CHECK_INT(OD(cl, ejections_enforced_failure_percentage), 0);
	CHECK_INT(OD(cl, ejections_detected_local_origin_success_rate), 0);   /* volume 1000 */
	/* the next interval starts from zero: nothing new to judge */
	outlier_interval(cl);
	CHECK_INT(OD(cl, ejections_enforced_local_origin_failure_percentage), 1);
	cluster_unref(cl);

	/* local-origin success rate: host 0 at 0 % among four at 100 %: mean
	 * 80, stdev 40, limit 80 - 1.9 x 40 = 4 */
	cl = make(5, "{\"split_external_local_origin_errors\":true,"
		  "\"consecutive_local_origin_failure\":0,\"max_ejection_percent\":100,"
		  "\"success_rate_request_volume\":10}", NULL, 0);
	CHECK(cl);
	report(cl, 0, OUTLIER_LOCAL_TIMEOUT, 0, 10);
	for (size_t i = 1; i < 5; i++)
		report(cl, i, OUTLIER_LOCAL_SUCCESS, 0, 10);
	outlier_interval(cl);
	CHECK(ejected(cl, 0));
	CHECK_INT(OD(cl, ejections_enforced_local_origin_success_rate), 1);
	CHECK_INT(OD(cl, ejections_detected_success_rate), 0);   /* no external volume */
	cluster_unref(cl);

	/* without the split the same local failures feed the external detectors */
	cl = make(5, "{\"consecutive_5xx\":0,\"consecutive_gateway_failure\":0,"
		  "\"max_ejection_percent\":100,\"success_rate_request_volume\":10}", NULL, 0);
	CHECK(cl);
	report(cl, 0, OUTLIER_LOCAL_TIMEOUT, 0, 10);
	for (size_t i = 1; i < 5; i++) {
		report(cl, i, OUTLIER_LOCAL_SUCCESS, 0, 10);
		report(cl, i, OUTLIER_EXT_ORIGIN, 200, 10);
	}
	outlier_interval(cl);
	CHECK(ejected(cl, 0));
	CHECK_INT(OD(cl, ejections_enforced_success_rate), 1);
	CHECK_INT(OD(cl, ejections_enforced_local_origin_success_rate), 0);
	cluster_unref(cl);
}

TEST(outlier_config_fields)
{
	char err[512];
	struct cluster *cl = make(1, "{}", err, sizeof(err));
	CHECK(cl && !cl->ext->od.split && cl->ext->od.consecutive_lo == 5 && cl->ext->od.enforcing_lo == 100 &&
	      cl->ext->od.enforcing_lo_sr == 100 && cl->ext->od.enforcing_lo_fp == 0);
	cluster_unref(cl);
	cl = make(1, "{\"splitExternalLocalOriginErrors\":true,\"consecutiveLocalOriginFailure\":7,"
		  "\"enforcing_consecutive_local_origin_failure\":50,"
		  "\"enforcing_local_origin_success_rate\":20,"
		  "\"enforcing_failure_percentage_local_origin\":30}", err, sizeof(err));
	CHECK(cl);
	if (cl)
		CHECK(cl->ext->od.split && cl->ext->od.consecutive_lo == 7 && cl->ext->od.enforcing_lo == 50 &&
		      cl->ext->od.enforcing_lo_sr == 20 && cl->ext->od.enforcing_lo_fp == 30);
	else
		fprintf(stderr, "%s\n", err);
	cluster_unref(cl);
	CHECK(!make(1, "{\"enforcing_local_origin_success_rate\":101}", err, sizeof(err)));
	CHECK_CONTAINS(err, "0..100");
	CHECK(!make(1, "{\"split_external_local_origin_errors\":\"yes\"}", err, sizeof(err)));
	CHECK_CONTAINS(err, "split_external_local_origin_errors");
	CHECK(!make(1, "{\"successful_active_health_check_uneject_host\":true}", err, sizeof(err)));
	CHECK_CONTAINS(err, "successful_active_health_check_uneject_host");
}
