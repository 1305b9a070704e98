/* webhook.c - `remora inject-webhook`: the injector as a Kubernetes mutating
 * admission webhook over HTTPS (libevent evhttp on bufferevent_openssl).
 * POST /inject takes an AdmissionReview v1 for a Pod and answers with the
 * same review carrying a base64 JSONPatch (webhook_review, no I/O); GET
 * /healthz answers 200 for the Deployment's probes. */
#include "inject_main.h"
#include "proxy/common.h"

#include <getopt.h>
#include <signal.h>
#include <event2/buffer.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>

#define WEBHOOK_MAX_BODY (8u << 20)

static char *base64(const char *s, size_t len)
{
	char *out = xmalloc(4 * ((len + 2) / 3) + 1);
	EVP_EncodeBlock((unsigned char *)out, (const unsigned char *)s, (int)len);
	return out;
}

static json_t *deny(json_t *resp, int code, const char *msg)
{
	json_object_set_new(resp, "allowed", json_false());
	json_object_set_new(resp, "status", json_pack("{s:i,s:s}", "code", code, "message", msg));
	return resp;
}

json_t *webhook_review(const json_t *review, const struct inject_opts *o, char *err,
		       size_t errlen)
{
	const json_t *req = json_object_get(review, "request");
	const char *uid = json_string_value(json_object_get(req, "uid"));
	const json_t *pod = json_object_get(req, "object");
	const char *kind = json_string_value(json_object_get(json_object_get(req, "kind"), "kind"));
	char why[512];

	if (!json_is_object(review) || !json_is_object(req) || !uid) {
		snprintf(err, errlen, "not an AdmissionReview with a request and a uid");
		return NULL;
	}
	json_t *resp = json_pack("{s:s,s:b}", "uid", uid, "allowed", 1);
	json_t *out = json_pack("{s:s,s:s,s:o}", "apiVersion", "admission.k8s.io/v1", "kind",
				"AdmissionReview", "response", resp);
	if ((kind && strcmp(kind, "Pod")) || !json_is_object(pod))
		return out; /* not ours: allowed unchanged */
	json_t *before = json_deep_copy(pod);
	if (!json_object_get(before, "kind"))
		json_object_set_new(before, "kind", json_string("Pod"));
	json_t *after = json_deep_copy(before);
	enum inject_result r = inject_doc(after, o, why, sizeof(why));
	if (r == INJECT_FAILED) {
		deny(resp, 400, why);
	} else if (r == INJECT_DONE) {
		json_t *patch = json_patch_diff(before, after);
		char *text = json_dumps(patch, JSON_COMPACT);
		char *b64 = base64(text, strlen(text));
		json_object_set_new(resp, "patchType", json_string("JSONPatch"));
		json_object_set_new(resp, "patch", json_string(b64));
		free(b64);
		free(text);
		json_decref(patch);
	}
	json_decref(before);
	json_decref(after);
	return out;
}

static void reply(struct evhttp_request *r, int code, const char *reason, const char *ctype,
		  const char *body)
{
	struct evbuffer *b = evbuffer_new();
	evbuffer_add(b, body, strlen(body));
	evhttp_add_header(evhttp_request_get_output_headers(r), "Content-Type", ctype);
	evhttp_send_reply(r, code, reason, b);
	evbuffer_free(b);
}

static void on_inject(struct evhttp_request *r, void *arg)
{
	const struct inject_opts *o = arg;
	struct evbuffer *in = evhttp_request_get_input_buffer(r);
	size_t len = evbuffer_get_length(in);
	json_error_t jerr;
	char err[256];

	if (evhttp_request_get_command(r) != EVHTTP_REQ_POST) {
		reply(r, 405, "Method Not Allowed", "text/plain", "POST an AdmissionReview\n");
		return;
	}
	json_t *review = json_loadb((const char *)evbuffer_pullup(in, -1), len, 0, &jerr);
	json_t *out = review ? webhook_review(review, o, err, sizeof(err)) : NULL;
	json_decref(review);
	if (!out) {
		char *msg = xasprintf("invalid AdmissionReview: %s\n", review ? err : jerr.text);
		reply(r, 400, "Bad Request", "text/plain", msg);
		free(msg);
		return;
	}
	char *text = json_dumps(out, JSON_COMPACT);
	json_decref(out);
	reply(r, 200, "OK", "application/json", text);
	free(text);
}

static void on_other(struct evhttp_request *r, void *arg)
{
	const char *path = evhttp_uri_get_path(evhttp_request_get_evhttp_uri(r));
	if (path && !strcmp(path, "/healthz"))
		reply(r, 200, "OK", "text/plain", "ok\n");
	else
		reply(r, 404, "Not Found", "text/plain", "not found\n");
}

static struct bufferevent *tls_bev(struct event_base *base, void *arg)
{
	SSL *ssl = SSL_new(arg);
	if (!ssl)
		return NULL;
	return bufferevent_openssl_socket_new(base, -1, ssl, BUFFEREVENT_SSL_ACCEPTING,
					      BEV_OPT_CLOSE_ON_FREE);
}

static void on_signal(evutil_socket_t fd, short what, void *arg)
{
	event_base_loopexit(arg, NULL);
}

int inject_webhook_main(int argc, char **argv)
{
	static const struct option opts[] = {
		{"cert", required_argument, NULL, 'c'},
		{"key", required_argument, NULL, 'k'},
		{"port", required_argument, NULL, 'p'},
		{"address", required_argument, NULL, 'a'},
		{"legacy-sidecar", no_argument, NULL, 'L'},
		{"image", required_argument, NULL, 'i'},
		{"control-plane", required_argument, NULL, 'P'},
		{"xds-address", required_argument, NULL, 'P'},
		{"xds-plaintext", no_argument, NULL, 'P'},
		{"ca-address", required_argument, NULL, 'P'},
		{"trust-domain", required_argument, NULL, 'P'},
		{"ca-token-secret", required_argument, NULL, 'P'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	struct inject_opts o;
	const char *cert = NULL, *key = NULL, *addr = "0.0.0.0";
	long port = 15017;
	int c, rc = 1, li = 0;
	char *end, oerr[256];

	inject_opts_default(&o);
	optind = 1;
	while ((c = getopt_long(argc, argv, "h", opts, &li)) != -1) {
		switch (c) {
		case 'c': cert = optarg; break;
		case 'k': key = optarg; break;
		case 'a': addr = optarg; break;
		case 'L': o.legacy_sidecar = true; break;
		case 'i': o.image = optarg; break;
		case 'P':
			if (inject_opts_set(&o, opts[li].name, optarg, oerr, sizeof(oerr))) {
				fprintf(stderr, "remora inject-webhook: %s\n", oerr);
				return 2;
			}
			break;
		case 'p':
			port = strtol(optarg, &end, 10);
			if (*end || port <= 0 || port > 65535) {
				fprintf(stderr, "remora inject-webhook: --port must be 1..65535\n");
				return 2;
			}
			break;
		case 'h':
			printf("usage: remora inject-webhook --cert FILE --key FILE [--port N (15017)]\n"
			       "       [--address IP] [--image IMAGE] [--xds-address HOST:PORT]\n"
			       "       [--xds-plaintext] [--ca-address HOST:PORT|none]\n"
			       "       [--trust-domain TD] [--ca-token-secret NAME] [--legacy-sidecar]\n"
			       "(the same injection as `remora inject`; see its --help)\n");
			return 0;
		default:
			return 2;
		}
	}
	if (!cert || !key || optind != argc) {
		fprintf(stderr, "remora inject-webhook: --cert and --key are required\n");
		return 2;
	}
	signal(SIGPIPE, SIG_IGN);
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1 ||
	    SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1 ||
	    SSL_CTX_check_private_key(ctx) != 1) {
		unsigned long e = ERR_get_error();
		fprintf(stderr, "remora inject-webhook: %s / %s: %s\n", cert, key,
			e ? ERR_reason_error_string(e) : "invalid");
		SSL_CTX_free(ctx);
		return 1;
	}
	struct event_base *base = event_base_new();
	struct evhttp *http = evhttp_new(base);
	struct event *sigterm = evsignal_new(base, SIGTERM, on_signal, base);
	struct event *sigint = evsignal_new(base, SIGINT, on_signal, base);
	event_add(sigterm, NULL);
	event_add(sigint, NULL);
	evhttp_set_bevcb(http, tls_bev, ctx);
	evhttp_set_max_body_size(http, WEBHOOK_MAX_BODY);
	evhttp_set_timeout(http, 30);
	evhttp_set_allowed_methods(http, EVHTTP_REQ_GET | EVHTTP_REQ_POST);
	evhttp_set_cb(http, "/inject", on_inject, &o);
	evhttp_set_gencb(http, on_other, NULL);
	if (!evhttp_bind_socket_with_handle(http, addr, (uint16_t)port)) {
		fprintf(stderr, "remora inject-webhook: cannot listen on %s:%ld\n", addr, port);
	} else {
		fprintf(stderr, "remora inject-webhook: listening on https://%s:%ld/inject\n", addr,
			port);
		event_base_dispatch(base);
		rc = 0;
	}
	event_free(sigterm);
	event_free(sigint);
	evhttp_free(http);
	event_base_free(base);
	SSL_CTX_free(ctx);
	return rc;
}
