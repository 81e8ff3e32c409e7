/*
 * sim_util.c: the sim builds every answer in the call's arena, and when the
 * arena has no memory the sim aborts through common/xalloc with a last line
 * naming it, instead of returning NULL to ~70 callers.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "sim_core.h"

static void *no_memory(void *ctx, size_t size)
{
	return NULL;
}

static void test_arena_out_of_memory_aborts(void **state)
{
	int p[2];
	assert_int_equal(pipe(p), 0);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		dup2(p[1], 2);
		struct sim_arena a = {.alloc = no_memory};
		drv_placement_group *g = sim_new(&a, placement_group);
		(void)g;
		_exit(0);
	}
	close(p[1]);
	char out[512];
	size_t len = 0;
	ssize_t n;
	while (len + 1 < sizeof(out) && (n = read(p[0], out + len, sizeof(out) - 1 - len)) > 0)
		len += (size_t)n;
	out[len] = '\0';
	close(p[0]);
	int status;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFSIGNALED(status));
	assert_int_equal(WTERMSIG(status), SIGABRT);
	char want[160];
	snprintf(want, sizeof(want),
	         "out of memory allocating %zu bytes for an answer in the call's arena; aborting\n",
	         sizeof(drv_placement_group));
	assert_string_equal(out, want);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_arena_out_of_memory_aborts),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
