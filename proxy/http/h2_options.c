/* h2_options.c - see h2_options.h. */
#include "h2_options.h"
#include "../common.h"

void h2_options_defaults(struct h2_options *o)
{
	*o = (struct h2_options)H2_OPTIONS_DEFAULTS;
}

static int parse_keepalive(struct cfg_ctx *c, const json_t *ka, struct h2_options *o,
			   bool allow_jitter)
{
	static const char *const ka_f[] = { "interval", "timeout", "interval_jitter",
					    "connection_idle_interval", NULL };
	const json_t *jit;
	int rc = cfg_expect_object(c, ka) || cfg_check_fields(c, ka, ka_f) ||
		 cfg_duration_ms(c, ka, "interval", &o->keepalive_interval_ms) ||
		 cfg_duration_ms(c, ka, "timeout", &o->keepalive_timeout_ms);
	if (rc)
		return RM_ERROR;
	if (!allow_jitter && cfg_get(ka, "interval_jitter"))
		return cfg_fail_field(c, ka, "interval_jitter", "not supported yet");
	if (cfg_get(ka, "connection_idle_interval"))
		return cfg_fail_field(c, ka, "connection_idle_interval", "not supported yet");
	if (!cfg_get(ka, "timeout"))
		return cfg_fail(c, "connection_keepalive.timeout is required");
	if ((jit = cfg_enter(c, ka, "interval_jitter"))) {
		static const char *const pf[] = { "value", NULL };
		double d = 15;
		rc = cfg_expect_object(c, jit) || cfg_check_fields(c, jit, pf) ||
		     cfg_double(c, jit, "value", &d);
		if (!rc && (d < 0 || d > 100))
			rc = cfg_fail_field(c, jit, "value", "must be in 0..100");
		if (!rc)
			o->keepalive_jitter_pct = (uint32_t)d;
		cfg_leave(c);
	}
	return rc ? RM_ERROR : RM_OK;
}

/* The flood limits, on both sides (Envoy's validation: the outbound ones
 * and the WINDOW_UPDATE ratio must be >= 1). */
static int parse_flood(struct cfg_ctx *c, const json_t *v, struct h2_options *o)
{
	if (cfg_u32(c, v, "max_outbound_frames", &o->max_outbound_frames) ||
	    cfg_u32(c, v, "max_outbound_control_frames", &o->max_outbound_control_frames) ||
	    cfg_u32(c, v, "max_consecutive_inbound_frames_with_empty_payload", &o->max_empty_frames) ||
	    cfg_u32(c, v, "max_inbound_priority_frames_per_stream", &o->max_priority_per_stream) ||
	    cfg_u32(c, v, "max_inbound_window_update_frames_per_data_frame_sent",
		    &o->max_window_update_per_data))
		return RM_ERROR;
	if (o->max_outbound_frames < 1)
		return cfg_fail_field(c, v, "max_outbound_frames", "must be >= 1");
	if (o->max_outbound_control_frames < 1)
		return cfg_fail_field(c, v, "max_outbound_control_frames", "must be >= 1");
	if (o->max_window_update_per_data < 1)
		return cfg_fail_field(c, v, "max_inbound_window_update_frames_per_data_frame_sent",
				      "must be >= 1");
	return RM_OK;
}

int h2_options_parse(struct cfg_ctx *c, const json_t *v, struct h2_options *o, bool downstream)
{
	static const char *const f[] = {
		"hpack_table_size", "max_concurrent_streams", "initial_stream_window_size",
		"initial_connection_window_size", "connection_keepalive",
		"max_outbound_frames", "max_outbound_control_frames",
		"max_consecutive_inbound_frames_with_empty_payload",
		"max_inbound_priority_frames_per_stream",
		"max_inbound_window_update_frames_per_data_frame_sent",
		/* known, not implemented (allow_connect: upstream only): */
		"allow_connect", "allow_metadata",
		"stream_error_on_invalid_http_messaging",
		"override_stream_error_on_invalid_http_message", "custom_settings_parameters",
		"use_oghttp2_codec", "max_metadata_size", NULL
	};
	const json_t *ka;
	if (cfg_expect_object(c, v) || cfg_check_fields(c, v, f))
		return RM_ERROR;
	if (cfg_reject_fields(c, v, f + 10 + downstream, "not supported yet") ||
	    (downstream && cfg_bool(c, v, "allow_connect", &o->allow_connect)) ||
	    parse_flood(c, v, o) ||
	    cfg_u32(c, v, "hpack_table_size", &o->hpack_table_size) ||
	    cfg_u32(c, v, "max_concurrent_streams", &o->max_concurrent_streams) ||
	    cfg_u32(c, v, "initial_stream_window_size", &o->initial_stream_window) ||
	    cfg_u32(c, v, "initial_connection_window_size", &o->initial_conn_window))
		return RM_ERROR;
	if (o->max_concurrent_streams < 1 || o->max_concurrent_streams > 2147483647u)
		return cfg_fail_field(c, v, "max_concurrent_streams", "must be in 1..2147483647");
	if (o->initial_stream_window < 65535 || o->initial_stream_window > 2147483647u)
		return cfg_fail_field(c, v, "initial_stream_window_size", "must be in 65535..2147483647");
	if (o->initial_conn_window < 65535 || o->initial_conn_window > 2147483647u)
		return cfg_fail_field(c, v, "initial_connection_window_size",
				      "must be in 65535..2147483647");
	if ((ka = cfg_enter(c, v, "connection_keepalive"))) {
		int rc = parse_keepalive(c, ka, o, downstream);
		cfg_leave(c);
		if (rc)
			return RM_ERROR;
	}
	return RM_OK;
}
