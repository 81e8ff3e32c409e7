/*
 * The sim driver's SDK side: config declaration, validate hook, and one
 * handler per Compute RPC. Each handler reads the call's config, applies
 * the injected faults, and hands the request to the core (sim_core.h).
 */
#include <errno.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>

#include "drover/driver.h"
#include "sim_core.h"
#include "sim_driver.h"
#include "xalloc.h"

static const struct drv_config_field config_fields[] = {
    {.name = "state_file",
     .type = DRV_FIELD_STRING,
     .description = "File holding the simulated cloud's instances, volumes, gateways and placement groups, "
                    "so they survive a driver restart; in memory when absent"},
    {.name = "regions",
     .type = DRV_FIELD_STRING_ARRAY,
     .description = "Only offer and create in these regions of the catalog; all when absent"},
    {.name = "capacity",
     .type = DRV_FIELD_INTEGER,
     .description = "Live instances allowed per (instance type, region) before RESOURCE_EXHAUSTED",
     .default_json = "4",
     .has_minimum = true,
     .minimum = 0},
    {.name = "provisioning_delay_ms",
     .type = DRV_FIELD_INTEGER,
     .description = "Time an instance stays PROVISIONING, without an address, before it is RUNNING",
     .default_json = "0",
     .has_minimum = true,
     .minimum = 0,
     .has_maximum = true,
     .maximum = SIM_MAX_PROVISIONING_DELAY_MS},
    {.name = "latency_ms",
     .type = DRV_FIELD_INTEGER,
     .description = "Delay added to every provider call",
     .default_json = "0",
     .has_minimum = true,
     .minimum = 0,
     .has_maximum = true,
     .maximum = SIM_MAX_LATENCY_MS},
    {.name = "error_rate",
     .type = DRV_FIELD_NUMBER,
     .description = "Share of provider calls that fail with UNAVAILABLE \"injected fault\"",
     .default_json = "0",
     .has_minimum = true,
     .minimum = 0,
     .has_maximum = true,
     .maximum = 1},
    {.name = "crash_rate",
     .type = DRV_FIELD_NUMBER,
     .description = "Share of provider calls during which the driver process aborts",
     .default_json = "0",
     .has_minimum = true,
     .minimum = 0,
     .has_maximum = true,
     .maximum = 1},
    {.name = "synthetic_offers",
     .type = DRV_FIELD_INTEGER,
     .description = "Extra generated offers (deterministic for a seed), for large-catalog tests",
     .default_json = "0",
     .has_minimum = true,
     .minimum = 0,
     .has_maximum = true,
     .maximum = SIM_MAX_SYNTHETIC_OFFERS},
    {.name = "seed",
     .type = DRV_FIELD_INTEGER,
     .description = "Seed of the synthetic offers and the fault draws (which also differ per driver process)",
     .default_json = "1"},
    {.name = "fail_termination",
     .type = DRV_FIELD_BOOLEAN,
     .description = "TerminateInstance always answers UNAVAILABLE (to test termination retries)",
     .default_json = "false"},
    {.name = "terminate_lie_rate",
     .type = DRV_FIELD_NUMBER,
     .description = "Share of TerminateInstance calls that answer OK but leave the machine running (a lying "
                    "provider, to test that droverd observes termination rather than believing it)",
     .default_json = "0",
     .has_minimum = true,
     .minimum = 0,
     .has_maximum = true,
     .maximum = 1},
    {.name = "terminated_retention_s",
     .type = DRV_FIELD_INTEGER,
     .description = "How long a terminated instance or gateway is still answered (TERMINATED, and its "
                    "idempotency key names it) before the simulated cloud forgets it (NOT_FOUND)",
     .default_json = "3600",
     .has_minimum = true,
     .minimum = 0,
     .has_maximum = true,
     .maximum = SIM_MAX_TERMINATED_RETENTION_S},
    {.name = "api_key",
     .type = DRV_FIELD_STRING,
     .secret = true,
     .description = "Simulated credentials; the value \"invalid\" is rejected"},
    {.name = NULL},
};

/* Everything one provider call needs, on the handler's stack. */
struct ctx {
	struct drv_call *call;
	struct sim_config cfg;
	const struct sim_catalog *cat;
	struct sim_state *st;
	struct sim_arena arena;
	struct sim_err err;
	enum sim_fault fault;
};

static void *call_alloc(void *call, size_t size)
{
	return drv_call_alloc(call, size);
}

static bool call_cancelled(void *call)
{
	return drv_call_cancelled(call);
}

static void read_config(struct drv_call *call, struct sim_arena *a, struct sim_config *cfg)
{
	sim_config_init(cfg);
	cfg->state_file = drv_call_config_string(call, "state_file", NULL);
	cfg->n_regions = drv_call_config_array_len(call, "regions");
	if (cfg->n_regions) {
		const char **r = sim_arena_alloc(a, cfg->n_regions * sizeof(*r));
		for (size_t i = 0; i < cfg->n_regions; i++)
			r[i] = drv_call_config_array_at(call, "regions", i);
		cfg->regions = r;
	}
	cfg->capacity = drv_call_config_int(call, "capacity", SIM_DEFAULT_CAPACITY);
	cfg->provisioning_delay_ms = drv_call_config_int(call, "provisioning_delay_ms", 0);
	cfg->latency_ms = drv_call_config_int(call, "latency_ms", 0);
	cfg->error_rate = drv_call_config_number(call, "error_rate", 0);
	cfg->crash_rate = drv_call_config_number(call, "crash_rate", 0);
	cfg->synthetic_offers = drv_call_config_int(call, "synthetic_offers", 0);
	cfg->seed = drv_call_config_int(call, "seed", SIM_DEFAULT_SEED);
	cfg->fail_termination = drv_call_config_bool(call, "fail_termination", false);
	cfg->terminate_lie_rate = drv_call_config_number(call, "terminate_lie_rate", 0);
	cfg->terminated_retention_ms =
	    drv_call_config_int(call, "terminated_retention_s", SIM_DEFAULT_TERMINATED_RETENTION_S) * 1000;
}

static _Noreturn void crash(struct ctx *c, const char *when)
{
	drv_call_log(c->call, DRV_LOG_ERROR, "injected crash (crash_rate %.3f) %s the call's effect",
	             c->cfg.crash_rate, when);
	/* A deliberate crash should not leave a core file in whatever directory the driver runs in. */
	struct rlimit no_core = {0, 0};
	setrlimit(RLIMIT_CORE, &no_core);
	abort();
}

/* Common start of every provider call: config, credentials, faults, state. */
static int begin(struct drv_call *call, struct ctx *c)
{
	memset(c, 0, sizeof(*c));
	c->call = call;
	c->arena = (struct sim_arena){.alloc = call_alloc, .ctx = call};
	read_config(call, &c->arena, &c->cfg);
	c->cat = sim_catalog_default(&c->err);
	if (!c->cat)
		return drv_call_fail(call, DRV_EINTERNAL, "%s", c->err.msg);
	const char *key = drv_call_secret(call, "api_key");
	if (key && strcmp(key, "invalid") == 0)
		return drv_call_fail(call, DRV_EUNAUTHENTICATED,
		                     "credentials rejected: the api_key secret is invalid");
	int rc = sim_config_check_regions(c->cat, &c->cfg, &c->err);
	if (rc)
		return drv_call_fail(call, rc, "%s", c->err.msg);
	if (sim_fault_sleep(&c->cfg, call_cancelled, call))
		return drv_call_fail(call, DRV_EDEADLINE, "cancelled during the injected latency of %lld ms",
		                     (long long)c->cfg.latency_ms);
	c->fault = sim_fault_draw(&c->cfg);
	if (c->fault == SIM_FAULT_CRASH_BEFORE)
		crash(c, "before");
	if (c->fault == SIM_FAULT_ERROR)
		return drv_call_fail(call, DRV_EUNAVAILABLE, "injected fault (error_rate %.3f)",
		                     c->cfg.error_rate);
	rc = sim_state_get(c->cfg.state_file, &c->st, &c->err);
	if (rc)
		return drv_call_fail(call, rc, "%s", c->err.msg);
	sim_state_set_retention(c->st, c->cfg.terminated_retention_ms);
	return 0;
}

static int finish(struct ctx *c, int rc)
{
	if (c->fault == SIM_FAULT_CRASH_AFTER)
		crash(c, "after");
	if (rc)
		return drv_call_fail(c->call, rc, "%s", c->err.msg);
	return 0;
}

static int get_offers(struct drv_call *call, const drv_get_offers_request *req, drv_get_offers_response *resp)
{
	struct ctx c;
	int rc = begin(call, &c);
	if (rc)
		return rc;
	return finish(&c, sim_offers_get(c.cat, c.st, &c.cfg, req->requirements, &c.arena, resp, &c.err));
}

static int create_instance(struct drv_call *call, const drv_create_instance_request *req,
                           drv_create_instance_response *resp)
{
	struct ctx c;
	int rc = begin(call, &c);
	if (rc)
		return rc;
	bool created;
	rc = sim_instance_create(c.cat, c.st, &c.cfg, req, &c.arena, &resp->data, &created, &c.err);
	if (!rc && created)
		drv_call_log(call, DRV_LOG_INFO, "created instance %s (%s in %s)", resp->data->instance_id,
		             resp->data->instance_type, resp->data->region);
	return finish(&c, rc);
}

static int get_instance(struct drv_call *call, const drv_get_instance_request *req,
                        drv_get_instance_response *resp)
{
	struct ctx c;
	int rc = begin(call, &c);
	if (rc)
		return rc;
	return finish(&c, sim_instance_get(c.st, req->instance_id, &c.arena, &resp->data, &c.err));
}

static int terminate_instance(struct drv_call *call, const drv_terminate_instance_request *req,
                              drv_terminate_instance_response *resp)
{
	struct ctx c;
	int rc = begin(call, &c);
	if (rc)
		return rc;
	if (c.cfg.fail_termination) {
		c.err =
		    (struct sim_err){"termination failed: fail_termination is set in this backend's config"};
		return finish(&c, DRV_EUNAVAILABLE);
	}
	if (sim_fault_lie(&c.cfg)) {
		drv_call_log(call, DRV_LOG_INFO,
		             "injected lie (terminate_lie_rate %.3f): %s answered OK, left running",
		             c.cfg.terminate_lie_rate, req->instance_id);
		return finish(&c, 0);
	}
	return finish(&c, sim_instance_terminate(c.st, req->instance_id, &c.err));
}

static int list_instances(struct drv_call *call, const drv_list_instances_request *req,
                          drv_list_instances_response *resp)
{
	struct ctx c;
	int rc = begin(call, &c);
	if (rc)
		return rc;
	return finish(&c, sim_instance_list(c.st, req, &c.arena, resp, &c.err));
}

static int create_placement_group(struct drv_call *call, const drv_create_placement_group_request *req,
                                  drv_create_placement_group_response *resp)
{
	struct ctx c;
	int rc = begin(call, &c);
	if (rc)
		return rc;
	return finish(&c, sim_group_create(c.cat, c.st, &c.cfg, req, &c.arena, &resp->group, &c.err));
}

static int delete_placement_group(struct drv_call *call, const drv_delete_placement_group_request *req,
                                  drv_delete_placement_group_response *resp)
{
	struct ctx c;
	int rc = begin(call, &c);
	if (rc)
		return rc;
	return finish(&c, sim_group_delete(c.st, req->group, &c.err));
}

static int create_volume(struct drv_call *call, const drv_create_volume_request *req,
                         drv_create_volume_response *resp)
{
	struct ctx c;
	int rc = begin(call, &c);
	if (rc)
		return rc;
	return finish(&c,
	              sim_volume_create(c.cat, c.st, &c.cfg, req->volume, &c.arena, &resp->volume, &c.err));
}

static int register_volume(struct drv_call *call, const drv_register_volume_request *req,
                           drv_register_volume_response *resp)
{
	struct ctx c;
	int rc = begin(call, &c);
	if (rc)
		return rc;
	return finish(&c, sim_volume_register(c.st, req->volume_id, &c.arena, &resp->volume, &c.err));
}

static int delete_volume(struct drv_call *call, const drv_delete_volume_request *req,
                         drv_delete_volume_response *resp)
{
	struct ctx c;
	int rc = begin(call, &c);
	if (rc)
		return rc;
	return finish(&c, sim_volume_delete(c.st, req->volume_id, &c.err));
}

static int attach_volume(struct drv_call *call, const drv_attach_volume_request *req,
                         drv_attach_volume_response *resp)
{
	struct ctx c;
	int rc = begin(call, &c);
	if (rc)
		return rc;
	return finish(&c, sim_volume_attach(c.st, req->volume_id, req->instance_id, &c.arena,
	                                    &resp->device_name, &c.err));
}

static int detach_volume(struct drv_call *call, const drv_detach_volume_request *req,
                         drv_detach_volume_response *resp)
{
	struct ctx c;
	int rc = begin(call, &c);
	if (rc)
		return rc;
	return finish(&c, sim_volume_detach(c.st, req->volume_id, req->instance_id, &c.err));
}

static int create_gateway(struct drv_call *call, const drv_create_gateway_request *req,
                          drv_create_gateway_response *resp)
{
	struct ctx c;
	int rc = begin(call, &c);
	if (rc)
		return rc;
	return finish(
	    &c, sim_gateway_create(c.cat, c.st, &c.cfg, req->gateway, &c.arena, &resp->gateway, &c.err));
}

static int terminate_gateway(struct drv_call *call, const drv_terminate_gateway_request *req,
                             drv_terminate_gateway_response *resp)
{
	struct ctx c;
	int rc = begin(call, &c);
	if (rc)
		return rc;
	return finish(&c, sim_gateway_terminate(c.st, req->instance_id, &c.err));
}

/*
 * Semantic checks of a config: credentials, regions that exist, a state file
 * that can be used. Identity calls never see injected faults.
 */
static int validate(struct drv_call *call, struct drv_diags *diags)
{
	struct sim_err err;
	const struct sim_catalog *cat = sim_catalog_default(&err);
	if (!cat)
		return drv_call_fail(call, DRV_EINTERNAL, "%s", err.msg);
	const char *key = drv_call_secret(call, "api_key");
	if (key && strcmp(key, "invalid") == 0)
		drv_diag_error(diags, "/secrets/api_key", "credentials rejected",
		               "the simulated provider refuses the api_key \"invalid\"");
	size_t n = drv_call_config_array_len(call, "regions");
	for (size_t i = 0; i < n; i++) {
		const char *r = drv_call_config_array_at(call, "regions", i);
		if (sim_catalog_find_region(cat, r) < 0) {
			char path[32];
			snprintf(path, sizeof(path), "/regions/%zu", i);
			drv_diag_error(diags, path, "unknown region",
			               "\"%s\" is not a region of the sim catalog (for example: %s, %s)",
			               r ? r : "", cat->regions[0], cat->regions[cat->n_regions - 1]);
		}
	}
	const char *file = drv_call_config_string(call, "state_file", NULL);
	if (file && *file) {
		char *copy = xstrdup(file, "the state file's directory");
		struct stat sb;
		if (stat(dirname(copy), &sb) != 0 || !S_ISDIR(sb.st_mode)) {
			drv_diag_error(diags, "/state_file", "directory does not exist",
			               "the directory of state_file \"%s\" does not exist", file);
		} else {
			struct sim_state *st;
			if (sim_state_get(file, &st, &err) != 0)
				drv_diag_error(diags, "/state_file", "unusable state file", "%s", err.msg);
		}
		free(copy);
	}
	return 0;
}

static void stop(void)
{
	sim_state_registry_clear();
	sim_synth_cleanup();
}

static const struct drv_compute_ops sim_ops = {
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

const struct drv_driver sim_driver = {
    .version = DRV_DRIVER_V1,
    .type = "sim",
    .driver_version = "0.1.0",
    .description = "Simulated cloud: realistic catalog and prices, finite capacity, persistent state, fault "
                   "injection",
    .ops = &sim_ops,
    .config_fields = config_fields,
    .markers = DRV_FEATURE_BIT(DRV_FEATURE_MULTINODE) | DRV_FEATURE_BIT(DRV_FEATURE_RESERVATION) |
               DRV_FEATURE_BIT(DRV_FEATURE_PRIVILEGED) | DRV_FEATURE_BIT(DRV_FEATURE_PRIVATE_GATEWAYS),
    .validate_config = validate,
    /*
     * No start hook: the catalog is parsed on first use (about 1 ms), which
     * keeps it out of spawn time and idle memory; the unit tests prove the
     * embedded catalog parses.
     */
    .stop = stop,
};
