/* cluster.h - upstream clusters, hosts, host sets and load balancing.
 *
 * Threads: a cluster's config is immutable once built.  Its membership (the
 * host set) is owned by the main thread, which builds a new immutable,
 * refcounted host set on every change (DNS answer) and posts it to every
 * worker; each worker keeps its own current host set and LB state in
 * cluster->workers[w], touched by worker w only. */
#ifndef REMORA_UPSTREAM_CLUSTER_H
#define REMORA_UPSTREAM_CLUSTER_H

#include <sys/socket.h>
#include <event2/event.h>
#include "../config/cfg.h"
#include "../../stats/stats.h"
#include "dns.h"
#include "lb_hash.h"

struct worker;
struct pool;
struct build_ctx;
struct hc_cfg;
struct health_checker;
struct odst;

#define CLUSTER_STATS(X)                                                           \
	X(COUNTER, upstream_cx_total) X(GAUGE, upstream_cx_active)                \
	X(COUNTER, upstream_cx_http1_total) X(COUNTER, upstream_cx_connect_fail)  \
	X(COUNTER, upstream_cx_connect_timeout) X(COUNTER, upstream_cx_destroy)   \
	X(COUNTER, upstream_cx_destroy_local) X(COUNTER, upstream_cx_destroy_remote) \
	X(COUNTER, upstream_cx_idle_timeout) X(COUNTER, upstream_cx_max_requests) \
	X(COUNTER, upstream_cx_none_healthy) X(COUNTER, upstream_cx_protocol_error) \
	X(COUNTER, upstream_cx_rx_bytes_total) X(COUNTER, upstream_cx_tx_bytes_total) \
	X(HISTOGRAM, upstream_cx_connect_ms) X(HISTOGRAM, upstream_cx_length_ms)  \
	X(COUNTER, upstream_rq_total) X(GAUGE, upstream_rq_active)                \
	X(COUNTER, upstream_rq_completed) X(COUNTER, upstream_rq_timeout)         \
	X(COUNTER, upstream_rq_rx_reset) X(COUNTER, upstream_rq_tx_reset)         \
	X(COUNTER, upstream_rq_pending_total) X(GAUGE, upstream_rq_pending_active) \
	X(COUNTER, upstream_rq_pending_failure_eject) X(HISTOGRAM, upstream_rq_time) \
	X(GAUGE, membership_healthy) X(GAUGE, membership_total)                   \
	X(GAUGE, membership_degraded) X(GAUGE, membership_excluded)               \
	X(COUNTER, membership_change) X(COUNTER, update_attempt)                  \
	X(COUNTER, update_success) X(COUNTER, update_failure)                     \
	X(COUNTER, update_no_rebuild) X(COUNTER, lb_healthy_panic)                \
	X(COUNTER, upstream_rq_retry) X(COUNTER, upstream_rq_retry_success)       \
	X(COUNTER, upstream_rq_retry_overflow) X(COUNTER, upstream_rq_retry_limit_exceeded) \
	X(COUNTER, upstream_rq_retry_backoff_exponential)                         \
	X(COUNTER, upstream_rq_per_try_timeout) X(COUNTER, upstream_rq_pending_overflow) \
	X(COUNTER, upstream_rq_per_try_idle_timeout)                              \
	X(COUNTER, upstream_cx_overflow)

enum { CLUSTER_STATS(STATS_ENUM) CLUSTER_STATS_N };

/* cluster.<name>.circuit_breakers.default.* gauges (main thread, 1 s tick). */
#define CB_STATS(X) X(GAUGE, cx_open) X(GAUGE, cx_pool_open) X(GAUGE, rq_pending_open) \
	X(GAUGE, rq_open) X(GAUGE, rq_retry_open) X(GAUGE, remaining_cx)                \
	X(GAUGE, remaining_pending) X(GAUGE, remaining_rq) X(GAUGE, remaining_retries)
#define CB_ENUM(type, name) CB_##name,
enum { CB_STATS(CB_ENUM) CB_STATS_N };

/* Per-host counters kept per shard (for /clusters). */
enum { HOST_CX_TOTAL, HOST_CX_ACTIVE, HOST_CX_CONNECT_FAIL, HOST_RQ_TOTAL, HOST_RQ_ACTIVE,
       HOST_RQ_ERROR, HOST_RQ_SUCCESS, HOST_RQ_TIMEOUT, HOST_STATS_N };

enum cluster_type { CLUSTER_STATIC, CLUSTER_STRICT_DNS, CLUSTER_LOGICAL_DNS, CLUSTER_ORIGINAL_DST };
enum lb_policy { LB_ROUND_ROBIN, LB_LEAST_REQUEST, LB_RANDOM, LB_RING_HASH, LB_MAGLEV,
		 LB_PEAK_EWMA };

/* Peak-EWMA state of one host as seen by one worker (only that worker
 * touches it).  Padded to a cache line so workers do not false-share. */
struct host_ewma {
	_Alignas(64) double cost_us;        /* peak-sensitive EWMA of the response latency */
	uint64_t stamp_us;                  /* time of cost_us; 0 = no sample yet */
};

#define HOST_FAILED_ACTIVE_HC 0x1          /* health_flags */
#define HOST_FAILED_OUTLIER   0x2

struct host {
	int refcnt;                         /* atomic; host sets and pools hold refs */
	int health_flags;                   /* HOST_FAILED_*; written by the main thread */
	int consecutive_5xx;                /* atomic; outlier detection (all workers) */
	int consecutive_gw;                 /* atomic; consecutive gateway failures */
	uint32_t ejections;                 /* main thread: times ejected (multiplier) */
	uint64_t ejected_until_ms;          /* main thread */
	int64_t od_prev_ok, od_prev_err;    /* main thread: counters at the last sweep */
	int cb_cx;                          /* atomic: connections to this host (all workers) */
	struct sockaddr_storage addr;
	socklen_t addrlen;
	char addr_str[64];                  /* "127.0.0.1:8080" / "[::1]:8080" */
	char *hostname;                     /* owned, may be NULL (DNS name it came from) */
	uint32_t weight;
	unsigned nshards;
	int64_t *stats;                     /* owned; [nshards][HOST_STATS_N] */
	struct pool **pools;                /* owned array [nworkers]; slot w owned by worker w */
	struct host_ewma *ewma;             /* owned [nworkers] (aligned_alloc), slot w owned by
					       worker w; NULL unless the cluster is peak-EWMA */
};

struct hostset {
	int refcnt;                         /* atomic */
	size_t n;
	struct host **hosts;                /* owned array; each element holds a ref */
	uint32_t total_weight;
	bool weighted;                      /* weights differ */
	/* The hosts load balancing uses: the healthy ones, or all of them when
	 * fewer than healthy_panic_threshold % are healthy (panic). */
	struct host **active;               /* owned array (no extra refs) or == hosts */
	size_t nactive;
	uint32_t active_weight;
	bool active_weighted;
	bool panic;
	struct lb_hash_table *lbt;          /* owned; RING_HASH/MAGLEV lookup table built
					       by the main thread for this set, else NULL */
};

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

/* Worker w's view of a cluster. */
struct cluster_worker {
	struct hostset *hs;                 /* ref held; NULL until the first set arrives */
	uint64_t rr;                        /* round-robin cursor */
	int64_t *cur_weight;                /* owned; smooth-WRR state [hs->nactive] when weighted */
	double *lr_cur;                     /* owned; LEAST_REQUEST dynamic-weight WRR state
					       [hs->nactive] when weighted */
};

struct cluster;
struct dns_cb_arg {                         /* callback argument of one endpoint's query */
	struct cluster *cl;
	size_t idx;
};

struct endpoint_cfg {                       /* one lb_endpoints[] entry */
	char *address;                      /* owned: IP literal or DNS name */
	uint16_t port;
	uint32_t weight;
};

struct cluster {
	int refcnt;                         /* atomic; snapshots hold refs */
	char *name;                         /* owned */
	enum cluster_type type;
	enum lb_policy lb;
	uint32_t lr_choice_count;           /* least_request_lb_config.choice_count (2) */
	double lr_bias;                     /* least_request_lb_config.active_request_bias (1.0) */
	uint64_t ewma_decay_us;             /* peak_ewma decay_time (10 s) */
	uint64_t ewma_default_rtt_us;       /* peak_ewma default_rtt (10 ms) */
	struct lb_hash_cfg hash_cfg;        /* ring_hash_lb_config / maglev_lb_config */
	uint64_t connect_timeout_ms;        /* default 5000 */
	uint32_t buffer_limit;              /* per_connection_buffer_limit_bytes (1 MiB) */
	uint32_t max_requests_per_connection; /* 0 = unlimited */
	uint64_t idle_timeout_ms;           /* upstream idle timeout (1 h default) */
	uint64_t dns_refresh_ms;            /* dns_refresh_rate (5000) */
	bool respect_dns_ttl;
	enum dns_family dns_family;
	struct sockaddr_storage *resolvers; /* owned [nresolvers] */
	size_t nresolvers;
	struct endpoint_cfg *endpoints;     /* owned [nendpoints] */
	size_t nendpoints;
	json_t *json;                       /* owned ref, for /config_dump */
	struct stats_scope *stats;          /* owned */
	struct stats_scope *cb_stats;       /* owned: circuit_breakers.default.* */
	struct stats_scope *od_stats;       /* owned: outlier_detection.*, may be NULL */
	struct outlier_cfg od;
	uint32_t panic_threshold;           /* common_lb_config.healthy_panic_threshold %, default 50 */
	struct event *od_timer;             /* owned: unejection sweep (main thread) */
	struct hc_cfg *hc_cfg;              /* owned: health_checks[0], NULL if none */
	struct stats_scope *hc_stats;       /* owned: health_check.*, NULL if none */
	struct health_checker *hc;          /* owned, main thread; from cluster_start */
	unsigned nworkers;
	struct cluster_worker *workers;     /* owned [nworkers] */
	/* main thread only */
	struct hostset *hs;                 /* current host set (ref) */
	struct dns_resolver *dns;           /* owned, STRICT_DNS only */
	struct dns_query **queries;         /* owned [nendpoints], pending queries */
	struct dns_cb_arg *dns_args;        /* owned [nendpoints] */
	struct sockaddr_storage **dns_addrs; /* owned per endpoint: last answer */
	size_t *dns_naddrs;
	size_t dns_pending;                 /* queries in flight this round */
	struct event *dns_timer;            /* owned */
	uint32_t dns_min_ttl_s;             /* smallest TTL of this round */
	/* circuit_breakers.thresholds (DEFAULT priority); limits are cluster-wide
	 * across workers, counted with atomics */
	uint32_t max_connections, max_pending, max_requests, max_retries;
	uint32_t max_host_connections;      /* per_host_thresholds.max_connections, 0 = none */
	bool retry_budget;                  /* thresholds.retry_budget set: replaces max_retries */
	double budget_percent;              /* default 20 */
	uint32_t min_retry_concurrency;     /* default 3 */
	bool track_remaining;
	int cb_cx, cb_pending, cb_rq, cb_retries;   /* atomic current counts */
	struct odst *odst;                  /* owned: ORIGINAL_DST state (original_dst.h), else NULL */
	bool initialized;                   /* first membership known */
	void (*on_init)(struct cluster *cl, void *arg); /* called once, see cluster_start */
	void *on_init_arg;
};

/* Parse a Cluster.  Returns NULL after cfg_fail(). */
struct cluster *cluster_parse(struct cfg_ctx *c, const json_t *j, struct build_ctx *b);
struct cluster *cluster_ref(struct cluster *cl);
void cluster_unref(struct cluster *cl);              /* main thread; frees at 0 */

/* Main thread: begin membership (STATIC: immediately; DNS: first query).
 * on_init(arg) is called once the first membership is known. */
void cluster_start(struct cluster *cl, struct event_base *base,
		   void (*on_init)(struct cluster *cl, void *arg), void *arg);

/* Worker side. */
void cluster_worker_set_hostset(struct cluster *cl, unsigned w, struct hostset *hs); /* takes ref */
struct host *cluster_pick_host(struct cluster *cl, struct worker *w);
/* Same, at an explicit monotonic time in microseconds (peak-EWMA decays with
 * time; the other policies ignore now_us).  For tests. */
struct host *cluster_pick_host_at(struct cluster *cl, struct worker *w, uint64_t now_us);
/* Worker w got the response head of a request to h rtt_us after it started:
 * feed the peak-EWMA latency estimate (no-op for other policies). */
void cluster_lb_observe(struct cluster *cl, struct worker *w, struct host *h, uint64_t rtt_us);
void cluster_lb_observe_at(struct cluster *cl, struct worker *w, struct host *h,
			   uint64_t rtt_us, uint64_t now_us);
/* Peak-EWMA cost of h for worker w at now_us: the decayed latency estimate
 * times (active requests + 1), divided by the weight.  Exposed for tests. */
double cluster_ewma_cost(const struct cluster *cl, const struct worker *w,
			 const struct host *h, uint64_t now_us);
/* RING_HASH / MAGLEV: the host owning hash in this worker's host set; with
 * have_hash false (no hash_policy produced a hash) a random one, as Envoy.
 * Other policies ignore the hash (same as cluster_pick_host). */
struct host *cluster_pick_host_hash(struct cluster *cl, struct worker *w, uint64_t hash,
				    bool have_hash);
static inline bool cluster_lb_is_hash(const struct cluster *cl)
{
	return cl->lb == LB_RING_HASH || cl->lb == LB_MAGLEV;
}

/* A new host of cl (ref 1) with per-worker pool slots and stats shards. */
struct host *host_new(const struct cluster *cl, const struct sockaddr_storage *ss,
		      const char *hostname, uint32_t weight);
struct host *host_ref(struct host *h);
void host_unref(struct host *h);
void hostset_unref(struct hostset *hs);
static inline void host_stat_add(struct host *h, unsigned shard, int idx, int64_t v)
{
	h->stats[shard * HOST_STATS_N + idx] += v;
}
int64_t host_stat(const struct host *h, int idx);   /* summed over shards */

/* A request to h finished with status (0: connect failure / reset /
 * timeout).  Any worker; feeds outlier detection. */
void cluster_outlier_report(struct cluster *cl, struct host *h, int status);

/* Concurrent retries allowed now: max_retries, or the retry budget. */
uint32_t cluster_retry_limit(const struct cluster *cl);
/* Main thread: same hosts, new health flags: rebuild the active subset
 * and publish a new host set to the workers. */
void cluster_republish(struct cluster *cl);
/* Main thread: the health checker finished its first round (every host
 * checked once); the cluster may now report itself initialized. */
void cluster_hc_warmed(struct cluster *cl);

/* Refresh the circuit-breaker gauges from the live counts (main thread). */
void cluster_update_cb_gauges(struct cluster *cl);

/* Text for /clusters (Envoy format) appended to out. */
void cluster_dump_admin(const struct cluster *cl, struct evbuffer *out);

/* Hook used by cluster.c to publish a host set to workers; set by the server. */
extern void (*cluster_publish_hook)(struct cluster *cl, struct hostset *hs);

#endif
