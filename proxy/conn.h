/* conn.h - a buffered TCP connection on a libevent base (worker-only).
 *
 * Replaces libevent's bufferevent on the data path to cut system calls:
 *  - the read event stays registered (EV_PERSIST) unless the owner pauses
 *    reading for back-pressure, so there is no epoll_ctl per request;
 *  - reads go straight into the input evbuffer with readv (no FIONREAD);
 *  - writes are batched and speculative: appending to the output schedules
 *    one flush at the end of the current loop iteration (event_active, no
 *    syscall), which writes immediately; EV_WRITE is registered only when
 *    the socket cannot take everything.
 * The transport is raw TCP, or TLS (conn_set_tls): OpenSSL's record layer
 * sits between the socket and the same two evbuffers, so owners see
 * plaintext either way.  A TLS handshake runs before anything else: a client
 * sees CONN_CONNECTED only once it completed, a failed handshake is
 * CONN_ERROR (counted and logged by tls/).  The OpenSSL code is in tls/.
 *
 * Callbacks: readcb after bytes were appended to the input; writecb after a
 * flush left the output at or below the write low watermark; eventcb with
 * CONN_CONNECTED, CONN_EOF (peer closed its side; reading stops) or
 * CONN_ERROR (plus CONN_READING / CONN_WRITING).  conn_free() may be
 * called from inside any callback: the memory is released once the
 * callback returns. */
#ifndef REMORA_CONN_H
#define REMORA_CONN_H

#include <sys/socket.h>
#include <event2/event.h>
#include "common.h"

struct evbuffer;
struct conn;
struct tls_ctx;
struct tls_conn;

#define CONN_READING   0x01
#define CONN_WRITING   0x02
#define CONN_EOF       0x10
#define CONN_ERROR     0x20
#define CONN_CONNECTED 0x80

typedef void (*conn_data_cb)(struct conn *c, void *arg);
typedef void (*conn_event_cb)(struct conn *c, short what, void *arg);

struct conn {
	int fd;                          /* owned, -1 before connect */
	struct event_base *base;         /* not owned */
	struct event *rev, *wev, *fev;   /* owned: read, write, deferred flush/notify */
	struct evbuffer *in, *out;       /* owned */
	conn_data_cb readcb, writecb;
	conn_event_cb eventcb;
	void *arg;
	size_t wlowat;                   /* writecb fires when out <= wlowat after a flush */
	short pending_event;             /* deferred event to report from fev */
	unsigned in_cb;                  /* callback depth (free is deferred while > 0) */
	bool read_on;                    /* owner wants to read */
	bool rev_added, wev_added, flush_scheduled;
	bool connecting, eof, dead;
	/* TLS mode (NULL/false for raw TCP): */
	struct tls_conn *tls;            /* owned: the SSL of this connection */
	struct tls_ctx *tls_ctx;         /* not owned: set until conn_connect creates tls */
	char *tls_sni;                   /* owned, may be NULL: client SNI until connect */
	bool tls_server;                 /* accepted side */
	bool tls_hs;                     /* handshake in progress */
	bool tls_read_wants_write;       /* SSL_read needs the socket writable */
	bool tls_write_wants_read;       /* SSL_write needs the socket readable */
	bool tls_pending_read;           /* decrypted bytes wait inside OpenSSL */
	bool tls_verify_sni;             /* client: the server certificate must match tls_sni */
	/* Accepted TLS connections: called once when the handshake completed,
	 * before any plaintext is read; false closes the connection (reported
	 * as CONN_ERROR).  NULL: none.  (downstream_handshake_done.) */
	bool (*hs_done)(struct conn *c, void *arg);
	void *hs_arg;
};

/* fd >= 0: an accepted socket (made non-blocking); fd < 0: call
 * conn_connect().  Reading is off until conn_enable_read(). */
struct conn *conn_new(struct event_base *base, int fd);
/* Start a non-blocking connect; the result arrives as CONN_CONNECTED or
 * CONN_ERROR through eventcb (never from inside this call). */
void conn_connect(struct conn *c, const struct sockaddr *sa, socklen_t len);
void conn_free(struct conn *c);      /* NULL ok; closes the socket */

void conn_setcb(struct conn *c, conn_data_cb readcb, conn_data_cb writecb,
		conn_event_cb eventcb, void *arg);
void conn_enable_read(struct conn *c);
void conn_disable_read(struct conn *c);
static inline bool conn_reading(const struct conn *c) { return c->read_on; }
static inline struct evbuffer *conn_input(struct conn *c) { return c->in; }
static inline struct evbuffer *conn_output(struct conn *c) { return c->out; }
static inline int conn_fd(const struct conn *c) { return c->fd; }
static inline void conn_set_write_lowat(struct conn *c, size_t lowat) { c->wlowat = lowat; }
/* Report CONN_ERROR from the loop (e.g. after a synchronous failure). */
void conn_trigger_error(struct conn *c);
/* Half-close once the output has been written (tunnels). */
void conn_shutdown_write(struct conn *c);

/* Make c a TLS connection using context t: for an accepted socket right
 * after conn_new, for a client before conn_connect (sni: the server name to
 * send; NULL: the context's configured sni). */
void conn_set_tls(struct conn *c, struct tls_ctx *t, bool server, const char *sni);
/* Client, after conn_set_tls with an sni: the server's certificate must
 * match that name (DNS SAN, wildcards as RFC 6125) instead of the context's
 * SAN matchers (auto_san_validation). */
static inline void conn_tls_verify_sni(struct conn *c) { c->tls_verify_sni = true; }
static inline bool conn_is_tls(const struct conn *c) { return c->tls || c->tls_ctx; }
/* The TLS state for tls/ accessors (peer identity, ALPN); NULL for raw TCP
 * or before the handshake completed. */
static inline struct tls_conn *conn_tls(const struct conn *c) { return c->tls_hs ? NULL : c->tls; }

#endif
