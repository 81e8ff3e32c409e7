/*
 * The rate limit of a driver's stderr lines (line_limit.c) with a fake
 * clock, and the escaping of what could drive a terminal
 * (drv_host_clean_text).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "drover/host.h"
#include "drv_internal.h"

#define MS 1000000ull
#define S 1000000000ull

/* A burst of a second's budget passes at once; past it lines are dropped and counted. */
static void test_lines_per_second(void **state)
{
	struct drv__line_limit l;
	uint64_t t = 5 * S, lines, bytes;
	int passed = 0;

	drv__line_limit_init(&l, 1000, 1 << 20, t);
	for (int i = 0; i < 5000; i++)
		passed += drv__line_limit_take(&l, 10, t);
	assert_int_equal(passed, 1000);
	/* Not a second since the drops began: no report yet, unless forced. */
	assert_false(drv__line_limit_report(&l, t + 500 * MS, false, &lines, &bytes));
	assert_true(drv__line_limit_report(&l, t + 1000 * MS, false, &lines, &bytes));
	assert_int_equal(lines, 4000);
	assert_int_equal(bytes, 40000);
	/* Reported once: the count starts again. */
	assert_false(drv__line_limit_report(&l, t + 3000 * MS, true, &lines, &bytes));
	/* Half a second refills half the budget. */
	t += 500 * MS;
	passed = 0;
	for (int i = 0; i < 1000; i++)
		passed += drv__line_limit_take(&l, 10, t);
	assert_int_equal(passed, 500);
	/* A long pause refills no more than a second's worth. */
	t += 3600 * S;
	passed = 0;
	for (int i = 0; i < 3000; i++)
		passed += drv__line_limit_take(&l, 10, t);
	assert_int_equal(passed, 1000);
	assert_true(drv__line_limit_report(&l, t, true, &lines, &bytes));
	assert_int_equal(lines, 500 + 2000);
}

/* The byte budget binds for long lines; a line longer than the budget passes on a full bucket, once. */
static void test_bytes_per_second(void **state)
{
	struct drv__line_limit l;
	uint64_t t = 0, lines, bytes;
	int passed = 0;

	drv__line_limit_init(&l, 1000, 1 << 20, t);
	for (int i = 0; i < 100; i++)
		passed += drv__line_limit_take(&l, 16384, t);
	assert_int_equal(passed, 64); /* 1 MiB / 16 KiB */
	drv__line_limit_init(&l, 1000, 1000, t);
	assert_true(drv__line_limit_take(&l, 5000, t));
	assert_false(drv__line_limit_take(&l, 1, t));
	/* In debt by 4,000 bytes: 4 s to pay it off, then a second's worth again. */
	assert_false(drv__line_limit_take(&l, 1, t + 3 * S));
	assert_true(drv__line_limit_take(&l, 1, t + 5 * S));
	assert_true(drv__line_limit_report(&l, t + 5 * S, true, &lines, &bytes));
	assert_int_equal(lines, 2);
	assert_int_equal(bytes, 2);
}

static void clean_is(const char *in, size_t len, const char *want)
{
	char out[256];
	size_t n = drv_host_clean_text(out, sizeof(out), in, len);
	assert_string_equal(out, want);
	assert_int_equal(n, strlen(want));
}

static void test_clean_text(void **state)
{
	clean_is("plain text\twith a tab", 21, "plain text\twith a tab");
	/* ESC, CR, BEL, DEL and a NUL byte inside the text. */
	clean_is("\x1b[31mred\r\a\x7fx\0y", 14, "\\x1b[31mred\\x0d\\x07\\x7fx\\x00y");
	/* UTF-8 passes; C1 controls (raw 0x9b, or U+009B encoded) do not. */
	clean_is("caf\xc3\xa9 \xe2\x82\xac", 9, "caf\xc3\xa9 \xe2\x82\xac");
	clean_is("\x9b"
	         "2J",
	         3, "\\x9b2J");
	clean_is("\xc2\x9b"
	         "2J \xc2\x85",
	         7, "\\u009b2J \\u0085");
	/* U+00A0 is the first character past the C1 block. */
	clean_is("\xc2\xa0", 2, "\xc2\xa0");
	/* A sequence cut by the end of the text, an overlong encoding and a surrogate. */
	clean_is("ok\xe2\x82", 4, "ok\\xe2\\x82");
	clean_is("\xc0\xaf", 2, "\\xc0\\xaf");
	clean_is("\xed\xa0\x80", 3, "\\xed\\xa0\\x80");
	/* Output that does not fit is cut before an escape, never inside it. */
	char small[6];
	assert_int_equal(drv_host_clean_text(small, sizeof(small),
	                                     "ab\x1b"
	                                     "cd",
	                                     5),
	                 2);
	assert_string_equal(small, "ab");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_lines_per_second),
	    cmocka_unit_test(test_bytes_per_second),
	    cmocka_unit_test(test_clean_text),
	};
	return cmocka_run_group_tests_name("sdk_line_limit", tests, NULL, NULL);
}
