/* Upstream protocol options (typed_extension_protocol_options HttpProtocolOptions,
 * deprecated http2_protocol_options) compiled through the real bootstrap compiler. */
#include "test.h"
#include "bootstrap_helper.h"
#include "proxy/snapshot.h"
#include "proxy/upstream/cluster.h"
#include "proxy/http/h2_options.h"

#define C1 "static_resources:\n  clusters:\n  - name: a\n"
#define OPTS "    typed_extension_protocol_options:\n" \
	     "      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:\n" \
	     "        '@type': type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions\n"

static struct cluster *only_cluster(struct snapshot *s)
{
	return s && s->nclusters == 1 ? s->clusters[0] : NULL;
}

TEST(h2_options_explicit_http2)
{
	char err[1024];
	struct snapshot *s = test_bootstrap(C1 OPTS
		"        explicit_http_config:\n"
		"          http2_protocol_options: {max_concurrent_streams: 7, initial_stream_window_size: 65535,"
		" initial_connection_window_size: 1048576, hpack_table_size: 0,"
		" connection_keepalive: {interval: 2s, timeout: 1s}}\n", err, sizeof(err));
	struct cluster *cl = only_cluster(s);
	CHECK(cl != NULL);
	if (cl) {
		CHECK_INT(cl->proto, CL_PROTO_HTTP2);
		CHECK_INT(cl->ext->h2.max_concurrent_streams, 7);
		CHECK_INT(cl->ext->h2.initial_stream_window, 65535);
		CHECK_INT(cl->ext->h2.initial_conn_window, 1048576);
		CHECK_INT(cl->ext->h2.hpack_table_size, 0);
		CHECK_INT(cl->ext->h2.keepalive_interval_ms, 2000);
		CHECK_INT(cl->ext->h2.keepalive_timeout_ms, 1000);
		CHECK(cl->ext->h2_stats != NULL);
	}
	if (s)
		test_bootstrap_done(s);
}

TEST(h2_options_defaults_and_forms)
{
	char err[1024];
	struct snapshot *s = test_bootstrap(C1, err, sizeof(err));
	struct cluster *cl = only_cluster(s);
	CHECK(cl && cl->proto == CL_PROTO_HTTP1 && !cl->ext->h2_stats);
	if (s)
		test_bootstrap_done(s);
	s = test_bootstrap(C1 "    http2_protocol_options: {}\n", err, sizeof(err));
	cl = only_cluster(s);
	CHECK(cl && cl->proto == CL_PROTO_HTTP2 && cl->ext->h2.max_concurrent_streams == 2147483647u &&
	      cl->ext->h2.initial_stream_window == 268435456u);
	if (s)
		test_bootstrap_done(s);
	s = test_bootstrap(C1 OPTS "        use_downstream_protocol_config:\n"
			   "          http_protocol_options: {}\n"
			   "          http2_protocol_options: {max_concurrent_streams: 3}\n", err, sizeof(err));
	cl = only_cluster(s);
	CHECK(cl && cl->proto == CL_PROTO_DOWNSTREAM && cl->ext->h2.max_concurrent_streams == 3);
	if (s)
		test_bootstrap_done(s);
	s = test_bootstrap(C1 OPTS "        explicit_http_config: {http_protocol_options: {}}\n", err,
			   sizeof(err));
	cl = only_cluster(s);
	CHECK(cl && cl->proto == CL_PROTO_HTTP1);
	if (s)
		test_bootstrap_done(s);
}

TEST(h2_options_errors_name_the_field)
{
	char err[1024];
	CHECK(!test_bootstrap_ok(C1 OPTS "        explicit_http_config:\n"
				 "          http2_protocol_options: {max_concurrent_streams: 0}\n", err, sizeof(err)));
	CHECK_CONTAINS(err, "explicit_http_config.http2_protocol_options.max_concurrent_streams: must be in");
	CHECK(!test_bootstrap_ok(C1 OPTS "        explicit_http_config:\n"
				 "          http2_protocol_options: {allow_connect: true}\n", err, sizeof(err)));
	CHECK_CONTAINS(err, "http2_protocol_options.allow_connect: not supported yet");
	CHECK(!test_bootstrap_ok(C1 OPTS "        explicit_http_config:\n"
				 "          http_protocol_options: {}\n"
				 "          http2_protocol_options: {}\n", err, sizeof(err)));
	CHECK_CONTAINS(err, "only one of http_protocol_options and http2_protocol_options");
	CHECK(!test_bootstrap_ok(C1 OPTS "        auto_config: {}\n", err, sizeof(err)));
	CHECK_CONTAINS(err, "auto_config: not supported yet");
	CHECK(!test_bootstrap_ok(C1 OPTS "        explicit_http_config: {http2_protocol_options: {}}\n"
				 "        use_downstream_protocol_config: {}\n", err, sizeof(err)));
	CHECK_CONTAINS(err, "only one of explicit_http_config and use_downstream_protocol_config");
	CHECK(!test_bootstrap_ok(C1 "    http2_protocol_options: {connection_keepalive: {interval: 1s}}\n",
				 err, sizeof(err)));
	CHECK_CONTAINS(err, "connection_keepalive.timeout is required");
	CHECK(!test_bootstrap_ok(C1 OPTS "        explicit_http_config:\n"
				 "          http3_protocol_options: {}\n", err, sizeof(err)));
	CHECK_CONTAINS(err, "http3_protocol_options: HTTP/3 is not supported");
}

/* The flood limits (proxy/http/h2_flood.h) on upstream connections: the
 * three places a cluster's HTTP/2 options come from, Envoy's defaults when
 * absent, the downstream validation. */
TEST(h2_options_flood_limits_upstream)
{
	char err[1024];
	struct h2_options d;
	h2_options_defaults(&d);
	/* absent: Envoy's defaults (also for a cluster with no HTTP/2 options,
	 * whose downstream-protocol connections may be HTTP/2) */
	struct snapshot *s = test_bootstrap(C1, err, sizeof(err));
	struct cluster *cl = only_cluster(s);
	CHECK(cl != NULL);
	if (cl) {
		CHECK_INT(cl->ext->h2.max_outbound_frames, d.max_outbound_frames);
		CHECK_INT(cl->ext->h2.max_outbound_control_frames, d.max_outbound_control_frames);
		CHECK_INT(cl->ext->h2.max_empty_frames, d.max_empty_frames);
		CHECK_INT(cl->ext->h2.max_priority_per_stream, d.max_priority_per_stream);
		CHECK_INT(cl->ext->h2.max_window_update_per_data, d.max_window_update_per_data);
		CHECK_INT(d.max_outbound_frames, 10000);
		CHECK_INT(d.max_outbound_control_frames, 1000);
		CHECK_INT(d.max_empty_frames, 1);
		CHECK_INT(d.max_priority_per_stream, 100);
		CHECK_INT(d.max_window_update_per_data, 10);
	}
	if (s)
		test_bootstrap_done(s);
	s = test_bootstrap(C1 "    http2_protocol_options: {}\n", err, sizeof(err));
	cl = only_cluster(s);
	CHECK(cl && cl->ext->h2.max_outbound_frames == 10000 &&
	      cl->ext->h2.max_window_update_per_data == 10);
	if (s)
		test_bootstrap_done(s);
	/* explicit_http_config */
	s = test_bootstrap(C1 OPTS "        explicit_http_config:\n"
			   "          http2_protocol_options: {max_outbound_frames: 7,"
			   " max_outbound_control_frames: 3,"
			   " max_consecutive_inbound_frames_with_empty_payload: 0,"
			   " max_inbound_priority_frames_per_stream: 0,"
			   " max_inbound_window_update_frames_per_data_frame_sent: 2}\n", err, sizeof(err));
	cl = only_cluster(s);
	CHECK(cl != NULL);
	if (cl) {
		CHECK_INT(cl->proto, CL_PROTO_HTTP2);
		CHECK_INT(cl->ext->h2.max_outbound_frames, 7);
		CHECK_INT(cl->ext->h2.max_outbound_control_frames, 3);
		CHECK_INT(cl->ext->h2.max_empty_frames, 0);
		CHECK_INT(cl->ext->h2.max_priority_per_stream, 0);
		CHECK_INT(cl->ext->h2.max_window_update_per_data, 2);
	}
	if (s)
		test_bootstrap_done(s);
	/* use_downstream_protocol_config, lowerCamelCase */
	s = test_bootstrap(C1 OPTS "        use_downstream_protocol_config:\n"
			   "          http2_protocol_options: {maxOutboundControlFrames: 4000,"
			   " maxInboundPriorityFramesPerStream: 5}\n", err, sizeof(err));
	cl = only_cluster(s);
	CHECK(cl && cl->proto == CL_PROTO_DOWNSTREAM && cl->ext->h2.max_outbound_control_frames == 4000 &&
	      cl->ext->h2.max_priority_per_stream == 5 && cl->ext->h2.max_outbound_frames == 10000);
	if (s)
		test_bootstrap_done(s);
	/* deprecated cluster-level http2_protocol_options */
	s = test_bootstrap(C1 "    http2_protocol_options: {max_consecutive_inbound_frames_with_empty_payload: 9,"
			   " max_inbound_window_update_frames_per_data_frame_sent: 1}\n", err, sizeof(err));
	cl = only_cluster(s);
	CHECK(cl && cl->proto == CL_PROTO_HTTP2 && cl->ext->h2.max_empty_frames == 9 &&
	      cl->ext->h2.max_window_update_per_data == 1);
	if (s)
		test_bootstrap_done(s);
}

TEST(h2_options_flood_limits_upstream_errors)
{
	char err[1024];
	CHECK(!test_bootstrap_ok(C1 OPTS "        explicit_http_config:\n"
				 "          http2_protocol_options: {max_outbound_frames: 0}\n", err, sizeof(err)));
	CHECK_CONTAINS(err, "explicit_http_config.http2_protocol_options.max_outbound_frames: must be >= 1");
	CHECK(!test_bootstrap_ok(C1 OPTS "        use_downstream_protocol_config:\n"
				 "          http2_protocol_options: {max_outbound_control_frames: 0}\n",
				 err, sizeof(err)));
	CHECK_CONTAINS(err, "use_downstream_protocol_config.http2_protocol_options."
		       "max_outbound_control_frames: must be >= 1");
	CHECK(!test_bootstrap_ok(C1 "    http2_protocol_options:"
				 " {max_inbound_window_update_frames_per_data_frame_sent: 0}\n", err, sizeof(err)));
	CHECK_CONTAINS(err, "clusters[0].http2_protocol_options."
		       "max_inbound_window_update_frames_per_data_frame_sent: must be >= 1");
	/* out of uint32 range, negative, wrong type: the field path */
	CHECK(!test_bootstrap_ok(C1 "    http2_protocol_options: {max_outbound_frames: 4294967296}\n",
				 err, sizeof(err)));
	CHECK_CONTAINS(err, "http2_protocol_options.max_outbound_frames");
	CHECK(!test_bootstrap_ok(C1 OPTS "        explicit_http_config:\n"
				 "          http2_protocol_options: {max_inbound_priority_frames_per_stream: -1}\n",
				 err, sizeof(err)));
	CHECK_CONTAINS(err, "http2_protocol_options.max_inbound_priority_frames_per_stream");
	CHECK(!test_bootstrap_ok(C1 "    http2_protocol_options:"
				 " {max_consecutive_inbound_frames_with_empty_payload: x}\n", err, sizeof(err)));
	CHECK_CONTAINS(err, "http2_protocol_options.max_consecutive_inbound_frames_with_empty_payload");
	/* interval_jitter stays downstream-only */
	CHECK(!test_bootstrap_ok(C1 "    http2_protocol_options: {connection_keepalive: {interval: 1s,"
				 " timeout: 1s, interval_jitter: {value: 5}}}\n", err, sizeof(err)));
	CHECK_CONTAINS(err, "interval_jitter: not supported yet");
}
