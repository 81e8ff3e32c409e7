/*
 * Logging: one JSON object per line on stderr, which the host forwards to
 * its own log under the driver's name. A line is formatted into a local
 * buffer and written with one write(2) under a mutex, so lines from
 * concurrent handlers never interleave.
 */
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "drv_internal.h"

#define LINE_MAX_BYTES 4096

static const char *log_driver = "driver";
static enum drv_log_level log_min = DRV_LOG_INFO;
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static int log_fd = STDERR_FILENO;

static const char *const level_names[] = {"debug", "info", "warn", "error"};

void drv__log_set_driver(const char *type)
{
	log_driver = type ? type : "driver";
}

void drv__log_set_fd(int fd)
{
	log_fd = fd;
}

void drv__log_set_level(enum drv_log_level level)
{
	log_min = level;
}

static size_t put(char *buf, size_t buflen, size_t len, const char *s, size_t n)
{
	if (len + n < buflen) {
		memcpy(buf + len, s, n);
		return len + n;
	}
	return len;
}

size_t drv__json_escape(char *buf, size_t buflen, size_t len, const char *s)
{
	const unsigned char *p = (const unsigned char *)(s ? s : "");
	while (*p) {
		char esc[8];
		size_t before = len;
		if (*p == '"' || *p == '\\') {
			esc[0] = '\\', esc[1] = (char)*p;
			len = put(buf, buflen, len, esc, 2);
			p++;
		} else if (*p == '\n') {
			len = put(buf, buflen, len, "\\n", 2), p++;
		} else if (*p == '\t') {
			len = put(buf, buflen, len, "\\t", 2), p++;
		} else if (*p == '\r') {
			len = put(buf, buflen, len, "\\r", 2), p++;
		} else if (*p < 0x20 || *p == 0x7f) {
			snprintf(esc, sizeof(esc), "\\u%04x", *p);
			len = put(buf, buflen, len, esc, 6), p++;
		} else {
			size_t n = drv_utf8_len((const char *)p);
			if (n == 0) {
				/* Invalid UTF-8 would make the whole line invalid JSON. */
				len = put(buf, buflen, len, "\\ufffd", 6), p++;
			} else {
				len = put(buf, buflen, len, (const char *)p, n), p += n;
			}
		}
		if (len == before)
			break; /* out of room: stop rather than skip characters */
	}
	return len;
}

size_t drv__log_format(char *buf, size_t buflen, enum drv_log_level level, const char *method,
                       const char *fmt, va_list ap)
{
	char msg[LINE_MAX_BYTES];
	struct timespec ts;
	struct tm tm;
	char stamp[40];
	const size_t tail = 4; /* room kept for "\"}\n" and the NUL */

	if (buflen < 64)
		return 0;
	vsnprintf(msg, sizeof(msg), fmt, ap);
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	size_t sl = strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(stamp + sl, sizeof(stamp) - sl, ".%03ldZ", ts.tv_nsec / 1000000);
	if ((unsigned)level > DRV_LOG_ERROR)
		level = DRV_LOG_ERROR;

	size_t cap = buflen - tail;
	size_t len = 0;
	len = put(buf, cap, len, "{\"ts\":\"", 7);
	len = put(buf, cap, len, stamp, strlen(stamp));
	len = put(buf, cap, len, "\",\"level\":\"", 11);
	len = put(buf, cap, len, level_names[level], strlen(level_names[level]));
	len = put(buf, cap, len, "\",\"driver\":\"", 12);
	len = drv__json_escape(buf, cap, len, log_driver);
	if (method) {
		len = put(buf, cap, len, "\",\"method\":\"", 12);
		len = drv__json_escape(buf, cap, len, method);
	}
	len = put(buf, cap, len, "\",\"msg\":\"", 9);
	len = drv__json_escape(buf, cap, len, msg);
	memcpy(buf + len, "\"}\n", 3);
	len += 3;
	buf[len < buflen ? len : buflen - 1] = '\0';
	return len;
}

void drv__vlog(enum drv_log_level level, const char *method, const char *fmt, va_list ap)
{
	char line[LINE_MAX_BYTES + 512];
	if (level < log_min || log_fd < 0)
		return;
	size_t n = drv__log_format(line, sizeof(line), level, method, fmt, ap);
	pthread_mutex_lock(&log_lock);
	size_t off = 0;
	while (off < n) {
		ssize_t w = write(log_fd, line + off, n - off);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			break;
		off += (size_t)w;
	}
	pthread_mutex_unlock(&log_lock);
}

void drv_log(enum drv_log_level level, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	drv__vlog(level, NULL, fmt, ap);
	va_end(ap);
}

void drv_call_log(struct drv_call *call, enum drv_log_level level, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	drv__vlog(level, call ? call->method : NULL, fmt, ap);
	va_end(ap);
}
