/* h1_parser.h - HTTP/1.x message parser and encoder, free of I/O.
 *
 * The parser works on bytes the caller already has; the connection manager
 * owns the sockets.  It is strict on purpose (request smuggling): it rejects
 * Content-Length together with Transfer-Encoding, conflicting or malformed
 * Content-Lengths, any Transfer-Encoding other than a final "chunked",
 * obs-fold, bare CR, bare LF line ends, invalid token/field bytes, bad chunk
 * sizes and chunk-size overflow.  Every rejection carries the HTTP status to
 * answer and a short stable reason string (used in logs, bodies and counters).
 *
 * Parsed heads are codec-neutral (see headers.h): the request line becomes
 * ":method", ":path" and ":authority" (from Host; absolute-form targets are
 * split into ":scheme", ":authority", ":path"); the status line becomes
 * ":status".  Hop-by-hop headers (Connection and the headers it names,
 * Keep-Alive, Proxy-Connection, Transfer-Encoding, TE, Upgrade) are removed
 * from the map; what they meant is reported in struct h1_head instead.  For
 * an upgrade request the "upgrade" header is kept so it can be forwarded.
 * "te: trailers" is kept (gRPC needs it); other TE values are dropped. */
#ifndef REMORA_HTTP_H1_PARSER_H
#define REMORA_HTTP_H1_PARSER_H

#include "headers.h"

struct evbuffer;

enum h1_type { H1_REQUEST, H1_RESPONSE };

enum h1_body_kind {
	H1_BODY_NONE,     /* no body (GET without length, HEAD reply, 204, 304, 1xx) */
	H1_BODY_LENGTH,   /* exactly content_length bytes */
	H1_BODY_CHUNKED,  /* chunked transfer coding */
	H1_BODY_EOF,      /* response body delimited by connection close */
};

struct h1_limits {
	uint32_t max_head_bytes;  /* request/status line + headers; over it: 431 (req) */
	uint32_t max_headers;     /* number of header fields; over it: 431 */
};

struct h1_error {
	uint16_t status;          /* 400, 413, 431, 501, 505 for requests; 502 for responses */
	const char *reason;       /* static string, e.g. "invalid_content_length" */
};

struct h1_head {
	struct http_headers hdrs;       /* caller init()s and free()s */
	uint8_t version_minor;          /* 0 or 1 (HTTP/1.0, HTTP/1.1) */
	uint16_t status;                /* responses: status code */
	enum h1_body_kind body;
	uint64_t content_length;        /* valid for H1_BODY_LENGTH */
	bool keep_alive;                /* per version default and Connection tokens */
	bool expect_continue;           /* request had "Expect: 100-continue" */
	bool upgrade;                   /* request: Connection: upgrade + Upgrade header;
	                                   response: status 101 */
	bool connect;                   /* request method CONNECT */
};

/* Incremental search for the end of a head (the empty line), so a head
 * trickled in one byte at a time is scanned once overall.  Zero-init the
 * struct before the first call for each message. */
struct h1_scan {
	size_t scanned;
};

/* Look at buf[0..len) (the same bytes, grown, on each call).  Returns the head
 * length including the final CRLFCRLF, 0 if more bytes are needed, or -1 if
 * more than max_head_bytes have been seen without an end. Leading empty lines
 * before a request line (RFC 9112 2.2) are allowed and count as head bytes. */
long h1_head_end(struct h1_scan *s, const char *buf, size_t len, uint32_t max_head_bytes);

/* Flags for h1_parse_head on responses: what the request was. */
#define H1_F_REQ_HEAD    0x1   /* request method was HEAD: no body */
#define H1_F_REQ_CONNECT 0x2   /* request method was CONNECT: 2xx means tunnel */

/* Parse a complete head (exactly the bytes h1_head_end measured).  Fills
 * out->hdrs (which must be init'd and empty) and the other fields.  Returns
 * RM_OK or RM_ERROR with *err filled. */
int h1_parse_head(enum h1_type type, const char *buf, size_t len, unsigned flags,
		  const struct h1_limits *lim, struct h1_head *out, struct h1_error *err);

/* Chunked body decoder; a byte-level state machine, so chunk-size lines and
 * trailers may be split anywhere. */
struct h1_chunked {
	int state;
	uint64_t remaining;       /* bytes left in the current chunk */
	uint32_t line_bytes;      /* bytes of the current size/extension line */
	uint32_t max_line;        /* limit for a chunk-size line incl. extensions */
	char *tbuf;               /* owned; raw trailer section being collected */
	uint32_t tlen, tcap, tmax;
	bool done;                /* final chunk and trailers consumed */
	struct http_headers trailers; /* parsed trailers once done (may be empty) */
};

void h1_chunked_init(struct h1_chunked *c, const struct h1_limits *lim);
void h1_chunked_free(struct h1_chunked *c);

/* Feed in[0..len).  Returns the number of bytes consumed (>= 0) or RM_ERROR
 * with *err set.  At most one run of payload is reported per call:
 * *data_off and *data_len give its position inside in (data_len == 0 for none);
 * when a run is reported the call returns data_off + data_len (the payload
 * ends the call).  Bytes consumed outside the run are framing.  Once c->done,
 * the call consumes nothing more and returns 0. */
long h1_chunked_feed(struct h1_chunked *c, const char *in, size_t len,
		     size_t *data_off, size_t *data_len, struct h1_error *err);

/* Encoders (append to out).  Header names are emitted as stored (lowercase).
 * Requests: "METHOD path HTTP/1.1", "host: <:authority>", the non-pseudo
 * fields, then "transfer-encoding: chunked" if chunked, "connection: close"
 * unless keep_alive, and for upgrade requests "connection: upgrade" (the
 * "upgrade" field comes from the map).  Responses: "HTTP/1.<minor> <status>
 * <reason>", fields, "transfer-encoding: chunked" if chunked, and
 * "connection: close" or (for 1.0 keep-alive) "connection: keep-alive". */
void h1_encode_request(struct evbuffer *out, const struct http_headers *h,
		       bool chunked, bool keep_alive, bool upgrade);
void h1_encode_response(struct evbuffer *out, const struct http_headers *h,
			int version_minor, bool chunked, bool keep_alive, bool upgrade);
/* One chunk: moves all of data (which is left empty) behind its size line. */
void h1_encode_chunk(struct evbuffer *out, struct evbuffer *data);
/* "0\r\n", trailers (may be NULL), "\r\n". */
void h1_encode_last_chunk(struct evbuffer *out, const struct http_headers *trailers);

/* Standard reason phrase for a status ("Unknown" if none). */
const char *http_reason(int status);

#endif
