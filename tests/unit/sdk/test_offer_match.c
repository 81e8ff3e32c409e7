/* Tests of offer_match.c: each filter of Requirements on its own, then together. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

#include "drover/driver.h"

struct fixture {
	drv_offer offer;
	drv_resources res;
	drv_gpu gpu;
	drv_gpu *gpus[1];
	drv_requirements req;
	drv_uint_range range;
};

/* An 8-CPU, 32 GiB, 1×L4 (24 GiB) on-demand x86_64 offer in us-east at $0.80. */
static int setup(void **state)
{
	static struct fixture f;
	memset(&f, 0, sizeof(f));
	drover__compute__v1__offer__init(&f.offer);
	drover__compute__v1__resources__init(&f.res);
	drover__compute__v1__gpu__init(&f.gpu);
	drover__compute__v1__requirements__init(&f.req);
	drover__compute__v1__uint_range__init(&f.range);
	f.gpu.name = "L4";
	f.gpu.memory_mib = 24576;
	f.gpu.count = 1;
	f.gpus[0] = &f.gpu;
	f.res.cpus = 8;
	f.res.memory_mib = 32768;
	f.res.disk_mib = 102400;
	f.res.n_gpus = 1;
	f.res.gpus = f.gpus;
	f.res.cpu_arch = "x86_64";
	f.offer.resources = &f.res;
	f.offer.region = "us-east";
	f.offer.price_per_hour = 0.80;
	*state = &f;
	return 0;
}

static drv_uint_range *range(struct fixture *f, int has_min, uint64_t min, int has_max, uint64_t max)
{
	drover__compute__v1__uint_range__init(&f->range);
	if (has_min) {
		f->range._min_case = DROVER__COMPUTE__V1__UINT_RANGE___MIN_MIN;
		f->range.min = min;
	}
	if (has_max) {
		f->range._max_case = DROVER__COMPUTE__V1__UINT_RANGE___MAX_MAX;
		f->range.max = max;
	}
	return &f->range;
}

/* Checks one range filter (a pointer into req) at its edges around value v. */
static void check_range(struct fixture *f, drv_uint_range **slot, uint64_t v)
{
	*slot = range(f, 1, v, 0, 0);
	assert_true(drv_offer_matches(&f->offer, &f->req)); /* min inclusive */
	*slot = range(f, 1, v + 1, 0, 0);
	assert_false(drv_offer_matches(&f->offer, &f->req));
	*slot = range(f, 0, 0, 1, v);
	assert_true(drv_offer_matches(&f->offer, &f->req)); /* max inclusive */
	*slot = range(f, 0, 0, 1, v - 1);
	assert_false(drv_offer_matches(&f->offer, &f->req));
	*slot = range(f, 0, 0, 0, 0);
	assert_true(drv_offer_matches(&f->offer, &f->req)); /* unset bounds do not filter */
	*slot = NULL;
}

static void test_no_requirements(void **state)
{
	struct fixture *f = *state;
	assert_true(drv_offer_matches(&f->offer, NULL));
	assert_true(drv_offer_matches(&f->offer, &f->req));
	assert_false(drv_offer_matches(NULL, &f->req));
}

static void test_cpus(void **state)
{
	struct fixture *f = *state;
	check_range(f, &f->req.cpus, 8);
}

static void test_memory(void **state)
{
	struct fixture *f = *state;
	check_range(f, &f->req.memory_mib, 32768);
}

static void test_disk(void **state)
{
	struct fixture *f = *state;
	check_range(f, &f->req.disk_mib, 102400);
}

static void test_gpu_count(void **state)
{
	struct fixture *f = *state;
	check_range(f, &f->req.gpu_count, 1);
	f->gpu.count = 8;
	check_range(f, &f->req.gpu_count, 8);
	/* A CPU-only offer has 0 GPUs. */
	f->res.n_gpus = 0;
	f->req.gpu_count = range(f, 1, 1, 0, 0);
	assert_false(drv_offer_matches(&f->offer, &f->req));
	f->req.gpu_count = range(f, 0, 0, 1, 0);
	assert_true(drv_offer_matches(&f->offer, &f->req));
}

static void test_gpu_memory(void **state)
{
	struct fixture *f = *state;
	check_range(f, &f->req.gpu_memory_mib, 24576);
	f->res.n_gpus = 0;
	f->req.gpu_memory_mib = range(f, 1, 1024, 0, 0);
	assert_false(drv_offer_matches(&f->offer, &f->req)); /* wants a GPU */
	f->req.gpu_memory_mib = range(f, 0, 0, 1, 1024);
	assert_true(drv_offer_matches(&f->offer, &f->req));
}

static void test_gpu_names(void **state)
{
	struct fixture *f = *state;
	char *names[] = {"h100", "l4"};
	f->req.gpu_names = names;
	f->req.n_gpu_names = 2;
	assert_true(drv_offer_matches(&f->offer, &f->req)); /* case-insensitive */
	f->req.n_gpu_names = 1;
	assert_false(drv_offer_matches(&f->offer, &f->req));
	f->req.n_gpu_names = 2;
	f->res.n_gpus = 0;
	assert_false(drv_offer_matches(&f->offer, &f->req));
}

static void test_spot(void **state)
{
	struct fixture *f = *state;
	f->req.spot = DROVER__COMPUTE__V1__SPOT_POLICY__SPOT_POLICY_ON_DEMAND;
	assert_true(drv_offer_matches(&f->offer, &f->req));
	f->req.spot = DROVER__COMPUTE__V1__SPOT_POLICY__SPOT_POLICY_SPOT;
	assert_false(drv_offer_matches(&f->offer, &f->req));
	f->res.spot = true;
	assert_true(drv_offer_matches(&f->offer, &f->req));
	f->req.spot = DROVER__COMPUTE__V1__SPOT_POLICY__SPOT_POLICY_ON_DEMAND;
	assert_false(drv_offer_matches(&f->offer, &f->req));
	f->req.spot = DROVER__COMPUTE__V1__SPOT_POLICY__SPOT_POLICY_AUTO;
	assert_true(drv_offer_matches(&f->offer, &f->req));
	f->req.spot = DROVER__COMPUTE__V1__SPOT_POLICY__SPOT_POLICY_UNSPECIFIED;
	assert_true(drv_offer_matches(&f->offer, &f->req));
}

static void test_max_price(void **state)
{
	struct fixture *f = *state;
	f->req._max_price_case = DROVER__COMPUTE__V1__REQUIREMENTS___MAX_PRICE_MAX_PRICE;
	f->req.max_price = 0.80;
	assert_true(drv_offer_matches(&f->offer, &f->req));
	f->req.max_price = 0.79;
	assert_false(drv_offer_matches(&f->offer, &f->req));
	f->req.max_price = 0;
	assert_false(drv_offer_matches(&f->offer, &f->req)); /* set to 0 is a filter, not "unset" */
	f->req._max_price_case = DROVER__COMPUTE__V1__REQUIREMENTS___MAX_PRICE__NOT_SET;
	assert_true(drv_offer_matches(&f->offer, &f->req));
}

static void test_regions(void **state)
{
	struct fixture *f = *state;
	char *regions[] = {"eu-west", "us-east"};
	f->req.regions = regions;
	f->req.n_regions = 2;
	assert_true(drv_offer_matches(&f->offer, &f->req));
	f->req.n_regions = 1;
	assert_false(drv_offer_matches(&f->offer, &f->req));
}

static void test_cpu_archs(void **state)
{
	struct fixture *f = *state;
	char *archs[] = {"arm64", "x86_64"};
	f->req.cpu_archs = archs;
	f->req.n_cpu_archs = 2;
	assert_true(drv_offer_matches(&f->offer, &f->req));
	f->req.n_cpu_archs = 1;
	assert_false(drv_offer_matches(&f->offer, &f->req));
	f->res.cpu_arch = "";
	f->req.n_cpu_archs = 2;
	assert_false(drv_offer_matches(&f->offer, &f->req));
}

static void test_all_together(void **state)
{
	struct fixture *f = *state;
	drv_uint_range cpus = DROVER__COMPUTE__V1__UINT_RANGE__INIT,
	               mem = DROVER__COMPUTE__V1__UINT_RANGE__INIT;
	char *names[] = {"L4"};
	cpus._min_case = DROVER__COMPUTE__V1__UINT_RANGE___MIN_MIN;
	cpus.min = 4;
	mem._max_case = DROVER__COMPUTE__V1__UINT_RANGE___MAX_MAX;
	mem.max = 65536;
	f->req.cpus = &cpus;
	f->req.memory_mib = &mem;
	f->req.gpu_names = names;
	f->req.n_gpu_names = 1;
	f->req._max_price_case = DROVER__COMPUTE__V1__REQUIREMENTS___MAX_PRICE_MAX_PRICE;
	f->req.max_price = 1.0;
	assert_true(drv_offer_matches(&f->offer, &f->req));
	mem.max = 16384; /* one failing filter is enough */
	assert_false(drv_offer_matches(&f->offer, &f->req));
	/* An offer without resources fails a minimum. */
	mem.max = 65536;
	f->offer.resources = NULL;
	assert_false(drv_offer_matches(&f->offer, &f->req));
}

int main(void)
{
#define T(fn) cmocka_unit_test_setup(fn, setup)
	const struct CMUnitTest tests[] = {
	    T(test_no_requirements), T(test_cpus),       T(test_memory),    T(test_disk),
	    T(test_gpu_count),       T(test_gpu_memory), T(test_gpu_names), T(test_spot),
	    T(test_max_price),       T(test_regions),    T(test_cpu_archs), T(test_all_together),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
