/* tls_hooks.c - what the connection manager does with a TLS downstream:
 * ALPN picks the codec (codec_type AUTO), :scheme / x-forwarded-proto say
 * https, and forward_client_cert_details / set_current_client_cert_details
 * shape x-forwarded-client-cert as Envoy does. */
#include "hcm-t.h"

#include "proxy/http/headers.h"
#include "tls/tls.h"

static const char *const fcc_names[] = { "SANITIZE", "FORWARD_ONLY", "APPEND_FORWARD",
					 "SANITIZE_SET", "ALWAYS_FORWARD_ONLY" };

int hcm_parse_client_cert(struct cfg_ctx *c, const json_t *j, struct hcm_cfg *cfg)
{
	static const char *const f[] = { "subject", "cert", "chain", "dns", "uri", NULL };
	static const struct { const char *name; unsigned flag; } bits[] = {
		{ "subject", TLS_XFCC_SUBJECT }, { "cert", TLS_XFCC_CERT }, { "chain", TLS_XFCC_CHAIN },
		{ "dns", TLS_XFCC_DNS }, { "uri", TLS_XFCC_URI } };
	const json_t *v;
	int mode = 0;
	if (cfg_enum(c, j, "forward_client_cert_details", fcc_names, ARRAY_SIZE(fcc_names), &mode))
		return RM_ERROR;
	cfg->fcc_mode = (enum hcm_fcc)mode;
	if ((v = cfg_enter(c, j, "set_current_client_cert_details"))) {
		if (cfg_expect_object(c, v) || cfg_check_fields(c, v, f))
			return RM_ERROR;
		for (size_t i = 0; i < ARRAY_SIZE(bits); i++) {
			bool on = false;
			if (cfg_bool(c, v, bits[i].name, &on))
				return RM_ERROR;
			if (on)
				cfg->fcc_details |= bits[i].flag;
		}
		cfg_leave(c);
	}
	return RM_OK;
}

/* codec_type AUTO on TLS: the ALPN result decides (2: "h2", 1: "http/1.1");
 * 0: no ALPN, sniff the preface as on cleartext. */
int hcm_alpn_proto(struct hcm_conn *hc)
{
	struct tls_conn *tc = conn_tls(hc->super.bev);
	unsigned n = 0;
	const char *p = tc ? tls_conn_alpn(tc, &n) : NULL;
	if (p && n == 2 && !memcmp(p, "h2", 2))
		return 2;
	if (p && n == 8 && !memcmp(p, "http/1.1", 8))
		return 1;
	return 0;
}

/* Envoy's mutateXfccRequestHeader: on a connection without a client
 * certificate, only ALWAYS_FORWARD_ONLY keeps the header. */
void hcm_tls_request_headers(struct hcm_conn *hc, struct http_headers *h)
{
	const struct hcm_cfg *cfg = hc->cfg;
	struct tls_conn *tc = conn_tls(hc->super.bev);
	static const char xfcc[] = "x-forwarded-client-cert";
	size_t n;

	if (conn_is_tls(hc->super.bev))
		hdrs_set(h, ":scheme", "https", 5);
	if (cfg->fcc_mode == HCM_FCC_ALWAYS_FORWARD_ONLY)
		return;
	if (!tc || !tls_conn_peer_cert_presented(tc) || cfg->fcc_mode == HCM_FCC_SANITIZE) {
		hdrs_del(h, xfcc);
		return;
	}
	if (cfg->fcc_mode == HCM_FCC_FORWARD_ONLY)
		return;
	const char *mine = tls_conn_xfcc(tc, cfg->fcc_details, &n);
	if (!mine)
		return;
	size_t old_len = 0;
	const char *old = cfg->fcc_mode == HCM_FCC_APPEND_FORWARD ? hdrs_get(h, xfcc, &old_len) : NULL;
	if (old && old_len) {
		char *v = xasprintf("%.*s,%.*s", (int)old_len, old, (int)n, mine);
		hdrs_set(h, xfcc, v, strlen(v));
		free(v);
	} else {
		hdrs_set(h, xfcc, mine, n);
	}
}

const char *http_stream_peer_principal(const struct http_stream *s)
{
	return downstream_peer_principal(&s->hc->super);
}

bool http_stream_downstream_tls(const struct http_stream *s)
{
	return conn_is_tls(s->hc->super.bev);
}
