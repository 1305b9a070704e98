/* json_path_test.c - the field path shared by pb_encode and pb_json. */
#include "test.h"
#include "xds/json_path.h"

TEST(json_path_push_pop)
{
	struct json_path p;
	json_path_set(&p, NULL);
	CHECK_STR(json_path_str(&p), "<root>");
	size_t a = json_path_push(&p, "resources");
	CHECK_STR(p.s, "resources");
	size_t b = json_path_push_idx(&p, 0);
	size_t c = json_path_push(&p, "metadata");
	size_t d = json_path_push_key(&p, "k.1");
	size_t e = json_path_push_idx(&p, 18446744073709551615ull);
	CHECK_STR(p.s, "resources[0].metadata[\"k.1\"][18446744073709551615]");
	CHECK_INT(p.len, strlen(p.s));
	json_path_pop(&p, e);
	CHECK_STR(p.s, "resources[0].metadata[\"k.1\"]");
	json_path_pop(&p, d);
	json_path_pop(&p, c);
	CHECK_STR(p.s, "resources[0]");
	json_path_push_idx(&p, 42);
	CHECK_STR(p.s, "resources[0][42]");
	json_path_pop(&p, b);
	json_path_pop(&p, a);
	CHECK_INT(p.len, 0);
	CHECK_STR(json_path_str(&p), "<root>");
	json_path_set(&p, "r");
	json_path_push(&p, "name");
	CHECK_STR(json_path_str(&p), "r.name");
}

TEST(json_path_cut_when_full)
{
	struct json_path p;
	char big[700];
	memset(big, 'x', sizeof(big) - 1);
	big[sizeof(big) - 1] = 0;
	json_path_set(&p, "a");
	size_t m = json_path_push(&p, big);
	CHECK_INT(p.len, JSON_PATH_MAX - 1);
	CHECK_INT(strlen(p.s), JSON_PATH_MAX - 1);
	/* full: further pushes are cut to nothing, pops still restore */
	size_t k = json_path_push_key(&p, "k");
	json_path_push_idx(&p, 7);
	CHECK_INT(p.len, JSON_PATH_MAX - 1);
	json_path_pop(&p, k);
	json_path_pop(&p, m);
	CHECK_STR(p.s, "a");
	json_path_set(&p, big);
	CHECK_INT(p.len, JSON_PATH_MAX - 1);
}
