/*
 * Helpers for the SDK integration tests: a thread-safe collector of a
 * driver's stderr lines, temporary directories, timing. Header-only so each
 * test binary stays one file.
 */
#ifndef SDK_TEST_H
#define SDK_TEST_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <ftw.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <setjmp.h>
#include <cmocka.h>

#include "drover/host.h"

#define LINES_MAX 1024

/* Collects a driver's stderr lines (drv_host_line_cb runs on the host's I/O thread). */
struct lines {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	char *v[LINES_MAX];
	int n;
	int exits;
	int64_t exit_status;
	int term_signal;
};

static inline void lines_init(struct lines *l)
{
	memset(l, 0, sizeof(*l));
	pthread_mutex_init(&l->mu, NULL);
	pthread_cond_init(&l->cv, NULL);
}

static inline void lines_free(struct lines *l)
{
	for (int i = 0; i < l->n; i++)
		free(l->v[i]);
	pthread_cond_destroy(&l->cv);
	pthread_mutex_destroy(&l->mu);
}

static inline void lines_cb(void *ud, const char *name, const char *line)
{
	struct lines *l = ud;

	pthread_mutex_lock(&l->mu);
	if (l->n < LINES_MAX)
		l->v[l->n++] = strdup(line);
	pthread_cond_broadcast(&l->cv);
	pthread_mutex_unlock(&l->mu);
}

static inline void lines_exit_cb(void *ud, const char *name, int64_t exit_status, int term_signal)
{
	struct lines *l = ud;

	pthread_mutex_lock(&l->mu);
	l->exits++;
	l->exit_status = exit_status;
	l->term_signal = term_signal;
	pthread_cond_broadcast(&l->cv);
	pthread_mutex_unlock(&l->mu);
}

static inline bool lines_has_locked(struct lines *l, const char *needle, bool exact)
{
	for (int i = 0; i < l->n; i++)
		if (exact ? strcmp(l->v[i], needle) == 0 : strstr(l->v[i], needle) != NULL)
			return true;
	return false;
}

/* Waits up to timeout_ms for a line equal to (exact) or containing `needle`. */
static inline bool lines_wait(struct lines *l, const char *needle, bool exact, int timeout_ms)
{
	struct timespec ts;
	bool found;

	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += timeout_ms / 1000;
	ts.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
	if (ts.tv_nsec >= 1000000000L) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000L;
	}
	pthread_mutex_lock(&l->mu);
	while (!(found = lines_has_locked(l, needle, exact)))
		if (pthread_cond_timedwait(&l->cv, &l->mu, &ts) != 0)
			break;
	found = lines_has_locked(l, needle, exact);
	pthread_mutex_unlock(&l->mu);
	return found;
}

static inline bool lines_has(struct lines *l, const char *needle, bool exact)
{
	bool found;

	pthread_mutex_lock(&l->mu);
	found = lines_has_locked(l, needle, exact);
	pthread_mutex_unlock(&l->mu);
	return found;
}

/* Waits for the on_exit callback; returns how many times it ran. */
static inline int lines_wait_exit(struct lines *l, int timeout_ms)
{
	struct timespec ts;
	int n;

	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += timeout_ms / 1000 + 1;
	pthread_mutex_lock(&l->mu);
	while (l->exits == 0)
		if (pthread_cond_timedwait(&l->cv, &l->mu, &ts) != 0)
			break;
	n = l->exits;
	pthread_mutex_unlock(&l->mu);
	return n;
}

static inline double now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static inline int rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	return remove(path);
}

static inline void rm_rf(const char *dir)
{
	nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

/* A fresh private temporary directory; the caller rm_rf()s it. */
static inline void make_tmpdir(char *buf, size_t len, const char *tag)
{
	snprintf(buf, len, "/tmp/drover-test-%s-XXXXXX", tag);
	assert_non_null(mkdtemp(buf));
}

/* Fails the test with the message when rc is not `want`. */
#define assert_rc(rc, want, msg)                                                                             \
	do {                                                                                                 \
		int rc_ = (rc);                                                                              \
		if (rc_ != (want))                                                                           \
			fail_msg("got %s (%d), want %s: %s", drv_error_name(rc_), rc_, drv_error_name(want), \
			         (msg));                                                                     \
	} while (0)

#define assert_contains(haystack, needle)                                                                    \
	do {                                                                                                 \
		const char *h_ = (haystack);                                                                 \
		if (!h_ || !strstr(h_, (needle)))                                                            \
			fail_msg("\"%s\" does not contain \"%s\"", h_ ? h_ : "(null)", (needle));            \
	} while (0)

#endif
