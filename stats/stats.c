/* stats.c - the stats store: scopes, per-thread shards, histograms and
 * response-code families, and the main thread's summing reads.
 *
 * Memory per scope: one block holding the scope, its shard pointer array,
 * its strings and shard 0 (the main thread's values).  A worker's shard
 * (its values on whole cache lines of their own), a shard's histograms
 * (only the scope's histograms, mapped by hslot, which scopes with the same
 * stat list share) and its response-code arrays (4 KB) are allocated by
 * the writing thread on first use and published with a release store;
 * readers load them with acquire.  Rarely non-zero main-thread stats (the
 * circuit-breaker gauges) can be stored lazily (stats_lazy_set), and tag
 * names and prefixes are interned.  At 10,000 xDS clusters this is what
 * keeps an idle cluster's stats near 0.35 KB (it was ~26 KB when every shard
 * had eager histogram slots up to the last histogram's index, and ~2.4 KB
 * with every worker's counters allocated up front and the circuit breakers
 * in scopes of their own).
 *
 * Concurrency: a shard is written by one thread with plain stores; the main
 * thread reads every shard with relaxed atomic loads.  A torn or stale read
 * is at worst one increment behind, as in Envoy. */
#include "stats.h"

#include <math.h>
#include <pthread.h>

#include "proxy/strmap.h"

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

struct bucket_rule {
	enum stats_match kind;
	char *str;                                /* owned */
	struct stats_bounds bounds;
};

/* A histogram slot map, shared by every scope with the same stat list. */
struct hslot_map {
	const struct stat_desc *desc;             /* not owned, informative only (may dangle) */
	size_t ndesc;
	struct hslot_map *next;
	uint16_t slot[];                          /* [ndesc] */
};

struct stats_store {
	unsigned nshards;
	struct hslot_map *hslots;                 /* owned list (under lock) */
	struct bucket_rule *rules;                /* owned [nrules] */
	unsigned nrules;
	struct stats_scope *scopes;               /* owned; list through ->next / ->pprev */
	struct stats_scope **hash;                /* owned [hcap] chains (->hnext) of the
						     registered scopes by name (under lock) */
	size_t hcap, nscopes;
	pthread_mutex_t lock;                     /* adding and removing scopes (rare) */
	unsigned readers;                         /* renders in progress (under lock) */
	struct stats_scope *graveyard;            /* owned; scopes unlinked during a render,
						     freed by the last reader (->dead_next) */
	struct strmap interned;                   /* tag names and prefixes shared by scopes
						     (struct interned, owned; under lock) */
};

/* A string many scopes point to ("envoy_cluster_name", "cluster"), kept
 * until the store goes: at 10,000 clusters that is ~30 bytes a scope not
 * copied.  Capped (INTERN_MAX): past it a scope copies its strings. */
struct interned {
	char *key;                                /* -> s */
	char s[];
};
#define INTERN_MAX 4096

struct stats_store *stats_store_new(unsigned nshards)
{
	struct stats_store *st;

	if (nshards == 0 || nshards > STATS_MAX_SHARDS)
		die("stats: bad shard count %u", nshards);
	st = xcalloc(1, sizeof(*st));
	st->nshards = nshards;
	strmap_init(&st->interned, offsetof(struct interned, key));
	pthread_mutex_init(&st->lock, NULL);
	return st;
}

/* str as interned by the store (under the lock), or NULL past INTERN_MAX. */
static const char *intern_locked(struct stats_store *st, const char *str)
{
	struct interned *in = strmap_get(&st->interned, str);
	size_t len;

	if (in)
		return in->s;
	if (st->interned.n >= INTERN_MAX)
		return NULL;
	len = strlen(str);
	in = xmalloc(sizeof(*in) + len + 1);
	memcpy(in->s, str, len + 1);
	in->key = in->s;
	strmap_put(&st->interned, in);
	return in->s;
}

static void scope_unlink_locked(struct stats_scope *s);
static void scope_destroy(struct stats_scope *s);

/* Frees the store and every scope still registered with it (whatever
 * references are left). */
void stats_store_free(struct stats_store *st)
{
	if (!st)
		return;
	while (st->scopes) {
		struct stats_scope *s = st->scopes;

		scope_unlink_locked(s);
		scope_destroy(s);
	}
	xfree(st->hash);
	for (unsigned i = 0; i < st->nrules; i++)
		xfree(st->rules[i].str);
	xfree(st->rules);
	while (st->hslots) {
		struct hslot_map *m = st->hslots;
		st->hslots = m->next;
		xfree(m);
	}
	for (size_t i = 0; i < st->interned.cap; i++)
		if (strmap_live(&st->interned, i))
			xfree(st->interned.slots[i]);
	strmap_fini(&st->interned);
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

#define ALIGN_UP(x, a) (((x) + (a) - 1) & ~(size_t)((a) - 1))

static char *put_str(char **p, const char *s)
{
	size_t n = strlen(s) + 1;
	char *r = *p;

	memcpy(r, s, n);
	*p += n;
	return r;
}

/* The histogram slot map of a stat list: one per distinct set of histogram
 * positions, for the store's lifetime (the scopes of 10,000 clusters share
 * one).  Matched by content, not by the desc pointer: a stat list copied
 * into a scope (STATS_SCOPE_COPY_DESC) is freed with it and its address may
 * be reused by another list.  Under the store's lock (stats_scope_get). */
static const uint16_t *hslot_get_locked(struct stats_store *st, const struct stat_desc *desc,
					size_t ndesc)
{
	struct hslot_map *m;
	uint16_t n = 0;

	for (m = st->hslots; m; m = m->next) {
		size_t i;

		if (m->ndesc != ndesc)
			continue;
		for (i = 0; i < ndesc; i++)
			if ((desc[i].type == STAT_HISTOGRAM) != (m->slot[i] != UINT16_MAX))
				break;
		if (i == ndesc)
			return m->slot;
	}
	m = xmalloc(sizeof(*m) + ndesc * sizeof(uint16_t));
	m->desc = desc;
	m->ndesc = ndesc;
	for (size_t i = 0; i < ndesc; i++)
		m->slot[i] = desc[i].type == STAT_HISTOGRAM ? n++ : UINT16_MAX;
	m->next = st->hslots;
	st->hslots = m;
	return m->slot;
}

/* vals such that vals[idx] is the first of the shard's values for idx = lo
 * (the shard stores desc[lo..hi) from v on).  Computed on integers: the
 * pointer itself may lie before the storage, only vals[lo..hi) is used. */
static int64_t *biased_vals(int64_t *v, size_t lo)
{
	return (int64_t *)((uintptr_t)v - lo * sizeof(int64_t));
}

/* One block: [scope][shard pointers][shard 0][shard 0's values][strings].
 * Under the store's lock (interning).  The strings: name; tag_prefix when
 * it is neither name nor interned; tag_name when not interned; tag_value
 * when name does not end with it.  Shard 0 holds desc[lo0..lazy0). */
static struct stats_scope *scope_alloc(struct stats_store *st, unsigned nshards, const char *name,
				       const char *tag_prefix, const char *tag_name,
				       const char *tag_value, const struct stat_desc *desc,
				       size_t ndesc, size_t nw, size_t lo0, size_t lazy0)
{
	struct stats_scope *s;
	bool tagged = tag_name && *tag_name && tag_value;
	unsigned nhist = 0;
	size_t off_ptrs, off_sh0, off_vals, off_str, total, nlen, vlen = 0;
	const char *tp = NULL, *tn = NULL;
	bool value_in_name = false;
	char *base, *p;

	name = name ? name : "";
	tag_prefix = tag_prefix ? tag_prefix : name;
	nlen = strlen(name);
	for (size_t i = 0; i < ndesc; i++)
		if (desc[i].type == STAT_HISTOGRAM && i >= lazy0)
			die("stats: scope '%s': a histogram cannot be stored lazily", name);
		else if (desc[i].type == STAT_HISTOGRAM)
			nhist++;
	if (nhist > UINT16_MAX || ndesc > UINT32_MAX)
		die("stats: %u histograms in one scope", nhist);
	if (lo0 > nw || nw > lazy0 || lo0 > lazy0 || lazy0 > ndesc)
		die("stats: scope '%s': bad split %zu/%zu/%zu of %zu", name, nw, lo0, lazy0, ndesc);
	if (strcmp(tag_prefix, name))
		tp = intern_locked(st, tag_prefix);
	if (tagged) {
		tn = intern_locked(st, tag_name);
		vlen = strlen(tag_value);
		value_in_name = vlen <= nlen && !memcmp(name + nlen - vlen, tag_value, vlen);
	}
	off_ptrs = ALIGN_UP(sizeof(*s), _Alignof(struct stats_shard *));
	off_sh0 = ALIGN_UP(off_ptrs + nshards * sizeof(struct stats_shard *),
			   _Alignof(struct stats_shard));
	off_vals = off_sh0 + sizeof(struct stats_shard);
	off_str = off_vals + (lazy0 - lo0) * sizeof(int64_t);
	total = off_str + nlen + 1;
	if (strcmp(tag_prefix, name) && !tp)
		total += strlen(tag_prefix) + 1;
	if (tagged && !tn)
		total += strlen(tag_name) + 1;
	if (tagged && !value_in_name)
		total += vlen + 1;
	base = xcalloc(1, total);
	s = (struct stats_scope *)base;
	s->store = st;
	s->desc = desc;
	s->ndesc = (uint32_t)ndesc;
	s->nw = (uint32_t)nw;
	s->lo0 = (uint32_t)lo0;
	s->lazy0 = (uint32_t)lazy0;
	s->nhist = nhist;
	s->nshards = nshards;
	s->shards = (struct stats_shard **)(base + off_ptrs);
	s->shards[0] = (struct stats_shard *)(base + off_sh0);
	s->shards[0]->vals = biased_vals((int64_t *)(base + off_vals), lo0);
	if (nhist)
		s->hslot = hslot_get_locked(st, desc, ndesc);
	p = base + off_str;
	s->name = put_str(&p, name);
	s->tag_prefix = !strcmp(tag_prefix, name) ? s->name : tp ? tp : put_str(&p, tag_prefix);
	if (tagged) {
		s->tag_name = tn ? tn : put_str(&p, tag_name);
		s->tag_value = value_in_name ? s->name + nlen - vlen : put_str(&p, tag_value);
	}
	return s;
}

/* A worker's shard: values desc[0..nw) on whole cache lines of its own. */
struct stats_shard *stats_shard_new(struct stats_scope *s, unsigned shard)
{
	size_t size = ALIGN_UP(sizeof(struct stats_shard) + s->nw * sizeof(int64_t), 64);
	struct stats_shard *sh;
	void *mem;

	if (shard == 0 || shard >= s->nshards)
		die("stats: scope '%s': no shard %u", s->name, shard);
	if (posix_memalign(&mem, 64, size))
		die("out of memory (stats shard of %zu bytes)", size);
	memset(mem, 0, size);
	sh = mem;
	sh->vals = (int64_t *)(sh + 1);
	__atomic_store_n(&s->shards[shard], sh, __ATOMIC_RELEASE);
	return sh;
}

/* Does shard i hold stat idx? */
static inline bool shard_holds(const struct stats_scope *s, unsigned i, size_t idx)
{
	return i == 0 ? idx >= s->lo0 && idx < s->lazy0 : idx < s->nw;
}

/* The lazy block of s for writing stat idx (main thread); NULL while it is
 * not allocated and v (the value to store, or to add) is 0. */
static int64_t *lazy_block(struct stats_scope *s, unsigned idx, int64_t v)
{
	int64_t *l = s->lazy;

	if (idx < s->lazy0 || idx >= s->ndesc)
		die("stats: scope '%s': stat %u is not stored lazily", s->name, idx);
	if (!l && v) {
		l = xcalloc(s->ndesc - s->lazy0, sizeof(*l));
		__atomic_store_n(&s->lazy, l, __ATOMIC_RELEASE);
	}
	return l;
}

void stats_lazy_set(struct stats_scope *s, unsigned idx, int64_t v)
{
	int64_t *l = lazy_block(s, idx, v);

	if (l)
		__atomic_store_n(&l[idx - s->lazy0], v, __ATOMIC_RELAXED);
}

void stats_lazy_add(struct stats_scope *s, unsigned idx, int64_t v)
{
	int64_t *l = lazy_block(s, idx, v);

	if (l)
		__atomic_store_n(&l[idx - s->lazy0], l[idx - s->lazy0] + v, __ATOMIC_RELAXED);
}


/* ---- scopes shared by name ----
 *
 * The store keeps its registered scopes in a hash by full name (chains
 * through ->hnext, under the lock; renders walk the ->next list instead and
 * never look at the hash).  A scope is found again when the name, the shard
 * count and the stat list (by content: two X-macro lists with the same
 * names and types are one kind) match. */

static uint32_t name_hash(const char *s)
{
	uint32_t h = 2166136261u;

	while (*s)
		h = (h ^ (unsigned char)*s++) * 16777619u;
	return h;
}

static bool same_desc(const struct stats_scope *s, const struct stat_desc *desc, size_t ndesc)
{
	if (s->ndesc != ndesc)
		return false;
	if (s->desc == desc)
		return true;
	for (size_t i = 0; i < ndesc; i++)
		if (s->desc[i].type != desc[i].type || strcmp(s->desc[i].name, desc[i].name))
			return false;
	return true;
}

static struct stats_scope *hash_find_locked(struct stats_store *st, uint32_t h, const char *name,
					    unsigned nshards, const struct stat_desc *desc,
					    size_t ndesc, size_t nw, size_t lo0, size_t lazy0)
{
	if (!st->hcap)
		return NULL;
	for (struct stats_scope *s = st->hash[h & (st->hcap - 1)]; s; s = s->hnext)
		if (s->hash == h && s->nshards == nshards && s->nw == nw && s->lo0 == lo0 &&
		    s->lazy0 == lazy0 &&
		    !strcmp(s->name, name) && same_desc(s, desc, ndesc))
			return s;
	return NULL;
}

static void hash_insert_locked(struct stats_store *st, struct stats_scope *s)
{
	if (st->nscopes + 1 > 2 * st->hcap) {   /* at 2 scopes a bucket: double (4-8 B a scope) */
		size_t ncap = st->hcap ? st->hcap * 2 : 64;
		struct stats_scope **nh = xcalloc(ncap, sizeof(*nh));

		for (size_t i = 0; i < st->hcap; i++) {
			struct stats_scope *c = st->hash[i], *n;

			for (; c; c = n) {
				n = c->hnext;
				c->hnext = nh[c->hash & (ncap - 1)];
				nh[c->hash & (ncap - 1)] = c;
			}
		}
		xfree(st->hash);
		st->hash = nh;
		st->hcap = ncap;
	}
	s->hnext = st->hash[s->hash & (st->hcap - 1)];
	st->hash[s->hash & (st->hcap - 1)] = s;
	st->nscopes++;
}

/* Off the list and the hash (under the lock, or at store teardown). */
static void scope_unlink_locked(struct stats_scope *s)
{
	struct stats_store *st = s->store;
	struct stats_scope **pp = &st->hash[s->hash & (st->hcap - 1)];

	while (*pp && *pp != s)
		pp = &(*pp)->hnext;
	if (*pp) {
		*pp = s->hnext;
		st->nscopes--;
	}
	s->hnext = NULL;
	__atomic_store_n(s->pprev, s->next, __ATOMIC_RELEASE);   /* O(1) unlink */
	if (s->next)
		s->next->pprev = s->pprev;
}

/* The scope's extra block (stats.h: ->extra): the second tag's strings,
 * then the copied stat list and its names.  NULL when neither is asked. */
static char *scope_extra(struct stats_scope *s, const struct stats_scope_spec *sp)
{
	bool tag2 = sp->tag2_name && *sp->tag2_name && sp->tag2_value;
	bool copy = sp->flags & STATS_SCOPE_COPY_DESC;
	size_t off_desc, total;
	char *x, *p;

	if (!tag2 && !copy)
		return NULL;
	total = tag2 ? strlen(sp->tag2_name) + 1 + strlen(sp->tag2_value) + 1 : 2;
	off_desc = ALIGN_UP(total, _Alignof(struct stat_desc));
	total = off_desc;
	if (copy) {
		total += sp->ndesc * sizeof(struct stat_desc);
		for (size_t i = 0; i < sp->ndesc; i++)
			total += strlen(sp->desc[i].name) + 1;
	}
	x = xcalloc(1, total);
	p = x;
	if (tag2) {
		put_str(&p, sp->tag2_name);
		put_str(&p, sp->tag2_value);
	}
	if (copy) {
		struct stat_desc *d = (struct stat_desc *)(x + off_desc);

		p = (char *)(d + sp->ndesc);
		for (size_t i = 0; i < sp->ndesc; i++) {
			d[i].type = sp->desc[i].type;
			d[i].name = put_str(&p, sp->desc[i].name);
		}
		s->desc = d;
	}
	return x;
}

struct stats_scope *stats_scope_get(struct stats_store *st, const struct stats_scope_spec *sp)
{
	const char *name = sp->name ? sp->name : "";
	unsigned nshards = sp->flags & STATS_SCOPE_MAIN ? 1 : st->nshards;
	uint32_t h = name_hash(name);
	size_t nw, lo0, lazy0;
	struct stats_scope *s;

	if (sp->flags & STATS_SCOPE_SPLIT) {        /* worker stats first, main-only last */
		nw = sp->nw;
		lo0 = sp->lo0;
	} else if (nshards == 1) {                 /* shard 0 holds everything */
		nw = 0;
		lo0 = 0;
	} else {                                   /* every shard holds everything */
		nw = sp->ndesc;
		lo0 = 0;
	}
	lazy0 = sp->ndesc - MIN(sp->nlazy, sp->ndesc);
	nw = MIN(nw, lazy0);

	/* Creation holds the lock throughout (a worker may create a scope, e.g.
	 * grpc_stats per method, while the main thread creates or frees one):
	 * two creators of one name get one scope.  The new head of the list
	 * is published with a release store so a reader walking ->next without
	 * the lock sees the old list or the complete new scope. */
	pthread_mutex_lock(&st->lock);
	s = hash_find_locked(st, h, name, nshards, sp->desc, sp->ndesc, nw, lo0, lazy0);
	if (s) {
		s->refs++;
		pthread_mutex_unlock(&st->lock);
		return s;
	}
	s = scope_alloc(st, nshards, name, sp->tag_prefix, sp->tag_name, sp->tag_value, sp->desc,
			sp->ndesc, nw, lo0, lazy0);
	s->hash = h;
	s->refs = 1;
	s->extra = scope_extra(s, sp);
	scope_bounds(st, s);
	hash_insert_locked(st, s);
	s->next = st->scopes;
	if (s->next)
		s->next->pprev = &s->next;
	s->pprev = &st->scopes;
	__atomic_store_n(&st->scopes, s, __ATOMIC_RELEASE);
	pthread_mutex_unlock(&st->lock);
	return s;
}

struct stats_scope *stats_scope_new(struct stats_store *st, const char *name,
				    const char *tag_prefix, const char *tag_name,
				    const char *tag_value, const struct stat_desc *desc,
				    size_t ndesc)
{
	struct stats_scope_spec sp = { .name = name, .tag_prefix = tag_prefix,
				       .tag_name = tag_name, .tag_value = tag_value,
				       .desc = desc, .ndesc = ndesc };

	return stats_scope_get(st, &sp);
}

struct stats_scope *stats_scope_new_split(struct stats_store *st, const char *name,
					  const char *tag_prefix, const char *tag_name,
					  const char *tag_value, const struct stat_desc *desc,
					  size_t ndesc, size_t nw, size_t lo0)
{
	struct stats_scope_spec sp = { .name = name, .tag_prefix = tag_prefix,
				       .tag_name = tag_name, .tag_value = tag_value,
				       .desc = desc, .ndesc = ndesc, .nw = nw, .lo0 = lo0,
				       .flags = STATS_SCOPE_SPLIT };

	return stats_scope_get(st, &sp);
}

struct stats_scope *stats_scope_new_main(struct stats_store *st, const char *name,
					 const char *tag_prefix, const char *tag_name,
					 const char *tag_value, const struct stat_desc *desc,
					 size_t ndesc)
{
	struct stats_scope_spec sp = { .name = name, .tag_prefix = tag_prefix,
				       .tag_name = tag_name, .tag_value = tag_value,
				       .desc = desc, .ndesc = ndesc, .flags = STATS_SCOPE_MAIN };

	return stats_scope_get(st, &sp);
}

size_t stats_store_nscopes(struct stats_store *st)
{
	size_t n;

	pthread_mutex_lock(&st->lock);
	n = st->nscopes;
	pthread_mutex_unlock(&st->lock);
	return n;
}

int stats_scope_add_family(struct stats_scope *s, const char *family)
{
	for (int i = 0; i < STATS_MAX_CODE_FAMILIES; i++) {
		if (s->families[i] && !strcmp(s->families[i], family))
			return i;   /* a shared scope: its first user added it */
		if (!s->families[i]) {
			s->families[i] = family;
			return i;
		}
	}
	die("stats: scope \"%s\" has more than %d code families", s->name,
	    STATS_MAX_CODE_FAMILIES);
}

/* Any thread: the last reference to an old snapshot may be dropped by a
 * worker while the main thread renders /stats.  When the last user drops
 * it, the scope leaves the list and the hash at once (a later creator of the
 * name gets a new one); if a render is walking the list (or holds items
 * pointing at the scope) its memory stays until that render ends
 * (stats_store_read_end). */
void stats_scope_free(struct stats_scope *s)
{
	struct stats_store *st;

	if (!s)
		return;
	st = s->store;
	pthread_mutex_lock(&st->lock);
	if (--s->refs) {
		pthread_mutex_unlock(&st->lock);
		return;
	}
	scope_unlink_locked(s);
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
		struct stats_shard *sh = s->shards[i];
		if (!sh)
			continue;
		xfree(sh->hists);
		for (int f = 0; f < STATS_MAX_CODE_FAMILIES; f++)
			xfree(sh->codes[f]);
		if (i)
			free(sh);
	}
	xfree(s->hbounds);
	xfree(s->lazy);
	xfree(s->extra);
	xfree(s);                                 /* the block: strings, shard 0 */
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

/* NaN is dropped: it would poison the sum forever.  A shard's histogram
 * block is allocated by its own thread on the first record (once per scope
 * and thread; a cluster that never sees a request never pays for it) and
 * published with a release store for the main thread's merge. */
void stats_hist_record(struct stats_scope *s, unsigned shard, unsigned idx, double value)
{
	struct stats_shard *sh;
	struct stats_hist *hs, *h;

	if (isnan(value))
		return;
	sh = stats_shard_of(s, shard);
	hs = __atomic_load_n(&sh->hists, __ATOMIC_RELAXED);   /* only this thread stores it */
	if (unlikely(!hs)) {
		hs = xcalloc(s->nhist, sizeof(*hs));
		__atomic_store_n(&sh->hists, hs, __ATOMIC_RELEASE);
	}
	h = &hs[s->hslot[idx]];
	h->buckets[hist_bucket(s->hbounds && s->hbounds[idx] ? s->hbounds[idx]
							      : &stats_default_bounds, value)]++;
	h->count++;
	h->sum += value;
}

/* Codes outside 100..599 and unknown families are ignored. */
void stats_code_inc(struct stats_scope *s, unsigned shard, int family, int code)
{
	struct stats_shard *sh;
	uint64_t *codes;

	if (family < 0 || family >= STATS_MAX_CODE_FAMILIES || !s->families[family])
		return;
	if (code < STATS_CODE_MIN || code >= STATS_CODE_MIN + STATS_CODE_N)
		return;
	sh = stats_shard_of(s, shard);
	/* Only this thread stores the pointer, so a relaxed load suffices here. */
	codes = __atomic_load_n(&sh->codes[family], __ATOMIC_RELAXED);
	if (unlikely(!codes)) {
		codes = xcalloc(STATS_CODES_LEN, sizeof(uint64_t));
		__atomic_store_n(&sh->codes[family], codes, __ATOMIC_RELEASE);
	}
	codes[code - STATS_CODE_MIN]++;
	codes[STATS_CODE_N + code / 100 - 1]++;   /* the class (1xx..5xx) */
}

int64_t stats_value(const struct stats_scope *s, unsigned idx)
{
	int64_t sum = 0;

	for (unsigned i = 0; i < s->nshards; i++) {
		const struct stats_shard *sh = __atomic_load_n(&s->shards[i], __ATOMIC_ACQUIRE);
		if (sh && shard_holds(s, i, idx))
			sum += __atomic_load_n(&sh->vals[idx], __ATOMIC_RELAXED);
	}
	if (idx >= s->lazy0) {
		const int64_t *l = __atomic_load_n(&s->lazy, __ATOMIC_ACQUIRE);
		if (l)
			sum += __atomic_load_n(&l[idx - s->lazy0], __ATOMIC_RELAXED);
	}
	return sum;
}

/* code 100..599: that exact code; code 1..5: the class counter (5 = 5xx). */
uint64_t stats_code_value(const struct stats_scope *s, int family, int code)
{
	uint64_t sum = 0;

	if (family < 0 || family >= STATS_MAX_CODE_FAMILIES || !s->families[family])
		return 0;
	if (code >= 1 && code <= 5)
		code = STATS_CODE_MIN + STATS_CODE_N + code - 1;   /* the class slot */
	else if (code < STATS_CODE_MIN || code >= STATS_CODE_MIN + STATS_CODE_N)
		return 0;
	for (unsigned i = 0; i < s->nshards; i++) {
		const struct stats_shard *sh = __atomic_load_n(&s->shards[i], __ATOMIC_ACQUIRE);
		const uint64_t *codes = sh ? __atomic_load_n(&sh->codes[family], __ATOMIC_ACQUIRE)
					   : NULL;
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
		const struct stats_shard *sh = __atomic_load_n(&s->shards[i], __ATOMIC_ACQUIRE);
		const struct stats_hist *hs = sh ? __atomic_load_n(&sh->hists, __ATOMIC_ACQUIRE)
						 : NULL;
		const struct stats_hist *h;
		double sum;

		if (!hs)
			continue;
		h = &hs[s->hslot[idx]];
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
		int64_t *l = __atomic_load_n(&s->lazy, __ATOMIC_ACQUIRE);

		for (size_t d = s->lazy0; l && d < s->ndesc; d++)
			if (s->desc[d].type == STAT_COUNTER)
				__atomic_store_n(&l[d - s->lazy0], 0, __ATOMIC_RELAXED);
		for (unsigned i = 0; i < s->nshards; i++) {
			struct stats_shard *sh = __atomic_load_n(&s->shards[i], __ATOMIC_ACQUIRE);
			struct stats_hist *hs;

			if (!sh)
				continue;
			hs = __atomic_load_n(&sh->hists, __ATOMIC_ACQUIRE);
			for (size_t d = 0; d < s->ndesc; d++)
				if (s->desc[d].type == STAT_COUNTER && shard_holds(s, i, d))
					__atomic_store_n(&sh->vals[d], 0, __ATOMIC_RELAXED);
			if (hs)
				memset(hs, 0, s->nhist * sizeof(*hs));
			for (int f = 0; f < STATS_MAX_CODE_FAMILIES; f++) {
				uint64_t *codes = __atomic_load_n(&sh->codes[f], __ATOMIC_ACQUIRE);
				if (codes)
					memset(codes, 0, STATS_CODES_LEN * sizeof(uint64_t));
			}
		}
	}
	stats_store_read_end(st);
}
