/* main.c - remora-cp, the reference control plane: ADS (SotW and delta) and
 * REST from a directory of Envoy v3 resources watched with inotify.
 * Single-threaded: one libevent base carries the gRPC ports, the admin port
 * and the directory watch.  See docs/control-plane.md. */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <unistd.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include "cp.h"
#include "cp_server.h"
#include "ca.h"
#include "kube_api.h"
#include "kube_watch.h"
#include "../../tls/ca_client.h"
#include "../../proxy/common.h"
#include "../../proxy/log.h"

struct cp_main {
	struct event_base *base;
	const char *dir;              /* --config-dir, or NULL */
	const char *catalog;          /* --catalog, or NULL */
	struct cp_config *cfg;        /* owned: the config being served */
	struct cp_xds *xds;           /* owned */
	int ifd;                      /* inotify */
	struct event *iev, *debounce; /* owned */
	struct evhttp *http;          /* owned: admin + REST */
	struct ca *ca;                /* owned: the CA, NULL without --ca-tokens / the API */
	struct kube_api *kube;        /* owned: TokenReview client, NULL without the API */
	struct kube_watch *kw;        /* owned: service discovery, NULL without --kube-discovery */
	struct event *kw_start;       /* owned: serve without discovery if it does not sync */
	struct cp_server *tls_srv;    /* not owned: the CA port when it serves TLS */
	const char *serving_san;      /* --serving-san */
	uint64_t serving_ttl_s;       /* --serving-cert-ttl */
	time_t serving_not_after;     /* of the serving certificate in force */
	struct event *renew;          /* owned: reissue at half-life */
};

static struct cp_main *the_main;   /* for the health check */

static bool serving(void)
{
	return the_main && the_main->cfg;
}

static void reply(struct evhttp_request *req, int code, const char *ctype, const char *body)
{
	struct evbuffer *b = evbuffer_new();
	evbuffer_add(b, body, strlen(body));
	evhttp_add_header(evhttp_request_get_output_headers(req), "content-type", ctype);
	evhttp_send_reply(req, code, code == 200 ? "OK" : code == 304 ? "Not Modified" : "Error", b);
	evbuffer_free(b);
}

/* Issue a serving certificate for the CA port from the CA's root and put it
 * in force for new connections.  RM_ERROR with err. */
static int serving_cert(struct cp_main *m, char *err, size_t errlen)
{
	X509 *x;
	EVP_PKEY *k;
	if (ca_issue_serving(m->ca, m->serving_san, m->serving_ttl_s, &x, &k, err, errlen))
		return RM_ERROR;
	SSL_CTX *ctx = cp_server_tls_ctx(x, k, err, errlen);
	X509_free(x);
	EVP_PKEY_free(k);
	if (!ctx)
		return RM_ERROR;
	cp_server_set_tls(m->tls_srv, ctx);
	SSL_CTX_free(ctx);
	m->serving_not_after = time(NULL) + (time_t)m->serving_ttl_s;
	if (m->renew) {
		struct timeval tv = { (time_t)(m->serving_ttl_s / 2), 0 };
		evtimer_add(m->renew, &tv);
	}
	log_info("remora-cp: CA port serves TLS with a certificate for %s (valid %llu s, "
		 "renewed at half-life)", m->serving_san, (unsigned long long)m->serving_ttl_s);
	return RM_OK;
}

static void on_renew(evutil_socket_t fd, short what, void *arg)
{
	struct cp_main *m = arg;
	char err[512];
	(void)fd;
	(void)what;
	if (serving_cert(m, err, sizeof(err))) {
		log_error("remora-cp: renewing the serving certificate: %s (retrying in 60 s)", err);
		struct timeval tv = { 60, 0 };
		evtimer_add(m->renew, &tv);
	}
}

static char *tls_metrics_text(const struct cp_main *m)
{
	const struct cp_tls_stats *t = cp_server_tls_stats(m->tls_srv);
	time_t now = time(NULL);
	return xasprintf("# TYPE remora_cp_tls_handshakes_total counter\n"
			 "remora_cp_tls_handshakes_total %llu\n"
			 "# TYPE remora_cp_tls_handshake_errors_total counter\n"
			 "remora_cp_tls_handshake_errors_total %llu\n"
			 "# TYPE remora_cp_serving_cert_expiry_seconds gauge\n"
			 "remora_cp_serving_cert_expiry_seconds %lld\n",
			 (unsigned long long)t->handshakes, (unsigned long long)t->handshake_errors,
			 (long long)(m->serving_not_after > now ? m->serving_not_after - now : 0));
}

static void on_http(struct evhttp_request *req, void *arg)
{
	struct cp_main *m = arg;
	const char *uri = evhttp_request_get_uri(req);
	char path[256];
	snprintf(path, sizeof(path), "%s", uri);
	char *q = strchr(path, '?');
	if (q)
		*q = 0;
	if (!strcmp(path, "/ready")) {
		reply(req, m->cfg ? 200 : 503, "text/plain", m->cfg ? "LIVE\n" : "NOT READY\n");
	} else if (!strcmp(path, "/metrics") || !strcmp(path, "/stats/prometheus")) {
		char *t = cp_xds_metrics(m->xds);
		if (m->ca) {
			char *c = ca_metrics_text(m->ca), *both = xasprintf("%s%s", t, c);
			free(t);
			free(c);
			t = both;
		}
		if (m->kw) {
			char *c = kube_watch_metrics_text(m->kw), *both = xasprintf("%s%s", t, c);
			free(t);
			free(c);
			t = both;
		}
		if (m->kube) {
			char *c = kube_api_metrics_text(m->kube), *both = xasprintf("%s%s", t, c);
			free(t);
			free(c);
			t = both;
		}
		if (m->tls_srv) {
			char *c = tls_metrics_text(m), *both = xasprintf("%s%s", t, c);
			free(t);
			free(c);
			t = both;
		}
		reply(req, 200, "text/plain; version=0.0.4", t);
		free(t);
	} else if (!strcmp(path, "/debug/config")) {
		char *t = cp_xds_debug_json(m->xds);
		reply(req, 200, "application/json", t);
		free(t);
	} else if (!strncmp(path, "/v3/discovery:", 14)) {
		if (evhttp_request_get_command(req) != EVHTTP_REQ_POST) {
			reply(req, 405, "text/plain", "POST a DiscoveryRequest\n");
			return;
		}
		struct evbuffer *in = evhttp_request_get_input_buffer(req);
		size_t len = evbuffer_get_length(in);
		char *body = xmalloc(len + 1);
		evbuffer_remove(in, body, len);
		body[len] = 0;
		char *out = NULL;
		int code = cp_xds_rest(m->xds, path + 14, body, len, &out);
		free(body);
		if (code == 304) {
			evhttp_send_reply(req, 304, "Not Modified", NULL);
		} else {
			reply(req, code, code == 200 ? "application/json" : "text/plain", out);
		}
		free(out);
	} else {
		reply(req, 404, "text/plain", "not found: /ready /metrics /debug/config "
					      "POST /v3/discovery:{clusters,endpoints,listeners,routes,secrets}\n");
	}
}

static void watch_dirs(struct cp_main *m)
{
	static const uint32_t mask = IN_CLOSE_WRITE | IN_MOVED_TO | IN_MOVED_FROM | IN_CREATE |
				     IN_DELETE | IN_DELETE_SELF | IN_ATTRIB;
	char p[PATH_MAX];
	if (m->catalog) {   /* its directory: editors replace the file */
		snprintf(p, sizeof(p), "%s", m->catalog);
		char *slash = strrchr(p, '/');
		if (slash)
			*slash = 0;
		inotify_add_watch(m->ifd, slash ? p : ".", mask);
	}
	if (!m->dir)
		return;
	inotify_add_watch(m->ifd, m->dir, mask);
	snprintf(p, sizeof(p), "%s/nodes", m->dir);
	if (inotify_add_watch(m->ifd, p, mask) < 0)
		return;
	for (size_t i = 0; m->cfg && i < m->cfg->nnodes; i++) {
		char sub[PATH_MAX + 300];
		snprintf(sub, sizeof(sub), "%s/%s", p, m->cfg->nodes[i].name);
		inotify_add_watch(m->ifd, sub, mask);
	}
}

static void reload(struct cp_main *m)
{
	char err[2048];
	struct cp_config *c = cp_config_load(m->dir, m->catalog, err, sizeof(err));
	if (!c) {
		log_error("remora-cp: %s (keeping generation %u)", err, m->cfg ? m->cfg->generation : 0);
		cp_xds_set_error(m->xds, err);
		watch_dirs(m);
		return;
	}
	struct cp_config *old = m->cfg;
	m->cfg = c;
	cp_xds_set_config(m->xds, c);
	cp_config_free(old);
	log_info("remora-cp: loaded %s%s%s (generation %u)", m->dir ? m->dir : "",
		 m->dir && m->catalog ? " + " : "", m->catalog ? m->catalog : "", c->generation);
	watch_dirs(m);   /* new nodes/<name> directories */
}

static void on_debounce(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	reload(arg);
}

/* Discovery changed: reload like a catalog edit (debounced). */
static void on_discovered(void *arg)
{
	struct cp_main *m = arg;
	cp_config_set_discovered(kube_watch_services(m->kw));
	struct timeval tv = { 0, 100000 };
	event_add(m->debounce, &tv);
}

static void on_kw_start(evutil_socket_t fd, short what, void *arg)
{
	struct cp_main *m = arg;
	(void)fd;
	(void)what;
	if (!m->cfg && !kube_watch_synced(m->kw)) {
		log_warn("remora-cp: the Kubernetes API has not been listed yet: serving the "
			 "configuration without discovered services meanwhile");
		reload(m);
	}
}

static void on_inotify(evutil_socket_t fd, short what, void *arg)
{
	struct cp_main *m = arg;
	char buf[8192] __attribute__((aligned(__alignof__(struct inotify_event))));
	(void)what;
	while (read(fd, buf, sizeof(buf)) > 0)
		;
	/* editors write in several steps: reload once things settle */
	struct timeval tv = { 0, 100000 };
	event_add(m->debounce, &tv);
}

static void on_signal(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	event_base_loopexit(arg, NULL);
}

static void usage(void)
{
	fprintf(stderr,
		"usage: remora-cp [--config-dir DIR] [--catalog FILE] [--grpc-port 15010]\n"
		"                 [--ca-port 15012] [--admin-port 15014] [--address 0.0.0.0]\n"
		"                 [--log-level info]\n"
		"                 [--ca-tokens FILE [--ca-dir DIR | --ca-cert FILE --ca-key FILE]\n"
		"                  [--trust-domain cluster.local] [--max-cert-ttl 24h]\n"
		"                  [--serving-san NAMES] [--serving-cert-ttl 720h]\n"
		"                  [--plaintext-ca-port]]\n"
		"                 [--kube-api https://HOST:PORT | --no-kube-api]\n"
		"                 [--kube-token-file FILE] [--kube-ca-file FILE]\n"
		"                 [--token-review-cache-ttl 60s] [--kube-api-timeout 5s]\n"
		"                 [--kube-discovery [--kube-namespaces NS,...]\n"
		"                  [--kube-cluster-domain cluster.local] [--kube-watch-timeout 5m]]\n"
		"       remora-cp --ca-init --ca-dir DIR [--trust-domain cluster.local]\n"
		"(at least one of --config-dir and --catalog)\n"
		"With the CA, the CA port (15012) serves xDS and CreateCertificate over TLS with a\n"
		"certificate the CA issues itself for --serving-san (default: remora-cp,\n"
		"remora-cp.NS, remora-cp.NS.svc, remora-cp.NS.svc.cluster.local with NS =\n"
		"$POD_NAMESPACE or remora-system); --plaintext-ca-port keeps it cleartext.\n"
		"The CA is enabled by --ca-tokens and/or the Kubernetes API: --kube-api URL, or\n"
		"in a pod (KUBERNETES_SERVICE_HOST/PORT set) with --ca-dir or --ca-cert, unless\n"
		"--no-kube-api.  With the API, a bearer token not in --ca-tokens is checked\n"
		"with a TokenReview (audience remora-ca) using the pod's service-account token\n"
		"and ca.crt (" KUBE_SA_DIR ").\n"
		"--kube-discovery lists and watches Services and EndpointSlices (every namespace,\n"
		"or --kube-namespaces) and serves each Service port as a catalog service\n"
		"NAME.NS.svc.DOMAIN (further ports NAME.NS.svc.DOMAIN:PORT) with the ready\n"
		"endpoints; it needs the API (--kube-api, or in a pod).\n"
		"--ca-init writes a new root to --ca-dir (root-cert.pem, root-key.pem) and exits.\n");
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "config-dir", required_argument, NULL, 'd' },
		{ "catalog", required_argument, NULL, 'C' },
		{ "grpc-port", required_argument, NULL, 'g' },
		{ "ca-port", required_argument, NULL, 'c' },
		{ "admin-port", required_argument, NULL, 'a' },
		{ "address", required_argument, NULL, 'A' },
		{ "log-level", required_argument, NULL, 'l' },
		{ "ca-tokens", required_argument, NULL, 'T' },
		{ "ca-dir", required_argument, NULL, 'D' },
		{ "ca-cert", required_argument, NULL, 'E' },
		{ "ca-key", required_argument, NULL, 'K' },
		{ "trust-domain", required_argument, NULL, 't' },
		{ "max-cert-ttl", required_argument, NULL, 'M' },
		{ "serving-san", required_argument, NULL, 'S' },
		{ "serving-cert-ttl", required_argument, NULL, 'V' },
		{ "plaintext-ca-port", no_argument, NULL, 'P' },
		{ "ca-init", no_argument, NULL, 'I' },
		{ "kube-api", required_argument, NULL, 'k' },
		{ "no-kube-api", no_argument, NULL, 'N' },
		{ "kube-token-file", required_argument, NULL, 'F' },
		{ "kube-ca-file", required_argument, NULL, 'R' },
		{ "token-review-cache-ttl", required_argument, NULL, 'Y' },
		{ "kube-api-timeout", required_argument, NULL, 'O' },
		{ "kube-discovery", no_argument, NULL, 'W' },
		{ "kube-namespaces", required_argument, NULL, 'n' },
		{ "kube-watch-timeout", required_argument, NULL, 'w' },
		{ "kube-cluster-domain", required_argument, NULL, 'm' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct cp_main m = { .ifd = -1 };
	int grpc_port = 15010, ca_port = 15012, admin_port = 15014, o;
	const char *address = "0.0.0.0";
	struct ca_options cao = { 0 };
	unsigned long ttl;
	bool plaintext_ca = false, ca_init = false, no_kube = false, kube_explicit = false;
	struct kube_api_options kao = { 0 };
	struct kube_watch_options kwo = { 0 };
	bool discovery = false;
	char *auto_url = NULL;
	cao.review_cache_s = 60;
	char *default_san = NULL;
	m.serving_ttl_s = 720 * 3600;
	while ((o = getopt_long(argc, argv, "d:h", opts, NULL)) != -1) {
		switch (o) {
		case 'd': m.dir = optarg; break;
		case 'C': m.catalog = optarg; break;
		case 'g': grpc_port = atoi(optarg); break;
		case 'c': ca_port = atoi(optarg); break;
		case 'a': admin_port = atoi(optarg); break;
		case 'A': address = optarg; break;
		case 'T': cao.tokens_path = optarg; break;
		case 'D': cao.dir = optarg; break;
		case 'E': cao.cert_path = optarg; break;
		case 'K': cao.key_path = optarg; break;
		case 't': cao.trust_domain = optarg; break;
		case 'M':
			if (ca_client_parse_ttl(optarg, &ttl)) {
				fprintf(stderr, "remora-cp: --max-cert-ttl: '%s' is not a duration (24h, "
						"90m, 30s)\n", optarg);
				return 2;
			}
			cao.max_ttl_s = ttl;
			break;
		case 'S': m.serving_san = optarg; break;
		case 'P': plaintext_ca = true; break;
		case 'I': ca_init = true; break;
		case 'k': kao.url = optarg; kube_explicit = true; break;
		case 'N': no_kube = true; break;
		case 'O':
			if (ca_client_parse_ttl(optarg, &ttl) || !ttl || ttl > 300) {
				fprintf(stderr, "remora-cp: --kube-api-timeout: '%s' is not a duration "
						"of 1s to 5m\n", optarg);
				return 2;
			}
			kao.timeout_ms = (uint64_t)ttl * 1000;
			break;
		case 'W': discovery = true; break;
		case 'n': kwo.namespaces = optarg; break;
		case 'm': kwo.domain = optarg; break;
		case 'w':
			if (ca_client_parse_ttl(optarg, &ttl) || !ttl || ttl > 3600) {
				fprintf(stderr, "remora-cp: --kube-watch-timeout: '%s' is not a duration "
						"of 1s to 1h\n", optarg);
				return 2;
			}
			kwo.watch_timeout_s = (unsigned)ttl;
			break;
		case 'F': kao.token_path = optarg; break;
		case 'R': kao.ca_path = optarg; break;
		case 'Y':
			if (!strcmp(optarg, "0")) {
				cao.review_cache_s = 0;
			} else if (ca_client_parse_ttl(optarg, &ttl)) {
				fprintf(stderr, "remora-cp: --token-review-cache-ttl: '%s' is not a "
						"duration (60s, 5m, 0)\n", optarg);
				return 2;
			} else {
				cao.review_cache_s = ttl;
			}
			break;
		case 'V':
			if (ca_client_parse_ttl(optarg, &ttl) || ttl < 120) {
				fprintf(stderr, "remora-cp: --serving-cert-ttl: '%s' is not a duration of "
						"at least 2m (720h, 90m)\n", optarg);
				return 2;
			}
			m.serving_ttl_s = ttl;
			break;
		case 'l':
			if (log_set_level_name(optarg)) {
				fprintf(stderr, "remora-cp: unknown log level '%s'\n", optarg);
				return 2;
			}
			break;
		default: usage(); return o == 'h' ? 0 : 2;
		}
	}
	if (ca_init) {   /* make the root for the Secret, then exit */
		char cerr[1024];
		if (!cao.dir || cao.cert_path || cao.key_path) {
			fprintf(stderr, "remora-cp: --ca-init needs --ca-dir (and no --ca-cert/--ca-key)\n");
			return 2;
		}
		struct ca *ca = ca_new(&cao, cerr, sizeof(cerr));
		if (!ca) {
			fprintf(stderr, "remora-cp: CA: %s\n", cerr);
			return 1;
		}
		ca_free(ca);
		printf("%s/root-cert.pem\n%s/root-key.pem\n", cao.dir, cao.dir);
		return 0;
	}
	if (!m.dir && !m.catalog) {
		usage();
		return 2;
	}
	if (kube_explicit && no_kube) {
		fprintf(stderr, "remora-cp: --kube-api and --no-kube-api exclude each other\n");
		return 2;
	}
	if ((kwo.namespaces || kwo.domain || kwo.watch_timeout_s) && !discovery) {
		fprintf(stderr, "remora-cp: --kube-namespaces/--kube-cluster-domain/--kube-watch-timeout "
				"need --kube-discovery\n");
		return 2;
	}
	if (discovery && no_kube) {
		fprintf(stderr, "remora-cp: --kube-discovery needs the Kubernetes API (not --no-kube-api)\n");
		return 2;
	}
	if (!kube_explicit && !no_kube && (cao.dir || cao.cert_path || cao.tokens_path || discovery)) {
		/* in a pod: the API server's Service, as client-go's InClusterConfig */
		const char *h = getenv("KUBERNETES_SERVICE_HOST"), *p = getenv("KUBERNETES_SERVICE_PORT");
		if (h && *h && p && *p)
			kao.url = auto_url = xasprintf(strchr(h, ':') ? "https://[%s]:%s" : "https://%s:%s",
						       h, p);
	}
	if ((kao.token_path || kao.ca_path) && !kao.url) {
		fprintf(stderr, "remora-cp: --kube-token-file/--kube-ca-file need the Kubernetes API "
				"(--kube-api, or KUBERNETES_SERVICE_HOST/PORT)\n");
		return 2;
	}
	if (!cao.tokens_path && !kao.url && (cao.dir || cao.cert_path || cao.key_path ||
					      cao.trust_domain || cao.max_ttl_s || m.serving_san ||
					      plaintext_ca)) {
		fprintf(stderr, "remora-cp: the CA options need --ca-tokens or the Kubernetes API "
				"(--kube-api, or in a pod KUBERNETES_SERVICE_HOST/PORT) to authenticate "
				"workloads\n");
		return 2;
	}
	signal(SIGPIPE, SIG_IGN);
	m.base = event_base_new();
	if (kao.url) {
		char kerr[1024];
		if (!(m.kube = kube_api_new(m.base, &kao, kerr, sizeof(kerr)))) {
			fprintf(stderr, "remora-cp: Kubernetes API: %s\n", kerr);
			return 1;
		}
	}
	if (discovery && !m.kube) {
		fprintf(stderr, "remora-cp: --kube-discovery needs the Kubernetes API (--kube-api, or in "
				"a pod KUBERNETES_SERVICE_HOST/PORT)\n");
		return 2;
	}
	/* the CA: --ca-tokens, or the API (given, or found in a pod with CA options) */
	bool ca_on = cao.tokens_path || (m.kube && (kube_explicit || cao.dir || cao.cert_path));
	if (m.kube && ca_on) {
		cao.kube = m.kube;
		log_info("remora-cp: the CA reviews tokens (audience %s) with the API server %s%s",
			 CA_TOKEN_AUDIENCE, kao.url, auto_url ? " (in-cluster)" : "");
	}
	if (ca_on) {
		char cerr[1024];
		if (!(m.ca = ca_new(&cao, cerr, sizeof(cerr)))) {
			fprintf(stderr, "remora-cp: CA: %s\n", cerr);
			return 1;
		}
		json_t *root = ca_root_secret_json(m.ca);   /* the trust bundle for every node */
		cp_config_add_builtin(CP_SDS, root);
		json_decref(root);
	}
	struct cp_server *srv[2] = { cp_server_new(m.base), cp_server_new(m.base) };
	char addr[300], err[512];
	int ports[2] = { grpc_port, ca_port };
	for (int i = 0; i < 2; i++) {
		snprintf(addr, sizeof(addr), strchr(address, ':') ? "[%s]:%d" : "%s:%d", address, ports[i]);
		int bound = cp_server_listen(srv[i], addr, err, sizeof(err));
		if (bound < 0) {
			fprintf(stderr, "remora-cp: %s\n", err);
			return 1;
		}
		ports[i] = bound;
	}
	m.xds = cp_xds_new(srv, 2);
	if (m.ca)   /* the CA port only, like istiod's 15012 */
		ca_register(m.ca, srv[1]);
	if (m.ca && !plaintext_ca) {   /* TLS on the CA port, as istiod's 15012 */
		const char *ns = getenv("POD_NAMESPACE");
		if (!ns || !*ns)
			ns = "remora-system";
		if (!m.serving_san)
			m.serving_san = default_san = xasprintf(
				"remora-cp,remora-cp.%s,remora-cp.%s.svc,remora-cp.%s.svc.cluster.local",
				ns, ns, ns);
		m.tls_srv = srv[1];
		m.renew = evtimer_new(m.base, on_renew, &m);
		if (serving_cert(&m, err, sizeof(err))) {
			fprintf(stderr, "remora-cp: CA port TLS: %s\n", err);
			return 1;
		}
	}
	the_main = &m;
	cp_health_register(srv[0], serving);
	cp_health_register(srv[1], serving);
	m.http = evhttp_new(m.base);
	if (evhttp_bind_socket(m.http, address, (uint16_t)admin_port)) {
		fprintf(stderr, "remora-cp: cannot listen on %s port %d (admin)\n", address, admin_port);
		return 1;
	}
	evhttp_set_allowed_methods(m.http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD);
	evhttp_set_gencb(m.http, on_http, &m);

	m.ifd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
	m.iev = event_new(m.base, m.ifd, EV_READ | EV_PERSIST, on_inotify, &m);
	event_add(m.iev, NULL);
	m.debounce = evtimer_new(m.base, on_debounce, &m);
	if (discovery) {
		char kerr[512];
		if (!(m.kw = kube_watch_new(m.kube, &kwo, on_discovered, &m, kerr, sizeof(kerr)))) {
			fprintf(stderr, "remora-cp: %s\n", kerr);
			return 2;
		}
		log_info("remora-cp: discovering Services and EndpointSlices (%s) from %s",
			 kwo.namespaces ? kwo.namespaces : "every namespace", kao.url);
		/* the first load waits for the first lists (bounded): proxies do
		 * not see a catalog whose discovered services are missing */
		m.kw_start = evtimer_new(m.base, on_kw_start, &m);
		struct timeval tv = { 10, 0 };
		evtimer_add(m.kw_start, &tv);
	} else {
		reload(&m);
	}
	if (!m.cfg && !discovery) {
		fprintf(stderr, "remora-cp: the initial config failed to load; serving nothing until "
				"it is fixed\n");
	}
	log_info("remora-cp: xDS on %s:%d, CA port %d (%s), admin on %d", address, ports[0],
		 ports[1], m.tls_srv ? "TLS" : "cleartext", admin_port);
	fprintf(stderr, "remora-cp ready grpc=%d ca=%d admin=%d\n", ports[0], ports[1], admin_port);

	struct event *sigs[2] = { evsignal_new(m.base, SIGTERM, on_signal, m.base),
				  evsignal_new(m.base, SIGINT, on_signal, m.base) };
	event_add(sigs[0], NULL);
	event_add(sigs[1], NULL);
	event_base_dispatch(m.base);

	for (int i = 0; i < 2; i++) {
		cp_server_free(srv[i]);
		event_free(sigs[i]);
	}
	cp_xds_free(m.xds);
	cp_config_free(m.cfg);
	cp_config_clear_builtins();
	cp_config_set_discovered(NULL);
	ca_free(m.ca);   /* after the servers: their calls cancelled their reviews */
	kube_watch_free(m.kw);
	if (m.kw_start)
		event_free(m.kw_start);
	kube_api_free(m.kube);
	free(auto_url);
	if (m.renew)
		event_free(m.renew);
	free(default_san);
	evhttp_free(m.http);
	event_free(m.iev);
	event_free(m.debounce);
	close(m.ifd);
	event_base_free(m.base);
	return 0;
}
