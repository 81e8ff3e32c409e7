/*
 * The per-call arena: a chunked bump allocator. Handlers build responses of
 * thousands of small messages; allocating each from malloc and freeing each
 * afterwards would cost more than packing them.
 */
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "drv_internal.h"

#define ALIGN _Alignof(max_align_t)
#define FIRST_CHUNK 4096
#define MIN_CHUNK 512
#define MAX_CHUNK (1024 * 1024)

struct drv__arena_chunk {
	struct drv__arena_chunk *next;
	size_t size; /* usable bytes in data */
	size_t used;
	_Alignas(max_align_t) unsigned char data[];
};

static size_t round_up(size_t n)
{
	return (n + ALIGN - 1) & ~(size_t)(ALIGN - 1);
}

static struct drv__arena_chunk *chunk_new(struct drv__arena *a, size_t size)
{
	if (size > SIZE_MAX - sizeof(struct drv__arena_chunk))
		return NULL;
	struct drv__arena_chunk *c = drv__malloc(sizeof(*c) + size);
	if (!c)
		return NULL;
	c->next = NULL;
	c->size = size;
	c->used = 0;
	a->total += sizeof(*c) + size;
	return c;
}

void drv__arena_init(struct drv__arena *a)
{
	memset(a, 0, sizeof(*a));
	a->next_size = FIRST_CHUNK;
}

static void *arena_take(struct drv__arena *a, size_t size, bool zero);

void *drv__arena_alloc(struct drv__arena *a, size_t size)
{
	return arena_take(a, size, true);
}

void *drv__arena_alloc_raw(struct drv__arena *a, size_t size)
{
	return arena_take(a, size, false);
}

void drv__arena_size_hint(struct drv__arena *a, size_t bytes)
{
	/*
	 * The first chunk is the hint rounded up to 512 bytes, not to a power of
	 * two: a 600 KB response in a 1 MB chunk wasted 40% of a heap that a
	 * server keeps once it has grown.
	 */
	size_t n = bytes < MIN_CHUNK ? MIN_CHUNK : bytes > MAX_CHUNK ? MAX_CHUNK : bytes;

	n = (n + MIN_CHUNK - 1) & ~(size_t)(MIN_CHUNK - 1);
	if (!a->head)
		a->next_size = n;
}

static void *arena_take(struct drv__arena *a, size_t size, bool zero)
{
	if (size > SIZE_MAX - ALIGN)
		return NULL;
	size_t need = round_up(size ? size : 1);
	struct drv__arena_chunk *c = a->head;

	if (!c || c->size - c->used < need) {
		if (a->next_size == 0)
			a->next_size = FIRST_CHUNK;
		/*
		 * A large request gets a chunk of its own so it neither wastes the
		 * rest of the current chunk nor inflates the growth sequence.
		 */
		if (need > a->next_size / 4) {
			struct drv__arena_chunk *big = chunk_new(a, need);
			if (!big)
				return NULL;
			big->used = need;
			big->next = a->big;
			a->big = big;
			if (zero)
				memset(big->data, 0, need);
			return big->data;
		}
		c = chunk_new(a, a->next_size);
		if (!c)
			return NULL;
		c->next = a->head;
		a->head = c;
		if (a->next_size < MAX_CHUNK)
			a->next_size *= 2;
	}
	void *p = c->data + c->used;
	c->used += need;
	if (zero)
		memset(p, 0, need);
	return p;
}

char *drv__arena_strdup(struct drv__arena *a, const char *s)
{
	if (!s)
		return NULL;
	size_t n = strlen(s);
	char *p = drv__arena_alloc(a, n + 1);
	if (p)
		memcpy(p, s, n);
	return p;
}

char *drv__arena_vprintf(struct drv__arena *a, const char *fmt, va_list ap)
{
	struct drv__arena_chunk *c = a->head;
	va_list ap2;
	int n;

	/*
	 * Format straight into the free tail of the current chunk: handlers
	 * printf thousands of short names, and a second formatting pass to
	 * measure first would double the cost.
	 */
	if (c && c->size - c->used > 1) {
		char *p = (char *)c->data + c->used;
		size_t room = c->size - c->used;
		va_copy(ap2, ap);
		n = vsnprintf(p, room, fmt, ap2);
		va_end(ap2);
		if (n < 0)
			return NULL;
		if ((size_t)n < room) {
			c->used += round_up((size_t)n + 1);
			if (c->used > c->size)
				c->used = c->size;
			return p;
		}
	} else {
		va_copy(ap2, ap);
		n = vsnprintf(NULL, 0, fmt, ap2);
		va_end(ap2);
		if (n < 0)
			return NULL;
	}
	char *p = drv__arena_alloc(a, (size_t)n + 1);
	if (p)
		vsnprintf(p, (size_t)n + 1, fmt, ap);
	return p;
}

static void free_list(struct drv__arena_chunk *c)
{
	while (c) {
		struct drv__arena_chunk *next = c->next;
		free(c);
		c = next;
	}
}

void drv__arena_release(struct drv__arena *a)
{
	free_list(a->head);
	free_list(a->big);
	drv__arena_init(a);
}
