#include "srv_log.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <jansson.h>

static enum srv_log_level min_level = SRV_LOG_INFO;
static pthread_mutex_t log_mu = PTHREAD_MUTEX_INITIALIZER;

static const char *level_names[] = {"DEBUG", "INFO", "WARN", "ERROR"};

void srv_log_set_level(enum srv_log_level level)
{
	min_level = level;
}

int srv_log_level_from_name(const char *name)
{
	if (!name)
		return -1;
	if (strcasecmp(name, "debug") == 0)
		return SRV_LOG_DEBUG;
	if (strcasecmp(name, "info") == 0)
		return SRV_LOG_INFO;
	if (strcasecmp(name, "warn") == 0 || strcasecmp(name, "warning") == 0)
		return SRV_LOG_WARN;
	if (strcasecmp(name, "error") == 0)
		return SRV_LOG_ERROR;
	return -1;
}

static void write_line(enum srv_log_level level, const char *component, const char *text)
{
	struct timespec ts;
	struct tm tm;
	char when[32];

	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%S", &tm);
	/* One fprintf under a lock so lines from several threads never interleave. */
	pthread_mutex_lock(&log_mu);
	fprintf(stderr, "%s.%03ldZ %-5s [%s] %s\n", when, ts.tv_nsec / 1000000, level_names[level], component,
	        text);
	fflush(stderr);
	pthread_mutex_unlock(&log_mu);
}

void srv_log(enum srv_log_level level, const char *component, const char *fmt, ...)
{
	char buf[2048];
	va_list ap;

	if (level < min_level)
		return;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	write_line(level, component, buf);
}

void srv_log_driver_line(const char *driver_name, const char *line)
{
	char component[128];
	enum srv_log_level level = SRV_LOG_INFO;
	json_t *obj;

	snprintf(component, sizeof(component), "driver:%s", driver_name ? driver_name : "?");
	obj = line[0] == '{' ? json_loads(line, 0, NULL) : NULL;
	if (!json_is_object(obj)) {
		json_decref(obj);
		if (level >= min_level)
			write_line(level, component, line);
		return;
	}
	const char *lv = json_string_value(json_object_get(obj, "level"));
	int parsed = srv_log_level_from_name(lv);
	if (parsed >= 0)
		level = (enum srv_log_level)parsed;
	if (level < min_level) {
		json_decref(obj);
		return;
	}
	const char *msg = json_string_value(json_object_get(obj, "msg"));
	if (!msg)
		msg = json_string_value(json_object_get(obj, "message"));
	/* Copied: deleting the fields below frees the strings they own. */
	char *msg_copy = strdup(msg ? msg : "");
	/* The other fields (method, call id, ...) follow the message as JSON. */
	json_object_del(obj, "level");
	json_object_del(obj, "msg");
	json_object_del(obj, "message");
	json_object_del(obj, "ts");
	json_object_del(obj, "time");
	char *rest = json_object_size(obj) ? json_dumps(obj, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
	char buf[2048];
	snprintf(buf, sizeof(buf), "%s%s%s", msg_copy ? msg_copy : "", rest ? " " : "", rest ? rest : "");
	free(rest);
	free(msg_copy);
	json_decref(obj);
	write_line(level, component, buf);
}
