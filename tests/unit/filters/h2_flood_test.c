/* h2_flood_test.c - the HTTP/2 flood rules (h2_flood.c) without a socket,
 * and their configuration (http2_protocol_options, the runtime key
 * http.max_requests_per_io_cycle) through the real bootstrap compiler. */
#include "test.h"
#include "bootstrap_helper.h"
#include "filters/network/http_connection_manager/hcm-t.h"
#include "proxy/http/h2_flood.h"
#include <event2/buffer.h>

enum { T_DATA = 0, T_HEADERS = 1, T_PRIORITY = 2, T_RST = 3, T_SETTINGS = 4, T_PING = 6,
       T_WU = 8, T_CONT = 9 };
enum { F_END_STREAM = 1, F_END_HEADERS = 4, F_PADDED = 8, F_PRIO = 0x20 };

static struct h2_options opts(void)
{
	struct h2_options o;
	h2_options_defaults(&o);
	return o;
}

TEST(h2_flood_defaults_are_envoys)
{
	struct h2_options o = opts();
	CHECK_INT(o.max_outbound_frames, 10000);
	CHECK_INT(o.max_outbound_control_frames, 1000);
	CHECK_INT(o.max_empty_frames, 1);
	CHECK_INT(o.max_priority_per_stream, 100);
	CHECK_INT(o.max_window_update_per_data, 10);
}

TEST(h2_flood_empty_frames)
{
	struct h2_options o = opts();
	struct h2_flood f;
	h2_flood_init(&f);
	/* one empty DATA is allowed, a non-empty one resets the run */
	CHECK_INT(h2_flood_inbound(&f, &o, T_DATA, 0, 0), H2_FLOOD_NONE);
	CHECK_INT(h2_flood_inbound(&f, &o, T_DATA, 0, 10), H2_FLOOD_NONE);
	CHECK_INT(h2_flood_inbound(&f, &o, T_DATA, 0, 0), H2_FLOOD_NONE);
	/* END_STREAM on an empty frame is legitimate and resets the run */
	CHECK_INT(h2_flood_inbound(&f, &o, T_DATA, F_END_STREAM, 0), H2_FLOOD_NONE);
	CHECK_INT(h2_flood_inbound(&f, &o, T_HEADERS, 0, 0), H2_FLOOD_NONE);
	/* HEADERS then CONTINUATION, both empty: the second in a row */
	CHECK_INT(h2_flood_inbound(&f, &o, T_CONT, 0, 0), H2_FLOOD_EMPTY);
	h2_flood_free(&f);

	/* the pad length and priority fields are not payload */
	h2_flood_init(&f);
	CHECK_INT(h2_flood_inbound(&f, &o, T_DATA, F_PADDED, 1), H2_FLOOD_NONE);
	CHECK_INT(h2_flood_inbound(&f, &o, T_HEADERS, F_PADDED | F_PRIO, 6), H2_FLOOD_EMPTY);
	h2_flood_free(&f);

	/* other frame types neither count nor reset the run */
	h2_flood_init(&f);
	CHECK_INT(h2_flood_inbound(&f, &o, T_DATA, 0, 0), H2_FLOOD_NONE);
	CHECK_INT(h2_flood_inbound(&f, &o, T_PING, 0, 8), H2_FLOOD_NONE);
	CHECK_INT(h2_flood_inbound(&f, &o, T_DATA, 0, 0), H2_FLOOD_EMPTY);
	h2_flood_free(&f);

	/* 0: the first empty frame is already too many */
	o.max_empty_frames = 0;
	h2_flood_init(&f);
	CHECK_INT(h2_flood_inbound(&f, &o, T_DATA, 0, 0), H2_FLOOD_EMPTY);
	h2_flood_free(&f);
}

TEST(h2_flood_priority)
{
	struct h2_options o = opts();
	struct h2_flood f;
	o.max_priority_per_stream = 2;
	h2_flood_init(&f);
	/* 2 * (1 + 0 streams) */
	CHECK_INT(h2_flood_inbound(&f, &o, T_PRIORITY, 0, 5), H2_FLOOD_NONE);
	CHECK_INT(h2_flood_inbound(&f, &o, T_PRIORITY, 0, 5), H2_FLOOD_NONE);
	h2_flood_stream_opened(&f);   /* now 2 * (1 + 1) */
	CHECK_INT(h2_flood_inbound(&f, &o, T_PRIORITY, 0, 5), H2_FLOOD_NONE);
	CHECK_INT(h2_flood_inbound(&f, &o, T_PRIORITY, 0, 5), H2_FLOOD_NONE);
	CHECK_INT(h2_flood_inbound(&f, &o, T_PRIORITY, 0, 5), H2_FLOOD_PRIORITY);
	h2_flood_free(&f);
}

TEST(h2_flood_window_update)
{
	struct h2_options o = opts();
	struct h2_flood f;
	h2_flood_init(&f);
	/* 5 + 2 * (0 + 10 * 0) */
	for (int i = 0; i < 5; i++)
		CHECK_INT(h2_flood_inbound(&f, &o, T_WU, 0, 4), H2_FLOOD_NONE);
	CHECK_INT(h2_flood_inbound(&f, &o, T_WU, 0, 4), H2_FLOOD_WINDOW_UPDATE);
	h2_flood_free(&f);

	h2_flood_init(&f);
	h2_flood_stream_opened(&f);
	h2_flood_sent(&f, 100, T_DATA);   /* 5 + 2 * (1 + 10 * 1) = 27 */
	CHECK_INT(f.data_frames_sent, 1);
	for (int i = 0; i < 27; i++)
		CHECK_INT(h2_flood_inbound(&f, &o, T_WU, 0, 4), H2_FLOOD_NONE);
	CHECK_INT(h2_flood_inbound(&f, &o, T_WU, 0, 4), H2_FLOOD_WINDOW_UPDATE);
	h2_flood_free(&f);
}

TEST(h2_flood_outbound_counts_unwritten_frames)
{
	struct h2_options o = opts();
	struct h2_flood f;
	o.max_outbound_frames = 50;
	o.max_outbound_control_frames = 5;
	h2_flood_init(&f);
	size_t unwritten = 0;
	/* 5 PING ACKs and 40 HEADERS wait: at the limits, not over */
	for (int i = 0; i < 5; i++) {
		h2_flood_sent(&f, 17, T_PING);
		unwritten += 17;
	}
	for (int i = 0; i < 40; i++) {
		h2_flood_sent(&f, 30, T_HEADERS);   /* past the inline ring: it grows */
		unwritten += 30;
	}
	h2_flood_written(&f, unwritten);
	CHECK_INT(f.n, 45);
	CHECK_INT(f.nctl, 5);
	CHECK_INT(h2_flood_outbound(&f, &o, 0, 0), H2_FLOOD_NONE);
	CHECK_INT(h2_flood_outbound(&f, &o, 0, 1), H2_FLOOD_OUTBOUND_CONTROL);
	CHECK_INT(h2_flood_outbound(&f, &o, 6, 0), H2_FLOOD_OUTBOUND);
	/* the socket takes the 5 ACKs and half of the first HEADERS */
	unwritten -= 5 * 17 + 15;
	h2_flood_written(&f, unwritten);
	CHECK_INT(f.n, 40);
	CHECK_INT(f.nctl, 0);
	CHECK_INT(h2_flood_partial(&f, unwritten), 15);
	CHECK_INT(h2_flood_outbound(&f, &o, 0, 5), H2_FLOOD_NONE);
	/* ... the rest of it: the head is a frame boundary again */
	unwritten -= 15;
	h2_flood_written(&f, unwritten);
	CHECK_INT(f.n, 39);
	CHECK_INT(h2_flood_partial(&f, unwritten), 0);
	/* everything written */
	h2_flood_written(&f, 0);
	CHECK_INT(f.n, 0);
	CHECK_INT(h2_flood_partial(&f, 0), 0);
	/* the ring keeps working after wrapping around */
	for (int round = 0; round < 100; round++) {
		h2_flood_sent(&f, 13, T_RST);
		h2_flood_sent(&f, 9, T_SETTINGS);
		h2_flood_written(&f, 9);
		CHECK_INT(f.n, 1);
		CHECK_INT(f.nctl, 1);
		h2_flood_written(&f, 0);
	}
	CHECK_INT(f.n, 0);
	h2_flood_free(&f);
}

/* ---- configuration ------------------------------------------------------------ */

static const struct hcm_cfg *compile(const char *pre, const char *extra, struct snapshot **out,
				     char *err, size_t n)
{
	*out = test_bootstrap_hcm(pre, extra, err, n);
	return *out ? (*out)->listeners[0]->chains[0].cfg : NULL;
}

/* The GOAWAY written after a flood: after an outbound flood, only the frame
 * the socket has partly taken stays before it; after an inbound one the
 * output is kept whole. */
static void frames(struct h2_flood *f, struct evbuffer *out, int n, size_t len, uint8_t type)
{
	uint8_t b[64] = { 0 };
	for (int i = 0; i < n; i++) {
		b[3] = type;
		evbuffer_add(out, b, len);
		h2_flood_sent(f, len, type);
	}
}

TEST(h2_flood_goaway_follows_the_last_whole_frame)
{
	struct h2_flood f;
	struct evbuffer *out = evbuffer_new();
	uint8_t g[17];
	h2_flood_init(&f);
	frames(&f, out, 3, 30, T_HEADERS);
	evbuffer_drain(out, 10);   /* the socket took 10 bytes of the first */
	CHECK_INT(h2_flood_goaway(&f, H2_FLOOD_OUTBOUND, out, 0x80000007u), 17);
	CHECK_INT(evbuffer_get_length(out), 20 + 17);
	evbuffer_drain(out, 20);
	evbuffer_remove(out, g, sizeof(g));
	CHECK_INT(g[2], 8);
	CHECK_INT(g[3], 7);        /* GOAWAY */
	CHECK_INT(g[8], 0);        /* stream 0 */
	CHECK_INT(g[12], 7);       /* last stream id, reserved bit cleared */
	CHECK_INT(g[9], 0);
	CHECK_INT(g[16], 0x0b);    /* ENHANCE_YOUR_CALM */
	h2_flood_free(&f);

	/* at a frame boundary nothing of the unread frames is left */
	h2_flood_init(&f);
	frames(&f, out, 4, 9, T_PING);
	CHECK_INT(h2_flood_goaway(&f, H2_FLOOD_OUTBOUND_CONTROL, out, 0), 17);
	CHECK_INT(evbuffer_get_length(out), 17);
	evbuffer_drain(out, 17);
	h2_flood_free(&f);

	/* inbound: what is queued still goes out, then the GOAWAY */
	h2_flood_init(&f);
	frames(&f, out, 2, 30, T_HEADERS);
	CHECK_INT(h2_flood_goaway(&f, H2_FLOOD_EMPTY, out, 3), 17);
	CHECK_INT(evbuffer_get_length(out), 60 + 17);
	h2_flood_free(&f);
	evbuffer_free(out);
}

TEST(h2_flood_options_parsed)
{
	char err[1024];
	struct snapshot *s;
	const struct hcm_cfg *c = compile("", "http2_protocol_options: {max_outbound_frames: 7, "
					  "max_outbound_control_frames: 3, "
					  "max_consecutive_inbound_frames_with_empty_payload: 0, "
					  "max_inbound_priority_frames_per_stream: 0, "
					  "max_inbound_window_update_frames_per_data_frame_sent: 2}",
					  &s, err, sizeof(err));
	CHECK(c != NULL);
	if (c) {
		CHECK_INT(c->h2.max_outbound_frames, 7);
		CHECK_INT(c->h2.max_outbound_control_frames, 3);
		CHECK_INT(c->h2.max_empty_frames, 0);
		CHECK_INT(c->h2.max_priority_per_stream, 0);
		CHECK_INT(c->h2.max_window_update_per_data, 2);
		CHECK_INT(c->max_requests_per_io_cycle, 0);
		test_bootstrap_done(s);
	}
	/* lowerCamelCase names too (proto3 JSON) */
	c = compile("", "http2_protocol_options: {maxOutboundFrames: 9}", &s, err, sizeof(err));
	CHECK(c && c->h2.max_outbound_frames == 9 && c->h2.max_outbound_control_frames == 1000);
	if (c)
		test_bootstrap_done(s);
}

TEST(h2_flood_options_validated)
{
	char err[1024];
	struct snapshot *s;
	CHECK(!compile("", "http2_protocol_options: {max_outbound_frames: 0}", &s, err, sizeof(err)));
	CHECK_CONTAINS(err, "http2_protocol_options.max_outbound_frames: must be >= 1");
	CHECK(!compile("", "http2_protocol_options: {max_outbound_control_frames: 0}", &s, err,
		       sizeof(err)));
	CHECK_CONTAINS(err, "http2_protocol_options.max_outbound_control_frames: must be >= 1");
	CHECK(!compile("", "http2_protocol_options: "
		       "{max_inbound_window_update_frames_per_data_frame_sent: 0}", &s, err, sizeof(err)));
	CHECK_CONTAINS(err, "max_inbound_window_update_frames_per_data_frame_sent: must be >= 1");
	CHECK(!compile("", "http2_protocol_options: {max_outbound_frames: -1}", &s, err, sizeof(err)));
	CHECK_CONTAINS(err, "http2_protocol_options.max_outbound_frames");
}

TEST(max_requests_per_io_cycle_runtime_key)
{
	char err[1024];
	struct snapshot *s;
	const struct hcm_cfg *c = compile(
		"layered_runtime:\n  layers:\n  - name: a\n    static_layer: {http: {max_requests_per_io_cycle: 1}}\n",
		"", &s, err, sizeof(err));
	CHECK(c != NULL);
	if (c) {
		CHECK_INT(c->max_requests_per_io_cycle, 1);
		test_bootstrap_done(s);
	}
	/* flattened key, a later layer wins */
	c = compile("layered_runtime:\n  layers:\n  - name: a\n    static_layer: {http.max_requests_per_io_cycle: 4}\n"
		    "  - name: b\n    static_layer: {http.max_requests_per_io_cycle: 7}\n",
		    "", &s, err, sizeof(err));
	CHECK(c && c->max_requests_per_io_cycle == 7);
	if (c)
		test_bootstrap_done(s);
	CHECK(!compile("layered_runtime:\n  layers:\n  - name: a\n    static_layer: {http.max_requests_per_io_cycle: x}\n",
		       "", &s, err, sizeof(err)));
	CHECK_CONTAINS(err, "'http.max_requests_per_io_cycle' must be a non-negative integer");
}
