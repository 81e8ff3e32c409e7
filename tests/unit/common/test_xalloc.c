/*
 * common/xalloc.c: an allocation that fails ends the process with SIGABRT
 * after one last line naming what was being allocated. Each case runs in a
 * forked child whose stderr the test reads.
 */
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "run_child.h"
#include "xalloc.h"

/* Under ASan, a huge malloc must return NULL as libc's does rather than stop the child with a report. */
const char *__asan_default_options(void);
const char *__asan_default_options(void)
{
	return "allocator_may_return_null=1";
}

/* More than any malloc gives (glibc refuses sizes past PTRDIFF_MAX at once). */
#define HUGE ((size_t)PTRDIFF_MAX + 1)

static void huge_malloc(void)
{
	fprintf(stderr, "before\n");
	void *p = xmalloc(HUGE, "a test block");
	free(p);
}

static void huge_calloc(void)
{
	void *p = xcalloc(SIZE_MAX / 2, 4, "an overflowing array");
	free(p);
}

static void huge_realloc(void)
{
	char *p = xmalloc(16, "a small block");
	p = xrealloc(p, HUGE, "a grown block");
	free(p);
}

static void reported(const char *line)
{
	fprintf(stderr, "{\"level\":\"error\",\"msg\":\"%s\"}\n", line);
}

static void huge_strdup_reported(void)
{
	xalloc_set_report(reported);
	xalloc_die("a copy", 12);
}

static void expect_abort(void (*fn)(void), const char *last_line)
{
	char out[1024];
	int status = run_child(fn, out, sizeof(out));
	assert_true(status != -1 && WIFSIGNALED(status));
	assert_int_equal(WTERMSIG(status), SIGABRT);
	size_t n = strlen(out);
	assert_true(n > 0 && out[n - 1] == '\n');
	out[n - 1] = '\0';
	const char *last = strrchr(out, '\n');
	assert_string_equal(last ? last + 1 : out, last_line);
}

static void test_malloc_aborts_naming_the_block(void **state)
{
	char want[128];
	snprintf(want, sizeof(want), "out of memory allocating %zu bytes for a test block; aborting", HUGE);
	expect_abort(huge_malloc, want);
}

static void test_calloc_overflow_aborts(void **state)
{
	char want[128];
	snprintf(want, sizeof(want), "out of memory allocating %zu bytes for an overflowing array; aborting",
	         SIZE_MAX);
	expect_abort(huge_calloc, want);
}

static void test_realloc_aborts(void **state)
{
	char want[128];
	snprintf(want, sizeof(want), "out of memory allocating %zu bytes for a grown block; aborting", HUGE);
	expect_abort(huge_realloc, want);
}

static void test_report_hook_writes_the_line(void **state)
{
	expect_abort(
	    huge_strdup_reported,
	    "{\"level\":\"error\",\"msg\":\"out of memory allocating 12 bytes for a copy; aborting\"}");
}

static void test_success(void **state)
{
	char *s = xstrdup(NULL, "empty");
	assert_string_equal(s, "");
	free(s);
	s = xstrdup("abc", "abc");
	assert_string_equal(s, "abc");
	s = xrealloc(s, 64, "grown");
	assert_string_equal(s, "abc");
	free(s);
	s = xasprintf("a formatted line", "%s-%d", "zone", 3);
	assert_string_equal(s, "zone-3");
	free(s);
	int *z = xcalloc(0, sizeof(int), "nothing");
	free(z);
	unsigned char *c = xcalloc(8, 8, "zeroed");
	for (int i = 0; i < 64; i++)
		assert_int_equal(c[i], 0);
	free(c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_success),
	    cmocka_unit_test(test_malloc_aborts_naming_the_block),
	    cmocka_unit_test(test_calloc_overflow_aborts),
	    cmocka_unit_test(test_realloc_aborts),
	    cmocka_unit_test(test_report_hook_writes_the_line),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
