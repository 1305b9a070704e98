/* conn.c - buffered TCP connections with speculative, batched writes. */
#include "conn.h"

#include <errno.h>
#include <fcntl.h>
#include <unistd.h>
#include <sys/uio.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <event2/buffer.h>
#include "tls/tls.h"

#define CONN_READ_CHUNK (64 * 1024)

static void conn_release(struct conn *c)
{
	tls_conn_free(c->tls);
	free(c->tls_sni);
	if (c->rev)
		event_free(c->rev);
	if (c->wev)
		event_free(c->wev);
	if (c->fev)
		event_free(c->fev);
	evbuffer_free(c->in);
	evbuffer_free(c->out);
	if (c->fd >= 0)
		close(c->fd);
	free(c);
}

/* Leave a callback section; free if the owner freed us meanwhile. */
static inline bool leave(struct conn *c)
{
	if (--c->in_cb == 0 && c->dead) {
		conn_release(c);
		return true;
	}
	return c->dead;
}

static void report(struct conn *c, short what)
{
	if (!c->dead && c->eventcb)
		c->eventcb(c, what, c->arg);
}

static void update_read(struct conn *c)
{
	bool want = (c->read_on || c->tls_hs || c->tls_write_wants_read) && !c->eof &&
		    !c->connecting && c->fd >= 0 && !c->dead;
	if (want && !c->rev_added) {
		event_add(c->rev, NULL);
		c->rev_added = true;
	} else if (!want && c->rev_added) {
		event_del(c->rev);
		c->rev_added = false;
	}
}

static bool tls_flush(struct conn *c);

/* The write event, armed while output waits for the socket (or the
 * connect / TLS handshake waits for writability). */
static void wev_on(struct conn *c)
{
	if (!c->wev_added) {
		event_add(c->wev, NULL);
		c->wev_added = true;
	}
}

static void wev_off(struct conn *c)
{
	if (c->wev_added) {
		event_del(c->wev);
		c->wev_added = false;
	}
}

/* Write as much as the socket takes.  Returns false if the conn failed. */
static bool do_flush(struct conn *c)
{
	if (c->tls)
		return tls_flush(c);
	while (evbuffer_get_length(c->out)) {
		int n = evbuffer_write(c->out, c->fd);
		if (n > 0)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			wev_on(c);
			return true;
		}
		if (n < 0 && errno == EINTR)
			continue;
		report(c, CONN_ERROR | CONN_WRITING);
		return false;
	}
	wev_off(c);
	return true;
}

static void after_flush(struct conn *c)
{
	if (!c->dead && c->writecb && evbuffer_get_length(c->out) <= c->wlowat)
		c->writecb(c, c->arg);
}

static bool tls_handshake_step(struct conn *c);
static void tls_read(struct conn *c);

static void fev_cb(evutil_socket_t fd, short what, void *arg)
{
	struct conn *c = arg;
	(void)fd;
	(void)what;
	c->in_cb++;
	c->flush_scheduled = false;
	if (c->pending_event) {
		short ev = c->pending_event;
		c->pending_event = 0;
		if (ev & CONN_CONNECTED)
			c->connecting = false;
		if ((ev & CONN_CONNECTED) && c->tls) {
			tls_handshake_step(c);   /* CONNECTED comes after the handshake */
		} else {
			report(c, ev);
			if (!c->dead && (ev & CONN_CONNECTED))
				update_read(c);
		}
	}
	if (!c->dead && c->tls_pending_read)
		tls_read(c);
	if (!c->dead && !c->connecting && c->fd >= 0 && evbuffer_get_length(c->out)) {
		if (do_flush(c))
			after_flush(c);
	}
	leave(c);
}

static void schedule(struct conn *c)
{
	if (!c->flush_scheduled && !c->dead) {
		c->flush_scheduled = true;
		event_active(c->fev, EV_TIMEOUT, 0);
	}
}

static void out_cb(struct evbuffer *buf, const struct evbuffer_cb_info *info, void *arg)
{
	struct conn *c = arg;
	(void)buf;
	if (info->n_added && !c->connecting && !c->wev_added)
		schedule(c);
}

/* Reads land in a small reserved chunk of the input (zero-copy for typical
 * requests) and overflow into a per-thread scratch buffer that is appended
 * only when used, so a read never allocates a large chain it won't fill. */
static __thread char scratch[CONN_READ_CHUNK];

static void read_cb(evutil_socket_t fd, short what, void *arg)
{
	struct conn *c = arg;
	struct evbuffer_iovec v[2];
	struct iovec iov[2];
	(void)what;
	if (c->tls) {
		c->in_cb++;
		if (c->tls_hs)
			tls_handshake_step(c);
		if (!c->dead && c->tls_write_wants_read) {
			c->tls_write_wants_read = false;
			update_read(c);
			if (do_flush(c))
				after_flush(c);
		}
		if (!c->dead && !c->tls_hs && c->read_on)
			tls_read(c);
		leave(c);
		return;
	}
	if (evbuffer_reserve_space(c->in, 4096, v, 1) != 1)
		die("evbuffer_reserve_space");
	iov[0].iov_base = v[0].iov_base;
	iov[0].iov_len = v[0].iov_len;
	iov[1].iov_base = scratch;
	iov[1].iov_len = sizeof(scratch);
	ssize_t n = readv(fd, iov, 2);
	if (n < 0) {
		evbuffer_commit_space(c->in, v, 0);
		if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
			return;
		c->in_cb++;
		c->read_on = false;
		update_read(c);
		report(c, CONN_ERROR | CONN_READING);
		leave(c);
		return;
	}
	size_t first = MIN((size_t)n, v[0].iov_len);
	v[0].iov_len = first;
	evbuffer_commit_space(c->in, v, 1);
	if ((size_t)n > first)
		evbuffer_add(c->in, scratch, (size_t)n - first);
	c->in_cb++;
	if (n == 0) {
		c->eof = true;
		update_read(c);
		report(c, CONN_EOF | CONN_READING);
	} else if (c->readcb) {
		c->readcb(c, c->arg);
	}
	leave(c);
}

static void write_cb(evutil_socket_t fd, short what, void *arg)
{
	struct conn *c = arg;
	(void)fd;
	(void)what;
	c->in_cb++;
	if (c->connecting) {
		int err = 0;
		socklen_t len = sizeof(err);
		getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
		event_del(c->wev);
		c->wev_added = false;
		if (err) {
			errno = err;
			report(c, CONN_ERROR | CONN_WRITING);
			leave(c);
			return;
		}
		int one = 1;
		setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		c->connecting = false;
		if (c->tls) {
			tls_handshake_step(c);
			leave(c);
			return;
		}
		report(c, CONN_CONNECTED);
		if (!c->dead) {
			update_read(c);
			if (evbuffer_get_length(c->out))
				schedule(c);
		}
		leave(c);
		return;
	}
	if (c->tls && c->tls_read_wants_write) {
		c->tls_read_wants_write = false;
		tls_read(c);
		if (c->dead) {
			leave(c);
			return;
		}
	}
	if (do_flush(c))
		after_flush(c);
	leave(c);
}

static void conn_events(struct conn *c)
{
	c->rev = event_new(c->base, c->fd, EV_READ | EV_PERSIST, read_cb, c);
	c->wev = event_new(c->base, c->fd, EV_WRITE | EV_PERSIST, write_cb, c);
}

struct conn *conn_new(struct event_base *base, int fd)
{
	struct conn *c = xcalloc(1, sizeof(*c));
	c->base = base;
	c->fd = fd;
	c->in = evbuffer_new();
	c->out = evbuffer_new();
	if (!c->in || !c->out)
		die("evbuffer_new");
	evbuffer_add_cb(c->out, out_cb, c);
	c->fev = event_new(base, -1, 0, fev_cb, c);
	if (fd >= 0)
		conn_events(c);   /* accepted sockets arrive non-blocking */
	return c;
}

void conn_connect(struct conn *c, const struct sockaddr *sa, socklen_t len)
{
	c->fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	c->connecting = true;
	if (c->fd < 0) {
		conn_trigger_error(c);
		return;
	}
	conn_events(c);
	if (c->tls_ctx) {
		c->tls = tls_conn_new(c->tls_ctx, c->fd, false, c->tls_sni, sa);
		if (c->tls_verify_sni && c->tls_sni)
			tls_conn_set_verify_host(c->tls, c->tls_sni);
		c->tls_hs = true;
		c->tls_ctx = NULL;
	}
	if (connect(c->fd, sa, len) == 0) {
		int one = 1;
		setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		c->pending_event = CONN_CONNECTED;   /* reported from the loop */
		schedule(c);
		return;
	}
	if (errno == EINPROGRESS) {
		event_add(c->wev, NULL);
		c->wev_added = true;
		return;
	}
	conn_trigger_error(c);
}

void conn_trigger_error(struct conn *c)
{
	c->pending_event = CONN_ERROR | CONN_WRITING;
	schedule(c);
}

void conn_free(struct conn *c)
{
	if (!c || c->dead)
		return;
	c->dead = true;
	if (c->rev_added)
		event_del(c->rev);
	if (c->wev_added)
		event_del(c->wev);
	event_del(c->fev);
	c->rev_added = c->wev_added = false;
	if (!c->in_cb)
		conn_release(c);
}

void conn_setcb(struct conn *c, conn_data_cb readcb, conn_data_cb writecb,
		conn_event_cb eventcb, void *arg)
{
	c->readcb = readcb;
	c->writecb = writecb;
	c->eventcb = eventcb;
	c->arg = arg;
}

void conn_enable_read(struct conn *c)
{
	c->read_on = true;
	update_read(c);
	if (c->tls && !c->tls_hs && !c->dead && tls_io_pending(c->tls)) {
		c->tls_pending_read = true;   /* no socket event will announce these */
		schedule(c);
	}
}

void conn_disable_read(struct conn *c)
{
	c->read_on = false;
	update_read(c);
}

void conn_shutdown_write(struct conn *c)
{
	if (c->tls)
		tls_io_shutdown(c->tls);
	if (c->fd >= 0)
		shutdown(c->fd, SHUT_WR);
}

/* ---- TLS mode ------------------------------------------------------------------ */

void conn_set_tls(struct conn *c, struct tls_ctx *t, bool server, const char *sni)
{
	c->tls_server = server;
	if (!server) {
		c->tls_ctx = t;   /* the SSL is made once the socket exists */
		c->tls_sni = sni ? xstrdup(sni) : NULL;
		return;
	}
	struct sockaddr_storage peer;
	socklen_t pl = sizeof(peer);
	bool have = getpeername(c->fd, (struct sockaddr *)&peer, &pl) == 0;
	c->tls = tls_conn_new(t, c->fd, true, NULL, have ? (struct sockaddr *)&peer : NULL);
	c->tls_hs = true;
	update_read(c);
}

/* Advance the handshake (the caller holds in_cb).  False: failed, reported. */
static bool tls_handshake_step(struct conn *c)
{
	switch (tls_io_handshake(c->tls)) {
	case TLS_IO_OK:
		c->tls_hs = false;
		wev_off(c);
		if (c->tls_server && c->hs_done && !c->hs_done(c, c->hs_arg)) {
			c->read_on = false;
			update_read(c);
			report(c, CONN_ERROR | CONN_READING);
			return false;
		}
		if (!c->tls_server)
			report(c, CONN_CONNECTED);
		if (c->dead)
			return true;
		update_read(c);
		/* a TLS 1.3 client's first request may arrive with its Finished:
		 * it is inside OpenSSL already, no socket event will follow */
		if (c->read_on)
			c->tls_pending_read = true;
		schedule(c);
		return true;
	case TLS_IO_WANT_READ:
		wev_off(c);
		update_read(c);
		return true;
	case TLS_IO_WANT_WRITE:
		wev_on(c);
		return true;
	default:
		c->tls_hs = false;
		c->read_on = false;
		update_read(c);
		report(c, CONN_ERROR | CONN_READING);
		return false;
	}
}

/* Decrypt what is available into the input (the caller holds in_cb). */
static void tls_read(struct conn *c)
{
	size_t n = 0;
	c->tls_pending_read = false;
	if (!c->read_on || c->eof || c->tls_hs)
		return;
	enum tls_io r = tls_io_read(c->tls, c->in, CONN_READ_CHUNK, &n);
	if (r == TLS_IO_WANT_WRITE && !c->wev_added) {
		c->tls_read_wants_write = true;
		event_add(c->wev, NULL);
		c->wev_added = true;
	}
	if (n && c->readcb)
		c->readcb(c, c->arg);
	if (c->dead)
		return;
	if (r == TLS_IO_EOF) {
		c->eof = true;
		update_read(c);
		report(c, CONN_EOF | CONN_READING);
	} else if (r == TLS_IO_ERROR) {
		c->read_on = false;
		update_read(c);
		report(c, CONN_ERROR | CONN_READING);
	} else if (r == TLS_IO_OK && c->read_on && tls_io_pending(c->tls)) {
		c->tls_pending_read = true;   /* stopped at the chunk limit */
		schedule(c);
	}
}

static bool tls_flush(struct conn *c)
{
	if (c->tls_hs)
		return tls_handshake_step(c);
	if (c->fd < 0 || c->connecting)
		return true;
	switch (tls_io_write(c->tls, c->out)) {
	case TLS_IO_OK:
		if (c->wev_added && !c->tls_read_wants_write) {
			event_del(c->wev);
			c->wev_added = false;
		}
		return true;
	case TLS_IO_WANT_WRITE:
		wev_on(c);
		return true;
	case TLS_IO_WANT_READ:
		c->tls_write_wants_read = true;
		update_read(c);
		return true;
	default:
		report(c, CONN_ERROR | CONN_WRITING);
		return false;
	}
}
