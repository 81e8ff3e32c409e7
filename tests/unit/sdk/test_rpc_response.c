/* Tests of rpc_response.c: responses unpacked into one arena, freed at once. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "drover/types.h"
#include "drv_internal.h"
#include "rpc_response.h"

#define N_OFFERS 1000

/* Packs a GetOffers answer of N_OFFERS offers with every kind of field set. */
static uint8_t *pack_offers(size_t *len)
{
	static char names[N_OFFERS][32];
	static drv_offer offers[N_OFFERS];
	static drv_offer *ptrs[N_OFFERS];
	static drv_resources res[N_OFFERS];
	static drv_gpu gpu = DROVER__COMPUTE__V1__GPU__INIT;
	static drv_gpu *gpus[1] = {&gpu};
	static char *zones[2] = {"z-a", "z-b"};
	drv_get_offers_response resp = DROVER__COMPUTE__V1__GET_OFFERS_RESPONSE__INIT;

	gpu.name = "H100";
	gpu.memory_mib = 81920;
	gpu.count = 8;
	for (int i = 0; i < N_OFFERS; i++) {
		drover__compute__v1__offer__init(&offers[i]);
		drover__compute__v1__resources__init(&res[i]);
		snprintf(names[i], sizeof(names[i]), "type-%d", i);
		res[i].cpus = (uint32_t)i + 1;
		res[i].n_gpus = i % 2;
		res[i].gpus = gpus;
		offers[i].backend_type = "sim";
		offers[i].instance_type = names[i];
		offers[i].region = "region-1";
		offers[i].n_zones = 2;
		offers[i].zones = zones;
		offers[i].price_per_hour = 0.5 + i;
		offers[i].resources = &res[i];
		ptrs[i] = &offers[i];
	}
	resp.n_offers = N_OFFERS;
	resp.offers = ptrs;
	*len = drover__compute__v1__get_offers_response__get_packed_size(&resp);
	uint8_t *buf = malloc(*len);
	assert_non_null(buf);
	drover__compute__v1__get_offers_response__pack(&resp, buf);
	return buf;
}

static void test_unpack_equals_default(void **state)
{
	(void)state;
	size_t len;
	uint8_t *buf = pack_offers(&len);
	const ProtobufCMessageDescriptor *d = &drover__compute__v1__get_offers_response__descriptor;

	drv_get_offers_response *a = (drv_get_offers_response *)drv__response_unpack(d, len, buf);
	drv_get_offers_response *b = drover__compute__v1__get_offers_response__unpack(NULL, len, buf);
	assert_non_null(a);
	assert_non_null(b);
	assert_int_equal(a->n_offers, N_OFFERS);
	for (size_t i = 0; i < a->n_offers; i++) {
		assert_string_equal(a->offers[i]->instance_type, b->offers[i]->instance_type);
		assert_string_equal(a->offers[i]->zones[1], "z-b");
		assert_int_equal(a->offers[i]->resources->cpus, i + 1);
		assert_int_equal(a->offers[i]->resources->n_gpus, i % 2);
		if (i % 2)
			assert_string_equal(a->offers[i]->resources->gpus[0]->name, "H100");
		assert_true(a->offers[i]->price_per_hour == b->offers[i]->price_per_hour);
	}
	/* Both pack back to the same bytes: nothing was lost or reordered. */
	size_t la = protobuf_c_message_get_packed_size(&a->base);
	assert_int_equal(la, len);
	uint8_t *again = malloc(la);
	assert_non_null(again);
	protobuf_c_message_pack(&a->base, again);
	assert_memory_equal(again, buf, len);
	free(again);
	drv_response_free(a);
	protobuf_c_message_free_unpacked(&b->base, NULL);
	free(buf);
}

static void test_bad_bytes_and_empty(void **state)
{
	(void)state;
	const ProtobufCMessageDescriptor *d = &drover__compute__v1__get_offers_response__descriptor;
	/* Field 1 (offers) claims 100 bytes that are not there. */
	static const uint8_t truncated[] = {0x0a, 0x64, 0x01};

	assert_null(drv__response_unpack(d, sizeof(truncated), truncated));
	ProtobufCMessage *m = drv__response_unpack(d, 0, (const uint8_t *)"");
	assert_non_null(m);
	assert_int_equal(((drv_get_offers_response *)m)->n_offers, 0);
	drv_response_free(m);
	drv_response_free(NULL);
}

/* Only registered types keep their bytes; a kept copy is exact and outlives the caller's buffer. */
static void test_keep_bytes(void **state)
{
	(void)state;
	size_t len, n;
	uint8_t *buf = pack_offers(&len);
	const ProtobufCMessageDescriptor *d = &drover__compute__v1__get_offers_response__descriptor;

	ProtobufCMessage *plain = drv__response_unpack(d, len, buf);
	assert_non_null(plain);
	assert_null(drv_response_bytes(plain, &n));
	assert_int_equal(n, 0);

	assert_int_equal(drv_response_keep_bytes(d), 0);
	assert_int_equal(drv_response_keep_bytes(d), 0); /* idempotent */
	ProtobufCMessage *kept = drv__response_unpack(d, len, buf);
	assert_non_null(kept);
	memset(buf, 0, len);
	const uint8_t *bytes = drv_response_bytes(kept, &n);
	assert_non_null(bytes);
	assert_int_equal(n, len);
	uint8_t *again = malloc(len);
	assert_non_null(again);
	protobuf_c_message_pack(kept, again);
	assert_memory_equal(again, bytes, len);
	free(again);

	/* Another type still keeps nothing. */
	ProtobufCMessage *other = drv__response_unpack(&drover__compute__v1__get_offers_request__descriptor,
	                                               0, (const uint8_t *)"");
	assert_non_null(other);
	assert_null(drv_response_bytes(other, &n));

	drv_response_free(other);
	drv_response_free(kept);
	drv_response_free(plain);
	free(buf);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_unpack_equals_default),
	    cmocka_unit_test(test_bad_bytes_and_empty),
	    cmocka_unit_test(test_keep_bytes),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
