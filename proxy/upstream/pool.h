/* pool.h - per-worker, per-host upstream connection pools.
 *
 * HTTP/1.1 (below) and HTTP/2 (multiplexed; h2_client.h) connections of a
 * host share one pool per worker, its pending queue and its circuit-breaker
 * accounting.
 *
 * Idle connections are reused (keep-alive) until the upstream idle timeout
 * or max_requests_per_connection; an idle connection that becomes readable
 * (EOF or unexpected bytes) is closed.  A busy connection belongs to exactly
 * one upstream request, which sets the conn callbacks itself. */
#ifndef REMORA_UPSTREAM_POOL_H
#define REMORA_UPSTREAM_POOL_H

#include "../conn.h"
#include "cluster.h"

enum pool_err {
	POOL_OK = 0,
	POOL_E_CONNECT_FAIL,
	POOL_E_TIMEOUT,
	POOL_E_OVERFLOW,
	/* not an error: a queued request got capacity and its connection is
	 * now connecting (uc); the final result follows through the same cb */
	POOL_E_PENDING_CONNECTING,
};

struct upstream_conn;
struct h2c_stream;
struct h2c_conn;
/* HTTP/2: a stream on a ready connection, or an error (s NULL). */
typedef void (*pool_h2_ready_cb)(void *arg, struct h2c_stream *s, enum pool_err err,
				 const char *detail);
typedef void (*pool_ready_cb)(void *arg, struct upstream_conn *uc, enum pool_err err,
			      const char *detail);

enum uc_state { UC_CONNECTING, UC_IDLE, UC_BUSY };

struct upstream_conn {
	struct conn *bev;         /* owned */
	struct pool *pool;               /* not owned */
	enum uc_state state;
	uint32_t nrequests;              /* requests sent on this connection */
	enum cb_priority prio;           /* max_connections it counts against: the
	                                    priority of the request that opened it */
	uint64_t created_ms, connect_start_ms;
	struct event *timer;             /* owned: connect timeout, then idle timeout */
	pool_ready_cb ready_cb;          /* while CONNECTING */
	void *ready_arg;
	struct upstream_conn *prev, *next; /* pool's idle list */
};

/* A request waiting for a connection (max_connections reached). */
struct pool_pending {
	pool_ready_cb cb;                /* HTTP/1 requests */
	pool_h2_ready_cb cb2;            /* HTTP/2 requests (cb NULL) */
	void *arg;
	struct pool *pool;               /* not owned */
	enum cb_priority prio;           /* the request's routing priority */
	struct pool_pending *prev, *next;
};

struct pool {
	struct host *host;               /* ref held */
	struct cluster *cl;              /* not owned; outlives the pool */
	struct worker *w;                /* not owned */
	struct upstream_conn *idle;      /* idle list (most recently used first) */
	unsigned nidle, nconns;
	struct pool_pending *pend_head, *pend_tail; /* FIFO of waiting requests */
	unsigned npending, npending_h2;
	struct h2c_conn *h2;             /* HTTP/2 connections (any state), owned */
	struct event *dispatch;          /* owned: hands freed capacity to pending requests */
	bool orphan;                     /* host left the host set: free when empty */
	char *sni;                       /* owned, may be NULL: the SNI every connection of
					    this pool sends (auto_sni; NULL: the cluster's) */
	struct pool *next_sni;           /* the host's next pool on this worker (other SNI) */
};

/* Get a connection to h for a request of routing priority prio (whose
 * circuit-breaker thresholds apply).  If an idle one exists it is returned in *out (state
 * BUSY) and RM_OK is returned; otherwise a connect starts, the connecting
 * connection is returned in *out, RM_AGAIN is returned, and cb runs later
 * (never from inside pool_get) with the connection (BUSY) or an error (the
 * connection is then already freed).  Cancel a pending connect with
 * pool_conn_close(*out).  sni (auto_sni; NULL: the cluster's own): the
 * host has one pool per SNI on each worker, so a connection is only reused
 * for requests naming the same server (a short list scan, no allocation
 * once the pool exists). */
int pool_get(struct worker *w, struct cluster *cl, struct host *h, const char *sni,
	     enum cb_priority prio, pool_ready_cb cb, void *arg, struct upstream_conn **out,
	     struct pool_pending **pend);
/* The circuit breakers: with max_connections reached cluster-wide, the
 * request is queued (RM_AGAIN, *out NULL, *pend set; cb runs when a
 * connection frees up) unless max_pending_requests is reached too, in which
 * case RM_ERROR is returned (overflow, nothing queued).  Cancel a queued
 * request with pool_pending_cancel(). */
void pool_pending_cancel(struct pool_pending *pp);
/* HTTP/2: a stream to h.  RM_OK: *out is a new stream on a ready connection
 * with room.  RM_AGAIN: the request waits in the pending queue (*pend) for a
 * connection to become ready or a stream to free up (a new connection opens
 * when the connecting ones cannot take it and max_connections allows); cb
 * runs later with the stream or an error.  RM_ERROR: max_pending_requests
 * overflow.  Cancel with pool_pending_cancel(). */
int pool_get_h2(struct worker *w, struct cluster *cl, struct host *h, const char *sni,
		enum cb_priority prio, pool_h2_ready_cb cb, void *arg, struct h2c_stream **out,
		struct pool_pending **pend);

/* For h2_client.c: connection accounting shared with HTTP/1. */
void pool_cx_opened(struct pool *p, bool h2);
void pool_cx_closed(struct pool *p, enum cb_priority prio, uint64_t created_ms, bool remote);
/* Capacity changed (connection ready, stream done, connection gone):
 * serve waiting requests from the loop. */
void pool_kick(struct pool *p);
/* An HTTP/2 connection failed to connect: fail up to n waiting HTTP/2
 * requests with err (the ones it was expected to take). */
void pool_h2_fail_pending(struct pool *p, unsigned n, enum pool_err err, const char *detail);
/* Done with a BUSY connection: back to the idle list if reusable, else closed. */
void pool_release(struct upstream_conn *uc, bool reusable);
/* Close and free a connection in any state (local close). */
void pool_conn_close(struct upstream_conn *uc, bool remote);
/* The host left worker w's host set: close its idle connections and free
 * the pool once its busy ones are done. */
void pool_orphan(struct worker *w, struct host *h);
/* Worker shutdown: close idle connections of every pool of this worker. */
void pool_close_idle_all(struct worker *w, struct cluster *cl);

#endif
