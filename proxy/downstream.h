/* downstream.h - an accepted connection, as seen by network filters.
 *
 * The terminal network filter embeds struct downstream first in its own
 * connection struct and sets ops.  Closing is always deferred to a safe point
 * with downstream_close(); the owning filter's ops->destroy frees its state. */
#ifndef REMORA_DOWNSTREAM_H
#define REMORA_DOWNSTREAM_H

#include <sys/socket.h>
#include "conn.h"
#include "snapshot.h"

struct worker;
struct downstream;

struct downstream_ops {
	/* Server is draining: finish what is in flight, then close. */
	void (*drain)(struct downstream *d);
	/* Free the filter's state (the conn is freed by the caller). */
	void (*destroy)(struct downstream *d);
};

struct downstream {
	const struct downstream_ops *ops;
	struct worker *w;                    /* not owned */
	struct conn *bev;             /* owned */
	struct snapshot *snap;               /* ref held */
	struct listener_cfg *lcfg;           /* in snap */
	const struct filter_chain *fc;       /* in snap: the chain it was accepted on */
	struct sockaddr_storage peer, local; /* local: the original destination when
						local_restored (listener filter original_dst) */
	bool local_restored;
	char peer_ip[64];                    /* textual peer address */
	uint64_t start_ms;
	struct downstream *prev, *next;      /* worker's list */
	bool closed;
	bool draining;                       /* this connection was asked to drain (its
						listener drains while others keep serving) */
	uint64_t drain_deadline_ms;          /* its listener was replaced or removed (xDS):
						closed at this time (now_ms) if still open; 0 none */
	uint64_t drain_goaway_ms;            /* ...and until this time (half the drain time)
						HTTP/2 gets no GOAWAY yet (ops->drain is called
						again then); 0: due */
	struct listener_cfg *cx_charged;     /* listener whose cx_open counts this connection
						(the accepting one; NULL: no limit) */
};

/* What the accept path hands to a network filter's on_accept. */
struct accept_info {
	struct worker *w;
	struct conn *bev;             /* ownership passes to the filter */
	struct listener_cfg *lcfg;
	const struct sockaddr *peer;
	socklen_t peerlen;
	const struct sockaddr_storage *local; /* the connection's local address, or the
						 restored original destination; NULL: ask
						 the socket */
	bool local_restored;                 /* local is the original destination */
	const struct filter_chain *fc;       /* the matched filter chain (in the snapshot) */
	const char *server_name;             /* SNI seen by tls_inspector, "" if none */
	struct listener_cfg *cx_charged;     /* see struct downstream */
};

/* Should the connection stop keep-alive / send GOAWAY: the whole worker
 * drains, or this connection's listener does. */
static inline bool downstream_draining(const struct downstream *d);

/* Allocate a downstream of size bytes (>= sizeof(struct downstream)) owning
 * bev; links it into the worker's list and counts it. */
struct downstream *downstream_new(size_t size, const struct accept_info *ai);
/* Close now: unlink, free bev, call ops->destroy, free.  Must not be called
 * while the caller will still touch d. */
void downstream_close(struct downstream *d);
/* The peer's TLS identity (SPIFFE ID, else DNS SAN, else subject) once the
 * handshake is done; NULL on plaintext / no client certificate (tls/tls_io.c). */
const char *downstream_peer_principal(const struct downstream *d);

#include "worker.h"
static inline bool downstream_draining(const struct downstream *d)
{
	return d->draining || d->w->draining || (d->w->drain_dirs & (1u << d->lcfg->direction));
}

#endif
