/* overload.h - the overload manager (bootstrap overload_manager) and the
 * downstream connection limits.
 *
 * Config (overload_parse) is free of I/O.  At run time the main thread
 * samples the resource monitors every refresh_interval (overload_start),
 * computes each action's state from its triggers and publishes it to the
 * workers as one atomic per action: the request path only loads it
 * (relaxed), never locks.  The global downstream connection limit is one
 * atomic counter taken at accept by every worker (overload_cx_take) and
 * released when the connection closes. */
#ifndef REMORA_OVERLOAD_H
#define REMORA_OVERLOAD_H

#include "config/cfg.h"

struct stats_store;
struct event_base;

enum ol_monitor_kind { OL_MON_GLOBAL_CX, OL_MON_FIXED_HEAP };

enum ol_action_kind {
	OL_STOP_ACCEPTING_CX,      /* envoy.overload_actions.stop_accepting_connections */
	OL_STOP_ACCEPTING_RQ,      /* envoy.overload_actions.stop_accepting_requests */
	OL_DISABLE_KEEPALIVE,      /* envoy.overload_actions.disable_http_keepalive */
	OL_REDUCE_TIMEOUTS,        /* envoy.overload_actions.reduce_timeouts */
	OL_ACTIONS_N
};

/* ScaleTimersOverloadActionConfig.TimerType values we scale. */
enum ol_timer { OL_TIMER_CX_IDLE, OL_TIMER_STREAM_IDLE, OL_TIMERS_N };

#define OL_STATE_ONE 1000000u      /* action state 1.0 (saturated), fixed point */

struct ol_trigger {
	unsigned monitor;          /* index into overload_cfg.monitors */
	bool scaled;               /* scaled {scaling, saturation}, else threshold {value} */
	double value, scaling, saturation;
};

struct ol_monitor {
	char *name;                /* owned: the extension name */
	int kind;                  /* enum ol_monitor_kind */
	uint64_t max;              /* max_active_downstream_connections / max_heap_size_bytes */
};

struct ol_action {
	int kind;                  /* enum ol_action_kind */
	struct ol_trigger *triggers; /* owned [ntriggers] */
	size_t ntriggers;
};

struct ol_scale_timer {
	bool set;                  /* listed in timer_scale_factors */
	bool pct;                  /* min_scale (min_pct) rather than min_timeout (min_ms) */
	uint64_t min_ms;
	double min_pct;            /* 0..100 */
};

struct overload_cfg {
	bool configured;           /* overload_manager present */
	uint64_t refresh_ms;       /* refresh_interval (1 s) */
	struct ol_monitor *monitors; /* owned [nmonitors] */
	size_t nmonitors;
	struct ol_action actions[OL_ACTIONS_N]; /* by kind; ntriggers 0 = not configured */
	struct ol_scale_timer timers[OL_TIMERS_N]; /* reduce_timeouts' timer_scale_factors */
	uint64_t max_global_cx;    /* global_downstream_max_connections (0 = none) */
};

/* Parse Bootstrap.overload_manager j into out (zeroed first).  RM_OK, or
 * RM_ERROR with the field path in c->err.  No I/O. */
int overload_parse(struct cfg_ctx *c, const json_t *j, struct overload_cfg *out);
void overload_cfg_free(struct overload_cfg *cfg);
/* The names (Envoy's) of actions and timers, for stats and docs. */
const char *overload_action_name(int kind);

/* A trigger's action state (0..OL_STATE_ONE) at pressure p (0..1+). */
uint32_t ol_trigger_state(const struct ol_trigger *t, double pressure);
/* A timeout of ms scaled by the action state (min + (ms - min) * (1 - state)). */
uint64_t ol_scale(const struct ol_scale_timer *t, uint64_t ms, uint32_t state);

/* ---- run time (one per process) ---- */

struct overload_state {
	uint32_t action[OL_ACTIONS_N];   /* atomic: current state, 0..OL_STATE_ONE */
	long global_cx;                  /* atomic: downstream connections admitted */
	long max_global_cx;              /* 0 = no global limit (fixed before workers run) */
	struct ol_scale_timer timers[OL_TIMERS_N];
};
extern struct overload_state g_overload;

/* Install cfg's limits (before the workers start) and, if an overload
 * manager is configured, its stats and the refresh timer on base (main
 * thread).  cfg is copied; the caller keeps ownership. */
void overload_start(const struct overload_cfg *cfg, struct event_base *base,
		    struct stats_store *st);
/* Sample the monitors and publish the action states now (main thread). */
void overload_refresh(void);
void overload_stop(void);

static inline bool overload_saturated(int action)
{
	return __atomic_load_n(&g_overload.action[action], __ATOMIC_RELAXED) >= OL_STATE_ONE;
}

/* Admit one more downstream connection under the global limit (any
 * worker).  false: over the limit, nothing taken. */
static inline bool overload_cx_take(void)
{
	if (!g_overload.max_global_cx)
		return true;
	if (__atomic_add_fetch(&g_overload.global_cx, 1, __ATOMIC_RELAXED) > g_overload.max_global_cx) {
		__atomic_sub_fetch(&g_overload.global_cx, 1, __ATOMIC_RELAXED);
		return false;
	}
	return true;
}

static inline void overload_cx_release(void)
{
	if (g_overload.max_global_cx)
		__atomic_sub_fetch(&g_overload.global_cx, 1, __ATOMIC_RELAXED);
}

/* ms scaled by reduce_timeouts for timer t (ms itself when not reduced). */
static inline uint64_t overload_timeout(int t, uint64_t ms)
{
	uint32_t s = __atomic_load_n(&g_overload.action[OL_REDUCE_TIMEOUTS], __ATOMIC_RELAXED);
	if (likely(!s) || !g_overload.timers[t].set || !ms)
		return ms;
	return ol_scale(&g_overload.timers[t], ms, s);
}


/* ---- layered_runtime (static layers only) ---- */

/* Parse Bootstrap.layered_runtime: every layer's static_layer, flattened
 * ("a: {b: 1}" is key "a.b"; later layers override earlier ones) into
 * *flat (a new object the caller owns).  Only static layers are
 * supported; the keys Remora reads are runtime_* below. */
int runtime_parse(struct cfg_ctx *c, const json_t *j, json_t **flat);
/* envoy.resource_limits.listener.<name>.connection_limit, 0 = none. */
uint64_t runtime_listener_limit(const json_t *flat, const char *listener_name);
/* overload.global_downstream_max_connections (Envoy's older runtime key), 0 = none. */
uint64_t runtime_global_cx_limit(const json_t *flat);
/* http.max_requests_per_io_cycle (requests one connection starts per I/O
 * cycle), 0 = no limit (Envoy's default). */
uint32_t runtime_max_requests_per_io_cycle(const json_t *flat);

#endif
