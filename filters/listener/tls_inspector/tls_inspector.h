/* tls_inspector.h - envoy.filters.listener.tls_inspector: is the client
 * starting a TLS handshake, and with which SNI and ALPN?  Parsing is
 * OpenSSL's (a server SSL on memory BIOs with a ClientHello callback that
 * records SNI/ALPN and aborts the handshake), exposed for unit tests. */
#ifndef REMORA_TLS_INSPECTOR_H
#define REMORA_TLS_INSPECTOR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <openssl/ssl.h>

enum tls_detect { TLS_DETECT_NEED_MORE = 0, TLS_DETECT_TLS, TLS_DETECT_NOT_TLS };

#define TLS_INSPECTOR_MAX_CLIENT_HELLO (64 * 1024)

struct tls_hello {
	char sni[256];                       /* "" if none */
	uint8_t alpn[256];                   /* ALPN wire format, whole entries only */
	size_t alpn_len;
	bool got;                            /* the ClientHello callback ran */
};

/* An SSL_CTX whose handshakes stop at the ClientHello (caller frees). */
SSL_CTX *tls_inspector_ctx_new(void);
/* Judge d[0..n): a complete ClientHello fills *h. */
enum tls_detect tls_inspector_parse(SSL_CTX *ctx, const uint8_t *d, size_t n, struct tls_hello *h);

#endif
