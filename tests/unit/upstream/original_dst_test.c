/* original_dst_test.c - ORIGINAL_DST clusters (proxy/upstream/original_dst.c)
 * through the public API: hosts from the downstream's restored destination
 * or the override header, one host per destination per worker, port
 * override, invalid headers, and the cleanup sweep on a real event base. */
#include "test.h"

#include <jansson.h>
#include <netinet/in.h>

#include "proxy/common.h"
#include "proxy/downstream.h"
#include "proxy/snapshot.h"
#include "proxy/worker.h"
#include "proxy/http/headers.h"
#include "proxy/config/address.h"
#include "proxy/upstream/cluster.h"
#include "proxy/upstream/original_dst.h"
#include "bootstrap_helper.h"

static struct cluster *make(const char *extra, char *err, size_t errlen)
{
	char buf[1024];
	snprintf(buf, sizeof(buf), "{\"name\":\"o\",\"type\":\"ORIGINAL_DST\","
		 "\"lb_policy\":\"CLUSTER_PROVIDED\"%s%s}", *extra ? "," : "", extra);
	return test_cluster_parse(buf, err, errlen);
}

static void restored(struct downstream *d, const char *ip, uint16_t port)
{
	socklen_t len;
	memset(d, 0, sizeof(*d));
	sockaddr_parse_ip(ip, port, &d->local, &len);
	d->local_restored = true;
}

TEST(original_dst_host_from_connection)
{
	char err[512];
	struct cluster *cl = make("", err, sizeof(err));
	CHECK(cl != NULL);
	if (!cl)
		return;
	struct worker w = { .id = 0, .shard = 1 };
	w.base = event_base_new();
	struct downstream d;
	restored(&d, "10.1.2.3", 80);
	struct host *h1 = original_dst_pick(cl, &w, &d, NULL);
	CHECK(h1 != NULL);
	CHECK_STR(h1 ? h1->addr_str : "", "10.1.2.3:80");
	CHECK(original_dst_pick(cl, &w, &d, NULL) == h1);   /* same destination, same host */
	restored(&d, "10.1.2.3", 81);
	struct host *h2 = original_dst_pick(cl, &w, &d, NULL);
	CHECK(h2 != NULL && h2 != h1);
	restored(&d, "fd00::7", 443);
	struct host *h3 = original_dst_pick(cl, &w, &d, NULL);
	CHECK_STR(h3 ? h3->addr_str : "", "[fd00::7]:443");
	CHECK(original_dst_worker_hosts(cl, &w) == 3);
	/* many destinations: the table grows and still finds every host */
	for (int i = 0; i < 200; i++) {
		char ip[32];
		snprintf(ip, sizeof(ip), "10.9.%d.%d", i / 250, i % 250);
		restored(&d, ip, 8080);
		struct host *a = original_dst_pick(cl, &w, &d, NULL);
		CHECK(a != NULL && original_dst_pick(cl, &w, &d, NULL) == a);
	}
	CHECK(original_dst_worker_hosts(cl, &w) == 203);
	CHECK(stats_value(cl->stats, membership_total) == 203);
	/* not redirected and no header: no host */
	d.local_restored = false;
	CHECK(original_dst_pick(cl, &w, &d, NULL) == NULL);
	original_dst_worker_exit(cl, &w);
	CHECK(original_dst_worker_hosts(cl, &w) == 0);
	cluster_unref(cl);
	event_base_free(w.base);
}

TEST(original_dst_header_and_port_override)
{
	char err[512];
	struct cluster *cl = make("\"original_dst_lb_config\":{\"use_http_header\":true,"
				  "\"upstream_port_override\":9000}", err, sizeof(err));
	CHECK(cl != NULL);
	if (!cl)
		return;
	struct worker w = { .id = 0, .shard = 1 };
	w.base = event_base_new();
	struct downstream d;
	restored(&d, "10.1.2.3", 80);
	struct http_headers h;
	hdrs_init(&h);
	/* no header: the connection's destination, with the port overridden */
	struct host *a = original_dst_pick(cl, &w, &d, &h);
	CHECK_STR(a ? a->addr_str : "", "10.1.2.3:9000");
	hdrs_add_cstr(&h, "x-envoy-original-dst-host", "[::1]:1234");
	struct host *b = original_dst_pick(cl, &w, &d, &h);
	CHECK_STR(b ? b->addr_str : "", "[::1]:9000");
	static const char *const bad[] = { "", "1.2.3.4", "1.2.3.4:", "1.2.3.4:0", "1.2.3.4:65536",
					   "::1:80", "[::1:80", "host:80", "1.2.3.4:8a" };
	for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
		hdrs_set(&h, "x-envoy-original-dst-host", bad[i], strlen(bad[i]));
		CHECK(original_dst_pick(cl, &w, &d, &h) == NULL);
	}
	CHECK(stats_value(cl->odst->stats, original_dst_host_invalid) == (int64_t)ARRAY_SIZE(bad));
	hdrs_free(&h);
	original_dst_worker_exit(cl, &w);
	cluster_unref(cl);
	event_base_free(w.base);
}

TEST(original_dst_cleanup_removes_unused_hosts)
{
	char err[512];
	struct cluster *cl = make("\"cleanup_interval\":\"0.02s\"", err, sizeof(err));
	CHECK(cl != NULL);
	if (!cl)
		return;
	struct worker w = { .id = 0, .shard = 1 };
	w.base = event_base_new();
	struct downstream d1, d2;
	restored(&d1, "10.1.2.3", 80);
	restored(&d2, "10.1.2.4", 80);
	struct host *keep = host_ref(original_dst_pick(cl, &w, &d1, NULL));
	CHECK(original_dst_pick(cl, &w, &d2, NULL) != NULL);
	CHECK(original_dst_worker_hosts(cl, &w) == 2);
	/* keep d1 in use across sweeps; d2 goes after two sweeps at most */
	for (int i = 0; i < 200 && original_dst_worker_hosts(cl, &w) > 1; i++) {
		CHECK(original_dst_pick(cl, &w, &d1, NULL) == keep);
		event_base_loop(w.base, EVLOOP_ONCE);
	}
	CHECK(original_dst_worker_hosts(cl, &w) == 1);
	CHECK(original_dst_pick(cl, &w, &d1, NULL) == keep);
	/* nothing used any more: the table empties, the held reference stays valid */
	for (int i = 0; i < 200 && original_dst_worker_hosts(cl, &w) > 0; i++)
		event_base_loop(w.base, EVLOOP_ONCE);
	CHECK(original_dst_worker_hosts(cl, &w) == 0);
	CHECK_STR(keep->addr_str, "10.1.2.3:80");
	CHECK(stats_value(cl->stats, membership_total) == 0);
	host_unref(keep);
	original_dst_worker_exit(cl, &w);
	cluster_unref(cl);
	event_base_free(w.base);
}

TEST(original_dst_config_errors)
{
	char err[512];
	static const struct { const char *extra, *want; } cases[] = {
		{ "\"lb_policy\":\"ROUND_ROBIN\"", "" },
		{ "\"cleanup_interval\":\"0s\"", "cleanup_interval: must be greater than 0" },
		{ "\"health_checks\":[]", "health_checks: not supported for ORIGINAL_DST clusters" },
		{ "\"original_dst_lb_config\":{\"upstream_port_override\":0}", NULL },
		{ "\"original_dst_lb_config\":{\"metadata_key\":{}}", "metadata_key" },
	};
	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		struct cluster *cl = make(cases[i].extra, err, sizeof(err));
		if (!cases[i].want) {
			CHECK(cl != NULL);   /* 0 = no override */
		} else {
			CHECK(cl == NULL);
			CHECK(strstr(err, cases[i].want) != NULL);
		}
		cluster_unref(cl);
	}
}
