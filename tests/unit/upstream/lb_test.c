/* lb_test.c - load balancers of proxy/upstream/cluster.c through the public
 * API: a STATIC cluster is parsed from JSON, started (its host set published
 * to worker 0 through cluster_publish_hook) and picked from.  Active requests
 * are set through the per-worker host stats the router bumps; peak-EWMA gets
 * latency samples with explicit timestamps.  Statistical bounds are generous
 * (several standard deviations), so these do not flake. */
#include "test.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/common.h"
#include "proxy/snapshot.h"
#include "proxy/worker.h"
#include "proxy/upstream/cluster.h"
#include "bootstrap_helper.h"

static struct worker wk = { .id = 0, .shard = 1 };

/* A cluster of n hosts 10.0.0.<i+1>:80 with weights w[i] (NULL: 1), health
 * status[i] (NULL: none given) and the given extra top-level fields (JSON
 * object text without braces, or ""); NULL and c.err in err on a config
 * error. */
static struct cluster *make_eps(size_t n, const unsigned *w, const char *const *status,
				const char *extra, char *err, size_t errlen)
{
	char buf[16384];
	size_t off = 0;
	off += (size_t)snprintf(buf + off, sizeof(buf) - off,
				"{\"name\":\"c\",\"type\":\"STATIC\",%s%s\"load_assignment\":"
				"{\"endpoints\":[{\"lb_endpoints\":[", extra, *extra ? "," : "");
	for (size_t i = 0; i < n; i++) {
		off += (size_t)snprintf(buf + off, sizeof(buf) - off,
					"%s{\"endpoint\":{\"address\":{\"socket_address\":"
					"{\"address\":\"10.0.0.%zu\",\"port_value\":80}}},"
					"\"load_balancing_weight\":%u", i ? "," : "", i + 1, w ? w[i] : 1);
		if (status)
			off += (size_t)snprintf(buf + off, sizeof(buf) - off,
						",\"health_status\":\"%s\"", status[i]);
		off += (size_t)snprintf(buf + off, sizeof(buf) - off, "}");
	}
	snprintf(buf + off, sizeof(buf) - off, "]}]}}");
	struct cluster *cl = test_cluster_parse(buf, err, errlen);
	if (cl)
		test_cluster_start(cl, NULL);
	return cl;
}

static struct cluster *make(size_t n, const unsigned *w, const char *extra, char *err, size_t errlen)
{
	return make_eps(n, w, NULL, extra, err, errlen);
}

static struct host *host_at(struct cluster *cl, size_t i)
{
	return cl->workers[0].hs->hosts[i];
}

static void set_active(struct cluster *cl, size_t i, int64_t v)
{
	struct host *h = host_at(cl, i);
	int64_t cur = h->stats[wk.shard] ? h->stats[wk.shard][HOST_RQ_ACTIVE] : 0;
	host_stat_add(h, wk.shard, HOST_RQ_ACTIVE, v - cur);
}

static size_t index_of(struct cluster *cl, const struct host *h)
{
	for (size_t i = 0; i < cl->workers[0].hs->n; i++)
		if (cl->workers[0].hs->hosts[i] == h)
			return i;
	return (size_t)-1;
}

TEST(lb_least_request_p2c_never_picks_the_busier_of_two)
{
	/* Two hosts: every pick draws both or the same one twice.  The busier
	 * host may only be picked when both draws hit it (25 %). */
	struct cluster *cl = make(2, NULL, "\"lb_policy\":\"LEAST_REQUEST\"", NULL, 0);
	CHECK(cl && cl->lb == LB_LEAST_REQUEST && cl->ext->lr_choice_count == 2);
	set_active(cl, 0, 5);
	set_active(cl, 1, 1);
	int busy = 0;
	for (int k = 0; k < 4000; k++)
		busy += index_of(cl, cluster_pick_host(cl, &wk)) == 0;
	CHECK(busy > 700 && busy < 1300);   /* ~1000 */

	/* Ten hosts, choice_count 10: the least loaded one wins whenever drawn,
	 * and the most loaded host is never picked unless every draw is it. */
	cluster_unref(cl);
	cl = make(10, NULL, "\"lb_policy\":\"LEAST_REQUEST\","
		  "\"least_request_lb_config\":{\"choice_count\":10}", NULL, 0);
	CHECK(cl && cl->ext->lr_choice_count == 10);
	for (size_t i = 0; i < 10; i++)
		set_active(cl, i, 10 + (int64_t)i);
	set_active(cl, 3, 0);
	int least = 0, most = 0;
	for (int k = 0; k < 2000; k++) {
		size_t i = index_of(cl, cluster_pick_host(cl, &wk));
		least += i == 3;
		most += i == 9;
	}
	CHECK(least > 2000 * 0.55);   /* 1 - 0.9^10 = 65 % */
	CHECK_INT(most, 0);
	for (size_t i = 0; i < 10; i++)
		set_active(cl, i, 0);
	cluster_unref(cl);
}

TEST(lb_least_request_weighted_bias)
{
	static const unsigned w[] = { 1, 3 };
	char err[512];
	/* bias 0: purely by weight, whatever the active requests */
	struct cluster *cl = make(2, w, "\"lb_policy\":\"LEAST_REQUEST\",\"least_request_lb_config\":"
				  "{\"active_request_bias\":{\"default_value\":0,\"runtime_key\":\"x\"}}",
				  err, sizeof(err));
	CHECK(cl && cl->ext->lr_bias == 0.0);
	if (!cl) {
		fprintf(stderr, "%s\n", err);
		return;
	}
	set_active(cl, 1, 100);
	int heavy = 0;
	for (int k = 0; k < 400; k++)
		heavy += index_of(cl, cluster_pick_host(cl, &wk)) == 1;
	CHECK_INT(heavy, 300);   /* smooth WRR: exact */
	set_active(cl, 1, 0);
	cluster_unref(cl);

	/* default bias 1: 3 / (5 + 1) = 0.5 < 1 / (0 + 1): the light host gets 2/3 */
	cl = make(2, w, "\"lb_policy\":\"LEAST_REQUEST\"", NULL, 0);
	CHECK(cl && cl->ext->lr_bias == 1.0);
	set_active(cl, 1, 5);
	heavy = 0;
	for (int k = 0; k < 300; k++)
		heavy += index_of(cl, cluster_pick_host(cl, &wk)) == 1;
	CHECK(heavy >= 99 && heavy <= 101);
	set_active(cl, 1, 0);
	cluster_unref(cl);

	/* bias 2: 3 / 2^2 = 0.75 against 1 / 1 */
	cl = make(2, w, "\"lb_policy\":\"LEAST_REQUEST\",\"least_request_lb_config\":"
		  "{\"active_request_bias\":{\"default_value\":2}}", NULL, 0);
	set_active(cl, 1, 1);
	heavy = 0;
	for (int k = 0; k < 700; k++)
		heavy += index_of(cl, cluster_pick_host(cl, &wk)) == 1;
	CHECK(heavy >= 299 && heavy <= 301);
	set_active(cl, 1, 0);
	cluster_unref(cl);
}

TEST(lb_random_weighted)
{
	static const unsigned w[] = { 1, 9 };
	struct cluster *cl = make(2, w, "\"lb_policy\":\"RANDOM\"", NULL, 0);
	int heavy = 0;
	for (int k = 0; k < 10000; k++)
		heavy += index_of(cl, cluster_pick_host(cl, &wk)) == 1;
	CHECK(heavy > 8700 && heavy < 9300);   /* 9000, sd 30 */
	cluster_unref(cl);
}

#define EWMA_POLICY(decay, rtt) \
	"\"lb_policy\":\"LOAD_BALANCING_POLICY_CONFIG\",\"load_balancing_policy\":{\"policies\":[" \
	"{\"typed_extension_config\":{\"name\":\"remora.load_balancers.peak_ewma\",\"typed_config\":{" \
	"\"@type\":\"type.googleapis.com/remora.extensions.load_balancers.peak_ewma.v1.PeakEwma\"," \
	"\"decay_time\":\"" decay "\",\"default_rtt\":\"" rtt "\"}}}]}"

TEST(lb_peak_ewma_prefers_fast_reacts_to_peaks_and_decays)
{
	char err[512];
	struct cluster *cl = make(3, NULL, EWMA_POLICY("10s", "0.010s"), err, sizeof(err));
	CHECK(cl && cl->lb == LB_PEAK_EWMA);
	if (!cl) {
		fprintf(stderr, "%s\n", err);
		return;
	}
	CHECK_INT(cl->ext->ewma_decay_us, 10000000);
	CHECK_INT(cl->ext->ewma_default_rtt_us, 10000);
	struct host *h0 = host_at(cl, 0), *h1 = host_at(cl, 1), *h2 = host_at(cl, 2);
	uint64_t t = 1000000;
	/* no samples: default_rtt for everyone */
	CHECK(cluster_ewma_cost(cl, &wk, h0, t) == cluster_ewma_cost(cl, &wk, h1, t));

	/* h0 answers in 1 ms, h1 in 50 ms, h2 in 5 ms; simulate 3000 picks over 3 s
	 * feeding each picked host its latency */
	int picks[3] = { 0, 0, 0 };
	static const uint64_t lat[3] = { 1000, 50000, 5000 };
	for (int k = 0; k < 3000; k++) {
		t += 1000;
		struct host *h = cluster_pick_host_at(cl, &wk, t);
		size_t i = index_of(cl, h);
		picks[i]++;
		cluster_lb_observe_at(cl, &wk, h, lat[i], t);
	}
	CHECK(picks[0] > picks[2] && picks[2] > picks[1]);
	CHECK(picks[0] > 3000 / 2);
	CHECK(picks[1] < 3000 / 10);

	/* a peak is taken at once */
	cluster_lb_observe_at(cl, &wk, h0, 80000, t);
	CHECK(cluster_ewma_cost(cl, &wk, h0, t) > 80000);
	CHECK(cluster_ewma_cost(cl, &wk, h0, t) > cluster_ewma_cost(cl, &wk, h1, t));
	for (int k = 0; k < 200; k++) {   /* now h0 is avoided whenever drawn against h2 */
		size_t i = index_of(cl, cluster_pick_host_at(cl, &wk, t));
		CHECK(i != 0);
	}
	/* ...and decays: lower samples pull it down with time constant 10 s */
	double peak = cluster_ewma_cost(cl, &wk, h0, t);
	cluster_lb_observe_at(cl, &wk, h0, 1000, t + 100000);        /* 0.1 s later */
	double c1 = cluster_ewma_cost(cl, &wk, h0, t + 100000);
	CHECK(c1 < peak && c1 > peak * 0.95);                        /* barely moved */
	cluster_lb_observe_at(cl, &wk, h0, 1000, t + 30100000);      /* 30 s later */
	double c2 = cluster_ewma_cost(cl, &wk, h0, t + 30100000);
	CHECK(c2 < 1000 + c1 * 0.06 && c2 > 1000);                   /* e^-3 = 5 % of the peak left */
	/* without samples the estimate decays toward 0 (idle hosts get retried) */
	CHECK(cluster_ewma_cost(cl, &wk, h2, t + 100000000) < 10);

	/* outstanding requests multiply the cost */
	double base = cluster_ewma_cost(cl, &wk, h2, t);
	set_active(cl, 2, 3);
	CHECK(cluster_ewma_cost(cl, &wk, h2, t) > base * 3.99);
	set_active(cl, 2, 0);
	cluster_unref(cl);
}

TEST(lb_peak_ewma_weights_and_config)
{
	static const unsigned w[] = { 1, 4 };
	char err[512];
	/* equal latency, weight 4 makes h1 four times cheaper: always chosen
	 * (two hosts: every pick compares both) */
	struct cluster *cl = make(2, w, EWMA_POLICY("1s", "0.005s"), NULL, 0);
	int heavy = 0;
	for (int k = 0; k < 100; k++)
		heavy += index_of(cl, cluster_pick_host_at(cl, &wk, 1000)) == 1;
	CHECK_INT(heavy, 100);
	cluster_unref(cl);

	/* the policy list without lb_policy; unknown entries are skipped */
	cl = make(2, NULL, "\"load_balancing_policy\":{\"policies\":["
		  "{\"typed_extension_config\":{\"name\":\"x\",\"typed_config\":{\"@type\":\"type.googleapis.com/x.Y\"}}},"
		  "{\"typed_extension_config\":{\"name\":\"lr\",\"typed_config\":{\"@type\":"
		  "\"type.googleapis.com/envoy.extensions.load_balancing_policies.least_request.v3.LeastRequest\","
		  "\"choice_count\":3}}}]}", err, sizeof(err));
	CHECK(cl && cl->lb == LB_LEAST_REQUEST && cl->ext->lr_choice_count == 3);
	cluster_unref(cl);
	cl = make(2, NULL, "\"load_balancing_policy\":{\"policies\":["
		  "{\"typed_extension_config\":{\"name\":\"x\",\"typed_config\":{\"@type\":\"type.googleapis.com/x.Y\"}}},"
		  "{\"typed_extension_config\":{\"name\":\"e\",\"typed_config\":{\"@type\":"
		  "\"type.googleapis.com/remora.extensions.load_balancers.peak_ewma.v1.PeakEwma\","
		  "\"decay_time\":\"5s\"}}}]}", err, sizeof(err));
	CHECK(cl && cl->lb == LB_PEAK_EWMA && cl->ext->ewma_decay_us == 5000000 && host_at(cl, 0)->ewma);
	cluster_unref(cl);

	CHECK(!make(2, NULL, "\"lb_policy\":\"LOAD_BALANCING_POLICY_CONFIG\"", err, sizeof(err)));
	CHECK_CONTAINS(err, "lb_policy: LOAD_BALANCING_POLICY_CONFIG needs load_balancing_policy");
	CHECK(!make(2, NULL, "\"load_balancing_policy\":{\"policies\":[{\"typed_extension_config\":"
		    "{\"name\":\"x\",\"typed_config\":{\"@type\":\"type.googleapis.com/x.Y\"}}}]}",
		    err, sizeof(err)));
	CHECK_CONTAINS(err, "load_balancing_policy.policies: no supported policy");
	CHECK(!make(2, NULL, "\"load_balancing_policy\":{\"policies\":[{\"typed_extension_config\":"
		    "{\"name\":\"x\",\"typed_config\":{\"@type\":"
		    "\"type.googleapis.com/remora.extensions.load_balancers.peak_ewma.v1.PeakEwma\","
		    "\"decay\":\"1s\"}}}]}", err, sizeof(err)));
	CHECK_CONTAINS(err, "load_balancing_policy.policies[0].typed_extension_config.typed_config.decay: unknown field");
	CHECK(!make(2, NULL, "\"least_request_lb_config\":{\"choice_count\":1}", err, sizeof(err)));
	CHECK_CONTAINS(err, "least_request_lb_config.choice_count: must be at least 2");
	CHECK(!make(2, NULL, "\"least_request_lb_config\":{\"active_request_bias\":{\"default_value\":-1}}",
		    err, sizeof(err)));
	CHECK_CONTAINS(err, "active_request_bias.default_value: must be a finite number >= 0");
}

TEST(lb_least_request_weighted_edf_split)
{
	/* weights 1 and 3, no active requests: EDF picks 1:3 (Envoy) */
	static const unsigned w[] = { 1, 3 };
	struct cluster *cl = make(2, w, "\"lb_policy\":\"LEAST_REQUEST\"", NULL, 0);
	CHECK(cl && cl->workers[0].lb && cl->workers[0].lb->lr_heap);
	if (!cl)
		return;
	int heavy = 0, run = 0, longest = 0;
	for (int k = 0; k < 4000; k++) {
		bool h = index_of(cl, cluster_pick_host(cl, &wk)) == 1;
		heavy += h;
		run = h ? 0 : run + 1;
		longest = run > longest ? run : longest;
	}
	CHECK(heavy > 2850 && heavy < 3150);   /* ~3000 */
	CHECK(longest <= 2);                    /* interleaved, not batched */
	cluster_unref(cl);

	/* 40 hosts with weights 1..40: each host's share follows its weight */
	unsigned w40[40];
	for (unsigned i = 0; i < 40; i++)
		w40[i] = i + 1;
	cl = make(40, w40, "\"lb_policy\":\"LEAST_REQUEST\"", NULL, 0);
	CHECK(cl);
	if (!cl)
		return;
	int count[40] = { 0 };
	const int picks = 820 * 20;   /* total weight 820: 20 rounds */
	for (int k = 0; k < picks; k++)
		count[index_of(cl, cluster_pick_host(cl, &wk))]++;
	for (unsigned i = 0; i < 40; i++) {
		int want = (int)(20 * w40[i]);
		CHECK(count[i] >= want * 9 / 10 - 2 && count[i] <= want * 11 / 10 + 2);
	}
	/* a busy host is picked less: host 39 (weight 40) with 3 active
	 * requests weighs 40/4 = 10 */
	set_active(cl, 39, 3);
	memset(count, 0, sizeof(count));
	for (int k = 0; k < picks; k++)
		count[index_of(cl, cluster_pick_host(cl, &wk))]++;
	CHECK(count[39] > 100 && count[39] < 330);   /* ~10/790 x 16400 = 208 */
	set_active(cl, 39, 0);
	cluster_unref(cl);
}

TEST(lb_hash_gauges)
{
	static const unsigned w[] = { 1, 2, 1 };
	struct cluster *cl = make(3, w, "\"lb_policy\":\"RING_HASH\",\"ring_hash_lb_config\":"
				  "{\"minimum_ring_size\":64}", NULL, 0);
	CHECK(cl && cl->ext->lbh_stats && cl->workers[0].hs->lbt);
	if (!cl)
		return;
	const struct lb_hash_table *t = cl->workers[0].hs->lbt;
	CHECK_INT(stats_value(cl->ext->lbh_stats, LBH_size), (int64_t)t->size);
	CHECK_INT(t->size, 64);   /* minimum_ring_size, shared 1:2:1 */
	CHECK_INT(stats_value(cl->ext->lbh_stats, LBH_min_hashes_per_host), 16);
	CHECK_INT(stats_value(cl->ext->lbh_stats, LBH_max_hashes_per_host), 32);
	cluster_unref(cl);

	cl = make(3, w, "\"lb_policy\":\"MAGLEV\",\"maglev_lb_config\":{\"table_size\":1009}", NULL, 0);
	CHECK(cl && cl->ext->lbh_stats);
	if (!cl)
		return;
	t = cl->workers[0].hs->lbt;
	int64_t lo = stats_value(cl->ext->lbh_stats, LBH_min_entries_per_host);
	int64_t hi = stats_value(cl->ext->lbh_stats, LBH_max_entries_per_host);
	CHECK_INT(lo, t->min_per_host);
	CHECK_INT(hi, t->max_per_host);
	CHECK(lo > 200 && lo < 300 && hi > 450 && hi < 560);   /* 1009 x 1/4, 1/2 */
	cluster_unref(cl);

	/* other policies have no such scope */
	cl = make(2, NULL, "", NULL, 0);
	CHECK(cl && !cl->ext->lbh_stats);
	cluster_unref(cl);
}

TEST(lb_circuit_breaker_priorities)
{
	char err[512];
	struct cluster *cl = make(1, NULL, "\"circuit_breakers\":{\"thresholds\":["
				  "{\"max_requests\":2,\"max_retries\":1},"
				  "{\"priority\":\"HIGH\",\"max_requests\":5,\"max_pending_requests\":7,"
				  "\"retry_budget\":{\"min_retry_concurrency\":4}},"
				  "{\"priority\":\"HIGH\",\"max_requests\":99}],"
				  "\"per_host_thresholds\":[{\"priority\":\"HIGH\",\"max_connections\":9}]}",
				  err, sizeof(err));
	CHECK(cl);
	if (!cl) {
		fprintf(stderr, "%s\n", err);
		return;
	}
	CHECK_INT(cl->cb[CB_PRIO_DEFAULT].max_requests, 2);
	CHECK_INT(cl->cb[CB_PRIO_DEFAULT].max_pending, 1024);
	CHECK_INT(cl->cb[CB_PRIO_HIGH].max_requests, 5);
	CHECK_INT(cl->cb[CB_PRIO_HIGH].max_pending, 7);
	CHECK_INT(cl->cb[CB_PRIO_HIGH].max_connections, 1024);
	CHECK_INT(cl->cb[CB_PRIO_HIGH].max_host_connections, 9);
	CHECK_INT(cl->cb[CB_PRIO_DEFAULT].max_host_connections, 0);
	/* separate counts: DEFAULT overflows at 2 while HIGH still takes 5 */
	int d = 0, h = 0;
	for (int k = 0; k < 10; k++) {
		d += cluster_rq_take(cl, CB_PRIO_DEFAULT);
		h += cluster_rq_take(cl, CB_PRIO_HIGH);
	}
	CHECK_INT(d, 2);
	CHECK_INT(h, 5);
	CHECK_INT(cluster_retry_limit(cl, CB_PRIO_DEFAULT), 1);
	CHECK_INT(cluster_retry_limit(cl, CB_PRIO_HIGH), 4);   /* budget floor */
	for (int k = 0; k < 2; k++)
		cluster_rq_put(cl, CB_PRIO_DEFAULT);
	for (int k = 0; k < 5; k++)
		cluster_rq_put(cl, CB_PRIO_HIGH);
	CHECK(cluster_retry_take(cl, CB_PRIO_DEFAULT));
	CHECK(!cluster_retry_take(cl, CB_PRIO_DEFAULT));
	cluster_retry_put(cl, CB_PRIO_DEFAULT);
	/* gauges per priority, in the cluster's scope (main-thread values) */
	cluster_rq_take(cl, CB_PRIO_HIGH);
	cluster_update_cb_gauges(cl);
	CHECK_STR(cl->stats->desc[CLUSTER_CB(CB_PRIO_HIGH, CB_rq_open)].name,
		  "circuit_breakers.high.rq_open");
	CHECK_INT(stats_value(cl->stats, CLUSTER_CB(CB_PRIO_DEFAULT, CB_rq_open)), 0);
	CHECK_INT(stats_value(cl->stats, CLUSTER_CB(CB_PRIO_HIGH, CB_rq_open)), 0);
	for (int k = 0; k < 4; k++)
		cluster_rq_take(cl, CB_PRIO_HIGH);
	cluster_update_cb_gauges(cl);
	CHECK_INT(stats_value(cl->stats, CLUSTER_CB(CB_PRIO_HIGH, CB_rq_open)), 1);
	CHECK_INT(stats_value(cl->stats, CLUSTER_CB(CB_PRIO_DEFAULT, CB_rq_open)), 0);
	for (int k = 0; k < 5; k++)
		cluster_rq_put(cl, CB_PRIO_HIGH);
	cluster_unref(cl);

	CHECK(!make(1, NULL, "\"circuit_breakers\":{\"thresholds\":[{\"priority\":\"LOW\"}]}",
		    err, sizeof(err)));
	CHECK_CONTAINS(err, "circuit_breakers.thresholds[0].priority: unknown value 'LOW'");
}

/* A ROUND_ROBIN (or lb_policy given in extra) cluster of hosts
 * 10.0.0.<i+1>:80 with health_status[i]. */
static struct cluster *make_health(size_t n, const char *const *status, const char *extra)
{
	return make_eps(n, NULL, status, extra, NULL, 0);
}

/* picks[i] = how often host i was picked in n picks */
static void count_picks(struct cluster *cl, int n, int *picks, size_t nhosts)
{
	memset(picks, 0, nhosts * sizeof(*picks));
	for (int k = 0; k < n; k++) {
		size_t i = index_of(cl, cluster_pick_host(cl, &wk));
		if (i < nhosts)
			picks[i]++;
	}
}

TEST(lb_health_status_unhealthy_hosts_get_nothing)
{
	static const char *const st[] = { "HEALTHY", "UNHEALTHY", "DRAINING", "UNKNOWN" };
	struct cluster *cl = make_health(4, st, "");
	int p[4];
	CHECK(cl != NULL);
	count_picks(cl, 1000, p, 4);
	CHECK_INT(p[1] + p[2], 0);
	CHECK_INT(p[0], 500);                 /* round robin over the two healthy */
	CHECK_INT(p[3], 500);
	CHECK_INT(host_health_of(host_at(cl, 2)->health_flags), HOST_UNHEALTHY);
	CHECK(host_at(cl, 1)->health_flags & HOST_FAILED_EDS_HEALTH);
	cluster_unref(cl);
}

TEST(lb_degraded_hosts_take_only_what_healthy_cannot)
{
	/* 3 of 4 healthy: 1.4 x 75 % covers everything, the degraded host idles */
	static const char *const a[] = { "HEALTHY", "HEALTHY", "DEGRADED", "HEALTHY" };
	struct cluster *cl = make_health(4, a, "");
	int p[4];
	count_picks(cl, 3000, p, 4);
	CHECK_INT(p[2], 0);
	CHECK_INT(p[0] + p[1] + p[3], 3000);
	CHECK_INT(cl->workers[0].hs->degraded_load, 0);
	cluster_unref(cl);

	/* 1 healthy, 3 degraded: healthy 1.4 x 25 = 35 %, degraded 65 % */
	static const char *const b[] = { "DEGRADED", "HEALTHY", "DEGRADED", "DEGRADED" };
	cl = make_health(4, b, "");
	CHECK_INT(cl->workers[0].hs->degraded_load, 65);
	count_picks(cl, 10000, p, 4);
	CHECK(p[1] > 3200 && p[1] < 3800);    /* 3500, sd 48 */
	CHECK(p[0] > 1900 && p[2] > 1900 && p[3] > 1900);   /* degraded share spread */
	cluster_unref(cl);

	/* only degraded hosts (not panic: they count as usable) */
	static const char *const c[] = { "DEGRADED", "DEGRADED", "UNHEALTHY" };
	cl = make_health(3, c, "\"lb_policy\":\"LEAST_REQUEST\"");
	count_picks(cl, 1000, p, 3);
	CHECK_INT(p[2], 0);
	CHECK_INT(p[0] + p[1], 1000);
	cluster_unref(cl);
}

TEST(lb_degraded_and_panic)
{
	/* 1 of 4 usable (25 % < the 50 % panic threshold): every host */
	static const char *const a[] = { "UNHEALTHY", "DEGRADED", "UNHEALTHY", "TIMEOUT" };
	struct cluster *cl = make_health(4, a, "");
	int p[4];
	count_picks(cl, 1000, p, 4);
	CHECK(cl->workers[0].hs->panic);
	for (int i = 0; i < 4; i++)
		CHECK_INT(p[i], 250);
	cluster_unref(cl);
}

TEST(lb_degraded_hash_is_sticky)
{
	static const char *const a[] = { "HEALTHY", "DEGRADED", "DEGRADED", "DEGRADED", "HEALTHY" };
	struct cluster *cl = make_health(5, a, "\"lb_policy\":\"RING_HASH\"");
	int to_degraded = 0;
	for (uint64_t k = 0; k < 2000; k++) {
		uint64_t key = k * 0x9E3779B97F4A7C15ull;
		struct host *h = cluster_pick_host_hash(cl, &wk, key, true);
		CHECK(h == cluster_pick_host_hash(cl, &wk, key, true));
		to_degraded += host_health_of(h->health_flags) == HOST_DEGRADED;
	}
	/* healthy 1.4 x 40 = 56 %, degraded 44 % */
	CHECK_INT(cl->workers[0].hs->degraded_load, 44);
	CHECK(to_degraded > 700 && to_degraded < 1060);   /* 880, sd 22 */
	cluster_unref(cl);
}

TEST(lb_health_status_config_error)
{
	static const char *const a[] = { "SICK" };
	char err[512];
	CHECK(make_eps(1, NULL, a, "", err, sizeof(err)) == NULL);
	CHECK_CONTAINS(err, "load_assignment.endpoints[0].lb_endpoints[0].health_status");
}
