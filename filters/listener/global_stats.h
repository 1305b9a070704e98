/* global_stats.h - a stats scope shared by every config of one listener
 * filter ("http_inspector.*" is a single tree in Envoy, whatever number of
 * listeners use the filter).  The first config creates it; the last one to
 * go frees it.  Parsing is on the main thread; frees may come from a worker
 * dropping the last snapshot reference, hence the atomic count. */
#ifndef REMORA_LISTENER_GLOBAL_STATS_H
#define REMORA_LISTENER_GLOBAL_STATS_H

#include "stats/stats.h"

struct global_stats {
	struct stats_store *store;           /* not owned */
	struct stats_scope *scope;           /* owned while refs > 0 */
	int refs;                            /* atomic */
};

static inline struct stats_scope *global_stats_get(struct global_stats *g, struct stats_store *st,
						   const char *name, const struct stat_desc *desc,
						   size_t n)
{
	if (__atomic_load_n(&g->refs, __ATOMIC_ACQUIRE) && g->store == st) {
		__atomic_add_fetch(&g->refs, 1, __ATOMIC_ACQ_REL);
		return g->scope;
	}
	if (__atomic_load_n(&g->refs, __ATOMIC_ACQUIRE))   /* another store (unit tests) */
		return stats_scope_new(st, name, name, NULL, NULL, desc, n);
	g->store = st;
	g->scope = stats_scope_new(st, name, name, NULL, NULL, desc, n);
	__atomic_store_n(&g->refs, 1, __ATOMIC_RELEASE);
	return g->scope;
}

static inline void global_stats_put(struct global_stats *g, struct stats_scope *s)
{
	if (s != g->scope) {
		stats_scope_free(s);
		return;
	}
	if (!__atomic_sub_fetch(&g->refs, 1, __ATOMIC_ACQ_REL)) {
		g->scope = NULL;
		g->store = NULL;
		stats_scope_free(s);
	}
}

#endif
