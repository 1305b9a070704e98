/* listener_inspect_fuzz.c - libFuzzer target for the listener inspectors:
 * each input is what a client sent first; http_inspector's request-line /
 * preface detector and tls_inspector's OpenSSL ClientHello parse run on it
 * and on every prefix length the worker could peek (a few cut points), and
 * the SNI/ALPN found feed the filter-chain selector.
 *
 * Build: `make fuzz-bins` (build/fuzz/listener_inspect_fuzz); run:
 *   build/fuzz/listener_inspect_fuzz -max_total_time=20 tests/fuzz/corpus/listener_inspect */
#include <netinet/in.h>
#include "filters/listener/http_inspector/http_inspector.h"
#include "filters/listener/tls_inspector/tls_inspector.h"
#include "proxy/filter_chain_match.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static SSL_CTX *ctx;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct tls_hello h;
	if (!ctx)
		ctx = tls_inspector_ctx_new();
	if (size > 65536)
		size = 65536;
	size_t cuts[] = { size, size / 2, size / 3, 1 };
	for (size_t i = 0; i < sizeof(cuts) / sizeof(cuts[0]); i++) {
		size_t n = cuts[i] <= size ? cuts[i] : size;
		enum http_detect d = http_inspector_detect(data, n);
		/* a decision on a prefix never changes with more bytes */
		if (d != HTTP_DETECT_NEED_MORE && http_inspector_detect(data, size) != d)
			__builtin_trap();
		tls_inspector_parse(ctx, data, n, &h);
	}
	if (tls_inspector_parse(ctx, data, size, &h) == TLS_DETECT_TLS) {
		static struct fc_match m[3];
		static char *names[] = { "*.example.com" }, *alpn[] = { "h2" };
		m[0].server_names = names;
		m[0].nsn = 1;
		m[1].app_protocols = alpn;
		m[1].nap = 1;
		struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons(443) };
		struct fcm_input in = { (struct sockaddr *)&sa, (struct sockaddr *)&sa, h.sni, "tls",
					h.alpn, h.alpn_len };
		if (fcm_select(m, 3, &in) < 0)
			__builtin_trap();   /* chain 2 matches everything */
	}
	return 0;
}
