/* Upstream protocol options (typed_extension_protocol_options HttpProtocolOptions,
 * deprecated http2_protocol_options) compiled through the real bootstrap compiler. */
#include "test.h"
#include "bootstrap_helper.h"
#include "proxy/snapshot.h"
#include "proxy/upstream/cluster.h"

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
