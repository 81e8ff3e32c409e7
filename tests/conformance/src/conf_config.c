/*
 * The harness's config file: the backend config and secrets handed to the
 * driver, plus the test parameters (see docs/CONFORMANCE.md). JSON read with
 * jansson, or YAML turned into the same tree; every error names the field at
 * fault.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "conf.h"

void conf_config_defaults(struct conf_opts *o)
{
	o->repeat = 3;
	snprintf(o->name_prefix, sizeof(o->name_prefix), "conformance-");
	o->call_timeout_ms = 10000;
	o->provisioning_timeout_ms = 30000;
	o->handshake_timeout_ms = 5000;
	o->short_deadline_ms = 100;
	o->recovery_ms = 1000;
	o->shutdown_grace_ms = 5000;
	o->large_offers_min = 10000;
	o->volume_size_mib = 1024;
}

void conf_config_free(struct conf_opts *o)
{
	json_decref(o->config);
	json_decref(o->secrets);
	json_decref(o->offer_requirements);
	json_decref(o->slow_config);
	json_decref(o->large_offers_config);
	json_decref(o->invalid_config);
	json_decref(o->bad_secrets);
	o->bad_secrets = NULL;
	o->config = o->secrets = o->offer_requirements = NULL;
	o->slow_config = o->large_offers_config = o->invalid_config = NULL;
}

static int get_int(json_t *params, const char *key, int64_t min, int64_t *out, char *err, size_t errlen)
{
	json_t *v = json_object_get(params, key);
	if (!v)
		return 0;
	if (!json_is_integer(v) || json_integer_value(v) < min) {
		snprintf(err, errlen, "params.%s: must be an integer >= %lld", key, (long long)min);
		return -1;
	}
	*out = json_integer_value(v);
	return 0;
}

static int get_object(json_t *parent, const char *where, const char *key, json_t **out, char *err,
                      size_t errlen)
{
	json_t *v = json_object_get(parent, key);
	if (!v)
		return 0;
	if (!json_is_object(v)) {
		snprintf(err, errlen, "%s%s: must be a JSON object", where, key);
		return -1;
	}
	*out = json_incref(v);
	return 0;
}

static const char *const known_params[] = {
    "offer_requirements",
    "name_prefix",
    "call_timeout_ms",
    "provisioning_timeout_ms",
    "handshake_timeout_ms",
    "short_deadline_ms",
    "recovery_ms",
    "shutdown_grace_ms",
    "slow_config",
    "large_offers_config",
    "large_offers_min",
    "invalid_config_field",
    "volume_size_mib",
    "bad_secrets",
    NULL,
};

static int load_params(struct conf_opts *o, json_t *params, char *err, size_t errlen)
{
	const char *key;
	json_t *val;
	json_object_foreach(params, key, val)
	{
		bool known = false;
		for (size_t i = 0; known_params[i]; i++)
			known = known || strcmp(known_params[i], key) == 0;
		if (!known) {
			snprintf(err, errlen, "params.%s: unknown parameter", key);
			return -1;
		}
	}
	if (get_object(params, "params.", "offer_requirements", &o->offer_requirements, err, errlen) ||
	    get_object(params, "params.", "slow_config", &o->slow_config, err, errlen) ||
	    get_object(params, "params.", "large_offers_config", &o->large_offers_config, err, errlen) ||
	    get_object(params, "params.", "invalid_config_field", &o->invalid_config, err, errlen))
		return -1;
	if (get_object(params, "params.", "bad_secrets", &o->bad_secrets, err, errlen))
		return -1;
	if (o->bad_secrets) {
		if (json_object_size(o->bad_secrets) == 0) {
			snprintf(err, errlen, "params.bad_secrets: must name at least one secret");
			return -1;
		}
		json_object_foreach(o->bad_secrets, key, val)
		{
			if (!json_is_string(val)) {
				snprintf(err, errlen, "params.bad_secrets.%s: must be a string", key);
				return -1;
			}
		}
	}
	if (o->offer_requirements) {
		drv_requirements r;
		int rc = conf_requirements_from_json(o->offer_requirements, &r, err, errlen);
		conf_requirements_free(&r);
		if (rc)
			return -1;
	}
	json_t *prefix = json_object_get(params, "name_prefix");
	if (prefix) {
		const char *p = json_string_value(prefix);
		if (!p || strlen(p) >= 32 ||
		    strspn(p, "abcdefghijklmnopqrstuvwxyz0123456789-") != strlen(p)) {
			snprintf(err, errlen,
			         "params.name_prefix: must be a string of at most 31 characters [a-z0-9-]");
			return -1;
		}
		snprintf(o->name_prefix, sizeof(o->name_prefix), "%s", p);
	}
	struct {
		const char *key;
		int *dst;
		int64_t min;
	} ints[] = {
	    {"call_timeout_ms", &o->call_timeout_ms, 1},
	    {"provisioning_timeout_ms", &o->provisioning_timeout_ms, 0},
	    {"handshake_timeout_ms", &o->handshake_timeout_ms, 1},
	    {"short_deadline_ms", &o->short_deadline_ms, 1},
	    {"recovery_ms", &o->recovery_ms, 1},
	    {"shutdown_grace_ms", &o->shutdown_grace_ms, 1},
	};
	for (size_t i = 0; i < sizeof(ints) / sizeof(ints[0]); i++) {
		int64_t v = *ints[i].dst;
		if (get_int(params, ints[i].key, ints[i].min, &v, err, errlen))
			return -1;
		if (v > 3600000) {
			snprintf(err, errlen, "params.%s: at most 3600000 ms", ints[i].key);
			return -1;
		}
		*ints[i].dst = (int)v;
	}
	int64_t v = o->large_offers_min;
	if (get_int(params, "large_offers_min", 1, &v, err, errlen))
		return -1;
	o->large_offers_min = v;
	v = (int64_t)o->volume_size_mib;
	if (get_int(params, "volume_size_mib", 1, &v, err, errlen))
		return -1;
	o->volume_size_mib = (uint64_t)v;
	return 0;
}

int conf_config_load(struct conf_opts *o, const char *path, char *err, size_t errlen)
{
	json_error_t je;
	json_t *root;
	size_t len = strlen(path);
	if ((len > 5 && strcmp(path + len - 5, ".yaml") == 0) ||
	    (len > 4 && strcmp(path + len - 4, ".yml") == 0)) {
		root = conf_yaml_load(path, err, errlen);
		if (!root)
			return -1;
	} else {
		root = json_load_file(path, JSON_REJECT_DUPLICATES, &je);
		if (!root) {
			snprintf(err, errlen, "%s:%d:%d: %s", path, je.line, je.column, je.text);
			return -1;
		}
	}
	int rc = -1;
	if (!json_is_object(root)) {
		snprintf(err, errlen, "%s: the top level must be a JSON object", path);
		goto out;
	}
	const char *key;
	json_t *val;
	json_object_foreach(root, key, val)
	{
		if (strcmp(key, "config") && strcmp(key, "secrets") && strcmp(key, "params")) {
			snprintf(err, errlen,
			         "%s: unknown top-level key \"%s\" (expected config, secrets, params)", path,
			         key);
			goto out;
		}
	}
	char e2[512] = "";
	if (get_object(root, "", "config", &o->config, e2, sizeof(e2)) ||
	    get_object(root, "", "secrets", &o->secrets, e2, sizeof(e2))) {
		snprintf(err, errlen, "%s: %s", path, e2);
		goto out;
	}
	if (o->secrets) {
		json_object_foreach(o->secrets, key, val)
		{
			if (!json_is_string(val)) {
				snprintf(err, errlen, "%s: secrets.%s: must be a string", path, key);
				goto out;
			}
		}
	}
	json_t *params = json_object_get(root, "params");
	if (params && !json_is_object(params)) {
		snprintf(err, errlen, "%s: params: must be a JSON object", path);
		goto out;
	}
	if (params && load_params(o, params, e2, sizeof(e2))) {
		snprintf(err, errlen, "%s: %s", path, e2);
		goto out;
	}
	rc = 0;
out:
	json_decref(root);
	return rc;
}

void conf_bc_init(struct conf_bc *bc, const json_t *base, const json_t *overlay, const json_t *secrets,
                  const char *raw_json)
{
	if (raw_json) {
		bc->json = strdup(raw_json);
	} else {
		json_t *merged = base ? json_deep_copy(base) : json_object();
		if (overlay)
			json_object_update(merged, (json_t *)overlay);
		bc->json = json_dumps(merged, JSON_COMPACT | JSON_SORT_KEYS);
		json_decref(merged);
	}
	/* Out of memory, the config goes without its secrets, and the check that uses it fails. */
	size_t n = secrets ? json_object_size(secrets) : 0;
	if (drv_backend_config_init(&bc->buf, bc->json, n) != 0) {
		drv_backend_config_init(&bc->buf, bc->json, 0);
		return;
	}
	size_t i = 0;
	const char *key;
	json_t *val;
	json_object_foreach((json_t *)secrets, key, val)
	{
		drv_backend_config_set_secret(&bc->buf, i++, key, json_string_value(val));
	}
}

void conf_bc_free(struct conf_bc *bc)
{
	free(bc->json);
	bc->json = NULL;
	drv_backend_config_clear(&bc->buf);
}

static int range_from_json(const json_t *j, const char *key, drv_uint_range **out, char *err, size_t errlen)
{
	json_t *v = json_object_get(j, key);
	if (!v)
		return 0;
	if (!json_is_object(v)) {
		snprintf(err, errlen,
		         "params.offer_requirements.%s: must be an object {\"min\": N, \"max\": N}", key);
		return -1;
	}
	drv_uint_range init = DROVER__COMPUTE__V1__UINT_RANGE__INIT;
	drv_uint_range *r = malloc(sizeof(*r));
	if (!r)
		return -1;
	*r = init;
	*out = r;
	const char *k;
	json_t *x;
	json_object_foreach((json_t *)v, k, x)
	{
		if ((strcmp(k, "min") && strcmp(k, "max")) || !json_is_integer(x) ||
		    json_integer_value(x) < 0) {
			snprintf(err, errlen,
			         "params.offer_requirements.%s.%s: expected \"min\" or \"max\" with an "
			         "integer >= 0",
			         key, k);
			return -1;
		}
		if (strcmp(k, "min") == 0) {
			r->_min_case = DROVER__COMPUTE__V1__UINT_RANGE___MIN_MIN;
			r->min = (uint64_t)json_integer_value(x);
		} else {
			r->_max_case = DROVER__COMPUTE__V1__UINT_RANGE___MAX_MAX;
			r->max = (uint64_t)json_integer_value(x);
		}
	}
	return 0;
}

static int strings_from_json(const json_t *j, const char *key, size_t *n, char ***out, char *err,
                             size_t errlen)
{
	json_t *v = json_object_get(j, key);
	if (!v)
		return 0;
	if (!json_is_array(v)) {
		snprintf(err, errlen, "params.offer_requirements.%s: must be an array of strings", key);
		return -1;
	}
	*out = calloc(json_array_size(v) + 1, sizeof(char *));
	if (!*out)
		return -1;
	for (size_t i = 0; i < json_array_size(v); i++) {
		const char *s = json_string_value(json_array_get(v, i));
		if (!s) {
			snprintf(err, errlen, "params.offer_requirements.%s[%zu]: must be a string", key, i);
			return -1;
		}
		(*out)[(*n)++] = (char *)s;
	}
	return 0;
}

int conf_requirements_from_json(const json_t *j, drv_requirements *r, char *err, size_t errlen)
{
	drv_requirements init = DROVER__COMPUTE__V1__REQUIREMENTS__INIT;
	*r = init;
	static const char *const known[] = {"cpus",           "memory_mib", "disk_mib", "gpu_count",
	                                    "gpu_memory_mib", "gpu_names",  "spot",     "max_price",
	                                    "regions",        "cpu_archs",  NULL};
	const char *key;
	json_t *val;
	json_object_foreach((json_t *)j, key, val)
	{
		bool ok = false;
		for (size_t i = 0; known[i]; i++)
			ok = ok || strcmp(known[i], key) == 0;
		if (!ok) {
			snprintf(err, errlen, "params.offer_requirements.%s: unknown filter", key);
			return -1;
		}
	}
	if (range_from_json(j, "cpus", &r->cpus, err, errlen) ||
	    range_from_json(j, "memory_mib", &r->memory_mib, err, errlen) ||
	    range_from_json(j, "disk_mib", &r->disk_mib, err, errlen) ||
	    range_from_json(j, "gpu_count", &r->gpu_count, err, errlen) ||
	    range_from_json(j, "gpu_memory_mib", &r->gpu_memory_mib, err, errlen) ||
	    strings_from_json(j, "gpu_names", &r->n_gpu_names, &r->gpu_names, err, errlen) ||
	    strings_from_json(j, "regions", &r->n_regions, &r->regions, err, errlen) ||
	    strings_from_json(j, "cpu_archs", &r->n_cpu_archs, &r->cpu_archs, err, errlen))
		return -1;
	json_t *spot = json_object_get(j, "spot");
	if (spot) {
		const char *s = json_string_value(spot);
		if (s && strcasecmp(s, "on_demand") == 0)
			r->spot = DROVER__COMPUTE__V1__SPOT_POLICY__SPOT_POLICY_ON_DEMAND;
		else if (s && strcasecmp(s, "spot") == 0)
			r->spot = DROVER__COMPUTE__V1__SPOT_POLICY__SPOT_POLICY_SPOT;
		else if (s && strcasecmp(s, "auto") == 0)
			r->spot = DROVER__COMPUTE__V1__SPOT_POLICY__SPOT_POLICY_AUTO;
		else {
			snprintf(
			    err, errlen,
			    "params.offer_requirements.spot: must be \"on_demand\", \"spot\" or \"auto\"");
			return -1;
		}
	}
	json_t *price = json_object_get(j, "max_price");
	if (price) {
		if (!json_is_number(price) || json_number_value(price) <= 0) {
			snprintf(err, errlen, "params.offer_requirements.max_price: must be a number > 0");
			return -1;
		}
		r->_max_price_case = DROVER__COMPUTE__V1__REQUIREMENTS___MAX_PRICE_MAX_PRICE;
		r->max_price = json_number_value(price);
	}
	return 0;
}

void conf_requirements_free(drv_requirements *r)
{
	free(r->cpus);
	free(r->memory_mib);
	free(r->disk_mib);
	free(r->gpu_count);
	free(r->gpu_memory_mib);
	free(r->gpu_names);
	free(r->regions);
	free(r->cpu_archs);
	drv_requirements init = DROVER__COMPUTE__V1__REQUIREMENTS__INIT;
	*r = init;
}
