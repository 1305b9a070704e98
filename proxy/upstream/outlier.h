/* outlier.h - outlier detection (cluster.outlier_detection): passive health
 * checking that ejects hosts from load balancing for a while.
 *
 * Threads: the config is immutable.  Filters on any worker report results
 * with cluster_outlier_report(); ejection decisions, the interval sweep and
 * the stats scope belong to the main thread. */
#ifndef REMORA_UPSTREAM_OUTLIER_H
#define REMORA_UPSTREAM_OUTLIER_H

#include <stdbool.h>
#include <stdint.h>
#include <event2/event.h>
#include <jansson.h>
#include "../config/cfg.h"
#include "../../stats/stats.h"

struct cluster;
struct host;

struct outlier_cfg {                        /* cluster.outlier_detection */
	bool enabled;
	uint32_t consecutive_5xx;           /* default 5 */
	uint32_t consecutive_gw;            /* consecutive_gateway_failure, default 5 */
	uint32_t enforcing_5xx;             /* percent, default 100 */
	uint32_t enforcing_gw;              /* percent, default 0 */
	uint64_t interval_ms;               /* default 10 s */
	uint64_t base_ejection_ms;          /* default 30 s */
	uint64_t max_ejection_ms;           /* default 300 s */
	uint32_t max_ejection_percent;      /* default 10 */
	/* success rate: hosts below mean - stdev_factor/1000 x stdev are outliers */
	uint32_t sr_min_hosts, sr_volume, sr_stdev_factor, enforcing_sr;  /* 5, 100, 1900, 100 */
	/* failure percentage: hosts at or above the threshold are outliers */
	uint32_t fp_min_hosts, fp_volume, fp_threshold, enforcing_fp;     /* 5, 50, 85, 0 */
	/* split_external_local_origin_errors: locally originated results feed
	 * their own detectors instead of being mapped to 503/504 */
	bool split;
	uint32_t consecutive_lo;            /* consecutive_local_origin_failure, default 5 */
	uint32_t enforcing_lo;              /* enforcing_consecutive_local_origin_failure, 100 */
	uint32_t enforcing_lo_sr;           /* enforcing_local_origin_success_rate, 100 */
	uint32_t enforcing_lo_fp;           /* enforcing_failure_percentage_local_origin, 0 */
};

#define OD_STATS(X) X(GAUGE, ejections_active) X(COUNTER, ejections_total)                    \
	X(COUNTER, ejections_overflow) X(COUNTER, ejections_enforced_total)                    \
	X(COUNTER, ejections_enforced_consecutive_5xx) X(COUNTER, ejections_detected_consecutive_5xx) \
	X(COUNTER, ejections_enforced_consecutive_gateway_failure)                             \
	X(COUNTER, ejections_detected_consecutive_gateway_failure)                             \
	X(COUNTER, ejections_enforced_success_rate) X(COUNTER, ejections_detected_success_rate) \
	X(COUNTER, ejections_enforced_failure_percentage)                                      \
	X(COUNTER, ejections_detected_failure_percentage)                                      \
	X(COUNTER, ejections_enforced_consecutive_local_origin_failure)                        \
	X(COUNTER, ejections_detected_consecutive_local_origin_failure)                        \
	X(COUNTER, ejections_enforced_local_origin_success_rate)                               \
	X(COUNTER, ejections_detected_local_origin_success_rate)                               \
	X(COUNTER, ejections_enforced_local_origin_failure_percentage)                         \
	X(COUNTER, ejections_detected_local_origin_failure_percentage)
#define OD_ENUM(type, name) OD_##name,
enum { OD_STATS(OD_ENUM) OD_STATS_N };

/* What a filter saw of one attempt to a host (Envoy's Outlier::Result plus
 * the HTTP status).  Local-origin results are events of Envoy's own making
 * (no usable answer from the host); external-origin ones are the host's
 * answer. */
enum outlier_result {
	OUTLIER_EXT_ORIGIN,            /* response headers with this HTTP status */
	OUTLIER_LOCAL_CONNECT_FAILED,  /* connect refused / failed / connect timeout */
	OUTLIER_LOCAL_TIMEOUT,         /* request timed out waiting for the response */
	OUTLIER_LOCAL_RESET,           /* connection reset / closed before a response */
	OUTLIER_LOCAL_SUCCESS,         /* connected and a response head received; an
					  HTTP status follows as OUTLIER_EXT_ORIGIN */
	OUTLIER_LOCAL_SUCCESS_FINAL,   /* connected, and that is the whole result (TCP) */
};

/* Parse cluster.outlier_detection into od (defaults filled in).  RM_OK, or
 * RM_ERROR after cfg_fail(). */
int outlier_parse(struct cfg_ctx *c, const json_t *o, struct outlier_cfg *od);
/* The cluster.<name>.outlier_detection.* scope (caller owns it). */
struct stats_scope *outlier_stats_new(struct stats_store *st, const char *cluster);
/* Main thread: start the interval timer (cl->od_timer, owned by the cluster). */
void outlier_start(struct cluster *cl, struct event_base *base);

/* A filter on a worker saw result r of an attempt to h (status: the HTTP
 * status for OUTLIER_EXT_ORIGIN, else ignored).  Without
 * split_external_local_origin_errors, local-origin failures count as 503
 * (connect failure, reset) or 504 (timeout), LOCAL_SUCCESS_FINAL as 200 and
 * LOCAL_SUCCESS not at all, as Envoy.  No-op when h is NULL or the cluster
 * has no outlier detection.  Lock-free: relaxed atomics on h, and this
 * worker's shard of the host stats; a threshold crossing posts one message
 * to the main thread. */
void cluster_outlier_report(struct cluster *cl, struct host *h, enum outlier_result r,
			    int status);

/* Main thread: one interval (unejects hosts whose time is up, runs the
 * success-rate and failure-percentage detectors).  The timer calls it; tests
 * may call it directly. */
void outlier_interval(struct cluster *cl);
/* Main thread: write ejections_active now (cluster_set_gauges_owner); a
 * cluster without outlier detection: nothing. */
void outlier_gauges(struct cluster *cl);

/* For tests: the clock of ejection times (default now_ms) and the way a
 * worker hands a threshold crossing to the main thread (default main_post;
 * a test may run fn(arg) at once). */
extern uint64_t (*outlier_clock)(void);
extern void (*outlier_post)(void (*fn)(void *arg), void *arg);

#endif
