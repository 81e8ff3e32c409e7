/*
 * Instances, placement groups, volumes, gateways and fault draws of the sim
 * core, against the in-memory state (each test starts from an empty one).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <pthread.h>
#include <time.h>

#include <cmocka.h>

#include "sim_test_util.h"

struct fixture {
	struct test_arena t;
	struct sim_config cfg;
	const struct sim_catalog *cat;
	struct sim_state *st;
	struct sim_err e;
};

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	test_arena_init(&f->t);
	sim_config_init(&f->cfg);
	f->cat = sim_catalog_default(&f->e);
	if (!f->cat || sim_state_get(NULL, &f->st, &f->e))
		return -1;
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	test_arena_free(&f->t);
	free(f);
	sim_state_registry_clear();
	sim_synth_cleanup();
	return 0;
}

static int create(struct fixture *f, const char *type, const char *region, bool spot, const char *key,
                  drv_provisioning_data **out)
{
	drv_create_instance_request *req = make_create(&f->t, type, region, spot, key);
	drv_provisioning_data *d = NULL;
	memset(&f->e, 0, sizeof(f->e));
	int rc = sim_instance_create(f->cat, f->st, &f->cfg, req, &f->t.a, &d, NULL, &f->e);
	if (out)
		*out = d;
	return rc;
}

static void assert_msg(struct fixture *f, const char *needle)
{
	if (!strstr(f->e.msg, needle))
		fail_msg("message \"%s\" does not contain \"%s\"", f->e.msg, needle);
}

static void test_create_validation(void **state)
{
	struct fixture *f = *state;
	assert_int_equal(create(f, "g5.xlarge", "us-east-1", false, "", NULL), DRV_EINVAL);
	assert_msg(f, "idempotency_key");
	assert_int_equal(create(f, "g9.huge", "us-east-1", false, "k1", NULL), DRV_EINVAL);
	assert_msg(f, "g9.huge");
	assert_int_equal(create(f, "g5.xlarge", "mars-1", false, "k1", NULL), DRV_EINVAL);
	assert_msg(f, "mars-1");
	/* A real region where the type is not sold. */
	assert_int_equal(create(f, "g5.xlarge", "us-central1", false, "k1", NULL), DRV_EINVAL);
	assert_msg(f, "not sold in region us-central1");
	/* Lambda has no spot market. */
	assert_int_equal(create(f, "gpu_1x_a10", "us-east-1", true, "k1", NULL), DRV_EINVAL);
	assert_msg(f, "no spot");
	/* Outside the backend's regions. */
	const char *regions[] = {"eu-west-1"};
	f->cfg.regions = regions;
	f->cfg.n_regions = 1;
	assert_int_equal(create(f, "g5.xlarge", "us-east-1", false, "k1", NULL), DRV_EINVAL);
	assert_msg(f, "not in this backend's regions");
	f->cfg.n_regions = 0;

	drv_create_instance_request *req = make_create(&f->t, "g5.xlarge", "us-east-1", false, "k1");
	req->offer = NULL;
	drv_provisioning_data *d;
	assert_int_equal(sim_instance_create(f->cat, f->st, &f->cfg, req, &f->t.a, &d, NULL, &f->e),
	                 DRV_EINVAL);
	assert_int_equal(f->st->instances.n, 0);
}

static void test_create_idempotent(void **state)
{
	struct fixture *f = *state;
	drv_provisioning_data *a, *b, *c;
	assert_int_equal(create(f, "g5.xlarge", "us-east-1", false, "key-1", &a), 0);
	assert_string_equal(a->instance_type, "g5.xlarge");
	assert_string_equal(a->region, "us-east-1");
	assert_true(strncmp(a->zone, "us-east-1", 9) == 0 && strlen(a->zone) == 10);
	assert_true(a->price_per_hour == sim_catalog_find_type(f->cat, "g5.xlarge")->price);
	assert_string_equal(a->username, "ubuntu");
	assert_int_equal(a->ssh_port, 22);
	assert_int_equal(a->state, DROVER__COMPUTE__V1__INSTANCE_STATE__INSTANCE_STATE_RUNNING);
	assert_true(strncmp(a->internal_ip, "10.", 3) == 0);
	assert_true(*a->hostname);

	assert_int_equal(create(f, "g5.xlarge", "us-east-1", false, "key-1", &b), 0);
	assert_string_equal(a->instance_id, b->instance_id);
	bool created = true;
	drv_create_instance_request *req = make_create(&f->t, "g5.xlarge", "us-east-1", false, "key-1");
	assert_int_equal(sim_instance_create(f->cat, f->st, &f->cfg, req, &f->t.a, &b, &created, &f->e), 0);
	assert_false(created);
	req = make_create(&f->t, "g5.xlarge", "us-east-1", false, "key-0");
	assert_int_equal(sim_instance_create(f->cat, f->st, &f->cfg, req, &f->t.a, &b, &created, &f->e), 0);
	assert_true(created);
	assert_int_equal(sim_instance_terminate(f->st, b->instance_id, &f->e), 0);
	assert_int_equal(f->st->instances.n, 2); /* key-1 and the terminated key-0 */
	;

	/* The same key with another offer is refused, naming what the key made. */
	assert_int_equal(create(f, "g5.2xlarge", "us-east-1", false, "key-1", NULL), DRV_EEXIST);
	assert_msg(f, a->instance_id);
	assert_int_equal(create(f, "g5.xlarge", "us-east-1", true, "key-1", NULL), DRV_EEXIST);

	assert_int_equal(create(f, "g5.xlarge", "us-east-1", false, "key-2", &c), 0);
	assert_string_not_equal(a->instance_id, c->instance_id);
	assert_string_not_equal(a->internal_ip, c->internal_ip);
	assert_int_equal(f->st->instances.n, 3);

	/* Spot instances are charged the spot price. */
	assert_int_equal(create(f, "g5.xlarge", "us-east-1", true, "key-3", &c), 0);
	assert_true(c->price_per_hour == sim_catalog_find_type(f->cat, "g5.xlarge")->spot_price);
}

/* The first pool of `type` that is not one of the no-quota pools. */
static const char *quota_region(struct fixture *f, const char *type)
{
	const struct sim_type *t = sim_catalog_find_type(f->cat, type);
	for (size_t i = 0; i < t->n_regions; i++) {
		const char *r = f->cat->regions[t->regions[i]];
		if (!sim_type_no_quota(f->cat, t, t->regions[i]))
			return r;
	}
	fail_msg("every pool of %s is out of quota", type);
	return NULL;
}

static int availability_of(struct fixture *f, const char *type, const char *region)
{
	drv_get_offers_response *resp = sim_new(&f->t.a, get_offers_response);
	assert_int_equal(sim_offers_get(f->cat, f->st, &f->cfg, NULL, &f->t.a, resp, &f->e), 0);
	for (size_t i = 0; i < resp->n_offers; i++)
		if (strcmp(resp->offers[i]->instance_type, type) == 0 &&
		    strcmp(resp->offers[i]->region, region) == 0)
			return resp->offers[i]->availability;
	fail_msg("no offer for %s in %s", type, region);
	return -1;
}

static void test_capacity(void **state)
{
	struct fixture *f = *state;
	const char *type = "p5.48xlarge";
	const char *region = quota_region(f, type);
	f->cfg.capacity = 2;
	drv_provisioning_data *a, *b;
	assert_int_equal(availability_of(f, type, region),
	                 DROVER__COMPUTE__V1__AVAILABILITY__AVAILABILITY_AVAILABLE);
	assert_int_equal(create(f, type, region, false, "c1", &a), 0);
	assert_int_equal(create(f, type, region, true, "c2", &b), 0); /* spot and on-demand share the pool */
	assert_int_equal(availability_of(f, type, region),
	                 DROVER__COMPUTE__V1__AVAILABILITY__AVAILABILITY_NOT_AVAILABLE);
	assert_int_equal(create(f, type, region, false, "c3", NULL), DRV_ENOCAPACITY);
	char want[128];
	snprintf(want, sizeof(want), "no capacity for %s in %s", type, region);
	assert_string_equal(f->e.msg, want);
	/* A repeat of a key that already has its machine still answers while the pool is full. */
	assert_int_equal(create(f, type, region, false, "c1", NULL), 0);

	/* Terminating frees the pool. */
	assert_int_equal(sim_instance_terminate(f->st, a->instance_id, &f->e), 0);
	assert_int_equal(availability_of(f, type, region),
	                 DROVER__COMPUTE__V1__AVAILABILITY__AVAILABILITY_AVAILABLE);
	assert_int_equal(create(f, type, region, false, "c3", NULL), 0);

	/* Capacity 0 refuses everything. */
	f->cfg.capacity = 0;
	assert_int_equal(create(f, "g6.xlarge", quota_region(f, "g6.xlarge"), false, "c4", NULL),
	                 DRV_ENOCAPACITY);
}

static int create_reserved(struct fixture *f, const char *type, const char *region, const char *key,
                           const char *reservation)
{
	drv_create_instance_request *req = make_create(&f->t, type, region, false, key);
	req->instance->reservation = (char *)reservation;
	drv_provisioning_data *d = NULL;
	return sim_instance_create(f->cat, f->st, &f->cfg, req, &f->t.a, &d, NULL, &f->e);
}

/* A capacity reservation is a pool of its own: launches into it work while the shared pool is full. */
static void test_reservation(void **state)
{
	struct fixture *f = *state;
	const char *type = "g6e.xlarge";
	const char *region = quota_region(f, type);
	f->cfg.capacity = 2;
	assert_int_equal(create_reserved(f, type, region, "r0", ""), 0);
	assert_int_equal(create_reserved(f, type, region, "r1", "cr-a"), 0);
	assert_int_equal(create_reserved(f, type, region, "r2", "cr-a"), 0);
	assert_int_equal(create_reserved(f, type, region, "r3", "cr-a"), DRV_ENOCAPACITY);
	assert_msg(f, "reservation cr-a is full");
	/* Reserved machines do not use the shared pool the offers describe. */
	assert_int_equal(availability_of(f, type, region),
	                 DROVER__COMPUTE__V1__AVAILABILITY__AVAILABILITY_AVAILABLE);
	assert_int_equal(create_reserved(f, type, region, "r4", ""), 0);
	assert_int_equal(availability_of(f, type, region),
	                 DROVER__COMPUTE__V1__AVAILABILITY__AVAILABILITY_NOT_AVAILABLE);
	assert_int_equal(create_reserved(f, type, region, "r5", ""), DRV_ENOCAPACITY);
	assert_int_equal(create_reserved(f, type, region, "r5", "cr-b"), 0);
	/* A key used with one reservation cannot be reused with another. */
	assert_int_equal(create_reserved(f, type, region, "r5", "cr-c"), DRV_EEXIST);
}

static void test_no_quota(void **state)
{
	struct fixture *f = *state;
	for (size_t i = 0; i < f->cat->n_offers; i++) {
		const struct sim_offer *o = &f->cat->offers[i];
		if (!o->no_quota)
			continue;
		assert_int_equal(
		    create(f, o->offer.instance_type, o->offer.region, o->resources.spot, "nq", NULL),
		    DRV_ENOCAPACITY);
		assert_msg(f, "no quota");
		return;
	}
	fail_msg("no no-quota pool in the catalog");
}

static void test_provisioning_delay(void **state)
{
	struct fixture *f = *state;
	f->cfg.provisioning_delay_ms = 150;
	drv_provisioning_data *d;
	assert_int_equal(create(f, "c7g.large", "us-east-1", false, "slow", &d), 0);
	assert_int_equal(d->state, DROVER__COMPUTE__V1__INSTANCE_STATE__INSTANCE_STATE_PROVISIONING);
	assert_string_equal(d->hostname, "");
	assert_string_equal(d->internal_ip, "");
	char *id = strdup(d->instance_id);
	assert_int_equal(sim_instance_get(f->st, id, &f->t.a, &d, &f->e), 0);
	assert_int_equal(d->state, DROVER__COMPUTE__V1__INSTANCE_STATE__INSTANCE_STATE_PROVISIONING);
	struct timespec ts = {0, 200 * 1000000L};
	nanosleep(&ts, NULL);
	assert_int_equal(sim_instance_get(f->st, id, &f->t.a, &d, &f->e), 0);
	assert_int_equal(d->state, DROVER__COMPUTE__V1__INSTANCE_STATE__INSTANCE_STATE_RUNNING);
	assert_true(strncmp(d->internal_ip, "10.", 3) == 0);
	assert_non_null(strstr(d->hostname, "us-east-1"));
	free(id);

	/* A delay near INT64_MAX once overflowed created_ms + delay: the machine was RUNNING at once. */
	f->cfg.provisioning_delay_ms = INT64_MAX;
	assert_int_equal(create(f, "c7g.large", "us-east-1", false, "forever", &d), 0);
	assert_int_equal(d->state, DROVER__COMPUTE__V1__INSTANCE_STATE__INSTANCE_STATE_PROVISIONING);
	assert_string_equal(d->internal_ip, "");
}

static void test_terminate_and_get(void **state)
{
	struct fixture *f = *state;
	drv_provisioning_data *d;
	assert_int_equal(sim_instance_terminate(f->st, "i-doesnotexist", &f->e), 0);
	assert_int_equal(sim_instance_terminate(f->st, "", &f->e), DRV_EINVAL);
	assert_int_equal(sim_instance_get(f->st, "i-doesnotexist", &f->t.a, &d, &f->e), DRV_ENOTFOUND);
	assert_msg(f, "i-doesnotexist");
	assert_int_equal(sim_instance_get(f->st, "", &f->t.a, &d, &f->e), DRV_EINVAL);

	assert_int_equal(create(f, "m7i.large", "eu-west-1", false, "t1", &d), 0);
	char *id = strdup(d->instance_id);
	assert_int_equal(sim_instance_terminate(f->st, id, &f->e), 0);
	assert_int_equal(sim_instance_terminate(f->st, id, &f->e), 0);
	assert_int_equal(sim_instance_get(f->st, id, &f->t.a, &d, &f->e), 0);
	assert_int_equal(d->state, DROVER__COMPUTE__V1__INSTANCE_STATE__INSTANCE_STATE_TERMINATED);
	/* The key keeps naming the (terminated) machine: a late retry never makes a second one. */
	assert_int_equal(create(f, "m7i.large", "eu-west-1", false, "t1", &d), 0);
	assert_string_equal(d->instance_id, id);
	assert_int_equal(d->state, DROVER__COMPUTE__V1__INSTANCE_STATE__INSTANCE_STATE_TERMINATED);
	free(id);
}

static drv_list_instances_response *list(struct fixture *f, const char *k, const char *v, const char *k2,
                                         const char *v2)
{
	drv_list_instances_request *req = sim_new(&f->t.a, list_instances_request);
	Drover__Compute__V1__ListInstancesRequest__TagsEntry **tags =
	    sim_arena_alloc(&f->t.a, 2 * sizeof(*tags));
	const char *kv[2][2] = {{k, v}, {k2, v2}};
	for (int i = 0; i < 2; i++) {
		if (!kv[i][0])
			continue;
		tags[req->n_tags] = sim_arena_message(
		    &f->t.a, &drover__compute__v1__list_instances_request__tags_entry__descriptor);
		tags[req->n_tags]->key = (char *)kv[i][0];
		tags[req->n_tags]->value = (char *)kv[i][1];
		req->n_tags++;
	}
	req->tags = tags;
	drv_list_instances_response *resp = sim_new(&f->t.a, list_instances_response);
	assert_int_equal(sim_instance_list(f->st, req, &f->t.a, resp, &f->e), 0);
	return resp;
}

static void test_list_by_tags(void **state)
{
	struct fixture *f = *state;
	const char *keys[] = {"l1", "l2", "l3"};
	const char *servers[] = {"srv-a", "srv-a", "srv-b"};
	char *ids[3];
	for (int i = 0; i < 3; i++) {
		drv_create_instance_request *req =
		    make_create(&f->t, "c7i.large", "us-west-2", false, keys[i]);
		add_tag(&f->t, req->instance, "drover-server", servers[i]);
		add_tag(&f->t, req->instance, "drover-instance", keys[i]);
		drv_provisioning_data *d;
		assert_int_equal(sim_instance_create(f->cat, f->st, &f->cfg, req, &f->t.a, &d, NULL, &f->e),
		                 0);
		ids[i] = strdup(d->instance_id);
	}
	assert_int_equal(list(f, NULL, NULL, NULL, NULL)->n_instances, 3);
	drv_list_instances_response *r = list(f, "drover-server", "srv-a", NULL, NULL);
	assert_int_equal(r->n_instances, 2);
	for (size_t i = 0; i < r->n_instances; i++) {
		assert_int_equal(r->instances[i]->n_tags, 2);
		assert_true(strcmp(r->instances[i]->idempotency_key, "l1") == 0 ||
		            strcmp(r->instances[i]->idempotency_key, "l2") == 0);
		assert_string_equal(r->instances[i]->name, r->instances[i]->idempotency_key);
	}
	/* Every given tag must match. */
	r = list(f, "drover-server", "srv-a", "drover-instance", "l2");
	assert_int_equal(r->n_instances, 1);
	assert_string_equal(r->instances[0]->data->instance_id, ids[1]);
	assert_int_equal(list(f, "drover-server", "srv-c", NULL, NULL)->n_instances, 0);
	/* Terminated instances are not listed. */
	assert_int_equal(sim_instance_terminate(f->st, ids[0], &f->e), 0);
	r = list(f, "drover-server", "srv-a", NULL, NULL);
	assert_int_equal(r->n_instances, 1);
	assert_string_equal(r->instances[0]->data->instance_id, ids[1]);
	for (int i = 0; i < 3; i++)
		free(ids[i]);
}

static void test_synthetic_instance(void **state)
{
	struct fixture *f = *state;
	f->cfg.synthetic_offers = 200;
	const struct sim_synth *s = sim_synth_get(f->cat, 200, f->cfg.seed);
	const struct sim_offer *o = &s->offers[5];
	drv_provisioning_data *d;
	assert_int_equal(create(f, o->offer.instance_type, o->offer.region, o->resources.spot, "s1", &d), 0);
	assert_true(d->price_per_hour == o->offer.price_per_hour);
	/* Without the config that generates it, the type does not exist. */
	f->cfg.synthetic_offers = 0;
	assert_int_equal(create(f, o->offer.instance_type, o->offer.region, o->resources.spot, "s2", NULL),
	                 DRV_EINVAL);
}

static void test_placement_groups(void **state)
{
	struct fixture *f = *state;
	drv_create_placement_group_request req = DROVER__COMPUTE__V1__CREATE_PLACEMENT_GROUP_REQUEST__INIT;
	req.name = "pg-train";
	req.region = "us-east-1";
	req.strategy = DROVER__COMPUTE__V1__PLACEMENT_STRATEGY__PLACEMENT_STRATEGY_CLUSTER;
	drv_placement_group *a, *b;
	assert_int_equal(sim_group_create(f->cat, f->st, &f->cfg, &req, &f->t.a, &a, &f->e), 0);
	assert_int_equal(sim_group_create(f->cat, f->st, &f->cfg, &req, &f->t.a, &b, &f->e), 0);
	assert_string_equal(a->group_id, b->group_id);
	assert_int_equal(b->strategy, DROVER__COMPUTE__V1__PLACEMENT_STRATEGY__PLACEMENT_STRATEGY_CLUSTER);
	assert_int_equal(f->st->groups.n, 1);
	req.region = "us-west-2";
	assert_int_equal(sim_group_create(f->cat, f->st, &f->cfg, &req, &f->t.a, &b, &f->e), DRV_EEXIST);
	req.region = "nowhere";
	assert_int_equal(sim_group_create(f->cat, f->st, &f->cfg, &req, &f->t.a, &b, &f->e), DRV_EINVAL);
	req.name = "";
	assert_int_equal(sim_group_create(f->cat, f->st, &f->cfg, &req, &f->t.a, &b, &f->e), DRV_EINVAL);

	assert_int_equal(sim_group_delete(f->st, a, &f->e), 0);
	assert_int_equal(f->st->groups.n, 0);
	assert_int_equal(sim_group_delete(f->st, a, &f->e), 0);
	drv_placement_group empty = DROVER__COMPUTE__V1__PLACEMENT_GROUP__INIT;
	assert_int_equal(sim_group_delete(f->st, &empty, &f->e), DRV_EINVAL);
}

static drv_volume *make_volume(struct fixture *f, const char *key, const char *region, uint64_t size, int *rc)
{
	drv_volume_configuration conf = DROVER__COMPUTE__V1__VOLUME_CONFIGURATION__INIT;
	conf.idempotency_key = (char *)key;
	conf.name = "data";
	conf.region = (char *)region;
	conf.size_mib = size;
	drv_volume *v = NULL;
	*rc = sim_volume_create(f->cat, f->st, &f->cfg, &conf, &f->t.a, &v, &f->e);
	return v;
}

static void test_volumes(void **state)
{
	struct fixture *f = *state;
	int rc;
	drv_volume *v1 = make_volume(f, "v1", "us-east-1", 10240, &rc);
	assert_int_equal(rc, 0);
	assert_string_equal(v1->zone, "us-east-1a");
	assert_string_equal(v1->attached_instance_id, "");
	assert_string_equal(make_volume(f, "v1", "us-east-1", 10240, &rc)->volume_id, v1->volume_id);
	make_volume(f, "v1", "us-east-1", 20480, &rc);
	assert_int_equal(rc, DRV_EEXIST);
	make_volume(f, "", "us-east-1", 1, &rc);
	assert_int_equal(rc, DRV_EINVAL);
	make_volume(f, "v0", "us-east-1", 0, &rc);
	assert_int_equal(rc, DRV_EINVAL);
	drv_volume *v2 = make_volume(f, "v2", "us-east-1", 1024, &rc);
	assert_int_equal(rc, 0);
	drv_volume *v3 = make_volume(f, "v3", "eu-west-1", 1024, &rc);
	assert_int_equal(rc, 0);

	drv_provisioning_data *i1, *i2;
	assert_int_equal(create(f, "g5.xlarge", "us-east-1", false, "vi1", &i1), 0);
	assert_int_equal(create(f, "g5.2xlarge", "us-east-1", false, "vi2", &i2), 0);

	char *dev;
	assert_int_equal(sim_volume_attach(f->st, v1->volume_id, i1->instance_id, &f->t.a, &dev, &f->e), 0);
	assert_string_equal(dev, "/dev/sdf");
	assert_int_equal(sim_volume_attach(f->st, v1->volume_id, i1->instance_id, &f->t.a, &dev, &f->e), 0);
	assert_string_equal(dev, "/dev/sdf");
	assert_int_equal(sim_volume_attach(f->st, v2->volume_id, i1->instance_id, &f->t.a, &dev, &f->e), 0);
	assert_string_equal(dev, "/dev/sdg");
	/* Attached elsewhere, unknown instance, unknown volume, other region. */
	assert_int_equal(sim_volume_attach(f->st, v1->volume_id, i2->instance_id, &f->t.a, &dev, &f->e),
	                 DRV_EPRECONDITION);
	assert_int_equal(sim_volume_attach(f->st, v1->volume_id, "i-nope", &f->t.a, &dev, &f->e),
	                 DRV_ENOTFOUND);
	assert_msg(f, "i-nope");
	assert_int_equal(sim_volume_attach(f->st, "vol-nope", i1->instance_id, &f->t.a, &dev, &f->e),
	                 DRV_ENOTFOUND);
	assert_msg(f, "vol-nope");
	assert_int_equal(sim_volume_attach(f->st, v3->volume_id, i1->instance_id, &f->t.a, &dev, &f->e),
	                 DRV_EPRECONDITION);

	drv_volume *r;
	assert_int_equal(sim_volume_register(f->st, v1->volume_id, &f->t.a, &r, &f->e), 0);
	assert_string_equal(r->attached_instance_id, i1->instance_id);
	assert_int_equal(r->size_mib, 10240);
	assert_int_equal(sim_volume_register(f->st, "vol-nope", &f->t.a, &r, &f->e), DRV_ENOTFOUND);
	assert_int_equal(sim_volume_register(f->st, "", &f->t.a, &r, &f->e), DRV_EINVAL);

	/* Delete while attached is refused; detach is idempotent; delete too. */
	assert_int_equal(sim_volume_delete(f->st, v1->volume_id, &f->e), DRV_EPRECONDITION);
	assert_msg(f, i1->instance_id);
	assert_int_equal(sim_volume_detach(f->st, v1->volume_id, i2->instance_id, &f->e), 0);
	assert_int_equal(sim_volume_delete(f->st, v1->volume_id, &f->e), DRV_EPRECONDITION);
	assert_int_equal(sim_volume_detach(f->st, v1->volume_id, i1->instance_id, &f->e), 0);
	assert_int_equal(sim_volume_detach(f->st, v1->volume_id, i1->instance_id, &f->e), 0);
	assert_int_equal(sim_volume_detach(f->st, "vol-nope", i1->instance_id, &f->e), DRV_ENOTFOUND);
	assert_int_equal(sim_volume_delete(f->st, v1->volume_id, &f->e), 0);
	assert_int_equal(sim_volume_delete(f->st, v1->volume_id, &f->e), 0);
	assert_int_equal(sim_volume_register(f->st, v1->volume_id, &f->t.a, &r, &f->e), DRV_ENOTFOUND);

	/* The freed device name is reused; terminating an instance detaches its volumes. */
	drv_volume *v4 = make_volume(f, "v4", "us-east-1", 1024, &rc);
	assert_int_equal(sim_volume_attach(f->st, v4->volume_id, i1->instance_id, &f->t.a, &dev, &f->e), 0);
	assert_string_equal(dev, "/dev/sdf");
	assert_int_equal(sim_instance_terminate(f->st, i1->instance_id, &f->e), 0);
	assert_int_equal(sim_volume_register(f->st, v2->volume_id, &f->t.a, &r, &f->e), 0);
	assert_string_equal(r->attached_instance_id, "");
	assert_int_equal(sim_volume_delete(f->st, v2->volume_id, &f->e), 0);
	assert_int_equal(sim_volume_attach(f->st, v4->volume_id, i1->instance_id, &f->t.a, &dev, &f->e),
	                 DRV_ENOTFOUND);
}

static void test_gateways(void **state)
{
	struct fixture *f = *state;
	drv_gateway_configuration conf = DROVER__COMPUTE__V1__GATEWAY_CONFIGURATION__INIT;
	conf.idempotency_key = "gw1";
	conf.name = "gateway";
	conf.region = "eastus";
	conf.public_ip = false;
	drv_gateway *a, *b;
	assert_int_equal(sim_gateway_create(f->cat, f->st, &f->cfg, &conf, &f->t.a, &a, &f->e), 0);
	assert_true(strncmp(a->ip_address, "10.", 3) == 0);
	assert_string_equal(a->region, "eastus");
	assert_int_equal(sim_gateway_create(f->cat, f->st, &f->cfg, &conf, &f->t.a, &b, &f->e), 0);
	assert_string_equal(a->instance_id, b->instance_id);
	conf.public_ip = true;
	assert_int_equal(sim_gateway_create(f->cat, f->st, &f->cfg, &conf, &f->t.a, &b, &f->e), DRV_EEXIST);
	conf.idempotency_key = "gw2";
	assert_int_equal(sim_gateway_create(f->cat, f->st, &f->cfg, &conf, &f->t.a, &b, &f->e), 0);
	assert_true(strncmp(b->ip_address, "203.0.113.", 10) == 0);
	conf.idempotency_key = "";
	assert_int_equal(sim_gateway_create(f->cat, f->st, &f->cfg, &conf, &f->t.a, &b, &f->e), DRV_EINVAL);

	assert_int_equal(sim_gateway_terminate(f->st, a->instance_id, &f->e), 0);
	assert_int_equal(sim_gateway_terminate(f->st, a->instance_id, &f->e), 0);
	assert_int_equal(sim_gateway_terminate(f->st, "gw-unknown", &f->e), 0);
	assert_int_equal(sim_gateway_terminate(f->st, "", &f->e), DRV_EINVAL);
}

/* A terminated instance or gateway is answered for the retention, then forgotten at a commit. */
static void test_terminated_forgotten(void **state)
{
	struct fixture *f = *state;
	drv_provisioning_data *d;
	assert_int_equal(create(f, "m7i.large", "eu-west-1", false, "old", &d), 0);
	char *old = strdup(d->instance_id);
	assert_int_equal(sim_instance_terminate(f->st, old, &f->e), 0);
	drv_gateway_configuration gc = DROVER__COMPUTE__V1__GATEWAY_CONFIGURATION__INIT;
	gc.idempotency_key = "gw-old";
	gc.name = "gw";
	gc.region = "eastus";
	drv_gateway *g;
	assert_int_equal(sim_gateway_create(f->cat, f->st, &f->cfg, &gc, &f->t.a, &g, &f->e), 0);
	assert_int_equal(sim_gateway_terminate(f->st, g->instance_id, &f->e), 0);

	/* Within the default retention (an hour) both are kept. */
	assert_int_equal(create(f, "m7i.large", "eu-west-1", false, "live", &d), 0);
	char *live = strdup(d->instance_id);
	assert_int_equal(f->st->instances.n, 2);
	assert_int_equal(f->st->gateways.n, 1);
	assert_int_equal(sim_instance_get(f->st, old, &f->t.a, &d, &f->e), 0);
	assert_int_equal(d->state, DROVER__COMPUTE__V1__INSTANCE_STATE__INSTANCE_STATE_TERMINATED);

	/* Terminated a moment more than the retention ago: the next commit forgets them. */
	int64_t ago = (int64_t)SIM_DEFAULT_TERMINATED_RETENTION_S * 1000 + 1;
	((struct sim_instance *)f->st->instances.items[0])->terminated_ms -= ago;
	((struct sim_gateway *)f->st->gateways.items[0])->terminated_ms -= ago;
	assert_int_equal(create(f, "m7i.large", "eu-west-1", false, "next", &d), 0);
	assert_int_equal(f->st->instances.n, 2); /* live and next */
	assert_int_equal(f->st->gateways.n, 0);
	assert_int_equal(sim_instance_get(f->st, old, &f->t.a, &d, &f->e), DRV_ENOTFOUND);
	/* Its key is free again: a very late retry makes a new machine. */
	assert_int_equal(create(f, "m7i.large", "eu-west-1", false, "old", &d), 0);
	assert_string_not_equal(d->instance_id, old);
	assert_int_equal(d->state, DROVER__COMPUTE__V1__INSTANCE_STATE__INSTANCE_STATE_RUNNING);

	/* Retention 0: forgotten by the terminate's own commit; live machines never are. */
	sim_state_set_retention(f->st, 0);
	assert_int_equal(sim_instance_terminate(f->st, d->instance_id, &f->e), 0);
	assert_int_equal(f->st->instances.n, 2);
	assert_int_equal(sim_instance_get(f->st, live, &f->t.a, &d, &f->e), 0);
	assert_int_equal(d->state, DROVER__COMPUTE__V1__INSTANCE_STATE__INSTANCE_STATE_RUNNING);
	free(old);
	free(live);
}

struct racer {
	struct fixture *f;
	const char *region;
	int id;
	int ok, full;
};

static void *race(void *arg)
{
	struct racer *r = arg;
	struct test_arena t;
	test_arena_init(&t);
	for (int i = 0; i < 25; i++) {
		char key[32];
		snprintf(key, sizeof(key), "race-%d-%d", r->id, i);
		drv_create_instance_request *req = make_create(&t, "p5.48xlarge", r->region, false, key);
		drv_provisioning_data *d;
		struct sim_err e;
		int rc = sim_instance_create(r->f->cat, r->f->st, &r->f->cfg, req, &t.a, &d, NULL, &e);
		r->ok += rc == 0;
		r->full += rc == DRV_ENOCAPACITY;
		/* Readers run alongside the writers. */
		drv_get_offers_response *resp = sim_new(&t.a, get_offers_response);
		sim_offers_get(r->f->cat, r->f->st, &r->f->cfg, NULL, &t.a, resp, &e);
	}
	test_arena_free(&t);
	return NULL;
}

/* Handlers run on several threads: a pool never holds more than its capacity. */
static void test_concurrent_creates(void **state)
{
	struct fixture *f = *state;
	f->cfg.capacity = 5;
	pthread_t th[8];
	struct racer r[8];
	for (int i = 0; i < 8; i++) {
		r[i] = (struct racer){.f = f, .region = "us-east-1", .id = i};
		assert_int_equal(pthread_create(&th[i], NULL, race, &r[i]), 0);
	}
	int ok = 0, full = 0;
	for (int i = 0; i < 8; i++) {
		pthread_join(th[i], NULL);
		ok += r[i].ok;
		full += r[i].full;
	}
	assert_int_equal(ok, 5);
	assert_int_equal(full, 8 * 25 - 5);
	assert_int_equal(f->st->instances.n, 5);
}

static void test_fault_draws(void **state)
{
	struct sim_config cfg;
	sim_config_init(&cfg);
	for (int i = 0; i < 100; i++)
		assert_int_equal(sim_fault_draw(&cfg), SIM_FAULT_NONE);
	cfg.error_rate = 1;
	for (int i = 0; i < 100; i++)
		assert_int_equal(sim_fault_draw(&cfg), SIM_FAULT_ERROR);
	cfg.error_rate = 0.3;
	int errors = 0;
	for (int i = 0; i < 2000; i++)
		errors += sim_fault_draw(&cfg) == SIM_FAULT_ERROR;
	assert_in_range(errors, 450, 750);
	cfg.error_rate = 0;
	cfg.crash_rate = 1;
	int before = 0, after = 0;
	for (int i = 0; i < 200; i++) {
		enum sim_fault fault = sim_fault_draw(&cfg);
		before += fault == SIM_FAULT_CRASH_BEFORE;
		after += fault == SIM_FAULT_CRASH_AFTER;
	}
	assert_int_equal(before + after, 200);
	assert_true(before > 50 && after > 50);
}

static int cancel_after;
static bool cancelled_cb(void *ctx)
{
	return --cancel_after < 0;
}

static void test_fault_latency(void **state)
{
	struct sim_config cfg;
	sim_config_init(&cfg);
	cfg.latency_ms = 60;
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	cancel_after = 1000;
	assert_int_equal(sim_fault_sleep(&cfg, cancelled_cb, NULL), 0);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	double ms = (t1.tv_sec - t0.tv_sec) * 1e3 + (t1.tv_nsec - t0.tv_nsec) / 1e6;
	assert_true(ms >= 59);
	/* A cancelled call stops waiting early. */
	cfg.latency_ms = 10000;
	cancel_after = 2;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	assert_int_equal(sim_fault_sleep(&cfg, cancelled_cb, NULL), DRV_EDEADLINE);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	ms = (t1.tv_sec - t0.tv_sec) * 1e3 + (t1.tv_nsec - t0.tv_nsec) / 1e6;
	assert_true(ms < 1000);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_create_validation, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_create_idempotent, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_capacity, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_reservation, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_no_quota, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_provisioning_delay, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_terminate_and_get, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_list_by_tags, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_synthetic_instance, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_placement_groups, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_volumes, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_gateways, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_terminated_forgotten, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_concurrent_creates, setup, teardown),
	    cmocka_unit_test(test_fault_draws),
	    cmocka_unit_test(test_fault_latency),
	};
	return cmocka_run_group_tests_name("sim_instances", tests, NULL, NULL);
}
