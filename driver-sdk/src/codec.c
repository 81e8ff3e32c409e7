/* Placeholder until the codec lands: declines everything. */
#include "codec.h"

#include <stdatomic.h>

static _Atomic uint64_t n_packs_declined, n_unpacks_declined;

uint8_t *drv__codec_pack(const ProtobufCMessage *m, uint8_t **start, size_t *len)
{
	(void)m;
	(void)start;
	(void)len;
	atomic_fetch_add_explicit(&n_packs_declined, 1, memory_order_relaxed);
	return NULL;
}

bool drv__codec_unpack(const ProtobufCMessageDescriptor *desc, void *msg, ProtobufCAllocator *alloc,
                       size_t len, const uint8_t *data)
{
	(void)desc;
	(void)msg;
	(void)alloc;
	(void)len;
	(void)data;
	atomic_fetch_add_explicit(&n_unpacks_declined, 1, memory_order_relaxed);
	return false;
}

void drv__codec_stats(struct drv__codec_stats *out)
{
	out->packs = 0;
	out->unpacks = 0;
	out->packs_declined = atomic_load(&n_packs_declined);
	out->unpacks_declined = atomic_load(&n_unpacks_declined);
}
