/* Tests of backend_config.c: the BackendConfig that droverd and the harness build for a call. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "drover/host.h"

/* The message as a driver receives it: packed, then unpacked. */
static drv_backend_config *round_trip(const drv_backend_config *m)
{
	size_t n = protobuf_c_message_get_packed_size(&m->base);
	uint8_t *buf = malloc(n ? n : 1);
	assert_non_null(buf);
	assert_int_equal(protobuf_c_message_pack(&m->base, buf), n);
	drv_backend_config *out = drover__compute__v1__backend_config__unpack(NULL, n, buf);
	free(buf);
	assert_non_null(out);
	return out;
}

static void test_secrets_borrowed_in_order(void **state)
{
	char json[] = "{\"region\":\"eu\"}";
	char name0[] = "token", value0[] = "s3cret";
	struct drv_backend_config_buf b;
	assert_int_equal(drv_backend_config_init(&b, json, 2), 0);
	drv_backend_config_set_secret(&b, 0, name0, value0);
	drv_backend_config_set_secret(&b, 1, "empty", NULL);
	/* Borrowed, not copied: the message points at the caller's strings. */
	assert_ptr_equal(b.msg.config_json, json);
	assert_ptr_equal(b.msg.secrets[0]->key, name0);
	assert_ptr_equal(b.msg.secrets[0]->value, value0);

	drv_backend_config *got = round_trip(&b.msg);
	assert_string_equal(got->config_json, "{\"region\":\"eu\"}");
	assert_int_equal(got->n_secrets, 2);
	assert_string_equal(got->secrets[0]->key, "token");
	assert_string_equal(got->secrets[0]->value, "s3cret");
	assert_string_equal(got->secrets[1]->key, "empty");
	assert_string_equal(got->secrets[1]->value, "");
	drover__compute__v1__backend_config__free_unpacked(got, NULL);

	drv_backend_config_clear(&b);
	assert_int_equal(b.msg.n_secrets, 0);
	assert_null(b.msg.secrets);
	drv_backend_config_clear(&b); /* twice is harmless */
}

static void test_no_config_no_secrets(void **state)
{
	struct drv_backend_config_buf b;
	assert_int_equal(drv_backend_config_init(&b, NULL, 0), 0);
	assert_string_equal(b.msg.config_json, "{}");
	assert_int_equal(b.msg.n_secrets, 0);
	assert_null(b.mem_); /* nothing allocated */
	drv_backend_config *got = round_trip(&b.msg);
	assert_string_equal(got->config_json, "{}");
	assert_int_equal(got->n_secrets, 0);
	drover__compute__v1__backend_config__free_unpacked(got, NULL);
	drv_backend_config_clear(&b);
}

static void test_unfilled_secret_is_empty(void **state)
{
	/* A secret the caller did not set packs as ("", ""), never as a NULL string. */
	struct drv_backend_config_buf b;
	assert_int_equal(drv_backend_config_init(&b, "{}", 1), 0);
	drv_backend_config *got = round_trip(&b.msg);
	assert_string_equal(got->secrets[0]->key, "");
	assert_string_equal(got->secrets[0]->value, "");
	drover__compute__v1__backend_config__free_unpacked(got, NULL);
	drv_backend_config_clear(&b);
}

static void test_too_many_secrets(void **state)
{
	/* A count whose array size overflows, or that no heap holds, is DRV_ENOMEM with nothing to free. */
	struct drv_backend_config_buf b;
	assert_int_equal(drv_backend_config_init(&b, "{}", SIZE_MAX / 2), DRV_ENOMEM);
	assert_int_equal(b.msg.n_secrets, 0);
	drv_backend_config_clear(&b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_secrets_borrowed_in_order),
	    cmocka_unit_test(test_no_config_no_secrets),
	    cmocka_unit_test(test_unfilled_secret_is_empty),
	    cmocka_unit_test(test_too_many_secrets),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
