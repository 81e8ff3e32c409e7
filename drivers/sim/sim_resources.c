/*
 * Placement groups, volumes and gateways of the simulated cloud. Creates are
 * idempotent (by name or key), deletes and terminates accept unknown ids, and
 * every mutation is committed to the state file before it is answered.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sim_core.h"
#include "xalloc.h"

static const char *nz(const char *s)
{
	return s ? s : "";
}

/* A region of the catalog that this backend's config allows; `what` names the request field. */
static int check_region(const struct sim_catalog *cat, const struct sim_config *cfg, const char *what,
                        const char *region, struct sim_err *e)
{
	if (!region || !*region)
		return sim_fail(e, DRV_EINVAL, "%s is empty", what);
	if (sim_catalog_find_region(cat, region) < 0)
		return sim_fail(e, DRV_EINVAL, "%s \"%s\" is not a region of the sim cloud", what, region);
	if (cfg->n_regions) {
		for (size_t i = 0; i < cfg->n_regions; i++)
			if (strcmp(cfg->regions[i], region) == 0)
				return 0;
		return sim_fail(e, DRV_EINVAL, "%s \"%s\" is not in this backend's regions", what, region);
	}
	return 0;
}

static void make_id(char *buf, size_t len, const char *prefix, struct sim_state *st, uint64_t s)
{
	snprintf(buf, len, "%s-%08" PRIx64 "%09" PRIx64, prefix, s,
	         sim_slot_hash(st->path, prefix) & UINT64_C(0xfffffffff));
}

/* ---- placement groups ---- */

static drv_placement_group *group_msg(const struct sim_placement_group *g, struct sim_arena *a)
{
	drv_placement_group *m = sim_new(a, placement_group);
	m->name = sim_arena_strdup(a, g->name);
	m->region = sim_arena_strdup(a, g->region);
	m->group_id = sim_arena_strdup(a, g->group_id);
	m->strategy = g->strategy;
	return m;
}

int sim_group_create(const struct sim_catalog *cat, struct sim_state *st, const struct sim_config *cfg,
                     const drv_create_placement_group_request *req, struct sim_arena *a,
                     drv_placement_group **out, struct sim_err *e)
{
	if (!req->name || !*req->name)
		return sim_fail(e, DRV_EINVAL, "name is empty");
	int rc;
	if ((rc = sim_check_text(e, "name", req->name)) || (rc = sim_check_text(e, "project", req->project)))
		return rc;
	rc = check_region(cat, cfg, "region", req->region, e);
	if (rc)
		return rc;
	sim_state_lock(st);
	struct sim_placement_group *g = NULL;
	for (size_t i = 0; i < st->groups.n && !g; i++)
		if (strcmp(((struct sim_placement_group *)st->groups.items[i])->name, req->name) == 0)
			g = st->groups.items[i];
	if (g) {
		if (strcmp(g->region, req->region) != 0) {
			rc = sim_fail(e, DRV_EEXIST, "placement group \"%s\" already exists in region %s",
			              g->name, g->region);
			goto done;
		}
		goto reply;
	}
	char id[64];
	g = xcalloc(1, sizeof(*g), "a sim placement group");
	make_id(id, sizeof(id), "pg", st, sim_state_serial(st));
	g->name = xstrdup(req->name, "a sim record's field");
	g->region = xstrdup(req->region, "a sim record's field");
	g->project = xstrdup(req->project, "a sim record's field");
	g->group_id = xstrdup(id, "a sim record's field");
	g->strategy = req->strategy;
	sim_vec_push(&st->groups, g);
	rc = sim_state_commit(st, e);
	if (rc)
		goto done;
reply:
	*out = group_msg(g, a);
done:
	sim_state_unlock(st);
	return rc;
}

int sim_group_delete(struct sim_state *st, const drv_placement_group *group, struct sim_err *e)
{
	if (!group || (!*nz(group->name) && !*nz(group->group_id)))
		return sim_fail(e, DRV_EINVAL, "group.name and group.group_id are both empty");
	sim_state_lock(st);
	int rc = 0;
	for (size_t i = 0; i < st->groups.n; i++) {
		struct sim_placement_group *g = st->groups.items[i];
		if ((*nz(group->group_id) && strcmp(g->group_id, group->group_id) == 0) ||
		    (!*nz(group->group_id) && strcmp(g->name, group->name) == 0)) {
			sim_vec_remove(&st->groups, i);
			sim_group_free(g);
			rc = sim_state_commit(st, e);
			break;
		}
	}
	sim_state_unlock(st);
	return rc;
}

/* ---- volumes ---- */

static struct sim_volume *volume_by_id(struct sim_state *st, const char *id, size_t *index)
{
	for (size_t i = 0; i < st->volumes.n; i++) {
		struct sim_volume *v = st->volumes.items[i];
		if (strcmp(v->id, id) == 0) {
			if (index)
				*index = i;
			return v;
		}
	}
	return NULL;
}

static drv_volume *volume_msg(const struct sim_volume *v, struct sim_arena *a)
{
	drv_volume *m = sim_new(a, volume);
	m->volume_id = sim_arena_strdup(a, v->id);
	m->name = sim_arena_strdup(a, v->name);
	m->region = sim_arena_strdup(a, v->region);
	m->zone = sim_arena_strdup(a, v->zone);
	m->attached_instance_id = sim_arena_strdup(a, v->attached_instance_id);
	m->size_mib = v->size_mib;
	return m;
}

int sim_volume_create(const struct sim_catalog *cat, struct sim_state *st, const struct sim_config *cfg,
                      const drv_volume_configuration *conf, struct sim_arena *a, drv_volume **out,
                      struct sim_err *e)
{
	if (!conf)
		return sim_fail(e, DRV_EINVAL, "volume is required");
	if (!*nz(conf->idempotency_key))
		return sim_fail(e, DRV_EINVAL, "volume.idempotency_key is required");
	if (conf->size_mib == 0)
		return sim_fail(e, DRV_EINVAL, "volume.size_mib must be greater than 0");
	if (conf->size_mib > SIM_MAX_VOLUME_MIB)
		return sim_fail(e, DRV_EINVAL,
		                "volume.size_mib %" PRIu64
		                " is more than the largest volume, %d MiB (64 TiB)",
		                conf->size_mib, SIM_MAX_VOLUME_MIB);
	int rc;
	if ((rc = sim_check_text(e, "volume.idempotency_key", conf->idempotency_key)) ||
	    (rc = sim_check_text(e, "volume.name", conf->name)) ||
	    (rc = sim_check_text(e, "volume.project", conf->project)))
		return rc;
	for (size_t i = 0; i < conf->n_tags; i++)
		if ((rc = sim_check_tag(e, "volume.tags", i, conf->tags[i]->key, conf->tags[i]->value)))
			return rc;
	rc = check_region(cat, cfg, "volume.region", conf->region, e);
	if (rc)
		return rc;
	sim_state_lock(st);
	struct sim_volume *v = NULL;
	for (size_t i = 0; i < st->volumes.n && !v; i++)
		if (strcmp(((struct sim_volume *)st->volumes.items[i])->idempotency_key,
		           conf->idempotency_key) == 0)
			v = st->volumes.items[i];
	if (v) {
		if (strcmp(v->region, conf->region) != 0 || v->size_mib != conf->size_mib ||
		    strcmp(v->name, nz(conf->name)) != 0) {
			rc = sim_fail(e, DRV_EEXIST,
			              "idempotency key \"%s\" was already used for volume %s (%s, %" PRIu64
			              " MiB in %s)",
			              v->idempotency_key, v->id, v->name, v->size_mib, v->region);
			goto done;
		}
		goto reply;
	}
	char buf[128];
	v = xcalloc(1, sizeof(*v), "a sim volume");
	make_id(buf, sizeof(buf), "vol", st, sim_state_serial(st));
	v->id = xstrdup(buf, "a sim record's field");
	v->idempotency_key = xstrdup(conf->idempotency_key, "a sim record's field");
	v->name = xstrdup(conf->name, "a sim record's field");
	v->project = xstrdup(conf->project, "a sim record's field");
	v->region = xstrdup(conf->region, "a sim record's field");
	snprintf(buf, sizeof(buf), "%sa", conf->region);
	v->zone = xstrdup(buf, "a sim record's field");
	v->size_mib = conf->size_mib;
	if (conf->n_tags) {
		v->tags = xcalloc(conf->n_tags, sizeof(*v->tags), "a sim volume's tags");
		for (size_t i = 0; i < conf->n_tags; i++) {
			v->tags[i].key = xstrdup(conf->tags[i]->key, "a sim record's field");
			v->tags[i].value = xstrdup(conf->tags[i]->value, "a sim record's field");
			v->n_tags++;
		}
	}
	sim_vec_push(&st->volumes, v);
	rc = sim_state_commit(st, e);
	if (rc)
		goto done;
reply:
	*out = volume_msg(v, a);
done:
	sim_state_unlock(st);
	return rc;
}

int sim_volume_register(struct sim_state *st, const char *volume_id, struct sim_arena *a, drv_volume **out,
                        struct sim_err *e)
{
	if (!*nz(volume_id))
		return sim_fail(e, DRV_EINVAL, "volume_id is empty");
	sim_state_lock(st);
	int rc = 0;
	struct sim_volume *v = volume_by_id(st, volume_id, NULL);
	if (!v)
		rc = sim_fail(e, DRV_ENOTFOUND, "volume %s does not exist", volume_id);
	else
		*out = volume_msg(v, a);
	sim_state_unlock(st);
	return rc;
}

int sim_volume_delete(struct sim_state *st, const char *volume_id, struct sim_err *e)
{
	if (!*nz(volume_id))
		return sim_fail(e, DRV_EINVAL, "volume_id is empty");
	sim_state_lock(st);
	int rc = 0;
	size_t i;
	struct sim_volume *v = volume_by_id(st, volume_id, &i);
	if (v && v->attached_instance_id) {
		rc = sim_fail(e, DRV_EPRECONDITION, "volume %s is attached to instance %s; detach it first",
		              v->id, v->attached_instance_id);
	} else if (v) {
		sim_vec_remove(&st->volumes, i);
		sim_volume_free(v);
		rc = sim_state_commit(st, e);
	}
	sim_state_unlock(st);
	return rc;
}

int sim_volume_attach(struct sim_state *st, const char *volume_id, const char *instance_id,
                      struct sim_arena *a, char **device_name, struct sim_err *e)
{
	if (!*nz(volume_id) || !*nz(instance_id))
		return sim_fail(e, DRV_EINVAL, "volume_id and instance_id are required");
	sim_state_lock(st);
	int rc = 0;
	struct sim_volume *v = volume_by_id(st, volume_id, NULL);
	struct sim_instance *in = NULL;
	for (size_t i = 0; i < st->instances.n && !in; i++) {
		struct sim_instance *x = st->instances.items[i];
		if (!x->terminated && strcmp(x->id, instance_id) == 0)
			in = x;
	}
	if (!v) {
		rc = sim_fail(e, DRV_ENOTFOUND, "volume %s does not exist", volume_id);
		goto done;
	}
	if (!in) {
		rc = sim_fail(e, DRV_ENOTFOUND, "instance %s does not exist (or is terminated)", instance_id);
		goto done;
	}
	if (v->attached_instance_id) {
		if (strcmp(v->attached_instance_id, instance_id) != 0)
			rc = sim_fail(e, DRV_EPRECONDITION, "volume %s is attached to another instance, %s",
			              v->id, v->attached_instance_id);
		goto reply;
	}
	if (strcmp(v->region, in->region) != 0) {
		rc = sim_fail(e, DRV_EPRECONDITION, "volume %s is in region %s, instance %s in %s", v->id,
		              v->region, in->id, in->region);
		goto done;
	}
	/* The first free name of /dev/sdf ... /dev/sdp, as EC2 suggests for data volumes. */
	char dev[16] = "";
	for (char c = 'f'; c <= 'p' && !*dev; c++) {
		snprintf(dev, sizeof(dev), "/dev/sd%c", c);
		for (size_t i = 0; i < st->volumes.n; i++) {
			const struct sim_volume *o = st->volumes.items[i];
			if (o->attached_instance_id && strcmp(o->attached_instance_id, instance_id) == 0 &&
			    strcmp(o->device_name, dev) == 0) {
				*dev = '\0';
				break;
			}
		}
	}
	if (!*dev) {
		rc = sim_fail(e, DRV_EPRECONDITION,
		              "instance %s has no free device name left (11 volumes attached)", instance_id);
		goto done;
	}
	v->attached_instance_id = xstrdup(instance_id, "a sim volume's attachment");
	v->device_name = xstrdup(dev, "a sim volume's attachment");
	rc = sim_state_commit(st, e);
	if (rc)
		goto done;
	v = volume_by_id(st, volume_id, NULL);
reply:
	if (!rc)
		*device_name = sim_arena_strdup(a, v->device_name);
done:
	sim_state_unlock(st);
	return rc;
}

int sim_volume_detach(struct sim_state *st, const char *volume_id, const char *instance_id, struct sim_err *e)
{
	if (!*nz(volume_id) || !*nz(instance_id))
		return sim_fail(e, DRV_EINVAL, "volume_id and instance_id are required");
	sim_state_lock(st);
	int rc = 0;
	struct sim_volume *v = volume_by_id(st, volume_id, NULL);
	if (!v) {
		rc = sim_fail(e, DRV_ENOTFOUND, "volume %s does not exist", volume_id);
	} else if (v->attached_instance_id && strcmp(v->attached_instance_id, instance_id) == 0) {
		free(v->attached_instance_id);
		free(v->device_name);
		v->attached_instance_id = v->device_name = NULL;
		rc = sim_state_commit(st, e);
	}
	sim_state_unlock(st);
	return rc;
}

/* ---- gateways ---- */

static drv_gateway *gateway_msg(const struct sim_gateway *g, struct sim_arena *a)
{
	drv_gateway *m = sim_new(a, gateway);
	m->instance_id = sim_arena_strdup(a, g->id);
	m->ip_address = sim_arena_strdup(a, g->ip_address);
	m->hostname = sim_arena_strdup(a, g->hostname);
	m->region = sim_arena_strdup(a, g->region);
	return m;
}

int sim_gateway_create(const struct sim_catalog *cat, struct sim_state *st, const struct sim_config *cfg,
                       const drv_gateway_configuration *conf, struct sim_arena *a, drv_gateway **out,
                       struct sim_err *e)
{
	if (!conf)
		return sim_fail(e, DRV_EINVAL, "gateway is required");
	if (!*nz(conf->idempotency_key))
		return sim_fail(e, DRV_EINVAL, "gateway.idempotency_key is required");
	int rc;
	if ((rc = sim_check_text(e, "gateway.idempotency_key", conf->idempotency_key)) ||
	    (rc = sim_check_text(e, "gateway.name", conf->name)) ||
	    (rc = sim_check_text(e, "gateway.project", conf->project)))
		return rc;
	rc = check_region(cat, cfg, "gateway.region", conf->region, e);
	if (rc)
		return rc;
	sim_state_lock(st);
	struct sim_gateway *g = NULL;
	for (size_t i = 0; i < st->gateways.n && !g; i++)
		if (strcmp(((struct sim_gateway *)st->gateways.items[i])->idempotency_key,
		           conf->idempotency_key) == 0)
			g = st->gateways.items[i];
	if (g) {
		if (strcmp(g->region, conf->region) != 0 || strcmp(g->name, nz(conf->name)) != 0 ||
		    g->public_ip != conf->public_ip) {
			rc = sim_fail(e, DRV_EEXIST,
			              "idempotency key \"%s\" was already used for gateway %s (%s in %s)",
			              g->idempotency_key, g->id, g->name, g->region);
			goto done;
		}
		goto reply;
	}
	char buf[160];
	uint64_t s = sim_state_serial(st);
	g = xcalloc(1, sizeof(*g), "a sim gateway");
	make_id(buf, sizeof(buf), "gw", st, s);
	g->id = xstrdup(buf, "a sim record's field");
	g->idempotency_key = xstrdup(conf->idempotency_key, "a sim record's field");
	g->name = xstrdup(conf->name, "a sim record's field");
	g->project = xstrdup(conf->project, "a sim record's field");
	g->region = xstrdup(conf->region, "a sim record's field");
	g->public_ip = conf->public_ip;
	/* Public addresses from TEST-NET-3 (RFC 5737), which never routes anywhere real. */
	if (conf->public_ip)
		snprintf(buf, sizeof(buf), "203.0.113.%u", (unsigned)(s % 254) + 1);
	else
		snprintf(buf, sizeof(buf), "10.255.%u.%u", (unsigned)((s / 254) % 256),
		         (unsigned)(s % 254) + 1);
	g->ip_address = xstrdup(buf, "a sim record's field");
	snprintf(buf, sizeof(buf), "%s.%s.gateway.sim.internal", g->id, conf->region);
	g->hostname = xstrdup(buf, "a sim record's field");
	sim_vec_push(&st->gateways, g);
	rc = sim_state_commit(st, e);
	if (rc)
		goto done;
reply:
	*out = gateway_msg(g, a);
done:
	sim_state_unlock(st);
	return rc;
}

int sim_gateway_terminate(struct sim_state *st, const char *gateway_id, struct sim_err *e)
{
	if (!*nz(gateway_id))
		return sim_fail(e, DRV_EINVAL, "instance_id is empty");
	sim_state_lock(st);
	int rc = 0;
	for (size_t i = 0; i < st->gateways.n; i++) {
		struct sim_gateway *g = st->gateways.items[i];
		if (strcmp(g->id, gateway_id) == 0) {
			if (!g->terminated) {
				g->terminated = true;
				g->terminated_ms = sim_now_ms();
				rc = sim_state_commit(st, e);
			}
			break;
		}
	}
	sim_state_unlock(st);
	return rc;
}
