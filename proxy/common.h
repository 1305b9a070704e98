/* common.h - small helpers shared by every Remora subsystem.
 *
 * Error policy (see docs/architecture.md): out-of-memory and impossible
 * syscall failures abort with file and line (die()); anything that comes from
 * the network, a config file or a control plane is untrusted and is handled,
 * counted and answered.  Functions return the few codes below. */
#ifndef REMORA_COMMON_H
#define REMORA_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Return codes, in the nginx/HAProxy tradition: few and shared. */
enum {
	RM_OK = 0,         /* done */
	RM_ERROR = -1,     /* failed; the error was recorded/reported */
	RM_AGAIN = -2,     /* not finished; resume later */
	RM_DECLINED = -3,  /* not mine; let the next one try */
};

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define container_of(ptr, type, member) \
	((type *)(void *)((char *)(ptr) - offsetof(type, member)))
#define likely(x) __builtin_expect(!!(x), 1)
#define unlikely(x) __builtin_expect(!!(x), 0)
#define MIN(a, b) ((a) < (b) ? (a) : (b))
#define MAX(a, b) ((a) > (b) ? (a) : (b))
#define UNUSED __attribute__((unused))
#define PRINTF(f, a) __attribute__((format(printf, f, a)))

/* Abort with file:line. For impossible states and OOM only. */
#define die(...) die_at(__FILE__, __LINE__, __VA_ARGS__)
void die_at(const char *file, int line, const char *fmt, ...) PRINTF(3, 4)
	__attribute__((noreturn));

/* Allocation wrappers: never return NULL (OOM is fatal). xfree(NULL) is fine. */
void *xmalloc(size_t n);
void *xcalloc(size_t nmemb, size_t n);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);
char *xasprintf(const char *fmt, ...) PRINTF(1, 2);
#define xfree(p) free(p)

/* Monotonic clock in milliseconds / nanoseconds. */
uint64_t now_ms(void);
uint64_t now_ns(void);

/* Fast per-thread PRNG (xoshiro-style); seeded from getrandom() on first use. */
uint64_t rand_u64(void);
static inline uint32_t rand_below(uint32_t n) { return n ? (uint32_t)(((rand_u64() >> 32) * n) >> 32) : 0; }

/* Decode proto3-JSON bytes: standard or URL-safe base64, padding optional.
 * Returns a NUL-terminated buffer the caller frees (*out_len bytes of data),
 * or NULL if s is not valid base64. */
char *base64_decode(const char *s, size_t *out_len);

/* Case-insensitive ASCII compare of two buffers of equal length. */
bool mem_ieq(const char *a, const char *b, size_t n);

#endif
