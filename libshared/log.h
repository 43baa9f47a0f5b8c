/* log.h — structured logging: one JSON object per line on stderr.
 *
 * {"ts":"2026-11-25T13:13:14.123Z","level":"info","service":"gateway","request_id":"…",
 *  "msg":"…","src":"main.c:42"}
 * Thread-safe (one write(2) per line). The service name and minimum level are process-wide,
 * set once by log_init() before threads start; request_id may be NULL. */
#ifndef PARLEY_LOG_H
#define PARLEY_LOG_H

#include <stdarg.h>

typedef enum log_level { LOG_DEBUG = 0, LOG_INFO, LOG_WARN, LOG_ERROR } log_level;

/* Sets the service name (copied) and the minimum level written. */
void log_init(const char *service, log_level min);
/* Parses "debug", "info", "warn", "error"; returns -1 for anything else. */
int log_level_parse(const char *s);
void log_set_level(log_level min);

void log_write(log_level lv, const char *request_id, const char *file, int line, const char *fmt,
               ...) __attribute__((format(printf, 5, 6)));
void log_vwrite(log_level lv, const char *request_id, const char *file, int line, const char *fmt,
                va_list ap);

#define LOGD(rid, ...) log_write(LOG_DEBUG, (rid), __FILE__, __LINE__, __VA_ARGS__)
#define LOGI(rid, ...) log_write(LOG_INFO, (rid), __FILE__, __LINE__, __VA_ARGS__)
#define LOGW(rid, ...) log_write(LOG_WARN, (rid), __FILE__, __LINE__, __VA_ARGS__)
#define LOGE(rid, ...) log_write(LOG_ERROR, (rid), __FILE__, __LINE__, __VA_ARGS__)

#endif
