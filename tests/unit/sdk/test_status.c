/* Tests of status.c: the one table between drover error codes and gRPC status codes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

#include "drover/types.h"
#include "drv_internal.h"

static const char *const grpc_names[17] = {
    "OK",        "CANCELLED",      "UNKNOWN",           "INVALID_ARGUMENT",   "DEADLINE_EXCEEDED",
    "NOT_FOUND", "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
    "ABORTED",   "OUT_OF_RANGE",   "UNIMPLEMENTED",     "INTERNAL",           "UNAVAILABLE",
    "DATA_LOSS", "UNAUTHENTICATED"};

static void test_round_trip(void **state)
{
	for (int code = 0; code <= 16; code++) {
		int err = drv_error_from_grpc(code);
		assert_int_equal(drv_error_to_grpc(err), code);
		assert_string_equal(drv_error_name(err), grpc_names[code]);
		assert_int_equal(drv_error_from_name(grpc_names[code]), err);
		assert_non_null(drv_strerror(err));
	}
	/* Names are case-insensitive; unknown names give 1. */
	assert_int_equal(drv_error_from_name("resource_exhausted"), DRV_ENOCAPACITY);
	assert_int_equal(drv_error_from_name("NOPE"), 1);
	assert_int_equal(drv_error_from_name(NULL), 1);
	assert_int_equal(drv_error_from_grpc(17), DRV_EUNKNOWN);
	assert_int_equal(drv_error_from_grpc(-1), DRV_EUNKNOWN);
}

static void test_named_codes(void **state)
{
	assert_int_equal(drv_error_to_grpc(DRV_EINVAL), 3);
	assert_int_equal(drv_error_to_grpc(DRV_ENOCAPACITY), 8);
	assert_int_equal(drv_error_to_grpc(DRV_EUNIMPLEMENTED), 12);
	assert_int_equal(drv_error_to_grpc(DRV_EUNAVAILABLE), 14);
	assert_int_equal(drv_error_to_grpc(DRV_EUNAUTHENTICATED), 16);
	/* Local errors travel as INTERNAL but keep their own text. */
	int local[] = {DRV_ENOMEM, DRV_EHANDSHAKE, DRV_EPROTOCOL, DRV_ESYSTEM};
	for (size_t i = 0; i < sizeof(local) / sizeof(local[0]); i++) {
		assert_int_equal(drv_error_to_grpc(local[i]), 13);
		assert_string_equal(drv_error_name(local[i]), "INTERNAL");
		assert_string_not_equal(drv_strerror(local[i]), drv_strerror(DRV_EINTERNAL));
	}
	assert_int_equal(drv_error_to_grpc(5), 13);
	assert_string_equal(drv_strerror(-999), "unknown error code");
}

/* The one writer of a drv_status and of an error buffer: NULL-safe, cut to fit, NUL-terminated. */
static void test_writers(void **state)
{
	struct drv_status st = {0};
	assert_int_equal(drv__status_set(&st, DRV_EINVAL, "bad %s %d", "port", 7), DRV_EINVAL);
	assert_int_equal(st.code, DRV_EINVAL);
	assert_string_equal(st.message, "bad port 7");
	assert_int_equal(drv__status_set(NULL, DRV_EUNAVAILABLE, "x"), DRV_EUNAVAILABLE);
	char big[1000];
	memset(big, 'x', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	drv__status_set(&st, DRV_EINTERNAL, "%s", big);
	assert_int_equal(strlen(st.message), sizeof(st.message) - 1);

	char err[8] = "untouch";
	drv__seterr(err, sizeof(err), "%s", "a longer text");
	assert_string_equal(err, "a longe");
	drv__seterr(NULL, 10, "nothing");
	drv__seterr(err, 0, "nothing");
	assert_string_equal(err, "a longe");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_round_trip),
	    cmocka_unit_test(test_writers),
	    cmocka_unit_test(test_named_codes),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
