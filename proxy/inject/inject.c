/* inject.c - sidecar injection on jansson trees (inject.h).
 *
 * Everything here is free of I/O so that it can be unit-tested and fuzzed;
 * the CLI (inject_main.c) and the webhook (webhook.c) only read, parse and
 * print.  What is added is recorded in the remora.io/status annotation
 * (containers by name, annotations by key, and which parent keys had to be
 * created), and uninject removes exactly that. */
#include "inject.h"
#include "proxy/common.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <stdarg.h>

#define SIDECAR_NAME "remora-proxy"
#define INIT_NAME "remora-init"
#define TOKEN_VOLUME "remora-token"
#define ROOT_VOLUME "remora-ca-root"
#define TOKEN_EXPIRATION_S 3600
#define DEFAULT_CP "remora-cp.remora-system.svc:15012"
#define PROXY_UID 1337
#define DEFAULT_INBOUND_EXCLUDE "15090,15021,15020"

static const char *const workload_kinds[] = {"Deployment", "StatefulSet", "DaemonSet",
					     "ReplicaSet", "Job", NULL};

/* Pod annotations passed to remora-init: ours first, then Istio's name. */
enum value_kind { V_PORTS, V_CIDRS, V_MODE, V_QUANTITY };
static const struct traffic_annotation {
	const char *ours, *istio, *env;
	enum value_kind kind;
} traffic_annotations[] = {
    {"remora.io/inbound-ports", "traffic.sidecar.istio.io/includeInboundPorts",
     "REMORA_INBOUND_PORTS_INCLUDE", V_PORTS},
    {"remora.io/exclude-inbound-ports", "traffic.sidecar.istio.io/excludeInboundPorts",
     "REMORA_INBOUND_PORTS_EXCLUDE", V_PORTS},
    {"remora.io/outbound-ports", "traffic.sidecar.istio.io/includeOutboundPorts",
     "REMORA_OUTBOUND_PORTS_INCLUDE", V_PORTS},
    {"remora.io/exclude-outbound-ports", "traffic.sidecar.istio.io/excludeOutboundPorts",
     "REMORA_OUTBOUND_PORTS_EXCLUDE", V_PORTS},
    {"remora.io/outbound-cidrs", "traffic.sidecar.istio.io/includeOutboundIPRanges",
     "REMORA_OUTBOUND_IP_RANGES_INCLUDE", V_CIDRS},
    {"remora.io/exclude-outbound-cidrs", "traffic.sidecar.istio.io/excludeOutboundIPRanges",
     "REMORA_OUTBOUND_IP_RANGES_EXCLUDE", V_CIDRS},
    {"remora.io/interception-mode", "sidecar.istio.io/interceptionMode",
     "REMORA_INBOUND_INTERCEPTION_MODE", V_MODE},
};

/* Sidecar resources: annotation (ours, Istio's), default. */
static const struct resource_annotation {
	const char *ours, *istio, *section, *resource, *dflt;
} resource_annotations[] = {
    {"remora.io/proxy-cpu", "sidecar.istio.io/proxyCPU", "requests", "cpu", "100m"},
    {"remora.io/proxy-memory", "sidecar.istio.io/proxyMemory", "requests", "memory", "128Mi"},
    {"remora.io/proxy-cpu-limit", "sidecar.istio.io/proxyCPULimit", "limits", "cpu", "2"},
    {"remora.io/proxy-memory-limit", "sidecar.istio.io/proxyMemoryLimit", "limits", "memory",
     "1Gi"},
};

static int PRINTF(3, 4) fail(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (err && errlen) {
		va_start(ap, fmt);
		vsnprintf(err, errlen, fmt, ap);
		va_end(ap);
	}
	return INJECT_FAILED;
}

static void note(char *err, size_t errlen, const char *s)
{
	if (err && errlen)
		snprintf(err, errlen, "%s", s);
}

void inject_opts_default(struct inject_opts *o)
{
	o->image = "remora:" INJECT_VERSION;
	o->control_plane = DEFAULT_CP;
	o->xds_plaintext = false;
	o->ca_address = DEFAULT_CP;
	o->trust_domain = "cluster.local";
	o->token_secret = NULL;
	o->legacy_sidecar = false;
}

static bool split_host_port(const char *hp, char *host, size_t hostlen, long long *port);

/* host:port with a host of letters, digits, '.', '-' (or an [IPv6]). */
static bool address_ok(const char *v)
{
	char host[256];
	long long port;
	if (!split_host_port(v, host, sizeof(host), &port) || !*host)
		return false;
	for (const char *p = host; *p; p++)
		if (!isalnum((unsigned char)*p) && !strchr(".-:", *p))
			return false;
	return true;
}

static bool trust_domain_ok(const char *v)
{
	if (!*v || strlen(v) > 255)
		return false;
	for (const char *p = v; *p; p++)
		if (!isalnum((unsigned char)*p) && !strchr(".-_", *p))
			return false;
	return true;
}

int inject_opts_set(struct inject_opts *o, const char *name, const char *value, char *err,
		    size_t errlen)
{
	if (!strcmp(name, "xds-address") || !strcmp(name, "control-plane")) {
		if (!address_ok(value))
			return snprintf(err, errlen, "--%s takes HOST:PORT, not '%s'", name, value), -1;
		o->control_plane = value;
	} else if (!strcmp(name, "xds-plaintext")) {
		o->xds_plaintext = true;
	} else if (!strcmp(name, "ca-address")) {
		if (!strcmp(value, "none") || !*value)
			o->ca_address = NULL;
		else if (!address_ok(value))
			return snprintf(err, errlen, "--ca-address takes HOST:PORT or 'none', not '%s'",
					value), -1;
		else
			o->ca_address = value;
	} else if (!strcmp(name, "ca-token-secret")) {
		/* a DNS-1123 subdomain */
		bool ok = *value && strlen(value) <= 253 && isalnum((unsigned char)*value);
		for (const char *p = value; ok && *p; p++)
			ok = islower((unsigned char)*p) || isdigit((unsigned char)*p) || *p == '-' ||
			     *p == '.';
		if (!ok)
			return snprintf(err, errlen, "--ca-token-secret: '%s' is not a Secret name",
					value), -1;
		o->token_secret = value;
	} else if (!strcmp(name, "trust-domain")) {
		if (!trust_domain_ok(value))
			return snprintf(err, errlen, "--trust-domain: '%s' is not a trust domain", value),
			       -1;
		o->trust_domain = value;
	} else {
		return 1;
	}
	return 0;
}

/* ---- small jansson helpers ------------------------------------------------ */

static json_t *obj(json_t *parent, const char *key)
{
	json_t *v = json_object_get(parent, key);
	return json_is_object(v) ? v : NULL;
}

static const char *str(const json_t *parent, const char *key)
{
	return json_string_value(json_object_get(parent, key));
}

/* A new object built from key/value pairs ending with NULL (values stolen). */
static json_t *mk(const char *key, ...)
{
	json_t *o = json_object();
	va_list ap;

	va_start(ap, key);
	for (const char *k = key; k; k = va_arg(ap, const char *))
		json_object_set_new(o, k, va_arg(ap, json_t *));
	va_end(ap);
	return o;
}

static json_t *S(const char *s) { return json_string(s); }
static json_t *I(long long v) { return json_integer(v); }

static json_t *strings(const char *first, ...)
{
	json_t *a = json_array();
	va_list ap;

	va_start(ap, first);
	for (const char *s = first; s; s = va_arg(ap, const char *))
		json_array_append_new(a, json_string(s));
	va_end(ap);
	return a;
}

static json_t *socket_address(const char *host, long long port)
{
	return mk("socket_address", mk("address", S(host), "port_value", I(port), NULL), NULL);
}

/* ---- the generated bootstrap ---------------------------------------------- */

static json_t *static_cluster(const char *name, const char *type, const char *host,
			      long long port, bool h2)
{
	json_t *c = mk("name", S(name), "type", S(type), "connect_timeout", S("1s"), NULL);
	if (h2) {
		json_t *po = mk("@type",
				S("type.googleapis.com/"
				  "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"),
				"explicit_http_config",
				mk("http2_protocol_options", json_object(), NULL), NULL);
		json_object_set_new(
		    c, "typed_extension_protocol_options",
		    mk("envoy.extensions.upstreams.http.v3.HttpProtocolOptions", po, NULL));
	}
	json_t *ep = mk("endpoint", mk("address", socket_address(host, port), NULL), NULL);
	json_t *lbe = json_array();
	json_array_append_new(lbe, ep);
	json_t *eps = json_array();
	json_array_append_new(eps, mk("lb_endpoints", lbe, NULL));
	json_object_set_new(c, "load_assignment",
			    mk("cluster_name", S(name), "endpoints", eps, NULL));
	return c;
}

/* A listener on 0.0.0.0:port whose one route sends `match` to the admin
 * interface (optionally rewriting the path). */
static json_t *admin_alias_listener(const char *name, long long port, const char *match_kind,
				    const char *match, const char *rewrite)
{
	json_t *route = mk("cluster", S("remora-admin"), NULL);
	if (rewrite)
		json_object_set_new(route, "prefix_rewrite", S(rewrite));
	json_t *routes = json_array();
	json_array_append_new(routes, mk("match", mk(match_kind, S(match), NULL), "route", route,
					 NULL));
	json_t *vhs = json_array();
	json_array_append_new(vhs, mk("name", S(name), "domains", strings("*", NULL), "routes",
				      routes, NULL));
	json_t *filters = json_array();
	json_array_append_new(
	    filters,
	    mk("name", S("envoy.filters.http.router"), "typed_config",
	       mk("@type", S("type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"),
		  NULL),
	       NULL));
	json_t *hcm = mk(
	    "@type",
	    S("type.googleapis.com/"
	      "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"),
	    "stat_prefix", S(name), "route_config", mk("virtual_hosts", vhs, NULL), "http_filters",
	    filters, NULL);
	json_t *nf = json_array();
	json_array_append_new(nf, mk("name", S("envoy.filters.network.http_connection_manager"),
				     "typed_config", hcm, NULL));
	json_t *chains = json_array();
	json_array_append_new(chains, mk("filters", nf, NULL));
	return mk("name", S(name), "address", socket_address("0.0.0.0", port), "filter_chains",
		  chains, NULL);
}

/* Split "host:port" (IPv6 as "[::1]:port").  Returns false if malformed. */
static bool split_host_port(const char *hp, char *host, size_t hostlen, long long *port)
{
	const char *colon = strrchr(hp, ':');
	const char *h = hp;
	size_t n;
	char *end;

	if (!colon || colon == hp)
		return false;
	n = (size_t)(colon - hp);
	if (hp[0] == '[') {
		if (n < 3 || hp[n - 1] != ']')
			return false;
		h = hp + 1;
		n -= 2;
	}
	if (n >= hostlen)
		return false;
	memcpy(host, h, n);
	host[n] = '\0';
	*port = strtoll(colon + 1, &end, 10);
	return !*end && colon[1] && *port > 0 && *port < 65536;
}

json_t *inject_bootstrap(const struct inject_opts *o)
{
	char host[256];
	long long port;

	if (!split_host_port(o->control_plane, host, sizeof(host), &port)) {
		snprintf(host, sizeof(host), "%s", "invalid-control-plane-address");
		port = 15010;
	}
	json_t *ads_src = mk("ads", json_object(), "resource_api_version", S("V3"), NULL);
	json_t *gs = json_array();
	json_array_append_new(gs, mk("envoy_grpc", mk("cluster_name", S("xds-grpc"), NULL), NULL));
	json_t *dyn = mk("ads_config",
			 mk("api_type", S("GRPC"), "transport_api_version", S("V3"),
			    "grpc_services", gs, NULL),
			 "cds_config", json_deep_copy(ads_src), "lds_config", ads_src, NULL);
	json_t *listeners = json_array();
	json_array_append_new(listeners, admin_alias_listener("remora-health", 15021, "path",
							      "/healthz/ready", "/ready"));
	json_array_append_new(listeners, admin_alias_listener("remora-prometheus", 15090, "prefix",
							      "/stats/prometheus", NULL));
	json_t *clusters = json_array();
	json_t *xds = static_cluster("xds-grpc", "STRICT_DNS", host, port, true);
	if (!o->xds_plaintext) {
		/* Istio's xds-grpc: TLS verified against the mounted root, and the
		 * control plane's certificate must carry the name we dial */
		unsigned char ip[16];
		bool is_ip = inet_pton(AF_INET, host, ip) == 1 || inet_pton(AF_INET6, host, ip) == 1;
		json_t *sans = json_array();
		json_array_append_new(sans, mk("san_type", S(is_ip ? "IP_ADDRESS" : "DNS"), "matcher",
					       mk("exact", S(host), NULL), NULL));
		json_t *tc = mk("@type", S("type.googleapis.com/"
					   "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"),
				NULL);
		if (!is_ip)
			json_object_set_new(tc, "sni", S(host));
		json_object_set_new(
		    tc, "common_tls_context",
		    mk("alpn_protocols", strings("h2", NULL), "validation_context",
		       mk("trusted_ca", mk("filename", S(INJECT_ROOT_CERT), NULL),
			  "match_typed_subject_alt_names", sans, NULL),
		       NULL));
		json_object_set_new(xds, "transport_socket",
				    mk("name", S("envoy.transport_sockets.tls"), "typed_config", tc,
				       NULL));
	}
	json_array_append_new(clusters, xds);
	json_array_append_new(clusters,
			      static_cluster("remora-admin", "STATIC", "127.0.0.1", 15000, false));
	return mk("admin", mk("address", socket_address("127.0.0.1", 15000), NULL),
		  "static_resources", mk("listeners", listeners, "clusters", clusters, NULL),
		  "dynamic_resources", dyn, NULL);
}

/* ---- annotations ----------------------------------------------------------- */

static bool value_ok(const char *v, enum value_kind kind)
{
	if (kind == V_MODE)
		return !strcmp(v, "REDIRECT") || !strcmp(v, "TPROXY");
	for (const char *p = v; *p; p++) {
		unsigned char ch = (unsigned char)*p;
		switch (kind) {
		case V_PORTS:
			if (!isdigit(ch) && ch != ',' && ch != '*' && ch != ' ')
				return false;
			break;
		case V_CIDRS:
			if (!isxdigit(ch) && !strchr(".:/,* ", ch))
				return false;
			break;
		case V_QUANTITY:
			if (!isalnum(ch) && ch != '.')
				return false;
			break;
		case V_MODE:
			break;
		}
	}
	return kind != V_QUANTITY || *v;
}

/* The annotation value under our name, else Istio's; NULL if neither. */
static const char *annotation(const json_t *ann, const char *ours, const char *istio,
			      const char **which)
{
	const char *v = str(ann, ours);
	*which = ours;
	if (!v && istio) {
		v = str(ann, istio);
		*which = istio;
	}
	return v;
}

static bool opted_out(const json_t *meta)
{
	static const char *const keys[] = {"remora.io/inject", "sidecar.istio.io/inject"};
	const json_t *ann = obj((json_t *)meta, "annotations");
	const json_t *labels = obj((json_t *)meta, "labels");

	for (size_t i = 0; i < ARRAY_SIZE(keys); i++) {
		const json_t *sets[] = {ann, labels};
		for (size_t j = 0; j < 2; j++) {
			const json_t *v = json_object_get(sets[j], keys[i]);
			const char *s = json_string_value(v);
			if (json_is_false(v) || (s && (!strcmp(s, "false") || !strcmp(s, "False") ||
						       !strcmp(s, "FALSE") || !strcmp(s, "n") ||
						       !strcmp(s, "no"))))
				return true;
		}
	}
	return false;
}

/* ---- probes: kubelet health checks must reach the application ---------------
 * The kubelet connects from the node to the pod IP; with inbound capture
 * those connections would go through the sidecar.  Their ports are added to
 * remora-init's inbound exclusions so they reach the application directly. */

static long long probe_port(const json_t *container, const json_t *port)
{
	if (json_is_integer(port))
		return json_integer_value(port);
	const char *name = json_string_value(port);
	if (!name)
		return -1;
	const json_t *ports = json_object_get(container, "ports");
	size_t i;
	json_t *p;
	json_array_foreach(ports, i, p)
	{
		const char *pn = str(p, "name");
		if (pn && !strcmp(pn, name) && json_is_integer(json_object_get(p, "containerPort")))
			return json_integer_value(json_object_get(p, "containerPort"));
	}
	/* a numeric string */
	char *end;
	long long v = strtoll(name, &end, 10);
	return *name && !*end ? v : -1;
}

static void add_port(char *buf, size_t len, long long port)
{
	char tok[16];
	size_t n = strlen(buf);

	if (port <= 0 || port > 65535)
		return;
	snprintf(tok, sizeof(tok), "%lld", port);
	/* skip duplicates: look for ",tok," in ",buf," */
	for (const char *p = buf; (p = strstr(p, tok)); p++) {
		if ((p == buf || p[-1] == ',') && (p[strlen(tok)] == ',' || !p[strlen(tok)]))
			return;
	}
	snprintf(buf + n, len - n, "%s%s", n ? "," : "", tok);
}

static void probe_ports(const json_t *spec, char *buf, size_t len)
{
	static const char *const probes[] = {"livenessProbe", "readinessProbe", "startupProbe"};
	static const char *const handlers[] = {"httpGet", "tcpSocket", "grpc"};
	const json_t *cs = json_object_get(spec, "containers");
	size_t i;
	json_t *c;

	json_array_foreach(cs, i, c)
	{
		for (size_t p = 0; p < ARRAY_SIZE(probes); p++) {
			const json_t *pr = json_object_get(c, probes[p]);
			for (size_t h = 0; pr && h < ARRAY_SIZE(handlers); h++) {
				const json_t *hd = json_object_get(pr, handlers[h]);
				if (hd)
					add_port(buf, len, probe_port(c, json_object_get(hd, "port")));
			}
		}
	}
}

/* ---- the containers ---------------------------------------------------------- */

static json_t *env_field(const char *name, const char *path)
{
	return mk("name", S(name), "valueFrom",
		  mk("fieldRef", mk("apiVersion", S("v1"), "fieldPath", S(path), NULL), NULL), NULL);
}

static json_t *env_value(const char *name, const char *value)
{
	return mk("name", S(name), "value", S(value), NULL);
}

static json_t *port(const char *name, long long p)
{
	return mk("name", S(name), "containerPort", I(p), "protocol", S("TCP"), NULL);
}

static int init_container(const json_t *spec, const json_t *ann, const struct inject_opts *o,
			  json_t **out, char *err, size_t errlen)
{
	char exclude[1024] = DEFAULT_INBOUND_EXCLUDE;
	json_t *env = json_array();
	const char *which;

	for (size_t i = 0; i < ARRAY_SIZE(traffic_annotations); i++) {
		const struct traffic_annotation *t = &traffic_annotations[i];
		const char *v = annotation(ann, t->ours, t->istio, &which);
		if (v && !value_ok(v, t->kind)) {
			json_decref(env);
			return fail(err, errlen, "metadata.annotations[\"%s\"]: invalid value '%s'",
				    which, v);
		}
		if (!strcmp(t->env, "REMORA_INBOUND_PORTS_EXCLUDE")) {
			/* merged: the proxy's own ports, probe ports, the annotation */
			probe_ports(spec, exclude, sizeof(exclude));
			if (v && *v)
				snprintf(exclude + strlen(exclude), sizeof(exclude) - strlen(exclude),
					 ",%s", v);
			json_array_append_new(env, env_value(t->env, exclude));
		} else if (v) {
			json_array_append_new(env, env_value(t->env, v));
		}
	}
	json_t *sc = mk("runAsUser", I(0), "runAsGroup", I(0), "runAsNonRoot", json_false(),
			"privileged", json_false(), "allowPrivilegeEscalation", json_false(),
			"readOnlyRootFilesystem", json_false(), "capabilities",
			mk("add", strings("NET_ADMIN", "NET_RAW", NULL), "drop",
			   strings("ALL", NULL), NULL),
			NULL);
	*out = mk("name", S(INIT_NAME), "image", S(o->image), "command",
		  strings("remora-init", NULL), "env", env, "resources",
		  mk("requests", mk("cpu", S("10m"), "memory", S("16Mi"), NULL), "limits",
		     mk("cpu", S("100m"), "memory", S("64Mi"), NULL), NULL),
		  "securityContext", sc, NULL);
	return INJECT_DONE;
}

static const char *service_cluster(const json_t *meta, const char *workload_name)
{
	const json_t *labels = json_object_get(meta, "labels");
	const char *v = str(labels, "app.kubernetes.io/name");
	if (!v)
		v = str(labels, "app");
	if (!v)
		v = workload_name;
	if (!v)
		v = str(meta, "name");
	return v ? v : "default";
}

static json_t *http_probe(long long period, long long failures)
{
	return mk("httpGet", mk("path", S("/healthz/ready"), "port", I(15021), NULL),
		  "initialDelaySeconds", I(0), "periodSeconds", I(period), "timeoutSeconds", I(3),
		  "failureThreshold", I(failures), NULL);
}

static int sidecar_container(const json_t *meta, const json_t *ann, const char *workload_name,
			     const struct inject_opts *o, json_t **out, char *err, size_t errlen)
{
	json_t *req = json_object(), *lim = json_object();
	const char *which;

	for (size_t i = 0; i < ARRAY_SIZE(resource_annotations); i++) {
		const struct resource_annotation *r = &resource_annotations[i];
		const char *v = annotation(ann, r->ours, r->istio, &which);
		if (v && !value_ok(v, V_QUANTITY)) {
			json_decref(req);
			json_decref(lim);
			return fail(err, errlen, "metadata.annotations[\"%s\"]: invalid quantity '%s'",
				    which, v);
		}
		json_object_set_new(!strcmp(r->section, "requests") ? req : lim, r->resource,
				    S(v ? v : r->dflt));
	}
	json_t *boot = inject_bootstrap(o);
	char *boot_s = json_dumps(boot, JSON_COMPACT);
	json_decref(boot);
	char *cluster = xasprintf("%s.$(POD_NAMESPACE)", service_cluster(meta, workload_name));
	json_t *args = strings(
	    "--config-yaml", boot_s, "--service-node",
	    "sidecar~$(INSTANCE_IP)~$(POD_NAME).$(POD_NAMESPACE)~$(POD_NAMESPACE).svc.cluster.local",
	    "--service-cluster", cluster, NULL);
	free(boot_s);
	free(cluster);
	if (o->ca_address) {   /* the workload certificate from remora-cp's CA */
		json_t *ca = strings("--ca-address", o->ca_address, "--ca-token-file",
				     INJECT_TOKEN_FILE, "--ca-root-cert", INJECT_ROOT_CERT, NULL);
		json_array_extend(args, ca);
		json_decref(ca);
	}
	json_t *env = json_array();
	json_array_append_new(env, env_field("POD_NAME", "metadata.name"));
	json_array_append_new(env, env_field("POD_NAMESPACE", "metadata.namespace"));
	json_array_append_new(env, env_field("INSTANCE_IP", "status.podIP"));
	json_array_append_new(env, env_field("SERVICE_ACCOUNT", "spec.serviceAccountName"));
	if (o->ca_address) {
		/* the identity the CA must issue (the kubelet expands the
		 * variables defined above); a certificate naming another one is
		 * refused by the sidecar */
		char *id = xasprintf("spiffe://%s/ns/$(POD_NAMESPACE)/sa/$(SERVICE_ACCOUNT)",
				     o->trust_domain);
		json_array_append_new(env, env_value("REMORA_SPIFFE_ID", id));
		free(id);
	}
	json_t *ports = json_array();
	json_array_append_new(ports, port("remora-outbound", 15001));
	json_array_append_new(ports, port("remora-inbound", 15006));
	json_array_append_new(ports, port("remora-admin", 15000));
	json_array_append_new(ports, port("http-envoy-prom", 15090));
	json_array_append_new(ports, port("remora-health", 15021));
	json_t *sc = mk("runAsUser", I(PROXY_UID), "runAsGroup", I(PROXY_UID), "runAsNonRoot",
			json_true(), "privileged", json_false(), "allowPrivilegeEscalation",
			json_false(), "readOnlyRootFilesystem", json_true(), "capabilities",
			mk("drop", strings("ALL", NULL), NULL), NULL);
	json_t *c = mk("name", S(SIDECAR_NAME), "image", S(o->image), NULL);
	if (!o->legacy_sidecar)
		json_object_set_new(c, "restartPolicy", S("Always"));
	json_object_set_new(c, "args", args);
	json_object_set_new(c, "env", env);
	json_object_set_new(c, "ports", ports);
	json_object_set_new(c, "readinessProbe", http_probe(2, 30));
	if (!o->legacy_sidecar) {
		/* the kubelet starts the next container once this succeeds */
		json_object_set_new(c, "startupProbe", http_probe(1, 600));
	} else {
		json_t *cmd = strings("remora", "wait-ready", "--timeout", "60", "--admin",
				      "127.0.0.1:15000", NULL);
		json_object_set_new(c, "lifecycle",
				    mk("postStart", mk("exec", mk("command", cmd, NULL), NULL), NULL));
	}
	json_object_set_new(c, "resources", mk("requests", req, "limits", lim, NULL));
	json_object_set_new(c, "securityContext", sc);
	json_t *mounts = json_array();
	if (o->ca_address || !o->xds_plaintext)
		json_array_append_new(mounts, mk("name", S(ROOT_VOLUME), "mountPath", S(INJECT_ROOT_DIR),
						 "readOnly", json_true(), NULL));
	if (o->ca_address)
		json_array_append_new(mounts, mk("name", S(TOKEN_VOLUME), "mountPath",
						 S(INJECT_TOKEN_DIR), "readOnly", json_true(), NULL));
	if (json_array_size(mounts))
		json_object_set_new(c, "volumeMounts", mounts);
	else
		json_decref(mounts);
	*out = c;
	return INJECT_DONE;
}

/* ---- one pod template --------------------------------------------------------- */

static bool has_container(const json_t *spec, const char *name)
{
	static const char *const lists[] = {"containers", "initContainers"};
	for (size_t l = 0; l < ARRAY_SIZE(lists); l++) {
		size_t i;
		json_t *c;
		json_array_foreach(json_object_get(spec, lists[l]), i, c)
		{
			const char *n = str(c, "name");
			if (n && !strcmp(n, name))
				return true;
		}
	}
	return false;
}

static bool has_volume(const json_t *spec, const char *name)
{
	size_t i;
	json_t *v;
	json_array_foreach(json_object_get(spec, "volumes"), i, v)
	{
		const char *n = str(v, "name");
		if (n && !strcmp(n, name))
			return true;
	}
	return false;
}

/* The pod volumes the sidecar mounts: the root certificate published in
 * the namespace (Istio's istio-ca-root-cert) and a projected service
 * account token for the CA (audience remora-ca, rotated by the kubelet). */
static json_t *pod_volumes(const struct inject_opts *o)
{
	json_t *vols = json_array();
	if (o->ca_address || !o->xds_plaintext)
		json_array_append_new(vols, mk("name", S(ROOT_VOLUME), "configMap",
					       mk("name", S(INJECT_ROOT_CONFIGMAP), NULL), NULL));
	if (o->ca_address && o->token_secret) {
		json_t *items = json_array();
		json_array_append_new(items, mk("key", S("token"), "path", S("remora-token"), NULL));
		json_array_append_new(vols, mk("name", S(TOKEN_VOLUME), "secret",
					       mk("secretName", S(o->token_secret), "items", items,
						  NULL), NULL));
	} else if (o->ca_address) {
		json_t *src = json_array();
		json_array_append_new(src, mk("serviceAccountToken",
					      mk("path", S("remora-token"), "audience",
						 S(INJECT_TOKEN_AUDIENCE), "expirationSeconds",
						 I(TOKEN_EXPIRATION_S), NULL),
					      NULL));
		json_array_append_new(vols, mk("name", S(TOKEN_VOLUME), "projected",
					       mk("sources", src, NULL), NULL));
	}
	return vols;
}

/* Get parent[key] as an object/array, creating it when absent (the key is
 * recorded in `created`) or null (recorded in `nulled`, so that uninject
 * puts the null back). */
static json_t *ensure(json_t *parent, const char *key, bool array, json_t *created,
		      json_t *nulled)
{
	json_t *v = json_object_get(parent, key);
	if (v && !json_is_null(v))
		return v;
	json_array_append_new(v ? nulled : created, json_string(key));
	v = array ? json_array() : json_object();
	json_object_set_new(parent, key, v);
	return v;
}

static int inject_template(json_t *tmpl, const char *path, const char *workload_name,
			   const struct inject_opts *o, char *err, size_t errlen)
{
	json_t *spec = obj(tmpl, "spec");
	json_t *meta = json_object_get(tmpl, "metadata");
	json_t *ann, *init = NULL, *side = NULL;

	if (!spec || !json_is_array(json_object_get(spec, "containers")))
		return fail(err, errlen, "%sspec.containers: missing or not a list", path);
	if (meta && !json_is_object(meta))
		return fail(err, errlen, "%smetadata: not a mapping", path);
	ann = obj(meta, "annotations");
	if (json_object_get(meta, "annotations") && !ann &&
	    !json_is_null(json_object_get(meta, "annotations")))
		return fail(err, errlen, "%smetadata.annotations: not a mapping", path);
	if (json_object_get(ann, INJECT_STATUS_ANNOTATION)) {
		note(err, errlen, "already injected (" INJECT_STATUS_ANNOTATION ")");
		return INJECT_SKIPPED;
	}
	if (opted_out(meta)) {
		note(err, errlen, "opted out (remora.io/inject: \"false\")");
		return INJECT_SKIPPED;
	}
	if (json_is_true(json_object_get(spec, "hostNetwork"))) {
		note(err, errlen, "hostNetwork pods are not injected");
		return INJECT_SKIPPED;
	}
	if (has_container(spec, SIDECAR_NAME) || has_container(spec, INIT_NAME))
		return fail(err, errlen, "%sspec: a container is already named %s or %s", path,
			    SIDECAR_NAME, INIT_NAME);
	if (json_object_get(spec, "initContainers") &&
	    !json_is_array(json_object_get(spec, "initContainers")) &&
	    !json_is_null(json_object_get(spec, "initContainers")))
		return fail(err, errlen, "%sspec.initContainers: not a list", path);
	if (has_volume(spec, TOKEN_VOLUME) || has_volume(spec, ROOT_VOLUME))
		return fail(err, errlen, "%sspec.volumes: a volume is already named %s or %s", path,
			    TOKEN_VOLUME, ROOT_VOLUME);
	if (json_object_get(spec, "volumes") && !json_is_array(json_object_get(spec, "volumes")) &&
	    !json_is_null(json_object_get(spec, "volumes")))
		return fail(err, errlen, "%sspec.volumes: not a list", path);
	/* per-pod control plane and CA addresses */
	struct inject_opts po = *o;
	static const char *const addr_ann[][2] = {{"remora.io/xds-address", "xds-address"},
						  {"remora.io/ca-address", "ca-address"},
						  {"remora.io/ca-token-secret", "ca-token-secret"}};
	char aerr[256];
	for (size_t i = 0; i < ARRAY_SIZE(addr_ann); i++) {
		const char *v = str(ann, addr_ann[i][0]);
		if (v && inject_opts_set(&po, addr_ann[i][1], v, aerr, sizeof(aerr)))
			return fail(err, errlen, "metadata.annotations[\"%s\"]: invalid value '%s'",
				    addr_ann[i][0], v);
	}
	o = &po;
	if (init_container(spec, ann, o, &init, err, errlen) != INJECT_DONE)
		return INJECT_FAILED;
	if (sidecar_container(meta, ann, workload_name, o, &side, err, errlen) != INJECT_DONE) {
		json_decref(init);
		return INJECT_FAILED;
	}

	json_t *created = json_array(), *nulled = json_array();
	json_t *added_ann = json_array();
	json_t *status_init = json_array(), *status_cont = json_array();
	meta = ensure(tmpl, "metadata", false, created, nulled);
	ann = ensure(meta, "annotations", false, created, nulled);
	json_t *inits = ensure(spec, "initContainers", true, created, nulled);
	json_t *vols = pod_volumes(o), *status_vols = json_array();
	if (json_array_size(vols)) {
		json_t *pv = ensure(spec, "volumes", true, created, nulled);
		size_t i;
		json_t *v;
		json_array_foreach(vols, i, v)
			json_array_append_new(status_vols, json_string(str(v, "name")));
		json_array_extend(pv, vols);
	}
	json_decref(vols);

	json_array_insert_new(inits, 0, init);
	json_array_append_new(status_init, json_string(INIT_NAME));
	if (o->legacy_sidecar) {
		json_array_insert_new(json_object_get(spec, "containers"), 0, side);
		json_array_append_new(status_cont, json_string(SIDECAR_NAME));
	} else {
		json_array_insert_new(inits, 1, side);
		json_array_append_new(status_init, json_string(SIDECAR_NAME));
	}
	static const char *const prom[][2] = {{"prometheus.io/scrape", "true"},
					      {"prometheus.io/port", "15090"},
					      {"prometheus.io/path", "/stats/prometheus"}};
	for (size_t i = 0; i < ARRAY_SIZE(prom); i++) {
		if (json_object_get(ann, prom[i][0]))
			continue; /* the user's own scrape settings win */
		json_object_set_new(ann, prom[i][0], json_string(prom[i][1]));
		json_array_append_new(added_ann, json_string(prom[i][0]));
	}
	json_t *status = mk("version", S(INJECT_VERSION), "initContainers", status_init,
			    "containers", status_cont, "annotations", added_ann, NULL);
	if (json_array_size(status_vols))
		json_object_set(status, "volumes", status_vols);
	json_decref(status_vols);
	json_object_set_new(status, "created", created);
	if (json_array_size(nulled))
		json_object_set(status, "nulled", nulled);
	json_decref(nulled);
	char *s = json_dumps(status, JSON_COMPACT);
	json_decref(status);
	json_object_set_new(ann, INJECT_STATUS_ANNOTATION, json_string(s));
	free(s);
	return INJECT_DONE;
}

/* ---- uninject ------------------------------------------------------------------ */

static bool in_list(const json_t *list, const char *s)
{
	size_t i;
	json_t *v;
	json_array_foreach(list, i, v)
	{
		if (json_is_string(v) && !strcmp(json_string_value(v), s))
			return true;
	}
	return false;
}

static void remove_named(json_t *arr, const json_t *names)
{
	for (size_t i = json_array_size(arr); i-- > 0;) {
		const char *n = str(json_array_get(arr, i), "name");
		if (n && in_list(names, n))
			json_array_remove(arr, i);
	}
}

static bool is_empty(const json_t *v)
{
	return (json_is_object(v) && !json_object_size(v)) ||
	       (json_is_array(v) && !json_array_size(v));
}

static int uninject_template(json_t *tmpl, const char *path, char *err, size_t errlen)
{
	json_t *meta = obj(tmpl, "metadata");
	json_t *ann = obj(meta, "annotations");
	json_t *spec = obj(tmpl, "spec");
	const char *s = str(ann, INJECT_STATUS_ANNOTATION);
	json_t *status;
	json_error_t jerr;
	size_t i;
	json_t *v;

	if (!s) {
		note(err, errlen, "not injected (no " INJECT_STATUS_ANNOTATION ")");
		return INJECT_SKIPPED;
	}
	status = json_loads(s, 0, &jerr);
	if (!json_is_object(status) || !spec) {
		json_decref(status);
		return fail(err, errlen, "%smetadata.annotations[\"%s\"]: not an injection record",
			    path, INJECT_STATUS_ANNOTATION);
	}
	remove_named(json_object_get(spec, "initContainers"),
		     json_object_get(status, "initContainers"));
	remove_named(json_object_get(spec, "containers"), json_object_get(status, "containers"));
	remove_named(json_object_get(spec, "volumes"), json_object_get(status, "volumes"));
	json_array_foreach(json_object_get(status, "annotations"), i, v)
	{
		if (json_is_string(v))
			json_object_del(ann, json_string_value(v));
	}
	json_object_del(ann, INJECT_STATUS_ANNOTATION);
	/* parents we created, innermost first, only while still empty */
	const json_t *created = json_object_get(status, "created");
	const json_t *nulled = json_object_get(status, "nulled");
	static const char *const keys[] = {"initContainers", "volumes", "annotations", "metadata"};
	json_t *parents[] = {spec, spec, meta, tmpl};
	for (size_t k = 0; k < ARRAY_SIZE(keys); k++) {
		if (!is_empty(json_object_get(parents[k], keys[k])))
			continue;
		if (in_list(created, keys[k]))
			json_object_del(parents[k], keys[k]);
		else if (in_list(nulled, keys[k]))
			json_object_set_new(parents[k], keys[k], json_null());
	}
	json_decref(status);
	return INJECT_DONE;
}

/* ---- documents -------------------------------------------------------------------- */

static bool is_workload(const char *kind)
{
	for (size_t i = 0; workload_kinds[i]; i++)
		if (!strcmp(kind, workload_kinds[i]))
			return true;
	return false;
}

static enum inject_result each_doc(json_t *doc, const struct inject_opts *o, bool un,
				   const char *path, char *err, size_t errlen)
{
	const char *kind = str(doc, "kind");
	const char *name = str(obj(doc, "metadata"), "name");
	json_t *tmpl = NULL;
	const char *tpath = "";
	char buf[128];

	if (!json_is_object(doc)) {
		note(err, errlen, "not a Kubernetes object");
		return json_is_null(doc) ? INJECT_SKIPPED : fail(err, errlen, "%snot a mapping", path);
	}
	if (!kind) {
		note(err, errlen, "no kind");
		return INJECT_SKIPPED;
	}
	if (!strcmp(kind, "List") || (strlen(kind) > 4 && !strcmp(kind + strlen(kind) - 4, "List"))) {
		json_t *items = json_object_get(doc, "items");
		enum inject_result res = INJECT_SKIPPED;
		size_t i;
		json_t *it;
		json_array_foreach(items, i, it)
		{
			snprintf(buf, sizeof(buf), "items[%zu].", i);
			enum inject_result r = each_doc(it, o, un, buf, err, errlen);
			if (r == INJECT_FAILED)
				return r;
			if (r == INJECT_DONE)
				res = INJECT_DONE;
		}
		if (res == INJECT_SKIPPED)
			note(err, errlen, "nothing to inject in the list");
		return res;
	}
	if (!strcmp(kind, "Pod")) {
		tmpl = doc;
	} else if (is_workload(kind)) {
		tmpl = obj(obj(doc, "spec"), "template");
		tpath = "spec.template.";
	} else if (!strcmp(kind, "CronJob")) {
		tmpl = obj(obj(obj(obj(doc, "spec"), "jobTemplate"), "spec"), "template");
		tpath = "spec.jobTemplate.spec.template.";
	} else {
		snprintf(buf, sizeof(buf), "kind %.40s has no pod template", kind);
		note(err, errlen, buf);
		return INJECT_SKIPPED;
	}
	char *full = xasprintf("%s%s", path, tpath);
	int r;
	if (!tmpl)
		r = fail(err, errlen, "%s: %s missing", kind, full);
	else if (un)
		r = uninject_template(tmpl, full, err, errlen);
	else
		r = inject_template(tmpl, full, name, o, err, errlen);
	free(full);
	return (enum inject_result)r;
}

enum inject_result inject_doc(json_t *doc, const struct inject_opts *o, char *err, size_t errlen)
{
	return each_doc(doc, o, false, "", err, errlen);
}

enum inject_result uninject_doc(json_t *doc, char *err, size_t errlen)
{
	struct inject_opts o;
	inject_opts_default(&o);
	return each_doc(doc, &o, true, "", err, errlen);
}

/* ---- JSON Patch ------------------------------------------------------------------- */

static char *pointer_append(const char *base, const char *key)
{
	size_t n = strlen(base), k = strlen(key);
	char *p = xmalloc(n + 1 + 2 * k + 1), *w = p + n + 1;

	memcpy(p, base, n);
	p[n] = '/';
	for (const char *s = key; *s; s++) {
		if (*s == '~' || *s == '/') {
			*w++ = '~';
			*w++ = *s == '~' ? '0' : '1';
		} else {
			*w++ = *s;
		}
	}
	*w = '\0';
	return p;
}

static void op(json_t *patch, const char *what, const char *path, const json_t *value)
{
	json_t *o = mk("op", S(what), "path", S(path), NULL);
	if (value)
		json_object_set_new(o, "value", json_deep_copy(value));
	json_array_append_new(patch, o);
}

static void diff(json_t *patch, const char *path, const json_t *a, const json_t *b)
{
	const char *key;
	json_t *va;

	if (json_is_object(a) && json_is_object(b)) {
		json_object_foreach((json_t *)a, key, va)
		{
			json_t *vb = json_object_get(b, key);
			char *p = pointer_append(path, key);
			if (!vb)
				op(patch, "remove", p, NULL);
			else
				diff(patch, p, va, vb);
			free(p);
		}
		json_object_foreach((json_t *)b, key, va)
		{
			if (!json_object_get(a, key)) {
				char *p = pointer_append(path, key);
				op(patch, "add", p, va);
				free(p);
			}
		}
		return;
	}
	if (!json_equal((json_t *)a, (json_t *)b))
		op(patch, "replace", path, b);
}

json_t *json_patch_diff(const json_t *from, const json_t *to)
{
	json_t *patch = json_array();
	diff(patch, "", from, to);
	return patch;
}
