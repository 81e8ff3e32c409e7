/*
 * The hosting half against the real sim driver (drivers/sim): every RPC once
 * with sane results, status codes from the normative table (capacity,
 * invalid config with a field path, deadlines), graceful stop with a call in
 * flight, stdin EOF, a crash during a call, persisted state across restarts,
 * the generic and asynchronous call forms.
 */
#include <errno.h>
#include <signal.h>
#include <sys/stat.h>

#include "sdk_test.h"

#ifndef SIM_BIN
#error SIM_BIN must name the drover-driver-sim binary
#endif

#define CALL_MS 5000

static struct drv_host *spawn_sim(const char *const *args)
{
	struct drv_host *h = NULL;
	char err[1024];
	struct drv_spawn_opts o = {.path = SIM_BIN, .name = "sim", .args = args};

	int rc = drv_host_spawn(&o, &h, err, sizeof(err));
	assert_rc(rc, 0, err);
	return h;
}

static void set_config(drv_backend_config *c, const char *json)
{
	drover__compute__v1__backend_config__init(c);
	c->config_json = (char *)json;
}

/* The first offer of the catalog (owned by the returned response). */
static drv_get_offers_response *first_offers(struct drv_host *h, drv_backend_config *c)
{
	drv_get_offers_request req = DROVER__COMPUTE__V1__GET_OFFERS_REQUEST__INIT;
	drv_get_offers_response *resp = NULL;
	struct drv_status st;

	req.config = c;
	assert_rc(drv_host_get_offers(h, &req, &resp, CALL_MS, &st), 0, st.message);
	assert_non_null(resp);
	assert_true(resp->n_offers > 0);
	for (size_t i = 0; i < resp->n_offers; i++) {
		assert_true(resp->offers[i]->price_per_hour > 0);
		assert_non_null(resp->offers[i]->resources);
		assert_string_equal(resp->offers[i]->backend_type, "sim");
	}
	return resp;
}

/* An available offer (capacity tests need one that can be created). */
static drv_offer *available_offer(drv_get_offers_response *offers)
{
	for (size_t i = 0; i < offers->n_offers; i++)
		if (offers->offers[i]->availability ==
		    DROVER__COMPUTE__V1__AVAILABILITY__AVAILABILITY_AVAILABLE)
			return offers->offers[i];
	fail_msg("no available offer among %zu", offers->n_offers);
	return NULL;
}

static int create(struct drv_host *h, drv_backend_config *c, drv_offer *offer, const char *key,
                  drv_create_instance_response **resp, struct drv_status *st)
{
	drv_create_instance_request req = DROVER__COMPUTE__V1__CREATE_INSTANCE_REQUEST__INIT;
	drv_instance_configuration ic = DROVER__COMPUTE__V1__INSTANCE_CONFIGURATION__INIT;
	drv_tag_entry tag = DROVER__COMPUTE__V1__INSTANCE_CONFIGURATION__TAGS_ENTRY__INIT;
	drv_tag_entry *tags[] = {&tag};

	tag.key = "drover-server";
	tag.value = "sdk-test";
	ic.name = (char *)key;
	ic.project = "main";
	ic.idempotency_key = (char *)key;
	ic.n_tags = 1;
	ic.tags = tags;
	req.config = c;
	req.offer = offer;
	req.instance = &ic;
	return drv_host_create_instance(h, &req, resp, CALL_MS, st);
}

static drv_list_instances_response *list(struct drv_host *h, drv_backend_config *c)
{
	drv_list_instances_request req = DROVER__COMPUTE__V1__LIST_INSTANCES_REQUEST__INIT;
	drv_list_instances_response *resp = NULL;
	struct drv_status st;

	req.config = c;
	assert_rc(drv_host_list_instances(h, &req, &resp, CALL_MS, &st), 0, st.message);
	return resp;
}

static bool listed(drv_list_instances_response *r, const char *id)
{
	for (size_t i = 0; i < r->n_instances; i++)
		if (strcmp(r->instances[i]->data->instance_id, id) == 0)
			return true;
	return false;
}

static int terminate(struct drv_host *h, drv_backend_config *c, const char *id, struct drv_status *st)
{
	drv_terminate_instance_request req = DROVER__COMPUTE__V1__TERMINATE_INSTANCE_REQUEST__INIT;
	drv_terminate_instance_response *resp = NULL;

	req.config = c;
	req.instance_id = (char *)id;
	int rc = drv_host_terminate_instance(h, &req, &resp, CALL_MS, st);
	if (resp)
		drv_response_free(&resp->base);
	return rc;
}

#define FREE(m)                                                                                              \
	do {                                                                                                 \
		if (m)                                                                                       \
			drv_response_free(&(m)->base);                                                       \
		(m) = NULL;                                                                                  \
	} while (0)

static void test_identity(void **state)
{
	struct drv_host *h = spawn_sim(NULL);
	struct drv_status st;
	drv_get_info_request ireq = DROVER__COMPUTE__V1__GET_INFO_REQUEST__INIT;
	drv_get_info_response *info = NULL;
	drv_get_features_request freq = DROVER__COMPUTE__V1__GET_FEATURES_REQUEST__INIT;
	drv_get_features_response *feat = NULL;
	drv_validate_config_request vreq = DROVER__COMPUTE__V1__VALIDATE_CONFIG_REQUEST__INIT;
	drv_validate_config_response *v = NULL;
	drv_backend_config c;

	assert_rc(drv_host_health(h, CALL_MS, &st), 0, st.message);
	assert_rc(drv_host_get_info(h, &ireq, &info, CALL_MS, &st), 0, st.message);
	assert_string_equal(info->type, "sim");
	assert_int_equal(info->protocol_version, DRV_PROTOCOL_VERSION);
	assert_contains(info->config_schema_json, "capacity");
	FREE(info);

	assert_rc(drv_host_get_features(h, &freq, &feat, CALL_MS, &st), 0, st.message);
	drv_features got = 0;
	for (size_t i = 0; i < feat->n_features; i++)
		got |= DRV_FEATURE_BIT(feat->features[i]);
	drv_features want = DRV_FEATURE_BIT(DRV_FEATURE_OFFERS) |
	                    DRV_FEATURE_BIT(DRV_FEATURE_CREATE_INSTANCE) |
	                    DRV_FEATURE_BIT(DRV_FEATURE_PLACEMENT_GROUPS) |
	                    DRV_FEATURE_BIT(DRV_FEATURE_VOLUMES) | DRV_FEATURE_BIT(DRV_FEATURE_GATEWAYS);
	assert_true((got & want) == want);
	FREE(feat);

	set_config(&c, "{\"capacity\": 2, \"regions\": []}");
	vreq.config = &c;
	assert_rc(drv_host_validate_config(h, &vreq, &v, CALL_MS, &st), 0, st.message);
	FREE(v);

	/* A wrong type is a diagnostic with the field's path, not just "invalid". */
	set_config(&c, "{\"capacity\": \"lots\"}");
	assert_rc(drv_host_validate_config(h, &vreq, &v, CALL_MS, &st), 0, st.message);
	assert_false(v->valid);
	assert_true(v->n_diagnostics >= 1);
	bool found = false;
	for (size_t i = 0; i < v->n_diagnostics; i++)
		found |= strcmp(v->diagnostics[i]->field_path, "/capacity") == 0 &&
		         v->diagnostics[i]->severity == DROVER__COMPUTE__V1__SEVERITY__SEVERITY_ERROR;
	assert_true(found);
	FREE(v);

	/* A provider call with that config is INVALID_ARGUMENT naming the field. */
	drv_get_offers_request oreq = DROVER__COMPUTE__V1__GET_OFFERS_REQUEST__INIT;
	drv_get_offers_response *offers = (void *)1;
	oreq.config = &c;
	assert_rc(drv_host_get_offers(h, &oreq, &offers, CALL_MS, &st), DRV_EINVAL, st.message);
	assert_null(offers);
	assert_int_equal(st.code, DRV_EINVAL);
	assert_contains(st.message, "/capacity");
	drv_host_free(h);
}

static void test_instances(void **state)
{
	struct drv_host *h = spawn_sim(NULL);
	struct drv_status st;
	drv_backend_config c;
	drv_create_instance_response *a = NULL, *b = NULL;
	char id[256];

	set_config(&c, "{}");
	drv_get_offers_response *offers = first_offers(h, &c);
	drv_offer *offer = available_offer(offers);

	assert_rc(create(h, &c, offer, "sdk-inst-1", &a, &st), 0, st.message);
	assert_non_null(a->data);
	assert_true(a->data->instance_id[0] != '\0');
	assert_string_equal(a->data->instance_type, offer->instance_type);
	assert_string_equal(a->data->region, offer->region);
	snprintf(id, sizeof(id), "%s", a->data->instance_id);

	/* Same key, same machine. */
	assert_rc(create(h, &c, offer, "sdk-inst-1", &b, &st), 0, st.message);
	assert_string_equal(b->data->instance_id, id);
	FREE(a);
	FREE(b);

	drv_get_instance_request greq = DROVER__COMPUTE__V1__GET_INSTANCE_REQUEST__INIT;
	drv_get_instance_response *g = NULL;
	greq.config = &c;
	greq.instance_id = id;
	assert_rc(drv_host_get_instance(h, &greq, &g, CALL_MS, &st), 0, st.message);
	assert_string_equal(g->data->instance_id, id);
	assert_true(g->data->state == DROVER__COMPUTE__V1__INSTANCE_STATE__INSTANCE_STATE_PROVISIONING ||
	            g->data->state == DROVER__COMPUTE__V1__INSTANCE_STATE__INSTANCE_STATE_RUNNING);
	FREE(g);

	drv_list_instances_response *l = list(h, &c);
	assert_true(listed(l, id));
	FREE(l);

	/* Terminate is idempotent: twice OK, and an unknown id is OK too. */
	assert_rc(terminate(h, &c, id, &st), 0, st.message);
	assert_rc(terminate(h, &c, id, &st), 0, st.message);
	assert_rc(terminate(h, &c, "i-never-existed", &st), 0, st.message);
	l = list(h, &c);
	assert_false(listed(l, id));
	FREE(l);

	/* Unknown instance: NOT_FOUND from the table, not a crash or OK. */
	greq.instance_id = "i-never-existed";
	assert_rc(drv_host_get_instance(h, &greq, &g, CALL_MS, &st), DRV_ENOTFOUND, st.message);
	FREE(offers);
	drv_host_free(h);
}

static void test_placement_volumes_gateways(void **state)
{
	struct drv_host *h = spawn_sim(NULL);
	struct drv_status st;
	drv_backend_config c;
	char region[128], vol[256], inst[256];

	set_config(&c, "{}");
	drv_get_offers_response *offers = first_offers(h, &c);
	drv_offer *offer = available_offer(offers);
	snprintf(region, sizeof(region), "%s", offer->region);

	/* placement group */
	drv_create_placement_group_request pg = DROVER__COMPUTE__V1__CREATE_PLACEMENT_GROUP_REQUEST__INIT;
	drv_create_placement_group_response *pgr = NULL, *pgr2 = NULL;
	pg.config = &c;
	pg.name = "sdk-pg";
	pg.region = region;
	pg.project = "main";
	pg.strategy = DROVER__COMPUTE__V1__PLACEMENT_STRATEGY__PLACEMENT_STRATEGY_CLUSTER;
	assert_rc(drv_host_create_placement_group(h, &pg, &pgr, CALL_MS, &st), 0, st.message);
	assert_true(pgr->group->group_id[0] != '\0');
	assert_rc(drv_host_create_placement_group(h, &pg, &pgr2, CALL_MS, &st), 0, st.message);
	assert_string_equal(pgr2->group->group_id, pgr->group->group_id);
	drv_delete_placement_group_request dpg = DROVER__COMPUTE__V1__DELETE_PLACEMENT_GROUP_REQUEST__INIT;
	drv_delete_placement_group_response *dpgr = NULL;
	dpg.config = &c;
	dpg.group = pgr->group;
	assert_rc(drv_host_delete_placement_group(h, &dpg, &dpgr, CALL_MS, &st), 0, st.message);
	FREE(dpgr);
	assert_rc(drv_host_delete_placement_group(h, &dpg, &dpgr, CALL_MS, &st), 0, st.message);
	FREE(dpgr);
	FREE(pgr);
	FREE(pgr2);

	/* volumes: create, register, attach, detach, delete */
	drv_create_volume_request cv = DROVER__COMPUTE__V1__CREATE_VOLUME_REQUEST__INIT;
	drv_volume_configuration vc = DROVER__COMPUTE__V1__VOLUME_CONFIGURATION__INIT;
	drv_create_volume_response *cvr = NULL;
	vc.name = "sdk-vol";
	vc.project = "main";
	vc.region = region;
	vc.size_mib = 10240;
	vc.idempotency_key = "sdk-vol-1";
	cv.config = &c;
	cv.volume = &vc;
	assert_rc(drv_host_create_volume(h, &cv, &cvr, CALL_MS, &st), 0, st.message);
	assert_true(cvr->volume->volume_id[0] != '\0');
	assert_int_equal(cvr->volume->size_mib, 10240);
	snprintf(vol, sizeof(vol), "%s", cvr->volume->volume_id);
	FREE(cvr);

	drv_register_volume_request rv = DROVER__COMPUTE__V1__REGISTER_VOLUME_REQUEST__INIT;
	drv_register_volume_response *rvr = NULL;
	rv.config = &c;
	rv.volume_id = vol;
	rv.region = region;
	assert_rc(drv_host_register_volume(h, &rv, &rvr, CALL_MS, &st), 0, st.message);
	assert_string_equal(rvr->volume->volume_id, vol);
	FREE(rvr);
	rv.volume_id = "vol-never-existed";
	assert_rc(drv_host_register_volume(h, &rv, &rvr, CALL_MS, &st), DRV_ENOTFOUND, st.message);

	drv_create_instance_response *ci = NULL;
	assert_rc(create(h, &c, offer, "sdk-inst-vol", &ci, &st), 0, st.message);
	snprintf(inst, sizeof(inst), "%s", ci->data->instance_id);
	FREE(ci);

	drv_attach_volume_request av = DROVER__COMPUTE__V1__ATTACH_VOLUME_REQUEST__INIT;
	drv_attach_volume_response *avr = NULL;
	av.config = &c;
	av.volume_id = vol;
	av.instance_id = inst;
	assert_rc(drv_host_attach_volume(h, &av, &avr, CALL_MS, &st), 0, st.message);
	assert_true(avr->device_name[0] != '\0');
	FREE(avr);
	assert_rc(drv_host_attach_volume(h, &av, &avr, CALL_MS, &st), 0, st.message);
	FREE(avr);

	drv_delete_volume_request dv = DROVER__COMPUTE__V1__DELETE_VOLUME_REQUEST__INIT;
	drv_delete_volume_response *dvr = NULL;
	dv.config = &c;
	dv.volume_id = vol;
	dv.region = region;
	/* An attached volume cannot be deleted: the state must be fixed first. */
	assert_rc(drv_host_delete_volume(h, &dv, &dvr, CALL_MS, &st), DRV_EPRECONDITION, st.message);

	drv_detach_volume_request dt = DROVER__COMPUTE__V1__DETACH_VOLUME_REQUEST__INIT;
	drv_detach_volume_response *dtr = NULL;
	dt.config = &c;
	dt.volume_id = vol;
	dt.instance_id = inst;
	assert_rc(drv_host_detach_volume(h, &dt, &dtr, CALL_MS, &st), 0, st.message);
	FREE(dtr);
	assert_rc(drv_host_detach_volume(h, &dt, &dtr, CALL_MS, &st), 0, st.message);
	FREE(dtr);
	assert_rc(drv_host_delete_volume(h, &dv, &dvr, CALL_MS, &st), 0, st.message);
	FREE(dvr);
	assert_rc(drv_host_delete_volume(h, &dv, &dvr, CALL_MS, &st), 0, st.message);
	FREE(dvr);
	assert_rc(terminate(h, &c, inst, &st), 0, st.message);

	/* gateway */
	drv_create_gateway_request cg = DROVER__COMPUTE__V1__CREATE_GATEWAY_REQUEST__INIT;
	drv_gateway_configuration gc = DROVER__COMPUTE__V1__GATEWAY_CONFIGURATION__INIT;
	drv_create_gateway_response *cgr = NULL, *cgr2 = NULL;
	gc.name = "sdk-gw";
	gc.project = "main";
	gc.region = region;
	gc.public_ip = true;
	gc.idempotency_key = "sdk-gw-1";
	cg.config = &c;
	cg.gateway = &gc;
	assert_rc(drv_host_create_gateway(h, &cg, &cgr, CALL_MS, &st), 0, st.message);
	assert_true(cgr->gateway->instance_id[0] != '\0');
	assert_true(cgr->gateway->ip_address[0] != '\0');
	assert_rc(drv_host_create_gateway(h, &cg, &cgr2, CALL_MS, &st), 0, st.message);
	assert_string_equal(cgr2->gateway->instance_id, cgr->gateway->instance_id);
	drv_terminate_gateway_request tg = DROVER__COMPUTE__V1__TERMINATE_GATEWAY_REQUEST__INIT;
	drv_terminate_gateway_response *tgr = NULL;
	tg.config = &c;
	tg.instance_id = cgr->gateway->instance_id;
	tg.region = region;
	assert_rc(drv_host_terminate_gateway(h, &tg, &tgr, CALL_MS, &st), 0, st.message);
	FREE(tgr);
	assert_rc(drv_host_terminate_gateway(h, &tg, &tgr, CALL_MS, &st), 0, st.message);
	FREE(tgr);
	FREE(cgr);
	FREE(cgr2);
	FREE(offers);
	drv_host_free(h);
}

static void test_capacity_exhausted(void **state)
{
	struct drv_host *h = spawn_sim(NULL);
	struct drv_status st;
	drv_backend_config c;
	drv_create_instance_response *a = NULL, *b = NULL;

	set_config(&c, "{\"capacity\": 1}");
	drv_get_offers_response *offers = first_offers(h, &c);
	drv_offer *offer = available_offer(offers);
	assert_rc(create(h, &c, offer, "cap-1", &a, &st), 0, st.message);
	assert_rc(create(h, &c, offer, "cap-2", &b, &st), DRV_ENOCAPACITY, st.message);
	assert_null(b);
	assert_int_equal(st.code, DRV_ENOCAPACITY);
	/* Freeing the slot makes room again. */
	assert_rc(terminate(h, &c, a->data->instance_id, &st), 0, st.message);
	assert_rc(create(h, &c, offer, "cap-2", &b, &st), 0, st.message);
	assert_rc(terminate(h, &c, b->data->instance_id, &st), 0, st.message);
	FREE(a);
	FREE(b);
	FREE(offers);
	drv_host_free(h);
}

static void test_deadline_then_normal_call(void **state)
{
	struct drv_host *h = spawn_sim(NULL);
	struct drv_status st;
	drv_backend_config slow, fast;
	drv_get_offers_request req = DROVER__COMPUTE__V1__GET_OFFERS_REQUEST__INIT;
	drv_get_offers_response *resp = NULL;

	set_config(&slow, "{\"latency_ms\": 500}");
	set_config(&fast, "{}");
	req.config = &slow;
	double t0 = now_ms();
	assert_rc(drv_host_get_offers(h, &req, &resp, 50, &st), DRV_EDEADLINE, st.message);
	double took = now_ms() - t0;
	assert_true(took >= 45);
	assert_true(took < 400);
	assert_null(resp);
	/* The driver is fine afterwards. */
	req.config = &fast;
	assert_rc(drv_host_get_offers(h, &req, &resp, CALL_MS, &st), 0, st.message);
	FREE(resp);
	assert_rc(drv_host_health(h, CALL_MS, &st), 0, st.message);
	drv_host_free(h);
}

struct async_result {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	bool done;
	int code;
	char message[256];
	ProtobufCMessage *resp;
};

static void async_done(void *ud, int code, const char *message, ProtobufCMessage *resp)
{
	struct async_result *r = ud;

	pthread_mutex_lock(&r->mu);
	r->done = true;
	r->code = code;
	snprintf(r->message, sizeof(r->message), "%s", message ? message : "");
	r->resp = resp;
	pthread_cond_broadcast(&r->cv);
	pthread_mutex_unlock(&r->mu);
}

static void async_wait(struct async_result *r, int timeout_ms)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += timeout_ms / 1000 + 1;
	pthread_mutex_lock(&r->mu);
	while (!r->done)
		if (pthread_cond_timedwait(&r->cv, &r->mu, &ts) != 0)
			break;
	pthread_mutex_unlock(&r->mu);
	assert_true(r->done);
}

static void test_sigterm_with_call_in_flight(void **state)
{
	struct drv_host *h = spawn_sim(NULL);
	struct async_result r = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};
	drv_backend_config c;
	drv_get_offers_request req = DROVER__COMPUTE__V1__GET_OFFERS_REQUEST__INIT;
	int status = -1;

	set_config(&c, "{\"latency_ms\": 300}");
	req.config = &c;
	assert_rc(drv_host_call_async(h, "GetOffers", &req.base, CALL_MS, async_done, &r), 0, "async call");
	usleep(100 * 1000); /* the call is now inside the driver's provider latency */
	double t0 = now_ms();
	assert_rc(drv_host_stop(h, 3000, &status), 0, "driver did not exit within the grace period");
	assert_true(now_ms() - t0 < 3000);
	assert_int_equal(status, 0);
	async_wait(&r, CALL_MS);
	if (r.code != 0)
		fail_msg("in-flight call failed on SIGTERM: %s: %s", drv_error_name(r.code), r.message);
	assert_non_null(r.resp);
	assert_true(((drv_get_offers_response *)r.resp)->n_offers > 0);
	drv_response_free(r.resp);
	drv_host_free(h);
}

static void test_stdin_eof_exits(void **state)
{
	struct drv_host *h = spawn_sim(NULL);
	int status = -1;

	drv_host_close_stdin(h);
	assert_rc(drv_host_wait(h, 3000, &status), 0, "sim did not exit on stdin EOF");
	assert_int_equal(status, 0);
	assert_false(drv_host_alive(h));
	drv_host_free(h);
}

static void test_crash_during_call(void **state)
{
	struct drv_host *h = spawn_sim(NULL);
	struct drv_status st;
	drv_backend_config c;
	drv_get_offers_request req = DROVER__COMPUTE__V1__GET_OFFERS_REQUEST__INIT;
	drv_get_offers_response *resp = NULL;

	set_config(&c, "{\"crash_rate\": 1}");
	req.config = &c;
	int rc = drv_host_get_offers(h, &req, &resp, CALL_MS, &st);
	assert_rc(rc, DRV_EUNAVAILABLE, st.message);
	/* The message says the driver died, not just that a socket closed. */
	assert_contains(st.message, "driver sim was killed by signal 6");
	assert_contains(st.message, "during GetOffers");
	assert_false(drv_host_alive(h));
	double t0 = now_ms();
	set_config(&c, "{}");
	assert_rc(drv_host_get_offers(h, &req, &resp, CALL_MS, &st), DRV_EUNAVAILABLE, st.message);
	assert_true(now_ms() - t0 < 50);
	assert_contains(st.message, "driver sim");
	/* The asynchronous form refuses at once too, and then never runs its callback. */
	struct async_result r = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};
	assert_rc(drv_host_call_async(h, "GetOffers", &req.base, CALL_MS, async_done, &r), DRV_EUNAVAILABLE,
	          "async call on a dead driver");
	usleep(20 * 1000);
	assert_false(r.done);
	drv_host_free(h);
}

static int make_statedir(void **state)
{
	char *dir = malloc(256);

	make_tmpdir(dir, 256, "simstate");
	*state = dir;
	return 0;
}

static int remove_statedir(void **state)
{
	rm_rf(*state);
	free(*state);
	return 0;
}

static void test_state_survives_restart(void **state)
{
	const char *dir = *state;
	char json[512], id[256];
	struct drv_status st;
	drv_backend_config c;
	drv_create_instance_response *a = NULL;
	int status = -1;

	snprintf(json, sizeof(json), "{\"state_file\": \"%s/sim.json\"}", dir);
	set_config(&c, json);

	struct drv_host *h = spawn_sim(NULL);
	drv_get_offers_response *offers = first_offers(h, &c);
	drv_offer *offer = available_offer(offers);
	assert_rc(create(h, &c, offer, "persist-1", &a, &st), 0, st.message);
	snprintf(id, sizeof(id), "%s", a->data->instance_id);
	FREE(a);
	assert_rc(drv_host_stop(h, 3000, &status), 0, "stop");
	assert_int_equal(status, 0);
	drv_host_free(h);

	h = spawn_sim(NULL);
	drv_list_instances_response *l = list(h, &c);
	assert_true(listed(l, id));
	FREE(l);
	assert_rc(create(h, &c, offer, "persist-1", &a, &st), 0, st.message);
	assert_string_equal(a->data->instance_id, id);
	FREE(a);
	assert_rc(terminate(h, &c, id, &st), 0, st.message);
	FREE(offers);
	drv_host_free(h);
}

static void test_generic_call_checks(void **state)
{
	struct drv_host *h = spawn_sim(NULL);
	struct drv_status st;
	drv_get_info_request info = DROVER__COMPUTE__V1__GET_INFO_REQUEST__INIT;
	ProtobufCMessage *resp = NULL;

	assert_rc(drv_host_call(h, "GetInfo", &info.base, &resp, CALL_MS, &st), 0, st.message);
	assert_ptr_equal(resp->descriptor, &drover__compute__v1__get_info_response__descriptor);
	drv_response_free(resp);
	assert_rc(drv_host_call(h, "NoSuchMethod", &info.base, &resp, CALL_MS, &st), DRV_EINVAL, st.message);
	assert_contains(st.message, "NoSuchMethod");
	/* A request of the wrong type is refused before it reaches the wire. */
	assert_rc(drv_host_call(h, "GetOffers", &info.base, &resp, CALL_MS, &st), DRV_EINVAL, st.message);
	assert_contains(st.message, "GetOffersRequest");
	assert_null(resp);
	drv_host_free(h);
}

/* Many concurrent calls from several threads on one host. */
struct hammer {
	struct drv_host *h;
	int failures;
};

static void *hammer_main(void *arg)
{
	struct hammer *hm = arg;
	drv_backend_config c;
	drv_get_offers_request req = DROVER__COMPUTE__V1__GET_OFFERS_REQUEST__INIT;

	set_config(&c, "{}");
	req.config = &c;
	for (int i = 0; i < 50; i++) {
		drv_get_offers_response *resp = NULL;
		if (drv_host_get_offers(hm->h, &req, &resp, CALL_MS, NULL) != 0)
			hm->failures++;
		FREE(resp);
	}
	return NULL;
}

static void test_concurrent_calls(void **state)
{
	struct drv_host *h = spawn_sim(NULL);
	struct hammer hm[4];
	pthread_t t[4];

	for (int i = 0; i < 4; i++) {
		hm[i] = (struct hammer){.h = h};
		pthread_create(&t[i], NULL, hammer_main, &hm[i]);
	}
	for (int i = 0; i < 4; i++) {
		pthread_join(t[i], NULL);
		assert_int_equal(hm[i].failures, 0);
	}
	drv_host_free(h);
}

/* drv_host_connect also takes a unix socket address: here the socket of a spawned sim. */
static void test_connect_unix(void **state)
{
	struct drv_host *h = spawn_sim(NULL), *r = NULL;
	struct drv_status st;
	char err[1024];

	struct drv_connect_opts o = {.address = drv_host_target(h),
	                             .name = "sim-by-socket",
	                             .insecure = true,
	                             .connect_timeout_ms = 3000};
	assert_rc(drv_host_connect(&o, &r, err, sizeof(err)), 0, err);
	assert_rc(drv_host_health(r, CALL_MS, &st), 0, st.message);
	drv_get_info_request req = DROVER__COMPUTE__V1__GET_INFO_REQUEST__INIT;
	drv_get_info_response *info = NULL;
	assert_rc(drv_host_get_info(r, &req, &info, CALL_MS, &st), 0, st.message);
	assert_string_equal(info->type, "sim");
	FREE(info);
	/* The driver goes away: the remote host notices on its next call. */
	assert_rc(drv_host_stop(h, 3000, NULL), 0, "stop");
	assert_rc(drv_host_health(r, 1000, &st), DRV_EUNAVAILABLE, st.message);
	drv_host_free(r);
	drv_host_free(h);
}

/* Several threads spawn, call and free drivers at once through the one shared I/O thread. */
static void *spawner_main(void *arg)
{
	int *failures = arg;

	for (int i = 0; i < 3; i++) {
		struct drv_host *h = NULL;
		char err[1024];
		struct drv_status st;
		struct drv_spawn_opts o = {.path = SIM_BIN, .name = "sim"};
		drv_get_info_request req = DROVER__COMPUTE__V1__GET_INFO_REQUEST__INIT;
		drv_get_info_response *info = NULL;

		if (drv_host_spawn(&o, &h, err, sizeof(err)) != 0) {
			fprintf(stderr, "parallel spawn: %s\n", err);
			(*failures)++;
			continue;
		}
		if (drv_host_get_info(h, &req, &info, CALL_MS, &st) != 0) {
			fprintf(stderr, "parallel call: %s\n", st.message);
			(*failures)++;
		}
		FREE(info);
		if (i == 1)
			drv_host_close_stdin(h); /* mix in drivers that leave by themselves */
		drv_host_free(h);
	}
	return NULL;
}

static void test_parallel_spawns(void **state)
{
	pthread_t t[4];
	int failures[4] = {0};

	for (int i = 0; i < 4; i++)
		pthread_create(&t[i], NULL, spawner_main, &failures[i]);
	for (int i = 0; i < 4; i++) {
		pthread_join(t[i], NULL);
		assert_int_equal(failures[i], 0);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_identity),
	    cmocka_unit_test(test_instances),
	    cmocka_unit_test(test_placement_volumes_gateways),
	    cmocka_unit_test(test_capacity_exhausted),
	    cmocka_unit_test(test_deadline_then_normal_call),
	    cmocka_unit_test(test_sigterm_with_call_in_flight),
	    cmocka_unit_test(test_stdin_eof_exits),
	    cmocka_unit_test(test_crash_during_call),
	    cmocka_unit_test_setup_teardown(test_state_survives_restart, make_statedir, remove_statedir),
	    cmocka_unit_test(test_generic_call_checks),
	    cmocka_unit_test(test_concurrent_calls),
	    cmocka_unit_test(test_parallel_spawns),
	    cmocka_unit_test(test_connect_unix),
	};
	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
