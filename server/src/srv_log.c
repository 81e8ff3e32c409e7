#include "srv_log.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "drover/host.h"

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

/* The log file, when there is one; all under log_mu. */
static struct {
	int fd; /* -1: stderr */
	char *path;
	long long max_bytes, size;
	int keep;
} file = {.fd = -1};

static int open_log(const char *path, bool truncate)
{
	return open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | (truncate ? O_TRUNC : 0), 0600);
}

/* Caller holds log_mu. Shifts path.N up by one and starts a new file. */
static void rotate_locked(void)
{
	char from[PATH_MAX + 16], to[PATH_MAX + 16];
	bool moved = file.keep > 0;

	for (int i = file.keep - 1; moved && i >= 1; i--) {
		snprintf(from, sizeof(from), "%s.%d", file.path, i);
		snprintf(to, sizeof(to), "%s.%d", file.path, i + 1);
		if (rename(from, to) != 0 && errno != ENOENT)
			moved = false;
	}
	if (moved) {
		snprintf(to, sizeof(to), "%s.1", file.path);
		moved = rename(file.path, to) == 0;
	}
	/* Not moved aside (keep 0, or a rename failed): the file starts afresh, and the cap holds. */
	int fd = open_log(file.path, !moved);
	if (fd < 0) {
		/* Nowhere to write but stderr now; say so there once. */
		fprintf(stderr, "droverd: cannot reopen the log file %s (%s); logging to stderr\n", file.path,
		        strerror(errno));
		close(file.fd);
		file.fd = -1;
		return;
	}
	close(file.fd);
	file.fd = fd;
	file.size = 0;
}

int srv_log_open_file(const char *path, long long max_bytes, int keep, char *err, size_t errlen)
{
	struct stat st;
	char *copy = strdup(path);
	int fd = copy ? open_log(path, false) : -1;

	if (fd < 0 || fstat(fd, &st) != 0) {
		snprintf(err, errlen, "log file %s: %s", path, copy ? strerror(errno) : "out of memory");
		if (fd >= 0)
			close(fd);
		free(copy);
		return -1;
	}
	pthread_mutex_lock(&log_mu);
	if (file.fd >= 0)
		close(file.fd);
	free(file.path);
	file.fd = fd;
	file.path = copy;
	file.max_bytes = max_bytes;
	file.keep = keep;
	file.size = st.st_size;
	pthread_mutex_unlock(&log_mu);
	return 0;
}

void srv_log_close_file(void)
{
	pthread_mutex_lock(&log_mu);
	if (file.fd >= 0)
		close(file.fd);
	free(file.path);
	file.fd = -1;
	file.path = NULL;
	pthread_mutex_unlock(&log_mu);
}

static void write_line(enum srv_log_level level, const char *component, const char *text)
{
	struct timespec ts;
	struct tm tm;
	char when[32], head[192];

	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%S", &tm);
	int hn = snprintf(head, sizeof(head), "%s.%03ldZ %-5s [%s] ", when, ts.tv_nsec / 1000000,
	                  level_names[level], component);
	if (hn < 0)
		return;
	if ((size_t)hn >= sizeof(head))
		hn = (int)sizeof(head) - 1;
	struct iovec iov[3] = {{head, (size_t)hn}, {(void *)text, strlen(text)}, {"\n", 1}};
	long long len = (long long)(iov[0].iov_len + iov[1].iov_len + 1);
	/* One write under a lock so lines from several threads never interleave. */
	pthread_mutex_lock(&log_mu);
	if (file.fd >= 0 && file.size > 0 && file.size + len > file.max_bytes)
		rotate_locked();
	int fd = file.fd >= 0 ? file.fd : 2;
	ssize_t n = writev(fd, iov, 3);
	if (n > 0 && file.fd >= 0)
		file.size += n;
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
	char buf[2048], clean[2048];
	int n =
	    snprintf(buf, sizeof(buf), "%s%s%s", msg_copy ? msg_copy : "", rest ? " " : "", rest ? rest : "");
	free(rest);
	free(msg_copy);
	json_decref(obj);
	/* The JSON decoding turned "\u001b" back into a terminal escape: escaped again here. */
	drv_host_clean_text(clean, sizeof(clean), buf, n < 0 ? 0 : strlen(buf));
	write_line(level, component, clean);
}
