/* outlier.c - outlier detection (passive health checking) of a cluster's
 * hosts: Envoy's consecutive-failure detectors, fed by the filters from the
 * workers, and its success-rate / failure-percentage detectors, run by the
 * main thread every interval.  Ejection state lives in struct host and is
 * written by the main thread only.
 *
 * With split_external_local_origin_errors, each host has two sets of
 * inputs, as in Envoy: externally originated results (HTTP statuses) feed
 * consecutive_5xx, consecutive_gateway_failure and the success-rate /
 * failure-percentage detectors; locally originated ones (connect failure,
 * timeout, reset; success = connected and answered) feed
 * consecutive_local_origin_failure and the local-origin success-rate /
 * failure-percentage detectors.  Without it, local-origin results are
 * mapped to HTTP statuses and everything feeds the first set. */
#include "outlier.h"

#include <math.h>
#include "cluster.h"
#include "../worker.h"
#include "../log.h"

static const struct stat_desc od_stat_desc[] = { OD_STATS(STATS_DESC) };

uint64_t (*outlier_clock)(void) = now_ms;
void (*outlier_post)(void (*fn)(void *arg), void *arg) = main_post;

enum od_kind { OD_5XX, OD_GATEWAY, OD_LOCAL, OD_SUCCESS_RATE, OD_FAILURE_PCT,
	       OD_LO_SUCCESS_RATE, OD_LO_FAILURE_PCT };

struct od_msg {
	struct cluster *cl;   /* ref */
	struct host *h;       /* ref */
	enum od_kind kind;    /* OD_5XX, OD_GATEWAY or OD_LOCAL */
};

static size_t ejected_count(const struct cluster *cl)
{
	size_t n = 0;
	for (size_t i = 0; cl->hs && i < cl->hs->n; i++)
		n += !!(cl->hs->hosts[i]->health_flags & HOST_FAILED_OUTLIER);
	return n;
}

void outlier_gauges(struct cluster *cl)
{
	if (cl->ext->od_stats && !cl->gauges_off)
		stats_gauge_set(cl->ext->od_stats, OD_ejections_active, (int64_t)ejected_count(cl));
}

/* Main thread: eject h for kind if enforcement and max_ejection_percent
 * allow; returns true if it was ejected (the caller republishes). */
static bool od_try_eject(struct cluster *cl, struct host *h, enum od_kind kind)
{
	static const int detected[] = { OD_ejections_detected_consecutive_5xx,
		OD_ejections_detected_consecutive_gateway_failure,
		OD_ejections_detected_consecutive_local_origin_failure,
		OD_ejections_detected_success_rate, OD_ejections_detected_failure_percentage,
		OD_ejections_detected_local_origin_success_rate,
		OD_ejections_detected_local_origin_failure_percentage };
	static const int enforced[] = { OD_ejections_enforced_consecutive_5xx,
		OD_ejections_enforced_consecutive_gateway_failure,
		OD_ejections_enforced_consecutive_local_origin_failure,
		OD_ejections_enforced_success_rate, OD_ejections_enforced_failure_percentage,
		OD_ejections_enforced_local_origin_success_rate,
		OD_ejections_enforced_local_origin_failure_percentage };
	const struct outlier_cfg *od = &cl->ext->od;
	const uint32_t enforcing[] = { od->enforcing_5xx, od->enforcing_gw, od->enforcing_lo,
				       od->enforcing_sr, od->enforcing_fp, od->enforcing_lo_sr,
				       od->enforcing_lo_fp };

	if (h->health_flags & HOST_FAILED_OUTLIER)
		return false;
	stats_inc(cl->ext->od_stats, 0, detected[kind]);
	if (rand_below(100) >= enforcing[kind])
		return false;
	/* max_ejection_percent, but at least one host may always be ejected */
	size_t n = cl->hs->n, ej = ejected_count(cl);
	if (ej && (ej + 1) * 100 > (size_t)od->max_ejection_percent * n) {
		stats_inc(cl->ext->od_stats, 0, OD_ejections_overflow);
		return false;
	}
	h->od->ejections++;
	uint64_t t = od->base_ejection_ms * h->od->ejections;
	uint64_t cap = MAX(od->base_ejection_ms, od->max_ejection_ms);
	h->od->ejected_until_ms = outlier_clock() + MIN(t, cap);
	__atomic_or_fetch(&h->health_flags, HOST_FAILED_OUTLIER, __ATOMIC_RELAXED);
	__atomic_store_n(&h->od->consecutive_5xx, 0, __ATOMIC_RELAXED);
	__atomic_store_n(&h->od->consecutive_gw, 0, __ATOMIC_RELAXED);
	__atomic_store_n(&h->od->consecutive_lo, 0, __ATOMIC_RELAXED);
	stats_inc(cl->ext->od_stats, 0, OD_ejections_enforced_total);
	stats_inc(cl->ext->od_stats, 0, OD_ejections_total);
	stats_inc(cl->ext->od_stats, 0, enforced[kind]);
	outlier_gauges(cl);
	log_info("cluster '%s': host %s ejected by outlier detection for %llu ms", cl->name,
		 h->addr_str, (unsigned long long)MIN(t, cap));
	return true;
}

/* Main thread: a worker saw a host cross a consecutive-failure threshold.
 * As Envoy, the counter that crossed starts again from zero whether or not
 * the ejection was enforced, so another run of failures is detected again. */
static void od_eject(void *arg)
{
	struct od_msg *m = arg;
	struct cluster *cl = m->cl;
	bool present = false;

	for (size_t i = 0; cl->hs && i < cl->hs->n && !present; i++)
		present = cl->hs->hosts[i] == m->h;
	if (present && cl->ext->od_stats) {
		int *ctr = m->kind == OD_5XX ? &m->h->od->consecutive_5xx :
			   m->kind == OD_GATEWAY ? &m->h->od->consecutive_gw : &m->h->od->consecutive_lo;
		bool ejected = od_try_eject(cl, m->h, m->kind);
		__atomic_store_n(ctr, 0, __ATOMIC_RELAXED);
		if (ejected)
			cluster_republish(cl);
	}
	host_unref(m->h);
	cluster_unref(cl);
	free(m);
}

/* Envoy's success-rate and failure-percentage algorithms over one input set
 * (ok/err: HOST_OD_EXT_* or HOST_OD_LO_*; prev: index into h->od->od_prev) for
 * the interval just ended.  Hosts below the request volume, or too few such
 * hosts, are not judged. */
static bool od_statistics_set(struct cluster *cl, int ok_idx, int err_idx, size_t prev,
			      enum od_kind sr_kind, enum od_kind fp_kind, double *rate,
			      int64_t *vol)
{
	const struct outlier_cfg *od = &cl->ext->od;
	size_t n = cl->hs->n, sr_hosts = 0, fp_hosts = 0;
	bool changed = false;
	double sum = 0;
	for (size_t i = 0; i < n; i++) {
		struct host *h = cl->hs->hosts[i];
		int64_t ok = host_stat(h, ok_idx), err = host_stat(h, err_idx);
		int64_t dok = ok - h->od->od_prev[prev], derr = err - h->od->od_prev[prev + 1];
		h->od->od_prev[prev] = ok;
		h->od->od_prev[prev + 1] = err;
		vol[i] = dok + derr;
		rate[i] = vol[i] ? 100.0 * (double)dok / (double)vol[i] : 100.0;
		if (h->health_flags & HOST_FAILED_OUTLIER)
			continue;
		if (vol[i] >= od->sr_volume) {
			sr_hosts++;
			sum += rate[i];
		}
		if (vol[i] >= od->fp_volume)
			fp_hosts++;
	}
	if (sr_hosts >= od->sr_min_hosts && sr_hosts) {
		double mean = sum / (double)sr_hosts, var = 0;
		for (size_t i = 0; i < n; i++)
			if (!(cl->hs->hosts[i]->health_flags & HOST_FAILED_OUTLIER) && vol[i] >= od->sr_volume)
				var += (rate[i] - mean) * (rate[i] - mean);
		double limit = mean - (od->sr_stdev_factor / 1000.0) * sqrt(var / (double)sr_hosts);
		for (size_t i = 0; i < n; i++)
			if (vol[i] >= od->sr_volume && rate[i] < limit)
				changed |= od_try_eject(cl, cl->hs->hosts[i], sr_kind);
	}
	if (fp_hosts >= od->fp_min_hosts && fp_hosts) {
		for (size_t i = 0; i < n; i++)
			if (vol[i] >= od->fp_volume && 100.0 - rate[i] >= od->fp_threshold)
				changed |= od_try_eject(cl, cl->hs->hosts[i], fp_kind);
	}
	return changed;
}

static bool od_statistics(struct cluster *cl)
{
	size_t n = cl->hs ? cl->hs->n : 0;
	if (!n)
		return false;
	double *rate = xcalloc(n, sizeof(double));
	int64_t *vol = xcalloc(n, sizeof(int64_t));
	bool changed = od_statistics_set(cl, HOST_OD_EXT_OK, HOST_OD_EXT_ERR, 0, OD_SUCCESS_RATE,
					 OD_FAILURE_PCT, rate, vol);
	if (cl->ext->od.split)
		changed |= od_statistics_set(cl, HOST_OD_LO_OK, HOST_OD_LO_ERR, 2, OD_LO_SUCCESS_RATE,
					     OD_LO_FAILURE_PCT, rate, vol);
	free(rate);
	free(vol);
	return changed;
}

void outlier_interval(struct cluster *cl)
{
	bool changed = false;
	uint64_t now = outlier_clock();
	for (size_t i = 0; cl->hs && i < cl->hs->n; i++) {
		struct host *h = cl->hs->hosts[i];
		if ((h->health_flags & HOST_FAILED_OUTLIER) && now >= h->od->ejected_until_ms) {
			__atomic_and_fetch(&h->health_flags, ~HOST_FAILED_OUTLIER, __ATOMIC_RELAXED);
			changed = true;
		}
	}
	changed |= od_statistics(cl);
	if (changed) {
		outlier_gauges(cl);
		cluster_republish(cl);
	}
}

/* Main thread, every interval. */
static void od_sweep(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	outlier_interval(arg);
}

static void od_post(struct cluster *cl, struct host *h, enum od_kind kind)
{
	struct od_msg *m = xmalloc(sizeof(*m));
	m->cl = cluster_ref(cl);
	m->h = host_ref(h);
	m->kind = kind;
	outlier_post(od_eject, m);
}

/* Envoy's putHttpResponseCode: the externally originated detectors. */
static void od_put_status(struct cluster *cl, struct host *h, unsigned sh, int status)
{
	const struct outlier_cfg *od = &cl->ext->od;
	if (status < 500) {
		host_stat_add(h, sh, HOST_OD_EXT_OK, 1);
		/* loads first: successes, the common case, do not dirty the line */
		if (__atomic_load_n(&h->od->consecutive_5xx, __ATOMIC_RELAXED))
			__atomic_store_n(&h->od->consecutive_5xx, 0, __ATOMIC_RELAXED);
		if (__atomic_load_n(&h->od->consecutive_gw, __ATOMIC_RELAXED))
			__atomic_store_n(&h->od->consecutive_gw, 0, __ATOMIC_RELAXED);
		return;
	}
	host_stat_add(h, sh, HOST_OD_EXT_ERR, 1);
	bool gw = status >= 502 && status <= 504;
	int n5 = __atomic_add_fetch(&h->od->consecutive_5xx, 1, __ATOMIC_RELAXED);
	int ng = gw ? __atomic_add_fetch(&h->od->consecutive_gw, 1, __ATOMIC_RELAXED) : 0;
	if (!gw && __atomic_load_n(&h->od->consecutive_gw, __ATOMIC_RELAXED))
		__atomic_store_n(&h->od->consecutive_gw, 0, __ATOMIC_RELAXED);
	bool hit5 = od->consecutive_5xx && (uint32_t)n5 == od->consecutive_5xx;
	bool hitg = od->consecutive_gw && (uint32_t)ng == od->consecutive_gw;
	/* both at once: both detected, as Envoy (5xx first: it is enforced by
	 * default; the second finds the host ejected already) */
	if (hit5)
		od_post(cl, h, OD_5XX);
	if (hitg)
		od_post(cl, h, OD_GATEWAY);
}

void cluster_outlier_report(struct cluster *cl, struct host *h, enum outlier_result r,
			    int status)
{
	const struct outlier_cfg *od = &cl->ext->od;
	if (!od->enabled || !h)
		return;
	unsigned sh = current_worker ? current_worker->shard : 0;
	if (!od->split) {
		switch (r) {
		case OUTLIER_EXT_ORIGIN:           break;
		case OUTLIER_LOCAL_CONNECT_FAILED:
		case OUTLIER_LOCAL_RESET:          status = 503; break;
		case OUTLIER_LOCAL_TIMEOUT:        status = 504; break;
		case OUTLIER_LOCAL_SUCCESS_FINAL:  status = 200; break;
		case OUTLIER_LOCAL_SUCCESS:        return;   /* the HTTP status follows */
		}
		od_put_status(cl, h, sh, status);
		return;
	}
	switch (r) {
	case OUTLIER_EXT_ORIGIN:
		od_put_status(cl, h, sh, status);
		return;
	case OUTLIER_LOCAL_SUCCESS:
	case OUTLIER_LOCAL_SUCCESS_FINAL:
		host_stat_add(h, sh, HOST_OD_LO_OK, 1);
		if (__atomic_load_n(&h->od->consecutive_lo, __ATOMIC_RELAXED))
			__atomic_store_n(&h->od->consecutive_lo, 0, __ATOMIC_RELAXED);
		return;
	case OUTLIER_LOCAL_CONNECT_FAILED:
	case OUTLIER_LOCAL_RESET:
	case OUTLIER_LOCAL_TIMEOUT:
		break;
	}
	host_stat_add(h, sh, HOST_OD_LO_ERR, 1);
	int nl = __atomic_add_fetch(&h->od->consecutive_lo, 1, __ATOMIC_RELAXED);
	if (od->consecutive_lo && (uint32_t)nl == od->consecutive_lo)
		od_post(cl, h, OD_LOCAL);
}

int outlier_parse(struct cfg_ctx *c, const json_t *o, struct outlier_cfg *od)
{
	static const char *const f[] = { "consecutive_5xx", "consecutive_gateway_failure",
					 "enforcing_consecutive_5xx", "enforcing_consecutive_gateway_failure",
					 "interval", "base_ejection_time", "max_ejection_time",
					 "max_ejection_percent", "success_rate_minimum_hosts",
					 "success_rate_request_volume", "success_rate_stdev_factor",
					 "enforcing_success_rate", "failure_percentage_minimum_hosts",
					 "failure_percentage_request_volume", "failure_percentage_threshold",
					 "enforcing_failure_percentage", "split_external_local_origin_errors",
					 "consecutive_local_origin_failure",
					 "enforcing_consecutive_local_origin_failure",
					 "enforcing_local_origin_success_rate",
					 "enforcing_failure_percentage_local_origin", NULL };
	od->enabled = true;
	od->consecutive_5xx = 5;
	od->consecutive_gw = 5;
	od->enforcing_5xx = 100;
	od->enforcing_gw = 0;
	od->interval_ms = 10000;
	od->base_ejection_ms = 30000;
	od->max_ejection_ms = 300000;
	od->max_ejection_percent = 10;
	od->sr_min_hosts = 5;
	od->sr_volume = 100;
	od->sr_stdev_factor = 1900;
	od->enforcing_sr = 100;
	od->fp_min_hosts = 5;
	od->fp_volume = 50;
	od->fp_threshold = 85;
	od->enforcing_fp = 0;
	od->split = false;
	od->consecutive_lo = 5;
	od->enforcing_lo = 100;
	od->enforcing_lo_sr = 100;
	od->enforcing_lo_fp = 0;
	if (cfg_expect_object(c, o) || cfg_check_fields(c, o, f) ||
	    cfg_u32(c, o, "success_rate_minimum_hosts", &od->sr_min_hosts) ||
	    cfg_u32(c, o, "success_rate_request_volume", &od->sr_volume) ||
	    cfg_u32(c, o, "success_rate_stdev_factor", &od->sr_stdev_factor) ||
	    cfg_u32(c, o, "enforcing_success_rate", &od->enforcing_sr) ||
	    cfg_u32(c, o, "failure_percentage_minimum_hosts", &od->fp_min_hosts) ||
	    cfg_u32(c, o, "failure_percentage_request_volume", &od->fp_volume) ||
	    cfg_u32(c, o, "failure_percentage_threshold", &od->fp_threshold) ||
	    cfg_u32(c, o, "enforcing_failure_percentage", &od->enforcing_fp) ||
	    cfg_u32(c, o, "consecutive_5xx", &od->consecutive_5xx) ||
	    cfg_u32(c, o, "consecutive_gateway_failure", &od->consecutive_gw) ||
	    cfg_u32(c, o, "enforcing_consecutive_5xx", &od->enforcing_5xx) ||
	    cfg_u32(c, o, "enforcing_consecutive_gateway_failure", &od->enforcing_gw) ||
	    cfg_duration_ms(c, o, "interval", &od->interval_ms) ||
	    cfg_duration_ms(c, o, "base_ejection_time", &od->base_ejection_ms) ||
	    cfg_duration_ms(c, o, "max_ejection_time", &od->max_ejection_ms) ||
	    cfg_u32(c, o, "max_ejection_percent", &od->max_ejection_percent) ||
	    cfg_bool(c, o, "split_external_local_origin_errors", &od->split) ||
	    cfg_u32(c, o, "consecutive_local_origin_failure", &od->consecutive_lo) ||
	    cfg_u32(c, o, "enforcing_consecutive_local_origin_failure", &od->enforcing_lo) ||
	    cfg_u32(c, o, "enforcing_local_origin_success_rate", &od->enforcing_lo_sr) ||
	    cfg_u32(c, o, "enforcing_failure_percentage_local_origin", &od->enforcing_lo_fp))
		return RM_ERROR;
	if (od->enforcing_5xx > 100 || od->enforcing_gw > 100 || od->max_ejection_percent > 100 ||
	    od->enforcing_sr > 100 || od->enforcing_fp > 100 || od->fp_threshold > 100 ||
	    od->enforcing_lo > 100 || od->enforcing_lo_sr > 100 || od->enforcing_lo_fp > 100) {
		cfg_fail(c, "percentages must be in 0..100");
		return RM_ERROR;
	}
	if (!od->interval_ms)
		od->interval_ms = 10000;
	return RM_OK;
}

struct stats_scope *outlier_stats_new(struct stats_store *st, const char *cluster)
{
	char *scope = xasprintf("cluster.%s.outlier_detection", cluster);
	struct stats_scope *s = stats_scope_new_main(st, scope, "cluster.outlier_detection",
						"envoy_cluster_name", cluster, od_stat_desc, OD_STATS_N);
	free(scope);
	return s;
}

void outlier_start(struct cluster *cl, struct event_base *base)
{
	struct timeval tv = { (time_t)(cl->ext->od.interval_ms / 1000),
			      (suseconds_t)(cl->ext->od.interval_ms % 1000) * 1000 };
	cluster_ext_mut(cl)->od_timer = event_new(base, -1, EV_PERSIST, od_sweep, cl);
	event_add(cl->ext->od_timer, &tv);
}
