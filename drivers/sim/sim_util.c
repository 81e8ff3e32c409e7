/* Small helpers shared by the sim core: arena, copies, errors, config defaults, clock. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

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
	const unsigned char *p = (const unsigned char *)(s ? s : "");
	while (*p) {
		unsigned c = *p;
		size_t n;
		uint32_t cp, min;
		if (c < 0x80) {
			p++;
			continue;
		} else if ((c & 0xe0) == 0xc0) {
			n = 1, cp = c & 0x1f, min = 0x80;
		} else if ((c & 0xf0) == 0xe0) {
			n = 2, cp = c & 0x0f, min = 0x800;
		} else if ((c & 0xf8) == 0xf0) {
			n = 3, cp = c & 0x07, min = 0x10000;
		} else {
			return false;
		}
		for (size_t i = 1; i <= n; i++) {
			if ((p[i] & 0xc0) != 0x80) /* also stops at the terminating NUL */
				return false;
			cp = (cp << 6) | (p[i] & 0x3f);
		}
		/* Overlong forms, UTF-16 surrogates and values past U+10FFFF are not UTF-8. */
		if (cp < min || (cp >= 0xd800 && cp <= 0xdfff) || cp > 0x10ffff)
			return false;
		p += n + 1;
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
