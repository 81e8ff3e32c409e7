/* Small helpers shared by the sim core: arena, copies, errors, config defaults, clock. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "drover/offer_check.h"
#include "sim_core.h"
#include "xalloc.h"

void *sim_arena_alloc(struct sim_arena *a, size_t size)
{
	void *p = a->alloc(a->ctx, size);
	if (!p)
		xalloc_die("an answer in the call's arena", size);
	return p;
}

char *sim_arena_strdup(struct sim_arena *a, const char *s)
{
	if (!s)
		s = "";
	size_t n = strlen(s) + 1;
	return memcpy(sim_arena_alloc(a, n), s, n);
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
	cfg->terminated_retention_ms = (int64_t)SIM_DEFAULT_TERMINATED_RETENTION_S * 1000;
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
	protobuf_c_message_init(desc, m);
	return m;
}

bool sim_utf8_valid(const char *s)
{
	for (const char *p = s ? s : ""; *p;) {
		size_t n = drv_utf8_len(p);
		if (n == 0)
			return false;
		p += n;
	}
	return true;
}

int sim_check_text(struct sim_err *e, const char *field, const char *s)
{
	if (!sim_utf8_valid(s))
		return sim_fail(e, DRV_EINVAL, "%s is not valid UTF-8", field);
	return 0;
}

int sim_check_tag(struct sim_err *e, const char *field, size_t i, const char *key, const char *value)
{
	if (!sim_utf8_valid(key) || !sim_utf8_valid(value))
		return sim_fail(e, DRV_EINVAL, "%s[%zu] (key or value) is not valid UTF-8", field, i);
	return 0;
}
