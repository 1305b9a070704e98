/* access_log_format.c - compile and render Envoy access-log formats (no I/O). */
#include "access_log_format.h"

#include <arpa/inet.h>
#include <jansson.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include "proxy/common.h"
#include "proxy/http/headers.h"

const char AL_DEFAULT_FORMAT[] =
	"[%START_TIME%] \"%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%\" "
	"%RESPONSE_CODE% %RESPONSE_FLAGS% %BYTES_RECEIVED% %BYTES_SENT% %DURATION% "
	"%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% \"%REQ(X-FORWARDED-FOR)%\" \"%REQ(USER-AGENT)%\" "
	"\"%REQ(X-REQUEST-ID)%\" \"%REQ(:AUTHORITY)%\" \"%UPSTREAM_HOST%\"\n";

#define AL_RF_SHORT(s, l) #s,
#define AL_RF_LONG(s, l) #l,
static const char *const rf_short[] = { AL_RESPONSE_FLAGS(AL_RF_SHORT) };
static const char *const rf_long[] = { AL_RESPONSE_FLAGS(AL_RF_LONG) };

int al_response_flag_parse(const char *name)
{
	for (int i = 0; i < RF_COUNT; i++)
		if (!strcmp(rf_short[i], name))
			return i;
	return -1;
}

/* ---- operators ------------------------------------------------------------- */

enum op_kind {
	OP_LITERAL, OP_START_TIME, OP_REQ, OP_RESP, OP_TRAILER, OP_PROTOCOL, OP_RESPONSE_CODE,
	OP_RESPONSE_CODE_DETAILS, OP_RESPONSE_FLAGS, OP_RESPONSE_FLAGS_LONG, OP_BYTES_RECEIVED,
	OP_BYTES_SENT, OP_DURATION, OP_REQUEST_DURATION, OP_RESPONSE_DURATION, OP_UPSTREAM_HOST,
	OP_UPSTREAM_CLUSTER, OP_UPSTREAM_LOCAL_ADDRESS, OP_UPSTREAM_TRANSPORT_FAILURE_REASON,
	OP_DOWNSTREAM_REMOTE_ADDRESS, OP_DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT,
	OP_DOWNSTREAM_LOCAL_ADDRESS, OP_DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT,
	OP_DOWNSTREAM_PEER_URI_SAN, OP_REQUESTED_SERVER_NAME, OP_ROUTE_NAME, OP_HOSTNAME,
	OP_CONNECTION_ID, OP_UPSTREAM_REQUEST_ATTEMPT_COUNT,
};

static const struct {
	const char *name;
	enum op_kind kind;
	bool numeric;
} op_table[] = {
	{ "START_TIME", OP_START_TIME, false },
	{ "REQ", OP_REQ, false },
	{ "RESP", OP_RESP, false },
	{ "TRAILER", OP_TRAILER, false },
	{ "PROTOCOL", OP_PROTOCOL, false },
	{ "RESPONSE_CODE", OP_RESPONSE_CODE, true },
	{ "RESPONSE_CODE_DETAILS", OP_RESPONSE_CODE_DETAILS, false },
	{ "RESPONSE_FLAGS", OP_RESPONSE_FLAGS, false },
	{ "RESPONSE_FLAGS_LONG", OP_RESPONSE_FLAGS_LONG, false },
	{ "BYTES_RECEIVED", OP_BYTES_RECEIVED, true },
	{ "BYTES_SENT", OP_BYTES_SENT, true },
	{ "DURATION", OP_DURATION, true },
	{ "REQUEST_DURATION", OP_REQUEST_DURATION, true },
	{ "RESPONSE_DURATION", OP_RESPONSE_DURATION, true },
	{ "UPSTREAM_HOST", OP_UPSTREAM_HOST, false },
	{ "UPSTREAM_CLUSTER", OP_UPSTREAM_CLUSTER, false },
	{ "UPSTREAM_LOCAL_ADDRESS", OP_UPSTREAM_LOCAL_ADDRESS, false },
	{ "UPSTREAM_TRANSPORT_FAILURE_REASON", OP_UPSTREAM_TRANSPORT_FAILURE_REASON, false },
	{ "DOWNSTREAM_REMOTE_ADDRESS", OP_DOWNSTREAM_REMOTE_ADDRESS, false },
	{ "DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT", OP_DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT, false },
	{ "DOWNSTREAM_DIRECT_REMOTE_ADDRESS", OP_DOWNSTREAM_REMOTE_ADDRESS, false },
	{ "DOWNSTREAM_DIRECT_REMOTE_ADDRESS_WITHOUT_PORT", OP_DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT, false },
	{ "DOWNSTREAM_LOCAL_ADDRESS", OP_DOWNSTREAM_LOCAL_ADDRESS, false },
	{ "DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT", OP_DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT, false },
	{ "DOWNSTREAM_PEER_URI_SAN", OP_DOWNSTREAM_PEER_URI_SAN, false },
	{ "REQUESTED_SERVER_NAME", OP_REQUESTED_SERVER_NAME, false },
	{ "ROUTE_NAME", OP_ROUTE_NAME, false },
	{ "HOSTNAME", OP_HOSTNAME, false },
	{ "CONNECTION_ID", OP_CONNECTION_ID, true },
	{ "UPSTREAM_REQUEST_ATTEMPT_COUNT", OP_UPSTREAM_REQUEST_ATTEMPT_COUNT, true },
};

/* One piece of a text format: a literal or an operator. */
struct al_seg {
	enum op_kind kind;
	bool numeric;
	char *str;          /* owned: literal text; REQ/RESP/TRAILER: main header (lowercase);
	                       START_TIME: its format (NULL: default) */
	size_t len;         /* literal length; REQ/RESP/TRAILER: strlen(str) */
	char *alt;          /* owned, may be NULL: the X?Y alternative header */
	size_t alt_len;     /* strlen(alt) (REQ/RESP/TRAILER: len is strlen(str)) */
	size_t max_len;     /* :Z truncation, 0 = none */
};

struct al_text {
	struct al_seg *segs;    /* owned [nsegs] */
	size_t nsegs;
};

enum jnode_kind { JN_TEXT, JN_OBJECT, JN_LITERAL };

struct al_jnode {
	char *key;              /* owned, JSON-escaped with quotes: "\"key\":" */
	size_t key_len;         /* strlen(key) */
	enum jnode_kind kind;
	struct al_text text;    /* JN_TEXT */
	bool typed;             /* JN_TEXT with exactly one operator */
	struct al_jnode *kids;  /* owned [nkids] (JN_OBJECT) */
	size_t nkids;
	char *literal;          /* owned: serialized JSON (JN_LITERAL) */
	size_t literal_len;     /* strlen(literal) */
};

struct al_format {
	bool json, omit_empty;
	unsigned needs;
	struct al_text text;    /* text formats */
	struct al_jnode root;   /* json formats (JN_OBJECT) */
	char hostname[256];
};

/* ---- output buffer --------------------------------------------------------- */

static __attribute__((noinline)) void buf_grow(struct al_buf *b, size_t n)
{
	size_t cap = b->cap ? b->cap : 256;
	while (cap < b->len + n)
		cap *= 2;
	b->p = xrealloc(b->p, cap);
	b->cap = cap;
}

static inline void buf_reserve(struct al_buf *b, size_t n)
{
	if (unlikely(b->len + n > b->cap))
		buf_grow(b, n);
}

static inline void buf_add(struct al_buf *b, const char *s, size_t n)
{
	if (!n)
		return;   /* b->p may still be NULL */
	buf_reserve(b, n);
	al_copy_short(b->p + b->len, s, n);
	b->len += n;
}

static inline void buf_addc(struct al_buf *b, char c)
{
	buf_reserve(b, 1);
	b->p[b->len++] = c;
}

void al_buf_free(struct al_buf *b)
{
	free(b->p);
	b->p = NULL;
	b->len = b->cap = 0;
}

const uint8_t al_json_special[256] = {
	[0x00 ... 0x1f] = 1, ['"'] = 1, ['\\'] = 1, [0x7f] = 1, [0x80 ... 0xff] = 2,
};

/* Decimal digits of v into out (20 bytes room, not terminated); the length. */
static size_t fmt_u64(char *out, uint64_t v)
{
	char t[20];
	size_t i = sizeof(t);
	do {
		t[--i] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	memcpy(out, t + i, sizeof(t) - i);
	return sizeof(t) - i;
}

static size_t fmt_i64(char *out, int64_t v)
{
	if (v >= 0)
		return fmt_u64(out, (uint64_t)v);
	out[0] = '-';
	return 1 + fmt_u64(out + 1, -(uint64_t)v);
}

/* JSON string body (no quotes) at cursor o, which has room for 6n bytes;
 * returns the new cursor.  A local cursor rather than buf_add per piece:
 * stores through it cannot alias the buffer's length, so nothing is
 * reloaded or re-checked per piece. */
static char *json_esc(char *o, const char *s, size_t n)
{
	static const char hex[] = "0123456789abcdef";
	for (;;) {
		size_t run = al_json_safe_len(s, n, false);
		al_copy_short(o, s, run);
		o += run;
		if (run == n)
			return o;
		unsigned char c = (unsigned char)s[run];
		s += run + 1;
		n -= run + 1;
		*o++ = '\\';
		if (c == '"' || c == '\\') {
			*o++ = (char)c;
		} else if (c == '\n') {
			*o++ = 'n';
		} else if (c == '\r') {
			*o++ = 'r';
		} else if (c == '\t') {
			*o++ = 't';
		} else {   /* < 0x20 or 0x7f */
			char e[5] = { 'u', '0', '0', hex[c >> 4], hex[c & 15] };
			memcpy(o, e, 5);
			o += 5;
		}
	}
}

static void buf_add_json(struct al_buf *b, const char *s, size_t n)
{
	if (!n)
		return;   /* b->p may still be NULL */
	buf_reserve(b, 6 * n);
	b->len = (size_t)(json_esc(b->p + b->len, s, n) - b->p);
}

/* ---- parsing ----------------------------------------------------------------- */

static void text_free(struct al_text *t)
{
	for (size_t i = 0; i < t->nsegs; i++) {
		free(t->segs[i].str);
		free(t->segs[i].alt);
	}
	free(t->segs);
	t->segs = NULL;
	t->nsegs = 0;
}

static struct al_seg *seg_push(struct al_text *t)
{
	t->segs = xrealloc(t->segs, (t->nsegs + 1) * sizeof(*t->segs));
	struct al_seg *s = &t->segs[t->nsegs++];
	memset(s, 0, sizeof(*s));
	return s;
}

static void add_literal(struct al_text *t, const char *p, size_t n)
{
	if (!n)
		return;
	if (t->nsegs && t->segs[t->nsegs - 1].kind == OP_LITERAL) {
		struct al_seg *s = &t->segs[t->nsegs - 1];
		s->str = xrealloc(s->str, s->len + n + 1);
		memcpy(s->str + s->len, p, n);
		s->len += n;
		s->str[s->len] = 0;
		return;
	}
	struct al_seg *s = seg_push(t);
	s->kind = OP_LITERAL;
	s->str = xmalloc(n + 1);
	memcpy(s->str, p, n);
	s->str[n] = 0;
	s->len = n;
}

static char *lower_dup(const char *p, size_t n)
{
	char *s = xmalloc(n + 1);
	for (size_t i = 0; i < n; i++)
		s[i] = (char)(p[i] >= 'A' && p[i] <= 'Z' ? p[i] + 32 : p[i]);
	s[n] = 0;
	return s;
}

static bool is_cmd_char(char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
}

/* Parse "%NAME[(args)][:N]%" at fmt[i] == '%'.  Returns the index after the
 * closing '%', 0 if this '%' does not start a command (a literal '%'), or
 * (size_t)-1 on error. */
static size_t parse_command(const char *fmt, size_t i, struct al_text *t, unsigned *needs,
			    char *err, size_t errlen)
{
	size_t n = strlen(fmt), j = i + 1, name_end, args = 0, args_end = 0;
	while (j < n && is_cmd_char(fmt[j]))
		j++;
	if (j == i + 1 || j >= n || (fmt[j] != '%' && fmt[j] != '(' && fmt[j] != ':'))
		return 0;
	name_end = j;
	if (fmt[j] == '(') {
		args = j + 1;
		while (j < n && fmt[j] != ')')
			j++;
		if (j >= n) {
			snprintf(err, errlen, "command '%.*s': missing ')'", (int)(name_end - i - 1),
				 fmt + i + 1);
			return (size_t)-1;
		}
		args_end = j++;
	}
	size_t max_len = 0;
	if (j < n && fmt[j] == ':') {
		size_t d = ++j;
		while (j < n && fmt[j] >= '0' && fmt[j] <= '9' && j - d < 9)
			max_len = max_len * 10 + (size_t)(fmt[j++] - '0');
		if (j == d) {
			snprintf(err, errlen, "command '%.*s': expected a length after ':'",
				 (int)(name_end - i - 1), fmt + i + 1);
			return (size_t)-1;
		}
	}
	if (j >= n || fmt[j] != '%') {
		if (!args)
			return 0;   /* "%FOO(" without a closing '%': not a command */
		snprintf(err, errlen, "command '%.*s': missing closing '%%'", (int)(name_end - i - 1),
			 fmt + i + 1);
		return (size_t)-1;
	}
	const char *name = fmt + i + 1;
	size_t nlen = name_end - i - 1;
	size_t k;
	for (k = 0; k < ARRAY_SIZE(op_table); k++)
		if (strlen(op_table[k].name) == nlen && !memcmp(op_table[k].name, name, nlen))
			break;
	if (k == ARRAY_SIZE(op_table)) {
		snprintf(err, errlen, "unknown or unsupported command operator '%%%.*s%%'", (int)nlen, name);
		return (size_t)-1;
	}
	enum op_kind kind = op_table[k].kind;
	bool hdr = kind == OP_REQ || kind == OP_RESP || kind == OP_TRAILER;
	if (hdr && (!args || args_end == args)) {
		snprintf(err, errlen, "command '%%%.*s%%' needs a header name: %.*s(X?Y):Z", (int)nlen, name,
			 (int)nlen, name);
		return (size_t)-1;
	}
	if (!hdr && kind != OP_START_TIME && args) {
		snprintf(err, errlen, "command '%%%.*s%%' takes no parameters", (int)nlen, name);
		return (size_t)-1;
	}
	if (max_len && !hdr) {
		snprintf(err, errlen, "command '%%%.*s%%' takes no length limit", (int)nlen, name);
		return (size_t)-1;
	}
	struct al_seg *s = seg_push(t);
	s->kind = kind;
	s->numeric = op_table[k].numeric;
	s->max_len = max_len;
	if (hdr) {
		const char *q = memchr(fmt + args, '?', args_end - args);
		if (q) {
			s->str = lower_dup(fmt + args, (size_t)(q - fmt - args));
			s->alt = lower_dup(q + 1, (size_t)(fmt + args_end - q - 1));
			s->len = strlen(s->str);
			s->alt_len = strlen(s->alt);
			if (!*s->str || !*s->alt) {
				snprintf(err, errlen, "command '%%%.*s%%': empty header name", (int)nlen, name);
				return (size_t)-1;
			}
		} else {
			s->str = lower_dup(fmt + args, args_end - args);
			s->len = args_end - args;
		}
		if (kind == OP_RESP)
			*needs |= AL_NEED_RESP;
		if (kind == OP_TRAILER)
			*needs |= AL_NEED_TRAILERS;
	} else if (kind == OP_START_TIME && args && args_end > args) {
		s->str = xmalloc(args_end - args + 1);
		memcpy(s->str, fmt + args, args_end - args);
		s->str[args_end - args] = 0;
	}
	if (kind == OP_UPSTREAM_LOCAL_ADDRESS)
		*needs |= AL_NEED_UP_LOCAL;
	return j + 1;
}

static int text_parse(const char *fmt, struct al_text *t, unsigned *needs, char *err, size_t errlen)
{
	size_t n = strlen(fmt), lit = 0, i = 0;
	while (i < n) {
		if (fmt[i] != '%') {
			i++;
			continue;
		}
		size_t r = parse_command(fmt, i, t ? t : NULL, needs, err, errlen);
		if (r == (size_t)-1)
			return -1;
		if (r == 0) {
			i++;
			continue;
		}
		/* the literal before the command went in after the command: fix order */
		struct al_seg cmd = t->segs[--t->nsegs];
		add_literal(t, fmt + lit, i - lit);
		*seg_push(t) = cmd;
		i = lit = r;
	}
	add_literal(t, fmt + lit, n - lit);
	return 0;
}

static void format_init(struct al_format *f, bool omit_empty)
{
	f->omit_empty = omit_empty;
	if (gethostname(f->hostname, sizeof(f->hostname) - 1))
		strcpy(f->hostname, "-");
	f->hostname[sizeof(f->hostname) - 1] = 0;
}

struct al_format *al_format_text(const char *fmt, bool omit_empty, char *err, size_t errlen)
{
	struct al_format *f = xcalloc(1, sizeof(*f));
	format_init(f, omit_empty);
	if (text_parse(fmt, &f->text, &f->needs, err, errlen)) {
		al_format_free(f);
		return NULL;
	}
	return f;
}

static void jnode_free(struct al_jnode *n)
{
	free(n->key);
	text_free(&n->text);
	for (size_t i = 0; i < n->nkids; i++)
		jnode_free(&n->kids[i]);
	free(n->kids);
	free(n->literal);
}

static int jnode_object(struct al_format *f, const json_t *obj, struct al_jnode *out, int depth,
			char *err, size_t errlen)
{
	const char *k;
	json_t *v;
	out->kind = JN_OBJECT;
	if (depth > 16) {
		snprintf(err, errlen, "json_format nests too deeply");
		return -1;
	}
	out->kids = xcalloc(json_object_size(obj) + 1, sizeof(*out->kids));
	json_object_foreach((json_t *)obj, k, v) {
		struct al_jnode *kid = &out->kids[out->nkids++];
		struct al_buf kb = { 0 };
		buf_addc(&kb, '"');
		buf_add_json(&kb, k, strlen(k));
		buf_add(&kb, "\":", 3);   /* with the terminating NUL */
		kid->key = kb.p;
		kid->key_len = kb.len - 1;
		if (json_is_object(v)) {
			if (jnode_object(f, v, kid, depth + 1, err, errlen))
				return -1;
		} else if (json_is_string(v)) {
			char e[200];
			kid->kind = JN_TEXT;
			if (text_parse(json_string_value(v), &kid->text, &f->needs, e, sizeof(e))) {
				snprintf(err, errlen, "json_format.%s: %s", k, e);
				return -1;
			}
			kid->typed = kid->text.nsegs == 1 && kid->text.segs[0].kind != OP_LITERAL;
		} else {
			kid->kind = JN_LITERAL;
			kid->literal = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
			if (!kid->literal)
				die("json_dumps");
			kid->literal_len = strlen(kid->literal);
		}
	}
	return 0;
}

struct al_format *al_format_json(const void *json_obj, bool omit_empty, char *err, size_t errlen)
{
	struct al_format *f = xcalloc(1, sizeof(*f));
	format_init(f, omit_empty);
	f->json = true;
	if (!json_is_object((const json_t *)json_obj)) {
		snprintf(err, errlen, "json_format: expected an object");
		al_format_free(f);
		return NULL;
	}
	if (jnode_object(f, json_obj, &f->root, 0, err, errlen)) {
		al_format_free(f);
		return NULL;
	}
	return f;
}

void al_format_free(struct al_format *f)
{
	if (!f)
		return;
	text_free(&f->text);
	jnode_free(&f->root);
	free(f);
}

unsigned al_format_needs(const struct al_format *f) { return f->needs; }
bool al_format_is_json(const struct al_format *f) { return f->json; }

/* ---- rendering ------------------------------------------------------------- */

size_t al_flags_string(uint32_t flags, bool long_names, char *buf, size_t cap)
{
	size_t o = 0;
	if (cap < 2)
		return 0;
	if (!flags) {   /* the common case */
		buf[0] = '-';
		buf[1] = 0;
		return 1;
	}
	for (int i = 0; i < RF_COUNT; i++) {
		if (!(flags & RF_BIT(i)))
			continue;
		const char *s = long_names ? rf_long[i] : rf_short[i];
		size_t n = strlen(s);
		if (o + n + 2 > cap)
			break;
		if (o)
			buf[o++] = ',';
		memcpy(buf + o, s, n);
		o += n;
	}
	if (!o)
		buf[o++] = '-';
	buf[o] = 0;
	return o;
}

static size_t fmt_addr(const struct sockaddr *sa, bool port, char *buf, size_t cap)
{
	char ip[INET6_ADDRSTRLEN];
	unsigned p;
	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *in = (const void *)sa;
		inet_ntop(AF_INET, &in->sin_addr, ip, sizeof(ip));
		p = ntohs(in->sin_port);
		return (size_t)(port ? snprintf(buf, cap, "%s:%u", ip, p) : snprintf(buf, cap, "%s", ip));
	}
	if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *in6 = (const void *)sa;
		inet_ntop(AF_INET6, &in6->sin6_addr, ip, sizeof(ip));
		p = ntohs(in6->sin6_port);
		return (size_t)(port ? snprintf(buf, cap, "[%s]:%u", ip, p) : snprintf(buf, cap, "%s", ip));
	}
	return 0;
}

/* Where render_time put fractional-second digits, so a cached rendering
 * of the same second can be patched instead of re-rendered. */
#define TIME_FRACS 4
struct time_fracs {
	unsigned n;             /* > TIME_FRACS: too many to patch */
	struct {
		uint32_t off;       /* in the rendered text */
		uint8_t digits;
	} at[TIME_FRACS];
};

static void nsec_digits(char out[9], uint32_t nsec)
{
	for (int i = 8; i >= 0; i--) {
		out[i] = (char)('0' + nsec % 10);
		nsec /= 10;
	}
}

/* Append strftime output of a format with Envoy's extensions: %s (epoch
 * seconds), %f / %Nf (fractional seconds, N digits, default 9) and %ENS
 * (seconds with N fractional digits).  fr: where the fractions went
 * (offsets from b->len at the call). */
static void render_time_full(struct al_buf *b, const char *fmt, time_t sec, uint32_t nsec,
			     struct time_fracs *fr)
{
	size_t base = b->len;
	struct tm tm;
	char piece[128], out[256];
	size_t pl = 0;
	gmtime_r(&sec, &tm);
	for (const char *p = fmt;; p++) {
		int digits = -1;
		bool esec = false, epoch = false;
		const char *q = p;
		if (*p == '%') {
			if (p[1] == 's') {
				epoch = true;
				q = p + 1;
			} else if (p[1] == 'f') {
				digits = 9;
				q = p + 1;
			} else if (p[1] >= '1' && p[1] <= '9' && p[2] == 'f') {
				digits = p[1] - '0';
				q = p + 2;
			} else if (p[1] == 'E' && p[2] >= '1' && p[2] <= '9' && p[3] == 'S') {
				digits = p[2] - '0';
				esec = true;
				q = p + 3;
			} else if (p[1] == '%' && pl + 2 < sizeof(piece)) {
				piece[pl++] = '%';
				piece[pl++] = '%';
				p++;
				continue;
			}
		}
		if (!*p || epoch || digits >= 0 || pl + 2 >= sizeof(piece)) {
			if (pl) {
				piece[pl] = 0;
				size_t n = strftime(out, sizeof(out), piece, &tm);
				buf_add(b, out, n);
				pl = 0;
			}
			if (!*p)
				break;
			if (epoch) {
				buf_add(b, out, fmt_i64(out, (int64_t)sec));
			} else if (digits >= 0) {
				char frac[9];
				nsec_digits(frac, nsec);
				if (esec) {
					char ss[3] = { (char)('0' + tm.tm_sec / 10), (char)('0' + tm.tm_sec % 10), '.' };
					buf_add(b, ss, 3);
				}
				if (fr->n < TIME_FRACS) {
					fr->at[fr->n].off = (uint32_t)(b->len - base);
					fr->at[fr->n].digits = (uint8_t)digits;
				}
				fr->n++;
				buf_add(b, frac, (size_t)digits);
			} else {
				piece[pl++] = *p;
				continue;
			}
			p = q;
			continue;
		}
		piece[pl++] = *p;
	}
}

/* Per-thread cache of START_TIME renderings: strftime and gmtime run once
 * per second and format; within the second only the fractional digits are
 * rewritten in place. */
#define TIME_SLOTS 4
#define TIME_FMT_MAX 64
struct time_slot {
	char fmt[TIME_FMT_MAX];    /* "" : unused */
	int64_t sec;
	struct time_fracs fr;
	struct al_buf text;        /* owned */
};
static __thread struct time_slot time_cache[TIME_SLOTS];
static __thread unsigned time_next;

/* The rendering of fmt at wall_ns: *s, *n valid until the next call. */
static void render_time(const char *fmt, uint64_t wall_ns, const char **s, size_t *n)
{
	int64_t sec = (int64_t)(wall_ns / 1000000000ull);
	uint32_t nsec = (uint32_t)(wall_ns % 1000000000ull);
	struct time_slot *t = NULL;
	for (unsigned i = 0; i < TIME_SLOTS; i++) {
		if (time_cache[i].fmt[0] && !strcmp(time_cache[i].fmt, fmt)) {
			t = &time_cache[i];
			break;
		}
	}
	if (!t) {
		t = &time_cache[time_next++ % TIME_SLOTS];
		size_t fl = strlen(fmt);
		t->fmt[0] = 0;
		t->sec = -1;
		if (fl < TIME_FMT_MAX)
			memcpy(t->fmt, fmt, fl + 1);
	}
	if (t->sec != sec || t->fr.n > TIME_FRACS || !t->fmt[0]) {
		t->text.len = 0;
		t->fr.n = 0;
		render_time_full(&t->text, fmt, (time_t)sec, nsec, &t->fr);
		t->sec = sec;
	} else if (t->fr.n) {
		char frac[9];
		nsec_digits(frac, nsec);
		for (unsigned i = 0; i < t->fr.n; i++)
			memcpy(t->text.p + t->fr.at[i].off, frac, t->fr.at[i].digits);
	}
	*s = t->text.p ? t->text.p : "";
	*n = t->text.len;
}

enum val_kind { VAL_NONE, VAL_STR, VAL_NUM };

struct val {
	enum val_kind kind;
	const char *s;
	size_t n;
	int64_t num;
};

static void hdr_val(const struct http_headers *h, const struct al_seg *seg, struct val *v)
{
	if (!h)
		return;
	int i = hdrs_find(h, seg->str, seg->len, 0);
	if (i < 0 && seg->alt)
		i = hdrs_find(h, seg->alt, seg->alt_len, 0);
	if (i < 0)
		return;
	size_t n = h->f[i].value_len;
	v->kind = VAL_STR;
	v->s = h->arena + h->f[i].value_off;
	v->n = seg->max_len && n > seg->max_len ? seg->max_len : n;
}

static void str_val(const char *s, struct val *v)
{
	if (s && *s) {
		v->kind = VAL_STR;
		v->s = s;
		v->n = strlen(s);
	}
}

static void dur_val(int64_t ns, struct val *v)
{
	if (ns >= 0) {
		v->kind = VAL_NUM;
		v->num = ns / 1000000;
	}
}

/* The value of operator seg; scratch holds formatted strings. */
static void op_value(const struct al_format *f, const struct al_seg *seg, const struct al_record *r,
		     char *scratch, size_t cap, struct val *v)
{
	v->kind = VAL_NONE;
	switch (seg->kind) {
	case OP_LITERAL:
		v->kind = VAL_STR;
		v->s = seg->str;
		v->n = seg->len;
		return;
	case OP_START_TIME:
		render_time(seg->str ? seg->str : "%Y-%m-%dT%H:%M:%E3SZ", r->start_wall_ns, &v->s, &v->n);
		v->kind = VAL_STR;
		return;
	case OP_REQ: hdr_val(r->req, seg, v); return;
	case OP_RESP: hdr_val(r->resp, seg, v); return;
	case OP_TRAILER: hdr_val(r->trailers, seg, v); return;
	case OP_PROTOCOL: str_val(r->protocol, v); return;
	case OP_RESPONSE_CODE:
		/* Envoy shows 0 when there is none (TCP, no response sent) */
		v->kind = VAL_NUM;
		v->num = r->response_code;
		return;
	case OP_RESPONSE_CODE_DETAILS: str_val(r->details, v); return;
	case OP_RESPONSE_FLAGS:
	case OP_RESPONSE_FLAGS_LONG:
		v->kind = VAL_STR;
		v->s = scratch;
		v->n = al_flags_string(r->flags, seg->kind == OP_RESPONSE_FLAGS_LONG, scratch, cap);
		return;
	case OP_BYTES_RECEIVED: v->kind = VAL_NUM; v->num = (int64_t)r->bytes_received; return;
	case OP_BYTES_SENT: v->kind = VAL_NUM; v->num = (int64_t)r->bytes_sent; return;
	case OP_DURATION: dur_val(r->duration_ns, v); return;
	case OP_REQUEST_DURATION: dur_val(r->request_duration_ns, v); return;
	case OP_RESPONSE_DURATION: dur_val(r->response_duration_ns, v); return;
	case OP_UPSTREAM_HOST: str_val(r->upstream_host, v); return;
	case OP_UPSTREAM_CLUSTER: str_val(r->upstream_cluster, v); return;
	case OP_UPSTREAM_TRANSPORT_FAILURE_REASON: str_val(r->upstream_failure, v); return;
	case OP_UPSTREAM_LOCAL_ADDRESS:
	case OP_DOWNSTREAM_REMOTE_ADDRESS:
	case OP_DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT:
	case OP_DOWNSTREAM_LOCAL_ADDRESS:
	case OP_DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT: {
		const struct sockaddr *sa = seg->kind == OP_UPSTREAM_LOCAL_ADDRESS ? r->upstream_local
			: seg->kind == OP_DOWNSTREAM_REMOTE_ADDRESS ||
			  seg->kind == OP_DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT ? r->downstream_remote
			: r->downstream_local;
		bool port = seg->kind != OP_DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT &&
			    seg->kind != OP_DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT;
		size_t n = sa ? fmt_addr(sa, port, scratch, cap) : 0;
		if (n) {
			v->kind = VAL_STR;
			v->s = scratch;
			v->n = n;
		}
		return;
	}
	case OP_DOWNSTREAM_PEER_URI_SAN: str_val(r->peer_uri_san, v); return;
	case OP_REQUESTED_SERVER_NAME: str_val(r->sni, v); return;
	case OP_ROUTE_NAME: str_val(r->route_name, v); return;
	case OP_HOSTNAME: str_val(f->hostname, v); return;
	case OP_CONNECTION_ID: v->kind = VAL_NUM; v->num = (int64_t)r->connection_id; return;
	case OP_UPSTREAM_REQUEST_ATTEMPT_COUNT:
		v->kind = VAL_NUM;
		v->num = r->attempts;
		return;
	}
}

void al_format_thread_exit(void)
{
	for (unsigned i = 0; i < TIME_SLOTS; i++) {
		al_buf_free(&time_cache[i].text);
		time_cache[i].fmt[0] = 0;
	}
}

/* Render a text into out; json: escape for a JSON string. */
static void text_render(const struct al_format *f, const struct al_text *t, const struct al_record *r,
			struct al_buf *out, bool json)
{
	char scratch[512];
	for (size_t i = 0; i < t->nsegs; i++) {
		struct val v;
		op_value(f, &t->segs[i], r, scratch, sizeof(scratch), &v);
		if (v.kind == VAL_NUM) {
			buf_add(out, scratch, fmt_i64(scratch, v.num));
		} else if (v.kind == VAL_STR) {
			if (json)
				buf_add_json(out, v.s, v.n);
			else
				buf_add(out, v.s, v.n);
		} else if (!f->omit_empty) {
			buf_addc(out, '-');
		}
	}
}

static void jnode_render(const struct al_format *f, const struct al_jnode *node,
			 const struct al_record *r, struct al_buf *out)
{
	char scratch[512];
	bool first = true;
	buf_addc(out, '{');
	for (size_t i = 0; i < node->nkids; i++) {
		const struct al_jnode *k = &node->kids[i];
		struct val v = { VAL_NONE, NULL, 0, 0 };
		if (k->kind == JN_TEXT && k->typed) {
			op_value(f, &k->text.segs[0], r, scratch, sizeof(scratch), &v);
			if (v.kind == VAL_NONE && f->omit_empty)
				continue;
		}
		if (k->typed) {
			/* the whole member in one reservation */
			size_t need = 1 + k->key_len + (v.kind == VAL_STR ? 2 + 6 * v.n : 24);
			buf_reserve(out, need);
			char *o = out->p + out->len;
			if (!first)
				*o++ = ',';
			first = false;
			memcpy(o, k->key, k->key_len);
			o += k->key_len;
			if (v.kind == VAL_NONE) {
				memcpy(o, "null", 4);
				o += 4;
			} else if (v.kind == VAL_NUM) {
				o += fmt_i64(o, v.num);
			} else {
				*o++ = '"';
				o = json_esc(o, v.s, v.n);
				*o++ = '"';
			}
			out->len = (size_t)(o - out->p);
			continue;
		}
		if (!first)
			buf_addc(out, ',');
		first = false;
		buf_add(out, k->key, k->key_len);
		if (k->kind == JN_OBJECT) {
			jnode_render(f, k, r, out);
		} else if (k->kind == JN_LITERAL) {
			buf_add(out, k->literal, k->literal_len);
		} else {
			buf_addc(out, '"');
			text_render(f, &k->text, r, out, true);
			buf_addc(out, '"');
		}
	}
	buf_addc(out, '}');
}

void al_format_render(const struct al_format *f, const struct al_record *r, struct al_buf *out)
{
	if (f->json) {
		jnode_render(f, &f->root, r, out);
		buf_addc(out, '\n');
	} else {
		text_render(f, &f->text, r, out, false);
	}
}
