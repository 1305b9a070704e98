/* access_log.h - access loggers (HCM and tcp_proxy access_log[]).
 *
 * Config: an `access_log` list of Envoy's config.accesslog.v3.AccessLog
 * (envoy.access_loggers.file / stdout / stderr, log_format, filter) is
 * compiled once into a struct al_list owned by the filter's config.
 *
 * Writing: a worker renders the line into a per-thread scratch buffer and
 * copies it into its own ring for the file (single producer, single
 * consumer, no lock).  One flusher thread (started with the first file)
 * drains every ring every 100 ms, or sooner when a ring is half full, with
 * writes that never block (a stalled pipe keeps its bytes in the ring and
 * delays no other file): a worker whose ring is full drops the line and
 * counts it (access_log_file.write_dropped).  Files are shared by path between
 * loggers and config versions.  al_reopen_all() (admin /reopen_logs) makes
 * the flusher reopen every file before its next write, for log rotation.
 *
 * Stats (scope "access_log_file", shard 0 written only by the flusher,
 * worker shards by their worker): write_buffered, write_dropped,
 * write_completed, write_failed, flushed_by_timer, reopen_failed, and the
 * gauge write_total_buffered (bytes waiting). */
#ifndef REMORA_ACCESS_LOG_H
#define REMORA_ACCESS_LOG_H

#include <jansson.h>
#include "access_log_format.h"

struct cfg_ctx;
struct build_ctx;
struct al_list;

/* Compile member "access_log" of obj (absent or empty: *out NULL).  RM_OK or
 * RM_ERROR after cfg_fail with the field path.  tcp: the owner is tcp_proxy
 * (filters that need HTTP data are still accepted; they see no headers). */
int al_list_parse(struct cfg_ctx *c, const json_t *obj, struct build_ctx *b, bool tcp,
		  struct al_list **out);
void al_list_free(struct al_list *l);   /* NULL ok; main thread */
/* What the formats of the list read (AL_NEED_*), 0 for NULL. */
unsigned al_list_needs(const struct al_list *l);

/* Log one record through every logger of l whose filter passes (worker or
 * main thread; shard: the caller's stats shard).  No lock, no allocation
 * once the thread's scratch buffer and the ring exist. */
void al_list_log(const struct al_list *l, const struct al_record *r, unsigned shard);

/* A worker thread exits: free its scratch buffers. */
void al_thread_exit(void);

/* Reopen every access-log file at the flusher's next round (any thread). */
void al_reopen_all(void);
/* Wake the flusher now (any thread; non-blocking). */
void al_flush_kick(void);

/* Process-wide connection ids for %CONNECTION_ID% (one atomic add per
 * connection). */
uint64_t al_next_connection_id(void);

/* Filter evaluation, exposed for tests: does r pass l's i-th logger filter? */
bool al_list_filter_pass(const struct al_list *l, size_t i, const struct al_record *r);

#endif
