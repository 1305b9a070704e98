/* h1_parser.c - HTTP/1.x head parser, chunked decoder and encoders.
 *
 * Strict by design (RFC 9112, request smuggling): anything another parser
 * could read differently is rejected instead of repaired.  Character classes
 * are compile-time tables; a head is walked once, line by line with memchr,
 * and fields are copied straight into the header map's arena. */
#include "h1_parser.h"

#include <event2/buffer.h>

/* ---- character classes --------------------------------------------------- */

enum {
	C_TOKEN = 0x01,  /* tchar (RFC 9110 5.6.2) */
	C_VALUE = 0x02,  /* field-vchar / SP / HTAB / obs-text */
	C_TARGET = 0x04, /* visible ASCII allowed in a request-target */
	C_HOST = 0x08,   /* uri-host / port / IP-literal bytes, no userinfo */
	C_HEX = 0x10,
	C_DIGIT = 0x20,
};

#define IS_ALPHA(c) (((c) >= 'a' && (c) <= 'z') || ((c) >= 'A' && (c) <= 'Z'))
#define IS_DIGIT(c) ((c) >= '0' && (c) <= '9')
#define IS_TCHAR(c) (IS_ALPHA(c) || IS_DIGIT(c) || (c) == '!' || (c) == '#' || \
	(c) == '$' || (c) == '%' || (c) == '&' || (c) == '\'' || (c) == '*' ||   \
	(c) == '+' || (c) == '-' || (c) == '.' || (c) == '^' || (c) == '_' ||    \
	(c) == '`' || (c) == '|' || (c) == '~')
#define IS_VALUE(c) ((c) == '\t' || ((c) >= 0x20 && (c) != 0x7f))
/* Visible ASCII except '#' (no fragments in a request-target). */
#define IS_TARGET(c) ((c) > 0x20 && (c) < 0x7f && (c) != '#')
#define IS_HOST(c) (IS_ALPHA(c) || IS_DIGIT(c) || (c) == '-' || (c) == '.' ||   \
	(c) == '_' || (c) == '~' || (c) == '!' || (c) == '$' || (c) == '&' ||    \
	(c) == '\'' || (c) == '(' || (c) == ')' || (c) == '*' || (c) == '+' ||   \
	(c) == ',' || (c) == ';' || (c) == '=' || (c) == ':' || (c) == '[' ||    \
	(c) == ']' || (c) == '%')
#define IS_HEX(c) (IS_DIGIT(c) || ((c) >= 'a' && (c) <= 'f') || ((c) >= 'A' && (c) <= 'F'))
#define CLS(c) ((IS_TCHAR(c) ? C_TOKEN : 0) | (IS_VALUE(c) ? C_VALUE : 0) |      \
	(IS_TARGET(c) ? C_TARGET : 0) | (IS_HOST(c) ? C_HOST : 0) |               \
	(IS_HEX(c) ? C_HEX : 0) | (IS_DIGIT(c) ? C_DIGIT : 0))
#define CLS4(b) CLS(b), CLS((b) + 1), CLS((b) + 2), CLS((b) + 3)
#define CLS16(b) CLS4(b), CLS4((b) + 4), CLS4((b) + 8), CLS4((b) + 12)
#define CLS64(b) CLS16(b), CLS16((b) + 16), CLS16((b) + 32), CLS16((b) + 48)
static const unsigned char cls[256] = { CLS64(0), CLS64(64), CLS64(128), CLS64(192) };

#define LC(c) ((c) >= 'A' && (c) <= 'Z' ? ((c) | 0x20) : (c))
#define LC4(b) LC(b), LC((b) + 1), LC((b) + 2), LC((b) + 3)
#define LC16(b) LC4(b), LC4((b) + 4), LC4((b) + 8), LC4((b) + 12)
#define LC64(b) LC16(b), LC16((b) + 16), LC16((b) + 32), LC16((b) + 48)
static const unsigned char lc_tab[256] = { LC64(0), LC64(64), LC64(128), LC64(192) };

static const signed char hexval[256] = {
	['0'] = 0, ['1'] = 1, ['2'] = 2, ['3'] = 3, ['4'] = 4, ['5'] = 5, ['6'] = 6,
	['7'] = 7, ['8'] = 8, ['9'] = 9, ['a'] = 10, ['b'] = 11, ['c'] = 12,
	['d'] = 13, ['e'] = 14, ['f'] = 15, ['A'] = 10, ['B'] = 11, ['C'] = 12,
	['D'] = 13, ['E'] = 14, ['F'] = 15,
};

#define U(c) ((unsigned char)(c))
#define IS_OWS(c) ((c) == ' ' || (c) == '\t')

/* Case-insensitive compare of p[0..n) with a lowercase literal. */
static inline bool ieq(const char *p, size_t n, const char *lit, size_t litlen)
{
	if (n != litlen)
		return false;
	for (size_t i = 0; i < n; i++)
		if (lc_tab[U(p[i])] != U(lit[i]))
			return false;
	return true;
}
#define IEQ(p, n, lit) ieq((p), (n), lit, sizeof(lit) - 1)

/* Iterate the elements of a comma-separated list, OWS-trimmed.  Returns false
 * at the end.  Empty elements are returned as such (len 0). */
struct list_it {
	const char *p, *end;
	bool done;
};

static bool list_next(struct list_it *it, const char **elem, size_t *len)
{
	if (it->done)
		return false;
	const char *s = it->p;
	const char *c = memchr(s, ',', (size_t)(it->end - s));
	const char *e = c ? c : it->end;
	it->p = c ? c + 1 : it->end;
	it->done = !c;
	while (s < e && IS_OWS(*s))
		s++;
	while (e > s && IS_OWS(e[-1]))
		e--;
	*elem = s;
	*len = (size_t)(e - s);
	return true;
}

/* ---- head end ------------------------------------------------------------ */

/* Is the line terminated by the LF at e empty ("" or "\r")? */
static inline bool line_empty(const char *buf, size_t e)
{
	size_t ls = (e > 0 && buf[e - 1] == '\r') ? e - 1 : e;
	return ls == 0 || buf[ls - 1] == '\n';
}

long h1_head_end(struct h1_scan *s, const char *buf, size_t len, uint32_t max_head_bytes)
{
	/* max_head_bytes == 0 means "no limit". */
	size_t lim = (max_head_bytes && len > max_head_bytes) ? max_head_bytes : len;
	size_t pos = s->scanned;

	while (pos < lim) {
		const char *lf = memchr(buf + pos, '\n', lim - pos);
		if (!lf) {
			pos = lim;
			break;
		}
		size_t e = (size_t)(lf - buf);
		if (line_empty(buf, e)) {
			/* An empty line ends the head unless every line before it
			 * was empty too (leading CRLFs before the request line).
			 * Since we stop at the first terminating empty line, the
			 * line before this one is empty only if it was leading. */
			size_t ls = (e > 0 && buf[e - 1] == '\r') ? e - 1 : e;
			if (ls > 0 && !line_empty(buf, ls - 1)) {
				s->scanned = e; /* calling again finds the same end */
				return (long)(e + 1);
			}
		}
		pos = e + 1;
	}
	s->scanned = pos;
	if (max_head_bytes && len > max_head_bytes)
		return -1;
	return 0;
}

/* ---- head parser --------------------------------------------------------- */

#define DEFAULT_MAX_HEAD (64 * 1024)
#define DEFAULT_MAX_HEADERS 100
#define CHUNK_LINE_MAX 4096

struct pctx {
	enum h1_type type;
	struct h1_head *out;
	struct h1_error *err;
	struct http_headers *h;
	/* request-target form decided on the request line */
	bool authority_from_target; /* absolute-form or CONNECT: ignore Host */
	unsigned host_count;
	bool cl_seen, te_seen;
	bool te_bad, te_last_chunked, te_other;
	unsigned te_chunked;
	bool conn_close, conn_keep_alive, conn_upgrade, conn_other;
	bool upgrade_field, have_upgrade, te_trailers;
	unsigned flags;                /* H1_F_* (responses) */
};

static int fail(struct pctx *cx, uint16_t status, const char *reason)
{
	cx->err->status = cx->type == H1_RESPONSE ? 502 : status;
	cx->err->reason = reason;
	return RM_ERROR;
}

/* "HTTP/1.x".  Returns 0 (ok, *minor set), 505 or 400. */
static int parse_version(const char *v, size_t n, uint8_t *minor)
{
	if (n < 6 || memcmp(v, "HTTP/", 5) != 0 || !IS_DIGIT(v[5]))
		return 400;
	if (n == 6) /* "HTTP/2" */
		return v[5] == '1' ? 400 : 505;
	if (n != 8 || v[6] != '.' || !IS_DIGIT(v[7]))
		return 400;
	if (v[5] != '1')
		return 505;
	/* HTTP/1.2+ is served as the highest 1.x we speak (RFC 9110 2.5). */
	*minor = v[7] == '0' ? 0 : 1;
	return 0;
}

/* host[:port] from a Host header or a target.  No userinfo. */
static bool valid_authority(const char *p, size_t n, bool need_port)
{
	for (size_t i = 0; i < n; i++)
		if (!(cls[U(p[i])] & C_HOST))
			return false;
	if (!need_port)
		return true;
	const char *colon = memrchr(p, ':', n);
	if (!colon || colon == p || p[n - 1] == ']')
		return false;
	size_t plen = (size_t)(p + n - colon - 1);
	if (plen == 0 || plen > 5)
		return false;
	for (size_t i = 1; i <= plen; i++)
		if (!IS_DIGIT(colon[i]))
			return false;
	return true;
}

static bool valid_target_chars(const char *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (!(cls[U(p[i])] & C_TARGET))
			return false;
	return true;
}

static int parse_absolute_target(struct pctx *cx, const char *m, size_t mlen,
				 const char *t, size_t tn)
{
	const char *scheme;
	size_t skip;
	if (tn >= 7 && IEQ(t, 7, "http://")) {
		scheme = "http";
		skip = 7;
	} else if (tn >= 8 && IEQ(t, 8, "https://")) {
		scheme = "https";
		skip = 8;
	} else {
		return fail(cx, 400, "invalid_target");
	}
	if (!valid_target_chars(t, tn))
		return fail(cx, 400, "invalid_target");
	const char *a = t + skip, *end = t + tn, *ae = a;
	while (ae < end && *ae != '/' && *ae != '?')
		ae++;
	if (ae == a || !valid_authority(a, (size_t)(ae - a), false))
		return fail(cx, 400, "invalid_target");
	hdrs_add(cx->h, ":scheme", 7, scheme, strlen(scheme));
	hdrs_add(cx->h, ":authority", 10, a, (size_t)(ae - a));
	if (ae == end) {
		/* Empty path: "/" (or "*" for OPTIONS, RFC 9112 3.2.4). */
		if (mlen == 7 && memcmp(m, "OPTIONS", 7) == 0)
			hdrs_add(cx->h, ":path", 5, "*", 1);
		else
			hdrs_add(cx->h, ":path", 5, "/", 1);
	} else if (*ae == '/') {
		hdrs_add(cx->h, ":path", 5, ae, (size_t)(end - ae));
	} else { /* "?query" right after the authority */
		size_t qn = (size_t)(end - ae);
		char *tmp = xmalloc(qn + 1);
		tmp[0] = '/';
		memcpy(tmp + 1, ae, qn);
		hdrs_add(cx->h, ":path", 5, tmp, qn + 1);
		xfree(tmp);
	}
	cx->authority_from_target = true;
	return RM_OK;
}

static int parse_request_line(struct pctx *cx, const char *p, size_t n)
{
	size_t i = 0;
	while (i < n && (cls[U(p[i])] & C_TOKEN))
		i++;
	if (i == n)
		return fail(cx, 400, i ? "invalid_request_line" : "invalid_method");
	if (i == 0 || p[i] != ' ')
		return fail(cx, 400, "invalid_method");
	const char *m = p;
	size_t mlen = i;
	const char *t = p + i + 1;
	const char *lastsp = memrchr(t, ' ', (size_t)(p + n - t));
	if (!lastsp) {
		/* "GET /": an HTTP/0.9 simple request (505); anything else
		 * without a version is not a request line at all (400). */
		if (t < p + n && *t == '/' && valid_target_chars(t, (size_t)(p + n - t)))
			return fail(cx, 505, "invalid_version");
		return fail(cx, 400, "invalid_request_line");
	}
	int v = parse_version(lastsp + 1, (size_t)(p + n - lastsp - 1), &cx->out->version_minor);
	if (v)
		return fail(cx, (uint16_t)v, "invalid_version");
	size_t tn = (size_t)(lastsp - t);
	if (tn == 0 || !valid_target_chars(t, tn))
		return fail(cx, 400, "invalid_target");

	hdrs_add(cx->h, ":method", 7, m, mlen);
	if (mlen == 7 && memcmp(m, "CONNECT", 7) == 0) {
		/* authority-form only (RFC 9112 3.2.3). */
		if (!valid_authority(t, tn, true))
			return fail(cx, 400, "invalid_target");
		cx->out->connect = true;
		cx->authority_from_target = true;
		hdrs_add(cx->h, ":authority", 10, t, tn);
		return RM_OK;
	}
	if (t[0] == '/') {
		hdrs_add(cx->h, ":path", 5, t, tn);
		return RM_OK;
	}
	if (tn == 1 && t[0] == '*') {
		if (mlen != 7 || memcmp(m, "OPTIONS", 7) != 0)
			return fail(cx, 400, "invalid_target");
		hdrs_add(cx->h, ":path", 5, "*", 1);
		return RM_OK;
	}
	return parse_absolute_target(cx, m, mlen, t, tn);
}

static int parse_status_line(struct pctx *cx, const char *p, size_t n)
{
	if (n < 8 || parse_version(p, 8, &cx->out->version_minor) || (n > 8 && p[8] != ' '))
		return fail(cx, 502, "invalid_version");
	if (n < 12 || !IS_DIGIT(p[9]) || !IS_DIGIT(p[10]) || !IS_DIGIT(p[11]))
		return fail(cx, 502, "invalid_status");
	unsigned st = (unsigned)(p[9] - '0') * 100 + (unsigned)(p[10] - '0') * 10 + (unsigned)(p[11] - '0');
	if (st < 100 || st > 599)
		return fail(cx, 502, "invalid_status");
	if (n > 12) {
		/* The reason phrase is ignored, but must be clean. */
		if (p[12] != ' ')
			return fail(cx, 502, "invalid_status");
		for (size_t i = 13; i < n; i++)
			if (!(cls[U(p[i])] & C_VALUE))
				return fail(cx, 502, p[i] == '\r' ? "bare_cr" : "invalid_status");
	}
	cx->out->status = (uint16_t)st;
	hdrs_add(cx->h, ":status", 7, p + 9, 3);
	return RM_OK;
}

/* First byte at or after p that may not appear in a field value (CTL other
 * than HTAB, or DEL), or end.  On a well-formed line that is the CR ending
 * it, so one pass both validates the value and finds the line end; eight
 * bytes are tested per step (obs-text, >= 0x80, is allowed). */
static inline const char *scan_value(const char *p, const char *end)
{
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
	const uint64_t ones = 0x0101010101010101ull, highs = 0x8080808080808080ull;
	while (end - p >= 8) {
		uint64_t x;
		memcpy(&x, p, 8);
		uint64_t ctl = (x - 0x20 * ones) & ~x & highs; /* byte < 0x20 */
		uint64_t y = x ^ (0x7f * ones);
		uint64_t del = (y - ones) & ~y & highs;        /* byte == 0x7f */
		uint64_t m = ctl | del;
		if (likely(!m)) {
			p += 8;
			continue;
		}
		/* Borrows only flag bytes above a real hit: the lowest is exact. */
		p += __builtin_ctzll(m) >> 3;
		if (*p != '\t')
			return p;
		p++;
	}
#endif
	while (p < end && (cls[U(*p)] & C_VALUE))
		p++;
	return p;
}

/* A parsed field line; name/value point into the input. */
struct field {
	const char *name, *value;
	size_t nlen, vlen;
};

/* Parse the field line at *pp (up to end).  Returns NULL and either fills f
 * or, at the empty line that ends the section, sets *done; *pp moves past
 * the line.  Otherwise returns the rejection reason. */
static const char *next_field(const char **pp, const char *end, struct field *f, bool *done)
{
	const char *p = *pp;
	if (p >= end)
		return "incomplete_head";
	if (*p == '\r') {
		if (p + 1 < end && p[1] == '\n') {
			*pp = p + 2;
			*done = true;
			return NULL;
		}
		return "bare_cr";
	}
	if (*p == '\n')
		return "bare_lf";
	if (IS_OWS(*p))
		return "obs_fold";
	f->name = p;
	while (p < end && (cls[U(*p)] & C_TOKEN))
		p++;
	f->nlen = (size_t)(p - f->name);
	if (f->nlen == 0 || p == end || *p != ':') {
		if (p < end && *p == '\r' && (p + 1 == end || p[1] != '\n'))
			return "bare_cr";
		if (p < end && *p == '\n')
			return "bare_lf";
		return "invalid_header_name";
	}
	p++;
	while (p < end && IS_OWS(*p))
		p++;
	f->value = p;
	p = scan_value(p, end);
	if (p == end)
		return "incomplete_head";
	if (*p != '\r')
		return *p == '\n' ? "bare_lf" : "invalid_header_value";
	if (p + 1 == end || p[1] != '\n')
		return "bare_cr";
	const char *ve = p;
	while (ve > f->value && IS_OWS(ve[-1]))
		ve--;
	f->vlen = (size_t)(ve - f->value);
	*pp = p + 2;
	return NULL;
}

/* Content-Length: 1*DIGIT, or a list of identical values ("5, 5"). */
static bool parse_content_length(const char *v, size_t n, uint64_t *out, size_t *first_len)
{
	struct list_it it = { v, v + n, false };
	const char *e;
	size_t el;
	bool have = false;
	uint64_t val = 0;
	while (list_next(&it, &e, &el)) {
		if (el == 0)
			return false;
		uint64_t x = 0;
		for (size_t i = 0; i < el; i++) {
			if (!IS_DIGIT(e[i]))
				return false;
			unsigned d = (unsigned)(e[i] - '0');
			if (x > ((uint64_t)INT64_MAX - d) / 10)
				return false;
			x = x * 10 + d;
		}
		if (have && x != val)
			return false;
		if (!have)
			*first_len = el;
		have = true;
		val = x;
	}
	*out = val;
	return have;
}

static void parse_transfer_encoding(struct pctx *cx, const char *v, size_t n)
{
	struct list_it it = { v, v + n, false };
	const char *e;
	size_t el;
	cx->te_seen = true;
	while (list_next(&it, &e, &el)) {
		if (el == 0) {
			cx->te_bad = true;
			continue;
		}
		for (size_t i = 0; i < el; i++)
			if (!(cls[U(e[i])] & C_TOKEN))
				cx->te_bad = true; /* parameters, quotes, spaces inside */
		if (IEQ(e, el, "chunked")) {
			cx->te_chunked++;
			cx->te_last_chunked = true;
		} else {
			cx->te_other = true;
			cx->te_last_chunked = false;
		}
	}
}

/* Returns true if the header names other fields (to be removed). */
static bool parse_connection(struct pctx *cx, const char *v, size_t n)
{
	bool other = false;
	struct list_it it = { v, v + n, false };
	const char *e;
	size_t el;
	while (list_next(&it, &e, &el)) {
		if (el == 0)
			continue;
		if (IEQ(e, el, "close"))
			cx->conn_close = true;
		else if (IEQ(e, el, "keep-alive"))
			cx->conn_keep_alive = true;
		else if (IEQ(e, el, "upgrade"))
			cx->conn_upgrade = true;
		else
			other = true;
	}
	return other;
}

/* Fields with framing or hop-by-hop meaning are consumed here; everything
 * else is copied into the map. */
static int handle_field(struct pctx *cx, const char *name, size_t nlen,
			const char *v, size_t vlen)
{
	bool req = cx->type == H1_REQUEST;
	switch (nlen) {
	case 2:
		if (IEQ(name, nlen, "te")) {
			if (!req || cx->te_trailers)
				return RM_OK;
			struct list_it it = { v, v + vlen, false };
			const char *e;
			size_t el;
			while (list_next(&it, &e, &el)) {
				const char *semi = memchr(e, ';', el);
				size_t tl = semi ? (size_t)(semi - e) : el;
				while (tl && IS_OWS(e[tl - 1]))
					tl--;
				if (IEQ(e, tl, "trailers")) {
					cx->te_trailers = true;
					hdrs_add(cx->h, "te", 2, "trailers", 8);
					break;
				}
			}
			return RM_OK;
		}
		break;
	case 4:
		if (req && IEQ(name, nlen, "host")) {
			if (++cx->host_count > 1)
				return fail(cx, 400, "duplicate_host");
			if (!valid_authority(v, vlen, false))
				return fail(cx, 400, "invalid_host");
			if (!cx->authority_from_target)
				hdrs_add(cx->h, ":authority", 10, v, vlen);
			return RM_OK;
		}
		break;
	case 6:
		if (req && IEQ(name, nlen, "expect") && IEQ(v, vlen, "100-continue") &&
		    cx->out->version_minor >= 1)
			cx->out->expect_continue = true;
		break;
	case 7:
		if (IEQ(name, nlen, "upgrade")) {
			cx->upgrade_field = true;
			cx->have_upgrade = cx->have_upgrade || vlen > 0;
		}
		break;
	case 10:
		if (IEQ(name, nlen, "connection")) {
			if (parse_connection(cx, v, vlen)) {
				/* Names other fields: resolved once all are in. */
				cx->conn_other = true;
				hdrs_add(cx->h, "connection", 10, v, vlen);
			}
			return RM_OK;
		}
		if (IEQ(name, nlen, "keep-alive"))
			return RM_OK;
		break;
	case 14:
		if (IEQ(name, nlen, "content-length")) {
			uint64_t cl;
			size_t first_len = 0;
			if (!parse_content_length(v, vlen, &cl, &first_len))
				return fail(cx, 400, "invalid_content_length");
			if (cx->cl_seen) {
				if (cl != cx->out->content_length)
					return fail(cx, 400, "invalid_content_length");
				return RM_OK; /* identical duplicate: keep one */
			}
			cx->cl_seen = true;
			cx->out->content_length = cl;
			hdrs_add(cx->h, "content-length", 14, v, first_len);
			return RM_OK;
		}
		break;
	case 16:
		if (IEQ(name, nlen, "proxy-connection"))
			return RM_OK;
		break;
	case 17:
		if (IEQ(name, nlen, "transfer-encoding")) {
			parse_transfer_encoding(cx, v, vlen);
			return RM_OK;
		}
		break;
	}
	hdrs_add(cx->h, name, nlen, v, vlen);
	return RM_OK;
}

/* Is a field named by one of the Connection fields in the map? */
static bool named_by_connection(const struct http_headers *h, const char *name, uint32_t nlen)
{
	for (uint32_t c = 0; c < h->n; c++) {
		const struct hdr_field *cf = &h->f[c];
		if (cf->name_len != 10 || memcmp(h->arena + cf->name_off, "connection", 10) != 0)
			continue;
		const char *v = h->arena + cf->value_off;
		struct list_it it = { v, v + cf->value_len, false };
		const char *e;
		size_t el;
		while (list_next(&it, &e, &el))
			if (ieq(e, el, name, nlen))
				return true;
	}
	return false;
}

/* Remove the fields the Connection header names, then Connection itself.
 * Framing (content-length) and pseudo-headers are never removed this way:
 * "Connection: content-length" must not turn a body into a new request. */
#define DROP_MARK UINT32_MAX
static void drop_connection_named(struct http_headers *h)
{
	/* Pass 1 marks (Connection fields stay intact while they are read). */
	for (uint32_t r = 0; r < h->n; r++) {
		struct hdr_field *f = &h->f[r];
		const char *name = h->arena + f->name_off;
		/* "upgrade" is the Upgrade logic's to keep or drop. */
		if (name[0] == ':' || (f->name_len == 10 && memcmp(name, "connection", 10) == 0) ||
		    (f->name_len == 14 && memcmp(name, "content-length", 14) == 0) ||
		    (f->name_len == 7 && memcmp(name, "upgrade", 7) == 0))
			continue;
		if (named_by_connection(h, name, f->name_len))
			f->value_off = DROP_MARK;
	}
	/* Pass 2 compacts. */
	uint32_t w = 0;
	for (uint32_t r = 0; r < h->n; r++) {
		const struct hdr_field *f = &h->f[r];
		if (f->value_off == DROP_MARK ||
		    (f->name_len == 10 && memcmp(h->arena + f->name_off, "connection", 10) == 0)) {
			h->bytes -= f->name_len + f->value_len;
			continue;
		}
		h->f[w++] = *f;
	}
	h->n = w;
}

static int finish_head(struct pctx *cx)
{
	struct h1_head *out = cx->out;
	bool req = cx->type == H1_REQUEST;

	if (req && out->version_minor >= 1 && cx->host_count == 0)
		return fail(cx, 400, "missing_host");
	if (cx->te_seen) {
		if (cx->cl_seen)
			return fail(cx, 400, "content_length_and_transfer_encoding");
		if (out->version_minor == 0)
			return fail(cx, 400, "invalid_transfer_encoding");
		/* Malformed framing is a 400; a well-formed coding we do not
		 * implement (gzip, identity, ...) is a 501 (RFC 9112 6.1). */
		if (cx->te_bad || cx->te_chunked > 1 || (cx->te_chunked == 1 && !cx->te_last_chunked))
			return fail(cx, 400, "invalid_transfer_encoding");
		if (cx->te_other || !cx->te_last_chunked)
			return fail(cx, 501, "unsupported_transfer_encoding");
	}

	if (out->version_minor >= 1)
		out->keep_alive = !cx->conn_close;
	else
		out->keep_alive = cx->conn_keep_alive && !cx->conn_close;

	if (cx->conn_other)
		drop_connection_named(cx->h);

	if (req)
		out->upgrade = cx->conn_upgrade && cx->have_upgrade && out->version_minor >= 1;
	else
		out->upgrade = out->status == 101;
	if (cx->upgrade_field && !out->upgrade)
		hdrs_del(cx->h, "upgrade");

	/* Message body length (RFC 9112 6.3). */
	enum h1_body_kind body;
	if (req) {
		if (out->connect)
			body = H1_BODY_NONE; /* the tunnel follows the head */
		else if (cx->te_seen)
			body = H1_BODY_CHUNKED;
		else if (cx->cl_seen)
			body = out->content_length ? H1_BODY_LENGTH : H1_BODY_NONE;
		else
			body = H1_BODY_NONE;
	} else {
		unsigned st = out->status;
		if ((cx->flags & H1_F_REQ_HEAD) || st < 200 || st == 204 || st == 304 ||
		    ((cx->flags & H1_F_REQ_CONNECT) && st < 300))
			body = H1_BODY_NONE;
		else if (cx->te_seen)
			body = H1_BODY_CHUNKED;
		else if (cx->cl_seen)
			body = out->content_length ? H1_BODY_LENGTH : H1_BODY_NONE;
		else
			body = H1_BODY_EOF;
	}
	out->body = body;
	if (body == H1_BODY_EOF)
		out->keep_alive = false;
	return RM_OK;
}

int h1_parse_head(enum h1_type type, const char *buf, size_t len, unsigned flags,
		  const struct h1_limits *lim, struct h1_head *out, struct h1_error *err)
{
	struct pctx cx = { .type = type, .out = out, .err = err, .h = &out->hdrs, .flags = flags };
	uint32_t max_head = lim && lim->max_head_bytes ? lim->max_head_bytes : DEFAULT_MAX_HEAD;
	uint32_t max_headers = lim && lim->max_headers ? lim->max_headers : DEFAULT_MAX_HEADERS;
	const char *p = buf, *end = buf + len;

	out->version_minor = 1;
	out->status = 0;
	out->body = H1_BODY_NONE;
	out->content_length = 0;
	out->keep_alive = false;
	out->expect_continue = false;
	out->upgrade = false;
	out->connect = false;

	if (len > max_head) {
		fail(&cx, 431, "headers_too_large");
		goto error;
	}
	/* Every field fits in the arena with room to spare: name and value
	 * plus two NULs never exceed their line's bytes ("n:v\r\n"), and the
	 * pseudo-header names are the only additions. */
	if (out->hdrs.arena_cap - out->hdrs.arena_len < len + 64) {
		size_t cap = (size_t)out->hdrs.arena_len + len + 64;
		if (cap > UINT32_MAX) {
			fail(&cx, 431, "headers_too_large");
			goto error;
		}
		out->hdrs.arena = xrealloc(out->hdrs.arena, cap);
		out->hdrs.arena_cap = (uint32_t)cap;
	}

	/* Start line, after any leading empty lines (RFC 9112 2.2). */
	for (;;) {
		const char *lf = memchr(p, '\n', (size_t)(end - p));
		if (!lf) {
			fail(&cx, 400, "invalid_request_line");
			goto error;
		}
		if (lf == p || lf[-1] != '\r') {
			fail(&cx, 400, "bare_lf");
			goto error;
		}
		const char *line = p;
		size_t ll = (size_t)(lf - 1 - p);
		p = lf + 1;
		if (ll == 0)
			continue;
		int rc = type == H1_REQUEST ? parse_request_line(&cx, line, ll)
					    : parse_status_line(&cx, line, ll);
		if (rc != RM_OK)
			goto error;
		break;
	}

	bool done = false;
	unsigned count = 0;
	while (!done) {
		struct field f;
		const char *bad = next_field(&p, end, &f, &done);
		if (unlikely(bad != NULL)) {
			fail(&cx, 400, bad);
			goto error;
		}
		if (done)
			break;
		if (unlikely(++count > max_headers)) {
			fail(&cx, 431, "too_many_headers");
			goto error;
		}
		if (handle_field(&cx, f.name, f.nlen, f.value, f.vlen) != RM_OK)
			goto error;
	}
	if (finish_head(&cx) != RM_OK)
		goto error;
	return RM_OK;

error:
	hdrs_clear(&out->hdrs);
	return RM_ERROR;
}

/* ---- chunked decoder ----------------------------------------------------- */

enum {
	CS_SIZE,      /* hex digits of the chunk size (line_bytes counts them) */
	CS_SIZE_WS,   /* BWS after the size: only ';' or more BWS may follow */
	CS_EXT,       /* chunk extensions up to CR */
	CS_SIZE_LF,   /* CR seen at the end of the size line */
	CS_DATA,      /* remaining payload bytes */
	CS_DATA_CR,   /* CRLF after the payload */
	CS_DATA_LF,
	CS_TRAILER,   /* collecting trailer lines into tbuf */
	CS_TRAILER_LF,/* CR at the start of a trailer line: the end if LF follows */
	CS_DONE,
	CS_ERROR,
};

#define TRAILER_DEFAULT_MAX (64 * 1024)

void h1_chunked_init(struct h1_chunked *c, const struct h1_limits *lim)
{
	memset(c, 0, sizeof(*c));
	c->state = CS_SIZE;
	c->max_line = CHUNK_LINE_MAX;
	c->tmax = lim && lim->max_head_bytes ? lim->max_head_bytes : TRAILER_DEFAULT_MAX;
	hdrs_init(&c->trailers);
}

void h1_chunked_free(struct h1_chunked *c)
{
	if (!c)
		return;
	xfree(c->tbuf);
	c->tbuf = NULL;
	c->tlen = c->tcap = 0;
	hdrs_free(&c->trailers);
}

static long chunk_fail(struct h1_chunked *c, struct h1_error *err, uint16_t status,
		       const char *reason)
{
	c->state = CS_ERROR;
	err->status = status;
	err->reason = reason;
	return RM_ERROR;
}

/* Trailer fields must not carry framing, routing or hop-by-hop meaning
 * (RFC 9110 6.5.1); such fields are dropped rather than merged. */
static bool trailer_forbidden(const char *n, size_t len)
{
	switch (len) {
	case 2: return IEQ(n, len, "te");
	case 4: return IEQ(n, len, "host");
	case 7: return IEQ(n, len, "upgrade") || IEQ(n, len, "trailer");
	case 10: return IEQ(n, len, "connection") || IEQ(n, len, "keep-alive");
	case 14: return IEQ(n, len, "content-length");
	case 16: return IEQ(n, len, "proxy-connection");
	case 17: return IEQ(n, len, "transfer-encoding");
	}
	return n[0] == ':';
}

/* Parse the collected trailer lines (tbuf ends with the empty line). */
static const char *parse_trailers(struct h1_chunked *c)
{
	const char *p = c->tbuf, *end = c->tbuf + c->tlen;
	bool done = false;
	while (!done) {
		struct field f;
		const char *bad = next_field(&p, end, &f, &done);
		if (bad)
			return bad;
		if (!done && !trailer_forbidden(f.name, f.nlen))
			hdrs_add(&c->trailers, f.name, f.nlen, f.value, f.vlen);
	}
	return NULL;
}

static void tbuf_push(struct h1_chunked *c, char ch)
{
	if (c->tlen == c->tcap) {
		uint32_t cap = c->tcap ? c->tcap * 2 : 256;
		c->tbuf = xrealloc(c->tbuf, cap);
		c->tcap = cap;
	}
	c->tbuf[c->tlen++] = ch;
}

long h1_chunked_feed(struct h1_chunked *c, const char *in, size_t len,
		     size_t *data_off, size_t *data_len, struct h1_error *err)
{
	size_t i = 0;
	*data_off = 0;
	*data_len = 0;
	if (c->done)
		return 0;
	while (i < len) {
		unsigned char ch = U(in[i]);
		switch (c->state) {
		case CS_SIZE:
			if (cls[ch] & C_HEX) {
				/* 16 digits at most, and below 2^63. */
				if (c->line_bytes >= 16 || (c->remaining >> 59))
					return chunk_fail(c, err, 400, "invalid_chunk_size");
				c->remaining = (c->remaining << 4) | (uint64_t)hexval[ch];
				c->line_bytes++;
				i++;
				continue;
			}
			if (c->line_bytes == 0)
				return chunk_fail(c, err, 400, "invalid_chunk_size");
			if (ch == '\r')
				c->state = CS_SIZE_LF;
			else if (ch == ';')
				c->state = CS_EXT;
			else if (IS_OWS(ch))
				c->state = CS_SIZE_WS;
			else if (ch == '\n')
				return chunk_fail(c, err, 400, "bare_lf");
			else
				return chunk_fail(c, err, 400, "invalid_chunk_size");
			break;
		case CS_SIZE_WS:
			if (ch == ';')
				c->state = CS_EXT;
			else if (!IS_OWS(ch))
				return chunk_fail(c, err, 400, "invalid_chunk_size");
			break;
		case CS_EXT:
			if (ch == '\r')
				c->state = CS_SIZE_LF;
			else if (ch == '\n')
				return chunk_fail(c, err, 400, "bare_lf");
			else if (!(cls[ch] & C_VALUE))
				return chunk_fail(c, err, 400, "invalid_chunk_extension");
			break;
		case CS_SIZE_LF:
			if (ch != '\n')
				return chunk_fail(c, err, 400, "bare_cr");
			c->line_bytes = 0;
			c->state = c->remaining ? CS_DATA : CS_TRAILER;
			i++;
			continue;
		case CS_DATA: {
			size_t take = len - i;
			if (take > c->remaining)
				take = (size_t)c->remaining;
			c->remaining -= take;
			if (!c->remaining)
				c->state = CS_DATA_CR;
			*data_off = i;
			*data_len = take;
			return (long)(i + take);
		}
		case CS_DATA_CR:
			if (ch != '\r')
				return chunk_fail(c, err, 400, "invalid_chunk_data");
			c->state = CS_DATA_LF;
			i++;
			continue;
		case CS_DATA_LF:
			if (ch != '\n')
				return chunk_fail(c, err, 400, "invalid_chunk_data");
			c->state = CS_SIZE;
			c->line_bytes = 0;
			i++;
			continue;
		case CS_TRAILER:
			if (c->line_bytes == 0 && ch == '\r') {
				c->state = CS_TRAILER_LF;
				i++;
				continue;
			}
			if (c->line_bytes == 0 && ch == '\n')
				return chunk_fail(c, err, 400, "bare_lf");
			if (c->tlen >= c->tmax)
				return chunk_fail(c, err, 431, "headers_too_large");
			tbuf_push(c, (char)ch);
			c->line_bytes = ch == '\n' ? 0 : c->line_bytes + 1;
			i++;
			continue;
		case CS_TRAILER_LF: {
			if (ch != '\n')
				return chunk_fail(c, err, 400, "bare_cr");
			i++;
			const char *bad = NULL;
			if (c->tlen) {
				tbuf_push(c, '\r');
				tbuf_push(c, '\n');
				bad = parse_trailers(c);
			}
			if (bad)
				return chunk_fail(c, err, 400, bad);
			c->state = CS_DONE;
			c->done = true;
			return (long)i;
		}
		case CS_DONE:
			return (long)i;
		default:
			return chunk_fail(c, err, 400, "invalid_chunked_state");
		}
		/* Size-line bytes that fell through: count against the limit. */
		if (++c->line_bytes > c->max_line)
			return chunk_fail(c, err, 400, "chunk_line_too_long");
		i++;
	}
	return (long)i;
}

/* ---- encoders ------------------------------------------------------------ */

/* Appends into one contiguous reservation: one evbuffer call per head. */
struct wbuf {
	char *p;
};

static inline void w_put(struct wbuf *w, const char *s, size_t n)
{
	memcpy(w->p, s, n);
	w->p += n;
}
#define W_LIT(w, lit) w_put((w), lit, sizeof(lit) - 1)

static void w_commit(struct evbuffer *out, struct evbuffer_iovec *vec, struct wbuf *w)
{
	vec->iov_len = (size_t)(w->p - (char *)vec->iov_base);
	if (evbuffer_commit_space(out, vec, 1) != 0)
		die("evbuffer_commit_space failed");
}

static char *w_reserve(struct evbuffer *out, struct evbuffer_iovec *vec, size_t n)
{
	if (evbuffer_reserve_space(out, (ev_ssize_t)n, vec, 1) != 1 || vec->iov_len < n)
		die("evbuffer_reserve_space(%zu) failed", n);
	return vec->iov_base;
}

/* Fields the encoder writes itself or must not repeat. */
static bool encoder_skips(const struct http_headers *h, uint32_t i, bool chunked, bool has_authority)
{
	const struct hdr_field *f = &h->f[i];
	const char *n = h->arena + f->name_off;
	if (f->name_len == 0 || n[0] == ':')
		return true;
	switch (f->name_len) {
	case 4: return has_authority && memcmp(n, "host", 4) == 0;
	case 10: return memcmp(n, "connection", 10) == 0;
	case 14: return chunked && memcmp(n, "content-length", 14) == 0;
	case 17: return memcmp(n, "transfer-encoding", 17) == 0;
	}
	return false;
}

static size_t fields_size(const struct http_headers *h, bool chunked, bool has_authority)
{
	size_t n = 0;
	for (uint32_t i = 0; i < h->n; i++)
		if (!encoder_skips(h, i, chunked, has_authority))
			n += h->f[i].name_len + h->f[i].value_len + 4;
	return n;
}

static void fields_write(struct wbuf *w, const struct http_headers *h, bool chunked, bool has_authority)
{
	for (uint32_t i = 0; i < h->n; i++) {
		if (encoder_skips(h, i, chunked, has_authority))
			continue;
		const struct hdr_field *f = &h->f[i];
		w_put(w, h->arena + f->name_off, f->name_len);
		W_LIT(w, ": ");
		w_put(w, h->arena + f->value_off, f->value_len);
		W_LIT(w, "\r\n");
	}
}

static const char *pseudo(const struct http_headers *h, const char *name, size_t nlen, size_t *vlen)
{
	/* Pseudo-headers sit at the front: stop at the first regular field. */
	for (uint32_t i = 0; i < h->n; i++) {
		const struct hdr_field *f = &h->f[i];
		const char *n = h->arena + f->name_off;
		if (f->name_len == 0 || n[0] != ':')
			break;
		if (f->name_len == nlen && memcmp(n, name, nlen) == 0) {
			*vlen = f->value_len;
			return h->arena + f->value_off;
		}
	}
	*vlen = 0;
	return NULL;
}

void h1_encode_request(struct evbuffer *out, const struct http_headers *h,
		       bool chunked, bool keep_alive, bool upgrade)
{
	size_t mlen, plen, alen;
	const char *m = pseudo(h, ":method", 7, &mlen);
	const char *path = pseudo(h, ":path", 5, &plen);
	const char *auth = pseudo(h, ":authority", 10, &alen);
	if (!m) {
		m = "GET";
		mlen = 3;
	}
	if (mlen == 7 && memcmp(m, "CONNECT", 7) == 0 && auth) {
		path = auth; /* authority-form */
		plen = alen;
	} else if (!path || !plen) {
		path = "/";
		plen = 1;
	}

	size_t need = mlen + 1 + plen + sizeof(" HTTP/1.1\r\n") - 1 +
		      (auth ? sizeof("host: \r\n") - 1 + alen : 0) +
		      fields_size(h, chunked, auth != NULL) +
		      sizeof("transfer-encoding: chunked\r\n") +
		      sizeof("connection: upgrade\r\n") + 2;
	struct evbuffer_iovec vec;
	struct wbuf w = { w_reserve(out, &vec, need) };
	w_put(&w, m, mlen);
	W_LIT(&w, " ");
	w_put(&w, path, plen);
	W_LIT(&w, " HTTP/1.1\r\n");
	if (auth) {
		W_LIT(&w, "host: ");
		w_put(&w, auth, alen);
		W_LIT(&w, "\r\n");
	}
	fields_write(&w, h, chunked, auth != NULL);
	if (chunked)
		W_LIT(&w, "transfer-encoding: chunked\r\n");
	if (upgrade)
		W_LIT(&w, "connection: upgrade\r\n");
	else if (!keep_alive)
		W_LIT(&w, "connection: close\r\n");
	W_LIT(&w, "\r\n");
	w_commit(out, &vec, &w);
}

void h1_encode_response(struct evbuffer *out, const struct http_headers *h,
			int version_minor, bool chunked, bool keep_alive, bool upgrade)
{
	size_t slen;
	const char *s = pseudo(h, ":status", 7, &slen);
	int status = 0;
	if (s && slen == 3 && IS_DIGIT(s[0]) && IS_DIGIT(s[1]) && IS_DIGIT(s[2]))
		status = (s[0] - '0') * 100 + (s[1] - '0') * 10 + (s[2] - '0');
	if (status < 100)
		status = 500; /* a map without a usable :status is a bug upstream of us */
	const char *reason = http_reason(status);
	size_t rlen = strlen(reason);
	char line[16];
	memcpy(line, "HTTP/1.1 000 ", 13);
	line[7] = version_minor == 0 ? '0' : '1';
	line[9] = (char)('0' + status / 100);
	line[10] = (char)('0' + status / 10 % 10);
	line[11] = (char)('0' + status % 10);

	size_t need = 13 + rlen + 2 + fields_size(h, chunked, false) +
		      sizeof("transfer-encoding: chunked\r\n") +
		      sizeof("connection: keep-alive\r\n") + 2;
	struct evbuffer_iovec vec;
	struct wbuf w = { w_reserve(out, &vec, need) };
	w_put(&w, line, 13);
	w_put(&w, reason, rlen);
	W_LIT(&w, "\r\n");
	fields_write(&w, h, chunked, false);
	if (chunked)
		W_LIT(&w, "transfer-encoding: chunked\r\n");
	if (upgrade)
		W_LIT(&w, "connection: upgrade\r\n");
	else if (!keep_alive)
		W_LIT(&w, "connection: close\r\n");
	else if (version_minor == 0)
		W_LIT(&w, "connection: keep-alive\r\n");
	W_LIT(&w, "\r\n");
	w_commit(out, &vec, &w);
}

void h1_encode_chunk(struct evbuffer *out, struct evbuffer *data)
{
	size_t n = evbuffer_get_length(data);
	if (!n)
		return; /* a zero-size chunk would end the body */
	char line[20];
	char *p = line + sizeof(line);
	*--p = '\n';
	*--p = '\r';
	do {
		*--p = "0123456789abcdef"[n & 15];
		n >>= 4;
	} while (n);
	evbuffer_add(out, p, (size_t)(line + sizeof(line) - p));
	evbuffer_add_buffer(out, data);
	evbuffer_add(out, "\r\n", 2);
}

void h1_encode_last_chunk(struct evbuffer *out, const struct http_headers *trailers)
{
	if (!trailers || !trailers->n) {
		evbuffer_add(out, "0\r\n\r\n", 5);
		return;
	}
	size_t need = 3 + fields_size(trailers, false, false) + 2;
	struct evbuffer_iovec vec;
	struct wbuf w = { w_reserve(out, &vec, need) };
	W_LIT(&w, "0\r\n");
	fields_write(&w, trailers, false, false);
	W_LIT(&w, "\r\n");
	w_commit(out, &vec, &w);
}

const char *http_reason(int status)
{
	switch (status) {
	case 100: return "Continue";
	case 101: return "Switching Protocols";
	case 102: return "Processing";
	case 103: return "Early Hints";
	case 200: return "OK";
	case 201: return "Created";
	case 202: return "Accepted";
	case 203: return "Non-Authoritative Information";
	case 204: return "No Content";
	case 205: return "Reset Content";
	case 206: return "Partial Content";
	case 207: return "Multi-Status";
	case 208: return "Already Reported";
	case 226: return "IM Used";
	case 300: return "Multiple Choices";
	case 301: return "Moved Permanently";
	case 302: return "Found";
	case 303: return "See Other";
	case 304: return "Not Modified";
	case 305: return "Use Proxy";
	case 307: return "Temporary Redirect";
	case 308: return "Permanent Redirect";
	case 400: return "Bad Request";
	case 401: return "Unauthorized";
	case 402: return "Payment Required";
	case 403: return "Forbidden";
	case 404: return "Not Found";
	case 405: return "Method Not Allowed";
	case 406: return "Not Acceptable";
	case 407: return "Proxy Authentication Required";
	case 408: return "Request Timeout";
	case 409: return "Conflict";
	case 410: return "Gone";
	case 411: return "Length Required";
	case 412: return "Precondition Failed";
	case 413: return "Content Too Large";
	case 414: return "URI Too Long";
	case 415: return "Unsupported Media Type";
	case 416: return "Range Not Satisfiable";
	case 417: return "Expectation Failed";
	case 418: return "I'm a teapot";
	case 421: return "Misdirected Request";
	case 422: return "Unprocessable Content";
	case 423: return "Locked";
	case 424: return "Failed Dependency";
	case 425: return "Too Early";
	case 426: return "Upgrade Required";
	case 428: return "Precondition Required";
	case 429: return "Too Many Requests";
	case 431: return "Request Header Fields Too Large";
	case 451: return "Unavailable For Legal Reasons";
	case 500: return "Internal Server Error";
	case 501: return "Not Implemented";
	case 502: return "Bad Gateway";
	case 503: return "Service Unavailable";
	case 504: return "Gateway Timeout";
	case 505: return "HTTP Version Not Supported";
	case 506: return "Variant Also Negotiates";
	case 507: return "Insufficient Storage";
	case 508: return "Loop Detected";
	case 510: return "Not Extended";
	case 511: return "Network Authentication Required";
	}
	return "Unknown";
}
