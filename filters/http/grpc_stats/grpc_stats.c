/* grpc_stats.c - envoy.filters.http.grpc_stats: per gRPC method call and
 * message counters in cluster.<route cluster>.grpc.<service>.<method>.*.
 *
 * A stream is a gRPC call when its request content-type is application/grpc*.
 * The call counts once, when it ends: success if grpc-status is 0 (response
 * headers of a trailers-only answer, or the trailers), failure otherwise, or
 * when the stream is reset / has no grpc-status.  Messages are counted by
 * walking the 5-byte gRPC frame prefixes of the request and response bodies
 * as they pass (the bytes are not touched).
 *
 * Names: with stats_for_all_methods every method gets its own scope; with
 * individual_method_stats_allowlist only listed methods do; other calls
 * count in cluster.<name>.grpc.* (Envoy's behaviour without per-method
 * names).  Scopes are created on first use by the worker that sees the
 * method first (lock-free insert into the filter config's fixed table and
 * into the stats store), so the request path never locks; the table holds
 * GRPC_METHODS_MAX (cluster, method) pairs per filter config, further pairs
 * fall back to the cluster-level scope (unbounded method names cannot grow
 * memory without limit).  emit_filter_state is accepted; Remora has no
 * filter-state consumer yet (access logs will read the counts). */
#include <sched.h>
#include <event2/buffer.h>
#include "proxy/filter.h"
#include "proxy/worker.h"
#include "proxy/snapshot.h"
#include "proxy/http/stream.h"
#include "proxy/router/route.h"

#define GRPC_STATS_TYPE "type.googleapis.com/envoy.extensions.filters.http.grpc_stats.v3.FilterConfig"
#define GRPC_METHODS_MAX 4096   /* table slots (power of two) */

#define GRPC_STATS(X)                                                                   \
	X(COUNTER, success) X(COUNTER, failure) X(COUNTER, total)                      \
	X(COUNTER, request_message_count) X(COUNTER, response_message_count)
enum { GRPC_STATS(STATS_ENUM) GRPC_STATS_N };
static const struct stat_desc grpc_stat_desc[] = { GRPC_STATS(STATS_DESC) };

struct grpc_method_entry {
	uint64_t hash;
	char *key;                           /* owned: "cluster\0service/method" */
	size_t keylen;
	struct stats_scope *scope;           /* owned; published with release */
};

struct allow_method {
	char *name;                          /* owned: "service/method" */
};

struct grpc_stats_cfg {
	struct stats_store *store;           /* not owned */
	bool all_methods, emit_filter_state, replace_dots;
	struct allow_method *allow;          /* owned [nallow] */
	size_t nallow;
	struct grpc_method_entry **table;    /* owned [GRPC_METHODS_MAX], entries owned */
};

/* The 5-byte message prefix walker of one direction. */
struct msg_walk {
	uint64_t left;                       /* payload bytes left in the current message */
	uint8_t hdr;                         /* prefix bytes seen (0..5) */
	uint8_t len[4];
};

struct grpc_stats {
	const struct grpc_stats_cfg *cfg;
	struct stats_scope *scope;           /* not owned (the config's table) */
	unsigned shard;
	struct msg_walk req, resp;
	bool done;
};

static uint64_t fnv(const char *p, size_t n)
{
	uint64_t h = 1469598103934665603ull;
	for (size_t i = 0; i < n; i++)
		h = (h ^ (uint8_t)p[i]) * 1099511628211ull;
	return h ? h : 1;
}

static struct stats_scope *make_scope(const struct grpc_stats_cfg *cfg, const char *cluster,
				      const char *method, size_t mlen)
{
	char *name, *prefix;
	struct stats_scope *s;
	if (mlen) {
		/* "service/method" -> "service.method" (dots in service optionally "_") */
		char *m = xmalloc(mlen + 1);
		const char *slash = memchr(method, '/', mlen);
		for (size_t i = 0; i < mlen; i++) {
			char ch = method[i];
			if (method + i == slash)
				ch = '.';
			else if (ch == '.' && cfg->replace_dots && method + i < slash)
				ch = '_';
			m[i] = ch;
		}
		m[mlen] = 0;
		name = xasprintf("cluster.%s.grpc.%s", cluster, m);
		prefix = xasprintf("cluster.grpc.%s", m);
		free(m);
	} else {
		name = xasprintf("cluster.%s.grpc", cluster);
		prefix = xstrdup("cluster.grpc");
	}
	s = stats_scope_new(cfg->store, name, prefix, "envoy_cluster_name", cluster, grpc_stat_desc,
			    GRPC_STATS_N);
	free(name);
	free(prefix);
	return s;
}

/* The scope of (cluster, method); method "" is the cluster-level scope.
 * Lock-free: look up, or claim a slot and create the scope.  NULL when the
 * table is full. */
static struct stats_scope *scope_for(const struct grpc_stats_cfg *cfg, const char *cluster,
				     const char *method, size_t mlen)
{
	size_t clen = strlen(cluster), klen = clen + 1 + mlen;
	char stackkey[512], *key = klen <= sizeof(stackkey) ? stackkey : xmalloc(klen);
	struct grpc_method_entry *mine = NULL, *e;
	struct stats_scope *s = NULL;
	memcpy(key, cluster, clen + 1);
	memcpy(key + clen + 1, method, mlen);
	uint64_t h = fnv(key, klen);
	for (size_t i = 0; i < GRPC_METHODS_MAX; i++) {
		struct grpc_method_entry **slot = &cfg->table[(h + i) & (GRPC_METHODS_MAX - 1)];
		e = __atomic_load_n(slot, __ATOMIC_ACQUIRE);
		if (!e) {
			if (!mine) {
				mine = xcalloc(1, sizeof(*mine));
				mine->hash = h;
				mine->key = xmalloc(klen);
				memcpy(mine->key, key, klen);
				mine->keylen = klen;
			}
			struct grpc_method_entry *expect = NULL;
			if (__atomic_compare_exchange_n(slot, &expect, mine, false, __ATOMIC_ACQ_REL,
							__ATOMIC_ACQUIRE)) {
				s = make_scope(cfg, cluster, method, mlen);
				__atomic_store_n(&mine->scope, s, __ATOMIC_RELEASE);
				mine = NULL;
				break;
			}
			e = expect;   /* another worker took the slot: is it ours? */
		}
		if (e->hash == h && e->keylen == klen && !memcmp(e->key, key, klen)) {
			/* created by another worker a moment ago: wait for its scope */
			while (!(s = __atomic_load_n(&e->scope, __ATOMIC_ACQUIRE)))
				sched_yield();
			break;
		}
	}
	if (mine) {
		free(mine->key);
		free(mine);
	}
	if (key != stackkey)
		free(key);
	return s;
}

static bool allowed(const struct grpc_stats_cfg *cfg, const char *m, size_t n)
{
	if (cfg->all_methods)
		return true;
	for (size_t i = 0; i < cfg->nallow; i++)
		if (strlen(cfg->allow[i].name) == n && !memcmp(cfg->allow[i].name, m, n))
			return true;
	return false;
}

/* Count complete messages in data as they pass (data is not modified). */
static uint64_t walk(struct msg_walk *w, struct evbuffer *data)
{
	uint64_t msgs = 0;
	int n = evbuffer_peek(data, -1, NULL, NULL, 0);
	struct evbuffer_iovec stack[16], *v = n <= 16 ? stack : xmalloc((size_t)n * sizeof(*v));
	evbuffer_peek(data, -1, NULL, v, n);
	for (int k = 0; k < n; k++) {
		const uint8_t *p = v[k].iov_base;
		size_t len = v[k].iov_len;
		while (len) {
			if (w->left) {
				size_t t = (size_t)MIN((uint64_t)len, w->left);
				w->left -= t;
				p += t;
				len -= t;
				continue;
			}
			if (w->hdr == 0)
				msgs++;   /* a new message starts */
			if (w->hdr >= 1)
				w->len[w->hdr - 1] = *p;
			w->hdr++;
			p++;
			len--;
			if (w->hdr == 5) {
				w->left = ((uint64_t)w->len[0] << 24) | ((uint64_t)w->len[1] << 16) |
					  ((uint64_t)w->len[2] << 8) | w->len[3];
				w->hdr = 0;
			}
		}
	}
	if (v != stack)
		free(v);
	return msgs;
}

static void finish(struct grpc_stats *g, bool ok)
{
	if (g->done || !g->scope)
		return;
	g->done = true;
	stats_inc(g->scope, g->shard, total);
	if (ok)
		stats_inc(g->scope, g->shard, success);
	else
		stats_inc(g->scope, g->shard, failure);
}

static void *gs_create(struct http_stream *s, const void *cfgp)
{
	const struct grpc_stats_cfg *cfg = cfgp;
	struct http_headers *h = http_stream_request(s);
	size_t ctl, pl;
	const char *ct = hdrs_get(h, "content-type", &ctl), *path = hdrs_get(h, ":path", &pl);
	const struct route_entry *re = http_stream_route(s, NULL);
	if (!ct || ctl < 16 || strncasecmp(ct, "application/grpc", 16) || !path || !re ||
	    re->kind != ROUTE_ACTION_ROUTE)
		return NULL;   /* not a gRPC call to a cluster: nothing to count */
	const char *cluster = route_pick_cluster(re, 0, NULL);
	if (!cluster)
		return NULL;
	/* "/service/method" (query strings are not part of gRPC paths) */
	const char *m = path + 1;
	size_t ml = pl - 1;
	const char *slash = ml ? memchr(m, '/', ml) : NULL;
	bool per_method = path[0] == '/' && slash && slash != m && slash + 1 < m + ml &&
			  !memchr(slash + 1, '/', (size_t)(m + ml - slash - 1)) && allowed(cfg, m, ml);
	struct stats_scope *sc = scope_for(cfg, cluster, per_method ? m : "", per_method ? ml : 0);
	if (!sc && per_method)
		sc = scope_for(cfg, cluster, "", 0);
	if (!sc)
		return NULL;
	struct grpc_stats *g = xcalloc(1, sizeof(*g));
	g->cfg = cfg;
	g->scope = sc;
	g->shard = http_stream_worker(s)->shard;
	return g;
}

static void gs_destroy(void *ctx)
{
	struct grpc_stats *g = ctx;
	if (!g)
		return;
	finish(g, false);   /* reset or ended without grpc-status */
	free(g);
}

static enum filter_status gs_decode_data(void *ctx, struct http_stream *s, struct evbuffer *d,
					 bool end)
{
	struct grpc_stats *g = ctx;
	(void)s;
	(void)end;
	if (g) {
		uint64_t n = walk(&g->req, d);
		if (n)
			stats_add(g->scope, g->shard, request_message_count, (int64_t)n);
	}
	return FILTER_CONTINUE;
}

static void status_from(struct grpc_stats *g, const struct http_headers *h)
{
	size_t n;
	const char *v = hdrs_get(h, "grpc-status", &n);
	finish(g, v && n == 1 && v[0] == '0');
}

static enum filter_status gs_encode_headers(void *ctx, struct http_stream *s,
					    struct http_headers *h, bool end)
{
	struct grpc_stats *g = ctx;
	(void)s;
	if (g && (end || hdrs_get(h, "grpc-status", NULL)))
		status_from(g, h);   /* trailers-only answer (or a local reply) */
	return FILTER_CONTINUE;
}

static enum filter_status gs_encode_data(void *ctx, struct http_stream *s, struct evbuffer *d,
					 bool end)
{
	struct grpc_stats *g = ctx;
	(void)s;
	if (!g)
		return FILTER_CONTINUE;
	uint64_t n = walk(&g->resp, d);
	if (n)
		stats_add(g->scope, g->shard, response_message_count, (int64_t)n);
	if (end)
		finish(g, false);   /* a gRPC response must end with trailers */
	return FILTER_CONTINUE;
}

static enum filter_status gs_encode_trailers(void *ctx, struct http_stream *s,
					     struct http_headers *t)
{
	struct grpc_stats *g = ctx;
	(void)s;
	if (g)
		status_from(g, t);
	return FILTER_CONTINUE;
}

static void gs_free_config(void *p)
{
	struct grpc_stats_cfg *cfg = p;
	if (!cfg)
		return;
	for (size_t i = 0; i < GRPC_METHODS_MAX; i++) {
		struct grpc_method_entry *e = cfg->table[i];
		if (e) {
			stats_scope_free(e->scope);
			free(e->key);
			free(e);
		}
	}
	free(cfg->table);
	for (size_t i = 0; i < cfg->nallow; i++)
		free(cfg->allow[i].name);
	free(cfg->allow);
	free(cfg);
}

static int parse_allowlist(struct cfg_ctx *c, const json_t *j, struct grpc_stats_cfg *cfg)
{
	static const char *const f[] = { "services", NULL };
	static const char *const sf[] = { "name", "method_names", NULL };
	const json_t *arr;
	int rc = cfg_expect_object(c, j) || cfg_check_fields(c, j, f);
	if (rc || !(arr = cfg_enter(c, j, "services")))
		return rc;
	rc = cfg_expect_array(c, arr);
	for (size_t i = 0; !rc && i < json_array_size(arr); i++) {
		const json_t *sv = cfg_enter_idx(c, arr, i), *mn;
		const char *name = NULL;
		rc = cfg_expect_object(c, sv) || cfg_check_fields(c, sv, sf) ||
		     cfg_string(c, sv, "name", &name);
		if (!rc && (!name || !*name))
			rc = cfg_fail(c, "name is required");
		if (!rc && (mn = cfg_enter(c, sv, "method_names"))) {
			rc = cfg_expect_array(c, mn);
			for (size_t k = 0; !rc && k < json_array_size(mn); k++) {
				const json_t *m = json_array_get(mn, k);
				if (!json_is_string(m) || !*json_string_value(m)) {
					cfg_enter_idx(c, mn, k);
					rc = cfg_fail(c, "expected a non-empty string");
					cfg_leave(c);
					break;
				}
				cfg->allow = xrealloc(cfg->allow, (cfg->nallow + 1) * sizeof(*cfg->allow));
				cfg->allow[cfg->nallow++].name = xasprintf("%s/%s", name, json_string_value(m));
			}
			cfg_leave(c);
		}
		cfg_leave(c);
	}
	cfg_leave(c);
	return rc;
}

static void *gs_parse_config(struct cfg_ctx *c, const json_t *j, struct build_ctx *b)
{
	static const char *const f[] = { "emit_filter_state", "stats_for_all_methods",
					  "individual_method_stats_allowlist",
					  "enable_upstream_stats", "replace_dots_in_grpc_service_name", NULL };
	struct grpc_stats_cfg *cfg = xcalloc(1, sizeof(*cfg));
	const json_t *v;
	cfg->store = b->stats;
	cfg->table = xcalloc(GRPC_METHODS_MAX, sizeof(*cfg->table));
	if (j && (cfg_expect_object(c, j) || cfg_check_fields(c, j, f) ||
		  cfg_bool(c, j, "emit_filter_state", &cfg->emit_filter_state) ||
		  cfg_bool(c, j, "stats_for_all_methods", &cfg->all_methods) ||
		  cfg_bool(c, j, "replace_dots_in_grpc_service_name", &cfg->replace_dots)))
		goto error;
	if (j && cfg_get(j, "enable_upstream_stats")) {
		cfg_fail_field(c, j, "enable_upstream_stats", "not supported yet");
		goto error;
	}
	if (j && cfg_get(j, "stats_for_all_methods") && cfg_get(j, "individual_method_stats_allowlist")) {
		cfg_fail(c, "only one of stats_for_all_methods and individual_method_stats_allowlist "
			 "may be set");
		goto error;
	}
	if (j && (v = cfg_enter(c, j, "individual_method_stats_allowlist"))) {
		int rc = parse_allowlist(c, v, cfg);
		cfg_leave(c);
		if (rc)
			goto error;
	}
	return cfg;
error:
	gs_free_config(cfg);
	return NULL;
}

const struct http_filter_ops grpc_stats_filter_ops = {
	.name = "envoy.filters.http.grpc_stats",
	.type_url = GRPC_STATS_TYPE,
	.parse_config = gs_parse_config,
	.free_config = gs_free_config,
	.create = gs_create,
	.destroy = gs_destroy,
	.decode_data = gs_decode_data,
	.encode_headers = gs_encode_headers,
	.encode_data = gs_encode_data,
	.encode_trailers = gs_encode_trailers,
};
