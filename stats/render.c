/* render.c - /stats as text, JSON and Prometheus exposition 0.0.4.
 *
 * Every render takes a snapshot: it walks the scopes once, sums shards,
 * applies the filter and used_only, and collects one item per visible stat
 * with its full text name ("cluster.backend.upstream_rq_503").  The items
 * are then sorted and printed.  Output follows Envoy's admin handlers:
 * text and JSON list counters and gauges by name, then histograms;
 * Prometheus prints counter families, then gauges, then histograms, each
 * group sorted by metric name, one "# TYPE" line per family and a blank
 * line after it, samples in scope-name order. */
#include "stats.h"

#include <inttypes.h>
#include <math.h>
#include <event2/buffer.h>
#include <jansson.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

/* From stats.c (no private header yet). */

enum item_kind { K_COUNTER, K_GAUGE, K_HIST, K_CODE, K_CLASS };

struct item {
	const struct stats_scope *s;          /* not owned */
	char *name;                           /* owned; full text name */
	char *prom;                           /* owned; Prometheus name, NULL unless asked */
	struct stats_hist *hist;              /* owned; merged, K_HIST only */
	int64_t value;                        /* counters, gauges, codes */
	unsigned idx;                         /* desc index */
	int kind;                             /* enum item_kind */
	int fam;                              /* code family */
	int code;                             /* exact code, or class digit 1..5 */
};

struct items {
	struct item *v;                       /* owned; [n] of cap */
	size_t n, cap;
};

struct filter {
	pcre2_code *re;                       /* owned, NULL = match all */
	pcre2_match_data *md;                 /* owned */
};

static const double quantiles[] = { 0, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.995, 0.999, 1 };
static const char *const quantile_names[] = {
	"P0", "P25", "P50", "P75", "P90", "P95", "P99", "P99.5", "P99.9", "P100",
};

/* ---- small helpers ---- */

struct sbuf {
	char *p;                              /* owned; NUL-terminated */
	size_t len, cap;
};

static void sbuf_add(struct sbuf *b, const char *data, size_t n)
{
	if (b->len + n + 1 > b->cap) {
		b->cap = MAX(b->cap * 2, b->len + n + 1);
		if (b->cap < 64)
			b->cap = 64;
		b->p = xrealloc(b->p, b->cap);
	}
	memcpy(b->p + b->len, data, n);
	b->len += n;
	b->p[b->len] = 0;
}

static void sbuf_adds(struct sbuf *b, const char *s)
{
	sbuf_add(b, s, strlen(s));
}

/* Length of the valid UTF-8 sequence at p (1..4), 0 if invalid.  Rejects
 * overlong forms, surrogates and code points above U+10FFFF. */
static size_t utf8_len(const unsigned char *p, size_t n)
{
	unsigned c = p[0];

	if (c < 0x80)
		return 1;
	if (c < 0xc2 || c > 0xf4)
		return 0;
	if (c < 0xe0)
		return n >= 2 && (p[1] & 0xc0) == 0x80 ? 2 : 0;
	if (c < 0xf0) {
		if (n < 3 || (p[1] & 0xc0) != 0x80 || (p[2] & 0xc0) != 0x80)
			return 0;
		if ((c == 0xe0 && p[1] < 0xa0) || (c == 0xed && p[1] >= 0xa0))
			return 0;
		return 3;
	}
	if (n < 4 || (p[1] & 0xc0) != 0x80 || (p[2] & 0xc0) != 0x80 || (p[3] & 0xc0) != 0x80)
		return 0;
	if ((c == 0xf0 && p[1] < 0x90) || (c == 0xf4 && p[1] >= 0x90))
		return 0;
	return 4;
}

/* Appends s with invalid UTF-8 bytes replaced by U+FFFD; if prom, also
 * escapes \ " and newline as the exposition format requires. */
static void add_utf8(struct sbuf *b, const char *s, bool prom)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t n = strlen(s);

	while (n) {
		size_t l = utf8_len(p, n);

		if (!l) {
			sbuf_add(b, "\xef\xbf\xbd", 3);
			l = 1;
		} else if (prom && *p == '\\') {
			sbuf_add(b, "\\\\", 2);
		} else if (prom && *p == '"') {
			sbuf_add(b, "\\\"", 2);
		} else if (prom && *p == '\n') {
			sbuf_add(b, "\\n", 2);
		} else {
			sbuf_add(b, (const char *)p, l);
		}
		p += l;
		n -= l;
	}
}

/* Prometheus metric-name characters: anything else becomes '_'. */
static void add_sanitized(struct sbuf *b, const char *s, bool allow_colon)
{
	for (; *s; s++) {
		char c = *s;
		bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
			  (c >= '0' && c <= '9') || c == '_' || (allow_colon && c == ':');
		sbuf_add(b, ok ? &c : "_", 1);
	}
}

/* Shortest text that reads back as v, switching to exponent form outside
 * 1e-5..1e16 (what Envoy's fmt "{}" prints). */
static void fmt_shortest(char *out, size_t outlen, double v)
{
	char tmp[40];
	int p, exp10;

	if (isnan(v)) {
		snprintf(out, outlen, "nan");
		return;
	}
	if (isinf(v)) {
		snprintf(out, outlen, v < 0 ? "-inf" : "inf");
		return;
	}
	if (v == 0) {
		snprintf(out, outlen, "0");
		return;
	}
	for (p = 1; p < 17; p++) {
		snprintf(tmp, sizeof(tmp), "%.*e", p - 1, v);
		if (strtod(tmp, NULL) == v)
			break;
	}
	snprintf(tmp, sizeof(tmp), "%.*e", p - 1, v);
	exp10 = atoi(strchr(tmp, 'e') + 1);
	if (exp10 < -4 || exp10 >= 16)
		snprintf(out, outlen, "%s", tmp);
	else
		snprintf(out, outlen, "%.*f", MAX(p - 1 - exp10, 0), v);
}

/* Envoy prints histogram bounds and sums with fmt "{:.32g}". */
static void fmt_prom_double(char *out, size_t outlen, double v)
{
	if (isnan(v))
		snprintf(out, outlen, "NaN");
	else if (isinf(v))
		snprintf(out, outlen, v < 0 ? "-Inf" : "+Inf");
	else
		snprintf(out, outlen, "%.32g", v);
}

/* ---- filter ---- */

static int filter_init(struct filter *f, const char *pattern, char *err, size_t errlen)
{
	int errcode;
	PCRE2_SIZE erroff;

	f->re = NULL;
	f->md = NULL;
	if (!pattern)
		return RM_OK;
	f->re = pcre2_compile((PCRE2_SPTR)pattern, PCRE2_ZERO_TERMINATED, 0, &errcode,
			      &erroff, NULL);
	if (!f->re) {
		PCRE2_UCHAR msg[256];

		pcre2_get_error_message(errcode, msg, sizeof(msg));
		if (err && errlen)
			snprintf(err, errlen, "invalid filter regex at offset %zu: %s",
				 (size_t)erroff, (const char *)msg);
		return RM_ERROR;
	}
	f->md = pcre2_match_data_create_from_pattern(f->re, NULL);
	if (!f->md)
		die("out of memory (pcre2 match data)");
	return RM_OK;
}

static bool filter_match(const struct filter *f, const char *name)
{
	if (!f->re)
		return true;
	/* Match errors (e.g. the backtracking limit) count as no match. */
	return pcre2_match(f->re, (PCRE2_SPTR)name, strlen(name), 0, 0, f->md, NULL) >= 0;
}

static void filter_fini(struct filter *f)
{
	pcre2_match_data_free(f->md);
	pcre2_code_free(f->re);
}

/* ---- collecting ---- */

static struct item *items_push(struct items *it)
{
	if (it->n == it->cap) {
		it->cap = it->cap ? it->cap * 2 : 64;
		it->v = xrealloc(it->v, it->cap * sizeof(*it->v));
	}
	memset(&it->v[it->n], 0, sizeof(it->v[0]));
	return &it->v[it->n++];
}

static void items_free(struct items *it)
{
	for (size_t i = 0; i < it->n; i++) {
		xfree(it->v[i].name);
		xfree(it->v[i].prom);
		xfree(it->v[i].hist);
	}
	xfree(it->v);
	it->v = NULL;
	it->n = it->cap = 0;
}

static char *full_name(const struct stats_scope *s, const char *leaf, const char *suffix)
{
	return xasprintf("%s%s%s%s", s->name, *s->name ? "." : "", leaf, suffix);
}

/* Adds an item unless the filter rejects it; takes ownership of name. */
static struct item *add_item(struct items *it, const struct filter *f,
			     const struct stats_scope *s, char *name, int kind)
{
	struct item *i;

	if (!filter_match(f, name)) {
		xfree(name);
		return NULL;
	}
	i = items_push(it);
	i->s = s;
	i->name = name;
	i->kind = kind;
	return i;
}

static void collect_codes(struct items *it, const struct filter *f,
			  const struct stats_scope *s, int fam, bool used_only)
{
	const char *family = s->families[fam];
	uint64_t *sums = NULL;
	char suffix[16];

	for (int c = 1; c <= 5; c++) {
		uint64_t v = stats_code_value(s, fam, c);
		struct item *i;

		if (used_only && !v)
			continue;
		snprintf(suffix, sizeof(suffix), "_%dxx", c);
		i = add_item(it, f, s, full_name(s, family, suffix), K_CLASS);
		if (i) {
			i->value = (int64_t)v;
			i->fam = fam;
			i->code = c;
		}
	}
	/* Exact codes exist only once some shard allocated them; sum them in
	 * one pass over the shards rather than one pass per code. */
	for (unsigned sh = 0; sh < s->nshards; sh++) {
		const struct stats_shard *shd = __atomic_load_n(&s->shards[sh], __ATOMIC_ACQUIRE);
		const uint64_t *codes = shd ? __atomic_load_n(&shd->codes[fam], __ATOMIC_ACQUIRE)
					    : NULL;
		if (!codes)
			continue;
		if (!sums)
			sums = xcalloc(500, sizeof(*sums));
		for (int c = 0; c < 500; c++)
			sums[c] += __atomic_load_n(&codes[c], __ATOMIC_RELAXED);
	}
	for (int c = 0; sums && c < 500; c++) {
		struct item *i;

		if (!sums[c])
			continue;
		snprintf(suffix, sizeof(suffix), "_%d", c + 100);
		i = add_item(it, f, s, full_name(s, family, suffix), K_CODE);
		if (i) {
			i->value = (int64_t)sums[c];
			i->fam = fam;
			i->code = c + 100;
		}
	}
	xfree(sums);
}

static void collect(struct stats_store *st, const struct filter *f, bool used_only,
		    struct items *it)
{
	for (const struct stats_scope *s = stats_store_scopes(st); s; s = s->next) {
		for (size_t d = 0; d < s->ndesc; d++) {
			struct item *i;

			if (s->desc[d].type == STAT_HISTOGRAM) {
				struct stats_hist h;

				stats_hist_merge(s, d, &h);
				if (used_only && !h.count)
					continue;
				i = add_item(it, f, s, full_name(s, s->desc[d].name, ""), K_HIST);
				if (i) {
					i->hist = xmalloc(sizeof(h));
					*i->hist = h;
				}
			} else {
				int64_t v = stats_value(s, d);

				if (used_only && !v)
					continue;
				i = add_item(it, f, s, full_name(s, s->desc[d].name, ""),
					     s->desc[d].type == STAT_GAUGE ? K_GAUGE : K_COUNTER);
				if (i)
					i->value = v;
			}
			if (i)
				i->idx = d;
		}
		for (int fam = 0; fam < STATS_MAX_CODE_FAMILIES; fam++)
			if (s->families[fam])
				collect_codes(it, f, s, fam, used_only);
	}
}

/* Text and JSON order: counters and gauges by name, then histograms. */
static int cmp_by_name(const void *a, const void *b)
{
	const struct item *x = a, *y = b;
	int hx = x->kind == K_HIST, hy = y->kind == K_HIST;

	if (hx != hy)
		return hx - hy;
	return strcmp(x->name, y->name);
}

static void hist_quantiles(const struct stats_hist *h, double *out)
{
	for (size_t q = 0; q < ARRAY_SIZE(quantiles); q++)
		out[q] = stats_hist_quantile(h, quantiles[q]);
}

/* ---- text ---- */

int stats_render_text(struct stats_store *st, struct evbuffer *out, const char *filter,
		      bool used_only, char *err, size_t errlen)
{
	struct filter f;
	struct items it = { 0 };

	if (filter_init(&f, filter, err, errlen) != RM_OK)
		return RM_ERROR;
	stats_store_read_begin(st);
	collect(st, &f, used_only, &it);
	if (it.n)
		qsort(it.v, it.n, sizeof(*it.v), cmp_by_name);
	for (size_t n = 0; n < it.n; n++) {
		const struct item *i = &it.v[n];
		double qv[ARRAY_SIZE(quantiles)];
		char num[40];

		switch (i->kind) {
		case K_GAUGE:
			evbuffer_add_printf(out, "%s: %" PRId64 "\n", i->name, i->value);
			break;
		case K_HIST:
			if (!i->hist->count) {
				evbuffer_add_printf(out, "%s: No recorded values\n", i->name);
				break;
			}
			evbuffer_add_printf(out, "%s:", i->name);
			hist_quantiles(i->hist, qv);
			for (size_t q = 0; q < ARRAY_SIZE(quantiles); q++) {
				fmt_shortest(num, sizeof(num), qv[q]);
				evbuffer_add_printf(out, " %s(%s,%s)", quantile_names[q], num, num);
			}
			evbuffer_add(out, "\n", 1);
			break;
		default:
			evbuffer_add_printf(out, "%s: %" PRIu64 "\n", i->name, (uint64_t)i->value);
			break;
		}
	}
	items_free(&it);
	stats_store_read_end(st);
	filter_fini(&f);
	return RM_OK;
}

/* ---- JSON ---- */

static json_t *json_utf8(const char *s)
{
	struct sbuf b = { 0 };
	json_t *j;

	add_utf8(&b, s, false);
	j = json_stringn(b.p ? b.p : "", b.len);
	xfree(b.p);
	if (!j)
		die("out of memory (json)");
	return j;
}

/* Integral values print as integers ("25", not "25.0"), NaN as null. */
static json_t *json_number(double v)
{
	if (isnan(v) || isinf(v))
		return json_null();
	if (v == floor(v) && fabs(v) < 9007199254740992.0)
		return json_integer((json_int_t)v);
	return json_real(v);
}

static void json_add(json_t *container, json_t *v)
{
	if (!v || json_array_append_new(container, v))
		die("out of memory (json)");
}

static void json_set(json_t *obj, const char *key, json_t *v)
{
	if (!v || json_object_set_new(obj, key, v))
		die("out of memory (json)");
}

static json_t *json_histograms(const struct items *it)
{
	json_t *hists = json_object(), *sq = json_array(), *cq = json_array();
	json_t *wrap = json_object();

	if (!hists || !sq || !cq || !wrap)
		die("out of memory (json)");
	for (size_t q = 0; q < ARRAY_SIZE(quantiles); q++)
		json_add(sq, json_number(quantiles[q] * 100));
	for (size_t n = 0; n < it->n; n++) {
		const struct item *i = &it->v[n];
		double qv[ARRAY_SIZE(quantiles)];
		json_t *h, *values;

		if (i->kind != K_HIST)
			continue;
		h = json_object();
		values = json_array();
		if (!h || !values)
			die("out of memory (json)");
		hist_quantiles(i->hist, qv);
		for (size_t q = 0; q < ARRAY_SIZE(quantiles); q++) {
			json_t *v = json_object();

			if (!v)
				die("out of memory (json)");
			json_set(v, "interval", json_number(qv[q]));
			json_set(v, "cumulative", json_number(qv[q]));
			json_add(values, v);
		}
		json_set(h, "name", json_utf8(i->name));
		json_set(h, "values", values);
		json_add(cq, h);
	}
	json_set(hists, "supported_quantiles", sq);
	json_set(hists, "computed_quantiles", cq);
	json_set(wrap, "histograms", hists);
	return wrap;
}

int stats_render_json(struct stats_store *st, struct evbuffer *out, const char *filter,
		      bool used_only, char *err, size_t errlen)
{
	struct filter f;
	struct items it = { 0 };
	json_t *root, *stats;
	bool have_hist = false;
	char *text;

	if (filter_init(&f, filter, err, errlen) != RM_OK)
		return RM_ERROR;
	stats_store_read_begin(st);
	collect(st, &f, used_only, &it);
	if (it.n)
		qsort(it.v, it.n, sizeof(*it.v), cmp_by_name);

	root = json_object();
	stats = json_array();
	if (!root || !stats)
		die("out of memory (json)");
	for (size_t n = 0; n < it.n; n++) {
		const struct item *i = &it.v[n];
		json_t *o;

		if (i->kind == K_HIST) {
			have_hist = true;
			continue;
		}
		o = json_object();
		if (!o)
			die("out of memory (json)");
		json_set(o, "name", json_utf8(i->name));
		json_set(o, "value", json_integer(i->value));
		json_add(stats, o);
	}
	if (have_hist)
		json_add(stats, json_histograms(&it));
	json_set(root, "stats", stats);

	text = json_dumps(root, JSON_COMPACT | JSON_REAL_PRECISION(15));
	if (!text)
		die("out of memory (json dump)");
	evbuffer_add(out, text, strlen(text));
	free(text);
	json_decref(root);
	items_free(&it);
	stats_store_read_end(st);
	filter_fini(&f);
	return RM_OK;
}

/* ---- Prometheus ---- */

static const char *const prom_types[] = { "counter", "gauge", "histogram" };

static int prom_type(const struct item *i)
{
	return i->kind == K_GAUGE ? 1 : i->kind == K_HIST ? 2 : 0;
}

/* "envoy_" + tag_prefix + "_" + leaf; code families lose the code (it
 * becomes a label), as Envoy's default tag extractors do. */
static char *prom_name(const struct item *i)
{
	const struct stats_scope *s = i->s;
	struct sbuf b = { 0 };

	sbuf_adds(&b, "envoy_");
	if (*s->tag_prefix) {
		add_sanitized(&b, s->tag_prefix, true);
		sbuf_adds(&b, "_");
	}
	if (i->kind == K_CODE || i->kind == K_CLASS) {
		add_sanitized(&b, s->families[i->fam], true);
		if (i->kind == K_CLASS)
			sbuf_adds(&b, "_xx");
	} else {
		add_sanitized(&b, s->desc[i->idx].name, true);
	}
	return b.p;
}

static void prom_label(struct sbuf *b, const char *name, const char *value)
{
	if (!name)
		return;
	if (b->len)
		sbuf_adds(b, ",");
	if (*name >= '0' && *name <= '9')
		sbuf_adds(b, "_");
	add_sanitized(b, name, false);
	sbuf_adds(b, "=\"");
	add_utf8(b, value, true);
	sbuf_adds(b, "\"");
}

/* Labels without braces: the extracted response code first (Envoy's
 * unprefixed extractors run before the scope-prefixed ones), then the
 * scope's tags. */
static void prom_labels(struct sbuf *b, const struct item *i)
{
	char num[16];

	if (i->kind == K_CODE || i->kind == K_CLASS) {
		snprintf(num, sizeof(num), "%d", i->code);
		sbuf_adds(b, i->kind == K_CODE ? "envoy_response_code=\"" :
			  "envoy_response_code_class=\"");
		sbuf_adds(b, num);
		sbuf_adds(b, "\"");
	}
	prom_label(b, i->s->tag_name, i->s->tag_value);
	prom_label(b, stats_scope_tag2_name(i->s), stats_scope_tag2_value(i->s));
}

static int cmp_prom(const void *a, const void *b)
{
	const struct item *x = a, *y = b;
	int r = strcmp(x->prom, y->prom);

	if (r)
		return r;
	if (prom_type(x) != prom_type(y))
		return prom_type(x) - prom_type(y);
	r = strcmp(x->s->name, y->s->name);
	return r ? r : strcmp(x->name, y->name);
}

struct prom_group {
	size_t start, end;                    /* items [start, end) share a name */
	int type;
};

static int cmp_group(const void *a, const void *b, void *arg)
{
	const struct prom_group *x = a, *y = b;
	const struct items *it = arg;

	if (x->type != y->type)
		return x->type - y->type;
	return strcmp(it->v[x->start].prom, it->v[y->start].prom);
}

static void prom_sample(struct evbuffer *out, const struct item *i, struct sbuf *labels)
{
	char num[64];

	labels->len = 0;
	if (labels->p)
		labels->p[0] = 0;
	prom_labels(labels, i);
	if (i->kind == K_GAUGE) {
		evbuffer_add_printf(out, "%s{%s} %" PRId64 "\n", i->prom,
				    labels->p ? labels->p : "", i->value);
	} else if (i->kind != K_HIST) {
		evbuffer_add_printf(out, "%s{%s} %" PRIu64 "\n", i->prom,
				    labels->p ? labels->p : "", (uint64_t)i->value);
	} else {
		const struct stats_hist *h = i->hist;
		const char *l = labels->p ? labels->p : "";
		const char *sep = *l ? "," : "";
		const struct stats_bounds *bd = h->bounds ? h->bounds : &stats_default_bounds;
		uint64_t cum = 0;

		for (unsigned b = 0; b < bd->n; b++) {
			cum += h->buckets[b];
			fmt_prom_double(num, sizeof(num), bd->b[b]);
			evbuffer_add_printf(out, "%s_bucket{%s%sle=\"%s\"} %" PRIu64 "\n",
					    i->prom, l, sep, num, cum);
		}
		cum += h->buckets[bd->n];
		evbuffer_add_printf(out, "%s_bucket{%s%sle=\"+Inf\"} %" PRIu64 "\n",
				    i->prom, l, sep, cum);
		fmt_prom_double(num, sizeof(num), h->sum);
		evbuffer_add_printf(out, "%s_sum{%s} %s\n", i->prom, l, num);
		evbuffer_add_printf(out, "%s_count{%s} %" PRIu64 "\n", i->prom, l, h->count);
	}
}

int stats_render_prometheus(struct stats_store *st, struct evbuffer *out, const char *filter,
			    bool used_only, char *err, size_t errlen)
{
	struct filter f;
	struct items it = { 0 };
	struct prom_group *groups;
	struct sbuf labels = { 0 };
	size_t ngroups = 0;

	if (filter_init(&f, filter, err, errlen) != RM_OK)
		return RM_ERROR;
	stats_store_read_begin(st);
	collect(st, &f, used_only, &it);
	for (size_t n = 0; n < it.n; n++)
		it.v[n].prom = prom_name(&it.v[n]);
	if (it.n)
		qsort(it.v, it.n, sizeof(*it.v), cmp_prom);

	groups = xcalloc(it.n ? it.n : 1, sizeof(*groups));
	for (size_t n = 0; n < it.n; n++) {
		if (n == 0 || strcmp(it.v[n].prom, it.v[n - 1].prom)) {
			groups[ngroups].start = n;
			groups[ngroups].type = prom_type(&it.v[n]);
			ngroups++;
		}
		groups[ngroups - 1].end = n + 1;
	}
	if (ngroups)
		qsort_r(groups, ngroups, sizeof(*groups), cmp_group, &it);

	for (size_t g = 0; g < ngroups; g++) {
		evbuffer_add_printf(out, "# TYPE %s %s\n", it.v[groups[g].start].prom,
				    prom_types[groups[g].type]);
		for (size_t n = groups[g].start; n < groups[g].end; n++) {
			/* Two stats of different types mapping to one metric name
			 * cannot share a family; the first type wins. */
			if (prom_type(&it.v[n]) == groups[g].type)
				prom_sample(out, &it.v[n], &labels);
		}
		evbuffer_add(out, "\n", 1);
	}
	xfree(labels.p);
	xfree(groups);
	items_free(&it);
	stats_store_read_end(st);
	filter_fini(&f);
	return RM_OK;
}
