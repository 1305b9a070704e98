/* token_bucket.c - lock-free token bucket; see token_bucket.h. */
#include "token_bucket.h"

#define TB_PACK(tokens, idx) (((uint64_t)(tokens) << 32) | (uint32_t)(idx))
#define TB_TOKENS(st) ((uint32_t)((st) >> 32))
#define TB_INDEX(st) ((uint32_t)(st))

void token_bucket_init(struct token_bucket *tb, uint32_t max_tokens, uint32_t tokens_per_fill,
		       uint64_t interval_ns, uint64_t now_ns)
{
	memset(tb, 0, sizeof(*tb));
	tb->max_tokens = max_tokens ? max_tokens : 1;
	tb->tokens_per_fill = tokens_per_fill ? tokens_per_fill : 1;
	tb->interval_ns = interval_ns ? interval_ns : 1;
	tb->epoch_ns = now_ns;
	__atomic_store_n(&tb->state, TB_PACK(tb->max_tokens, 0), __ATOMIC_RELAXED);
}

static inline uint32_t fill_index(const struct token_bucket *tb, uint64_t now_ns)
{
	return now_ns > tb->epoch_ns ? (uint32_t)((now_ns - tb->epoch_ns) / tb->interval_ns) : 0;
}

bool token_bucket_take_at(struct token_bucket *tb, uint64_t now_ns, uint32_t *remaining)
{
	uint32_t idx = fill_index(tb, now_ns);
	uint64_t old = __atomic_load_n(&tb->state, __ATOMIC_RELAXED);

	for (;;) {
		uint64_t tokens = TB_TOKENS(old);
		uint32_t last = TB_INDEX(old);
		int32_t fills = (int32_t)(idx - last);   /* modulo 2^32; <= 0: nothing new */
		uint32_t new_idx = last;
		if (fills > 0) {
			tokens += (uint64_t)fills * tb->tokens_per_fill;
			if (tokens > tb->max_tokens)
				tokens = tb->max_tokens;
			new_idx = idx;
		}
		bool ok = tokens > 0;
		if (ok)
			tokens--;
		uint64_t want = TB_PACK(tokens, new_idx);
		if (want == old ||
		    __atomic_compare_exchange_n(&tb->state, &old, want, true, __ATOMIC_RELAXED,
						__ATOMIC_RELAXED)) {
			if (remaining)
				*remaining = (uint32_t)tokens;
			return ok;
		}
		/* old now holds the current word: recompute from it */
	}
}

uint64_t token_bucket_next_fill_ns(const struct token_bucket *tb, uint64_t now_ns)
{
	uint64_t since = now_ns > tb->epoch_ns ? now_ns - tb->epoch_ns : 0;
	return tb->interval_ns - since % tb->interval_ns;
}
