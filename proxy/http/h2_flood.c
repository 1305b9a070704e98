/* h2_flood.c - see h2_flood.h. */
#include "h2_flood.h"

#include <stdlib.h>
#include <string.h>
#include <event2/buffer.h>
#include "proxy/common.h"

#define CTL_BIT (1ull << 63)

enum { F_DATA = 0, F_HEADERS = 1, F_PRIORITY = 2, F_WINDOW_UPDATE = 8, F_CONTINUATION = 9 };
enum { FL_END_STREAM = 0x1, FL_PADDED = 0x8, FL_PRIORITY = 0x20 };

void h2_flood_init(struct h2_flood *f)
{
	memset(f, 0, sizeof(*f));
	f->ring = f->ring_inline;
	f->cap = H2_FLOOD_RING_INLINE;
}

void h2_flood_free(struct h2_flood *f)
{
	if (f->ring != f->ring_inline)
		free(f->ring);
	f->ring = f->ring_inline;
	f->cap = H2_FLOOD_RING_INLINE;
	f->n = f->nctl = f->head = 0;
}

enum h2_flood_kind h2_flood_inbound(struct h2_flood *f, const struct h2_options *o,
				    uint8_t type, uint8_t flags, size_t length)
{
	size_t overhead = 0;
	bool end_stream = false;

	switch (type) {
	case F_HEADERS:
		if (flags & FL_PRIORITY)
			overhead += 5;
		/* fall through */
	case F_DATA:
		if (flags & FL_PADDED)
			overhead += 1;   /* the pad length; padding itself counts as payload */
		end_stream = flags & FL_END_STREAM;
		/* fall through */
	case F_CONTINUATION:
		if (length <= overhead && !end_stream) {
			if (++f->consecutive_empty > o->max_empty_frames)
				return H2_FLOOD_EMPTY;
		} else {
			f->consecutive_empty = 0;
		}
		return H2_FLOOD_NONE;
	case F_PRIORITY:
		f->priority_frames++;
		if (f->priority_frames > (uint64_t)o->max_priority_per_stream * (1 + f->opened_streams))
			return H2_FLOOD_PRIORITY;
		return H2_FLOOD_NONE;
	case F_WINDOW_UPDATE:
		f->window_update_frames++;
		if (f->window_update_frames >
		    5 + 2 * (f->opened_streams + (uint64_t)o->max_window_update_per_data * f->data_frames_sent))
			return H2_FLOOD_WINDOW_UPDATE;
		return H2_FLOOD_NONE;
	default:
		return H2_FLOOD_NONE;
	}
}

void h2_flood_sent(struct h2_flood *f, size_t len, uint8_t type)
{
	bool ctl = h2_flood_is_control(type);
	if (type == F_DATA)
		f->data_frames_sent++;
	f->added += len;
	if (f->n == f->cap) {
		/* only while the peer leaves frames unread: bounded by the limit
		 * (the connection is closed past it) and the output buffer limit */
		uint64_t *r = xmalloc(2 * (size_t)f->cap * sizeof(*r));
		for (uint32_t i = 0; i < f->n; i++)
			r[i] = f->ring[(f->head + i) % f->cap];
		if (f->ring != f->ring_inline)
			free(f->ring);
		f->ring = r;
		f->head = 0;
		f->cap *= 2;
	}
	f->ring[(f->head + f->n) % f->cap] = f->added | (ctl ? CTL_BIT : 0);
	f->n++;
	f->nctl += ctl;
}

void h2_flood_written(struct h2_flood *f, size_t unwritten)
{
	uint64_t written = f->added - unwritten;
	while (f->n) {
		uint64_t e = f->ring[f->head];
		if ((e & ~CTL_BIT) > written)
			break;
		f->released_end = e & ~CTL_BIT;
		f->nctl -= (e & CTL_BIT) != 0;
		f->head = (f->head + 1) % f->cap;
		f->n--;
	}
}

enum h2_flood_kind h2_flood_outbound(const struct h2_flood *f, const struct h2_options *o,
				     size_t queued, size_t queued_ctl)
{
	if (f->n + queued > o->max_outbound_frames)
		return H2_FLOOD_OUTBOUND;
	if (f->nctl + queued_ctl > o->max_outbound_control_frames)
		return H2_FLOOD_OUTBOUND_CONTROL;
	return H2_FLOOD_NONE;
}

size_t h2_flood_partial(const struct h2_flood *f, size_t unwritten)
{
	uint64_t written = f->added - unwritten;
	if (!f->n || written <= f->released_end)
		return 0;
	return (size_t)((f->ring[f->head] & ~CTL_BIT) - written);
}

size_t h2_flood_goaway(struct h2_flood *f, enum h2_flood_kind k, struct evbuffer *out,
		       uint32_t last_stream_id)
{
	/* GOAWAY: length 8, type 7, no flags, stream 0; last stream id, error */
	uint8_t g[17] = { 0, 0, 8, 7, 0, 0, 0, 0, 0 };
	if (k == H2_FLOOD_OUTBOUND || k == H2_FLOOD_OUTBOUND_CONTROL) {
		size_t len = evbuffer_get_length(out);
		h2_flood_written(f, len);
		size_t keep = h2_flood_partial(f, len);
		if (keep < len) {
			struct evbuffer *head = evbuffer_new();
			evbuffer_remove_buffer(out, head, keep);
			evbuffer_drain(out, evbuffer_get_length(out));
			evbuffer_add_buffer(out, head);
			evbuffer_free(head);
		}
	}
	last_stream_id &= 0x7fffffffu;
	g[9] = (uint8_t)(last_stream_id >> 24);
	g[10] = (uint8_t)(last_stream_id >> 16);
	g[11] = (uint8_t)(last_stream_id >> 8);
	g[12] = (uint8_t)last_stream_id;
	g[16] = 0x0b;   /* ENHANCE_YOUR_CALM */
	evbuffer_add(out, g, sizeof(g));
	return sizeof(g);
}
