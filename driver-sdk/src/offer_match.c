/*
 * drv_offer_matches: the filters of Requirements, one by one, so drivers do
 * not each write them again. The rules (docs/PROTOCOL.md):
 *   - a range bound is inclusive; an unset bound does not filter;
 *   - the GPU count of an offer is the sum of its Gpu.count;
 *   - gpu_memory_mib applies to every GPU of the offer; an offer without
 *     GPUs fails it only when the range has a minimum above 0;
 *   - gpu_names (case-insensitive): the offer has a GPU and every GPU's
 *     name is one of them;
 *   - spot: ON_DEMAND excludes spot offers, SPOT keeps only them, AUTO and
 *     UNSPECIFIED keep both;
 *   - max_price: price_per_hour <= max_price;
 *   - regions and cpu_archs: exact match with any of them.
 */
#include <string.h>
#include <strings.h>

#include "drover/driver.h"

static bool in_range(uint64_t v, const drv_uint_range *r)
{
	if (!r)
		return true;
	if (r->_min_case == DROVER__COMPUTE__V1__UINT_RANGE___MIN_MIN && v < r->min)
		return false;
	if (r->_max_case == DROVER__COMPUTE__V1__UINT_RANGE___MAX_MAX && v > r->max)
		return false;
	return true;
}

static bool any_equal(const char *s, char **list, size_t n, bool nocase)
{
	if (!s)
		return false;
	for (size_t i = 0; i < n; i++)
		if (list[i] && (nocase ? strcasecmp(s, list[i]) : strcmp(s, list[i])) == 0)
			return true;
	return false;
}

bool drv_offer_matches(const drv_offer *offer, const drv_requirements *req)
{
	if (!req)
		return true;
	if (!offer)
		return false;
	const drv_resources *res = offer->resources;
	static const drv_resources empty = DROVER__COMPUTE__V1__RESOURCES__INIT;
	if (!res)
		res = &empty;

	if (!in_range(res->cpus, req->cpus) || !in_range(res->memory_mib, req->memory_mib) ||
	    !in_range(res->disk_mib, req->disk_mib))
		return false;

	uint64_t gpus = 0;
	for (size_t i = 0; i < res->n_gpus; i++)
		if (res->gpus[i])
			gpus += res->gpus[i]->count;
	if (!in_range(gpus, req->gpu_count))
		return false;

	if (req->gpu_memory_mib) {
		if (res->n_gpus == 0) {
			if (req->gpu_memory_mib->_min_case == DROVER__COMPUTE__V1__UINT_RANGE___MIN_MIN &&
			    req->gpu_memory_mib->min > 0)
				return false;
		}
		for (size_t i = 0; i < res->n_gpus; i++)
			if (res->gpus[i] && !in_range(res->gpus[i]->memory_mib, req->gpu_memory_mib))
				return false;
	}

	if (req->n_gpu_names) {
		if (res->n_gpus == 0)
			return false;
		for (size_t i = 0; i < res->n_gpus; i++)
			if (!res->gpus[i] ||
			    !any_equal(res->gpus[i]->name, req->gpu_names, req->n_gpu_names, true))
				return false;
	}

	switch (req->spot) {
	case DROVER__COMPUTE__V1__SPOT_POLICY__SPOT_POLICY_ON_DEMAND:
		if (res->spot)
			return false;
		break;
	case DROVER__COMPUTE__V1__SPOT_POLICY__SPOT_POLICY_SPOT:
		if (!res->spot)
			return false;
		break;
	default:
		break;
	}

	if (req->_max_price_case == DROVER__COMPUTE__V1__REQUIREMENTS___MAX_PRICE_MAX_PRICE &&
	    !(offer->price_per_hour <= req->max_price))
		return false;

	if (req->n_regions && !any_equal(offer->region, req->regions, req->n_regions, false))
		return false;
	if (req->n_cpu_archs && !any_equal(res->cpu_arch, req->cpu_archs, req->n_cpu_archs, false))
		return false;
	return true;
}
