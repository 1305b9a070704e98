/* trace_context.c - B3 / W3C trace context parsing and formatting. */
#include <string.h>
#include "trace_context.h"
#include "proxy/common.h"
#include "proxy/http/headers.h"

bool tc_hex_parse(const char *s, size_t n, bool lower_only, uint64_t *out)
{
	uint64_t v = 0;
	if (!s || !n || n > 16)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		unsigned d;
		if (c >= '0' && c <= '9')
			d = (unsigned)(c - '0');
		else if (c >= 'a' && c <= 'f')
			d = (unsigned)(c - 'a' + 10);
		else if (!lower_only && c >= 'A' && c <= 'F')
			d = (unsigned)(c - 'A' + 10);
		else
			return false;
		v = v << 4 | d;
	}
	*out = v;
	return true;
}

/* Two hex digits per byte value: ids are formatted a byte at a time. */
static const char hex2[513] =
	"000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
	"202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f"
	"404142434445464748494a4b4c4d4e4f505152535455565758595a5b5c5d5e5f"
	"606162636465666768696a6b6c6d6e6f707172737475767778797a7b7c7d7e7f"
	"808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f"
	"a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebf"
	"c0c1c2c3c4c5c6c7c8c9cacbcccdcecfd0d1d2d3d4d5d6d7d8d9dadbdcdddedf"
	"e0e1e2e3e4e5e6e7e8e9eaebecedeeeff0f1f2f3f4f5f6f7f8f9fafbfcfdfeff";

void tc_hex16(uint64_t v, char out[16])
{
	for (int i = 14; i >= 0; i -= 2) {
		memcpy(out + i, hex2 + 2 * (v & 0xff), 2);
		v >>= 8;
	}
}

/* A 16- or 32-digit trace id, not all zero. */
static bool parse_trace_id(const char *s, size_t n, bool lower_only, struct trace_ctx *c)
{
	uint64_t hi = 0, lo = 0;
	if (n == 32) {
		if (!tc_hex_parse(s, 16, lower_only, &hi) || !tc_hex_parse(s + 16, 16, lower_only, &lo))
			return false;
	} else if (n != 16 || !tc_hex_parse(s, 16, lower_only, &lo)) {
		return false;
	}
	if (!hi && !lo)
		return false;
	c->trace_hi = hi;
	c->trace_lo = lo;
	c->id128 = n == 32;
	return true;
}

static bool parse_span_id(const char *s, size_t n, bool lower_only, uint64_t *out)
{
	return n == 16 && tc_hex_parse(s, 16, lower_only, out) && *out != 0;
}

/* B3 sampling state: 1/0, legacy true/false, d (debug). -2: invalid. */
static int parse_sampled(const char *s, size_t n, bool *debug)
{
	if (n == 1 && s[0] == '1')
		return 1;
	if (n == 1 && s[0] == '0')
		return 0;
	if (n == 1 && s[0] == 'd') {
		*debug = true;
		return 1;
	}
	if (n == 4 && mem_ieq(s, "true", 4))
		return 1;
	if (n == 5 && mem_ieq(s, "false", 5))
		return 0;
	return -2;
}

bool tc_parse_b3_multi(const char *trace, size_t tn, const char *span, size_t sn,
		       const char *parent, size_t pn, const char *sampled, size_t dn,
		       const char *flags, size_t fn, struct trace_ctx *out)
{
	struct trace_ctx c = { .sampled = -1 };
	bool debug = false;
	if (sampled) {
		int v = parse_sampled(sampled, dn, &debug);
		if (v != -2)
			c.sampled = v;
	}
	if (flags && fn == 1 && flags[0] == '1') {
		c.debug = true;
		c.sampled = 1;
	}
	c.debug |= debug;
	if (trace || span) {
		/* ids present: both must be valid, the parent too if given */
		if (!trace || !span || !parse_trace_id(trace, tn, false, &c) ||
		    !parse_span_id(span, sn, false, &c.span_id))
			return false;
		if (parent && !parse_span_id(parent, pn, false, &c.parent_id))
			return false;
	} else if (c.sampled < 0) {
		return false;
	}
	*out = c;
	return true;
}

bool tc_parse_b3_single(const char *v, size_t n, struct trace_ctx *out)
{
	struct trace_ctx c = { .sampled = -1 };
	bool debug = false;
	const char *end, *dash;
	if (!v || !n)
		return false;
	if (n == 1) {   /* sampling state only */
		int s = parse_sampled(v, 1, &debug);
		if (s < 0)
			return false;
		c.sampled = s;
		c.debug = debug;
		*out = c;
		return true;
	}
	end = v + n;
	dash = memchr(v, '-', n);
	if (!dash || !parse_trace_id(v, (size_t)(dash - v), false, &c))
		return false;
	v = dash + 1;
	dash = memchr(v, '-', (size_t)(end - v));
	if (!parse_span_id(v, (size_t)((dash ? dash : end) - v), false, &c.span_id))
		return false;
	if (dash) {
		v = dash + 1;
		dash = memchr(v, '-', (size_t)(end - v));
		int s = parse_sampled(v, (size_t)((dash ? dash : end) - v), &debug);
		if (s < 0)
			return false;
		c.sampled = s;
		c.debug = debug;
		if (dash) {
			v = dash + 1;
			if (!parse_span_id(v, (size_t)(end - v), false, &c.parent_id))
				return false;
		}
	}
	*out = c;
	return true;
}

bool tc_parse_traceparent(const char *v, size_t n, struct trace_ctx *out)
{
	struct trace_ctx c = { .sampled = -1 };
	uint64_t ver, fl;
	/* version-trace-parent-flags; a future version may append "-..." */
	if (!v || n < 55 || v[2] != '-' || v[35] != '-' || v[52] != '-')
		return false;
	if (!tc_hex_parse(v, 2, true, &ver) || ver == 0xff || (ver == 0 && n != 55) ||
	    (n > 55 && v[55] != '-'))
		return false;
	if (!parse_trace_id(v + 3, 32, true, &c) || !parse_span_id(v + 36, 16, true, &c.span_id) ||
	    !tc_hex_parse(v + 53, 2, true, &fl))
		return false;
	c.sampled = (int)(fl & 1);
	c.id128 = true;
	*out = c;
	return true;
}

static bool b3_multi(const struct http_headers *h, struct trace_ctx *out)
{
	size_t tn = 0, sn = 0, pn = 0, dn = 0, fn = 0;
	const char *t = hdrs_get(h, "x-b3-traceid", &tn), *s = hdrs_get(h, "x-b3-spanid", &sn);
	const char *p = hdrs_get(h, "x-b3-parentspanid", &pn), *d = hdrs_get(h, "x-b3-sampled", &dn);
	const char *f = hdrs_get(h, "x-b3-flags", &fn);
	if (!t && !s && !d && !f)
		return false;
	return tc_parse_b3_multi(t, tn, s, sn, p, pn, d, dn, f, fn, out);
}

enum tc_format tc_extract(const struct http_headers *h, bool w3c_first, struct trace_ctx *out)
{
	size_t n = 0;
	const char *v;
	if (w3c_first && (v = hdrs_get(h, "traceparent", &n)) && tc_parse_traceparent(v, n, out))
		return TC_W3C;
	if (b3_multi(h, out))
		return TC_B3;
	if ((v = hdrs_get(h, "b3", &n)) && tc_parse_b3_single(v, n, out))
		return TC_B3_SINGLE;
	if (!w3c_first && (v = hdrs_get(h, "traceparent", &n)) && tc_parse_traceparent(v, n, out))
		return TC_W3C;
	return TC_NONE;
}

size_t tc_format_trace_id(uint64_t hi, uint64_t lo, bool id128, char out[32])
{
	if (hi || id128) {
		tc_hex16(hi, out);
		tc_hex16(lo, out + 16);
		return 32;
	}
	tc_hex16(lo, out);
	return 16;
}

size_t tc_format_traceparent(uint64_t hi, uint64_t lo, uint64_t span, bool sampled, char out[55])
{
	memcpy(out, "00-", 3);
	tc_hex16(hi, out + 3);
	tc_hex16(lo, out + 19);
	out[35] = '-';
	tc_hex16(span, out + 36);
	out[52] = '-';
	out[53] = '0';
	out[54] = sampled ? '1' : '0';
	return 55;
}

size_t tc_format_b3_single(uint64_t hi, uint64_t lo, bool id128, uint64_t span, bool sampled,
			   uint64_t parent, char out[68])
{
	size_t n = tc_format_trace_id(hi, lo, id128, out);
	out[n++] = '-';
	tc_hex16(span, out + n);
	n += 16;
	out[n++] = '-';
	out[n++] = sampled ? '1' : '0';
	if (parent) {
		out[n++] = '-';
		tc_hex16(parent, out + n);
		n += 16;
	}
	return n;
}

uint64_t tc_new_id(void)
{
	uint64_t v;
	while (!(v = rand_u64()))
		;
	return v;
}
