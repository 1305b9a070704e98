/* ca_client.c - the workload certificate client (see ca_client.h). */
#include "ca_client.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <netdb.h>
#include <string.h>
#include <sys/stat.h>
#include <arpa/inet.h>
#include <time.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <event2/event.h>
#include <jansson.h>
#include "istio/security/v1alpha1/ca.pb-c.h"
#include "tls.h"
#include "../proxy/common.h"
#include "../proxy/log.h"
#include "../proxy/config/cfg.h"
#include "../proxy/server.h"
#include "../proxy/snapshot.h"
#include "../proxy/upstream/dns.h"
#include "../stats/stats.h"
#include "../xds/grpc_client.h"

#define CAC_PATH "/istio.v1.auth.IstioCertificateService/CreateCertificate"
#define CAC_ROOT_SECRET "ROOTCA"
#define CAC_DEADLINE_MS 10000
#define CAC_BACKOFF_MIN_MS 1000
#define CAC_BACKOFF_MAX_MS 30000
#define CAC_MAX_TOKEN 16384

static struct {
	char *address, *token_file, *identity;   /* owned */
	char *root_cert, *server_name;           /* owned: TLS to the CA (NULL: h2c) */
	char *spiffe_id;                         /* owned: the identity we must get, or NULL */
	unsigned long ttl_s;
	bool ttl_set;
} opt;

static struct cac {
	struct server *srv;
	struct event_base *base;
	struct event *timer;            /* owned: the next request (renewal or retry) */
	struct event *deadline;         /* owned: a call taking too long */
	struct event *free_ev;          /* owned: frees `dead` outside its callback */
	struct event *tick;             /* owned: cert_expiry_seconds, every second */
	struct grpc_client *g, *dead;   /* owned */
	struct dns_resolver *dns;       /* owned, created on first use */
	struct dns_query *q;            /* pending resolution */
	EVP_PKEY *key;                  /* owned: the key of the request in flight */
	uint8_t *resp;                  /* owned: the reply message */
	size_t resp_len;
	char *host;                     /* owned */
	unsigned port;
	unsigned backoff_ms;
	bool released;                  /* the initial hold was released */
	time_t not_after;               /* of the installed certificate, 0 none */
	struct stats_scope *stats;      /* owned: remora.ca_client.* */
	struct tls_ctx *tls;            /* owned: --ca-root-cert (remora.ca_client.ssl.*) */
	struct timespec root_mtime;     /* of --ca-root-cert when last (re)loaded */
} *cac;

static const struct stat_desc cac_desc[] = { CA_CLIENT_STATS(STATS_DESC) };

/* ---- options ---------------------------------------------------------------------- */

int ca_client_parse_ttl(const char *v, unsigned long *out_s)
{
	char *end;
	errno = 0;
	unsigned long n = strtoul(v, &end, 10);
	unsigned long mul = 1;
	if (end == v || errno || !isdigit((unsigned char)*v))
		return RM_ERROR;
	if (!strcmp(end, "h"))
		mul = 3600;
	else if (!strcmp(end, "m"))
		mul = 60;
	else if (*end && strcmp(end, "s"))
		return RM_ERROR;
	if (!n || n > 10ul * 365 * 86400 / mul)
		return RM_ERROR;
	*out_s = n * mul;
	return RM_OK;
}

int ca_client_split_address(const char *addr, char **host, unsigned *port)
{
	const char *colon, *h = addr;
	size_t hl;
	if (*addr == '[') {
		const char *rb = strchr(addr, ']');
		if (!rb || rb[1] != ':')
			return RM_ERROR;
		h = addr + 1;
		hl = (size_t)(rb - h);
		colon = rb + 1;
	} else {
		colon = strrchr(addr, ':');
		if (!colon || memchr(addr, ':', (size_t)(colon - addr)))
			return RM_ERROR;
		hl = (size_t)(colon - addr);
	}
	char *end;
	unsigned long p = strtoul(colon + 1, &end, 10);
	if (!hl || !colon[1] || *end || !p || p > 65535)
		return RM_ERROR;
	*host = xstrndup(h, hl);
	*port = (unsigned)p;
	return RM_OK;
}

static void set_str(char **dst, const char *v)
{
	free(*dst);
	*dst = xstrdup(v);
}

int ca_client_set_option(const char *flag, const char *value, char *err, size_t errlen)
{
	if (!strcmp(flag, "ca-address"))
		set_str(&opt.address, value);
	else if (!strcmp(flag, "ca-token-file"))
		set_str(&opt.token_file, value);
	else if (!strcmp(flag, "identity-secret"))
		set_str(&opt.identity, value);
	else if (!strcmp(flag, "ca-root-cert"))
		set_str(&opt.root_cert, value);
	else if (!strcmp(flag, "ca-server-name"))
		set_str(&opt.server_name, value);
	else if (!strcmp(flag, "spiffe-id")) {
		if (strncmp(value, "spiffe://", 9) || !value[9] || strpbrk(value, " \t\r\n")) {
			snprintf(err, errlen, "--spiffe-id: '%s' is not a spiffe:// URI", value);
			return RM_ERROR;
		}
		set_str(&opt.spiffe_id, value);
	}
	else if (!strcmp(flag, "cert-ttl")) {
		if (ca_client_parse_ttl(value, &opt.ttl_s)) {
			snprintf(err, errlen, "--cert-ttl: '%s' is not a duration (24h, 90m, 30s, 3600)",
				 value);
			return RM_ERROR;
		}
		opt.ttl_set = true;
	} else {
		snprintf(err, errlen, "unknown option --%s", flag);
		return RM_ERROR;
	}
	return RM_OK;
}

/* The root file holds at least one PEM certificate. */
static int root_check(const char *path, char *err, size_t errlen)
{
	FILE *f = fopen(path, "r");
	if (!f) {
		snprintf(err, errlen, "--ca-root-cert: %s: %s", path, strerror(errno));
		return RM_ERROR;
	}
	X509 *x = PEM_read_X509(f, NULL, NULL, NULL);
	fclose(f);
	ERR_clear_error();
	if (!x) {
		snprintf(err, errlen, "--ca-root-cert: %s: no PEM certificate in it", path);
		return RM_ERROR;
	}
	X509_free(x);
	return RM_OK;
}

int ca_client_configure(char *err, size_t errlen)
{
	static const struct { const char *env, *flag; } envs[] = {
		{ "REMORA_CA_ADDRESS", "ca-address" }, { "REMORA_CA_TOKEN_FILE", "ca-token-file" },
		{ "REMORA_CERT_TTL", "cert-ttl" }, { "REMORA_IDENTITY_SECRET", "identity-secret" },
		{ "REMORA_CA_ROOT_CERT", "ca-root-cert" }, { "REMORA_CA_SERVER_NAME", "ca-server-name" },
		{ "REMORA_SPIFFE_ID", "spiffe-id" },
	};
	for (size_t i = 0; i < ARRAY_SIZE(envs); i++) {
		const char *v = getenv(envs[i].env);
		bool set = !strcmp(envs[i].flag, "ca-address") ? !!opt.address
			 : !strcmp(envs[i].flag, "ca-token-file") ? !!opt.token_file
			 : !strcmp(envs[i].flag, "cert-ttl") ? opt.ttl_set
			 : !strcmp(envs[i].flag, "ca-root-cert") ? !!opt.root_cert
			 : !strcmp(envs[i].flag, "ca-server-name") ? !!opt.server_name
			 : !strcmp(envs[i].flag, "spiffe-id") ? !!opt.spiffe_id : !!opt.identity;
		if (v && *v && !set && ca_client_set_option(envs[i].flag, v, err, errlen)) {
			size_t l = strlen(err);
			snprintf(err + l, errlen - l, " (from %s)", envs[i].env);
			return RM_ERROR;
		}
	}
	if (!opt.address) {
		if (opt.token_file || opt.ttl_set || opt.identity || opt.root_cert || opt.server_name ||
		    opt.spiffe_id) {
			snprintf(err, errlen, "--ca-token-file, --cert-ttl, --identity-secret, "
				 "--ca-root-cert, --ca-server-name and --spiffe-id need --ca-address");
			return RM_ERROR;
		}
		return RM_OK;
	}
	char *h;
	unsigned p;
	if (ca_client_split_address(opt.address, &h, &p)) {
		snprintf(err, errlen, "--ca-address: '%s' is not host:port", opt.address);
		return RM_ERROR;
	}
	free(h);
	if (opt.server_name && !opt.root_cert) {
		snprintf(err, errlen, "--ca-server-name needs --ca-root-cert (it names the TLS server)");
		return RM_ERROR;
	}
	if (opt.root_cert && root_check(opt.root_cert, err, errlen))
		return RM_ERROR;
	if (!opt.token_file) {
		snprintf(err, errlen, "--ca-address needs --ca-token-file (the bearer token)");
		return RM_ERROR;
	}
	if (!opt.ttl_set)
		opt.ttl_s = 24 * 3600;
	if (!opt.identity)
		opt.identity = xstrdup("default");
	if (!*opt.identity || !strcmp(opt.identity, CAC_ROOT_SECRET)) {
		snprintf(err, errlen, "--identity-secret: must be a name other than %s",
			 CAC_ROOT_SECRET);
		return RM_ERROR;
	}
	tls_sds_local_declare(opt.identity);
	tls_sds_local_declare(CAC_ROOT_SECRET);
	return RM_OK;
}

bool ca_client_enabled(void)
{
	return opt.address != NULL;
}

/* ---- one request ------------------------------------------------------------------- */

static void schedule(uint64_t ms)
{
	struct timeval tv = { (time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000 };
	evtimer_add(cac->timer, &tv);
}

static void end_call(void)
{
	evtimer_del(cac->deadline);
	dns_cancel(cac->q);
	cac->q = NULL;
	if (cac->g) {   /* freed from the loop: we may be inside its callback */
		grpc_client_free(cac->dead);
		cac->dead = cac->g;
		cac->g = NULL;
		event_active(cac->free_ev, 0, 0);
	}
	EVP_PKEY_free(cac->key);
	cac->key = NULL;
	free(cac->resp);
	cac->resp = NULL;
	cac->resp_len = 0;
}

static void fail(const char *fmt, ...) PRINTF(1, 2);
static void root_refresh(void);
static void fail(const char *fmt, ...)
{
	char m[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(m, sizeof(m), fmt, ap);
	va_end(ap);
	end_call();
	stats_inc(cac->stats, 0, CAC_cert_request_failures);
	cac->backoff_ms = cac->backoff_ms ? cac->backoff_ms * 2 : CAC_BACKOFF_MIN_MS;
	if (cac->backoff_ms > CAC_BACKOFF_MAX_MS)
		cac->backoff_ms = CAC_BACKOFF_MAX_MS;
	/* full jitter over the upper half: [b/2, b) */
	uint64_t ms = cac->backoff_ms / 2 + rand_below(cac->backoff_ms / 2);
	log_warn("ca_client: certificate request to %s failed: %s; retrying in %" PRIu64 " ms",
		 opt.address, m, ms);
	schedule(ms);
}

static char *read_token(char *err, size_t errlen)
{
	FILE *f = fopen(opt.token_file, "r");
	if (!f) {
		snprintf(err, errlen, "token file %s: %s", opt.token_file, strerror(errno));
		return NULL;
	}
	char *buf = xmalloc(CAC_MAX_TOKEN + 1);
	size_t n = fread(buf, 1, CAC_MAX_TOKEN + 1, f);
	fclose(f);
	while (n && isspace((unsigned char)buf[n - 1]))
		n--;
	buf[n] = 0;
	if (!n || n > CAC_MAX_TOKEN || strpbrk(buf, "\r\n")) {
		snprintf(err, errlen, "token file %s: %s", opt.token_file,
			 !n ? "empty" : "not a single-line token of at most 16 KiB");
		OPENSSL_cleanse(buf, CAC_MAX_TOKEN + 1);
		free(buf);
		return NULL;
	}
	return buf;
}

/* A new key and its CSR (PEM, malloc'd).  The CA ignores the subject and
 * SANs; the CSR carries the key and proves we hold it. */
static char *make_csr(EVP_PKEY **key_out)
{
	EVP_PKEY *k = EVP_EC_gen("P-256");
	X509_REQ *r = X509_REQ_new();
	BIO *b = BIO_new(BIO_s_mem());
	char *out = NULL, *d;
	if (k && r && b && X509_REQ_set_version(r, 0) && X509_REQ_set_pubkey(r, k) &&
	    X509_REQ_sign(r, k, EVP_sha256()) && PEM_write_bio_X509_REQ(b, r)) {
		long n = BIO_get_mem_data(b, &d);
		out = xstrndup(d, (size_t)n);
	}
	BIO_free(b);
	X509_REQ_free(r);
	if (!out) {
		EVP_PKEY_free(k);
		ERR_clear_error();
		return NULL;
	}
	*key_out = k;
	return out;
}

static void on_open(void *arg)
{
	(void)arg;
}

static void on_message(void *arg, const uint8_t *data, size_t len)
{
	(void)arg;
	if (cac->resp)
		return;   /* unary: the first message is the answer */
	cac->resp = xmalloc(len ? len : 1);
	memcpy(cac->resp, data, len);
	cac->resp_len = len;
}

static time_t asn1_to_time(const ASN1_TIME *t)
{
	struct tm tm;
	if (!ASN1_TIME_to_tm(t, &tm))
		return 0;
	return timegm(&tm);
}

static char *key_pem(EVP_PKEY *k)
{
	BIO *b = BIO_new(BIO_s_mem());
	char *d, *out = NULL;
	if (b && PEM_write_bio_PrivateKey(b, k, NULL, NULL, 0, NULL, NULL)) {
		long n = BIO_get_mem_data(b, &d);
		out = xstrndup(d, (size_t)n);
		OPENSSL_cleanse(d, (size_t)n);
	}
	BIO_free(b);
	return out;
}

static bool has_uri_san(X509 *leaf, const char *uri)
{
	GENERAL_NAMES *names = X509_get_ext_d2i(leaf, NID_subject_alt_name, NULL, NULL);
	bool found = false;
	for (int i = 0; names && i < sk_GENERAL_NAME_num(names) && !found; i++) {
		const GENERAL_NAME *g = sk_GENERAL_NAME_value(names, i);
		if (g->type != GEN_URI)
			continue;
		const ASN1_IA5STRING *u = g->d.uniformResourceIdentifier;
		found = (size_t)u->length == strlen(uri) && !memcmp(u->data, uri, (size_t)u->length);
	}
	GENERAL_NAMES_free(names);
	return found;
}

/* Check the reply and install it; RM_ERROR with err. */
static int install(char *err, size_t errlen)
{
	Istio__V1__Auth__IstioCertificateResponse *r =
		istio__v1__auth__istio_certificate_response__unpack(NULL, cac->resp_len, cac->resp);
	X509 *leaf = NULL;
	char *kp = NULL, *chain = NULL, ver[64];
	json_t *sid = NULL, *sroot = NULL;
	int rc = RM_ERROR;
	if (!r) {
		snprintf(err, errlen, "cannot decode IstioCertificateResponse");
		return RM_ERROR;
	}
	if (r->n_cert_chain < 2) {
		snprintf(err, errlen, "the CA returned %zu certificate(s), expected [leaf, ..., root]",
			 r->n_cert_chain);
		goto out;
	}
	BIO *b = BIO_new_mem_buf(r->cert_chain[0], -1);
	leaf = b ? PEM_read_bio_X509(b, NULL, NULL, NULL) : NULL;
	BIO_free(b);
	if (!leaf || X509_check_private_key(leaf, cac->key) != 1) {
		ERR_clear_error();
		snprintf(err, errlen, "the CA's leaf certificate %s", leaf ? "is not for our key"
								       : "does not parse");
		goto out;
	}
	if (opt.spiffe_id && !has_uri_san(leaf, opt.spiffe_id)) {
		snprintf(err, errlen, "the CA issued a certificate for another identity than %s "
			 "(--spiffe-id)", opt.spiffe_id);
		goto out;
	}
	/* identity: leaf + intermediates; ROOTCA: the last one */
	size_t total = 1;
	for (size_t i = 0; i + 1 < r->n_cert_chain; i++)
		total += strlen(r->cert_chain[i]) + 1;
	chain = xcalloc(1, total);
	for (size_t i = 0; i + 1 < r->n_cert_chain; i++) {
		strcat(chain, r->cert_chain[i]);
		if (chain[strlen(chain) - 1] != '\n')
			strcat(chain, "\n");
	}
	kp = key_pem(cac->key);
	const ASN1_INTEGER *sn = X509_get0_serialNumber(leaf);
	BIGNUM *bn = ASN1_INTEGER_to_BN(sn, NULL);
	char *hex = bn ? BN_bn2hex(bn) : NULL;
	snprintf(ver, sizeof(ver), "%s", hex ? hex : "?");
	OPENSSL_free(hex);
	BN_free(bn);
	sid = json_pack("{s:s, s:{s:{s:s}, s:{s:s}}}", "name", opt.identity, "tls_certificate",
			"certificate_chain", "inline_string", chain, "private_key", "inline_string",
			kp ? kp : "");
	sroot = json_pack("{s:s, s:{s:{s:s}}}", "name", CAC_ROOT_SECRET, "validation_context",
			  "trusted_ca", "inline_string", r->cert_chain[r->n_cert_chain - 1]);
	/* the trust bundle first: a peer's new certificate may already use it */
	if (!kp || !sid || !sroot ||
	    tls_sds_local_set(CAC_ROOT_SECRET, sroot, ver, err, errlen) ||
	    tls_sds_local_set(opt.identity, sid, ver, err, errlen))
		goto out;
	time_t nb = asn1_to_time(X509_get0_notBefore(leaf));
	cac->not_after = asn1_to_time(X509_get0_notAfter(leaf));
	rc = RM_OK;
	/* renew at half-life, with a new key */
	time_t now = time(NULL);
	int64_t renew_ms = ((int64_t)nb * 1000 + ((int64_t)cac->not_after - nb) * 500) -
			   (int64_t)now * 1000;
	if (renew_ms < 1000)
		renew_ms = 1000;
	stats_inc(cac->stats, 0, CAC_certs_installed);
	stats_gauge_set(cac->stats, CAC_cert_expiry_seconds,
			cac->not_after > now ? (int64_t)(cac->not_after - now) : 0);
	log_info("ca_client: certificate serial %s installed as '%s' (expires in %lld s, renewal in "
		 "%lld ms)", ver, opt.identity, (long long)(cac->not_after - now),
		 (long long)renew_ms);
	schedule((uint64_t)renew_ms);
out:
	if (kp) {
		OPENSSL_cleanse(kp, strlen(kp));
		free(kp);
	}
	free(chain);
	json_decref(sid);
	json_decref(sroot);
	X509_free(leaf);
	istio__v1__auth__istio_certificate_response__free_unpacked(r, NULL);
	return rc;
}

static void on_close(void *arg, int status, const char *message)
{
	char err[512];
	(void)arg;
	if (status) {
		fail("grpc-status %d: %s", status, message && *message ? message : "(no message)");
		return;
	}
	if (!cac->resp) {
		fail("no reply message");
		return;
	}
	if (install(err, sizeof(err))) {
		fail("%s", err);
		return;
	}
	end_call();
	cac->backoff_ms = 0;
	if (!cac->released) {
		cac->released = true;
		server_init_release(cac->srv);
	}
}

static void call(const struct sockaddr *sa, socklen_t salen)
{
	static const struct grpc_client_cbs cbs = { on_open, on_message, on_close };
	char err[512];
	char *tok = read_token(err, sizeof(err));
	if (!tok) {
		fail("%s", err);
		return;
	}
	char *csr = make_csr(&cac->key);
	if (!csr) {
		OPENSSL_cleanse(tok, strlen(tok));
		free(tok);
		fail("cannot generate a key and CSR");
		return;
	}
	Istio__V1__Auth__IstioCertificateRequest rq = ISTIO__V1__AUTH__ISTIO_CERTIFICATE_REQUEST__INIT;
	rq.csr = csr;
	rq.validity_duration = (int64_t)opt.ttl_s;
	size_t n = istio__v1__auth__istio_certificate_request__get_packed_size(&rq);
	uint8_t *buf = xmalloc(n ? n : 1);
	istio__v1__auth__istio_certificate_request__pack(&rq, buf);
	free(csr);
	root_refresh();
	cac->g = grpc_client_new_tls(cac->base, sa, salen, cac->tls,
				     opt.server_name ? opt.server_name : opt.address, CAC_PATH, 0,
				     &cbs, cac);
	if (cac->g) {
		char *bearer = xasprintf("Bearer %s", tok);
		grpc_client_add_metadata(cac->g, "authorization", bearer);
		OPENSSL_cleanse(bearer, strlen(bearer));
		free(bearer);
		grpc_client_send(cac->g, buf, n);
		grpc_client_close_send(cac->g);
		struct timeval tv = { CAC_DEADLINE_MS / 1000, 0 };
		evtimer_add(cac->deadline, &tv);
	}
	OPENSSL_cleanse(tok, strlen(tok));
	free(tok);
	free(buf);
	if (!cac->g)
		fail("cannot connect: %s", strerror(errno));
}

static void resolved(const struct dns_result *res, void *arg)
{
	(void)arg;
	cac->q = NULL;
	if (res->status || !res->naddrs) {
		fail("cannot resolve '%s': %s", cac->host, res->error ? res->error : "no address");
		return;
	}
	const struct sockaddr_storage *ss = &res->addrs[0];
	call((const struct sockaddr *)ss, ss->ss_family == AF_INET6 ? sizeof(struct sockaddr_in6)
								    : sizeof(struct sockaddr_in));
}

static void request_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
	if (cac->g || cac->q)
		return;
	stats_inc(cac->stats, 0, CAC_cert_requests);
	struct addrinfo hints = { .ai_flags = AI_NUMERICHOST | AI_NUMERICSERV,
				  .ai_socktype = SOCK_STREAM }, *ai = NULL;
	char port[8];
	snprintf(port, sizeof(port), "%u", cac->port);
	if (!getaddrinfo(cac->host, port, &hints, &ai)) {
		call(ai->ai_addr, ai->ai_addrlen);
		freeaddrinfo(ai);
		return;
	}
	if (!cac->dns) {
		char err[256];
		if (!(cac->dns = dns_resolver_new(cac->base, NULL, 0, err, sizeof(err)))) {
			fail("DNS: %s", err);
			return;
		}
	}
	cac->q = dns_resolve(cac->dns, cac->host, (uint16_t)cac->port, DNS_AUTO, resolved, NULL);
}

static void deadline_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
	fail("no answer within %d ms", CAC_DEADLINE_MS);
}

static void free_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
	grpc_client_free(cac->dead);
	cac->dead = NULL;
}

static void tick_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
	time_t now = time(NULL);
	stats_gauge_set(cac->stats, CAC_cert_expiry_seconds,
			cac->not_after > now ? (int64_t)(cac->not_after - now) : 0);
}

/* The UpstreamTlsContext of the CA connection, as a user would write it:
 * the root as trusted_ca (a file: rotation is picked up), ALPN h2, and the
 * server's name (--ca-server-name, else the host of --ca-address) as SNI and
 * as the SAN it must present (DNS, or IP_ADDRESS for an IP literal). */
static struct tls_ctx *build_tls(struct server *srv)
{
	const char *name = opt.server_name ? opt.server_name : cac->host;
	unsigned char ip[16];
	bool is_ip = inet_pton(AF_INET, name, ip) == 1 || inet_pton(AF_INET6, name, ip) == 1;
	json_t *ts = json_pack(
		"{s:s, s:{s:s, s:{s:[s], s:{s:{s:s}, s:[{s:s, s:{s:s}}]}}}}", "name",
		TLS_TRANSPORT_NAME, "typed_config", "@type", TLS_UPSTREAM_TYPE, "common_tls_context",
		"alpn_protocols", "h2", "validation_context", "trusted_ca", "filename",
		opt.root_cert, "match_typed_subject_alt_names", "san_type",
		is_ip ? "IP_ADDRESS" : "DNS", "matcher", "exact", name);
	if (!is_ip)
		json_object_set_new(json_object_get(ts, "typed_config"), "sni", json_string(name));
	struct cfg_ctx c;
	struct build_ctx b = { .srv = srv, .stats = srv->stats, .nworkers = 0 };
	struct tls_ctx *t = NULL;
	cfg_init(&c, NULL, "--ca-root-cert");
	if (tls_transport_socket_parse(&c, ts, false, &b, "remora.ca_client", "remora.ca_client",
				       NULL, NULL, &t))
		die("ca_client: %s", c.err);   /* the file was checked by ca_client_configure */
	json_decref(ts);
	return t;
}

/* The root file changed since it was loaded (a ConfigMap update): re-read
 * file-backed secrets so the next handshake trusts the new root. */
static void root_refresh(void)
{
	struct stat st;
	if (!cac->tls || stat(opt.root_cert, &st))
		return;
	if (st.st_mtim.tv_sec == cac->root_mtime.tv_sec &&
	    st.st_mtim.tv_nsec == cac->root_mtime.tv_nsec)
		return;
	if (cac->root_mtime.tv_sec || cac->root_mtime.tv_nsec) {
		log_info("ca_client: %s changed: reloading the CA root", opt.root_cert);
		tls_secrets_reload_all();
	}
	cac->root_mtime = st.st_mtim;
}

void ca_client_start(struct server *srv)
{
	if (!opt.address || cac)
		return;
	cac = xcalloc(1, sizeof(*cac));
	cac->srv = srv;
	cac->base = srv->base;
	if (ca_client_split_address(opt.address, &cac->host, &cac->port))
		die("ca_client: bad address");   /* checked by ca_client_configure */
	cac->timer = evtimer_new(cac->base, request_cb, NULL);
	cac->deadline = evtimer_new(cac->base, deadline_cb, NULL);
	cac->free_ev = event_new(cac->base, -1, 0, free_cb, NULL);
	cac->tick = event_new(cac->base, -1, EV_PERSIST, tick_cb, NULL);
	cac->stats = stats_scope_new(srv->stats, "remora.ca_client", "remora.ca_client", NULL, NULL,
				     cac_desc, CA_CLIENT_STATS_N);
	if (opt.root_cert) {
		cac->tls = build_tls(srv);
		root_refresh();
	}
	struct timeval sec = { 1, 0 };
	event_add(cac->tick, &sec);
	log_info("ca_client: requesting '%s' from %s over %s (lifetime %lu s)", opt.identity,
		 opt.address, cac->tls ? "TLS" : "cleartext h2c", opt.ttl_s);
	schedule(0);
}

void ca_client_stop(void)
{
	if (cac) {
		dns_cancel(cac->q);
		grpc_client_free(cac->g);
		grpc_client_free(cac->dead);
		dns_resolver_free(cac->dns);
		event_free(cac->timer);
		event_free(cac->deadline);
		event_free(cac->free_ev);
		event_free(cac->tick);
		EVP_PKEY_free(cac->key);
		free(cac->resp);
		free(cac->host);
		stats_scope_free(cac->stats);
		tls_ctx_free(cac->tls);
		free(cac);
		cac = NULL;
	}
	free(opt.address);
	free(opt.token_file);
	free(opt.identity);
	free(opt.root_cert);
	free(opt.server_name);
	free(opt.spiffe_id);
	memset(&opt, 0, sizeof(opt));
	tls_sds_local_clear();
}
