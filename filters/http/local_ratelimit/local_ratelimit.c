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
 * Descriptors (Envoy's LocalRateLimiterImpl): the request's descriptors come
 * from rate_limits actions (ratelimit_action.h) of the filter's stage: the
 * filter's own rate_limits if set, else the route's, and the virtual host's
 * as vh_rate_limits says (OVERRIDE: only when the route has none, INCLUDE:
 * as well, IGNORE: never).  Every configured descriptor equal to one of
 * them (same entries, same order) is matched; matched buckets are taken
 * from the lowest fill rate up, and the first empty one limits the request
 * (tokens already taken are not returned, as Envoy).  The default bucket is
 * then taken when nothing matched or always_consume_default_token_bucket
 * (default true).  x-ratelimit-* headers describe the bucket that refused
 * the request, else the first matched descriptor's, else the default one.
 * Descriptor buckets are lock-free like the default one (token_bucket.h).
 *
 * Not yet: wildcard descriptor values (empty value; Envoy's dynamic
 * descriptors and max_dynamic_descriptors), local_cluster_rate_limit,
 * per-connection buckets in a per-route config, a runtime layer (runtime
 * keys are accepted; the default values apply). */
#include "proxy/filter.h"
#include "proxy/snapshot.h"
#include "proxy/http/stream.h"
#include "proxy/worker.h"
#include "proxy/router/route.h"
#include "proxy/router/ratelimit_action.h"
#include "proxy/server.h"
#include "filters/common/ratelimit_cfg.h"
#include "filters/common/token_bucket.h"

#define LRL_TYPE "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit"

#define LRL_STATS(X) X(COUNTER, enabled) X(COUNTER, enforced) X(COUNTER, rate_limited) X(COUNTER, ok)
enum { LRL_STATS(STATS_ENUM) LRL_STATS_N };
static const struct stat_desc lrl_stat_desc[] = { LRL_STATS(STATS_DESC) };

/* LocalRateLimitDescriptor: entries and their own bucket. */
struct lrl_desc {
	struct rl_entry *e;              /* owned [n]; key/value strings owned too */
	uint32_t n;
	struct token_bucket_cfg tb;
	struct token_bucket bucket;      /* shared by all workers (mutable) */
};

#define LRL_MAX_DESCRIPTORS 64       /* matched set is a 64-bit mask */

enum vh_rl_mode { VH_RL_OVERRIDE, VH_RL_INCLUDE, VH_RL_IGNORE };

struct lrl_cfg {
	struct token_bucket bucket;      /* shared by all workers (mutable); unused
	                                    when per_connection or !has_bucket */
	bool has_bucket;                 /* token_bucket given; without it nothing is limited */
	bool per_connection;             /* local_rate_limit_per_downstream_connection */
	bool xrl_headers;                /* enable_x_ratelimit_headers: DRAFT_VERSION_03 */
	struct token_bucket_cfg tb;
	struct fraction enabled, enforced;   /* default 0 %: off, as Envoy */
	int status;                      /* default 429 */
	int grpc_status;                 /* gRPC requests: 8 (rate_limited_as_resource_exhausted) or -1 (mapped from status) */
	struct header_adds *resp_add;    /* owned: response_headers_to_add */
	struct header_adds *req_add;     /* owned: request_headers_to_add_when_not_enforced */
	struct stats_scope *stats;       /* owned: <prefix>.http_local_rate_limit.* */
	struct lrl_desc *desc;           /* owned [ndesc], sorted by fill rate, lowest first */
	uint32_t ndesc;
	uint32_t stage;                  /* rate_limits stage whose descriptors count */
	bool consume_default;            /* always_consume_default_token_bucket (default true) */
	enum vh_rl_mode vh_mode;         /* vh_rate_limits */
	struct rl_policy_list *rl;       /* owned: the filter's rate_limits, or NULL */
};

/* Per-stream state, recycled through a per-thread free list. */
struct lrl_stream {
	const struct lrl_cfg *cfg;
	struct token_bucket *bucket;     /* the bucket the x-ratelimit headers describe */
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
	"local_cluster_rate_limit", "max_dynamic_descriptors", NULL
};
static const char *const vh_modes[] = { "OVERRIDE", "INCLUDE", "IGNORE" };
static const char *const xrl_modes[] = { "OFF", "DRAFT_VERSION_03" };

static void lrl_free_config(void *v)
{
	struct lrl_cfg *cfg = v;
	if (!cfg)
		return;
	header_adds_free(cfg->resp_add);
	header_adds_free(cfg->req_add);
	stats_scope_free(cfg->stats);
	for (uint32_t i = 0; i < cfg->ndesc; i++) {
		for (uint32_t k = 0; k < cfg->desc[i].n; k++) {
			xfree((char *)cfg->desc[i].e[k].key);
			xfree((char *)cfg->desc[i].e[k].value);
		}
		xfree(cfg->desc[i].e);
	}
	xfree(cfg->desc);
	rl_policy_list_free(cfg->rl);
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

/* One LocalRateLimitDescriptor {entries[] {key, value}, token_bucket}. */
static int parse_descriptor(struct cfg_ctx *c, const json_t *d, struct lrl_desc *out)
{
	static const char *const df[] = { "entries", "token_bucket", NULL };
	static const char *const ef[] = { "key", "value", NULL };
	const json_t *arr;

	if (cfg_expect_object(c, d) || cfg_check_fields(c, d, df))
		return RM_ERROR;
	if (!(arr = cfg_enter_req(c, d, "entries")))
		return RM_ERROR;
	if (cfg_expect_array(c, arr))
		return RM_ERROR;
	size_t n = json_array_size(arr);
	if (!n)
		return cfg_fail(c, "at least one entry is required");
	if (n > RL_MAX_ACTIONS)
		return cfg_fail(c, "at most %d entries are supported", RL_MAX_ACTIONS);
	out->e = xcalloc(n, sizeof(*out->e));
	for (size_t i = 0; i < n; i++) {
		const json_t *e = cfg_enter_idx(c, arr, i);
		const char *k = NULL, *v = NULL;
		if (!e || cfg_expect_object(c, e) || cfg_check_fields(c, e, ef) ||
		    cfg_string_req(c, e, "key", &k) || cfg_string(c, e, "value", &v))
			return RM_ERROR;
		if (!*k)
			return cfg_fail_field(c, e, "key", "must not be empty");
		if (!v || !*v)
			return cfg_fail_field(c, e, "value", "an empty value (a wildcard descriptor) "
					      "is not supported yet");
		out->e[i] = (struct rl_entry){ xstrdup(k), (uint32_t)strlen(k), xstrdup(v),
					       (uint32_t)strlen(v) };
		out->n++;
		cfg_leave(c);
	}
	cfg_leave(c);
	if (cfg_token_bucket(c, d, "token_bucket", &out->tb))
		return RM_ERROR;
	token_bucket_init(&out->bucket, out->tb.max_tokens, out->tb.tokens_per_fill,
			  out->tb.fill_interval_ns, now_ns());
	return RM_OK;
}

static bool desc_entries_equal(const struct rl_entry *a, uint32_t na, const struct rl_entry *b,
			       uint32_t nb)
{
	if (na != nb)
		return false;
	for (uint32_t i = 0; i < na; i++)
		if (a[i].key_len != b[i].key_len || a[i].value_len != b[i].value_len ||
		    memcmp(a[i].key, b[i].key, a[i].key_len) ||
		    memcmp(a[i].value, b[i].value, a[i].value_len))
			return false;
	return true;
}

/* Does a fill faster than b (tokens per ns)? */
static bool fills_faster(const struct lrl_desc *a, const struct lrl_desc *b)
{
	/* a.per / a.int > b.per / b.int  <=>  a.per * b.int > b.per * a.int */
	return (unsigned __int128)a->tb.tokens_per_fill * b->tb.fill_interval_ns >
	       (unsigned __int128)b->tb.tokens_per_fill * a->tb.fill_interval_ns;
}

static int parse_descriptors(struct cfg_ctx *c, const json_t *j, struct lrl_cfg *cfg)
{
	const json_t *arr = cfg_enter(c, j, "descriptors");
	if (!arr)
		return c->failed ? RM_ERROR : RM_OK;
	if (cfg_expect_array(c, arr))
		return RM_ERROR;
	size_t n = json_array_size(arr);
	if (n > LRL_MAX_DESCRIPTORS)
		return cfg_fail(c, "at most %d descriptors are supported", LRL_MAX_DESCRIPTORS);
	cfg->desc = n ? xcalloc(n, sizeof(*cfg->desc)) : NULL;
	for (size_t i = 0; i < n; i++) {
		const json_t *d = cfg_enter_idx(c, arr, i);
		cfg->ndesc++;
		if (!d || parse_descriptor(c, d, &cfg->desc[i]))
			return RM_ERROR;
		for (size_t k = 0; k < i; k++)
			if (desc_entries_equal(cfg->desc[k].e, cfg->desc[k].n, cfg->desc[i].e,
					       cfg->desc[i].n))
				return cfg_fail(c, "duplicate descriptor (same entries as "
						"descriptors[%zu])", k);
		cfg_leave(c);
	}
	cfg_leave(c);
	/* lowest fill rate first; a stable insertion sort keeps config order
	 * among equals (nothing points into the array yet) */
	for (size_t i = 1; i < n; i++) {
		struct lrl_desc x = cfg->desc[i];
		size_t k = i;
		for (; k > 0 && fills_faster(&cfg->desc[k - 1], &x); k--)
			cfg->desc[k] = cfg->desc[k - 1];
		cfg->desc[k] = x;
	}
	return RM_OK;
}

static void *lrl_parse_config(struct cfg_ctx *c, const json_t *j, struct build_ctx *b)
{
	struct lrl_cfg *cfg = xcalloc(1, sizeof(*cfg));
	const char *prefix = NULL;
	bool exhausted = false;
	int xrl = 0, vh_mode = 0;
	int depth0 = c->depth;

	cfg->status = 429;
	cfg->enabled = (struct fraction){ 0, 100 };
	cfg->enforced = (struct fraction){ 0, 100 };
	cfg->consume_default = true;
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
	if (cfg_u32(c, j, "stage", &cfg->stage) ||
	    cfg_bool(c, j, "always_consume_default_token_bucket", &cfg->consume_default) ||
	    cfg_enum(c, j, "vh_rate_limits", vh_modes, ARRAY_SIZE(vh_modes), &vh_mode) ||
	    rl_policy_list_compile(c, j, "rate_limits", &cfg->rl) ||
	    parse_descriptors(c, j, cfg) ||
	    cfg_bool(c, j, "rate_limited_as_resource_exhausted", &exhausted) ||
	    cfg_bool(c, j, "local_rate_limit_per_downstream_connection", &cfg->per_connection) ||
	    cfg_enum(c, j, "enable_x_ratelimit_headers", xrl_modes, ARRAY_SIZE(xrl_modes), &xrl) ||
	    parse_status(c, j, &cfg->status) ||
	    cfg_runtime_fraction(c, j, "filter_enabled", &cfg->enabled) ||
	    cfg_runtime_fraction(c, j, "filter_enforced", &cfg->enforced) ||
	    header_adds_compile(c, j, "response_headers_to_add", &cfg->resp_add) ||
	    header_adds_compile(c, j, "request_headers_to_add_when_not_enforced", &cfg->req_add))
		goto error;
	if (cfg->stage > RL_MAX_STAGE) {
		fail_field(c, j, "stage", "must be at most 10");
		goto error;
	}
	cfg->vh_mode = (enum vh_rl_mode)vh_mode;
	cfg->grpc_status = exhausted ? 8 : -1;   /* RESOURCE_EXHAUSTED, else mapped */
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
	c->depth = depth0;   /* unwind what a failed member left entered */
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

/* The buckets of this request's connection (local_rate_limit_per_downstream_
 * connection): [0] the default one, [1 + i] descriptor i's.  Allocated on
 * the connection's first request. */
static struct token_bucket *conn_buckets(const struct lrl_cfg *cfg, struct http_stream *s)
{
	void **slot = http_stream_conn_state(s, cfg);
	if (!*slot) {
		struct token_bucket *tb = xcalloc(1 + cfg->ndesc, sizeof(*tb));
		uint64_t now = now_ns();
		token_bucket_init(&tb[0], cfg->tb.max_tokens, cfg->tb.tokens_per_fill,
				  cfg->tb.fill_interval_ns, now);
		for (uint32_t i = 0; i < cfg->ndesc; i++)
			token_bucket_init(&tb[1 + i], cfg->desc[i].tb.max_tokens,
					  cfg->desc[i].tb.tokens_per_fill,
					  cfg->desc[i].tb.fill_interval_ns, now);
		*slot = tb;
	}
	return *slot;
}

struct match_ctx {
	const struct lrl_cfg *cfg;
	uint64_t mask;                   /* bit i: configured descriptor i matched */
};

static bool match_one(const struct rl_descriptor *d, void *arg)
{
	struct match_ctx *m = arg;
	for (uint32_t i = 0; i < m->cfg->ndesc; i++) {
		const struct lrl_desc *ld = &m->cfg->desc[i];
		if (desc_entries_equal(ld->e, ld->n, d->e, d->n)) {
			m->mask |= 1ull << i;
			break;   /* configured descriptors are distinct */
		}
	}
	return true;
}

/* Which configured descriptors the request's descriptors match. */
static uint64_t matched_descriptors(const struct lrl_cfg *cfg, struct http_stream *s,
				    const struct http_headers *h)
{
	const struct virtual_host *vh;
	const struct route_entry *re = http_stream_route(s, &vh);
	struct match_ctx m = { cfg, 0 };
	struct rl_input in = {
		.req = h,
		.peer_ip = http_stream_peer_ip(s),
		.local_cluster = g_server.node_cluster,
		.dest_cluster = re && re->kind == ROUTE_ACTION_ROUTE ? re->cluster : NULL,
	};

	if (cfg->rl) {   /* the filter's own rate_limits replace the route's */
		rl_policy_list_descriptors(cfg->rl, cfg->stage, &in, match_one, &m);
		return m.mask;
	}
	if (!re)
		return 0;
	rl_policy_list_descriptors(re->rate_limits, cfg->stage, &in, match_one, &m);
	if (cfg->vh_mode == VH_RL_INCLUDE || (cfg->vh_mode == VH_RL_OVERRIDE && !re->rate_limits))
		rl_policy_list_descriptors(re->vh_rate_limits, cfg->stage, &in, match_one, &m);
	return m.mask;
}

/* One token from tb; the x-ratelimit headers describe the first bucket
 * taken from, or the one that refused. */
static bool take_one(struct lrl_stream *ls, struct token_bucket *tb)
{
	uint32_t rem;
	bool got = token_bucket_take(tb, &rem);
	if (!ls->bucket || !got) {
		ls->bucket = tb;
		ls->remaining = rem;
	}
	return got;
}

/* Take tokens as Envoy's requestAllowed; false when limited.  ls->bucket /
 * ls->remaining get the bucket the x-ratelimit headers describe (NULL when
 * no bucket applied). */
static bool take_tokens(struct lrl_stream *ls, const struct lrl_cfg *cfg, struct http_stream *s,
			const struct http_headers *h)
{
	uint64_t mask = cfg->ndesc ? matched_descriptors(cfg, s, h) : 0;
	struct token_bucket *conn = cfg->per_connection ? conn_buckets(cfg, s) : NULL;

	for (uint32_t i = 0; mask >> i; i++) {   /* sorted: lowest fill rate first */
		if (!(mask & (1ull << i)))
			continue;
		if (!take_one(ls, conn ? &conn[1 + i] : &((struct lrl_cfg *)cfg)->desc[i].bucket))
			return false;
	}
	if (cfg->has_bucket && (!mask || cfg->consume_default))
		return take_one(ls, conn ? &conn[0] : (struct token_bucket *)&cfg->bucket);
	return true;
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
	bool allowed = take_tokens(ls, cfg, s, h);
	ls->checked = ls->bucket != NULL;
	if (allowed) {
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
	http_stream_set_response_flag(s, RF_RL);
	http_stream_send_local_reply_grpc(s, cfg->status, cfg->grpc_status, "local_rate_limited",
					  "local_rate_limited");
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
		int n = snprintf(buf, sizeof(buf), "%u", ls->bucket->max_tokens);
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
