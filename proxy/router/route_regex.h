/* route_regex.h - Envoy safe_regex (RE2 syntax) on PCRE2, for the route table.
 *
 * Patterns compile in UTF-8 mode with invalid UTF-8 in subjects tolerated
 * (it never matches), '$' only at the very end and \C refused, which keeps
 * the RE2 subset behaving as RE2 does.  Match, depth and heap limits bound
 * a pathological pattern; hitting one counts as "no match".  A compiled
 * regex is immutable and may be used by many threads at once: each thread
 * keeps its own match data (grown on demand, freed at thread exit). */
#ifndef REMORA_ROUTER_ROUTE_REGEX_H
#define REMORA_ROUTER_ROUTE_REGEX_H

#include "../common.h"
#include "../config/cfg.h"

struct route_re;

#define ROUTE_RE_FULL 0x1   /* anchored at both ends: the whole subject must match */

/* Compile pattern.  On error, cfg_fail(c) at the current path with PCRE2's
 * message and return NULL.  Free with route_re_free (NULL ok). */
struct route_re *route_re_compile(struct cfg_ctx *c, const char *pattern, unsigned flags);
void route_re_free(struct route_re *re);

/* Capture groups in the pattern (group 0 not counted). */
uint32_t route_re_groups(const struct route_re *re);

/* Does re match s?  For ROUTE_RE_FULL patterns: the whole of s. */
bool route_re_match(const struct route_re *re, const char *s, size_t n);

/* Validate an RE2-style substitution ("\0".."\9" group references, "\\"
 * for a backslash) against re; cfg_fail on error. */
int route_re_check_rewrite(struct cfg_ctx *c, const struct route_re *re, const char *sub);

/* RE2::GlobalReplace: replace every non-overlapping match of re in s by sub.
 * Returns a new NUL-terminated string (caller frees) and its length. */
char *route_re_replace_all(const struct route_re *re, const char *s, size_t n,
			   const char *sub, size_t *out_len);

#endif
