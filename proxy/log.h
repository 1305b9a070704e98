/* log.h - leveled logging to stderr, level changeable at runtime (/logging). */
#ifndef REMORA_LOG_H
#define REMORA_LOG_H

#include "common.h"

enum log_level { LOG_TRACE, LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR, LOG_CRITICAL, LOG_OFF };

extern volatile int log_current_level;

/* Returns RM_OK, or RM_ERROR if name is not a level name. */
int log_set_level_name(const char *name);
const char *log_level_name(int level);
void log_write(int level, const char *file, int line, const char *fmt, ...) PRINTF(4, 5);

#define LOG(lvl, ...) do { if (unlikely((lvl) >= log_current_level)) \
	log_write((lvl), __FILE__, __LINE__, __VA_ARGS__); } while (0)
#define log_trace(...) LOG(LOG_TRACE, __VA_ARGS__)
#define log_debug(...) LOG(LOG_DEBUG, __VA_ARGS__)
#define log_info(...) LOG(LOG_INFO, __VA_ARGS__)
#define log_warn(...) LOG(LOG_WARN, __VA_ARGS__)
#define log_error(...) LOG(LOG_ERROR, __VA_ARGS__)

#endif
