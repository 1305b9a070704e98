/* tls-t.h - types shared by the files of tls/ (private to this directory). */
#ifndef REMORA_TLS_TLS_T_H
#define REMORA_TLS_TLS_T_H

#include <stdatomic.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include "tls.h"

struct route_re;

/* envoy.config.core.v3.DataSource. */
enum ds_kind { DS_NONE, DS_FILE, DS_INLINE };
struct tls_datasrc {
	enum ds_kind kind;
	char *path;                     /* owned: DS_FILE */
	char *data;                     /* owned: the bytes in force (inline, or the file as last read) */
	size_t len;
};

/* StringMatcher. */
enum tls_sm_kind { TLS_SM_EXACT, TLS_SM_PREFIX, TLS_SM_SUFFIX, TLS_SM_CONTAINS, TLS_SM_REGEX };
struct tls_strm {
	enum tls_sm_kind kind;
	bool icase;
	char *s;                        /* owned (not for REGEX) */
	size_t len;
	struct route_re *re;            /* owned: REGEX */
};

/* One match_typed_subject_alt_names entry (type 0: any type, the legacy
 * match_subject_alt_names). Types are OpenSSL's GEN_EMAIL/DNS/URI/IPADD. */
struct tls_san_m {
	int type;
	struct tls_strm m;
};

/* CertificateValidationContext. */
struct tls_validation {
	struct tls_datasrc ca, crl;
	struct tls_san_m *sans;         /* owned [nsans] */
	size_t nsans;
	unsigned char (*hashes)[32];    /* owned [nhashes]: verify_certificate_hash */
	size_t nhashes;
	unsigned char (*spkis)[32];     /* owned [nspkis]: verify_certificate_spki */
	size_t nspkis;
	bool allow_expired;             /* allow_expired_certificate */
	bool accept_untrusted;          /* trust_chain_verification: ACCEPT_UNTRUSTED */
	bool crl_leaf_only;             /* only_verify_leaf_cert_crl */
	atomic_uint ctx_refs;           /* SSL_CTXs built with it (their ex data): taken
					 * on the main thread, dropped by whichever thread
					 * frees the SSL_CTX; only the main thread frees the
					 * validation, once retired and at 0 */
};

enum secret_kind { SECRET_CERT, SECRET_VALIDATION };

/* A secret of the store: static_resources.secrets[] (named) or an inline
 * tls_certificates[] / validation_context (anonymous).  Lives until exit. */
struct tls_secret {
	char *name;                     /* owned; NULL: anonymous */
	enum secret_kind kind;
	struct tls_datasrc chain, key;  /* SECRET_CERT */
	struct tls_validation val;      /* SECRET_VALIDATION (static secrets) */
	struct tls_validation *v;       /* the validation in force: &val, or (SDS) a heap
					 * copy; SSL_CTXs point at it, so an SDS update
					 * retires the old one instead of freeing it */
	struct tls_validation **retired; /* owned [nretired] (SDS): replaced, still used
					  * by SSL_CTXs (ctx_refs > 0); freed by the
					  * sweep once unused */
	size_t nretired;
	/* SDS (sds_config): subscribed over ADS by name */
	bool sds;
	bool pending;                   /* no version accepted yet */
	bool local;                     /* provided in-process (tls_sds_local_declare), not
					   subscribed over ADS */
	bool timed_out;                 /* initial_fetch_timeout passed while pending */
	unsigned refs;                  /* contexts using it; 0: removed */
	uint64_t fetch_timeout_ms;      /* sds_config.initial_fetch_timeout (15 s; 0 none) */
	struct event *timer;            /* owned: the initial fetch timeout */
	json_t *sds_json;               /* owned: the accepted Secret (proto3 JSON) */
	struct stats_scope *stats;      /* owned: sds.<name>.* */
	bool dirty;                     /* contents changed since the last rebuild */
	bool anonymous;                 /* inline: owned by the one context using it */
	struct tls_secret *next;        /* the store's list */
};

/* A worker's (or the main thread's) view of a context: shard-indexed. */
struct tls_slot {
	SSL_CTX *ctx;                   /* ref; new handshakes use it */
	SSL_SESSION *sess;              /* ref, may be NULL: client session to resume */
} __attribute__((aligned(64)));

struct tls_ctx {
	bool server;
	char *label;                    /* owned: "listener 0.0.0.0_8443" / "cluster backend" */
	struct tls_secret **certs;      /* owned array [ncerts] of store secrets */
	size_t ncerts;
	struct tls_secret *val;         /* store secret, may be NULL (no validation) */
	struct tls_secret *san_val;     /* anonymous, may be NULL: combined_validation_context's
					 * default_validation_context (SAN matchers) */
	bool require_client_cert;
	int min_ver, max_ver;           /* TLS1_2_VERSION.. */
	char *ciphers;                  /* owned, may be NULL: TLS 1.2 cipher list */
	char *curves;                   /* owned, may be NULL */
	unsigned char *alpn;            /* owned: wire format (length-prefixed) */
	size_t alpn_len;
	char *sni;                      /* owned, may be NULL (upstream) */
	bool no_tickets;                /* disable_stateless_session_resumption */
	uint64_t session_timeout_s;     /* 0: OpenSSL's default (300 s) */
	unsigned char (*ticket_keys)[80]; /* owned [nticket_keys]: name 16, hmac 32, aes 32 */
	size_t nticket_keys;
	bool client_sessions;           /* upstream: resume (max_session_keys > 0) */
	unsigned char sid_ctx[32];      /* session id context (server) */
	struct stats_scope *stats;      /* owned: <scope>.ssl.* */
	struct stats_scope *vstats;     /* owned: <scope>.ssl.versions.* */
	unsigned nslots;
	struct tls_slot *slots;         /* owned [nslots], slot = stats shard */
	struct tls_ctx *next, *prev;    /* every live context (secrets.c rebuilds them) */
	unsigned refs;                  /* atomic: 1 for the owner + one per swap posted to a
					 * worker and not yet run (freed when it drops to 0) */
};

/* ssl.versions.* */
enum { TLS_V_12, TLS_V_13, TLS_V_N };

struct tls_conn {
	SSL *ssl;                       /* owned */
	struct tls_ctx *t;              /* not owned: outlives the connection */
	unsigned shard;                 /* the thread's stats shard */
	bool server;
	bool verify_failed;             /* a verification failure was already counted */
	bool handshake_done;
	char peer[72];                  /* "ip:port" for logs */
	char *uri_san;                  /* owned, may be NULL: the peer's first URI SAN */
	char *principal;                /* owned, may be NULL */
	char *verify_host;              /* owned, may be NULL: auto_san_validation's name */
	char *xfcc;                     /* owned, lazily: this connection's XFCC element */
	size_t xfcc_len;
	size_t wpending;                /* bytes of a retried SSL_write (must not change) */
};

/* secrets.c */
struct tls_secret *tls_secret_find(const char *name);      /* static secrets */
/* The SDS secret of that name and kind, created (pending) if absent; takes a
 * reference (released by tls_secret_release).  NULL with err: kind clash. */
struct tls_secret *tls_sds_ref(const char *name, enum secret_kind kind, uint64_t timeout_ms,
			       char *err, size_t errlen);
bool tls_secret_usable(const struct tls_secret *s);       /* has data (not pending) */
struct tls_secret *tls_secret_add(const char *name, enum secret_kind kind);
void tls_secret_release(struct tls_secret *s);   /* frees anonymous secrets only */
int tls_datasrc_parse(struct cfg_ctx *c, const json_t *obj, const char *field,
		      struct tls_datasrc *ds, bool required);
int tls_validation_parse(struct cfg_ctx *c, const json_t *v, struct tls_validation *val);
int tls_certpair_parse(struct cfg_ctx *c, const json_t *v, struct tls_secret *s);
void tls_ctx_link(struct tls_ctx *t);
void tls_ctx_unlink(struct tls_ctx *t);
struct tls_ctx *tls_ctx_list(void);
void tls_update_expiry_gauge(void);

/* context.c */
SSL_CTX *tls_ctx_build(struct tls_ctx *t, char *err, size_t errlen);
void tls_ctx_publish(struct tls_ctx *t, SSL_CTX *ctx);
bool tls_strm_match(const struct tls_strm *m, const char *s, size_t n);
void tls_strm_free(struct tls_strm *m);
int tls_strm_parse(struct cfg_ctx *c, const json_t *m, struct tls_strm *out);
bool tls_san_check(const struct tls_validation *v, X509 *leaf);
/* "cert chain" PEM -> certificates (caller frees with sk_X509_pop_free). */
STACK_OF(X509) *tls_pem_certs(const char *data, size_t len);
extern int tls_conn_ex_idx;
extern int tls_val_ex_idx;     /* SSL_CTX ex data: the tls_validation it was built with */
extern int tls_val_ref_ex_idx; /* the same, SDS (heap) validations only: holds one
				 * ctx_refs, dropped when the SSL_CTX is freed */

/* tls_io.c */
char *tls_x509_uri_san(X509 *x);   /* first URI SAN, caller frees; NULL if none */
char *tls_x509_subject(X509 *x);   /* RFC 2253, caller frees */

#endif
