/* test.h - a minimal unit-test harness.  TEST(name) registers a test; CHECK*
 * record failures without aborting the test.  test_main.c runs them all and
 * prints one "ok"/"not ok" line per test and "N passed, N failed". */
#ifndef REMORA_TEST_H
#define REMORA_TEST_H

#include <stdio.h>
#include <string.h>
#include <inttypes.h>

void test_register(const char *name, void (*fn)(void));
extern int test_failed_checks;

#define TEST(name)                                                            \
	static void name(void);                                               \
	__attribute__((constructor)) static void reg_##name(void)             \
	{ test_register(#name, name); }                                       \
	static void name(void)

#define CHECK(cond) do { if (!(cond)) { test_failed_checks++;                 \
	fprintf(stderr, "  %s:%d: CHECK(%s) failed\n", __FILE__, __LINE__, #cond); } } while (0)
#define CHECK_INT(a, b) do { long long _a = (long long)(a), _b = (long long)(b); \
	if (_a != _b) { test_failed_checks++;                                 \
	fprintf(stderr, "  %s:%d: %s == %lld, expected %s == %lld\n", __FILE__, __LINE__, \
		#a, _a, #b, _b); } } while (0)
#define CHECK_STR(a, b) do { const char *_a = (a), *_b = (b);                 \
	if (!_a || !_b || strcmp(_a, _b)) { test_failed_checks++;              \
	fprintf(stderr, "  %s:%d: %s == \"%s\", expected \"%s\"\n", __FILE__, __LINE__, \
		#a, _a ? _a : "(null)", _b ? _b : "(null)"); } } while (0)
#define CHECK_CONTAINS(hay, needle) do { const char *_h = (hay), *_n = (needle); \
	if (!_h || !strstr(_h, _n)) { test_failed_checks++;                    \
	fprintf(stderr, "  %s:%d: \"%s\" does not contain \"%s\"\n", __FILE__, __LINE__, \
		_h ? _h : "(null)", _n); } } while (0)

#endif
