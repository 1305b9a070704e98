/* grpc_stats: the gRPC message-prefix walker (reached by including the .c). */
#include "test.h"
#include "filters/http/grpc_stats/grpc_stats.c"

static void add_msg(struct evbuffer *b, size_t len)
{
	uint8_t h[5] = { 0, (uint8_t)(len >> 24), (uint8_t)(len >> 16), (uint8_t)(len >> 8),
			 (uint8_t)len };
	evbuffer_add(b, h, 5);
	for (size_t i = 0; i < len; i++)
		evbuffer_add(b, "x", 1);
}

TEST(grpc_walk_counts_messages_across_chunks)
{
	struct evbuffer *all = evbuffer_new(), *part = evbuffer_new();
	struct msg_walk w = { 0 };
	add_msg(all, 3);
	add_msg(all, 0);
	add_msg(all, 70000);
	add_msg(all, 1);
	size_t tot = evbuffer_get_length(all);
	CHECK_INT(walk(&w, all), 4);
	/* the same stream fed byte-split at awkward places counts the same */
	struct msg_walk w2 = { 0 };
	uint64_t n = 0;
	size_t cuts[] = { 1, 4, 2, 7, 69990, 13, 9 };
	size_t off = 0;
	for (size_t i = 0; off < tot; i++) {
		size_t k = i < sizeof(cuts) / sizeof(cuts[0]) ? cuts[i] : tot - off;
		if (k > tot - off)
			k = tot - off;
		evbuffer_drain(part, evbuffer_get_length(part));
		evbuffer_remove_buffer(all, part, k);
		n += walk(&w2, part);
		off += k;
	}
	CHECK_INT(n, 4);
	CHECK_INT(w2.left, 0);
	CHECK_INT(w2.hdr, 0);
	evbuffer_free(all);
	evbuffer_free(part);
}
