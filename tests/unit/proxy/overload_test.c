/* overload_test.c - overload_manager and layered_runtime parsing, trigger
 * states, timer scaling, and the listener limit reaching the listener. */
#include "test.h"
#include "proxy/overload.h"
#include "proxy/config/yaml_json.h"
#include "../bootstrap_helper.h"

/* Parse the overload_manager object of a YAML document. */
static int parse(const char *yaml, struct overload_cfg *o, char *err, size_t errlen)
{
	struct test_yaml t;
	const json_t *om;
	if (test_yaml_enter(&t, yaml, "overload_manager", &om, err, errlen))
		return RM_ERROR;
	return test_yaml_leave(&t, overload_parse(&t.c, om, o), err, errlen);
}

#define MONITORS \
	"overload_manager:\n" \
	"  refresh_interval: 0.25s\n" \
	"  resource_monitors:\n" \
	"  - name: envoy.resource_monitors.global_downstream_max_connections\n" \
	"    typed_config:\n" \
	"      '@type': type.googleapis.com/envoy.extensions.resource_monitors.downstream_connections.v3.DownstreamConnectionsConfig\n" \
	"      max_active_downstream_connections: 100\n" \
	"  - name: envoy.resource_monitors.fixed_heap\n" \
	"    typed_config:\n" \
	"      '@type': type.googleapis.com/envoy.extensions.resource_monitors.fixed_heap.v3.FixedHeapConfig\n" \
	"      max_heap_size_bytes: 1073741824\n"

TEST(overload_parse_full)
{
	struct overload_cfg o;
	char err[512];
	int rc = parse(MONITORS
		"  actions:\n"
		"  - name: envoy.overload_actions.stop_accepting_requests\n"
		"    triggers:\n"
		"    - name: envoy.resource_monitors.fixed_heap\n"
		"      threshold: {value: 0.95}\n"
		"  - name: envoy.overload_actions.disable_http_keepalive\n"
		"    triggers:\n"
		"    - name: envoy.resource_monitors.global_downstream_max_connections\n"
		"      scaled: {scaling_threshold: 0.5, saturation_threshold: 0.9}\n"
		"  - name: envoy.overload_actions.reduce_timeouts\n"
		"    triggers:\n"
		"    - name: envoy.resource_monitors.fixed_heap\n"
		"      scaled: {scaling_threshold: 0.8, saturation_threshold: 0.95}\n"
		"    typed_config:\n"
		"      '@type': type.googleapis.com/envoy.config.overload.v3.ScaleTimersOverloadActionConfig\n"
		"      timer_scale_factors:\n"
		"      - timer: HTTP_DOWNSTREAM_CONNECTION_IDLE\n"
		"        min_timeout: 2s\n"
		"      - timer: HTTP_DOWNSTREAM_STREAM_IDLE\n"
		"        min_scale: {value: 25}\n", &o, err, sizeof(err));
	CHECK_INT(rc, RM_OK);
	CHECK_STR(err, "");
	CHECK_INT(o.refresh_ms, 250);
	CHECK_INT(o.nmonitors, 2);
	CHECK_INT(o.max_global_cx, 100);
	CHECK_INT(o.monitors[1].kind, OL_MON_FIXED_HEAP);
	CHECK_INT(o.actions[OL_STOP_ACCEPTING_RQ].ntriggers, 1);
	CHECK_INT(o.actions[OL_STOP_ACCEPTING_RQ].triggers[0].monitor, 1);
	CHECK_INT(o.actions[OL_STOP_ACCEPTING_CX].ntriggers, 0);
	CHECK(o.actions[OL_DISABLE_KEEPALIVE].triggers[0].scaled);
	CHECK(o.timers[OL_TIMER_CX_IDLE].set && !o.timers[OL_TIMER_CX_IDLE].pct);
	CHECK_INT(o.timers[OL_TIMER_CX_IDLE].min_ms, 2000);
	CHECK(o.timers[OL_TIMER_STREAM_IDLE].pct);
	overload_cfg_free(&o);
}

TEST(overload_parse_errors)
{
	static const struct { const char *yaml, *want; } cases[] = {
		{ "overload_manager: {refresh_interval: 0s}\n", "overload_manager.refresh_interval: must be greater than 0" },
		{ "overload_manager: {bogus: 1}\n", "overload_manager.bogus: unknown field 'bogus'" },
		{ "overload_manager: {loadshed_points: []}\n", "overload_manager.loadshed_points: not supported" },
		{ "overload_manager:\n  resource_monitors:\n  - name: envoy.resource_monitors.cgroup_memory\n",
		  "overload_manager.resource_monitors[0].name: resource monitor 'envoy.resource_monitors.cgroup_memory' is not supported" },
		{ MONITORS "  - name: envoy.resource_monitors.fixed_heap\n    typed_config: {max_heap_size_bytes: 5}\n",
		  "resource_monitors[2].name: duplicate resource monitor" },
		{ "overload_manager:\n  resource_monitors:\n  - name: envoy.resource_monitors.fixed_heap\n"
		  "    typed_config: {'@type': type.googleapis.com/x.Y, max_heap_size_bytes: 5}\n",
		  "resource_monitors[0].typed_config.@type: expected 'type.googleapis.com/envoy.extensions.resource_monitors.fixed_heap.v3.FixedHeapConfig'" },
		{ "overload_manager:\n  resource_monitors:\n  - name: envoy.resource_monitors.global_downstream_max_connections\n"
		  "    typed_config: {max_active_downstream_connections: 0}\n",
		  "max_active_downstream_connections: must be in 1.." },
		{ MONITORS "  actions:\n  - name: envoy.overload_actions.shrink_heap\n    triggers: []\n",
		  "actions[0].name: overload action 'envoy.overload_actions.shrink_heap' is not supported" },
		{ MONITORS "  actions:\n  - name: envoy.overload_actions.stop_accepting_requests\n    triggers:\n"
		  "    - name: envoy.resource_monitors.nope\n      threshold: {value: 0.5}\n",
		  "actions[0].triggers[0].name: unknown resource monitor 'envoy.resource_monitors.nope'" },
		{ MONITORS "  actions:\n  - name: envoy.overload_actions.stop_accepting_requests\n    triggers:\n"
		  "    - name: envoy.resource_monitors.fixed_heap\n      threshold: {value: 1.5}\n",
		  "actions[0].triggers[0].threshold.value: must be in [0, 1]" },
		{ MONITORS "  actions:\n  - name: envoy.overload_actions.stop_accepting_requests\n    triggers:\n"
		  "    - name: envoy.resource_monitors.fixed_heap\n      scaled: {scaling_threshold: 0.9, saturation_threshold: 0.5}\n",
		  "actions[0].triggers[0].scaled: scaling_threshold must be less than saturation_threshold" },
		{ MONITORS "  actions:\n  - name: envoy.overload_actions.stop_accepting_requests\n    triggers:\n"
		  "    - name: envoy.resource_monitors.fixed_heap\n",
		  "exactly one of 'threshold' and 'scaled' is required" },
		{ MONITORS "  actions:\n  - name: envoy.overload_actions.stop_accepting_requests\n    triggers:\n"
		  "    - {name: envoy.resource_monitors.fixed_heap, threshold: {value: 0.5}}\n"
		  "    - {name: envoy.resource_monitors.fixed_heap, threshold: {value: 0.6}}\n",
		  "actions[0].triggers[1].name: duplicate trigger" },
		{ MONITORS "  actions:\n  - name: envoy.overload_actions.reduce_timeouts\n    triggers:\n"
		  "    - {name: envoy.resource_monitors.fixed_heap, threshold: {value: 0.5}}\n",
		  "actions[0].typed_config: missing required field 'typed_config'" },
		{ MONITORS "  actions:\n  - name: envoy.overload_actions.reduce_timeouts\n    triggers:\n"
		  "    - {name: envoy.resource_monitors.fixed_heap, threshold: {value: 0.5}}\n"
		  "    typed_config:\n      timer_scale_factors: [{timer: TRANSPORT_SOCKET_CONNECT, min_timeout: 1s}]\n",
		  "timer_scale_factors[0].timer: timer TRANSPORT_SOCKET_CONNECT is not supported" },
		{ MONITORS "  actions:\n  - name: envoy.overload_actions.disable_http_keepalive\n    triggers:\n"
		  "    - {name: envoy.resource_monitors.fixed_heap, threshold: {value: 0.5}}\n"
		  "  - name: envoy.overload_actions.disable_http_keepalive\n    triggers:\n"
		  "    - {name: envoy.resource_monitors.fixed_heap, threshold: {value: 0.5}}\n",
		  "actions[1].name: duplicate overload action" },
	};
	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		struct overload_cfg o;
		char err[512];
		CHECK_INT(parse(cases[i].yaml, &o, err, sizeof(err)), RM_ERROR);
		CHECK_CONTAINS(err, cases[i].want);
		overload_cfg_free(&o);
	}
}

TEST(overload_trigger_states)
{
	struct ol_trigger th = { .value = 0.8 };
	CHECK_INT(ol_trigger_state(&th, 0.79), 0);
	CHECK_INT(ol_trigger_state(&th, 0.8), OL_STATE_ONE);
	CHECK_INT(ol_trigger_state(&th, 3.0), OL_STATE_ONE);
	struct ol_trigger sc = { .scaled = true, .scaling = 0.5, .saturation = 0.9 };
	CHECK_INT(ol_trigger_state(&sc, 0.4), 0);
	uint32_t half = ol_trigger_state(&sc, 0.7);
	CHECK(half > OL_STATE_ONE / 2 - 10 && half < OL_STATE_ONE / 2 + 10);
	CHECK_INT(ol_trigger_state(&sc, 0.9), OL_STATE_ONE);
}

TEST(overload_timer_scaling)
{
	struct ol_scale_timer abs = { .set = true, .min_ms = 2000 };
	CHECK_INT(ol_scale(&abs, 10000, 0), 10000);
	CHECK_INT(ol_scale(&abs, 10000, OL_STATE_ONE / 2), 6000);
	CHECK_INT(ol_scale(&abs, 10000, OL_STATE_ONE), 2000);
	CHECK_INT(ol_scale(&abs, 1000, OL_STATE_ONE), 1000);   /* min above the timeout: unchanged */
	struct ol_scale_timer pct = { .set = true, .pct = true, .min_pct = 25 };
	CHECK_INT(ol_scale(&pct, 8000, OL_STATE_ONE), 2000);
	/* the inline path: reduce_timeouts inactive leaves timeouts alone */
	memset(&g_overload, 0, sizeof(g_overload));
	g_overload.timers[OL_TIMER_CX_IDLE] = abs;
	CHECK_INT(overload_timeout(OL_TIMER_CX_IDLE, 10000), 10000);
	g_overload.action[OL_REDUCE_TIMEOUTS] = OL_STATE_ONE;
	CHECK_INT(overload_timeout(OL_TIMER_CX_IDLE, 10000), 2000);
	CHECK_INT(overload_timeout(OL_TIMER_STREAM_IDLE, 10000), 10000);   /* not listed */
	memset(&g_overload, 0, sizeof(g_overload));
}

TEST(overload_global_cx_counter)
{
	memset(&g_overload, 0, sizeof(g_overload));
	CHECK(overload_cx_take());   /* no limit: always */
	CHECK_INT(g_overload.global_cx, 0);
	g_overload.max_global_cx = 2;
	CHECK(overload_cx_take());
	CHECK(overload_cx_take());
	CHECK(!overload_cx_take());
	CHECK_INT(g_overload.global_cx, 2);
	overload_cx_release();
	CHECK(overload_cx_take());
	memset(&g_overload, 0, sizeof(g_overload));
}

#define LISTENER(name, port) \
	"  - name: " name "\n" \
	"    address: {socket_address: {address: 127.0.0.1, port_value: " port "}}\n" \
	"    filter_chains:\n" \
	"    - filters:\n" \
	"      - name: envoy.filters.network.tcp_proxy\n" \
	"        typed_config:\n" \
	"          '@type': type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy\n" \
	"          stat_prefix: t\n" \
	"          cluster: c\n"

TEST(overload_runtime_listener_limit)
{
	char err[512];
	struct snapshot *s = test_bootstrap(
		"layered_runtime:\n"
		"  layers:\n"
		"  - name: static\n"
		"    static_layer:\n"
		"      envoy.resource_limits.listener.a.connection_limit: 5\n"
		"      envoy: {resource_limits: {listener: {b: {connection_limit: 7}}}}\n"
		"      overload.global_downstream_max_connections: 50\n"
		"      some.other.key: true\n"
		"static_resources:\n"
		"  clusters:\n"
		"  - name: c\n"
		"    load_assignment: {cluster_name: c, endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: 1}}}}]}]}\n"
		"  listeners:\n" LISTENER("a", "0") LISTENER("b", "1") LISTENER("c2", "2"),
		err, sizeof(err));
	CHECK_STR(err, "");
	CHECK(s != NULL);
	if (s) {
		CHECK_INT(s->listeners[0]->cx_limit, 5);
		CHECK_INT(s->listeners[1]->cx_limit, 7);
		CHECK_INT(s->listeners[2]->cx_limit, 0);
		CHECK_INT(test_srv.overload.max_global_cx, 50);
	}
	test_bootstrap_done(s);

	s = test_bootstrap("layered_runtime:\n  layers:\n  - name: x\n    static_layer:\n"
			   "      envoy.resource_limits.listener.a.connection_limit: lots\n", err, sizeof(err));
	CHECK(s == NULL);
	CHECK_CONTAINS(err, "'envoy.resource_limits.listener.a.connection_limit' must be a non-negative integer");
	test_bootstrap_done(s);
	s = test_bootstrap("layered_runtime:\n  layers:\n  - name: x\n    rtds_layer: {name: r}\n", err, sizeof(err));
	CHECK(s == NULL);
	CHECK_CONTAINS(err, "layered_runtime.layers[0].rtds_layer: only static_layer runtime layers are supported");
	test_bootstrap_done(s);
}
