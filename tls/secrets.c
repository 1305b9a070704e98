/* secrets.c - the secret store: named and inline certificates and validation
 * contexts, their data sources, inotify file watching, /certs.
 *
 * Everything here runs on the main thread.  A secret's bytes are read when
 * the config is compiled (so a missing file is a config error naming its
 * field) and again when inotify reports a change in the file's directory
 * (Kubernetes swaps a "..data" symlink, so we watch directories, not files).
 * After a 100 ms debounce every file-backed secret is re-read; contexts that
 * use a changed secret rebuild their SSL_CTX and post it to the workers.  A
 * rebuild that fails (say the certificate was replaced but not yet its key)
 * keeps the previous SSL_CTX and is retried at the next change.
 * SDS (xDS) updates secrets through the same path (tls_sds_apply): the new
 * data replaces the old, the secret is marked dirty, and the contexts using
 * it rebuild.  An SDS secret is created pending (no data) by the first
 * context naming it; a context with a pending secret has a placeholder
 * SSL_CTX that fails every handshake (no certificate; a pending validation
 * context fails every verification), and listeners / clusters using it warm
 * until it arrives (xds/ads.c asks tls_ctx_ready).  The secret is freed, and
 * its subscription dropped, when the last context using it goes. */
#include "tls-t.h"

#include <errno.h>
#include <ctype.h>
#include <inttypes.h>
#include <arpa/inet.h>
#include <limits.h>
#include <time.h>
#include <unistd.h>
#include <fcntl.h>
#include <sys/inotify.h>
#include <openssl/pem.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <event2/event.h>
#include "../proxy/log.h"
#include "../proxy/server.h"

static struct tls_secret *secrets;          /* the store */
static struct tls_ctx *contexts;            /* every live context */
static struct event_base *sds_base;         /* for SDS fetch timers (tls_secrets_start) */
static void (*sds_notify_fn)(void *arg);
static void *sds_notify_arg;
static const struct stat_desc sds_desc[] = { SDS_STATS(STATS_DESC) };

struct tls_secret *tls_secret_find(const char *name)
{
	for (struct tls_secret *s = secrets; s; s = s->next)
		if (s->name && !s->sds && !strcmp(s->name, name))
			return s;
	return NULL;
}

static struct tls_secret *sds_find(const char *name)
{
	for (struct tls_secret *s = secrets; s; s = s->next)
		if (s->sds && !strcmp(s->name, name))
			return s;
	return NULL;
}

struct tls_secret *tls_secret_add(const char *name, enum secret_kind kind)
{
	struct tls_secret *s = xcalloc(1, sizeof(*s));
	s->name = name ? xstrdup(name) : NULL;
	s->anonymous = !name;
	s->kind = kind;
	s->v = &s->val;
	s->next = secrets;
	secrets = s;
	return s;
}

static void datasrc_free(struct tls_datasrc *ds)
{
	free(ds->path);
	free(ds->data);
	memset(ds, 0, sizeof(*ds));
}

static void validation_free(struct tls_validation *v)
{
	datasrc_free(&v->ca);
	datasrc_free(&v->crl);
	for (size_t i = 0; i < v->nsans; i++)
		tls_strm_free(&v->sans[i].m);
	free(v->sans);
	free(v->hashes);
	free(v->spkis);
}

/* ---- retired validation contexts ---------------------------------------------------
 * An SDS update replaces a secret's validation context while SSL_CTXs built
 * with the old one live on (worker slots until they swap, established
 * connections until they close).  Each SSL_CTX holds a reference
 * (ctx_refs, dropped by its ex-data free callback on whatever thread frees
 * it); the replaced context waits on the secret's retired list and is freed
 * here, on the main thread, once no SSL_CTX uses it: at the next update of
 * the secret and by a 1 s sweep while any is waiting.  A secret dropped
 * while its contexts are still used hands them to the orphan list. */

static struct tls_validation **orphans;     /* owned [norphans]: of secrets freed */
static size_t norphans;
static struct event *sweep_ev;              /* owned: the 1 s sweep, armed while any waits */

static bool validation_used(struct tls_validation *v)
{
	return atomic_load_explicit(&v->ctx_refs, memory_order_acquire) != 0;
}

/* Free the entries of arr[*n] no SSL_CTX uses; the others move to the front. */
static void sweep_list(struct tls_validation **arr, size_t *n)
{
	size_t k = 0;
	for (size_t i = 0; i < *n; i++) {
		if (validation_used(arr[i])) {
			arr[k++] = arr[i];
			continue;
		}
		validation_free(arr[i]);
		free(arr[i]);
	}
	*n = k;
}

static void sweep_arm(void);

static void sweep_all(void)
{
	bool left = false;
	for (struct tls_secret *s = secrets; s; s = s->next) {
		if (!s->nretired)
			continue;
		sweep_list(s->retired, &s->nretired);
		stats_gauge_set(s->stats, SDS_retired_contexts, (int64_t)s->nretired);
		left |= s->nretired != 0;
	}
	sweep_list(orphans, &norphans);
	if (left || norphans)
		sweep_arm();
}

static void sweep_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
	sweep_all();
}

static void sweep_arm(void)
{
	if (!sds_base)   /* not started yet (or stopping): the next update sweeps */
		return;
	if (!sweep_ev)
		sweep_ev = evtimer_new(sds_base, sweep_cb, NULL);
	if (!evtimer_pending(sweep_ev, NULL)) {
		struct timeval sec = { 1, 0 };
		evtimer_add(sweep_ev, &sec);
	}
}

/* A heap validation leaving its secret: freed now if unused, else orphaned. */
static void validation_drop(struct tls_validation *v)
{
	if (!validation_used(v)) {
		validation_free(v);
		free(v);
		return;
	}
	orphans = xrealloc(orphans, (norphans + 1) * sizeof(*orphans));
	orphans[norphans++] = v;
	sweep_arm();
}

static void secret_free(struct tls_secret *s)
{
	datasrc_free(&s->chain);
	datasrc_free(&s->key);
	validation_free(&s->val);
	if (s->v != &s->val)
		validation_drop(s->v);
	for (size_t i = 0; i < s->nretired; i++)
		validation_drop(s->retired[i]);
	free(s->retired);
	if (s->timer)
		event_free(s->timer);
	json_decref(s->sds_json);
	stats_scope_free(s->stats);
	free(s->name);
	free(s);
}

static void sds_notify(void)
{
	if (sds_notify_fn)
		sds_notify_fn(sds_notify_arg);
}

void tls_secret_release(struct tls_secret *s)
{
	if (!s || (!s->anonymous && !s->sds))
		return;
	if (s->sds && --s->refs)
		return;
	for (struct tls_secret **pp = &secrets; *pp; pp = &(*pp)->next) {
		if (*pp == s) {
			*pp = s->next;
			break;
		}
	}
	bool sds = s->sds;
	if (sds)
		log_info("tls: SDS secret '%s' no longer used", s->name);
	secret_free(s);
	if (sds)
		sds_notify();
}

void tls_ctx_link(struct tls_ctx *t)
{
	t->next = contexts;
	if (contexts)
		contexts->prev = t;
	contexts = t;
}

void tls_ctx_unlink(struct tls_ctx *t)
{
	if (t->prev)
		t->prev->next = t->next;
	else if (contexts == t)
		contexts = t->next;
	if (t->next)
		t->next->prev = t->prev;
	t->next = t->prev = NULL;
}

struct tls_ctx *tls_ctx_list(void) { return contexts; }

/* ---- data sources ---------------------------------------------------------------- */

static int read_file(const char *path, char **out, size_t *len, char *err, size_t errlen)
{
	FILE *f = fopen(path, "rb");
	char *buf = NULL;
	size_t cap = 0, n = 0;
	if (!f) {
		snprintf(err, errlen, "cannot read '%s': %s", path, strerror(errno));
		return RM_ERROR;
	}
	for (;;) {
		if (n + 4096 + 1 > cap) {
			cap = cap ? cap * 2 : 8192;
			if (cap > 16 * 1024 * 1024) {
				snprintf(err, errlen, "'%s' is too large", path);
				fclose(f);
				free(buf);
				return RM_ERROR;
			}
			buf = xrealloc(buf, cap);
		}
		size_t r = fread(buf + n, 1, cap - n - 1, f);
		n += r;
		if (r == 0)
			break;
	}
	bool bad = ferror(f);
	fclose(f);
	if (bad) {
		snprintf(err, errlen, "cannot read '%s': %s", path, strerror(errno));
		free(buf);
		return RM_ERROR;
	}
	buf[n] = 0;
	*out = buf;
	*len = n;
	return RM_OK;
}

/* DataSource member field of obj: {filename | inline_string | inline_bytes |
 * environment_variable}.  Files are read now. */
int tls_datasrc_parse(struct cfg_ctx *c, const json_t *obj, const char *field,
		      struct tls_datasrc *ds, bool required)
{
	static const char *const f[] = { "filename", "inline_string", "inline_bytes",
					 "environment_variable", "watched_directory", NULL };
	const char *fn = NULL, *is = NULL, *ib = NULL, *env = NULL;
	const json_t *v = required ? cfg_enter_req(c, obj, field) : cfg_enter(c, obj, field);
	char err[512];
	int rc;
	if (!v)
		return required ? RM_ERROR : RM_OK;
	rc = cfg_expect_object(c, v) || cfg_check_fields(c, v, f) ||
	     cfg_string(c, v, "filename", &fn) || cfg_string(c, v, "inline_string", &is) ||
	     cfg_string(c, v, "inline_bytes", &ib) || cfg_string(c, v, "environment_variable", &env);
	if (!rc && cfg_get(v, "watched_directory"))
		rc = cfg_fail_field(c, v, "watched_directory", "watched_directory is not supported "
				    "(the file's directory is always watched)");
	if (!rc && (!!fn + !!is + !!ib + !!env) != 1)
		rc = cfg_fail(c, "exactly one of filename, inline_string, inline_bytes, "
				 "environment_variable is required");
	if (rc)
		goto out;
	if (fn) {
		ds->kind = DS_FILE;
		ds->path = xstrdup(fn);
		if (read_file(fn, &ds->data, &ds->len, err, sizeof(err)))
			rc = cfg_fail_field(c, v, "filename", "%s", err);
	} else if (is) {
		ds->kind = DS_INLINE;
		ds->data = xstrdup(is);
		ds->len = strlen(is);
	} else if (ib) {
		ds->kind = DS_INLINE;
		ds->data = base64_decode(ib, &ds->len);
		if (!ds->data)
			rc = cfg_fail_field(c, v, "inline_bytes", "invalid base64");
	} else {
		const char *e = getenv(env);
		if (!e)
			rc = cfg_fail_field(c, v, "environment_variable", "environment variable '%s' is not set", env);
		else {
			ds->kind = DS_INLINE;
			ds->data = xstrdup(e);
			ds->len = strlen(e);
		}
	}
out:
	cfg_leave(c);
	return rc;
}

static const char *ds_name(const struct tls_datasrc *ds)
{
	return ds->kind == DS_FILE ? ds->path : "<inline>";
}

/* TlsCertificate into s->chain / s->key: both required, the key must match. */
int tls_certpair_parse(struct cfg_ctx *c, const json_t *v, struct tls_secret *s)
{
	static const char *const f[] = { "certificate_chain", "private_key", NULL };
	if (cfg_expect_object(c, v) || cfg_check_fields(c, v, f))
		return RM_ERROR;
	if (cfg_get(v, "password") || cfg_get(v, "ocsp_staple"))
		return cfg_fail(c, "password and ocsp_staple are not supported");
	if (tls_datasrc_parse(c, v, "certificate_chain", &s->chain, true) ||
	    tls_datasrc_parse(c, v, "private_key", &s->key, true))
		return RM_ERROR;
	STACK_OF(X509) *chain = tls_pem_certs(s->chain.data, s->chain.len);
	if (!chain || !sk_X509_num(chain)) {
		sk_X509_pop_free(chain, X509_free);
		return cfg_fail_field(c, v, "certificate_chain", "no PEM certificate in '%s'",
				      ds_name(&s->chain));
	}
	BIO *bio = BIO_new_mem_buf(s->key.data, (int)s->key.len);
	EVP_PKEY *pk = bio ? PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL) : NULL;
	BIO_free(bio);
	int rc = RM_OK;
	if (!pk)
		rc = cfg_fail_field(c, v, "private_key", "no PEM private key in '%s'", ds_name(&s->key));
	else if (X509_check_private_key(sk_X509_value(chain, 0), pk) != 1)
		rc = cfg_fail_field(c, v, "private_key", "the private key in '%s' does not match the "
				    "certificate in '%s'", ds_name(&s->key), ds_name(&s->chain));
	ERR_clear_error();
	EVP_PKEY_free(pk);
	sk_X509_pop_free(chain, X509_free);
	return rc;
}

static int hex_val(int ch)
{
	if (ch >= '0' && ch <= '9')
		return ch - '0';
	ch |= 0x20;
	return ch >= 'a' && ch <= 'f' ? ch - 'a' + 10 : -1;
}

/* CertificateValidationContext. */
int tls_validation_parse(struct cfg_ctx *c, const json_t *v, struct tls_validation *val)
{
	static const char *const f[] = { "trusted_ca", "match_typed_subject_alt_names",
					 "match_subject_alt_names", "crl", "verify_certificate_spki",
					 "verify_certificate_hash", "allow_expired_certificate",
					 "trust_chain_verification", "only_verify_leaf_cert_crl", NULL };
	static const char *const tcv[] = { "VERIFY_TRUST_CHAIN", "ACCEPT_UNTRUSTED" };
	static const char *const tf[] = { "san_type", "matcher", NULL };
	static const char *const san_types[] = { "SAN_TYPE_UNSPECIFIED", "EMAIL", "DNS", "URI",
						 "IP_ADDRESS", "OTHER_NAME" };
	static const int gen_of[] = { -1, GEN_EMAIL, GEN_DNS, GEN_URI, GEN_IPADD, -1 };
	const json_t *arr;
	int trust = 0;
	if (cfg_expect_object(c, v) || cfg_check_fields(c, v, f) ||
	    cfg_bool(c, v, "allow_expired_certificate", &val->allow_expired) ||
	    cfg_bool(c, v, "only_verify_leaf_cert_crl", &val->crl_leaf_only) ||
	    cfg_enum(c, v, "trust_chain_verification", tcv, 2, &trust) ||
	    tls_datasrc_parse(c, v, "trusted_ca", &val->ca, false) ||
	    tls_datasrc_parse(c, v, "crl", &val->crl, false))
		return RM_ERROR;
	val->accept_untrusted = trust == 1;
	if (val->ca.kind) {
		STACK_OF(X509) *cas = tls_pem_certs(val->ca.data, val->ca.len);
		int n = cas ? sk_X509_num(cas) : 0;
		sk_X509_pop_free(cas, X509_free);
		if (!n)
			return cfg_fail_field(c, v, "trusted_ca", "no PEM certificate in '%s'", ds_name(&val->ca));
	}
	if (val->crl.kind) {
		BIO *bio = BIO_new_mem_buf(val->crl.data, (int)val->crl.len);
		X509_CRL *crl = bio ? PEM_read_bio_X509_CRL(bio, NULL, NULL, NULL) : NULL;
		BIO_free(bio);
		ERR_clear_error();
		if (!crl)
			return cfg_fail_field(c, v, "crl", "no PEM CRL in '%s'", ds_name(&val->crl));
		X509_CRL_free(crl);
		if (!val->ca.kind)
			return cfg_fail_field(c, v, "crl", "crl needs trusted_ca");
	}
	size_t nt = (arr = cfg_get(v, "match_typed_subject_alt_names")) ? json_array_size(arr) : 0;
	size_t nl = (arr = cfg_get(v, "match_subject_alt_names")) ? json_array_size(arr) : 0;
	val->sans = xcalloc(nt + nl + 1, sizeof(*val->sans));
	if ((arr = cfg_enter(c, v, "match_typed_subject_alt_names"))) {
		if (cfg_expect_array(c, arr))
			return RM_ERROR;
		for (size_t i = 0; i < json_array_size(arr); i++) {
			const json_t *e = cfg_enter_idx(c, arr, i), *m;
			int st = 0;
			if (cfg_expect_object(c, e) || cfg_check_fields(c, e, tf) ||
			    cfg_enum(c, e, "san_type", san_types, ARRAY_SIZE(san_types), &st))
				return RM_ERROR;
			if (gen_of[st] < 0)
				return cfg_fail_field(c, e, "san_type", "san_type must be EMAIL, DNS, URI or IP_ADDRESS");
			if (!(m = cfg_enter_req(c, e, "matcher")))
				return RM_ERROR;
			struct tls_san_m *sm = &val->sans[val->nsans];
			if (tls_strm_parse(c, m, &sm->m))
				return RM_ERROR;
			sm->type = gen_of[st];
			val->nsans++;
			cfg_leave(c);
			cfg_leave(c);
		}
		cfg_leave(c);
	}
	if ((arr = cfg_enter(c, v, "match_subject_alt_names"))) {
		if (cfg_expect_array(c, arr))
			return RM_ERROR;
		for (size_t i = 0; i < json_array_size(arr); i++) {
			const json_t *m = cfg_enter_idx(c, arr, i);
			if (tls_strm_parse(c, m, &val->sans[val->nsans].m))
				return RM_ERROR;
			val->sans[val->nsans++].type = 0;
			cfg_leave(c);
		}
		cfg_leave(c);
	}
	if ((arr = cfg_enter(c, v, "verify_certificate_hash"))) {
		if (cfg_expect_array(c, arr))
			return RM_ERROR;
		val->hashes = xcalloc(json_array_size(arr) + 1, 32);
		for (size_t i = 0; i < json_array_size(arr); i++) {
			cfg_enter_idx(c, arr, i);
			const char *h = json_string_value(json_array_get(arr, i));
			size_t k = 0;
			for (; h && *h && k < 64; h++) {
				if (*h == ':')
					continue;
				int d = hex_val((unsigned char)*h);
				if (d < 0)
					break;
				val->hashes[val->nhashes][k / 2] |= (unsigned char)(k % 2 ? d : d << 4);
				k++;
			}
			if (!h || *h || k != 64)
				return cfg_fail(c, "expected a hex SHA-256 fingerprint (64 hex digits, colons allowed)");
			val->nhashes++;
			cfg_leave(c);
		}
		cfg_leave(c);
	}
	if ((arr = cfg_enter(c, v, "verify_certificate_spki"))) {
		if (cfg_expect_array(c, arr))
			return RM_ERROR;
		val->spkis = xcalloc(json_array_size(arr) + 1, 32);
		for (size_t i = 0; i < json_array_size(arr); i++) {
			cfg_enter_idx(c, arr, i);
			const char *s = json_string_value(json_array_get(arr, i));
			size_t n = 0;
			char *d = s ? base64_decode(s, &n) : NULL;
			if (!d || n != 32) {
				free(d);
				return cfg_fail(c, "expected a base64 SHA-256 of the SubjectPublicKeyInfo");
			}
			memcpy(val->spkis[val->nspkis++], d, 32);
			free(d);
			cfg_leave(c);
		}
		cfg_leave(c);
	}
	return RM_OK;
}

/* static_resources.secrets[]: {name, tls_certificate | validation_context}. */
int tls_secrets_parse(struct cfg_ctx *c, const json_t *arr)
{
	static const char *const f[] = { "name", "tls_certificate", "validation_context", NULL };
	if (cfg_expect_array(c, arr))
		return RM_ERROR;
	for (size_t i = 0; i < json_array_size(arr); i++) {
		const json_t *e = cfg_enter_idx(c, arr, i), *v;
		const char *name = NULL;
		if (cfg_expect_object(c, e) || cfg_check_fields(c, e, f) ||
		    cfg_string_req(c, e, "name", &name))
			return RM_ERROR;
		if (tls_secret_find(name))
			return cfg_fail_field(c, e, "name", "duplicate secret name '%s'", name);
		if (cfg_get(e, "tls_certificate") && cfg_get(e, "validation_context"))
			return cfg_fail(c, "a secret holds one of tls_certificate, validation_context");
		if ((v = cfg_enter(c, e, "tls_certificate"))) {
			struct tls_secret *s = tls_secret_add(name, SECRET_CERT);
			if (tls_certpair_parse(c, v, s))
				return RM_ERROR;
		} else if ((v = cfg_enter(c, e, "validation_context"))) {
			struct tls_secret *s = tls_secret_add(name, SECRET_VALIDATION);
			if (tls_validation_parse(c, v, &s->val))
				return RM_ERROR;
		} else {
			return cfg_fail(c, "one of tls_certificate, validation_context is required "
					   "(session_ticket_keys and generic_secret are not supported)");
		}
		cfg_leave(c);
		cfg_leave(c);
	}
	return RM_OK;
}

/* ---- rebuilds ---------------------------------------------------------------------- */

static bool ctx_uses_dirty(const struct tls_ctx *t)
{
	for (size_t i = 0; i < t->ncerts; i++)
		if (t->certs[i]->dirty)
			return true;
	return t->val && t->val->dirty;
}

static unsigned rebuild(bool only_dirty)
{
	unsigned failed = 0;
	char err[512];
	for (struct tls_ctx *t = contexts; t; t = t->next) {
		if (only_dirty && !ctx_uses_dirty(t))
			continue;
		SSL_CTX *ctx = tls_ctx_build(t, err, sizeof(err));
		if (!ctx) {
			log_warn("tls: %s: keeping the previous certificates: %s", t->label, err);
			failed++;
			continue;
		}
		tls_ctx_publish(t, ctx);
		log_info("tls: %s: new certificates in use for new handshakes", t->label);
	}
	if (!failed)
		for (struct tls_secret *s = secrets; s; s = s->next)
			s->dirty = false;
	tls_update_expiry_gauge();
	return failed;
}

unsigned tls_ctx_rebuild_all(void)
{
	return rebuild(false);
}

static bool reload_ds(struct tls_datasrc *ds)
{
	char *data;
	size_t len;
	char err[512];
	if (ds->kind != DS_FILE)
		return false;
	if (read_file(ds->path, &data, &len, err, sizeof(err))) {
		log_warn("tls: %s", err);
		return false;
	}
	if (len == ds->len && !memcmp(data, ds->data, len)) {
		free(data);
		return false;
	}
	free(ds->data);
	ds->data = data;
	ds->len = len;
	return true;
}

void tls_secrets_reload_all(void)
{
	bool any = false;
	for (struct tls_secret *s = secrets; s; s = s->next) {
		if (s->sds)
			continue;   /* SDS data changes through tls_sds_apply */
		bool ch = s->kind == SECRET_CERT ? reload_ds(&s->chain) | reload_ds(&s->key)
						 : reload_ds(&s->val.ca) | reload_ds(&s->val.crl);
		if (ch) {
			s->dirty = true;
			any = true;
		}
	}
	/* retry contexts whose last rebuild failed too (dirty stays set) */
	for (struct tls_secret *s = secrets; !any && s; s = s->next)
		any = s->dirty;
	if (any)
		rebuild(true);
}

/* ---- inotify ---------------------------------------------------------------------- */

static int ino_fd = -1;
static struct event *ino_ev, *debounce_ev, *expiry_ev;

static void debounce_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
	tls_secrets_reload_all();
}

static void ino_cb(evutil_socket_t fd, short what, void *arg)
{
	char buf[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
	(void)what;
	(void)arg;
	while (read(fd, buf, sizeof(buf)) > 0)
		;
	struct timeval tv = { 0, 100 * 1000 };
	event_add(debounce_ev, &tv);
}

static void watch_dir_of(const char *path)
{
	char dir[PATH_MAX];
	const char *slash = strrchr(path, '/');
	if (!slash)
		snprintf(dir, sizeof(dir), ".");
	else if (slash == path)
		snprintf(dir, sizeof(dir), "/");
	else
		snprintf(dir, sizeof(dir), "%.*s", (int)(slash - path), path);
	if (inotify_add_watch(ino_fd, dir, IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE | IN_DELETE |
				      IN_MODIFY | IN_ATTRIB) < 0)
		log_warn("tls: cannot watch '%s': %s (rotations will not be seen)", dir, strerror(errno));
}

static void expiry_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
	tls_update_expiry_gauge();
}

static void sds_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
	struct tls_secret *s = arg;
	(void)fd;
	(void)what;
	if (!s->pending)
		return;
	s->timed_out = true;
	stats_inc(s->stats, 0, SDS_update_attempt);
	stats_inc(s->stats, 0, SDS_init_fetch_timeout);
	log_warn("tls: SDS secret '%s': initial_fetch_timeout; its listeners and clusters start "
		 "without it (handshakes fail until it arrives)", s->name);
	sds_notify();
}

static void sds_arm(struct tls_secret *s)
{
	if (!sds_base || s->timer || !s->pending || !s->fetch_timeout_ms)
		return;
	uint64_t ms = s->fetch_timeout_ms;
	struct timeval tv = { (time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000 };
	s->timer = evtimer_new(sds_base, sds_timeout_cb, s);
	event_add(s->timer, &tv);
}

void tls_secrets_start(struct event_base *base)
{
	tls_update_expiry_gauge();
	sds_base = base;
	for (struct tls_secret *s = secrets; s; s = s->next)
		if (s->sds)
			sds_arm(s);
	if (!secrets || ino_fd >= 0)
		return;
	expiry_ev = event_new(base, -1, EV_PERSIST, expiry_cb, NULL);
	struct timeval minute = { 60, 0 };
	event_add(expiry_ev, &minute);
	ino_fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
	if (ino_fd < 0) {
		log_warn("tls: inotify: %s (certificate rotation disabled)", strerror(errno));
		return;
	}
	for (struct tls_secret *s = secrets; s; s = s->next) {
		if (s->sds)
			continue;
		const struct tls_datasrc *ds[2] = { s->kind == SECRET_CERT ? &s->chain : &s->val.ca,
						    s->kind == SECRET_CERT ? &s->key : &s->val.crl };
		for (int i = 0; i < 2; i++)
			if (ds[i]->kind == DS_FILE)
				watch_dir_of(ds[i]->path);
	}
	ino_ev = event_new(base, ino_fd, EV_READ | EV_PERSIST, ino_cb, NULL);
	debounce_ev = evtimer_new(base, debounce_cb, NULL);
	event_add(ino_ev, NULL);
}

void tls_secrets_stop(void)
{
	if (ino_ev)
		event_free(ino_ev);
	if (debounce_ev)
		event_free(debounce_ev);
	if (expiry_ev)
		event_free(expiry_ev);
	ino_ev = debounce_ev = expiry_ev = NULL;
	if (ino_fd >= 0)
		close(ino_fd);
	ino_fd = -1;
	if (sweep_ev)
		event_free(sweep_ev);
	sweep_ev = NULL;
	sds_base = NULL;
	sds_notify_fn = NULL;
	while (secrets) {
		struct tls_secret *s = secrets;
		secrets = s->next;
		secret_free(s);
	}
	/* every SSL_CTX is gone by now (workers joined, snapshots freed); one
	 * still alive keeps its validation (a leak the sanitizer reports, not
	 * a write after free in its ex-data callback) */
	sweep_list(orphans, &norphans);
	if (!norphans) {
		free(orphans);
		orphans = NULL;
	}
}

/* ---- /certs ------------------------------------------------------------------------ */

static void fmt_time(const ASN1_TIME *t, char *buf, size_t len)
{
	struct tm tm;
	if (ASN1_TIME_to_tm(t, &tm) != 1) {
		snprintf(buf, len, "%s", "");
		return;
	}
	strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static int64_t days_left(X509 *x)
{
	int days = 0, secs = 0;
	if (ASN1_TIME_diff(&days, &secs, NULL, X509_get0_notAfter(x)) != 1)
		return 0;
	return days < 0 || (days == 0 && secs < 0) ? 0 : days;
}

static json_t *cert_json(X509 *x, const char *path, const char *secret)
{
	char from[64], to[64];
	json_t *sans = json_array();
	BIGNUM *bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(x), NULL);
	char *hex = bn ? BN_bn2hex(bn) : NULL;
	for (char *p = hex; p && *p; p++)
		*p = (char)tolower((unsigned char)*p);
	GENERAL_NAMES *gens = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
	for (int i = 0; gens && i < sk_GENERAL_NAME_num(gens); i++) {
		const GENERAL_NAME *g = sk_GENERAL_NAME_value(gens, i);
		if (g->type == GEN_URI || g->type == GEN_DNS || g->type == GEN_EMAIL) {
			const ASN1_IA5STRING *s = g->d.ia5;
			const char *key = g->type == GEN_URI ? "uri" : g->type == GEN_DNS ? "dns" : "email";
			json_array_append_new(sans, json_pack("{s:s%}", key, (const char *)s->data,
							     (size_t)s->length));
		} else if (g->type == GEN_IPADD) {
			char ip[64] = "";
			if (g->d.ip->length == 4)
				inet_ntop(AF_INET, g->d.ip->data, ip, sizeof(ip));
			else if (g->d.ip->length == 16)
				inet_ntop(AF_INET6, g->d.ip->data, ip, sizeof(ip));
			json_array_append_new(sans, json_pack("{s:s}", "ip_address", ip));
		}
	}
	GENERAL_NAMES_free(gens);
	fmt_time(X509_get0_notBefore(x), from, sizeof(from));
	fmt_time(X509_get0_notAfter(x), to, sizeof(to));
	char days[32];
	snprintf(days, sizeof(days), "%" PRId64, days_left(x));
	json_t *j = json_pack("{s:s, s:s, s:o, s:s, s:s, s:s}", "path", path, "serial_number",
			      hex ? hex : "", "subject_alt_names", sans, "days_until_expiration", days,
			      "valid_from", from, "expiration_time", to);
	if (secret)
		json_object_set_new(j, "secret_name", json_string(secret));
	OPENSSL_free(hex);
	BN_free(bn);
	return j;
}

static void add_certs(json_t *arr, const struct tls_datasrc *ds, const char *secret, bool leaf_only,
		      int64_t *min_days)
{
	if (!ds->data)   /* a pending SDS secret has no bytes yet */
		return;
	STACK_OF(X509) *xs = tls_pem_certs(ds->data, ds->len);
	for (int i = 0; xs && i < sk_X509_num(xs); i++) {
		X509 *x = sk_X509_value(xs, i);
		if (arr)
			json_array_append_new(arr, cert_json(x, ds_name(ds), secret));
		if (min_days && days_left(x) < *min_days)
			*min_days = days_left(x);
		if (leaf_only)
			break;
	}
	sk_X509_pop_free(xs, X509_free);
}

json_t *tls_certs_json(void)
{
	json_t *list = json_array();
	for (struct tls_ctx *t = contexts; t; t = t->next) {
		json_t *ca = json_array(), *chain = json_array();
		if (t->val && t->val->v->ca.kind)
			add_certs(ca, &t->val->v->ca, t->val->name, true, NULL);
		for (size_t i = 0; i < t->ncerts; i++)
			add_certs(chain, &t->certs[i]->chain, t->certs[i]->name, true, NULL);
		json_array_append_new(list, json_pack("{s:o, s:o}", "ca_cert", ca, "cert_chain", chain));
	}
	return json_pack("{s:o}", "certificates", list);
}

int64_t tls_days_until_first_expiry(void)
{
	int64_t min = INT64_MAX;
	for (struct tls_ctx *t = contexts; t; t = t->next) {
		if (t->val && t->val->v->ca.kind)
			add_certs(NULL, &t->val->v->ca, NULL, false, &min);
		for (size_t i = 0; i < t->ncerts; i++)
			add_certs(NULL, &t->certs[i]->chain, NULL, false, &min);
	}
	return min;
}

void tls_update_expiry_gauge(void)
{
	if (!g_server.server_stats)
		return;
	int64_t d = tls_days_until_first_expiry();
	if (d != INT64_MAX)   /* no certificate: leave the gauge alone */
		stats_gauge_set(g_server.server_stats, SRV_days_until_first_cert_expiring, d);
}

/* ---- SDS ------------------------------------------------------------------------------ */

/* Secrets provided in-process (tls/ca_client.c): name -> the latest Secret. */
#define SDS_LOCAL_MAX 4
static struct sds_local {
	char *name;                 /* owned */
	json_t *secret;             /* owned, NULL until the provider has data */
	char *version;              /* owned */
} sds_local[SDS_LOCAL_MAX];
static size_t nsds_local;

static struct sds_local *local_find(const char *name)
{
	for (size_t i = 0; i < nsds_local; i++)
		if (!strcmp(sds_local[i].name, name))
			return &sds_local[i];
	return NULL;
}

void tls_sds_local_declare(const char *name)
{
	if (local_find(name))
		return;
	if (nsds_local == SDS_LOCAL_MAX)
		die("tls_sds_local_declare: too many local secrets");
	sds_local[nsds_local++].name = xstrdup(name);
}

bool tls_sds_is_local(const char *name)
{
	return local_find(name) != NULL;
}

int tls_sds_local_set(const char *name, const json_t *secret, const char *version, char *err,
		      size_t errlen)
{
	struct sds_local *l = local_find(name);
	if (!l)
		die("tls_sds_local_set: '%s' was not declared", name);
	int rc = sds_find(name) ? tls_sds_apply(name, secret, version, err, errlen) : 0;
	if (rc < 0)
		return RM_ERROR;
	json_decref(l->secret);
	l->secret = json_deep_copy(secret);
	free(l->version);
	l->version = xstrdup(version ? version : "");
	return RM_OK;
}

void tls_sds_local_clear(void)
{
	for (size_t i = 0; i < nsds_local; i++) {
		free(sds_local[i].name);
		json_decref(sds_local[i].secret);
		free(sds_local[i].version);
	}
	memset(sds_local, 0, sizeof(sds_local));
	nsds_local = 0;
}

void tls_sds_set_notify(void (*fn)(void *arg), void *arg)
{
	sds_notify_fn = fn;
	sds_notify_arg = arg;
}

bool tls_secret_usable(const struct tls_secret *s)
{
	return !s->pending;
}

struct tls_secret *tls_sds_ref(const char *name, enum secret_kind kind, uint64_t timeout_ms,
			       char *err, size_t errlen)
{
	struct tls_secret *s = sds_find(name);
	if (s && s->kind != kind) {
		snprintf(err, errlen, "SDS secret '%s' is already used as a %s", name,
			 s->kind == SECRET_CERT ? "tls_certificate" : "validation_context");
		return NULL;
	}
	if (!s) {
		struct sds_local *l = local_find(name);
		s = tls_secret_add(name, kind);
		s->sds = true;
		s->pending = true;
		s->local = l != NULL;
		s->fetch_timeout_ms = s->local ? 0 : timeout_ms;   /* its provider holds /ready */
		char *scope = xasprintf("sds.%s", name);
		s->stats = stats_scope_new_main(g_server.stats, scope, scope, NULL, NULL, sds_desc,
						SDS_STATS_N);
		free(scope);
		sds_arm(s);
		s->refs = 1;
		if (s->local) {
			log_info("tls: SDS secret '%s' is provided in-process", name);
			if (l->secret && tls_sds_apply(name, l->secret, l->version, err, errlen) < 0) {
				tls_secret_release(s);
				return NULL;
			}
			return s;
		}
		log_info("tls: SDS secret '%s' subscribed", name);
		sds_notify();
		return s;
	}
	s->refs++;
	return s;
}

json_t *tls_sds_names(void)
{
	json_t *set = json_object();
	for (struct tls_secret *s = secrets; s; s = s->next)
		if (s->sds && !s->local)
			json_object_set_new(set, s->name, json_true());
	return set;
}

bool tls_sds_waiting(void)
{
	for (struct tls_secret *s = secrets; s; s = s->next)
		if (s->sds && !s->local && s->pending && !s->timed_out)
			return true;
	return false;
}

bool tls_ctx_ready(const struct tls_ctx *t)
{
	if (!t)
		return true;
	for (size_t i = 0; i < t->ncerts; i++)
		if (t->certs[i]->pending && !t->certs[i]->timed_out)
			return false;
	return !t->val || !t->val->pending || t->val->timed_out;
}

static int64_t sds_version_gauge(const char *v)
{
	char *end;
	unsigned long long n = strtoull(v, &end, 10);
	if (*v && !*end)
		return (int64_t)n;
	uint64_t h = 1469598103934665603ull;
	while (*v)
		h = (h ^ (unsigned char)*v++) * 1099511628211ull;
	return (int64_t)(h >> 12);
}

static void sds_count_success(struct tls_secret *s, const char *version)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	stats_inc(s->stats, 0, SDS_update_success);
	stats_gauge_set(s->stats, SDS_version, sds_version_gauge(version ? version : ""));
	stats_gauge_set(s->stats, SDS_update_time, (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000);
}

void tls_sds_stream_failed(void)
{
	for (struct tls_secret *s = secrets; s; s = s->next) {
		if (s->sds && !s->local && s->stats) {
			stats_inc(s->stats, 0, SDS_update_attempt);
			stats_inc(s->stats, 0, SDS_update_failure);
		}
	}
}

void tls_sds_reject(const char *name)
{
	struct tls_secret *s = name ? sds_find(name) : NULL;

	if (s && s->stats) {
		stats_inc(s->stats, 0, SDS_update_attempt);
		stats_inc(s->stats, 0, SDS_update_rejected);
	}
}

int tls_sds_apply(const char *name, const json_t *j, const char *version, char *err, size_t errlen)
{
	static const char *const f[] = { "name", "tls_certificate", "validation_context",
					 "session_ticket_keys", "generic_secret", NULL };
	struct tls_secret *s = sds_find(name);
	const json_t *v;
	struct cfg_ctx c;
	if (!s)
		return 0;
	stats_inc(s->stats, 0, SDS_update_attempt);
	if (s->sds_json && json_equal(s->sds_json, j)) {   /* a resend: accepted, no change */
		sds_count_success(s, version);
		return 0;
	}
	cfg_init(&c, NULL, NULL);
	int rc = cfg_expect_object(&c, j) || cfg_check_fields(&c, j, f);
	if (!rc && (cfg_get(j, "session_ticket_keys") || cfg_get(j, "generic_secret")))
		rc = cfg_fail(&c, "session_ticket_keys and generic_secret secrets are not supported");
	const char *want = s->kind == SECRET_CERT ? "tls_certificate" : "validation_context";
	const char *other = s->kind == SECRET_CERT ? "validation_context" : "tls_certificate";
	if (!rc && cfg_get(j, other))
		rc = cfg_fail_field(&c, j, other, "secret '%s' is used as a %s, not a %s", name, want,
				    other);
	if (!rc && !(v = cfg_enter_req(&c, j, want)))
		rc = RM_ERROR;
	if (!rc && s->kind == SECRET_CERT) {
		struct tls_secret tmp = { 0 };
		rc = tls_certpair_parse(&c, v, &tmp);
		if (!rc) {
			datasrc_free(&s->chain);
			datasrc_free(&s->key);
			s->chain = tmp.chain;
			s->key = tmp.key;
		} else {
			datasrc_free(&tmp.chain);
			datasrc_free(&tmp.key);
		}
	} else if (!rc) {
		struct tls_validation *nv = xcalloc(1, sizeof(*nv));
		rc = tls_validation_parse(&c, v, nv);
		if (rc) {
			validation_free(nv);
			free(nv);
		} else {
			/* SSL_CTXs built before point at the old one: retire it
			 * (freed once they are gone), and free the earlier ones
			 * nothing uses any more */
			if (s->v != &s->val) {
				sweep_list(s->retired, &s->nretired);
				s->retired = xrealloc(s->retired, (s->nretired + 1) * sizeof(*s->retired));
				s->retired[s->nretired++] = s->v;
				stats_gauge_set(s->stats, SDS_retired_contexts, (int64_t)s->nretired);
				sweep_arm();
			}
			s->v = nv;
		}
	}
	if (rc) {
		snprintf(err, errlen, "%s", c.err);
		stats_inc(s->stats, 0, SDS_update_rejected);
		return -1;
	}
	json_decref(s->sds_json);
	s->sds_json = json_deep_copy(j);
	bool was_pending = s->pending;
	s->pending = false;
	if (s->timer)
		event_del(s->timer);
	s->dirty = true;
	sds_count_success(s, version);
	log_info("tls: SDS secret '%s' version '%s' accepted", name, version ? version : "");
	rebuild(true);
	if (was_pending)
		sds_notify();
	return 1;
}
