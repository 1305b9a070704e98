/* ca_test.c - xds/cp/ca.c: root generation and persistence, token lookup,
 * leaf contents (SPIFFE URI SAN, issuer, lifetime cap, CSR subject/SANs
 * ignored), bad CSRs, the CreateCertificate message round trip, and the
 * TokenReview helpers (service-account user names, JWT exp, review cache). */
#include "test.h"

#include <stdlib.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include "xds/cp/ca.c"
#include "xds/cp/kube_api.c"

static char tmpdir[64];

static void setup_dir(void)
{
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/ca_test.XXXXXX");
	if (!mkdtemp(tmpdir))
		abort();
}

static void cleanup_dir(void)
{
	char *cmd = xasprintf("rm -rf '%s'", tmpdir);
	if (system(cmd)) {
	}
	free(cmd);
}

static char *write_tmp(const char *name, const char *text)
{
	char *p = xasprintf("%s/%s", tmpdir, name);
	FILE *f = fopen(p, "w");
	fputs(text, f);
	fclose(f);
	return p;
}

/* A PEM CSR for key k with a subject CN and a DNS/URI SAN the CA must ignore. */
static char *make_csr(EVP_PKEY *k, bool corrupt_sig)
{
	X509_REQ *r = X509_REQ_new();
	X509_REQ_set_version(r, 0);
	X509_NAME_add_entry_by_txt(X509_REQ_get_subject_name(r), "CN", MBSTRING_ASC,
				   (const unsigned char *)"evil.example.com", -1, -1, 0);
	STACK_OF(X509_EXTENSION) *exts = sk_X509_EXTENSION_new_null();
	X509_EXTENSION *e = X509V3_EXT_conf_nid(NULL, NULL, NID_subject_alt_name,
						"DNS:evil.example.com,URI:spiffe://evil/ns/x/sa/y");
	sk_X509_EXTENSION_push(exts, e);
	X509_REQ_add_extensions(r, exts);
	sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
	X509_REQ_set_pubkey(r, k);
	X509_REQ_sign(r, k, EVP_sha256());
	if (corrupt_sig) {
		const ASN1_BIT_STRING *sig;
		X509_REQ_get0_signature(r, &sig, NULL);
		((ASN1_BIT_STRING *)sig)->data[5] ^= 0x5a;
	}
	BIO *b = BIO_new(BIO_s_mem());
	PEM_write_bio_X509_REQ(b, r);
	char *d;
	long n = BIO_get_mem_data(b, &d);
	char *out = xstrndup(d, (size_t)n);
	BIO_free(b);
	X509_REQ_free(r);
	return out;
}

static X509 *parse_pem(const char *pem)
{
	BIO *b = BIO_new_mem_buf(pem, -1);
	X509 *x = PEM_read_bio_X509(b, NULL, NULL, NULL);
	BIO_free(b);
	return x;
}

static int64_t lifetime_s(X509 *x)
{
	int d = 0, s = 0;
	ASN1_TIME_diff(&d, &s, X509_get0_notBefore(x), X509_get0_notAfter(x));
	return (int64_t)d * 86400 + s;
}

/* The only URI SAN of x (static buffer), "" if none; *nsans: every SAN. */
static const char *uri_san(X509 *x, int *nsans)
{
	static char buf[256];
	GENERAL_NAMES *g = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
	buf[0] = 0;
	*nsans = g ? sk_GENERAL_NAME_num(g) : 0;
	for (int i = 0; g && i < sk_GENERAL_NAME_num(g); i++) {
		GENERAL_NAME *n = sk_GENERAL_NAME_value(g, i);
		if (n->type == GEN_URI)
			snprintf(buf, sizeof(buf), "%.*s", ASN1_STRING_length(n->d.ia5),
				 (const char *)ASN1_STRING_get0_data(n->d.ia5));
	}
	GENERAL_NAMES_free(g);
	return buf;
}

static struct ca *new_ca(uint64_t max_ttl)
{
	char err[512] = "";
	char *tok = write_tmp("tokens.yaml", "tokens:\n"
				"  tok-a: {namespace: default, service_account: sleep}\n"
				"  tok-b:\n    namespace: prod\n    service_account: web\n");
	struct ca_options o = { .dir = tmpdir, .tokens_path = tok, .trust_domain = "example.org",
				.max_ttl_s = max_ttl };
	struct ca *ca = ca_new(&o, err, sizeof(err));
	if (!ca)
		fprintf(stderr, "  ca_new: %s\n", err);
	free(tok);
	return ca;
}

TEST(ca_issues_spiffe_leaf_signed_by_root)
{
	setup_dir();
	struct ca *ca = new_ca(0);
	CHECK(ca != NULL);
	if (!ca)
		return;
	EVP_PKEY *k = EVP_EC_gen("P-256");
	char *csr = make_csr(k, false), *leaf = NULL, msg[256] = "";
	CHECK_INT(ca_sign_csr(ca, csr, strlen(csr), "spiffe://example.org/ns/default/sa/sleep", 3600,
			      &leaf, msg, sizeof(msg)), CA_OK);
	X509 *x = leaf ? parse_pem(leaf) : NULL;
	X509 *root = parse_pem(ca_root_pem(ca));
	CHECK(x && root);
	if (x && root) {
		int n = 0;
		CHECK_STR(uri_san(x, &n), "spiffe://example.org/ns/default/sa/sleep");
		CHECK_INT(n, 1);   /* the CSR's DNS and URI SANs are gone */
		CHECK_INT(X509_NAME_entry_count(X509_get_subject_name(x)), 0);
		CHECK_INT(X509_NAME_cmp(X509_get_issuer_name(x), X509_get_subject_name(root)), 0);
		CHECK_INT(X509_verify(x, X509_get0_pubkey(root)), 1);
		CHECK_INT(X509_check_ca(x), 0);
		CHECK_INT(X509_check_ca(root), 1);
		CHECK(X509_get_extended_key_usage(x) & XKU_SSL_CLIENT);
		CHECK(X509_get_extended_key_usage(x) & XKU_SSL_SERVER);
		CHECK_INT(lifetime_s(x), 3600);
		CHECK_INT(EVP_PKEY_eq(X509_get0_pubkey(x), k), 1);   /* the CSR's key */
		/* verifies as a chain against the root alone */
		X509_STORE *st = X509_STORE_new();
		X509_STORE_add_cert(st, root);
		X509_STORE_CTX *sc = X509_STORE_CTX_new();
		X509_STORE_CTX_init(sc, st, x, NULL);
		CHECK_INT(X509_verify_cert(sc), 1);
		X509_STORE_CTX_free(sc);
		X509_STORE_free(st);
	}
	X509_free(x);
	X509_free(root);
	free(leaf);
	free(csr);
	EVP_PKEY_free(k);
	ca_free(ca);
	cleanup_dir();
}

TEST(ca_lifetime_capped_and_defaulted)
{
	setup_dir();
	struct ca *ca = new_ca(600);
	CHECK(ca != NULL);
	if (!ca)
		return;
	EVP_PKEY *k = EVP_EC_gen("P-256");
	char *csr = make_csr(k, false), msg[256];
	int64_t asks[] = { 86400, 0, -5, 30 }, want[] = { 600, 600, 600, 30 };
	for (size_t i = 0; i < ARRAY_SIZE(asks); i++) {
		char *leaf = NULL;
		CHECK_INT(ca_sign_csr(ca, csr, strlen(csr), "spiffe://example.org/ns/a/sa/b", asks[i],
				      &leaf, msg, sizeof(msg)), CA_OK);
		X509 *x = leaf ? parse_pem(leaf) : NULL;
		CHECK(x != NULL);
		if (x)
			CHECK_INT(lifetime_s(x), want[i]);
		X509_free(x);
		free(leaf);
	}
	free(csr);
	EVP_PKEY_free(k);
	ca_free(ca);
	cleanup_dir();
}

TEST(ca_rejects_bad_csrs)
{
	setup_dir();
	struct ca *ca = new_ca(0);
	CHECK(ca != NULL);
	if (!ca)
		return;
	char msg[256], *leaf = (char *)"x";
	const char *junk = "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n";
	CHECK_INT(ca_sign_csr(ca, "", 0, "spiffe://x/ns/a/sa/b", 0, &leaf, msg, sizeof(msg)),
		  CA_INVALID_ARGUMENT);
	CHECK(leaf == NULL);
	CHECK_INT(ca_sign_csr(ca, junk, strlen(junk), "spiffe://x/ns/a/sa/b", 0, &leaf, msg,
			      sizeof(msg)), CA_INVALID_ARGUMENT);
	CHECK_CONTAINS(msg, "not a PEM certificate request");
	EVP_PKEY *k = EVP_EC_gen("P-256");
	char *bad = make_csr(k, true);
	CHECK_INT(ca_sign_csr(ca, bad, strlen(bad), "spiffe://x/ns/a/sa/b", 0, &leaf, msg, sizeof(msg)),
		  CA_INVALID_ARGUMENT);
	CHECK_CONTAINS(msg, "signature does not verify");
	free(bad);
	EVP_PKEY_free(k);
	k = EVP_RSA_gen(1024);   /* too weak */
	bad = make_csr(k, false);
	CHECK_INT(ca_sign_csr(ca, bad, strlen(bad), "spiffe://x/ns/a/sa/b", 0, &leaf, msg, sizeof(msg)),
		  CA_INVALID_ARGUMENT);
	CHECK_CONTAINS(msg, "RSA >= 2048");
	free(bad);
	EVP_PKEY_free(k);
	ca_free(ca);
	cleanup_dir();
}

TEST(ca_tokens)
{
	setup_dir();
	struct ca *ca = new_ca(0);
	CHECK(ca != NULL);
	if (!ca)
		return;
	struct ca_identity id;
	char msg[256];
	CHECK_INT(ca_authenticate(ca, "Bearer tok-b", &id, msg, sizeof(msg)), CA_OK);
	CHECK_STR(id.ns, "prod");
	CHECK_STR(id.sa, "web");
	CHECK_INT(ca_authenticate(ca, "Bearer tok-", &id, msg, sizeof(msg)), CA_UNAUTHENTICATED);
	CHECK_INT(ca_authenticate(ca, "Bearer tok-aa", &id, msg, sizeof(msg)), CA_UNAUTHENTICATED);
	CHECK_INT(ca_authenticate(ca, "tok-a", &id, msg, sizeof(msg)), CA_UNAUTHENTICATED);
	CHECK_INT(ca_authenticate(ca, NULL, &id, msg, sizeof(msg)), CA_UNAUTHENTICATED);
	CHECK_CONTAINS(msg, "missing bearer token");
	/* the file is re-read when it changes (size differs) */
	free(write_tmp("tokens.yaml", "tokens:\n  tok-new: {namespace: n2, service_account: s2}\n"));
	CHECK_INT(ca_authenticate(ca, "Bearer tok-a", &id, msg, sizeof(msg)), CA_UNAUTHENTICATED);
	CHECK_INT(ca_authenticate(ca, "Bearer tok-new", &id, msg, sizeof(msg)), CA_OK);
	CHECK_STR(id.sa, "s2");
	/* a broken file at a reload keeps the previous tokens */
	free(write_tmp("tokens.yaml", "tokens: [broken\n"));
	CHECK_INT(ca_authenticate(ca, "Bearer tok-new", &id, msg, sizeof(msg)), CA_OK);
	ca_free(ca);
	/* a broken file at start is an error naming it */
	char err[512] = "";
	char *tok = write_tmp("t2.yaml", "tokens:\n  t: {namespace: a/b, service_account: s}\n");
	struct ca_options o = { .dir = tmpdir, .tokens_path = tok };
	CHECK(ca_new(&o, err, sizeof(err)) == NULL);
	CHECK_CONTAINS(err, "t2.yaml");
	free(tok);
	cleanup_dir();
}

TEST(ca_root_persists_in_dir_and_files_checked)
{
	setup_dir();
	struct ca *a = new_ca(0);
	CHECK(a != NULL);
	if (!a)
		return;
	char *pem = xstrdup(ca_root_pem(a));
	ca_free(a);
	struct ca *b = new_ca(0);   /* same dir: the same root */
	CHECK(b != NULL);
	if (b)
		CHECK_STR(ca_root_pem(b), pem);
	ca_free(b);
	free(pem);
	/* --ca-cert/--ca-key: a key that does not match is refused */
	char err[512] = "";
	char *cp = xasprintf("%s/root-cert.pem", tmpdir);
	EVP_PKEY *k = EVP_EC_gen("P-256");
	char *kp = xasprintf("%s/other-key.pem", tmpdir);
	FILE *f = fopen(kp, "w");
	PEM_write_PrivateKey(f, k, NULL, NULL, 0, NULL, NULL);
	fclose(f);
	struct ca_options o = { .cert_path = cp, .key_path = kp };
	CHECK(ca_new(&o, err, sizeof(err)) == NULL);
	CHECK_CONTAINS(err, "does not match");
	struct ca_options o2 = { .cert_path = cp };
	CHECK(ca_new(&o2, err, sizeof(err)) == NULL);
	CHECK_CONTAINS(err, "go together");
	EVP_PKEY_free(k);
	free(cp);
	free(kp);
	cleanup_dir();
}

TEST(ca_handle_create_certificate)
{
	setup_dir();
	struct ca *ca = new_ca(0);
	CHECK(ca != NULL);
	if (!ca)
		return;
	EVP_PKEY *k = EVP_EC_gen("P-256");
	char *csr = make_csr(k, false), msg[256] = "";
	Istio__V1__Auth__IstioCertificateRequest rq = ISTIO__V1__AUTH__ISTIO_CERTIFICATE_REQUEST__INIT;
	rq.csr = csr;
	rq.validity_duration = 120;
	size_t n = istio__v1__auth__istio_certificate_request__get_packed_size(&rq);
	uint8_t *buf = xmalloc(n), *resp = NULL;
	size_t rlen = 0;
	istio__v1__auth__istio_certificate_request__pack(&rq, buf);
	CHECK_INT(ca_handle(ca, "Bearer tok-a", "1.2.3.4:5", buf, n, &resp, &rlen, msg, sizeof(msg)),
		  CA_OK);
	Istio__V1__Auth__IstioCertificateResponse *r =
		resp ? istio__v1__auth__istio_certificate_response__unpack(NULL, rlen, resp) : NULL;
	CHECK(r != NULL);
	if (r) {
		CHECK_INT(r->n_cert_chain, 2);
		if (r->n_cert_chain == 2) {
			CHECK_STR(r->cert_chain[1], ca_root_pem(ca));
			X509 *x = parse_pem(r->cert_chain[0]);
			int ns = 0;
			CHECK(x != NULL);
			if (x) {
				CHECK_STR(uri_san(x, &ns), "spiffe://example.org/ns/default/sa/sleep");
				CHECK_INT(lifetime_s(x), 120);
			}
			X509_free(x);
		}
		istio__v1__auth__istio_certificate_response__free_unpacked(r, NULL);
	}
	free(resp);
	resp = NULL;
	CHECK_INT(ca_handle(ca, "Bearer nope", "p", buf, n, &resp, &rlen, msg, sizeof(msg)),
		  CA_UNAUTHENTICATED);
	CHECK(resp == NULL);
	CHECK_INT(ca_handle(ca, "Bearer tok-a", "p", (const uint8_t *)"\xff\xff", 2, &resp, &rlen, msg,
			    sizeof(msg)), CA_INVALID_ARGUMENT);
	rq.csr = (char *)"not a csr";
	n = istio__v1__auth__istio_certificate_request__pack(&rq, buf);
	CHECK_INT(ca_handle(ca, "Bearer tok-a", "p", buf, n, &resp, &rlen, msg, sizeof(msg)),
		  CA_INVALID_ARGUMENT);
	const struct ca_stats *s = ca_get_stats(ca);
	CHECK_INT(s->requests, 4);
	CHECK_INT(s->issued, 1);
	CHECK_INT(s->unauthenticated, 1);
	CHECK_INT(s->invalid, 2);
	json_t *sec = ca_root_secret_json(ca);
	CHECK_STR(json_string_value(json_object_get(json_object_get(json_object_get(sec,
		  "validation_context"), "trusted_ca"), "inline_string")), ca_root_pem(ca));
	json_decref(sec);
	free(buf);
	free(csr);
	EVP_PKEY_free(k);
	ca_free(ca);
	cleanup_dir();
}

TEST(ca_serving_certificate_for_the_ca_port)
{
	setup_dir();
	struct ca *ca = new_ca(0);
	CHECK(ca != NULL);
	if (!ca)
		return;
	X509 *x = NULL;
	EVP_PKEY *k = NULL;
	char err[256] = "";
	CHECK_INT(ca_issue_serving(ca, "remora-cp,remora-cp.ns.svc,*.ns.svc,127.0.0.1,::1", 7200,
				   &x, &k, err, sizeof(err)), RM_OK);
	X509 *root = parse_pem(ca_root_pem(ca));
	CHECK(x && k && root);
	if (x && k && root) {
		CHECK_INT(X509_check_host(x, "remora-cp.ns.svc", 0, 0, NULL), 1);
		CHECK_INT(X509_check_host(x, "remora-cp", 0, 0, NULL), 1);
		CHECK_INT(X509_check_host(x, "other.ns.svc", 0, 0, NULL), 1);   /* the wildcard */
		CHECK_INT(X509_check_host(x, "evil.example", 0, 0, NULL), 0);
		CHECK_INT(X509_check_ip_asc(x, "127.0.0.1", 0), 1);
		CHECK_INT(X509_check_ip_asc(x, "::1", 0), 1);
		CHECK_INT(X509_check_ip_asc(x, "10.0.0.1", 0), 0);
		CHECK_INT(X509_verify(x, X509_get0_pubkey(root)), 1);
		CHECK_INT(X509_check_private_key(x, k), 1);
		CHECK_INT(X509_check_ca(x), 0);
		CHECK(X509_get_extended_key_usage(x) & XKU_SSL_SERVER);
		CHECK(!(X509_get_extended_key_usage(x) & XKU_SSL_CLIENT));
		CHECK_INT(X509_cmp_time(X509_get0_notAfter(x), NULL), 1);   /* in the future */
	}
	X509_free(x);
	EVP_PKEY_free(k);
	X509_free(root);
	/* names that would smuggle other SAN types or config syntax are refused */
	static const char *const bad[] = { "a,DNS:x", "email:x@y", "a b", "", "x,,y", "a*.b" };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		x = NULL;
		k = NULL;
		CHECK_INT(ca_issue_serving(ca, bad[i], 7200, &x, &k, err, sizeof(err)), RM_ERROR);
		CHECK(!x && !k);
	}
	ca_free(ca);
	cleanup_dir();
}

TEST(kube_service_account_user_names)
{
	char ns[64], sa[64];
	CHECK_INT(kube_sa_username("system:serviceaccount:shop:frontend", ns, sizeof(ns), sa,
				   sizeof(sa)), 0);
	CHECK_STR(ns, "shop");
	CHECK_STR(sa, "frontend");
	CHECK_INT(kube_sa_username("system:serviceaccount:shop", ns, sizeof(ns), sa, sizeof(sa)), -1);
	CHECK_INT(kube_sa_username("system:serviceaccount:shop:a:b", ns, sizeof(ns), sa, sizeof(sa)),
		  -1);   /* ':' is not in a DNS-1123 name */
	CHECK_INT(kube_sa_username("system:serviceaccount::sa", ns, sizeof(ns), sa, sizeof(sa)), -1);
	CHECK_INT(kube_sa_username("system:serviceaccount:Shop:sa", ns, sizeof(ns), sa, sizeof(sa)),
		  -1);
	CHECK_INT(kube_sa_username("system:serviceaccount:a/b:sa", ns, sizeof(ns), sa, sizeof(sa)),
		  -1);
	CHECK_INT(kube_sa_username("alice", ns, sizeof(ns), sa, sizeof(sa)), -1);
	CHECK_INT(kube_sa_username(NULL, ns, sizeof(ns), sa, sizeof(sa)), -1);
	CHECK_INT(kube_sa_username("system:serviceaccount:shop:frontend", ns, 4, sa, sizeof(sa)), -1);
}

TEST(kube_jwt_exp_claim)
{
	/* {"alg":"none"} . {"aud":["remora-ca"],"exp":1900000000,"sub":"x"} . sig */
	CHECK_INT(kube_jwt_exp("eyJhbGciOiJub25lIn0.eyJhdWQiOlsicmVtb3JhLWNhIl0sImV4cCI6MTkwMDAwMDAw"
			       "MCwic3ViIjoieCJ9.c2ln"), 1900000000);
	CHECK_INT(kube_jwt_exp("eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.c2ln"), 0);   /* no exp */
	CHECK_INT(kube_jwt_exp("opaque-token"), 0);
	CHECK_INT(kube_jwt_exp("a.!!!.b"), 0);
	CHECK_INT(kube_jwt_exp("a..b"), 0);
}

TEST(ca_review_cache_bounded_by_exp_and_size)
{
	struct ca c = { .review_cache_s = 60 };
	c.cache = xcalloc(CA_REVIEW_CACHE, sizeof(*c.cache));
	struct ca_identity id = { "shop", "frontend" };
	uint8_t h[SHA256_DIGEST_LENGTH] = { 1 };
	time_t now = 1000000;
	cache_put(&c, h, &id, now + 3600, now);
	CHECK(cache_find(&c, h, now + 59) != NULL);
	CHECK(cache_find(&c, h, now + 60) == NULL);        /* the cache ttl */
	h[0] = 2;
	cache_put(&c, h, &id, now + 10, now);
	CHECK(cache_find(&c, h, now + 9) != NULL);
	CHECK(cache_find(&c, h, now + 10) == NULL);        /* the token's exp first */
	h[0] = 3;
	cache_put(&c, h, &id, 0, now);                     /* no exp: not cached */
	CHECK(cache_find(&c, h, now) == NULL);
	/* full: the entry expiring first makes room, the rest stay */
	for (unsigned i = 0; i < CA_REVIEW_CACHE + 10; i++) {
		uint8_t k[SHA256_DIGEST_LENGTH] = { 9, (uint8_t)(i >> 8), (uint8_t)i };
		cache_put(&c, k, &id, now + 100 + i, now);
	}
	unsigned kept = 0;
	for (unsigned i = 0; i < CA_REVIEW_CACHE + 10; i++) {
		uint8_t k[SHA256_DIGEST_LENGTH] = { 9, (uint8_t)(i >> 8), (uint8_t)i };
		kept += cache_find(&c, k, now) != NULL;
	}
	CHECK_INT(kept, CA_REVIEW_CACHE);
	uint8_t last[SHA256_DIGEST_LENGTH] = { 9, (uint8_t)((CA_REVIEW_CACHE + 9) >> 8),
					       (uint8_t)(CA_REVIEW_CACHE + 9) };
	CHECK(cache_find(&c, last, now) != NULL);
	free(c.cache);
}
