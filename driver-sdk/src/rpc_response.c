/*
 * Responses unpacked into an arena. protobuf-c's default unpack makes one
 * malloc per string, sub-message and repeated array, and its free walks them
 * all again: for 1,000 offers that is some 6,000 mallocs and frees, about as
 * much work as the parsing itself. A response is instead unpacked into a
 * chunked arena that goes away in one drv_response_free().
 *
 * The top-level struct is copied into the block that holds the arena, right
 * behind it, so the free finds the arena from the message pointer alone.
 * Copying it is safe: a generated message struct has no pointers into itself.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "drv_internal.h"
#include "rpc_response.h"

#define OWNED_MAGIC 0x64727672u /* "drvr" */

struct owned {
	uint32_t magic;
	struct drv__arena arena;
	_Alignas(max_align_t) unsigned char msg[];
};

static void *arena_alloc(void *data, size_t size)
{
	return drv__arena_alloc_raw(data, size);
}

/* The arena frees everything at once; protobuf-c's frees of scratch space are no-ops. */
static void arena_free(void *data, void *ptr)
{
	(void)data;
	(void)ptr;
}

ProtobufCMessage *drv__response_unpack(const ProtobufCMessageDescriptor *desc, size_t len,
                                       const uint8_t *data)
{
	struct owned *o = malloc(sizeof(*o) + desc->sizeof_message);

	if (!o)
		return NULL;
	o->magic = OWNED_MAGIC;
	drv__arena_init(&o->arena);
	/* The unpacked structs take about four times the wire size. */
	drv__arena_size_hint(&o->arena, len > SIZE_MAX / 4 ? SIZE_MAX : len * 4);
	ProtobufCAllocator alloc = {.alloc = arena_alloc, .free = arena_free, .allocator_data = &o->arena};
	ProtobufCMessage *m = protobuf_c_message_unpack(desc, &alloc, len, data);
	if (!m) {
		drv__arena_release(&o->arena);
		free(o);
		return NULL;
	}
	memcpy(o->msg, m, desc->sizeof_message);
	return (ProtobufCMessage *)o->msg;
}

void drv_response_free(void *resp)
{
	if (!resp)
		return;
	struct owned *o = (struct owned *)((unsigned char *)resp - offsetof(struct owned, msg));
	/* A message from anywhere else is a programmer error that would corrupt the heap: stop here. */
	if (o->magic != OWNED_MAGIC)
		abort();
	o->magic = 0;
	drv__arena_release(&o->arena);
	free(o);
}
