/* yaml_emit.h - jansson trees to YAML text (libyaml emitter).
 *
 * Block style, member order kept.  Strings are written plain unless a YAML
 * 1.1 or 1.2 reader (Kubernetes reads YAML 1.1-ish through sigs.k8s.io/yaml)
 * could take them for something else ("true", "on", "0777", "1e3", "~", "")
 * or plain style cannot carry them: then quoted; multi-line strings as
 * literal blocks where libyaml allows.  Reals are written in their shortest
 * round-tripping form, always with a '.' or an exponent.  Comments of the
 * original input are not kept (the loader drops them). */
#ifndef REMORA_INJECT_YAML_EMIT_H
#define REMORA_INJECT_YAML_EMIT_H

#include <jansson.h>
#include <stddef.h>

/* Every element of `docs` (a JSON array) as one YAML document; null
 * elements are skipped.  Returns a NUL-terminated buffer the caller frees
 * (length in *len if len is non-NULL), or NULL if libyaml refused (it only
 * does for invalid UTF-8 in a string). */
char *yaml_emit_docs(const json_t *docs, size_t *len);

#endif
