/* local_ratelimit.c - envoy.filters.http.local_ratelimit.
 *
 * Each request (when filter_enabled samples it) takes a token from a bucket
 * shared by every worker (or, with local_rate_limit_per_downstream_connection,
 * from a bucket of its downstream connection).  Without a token, and when
 * filter_enforced samples it, the request gets a local reply (429 by
 * default) with x-envoy-ratelimited: true and response_headers_to_add;
 * when not enforced it continues with request_headers_to_add_when_not_enforced.
 *
 * Stats (Envoy's names): <stat_prefix>.http_local_rate_limit.{enabled,
 * enforced, rate_limited, ok}.
 *
 * Per-route configuration (typed_per_filter_config, the same LocalRateLimit
 * message): as Envoy, it replaces the filter-level config for the route's
 * requests, with its own token bucket, stats (its stat_prefix) and settings.
 *
 * Not yet: descriptors and rate-limit actions, per-connection buckets in a
 * per-route config, a runtime layer (runtime keys are accepted; the default
 * values apply). */
#include "proxy/filter.h"
#include "proxy/snapshot.h"
#include "proxy/http/stream.h"
#include "proxy/worker.h"
#include "proxy/router/route.h"
#include "filters/common/ratelimit_cfg.h"
#include "filters/common/token_bucket.h"

#define LRL_TYPE "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit"

#define LRL_STATS(X) X(COUNTER, enabled) X(COUNTER, enforced) X(COUNTER, rate_limited) X(COUNTER, ok)
enum { LRL_STATS(STATS_ENUM) LRL_STATS_N };
static const struct stat_desc lrl_stat_desc[] = { LRL_STATS(STATS_DESC) };

struct lrl_cfg {
	struct token_bucket bucket;      /* shared by all workers (mutable); unused
	                                    when per_connection or !has_bucket */
	bool has_bucket;                 /* token_bucket given; without it nothing is limited */
	bool per_connection;             /* local_rate_limit_per_downstream_connection */
	bool xrl_headers;                /* enable_x_ratelimit_headers: DRAFT_VERSION_03 */
	struct token_bucket_cfg tb;
	struct fraction enabled, enforced;   /* default 0 %: off, as Envoy */
	int status;                      /* default 429 */
	struct header_adds *resp_add;    /* owned: response_headers_to_add */
	struct header_adds *req_add;     /* owned: request_headers_to_add_when_not_enforced */
	struct stats_scope *stats;       /* owned: <prefix>.http_local_rate_limit.* */
};

/* Per-stream state, recycled through a per-thread free list. */
struct lrl_stream {
	const struct lrl_cfg *cfg;
	struct token_bucket *bucket;     /* the bucket this request was checked against */
	uint32_t remaining;              /* tokens left after the check */
	bool checked;                    /* a bucket was consulted */
	bool limited;                    /* this filter answers with the local reply */
	struct lrl_stream *next_free;
};

static const char *const lrl_fields[] = {
	"stat_prefix", "status", "token_bucket", "filter_enabled", "filter_enforced",
	"request_headers_to_add_when_not_enforced", "response_headers_to_add", "descriptors",
	"stage", "local_rate_limit_per_downstream_connection", "enable_x_ratelimit_headers",
	"always_consume_default_token_bucket", "rate_limited_as_resource_exhausted",
	"local_cluster_rate_limit", "vh_rate_limits", "rate_limits", "max_dynamic_descriptors",
	NULL
};
/* Accepted names that are not implemented: an error if set. */
static const char *const lrl_not_yet[] = {
	"descriptors", "local_cluster_rate_limit", "vh_rate_limits", "rate_limits",
	"max_dynamic_descriptors", NULL
};
static const char *const xrl_modes[] = { "OFF", "DRAFT_VERSION_03" };

static void lrl_free_config(void *v)
{
	struct lrl_cfg *cfg = v;
	if (!cfg)
		return;
	header_adds_free(cfg->resp_add);
	header_adds_free(cfg->req_add);
	stats_scope_free(cfg->stats);
	free(cfg);
}

static int fail_field(struct cfg_ctx *c, const json_t *j, const char *field, const char *msg)
{
	cfg_enter(c, j, field);
	cfg_fail(c, "%s", msg);
	cfg_leave(c);
	return RM_ERROR;
}

static int parse_status(struct cfg_ctx *c, const json_t *j, int *status)
{
	static const char *const f[] = { "code", NULL };
	const json_t *v = cfg_enter(c, j, "status");
	uint32_t code = 0;
	int rc;
	if (!v)
		return RM_OK;
	rc = cfg_expect_object(c, v) || cfg_check_fields(c, v, f);
	if (!rc && !cfg_get(v, "code"))
		rc = (cfg_enter_req(c, v, "code"), RM_ERROR);
	if (!rc)
		rc = cfg_u32(c, v, "code", &code);
	if (!rc && (code < 200 || code > 599))
		rc = fail_field(c, v, "code", "must be an HTTP status in 200..599");
	cfg_leave(c);
	if (!rc)
		*status = (int)code;
	return rc ? RM_ERROR : RM_OK;
}

static void *lrl_parse_config(struct cfg_ctx *c, const json_t *j, struct build_ctx *b)
{
	struct lrl_cfg *cfg = xcalloc(1, sizeof(*cfg));
	const char *prefix = NULL;
	bool b_ignored = false, exhausted = false;
	uint32_t stage = 0;
	int xrl = 0;

	cfg->status = 429;
	cfg->enabled = (struct fraction){ 0, 100 };
	cfg->enforced = (struct fraction){ 0, 100 };
	if (!j) {
		cfg_fail(c, "missing required field 'typed_config'");
		goto error;
	}
	if (cfg_expect_object(c, j) || cfg_check_fields(c, j, lrl_fields) ||
	    cfg_string_req(c, j, "stat_prefix", &prefix))
		goto error;
	if (!*prefix) {
		fail_field(c, j, "stat_prefix", "must not be empty");
		goto error;
	}
	for (size_t i = 0; lrl_not_yet[i]; i++) {
		const json_t *v = cfg_get(j, lrl_not_yet[i]);
		if (v && !(json_is_array(v) && !json_array_size(v))) {
			fail_field(c, j, lrl_not_yet[i], "not supported yet by Remora's local_ratelimit");
			goto error;
		}
	}
	if (cfg_u32(c, j, "stage", &stage) ||
	    cfg_bool(c, j, "always_consume_default_token_bucket", &b_ignored) ||
	    cfg_bool(c, j, "rate_limited_as_resource_exhausted", &exhausted) ||
	    cfg_bool(c, j, "local_rate_limit_per_downstream_connection", &cfg->per_connection) ||
	    cfg_enum(c, j, "enable_x_ratelimit_headers", xrl_modes, ARRAY_SIZE(xrl_modes), &xrl) ||
	    parse_status(c, j, &cfg->status) ||
	    cfg_runtime_fraction(c, j, "filter_enabled", &cfg->enabled) ||
	    cfg_runtime_fraction(c, j, "filter_enforced", &cfg->enforced) ||
	    header_adds_compile(c, j, "response_headers_to_add", &cfg->resp_add) ||
	    header_adds_compile(c, j, "request_headers_to_add_when_not_enforced", &cfg->req_add))
		goto error;
	if (stage) {
		fail_field(c, j, "stage", "only stage 0 is supported (stages select descriptors, "
					  "which are not supported yet)");
		goto error;
	}
	if (exhausted) {
		fail_field(c, j, "rate_limited_as_resource_exhausted",
			   "not supported yet (gRPC status mapping of local replies)");
		goto error;
	}
	cfg->xrl_headers = xrl == 1;
	if (cfg_get(j, "token_bucket")) {
		if (cfg_token_bucket(c, j, "token_bucket", &cfg->tb))
			goto error;
		cfg->has_bucket = true;
		token_bucket_init(&cfg->bucket, cfg->tb.max_tokens, cfg->tb.tokens_per_fill,
				  cfg->tb.fill_interval_ns, now_ns());
	}
	{
		char *scope = xasprintf("%s.http_local_rate_limit", prefix);
		cfg->stats = stats_scope_new(b->stats, scope, "http_local_rate_limit",
					     "envoy_local_http_ratelimit_prefix", prefix,
					     lrl_stat_desc, LRL_STATS_N);
		free(scope);
	}
	return cfg;
error:
	lrl_free_config(cfg);
	return NULL;
}

/* A per-route LocalRateLimit: the same message and parser.  Per-connection
 * buckets live in the HCM's per-connection slot of the filter-level config,
 * which a per-route config does not have (yet). */
static void *lrl_parse_per_route(struct cfg_ctx *c, const json_t *j, struct build_ctx *b)
{
	struct lrl_cfg *cfg = lrl_parse_config(c, j, b);
	if (cfg && cfg->per_connection) {
		fail_field(c, j, "local_rate_limit_per_downstream_connection",
			   "not supported yet in a per-route (typed_per_filter_config) config");
		lrl_free_config(cfg);
		return NULL;
	}
	return cfg;
}

/* ---- per stream ---------------------------------------------------------------- */

#define LRL_CACHE_MAX 256
static __thread struct lrl_stream *lrl_cache;
static __thread unsigned lrl_cache_n;

static void *lrl_create(struct http_stream *s, const void *vcfg)
{
	struct lrl_stream *ls = lrl_cache;
	const void *route_cfg = http_stream_per_route_config(s, vcfg);
	if (ls) {
		lrl_cache = ls->next_free;
		lrl_cache_n--;
	} else {
		ls = xmalloc(sizeof(*ls));
	}
	memset(ls, 0, sizeof(*ls));
	ls->cfg = route_cfg ? route_cfg : vcfg;   /* per-route config replaces it */
	return ls;
}

static void lrl_destroy(void *ctx)
{
	struct lrl_stream *ls = ctx;
	if (lrl_cache_n >= LRL_CACHE_MAX) {
		free(ls);
		return;
	}
	ls->next_free = lrl_cache;
	lrl_cache = ls;
	lrl_cache_n++;
}

static void lrl_thread_exit(void)
{
	while (lrl_cache) {
		struct lrl_stream *ls = lrl_cache;
		lrl_cache = ls->next_free;
		free(ls);
	}
	lrl_cache_n = 0;
}

static void lrl_conn_state_free(void *state)
{
	free(state);
}

/* The bucket for this request: the shared one, or its connection's. */
static struct token_bucket *bucket_for(const struct lrl_cfg *cfg, struct http_stream *s)
{
	if (!cfg->per_connection)
		return (struct token_bucket *)&cfg->bucket;   /* the mutable part of the config */
	void **slot = http_stream_conn_state(s, cfg);
	if (!*slot) {
		struct token_bucket *tb = xmalloc(sizeof(*tb));
		token_bucket_init(tb, cfg->tb.max_tokens, cfg->tb.tokens_per_fill,
				  cfg->tb.fill_interval_ns, now_ns());
		*slot = tb;
	}
	return *slot;
}

static enum filter_status lrl_decode_headers(void *ctx, struct http_stream *s,
					     struct http_headers *h, bool end_stream)
{
	struct lrl_stream *ls = ctx;
	const struct lrl_cfg *cfg = ls->cfg;
	struct stats_scope *st = cfg->stats;
	unsigned shard = http_stream_worker(s)->shard;
	(void)end_stream;

	if (!fraction_sample(&cfg->enabled))
		return FILTER_CONTINUE;
	stats_inc(st, shard, enabled);
	if (!cfg->has_bucket) {
		stats_inc(st, shard, ok);
		return FILTER_CONTINUE;
	}
	ls->bucket = bucket_for(cfg, s);
	ls->checked = true;
	if (token_bucket_take(ls->bucket, &ls->remaining)) {
		stats_inc(st, shard, ok);
		return FILTER_CONTINUE;
	}
	stats_inc(st, shard, rate_limited);
	if (!fraction_sample(&cfg->enforced)) {
		header_adds_apply(cfg->req_add, h);
		return FILTER_CONTINUE;
	}
	stats_inc(st, shard, enforced);
	ls->limited = true;
	http_stream_send_local_reply(s, cfg->status, "local_rate_limited", "local_rate_limited");
	return FILTER_STOP;
}

static enum filter_status lrl_encode_headers(void *ctx, struct http_stream *s,
					     struct http_headers *h, bool end_stream)
{
	struct lrl_stream *ls = ctx;
	const struct lrl_cfg *cfg = ls->cfg;
	(void)s;
	(void)end_stream;

	if (ls->limited) {
		header_adds_apply(cfg->resp_add, h);
		hdrs_set(h, "x-envoy-ratelimited", "true", 4);
	}
	if (cfg->xrl_headers && ls->checked) {
		char buf[24];
		uint64_t ns = token_bucket_next_fill_ns(ls->bucket, now_ns());
		int n = snprintf(buf, sizeof(buf), "%u", cfg->tb.max_tokens);
		hdrs_set(h, "x-ratelimit-limit", buf, (size_t)n);
		n = snprintf(buf, sizeof(buf), "%u", ls->remaining);
		hdrs_set(h, "x-ratelimit-remaining", buf, (size_t)n);
		/* whole seconds until the next fill, rounded up */
		n = snprintf(buf, sizeof(buf), "%llu",
			     (unsigned long long)((ns + 999999999ull) / 1000000000ull));
		hdrs_set(h, "x-ratelimit-reset", buf, (size_t)n);
	}
	return FILTER_CONTINUE;
}

const struct http_filter_ops local_ratelimit_filter_ops = {
	.name = "envoy.filters.http.local_ratelimit",
	.type_url = LRL_TYPE,
	.parse_config = lrl_parse_config,
	.free_config = lrl_free_config,
	.parse_per_route = lrl_parse_per_route,
	.free_per_route = lrl_free_config,
	.create = lrl_create,
	.destroy = lrl_destroy,
	.decode_headers = lrl_decode_headers,
	.encode_headers = lrl_encode_headers,
	.conn_state_free = lrl_conn_state_free,
	.thread_exit = lrl_thread_exit,
};
