/* http_inspector.h - envoy.filters.listener.http_inspector: is the client
 * speaking HTTP/1.x or HTTP/2 (prior knowledge, h2c)?  The detector is a pure
 * function over the bytes seen so far (unit tests, fuzzing). */
#ifndef REMORA_HTTP_INSPECTOR_H
#define REMORA_HTTP_INSPECTOR_H

#include <stddef.h>
#include <stdint.h>

enum http_detect {
	HTTP_DETECT_NEED_MORE = 0,           /* a valid prefix so far */
	HTTP_DETECT_HTTP10,
	HTTP_DETECT_HTTP11,
	HTTP_DETECT_HTTP2,                   /* the full h2 connection preface */
	HTTP_DETECT_NOT_HTTP,
};

#define HTTP_INSPECTOR_MAX_READ 8192     /* Envoy's limit for the request line */

enum http_detect http_inspector_detect(const uint8_t *d, size_t n);

#endif
