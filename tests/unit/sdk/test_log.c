/* Tests of log.c: every line is one valid JSON object, whatever the message holds. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

#include "drv_internal.h"

static size_t fmt(char *buf, size_t len, enum drv_log_level lvl, const char *method, const char *f, ...)
{
	va_list ap;
	va_start(ap, f);
	size_t n = drv__log_format(buf, len, lvl, method, f, ap);
	va_end(ap);
	return n;
}

static json_t *parse_line(const char *buf, size_t n)
{
	assert_true(n > 2);
	assert_int_equal(buf[n - 1], '\n');
	assert_int_equal(strlen(buf), n);
	json_error_t je;
	json_t *o = json_loadb(buf, n - 1, 0, &je);
	if (!o)
		fail_msg("not JSON (%s): %s", je.text, buf);
	return o;
}

static void test_fields(void **state)
{
	char buf[1024];
	drv__log_set_driver("sim");
	size_t n = fmt(buf, sizeof(buf), DRV_LOG_WARN, "GetOffers", "took %d ms", 12);
	json_t *o = parse_line(buf, n);
	assert_string_equal(json_string_value(json_object_get(o, "level")), "warn");
	assert_string_equal(json_string_value(json_object_get(o, "driver")), "sim");
	assert_string_equal(json_string_value(json_object_get(o, "method")), "GetOffers");
	assert_string_equal(json_string_value(json_object_get(o, "msg")), "took 12 ms");
	const char *ts = json_string_value(json_object_get(o, "ts"));
	/* 2026-01-02T03:04:05.678Z */
	assert_int_equal(strlen(ts), 24);
	assert_int_equal(ts[10], 'T');
	assert_int_equal(ts[23], 'Z');
	json_decref(o);

	n = fmt(buf, sizeof(buf), DRV_LOG_INFO, NULL, "plain");
	o = parse_line(buf, n);
	assert_null(json_object_get(o, "method"));
	json_decref(o);
}

static void test_escaping(void **state)
{
	char buf[1024];
	const char *nasty = "quote \" backslash \\ newline \n tab \t bell \a esc \x1b[31m del \x7f "
	                    "utf8 \xc3\xa9 bad \xff\xfe over \xc0\xaf end";
	size_t n = fmt(buf, sizeof(buf), DRV_LOG_ERROR, "M\"x", "%s", nasty);
	json_t *o = parse_line(buf, n);
	const char *msg = json_string_value(json_object_get(o, "msg"));
	assert_non_null(strstr(msg, "quote \" backslash \\ newline \n tab \t"));
	assert_non_null(strstr(msg, "esc \x1b[31m"));
	assert_non_null(strstr(msg, "utf8 \xc3\xa9"));
	assert_non_null(strstr(msg, "bad \xef\xbf\xbd\xef\xbf\xbd")); /* U+FFFD twice */
	assert_string_equal(json_string_value(json_object_get(o, "method")), "M\"x");
	/* Exactly one line. */
	assert_ptr_equal(strchr(buf, '\n'), buf + n - 1);
	json_decref(o);
}

static void test_truncation_keeps_json(void **state)
{
	char big[20000];
	memset(big, '"', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	char buf[600];
	size_t n = fmt(buf, sizeof(buf), DRV_LOG_INFO, NULL, "%s", big);
	assert_true(n < sizeof(buf));
	json_t *o = parse_line(buf, n);
	json_decref(o);
	/* Small but usable buffers too. */
	char small[80];
	n = fmt(small, sizeof(small), DRV_LOG_INFO, "GetOffers", "%s", "x");
	if (n) {
		o = parse_line(small, n);
		json_decref(o);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_fields),
	    cmocka_unit_test(test_escaping),
	    cmocka_unit_test(test_truncation_keeps_json),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
