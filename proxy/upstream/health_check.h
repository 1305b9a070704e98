/* health_check.h - active health checking of a cluster's hosts
 * (Envoy config.core.v3.HealthCheck: HTTP/1.1 and TCP checkers).
 *
 * Threads: everything here runs on the main thread, on the main event_base.
 * The checker belongs to its cluster: created by cluster_start(), freed by
 * cluster_free().  One session per host of the current host set; a session
 * sets or clears HOST_FAILED_ACTIVE_HC on its host and asks the cluster to
 * republish its host set (cluster_republish) when the flag changes.
 *
 * Semantics follow Envoy:
 *  - a host starts with HOST_FAILED_ACTIVE_HC (unhealthy until checked) and
 *    the cluster only reports itself initialized once every host had one
 *    check (Envoy's "single active health check round" at startup);
 *  - the first check of a host decides alone (one success makes it healthy);
 *  - afterwards healthy_threshold consecutive successes clear the flag and
 *    unhealthy_threshold consecutive failures set it, except that an HTTP
 *    status outside expected_statuses and retriable_statuses marks the host
 *    unhealthy at once;
 *  - timeouts and network failures (refused, reset, closed) count against
 *    unhealthy_threshold and also bump network_failure. */
#ifndef REMORA_UPSTREAM_HEALTH_CHECK_H
#define REMORA_UPSTREAM_HEALTH_CHECK_H

#include <event2/event.h>
#include "../config/cfg.h"
#include "../../stats/stats.h"

struct cluster;

#define HC_STATS(X) X(COUNTER, attempt) X(COUNTER, success) X(COUNTER, failure)            \
	X(COUNTER, network_failure) X(COUNTER, passive_failure) X(COUNTER, verify_cluster) \
	X(GAUGE, healthy) X(GAUGE, degraded)
#define HC_ENUM(type, name) HC_##name,
enum { HC_STATS(HC_ENUM) HC_STATS_N };
extern const struct stat_desc hc_stat_desc[HC_STATS_N];

enum hc_kind { HC_HTTP, HC_TCP };

struct hc_bytes {                   /* one Payload, decoded */
	uint8_t *data;              /* owned */
	size_t len;
};

struct hc_range {                   /* Int64Range: [start, end) */
	int64_t start, end;
};

/* A parsed health_checks[] entry; immutable once built. */
struct hc_cfg {
	enum hc_kind kind;
	uint64_t timeout_ms, interval_ms, interval_jitter_ms, initial_jitter_ms;
	uint32_t interval_jitter_percent;
	uint64_t no_traffic_ms;         /* accepted; unused (see docs) */
	uint64_t unhealthy_interval_ms;   /* default interval */
	uint64_t unhealthy_edge_ms;       /* default unhealthy_interval */
	uint64_t healthy_edge_ms;         /* default interval */
	uint32_t unhealthy_threshold, healthy_threshold;
	bool reuse_connection;          /* default true */
	/* HTTP */
	char *request;                  /* owned: the whole request head, prebuilt */
	size_t request_len;
	struct hc_range *expected;      /* owned [nexpected]; default [200, 201) */
	size_t nexpected;
	struct hc_range *retriable;     /* owned [nretriable] */
	size_t nretriable;
	/* TCP */
	struct hc_bytes send;           /* empty: nothing written */
	struct hc_bytes *receive;       /* owned [nreceive]; none: connect-only */
	size_t nreceive;
};

/* Parse the cluster's health_checks list (c is positioned on it).  *out is
 * NULL for an empty list.  cluster_name is the default HTTP host. */
int hc_parse(struct cfg_ctx *c, const json_t *list, const char *cluster_name, struct hc_cfg **out);
void hc_cfg_free(struct hc_cfg *cfg);        /* NULL ok */

/* TCP receive matcher (Envoy's): every expected segment is found in buf, in
 * order, each after the end of the previous match. */
bool hc_tcp_match(const struct hc_bytes *segs, size_t nsegs, const uint8_t *buf, size_t len);
/* status in any of ranges[0..n) */
bool hc_status_in(const struct hc_range *r, size_t n, int64_t status);

struct health_checker;

/* Main thread.  The checker reads cl->hc_cfg and cl->hc_stats. */
struct health_checker *health_checker_new(struct cluster *cl, struct event_base *base);
/* The cluster's host set changed membership: start sessions for new hosts,
 * stop those of hosts that left. */
void health_checker_sync(struct health_checker *hc);
/* Every host present at the first sync has had its first check. */
bool health_checker_warmed(const struct health_checker *hc);
void health_checker_free(struct health_checker *hc);   /* NULL ok; cancels all */
/* Write the healthy/degraded gauges now (cluster_set_gauges_owner); NULL ok. */
void health_checker_gauges(struct health_checker *hc);

#endif
