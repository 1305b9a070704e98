/* h2_flood.h - Envoy's HTTP/2 flood limits (http2_protocol_options
 * max_outbound_frames, max_outbound_control_frames,
 * max_consecutive_inbound_frames_with_empty_payload,
 * max_inbound_priority_frames_per_stream,
 * max_inbound_window_update_frames_per_data_frame_sent) for both HTTP/2
 * codecs: the downstream one (filters/network/http_connection_manager/
 * h2_codec.c) and the upstream client (proxy/upstream/h2_client.c).  Kept
 * free of nghttp2 and sockets so it can be unit-tested.
 *
 * Inbound: h2_flood_inbound() is called with every frame header the peer
 * sends (nghttp2's on_begin_frame) and applies Envoy's rules:
 *  - consecutive DATA / HEADERS / CONTINUATION frames with an empty payload
 *    and no END_STREAM: more than max_empty in a row;
 *  - PRIORITY frames: more than max_priority_per_stream * (1 + opened streams);
 *    "opened streams" are the streams the peer opened (downstream: request
 *    HEADERS) or that we opened (upstream: requests sent), as Envoy counts
 *    them in its server and client codecs;
 *  - WINDOW_UPDATE frames: more than
 *    5 + 2 * (opened streams + max_window_update_per_data * DATA frames sent).
 * Outbound: every frame handed to the connection's output buffer is
 * recorded (its end offset in a ring) until the socket took it;
 * h2_flood_outbound() compares those, plus the frames the caller says are
 * still queued inside the codec, against max_outbound_frames and
 * max_outbound_control_frames (PING, SETTINGS, RST_STREAM).
 *
 * Cost: a few integer operations per frame; the ring lives in the struct
 * (16 entries) and grows on the heap only while a peer leaves more frames
 * unread, up to the limit, after which the connection is closed. */
#ifndef REMORA_HTTP_H2_FLOOD_H
#define REMORA_HTTP_H2_FLOOD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "h2_options.h"

/* Which limit a connection exceeded (0: none).  The order is the order of
 * the counters in H2_FLOOD_STATS (below). */
enum h2_flood_kind {
	H2_FLOOD_NONE,
	H2_FLOOD_OUTBOUND,           /* http2.outbound_flood */
	H2_FLOOD_OUTBOUND_CONTROL,   /* http2.outbound_control_flood */
	H2_FLOOD_EMPTY,              /* http2.inbound_empty_frames_flood */
	H2_FLOOD_PRIORITY,           /* http2.inbound_priority_frames_flood */
	H2_FLOOD_WINDOW_UPDATE,      /* http2.inbound_window_update_frames_flood */
	H2_FLOOD_CONTINUATION,       /* http2.inbound_continuation_frames_flood (Remora) */
};

/* The counters of the limits, in enum h2_flood_kind order: both codecs'
 * stat lists include them as one run, so kind k counts in stat
 * outbound_flood + (k - H2_FLOOD_OUTBOUND) of either (h2_flood_stat()). */
#define H2_FLOOD_STATS(X)                                                         \
	X(COUNTER, outbound_flood) X(COUNTER, outbound_control_flood)             \
	X(COUNTER, inbound_empty_frames_flood) X(COUNTER, inbound_priority_frames_flood) \
	X(COUNTER, inbound_window_update_frames_flood)                            \
	X(COUNTER, inbound_continuation_frames_flood)
#define h2_flood_stat(first, k) ((first) + (int)(k) - (int)H2_FLOOD_OUTBOUND)

#define H2_FLOOD_RING_INLINE 16

struct h2_flood {
	uint64_t opened_streams;         /* streams opened (requests received or sent) */
	uint64_t priority_frames;        /* PRIORITY frames received */
	uint64_t window_update_frames;   /* WINDOW_UPDATE frames received */
	uint64_t data_frames_sent;       /* DATA frames handed to the output */
	uint32_t consecutive_empty;      /* empty DATA/HEADERS/CONTINUATION in a row */
	/* Outbound frames not written to the socket yet: ring[(head + i) % cap]
	 * is the end offset (in bytes ever appended, `added`) of the i-th
	 * oldest, bit 63 set for a control frame. */
	uint64_t added;                  /* bytes ever appended to the output */
	uint64_t released_end;           /* end offset of the newest written frame */
	uint64_t *ring;                  /* ring_inline or owned heap array [cap] */
	uint32_t cap, head, n, nctl;     /* nctl: control frames among the n */
	uint64_t ring_inline[H2_FLOOD_RING_INLINE];
};

void h2_flood_init(struct h2_flood *f);
void h2_flood_free(struct h2_flood *f);      /* the ring, if on the heap */

/* A frame header received from the peer; H2_FLOOD_NONE or the limit it
 * exceeded.  type/flags/length as on the wire (length includes padding). */
enum h2_flood_kind h2_flood_inbound(struct h2_flood *f, const struct h2_options *o,
				    uint8_t type, uint8_t flags, size_t length);
/* A request opened a new stream (received by a server, sent by a client). */
static inline void h2_flood_stream_opened(struct h2_flood *f) { f->opened_streams++; }

/* A frame of `len` bytes (header included) of `type` was appended to the
 * output buffer. */
void h2_flood_sent(struct h2_flood *f, size_t len, uint8_t type);
/* The output buffer now holds `unwritten` bytes: forget the frames the
 * socket has taken. */
void h2_flood_written(struct h2_flood *f, size_t unwritten);
/* Compare the frames in the output buffer plus `queued` frames still in the
 * codec (of which `queued_ctl` control frames) against the outbound limits. */
enum h2_flood_kind h2_flood_outbound(const struct h2_flood *f, const struct h2_options *o,
				     size_t queued, size_t queued_ctl);
/* Bytes at the head of an output buffer of `unwritten` bytes that belong to
 * a frame the socket has partly taken (they must still be sent so the peer
 * sees whole frames); 0 when the head is a frame boundary. */
size_t h2_flood_partial(const struct h2_flood *f, size_t unwritten);

struct evbuffer;
/* The connection exceeded limit k: end `out` (its output buffer) with
 * GOAWAY(last_stream_id, ENHANCE_YOUR_CALM).  For an outbound flood the
 * peer does not read, so what it has not started to receive is dropped
 * first and the GOAWAY follows the last whole frame.  Returns the bytes
 * appended (the GOAWAY frame). */
size_t h2_flood_goaway(struct h2_flood *f, enum h2_flood_kind k, struct evbuffer *out,
		       uint32_t last_stream_id);

/* Is this frame type a control frame for max_outbound_control_frames? */
static inline bool h2_flood_is_control(uint8_t type)
{
	return type == 3 /* RST_STREAM */ || type == 4 /* SETTINGS */ || type == 6 /* PING */;
}

#endif
