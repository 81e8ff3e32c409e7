/*
 * The SDK's one allocator. Every heap block the SDK itself asks for comes
 * from these functions, so a test can make the N-th allocation fail and prove
 * that each failure reaches the caller as DRV_ENOMEM (nghttp2's habit; see
 * STYLE.md, habit 15). Blocks are plain malloc blocks: free() releases them,
 * and memory from other libraries (jansson's json_dumps, strdup in tests) may
 * be mixed with them.
 *
 * gRPC's and libuv's own allocations are not ours to hook; protobuf-c's are,
 * through drv__protobuf_allocator wherever the SDK unpacks or frees a message.
 */
#ifndef DRV_ALLOC_H
#define DRV_ALLOC_H

#include <stdbool.h>
#include <stddef.h>

#include <protobuf-c/protobuf-c.h>

void *drv__malloc(size_t size);
void *drv__calloc(size_t n, size_t size);
/* On failure the old block is left as it was. */
void *drv__realloc(void *ptr, size_t size);
char *drv__strdup(const char *s);

/*
 * Allocations that failed on the calling thread so far. protobuf-c answers
 * NULL both for bytes that are not a message and for no memory; comparing
 * this count before and after tells the two apart.
 */
unsigned long drv__alloc_failures(void);

/* drv__malloc and free for protobuf-c's unpack and free_unpacked. */
extern ProtobufCAllocator drv__protobuf_allocator;

/*
 * For tests only: `fail` runs before every allocation above, on whichever
 * thread allocates, and a true answer makes that allocation fail. NULL
 * removes the hook. Install and remove it while no SDK thread allocates
 * (no host, server or call alive), since a running allocation may still see
 * the hook it read just before.
 */
typedef bool (*drv__alloc_fail_fn)(void *ud, size_t size);
void drv__alloc_set_hook(drv__alloc_fail_fn fail, void *ud);

#endif
