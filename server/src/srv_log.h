/*
 * srv_log — droverd's log: one line per event, with time, level and
 * component, on stderr or in a file with a size cap and rotation. Thread-safe:
 * the loop thread, SDK threads (driver stderr lines) and worker threads all
 * write through it. Never pass a secret to it.
 */
#ifndef SRV_LOG_H
#define SRV_LOG_H

#include <stdbool.h>
#include <stddef.h>

enum srv_log_level { SRV_LOG_DEBUG, SRV_LOG_INFO, SRV_LOG_WARN, SRV_LOG_ERROR };

/* Lines below `level` are dropped. Default: SRV_LOG_INFO. */
void srv_log_set_level(enum srv_log_level level);

/* Parses "debug", "info", "warn", "error"; returns -1 for anything else. */
int srv_log_level_from_name(const char *name);

/*
 * From now on, lines go to the file at `path` (appended to, created 0600)
 * instead of stderr. Before a line would take the file past max_bytes, it
 * is rotated: path.1 becomes path.2 and so on up to path.<keep> (the oldest
 * is dropped), path becomes path.1, and a new path is started; with keep 0
 * the file is started afresh. So the log never takes more than
 * (keep + 1) * max_bytes on disk, given lines shorter than max_bytes. A
 * rotation that fails starts the file afresh too, rather than exceed the
 * cap. Returns 0, or -1 with the reason in err.
 */
int srv_log_open_file(const char *path, long long max_bytes, int keep, char *err, size_t errlen);

/* Back to stderr, closing the file. */
void srv_log_close_file(void);

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
