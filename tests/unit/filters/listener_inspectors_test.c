/* listener_inspectors_test.c - http_inspector's request-line / preface
 * detection and tls_inspector's ClientHello parsing (a real OpenSSL client
 * writes the hello into a memory BIO). */
#include "test.h"
#include <openssl/ssl.h>
#include "filters/listener/http_inspector/http_inspector.h"
#include "filters/listener/tls_inspector/tls_inspector.h"

static enum http_detect hd(const char *s)
{
	return http_inspector_detect((const uint8_t *)s, strlen(s));
}

TEST(http_inspector_detects)
{
	CHECK_INT(hd("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), HTTP_DETECT_HTTP11);
	CHECK_INT(hd("POST /a?b=c HTTP/1.0\r\n"), HTTP_DETECT_HTTP10);
	CHECK_INT(hd("OPTIONS * HTTP/1.1\n"), HTTP_DETECT_HTTP11);
	CHECK_INT(hd("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), HTTP_DETECT_HTTP2);
	/* prefixes of valid input wait for more */
	CHECK_INT(hd(""), HTTP_DETECT_NEED_MORE);
	CHECK_INT(hd("GE"), HTTP_DETECT_NEED_MORE);
	CHECK_INT(hd("GET /very/long"), HTTP_DETECT_NEED_MORE);
	CHECK_INT(hd("GET / HTTP/1."), HTTP_DETECT_NEED_MORE);
	CHECK_INT(hd("GET / HTTP/1.1\r"), HTTP_DETECT_NEED_MORE);
	CHECK_INT(hd("PRI * HTTP/2.0\r\n"), HTTP_DETECT_NEED_MORE);
	/* not HTTP/1.x or h2c */
	CHECK_INT(hd("EHLO mail.example.com\r\n"), HTTP_DETECT_NOT_HTTP);
	CHECK_INT(hd("GET / HTTP/2.0\r\n"), HTTP_DETECT_NOT_HTTP);
	CHECK_INT(hd("GET / HTTP/1.1 \r\n"), HTTP_DETECT_NOT_HTTP);
	CHECK_INT(hd("GET  / HTTP/1.1\r\n"), HTTP_DETECT_NOT_HTTP);
	CHECK_INT(hd("\x16\x03\x01\x02\x00"), HTTP_DETECT_NOT_HTTP);
	CHECK_INT(hd("SSH-2.0-OpenSSH_9.2\r\n"), HTTP_DETECT_NOT_HTTP);
	CHECK_INT(hd("PRI * HTTP/2.1\r\n"), HTTP_DETECT_NOT_HTTP);
	CHECK_INT(http_inspector_detect((const uint8_t *)"\0\0\0\x0a", 4), HTTP_DETECT_NOT_HTTP);
}

/* A real ClientHello from an OpenSSL client with the given SNI and ALPN. */
static size_t client_hello(const char *sni, const unsigned char *alpn, unsigned alpn_len,
			   uint8_t *out, size_t cap)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
	SSL *ssl = SSL_new(ctx);
	BIO *rb = BIO_new(BIO_s_mem()), *wb = BIO_new(BIO_s_mem());
	SSL_set_bio(ssl, rb, wb);
	SSL_set_connect_state(ssl);
	if (sni)
		SSL_set_tlsext_host_name(ssl, sni);
	if (alpn)
		SSL_set_alpn_protos(ssl, alpn, alpn_len);
	SSL_do_handshake(ssl);
	int n = BIO_read(wb, out, (int)cap);
	SSL_free(ssl);
	SSL_CTX_free(ctx);
	return n > 0 ? (size_t)n : 0;
}

TEST(tls_inspector_parses_client_hello)
{
	uint8_t buf[4096];
	struct tls_hello h;
	SSL_CTX *ctx = tls_inspector_ctx_new();
	static const unsigned char alpn[] = "\x02h2\x08http/1.1";
	size_t n = client_hello("API.Example.com", alpn, sizeof(alpn) - 1, buf, sizeof(buf));
	CHECK(n > 50);
	CHECK_INT(tls_inspector_parse(ctx, buf, n, &h), TLS_DETECT_TLS);
	CHECK_STR(h.sni, "api.example.com");
	CHECK_INT(h.alpn_len, sizeof(alpn) - 1);
	CHECK(!memcmp(h.alpn, alpn, sizeof(alpn) - 1));
	/* every strict prefix asks for more */
	size_t needs = 0;
	for (size_t k = 1; k < n; k += 7)
		needs += tls_inspector_parse(ctx, buf, k, &h) == TLS_DETECT_NEED_MORE;
	CHECK_INT(needs, (n - 2) / 7 + 1);
	/* no SNI, no ALPN */
	n = client_hello(NULL, NULL, 0, buf, sizeof(buf));
	CHECK_INT(tls_inspector_parse(ctx, buf, n, &h), TLS_DETECT_TLS);
	CHECK_STR(h.sni, "");
	CHECK_INT(h.alpn_len, 0);
	/* plaintext and garbage */
	CHECK_INT(tls_inspector_parse(ctx, (const uint8_t *)"GET / HTTP/1.1\r\n", 16, &h),
		  TLS_DETECT_NOT_TLS);
	CHECK_INT(tls_inspector_parse(ctx, (const uint8_t *)"\x16\x03\x01\x00\x05zzzzz", 10, &h),
		  TLS_DETECT_NOT_TLS);
	CHECK(!h.got);
	SSL_CTX_free(ctx);
}
