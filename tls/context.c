/* context.c - Downstream/UpstreamTlsContext: parsing, SSL_CTX building,
 * certificate verification (chain, SAN matchers, hash/SPKI pins) and the
 * per-worker SSL_CTX slots. */
#include "tls-t.h"

#include <arpa/inet.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/core_names.h>
#include "../proxy/log.h"
#include "../proxy/server.h"
#include "../proxy/worker.h"
#include "../proxy/snapshot.h"
#include "../proxy/router/route_regex.h"

int tls_conn_ex_idx = -1;
int tls_val_ex_idx = -1;
int tls_val_ref_ex_idx = -1;
static json_t *sds_sources;   /* bootstrap: envoy_grpc cluster names of sds_configs */

static const struct stat_desc tls_stat_desc[] = { TLS_STATS(STATS_DESC) };
static const struct stat_desc tls_version_desc[] = { { "TLSv1.2", STAT_COUNTER },
						     { "TLSv1.3", STAT_COUNTER } };

/* ---- StringMatcher ------------------------------------------------------------------ */

int tls_strm_parse(struct cfg_ctx *c, const json_t *m, struct tls_strm *out)
{
	static const char *const f[] = { "exact", "prefix", "suffix", "contains", "safe_regex",
					 "ignore_case", NULL };
	static const char *const kinds[] = { "exact", "prefix", "suffix", "contains", "safe_regex" };
	static const char *const rf[] = { "regex", "google_re2", NULL };
	int which = -1;
	if (cfg_expect_object(c, m) || cfg_check_fields(c, m, f) ||
	    cfg_bool(c, m, "ignore_case", &out->icase))
		return RM_ERROR;
	for (int i = 0; i < 5; i++) {
		if (!cfg_get(m, kinds[i]))
			continue;
		if (which >= 0)
			return cfg_fail(c, "only one of exact, prefix, suffix, contains, safe_regex may be set");
		which = i;
	}
	if (which < 0)
		return cfg_fail(c, "one of exact, prefix, suffix, contains, safe_regex is required");
	out->kind = (enum tls_sm_kind)which;
	if (out->kind == TLS_SM_REGEX) {
		const json_t *r = cfg_enter(c, m, "safe_regex");
		const char *pat = NULL;
		int rc = cfg_expect_object(c, r) || cfg_check_fields(c, r, rf) ||
			 cfg_string_req(c, r, "regex", &pat);
		if (!rc) {
			cfg_enter(c, r, "regex");
			out->re = route_re_compile(c, pat, ROUTE_RE_FULL);
			cfg_leave(c);
			rc = out->re ? RM_OK : RM_ERROR;
		}
		cfg_leave(c);
		return rc;
	}
	const char *s = NULL;
	if (cfg_string(c, m, kinds[which], &s))
		return RM_ERROR;
	if (!*s && out->kind != TLS_SM_EXACT)
		return cfg_fail_field(c, m, kinds[which], "must not be empty");
	out->s = xstrdup(s);
	out->len = strlen(s);
	return RM_OK;
}

void tls_strm_free(struct tls_strm *m)
{
	free(m->s);
	route_re_free(m->re);
	memset(m, 0, sizeof(*m));
}

static bool eq(const char *a, const char *b, size_t n, bool icase)
{
	return icase ? mem_ieq(a, b, n) : !memcmp(a, b, n);
}

bool tls_strm_match(const struct tls_strm *m, const char *s, size_t n)
{
	switch (m->kind) {
	case TLS_SM_EXACT:
		return n == m->len && eq(s, m->s, n, m->icase);
	case TLS_SM_PREFIX:
		return n >= m->len && eq(s, m->s, m->len, m->icase);
	case TLS_SM_SUFFIX:
		return n >= m->len && eq(s + n - m->len, m->s, m->len, m->icase);
	case TLS_SM_CONTAINS:
		for (size_t i = 0; i + m->len <= n; i++)
			if (eq(s + i, m->s, m->len, m->icase))
				return true;
		return false;
	case TLS_SM_REGEX:
		return route_re_match(m->re, s, n);
	}
	return false;
}

/* A DNS SAN of the certificate against an exact matcher: "*.example.com"
 * in the certificate matches one label (Envoy's dnsNameMatch). */
static bool dns_match(const struct tls_strm *m, const char *san, size_t n)
{
	if (tls_strm_match(m, san, n))
		return true;
	if (m->kind != TLS_SM_EXACT || n < 3 || san[0] != '*' || san[1] != '.')
		return false;
	const char *dot = memchr(m->s, '.', m->len);
	if (!dot || dot == m->s)
		return false;
	size_t rest = m->len - (size_t)(dot - m->s);
	return rest == n - 1 && mem_ieq(dot, san + 1, rest);
}

bool tls_san_check(const struct tls_validation *v, X509 *leaf)
{
	if (!v->nsans)
		return true;
	GENERAL_NAMES *gens = X509_get_ext_d2i(leaf, NID_subject_alt_name, NULL, NULL);
	bool ok = false;
	for (int i = 0; !ok && gens && i < sk_GENERAL_NAME_num(gens); i++) {
		const GENERAL_NAME *g = sk_GENERAL_NAME_value(gens, i);
		char ip[64];
		const char *s;
		size_t n;
		if (g->type == GEN_URI || g->type == GEN_DNS || g->type == GEN_EMAIL) {
			s = (const char *)g->d.ia5->data;
			n = (size_t)g->d.ia5->length;
		} else if (g->type == GEN_IPADD) {
			if (!inet_ntop(g->d.ip->length == 4 ? AF_INET : AF_INET6, g->d.ip->data, ip,
				       sizeof(ip)) || (g->d.ip->length != 4 && g->d.ip->length != 16))
				continue;
			s = ip;
			n = strlen(ip);
		} else {
			continue;
		}
		for (size_t k = 0; !ok && k < v->nsans; k++) {
			const struct tls_san_m *sm = &v->sans[k];
			if (sm->type && sm->type != g->type)
				continue;
			ok = g->type == GEN_DNS ? dns_match(&sm->m, s, n) : tls_strm_match(&sm->m, s, n);
		}
	}
	GENERAL_NAMES_free(gens);
	return ok;
}

static bool pin_check(const struct tls_validation *v, X509 *leaf)
{
	unsigned char md[32];
	unsigned int mdlen = 0;
	if (!v->nhashes && !v->nspkis)
		return true;
	if (v->nhashes && X509_digest(leaf, EVP_sha256(), md, &mdlen) == 1)
		for (size_t i = 0; i < v->nhashes; i++)
			if (!memcmp(md, v->hashes[i], 32))
				return true;
	if (v->nspkis && X509_pubkey_digest(leaf, EVP_sha256(), md, &mdlen) == 1)
		for (size_t i = 0; i < v->nspkis; i++)
			if (!memcmp(md, v->spkis[i], 32))
				return true;
	return false;
}

/* ---- verification ------------------------------------------------------------------ */

static int ignore_expiry_cb(int ok, X509_STORE_CTX *sctx)
{
	int e = X509_STORE_CTX_get_error(sctx);
	if (!ok && (e == X509_V_ERR_CERT_HAS_EXPIRED || e == X509_V_ERR_CERT_NOT_YET_VALID)) {
		X509_STORE_CTX_set_error(sctx, X509_V_OK);
		return 1;
	}
	return ok;
}

static void fail_verify(struct tls_conn *tc, int stat, const char *why)
{
	tc->verify_failed = true;
	stats_inc(tc->t->stats, tc->shard, stat);
	log_info("tls: %s: peer %s: certificate verification failed: %s", tc->t->label, tc->peer, why);
}

/* Replaces OpenSSL's chain verification (SSL_CTX_set_cert_verify_callback):
 * the chain when a trusted CA is configured, then SAN matchers, then pins. */
static int verify_cb(X509_STORE_CTX *sctx, void *arg)
{
	struct tls_ctx *t = arg;
	SSL *ssl = X509_STORE_CTX_get_ex_data(sctx, SSL_get_ex_data_X509_STORE_CTX_idx());
	struct tls_conn *tc = ssl ? SSL_get_ex_data(ssl, tls_conn_ex_idx) : NULL;
	X509 *leaf = X509_STORE_CTX_get0_cert(sctx);
	/* the validation this SSL_CTX was built with (SDS may replace the
	 * secret's on the main thread meanwhile) */
	const struct tls_validation *v = ssl ? SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), tls_val_ex_idx)
					     : NULL;
	if (!tc || !leaf)
		return 0;
	if (!t->val)
		return 1;
	if (!v) {   /* an SDS validation context that has not arrived */
		X509_STORE_CTX_set_error(sctx, X509_V_ERR_UNSPECIFIED);
		fail_verify(tc, fail_verify_error, "the validation context secret has not arrived (SDS)");
		return 0;
	}
	if (v->ca.kind && !v->accept_untrusted) {
		if (v->allow_expired)
			X509_STORE_CTX_set_verify_cb(sctx, ignore_expiry_cb);
		if (X509_verify_cert(sctx) <= 0) {
			fail_verify(tc, fail_verify_error,
				    X509_verify_cert_error_string(X509_STORE_CTX_get_error(sctx)));
			return 0;
		}
	}
	if (tc->verify_host) {
		/* auto_san_validation: the request's host replaces the SAN matchers */
		if (X509_check_host(leaf, tc->verify_host, 0, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS,
				    NULL) != 1) {
			X509_STORE_CTX_set_error(sctx, X509_V_ERR_HOSTNAME_MISMATCH);
			fail_verify(tc, fail_verify_san, "the certificate does not match the host");
			return 0;
		}
	} else if (!tls_san_check(v, leaf) || (t->san_val && !tls_san_check(t->san_val->v, leaf))) {
		X509_STORE_CTX_set_error(sctx, X509_V_ERR_SUBJECT_ISSUER_MISMATCH);
		fail_verify(tc, fail_verify_san, "no subject alt name matches");
		return 0;
	}
	if (!pin_check(v, leaf)) {
		X509_STORE_CTX_set_error(sctx, X509_V_ERR_CERT_REJECTED);
		fail_verify(tc, fail_verify_cert_hash, "certificate hash / SPKI pin mismatch");
		return 0;
	}
	return 1;
}

/* ---- session tickets (session_ticket_keys) ------------------------------------------- */

static int ticket_cb(SSL *ssl, unsigned char *name, unsigned char *iv, EVP_CIPHER_CTX *ectx,
		     EVP_MAC_CTX *hctx, int enc)
{
	struct tls_conn *tc = SSL_get_ex_data(ssl, tls_conn_ex_idx);
	struct tls_ctx *t = tc ? tc->t : NULL;
	const unsigned char (*key)[80] = NULL;
	if (!t || !t->nticket_keys)
		return -1;
	if (enc) {
		key = &t->ticket_keys[0];
		memcpy(name, *key, 16);
		if (RAND_bytes(iv, EVP_MAX_IV_LENGTH) != 1)
			return -1;
	} else {
		for (size_t i = 0; i < t->nticket_keys && !key; i++)
			if (!memcmp(name, t->ticket_keys[i], 16))
				key = &t->ticket_keys[i];
		if (!key)
			return 0;   /* unknown key: full handshake */
	}
	OSSL_PARAM params[3];
	params[0] = OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY, (void *)(*key + 16), 32);
	params[1] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"sha256", 0);
	params[2] = OSSL_PARAM_construct_end();
	if (EVP_MAC_CTX_set_params(hctx, params) != 1)
		return -1;
	if (enc)
		return EVP_EncryptInit_ex(ectx, EVP_aes_256_cbc(), NULL, *key + 48, iv) == 1 ? 1 : -1;
	if (EVP_DecryptInit_ex(ectx, EVP_aes_256_cbc(), NULL, *key + 48, iv) != 1)
		return -1;
	return key == &t->ticket_keys[0] ? 1 : 2;   /* 2: renew with the current key */
}

/* ---- building ---------------------------------------------------------------------- */

STACK_OF(X509) *tls_pem_certs(const char *data, size_t len)
{
	STACK_OF(X509) *sk = sk_X509_new_null();
	BIO *bio = BIO_new_mem_buf(data, (int)len);
	X509 *x;
	if (!sk || !bio)
		die("openssl: out of memory");
	while ((x = PEM_read_bio_X509(bio, NULL, NULL, NULL)))
		sk_X509_push(sk, x);
	ERR_clear_error();
	BIO_free(bio);
	return sk;
}

static int alpn_select_cb(SSL *ssl, const unsigned char **out, unsigned char *outlen,
			  const unsigned char *in, unsigned int inlen, void *arg)
{
	struct tls_ctx *t = arg;
	(void)ssl;
	/* the server's preference order, as Envoy */
	for (size_t i = 0; i < t->alpn_len; i += 1 + t->alpn[i]) {
		for (unsigned k = 0; k < inlen; k += 1u + in[k]) {
			if (in[k] == t->alpn[i] && k + 1u + in[k] <= inlen &&
			    !memcmp(in + k + 1, t->alpn + i + 1, in[k])) {
				*out = in + k + 1;
				*outlen = in[k];
				return SSL_TLSEXT_ERR_OK;
			}
		}
	}
	return SSL_TLSEXT_ERR_NOACK;   /* no overlap: continue without ALPN */
}

static int new_session_cb(SSL *ssl, SSL_SESSION *sess)
{
	struct tls_conn *tc = SSL_get_ex_data(ssl, tls_conn_ex_idx);
	if (!tc || !tc->t->client_sessions || tc->shard >= tc->t->nslots)
		return 0;
	struct tls_slot *slot = &tc->t->slots[tc->shard];
	if (slot->sess)
		SSL_SESSION_free(slot->sess);
	slot->sess = sess;
	return 1;   /* we keep the reference */
}

static const char *ossl_err(void)
{
	static __thread char buf[256];
	unsigned long e = ERR_get_error();
	if (!e)
		return "unknown OpenSSL error";
	ERR_error_string_n(e, buf, sizeof(buf));
	ERR_clear_error();
	return buf;
}

static int add_cert_secret(SSL_CTX *ctx, const struct tls_secret *s, char *err, size_t errlen)
{
	STACK_OF(X509) *chain = tls_pem_certs(s->chain.data, s->chain.len);
	BIO *bio = BIO_new_mem_buf(s->key.data, (int)s->key.len);
	EVP_PKEY *pk = PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL);
	int rc = RM_ERROR;
	BIO_free(bio);
	if (!sk_X509_num(chain)) {
		snprintf(err, errlen, "no PEM certificate in '%s'", s->chain.path ? s->chain.path : "<inline>");
	} else if (!pk) {
		snprintf(err, errlen, "no PEM private key in '%s'", s->key.path ? s->key.path : "<inline>");
	} else {
		X509 *leaf = sk_X509_shift(chain);
		if (SSL_CTX_use_cert_and_key(ctx, leaf, pk, chain, 1) != 1)
			snprintf(err, errlen, "certificate '%s' / key '%s': %s",
				 s->chain.path ? s->chain.path : "<inline>",
				 s->key.path ? s->key.path : "<inline>", ossl_err());
		else
			rc = RM_OK;
		X509_free(leaf);
	}
	ERR_clear_error();
	EVP_PKEY_free(pk);
	sk_X509_pop_free(chain, X509_free);
	return rc;
}

static int add_validation(SSL_CTX *ctx, const struct tls_validation *v, char *err, size_t errlen)
{
	X509_STORE *st = SSL_CTX_get_cert_store(ctx);
	if (v->ca.kind) {
		STACK_OF(X509) *cas = tls_pem_certs(v->ca.data, v->ca.len);
		int n = sk_X509_num(cas);
		for (int i = 0; i < n; i++)
			X509_STORE_add_cert(st, sk_X509_value(cas, i));
		sk_X509_pop_free(cas, X509_free);
		if (!n) {
			snprintf(err, errlen, "no PEM certificate in trusted_ca '%s'",
				 v->ca.path ? v->ca.path : "<inline>");
			return RM_ERROR;
		}
	}
	if (v->crl.kind) {
		BIO *bio = BIO_new_mem_buf(v->crl.data, (int)v->crl.len);
		X509_CRL *crl;
		int n = 0;
		while ((crl = PEM_read_bio_X509_CRL(bio, NULL, NULL, NULL))) {
			X509_STORE_add_crl(st, crl);
			X509_CRL_free(crl);
			n++;
		}
		BIO_free(bio);
		ERR_clear_error();
		if (!n) {
			snprintf(err, errlen, "no PEM CRL in '%s'", v->crl.path ? v->crl.path : "<inline>");
			return RM_ERROR;
		}
		X509_STORE_set_flags(st, X509_V_FLAG_CRL_CHECK |
					 (v->crl_leaf_only ? 0 : X509_V_FLAG_CRL_CHECK_ALL));
	}
	return RM_OK;
}

SSL_CTX *tls_ctx_build(struct tls_ctx *t, char *err, size_t errlen)
{
	SSL_CTX *ctx = SSL_CTX_new(t->server ? TLS_server_method() : TLS_client_method());
	if (!ctx)
		die("SSL_CTX_new");
	SSL_CTX_set_min_proto_version(ctx, t->min_ver);
	SSL_CTX_set_max_proto_version(ctx, t->max_ver);
	SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_IGNORE_UNEXPECTED_EOF |
				 SSL_OP_NO_COMPRESSION | SSL_OP_CIPHER_SERVER_PREFERENCE);
	SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
	SSL_CTX_set_read_ahead(ctx, 1);   /* a record (or several) per read syscall */
	const char *ciphers = t->ciphers ? t->ciphers :
		"ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-CHACHA20-POLY1305:"
		"ECDHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-CHACHA20-POLY1305:"
		"ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384";
	if (SSL_CTX_set_cipher_list(ctx, ciphers) != 1) {
		snprintf(err, errlen, "tls_params.cipher_suites: no usable cipher in '%s'", ciphers);
		goto error;
	}
	const char *curves = t->curves ? t->curves : "X25519:P-256";
	if (SSL_CTX_set1_groups_list(ctx, curves) != 1) {
		snprintf(err, errlen, "tls_params.ecdh_curves: unsupported curve in '%s'", curves);
		goto error;
	}
	for (size_t i = 0; i < t->ncerts; i++)   /* a pending SDS secret: none yet */
		if (tls_secret_usable(t->certs[i]) && add_cert_secret(ctx, t->certs[i], err, errlen))
			goto error;
	if (t->val && tls_secret_usable(t->val)) {
		if (add_validation(ctx, t->val->v, err, errlen))
			goto error;
		SSL_CTX_set_ex_data(ctx, tls_val_ex_idx, t->val->v);
		if (t->val->v != &t->val->val) {   /* SDS: replaced by updates, refcounted */
			atomic_fetch_add_explicit(&t->val->v->ctx_refs, 1, memory_order_relaxed);
			SSL_CTX_set_ex_data(ctx, tls_val_ref_ex_idx, t->val->v);
		}
	}
	int mode = SSL_VERIFY_NONE;
	if (t->server) {
		if (t->val || t->require_client_cert)
			mode = SSL_VERIFY_PEER;
		if (t->require_client_cert)
			mode |= SSL_VERIFY_FAIL_IF_NO_PEER_CERT;
	} else if (t->val) {
		mode = SSL_VERIFY_PEER;
	}
	SSL_CTX_set_verify(ctx, mode, NULL);
	SSL_CTX_set_cert_verify_callback(ctx, verify_cb, t);
	if (t->server) {
		SSL_CTX_set_session_id_context(ctx, t->sid_ctx, sizeof(t->sid_ctx));
		if (t->alpn_len)
			SSL_CTX_set_alpn_select_cb(ctx, alpn_select_cb, t);
		if (t->no_tickets) {
			/* no TLS 1.2 tickets, and no TLS 1.3 tickets at all (OpenSSL
			 * would send stateful ones; BoringSSL, Envoy's, sends none);
			 * TLS 1.2 session ids still resume from the internal cache */
			SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
			SSL_CTX_set_num_tickets(ctx, 0);
		} else {
			/* tickets carry the sessions: no server-side cache, so no
			 * shared, locked table on the handshake path and no memory
			 * that grows with the number of clients */
			SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
			if (t->nticket_keys)
				SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, ticket_cb);
		}
		if (t->session_timeout_s)
			SSL_CTX_set_timeout(ctx, (long)t->session_timeout_s);
	} else {
		if (t->alpn_len)
			SSL_CTX_set_alpn_protos(ctx, t->alpn, (unsigned)t->alpn_len);
		if (t->client_sessions) {
			SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT |
							    SSL_SESS_CACHE_NO_INTERNAL_STORE);
			SSL_CTX_sess_set_new_cb(ctx, new_session_cb);
		} else {
			SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
		}
		if (t->session_timeout_s)
			SSL_CTX_set_timeout(ctx, (long)t->session_timeout_s);
	}
	ERR_clear_error();
	return ctx;
error:
	ERR_clear_error();
	SSL_CTX_free(ctx);
	return NULL;
}

/* An SSL_CTX is freed (any thread: a worker swapping its slot, the last
 * connection using it closing): drop its reference on the validation it
 * was built with.  The main thread frees retired validations at 0
 * (secrets.c, tls_validation_sweep). */
static void val_ex_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl, void *argp)
{
	struct tls_validation *v = ptr;
	(void)parent;
	(void)ad;
	(void)idx;
	(void)argl;
	(void)argp;
	if (v)
		atomic_fetch_sub_explicit(&v->ctx_refs, 1, memory_order_release);
}

/* ---- publishing to the workers ------------------------------------------------------ */

struct swap_msg {
	struct tls_ctx *t;
	SSL_CTX *ctx;                 /* one reference, for the worker's slot */
};

static void ctx_free_main(void *arg);

/* Drop one reference; the last one frees t on the main thread. */
static void ctx_unref(struct tls_ctx *t)
{
	if (__atomic_sub_fetch(&t->refs, 1, __ATOMIC_ACQ_REL))
		return;
	if (current_worker)
		main_post(ctx_free_main, t);
	else
		ctx_free_main(t);
}

static void worker_swap(struct worker *w, void *arg)
{
	struct swap_msg *m = arg;
	struct tls_slot *slot = &m->t->slots[w->shard];
	SSL_CTX *old = slot->ctx;
	slot->ctx = m->ctx;
	SSL_CTX_free(old);   /* connections using it hold their own references */
	/* the context may have been released while this swap was queued (a
	 * listener rebuilt before its workers ran the swap): the message's
	 * reference kept it alive until now */
	ctx_unref(m->t);
	free(m);
}

/* Takes ctx's reference. */
void tls_ctx_publish(struct tls_ctx *t, SSL_CTX *ctx)
{
	struct server *srv = &g_server;
	bool running = srv->workers && srv->base;
	for (unsigned i = 0; i < t->nslots; i++) {
		if (i == 0 || !running) {
			SSL_CTX_up_ref(ctx);
			SSL_CTX_free(t->slots[i].ctx);
			t->slots[i].ctx = ctx;
			continue;
		}
		struct swap_msg *m = xcalloc(1, sizeof(*m));
		m->t = t;
		m->ctx = ctx;
		SSL_CTX_up_ref(ctx);
		__atomic_add_fetch(&t->refs, 1, __ATOMIC_RELAXED);
		worker_post(&srv->workers[i - 1], worker_swap, m);
	}
	SSL_CTX_free(ctx);
}

/* Snapshots may be released on a worker: the context list, the secret store
 * and stats scopes belong to the main thread, so the work moves there (and
 * waits for swaps still queued to workers, see worker_swap). */
void tls_ctx_free(struct tls_ctx *t)
{
	if (!t)
		return;
	ctx_unref(t);
}

static void ctx_free_main(void *arg)
{
	struct tls_ctx *t = arg;
	tls_ctx_unlink(t);
	/* the SSL_CTXs first: they point at the secrets' validations */
	for (unsigned i = 0; i < t->nslots; i++) {
		SSL_CTX_free(t->slots[i].ctx);
		if (t->slots[i].sess)
			SSL_SESSION_free(t->slots[i].sess);
	}
	for (size_t i = 0; i < t->ncerts; i++)
		tls_secret_release(t->certs[i]);
	tls_secret_release(t->val);
	tls_secret_release(t->san_val);
	free(t->slots);
	free(t->certs);
	free(t->label);
	free(t->ciphers);
	free(t->curves);
	free(t->alpn);
	free(t->sni);
	free(t->ticket_keys);
	stats_scope_free(t->stats);
	stats_scope_free(t->vstats);
	free(t);
}

/* ---- parsing ------------------------------------------------------------------------- */

static int parse_version(struct cfg_ctx *c, const json_t *p, const char *field, int *out)
{
	static const char *const names[] = { "TLS_AUTO", "TLSv1_0", "TLSv1_1", "TLSv1_2", "TLSv1_3" };
	static const int vers[] = { 0, TLS1_VERSION, TLS1_1_VERSION, TLS1_2_VERSION, TLS1_3_VERSION };
	int v = 0;
	if (!cfg_get(p, field))
		return RM_OK;
	if (cfg_enum(c, p, field, names, 5, &v))
		return RM_ERROR;
	if (v && v < 3)
		return cfg_fail_field(c, p, field, "TLS versions below 1.2 are not supported");
	if (v)
		*out = vers[v];
	return RM_OK;
}

/* A list of strings joined with sep (brackets and '|' of BoringSSL's equal
 * preference groups flattened for OpenSSL). */
static int join_list(struct cfg_ctx *c, const json_t *obj, const char *field, char **out)
{
	const json_t *arr = cfg_enter(c, obj, field);
	if (!arr)
		return RM_OK;
	if (cfg_expect_array(c, arr))
		return RM_ERROR;
	size_t cap = 1;
	for (size_t i = 0; i < json_array_size(arr); i++) {
		const char *s = json_string_value(json_array_get(arr, i));
		if (!s) {
			cfg_enter_idx(c, arr, i);
			return cfg_fail(c, "expected a string");
		}
		cap += strlen(s) + 1;
	}
	char *buf = xcalloc(1, cap), *p = buf;
	for (size_t i = 0; i < json_array_size(arr); i++) {
		const char *s = json_string_value(json_array_get(arr, i));
		if (i)
			*p++ = ':';
		for (; *s; s++)
			if (*s != '[' && *s != ']')
				*p++ = *s == '|' ? ':' : *s;
	}
	*p = 0;
	cfg_leave(c);
	free(*out);
	*out = json_array_size(arr) ? buf : NULL;
	if (!*out)
		free(buf);
	return RM_OK;
}

static int parse_tls_params(struct cfg_ctx *c, const json_t *p, struct tls_ctx *t)
{
	static const char *const f[] = { "tls_minimum_protocol_version", "tls_maximum_protocol_version",
					 "cipher_suites", "ecdh_curves", NULL };
	if (cfg_expect_object(c, p) || cfg_check_fields(c, p, f) ||
	    parse_version(c, p, "tls_minimum_protocol_version", &t->min_ver) ||
	    parse_version(c, p, "tls_maximum_protocol_version", &t->max_ver) ||
	    join_list(c, p, "cipher_suites", &t->ciphers) || join_list(c, p, "ecdh_curves", &t->curves))
		return RM_ERROR;
	if (t->min_ver > t->max_ver)
		return cfg_fail(c, "tls_minimum_protocol_version is above tls_maximum_protocol_version");
	return RM_OK;
}

/* sds_config (a ConfigSource): ads, or api_config_source (GRPC or REST) to the
 * bootstrap's xDS cluster (served by its transport: the ADS stream or REST
 * polling).  *timeout_ms: initial_fetch_timeout.  local: the secret is
 * provided in-process (tls_sds_local_declare), so the source is checked for
 * shape only (Istio bootstraps name an "sds-grpc" cluster for it). */
static int parse_sds_config(struct cfg_ctx *c, const json_t *sc, bool local, uint64_t *timeout_ms)
{
	const char *cluster = NULL;
	if (local)
		return xds_resource_source_parse_shape(c, sc, timeout_ms);
	if (xds_resource_source_parse(c, sc, timeout_ms, &cluster))
		return RM_ERROR;
	if (!g_server.xds.enabled) {   /* the bootstrap: dynamic_resources comes later */
		if (!sds_sources)
			sds_sources = json_array();
		json_array_append_new(sds_sources, json_string(cluster ? cluster : ""));
	}
	return RM_OK;
}

int tls_sds_check_sources(const char *ads_cluster, char *err, size_t errlen)
{
	size_t i;
	json_t *v;
	int rc = RM_OK;
	json_array_foreach(sds_sources, i, v) {
		const char *cl = json_string_value(v);
		if (err && (!ads_cluster || (*cl && strcmp(cl, ads_cluster)))) {
			snprintf(err, errlen, "sds_config: %s%s%s: SDS is "
				 "served on the ADS stream (dynamic_resources.ads_config%s%s)",
				 *cl ? "api_config_source cluster '" : "ads", cl, *cl ? "'" : "",
				 ads_cluster ? ", cluster " : " is not set",
				 ads_cluster ? ads_cluster : "");
			rc = RM_ERROR;
			break;
		}
	}
	json_decref(sds_sources);
	sds_sources = NULL;
	return rc;
}

/* SdsSecretConfig {name[, sds_config]} -> a static secret of that kind, or
 * (sds_config) an SDS secret, subscribed over ADS. */
static struct tls_secret *sds_ref(struct cfg_ctx *c, const json_t *s, enum secret_kind kind)
{
	static const char *const f[] = { "name", "sds_config", NULL };
	const char *name = NULL;
	const json_t *sc;
	if (cfg_expect_object(c, s) || cfg_check_fields(c, s, f) || cfg_string_req(c, s, "name", &name))
		return NULL;
	if ((sc = cfg_enter(c, s, "sds_config"))) {
		uint64_t ms = 0;
		char err[256];
		if (parse_sds_config(c, sc, tls_sds_is_local(name), &ms))
			return NULL;
		xds_sds_source_note(name, sc);   /* the stream it is fetched on */
		cfg_leave(c);
		if (!*name) {
			cfg_fail_field(c, s, "name", "an SDS secret needs a name");
			return NULL;
		}
		struct tls_secret *sec = tls_sds_ref(name, kind, ms, err, sizeof(err));
		if (!sec)
			cfg_fail_field(c, s, "name", "%s", err);
		return sec;
	}
	struct tls_secret *sec = tls_secret_find(name);
	if (!sec)
		cfg_fail_field(c, s, "name", "unknown secret '%s' (static_resources.secrets)", name);
	else if (sec->kind != kind) {
		cfg_fail_field(c, s, "name", "secret '%s' is not a %s", name,
			       kind == SECRET_CERT ? "tls_certificate" : "validation_context");
		sec = NULL;
	}
	return sec;
}

static int parse_common(struct cfg_ctx *c, const json_t *cc, struct tls_ctx *t)
{
	static const char *const f[] = { "tls_params", "tls_certificates",
					 "tls_certificate_sds_secret_configs", "validation_context",
					 "validation_context_sds_secret_config", "combined_validation_context",
					 "alpn_protocols", NULL };
	const json_t *v;
	if (cfg_expect_object(c, cc) || cfg_check_fields(c, cc, f))
		return RM_ERROR;
	if ((v = cfg_enter(c, cc, "tls_params"))) {
		if (parse_tls_params(c, v, t))
			return RM_ERROR;
		cfg_leave(c);
	}
	size_t n1 = (v = cfg_get(cc, "tls_certificates")) ? json_array_size(v) : 0;
	size_t n2 = (v = cfg_get(cc, "tls_certificate_sds_secret_configs")) ? json_array_size(v) : 0;
	t->certs = xcalloc(n1 + n2 + 1, sizeof(*t->certs));
	if ((v = cfg_enter(c, cc, "tls_certificates"))) {
		if (cfg_expect_array(c, v))
			return RM_ERROR;
		for (size_t i = 0; i < json_array_size(v); i++) {
			struct tls_secret *s = tls_secret_add(NULL, SECRET_CERT);
			if (tls_certpair_parse(c, cfg_enter_idx(c, v, i), s))
				return RM_ERROR;
			t->certs[t->ncerts++] = s;
			cfg_leave(c);
		}
		cfg_leave(c);
	}
	if ((v = cfg_enter(c, cc, "tls_certificate_sds_secret_configs"))) {
		if (cfg_expect_array(c, v))
			return RM_ERROR;
		for (size_t i = 0; i < json_array_size(v); i++) {
			struct tls_secret *s = sds_ref(c, cfg_enter_idx(c, v, i), SECRET_CERT);
			if (!s)
				return RM_ERROR;
			t->certs[t->ncerts++] = s;
			cfg_leave(c);
		}
		cfg_leave(c);
	}
	if (!!cfg_get(cc, "validation_context") + !!cfg_get(cc, "validation_context_sds_secret_config") +
	    !!cfg_get(cc, "combined_validation_context") > 1)
		return cfg_fail(c, "only one of validation_context, validation_context_sds_secret_config, "
				"combined_validation_context may be set");
	if ((v = cfg_enter(c, cc, "combined_validation_context"))) {
		/* the SDS trust (ROOTCA) plus SAN matchers checked on top of it
		 * (Istio's outbound clusters); only the SAN fields are merged */
		static const char *const cf[] = { "default_validation_context",
						  "validation_context_sds_secret_config", NULL };
		static const char *const df[] = { "match_typed_subject_alt_names",
						  "match_subject_alt_names", NULL };
		const json_t *d, *sv;
		if (cfg_expect_object(c, v) || cfg_check_fields(c, v, cf) ||
		    !(sv = cfg_enter_req(c, v, "validation_context_sds_secret_config")) ||
		    !(t->val = sds_ref(c, sv, SECRET_VALIDATION)))
			return RM_ERROR;
		cfg_leave(c);
		if ((d = cfg_enter(c, v, "default_validation_context"))) {
			if (cfg_expect_object(c, d))
				return RM_ERROR;
			const char *k;
			json_t *x;
			json_object_foreach((json_t *)d, k, x) {
				const char *const *a;
				for (a = df; *a && strcmp(*a, k); a++)
					;
				if (!*a)
					return cfg_fail_field(c, d, k, "only the subject alt name matchers "
							      "are supported in a combined validation context");
			}
			t->san_val = tls_secret_add(NULL, SECRET_VALIDATION);
			if (tls_validation_parse(c, d, t->san_val->v))
				return RM_ERROR;
			cfg_leave(c);
		}
		cfg_leave(c);
	}
	if ((v = cfg_enter(c, cc, "validation_context"))) {
		t->val = tls_secret_add(NULL, SECRET_VALIDATION);
		if (tls_validation_parse(c, v, t->val->v))
			return RM_ERROR;
		cfg_leave(c);
	}
	if ((v = cfg_enter(c, cc, "validation_context_sds_secret_config"))) {
		if (!(t->val = sds_ref(c, v, SECRET_VALIDATION)))
			return RM_ERROR;
		cfg_leave(c);
	}
	if ((v = cfg_enter(c, cc, "alpn_protocols"))) {
		if (cfg_expect_array(c, v))
			return RM_ERROR;
		size_t cap = 0;
		for (size_t i = 0; i < json_array_size(v); i++) {
			const char *s = json_string_value(json_array_get(v, i));
			if (!s || !*s || strlen(s) > 255) {
				cfg_enter_idx(c, v, i);
				return cfg_fail(c, "expected a protocol name of 1..255 characters");
			}
			cap += strlen(s) + 1;
		}
		t->alpn = xmalloc(cap + 1);
		for (size_t i = 0; i < json_array_size(v); i++) {
			const char *s = json_string_value(json_array_get(v, i));
			t->alpn[t->alpn_len++] = (unsigned char)strlen(s);
			memcpy(t->alpn + t->alpn_len, s, strlen(s));
			t->alpn_len += strlen(s);
		}
		cfg_leave(c);
	}
	return RM_OK;
}

static int parse_ticket_keys(struct cfg_ctx *c, const json_t *k, struct tls_ctx *t)
{
	static const char *const f[] = { "keys", NULL };
	const json_t *arr;
	if (cfg_expect_object(c, k) || cfg_check_fields(c, k, f) || !(arr = cfg_enter_req(c, k, "keys")) ||
	    cfg_expect_array(c, arr))
		return RM_ERROR;
	if (!json_array_size(arr))
		return cfg_fail(c, "at least one key is required");
	t->ticket_keys = xcalloc(json_array_size(arr), 80);
	for (size_t i = 0; i < json_array_size(arr); i++) {
		struct tls_datasrc ds = { 0 };
		json_t *holder = json_pack("{s:O}", "key", json_array_get(arr, i));
		cfg_enter_idx(c, arr, i);
		int rc = tls_datasrc_parse(c, holder, "key", &ds, true);
		json_decref(holder);
		if (!rc && ds.len != 80)
			rc = cfg_fail(c, "a session ticket key must be exactly 80 bytes (has %zu)", ds.len);
		if (!rc)
			memcpy(t->ticket_keys[t->nticket_keys++], ds.data, 80);
		free(ds.path);
		free(ds.data);
		if (rc)
			return RM_ERROR;
		cfg_leave(c);
	}
	cfg_leave(c);
	return RM_OK;
}

static int parse_downstream(struct cfg_ctx *c, const json_t *tc, struct tls_ctx *t)
{
	static const char *const f[] = { "common_tls_context", "require_client_certificate",
					 "session_ticket_keys", "disable_stateless_session_resumption",
					 "session_timeout", "require_sni", NULL };
	const json_t *v;
	uint64_t ms = 0;
	bool require_sni = false;
	if (cfg_check_fields(c, tc, f) ||
	    cfg_bool(c, tc, "require_client_certificate", &t->require_client_cert) ||
	    cfg_bool(c, tc, "disable_stateless_session_resumption", &t->no_tickets) ||
	    cfg_bool(c, tc, "require_sni", &require_sni) ||
	    cfg_duration_ms(c, tc, "session_timeout", &ms))
		return RM_ERROR;
	if (require_sni)
		return cfg_fail_field(c, tc, "require_sni", "require_sni is not supported yet");
	t->session_timeout_s = (ms + 999) / 1000;
	if ((v = cfg_enter(c, tc, "common_tls_context"))) {
		if (parse_common(c, v, t))
			return RM_ERROR;
		cfg_leave(c);
	}
	if ((v = cfg_enter(c, tc, "session_ticket_keys"))) {
		if (parse_ticket_keys(c, v, t))
			return RM_ERROR;
		cfg_leave(c);
	}
	if (!t->ncerts)
		return cfg_fail(c, "a DownstreamTlsContext needs a certificate (common_tls_context."
				   "tls_certificates or tls_certificate_sds_secret_configs)");
	return RM_OK;
}

static int parse_upstream(struct cfg_ctx *c, const json_t *tc, struct tls_ctx *t)
{
	static const char *const f[] = { "common_tls_context", "sni", "allow_renegotiation",
					 "max_session_keys", NULL };
	const json_t *v;
	const char *sni = NULL;
	bool reneg = false;
	uint32_t keys = 1;
	if (cfg_check_fields(c, tc, f) || cfg_string(c, tc, "sni", &sni) ||
	    cfg_bool(c, tc, "allow_renegotiation", &reneg) || cfg_u32(c, tc, "max_session_keys", &keys))
		return RM_ERROR;
	if (reneg)
		return cfg_fail_field(c, tc, "allow_renegotiation", "renegotiation is not supported");
	if (sni && *sni)
		t->sni = xstrdup(sni);
	t->client_sessions = keys > 0;
	if ((v = cfg_enter(c, tc, "common_tls_context"))) {
		if (parse_common(c, v, t))
			return RM_ERROR;
		cfg_leave(c);
	}
	if (t->ncerts > 1)
		return cfg_fail(c, "an UpstreamTlsContext takes at most one certificate");
	return RM_OK;
}

int tls_transport_socket_parse(struct cfg_ctx *c, const json_t *ts, bool server,
			       struct build_ctx *b, const char *stat_scope, const char *tag_prefix,
			       const char *tag_name, const char *tag_value, struct tls_ctx **out)
{
	static const char *const f[] = { "name", "typed_config", NULL };
	const char *name = NULL, *type = NULL;
	const json_t *tc;
	char err[512];
	*out = NULL;
	if (cfg_expect_object(c, ts) || cfg_check_fields(c, ts, f) || cfg_string(c, ts, "name", &name))
		return RM_ERROR;
	tc = cfg_get(ts, "typed_config");
	if (tc && json_is_object(tc))
		type = json_string_value(json_object_get(tc, "@type"));
	const char *want = server ? TLS_DOWNSTREAM_TYPE : TLS_UPSTREAM_TYPE;
	if (type ? !strcmp(type, "type.googleapis.com/envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer")
		 : name && !strcmp(name, RAW_BUFFER_NAME))
		return RM_OK;
	if (type ? strcmp(type, want) : !name || strcmp(name, TLS_TRANSPORT_NAME))
		return cfg_fail_field(c, ts, type ? "typed_config" : "name",
				      "unsupported transport socket '%s' (%s with %s, or raw_buffer, are)",
				      type ? type : name ? name : "", TLS_TRANSPORT_NAME, want);
	if (!(tc = cfg_enter_req(c, ts, "typed_config")))
		return RM_ERROR;
	if (tls_conn_ex_idx < 0)
		tls_conn_ex_idx = SSL_get_ex_new_index(0, NULL, NULL, NULL, NULL);
	if (tls_val_ex_idx < 0)
		tls_val_ex_idx = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, NULL);
	if (tls_val_ref_ex_idx < 0)
		tls_val_ref_ex_idx = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, val_ex_free);
	struct tls_ctx *t = xcalloc(1, sizeof(*t));
	t->refs = 1;
	t->server = server;
	t->min_ver = TLS1_2_VERSION;
	t->max_ver = TLS1_3_VERSION;
	t->label = xasprintf("%s", stat_scope);
	int rc = cfg_expect_object(c, tc) ||
		 (server ? parse_downstream(c, tc, t) : parse_upstream(c, tc, t));
	if (rc) {
		tls_ctx_free(t);
		return RM_ERROR;
	}
	{
		unsigned char md[32];
		unsigned int n = 0;
		EVP_Digest(stat_scope, strlen(stat_scope), md, &n, EVP_sha256(), NULL);
		memcpy(t->sid_ctx, md, sizeof(t->sid_ctx));
	}
	t->nslots = b->nworkers + 1;
	t->slots = aligned_alloc(64, t->nslots * sizeof(*t->slots));
	if (!t->slots)
		die("out of memory");
	memset(t->slots, 0, t->nslots * sizeof(*t->slots));
	SSL_CTX *ctx = tls_ctx_build(t, err, sizeof(err));
	if (!ctx) {
		cfg_fail(c, "%s", err);
		tls_ctx_free(t);
		return RM_ERROR;
	}
	tls_ctx_publish(t, ctx);
	cfg_leave(c);
	char *scope = xasprintf("%s.ssl", stat_scope), *tp = xasprintf("%s.ssl", tag_prefix);
	t->stats = stats_scope_new(b->stats, scope, tp, tag_name, tag_value, tls_stat_desc, TLS_STATS_N);
	free(scope);
	free(tp);
	scope = xasprintf("%s.ssl.versions", stat_scope);
	tp = xasprintf("%s.ssl.versions", tag_prefix);
	t->vstats = stats_scope_new(b->stats, scope, tp, tag_name, tag_value, tls_version_desc, TLS_V_N);
	free(scope);
	free(tp);
	tls_ctx_link(t);
	*out = t;
	return RM_OK;
}
