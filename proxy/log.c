/* log.c - leveled logging. Writes whole lines with one fprintf so that lines
 * from workers do not interleave. */
#include "log.h"

#include <stdarg.h>
#include <time.h>
#include <pthread.h>

volatile int log_current_level = LOG_INFO;

static const char *const names[] = { "trace", "debug", "info", "warning", "error", "critical", "off" };

const char *log_level_name(int level)
{
	return (level >= 0 && level < (int)ARRAY_SIZE(names)) ? names[level] : "?";
}

int log_set_level_name(const char *name)
{
	for (size_t i = 0; i < ARRAY_SIZE(names); i++) {
		if (!strcmp(name, names[i])) {
			log_current_level = (int)i;
			return RM_OK;
		}
	}
	if (!strcmp(name, "warn")) {
		log_current_level = LOG_WARN;
		return RM_OK;
	}
	return RM_ERROR;
}

void log_write(int level, const char *file, int line, const char *fmt, ...)
{
	char msg[2048];
	va_list ap;
	struct timespec ts;
	struct tm tm;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	const char *base = strrchr(file, '/');
	fprintf(stderr, "[%04d-%02d-%02d %02d:%02d:%02d.%03ld][%s][%s:%d] %s\n",
		tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
		tm.tm_sec, ts.tv_nsec / 1000000, log_level_name(level),
		base ? base + 1 : file, line, msg);
}
