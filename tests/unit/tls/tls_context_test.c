/* tls_context_test.c - tls/: StringMatcher, SAN matching (typed and legacy,
 * DNS wildcards, IP), hash/SPKI pins, and transport_socket parsing errors.
 *
 * Certificates are built in memory with OpenSSL (no files); configs are JSON
 * text with single quotes. */
#include "test.h"

#include <openssl/evp.h>
#include <openssl/x509v3.h>
#include "tls/context.c"

static X509 *make_cert(const char *sans)
{
	EVP_PKEY *pk = EVP_EC_gen("P-256");
	X509 *x = X509_new();
	X509_set_version(x, 2);
	ASN1_INTEGER_set(X509_get_serialNumber(x), 7);
	X509_gmtime_adj(X509_getm_notBefore(x), 0);
	X509_gmtime_adj(X509_getm_notAfter(x), 3600);
	X509_set_pubkey(x, pk);
	X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC,
				   (const unsigned char *)"t", -1, -1, 0);
	X509_set_issuer_name(x, X509_get_subject_name(x));
	X509V3_CTX v3;
	X509V3_set_ctx_nodb(&v3);
	X509V3_set_ctx(&v3, x, x, NULL, NULL, 0);
	X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, &v3, NID_subject_alt_name, sans);
	X509_add_ext(x, ext, -1);
	X509_EXTENSION_free(ext);
	X509_sign(x, pk, EVP_sha256());
	EVP_PKEY_free(pk);
	return x;
}

static char last_err[1024];

/* Parse a CertificateValidationContext from JSON (single quotes). */
static int parse_val(const char *text, struct tls_validation *v)
{
	char *s = strdup(text);
	for (char *p = s; *p; p++)
		if (*p == '\'')
			*p = '"';
	json_error_t je;
	json_t *j = json_loads(s, 0, &je);
	free(s);
	if (!j)
		return -2;
	struct cfg_ctx c;
	cfg_init(&c, NULL, NULL);
	memset(v, 0, sizeof(*v));
	int rc = tls_validation_parse(&c, j, v);
	snprintf(last_err, sizeof(last_err), "%s", c.err);
	json_decref(j);
	return rc;
}

static void val_free(struct tls_validation *v)
{
	for (size_t i = 0; i < v->nsans; i++)
		tls_strm_free(&v->sans[i].m);
	free(v->sans);
	free(v->hashes);
	free(v->spkis);
	free(v->ca.data);
	free(v->ca.path);
}

static bool san_ok(const char *val_json, X509 *x)
{
	struct tls_validation v;
	if (parse_val(val_json, &v)) {
		fprintf(stderr, "  parse failed: %s\n", last_err);
		val_free(&v);
		return false;
	}
	bool ok = tls_san_check(&v, x);
	val_free(&v);
	return ok;
}

TEST(tls_spiffe_uri_matchers)
{
	X509 *x = make_cert("URI:spiffe://cluster.local/ns/default/sa/client,DNS:*.svc.example,IP:10.1.2.3");
	CHECK(san_ok("{'match_typed_subject_alt_names':[{'san_type':'URI','matcher':"
		     "{'exact':'spiffe://cluster.local/ns/default/sa/client'}}]}", x));
	CHECK(!san_ok("{'match_typed_subject_alt_names':[{'san_type':'URI','matcher':"
		      "{'exact':'spiffe://cluster.local/ns/default/sa/intruder'}}]}", x));
	CHECK(san_ok("{'match_typed_subject_alt_names':[{'san_type':'URI','matcher':"
		     "{'prefix':'spiffe://cluster.local/ns/default/'}}]}", x));
	CHECK(san_ok("{'match_typed_subject_alt_names':[{'san_type':'URI','matcher':"
		     "{'suffix':'/sa/client'}}]}", x));
	CHECK(san_ok("{'match_typed_subject_alt_names':[{'san_type':'URI','matcher':"
		     "{'contains':'/ns/default/'}}]}", x));
	CHECK(san_ok("{'match_typed_subject_alt_names':[{'san_type':'URI','matcher':"
		     "{'safe_regex':{'regex':'spiffe://cluster\\\\.local/ns/[a-z]+/sa/client'}}}]}", x));
	CHECK(!san_ok("{'match_typed_subject_alt_names':[{'san_type':'URI','matcher':"
		      "{'safe_regex':{'regex':'spiffe://cluster\\\\.local/ns/[a-z]+'}}}]}", x));
	CHECK(san_ok("{'match_typed_subject_alt_names':[{'san_type':'URI','matcher':"
		     "{'exact':'SPIFFE://CLUSTER.LOCAL/NS/DEFAULT/SA/CLIENT','ignore_case':true}}]}", x));
	/* the type matters: the URI value is no DNS name */
	CHECK(!san_ok("{'match_typed_subject_alt_names':[{'san_type':'DNS','matcher':"
		      "{'prefix':'spiffe://'}}]}", x));
	/* any of the list may match */
	CHECK(san_ok("{'match_typed_subject_alt_names':[{'san_type':'DNS','matcher':{'exact':'x'}},"
		     "{'san_type':'IP_ADDRESS','matcher':{'exact':'10.1.2.3'}}]}", x));
	/* DNS wildcard in the certificate covers one label */
	CHECK(san_ok("{'match_typed_subject_alt_names':[{'san_type':'DNS','matcher':"
		     "{'exact':'api.svc.example'}}]}", x));
	CHECK(!san_ok("{'match_typed_subject_alt_names':[{'san_type':'DNS','matcher':"
		      "{'exact':'a.b.svc.example'}}]}", x));
	/* legacy match_subject_alt_names: any SAN type */
	CHECK(san_ok("{'match_subject_alt_names':[{'exact':'10.1.2.3'}]}", x));
	CHECK(!san_ok("{'match_subject_alt_names':[{'exact':'10.1.2.4'}]}", x));
	/* no matcher: anything goes */
	CHECK(san_ok("{}", x));
	X509_free(x);
}

TEST(tls_cert_pins)
{
	X509 *x = make_cert("URI:spiffe://td/a");
	unsigned char md[32];
	unsigned n;
	char hex[100] = "", b64[64];
	X509_digest(x, EVP_sha256(), md, &n);
	for (unsigned i = 0; i < n; i++)
		sprintf(hex + strlen(hex), i ? ":%02X" : "%02X", md[i]);
	X509_pubkey_digest(x, EVP_sha256(), md, &n);
	EVP_EncodeBlock((unsigned char *)b64, md, 32);
	char cfg[512];
	struct tls_validation v;
	snprintf(cfg, sizeof(cfg), "{'verify_certificate_hash':['%s']}", hex);
	CHECK_INT(parse_val(cfg, &v), RM_OK);
	CHECK(pin_check(&v, x));
	val_free(&v);
	snprintf(cfg, sizeof(cfg), "{'verify_certificate_spki':['%s']}", b64);
	CHECK_INT(parse_val(cfg, &v), RM_OK);
	CHECK(pin_check(&v, x));
	val_free(&v);
	CHECK_INT(parse_val("{'verify_certificate_hash':['" "00112233445566778899aabbccddeeff"
			    "00112233445566778899aabbccddeeff" "']}", &v), RM_OK);
	CHECK(!pin_check(&v, x));
	val_free(&v);
	CHECK_INT(parse_val("{'verify_certificate_hash':['abc']}", &v), RM_ERROR);
	CHECK_CONTAINS(last_err, "verify_certificate_hash[0]: expected a hex SHA-256");
	val_free(&v);
	X509_free(x);
}

TEST(tls_validation_errors)
{
	struct tls_validation v;
	CHECK_INT(parse_val("{'trusted_ca':{'filename':'/nonexistent/ca.pem'}}", &v), RM_ERROR);
	CHECK_CONTAINS(last_err, "trusted_ca.filename: cannot read '/nonexistent/ca.pem'");
	val_free(&v);
	CHECK_INT(parse_val("{'trusted_ca':{'inline_string':'not a pem'}}", &v), RM_ERROR);
	CHECK_CONTAINS(last_err, "trusted_ca: no PEM certificate in '<inline>'");
	val_free(&v);
	CHECK_INT(parse_val("{'match_typed_subject_alt_names':[{'san_type':'OTHER_NAME',"
			    "'matcher':{'exact':'x'}}]}", &v), RM_ERROR);
	CHECK_CONTAINS(last_err, "match_typed_subject_alt_names[0].san_type");
	val_free(&v);
	CHECK_INT(parse_val("{'match_subject_alt_names':[{'exact':'a','prefix':'b'}]}", &v), RM_ERROR);
	CHECK_CONTAINS(last_err, "only one of");
	val_free(&v);
	CHECK_INT(parse_val("{'trusted_ca':{'filename':'a','inline_string':'b'}}", &v), RM_ERROR);
	CHECK_CONTAINS(last_err, "exactly one of filename");
	val_free(&v);
	CHECK_INT(parse_val("{'bogus':1}", &v), RM_ERROR);
	CHECK_CONTAINS(last_err, "unknown field 'bogus'");
	val_free(&v);
}

TEST(tls_alpn_select_prefers_server_order)
{
	struct tls_ctx t = { 0 };
	unsigned char wire[] = "\x02h2\x08http/1.1";
	t.alpn = wire;
	t.alpn_len = sizeof(wire) - 1;
	const unsigned char offer[] = "\x08http/1.1\x02h2";
	const unsigned char *out;
	unsigned char outlen;
	CHECK_INT(alpn_select_cb(NULL, &out, &outlen, offer, sizeof(offer) - 1, &t), SSL_TLSEXT_ERR_OK);
	CHECK(outlen == 2 && !memcmp(out, "h2", 2));
	const unsigned char only[] = "\x06spdy/3";
	CHECK_INT(alpn_select_cb(NULL, &out, &outlen, only, sizeof(only) - 1, &t), SSL_TLSEXT_ERR_NOACK);
}

/* combined_validation_context: exclusive with the other two; its SDS
 * secret is required; default_validation_context holds SAN matchers only. */
static int parse_common_text(const char *text)
{
	char *s = strdup(text);
	for (char *p = s; *p; p++)
		if (*p == '\'')
			*p = '"';
	json_error_t je;
	json_t *j = json_loads(s, 0, &je);
	free(s);
	if (!j)
		return -2;
	struct cfg_ctx c;
	cfg_init(&c, NULL, NULL);
	struct tls_ctx *t = xcalloc(1, sizeof(*t));
	int rc = parse_common(&c, j, t);
	snprintf(last_err, sizeof(last_err), "%s", c.err);
	free(t->certs);   /* the error paths tested here set nothing else */
	free(t);
	json_decref(j);
	return rc;
}

TEST(tls_combined_validation_context_errors)
{
	CHECK_INT(parse_common_text("{'validation_context':{},'combined_validation_context':"
				    "{'validation_context_sds_secret_config':{'name':'ROOTCA'}}}"),
		  RM_ERROR);
	CHECK_CONTAINS(last_err, "only one of validation_context, validation_context_sds_secret_config, "
		       "combined_validation_context");
	CHECK_INT(parse_common_text("{'combined_validation_context':{'default_validation_context':{}}}"),
		  RM_ERROR);
	CHECK_CONTAINS(last_err, "validation_context_sds_secret_config");
	CHECK_INT(parse_common_text("{'combined_validation_context':{'bogus':1}}"), RM_ERROR);
	CHECK_CONTAINS(last_err, "unknown field 'bogus'");
}
