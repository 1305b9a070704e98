/* h1_parser_fuzz.c - libFuzzer target for the HTTP/1 codec.
 *
 * Build (from the repository root):
 *   clang-14 -std=gnu11 -g -O1 -fsanitize=fuzzer,address,undefined -D_GNU_SOURCE -I. \
 *     tests/fuzz/h1_parser_fuzz.c proxy/http/h1_parser.c proxy/http/headers.c \
 *     proxy/common.c $(pkg-config --cflags --libs libevent) -o h1_parser_fuzz
 *   ./h1_parser_fuzz -max_total_time=20 tests/fuzz/corpus/h1_parser
 *
 * Besides "no crash", it checks properties:
 *  - h1_head_end fed in pieces agrees with one call on the whole input;
 *  - a head the parser accepts, once re-encoded, parses again to the same
 *    method/path/authority/status, body kind and upgrade flag;
 *  - the chunked decoder gives the same payload, consumed length and verdict
 *    whether fed whole, byte by byte or in 7-byte pieces. */
#include "proxy/http/h1_parser.h"

#include <event2/buffer.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define PROP(cond) do { if (!(cond)) { fprintf(stderr, "property failed: %s (line %d)\n", \
	#cond, __LINE__); abort(); } } while (0)

static const struct h1_limits lim = { .max_head_bytes = 4096, .max_headers = 64 };

static long head_end_pieces(const char *buf, size_t len, size_t step)
{
	struct h1_scan s = { 0 };
	for (size_t n = step < len ? step : len;; n = n + step < len ? n + step : len) {
		long r = h1_head_end(&s, buf, n, lim.max_head_bytes);
		if (r != 0 || n == len)
			return r;
	}
}

static bool same_field(const struct http_headers *a, const struct http_headers *b, const char *name)
{
	size_t al = 0, bl = 0;
	const char *av = hdrs_get(a, name, &al), *bv = hdrs_get(b, name, &bl);
	if (!av || !bv)
		return !av && !bv;
	return al == bl && memcmp(av, bv, al) == 0;
}

static void round_trip(enum h1_type type, unsigned flags, const struct h1_head *h)
{
	/* An HTTP/1.0 request may lack Host; the encoder speaks 1.1, which
	 * needs one, so the router must supply :authority first. */
	if (type == H1_REQUEST && !hdrs_get(&h->hdrs, ":authority", NULL))
		return;
	struct evbuffer *b = evbuffer_new();
	PROP(b != NULL);
	bool chunked = h->body == H1_BODY_CHUNKED;
	if (type == H1_REQUEST)
		h1_encode_request(b, &h->hdrs, chunked, h->keep_alive, h->upgrade);
	else
		h1_encode_response(b, &h->hdrs, h->version_minor, chunked, h->keep_alive, h->upgrade);
	size_t n = evbuffer_get_length(b);
	const char *p = (const char *)evbuffer_pullup(b, -1);

	struct h1_scan s = { 0 };
	struct h1_limits big = { .max_head_bytes = 1 << 20, .max_headers = 1 << 16 };
	long end = h1_head_end(&s, p, n, big.max_head_bytes);
	PROP(end == (long)n);
	struct h1_head r;
	struct h1_error e = { 0, NULL };
	hdrs_init(&r.hdrs);
	int rc = h1_parse_head(type, p, n, flags, &big, &r, &e);
	if (rc != RM_OK)
		fprintf(stderr, "re-parse failed: %d %s\n%.*s", e.status, e.reason, (int)n, p);
	PROP(rc == RM_OK);
	PROP(r.body == h->body);
	PROP(r.upgrade == h->upgrade);
	if (!h->upgrade)
		PROP(r.keep_alive == h->keep_alive);
	if (h->body == H1_BODY_LENGTH)
		PROP(r.content_length == h->content_length);
	if (type == H1_REQUEST) {
		PROP(r.connect == h->connect);
		/* The encoder speaks 1.1: a 1.0 request's ignored Expect becomes live. */
		if (h->version_minor == 1)
			PROP(r.expect_continue == h->expect_continue);
		PROP(same_field(&h->hdrs, &r.hdrs, ":method"));
		PROP(same_field(&h->hdrs, &r.hdrs, ":authority"));
		PROP(same_field(&h->hdrs, &r.hdrs, ":path"));
	} else {
		PROP(r.status == h->status);
	}
	hdrs_free(&r.hdrs);
	evbuffer_free(b);
}

static void parse_one(enum h1_type type, unsigned flags, const char *buf, size_t len)
{
	struct h1_head h;
	struct h1_error e = { 0, NULL };
	hdrs_init(&h.hdrs);
	int rc = h1_parse_head(type, buf, len, flags, &lim, &h, &e);
	if (rc == RM_OK) {
		round_trip(type, flags, &h);
	} else {
		PROP(rc == RM_ERROR && e.reason != NULL);
		PROP(type == H1_REQUEST ? (e.status >= 400 && e.status <= 505) : e.status == 502);
	}
	hdrs_free(&h.hdrs);
}

struct chunk_result {
	long rc;         /* consumed bytes or RM_ERROR */
	const char *reason;
	size_t plen;
	char *payload;   /* owned */
	uint32_t ntrailers;
};

static void chunked_run(const char *in, size_t len, size_t step, struct chunk_result *res)
{
	struct h1_chunked c;
	struct h1_error e = { 0, NULL };
	h1_chunked_init(&c, &lim);
	res->payload = xmalloc(len + 1);
	res->plen = 0;
	res->reason = NULL;
	size_t pos = 0;
	long rc = 0;
	while (pos < len && !c.done) {
		size_t n = len - pos < step ? len - pos : step;
		size_t off = 0, dl = 0;
		rc = h1_chunked_feed(&c, in + pos, n, &off, &dl, &e);
		if (rc < 0)
			break;
		PROP((size_t)rc <= n);
		if (dl) {
			PROP(off + dl == (size_t)rc);
			memcpy(res->payload + res->plen, in + pos + off, dl);
			res->plen += dl;
		}
		if (rc == 0) {
			PROP(c.done);
			break;
		}
		pos += (size_t)rc;
	}
	if (rc < 0) {
		PROP(rc == RM_ERROR && e.reason != NULL);
		res->rc = RM_ERROR;
		res->reason = e.reason;
	} else {
		res->rc = (long)pos;
	}
	res->ntrailers = c.done ? c.trailers.n : 0;
	h1_chunked_free(&c);
}

static void chunked_check(const char *in, size_t len)
{
	struct chunk_result a, b, c;
	chunked_run(in, len, len ? len : 1, &a);
	chunked_run(in, len, 1, &b);
	chunked_run(in, len, 7, &c);
	PROP(a.rc == b.rc && a.rc == c.rc);
	PROP(a.plen == b.plen && a.plen == c.plen);
	PROP(memcmp(a.payload, b.payload, a.plen) == 0 && memcmp(a.payload, c.payload, a.plen) == 0);
	PROP(a.ntrailers == b.ntrailers && a.ntrailers == c.ntrailers);
	if (a.rc < 0)
		PROP(!strcmp(a.reason, b.reason) && !strcmp(a.reason, c.reason));
	xfree(a.payload);
	xfree(b.payload);
	xfree(c.payload);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	unsigned flags = data[0] & (H1_F_REQ_HEAD | H1_F_REQ_CONNECT);
	size_t step = (size_t)(data[0] >> 2) + 1;
	const char *buf = (const char *)data + 1;
	size_t len = size - 1;

	long whole = head_end_pieces(buf, len, len ? len : 1);
	long pieces = head_end_pieces(buf, len, step);
	PROP(whole == pieces);
	PROP(whole <= (long)len && whole <= (long)lim.max_head_bytes);

	if (whole > 0) {
		parse_one(H1_REQUEST, 0, buf, (size_t)whole);
		parse_one(H1_RESPONSE, flags, buf, (size_t)whole);
		chunked_check(buf + whole, len - (size_t)whole);
	} else {
		/* Contract-breaking callers must not crash the parser either. */
		parse_one(H1_REQUEST, 0, buf, len);
		chunked_check(buf, len);
	}
	return 0;
}
