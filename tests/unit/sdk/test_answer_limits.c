/*
 * The hosting half's answer limits (struct drv_answer_limits): a real
 * driver process (fixture-driver-broken-sdk) spawned with limits, and each
 * limit shown to fail its call with DRV_ERANGE and a message naming it:
 * the per-call size check, gRPC's own refusal at the transport's limit, the
 * count of offers, and the connection's memory quota cutting off an answer
 * that is still arriving. Calls within the limits, before and after, work.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "drover/host.h"

#define CALL_MS 20000

static void quiet(void *ud, const char *driver_name, const char *line)
{
	(void)ud;
	(void)driver_name;
	(void)line;
}

static struct drv_host *spawn(const char *fault, struct drv_answer_limits limits)
{
	const char *args[] = {"--fault", fault, NULL};
	struct drv_spawn_opts o = {.path = BROKEN_SDK,
	                           .args = fault ? args : NULL,
	                           .on_stderr = quiet,
	                           .handshake_timeout_ms = 10000,
	                           .limits = limits};
	struct drv_host *h = NULL;
	char err[512];
	if (drv_host_spawn(&o, &h, err, sizeof(err)) != 0)
		fail_msg("spawn: %s", err);
	return h;
}

/* GetOffers with a config JSON; the answer is freed; returns the code, *n the offers. */
static int offers(struct drv_host *h, const char *config_json, size_t *n, struct drv_status *st)
{
	drv_backend_config cfg = DROVER__COMPUTE__V1__BACKEND_CONFIG__INIT;
	drv_get_offers_request req = DROVER__COMPUTE__V1__GET_OFFERS_REQUEST__INIT;
	drv_get_offers_response *resp = NULL;
	cfg.config_json = (char *)config_json;
	req.config = &cfg;
	int rc = drv_host_get_offers(h, &req, &resp, CALL_MS, st);
	*n = resp ? resp->n_offers : 0;
	drv_response_free(resp);
	return rc;
}

static int get_info(struct drv_host *h, struct drv_status *st)
{
	drv_get_info_request req = DROVER__COMPUTE__V1__GET_INFO_REQUEST__INIT;
	drv_get_info_response *resp = NULL;
	int rc = drv_host_get_info(h, &req, &resp, CALL_MS, st);
	drv_response_free(resp);
	return rc;
}

static void expect_range(int rc, const struct drv_status *st, const char *words)
{
	if (rc != DRV_ERANGE)
		fail_msg("expected DRV_ERANGE, got %s: %s", drv_error_name(rc), st->message);
	if (!strstr(st->message, words))
		fail_msg("message \"%s\" lacks \"%s\"", st->message, words);
}

#define SMALL "{\"project\": \"p\"}"                             /* 12 offers, about 1.5 KB */
#define LARGER "{\"project\": \"p\", \"synthetic_offers\": 200}" /* 212 offers, about 20 KB */

/* The per-call checks: each call's size below the transport's limit, and the count of offers. */
static void test_per_call_limits(void **state)
{
	(void)state;
	struct drv_status st;
	size_t n;
	struct drv_host *h = spawn(
	    NULL, (struct drv_answer_limits){.answer_bytes = 64, .offers_answer_bytes = 8192, .offers = 100});
	/* Within every limit. */
	assert_int_equal(offers(h, SMALL, &n, &st), 0);
	assert_int_equal(n, 12);
	/* Over the GetOffers size limit, far below the transport's (8 KiB): checked by the call. */
	expect_range(offers(h, LARGER, &n, &st), &st, "exceeds the 8 KiB limit");
	assert_non_null(strstr(st.message, "GetOffers answer of "));
	/* Every other answer has its own limit: 64 bytes is less than any GetInfo. */
	expect_range(get_info(h, &st), &st, "GetInfo answer of ");
	assert_non_null(strstr(st.message, "exceeds the 64 bytes limit"));
	drv_host_free(h);

	h = spawn(NULL, (struct drv_answer_limits){
	                    .answer_bytes = 1 << 20, .offers_answer_bytes = 1 << 20, .offers = 100});
	expect_range(offers(h, LARGER, &n, &st), &st,
	             "GetOffers answer holds more than 100 offers, the limit");
	/* The host keeps working after a refused answer. */
	assert_int_equal(offers(h, SMALL, &n, &st), 0);
	assert_int_equal(get_info(h, &st), 0);
	drv_host_free(h);
}

/* An answer over the transport's limit: gRPC refuses it, the call says so in the limit's words. */
static void test_transport_limit(void **state)
{
	(void)state;
	struct drv_status st;
	size_t n;
	struct drv_host *h = spawn(
	    NULL,
	    (struct drv_answer_limits){.answer_bytes = 16384, .offers_answer_bytes = 16384, .offers = 1000});
	expect_range(offers(h, LARGER, &n, &st), &st, "exceeds the 16 KiB limit");
	assert_int_equal(offers(h, SMALL, &n, &st), 0);
	drv_host_free(h);
}

/*
 * An answer many times the limit: the connection's quota (twice the larger
 * limit) cuts it off while it arrives, or gRPC refuses it whole; either way
 * the message names the limit, and the driver still answers afterwards.
 */
static void test_quota_cuts_off(void **state)
{
	(void)state;
	struct drv_status st;
	size_t n;
	/* droverd's defaults: a 60 MB answer against 16 MiB, a quota of 32 MiB. */
	struct drv_host *h = spawn("huge-offers", (struct drv_answer_limits){.answer_bytes = 1 << 20,
	                                                                     .offers_answer_bytes = 16 << 20,
	                                                                     .offers = 1000000});
	expect_range(offers(h, "{\"project\": \"p\", \"huge_offers_bytes\": 60000000}", &n, &st), &st,
	             "16 MiB");
	/*
	 * The rest of the cut-off answer may still be arriving and filling the
	 * buffers for a moment, failing calls the same way; then the connection
	 * is usable again.
	 */
	int rc = -1;
	for (int i = 0; i < 1000 && rc != 0; i++) {
		rc = get_info(h, &st);
		if (rc != 0) {
			expect_range(rc, &st, "buffers");
			usleep(10000);
		}
	}
	assert_int_equal(rc, 0);
	drv_host_free(h);
}

/* No limits given: the transport's default alone, as before (the harness relies on it). */
static void test_no_limits(void **state)
{
	(void)state;
	struct drv_status st;
	size_t n;
	struct drv_host *h = spawn("huge-offers", (struct drv_answer_limits){0});
	assert_int_equal(offers(h, "{\"project\": \"p\", \"huge_offers_bytes\": 2000000}", &n, &st), 0);
	assert_true(n >= 9000);
	drv_host_free(h);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_per_call_limits),
	    cmocka_unit_test(test_transport_limit),
	    cmocka_unit_test(test_quota_cuts_off),
	    cmocka_unit_test(test_no_limits),
	};
	return cmocka_run_group_tests_name("sdk_answer_limits", tests, NULL, NULL);
}
