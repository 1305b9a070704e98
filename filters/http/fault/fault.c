/* fault.c - envoy.filters.http.fault (fault.h): delays and aborts.
 *
 * A delay holds the request headers (FILTER_STOP from decode_headers; the
 * body stays unread in the socket) on a timer of the worker's event base and
 * resumes the chain with http_stream_continue_decoding() when it fires.  An
 * abort is a local reply.  Per-stream contexts are recycled per thread with
 * their timer, so a request allocates nothing here. */
#include <event2/event.h>
#include <event2/buffer.h>
#include "fault.h"
#include "proxy/log.h"
#include "proxy/worker.h"
#include "proxy/snapshot.h"
#include "proxy/http/stream.h"
#include "proxy/router/route.h"

#define ABORT_BODY "fault filter abort"
#define ABORT_DETAILS "fault_filter_abort"

#define H_DELAY "x-envoy-fault-delay-request"
#define H_DELAY_PCT "x-envoy-fault-delay-request-percentage"
#define H_ABORT "x-envoy-fault-abort-request"
#define H_ABORT_GRPC "x-envoy-fault-abort-grpc-request"
#define H_ABORT_PCT "x-envoy-fault-abort-request-percentage"
#define H_RL "x-envoy-fault-throughput-response"
#define H_RL_PCT "x-envoy-fault-throughput-response-percentage"

#define RL_TICK_MS 50                      /* pacing slice */
#define RL_TICKS_PER_S (1000 / RL_TICK_MS)
#define RL_HOLD_BYTES (64 * 1024)          /* held body that stops the source */

static const struct stat_desc fault_stat_desc[] = { FAULT_STATS(STATS_DESC) };

/* ---- request-side helpers (pure) ------------------------------------------------ */

bool fault_header_u64(const struct http_headers *h, const char *name, uint64_t max, uint64_t *out)
{
	size_t n;
	const char *v = hdrs_get(h, name, &n);
	uint64_t x = 0;
	size_t i = 0;

	if (!v)
		return false;
	while (i < n && (v[i] == ' ' || v[i] == '\t'))
		i++;
	if (i == n || v[i] < '0' || v[i] > '9')
		return false;
	for (; i < n && v[i] >= '0' && v[i] <= '9'; i++) {
		if (x > (max - (uint64_t)(v[i] - '0')) / 10)
			return false;
		x = x * 10 + (uint64_t)(v[i] - '0');
	}
	while (i < n && (v[i] == ' ' || v[i] == '\t'))
		i++;
	if (i != n)
		return false;
	*out = x;
	return true;
}

struct fault_pct fault_header_pct(struct fault_pct configured, const struct http_headers *h,
				  const char *name)
{
	uint64_t v;
	if (fault_header_u64(h, name, UINT32_MAX, &v) && v < configured.num)
		configured.num = (uint32_t)v;
	return configured;
}

int fault_abort_status(const struct fault_cfg *cfg, const struct http_headers *h, uint64_t rnd,
		       int *grpc)
{
	struct fault_pct p = cfg->abort_pct;
	uint64_t v;

	*grpc = -1;
	if (cfg->abort == FAULT_ABORT_NONE)
		return 0;
	if (cfg->abort == FAULT_ABORT_HEADER)
		p = fault_header_pct(p, h, H_ABORT_PCT);
	if (!fault_pct_hit(p, rnd))
		return 0;
	switch (cfg->abort) {
	case FAULT_ABORT_HTTP:
		return (int)cfg->abort_http;
	case FAULT_ABORT_GRPC:
		*grpc = (int)cfg->abort_grpc;
		return 200;
	case FAULT_ABORT_HEADER:
		/* an HTTP status header wins over a gRPC one (Envoy) */
		if (hdrs_get(h, H_ABORT, NULL)) {
			if (fault_header_u64(h, H_ABORT, 1000, &v) && v >= 200 && v < 600)
				return (int)v;
			return 0;
		}
		if (fault_header_u64(h, H_ABORT_GRPC, UINT32_MAX, &v)) {
			*grpc = (int)MIN(v, (uint64_t)INT32_MAX);
			return 200;
		}
		return 0;
	default:
		return 0;
	}
}

uint64_t fault_delay_ms(const struct fault_cfg *cfg, const struct http_headers *h, uint64_t rnd)
{
	uint64_t ms;

	switch (cfg->delay) {
	case FAULT_DELAY_FIXED:
		return fault_pct_hit(cfg->delay_pct, rnd) ? cfg->delay_ms : 0;
	case FAULT_DELAY_HEADER:
		if (!fault_pct_hit(fault_header_pct(cfg->delay_pct, h, H_DELAY_PCT), rnd))
			return 0;
		/* bounded so the timeval cannot overflow; ~31 years */
		return fault_header_u64(h, H_DELAY, (uint64_t)1 << 40, &ms) ? ms : 0;
	default:
		return 0;
	}
}

uint64_t fault_response_kbps(const struct fault_cfg *cfg, const struct http_headers *h,
			     uint64_t rnd)
{
	uint64_t kbps;

	switch (cfg->rl) {
	case FAULT_RL_FIXED:
		return fault_pct_hit(cfg->rl_pct, rnd) ? cfg->rl_kbps : 0;
	case FAULT_RL_HEADER:
		if (!fault_pct_hit(fault_header_pct(cfg->rl_pct, h, H_RL_PCT), rnd))
			return 0;
		/* bounded so bytes per slice cannot overflow */
		return fault_header_u64(h, H_RL, (uint64_t)1 << 40, &kbps) ? kbps : 0;
	default:
		return 0;
	}
}

/* ---- config ---------------------------------------------------------------------- */

static void fault_free_config(void *v)
{
	struct fault_cfg *cfg = v;
	if (!cfg)
		return;
	xfree(cfg->upstream_cluster);
	header_match_list_free(cfg->headers);
	stats_scope_free(cfg->stats);
	xfree(cfg->shared);
	xfree(cfg);
}

static const char *const pct_fields[] = { "numerator", "denominator", NULL };
static const char *const pct_denoms[] = { "HUNDRED", "TEN_THOUSAND", "MILLION" };
static const uint32_t pct_denom_val[] = { 100, 10000, 1000000 };

/* Member "percentage" of obj (FractionalPercent).  Absent: 0% (proto3
 * default, as Envoy: a fault without a percentage never fires). */
static int parse_pct(struct cfg_ctx *c, const json_t *obj, struct fault_pct *p)
{
	int d = 0;
	const json_t *v;

	p->num = 0;
	p->denom = 100;
	if (!(v = cfg_enter(c, obj, "percentage")))
		return c->failed ? RM_ERROR : RM_OK;
	if (cfg_expect_object(c, v) || cfg_check_fields(c, v, pct_fields) ||
	    cfg_u32(c, v, "numerator", &p->num) ||
	    cfg_enum(c, v, "denominator", pct_denoms, ARRAY_SIZE(pct_denoms), &d))
		return RM_ERROR;
	p->denom = pct_denom_val[d];
	cfg_leave(c);
	return RM_OK;
}

/* An empty message (HeaderDelay / HeaderAbort). */
static int parse_empty(struct cfg_ctx *c, const json_t *obj, const char *name)
{
	static const char *const none[] = { NULL };
	const json_t *v = cfg_enter(c, obj, name);
	if (!v)
		return RM_ERROR;
	if (cfg_expect_object(c, v) || cfg_check_fields(c, v, none))
		return RM_ERROR;
	cfg_leave(c);
	return RM_OK;
}

/* Exactly one of names[] set in obj: its index, or -1 after cfg_fail. */
static int one_of(struct cfg_ctx *c, const json_t *obj, const char *const *names, const char *what)
{
	int which = -1;
	for (int i = 0; names[i]; i++) {
		if (!cfg_get(obj, names[i]))
			continue;
		if (which >= 0) {
			cfg_fail(c, "only one of %s may be set ('%s' and '%s' are both set)", what,
				 names[which], names[i]);
			return -1;
		}
		which = i;
	}
	if (which < 0)
		cfg_fail(c, "one of %s is required", what);
	return which;
}

static int parse_delay(struct cfg_ctx *c, const json_t *d, struct fault_cfg *cfg)
{
	static const char *const f[] = { "fixed_delay", "header_delay", "percentage", NULL };
	static const char *const spec[] = { "fixed_delay", "header_delay", NULL };
	int which;

	if (cfg_expect_object(c, d) || cfg_check_fields(c, d, f))
		return RM_ERROR;
	if ((which = one_of(c, d, spec, "'fixed_delay' or 'header_delay'")) < 0)
		return RM_ERROR;
	if (which == 0) {
		cfg->delay = FAULT_DELAY_FIXED;
		if (cfg_duration_ms(c, d, "fixed_delay", &cfg->delay_ms))
			return RM_ERROR;
		if (!cfg->delay_ms) {
			return cfg_fail_field(c, d, "fixed_delay", "must be greater than 0s");
		}
	} else {
		cfg->delay = FAULT_DELAY_HEADER;
		if (parse_empty(c, d, "header_delay"))
			return RM_ERROR;
	}
	return parse_pct(c, d, &cfg->delay_pct);
}

static int parse_abort(struct cfg_ctx *c, const json_t *a, struct fault_cfg *cfg)
{
	static const char *const f[] = { "http_status", "grpc_status", "header_abort", "percentage", NULL };
	static const char *const spec[] = { "http_status", "grpc_status", "header_abort", NULL };
	int which;

	if (cfg_expect_object(c, a) || cfg_check_fields(c, a, f))
		return RM_ERROR;
	if ((which = one_of(c, a, spec, "'http_status', 'grpc_status' or 'header_abort'")) < 0)
		return RM_ERROR;
	switch (which) {
	case 0:
		cfg->abort = FAULT_ABORT_HTTP;
		if (cfg_u32(c, a, "http_status", &cfg->abort_http))
			return RM_ERROR;
		if (cfg->abort_http < 200 || cfg->abort_http >= 600) {
			return cfg_fail_field(c, a, "http_status", "must be in 200..599");
		}
		break;
	case 1:
		cfg->abort = FAULT_ABORT_GRPC;
		if (cfg_u32(c, a, "grpc_status", &cfg->abort_grpc))
			return RM_ERROR;
		break;
	default:
		cfg->abort = FAULT_ABORT_HEADER;
		if (parse_empty(c, a, "header_abort"))
			return RM_ERROR;
		break;
	}
	return parse_pct(c, a, &cfg->abort_pct);
}

static const char *const fault_fields[] = {
	"delay", "abort", "upstream_cluster", "headers", "downstream_nodes", "max_active_faults",
	"response_rate_limit", "delay_percent_runtime", "abort_percent_runtime",
	"delay_duration_runtime", "abort_http_status_runtime", "max_active_faults_runtime",
	"response_rate_limit_percent_runtime", "abort_grpc_status_runtime",
	"disable_downstream_cluster_stats", NULL,
};
/* Runtime keys: accepted and ignored (there is no runtime layer yet). */
static const char *const runtime_fields[] = {
	"delay_percent_runtime", "abort_percent_runtime", "delay_duration_runtime",
	"abort_http_status_runtime", "max_active_faults_runtime",
	"response_rate_limit_percent_runtime", "abort_grpc_status_runtime", NULL,
};
static const char *const unsupported_fields[] = { "downstream_nodes", NULL };

/* FaultRateLimit {fixed_limit {limit_kbps} | header_limit {}, percentage}. */
static int parse_rate_limit(struct cfg_ctx *c, const json_t *r, struct fault_cfg *cfg)
{
	static const char *const f[] = { "fixed_limit", "header_limit", "percentage", NULL };
	static const char *const spec[] = { "fixed_limit", "header_limit", NULL };
	static const char *const ff[] = { "limit_kbps", NULL };
	const json_t *fl;
	int which;

	if (cfg_expect_object(c, r) || cfg_check_fields(c, r, f))
		return RM_ERROR;
	if ((which = one_of(c, r, spec, "'fixed_limit' or 'header_limit'")) < 0)
		return RM_ERROR;
	if (which == 0) {
		cfg->rl = FAULT_RL_FIXED;
		if (!(fl = cfg_enter(c, r, "fixed_limit")) || cfg_expect_object(c, fl) ||
		    cfg_check_fields(c, fl, ff))
			return RM_ERROR;
		if (!cfg_get(fl, "limit_kbps"))
			return (cfg_enter_req(c, fl, "limit_kbps"), RM_ERROR);
		if (cfg_u64(c, fl, "limit_kbps", &cfg->rl_kbps))
			return RM_ERROR;
		if (!cfg->rl_kbps || cfg->rl_kbps > ((uint64_t)1 << 40))
			return cfg_fail_field(c, fl, "limit_kbps", "must be in 1..2^40");
		cfg_leave(c);
	} else {
		cfg->rl = FAULT_RL_HEADER;
		if (parse_empty(c, r, "header_limit"))
			return RM_ERROR;
	}
	return parse_pct(c, r, &cfg->rl_pct);
}

/* Enter member name of obj and run fn on it; absent is fine. */
static int member(struct cfg_ctx *c, const json_t *obj, const char *name,
		  int (*fn)(struct cfg_ctx *, const json_t *, struct fault_cfg *), struct fault_cfg *cfg)
{
	const json_t *v = cfg_enter(c, obj, name);
	if (!v)
		return c->failed ? RM_ERROR : RM_OK;
	if (fn(c, v, cfg))
		return RM_ERROR;
	cfg_leave(c);
	return RM_OK;
}

/* The HTTPFault settings (everything but stats and the shared counter). */
static int parse_settings(struct cfg_ctx *c, const json_t *j, struct fault_cfg *cfg)
{
	const char *uc = NULL, *ignored;
	bool no_ds_stats = false;

	if (cfg_expect_object(c, j) || cfg_check_fields(c, j, fault_fields))
		return RM_ERROR;
	if (cfg_reject_fields(c, j, unsupported_fields, "not supported yet"))
		return RM_ERROR;
	for (size_t i = 0; runtime_fields[i]; i++)
		if (cfg_string(c, j, runtime_fields[i], &ignored))
			return RM_ERROR;
	if (member(c, j, "delay", parse_delay, cfg) || member(c, j, "abort", parse_abort, cfg) ||
	    member(c, j, "response_rate_limit", parse_rate_limit, cfg) ||
	    cfg_string(c, j, "upstream_cluster", &uc) ||
	    cfg_bool(c, j, "disable_downstream_cluster_stats", &no_ds_stats) ||
	    header_match_list_compile(c, j, "headers", &cfg->headers))
		return RM_ERROR;
	if (cfg_get(j, "max_active_faults")) {
		cfg->has_max_active = true;
		if (cfg_u32(c, j, "max_active_faults", &cfg->max_active))
			return RM_ERROR;
	}
	if (uc && *uc)
		cfg->upstream_cluster = xstrdup(uc);
	return RM_OK;
}

/* A per-route HTTPFault replaces the filter-level settings for the route;
 * stats and the max_active_faults count stay the filter's (Envoy's
 * FaultSettings vs FaultFilterConfig). */
static void *fault_parse_per_route(struct cfg_ctx *c, const json_t *j, struct build_ctx *b)
{
	struct fault_cfg *cfg = xcalloc(1, sizeof(*cfg));
	(void)b;
	if (parse_settings(c, j, cfg)) {
		fault_free_config(cfg);
		return NULL;
	}
	return cfg;
}

static void *fault_parse_config(struct cfg_ctx *c, const json_t *j, struct build_ctx *b)
{
	struct fault_cfg *cfg = xcalloc(1, sizeof(*cfg));
	json_t *empty = NULL;

	if (!j)   /* no typed_config: an empty HTTPFault, which injects nothing */
		j = empty = json_object();
	if (parse_settings(c, j, cfg))
		goto error;
	cfg->shared = xcalloc(1, sizeof(*cfg->shared));
	{
		const char *prefix = b->http_stat_prefix ? b->http_stat_prefix : "";
		char *name = xasprintf("http.%s.fault", prefix);
		cfg->stats = stats_scope_new(b->stats, name, "http.fault",
					     "envoy_http_conn_manager_prefix", prefix, fault_stat_desc,
					     FAULT_STATS_N);
		free(name);
	}
	json_decref(empty);
	return cfg;
error:
	json_decref(empty);
	fault_free_config(cfg);
	return NULL;
}

/* ---- per-stream filter --------------------------------------------------------------- */

struct fault_filter {
	struct http_stream *s;           /* not owned */
	const struct fault_cfg *cfg;     /* filter level: stats, shared count */
	const struct fault_cfg *set;     /* settings: the route's, else cfg */
	bool shared_counted;             /* counted in cfg->shared->active */
	struct event *timer;             /* owned: the delay; kept while cached */
	struct event_base *base;         /* the timer's base */
	bool active;                     /* counted in active_faults */
	struct fault_filter *next_free;  /* per-thread free list link */
	/* response_rate_limit: the body is held in rl_buf and sent rl_tick
	 * bytes per RL_TICK_MS by rl_timer */
	uint64_t rl_tick;                /* bytes per slice; 0 = not limited */
	struct evbuffer *rl_buf;         /* owned, kept while cached: held body */
	struct evbuffer *rl_out;         /* owned, kept while cached: one slice */
	struct event *rl_timer;          /* owned, kept while cached */
	uint64_t rl_next_ms;             /* earliest time of the next slice */
	bool rl_end;                     /* end_stream is held too */
	bool rl_has_trailers;            /* rl_trailers are held */
	bool rl_wait_output;             /* paused: the downstream socket is full */
	bool rl_hold;                    /* asked the source to stop */
	struct http_headers rl_trailers; /* owned while rl_has_trailers */
};

#define FAULT_CACHE_MAX 256
static __thread struct fault_filter *fault_cache;
static __thread unsigned fault_cache_n;

static unsigned shard(const struct fault_filter *f)
{
	return http_stream_worker(f->s)->shard;
}

/* Envoy's tryIncActiveFaults: a stream counts once; with max_active_faults
 * the global count is raised with a compare-and-swap so it never passes the
 * limit (Envoy's check is fuzzy; this one is exact). */
static bool try_activate(struct fault_filter *f)
{
	const struct fault_cfg *cfg = f->cfg;
	if (f->active)
		return true;
	if (f->set->has_max_active) {
		uint64_t cur = __atomic_load_n(&cfg->shared->active, __ATOMIC_RELAXED);
		do {
			if (cur >= f->set->max_active) {
				stats_inc(cfg->stats, shard(f), faults_overflow);
				return false;
			}
		} while (!__atomic_compare_exchange_n(&cfg->shared->active, &cur, cur + 1, true,
						      __ATOMIC_RELAXED, __ATOMIC_RELAXED));
		f->shared_counted = true;
	}
	stats_inc(cfg->stats, shard(f), active_faults);
	f->active = true;
	return true;
}

static void deactivate(struct fault_filter *f)
{
	if (!f->active)
		return;
	f->active = false;
	stats_dec(f->cfg->stats, shard(f), active_faults);
	if (f->shared_counted)
		__atomic_fetch_sub(&f->cfg->shared->active, 1, __ATOMIC_RELAXED);
	f->shared_counted = false;
}

static void do_abort(struct fault_filter *f, int status, int grpc)
{
	stats_inc(f->cfg->stats, shard(f), aborts_injected);
	http_stream_set_response_flag(f->s, RF_FI);
	/* a gRPC request gets a trailers-only reply with grpc (or the status
	 * mapped from the HTTP one) */
	http_stream_send_local_reply_grpc(f->s, status, grpc, ABORT_BODY, ABORT_DETAILS);
}

static void delay_done(evutil_socket_t fd, short what, void *arg)
{
	struct fault_filter *f = arg;
	int grpc, status;
	(void)fd;
	(void)what;
	if (http_stream_response_started(f->s)) {
		/* answered meanwhile (e.g. the HCM's request timeout); the stream
		 * is about to be destroyed */
		deactivate(f);
		return;
	}
	status = fault_abort_status(f->set, http_stream_request(f->s), rand_u64(), &grpc);
	if (status) {
		do_abort(f, status, grpc);
		return;
	}
	if (!f->rl_tick)
		deactivate(f);   /* the delay is over and nothing else is injected */
	http_stream_continue_decoding(f->s);
}

static void *fault_create(struct http_stream *s, const void *vcfg)
{
	struct event_base *base = http_stream_worker(s)->base;
	struct fault_filter *f = fault_cache;

	if (f) {
		fault_cache = f->next_free;
		fault_cache_n--;
	} else {
		f = xcalloc(1, sizeof(*f));
	}
	if (f->timer && f->base != base) {   /* cannot happen (per-thread cache); be safe */
		event_free(f->timer);
		f->timer = NULL;
	}
	f->s = s;
	f->cfg = vcfg;
	f->set = http_stream_per_route_config(s, vcfg);
	if (!f->set)
		f->set = vcfg;
	f->active = false;
	f->shared_counted = false;
	f->next_free = NULL;
	f->rl_tick = 0;
	f->rl_next_ms = 0;
	f->rl_end = f->rl_has_trailers = f->rl_wait_output = f->rl_hold = false;
	return f;
}

static void fault_release(struct fault_filter *f)
{
	if (f->timer)
		event_free(f->timer);
	if (f->rl_timer)
		event_free(f->rl_timer);
	if (f->rl_buf)
		evbuffer_free(f->rl_buf);
	if (f->rl_out)
		evbuffer_free(f->rl_out);
	xfree(f);
}

static void fault_destroy(void *ctx)
{
	struct fault_filter *f = ctx;
	if (!f)
		return;
	if (f->timer)
		event_del(f->timer);
	if (f->rl_timer)
		event_del(f->rl_timer);
	if (f->rl_buf)
		evbuffer_drain(f->rl_buf, evbuffer_get_length(f->rl_buf));
	if (f->rl_has_trailers)
		hdrs_free(&f->rl_trailers);
	f->rl_has_trailers = false;
	f->rl_tick = 0;
	deactivate(f);
	f->s = NULL;
	f->cfg = NULL;
	f->set = NULL;
	if (fault_cache_n >= FAULT_CACHE_MAX) {
		fault_release(f);
		return;
	}
	f->next_free = fault_cache;
	fault_cache = f;
	fault_cache_n++;
}

static void fault_thread_exit(void)
{
	while (fault_cache) {
		struct fault_filter *f = fault_cache;
		fault_cache = f->next_free;
		fault_release(f);
	}
	fault_cache_n = 0;
}

/* upstream_cluster: the request's route must send it to that one cluster
 * (weighted routes never match). */
static bool cluster_matches(const struct fault_cfg *cfg, struct http_stream *s,
			    const struct http_headers *h)
{
	const struct virtual_host *vh;
	const struct route_entry *re;
	if (!cfg->upstream_cluster)
		return true;
	(void)h;
	re = http_stream_route(s, &vh);
	return re && re->kind == ROUTE_ACTION_ROUTE && re->cluster &&
	       !strcmp(re->cluster, cfg->upstream_cluster);
}

static enum filter_status fault_decode_headers(void *ctx, struct http_stream *s,
					       struct http_headers *h, bool end_stream)
{
	struct fault_filter *f = ctx;
	const struct fault_cfg *cfg = f->set;
	uint64_t ms;
	int status, grpc;
	(void)end_stream;

	if (cfg->delay == FAULT_DELAY_NONE && cfg->abort == FAULT_ABORT_NONE &&
	    cfg->rl == FAULT_RL_NONE)
		return FILTER_CONTINUE;
	if (!cluster_matches(cfg, s, h) || !header_match_list_match(cfg->headers, h))
		return FILTER_CONTINUE;
	/* Envoy's maybeSetupResponseRateLimit comes first */
	uint64_t kbps = http_stream_is_upgrade(s) ? 0 : fault_response_kbps(cfg, h, rand_u64());
	if (kbps && try_activate(f)) {
		stats_inc(f->cfg->stats, shard(f), response_rl_injected);
		f->rl_tick = MAX(kbps * 1024 / RL_TICKS_PER_S, 1);
	}
	if ((ms = fault_delay_ms(cfg, h, rand_u64())) && try_activate(f)) {
		struct worker *w = http_stream_worker(s);
		if (!f->timer) {
			f->timer = evtimer_new(w->base, delay_done, f);
			if (!f->timer)
				die("evtimer_new");
			f->base = w->base;
		}
		stats_inc(f->cfg->stats, shard(f), delays_injected);
		http_stream_set_response_flag(s, RF_DI);
		if (cfg->delay == FAULT_DELAY_FIXED) {
			worker_timer_add(w, f->timer, ms);   /* one shared duration */
		} else {
			/* client-chosen durations must not take common-timeout slots */
			struct timeval tv = { (time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000 };
			evtimer_add(f->timer, &tv);
		}
		return FILTER_STOP;
	}
	if ((status = fault_abort_status(cfg, h, rand_u64(), &grpc)) && try_activate(f)) {
		do_abort(f, status, grpc);
		return FILTER_STOP;
	}
	return FILTER_CONTINUE;
}

/* ---- response pacing ------------------------------------------------------------- */

static void rl_schedule(struct fault_filter *f)
{
	uint64_t now = now_ms();
	struct timeval tv = { 0, 0 };
	if (f->rl_next_ms > now) {
		uint64_t ms = f->rl_next_ms - now;
		tv.tv_sec = (time_t)(ms / 1000);
		tv.tv_usec = (suseconds_t)(ms % 1000) * 1000;
	}
	if (!evtimer_pending(f->rl_timer, NULL))
		evtimer_add(f->rl_timer, &tv);
}

/* One slice: send up to rl_tick bytes (and what ends the response once the
 * body is out), then let the source go on if the held body is small. */
static void rl_tick_cb(evutil_socket_t fd, short what, void *arg)
{
	struct fault_filter *f = arg;
	struct http_stream *s = f->s;
	(void)fd;
	(void)what;
	if (!s)
		return;
	if (http_stream_output_blocked(s)) {
		f->rl_wait_output = true;   /* on_downstream_writable resumes */
		return;
	}
	size_t held = evbuffer_get_length(f->rl_buf);
	size_t n = (size_t)MIN((uint64_t)held, f->rl_tick);
	bool last = n == held;
	if (n)
		evbuffer_remove_buffer(f->rl_buf, f->rl_out, n);
	f->rl_next_ms = now_ms() + RL_TICK_MS;
	if (n || (last && f->rl_end && !f->rl_has_trailers)) {
		bool end = last && f->rl_end && !f->rl_has_trailers;
		if (end)
			f->rl_end = false;
		http_stream_encode_data_from(s, f, f->rl_out, end);
	}
	if (last && f->rl_has_trailers) {
		f->rl_has_trailers = false;
		http_stream_encode_trailers_from(s, f, &f->rl_trailers);
		hdrs_free(&f->rl_trailers);
	}
	if (evbuffer_get_length(f->rl_buf))
		rl_schedule(f);
	if (f->rl_hold && evbuffer_get_length(f->rl_buf) < RL_HOLD_BYTES) {
		f->rl_hold = false;
		http_stream_set_encode_hold(s, false);   /* may call encode_data again */
	}
}

static enum filter_status fault_encode_data(void *ctx, struct http_stream *s,
					    struct evbuffer *data, bool end_stream)
{
	struct fault_filter *f = ctx;
	if (!f->rl_tick)
		return FILTER_CONTINUE;
	if (!f->rl_buf) {
		f->rl_buf = evbuffer_new();
		f->rl_out = evbuffer_new();
		if (!f->rl_buf || !f->rl_out)
			die("evbuffer_new");
	}
	if (!f->rl_timer) {
		f->rl_timer = evtimer_new(http_stream_worker(s)->base, rl_tick_cb, f);
		if (!f->rl_timer)
			die("evtimer_new");
	}
	evbuffer_add_buffer(f->rl_buf, data);
	f->rl_end = f->rl_end || end_stream;
	if (!f->rl_hold && evbuffer_get_length(f->rl_buf) >= RL_HOLD_BYTES) {
		f->rl_hold = true;
		http_stream_set_encode_hold(s, true);
	}
	if (!f->rl_wait_output)
		rl_schedule(f);
	return FILTER_STOP;
}

static enum filter_status fault_encode_trailers(void *ctx, struct http_stream *s,
						struct http_headers *t)
{
	struct fault_filter *f = ctx;
	(void)s;
	if (!f->rl_tick || !f->rl_buf || !evbuffer_get_length(f->rl_buf))
		return FILTER_CONTINUE;
	hdrs_init(&f->rl_trailers);
	hdrs_copy(&f->rl_trailers, t);
	f->rl_has_trailers = true;
	return FILTER_STOP;
}

static void fault_on_downstream_writable(void *ctx, struct http_stream *s)
{
	struct fault_filter *f = ctx;
	(void)s;
	if (!f->rl_wait_output)
		return;
	f->rl_wait_output = false;
	rl_schedule(f);
}

const struct http_filter_ops fault_filter_ops = {
	.name = "envoy.filters.http.fault",
	.type_url = FAULT_TYPE,
	.parse_config = fault_parse_config,
	.free_config = fault_free_config,
	.parse_per_route = fault_parse_per_route,
	.free_per_route = fault_free_config,
	.create = fault_create,
	.destroy = fault_destroy,
	.decode_headers = fault_decode_headers,
	.encode_data = fault_encode_data,
	.encode_trailers = fault_encode_trailers,
	.on_downstream_writable = fault_on_downstream_writable,
	.thread_exit = fault_thread_exit,
};
