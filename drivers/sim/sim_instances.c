/*
 * Instances of the simulated cloud: create (idempotent by key, finite
 * capacity per pool), provisioning delay, terminate (idempotent), list by tag.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sim_core.h"
#include "xalloc.h"

static struct sim_instance *find_by_key(struct sim_state *st, const char *key)
{
	for (size_t i = 0; i < st->instances.n; i++) {
		struct sim_instance *in = st->instances.items[i];
		if (strcmp(in->idempotency_key, key) == 0)
			return in;
	}
	return NULL;
}

static struct sim_instance *find_by_id(struct sim_state *st, const char *id)
{
	for (size_t i = 0; i < st->instances.n; i++) {
		struct sim_instance *in = st->instances.items[i];
		if (strcmp(in->id, id) == 0)
			return in;
	}
	return NULL;
}

/* Builds the protocol's view of an instance in the arena (state locked). */
static drv_provisioning_data *instance_data(const struct sim_instance *in, struct sim_arena *a)
{
	drv_provisioning_data *d = sim_new(a, provisioning_data);
	int state;
	if (in->terminated)
		state = DROVER__COMPUTE__V1__INSTANCE_STATE__INSTANCE_STATE_TERMINATED;
	else if (sim_now_ms() < in->ready_ms)
		state = DROVER__COMPUTE__V1__INSTANCE_STATE__INSTANCE_STATE_PROVISIONING;
	else
		state = DROVER__COMPUTE__V1__INSTANCE_STATE__INSTANCE_STATE_RUNNING;
	d->state = state;
	d->instance_id = sim_arena_strdup(a, in->id);
	d->instance_type = sim_arena_strdup(a, in->instance_type);
	d->region = sim_arena_strdup(a, in->region);
	d->zone = sim_arena_strdup(a, in->zone);
	d->price_per_hour = in->price;
	d->username = (char *)"ubuntu";
	d->ssh_port = 22;
	/* Like a real cloud, the address is known only once the machine runs. */
	bool running = state == DROVER__COMPUTE__V1__INSTANCE_STATE__INSTANCE_STATE_RUNNING;
	d->hostname = running ? sim_arena_strdup(a, in->hostname) : (char *)"";
	d->internal_ip = running ? sim_arena_strdup(a, in->internal_ip) : (char *)"";
	return d;
}

/* Resolves a requested offer against the catalog (and the config's synthetic offers). */
static int resolve_offer(const struct sim_catalog *cat, const struct sim_config *cfg, const drv_offer *offer,
                         double *price, bool *no_quota, struct sim_err *e)
{
	const char *type_name = offer->instance_type ? offer->instance_type : "";
	const char *region = offer->region ? offer->region : "";
	bool spot = offer->resources && offer->resources->spot;
	if (!*type_name)
		return sim_fail(e, DRV_EINVAL, "offer.instance_type is empty");
	int r = sim_catalog_find_region(cat, region);
	if (r < 0)
		return sim_fail(e, DRV_EINVAL, "offer.region \"%s\" is not a region of the sim cloud",
		                region);
	if (cfg->n_regions) {
		bool allowed = false;
		for (size_t i = 0; i < cfg->n_regions; i++)
			allowed |= strcmp(cfg->regions[i], region) == 0;
		if (!allowed)
			return sim_fail(e, DRV_EINVAL, "offer.region \"%s\" is not in this backend's regions",
			                region);
	}
	const struct sim_type *t = sim_catalog_find_type(cat, type_name);
	if (t) {
		if (!sim_type_in_region(t, r))
			return sim_fail(e, DRV_EINVAL, "offer: instance type %s is not sold in region %s",
			                type_name, region);
		if (spot && t->spot_price <= 0)
			return sim_fail(e, DRV_EINVAL, "offer: instance type %s has no spot offers",
			                type_name);
		*price = spot ? t->spot_price : t->price;
		*no_quota = sim_type_no_quota(cat, t, r);
		return 0;
	}
	if (cfg->synthetic_offers > 0) {
		const struct sim_synth *syn = sim_synth_get(cat, cfg->synthetic_offers, cfg->seed);
		const struct sim_offer *o = sim_synth_find(syn, type_name, region, spot);
		if (o) {
			*price = o->offer.price_per_hour;
			*no_quota = o->no_quota;
			return 0;
		}
	}
	return sim_fail(e, DRV_EINVAL, "offer.instance_type \"%s\" (region %s%s) is not in the sim catalog",
	                type_name, region, spot ? ", spot" : "");
}

/*
 * Live instances in a capacity pool: (type, region) for ordinary launches;
 * a capacity reservation is a pool of its own of the same size, so launches
 * into it succeed while the shared pool is full (the RESERVATION marker).
 */
static int64_t live_in_pool(struct sim_state *st, const char *type, const char *region,
                            const char *reservation)
{
	int64_t n = 0;
	for (size_t i = 0; i < st->instances.n; i++) {
		const struct sim_instance *in = st->instances.items[i];
		n += !in->terminated && strcmp(in->instance_type, type) == 0 &&
		     strcmp(in->region, region) == 0 && strcmp(in->reservation, reservation) == 0;
	}
	return n;
}

static struct sim_instance *instance_new(struct sim_state *st, const struct sim_config *cfg,
                                         const drv_create_instance_request *req, double price)
{
	const drv_offer *offer = req->offer;
	const drv_instance_configuration *conf = req->instance;
	uint64_t s = sim_state_serial(st);
	struct sim_instance *in = xcalloc(1, sizeof(*in), "a sim instance");
	char buf[160];
	snprintf(buf, sizeof(buf), "i-%08" PRIx64 "%09" PRIx64, s,
	         sim_slot_hash(st->path, offer->instance_type) & UINT64_C(0xfffffffff));
	in->id = xstrdup(buf, "a sim instance's field");
	in->idempotency_key = xstrdup(conf->idempotency_key, "a sim instance\'s field");
	in->name = xstrdup(conf->name, "a sim instance\'s field");
	in->project = xstrdup(conf->project, "a sim instance\'s field");
	in->reservation = xstrdup(conf->reservation, "a sim instance\'s field");
	in->instance_type = xstrdup(offer->instance_type, "a sim instance\'s field");
	in->region = xstrdup(offer->region, "a sim instance\'s field");
	snprintf(buf, sizeof(buf), "%s%c", offer->region, (int)('a' + s % 3));
	in->zone = xstrdup(buf, "a sim instance's field");
	/* Made-up private addresses: 10.0.0.1, 10.0.0.2, ... never .0 or .255. */
	unsigned o3 = (unsigned)(s % 254) + 1, o2 = (unsigned)((s / 254) % 256),
	         o1 = (unsigned)((s / 254 / 256) % 256);
	snprintf(buf, sizeof(buf), "10.%u.%u.%u", o1, o2, o3);
	in->internal_ip = xstrdup(buf, "a sim instance's field");
	snprintf(buf, sizeof(buf), "ip-10-%u-%u-%u.%s.compute.sim.internal", o1, o2, o3, offer->region);
	in->hostname = xstrdup(buf, "a sim instance's field");
	in->spot = offer->resources && offer->resources->spot;
	in->price = price;
	in->created_ms = sim_now_ms();
	/* Clamped here too: the core's callers (tests) need not go through the config schema. */
	int64_t delay = cfg->provisioning_delay_ms;
	delay = delay < 0 ? 0 : delay > SIM_MAX_PROVISIONING_DELAY_MS ? SIM_MAX_PROVISIONING_DELAY_MS : delay;
	in->ready_ms = in->created_ms + delay;
	if (conf->n_tags) {
		in->tags = xcalloc(conf->n_tags, sizeof(*in->tags), "a sim instance's tags");
		for (size_t i = 0; i < conf->n_tags; i++) {
			in->tags[i].key = xstrdup(conf->tags[i]->key, "a sim instance\'s field");
			in->tags[i].value = xstrdup(conf->tags[i]->value, "a sim instance\'s field");
			in->n_tags++;
		}
	}
	return in;
}

int sim_instance_create(const struct sim_catalog *cat, struct sim_state *st, const struct sim_config *cfg,
                        const drv_create_instance_request *req, struct sim_arena *a,
                        drv_provisioning_data **out, bool *created, struct sim_err *e)
{
	if (created)
		*created = false;
	if (!req->instance || !req->instance->idempotency_key || !*req->instance->idempotency_key)
		return sim_fail(e, DRV_EINVAL, "instance.idempotency_key is required");
	if (!req->offer)
		return sim_fail(e, DRV_EINVAL, "offer is required");
	const drv_instance_configuration *conf = req->instance;
	int rc = 0;
	if ((rc = sim_check_text(e, "instance.idempotency_key", conf->idempotency_key)) ||
	    (rc = sim_check_text(e, "instance.name", conf->name)) ||
	    (rc = sim_check_text(e, "instance.project", conf->project)) ||
	    (rc = sim_check_text(e, "instance.reservation", conf->reservation)))
		return rc;
	for (size_t i = 0; i < conf->n_tags; i++)
		if ((rc = sim_check_tag(e, "instance.tags", i, conf->tags[i]->key, conf->tags[i]->value)))
			return rc;
	double price = 0;
	bool no_quota = false;
	rc = resolve_offer(cat, cfg, req->offer, &price, &no_quota, e);
	if (rc)
		return rc;
	const char *type = req->offer->instance_type, *region = req->offer->region;
	const char *reservation = req->instance->reservation ? req->instance->reservation : "";
	bool spot = req->offer->resources && req->offer->resources->spot;

	sim_state_lock(st);
	struct sim_instance *in = find_by_key(st, req->instance->idempotency_key);
	if (in) {
		if (strcmp(in->instance_type, type) != 0 || strcmp(in->region, region) != 0 ||
		    in->spot != spot || strcmp(in->reservation, reservation) != 0) {
			rc = sim_fail(e, DRV_EEXIST,
			              "idempotency key \"%s\" was already used for %s%s in %s (instance %s)",
			              in->idempotency_key, in->instance_type, in->spot ? " (spot)" : "",
			              in->region, in->id);
			goto done;
		}
		goto reply;
	}
	if (*reservation) {
		if (live_in_pool(st, type, region, reservation) >= cfg->capacity) {
			rc = sim_fail(e, DRV_ENOCAPACITY, "reservation %s is full for %s in %s", reservation,
			              type, region);
			goto done;
		}
	} else if (no_quota) {
		rc = sim_fail(e, DRV_ENOCAPACITY, "no quota for %s in %s", type, region);
		goto done;
	} else if (live_in_pool(st, type, region, "") >= cfg->capacity) {
		rc = sim_fail(e, DRV_ENOCAPACITY, "no capacity for %s in %s", type, region);
		goto done;
	}
	in = instance_new(st, cfg, req, price);
	sim_vec_push(&st->instances, in);
	rc = sim_state_commit(st, e);
	if (rc)
		goto done; /* the reload freed `in` */
	if (created)
		*created = true;
reply:
	*out = instance_data(in, a);
done:
	sim_state_unlock(st);
	return rc;
}

int sim_instance_get(struct sim_state *st, const char *instance_id, struct sim_arena *a,
                     drv_provisioning_data **out, struct sim_err *e)
{
	if (!instance_id || !*instance_id)
		return sim_fail(e, DRV_EINVAL, "instance_id is empty");
	sim_state_lock(st);
	int rc = 0;
	struct sim_instance *in = find_by_id(st, instance_id);
	if (!in)
		rc = sim_fail(e, DRV_ENOTFOUND, "instance %s does not exist", instance_id);
	else
		*out = instance_data(in, a);
	sim_state_unlock(st);
	return rc;
}

int sim_instance_terminate(struct sim_state *st, const char *instance_id, struct sim_err *e)
{
	if (!instance_id || !*instance_id)
		return sim_fail(e, DRV_EINVAL, "instance_id is empty");
	sim_state_lock(st);
	int rc = 0;
	struct sim_instance *in = find_by_id(st, instance_id);
	if (in && !in->terminated) {
		in->terminated = true;
		in->terminated_ms = sim_now_ms();
		/* As on EC2, a terminated machine's volumes become available again. */
		for (size_t i = 0; i < st->volumes.n; i++) {
			struct sim_volume *v = st->volumes.items[i];
			if (v->attached_instance_id && strcmp(v->attached_instance_id, instance_id) == 0) {
				free(v->attached_instance_id);
				free(v->device_name);
				v->attached_instance_id = v->device_name = NULL;
			}
		}
		rc = sim_state_commit(st, e);
	}
	sim_state_unlock(st);
	return rc;
}

static bool has_tags(const struct sim_instance *in, const drv_list_instances_request *req)
{
	for (size_t i = 0; i < req->n_tags; i++) {
		const char *k = req->tags[i]->key ? req->tags[i]->key : "";
		const char *v = req->tags[i]->value ? req->tags[i]->value : "";
		bool found = false;
		for (size_t j = 0; j < in->n_tags && !found; j++)
			found = strcmp(in->tags[j].key, k) == 0 && strcmp(in->tags[j].value, v) == 0;
		if (!found)
			return false;
	}
	return true;
}

int sim_instance_list(struct sim_state *st, const drv_list_instances_request *req, struct sim_arena *a,
                      drv_list_instances_response *resp, struct sim_err *e)
{
	sim_state_lock(st);
	size_t n = 0;
	for (size_t i = 0; i < st->instances.n; i++) {
		const struct sim_instance *in = st->instances.items[i];
		n += !in->terminated && has_tags(in, req);
	}
	drv_listed_instance **list = sim_arena_alloc(a, (n ? n : 1) * sizeof(*list));
	size_t k = 0;
	for (size_t i = 0; i < st->instances.n && k < n; i++) {
		const struct sim_instance *in = st->instances.items[i];
		if (in->terminated || !has_tags(in, req))
			continue;
		drv_listed_instance *li = sim_new(a, listed_instance);
		li->data = instance_data(in, a);
		li->name = sim_arena_strdup(a, in->name);
		li->idempotency_key = sim_arena_strdup(a, in->idempotency_key);
		li->tags = sim_arena_alloc(a, (in->n_tags ? in->n_tags : 1) * sizeof(*li->tags));
		for (size_t j = 0; j < in->n_tags; j++) {
			Drover__Compute__V1__ListedInstance__TagsEntry *t = sim_arena_message(
			    a, &drover__compute__v1__listed_instance__tags_entry__descriptor);
			t->key = sim_arena_strdup(a, in->tags[j].key);
			t->value = sim_arena_strdup(a, in->tags[j].value);
			li->tags[li->n_tags++] = t;
		}
		list[k++] = li;
	}
	resp->instances = list;
	resp->n_instances = k;
	sim_state_unlock(st);
	return 0;
}
