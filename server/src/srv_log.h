/*
 * srv_log — droverd's log: one line per event on stderr, with time, level and
 * component. Thread-safe: the loop thread, SDK threads (driver stderr lines)
 * and worker threads all write through it. Never pass a secret to it.
 */
#ifndef SRV_LOG_H
#define SRV_LOG_H

#include <stdbool.h>

enum srv_log_level { SRV_LOG_DEBUG, SRV_LOG_INFO, SRV_LOG_WARN, SRV_LOG_ERROR };

/* Lines below `level` are dropped. Default: SRV_LOG_INFO. */
void srv_log_set_level(enum srv_log_level level);

/* Parses "debug", "info", "warn", "error"; returns -1 for anything else. */
int srv_log_level_from_name(const char *name);

/* Writes one line. `component` is a short name ("store", "driver:sim"). */
void srv_log(enum srv_log_level level, const char *component, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define srv_debug(comp, ...) srv_log(SRV_LOG_DEBUG, comp, __VA_ARGS__)
#define srv_info(comp, ...) srv_log(SRV_LOG_INFO, comp, __VA_ARGS__)
#define srv_warn(comp, ...) srv_log(SRV_LOG_WARN, comp, __VA_ARGS__)
#define srv_error(comp, ...) srv_log(SRV_LOG_ERROR, comp, __VA_ARGS__)

/*
 * Logs one stderr line of a driver under "driver:<name>". A JSON object line
 * (the SDK's format) keeps its "level" and is shown by its "msg"/"message"
 * field plus the remaining fields; any other line is logged at INFO as is.
 */
void srv_log_driver_line(const char *driver_name, const char *line);

#endif
