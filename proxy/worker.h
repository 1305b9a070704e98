/* worker.h - a worker thread: its event loop, listeners, connections.
 *
 * A connection never moves between workers; workers never lock on the
 * request path.  The main thread talks to a worker only through
 * worker_post(): a closure queued under a mutex and run on the worker's
 * loop (woken through an eventfd; worker bases run without libevent locks). */
#ifndef REMORA_WORKER_H
#define REMORA_WORKER_H

#include <pthread.h>
#include <event2/event.h>
#include <event2/listener.h>
#include "snapshot.h"

struct downstream;
struct worker;
struct lf_wait;

#define LF_PEEK_MAX (64 * 1024)           /* largest listener-filter peek (TLS ClientHello) */

struct worker_msg {
	void (*fn)(struct worker *w, void *arg);
	void *arg;
	struct worker_msg *next;
};

struct worker_listener {
	struct evconnlistener *evl;        /* owned */
	struct listener_cfg *cfg;          /* in w->snap */
	struct worker *w;
};

struct worker {
	unsigned id;                       /* 0..n-1 */
	unsigned shard;                    /* stats shard: id + 1 */
	pthread_t thread;
	struct event_base *base;           /* owned */
	struct snapshot *snap;             /* current (ref) */
	struct event *msg_ev;              /* owned; wakes the loop for messages */
	int efd;                           /* owned eventfd behind msg_ev */
	pthread_mutex_t mq_lock;
	struct worker_msg *mq_head, *mq_tail;
	struct worker_listener *listeners; /* owned [nlisteners] */
	size_t nlisteners;
	struct downstream *conns;          /* intrusive list of live downstream connections */
	long nconns;                       /* atomic read by main for drain/stats */
	bool draining;                     /* stop keep-alive, close idle */
	unsigned drain_dirs;               /* WDRAIN_DIR bits: listeners whose connections drain */
	struct lf_wait *lf_waits;          /* sockets waiting in listener filters (owned list) */
	uint8_t *lf_buf;                   /* owned [LF_PEEK_MAX]: inspectors' peek buffer */
	struct event_base *main_base;      /* not owned */
	uint64_t ct_ms[8];                 /* common-timeout durations registered... */
	const struct timeval *ct_tv[8];    /* ...and libevent's magic timevals for them */
	unsigned nct;
	struct event *ldrain_ev;           /* owned, lazily: closes connections of replaced
					      listeners at their drain deadline */
};

/* Arm ev (on w's base) to fire in ms.  Durations shared by many events (the
 * configured route and stream timeouts) use libevent common timeouts, so
 * thousands of equal timers cost O(1) each instead of heap operations. */
void worker_timer_add(struct worker *w, struct event *ev, uint64_t ms);

void worker_init(struct worker *w, unsigned id);
int worker_start(struct worker *w);
/* Queue fn(w, arg) on w's loop.  Any thread. */
void worker_post(struct worker *w, void (*fn)(struct worker *w, void *arg), void *arg);
/* Run fn on the main thread's loop (from a worker). */
void main_post(void (*fn)(void *arg), void *arg);

/* Worker side handlers for messages from main. */
void worker_msg_stop_listeners(struct worker *w, void *arg);
void worker_msg_drain(struct worker *w, void *arg);
/* Partial drain (admin /drain_listeners, SIGTERM of a sidecar): arg is
 * (void *)(uintptr_t) of WDRAIN_* bits.  Stops the selected listeners and,
 * with WDRAIN_CONNS, asks their connections to finish (Connection: close,
 * GOAWAY) and closes their sockets still in listener filters; the other
 * listeners keep serving. */
#define WDRAIN_DIR(d)     (1u << (d))      /* select listeners of enum listener_direction d */
#define WDRAIN_DIRS       0xffu
#define WDRAIN_LISTENERS  0x100u           /* stop accepting on the selected listeners */
#define WDRAIN_CONNS      0x200u           /* drain their connections */
void worker_msg_drain_some(struct worker *w, void *arg);
void worker_msg_exit(struct worker *w, void *arg);
/* xDS: run on snapshot arg (a reference), keeping shared listeners' sockets. */
void worker_msg_set_snapshot(struct worker *w, void *arg);

/* Thread-local current worker (NULL on the main thread). */
extern __thread struct worker *current_worker;

#endif
