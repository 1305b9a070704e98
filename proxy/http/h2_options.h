/* h2_options.h - Envoy's config.core.v3.Http2ProtocolOptions, shared by the
 * downstream codec (HCM http2_protocol_options) and the upstream one
 * (cluster HttpProtocolOptions / http2_protocol_options). */
#ifndef REMORA_HTTP_H2_OPTIONS_H
#define REMORA_HTTP_H2_OPTIONS_H

#include <stdbool.h>
#include <stdint.h>
#include "../config/cfg.h"

struct h2_options {
	uint32_t max_concurrent_streams;  /* SETTINGS_MAX_CONCURRENT_STREAMS we advertise;
	                                     upstream: also our cap per connection (2^31-1) */
	uint32_t initial_stream_window;   /* SETTINGS_INITIAL_WINDOW_SIZE (256 MiB) */
	uint32_t initial_conn_window;     /* connection receive window (256 MiB) */
	uint32_t hpack_table_size;        /* SETTINGS_HEADER_TABLE_SIZE (4096) */
	uint64_t keepalive_interval_ms;   /* connection_keepalive.interval; 0 = no PINGs */
	uint64_t keepalive_timeout_ms;    /* connection_keepalive.timeout */
	uint32_t keepalive_jitter_pct;    /* connection_keepalive.interval_jitter (15 %) */
	/* Flood limits (both sides; see h2_flood.h): */
	uint32_t max_outbound_frames;     /* frames queued for the peer, unwritten (10000) */
	uint32_t max_outbound_control_frames; /* of those PING, SETTINGS, RST_STREAM (1000) */
	uint32_t max_empty_frames;        /* max_consecutive_inbound_frames_with_empty_payload (1) */
	uint32_t max_priority_per_stream; /* max_inbound_priority_frames_per_stream (100) */
	uint32_t max_window_update_per_data; /* max_inbound_window_update_frames_per_data_frame_sent (10) */
	bool allow_connect;               /* downstream only: SETTINGS_ENABLE_CONNECT_PROTOCOL,
	                                     CONNECT and extended CONNECT (RFC 8441) accepted */
};

/* Envoy's defaults, as an initializer (static configurations use it). */
#define H2_OPTIONS_DEFAULTS {                                                        \
		.max_concurrent_streams = 2147483647u, .initial_stream_window = 268435456u, \
		.initial_conn_window = 268435456u, .hpack_table_size = 4096,         \
		.keepalive_jitter_pct = 15, .max_outbound_frames = 10000,            \
		.max_outbound_control_frames = 1000, .max_empty_frames = 1,          \
		.max_priority_per_stream = 100, .max_window_update_per_data = 10 }
void h2_options_defaults(struct h2_options *o);

/* Parse v (c positioned on it) into o.  Every Envoy field is known; the ones
 * not implemented are rejected with their path.  downstream (the HCM's
 * http2_protocol_options) also accepts connection_keepalive.interval_jitter,
 * which the upstream codec does not implement, and allow_connect (upstream:
 * "not supported yet").  The flood limits are accepted on both sides. */
int h2_options_parse(struct cfg_ctx *c, const json_t *v, struct h2_options *o, bool downstream);

#endif
