/*
 * Helpers shared by the sim driver's unit tests: a real arena for response
 * messages, temp directories, and request builders.
 */
#ifndef SIM_TEST_UTIL_H
#define SIM_TEST_UTIL_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sim_core.h"

/* Every block is freed at once by test_arena_free(). */
struct test_arena {
	struct sim_arena a;
	void **blocks;
	size_t n, cap;
};

static void *test_arena_alloc(void *ctx, size_t size)
{
	struct test_arena *t = ctx;
	if (t->n == t->cap) {
		t->cap = t->cap ? t->cap * 2 : 64;
		t->blocks = realloc(t->blocks, t->cap * sizeof(*t->blocks));
		if (!t->blocks)
			abort();
	}
	void *p = calloc(1, size ? size : 1);
	if (!p)
		abort();
	t->blocks[t->n++] = p;
	return p;
}

static inline void test_arena_init(struct test_arena *t)
{
	memset(t, 0, sizeof(*t));
	t->a.alloc = test_arena_alloc;
	t->a.ctx = t;
}

static inline void test_arena_free(struct test_arena *t)
{
	for (size_t i = 0; i < t->n; i++)
		free(t->blocks[i]);
	free(t->blocks);
	t->blocks = NULL;
	t->n = t->cap = 0;
}

/* A fresh private directory under $TMPDIR (or /tmp); the caller removes it with rm_rf. */
static inline char *make_temp_dir(void)
{
	const char *base = getenv("TMPDIR");
	char *path;
	if (asprintf(&path, "%s/drover-sim-test-XXXXXX", base && *base ? base : "/tmp") < 0 || !mkdtemp(path))
		abort();
	return path;
}

static inline void rm_rf(const char *path)
{
	char *cmd;
	if (asprintf(&cmd, "rm -rf '%s'", path) < 0)
		abort();
	if (system(cmd) != 0)
		fprintf(stderr, "warning: could not remove %s\n", path);
	free(cmd);
}

/* A CreateInstance request for (type, region, spot) with an idempotency key, in the arena. */
static inline drv_create_instance_request *make_create(struct test_arena *t, const char *type,
                                                       const char *region, bool spot, const char *key)
{
	drv_create_instance_request *req = sim_new(&t->a, create_instance_request);
	req->offer = sim_new(&t->a, offer);
	req->offer->instance_type = sim_arena_strdup(&t->a, type);
	req->offer->region = sim_arena_strdup(&t->a, region);
	req->offer->resources = sim_new(&t->a, resources);
	req->offer->resources->spot = spot;
	req->instance = sim_new(&t->a, instance_configuration);
	req->instance->idempotency_key = sim_arena_strdup(&t->a, key ? key : "");
	req->instance->name = sim_arena_strdup(&t->a, key ? key : "");
	return req;
}

static inline void add_tag(struct test_arena *t, drv_instance_configuration *conf, const char *k,
                           const char *v)
{
	drv_tag_entry **tags = sim_arena_alloc(&t->a, (conf->n_tags + 1) * sizeof(*tags));
	for (size_t i = 0; i < conf->n_tags; i++)
		tags[i] = conf->tags[i];
	drv_tag_entry *e =
	    sim_arena_message(&t->a, &drover__compute__v1__instance_configuration__tags_entry__descriptor);
	e->key = sim_arena_strdup(&t->a, k);
	e->value = sim_arena_strdup(&t->a, v);
	tags[conf->n_tags++] = e;
	conf->tags = tags;
}

#endif
