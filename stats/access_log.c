/* access_log.c - access_log[] config, filters, per-worker rings and the flusher. */
#include "access_log.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <limits.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include "proxy/common.h"
#include "proxy/config/cfg.h"
#include "proxy/http/headers.h"
#include "proxy/log.h"
#include "proxy/router/route.h"
#include "proxy/snapshot.h"
#include "stats.h"

#define AL_RING_BYTES (1u << 20)      /* per worker per file */
#define AL_FLUSH_MS 100

#define AL_STATS(X)                                                                     \
	X(COUNTER, write_buffered) X(COUNTER, write_dropped) X(COUNTER, write_completed) \
	X(COUNTER, write_failed) X(COUNTER, flushed_by_timer) X(COUNTER, reopen_failed)  \
	X(GAUGE, write_total_buffered)
enum { AL_STATS(STATS_ENUM) AL_STATS_N };
static const struct stat_desc al_stat_desc[] = { AL_STATS(STATS_DESC) };

/* ---- files, rings, flusher ------------------------------------------------ */

/* Single-producer (one worker) single-consumer (the flusher) byte ring. */
struct al_ring {
	_Atomic size_t head;            /* bytes ever written (producer) */
	_Atomic size_t tail;            /* bytes ever consumed (flusher) */
	atomic_int kicked;              /* producer woke the flusher; cleared after a drain */
	char data[AL_RING_BYTES];
};

/* Files are written without ever blocking: ours are opened O_NONBLOCK (a
 * regular file still takes every byte; a FIFO or socket whose reader stalls
 * takes what fits), stdout/stderr (whose flags we share with whoever else
 * holds them) are polled for room and written PIPE_BUF bytes at a time when
 * they are not regular files.  Bytes that do not fit stay in the ring; a
 * full ring drops new lines (write_dropped).  So the flusher only ever
 * waits in poll(), a stalled pipe delays no other file, and stopping the
 * flusher is bounded. */
struct al_file {
	char *path;                     /* owned */
	int fd;                         /* owned unless std; -1: not open yet (a FIFO
					   without a reader: retried every round) */
	bool std;                       /* stdout/stderr: never closed or reopened */
	bool chunked;                   /* std and not a regular file: poll, PIPE_BUF writes */
	bool stalled;                   /* flusher only: the last write would have blocked */
	int refs;                       /* loggers using it; under reg_lock */
	int busy;                       /* flushers using it this round; under reg_lock */
	unsigned nshards;
	struct al_ring *_Atomic *rings; /* owned [nshards], each allocated by its producer */
	int64_t buffered_reported;      /* flusher only: its share of write_total_buffered */
	struct al_file *next;           /* registry list, or the graveyard */
};

#define AL_CLOSE_WAIT_MS 1000         /* a removed file's last drain: then drop the rest */
#define AL_JOIN_WAIT_S 5              /* stopping the flusher waits at most this long */

static pthread_mutex_t reg_lock = PTHREAD_MUTEX_INITIALIZER;
static struct al_file *reg_files;        /* in use by loggers */
static struct al_file *graveyard;        /* no logger left: the flusher drains and frees */
static struct stats_scope *al_stats;      /* written by workers (own shard), flusher (0) */
static struct stats_store *al_stats_store;
static int flush_efd = -1;
static pthread_t flusher;
static bool flusher_running;              /* under reg_lock */
static atomic_uint flusher_epoch;         /* a flusher runs while it equals its start value */
static atomic_uint reopen_gen;
static _Atomic uint64_t conn_ids;

uint64_t al_next_connection_id(void)
{
	return atomic_fetch_add_explicit(&conn_ids, 1, memory_order_relaxed) + 1;
}

void al_flush_kick(void)
{
	uint64_t one = 1;
	if (flush_efd >= 0 && write(flush_efd, &one, sizeof(one)) < 0) {
		/* EAGAIN: the counter is saturated, the flusher is awake anyway */
	}
}

void al_reopen_all(void)
{
	atomic_fetch_add(&reopen_gen, 1);
	al_flush_kick();
}

/* Never blocks: a FIFO without a reader fails (ENXIO) instead of waiting. */
static int open_path(const char *path)
{
	return open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOCTTY | O_NONBLOCK, 0644);
}

/* Write what fits of p[n] now.  Returns the bytes written (< n: stalled),
 * or -1 on an error. */
static ssize_t write_some(struct al_file *f, const char *p, size_t n)
{
	size_t done = 0;
	while (done < n) {
		size_t len = n - done;
		if (f->chunked) {
			struct pollfd pfd = { f->fd, POLLOUT, 0 };
			if (poll(&pfd, 1, 0) <= 0 || !(pfd.revents & POLLOUT))
				break;
			if (len > PIPE_BUF)   /* POLLOUT promises room for PIPE_BUF */
				len = PIPE_BUF;
		}
		ssize_t w = write(f->fd, p + done, len);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			break;
		if (w <= 0)
			return -1;
		done += (size_t)w;
	}
	return (ssize_t)done;
}

/* Write out what the rings of f hold, as far as the file takes it without
 * blocking (flusher).  Sets f->stalled when bytes had to stay. */
static void file_drain(struct al_file *f)
{
	int64_t pending = 0;
	f->stalled = false;
	for (unsigned i = 0; i < f->nshards; i++) {
		struct al_ring *r = atomic_load_explicit(&f->rings[i], memory_order_acquire);
		if (!r)
			continue;
		size_t tail = atomic_load_explicit(&r->tail, memory_order_relaxed), start = tail;
		size_t head = atomic_load_explicit(&r->head, memory_order_acquire);
		bool failed = false;
		while (tail != head && f->fd >= 0 && !f->stalled) {
			size_t n = head - tail, off = tail % AL_RING_BYTES;
			size_t first = MIN(n, AL_RING_BYTES - off);
			ssize_t w = write_some(f, r->data + off, first);
			if (w < 0) {   /* EPIPE, EIO, ENOSPC...: these bytes are lost */
				failed = true;
				tail = head;
				break;
			}
			tail += (size_t)w;
			if ((size_t)w < first)
				f->stalled = true;
		}
		if (al_stats && (failed || tail != start))
			stats_inc(al_stats, 0, failed ? write_failed : write_completed);
		atomic_store_explicit(&r->tail, tail, memory_order_release);
		atomic_store_explicit(&r->kicked, 0, memory_order_relaxed);
		pending += (int64_t)(atomic_load_explicit(&r->head, memory_order_relaxed) - tail);
	}
	if (al_stats) {
		stats_add(al_stats, 0, write_total_buffered, pending - f->buffered_reported);
		f->buffered_reported = pending;
	}
}

static void file_reopen(struct al_file *f)
{
	if (f->std)
		return;
	int fd = open_path(f->path);
	if (fd < 0) {
		if (al_stats)
			stats_inc(al_stats, 0, reopen_failed);
		log_warn("access log: reopening %s: %s", f->path, strerror(errno));
		return;
	}
	if (f->fd >= 0)
		close(f->fd);
	f->fd = fd;
}

/* The bytes still in f's rings, dropped: counted as lines. */
static uint64_t file_discard(struct al_file *f)
{
	uint64_t lines = 0;
	for (unsigned i = 0; i < f->nshards; i++) {
		struct al_ring *r = atomic_load(&f->rings[i]);
		if (!r)
			continue;
		size_t tail = atomic_load(&r->tail), head = atomic_load(&r->head);
		for (; tail != head; tail++)
			lines += r->data[tail % AL_RING_BYTES] == '\n';
		atomic_store(&r->tail, head);
	}
	return lines;
}

/* A file no logger uses: write what is left, waiting for a stalled reader
 * until deadline_ms at most, drop the rest, and free it. */
static void file_destroy(struct al_file *f, uint64_t deadline_ms)
{
	if (f->fd < 0 && !f->std)
		f->fd = open_path(f->path);
	for (;;) {
		file_drain(f);
		uint64_t now = now_ms();
		if (!f->stalled || f->fd < 0 || now >= deadline_ms)
			break;
		struct pollfd pfd = { f->fd, POLLOUT, 0 };
		poll(&pfd, 1, (int)MIN(deadline_ms - now, (uint64_t)AL_FLUSH_MS));
	}
	uint64_t lost = file_discard(f);
	if (lost) {
		log_warn("access log: %s: the reader is not reading; %llu line(s) dropped at close",
			 f->path, (unsigned long long)lost);
		if (al_stats)
			stats_add(al_stats, 0, write_dropped, (int64_t)lost);
	}
	if (al_stats)
		stats_add(al_stats, 0, write_total_buffered, -f->buffered_reported);
	if (!f->std && f->fd >= 0)
		close(f->fd);
	for (unsigned i = 0; i < f->nshards; i++)
		free(atomic_load(&f->rings[i]));
	free(f->rings);
	free(f->path);
	free(f);
}

/* Free the graveyard's files no flusher is using (their last drain shares
 * one deadline). */
static void bury(void)
{
	struct al_file *dead = NULL;
	pthread_mutex_lock(&reg_lock);
	for (struct al_file **pp = &graveyard; *pp;) {
		struct al_file *f = *pp;
		if (f->busy) {
			pp = &f->next;
			continue;
		}
		*pp = f->next;
		f->next = dead;
		dead = f;
	}
	pthread_mutex_unlock(&reg_lock);
	uint64_t deadline = now_ms() + AL_CLOSE_WAIT_MS;
	while (dead) {
		struct al_file *f = dead;
		dead = f->next;
		file_destroy(f, deadline);
	}
}

static void *flusher_main(void *arg)
{
	unsigned epoch = (unsigned)(uintptr_t)arg;
	unsigned seen_gen = atomic_load(&reopen_gen);
	while (atomic_load(&flusher_epoch) == epoch) {
		/* mark the files busy for the round: the graveyard waits for them */
		struct al_file *list[64];
		struct pollfd pfd[1 + ARRAY_SIZE(list)];
		size_t n = 0, np = 1;
		pthread_mutex_lock(&reg_lock);
		for (struct al_file *f = reg_files; f && n < ARRAY_SIZE(list); f = f->next) {
			f->busy++;
			list[n++] = f;
		}
		pthread_mutex_unlock(&reg_lock);
		unsigned gen = atomic_load(&reopen_gen);
		for (size_t i = 0; i < n; i++) {
			struct al_file *f = list[i];
			if (gen != seen_gen)
				file_reopen(f);
			else if (f->fd < 0 && !f->std && (f->fd = open_path(f->path)) >= 0)
				log_info("access log: %s: a reader opened it", f->path);
			file_drain(f);
			if (f->stalled)   /* wake when it takes bytes again */
				pfd[np++] = (struct pollfd){ f->fd, POLLOUT, 0 };
		}
		seen_gen = gen;
		pfd[0] = (struct pollfd){ flush_efd, POLLIN, 0 };
		int pr = poll(pfd, (nfds_t)np, AL_FLUSH_MS);
		if (pr > 0 && (pfd[0].revents & POLLIN)) {
			uint64_t v;
			if (read(flush_efd, &v, sizeof(v)) < 0) {
				/* spurious: EAGAIN */
			}
		}
		if (pr == 0 && al_stats)
			stats_inc(al_stats, 0, flushed_by_timer);
		pthread_mutex_lock(&reg_lock);
		for (size_t i = 0; i < n; i++)
			list[i]->busy--;
		pthread_mutex_unlock(&reg_lock);
		bury();
	}
	bury();
	return NULL;
}

/* Main thread, at config time. */
static struct al_file *file_get(const char *path, unsigned nshards, char *err, size_t errlen)
{
	struct al_file *f;
	pthread_mutex_lock(&reg_lock);
	for (f = reg_files; f; f = f->next)
		if (!strcmp(f->path, path) && f->nshards == nshards) {
			f->refs++;
			pthread_mutex_unlock(&reg_lock);
			return f;
		}
	pthread_mutex_unlock(&reg_lock);
	f = xcalloc(1, sizeof(*f));
	f->path = xstrdup(path);
	f->nshards = nshards;
	f->refs = 1;
	if (!strcmp(path, "<stdout>") || !strcmp(path, "<stderr>")) {
		struct stat st;
		f->std = true;
		f->fd = path[4] == 'o' ? STDOUT_FILENO : STDERR_FILENO;
		f->chunked = fstat(f->fd, &st) == 0 && !S_ISREG(st.st_mode);
	} else if ((f->fd = open_path(path)) < 0) {
		if (errno != ENXIO) {
			snprintf(err, errlen, "cannot open access log '%s': %s", path, strerror(errno));
			free(f->path);
			free(f);
			return NULL;
		}
		log_warn("access log: %s is a FIFO without a reader: lines wait in memory (then are "
			 "dropped) until one opens it", path);
	}
	f->rings = xcalloc(nshards, sizeof(*f->rings));
	pthread_mutex_lock(&reg_lock);
	f->next = reg_files;
	reg_files = f;
	if (!flusher_running) {
		if (flush_efd < 0 && (flush_efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) < 0)
			die("eventfd: %s", strerror(errno));
		unsigned epoch = atomic_fetch_add(&flusher_epoch, 1) + 1;
		if (pthread_create(&flusher, NULL, flusher_main, (void *)(uintptr_t)epoch))
			die("pthread_create: access log flusher");
		flusher_running = true;
	}
	pthread_mutex_unlock(&reg_lock);
	return f;
}

/* Main thread.  A file no logger uses goes to the graveyard (the flusher
 * writes what is left, within AL_CLOSE_WAIT_MS, and frees it); the last
 * file gone stops the flusher (restarted with the next file), so nothing
 * touches the stats scope after shutdown.  Waits AL_JOIN_WAIT_S at most:
 * a flusher that does not stop by then (a write that blocked after all,
 * e.g. on a stderr pipe another writer filled) is left behind. */
static void file_put(struct al_file *f)
{
	if (!f)
		return;
	bool stop = false;
	pthread_mutex_lock(&reg_lock);
	if (--f->refs == 0) {
		for (struct al_file **pp = &reg_files; *pp; pp = &(*pp)->next)
			if (*pp == f) {
				*pp = f->next;
				break;
			}
		f->next = graveyard;
		graveyard = f;
	}
	stop = !reg_files && flusher_running;
	if (stop)
		flusher_running = false;
	pthread_mutex_unlock(&reg_lock);
	if (!stop) {
		al_flush_kick();   /* the flusher frees it soon */
		return;
	}
	atomic_fetch_add(&flusher_epoch, 1);
	al_flush_kick();
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += AL_JOIN_WAIT_S;
	if (pthread_timedjoin_np(flusher, NULL, &ts)) {
		log_warn("access log: the flusher did not stop within %d s (a blocked write); "
			 "leaving it behind", AL_JOIN_WAIT_S);
		pthread_detach(flusher);
	}
}

/* Worker: copy one line into this thread's ring; drop it if full. */
static void file_write(struct al_file *f, unsigned shard, const char *p, size_t n)
{
	if (shard >= f->nshards)
		shard = 0;
	struct al_ring *r = atomic_load_explicit(&f->rings[shard], memory_order_acquire);
	if (!r) {
		r = xcalloc(1, sizeof(*r));
		atomic_store_explicit(&f->rings[shard], r, memory_order_release);
	}
	size_t head = atomic_load_explicit(&r->head, memory_order_relaxed);
	size_t tail = atomic_load_explicit(&r->tail, memory_order_acquire);
	size_t used = head - tail;
	if (n > AL_RING_BYTES - used) {
		if (al_stats)
			stats_inc(al_stats, shard, write_dropped);
		al_flush_kick();
		return;
	}
	size_t off = head % AL_RING_BYTES, first = MIN(n, AL_RING_BYTES - off);
	memcpy(r->data + off, p, first);
	memcpy(r->data, p + first, n - first);
	atomic_store_explicit(&r->head, head + n, memory_order_release);
	if (al_stats)
		stats_inc(al_stats, shard, write_buffered);
	if (used + n > AL_RING_BYTES / 2 && !atomic_exchange_explicit(&r->kicked, 1, memory_order_relaxed))
		al_flush_kick();
}

/* ---- filters ----------------------------------------------------------------- */

enum alf_kind { ALF_STATUS, ALF_DURATION, ALF_NOT_HC, ALF_FLAGS, ALF_AND, ALF_OR, ALF_HEADER };
enum alf_op { ALF_EQ, ALF_GE, ALF_LE, ALF_NE };

struct al_filter {
	enum alf_kind kind;
	enum alf_op op;
	uint64_t value;                 /* status code, or milliseconds */
	uint32_t flags;                 /* ALF_FLAGS: any of these (0: any flag) */
	struct al_filter *kids;         /* owned [nkids] (AND/OR) */
	size_t nkids;
	struct header_match_list *hm;   /* owned (HEADER) */
};

struct al_logger {
	struct al_format *fmt;          /* owned */
	struct al_filter *filter;       /* owned, NULL: log everything */
	struct al_file *file;           /* reference */
};

struct al_list {
	struct al_logger *loggers;      /* owned [n] */
	size_t n;
	unsigned needs;
};

static void filter_fini(struct al_filter *f)
{
	for (size_t i = 0; i < f->nkids; i++)
		filter_fini(&f->kids[i]);
	free(f->kids);
	header_match_list_free(f->hm);
}

static bool filter_eval(const struct al_filter *f, const struct al_record *r)
{
	uint64_t v;
	switch (f->kind) {
	case ALF_STATUS:
	case ALF_DURATION:
		v = f->kind == ALF_STATUS ? (uint64_t)r->response_code
					  : (uint64_t)(r->duration_ns > 0 ? r->duration_ns / 1000000 : 0);
		switch (f->op) {
		case ALF_EQ: return v == f->value;
		case ALF_GE: return v >= f->value;
		case ALF_LE: return v <= f->value;
		case ALF_NE: return v != f->value;
		}
		return false;
	case ALF_NOT_HC:
		return true;   /* no health_check HTTP filter: nothing is a health check */
	case ALF_FLAGS:
		return f->flags ? (r->flags & f->flags) != 0 : r->flags != 0;
	case ALF_AND:
		for (size_t i = 0; i < f->nkids; i++)
			if (!filter_eval(&f->kids[i], r))
				return false;
		return true;
	case ALF_OR:
		for (size_t i = 0; i < f->nkids; i++)
			if (filter_eval(&f->kids[i], r))
				return true;
		return false;
	case ALF_HEADER:
		return r->req && header_match_list_match(f->hm, r->req);
	}
	return false;
}

static int parse_comparison(struct cfg_ctx *c, const json_t *j, struct al_filter *f)
{
	static const char *const ff[] = { "comparison", NULL };
	static const char *const cf[] = { "op", "value", NULL };
	static const char *const vf[] = { "default_value", "runtime_key", NULL };
	static const char *const ops[] = { "EQ", "GE", "LE", "NE" };
	const json_t *cmp, *val;
	int op = 0;
	uint32_t dv = 0;
	const char *rk = NULL;
	if (cfg_expect_object(c, j) || cfg_check_fields(c, j, ff))
		return RM_ERROR;
	if (!(cmp = cfg_enter_req(c, j, "comparison")))
		return RM_ERROR;
	int rc = cfg_expect_object(c, cmp) || cfg_check_fields(c, cmp, cf) ||
		 cfg_enum(c, cmp, "op", ops, ARRAY_SIZE(ops), &op);
	if (!rc && (val = cfg_enter_req(c, cmp, "value"))) {
		rc = cfg_expect_object(c, val) || cfg_check_fields(c, val, vf) ||
		     cfg_u32(c, val, "default_value", &dv) || cfg_string(c, val, "runtime_key", &rk);
		cfg_leave(c);
	} else if (!rc) {
		rc = RM_ERROR;
	}
	cfg_leave(c);
	f->op = (enum alf_op)op;
	f->value = dv;
	return rc ? RM_ERROR : RM_OK;
}

static int parse_filter(struct cfg_ctx *c, const json_t *j, struct al_filter *f, int depth)
{
	static const char *const kinds[] = {
		"status_code_filter", "duration_filter", "not_health_check_filter",
		"response_flag_filter", "and_filter", "or_filter", "header_filter",
		"traceable_filter", "runtime_filter", "grpc_status_filter", "extension_filter",
		"metadata_filter", "log_type_filter", NULL
	};
	const char *which = NULL;
	const json_t *v = NULL;
	int rc = RM_ERROR;
	if (cfg_expect_object(c, j) || cfg_check_fields(c, j, kinds))
		return RM_ERROR;
	if (depth > 8)
		return cfg_fail(c, "access log filters nest too deeply");
	for (size_t i = 0; kinds[i]; i++) {
		if (!cfg_get(j, kinds[i]))
			continue;
		if (which)
			return cfg_fail_field(c, j, kinds[i], "only one filter per AccessLogFilter (already %s)",
					      which);
		which = kinds[i];
	}
	if (!which)
		return cfg_fail(c, "an AccessLogFilter needs one filter");
	v = cfg_enter(c, j, which);
	if (!strcmp(which, "status_code_filter") || !strcmp(which, "duration_filter")) {
		f->kind = which[0] == 's' ? ALF_STATUS : ALF_DURATION;
		rc = parse_comparison(c, v, f);
	} else if (!strcmp(which, "not_health_check_filter")) {
		f->kind = ALF_NOT_HC;
		rc = cfg_expect_object(c, v) || cfg_check_fields(c, v, (const char *const[]){ NULL });
	} else if (!strcmp(which, "response_flag_filter")) {
		static const char *const rf[] = { "flags", NULL };
		const json_t *fl;
		f->kind = ALF_FLAGS;
		rc = cfg_expect_object(c, v) || cfg_check_fields(c, v, rf);
		if (!rc && (fl = cfg_enter(c, v, "flags"))) {
			rc = cfg_expect_array(c, fl);
			for (size_t i = 0; !rc && i < json_array_size(fl); i++) {
				const json_t *e = cfg_enter_idx(c, fl, i);
				int bit = json_is_string(e) ? al_response_flag_parse(json_string_value(e)) : -1;
				if (bit < 0)
					rc = cfg_fail(c, "unknown response flag (Envoy short names: UH, UF, NR, ...)");
				else
					f->flags |= RF_BIT(bit);
				cfg_leave(c);
			}
			cfg_leave(c);
		}
	} else if (!strcmp(which, "and_filter") || !strcmp(which, "or_filter")) {
		static const char *const lf[] = { "filters", NULL };
		const json_t *arr;
		f->kind = which[0] == 'a' ? ALF_AND : ALF_OR;
		rc = cfg_expect_object(c, v) || cfg_check_fields(c, v, lf);
		if (!rc && (arr = cfg_enter_req(c, v, "filters"))) {
			rc = cfg_expect_array(c, arr);
			if (!rc && json_array_size(arr) < 2)
				rc = cfg_fail(c, "needs at least two filters");
			if (!rc)
				f->kids = xcalloc(json_array_size(arr), sizeof(*f->kids));
			for (size_t i = 0; !rc && i < json_array_size(arr); i++) {
				const json_t *e = cfg_enter_idx(c, arr, i);
				f->nkids++;
				rc = parse_filter(c, e, &f->kids[i], depth + 1);
				cfg_leave(c);
			}
			cfg_leave(c);
		} else if (!rc) {
			rc = RM_ERROR;
		}
	} else if (!strcmp(which, "header_filter")) {
		static const char *const hf[] = { "header", NULL };
		f->kind = ALF_HEADER;
		rc = cfg_expect_object(c, v) || cfg_check_fields(c, v, hf);
		if (!rc && !cfg_get(v, "header"))
			rc = cfg_fail(c, "missing required field 'header'");
		if (!rc) {
			/* compile the one HeaderMatcher as a one-element list */
			json_t *wrap = json_pack("{s:[O]}", "header", cfg_get(v, "header"));
			rc = header_match_list_compile(c, wrap, "header", &f->hm);
			json_decref(wrap);
		}
	} else {
		rc = cfg_fail(c, "%s is not supported (supported: status_code_filter, duration_filter, "
			      "not_health_check_filter, response_flag_filter, and_filter, or_filter, "
			      "header_filter)", which);
	}
	if (v)
		cfg_leave(c);
	return rc ? RM_ERROR : RM_OK;
}

/* ---- loggers ------------------------------------------------------------------ */

#define FILE_TYPE "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog"
#define STDOUT_TYPE "type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog"
#define STDERR_TYPE "type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StderrAccessLog"

/* SubstitutionFormatString (log_format). */
static struct al_format *parse_log_format(struct cfg_ctx *c, const json_t *v)
{
	static const char *const f[] = { "text_format", "json_format", "text_format_source",
					 "omit_empty_values", "content_type", "formatters",
					 "json_format_options", NULL };
	static const char *const ds[] = { "inline_string", "filename", "inline_bytes",
					  "environment_variable", NULL };
	const char *text = NULL, *ct = NULL;
	const json_t *src;
	bool omit = false;
	char err[256];
	int forms = 0;
	struct al_format *fmt = NULL;
	if (cfg_expect_object(c, v) || cfg_check_fields(c, v, f) ||
	    cfg_bool(c, v, "omit_empty_values", &omit) || cfg_string(c, v, "content_type", &ct) ||
	    cfg_string(c, v, "text_format", &text))
		return NULL;
	if (cfg_get(v, "formatters")) {
		cfg_fail_field(c, v, "formatters", "formatter extensions are not supported");
		return NULL;
	}
	if (cfg_get(v, "json_format_options")) {
		cfg_fail_field(c, v, "json_format_options", "not supported");
		return NULL;
	}
	forms = !!cfg_get(v, "text_format") + !!cfg_get(v, "json_format") +
		!!cfg_get(v, "text_format_source");
	if (forms > 1) {
		cfg_fail(c, "only one of text_format, json_format, text_format_source");
		return NULL;
	}
	if ((src = cfg_enter(c, v, "text_format_source"))) {
		int rc = cfg_expect_object(c, src) || cfg_check_fields(c, src, ds);
		if (!rc && !cfg_get(src, "inline_string"))
			rc = cfg_fail(c, "only inline_string is supported");
		if (!rc)
			rc = cfg_string(c, src, "inline_string", &text);
		if (!rc) {
			const json_t *is = cfg_enter(c, src, "inline_string");
			if (!(fmt = al_format_text(text, omit, err, sizeof(err))))
				cfg_fail(c, "%s", err);
			if (is)
				cfg_leave(c);
		}
		cfg_leave(c);
		return fmt;
	}
	if ((src = cfg_enter(c, v, "json_format"))) {
		if (!cfg_expect_object(c, src) && !(fmt = al_format_json(src, omit, err, sizeof(err))))
			cfg_fail(c, "%s", err);
		cfg_leave(c);
		return fmt;
	}
	const json_t *tf = text ? cfg_enter(c, v, "text_format") : NULL;
	if (!(fmt = al_format_text(text ? text : AL_DEFAULT_FORMAT, omit, err, sizeof(err))))
		cfg_fail(c, "%s", err);
	if (tf)
		cfg_leave(c);
	return fmt;
}

static int parse_logger(struct cfg_ctx *c, const json_t *e, struct build_ctx *b, struct al_logger *lg)
{
	static const char *const f[] = { "name", "typed_config", "filter", NULL };
	static const char *const ff[] = { "path", "format", "json_format", "log_format",
					  "typed_json_format", NULL };
	static const char *const sf[] = { "log_format", NULL };
	const char *name = NULL, *type = NULL, *path = NULL;
	const json_t *tc, *v;
	char err[300];
	if (cfg_expect_object(c, e) || cfg_check_fields(c, e, f) || cfg_string(c, e, "name", &name))
		return RM_ERROR;
	tc = cfg_get(e, "typed_config");
	if (tc && json_is_object(tc))
		type = json_string_value(json_object_get(tc, "@type"));
	int kind = -1;   /* 0 file, 1 stdout, 2 stderr */
	if (type)
		kind = !strcmp(type, FILE_TYPE) ? 0 : !strcmp(type, STDOUT_TYPE) ? 1 : !strcmp(type, STDERR_TYPE) ? 2 : -1;
	else if (name)
		kind = !strcmp(name, "envoy.access_loggers.file") ? 0 :
		       !strcmp(name, "envoy.access_loggers.stdout") ? 1 :
		       !strcmp(name, "envoy.access_loggers.stderr") ? 2 : -1;
	if (kind < 0)
		return cfg_fail_field(c, e, type ? "typed_config" : "name",
				      "unknown or unsupported access logger '%s' (supported: "
				      "envoy.access_loggers.file, .stdout, .stderr)",
				      type ? type : name ? name : "");
	if (kind == 0 && !tc)
		return cfg_fail(c, "envoy.access_loggers.file needs a typed_config with a path");
	if ((tc = cfg_enter(c, e, "typed_config"))) {
		int rc = cfg_expect_object(c, tc) || cfg_check_fields(c, tc, kind ? sf : ff);
		if (!rc && kind == 0) {
			rc = cfg_string_req(c, tc, "path", &path);
			if (!rc && cfg_get(tc, "typed_json_format"))
				rc = cfg_fail_field(c, tc, "typed_json_format", "not supported (use log_format.json_format)");
			if (!rc && !!cfg_get(tc, "format") + !!cfg_get(tc, "json_format") +
					       !!cfg_get(tc, "log_format") > 1)
				rc = cfg_fail(c, "only one of format, json_format, log_format");
		}
		if (!rc && (v = cfg_enter(c, tc, "log_format"))) {
			lg->fmt = parse_log_format(c, v);
			rc = lg->fmt ? RM_OK : RM_ERROR;
			cfg_leave(c);
		} else if (!rc && (v = cfg_enter(c, tc, "json_format"))) {
			if (!cfg_expect_object(c, v) && !(lg->fmt = al_format_json(v, false, err, sizeof(err))))
				cfg_fail(c, "%s", err);
			rc = lg->fmt ? RM_OK : RM_ERROR;
			cfg_leave(c);
		} else if (!rc && (v = cfg_enter(c, tc, "format"))) {
			if (!json_is_string(v))
				cfg_fail(c, "expected a string");
			else if (!(lg->fmt = al_format_text(json_string_value(v), false, err, sizeof(err))))
				cfg_fail(c, "%s", err);
			rc = lg->fmt ? RM_OK : RM_ERROR;
			cfg_leave(c);
		}
		cfg_leave(c);
		if (rc)
			return RM_ERROR;
	}
	if (!lg->fmt && !(lg->fmt = al_format_text(AL_DEFAULT_FORMAT, false, err, sizeof(err))))
		die("default access log format: %s", err);
	if ((v = cfg_enter(c, e, "filter"))) {
		lg->filter = xcalloc(1, sizeof(*lg->filter));
		int rc = parse_filter(c, v, lg->filter, 0);
		cfg_leave(c);
		if (rc)
			return RM_ERROR;
	}
	unsigned nshards = b && b->stats ? stats_store_nshards(b->stats) : 1;
	if (b && b->stats && al_stats_store != b->stats) {
		al_stats = stats_scope_new(b->stats, "access_log_file", "access_log_file", NULL, NULL,
					   al_stat_desc, AL_STATS_N);
		al_stats_store = b->stats;
	}
	lg->file = file_get(kind == 0 ? path : kind == 1 ? "<stdout>" : "<stderr>", nshards, err,
			    sizeof(err));
	if (!lg->file)
		return cfg_fail_field(c, e, "typed_config", "%s", err);
	return RM_OK;
}

static void logger_fini(struct al_logger *lg)
{
	al_format_free(lg->fmt);
	if (lg->filter) {
		filter_fini(lg->filter);
		free(lg->filter);
	}
	file_put(lg->file);
}

void al_list_free(struct al_list *l)
{
	if (!l)
		return;
	for (size_t i = 0; i < l->n; i++)
		logger_fini(&l->loggers[i]);
	free(l->loggers);
	free(l);
}

int al_list_parse(struct cfg_ctx *c, const json_t *obj, struct build_ctx *b, bool tcp,
		  struct al_list **out)
{
	const json_t *arr;
	(void)tcp;
	*out = NULL;
	if (!(arr = cfg_enter(c, obj, "access_log")))
		return RM_OK;
	if (cfg_expect_array(c, arr)) {
		cfg_leave(c);
		return RM_ERROR;
	}
	struct al_list *l = xcalloc(1, sizeof(*l));
	size_t n = json_array_size(arr);
	l->loggers = xcalloc(n ? n : 1, sizeof(*l->loggers));
	for (size_t i = 0; i < n; i++) {
		const json_t *e = cfg_enter_idx(c, arr, i);
		int rc = parse_logger(c, e, b, &l->loggers[l->n++]);
		cfg_leave(c);
		if (rc) {
			cfg_leave(c);
			al_list_free(l);
			return RM_ERROR;
		}
		l->needs |= al_format_needs(l->loggers[i].fmt);
	}
	cfg_leave(c);
	if (!l->n) {
		al_list_free(l);
		return RM_OK;
	}
	*out = l;
	return RM_OK;
}

unsigned al_list_needs(const struct al_list *l)
{
	return l ? l->needs : 0;
}

bool al_list_filter_pass(const struct al_list *l, size_t i, const struct al_record *r)
{
	return !l->loggers[i].filter || filter_eval(l->loggers[i].filter, r);
}

static __thread struct al_buf line;

void al_thread_exit(void)
{
	al_buf_free(&line);
	al_format_thread_exit();
}

void al_list_log(const struct al_list *l, const struct al_record *r, unsigned shard)
{
	for (size_t i = 0; i < l->n; i++) {
		const struct al_logger *lg = &l->loggers[i];
		if (lg->filter && !filter_eval(lg->filter, r))
			continue;
		line.len = 0;
		al_format_render(lg->fmt, r, &line);
		file_write(lg->file, shard, line.p, line.len);
	}
}
