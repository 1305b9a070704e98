/* token_bucket_test.c - discrete fills with an injected clock, and exact
 * accounting when several threads share one bucket. */
#include "test.h"
#include <pthread.h>
#include "filters/common/token_bucket.h"

#define MS 1000000ull

static int take_n(struct token_bucket *tb, uint64_t now, int n)
{
	int ok = 0;
	for (int i = 0; i < n; i++)
		ok += token_bucket_take_at(tb, now, NULL);
	return ok;
}

TEST(token_bucket_starts_full_and_fills_discretely)
{
	struct token_bucket tb;
	uint64_t t0 = 5000 * MS;
	uint32_t rem = 99;
	token_bucket_init(&tb, 20, 5, 100 * MS, t0);
	CHECK(token_bucket_take_at(&tb, t0, &rem));
	CHECK_INT(rem, 19);
	CHECK_INT(take_n(&tb, t0, 30), 19);           /* burst: max_tokens in total */
	CHECK(!token_bucket_take_at(&tb, t0 + 99 * MS, &rem));
	CHECK_INT(rem, 0);
	CHECK_INT(take_n(&tb, t0 + 100 * MS, 10), 5);  /* one fill */
	CHECK_INT(take_n(&tb, t0 + 199 * MS, 10), 0);
	CHECK_INT(take_n(&tb, t0 + 300 * MS, 20), 10); /* two fills at once */
	CHECK_INT(take_n(&tb, t0 + 10000 * MS, 50), 20); /* many fills: capped at max */
}

TEST(token_bucket_rate_over_window)
{
	/* 1 token per 10 ms after a burst of 3; ask every 1 ms for 1 s. */
	struct token_bucket tb;
	token_bucket_init(&tb, 3, 1, 10 * MS, 0);
	int ok = 0;
	for (uint64_t t = 0; t < 1000; t++)
		ok += token_bucket_take_at(&tb, t * MS, NULL);
	CHECK_INT(ok, 3 + 99);
}

TEST(token_bucket_stale_clock_adds_nothing)
{
	struct token_bucket tb;
	token_bucket_init(&tb, 2, 2, 100 * MS, 1000 * MS);
	CHECK_INT(take_n(&tb, 1000 * MS, 2), 2);
	CHECK_INT(take_n(&tb, 1500 * MS, 1), 1);      /* index 5 */
	CHECK_INT(take_n(&tb, 1300 * MS, 5), 1);      /* behind: no fill, no wrap */
	CHECK_INT(take_n(&tb, 999 * MS, 5), 0);       /* before the epoch */
	CHECK_INT(take_n(&tb, 1600 * MS, 5), 2);
}

TEST(token_bucket_next_fill)
{
	struct token_bucket tb;
	token_bucket_init(&tb, 1, 1, 200 * MS, 50 * MS);
	CHECK_INT(token_bucket_next_fill_ns(&tb, 50 * MS), 200 * MS);
	CHECK_INT(token_bucket_next_fill_ns(&tb, 100 * MS), 150 * MS);
	CHECK_INT(token_bucket_next_fill_ns(&tb, 449 * MS), 1 * MS);
}

TEST(token_bucket_defaults_nonzero)
{
	struct token_bucket tb;
	token_bucket_init(&tb, 0, 0, 0, 0);
	CHECK_INT(tb.max_tokens, 1);
	CHECK_INT(tb.tokens_per_fill, 1);
	CHECK(tb.interval_ns > 0);
}

/* ---- concurrency ---- */

#define NTHREADS 8
#define STEPS 20000

struct worker_arg {
	struct token_bucket *tb;
	int fixed_clock;
	long ok;
};

static void *hammer(void *p)
{
	struct worker_arg *a = p;
	for (uint64_t i = 0; i < STEPS; i++)
		a->ok += token_bucket_take_at(a->tb, a->fixed_clock ? 0 : i * MS, NULL);
	return NULL;
}

static long run_threads(struct token_bucket *tb, int fixed_clock)
{
	pthread_t th[NTHREADS];
	struct worker_arg args[NTHREADS];
	long total = 0;
	for (int i = 0; i < NTHREADS; i++) {
		args[i] = (struct worker_arg){ tb, fixed_clock, 0 };
		pthread_create(&th[i], NULL, hammer, &args[i]);
	}
	for (int i = 0; i < NTHREADS; i++) {
		pthread_join(th[i], NULL);
		total += args[i].ok;
	}
	return total;
}

TEST(token_bucket_threads_never_overspend)
{
	/* No fills: exactly max_tokens takes succeed among all threads. */
	struct token_bucket tb;
	token_bucket_init(&tb, 50000, 1, 1000000 * MS, 0);
	CHECK_INT(run_threads(&tb, 1), 50000);
}

TEST(token_bucket_threads_exact_fills)
{
	/* Each thread walks the same clock (1 ms per step, 1 token per 10 ms);
	 * demand always exceeds supply, so no fill is lost to the cap and the
	 * total is exactly burst + fills: every fill is counted once. */
	struct token_bucket tb;
	token_bucket_init(&tb, 10, 1, 10 * MS, 0);
	CHECK_INT(run_threads(&tb, 0), 10 + (STEPS - 1) / 10);
}
