/* h2_codec_fuzz.c - libFuzzer target for the downstream HTTP/2 codec
 * (filters/network/http_connection_manager/h2_codec.c) and the stream logic
 * behind it.
 *
 * A real HCM (codec_type HTTP2, compiled from a bootstrap once) takes one
 * end of a socketpair per input, exactly as a worker hands it an accepted
 * connection; the input is written to the other end as the client's bytes
 * (the committed seeds start with the client preface), the event loop runs
 * until nothing moves, then the client end closes and the connection must
 * be torn down without leaks.  Routes are local (direct_response, fault
 * abort, no route, gRPC content types, a CONNECT whose direct 200 opens a
 * tunnel, extended CONNECT) so no upstream or timer is needed.
 *
 * Seeds: tests/fuzz/corpus/h2_codec (made with python3-h2).  Run:
 *   make fuzz-bins && sh tests/fuzz/run-one.sh build/fuzz/h2_codec_fuzz tests/fuzz/corpus/h2_codec 60 */
#include <sys/socket.h>
#include <netinet/in.h>
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>
#include <event2/event.h>

#include "tests/unit/bootstrap_helper.h"
#include "proxy/worker.h"
#include "proxy/downstream.h"
#include "proxy/conn.h"
#include "proxy/filter.h"

static const char yaml[] =
	"static_resources:\n"
	"  listeners:\n"
	"  - name: l\n"
	"    address: {socket_address: {address: 127.0.0.1, port_value: 1}}\n"
	"    per_connection_buffer_limit_bytes: 32768\n"
	"    filter_chains:\n"
	"    - filters:\n"
	"      - name: envoy.filters.network.http_connection_manager\n"
	"        typed_config:\n"
	"          \"@type\": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager\n"
	"          stat_prefix: f\n"
	"          codec_type: HTTP2\n"
	"          max_request_headers_kb: 4\n"
	"          http2_protocol_options: {max_concurrent_streams: 16, initial_stream_window_size: 65535,\n"
	"                                   allow_connect: true}\n"
	"          upgrade_configs: [{upgrade_type: websocket}, {upgrade_type: CONNECT}]\n"
	"          route_config:\n"
	"            virtual_hosts:\n"
	"            - name: v\n"
	"              domains: [\"*\"]\n"
	"              routes:\n"
	"              - match: {connect_matcher: {}}\n"
	"                direct_response: {status: 200, body: {inline_string: \"tunnel\"}}\n"
	"              - match: {prefix: \"/d\"}\n"
	"                direct_response: {status: 200, body: {inline_string: \"hello world\"}}\n"
	"              - match: {prefix: \"/e\"}\n"
	"                direct_response: {status: 503}\n"
	"          http_filters:\n"
	"          - name: envoy.filters.http.fault\n"
	"            typed_config:\n"
	"              \"@type\": type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault\n"
	"              abort: {http_status: 429, percentage: {numerator: 100}}\n"
	"              headers: [{name: x-abort, present_match: true}]\n"
	"          - name: envoy.filters.http.router\n"
	"            typed_config:\n"
	"              \"@type\": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router\n";

static struct snapshot *snap;
static struct worker w;

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	char err[1024];
	(void)argc;
	(void)argv;
	signal(SIGPIPE, SIG_IGN);   /* as the server: a closed peer is an error, not a signal */
	snap = test_bootstrap(yaml, err, sizeof(err));
	if (!snap) {
		fprintf(stderr, "h2_codec_fuzz: bootstrap: %s\n", err);
		abort();
	}
	w.id = 0;
	w.shard = 1;
	w.base = event_base_new();
	w.snap = snap;
	return 0;
}

static void drain(int fd)
{
	char buf[65536];
	while (read(fd, buf, sizeof(buf)) > 0)
		;
}

static void spin(int client, int rounds)
{
	for (int i = 0; i < rounds && w.conns; i++) {
		event_base_loop(w.base, EVLOOP_NONBLOCK);
		if (client >= 0)
			drain(client);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct listener_cfg *lcfg = snap->listeners[0];
	struct filter_chain *fc = &lcfg->chains[0];
	struct sockaddr_in peer = { .sin_family = AF_INET, .sin_port = htons(4242),
				    .sin_addr.s_addr = htonl(0x7f000001) };
	int sv[2];

	if (size > 60000)
		return 0;
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv))
		abort();
	fcntl(sv[1], F_SETFL, O_NONBLOCK);
	struct conn *bev = conn_new(w.base, sv[0]);
	struct accept_info ai = { &w, bev, lcfg, (const struct sockaddr *)&peer, sizeof(peer) };
	fc->ops->on_accept(&ai, fc->cfg);
	/* the client's bytes, in two writes so frames straddle reads */
	size_t half = size / 2;
	/* (a write may fail once the proxy has closed: that is an outcome) */
	if (half && write(sv[1], data, half) < 0)
		(void)0;
	spin(sv[1], 8);
	if (size - half && write(sv[1], data + half, size - half) < 0)
		(void)0;
	spin(sv[1], 32);
	close(sv[1]);
	spin(-1, 32);
	while (w.conns)
		downstream_close(w.conns);
	event_base_loop(w.base, EVLOOP_NONBLOCK);
	return 0;
}
