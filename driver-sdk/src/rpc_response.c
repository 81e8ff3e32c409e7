/*
 * Responses unpacked into an arena. protobuf-c's default unpack makes one
 * malloc per string, sub-message and repeated array, and its free walks them
 * all again: for 1,000 offers that is some 6,000 mallocs and frees, about as
 * much work as the parsing itself. A response is instead unpacked into a
 * chunked arena that goes away in one drv_response_free().
 *
 * The SDK's codec (codec.c) unpacks it, straight into the block that holds
 * the arena, right behind it, so the free finds the arena from the message
 * pointer alone; a second arena takes the half of a long answer that the
 * codec's helper thread unpacks. When the codec declines, protobuf-c unpacks
 * into the arena and the top-level struct is copied into that block (safe: a
 * generated message struct has no pointers into itself).
 *
 * A program that forwards parts of some responses verbatim can ask for their
 * received bytes to be kept too (drv_response_keep_bytes()): one copy into
 * the same arena, so the bytes live and die with the message. Every other
 * response pays nothing for it.
 */
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "codec.h"
#include "drv_internal.h"
#include "rpc_response.h"

#define OWNED_MAGIC 0x64727672u /* "drvr" */

/* Message types whose responses keep their bytes; set rarely, read on every unpack. */
#define MAX_KEEP 8
static _Atomic(const ProtobufCMessageDescriptor *) keep_types[MAX_KEEP];

struct owned {
	uint32_t magic;
	struct drv__arena arena;
	struct drv__arena arena2; /* for the half a helper thread unpacks (codec.h) */
	const uint8_t *bytes;     /* in the arena; NULL unless the type keeps its bytes */
	size_t n_bytes;
	_Alignas(max_align_t) unsigned char msg[];
};

/* Both the codec and protobuf-c's fallback take their blocks straight from an arena (a bump allocator). */
static void *arena_raw(void *data, size_t size)
{
	return drv__arena_alloc_raw(data, size);
}

/* The arena frees everything at once; protobuf-c's frees of scratch space are no-ops. */
static void arena_free(void *data, void *ptr)
{
	(void)data;
	(void)ptr;
}

int drv_response_keep_bytes(const ProtobufCMessageDescriptor *desc)
{
	for (size_t i = 0; i < MAX_KEEP; i++) {
		const ProtobufCMessageDescriptor *cur = atomic_load(&keep_types[i]);
		if (cur == desc)
			return 0;
		if (!cur && atomic_compare_exchange_strong(&keep_types[i], &cur, desc))
			return 0;
		if (cur == desc) /* another thread registered it first */
			return 0;
	}
	return DRV_ENOMEM;
}

static bool keeps_bytes(const ProtobufCMessageDescriptor *desc)
{
	for (size_t i = 0; i < MAX_KEEP; i++) {
		const ProtobufCMessageDescriptor *cur =
		    atomic_load_explicit(&keep_types[i], memory_order_relaxed);
		if (!cur)
			return false;
		if (cur == desc)
			return true;
	}
	return false;
}

static void release(struct owned *o)
{
	o->magic = 0;
	drv__arena_release(&o->arena);
	drv__arena_release(&o->arena2);
	free(o);
}

ProtobufCMessage *drv__response_unpack(const ProtobufCMessageDescriptor *desc, size_t len,
                                       const uint8_t *data)
{
	struct owned *o = drv__malloc(sizeof(*o) + desc->sizeof_message);

	if (!o)
		return NULL;
	o->magic = OWNED_MAGIC;
	o->bytes = NULL;
	o->n_bytes = 0;
	drv__arena_init(&o->arena);
	drv__arena_init(&o->arena2);
	bool keep = keeps_bytes(desc);
	/*
	 * The unpacked structs take about three times the wire size, the kept
	 * bytes once more. A large message may be unpacked in two halves, one
	 * per arena.
	 */
	size_t factor = keep ? 4 : 3, hint = len > SIZE_MAX / factor ? SIZE_MAX : len * factor;
	if (len >= 32768) {
		drv__arena_size_hint(&o->arena2, hint / 2);
		hint = hint / 2 + (keep ? len : 0);
	}
	drv__arena_size_hint(&o->arena, hint + 4096);
	ProtobufCAllocator direct = {.alloc = arena_raw, .free = arena_free, .allocator_data = &o->arena};
	ProtobufCAllocator direct2 = {.alloc = arena_raw, .free = arena_free, .allocator_data = &o->arena2};
	if (!drv__codec_unpack_split(desc, o->msg, &direct, &direct2, len, data)) {
		/* Declined (rare: unknown fields, proto2, bad bytes): protobuf-c decides, in the same arena.
		 */
		ProtobufCMessage *m = protobuf_c_message_unpack(desc, &direct, len, data);
		if (!m) {
			release(o);
			return NULL;
		}
		memcpy(o->msg, m, desc->sizeof_message);
	}
	if (keep && len > 0) {
		uint8_t *copy = drv__arena_alloc_raw(&o->arena, len);
		if (!copy) {
			release(o);
			return NULL;
		}
		memcpy(copy, data, len);
		o->bytes = copy;
		o->n_bytes = len;
	}
	return (ProtobufCMessage *)o->msg;
}

static struct owned *owner(const void *resp)
{
	struct owned *o = (struct owned *)((unsigned char *)resp - offsetof(struct owned, msg));
	/* A message from anywhere else is a programmer error that would corrupt the heap: stop here. */
	if (o->magic != OWNED_MAGIC)
		abort();
	return o;
}

const uint8_t *drv_response_bytes(const void *resp, size_t *len)
{
	const struct owned *o = owner(resp);
	*len = o->n_bytes;
	return o->bytes;
}

void drv_response_free(void *resp)
{
	if (!resp)
		return;
	release(owner(resp));
}
