/* access_log_fuzz.c - libFuzzer target for the access-log format compiler
 * and renderer (stats/access_log_format.c).
 *
 * Input: byte 0 = flags (bit 0: omit_empty_values, bit 1: also compile the
 * format as the value of a json_format key, bit 2: response flags from
 * byte 1), then the format string up to the first NUL, then "name: value"
 * request header lines (also used as response headers and trailers).
 *
 * Build and run (from the repository root): `make fuzz-bins`, then
 *   build/fuzz/access_log_fuzz -max_total_time=20 tests/fuzz/corpus/access_log */
#include <jansson.h>
#include <netinet/in.h>
#include <stdint.h>
#include <string.h>

#include "proxy/common.h"
#include "proxy/http/headers.h"
#include "stats/access_log_format.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 2 || size > 8192)
		return 0;
	uint8_t flags = data[0];
	const char *p = (const char *)data + 2, *end = (const char *)data + size;
	const char *nul = memchr(p, 0, (size_t)(end - p));
	size_t flen = nul ? (size_t)(nul - p) : (size_t)(end - p);
	char *fmt = xmalloc(flen + 1);
	memcpy(fmt, p, flen);
	fmt[flen] = 0;

	struct http_headers h;
	hdrs_init(&h);
	for (const char *q = nul ? nul + 1 : end; q < end;) {
		const char *nl = memchr(q, '\n', (size_t)(end - q));
		const char *le = nl ? nl : end;
		const char *colon = memchr(q, ':', (size_t)(le - q));
		if (colon && colon > q && !memchr(q, 0, (size_t)(le - q)))
			hdrs_add(&h, q, (size_t)(colon - q), colon + 1, (size_t)(le - colon - 1));
		q = nl ? nl + 1 : end;
	}
	struct sockaddr_in6 peer = { .sin6_family = AF_INET6, .sin6_port = htons(443) };
	peer.sin6_addr.s6_addr[15] = 1;
	struct al_record r = {
		.req = &h, .resp = &h, .trailers = &h, .protocol = (flags & 8) ? NULL : "HTTP/2",
		.response_code = 503, .details = "fuzz", .flags = (flags & 4) ? (uint32_t)data[1] * 0x01010101u : 0,
		.bytes_received = 1, .bytes_sent = 2, .start_wall_ns = 1700000000123456789ull,
		.duration_ns = 5, .request_duration_ns = -1, .response_duration_ns = 3,
		.upstream_host = "h:1", .downstream_remote = (const struct sockaddr *)&peer,
		.downstream_local = (const struct sockaddr *)&peer, .connection_id = 7, .attempts = 1,
	};
	char err[256];
	struct al_buf out = { 0 };
	struct al_format *f = al_format_text(fmt, flags & 1, err, sizeof(err));
	if (f) {
		al_format_render(f, &r, &out);
		al_format_free(f);
	}
	if (flags & 2) {
		json_t *j = json_object();
		json_object_set_new(j, "k", json_stringn(fmt, flen));
		f = al_format_json(j, flags & 1, err, sizeof(err));
		json_decref(j);
		if (f) {
			out.len = 0;
			al_format_render(f, &r, &out);
			json_error_t je;
			json_t *back = json_loadb(out.p, out.len, JSON_DISABLE_EOF_CHECK, &je);
			/* the output must be JSON (jansson rejects invalid UTF-8 from
			 * header bytes, so only check inputs that are plain ASCII) */
			bool ascii = true;
			for (size_t i = 0; i < size; i++)
				ascii &= data[i] < 0x80;
			if (ascii && !back)
				__builtin_trap();
			json_decref(back);
			al_format_free(f);
		}
	}
	al_buf_free(&out);
	al_format_thread_exit();
	hdrs_free(&h);
	free(fmt);
	return 0;
}
