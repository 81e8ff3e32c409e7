/*
 * The hosting half against the example drivers (C, and Python when built):
 * features are what the driver implements, every other RPC answers
 * UNIMPLEMENTED, and offers flow through.
 */
#include <signal.h>

#include "sdk_test.h"

#ifndef EXAMPLE_BIN
#error EXAMPLE_BIN must name the drover-driver-example binary
#endif

#define CALL_MS 5000

static void check_offers_only_driver(const char *path, const char *type)
{
	struct drv_host *h = NULL;
	struct drv_status st;
	char err[1024];
	struct drv_spawn_opts o = {.path = path, .handshake_timeout_ms = 10000};

	assert_rc(drv_host_spawn(&o, &h, err, sizeof(err)), 0, err);

	drv_get_info_request ireq = DROVER__COMPUTE__V1__GET_INFO_REQUEST__INIT;
	drv_get_info_response *info = NULL;
	assert_rc(drv_host_get_info(h, &ireq, &info, CALL_MS, &st), 0, st.message);
	assert_string_equal(info->type, type);
	drv_response_free(&info->base);

	drv_get_features_request freq = DROVER__COMPUTE__V1__GET_FEATURES_REQUEST__INIT;
	drv_get_features_response *feat = NULL;
	assert_rc(drv_host_get_features(h, &freq, &feat, CALL_MS, &st), 0, st.message);
	assert_int_equal(feat->n_features, 1);
	assert_int_equal(feat->features[0], DRV_FEATURE_OFFERS);
	drv_response_free(&feat->base);

	drv_backend_config c = DROVER__COMPUTE__V1__BACKEND_CONFIG__INIT;
	c.config_json = "{}";
	drv_get_offers_request oreq = DROVER__COMPUTE__V1__GET_OFFERS_REQUEST__INIT;
	drv_get_offers_response *offers = NULL;
	oreq.config = &c;
	assert_rc(drv_host_get_offers(h, &oreq, &offers, CALL_MS, &st), 0, st.message);
	assert_true(offers->n_offers > 0);
	drv_response_free(&offers->base);

	/* The typed call for CreateInstance, then every other unadvertised RPC by name. */
	drv_create_instance_request creq = DROVER__COMPUTE__V1__CREATE_INSTANCE_REQUEST__INIT;
	drv_create_instance_response *cresp = (void *)1;
	creq.config = &c;
	assert_rc(drv_host_create_instance(h, &creq, &cresp, CALL_MS, &st), DRV_EUNIMPLEMENTED, st.message);
	assert_null(cresp);
	assert_int_equal(st.code, DRV_EUNIMPLEMENTED);

	const ProtobufCServiceDescriptor *svc = &drover__compute__v1__compute__descriptor;
	int unimplemented = 0;
	for (unsigned i = 0; i < svc->n_methods; i++) {
		const char *m = svc->methods[i].name;
		if (!strcmp(m, "GetInfo") || !strcmp(m, "GetFeatures") || !strcmp(m, "ValidateConfig") ||
		    !strcmp(m, "GetOffers"))
			continue;
		ProtobufCMessage *req = calloc(1, svc->methods[i].input->sizeof_message);
		ProtobufCMessage *resp = NULL;
		protobuf_c_message_init(svc->methods[i].input, req);
		int rc = drv_host_call(h, m, req, &resp, CALL_MS, &st);
		if (rc != DRV_EUNIMPLEMENTED)
			fail_msg("%s on %s: got %s (%s), want UNIMPLEMENTED", m, type, drv_error_name(rc),
			         st.message);
		assert_null(resp);
		free(req);
		unimplemented++;
	}
	assert_int_equal(unimplemented, 13);
	drv_host_free(h);
}

static void test_example_c(void **state)
{
	check_offers_only_driver(EXAMPLE_BIN, "example");
}

#ifdef EXAMPLE_PY_BIN
static void test_example_python(void **state)
{
	check_offers_only_driver(EXAMPLE_PY_BIN, "example-python");
}
#endif

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_example_c),
#ifdef EXAMPLE_PY_BIN
	    cmocka_unit_test(test_example_python),
#endif
	};
	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
