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
};

#define OD_STATS(X) X(GAUGE, ejections_active) X(COUNTER, ejections_total)                    \
	X(COUNTER, ejections_overflow) X(COUNTER, ejections_enforced_total)                    \
	X(COUNTER, ejections_enforced_consecutive_5xx) X(COUNTER, ejections_detected_consecutive_5xx) \
	X(COUNTER, ejections_enforced_consecutive_gateway_failure)                             \
	X(COUNTER, ejections_detected_consecutive_gateway_failure)                             \
	X(COUNTER, ejections_enforced_success_rate) X(COUNTER, ejections_detected_success_rate) \
	X(COUNTER, ejections_enforced_failure_percentage)                                      \
	X(COUNTER, ejections_detected_failure_percentage)
#define OD_ENUM(type, name) OD_##name,
enum { OD_STATS(OD_ENUM) OD_STATS_N };

/* Parse cluster.outlier_detection into od (defaults filled in).  RM_OK, or
 * RM_ERROR after cfg_fail(). */
int outlier_parse(struct cfg_ctx *c, const json_t *o, struct outlier_cfg *od);
/* The cluster.<name>.outlier_detection.* scope (caller owns it). */
struct stats_scope *outlier_stats_new(struct stats_store *st, const char *cluster);
/* Main thread: start the interval timer (cl->od_timer, owned by the cluster). */
void outlier_start(struct cluster *cl, struct event_base *base);

/* A request to h finished with status (0: connect failure / reset /
 * timeout).  Any worker; feeds outlier detection. */
void cluster_outlier_report(struct cluster *cl, struct host *h, int status);

#endif
