/* async_http.c - main-thread HTTP/1.1 client (one request per connection). */
#include <string.h>
#include <event2/buffer.h>
#include "async_http.h"
#include "proxy/conn.h"
#include "proxy/server.h"
#include "proxy/snapshot.h"
#include "proxy/http/h1_parser.h"
#include "proxy/upstream/cluster.h"

#define MAX_HEAD 16384

struct async_http {
	struct conn *c;                 /* owned */
	struct cluster *cl;             /* ref: its TLS context is used by c */
	struct event *timer;            /* owned: timeout, and the deferred callback */
	async_http_cb cb;
	void *arg;
	struct h1_scan scan;
	struct evbuffer *body;          /* owned: response body */
	int status;
	bool head_done, finished;
	enum async_http_result res;
	enum h1_body_kind kind;
	uint64_t remaining;
	struct h1_chunked chunked;      /* H1_BODY_CHUNKED: the decoder */
	bool chunked_init;
};

static unsigned rr_next;            /* main thread: round robin across requests */

static void finish_cb(evutil_socket_t fd, short what, void *arg)
{
	struct async_http *a = arg;
	(void)fd;
	(void)what;
	if (!a->finished) {             /* the timeout fired */
		a->finished = true;
		a->res = ASYNC_HTTP_TIMEOUT;
	}
	conn_free(a->c);
	a->c = NULL;
	a->cb(a->arg, a->res, a->status, evbuffer_get_length(a->body) ? a->body : NULL);
	async_http_cancel(a);
}

/* Report res on the next loop iteration (never under the caller). */
static void finish(struct async_http *a, enum async_http_result res)
{
	if (a->finished)
		return;
	a->finished = true;
	a->res = res;
	if (a->c)
		conn_disable_read(a->c);
	struct timeval zero = { 0, 0 };
	evtimer_add(a->timer, &zero);
}

static void on_read(struct conn *c, void *arg)
{
	struct async_http *a = arg;
	struct evbuffer *in = conn_input(c);
	if (a->finished)
		return;
	if (!a->head_done) {
		size_t len = evbuffer_get_length(in);
		const char *p = (const char *)evbuffer_pullup(in, -1);
		long end = h1_head_end(&a->scan, p, len, MAX_HEAD);
		if (end == 0)
			return;
		struct h1_head head = { 0 };
		struct h1_limits lim = { MAX_HEAD, 100 };
		struct h1_error err;
		hdrs_init(&head.hdrs);
		int bad = end < 0 || h1_parse_head(H1_RESPONSE, p, (size_t)end, 0, &lim, &head, &err);
		hdrs_free(&head.hdrs);
		if (bad) {
			finish(a, ASYNC_HTTP_BAD_RESPONSE);
			return;
		}
		evbuffer_drain(in, (size_t)end);
		if (head.status < 200) {   /* 100 Continue: wait for the final answer */
			memset(&a->scan, 0, sizeof(a->scan));
			on_read(c, arg);
			return;
		}
		a->status = head.status;
		a->head_done = true;
		a->kind = head.body;
		a->remaining = head.content_length;
		if (a->kind == H1_BODY_CHUNKED) {
			struct h1_limits cl = { MAX_HEAD, 100 };
			h1_chunked_init(&a->chunked, &cl);
			a->chunked_init = true;
		}
	}
	size_t avail = evbuffer_get_length(in);
	if (a->kind == H1_BODY_NONE) {
		finish(a, ASYNC_HTTP_OK);
		return;
	}
	if (evbuffer_get_length(a->body) + avail > ASYNC_HTTP_MAX_BODY) {
		finish(a, ASYNC_HTTP_OK);   /* enough: the status is what matters */
		return;
	}
	if (a->kind == H1_BODY_LENGTH) {
		size_t take = avail < a->remaining ? avail : (size_t)a->remaining;
		evbuffer_remove_buffer(in, a->body, take);
		a->remaining -= take;
		if (!a->remaining)
			finish(a, ASYNC_HTTP_OK);
		return;
	}
	if (a->kind == H1_BODY_CHUNKED) {   /* decoded into body; ends with the last chunk */
		while (evbuffer_get_length(in) && !a->chunked.done) {
			size_t len = evbuffer_get_length(in), off = 0, dlen = 0;
			const char *p = (const char *)evbuffer_pullup(in, -1);
			struct h1_error err;
			long n = h1_chunked_feed(&a->chunked, p, len, &off, &dlen, &err);
			if (n < 0) {
				finish(a, ASYNC_HTTP_BAD_RESPONSE);
				return;
			}
			if (dlen)
				evbuffer_add(a->body, p + off, dlen);
			evbuffer_drain(in, (size_t)n);
			if (n == 0)
				break;
		}
		if (a->chunked.done)
			finish(a, ASYNC_HTTP_OK);
		return;
	}
	/* until close: keep the bytes, end at EOF */
	evbuffer_add_buffer(a->body, in);
}

static void on_event(struct conn *c, short what, void *arg)
{
	struct async_http *a = arg;
	(void)c;
	if (what & CONN_CONNECTED)
		return;
	if (what & (CONN_EOF | CONN_ERROR))
		finish(a, a->head_done && !(a->chunked_init && !a->chunked.done) ? ASYNC_HTTP_OK
										  : ASYNC_HTTP_CONNECT_FAIL);
}

static struct host *pick_host(const char *cluster, struct cluster **out)
{
	struct snapshot *snap = g_server.snap;
	struct cluster *cl = snap && cluster ? snapshot_find_cluster(snap, cluster) : NULL;
	*out = cl;
	if (!cl || !cl->hs)
		return NULL;
	const struct hostset *hs = cl->hs;
	if (hs->nactive)
		return hs->active[rr_next++ % hs->nactive];
	return hs->n ? hs->hosts[rr_next++ % hs->n] : NULL;
}

struct async_http *async_http_send(struct event_base *base, const struct async_http_req *rq,
				   struct evbuffer *body, async_http_cb cb, void *arg)
{
	struct async_http *a = xcalloc(1, sizeof(*a));
	struct cluster *cl;
	struct host *h = pick_host(rq->cluster, &cl);
	a->cb = cb;
	a->arg = arg;
	a->body = evbuffer_new();
	a->timer = evtimer_new(base, finish_cb, a);
	if (!h) {
		evbuffer_drain(body, evbuffer_get_length(body));
		finish(a, ASYNC_HTTP_NO_HOST);
		return a;
	}
	struct timeval tv = { (time_t)(rq->timeout_ms / 1000), (suseconds_t)(rq->timeout_ms % 1000) * 1000 };
	evtimer_add(a->timer, &tv);
	a->c = conn_new(base, -1);
	if (cl->tls) {   /* the cluster's transport_socket: TLS (mTLS with a certificate) */
		a->cl = cluster_ref(cl);
		conn_set_tls(a->c, cl->tls, false, NULL);
	}
	conn_setcb(a->c, on_read, NULL, on_event, a);
	conn_enable_read(a->c);
	conn_connect(a->c, (const struct sockaddr *)&h->addr, h->addrlen);
	struct evbuffer *out = conn_output(a->c);
	evbuffer_add_printf(out, "%s %s HTTP/1.1\r\nhost: %s\r\n", rq->method, rq->path, rq->host);
	if (rq->content_type)
		evbuffer_add_printf(out, "content-type: %s\r\n", rq->content_type);
	if (rq->extra_headers)
		evbuffer_add(out, rq->extra_headers, strlen(rq->extra_headers));
	evbuffer_add_printf(out, "content-length: %zu\r\nconnection: close\r\n\r\n",
			    evbuffer_get_length(body));
	evbuffer_add_buffer(out, body);
	return a;
}

void *async_http_cancel(struct async_http *a)
{
	if (!a)
		return NULL;
	void *arg = a->arg;
	conn_free(a->c);
	cluster_unref(a->cl);
	if (a->timer)
		event_free(a->timer);
	evbuffer_free(a->body);
	if (a->chunked_init)
		h1_chunked_free(&a->chunked);
	free(a);
	return arg;
}

int async_http_split_uri(const char *uri, char **authority, char **path)
{
	if (!uri || strncmp(uri, "http://", 7))
		return -1;
	const char *a = uri + 7, *slash = strchr(a, '/');
	size_t an = slash ? (size_t)(slash - a) : strlen(a);
	if (!an)
		return -1;
	*authority = xstrndup(a, an);
	*path = xstrdup(slash ? slash : "/");
	return 0;
}
