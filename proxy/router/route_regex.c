/* route_regex.c - Envoy safe_regex on PCRE2 (see route_regex.h).
 *
 * Why these options: RE2 (what Envoy uses) works on UTF-8, has '$' match only
 * at the end of the text without multi-line mode, and never backtracks.
 * PCRE2 gets the first two from PCRE2_UTF + PCRE2_MATCH_INVALID_UTF (request
 * bytes are untrusted and may be invalid UTF-8) and PCRE2_DOLLAR_ENDONLY; the
 * third is approximated by match/depth/heap limits so a pathological pattern
 * costs bounded time per request.  Full-match patterns are anchored with
 * compile options (PCRE2_ANCHORED | PCRE2_ENDANCHORED), never by wrapping the
 * text in "^(?:...)$", which a pattern like "a)|(b" could escape. */
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <pthread.h>

#include "route_regex.h"

#define RE_MATCH_LIMIT 200000    /* backtracking steps per match attempt */
#define RE_DEPTH_LIMIT 10000     /* nested backtracking depth (interpreter) */
#define RE_HEAP_LIMIT_KIB 4096   /* heap for backtracking frames (interpreter) */

struct route_re {
	pcre2_code *code;            /* owned */
	pcre2_match_context *mctx;   /* owned: the limits */
	uint32_t ngroups;            /* capture groups, group 0 not counted */
};

/* Per-thread match data, sized for the largest pattern this thread has run.
 * The key's destructor frees it when a worker thread exits; the main
 * thread's stays reachable from its TLS until the process ends. */
static pthread_key_t md_key;
static pthread_once_t md_once = PTHREAD_ONCE_INIT;
static __thread pcre2_match_data *tl_md;
static __thread uint32_t tl_md_pairs;

static void md_destroy(void *p)
{
	pcre2_match_data_free(p);
}

static void md_key_init(void)
{
	if (pthread_key_create(&md_key, md_destroy) != 0)
		die("pthread_key_create failed");
}

static pcre2_match_data *thread_md(uint32_t pairs)
{
	if (likely(tl_md && tl_md_pairs >= pairs))
		return tl_md;
	pthread_once(&md_once, md_key_init);
	pairs = MAX(pairs, 10u);
	pcre2_match_data *md = pcre2_match_data_create(pairs, NULL);
	if (!md)
		die("out of memory (pcre2 match data)");
	if (tl_md)
		pcre2_match_data_free(tl_md);
	tl_md = md;
	tl_md_pairs = pairs;
	if (pthread_setspecific(md_key, md) != 0)
		die("pthread_setspecific failed");
	return md;
}

struct route_re *route_re_compile(struct cfg_ctx *c, const char *pattern, unsigned flags)
{
	uint32_t opts = PCRE2_UTF | PCRE2_MATCH_INVALID_UTF | PCRE2_DOLLAR_ENDONLY |
			PCRE2_NEVER_BACKSLASH_C;
	int err = 0;
	PCRE2_SIZE off = 0;
	uint32_t ngroups = 0;

	if (flags & ROUTE_RE_FULL)
		opts |= PCRE2_ANCHORED | PCRE2_ENDANCHORED;
	pcre2_code *code = pcre2_compile((PCRE2_SPTR)pattern, PCRE2_ZERO_TERMINATED, opts,
					 &err, &off, NULL);
	if (!code) {
		PCRE2_UCHAR msg[256];
		if (pcre2_get_error_message(err, msg, sizeof(msg)) < 0)
			snprintf((char *)msg, sizeof(msg), "error %d", err);
		cfg_fail(c, "invalid regex '%.200s': %s at offset %zu", pattern, (const char *)msg,
			 (size_t)off);
		return NULL;
	}
	/* JIT is an optimisation: if it is unavailable (no JIT support, W^X
	 * policy), pcre2_match() runs the interpreter. */
	(void)pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);
	if (pcre2_pattern_info(code, PCRE2_INFO_CAPTURECOUNT, &ngroups) != 0)
		ngroups = 0;

	struct route_re *re = xcalloc(1, sizeof(*re));
	re->code = code;
	re->ngroups = ngroups;
	re->mctx = pcre2_match_context_create(NULL);
	if (!re->mctx)
		die("out of memory (pcre2 match context)");
	pcre2_set_match_limit(re->mctx, RE_MATCH_LIMIT);
	pcre2_set_depth_limit(re->mctx, RE_DEPTH_LIMIT);
	pcre2_set_heap_limit(re->mctx, RE_HEAP_LIMIT_KIB);
	return re;
}

void route_re_free(struct route_re *re)
{
	if (!re)
		return;
	pcre2_match_context_free(re->mctx);
	pcre2_code_free(re->code);
	xfree(re);
}

uint32_t route_re_groups(const struct route_re *re)
{
	return re->ngroups;
}

bool route_re_match(const struct route_re *re, const char *s, size_t n)
{
	pcre2_match_data *md = thread_md(re->ngroups + 1);

	return pcre2_match(re->code, (PCRE2_SPTR)(s ? s : ""), n, 0, 0, md, re->mctx) >= 0;
}

int route_re_check_rewrite(struct cfg_ctx *c, const struct route_re *re, const char *sub)
{
	for (const char *p = sub; *p; p++) {
		if (*p != '\\')
			continue;
		p++;
		if (*p == '\\')
			continue;
		if (*p >= '0' && *p <= '9') {
			uint32_t g = (uint32_t)(*p - '0');
			if (g > re->ngroups)
				return cfg_fail(c, "substitution refers to group \\%u but the pattern has "
						"only %u capture group%s", g, re->ngroups,
						re->ngroups == 1 ? "" : "s");
			continue;
		}
		if (!*p)
			return cfg_fail(c, "substitution ends with a lone '\\'");
		return cfg_fail(c, "'\\' in a substitution must be followed by a digit or '\\'");
	}
	return RM_OK;
}

/* A growable output buffer for replace_all. */
struct dbuf {
	char *p;                     /* owned */
	size_t len, cap;
};

static void db_put(struct dbuf *b, const char *s, size_t n)
{
	if (b->len + n + 1 > b->cap) {
		size_t cap = b->cap ? b->cap : 64;
		while (cap < b->len + n + 1)
			cap *= 2;
		b->p = xrealloc(b->p, cap);
		b->cap = cap;
	}
	memcpy(b->p + b->len, s, n);
	b->len += n;
	b->p[b->len] = '\0';
}

/* Bytes of the UTF-8 character at s (1 for anything invalid). */
static size_t utf8_step(const unsigned char *s, size_t n)
{
	size_t want = s[0] < 0x80 ? 1 : (s[0] & 0xe0) == 0xc0 ? 2 : (s[0] & 0xf0) == 0xe0 ? 3 :
		      (s[0] & 0xf8) == 0xf0 ? 4 : 1;
	size_t i = 1;

	while (i < want && i < n && (s[i] & 0xc0) == 0x80)
		i++;
	return i;
}

static void put_rewrite(struct dbuf *out, const char *sub, const char *s, const PCRE2_SIZE *ov,
			int nset)
{
	for (const char *p = sub; *p; p++) {
		if (p[0] == '\\' && p[1] >= '0' && p[1] <= '9') {
			int g = p[1] - '0';
			if (g < nset && ov[2 * g] != PCRE2_UNSET)
				db_put(out, s + ov[2 * g], ov[2 * g + 1] - ov[2 * g]);
			p++;
		} else if (p[0] == '\\' && p[1] == '\\') {
			db_put(out, "\\", 1);
			p++;
		} else {
			db_put(out, p, 1);
		}
	}
}

char *route_re_replace_all(const struct route_re *re, const char *s, size_t n,
			   const char *sub, size_t *out_len)
{
	pcre2_match_data *md = thread_md(re->ngroups + 1);
	struct dbuf out = { NULL, 0, 0 };
	size_t p = 0, lastend = SIZE_MAX;

	if (!s)
		s = "";
	db_put(&out, "", 0);
	while (p <= n) {
		int rc = pcre2_match(re->code, (PCRE2_SPTR)s, n, p, 0, md, re->mctx);
		if (rc < 0)
			break;   /* no more matches, or a limit was hit: keep the rest */
		const PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
		size_t ms = ov[0], me = ov[1];
		if (ms < p || me < ms || me > n)
			break;   /* \K games; never loop */
		if (ms > p)
			db_put(&out, s + p, ms - p);
		if (ms == me && ms == lastend) {
			/* An empty match right where the previous one ended is not
			 * a new match (RE2): copy one character and move on. */
			if (p >= n)
				break;
			size_t step = utf8_step((const unsigned char *)s + p, n - p);
			db_put(&out, s + p, step);
			p += step;
			continue;
		}
		put_rewrite(&out, sub, s, ov, rc == 0 ? (int)(re->ngroups + 1) : rc);
		p = me;
		lastend = me;
	}
	if (p < n)
		db_put(&out, s + p, n - p);
	*out_len = out.len;
	return out.p;
}
