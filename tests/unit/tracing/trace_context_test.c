/* trace_context_test.c - B3 / W3C parsing and formatting. */
#include "test.h"
#include "proxy/common.h"
#include "proxy/http/headers.h"
#include "proxy/tracing/trace_context.h"

#define S(x) x, sizeof(x) - 1

TEST(b3_multi_full)
{
	struct trace_ctx c;
	CHECK(tc_parse_b3_multi(S("463ac35c9f6413ad48485a3953bb6124"), S("a2fb4a1d1a96d312"),
				S("0020000000000001"), S("1"), NULL, 0, &c));
	CHECK(c.trace_hi == 0x463ac35c9f6413adull && c.trace_lo == 0x48485a3953bb6124ull);
	CHECK(c.span_id == 0xa2fb4a1d1a96d312ull && c.parent_id == 0x0020000000000001ull);
	CHECK_INT(c.sampled, 1);
	CHECK(c.id128);
}

TEST(b3_multi_64bit_uppercase_and_flags)
{
	struct trace_ctx c;
	CHECK(tc_parse_b3_multi(S("A2FB4A1D1A96D312"), S("A2FB4A1D1A96D313"), NULL, 0, NULL, 0,
				S("1"), &c));
	CHECK(c.trace_hi == 0 && c.trace_lo == 0xa2fb4a1d1a96d312ull && !c.id128);
	CHECK(c.debug && c.sampled == 1);
	CHECK(tc_parse_b3_multi(NULL, 0, NULL, 0, NULL, 0, S("0"), NULL, 0, &c));
	CHECK(c.span_id == 0 && c.sampled == 0);
	CHECK(tc_parse_b3_multi(NULL, 0, NULL, 0, NULL, 0, S("true"), NULL, 0, &c) && c.sampled == 1);
}

TEST(b3_multi_malformed)
{
	struct trace_ctx c = { .sampled = 7 };
	CHECK(!tc_parse_b3_multi(S("463ac35c9f6413a"), S("a2fb4a1d1a96d312"), NULL, 0, NULL, 0, NULL, 0, &c));
	CHECK(!tc_parse_b3_multi(S("0000000000000000"), S("a2fb4a1d1a96d312"), NULL, 0, NULL, 0, NULL, 0, &c));
	CHECK(!tc_parse_b3_multi(S("463ac35c9f6413ad"), S("0000000000000000"), NULL, 0, NULL, 0, NULL, 0, &c));
	CHECK(!tc_parse_b3_multi(S("463ac35c9f6413ad"), NULL, 0, NULL, 0, NULL, 0, NULL, 0, &c));
	CHECK(!tc_parse_b3_multi(S("463ac35c9f6413ag"), S("a2fb4a1d1a96d312"), NULL, 0, NULL, 0, NULL, 0, &c));
	CHECK(!tc_parse_b3_multi(S("463ac35c9f6413ad"), S("a2fb4a1d1a96d312"), S("xyz"), NULL, 0, NULL, 0, &c));
	CHECK(!tc_parse_b3_multi(NULL, 0, NULL, 0, NULL, 0, S("maybe"), NULL, 0, &c));
	CHECK_INT(c.sampled, 7);   /* untouched */
}

TEST(b3_single)
{
	struct trace_ctx c;
	CHECK(tc_parse_b3_single(S("80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90"), &c));
	CHECK(c.trace_hi == 0x80f198ee56343ba8ull && c.span_id == 0xe457b5a2e4d86bd1ull);
	CHECK(c.parent_id == 0x05e3ac9a4f6e3b90ull && c.sampled == 1);
	CHECK(tc_parse_b3_single(S("e457b5a2e4d86bd1-e457b5a2e4d86bd2"), &c));
	CHECK(c.sampled == -1 && c.parent_id == 0);
	CHECK(tc_parse_b3_single(S("e457b5a2e4d86bd1-e457b5a2e4d86bd2-d"), &c) && c.debug && c.sampled == 1);
	CHECK(tc_parse_b3_single(S("0"), &c) && c.sampled == 0 && c.span_id == 0);
	CHECK(!tc_parse_b3_single(S("x"), &c));
	CHECK(!tc_parse_b3_single(S("e457b5a2e4d86bd1"), &c));
	CHECK(!tc_parse_b3_single(S("e457b5a2e4d86bd1-"), &c));
	CHECK(!tc_parse_b3_single(S("e457b5a2e4d86bd1-e457b5a2e4d86bd2-2"), &c));
	CHECK(!tc_parse_b3_single(S("e457b5a2e4d86bd1-e457b5a2e4d86bd2-1-"), &c));
	CHECK(!tc_parse_b3_single(S("e457b5a2e4d86bd1-e457b5a2e4d86bd2-1-05e3ac9a4f6e3b90-x"), &c));
	CHECK(!tc_parse_b3_single(S("--"), &c));
	CHECK(!tc_parse_b3_single("", 0, &c));
}

TEST(traceparent)
{
	struct trace_ctx c;
	CHECK(tc_parse_traceparent(S("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"), &c));
	CHECK(c.trace_hi == 0x4bf92f3577b34da6ull && c.trace_lo == 0xa3ce929d0e0e4736ull);
	CHECK(c.span_id == 0x00f067aa0ba902b7ull && c.sampled == 1 && c.id128);
	CHECK(tc_parse_traceparent(S("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"), &c) && c.sampled == 0);
	/* a future version may append fields */
	CHECK(tc_parse_traceparent(S("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra"), &c));
	CHECK(!tc_parse_traceparent(S("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra"), &c));
	CHECK(!tc_parse_traceparent(S("ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"), &c));
	CHECK(!tc_parse_traceparent(S("00-00000000000000000000000000000000-00f067aa0ba902b7-01"), &c));
	CHECK(!tc_parse_traceparent(S("00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01"), &c));
	CHECK(!tc_parse_traceparent(S("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01"), &c));
	CHECK(!tc_parse_traceparent(S("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7"), &c));
	CHECK(!tc_parse_traceparent(S("00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"), &c));
}

TEST(extract_order)
{
	struct http_headers h;
	struct trace_ctx c;
	hdrs_init(&h);
	CHECK_INT(tc_extract(&h, false, &c), TC_NONE);
	hdrs_add_cstr(&h, "traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
	hdrs_add_cstr(&h, "b3", "e457b5a2e4d86bd1-e457b5a2e4d86bd2-1");
	CHECK_INT(tc_extract(&h, false, &c), TC_B3_SINGLE);
	CHECK_INT(tc_extract(&h, true, &c), TC_W3C);
	hdrs_add_cstr(&h, "x-b3-traceid", "463ac35c9f6413ad");
	hdrs_add_cstr(&h, "x-b3-spanid", "463ac35c9f6413ae");
	CHECK_INT(tc_extract(&h, false, &c), TC_B3);
	CHECK(c.span_id == 0x463ac35c9f6413aeull);
	/* a malformed B3 multi context falls through to the next format */
	hdrs_set(&h, "x-b3-spanid", "bogus", 5);
	CHECK_INT(tc_extract(&h, false, &c), TC_B3_SINGLE);
	hdrs_free(&h);
}

TEST(formatting)
{
	char b[68];
	size_t n = tc_format_trace_id(0, 0x1234, false, b);
	CHECK_INT(n, 16);
	CHECK(!memcmp(b, "0000000000001234", 16));
	n = tc_format_trace_id(0, 0x1234, true, b);
	CHECK_INT(n, 32);
	CHECK(!memcmp(b, "00000000000000000000000000001234", 32));
	n = tc_format_traceparent(1, 2, 3, true, b);
	CHECK_INT(n, 55);
	CHECK(!memcmp(b, "00-00000000000000010000000000000002-0000000000000003-01", 55));
	n = tc_format_b3_single(0, 0xa, false, 0xb, false, 0xc, b);
	b[n] = 0;
	CHECK_STR(b, "000000000000000a-000000000000000b-0-000000000000000c");
	/* round trip */
	struct trace_ctx c;
	CHECK(tc_parse_b3_single(b, n, &c) && c.trace_lo == 0xa && c.span_id == 0xb && c.parent_id == 0xc);
	CHECK(tc_new_id() != 0);
}
