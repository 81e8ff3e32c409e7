/*
 * The sim catalog and GetOffers: the embedded catalog's breadth, the parser's
 * errors, offer filters, region limits, availability and synthetic offers.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <strings.h>
#include <time.h>

#include <cmocka.h>

#include "drover/driver.h"
#include "sim_test_util.h"

static const struct sim_catalog *cat(void)
{
	struct sim_err e = {{0}};
	const struct sim_catalog *c = sim_catalog_default(&e);
	if (!c)
		fail_msg("the embedded catalog does not parse: %s", e.msg);
	return c;
}

static int teardown(void **state)
{
	sim_state_registry_clear();
	sim_synth_cleanup();
	return 0;
}

static bool has_gpu(const struct sim_catalog *c, const char *name, uint64_t mem_gib)
{
	for (size_t i = 0; i < c->n_types; i++)
		if (c->types[i].gpu_name && strcmp(c->types[i].gpu_name, name) == 0 &&
		    (mem_gib == 0 || c->types[i].gpu_memory_mib == mem_gib * 1024))
			return true;
	return false;
}

static void test_catalog_breadth(void **state)
{
	const struct sim_catalog *c = cat();
	assert_true(c->n_types >= 150);
	assert_true(c->n_regions >= 10);

	const char *providers[16];
	size_t np = 0;
	size_t cpu_only = 0, arm = 0, spot = 0;
	for (size_t i = 0; i < c->n_types; i++) {
		const struct sim_type *t = &c->types[i];
		size_t j;
		for (j = 0; j < np; j++)
			if (strcmp(providers[j], t->provider) == 0)
				break;
		if (j == np) {
			assert_true(np < 16);
			providers[np++] = t->provider;
		}
		cpu_only += t->gpu_count == 0;
		arm += strcmp(t->cpu_arch, "arm64") == 0;
		spot += t->spot_price > 0;
		assert_true(t->price > 0);
		assert_true(t->spot_price < t->price);
		assert_true(t->n_regions >= 1);
		assert_true(t->cpus > 0 && t->memory_mib > 0 && t->disk_mib > 0);
	}
	assert_true(np >= 5);
	assert_true(cpu_only >= 20);
	assert_true(arm >= 5);
	assert_true(spot >= 50);

	assert_true(has_gpu(c, "H100", 80));
	assert_true(has_gpu(c, "H200", 0));
	assert_true(has_gpu(c, "A100", 40));
	assert_true(has_gpu(c, "A100", 80));
	assert_true(has_gpu(c, "L4", 0));
	assert_true(has_gpu(c, "L40S", 0));
	assert_true(has_gpu(c, "A10G", 0));
	assert_true(has_gpu(c, "A10", 0));
	assert_true(has_gpu(c, "T4", 0));
	assert_true(has_gpu(c, "V100", 0));
	assert_true(has_gpu(c, "MI300X", 192));

	/* A few well-known types with their real shapes. */
	const struct sim_type *p5 = sim_catalog_find_type(c, "p5.48xlarge");
	assert_non_null(p5);
	assert_string_equal(p5->gpu_name, "H100");
	assert_int_equal(p5->gpu_count, 8);
	assert_int_equal(p5->cpus, 192);
	const struct sim_type *mi = sim_catalog_find_type(c, "BM.GPU.MI300X.8");
	assert_non_null(mi);
	assert_string_equal(mi->gpu_vendor, "amd");
	assert_non_null(sim_catalog_find_type(c, "a3-highgpu-8g"));
	assert_non_null(sim_catalog_find_type(c, "Standard_ND96isr_H100_v5"));
	assert_non_null(sim_catalog_find_type(c, "gpu_8x_a100_80gb_sxm4"));
	assert_null(sim_catalog_find_type(c, "p5.48XLARGE"));
	assert_true(sim_catalog_find_region(c, "us-east-1") >= 0);
	assert_int_equal(sim_catalog_find_region(c, "mars-north-1"), -1);
}

static void test_catalog_offers_precomputed(void **state)
{
	const struct sim_catalog *c = cat();
	size_t expect = 0;
	for (size_t i = 0; i < c->n_types; i++)
		expect += c->types[i].n_regions * (c->types[i].spot_price > 0 ? 2 : 1);
	assert_int_equal(c->n_offers, expect);
	assert_true(c->n_offers >= 500);
	size_t no_quota = 0;
	for (size_t i = 0; i < c->n_offers; i++) {
		const drv_offer *o = &c->offers[i].offer;
		if (i)
			assert_true(c->offers[i - 1].offer.price_per_hour <= o->price_per_hour);
		assert_string_equal(o->backend_type, "sim");
		assert_int_equal(o->n_zones, 3);
		char zone[80];
		snprintf(zone, sizeof(zone), "%sb", o->region);
		assert_string_equal(o->zones[1], zone);
		assert_ptr_equal(o->resources, &c->offers[i].resources);
		if (o->resources->n_gpus)
			assert_ptr_equal(o->resources->gpus[0], &c->offers[i].gpu);
		no_quota += c->offers[i].no_quota;
	}
	/* "A few" pools are deterministically out of quota, not none and not many, never a type's first
	 * region. */
	assert_true(no_quota >= 2);
	assert_true(no_quota < c->n_offers / 10);
	for (size_t i = 0; i < c->n_types; i++)
		assert_false(sim_type_no_quota(c, &c->types[i], c->types[i].regions[0]));
	const struct sim_type *g6 = sim_catalog_find_type(c, "g6.xlarge");
	assert_false(sim_type_no_quota(c, g6, sim_catalog_find_region(c, "us-east-1")));
}

static void expect_parse_error(const char *text, const char *needle)
{
	struct sim_catalog *c = NULL;
	struct sim_err e = {{0}};
	assert_int_equal(sim_catalog_parse(text, strlen(text), &c, &e), DRV_EINVAL);
	assert_null(c);
	if (!strstr(e.msg, needle))
		fail_msg("error \"%s\" does not mention \"%s\"", e.msg, needle);
}

#define HDR                                                                                                  \
	"provider\tinstance_type\tgpu_name\tgpu_count\tgpu_memory_gib\tgpu_vendor\tcpus\tmemory_gib\tdisk_"  \
	"gib\tcpu_"                                                                                          \
	"arch\tprice_per_hour\tspot_price_per_hour\tregions\n"

static void test_catalog_parse_errors(void **state)
{
	const char *good =
	    "# comment\n" HDR "aws\tx.large\t-\t0\t0\t-\t2\t8\t100\tx86_64\t0.1\t0.04\tr1,r2\n";
	struct sim_catalog *c = NULL;
	struct sim_err e = {{0}};
	assert_int_equal(sim_catalog_parse(good, strlen(good), &c, &e), 0);
	assert_int_equal(c->n_types, 1);
	assert_int_equal(c->n_regions, 2);
	assert_int_equal(c->n_offers, 4);
	sim_catalog_free(c);

	expect_parse_error("aws\tx\n", "line 1: expected the column header");
	expect_parse_error(HDR "aws\tx.large\t-\t0\n", "line 2: expected 13 tab-separated columns");
	expect_parse_error(HDR "aws\tx.large\t-\t0\t0\t-\t2\t8\t100\tsparc\t0.1\t0\tr1\n",
	                   "cpu_arch \"sparc\"");
	expect_parse_error(HDR "aws\tx.large\tH100\t0\t80\tnvidia\t2\t8\t100\tx86_64\t0.1\t0\tr1\n",
	                   "disagree");
	expect_parse_error(HDR "aws\tx.large\t-\t0\t0\t-\t2\t8\t100\tx86_64\t0.1\t0.2\tr1\n", "spot price");
	expect_parse_error(HDR "aws\tx.large\t-\t0\t0\t-\t2\t8\t100\tx86_64\tfree\t0\tr1\n",
	                   "line 2 (x.large)");
	expect_parse_error(HDR "aws\tx.large\t-\t0\t0\t-\t2\t8\t100\tx86_64\t0.1\t0\tr1\n"
	                       "gcp\tx.large\t-\t0\t0\t-\t2\t8\t100\tx86_64\t0.1\t0\tr1\n",
	                   "x.large is listed twice");
	expect_parse_error(HDR "aws\tx.large\t-\t0\t0\t-\t2\t8\t100\tx86_64\t0.1\t0\tr1,,r2\n",
	                   "empty region");
	expect_parse_error("# only comments\n" HDR, "no instance types");
}

/* GetOffers through the core with a config and requirements; the response lives in `t`. */
static drv_get_offers_response *offers(struct test_arena *t, const struct sim_config *cfg,
                                       const drv_requirements *req)
{
	struct sim_state *st;
	struct sim_err e = {{0}};
	assert_int_equal(sim_state_get(cfg->state_file, &st, &e), 0);
	drv_get_offers_response *resp = sim_new(&t->a, get_offers_response);
	int rc = sim_offers_get(cat(), st, cfg, req, &t->a, resp, &e);
	if (rc)
		fail_msg("GetOffers failed: %s", e.msg);
	return resp;
}

static drv_uint_range *range(struct test_arena *t, bool has_min, uint64_t min, bool has_max, uint64_t max)
{
	drv_uint_range *r = sim_new(&t->a, uint_range);
	if (has_min) {
		r->_min_case = DROVER__COMPUTE__V1__UINT_RANGE___MIN_MIN;
		r->min = min;
	}
	if (has_max) {
		r->_max_case = DROVER__COMPUTE__V1__UINT_RANGE___MAX_MAX;
		r->max = max;
	}
	return r;
}

static void test_offers_filters(void **state)
{
	struct test_arena t;
	test_arena_init(&t);
	struct sim_config cfg;
	sim_config_init(&cfg);

	drv_get_offers_response *all = offers(&t, &cfg, NULL);
	assert_int_equal(all->n_offers, cat()->n_offers);
	for (size_t i = 1; i < all->n_offers; i++)
		assert_true(all->offers[i - 1]->price_per_hour <= all->offers[i]->price_per_hour);

	/* GPU name (case-insensitive) and count. */
	drv_requirements *req = sim_new(&t.a, requirements);
	char *names[] = {"h100"};
	req->gpu_names = names;
	req->n_gpu_names = 1;
	req->gpu_count = range(&t, true, 8, true, 8);
	drv_get_offers_response *r = offers(&t, &cfg, req);
	assert_true(r->n_offers >= 10);
	for (size_t i = 0; i < r->n_offers; i++) {
		assert_string_equal(r->offers[i]->resources->gpus[0]->name, "H100");
		assert_int_equal(r->offers[i]->resources->gpus[0]->count, 8);
	}

	/* On-demand only, arm64 only, under a price cap. */
	req = sim_new(&t.a, requirements);
	req->spot = DROVER__COMPUTE__V1__SPOT_POLICY__SPOT_POLICY_ON_DEMAND;
	char *archs[] = {"arm64"};
	req->cpu_archs = archs;
	req->n_cpu_archs = 1;
	req->_max_price_case = DROVER__COMPUTE__V1__REQUIREMENTS___MAX_PRICE_MAX_PRICE;
	req->max_price = 0.5;
	r = offers(&t, &cfg, req);
	assert_true(r->n_offers >= 10);
	for (size_t i = 0; i < r->n_offers; i++) {
		assert_false(r->offers[i]->resources->spot);
		assert_string_equal(r->offers[i]->resources->cpu_arch, "arm64");
		assert_true(r->offers[i]->price_per_hour <= 0.5);
	}

	/* Memory range and spot only. */
	req = sim_new(&t.a, requirements);
	req->spot = DROVER__COMPUTE__V1__SPOT_POLICY__SPOT_POLICY_SPOT;
	req->memory_mib = range(&t, true, 64 * 1024, true, 256 * 1024);
	r = offers(&t, &cfg, req);
	assert_true(r->n_offers > 0);
	for (size_t i = 0; i < r->n_offers; i++) {
		assert_true(r->offers[i]->resources->spot);
		assert_in_range(r->offers[i]->resources->memory_mib, 64 * 1024, 256 * 1024);
	}

	/* The request's regions and the config's regions both limit. */
	req = sim_new(&t.a, requirements);
	char *regions[] = {"eu-west-1", "us-central1"};
	req->regions = regions;
	req->n_regions = 2;
	const char *cfg_regions[] = {"us-central1", "eastus"};
	cfg.regions = cfg_regions;
	cfg.n_regions = 2;
	r = offers(&t, &cfg, req);
	assert_true(r->n_offers > 0);
	for (size_t i = 0; i < r->n_offers; i++)
		assert_string_equal(r->offers[i]->region, "us-central1");
	r = offers(&t, &cfg, NULL);
	size_t central = 0, east = 0;
	for (size_t i = 0; i < r->n_offers; i++) {
		central += strcmp(r->offers[i]->region, "us-central1") == 0;
		east += strcmp(r->offers[i]->region, "eastus") == 0;
	}
	assert_true(central > 0 && east > 0);
	assert_int_equal(central + east, r->n_offers);

	/* An unknown config region is an error naming it. */
	const char *bad[] = {"us-east-1", "atlantis-1"};
	cfg.regions = bad;
	struct sim_state *st;
	struct sim_err e = {{0}};
	assert_int_equal(sim_state_get(NULL, &st, &e), 0);
	drv_get_offers_response *resp = sim_new(&t.a, get_offers_response);
	assert_int_equal(sim_offers_get(cat(), st, &cfg, NULL, &t.a, resp, &e), DRV_EINVAL);
	assert_non_null(strstr(e.msg, "regions[1]"));
	assert_non_null(strstr(e.msg, "atlantis-1"));

	/* Requirements nobody meets give an empty answer, not an error. */
	req = sim_new(&t.a, requirements);
	req->cpus = range(&t, true, 100000, false, 0);
	struct sim_config plain;
	sim_config_init(&plain);
	r = offers(&t, &plain, req);
	assert_int_equal(r->n_offers, 0);
	test_arena_free(&t);
}

static void test_offers_availability(void **state)
{
	struct test_arena t;
	test_arena_init(&t);
	struct sim_config cfg;
	sim_config_init(&cfg);
	drv_get_offers_response *r = offers(&t, &cfg, NULL);
	size_t no_quota = 0, available = 0;
	for (size_t i = 0; i < r->n_offers; i++) {
		int av = r->offers[i]->availability;
		no_quota += av == DROVER__COMPUTE__V1__AVAILABILITY__AVAILABILITY_NO_QUOTA;
		available += av == DROVER__COMPUTE__V1__AVAILABILITY__AVAILABILITY_AVAILABLE;
	}
	assert_true(no_quota > 0);
	assert_int_equal(no_quota + available, r->n_offers);

	/* Capacity 0: nothing is available, and the no-quota pools stay no-quota. */
	cfg.capacity = 0;
	r = offers(&t, &cfg, NULL);
	size_t not_avail = 0;
	for (size_t i = 0; i < r->n_offers; i++)
		not_avail += r->offers[i]->availability ==
		             DROVER__COMPUTE__V1__AVAILABILITY__AVAILABILITY_NOT_AVAILABLE;
	assert_int_equal(not_avail + no_quota, r->n_offers);
	test_arena_free(&t);
}

static void test_offers_synthetic(void **state)
{
	struct test_arena t;
	test_arena_init(&t);
	struct sim_config cfg;
	sim_config_init(&cfg);
	cfg.synthetic_offers = 10000;
	drv_get_offers_response *r = offers(&t, &cfg, NULL);
	assert_int_equal(r->n_offers, cat()->n_offers + 10000);
	size_t syn = 0;
	for (size_t i = 0; i < r->n_offers; i++) {
		const drv_offer *o = r->offers[i];
		if (i)
			assert_true(r->offers[i - 1]->price_per_hour <= o->price_per_hour);
		assert_true(o->price_per_hour > 0);
		assert_true(o->resources->cpus > 0);
		assert_true(sim_catalog_find_region(cat(), o->region) >= 0);
		assert_true(o->availability >= DROVER__COMPUTE__V1__AVAILABILITY__AVAILABILITY_AVAILABLE);
		syn += strncmp(o->instance_type, "syn-", 4) == 0;
	}
	assert_int_equal(syn, 10000);

	/* Deterministic for a seed (also when built again), different for another. */
	const struct sim_synth *a = sim_synth_get(cat(), 50, 7);
	assert_ptr_equal(a, sim_synth_get(cat(), 50, 7));
	char names[50][64];
	double prices[50];
	for (size_t i = 0; i < 50; i++) {
		snprintf(names[i], sizeof(names[i]), "%s", a->offers[i].offer.instance_type);
		prices[i] = a->offers[i].offer.price_per_hour;
	}
	sim_synth_cleanup();
	const struct sim_synth *a2 = sim_synth_get(cat(), 50, 7);
	for (size_t i = 0; i < 50; i++) {
		assert_string_equal(a2->offers[i].offer.instance_type, names[i]);
		assert_true(a2->offers[i].offer.price_per_hour == prices[i]);
	}
	const struct sim_synth *b = sim_synth_get(cat(), 50, 8);
	size_t differ = 0;
	for (size_t i = 0; i < 50; i++)
		differ += strcmp(a2->offers[i].offer.instance_type, b->offers[i].offer.instance_type) != 0;
	assert_true(differ > 25);

	/* A synthetic offer can be found again by CreateInstance's lookup. */
	const struct sim_offer *o = &a2->offers[10];
	assert_ptr_equal(sim_synth_find(a2, o->offer.instance_type, o->offer.region, o->resources.spot), o);
	assert_null(sim_synth_find(a2, o->offer.instance_type, "nowhere", o->resources.spot));
	test_arena_free(&t);
}

static double now_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

/* GetOffers of ~1,000 offers inside the driver: well under a millisecond on an idle machine. */
static void test_offers_fast(void **state)
{
	struct sim_config cfg;
	sim_config_init(&cfg);
	cfg.synthetic_offers = 1000;
	struct sim_state *st;
	struct sim_err e = {{0}};
	assert_int_equal(sim_state_get(NULL, &st, &e), 0);
	double best = 1e9;
	size_t n = 0;
	for (int round = 0; round < 30; round++) {
		struct test_arena t;
		test_arena_init(&t);
		drv_get_offers_response resp = DROVER__COMPUTE__V1__GET_OFFERS_RESPONSE__INIT;
		double t0 = now_us();
		assert_int_equal(sim_offers_get(cat(), st, &cfg, NULL, &t.a, &resp, &e), 0);
		double dt = now_us() - t0;
		best = dt < best ? dt : best;
		n = resp.n_offers;
		test_arena_free(&t);
	}
	print_message("GetOffers(%zu offers): best of 30 = %.0f us\n", n, best);
	assert_true(n >= 1000);
	/* Generous against slow CI and sanitizers; the measured figure is printed above. */
	assert_true(best < 5000);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_teardown(test_catalog_breadth, teardown),
	    cmocka_unit_test_teardown(test_catalog_offers_precomputed, teardown),
	    cmocka_unit_test_teardown(test_catalog_parse_errors, teardown),
	    cmocka_unit_test_teardown(test_offers_filters, teardown),
	    cmocka_unit_test_teardown(test_offers_availability, teardown),
	    cmocka_unit_test_teardown(test_offers_synthetic, teardown),
	    cmocka_unit_test_teardown(test_offers_fast, teardown),
	};
	return cmocka_run_group_tests_name("sim_catalog", tests, NULL, NULL);
}
