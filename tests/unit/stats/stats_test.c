/* stats_test.c - store, scopes, shards, code families, histograms. */
#include "test.h"
#include "stats/stats.h"

#include <math.h>
#include <pthread.h>
#include <event2/buffer.h>

#define T_STATS(X) X(COUNTER, rq_total) X(GAUGE, cx_active) X(HISTOGRAM, rq_time) \
	X(COUNTER, cx_total) X(GAUGE, membership_total)
enum { T_STATS(STATS_ENUM) T_N };
static const struct stat_desc t_desc[] = { T_STATS(STATS_DESC) };

#define C_STATS(X) X(COUNTER, only_counter)
enum { C_STATS(STATS_ENUM) C_N };
static const struct stat_desc c_desc[] = { C_STATS(STATS_DESC) };

TEST(stats_scope_naming)
{
	struct stats_store *st = stats_store_new(5);
	struct stats_scope *c, *srv;

	CHECK_INT(stats_store_nshards(st), 5);
	c = stats_scope_new(st, "cluster.backend", "cluster", "envoy_cluster_name", "backend",
			    t_desc, T_N);
	srv = stats_scope_new(st, "server", "server", NULL, NULL, c_desc, C_N);
	CHECK_STR(c->name, "cluster.backend");
	CHECK_STR(c->tag_prefix, "cluster");
	CHECK_STR(c->tag_name, "envoy_cluster_name");
	CHECK_STR(c->tag_value, "backend");
	CHECK_INT(c->ndesc, T_N);
	CHECK_INT(c->nshards, 5);
	CHECK(c->store == st);
	CHECK(c->desc == t_desc);
	CHECK_STR(c->desc[rq_time].name, "rq_time");
	CHECK_INT(c->desc[rq_time].type, STAT_HISTOGRAM);
	CHECK_STR(srv->name, "server");
	CHECK(srv->tag_name == NULL && srv->tag_value == NULL);
	CHECK(srv->shards[0]->hists == NULL);             /* no histograms, no block */
	CHECK(srv->hslot == NULL && srv->nhist == 0);
	CHECK_INT(c->nhist, 1);
	CHECK(c->shards[0] != NULL && c->shards[0]->vals != NULL);   /* in the block */
	CHECK(c->shards[0]->hists == NULL && c->shards[0]->codes[0] == NULL);
	for (unsigned i = 1; i < c->nshards; i++)
		CHECK(c->shards[i] == NULL);              /* a worker's shard: on its first write */
	stats_store_free(st);                              /* frees both scopes */
}

/* The compact layout: one block per scope, shards' values on separate
 * cache lines, histogram blocks only for the shards that recorded, holding
 * only the scope's histograms (several, interleaved with counters). */
#define H_STATS(X) X(COUNTER, a_total) X(HISTOGRAM, a_time) X(GAUGE, b_active) \
	X(HISTOGRAM, b_time) X(COUNTER, c_total) X(HISTOGRAM, c_time)
enum { H_STATS(STATS_ENUM) H_N };
static const struct stat_desc h_desc[] = { H_STATS(STATS_DESC) };

TEST(stats_scope_compact_layout)
{
	struct stats_store *st = stats_store_new(4);
	struct stats_scope *s = stats_scope_new(st, "cluster.x", "cluster", "envoy_cluster_name",
						"x", h_desc, H_N);
	struct stats_scope *m = stats_scope_new_main(st, "cluster.x.circuit_breakers.default",
						     "cluster.circuit_breakers.default",
						     "envoy_cluster_name", "x", h_desc, H_N);
	struct stats_hist h;

	CHECK_INT(s->nhist, 3);
	CHECK_INT(s->hslot[a_time], 0);
	CHECK_INT(s->hslot[b_time], 1);
	CHECK_INT(s->hslot[c_time], 2);
	CHECK(m->hslot == s->hslot);                      /* one slot map per stat list */
	/* strings live in the block and are intact */
	CHECK_STR(s->name, "cluster.x");
	CHECK_STR(s->tag_prefix, "cluster");
	CHECK_STR(s->tag_value, "x");
	CHECK_STR(m->name, "cluster.x.circuit_breakers.default");
	CHECK_INT(m->nshards, 1);                         /* main-thread scope: one shard */

	stats_inc(s, 3, c_total);
	stats_add(s, 2, a_total, 5);
	stats_inc(s, 1, b_active);
	for (unsigned i = 1; i < s->nshards; i++) {     /* each worker shard: lines of its own */
		uintptr_t a = (uintptr_t)s->shards[i], v = (uintptr_t)s->shards[i]->vals;
		CHECK((a & 63) == 0);
		CHECK(v >= a + sizeof(struct stats_shard));
		for (unsigned k = 1; k < s->nshards; k++) {
			uintptr_t b = (uintptr_t)s->shards[k];
			CHECK(k == i || b >= v + H_N * sizeof(int64_t) || b + 64 <= a);
		}
	}
	CHECK_INT(stats_value(s, c_total), 1);
	CHECK_INT(stats_value(s, a_total), 5);
	CHECK_INT(stats_value(s, b_active), 1);

	stats_hist_record(s, 2, c_time, 7);
	CHECK(s->shards[2]->hists != NULL);               /* only the recording shard ... */
	CHECK(s->shards[1]->hists == NULL && s->shards[3]->hists == NULL);
	stats_hist_record(s, 3, b_time, 0.1);
	stats_hist_record(s, 3, b_time, 0.2);
	stats_hist_merge(s, c_time, &h);
	CHECK_INT(h.count, 1);
	CHECK(h.sum == 7);
	stats_hist_merge(s, b_time, &h);
	CHECK_INT(h.count, 2);
	stats_hist_merge(s, a_time, &h);                  /* never recorded: empty */
	CHECK_INT(h.count, 0);

	stats_inc(m, 0, a_total);
	stats_hist_record(m, 0, a_time, 3);
	stats_gauge_set(m, b_active, 9);
	CHECK_INT(stats_value(m, a_total), 1);
	CHECK_INT(stats_value(m, b_active), 9);
	stats_hist_merge(m, a_time, &h);
	CHECK_INT(h.count, 1);

	stats_reset_counters(st);                         /* walks lazily allocated blocks */
	CHECK_INT(stats_value(s, c_total), 0);
	CHECK_INT(stats_value(s, b_active), 1);           /* gauges kept */
	stats_hist_merge(s, b_time, &h);
	CHECK_INT(h.count, 0);
	stats_scope_free(m);
	stats_store_free(st);
}

TEST(stats_scope_free_unregisters)
{
	struct stats_store *st = stats_store_new(2);
	struct stats_scope *a = stats_scope_new(st, "a", "a", NULL, NULL, c_desc, C_N);
	struct stats_scope *b = stats_scope_new(st, "b", "b", NULL, NULL, c_desc, C_N);

	stats_inc(a, 0, only_counter);
	stats_inc(b, 1, only_counter);
	stats_scope_free(a);
	stats_scope_free(NULL);
	/* b still works and reset walks only live scopes (ASan catches a stale a). */
	stats_reset_counters(st);
	CHECK_INT(stats_value(b, only_counter), 0);
	stats_inc(b, 1, only_counter);
	CHECK_INT(stats_value(b, only_counter), 1);
	stats_store_free(st);
}

/* A worker frees a scope (last reference to an old snapshot) while the
 * main thread renders: the scope leaves the list at once but its memory
 * stays readable until the render ends (ASan reports a use after free if
 * it does not). */
TEST(stats_scope_free_during_render_is_deferred)
{
	struct stats_store *st = stats_store_new(2);
	struct stats_scope *a = stats_scope_new(st, "a", "a", NULL, NULL, c_desc, C_N);
	struct stats_scope *b = stats_scope_new(st, "b", "b", NULL, NULL, c_desc, C_N);
	const struct stats_scope *walk;
	int n = 0;

	stats_inc(a, 1, only_counter);
	stats_store_read_begin(st);
	walk = stats_store_scopes(st);                   /* b, then a */
	CHECK(walk == b);
	stats_scope_free(b);                             /* unlinked while the reader is on it */
	CHECK(stats_store_scopes(st) == a);
	CHECK_STR(walk->name, "b");                      /* still readable */
	for (; walk; walk = walk->next)
		n++;
	CHECK_INT(n, 2);                                 /* the reader finishes its walk */
	stats_store_read_begin(st);                      /* nested reader */
	stats_scope_free(a);
	stats_store_read_end(st);
	CHECK_INT(stats_value(a, only_counter), 1);      /* outer reader still holds it */
	stats_store_read_end(st);                        /* now both are freed */
	CHECK(stats_store_scopes(st) == NULL);
	stats_store_free(st);
}

struct writer {
	struct stats_scope *s;
	unsigned shard;
	int n;
};

static void *writer_main(void *arg)
{
	struct writer *w = arg;

	for (int i = 0; i < w->n; i++) {
		stats_inc(w->s, w->shard, rq_total);
		stats_add(w->s, w->shard, cx_total, 2);
		stats_inc(w->s, w->shard, cx_active);
		stats_hist_record(w->s, w->shard, rq_time, (double)(i % 20));
		stats_code_inc(w->s, w->shard, 0, 200 + (i % 2) * 303);
		if (i % 2)
			stats_dec(w->s, w->shard, cx_active);
	}
	return NULL;
}

TEST(stats_shards_sum_across_workers)
{
	struct stats_store *st = stats_store_new(5);
	struct stats_scope *s = stats_scope_new(st, "cluster.x", "cluster", "envoy_cluster_name",
						"x", t_desc, T_N);
	struct writer w[4];
	pthread_t th[4];
	int64_t last = 0;
	bool monotonic = true;
	struct stats_hist h;

	CHECK_INT(stats_scope_add_family(s, "upstream_rq"), 0);
	for (int i = 0; i < 4; i++) {
		w[i] = (struct writer){ s, (unsigned)i + 1, 10000 + i };
		CHECK_INT(pthread_create(&th[i], NULL, writer_main, &w[i]), 0);
	}
	/* The main thread reads while workers write: sums only grow. */
	for (int k = 0; k < 1000; k++) {
		int64_t v = stats_value(s, rq_total);
		if (v < last)
			monotonic = false;
		last = v;
		(void)stats_code_value(s, 0, 503);
	}
	for (int i = 0; i < 4; i++)
		pthread_join(th[i], NULL);
	stats_inc(s, 0, rq_total);                         /* main thread's own shard */

	CHECK(monotonic);
	CHECK_INT(stats_value(s, rq_total), 10000 + 10001 + 10002 + 10003 + 1);
	CHECK_INT(stats_value(s, cx_total), 2 * (10000 + 10001 + 10002 + 10003));
	/* each writer leaves ceil(n/2) connections open */
	CHECK_INT(stats_value(s, cx_active), 5000 + 5001 + 5001 + 5002);
	for (unsigned i = 1; i <= 4; i++)
		CHECK_INT(s->shards[i]->vals[rq_total], 10000 + (int)i - 1);
	CHECK_INT(stats_code_value(s, 0, 200), 5000 + 5001 + 5001 + 5002);
	CHECK_INT(stats_code_value(s, 0, 503), 5000 + 5000 + 5001 + 5001);
	CHECK_INT(stats_code_value(s, 0, 2), 5000 + 5001 + 5001 + 5002);
	CHECK_INT(stats_code_value(s, 0, 5), 5000 + 5000 + 5001 + 5001);
	stats_hist_merge(s, rq_time, &h);
	CHECK_INT(h.count, 40006);
	stats_store_free(st);
}

TEST(stats_gauges_deltas_and_set)
{
	struct stats_store *st = stats_store_new(3);
	struct stats_scope *s = stats_scope_new(st, "cluster.g", "cluster", "envoy_cluster_name",
						"g", t_desc, T_N);

	stats_inc(s, 1, cx_active);
	stats_inc(s, 1, cx_active);
	stats_inc(s, 1, cx_active);
	stats_dec(s, 2, cx_active);                        /* closed on another worker */
	CHECK_INT(stats_value(s, cx_active), 2);
	CHECK_INT(s->shards[2]->vals[cx_active], -1);
	stats_add(s, 2, cx_active, -5);
	CHECK_INT(stats_value(s, cx_active), -3);
	stats_add(s, 1, cx_active, 3);
	CHECK_INT(stats_value(s, cx_active), 0);

	stats_gauge_set(s, membership_total, 42);
	CHECK_INT(stats_value(s, membership_total), 42);
	stats_gauge_set(s, membership_total, 7);
	CHECK_INT(stats_value(s, membership_total), 7);
	CHECK_INT(s->shards[0]->vals[membership_total], 7);
	stats_store_free(st);
}

TEST(stats_code_families)
{
	struct stats_store *st = stats_store_new(3);
	struct stats_scope *s = stats_scope_new(st, "http.in", "http",
						"envoy_http_conn_manager_prefix", "in",
						t_desc, T_N);
	int up = stats_scope_add_family(s, "upstream_rq");
	int down = stats_scope_add_family(s, "downstream_rq");

	CHECK_INT(up, 0);
	CHECK_INT(down, 1);
	CHECK_STR(s->families[1], "downstream_rq");
	CHECK(s->shards[0]->codes[0] == NULL && s->shards[0]->codes[1] == NULL);
	CHECK(s->shards[1] == NULL && s->shards[2] == NULL);
	CHECK_INT(stats_code_value(s, up, 503), 0);

	stats_code_inc(s, 2, up, 503);
	CHECK(s->shards[2]->codes[up] != NULL);            /* allocated on first use */
	CHECK(s->shards[1] == NULL);                       /* ... only for that shard */
	CHECK(s->shards[2]->codes[down] == NULL);          /* ... and that family */
	stats_code_inc(s, 1, up, 503);
	stats_code_inc(s, 1, up, 504);
	stats_code_inc(s, 1, up, 100);
	stats_code_inc(s, 1, up, 599);
	stats_code_inc(s, 1, down, 200);
	stats_code_inc(s, 1, up, 99);                      /* out of range: ignored */
	stats_code_inc(s, 1, up, 600);
	stats_code_inc(s, 1, 5, 200);                      /* unknown family: ignored */
	stats_code_inc(s, 1, -1, 200);

	CHECK_INT(stats_code_value(s, up, 503), 2);
	CHECK_INT(stats_code_value(s, up, 504), 1);
	CHECK_INT(stats_code_value(s, up, 100), 1);
	CHECK_INT(stats_code_value(s, up, 599), 1);
	CHECK_INT(stats_code_value(s, up, 200), 0);
	CHECK_INT(stats_code_value(s, up, 5), 4);          /* 5xx class */
	CHECK_INT(stats_code_value(s, up, 1), 1);
	CHECK_INT(stats_code_value(s, up, 2), 0);
	CHECK_INT(stats_code_value(s, down, 2), 1);
	CHECK_INT(stats_code_value(s, down, 200), 1);
	CHECK_INT(stats_code_value(s, up, 600), 0);
	CHECK_INT(s->shards[1]->codes[up][STATS_CODES_LEN - 1], 3);  /* shard 1's 5xx class */
	stats_store_free(st);
}

TEST(stats_hist_bucket_boundaries)
{
	struct stats_store *st = stats_store_new(2);
	struct stats_scope *s = stats_scope_new(st, "h", "h", NULL, NULL, t_desc, T_N);
	struct stats_hist h;

	CHECK_INT(ARRAY_SIZE(stats_hist_bounds), 19);
	CHECK(stats_hist_bounds[0] == 0.5 && stats_hist_bounds[18] == 3600000);
	stats_hist_record(s, 0, rq_time, 0);               /* -> le 0.5 */
	stats_hist_record(s, 0, rq_time, 0.5);             /* equal to a bound: that bucket */
	stats_hist_record(s, 1, rq_time, 0.5000001);       /* -> le 1 */
	stats_hist_record(s, 1, rq_time, 1);               /* -> le 1 */
	stats_hist_record(s, 1, rq_time, 25);              /* -> le 25 (index 4) */
	stats_hist_record(s, 0, rq_time, 25.001);          /* -> le 50 */
	stats_hist_record(s, 0, rq_time, 3600000);         /* -> last finite bucket */
	stats_hist_record(s, 1, rq_time, 3600000.5);       /* -> overflow */
	stats_hist_record(s, 1, rq_time, NAN);             /* dropped */

	CHECK_INT(s->shards[0]->hists[s->hslot[rq_time]].buckets[0], 2);
	CHECK_INT(s->shards[0]->hists[s->hslot[rq_time]].count, 4);
	stats_hist_merge(s, rq_time, &h);
	CHECK_INT(h.buckets[0], 2);
	CHECK_INT(h.buckets[1], 2);
	CHECK_INT(h.buckets[2], 0);
	CHECK_INT(h.buckets[4], 1);
	CHECK_INT(h.buckets[5], 1);
	CHECK_INT(h.buckets[18], 1);
	CHECK_INT(h.buckets[19], 1);
	CHECK_INT(h.count, 8);
	CHECK(fabs(h.sum - (0 + 0.5 + 0.5000001 + 1 + 25 + 25.001 + 3600000 + 3600000.5)) < 1e-6);
	stats_store_free(st);
}

TEST(stats_hist_quantiles)
{
	struct stats_hist h;

	memset(&h, 0, sizeof(h));
	CHECK(isnan(stats_hist_quantile(&h, 0.5)));

	h.buckets[2] = 4;                                  /* four values in (1, 5] */
	h.count = 4;
	CHECK(stats_hist_quantile(&h, 0) == 1);
	CHECK(stats_hist_quantile(&h, 0.5) == 3);
	CHECK(stats_hist_quantile(&h, 0.25) == 2);
	CHECK(stats_hist_quantile(&h, 1) == 5);
	CHECK(stats_hist_quantile(&h, 7) == 5);            /* clamped */

	memset(&h, 0, sizeof(h));
	h.buckets[0] = 10;                                 /* [0, 0.5] */
	h.buckets[3] = 10;                                 /* (5, 10] */
	h.count = 20;
	CHECK(stats_hist_quantile(&h, 0) == 0);
	CHECK(stats_hist_quantile(&h, 0.25) == 0.25);
	CHECK(stats_hist_quantile(&h, 0.5) == 0.5);        /* the rank ends bucket 0 */
	CHECK(stats_hist_quantile(&h, 0.75) == 7.5);
	CHECK(stats_hist_quantile(&h, 1) == 10);

	memset(&h, 0, sizeof(h));
	h.buckets[STATS_HIST_BUCKETS] = 3;                 /* overflow only */
	h.count = 3;
	CHECK(stats_hist_quantile(&h, 0.5) == 3600000);
}

TEST(stats_reset_counters_keeps_gauges)
{
	struct stats_store *st = stats_store_new(3);
	struct stats_scope *s = stats_scope_new(st, "cluster.r", "cluster", "envoy_cluster_name",
						"r", t_desc, T_N);
	struct stats_scope *c = stats_scope_new(st, "other", "other", NULL, NULL, c_desc, C_N);
	struct stats_hist h;
	int fam = stats_scope_add_family(s, "upstream_rq");

	stats_inc(s, 1, rq_total);
	stats_inc(s, 2, rq_total);
	stats_inc(c, 2, only_counter);
	stats_inc(s, 1, cx_active);
	stats_gauge_set(s, membership_total, 9);
	stats_hist_record(s, 2, rq_time, 12);
	stats_code_inc(s, 1, fam, 404);

	stats_reset_counters(st);
	CHECK_INT(stats_value(s, rq_total), 0);
	CHECK_INT(stats_value(c, only_counter), 0);
	CHECK_INT(stats_value(s, cx_active), 1);
	CHECK_INT(stats_value(s, membership_total), 9);
	stats_hist_merge(s, rq_time, &h);
	CHECK_INT(h.count, 0);
	CHECK_INT(h.buckets[4], 0);
	CHECK(h.sum == 0);
	CHECK_INT(stats_code_value(s, fam, 404), 0);
	CHECK_INT(stats_code_value(s, fam, 4), 0);
	/* counting resumes after the reset */
	stats_code_inc(s, 1, fam, 404);
	CHECK_INT(stats_code_value(s, fam, 404), 1);
	stats_store_free(st);
}

/* ---- scopes shared by name ---- */

/* The same stat list declared a second time (another X-macro expansion):
 * equal by content, a different array. */
static const struct stat_desc t_desc_again[] = { T_STATS(STATS_DESC) };
#define U_STATS(X) X(COUNTER, rq_total) X(GAUGE, cx_active)
enum { U_N = 2 };
static const struct stat_desc u_desc[] = { U_STATS(STATS_DESC) };

TEST(stats_scope_shared_by_name_and_kind)
{
	struct stats_store *st = stats_store_new(3);
	struct stats_scope *a = stats_scope_new(st, "http.in", "http", "envoy_http_conn_manager_prefix",
						"in", t_desc, T_N);
	struct stats_scope *b = stats_scope_new(st, "http.in", "http", "envoy_http_conn_manager_prefix",
						"in", t_desc_again, T_N);
	struct stats_scope *other = stats_scope_new(st, "http.out", "http",
						    "envoy_http_conn_manager_prefix", "out", t_desc, T_N);
	struct stats_scope *kind = stats_scope_new(st, "http.in", "http",
						   "envoy_http_conn_manager_prefix", "in", u_desc, U_N);
	struct stats_scope *main1 = stats_scope_new_main(st, "http.in", "http",
							 "envoy_http_conn_manager_prefix", "in",
							 t_desc, T_N);

	CHECK(a == b);                                     /* same name, same list: shared */
	CHECK(a != other);                                 /* another name */
	CHECK(a != kind);                                  /* another list under the name */
	CHECK(a != main1 && main1->nshards == 1);          /* main-only is another kind */
	CHECK_INT(a->refs, 2);
	CHECK_INT(stats_store_nscopes(st), 4);
	/* both users bump the same counters, from their workers' shards */
	stats_inc(a, 1, rq_total);
	stats_inc(b, 2, rq_total);
	stats_add(b, 1, rq_total, 3);
	stats_hist_record(a, 1, rq_time, 7);
	stats_hist_record(b, 2, rq_time, 9);
	CHECK_INT(stats_value(a, rq_total), 5);
	{
		struct stats_hist h;

		stats_hist_merge(b, rq_time, &h);
		CHECK_INT(h.count, 2);
	}
	/* code families: the second user's add finds the first's */
	CHECK_INT(stats_scope_add_family(a, "downstream_rq"), 0);
	CHECK_INT(stats_scope_add_family(b, "downstream_rq"), 0);
	CHECK(a->families[1] == NULL);
	stats_code_inc(b, 1, 0, 200);
	CHECK_INT(stats_code_value(a, 0, 2), 1);

	/* the first user goes: the scope and its values stay for the second */
	stats_scope_free(a);
	CHECK_INT(stats_store_nscopes(st), 4);
	CHECK_INT(b->refs, 1);
	CHECK_INT(stats_value(b, rq_total), 5);
	stats_inc(b, 0, rq_total);
	CHECK_INT(stats_value(b, rq_total), 6);
	/* the last user goes: freed (ASan checks), and the name is free again */
	stats_scope_free(b);
	CHECK_INT(stats_store_nscopes(st), 3);
	a = stats_scope_new(st, "http.in", "http", "envoy_http_conn_manager_prefix", "in", t_desc, T_N);
	CHECK_INT(a->refs, 1);
	CHECK_INT(stats_value(a, rq_total), 0);            /* a new scope, from zero */
	CHECK(stats_scope_new(st, "http.in", "http", NULL, NULL, u_desc, U_N) == kind);
	CHECK_INT(kind->refs, 2);
	stats_scope_free(kind);
	stats_scope_free(kind);
	stats_scope_free(main1);
	stats_scope_free(other);
	stats_scope_free(a);
	CHECK_INT(stats_store_nscopes(st), 0);
	CHECK(stats_store_scopes(st) == NULL);
	stats_store_free(st);
}

/* Many names: the hash grows and every scope is still found (and freed). */
TEST(stats_scope_hash_grows)
{
	struct stats_store *st = stats_store_new(2);
	struct stats_scope *s[300];
	char name[32];

	for (int i = 0; i < 300; i++) {
		snprintf(name, sizeof(name), "cluster.c%d", i);
		s[i] = stats_scope_new_main(st, name, "cluster", "envoy_cluster_name", name + 8,
					    c_desc, C_N);
	}
	CHECK_INT(stats_store_nscopes(st), 300);
	for (int i = 0; i < 300; i++) {
		snprintf(name, sizeof(name), "cluster.c%d", i);
		CHECK(stats_scope_new_main(st, name, "cluster", "envoy_cluster_name", name + 8,
					   c_desc, C_N) == s[i]);
	}
	for (int i = 0; i < 300; i += 2) {
		stats_scope_free(s[i]);
		stats_scope_free(s[i]);
	}
	CHECK_INT(stats_store_nscopes(st), 150);
	for (int i = 1; i < 300; i += 2) {
		snprintf(name, sizeof(name), "cluster.c%d", i);
		CHECK(stats_scope_new_main(st, name, NULL, NULL, NULL, c_desc, C_N) == s[i]);
		stats_scope_free(s[i]);
	}
	CHECK_INT(stats_store_nscopes(st), 150);
	stats_store_free(st);                              /* frees the rest, refs or not */
}

/* A stat list built at run time (RBAC's prefixed names) is copied: the
 * first user may free its list while the second goes on. */
TEST(stats_scope_copy_desc_outlives_the_callers_list)
{
	struct stats_store *st = stats_store_new(2);
	struct stat_desc *d1 = xcalloc(2, sizeof(*d1)), *d2 = xcalloc(2, sizeof(*d2));
	struct stats_scope_spec sp = { .name = "http.in.rbac", .tag_prefix = "http.rbac",
				       .ndesc = 2, .flags = STATS_SCOPE_COPY_DESC };
	struct stats_scope *a, *b;

	d1[0] = (struct stat_desc){ xstrdup("p_allowed"), STAT_COUNTER };
	d1[1] = (struct stat_desc){ xstrdup("p_denied"), STAT_COUNTER };
	d2[0] = (struct stat_desc){ xstrdup("p_allowed"), STAT_COUNTER };
	d2[1] = (struct stat_desc){ xstrdup("p_denied"), STAT_COUNTER };
	sp.desc = d1;
	a = stats_scope_get(st, &sp);
	sp.desc = d2;
	b = stats_scope_get(st, &sp);
	CHECK(a == b);
	CHECK(a->desc != d1 && a->desc != d2);
	for (int i = 0; i < 2; i++) {
		xfree((char *)d1[i].name);
		xfree((char *)d2[i].name);
	}
	xfree(d1);
	xfree(d2);
	stats_inc(b, 1, 1);
	stats_scope_free(a);
	CHECK_STR(b->desc[1].name, "p_denied");            /* ASan: still valid */
	CHECK_INT(stats_value(b, 1), 1);
	stats_scope_free(b);
	stats_store_free(st);
}

/* The last user of a shared scope drops it during a render: deferred to
 * the render's end like any free. */
TEST(stats_scope_shared_last_free_during_render_is_deferred)
{
	struct stats_store *st = stats_store_new(2);
	struct stats_scope *a = stats_scope_new(st, "a", "a", NULL, NULL, c_desc, C_N);
	struct stats_scope *b = stats_scope_new(st, "a", "a", NULL, NULL, c_desc, C_N);

	stats_inc(a, 1, only_counter);
	stats_store_read_begin(st);
	CHECK(stats_store_scopes(st) == a);
	stats_scope_free(a);
	CHECK(stats_store_scopes(st) == a);                /* one user left: still listed */
	stats_scope_free(b);
	CHECK(stats_store_scopes(st) == NULL);             /* unlinked ... */
	CHECK_INT(stats_value(a, only_counter), 1);        /* ... but readable until read_end */
	/* the name can be created again meanwhile: a new scope */
	b = stats_scope_new(st, "a", "a", NULL, NULL, c_desc, C_N);
	CHECK(b != a);
	stats_store_read_end(st);
	CHECK_INT(stats_value(b, only_counter), 0);
	stats_scope_free(b);
	stats_store_free(st);
}

struct sharer {
	struct stats_store *st;
	int n;
};

/* Worker-created scopes (grpc_stats per method) race the main thread's
 * creates and frees of the same name: the count stays consistent. */
static void *sharer_main(void *arg)
{
	struct sharer *s = arg;

	for (int i = 0; i < s->n; i++) {
		struct stats_scope *sc = stats_scope_new(s->st, "shared", "shared", NULL, NULL,
							 c_desc, C_N);
		stats_inc(sc, 1, only_counter);
		stats_scope_free(sc);
	}
	return NULL;
}

TEST(stats_scope_shared_create_free_race)
{
	struct stats_store *st = stats_store_new(2);
	struct stats_scope *keep = stats_scope_new(st, "shared", "shared", NULL, NULL, c_desc, C_N);
	struct sharer s = { st, 20000 };
	pthread_t th;

	CHECK_INT(pthread_create(&th, NULL, sharer_main, &s), 0);
	for (int i = 0; i < 20000; i++) {
		struct stats_scope *sc = stats_scope_new(st, "shared", "shared", NULL, NULL, c_desc,
							 C_N);
		CHECK(sc == keep);
		stats_scope_free(sc);
	}
	pthread_join(th, NULL);
	CHECK_INT(keep->refs, 1);
	CHECK_INT(stats_value(keep, only_counter), 20000); /* every worker bump landed in it */
	CHECK_INT(stats_store_nscopes(st), 1);
	stats_scope_free(keep);
	CHECK_INT(stats_store_nscopes(st), 0);
	stats_store_free(st);
}

/* A split scope: workers store only the stats before nw, shard 0 only
 * those from lo0 on (both the ones in between); sums, resets and renders
 * see each stat where it is stored. */
#define S_STATS(X) X(COUNTER, w_total) X(HISTOGRAM, w_time) X(GAUGE, both_active) \
	X(COUNTER, both_change) X(COUNTER, m_attempt) X(GAUGE, m_open)
enum { S_STATS(STATS_ENUM) S_N };
static const struct stat_desc s_desc[] = { S_STATS(STATS_DESC) };

TEST(stats_split_scope)
{
	struct stats_store *st = stats_store_new(3);
	struct stats_scope *s = stats_scope_new_split(st, "cluster.s", "cluster",
						      "envoy_cluster_name", "s", s_desc, S_N,
						      m_attempt, both_active);
	struct stats_hist h;
	struct evbuffer *out = evbuffer_new();
	char err[128], *txt;

	CHECK_INT(s->nw, m_attempt);
	CHECK_INT(s->lo0, both_active);
	CHECK(s->shards[1] == NULL && s->shards[2] == NULL);
	stats_inc(s, 0, m_attempt);
	stats_gauge_set(s, m_open, 4);
	stats_inc(s, 0, both_change);
	stats_add(s, 0, both_active, 10);
	CHECK(s->shards[1] == NULL && s->shards[2] == NULL);  /* main writes: no worker shard */
	stats_inc(s, 2, w_total);
	stats_inc(s, 2, both_change);
	stats_add(s, 2, both_active, -3);
	stats_hist_record(s, 2, w_time, 5);
	CHECK(s->shards[1] == NULL && s->shards[2] != NULL);
	CHECK(((uintptr_t)s->shards[2] & 63) == 0);
	CHECK_INT(stats_value(s, w_total), 1);
	CHECK_INT(stats_value(s, both_change), 2);
	CHECK_INT(stats_value(s, both_active), 7);
	CHECK_INT(stats_value(s, m_attempt), 1);
	CHECK_INT(stats_value(s, m_open), 4);
	stats_hist_merge(s, w_time, &h);
	CHECK_INT(h.count, 1);
	CHECK_INT(stats_render_text(st, out, NULL, false, err, sizeof(err)), RM_OK);
	evbuffer_add(out, "", 1);
	txt = (char *)evbuffer_pullup(out, -1);
	CHECK(strstr(txt, "cluster.s.w_total: 1\n") != NULL);
	CHECK(strstr(txt, "cluster.s.both_active: 7\n") != NULL);
	CHECK(strstr(txt, "cluster.s.m_attempt: 1\n") != NULL);
	CHECK(strstr(txt, "cluster.s.m_open: 4\n") != NULL);
	stats_reset_counters(st);
	CHECK_INT(stats_value(s, w_total), 0);
	CHECK_INT(stats_value(s, both_change), 0);
	CHECK_INT(stats_value(s, m_attempt), 0);
	CHECK_INT(stats_value(s, m_open), 4);
	CHECK_INT(stats_value(s, both_active), 7);
	evbuffer_free(out);
	stats_store_free(st);
}

/* Worker shards created concurrently by their threads while the main thread
 * sums: every worker's first write allocates and publishes its shard (TSan
 * and ASan builds check the publication). */
static void *first_writer(void *arg)
{
	struct writer *w = arg;

	for (int i = 0; i < w->n; i++) {
		stats_inc(w->s, w->shard, w_total);
		if (i % 100 == 0)
			stats_hist_record(w->s, w->shard, w_time, 1);
	}
	return NULL;
}

TEST(stats_lazy_shards_concurrent_first_use)
{
	struct stats_store *st = stats_store_new(9);
	pthread_t th[8];
	struct writer w[8];
	struct stats_scope *s[50];
	int64_t seen = 0;
	char name[32];

	for (int k = 0; k < 50; k++) {       /* 50 names: one name would be one shared scope */
		snprintf(name, sizeof(name), "cluster.l%d", k);
		s[k] = stats_scope_new_split(st, name, "cluster", "envoy_cluster_name", name + 8,
					     s_desc, S_N, m_attempt, both_active);
	}
	for (int round = 0; round < 50; round++) {
		for (int i = 0; i < 8; i++) {
			w[i] = (struct writer){ s[round], (unsigned)i + 1, 1000 };
			CHECK_INT(pthread_create(&th[i], NULL, first_writer, &w[i]), 0);
		}
		for (int k = 0; k < 20; k++)
			seen += stats_value(s[round], w_total) >= 0;
		for (int i = 0; i < 8; i++)
			pthread_join(th[i], NULL);
		CHECK_INT(stats_value(s[round], w_total), 8000);
	}
	CHECK_INT(seen, 1000);
	stats_store_free(st);
}

/* Sharing by name keys on the shard layout too: a split scope is found
 * again only with the same split; a plain or main-only scope of the same
 * name and list is another scope. */
TEST(stats_split_scope_shared_by_layout)
{
	struct stats_store *st = stats_store_new(3);
	struct stats_scope *a = stats_scope_new_split(st, "cluster.x", "cluster", "envoy_cluster_name",
						      "x", s_desc, S_N, m_attempt, both_active);
	struct stats_scope *b = stats_scope_new_split(st, "cluster.x", "cluster", "envoy_cluster_name",
						      "x", s_desc, S_N, m_attempt, both_active);
	struct stats_scope *c = stats_scope_new_split(st, "cluster.x", "cluster", "envoy_cluster_name",
						      "x", s_desc, S_N, both_change, both_active);
	struct stats_scope *d = stats_scope_new(st, "cluster.x", "cluster", "envoy_cluster_name", "x",
						s_desc, S_N);
	struct stats_scope *e = stats_scope_new_main(st, "cluster.x", "cluster",
						     "envoy_cluster_name", "x", s_desc, S_N);

	CHECK(a == b);
	CHECK_INT(a->refs, 2);
	CHECK(c != a && d != a && e != a && d != c && e != d && e != c);
	CHECK_INT(stats_store_nscopes(st), 4);
	stats_inc(b, 1, w_total);
	stats_hist_record(a, 2, w_time, 3);
	CHECK_INT(stats_value(a, w_total), 1);
	stats_scope_free(a);
	stats_scope_free(b);
	stats_scope_free(c);
	stats_scope_free(d);
	stats_scope_free(e);
	CHECK_INT(stats_store_nscopes(st), 0);
	stats_store_free(st);
}

/* Lazily stored stats (the circuit-breaker gauges of a cluster): no storage
 * until a non-zero value is set, read as zero before, summed, rendered and
 * reset like the others; part of the layout a shared scope must match. */
TEST(stats_lazy_tail)
{
	struct stats_store *st = stats_store_new(3);
	struct stats_scope_spec sp = { .name = "cluster.z", .tag_prefix = "cluster",
				       .tag_name = "envoy_cluster_name", .tag_value = "z",
				       .desc = s_desc, .ndesc = S_N, .nw = m_attempt,
				       .lo0 = both_active, .nlazy = 2, .flags = STATS_SCOPE_SPLIT };
	struct stats_scope *s = stats_scope_get(st, &sp), *same, *other;
	struct evbuffer *out = evbuffer_new();
	char err[128], *txt;

	CHECK_INT(s->lazy0, m_attempt);
	CHECK(s->lazy == NULL);
	stats_lazy_set(s, m_open, 0);                 /* zero: still nothing stored */
	stats_lazy_set(s, m_attempt, 0);
	stats_main_add(s, m_attempt, 0);
	CHECK(s->lazy == NULL);
	CHECK_INT(stats_value(s, m_open), 0);
	stats_inc(s, 0, both_change);
	stats_inc(s, 1, both_change);
	CHECK_INT(stats_value(s, both_change), 2);
	CHECK_INT(stats_render_text(st, out, NULL, false, err, sizeof(err)), RM_OK);
	evbuffer_add(out, "", 1);
	txt = (char *)evbuffer_pullup(out, -1);
	CHECK(strstr(txt, "cluster.z.m_open: 0\n") != NULL);   /* rendered while unstored */
	CHECK(strstr(txt, "cluster.z.m_attempt: 0\n") != NULL);
	evbuffer_drain(out, evbuffer_get_length(out));
	stats_lazy_set(s, m_open, 1);
	stats_lazy_set(s, m_attempt, 5);
	CHECK(s->lazy != NULL);
	CHECK_INT(stats_value(s, m_open), 1);
	CHECK_INT(stats_value(s, m_attempt), 5);
	CHECK_INT(stats_render_text(st, out, NULL, false, err, sizeof(err)), RM_OK);
	evbuffer_add(out, "", 1);
	txt = (char *)evbuffer_pullup(out, -1);
	CHECK(strstr(txt, "cluster.z.m_open: 1\n") != NULL);
	CHECK(strstr(txt, "cluster.z.m_attempt: 5\n") != NULL);
	stats_main_add(s, m_attempt, 2);               /* lazily stored: the block */
	stats_main_add(s, both_change, 3);             /* shard 0 */
	CHECK_INT(stats_value(s, m_attempt), 7);
	CHECK_INT(stats_value(s, both_change), 5);
	stats_reset_counters(st);                     /* counters zeroed, gauges kept */
	CHECK_INT(stats_value(s, m_attempt), 0);
	CHECK_INT(stats_value(s, m_open), 1);
	same = stats_scope_get(st, &sp);
	sp.nlazy = 1;
	other = stats_scope_get(st, &sp);
	CHECK(same == s && other != s);
	CHECK_INT(other->lazy0, m_open);
	stats_scope_free(other);
	stats_scope_free(same);
	stats_scope_free(s);
	evbuffer_free(out);
	stats_store_free(st);
}

/* Tag names and prefixes are interned by the store (one copy for every
 * cluster), the tag value points into the name when it ends it. */
TEST(stats_scope_strings_shared)
{
	struct stats_store *st = stats_store_new(2);
	struct stats_scope *a = stats_scope_new(st, "cluster.a1", "cluster", "envoy_cluster_name",
						"a1", t_desc, T_N);
	struct stats_scope *b = stats_scope_new(st, "cluster.b22", "cluster", "envoy_cluster_name",
						"b22", t_desc, T_N);
	struct stats_scope *c = stats_scope_new(st, "odd.name", "odd", "t", "not_a_suffix",
						t_desc, T_N);
	struct stats_scope *d = stats_scope_new(st, "server", "server", NULL, NULL, c_desc, C_N);

	CHECK(a->tag_prefix == b->tag_prefix && a->tag_name == b->tag_name);
	CHECK_STR(a->tag_prefix, "cluster");
	CHECK_STR(b->tag_name, "envoy_cluster_name");
	CHECK(a->tag_value == a->name + strlen("cluster."));
	CHECK_STR(b->tag_value, "b22");
	CHECK_STR(c->tag_value, "not_a_suffix");
	CHECK_STR(c->tag_prefix, "odd");
	CHECK(d->tag_prefix == d->name);
	/* past the interning cap a scope copies its strings into its block */
	enum { MANY = 4200 };
	struct stats_scope **many = calloc(MANY, sizeof(*many));
	char n[64], tp[32], tn[32];
	for (int i = 0; i < MANY; i++) {
		snprintf(n, sizeof(n), "p%d.v%d", i, i);
		snprintf(tp, sizeof(tp), "p%d", i);
		snprintf(tn, sizeof(tn), "t%d", i);
		many[i] = stats_scope_new(st, n, tp, tn, "x", c_desc, C_N);
	}
	CHECK_STR(many[MANY - 1]->tag_prefix, "p4199");
	CHECK_STR(many[MANY - 1]->tag_name, "t4199");
	CHECK_STR(many[MANY - 1]->tag_value, "x");
	CHECK_STR(many[7]->tag_name, "t7");
	for (int i = 0; i < MANY; i++)
		stats_scope_free(many[i]);
	free(many);
	stats_scope_free(a);
	stats_scope_free(b);
	stats_scope_free(c);
	stats_scope_free(d);
	stats_store_free(st);
}
