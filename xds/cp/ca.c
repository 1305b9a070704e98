/* ca.c - remora-cp's certificate authority (see ca.h). */
#include "ca.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>
#include <sys/stat.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <openssl/sha.h>
#include "istio/security/v1alpha1/ca.pb-c.h"
#include "kube_api.h"
#include "../../proxy/common.h"
#include "../../proxy/log.h"
#include "../../proxy/config/yaml_json.h"

#define CA_DEFAULT_TTL_S (24 * 3600)
#define CA_ROOT_DAYS 3650
#define CA_MAX_CSR (64 * 1024)

struct ca_token {
	char *token;                       /* owned */
	struct ca_identity id;
};

#define CA_REVIEW_CACHE 1024   /* positive TokenReviews kept (a renewal storm of that many pods) */

struct ca_review_entry {
	uint8_t hash[SHA256_DIGEST_LENGTH];   /* of the token: the token itself is not kept */
	struct ca_identity id;
	time_t until;                          /* 0: free slot */
};

struct ca_pending {
	struct ca_pending *prev, *next;   /* in ca->pending */
	struct ca *ca;
	struct kube_review *review;       /* in flight */
	uint8_t *req;                     /* owned: the request message */
	size_t len;
	char *peer;                       /* owned */
	uint8_t hash[SHA256_DIGEST_LENGTH];
	int64_t exp;                      /* the token's exp claim, 0 if none */
	ca_done_fn done;
	void *arg;
};

struct ca {
	EVP_PKEY *key;                     /* owned: the root's key */
	X509 *cert;                        /* owned: the root */
	char *root_pem;                    /* owned */
	char *trust_domain;                /* owned */
	uint64_t max_ttl_s;
	char *tokens_path;                 /* owned, may be NULL (no token accepted) */
	struct timespec tokens_mtime;
	off_t tokens_size;
	struct ca_token *tokens;           /* owned [ntokens] */
	size_t ntokens;
	struct ca_stats stats;
	struct kube_api *kube;             /* not owned, NULL: no TokenReview */
	uint64_t review_cache_s;
	struct ca_review_entry *cache;     /* owned [CA_REVIEW_CACHE], NULL without kube */
	struct ca_pending *pending;        /* TokenReviews in flight */
	unsigned npending;
};

static void ssl_err(char *msg, size_t msglen, const char *what)
{
	unsigned long e = ERR_get_error();
	char buf[256] = "";
	if (e)
		ERR_error_string_n(e, buf, sizeof(buf));
	ERR_clear_error();
	snprintf(msg, msglen, "%s%s%s", what, buf[0] ? ": " : "", buf);
}

/* ---- tokens ------------------------------------------------------------------------- */

static void tokens_free(struct ca_token *t, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		OPENSSL_cleanse(t[i].token, strlen(t[i].token));
		free(t[i].token);
	}
	free(t);
}

/* tokens: {<token>: {namespace: ns, service_account: sa}, ...} */
static int tokens_parse(const json_t *root, const char *path, struct ca_token **out, size_t *nout,
			char *err, size_t errlen)
{
	const json_t *m = json_object_get(root, "tokens");
	const char *k;
	json_t *v;
	size_t n = 0;
	if (!json_is_object(root) || json_object_size(root) != 1 || !json_is_object(m)) {
		snprintf(err, errlen, "%s: expected one top-level key 'tokens' (a map of token -> "
			 "{namespace, service_account})", path);
		return RM_ERROR;
	}
	struct ca_token *t = xcalloc(json_object_size(m) + 1, sizeof(*t));
	json_object_foreach((json_t *)m, k, v) {
		const char *ns = json_string_value(json_object_get(v, "namespace"));
		const char *sa = json_string_value(json_object_get(v, "service_account"));
		if (!json_is_object(v) || json_object_size(v) != 2 || !ns || !sa || !*ns || !*sa ||
		    strlen(ns) >= sizeof(t->id.ns) || strlen(sa) >= sizeof(t->id.sa) ||
		    strpbrk(ns, "/ ") || strpbrk(sa, "/ ") || !*k) {
			snprintf(err, errlen, "%s: tokens.<token #%zu>: expected {namespace, "
				 "service_account}: non-empty strings without '/' or spaces", path, n + 1);
			tokens_free(t, n);
			return RM_ERROR;
		}
		t[n].token = xstrdup(k);
		snprintf(t[n].id.ns, sizeof(t[n].id.ns), "%s", ns);
		snprintf(t[n].id.sa, sizeof(t[n].id.sa), "%s", sa);
		n++;
	}
	*out = t;
	*nout = n;
	return RM_OK;
}

/* (Re)load the tokens file if its mtime or size changed.  On a parse error
 * at a reload the previous tokens stay (logged). */
static int tokens_load(struct ca *ca, bool first, char *err, size_t errlen)
{
	struct stat st;
	if (!ca->tokens_path)
		return RM_OK;
	if (stat(ca->tokens_path, &st)) {
		snprintf(err, errlen, "%s: %s", ca->tokens_path, strerror(errno));
		return RM_ERROR;
	}
	if (!first && st.st_mtim.tv_sec == ca->tokens_mtime.tv_sec &&
	    st.st_mtim.tv_nsec == ca->tokens_mtime.tv_nsec && st.st_size == ca->tokens_size)
		return RM_OK;
	json_t *root = yaml_load_file(ca->tokens_path, NULL, err, errlen);
	struct ca_token *t;
	size_t n;
	if (!root)
		return RM_ERROR;
	int rc = tokens_parse(root, ca->tokens_path, &t, &n, err, errlen);
	json_decref(root);
	if (rc)
		return rc;
	tokens_free(ca->tokens, ca->ntokens);
	ca->tokens = t;
	ca->ntokens = n;
	ca->tokens_mtime = st.st_mtim;
	ca->tokens_size = st.st_size;
	if (!first)
		log_info("ca: reloaded %zu token(s) from %s", n, ca->tokens_path);
	return RM_OK;
}

int ca_authenticate(struct ca *ca, const char *authorization, struct ca_identity *id, char *msg,
		    size_t msglen)
{
	char err[512];
	if (!authorization || strncasecmp(authorization, "Bearer ", 7) || !authorization[7]) {
		snprintf(msg, msglen, "missing bearer token (authorization: Bearer <token>)");
		return CA_UNAUTHENTICATED;
	}
	if (tokens_load(ca, false, err, sizeof(err)))
		log_warn("ca: tokens file: %s (keeping the previous tokens)", err);
	const char *tok = authorization + 7;
	size_t tl = strlen(tok);
	const struct ca_token *hit = NULL;
	for (size_t i = 0; i < ca->ntokens; i++) {   /* constant time per candidate */
		size_t kl = strlen(ca->tokens[i].token);
		if (kl == tl && !CRYPTO_memcmp(ca->tokens[i].token, tok, tl))
			hit = &ca->tokens[i];
	}
	if (!hit) {
		snprintf(msg, msglen, "unknown bearer token");
		return CA_UNAUTHENTICATED;
	}
	*id = hit->id;
	return CA_OK;
}

/* ---- the root ----------------------------------------------------------------------- */

static int add_ext(X509 *x, X509 *issuer, int nid, const char *value)
{
	X509V3_CTX v3;
	X509V3_set_ctx_nodb(&v3);
	X509V3_set_ctx(&v3, issuer, x, NULL, NULL, 0);
	X509_EXTENSION *e = X509V3_EXT_conf_nid(NULL, &v3, nid, value);
	if (!e)
		return RM_ERROR;
	int ok = X509_add_ext(x, e, -1);
	X509_EXTENSION_free(e);
	return ok ? RM_OK : RM_ERROR;
}

static int set_serial(X509 *x)
{
	unsigned char b[16];
	if (RAND_bytes(b, sizeof(b)) != 1)
		return RM_ERROR;
	b[0] &= 0x7f;   /* positive, 127 random bits */
	b[0] |= 0x40;   /* and always 16 bytes long */
	BIGNUM *bn = BN_bin2bn(b, sizeof(b), NULL);
	int ok = bn && BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x));
	BN_free(bn);
	return ok ? RM_OK : RM_ERROR;
}

static int gen_root(struct ca *ca, char *err, size_t errlen)
{
	EVP_PKEY *k = EVP_EC_gen("P-256");
	X509 *x = X509_new();
	X509_NAME *n = X509_NAME_new();
	if (!k || !x || !n)
		goto fail;
	X509_set_version(x, X509_VERSION_3);
	if (set_serial(x) ||
	    !X509_NAME_add_entry_by_txt(n, "O", MBSTRING_UTF8, (const unsigned char *)ca->trust_domain,
				       -1, -1, 0) ||
	    !X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_UTF8, (const unsigned char *)"Remora CA",
				       -1, -1, 0) ||
	    !X509_set_subject_name(x, n) || !X509_set_issuer_name(x, n) ||
	    !X509_gmtime_adj(X509_getm_notBefore(x), -3600) ||
	    !X509_gmtime_adj(X509_getm_notAfter(x), (long)CA_ROOT_DAYS * 86400) ||
	    !X509_set_pubkey(x, k) || add_ext(x, x, NID_basic_constraints, "critical,CA:TRUE") ||
	    add_ext(x, x, NID_key_usage, "critical,keyCertSign,cRLSign") ||
	    add_ext(x, x, NID_subject_key_identifier, "hash") || !X509_sign(x, k, EVP_sha256()))
		goto fail;
	X509_NAME_free(n);
	ca->key = k;
	ca->cert = x;
	return RM_OK;
fail:
	ssl_err(err, errlen, "cannot generate the CA root");
	X509_NAME_free(n);
	X509_free(x);
	EVP_PKEY_free(k);
	return RM_ERROR;
}

static int load_root(struct ca *ca, const char *cert_path, const char *key_path, char *err,
		     size_t errlen)
{
	FILE *f = fopen(cert_path, "r");
	if (!f) {
		snprintf(err, errlen, "%s: %s", cert_path, strerror(errno));
		return RM_ERROR;
	}
	ca->cert = PEM_read_X509(f, NULL, NULL, NULL);
	fclose(f);
	if (!ca->cert) {
		ssl_err(err, errlen, cert_path);
		return RM_ERROR;
	}
	if (!(f = fopen(key_path, "r"))) {
		snprintf(err, errlen, "%s: %s", key_path, strerror(errno));
		return RM_ERROR;
	}
	ca->key = PEM_read_PrivateKey(f, NULL, NULL, NULL);
	fclose(f);
	if (!ca->key) {
		ssl_err(err, errlen, key_path);
		return RM_ERROR;
	}
	if (X509_check_private_key(ca->cert, ca->key) != 1) {
		ERR_clear_error();
		snprintf(err, errlen, "%s does not match the certificate %s", key_path, cert_path);
		return RM_ERROR;
	}
	if (X509_check_ca(ca->cert) < 1) {
		snprintf(err, errlen, "%s is not a CA certificate (basicConstraints CA:TRUE)", cert_path);
		return RM_ERROR;
	}
	return RM_OK;
}

static int write_pem(const char *path, int mode, int (*fn)(BIO *, void *), void *obj, char *err,
		     size_t errlen)
{
	char *tmp = xasprintf("%s.tmp", path);
	FILE *f = NULL;
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, mode);
	int rc = RM_ERROR;
	if (fd < 0 || !(f = fdopen(fd, "w"))) {
		snprintf(err, errlen, "%s: %s", tmp, strerror(errno));
		if (fd >= 0)
			close(fd);
		goto out;
	}
	BIO *b = BIO_new_fp(f, BIO_NOCLOSE);
	int ok = b && fn(b, obj);
	BIO_free(b);
	if (fclose(f) || !ok || rename(tmp, path)) {
		snprintf(err, errlen, "cannot write %s", path);
		unlink(tmp);
		goto out;
	}
	rc = RM_OK;
out:
	free(tmp);
	return rc;
}

static int pem_key(BIO *b, void *k)
{
	return PEM_write_bio_PrivateKey(b, k, NULL, NULL, 0, NULL, NULL);
}

static int pem_cert(BIO *b, void *x)
{
	return PEM_write_bio_X509(b, x);
}

/* --ca-dir: load root-cert.pem / root-key.pem, or generate and write them. */
static int dir_root(struct ca *ca, const char *dir, char *err, size_t errlen)
{
	char *cp = xasprintf("%s/root-cert.pem", dir), *kp = xasprintf("%s/root-key.pem", dir);
	int rc;
	if (!access(cp, F_OK) || !access(kp, F_OK)) {
		rc = load_root(ca, cp, kp, err, errlen);
		if (!rc)
			log_info("ca: root loaded from %s", dir);
	} else {
		mkdir(dir, 0700);
		rc = gen_root(ca, err, errlen);
		if (!rc)   /* the key first: a crash in between leaves no cert without its key */
			rc = write_pem(kp, 0600, pem_key, ca->key, err, errlen) ||
			     write_pem(cp, 0644, pem_cert, ca->cert, err, errlen);
		if (!rc)
			log_info("ca: generated a new root in %s", dir);
	}
	free(cp);
	free(kp);
	return rc;
}

static char *cert_pem(X509 *x)
{
	BIO *b = BIO_new(BIO_s_mem());
	char *data, *out = NULL;
	if (b && PEM_write_bio_X509(b, x)) {
		long n = BIO_get_mem_data(b, &data);
		out = xstrndup(data, (size_t)n);
	}
	BIO_free(b);
	return out;
}

struct ca *ca_new(const struct ca_options *o, char *err, size_t errlen)
{
	struct ca *ca = xcalloc(1, sizeof(*ca));
	int rc;
	ca->trust_domain = xstrdup(o->trust_domain && *o->trust_domain ? o->trust_domain
								       : "cluster.local");
	ca->max_ttl_s = o->max_ttl_s ? o->max_ttl_s : CA_DEFAULT_TTL_S;
	ca->tokens_path = o->tokens_path ? xstrdup(o->tokens_path) : NULL;
	ca->kube = o->kube;
	ca->review_cache_s = o->review_cache_s;
	if (ca->kube)
		ca->cache = xcalloc(CA_REVIEW_CACHE, sizeof(*ca->cache));
	if (!!o->cert_path != !!o->key_path) {
		snprintf(err, errlen, "--ca-cert and --ca-key go together");
		goto fail;
	}
	if (o->cert_path)
		rc = load_root(ca, o->cert_path, o->key_path, err, errlen);
	else if (o->dir)
		rc = dir_root(ca, o->dir, err, errlen);
	else {
		rc = gen_root(ca, err, errlen);
		if (!rc)
			log_warn("ca: the root is in memory only (no --ca-dir): a restart makes a new "
				 "root and every issued certificate stops verifying");
	}
	if (rc || tokens_load(ca, true, err, errlen))
		goto fail;
	ca->root_pem = cert_pem(ca->cert);
	if (!ca->root_pem) {
		ssl_err(err, errlen, "cannot encode the root");
		goto fail;
	}
	return ca;
fail:
	ca_free(ca);
	return NULL;
}

void ca_free(struct ca *ca)
{
	if (!ca)
		return;
	EVP_PKEY_free(ca->key);
	X509_free(ca->cert);
	free(ca->root_pem);
	free(ca->trust_domain);
	free(ca->tokens_path);
	tokens_free(ca->tokens, ca->ntokens);
	while (ca->pending)
		ca_pending_cancel(ca->pending);
	free(ca->cache);
	free(ca);
}

const char *ca_root_pem(const struct ca *ca)
{
	return ca->root_pem;
}

json_t *ca_root_secret_json(const struct ca *ca)
{
	return json_pack("{s:s, s:{s:{s:s}}}", "name", CA_ROOT_SECRET, "validation_context",
			 "trusted_ca", "inline_string", ca->root_pem);
}

const struct ca_stats *ca_get_stats(const struct ca *ca)
{
	return &ca->stats;
}

/* ---- signing ------------------------------------------------------------------------ */

/* Accept EC keys on P-256/P-384 and RSA of 2048 bits or more. */
static bool key_acceptable(EVP_PKEY *k)
{
	if (EVP_PKEY_is_a(k, "EC")) {
		char grp[64];
		size_t gl;
		if (!EVP_PKEY_get_utf8_string_param(k, "group", grp, sizeof(grp), &gl))
			return false;
		return !strcmp(grp, "prime256v1") || !strcmp(grp, "secp384r1");
	}
	if (EVP_PKEY_is_a(k, "RSA"))
		return EVP_PKEY_get_bits(k) >= 2048;
	return false;
}

int ca_sign_csr(const struct ca *ca, const char *csr_pem, size_t csr_len, const char *spiffe_id,
		int64_t ttl_s, char **leaf_pem, char *msg, size_t msglen)
{
	X509_REQ *req = NULL;
	X509 *x = NULL;
	EVP_PKEY *pub;
	int rc = CA_INVALID_ARGUMENT;
	*leaf_pem = NULL;
	if (csr_len > CA_MAX_CSR) {
		snprintf(msg, msglen, "CSR larger than %d bytes", CA_MAX_CSR);
		return rc;
	}
	BIO *b = BIO_new_mem_buf(csr_pem, (int)csr_len);
	if (!b || !(req = PEM_read_bio_X509_REQ(b, NULL, NULL, NULL))) {
		BIO_free(b);
		ssl_err(msg, msglen, "the CSR is not a PEM certificate request");
		return rc;
	}
	BIO_free(b);
	if (!(pub = X509_REQ_get0_pubkey(req))) {
		ssl_err(msg, msglen, "the CSR has no usable public key");
		goto out;
	}
	if (X509_REQ_verify(req, pub) != 1) {
		ssl_err(msg, msglen, "the CSR's signature does not verify");
		goto out;
	}
	if (!key_acceptable(pub)) {
		snprintf(msg, msglen, "the CSR's key must be EC P-256/P-384 or RSA >= 2048 bits");
		goto out;
	}
	if (ttl_s <= 0 || (uint64_t)ttl_s > ca->max_ttl_s)
		ttl_s = (int64_t)ca->max_ttl_s;
	rc = CA_INTERNAL;
	char *san = xasprintf("critical,URI:%s", spiffe_id);
	x = X509_new();
	/* Subject empty, as Istio's: the identity is the URI SAN (critical) */
	int bad = !x || !X509_set_version(x, X509_VERSION_3) || set_serial(x) ||
		  !X509_set_issuer_name(x, X509_get_subject_name(ca->cert)) ||
		  !X509_gmtime_adj(X509_getm_notBefore(x), 0) ||
		  !X509_gmtime_adj(X509_getm_notAfter(x), (long)ttl_s) || !X509_set_pubkey(x, pub) ||
		  add_ext(x, ca->cert, NID_basic_constraints, "critical,CA:FALSE") ||
		  add_ext(x, ca->cert, NID_key_usage, "critical,digitalSignature,keyEncipherment") ||
		  add_ext(x, ca->cert, NID_ext_key_usage, "serverAuth,clientAuth") ||
		  add_ext(x, ca->cert, NID_authority_key_identifier, "keyid:always") ||
		  add_ext(x, ca->cert, NID_subject_alt_name, san) || !X509_sign(x, ca->key, EVP_sha256());
	free(san);
	if (bad) {
		ssl_err(msg, msglen, "cannot sign the certificate");
		goto out;
	}
	if (!(*leaf_pem = cert_pem(x))) {
		ssl_err(msg, msglen, "cannot encode the certificate");
		goto out;
	}
	rc = CA_OK;
out:
	X509_free(x);
	X509_REQ_free(req);
	return rc;
}

/* One SAN entry of --serving-san: "DNS:name" or "IP:addr", NULL if it is
 * neither a host name (letters, digits, '-', '.', a leading "*.") nor an IP. */
static char *san_entry(const char *v, size_t n)
{
	char buf[256];
	unsigned char ip[16];
	if (!n || n >= sizeof(buf))
		return NULL;
	memcpy(buf, v, n);
	buf[n] = 0;
	if (inet_pton(AF_INET, buf, ip) == 1 || inet_pton(AF_INET6, buf, ip) == 1)
		return xasprintf("IP:%s", buf);
	for (size_t i = 0; i < n; i++) {
		unsigned char ch = (unsigned char)buf[i];
		if (!isalnum(ch) && ch != '-' && ch != '.' && !(ch == '*' && i == 0 && buf[1] == '.'))
			return NULL;
	}
	return xasprintf("DNS:%s", buf);
}

int ca_issue_serving(const struct ca *ca, const char *sans, uint64_t ttl_s, X509 **cert,
		     EVP_PKEY **key, char *err, size_t errlen)
{
	size_t cap = strlen(sans) * 2 + 16, len = 0;
	char *list = xcalloc(1, cap);
	const char *p = sans;
	*cert = NULL;
	*key = NULL;
	while (*p) {
		size_t n = strcspn(p, ",");
		char *e = san_entry(p, n);
		if (!e) {
			snprintf(err, errlen, "--serving-san: '%.*s' is not a DNS name or an IP address",
				 (int)n, p);
			free(list);
			return RM_ERROR;
		}
		len += (size_t)snprintf(list + len, cap - len, "%s%s", len ? "," : "", e);
		free(e);
		p += n + (p[n] == ',');
	}
	if (!len) {
		snprintf(err, errlen, "--serving-san: no name");
		free(list);
		return RM_ERROR;
	}
	EVP_PKEY *k = EVP_EC_gen("P-256");
	X509 *x = X509_new();
	/* a server certificate chained to the root the sidecars trust */
	int bad = !k || !x || !X509_set_version(x, X509_VERSION_3) || set_serial(x) ||
		  !X509_set_issuer_name(x, X509_get_subject_name(ca->cert)) ||
		  !X509_gmtime_adj(X509_getm_notBefore(x), -300) ||
		  !X509_gmtime_adj(X509_getm_notAfter(x), (long)ttl_s) || !X509_set_pubkey(x, k) ||
		  add_ext(x, ca->cert, NID_basic_constraints, "critical,CA:FALSE") ||
		  add_ext(x, ca->cert, NID_key_usage, "critical,digitalSignature,keyEncipherment") ||
		  add_ext(x, ca->cert, NID_ext_key_usage, "serverAuth") ||
		  add_ext(x, ca->cert, NID_authority_key_identifier, "keyid:always") ||
		  add_ext(x, ca->cert, NID_subject_alt_name, list) || !X509_sign(x, ca->key, EVP_sha256());
	free(list);
	if (bad) {
		ssl_err(err, errlen, "cannot issue the serving certificate");
		X509_free(x);
		EVP_PKEY_free(k);
		return RM_ERROR;
	}
	*cert = x;
	*key = k;
	return RM_OK;
}

/* Decode the request and sign for id (the token was authenticated). */
static int ca_issue(struct ca *ca, const struct ca_identity *id, const char *peer,
		    const uint8_t *reqb, size_t len, uint8_t **resp, size_t *resp_len, char *msg,
		    size_t msglen)
{
	Istio__V1__Auth__IstioCertificateRequest *req = NULL;
	char *leaf = NULL, *spiffe = NULL;
	int rc;
	*resp = NULL;
	*resp_len = 0;
	req = istio__v1__auth__istio_certificate_request__unpack(NULL, len, reqb);
	if (!req) {
		snprintf(msg, msglen, "cannot decode IstioCertificateRequest");
		rc = CA_INVALID_ARGUMENT;
		goto out;
	}
	spiffe = xasprintf("spiffe://%s/ns/%s/sa/%s", ca->trust_domain, id->ns, id->sa);
	rc = ca_sign_csr(ca, req->csr ? req->csr : "", req->csr ? strlen(req->csr) : 0, spiffe,
			 req->validity_duration, &leaf, msg, msglen);
	if (rc)
		goto out;
	char *chain[2] = { leaf, ca->root_pem };
	Istio__V1__Auth__IstioCertificateResponse r = ISTIO__V1__AUTH__ISTIO_CERTIFICATE_RESPONSE__INIT;
	r.n_cert_chain = 2;
	r.cert_chain = chain;
	*resp_len = istio__v1__auth__istio_certificate_response__get_packed_size(&r);
	*resp = xmalloc(*resp_len ? *resp_len : 1);
	istio__v1__auth__istio_certificate_response__pack(&r, *resp);
	ca->stats.issued++;
	log_info("ca: %s: issued %s", peer ? peer : "?", spiffe);
out:
	if (rc == CA_INVALID_ARGUMENT) {
		ca->stats.invalid++;
		log_info("ca: %s: refused: %s", peer ? peer : "?", msg);
	}
	free(leaf);
	free(spiffe);
	if (req)
		istio__v1__auth__istio_certificate_request__free_unpacked(req, NULL);
	return rc;
}

int ca_handle(struct ca *ca, const char *authorization, const char *peer, const uint8_t *reqb,
	      size_t len, uint8_t **resp, size_t *resp_len, char *msg, size_t msglen)
{
	struct ca_identity id;
	int rc;
	ca->stats.requests++;
	*resp = NULL;
	*resp_len = 0;
	if ((rc = ca_authenticate(ca, authorization, &id, msg, msglen))) {
		ca->stats.unauthenticated++;
		log_info("ca: %s: refused: %s", peer ? peer : "?", msg);
		return rc;
	}
	return ca_issue(ca, &id, peer, reqb, len, resp, resp_len, msg, msglen);
}

/* ---- TokenReview (asynchronous) ----------------------------------------------------- */

static struct ca_review_entry *cache_find(struct ca *ca, const uint8_t *hash, time_t now)
{
	for (size_t i = 0; i < CA_REVIEW_CACHE; i++) {
		struct ca_review_entry *e = &ca->cache[i];
		if (e->until > now && !CRYPTO_memcmp(e->hash, hash, SHA256_DIGEST_LENGTH))
			return e;
	}
	return NULL;
}

/* Keep a positive review until min(now + cache ttl, the token's exp); the
 * slot of an expired entry, else of the one expiring first. */
static void cache_put(struct ca *ca, const uint8_t *hash, const struct ca_identity *id,
		      int64_t exp, time_t now)
{
	if (!ca->review_cache_s || exp <= (int64_t)now)
		return;   /* no exp claim (or past): not cached */
	time_t until = now + (time_t)ca->review_cache_s;
	if ((int64_t)until > exp)
		until = (time_t)exp;
	struct ca_review_entry *slot = &ca->cache[0];
	for (size_t i = 0; i < CA_REVIEW_CACHE; i++) {
		struct ca_review_entry *e = &ca->cache[i];
		if (e->until <= now || !CRYPTO_memcmp(e->hash, hash, SHA256_DIGEST_LENGTH)) {
			slot = e;
			break;
		}
		if (e->until < slot->until)
			slot = e;
	}
	memcpy(slot->hash, hash, SHA256_DIGEST_LENGTH);
	slot->id = *id;
	slot->until = until;
}

static void pending_free(struct ca_pending *p)
{
	struct ca *ca = p->ca;
	if (p->prev)
		p->prev->next = p->next;
	else
		ca->pending = p->next;
	if (p->next)
		p->next->prev = p->prev;
	ca->npending--;
	free(p->req);
	free(p->peer);
	free(p);
}

void ca_pending_cancel(struct ca_pending *p)
{
	if (!p)
		return;
	kube_review_cancel(p->review);
	pending_free(p);
}

static void issue_and_reply(struct ca *ca, const struct ca_identity *id, const char *peer,
			    const uint8_t *req, size_t len, ca_done_fn done, void *arg)
{
	uint8_t *resp;
	size_t resp_len;
	char msg[256] = "";
	int rc = ca_issue(ca, id, peer, req, len, &resp, &resp_len, msg, sizeof(msg));
	done(arg, rc, resp, resp_len, msg);
	free(resp);
}

static void on_review(void *arg, enum kube_review_result res, const char *ns, const char *sa,
		      const char *why)
{
	struct ca_pending *p = arg;
	struct ca *ca = p->ca;
	char msg[600];
	if (res == KUBE_REVIEW_OK) {
		struct ca_identity id;
		snprintf(id.ns, sizeof(id.ns), "%s", ns);
		snprintf(id.sa, sizeof(id.sa), "%s", sa);
		cache_put(ca, p->hash, &id, p->exp, time(NULL));
		issue_and_reply(ca, &id, p->peer, p->req, p->len, p->done, p->arg);
	} else if (res == KUBE_REVIEW_DENIED) {
		ca->stats.unauthenticated++;
		snprintf(msg, sizeof(msg), "TokenReview: %s", why);
		log_info("ca: %s: refused: %s", p->peer, msg);
		p->done(p->arg, CA_UNAUTHENTICATED, NULL, 0, msg);
	} else {
		ca->stats.unavailable++;
		snprintf(msg, sizeof(msg), "cannot verify the token: %s", why);
		log_warn("ca: %s: refused: %s", p->peer, msg);
		p->done(p->arg, CA_UNAVAILABLE, NULL, 0, msg);
	}
	pending_free(p);
}

struct ca_pending *ca_handle_async(struct ca *ca, const char *authorization, const char *peer,
				   const uint8_t *req, size_t len, ca_done_fn done, void *arg)
{
	struct ca_identity id;
	char msg[256];
	int rc;
	peer = peer ? peer : "?";
	if (!ca->kube || !authorization || strncasecmp(authorization, "Bearer ", 7) ||
	    !authorization[7]) {   /* the tokens file only */
		uint8_t *resp;
		size_t resp_len;
		rc = ca_handle(ca, authorization, peer, req, len, &resp, &resp_len, msg, sizeof(msg));
		done(arg, rc, resp, resp_len, msg);
		free(resp);
		return NULL;
	}
	ca->stats.requests++;
	if (ca->tokens_path && !ca_authenticate(ca, authorization, &id, msg, sizeof(msg))) {
		issue_and_reply(ca, &id, peer, req, len, done, arg);
		return NULL;
	}
	const char *tok = authorization + 7;
	uint8_t hash[SHA256_DIGEST_LENGTH];
	SHA256((const unsigned char *)tok, strlen(tok), hash);
	time_t now = time(NULL);
	const struct ca_review_entry *hit = cache_find(ca, hash, now);
	if (hit) {
		ca->stats.review_cache_hits++;
		id = hit->id;
		issue_and_reply(ca, &id, peer, req, len, done, arg);
		return NULL;
	}
	if (ca->npending >= CA_MAX_PENDING) {
		ca->stats.unavailable++;
		snprintf(msg, sizeof(msg), "too many TokenReviews in flight (%d): retry later",
			 CA_MAX_PENDING);
		log_warn("ca: %s: refused: %s", peer, msg);
		done(arg, CA_UNAVAILABLE, NULL, 0, msg);
		return NULL;
	}
	struct ca_pending *p = xcalloc(1, sizeof(*p));
	p->ca = ca;
	p->req = xmalloc(len ? len : 1);
	memcpy(p->req, req, len);
	p->len = len;
	p->peer = xstrdup(peer);
	memcpy(p->hash, hash, sizeof(hash));
	p->exp = kube_jwt_exp(tok);
	p->done = done;
	p->arg = arg;
	p->next = ca->pending;
	if (ca->pending)
		ca->pending->prev = p;
	ca->pending = p;
	ca->npending++;
	p->review = kube_token_review(ca->kube, tok, CA_TOKEN_AUDIENCE, on_review, p);
	return p;
}

char *ca_metrics_text(const struct ca *ca)
{
	return xasprintf(
		"# TYPE remora_cp_ca_requests_total counter\n"
		"remora_cp_ca_requests_total %llu\n"
		"# TYPE remora_cp_ca_certs_issued_total counter\n"
		"remora_cp_ca_certs_issued_total %llu\n"
		"# TYPE remora_cp_ca_unauthenticated_total counter\n"
		"remora_cp_ca_unauthenticated_total %llu\n"
		"# TYPE remora_cp_ca_invalid_total counter\n"
		"remora_cp_ca_invalid_total %llu\n"
		"# TYPE remora_cp_ca_unavailable_total counter\n"
		"remora_cp_ca_unavailable_total %llu\n"
		"# TYPE remora_cp_ca_token_review_cache_hits_total counter\n"
		"remora_cp_ca_token_review_cache_hits_total %llu\n",
		(unsigned long long)ca->stats.requests, (unsigned long long)ca->stats.issued,
		(unsigned long long)ca->stats.unauthenticated, (unsigned long long)ca->stats.invalid,
		(unsigned long long)ca->stats.unavailable,
		(unsigned long long)ca->stats.review_cache_hits);
}
