/* test_main.c - runs every TEST() linked into the binary. */
#include "test.h"
#include <stdlib.h>

struct test { const char *name; void (*fn)(void); };
static struct test tests[1024];
static int ntests;
int test_failed_checks;

void test_register(const char *name, void (*fn)(void))
{
	if (ntests == (int)(sizeof(tests) / sizeof(tests[0]))) {
		fprintf(stderr, "too many tests\n");
		abort();
	}
	tests[ntests].name = name;
	tests[ntests++].fn = fn;
}

int main(int argc, char **argv)
{
	int passed = 0, failed = 0;
	const char *only = argc > 1 ? argv[1] : NULL;
	for (int i = 0; i < ntests; i++) {
		if (only && !strstr(tests[i].name, only))
			continue;
		int before = test_failed_checks;
		tests[i].fn();
		if (test_failed_checks == before) {
			passed++;
			printf("ok - %s\n", tests[i].name);
		} else {
			failed++;
			printf("not ok - %s\n", tests[i].name);
		}
	}
	printf("%d passed, %d failed\n", passed, failed);
	return failed ? 1 : 0;
}
