/* Tests of offer_check.c: a good offer passes; each rule, broken alone, fails it and is named. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

#include "drover/driver.h"
#include "drover/offer_check.h"

struct fixture {
	drv_offer offer;
	drv_resources res;
	drv_gpu gpu;
	drv_gpu *gpus[1];
	char *zones[2];
	char why[300];
};

/* An 8-CPU, 32 GiB, 1×L4 (24 GiB) offer in us-east (zones a, b) at $0.80. */
static int setup(void **state)
{
	static struct fixture f;
	memset(&f, 0, sizeof(f));
	drover__compute__v1__offer__init(&f.offer);
	drover__compute__v1__resources__init(&f.res);
	drover__compute__v1__gpu__init(&f.gpu);
	f.gpu.name = "L4";
	f.gpu.vendor = "nvidia";
	f.gpu.count = 1;
	f.gpu.memory_mib = 24576;
	f.gpus[0] = &f.gpu;
	f.res.cpus = 8;
	f.res.memory_mib = 32768;
	f.res.cpu_arch = "x86_64";
	f.res.gpus = f.gpus;
	f.res.n_gpus = 1;
	f.offer.backend_type = "whatever";
	f.offer.instance_type = "g.l4";
	f.offer.region = "us-east";
	f.zones[0] = "us-east-a";
	f.zones[1] = "us-east-b";
	f.offer.zones = f.zones;
	f.offer.n_zones = 2;
	f.offer.price_per_hour = 0.80;
	f.offer.availability = DROVER__COMPUTE__V1__AVAILABILITY__AVAILABILITY_AVAILABLE;
	f.offer.resources = &f.res;
	*state = &f;
	return 0;
}

/* Fails unless the offer is refused with a reason that contains `field`. */
static void refused(struct fixture *f, const char *field)
{
	f->why[0] = '\0';
	if (drv_offer_check(&f->offer, f->why, sizeof(f->why)))
		fail_msg("an offer with a bad %s passed", field);
	if (!strstr(f->why, field))
		fail_msg("the reason \"%s\" does not name %s", f->why, field);
	setup((void **)&f);
}

static void test_good_offer_passes(void **state)
{
	struct fixture *f = *state;
	assert_true(drv_offer_check(&f->offer, f->why, sizeof(f->why)));
	/* Another backend's type is droverd's to overwrite, not a reason to drop the offer. */
	f->offer.backend_type = "sim";
	assert_true(drv_offer_check(&f->offer, NULL, 0));
	/* Exactly 128 bytes, and multi-byte text, are fine. */
	char s128[129];
	memset(s128, 'x', 128);
	s128[128] = '\0';
	f->offer.instance_type = s128;
	f->offer.region = "eu-zürich-東京";
	assert_true(drv_offer_check(&f->offer, f->why, sizeof(f->why)));
}

static void test_prices(void **state)
{
	struct fixture *f = *state;
	const double bad[] = {-5, 0, 5e-324, 1e-7, NAN, INFINITY, -INFINITY, 10000.01, 1e9};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		f->offer.price_per_hour = bad[i];
		refused(f, "price_per_hour");
	}
	f->offer.price_per_hour = DRV_OFFER_MIN_PRICE;
	assert_true(drv_offer_check(&f->offer, NULL, 0));
	f->offer.price_per_hour = DRV_OFFER_MAX_PRICE;
	assert_true(drv_offer_check(&f->offer, NULL, 0));
}

static void test_text_fields(void **state)
{
	struct fixture *f = *state;
	char s129[130];
	memset(s129, 'x', 129);
	s129[129] = '\0';
	const char *bad[] = {
	    "",           s129,           "a\x1b[2J",        "tab\there", "bad\xff", "cut\xe2\x82",
	    "c1\xc2\x9b", "over\xc0\xaf", "sur\xed\xa0\x80", "del\x7f"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		f->offer.instance_type = (char *)bad[i];
		refused(f, "instance_type");
		f->offer.region = (char *)bad[i];
		refused(f, "region");
		f->zones[1] = (char *)bad[i];
		refused(f, "zones[1]");
		f->gpu.name = (char *)bad[i];
		refused(f, "gpus[0].name");
		f->gpu.vendor = (char *)bad[i];
		refused(f, "gpus[0].vendor");
		if (bad[i][0]) { /* an empty cpu_arch is allowed */
			f->res.cpu_arch = (char *)bad[i];
			refused(f, "cpu_arch");
		}
	}
	f->offer.instance_type = NULL;
	refused(f, "instance_type");
	f->offer.n_zones = DRV_OFFER_MAX_ZONES + 1;
	refused(f, "zones");
}

static void test_resources(void **state)
{
	struct fixture *f = *state;
	f->offer.resources = NULL;
	refused(f, "resources");
	f->res.cpus = 0;
	refused(f, "resources.cpus");
	f->res.memory_mib = 0;
	refused(f, "resources.memory_mib");
	f->gpu.memory_mib = 24; /* GiB where MiB is meant */
	refused(f, "gpus[0].memory_mib");
	f->gpu.memory_mib = 1023;
	refused(f, "gpus[0].memory_mib");
	f->gpu.memory_mib = (uint64_t)DRV_OFFER_MAX_GPU_MEMORY_MIB + 1;
	refused(f, "gpus[0].memory_mib");
	f->gpu.count = 0;
	refused(f, "gpus[0].count");
	f->res.n_gpus = DRV_OFFER_MAX_GPU_ENTRIES + 1;
	refused(f, "resources.gpus");
	f->offer.availability = DROVER__COMPUTE__V1__AVAILABILITY__AVAILABILITY_UNSPECIFIED;
	refused(f, "availability");
	f->offer.availability = 99;
	refused(f, "availability");
}

static void test_text_ok(void **state)
{
	(void)state;
	assert_true(drv_text_ok(NULL, 0));
	assert_true(drv_text_ok("", 0));
	assert_true(drv_text_ok("abc", 3));
	assert_false(drv_text_ok("abcd", 3));
	assert_true(drv_text_ok("\xf0\x9f\x98\x80", 4));  /* U+1F600 */
	assert_false(drv_text_ok("\xf4\x90\x80\x80", 8)); /* past U+10FFFF */
	assert_false(drv_text_ok("\xc2\x85", 8));         /* NEL, a C1 control */
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup(test_good_offer_passes, setup),
	    cmocka_unit_test_setup(test_prices, setup),
	    cmocka_unit_test_setup(test_text_fields, setup),
	    cmocka_unit_test_setup(test_resources, setup),
	    cmocka_unit_test(test_text_ok),
	};
	return cmocka_run_group_tests_name("sdk_offer_check", tests, NULL, NULL);
}
