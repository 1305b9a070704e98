/* dns.h - asynchronous DNS resolution (c-ares driven by libevent) for
 * STRICT_DNS / LOGICAL_DNS clusters.
 *
 * One resolver per event_base; used only from the thread running that base
 * (the main thread).  Every result is delivered through the callback from
 * the event loop, never re-entrantly from dns_resolve(), even for numeric
 * addresses and /etc/hosts hits.
 *
 * A query is live from dns_resolve() until its callback returns or it is
 * cancelled; the handle is invalid afterwards (do not cancel a query from
 * its own callback).  Callbacks may start new queries, cancel other queries
 * and free the resolver. */
#ifndef REMORA_UPSTREAM_DNS_H
#define REMORA_UPSTREAM_DNS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

struct event_base;

/* Which address families to return; Envoy's DnsLookupFamily. */
enum dns_family {
	DNS_AUTO,	  /* IPv6 if the name has any, otherwise IPv4 */
	DNS_V4_ONLY,	  /* IPv4 only */
	DNS_V6_ONLY,	  /* IPv6 only */
	DNS_V4_PREFERRED, /* IPv4 if the name has any, otherwise IPv6 */
	DNS_ALL,	  /* both: all IPv4 addresses, then all IPv6 ones */
};

/* The outcome of one query, as passed to its callback. */
struct dns_result {
	struct sockaddr_storage *addrs; /* owned by the resolver; valid during the callback only */
	size_t naddrs;			/* entries in addrs; 0 when status != 0 */
	uint32_t min_ttl_s;		/* smallest TTL of the returned records, 0 if unknown */
	int status;			/* 0 ok, or an ARES_E* code from <ares.h> */
	const char *error;		/* static text for status, e.g. "Domain name not found" */
};

/* Called once per query, from the event loop. */
typedef void (*dns_cb)(const struct dns_result *res, void *arg);

struct dns_resolver; /* one per event_base: a c-ares channel and its events */
struct dns_query;    /* handle of one pending query, for dns_cancel() */

/* Create a resolver on base.  resolvers/nresolvers: NULL/0 uses the system
 * configuration (/etc/resolv.conf); otherwise the listed servers (AF_INET or
 * AF_INET6 with port; port 0 means 53), as Envoy's
 * CaresDnsResolverConfig.resolvers.  Returns NULL with a message in err on
 * failure.  The caller frees it with dns_resolver_free(). */
struct dns_resolver *dns_resolver_new(struct event_base *base,
				      const struct sockaddr_storage *resolvers, size_t nresolvers,
				      char *err, size_t errlen);

/* Free r (NULL is fine).  Pending queries are dropped: their callbacks are
 * NOT called, and every query handle becomes invalid.  May be called from a
 * query callback. */
void dns_resolver_free(struct dns_resolver *r);

/* Set the first try's timeout (ms; c-ares doubles it each round over the
 * servers) and the number of tries; <= 0 keeps the current value (initially
 * the c-ares / resolv.conf defaults, seconds).  Rebuilds the c-ares channel,
 * so only while c-ares holds no query (a cancelled one counts until c-ares
 * finishes it): returns RM_OK, or RM_ERROR if queries are in flight or
 * c-ares failed to reinitialise (the old settings stay). */
int dns_resolver_set_timeouts(struct dns_resolver *r, int timeout_ms, int tries);

/* Resolve name (a host name or a numeric IPv4/IPv6 address) and call cb
 * (not NULL) with the addresses, each carrying port (host order).  Host names
 * go through c-ares: /etc/hosts, then DNS with the resolv.conf search list.
 * Never returns NULL and never calls cb before returning.  The handle stays
 * valid until cb runs or the query is cancelled. */
struct dns_query *dns_resolve(struct dns_resolver *r, const char *name, uint16_t port,
			      enum dns_family fam, dns_cb cb, void *arg);

/* Cancel q (NULL is fine): its callback will not be called; q is invalid
 * afterwards. */
void dns_cancel(struct dns_query *q);

/* Number of queries started and not yet delivered or cancelled (for stats
 * and tests). */
size_t dns_resolver_pending(const struct dns_resolver *r);

#endif
