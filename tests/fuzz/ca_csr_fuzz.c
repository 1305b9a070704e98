/* ca_csr_fuzz.c - libFuzzer target for remora-cp's CA request path
 * (xds/cp/ca.c: ca_handle = IstioCertificateRequest decode, PEM CSR parse,
 * signature check, signing).  The first byte picks the authorization header
 * (a valid token, a wrong one, none); the rest is the request message.
 * Invariants: the status is OK, INVALID_ARGUMENT or UNAUTHENTICATED (never
 * INTERNAL); a wrong or missing token is refused before anything is parsed;
 * on OK the reply decodes to [leaf, root], the root is the CA's and the leaf
 * carries exactly the token's SPIFFE ID, issued by the root.
 * Seeds: tests/fuzz/corpus/ca_csr (valid requests, EC and RSA CSRs). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "xds/cp/ca.c"
#include "xds/cp/kube_api.c"   /* ca.c calls the TokenReview client */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(bool ok, const char *what)
{
	if (!ok) {
		fprintf(stderr, "invariant failed: %s\n", what);
		__builtin_trap();
	}
}

static struct ca *the_ca;

static struct ca *fuzz_ca(void)
{
	char path[] = "/tmp/ca_csr_fuzz_tokens.XXXXXX", err[512];
	int fd = mkstemp(path);
	const char *t = "tokens:\n  good-token: {namespace: ns1, service_account: sa1}\n";
	if (fd < 0 || write(fd, t, strlen(t)) != (ssize_t)strlen(t))
		abort();
	close(fd);
	struct ca_options o = { .tokens_path = path, .trust_domain = "fuzz.local", .max_ttl_s = 3600 };
	struct ca *ca = ca_new(&o, err, sizeof(err));
	unlink(path);
	if (!ca) {
		fprintf(stderr, "ca_new: %s\n", err);
		abort();
	}
	free(ca->tokens_path);   /* no re-reads: the file is gone */
	ca->tokens_path = NULL;
	return ca;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (!the_ca) {
		log_set_level_name("off");
		the_ca = fuzz_ca();
	}
	if (size < 1)
		return 0;
	static const char *const auth[] = { "Bearer good-token", "Bearer bad-token", NULL };
	const char *a = auth[data[0] % 3];
	uint8_t *resp = NULL;
	size_t rlen = 0;
	char msg[256] = "";
	uint64_t unauth = the_ca->stats.unauthenticated;
	int rc = ca_handle(the_ca, a, "fuzz", data + 1, size - 1, &resp, &rlen, msg, sizeof(msg));
	check(rc == CA_OK || rc == CA_INVALID_ARGUMENT || rc == CA_UNAUTHENTICATED, "status");
	check((rc == CA_UNAUTHENTICATED) == (data[0] % 3 != 0), "token decides authentication");
	check(rc != CA_UNAUTHENTICATED || the_ca->stats.unauthenticated == unauth + 1, "counted");
	check((rc == CA_OK) == (resp != NULL), "reply iff OK");
	if (rc != CA_OK)
		return 0;
	Istio__V1__Auth__IstioCertificateResponse *r =
		istio__v1__auth__istio_certificate_response__unpack(NULL, rlen, resp);
	check(r && r->n_cert_chain == 2, "reply decodes to [leaf, root]");
	check(!strcmp(r->cert_chain[1], ca_root_pem(the_ca)), "root is the CA's");
	BIO *b = BIO_new_mem_buf(r->cert_chain[0], -1);
	X509 *x = PEM_read_bio_X509(b, NULL, NULL, NULL);
	BIO_free(b);
	check(x != NULL, "leaf parses");
	check(X509_verify(x, the_ca->key) == 1, "leaf signed by the root");
	GENERAL_NAMES *g = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
	check(g && sk_GENERAL_NAME_num(g) == 1, "exactly one SAN");
	GENERAL_NAME *n = sk_GENERAL_NAME_value(g, 0);
	const char *want = "spiffe://fuzz.local/ns/ns1/sa/sa1";
	check(n->type == GEN_URI && ASN1_STRING_length(n->d.ia5) == (int)strlen(want) &&
	      !memcmp(ASN1_STRING_get0_data(n->d.ia5), want, strlen(want)), "the token's SPIFFE ID");
	GENERAL_NAMES_free(g);
	X509_free(x);
	istio__v1__auth__istio_certificate_response__free_unpacked(r, NULL);
	free(resp);
	return 0;
}
