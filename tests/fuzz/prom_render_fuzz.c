/* prom_render_fuzz.c - libFuzzer target for the stats store and renderers.
 *
 * The input is a little program: it creates scopes whose names, tag names
 * and values, stat leaf names and code-family names come from the input,
 * bumps counters, gauges, histograms and response codes on random shards,
 * frees scopes and resets counters, then renders text, JSON and Prometheus.
 * Besides the sanitizers, the outputs are checked: JSON must parse, and the
 * Prometheus exposition must be line-by-line well formed (valid metric and
 * label names, escaped label values, valid UTF-8, one TYPE line per family,
 * every sample inside its family).
 *
 * Build: clang-14 -g -O1 -fsanitize=fuzzer,address,undefined -D_GNU_SOURCE -I.
 *          tests/fuzz/prom_render_fuzz.c stats/stats.c stats/render.c proxy/common.c
 *          $(pkg-config --cflags --libs libevent jansson libpcre2-8) -lm
 * Run:   ./prom_render_fuzz tests/fuzz/corpus/prom_render
 *        (PROM_RENDER_FUZZ_DUMP=1 ./prom_render_fuzz seed  prints each exposition) */
#include "stats/stats.h"

#include <event2/buffer.h>
#include <jansson.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_SCOPES 12
#define MAX_OWNED 256

struct rd {
	const uint8_t *p;
	size_t n;
};

struct fz {
	struct stats_store *st;
	struct stats_scope *scopes[MAX_SCOPES];
	void *owned[MAX_OWNED];               /* strings and desc arrays the scopes point at */
	size_t nowned;
};

static const struct stat_desc fixed_desc[] = {
	{ "upstream_rq_total", STAT_COUNTER },
	{ "upstream_cx_active", STAT_GAUGE },
	{ "upstream_rq_time", STAT_HISTOGRAM },
	{ "membership_total", STAT_GAUGE },
};

static uint8_t rd_u8(struct rd *r)
{
	if (!r->n)
		return 0;
	r->n--;
	return *r->p++;
}

static void *own(struct fz *f, void *p)
{
	if (f->nowned == MAX_OWNED) {
		free(p);
		return NULL;
	}
	f->owned[f->nowned++] = p;
	return p;
}

/* A short string from the input (NUL bytes become '.'), owned by f. */
static char *rd_str(struct fz *f, struct rd *r)
{
	size_t len = rd_u8(r) % 20;
	char *s;

	if (len > r->n)
		len = r->n;
	s = xmalloc(len + 1);
	for (size_t i = 0; i < len; i++)
		s[i] = r->p[i] ? (char)r->p[i] : '.';
	s[len] = 0;
	r->p += len;
	r->n -= len;
	return own(f, s);
}

static void op_new_scope(struct fz *f, struct rd *r)
{
	static const char *prefixes[] = { "cluster", "http", "", "listener" };
	static const char *tags[] = { "envoy_cluster_name", "envoy_http_conn_manager_prefix" };
	const struct stat_desc *desc = fixed_desc;
	size_t ndesc = ARRAY_SIZE(fixed_desc);
	const char *name, *prefix, *tag = NULL, *value = NULL;
	uint8_t how = rd_u8(r);
	struct stats_scope *s;
	int slot = rd_u8(r) % MAX_SCOPES;

	if (f->scopes[slot])
		return;
	name = rd_str(f, r);
	prefix = how & 4 ? rd_str(f, r) : prefixes[how & 3];
	if (how & 8) {
		tag = how & 16 ? rd_str(f, r) : tags[(how >> 5) & 1];
		value = rd_str(f, r);
	}
	if (how & 64) {
		size_t n = 1 + rd_u8(r) % 4;
		struct stat_desc *d = own(f, xcalloc(n, sizeof(*d)));

		if (!d)
			return;
		for (size_t i = 0; i < n; i++) {
			uint8_t t = rd_u8(r);
			d[i].name = rd_str(f, r);
			d[i].type = t % 3 == 0 ? STAT_COUNTER : t % 3 == 1 ? STAT_GAUGE : STAT_HISTOGRAM;
			if (!d[i].name)
				d[i].name = "x";
		}
		desc = d;
		ndesc = n;
	}
	if (!name || !prefix || ((how & 8) && (!tag || !value)))
		return;
	s = stats_scope_new(f->st, name, prefix, tag, value, desc, ndesc);
	/* a scope shared by name keeps its first user's families (at most 2) */
	for (int i = 0; s->refs == 1 && i < (how >> 7) + (how & 1); i++) {
		const char *fam = rd_u8(r) & 1 ? rd_str(f, r) : "upstream_rq";
		if (fam)
			stats_scope_add_family(s, fam);
	}
	f->scopes[slot] = s;
}

static struct stats_scope *pick(struct fz *f, struct rd *r)
{
	return f->scopes[rd_u8(r) % MAX_SCOPES];
}

static void op_bump(struct fz *f, struct rd *r)
{
	struct stats_scope *s = pick(f, r);
	unsigned shard = rd_u8(r), idx = rd_u8(r);
	int8_t delta = (int8_t)rd_u8(r);

	if (!s)
		return;
	shard %= s->nshards;
	idx %= (unsigned)s->ndesc;
	if (s->desc[idx].type == STAT_HISTOGRAM) {
		double v;
		if (delta & 1) {
			uint8_t b[8];
			for (int i = 0; i < 8; i++)
				b[i] = rd_u8(r);
			memcpy(&v, b, sizeof(v));
		} else {
			v = (double)rd_u8(r) * (double)(1u << (delta & 0x1e));
		}
		stats_hist_record(s, shard, idx, v);
	} else if (delta == 0x7f) {
		stats_gauge_set(s, idx, (int64_t)rd_u8(r) << 40);
	} else {
		stats_add(s, shard, idx, delta);
	}
}

static void op_code(struct fz *f, struct rd *r)
{
	struct stats_scope *s = pick(f, r);
	unsigned shard = rd_u8(r);
	int fam = rd_u8(r) % 3, code = rd_u8(r) << 8;

	code = 90 + (code | rd_u8(r)) % 530;
	if (s)
		stats_code_inc(s, shard % s->nshards, fam, code);
}

static void op_free(struct fz *f, struct rd *r)
{
	int slot = rd_u8(r) % MAX_SCOPES;

	stats_scope_free(f->scopes[slot]);
	f->scopes[slot] = NULL;
}

static bool is_name_char(int c, bool colon)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       c == '_' || (colon && c == ':');
}

static bool valid_utf8(const unsigned char *p, size_t n)
{
	/* jansson's decoder does the strict checks; a string round trip is enough */
	json_t *j = json_stringn((const char *)p, n);
	bool ok = j != NULL;
	json_decref(j);
	return ok;
}

/* Parses one sample line; returns false if it is malformed.  Sets *name to
 * the metric name (points into line, NUL-terminated in place). */
static bool check_sample(char *line, char **name)
{
	char *p = line;

	if (!is_name_char(*p, true) || (*p >= '0' && *p <= '9'))
		return false;
	while (is_name_char(*p, true))
		p++;
	if (*p != '{')
		return false;
	*p++ = 0;
	*name = line;
	while (*p != '}') {
		if (!is_name_char(*p, false) || (*p >= '0' && *p <= '9'))
			return false;
		while (is_name_char(*p, false))
			p++;
		if (*p++ != '=' || *p++ != '"')
			return false;
		while (*p != '"') {
			if (!*p)
				return false;
			if (*p == '\\') {
				p++;
				if (*p != '\\' && *p != '"' && *p != 'n')
					return false;
			}
			p++;
		}
		p++;
		if (*p == ',')
			p++;
		else if (*p != '}')
			return false;
	}
	p++;
	if (*p++ != ' ' || !*p)
		return false;
	return !strchr(p, ' ');
}

static void check_prometheus(char *text, size_t len)
{
	char *types[512];
	size_t ntypes = 0;
	char family[512] = "", ftype[16] = "";
	char *line = text, *nl;

	if (!valid_utf8((const unsigned char *)text, len))
		abort();
	for (; *line; line = nl + 1) {
		char *name;

		nl = strchr(line, '\n');
		if (!nl)
			abort();                        /* every line ends with \n */
		*nl = 0;
		if (!*line)
			continue;
		if (!strncmp(line, "# TYPE ", 7)) {
			char *sp = strrchr(line + 7, ' ');

			if (!sp)
				abort();
			*sp = 0;
			for (size_t i = 0; i < ntypes; i++)
				if (!strcmp(types[i], line + 7))
					abort();        /* second TYPE line for a name */
			if (ntypes < ARRAY_SIZE(types))
				types[ntypes++] = line + 7;
			snprintf(family, sizeof(family), "%s", line + 7);
			snprintf(ftype, sizeof(ftype), "%s", sp + 1);
			if (strcmp(ftype, "counter") && strcmp(ftype, "gauge") &&
			    strcmp(ftype, "histogram"))
				abort();
			continue;
		}
		if (!check_sample(line, &name))
			abort();
		if (strcmp(ftype, "histogram") ? strcmp(name, family) != 0 :
		    strncmp(name, family, strlen(family)) ||
		    (strcmp(name + strlen(family), "_bucket") &&
		     strcmp(name + strlen(family), "_sum") &&
		     strcmp(name + strlen(family), "_count")))
			abort();                        /* sample outside its family */
	}
}

static void render_all(struct fz *f, const char *filter, bool used_only)
{
	struct evbuffer *b = evbuffer_new();
	char err[128];
	size_t len;
	char *s;

	if (stats_render_text(f->st, b, filter, used_only, err, sizeof(err)) != RM_OK) {
		if (evbuffer_get_length(b))
			abort();                        /* error must write nothing */
		evbuffer_free(b);
		return;
	}
	evbuffer_drain(b, evbuffer_get_length(b));

	if (stats_render_json(f->st, b, filter, used_only, err, sizeof(err)) != RM_OK)
		abort();
	len = evbuffer_get_length(b);
	s = (char *)evbuffer_pullup(b, -1);
	{
		json_error_t jerr;
		json_t *j = json_loadb(s ? s : "", len, 0, &jerr);
		if (!j)
			abort();
		json_decref(j);
	}
	evbuffer_drain(b, len);

	if (stats_render_prometheus(f->st, b, filter, used_only, err, sizeof(err)) != RM_OK)
		abort();
	len = evbuffer_get_length(b);
	s = xmalloc(len + 1);
	evbuffer_remove(b, s, len);
	s[len] = 0;
	if (strlen(s) != len)
		abort();
	if (getenv("PROM_RENDER_FUZZ_DUMP"))         /* for checking seeds by eye */
		fwrite(s, 1, len, stderr);
	check_prometheus(s, len);
	free(s);
	evbuffer_free(b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char *filters[] = { NULL, "upstream_rq_[0-9]", "^cluster\\.", "(", "xx$" };
	struct rd r = { data, size };
	struct fz f;
	int ops = 0;

	memset(&f, 0, sizeof(f));
	f.st = stats_store_new(1 + rd_u8(&r) % 4);
	while (r.n && ops++ < 400) {
		switch (rd_u8(&r) % 8) {
		case 0: op_new_scope(&f, &r); break;
		case 1: case 2: op_bump(&f, &r); break;
		case 3: op_code(&f, &r); break;
		case 4: op_free(&f, &r); break;
		case 5: if (rd_u8(&r) < 16) stats_reset_counters(f.st); break;
		case 6: {
			uint8_t k = rd_u8(&r);
			const char *flt = k & 8 ? NULL : filters[k % ARRAY_SIZE(filters)];
			render_all(&f, flt, k & 16);
			break;
		}
		default: op_new_scope(&f, &r); break;
		}
	}
	render_all(&f, NULL, false);
	render_all(&f, NULL, true);
	stats_store_free(f.st);
	for (size_t i = 0; i < f.nowned; i++)
		free(f.owned[i]);
	return 0;
}
