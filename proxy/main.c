/* main.c - command line, then server_run(). */
#include <getopt.h>
#include <signal.h>
#include <event2/thread.h>
#include "server.h"
#include "log.h"
#include "wait_ready.h"
#include "inject/inject_main.h"
#include "../tls/ca_client.h"

static void usage(FILE *f)
{
	fprintf(f,
		"usage: remora -c FILE [options]\n"
		"       remora wait-ready [--timeout S] [--admin HOST:PORT]   (exit 0 once /ready is 200)\n"
		"       remora inject -f FILE [-o FILE] [--legacy-sidecar] [--uninject]  (remora inject --help)\n"
		"       remora uninject -f FILE [-o FILE]\n"
		"       remora inject-webhook --cert FILE --key FILE [--port N]\n"
		"  -c, --config-path FILE        Envoy v3 bootstrap (YAML, or JSON if *.json)\n"
		"      --config-yaml YAML        the bootstrap inline (YAML or JSON text), e.g. from\n"
		"                                `remora inject`; not together with -c\n"
		"      --concurrency N           worker threads (default: usable CPUs from the\n"
		"                                affinity mask and cgroup cpu.max)\n"
		"      --mode serve|validate     validate: check the config and exit\n"
		"      --drain-time-s N          SIGTERM drain time (default 5)\n"
		"      --exit-on-zero-active-connections  on SIGTERM, exit as soon as no downstream\n"
		"                                connection is left, even while outbound listeners\n"
		"                                still accept (default: wait the drain time)\n"
		"  -l, --log-level LEVEL         trace|debug|info|warning|error|critical|off\n"
		"      --service-node ID         node.id (overrides the bootstrap)\n"
		"      --service-cluster NAME    node.cluster (overrides the bootstrap)\n"
		"      --allow-unknown-static-fields  warn on unknown config fields instead of failing\n"
		"      --ca-address HOST:PORT    get the workload certificate from this CA (Istio's\n"
		"                                CreateCertificate over gRPC: TLS with --ca-root-cert,\n"
		"                                else h2c; env REMORA_CA_ADDRESS)\n"
		"      --ca-root-cert FILE       PEM root the CA's serving certificate must chain to\n"
		"                                (TLS to the CA; env REMORA_CA_ROOT_CERT)\n"
		"      --ca-server-name NAME     name the CA's certificate must carry, and SNI\n"
		"                                (default: the host of --ca-address;\n"
		"                                env REMORA_CA_SERVER_NAME)\n"
		"      --spiffe-id URI           the identity the CA must issue; another one is\n"
		"                                refused (env REMORA_SPIFFE_ID)\n"
		"      --ca-token-file FILE      bearer token for the CA, re-read at each request\n"
		"                                (env REMORA_CA_TOKEN_FILE)\n"
		"      --cert-ttl DURATION       requested certificate lifetime: 24h (default), 90m,\n"
		"                                30s (env REMORA_CERT_TTL)\n"
		"      --identity-secret NAME    SDS secret the certificate is installed as (default\n"
		"                                \"default\"; the trust bundle is \"ROOTCA\")\n"
		"                                (env REMORA_IDENTITY_SECRET)\n"
		"      --version                 print the version and exit\n");
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "config-path", required_argument, NULL, 'c' },
		{ "config-yaml", required_argument, NULL, 'Y' },
		{ "concurrency", required_argument, NULL, 'n' },
		{ "mode", required_argument, NULL, 'm' },
		{ "drain-time-s", required_argument, NULL, 'd' },
		{ "exit-on-zero-active-connections", no_argument, NULL, 'z' },
		{ "log-level", required_argument, NULL, 'l' },
		{ "service-node", required_argument, NULL, 'N' },
		{ "service-cluster", required_argument, NULL, 'C' },
		{ "allow-unknown-static-fields", no_argument, NULL, 'u' },
		{ "allow-unknown-fields", no_argument, NULL, 'u' },
		{ "ca-address", required_argument, NULL, 'A' },
		{ "ca-token-file", required_argument, NULL, 'A' },
		{ "cert-ttl", required_argument, NULL, 'A' },
		{ "identity-secret", required_argument, NULL, 'A' },
		{ "ca-root-cert", required_argument, NULL, 'A' },
		{ "ca-server-name", required_argument, NULL, 'A' },
		{ "spiffe-id", required_argument, NULL, 'A' },
		{ "version", no_argument, NULL, 'v' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct server *srv = &g_server;
	int c, li = 0;
	size_t linelen = 0;
	char err[512];

	if (argc > 1 && !strcmp(argv[1], "wait-ready"))
		return wait_ready_main(argc - 1, argv + 1);
	if (argc > 1 && !strcmp(argv[1], "inject"))
		return inject_main(argc - 1, argv + 1, false);
	if (argc > 1 && !strcmp(argv[1], "uninject"))
		return inject_main(argc - 1, argv + 1, true);
	if (argc > 1 && !strcmp(argv[1], "inject-webhook"))
		return inject_webhook_main(argc - 1, argv + 1);
	srv->opt.drain_time_s = 5;
	for (int i = 0; i < argc; i++)
		linelen += strlen(argv[i]) + 1;
	srv->opt.argv_line = xcalloc(1, linelen + 1);
	for (int i = 0; i < argc; i++) {
		strcat(srv->opt.argv_line, argv[i]);
		if (i + 1 < argc)
			strcat(srv->opt.argv_line, " ");
	}
	while ((c = getopt_long(argc, argv, "c:l:h", opts, &li)) != -1) {
		char *end;
		switch (c) {
		case 'c':
			srv->opt.config_path = optarg;
			break;
		case 'Y':
			srv->opt.config_yaml = optarg;
			break;
		case 'n':
			srv->nworkers = (unsigned)strtoul(optarg, &end, 10);
			if (*end || srv->nworkers > 256) {
				fprintf(stderr, "remora: --concurrency must be 1..256\n");
				return 1;
			}
			break;
		case 'm':
			if (!strcmp(optarg, "validate"))
				srv->opt.validate_only = true;
			else if (strcmp(optarg, "serve")) {
				fprintf(stderr, "remora: --mode must be serve or validate\n");
				return 1;
			}
			break;
		case 'd':
			srv->opt.drain_time_s = (unsigned)strtoul(optarg, &end, 10);
			if (*end) {
				fprintf(stderr, "remora: --drain-time-s takes seconds\n");
				return 1;
			}
			break;
		case 'z':
			srv->opt.exit_on_zero_active = true;
			break;
		case 'l':
			if (log_set_level_name(optarg)) {
				fprintf(stderr, "remora: unknown log level '%s'\n", optarg);
				return 1;
			}
			srv->opt.log_level = optarg;
			break;
		case 'N':
			srv->node_id = xstrdup(optarg);
			break;
		case 'C':
			srv->node_cluster = xstrdup(optarg);
			break;
		case 'u':
			srv->opt.allow_unknown_fields = true;
			break;
		case 'A':
			if (ca_client_set_option(opts[li].name, optarg, err, sizeof(err))) {
				fprintf(stderr, "remora: %s\n", err);
				return 1;
			}
			break;
		case 'v':
			printf("remora version 0.1.0\n");
			free(srv->opt.argv_line);
			return 0;
		case 'h':
			usage(stdout);
			free(srv->opt.argv_line);
			return 0;
		default:
			usage(stderr);
			free(srv->opt.argv_line);
			return 1;
		}
	}
	if (ca_client_configure(err, sizeof(err))) {
		fprintf(stderr, "remora: %s\n", err);
		free(srv->opt.argv_line);
		return 1;
	}
	signal(SIGPIPE, SIG_IGN);
	if (evthread_use_pthreads())
		die("evthread_use_pthreads");
	return server_run(srv);
}
