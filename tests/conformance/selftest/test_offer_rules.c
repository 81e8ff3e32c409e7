/*
 * Unit tests of offer_rules.c: every rule passes a good offer and fails the
 * bad value it exists for, and the GPU table agrees with the sim's catalog
 * (its path is argv[1]), so a healthy catalog never trips it.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "offer_rules.h"

static const char *catalog_path;

/* A good offer: 8 cpus, 32 GiB, one L4 with 24 GiB, $0.80/h in us-east. */
struct good {
	drv_offer o;
	drv_resources r;
	drv_gpu g;
	drv_gpu *gp[1];
	char *zones[2];
};

static void good_init(struct good *x)
{
	drv_offer o = DROVER__COMPUTE__V1__OFFER__INIT;
	drv_resources r = DROVER__COMPUTE__V1__RESOURCES__INIT;
	drv_gpu g = DROVER__COMPUTE__V1__GPU__INIT;
	x->o = o;
	x->r = r;
	x->g = g;
	x->o.backend_type = "sim";
	x->o.instance_type = "g6.2xlarge";
	x->o.region = "us-east-1";
	x->zones[0] = "us-east-1a";
	x->zones[1] = "us-east-1b";
	x->o.zones = x->zones;
	x->o.n_zones = 2;
	x->o.price_per_hour = 0.8;
	x->o.availability = DROVER__COMPUTE__V1__AVAILABILITY__AVAILABILITY_AVAILABLE;
	x->o.resources = &x->r;
	x->r.cpus = 8;
	x->r.memory_mib = 32768;
	x->r.cpu_arch = "x86_64";
	x->g.name = "L4";
	x->g.vendor = "nvidia";
	x->g.count = 1;
	x->g.memory_mib = 24576;
	x->gp[0] = &x->g;
	x->r.gpus = x->gp;
	x->r.n_gpus = 1;
}

/* The reason for `x`, which must be broken, must contain `part`. */
static void expect_broken(struct good *x, const char *part)
{
	char buf[300];
	const char *why = offer_rules_check(&x->o, buf, sizeof(buf));
	if (!why || !strstr(why, part))
		fail_msg("expected a reason containing \"%s\", got %s", part, why ? why : "(none)");
}

static void test_good_offer_passes(void **state)
{
	(void)state;
	struct good x;
	char buf[300];
	good_init(&x);
	assert_null(offer_rules_check(&x.o, buf, sizeof(buf)));
	/* Multi-byte UTF-8 is fine; so is exactly the limit. */
	x.o.region = "eu-zürich-1";
	assert_null(offer_rules_check(&x.o, buf, sizeof(buf)));
	char limit[OFFER_RULES_NAME_MAX + 1];
	memset(limit, 'a', OFFER_RULES_NAME_MAX);
	limit[OFFER_RULES_NAME_MAX] = '\0';
	x.o.instance_type = limit;
	assert_null(offer_rules_check(&x.o, buf, sizeof(buf)));
}

static void test_texts(void **state)
{
	(void)state;
	struct good x;
	char over[OFFER_RULES_NAME_MAX + 2];
	memset(over, 'a', OFFER_RULES_NAME_MAX + 1);
	over[OFFER_RULES_NAME_MAX + 1] = '\0';
	static const struct {
		const char *value, *reason;
	} bad[] = {
	    {"", "instance_type is empty"},
	    {"g6\n2xlarge", "control character U+000A at offset 2"},
	    {"g6\x1b[2J", "control character U+001B"},
	    {"g6\x7f", "control character U+007F"},
	    {"g6\xc2\x9b", "control character U+009B at offset 2"},
	    {"g6\xff", "not valid UTF-8 (byte 0xff at offset 2)"},
	    {"g6\xc3", "not valid UTF-8"},
	    {"g6\xc0\xaf", "not valid UTF-8"},         /* an overlong '/' */
	    {"g6\xed\xa0\x80", "not valid UTF-8"},     /* a surrogate */
	    {"g6\xf4\x90\x80\x80", "not valid UTF-8"}, /* above U+10FFFF */
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		good_init(&x);
		x.o.instance_type = (char *)bad[i].value;
		expect_broken(&x, bad[i].reason);
	}
	good_init(&x);
	x.o.region = over;
	expect_broken(&x, "region is 129 bytes long, at most 128");
	good_init(&x);
	x.o.region = "";
	expect_broken(&x, "region is empty");
	good_init(&x);
	x.zones[1] = "us-east-1\tb";
	expect_broken(&x, "zones[1] holds the control character U+0009");
	good_init(&x);
	x.o.backend_type = over;
	expect_broken(&x, "backend_type is 129 bytes");
	good_init(&x);
	x.g.name = "L4\x1b";
	expect_broken(&x, "resources.gpus[0].name holds the control character");
	good_init(&x);
	x.g.vendor = "";
	expect_broken(&x, "resources.gpus[0].vendor is empty");
	good_init(&x);
	x.r.cpu_arch = "x86\xff";
	expect_broken(&x, "resources.cpu_arch is not valid UTF-8");
}

static void test_prices(void **state)
{
	(void)state;
	struct good x;
	static const struct {
		double price;
		const char *reason;
	} bad[] = {
	    {NAN, "NaN"},
	    {INFINITY, "is infinite"},
	    {-INFINITY, "minus infinite"},
	    {-5, "is -5; the protocol requires > 0"},
	    {0, "is 0; the protocol requires > 0"},
	    {5e-324, "below the floor"},
	    {1e-7, "below the floor"},
	    {10000.01, "above the sanity ceiling"},
	    {1e308, "is 1e+308, above the sanity ceiling"},
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		good_init(&x);
		x.o.price_per_hour = bad[i].price;
		expect_broken(&x, bad[i].reason);
	}
	char buf[200];
	assert_null(offer_rules_price(OFFER_RULES_PRICE_MIN, buf, sizeof(buf)));
	assert_null(offer_rules_price(OFFER_RULES_PRICE_MAX, buf, sizeof(buf)));
	assert_null(offer_rules_price(0.0035, buf, sizeof(buf)));
}

static void test_resources(void **state)
{
	(void)state;
	struct good x;
	good_init(&x);
	x.o.resources = NULL;
	expect_broken(&x, "resources are missing");
	good_init(&x);
	x.r.cpus = 0;
	expect_broken(&x, "resources.cpus is 0");
	good_init(&x);
	x.r.memory_mib = 0;
	expect_broken(&x, "resources.memory_mib is 0");
	good_init(&x);
	x.o.availability = 0;
	expect_broken(&x, "availability is 0");
	good_init(&x);
	x.o.availability = 9;
	expect_broken(&x, "availability is 9");
	good_init(&x);
	x.g.count = 0;
	expect_broken(&x, "resources.gpus[0].count is 0");
}

static void test_gpu_memory(void **state)
{
	(void)state;
	struct good x;
	char buf[300];
	good_init(&x);
	x.g.memory_mib = 24; /* GiB where MiB was meant */
	expect_broken(&x, "GPU memory_mib is 24, outside 512..1048576 MiB");
	good_init(&x);
	x.g.memory_mib = 16384; /* plausible for a GPU, not for an L4 */
	expect_broken(&x, "implausible for a L4");
	/* Known names match case-insensitively; reported sizes a little under nominal pass. */
	assert_null(offer_rules_gpu_memory("t4", 15360, buf, sizeof(buf)));
	assert_null(offer_rules_gpu_memory("A10G", 23028, buf, sizeof(buf)));
	assert_null(offer_rules_gpu_memory("H100", 81559, buf, sizeof(buf)));
	assert_non_null(offer_rules_gpu_memory("h100", 80, buf, sizeof(buf)));
	assert_non_null(offer_rules_gpu_memory("H100", 40960, buf, sizeof(buf)));
	assert_non_null(offer_rules_gpu_memory("MI300X", 2u << 20, buf, sizeof(buf)));
	/* An unknown GPU only meets the generic bounds. */
	assert_null(offer_rules_gpu_memory("Z9000", 4096, buf, sizeof(buf)));
	assert_non_null(offer_rules_gpu_memory("Z9000", 96, buf, sizeof(buf)));
}

/* Every GPU of drivers/sim/catalog.tsv (gpu_name, gpu_memory_gib in columns 3 and 5) passes. */
static void test_sim_catalog_fits(void **state)
{
	(void)state;
	FILE *f = fopen(catalog_path, "r");
	if (!f)
		fail_msg("cannot read the sim catalog %s", catalog_path);
	char line[4096];
	size_t gpus = 0, known = 0;
	bool header = true;
	while (fgets(line, sizeof(line), f)) {
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
		uint64_t mib = strtoull(cols[4], NULL, 10) * 1024, lo, hi;
		char buf[300];
		const char *why = offer_rules_gpu_memory(cols[2], mib, buf, sizeof(buf));
		if (why)
			fail_msg("sim catalog %s (%s): %s", cols[1], cols[2], why);
		gpus++;
		known += offer_rules_gpu_known(cols[2], &lo, &hi);
	}
	fclose(f);
	assert_true(gpus > 50);
	/* The table knows every GPU the sim sells, so the per-name ranges are exercised. */
	assert_int_equal(known, gpus);
}

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: test_offer_rules PATH/drivers/sim/catalog.tsv\n");
		return 2;
	}
	catalog_path = argv[1];
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_good_offer_passes),
	    cmocka_unit_test(test_texts),
	    cmocka_unit_test(test_prices),
	    cmocka_unit_test(test_resources),
	    cmocka_unit_test(test_gpu_memory),
	    cmocka_unit_test(test_sim_catalog_fits),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
