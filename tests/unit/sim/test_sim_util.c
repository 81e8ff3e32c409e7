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

#include "run_child.h"
#include "sim_core.h"

static void *no_memory(void *ctx, size_t size)
{
	return NULL;
}

static void answer_without_memory(void)
{
	struct sim_arena a = {.alloc = no_memory};
	drv_placement_group *g = sim_new(&a, placement_group);
	(void)g;
}

static void test_arena_out_of_memory_aborts(void **state)
{
	char out[512];
	int status = run_child(answer_without_memory, out, sizeof(out));
	assert_true(status != -1 && WIFSIGNALED(status));
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
