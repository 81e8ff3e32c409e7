/* srv_log: droverd's log file, its size cap and rotation, and driver lines that could drive a terminal. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cmocka.h>

#include "srv_log.h"
#include "testutil.h"

static long long file_size(const char *path)
{
	struct stat st;
	return stat(path, &st) == 0 ? (long long)st.st_size : -1;
}

static char *numbered(const char *path, int i)
{
	char *p = malloc(strlen(path) + 16);
	sprintf(p, "%s.%d", path, i);
	return p;
}

/* Each file stays under the cap, keep old files are kept, and the newest lines are in the live file. */
static void test_rotation(void **state)
{
	char *dir = tu_tempdir(), *path = tu_join(dir, "droverd.log"), err[256];
	const long long max = 4096;

	assert_int_equal(srv_log_open_file(path, max, 2, err, sizeof(err)), 0);
	for (int i = 0; i < 1000; i++)
		srv_info("test", "line %04d of a log that grows past its cap .......................", i);
	srv_log_close_file();
	long long total = 0;
	for (int i = 0; i <= 3; i++) {
		char *p = i ? numbered(path, i) : strdup(path);
		long long n = file_size(p);
		if (i == 3)
			assert_int_equal(n, -1); /* only `keep` old files */
		else if (n < 1 || n > max)
			fail_msg("%s: %lld bytes, cap %lld", p, n, max);
		total += n > 0 ? n : 0;
		free(p);
	}
	assert_true(total <= 3 * max);
	size_t len;
	char *live = tu_read_file(path, &len);
	assert_true(tu_contains(live, len, "line 0999", 9));
	char *p1 = numbered(path, 1), *p2 = numbered(path, 2);
	char *old1 = tu_read_file(p1, NULL), *old2 = tu_read_file(p2, NULL);
	/* Rotated in order: .1 holds the lines just before the live file's, .2 older ones. */
	assert_true(strstr(old1, "line 09") != NULL);
	assert_true(atoi(strstr(old2, "line ") + 5) < atoi(strstr(old1, "line ") + 5));
	free(live);
	free(old1);
	free(old2);

	/* Opening again appends to what is there, and counts it against the cap. */
	assert_int_equal(srv_log_open_file(path, max, 2, err, sizeof(err)), 0);
	for (int i = 0; i < 100; i++)
		srv_info("test", "appended %04d .................................................", i);
	srv_log_close_file();
	live = tu_read_file(path, &len);
	assert_true(len <= (size_t)max);
	assert_true(tu_contains(live, len, "appended 0099", 13));
	free(live);
	free(p1);
	free(p2);

	/* keep 0: the file starts afresh rather than grow. */
	char *path0 = tu_join(dir, "zero.log");
	assert_int_equal(srv_log_open_file(path0, max, 0, err, sizeof(err)), 0);
	for (int i = 0; i < 500; i++)
		srv_info("test", "line %04d of a log that grows past its cap .......................", i);
	srv_log_close_file();
	assert_true(file_size(path0) <= max);
	char *p01 = numbered(path0, 1);
	assert_int_equal(file_size(p01), -1);
	free(p01);
	free(path0);

	/* A log file that cannot be opened is a clear error naming it. */
	char *bad = tu_join(dir, "no/such/dir/x.log");
	assert_int_equal(srv_log_open_file(bad, max, 1, err, sizeof(err)), -1);
	assert_non_null(strstr(err, bad));
	free(bad);
	tu_rmrf(dir);
	free(dir);
	free(path);
}

/* A JSON driver line's escapes are decoded: what that gives back must not reach the log raw. */
static void test_driver_line_escaped(void **state)
{
	char *dir = tu_tempdir(), *path = tu_join(dir, "d.log"), err[256];

	assert_int_equal(srv_log_open_file(path, 1 << 20, 1, err, sizeof(err)), 0);
	srv_log_driver_line("evil", "{\"level\":\"warn\",\"msg\":\"\\u001b]0;owned\\u0007 \\u009b2J done\"}");
	srv_log_close_file();
	size_t len;
	char *text = tu_read_file(path, &len);
	assert_true(tu_contains(text, len, "[driver:evil] \\x1b]0;owned\\x07 \\u009b2J done", 44));
	assert_false(tu_contains(text, len, "\x1b", 1));
	assert_false(tu_contains(text, len, "\xc2\x9b", 2));
	assert_true(tu_contains(text, len, "WARN", 4));
	free(text);
	tu_rmrf(dir);
	free(dir);
	free(path);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_rotation),
	    cmocka_unit_test(test_driver_line_escaped),
	};
	return cmocka_run_group_tests_name("server_log", tests, NULL, NULL);
}
