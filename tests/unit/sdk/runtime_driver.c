/*
 * A driver for test_runtime: implements every feature (with trivial
 * handlers), a narrow hook, a validate hook, start/stop, and handlers that
 * sleep, fail, log and write to stdout, so the tests can drive each rule of
 * drv_main and the dispatcher through a real process. Behaviour is chosen by
 * the config of each call; RUNTIME_PARTIAL=1 makes it declare a partly
 * implemented group instead.
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "drover/driver.h"

static int get_offers(struct drv_call *call, const drv_get_offers_request *req, drv_get_offers_response *resp)
{
	int64_t n = drv_call_config_int(call, "offers", 3);
	int64_t sleep_ms = drv_call_config_int(call, "sleep_ms", 0);

	/* Sleeps in small steps and stops early when the caller gives up, as handlers should. */
	for (int64_t t = 0; t < sleep_ms; t += 5) {
		if (drv_call_cancelled(call) && !drv_call_config_bool(call, "ignore_cancel", false))
			return drv_call_fail(call, DRV_ECANCELLED, "cancelled after %lld ms", (long long)t);
		usleep(5000);
	}
	const char *token = drv_call_secret(call, "token");
	drv_call_log(call, DRV_LOG_DEBUG, "listing %lld offers (token %s)", (long long)n,
	             token ? "set" : "unset");
	resp->offers = drv_call_ptrs(call, (size_t)n);
	for (int64_t i = 0; i < n; i++) {
		drv_offer *o = drv_new(call, offer);
		o->backend_type = "rtest";
		o->instance_type = drv_call_printf(call, "type-%lld", (long long)i);
		o->region = "r1";
		o->price_per_hour = 0.01 * (double)(i + 1);
		o->availability = DROVER__COMPUTE__V1__AVAILABILITY__AVAILABILITY_AVAILABLE;
		o->resources = drv_new(call, resources);
		o->resources->cpus = (uint32_t)(1 + i % 64);
		o->resources->memory_mib = 1024 * (uint64_t)(1 + i % 64);
		if (drv_offer_matches(o, req->requirements))
			resp->offers[resp->n_offers++] = o;
	}
	return 0;
}

static int create_instance(struct drv_call *call, const drv_create_instance_request *req,
                           drv_create_instance_response *resp)
{
	return drv_call_fail(call, DRV_ENOCAPACITY, "no capacity for %s",
	                     req->offer && req->offer->instance_type ? req->offer->instance_type : "?");
}

static int get_instance(struct drv_call *call, const drv_get_instance_request *req,
                        drv_get_instance_response *resp)
{
	/* Stray output after the handshake must go nowhere. */
	printf("stray stdout from a handler\n");
	fflush(stdout);
	resp->data = drv_new(call, provisioning_data);
	resp->data->instance_id = drv_call_strdup(call, req->instance_id);
	resp->data->state = DROVER__COMPUTE__V1__INSTANCE_STATE__INSTANCE_STATE_RUNNING;
	return 0;
}

/* Returns a positive number: a driver bug the SDK must turn into INTERNAL. */
static int terminate_instance(struct drv_call *call, const drv_terminate_instance_request *req,
                              drv_terminate_instance_response *resp)
{
	if (strcmp(req->instance_id, "bug-negative") == 0)
		return drv_call_fail(call, -50, "not a code");
	/* A provider's whole error page, quoted: 20 KB of message with a multi-byte character. */
	if (strcmp(req->instance_id, "long-message") == 0) {
		char *page = drv_call_alloc(call, 20001);
		for (size_t i = 0; i < 20000; i += 2)
			memcpy(page + i, "\xc3\xa9", 2);
		return drv_call_fail(call, DRV_EUNAVAILABLE, "provider said:%s", page);
	}
	return strcmp(req->instance_id, "bug") == 0 ? 7 : 0;
}

#define OK_HANDLER(op, req_t, resp_t)                                                                        \
	static int op(struct drv_call *call, const req_t *req, resp_t *resp)                                 \
	{                                                                                                    \
		return 0;                                                                                    \
	}
OK_HANDLER(list_instances, drv_list_instances_request, drv_list_instances_response)
OK_HANDLER(create_placement_group, drv_create_placement_group_request, drv_create_placement_group_response)
OK_HANDLER(delete_placement_group, drv_delete_placement_group_request, drv_delete_placement_group_response)
OK_HANDLER(create_volume, drv_create_volume_request, drv_create_volume_response)
OK_HANDLER(register_volume, drv_register_volume_request, drv_register_volume_response)
OK_HANDLER(delete_volume, drv_delete_volume_request, drv_delete_volume_response)
OK_HANDLER(attach_volume, drv_attach_volume_request, drv_attach_volume_response)
OK_HANDLER(detach_volume, drv_detach_volume_request, drv_detach_volume_response)
OK_HANDLER(create_gateway, drv_create_gateway_request, drv_create_gateway_response)
OK_HANDLER(terminate_gateway, drv_terminate_gateway_request, drv_terminate_gateway_response)

static const struct drv_compute_ops full_ops = {
    .version = DRV_COMPUTE_OPS_V1,
    .get_offers = get_offers,
    .create_instance = create_instance,
    .get_instance = get_instance,
    .terminate_instance = terminate_instance,
    .list_instances = list_instances,
    .create_placement_group = create_placement_group,
    .delete_placement_group = delete_placement_group,
    .create_volume = create_volume,
    .register_volume = register_volume,
    .delete_volume = delete_volume,
    .attach_volume = attach_volume,
    .detach_volume = detach_volume,
    .create_gateway = create_gateway,
    .terminate_gateway = terminate_gateway,
};

static const struct drv_compute_ops partial_ops = {
    .version = DRV_COMPUTE_OPS_V1,
    .get_offers = get_offers,
    .create_volume = create_volume,
    .delete_volume = delete_volume,
};

static void narrow(struct drv_call *call, drv_features *f)
{
	if (drv_call_config_bool(call, "no_volumes", false))
		*f &= ~DRV_FEATURE_BIT(DRV_FEATURE_VOLUMES);
	if (drv_call_config_bool(call, "no_offers", false))
		*f &= ~DRV_FEATURE_BIT(DRV_FEATURE_OFFERS);
}

static int validate(struct drv_call *call, struct drv_diags *d)
{
	const char *token = drv_call_secret(call, "token");
	if (token && strcmp(token, "unreachable") == 0)
		return drv_call_fail(call, DRV_EUNAVAILABLE, "token service unreachable");
	if (strcmp(drv_call_config_string(call, "region", ""), "nowhere") == 0)
		drv_diag_error(d, "/region", "unknown region", "region \"%s\" does not exist", "nowhere");
	if (drv_call_config_int(call, "offers", 3) > 10000)
		drv_diag_warning(d, "/offers", "large catalog", "%lld offers may be slow",
		                 (long long)drv_call_config_int(call, "offers", 3));
	return 0;
}

static int start(void)
{
	drv_log(DRV_LOG_INFO, "runtime test driver starting");
	return getenv("RUNTIME_FAIL_START") ? DRV_EUNAVAILABLE : 0;
}

static void stop(void)
{
	const char *f = getenv("RUNTIME_STOP_FILE");
	if (f) {
		int fd = open(f, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
		if (fd >= 0)
			close(fd);
	}
}

static const struct drv_config_field fields[] = {
    {.name = "offers",
     .type = DRV_FIELD_INTEGER,
     .description = "offers GetOffers returns",
     .default_json = "3",
     .has_minimum = true,
     .minimum = 0,
     .has_maximum = true,
     .maximum = 100000},
    {.name = "sleep_ms", .type = DRV_FIELD_INTEGER, .description = "GetOffers sleeps this long"},
    {.name = "ignore_cancel", .type = DRV_FIELD_BOOLEAN},
    {.name = "no_volumes", .type = DRV_FIELD_BOOLEAN, .description = "narrow VOLUMES away"},
    {.name = "no_offers", .type = DRV_FIELD_BOOLEAN},
    {.name = "region", .type = DRV_FIELD_STRING},
    {.name = "token", .type = DRV_FIELD_STRING, .secret = true, .description = "API token"},
    {.name = NULL},
};

int main(int argc, char **argv)
{
	struct drv_driver d = {
	    .version = DRV_DRIVER_V1,
	    .type = "rtest",
	    .driver_version = "0.0.1",
	    .description = "runtime test driver",
	    .ops = getenv("RUNTIME_PARTIAL") ? &partial_ops : &full_ops,
	    .config_fields = fields,
	    .markers = DRV_FEATURE_BIT(DRV_FEATURE_MULTINODE),
	    .validate_config = validate,
	    .narrow_features = narrow,
	    .start = start,
	    .stop = stop,
	};
	return drv_main(argc, argv, &d);
}
