/* ratelimit_cfg.c - TokenBucket and runtime fraction/flag parsing. */
#include "ratelimit_cfg.h"

#define MIN_FILL_INTERVAL_MS 50

int cfg_token_bucket(struct cfg_ctx *c, const json_t *obj, const char *field,
		     struct token_bucket_cfg *out)
{
	static const char *const f[] = { "max_tokens", "tokens_per_fill", "fill_interval", NULL };
	const json_t *tb;
	uint32_t max = 0, per_fill = 1;
	uint64_t ms = 0;
	int rc;

	if (!(tb = cfg_enter_req(c, obj, field)))
		return RM_ERROR;
	rc = cfg_expect_object(c, tb) || cfg_check_fields(c, tb, f);
	/* cfg_enter_req of an absent member records the usual error */
	if (!rc && !cfg_get(tb, "max_tokens"))
		rc = (cfg_enter_req(c, tb, "max_tokens"), RM_ERROR);
	if (!rc && !cfg_get(tb, "fill_interval"))
		rc = (cfg_enter_req(c, tb, "fill_interval"), RM_ERROR);
	if (!rc)
		rc = cfg_u32(c, tb, "max_tokens", &max) || cfg_u32(c, tb, "tokens_per_fill", &per_fill) ||
		     cfg_duration_ms(c, tb, "fill_interval", &ms);
	if (!rc && !max) {
		rc = cfg_fail_field(c, tb, "max_tokens", "must be greater than 0");
	}
	if (!rc && !per_fill) {
		rc = cfg_fail_field(c, tb, "tokens_per_fill", "must be greater than 0");
	}
	if (!rc && ms < MIN_FILL_INTERVAL_MS) {
		rc = cfg_fail_field(c, tb, "fill_interval", "local rate limit token bucket fill timer must be >= 50ms");
	}
	cfg_leave(c);
	if (rc)
		return RM_ERROR;
	out->max_tokens = max;
	out->tokens_per_fill = per_fill;
	out->fill_interval_ns = ms * 1000000ull;
	return RM_OK;
}

int cfg_runtime_fraction(struct cfg_ctx *c, const json_t *obj, const char *field,
			 struct fraction *out)
{
	static const char *const f[] = { "default_value", "runtime_key", NULL };
	static const char *const pf[] = { "numerator", "denominator", NULL };
	static const char *const dens[] = { "HUNDRED", "TEN_THOUSAND", "MILLION" };
	static const uint32_t den_val[] = { 100, 10000, 1000000 };
	const json_t *rf, *dv;
	const char *key = NULL;
	uint32_t num = 0;
	int den = 0, rc;

	if (!(rf = cfg_enter(c, obj, field)))
		return RM_OK;
	rc = cfg_expect_object(c, rf) || cfg_check_fields(c, rf, f) ||
	     cfg_string(c, rf, "runtime_key", &key);
	if (!rc && !(dv = cfg_enter_req(c, rf, "default_value")))
		rc = RM_ERROR;
	else if (!rc) {
		rc = cfg_expect_object(c, dv) || cfg_check_fields(c, dv, pf) ||
		     cfg_u32(c, dv, "numerator", &num) ||
		     cfg_enum(c, dv, "denominator", dens, ARRAY_SIZE(dens), &den);
		cfg_leave(c);
	}
	cfg_leave(c);
	if (rc)
		return RM_ERROR;
	out->numerator = num;
	out->denominator = den_val[den];
	return RM_OK;
}

int cfg_runtime_flag(struct cfg_ctx *c, const json_t *obj, const char *field, bool *out)
{
	static const char *const f[] = { "default_value", "runtime_key", NULL };
	const json_t *rf;
	const char *key = NULL;
	bool v = false;
	int rc;

	if (!(rf = cfg_enter(c, obj, field)))
		return RM_OK;
	rc = cfg_expect_object(c, rf) || cfg_check_fields(c, rf, f) ||
	     cfg_string(c, rf, "runtime_key", &key);
	if (!rc && !cfg_get(rf, "default_value"))
		rc = (cfg_enter_req(c, rf, "default_value"), RM_ERROR);
	if (!rc)
		rc = cfg_bool(c, rf, "default_value", &v);
	cfg_leave(c);
	if (rc)
		return RM_ERROR;
	*out = v;
	return RM_OK;
}
