/*
 * drover-driver-example: the smallest useful drover driver.
 *
 * It serves GetOffers from a fixed catalog, filtered by the caller's
 * requirements and by an optional "region" setting in the backend config.
 * Everything else (GetInfo, GetFeatures, ValidateConfig, health, the
 * handshake, signals, TLS, logging) comes from the SDK; because only
 * get_offers is set, the driver advertises FEATURE_OFFERS and the SDK answers
 * UNIMPLEMENTED to every other RPC.
 */
#include <string.h>

#include "drover/driver.h"

struct entry {
	const char *instance_type, *region, *gpu, *vendor;
	unsigned cpus, gpus;
	uint64_t memory_mib, gpu_memory_mib;
	double price;
	bool spot;
};

static const struct entry catalog[] = {
    {"cpu.small", "eu-west", NULL, NULL, 2, 0, 4096, 0, 0.05, false},
    {"cpu.large", "eu-west", NULL, NULL, 16, 0, 65536, 0, 0.60, false},
    {"cpu.large", "us-east", NULL, NULL, 16, 0, 65536, 0, 0.25, true},
    {"gpu.l4", "us-east", "L4", "nvidia", 8, 1, 32768, 24576, 0.80, false},
    {"gpu.a100x2", "eu-west", "A100", "nvidia", 24, 2, 196608, 81920, 3.60, false},
    {"gpu.h100x8", "us-east", "H100", "nvidia", 208, 8, 1966080, 81920, 22.00, false},
};

static int get_offers(struct drv_call *call, const drv_get_offers_request *req, drv_get_offers_response *resp)
{
	const char *only_region = drv_call_config_string(call, "region", NULL);
	size_t n = sizeof(catalog) / sizeof(catalog[0]);

	/* Memory from the call's arena is freed after the reply is sent. */
	resp->offers = drv_call_ptrs(call, n);
	for (size_t i = 0; i < n; i++) {
		const struct entry *e = &catalog[i];
		if (only_region && strcmp(only_region, e->region) != 0)
			continue;

		drv_offer *o = drv_new(call, offer); /* the protobuf message itself */
		o->backend_type = "example";
		o->instance_type = (char *)e->instance_type;
		o->region = (char *)e->region;
		o->price_per_hour = e->price;
		o->availability = DROVER__COMPUTE__V1__AVAILABILITY__AVAILABILITY_AVAILABLE;
		o->resources = drv_new(call, resources);
		o->resources->cpus = e->cpus;
		o->resources->memory_mib = e->memory_mib;
		o->resources->disk_mib = 100 * 1024;
		o->resources->spot = e->spot;
		o->resources->cpu_arch = "x86_64";
		if (e->gpus) {
			drv_gpu *g = drv_new(call, gpu);
			g->name = (char *)e->gpu;
			g->vendor = (char *)e->vendor;
			g->memory_mib = e->gpu_memory_mib;
			g->count = e->gpus;
			o->resources->gpus = drv_call_ptrs(call, 1);
			o->resources->gpus[0] = g;
			o->resources->n_gpus = 1;
		}
		/* Filters of the request, one by one, by the SDK's shared helper. */
		if (drv_offer_matches(o, req->requirements))
			resp->offers[resp->n_offers++] = o;
	}
	return 0; /* or: return drv_call_fail(call, DRV_EUNAVAILABLE, "price API of %s is down", region); */
}

static const struct drv_compute_ops ops = {
    .version = DRV_COMPUTE_OPS_V1,
    .get_offers = get_offers,
};

static const char *const regions[] = {"eu-west", "us-east", NULL};

static const struct drv_config_field config_fields[] = {
    {.name = "region",
     .type = DRV_FIELD_STRING,
     .description = "only offer machines in this region (default: all regions)",
     .enum_values = regions},
    {.name = NULL},
};

static const struct drv_driver driver = {
    .version = DRV_DRIVER_V1,
    .type = "example",
    .driver_version = "1.0.0",
    .description = "example driver: a fixed catalog of six offers",
    .ops = &ops,
    .config_fields = config_fields,
};

int main(int argc, char **argv)
{
	return drv_main(argc, argv, &driver);
}
