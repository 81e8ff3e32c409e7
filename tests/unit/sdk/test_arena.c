/* Tests of arena.c, the per-call bump allocator. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "drv_internal.h"

static void test_alignment_and_zero(void **state)
{
	struct drv__arena a;
	drv__arena_init(&a);
	for (size_t size = 0; size < 100; size++) {
		unsigned char *p = drv__arena_alloc(&a, size);
		assert_non_null(p);
		assert_int_equal((uintptr_t)p % _Alignof(max_align_t), 0);
		for (size_t i = 0; i < size; i++)
			assert_int_equal(p[i], 0);
		memset(p, 0xab, size);
	}
	/* Zero-size allocations are distinct pointers. */
	void *z1 = drv__arena_alloc(&a, 0), *z2 = drv__arena_alloc(&a, 0);
	assert_ptr_not_equal(z1, z2);
	drv__arena_release(&a);
	assert_null(a.head);
	assert_int_equal(a.total, 0);
}

static void test_large(void **state)
{
	struct drv__arena a;
	drv__arena_init(&a);
	char *small = drv__arena_alloc(&a, 16);
	strcpy(small, "kept");
	unsigned char *big = drv__arena_alloc(&a, 10u * 1024 * 1024);
	assert_non_null(big);
	assert_int_equal(big[0], 0);
	assert_int_equal(big[10u * 1024 * 1024 - 1], 0);
	memset(big, 1, 10u * 1024 * 1024);
	/* The current chunk survives a large allocation. */
	char *after = drv__arena_alloc(&a, 16);
	assert_true(after > small && after < small + 4096);
	assert_string_equal(small, "kept");
	assert_null(drv__arena_alloc(&a, SIZE_MAX));
	assert_null(drv__arena_alloc(&a, SIZE_MAX - 8));
	drv__arena_release(&a);
}

static void test_many_small(void **state)
{
	struct drv__arena a;
	drv__arena_init(&a);
	enum { N = 200000 };
	static uint32_t *ptrs[N];
	for (uint32_t i = 0; i < N; i++) {
		ptrs[i] = drv__arena_alloc(&a, sizeof(uint32_t) * (1 + i % 7));
		assert_non_null(ptrs[i]);
		ptrs[i][0] = i;
	}
	for (uint32_t i = 0; i < N; i++)
		assert_int_equal(ptrs[i][0], i);
	/* Chunks grow: 200,000 allocations take far fewer than 200,000 mallocs' overhead. */
	assert_true(a.total < (size_t)N * 48);
	drv__arena_release(&a);
	/* Reusable after release. */
	assert_non_null(drv__arena_alloc(&a, 8));
	drv__arena_release(&a);
}

static char *vp(struct drv__arena *a, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	char *s = drv__arena_vprintf(a, fmt, ap);
	va_end(ap);
	return s;
}

static void test_strings(void **state)
{
	struct drv__arena a;
	drv__arena_init(&a);
	/* printf into an empty arena, then one that just fits the chunk's tail, then one that does not. */
	assert_string_equal(vp(&a, "%d", 7), "7");
	char fill[5000];
	memset(fill, 'f', sizeof(fill));
	fill[4096 - 32 - 1] = '\0';
	char *tail = vp(&a, "%s", fill);
	assert_string_equal(tail, fill);
	char *after = vp(&a, "%s-%s", "next", "chunk");
	assert_string_equal(after, "next-chunk");
	assert_string_equal(tail, fill);
	assert_int_equal((uintptr_t)after % _Alignof(max_align_t), 0);
	assert_string_equal(drv__arena_strdup(&a, "hello"), "hello");
	assert_null(drv__arena_strdup(&a, NULL));
	char *s = vp(&a, "%s-%d-%05.1f", "x", 42, 3.14159);
	assert_string_equal(s, "x-42-003.1");
	char big[9000];
	memset(big, 'q', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	assert_string_equal(vp(&a, "%s", big), big);
	drv__arena_release(&a);
}

static void test_call_helpers(void **state)
{
	static const struct drv_driver d = {.version = DRV_DRIVER_V1, .type = "t"};
	struct drv_call call;
	drv__call_init(&call, &d, NULL, "GetOffers");
	/* 10,000 offers with resources and a GPU each, as a handler would build them. */
	drv_get_offers_response *resp =
	    drv_call_message(&call, &drover__compute__v1__get_offers_response__descriptor);
	resp->offers = drv_call_ptrs(&call, 10000);
	for (int i = 0; i < 10000; i++) {
		drv_offer *o = drv_new(&call, offer);
		assert_non_null(o);
		assert_ptr_equal(o->base.descriptor, &drover__compute__v1__offer__descriptor);
		o->instance_type = drv_call_printf(&call, "type-%d", i);
		o->resources = drv_new(&call, resources);
		o->resources->gpus = drv_call_ptrs(&call, 1);
		o->resources->gpus[0] = drv_new(&call, gpu);
		o->resources->n_gpus = 1;
		o->price_per_hour = 1;
		resp->offers[resp->n_offers++] = o;
	}
	size_t packed = protobuf_c_message_get_packed_size(&resp->base);
	assert_true(packed > 10000 * 10);
	assert_string_equal(resp->offers[9999]->instance_type, "type-9999");
	assert_string_equal(drv_call_strdup(&call, NULL), "");
	assert_string_equal(drv_call_method(&call), "GetOffers");
	assert_int_equal(drv_call_time_left_ms(&call), INT64_MAX);
	assert_false(drv_call_cancelled(&call));
	assert_int_equal(drv_call_fail(&call, DRV_ENOCAPACITY, "no %s left", "H100"), DRV_ENOCAPACITY);
	assert_string_equal(call.fail_message, "no H100 left");
	drv__call_release(&call);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_alignment_and_zero), cmocka_unit_test(test_large),
	    cmocka_unit_test(test_many_small),         cmocka_unit_test(test_strings),
	    cmocka_unit_test(test_call_helpers),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
