/*
 * The driver's config declaration (struct drv_config_field) as JSON Schema
 * for GetInfo, and the checks ValidateConfig and every provider call run
 * against it. Each problem becomes one diagnostic with a JSON Pointer to the
 * field at fault, so an operator sees "/capacity: value above maximum"
 * rather than "invalid config". Secret values never enter a diagnostic.
 */
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "drv_internal.h"

#define SEV_ERROR DROVER__COMPUTE__V1__SEVERITY__SEVERITY_ERROR
#define SEV_WARNING DROVER__COMPUTE__V1__SEVERITY__SEVERITY_WARNING

/* ---- diagnostics ---- */

void drv__diags_init(struct drv_diags *d, struct drv__arena *a)
{
	memset(d, 0, sizeof(*d));
	d->arena = a;
}

/*
 * A diagnostic that cannot be stored for lack of memory still counts: an
 * error dropped silently would let a bad config pass as valid. The caller
 * sees `oom` and fails the call with DRV_ENOMEM instead of answering with a
 * list it knows to be incomplete.
 */
static void diags_vadd(struct drv_diags *d, int severity, const char *field_path, const char *summary,
                       const char *detail_fmt, va_list ap)
{
	if (!d)
		return;
	if (severity == SEV_ERROR)
		d->n_errors++;
	if (d->n == d->cap) {
		size_t cap = d->cap ? d->cap * 2 : 8;
		drv_diagnostic **items = drv__arena_alloc(d->arena, cap * sizeof(*items));
		if (!items) {
			d->oom = true;
			return;
		}
		if (d->n)
			memcpy(items, d->items, d->n * sizeof(*items));
		d->items = items;
		d->cap = cap;
	}
	drv_diagnostic *g = drv__arena_alloc(d->arena, sizeof(*g));
	if (!g) {
		d->oom = true;
		return;
	}
	drover__compute__v1__diagnostic__init(g);
	g->severity = (Drover__Compute__V1__Severity)severity;
	g->field_path = drv__arena_strdup(d->arena, field_path ? field_path : "");
	g->summary = drv__arena_strdup(d->arena, summary ? summary : "");
	g->detail =
	    detail_fmt ? drv__arena_vprintf(d->arena, detail_fmt, ap) : drv__arena_strdup(d->arena, "");
	if (!g->field_path || !g->summary || !g->detail) {
		d->oom = true;
		return;
	}
	d->items[d->n++] = g;
}

void drv__diags_add(struct drv_diags *d, int severity, const char *field_path, const char *summary,
                    const char *detail_fmt, ...)
{
	va_list ap;
	va_start(ap, detail_fmt);
	diags_vadd(d, severity, field_path, summary, detail_fmt, ap);
	va_end(ap);
}

void drv_diag_error(struct drv_diags *d, const char *field_path, const char *summary, const char *detail_fmt,
                    ...)
{
	va_list ap;
	va_start(ap, detail_fmt);
	diags_vadd(d, SEV_ERROR, field_path, summary, detail_fmt, ap);
	va_end(ap);
}

void drv_diag_warning(struct drv_diags *d, const char *field_path, const char *summary,
                      const char *detail_fmt, ...)
{
	va_list ap;
	va_start(ap, detail_fmt);
	diags_vadd(d, SEV_WARNING, field_path, summary, detail_fmt, ap);
	va_end(ap);
}

/* ---- schema ---- */

static const char *type_name(enum drv_field_type t)
{
	switch (t) {
	case DRV_FIELD_STRING:
		return "string";
	case DRV_FIELD_INTEGER:
		return "integer";
	case DRV_FIELD_NUMBER:
		return "number";
	case DRV_FIELD_BOOLEAN:
		return "boolean";
	case DRV_FIELD_STRING_ARRAY:
	case DRV_FIELD_OBJECT_ARRAY:
		return "array";
	}
	return "unknown";
}

static json_t *number_json(enum drv_field_type t, double v)
{
	if (t == DRV_FIELD_INTEGER && v == floor(v) && fabs(v) < 9e15)
		return json_integer((json_int_t)v);
	return json_real(v);
}

/*
 * Sets o[key] = v (taking v) and records a failure in *ok: jansson answers a
 * NULL v or a failed insertion the same way, and a schema missing one
 * property would be a wrong answer, not a smaller one.
 */
static void put(json_t *o, const char *key, json_t *v, bool *ok)
{
	if (json_object_set_new(o, key, v) != 0)
		*ok = false;
}

static void append(json_t *a, json_t *v, bool *ok)
{
	if (json_array_append_new(a, v) != 0)
		*ok = false;
}

static json_t *field_schema(const struct drv_config_field *f, bool *ok);

/*
 * Adds to `o` the schema of an object whose members are those of `fields`
 * that are (secrets) or are not (!secrets) secrets: type, properties,
 * required, and nothing else allowed. The config, the secrets and the
 * elements of an array of objects share it. Returns o (NULL stays NULL,
 * with *ok false).
 */
static json_t *object_schema(json_t *o, const struct drv_config_field *fields, bool secrets, bool *ok)
{
	json_t *props = json_object();
	json_t *required = json_array();
	if (!o || !props || !required)
		*ok = false;
	for (const struct drv_config_field *m = fields; *ok && m && m->name; m++) {
		if (m->secret != secrets)
			continue;
		put(props, m->name, field_schema(m, ok), ok);
		if (m->required)
			append(required, json_string(m->name), ok);
	}
	if (*ok) {
		put(o, "type", json_string("object"), ok);
		put(o, "properties", json_incref(props), ok);
		if (json_array_size(required))
			put(o, "required", json_incref(required), ok);
		put(o, "additionalProperties", json_false(), ok);
	}
	json_decref(required);
	json_decref(props);
	return o;
}

static json_t *field_schema(const struct drv_config_field *f, bool *ok)
{
	json_t *p = json_object();
	if (!p) {
		*ok = false;
		return NULL;
	}
	put(p, "type", json_string(type_name(f->type)), ok);
	if (f->type == DRV_FIELD_STRING_ARRAY)
		put(p, "items", json_pack("{s:s}", "type", "string"), ok);
	if (f->type == DRV_FIELD_OBJECT_ARRAY)
		put(p, "items", object_schema(json_object(), f->items, false, ok), ok);
	if (f->description)
		put(p, "description", json_string(f->description), ok);
	/* drv_driver_check proved every default parses, so NULL means no memory. */
	if (f->default_json)
		put(p, "default", json_loads(f->default_json, JSON_DECODE_ANY, NULL), ok);
	if (f->type == DRV_FIELD_INTEGER || f->type == DRV_FIELD_NUMBER) {
		if (f->has_minimum)
			put(p, "minimum", number_json(f->type, f->minimum), ok);
		if (f->has_maximum)
			put(p, "maximum", number_json(f->type, f->maximum), ok);
	}
	if (f->type == DRV_FIELD_STRING && f->enum_values) {
		json_t *e = json_array();
		for (const char *const *v = f->enum_values; e && *v; v++)
			append(e, json_string(*v), ok);
		put(p, "enum", e, ok);
	}
	if (f->secret)
		put(p, "writeOnly", json_true(), ok);
	return p;
}

/* The schema as compact text (malloc'd), or NULL when memory ran out. */
static char *schema_of(const struct drv_driver *driver, bool secrets)
{
	json_t *root = json_object();
	char title[128];
	bool ok = root != NULL;

	snprintf(title, sizeof(title), "%s backend %s", driver->type ? driver->type : "driver",
	         secrets ? "secrets" : "config");
	if (ok) {
		put(root, "$schema", json_string("https://json-schema.org/draft/2020-12/schema"), &ok);
		put(root, "title", json_string(title), &ok);
		object_schema(root, driver->config_fields, secrets, &ok);
	}
	char *text = ok ? json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
	json_decref(root);
	return text;
}

char *drv__config_schema(const struct drv_driver *driver)
{
	return schema_of(driver, false);
}

char *drv__secrets_schema(const struct drv_driver *driver)
{
	return schema_of(driver, true);
}

/* ---- checks ---- */

/* A JSON Pointer "/<prefix>/<name>" with '~' and '/' escaped (RFC 6901). */
static void pointer(char *buf, size_t len, const char *prefix, const char *name)
{
	size_t o = 0;
	if (prefix)
		o = (size_t)snprintf(buf, len, "%s", prefix);
	if (o + 1 < len)
		buf[o++] = '/';
	for (const char *p = name; *p && o + 2 < len; p++) {
		if (*p == '~' || *p == '/') {
			buf[o++] = '~';
			buf[o++] = *p == '~' ? '0' : '1';
		} else {
			buf[o++] = *p;
		}
	}
	buf[o < len ? o : len - 1] = '\0';
}

static const char *json_kind(const json_t *v)
{
	switch (json_typeof(v)) {
	case JSON_OBJECT:
		return "object";
	case JSON_ARRAY:
		return "array";
	case JSON_STRING:
		return "string";
	case JSON_INTEGER:
		return "integer";
	case JSON_REAL:
		return "number";
	case JSON_TRUE:
	case JSON_FALSE:
		return "boolean";
	case JSON_NULL:
		return "null";
	}
	return "unknown";
}

static bool type_ok(enum drv_field_type t, const json_t *v)
{
	switch (t) {
	case DRV_FIELD_STRING:
		return json_is_string(v);
	case DRV_FIELD_INTEGER:
		/* JSON Schema counts 3.0 as an integer; so do we. */
		return json_is_integer(v) ||
		       (json_is_real(v) && json_real_value(v) == floor(json_real_value(v)) &&
		        fabs(json_real_value(v)) < 9e15);
	case DRV_FIELD_NUMBER:
		return json_is_number(v);
	case DRV_FIELD_BOOLEAN:
		return json_is_boolean(v);
	case DRV_FIELD_STRING_ARRAY:
	case DRV_FIELD_OBJECT_ARRAY:
		return json_is_array(v);
	}
	return false;
}

static const char *type_phrase(enum drv_field_type t)
{
	switch (t) {
	case DRV_FIELD_INTEGER:
		return "an integer";
	case DRV_FIELD_STRING_ARRAY:
		return "an array of strings";
	case DRV_FIELD_OBJECT_ARRAY:
		return "an array of objects";
	default:
		return t == DRV_FIELD_STRING ? "a string" : t == DRV_FIELD_NUMBER ? "a number" : "a boolean";
	}
}

static void check_field_at(const char *prefix, const struct drv_config_field *f, const json_t *v,
                           struct drv_diags *d);

/* Element `i` of an OBJECT_ARRAY: an object with the declared members and no others. */
static void check_object_item(const char *path, const struct drv_config_field *f, size_t i, const json_t *e,
                              struct drv_diags *d)
{
	char ep[420];
	snprintf(ep, sizeof(ep), "%.390s/%zu", path, i);
	if (!json_is_object(e)) {
		drv__diags_add(d, SEV_ERROR, ep, "wrong type",
		               "element %zu of \"%s\" must be an object, got %s", i, f->name, json_kind(e));
		return;
	}
	for (const struct drv_config_field *m = f->items; m && m->name; m++) {
		json_t *mv = json_object_get(e, m->name);
		if (!mv || json_is_null(mv)) {
			if (m->required) {
				char mp[480];
				pointer(mp, sizeof(mp), ep, m->name);
				drv__diags_add(d, SEV_ERROR, mp, "missing required field",
				               "field \"%s\" of element %zu of \"%s\" is required%s%s",
				               m->name, i, f->name, m->description ? ": " : "",
				               m->description ? m->description : "");
			}
			continue;
		}
		check_field_at(ep, m, mv, d);
	}
	const char *key;
	json_t *mv;
	json_object_foreach((json_t *)e, key, mv)
	{
		const struct drv_config_field *m = f->items;
		while (m && m->name && strcmp(m->name, key) != 0)
			m++;
		if (m && m->name)
			continue;
		char mp[480];
		pointer(mp, sizeof(mp), ep, key);
		drv__diags_add(d, SEV_ERROR, mp, "unknown field",
		               "\"%.100s\" is not a field of the elements of \"%s\"", key, f->name);
	}
}

static void check_field(const struct drv_config_field *f, const json_t *v, struct drv_diags *d)
{
	check_field_at(NULL, f, v, d);
}

static void check_field_at(const char *prefix, const struct drv_config_field *f, const json_t *v,
                           struct drv_diags *d)
{
	char path[400];
	pointer(path, sizeof(path), prefix, f->name);

	if (!type_ok(f->type, v)) {
		drv__diags_add(d, SEV_ERROR, path, "wrong type", "field \"%s\" must be %s, got %s", f->name,
		               type_phrase(f->type), json_kind(v));
		return;
	}
	if (f->type == DRV_FIELD_OBJECT_ARRAY) {
		size_t i;
		json_t *e;
		json_array_foreach(v, i, e) check_object_item(path, f, i, e, d);
		return;
	}
	if (f->type == DRV_FIELD_STRING_ARRAY) {
		size_t i;
		json_t *e;
		json_array_foreach(v, i, e)
		{
			if (!json_is_string(e)) {
				char ep[420];
				snprintf(ep, sizeof(ep), "%.390s/%zu", path, i);
				drv__diags_add(d, SEV_ERROR, ep, "wrong type",
				               "element %zu of \"%s\" must be a string, got %s", i, f->name,
				               json_kind(e));
			}
		}
		return;
	}
	if (f->type == DRV_FIELD_STRING && f->enum_values) {
		const char *s = json_string_value(v);
		char allowed[512] = "";
		size_t o = 0;
		for (const char *const *e = f->enum_values; *e; e++) {
			if (strcmp(*e, s) == 0)
				return;
			int w = snprintf(allowed + o, sizeof(allowed) - o, "%s\"%s\"", o ? ", " : "", *e);
			if (w > 0 && (size_t)w < sizeof(allowed) - o)
				o += (size_t)w;
		}
		drv__diags_add(d, SEV_ERROR, path, "value not allowed", "\"%.100s\" is not one of %s", s,
		               allowed);
		return;
	}
	if (f->type == DRV_FIELD_INTEGER || f->type == DRV_FIELD_NUMBER) {
		double x = json_number_value(v);
		if (f->has_minimum && x < f->minimum)
			drv__diags_add(d, SEV_ERROR, path, "value below minimum",
			               "field \"%s\" is %g; the minimum is %g", f->name, x, f->minimum);
		if (f->has_maximum && x > f->maximum)
			drv__diags_add(d, SEV_ERROR, path, "value above maximum",
			               "field \"%s\" is %g; the maximum is %g", f->name, x, f->maximum);
	}
}

int drv__config_field_check(const struct drv_config_field *f, char *err, size_t errlen)
{
	bool numeric = f->type == DRV_FIELD_INTEGER || f->type == DRV_FIELD_NUMBER;

	if (!f->name[0])
		return snprintf(err, errlen, "a config field has an empty name"), DRV_EINVAL;
	if (f->enum_values && f->type != DRV_FIELD_STRING)
		return snprintf(err, errlen,
		                "config field \"%s\" has enum_values but is not DRV_FIELD_STRING", f->name),
		       DRV_EINVAL;
	if ((f->has_minimum || f->has_maximum) && !numeric)
		return snprintf(
		           err, errlen,
		           "config field \"%s\" has a minimum or maximum but is neither DRV_FIELD_INTEGER "
		           "nor DRV_FIELD_NUMBER",
		           f->name),
		       DRV_EINVAL;
	if ((f->items != NULL) != (f->type == DRV_FIELD_OBJECT_ARRAY))
		return snprintf(err, errlen, "config field \"%s\" %s", f->name,
		                f->items ? "has items but is not DRV_FIELD_OBJECT_ARRAY"
		                         : "is DRV_FIELD_OBJECT_ARRAY but declares no items"),
		       DRV_EINVAL;
	for (const struct drv_config_field *m = f->items; m && m->name; m++) {
		if (m->secret || m->type < DRV_FIELD_STRING || m->type > DRV_FIELD_STRING_ARRAY)
			return snprintf(
			           err, errlen,
			           "member \"%s\" of config field \"%s\" must be a plain field (no secret, "
			           "no array of objects)",
			           m->name, f->name),
			       DRV_EINVAL;
		char merr[300];
		if (drv__config_field_check(m, merr, sizeof(merr)))
			return snprintf(err, errlen, "in the items of \"%s\": %.250s", f->name, merr),
			       DRV_EINVAL;
	}
	if (f->has_minimum && f->has_maximum && f->minimum > f->maximum)
		return snprintf(err, errlen, "config field \"%s\" has a minimum %g above its maximum %g",
		                f->name, f->minimum, f->maximum),
		       DRV_EINVAL;
	if (!f->default_json)
		return 0;
	/* Secrets have no defaults: the SDK never fills one in, so the schema must not promise it. */
	if (f->secret)
		return snprintf(err, errlen, "secret \"%s\" has a default; secrets cannot have one", f->name),
		       DRV_EINVAL;

	json_error_t je;
	json_t *v = json_loads(f->default_json, JSON_DECODE_ANY, &je);
	if (!v)
		return snprintf(err, errlen, "default of config field \"%s\" is not JSON: %s", f->name,
		                je.text),
		       DRV_EINVAL;
	/*
	 * The default is published in the schema and handed to handlers as if
	 * the operator had written it, so it must pass the checks a written value
	 * gets.
	 */
	struct drv__arena a;
	struct drv_diags d;
	int rc = 0;
	drv__arena_init(&a);
	drv__diags_init(&d, &a);
	check_field(f, v, &d);
	if (d.n_errors) {
		snprintf(err, errlen,
		         "default %.60s of config field \"%s\" fails its own declaration: %s (%s)",
		         f->default_json, f->name, d.items[0]->summary, d.items[0]->detail);
		rc = DRV_EINVAL;
	}
	drv__arena_release(&a);
	json_decref(v);
	return rc;
}

static const struct drv_config_field *field_find(const struct drv_config_field *fields, const char *name,
                                                 bool secret)
{
	for (const struct drv_config_field *f = fields; f && f->name; f++)
		if (f->secret == secret && strcmp(f->name, name) == 0)
			return f;
	return NULL;
}

static void known_names(const struct drv_config_field *fields, bool secret, char *buf, size_t len)
{
	size_t o = 0;
	buf[0] = '\0';
	for (const struct drv_config_field *f = fields; f && f->name; f++) {
		if (f->secret != secret)
			continue;
		int w = snprintf(buf + o, len - o, "%s%s", o ? ", " : "", f->name);
		if (w < 0 || (size_t)w >= len - o)
			break;
		o += (size_t)w;
	}
	if (o == 0)
		snprintf(buf, len, "(none)");
}

static bool only_space(const char *s)
{
	for (; *s; s++)
		if (*s != ' ' && *s != '\t' && *s != '\n' && *s != '\r')
			return false;
	return true;
}

void drv__config_check(const struct drv_config_field *fields, const drv_backend_config *bc,
                       struct drv_diags *d, json_t **rootp)
{
	const char *text = bc && bc->config_json ? bc->config_json : "";
	json_t *root;
	json_error_t je;
	char path[300];
	char names[512];
	size_t errors_before = d->n_errors;

	*rootp = NULL;
	if (only_space(text)) {
		root = json_object();
		if (!root) {
			d->oom = true;
			goto secrets;
		}
	} else {
		unsigned long failed = drv__alloc_failures();
		root = json_loads(text, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &je);
		/*
		 * No memory is not the config's fault: the call fails with DRV_ENOMEM,
		 * not INVALID_ARGUMENT. jansson reports a failed allocation while
		 * lexing as a syntax error, so the SDK's count of failed allocations
		 * tells (drv_main gives jansson the SDK's allocator).
		 */
		if (!root &&
		    (drv__alloc_failures() != failed || json_error_code(&je) == json_error_out_of_memory)) {
			d->oom = true;
			goto secrets;
		}
		if (!root) {
			drv__diags_add(d, SEV_ERROR, "", "config is not valid JSON", "line %d, column %d: %s",
			               je.line, je.column, je.text);
			goto secrets;
		}
		if (!json_is_object(root)) {
			drv__diags_add(
			    d, SEV_ERROR, "", "config must be a JSON object",
			    "config_json is a JSON %s; write the config as {\"field\": value, ...}",
			    json_kind(root));
			json_decref(root);
			root = NULL;
			goto secrets;
		}
	}

	for (const struct drv_config_field *f = fields; f && f->name; f++) {
		if (f->secret)
			continue;
		json_t *v = json_object_get(root, f->name);
		if (!v || json_is_null(v)) {
			if (f->required) {
				pointer(path, sizeof(path), NULL, f->name);
				drv__diags_add(d, SEV_ERROR, path, "missing required field",
				               "field \"%s\" is required%s%s", f->name,
				               f->description ? ": " : "",
				               f->description ? f->description : "");
			}
			continue;
		}
		check_field(f, v, d);
	}
	{
		const char *key;
		json_t *v;
		names[0] = '\0';
		json_object_foreach(root, key, v)
		{
			if (field_find(fields, key, false))
				continue;
			if (!names[0]) /* only on the error path: it costs a printf per field */
				known_names(fields, false, names, sizeof(names));
			pointer(path, sizeof(path), NULL, key);
			if (field_find(fields, key, true))
				drv__diags_add(
				    d, SEV_ERROR, path, "secret in config",
				    "\"%.100s\" is a secret: pass it in BackendConfig.secrets, not in the "
				    "config JSON",
				    key);
			else
				drv__diags_add(
				    d, SEV_ERROR, path, "unknown field",
				    "\"%.100s\" is not a config field of this driver; known fields: %s", key,
				    names);
		}
	}

secrets:
	names[0] = '\0';
	for (size_t i = 0; bc && i < bc->n_secrets; i++) {
		const char *key = bc->secrets[i] && bc->secrets[i]->key ? bc->secrets[i]->key : "";
		if (field_find(fields, key, true))
			continue;
		if (!names[0])
			known_names(fields, true, names, sizeof(names));
		pointer(path, sizeof(path), "/secrets", key);
		drv__diags_add(d, SEV_ERROR, path, "unknown secret",
		               "\"%.100s\" is not a secret of this driver; known secrets: %s", key, names);
	}
	for (const struct drv_config_field *f = fields; f && f->name; f++) {
		if (!f->secret || !f->required)
			continue;
		bool found = false;
		for (size_t i = 0; bc && i < bc->n_secrets; i++)
			if (bc->secrets[i] && bc->secrets[i]->key &&
			    strcmp(bc->secrets[i]->key, f->name) == 0 && bc->secrets[i]->value &&
			    bc->secrets[i]->value[0])
				found = true;
		if (!found) {
			pointer(path, sizeof(path), "/secrets", f->name);
			drv__diags_add(d, SEV_ERROR, path, "missing required secret",
			               "secret \"%s\" is required%s%s", f->name, f->description ? ": " : "",
			               f->description ? f->description : "");
		}
	}

	if (d->n_errors != errors_before || d->oom || drv__config_defaults_fill(fields, root) != 0) {
		if (root && d->n_errors == errors_before)
			d->oom = true;
		json_decref(root);
		return;
	}
	*rootp = root;
}

/* ---- defaults, parsed once ---- */

static pthread_mutex_t defaults_lock = PTHREAD_MUTEX_INITIALIZER;
static const struct drv_config_field *defaults_for;
static json_t *defaults; /* object: name -> parsed default */

int drv__config_defaults_fill(const struct drv_config_field *fields, json_t *root)
{
	json_t *defs;
	int rc = 0;

	pthread_mutex_lock(&defaults_lock);
	if (defaults_for != fields || !defaults) {
		/*
		 * One driver per process, so this runs once; tests may switch. Kept
		 * only when complete: a default lost for lack of memory would make
		 * its getter answer the fallback on every later call.
		 */
		json_decref(defaults);
		defaults = json_object();
		for (const struct drv_config_field *f = fields; defaults && f && f->name; f++) {
			if (f->secret || !f->default_json)
				continue;
			/* drv_driver_check proved every default parses, so NULL means no memory. */
			json_t *v = json_loads(f->default_json, JSON_DECODE_ANY, NULL);
			if (!v || json_object_set_new(defaults, f->name, v) != 0) {
				json_decref(defaults);
				defaults = NULL;
			}
		}
		defaults_for = defaults ? fields : NULL;
	}
	defs = json_incref(defaults);
	pthread_mutex_unlock(&defaults_lock);
	if (!defs)
		return DRV_ENOMEM;

	const char *key;
	json_t *v;
	json_object_foreach(defs, key, v)
	{
		json_t *cur = json_object_get(root, key);
		if ((!cur || json_is_null(cur)) && json_object_set(root, key, v) != 0)
			rc = DRV_ENOMEM;
	}
	json_decref(defs);
	return rc;
}
