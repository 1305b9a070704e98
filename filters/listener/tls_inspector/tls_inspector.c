/* tls_inspector.c - envoy.filters.listener.tls_inspector.
 *
 * As Envoy does with BoringSSL: the peeked bytes are fed to a server-side
 * SSL through a memory BIO; OpenSSL parses the record layer and the
 * ClientHello, and our client-hello callback copies SNI and ALPN out and
 * fails the handshake (nothing is ever written to the client, nothing is
 * consumed from the socket).  An incomplete hello asks for more bytes; a
 * first byte that is not a TLS handshake record is "not TLS" at once.
 * Stats, as Envoy's, in the global tree tls_inspector.*. */
#include "tls_inspector.h"

#include <string.h>
#include <openssl/err.h>
#include "proxy/common.h"
#include "proxy/filter.h"
#include "proxy/snapshot.h"
#include "proxy/worker.h"
#include "filters/listener/global_stats.h"

#define TLS_INSPECTOR_TYPE "type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector"

#define TLS_INSPECTOR_STATS(X)                                                        \
	X(COUNTER, client_hello_too_large) X(COUNTER, tls_found) X(COUNTER, tls_not_found) \
	X(COUNTER, alpn_found) X(COUNTER, alpn_not_found) X(COUNTER, sni_found)          \
	X(COUNTER, sni_not_found) X(COUNTER, read_error)
enum { TLS_INSPECTOR_STATS(STATS_ENUM) TLS_INSPECTOR_STATS_N };
static const struct stat_desc ti_stat_desc[] = { TLS_INSPECTOR_STATS(STATS_DESC) };

/* server_name extension: list length (2), then entries of type (1),
 * length (2), name; the host_name entry (type 0) is the SNI. */
static void copy_sni(const unsigned char *p, size_t len, struct tls_hello *h)
{
	if (len < 2)
		return;
	size_t list = ((size_t)p[0] << 8) | p[1];
	p += 2;
	len -= 2;
	if (list < len)
		len = list;
	while (len >= 3) {
		unsigned type = p[0];
		size_t n = ((size_t)p[1] << 8) | p[2];
		if (n > len - 3)
			return;
		if (type == 0 && n > 0 && n < sizeof(h->sni)) {
			for (size_t i = 0; i < n; i++) {
				unsigned char c = p[3 + i];
				h->sni[i] = (char)(c >= 'A' && c <= 'Z' ? c + 32 : c);
			}
			h->sni[n] = '\0';
			return;
		}
		p += 3 + n;
		len -= 3 + n;
	}
}

/* ALPN extension: list length (2), then length-prefixed names. */
static void copy_alpn(const unsigned char *p, size_t len, struct tls_hello *h)
{
	if (len < 2)
		return;
	size_t list = ((size_t)p[0] << 8) | p[1];
	p += 2;
	len -= 2;
	if (list < len)
		len = list;
	size_t off = 0;
	while (off < len) {
		size_t n = p[off];
		if (!n || off + 1 + n > len || h->alpn_len + 1 + n > sizeof(h->alpn))
			break;
		memcpy(h->alpn + h->alpn_len, p + off, 1 + n);
		h->alpn_len += 1 + n;
		off += 1 + n;
	}
}

static int hello_cb(SSL *ssl, int *al, void *arg)
{
	struct tls_hello *h = SSL_get_app_data(ssl);
	const unsigned char *p;
	size_t len;
	(void)arg;
	h->got = true;
	if (SSL_client_hello_get0_ext(ssl, TLSEXT_TYPE_server_name, &p, &len))
		copy_sni(p, len, h);
	if (SSL_client_hello_get0_ext(ssl, TLSEXT_TYPE_application_layer_protocol_negotiation, &p, &len))
		copy_alpn(p, len, h);
	*al = SSL_AD_HANDSHAKE_FAILURE;
	return SSL_CLIENT_HELLO_ERROR;   /* we only wanted to look */
}

SSL_CTX *tls_inspector_ctx_new(void)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
	if (!ctx)
		die("SSL_CTX_new failed");
	SSL_CTX_set_min_proto_version(ctx, 0);
	SSL_CTX_set_client_hello_cb(ctx, hello_cb, NULL);
	return ctx;
}

enum tls_detect tls_inspector_parse(SSL_CTX *ctx, const uint8_t *d, size_t n, struct tls_hello *h)
{
	memset(h, 0, sizeof(*h));
	if (!n)
		return TLS_DETECT_NEED_MORE;
	if (d[0] != 0x16)   /* not a TLS handshake record */
		return TLS_DETECT_NOT_TLS;
	SSL *ssl = SSL_new(ctx);
	BIO *rb = BIO_new(BIO_s_mem()), *wb = BIO_new(BIO_s_mem());
	if (!ssl || !rb || !wb)
		die("out of memory (tls_inspector)");
	BIO_set_mem_eof_return(rb, -1);   /* out of bytes: "want read", not EOF */
	if (BIO_write(rb, d, (int)n) != (int)n)
		die("BIO_write");
	SSL_set_bio(ssl, rb, wb);
	SSL_set_app_data(ssl, h);
	SSL_set_accept_state(ssl);
	int rc = SSL_do_handshake(ssl);
	int err = rc == 1 ? SSL_ERROR_NONE : SSL_get_error(ssl, rc);
	SSL_free(ssl);
	ERR_clear_error();
	if (h->got)
		return TLS_DETECT_TLS;
	return err == SSL_ERROR_WANT_READ ? TLS_DETECT_NEED_MORE : TLS_DETECT_NOT_TLS;
}

struct ti_cfg {
	SSL_CTX *ctx;                        /* owned */
	struct stats_scope *stats;           /* shared (global_stats) */
};

static struct global_stats ti_global;

static void *ti_parse(struct cfg_ctx *c, const json_t *tc, struct build_ctx *b)
{
	static const char *const f[] = { "enable_ja3_fingerprinting", "enable_ja4_fingerprinting",
					 "initial_read_buffer_size", NULL };
	bool ja3 = false, ja4 = false;
	uint32_t initial = 0;
	if (tc && (cfg_expect_object(c, tc) || cfg_check_fields(c, tc, f) ||
		   cfg_bool(c, tc, "enable_ja3_fingerprinting", &ja3) ||
		   cfg_bool(c, tc, "enable_ja4_fingerprinting", &ja4) ||
		   cfg_u32(c, tc, "initial_read_buffer_size", &initial)))
		return NULL;
	if (ja3 || ja4) {
		cfg_fail_field(c, tc, ja3 ? "enable_ja3_fingerprinting" : "enable_ja4_fingerprinting",
			       "TLS fingerprinting is not supported");
		return NULL;
	}
	/* initial_read_buffer_size is a hint for Envoy's first read; we always
	 * peek what has arrived (up to 64 KiB), so it only has to be sane */
	if (tc && cfg_get(tc, "initial_read_buffer_size") &&
	    (initial == 0 || initial > TLS_INSPECTOR_MAX_CLIENT_HELLO)) {
		cfg_fail_field(c, tc, "initial_read_buffer_size", "expected 1..%d",
			       TLS_INSPECTOR_MAX_CLIENT_HELLO);
		return NULL;
	}
	struct ti_cfg *cfg = xcalloc(1, sizeof(*cfg));
	cfg->ctx = tls_inspector_ctx_new();
	cfg->stats = global_stats_get(&ti_global, b->stats, "tls_inspector", ti_stat_desc,
				      TLS_INSPECTOR_STATS_N);
	return cfg;
}

static void ti_free(void *p)
{
	struct ti_cfg *cfg = p;
	if (!cfg)
		return;
	SSL_CTX_free(cfg->ctx);
	global_stats_put(&ti_global, cfg->stats);
	free(cfg);
}

static size_t ti_max_read(const void *cfg)
{
	(void)cfg;
	return TLS_INSPECTOR_MAX_CLIENT_HELLO;
}

static enum lf_status ti_on_data(struct listener_accept *a, const void *p, struct worker *w,
				 const uint8_t *data, size_t len)
{
	const struct ti_cfg *cfg = p;
	struct tls_hello h;
	if (!data) {
		stats_inc(cfg->stats, w->shard, read_error);
		return LF_CLOSE;
	}
	switch (tls_inspector_parse(cfg->ctx, data, len, &h)) {
	case TLS_DETECT_NEED_MORE:
		if (len < TLS_INSPECTOR_MAX_CLIENT_HELLO)
			return LF_AGAIN;
		stats_inc(cfg->stats, w->shard, client_hello_too_large);
		return LF_CLOSE;
	case TLS_DETECT_NOT_TLS:
		stats_inc(cfg->stats, w->shard, tls_not_found);
		return LF_CONTINUE;
	default:
		break;
	}
	stats_inc(cfg->stats, w->shard, tls_found);
	a->transport_protocol = "tls";
	if (h.sni[0]) {
		stats_inc(cfg->stats, w->shard, sni_found);
		memcpy(a->server_name, h.sni, sizeof(a->server_name));
	} else {
		stats_inc(cfg->stats, w->shard, sni_not_found);
	}
	if (h.alpn_len) {
		stats_inc(cfg->stats, w->shard, alpn_found);
		memcpy(a->alpn, h.alpn, h.alpn_len);
		a->alpn_len = (uint16_t)h.alpn_len;
	} else {
		stats_inc(cfg->stats, w->shard, alpn_not_found);
	}
	return LF_CONTINUE;
}

const struct listener_filter_ops tls_inspector_listener_filter_ops = {
	.name = "envoy.filters.listener.tls_inspector",
	.type_url = TLS_INSPECTOR_TYPE,
	.parse_config = ti_parse,
	.free_config = ti_free,
	.max_read_bytes = ti_max_read,
	.on_data = ti_on_data,
};
