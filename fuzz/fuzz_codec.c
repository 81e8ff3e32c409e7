/*
 * The SDK's protobuf codec and arena unpack (driver-sdk/src/codec.c,
 * rpc_response.c) against protobuf-c's own unpack of the same bytes. Every
 * answer a driver sends and every request droverd sends a driver is unpacked
 * this way.
 *
 * Input: one byte choosing the message type (a request or response of the
 * Compute, Health or droverd API service, or one of the codec test's protos,
 * which use every field type), then the bytes to unpack. What must hold:
 *  - when the codec does not decline, protobuf-c accepts the bytes too, and
 *    both results are equal field by field (msg_equal.c), and the codec packs
 *    its result to the bytes protobuf-c packs;
 *  - drv__response_unpack (codec, then protobuf-c into the arena when the
 *    codec declines) accepts exactly what protobuf-c accepts, with the same
 *    result.
 * A difference aborts, which libFuzzer reports as a crash.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"
#include "codec_test2.pb-c.h"
#include "codec_test3.pb-c.h"
#include "drover/api/v1/api.pb-c.h"
#include "drover/compute/v1/compute.pb-c.h"
#include "drv_internal.h"
#include "grpc/health/v1/health.pb-c.h"
#include "msg_equal.h"
#include "rpc_response.h"

#define MAX_TYPES 256

static const ProtobufCMessageDescriptor *types[MAX_TYPES];
static size_t n_types;

static void add(const ProtobufCMessageDescriptor *d)
{
	for (size_t i = 0; i < n_types; i++)
		if (types[i] == d)
			return;
	if (n_types < MAX_TYPES)
		types[n_types++] = d;
}

static void add_service(const ProtobufCServiceDescriptor *s)
{
	for (unsigned i = 0; i < s->n_methods; i++) {
		add(s->methods[i].input);
		add(s->methods[i].output);
	}
}

static void *arena_raw(void *data, size_t size)
{
	return drv__arena_alloc_raw(data, size);
}

static void arena_free(void *data, void *ptr)
{
	(void)data;
	(void)ptr;
}

static void differ(const char *what, const ProtobufCMessageDescriptor *d, const char *where)
{
	fprintf(stderr, "fuzz_codec: %s: %s%s%s\n", d->name, what, where ? " at " : "", where ? where : "");
	abort();
}

static uint8_t *pbc_pack(const ProtobufCMessage *m, size_t *len)
{
	*len = protobuf_c_message_get_packed_size(m);
	uint8_t *b = malloc(*len ? *len : 1);
	if (!b || protobuf_c_message_pack(m, b) != *len)
		abort();
	return b;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (!n_types) {
		add_service(&drover__compute__v1__compute__descriptor);
		add_service(&drover__api__v1__drover__descriptor);
		add_service(&grpc__health__v1__health__descriptor);
		add_service(&drover__codectest__codec_test__descriptor);
		add_service(&drover__codectest2__codec_test2__descriptor);
	}
	if (size < 1)
		return 0;
	const ProtobufCMessageDescriptor *d = types[data[0] % n_types];
	data++;
	size--;
	char where[1024];

	ProtobufCMessage *ref = protobuf_c_message_unpack(d, NULL, size, data);

	struct drv__arena arena;
	drv__arena_init(&arena);
	ProtobufCAllocator alloc = {.alloc = arena_raw, .free = arena_free, .allocator_data = &arena};
	ProtobufCMessage *msg = drv__arena_alloc(&arena, d->sizeof_message);
	if (!msg)
		abort();
	if (drv__codec_unpack(d, msg, &alloc, size, data)) {
		if (!ref)
			differ("the codec unpacked bytes protobuf-c rejects", d, NULL);
		if (!pbc_msg_equal(ref, msg, d->name, where, sizeof(where)))
			differ("the codec's unpack differs from protobuf-c's", d, where);
		uint8_t *start;
		size_t len, want_len;
		uint8_t *block = drv__codec_pack(msg, &start, &len), *want = pbc_pack(ref, &want_len);
		if (block && (len != want_len || memcmp(start, want, len) != 0))
			differ("the codec packs its result differently from protobuf-c", d, NULL);
		free(block);
		free(want);
	}
	drv__arena_release(&arena);

	ProtobufCMessage *resp = drv__response_unpack(d, size, data);
	if (!resp != !ref)
		differ(resp ? "drv__response_unpack accepted bytes protobuf-c rejects"
		            : "drv__response_unpack rejected bytes protobuf-c accepts",
		       d, NULL);
	if (resp && !pbc_msg_equal(ref, resp, d->name, where, sizeof(where)))
		differ("drv__response_unpack's result differs from protobuf-c's", d, where);
	drv_response_free(resp);
	if (ref)
		protobuf_c_message_free_unpacked(ref, NULL);
	return 0;
}
