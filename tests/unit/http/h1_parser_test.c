/* h1_parser_test.c - HTTP/1.x head parser, chunked decoder, encoders. */
#include "test.h"
#include "proxy/http/h1_parser.h"

#include <event2/buffer.h>

static const struct h1_limits lim = { .max_head_bytes = 8192, .max_headers = 100 };

/* Measure with h1_head_end, then parse.  Returns the parse result, or -100
 * if h1_head_end did not find a complete head. */
static int parse_msg(enum h1_type type, const char *raw, unsigned flags,
		     const struct h1_limits *l, struct h1_head *h, struct h1_error *e)
{
	struct h1_scan s = { 0 };
	hdrs_init(&h->hdrs);
	long n = h1_head_end(&s, raw, strlen(raw), l->max_head_bytes);
	if (n <= 0)
		return -100;
	return h1_parse_head(type, raw, (size_t)n, flags, l, h, e);
}

static int parse_req(const char *raw, struct h1_head *h)
{
	struct h1_error e = { 0, NULL };
	int rc = parse_msg(H1_REQUEST, raw, 0, &lim, h, &e);
	if (rc != RM_OK)
		fprintf(stderr, "  parse_req: rc %d status %d reason %s\n", rc, e.status,
			e.reason ? e.reason : "-");
	return rc;
}

static int parse_resp(const char *raw, unsigned flags, struct h1_head *h)
{
	struct h1_error e = { 0, NULL };
	int rc = parse_msg(H1_RESPONSE, raw, flags, &lim, h, &e);
	if (rc != RM_OK)
		fprintf(stderr, "  parse_resp: rc %d status %d reason %s\n", rc, e.status,
			e.reason ? e.reason : "-");
	return rc;
}

/* Parse expecting a rejection: checks rc, status and reason. */
#define EXPECT_ERR(type, raw, st, rsn) do {                                    \
	struct h1_head _h;                                                    \
	struct h1_error _e = { 0, NULL };                                     \
	int _rc = parse_msg((type), (raw), 0, &lim, &_h, &_e);                \
	CHECK_INT(_rc, RM_ERROR);                                             \
	CHECK_INT(_e.status, (st));                                           \
	CHECK_STR(_e.reason, (rsn));                                          \
	hdrs_free(&_h.hdrs);                                                  \
} while (0)
#define REQ_ERR(raw, st, rsn) EXPECT_ERR(H1_REQUEST, raw, st, rsn)
#define RESP_ERR(raw, rsn) EXPECT_ERR(H1_RESPONSE, raw, 502, rsn)

#define GET(h, name) hdrs_get(&(h)->hdrs, (name), NULL)

/* ---- h1_head_end --------------------------------------------------------- */

TEST(head_end_whole_and_pipelined)
{
	const char *two = "GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n";
	struct h1_scan s = { 0 };
	long n = h1_head_end(&s, two, strlen(two), 8192);
	CHECK_INT(n, 28);
	CHECK(memcmp(two + n, "GET /b", 6) == 0);
	/* Asking again with the same bytes gives the same answer. */
	CHECK_INT(h1_head_end(&s, two, strlen(two), 8192), 28);
	/* The second head, measured from its own start. */
	struct h1_scan s2 = { 0 };
	CHECK_INT(h1_head_end(&s2, two + n, strlen(two) - (size_t)n, 8192), 28);
}

TEST(head_end_one_byte_at_a_time)
{
	const char *req = "POST /upload HTTP/1.1\r\nHost: example.com\r\nContent-Length: 3\r\n\r\nabc";
	size_t head = strlen(req) - 3;
	struct h1_scan s = { 0 };
	long got = 0;
	size_t at = 0;
	for (size_t len = 1; len <= strlen(req); len++) {
		got = h1_head_end(&s, req, len, 8192);
		if (got) {
			at = len;
			break;
		}
	}
	CHECK_INT(got, (long)head);
	CHECK_INT(at, head); /* found exactly when the last LF arrived */
}

TEST(head_end_scans_each_byte_once)
{
	char buf[300];
	memset(buf, 'a', sizeof(buf));
	memcpy(buf, "GET /", 5);
	struct h1_scan s = { 0 };
	CHECK_INT(h1_head_end(&s, buf, 100, 8192), 0);
	CHECK_INT(s.scanned, 100); /* resumes at byte 100, not at the line start */
	CHECK_INT(h1_head_end(&s, buf, 300, 8192), 0);
	CHECK_INT(s.scanned, 300);
}

TEST(head_end_leading_crlf_and_limits)
{
	const char *req = "\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n";
	struct h1_scan s = { 0 };
	CHECK_INT(h1_head_end(&s, req, strlen(req), 8192), (long)strlen(req));
	struct h1_head h;
	CHECK_INT(parse_req(req, &h), RM_OK);
	CHECK_STR(GET(&h, ":path"), "/");
	hdrs_free(&h.hdrs);

	/* Over the limit without an end: -1.  Exactly at the limit: fine. */
	const char *small = "GET / HTTP/1.1\r\nHost: a\r\n\r\n"; /* 27 bytes */
	struct h1_scan a = { 0 }, b = { 0 }, c = { 0 };
	CHECK_INT(h1_head_end(&a, small, strlen(small), 27), 27);
	CHECK_INT(h1_head_end(&b, small, strlen(small), 26), -1);
	CHECK_INT(h1_head_end(&c, small, 20, 26), 0); /* not over yet */
}

TEST(head_end_sees_bare_lf_heads)
{
	/* A bare-LF head still ends, so the parser can reject it (not 431). */
	const char *req = "GET / HTTP/1.1\nHost: a\n\n";
	struct h1_scan s = { 0 };
	CHECK_INT(h1_head_end(&s, req, strlen(req), 8192), (long)strlen(req));
	REQ_ERR(req, 400, "bare_lf");
	REQ_ERR("GET / HTTP/1.1\r\nHost: a\n\r\n", 400, "bare_lf");
	REQ_ERR("GET / HTTP/1.1\r\nHost: a\r\n\n", 400, "bare_lf");
}

/* ---- valid requests ------------------------------------------------------ */

TEST(req_simple_get)
{
	struct h1_head h;
	CHECK_INT(parse_req("GET /index.html?q=1 HTTP/1.1\r\nHost: Example.com\r\n"
			    "User-Agent: curl/8.0\r\nAccept:  */*  \r\n\r\n", &h), RM_OK);
	CHECK_STR(GET(&h, ":method"), "GET");
	CHECK_STR(GET(&h, ":path"), "/index.html?q=1");
	CHECK_STR(GET(&h, ":authority"), "Example.com");
	CHECK(GET(&h, ":scheme") == NULL);
	CHECK(GET(&h, "host") == NULL);
	CHECK_STR(GET(&h, "user-agent"), "curl/8.0");
	CHECK_STR(GET(&h, "accept"), "*/*"); /* OWS trimmed */
	CHECK_INT(h.version_minor, 1);
	CHECK(h.keep_alive);
	CHECK_INT(h.body, H1_BODY_NONE);
	CHECK(!h.upgrade && !h.connect && !h.expect_continue);
	/* Pseudo-headers first. */
	CHECK_STR(hdrs_name(&h.hdrs, 0), ":method");
	CHECK(hdrs_name(&h.hdrs, 1)[0] == ':' && hdrs_name(&h.hdrs, 2)[0] == ':');
	CHECK_STR(hdrs_name(&h.hdrs, 3), "user-agent");
	CHECK_INT(h.hdrs.n, 5);
	hdrs_free(&h.hdrs);
}

TEST(req_post_content_length_and_chunked)
{
	struct h1_head h;
	CHECK_INT(parse_req("POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\n", &h), RM_OK);
	CHECK_INT(h.body, H1_BODY_LENGTH);
	CHECK_INT(h.content_length, 11);
	CHECK_STR(GET(&h, "content-length"), "11");
	hdrs_free(&h.hdrs);

	CHECK_INT(parse_req("POST /p HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n", &h), RM_OK);
	CHECK_INT(h.body, H1_BODY_CHUNKED);
	CHECK(GET(&h, "transfer-encoding") == NULL);
	hdrs_free(&h.hdrs);

	CHECK_INT(parse_req("POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n", &h), RM_OK);
	CHECK_INT(h.body, H1_BODY_NONE);
	CHECK_STR(GET(&h, "content-length"), "0");
	hdrs_free(&h.hdrs);

	/* "chunked " and "\tchunked": OWS is trimmed, nothing else. */
	CHECK_INT(parse_req("POST /p HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\tchunked \r\n\r\n", &h), RM_OK);
	CHECK_INT(h.body, H1_BODY_CHUNKED);
	hdrs_free(&h.hdrs);
}

TEST(req_keep_alive_rules)
{
	struct h1_head h;
	CHECK_INT(parse_req("GET / HTTP/1.0\r\n\r\n", &h), RM_OK);
	CHECK_INT(h.version_minor, 0);
	CHECK(!h.keep_alive);
	CHECK(GET(&h, ":authority") == NULL); /* Host is optional in 1.0 */
	hdrs_free(&h.hdrs);

	CHECK_INT(parse_req("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", &h), RM_OK);
	CHECK(h.keep_alive);
	CHECK(GET(&h, "connection") == NULL);
	hdrs_free(&h.hdrs);

	CHECK_INT(parse_req("GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", &h), RM_OK);
	CHECK(!h.keep_alive);
	hdrs_free(&h.hdrs);

	CHECK_INT(parse_req("GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, CLOSE\r\n\r\n", &h), RM_OK);
	CHECK(!h.keep_alive); /* close wins */
	hdrs_free(&h.hdrs);

	/* HTTP/1.2 is answered as 1.1. */
	CHECK_INT(parse_req("GET / HTTP/1.2\r\nHost: a\r\n\r\n", &h), RM_OK);
	CHECK_INT(h.version_minor, 1);
	CHECK(h.keep_alive);
	hdrs_free(&h.hdrs);
}

TEST(req_hop_by_hop_removed)
{
	struct h1_head h;
	CHECK_INT(parse_req("GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, X-Secret\r\n"
			    "X-Secret: 1\r\nKeep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\n"
			    "TE: gzip\r\nX-Kept: yes\r\nx-secret: 2\r\n\r\n", &h), RM_OK);
	CHECK(GET(&h, "connection") == NULL);
	CHECK(GET(&h, "x-secret") == NULL);
	CHECK(GET(&h, "keep-alive") == NULL);
	CHECK(GET(&h, "proxy-connection") == NULL);
	CHECK(GET(&h, "te") == NULL);
	CHECK_STR(GET(&h, "x-kept"), "yes");
	CHECK_INT(h.hdrs.n, 4); /* :method :path :authority x-kept */
	hdrs_free(&h.hdrs);

	/* TE: trailers survives (gRPC). */
	CHECK_INT(parse_req("POST /svc HTTP/1.1\r\nHost: a\r\nTE: trailers\r\nContent-Length: 1\r\n\r\n", &h), RM_OK);
	CHECK_STR(GET(&h, "te"), "trailers");
	hdrs_free(&h.hdrs);

	/* Connection cannot strip framing: the body must stay a body. */
	CHECK_INT(parse_req("POST / HTTP/1.1\r\nHost: a\r\nConnection: content-length, :path\r\n"
			    "Content-Length: 5\r\n\r\n", &h), RM_OK);
	CHECK_STR(GET(&h, "content-length"), "5");
	CHECK_STR(GET(&h, ":path"), "/");
	CHECK_INT(h.body, H1_BODY_LENGTH);
	hdrs_free(&h.hdrs);
}

TEST(req_absolute_form)
{
	struct h1_head h;
	CHECK_INT(parse_req("GET http://Backend.local:8080/a/b?c=d HTTP/1.1\r\nHost: ignored.example\r\n\r\n", &h), RM_OK);
	CHECK_STR(GET(&h, ":scheme"), "http");
	CHECK_STR(GET(&h, ":authority"), "Backend.local:8080");
	CHECK_STR(GET(&h, ":path"), "/a/b?c=d");
	CHECK(GET(&h, "host") == NULL);
	CHECK_INT(hdrs_find(&h.hdrs, ":authority", 10, 0) >= 0 &&
		  hdrs_find(&h.hdrs, ":authority", 10, hdrs_find(&h.hdrs, ":authority", 10, 0) + 1) < 0, 1);
	hdrs_free(&h.hdrs);

	CHECK_INT(parse_req("GET HTTPS://h?x=1 HTTP/1.1\r\nHost: h\r\n\r\n", &h), RM_OK);
	CHECK_STR(GET(&h, ":scheme"), "https");
	CHECK_STR(GET(&h, ":path"), "/?x=1");
	hdrs_free(&h.hdrs);

	CHECK_INT(parse_req("GET http://h HTTP/1.1\r\nHost: h\r\n\r\n", &h), RM_OK);
	CHECK_STR(GET(&h, ":path"), "/");
	hdrs_free(&h.hdrs);
}

TEST(req_connect_and_options)
{
	struct h1_head h;
	CHECK_INT(parse_req("CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n", &h), RM_OK);
	CHECK(h.connect);
	CHECK_STR(GET(&h, ":method"), "CONNECT");
	CHECK_STR(GET(&h, ":authority"), "example.com:443");
	CHECK(GET(&h, ":path") == NULL);
	CHECK_INT(h.body, H1_BODY_NONE);
	hdrs_free(&h.hdrs);

	CHECK_INT(parse_req("CONNECT [::1]:8443 HTTP/1.1\r\nHost: x\r\n\r\n", &h), RM_OK);
	CHECK_STR(GET(&h, ":authority"), "[::1]:8443");
	hdrs_free(&h.hdrs);

	CHECK_INT(parse_req("OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n", &h), RM_OK);
	CHECK_STR(GET(&h, ":path"), "*");
	CHECK(!h.connect);
	hdrs_free(&h.hdrs);

	REQ_ERR("GET * HTTP/1.1\r\nHost: a\r\n\r\n", 400, "invalid_target");
	REQ_ERR("CONNECT / HTTP/1.1\r\nHost: a\r\n\r\n", 400, "invalid_target");
	REQ_ERR("CONNECT example.com HTTP/1.1\r\nHost: a\r\n\r\n", 400, "invalid_target");
	REQ_ERR("CONNECT http://example.com:443/ HTTP/1.1\r\nHost: a\r\n\r\n", 400, "invalid_target");
	REQ_ERR("GET example.com:443 HTTP/1.1\r\nHost: a\r\n\r\n", 400, "invalid_target");
}

TEST(req_upgrade_and_expect)
{
	struct h1_head h;
	CHECK_INT(parse_req("GET /chat HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n"
			    "Connection: Upgrade\r\nSec-WebSocket-Key: abc\r\n\r\n", &h), RM_OK);
	CHECK(h.upgrade);
	CHECK_STR(GET(&h, "upgrade"), "websocket");
	CHECK(GET(&h, "connection") == NULL);
	CHECK_STR(GET(&h, "sec-websocket-key"), "abc");
	hdrs_free(&h.hdrs);

	/* Other Connection tokens must not take the upgrade field with them. */
	CHECK_INT(parse_req("GET /chat HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n"
			    "Connection: x-foo, upgrade\r\nX-Foo: 1\r\n\r\n", &h), RM_OK);
	CHECK(h.upgrade);
	CHECK_STR(GET(&h, "upgrade"), "websocket");
	CHECK(GET(&h, "x-foo") == NULL);
	hdrs_free(&h.hdrs);

	/* Upgrade without the Connection token: not an upgrade, header dropped. */
	CHECK_INT(parse_req("GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n", &h), RM_OK);
	CHECK(!h.upgrade);
	CHECK(GET(&h, "upgrade") == NULL);
	hdrs_free(&h.hdrs);

	CHECK_INT(parse_req("GET / HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\n\r\n", &h), RM_OK);
	CHECK(!h.upgrade);
	hdrs_free(&h.hdrs);

	CHECK_INT(parse_req("PUT /f HTTP/1.1\r\nHost: a\r\nExpect: 100-Continue\r\nContent-Length: 9\r\n\r\n", &h), RM_OK);
	CHECK(h.expect_continue);
	hdrs_free(&h.hdrs);

	/* HTTP/1.0 clients cannot expect 100-continue (RFC 9110 10.1.1). */
	CHECK_INT(parse_req("PUT /f HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 9\r\n\r\n", &h), RM_OK);
	CHECK(!h.expect_continue);
	hdrs_free(&h.hdrs);
}

TEST(req_values_and_methods)
{
	struct h1_head h;
	/* Any token is a method; HTAB and obs-text are legal inside values. */
	CHECK_INT(parse_req("M-SEARCH! /x HTTP/1.1\r\nHost: a\r\nX-V: a\tb \xc3\xa9\r\nX-Empty:\r\n\r\n", &h), RM_OK);
	CHECK_STR(GET(&h, ":method"), "M-SEARCH!");
	CHECK_STR(GET(&h, "x-v"), "a\tb \xc3\xa9");
	CHECK_STR(GET(&h, "x-empty"), "");
	hdrs_free(&h.hdrs);
}

/* ---- smuggling and malformed requests ------------------------------------ */

TEST(reject_content_length_variants)
{
	REQ_ERR("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
		400, "content_length_and_transfer_encoding");
	REQ_ERR("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
		400, "content_length_and_transfer_encoding");
	REQ_ERR("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 6\r\n\r\n", 400, "invalid_content_length");
	REQ_ERR("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
		400, "invalid_content_length");
	REQ_ERR("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", 400, "invalid_content_length");
	REQ_ERR("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\n", 400, "invalid_content_length");
	REQ_ERR("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: abc\r\n\r\n", 400, "invalid_content_length");
	REQ_ERR("POST / HTTP/1.1\r\nHost: a\r\nContent-Length:\r\n\r\n", 400, "invalid_content_length");
	REQ_ERR("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1 2\r\n\r\n", 400, "invalid_content_length");
	REQ_ERR("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x10\r\n\r\n", 400, "invalid_content_length");
	REQ_ERR("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5,\r\n\r\n", 400, "invalid_content_length");
	REQ_ERR("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999\r\n\r\n",
		400, "invalid_content_length");
	REQ_ERR("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 9223372036854775808\r\n\r\n",
		400, "invalid_content_length");
}

TEST(accept_identical_content_lengths)
{
	struct h1_head h;
	CHECK_INT(parse_req("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\n", &h), RM_OK);
	CHECK_INT(h.content_length, 5);
	CHECK_STR(GET(&h, "content-length"), "5");
	hdrs_free(&h.hdrs);

	CHECK_INT(parse_req("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 7\r\nContent-Length: 7\r\n\r\n", &h), RM_OK);
	CHECK_INT(h.content_length, 7);
	CHECK_INT(hdrs_find(&h.hdrs, "content-length", 14, hdrs_find(&h.hdrs, "content-length", 14, 0) + 1), -1);
	hdrs_free(&h.hdrs);

	CHECK_INT(parse_req("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 9223372036854775807\r\n\r\n", &h), RM_OK);
	CHECK(h.content_length == 9223372036854775807ull);
	hdrs_free(&h.hdrs);
}

TEST(reject_transfer_encoding_variants)
{
	REQ_ERR("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", 400, "invalid_transfer_encoding");
	/* unknown (well-formed) codings are not understood: 501, RFC 9112 6.1 */
	REQ_ERR("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n", 501, "unsupported_transfer_encoding");
	REQ_ERR("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity\r\n\r\n", 501, "unsupported_transfer_encoding");
	REQ_ERR("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", 501, "unsupported_transfer_encoding");
	/* a two-token line that is not "METHOD /path" is not a request line */
	REQ_ERR("HELLO THERE\r\n\r\n", 400, "invalid_request_line");
	REQ_ERR("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n", 400, "invalid_transfer_encoding");
	REQ_ERR("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked;q=1\r\n\r\n", 400, "invalid_transfer_encoding");
	REQ_ERR("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: \"chunked\"\r\n\r\n", 400, "invalid_transfer_encoding");
	REQ_ERR("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\r\n\r\n", 400, "invalid_transfer_encoding");
	REQ_ERR("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\x0b\r\n\r\n", 400, "invalid_header_value");
	REQ_ERR("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
		400, "invalid_transfer_encoding");
	/* Well-formed but a coding we do not implement: 501. */
	REQ_ERR("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501, "unsupported_transfer_encoding");
	REQ_ERR("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n",
		501, "unsupported_transfer_encoding");
	/* HTTP/1.0 has no transfer codings. */
	REQ_ERR("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400, "invalid_transfer_encoding");
}

TEST(reject_line_framing)
{
	REQ_ERR("GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n", 400, "obs_fold");
	REQ_ERR("GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n\tb\r\n\r\n", 400, "obs_fold");
	REQ_ERR("GET / HTTP/1.1\r\n Host: a\r\n\r\n", 400, "obs_fold");
	REQ_ERR("GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n", 400, "bare_cr");
	REQ_ERR("GET / HTTP/1.1\r\nHost: a\r\nX\r: b\r\n\r\n", 400, "bare_cr");
	REQ_ERR("GET / HTTP/1.1\r\nHost: a\r\nX: b\r\r\n\r\n", 400, "bare_cr");
	REQ_ERR("GET / HTTP/1.1\r\nHost: a\nX: b\r\n\r\n", 400, "bare_lf");
}

TEST(reject_bad_names_and_values)
{
	REQ_ERR("GET / HTTP/1.1\r\nHost: a\r\nX Y: z\r\n\r\n", 400, "invalid_header_name");
	REQ_ERR("GET / HTTP/1.1\r\nHost: a\r\nX : z\r\n\r\n", 400, "invalid_header_name");
	REQ_ERR("GET / HTTP/1.1\r\nHost: a\r\nX\t: z\r\n\r\n", 400, "invalid_header_name");
	REQ_ERR("GET / HTTP/1.1\r\nHost: a\r\n: z\r\n\r\n", 400, "invalid_header_name");
	REQ_ERR("GET / HTTP/1.1\r\nHost: a\r\nX@y: z\r\n\r\n", 400, "invalid_header_name");
	REQ_ERR("GET / HTTP/1.1\r\nHost: a\r\nNoColon\r\n\r\n", 400, "invalid_header_name");
	REQ_ERR("GET / HTTP/1.1\r\nHost: a\r\nX: a\x01z\r\n\r\n", 400, "invalid_header_value");
	REQ_ERR("GET / HTTP/1.1\r\nHost: a\r\nX: a\x7fz\r\n\r\n", 400, "invalid_header_value");
	REQ_ERR("GET / HTTP/1.1\r\nHost: a\r\nX: a\x1bz\r\n\r\n", 400, "invalid_header_value");
	REQ_ERR("G(T / HTTP/1.1\r\nHost: a\r\n\r\n", 400, "invalid_method");
	REQ_ERR(" GET / HTTP/1.1\r\nHost: a\r\n\r\n", 400, "invalid_method");
	REQ_ERR("GET\t/ HTTP/1.1\r\nHost: a\r\n\r\n", 400, "invalid_method");
}

/* Every byte position of a long value, so both the word-at-a-time scan and
 * its byte-wise tail see each kind of byte. */
TEST(value_bytes_at_every_position)
{
	const char bad[] = { 0x00, 0x01, 0x0b, 0x1f, 0x7f, '\r', '\n' };
	const char *reasons[] = { "invalid_header_value", "invalid_header_value", "invalid_header_value",
				  "invalid_header_value", "invalid_header_value", "bare_cr", "bare_lf" };
	int wrong = 0, okcount = 0;
	for (int pos = 0; pos < 24; pos++) {
		char val[25];
		memset(val, 'v', 24);
		val[24] = 0;
		for (size_t k = 0; k < sizeof(bad); k++) {
			char raw[128];
			int n = snprintf(raw, sizeof(raw), "GET / HTTP/1.1\r\nHost: a\r\nX-Long: %s\r\n\r\n", val);
			raw[n - 4 - 24 + pos] = bad[k];
			struct h1_head h;
			struct h1_error e = { 0, NULL };
			hdrs_init(&h.hdrs);
			/* Parse the exact bytes: some of these fool h1_head_end. */
			int rc = h1_parse_head(H1_REQUEST, raw, (size_t)n, 0, &lim, &h, &e);
			if (rc != RM_ERROR || e.status != 400 || strcmp(e.reason, reasons[k])) {
				wrong++;
				fprintf(stderr, "  pos %d byte %02x: rc %d %s\n", pos, (unsigned char)bad[k], rc,
					e.reason ? e.reason : "-");
			}
			hdrs_free(&h.hdrs);
		}
		const char good[] = { '\t', (char)0x80, (char)0xff, ' ', '~' };
		for (size_t k = 0; k < sizeof(good); k++) {
			char raw[128];
			int n = snprintf(raw, sizeof(raw), "GET / HTTP/1.1\r\nHost: a\r\nX-Long: %s\r\n\r\n", val);
			raw[n - 4 - 24 + pos] = good[k];
			struct h1_head h;
			struct h1_error e = { 0, NULL };
			hdrs_init(&h.hdrs);
			int rc = h1_parse_head(H1_REQUEST, raw, (size_t)n, 0, &lim, &h, &e);
			size_t vl = 0;
			const char *v = hdrs_get(&h.hdrs, "x-long", &vl);
			/* Edge OWS is trimmed; anything else is kept verbatim. */
			bool edge_ws = (good[k] == '\t' || good[k] == ' ') && (pos == 0 || pos == 23);
			if (rc == RM_OK && v && vl == (edge_ws ? 23u : 24u) &&
			    (edge_ws || (unsigned char)v[pos] == (unsigned char)good[k]))
				okcount++;
			else
				fprintf(stderr, "  pos %d good byte %02x rejected or mangled\n", pos,
					(unsigned char)good[k]);
			hdrs_free(&h.hdrs);
		}
	}
	CHECK_INT(wrong, 0);
	CHECK_INT(okcount, 24 * 5);
}

TEST(reject_host_problems)
{
	REQ_ERR("GET / HTTP/1.1\r\nUser-Agent: x\r\n\r\n", 400, "missing_host");
	REQ_ERR("GET http://a/ HTTP/1.1\r\n\r\n", 400, "missing_host");
	REQ_ERR("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400, "duplicate_host");
	REQ_ERR("GET / HTTP/1.1\r\nHost: a\r\nhost: a\r\n\r\n", 400, "duplicate_host");
	REQ_ERR("GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400, "invalid_host");
	REQ_ERR("GET / HTTP/1.1\r\nHost: user@evil\r\n\r\n", 400, "invalid_host");
	REQ_ERR("GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", 400, "invalid_host");
}

TEST(reject_bad_targets)
{
	REQ_ERR("GET foo HTTP/1.1\r\nHost: a\r\n\r\n", 400, "invalid_target");
	REQ_ERR("GET /a#frag HTTP/1.1\r\nHost: a\r\n\r\n", 400, "invalid_target");
	REQ_ERR("GET /a b HTTP/1.1\r\nHost: a\r\n\r\n", 400, "invalid_target");
	REQ_ERR("GET  / HTTP/1.1\r\nHost: a\r\n\r\n", 400, "invalid_target");
	REQ_ERR("GET /\x7f HTTP/1.1\r\nHost: a\r\n\r\n", 400, "invalid_target");
	REQ_ERR("GET /\xc3\xa9 HTTP/1.1\r\nHost: a\r\n\r\n", 400, "invalid_target");
	REQ_ERR("GET ftp://h/ HTTP/1.1\r\nHost: a\r\n\r\n", 400, "invalid_target");
	REQ_ERR("GET http:///x HTTP/1.1\r\nHost: a\r\n\r\n", 400, "invalid_target");
	REQ_ERR("GET http://user@h/ HTTP/1.1\r\nHost: a\r\n\r\n", 400, "invalid_target");
}

TEST(reject_bad_versions)
{
	REQ_ERR("GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505, "invalid_version");
	REQ_ERR("GET / HTTP/3.0\r\nHost: a\r\n\r\n", 505, "invalid_version");
	REQ_ERR("GET / HTTP/0.9\r\nHost: a\r\n\r\n", 505, "invalid_version");
	REQ_ERR("GET / HTTP/2\r\nHost: a\r\n\r\n", 505, "invalid_version");
	REQ_ERR("GET /\r\n\r\n", 505, "invalid_version");
	REQ_ERR("GET / HTTP/1.1x\r\nHost: a\r\n\r\n", 400, "invalid_version");
	REQ_ERR("GET / http/1.1\r\nHost: a\r\n\r\n", 400, "invalid_version");
	REQ_ERR("GET / HTTP/1\r\nHost: a\r\n\r\n", 400, "invalid_version");
	REQ_ERR("GET / HTTP/1.1 \r\nHost: a\r\n\r\n", 400, "invalid_version");
	REQ_ERR("GET / HTTP/11.1\r\nHost: a\r\n\r\n", 400, "invalid_version");
}

TEST(request_limits)
{
	struct h1_limits l = { .max_head_bytes = 64, .max_headers = 3 };
	struct h1_head h;
	struct h1_error e = { 0, NULL };
	char big[200];
	snprintf(big, sizeof(big), "GET / HTTP/1.1\r\nHost: a\r\nX-Pad: %060d\r\n\r\n", 0);
	/* h1_head_end gives up... */
	struct h1_scan s = { 0 };
	CHECK_INT(h1_head_end(&s, big, strlen(big), l.max_head_bytes), -1);
	/* ...and a caller that parses an oversized head anyway gets 431. */
	hdrs_init(&h.hdrs);
	CHECK_INT(h1_parse_head(H1_REQUEST, big, strlen(big), 0, &l, &h, &e), RM_ERROR);
	CHECK_INT(e.status, 431);
	CHECK_STR(e.reason, "headers_too_large");
	hdrs_free(&h.hdrs);

	const char *three = "GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 2\r\n\r\n";
	CHECK_INT(parse_msg(H1_REQUEST, three, 0, &l, &h, &e), RM_OK);
	hdrs_free(&h.hdrs);
	const char *four = "GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n";
	e.status = 0;
	CHECK_INT(parse_msg(H1_REQUEST, four, 0, &l, &h, &e), RM_ERROR);
	CHECK_INT(e.status, 431);
	CHECK_STR(e.reason, "too_many_headers");
	hdrs_free(&h.hdrs);
}

TEST(parse_reuses_a_cleared_map)
{
	struct h1_head h;
	struct h1_error e;
	hdrs_init(&h.hdrs);
	const char *a = "GET /first HTTP/1.1\r\nHost: a\r\nX-One: 1\r\n\r\n";
	const char *b = "GET /second HTTP/1.1\r\nHost: b\r\n\r\n";
	CHECK_INT(h1_parse_head(H1_REQUEST, a, strlen(a), 0, &lim, &h, &e), RM_OK);
	hdrs_clear(&h.hdrs);
	CHECK_INT(h1_parse_head(H1_REQUEST, b, strlen(b), 0, &lim, &h, &e), RM_OK);
	CHECK_STR(GET(&h, ":path"), "/second");
	CHECK_STR(GET(&h, ":authority"), "b");
	CHECK(GET(&h, "x-one") == NULL);
	hdrs_free(&h.hdrs);
}

/* ---- responses ----------------------------------------------------------- */

TEST(resp_body_kinds)
{
	struct h1_head h;
	CHECK_INT(parse_resp("HTTP/1.1 200 OK\r\nContent-Length: 12\r\nServer: x\r\n\r\n", 0, &h), RM_OK);
	CHECK_INT(h.status, 200);
	CHECK_STR(GET(&h, ":status"), "200");
	CHECK_INT(h.body, H1_BODY_LENGTH);
	CHECK_INT(h.content_length, 12);
	CHECK(h.keep_alive);
	hdrs_free(&h.hdrs);

	CHECK_INT(parse_resp("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", 0, &h), RM_OK);
	CHECK_INT(h.body, H1_BODY_CHUNKED);
	CHECK(GET(&h, "transfer-encoding") == NULL);
	hdrs_free(&h.hdrs);

	CHECK_INT(parse_resp("HTTP/1.1 200 OK\r\nServer: x\r\n\r\n", 0, &h), RM_OK);
	CHECK_INT(h.body, H1_BODY_EOF);
	CHECK(!h.keep_alive);
	hdrs_free(&h.hdrs);

	CHECK_INT(parse_resp("HTTP/1.1 204 No Content\r\n\r\n", 0, &h), RM_OK);
	CHECK_INT(h.body, H1_BODY_NONE);
	CHECK(h.keep_alive);
	hdrs_free(&h.hdrs);

	CHECK_INT(parse_resp("HTTP/1.1 304 Not Modified\r\nContent-Length: 100\r\n\r\n", 0, &h), RM_OK);
	CHECK_INT(h.body, H1_BODY_NONE);
	CHECK_STR(GET(&h, "content-length"), "100");
	hdrs_free(&h.hdrs);

	CHECK_INT(parse_resp("HTTP/1.1 100 Continue\r\n\r\n", 0, &h), RM_OK);
	CHECK_INT(h.body, H1_BODY_NONE);
	CHECK(!h.upgrade);
	hdrs_free(&h.hdrs);

	CHECK_INT(parse_resp("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n", H1_F_REQ_HEAD, &h), RM_OK);
	CHECK_INT(h.body, H1_BODY_NONE);
	CHECK_INT(h.content_length, 10);
	hdrs_free(&h.hdrs);

	CHECK_INT(parse_resp("HTTP/1.1 200 Connection established\r\n\r\n", H1_F_REQ_CONNECT, &h), RM_OK);
	CHECK_INT(h.body, H1_BODY_NONE);
	hdrs_free(&h.hdrs);

	CHECK_INT(parse_resp("HTTP/1.1 407 Auth\r\nContent-Length: 3\r\n\r\n", H1_F_REQ_CONNECT, &h), RM_OK);
	CHECK_INT(h.body, H1_BODY_LENGTH);
	hdrs_free(&h.hdrs);

	CHECK_INT(parse_resp("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
			     "Connection: Upgrade\r\n\r\n", 0, &h), RM_OK);
	CHECK(h.upgrade);
	CHECK_INT(h.body, H1_BODY_NONE);
	CHECK_STR(GET(&h, "upgrade"), "websocket");
	CHECK(GET(&h, "connection") == NULL);
	hdrs_free(&h.hdrs);
}

TEST(resp_status_line_variants)
{
	struct h1_head h;
	CHECK_INT(parse_resp("HTTP/1.1 404\r\nContent-Length: 0\r\n\r\n", 0, &h), RM_OK);
	CHECK_INT(h.status, 404);
	hdrs_free(&h.hdrs);
	CHECK_INT(parse_resp("HTTP/1.1 503 Any Reason\tAt All\r\nContent-Length: 0\r\n\r\n", 0, &h), RM_OK);
	CHECK_INT(h.status, 503);
	hdrs_free(&h.hdrs);
	CHECK_INT(parse_resp("HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n", 0, &h), RM_OK);
	CHECK_INT(h.version_minor, 0);
	CHECK(!h.keep_alive);
	hdrs_free(&h.hdrs);
	CHECK_INT(parse_resp("HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\n", 0, &h), RM_OK);
	CHECK(h.keep_alive);
	hdrs_free(&h.hdrs);
}

TEST(resp_errors_are_502)
{
	RESP_ERR("HTTP/1.1 2000 OK\r\n\r\n", "invalid_status");
	RESP_ERR("HTTP/1.1 099 Low\r\n\r\n", "invalid_status");
	RESP_ERR("HTTP/1.1 600 High\r\n\r\n", "invalid_status");
	RESP_ERR("HTTP/1.1 2x0 OK\r\n\r\n", "invalid_status");
	RESP_ERR("HTTP/1.1 200 O\x01K\r\n\r\n", "invalid_status");
	RESP_ERR("HTTP/2.0 200 OK\r\n\r\n", "invalid_version");
	RESP_ERR("HTTP/1.1200 OK\r\n\r\n", "invalid_version");
	RESP_ERR("ICY 200 OK\r\n\r\n", "invalid_version");
	RESP_ERR("HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
		 "content_length_and_transfer_encoding");
	RESP_ERR("HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", "invalid_content_length");
	RESP_ERR("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", "unsupported_transfer_encoding");
	RESP_ERR("HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", "invalid_transfer_encoding");
	RESP_ERR("HTTP/1.1 200 OK\r\nX: a\r\n b\r\n\r\n", "obs_fold");
	RESP_ERR("HTTP/1.1 200 OK\r\nX : a\r\n\r\n", "invalid_header_name");
}

/* ---- chunked ------------------------------------------------------------- */

/* Feed in steps of at most step bytes; collect payload.  Returns consumed
 * bytes, or RM_ERROR. */
static long decode(struct h1_chunked *c, const char *in, size_t len, size_t step,
		   char *out, size_t *outlen, struct h1_error *err)
{
	size_t pos = 0;
	*outlen = 0;
	while (pos < len && !c->done) {
		size_t n = len - pos < step ? len - pos : step;
		size_t off = 0, dl = 0;
		long r = h1_chunked_feed(c, in + pos, n, &off, &dl, err);
		if (r < 0)
			return r;
		if (dl) {
			if (off + dl != (size_t)r)
				return -50; /* a data run must end the call */
			memcpy(out + *outlen, in + pos + off, dl);
			*outlen += dl;
		}
		if (r == 0)
			break;
		pos += (size_t)r;
	}
	return (long)pos;
}

static const char chunked_body[] =
	"5\r\nhello\r\n"
	"6;name=val;quoted=\"a b\"\r\n world\r\n"
	"A \t;x\r\n0123456789\r\n"
	"0\r\nX-Checksum: abc \r\nGrpc-Status: 0\r\nContent-Length: 99\r\n\r\n"
	"NEXT";

TEST(chunked_whole_and_bytewise)
{
	size_t steps[] = { 1, 2, 3, 7, 4096 };
	for (size_t k = 0; k < ARRAY_SIZE(steps); k++) {
		struct h1_chunked c;
		struct h1_error e = { 0, NULL };
		char out[64];
		size_t outlen;
		h1_chunked_init(&c, &lim);
		long n = decode(&c, chunked_body, strlen(chunked_body), steps[k], out, &outlen, &e);
		CHECK_INT(n, (long)strlen(chunked_body) - 4); /* stops before "NEXT" */
		CHECK(c.done);
		CHECK_INT(outlen, 21);
		CHECK(outlen == 21 && memcmp(out, "hello world0123456789", 21) == 0);
		CHECK_STR(hdrs_get(&c.trailers, "x-checksum", NULL), "abc");
		CHECK_STR(hdrs_get(&c.trailers, "grpc-status", NULL), "0");
		CHECK(hdrs_get(&c.trailers, "content-length", NULL) == NULL); /* framing dropped */
		/* Once done: consumes nothing more. */
		size_t off = 9, dl = 9;
		CHECK_INT(h1_chunked_feed(&c, "NEXT", 4, &off, &dl, &e), 0);
		CHECK_INT(dl, 0);
		h1_chunked_free(&c);
	}
}

TEST(chunked_data_run_positions)
{
	struct h1_chunked c;
	struct h1_error e;
	size_t off, dl;
	h1_chunked_init(&c, &lim);
	const char *in = "3\r\nabc\r\n";
	long r = h1_chunked_feed(&c, in, strlen(in), &off, &dl, &e);
	CHECK_INT(off, 3);
	CHECK_INT(dl, 3);
	CHECK_INT(r, 6);
	r = h1_chunked_feed(&c, in + 6, 2, &off, &dl, &e); /* the CRLF */
	CHECK_INT(r, 2);
	CHECK_INT(dl, 0);
	CHECK(!c.done);
	r = h1_chunked_feed(&c, "0\r\n\r\n", 5, &off, &dl, &e);
	CHECK_INT(r, 5);
	CHECK(c.done);
	CHECK_INT(c.trailers.n, 0);
	h1_chunked_free(&c);
}

TEST(chunked_big_size_accepted)
{
	struct h1_chunked c;
	struct h1_error e;
	size_t off, dl;
	h1_chunked_init(&c, &lim);
	const char *in = "7fffffffffffffff\r\nxyz";
	long r = h1_chunked_feed(&c, in, strlen(in), &off, &dl, &e);
	CHECK_INT(r, (long)strlen(in));
	CHECK_INT(dl, 3);
	CHECK(c.remaining == 0x7fffffffffffffffull - 3);
	h1_chunked_free(&c);
}

static void chunk_err(const char *in, size_t step, int status, const char *reason)
{
	struct h1_chunked c;
	struct h1_error e = { 0, NULL };
	char out[256];
	size_t outlen;
	h1_chunked_init(&c, &lim);
	long r = decode(&c, in, strlen(in), step, out, &outlen, &e);
	CHECK_INT(r, RM_ERROR);
	CHECK_INT(e.status, status);
	CHECK_STR(e.reason, reason);
	h1_chunked_free(&c);
}

TEST(chunked_rejections)
{
	for (size_t step = 1; step <= 64; step += 63) {
		chunk_err("10000000000000000\r\n", step, 400, "invalid_chunk_size");  /* 17 digits */
		chunk_err("00000000000000001\r\n", step, 400, "invalid_chunk_size");  /* 17 digits */
		chunk_err("8000000000000000\r\n", step, 400, "invalid_chunk_size");   /* 2^63 */
		chunk_err("ffffffffffffffff\r\n", step, 400, "invalid_chunk_size");
		chunk_err("zz\r\n", step, 400, "invalid_chunk_size");
		chunk_err("\r\n", step, 400, "invalid_chunk_size");
		chunk_err(";ext\r\n", step, 400, "invalid_chunk_size");
		chunk_err("-5\r\nhello\r\n", step, 400, "invalid_chunk_size");
		chunk_err("0x5\r\nhello\r\n", step, 400, "invalid_chunk_size");
		chunk_err("5 \r\nhello\r\n", step, 400, "invalid_chunk_size");
		chunk_err("5\nhello\r\n", step, 400, "bare_lf");
		chunk_err("5\rhello\r\n", step, 400, "bare_cr");
		chunk_err("5;a\x01\r\nhello\r\n", step, 400, "invalid_chunk_extension");
		chunk_err("5\r\nhelloX\r\n0\r\n\r\n", step, 400, "invalid_chunk_data");
		chunk_err("5\r\nhello\rX0\r\n\r\n", step, 400, "invalid_chunk_data");
		chunk_err("5\r\nhello\n0\r\n\r\n", step, 400, "invalid_chunk_data");
		chunk_err("0\r\nX: a\r\n b\r\n\r\n", step, 400, "obs_fold");
		chunk_err("0\r\nX : a\r\n\r\n", step, 400, "invalid_header_name");
		chunk_err("0\r\nX: a\nY: b\r\n\r\n", step, 400, "bare_lf");
		chunk_err("0\r\n\n", step, 400, "bare_lf");
		chunk_err("0\r\n\rX", step, 400, "bare_cr");
	}
	/* Chunk-size line (size + extensions) limited. */
	char longline[6000];
	memcpy(longline, "5;", 2);
	memset(longline + 2, 'a', sizeof(longline) - 2);
	longline[sizeof(longline) - 1] = 0;
	chunk_err(longline, 4096, 400, "chunk_line_too_long");
	chunk_err(longline, 1, 400, "chunk_line_too_long");
	/* Trailer section limited by max_head_bytes. */
	struct h1_limits small = { .max_head_bytes = 32, .max_headers = 10 };
	struct h1_chunked c;
	struct h1_error e = { 0, NULL };
	char out[8];
	size_t outlen;
	h1_chunked_init(&c, &small);
	const char *tr = "0\r\nX-A: 0123456789\r\nX-B: 0123456789\r\n\r\n";
	CHECK_INT(decode(&c, tr, strlen(tr), 5, out, &outlen, &e), RM_ERROR);
	CHECK_INT(e.status, 431);
	CHECK_STR(e.reason, "headers_too_large");
	/* A failed decoder stays failed. */
	size_t off, dl;
	CHECK_INT(h1_chunked_feed(&c, "0\r\n\r\n", 5, &off, &dl, &e), RM_ERROR);
	h1_chunked_free(&c);
}

/* ---- encoders ------------------------------------------------------------ */

static char *drain(struct evbuffer *b)
{
	size_t n = evbuffer_get_length(b);
	char *s = xmalloc(n + 1);
	evbuffer_remove(b, s, n);
	s[n] = 0;
	return s;
}

TEST(encode_request_exact_and_round_trip)
{
	struct http_headers m;
	hdrs_init(&m);
	hdrs_add_cstr(&m, ":method", "POST");
	hdrs_add_cstr(&m, ":path", "/submit?x=1");
	hdrs_add_cstr(&m, "x-a", "1");
	hdrs_add_cstr(&m, ":authority", "svc.local:8080");
	hdrs_add_cstr(&m, "content-length", "3");
	struct evbuffer *b = evbuffer_new();
	h1_encode_request(b, &m, false, true, false);
	char *s = drain(b);
	CHECK_STR(s, "POST /submit?x=1 HTTP/1.1\r\nhost: svc.local:8080\r\nx-a: 1\r\ncontent-length: 3\r\n\r\n");

	struct h1_head h;
	CHECK_INT(parse_req(s, &h), RM_OK);
	CHECK_STR(GET(&h, ":method"), "POST");
	CHECK_STR(GET(&h, ":path"), "/submit?x=1");
	CHECK_STR(GET(&h, ":authority"), "svc.local:8080");
	CHECK_STR(GET(&h, "x-a"), "1");
	CHECK_INT(h.body, H1_BODY_LENGTH);
	CHECK_INT(h.content_length, 3);
	CHECK(h.keep_alive);
	hdrs_free(&h.hdrs);
	xfree(s);

	/* chunked + close: content-length must not go out next to chunked. */
	h1_encode_request(b, &m, true, false, false);
	s = drain(b);
	CHECK(strstr(s, "content-length") == NULL);
	CHECK_CONTAINS(s, "transfer-encoding: chunked\r\n");
	CHECK_CONTAINS(s, "connection: close\r\n");
	CHECK_INT(parse_req(s, &h), RM_OK);
	CHECK_INT(h.body, H1_BODY_CHUNKED);
	CHECK(!h.keep_alive);
	hdrs_free(&h.hdrs);
	xfree(s);
	hdrs_free(&m);
	evbuffer_free(b);
}

TEST(encode_parsed_requests_round_trip)
{
	const char *reqs[] = {
		("GET /chat HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: upgrade\r\n"
		 "Sec-WebSocket-Version: 13\r\n\r\n"),
		"CONNECT db.internal:5432 HTTP/1.1\r\nHost: db.internal:5432\r\n\r\n",
		"OPTIONS * HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
		"GET http://up:81/x?y HTTP/1.1\r\nHost: other\r\nAccept: */*\r\n\r\n",
		"POST /g.Svc/M HTTP/1.1\r\nHost: g\r\nTE: trailers\r\nTransfer-Encoding: chunked\r\n\r\n",
	};
	for (size_t i = 0; i < ARRAY_SIZE(reqs); i++) {
		struct h1_head a, b;
		CHECK_INT(parse_req(reqs[i], &a), RM_OK);
		struct evbuffer *buf = evbuffer_new();
		h1_encode_request(buf, &a.hdrs, a.body == H1_BODY_CHUNKED, a.keep_alive, a.upgrade);
		char *s = drain(buf);
		CHECK_INT(parse_req(s, &b), RM_OK);
		CHECK_INT(a.upgrade, b.upgrade);
		CHECK_INT(a.connect, b.connect);
		CHECK_INT(a.keep_alive, b.keep_alive);
		CHECK_INT(a.body, b.body);
		/* Same fields, except :scheme which origin-form cannot carry. */
		int same = 1;
		for (uint32_t k = 0; k < a.hdrs.n; k++) {
			const char *nm = hdrs_name(&a.hdrs, k);
			if (!strcmp(nm, ":scheme"))
				continue;
			const char *v = hdrs_get(&b.hdrs, nm, NULL);
			if (!v || strcmp(v, hdrs_value(&a.hdrs, k)))
				same = 0;
		}
		CHECK(same);
		if (!same)
			fprintf(stderr, "  round trip %zu:\n%s", i, s);
		xfree(s);
		evbuffer_free(buf);
		hdrs_free(&a.hdrs);
		hdrs_free(&b.hdrs);
	}
}

TEST(encode_response_variants)
{
	struct http_headers m;
	hdrs_init(&m);
	hdrs_add_cstr(&m, "content-type", "text/plain");
	hdrs_add_cstr(&m, ":status", "404");
	struct evbuffer *b = evbuffer_new();
	h1_encode_response(b, &m, 1, true, true, false);
	char *s = drain(b);
	CHECK_STR(s, "HTTP/1.1 404 Not Found\r\ncontent-type: text/plain\r\ntransfer-encoding: chunked\r\n\r\n");
	struct h1_head h;
	CHECK_INT(parse_resp(s, 0, &h), RM_OK);
	CHECK_INT(h.status, 404);
	CHECK_INT(h.body, H1_BODY_CHUNKED);
	CHECK(h.keep_alive);
	hdrs_free(&h.hdrs);
	xfree(s);

	hdrs_set(&m, ":status", "200", 3);
	hdrs_add_cstr(&m, "content-length", "2");
	h1_encode_response(b, &m, 0, false, true, false);
	s = drain(b);
	CHECK_STR(s, "HTTP/1.0 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 2\r\nconnection: keep-alive\r\n\r\n");
	CHECK_INT(parse_resp(s, 0, &h), RM_OK);
	CHECK(h.keep_alive);
	CHECK_INT(h.version_minor, 0);
	CHECK_INT(h.body, H1_BODY_LENGTH);
	hdrs_free(&h.hdrs);
	xfree(s);

	h1_encode_response(b, &m, 1, false, false, false);
	s = drain(b);
	CHECK_CONTAINS(s, "connection: close\r\n");
	CHECK_INT(parse_resp(s, 0, &h), RM_OK);
	CHECK(!h.keep_alive);
	hdrs_free(&h.hdrs);
	xfree(s);

	struct http_headers u;
	hdrs_init(&u);
	hdrs_add_cstr(&u, ":status", "101");
	hdrs_add_cstr(&u, "upgrade", "websocket");
	h1_encode_response(b, &u, 1, false, true, true);
	s = drain(b);
	CHECK_STR(s, "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n");
	CHECK_INT(parse_resp(s, 0, &h), RM_OK);
	CHECK(h.upgrade);
	hdrs_free(&h.hdrs);
	xfree(s);
	hdrs_free(&u);
	hdrs_free(&m);
	evbuffer_free(b);
}

TEST(encode_chunks_round_trip)
{
	struct evbuffer *out = evbuffer_new(), *data = evbuffer_new();
	char payload[300];
	for (size_t i = 0; i < sizeof(payload); i++)
		payload[i] = (char)('a' + i % 26);
	evbuffer_add(data, payload, 300);
	h1_encode_chunk(out, data);
	CHECK_INT(evbuffer_get_length(data), 0);
	evbuffer_add(data, "xyz", 3);
	h1_encode_chunk(out, data);
	h1_encode_chunk(out, data); /* empty: must not emit a "0" chunk */
	struct http_headers t;
	hdrs_init(&t);
	hdrs_add_cstr(&t, "grpc-status", "0");
	hdrs_add_cstr(&t, "grpc-message", "ok");
	h1_encode_last_chunk(out, &t);
	char *s = drain(out);
	CHECK(strncmp(s, "12c\r\n", 5) == 0); /* lowercase hex */
	CHECK_CONTAINS(s, "\r\n3\r\nxyz\r\n0\r\ngrpc-status: 0\r\ngrpc-message: ok\r\n\r\n");

	struct h1_chunked c;
	struct h1_error e;
	char got[400];
	size_t gotlen;
	h1_chunked_init(&c, &lim);
	CHECK_INT(decode(&c, s, strlen(s), 1, got, &gotlen, &e), (long)strlen(s));
	CHECK(c.done);
	CHECK_INT(gotlen, 303);
	CHECK(gotlen == 303 && memcmp(got, payload, 300) == 0 && memcmp(got + 300, "xyz", 3) == 0);
	CHECK_STR(hdrs_get(&c.trailers, "grpc-message", NULL), "ok");
	h1_chunked_free(&c);
	xfree(s);

	h1_encode_last_chunk(out, NULL);
	s = drain(out);
	CHECK_STR(s, "0\r\n\r\n");
	xfree(s);
	hdrs_free(&t);
	evbuffer_free(out);
	evbuffer_free(data);
}

TEST(reason_phrases)
{
	CHECK_STR(http_reason(200), "OK");
	CHECK_STR(http_reason(404), "Not Found");
	CHECK_STR(http_reason(431), "Request Header Fields Too Large");
	CHECK_STR(http_reason(502), "Bad Gateway");
	CHECK_STR(http_reason(505), "HTTP Version Not Supported");
	CHECK_STR(http_reason(799), "Unknown");
}
