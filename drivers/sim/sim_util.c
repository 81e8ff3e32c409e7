/* Small helpers shared by the sim core: arena, copies, errors, config defaults, clock. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "sim_core.h"

void *sim_arena_alloc(struct sim_arena *a, size_t size)
{
	return a->alloc(a->ctx, size);
}

char *sim_arena_strdup(struct sim_arena *a, const char *s)
{
	if (!s)
		s = "";
	size_t n = strlen(s) + 1;
	char *p = sim_arena_alloc(a, n);
	if (p)
		memcpy(p, s, n);
	return p;
}

char *sim_xstrdup(const char *s, bool *oom)
{
	char *p = strdup(s ? s : "");
	if (!p)
		*oom = true;
	return p;
}

int sim_fail(struct sim_err *e, int code, const char *fmt, ...)
{
	if (e) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(e->msg, sizeof(e->msg), fmt, ap);
		va_end(ap);
	}
	return code;
}

void sim_config_init(struct sim_config *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	cfg->capacity = SIM_DEFAULT_CAPACITY;
	cfg->seed = SIM_DEFAULT_SEED;
}

int64_t sim_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void *sim_arena_message(struct sim_arena *a, const ProtobufCMessageDescriptor *desc)
{
	void *m = sim_arena_alloc(a, desc->sizeof_message);
	if (m)
		protobuf_c_message_init(desc, m);
	return m;
}
