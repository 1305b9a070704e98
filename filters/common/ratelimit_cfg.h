/* ratelimit_cfg.h - config pieces shared by the local rate limit filters:
 * envoy.type.v3.TokenBucket, envoy.config.core.v3.RuntimeFractionalPercent
 * and RuntimeFeatureFlag.
 *
 * Remora has no runtime layer yet: runtime_key is accepted and the
 * default_value always applies. */
#ifndef REMORA_RATELIMIT_CFG_H
#define REMORA_RATELIMIT_CFG_H

#include "proxy/config/cfg.h"

struct token_bucket_cfg {
	uint32_t max_tokens;          /* > 0 */
	uint32_t tokens_per_fill;     /* default 1 */
	uint64_t fill_interval_ns;    /* >= 50 ms, as Envoy */
};

/* A fraction numerator/denominator (denominator 100, 10000 or 1000000). */
struct fraction {
	uint32_t numerator;
	uint32_t denominator;
};

/* Required member field of obj: TokenBucket {max_tokens, tokens_per_fill,
 * fill_interval}.  RM_OK or RM_ERROR after cfg_fail. */
int cfg_token_bucket(struct cfg_ctx *c, const json_t *obj, const char *field,
		     struct token_bucket_cfg *out);
/* Optional member: RuntimeFractionalPercent {default_value {numerator,
 * denominator}, runtime_key}.  Absent: *out unchanged. */
int cfg_runtime_fraction(struct cfg_ctx *c, const json_t *obj, const char *field,
			 struct fraction *out);
/* Optional member: RuntimeFeatureFlag {default_value (required), runtime_key}. */
int cfg_runtime_flag(struct cfg_ctx *c, const json_t *obj, const char *field, bool *out);

/* True with probability numerator/denominator (per-thread PRNG; none used at
 * 0 % or 100 %). */
static inline bool fraction_sample(const struct fraction *f)
{
	if (!f->numerator)
		return false;
	if (f->numerator >= f->denominator)
		return true;
	return rand_below(f->denominator) < f->numerator;
}

#endif
