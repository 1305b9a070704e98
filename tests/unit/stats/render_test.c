/* render_test.c - text, JSON and Prometheus rendering of the stats store. */
#include "test.h"
#include "stats/stats.h"

#include <unistd.h>
#include <sys/wait.h>
#include <event2/buffer.h>
#include <jansson.h>

#define CL_STATS(X) X(COUNTER, upstream_rq_total) X(GAUGE, upstream_cx_active) \
	X(HISTOGRAM, upstream_rq_time)
enum { CL_STATS(STATS_ENUM) CL_N };
static const struct stat_desc cl_desc[] = { CL_STATS(STATS_DESC) };

#define SRV_STATS(X) X(GAUGE, live)
enum { SRV_STATS(STATS_ENUM) SRV_N };
static const struct stat_desc srv_desc[] = { SRV_STATS(STATS_DESC) };

#define LS_STATS(X) X(COUNTER, downstream_cx_total) X(GAUGE, downstream_cx_active) \
	X(HISTOGRAM, downstream_cx_length_ms)
enum { LS_STATS(STATS_ENUM) LS_N };
static const struct stat_desc ls_desc[] = { LS_STATS(STATS_DESC) };

#define HCM_STATS(X) X(COUNTER, downstream_rq_total) X(HISTOGRAM, downstream_rq_time) \
	X(GAUGE, downstream_rq_active)
enum { HCM_STATS(STATS_ENUM) HCM_N };
static const struct stat_desc hcm_desc[] = { HCM_STATS(STATS_DESC) };

/* Drains buf into a NUL-terminated string the caller frees. */
static char *drain(struct evbuffer *buf)
{
	size_t n = evbuffer_get_length(buf);
	char *s = xmalloc(n + 1);

	evbuffer_remove(buf, s, n);
	s[n] = 0;
	return s;
}

enum { FMT_TEXT, FMT_JSON, FMT_PROM };

/* Renders st in one format; returns the output (caller frees) or NULL on error. */
static char *render(struct stats_store *st, int fmt, const char *filter, bool used_only,
		    char *err, size_t errlen)
{
	struct evbuffer *buf = evbuffer_new();
	int rc;
	char *s;

	if (fmt == FMT_TEXT)
		rc = stats_render_text(st, buf, filter, used_only, err, errlen);
	else if (fmt == FMT_JSON)
		rc = stats_render_json(st, buf, filter, used_only, err, errlen);
	else
		rc = stats_render_prometheus(st, buf, filter, used_only, err, errlen);
	s = drain(buf);
	evbuffer_free(buf);
	if (rc != RM_OK) {
		CHECK_STR(s, "");                             /* nothing written on error */
		xfree(s);
		return NULL;
	}
	return s;
}

static int count_substr(const char *hay, const char *needle)
{
	int n = 0;

	for (const char *p = hay; (p = strstr(p, needle)); p += strlen(needle))
		n++;
	return n;
}

/* The small store whose exact output the tests compare:
 * cluster.backend (3 worker shards) and server. */
static struct stats_store *small_store(void)
{
	struct stats_store *st = stats_store_new(3);
	struct stats_scope *c, *srv;
	int fam;

	c = stats_scope_new(st, "cluster.backend", "cluster", "envoy_cluster_name", "backend",
			    cl_desc, CL_N);
	fam = stats_scope_add_family(c, "upstream_rq");
	srv = stats_scope_new(st, "server", "server", NULL, NULL, srv_desc, SRV_N);
	stats_add(c, 1, upstream_rq_total, 5);
	stats_add(c, 2, upstream_rq_total, 7);
	stats_add(c, 1, upstream_cx_active, 3);
	stats_dec(c, 2, upstream_cx_active);
	stats_hist_record(c, 1, upstream_rq_time, 4);
	stats_hist_record(c, 2, upstream_rq_time, 6);
	stats_hist_record(c, 2, upstream_rq_time, 8);
	stats_hist_record(c, 1, upstream_rq_time, 2);
	stats_code_inc(c, 1, fam, 503);
	stats_code_inc(c, 2, fam, 200);
	stats_code_inc(c, 1, fam, 200);
	stats_gauge_set(srv, live, 1);
	return st;
}

TEST(render_text_exact)
{
	struct stats_store *st = small_store();
	char *out = render(st, FMT_TEXT, NULL, false, NULL, 0);

	/* Four values, two in (1,5] and two in (5,10]: P25 = 3, P50 = 5, P75 = 7.5. */
	CHECK_STR(out,
		  "cluster.backend.upstream_cx_active: 2\n"
		  "cluster.backend.upstream_rq_1xx: 0\n"
		  "cluster.backend.upstream_rq_200: 2\n"
		  "cluster.backend.upstream_rq_2xx: 2\n"
		  "cluster.backend.upstream_rq_3xx: 0\n"
		  "cluster.backend.upstream_rq_4xx: 0\n"
		  "cluster.backend.upstream_rq_503: 1\n"
		  "cluster.backend.upstream_rq_5xx: 1\n"
		  "cluster.backend.upstream_rq_total: 12\n"
		  "server.live: 1\n"
		  "cluster.backend.upstream_rq_time: P0(1,1) P25(3,3) P50(5,5) P75(7.5,7.5) "
		  "P90(9,9) P95(9.5,9.5) P99(9.9,9.9) P99.5(9.95,9.95) P99.9(9.99,9.99) "
		  "P100(10,10)\n");
	xfree(out);
	stats_store_free(st);
}

TEST(render_text_unused_and_used_only)
{
	struct stats_store *st = stats_store_new(2);
	struct stats_scope *c = stats_scope_new(st, "cluster.idle", "cluster",
						"envoy_cluster_name", "idle", cl_desc, CL_N);
	int fam = stats_scope_add_family(c, "upstream_rq");
	char *out;

	out = render(st, FMT_TEXT, NULL, false, NULL, 0);
	CHECK_CONTAINS(out, "cluster.idle.upstream_rq_time: No recorded values\n");
	CHECK_CONTAINS(out, "cluster.idle.upstream_rq_total: 0\n");
	CHECK_CONTAINS(out, "cluster.idle.upstream_rq_5xx: 0\n");
	CHECK(!strstr(out, "upstream_rq_200"));          /* exact codes only once nonzero */
	xfree(out);

	out = render(st, FMT_TEXT, NULL, true, NULL, 0);
	CHECK_STR(out, "");
	xfree(out);

	stats_code_inc(c, 1, fam, 201);
	stats_inc(c, 1, upstream_rq_total);
	out = render(st, FMT_TEXT, NULL, true, NULL, 0);
	CHECK_STR(out,
		  "cluster.idle.upstream_rq_201: 1\n"
		  "cluster.idle.upstream_rq_2xx: 1\n"
		  "cluster.idle.upstream_rq_total: 1\n");
	xfree(out);
	stats_store_free(st);
}

TEST(render_json_exact)
{
	struct stats_store *st = small_store();
	char *out = render(st, FMT_JSON, NULL, false, NULL, 0);
	json_error_t jerr;
	json_t *j;

	CHECK_STR(out,
		  "{\"stats\":["
		  "{\"name\":\"cluster.backend.upstream_cx_active\",\"value\":2},"
		  "{\"name\":\"cluster.backend.upstream_rq_1xx\",\"value\":0},"
		  "{\"name\":\"cluster.backend.upstream_rq_200\",\"value\":2},"
		  "{\"name\":\"cluster.backend.upstream_rq_2xx\",\"value\":2},"
		  "{\"name\":\"cluster.backend.upstream_rq_3xx\",\"value\":0},"
		  "{\"name\":\"cluster.backend.upstream_rq_4xx\",\"value\":0},"
		  "{\"name\":\"cluster.backend.upstream_rq_503\",\"value\":1},"
		  "{\"name\":\"cluster.backend.upstream_rq_5xx\",\"value\":1},"
		  "{\"name\":\"cluster.backend.upstream_rq_total\",\"value\":12},"
		  "{\"name\":\"server.live\",\"value\":1},"
		  "{\"histograms\":{\"supported_quantiles\":[0,25,50,75,90,95,99,99.5,99.9,100],"
		  "\"computed_quantiles\":[{\"name\":\"cluster.backend.upstream_rq_time\",\"values\":["
		  "{\"interval\":1,\"cumulative\":1},{\"interval\":3,\"cumulative\":3},"
		  "{\"interval\":5,\"cumulative\":5},{\"interval\":7.5,\"cumulative\":7.5},"
		  "{\"interval\":9,\"cumulative\":9},{\"interval\":9.5,\"cumulative\":9.5},"
		  "{\"interval\":9.9,\"cumulative\":9.9},{\"interval\":9.95,\"cumulative\":9.95},"
		  "{\"interval\":9.99,\"cumulative\":9.99},{\"interval\":10,\"cumulative\":10}]}]}}"
		  "]}");
	j = json_loads(out ? out : "", 0, &jerr);
	CHECK(j != NULL);
	json_decref(j);
	xfree(out);

	/* No histogram element when no histogram passes the filter; empty
	 * histograms show null quantiles. */
	out = render(st, FMT_JSON, "server", false, NULL, 0);
	CHECK_STR(out, "{\"stats\":[{\"name\":\"server.live\",\"value\":1}]}");
	xfree(out);
	stats_reset_counters(st);
	out = render(st, FMT_JSON, "rq_time", false, NULL, 0);
	CHECK_CONTAINS(out, "\"values\":[{\"interval\":null,\"cumulative\":null},");
	xfree(out);
	stats_store_free(st);
}

TEST(render_prometheus_exact)
{
	struct stats_store *st = small_store();
	char *out = render(st, FMT_PROM, "upstream_rq_(total|[0-9]|xx)|cx_active|live", false,
			   NULL, 0);
	const char *hl = "envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name=\"backend\",le=";

	CHECK_STR(out,
		  "# TYPE envoy_cluster_upstream_rq counter\n"
		  "envoy_cluster_upstream_rq{envoy_response_code=\"200\",envoy_cluster_name=\"backend\"} 2\n"
		  "envoy_cluster_upstream_rq{envoy_response_code=\"503\",envoy_cluster_name=\"backend\"} 1\n"
		  "\n"
		  "# TYPE envoy_cluster_upstream_rq_total counter\n"
		  "envoy_cluster_upstream_rq_total{envoy_cluster_name=\"backend\"} 12\n"
		  "\n"
		  "# TYPE envoy_cluster_upstream_rq_xx counter\n"
		  "envoy_cluster_upstream_rq_xx{envoy_response_code_class=\"1\",envoy_cluster_name=\"backend\"} 0\n"
		  "envoy_cluster_upstream_rq_xx{envoy_response_code_class=\"2\",envoy_cluster_name=\"backend\"} 2\n"
		  "envoy_cluster_upstream_rq_xx{envoy_response_code_class=\"3\",envoy_cluster_name=\"backend\"} 0\n"
		  "envoy_cluster_upstream_rq_xx{envoy_response_code_class=\"4\",envoy_cluster_name=\"backend\"} 0\n"
		  "envoy_cluster_upstream_rq_xx{envoy_response_code_class=\"5\",envoy_cluster_name=\"backend\"} 1\n"
		  "\n"
		  "# TYPE envoy_cluster_upstream_cx_active gauge\n"
		  "envoy_cluster_upstream_cx_active{envoy_cluster_name=\"backend\"} 2\n"
		  "\n"
		  "# TYPE envoy_server_live gauge\n"
		  "envoy_server_live{} 1\n"
		  "\n");
	xfree(out);

	out = render(st, FMT_PROM, "upstream_rq_time", false, NULL, 0);
	{
		struct evbuffer *e = evbuffer_new();
		static const char *les[] = { "0.5", "1", "5", "10", "25", "50", "100", "250",
					     "500", "1000", "2500", "5000", "10000", "30000",
					     "60000", "300000", "600000", "1800000", "3600000" };
		static const int cum[] = { 0, 0, 2, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4 };
		char *want;

		evbuffer_add_printf(e, "# TYPE envoy_cluster_upstream_rq_time histogram\n");
		for (int i = 0; i < 19; i++)
			evbuffer_add_printf(e, "%s\"%s\"} %d\n", hl, les[i], cum[i]);
		evbuffer_add_printf(e, "%s\"+Inf\"} 4\n", hl);
		evbuffer_add_printf(e, "envoy_cluster_upstream_rq_time_sum{envoy_cluster_name=\"backend\"} 20\n");
		evbuffer_add_printf(e, "envoy_cluster_upstream_rq_time_count{envoy_cluster_name=\"backend\"} 4\n\n");
		want = drain(e);
		evbuffer_free(e);
		CHECK_STR(out, want);
		xfree(want);
	}
	xfree(out);
	stats_store_free(st);
}

TEST(render_prometheus_exact_full)
{
	/* The unfiltered output is exactly the counter/gauge part followed by
	 * the histogram family, nothing else. */
	struct stats_store *st = small_store();
	char *all = render(st, FMT_PROM, NULL, false, NULL, 0);
	char *gauges = render(st, FMT_PROM, "upstream_rq_(total|[0-9]|xx)|cx_active|live", false,
			      NULL, 0);
	char *hist = render(st, FMT_PROM, "upstream_rq_time", false, NULL, 0);
	char *joined = xasprintf("%s%s", gauges, hist);

	CHECK_STR(all, joined);
	CHECK_INT(count_substr(all, "# TYPE "), 6);
	xfree(joined);
	xfree(all);
	xfree(gauges);
	xfree(hist);
	stats_store_free(st);
}

/* Several clusters, listeners, HTTP prefixes; the same family in many scopes. */
static struct stats_store *realistic_store(void)
{
	static const char *clusters[] = { "backend", "web-api", "outbound|80||reviews.default.svc",
					  "we\"ird\\name\nx" };
	static const char *listeners[] = { "0.0.0.0_15001", "127.0.0.1_10000", "[__1]_8080" };
	static const char *prefixes[] = { "ingress_http", "outbound_0.0.0.0_80" };
	struct stats_store *st = stats_store_new(5);
	struct stats_scope *s;
	char name[128];

	s = stats_scope_new(st, "server", "server", NULL, NULL, srv_desc, SRV_N);
	stats_gauge_set(s, live, 1);
	for (size_t i = 0; i < ARRAY_SIZE(clusters); i++) {
		int fam;

		snprintf(name, sizeof(name), "cluster.%s", clusters[i]);
		s = stats_scope_new(st, name, "cluster", "envoy_cluster_name", clusters[i],
				    cl_desc, CL_N);
		fam = stats_scope_add_family(s, "upstream_rq");
		for (unsigned sh = 1; sh < 5; sh++) {
			stats_add(s, sh, upstream_rq_total, (int64_t)(i * 10 + sh));
			stats_inc(s, sh, upstream_cx_active);
			stats_hist_record(s, sh, upstream_rq_time, 0.3 * (double)(sh + i));
			stats_hist_record(s, sh, upstream_rq_time, 70000.0 * (double)sh);
			stats_code_inc(s, sh, fam, sh % 2 ? 200 : 503);
			if (i == 1)
				stats_code_inc(s, sh, fam, 404);
		}
	}
	for (size_t i = 0; i < ARRAY_SIZE(listeners); i++) {
		snprintf(name, sizeof(name), "listener.%s", listeners[i]);
		s = stats_scope_new(st, name, "listener", "envoy_listener_address", listeners[i],
				    ls_desc, LS_N);
		stats_add(s, 1, downstream_cx_total, 3);
		stats_hist_record(s, 2, downstream_cx_length_ms, 1234.5);
	}
	for (size_t i = 0; i < ARRAY_SIZE(prefixes); i++) {
		int fam;

		snprintf(name, sizeof(name), "http.%s", prefixes[i]);
		s = stats_scope_new(st, name, "http", "envoy_http_conn_manager_prefix", prefixes[i],
				    hcm_desc, HCM_N);
		fam = stats_scope_add_family(s, "downstream_rq");
		stats_inc(s, 3, downstream_rq_total);
		stats_code_inc(s, 3, fam, 204);
		stats_code_inc(s, 4, fam, 429);
		stats_hist_record(s, 4, downstream_rq_time, 17);
	}
	return st;
}

TEST(render_prometheus_groups_families_across_scopes)
{
	struct stats_store *st = realistic_store();
	char *out = render(st, FMT_PROM, NULL, false, NULL, 0);
	const char *p, *q;

	CHECK_INT(count_substr(out, "# TYPE envoy_cluster_upstream_rq_total counter\n"), 1);
	CHECK_INT(count_substr(out, "# TYPE envoy_cluster_upstream_rq_time histogram\n"), 1);
	CHECK_INT(count_substr(out, "# TYPE envoy_http_downstream_rq_xx counter\n"), 1);
	/* all four clusters' samples follow the one TYPE line, in scope-name order */
	p = strstr(out, "# TYPE envoy_cluster_upstream_rq_total counter\n");
	CHECK(p != NULL);
	if (p) {
		p += strlen("# TYPE envoy_cluster_upstream_rq_total counter\n");
		q = strstr(p, "\n\n");
		CHECK(q != NULL);
		if (q) {
			char *block = xstrndup(p, (size_t)(q - p + 1));
			CHECK_STR(block,
				  "envoy_cluster_upstream_rq_total{envoy_cluster_name=\"backend\"} 10\n"
				  "envoy_cluster_upstream_rq_total{envoy_cluster_name=\"outbound|80||reviews.default.svc\"} 90\n"
				  "envoy_cluster_upstream_rq_total{envoy_cluster_name=\"we\\\"ird\\\\name\\nx\"} 130\n"
				  "envoy_cluster_upstream_rq_total{envoy_cluster_name=\"web-api\"} 50\n");
			xfree(block);
		}
	}
	CHECK_CONTAINS(out, "envoy_listener_downstream_cx_total{envoy_listener_address=\"127.0.0.1_10000\"} 3\n");
	CHECK_CONTAINS(out, "envoy_http_downstream_rq{envoy_response_code=\"429\","
		       "envoy_http_conn_manager_prefix=\"outbound_0.0.0.0_80\"} 1\n");
	CHECK_CONTAINS(out, "envoy_listener_downstream_cx_length_ms_sum{envoy_listener_address=\"[__1]_8080\"} 1234.5\n");
	/* counters come first, then gauges, then histograms (Envoy's order) */
	CHECK(strstr(out, " counter\n") < strstr(out, " gauge\n"));
	CHECK(strstr(out, " histogram\n") > strstr(out, "envoy_server_live{} 1"));
	xfree(out);
	stats_store_free(st);
}

TEST(render_prometheus_label_escaping)
{
	struct stats_store *st = stats_store_new(1);
	struct stats_scope *s = stats_scope_new(st, "cluster.q", "cluster", "envoy_cluster_name",
						"a\"b\\c\nd\xff" "e", srv_desc, SRV_N);
	char *out;

	stats_gauge_set(s, live, 3);
	out = render(st, FMT_PROM, NULL, false, NULL, 0);
	CHECK_STR(out, "# TYPE envoy_cluster_live gauge\n"
		  "envoy_cluster_live{envoy_cluster_name=\"a\\\"b\\\\c\\nd\xef\xbf\xbd" "e\"} 3\n\n");
	xfree(out);
	/* text keeps the raw name; JSON escapes it and replaces invalid UTF-8 */
	out = render(st, FMT_TEXT, NULL, false, NULL, 0);
	CHECK_STR(out, "cluster.q.live: 3\n");
	xfree(out);
	stats_scope_free(s);
	s = stats_scope_new(st, "cluster.\xff\"x", "cluster", "envoy_cluster_name", "\xff\"x",
			    srv_desc, SRV_N);
	out = render(st, FMT_JSON, NULL, false, NULL, 0);
	CHECK_STR(out, "{\"stats\":[{\"name\":\"cluster.\xef\xbf\xbd\\\"x.live\",\"value\":0}]}");
	xfree(out);
	stats_store_free(st);
}

TEST(render_prometheus_name_sanitising)
{
	static const struct stat_desc d[] = { { "rq.time-ms", STAT_COUNTER } };
	struct stats_store *st = stats_store_new(1);
	struct stats_scope *a = stats_scope_new(st, "vhost.v1.vcluster.other", "vhost.vcluster",
						"9bad-tag", "v1", d, 1);
	struct stats_scope *b = stats_scope_new(st, "", "", NULL, NULL, d, 1);
	char *out;

	stats_inc(a, 0, 0);
	stats_add(b, 0, 0, 2);
	out = render(st, FMT_PROM, NULL, false, NULL, 0);
	CHECK_STR(out, "# TYPE envoy_rq_time_ms counter\n"
		  "envoy_rq_time_ms{} 2\n\n"
		  "# TYPE envoy_vhost_vcluster_rq_time_ms counter\n"
		  "envoy_vhost_vcluster_rq_time_ms{_9bad_tag=\"v1\"} 1\n\n");
	xfree(out);
	out = render(st, FMT_TEXT, NULL, false, NULL, 0);
	CHECK_STR(out, "rq.time-ms: 2\nvhost.v1.vcluster.other.rq.time-ms: 1\n");
	xfree(out);
	stats_store_free(st);
}

TEST(render_prometheus_type_collision)
{
	/* A counter and a gauge that map to one metric name must not produce
	 * two TYPE lines (Prometheus rejects that); the counter wins. */
	static const struct stat_desc dc[] = { { "x", STAT_COUNTER } };
	static const struct stat_desc dg[] = { { "x", STAT_GAUGE } };
	struct stats_store *st = stats_store_new(1);
	struct stats_scope *a = stats_scope_new(st, "p.a", "p", "envoy_p", "a", dc, 1);
	struct stats_scope *b = stats_scope_new(st, "p.b", "p", "envoy_p", "b", dg, 1);
	char *out;

	stats_inc(a, 0, 0);
	stats_gauge_set(b, 0, 5);
	out = render(st, FMT_PROM, NULL, false, NULL, 0);
	CHECK_STR(out, "# TYPE envoy_p_x counter\nenvoy_p_x{envoy_p=\"a\"} 1\n\n");
	xfree(out);
	stats_store_free(st);
}

TEST(render_filter_regex)
{
	struct stats_store *st = small_store();
	char *out;

	out = render(st, FMT_TEXT, "upstream_rq_[0-9]{3}$", false, NULL, 0);
	CHECK_STR(out, "cluster.backend.upstream_rq_200: 2\ncluster.backend.upstream_rq_503: 1\n");
	xfree(out);
	/* unanchored, against the full name */
	out = render(st, FMT_TEXT, "^server\\.", false, NULL, 0);
	CHECK_STR(out, "server.live: 1\n");
	xfree(out);
	out = render(st, FMT_TEXT, "backend\\.upstream_rq_5", true, NULL, 0);
	CHECK_STR(out, "cluster.backend.upstream_rq_503: 1\ncluster.backend.upstream_rq_5xx: 1\n");
	xfree(out);
	/* Prometheus filters on the text name too, not the Prometheus name */
	out = render(st, FMT_PROM, "cluster\\.backend\\.upstream_rq_total", false, NULL, 0);
	CHECK_STR(out, "# TYPE envoy_cluster_upstream_rq_total counter\n"
		  "envoy_cluster_upstream_rq_total{envoy_cluster_name=\"backend\"} 12\n\n");
	xfree(out);
	out = render(st, FMT_PROM, "envoy_", false, NULL, 0);
	CHECK_STR(out, "");
	xfree(out);
	out = render(st, FMT_JSON, "nomatch", false, NULL, 0);
	CHECK_STR(out, "{\"stats\":[]}");
	xfree(out);
	stats_store_free(st);
}

TEST(render_bad_regex)
{
	struct stats_store *st = small_store();
	char err[256];

	for (int fmt = FMT_TEXT; fmt <= FMT_PROM; fmt++) {
		err[0] = 0;
		CHECK(render(st, fmt, "upstream_(rq", false, err, sizeof(err)) == NULL);
		CHECK_CONTAINS(err, "missing closing parenthesis");
		CHECK_CONTAINS(err, "offset 12");
	}
	CHECK(render(st, FMT_TEXT, "[z-a]", false, err, sizeof(err)) == NULL);
	CHECK_CONTAINS(err, "range out of order");
	CHECK(render(st, FMT_TEXT, "(", false, NULL, 0) == NULL);  /* no err buffer: fine */
	stats_store_free(st);
}

/* Runs promtool on text; returns its exit status and fills report. */
static int promtool_check(const char *text, char **report)
{
	char in[] = "/tmp/remora_prom_in_XXXXXX", outp[] = "/tmp/remora_prom_out_XXXXXX";
	int fd = mkstemp(in), fo = mkstemp(outp), rc;
	char *cmd;
	FILE *f;
	long n;

	if (fd < 0 || fo < 0)
		die("mkstemp");
	if (write(fd, text, strlen(text)) != (ssize_t)strlen(text))
		die("write");
	close(fd);
	close(fo);
	cmd = xasprintf("promtool check metrics < %s > %s 2>&1", in, outp);
	rc = system(cmd);
	xfree(cmd);
	f = fopen(outp, "r");
	if (!f)
		die("fopen");
	fseek(f, 0, SEEK_END);
	n = ftell(f);
	rewind(f);
	*report = xmalloc((size_t)n + 1);
	(*report)[fread(*report, 1, (size_t)n, f)] = 0;
	fclose(f);
	unlink(in);
	unlink(outp);
	return rc == -1 ? -1 : WIFEXITED(rc) ? WEXITSTATUS(rc) : 128;
}

/* promtool exits 3 for lint findings even when the exposition parses.
 * Envoy's names never pass its lint (no HELP, counters without _total,
 * "_ms" units), so accept exit 3 only if every finding is one of those. */
static bool only_naming_lint(const char *report, bool verbose)
{
	static const char *allowed[] = { "no help text", "should have \"_total\" suffix",
					 "should not contain abbreviated units",
					 "use base unit" };
	const char *line = report;

	while (*line) {
		const char *end = strchr(line, '\n');
		size_t len = end ? (size_t)(end - line) : strlen(line);
		char *l = xstrndup(line, len);
		bool ok = len == 0;

		for (size_t i = 0; !ok && i < ARRAY_SIZE(allowed); i++)
			ok = strstr(l, allowed[i]) != NULL;
		if (!ok && verbose)
			fprintf(stderr, "  promtool: %s\n", l);
		xfree(l);
		if (!ok)
			return false;
		line += len + (end ? 1 : 0);
	}
	return true;
}

TEST(render_prometheus_promtool_accepts)
{
	struct stats_store *st = realistic_store();
	char *out = render(st, FMT_PROM, NULL, false, NULL, 0), *report = NULL;
	int rc;

	rc = promtool_check(out, &report);
	CHECK(rc == 0 || rc == 3);                       /* 127 = promtool missing */
	CHECK(!strstr(report, "error"));
	CHECK(only_naming_lint(report, true));
	xfree(report);
	xfree(out);

	/* used_only output too */
	out = render(st, FMT_PROM, NULL, true, NULL, 0);
	rc = promtool_check(out, &report);
	CHECK(rc == 0 || rc == 3);
	CHECK(only_naming_lint(report, true));
	xfree(report);
	xfree(out);

	/* the harness tells a broken exposition apart */
	rc = promtool_check("# TYPE a counter\na{x=\"1\"} 1\n# TYPE a counter\na 2\n", &report);
	CHECK_INT(rc, 1);
	CHECK_CONTAINS(report, "second TYPE line");
	CHECK(!only_naming_lint(report, false));
	xfree(report);
	stats_store_free(st);
}

TEST(render_all_formats_realistic_consistent)
{
	struct stats_store *st = realistic_store();
	char *text = render(st, FMT_TEXT, NULL, false, NULL, 0);
	char *js = render(st, FMT_JSON, NULL, false, NULL, 0);
	json_error_t jerr;
	json_t *j = json_loads(js ? js : "", 0, &jerr), *stats;
	/* the odd cluster's name has a newline in it */
	size_t text_lines = (size_t)(count_substr(text, "\n") - count_substr(text, "name\nx."));
	size_t hist_lines;

	CHECK(j != NULL);
	stats = json_object_get(j, "stats");
	CHECK(json_is_array(stats));
	/* text lists every stat on one line; JSON lists non-histograms plus one
	 * histograms element holding the rest */
	hist_lines = (size_t)count_substr(text, " P0(") + (size_t)count_substr(text, "No recorded");
	CHECK_INT(json_array_size(stats), text_lines - hist_lines + 1);
	CHECK_INT(json_array_size(json_object_get(json_object_get(
		json_array_get(stats, json_array_size(stats) - 1), "histograms"),
		"computed_quantiles")), hist_lines);
	CHECK_CONTAINS(text, "cluster.we\"ird\\name\nx.upstream_rq_total: 130\n");
	CHECK_CONTAINS(text, "cluster.web-api.upstream_rq_404: 4\n");
	CHECK_CONTAINS(js, "{\"name\":\"cluster.we\\\"ird\\\\name\\nx.upstream_rq_total\",\"value\":130}");
	json_decref(j);
	xfree(text);
	xfree(js);
	stats_store_free(st);
}

/* Two users of one name (two HCMs with one stat_prefix): one series per
 * name in every format; a second tag becomes a second label. */
TEST(render_shared_scope_once_and_second_tag)
{
	struct stats_store *st = stats_store_new(3);
	struct stats_scope *a = stats_scope_new(st, "http.in", "http",
						"envoy_http_conn_manager_prefix", "in", hcm_desc, HCM_N);
	struct stats_scope *b = stats_scope_new(st, "http.in", "http",
						"envoy_http_conn_manager_prefix", "in", hcm_desc, HCM_N);
	struct stats_scope_spec sp = { .name = "http.in.rds.local_route", .tag_prefix = "http.rds",
				       .tag_name = "envoy_http_conn_manager_prefix", .tag_value = "in",
				       .tag2_name = "envoy_rds_route_config",
				       .tag2_value = "local_route", .desc = srv_desc, .ndesc = SRV_N,
				       .flags = STATS_SCOPE_MAIN };
	struct stats_scope *r = stats_scope_get(st, &sp);
	char err[128], *s;

	stats_scope_add_family(a, "downstream_rq");
	stats_scope_add_family(b, "downstream_rq");
	stats_inc(a, 1, downstream_rq_total);
	stats_inc(b, 2, downstream_rq_total);
	stats_code_inc(a, 1, 0, 200);
	stats_code_inc(b, 2, 0, 200);
	stats_gauge_set(r, live, 7);
	s = render(st, FMT_TEXT, NULL, false, err, sizeof(err));
	CHECK_INT(count_substr(s, "http.in.downstream_rq_total: 2\n"), 1);
	CHECK_INT(count_substr(s, "http.in.downstream_rq_total"), 1);
	CHECK_INT(count_substr(s, "http.in.downstream_rq_200: 2\n"), 1);
	CHECK_INT(count_substr(s, "http.in.downstream_rq_2xx: 2\n"), 1);
	CHECK_CONTAINS(s, "http.in.rds.local_route.live: 7\n");
	xfree(s);
	s = render(st, FMT_PROM, NULL, false, err, sizeof(err));
	CHECK_INT(count_substr(s, "envoy_http_downstream_rq_total{"), 1);
	CHECK_INT(count_substr(s, "# TYPE envoy_http_downstream_rq_time histogram"), 1);
	CHECK_INT(count_substr(s, "envoy_http_downstream_rq_time_count{"), 1);
	CHECK_CONTAINS(s, "envoy_http_downstream_rq{envoy_response_code=\"200\","
		       "envoy_http_conn_manager_prefix=\"in\"} 2\n");
	CHECK_CONTAINS(s, "envoy_http_rds_live{envoy_http_conn_manager_prefix=\"in\","
		       "envoy_rds_route_config=\"local_route\"} 7\n");
	xfree(s);
	stats_scope_free(a);
	stats_scope_free(r);
	s = render(st, FMT_TEXT, NULL, false, err, sizeof(err));
	CHECK_CONTAINS(s, "http.in.downstream_rq_total: 2\n");   /* b still holds it */
	xfree(s);
	stats_scope_free(b);
	stats_store_free(st);
}
