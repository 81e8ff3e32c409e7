/*
 * Internal: a faster protobuf wire codec over protobuf-c's own descriptors
 * and structs (codec.c).
 *
 * protobuf-c stays the reference. These functions take the common, canonical
 * case (proto3 messages, no unknown fields, every field once) and decline
 * everything else, so that the caller hands the input to protobuf-c, whose
 * answer then counts. When they do not decline, the result is exactly
 * protobuf-c's: the same bytes from a pack, the same struct contents from an
 * unpack.
 */
#ifndef DRV_CODEC_H
#define DRV_CODEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>

/*
 * Packs `m` into one malloc'd block: the packed bytes are the *len bytes at
 * *start, inside the returned block, which the caller frees with free().
 * NULL when declined (a proto2 required field, a big-endian host) or out of
 * memory: the caller then packs with protobuf-c.
 */
uint8_t *drv__codec_pack(const ProtobufCMessage *m, uint8_t **start, size_t *len);

/*
 * The same, starting in the caller's `buf` of `cap` bytes: returns `buf`
 * itself when the message fit there, else a malloc'd block as above.
 */
uint8_t *drv__codec_pack_buf(const ProtobufCMessage *m, uint8_t *buf, size_t cap, uint8_t **start,
                             size_t *len);

/*
 * Unpacks `len` bytes as a message of type `desc` into `msg` (desc->
 * sizeof_message bytes, initialised here). Every string, array and
 * sub-message comes from `alloc`, which is an arena: nothing is freed one by
 * one, and what a declined attempt took is simply left there. Returns false
 * when declined (unknown fields, a field given twice where protobuf-c would
 * merge, a non-canonical encoding, malformed bytes) or out of memory: the
 * caller then unpacks with protobuf-c, whose answer counts.
 */
bool drv__codec_unpack(const ProtobufCMessageDescriptor *desc, void *msg, ProtobufCAllocator *alloc,
                       size_t len, const uint8_t *data);

/*
 * The same; a long repeated message field of the top-level message may be
 * split, its second half unpacked by a helper thread with `alloc2` (another
 * arena: neither is used from two threads). Both must live as long as the
 * message.
 */
bool drv__codec_unpack_split(const ProtobufCMessageDescriptor *desc, void *msg, ProtobufCAllocator *alloc,
                             ProtobufCAllocator *alloc2, size_t len, const uint8_t *data);

/* How often each path was taken in this process, for tests. */
struct drv__codec_stats {
	uint64_t packs, packs_declined;
	uint64_t unpacks, unpacks_declined;
	uint64_t packs_split, unpacks_split; /* half done on the helper thread */
	/* splits where the caller finished what did not fit in the helper's buffer or block */
	uint64_t packs_split_rest, unpacks_split_rest;
};
void drv__codec_stats(struct drv__codec_stats *out);

/*
 * Tests only: the helper thread's buffer (pack) and block (unpack) get this
 * many bytes instead of an estimate, so that the path where the caller
 * finishes what did not fit runs. 0 restores the estimates.
 */
void drv__codec_small_halves(size_t bytes);

#endif
