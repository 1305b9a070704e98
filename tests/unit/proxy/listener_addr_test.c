/* listener_addr_test.c - listener_filters, use_original_dst and bind_to_port
 * compile into the snapshot, and the hand-off lookup
 * (snapshot_find_listener_by_addr): exact address first, then the wildcard
 * listener of the port and family. */
#include "test.h"
#include <netinet/in.h>
#include "proxy/filter.h"
#include "proxy/config/address.h"
#include "bootstrap_helper.h"

#define TCP(prefix) \
	"    filter_chains:\n" \
	"    - filters:\n" \
	"      - name: envoy.filters.network.tcp_proxy\n" \
	"        typed_config: {\"@type\": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy, stat_prefix: " prefix ", cluster: o}\n"

static const char *const yaml =
	"static_resources:\n"
	"  clusters:\n"
	"  - {name: o, type: ORIGINAL_DST, lb_policy: CLUSTER_PROVIDED}\n"
	"  listeners:\n"
	"  - name: virtual\n"
	"    address: {socket_address: {address: 0.0.0.0, port_value: 15001}}\n"
	"    use_original_dst: true\n"
	"    listener_filters:\n"
	"    - name: envoy.filters.listener.original_dst\n"
	"      typed_config: {\"@type\": type.googleapis.com/envoy.extensions.filters.listener.original_dst.v3.OriginalDst}\n"
	TCP("v")
	"  - name: exact\n"
	"    address: {socket_address: {address: 10.0.0.1, port_value: 8080}}\n"
	"    bind_to_port: false\n"
	TCP("e")
	"  - name: wild\n"
	"    address: {socket_address: {address: 0.0.0.0, port_value: 8080}}\n"
	"    bindToPort: false\n"
	TCP("w")
	"  - name: wild6\n"
	"    address: {socket_address: {address: \"::\", port_value: 9090}}\n"
	"    bind_to_port: false\n"
	TCP("w6")
	"  - name: v6\n"
	"    address: {socket_address: {address: \"fd00::1\", port_value: 9090}}\n"
	"    bind_to_port: false\n"
	TCP("v6")
	"  - name: filters_only\n"
	"    address: {socket_address: {address: 127.0.0.1, port_value: 7000}}\n"
	"    listener_filters: [{name: envoy.filters.listener.original_dst}]\n"
	"    listener_filters_timeout: 2s\n"
	"    continue_on_listener_filters_timeout: true\n"
	TCP("f");

static const char *find(const struct snapshot *s, const char *ip, uint16_t port)
{
	struct sockaddr_storage ss;
	socklen_t len;
	if (sockaddr_parse_ip(ip, port, &ss, &len))
		return "bad ip";
	const struct listener_cfg *l = snapshot_find_listener_by_addr(s, (struct sockaddr *)&ss);
	return l ? l->name : "none";
}

TEST(listener_handoff_lookup)
{
	char err[1024];
	struct snapshot *s = test_bootstrap(yaml, err, sizeof(err));
	CHECK_STR(err, "");
	if (!s)
		return;
	CHECK_STR(find(s, "10.0.0.1", 8080), "exact");
	CHECK_STR(find(s, "10.0.0.2", 8080), "wild");
	CHECK_STR(find(s, "10.0.0.1", 8081), "none");
	CHECK_STR(find(s, "10.0.0.1", 15001), "virtual");
	CHECK_STR(find(s, "fd00::1", 9090), "v6");
	CHECK_STR(find(s, "fd00::2", 9090), "wild6");
	CHECK_STR(find(s, "10.0.0.1", 9090), "none");   /* no IPv4 wildcard on 9090 */
	CHECK_STR(find(s, "fd00::1", 8080), "none");    /* no IPv6 wildcard on 8080 */
	const struct listener_cfg *v = s->listeners[0], *e = s->listeners[1], *f = s->listeners[5];
	CHECK(v->use_original_dst && v->bind_to_port && v->nlfilters == 1);
	CHECK_STR(v->lfilters[0].ops->name, "envoy.filters.listener.original_dst");
	CHECK(!e->use_original_dst && !e->bind_to_port && e->nlfilters == 0);
	CHECK(!s->listeners[2]->bind_to_port);
	CHECK(f->nlfilters == 1 && f->lf_timeout_ms == 2000 && f->lf_continue_on_timeout);
	CHECK(v->lf_timeout_ms == 15000 && !v->lf_continue_on_timeout);
	test_bootstrap_done(s);
}

TEST(listener_filter_errors)
{
	char err[1024];
	const char *bad =
		"static_resources:\n"
		"  clusters:\n"
		"  - {name: o, type: ORIGINAL_DST, lb_policy: CLUSTER_PROVIDED}\n"
		"  listeners:\n"
		"  - name: l\n"
		"    address: {socket_address: {address: 0.0.0.0, port_value: 15001}}\n"
		"    listener_filters:\n"
		"    - name: envoy.filters.listener.proxy_protocol\n"
		"      typed_config: {\"@type\": type.googleapis.com/envoy.extensions.filters.listener.proxy_protocol.v3.ProxyProtocol}\n"
		TCP("v");
	CHECK(!test_bootstrap_ok(bad, err, sizeof(err)));
	CHECK_CONTAINS(err, "static_resources.listeners[0].listener_filters[0].typed_config: "
			    "unknown or unsupported listener filter "
			    "'type.googleapis.com/envoy.extensions.filters.listener.proxy_protocol.v3.ProxyProtocol'");
}
