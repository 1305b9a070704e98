/* token_bucket.h - a token bucket shared by threads without a lock.
 *
 * Envoy's local rate limit semantics: the bucket starts full with
 * max_tokens; every fill_interval, tokens_per_fill tokens are added (capped
 * at max_tokens); each admitted request (or connection) takes one token.
 *
 * Fills are discrete and computed lazily from the monotonic clock when a
 * token is asked for: no timer, no lock.  The whole state is one 64-bit word
 *     tokens (high 32 bits) | fill index (low 32 bits)
 * where the fill index counts fill intervals since the bucket's epoch.  A
 * taker reads the word, adds the fills that happened since, takes a token and
 * publishes the result with one compare-and-swap, retrying if another thread
 * got there first.  Every worker can therefore share one bucket, and a take
 * costs one uncontended atomic in the common case.
 *
 * The fill index is 32 bits and compared modulo 2^32: a bucket untouched for
 * 2^31 intervals (3.4 years at the minimum 50 ms) may see fewer fills than it
 * earned on its next use; it is back to normal after the next fill. */
#ifndef REMORA_TOKEN_BUCKET_H
#define REMORA_TOKEN_BUCKET_H

#include "proxy/common.h"

struct token_bucket {
	uint64_t state;              /* atomic: tokens << 32 | fill index */
	uint32_t max_tokens;         /* > 0 */
	uint32_t tokens_per_fill;    /* > 0 */
	uint64_t interval_ns;        /* > 0 */
	uint64_t epoch_ns;           /* clock value at init: fill index 0 */
};

/* Start full at time now_ns (a now_ns() value, or a test clock). */
void token_bucket_init(struct token_bucket *tb, uint32_t max_tokens, uint32_t tokens_per_fill,
		       uint64_t interval_ns, uint64_t now_ns);

/* Take one token at time now_ns.  Returns true if one was taken.  If
 * remaining is not NULL it receives the tokens left afterwards (0 when
 * refused).  Safe from any number of threads concurrently.  Clock values
 * from different threads may be slightly out of order: a taker whose now_ns
 * is behind the last fill simply adds no fill. */
bool token_bucket_take_at(struct token_bucket *tb, uint64_t now_ns, uint32_t *remaining);

static inline bool token_bucket_take(struct token_bucket *tb, uint32_t *remaining)
{
	return token_bucket_take_at(tb, now_ns(), remaining);
}

/* Nanoseconds from now_ns until the next fill (1..interval_ns). */
uint64_t token_bucket_next_fill_ns(const struct token_bucket *tb, uint64_t now_ns);

#endif
