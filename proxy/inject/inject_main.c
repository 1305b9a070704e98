/* inject_main.c - `remora inject` / `remora uninject`: YAML files in and
 * out around the pure transformation of inject.c. */
#include "inject_main.h"
#include "inject.h"
#include "yaml_emit.h"
#include "proxy/common.h"
#include "proxy/config/yaml_json.h"

#include <errno.h>
#include <getopt.h>
#include <unistd.h>

static void usage(FILE *f)
{
	fprintf(f,
		"usage: remora inject -f FILE [-o FILE] [options]   (FILE '-' = stdin/stdout)\n"
		"       remora uninject -f FILE [-o FILE]\n"
		"      --legacy-sidecar        sidecar as the first regular container with a\n"
		"                              postStart `remora wait-ready` (default: native\n"
		"                              sidecar, an init container with restartPolicy Always)\n"
		"      --uninject              remove what inject added (same as `remora uninject`)\n"
		"      --image IMAGE           sidecar and init image (default remora:" INJECT_VERSION ")\n"
		"      --xds-address H:P       xDS control plane (default\n"
		"                              remora-cp.remora-system.svc:15012), over TLS\n"
		"                              verified against the root from the ConfigMap\n"
		"                              " INJECT_ROOT_CONFIGMAP " (alias --control-plane)\n"
		"      --xds-plaintext         cleartext xDS (remora-cp's 15010) instead\n"
		"      --ca-address H:P|none   CA for the workload certificate (default\n"
		"                              remora-cp.remora-system.svc:15012; none: no\n"
		"                              certificate client, no token volume)\n"
		"      --trust-domain TD       SPIFFE trust domain (default cluster.local)\n"
		"      --ca-token-secret NAME  the CA token from this Secret's key \"token\"\n"
		"                              (a token listed in remora-cp's --ca-tokens)\n"
		"                              instead of a projected service account token\n"
		"      --print-bootstrap       print the sidecar's generated bootstrap and exit\n"
		"  -q, --quiet                 no notes about skipped documents on stderr\n");
}

/* Whole file (or stdin) into a buffer; NULL with errno set on failure. */
static char *slurp(const char *path, size_t *len)
{
	FILE *f = strcmp(path, "-") ? fopen(path, "rb") : stdin;
	size_t cap = 65536, n = 0, r;
	char *buf;

	if (!f)
		return NULL;
	buf = xmalloc(cap);
	while ((r = fread(buf + n, 1, cap - n, f)) > 0) {
		n += r;
		if (n == cap)
			buf = xrealloc(buf, cap *= 2);
	}
	bool bad = ferror(f);
	if (f != stdin)
		fclose(f);
	if (bad) {
		free(buf);
		errno = EIO;
		return NULL;
	}
	*len = n;
	return buf;
}

static int write_out(const char *path, const char *text, size_t len)
{
	if (!path || !strcmp(path, "-"))
		return fwrite(text, 1, len, stdout) == len && !fflush(stdout) ? 0 : -1;
	char *tmp = xasprintf("%s.tmp.%d", path, (int)getpid());
	FILE *f = fopen(tmp, "wb");
	int rc = -1;
	if (f) {
		rc = fwrite(text, 1, len, f) == len ? 0 : -1;
		if (fclose(f))
			rc = -1;
		if (!rc && rename(tmp, path))
			rc = -1;
		if (rc)
			unlink(tmp);
	}
	free(tmp);
	return rc;
}

int inject_transform_docs(json_t *docs, const struct inject_opts *o, bool un, bool quiet,
			  const char *name, char *err, size_t errlen)
{
	size_t i;
	json_t *doc;
	char why[512];

	json_array_foreach(docs, i, doc)
	{
		json_t *copy = json_deep_copy(doc);
		enum inject_result r = un ? uninject_doc(copy, why, sizeof(why))
					  : inject_doc(copy, o, why, sizeof(why));
		if (r == INJECT_FAILED) {
			json_decref(copy);
			snprintf(err, errlen, "%s: document %zu: %s", name, i + 1, why);
			return -1;
		}
		if (r == INJECT_DONE)
			json_array_set_new(docs, i, copy);
		else {
			json_decref(copy);
			if (!quiet && !json_is_null(doc))
				fprintf(stderr, "%s: document %zu: unchanged: %s\n", name, i + 1, why);
		}
	}
	return 0;
}

int inject_main(int argc, char **argv, bool uninject)
{
	static const struct option opts[] = {
		{"filename", required_argument, NULL, 'f'},
		{"output", required_argument, NULL, 'o'},
		{"legacy-sidecar", no_argument, NULL, 'L'},
		{"uninject", no_argument, NULL, 'U'},
		{"image", required_argument, NULL, 'i'},
		{"control-plane", required_argument, NULL, 'p'},
		{"xds-address", required_argument, NULL, 'p'},
		{"xds-plaintext", no_argument, NULL, 'p'},
		{"ca-address", required_argument, NULL, 'p'},
		{"trust-domain", required_argument, NULL, 'p'},
		{"ca-token-secret", required_argument, NULL, 'p'},
		{"print-bootstrap", no_argument, NULL, 'B'},
		{"quiet", no_argument, NULL, 'q'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	struct inject_opts o;
	const char *in = NULL, *out = NULL;
	bool print_boot = false, quiet = false;
	char err[1024], host[8];
	int c, li = 0;

	inject_opts_default(&o);
	optind = 1;
	while ((c = getopt_long(argc, argv, "f:o:qh", opts, &li)) != -1) {
		switch (c) {
		case 'f': in = optarg; break;
		case 'o': out = optarg; break;
		case 'L': o.legacy_sidecar = true; break;
		case 'U': uninject = true; break;
		case 'i': o.image = optarg; break;
		case 'p':
			if (inject_opts_set(&o, opts[li].name, optarg, err, sizeof(err))) {
				fprintf(stderr, "remora inject: %s\n", err);
				return 2;
			}
			break;
		case 'B': print_boot = true; break;
		case 'q': quiet = true; break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	(void)host;
	if (!strchr(o.control_plane, ':') || !*o.image) {
		fprintf(stderr, "remora inject: --control-plane takes HOST:PORT\n");
		return 2;
	}
	if (print_boot) {
		json_t *b = inject_bootstrap(&o);
		json_t *docs = json_array();
		json_array_append_new(docs, b);
		char *y = yaml_emit_docs(docs, NULL);
		json_decref(docs);
		int rc = y && !write_out(out, y, strlen(y)) ? 0 : 1;
		free(y);
		return rc;
	}
	if (!in || optind != argc) {
		usage(stderr);
		return 2;
	}
	size_t len;
	char *text = slurp(in, &len);
	if (!text) {
		fprintf(stderr, "remora inject: %s: %s\n", in, strerror(errno));
		return 1;
	}
	json_t *docs = yaml_load_all_buffer(strcmp(in, "-") ? in : "<stdin>", text, len, NULL, err,
					    sizeof(err));
	free(text);
	if (!docs) {
		fprintf(stderr, "remora inject: %s\n", err);
		return 1;
	}
	if (inject_transform_docs(docs, &o, uninject, quiet, in, err, sizeof(err))) {
		fprintf(stderr, "remora inject: %s\n", err);
		json_decref(docs);
		return 1;
	}
	size_t olen;
	char *y = yaml_emit_docs(docs, &olen);
	json_decref(docs);
	if (!y) {
		fprintf(stderr, "remora inject: cannot write YAML (invalid UTF-8 in input?)\n");
		return 1;
	}
	int rc = 0;
	if (write_out(out, y, olen)) {
		fprintf(stderr, "remora inject: %s: %s\n", out ? out : "stdout", strerror(errno));
		rc = 1;
	}
	free(y);
	return rc;
}
