/* original_dst.c - envoy.filters.listener.original_dst.
 *
 * A connection that iptables REDIRECTed to the proxy (remora-init) arrives
 * with the proxy's port as its local address; the kernel's connection
 * tracking still knows where it was going.  This filter asks for it
 * (SO_ORIGINAL_DST, IP6T_SO_ORIGINAL_DST for IPv6) and restores it as the
 * connection's local address, so filter-chain matching (destination_port),
 * use_original_dst hand-off and ORIGINAL_DST clusters see the original
 * destination.  A socket that was not redirected (no conntrack entry) is left
 * as it is, as Envoy does. */
#include <errno.h>
#include <netinet/in.h>
#include <linux/netfilter_ipv4.h>
#include "proxy/filter.h"
#include "proxy/snapshot.h"

#ifndef IP6T_SO_ORIGINAL_DST
#define IP6T_SO_ORIGINAL_DST 80   /* linux/netfilter_ipv6/ip6_tables.h (clashes with netinet/in.h) */
#endif

#define ORIGINAL_DST_TYPE "type.googleapis.com/envoy.extensions.filters.listener.original_dst.v3.OriginalDst"

static char original_dst_cfg;   /* the filter has no settings: a non-NULL token */

static void *original_dst_parse(struct cfg_ctx *c, const json_t *tc, struct build_ctx *b)
{
	/* traffic_direction only matters on Windows (HNS redirection) */
	static const char *const f[] = { "traffic_direction", NULL };
	static const char *const dirs[] = { "UNSPECIFIED", "INBOUND", "OUTBOUND" };
	int d;
	(void)b;
	if (tc && (cfg_expect_object(c, tc) || cfg_check_fields(c, tc, f) ||
		   cfg_enum(c, tc, "traffic_direction", dirs, 3, &d)))
		return NULL;
	return &original_dst_cfg;
}

static void original_dst_free(void *cfg)
{
	(void)cfg;
}

static enum lf_status original_dst_on_accept(struct listener_accept *a, const void *cfg,
					     struct worker *w)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);
	int rc;
	(void)cfg;
	(void)w;
	memset(&ss, 0, sizeof(ss));
	if (a->local.ss_family == AF_INET)
		rc = getsockopt(a->fd, SOL_IP, SO_ORIGINAL_DST, &ss, &len);
	else if (a->local.ss_family == AF_INET6)
		rc = getsockopt(a->fd, SOL_IPV6, IP6T_SO_ORIGINAL_DST, &ss, &len);
	else
		return LF_CONTINUE;
	if (rc < 0 || (ss.ss_family != AF_INET && ss.ss_family != AF_INET6))
		return LF_CONTINUE;   /* not redirected: keep the local address */
	a->local = ss;
	a->locallen = ss.ss_family == AF_INET ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6);
	a->local_restored = true;
	return LF_CONTINUE;
}

const struct listener_filter_ops original_dst_listener_filter_ops = {
	.name = "envoy.filters.listener.original_dst",
	.type_url = ORIGINAL_DST_TYPE,
	.parse_config = original_dst_parse,
	.free_config = original_dst_free,
	.on_accept = original_dst_on_accept,
};
