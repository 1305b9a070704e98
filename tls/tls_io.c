/* tls_io.c - one TLS connection: non-blocking handshake, reads and writes on
 * the socket (OpenSSL's socket BIO), and the peer's identity.
 *
 * proxy/conn.c owns the events and buffers and calls these.  Writes go out
 * in records of up to 16 KiB taken from the output evbuffer without copying
 * when the first chain is large enough; a write that could not complete is
 * retried with the same length (OpenSSL's rule), the bytes stay in the
 * evbuffer until OpenSSL took them.  SSL_MODE_RELEASE_BUFFERS frees the
 * record buffers of idle connections. */
#include "tls-t.h"

#include <errno.h>
#include <arpa/inet.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <event2/buffer.h>
#include "../proxy/log.h"
#include "../proxy/worker.h"
#include "../proxy/config/address.h"
#include "../proxy/downstream.h"

#define TLS_RECORD 16384

static __thread unsigned char wscratch[TLS_RECORD];

struct tls_conn *tls_conn_new(struct tls_ctx *t, int fd, bool server, const char *sni,
			      const struct sockaddr *peer)
{
	struct tls_conn *tc = xcalloc(1, sizeof(*tc));
	struct worker *w = current_worker;
	tc->t = t;
	tc->server = server;
	tc->shard = w ? w->shard : 0;
	if (tc->shard >= t->nslots)
		tc->shard = 0;
	struct tls_slot *slot = &t->slots[tc->shard];
	tc->ssl = SSL_new(slot->ctx);
	if (!tc->ssl)
		die("SSL_new");
	SSL_set_ex_data(tc->ssl, tls_conn_ex_idx, tc);
	SSL_set_fd(tc->ssl, fd);
	if (peer)
		sockaddr_format(peer, tc->peer, sizeof(tc->peer));
	if (server) {
		SSL_set_accept_state(tc->ssl);
	} else {
		SSL_set_connect_state(tc->ssl);
		if (!sni)
			sni = t->sni;
		if (sni)
			SSL_set_tlsext_host_name(tc->ssl, sni);
		/* the cached session was made with the context's own sni */
		if (t->client_sessions && slot->sess && (sni == t->sni || (sni && t->sni && !strcmp(sni, t->sni))))
			SSL_set_session(tc->ssl, slot->sess);
	}
	return tc;
}

void tls_conn_free(struct tls_conn *tc)
{
	if (!tc)
		return;
	if (tc->handshake_done)
		SSL_shutdown(tc->ssl);   /* best effort close_notify (non-blocking) */
	ERR_clear_error();
	SSL_free(tc->ssl);
	free(tc->uri_san);
	free(tc->principal);
	free(tc->verify_host);
	free(tc->xfcc);
	free(tc);
}

void tls_io_shutdown(struct tls_conn *tc)
{
	if (tc->handshake_done)
		SSL_shutdown(tc->ssl);
	ERR_clear_error();
}

bool tls_io_pending(const struct tls_conn *tc)
{
	return SSL_has_pending(tc->ssl);
}

/* ---- identity ------------------------------------------------------------------------ */

/* The first SAN of type (GEN_URI, GEN_DNS), caller frees; NULL if none. */
static char *x509_first_san(X509 *x, int type)
{
	char *out = NULL;
	GENERAL_NAMES *gens = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
	for (int i = 0; !out && gens && i < sk_GENERAL_NAME_num(gens); i++) {
		const GENERAL_NAME *g = sk_GENERAL_NAME_value(gens, i);
		if (g->type == type)
			out = xstrndup((const char *)g->d.ia5->data, (size_t)g->d.ia5->length);
	}
	GENERAL_NAMES_free(gens);
	return out;
}

char *tls_x509_uri_san(X509 *x)
{
	return x509_first_san(x, GEN_URI);
}

char *tls_x509_subject(X509 *x)
{
	BIO *b = BIO_new(BIO_s_mem());
	char *p, *out;
	X509_NAME_print_ex(b, X509_get_subject_name(x), 0, XN_FLAG_RFC2253);
	long n = BIO_get_mem_data(b, &p);
	out = xstrndup(p, n > 0 ? (size_t)n : 0);
	BIO_free(b);
	return out;
}

static void on_established(struct tls_conn *tc)
{
	struct tls_ctx *t = tc->t;
	X509 *peer = SSL_get0_peer_certificate(tc->ssl);
	tc->handshake_done = true;
	stats_inc(t->stats, tc->shard, handshake);
	if (SSL_session_reused(tc->ssl))
		stats_inc(t->stats, tc->shard, session_reused);
	int v = SSL_version(tc->ssl);
	if (v == TLS1_3_VERSION)
		stats_inc(t->vstats, tc->shard, TLS_V_13);
	else if (v == TLS1_2_VERSION)
		stats_inc(t->vstats, tc->shard, TLS_V_12);
	if (!peer) {
		if (tc->server)
			stats_inc(t->stats, tc->shard, no_certificate);
		return;
	}
	tc->uri_san = tls_x509_uri_san(peer);
	/* Envoy's RBAC principal: URI SAN, else DNS SAN, else subject */
	tc->principal = tc->uri_san ? xstrdup(tc->uri_san) : x509_first_san(peer, GEN_DNS);
	if (!tc->principal)
		tc->principal = tls_x509_subject(peer);
}

static void on_failed(struct tls_conn *tc, int err)
{
	unsigned long e = ERR_peek_error();
	char buf[256] = "";
	if (e)
		ERR_error_string_n(e, buf, sizeof(buf));
	else if (err == SSL_ERROR_SYSCALL)
		snprintf(buf, sizeof(buf), "%s", errno ? strerror(errno) : "connection closed");
	else
		snprintf(buf, sizeof(buf), "TLS error %d", err);
	if (!tc->verify_failed) {
		if (tc->server && ERR_GET_REASON(e) == SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE)
			stats_inc(tc->t->stats, tc->shard, fail_verify_no_cert);
		else
			stats_inc(tc->t->stats, tc->shard, connection_error);
	}
	if (tc->verify_failed)   /* the reason was logged by the verifier */
		log_debug("tls: %s: handshake with %s failed: %s", tc->t->label, tc->peer, buf);
	else
		log_info("tls: %s: handshake with %s failed: %s", tc->t->label, tc->peer, buf);
	ERR_clear_error();
}

static enum tls_io map_err(struct tls_conn *tc, int r)
{
	int err = SSL_get_error(tc->ssl, r);
	switch (err) {
	case SSL_ERROR_WANT_READ:
		return TLS_IO_WANT_READ;
	case SSL_ERROR_WANT_WRITE:
		return TLS_IO_WANT_WRITE;
	case SSL_ERROR_ZERO_RETURN:
		return TLS_IO_EOF;
	case SSL_ERROR_SYSCALL:
		if (!ERR_peek_error() && (errno == EAGAIN || errno == EINTR))
			return TLS_IO_WANT_READ;
		/* fallthrough */
	default:
		if (!tc->handshake_done)
			on_failed(tc, err);
		else
			log_debug("tls: %s: connection with %s: I/O error %d", tc->t->label, tc->peer, err);
		ERR_clear_error();
		return TLS_IO_ERROR;
	}
}

enum tls_io tls_io_handshake(struct tls_conn *tc)
{
	ERR_clear_error();
	errno = 0;
	int r = SSL_do_handshake(tc->ssl);
	if (r == 1) {
		on_established(tc);
		return TLS_IO_OK;
	}
	enum tls_io rc = map_err(tc, r);
	if (rc == TLS_IO_EOF) {
		on_failed(tc, SSL_ERROR_ZERO_RETURN);
		rc = TLS_IO_ERROR;
	}
	return rc;
}

/* One SSL_read per socket event, like the raw path's one readv: read-ahead
 * pulls whatever the socket has into OpenSSL's buffer with one syscall, and
 * the loop continues only while whole records wait there (no extra read
 * that would just return EAGAIN).  Plaintext lands in a per-thread scratch
 * and is appended at its size: no 16 KiB chain per small request. */
static __thread unsigned char rscratch[TLS_RECORD];

enum tls_io tls_io_read(struct tls_conn *tc, struct evbuffer *in, size_t max, size_t *n)
{
	*n = 0;
	do {
		ERR_clear_error();
		errno = 0;
		size_t got = 0;
		int r = SSL_read_ex(tc->ssl, rscratch, sizeof(rscratch), &got);
		if (r != 1) {
			enum tls_io rc = map_err(tc, r);
			return rc == TLS_IO_WANT_READ && *n ? TLS_IO_OK : rc;
		}
		evbuffer_add(in, rscratch, got);
		*n += got;
	} while (*n < max && SSL_has_pending(tc->ssl));
	return TLS_IO_OK;
}

enum tls_io tls_io_write(struct tls_conn *tc, struct evbuffer *out)
{
	size_t len;
	while ((len = evbuffer_get_length(out))) {
		struct evbuffer_iovec v;
		size_t n = tc->wpending ? tc->wpending : MIN(len, (size_t)TLS_RECORD);
		const void *p;
		evbuffer_peek(out, -1, NULL, &v, 1);
		if (v.iov_len >= n) {
			p = v.iov_base;
		} else {
			evbuffer_copyout(out, wscratch, n);
			p = wscratch;
		}
		ERR_clear_error();
		errno = 0;
		size_t done = 0;
		int r = SSL_write_ex(tc->ssl, p, n, &done);
		if (r != 1) {
			tc->wpending = n;
			return map_err(tc, r);
		}
		tc->wpending = 0;
		evbuffer_drain(out, done);
	}
	return TLS_IO_OK;
}

const char *tls_conn_alpn(const struct tls_conn *tc, unsigned *len)
{
	const unsigned char *p = NULL;
	SSL_get0_alpn_selected(tc->ssl, &p, len);
	return *len ? (const char *)p : NULL;
}

const char *tls_conn_peer_principal(const struct tls_conn *tc) { return tc->principal; }
const char *tls_conn_peer_uri_san(const struct tls_conn *tc) { return tc->uri_san; }
void tls_conn_set_verify_host(struct tls_conn *tc, const char *host)
{
	free(tc->verify_host);
	tc->verify_host = xstrdup(host);
}

const char *tls_conn_sni(const struct tls_conn *tc)
{
	return SSL_get_servername(tc->ssl, TLSEXT_NAMETYPE_host_name);
}
const char *downstream_peer_principal(const struct downstream *d)
{
	struct tls_conn *tc = d->bev ? conn_tls(d->bev) : NULL;
	return tc ? tc->principal : NULL;
}

bool tls_conn_peer_cert_presented(const struct tls_conn *tc)
{
	return tc->handshake_done && SSL_get0_peer_certificate(tc->ssl) != NULL;
}

/* ---- x-forwarded-client-cert ----------------------------------------------------------- */

/* Percent-encode everything but RFC 3986 unreserved characters. */
static void url_encode(BIO *out, const char *s, size_t n)
{
	static const char hex[] = "0123456789ABCDEF";
	for (size_t i = 0; i < n; i++) {
		unsigned char ch = (unsigned char)s[i];
		if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
		    ch == '-' || ch == '.' || ch == '_' || ch == '~') {
			BIO_write(out, &ch, 1);
		} else {
			char e[3] = { '%', hex[ch >> 4], hex[ch & 15] };
			BIO_write(out, e, 3);
		}
	}
}

static void pem_encoded(BIO *out, X509 *x)
{
	BIO *m = BIO_new(BIO_s_mem());
	char *p;
	PEM_write_bio_X509(m, x);
	long n = BIO_get_mem_data(m, &p);
	url_encode(out, p, n > 0 ? (size_t)n : 0);
	BIO_free(m);
}

const char *tls_conn_xfcc(struct tls_conn *tc, unsigned details, size_t *len)
{
	X509 *peer = SSL_get0_peer_certificate(tc->ssl);
	if (tc->xfcc) {
		*len = tc->xfcc_len;
		return tc->xfcc;
	}
	if (!peer) {
		*len = 0;
		return NULL;
	}
	BIO *b = BIO_new(BIO_s_mem());
	bool first = true;
	X509 *local = SSL_get_certificate(tc->ssl);
	char *by = local ? tls_x509_uri_san(local) : NULL;
	if (by) {
		BIO_printf(b, "By=%s", by);
		first = false;
	}
	free(by);
	unsigned char md[32];
	unsigned int mdlen = 0;
	if (X509_digest(peer, EVP_sha256(), md, &mdlen) == 1) {
		BIO_printf(b, "%sHash=", first ? "" : ";");
		for (unsigned i = 0; i < mdlen; i++)
			BIO_printf(b, "%02x", md[i]);
		first = false;
	}
	/* Envoy's order: Subject, URI, DNS, Cert, Chain */
	if (details & TLS_XFCC_SUBJECT) {
		char *s = tls_x509_subject(peer);
		BIO_printf(b, "%sSubject=\"%s\"", first ? "" : ";", s);
		free(s);
		first = false;
	}
	GENERAL_NAMES *gens = X509_get_ext_d2i(peer, NID_subject_alt_name, NULL, NULL);
	if (details & TLS_XFCC_URI) {
		bool any = false;
		for (int i = 0; gens && i < sk_GENERAL_NAME_num(gens); i++) {
			const GENERAL_NAME *g = sk_GENERAL_NAME_value(gens, i);
			if (g->type != GEN_URI)
				continue;
			BIO_printf(b, "%sURI=%.*s", first ? "" : ";", g->d.ia5->length,
				   (const char *)g->d.ia5->data);
			first = false;
			any = true;
		}
		if (!any) {
			BIO_printf(b, "%sURI=", first ? "" : ";");
			first = false;
		}
	}
	if (details & TLS_XFCC_DNS) {
		for (int i = 0; gens && i < sk_GENERAL_NAME_num(gens); i++) {
			const GENERAL_NAME *g = sk_GENERAL_NAME_value(gens, i);
			if (g->type != GEN_DNS)
				continue;
			BIO_printf(b, "%sDNS=%.*s", first ? "" : ";", g->d.ia5->length,
				   (const char *)g->d.ia5->data);
			first = false;
		}
	}
	GENERAL_NAMES_free(gens);
	if (details & TLS_XFCC_CERT) {
		BIO_printf(b, "%sCert=\"", first ? "" : ";");
		pem_encoded(b, peer);
		BIO_printf(b, "\"");
		first = false;
	}
	if (details & TLS_XFCC_CHAIN) {
		STACK_OF(X509) *chain = SSL_get_peer_cert_chain(tc->ssl);
		BIO_printf(b, "%sChain=\"", first ? "" : ";");
		/* the server side's chain excludes the leaf: put it first */
		if (tc->server)
			pem_encoded(b, peer);
		for (int i = 0; chain && i < sk_X509_num(chain); i++)
			pem_encoded(b, sk_X509_value(chain, i));
		BIO_printf(b, "\"");
	}
	char *p;
	long n = BIO_get_mem_data(b, &p);
	tc->xfcc = xstrndup(p, n > 0 ? (size_t)n : 0);
	tc->xfcc_len = n > 0 ? (size_t)n : 0;
	BIO_free(b);
	*len = tc->xfcc_len;
	return tc->xfcc;
}
