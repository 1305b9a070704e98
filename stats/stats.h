/* stats.h - Envoy-named counters, gauges and histograms with per-worker shards.
 *
 * A *scope* is a group of stats that share a name and tags, e.g. all of
 * "cluster.backend.*".  Each subsystem declares its stats beside its code as
 * an X-macro list and creates one scope per instance:
 *
 *   #define CLUSTER_STATS(X)  X(COUNTER, upstream_rq_total) X(GAUGE, upstream_cx_active) \
 *                             X(HISTOGRAM, upstream_rq_time)
 *   enum { CLUSTER_STATS(STATS_ENUM) CLUSTER_STATS_N };
 *   static const struct stat_desc cluster_stat_desc[] = { CLUSTER_STATS(STATS_DESC) };
 *   s = stats_scope_new(store, "cluster.backend", "cluster", "envoy_cluster_name", "backend",
 *                       cluster_stat_desc, CLUSTER_STATS_N);
 *   stats_inc(s, shard, upstream_rq_total);
 *
 * Shards: shard 0 belongs to the main thread, shard 1..N to workers 0..N-1.
 * A thread only ever writes its own shard, without atomics or locks; readers
 * (the main thread rendering /stats) sum every shard with relaxed loads.
 * Gauges are summed the same way (each shard holds its own +/- deltas), or,
 * for gauges only the main thread sets (membership_total), use shard 0 with
 * stats_gauge_set.
 *
 * Response-code families: a scope may have code families (e.g.
 * "upstream_rq", "downstream_rq"); stats_code_inc(s, shard, fam, 503) bumps
 * "<scope>.<family>_503" and "<scope>.<family>_5xx".  Exact-code counters are
 * allocated per shard on first use and only rendered once nonzero, as Envoy
 * creates them on demand; the _Nxx counters always exist.
 *
 * Histograms record values (milliseconds for *_time stats) into fixed
 * buckets with Envoy's default bounds
 *   0.5 1 5 10 25 50 100 250 500 1000 2500 5000 10000 30000 60000 300000
 *   600000 1800000 3600000 (+Inf),
 * plus count and sum; shards are merged on read. */
#ifndef REMORA_STATS_H
#define REMORA_STATS_H

#include "../proxy/common.h"

struct evbuffer;

enum stat_type { STAT_COUNTER, STAT_GAUGE, STAT_HISTOGRAM };

struct stat_desc {
	const char *name;          /* leaf name, e.g. "upstream_rq_total" */
	enum stat_type type;
};

#define STATS_ENUM(type, name) name,
#define STATS_DESC(type, name) { #name, STAT_##type },

#define STATS_HIST_BUCKETS 19                 /* default finite bounds; +1 overflow bucket */
extern const double stats_hist_bounds[STATS_HIST_BUCKETS];
#define STATS_HIST_MAX_BOUNDS 32              /* stats_config.histogram_bucket_settings */

/* A histogram's finite bucket bounds (ascending); bucket n is the overflow. */
struct stats_bounds {
	unsigned n;
	double b[STATS_HIST_MAX_BOUNDS];
};
extern const struct stats_bounds stats_default_bounds;   /* Envoy's defaults above */

struct stats_hist {                           /* one shard's histogram */
	uint64_t buckets[STATS_HIST_MAX_BOUNDS + 1];
	uint64_t count;
	double sum;
	const struct stats_bounds *bounds;        /* merged copies only: the histogram's
	                                             bounds; NULL = stats_default_bounds */
};

#define STATS_MAX_CODE_FAMILIES 2
#define STATS_MAX_SHARDS 257

/* One thread's values for a scope.  Shard 0 (the main thread's) lives in
 * the scope's block; a worker's shard is allocated by that worker on its
 * first write (stats_shard_of) and published with a release store, so a
 * scope nobody has used on a worker costs that worker nothing.  Each
 * worker shard is a block of whole cache lines of its own.  The pointers
 * are set once (by the owning thread) and only read afterwards. */
struct stats_shard {
	int64_t *vals;                            /* values by desc index: valid for the indexes
						     this shard holds (see stats_scope.lo0/nw);
						     points into this block (not owned) */
	struct stats_hist *hists;                 /* owned, allocated by the owning thread on
						     its first record: [nhist], the scope's
						     histograms only (hslot maps) */
	uint64_t *codes[STATS_MAX_CODE_FAMILIES]; /* owned, allocated by the owning thread on
						     first use: [STATS_CODES_LEN] = codes
						     100..599, then the classes 1xx..5xx */
};
#define STATS_CODES_LEN 505

struct stats_store;

/* A scope is one allocation (the struct, its shard pointer array, its
 * strings and shard 0's values) plus the worker shards, histogram and
 * response-code blocks of the threads that have used them: a cluster nobody
 * sends traffic to costs no worker memory.
 *
 * Which shard holds which stat: shard 0 holds desc[lo0..lazy0), worker
 * shards desc[0..nw), ->lazy desc[lazy0..ndesc) once one of them is not
 * zero.  A plain scope has lo0 = 0 and nw = lazy0 = ndesc (every thread may
 * write every stat); a main-thread scope has one shard; a split scope
 * (stats_scope_new_split) keeps the stats only workers write first and
 * those only the main thread writes last, so neither side stores the
 * other's; lazily stored stats (stats_scope_spec.nlazy) come last of all.
 * The strings shared by many scopes (tag names and prefixes) are interned
 * by the store. */
struct stats_scope {
	struct stats_store *store;                /* not owned */
	char *name;                               /* in the block; full prefix without trailing
						     dot, e.g. "cluster.backend" ("" for none) */
	const char *tag_prefix;                   /* name with the tag value removed, e.g.
						     "cluster" (Prometheus names): name itself,
						     or interned by the store (not owned) */
	const char *tag_name;                     /* may be NULL: "envoy_cluster_name";
						     interned by the store (not owned) */
	const char *tag_value;                    /* may be NULL: "backend"; the end of name
						     when name ends with it, else in the block */
	const struct stat_desc *desc;             /* not owned (static) */
	uint32_t ndesc;
	uint32_t lo0;                             /* shard 0 holds desc[lo0..ndesc) */
	uint32_t nw;                              /* worker shards hold desc[0..nw) */
	uint32_t nhist;                           /* histograms in desc */
	unsigned refs;                            /* users (stats_scope_new / _free pairs);
						     under the store's lock */
	uint32_t lazy0;                           /* desc[lazy0..ndesc) (main thread only) are
						     in ->lazy, not in shard 0; ndesc: none */
	const uint16_t *hslot;                    /* shared by the store's scopes with the same
						     histogram positions (not owned), [ndesc]:
						     a histogram's slot in a shard's hists[]
						     (NULL if nhist is 0) */
	const struct stats_bounds **hbounds;      /* owned array [ndesc] (entries point into the
	                                             store's bucket rules), NULL: all default */
	const char *families[STATS_MAX_CODE_FAMILIES]; /* not owned (static), may be NULL */
	unsigned nshards;                         /* the store's, or 1 (stats_scope_new_main) */
	uint32_t hash;                            /* of name, for the store's hash */
	struct stats_shard **shards;              /* in the block; [nshards]: [0] in the block,
						     the others owned, NULL until first use */
	struct stats_scope *next;                 /* store's list */
	struct stats_scope **pprev;               /* the pointer to this scope in that list
						     (O(1) removal: xDS frees scopes one by one) */
	union {
		struct stats_scope *hnext;        /* while registered: the store's name hash
						     chain (under the store's lock) */
		struct stats_scope *dead_next;    /* once unlinked: the store's graveyard
						     (freed after a render) */
	};
	int64_t *lazy;                            /* owned [ndesc - lazy0], NULL (all zero)
						     until stats_lazy_set writes a non-zero
						     value: rarely set main-thread stats */
	char *extra;                              /* owned, NULL for most scopes: a second tag
						     "<name>\0<value>\0" ("\0\0": none; see
						     stats_scope_tag2_*), then, with
						     STATS_SCOPE_COPY_DESC, the copied stat list
						     (desc points there) */
};

/* A scope's second tag (e.g. "envoy_rds_route_config" = "local_route"), or NULL. */
static inline const char *stats_scope_tag2_name(const struct stats_scope *s)
{
	return s->extra && *s->extra ? s->extra : NULL;
}
static inline const char *stats_scope_tag2_value(const struct stats_scope *s)
{
	const char *n = stats_scope_tag2_name(s);

	return n ? n + strlen(n) + 1 : NULL;
}

/* stats_config.histogram_bucket_settings: histograms created from now on
 * whose full name matches (first rule wins) use these bounds (1 ..
 * STATS_HIST_MAX_BOUNDS ascending positive values).  Main thread, before
 * the scopes it should affect are created. */
enum stats_match { STATS_MATCH_EXACT, STATS_MATCH_PREFIX, STATS_MATCH_SUFFIX, STATS_MATCH_CONTAINS };
void stats_store_add_bucket_rule(struct stats_store *st, enum stats_match kind, const char *str,
				 const double *bounds, unsigned n);

/* nshards = 1 + number of workers. */
struct stats_store *stats_store_new(unsigned nshards);
void stats_store_free(struct stats_store *st);
unsigned stats_store_nshards(const struct stats_store *st);

/* The registered scopes (linked through ->next), for renderers: walk them
 * and use the scopes only between stats_store_read_begin and _read_end, so
 * that a scope freed meanwhile by another thread (a worker dropping the
 * last reference to an old config snapshot) stays readable until then. */
struct stats_scope *stats_store_scopes(const struct stats_store *st);
void stats_store_read_begin(struct stats_store *st);
void stats_store_read_end(struct stats_store *st);

/* Create a scope and register it with the store (main thread; a worker may
 * add one too, e.g. on the first use of a dynamically named scope: the
 * insertion is safe against a concurrent render or free).
 * tag_name/tag_value may be NULL (no tag; then tag_prefix should equal name).
 *
 * Scopes are shared by name, as Envoy shares stats by name: if the store
 * already holds a scope with this full name and the same kind (the same
 * stat list, compared by content, and the same shard count: per-worker or
 * main-only), that scope is returned with one more reference, so two users
 * (two HCMs with one stat_prefix, an old listener draining next to its
 * replacement, two versions of a cluster) bump the same counters and every
 * name is rendered once.  The first creator's tags, code families and
 * histogram bounds stand.  Every stats_scope_new* is paired with one
 * stats_scope_free; the scope goes when its last user frees it.  A scope of
 * another kind under the same name is a separate scope (its stat names
 * should differ).
 * Examples:
 *   ("server", "server", NULL, NULL)
 *   ("cluster.backend", "cluster", "envoy_cluster_name", "backend")
 *   ("http.ingress_http", "http", "envoy_http_conn_manager_prefix", "ingress_http")
 *   ("listener.127.0.0.1_10000", "listener", "envoy_listener_address", "127.0.0.1_10000") */
struct stats_scope *stats_scope_new(struct stats_store *st, const char *name,
				    const char *tag_prefix, const char *tag_name,
				    const char *tag_value, const struct stat_desc *desc,
				    size_t ndesc);
/* The same for a scope only the main thread writes (gauges it sets and
 * counters it bumps on shard 0: circuit breakers, outlier detection, health
 * checks, ring/maglev sizes): a single shard, so N workers do not cost N
 * unused copies.  Writing it with shard != 0 is a bug. */
struct stats_scope *stats_scope_new_main(struct stats_store *st, const char *name,
					 const char *tag_prefix, const char *tag_name,
					 const char *tag_value, const struct stat_desc *desc,
					 size_t ndesc);
/* A scope whose first nw stats only workers write and whose stats from lo0
 * on only the main thread writes (lo0 <= nw: the stats in between both
 * may write): shard 0 stores desc[lo0..ndesc) and a worker shard
 * desc[0..nw).  The cluster scope uses it so an idle cluster stores only
 * its membership and circuit-breaker values. */
struct stats_scope *stats_scope_new_split(struct stats_store *st, const char *name,
					  const char *tag_prefix, const char *tag_name,
					  const char *tag_value, const struct stat_desc *desc,
					  size_t ndesc, size_t nw, size_t lo0);

/* The general form of the three above. */
#define STATS_SCOPE_MAIN      0x1   /* a single shard (stats_scope_new_main) */
#define STATS_SCOPE_COPY_DESC 0x2   /* desc and its names are copied into the scope: for a
				       stat list built at run time (the caller may free it
				       while another user of the shared scope goes on) */
#define STATS_SCOPE_SPLIT     0x4   /* nw/lo0 below apply (stats_scope_new_split) */
struct stats_scope_spec {
	const char *name, *tag_prefix;
	const char *tag_name, *tag_value;          /* may be NULL */
	const char *tag2_name, *tag2_value;        /* a second tag (Prometheus label after
						      the first), may be NULL */
	const struct stat_desc *desc;              /* not owned: static unless COPY_DESC */
	size_t ndesc;
	size_t nw, lo0;                            /* with STATS_SCOPE_SPLIT only */
	size_t nlazy;                              /* the last nlazy stats of desc are
						      main-thread only and stored lazily:
						      written with stats_lazy_set only
						      (rarely non-zero gauges) */
	unsigned flags;                            /* STATS_SCOPE_* */
};
/* A scope is shared (refcounted) when the name, the stat list (by content)
 * and the shard layout (main-only, all shards, or the same split) match. */
struct stats_scope *stats_scope_get(struct stats_store *st, const struct stats_scope_spec *sp);

/* Add a response-code family ("upstream_rq"); returns its index (0..).  A
 * family the scope already has (a shared scope) returns its index. */
int stats_scope_add_family(struct stats_scope *s, const char *family);
/* Drop one reference (any thread); the last one unregisters and frees the
 * scope (deferred while a render reads the list).  NULL ok. */
void stats_scope_free(struct stats_scope *s);
/* Number of distinct scopes registered (tests, /memory-style accounting). */
size_t stats_store_nscopes(struct stats_store *st);

/* Shard `shard` of s for writing by its own thread: a worker's shard is
 * allocated on the thread's first write (once per scope and worker). */
struct stats_shard *stats_shard_new(struct stats_scope *s, unsigned shard);
static inline struct stats_shard *stats_shard_of(struct stats_scope *s, unsigned shard)
{
	/* only this thread stores the pointer: a relaxed load suffices */
	struct stats_shard *sh = __atomic_load_n(&s->shards[shard], __ATOMIC_RELAXED);

	if (unlikely(!sh))
		sh = stats_shard_new(s, shard);
	return sh;
}
static inline void stats_add(struct stats_scope *s, unsigned shard, unsigned idx, int64_t v)
{
	stats_shard_of(s, shard)->vals[idx] += v;
}
static inline void stats_inc(struct stats_scope *s, unsigned shard, unsigned idx)
{
	stats_shard_of(s, shard)->vals[idx]++;
}
static inline void stats_dec(struct stats_scope *s, unsigned shard, unsigned idx)
{
	stats_shard_of(s, shard)->vals[idx]--;
}
/* Main-thread-owned gauge: shard 0 holds the value (not for the lazily
 * stored stats of a scope: stats_lazy_set). */
static inline void stats_gauge_set(struct stats_scope *s, unsigned idx, int64_t v)
{
	s->shards[0]->vals[idx] = v;
}
/* Set a lazily stored stat (idx >= s->lazy0; main thread): their block is
 * allocated on the first non-zero value, so a scope whose lazy stats stay
 * zero (an idle cluster's circuit-breaker gauges) stores none of them. */
void stats_lazy_set(struct stats_scope *s, unsigned idx, int64_t v);
void stats_lazy_add(struct stats_scope *s, unsigned idx, int64_t v);
/* Main thread: add to a stat shard 0 or the lazy block holds (code that
 * counts in scopes of several layouts, e.g. xDS subscription stats). */
static inline void stats_main_add(struct stats_scope *s, unsigned idx, int64_t v)
{
	if (idx >= s->lazy0)
		stats_lazy_add(s, idx, v);
	else
		stats_add(s, 0, idx, v);
}
void stats_hist_record(struct stats_scope *s, unsigned shard, unsigned idx, double value);
void stats_code_inc(struct stats_scope *s, unsigned shard, int family, int code);

/* Reading (main thread): the sum over shards. */
int64_t stats_value(const struct stats_scope *s, unsigned idx);
uint64_t stats_code_value(const struct stats_scope *s, int family, int code);
void stats_hist_merge(const struct stats_scope *s, unsigned idx, struct stats_hist *out);
/* Quantile estimate (0..1) from merged buckets by linear interpolation; NAN if empty. */
double stats_hist_quantile(const struct stats_hist *h, double q);

/* Zero every counter and histogram (not gauges) in every shard
 * (/reset_counters; racy by design, as in Envoy). */
void stats_reset_counters(struct stats_store *st);

/* Rendering, all append to out.  Names are sorted.
 * Text:   "cluster.backend.upstream_rq_total: 12" one per line; histograms as
 *         "name: P0(v,v) P25(..) P50(..) P75(..) P90(..) P95(..) P99(..) P99.5(..) P99.9(..) P100(..)"
 *         (Envoy shows interval,cumulative; we show cumulative twice) or
 *         "name: No recorded values".
 * JSON:   {"stats":[{"name":..,"value":..},...,{"histograms":{"supported_quantiles":[..],
 *          "computed_quantiles":[{"name":..,"values":[{"interval":..,"cumulative":..}]}]}}]}
 * filter: a PCRE2 regex matched (unanchored) against the full stat name, or NULL.
 *         Returns RM_ERROR (and writes nothing) if the regex does not compile,
 *         with a message in err.
 * used_only: skip counters/gauges that are zero and histograms with no values. */
int stats_render_text(struct stats_store *st, struct evbuffer *out, const char *filter,
		      bool used_only, char *err, size_t errlen);
int stats_render_json(struct stats_store *st, struct evbuffer *out, const char *filter,
		      bool used_only, char *err, size_t errlen);
/* Prometheus text exposition 0.0.4: "envoy_" + tag_prefix + "_" + leaf with
 * '.' and other invalid characters turned into '_', tags as labels, one
 * "# TYPE" line per metric family (counter/gauge/histogram), samples of one
 * family grouped together, histograms as _bucket{le=...} (cumulative, with
 * le="+Inf"), _sum and _count.  Response-code stats use Envoy's tag
 * extraction: "<fam>_503" -> "envoy_<prefix>_<fam>{envoy_response_code="503",...}",
 * "<fam>_5xx" -> "envoy_<prefix>_<fam>_xx{envoy_response_code_class="5",...}".
 * Label values are escaped (\\, \", \n). */
int stats_render_prometheus(struct stats_store *st, struct evbuffer *out, const char *filter,
			    bool used_only, char *err, size_t errlen);

#endif
