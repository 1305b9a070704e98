/* dns.c - c-ares on libevent.
 *
 * c-ares tells us which sockets it wants watched through its socket-state
 * callback; we keep one libevent event per socket and one timer set from
 * ares_timeout(), and hand readiness back with ares_process_fd().  c-ares may
 * complete a query synchronously inside ares_getaddrinfo() (numeric names,
 * /etc/hosts, argument errors) or inside ares_process_fd(), so completed
 * queries are parked on a list and delivered from a separate event: user
 * callbacks never run inside c-ares, which makes it safe for them to start,
 * cancel or free anything, the resolver included.
 *
 * c-ares 1.18 cannot cancel a single query, so a cancelled in-flight query
 * stays allocated (marked cancelled) until c-ares reports it. */
#include "proxy/upstream/dns.h"

#include <arpa/inet.h>
#include <ares.h>
#include <event2/event.h>
#include <netinet/in.h>

#include "proxy/common.h"
#include "proxy/log.h"

/* Circular doubly-linked list node; a head is a node linked to itself. */
struct dns_link {
	struct dns_link *next; /* borrowed */
	struct dns_link *prev; /* borrowed */
};

struct dns_query {
	struct dns_link link;		/* in r->pending, r->done or r->running */
	struct dns_resolver *r;		/* borrowed: the resolver that owns this query */
	dns_cb cb;			/* NULL once cancelled */
	void *arg;			/* borrowed: the caller's */
	uint16_t port;			/* copied into every address */
	enum dns_family fam;		/* which families to keep */
	bool done;			/* result filled in; on r->done or r->running */
	bool cancelled;			/* in flight in c-ares but nobody wants it */
	struct sockaddr_storage *addrs; /* owned: result addresses */
	size_t naddrs;			/* entries in addrs */
	uint32_t min_ttl_s;		/* smallest TTL among addrs */
	int status;			/* ARES_SUCCESS or ARES_E* */
};

/* A socket c-ares asked us to watch. */
struct dns_sock {
	struct dns_sock *next; /* owned by the list in r->socks */
	int fd;		       /* c-ares' socket */
	struct event *ev;      /* owned: read/write interest, persistent */
};

struct dns_resolver {
	struct event_base *base;	  /* borrowed */
	ares_channel channel;		  /* owned */
	struct event *timer;		  /* owned: fires at ares_timeout() */
	struct event *dispatch;		  /* owned: delivers r->done */
	struct dns_sock *socks;		  /* owned: sockets being watched */
	struct sockaddr_storage *servers; /* owned: explicit resolvers, NULL = system */
	size_t nservers;
	int timeout_ms;		 /* per-try timeout, 0 = c-ares default */
	int tries;		 /* tries per server, 0 = c-ares default */
	size_t nlive;		 /* queries not yet delivered nor cancelled */
	struct dns_link pending; /* queries in flight in c-ares */
	struct dns_link done;	 /* completed, awaiting delivery */
	struct dns_link running; /* being delivered by dns_dispatch_cb() */
	bool destroying;	 /* inside dns_resolver_free() */
	bool dispatching;	 /* inside dns_dispatch_cb() */
	bool dead;		 /* freed from a callback; free after dispatch */
};

static void link_init(struct dns_link *h)
{
	h->next = h->prev = h;
}

static bool link_empty(const struct dns_link *h)
{
	return h->next == h;
}

static void link_append(struct dns_link *h, struct dns_link *n)
{
	n->prev = h->prev;
	n->next = h;
	h->prev->next = n;
	h->prev = n;
}

static void link_remove(struct dns_link *n)
{
	n->prev->next = n->next;
	n->next->prev = n->prev;
	n->next = n->prev = n;
}

/* Move every node of src to the end of dst; src ends empty. */
static void link_splice(struct dns_link *dst, struct dns_link *src)
{
	if (link_empty(src))
		return;
	src->next->prev = dst->prev;
	dst->prev->next = src->next;
	src->prev->next = dst;
	dst->prev = src->prev;
	link_init(src);
}

static void dns_query_free(struct dns_query *q)
{
	xfree(q->addrs);
	xfree(q);
}

static void dns_free_list(struct dns_link *h)
{
	while (!link_empty(h)) {
		struct dns_query *q = container_of(h->next, struct dns_query, link);
		link_remove(&q->link);
		dns_query_free(q);
	}
}

static void dns_update_timer(struct dns_resolver *r)
{
	struct timeval tv;

	if (!ares_timeout(r->channel, NULL, &tv)) {
		evtimer_del(r->timer);
		return;
	}
	/* ares_timeout() truncates to whole milliseconds while it expires a
	 * try only once the deadline has fully passed: without rounding up,
	 * the last sub-millisecond would be a spin of zero timeouts. */
	tv.tv_usec += 1000;
	if (tv.tv_usec >= 1000000) {
		tv.tv_sec++;
		tv.tv_usec -= 1000000;
	}
	evtimer_add(r->timer, &tv);
}

/* Socket readiness.  arg is the resolver, not the dns_sock: c-ares may close
 * this very socket (and so free its dns_sock) inside ares_process_fd(). */
static void dns_sock_cb(evutil_socket_t fd, short what, void *arg)
{
	struct dns_resolver *r = arg;

	ares_process_fd(r->channel, (what & EV_READ) ? fd : ARES_SOCKET_BAD,
			(what & EV_WRITE) ? fd : ARES_SOCKET_BAD);
	dns_update_timer(r);
}

static void dns_timer_cb(evutil_socket_t fd UNUSED, short what UNUSED, void *arg)
{
	struct dns_resolver *r = arg;

	/* No fds: only expire timed-out tries, resend or fail them. */
	ares_process_fd(r->channel, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
	dns_update_timer(r);
}

/* ARES_OPT_SOCK_STATE_CB: c-ares wants fd watched for readable/writable, or
 * (0, 0) not at all because it is about to close it. */
static void dns_sock_state_cb(void *data, ares_socket_t fd, int readable, int writable)
{
	struct dns_resolver *r = data;
	struct dns_sock **pp = &r->socks, *s;
	short what = (short)((readable ? EV_READ : 0) | (writable ? EV_WRITE : 0));

	while (*pp && (*pp)->fd != fd)
		pp = &(*pp)->next;
	s = *pp;
	if (s) {
		/* Freeing an event from inside its own callback is fine in
		 * libevent; it does not touch the event afterwards. */
		event_free(s->ev);
		s->ev = NULL;
		if (!what) {
			*pp = s->next;
			xfree(s);
			return;
		}
	} else {
		if (!what)
			return;
		s = xcalloc(1, sizeof(*s));
		s->fd = fd;
		s->next = r->socks;
		r->socks = s;
	}
	s->ev = event_new(r->base, fd, (short)(what | EV_PERSIST), dns_sock_cb, r);
	if (!s->ev || event_add(s->ev, NULL) < 0)
		die("dns: cannot watch c-ares socket %d", fd);
}

static void dns_free_socks(struct dns_resolver *r)
{
	while (r->socks) {
		struct dns_sock *s = r->socks;
		r->socks = s->next;
		if (s->ev)
			event_free(s->ev);
		xfree(s);
	}
}

/* Park q, result filled in, for delivery from the event loop. */
static void dns_complete(struct dns_query *q)
{
	struct dns_resolver *r = q->r;

	link_remove(&q->link);
	q->done = true;
	link_append(&r->done, &q->link);
	event_active(r->dispatch, EV_TIMEOUT, 1);
}

static bool dns_family_wanted(int af, enum dns_family fam, size_t nv4, size_t nv6)
{
	switch (fam) {
	case DNS_V4_ONLY:
		return af == AF_INET;
	case DNS_V6_ONLY:
		return af == AF_INET6;
	case DNS_AUTO:
		return af == (nv6 ? AF_INET6 : AF_INET);
	case DNS_V4_PREFERRED:
		return af == (nv4 ? AF_INET : AF_INET6);
	case DNS_ALL:
		return af == AF_INET || af == AF_INET6;
	}
	return false;
}

static void dns_add_addr(struct dns_query *q, const struct sockaddr *sa)
{
	struct sockaddr_storage *ss = &q->addrs[q->naddrs++];

	memset(ss, 0, sizeof(*ss));
	if (sa->sa_family == AF_INET) {
		memcpy(ss, sa, sizeof(struct sockaddr_in));
		((struct sockaddr_in *)ss)->sin_port = htons(q->port);
	} else {
		memcpy(ss, sa, sizeof(struct sockaddr_in6));
		((struct sockaddr_in6 *)ss)->sin6_port = htons(q->port);
	}
}

/* Keep the addresses of ai that q->fam asks for: one pass per family so that
 * DNS_ALL lists IPv4 first, answer order within a family. */
static void dns_fill(struct dns_query *q, int status, const struct ares_addrinfo *ai)
{
	const struct ares_addrinfo_node *n;
	static const int order[] = {AF_INET, AF_INET6};
	size_t nv4 = 0, nv6 = 0;
	bool have_ttl = false;

	q->status = status;
	if (status != ARES_SUCCESS || !ai)
		goto out;
	for (n = ai->nodes; n; n = n->ai_next) {
		if (!n->ai_addr)
			continue;
		if (n->ai_family == AF_INET && n->ai_addrlen >= sizeof(struct sockaddr_in))
			nv4++;
		else if (n->ai_family == AF_INET6 && n->ai_addrlen >= sizeof(struct sockaddr_in6))
			nv6++;
	}
	if (nv4 + nv6)
		q->addrs = xcalloc(nv4 + nv6, sizeof(*q->addrs));
	for (size_t i = 0; i < ARRAY_SIZE(order); i++) {
		int af = order[i];
		size_t want =
		    af == AF_INET ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6);

		if (!dns_family_wanted(af, q->fam, nv4, nv6))
			continue;
		for (n = ai->nodes; n; n = n->ai_next) {
			if (!n->ai_addr || n->ai_family != af || n->ai_addrlen < want)
				continue;
			dns_add_addr(q, n->ai_addr);
			uint32_t ttl = n->ai_ttl > 0 ? (uint32_t)n->ai_ttl : 0;
			if (!have_ttl || ttl < q->min_ttl_s)
				q->min_ttl_s = ttl;
			have_ttl = true;
		}
	}
out:
	if (q->status == ARES_SUCCESS && !q->naddrs)
		q->status = ARES_ENODATA; /* the name exists, not in the wanted family */
	if (q->status != ARES_SUCCESS) {
		xfree(q->addrs);
		q->addrs = NULL;
		q->naddrs = 0;
		q->min_ttl_s = 0;
	}
}

/* ares_getaddrinfo() completion; may run inside ares_getaddrinfo() itself. */
static void dns_ares_cb(void *arg, int status, int timeouts UNUSED, struct ares_addrinfo *ai)
{
	struct dns_query *q = arg;

	if (q->r->destroying) {
		/* dns_resolver_free() frees q once ares_destroy() returns. */
		goto out;
	}
	if (q->cancelled) {
		link_remove(&q->link);
		dns_query_free(q);
		goto out;
	}
	dns_fill(q, status, ai);
	dns_complete(q);
out:
	if (ai)
		ares_freeaddrinfo(ai);
}

static void dns_dispatch_cb(evutil_socket_t fd UNUSED, short what UNUSED, void *arg)
{
	struct dns_resolver *r = arg;

	/* Deliver what is done now; queries completed by these callbacks
	 * re-arm the event and wait for the next loop iteration. */
	link_splice(&r->running, &r->done);
	r->dispatching = true;
	while (!r->dead && !link_empty(&r->running)) {
		struct dns_query *q = container_of(r->running.next, struct dns_query, link);
		struct dns_result res = {
		    .addrs = q->addrs,
		    .naddrs = q->naddrs,
		    .min_ttl_s = q->min_ttl_s,
		    .status = q->status,
		    .error = q->status ? ares_strerror(q->status) : NULL,
		};

		link_remove(&q->link);
		r->nlive--;
		q->cb(&res, q->arg);
		dns_query_free(q);
	}
	r->dispatching = false;
	if (r->dead)
		xfree(r);
}

/* Build a channel from r's settings. */
static int dns_channel_new(struct dns_resolver *r, ares_channel *out, char *err, size_t errlen)
{
	struct ares_options o;
	struct ares_addr_port_node *nodes = NULL;
	ares_channel ch = NULL;
	int mask = ARES_OPT_SOCK_STATE_CB, rc;

	memset(&o, 0, sizeof(o));
	o.sock_state_cb = dns_sock_state_cb;
	o.sock_state_cb_data = r;
	if (r->timeout_ms > 0) {
		o.timeout = r->timeout_ms;
		mask |= ARES_OPT_TIMEOUTMS;
	}
	if (r->tries > 0) {
		o.tries = r->tries;
		mask |= ARES_OPT_TRIES;
	}
	rc = ares_init_options(&ch, &o, mask);
	if (rc != ARES_SUCCESS) {
		snprintf(err, errlen, "c-ares init: %s", ares_strerror(rc));
		ch = NULL;
		goto error;
	}
	if (r->nservers) {
		nodes = xcalloc(r->nservers, sizeof(*nodes));
		for (size_t i = 0; i < r->nservers; i++) {
			const struct sockaddr_storage *ss = &r->servers[i];
			struct ares_addr_port_node *n = &nodes[i];
			uint16_t port;

			if (ss->ss_family == AF_INET) {
				const struct sockaddr_in *sin = (const struct sockaddr_in *)ss;
				n->addr.addr4 = sin->sin_addr;
				port = ntohs(sin->sin_port);
			} else {
				const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)ss;
				memcpy(&n->addr.addr6, &sin6->sin6_addr, sizeof(n->addr.addr6));
				port = ntohs(sin6->sin6_port);
			}
			n->family = ss->ss_family;
			n->udp_port = n->tcp_port = port ? port : 53;
			n->next = i + 1 < r->nservers ? &nodes[i + 1] : NULL;
		}
		rc = ares_set_servers_ports(ch, nodes);
		if (rc != ARES_SUCCESS) {
			snprintf(err, errlen, "c-ares servers: %s", ares_strerror(rc));
			goto error;
		}
	}
	xfree(nodes);
	*out = ch;
	return RM_OK;
error:
	xfree(nodes);
	if (ch)
		ares_destroy(ch);
	return RM_ERROR;
}

struct dns_resolver *dns_resolver_new(struct event_base *base,
				      const struct sockaddr_storage *resolvers, size_t nresolvers,
				      char *err, size_t errlen)
{
	struct dns_resolver *r;
	int rc;

	for (size_t i = 0; i < nresolvers; i++) {
		if (resolvers[i].ss_family != AF_INET && resolvers[i].ss_family != AF_INET6) {
			snprintf(err, errlen,
				 "resolvers[%zu]: address family %d is not IPv4 or IPv6", i,
				 resolvers[i].ss_family);
			return NULL;
		}
	}
	rc = ares_library_init(ARES_LIB_INIT_ALL);
	if (rc != ARES_SUCCESS) {
		snprintf(err, errlen, "c-ares library init: %s", ares_strerror(rc));
		return NULL;
	}
	r = xcalloc(1, sizeof(*r));
	r->base = base;
	link_init(&r->pending);
	link_init(&r->done);
	link_init(&r->running);
	if (nresolvers) {
		r->servers = xcalloc(nresolvers, sizeof(*r->servers));
		memcpy(r->servers, resolvers, nresolvers * sizeof(*r->servers));
		r->nservers = nresolvers;
	}
	r->timer = evtimer_new(base, dns_timer_cb, r);
	r->dispatch = event_new(base, -1, 0, dns_dispatch_cb, r);
	if (!r->timer || !r->dispatch)
		die("dns: event_new failed");
	if (dns_channel_new(r, &r->channel, err, errlen) != RM_OK)
		goto error;
	return r;
error:
	event_free(r->timer);
	event_free(r->dispatch);
	xfree(r->servers);
	xfree(r);
	ares_library_cleanup();
	return NULL;
}

void dns_resolver_free(struct dns_resolver *r)
{
	if (!r || r->destroying)
		return;
	/* ares_destroy() reports every in-flight query as ARES_EDESTRUCTION
	 * (and closes its sockets through dns_sock_state_cb); dns_ares_cb()
	 * leaves them alone and they are freed here, so no user callback runs
	 * and a query reported twice cannot be freed twice. */
	r->destroying = true;
	ares_destroy(r->channel);
	r->channel = NULL;
	dns_free_socks(r);
	dns_free_list(&r->pending);
	dns_free_list(&r->done);
	dns_free_list(&r->running);
	r->nlive = 0;
	event_free(r->timer);
	r->timer = NULL;
	event_free(r->dispatch);
	r->dispatch = NULL;
	xfree(r->servers);
	r->servers = NULL;
	ares_library_cleanup();
	if (r->dispatching)
		r->dead = true; /* dns_dispatch_cb() is on the stack; it frees r */
	else
		xfree(r);
}

int dns_resolver_set_timeouts(struct dns_resolver *r, int timeout_ms, int tries)
{
	int old_timeout = r->timeout_ms, old_tries = r->tries;
	ares_channel ch;
	char err[128];

	if (!link_empty(&r->pending))
		return RM_ERROR;
	if (timeout_ms > 0)
		r->timeout_ms = timeout_ms;
	if (tries > 0)
		r->tries = tries;
	if (dns_channel_new(r, &ch, err, sizeof(err)) != RM_OK) {
		log_warn("dns: cannot apply timeouts: %s", err);
		r->timeout_ms = old_timeout;
		r->tries = old_tries;
		return RM_ERROR;
	}
	/* No query is in flight, so the old channel reports nothing. */
	ares_destroy(r->channel);
	r->channel = ch;
	dns_update_timer(r);
	return RM_OK;
}

/* Numeric names are answered here: c-ares would send an IPv6 literal asked
 * for as IPv4 to the DNS server as a host name.  Returns false if name is
 * not a literal. */
static bool dns_literal(struct dns_query *q, const char *name)
{
	struct sockaddr_in sin;
	struct sockaddr_in6 sin6;
	const struct sockaddr *sa;
	int af;

	memset(&sin, 0, sizeof(sin));
	memset(&sin6, 0, sizeof(sin6));
	if (inet_pton(AF_INET, name, &sin.sin_addr) == 1) {
		sin.sin_family = AF_INET;
		sa = (const struct sockaddr *)&sin;
		af = AF_INET;
	} else if (inet_pton(AF_INET6, name, &sin6.sin6_addr) == 1) {
		sin6.sin6_family = AF_INET6;
		sa = (const struct sockaddr *)&sin6;
		af = AF_INET6;
	} else {
		return false;
	}
	if (dns_family_wanted(af, q->fam, af == AF_INET, af == AF_INET6)) {
		q->addrs = xcalloc(1, sizeof(*q->addrs));
		dns_add_addr(q, sa);
		q->status = ARES_SUCCESS;
	} else {
		q->status = ARES_ENODATA;
	}
	return true;
}

struct dns_query *dns_resolve(struct dns_resolver *r, const char *name, uint16_t port,
			      enum dns_family fam, dns_cb cb, void *arg)
{
	struct dns_query *q = xcalloc(1, sizeof(*q));
	struct ares_addrinfo_hints hints;

	q->r = r;
	q->cb = cb;
	q->arg = arg;
	q->port = port;
	q->fam = fam;
	link_init(&q->link);
	link_append(&r->pending, &q->link);
	r->nlive++;

	if (!name || !*name) {
		q->status = ARES_EBADNAME;
		dns_complete(q);
		return q;
	}
	if (dns_literal(q, name)) {
		dns_complete(q);
		return q;
	}
	memset(&hints, 0, sizeof(hints));
	/* We order by family ourselves; RFC 6724 sorting would also open a
	 * UDP socket per address. */
	hints.ai_flags = ARES_AI_NOSORT;
	hints.ai_family = fam == DNS_V4_ONLY ? AF_INET : fam == DNS_V6_ONLY ? AF_INET6 : AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	ares_getaddrinfo(r->channel, name, NULL, &hints, dns_ares_cb, q);
	dns_update_timer(r);
	return q;
}

void dns_cancel(struct dns_query *q)
{
	if (!q || q->cancelled)
		return;
	q->r->nlive--;
	if (q->done) {
		link_remove(&q->link);
		dns_query_free(q);
		return;
	}
	/* Still in c-ares: dns_ares_cb() frees it when c-ares is done. */
	q->cancelled = true;
	q->cb = NULL;
}

size_t dns_resolver_pending(const struct dns_resolver *r)
{
	return r->nlive;
}
