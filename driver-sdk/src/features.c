/*
 * Features are derived from which ops a driver implements, in this one
 * place (as Linux derives FMODE_CAN_WRITE from f_op->write). The RPC table
 * in rpc_table.h ties each op to its feature, so no list of features exists
 * anywhere else.
 */
#include <stdio.h>
#include <string.h>

#include "drv_internal.h"
#include "rpc_table.h"

#define X(op, Method, feature, req_t, resp_t, snake)                                                         \
	static int invoke_##op(const struct drv_compute_ops *ops, struct drv_call *call, const void *req,    \
	                       void *resp)                                                                   \
	{                                                                                                    \
		return ops->op(call, (const req_t *)req, (resp_t *)resp);                                    \
	}                                                                                                    \
	static bool present_##op(const struct drv_compute_ops *ops)                                          \
	{                                                                                                    \
		return ops && ops->op != NULL;                                                               \
	}
DRV_RPC_TABLE(X)
#undef X

const struct drv__method drv__methods[] = {
#define X(op, Method, feature, req_t, resp_t, snake) {#Method, #op, feature, invoke_##op, present_##op},
    DRV_RPC_TABLE(X)
#undef X
};
const size_t drv__n_methods = sizeof(drv__methods) / sizeof(drv__methods[0]);

const struct drv__method *drv__method_find(const char *name)
{
	for (size_t i = 0; i < drv__n_methods; i++)
		if (strcmp(drv__methods[i].name, name) == 0)
			return &drv__methods[i];
	return NULL;
}

/* Marker features are the enum values with no RPC of their own. */
static drv_features op_feature_mask(void)
{
	drv_features m = 0;
	for (size_t i = 0; i < drv__n_methods; i++)
		m |= DRV_FEATURE_BIT(drv__methods[i].feature);
	return m;
}

drv_features drv__features_derive(const struct drv_driver *driver)
{
	drv_features have = 0, missing = 0;
	const struct drv_compute_ops *ops = driver ? driver->ops : NULL;

	if (!driver)
		return 0;
	for (size_t i = 0; i < drv__n_methods; i++) {
		if (drv__methods[i].present(ops))
			have |= DRV_FEATURE_BIT(drv__methods[i].feature);
		else
			missing |= DRV_FEATURE_BIT(drv__methods[i].feature);
	}
	/*
	 * Only complete groups count; markers that name an operation feature
	 * are ignored so a driver cannot claim an RPC group by marker alone.
	 */
	return (have & ~missing) | (driver->markers & ~op_feature_mask() & ~DRV_FEATURE_BIT(0));
}

drv_features drv_driver_features(const struct drv_driver *driver)
{
	return drv__features_derive(driver);
}

int drv_driver_check(const struct drv_driver *driver, char *err, size_t errlen)
{
	const struct drv_compute_ops *ops;

	if (!driver) {
		snprintf(err, errlen, "driver is NULL");
		return DRV_EINVAL;
	}
	if (driver->version != DRV_DRIVER_V1) {
		snprintf(err, errlen,
		         "struct drv_driver version %d is not supported (expected DRV_DRIVER_V1)",
		         driver->version);
		return DRV_EINVAL;
	}
	if (!driver->type || !driver->type[0]) {
		snprintf(err, errlen, "driver type is empty");
		return DRV_EINVAL;
	}
	for (const char *p = driver->type; *p; p++) {
		if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '-')) {
			snprintf(err, errlen, "driver type \"%.64s\" must match [a-z0-9-]+", driver->type);
			return DRV_EINVAL;
		}
	}
	/* GetInfo carries it, and hosts (the conformance harness first) refuse an empty one. */
	if (!driver->driver_version || !driver->driver_version[0]) {
		snprintf(err, errlen, "driver %s: driver_version is empty (\"1.2.3\" for example)",
		         driver->type);
		return DRV_EINVAL;
	}
	if (strlen(driver->type) > 64) {
		snprintf(err, errlen, "driver type \"%.64s...\" is longer than 64 characters", driver->type);
		return DRV_EINVAL;
	}
	ops = driver->ops;
	if (ops && ops->version != DRV_COMPUTE_OPS_V1) {
		snprintf(err, errlen,
		         "driver %s: struct drv_compute_ops version %d is not supported (expected "
		         "DRV_COMPUTE_OPS_V1)",
		         driver->type, ops->version);
		return DRV_EINVAL;
	}
	for (size_t i = 0; i < drv__n_methods; i++) {
		const struct drv__method *m = &drv__methods[i];
		if (m->present(ops))
			continue;
		/* A missing op is an error only if another op of its group is set. */
		for (size_t j = 0; j < drv__n_methods; j++) {
			const struct drv__method *o = &drv__methods[j];
			if (o->feature == m->feature && o->present(ops)) {
				snprintf(
				    err, errlen,
				    "driver %s: feature %s is partly implemented: ops.%s is set but ops.%s "
				    "(%s) is NULL; implement it or clear the whole group",
				    driver->type, drv_feature_name(m->feature), o->op_name, m->op_name,
				    m->name);
				return DRV_EINVAL;
			}
		}
	}
	if (driver->markers & op_feature_mask()) {
		snprintf(
		    err, errlen,
		    "driver %s: markers name an operation feature; those are derived from ops, not declared",
		    driver->type);
		return DRV_EINVAL;
	}
	/* GetFeatures would carry it, and hosts refuse a value the protocol does not define. */
	for (unsigned b = 0; b < 64; b++) {
		if ((driver->markers & DRV_FEATURE_BIT(b)) && (b == 0 || !drv_feature_name((int)b))) {
			snprintf(err, errlen,
			         "driver %s: markers hold bit %u, which is not a feature of the protocol",
			         driver->type, b);
			return DRV_EINVAL;
		}
	}
	for (const struct drv_config_field *f = driver->config_fields; f && f->name; f++) {
		if (f->type < DRV_FIELD_STRING || f->type > DRV_FIELD_OBJECT_ARRAY) {
			snprintf(err, errlen, "driver %s: config field \"%s\" has an unknown type %d",
			         driver->type, f->name, (int)f->type);
			return DRV_EINVAL;
		}
		if (f->secret && f->type != DRV_FIELD_STRING) {
			snprintf(err, errlen, "driver %s: secret \"%s\" must be of type DRV_FIELD_STRING",
			         driver->type, f->name);
			return DRV_EINVAL;
		}
		char ferr[400];
		if (drv__config_field_check(f, ferr, sizeof(ferr)) != 0) {
			snprintf(err, errlen, "driver %s: %s", driver->type, ferr);
			return DRV_EINVAL;
		}
		/*
		 * One name, one field: the schema would keep the last declaration
		 * and the checks and getters the first.
		 */
		for (const struct drv_config_field *g = driver->config_fields; g != f; g++) {
			if (strcmp(g->name, f->name) == 0) {
				snprintf(
				    err, errlen,
				    "driver %s: config field \"%s\" is declared twice (config fields and "
				    "secrets share one set of names)",
				    driver->type, f->name);
				return DRV_EINVAL;
			}
		}
	}
	return 0;
}

drv_features drv__features_for_call(const struct drv_driver *driver, struct drv_call *call)
{
	drv_features set = drv__features_derive(driver);
	if (driver->narrow_features && call) {
		drv_features narrowed = set;
		driver->narrow_features(call, &narrowed);
		/* The hook may only clear bits. */
		set &= narrowed;
	}
	return set;
}

int drv__features_to_response(drv_features set, drv_get_features_response *resp, struct drv__arena *a)
{
	size_t n = 0;
	for (unsigned b = 1; b < 64; b++)
		if (set & DRV_FEATURE_BIT(b))
			n++;
	resp->n_features = 0;
	resp->features = NULL;
	if (n == 0)
		return 0;
	Drover__Compute__V1__Feature *f = drv__arena_alloc(a, n * sizeof(*f));
	if (!f)
		return DRV_ENOMEM;
	for (unsigned b = 1; b < 64; b++)
		if (set & DRV_FEATURE_BIT(b))
			f[resp->n_features++] = (Drover__Compute__V1__Feature)b;
	resp->features = f;
	return 0;
}
