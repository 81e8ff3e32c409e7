/* Tests of features.c: features derived from ops, partial groups, markers, narrowing. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

#include "drv_internal.h"

static int op_offers(struct drv_call *c, const drv_get_offers_request *q, drv_get_offers_response *r)
{
	return 0;
}
static int op_create(struct drv_call *c, const drv_create_instance_request *q,
                     drv_create_instance_response *r)
{
	return 0;
}
static int op_get(struct drv_call *c, const drv_get_instance_request *q, drv_get_instance_response *r)
{
	return 0;
}
static int op_term(struct drv_call *c, const drv_terminate_instance_request *q,
                   drv_terminate_instance_response *r)
{
	return 0;
}
static int op_list(struct drv_call *c, const drv_list_instances_request *q, drv_list_instances_response *r)
{
	return 0;
}
static int op_cpg(struct drv_call *c, const drv_create_placement_group_request *q,
                  drv_create_placement_group_response *r)
{
	return 0;
}
static int op_dpg(struct drv_call *c, const drv_delete_placement_group_request *q,
                  drv_delete_placement_group_response *r)
{
	return 0;
}

#define BIT DRV_FEATURE_BIT

static struct drv_driver make_driver(const struct drv_compute_ops *ops)
{
	struct drv_driver d = {.version = DRV_DRIVER_V1, .type = "t", .driver_version = "1", .ops = ops};
	return d;
}

static void test_derive_from_ops(void **state)
{
	static const struct drv_compute_ops none = {.version = DRV_COMPUTE_OPS_V1};
	static const struct drv_compute_ops offers = {.version = DRV_COMPUTE_OPS_V1, .get_offers = op_offers};
	static const struct drv_compute_ops inst = {.version = DRV_COMPUTE_OPS_V1,
	                                            .get_offers = op_offers,
	                                            .create_instance = op_create,
	                                            .get_instance = op_get,
	                                            .terminate_instance = op_term,
	                                            .list_instances = op_list,
	                                            .create_placement_group = op_cpg,
	                                            .delete_placement_group = op_dpg};
	struct drv_driver d = make_driver(&none);
	assert_int_equal(drv_driver_features(&d), 0);
	d.ops = NULL;
	assert_int_equal(drv_driver_features(&d), 0);
	d = make_driver(&offers);
	assert_int_equal(drv_driver_features(&d), BIT(DRV_FEATURE_OFFERS));
	d = make_driver(&inst);
	assert_int_equal(drv_driver_features(&d), BIT(DRV_FEATURE_OFFERS) | BIT(DRV_FEATURE_CREATE_INSTANCE) |
	                                              BIT(DRV_FEATURE_PLACEMENT_GROUPS));

	/* Markers are added; an operation feature claimed as a marker is not. */
	d.markers = BIT(DRV_FEATURE_MULTINODE) | BIT(DRV_FEATURE_PRIVILEGED) | BIT(DRV_FEATURE_VOLUMES);
	drv_features f = drv_driver_features(&d);
	assert_true(f & BIT(DRV_FEATURE_MULTINODE));
	assert_true(f & BIT(DRV_FEATURE_PRIVILEGED));
	assert_false(f & BIT(DRV_FEATURE_VOLUMES));
	char err[300];
	assert_int_equal(drv_driver_check(&d, err, sizeof(err)), DRV_EINVAL);
	assert_non_null(strstr(err, "markers"));
}

static void test_partial_group(void **state)
{
	/* CREATE_INSTANCE without list_instances: not advertised, and check names the gap. */
	static const struct drv_compute_ops partial = {.version = DRV_COMPUTE_OPS_V1,
	                                               .get_offers = op_offers,
	                                               .create_instance = op_create,
	                                               .get_instance = op_get,
	                                               .terminate_instance = op_term};
	struct drv_driver d = make_driver(&partial);
	char err[300] = "";
	assert_int_equal(drv_driver_features(&d), BIT(DRV_FEATURE_OFFERS));
	assert_int_equal(drv_driver_check(&d, err, sizeof(err)), DRV_EINVAL);
	assert_non_null(strstr(err, "list_instances"));
	assert_non_null(strstr(err, "CREATE_INSTANCE"));

	static const struct drv_compute_ops pg = {.version = DRV_COMPUTE_OPS_V1,
	                                          .delete_placement_group = op_dpg};
	d = make_driver(&pg);
	assert_int_equal(drv_driver_check(&d, err, sizeof(err)), DRV_EINVAL);
	assert_non_null(strstr(err, "create_placement_group"));
}

static void test_check_declaration(void **state)
{
	static const struct drv_compute_ops offers = {.version = DRV_COMPUTE_OPS_V1, .get_offers = op_offers};
	static const struct drv_compute_ops v9 = {.version = 9, .get_offers = op_offers};
	struct drv_driver d = make_driver(&offers);
	char err[300];

	assert_int_equal(drv_driver_check(&d, err, sizeof(err)), 0);
	d.type = "Bad_Type";
	assert_int_equal(drv_driver_check(&d, err, sizeof(err)), DRV_EINVAL);
	assert_non_null(strstr(err, "Bad_Type"));
	d.type = "";
	assert_int_equal(drv_driver_check(&d, err, sizeof(err)), DRV_EINVAL);
	d = make_driver(&v9);
	assert_int_equal(drv_driver_check(&d, err, sizeof(err)), DRV_EINVAL);
	assert_non_null(strstr(err, "version 9"));
	d = make_driver(&offers);
	d.version = 2;
	assert_int_equal(drv_driver_check(&d, err, sizeof(err)), DRV_EINVAL);
	/* GetInfo would carry an empty driver_version, which info.well_formed fails. */
	d = make_driver(&offers);
	d.driver_version = NULL;
	assert_int_equal(drv_driver_check(&d, err, sizeof(err)), DRV_EINVAL);
	assert_non_null(strstr(err, "driver_version is empty"));
	d.driver_version = "";
	assert_int_equal(drv_driver_check(&d, err, sizeof(err)), DRV_EINVAL);

	static const struct drv_config_field bad_default[] = {
	    {.name = "n", .type = DRV_FIELD_INTEGER, .default_json = "{oops"}, {.name = NULL}};
	d = make_driver(&offers);
	d.config_fields = bad_default;
	assert_int_equal(drv_driver_check(&d, err, sizeof(err)), DRV_EINVAL);
	assert_non_null(strstr(err, "\"n\""));

	static const struct drv_config_field int_secret[] = {
	    {.name = "k", .type = DRV_FIELD_INTEGER, .secret = true}, {.name = NULL}};
	d.config_fields = int_secret;
	assert_int_equal(drv_driver_check(&d, err, sizeof(err)), DRV_EINVAL);
	assert_non_null(strstr(err, "secret \"k\""));
}

/* Each declaration the schema, the checks and the getters would disagree about is refused, naming it. */
static void test_check_fields(void **state)
{
	static const struct drv_compute_ops offers = {.version = DRV_COMPUTE_OPS_V1, .get_offers = op_offers};
	static const char *const ab[] = {"a", "b", NULL};
	static const struct drv_config_field obj_items[] = {{.name = "port", .type = DRV_FIELD_INTEGER}, {0}};
	static const struct drv_config_field obj_bad_items[] = {
	    {.name = "key", .type = DRV_FIELD_STRING, .secret = true}, {0}};
	static const struct drv_config_field obj_bad_default[] = {
	    {.name = "port", .type = DRV_FIELD_INTEGER, .default_json = "\"22\""}, {0}};
	static const struct {
		struct drv_config_field f[3];
		const char *want; /* in the message; NULL: accepted */
	} cases[] = {
	    {{{.name = "n", .type = DRV_FIELD_INTEGER, .default_json = "\"abc\""}}, "wrong type"},
	    {{{.name = "n", .type = DRV_FIELD_INTEGER, .default_json = "null"}}, "wrong type"},
	    {{{.name = "n", .type = DRV_FIELD_INTEGER, .default_json = "2.5"}}, "wrong type"},
	    {{{.name = "n",
	       .type = DRV_FIELD_INTEGER,
	       .has_maximum = true,
	       .maximum = 5,
	       .default_json = "10"}},
	     "value above maximum"},
	    {{{.name = "n",
	       .type = DRV_FIELD_NUMBER,
	       .has_minimum = true,
	       .minimum = 1,
	       .default_json = "0.5"}},
	     "value below minimum"},
	    {{{.name = "s", .type = DRV_FIELD_STRING, .enum_values = ab, .default_json = "\"zzz\""}},
	     "value not allowed"},
	    {{{.name = "z", .type = DRV_FIELD_STRING_ARRAY, .default_json = "[\"a\", 1]"}}, "wrong type"},
	    {{{.name = "h", .type = DRV_FIELD_OBJECT_ARRAY}}, "declares no items"},
	    {{{.name = "h", .type = DRV_FIELD_STRING_ARRAY, .items = obj_items}}, "has items but"},
	    {{{.name = "h", .type = DRV_FIELD_OBJECT_ARRAY, .items = obj_bad_items}},
	     "must be a plain field"},
	    {{{.name = "h", .type = DRV_FIELD_OBJECT_ARRAY, .items = obj_bad_default}},
	     "in the items of \"h\""},
	    {{{.name = "h", .type = DRV_FIELD_OBJECT_ARRAY, .items = obj_items}}, NULL},
	    {{{.name = "k", .type = DRV_FIELD_STRING, .secret = true, .default_json = "\"x\""}},
	     "secret \"k\" has a default"},
	    {{{.name = "", .type = DRV_FIELD_STRING}}, "empty name"},
	    {{{.name = "n", .type = DRV_FIELD_INTEGER, .enum_values = ab}}, "enum_values"},
	    {{{.name = "s", .type = DRV_FIELD_STRING, .has_minimum = true}}, "minimum or maximum"},
	    {{{.name = "n",
	       .type = DRV_FIELD_INTEGER,
	       .has_minimum = true,
	       .minimum = 5,
	       .has_maximum = true,
	       .maximum = 1}},
	     "above its maximum"},
	    {{{.name = "s", .type = DRV_FIELD_STRING}, {.name = "s", .type = DRV_FIELD_INTEGER}},
	     "\"s\" is declared twice"},
	    {{{.name = "key", .type = DRV_FIELD_STRING},
	      {.name = "key", .type = DRV_FIELD_STRING, .secret = true}},
	     "\"key\" is declared twice"},
	    /* Defaults that fit are fine, 3.0 is an integer as in a written config. */
	    {{{.name = "n",
	       .type = DRV_FIELD_INTEGER,
	       .has_maximum = true,
	       .maximum = 5,
	       .default_json = "3.0"},
	      {.name = "s", .type = DRV_FIELD_STRING, .enum_values = ab, .default_json = "\"b\""}},
	     NULL},
	};
	char err[400];
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct drv_driver d = make_driver(&offers);
		d.config_fields = cases[i].f;
		err[0] = '\0';
		int rc = drv_driver_check(&d, err, sizeof(err));
		if (!cases[i].want) {
			if (rc != 0)
				fail_msg("case %zu refused: %s", i, err);
			continue;
		}
		if (rc != DRV_EINVAL || !strstr(err, cases[i].want))
			fail_msg("case %zu: rc %d, message \"%s\", want \"%s\"", i, rc, err, cases[i].want);
	}
}

/* A marker bit that names no feature of the protocol would reach GetFeatures; refused at start-up. */
static void test_check_unknown_markers(void **state)
{
	static const struct drv_compute_ops offers = {.version = DRV_COMPUTE_OPS_V1, .get_offers = op_offers};
	struct drv_driver d = make_driver(&offers);
	char err[300];

	d.markers = BIT(DRV_FEATURE_MULTINODE) | BIT(DRV_FEATURE_PRIVATE_GATEWAYS);
	assert_int_equal(drv_driver_check(&d, err, sizeof(err)), 0);
	d.markers = BIT(DRV_FEATURE_MULTINODE) | BIT(40);
	assert_int_equal(drv_driver_check(&d, err, sizeof(err)), DRV_EINVAL);
	assert_non_null(strstr(err, "bit 40"));
	d.markers = BIT(0);
	assert_int_equal(drv_driver_check(&d, err, sizeof(err)), DRV_EINVAL);
	assert_non_null(strstr(err, "bit 0"));
}

/* A narrow hook that drops OFFERS when config says so, and tries to add VOLUMES. */
static void narrow(struct drv_call *call, drv_features *f)
{
	if (drv_call_config_bool(call, "no_offers", false))
		*f &= ~BIT(DRV_FEATURE_OFFERS);
	*f |= BIT(DRV_FEATURE_VOLUMES) | BIT(DRV_FEATURE_RESERVATION);
}

static void test_narrowing(void **state)
{
	static const struct drv_compute_ops ops = {.version = DRV_COMPUTE_OPS_V1, .get_offers = op_offers};
	static const struct drv_config_field fields[] = {{.name = "no_offers", .type = DRV_FIELD_BOOLEAN},
	                                                 {.name = NULL}};
	struct drv_driver d = make_driver(&ops);
	d.config_fields = fields;
	d.markers = BIT(DRV_FEATURE_MULTINODE);
	d.narrow_features = narrow;

	struct drv_call call;
	drv_backend_config bc = DROVER__COMPUTE__V1__BACKEND_CONFIG__INIT;
	bc.config_json = "{\"no_offers\": true}";
	drv__call_init(&call, &d, NULL, "GetFeatures");
	assert_int_equal(drv__call_set_config(&call, &bc, NULL), 0);
	/* Bits the hook sets are ignored; the one it clears is gone. */
	assert_int_equal(drv__features_for_call(&d, &call), BIT(DRV_FEATURE_MULTINODE));
	drv__call_release(&call);

	bc.config_json = "{}";
	drv__call_init(&call, &d, NULL, "GetFeatures");
	assert_int_equal(drv__call_set_config(&call, &bc, NULL), 0);
	assert_int_equal(drv__features_for_call(&d, &call),
	                 BIT(DRV_FEATURE_OFFERS) | BIT(DRV_FEATURE_MULTINODE));

	/* The response lists features ascending. */
	drv_get_features_response resp = DROVER__COMPUTE__V1__GET_FEATURES_RESPONSE__INIT;
	assert_int_equal(drv__features_to_response(drv__features_for_call(&d, &call), &resp, &call.arena), 0);
	assert_int_equal(resp.n_features, 2);
	assert_int_equal(resp.features[0], DRV_FEATURE_OFFERS);
	assert_int_equal(resp.features[1], DRV_FEATURE_MULTINODE);
	drv__call_release(&call);
}

static void test_method_table(void **state)
{
	/* Every Compute method but the identity ones has a row, and every row a method. */
	const ProtobufCServiceDescriptor *svc = &drover__compute__v1__compute__descriptor;
	size_t rows = 0;
	for (unsigned i = 0; i < svc->n_methods; i++) {
		const char *n = svc->methods[i].name;
		if (!strcmp(n, "GetInfo") || !strcmp(n, "GetFeatures") || !strcmp(n, "ValidateConfig"))
			continue;
		const struct drv__method *m = drv__method_find(n);
		if (!m)
			fail_msg("Compute method %s has no row in rpc_table.h", n);
		assert_true(m->feature > 0);
		rows++;
	}
	assert_int_equal(rows, drv__n_methods);
	assert_null(drv__method_find("NoSuchMethod"));
	assert_string_equal(drv_feature_name(DRV_FEATURE_OFFERS), "OFFERS");
	assert_int_equal(drv_feature_from_name("private_gateways"), DRV_FEATURE_PRIVATE_GATEWAYS);
	assert_int_equal(drv_feature_from_name("nope"), -1);
	assert_null(drv_feature_name(0));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_derive_from_ops),       cmocka_unit_test(test_partial_group),
	    cmocka_unit_test(test_check_declaration),     cmocka_unit_test(test_check_fields),
	    cmocka_unit_test(test_check_unknown_markers), cmocka_unit_test(test_narrowing),
	    cmocka_unit_test(test_method_table),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
