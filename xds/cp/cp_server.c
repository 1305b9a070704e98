/* cp_server.c - gRPC server (h2c) on nghttp2 for remora-cp. */
#include "cp_server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/listener.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <event2/util.h>
#include <nghttp2/nghttp2.h>
#include "../../proxy/common.h"
#include "../../proxy/log.h"

#define CP_MAX_MSG (16u << 20)   /* refuse larger request messages */

struct cp_method {
	struct cp_method *next;
	char *path;                        /* owned */
	cp_unary_fn unary;                 /* either unary ... */
	cp_unary_async_fn unary_async;     /* ... or asynchronous unary ... */
	const struct cp_stream_ops *ops;   /* ... or streaming */
	void *arg;
};

struct cp_listener {
	struct cp_listener *next;
	struct evconnlistener *l;          /* owned */
};

struct cp_conn;

struct cp_stream {
	struct cp_stream *prev, *next;     /* in conn->streams */
	struct cp_conn *conn;
	int32_t id;
	char *path, *authorization;        /* owned (request headers) */
	const struct cp_method *method;    /* NULL until dispatched */
	void *state;                       /* the streaming method's */
	struct evbuffer *in, *out;         /* owned: request bytes / framed replies */
	bool opened;                       /* on_open returned state: on_close owed */
	bool headers_sent, finishing, trailers_sent, deferred;
	void (*abort_fn)(void *);          /* async unary: owed if freed unanswered */
	void *abort_arg;
	int status;
	char message[256];
};

struct cp_conn {
	struct cp_conn *prev, *next;       /* in server->conns */
	struct cp_server *srv;
	struct bufferevent *bev;           /* owned */
	nghttp2_session *h2;               /* owned */
	struct cp_stream *streams;
	char peer[64];
	struct event *kill;                /* owned: deferred conn_free */
	bool tls, tls_up;                  /* a TLS connection / its handshake completed */
	int busy;                          /* inside nghttp2 callbacks */
	bool dead;                         /* free when no longer busy */
};

struct cp_server {
	struct event_base *base;
	struct cp_method *methods;
	struct cp_listener *listeners;
	struct cp_conn *conns;
	unsigned nconns;
	SSL_CTX *tls;                      /* ref, NULL: cleartext */
	struct cp_tls_stats tls_stats;
};

static void conn_flush(struct cp_conn *c);
static void conn_free(struct cp_conn *c);

/* ---- methods ------------------------------------------------------------- */

static struct cp_method *method_slot(struct cp_server *s, const char *path)
{
	for (struct cp_method *m = s->methods; m; m = m->next)
		if (!strcmp(m->path, path))
			return m;
	struct cp_method *m = xcalloc(1, sizeof(*m));
	m->path = xstrdup(path);
	m->next = s->methods;
	s->methods = m;
	return m;
}

void cp_server_register_unary(struct cp_server *s, const char *path, cp_unary_fn fn, void *arg)
{
	struct cp_method *m = method_slot(s, path);
	m->unary = fn;
	m->unary_async = NULL;
	m->ops = NULL;
	m->arg = arg;
}

void cp_server_register_unary_async(struct cp_server *s, const char *path, cp_unary_async_fn fn,
				    void *arg)
{
	struct cp_method *m = method_slot(s, path);
	m->unary = NULL;
	m->unary_async = fn;
	m->ops = NULL;
	m->arg = arg;
}

void cp_server_register_stream(struct cp_server *s, const char *path,
			       const struct cp_stream_ops *ops, void *arg)
{
	struct cp_method *m = method_slot(s, path);
	m->unary = NULL;
	m->unary_async = NULL;
	m->ops = ops;
	m->arg = arg;
}

static const struct cp_method *method_find(const struct cp_server *s, const char *path)
{
	for (const struct cp_method *m = s->methods; m; m = m->next)
		if (!strcmp(m->path, path))
			return m;
	return NULL;
}

/* ---- streams ------------------------------------------------------------- */

static void stream_free(struct cp_stream *st)
{
	struct cp_conn *c = st->conn;
	if (st->opened) {
		st->opened = false;
		st->method->ops->on_close(st->state);
	}
	if (st->abort_fn) {
		void (*fn)(void *) = st->abort_fn;
		st->abort_fn = NULL;
		fn(st->abort_arg);
	}
	if (st->prev)
		st->prev->next = st->next;
	else
		c->streams = st->next;
	if (st->next)
		st->next->prev = st->prev;
	free(st->path);
	free(st->authorization);
	evbuffer_free(st->in);
	evbuffer_free(st->out);
	free(st);
}

#define NV(n, v) { (uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, strlen(v), NGHTTP2_NV_FLAG_NONE }

static ssize_t read_body(nghttp2_session *s, int32_t sid, uint8_t *buf, size_t len,
			 uint32_t *flags, nghttp2_data_source *src, void *ud)
{
	struct cp_stream *st = src->ptr;
	(void)s;
	(void)sid;
	(void)ud;
	size_t have = evbuffer_get_length(st->out);
	if (have)
		return evbuffer_remove(st->out, buf, len);
	if (!st->finishing) {
		st->deferred = true;
		return NGHTTP2_ERR_DEFERRED;
	}
	char code[16];
	snprintf(code, sizeof(code), "%d", st->status);
	nghttp2_nv tr[2] = { NV("grpc-status", code), NV("grpc-message", st->message) };
	*flags |= NGHTTP2_DATA_FLAG_EOF;
	if (!st->trailers_sent) {
		st->trailers_sent = true;
		*flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
		nghttp2_submit_trailer(st->conn->h2, st->id, tr, st->message[0] ? 2 : 1);
	}
	return 0;
}

static void submit_headers(struct cp_stream *st)
{
	nghttp2_nv hdrs[] = { NV(":status", "200"), NV("content-type", "application/grpc") };
	nghttp2_data_provider dp = { .source.ptr = st, .read_callback = read_body };
	st->headers_sent = true;
	nghttp2_submit_response(st->conn->h2, st->id, hdrs, 2, &dp);
}

/* A reply with only trailers (errors before any message). */
static void trailers_only(struct cp_stream *st, int status, const char *msg)
{
	char code[16];
	snprintf(code, sizeof(code), "%d", status);
	nghttp2_nv hdrs[] = { NV(":status", "200"), NV("content-type", "application/grpc"),
			      NV("grpc-status", code), NV("grpc-message", msg) };
	st->headers_sent = st->finishing = st->trailers_sent = true;
	nghttp2_submit_response(st->conn->h2, st->id, hdrs, 4, NULL);
}

int cp_stream_send(struct cp_stream *st, const uint8_t *msg, size_t len)
{
	if (!st || st->finishing || st->conn->dead)
		return -1;
	uint8_t hdr[5] = { 0, (uint8_t)(len >> 24), (uint8_t)(len >> 16), (uint8_t)(len >> 8),
			   (uint8_t)len };
	evbuffer_add(st->out, hdr, 5);
	evbuffer_add(st->out, msg, len);
	if (!st->headers_sent)
		submit_headers(st);
	if (st->deferred) {
		st->deferred = false;
		nghttp2_session_resume_data(st->conn->h2, st->id);
	}
	conn_flush(st->conn);
	return 0;
}

void cp_stream_finish(struct cp_stream *st, int status, const char *message)
{
	if (!st || st->finishing)
		return;
	st->status = status;
	snprintf(st->message, sizeof(st->message), "%s", message ? message : "");
	if (!st->headers_sent) {
		trailers_only(st, status, st->message);
	} else {
		st->finishing = true;
		if (st->deferred) {
			st->deferred = false;
			nghttp2_session_resume_data(st->conn->h2, st->id);
		}
	}
	conn_flush(st->conn);
}

void cp_stream_on_abort(struct cp_stream *st, void (*fn)(void *), void *arg)
{
	st->abort_fn = fn;
	st->abort_arg = arg;
}

void cp_unary_reply(struct cp_stream *st, int status, const uint8_t *resp, size_t len,
		    const char *msg)
{
	st->abort_fn = NULL;
	if (status) {
		cp_stream_finish(st, status, msg);
		return;
	}
	cp_stream_send(st, resp ? resp : (const uint8_t *)"", len);
	cp_stream_finish(st, 0, "");
}

const char *cp_stream_peer(const struct cp_stream *st)
{
	return st->conn->peer;
}

static void call_of(const struct cp_stream *st, struct cp_call *call)
{
	call->path = st->path;
	call->authorization = st->authorization;
	call->peer = st->conn->peer;
}

/* Complete request messages in st->in: to the streaming method, or (unary)
 * the one message once the request has ended. */
static void stream_messages(struct cp_stream *st)
{
	while (!st->finishing && st->opened) {
		uint8_t hdr[5];
		if (evbuffer_copyout(st->in, hdr, 5) < 5)
			return;
		uint32_t n = (uint32_t)hdr[1] << 24 | (uint32_t)hdr[2] << 16 | (uint32_t)hdr[3] << 8 | hdr[4];
		if (hdr[0] != 0 || n > CP_MAX_MSG) {
			cp_stream_finish(st, hdr[0] ? 12 : 8, hdr[0] ? "compressed messages are not supported"
							       : "message too large");
			return;
		}
		if (evbuffer_get_length(st->in) < 5 + (size_t)n)
			return;
		evbuffer_drain(st->in, 5);
		uint8_t *p = evbuffer_pullup(st->in, n);
		st->method->ops->on_message(st->state, p ? p : (uint8_t *)"", n);
		evbuffer_drain(st->in, n);
	}
}

static void unary_call(struct cp_stream *st)
{
	uint8_t hdr[5];
	size_t have = evbuffer_get_length(st->in);
	uint32_t n = 0;
	if (evbuffer_copyout(st->in, hdr, 5) == 5)
		n = (uint32_t)hdr[1] << 24 | (uint32_t)hdr[2] << 16 | (uint32_t)hdr[3] << 8 | hdr[4];
	if (have < 5 || hdr[0] != 0 || have != 5 + (size_t)n) {
		trailers_only(st, hdr[0] && have >= 5 ? 12 : 13,
			      "a unary call needs exactly one uncompressed message");
		return;
	}
	evbuffer_drain(st->in, 5);
	uint8_t *p = evbuffer_pullup(st->in, n), *resp = NULL;
	size_t resp_len = 0;
	char msg[256] = "";
	struct cp_call call;
	call_of(st, &call);
	if (st->method->unary_async) {
		st->method->unary_async(st->method->arg, st, &call, p ? p : (uint8_t *)"", n);
		return;
	}
	int status = st->method->unary(st->method->arg, &call, p ? p : (uint8_t *)"", n, &resp,
				       &resp_len, msg, sizeof(msg));
	if (status) {
		free(resp);
		trailers_only(st, status, msg);
		return;
	}
	cp_stream_send(st, resp ? resp : (uint8_t *)"", resp_len);
	free(resp);
	cp_stream_finish(st, 0, "");
}

/* ---- nghttp2 callbacks ---------------------------------------------------- */

static int on_begin_headers(nghttp2_session *s, const nghttp2_frame *f, void *ud)
{
	struct cp_conn *c = ud;
	if (f->hd.type != NGHTTP2_HEADERS || f->headers.cat != NGHTTP2_HCAT_REQUEST)
		return 0;
	struct cp_stream *st = xcalloc(1, sizeof(*st));
	st->conn = c;
	st->id = f->hd.stream_id;
	st->in = evbuffer_new();
	st->out = evbuffer_new();
	st->next = c->streams;
	if (c->streams)
		c->streams->prev = st;
	c->streams = st;
	nghttp2_session_set_stream_user_data(s, st->id, st);
	return 0;
}

static int on_header(nghttp2_session *s, const nghttp2_frame *f, const uint8_t *name, size_t nlen,
		     const uint8_t *value, size_t vlen, uint8_t flags, void *ud)
{
	(void)flags;
	(void)ud;
	struct cp_stream *st = nghttp2_session_get_stream_user_data(s, f->hd.stream_id);
	if (!st || f->hd.type != NGHTTP2_HEADERS)
		return 0;
	if (nlen == 5 && !memcmp(name, ":path", 5) && !st->path)
		st->path = strndup((const char *)value, vlen);
	else if (nlen == 13 && !memcmp(name, "authorization", 13) && !st->authorization)
		st->authorization = strndup((const char *)value, vlen);
	return 0;
}

static void dispatch(struct cp_stream *st)
{
	struct cp_server *srv = st->conn->srv;
	st->method = st->path ? method_find(srv, st->path) : NULL;
	if (!st->method) {
		char msg[300];
		snprintf(msg, sizeof(msg), "unknown method %s", st->path ? st->path : "(none)");
		trailers_only(st, 12, msg);
		return;
	}
	if (st->method->ops) {
		struct cp_call call;
		call_of(st, &call);
		st->state = st->method->ops->on_open(st->method->arg, st, &call);
		if (!st->state) {
			trailers_only(st, 13, "stream refused");
			return;
		}
		st->opened = true;
		submit_headers(st);
	}
}

static int on_frame_recv(nghttp2_session *s, const nghttp2_frame *f, void *ud)
{
	(void)ud;
	struct cp_stream *st = nghttp2_session_get_stream_user_data(s, f->hd.stream_id);
	if (!st)
		return 0;
	if (f->hd.type == NGHTTP2_HEADERS && f->headers.cat == NGHTTP2_HCAT_REQUEST)
		dispatch(st);
	if ((f->hd.type == NGHTTP2_HEADERS || f->hd.type == NGHTTP2_DATA) &&
	    (f->hd.flags & NGHTTP2_FLAG_END_STREAM) && st->method && !st->finishing) {
		if (st->method->unary || st->method->unary_async)
			unary_call(st);
		else
			cp_stream_finish(st, 0, "");   /* the client half-closed */
	}
	return 0;
}

static int on_data_chunk(nghttp2_session *s, uint8_t flags, int32_t sid, const uint8_t *data,
			 size_t len, void *ud)
{
	(void)flags;
	(void)ud;
	struct cp_stream *st = nghttp2_session_get_stream_user_data(s, sid);
	if (!st || st->finishing)
		return 0;
	if (evbuffer_get_length(st->in) + len > CP_MAX_MSG + 5) {
		cp_stream_finish(st, 8, "request too large");
		return 0;
	}
	evbuffer_add(st->in, data, len);
	if (st->opened)
		stream_messages(st);
	return 0;
}

static int on_stream_close(nghttp2_session *s, int32_t sid, uint32_t code, void *ud)
{
	(void)code;
	(void)ud;
	struct cp_stream *st = nghttp2_session_get_stream_user_data(s, sid);
	if (st) {
		nghttp2_session_set_stream_user_data(s, sid, NULL);
		stream_free(st);
	}
	return 0;
}

/* ---- connections ----------------------------------------------------------- */

static void conn_free(struct cp_conn *c)
{
	if (c->busy) {
		c->dead = true;
		return;
	}
	c->dead = true;
	c->busy++;   /* on_close handlers may call cp_stream_send: refused (dead) */
	while (c->streams)
		stream_free(c->streams);
	c->busy--;
	if (c->prev)
		c->prev->next = c->next;
	else
		c->srv->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	c->srv->nconns--;
	event_free(c->kill);
	nghttp2_session_del(c->h2);
	bufferevent_free(c->bev);
	free(c);
}

static void on_kill(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	struct cp_conn *c = arg;
	c->dead = false;   /* conn_free sets it again; busy is 0 here */
	conn_free(c);
}

/* The connection ends, but not now: conn_flush runs inside callers that
 * walk stream lists (a push to every proxy), so the free (and the on_close
 * of its streams) waits for the next loop iteration. */
static void conn_kill(struct cp_conn *c)
{
	c->dead = true;
	bufferevent_disable(c->bev, EV_READ | EV_WRITE);
	event_active(c->kill, EV_TIMEOUT, 1);
}

static void conn_flush(struct cp_conn *c)
{
	if (c->dead || c->busy)
		return;   /* after nghttp2_session_mem_recv returns */
	for (;;) {
		const uint8_t *data;
		ssize_t n = nghttp2_session_mem_send(c->h2, &data);
		if (n < 0) {
			conn_kill(c);
			return;
		}
		if (n == 0)
			break;
		bufferevent_write(c->bev, data, (size_t)n);
	}
	if (!nghttp2_session_want_read(c->h2) && !nghttp2_session_want_write(c->h2) &&
	    !evbuffer_get_length(bufferevent_get_output(c->bev)))
		conn_kill(c);
}

static void on_read(struct bufferevent *bev, void *arg)
{
	struct cp_conn *c = arg;
	struct evbuffer *in = bufferevent_get_input(bev);
	size_t len = evbuffer_get_length(in);
	uint8_t *p = evbuffer_pullup(in, -1);
	c->busy++;
	ssize_t n = nghttp2_session_mem_recv(c->h2, p, len);
	c->busy--;
	if (n < 0 || c->dead) {
		conn_free(c);
		return;
	}
	evbuffer_drain(in, len);
	conn_flush(c);
}

static void on_write(struct bufferevent *bev, void *arg)
{
	struct cp_conn *c = arg;
	(void)bev;
	if (!nghttp2_session_want_read(c->h2) && !nghttp2_session_want_write(c->h2))
		conn_free(c);
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
	struct cp_conn *c = arg;
	if (c->tls && (what & BEV_EVENT_CONNECTED) && !c->tls_up) {
		c->tls_up = true;
		c->srv->tls_stats.handshakes++;
		return;
	}
	if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)) {
		if (c->tls && !c->tls_up) {
			unsigned long e = bufferevent_get_openssl_error(bev);
			char reason[256];
			if (e)
				ERR_error_string_n(e, reason, sizeof(reason));
			else
				snprintf(reason, sizeof(reason), "%s", (what & BEV_EVENT_EOF)
					 ? "the client closed the connection (it may not trust our "
					   "certificate)" : "not a TLS client hello or socket error");
			c->srv->tls_stats.handshake_errors++;
			log_warn("remora-cp: TLS handshake with %s failed: %s", c->peer, reason);
		}
		conn_free(c);
	}
}

static void on_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int salen,
		      void *arg)
{
	struct cp_server *s = arg;
	(void)l;
	(void)salen;
	struct cp_conn *c = xcalloc(1, sizeof(*c));
	char host[INET6_ADDRSTRLEN] = "?";
	int port = 0;
	if (sa->sa_family == AF_INET) {
		inet_ntop(AF_INET, &((struct sockaddr_in *)sa)->sin_addr, host, sizeof(host));
		port = ntohs(((struct sockaddr_in *)sa)->sin_port);
		snprintf(c->peer, sizeof(c->peer), "%s:%d", host, port);
	} else if (sa->sa_family == AF_INET6) {
		inet_ntop(AF_INET6, &((struct sockaddr_in6 *)sa)->sin6_addr, host, sizeof(host));
		port = ntohs(((struct sockaddr_in6 *)sa)->sin6_port);
		snprintf(c->peer, sizeof(c->peer), "[%s]:%d", host, port);
	}
	c->srv = s;
	if (s->tls) {
		SSL *ssl = SSL_new(s->tls);
		if (!ssl)
			die("SSL_new");
		c->tls = true;
		c->bev = bufferevent_openssl_socket_new(s->base, fd, ssl, BUFFEREVENT_SSL_ACCEPTING,
							BEV_OPT_CLOSE_ON_FREE);
		bufferevent_openssl_set_allow_dirty_shutdown(c->bev, 1);
	} else {
		c->bev = bufferevent_socket_new(s->base, fd, BEV_OPT_CLOSE_ON_FREE);
	}
	c->kill = evtimer_new(s->base, on_kill, c);
	nghttp2_session_callbacks *cbs;
	nghttp2_session_callbacks_new(&cbs);
	nghttp2_session_callbacks_set_on_begin_headers_callback(cbs, on_begin_headers);
	nghttp2_session_callbacks_set_on_header_callback(cbs, on_header);
	nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, on_frame_recv);
	nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_data_chunk);
	nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_stream_close);
	nghttp2_session_server_new(&c->h2, cbs, c);
	nghttp2_session_callbacks_del(cbs);
	nghttp2_settings_entry iv[] = { { NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, 1000 },
					{ NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, 1 << 20 } };
	nghttp2_submit_settings(c->h2, NGHTTP2_FLAG_NONE, iv, 2);
	nghttp2_session_set_local_window_size(c->h2, NGHTTP2_FLAG_NONE, 0, 16 << 20);
	c->next = s->conns;
	if (s->conns)
		s->conns->prev = c;
	s->conns = c;
	s->nconns++;
	bufferevent_setcb(c->bev, on_read, on_write, on_event, c);
	bufferevent_enable(c->bev, EV_READ | EV_WRITE);
	conn_flush(c);
}

/* ---- server ------------------------------------------------------------------ */

struct cp_server *cp_server_new(struct event_base *base)
{
	struct cp_server *s = xcalloc(1, sizeof(*s));
	s->base = base;
	return s;
}

int cp_server_listen(struct cp_server *s, const char *addr, char *err, size_t errlen)
{
	struct sockaddr_storage ss;
	int sslen = 0;
	char host[INET6_ADDRSTRLEN + 2];
	const char *colon = strrchr(addr, ':');
	char *end;
	long port = colon ? strtol(colon + 1, &end, 10) : -1;
	memset(&ss, 0, sizeof(ss));
	if (colon && colon[1] && !*end && port >= 0 && port <= 65535 &&
	    (size_t)(colon - addr) < sizeof(host)) {
		snprintf(host, sizeof(host), "%.*s", (int)(colon - addr), addr);
		struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
		struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
		size_t hl = strlen(host);
		if (inet_pton(AF_INET, host, &s4->sin_addr) == 1) {
			s4->sin_family = AF_INET;
			s4->sin_port = htons((uint16_t)port);
			sslen = sizeof(*s4);
		} else if (hl > 2 && host[0] == '[' && host[hl - 1] == ']') {
			host[hl - 1] = 0;
			if (inet_pton(AF_INET6, host + 1, &s6->sin6_addr) == 1) {
				s6->sin6_family = AF_INET6;
				s6->sin6_port = htons((uint16_t)port);
				sslen = sizeof(*s6);
			}
		}
	}
	if (!sslen) {
		snprintf(err, errlen, "bad listen address '%s' (want ip:port or [ipv6]:port)", addr);
		return -1;
	}
	struct evconnlistener *l = evconnlistener_new_bind(
		s->base, on_accept, s, LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE, 128,
		(struct sockaddr *)&ss, sslen);
	if (!l) {
		snprintf(err, errlen, "listen on %s: %s", addr, strerror(errno));
		return -1;
	}
	struct cp_listener *cl = xcalloc(1, sizeof(*cl));
	cl->l = l;
	cl->next = s->listeners;
	s->listeners = cl;
	struct sockaddr_storage bound;
	socklen_t blen = sizeof(bound);
	getsockname(evconnlistener_get_fd(l), (struct sockaddr *)&bound, &blen);
	return bound.ss_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)&bound)->sin6_port)
					   : ntohs(((struct sockaddr_in *)&bound)->sin_port);
}

static int alpn_cb(SSL *ssl, const unsigned char **out, unsigned char *outlen,
		   const unsigned char *in, unsigned int inlen, void *arg)
{
	static const unsigned char h2[] = { 2, 'h', '2' };
	(void)ssl;
	(void)arg;
	/* h2 when offered; otherwise no ALPN (gRPC is HTTP/2 with prior knowledge) */
	if (SSL_select_next_proto((unsigned char **)out, outlen, h2, sizeof(h2), in, inlen) ==
	    OPENSSL_NPN_NEGOTIATED)
		return SSL_TLSEXT_ERR_OK;
	return SSL_TLSEXT_ERR_NOACK;
}

SSL_CTX *cp_server_tls_ctx(X509 *cert, EVP_PKEY *key, char *err, size_t errlen)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
	if (!ctx || !SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) ||
	    SSL_CTX_use_certificate(ctx, cert) != 1 || SSL_CTX_use_PrivateKey(ctx, key) != 1 ||
	    SSL_CTX_check_private_key(ctx) != 1) {
		unsigned long e = ERR_get_error();
		char r[200] = "?";
		if (e)
			ERR_error_string_n(e, r, sizeof(r));
		snprintf(err, errlen, "TLS context: %s", r);
		ERR_clear_error();
		SSL_CTX_free(ctx);
		return NULL;
	}
	SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION);
	SSL_CTX_set_alpn_select_cb(ctx, alpn_cb, NULL);
	return ctx;
}

void cp_server_set_tls(struct cp_server *s, SSL_CTX *ctx)
{
	if (ctx)
		SSL_CTX_up_ref(ctx);
	SSL_CTX_free(s->tls);
	s->tls = ctx;
}

const struct cp_tls_stats *cp_server_tls_stats(const struct cp_server *s)
{
	return &s->tls_stats;
}

unsigned cp_server_connections(const struct cp_server *s)
{
	return s->nconns;
}

void cp_server_free(struct cp_server *s)
{
	if (!s)
		return;
	while (s->conns)
		conn_free(s->conns);
	while (s->listeners) {
		struct cp_listener *l = s->listeners;
		s->listeners = l->next;
		evconnlistener_free(l->l);
		free(l);
	}
	while (s->methods) {
		struct cp_method *m = s->methods;
		s->methods = m->next;
		free(m->path);
		free(m);
	}
	SSL_CTX_free(s->tls);
	free(s);
}
