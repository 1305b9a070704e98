/* stats.c - the stats store: scopes, per-thread shards, histograms and
 * response-code families, and the main thread's summing reads.
 *
 * Memory per scope: one 64-byte-aligned array of shards; per shard one
 * block of counters/gauges and, only if the scope has histograms, one block
 * of histograms up to the last histogram index.  Both blocks get 64 bytes of
 * tail padding so two shards' hot words never share a cache line.  Exact
 * response-code arrays (4 KB) are allocated by the writing thread on first
 * use and published with a release store; readers load them with acquire.
 *
 * Concurrency: a shard is written by one thread with plain stores; the main
 * thread reads every shard with relaxed atomic loads.  A torn or stale read
 * is at worst one increment behind, as in Envoy. */
#include "stats.h"

#include <math.h>
#include <pthread.h>

/* Shared with render.c only (no private header yet). */

const double stats_hist_bounds[STATS_HIST_BUCKETS] = {
	0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000,
	300000, 600000, 1800000, 3600000,
};

const struct stats_bounds stats_default_bounds = {
	STATS_HIST_BUCKETS,
	{ 0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000,
	  300000, 600000, 1800000, 3600000 },
};

#define STATS_CODE_MIN 100
#define STATS_CODE_N 500                      /* 100..599 */
#define STATS_PAD 64                          /* tail padding against false sharing */

struct bucket_rule {
	enum stats_match kind;
	char *str;                                /* owned */
	struct stats_bounds bounds;
};

struct stats_store {
	unsigned nshards;
	struct bucket_rule *rules;                /* owned [nrules] */
	unsigned nrules;
	struct stats_scope *scopes;               /* owned; list through ->next / ->pprev */
	pthread_mutex_t lock;                     /* adding and removing scopes (rare) */
	unsigned readers;                         /* renders in progress (under lock) */
	struct stats_scope *graveyard;            /* owned; scopes unlinked during a render,
						     freed by the last reader (->dead_next) */
};

struct stats_store *stats_store_new(unsigned nshards)
{
	struct stats_store *st;

	if (nshards == 0 || nshards > STATS_MAX_SHARDS)
		die("stats: bad shard count %u", nshards);
	st = xcalloc(1, sizeof(*st));
	st->nshards = nshards;
	pthread_mutex_init(&st->lock, NULL);
	return st;
}

/* Frees the store and every scope still registered with it. */
void stats_store_free(struct stats_store *st)
{
	if (!st)
		return;
	while (st->scopes)
		stats_scope_free(st->scopes);
	for (unsigned i = 0; i < st->nrules; i++)
		xfree(st->rules[i].str);
	xfree(st->rules);
	pthread_mutex_destroy(&st->lock);
	xfree(st);
}

unsigned stats_store_nshards(const struct stats_store *st)
{
	return st->nshards;
}

void stats_store_add_bucket_rule(struct stats_store *st, enum stats_match kind, const char *str,
				 const double *bounds, unsigned n)
{
	if (n == 0 || n > STATS_HIST_MAX_BOUNDS)
		die("stats: %u bucket bounds", n);
	st->rules = xrealloc(st->rules, (st->nrules + 1) * sizeof(*st->rules));
	struct bucket_rule *r = &st->rules[st->nrules++];
	memset(r, 0, sizeof(*r));
	r->kind = kind;
	r->str = xstrdup(str);
	r->bounds.n = n;
	memcpy(r->bounds.b, bounds, n * sizeof(double));
}

static bool rule_match(const struct bucket_rule *r, const char *name)
{
	size_t n = strlen(name), k = strlen(r->str);
	switch (r->kind) {
	case STATS_MATCH_EXACT: return !strcmp(name, r->str);
	case STATS_MATCH_PREFIX: return !strncmp(name, r->str, k);
	case STATS_MATCH_SUFFIX: return n >= k && !strcmp(name + n - k, r->str);
	case STATS_MATCH_CONTAINS: return strstr(name, r->str) != NULL;
	}
	return false;
}

/* Bounds of the scope's histograms from the store's rules (main thread). */
static void scope_bounds(struct stats_store *st, struct stats_scope *s)
{
	if (!st->nrules)
		return;
	for (size_t i = 0; i < s->ndesc; i++) {
		if (s->desc[i].type != STAT_HISTOGRAM)
			continue;
		char *full = *s->name ? xasprintf("%s.%s", s->name, s->desc[i].name)
				      : xstrdup(s->desc[i].name);
		for (unsigned r = 0; r < st->nrules; r++) {
			if (rule_match(&st->rules[r], full)) {
				if (!s->hbounds)
					s->hbounds = xcalloc(s->ndesc, sizeof(*s->hbounds));
				s->hbounds[i] = &st->rules[r].bounds;
				break;
			}
		}
		xfree(full);
	}
}

struct stats_scope *stats_store_scopes(const struct stats_store *st)
{
	return __atomic_load_n(&st->scopes, __ATOMIC_ACQUIRE);
}

struct stats_scope *stats_scope_new(struct stats_store *st, const char *name,
				    const char *tag_prefix, const char *tag_name,
				    const char *tag_value, const struct stat_desc *desc,
				    size_t ndesc)
{
	struct stats_scope *s;
	size_t nhist = 0;
	void *mem;

	s = xcalloc(1, sizeof(*s));
	s->store = st;
	s->name = xstrdup(name ? name : "");
	s->tag_prefix = xstrdup(tag_prefix ? tag_prefix : s->name);
	if (tag_name && *tag_name && tag_value) {
		s->tag_name = xstrdup(tag_name);
		s->tag_value = xstrdup(tag_value);
	}
	s->desc = desc;
	s->ndesc = ndesc;
	for (size_t i = 0; i < ndesc; i++)
		if (desc[i].type == STAT_HISTOGRAM)
			nhist = i + 1;

	scope_bounds(st, s);
	s->nshards = st->nshards;
	if (posix_memalign(&mem, 64, s->nshards * sizeof(struct stats_shard)))
		die("out of memory (%u shards)", s->nshards);
	memset(mem, 0, s->nshards * sizeof(struct stats_shard));
	s->shards = mem;
	for (unsigned i = 0; i < s->nshards; i++) {
		s->shards[i].vals = xcalloc(1, ndesc * sizeof(int64_t) + STATS_PAD);
		if (nhist)
			s->shards[i].hists = xcalloc(1, nhist * sizeof(struct stats_hist) + STATS_PAD);
	}

	/* A worker may add a scope (first use of a dynamic name, e.g.
	 * grpc_stats per method) while the main thread renders or removes one:
	 * changes to the list are serialised by the store's lock, and the new
	 * head is published with a release store so a reader walking ->next
	 * without the lock sees the old list or the complete new scope. */
	pthread_mutex_lock(&st->lock);
	s->next = st->scopes;
	if (s->next)
		s->next->pprev = &s->next;
	s->pprev = &st->scopes;
	__atomic_store_n(&st->scopes, s, __ATOMIC_RELEASE);
	pthread_mutex_unlock(&st->lock);
	return s;
}

int stats_scope_add_family(struct stats_scope *s, const char *family)
{
	for (int i = 0; i < STATS_MAX_CODE_FAMILIES; i++) {
		if (!s->families[i]) {
			s->families[i] = family;
			return i;
		}
	}
	die("stats: scope \"%s\" has more than %d code families", s->name,
	    STATS_MAX_CODE_FAMILIES);
}

static void scope_destroy(struct stats_scope *s);

/* Any thread: the last reference to an old snapshot may be dropped by a
 * worker while the main thread renders /stats.  The scope leaves the list
 * at once; if a render is walking the list (or holds items pointing at the
 * scope) its memory stays until that render ends (stats_store_read_end). */
void stats_scope_free(struct stats_scope *s)
{
	struct stats_store *st;

	if (!s)
		return;
	st = s->store;
	pthread_mutex_lock(&st->lock);
	__atomic_store_n(s->pprev, s->next, __ATOMIC_RELEASE);   /* O(1) unlink */
	if (s->next)
		s->next->pprev = s->pprev;
	if (st->readers) {
		s->dead_next = st->graveyard;
		st->graveyard = s;
		pthread_mutex_unlock(&st->lock);
		return;
	}
	pthread_mutex_unlock(&st->lock);
	scope_destroy(s);
}

void stats_store_read_begin(struct stats_store *st)
{
	pthread_mutex_lock(&st->lock);
	st->readers++;
	pthread_mutex_unlock(&st->lock);
}

void stats_store_read_end(struct stats_store *st)
{
	struct stats_scope *dead = NULL;

	pthread_mutex_lock(&st->lock);
	if (--st->readers == 0) {
		dead = st->graveyard;
		st->graveyard = NULL;
	}
	pthread_mutex_unlock(&st->lock);
	while (dead) {
		struct stats_scope *n = dead->dead_next;

		scope_destroy(dead);
		dead = n;
	}
}

static void scope_destroy(struct stats_scope *s)
{
	for (unsigned i = 0; i < s->nshards; i++) {
		struct stats_shard *sh = &s->shards[i];
		xfree(sh->vals);
		xfree(sh->hists);
		for (int f = 0; f < STATS_MAX_CODE_FAMILIES; f++)
			xfree(sh->codes[f]);
	}
	free(s->shards);
	xfree(s->hbounds);
	xfree(s->name);
	xfree(s->tag_prefix);
	xfree(s->tag_name);
	xfree(s->tag_value);
	xfree(s);
}

static unsigned hist_bucket(const struct stats_bounds *bd, double value)
{
	unsigned lo = 0, hi = bd->n;

	/* First bound >= value (le is inclusive); n = overflow. */
	while (lo < hi) {
		unsigned mid = (lo + hi) / 2;
		if (value <= bd->b[mid])
			hi = mid;
		else
			lo = mid + 1;
	}
	return lo;
}

/* NaN is dropped: it would poison the sum forever. */
void stats_hist_record(struct stats_scope *s, unsigned shard, unsigned idx, double value)
{
	struct stats_hist *h;

	if (isnan(value))
		return;
	h = &s->shards[shard].hists[idx];
	h->buckets[hist_bucket(s->hbounds && s->hbounds[idx] ? s->hbounds[idx]
							      : &stats_default_bounds, value)]++;
	h->count++;
	h->sum += value;
}

/* Codes outside 100..599 and unknown families are ignored. */
void stats_code_inc(struct stats_scope *s, unsigned shard, int family, int code)
{
	struct stats_shard *sh = &s->shards[shard];
	uint64_t *codes;

	if (family < 0 || family >= STATS_MAX_CODE_FAMILIES || !s->families[family])
		return;
	if (code < STATS_CODE_MIN || code >= STATS_CODE_MIN + STATS_CODE_N)
		return;
	/* Only this thread stores the pointer, so a relaxed load suffices here. */
	codes = __atomic_load_n(&sh->codes[family], __ATOMIC_RELAXED);
	if (unlikely(!codes)) {
		codes = xcalloc(STATS_CODE_N, sizeof(uint64_t));
		__atomic_store_n(&sh->codes[family], codes, __ATOMIC_RELEASE);
	}
	codes[code - STATS_CODE_MIN]++;
	sh->classes[family][code / 100 - 1]++;
}

int64_t stats_value(const struct stats_scope *s, unsigned idx)
{
	int64_t sum = 0;

	for (unsigned i = 0; i < s->nshards; i++)
		sum += __atomic_load_n(&s->shards[i].vals[idx], __ATOMIC_RELAXED);
	return sum;
}

/* code 100..599: that exact code; code 1..5: the class counter (5 = 5xx). */
uint64_t stats_code_value(const struct stats_scope *s, int family, int code)
{
	uint64_t sum = 0;

	if (family < 0 || family >= STATS_MAX_CODE_FAMILIES || !s->families[family])
		return 0;
	if (code >= 1 && code <= 5) {
		for (unsigned i = 0; i < s->nshards; i++)
			sum += __atomic_load_n(&s->shards[i].classes[family][code - 1],
					       __ATOMIC_RELAXED);
		return sum;
	}
	if (code < STATS_CODE_MIN || code >= STATS_CODE_MIN + STATS_CODE_N)
		return 0;
	for (unsigned i = 0; i < s->nshards; i++) {
		const uint64_t *codes = __atomic_load_n(&s->shards[i].codes[family],
							__ATOMIC_ACQUIRE);
		if (codes)
			sum += __atomic_load_n(&codes[code - STATS_CODE_MIN], __ATOMIC_RELAXED);
	}
	return sum;
}

void stats_hist_merge(const struct stats_scope *s, unsigned idx, struct stats_hist *out)
{
	memset(out, 0, sizeof(*out));
	out->bounds = s->hbounds ? s->hbounds[idx] : NULL;
	for (unsigned i = 0; i < s->nshards; i++) {
		const struct stats_hist *h = &s->shards[i].hists[idx];
		double sum;

		for (unsigned b = 0; b <= STATS_HIST_MAX_BOUNDS; b++)
			out->buckets[b] += __atomic_load_n(&h->buckets[b], __ATOMIC_RELAXED);
		out->count += __atomic_load_n(&h->count, __ATOMIC_RELAXED);
		__atomic_load(&h->sum, &sum, __ATOMIC_RELAXED);
		out->sum += sum;
	}
}

/* Linear interpolation inside the bucket holding rank q*count.  Bucket i
 * spans (bound[i-1], bound[i]] (bucket 0 starts at 0); the overflow bucket
 * has no upper edge, so values there are reported as the last bound. */
double stats_hist_quantile(const struct stats_hist *h, double q)
{
	const struct stats_bounds *bd = h->bounds ? h->bounds : &stats_default_bounds;
	uint64_t total = 0, cum = 0;
	double target;

	for (unsigned b = 0; b <= bd->n; b++)
		total += h->buckets[b];
	if (total == 0 || isnan(q))
		return NAN;
	q = q < 0 ? 0 : q > 1 ? 1 : q;
	target = q * (double)total;
	for (unsigned b = 0; b <= bd->n; b++) {
		double lo, hi;

		if (!h->buckets[b])
			continue;
		if ((double)(cum + h->buckets[b]) >= target) {
			lo = b == 0 ? 0 : bd->b[b - 1];
			hi = b < bd->n ? bd->b[b] : lo;
			return lo + (target - (double)cum) / (double)h->buckets[b] * (hi - lo);
		}
		cum += h->buckets[b];
	}
	return bd->b[bd->n - 1]; /* not reached */
}

void stats_reset_counters(struct stats_store *st)
{
	stats_store_read_begin(st);
	for (struct stats_scope *s = stats_store_scopes(st); s; s = s->next) {
		for (unsigned i = 0; i < s->nshards; i++) {
			struct stats_shard *sh = &s->shards[i];

			for (size_t d = 0; d < s->ndesc; d++) {
				if (s->desc[d].type == STAT_COUNTER)
					__atomic_store_n(&sh->vals[d], 0, __ATOMIC_RELAXED);
				else if (s->desc[d].type == STAT_HISTOGRAM)
					memset(&sh->hists[d], 0, sizeof(sh->hists[d]));
			}
			for (int f = 0; f < STATS_MAX_CODE_FAMILIES; f++) {
				uint64_t *codes = __atomic_load_n(&sh->codes[f], __ATOMIC_ACQUIRE);
				if (codes)
					memset(codes, 0, STATS_CODE_N * sizeof(uint64_t));
				memset(sh->classes[f], 0, sizeof(sh->classes[f]));
			}
		}
	}
	stats_store_read_end(st);
}
