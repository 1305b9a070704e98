/* local_ratelimit.c - envoy.filters.network.local_ratelimit.
 *
 * A non-terminal network filter: each new connection on the filter chain
 * takes one token from a bucket shared by every worker; without a token the
 * connection is closed at once, before the terminal filter (or any
 * allocation) sees it.  Stats: local_rate_limit.<stat_prefix>.rate_limited. */
#include "proxy/filter.h"
#include "proxy/snapshot.h"
#include "proxy/downstream.h"
#include "proxy/worker.h"
#include "filters/common/ratelimit_cfg.h"
#include "filters/common/token_bucket.h"

#define NLRL_TYPE "type.googleapis.com/envoy.extensions.filters.network.local_ratelimit.v3.LocalRateLimit"

#define NLRL_STATS(X) X(COUNTER, rate_limited)
enum { NLRL_STATS(STATS_ENUM) NLRL_STATS_N };
static const struct stat_desc nlrl_stat_desc[] = { NLRL_STATS(STATS_DESC) };

struct nlrl_cfg {
	struct token_bucket bucket;      /* shared, mutable: the only state */
	bool enabled;                    /* runtime_enabled.default_value (default true) */
	struct stats_scope *stats;       /* owned: local_rate_limit.<prefix>.* */
};

static void nlrl_free_config(void *v)
{
	struct nlrl_cfg *cfg = v;
	if (!cfg)
		return;
	stats_scope_free(cfg->stats);
	free(cfg);
}

static void *nlrl_parse_config(struct cfg_ctx *c, const json_t *j, struct build_ctx *b)
{
	static const char *const f[] = { "stat_prefix", "token_bucket", "runtime_enabled",
					 "share_key", NULL };
	struct nlrl_cfg *cfg = xcalloc(1, sizeof(*cfg));
	struct token_bucket_cfg tb;
	const char *prefix = NULL;

	cfg->enabled = true;
	if (cfg_expect_object(c, j) || cfg_check_fields(c, j, f) ||
	    cfg_string_req(c, j, "stat_prefix", &prefix))
		goto error;
	if (!*prefix) {
		cfg_fail_field(c, j, "stat_prefix", "must not be empty");
		goto error;
	}
	if (cfg_get(j, "share_key")) {
		cfg_fail_field(c, j, "share_key", "not supported yet (each filter has its own bucket)");
		goto error;
	}
	if (cfg_token_bucket(c, j, "token_bucket", &tb) ||
	    cfg_runtime_flag(c, j, "runtime_enabled", &cfg->enabled))
		goto error;
	token_bucket_init(&cfg->bucket, tb.max_tokens, tb.tokens_per_fill, tb.fill_interval_ns,
			  now_ns());
	{
		char *scope = xasprintf("local_rate_limit.%s", prefix);
		cfg->stats = stats_scope_new(b->stats, scope, "local_rate_limit",
					     "envoy_local_network_ratelimit_prefix", prefix,
					     nlrl_stat_desc, NLRL_STATS_N);
		free(scope);
	}
	return cfg;
error:
	nlrl_free_config(cfg);
	return NULL;
}

static bool nlrl_on_new_connection(const struct accept_info *ai, const void *vcfg)
{
	struct nlrl_cfg *cfg = (struct nlrl_cfg *)vcfg;   /* the bucket is the mutable part */
	if (!cfg->enabled || token_bucket_take(&cfg->bucket, NULL))
		return true;
	stats_inc(cfg->stats, ai->w->shard, rate_limited);
	return false;
}

const struct network_filter_ops network_local_ratelimit_filter_ops = {
	.name = "envoy.filters.network.local_ratelimit",
	.type_url = NLRL_TYPE,
	.parse_config = nlrl_parse_config,
	.free_config = nlrl_free_config,
	.on_new_connection = nlrl_on_new_connection,
};
