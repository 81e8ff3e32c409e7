/* Tests of config_schema.c and the config getters of call.c. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "drv_internal.h"

#include "config_fields.h"

static const struct drv_driver driver = {
    .version = DRV_DRIVER_V1, .type = "cfgtest", .driver_version = "1", .config_fields = fields};

static void test_schema(void **state)
{
	char *text = drv__config_schema(&driver);
	json_error_t je;
	json_t *s = json_loads(text, 0, &je);
	if (!s)
		fail_msg("schema is not JSON: %s: %s", je.text, text);
	assert_string_equal(json_string_value(json_object_get(s, "$schema")),
	                    "https://json-schema.org/draft/2020-12/schema");
	assert_string_equal(json_string_value(json_object_get(s, "type")), "object");
	assert_true(json_is_false(json_object_get(s, "additionalProperties")));
	json_t *p = json_object_get(s, "properties");
	assert_int_equal(json_object_size(p), 6); /* secrets are not config properties */
	assert_null(json_object_get(p, "api_key"));
	json_t *cap = json_object_get(p, "capacity");
	assert_string_equal(json_string_value(json_object_get(cap, "type")), "integer");
	assert_int_equal(json_integer_value(json_object_get(cap, "minimum")), 1);
	assert_int_equal(json_integer_value(json_object_get(cap, "maximum")), 100);
	assert_int_equal(json_integer_value(json_object_get(cap, "default")), 10);
	assert_true(json_is_real(json_object_get(json_object_get(p, "ratio"), "maximum")));
	json_t *tier = json_object_get(p, "tier");
	assert_int_equal(json_array_size(json_object_get(tier, "enum")), 2);
	assert_string_equal(json_string_value(json_object_get(tier, "default")), "basic");
	json_t *zones = json_object_get(p, "zones");
	assert_string_equal(json_string_value(json_object_get(zones, "type")), "array");
	assert_string_equal(json_string_value(json_object_get(json_object_get(zones, "items"), "type")),
	                    "string");
	assert_string_equal(json_string_value(json_object_get(json_object_get(p, "region"), "description")),
	                    "where machines run");
	json_t *req = json_object_get(s, "required");
	assert_int_equal(json_array_size(req), 1);
	assert_string_equal(json_string_value(json_array_get(req, 0)), "region");
	json_decref(s);
	free(text);

	text = drv__secrets_schema(&driver);
	s = json_loads(text, 0, &je);
	assert_non_null(s);
	p = json_object_get(s, "properties");
	assert_int_equal(json_object_size(p), 2);
	assert_string_equal(json_string_value(json_object_get(json_object_get(p, "api_key"), "type")),
	                    "string");
	assert_string_equal(json_string_value(json_array_get(json_object_get(s, "required"), 0)), "api_key");
	json_decref(s);
	free(text);

	/* No fields at all: still a valid, closed object schema. */
	struct drv_driver bare = {.version = DRV_DRIVER_V1, .type = "bare"};
	text = drv__config_schema(&bare);
	s = json_loads(text, 0, &je);
	assert_non_null(s);
	assert_int_equal(json_object_size(json_object_get(s, "properties")), 0);
	assert_null(json_object_get(s, "required"));
	json_decref(s);
	free(text);
}

/* Checks a config; returns the diagnostics (arena in *a) and the root. */
struct checked {
	struct drv__arena arena;
	struct drv_diags d;
	json_t *root;
};

static void check(struct checked *c, const char *json, const char *const *secrets)
{
	drv_backend_config bc = DROVER__COMPUTE__V1__BACKEND_CONFIG__INIT;
	static drv_secret_entry entries[8];
	static drv_secret_entry *ptrs[8];
	size_t n = 0;
	for (; secrets && secrets[2 * n]; n++) {
		drover__compute__v1__backend_config__secrets_entry__init(&entries[n]);
		entries[n].key = (char *)secrets[2 * n];
		entries[n].value = (char *)secrets[2 * n + 1];
		ptrs[n] = &entries[n];
	}
	bc.config_json = (char *)json;
	bc.n_secrets = n;
	bc.secrets = ptrs;
	drv__arena_init(&c->arena);
	drv__diags_init(&c->d, &c->arena);
	drv__config_check(fields, &bc, &c->d, &c->root);
}

static void done(struct checked *c)
{
	json_decref(c->root);
	drv__arena_release(&c->arena);
}

static const char *const key_ok[] = {"api_key", "k-123", NULL};

/* Exactly one error diagnostic, at `path`, whose summary and detail contain the needles. */
static void expect_one(const char *json, const char *const *secrets, const char *path, const char *summary,
                       const char *detail_needle)
{
	struct checked c;
	check(&c, json, secrets);
	if (c.d.n_errors != 1) {
		for (size_t i = 0; i < c.d.n; i++)
			print_message("  %s: %s: %s\n", c.d.items[i]->field_path, c.d.items[i]->summary,
			              c.d.items[i]->detail);
		fail_msg("%s: %zu errors, want 1", json, c.d.n_errors);
	}
	assert_null(c.root);
	assert_string_equal(c.d.items[0]->field_path, path);
	assert_string_equal(c.d.items[0]->summary, summary);
	if (!strstr(c.d.items[0]->detail, detail_needle))
		fail_msg("detail \"%s\" lacks \"%s\"", c.d.items[0]->detail, detail_needle);
	assert_int_equal(c.d.items[0]->severity, DROVER__COMPUTE__V1__SEVERITY__SEVERITY_ERROR);
	done(&c);
}

static void test_each_diagnostic(void **state)
{
	expect_one("{\"region\": \"eu\",", key_ok, "", "config is not valid JSON", "line 1, column");
	expect_one("{\n\"region\": \"eu\"\n\"tier\": 1}", key_ok, "", "config is not valid JSON", "line 3");
	expect_one("[1, 2]", key_ok, "", "config must be a JSON object", "array");
	expect_one("\"eu\"", key_ok, "", "config must be a JSON object", "string");
	expect_one("{}", key_ok, "/region", "missing required field", "where machines run");
	expect_one("{\"region\": 5}", key_ok, "/region", "wrong type", "must be a string, got integer");
	expect_one("{\"region\": \"eu\", \"capacity\": \"many\"}", key_ok, "/capacity", "wrong type",
	           "must be an integer, got string");
	expect_one("{\"region\": \"eu\", \"capacity\": 2.5}", key_ok, "/capacity", "wrong type",
	           "got number");
	expect_one("{\"region\": \"eu\", \"debug\": 1}", key_ok, "/debug", "wrong type", "boolean");
	expect_one("{\"region\": \"eu\", \"zones\": \"a\"}", key_ok, "/zones", "wrong type",
	           "must be an array of strings, got string");
	expect_one("{\"region\": \"eu\", \"zones\": [\"a\", 7]}", key_ok, "/zones/1", "wrong type",
	           "element 1");
	expect_one("{\"region\": \"eu\", \"tier\": \"gold\"}", key_ok, "/tier", "value not allowed",
	           "\"gold\" is not one of \"basic\", \"pro\"");
	expect_one("{\"region\": \"eu\", \"capacity\": 0}", key_ok, "/capacity", "value below minimum",
	           "minimum is 1");
	expect_one("{\"region\": \"eu\", \"capacity\": 101}", key_ok, "/capacity", "value above maximum",
	           "maximum is 100");
	expect_one("{\"region\": \"eu\", \"ratio\": 1.75}", key_ok, "/ratio", "value above maximum", "1.5");
	expect_one("{\"region\": \"eu\", \"colour\": \"red\"}", key_ok, "/colour", "unknown field",
	           "known fields: region, tier");
	/* A key with '/' and '~' is escaped in the pointer (RFC 6901). */
	expect_one("{\"region\": \"eu\", \"a/b~c\": 1}", key_ok, "/a~1b~0c", "unknown field", "a/b~c");
	expect_one("{\"region\": \"eu\", \"api_key\": \"oops\"}", key_ok, "/api_key", "secret in config",
	           "BackendConfig.secrets");
	expect_one("{\"region\": \"eu\"}", NULL, "/secrets/api_key", "missing required secret", "the key");
	const char *const empty_key[] = {"api_key", "", NULL};
	expect_one("{\"region\": \"eu\"}", empty_key, "/secrets/api_key", "missing required secret",
	           "required");
	const char *const extra[] = {"api_key", "k", "token", "hunter2", NULL};
	expect_one("{\"region\": \"eu\"}", extra, "/secrets/token", "unknown secret",
	           "known secrets: api_key");
	expect_one("{\"region\": \"eu\", \"tier\": \"pro\", \"tier\": \"basic\"}", key_ok, "",
	           "config is not valid JSON", "duplicate");
}

static void test_secret_values_never_in_diagnostics(void **state)
{
	const char *const extra[] = {"api_key", "s3cr3t-value", "bogus", "t0p-s3cr3t", NULL};
	struct checked c;
	check(&c, "{\"region\": 1, \"api_key\": \"in-config-s3cr3t\"}", extra);
	assert_true(c.d.n_errors >= 3);
	for (size_t i = 0; i < c.d.n; i++) {
		assert_null(strstr(c.d.items[i]->detail, "s3cr3t"));
		assert_null(strstr(c.d.items[i]->summary, "s3cr3t"));
	}
	done(&c);
}

static void test_many_errors_reported_together(void **state)
{
	struct checked c;
	check(&c, "{\"capacity\": 500, \"tier\": 3, \"x\": 1}", NULL);
	/* region missing, capacity max, tier type, x unknown, api_key missing */
	assert_int_equal(c.d.n_errors, 5);
	done(&c);
}

/* A BackendConfig of `json` with the api_key secret set to `key`. */
struct keyed {
	drv_backend_config bc;
	drv_secret_entry e;
	drv_secret_entry *ep;
};

static void keyed_config(struct keyed *k, const char *key, const char *json)
{
	k->bc = (drv_backend_config)DROVER__COMPUTE__V1__BACKEND_CONFIG__INIT;
	k->e = (drv_secret_entry)DROVER__COMPUTE__V1__BACKEND_CONFIG__SECRETS_ENTRY__INIT;
	k->e.key = "api_key";
	k->e.value = (char *)key;
	k->ep = &k->e;
	k->bc.n_secrets = 1;
	k->bc.secrets = &k->ep;
	k->bc.config_json = (char *)json;
}

static void test_valid_with_defaults_and_getters(void **state)
{
	const char *const secrets[] = {"api_key", "k-123", "project_id", "p-9", NULL};
	struct checked c;
	check(&c, "{\"region\": \"eu\", \"ratio\": 0.5, \"zones\": [\"a\", \"b\"], \"capacity\": 3.0}",
	      secrets);
	assert_int_equal(c.d.n, 0);
	assert_non_null(c.root);
	/* Defaults are filled in; given values win. */
	assert_string_equal(json_string_value(json_object_get(c.root, "tier")), "basic");
	assert_true(json_is_false(json_object_get(c.root, "debug")));
	done(&c);

	struct keyed k;
	keyed_config(&k, "k-123",
	             "{\"region\": \"eu\", \"ratio\": 0.5, \"zones\": [\"a\", \"b\"], \"capacity\": 3.0}");
	struct drv_call call;
	drv__call_init(&call, &driver, NULL, "GetOffers");
	assert_false(drv_call_has_config(&call));
	assert_int_equal(drv__call_set_config(&call, &k.bc, NULL), 0);
	assert_true(drv_call_has_config(&call));
	assert_string_equal(drv_call_config_string(&call, "region", "x"), "eu");
	assert_string_equal(drv_call_config_string(&call, "tier", "x"), "basic");
	assert_int_equal(drv_call_config_int(&call, "capacity", -1), 3);
	assert_true(drv_call_config_number(&call, "ratio", 9) == 0.5);
	assert_false(drv_call_config_bool(&call, "debug", true));
	assert_int_equal(drv_call_config_array_len(&call, "zones"), 2);
	assert_string_equal(drv_call_config_array_at(&call, "zones", 1), "b");
	assert_null(drv_call_config_array_at(&call, "zones", 2));
	assert_string_equal(drv_call_config_string(&call, "nope", "fb"), "fb");
	assert_int_equal(drv_call_config_int(&call, "region", 7), 7); /* wrong type: fallback */
	assert_string_equal(drv_call_secret(&call, "api_key"), "k-123");
	assert_null(drv_call_secret(&call, "project_id"));
	assert_string_equal(drv_call_config_json(&call), k.bc.config_json);
	drv__call_release(&call);

	/* "" is an empty object: defaults apply, required fields are still required. */
	k.bc.config_json = "";
	drv__call_init(&call, &driver, NULL, "GetOffers");
	assert_int_equal(drv__call_set_config(&call, &k.bc, NULL), DRV_EINVAL);
	assert_non_null(strstr(call.fail_message, "/region"));
	assert_non_null(strstr(call.fail_message, "missing required field"));
	drv__call_release(&call);
}

/* A getter asked for an undeclared name (a typo) says so in the log, once per name. */
static void test_undeclared_getter_logged(void **state)
{
	struct keyed k;
	keyed_config(&k, "k", "{\"region\": \"eu\"}");
	int fds[2];
	assert_int_equal(pipe(fds), 0);
	drv__log_set_fd(fds[1]);

	struct drv_call call;
	drv__call_init(&call, &driver, NULL, "GetOffers");
	assert_int_equal(drv__call_set_config(&call, &k.bc, NULL), 0);
	assert_int_equal(drv_call_config_int(&call, "capcity", 4), 4);
	assert_int_equal(drv_call_config_int(&call, "capcity", 4), 4);
	assert_null(drv_call_secret(&call, "api_kye"));
	/* Declared but absent: no warning. */
	assert_null(drv_call_secret(&call, "project_id"));
	assert_null(drv_call_config_array_at(&call, "zones", 0));
	drv__call_release(&call);

	drv__log_set_fd(2);
	close(fds[1]);
	char buf[4096];
	ssize_t n = read(fds[0], buf, sizeof(buf) - 1);
	close(fds[0]);
	assert_true(n > 0);
	buf[n] = '\0';
	const char *first = strstr(buf, "config field \\\"capcity\\\" is not declared");
	if (!first)
		fail_msg("no warning for \"capcity\" in: %s", buf);
	if (strstr(strchr(first, '\n'), "capcity"))
		fail_msg("\"capcity\" warned twice: %s", buf);
	assert_non_null(strstr(buf, "secret \\\"api_kye\\\" is not declared"));
	assert_null(strstr(buf, "project_id"));
	assert_null(strstr(buf, "zones"));
}

static void test_invalid_config_message(void **state)
{
	struct keyed k;
	keyed_config(&k, "k", "{\"region\": \"eu\", \"capacity\": 1000}");
	struct drv_call call;
	drv__call_init(&call, &driver, NULL, "GetOffers");
	assert_int_equal(drv__call_set_config(&call, &k.bc, NULL), DRV_EINVAL);
	assert_int_equal(call.fail_code, DRV_EINVAL);
	assert_non_null(strstr(call.fail_message, "\"/capacity\""));
	assert_non_null(strstr(call.fail_message, "value above maximum"));
	assert_null(call.config_root);
	drv__call_release(&call);
}

static void test_diag_api(void **state)
{
	struct drv__arena a;
	struct drv_diags d;
	drv__arena_init(&a);
	drv__diags_init(&d, &a);
	for (int i = 0; i < 50; i++)
		drv_diag_warning(&d, "/x", "careful", "number %d", i);
	drv_diag_error(&d, "/secrets/api_key", "rejected", "the provider said %s", "no");
	assert_int_equal(d.n, 51);
	assert_int_equal(d.n_errors, 1);
	assert_string_equal(d.items[49]->detail, "number 49");
	assert_int_equal(d.items[0]->severity, DROVER__COMPUTE__V1__SEVERITY__SEVERITY_WARNING);
	assert_string_equal(d.items[50]->field_path, "/secrets/api_key");
	drv__arena_release(&a);
}

/* Random config texts: every outcome is either a checked root or at least one error diagnostic. */
static void test_random_configs(void **state)
{
	static const char *const atoms[] = {
	    "{",          "}",          "[",        "]",           ",",
	    ":",          "\"region\"", "\"tier\"", "\"pro\"",     "\"capacity\"",
	    "5",          "-1",         "2.5",      "1e400",       "true",
	    "null",       "\"zones\"",  "\"a/b\"",  "\"\\u0000\"", " ",
	    "\"api_key\""};
	unsigned seed = 99;
	const char *const secrets[] = {"api_key", "k", NULL};
	for (int iter = 0; iter < 20000; iter++) {
		char text[256] = "";
		size_t len = 0;
		int n = rand_r(&seed) % 14;
		if (iter % 3 == 0)
			len = (size_t)snprintf(text, sizeof(text), "{\"region\": \"eu\", ");
		for (int i = 0; i < n; i++) {
			const char *a = atoms[rand_r(&seed) % (sizeof(atoms) / sizeof(atoms[0]))];
			size_t al = strlen(a);
			if (len + al + 1 >= sizeof(text))
				break;
			memcpy(text + len, a, al + 1);
			len += al;
		}
		struct checked c;
		check(&c, text, secrets);
		if (c.root) {
			assert_int_equal(c.d.n_errors, 0);
			assert_true(json_is_object(c.root));
		} else {
			assert_true(c.d.n_errors > 0);
		}
		for (size_t i = 0; i < c.d.n; i++) {
			assert_true(c.d.items[i]->field_path[0] == '\0' ||
			            c.d.items[i]->field_path[0] == '/');
			assert_true(c.d.items[i]->summary[0] != '\0');
		}
		done(&c);
	}
}

/* An array of objects: its schema, and each member checked with a path such as /hosts/1/port. */
static const struct drv_config_field host_items[] = {
    {.name = "address", .type = DRV_FIELD_STRING, .required = true},
    {.name = "port", .type = DRV_FIELD_INTEGER, .default_json = "22", .has_minimum = true, .minimum = 1},
    {.name = NULL},
};
static const struct drv_config_field obj_fields[] = {
    {.name = "hosts", .type = DRV_FIELD_OBJECT_ARRAY, .required = true, .items = host_items},
    {.name = NULL},
};

static size_t obj_check(const char *json, const char *path, const char *summary)
{
	drv_backend_config bc = DROVER__COMPUTE__V1__BACKEND_CONFIG__INIT;
	struct drv__arena a;
	struct drv_diags d;
	json_t *root = NULL;
	bc.config_json = (char *)json;
	drv__arena_init(&a);
	drv__diags_init(&d, &a);
	drv__config_check(obj_fields, &bc, &d, &root);
	size_t n = d.n_errors;
	if (path) {
		assert_int_equal(n, 1);
		assert_string_equal(d.items[0]->field_path, path);
		assert_string_equal(d.items[0]->summary, summary);
	}
	json_decref(root);
	drv__arena_release(&a);
	return n;
}

static void test_object_array(void **state)
{
	(void)state;
	static const struct drv_driver obj_driver = {
	    .version = DRV_DRIVER_V1, .type = "objtest", .driver_version = "1", .config_fields = obj_fields};
	char *text = drv__config_schema(&obj_driver);
	json_t *s = json_loads(text, 0, NULL);
	assert_non_null(s);
	json_t *items = json_object_get(json_object_get(json_object_get(s, "properties"), "hosts"), "items");
	assert_string_equal(json_string_value(json_object_get(items, "type")), "object");
	assert_true(json_is_false(json_object_get(items, "additionalProperties")));
	assert_string_equal(json_string_value(json_array_get(json_object_get(items, "required"), 0)),
	                    "address");
	assert_int_equal(json_integer_value(json_object_get(
	                     json_object_get(json_object_get(items, "properties"), "port"), "default")),
	                 22);
	json_decref(s);
	free(text);

	assert_int_equal(
	    obj_check("{\"hosts\": [{\"address\": \"a\"}, {\"address\": \"b\", \"port\": 2}]}", NULL, NULL),
	    0);
	obj_check("{\"hosts\": [{\"address\": \"a\"}, {\"address\": \"b\", \"port\": 0}]}", "/hosts/1/port",
	          "value below minimum");
	obj_check("{\"hosts\": [{\"address\": \"a\"}, {\"port\": 2}]}", "/hosts/1/address",
	          "missing required field");
	obj_check("{\"hosts\": [{\"address\": \"a\", \"colour\": 1}]}", "/hosts/0/colour", "unknown field");
	obj_check("{\"hosts\": [\"a\"]}", "/hosts/0", "wrong type");
	obj_check("{\"hosts\": {\"address\": \"a\"}}", "/hosts", "wrong type");
	obj_check("{\"hosts\": [{\"address\": 5}]}", "/hosts/0/address", "wrong type");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_schema),
	    cmocka_unit_test(test_each_diagnostic),
	    cmocka_unit_test(test_secret_values_never_in_diagnostics),
	    cmocka_unit_test(test_many_errors_reported_together),
	    cmocka_unit_test(test_valid_with_defaults_and_getters),
	    cmocka_unit_test(test_invalid_config_message),
	    cmocka_unit_test(test_undeclared_getter_logged),
	    cmocka_unit_test(test_diag_api),
	    cmocka_unit_test(test_random_configs),
	    cmocka_unit_test(test_object_array),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
