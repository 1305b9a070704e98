/* tracer.c - HCM tracing config, per-worker span rings, Zipkin / OTLP export. */
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <event2/buffer.h>
#include "tracer.h"
#include "stats.h"
#include "access_log_format.h"
#include "proxy/config/cfg.h"
#include "proxy/snapshot.h"
#include "proxy/server.h"
#include "proxy/worker.h"
#include "proxy/log.h"
#include "proxy/http/headers.h"
#include "proxy/tracing/trace_context.h"
#include "proxy/upstream/async_http.h"

/* ---- stats ---------------------------------------------------------------- */

#define TRACER_STATS(X)                                                              \
	X(COUNTER, spans_sent) X(COUNTER, spans_dropped) X(COUNTER, timer_flushed)   \
	X(COUNTER, reports_sent) X(COUNTER, reports_dropped) X(COUNTER, reports_failed) \
	X(COUNTER, reports_skipped_no_cluster)
enum { TRACER_STATS(STATS_ENUM) TRACER_STATS_N };
static const struct stat_desc tracer_stat_desc[] = { TRACER_STATS(STATS_DESC) };

#define HCM_TRACING_STATS(X)                                                         \
	X(COUNTER, random_sampling) X(COUNTER, service_forced) X(COUNTER, client_enabled) \
	X(COUNTER, not_traceable) X(COUNTER, health_check)
enum { HCM_TRACING_STATS(STATS_ENUM) HCM_TRACING_STATS_N };
static const struct stat_desc hcm_tracing_desc[] = { HCM_TRACING_STATS(STATS_DESC) };

enum tracer_kind { TRACER_ZIPKIN = 0, TRACER_OTEL = 1 };
static const char *const kind_scope[] = { "tracing.zipkin", "tracing.opentelemetry" };
static struct {
	struct stats_scope *sc;
	int refs;
} kind_stats[2];                    /* main thread */

/* ---- spans and rings ------------------------------------------------------- */

#define SPAN_TXT 1024
#define ADD_LIT(o, lit) evbuffer_add(o, lit, sizeof(lit) - 1)

/* The tags every span carries, recorded by number rather than by name: the
 * main thread writes their JSON keys from these pre-rendered tables
 * instead of escaping the same names for every span. */
#define STD_TAGS(X)                                                                  \
	X(TAG_METHOD, "http.method") X(TAG_URL, "http.url")                          \
	X(TAG_PROTOCOL, "http.protocol") X(TAG_UA, "user_agent")                     \
	X(TAG_RID, "guid:x-request-id") X(TAG_STATUS, "http.status_code")            \
	X(TAG_CLUSTER, "upstream_cluster") X(TAG_ADDR, "upstream_address")           \
	X(TAG_NODE, "node_id") X(TAG_COMPONENT, "component")                         \
	X(TAG_FLAGS, "response_flags") X(TAG_ERROR, "error")
#define TAG_ENUM(id, name) id,
enum std_tag { STD_TAGS(TAG_ENUM) TAG_N };
#define TAG_ZIPKIN(id, name) "\"" name "\":",
#define TAG_OTEL(id, name) "{\"key\":\"" name "\"",
#define TAG_ZIPKIN_LEN(id, name) sizeof("\"" name "\":") - 1,
#define TAG_OTEL_LEN(id, name) sizeof("{\"key\":\"" name "\"") - 1,
static const char *const tag_zipkin[TAG_N] = { STD_TAGS(TAG_ZIPKIN) };   /* "name": */
static const char *const tag_otel[TAG_N] = { STD_TAGS(TAG_OTEL) };       /* {"key":"name" */
static const uint8_t tag_zipkin_len[TAG_N] = { STD_TAGS(TAG_ZIPKIN_LEN) };
static const uint8_t tag_otel_len[TAG_N] = { STD_TAGS(TAG_OTEL_LEN) };

/* Key encoding in span_rec.txt: TAGK_STD then one byte (enum std_tag + 1,
 * | TAG_SAFE when the worker knows the value needs no JSON escaping), or
 * TAGK_CUSTOM then the configured name. */
#define TAG_SAFE 0x80u
#define TAGK_STD '\x01'
#define TAGK_CUSTOM '\x02'

/* A finished span as a worker records it: fixed size, strings packed into
 * txt by rec_put (length, bytes, NUL): the name, then key, value pairs
 * (keys encoded as above). */
struct span_rec {
	uint64_t trace_hi, trace_lo, id, parent;
	uint64_t start_us, dur_us;      /* wall-clock start, duration */
	bool server, shared, id128, error;
	uint16_t ntags, len;
	char txt[SPAN_TXT];
};

/* Single producer (one worker), single consumer (the main thread). */
struct span_ring {
	_Alignas(64) _Atomic uint32_t head;   /* spans ever pushed (worker) */
	_Alignas(64) _Atomic uint32_t tail;   /* spans ever consumed (main) */
	struct span_rec *slots;               /* owned [TRACER_RING_SLOTS] */
};

#define MAX_INFLIGHT 4
#define MAX_PENDING (TRACER_BATCH * 4)

struct tracer {
	int refcnt;                     /* main thread: trace_cfgs using it */
	char *key;                      /* owned: identity for sharing */
	enum tracer_kind kind;
	char *cluster, *path, *host;    /* owned: collector */
	char *headers;                  /* owned, NULL: extra request headers */
	char *service;                  /* owned: Zipkin localEndpoint / OTLP service.name */
	char *node_id;                  /* owned */
	bool id128, shared_ctx;
	uint64_t timeout_ms;
	unsigned nrings;
	struct span_ring *rings;        /* owned [nrings]: one per worker */
	struct stats_scope *stats;      /* kind_stats[kind].sc (one reference) */
	/* main thread */
	struct evbuffer *pending;       /* owned: rendered spans, comma separated */
	size_t npending;
	uint64_t next_timer_ms;
	struct async_http *inflight[MAX_INFLIGHT];
	struct tracer *next;
};

struct trace_tag {
	char *tag;                      /* owned */
	char *value;                    /* owned: literal / environment value / header default */
	char *header;                   /* owned, NULL unless request_header */
};

struct trace_cfg {
	uint32_t random_bp, client_bp, overall_bp;   /* out of 10000 */
	uint32_t max_path;              /* max_path_tag_length (256) */
	bool spawn_upstream;
	struct trace_tag *tags;         /* owned [ntags] */
	size_t ntags;
	struct tracer *tracer;          /* reference */
	struct stats_scope *stats;      /* owned: http.<prefix>.tracing.* */
};

static struct tracer *tracers;      /* main thread: every live tracer */
static struct event_base *main_base;
static struct event *tick_ev;

/* ---- config ---------------------------------------------------------------- */

static void tracer_unref(struct tracer *t);

/* Percent {value: 0..100} into basis points; absent: 100 %. */
static int parse_percent(struct cfg_ctx *c, const json_t *j, const char *name, uint32_t *bp)
{
	static const char *const f[] = { "value", NULL };
	const json_t *v = cfg_enter(c, j, name);
	double d = 100;
	*bp = 10000;
	if (!v)
		return RM_OK;
	int rc = cfg_expect_object(c, v) || cfg_check_fields(c, v, f) || cfg_double(c, v, "value", &d);
	if (!rc && (d < 0 || d > 100))
		rc = cfg_fail_field(c, v, "value", "must be in 0..100");
	cfg_leave(c);
	if (!rc)
		*bp = (uint32_t)(d * 100 + 0.5);
	return rc ? RM_ERROR : RM_OK;
}

static int parse_tags(struct cfg_ctx *c, const json_t *arr, struct trace_cfg *tc)
{
	static const char *const f[] = { "tag", "literal", "environment", "request_header",
					 "metadata", NULL };
	static const char *const lf[] = { "value", NULL };
	static const char *const ef[] = { "name", "default_value", NULL };
	if (cfg_expect_array(c, arr))
		return RM_ERROR;
	tc->tags = xcalloc(json_array_size(arr) + 1, sizeof(*tc->tags));
	for (size_t i = 0; i < json_array_size(arr); i++) {
		const json_t *e = cfg_enter_idx(c, arr, i), *v;
		const char *tag = NULL, *val = NULL, *name = NULL, *def = NULL;
		int rc = cfg_expect_object(c, e) || cfg_check_fields(c, e, f) ||
			 cfg_string_req(c, e, "tag", &tag);
		struct trace_tag *t = &tc->tags[tc->ntags];
		if (!rc && cfg_get(e, "metadata"))
			rc = cfg_fail_field(c, e, "metadata", "metadata custom tags are not supported");
		if (!rc && (v = cfg_enter(c, e, "literal"))) {
			rc = cfg_expect_object(c, v) || cfg_check_fields(c, v, lf) ||
			     cfg_string_req(c, v, "value", &val);
			cfg_leave(c);
			if (!rc)
				t->value = xstrdup(val);
		} else if (!rc && (v = cfg_enter(c, e, "environment"))) {
			rc = cfg_expect_object(c, v) || cfg_check_fields(c, v, ef) ||
			     cfg_string_req(c, v, "name", &name) || cfg_string(c, v, "default_value", &def);
			cfg_leave(c);
			if (!rc) {
				const char *env = getenv(name);
				t->value = env ? xstrdup(env) : def ? xstrdup(def) : NULL;
			}
		} else if (!rc && (v = cfg_enter(c, e, "request_header"))) {
			rc = cfg_expect_object(c, v) || cfg_check_fields(c, v, ef) ||
			     cfg_string_req(c, v, "name", &name) || cfg_string(c, v, "default_value", &def);
			cfg_leave(c);
			if (!rc) {
				char *h = xstrdup(name);
				for (char *p = h; *p; p++)
					*p = (char)(*p >= 'A' && *p <= 'Z' ? *p + 32 : *p);
				t->header = h;
				t->value = def ? xstrdup(def) : NULL;
			}
		} else if (!rc) {
			rc = cfg_fail(c, "a custom tag needs literal, environment or request_header");
		}
		if (!rc) {
			t->tag = xstrdup(tag);
			tc->ntags++;
		} else {
			free(t->value);
			free(t->header);
			t->value = t->header = NULL;
		}
		cfg_leave(c);
		if (rc)
			return RM_ERROR;
	}
	return RM_OK;
}

static bool cluster_known(struct build_ctx *b, const char *name)
{
	return !b || !b->snap || snapshot_find_cluster(b->snap, name);
}

/* envoy.tracers.zipkin: ZipkinConfig. */
static int parse_zipkin(struct cfg_ctx *c, const json_t *tc, struct build_ctx *b, struct tracer *t)
{
	static const char *const f[] = { "collector_cluster", "collector_endpoint",
					  "collector_endpoint_version", "trace_id_128bit",
					  "shared_span_context", "collector_hostname",
					  "split_spans_for_request", NULL };
	static const char *const versions[] = { "DEPRECATED_AND_UNAVAILABLE_DO_NOT_USE",
						"HTTP_JSON", "HTTP_PROTO", "GRPC" };
	const char *cluster = NULL, *ep = NULL, *hostname = NULL;
	int ver = 1;
	bool split = false;
	t->shared_ctx = true;
	if (cfg_expect_object(c, tc) || cfg_check_fields(c, tc, f) ||
	    cfg_string_req(c, tc, "collector_cluster", &cluster) ||
	    cfg_string_req(c, tc, "collector_endpoint", &ep) ||
	    cfg_enum(c, tc, "collector_endpoint_version", versions, 4, &ver) ||
	    cfg_bool(c, tc, "trace_id_128bit", &t->id128) ||
	    cfg_bool(c, tc, "shared_span_context", &t->shared_ctx) ||
	    cfg_string(c, tc, "collector_hostname", &hostname) ||
	    cfg_bool(c, tc, "split_spans_for_request", &split))
		return RM_ERROR;
	if (ver != 1 && cfg_get(tc, "collector_endpoint_version"))
		return cfg_fail_field(c, tc, "collector_endpoint_version",
				      "only HTTP_JSON is supported");
	if (split)
		return cfg_fail_field(c, tc, "split_spans_for_request", "not supported");
	if (!cluster_known(b, cluster))
		return cfg_fail_field(c, tc, "collector_cluster", "unknown cluster '%s'", cluster);
	t->kind = TRACER_ZIPKIN;
	t->cluster = xstrdup(cluster);
	t->path = xstrdup(ep);
	t->host = xstrdup(hostname && *hostname ? hostname : cluster);
	t->timeout_ms = 5000;
	return RM_OK;
}

/* envoy.tracers.opentelemetry: OpenTelemetryConfig with http_service. */
static int parse_otel(struct cfg_ctx *c, const json_t *tc, struct build_ctx *b, struct tracer *t)
{
	static const char *const f[] = { "grpc_service", "http_service", "service_name",
					  "resource_detectors", "sampler", NULL };
	static const char *const hf[] = { "http_uri", "request_headers_to_add", NULL };
	static const char *const uf[] = { "uri", "cluster", "timeout", NULL };
	static const char *const rejected[] = { "grpc_service", "resource_detectors", "sampler", NULL };
	static const char *const hvo[] = { "header", "append", "append_action", "keep_empty_value", NULL };
	static const char *const hv[] = { "key", "value", "raw_value", NULL };
	const json_t *hs, *u, *arr;
	const char *svc = NULL, *uri = NULL, *cluster = NULL;
	uint64_t timeout = 0;
	char *auth = NULL, *path = NULL;
	int rc = RM_ERROR;
	if (cfg_expect_object(c, tc) || cfg_check_fields(c, tc, f) ||
	    cfg_reject_fields(c, tc, rejected,
			      "not supported (OTLP/HTTP JSON export through http_service is)") ||
	    cfg_string(c, tc, "service_name", &svc))
		return RM_ERROR;
	if (!(hs = cfg_enter_req(c, tc, "http_service")))
		return RM_ERROR;
	if (cfg_expect_object(c, hs) || cfg_check_fields(c, hs, hf) ||
	    !(u = cfg_enter_req(c, hs, "http_uri")))
		goto out;
	int urc = cfg_expect_object(c, u) || cfg_check_fields(c, u, uf) ||
		  cfg_string_req(c, u, "uri", &uri) || cfg_string_req(c, u, "cluster", &cluster) ||
		  cfg_duration_ms(c, u, "timeout", &timeout);
	if (!urc && async_http_split_uri(uri, &auth, &path))
		urc = cfg_fail_field(c, u, "uri", "expected http://host[:port]/path");
	if (!urc && !cluster_known(b, cluster))
		urc = cfg_fail_field(c, u, "cluster", "unknown cluster '%s'", cluster);
	cfg_leave(c);
	if (urc)
		goto out;
	if ((arr = cfg_enter(c, hs, "request_headers_to_add"))) {
		struct evbuffer *hb = evbuffer_new();
		int hrc = cfg_expect_array(c, arr);
		for (size_t i = 0; !hrc && i < json_array_size(arr); i++) {
			const json_t *e = cfg_enter_idx(c, arr, i), *h;
			const char *k = NULL, *v = NULL;
			hrc = cfg_expect_object(c, e) || cfg_check_fields(c, e, hvo) ||
			      !(h = cfg_enter_req(c, e, "header"));
			if (!hrc) {
				hrc = cfg_expect_object(c, h) || cfg_check_fields(c, h, hv) ||
				      cfg_string_req(c, h, "key", &k) || cfg_string(c, h, "value", &v);
				if (!hrc && (strpbrk(k, "\r\n:") || (v && strpbrk(v, "\r\n"))))
					hrc = cfg_fail(c, "invalid header");
				if (!hrc)
					evbuffer_add_printf(hb, "%s: %s\r\n", k, v ? v : "");
				cfg_leave(c);
			}
			cfg_leave(c);
		}
		cfg_leave(c);
		size_t n = evbuffer_get_length(hb);
		if (!hrc && n) {
			t->headers = xmalloc(n + 1);
			evbuffer_remove(hb, t->headers, n);
			t->headers[n] = 0;
		}
		evbuffer_free(hb);
		if (hrc)
			goto out;
	}
	t->kind = TRACER_OTEL;
	t->cluster = xstrdup(cluster);
	t->path = path;
	t->host = auth;
	path = auth = NULL;
	t->timeout_ms = timeout ? timeout : 1000;
	t->id128 = true;
	if (svc && *svc)
		t->service = xstrdup(svc);
	else
		t->service = xstrdup("unknown_service:envoy");
	rc = RM_OK;
out:
	free(auth);
	free(path);
	cfg_leave(c);
	return rc;
}

static void tick_cb(evutil_socket_t fd, short what, void *arg);

static struct tracer *tracer_share(struct tracer *t, struct build_ctx *b)
{
	t->key = xasprintf("%d|%s|%s|%s|%s|%s|%d|%d|%llu", t->kind, t->cluster, t->path, t->host,
			   t->headers ? t->headers : "", t->service ? t->service : "", t->id128,
			   t->shared_ctx, (unsigned long long)t->timeout_ms);
	for (struct tracer *o = tracers; o; o = o->next) {
		if (!strcmp(o->key, t->key)) {
			o->refcnt++;
			return o;
		}
	}
	t->refcnt = 1;
	t->nrings = b && b->nworkers ? b->nworkers : 1;
	t->rings = xcalloc(t->nrings, sizeof(*t->rings));
	for (unsigned i = 0; i < t->nrings; i++)
		t->rings[i].slots = xcalloc(TRACER_RING_SLOTS, sizeof(struct span_rec));
	t->pending = evbuffer_new();
	if (!kind_stats[t->kind].refs++)
		kind_stats[t->kind].sc = stats_scope_new(b->stats, kind_scope[t->kind],
							 kind_scope[t->kind], NULL, NULL,
							 tracer_stat_desc, TRACER_STATS_N);
	t->stats = kind_stats[t->kind].sc;
	t->next_timer_ms = now_ms() + TRACER_FLUSH_MS;
	t->next = tracers;
	tracers = t;
	return t;
}

static void tracer_free_fields(struct tracer *t)
{
	free(t->key);
	free(t->cluster);
	free(t->path);
	free(t->host);
	free(t->headers);
	free(t->service);
	free(t->node_id);
	free(t);
}

/* envoy.tracers.* provider (typed_config). */
static struct tracer *parse_provider(struct cfg_ctx *c, const json_t *p, struct build_ctx *b)
{
	static const char *const f[] = { "name", "typed_config", NULL };
	static const char *const zt = "type.googleapis.com/envoy.config.trace.v3.ZipkinConfig";
	static const char *const ot = "type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig";
	const char *name = NULL, *type = NULL;
	const json_t *tc;
	struct tracer *t = xcalloc(1, sizeof(*t));
	int rc = RM_ERROR;
	if (cfg_expect_object(c, p) || cfg_check_fields(c, p, f) || cfg_string_req(c, p, "name", &name))
		goto out;
	if (!(tc = cfg_enter_req(c, p, "typed_config")))
		goto out;
	type = json_string_value(json_object_get(tc, "@type"));
	if ((type && !strcmp(type, zt)) || (!type && !strcmp(name, "envoy.tracers.zipkin")))
		rc = parse_zipkin(c, tc, b, t);
	else if ((type && !strcmp(type, ot)) || (!type && !strcmp(name, "envoy.tracers.opentelemetry")))
		rc = parse_otel(c, tc, b, t);
	else
		rc = cfg_fail(c, "unsupported tracer '%s' (envoy.tracers.zipkin and "
			      "envoy.tracers.opentelemetry are)", type ? type : name);
	cfg_leave(c);
out:
	if (rc) {
		tracer_free_fields(t);
		return NULL;
	}
	if (t->kind == TRACER_ZIPKIN) {
		const char *cl = b && b->srv && b->srv->node_cluster ? b->srv->node_cluster : "";
		t->service = xstrdup(cl);
	}
	t->node_id = xstrdup(b && b->srv && b->srv->node_id ? b->srv->node_id : "");
	struct tracer *s = tracer_share(t, b);
	if (s != t)
		tracer_free_fields(t);
	else if (main_base && !tick_ev)
		tracer_start(main_base);
	return s;
}

int trace_cfg_parse(struct cfg_ctx *c, const json_t *j, struct build_ctx *b,
		    const char *stat_prefix, struct trace_cfg **out)
{
	static const char *const f[] = { "client_sampling", "random_sampling", "overall_sampling",
					  "verbose", "max_path_tag_length", "custom_tags", "provider",
					  "spawn_upstream_span", NULL };
	const json_t *t = cfg_enter(c, j, "tracing"), *v;
	bool verbose = false;
	*out = NULL;
	if (!t)
		return RM_OK;
	struct trace_cfg *tc = xcalloc(1, sizeof(*tc));
	tc->max_path = 256;
	int rc = cfg_expect_object(c, t) || cfg_check_fields(c, t, f) ||
		 parse_percent(c, t, "client_sampling", &tc->client_bp) ||
		 parse_percent(c, t, "random_sampling", &tc->random_bp) ||
		 parse_percent(c, t, "overall_sampling", &tc->overall_bp) ||
		 cfg_bool(c, t, "verbose", &verbose) ||
		 cfg_u32(c, t, "max_path_tag_length", &tc->max_path) ||
		 cfg_bool(c, t, "spawn_upstream_span", &tc->spawn_upstream);
	if (!rc && verbose)
		rc = cfg_fail_field(c, t, "verbose", "verbose (annotations) is not supported");
	if (!rc && (v = cfg_enter(c, t, "custom_tags"))) {
		rc = parse_tags(c, v, tc);
		cfg_leave(c);
	}
	if (!rc && (v = cfg_enter(c, t, "provider"))) {
		tc->tracer = parse_provider(c, v, b);
		rc = tc->tracer ? RM_OK : RM_ERROR;
		cfg_leave(c);
	}
	cfg_leave(c);
	if (rc) {
		trace_cfg_free(tc);
		return RM_ERROR;
	}
	if (!tc->tracer) {   /* no provider: no tracer, as Envoy without one */
		trace_cfg_free(tc);
		return RM_OK;
	}
	char *scope = xasprintf("http.%s.tracing", stat_prefix);
	tc->stats = stats_scope_new(b->stats, scope, "http.tracing", "envoy_http_conn_manager_prefix",
				    stat_prefix, hcm_tracing_desc, HCM_TRACING_STATS_N);
	free(scope);
	*out = tc;
	return RM_OK;
}

void trace_cfg_free(struct trace_cfg *tc)
{
	if (!tc)
		return;
	for (size_t i = 0; i < tc->ntags; i++) {
		free(tc->tags[i].tag);
		free(tc->tags[i].value);
		free(tc->tags[i].header);
	}
	free(tc->tags);
	tracer_unref(tc->tracer);
	stats_scope_free(tc->stats);
	free(tc);
}

/* ---- request path (worker) ---------------------------------------------- */

/* One pass over a header map for a fixed set of names, instead of one
 * linear hdrs_get() per name: idx[j] is the first field whose name
 * match() maps to j, -1 if none.  The matchers switch on the name length
 * and compare constant-length names (inlined word compares). */
#define NAME_IS(nm, lit) (!memcmp(nm, lit, sizeof(lit) - 1))

static inline __attribute__((always_inline)) void
hdrs_scan(const struct http_headers *h, int nn, int (*match)(const char *, uint32_t), int *idx)
{
	for (int j = 0; j < nn; j++)
		idx[j] = -1;
	for (uint32_t i = 0; i < h->n; i++) {
		const struct hdr_field *f = &h->f[i];
		int j = match(h->arena + f->name_off, f->name_len);
		if (j >= 0 && idx[j] < 0)
			idx[j] = (int)i;
	}
}

static const char *hval(const struct http_headers *h, int i, size_t *n)
{
	if (i < 0)
		return NULL;
	*n = h->f[i].value_len;
	return h->arena + h->f[i].value_off;
}

static bool bp_hit(uint32_t bp, uint64_t h)
{
	return bp >= 10000 || (bp && h % 10000 < bp);
}

static uint64_t rid_hash(const struct http_headers *h, int at)
{
	size_t n = 0;
	const char *v = hval(h, at, &n);
	if (!v)
		return rand_u64();
	uint64_t x = 1469598103934665603ull;   /* FNV-1a */
	for (size_t i = 0; i < n; i++)
		x = (x ^ (uint8_t)v[i]) * 1099511628211ull;
	return x ^ (x >> 29);
}

/* hdrs_set() for a field known present (have) or absent (a plain add). */
static void set_known(struct http_headers *h, bool have, const char *name, size_t nlen,
		      const char *v, size_t vn)
{
	if (have)
		hdrs_set(h, name, v, vn);
	else
		hdrs_add(h, name, nlen, v, vn);
}

static void set_hex(struct http_headers *h, bool have, const char *name, size_t nlen, uint64_t v)
{
	char b[16];
	tc_hex16(v, b);
	set_known(h, have, name, nlen, b, 16);
}

/* The request headers trace_begin reads, found in one pass. */
enum { TB_FORCE, TB_CLIENT, TB_RID, TB_B3_TRACE, TB_B3_SPAN, TB_B3_PARENT, TB_B3_SAMPLED,
       TB_B3_FLAGS, TB_B3, TB_TRACEPARENT, TB_N };
static inline int tb_match(const char *nm, uint32_t n)
{
	switch (n) {
	case 2: return NAME_IS(nm, "b3") ? TB_B3 : -1;
	case 10: return NAME_IS(nm, "x-b3-flags") ? TB_B3_FLAGS : -1;
	case 11: return NAME_IS(nm, "x-b3-spanid") ? TB_B3_SPAN :
			NAME_IS(nm, "traceparent") ? TB_TRACEPARENT : -1;
	case 12: return NAME_IS(nm, "x-request-id") ? TB_RID : NAME_IS(nm, "x-b3-traceid") ? TB_B3_TRACE :
			NAME_IS(nm, "x-b3-sampled") ? TB_B3_SAMPLED : -1;
	case 17: return NAME_IS(nm, "x-client-trace-id") ? TB_CLIENT :
			NAME_IS(nm, "x-b3-parentspanid") ? TB_B3_PARENT : -1;
	case 19: return NAME_IS(nm, "x-envoy-force-trace") ? TB_FORCE : -1;
	default: return -1;
	}
}

void trace_begin(const struct trace_cfg *tc, struct trace_state *ts, struct http_headers *h,
		 bool internal, bool server, unsigned shard)
{
	const struct tracer *t = tc->tracer;
	struct trace_ctx in = { .sampled = -1 };
	bool decided;
	int hx[TB_N];
	hdrs_scan(h, TB_N, tb_match, hx);
	uint64_t rh = rid_hash(h, hx[TB_RID]);
	/* Envoy's tracing decision */
	if (internal && hx[TB_FORCE] >= 0) {
		decided = true;
		stats_inc(tc->stats, shard, service_forced);
	} else if (hx[TB_CLIENT] >= 0 && bp_hit(tc->client_bp, rh)) {
		decided = true;
		stats_inc(tc->stats, shard, client_enabled);
	} else if (bp_hit(tc->random_bp, rh)) {
		decided = true;
		stats_inc(tc->stats, shard, random_sampling);
	} else {
		decided = false;
		stats_inc(tc->stats, shard, not_traceable);
	}
	if (decided && !bp_hit(tc->overall_bp, rh >> 17))
		decided = false;

	/* no trace-context header at all (the common case): nothing to extract */
	bool any_ctx = false;
	for (int i = TB_B3_TRACE; i <= TB_TRACEPARENT; i++)
		any_ctx |= hx[i] >= 0;
	enum tc_format fmt = any_ctx ? tc_extract(h, t->kind == TRACER_OTEL, &in) : TC_NONE;
	ts->active = true;
	ts->server = server;
	ts->sampled = in.sampled >= 0 ? in.sampled == 1 : decided;
	if (fmt != TC_NONE && in.span_id) {
		ts->trace_hi = in.trace_hi;
		ts->trace_lo = in.trace_lo;
		ts->id128 = in.id128;
		if (t->kind == TRACER_ZIPKIN && t->shared_ctx && server) {
			ts->span_id = in.span_id;
			ts->parent_id = in.parent_id;
			ts->shared = true;
		} else {
			ts->span_id = tc_new_id();
			ts->parent_id = in.span_id;
		}
	} else {
		ts->id128 = t->id128;
		ts->trace_hi = t->id128 ? tc_new_id() : 0;
		ts->trace_lo = tc_new_id();
		ts->span_id = tc_new_id();
		ts->parent_id = 0;
	}
	/* the context that goes upstream */
	uint64_t span = ts->span_id, parent = ts->parent_id;
	if (tc->spawn_upstream) {
		ts->up_span_id = tc_new_id();
		parent = span;
		span = ts->up_span_id;
	}
	/* Presence was scanned before any change; hdrs_set/hdrs_del only touch
	 * their own names, so it stays true for the others below. */
	char buf[68];
	bool b3m = t->kind == TRACER_ZIPKIN || hx[TB_B3_TRACE] >= 0;
	if (b3m) {
		size_t n = tc_format_trace_id(ts->trace_hi, ts->trace_lo, ts->id128, buf);
		set_known(h, hx[TB_B3_TRACE] >= 0, "x-b3-traceid", 12, buf, n);
		set_hex(h, hx[TB_B3_SPAN] >= 0, "x-b3-spanid", 11, span);
		if (parent)
			set_hex(h, hx[TB_B3_PARENT] >= 0, "x-b3-parentspanid", 17, parent);
		else if (hx[TB_B3_PARENT] >= 0)
			hdrs_del(h, "x-b3-parentspanid");
		set_known(h, hx[TB_B3_SAMPLED] >= 0, "x-b3-sampled", 12, ts->sampled ? "1" : "0", 1);
	} else {
		if (hx[TB_B3_SAMPLED] >= 0)
			hdrs_del(h, "x-b3-sampled");   /* a stale sampling-only header */
		if (hx[TB_B3_FLAGS] >= 0)
			hdrs_del(h, "x-b3-flags");
	}
	if (hx[TB_B3] >= 0) {
		size_t n = tc_format_b3_single(ts->trace_hi, ts->trace_lo, ts->id128, span,
					       ts->sampled, parent, buf);
		hdrs_set(h, "b3", buf, n);
	}
	if (t->kind == TRACER_OTEL || hx[TB_TRACEPARENT] >= 0) {
		tc_format_traceparent(ts->trace_hi, ts->trace_lo, span, ts->sampled, buf);
		set_known(h, hx[TB_TRACEPARENT] >= 0, "traceparent", 11, buf, 55);
	}
}

/* Append one string to the record (pre, if not 0, then s[0..n)) as a
 * 2-byte little-endian length, the bytes and a NUL; false (nothing added)
 * if it does not fit.  The length spares the main thread a strlen. */
static bool rec_put(struct span_rec *r, char pre, const char *s, size_t n)
{
	size_t len = n + (pre != 0);
	if ((size_t)r->len + len + 3 > SPAN_TXT)
		return false;
	char *d = r->txt + r->len;
	d[0] = (char)(len & 0xff);
	d[1] = (char)(len >> 8);
	d += 2;
	if (pre)
		*d++ = pre;
	al_copy_short(d, s, n);
	d[n] = 0;
	r->len = (uint16_t)(r->len + len + 3);
	return true;
}

static bool rec_str(struct span_rec *r, const char *s, size_t n)
{
	return rec_put(r, 0, s, n);
}

/* Main thread: the string at *p (as rec_put wrote it); *p moves past it. */
static const char *rec_get(const char **p, size_t *n)
{
	const char *s = *p + 2;
	*n = (uint8_t)(*p)[0] | (size_t)(uint8_t)(*p)[1] << 8;
	*p = s + *n + 1;
	return s;
}

/* A standard tag (enum std_tag); safe: v is plain ASCII without '"' or
 * '\\' (a constant or digits). */
static void rec_tag_as(struct span_rec *r, enum std_tag k, const char *v, size_t vn, bool safe)
{
	char key[2] = { TAGK_STD, (char)((k + 1) | (safe ? TAG_SAFE : 0)) };
	uint16_t save = r->len;
	if (!v)
		return;
	if (rec_put(r, 0, key, 2) && rec_put(r, 0, v, vn))
		r->ntags++;
	else
		r->len = save;
}

static void rec_tag(struct span_rec *r, enum std_tag k, const char *v, size_t vn)
{
	rec_tag_as(r, k, v, vn, false);
}

static void rec_tagz(struct span_rec *r, enum std_tag k, const char *v)
{
	if (v)
		rec_tag(r, k, v, strlen(v));
}

/* A custom tag (configured name). */
static void rec_custom(struct span_rec *r, const char *k, const char *v, size_t vn)
{
	uint16_t save = r->len;
	size_t kn = strlen(k);
	if (!v)
		return;
	if (rec_put(r, TAGK_CUSTOM, k, kn) && rec_put(r, 0, v, vn))
		r->ntags++;
	else
		r->len = save;
}

static size_t u64_dec(char *out, uint64_t v)
{
	char t[20];
	size_t i = sizeof(t);
	do {
		t[--i] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	memcpy(out, t + i, sizeof(t) - i);
	return sizeof(t) - i;
}

/* Append s[0..n) to buf (cap bytes) at *len, truncating. */
static void cat(char *buf, size_t cap, size_t *len, const char *s, size_t n)
{
	if (n > cap - *len)
		n = cap - *len;
	memcpy(buf + *len, s, n);
	*len += n;
}

/* The request headers trace_finish reads, found in one pass. */
enum { TF_METHOD, TF_AUTHORITY, TF_PATH, TF_XFP, TF_UA, TF_RID, TF_N };
static inline int tf_match(const char *nm, uint32_t n)
{
	switch (n) {
	case 5: return NAME_IS(nm, ":path") ? TF_PATH : -1;
	case 7: return NAME_IS(nm, ":method") ? TF_METHOD : -1;
	case 10: return NAME_IS(nm, ":authority") ? TF_AUTHORITY : NAME_IS(nm, "user-agent") ? TF_UA : -1;
	case 12: return NAME_IS(nm, "x-request-id") ? TF_RID : -1;
	case 17: return NAME_IS(nm, "x-forwarded-proto") ? TF_XFP : -1;
	default: return -1;
	}
}

static void common_tags(const struct trace_cfg *tc, struct span_rec *r, const struct trace_end *e,
			const char *status, const int *hx)
{
	const struct tracer *t = tc->tracer;
	char fl[128];
	size_t n = 0;
	const char *v;
	if ((v = hval(e->req, hx[TF_METHOD], &n)))
		rec_tag(r, TAG_METHOD, v, n);
	/* http.url: scheme://authority + path (truncated to max_path_tag_length) */
	{
		char url[SPAN_TXT / 2];
		size_t sn = 0, an = 0, pn = 0, un = 0;
		const char *sc = hval(e->req, hx[TF_XFP], &sn);
		const char *au = hval(e->req, hx[TF_AUTHORITY], &an), *pa = hval(e->req, hx[TF_PATH], &pn);
		if (!sc)
			sc = "http", sn = 4;
		if (pn > tc->max_path)
			pn = tc->max_path;
		cat(url, sizeof(url), &un, sc, sn);
		cat(url, sizeof(url), &un, "://", 3);
		cat(url, sizeof(url), &un, au ? au : "", au ? an : 0);
		cat(url, sizeof(url), &un, pa ? pa : "", pa ? pn : 0);
		rec_tag(r, TAG_URL, url, un);
	}
	if (e->protocol)
		rec_tag_as(r, TAG_PROTOCOL, e->protocol, strlen(e->protocol), true);
	if ((v = hval(e->req, hx[TF_UA], &n)))
		rec_tag(r, TAG_UA, v, n);
	if ((v = hval(e->req, hx[TF_RID], &n)))
		rec_tag(r, TAG_RID, v, n);
	rec_tag_as(r, TAG_STATUS, status, strlen(status), true);   /* "" without a response */
	rec_tagz(r, TAG_CLUSTER, e->up_cluster);
	rec_tagz(r, TAG_ADDR, e->up_host);
	rec_tagz(r, TAG_NODE, t->node_id);
	rec_tag_as(r, TAG_COMPONENT, "proxy", 5, true);
	rec_tag_as(r, TAG_FLAGS, fl, al_flags_string(e->rflags, false, fl, sizeof(fl)), true);
	for (size_t i = 0; i < tc->ntags; i++) {
		const struct trace_tag *tg = &tc->tags[i];
		if (tg->header && (v = hdrs_get(e->req, tg->header, &n)))
			rec_custom(r, tg->tag, v, n);
		else if (tg->value)
			rec_custom(r, tg->tag, tg->value, strlen(tg->value));
	}
	if (r->error)
		rec_tag_as(r, TAG_ERROR, "true", 4, true);
}

static struct span_rec *ring_slot(struct span_ring *rg, unsigned shard, struct stats_scope *st)
{
	uint32_t head = atomic_load_explicit(&rg->head, memory_order_relaxed);
	uint32_t tail = atomic_load_explicit(&rg->tail, memory_order_acquire);
	if (head - tail >= TRACER_RING_SLOTS) {
		stats_inc(st, shard, spans_dropped);
		return NULL;
	}
	return &rg->slots[head % TRACER_RING_SLOTS];
}

static void tracer_kick(void *arg)
{
	(void)arg;
	tracer_flush_all(false);
}

static void ring_push(struct span_ring *rg)
{
	uint32_t head = atomic_load_explicit(&rg->head, memory_order_relaxed) + 1;
	atomic_store_explicit(&rg->head, head, memory_order_release);
	uint32_t used = head - atomic_load_explicit(&rg->tail, memory_order_relaxed);
	if (used == TRACER_RING_SLOTS / 4 && current_worker && g_server.base)
		main_post(tracer_kick, NULL);   /* once per quarter ring, not per span */
}

void trace_finish(const struct trace_cfg *tc, const struct trace_state *ts,
		  const struct trace_end *e, unsigned worker_id, unsigned shard)
{
	struct tracer *t = tc->tracer;
	if (!ts->active || !ts->sampled)
		return;
	if (worker_id >= t->nrings)
		worker_id = 0;
	struct span_ring *rg = &t->rings[worker_id];
	struct timespec tsp;
	clock_gettime(CLOCK_REALTIME, &tsp);
	uint64_t now = now_ns(), wall_us = (uint64_t)tsp.tv_sec * 1000000u + (uint64_t)tsp.tv_nsec / 1000;
	uint64_t dur_us = (now - e->start_ns) / 1000;
	char status[24] = "";
	if (e->status > 0)
		status[u64_dec(status, (uint64_t)e->status)] = 0;
	bool error = e->status >= 500 || !e->status;

	struct span_rec *r = ring_slot(rg, shard, t->stats);
	if (!r)
		return;
	int hx[TF_N];
	hdrs_scan(e->req, TF_N, tf_match, hx);
	r->trace_hi = ts->trace_hi;
	r->trace_lo = ts->trace_lo;
	r->id = ts->span_id;
	r->parent = ts->parent_id;
	r->start_us = wall_us - dur_us;
	r->dur_us = dur_us ? dur_us : 1;
	r->server = ts->server;
	r->shared = ts->shared;
	r->id128 = ts->id128;
	r->error = error;
	r->ntags = r->len = 0;
	{
		/* name: authority + path without the query (Envoy's default
		 * operation when the route has no decorator) */
		size_t an = 0, pn = 0;
		const char *au = hval(e->req, hx[TF_AUTHORITY], &an), *pa = hval(e->req, hx[TF_PATH], &pn);
		const char *q = pa ? memchr(pa, '?', pn) : NULL;
		char nm[256];
		size_t nn = 0;
		if (q)
			pn = (size_t)(q - pa);
		cat(nm, sizeof(nm), &nn, au ? au : "", au ? MIN(an, 128) : 0);
		cat(nm, sizeof(nm), &nn, pa ? pa : "", pa ? MIN(pn, 120) : 0);
		rec_str(r, nm, nn);
	}
	common_tags(tc, r, e, status, hx);
	ring_push(rg);

	if (tc->spawn_upstream && ts->up_start_ns) {
		if (!(r = ring_slot(rg, shard, t->stats)))
			return;
		uint64_t up_us = (now - ts->up_start_ns) / 1000;
		r->trace_hi = ts->trace_hi;
		r->trace_lo = ts->trace_lo;
		r->id = ts->up_span_id;
		r->parent = ts->span_id;
		r->start_us = wall_us - up_us;
		r->dur_us = up_us ? up_us : 1;
		r->server = false;
		r->shared = false;
		r->id128 = ts->id128;
		r->error = error;
		r->ntags = r->len = 0;
		char nm[160];
		int n = snprintf(nm, sizeof(nm), "router %s egress", e->up_cluster ? e->up_cluster : "-");
		rec_str(r, nm, n > 0 ? MIN((size_t)n, sizeof(nm) - 1) : 0);
		common_tags(tc, r, e, status, hx);
		ring_push(rg);
	}
}

/* ---- rendering (main thread) -------------------------------------------- */

/* A span is rendered straight into the report's evbuffer (space reserved
 * for the worst case first, so the writers below need no bounds checks):
 * no printf, no evbuffer chain per field, no staging copy.  The writers
 * take and return a local cursor, so the compiler keeps it in a register. */

/* Upper bound of a rendered span: escaping grows a byte at most 6x
 * (\u00XX); every tag adds at most 64 bytes of keys and punctuation; the
 * ids, times and fixed keys fit in 512. */
static size_t span_bound(const struct span_rec *r, size_t svc_len)
{
	return 512 + 6 * (size_t)r->len + 64 * (size_t)r->ntags + 6 * svc_len;
}

#define W_LIT(o, lit) (memcpy(o, lit, sizeof(lit) - 1), (o) += sizeof(lit) - 1)

static inline char *w_mem(char *o, const char *s, size_t n)
{
	al_copy_short(o, s, n);
	return o + n;
}

static char *w_u64(char *o, uint64_t v)
{
	char t[20];
	size_t i = sizeof(t);
	do {
		t[--i] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	return w_mem(o, t + i, sizeof(t) - i);
}

static char *w_hex16(char *o, uint64_t v)
{
	tc_hex16(v, o);
	return o + 16;
}

/* A JSON string of s[0..n); bytes >= 0x80 become '?' (collectors need
 * valid UTF-8 and header values are not guaranteed to be).  Runs of plain
 * bytes are found eight at a time and copied at once. */
static char *w_strn(char *o, const char *s, size_t n)
{
	static const char hx[] = "0123456789abcdef";
	*o++ = '"';
	for (;;) {
		size_t run = al_json_safe_len(s, n, true);
		o = w_mem(o, s, run);
		if (run == n)
			break;
		unsigned char ch = (unsigned char)s[run];
		s += run + 1;
		n -= run + 1;
		if (ch == '"' || ch == '\\') {
			*o++ = '\\';
			*o++ = (char)ch;
		} else if (ch >= 0x7f) {
			*o++ = '?';
		} else {
			char e[6] = { '\\', 'u', '0', '0', hx[ch >> 4], hx[ch & 15] };
			o = w_mem(o, e, 6);
		}
	}
	*o++ = '"';
	return o;
}

static void json_str(struct evbuffer *out, const char *s)
{
	size_t n = strlen(s);
	struct evbuffer_iovec v;
	if (evbuffer_reserve_space(out, 6 * n + 2, &v, 1) < 1)
		die("evbuffer_reserve_space");
	v.iov_len = (size_t)(w_strn(v.iov_base, s, n) - (char *)v.iov_base);
	evbuffer_commit_space(out, &v, 1);
}

static char *render_zipkin(const struct tracer *t, const struct span_rec *r, char *o)
{
	char tid[32];
	size_t tn = tc_format_trace_id(r->trace_hi, r->trace_lo, r->id128, tid);
	const char *p = r->txt;
	W_LIT(o, "{\"traceId\":\"");
	o = w_mem(o, tid, tn);
	W_LIT(o, "\",\"id\":\"");
	o = w_hex16(o, r->id);
	if (r->parent) {
		W_LIT(o, "\",\"parentId\":\"");
		o = w_hex16(o, r->parent);
	}
	if (r->server)
		W_LIT(o, "\",\"kind\":\"SERVER\",\"name\":");
	else
		W_LIT(o, "\",\"kind\":\"CLIENT\",\"name\":");
	size_t nn;
	const char *nm = rec_get(&p, &nn);
	o = w_strn(o, nm, nn);
	W_LIT(o, ",\"timestamp\":");
	o = w_u64(o, r->start_us);
	W_LIT(o, ",\"duration\":");
	o = w_u64(o, r->dur_us);
	W_LIT(o, ",\"localEndpoint\":{\"serviceName\":");
	o = w_strn(o, t->service, strlen(t->service));
	W_LIT(o, "}");
	if (r->shared)
		W_LIT(o, ",\"shared\":true");
	W_LIT(o, ",\"tags\":{");
	for (unsigned i = 0; i < r->ntags; i++) {
		size_t kn, vn;
		const char *k = rec_get(&p, &kn), *v = rec_get(&p, &vn);
		if (i)
			W_LIT(o, ",");
		bool safe = false;
		if (k[0] == TAGK_STD) {
			unsigned id = ((uint8_t)k[1] & ~TAG_SAFE) - 1u;
			safe = (uint8_t)k[1] & TAG_SAFE;
			o = w_mem(o, tag_zipkin[id], tag_zipkin_len[id]);
		} else {
			o = w_strn(o, k + 1, kn - 1);
			W_LIT(o, ":");
		}
		if (safe) {
			W_LIT(o, "\"");
			o = w_mem(o, v, vn);
			W_LIT(o, "\"");
		} else {
			o = w_strn(o, v, vn);
		}
	}
	W_LIT(o, "}}");
	return o;
}

static char *render_otel(const struct span_rec *r, char *o)
{
	char tid[32];
	const char *p = r->txt;
	tc_format_trace_id(r->trace_hi, r->trace_lo, true, tid);
	W_LIT(o, "{\"traceId\":\"");
	o = w_mem(o, tid, 32);
	W_LIT(o, "\",\"spanId\":\"");
	o = w_hex16(o, r->id);
	if (r->parent) {
		W_LIT(o, "\",\"parentSpanId\":\"");
		o = w_hex16(o, r->parent);
	}
	W_LIT(o, "\",\"name\":");
	size_t nn;
	const char *nm = rec_get(&p, &nn);
	o = w_strn(o, nm, nn);
	/* SpanKind: SPAN_KIND_SERVER = 2, SPAN_KIND_CLIENT = 3 */
	if (r->server)
		W_LIT(o, ",\"kind\":2,\"startTimeUnixNano\":\"");
	else
		W_LIT(o, ",\"kind\":3,\"startTimeUnixNano\":\"");
	o = w_u64(o, r->start_us * 1000ull);
	W_LIT(o, "\",\"endTimeUnixNano\":\"");
	o = w_u64(o, (r->start_us + r->dur_us) * 1000ull);
	W_LIT(o, "\",\"attributes\":[");
	for (unsigned i = 0; i < r->ntags; i++) {
		size_t kn, vn;
		const char *k = rec_get(&p, &kn), *v = rec_get(&p, &vn);
		if (i)
			W_LIT(o, ",");
		bool status = false;
		if (k[0] == TAGK_STD) {
			unsigned id = ((uint8_t)k[1] & ~TAG_SAFE) - 1u;
			o = w_mem(o, tag_otel[id], tag_otel_len[id]);
			status = id == TAG_STATUS;
		} else {
			W_LIT(o, "{\"key\":");
			o = w_strn(o, k + 1, kn - 1);
		}
		if (status) {
			W_LIT(o, ",\"value\":{\"intValue\":\"");
			o = w_mem(o, v, vn);   /* digits only */
			W_LIT(o, "\"}}");
		} else {
			W_LIT(o, ",\"value\":{\"stringValue\":");
			o = w_strn(o, v, vn);
			W_LIT(o, "}}");
		}
	}
	/* Status: STATUS_CODE_ERROR = 2 on errors, unset otherwise */
	if (r->error)
		W_LIT(o, "],\"status\":{\"code\":2}}");
	else
		W_LIT(o, "],\"status\":{}}");
	return o;
}

/* Move the spans of every ring into t->pending (rendered). */
static void drain_rings(struct tracer *t)
{
	size_t svc_len = t->kind == TRACER_ZIPKIN ? strlen(t->service) : 0;
	for (unsigned w = 0; w < t->nrings; w++) {
		struct span_ring *rg = &t->rings[w];
		uint32_t tail = atomic_load_explicit(&rg->tail, memory_order_relaxed);
		uint32_t head = atomic_load_explicit(&rg->head, memory_order_acquire);
		for (; tail != head; tail++) {
			const struct span_rec *r = &rg->slots[tail % TRACER_RING_SLOTS];
			if (t->npending >= MAX_PENDING) {
				stats_inc(t->stats, 0, spans_dropped);
				continue;
			}
			struct evbuffer_iovec v;
			if (evbuffer_reserve_space(t->pending, span_bound(r, svc_len), &v, 1) < 1)
				die("evbuffer_reserve_space");
			char *o = v.iov_base;
			if (t->npending)
				*o++ = ',';
			if (t->kind == TRACER_ZIPKIN)
				o = render_zipkin(t, r, o);
			else
				o = render_otel(r, o);
			v.iov_len = (size_t)(o - (char *)v.iov_base);
			evbuffer_commit_space(t->pending, &v, 1);
			t->npending++;
		}
		atomic_store_explicit(&rg->tail, tail, memory_order_release);
	}
}

size_t tracer_render_pending(const struct trace_cfg *tc, struct evbuffer *out)
{
	struct tracer *t = tc->tracer;
	drain_rings(t);
	size_t n = t->npending;
	evbuffer_add_buffer(out, t->pending);
	t->npending = 0;
	return n;
}

/* ---- export (main thread) ------------------------------------------------- */

struct report {
	struct tracer *t;
	unsigned slot;
};

static void report_done(void *arg, enum async_http_result res, int status, struct evbuffer *body)
{
	struct report *rp = arg;
	struct tracer *t = rp->t;
	(void)body;
	t->inflight[rp->slot] = NULL;
	if (res == ASYNC_HTTP_NO_HOST)
		stats_inc(t->stats, 0, reports_skipped_no_cluster);
	else if (res != ASYNC_HTTP_OK)
		stats_inc(t->stats, 0, reports_failed);
	else if (status >= 200 && status < 300)
		stats_inc(t->stats, 0, reports_sent);
	else
		stats_inc(t->stats, 0, reports_dropped);
	if (res != ASYNC_HTTP_OK && res != ASYNC_HTTP_NO_HOST)
		log_debug("tracing: report to cluster %s failed (%d)", t->cluster, (int)res);
	free(rp);
}

static void send_report(struct tracer *t)
{
	unsigned slot = 0;
	while (slot < MAX_INFLIGHT && t->inflight[slot])
		slot++;
	if (slot == MAX_INFLIGHT || !main_base)
		return;   /* busy: the spans wait (bounded by MAX_PENDING) */
	struct evbuffer *body = evbuffer_new();
	if (t->kind == TRACER_ZIPKIN) {
		ADD_LIT(body, "[");
		evbuffer_add_buffer(body, t->pending);
		ADD_LIT(body, "]");
	} else {
		ADD_LIT(body, "{\"resourceSpans\":[{\"resource\":{\"attributes\":[{\"key\":"
			"\"service.name\",\"value\":{\"stringValue\":");
		json_str(body, t->service);
		ADD_LIT(body, "}}]},\"scopeSpans\":[{\"scope\":{\"name\":\"envoy\"},\"spans\":[");
		evbuffer_add_buffer(body, t->pending);
		ADD_LIT(body, "]}]}]}");
	}
	stats_add(t->stats, 0, spans_sent, (int64_t)t->npending);
	t->npending = 0;
	struct report *rp = xcalloc(1, sizeof(*rp));
	rp->t = t;
	rp->slot = slot;
	struct async_http_req rq = {
		.cluster = t->cluster, .method = "POST", .path = t->path, .host = t->host,
		.content_type = "application/json", .extra_headers = t->headers,
		.timeout_ms = t->timeout_ms,
	};
	t->inflight[slot] = async_http_send(main_base, &rq, body, report_done, rp);
	evbuffer_free(body);
}

void tracer_flush_all(bool force)
{
	uint64_t now = now_ms();
	for (struct tracer *t = tracers; t; t = t->next) {
		bool timer = now >= t->next_timer_ms;
		drain_rings(t);
		if (timer) {
			stats_inc(t->stats, 0, timer_flushed);
			t->next_timer_ms = now + TRACER_FLUSH_MS;
		}
		if (t->npending && (force || timer || t->npending >= TRACER_BATCH))
			send_report(t);
	}
}

static void tick_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
	tracer_flush_all(false);
}

void tracer_start(struct event_base *base)
{
	main_base = base;
	if (!tracers || tick_ev)
		return;
	tick_ev = event_new(base, -1, EV_PERSIST, tick_cb, NULL);
	struct timeval tv = { 0, 100 * 1000 };
	event_add(tick_ev, &tv);
}

static void abort_inflight(struct tracer *t)
{
	for (unsigned i = 0; i < MAX_INFLIGHT; i++) {
		if (!t->inflight[i])
			continue;
		/* the callback will not run: free its argument here */
		struct async_http *a = t->inflight[i];
		t->inflight[i] = NULL;
		free(async_http_cancel(a));
	}
}

void tracer_stop(void)
{
	for (struct tracer *t = tracers; t; t = t->next)
		abort_inflight(t);
	if (tick_ev)
		event_free(tick_ev);
	tick_ev = NULL;
	main_base = NULL;
}

static void tracer_unref(struct tracer *t)
{
	if (!t || --t->refcnt > 0)
		return;
	abort_inflight(t);
	for (struct tracer **pp = &tracers; *pp; pp = &(*pp)->next) {
		if (*pp == t) {
			*pp = t->next;
			break;
		}
	}
	for (unsigned i = 0; i < t->nrings; i++)
		free(t->rings[i].slots);
	free(t->rings);
	evbuffer_free(t->pending);
	if (!--kind_stats[t->kind].refs) {
		stats_scope_free(kind_stats[t->kind].sc);
		kind_stats[t->kind].sc = NULL;
	}
	if (!tracers && tick_ev) {
		event_free(tick_ev);
		tick_ev = NULL;
	}
	tracer_free_fields(t);
}
