/* filter_chain_match_test.c - filter_chain_match compiles from a bootstrap
 * and fcm_select picks chains in Envoy's precedence order (most specific
 * match per level, no backtracking), falling back to default_filter_chain. */
#include "test.h"
#include "proxy/filter_chain_match.h"
#include "proxy/config/address.h"
#include "bootstrap_helper.h"

#define TCP(prefix) \
	"      filters:\n" \
	"      - name: envoy.filters.network.tcp_proxy\n" \
	"        typed_config: {\"@type\": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy, stat_prefix: " prefix ", cluster: c}\n"

#define HEAD \
	"static_resources:\n" \
	"  clusters:\n" \
	"  - {name: c, load_assignment: {cluster_name: c, endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: 1}}}}]}]}}\n" \
	"  listeners:\n" \
	"  - name: l\n" \
	"    address: {socket_address: {address: 0.0.0.0, port_value: 15006}}\n"

static const char *const yaml = HEAD
	"    filter_chains:\n"
	"    - name: port8080\n"
	"      filter_chain_match: {destination_port: 8080}\n" TCP("p8080")
	"    - name: port8080_tls\n"
	"      filter_chain_match: {destination_port: 8080, transport_protocol: tls}\n" TCP("p8080tls")
	"    - name: sni_exact\n"
	"      filter_chain_match: {server_names: [api.example.com], transport_protocol: tls}\n" TCP("se")
	"    - name: sni_wild\n"
	"      filter_chain_match: {server_names: [\"*.example.com\"]}\n" TCP("sw")
	"    - name: sni_wild_long\n"
	"      filter_chain_match: {server_names: [\"*.b.example.com\"]}\n" TCP("swl")
	"    - name: h2\n"
	"      filter_chain_match: {application_protocols: [h2, h2c]}\n" TCP("h2")
	"    - name: h1\n"
	"      filter_chain_match: {application_protocols: [http/1.1]}\n" TCP("h1")
	"    - name: net10\n"
	"      filter_chain_match: {prefix_ranges: [{address_prefix: 10.0.0.0, prefix_len: 8}]}\n" TCP("n10")
	"    - name: net10_1\n"
	"      filter_chain_match: {prefix_ranges: [{address_prefix: 10.1.0.0, prefix_len: 16}]}\n" TCP("n101")
	"    - name: src_local\n"
	"      filter_chain_match: {destination_port: 9000, source_type: SAME_IP_OR_LOOPBACK}\n" TCP("sl")
	"    - name: src_any_9000\n"
	"      filter_chain_match: {destination_port: 9000}\n" TCP("sa")
	"    - name: src_range\n"
	"      filter_chain_match: {destination_port: 9100, source_prefix_ranges: [{address_prefix: 192.168.0.0, prefix_len: 16}]}\n" TCP("sr")
	"    - name: src_port\n"
	"      filter_chain_match: {destination_port: 9100, source_prefix_ranges: [{address_prefix: 192.168.0.0, prefix_len: 16}], source_ports: [5555]}\n" TCP("sp")
	"    - name: catch_all\n" TCP("all")
	"    default_filter_chain:\n"
	"      name: default\n" TCP("def");

struct conn {
	const char *dst;
	uint16_t dport;
	const char *src;
	uint16_t sport;
	const char *sni;
	const char *tp;
	const char *alpn;   /* wire format */
};

static const char *pick(const struct listener_cfg *l, struct conn c)
{
	struct sockaddr_storage d, s;
	socklen_t len;
	sockaddr_parse_ip(c.dst, c.dport, &d, &len);
	sockaddr_parse_ip(c.src ? c.src : "203.0.113.9", c.sport ? c.sport : 40000, &s, &len);
	struct fcm_input in = { (struct sockaddr *)&d, (struct sockaddr *)&s, c.sni,
				c.tp ? c.tp : "raw_buffer", (const uint8_t *)c.alpn,
				c.alpn ? strlen(c.alpn) : 0 };
	long i = fcm_select(l->chain_match, l->nchains, &in);
	if (i < 0)
		return l->default_chain ? "default" : "none";
	static char buf[64];
	/* the chain's stat prefix is not kept; identify chains by index */
	static const char *const names[] = { "port8080", "port8080_tls", "sni_exact", "sni_wild",
					     "sni_wild_long", "h2", "h1", "net10", "net10_1",
					     "src_local", "src_any_9000", "src_range", "src_port",
					     "catch_all" };
	snprintf(buf, sizeof(buf), "%s", (size_t)i < ARRAY_SIZE(names) ? names[i] : "?");
	return buf;
}

TEST(filter_chain_match_precedence)
{
	char err[512];
	struct snapshot *s = test_bootstrap(yaml, err, sizeof(err));
	CHECK_STR(err, "");
	if (!s)
		return;
	const struct listener_cfg *l = s->listeners[0];
	CHECK_INT(l->nchains, 14);
	CHECK(l->default_chain != NULL);
	/* destination port beats everything after it, transport refines it */
	CHECK_STR(pick(l, (struct conn){ .dst = "10.1.2.3", .dport = 8080 }), "port8080");
	CHECK_STR(pick(l, (struct conn){ .dst = "10.1.2.3", .dport = 8080, .tp = "tls", .sni = "api.example.com" }),
		  "port8080_tls");
	/* server names: exact > longest wildcard > shorter wildcard > none */
	CHECK_STR(pick(l, (struct conn){ .dst = "1.2.3.4", .dport = 443, .tp = "tls", .sni = "api.example.com" }),
		  "sni_exact");
	CHECK_STR(pick(l, (struct conn){ .dst = "1.2.3.4", .dport = 443, .sni = "x.b.example.com" }), "sni_wild_long");
	CHECK_STR(pick(l, (struct conn){ .dst = "1.2.3.4", .dport = 443, .sni = "x.c.example.com" }), "sni_wild");
	/* wildcard does not match the bare domain; no backtracking: the exact
	 * name wins the SNI level, then fails transport -> no chain */
	CHECK_STR(pick(l, (struct conn){ .dst = "1.2.3.4", .dport = 443, .sni = "example.com" }), "catch_all");
	CHECK_STR(pick(l, (struct conn){ .dst = "1.2.3.4", .dport = 443, .sni = "api.example.com" }), "default");
	/* application protocols, in the client's order */
	CHECK_STR(pick(l, (struct conn){ .dst = "1.2.3.4", .dport = 80, .alpn = "\x08http/1.1" }), "h1");
	CHECK_STR(pick(l, (struct conn){ .dst = "1.2.3.4", .dport = 80, .alpn = "\x03h2c" }), "h2");
	CHECK_STR(pick(l, (struct conn){ .dst = "1.2.3.4", .dport = 80, .alpn = "\x02h2\x08http/1.1" }), "h2");
	CHECK_STR(pick(l, (struct conn){ .dst = "1.2.3.4", .dport = 80, .alpn = "\x08http/1.1\x02h2" }), "h1");
	CHECK_STR(pick(l, (struct conn){ .dst = "1.2.3.4", .dport = 80, .alpn = "\x06spdy/3" }), "catch_all");
	/* destination IP: longest prefix; it is a level above SNI and ALPN */
	CHECK_STR(pick(l, (struct conn){ .dst = "10.9.9.9", .dport = 80 }), "net10");
	CHECK_STR(pick(l, (struct conn){ .dst = "10.1.9.9", .dport = 80 }), "net10_1");
	CHECK_STR(pick(l, (struct conn){ .dst = "10.1.9.9", .dport = 80, .alpn = "\x03h2c" }), "net10_1");
	/* source type */
	CHECK_STR(pick(l, (struct conn){ .dst = "10.0.0.5", .dport = 9000, .src = "127.0.0.1" }), "src_local");
	CHECK_STR(pick(l, (struct conn){ .dst = "10.0.0.5", .dport = 9000, .src = "10.0.0.5" }), "src_local");
	CHECK_STR(pick(l, (struct conn){ .dst = "10.0.0.5", .dport = 9000, .src = "10.0.0.6" }), "src_any_9000");
	/* source prefix, then source port; nothing matching -> default chain */
	CHECK_STR(pick(l, (struct conn){ .dst = "10.0.0.5", .dport = 9100, .src = "192.168.1.1", .sport = 5555 }), "src_port");
	CHECK_STR(pick(l, (struct conn){ .dst = "10.0.0.5", .dport = 9100, .src = "192.168.1.1", .sport = 6666 }), "src_range");
	CHECK_STR(pick(l, (struct conn){ .dst = "10.0.0.5", .dport = 9100, .src = "172.16.0.1" }), "default");
	test_bootstrap_done(s);
}

TEST(filter_chain_match_config_errors)
{
	char err[512];
	CHECK(!test_bootstrap_ok(HEAD
		"    filter_chains:\n"
		"    - filter_chain_match: {server_names: [a.com, b.com]}\n" TCP("a")
		"    - filter_chain_match: {server_names: [b.com]}\n" TCP("b"), err, sizeof(err)));
	CHECK_CONTAINS(err, "same matching rules");
	CHECK(!test_bootstrap_ok(HEAD
		"    filter_chains:\n"
		"    - filter_chain_match: {server_names: [\"foo*.com\"]}\n" TCP("a"), err, sizeof(err)));
	CHECK_CONTAINS(err, "filter_chains[0].filter_chain_match.server_names[0]");
	CHECK(!test_bootstrap_ok(HEAD
		"    filter_chains:\n"
		"    - filter_chain_match: {prefix_ranges: [{address_prefix: 10.0.0.0, prefix_len: 33}]}\n" TCP("a"),
		err, sizeof(err)));
	CHECK_CONTAINS(err, "invalid CIDR range");
	CHECK(!test_bootstrap_ok(HEAD
		"    filter_chains:\n"
		"    - filter_chain_match: {address_suffix: 1.2.3.4}\n" TCP("a"), err, sizeof(err)));
	CHECK_CONTAINS(err, "address_suffix");
	CHECK(!test_bootstrap_ok(HEAD
		"    filter_chains:\n"
		"    - filter_chain_match: {source_type: NEARBY}\n" TCP("a"), err, sizeof(err)));
	CHECK_CONTAINS(err, "source_type");
	/* a listener with only a default chain is valid, as in Envoy */
	CHECK(test_bootstrap_ok(HEAD
		"    default_filter_chain:\n" TCP("d"), err, sizeof(err)));
	CHECK_STR(err, "");
	/* different transport protocols do not overlap */
	CHECK(test_bootstrap_ok(HEAD
		"    filter_chains:\n"
		"    - filter_chain_match: {transport_protocol: tls}\n" TCP("a")
		"    - filter_chain_match: {transport_protocol: raw_buffer}\n" TCP("b"), err, sizeof(err)));
	CHECK_STR(err, "");
}

TEST(cidr_contains_v6)
{
	struct cidr r;
	struct sockaddr_storage ss;
	socklen_t len;
	CHECK_INT(cidr_parse("fd00::", 8, &r), RM_OK);
	sockaddr_parse_ip("fd12::1", 1, &ss, &len);
	CHECK(cidr_contains(&r, (struct sockaddr *)&ss));
	sockaddr_parse_ip("fe00::1", 1, &ss, &len);
	CHECK(!cidr_contains(&r, (struct sockaddr *)&ss));
	sockaddr_parse_ip("10.0.0.1", 1, &ss, &len);
	CHECK(!cidr_contains(&r, (struct sockaddr *)&ss));
	CHECK_INT(cidr_parse("10.0.0.1", 33, &r), RM_ERROR);
	CHECK_INT(cidr_parse("nope", 8, &r), RM_ERROR);
}

TEST(listener_filter_disabled_predicate)
{
	char err[512];
	struct snapshot *s = test_bootstrap(HEAD
		"    listener_filters:\n"
		"    - name: envoy.filters.listener.http_inspector\n"
		"      filter_disabled:\n"
		"        or_match: {rules: [{destination_port_range: {start: 3306, end: 3307}},\n"
		"                           {and_match: {rules: [{destination_port_range: {start: 5000, end: 6000}},\n"
		"                                                {not_match: {destination_port_range: {start: 5432, end: 5433}}}]}}]}\n"
		"    - name: envoy.filters.listener.tls_inspector\n"
		"      filter_disabled: {any_match: true}\n"
		"    filter_chains:\n"
		"    -\n" TCP("a"), err, sizeof(err));
	CHECK_STR(err, "");
	if (!s)
		return;
	const struct lf_pred *p = s->listeners[0]->lfilters[0].disabled;
	CHECK(p != NULL);
	CHECK(lf_pred_match(p, 3306));
	CHECK(!lf_pred_match(p, 3307));
	CHECK(lf_pred_match(p, 5000));
	CHECK(!lf_pred_match(p, 5432));
	CHECK(lf_pred_match(p, 5999));
	CHECK(!lf_pred_match(p, 6000));
	CHECK(!lf_pred_match(p, 80));
	CHECK(lf_pred_match(s->listeners[0]->lfilters[1].disabled, 80));
	test_bootstrap_done(s);
	CHECK(!test_bootstrap_ok(HEAD
		"    listener_filters:\n"
		"    - name: envoy.filters.listener.http_inspector\n"
		"      filter_disabled: {destination_port_range: {start: 10, end: 5}}\n"
		"    filter_chains:\n"
		"    -\n" TCP("a"), err, sizeof(err)));
	CHECK_CONTAINS(err, "listener_filters[0].filter_disabled.destination_port_range");
	CHECK(!test_bootstrap_ok(HEAD
		"    listener_filters:\n"
		"    - name: envoy.filters.listener.http_inspector\n"
		"      filter_disabled: {any_match: true, not_match: {any_match: true}}\n"
		"    filter_chains:\n"
		"    -\n" TCP("a"), err, sizeof(err)));
	CHECK_CONTAINS(err, "exactly one of");
}
