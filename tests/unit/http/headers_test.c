/* headers_test.c - the codec-neutral header map. */
#include "test.h"
#include "proxy/http/headers.h"

TEST(hdrs_add_lowercases_and_terminates)
{
	struct http_headers h;
	hdrs_init(&h);
	hdrs_add(&h, "Content-Type", 12, "Text/HTML", 9);
	CHECK_INT(h.n, 1);
	CHECK_STR(hdrs_name(&h, 0), "content-type");
	CHECK_STR(hdrs_value(&h, 0), "Text/HTML"); /* values keep their case */
	CHECK_INT(h.f[0].name_len, 12);
	CHECK_INT(h.f[0].value_len, 9);
	CHECK_INT(h.bytes, 21);
	size_t vl = 0;
	CHECK_STR(hdrs_get(&h, "content-type", &vl), "Text/HTML");
	CHECK_INT(vl, 9);
	CHECK(hdrs_get(&h, "Content-Type", NULL) == NULL); /* lookups take lowercase */
	hdrs_free(&h);
}

/* hdrs_add lowercases eight bytes at a time plus a tail: every byte value at
 * every position of names of 1..40 bytes must come out as tolower() would. */
TEST(hdrs_add_lowercases_every_byte)
{
	struct http_headers h;
	char name[40], want[40];
	hdrs_init(&h);
	for (size_t len = 1; len <= sizeof(name); len++)
		for (unsigned b = 0; b < 256; b++) {
			for (size_t i = 0; i < len; i++) {
				name[i] = (char)((b + i * 37) & 0xff);
				unsigned char c = (unsigned char)name[i];
				want[i] = (char)(c >= 'A' && c <= 'Z' ? c + 32 : c);
			}
			hdrs_clear(&h);
			hdrs_add(&h, name, len, "v", 1);
			CHECK(memcmp(hdrs_name(&h, 0), want, len) == 0);
			CHECK_INT(hdrs_name(&h, 0)[len], 0);
		}
	hdrs_free(&h);
}

TEST(hdrs_add_binary_lengths)
{
	struct http_headers h;
	hdrs_init(&h);
	/* Only nlen/vlen bytes are taken, not up to a NUL. */
	hdrs_add(&h, "x-abcdef", 5, "valueXYZ", 5);
	CHECK_STR(hdrs_name(&h, 0), "x-abc");
	CHECK_STR(hdrs_value(&h, 0), "value");
	hdrs_add(&h, "x-empty", 7, "", 0);
	size_t vl = 99;
	CHECK_STR(hdrs_get(&h, "x-empty", &vl), "");
	CHECK_INT(vl, 0);
	hdrs_free(&h);
}

TEST(hdrs_many_fields_survive_growth)
{
	struct http_headers h;
	hdrs_init(&h);
	char name[32], value[64];
	for (int i = 0; i < 500; i++) {
		int nl = snprintf(name, sizeof(name), "X-Field-%d", i);
		int vl = snprintf(value, sizeof(value), "value number %d with some padding", i);
		hdrs_add(&h, name, (size_t)nl, value, (size_t)vl);
	}
	CHECK_INT(h.n, 500);
	int bad = 0;
	for (int i = 0; i < 500; i++) {
		snprintf(name, sizeof(name), "x-field-%d", i);
		snprintf(value, sizeof(value), "value number %d with some padding", i);
		const char *v = hdrs_get(&h, name, NULL);
		if (!v || strcmp(v, value) || strcmp(hdrs_name(&h, (uint32_t)i), name))
			bad++;
	}
	CHECK_INT(bad, 0);
	hdrs_free(&h);
}

TEST(hdrs_find_walks_duplicates)
{
	struct http_headers h;
	hdrs_init(&h);
	hdrs_add_cstr(&h, "set-cookie", "a=1");
	hdrs_add_cstr(&h, "x", "y");
	hdrs_add_cstr(&h, "Set-Cookie", "b=2");
	int i = hdrs_find(&h, "set-cookie", 10, 0);
	CHECK_INT(i, 0);
	i = hdrs_find(&h, "set-cookie", 10, i + 1);
	CHECK_INT(i, 2);
	CHECK_STR(hdrs_value(&h, (uint32_t)i), "b=2");
	CHECK_INT(hdrs_find(&h, "set-cookie", 10, i + 1), -1);
	CHECK_INT(hdrs_find(&h, "set-cookie", 10, -5), 0); /* negative start = 0 */
	CHECK_INT(hdrs_find(&h, "set-cookie", 9, 0), -1);  /* exact length */
	hdrs_free(&h);
}

TEST(hdrs_set_replaces_all_in_first_position)
{
	struct http_headers h;
	hdrs_init(&h);
	hdrs_add_cstr(&h, "a", "1");
	hdrs_add_cstr(&h, "via", "old-one");
	hdrs_add_cstr(&h, "b", "2");
	hdrs_add_cstr(&h, "via", "old-two");
	hdrs_set(&h, "via", "new", 3);
	CHECK_INT(h.n, 3);
	CHECK_STR(hdrs_name(&h, 1), "via");
	CHECK_STR(hdrs_value(&h, 1), "new");
	CHECK_STR(hdrs_name(&h, 2), "b");
	CHECK_INT(h.bytes, 2 + 2 + 6);
	/* Longer than the old value: moved to fresh arena bytes. */
	hdrs_set(&h, "via", "a much longer value than before", 31);
	CHECK_STR(hdrs_get(&h, "via", NULL), "a much longer value than before");
	CHECK_INT(h.bytes, 2 + 2 + 3 + 31);
	/* Absent: appended. */
	hdrs_set(&h, "new-one", "v", 1);
	CHECK_INT(h.n, 4);
	CHECK_STR(hdrs_name(&h, 3), "new-one");
	hdrs_free(&h);
}

TEST(hdrs_set_and_add_from_own_arena)
{
	struct http_headers h;
	hdrs_init(&h);
	hdrs_add_cstr(&h, "src", "some value that lives in the arena");
	/* Force many reallocs while the source pointer points into the arena. */
	for (int i = 0; i < 200; i++) {
		size_t vl;
		const char *v = hdrs_get(&h, "src", &vl);
		hdrs_add(&h, "copy", 4, v, vl);
	}
	int i = -1, bad = 0, count = 0;
	while ((i = hdrs_find(&h, "copy", 4, i + 1)) >= 0) {
		count++;
		if (strcmp(hdrs_value(&h, (uint32_t)i), "some value that lives in the arena"))
			bad++;
	}
	CHECK_INT(count, 200);
	CHECK_INT(bad, 0);
	/* Set a field from (a suffix of) its own value. */
	size_t vl;
	const char *v = hdrs_get(&h, "src", &vl);
	hdrs_set(&h, "src", v + 5, vl - 5);
	CHECK_STR(hdrs_get(&h, "src", NULL), "value that lives in the arena");
	v = hdrs_get(&h, "src", &vl);
	hdrs_set(&h, "copy", v, vl);
	CHECK_STR(hdrs_get(&h, "copy", NULL), "value that lives in the arena");
	CHECK_INT(h.n, 2);
	hdrs_free(&h);
}

TEST(hdrs_del_counts_and_compacts)
{
	struct http_headers h;
	hdrs_init(&h);
	hdrs_add_cstr(&h, "a", "1");
	hdrs_add_cstr(&h, "x", "2");
	hdrs_add_cstr(&h, "b", "3");
	hdrs_add_cstr(&h, "x", "4");
	CHECK_INT(hdrs_del(&h, "x"), 2);
	CHECK_INT(h.n, 2);
	CHECK_STR(hdrs_name(&h, 0), "a");
	CHECK_STR(hdrs_name(&h, 1), "b");
	CHECK_STR(hdrs_value(&h, 1), "3");
	CHECK_INT(h.bytes, 4);
	CHECK_INT(hdrs_del(&h, "x"), 0);
	hdrs_free(&h);
}

TEST(hdrs_pseudo_headers_stay_in_front)
{
	struct http_headers h;
	hdrs_init(&h);
	hdrs_add_cstr(&h, ":method", "GET");
	hdrs_add_cstr(&h, "user-agent", "t");
	hdrs_add_cstr(&h, "accept", "*/*");
	hdrs_add_cstr(&h, ":authority", "example.com");
	CHECK_INT(h.n, 4);
	CHECK_STR(hdrs_name(&h, 0), ":method");
	CHECK_STR(hdrs_name(&h, 1), ":authority");
	CHECK_STR(hdrs_name(&h, 2), "user-agent");
	CHECK_STR(hdrs_name(&h, 3), "accept");
	hdrs_free(&h);
}

TEST(hdrs_clear_copy_free)
{
	struct http_headers a, b;
	hdrs_init(&a);
	hdrs_init(&b);
	hdrs_add_cstr(&a, "one", "1");
	hdrs_add_cstr(&a, "two", "2");
	hdrs_add_cstr(&b, "stale", "x");
	hdrs_copy(&b, &a);
	CHECK_INT(b.n, 2);
	CHECK(hdrs_get(&b, "stale", NULL) == NULL);
	CHECK_STR(hdrs_get(&b, "two", NULL), "2");
	CHECK_INT(b.bytes, a.bytes);
	/* Independent storage. */
	hdrs_set(&a, "two", "changed", 7);
	CHECK_STR(hdrs_get(&b, "two", NULL), "2");
	char *old = a.arena;
	hdrs_clear(&a);
	CHECK_INT(a.n, 0);
	CHECK_INT(a.bytes, 0);
	CHECK(a.arena == old); /* storage kept */
	CHECK(hdrs_get(&a, "one", NULL) == NULL);
	hdrs_free(&a);
	CHECK(a.arena == NULL && a.f == NULL && a.n == 0);
	hdrs_free(&a); /* twice is fine */
	struct http_headers z;
	memset(&z, 0, sizeof(z));
	hdrs_free(&z);
	hdrs_free(&b);
}
