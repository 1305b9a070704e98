/* trace_context_fuzz.c - libFuzzer target for the trace context parsers
 * (proxy/tracing/trace_context.c).
 *
 * Input: "name: value" lines; they become request headers, and each value is
 * also fed to every parser directly.  A parsed context is formatted again
 * and must parse back to the same ids.
 *
 * Build and run (from the repository root): `make fuzz-bins`, then
 *   build/fuzz/trace_context_fuzz -max_total_time=20 tests/fuzz/corpus/trace_context */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/common.h"
#include "proxy/http/headers.h"
#include "proxy/tracing/trace_context.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void roundtrip(const struct trace_ctx *c)
{
	char b[68];
	struct trace_ctx r;
	if (!c->span_id)
		return;
	size_t n = tc_format_b3_single(c->trace_hi, c->trace_lo, c->id128, c->span_id,
				       c->sampled == 1, c->parent_id, b);
	if (!tc_parse_b3_single(b, n, &r) || r.trace_hi != c->trace_hi || r.trace_lo != c->trace_lo ||
	    r.span_id != c->span_id || r.parent_id != c->parent_id)
		abort();
	n = tc_format_traceparent(c->trace_hi, c->trace_lo, c->span_id, c->sampled == 1, b);
	if (!tc_parse_traceparent(b, n, &r) || r.span_id != c->span_id || r.trace_lo != c->trace_lo)
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size > 8192)
		return 0;
	const char *p = (const char *)data, *end = p + size;
	struct http_headers h;
	struct trace_ctx c;
	hdrs_init(&h);
	for (const char *q = p; q < end;) {
		const char *nl = memchr(q, '\n', (size_t)(end - q));
		const char *le = nl ? nl : end;
		const char *colon = memchr(q, ':', (size_t)(le - q));
		if (colon && colon > q) {
			const char *v = colon + 1;
			while (v < le && *v == ' ')
				v++;
			size_t vn = (size_t)(le - v);
			char *name = xstrndup(q, (size_t)(colon - q));
			for (char *s = name; *s; s++)
				*s = (char)(*s >= 'A' && *s <= 'Z' ? *s + 32 : *s);
			hdrs_add(&h, name, strlen(name), v, vn);
			free(name);
			/* every parser on every value (exact length, no NUL needed) */
			if (tc_parse_b3_single(v, vn, &c))
				roundtrip(&c);
			if (tc_parse_traceparent(v, vn, &c))
				roundtrip(&c);
			if (tc_parse_b3_multi(v, vn, v, vn, v, vn, v, vn, v, vn, &c))
				roundtrip(&c);
		}
		q = le + 1;
	}
	if (tc_extract(&h, false, &c) != TC_NONE)
		roundtrip(&c);
	if (tc_extract(&h, true, &c) != TC_NONE)
		roundtrip(&c);
	hdrs_free(&h);
	return 0;
}
