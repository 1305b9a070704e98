/* kube_api.c - TokenReview client of remora-cp (see kube_api.h). */
#include "kube_api.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include "../../proxy/common.h"
#include "../../proxy/log.h"

#define KUBE_TOKEN_MAX (64 * 1024)
#define KUBE_REVIEW_PATH "/apis/authentication.k8s.io/v1/tokenreviews"

struct kube_review {
	struct kube_review *prev, *next;   /* in kube_api->reviews */
	struct kube_api *k;
	struct evhttp_connection *conn;    /* owned, NULL if the review failed before sending */
	kube_review_cb cb;                 /* NULL once cancelled */
	void *arg;
	char *audience;                    /* owned */
	char tls_err[200];                 /* the certificate verification failure, if any */
};

struct kube_call {
	struct kube_call *prev, *next;     /* in kube_api->calls while running */
	struct kube_api *k;
	struct evhttp_connection *conn;    /* owned (released to the reaper), or NULL */
	kube_data_cb data;                 /* NULL: collect the body */
	kube_end_cb end;
	void *arg;
	bool cancelled;
	size_t max_body;
	struct evbuffer *body;             /* owned: a streamed call's non-200 body */
	struct event *later;               /* owned: a failure reported on the next turn */
	char tls_err[200];
};

struct kube_api {
	struct event_base *base;
	char *url;                         /* owned */
	char *host;                        /* owned: the URL's host (name or IP, no brackets) */
	char *addr;                        /* owned: host resolved to a numeric address */
	char *host_header;                 /* owned: host[:port] */
	uint16_t port;
	bool host_is_ip;
	SSL_CTX *ctx;                      /* owned */
	char *token_path, *ca_path;        /* owned */
	char *token;                       /* owned: remora-cp's bearer token, NULL until read */
	struct timespec token_mtime;
	off_t token_size;
	uint64_t timeout_ms;
	struct kube_review *reviews;       /* in flight */
	struct kube_call *calls;           /* GETs running */
	struct kube_call **deadcalls;      /* owned [ndeadcalls]: cancelled, freed by reap */
	size_t ndeadcalls, capdeadcalls;
	struct evhttp_connection **dead;   /* owned [ndead]: finished, freed by reap */
	size_t ndead, capdead;
	struct event *reap;                /* owned: frees dead connections outside their callbacks */
	struct kube_api_stats stats;
};

static int ex_review = -1;   /* SSL ex_data index: the tls_err buffer (200 bytes) of a call */

/* ---- helpers ---------------------------------------------------------------- */

static bool dns1123(const char *s, size_t n)
{
	if (!n || n > 253)
		return false;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if (!(islower(c) || isdigit(c) || c == '-' || c == '.'))
			return false;
	}
	return true;
}

int kube_sa_username(const char *user, char *ns, size_t nslen, char *sa, size_t salen)
{
	static const char pfx[] = "system:serviceaccount:";
	if (!user || strncmp(user, pfx, sizeof(pfx) - 1))
		return -1;
	const char *n = user + sizeof(pfx) - 1, *colon = strchr(n, ':');
	if (!colon)
		return -1;
	size_t nl = (size_t)(colon - n), sl = strlen(colon + 1);
	if (!dns1123(n, nl) || !dns1123(colon + 1, sl) || nl >= nslen || sl >= salen)
		return -1;
	memcpy(ns, n, nl);
	ns[nl] = 0;
	memcpy(sa, colon + 1, sl + 1);
	return 0;
}

int64_t kube_jwt_exp(const char *token)
{
	const char *a = strchr(token, '.'), *b = a ? strchr(a + 1, '.') : NULL;
	if (!a || !b || b - a - 1 <= 0 || b - a - 1 > 8192)
		return 0;
	char *part = xstrndup(a + 1, (size_t)(b - a - 1));
	size_t len;
	char *raw = base64_decode(part, &len);
	free(part);
	if (!raw)
		return 0;
	json_t *j = json_loadb(raw, len, 0, NULL);
	free(raw);
	json_t *exp = json_object_get(j, "exp");
	int64_t v = json_is_integer(exp) ? (int64_t)json_integer_value(exp)
		    : json_is_real(exp) ? (int64_t)json_real_value(exp) : 0;
	json_decref(j);
	return v > 0 ? v : 0;
}

/* https://host[:port] or https://[v6]:port, nothing after. */
static int parse_url(struct kube_api *k, const char *url, char *err, size_t errlen)
{
	if (strncmp(url, "https://", 8)) {
		snprintf(err, errlen, "--kube-api: '%s' is not an https:// URL", url);
		return RM_ERROR;
	}
	const char *h = url + 8, *end, *port = NULL;
	if (*h == '[') {
		end = strchr(h, ']');
		if (!end)
			goto bad;
		k->host = xstrndup(h + 1, (size_t)(end - h - 1));
		if (end[1] == ':')
			port = end + 2;
		else if (end[1] && strcmp(end + 1, "/"))
			goto bad;
	} else {
		size_t n = strcspn(h, ":/");
		k->host = xstrndup(h, n);
		if (h[n] == ':')
			port = h + n + 1;
		else if (h[n] && strcmp(h + n, "/"))
			goto bad;
	}
	if (!*k->host)
		goto bad;
	k->port = 443;
	if (port) {
		char *e;
		long p = strtol(port, &e, 10);
		if (e == port || p <= 0 || p > 65535 || (*e && strcmp(e, "/")))
			goto bad;
		k->port = (uint16_t)p;
	}
	k->host_header = strchr(k->host, ':') ? xasprintf("[%s]:%u", k->host, k->port)
					      : xasprintf("%s:%u", k->host, k->port);
	return RM_OK;
bad:
	snprintf(err, errlen, "--kube-api: '%s': expected https://HOST[:PORT]", url);
	return RM_ERROR;
}

static int resolve(struct kube_api *k, char *err, size_t errlen)
{
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM }, *ai = NULL;
	unsigned char ip[16];
	k->host_is_ip = inet_pton(AF_INET, k->host, ip) == 1 || inet_pton(AF_INET6, k->host, ip) == 1;
	int rc = getaddrinfo(k->host, NULL, &hints, &ai);
	if (rc || !ai) {
		snprintf(err, errlen, "--kube-api: cannot resolve %s: %s", k->host, gai_strerror(rc));
		return RM_ERROR;
	}
	char buf[NI_MAXHOST];
	rc = getnameinfo(ai->ai_addr, ai->ai_addrlen, buf, sizeof(buf), NULL, 0, NI_NUMERICHOST);
	freeaddrinfo(ai);
	if (rc) {
		snprintf(err, errlen, "--kube-api: %s: %s", k->host, gai_strerror(rc));
		return RM_ERROR;
	}
	k->addr = xstrdup(buf);
	return RM_OK;
}

/* Re-read remora-cp's token when the file changed (the kubelet rotates it:
 * a new file behind the ..data symlink). */
static const char *own_token(struct kube_api *k)
{
	struct stat st;
	if (stat(k->token_path, &st)) {
		log_error("kube-api: remora-cp's service-account token %s: %s", k->token_path,
			  strerror(errno));
		return NULL;
	}
	if (k->token && st.st_mtim.tv_sec == k->token_mtime.tv_sec &&
	    st.st_mtim.tv_nsec == k->token_mtime.tv_nsec && st.st_size == k->token_size)
		return k->token;
	FILE *f = fopen(k->token_path, "r");
	char *buf = xmalloc(KUBE_TOKEN_MAX + 1);
	size_t n = f ? fread(buf, 1, KUBE_TOKEN_MAX + 1, f) : 0;
	if (f)
		fclose(f);
	while (n && isspace((unsigned char)buf[n - 1]))
		n--;
	buf[n < KUBE_TOKEN_MAX ? n : 0] = 0;
	if (!f || !n || n >= KUBE_TOKEN_MAX || strpbrk(buf, "\r\n")) {
		log_error("kube-api: remora-cp's service-account token %s is %s", k->token_path,
			  !f ? "unreadable" : "empty, too large or not one line");
		free(buf);
		return NULL;
	}
	if (k->token) {
		OPENSSL_cleanse(k->token, strlen(k->token));
		log_info("kube-api: remora-cp's service-account token %s changed: using the new one",
			 k->token_path);
	}
	free(k->token);
	k->token = buf;
	k->token_mtime = st.st_mtim;
	k->token_size = st.st_size;
	return k->token;
}

/* ---- life cycle ---------------------------------------------------------------- */

static void call_free(struct kube_call *c)
{
	if (c->later)
		event_free(c->later);
	evbuffer_free(c->body);
	free(c);
}

/* A connection cannot be freed inside its own request callback, and
 * libevent 2.1 does not free an "on completion" connection whose connect
 * failed: every connection ends here, freed on the next loop turn. */
static void on_reap(evutil_socket_t fd, short what, void *arg)
{
	struct kube_api *k = arg;
	(void)fd;
	(void)what;
	for (size_t i = 0; i < k->ndead; i++)
		evhttp_connection_free(k->dead[i]);
	k->ndead = 0;
	for (size_t i = 0; i < k->ndeadcalls; i++)
		call_free(k->deadcalls[i]);
	k->ndeadcalls = 0;
}

static void conn_release(struct kube_api *k, struct evhttp_connection *c)
{
	if (!c)
		return;
	if (k->ndead == k->capdead) {
		k->capdead = k->capdead ? k->capdead * 2 : 16;
		k->dead = xrealloc(k->dead, k->capdead * sizeof(*k->dead));
	}
	k->dead[k->ndead++] = c;
	event_active(k->reap, EV_TIMEOUT, 1);
}

struct kube_api *kube_api_new(struct event_base *base, const struct kube_api_options *o,
			      char *err, size_t errlen)
{
	struct kube_api *k = xcalloc(1, sizeof(*k));
	k->base = base;
	k->url = xstrdup(o->url);
	k->token_path = xstrdup(o->token_path ? o->token_path : KUBE_SA_DIR "/token");
	k->ca_path = xstrdup(o->ca_path ? o->ca_path : KUBE_SA_DIR "/ca.crt");
	k->timeout_ms = o->timeout_ms ? o->timeout_ms : 5000;
	k->reap = event_new(base, -1, 0, on_reap, k);
	if (ex_review < 0)
		ex_review = SSL_get_ex_new_index(0, NULL, NULL, NULL, NULL);
	if (parse_url(k, o->url, err, errlen) || resolve(k, err, errlen))
		goto fail;
	k->ctx = SSL_CTX_new(TLS_client_method());
	if (!k->ctx || !SSL_CTX_set_min_proto_version(k->ctx, TLS1_2_VERSION) ||
	    SSL_CTX_load_verify_locations(k->ctx, k->ca_path, NULL) != 1) {
		unsigned long e = ERR_get_error();
		char buf[256] = "";
		if (e)
			ERR_error_string_n(e, buf, sizeof(buf));
		ERR_clear_error();
		snprintf(err, errlen, "--kube-ca-file %s: cannot load the API server's CA bundle%s%s",
			 k->ca_path, buf[0] ? ": " : "", buf);
		goto fail;
	}
	return k;
fail:
	kube_api_free(k);
	return NULL;
}

static void review_free(struct kube_review *r)
{
	struct kube_api *k = r->k;
	if (r->prev)
		r->prev->next = r->next;
	else
		k->reviews = r->next;
	if (r->next)
		r->next->prev = r->prev;
	k->stats.in_flight--;
	free(r->audience);
	free(r);
}

void kube_api_free(struct kube_api *k)
{
	if (!k)
		return;
	while (k->reviews) {   /* freeing a connection frees its request without callback */
		struct kube_review *r = k->reviews;
		if (r->conn)
			evhttp_connection_free(r->conn);
		review_free(r);
	}
	while (k->calls) {
		struct kube_call *c = k->calls;
		k->calls = c->next;
		if (c->conn)
			evhttp_connection_free(c->conn);
		call_free(c);
	}
	if (k->reap) {
		on_reap(-1, 0, k);
		event_free(k->reap);
	}
	free(k->dead);
	free(k->deadcalls);
	SSL_CTX_free(k->ctx);
	free(k->url);
	free(k->host);
	free(k->addr);
	free(k->host_header);
	free(k->token_path);
	free(k->ca_path);
	if (k->token)
		OPENSSL_cleanse(k->token, strlen(k->token));
	free(k->token);
	free(k);
}

const char *kube_api_url(const struct kube_api *k)
{
	return k->url;
}

struct event_base *kube_api_base(const struct kube_api *k)
{
	return k->base;
}

const struct kube_api_stats *kube_api_get_stats(const struct kube_api *k)
{
	return &k->stats;
}

/* ---- one review ----------------------------------------------------------------- */

static void finish(struct kube_review *r, enum kube_review_result res, const char *ns,
		   const char *sa, const char *msg)
{
	struct kube_api *k = r->k;
	if (res == KUBE_REVIEW_DENIED)
		k->stats.denied++;
	if (r->cb)
		r->cb(r->arg, res, ns, sa, msg);
	review_free(r);
}

static void fail(struct kube_review *r, enum kube_fail_reason why, const char *msg)
{
	r->k->stats.failed[why]++;
	finish(r, KUBE_REVIEW_FAILED, NULL, NULL, msg);
}

/* The message of a v1 Status body, or "". */
static const char *status_message(json_t *j)
{
	const char *m = json_string_value(json_object_get(j, "message"));
	return m ? m : "";
}

static void on_response(struct kube_review *r, int code, struct evbuffer *body)
{
	struct kube_api *k = r->k;
	char msg[512], ns[256], sa[256];
	size_t len = evbuffer_get_length(body);
	json_t *j = json_loadb((const char *)evbuffer_pullup(body, -1), len, 0, NULL);
	if (code == 401 || code == 403) {
		if (code == 401)
			snprintf(msg, sizeof(msg), "the API server %s refused remora-cp's own credentials "
				 "(401 Unauthorized: %s): check its service-account token %s", k->url,
				 j ? status_message(j) : "", k->token_path);
		else
			snprintf(msg, sizeof(msg), "remora-cp may not create tokenreviews (bind it to "
				 "system:auth-delegator): the API server %s answered 403 Forbidden: %s",
				 k->url, j ? status_message(j) : "");
		log_error("kube-api: %s", msg);
		fail(r, code == 401 ? KUBE_FAIL_unauthorized : KUBE_FAIL_forbidden, msg);
		goto out;
	}
	if (code != 200 && code != 201) {
		snprintf(msg, sizeof(msg), "the API server %s answered the TokenReview with %d%s%s",
			 k->url, code, j ? ": " : "", j ? status_message(j) : "");
		log_error("kube-api: %s", msg);
		fail(r, KUBE_FAIL_http_error, msg);
		goto out;
	}
	json_t *st = json_object_get(j, "status");
	const char *kind = json_string_value(json_object_get(j, "kind"));
	json_t *auth = json_object_get(st, "authenticated");
	if (!kind || strcmp(kind, "TokenReview") || (st && !json_is_object(st)) ||
	    (auth && !json_is_boolean(auth))) {
		snprintf(msg, sizeof(msg), "the API server %s answered the TokenReview with something "
			 "else than a TokenReview", k->url);
		log_error("kube-api: %s", msg);
		fail(r, KUBE_FAIL_bad_response, msg);
		goto out;
	}
	if (!json_is_true(auth)) {
		const char *e = json_string_value(json_object_get(st, "error"));
		snprintf(msg, sizeof(msg), "token not authenticated by the API server%s%s",
			 e ? ": " : "", e ? e : "");
		finish(r, KUBE_REVIEW_DENIED, NULL, NULL, msg);
		goto out;
	}
	bool aud = false;
	size_t i;
	json_t *a;
	json_array_foreach(json_object_get(st, "audiences"), i, a)
		aud |= json_is_string(a) && !strcmp(json_string_value(a), r->audience);
	if (!aud) {
		snprintf(msg, sizeof(msg), "the token is not for the audience %s", r->audience);
		finish(r, KUBE_REVIEW_DENIED, NULL, NULL, msg);
		goto out;
	}
	const char *user = json_string_value(json_object_get(json_object_get(st, "user"), "username"));
	if (kube_sa_username(user, ns, sizeof(ns), sa, sizeof(sa))) {
		snprintf(msg, sizeof(msg), "the token's user '%.200s' is not a service account "
			 "(system:serviceaccount:<namespace>:<name>)", user ? user : "");
		finish(r, KUBE_REVIEW_DENIED, NULL, NULL, msg);
		goto out;
	}
	finish(r, KUBE_REVIEW_OK, ns, sa, "");
out:
	json_decref(j);
}

static void on_done(struct evhttp_request *req, void *arg)
{
	struct kube_review *r = arg;
	struct kube_api *k = r->k;
	char msg[512];
	conn_release(k, r->conn);
	r->conn = NULL;
	if (!r->cb) {   /* cancelled: nobody waits */
		review_free(r);
		return;
	}
	if (!req || !evhttp_request_get_response_code(req)) {
		snprintf(msg, sizeof(msg), "cannot reach the API server %s%s%s", r->k->url,
			 r->tls_err[0] ? ": " : " (connect, TLS or timeout)", r->tls_err);
		log_error("kube-api: %s", msg);
		fail(r, KUBE_FAIL_unreachable, msg);
		return;
	}
	on_response(r, evhttp_request_get_response_code(req), evhttp_request_get_input_buffer(req));
}

static int verify_cb(int ok, X509_STORE_CTX *x)
{
	if (!ok) {
		SSL *ssl = X509_STORE_CTX_get_ex_data(x, SSL_get_ex_data_X509_STORE_CTX_idx());
		char *tls_err = ssl ? SSL_get_ex_data(ssl, ex_review) : NULL;
		if (tls_err)
			snprintf(tls_err, 200, "the server certificate does not "
				 "verify against the CA bundle: %s",
				 X509_verify_cert_error_string(X509_STORE_CTX_get_error(x)));
	}
	return ok;
}

/* A TLS connection to the API server verified against the CA bundle and
 * the URL's host; tls_err (200 bytes) gets a verification failure. */
static struct evhttp_connection *new_conn(struct kube_api *k, char *tls_err, uint64_t idle_ms)
{
	SSL *ssl = SSL_new(k->ctx);
	SSL_set_ex_data(ssl, ex_review, tls_err);
	SSL_set_verify(ssl, SSL_VERIFY_PEER, verify_cb);
	if (k->host_is_ip) {
		X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), k->host);
	} else {
		SSL_set_tlsext_host_name(ssl, k->host);
		SSL_set1_host(ssl, k->host);
	}
	struct bufferevent *bev = bufferevent_openssl_socket_new(
		k->base, -1, ssl, BUFFEREVENT_SSL_CONNECTING, BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
	bufferevent_openssl_set_allow_dirty_shutdown(bev, 1);
	struct evhttp_connection *conn = evhttp_connection_base_bufferevent_new(k->base, NULL, bev,
										k->addr, k->port);
	struct timeval tv = { (time_t)(idle_ms / 1000), (suseconds_t)(idle_ms % 1000) * 1000 };
	evhttp_connection_set_timeout_tv(conn, &tv);
	return conn;
}

static void add_headers(struct kube_api *k, struct evkeyvalq *h, const char *own)
{
	char *bearer = xasprintf("Bearer %s", own);
	evhttp_add_header(h, "Host", k->host_header);
	evhttp_add_header(h, "Authorization", bearer);
	evhttp_add_header(h, "Accept", "application/json");
	evhttp_add_header(h, "User-Agent", "remora-cp");
	evhttp_add_header(h, "Connection", "close");
	OPENSSL_cleanse(bearer, strlen(bearer));
	free(bearer);
}

static void defer_fail(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	fail(arg, KUBE_FAIL_no_credentials, "remora-cp's own service-account token is unreadable");
}

struct kube_review *kube_token_review(struct kube_api *k, const char *token, const char *audience,
				      kube_review_cb cb, void *arg)
{
	struct kube_review *r = xcalloc(1, sizeof(*r));
	r->k = k;
	r->cb = cb;
	r->arg = arg;
	r->audience = xstrdup(audience);
	r->next = k->reviews;
	if (k->reviews)
		k->reviews->prev = r;
	k->reviews = r;
	k->stats.in_flight++;
	k->stats.reviews++;
	const char *own = own_token(k);
	if (!own) {   /* the callback never runs inside this call */
		event_base_once(k->base, -1, EV_TIMEOUT, defer_fail, r, NULL);
		return r;
	}
	struct evhttp_connection *conn = new_conn(k, r->tls_err, k->timeout_ms);
	evhttp_connection_set_max_body_size(conn, 1 << 20);
	r->conn = conn;
	struct evhttp_request *req = evhttp_request_new(on_done, r);
	struct evkeyvalq *h = evhttp_request_get_output_headers(req);
	add_headers(k, h, own);
	evhttp_add_header(h, "Content-Type", "application/json");
	json_t *body = json_pack("{s:s, s:s, s:{s:s, s:[s]}}", "apiVersion", "authentication.k8s.io/v1",
				 "kind", "TokenReview", "spec", "token", token, "audiences", audience);
	char *text = json_dumps(body, JSON_COMPACT);
	json_decref(body);
	evbuffer_add(evhttp_request_get_output_buffer(req), text, strlen(text));
	OPENSSL_cleanse(text, strlen(text));
	free(text);
	if (evhttp_make_request(conn, req, EVHTTP_REQ_POST, KUBE_REVIEW_PATH)) {
		/* the callback does not run; freeing the connection frees what is left */
		conn_release(k, conn);
		r->conn = NULL;
		event_base_once(k->base, -1, EV_TIMEOUT, defer_fail, r, NULL);
	}
	return r;
}

/* ---- GET ------------------------------------------------------------------------ */

static void call_unlink(struct kube_call *c)
{
	struct kube_api *k = c->k;
	if (c->prev)
		c->prev->next = c->next;
	else
		k->calls = c->next;
	if (c->next)
		c->next->prev = c->prev;
	c->prev = c->next = NULL;
}

static void call_end(struct kube_call *c, int code, struct evbuffer *body, const char *err)
{
	call_unlink(c);
	c->end(c->arg, code, body, err);
	call_free(c);
}

static void on_call_later(evutil_socket_t fd, short what, void *arg)
{
	struct kube_call *c = arg;
	(void)fd;
	(void)what;
	call_end(c, 0, NULL, "remora-cp's own service-account token is unreadable");
}

static void on_call_chunk(struct evhttp_request *req, void *arg)
{
	struct kube_call *c = arg;
	struct evbuffer *in = evhttp_request_get_input_buffer(req);
	if (c->cancelled)
		return;
	if (evhttp_request_get_response_code(req) == 200) {
		c->data(c->arg, in);
	} else if (evbuffer_get_length(c->body) < c->max_body) {
		evbuffer_add_buffer(c->body, in);
	}
}

static void on_call_done(struct evhttp_request *req, void *arg)
{
	struct kube_call *c = arg;
	char msg[512];
	if (c->cancelled)   /* the reaper frees c */
		return;
	conn_release(c->k, c->conn);
	c->conn = NULL;
	int code = req ? evhttp_request_get_response_code(req) : 0;
	if (!code) {
		snprintf(msg, sizeof(msg), "cannot reach the API server %s%s%s", c->k->url,
			 c->tls_err[0] ? ": " : " (connect, TLS, timeout or connection closed)",
			 c->tls_err);
		call_end(c, 0, NULL, msg);
		return;
	}
	struct evbuffer *in = evhttp_request_get_input_buffer(req);
	call_end(c, code, evbuffer_get_length(c->body) ? c->body : in, NULL);
}

struct kube_call *kube_get(struct kube_api *k, const char *path, uint64_t idle_ms,
			   size_t max_body, kube_data_cb data, kube_end_cb end, void *arg)
{
	struct kube_call *c = xcalloc(1, sizeof(*c));
	c->k = k;
	c->data = data;
	c->end = end;
	c->arg = arg;
	c->max_body = max_body;
	c->body = evbuffer_new();
	c->next = k->calls;
	if (k->calls)
		k->calls->prev = c;
	k->calls = c;
	const char *own = own_token(k);
	if (!own) {   /* end never runs inside this call */
		c->later = evtimer_new(k->base, on_call_later, c);
		event_active(c->later, EV_TIMEOUT, 1);
		return c;
	}
	c->conn = new_conn(k, c->tls_err, idle_ms ? idle_ms : k->timeout_ms);
	if (!data)
		evhttp_connection_set_max_body_size(c->conn, (ev_ssize_t)max_body);
	struct evhttp_request *req = evhttp_request_new(on_call_done, c);
	if (data)
		evhttp_request_set_chunked_cb(req, on_call_chunk);
	add_headers(k, evhttp_request_get_output_headers(req), own);
	if (evhttp_make_request(c->conn, req, EVHTTP_REQ_GET, path)) {
		conn_release(k, c->conn);
		c->conn = NULL;
		c->later = evtimer_new(k->base, on_call_later, c);
		event_active(c->later, EV_TIMEOUT, 1);
	}
	return c;
}

void kube_call_cancel(struct kube_call *c)
{
	if (!c || c->cancelled)
		return;
	struct kube_api *k = c->k;
	c->cancelled = true;
	call_unlink(c);
	if (c->later)
		event_del(c->later);
	if (!c->conn) {
		call_free(c);
		return;
	}
	conn_release(k, c->conn);   /* freed (with its request, no callback) on the next turn */
	c->conn = NULL;
	if (k->ndeadcalls == k->capdeadcalls) {
		k->capdeadcalls = k->capdeadcalls ? k->capdeadcalls * 2 : 8;
		k->deadcalls = xrealloc(k->deadcalls, k->capdeadcalls * sizeof(*k->deadcalls));
	}
	k->deadcalls[k->ndeadcalls++] = c;
}

void kube_review_cancel(struct kube_review *r)
{
	if (r)
		r->cb = NULL;
}

char *kube_api_metrics_text(const struct kube_api *k)
{
	static const char *names[] = {
#define KUBE_FAIL_NAME(n) #n,
		KUBE_FAIL_REASONS(KUBE_FAIL_NAME)
	};
	char *out = xasprintf("# TYPE remora_cp_ca_token_review_total counter\n"
			      "remora_cp_ca_token_review_total %llu\n"
			      "# TYPE remora_cp_ca_token_review_denied_total counter\n"
			      "remora_cp_ca_token_review_denied_total %llu\n"
			      "# TYPE remora_cp_ca_token_review_in_flight gauge\n"
			      "remora_cp_ca_token_review_in_flight %llu\n"
			      "# TYPE remora_cp_ca_token_review_failed_total counter\n",
			      (unsigned long long)k->stats.reviews,
			      (unsigned long long)k->stats.denied,
			      (unsigned long long)k->stats.in_flight);
	for (int i = 0; i < KUBE_FAIL_N; i++) {
		char *more = xasprintf("%sremora_cp_ca_token_review_failed_total{reason=\"%s\"} %llu\n",
				       out, names[i], (unsigned long long)k->stats.failed[i]);
		free(out);
		out = more;
	}
	return out;
}
