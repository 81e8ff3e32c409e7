/*
 * Tests of offer_check.c, the one set of rules droverd and the conformance
 * harness both apply: a good offer passes; each rule, broken alone, fails it
 * with a reason that names the field and the limit; the text rules hold for
 * ids and names alone; and the known-GPU table agrees with the sim's catalog
 * (SIM_CATALOG), so a healthy catalog never trips it.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
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

/* Fails unless the offer is refused with a reason that contains `part`; then resets the offer. */
static void refused(struct fixture *f, const char *part)
{
	f->why[0] = '\0';
	if (drv_offer_check(&f->offer, f->why, sizeof(f->why)))
		fail_msg("an offer that should fail with \"%s\" passed", part);
	if (!strstr(f->why, part))
		fail_msg("the reason \"%s\" does not contain \"%s\"", f->why, part);
	/* Without room for a reason the verdict is the same. */
	assert_false(drv_offer_check(&f->offer, NULL, 0));
	setup((void **)&f);
}

static void passes(struct fixture *f)
{
	if (!drv_offer_check(&f->offer, f->why, sizeof(f->why)))
		fail_msg("a good offer failed: %s", f->why);
}

static void test_good_offer_passes(void **state)
{
	struct fixture *f = *state;
	passes(f);
	/* Another backend's type is droverd's to overwrite, not a reason to drop the offer. */
	f->offer.backend_type = "sim";
	passes(f);
	/* Exactly 128 bytes, and multi-byte text, are fine; cpu_arch and backend_type may be empty. */
	char s128[DRV_TEXT_MAX_NAME + 1];
	memset(s128, 'x', DRV_TEXT_MAX_NAME);
	s128[DRV_TEXT_MAX_NAME] = '\0';
	f->offer.instance_type = s128;
	f->offer.region = "eu-zürich-東京";
	f->res.cpu_arch = "";
	f->offer.backend_type = "";
	passes(f);
	/* An offer without GPUs or zones. */
	f->res.n_gpus = 0;
	f->offer.n_zones = 0;
	passes(f);
	assert_false(drv_offer_check(NULL, f->why, sizeof(f->why)));
	assert_non_null(strstr(f->why, "the offer is missing"));
}

static void test_prices(void **state)
{
	struct fixture *f = *state;
	static const struct {
		double price;
		const char *reason;
	} bad[] = {
	    {NAN, "price_per_hour is NaN"},
	    {INFINITY, "price_per_hour is infinite"},
	    {-INFINITY, "price_per_hour is minus infinite"},
	    {-5, "price_per_hour is -5; the protocol requires > 0"},
	    {0, "price_per_hour is 0; the protocol requires > 0"},
	    {5e-324, "below the floor"},
	    {1e-7, "below the floor"},
	    {10000.01, "above the sanity ceiling"},
	    {1e9, "above the sanity ceiling"},
	    {1e308, "price_per_hour is 1e+308, above the sanity ceiling"},
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		f->offer.price_per_hour = bad[i].price;
		refused(f, bad[i].reason);
	}
	const double good[] = {DRV_OFFER_MIN_PRICE, DRV_OFFER_MAX_PRICE, 0.0035};
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		f->offer.price_per_hour = good[i];
		passes(f);
	}
}

/* Each bad text in every string field of an offer fails it, naming the field. */
static void test_text_fields(void **state)
{
	struct fixture *f = *state;
	char s129[DRV_TEXT_MAX_NAME + 2];
	memset(s129, 'x', DRV_TEXT_MAX_NAME + 1);
	s129[DRV_TEXT_MAX_NAME + 1] = '\0';
	const char *bad[] = {"",
	                     s129,
	                     "a\x1b[2J",
	                     "tab\there",
	                     "nl\nhere",
	                     "bad\xff",
	                     "cut\xe2\x82",
	                     "cut2\xc3",
	                     "c1\xc2\x9b",
	                     "over\xc0\xaf",
	                     "over3\xe0\x80\xaf",
	                     "sur\xed\xa0\x80",
	                     "big\xf4\x90\x80\x80",
	                     "del\x7f"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		f->offer.instance_type = (char *)bad[i];
		refused(f, "instance_type");
		f->offer.region = (char *)bad[i];
		refused(f, "region");
		f->zones[1] = (char *)bad[i];
		refused(f, "zones[1]");
		f->gpu.name = (char *)bad[i];
		refused(f, "resources.gpus[0].name");
		f->gpu.vendor = (char *)bad[i];
		refused(f, "resources.gpus[0].vendor");
		if (bad[i][0]) { /* an empty cpu_arch or backend_type is allowed */
			f->res.cpu_arch = (char *)bad[i];
			refused(f, "resources.cpu_arch");
			f->offer.backend_type = (char *)bad[i];
			refused(f, "backend_type");
		}
	}
	f->offer.instance_type = NULL;
	refused(f, "instance_type is empty");
	f->offer.n_zones = DRV_OFFER_MAX_ZONES + 1;
	refused(f, "zones has 65 entries, at most 64");
}

/* The reasons say what is wrong, and where, without quoting the value. */
static void test_text_reasons(void **state)
{
	struct fixture *f = *state;
	static const struct {
		const char *value, *reason;
	} bad[] = {
	    {"", "instance_type is empty"},
	    {"g6\n2xlarge", "instance_type holds the control character U+000A at offset 2"},
	    {"g6\x1b[2J", "holds the control character U+001B"},
	    {"g6\x7f", "holds the control character U+007F"},
	    {"g6\xc2\x9b", "holds the control character U+009B at offset 2"},
	    {"g6\xff", "instance_type is not valid UTF-8 (byte 0xff at offset 2)"},
	    {"g6\xc3", "not valid UTF-8 (byte 0xc3 at offset 2)"},
	    {"g6\xc0\xaf", "not valid UTF-8"},         /* an overlong '/' */
	    {"g6\xed\xa0\x80", "not valid UTF-8"},     /* a surrogate */
	    {"g6\xf4\x90\x80\x80", "not valid UTF-8"}, /* above U+10FFFF */
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		f->offer.instance_type = (char *)bad[i].value;
		refused(f, bad[i].reason);
	}
	char s129[DRV_TEXT_MAX_NAME + 2];
	memset(s129, 'r', DRV_TEXT_MAX_NAME + 1);
	s129[DRV_TEXT_MAX_NAME + 1] = '\0';
	f->offer.region = s129;
	refused(f, "region is 129 bytes long, at most 128");
	/* Over-long is the first reason, even with a bad byte in it. */
	s129[3] = '\x1b';
	f->offer.region = s129;
	refused(f, "region is 129 bytes long, at most 128");
	f->zones[1] = "us-east-1\tb";
	refused(f, "zones[1] holds the control character U+0009");
	f->gpu.name = "L4\x1b";
	refused(f, "resources.gpus[0].name holds the control character");
	f->gpu.vendor = "";
	refused(f, "resources.gpus[0].vendor is empty");
	f->res.cpu_arch = "x86\xff";
	refused(f, "resources.cpu_arch is not valid UTF-8");
	f->offer.backend_type = s129;
	refused(f, "backend_type is 129 bytes");
}

static void test_resources(void **state)
{
	struct fixture *f = *state;
	f->offer.resources = NULL;
	refused(f, "resources are missing");
	f->res.cpus = 0;
	refused(f, "resources.cpus is 0");
	f->res.memory_mib = 0;
	refused(f, "resources.memory_mib is 0");
	f->gpu.count = 0;
	refused(f, "resources.gpus[0].count is 0");
	f->gpus[0] = NULL;
	refused(f, "resources.gpus[0] is missing");
	f->res.n_gpus = DRV_OFFER_MAX_GPU_ENTRIES + 1;
	refused(f, "resources.gpus has 17 entries, at most 16");
	f->offer.availability = DROVER__COMPUTE__V1__AVAILABILITY__AVAILABILITY_UNSPECIFIED;
	refused(f, "availability is 0");
	f->offer.availability = 9;
	refused(f, "availability is 9");
	f->offer.availability = 99;
	refused(f, "availability is 99");
}

static void test_gpu_memory(void **state)
{
	struct fixture *f = *state;
	/* The generic bounds, for any GPU. */
	f->gpu.memory_mib = 24; /* GiB where MiB was meant */
	refused(f, "resources.gpus[0].memory_mib is 24, outside 1024..1048576 MiB for any GPU");
	f->gpu.name = "Z9000";
	f->gpu.memory_mib = 1023;
	refused(f, "resources.gpus[0].memory_mib is 1023, outside");
	f->gpu.name = "Z9000";
	f->gpu.memory_mib = 96;
	refused(f, "outside 1024..1048576 MiB");
	f->gpu.name = "Z9000";
	f->gpu.memory_mib = (uint64_t)DRV_OFFER_MAX_GPU_MEMORY_MIB + 1;
	refused(f, "resources.gpus[0].memory_mib is 1048577, outside");
	/* An unknown GPU meets only the generic bounds, both ends included. */
	const uint64_t unknown_ok[] = {DRV_OFFER_MIN_GPU_MEMORY_MIB, 4096, DRV_OFFER_MAX_GPU_MEMORY_MIB};
	for (size_t i = 0; i < sizeof(unknown_ok) / sizeof(unknown_ok[0]); i++) {
		f->gpu.name = "Z9000";
		f->gpu.memory_mib = unknown_ok[i];
		passes(f);
	}
	/* A known GPU's range: plausible for some GPU, not for an L4. The table's name is quoted. */
	f->gpu.name = "l4";
	f->gpu.memory_mib = 16384;
	refused(f, "resources.gpus[0].memory_mib is 16384, implausible for a L4 (20889..27033 MiB");
	static const struct {
		const char *name;
		uint64_t mib;
		bool ok;
	} known[] = {
	    /* Names match case-insensitively; reported sizes a little under nominal pass. */
	    {"t4", 15360, true},         {"A10G", 23028, true},     {"H100", 81559, true},
	    {"h100", 80, false},         {"H100", 40960, false},    {"MI300X", 196608, true},
	    {"MI300X", 2u << 20, false}, {"mi300x", 131072, false}, {"A100", 40960, true},
	};
	for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++) {
		f->gpu.name = (char *)known[i].name;
		f->gpu.memory_mib = known[i].mib;
		if (known[i].ok)
			passes(f);
		else
			refused(f, "resources.gpus[0].memory_mib");
	}
	uint64_t lo = 0, hi = 0;
	assert_true(drv_gpu_memory_known("a100", &lo, &hi));
	assert_true(lo <= 40 * 1024 && hi >= 80 * 1024);
	lo = hi = 7;
	assert_false(drv_gpu_memory_known("Z9000", &lo, &hi));
	assert_false(drv_gpu_memory_known(NULL, &lo, &hi));
	assert_true(lo == 7 && hi == 7);
}

/* The text rules alone, as droverd and the harness apply them to ids and names of instances. */
static void test_text_check(void **state)
{
	(void)state;
	char why[200];
	assert_true(drv_text_ok(NULL, 0));
	assert_true(drv_text_ok("", 0));
	assert_true(drv_text_ok("abc", 3));
	assert_false(drv_text_ok("abcd", 3));
	assert_true(drv_text_ok("\xf0\x9f\x98\x80", 4));  /* U+1F600 */
	assert_false(drv_text_ok("\xf4\x90\x80\x80", 8)); /* past U+10FFFF */
	assert_false(drv_text_ok("\xc2\x85", 8));         /* NEL, a C1 control */
	assert_true(drv_text_ok("\xc2\xa0", 8));          /* NBSP, the first character past C1 */
	assert_false(drv_text_ok("a\x1f", 8));

	char id[DRV_TEXT_MAX_ID + 2];
	memset(id, 'i', sizeof(id) - 1);
	id[sizeof(id) - 1] = '\0';
	assert_false(drv_text_check("instance_id", id, DRV_TEXT_MAX_ID, true, why, sizeof(why)));
	assert_string_equal(why, "instance_id is 257 bytes long, at most 256");
	id[DRV_TEXT_MAX_ID] = '\0';
	assert_true(drv_text_check("instance_id", id, DRV_TEXT_MAX_ID, true, why, sizeof(why)));
	assert_false(drv_text_check("instance_id", "", DRV_TEXT_MAX_ID, true, why, sizeof(why)));
	assert_string_equal(why, "instance_id is empty");
	assert_false(drv_text_check("instance_id", NULL, DRV_TEXT_MAX_ID, true, why, sizeof(why)));
	assert_true(drv_text_check("zone", NULL, DRV_TEXT_MAX_NAME, false, why, sizeof(why)));
	assert_false(drv_text_check("zone", "z\x9b", DRV_TEXT_MAX_NAME, false, why, sizeof(why)));
	assert_string_equal(why, "zone is not valid UTF-8 (byte 0x9b at offset 1)");
	assert_false(drv_text_check("id", "i-\xc2\x9b", DRV_TEXT_MAX_ID, true, NULL, 0));
}

static void test_utf8_len(void **state)
{
	(void)state;
	assert_int_equal(drv_utf8_len("a"), 1);
	assert_int_equal(drv_utf8_len("\x1b"), 1); /* well-formed, if not printable */
	assert_int_equal(drv_utf8_len("\xc3\xa9"), 2);
	assert_int_equal(drv_utf8_len("\xe6\x9d\xb1"), 3);
	assert_int_equal(drv_utf8_len("\xf0\x9f\x98\x80"), 4);
	assert_int_equal(drv_utf8_len("\xc3"), 0);             /* cut by the NUL */
	assert_int_equal(drv_utf8_len("\xc1\xbf"), 0);         /* overlong, 2 bytes */
	assert_int_equal(drv_utf8_len("\xe0\x9f\xbf"), 0);     /* overlong, 3 bytes */
	assert_int_equal(drv_utf8_len("\xf0\x8f\xbf\xbf"), 0); /* overlong, 4 bytes */
	assert_int_equal(drv_utf8_len("\xed\xb0\x80"), 0);     /* a surrogate */
	assert_int_equal(drv_utf8_len("\xf5\x80\x80\x80"), 0);
	assert_int_equal(drv_utf8_len("\x80"), 0);
}

static void test_utf8_cut(void **state)
{
	(void)state;
	const char *s = "ab\xc3\xa9\xe6\x9d\xb1";   /* a b é 東: 2 + 2 + 3 bytes */
	assert_int_equal(drv_utf8_cut(s, 7, 7), 7); /* short enough: all of it */
	assert_int_equal(drv_utf8_cut(s, 7, 100), 7);
	assert_int_equal(drv_utf8_cut(s, 7, 2), 2); /* a boundary */
	assert_int_equal(drv_utf8_cut(s, 7, 3), 2); /* inside é: back to its start */
	assert_int_equal(drv_utf8_cut(s, 7, 4), 4);
	assert_int_equal(drv_utf8_cut(s, 7, 5), 4); /* inside 東 */
	assert_int_equal(drv_utf8_cut(s, 7, 6), 4);
	assert_int_equal(drv_utf8_cut(s, 7, 0), 0);
	/* Only continuation bytes: nothing is kept rather than a broken sequence. */
	assert_int_equal(drv_utf8_cut("\x80\x80\x80", 3, 2), 0);
}

/*
 * Every GPU of drivers/sim/catalog.tsv (gpu_name, gpu_memory_gib in columns
 * 3 and 5) is in the table and passes: a healthy catalog never trips the
 * per-name ranges, and they are exercised by every GPU the sim sells.
 */
static void test_sim_catalog_fits(void **state)
{
	struct fixture *f = *state;
	FILE *in = fopen(SIM_CATALOG, "r");
	if (!in)
		fail_msg("cannot read the sim catalog %s", SIM_CATALOG);
	char line[4096];
	size_t gpus = 0, known = 0;
	bool header = true;
	while (fgets(line, sizeof(line), in)) {
		if (line[0] == '#' || line[0] == '\n')
			continue;
		if (header) {
			header = false;
			continue;
		}
		char *cols[6] = {0}, *save = NULL, *p = line;
		for (int i = 0; i < 6 && (cols[i] = strtok_r(p, "\t", &save)); i++)
			p = NULL;
		assert_non_null(cols[4]);
		if (strcmp(cols[2], "-") == 0)
			continue;
		uint64_t lo, hi;
		f->gpu.name = cols[2];
		f->gpu.memory_mib = strtoull(cols[4], NULL, 10) * 1024;
		if (!drv_offer_check(&f->offer, f->why, sizeof(f->why)))
			fail_msg("sim catalog %s (%s): %s", cols[1], cols[2], f->why);
		gpus++;
		known += drv_gpu_memory_known(cols[2], &lo, &hi);
	}
	fclose(in);
	assert_true(gpus > 50);
	assert_int_equal(known, gpus);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup(test_good_offer_passes, setup),
	    cmocka_unit_test_setup(test_prices, setup),
	    cmocka_unit_test_setup(test_text_fields, setup),
	    cmocka_unit_test_setup(test_text_reasons, setup),
	    cmocka_unit_test_setup(test_resources, setup),
	    cmocka_unit_test_setup(test_gpu_memory, setup),
	    cmocka_unit_test(test_text_check),
	    cmocka_unit_test(test_utf8_len),
	    cmocka_unit_test(test_utf8_cut),
	    cmocka_unit_test_setup(test_sim_catalog_fits, setup),
	};
	return cmocka_run_group_tests_name("sdk_offer_check", tests, NULL, NULL);
}
