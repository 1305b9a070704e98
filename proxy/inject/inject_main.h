/* inject_main.h - the `remora inject`, `remora uninject` and
 * `remora inject-webhook` subcommands. */
#ifndef REMORA_INJECT_MAIN_H
#define REMORA_INJECT_MAIN_H

#include <stdbool.h>
#include <stddef.h>
#include <jansson.h>
#include "inject.h"

/* argv[0] is the subcommand.  Return the exit status (0 ok, 1 failed,
 * 2 usage). */
int inject_main(int argc, char **argv, bool uninject);
int inject_webhook_main(int argc, char **argv);

/* Inject into (or uninject from) every document of `docs` in place; a
 * document that fails aborts with "<name>: document N: reason" in err
 * (returns -1). */
int inject_transform_docs(json_t *docs, const struct inject_opts *o, bool uninject, bool quiet,
			  const char *name, char *err, size_t errlen);

/* The AdmissionReview v1 response for `review` (a request for a Pod):
 * allowed, with a base64 JSONPatch when the pod was injected.  New
 * reference; NULL when `review` is not an AdmissionReview (err says why). */
json_t *webhook_review(const json_t *review, const struct inject_opts *o, char *err,
		       size_t errlen);

#endif
