/* original_dst.h - ORIGINAL_DST clusters (transparent proxying).
 *
 * The cluster has no configured endpoints: a connection or request goes to
 * where the downstream connection was going before iptables redirected it
 * (its restored local address, see filters/listener/original_dst), or, with
 * original_dst_lb_config.use_http_header, to the address in the
 * x-envoy-original-dst-host header (or http_header_name).
 *
 * Hosts are made on demand and kept per worker: each worker has its own
 * address -> host table, touched only by that worker, so picking a host
 * takes no lock and allocates only the first time a worker sees a
 * destination.  A per-worker timer removes hosts unused for a
 * cleanup_interval (Envoy's rule: a host not picked since the previous
 * sweep goes); their pools close idle connections at once and the busy
 * ones when done.  The cost of per-worker tables: the same
 * destination is a separate host (own pool) on each worker, and the
 * membership gauges count (worker, destination) pairs. */
#ifndef REMORA_UPSTREAM_ORIGINAL_DST_H
#define REMORA_UPSTREAM_ORIGINAL_DST_H

#include "cluster.h"

struct downstream;
struct http_headers;

/* cluster.<name>.original_dst_host_invalid: the override header (or the
 * connection) did not give a usable IP:port. */
#define ODST_STATS(X) X(COUNTER, original_dst_host_invalid)
enum { ODST_STATS(STATS_ENUM) ODST_STATS_N };

struct odst_entry {
	struct host *h;                     /* ref held; NULL = free slot */
	bool used;                          /* picked since the last sweep */
};

struct odst_worker {                        /* touched by its worker only */
	struct odst_entry *tab;             /* owned open-addressing table [cap] */
	size_t cap, n;
	struct event *timer;                /* owned, on the worker's base: cleanup sweep */
	struct worker *w;                   /* not owned */
	struct cluster *cl;                 /* not owned (the cluster owns this) */
};

struct odst {                               /* cluster->odst, immutable but for workers[] */
	bool use_http_header;
	char *header;                       /* owned: lowercase header name */
	uint16_t port_override;             /* upstream_port_override, 0 = none */
	uint64_t cleanup_ms;                /* cleanup_interval (5 s) */
	struct stats_scope *stats;          /* owned: ODST_STATS */
	unsigned nworkers;
	struct odst_worker *workers;        /* owned [nworkers] */
};

/* cluster_parse(): for a type: ORIGINAL_DST cluster (cl->type set), check
 * lb_policy is CLUSTER_PROVIDED (*lb: the lb_names index parsed; set to
 * ROUND_ROBIN's 0 so the generic code accepts it), that there is no
 * load_assignment, health_checks or outlier_detection, and parse
 * original_dst_lb_config and cleanup_interval into cl->odst.  For other
 * types: reject those two fields.  RM_OK / RM_ERROR after cfg_fail(). */
int original_dst_parse(struct cfg_ctx *c, const json_t *j, struct cluster *cl, int *lb,
		       struct build_ctx *b);
/* Free cl->odst (main thread; workers have exited). NULL ok. */
void original_dst_free(struct odst *o);

/* Worker w: the host for this downstream connection / request (headers may
 * be NULL: TCP).  NULL when there is no original destination (the
 * connection was not redirected and no usable header).  Borrowed: take a
 * ref to keep it. */
struct host *original_dst_pick(struct cluster *cl, struct worker *w, const struct downstream *d,
			       const struct http_headers *req);
/* Worker w is exiting: drop its hosts and timer (before its pools go). */
void original_dst_worker_exit(struct cluster *cl, struct worker *w);
/* Hosts worker w currently holds (tests). */
size_t original_dst_worker_hosts(const struct cluster *cl, const struct worker *w);

#endif
