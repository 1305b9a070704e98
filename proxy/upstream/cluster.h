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
#include "../http/h2_options.h"
#include "../../stats/stats.h"
#include "dns.h"
#include "lb_hash.h"
#include "outlier.h"

struct worker;
struct pool;
struct build_ctx;
struct hc_cfg;
struct health_checker;
struct odst;
struct tls_ctx;
struct xblob;

/* cluster.<name>.* in one split scope (stats_scope_new_split): the stats
 * only workers write first, then those both write (ORIGINAL_DST workers
 * count their own membership), then those only the main thread writes
 * (membership and update counts, the EDS subscription stats, the
 * circuit-breaker gauges), so an idle cluster stores nothing per worker and
 * its main-thread values only.
 *
 * update_attempt/_success/_failure count service-discovery updates: DNS
 * rounds, and for EDS clusters the EDS subscription's responses (counted by
 * xds/ads.c with update_rejected, update_empty, init_fetch_timeout, version,
 * update_time: Envoy roots the EDS subscription stats in the cluster's
 * scope). */
#define CLUSTER_WORKER_STATS(X)                                                    \
	X(COUNTER, upstream_cx_total) X(GAUGE, upstream_cx_active)                \
	X(COUNTER, upstream_cx_http1_total) X(COUNTER, upstream_cx_connect_fail)  \
	X(COUNTER, upstream_cx_http2_total)                                       \
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
	X(COUNTER, lb_healthy_panic)                                              \
	X(COUNTER, upstream_rq_retry) X(COUNTER, upstream_rq_retry_success)       \
	X(COUNTER, upstream_rq_retry_overflow) X(COUNTER, upstream_rq_retry_limit_exceeded) \
	X(COUNTER, upstream_rq_retry_backoff_exponential)                         \
	X(COUNTER, upstream_rq_per_try_timeout) X(COUNTER, upstream_rq_pending_overflow) \
	X(COUNTER, upstream_rq_per_try_idle_timeout)                              \
	X(COUNTER, upstream_cx_overflow)
#define CLUSTER_SHARED_STATS(X)                                                    \
	X(GAUGE, membership_healthy) X(GAUGE, membership_total) X(COUNTER, membership_change)
#define CLUSTER_MAIN_STATS(X)                                                      \
	X(COUNTER, update_attempt) X(COUNTER, update_success) X(COUNTER, update_no_rebuild)
#define CLUSTER_STATS(X) CLUSTER_WORKER_STATS(X) CLUSTER_SHARED_STATS(X) CLUSTER_MAIN_STATS(X)
/* ... then these (main thread only too: the EDS subscription stats), whose
 * enumerators are prefixed (CL_version: "version" and "update_time" are
 * common variable names) ... */
#define CLUSTER_SUB_STATS(X) X(GAUGE, version) X(GAUGE, update_time)
/* ... then the main-thread stats that are rarely anything but zero, stored
 * lazily (stats_lazy_set, stats_main_add: no storage until one is not
 * zero), with the circuit-breaker gauges below after them. */
#define CLUSTER_LAZY_STATS(X)                                                      \
	X(GAUGE, membership_degraded) X(GAUGE, membership_excluded) X(COUNTER, update_failure)
#define CLUSTER_LAZY_SUB_STATS(X)                                                  \
	X(COUNTER, update_empty) X(COUNTER, update_rejected) X(COUNTER, init_fetch_timeout)
#define CL_ENUM(type, name) CL_##name,

enum { CLUSTER_STATS(STATS_ENUM) CLUSTER_SUB_STATS(CL_ENUM) CLUSTER_LAZY_STATS(STATS_ENUM)
       CLUSTER_LAZY_SUB_STATS(CL_ENUM) CLUSTER_STATS_N };
enum { CLUSTER_LAZY_FIRST = membership_degraded };   /* stored lazily from here on */
#define CLUSTER_STAT_COUNT(type, name) + 1
enum {
	CLUSTER_SHARED_FIRST = 0 CLUSTER_WORKER_STATS(CLUSTER_STAT_COUNT),
	CLUSTER_MAIN_FIRST = CLUSTER_SHARED_FIRST CLUSTER_SHARED_STATS(CLUSTER_STAT_COUNT),
};

/* cluster.<name>.circuit_breakers.{default,high}.* gauges (main thread, 1 s
 * tick; stored lazily): in the cluster scope after CLUSTER_STATS_N, one block of
 * CB_STATS_N per priority (CLUSTER_CB(p, CB_cx_open)). */
#define CB_STATS(X) X(GAUGE, cx_open) X(GAUGE, cx_pool_open) X(GAUGE, rq_pending_open) \
	X(GAUGE, rq_open) X(GAUGE, rq_retry_open) X(GAUGE, remaining_cx)                \
	X(GAUGE, remaining_pending) X(GAUGE, remaining_rq) X(GAUGE, remaining_retries)
#define CB_ENUM(type, name) CB_##name,
enum { CB_STATS(CB_ENUM) CB_STATS_N };
#define CLUSTER_CB(p, idx) (CLUSTER_STATS_N + (p) * CB_STATS_N + (idx))
#define CLUSTER_SCOPE_N (CLUSTER_STATS_N + 2 * CB_STATS_N)

/* cluster.<name>.ring_hash_lb.* / maglev_lb.* gauges (main thread, set when
 * the table is rebuilt). */
#define RING_STATS(X) X(GAUGE, size) X(GAUGE, min_hashes_per_host) X(GAUGE, max_hashes_per_host)
#define MAGLEV_STATS(X) X(GAUGE, min_entries_per_host) X(GAUGE, max_entries_per_host)
#define LBH_ENUM(type, name) LBH_##name,
enum { RING_STATS(LBH_ENUM) RING_STATS_N };
enum { MAGLEV_STATS(LBH_ENUM) MAGLEV_STATS_N };

/* Envoy's RoutingPriority: a route's requests use the thresholds (and the
 * counters) of its priority. */
enum cb_priority { CB_PRIO_DEFAULT, CB_PRIO_HIGH, CB_PRIO_N };

/* circuit_breakers.thresholds[] of one priority.  The limits are
 * cluster-wide across workers; what is held against them is counted with
 * atomics in struct cb_count. */
struct cb_prio {
	uint32_t max_connections, max_pending, max_requests, max_retries; /* 1024 x 3, 3 */
	uint32_t max_host_connections;      /* per_host_thresholds.max_connections, 0 = none */
	uint32_t min_retry_concurrency;     /* default 3 */
	double budget_percent;              /* default 20 */
	bool retry_budget;                  /* retry_budget set: replaces max_retries */
	bool track_remaining;
};

/* What one priority holds against its limits (atomic, any worker). */
struct cb_count {
	int cx, pending, rq, retries;
};

/* Per-host counters kept per shard (for /clusters). */
enum { HOST_CX_TOTAL, HOST_CX_ACTIVE, HOST_CX_CONNECT_FAIL, HOST_RQ_TOTAL, HOST_RQ_ACTIVE,
       HOST_RQ_ERROR, HOST_RQ_SUCCESS, HOST_RQ_TIMEOUT,
       /* outlier detection's success-rate inputs (outlier.c), per attempt:
        * externally / locally originated results, ok and failed */
       HOST_OD_EXT_OK, HOST_OD_EXT_ERR, HOST_OD_LO_OK, HOST_OD_LO_ERR, HOST_STATS_N };

enum cluster_type { CLUSTER_STATIC, CLUSTER_STRICT_DNS, CLUSTER_LOGICAL_DNS, CLUSTER_ORIGINAL_DST,
		    CLUSTER_EDS };
enum lb_policy { LB_ROUND_ROBIN, LB_LEAST_REQUEST, LB_RANDOM, LB_RING_HASH, LB_MAGLEV,
		 LB_PEAK_EWMA };

/* Peak-EWMA state of one host as seen by one worker (only that worker
 * touches it).  Padded to a cache line so workers do not false-share. */
struct host_ewma {
	_Alignas(64) double cost_us;        /* peak-sensitive EWMA of the response latency */
	uint64_t stamp_us;                  /* time of cost_us; 0 = no sample yet */
};

#define HOST_FAILED_ACTIVE_HC    0x1       /* health_flags */
#define HOST_FAILED_OUTLIER      0x2
#define HOST_FAILED_EDS_HEALTH   0x4       /* health_status UNHEALTHY/DRAINING/TIMEOUT */
#define HOST_DEGRADED_ACTIVE_HC  0x8       /* check answered with x-envoy-degraded */
#define HOST_DEGRADED_EDS_HEALTH 0x10      /* health_status DEGRADED */
#define HOST_FAILED_MASK   (HOST_FAILED_ACTIVE_HC | HOST_FAILED_OUTLIER | HOST_FAILED_EDS_HEALTH)
#define HOST_DEGRADED_MASK (HOST_DEGRADED_ACTIVE_HC | HOST_DEGRADED_EDS_HEALTH)

/* Envoy's Host::Health: a failed host is unhealthy even if also degraded. */
enum host_health { HOST_HEALTHY, HOST_DEGRADED, HOST_UNHEALTHY };
static inline enum host_health host_health_of(int flags)
{
	return (flags & HOST_FAILED_MASK) ? HOST_UNHEALTHY :
	       (flags & HOST_DEGRADED_MASK) ? HOST_DEGRADED : HOST_HEALTHY;
}

/* A host's address: IPv4 or IPv6 (28 bytes, not a 128-byte
 * sockaddr_storage). */
union host_addr {
	struct sockaddr sa;
	struct sockaddr_in in;
	struct sockaddr_in6 in6;
};

/* Outlier detection's state of one host (clusters with outlier_detection
 * only). */
struct host_od {
	int consecutive_5xx;                /* atomic; outlier detection (all workers) */
	int consecutive_gw;                 /* atomic; consecutive gateway failures */
	int consecutive_lo;                 /* atomic; consecutive local-origin failures
					       (split_external_local_origin_errors only) */
	uint32_t ejections;                 /* main thread: times ejected (multiplier) */
	uint64_t ejected_until_ms;          /* main thread */
	int64_t od_prev[4];                 /* main thread: HOST_OD_* sums at the last interval */
};

/* One allocation: the struct, then pools[nworkers], stats[nshards] and the
 * address text (~0.15 KB for an IPv4 host with two workers). */
struct host {
	int refcnt;                         /* atomic; host sets and pools hold refs */
	int health_flags;                   /* HOST_FAILED_* / HOST_DEGRADED_*; written by the
					       main thread */
	int cb_cx;                          /* atomic: connections to this host (all workers) */
	uint32_t weight;
	union host_addr addr;
	socklen_t addrlen;
	uint16_t nshards, nworkers;
	const char *addr_str;               /* in this allocation: "127.0.0.1:8080" / "[::1]:8080" */
	char *hostname;                     /* owned, may be NULL (DNS name it came from) */
	struct host_od *od;                 /* owned, NULL unless the cluster has outlier
					       detection */
	struct host_ewma *ewma;             /* owned [nworkers] (aligned_alloc), slot w owned by
					       worker w; NULL unless the cluster is peak-EWMA */
	struct pool **pools;                /* in this allocation, [nworkers]; slot w owned by
					       worker w: its pools, one per SNI (auto_sni),
					       linked by next_sni */
	int64_t **stats;                    /* in this allocation, [nshards]: shard s's
					       [HOST_STATS_N] counters, owned, allocated by the
					       thread of shard s on its first write (a host
					       nobody sent traffic to has none) */
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
	/* Degraded hosts (Envoy): they take degraded_load % of the picks, the
	 * share the healthy hosts cannot carry with the 1.4 overprovisioning
	 * factor; 0 when the healthy ones suffice or in panic. */
	struct host **degraded;             /* owned array (no extra refs) [ndegraded] */
	size_t ndegraded;
	uint32_t degraded_weight;
	bool degraded_weighted;             /* weights differ among them */
	uint32_t degraded_load;             /* 0..100 */
	struct lb_hash_table *lbt_degraded; /* owned; hash table over degraded[] */
};

/* Worker w's load-balancing state beyond a plain round-robin cursor: only
 * for host sets with different weights or degraded hosts (allocated by the
 * worker when such a set arrives, freed with the cluster). */
struct cluster_worker_lb {
	uint64_t rr_degraded;               /* round-robin cursor over hs->degraded */
	double lr_now;                      /* EDF clock: deadline of the last pick */
	uint64_t lr_order;                  /* EDF insertion counter (tie break) */
	bool lr_built;                      /* lr_heap filled (on the first pick) */
	size_t cap;                         /* entries cur_weight / lr_heap have room for */
	int64_t *cur_weight;                /* owned; smooth-WRR state [hs->nactive] when weighted */
	struct lr_edf *lr_heap;             /* owned; LEAST_REQUEST EDF min-heap [hs->nactive]
					       when weighted */
};

/* Worker w's view of a cluster (in the cluster's allocation). */
struct cluster_worker {
	struct hostset *hs;                 /* ref held; NULL until the first set arrives */
	uint64_t rr;                        /* round-robin cursor */
	uint64_t snap_mark;                 /* worker_msg_set_snapshot: the version of the
					       newest snapshot holding this cluster */
	struct cluster_worker_lb *lb;       /* owned (written by worker w), NULL: plain */
};

/* One host in the weighted LEAST_REQUEST EDF scheduler. */
struct lr_edf {
	double deadline;                    /* pick when the clock reaches it */
	uint64_t order;                     /* insertion order: ties go to the oldest */
	uint32_t host;                      /* index into hs->active */
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
	int eds_flags;                      /* health_status: HOST_FAILED_EDS_HEALTH,
					       HOST_DEGRADED_EDS_HEALTH or 0 */
};

/* Upstream protocol (typed_extension_protocol_options HttpProtocolOptions). */
enum cluster_proto {
	CL_PROTO_HTTP1,        /* explicit_http_config.http_protocol_options, or nothing */
	CL_PROTO_HTTP2,        /* explicit http2_protocol_options / deprecated cluster field */
	CL_PROTO_DOWNSTREAM,   /* use_downstream_protocol_config: same as the downstream */
};

/* The options most clusters leave at their defaults, and the state of the
 * features they enable.  A cluster that sets none of them points at the
 * shared, read-only cluster_ext_default (no allocation): at 10,000 xDS
 * clusters this keeps struct cluster near 0.3 KB instead of 1.3 KB.  An
 * owned copy is made (cluster_ext_mut) when parsing sets one of them, and
 * for the types and features that keep state here (DNS, outlier detection,
 * health checks, hash load balancers, HTTP/2). */
struct cluster_ext {
	uint32_t lr_choice_count;           /* least_request_lb_config.choice_count (2) */
	double lr_bias;                     /* least_request_lb_config.active_request_bias (1.0) */
	uint64_t ewma_decay_us;             /* peak_ewma decay_time (10 s) */
	uint64_t ewma_default_rtt_us;       /* peak_ewma default_rtt (10 ms) */
	struct lb_hash_cfg hash_cfg;        /* ring_hash_lb_config / maglev_lb_config */
	struct h2_options h2;               /* used when proto is HTTP2 or DOWNSTREAM */
	struct stats_scope *h2_stats;       /* owned: cluster.<name>.http2.*, NULL for HTTP/1 */
	uint64_t dns_refresh_ms;            /* dns_refresh_rate (5000) */
	bool respect_dns_ttl;
	enum dns_family dns_family;
	struct sockaddr_storage *resolvers; /* owned [nresolvers] */
	size_t nresolvers;
	struct stats_scope *lbh_stats;      /* owned: ring_hash_lb.* or maglev_lb.*, may be NULL */
	struct outlier_cfg od;
	struct stats_scope *od_stats;       /* owned: outlier_detection.*, may be NULL */
	struct event *od_timer;             /* owned: unejection sweep (main thread) */
	struct hc_cfg *hc_cfg;              /* owned: health_checks[0], NULL if none */
	struct stats_scope *hc_stats;       /* owned: health_check.*, NULL if none */
	struct health_checker *hc;          /* owned, main thread; from cluster_start */
	/* HttpProtocolOptions.upstream_http_protocol_options (TLS clusters):
	 * the request's host names the upstream connection's SNI, connections
	 * are pooled per SNI (struct pool.sni), and with auto_san_validation the
	 * server certificate must match that host (instead of the SAN matchers). */
	bool auto_sni, auto_san_validation;
	char *auto_sni_header;              /* owned, lowercase: override_auto_sni_header;
					       NULL: :authority */
	/* STRICT_DNS / LOGICAL_DNS membership (main thread) */
	struct dns_resolver *dns;           /* owned */
	struct dns_query **queries;         /* owned [nendpoints], pending queries */
	struct dns_cb_arg *dns_args;        /* owned [nendpoints] */
	struct sockaddr_storage **dns_addrs; /* owned per endpoint: last answer */
	size_t *dns_naddrs;
	size_t dns_pending;                 /* queries in flight this round */
	struct event *dns_timer;            /* owned */
	uint32_t dns_min_ttl_s;             /* smallest TTL of this round */
};
extern const struct cluster_ext cluster_ext_default;

struct cluster {
	/* First cache line: what every worker writes (circuit-breaker counts)
	 * and fields only the main thread touches, rarely; the read-mostly
	 * fields below are on lines of their own. */
	struct cb_count cbc[CB_PRIO_N];     /* held against cb[p] (atomic) */
	int refcnt;                         /* atomic; snapshots hold refs */
	uint32_t eds_fetch_timeout_ms;      /* eds_config.initial_fetch_timeout (15 s; 0 = none) */
	void (*on_init)(struct cluster *cl, void *arg); /* called once, see cluster_start */
	void *on_init_arg;
	_Alignas(64) char *name;            /* owned */
	enum cluster_type type : 8;
	enum lb_policy lb : 8;
	enum cluster_proto proto : 8;       /* upstream HTTP protocol */
	bool initialized;                   /* first membership known (main thread) */
	bool gauges_off;                    /* main thread: a newer version of this cluster
					       (same name, so the same stats scopes) is in
					       force, or it was removed: it leaves the shared
					       gauges alone (cluster_set_gauges_owner) */
	uint32_t panic_threshold;           /* common_lb_config.healthy_panic_threshold %, default 50 */
	uint32_t buffer_limit;              /* per_connection_buffer_limit_bytes (1 MiB) */
	uint32_t max_requests_per_connection; /* 0 = unlimited */
	uint64_t connect_timeout_ms;        /* default 5000 */
	uint64_t idle_timeout_ms;           /* upstream idle timeout (1 h default) */
	struct stats_scope *stats;          /* owned: cluster.<name>.* (circuit breakers too) */
	struct cb_prio cb[CB_PRIO_N];       /* circuit breakers by RoutingPriority */
	const struct cluster_ext *ext;      /* &cluster_ext_default, or owned */
	struct tls_ctx *tls;                /* owned: transport_socket (UpstreamTlsContext), NULL = raw */
	struct odst *odst;                  /* owned: ORIGINAL_DST state (original_dst.h), else NULL */
	char *eds_service_name;             /* EDS: the ClusterLoadAssignment to ask for
					       (eds_cluster_config.service_name; owned), else
					       == name (not owned); NULL for other types */
	struct endpoint_cfg *endpoints;     /* owned [nendpoints]; EDS clusters drop theirs
					       once published (the hosts carry them) */
	size_t nendpoints;
	struct xblob *src;                  /* owned: the resource it was compiled from, as
					       received (xds/xres.h): set by its user (xDS: for
					       diffing updates; both: /config_dump); may be NULL */
	struct hostset *hs;                 /* main thread: current host set (ref) */
	unsigned nworkers;
	struct cluster_worker workers[];    /* [nworkers]: slot w written by worker w */
};

/* The cluster's own copy of its extension, made on first use (parsing and
 * the main thread's feature state only). */
struct cluster_ext *cluster_ext_mut(struct cluster *cl);

/* The Cluster this was compiled from, decoded from src (new ref; an empty
 * object if there is none). */
json_t *cluster_config_json(const struct cluster *cl);

/* Parse a Cluster.  Returns NULL after cfg_fail(). */
struct cluster *cluster_parse(struct cfg_ctx *c, const json_t *j, struct build_ctx *b);
/* The cluster cluster_parse builds for an EDS Cluster that sets only name,
 * type EDS, lb_policy (ROUND_ROBIN, LEAST_REQUEST or RANDOM),
 * connect_timeout and eds_cluster_config {eds_config: ads, service_name}
 * (xds/pb_fast.c decides that from the protobuf, without JSON). */
struct cluster *cluster_new_eds(struct build_ctx *b, const char *name, enum lb_policy lb,
				uint64_t connect_timeout_ms, const char *service_name,
				uint32_t fetch_timeout_ms);
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
/* Shard `shard`'s counters of h for its own thread, allocated on first use
 * (a cache line or two of its own) and published with a release store. */
int64_t *host_stats_new(struct host *h, unsigned shard);
static inline void host_stat_add(struct host *h, unsigned shard, int idx, int64_t v)
{
	int64_t *s = __atomic_load_n(&h->stats[shard], __ATOMIC_RELAXED);   /* ours */

	if (unlikely(!s))
		s = host_stats_new(h, shard);
	s[idx] += v;
}
int64_t host_stat(const struct host *h, int idx);   /* summed over shards */

/* Concurrent retries allowed now at priority p: max_retries, or the retry
 * budget. */
uint32_t cluster_retry_limit(const struct cluster *cl, enum cb_priority p);

/* Take one unit under a cluster-wide limit of priority p: false (nothing
 * taken) when that would exceed the limit.  Lock-free; any worker. */
static inline bool cb_take(int *count, uint32_t limit)
{
	if ((uint32_t)__atomic_add_fetch(count, 1, __ATOMIC_RELAXED) > limit) {
		__atomic_sub_fetch(count, 1, __ATOMIC_RELAXED);
		return false;
	}
	return true;
}
static inline void cb_put(int *count)
{
	__atomic_sub_fetch(count, 1, __ATOMIC_RELAXED);
}
/* max_requests: one outstanding request of priority p. */
static inline bool cluster_rq_take(struct cluster *cl, enum cb_priority p)
{
	return cb_take(&cl->cbc[p].rq, cl->cb[p].max_requests);
}
static inline void cluster_rq_put(struct cluster *cl, enum cb_priority p)
{
	cb_put(&cl->cbc[p].rq);
}
/* max_retries / retry_budget: one concurrent retry of priority p. */
static inline bool cluster_retry_take(struct cluster *cl, enum cb_priority p)
{
	return cb_take(&cl->cbc[p].retries, cluster_retry_limit(cl, p));
}
static inline void cluster_retry_put(struct cluster *cl, enum cb_priority p)
{
	cb_put(&cl->cbc[p].retries);
}
/* Main thread: same hosts, new health flags: rebuild the active subset
 * and publish a new host set to the workers. */
void cluster_republish(struct cluster *cl);
/* Main thread: the health checker finished its first round (every host
 * checked once); the cluster may now report itself initialized. */
void cluster_hc_warmed(struct cluster *cl);

/* EDS cluster (main thread): replace the endpoints with those of a
 * ClusterLoadAssignment (proto3 JSON, walked with c for errors) and publish
 * the host set; the first call initializes the cluster.  Hosts whose address
 * and weight are unchanged are kept (stats, pools).  RM_ERROR with c->err set
 * leaves the current endpoints in force. */
int cluster_eds_update(struct cluster *cl, struct cfg_ctx *c, const json_t *cla);
/* The same with the endpoints already parsed (eps: owned array of n, taken;
 * an xDS fast path that reads the protobuf directly). */
void cluster_eds_set(struct cluster *cl, struct endpoint_cfg *eps, size_t n);
/* Main thread.  The versions of a cluster updated over CDS share its stats
 * scopes (by name), and the previous version lives on while requests still
 * use it: only one version writes the gauges (membership_*, circuit
 * breakers, health_check.healthy/degraded, outlier_detection.ejections_active,
 * ring_hash_lb / maglev_lb sizes), the one in force.  owner false: this
 * version stops writing them (a newer one is in force, or it was removed);
 * true: it writes them from now on, starting with its current values.
 * Counters are not affected (every version counts its own events).  A
 * cluster owns them from creation (cluster_parse). NULL ok. */
void cluster_set_gauges_owner(struct cluster *cl, bool owner);
/* EDS cluster: nothing arrived within initial_fetch_timeout: initialize with
 * no hosts (Envoy's behaviour), so warming does not block forever. */
void cluster_eds_fetch_timeout(struct cluster *cl);

/* Refresh the circuit-breaker gauges from the live counts (main thread). */
void cluster_update_cb_gauges(struct cluster *cl);

/* Text for /clusters (Envoy format) appended to out. */
void cluster_dump_admin(const struct cluster *cl, struct evbuffer *out);

/* Hook used by cluster.c to publish a host set to workers; set by the server. */
extern void (*cluster_publish_hook)(struct cluster *cl, struct hostset *hs);

#endif
