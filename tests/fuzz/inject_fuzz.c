/* inject_fuzz.c - libFuzzer target for the injector (proxy/inject/).
 *
 * Each input is loaded as a YAML stream.  Invariants checked:
 *  - the emitter writes every loaded stream, and loading its output gives the
 *    same documents back (empty documents dropped);
 *  - a document that injects: injecting again changes nothing, and uninject
 *    restores the original exactly (when the input carried no injection
 *    record of its own);
 *  - the JSON Patch from the original to the injected document has ops.
 * Run: make fuzz-bins && sh tests/fuzz/run-one.sh build/fuzz/inject_fuzz tests/fuzz/corpus/inject 60 */
#include "proxy/config/yaml_json.h"
#include "proxy/inject/inject.h"
#include "proxy/inject/yaml_emit.h"
#include "proxy/log.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(bool ok, const char *what)
{
	if (!ok) {
		fprintf(stderr, "invariant failed: %s\n", what);
		abort();
	}
}

static void emit_round_trip(const json_t *docs)
{
	char err[512];
	size_t len;
	char *text = yaml_emit_docs(docs, &len);
	if (!text)
		return; /* only for strings libyaml cannot write (checked below) */
	json_t *back = yaml_load_all_buffer("emitted", text, len, NULL, err, sizeof(err));
	if (!back)
		fprintf(stderr, "reload failed: %s\n---\n%s\n", err, text);
	check(back != NULL, "emitted YAML loads");
	json_t *want = json_array();
	size_t i;
	json_t *d;
	json_array_foreach(docs, i, d)
	{
		if (!json_is_null(d))
			json_array_append(want, d);
	}
	if (!json_equal(want, back))
		fprintf(stderr, "---\n%s\n", text);
	check(json_equal(want, back), "emit/load round trip");
	json_decref(want);
	json_decref(back);
	free(text);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static bool init;
	char err[512];
	struct inject_opts o;

	if (!init) {
		log_set_level_name("off");
		init = true;
	}
	if (size > 65536)
		return 0;
	json_t *docs = yaml_load_all_buffer("fuzz.yaml", (const char *)data, size, NULL, err,
					    sizeof(err));
	if (!docs)
		return 0;
	emit_round_trip(docs);
	inject_opts_default(&o);
	o.legacy_sidecar = size & 1;
	if (size & 2)   /* no certificate client: no token volume */
		o.ca_address = NULL;
	o.xds_plaintext = size & 4;   /* with both: no volumes at all */
	size_t i;
	json_t *doc;
	json_array_foreach(docs, i, doc)
	{
		json_t *inj = json_deep_copy(doc);
		if (inject_doc(inj, &o, err, sizeof(err)) == INJECT_DONE) {
			json_t *again = json_deep_copy(inj);
			check(inject_doc(again, &o, err, sizeof(err)) != INJECT_DONE,
			      "re-injection does nothing");
			check(json_equal(again, inj), "re-injection leaves the document");
			json_t *patch = json_patch_diff(doc, inj);
			check(json_array_size(patch) > 0, "patch has ops");
			json_decref(patch);
			char *orig = json_dumps(doc, JSON_COMPACT | JSON_ENCODE_ANY);
			bool had_record = orig && strstr(orig, INJECT_STATUS_ANNOTATION);
			free(orig);
			if (!had_record) {
				check(uninject_doc(again, err, sizeof(err)) == INJECT_DONE,
				      "uninject succeeds");
				check(json_equal(again, doc), "uninject restores the input");
			}
			json_decref(again);
			json_t *one = json_array();
			json_array_append(one, inj);
			emit_round_trip(one);
			json_decref(one);
		}
		json_decref(inj);
	}
	json_decref(docs);
	return 0;
}
