/*
 * The per-call context handed to handlers: arena, deadline, cancellation,
 * the config parsed once, and the status message of a failure.
 */
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "drover/rpc.h"
#include "drv_internal.h"

void drv__call_init(struct drv_call *call, const struct drv_driver *driver, struct drv_rpc_call *rpc,
                    const char *method)
{
	memset(call, 0, sizeof(*call));
	call->driver = driver;
	call->rpc = rpc;
	call->method = method;
	drv__arena_init(&call->arena);
}

void drv__call_release(struct drv_call *call)
{
	json_decref(call->config_root);
	call->config_root = NULL;
	drv__arena_release(&call->arena);
}

int drv__call_set_config(struct drv_call *call, const drv_backend_config *bc, struct drv_diags *diags)
{
	struct drv_diags local;
	struct drv_diags *d = diags;

	call->config = bc;
	if (!bc)
		return 0;
	if (!d) {
		drv__diags_init(&local, &call->arena);
		d = &local;
	}
	size_t first = d->n;
	drv__config_check(call->driver ? call->driver->config_fields : NULL, bc, d, &call->config_root);
	if (d->oom)
		return drv_call_fail(call, DRV_ENOMEM, "out of memory checking the backend config");
	if (call->config_root)
		return 0;
	for (size_t i = first; i < d->n; i++) {
		const drv_diagnostic *g = d->items[i];
		if (g->severity != DROVER__COMPUTE__V1__SEVERITY__SEVERITY_ERROR)
			continue;
		return drv_call_fail(call, DRV_EINVAL, "invalid backend config at \"%s\": %s (%s)",
		                     g->field_path, g->summary, g->detail);
	}
	return drv_call_fail(call, DRV_EINVAL, "invalid backend config");
}

int drv_call_fail(struct drv_call *call, int err, const char *fmt, ...)
{
	va_list ap;
	if (!call)
		return err;
	call->fail_code = err;
	va_start(ap, fmt);
	call->fail_message = drv__arena_vprintf(&call->arena, fmt, ap);
	va_end(ap);
	return err;
}

int64_t drv_call_time_left_ms(const struct drv_call *call)
{
	if (!call || !call->rpc)
		return INT64_MAX;
	return drv_rpc_call_time_left_ms(call->rpc);
}

bool drv_call_cancelled(const struct drv_call *call)
{
	if (!call || !call->rpc)
		return false;
	return drv_rpc_call_cancelled(call->rpc);
}

void *drv_call_alloc(struct drv_call *call, size_t size)
{
	return drv__arena_alloc(&call->arena, size);
}

char *drv_call_strdup(struct drv_call *call, const char *s)
{
	return drv__arena_strdup(&call->arena, s ? s : "");
}

char *drv_call_printf(struct drv_call *call, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	char *s = drv__arena_vprintf(&call->arena, fmt, ap);
	va_end(ap);
	return s;
}

void *drv_call_ptrs(struct drv_call *call, size_t n)
{
	if (n > SIZE_MAX / sizeof(void *))
		return NULL;
	return drv__arena_alloc(&call->arena, n * sizeof(void *));
}

void *drv_call_message(struct drv_call *call, const ProtobufCMessageDescriptor *desc)
{
	void *m = drv__arena_alloc(&call->arena, desc->sizeof_message);
	if (m)
		protobuf_c_message_init(desc, m);
	return m;
}

const char *drv_call_config_json(const struct drv_call *call)
{
	if (!call || !call->config || !call->config->config_json)
		return "";
	return call->config->config_json;
}

/*
 * A getter asked for a name the driver never declared returns its fallback
 * on every call, silently: a typo ("capcity") looks like "not configured".
 * Each such name is logged once (a few, then no more), on the miss path only.
 */
static void warn_undeclared(const struct drv_call *call, const char *name, bool secret)
{
	static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
	static char warned[8][64];
	static unsigned n_warned;

	if (!call->driver)
		return;
	for (const struct drv_config_field *f = call->driver->config_fields; f && f->name; f++)
		if (f->secret == secret && strcmp(f->name, name) == 0)
			return;
	pthread_mutex_lock(&lock);
	bool first = n_warned < sizeof(warned) / sizeof(warned[0]);
	for (unsigned i = 0; first && i < n_warned; i++)
		first = strncmp(warned[i], name, sizeof(warned[i]) - 1) != 0;
	if (first)
		snprintf(warned[n_warned++], sizeof(warned[0]), "%s", name);
	pthread_mutex_unlock(&lock);
	if (first)
		drv_log(DRV_LOG_WARN,
		        "%s \"%.60s\" is not declared in the driver's config_fields; its getter always "
		        "returns the fallback",
		        secret ? "secret" : "config field", name);
}

/* The value of a config field: the call's, else its declared default (filled in at check time). */
static json_t *config_value(const struct drv_call *call, const char *name)
{
	json_t *v = NULL;
	if (!call || !name)
		return NULL;
	if (call->config_root)
		v = json_object_get(call->config_root, name);
	if (!v || json_is_null(v)) {
		warn_undeclared(call, name, false);
		return NULL;
	}
	return v;
}

const char *drv_call_config_string(const struct drv_call *call, const char *name, const char *fallback)
{
	json_t *v = config_value(call, name);
	return json_is_string(v) ? json_string_value(v) : fallback;
}

int64_t drv_call_config_int(const struct drv_call *call, const char *name, int64_t fallback)
{
	json_t *v = config_value(call, name);
	if (json_is_integer(v))
		return (int64_t)json_integer_value(v);
	if (json_is_real(v)) {
		double x = json_real_value(v);
		if (x >= -9e18 && x <= 9e18)
			return (int64_t)x;
	}
	return fallback;
}

double drv_call_config_number(const struct drv_call *call, const char *name, double fallback)
{
	json_t *v = config_value(call, name);
	return json_is_number(v) ? json_number_value(v) : fallback;
}

bool drv_call_config_bool(const struct drv_call *call, const char *name, bool fallback)
{
	json_t *v = config_value(call, name);
	return json_is_boolean(v) ? json_is_true(v) : fallback;
}

size_t drv_call_config_array_len(const struct drv_call *call, const char *name)
{
	json_t *v = config_value(call, name);
	return json_is_array(v) ? json_array_size(v) : 0;
}

const char *drv_call_config_array_at(const struct drv_call *call, const char *name, size_t i)
{
	json_t *v = config_value(call, name);
	return json_is_array(v) ? json_string_value(json_array_get(v, i)) : NULL;
}

const char *drv_call_secret(const struct drv_call *call, const char *name)
{
	if (!call || !call->config || !name)
		return NULL;
	for (size_t i = 0; i < call->config->n_secrets; i++) {
		const drv_secret_entry *e = call->config->secrets[i];
		if (e && e->key && strcmp(e->key, name) == 0)
			return e->value;
	}
	warn_undeclared(call, name, true);
	return NULL;
}

bool drv_call_has_config(const struct drv_call *call)
{
	return call && call->config != NULL;
}

const char *drv_call_method(const struct drv_call *call)
{
	return call && call->method ? call->method : "";
}
