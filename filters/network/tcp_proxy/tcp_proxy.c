/* tcp_proxy.c - envoy.filters.network.tcp_proxy: L4 proxying to a cluster.
 *
 * Bytes flow both ways through conns (proxy/conn.h) with back-pressure: when one
 * side's output passes the listener's buffer limit, reading from the other
 * side stops until it drains below half.  Idle connections close after
 * idle_timeout (1 h by default, 0 disables). */
#include <event2/buffer.h>
#include "proxy/conn.h"
#include <netinet/in.h>
#include <netinet/tcp.h>
#include "proxy/filter.h"
#include "proxy/downstream.h"
#include "proxy/worker.h"
#include "proxy/log.h"
#include "proxy/upstream/cluster.h"
#include "proxy/upstream/lb_hash.h"
#include "proxy/upstream/original_dst.h"
#include <time.h>
#include "stats/access_log.h"

#define TCP_PROXY_TYPE "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"

#define TCP_STATS(X)                                                                  \
	X(COUNTER, downstream_cx_total) X(COUNTER, downstream_cx_no_route)           \
	X(COUNTER, downstream_cx_rx_bytes_total) X(GAUGE, downstream_cx_rx_bytes_buffered) \
	X(COUNTER, downstream_cx_tx_bytes_total) X(GAUGE, downstream_cx_tx_bytes_buffered) \
	X(COUNTER, downstream_flow_control_paused_reading_total)                     \
	X(COUNTER, downstream_flow_control_resumed_reading_total)                    \
	X(COUNTER, idle_timeout) X(COUNTER, upstream_flush_total)                    \
	X(GAUGE, upstream_flush_active)
#define TCP_ENUM(type, name) TCP_##name,
enum { TCP_STATS(TCP_ENUM) TCP_STATS_N };
static const struct stat_desc tcp_stat_desc[] = { TCP_STATS(STATS_DESC) };

struct tcp_proxy_cfg {
	char *stat_prefix;               /* owned */
	struct cluster **clusters;       /* refs [n] */
	uint32_t *weights;               /* owned [n] */
	size_t n;
	uint32_t total_weight;
	uint64_t idle_timeout_ms;
	bool hash_source_ip;             /* hash_policy: [{source_ip: {}}] */
	struct stats_scope *stats;       /* owned */
	struct al_list *access_logs;     /* owned, NULL: none */
};

struct tcp_conn {
	struct downstream super;         /* must be first */
	const struct tcp_proxy_cfg *cfg;
	struct cluster *cl;              /* in super.snap */
	struct host *host;               /* ref */
	struct conn *up;          /* owned */
	struct event *timer;             /* owned: connect timeout, then idle */
	uint64_t last_activity_ms;
	uint64_t up_start_ms;
	bool connected, closing, up_eof, down_eof, up_shut, down_shut;
	/* access log */
	uint32_t rflags;                 /* RF_BIT(response_flag) */
	uint64_t rx, tx;                 /* bytes from / to the downstream */
	uint64_t start_ns, conn_id;
	struct sockaddr_storage up_local;
};

static void tcp_log(struct tcp_conn *t)
{
	struct timespec ts;
	uint64_t dur = now_ns() - t->start_ns;
	char host[96] = "";
	clock_gettime(CLOCK_REALTIME, &ts);
	if (t->host)
		snprintf(host, sizeof(host), "%s", t->host->addr_str);
	struct al_record r = {
		.flags = t->rflags,
		.bytes_received = t->rx,
		.bytes_sent = t->tx,
		.start_wall_ns = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec - dur,
		.duration_ns = (int64_t)dur,
		.request_duration_ns = -1,
		.response_duration_ns = -1,
		.upstream_host = host[0] ? host : NULL,
		.upstream_cluster = t->cl ? t->cl->name : NULL,
		.upstream_local = t->up_local.ss_family ? (const struct sockaddr *)&t->up_local : NULL,
		.downstream_remote = (const struct sockaddr *)&t->super.peer,
		.downstream_local = (const struct sockaddr *)&t->super.local,
		.connection_id = t->conn_id,
		.attempts = t->host ? 1 : 0,
	};
	al_list_log(t->cfg->access_logs, &r, t->super.w->shard);
}

static void tcp_close(struct tcp_conn *t)
{
	downstream_close(&t->super);
}

static void tcp_destroy(struct downstream *d)
{
	struct tcp_conn *t = (struct tcp_conn *)d;
	unsigned sh = d->w->shard;
	if (t->cfg->access_logs)
		tcp_log(t);
	if (t->up) {
		conn_free(t->up);
		stats_dec(t->cl->stats, sh, upstream_cx_active);
		stats_inc(t->cl->stats, sh, upstream_cx_destroy);
		host_stat_add(t->host, sh, HOST_CX_ACTIVE, -1);
		stats_hist_record(t->cl->stats, sh, upstream_cx_length_ms,
				  (double)(now_ms() - t->up_start_ms));
	}
	if (t->timer)
		event_free(t->timer);
	if (t->host)
		host_unref(t->host);
}

/* Half-close: a FIN from one side is passed on once the bytes before it
 * were written; the connection closes when both directions are finished
 * (as Envoy's tcp_proxy does). */
static bool maybe_finish(struct tcp_conn *t)   /* true: t was freed */
{
	size_t pend_down = evbuffer_get_length(conn_output(t->super.bev));
	size_t pend_up = t->up ? evbuffer_get_length(conn_output(t->up)) : 0;
	if (t->down_eof && !pend_up && !t->up_shut && t->up) {
		conn_shutdown_write(t->up);
		t->up_shut = true;
	}
	if (t->up_eof && !pend_down && !t->down_shut) {
		conn_shutdown_write(t->super.bev);
		t->down_shut = true;
	}
	if (t->up_shut && t->down_shut) {
		tcp_close(t);
		return true;
	}
	return false;
}

static void copy(struct tcp_conn *t, struct conn *from, struct conn *to, bool down_to_up)
{
	struct evbuffer *in = conn_input(from);
	size_t n = evbuffer_get_length(in);
	unsigned sh = t->super.w->shard;
	if (!n)
		return;
	t->last_activity_ms = now_ms();
	*(down_to_up ? &t->rx : &t->tx) += n;
	stats_add(t->cfg->stats, sh, down_to_up ? TCP_downstream_cx_rx_bytes_total : TCP_downstream_cx_tx_bytes_total,
		  (int64_t)n);
	stats_add(t->cl->stats, sh, down_to_up ? upstream_cx_tx_bytes_total : upstream_cx_rx_bytes_total,
		  (int64_t)n);
	evbuffer_add_buffer(conn_output(to), in);
	uint32_t limit = t->super.lcfg->buffer_limit;
	if (evbuffer_get_length(conn_output(to)) > limit) {
		conn_disable_read(from);
		conn_set_write_lowat(to, limit / 2);
		if (down_to_up)
			stats_inc(t->cfg->stats, sh, TCP_downstream_flow_control_paused_reading_total);
	}
}

static void down_read(struct conn *bev, void *arg)
{
	struct tcp_conn *t = arg;
	if (t->connected)
		copy(t, bev, t->up, true);
}

static void up_read(struct conn *bev, void *arg)
{
	struct tcp_conn *t = arg;
	copy(t, bev, t->super.bev, false);
}

/* Output of `bev` drained below the watermark: resume the other side. */
static void down_write(struct conn *bev, void *arg)
{
	struct tcp_conn *t = arg;
	(void)bev;
	if ((t->up_eof || t->down_eof) && (maybe_finish(t) || t->up_eof))
		return;
	conn_set_write_lowat(t->super.bev, 0);
	if (t->up)
		conn_enable_read(t->up);
}

static void up_write(struct conn *bev, void *arg)
{
	struct tcp_conn *t = arg;
	(void)bev;
	if (!t->connected)
		return;
	if ((t->down_eof || t->up_eof) && (maybe_finish(t) || t->down_eof))
		return;
	if (!conn_reading(t->super.bev)) {
		stats_inc(t->cfg->stats, t->super.w->shard, TCP_downstream_flow_control_resumed_reading_total);
		conn_set_write_lowat(t->up, 0);
		conn_enable_read(t->super.bev);
	}
}

static void down_event(struct conn *bev, short what, void *arg)
{
	struct tcp_conn *t = arg;
	(void)bev;
	if (what & CONN_EOF) {
		t->down_eof = true;
		if (t->connected)
			copy(t, t->super.bev, t->up, true);
		if (!t->connected) {
			t->rflags |= RF_BIT(RF_DC);   /* gone before the upstream answered */
			tcp_close(t);
			return;
		}
		maybe_finish(t);
		return;
	}
	t->rflags |= RF_BIT(RF_DC);
	tcp_close(t);   /* error: reset both sides */
}

static void arm_idle(struct tcp_conn *t, uint64_t ms);

static void up_event(struct conn *bev, short what, void *arg)
{
	struct tcp_conn *t = arg;
	unsigned sh = t->super.w->shard;
	(void)bev;
	if (what & CONN_CONNECTED) {
		t->connected = true;
		cluster_outlier_report(t->cl, t->host, OUTLIER_LOCAL_SUCCESS_FINAL, 0);
		stats_hist_record(t->cl->stats, sh, upstream_cx_connect_ms,
				  (double)(now_ms() - t->up_start_ms));
		event_del(t->timer);
		t->last_activity_ms = now_ms();
		if (t->cfg->access_logs) {
			socklen_t len = sizeof(t->up_local);
			if (getsockname(conn_fd(t->up), (struct sockaddr *)&t->up_local, &len))
				t->up_local.ss_family = 0;
		}
		if (t->cfg->idle_timeout_ms)
			arm_idle(t, t->cfg->idle_timeout_ms);
		conn_enable_read(t->up);
		conn_enable_read(t->super.bev);
		copy(t, t->super.bev, t->up, true);
		return;
	}
	if (!t->connected) {
		stats_inc(t->cl->stats, sh, upstream_cx_connect_fail);
		host_stat_add(t->host, sh, HOST_CX_CONNECT_FAIL, 1);
		cluster_outlier_report(t->cl, t->host, OUTLIER_LOCAL_CONNECT_FAILED, 0);
		t->rflags |= RF_BIT(RF_UF);
		tcp_close(t);
		return;
	}
	if (what & CONN_EOF) {
		t->up_eof = true;
		copy(t, t->up, t->super.bev, false);
		maybe_finish(t);
		return;
	}
	t->rflags |= RF_BIT(RF_UC);   /* upstream error after connecting */
	tcp_close(t);
}

static void timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct tcp_conn *t = arg;
	(void)fd;
	(void)what;
	if (!t->connected) {
		stats_inc(t->cl->stats, t->super.w->shard, upstream_cx_connect_timeout);
		stats_inc(t->cl->stats, t->super.w->shard, upstream_cx_connect_fail);
		cluster_outlier_report(t->cl, t->host, OUTLIER_LOCAL_CONNECT_FAILED, 0);
		t->rflags |= RF_BIT(RF_UF);
		tcp_close(t);
		return;
	}
	uint64_t idle = now_ms() - t->last_activity_ms;
	if (idle >= t->cfg->idle_timeout_ms) {
		stats_inc(t->cfg->stats, t->super.w->shard, TCP_idle_timeout);
		tcp_close(t);
		return;
	}
	arm_idle(t, t->cfg->idle_timeout_ms - idle);
}

static void arm_idle(struct tcp_conn *t, uint64_t ms)
{
	struct timeval tv = { (time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000 };
	evtimer_add(t->timer, &tv);
}

static void tcp_drain(struct downstream *d)
{
	(void)d;   /* L4: no request boundary; connections end on their own or at exit */
}

static const struct downstream_ops tcp_downstream_ops = {
	.drain = tcp_drain,
	.destroy = tcp_destroy,
};

static void tcp_on_accept(const struct accept_info *ai, const void *vcfg)
{
	const struct tcp_proxy_cfg *cfg = vcfg;
	struct tcp_conn *t = (struct tcp_conn *)downstream_new(sizeof(*t), ai);
	struct worker *w = ai->w;
	unsigned sh = w->shard;
	size_t k = 0;

	t->super.ops = &tcp_downstream_ops;
	t->cfg = cfg;
	t->start_ns = now_ns();
	if (cfg->access_logs)
		t->conn_id = al_next_connection_id();
	stats_inc(cfg->stats, sh, TCP_downstream_cx_total);
	if (cfg->n > 1) {
		uint32_t r = rand_below(cfg->total_weight);
		for (k = 0; k < cfg->n - 1 && r >= cfg->weights[k]; k++)
			r -= cfg->weights[k];
	}
	t->cl = cfg->clusters[k];
	t->timer = evtimer_new(w->base, timer_cb, t);
	conn_setcb(t->super.bev, down_read, down_write, down_event, t);
	struct host *h;
	if (t->cl->odst) {
		h = original_dst_pick(t->cl, w, &t->super, NULL);
	} else if (cfg->hash_source_ip && cluster_lb_is_hash(t->cl)) {
		const char *ip = t->super.peer_ip;
		bool have = ip && *ip;
		h = cluster_pick_host_hash(t->cl, w, have ? lb_xxhash64(ip, strlen(ip), 0) : 0, have);
	} else {
		h = cluster_pick_host(t->cl, w);
	}
	if (!h) {
		stats_inc(cfg->stats, sh, TCP_downstream_cx_no_route);
		stats_inc(t->cl->stats, sh, upstream_cx_none_healthy);
		t->rflags |= RF_BIT(RF_UH);
		tcp_close(t);
		return;
	}
	t->host = host_ref(h);
	t->up = conn_new(w->base, -1);
	t->up_start_ms = now_ms();
	stats_inc(t->cl->stats, sh, upstream_cx_total);
	stats_inc(t->cl->stats, sh, upstream_cx_active);
	host_stat_add(h, sh, HOST_CX_TOTAL, 1);
	host_stat_add(h, sh, HOST_CX_ACTIVE, 1);
	conn_setcb(t->up, up_read, up_write, up_event, t);
	if (t->cl->tls)
		conn_set_tls(t->up, t->cl->tls, false, NULL);
	conn_connect(t->up, (struct sockaddr *)&h->addr, h->addrlen);
	arm_idle(t, t->cl->connect_timeout_ms);
}

/* ---- config -------------------------------------------------------------- */

static void tcp_free_config(void *v)
{
	struct tcp_proxy_cfg *cfg = v;
	if (!cfg)
		return;
	for (size_t i = 0; i < cfg->n; i++)
		if (cfg->clusters[i])
			cluster_unref(cfg->clusters[i]);
	free(cfg->clusters);
	free(cfg->weights);
	stats_scope_free(cfg->stats);
	al_list_free(cfg->access_logs);
	free(cfg->stat_prefix);
	free(cfg);
}

static int add_cluster(struct cfg_ctx *c, struct tcp_proxy_cfg *cfg, struct build_ctx *b,
		       const char *name, uint32_t weight)
{
	struct cluster *cl = snapshot_find_cluster(b->snap, name);
	if (!cl)
		return cfg_fail(c, "unknown cluster '%s'", name);
	cfg->clusters = xrealloc(cfg->clusters, (cfg->n + 1) * sizeof(*cfg->clusters));
	cfg->weights = xrealloc(cfg->weights, (cfg->n + 1) * sizeof(*cfg->weights));
	cfg->clusters[cfg->n] = cluster_ref(cl);
	cfg->weights[cfg->n++] = weight;
	cfg->total_weight += weight;
	return RM_OK;
}

/* hash_policy: at most one type.v3.HashPolicy; only source_ip (the
 * downstream address, hashed like the HTTP source_ip policy) is supported. */
static int parse_hash_policy(struct cfg_ctx *c, const json_t *j, struct tcp_proxy_cfg *cfg)
{
	static const char *const hf[] = { "source_ip", "filter_state", NULL };
	const json_t *arr = cfg_enter(c, j, "hash_policy"), *e, *v;
	int rc = 0;
	if (!arr)
		return 0;
	if (cfg_expect_array(c, arr)) {
		rc = -1;
	} else if (json_array_size(arr) > 1) {
		rc = cfg_fail(c, "at most one hash policy is allowed");
	} else if (json_array_size(arr) == 1) {
		e = cfg_enter_idx(c, arr, 0);
		if (cfg_expect_object(c, e) || cfg_check_fields(c, e, hf)) {
			rc = -1;
		} else if (json_object_get(e, "filter_state")) {
			rc = cfg_fail_field(c, e, "filter_state", "not supported yet");
		} else if (!(v = json_object_get(e, "source_ip"))) {
			rc = cfg_fail(c, "source_ip is required");
		} else {
			cfg_enter(c, e, "source_ip");
			rc = cfg_expect_object(c, v) || cfg_check_fields(c, v, (const char *const[]){ NULL });
			cfg_leave(c);
			cfg->hash_source_ip = !rc;
		}
		cfg_leave(c);
	}
	cfg_leave(c);
	return rc;
}

static void *tcp_parse_config(struct cfg_ctx *c, const json_t *j, struct build_ctx *b)
{
	static const char *const f[] = { "stat_prefix", "cluster", "weighted_clusters",
					 "idle_timeout", "hash_policy", "access_log", NULL };
	struct tcp_proxy_cfg *cfg = xcalloc(1, sizeof(*cfg));
	const char *prefix = NULL, *cluster = NULL;
	const json_t *wc;

	cfg->idle_timeout_ms = 3600 * 1000;
	if (cfg_expect_object(c, j) || cfg_check_fields(c, j, f) ||
	    cfg_string_req(c, j, "stat_prefix", &prefix) || cfg_string(c, j, "cluster", &cluster) ||
	    cfg_duration_ms(c, j, "idle_timeout", &cfg->idle_timeout_ms))
		goto error;
	if (parse_hash_policy(c, j, cfg) || al_list_parse(c, j, b, true, &cfg->access_logs))
		goto error;
	if (cluster) {
		cfg_enter(c, j, "cluster");
		int rc = add_cluster(c, cfg, b, cluster, 1);
		cfg_leave(c);
		if (rc)
			goto error;
	} else if ((wc = cfg_enter(c, j, "weighted_clusters"))) {
		static const char *const wf[] = { "clusters", NULL };
		static const char *const cf[] = { "name", "weight", NULL };
		const json_t *arr;
		if (cfg_expect_object(c, wc) || cfg_check_fields(c, wc, wf) ||
		    !(arr = cfg_enter_req(c, wc, "clusters"))) {
			cfg_leave(c);
			goto error;
		}
		int rc = cfg_expect_array(c, arr);
		for (size_t i = 0; !rc && i < json_array_size(arr); i++) {
			const json_t *e = cfg_enter_idx(c, arr, i);
			const char *name = NULL;
			uint32_t weight = 0;
			rc = cfg_expect_object(c, e) || cfg_check_fields(c, e, cf) ||
			     cfg_string_req(c, e, "name", &name) || cfg_u32(c, e, "weight", &weight);
			if (!rc && !weight) {
				rc = cfg_fail_field(c, e, "weight", "must be at least 1");
			}
			if (!rc) {
				cfg_enter(c, e, "name");
				rc = add_cluster(c, cfg, b, name, weight);
				cfg_leave(c);
			}
			cfg_leave(c);
		}
		if (!rc && !cfg->n)
			rc = cfg_fail(c, "at least one cluster is required");
		cfg_leave(c);
		cfg_leave(c);
		if (rc)
			goto error;
	} else {
		cfg_fail(c, "one of 'cluster' or 'weighted_clusters' is required");
		goto error;
	}
	cfg->stat_prefix = xstrdup(prefix);
	char *scope = xasprintf("tcp.%s", prefix);
	cfg->stats = stats_scope_new(b->stats, scope, "tcp", "envoy_tcp_prefix", prefix,
				     tcp_stat_desc, TCP_STATS_N);
	free(scope);
	return cfg;
error:
	tcp_free_config(cfg);
	return NULL;
}

const struct network_filter_ops tcp_proxy_filter_ops = {
	.name = "envoy.filters.network.tcp_proxy",
	.type_url = TCP_PROXY_TYPE,
	.parse_config = tcp_parse_config,
	.free_config = tcp_free_config,
	.on_accept = tcp_on_accept,
	.thread_exit = al_thread_exit,
};
