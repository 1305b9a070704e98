/* grpc_client.c - a gRPC bidi stream over HTTP/2 on nghttp2 (client side),
 * cleartext (h2c) or TLS (proxy/conn.c's transport). */
#include "grpc_client.h"

#include <errno.h>
#include <string.h>
#include <event2/buffer.h>
#include <nghttp2/nghttp2.h>
#include "../proxy/common.h"
#include "../proxy/conn.h"
#include "../proxy/log.h"

#define GRPC_MAX_MSG (64u << 20)   /* refuse larger messages (64 MiB) */
#define GRPC_MAX_MD 16

struct grpc_client {
	struct event_base *base;
	struct conn *c;                     /* owned: TCP or TLS */
	bool tls;
	nghttp2_session *h2;                /* owned */
	int32_t stream_id;
	struct evbuffer *out;               /* owned: framed messages not yet given to nghttp2 */
	struct evbuffer *in;                /* owned: response DATA not yet parsed */
	struct event *ka_timer;             /* owned: keepalive */
	uint64_t keepalive_ms, last_rx_ms;
	char *authority, *path;             /* owned */
	int status;                         /* grpc-status seen, -1 none */
	char message[256];                  /* grpc-message */
	int http_status;
	bool open, closed, data_deferred;
	bool half_close;                    /* grpc_client_close_send: END_STREAM after out */
	char *md_name[GRPC_MAX_MD], *md_value[GRPC_MAX_MD];   /* owned: extra request headers */
	size_t nmd;
	struct grpc_client_cbs cbs;
	void *arg;
};

static void finish(struct grpc_client *g, int status, const char *msg)
{
	if (g->closed)
		return;
	g->closed = true;
	if (g->ka_timer)
		event_del(g->ka_timer);
	if (g->c)
		conn_disable_read(g->c);
	g->cbs.on_close(g->arg, status, msg);
}

static void flush(struct grpc_client *g)
{
	if (g->closed)
		return;
	for (;;) {
		const uint8_t *data;
		ssize_t n = nghttp2_session_mem_send(g->h2, &data);
		if (n < 0) {
			finish(g, 14, nghttp2_strerror((int)n));
			return;
		}
		if (n == 0)
			break;
		evbuffer_add(conn_output(g->c), data, (size_t)n);
	}
	if (!nghttp2_session_want_read(g->h2) && !nghttp2_session_want_write(g->h2))
		finish(g, g->status >= 0 ? g->status : 14,
		       g->message[0] ? g->message : "connection closed");
}

static ssize_t read_body(nghttp2_session *s, int32_t sid, uint8_t *buf, size_t len,
			 uint32_t *flags, nghttp2_data_source *src, void *ud)
{
	struct grpc_client *g = ud;
	(void)s;
	(void)sid;
	(void)src;
	size_t have = evbuffer_get_length(g->out);
	if (!have) {
		if (g->half_close) {
			*flags |= NGHTTP2_DATA_FLAG_EOF;
			return 0;
		}
		g->data_deferred = true;
		return NGHTTP2_ERR_DEFERRED;
	}
	int n = evbuffer_remove(g->out, buf, len);
	if (g->half_close && (size_t)n == have)
		*flags |= NGHTTP2_DATA_FLAG_EOF;
	return n;
}

static void parse_messages(struct grpc_client *g)
{
	while (!g->closed) {
		uint8_t hdr[5];
		if (evbuffer_copyout(g->in, hdr, 5) < 5)
			return;
		uint32_t n = (uint32_t)hdr[1] << 24 | (uint32_t)hdr[2] << 16 | (uint32_t)hdr[3] << 8 | hdr[4];
		if (hdr[0] != 0 || n > GRPC_MAX_MSG) {
			nghttp2_submit_rst_stream(g->h2, NGHTTP2_FLAG_NONE, g->stream_id, NGHTTP2_CANCEL);
			finish(g, 13, hdr[0] ? "compressed gRPC messages are not supported"
					     : "gRPC message too large");
			return;
		}
		if (evbuffer_get_length(g->in) < 5 + (size_t)n)
			return;
		evbuffer_drain(g->in, 5);
		uint8_t *p = evbuffer_pullup(g->in, n);
		g->cbs.on_message(g->arg, p ? p : (uint8_t *)"", n);
		evbuffer_drain(g->in, n);
	}
}

static int on_data_chunk(nghttp2_session *s, uint8_t flags, int32_t sid, const uint8_t *data,
			 size_t len, void *ud)
{
	struct grpc_client *g = ud;
	(void)s;
	(void)flags;
	if (sid == g->stream_id) {
		evbuffer_add(g->in, data, len);
		parse_messages(g);
	}
	return 0;
}

static void pct_decode(char *s)
{
	char *o = s;
	for (; *s; s++) {
		if (*s == '%' && s[1] && s[2]) {
			char h[3] = { s[1], s[2], 0 };
			*o++ = (char)strtol(h, NULL, 16);
			s += 2;
		} else {
			*o++ = *s;
		}
	}
	*o = 0;
}

static int on_header(nghttp2_session *s, const nghttp2_frame *f, const uint8_t *name, size_t nl,
		     const uint8_t *value, size_t vl, uint8_t flags, void *ud)
{
	struct grpc_client *g = ud;
	(void)s;
	(void)flags;
	if (f->hd.stream_id != g->stream_id)
		return 0;
	if (nl == 7 && !memcmp(name, ":status", 7))
		g->http_status = atoi((const char *)value);
	else if (nl == 11 && !memcmp(name, "grpc-status", 11))
		g->status = atoi((const char *)value);
	else if (nl == 12 && !memcmp(name, "grpc-message", 12)) {
		snprintf(g->message, sizeof(g->message), "%.*s", (int)vl, (const char *)value);
		pct_decode(g->message);
	}
	return 0;
}

/* The call is over: its status from the trailers (or why there is none). */
static void end_call(struct grpc_client *g, uint32_t err)
{
	if (g->status >= 0)
		finish(g, g->status, g->message);
	else if (g->http_status && g->http_status != 200)
		finish(g, 14, "non-200 HTTP status");
	else
		finish(g, 14, err ? "stream reset" : "stream closed without grpc-status");
}

static int on_frame_recv(nghttp2_session *s, const nghttp2_frame *f, void *ud)
{
	struct grpc_client *g = ud;
	(void)s;
	g->last_rx_ms = now_ms();
	/* END_STREAM from the server (trailers, or a trailers-only response)
	 * ends the call even while our side is open (a bidi stream never
	 * half-closes): waiting for on_stream_close would hang forever on a
	 * server that ends xDS streams with trailers */
	if (f->hd.stream_id == g->stream_id && (f->hd.flags & NGHTTP2_FLAG_END_STREAM) &&
	    (f->hd.type == NGHTTP2_HEADERS || f->hd.type == NGHTTP2_DATA))
		end_call(g, 0);
	return 0;
}

static int on_stream_close(nghttp2_session *s, int32_t sid, uint32_t err, void *ud)
{
	struct grpc_client *g = ud;
	(void)s;
	if (sid != g->stream_id)
		return 0;
	end_call(g, err);
	return 0;
}

static void read_cb(struct conn *c, void *arg)
{
	struct grpc_client *g = arg;
	struct evbuffer *in = conn_input(c);
	size_t n;
	while (!g->closed && (n = evbuffer_get_length(in)) > 0) {
		struct evbuffer_iovec v;
		if (evbuffer_peek(in, -1, NULL, &v, 1) < 1)
			break;
		ssize_t r = nghttp2_session_mem_recv(g->h2, v.iov_base, v.iov_len);
		if (r < 0) {
			finish(g, 14, nghttp2_strerror((int)r));
			return;
		}
		evbuffer_drain(in, v.iov_len);
	}
	flush(g);
}

static void submit_request(struct grpc_client *g)
{
	nghttp2_settings_entry iv[] = { { NGHTTP2_SETTINGS_ENABLE_PUSH, 0 },
					{ NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, 1 << 24 } };
	nghttp2_submit_settings(g->h2, NGHTTP2_FLAG_NONE, iv, 2);
	nghttp2_session_set_local_window_size(g->h2, NGHTTP2_FLAG_NONE, 0, 1 << 26);
#define NV(n, v) { (uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, strlen(v), NGHTTP2_NV_FLAG_NONE }
	nghttp2_nv hdrs[7 + GRPC_MAX_MD] = {
		NV(":method", "POST"), NV(":scheme", g->tls ? "https" : "http"), NV(":path", g->path),
		NV(":authority", g->authority), NV("content-type", "application/grpc"),
		NV("te", "trailers"), NV("user-agent", "remora-xds/0.1") };
#undef NV
	size_t n = 7;
	for (size_t i = 0; i < g->nmd; i++, n++)
		hdrs[n] = (nghttp2_nv){ (uint8_t *)g->md_name[i], (uint8_t *)g->md_value[i],
					strlen(g->md_name[i]), strlen(g->md_value[i]),
					NGHTTP2_NV_FLAG_NO_INDEX };   /* may be a credential */
	nghttp2_data_provider dp = { .read_callback = read_body };
	g->stream_id = nghttp2_submit_request(g->h2, NULL, hdrs, n, &dp, g);
	if (g->stream_id < 0)
		finish(g, 13, "cannot submit the gRPC request");
}

static void event_cb(struct conn *c, short what, void *arg)
{
	struct grpc_client *g = arg;
	(void)c;
	if (what & CONN_CONNECTED) {   /* after the TLS handshake, if any */
		g->open = true;
		g->last_rx_ms = now_ms();
		submit_request(g);
		flush(g);
		if (!g->closed && g->cbs.on_open)
			g->cbs.on_open(g->arg);
		return;
	}
	if (what & (CONN_EOF | CONN_ERROR))
		finish(g, 14, (what & CONN_EOF) ? "connection closed by peer"
			   : g->open ? "connection error" : g->tls ? "connect or TLS handshake failed"
			   : "connect failed");
}

static void ka_cb(evutil_socket_t fd, short what, void *arg)
{
	struct grpc_client *g = arg;
	(void)fd;
	(void)what;
	if (g->closed || !g->open)
		return;
	if (now_ms() - g->last_rx_ms > 2 * g->keepalive_ms) {
		finish(g, 14, "keepalive timeout");
		return;
	}
	nghttp2_submit_ping(g->h2, NGHTTP2_FLAG_NONE, NULL);
	flush(g);
}

struct grpc_client *grpc_client_new(struct event_base *base, const struct sockaddr *addr,
				    socklen_t addrlen, const char *authority, const char *path,
				    uint64_t keepalive_ms, const struct grpc_client_cbs *cbs,
				    void *arg)
{
	return grpc_client_new_tls(base, addr, addrlen, NULL, authority, path, keepalive_ms, cbs,
				   arg);
}

struct grpc_client *grpc_client_new_tls(struct event_base *base, const struct sockaddr *addr,
					socklen_t addrlen, struct tls_ctx *tls,
					const char *authority, const char *path,
					uint64_t keepalive_ms, const struct grpc_client_cbs *cbs,
					void *arg)
{
	struct grpc_client *g = xcalloc(1, sizeof(*g));
	nghttp2_session_callbacks *cb;

	g->base = base;
	g->cbs = *cbs;
	g->arg = arg;
	g->status = -1;
	g->authority = xstrdup(authority);
	g->path = xstrdup(path);
	g->keepalive_ms = keepalive_ms;
	g->out = evbuffer_new();
	g->in = evbuffer_new();
	nghttp2_session_callbacks_new(&cb);
	nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, on_data_chunk);
	nghttp2_session_callbacks_set_on_header_callback(cb, on_header);
	nghttp2_session_callbacks_set_on_frame_recv_callback(cb, on_frame_recv);
	nghttp2_session_callbacks_set_on_stream_close_callback(cb, on_stream_close);
	if (nghttp2_session_client_new(&g->h2, cb, g))
		die("nghttp2_session_client_new");
	nghttp2_session_callbacks_del(cb);
	g->c = conn_new(base, -1);
	g->tls = tls != NULL;
	if (tls)
		conn_set_tls(g->c, tls, false, NULL);   /* the context's sni */
	conn_setcb(g->c, read_cb, NULL, event_cb, g);
	conn_enable_read(g->c);
	conn_connect(g->c, addr, addrlen);   /* failures arrive as CONN_ERROR */
	if (keepalive_ms) {
		struct timeval tv = { (time_t)(keepalive_ms / 1000), (suseconds_t)(keepalive_ms % 1000) * 1000 };
		g->ka_timer = event_new(base, -1, EV_PERSIST, ka_cb, g);
		event_add(g->ka_timer, &tv);
	}
	return g;
}

int grpc_client_send(struct grpc_client *g, const uint8_t *msg, size_t len)
{
	uint8_t hdr[5] = { 0, (uint8_t)(len >> 24), (uint8_t)(len >> 16), (uint8_t)(len >> 8),
			   (uint8_t)len };
	if (g->closed)
		return RM_ERROR;
	evbuffer_add(g->out, hdr, 5);
	evbuffer_add(g->out, msg, len);
	if (g->open) {
		if (g->data_deferred) {
			g->data_deferred = false;
			nghttp2_session_resume_data(g->h2, g->stream_id);
		}
		flush(g);
	}
	return RM_OK;
}

void grpc_client_add_metadata(struct grpc_client *g, const char *name, const char *value)
{
	if (g->open || g->nmd == GRPC_MAX_MD)
		die("grpc_client_add_metadata: too late or too many");
	g->md_name[g->nmd] = xstrdup(name);
	g->md_value[g->nmd++] = xstrdup(value);
}

int grpc_client_close_send(struct grpc_client *g)
{
	if (g->closed)
		return RM_ERROR;
	g->half_close = true;
	if (g->open) {
		if (g->data_deferred) {
			g->data_deferred = false;
			nghttp2_session_resume_data(g->h2, g->stream_id);
		}
		flush(g);
	}
	return RM_OK;
}

void grpc_client_free(struct grpc_client *g)
{
	if (!g)
		return;
	for (size_t i = 0; i < g->nmd; i++) {
		free(g->md_name[i]);
		free(g->md_value[i]);
	}
	if (g->ka_timer)
		event_free(g->ka_timer);
	conn_free(g->c);
	nghttp2_session_del(g->h2);
	evbuffer_free(g->out);
	evbuffer_free(g->in);
	free(g->authority);
	free(g->path);
	free(g);
}
