/* http_inspector.c - envoy.filters.listener.http_inspector.
 *
 * Peeks at the first bytes of a plaintext connection: the HTTP/2 connection
 * preface sets the application protocol "h2c", an HTTP/1.x request line
 * "http/1.0" or "http/1.1" (Envoy's values), anything else nothing.  A TLS
 * connection (tls_inspector ran first) is left alone.  Stats, as Envoy's, in
 * the global tree http_inspector.*. */
#include "http_inspector.h"

#include <string.h>
#include "proxy/common.h"
#include "proxy/filter.h"
#include "proxy/snapshot.h"
#include "proxy/worker.h"
#include "filters/listener/global_stats.h"

#define HTTP_INSPECTOR_TYPE "type.googleapis.com/envoy.extensions.filters.listener.http_inspector.v3.HttpInspector"

#define HTTP_INSPECTOR_STATS(X)                                                  \
	X(COUNTER, read_error) X(COUNTER, http10_found) X(COUNTER, http11_found) \
	X(COUNTER, http2_found) X(COUNTER, http_not_found)
enum { HTTP_INSPECTOR_STATS(STATS_ENUM) HTTP_INSPECTOR_STATS_N };
static const struct stat_desc hi_stat_desc[] = { HTTP_INSPECTOR_STATS(STATS_DESC) };

static const char h2_preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

static bool is_tchar(uint8_t c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       (c && strchr("!#$%&'*+-.^_`|~", c));
}

enum http_detect http_inspector_detect(const uint8_t *d, size_t n)
{
	size_t plen = sizeof(h2_preface) - 1, i = 0;
	if (!n)
		return HTTP_DETECT_NEED_MORE;
	if (!memcmp(d, h2_preface, n < plen ? n : plen))
		return n >= plen ? HTTP_DETECT_HTTP2 : HTTP_DETECT_NEED_MORE;
	/* request-line = method SP request-target SP HTTP-version CRLF */
	while (i < n && is_tchar(d[i]))
		i++;
	if (i == n)
		return HTTP_DETECT_NEED_MORE;
	if (!i || d[i] != ' ')
		return HTTP_DETECT_NOT_HTTP;
	size_t t = ++i;
	while (i < n && d[i] > 0x20 && d[i] != 0x7f)
		i++;
	if (i == n)
		return HTTP_DETECT_NEED_MORE;
	if (i == t || d[i] != ' ')
		return HTTP_DETECT_NOT_HTTP;
	i++;
	static const char v[] = "HTTP/1.";
	for (size_t k = 0; k < sizeof(v) - 1; k++, i++) {
		if (i == n)
			return HTTP_DETECT_NEED_MORE;
		if (d[i] != (uint8_t)v[k])
			return HTTP_DETECT_NOT_HTTP;
	}
	if (i == n)
		return HTTP_DETECT_NEED_MORE;
	uint8_t minor = d[i++];
	if (minor != '0' && minor != '1')
		return HTTP_DETECT_NOT_HTTP;
	if (i == n)
		return HTTP_DETECT_NEED_MORE;
	if (d[i] == '\r') {
		if (++i == n)
			return HTTP_DETECT_NEED_MORE;
	}
	if (d[i] != '\n')
		return HTTP_DETECT_NOT_HTTP;
	return minor == '0' ? HTTP_DETECT_HTTP10 : HTTP_DETECT_HTTP11;
}

struct hi_cfg {
	struct stats_scope *stats;           /* shared (global_stats) */
};

static struct global_stats hi_global;

static void *hi_parse(struct cfg_ctx *c, const json_t *tc, struct build_ctx *b)
{
	static const char *const f[] = { NULL };
	if (tc && (cfg_expect_object(c, tc) || cfg_check_fields(c, tc, f)))
		return NULL;
	struct hi_cfg *cfg = xcalloc(1, sizeof(*cfg));
	cfg->stats = global_stats_get(&hi_global, b->stats, "http_inspector", hi_stat_desc,
				      HTTP_INSPECTOR_STATS_N);
	return cfg;
}

static void hi_free(void *p)
{
	struct hi_cfg *cfg = p;
	if (!cfg)
		return;
	global_stats_put(&hi_global, cfg->stats);
	free(cfg);
}

static size_t hi_max_read(const void *cfg)
{
	(void)cfg;
	return HTTP_INSPECTOR_MAX_READ;
}

static enum lf_status hi_on_data(struct listener_accept *a, const void *p, struct worker *w,
				 const uint8_t *data, size_t len)
{
	const struct hi_cfg *cfg = p;
	if (!data) {
		stats_inc(cfg->stats, w->shard, read_error);
		return LF_CLOSE;
	}
	/* TLS (or another transport) was detected before us: not ours to judge */
	if (a->transport_protocol && strcmp(a->transport_protocol, "raw_buffer"))
		return LF_CONTINUE;
	switch (http_inspector_detect(data, len)) {
	case HTTP_DETECT_NEED_MORE:
		if (len < HTTP_INSPECTOR_MAX_READ)
			return LF_AGAIN;
		break;
	case HTTP_DETECT_HTTP10:
		stats_inc(cfg->stats, w->shard, http10_found);
		listener_accept_set_alpn1(a, "http/1.0");
		return LF_CONTINUE;
	case HTTP_DETECT_HTTP11:
		stats_inc(cfg->stats, w->shard, http11_found);
		listener_accept_set_alpn1(a, "http/1.1");
		return LF_CONTINUE;
	case HTTP_DETECT_HTTP2:
		stats_inc(cfg->stats, w->shard, http2_found);
		listener_accept_set_alpn1(a, "h2c");
		return LF_CONTINUE;
	default:
		break;
	}
	stats_inc(cfg->stats, w->shard, http_not_found);
	return LF_CONTINUE;
}

const struct listener_filter_ops http_inspector_listener_filter_ops = {
	.name = "envoy.filters.listener.http_inspector",
	.type_url = HTTP_INSPECTOR_TYPE,
	.parse_config = hi_parse,
	.free_config = hi_free,
	.max_read_bytes = hi_max_read,
	.on_data = hi_on_data,
};
