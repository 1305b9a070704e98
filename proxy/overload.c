/* overload.c - the overload manager: config, monitors, action states.
 *
 * Supported: refresh_interval, resource_monitors
 * envoy.resource_monitors.global_downstream_max_connections and
 * envoy.resource_monitors.fixed_heap, actions stop_accepting_connections,
 * stop_accepting_requests, disable_http_keepalive and reduce_timeouts with
 * threshold and scaled triggers.  docs/configuration.md lists the fields. */
#include "overload.h"

#include <malloc.h>
#include <event2/event.h>
#include "log.h"
#include "../stats/stats.h"

#if defined(__SANITIZE_ADDRESS__)
size_t __sanitizer_get_current_allocated_bytes(void);   /* ASan's allocator (no header with gcc) */
#endif

struct overload_state g_overload;

static const char *const action_names[OL_ACTIONS_N] = {
	"envoy.overload_actions.stop_accepting_connections",
	"envoy.overload_actions.stop_accepting_requests",
	"envoy.overload_actions.disable_http_keepalive",
	"envoy.overload_actions.reduce_timeouts",
};

#define MON_GLOBAL_CX "envoy.resource_monitors.global_downstream_max_connections"
#define MON_HEAP "envoy.resource_monitors.fixed_heap"
#define TYPE_GLOBAL_CX \
	"type.googleapis.com/envoy.extensions.resource_monitors.downstream_connections.v3.DownstreamConnectionsConfig"
#define TYPE_HEAP "type.googleapis.com/envoy.extensions.resource_monitors.fixed_heap.v3.FixedHeapConfig"
#define TYPE_SCALE_TIMERS "type.googleapis.com/envoy.config.overload.v3.ScaleTimersOverloadActionConfig"

const char *overload_action_name(int kind)
{
	return kind >= 0 && kind < OL_ACTIONS_N ? action_names[kind] : "?";
}

/* ---- config ------------------------------------------------------------------- */

static int check_type(struct cfg_ctx *c, const json_t *tc, const char *want)
{
	const char *t = NULL;
	if (cfg_string(c, tc, "@type", &t))
		return RM_ERROR;
	if (t && strcmp(t, want))
		return cfg_fail_field(c, tc, "@type", "expected '%s'", want);
	return RM_OK;
}

static int parse_monitor(struct cfg_ctx *c, const json_t *j, struct overload_cfg *out)
{
	static const char *const f[] = { "name", "typed_config", NULL };
	const char *name = NULL;
	const json_t *tc;
	struct ol_monitor m = { 0 };

	if (cfg_expect_object(c, j) || cfg_check_fields(c, j, f) || cfg_string_req(c, j, "name", &name))
		return RM_ERROR;
	for (size_t i = 0; i < out->nmonitors; i++)
		if (!strcmp(out->monitors[i].name, name))
			return cfg_fail_field(c, j, "name", "duplicate resource monitor '%s'", name);
	if (!strcmp(name, MON_GLOBAL_CX)) {
		static const char *const tf[] = { "max_active_downstream_connections", NULL };
		if (!(tc = cfg_enter_req(c, j, "typed_config")))
			return RM_ERROR;
		int rc = cfg_expect_object(c, tc) || cfg_check_fields(c, tc, tf) ||
			 check_type(c, tc, TYPE_GLOBAL_CX) ||
			 cfg_u64(c, tc, "max_active_downstream_connections", &m.max);
		if (!rc && (!m.max || m.max > (uint64_t)INT32_MAX))
			rc = cfg_fail_field(c, tc, "max_active_downstream_connections",
					    "must be in 1..%d", INT32_MAX);
		cfg_leave(c);
		if (rc)
			return RM_ERROR;
		m.kind = OL_MON_GLOBAL_CX;
		out->max_global_cx = m.max;
	} else if (!strcmp(name, MON_HEAP)) {
		static const char *const tf[] = { "max_heap_size_bytes", NULL };
		if (!(tc = cfg_enter_req(c, j, "typed_config")))
			return RM_ERROR;
		int rc = cfg_expect_object(c, tc) || cfg_check_fields(c, tc, tf) ||
			 check_type(c, tc, TYPE_HEAP) || cfg_u64(c, tc, "max_heap_size_bytes", &m.max);
		if (!rc && !m.max)
			rc = cfg_fail_field(c, tc, "max_heap_size_bytes", "must be greater than 0");
		cfg_leave(c);
		if (rc)
			return RM_ERROR;
		m.kind = OL_MON_FIXED_HEAP;
	} else {
		return cfg_fail_field(c, j, "name", "resource monitor '%s' is not supported (supported: "
				      MON_GLOBAL_CX ", " MON_HEAP ")", name);
	}
	m.name = xstrdup(name);
	out->monitors = xrealloc(out->monitors, (out->nmonitors + 1) * sizeof(*out->monitors));
	out->monitors[out->nmonitors++] = m;
	return RM_OK;
}

static int parse_trigger(struct cfg_ctx *c, const json_t *j, const struct overload_cfg *cfg,
			 const struct ol_action *a, struct ol_trigger *t)
{
	static const char *const f[] = { "name", "threshold", "scaled", NULL };
	const char *name = NULL;
	const json_t *v;

	if (cfg_expect_object(c, j) || cfg_check_fields(c, j, f) || cfg_string_req(c, j, "name", &name))
		return RM_ERROR;
	size_t i;
	for (i = 0; i < cfg->nmonitors && strcmp(cfg->monitors[i].name, name); i++)
		;
	if (i == cfg->nmonitors)
		return cfg_fail_field(c, j, "name", "unknown resource monitor '%s'", name);
	for (size_t k = 0; k < a->ntriggers; k++)
		if (a->triggers[k].monitor == i)
			return cfg_fail_field(c, j, "name", "duplicate trigger for resource monitor '%s'",
					      name);
	t->monitor = (unsigned)i;
	if (!!cfg_get(j, "threshold") == !!cfg_get(j, "scaled"))
		return cfg_fail(c, "exactly one of 'threshold' and 'scaled' is required");
	if ((v = cfg_enter(c, j, "threshold"))) {
		static const char *const tf[] = { "value", NULL };
		t->value = -1;
		int rc = cfg_expect_object(c, v) || cfg_check_fields(c, v, tf) ||
			 cfg_double(c, v, "value", &t->value);
		if (!rc && (t->value < 0 || t->value > 1))
			rc = cfg_fail_field(c, v, "value", "must be in [0, 1]");
		cfg_leave(c);
		return rc ? RM_ERROR : RM_OK;
	}
	v = cfg_enter(c, j, "scaled");
	static const char *const sf[] = { "scaling_threshold", "saturation_threshold", NULL };
	t->scaled = true;
	t->scaling = t->saturation = -1;
	int rc = cfg_expect_object(c, v) || cfg_check_fields(c, v, sf) ||
		 cfg_double(c, v, "scaling_threshold", &t->scaling) ||
		 cfg_double(c, v, "saturation_threshold", &t->saturation);
	if (!rc && (t->scaling < 0 || t->scaling > 1))
		rc = cfg_fail_field(c, v, "scaling_threshold", "must be in [0, 1]");
	if (!rc && (t->saturation < 0 || t->saturation > 1))
		rc = cfg_fail_field(c, v, "saturation_threshold", "must be in [0, 1]");
	if (!rc && t->scaling >= t->saturation)
		rc = cfg_fail(c, "scaling_threshold must be less than saturation_threshold");
	cfg_leave(c);
	return rc ? RM_ERROR : RM_OK;
}

/* reduce_timeouts' ScaleTimersOverloadActionConfig. */
static int parse_scale_timers(struct cfg_ctx *c, const json_t *tc, struct overload_cfg *out)
{
	static const char *const f[] = { "timer_scale_factors", NULL };
	static const char *const ff[] = { "timer", "min_timeout", "min_scale", NULL };
	static const char *const types[] = { "UNSPECIFIED", "HTTP_DOWNSTREAM_CONNECTION_IDLE",
					     "HTTP_DOWNSTREAM_STREAM_IDLE", "TRANSPORT_SOCKET_CONNECT",
					     "HTTP_DOWNSTREAM_CONNECTION_MAX" };
	const json_t *v;

	if (cfg_expect_object(c, tc) || cfg_check_fields(c, tc, f) ||
	    check_type(c, tc, TYPE_SCALE_TIMERS))
		return RM_ERROR;
	if (!(v = cfg_enter_req(c, tc, "timer_scale_factors")))
		return RM_ERROR;
	int rc = cfg_expect_array(c, v);
	if (!rc && !json_array_size(v))
		rc = cfg_fail(c, "at least one timer scale factor is required");
	for (size_t i = 0; !rc && i < json_array_size(v); i++) {
		const json_t *e = cfg_enter_idx(c, v, i);
		int type = 0;
		struct ol_scale_timer st = { .set = true };
		rc = cfg_expect_object(c, e) || cfg_check_fields(c, e, ff) ||
		     cfg_enum(c, e, "timer", types, ARRAY_SIZE(types), &type);
		int idx = type == 1 ? OL_TIMER_CX_IDLE : type == 2 ? OL_TIMER_STREAM_IDLE : -1;
		if (!rc && idx < 0)
			rc = cfg_fail_field(c, e, "timer", "timer %s is not supported (supported: "
					    "HTTP_DOWNSTREAM_CONNECTION_IDLE, HTTP_DOWNSTREAM_STREAM_IDLE)",
					    types[type]);
		if (!rc && !!cfg_get(e, "min_timeout") == !!cfg_get(e, "min_scale"))
			rc = cfg_fail(c, "exactly one of 'min_timeout' and 'min_scale' is required");
		if (!rc && cfg_get(e, "min_timeout"))
			rc = cfg_duration_ms(c, e, "min_timeout", &st.min_ms);
		const json_t *ms;
		if (!rc && (ms = cfg_enter(c, e, "min_scale"))) {
			static const char *const pf[] = { "value", NULL };
			st.pct = true;
			rc = cfg_expect_object(c, ms) || cfg_check_fields(c, ms, pf) ||
			     cfg_double(c, ms, "value", &st.min_pct);
			if (!rc && (st.min_pct < 0 || st.min_pct > 100))
				rc = cfg_fail_field(c, ms, "value", "must be in [0, 100]");
			cfg_leave(c);
		}
		if (!rc && out->timers[idx].set)
			rc = cfg_fail_field(c, e, "timer", "duplicate timer %s", types[type]);
		if (!rc)
			out->timers[idx] = st;
		cfg_leave(c);
	}
	cfg_leave(c);
	return rc ? RM_ERROR : RM_OK;
}

static int parse_action(struct cfg_ctx *c, const json_t *j, struct overload_cfg *out)
{
	static const char *const f[] = { "name", "triggers", "typed_config", NULL };
	const char *name = NULL;
	const json_t *v;
	int kind;

	if (cfg_expect_object(c, j) || cfg_check_fields(c, j, f) || cfg_string_req(c, j, "name", &name))
		return RM_ERROR;
	for (kind = 0; kind < OL_ACTIONS_N && strcmp(action_names[kind], name); kind++)
		;
	if (kind == OL_ACTIONS_N)
		return cfg_fail_field(c, j, "name", "overload action '%s' is not supported", name);
	struct ol_action *a = &out->actions[kind];
	if (a->ntriggers)
		return cfg_fail_field(c, j, "name", "duplicate overload action '%s'", name);
	if (kind == OL_REDUCE_TIMEOUTS) {
		if (!(v = cfg_enter_req(c, j, "typed_config")))
			return RM_ERROR;
		int rc = parse_scale_timers(c, v, out);
		cfg_leave(c);
		if (rc)
			return RM_ERROR;
	} else if (cfg_get(j, "typed_config")) {
		return cfg_fail_field(c, j, "typed_config", "'%s' takes no typed_config", name);
	}
	if (!(v = cfg_enter_req(c, j, "triggers")))
		return RM_ERROR;
	int rc = cfg_expect_array(c, v);
	if (!rc && !json_array_size(v))
		rc = cfg_fail(c, "at least one trigger is required");
	if (!rc)
		a->triggers = xcalloc(json_array_size(v), sizeof(*a->triggers));
	for (size_t i = 0; !rc && i < json_array_size(v); i++) {
		const json_t *e = cfg_enter_idx(c, v, i);
		rc = parse_trigger(c, e, out, a, &a->triggers[a->ntriggers]);
		if (!rc)
			a->ntriggers++;
		cfg_leave(c);
	}
	cfg_leave(c);
	a->kind = kind;
	return rc ? RM_ERROR : RM_OK;
}

int overload_parse(struct cfg_ctx *c, const json_t *j, struct overload_cfg *out)
{
	static const char *const f[] = { "refresh_interval", "resource_monitors", "actions",
					 "buffer_factory_config", "loadshed_points", NULL };
	static const char *const unsupported[] = { "buffer_factory_config", "loadshed_points", NULL };
	const json_t *v;

	memset(out, 0, sizeof(*out));
	out->configured = true;
	out->refresh_ms = 1000;
	if (cfg_expect_object(c, j) || cfg_check_fields(c, j, f) ||
	    cfg_reject_fields(c, j, unsupported, "not supported") ||
	    cfg_duration_ms(c, j, "refresh_interval", &out->refresh_ms))
		goto error;
	if (!out->refresh_ms) {
		cfg_fail_field(c, j, "refresh_interval", "must be greater than 0");
		goto error;
	}
	if ((v = cfg_enter(c, j, "resource_monitors"))) {
		int rc = cfg_expect_array(c, v);
		for (size_t i = 0; !rc && i < json_array_size(v); i++) {
			rc = parse_monitor(c, cfg_enter_idx(c, v, i), out);
			cfg_leave(c);
		}
		cfg_leave(c);
		if (rc)
			goto error;
	}
	if ((v = cfg_enter(c, j, "actions"))) {
		int rc = cfg_expect_array(c, v);
		for (size_t i = 0; !rc && i < json_array_size(v); i++) {
			rc = parse_action(c, cfg_enter_idx(c, v, i), out);
			cfg_leave(c);
		}
		cfg_leave(c);
		if (rc)
			goto error;
	}
	return RM_OK;
error:
	overload_cfg_free(out);
	return RM_ERROR;
}

void overload_cfg_free(struct overload_cfg *cfg)
{
	if (!cfg)
		return;
	for (size_t i = 0; i < cfg->nmonitors; i++)
		free(cfg->monitors[i].name);
	free(cfg->monitors);
	for (int k = 0; k < OL_ACTIONS_N; k++)
		free(cfg->actions[k].triggers);
	memset(cfg, 0, sizeof(*cfg));
}

/* ---- action states ------------------------------------------------------------ */

uint32_t ol_trigger_state(const struct ol_trigger *t, double p)
{
	if (!t->scaled)
		return p >= t->value ? OL_STATE_ONE : 0;
	if (p < t->scaling)
		return 0;
	if (p >= t->saturation)
		return OL_STATE_ONE;
	return (uint32_t)((p - t->scaling) / (t->saturation - t->scaling) * OL_STATE_ONE);
}

uint64_t ol_scale(const struct ol_scale_timer *t, uint64_t ms, uint32_t state)
{
	uint64_t min = t->pct ? (uint64_t)((double)ms * t->min_pct / 100.0) : t->min_ms;
	if (min >= ms)
		return ms;
	if (state >= OL_STATE_ONE)
		return min;
	return min + (uint64_t)((double)(ms - min) * (1.0 - (double)state / OL_STATE_ONE));
}

/* ---- run time ----------------------------------------------------------------- */

#define OL_MON_STATS(X) X(GAUGE, pressure) X(COUNTER, failed_updates) X(COUNTER, skipped_updates)
#define OL_ACT_STATS(X) X(GAUGE, active) X(GAUGE, scale_percent)
#define OLM_ENUM(t, n) OLM_##n,
#define OLA_ENUM(t, n) OLA_##n,
enum { OL_MON_STATS(OLM_ENUM) OL_MON_STATS_N };
enum { OL_ACT_STATS(OLA_ENUM) OL_ACT_STATS_N };
static const struct stat_desc mon_desc[] = { OL_MON_STATS(STATS_DESC) };
static const struct stat_desc act_desc[] = { OL_ACT_STATS(STATS_DESC) };

static struct {
	struct overload_cfg cfg;             /* copy (monitor names owned) */
	struct event *timer;                 /* owned */
	struct stats_scope **mon_stats;      /* owned [nmonitors] */
	struct stats_scope *act_stats[OL_ACTIONS_N]; /* owned; NULL for unconfigured actions */
} ol;

static struct stats_scope *scope_new(struct stats_store *st, const char *name,
				     const struct stat_desc *d, size_t n)
{
	char *s = xasprintf("overload.%s", name);
	struct stats_scope *sc = stats_scope_new(st, s, s, NULL, NULL, d, n);
	free(s);
	return sc;
}

static void refresh_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
	overload_refresh();
}

void overload_start(const struct overload_cfg *cfg, struct event_base *base, struct stats_store *st)
{
	g_overload.max_global_cx = (long)cfg->max_global_cx;
	memcpy(g_overload.timers, cfg->timers, sizeof(g_overload.timers));
	if (!cfg->configured)
		return;
	ol.cfg = *cfg;
	ol.cfg.monitors = xcalloc(cfg->nmonitors + 1, sizeof(*ol.cfg.monitors));
	for (size_t i = 0; i < cfg->nmonitors; i++) {
		ol.cfg.monitors[i] = cfg->monitors[i];
		ol.cfg.monitors[i].name = xstrdup(cfg->monitors[i].name);
	}
	for (int k = 0; k < OL_ACTIONS_N; k++) {
		const struct ol_action *a = &cfg->actions[k];
		ol.cfg.actions[k].triggers = NULL;
		if (!a->ntriggers)
			continue;
		ol.cfg.actions[k].triggers = xcalloc(a->ntriggers, sizeof(*a->triggers));
		memcpy(ol.cfg.actions[k].triggers, a->triggers, a->ntriggers * sizeof(*a->triggers));
		if (st)
			ol.act_stats[k] = scope_new(st, action_names[k], act_desc, OL_ACT_STATS_N);
	}
	ol.mon_stats = xcalloc(cfg->nmonitors + 1, sizeof(*ol.mon_stats));
	for (size_t i = 0; st && i < cfg->nmonitors; i++)
		ol.mon_stats[i] = scope_new(st, cfg->monitors[i].name, mon_desc, OL_MON_STATS_N);
	if (base) {
		ol.timer = event_new(base, -1, EV_PERSIST, refresh_cb, NULL);
		struct timeval tv = { (time_t)(cfg->refresh_ms / 1000),
				      (suseconds_t)(cfg->refresh_ms % 1000) * 1000 };
		event_add(ol.timer, &tv);
	}
	overload_refresh();
}

/* Bytes the process has allocated: glibc's arenas (mallinfo2: in-use chunks
 * plus mmapped blocks), or the sanitizer allocator's count under ASan, where
 * glibc's malloc is not used. */
static uint64_t heap_used(void)
{
#if defined(__SANITIZE_ADDRESS__)
	return (uint64_t)__sanitizer_get_current_allocated_bytes();
#else
	struct mallinfo2 mi = mallinfo2();
	return (uint64_t)mi.uordblks + (uint64_t)mi.hblkhd;
#endif
}

void overload_refresh(void)
{
	double pressure[ol.cfg.nmonitors + 1];
	for (size_t i = 0; i < ol.cfg.nmonitors; i++) {
		const struct ol_monitor *m = &ol.cfg.monitors[i];
		double used = m->kind == OL_MON_GLOBAL_CX ?
				      (double)__atomic_load_n(&g_overload.global_cx, __ATOMIC_RELAXED) :
				      (double)heap_used();
		pressure[i] = used / (double)m->max;
		if (ol.mon_stats && ol.mon_stats[i])
			stats_gauge_set(ol.mon_stats[i], OLM_pressure, (int64_t)(pressure[i] * 100));
	}
	for (int k = 0; k < OL_ACTIONS_N; k++) {
		const struct ol_action *a = &ol.cfg.actions[k];
		uint32_t s = 0;
		for (size_t t = 0; t < a->ntriggers; t++)
			s = MAX(s, ol_trigger_state(&a->triggers[t], pressure[a->triggers[t].monitor]));
		uint32_t old = __atomic_exchange_n(&g_overload.action[k], s, __ATOMIC_RELAXED);
		if ((old >= OL_STATE_ONE) != (s >= OL_STATE_ONE))
			log_info("overload: %s %s", action_names[k],
				 s >= OL_STATE_ONE ? "active" : "inactive");
		if (ol.act_stats[k]) {
			stats_gauge_set(ol.act_stats[k], OLA_active, s >= OL_STATE_ONE);
			stats_gauge_set(ol.act_stats[k], OLA_scale_percent,
					(int64_t)((uint64_t)s * 100 / OL_STATE_ONE));
		}
	}
}

void overload_stop(void)
{
	if (ol.timer)
		event_free(ol.timer);
	for (size_t i = 0; ol.mon_stats && i < ol.cfg.nmonitors; i++)
		stats_scope_free(ol.mon_stats[i]);
	free(ol.mon_stats);
	for (int k = 0; k < OL_ACTIONS_N; k++)
		stats_scope_free(ol.act_stats[k]);
	overload_cfg_free(&ol.cfg);
	memset(&ol, 0, sizeof(ol));
	memset(&g_overload, 0, sizeof(g_overload));
}

/* ---- layered_runtime -------------------------------------------------------------- */

static int flatten(struct cfg_ctx *c, const json_t *o, const char *prefix, json_t *flat)
{
	const char *k;
	json_t *v;
	json_object_foreach((json_t *)o, k, v) {
		char *key = prefix ? xasprintf("%s.%s", prefix, k) : xstrdup(k);
		int rc = RM_OK;
		if (json_is_object(v)) {
			cfg_enter(c, o, k);
			rc = flatten(c, v, key, flat);
			cfg_leave(c);
		} else if (json_is_array(v)) {
			cfg_enter(c, o, k);
			rc = cfg_fail(c, "runtime values must be scalars");
			cfg_leave(c);
		} else {
			json_object_set(flat, key, v);
		}
		free(key);
		if (rc)
			return RM_ERROR;
	}
	return RM_OK;
}

int runtime_parse(struct cfg_ctx *c, const json_t *j, json_t **flat)
{
	static const char *const f[] = { "layers", NULL };
	static const char *const lf[] = { "name", "static_layer", "disk_layer", "admin_layer",
					   "rtds_layer", NULL };
	static const char *const unsupported[] = { "disk_layer", "admin_layer", "rtds_layer", NULL };
	const json_t *v;

	*flat = json_object();
	if (cfg_expect_object(c, j) || cfg_check_fields(c, j, f))
		goto error;
	if (!(v = cfg_enter(c, j, "layers")))
		return RM_OK;
	int rc = cfg_expect_array(c, v);
	for (size_t i = 0; !rc && i < json_array_size(v); i++) {
		const json_t *l = cfg_enter_idx(c, v, i), *sl;
		const char *name = NULL;
		rc = cfg_expect_object(c, l) || cfg_check_fields(c, l, lf) ||
		     cfg_reject_fields(c, l, unsupported, "only static_layer runtime layers are supported") ||
		     cfg_string_req(c, l, "name", &name);
		if (!rc && (sl = cfg_enter(c, l, "static_layer"))) {
			rc = cfg_expect_object(c, sl) || flatten(c, sl, NULL, *flat);
			cfg_leave(c);
		}
		cfg_leave(c);
	}
	cfg_leave(c);
	if (rc)
		goto error;
	/* validate the keys Remora reads */
	const char *k;
	json_t *val;
	json_object_foreach(*flat, k, val) {
		bool ours = !strcmp(k, "overload.global_downstream_max_connections") ||
			    !strcmp(k, "http.max_requests_per_io_cycle") ||
			    (!strncmp(k, "envoy.resource_limits.listener.", 31) &&
			     strlen(k) > 31 + 17 && !strcmp(k + strlen(k) - 17, ".connection_limit"));
		if (!ours) {
			log_warn("layered_runtime: key '%s' is not used by Remora", k);
			continue;
		}
		if (!json_is_integer(val) || json_integer_value(val) < 0) {
			cfg_fail(c, "layered_runtime: '%s' must be a non-negative integer", k);
			goto error;
		}
	}
	return RM_OK;
error:
	json_decref(*flat);
	*flat = NULL;
	return RM_ERROR;
}

uint64_t runtime_listener_limit(const json_t *flat, const char *listener_name)
{
	if (!flat || !json_object_size(flat))
		return 0;
	char *k = xasprintf("envoy.resource_limits.listener.%s.connection_limit", listener_name);
	const json_t *v = json_object_get(flat, k);
	free(k);
	return json_is_integer(v) && json_integer_value(v) > 0 ? (uint64_t)json_integer_value(v) : 0;
}

uint64_t runtime_global_cx_limit(const json_t *flat)
{
	const json_t *v = flat ? json_object_get(flat, "overload.global_downstream_max_connections") : NULL;
	return json_is_integer(v) && json_integer_value(v) > 0 ? (uint64_t)json_integer_value(v) : 0;
}

uint32_t runtime_max_requests_per_io_cycle(const json_t *flat)
{
	const json_t *v = flat ? json_object_get(flat, "http.max_requests_per_io_cycle") : NULL;
	if (!json_is_integer(v) || json_integer_value(v) <= 0)
		return 0;
	return json_integer_value(v) > UINT32_MAX ? UINT32_MAX : (uint32_t)json_integer_value(v);
}
