/*
 * The SDK's one allocator (alloc.h): libc's, behind a test hook. Reading the
 * hook is one relaxed atomic load, so drivers pay nothing measurable for it.
 */
#include "alloc.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

struct hook {
	drv__alloc_fail_fn fail;
	void *ud;
};

static struct hook installed;
static _Atomic(const struct hook *) current;

void drv__alloc_set_hook(drv__alloc_fail_fn fail, void *ud)
{
	atomic_store(&current, NULL);
	installed.fail = fail;
	installed.ud = ud;
	if (fail)
		atomic_store(&current, &installed);
}

static _Thread_local unsigned long failures;

unsigned long drv__alloc_failures(void)
{
	return failures;
}

static bool refused(size_t size)
{
	const struct hook *h = atomic_load_explicit(&current, memory_order_acquire);
	return h && h->fail(h->ud, size);
}

static void *counted(void *p)
{
	if (!p)
		failures++;
	return p;
}

void *drv__malloc(size_t size)
{
	return counted(refused(size) ? NULL : malloc(size));
}

void *drv__calloc(size_t n, size_t size)
{
	return counted(refused(n * size) ? NULL : calloc(n, size));
}

void *drv__realloc(void *ptr, size_t size)
{
	return counted(refused(size) ? NULL : realloc(ptr, size));
}

char *drv__strdup(const char *s)
{
	size_t n = strlen(s) + 1;
	char *d = drv__malloc(n);
	return d ? memcpy(d, s, n) : NULL;
}

static void *pb_alloc(void *ud, size_t size)
{
	(void)ud;
	return drv__malloc(size);
}

static void pb_free(void *ud, void *ptr)
{
	(void)ud;
	free(ptr);
}

ProtobufCAllocator drv__protobuf_allocator = {.alloc = pb_alloc, .free = pb_free, .allocator_data = NULL};
