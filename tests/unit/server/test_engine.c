/*
 * srv_engine with real sim driver processes: offers merged, filtered and
 * sorted across backends with one too slow and one failing; provisioning with
 * fallback; an interrupted create resumed with the same key (one machine).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>
#include <uv.h>

#include "drover/driver.h"
#include "srv_config.h"
#include "srv_engine.h"
#include "srv_secrets.h"
#include "srv_store.h"
#include "srv_supervisor.h"
#include "testutil.h"

struct fx {
	char *dir;
	uv_loop_t loop;
	struct srv_config *cfg;
	struct srv_secrets *sec;
	struct srv_store *st;
	struct srv_supervisor *sup;
	struct srv_engine *eng;
};

static void add_backend(struct fx *f, const char *name, const char *type, const char *cfg_fmt)
{
	char cfg[1024];
	snprintf(cfg, sizeof(cfg), cfg_fmt, f->dir);
	struct srv_backend b = {
	    .project = "p", .name = (char *)name, .type = (char *)type, .config_json = cfg, .source = "api"};
	assert_int_equal(srv_store_backend_put(f->st, &b), 0);
}

static int setup(void **state)
{
	/* A fault name as the test's initial state: a "hostile" driver type runs the fixture with it. */
	const char *fault = *state;
	struct fx *f = calloc(1, sizeof(*f));
	char err[512];
	f->dir = tu_tempdir();
	char *key = tu_join(f->dir, "k"), *db = tu_join(f->dir, "db");
	assert_int_equal(srv_secrets_open(key, &f->sec, err, sizeof(err)), 0);
	assert_int_equal(srv_store_open(db, f->sec, &f->st, err, sizeof(err)), 0);
	free(key);
	free(db);
	uv_loop_init(&f->loop);
	f->cfg = tu_config_new();
	f->cfg->offers_timeout_ms = 700;
	f->cfg->reconcile_interval_ms = 100;
	f->cfg->shutdown_grace_ms = 1000;
	if (fault) {
		struct srv_config_command *c = calloc(1, sizeof(*c));
		c->type = strdup("hostile");
		c->path = strdup(DROVER_BIN_DIR "/fixture-driver-broken-sdk");
		c->args = calloc(5, sizeof(char *));
		c->args[0] = strdup("--fault");
		c->args[1] = strdup(fault);
		c->args[2] = strdup("--report-file");
		c->args[3] = tu_join(f->dir, "hostile.state");
		c->n_args = 4;
		f->cfg->commands = c;
		f->cfg->n_commands = 1;
	}
	assert_int_equal(srv_supervisor_new(&f->loop, f->cfg, &f->sup, err, sizeof(err)), 0);
	assert_int_equal(srv_engine_new(&f->loop, f->st, f->sup, f->cfg, "s-test", &f->eng), 0);
	assert_int_equal(srv_store_project_put(f->st, "p"), 0);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;
	srv_engine_stop(f->eng);
	srv_supervisor_stop(f->sup);
	srv_engine_close_handles(f->eng);
	srv_supervisor_close_handles(f->sup);
	uv_run(&f->loop, UV_RUN_DEFAULT);
	srv_supervisor_free(f->sup);
	srv_engine_free(f->eng);
	uv_loop_close(&f->loop);
	srv_store_close(f->st);
	srv_secrets_free(f->sec);
	srv_config_free(f->cfg);
	tu_rmrf(f->dir);
	free(f->dir);
	free(f);
	return 0;
}

static bool run_until(uv_loop_t *loop, bool *flag, int timeout_ms)
{
	int64_t end = srv_now_ms() + timeout_ms;
	while (!*flag && srv_now_ms() < end) {
		uv_run(loop, UV_RUN_NOWAIT);
		usleep(500);
	}
	return *flag;
}

struct offers_out {
	bool done;
	int code;
	struct srv_offers_result *res;
};

static void offers_cb(void *ud, int code, const char *message, struct srv_offers_result *res)
{
	struct offers_out *o = ud;
	o->done = true;
	o->code = code;
	o->res = res;
}

static const struct srv_backend_result *result_of(const struct srv_offers_result *r, const char *name)
{
	for (size_t i = 0; i < r->n_backends; i++)
		if (strcmp(r->backends[i].backend, name) == 0)
			return &r->backends[i];
	return NULL;
}

static void test_offers_merge_filter_sort(void **state)
{
	struct fx *f = *state;
	add_backend(f, "a-fast", "sim", "{\"state_file\": \"%s/a.json\"}");
	add_backend(f, "b-fast", "sim", "{\"state_file\": \"%s/b.json\", \"synthetic_offers\": 500}");
	add_backend(f, "c-slow", "sim", "{\"state_file\": \"%s/c.json\", \"latency_ms\": 3000}");
	add_backend(f, "d-failing", "sim", "{\"state_file\": \"%s/d.json\", \"error_rate\": 1.0}");
	add_backend(f, "e-nodriver", "no-such-driver", "{}");

	/* Any GPU with at least 40 GiB, at most $10/h. */
	drv_requirements req = DROVER__COMPUTE__V1__REQUIREMENTS__INIT;
	drv_uint_range gcount = DROVER__COMPUTE__V1__UINT_RANGE__INIT,
	               gmem = DROVER__COMPUTE__V1__UINT_RANGE__INIT;
	gcount._min_case = DROVER__COMPUTE__V1__UINT_RANGE___MIN_MIN;
	gcount.min = 1;
	gmem._min_case = DROVER__COMPUTE__V1__UINT_RANGE___MIN_MIN;
	gmem.min = 40 * 1024;
	req.gpu_count = &gcount;
	req.gpu_memory_mib = &gmem;
	req._max_price_case = DROVER__COMPUTE__V1__REQUIREMENTS___MAX_PRICE_MAX_PRICE;
	req.max_price = 10.0;

	struct offers_out o = {0};
	struct srv_offers_query q = {.project = "p", .requirements = &req};
	int64_t t0 = srv_now_ms();
	srv_engine_offers(f->eng, &q, offers_cb, &o);
	assert_true(run_until(&f->loop, &o.done, 10000));
	int64_t took = srv_now_ms() - t0;
	assert_int_equal(o.code, 0);
	struct srv_offers_result *r = o.res;
	/* The slow backend did not hold the query up past its deadline (plus the drivers' start). */
	assert_true(took < 700 + 3000);
	assert_int_equal(r->n_backends, 5);
	assert_int_equal(result_of(r, "a-fast")->code, 0);
	assert_int_equal(result_of(r, "b-fast")->code, 0);
	assert_true(result_of(r, "b-fast")->offer_count > result_of(r, "a-fast")->offer_count);
	assert_int_equal(result_of(r, "c-slow")->code, DRV_EDEADLINE);
	assert_int_equal(result_of(r, "d-failing")->code, DRV_EUNAVAILABLE);
	assert_non_null(strstr(result_of(r, "d-failing")->message, "injected"));
	assert_int_equal(result_of(r, "e-nodriver")->code, DRV_ENOTFOUND);
	assert_true(r->n_items > 0);
	bool seen_a = false, seen_b = false;
	size_t ties = 0; /* the same offer from both sims */
	for (size_t i = 0; i < r->n_items; i++) {
		const drv_offer *off = r->items[i].offer;
		assert_true(drv_offer_matches(off, &req));
		assert_true(off->price_per_hour <= 10.0);
		assert_true(off->resources->n_gpus > 0);
		if (i > 0) {
			const struct srv_offer_item *p = &r->items[i - 1], *c = &r->items[i];
			assert_true(p->offer->price_per_hour <= off->price_per_hour);
			/* Equal prices: by type, then region, then backend (both backends list the catalog).
			 */
			if (p->offer->price_per_hour == off->price_per_hour) {
				int t = strcmp(p->offer->instance_type, off->instance_type);
				int g = strcmp(p->offer->region, off->region);
				assert_true(
				    t < 0 ||
				    (t == 0 && (g < 0 || (g == 0 && strcmp(p->backend, c->backend) < 0))));
				ties += t == 0 && g == 0;
			}
		}
		seen_a |= strcmp(r->items[i].backend, "a-fast") == 0;
		seen_b |= strcmp(r->items[i].backend, "b-fast") == 0;
		assert_true(strcmp(r->items[i].backend, "c-slow") != 0);
	}
	assert_true(seen_a && seen_b);
	assert_true(ties > 0);
	srv_offers_result_free(r);

	/*
	 * With packed_offers each item carries its offer's bytes for the reply (forwarded as the
	 * driver sent them): exactly its length and the packed offer.
	 */
	memset(&o, 0, sizeof(o));
	q.packed_offers = true;
	srv_engine_offers(f->eng, &q, offers_cb, &o);
	assert_true(run_until(&f->loop, &o.done, 10000));
	assert_int_equal(o.code, 0);
	assert_true(o.res->n_items > 0);
	for (size_t i = 0; i < o.res->n_items; i++) {
		const struct srv_offer_item *it = &o.res->items[i];
		size_t body = drover__compute__v1__offer__get_packed_size(it->offer);
		uint8_t *want = malloc(body + 10);
		assert_non_null(want);
		size_t n = 0, v = body;
		while (v >= 0x80) {
			want[n++] = (uint8_t)(v | 0x80);
			v >>= 7;
		}
		want[n++] = (uint8_t)v;
		n += drover__compute__v1__offer__pack(it->offer, want + n);
		assert_non_null(it->wire);
		assert_int_equal(it->wire_len, n);
		assert_memory_equal(it->wire, want, n);
		free(want);
	}
	srv_offers_result_free(o.res);
	q.packed_offers = false;

	/* A required feature the example driver lacks: it is skipped and says why; sims still answer. */
	add_backend(f, "f-example", "example", "{}");
	memset(&o, 0, sizeof(o));
	q.required_features = DRV_FEATURE_BIT(DRV_FEATURE_VOLUMES);
	srv_engine_offers(f->eng, &q, offers_cb, &o);
	assert_true(run_until(&f->loop, &o.done, 10000));
	const struct srv_backend_result *ex = result_of(o.res, "f-example");
	assert_int_equal(ex->code, DRV_EUNIMPLEMENTED);
	assert_non_null(strstr(ex->message, "VOLUMES"));
	assert_int_equal(result_of(o.res, "a-fast")->code, 0);
	srv_offers_result_free(o.res);
}

struct inst_out {
	bool done;
	int code;
	char message[1024];
	struct srv_instance copy;
	char status[32], backend[64], attempts[4096], key[128];
	unsigned char prov[4096];
	size_t prov_len;
};

/* The row's attempts as JSON text ("[]" for none), for the assertions on them. */
static void attempts_text(const struct srv_instance *in, char *buf, size_t len)
{
	json_t *arr = json_array();
	for (size_t i = 0; in->record && i < in->record->n_attempts; i++) {
		const Drover__Api__V1__Attempt *a = in->record->attempts[i];
		json_array_append_new(arr, json_pack("{s:i, s:s, s:s}", "number", (int)a->number, "backend",
		                                     a->backend, "code", a->code));
	}
	char *t = json_dumps(arr, JSON_COMPACT);
	snprintf(buf, len, "%s", t ? t : "");
	free(t);
	json_decref(arr);
}

static void inst_cb(void *ud, int code, const char *message, const struct srv_instance *in)
{
	struct inst_out *o = ud;
	o->done = true;
	o->code = code;
	snprintf(o->message, sizeof(o->message), "%s", message);
	if (in) {
		snprintf(o->status, sizeof(o->status), "%s", in->status);
		snprintf(o->backend, sizeof(o->backend), "%s", in->backend);
		attempts_text(in, o->attempts, sizeof(o->attempts));
		snprintf(o->key, sizeof(o->key), "%s", in->id);
	}
}

static size_t live_in_sim(const char *path)
{
	json_t *j = json_load_file(path, 0, NULL);
	size_t n = 0, idx;
	json_t *v;
	json_array_foreach(json_object_get(j, "instances"), idx, v)
	{
		if (!json_is_true(json_object_get(v, "terminated")))
			n++;
	}
	json_decref(j);
	return n;
}

/* Requirements of one H100: both sims have such offers, and "a-empty" refuses them all. */
static void h100(drv_requirements *req)
{
	static char *names[] = {"H100"};
	drover__compute__v1__requirements__init(req);
	req->n_gpu_names = 1;
	req->gpu_names = names;
}

/* Polls the store until ok(row, arg) holds for instance `id`; false after timeout_ms. */
static bool wait_row(struct fx *f, const char *id, bool (*ok)(const struct srv_instance *, const char *),
                     const char *arg, int timeout_ms)
{
	int64_t end = srv_now_ms() + timeout_ms;
	for (;;) {
		uv_run(&f->loop, UV_RUN_NOWAIT);
		struct srv_instance *in;
		assert_int_equal(srv_store_instance_get(f->st, id, &in), 0);
		bool there = ok(in, arg);
		srv_instance_free(in);
		if (there)
			return true;
		if (srv_now_ms() >= end)
			return false;
		usleep(2000);
	}
}

static bool has_status(const struct srv_instance *in, const char *status)
{
	return strcmp(in->status, status) == 0;
}

/* Polls the store until instance `id` has `status`; false after timeout_ms. */
static bool wait_status(struct fx *f, const char *id, const char *status, int timeout_ms)
{
	return wait_row(f, id, has_status, status, timeout_ms);
}

static void test_create_fallback_and_terminate(void **state)
{
	struct fx *f = *state;
	add_backend(f, "a-empty", "sim", "{\"state_file\": \"%s/a.json\", \"capacity\": 0}");
	add_backend(f, "b-room", "sim", "{\"state_file\": \"%s/b.json\", \"capacity\": 2}");
	drv_requirements req;
	h100(&req);
	struct inst_out o = {0};
	struct srv_create_request cr = {.project = "p", .name = "web", .requirements = &req, .max_tries = 3};
	srv_engine_create(f->eng, &cr, inst_cb, &o);
	assert_true(run_until(&f->loop, &o.done, 10000));
	assert_int_equal(o.code, 0);
	assert_true(strcmp(o.status, SRV_ST_RUNNING) == 0 || strcmp(o.status, SRV_ST_PROVISIONING) == 0);
	assert_string_equal(o.backend, "b-room");
	json_t *att = json_loads(o.attempts, 0, NULL);
	assert_int_equal(json_array_size(att), 2);
	assert_string_equal(json_string_value(json_object_get(json_array_get(att, 0), "code")),
	                    "RESOURCE_EXHAUSTED");
	assert_string_equal(json_string_value(json_object_get(json_array_get(att, 0), "backend")), "a-empty");
	assert_string_equal(json_string_value(json_object_get(json_array_get(att, 1), "code")), "OK");
	json_decref(att);
	char *bstate = tu_join(f->dir, "b.json");
	assert_int_equal(live_in_sim(bstate), 1);

	/* The same name again while it lives: refused. */
	struct inst_out o2 = {0};
	srv_engine_create(f->eng, &cr, inst_cb, &o2);
	assert_true(run_until(&f->loop, &o2.done, 5000));
	assert_int_equal(o2.code, DRV_EEXIST);

	/* Terminate: written first, confirmed by the driver, then terminated. */
	struct srv_instance *in;
	assert_int_equal(srv_engine_terminate(f->eng, o.key, &in), 0);
	assert_string_equal(in->status, SRV_ST_TERMINATING);
	srv_instance_free(in);
	bool gone = false;
	for (int i = 0; i < 500 && !gone; i++) {
		uv_run(&f->loop, UV_RUN_NOWAIT);
		usleep(2000);
		assert_int_equal(srv_store_instance_get(f->st, o.key, &in), 0);
		gone = strcmp(in->status, SRV_ST_TERMINATED) == 0;
		srv_instance_free(in);
	}
	assert_true(gone);
	assert_int_equal(live_in_sim(bstate), 0);
	free(bstate);
}

static void test_termination_failing_is_kept(void **state)
{
	struct fx *f = *state;
	add_backend(f, "stuck", "sim", "{\"state_file\": \"%s/s.json\", \"fail_termination\": true}");
	/* The reconciliation timer drives the retries. */
	srv_engine_start(f->eng);
	struct inst_out o = {0};
	struct srv_create_request cr = {.project = "p", .name = "sticky"};
	srv_engine_create(f->eng, &cr, inst_cb, &o);
	assert_true(run_until(&f->loop, &o.done, 10000));
	assert_int_equal(o.code, 0);
	struct srv_instance *in;
	assert_int_equal(srv_engine_terminate(f->eng, o.key, &in), 0);
	srv_instance_free(in);
	int64_t failures = 0;
	for (int i = 0; i < 1500 && failures < 2; i++) {
		uv_run(&f->loop, UV_RUN_NOWAIT);
		usleep(2000);
		assert_int_equal(srv_store_instance_get(f->st, o.key, &in), 0);
		/* Never marked terminated without the driver's OK. */
		assert_string_equal(in->status, SRV_ST_TERMINATING);
		failures = in->termination_failures;
		if (failures >= 2)
			assert_non_null(strstr(in->last_error, "UNAVAILABLE"));
		srv_instance_free(in);
	}
	assert_true(failures >= 2);
}

static void done_cb(void *ud, int code, const char *message, ProtobufCMessage *resp)
{
	assert_int_equal(code, 0);
	*(bool *)ud = true;
	if (resp)
		drv_response_free(resp);
}

/*
 * Plays a crash during a create: backend "r" made the machine for attempt 1
 * of instance i-crash, and the store still has the row "creating". Returns
 * the sim's state file (caller frees).
 */
static char *plant_interrupted_create(struct fx *f)
{
	add_backend(f, "r", "sim", "{\"state_file\": \"%s/r.json\"}");
	char *rstate = tu_join(f->dir, "r.json");
	struct offers_out oo = {0};
	struct srv_offers_query q = {.project = "p"};
	srv_engine_offers(f->eng, &q, offers_cb, &oo);
	assert_true(run_until(&f->loop, &oo.done, 10000));
	assert_true(oo.res->n_items > 0);
	const drv_offer *offer = oo.res->items[0].offer;
	struct srv_backend *be;
	assert_int_equal(srv_store_backend_get(f->st, "p", "r", &be), 0);
	struct drv_backend_config_buf bc;
	srv_bcfg_init(&bc, be);
	drv_create_instance_request creq = DROVER__COMPUTE__V1__CREATE_INSTANCE_REQUEST__INIT;
	drv_instance_configuration ic = DROVER__COMPUTE__V1__INSTANCE_CONFIGURATION__INIT;
	ic.name = "crashy";
	ic.project = "p";
	ic.idempotency_key = "key-1/1";
	creq.config = &bc.msg;
	creq.offer = (drv_offer *)offer;
	creq.instance = &ic;
	bool made = false;
	srv_supervisor_call(f->sup, "sim", "CreateInstance", &creq.base, 5000, done_cb, &made);
	assert_true(run_until(&f->loop, &made, 5000));
	drv_backend_config_clear(&bc);
	srv_backend_free(be);
	assert_int_equal(live_in_sim(rstate), 1);

	size_t len = protobuf_c_message_get_packed_size(&offer->base);
	unsigned char *buf = malloc(len);
	protobuf_c_message_pack(&offer->base, buf);
	/* One attempt, in flight (no code) when the server stopped. */
	Drover__Api__V1__Attempt a = DROVER__API__V1__ATTEMPT__INIT, *ap = &a;
	a.number = 1;
	Drover__State__V1__InstanceRecord rec = DROVER__STATE__V1__INSTANCE_RECORD__INIT;
	rec.n_attempts = 1;
	rec.attempts = &ap;
	struct srv_instance in = {.id = "i-crash",
	                          .project = "p",
	                          .backend = "r",
	                          .backend_type = "sim",
	                          .name = "crashy",
	                          .status = SRV_ST_CREATING,
	                          .offer = buf,
	                          .offer_len = len,
	                          .idempotency_key = "key-1",
	                          .record = &rec};
	assert_int_equal(srv_store_instance_put(f->st, &in), 0);
	free(buf);
	srv_offers_result_free(oo.res);
	return rstate;
}

static void test_resume_creating_makes_one_machine(void **state)
{
	struct fx *f = *state;
	char *rstate = plant_interrupted_create(f);
	/* The restart: engine start resumes it with the same key. */
	srv_engine_start(f->eng);
	bool done = false;
	for (int i = 0; i < 2500 && !done; i++) {
		uv_run(&f->loop, UV_RUN_NOWAIT);
		usleep(2000);
		struct srv_instance *got;
		assert_int_equal(srv_store_instance_get(f->st, "i-crash", &got), 0);
		done =
		    strcmp(got->status, SRV_ST_RUNNING) == 0 || strcmp(got->status, SRV_ST_PROVISIONING) == 0;
		srv_instance_free(got);
	}
	assert_true(done);
	/* Exactly one machine: the resumed attempt got the same one back. */
	assert_int_equal(live_in_sim(rstate), 1);
	free(rstate);
}

/*
 * A terminate asked for before the restart, while the row was "creating":
 * the resumed create finds the machine again and terminates it.
 */
static void test_terminate_kept_across_restart(void **state)
{
	struct fx *f = *state;
	char *rstate = plant_interrupted_create(f);
	struct srv_instance *t = NULL;
	assert_int_equal(srv_engine_terminate(f->eng, "i-crash", &t), 0);
	assert_string_equal(t->status, SRV_ST_CREATING);
	srv_instance_free(t);
	srv_engine_start(f->eng);
	assert_true(wait_status(f, "i-crash", SRV_ST_TERMINATED, 10000));
	assert_int_equal(live_in_sim(rstate), 0);
	free(rstate);
}

/* Runs the loop until the create named `name` has its row written; returns its id (caller frees). */
static char *row_of_create(struct fx *f, const char *name)
{
	for (int i = 0; i < 5000; i++) {
		uv_run(&f->loop, UV_RUN_NOWAIT);
		struct srv_instance *in = NULL;
		if (srv_store_instance_by_name(f->st, "p", name, true, &in) == 0) {
			assert_string_equal(in->status, SRV_ST_CREATING);
			char *id = strdup(in->id);
			srv_instance_free(in);
			return id;
		}
		usleep(1000);
	}
	fail_msg("the create of %s never wrote its row", name);
	return NULL;
}

/*
 * A terminate while the CreateInstance call is out is kept, not refused or
 * dropped: the create answers TERMINATING, and the machine it made goes.
 */
static void test_terminate_during_create(void **state)
{
	struct fx *f = *state;
	add_backend(f, "slow", "sim", "{\"state_file\": \"%s/slow.json\", \"latency_ms\": 400}");
	char *path = tu_join(f->dir, "slow.json");
	srv_engine_start(f->eng);
	struct inst_out o = {0};
	struct srv_create_request cr = {.project = "p", .name = "brief"};
	srv_engine_create(f->eng, &cr, inst_cb, &o);
	char *id = row_of_create(f, "brief");
	assert_false(o.done);

	struct srv_instance *t = NULL;
	assert_int_equal(srv_engine_terminate(f->eng, id, &t), 0);
	assert_string_equal(t->status, SRV_ST_CREATING);
	assert_true(t->terminate_requested);
	srv_instance_free(t);
	/* Written before the answer: a crash from here on keeps it. */
	struct srv_instance *got;
	assert_int_equal(srv_store_instance_get(f->st, id, &got), 0);
	assert_true(got->terminate_requested);
	srv_instance_free(got);
	/* Asking again changes nothing. */
	assert_int_equal(srv_engine_terminate(f->eng, id, &t), 0);
	assert_string_equal(t->status, SRV_ST_CREATING);
	srv_instance_free(t);

	assert_true(run_until(&f->loop, &o.done, 10000));
	assert_int_equal(o.code, 0);
	assert_string_equal(o.status, SRV_ST_TERMINATING);
	assert_true(wait_status(f, id, SRV_ST_TERMINATED, 10000));
	/* The machine was made, then terminated through the driver. */
	json_t *j = json_load_file(path, 0, NULL);
	assert_int_equal(json_array_size(json_object_get(j, "instances")), 1);
	json_decref(j);
	assert_int_equal(live_in_sim(path), 0);
	free(id);
	free(path);
}

/* A create refused after the terminate was asked for ends FAILED: no further offer is tried. */
static void test_terminate_during_refused_create(void **state)
{
	struct fx *f = *state;
	add_backend(f, "a-empty", "sim",
	            "{\"state_file\": \"%s/a.json\", \"capacity\": 0, \"latency_ms\": 400}");
	add_backend(f, "b-room", "sim", "{\"state_file\": \"%s/b.json\", \"capacity\": 2}");
	drv_requirements req;
	h100(&req);
	struct inst_out o = {0};
	struct srv_create_request cr = {
	    .project = "p", .name = "never", .requirements = &req, .max_tries = 3};
	srv_engine_create(f->eng, &cr, inst_cb, &o);
	char *id = row_of_create(f, "never");
	struct srv_instance *t = NULL;
	assert_int_equal(srv_engine_terminate(f->eng, id, &t), 0);
	srv_instance_free(t);
	assert_true(run_until(&f->loop, &o.done, 10000));
	assert_int_equal(o.code, 0);
	assert_string_equal(o.status, SRV_ST_FAILED);
	json_t *att = json_loads(o.attempts, 0, NULL);
	assert_int_equal(json_array_size(att), 1);
	assert_string_equal(json_string_value(json_object_get(json_array_get(att, 0), "code")),
	                    "RESOURCE_EXHAUSTED");
	json_decref(att);
	struct srv_instance *got;
	assert_int_equal(srv_store_instance_get(f->st, id, &got), 0);
	assert_non_null(strstr(got->last_error, "termination was requested"));
	srv_instance_free(got);
	char *b = tu_join(f->dir, "b.json");
	assert_int_equal(live_in_sim(b), 0);
	free(b);
	free(id);
}

/*
 * A terminate while the create still looks up offers (no row yet): the row
 * is written failed at once, before the answer, and the create then answers
 * the same without any driver call. A create repeated with its key gets
 * that row, so a server stop in between cannot turn it into a machine.
 */
static void test_terminate_during_offers(void **state)
{
	struct fx *f = *state;
	add_backend(f, "slow", "sim", "{\"state_file\": \"%s/slow.json\", \"latency_ms\": 400}");
	char *path = tu_join(f->dir, "slow.json");
	struct srv_instance *t = NULL;
	assert_int_equal(srv_engine_terminate_unwritten(f->eng, "p", "early", &t), 1);
	struct inst_out o = {0};
	struct srv_create_request cr = {.project = "p", .name = "early", .idempotency_key = "key-early"};
	srv_engine_create(f->eng, &cr, inst_cb, &o);
	uv_run(&f->loop, UV_RUN_NOWAIT);
	struct srv_instance *got = NULL;
	assert_int_equal(srv_store_instance_by_name(f->st, "p", "early", false, &got), 1);
	/* Shown "pending" while it has no row. */
	assert_int_equal(srv_engine_get_unwritten(f->eng, "p", "early", &got), 0);
	assert_string_equal(got->status, SRV_ST_PENDING);
	srv_instance_free(got);
	/* And listed, in its project only. */
	struct srv_instance **pend = NULL;
	size_t np = 0;
	assert_int_equal(srv_engine_list_unwritten(f->eng, "p", &pend, &np), 0);
	assert_int_equal(np, 1);
	assert_string_equal(pend[0]->name, "early");
	assert_string_equal(pend[0]->status, SRV_ST_PENDING);
	assert_true(pend[0]->created_at > 0);
	srv_instance_list_free(pend, np);
	assert_int_equal(srv_engine_list_unwritten(f->eng, "other", &pend, &np), 0);
	assert_int_equal(np, 0);
	srv_instance_list_free(pend, np);
	/* By name within its project; another project's name does not match. */
	assert_int_equal(srv_engine_terminate_unwritten(f->eng, "other", "early", &t), 1);
	assert_int_equal(srv_engine_terminate_unwritten(f->eng, "p", "early", &t), 0);
	assert_string_equal(t->status, SRV_ST_FAILED);
	assert_true(t->terminate_requested);
	char *id = strdup(t->id);
	srv_instance_free(t);
	/* Written before the answer, while the offers are still out. */
	assert_false(o.done);
	assert_int_equal(srv_store_instance_get(f->st, id, &got), 0);
	assert_string_equal(got->status, SRV_ST_FAILED);
	assert_non_null(strstr(got->last_error, "terminated before any attempt"));
	srv_instance_free(got);
	/* From here the store answers for it. */
	assert_int_equal(srv_engine_terminate_unwritten(f->eng, NULL, id, &t), 1);
	assert_int_equal(srv_engine_get_unwritten(f->eng, NULL, id, &got), 1);
	assert_int_equal(srv_engine_list_unwritten(f->eng, NULL, &pend, &np), 0);
	assert_int_equal(np, 0);
	srv_instance_list_free(pend, np);

	assert_true(run_until(&f->loop, &o.done, 10000));
	assert_int_equal(o.code, 0);
	assert_string_equal(o.key, id);
	assert_string_equal(o.status, SRV_ST_FAILED);
	assert_string_equal(o.attempts, "[]");
	/* No driver call: the sim never made a machine. */
	json_t *j = json_load_file(path, 0, NULL);
	assert_int_equal(json_array_size(json_object_get(j, "instances")), 0);
	json_decref(j);
	/* The same key again answers the failed row, and makes nothing. */
	struct inst_out o2 = {0};
	srv_engine_create(f->eng, &cr, inst_cb, &o2);
	assert_true(run_until(&f->loop, &o2.done, 10000));
	assert_int_equal(o2.code, 0);
	assert_string_equal(o2.key, id);
	assert_string_equal(o2.status, SRV_ST_FAILED);
	free(id);
	free(path);
}

/*
 * Makes a machine through backend `backend`'s driver with these tags (pairs
 * of key and value), as a droverd whose store was lost (or a forger) would.
 */
static void make_machine(struct fx *f, const char *backend, const char *key, const char *const *kv,
                         size_t n_tags)
{
	struct offers_out oo = {0};
	const char *only[] = {backend};
	struct srv_offers_query q = {.project = "p", .backends = only, .n_backends = 1};
	srv_engine_offers(f->eng, &q, offers_cb, &oo);
	assert_true(run_until(&f->loop, &oo.done, 10000));
	assert_true(oo.res->n_items > 0);
	struct srv_backend *be;
	assert_int_equal(srv_store_backend_get(f->st, "p", backend, &be), 0);
	struct drv_backend_config_buf bc;
	srv_bcfg_init(&bc, be);
	drv_create_instance_request creq = DROVER__COMPUTE__V1__CREATE_INSTANCE_REQUEST__INIT;
	drv_instance_configuration ic = DROVER__COMPUTE__V1__INSTANCE_CONFIGURATION__INIT;
	drv_tag_entry t[4], *tp[4];
	for (size_t i = 0; i < n_tags; i++) {
		drover__compute__v1__instance_configuration__tags_entry__init(&t[i]);
		t[i].key = (char *)kv[2 * i];
		t[i].value = (char *)kv[2 * i + 1];
		tp[i] = &t[i];
	}
	ic.name = (char *)key;
	ic.project = "p";
	ic.idempotency_key = (char *)key;
	ic.n_tags = n_tags;
	ic.tags = tp;
	creq.config = &bc.msg;
	creq.offer = (drv_offer *)oo.res->items[0].offer;
	creq.instance = &ic;
	bool made = false;
	srv_supervisor_call(f->sup, be->type, "CreateInstance", &creq.base, 5000, done_cb, &made);
	assert_true(run_until(&f->loop, &made, 5000));
	drv_backend_config_clear(&bc);
	srv_backend_free(be);
	srv_offers_result_free(oo.res);
}

/* A machine of instance `id` signed as droverd signs it, for backend `backend` of project p. */
static void make_signed(struct fx *f, const char *backend, const char *id, const char *sig_backend)
{
	char sig[SRV_SECRETS_SIG_LEN + 1];
	assert_int_equal(srv_secrets_sign_machine(f->sec, id, "p", sig_backend, sig), 0);
	const char *kv[] = {"drover-server", "s-test", "drover-instance", id, "drover-sig", sig};
	make_machine(f, backend, id, kv, 3);
}

/* Runs one orphan scan and waits until every answer is in. */
static void scan(struct fx *f)
{
	srv_engine_find_orphans(f->eng);
	for (int i = 0; i < 5000 && srv_engine_busy(f->eng) > 0; i++) {
		uv_run(&f->loop, UV_RUN_NOWAIT);
		usleep(1000);
	}
	assert_int_equal(srv_engine_busy(f->eng), 0);
}

static int64_t count_events(struct fx *f, const char *kind)
{
	struct srv_event_filter flt = {.limit = 10000};
	struct srv_event *ev;
	size_t n;
	assert_int_equal(srv_store_event_list(f->st, &flt, &ev, &n), 0);
	int64_t k = 0;
	for (size_t i = 0; i < n; i++)
		k += strcmp(ev[i].kind, kind) == 0;
	srv_event_list_free(ev, n);
	return k;
}

/*
 * Only a machine signed by this server's key for this backend is adopted;
 * unsigned, forged and misdirected ones are foreign: kept for display,
 * reported once per scan, never made rows. Another server's machine is none
 * of these.
 */
static void test_orphan_adopted(void **state)
{
	struct fx *f = *state;
	add_backend(f, "o", "sim", "{\"state_file\": \"%s/o.json\", \"capacity\": 10}");
	/* A machine made with this server's tags that the store never heard of (a lost database, say). */
	make_signed(f, "o", "i-lost", "o");
	const char *forged[] = {"drover-server", "s-test",     "drover-instance",
	                        "i-forged",      "drover-sig", "v1-00000000000000000000000000000000"};
	make_machine(f, "o", "forged", forged, 3);
	const char *unsigned_[] = {"drover-server", "s-test", "drover-instance", "i-unsigned\x1b[31m"};
	make_machine(f, "o", "unsigned", unsigned_, 2);
	/* Signed, but for another backend: a listing of "o" must not vouch for it. */
	make_signed(f, "o", "i-elsewhere", "other");
	/* Another server's machine on the same backend: not ours, never adopted, not foreign either. */
	const char *theirs[] = {"drover-server", "s-someone-else", "drover-instance", "i-theirs"};
	make_machine(f, "o", "theirs", theirs, 2);

	scan(f);
	struct srv_instance *in = NULL;
	assert_int_equal(srv_store_instance_get(f->st, "i-lost", &in), 0);
	assert_string_equal(in->status, SRV_ST_RUNNING);
	assert_string_equal(in->backend, "o");
	assert_non_null(strstr(in->last_error, "orphan"));
	assert_non_null(in->provisioning);
	srv_instance_free(in);
	int64_t n;
	assert_int_equal(srv_store_instance_count(f->st, NULL, &n), 0);
	assert_int_equal(n, 1);

	size_t ns;
	const struct srv_foreign_scan *fs = srv_engine_foreign_scans(f->eng, &ns);
	assert_int_equal(ns, 1);
	assert_string_equal(fs[0].backend, "o");
	assert_int_equal(fs[0].total, 3);
	assert_int_equal(fs[0].n_machines, 3);
	int unsigned_seen = 0, bad_sig = 0;
	for (size_t i = 0; i < fs[0].n_machines; i++) {
		const struct srv_foreign_machine *m = &fs[0].machines[i];
		assert_true(m->instance_id[0] != '\0');
		if (strcmp(m->reason, "no signature") == 0) {
			/* The escape of the listing is not passed on. */
			assert_string_equal(m->tag_instance, "i-unsigned?[31m");
			unsigned_seen++;
		} else {
			assert_string_equal(m->reason, "the signature does not verify");
			bad_sig++;
		}
	}
	assert_int_equal(unsigned_seen, 1);
	assert_int_equal(bad_sig, 2);
	assert_int_equal(count_events(f, "orphan.foreign"), 1);
	assert_int_equal(count_events(f, "instance.orphan_adopted"), 1);

	/* The next scan replaces the list (never adds to it) and reports once more; nothing is terminated. */
	scan(f);
	fs = srv_engine_foreign_scans(f->eng, &ns);
	assert_int_equal(ns, 1);
	assert_int_equal(fs[0].total, 3);
	assert_int_equal(count_events(f, "orphan.foreign"), 2);
	assert_int_equal(count_events(f, "instance.orphan_adopted"), 1);
	char *path = tu_join(f->dir, "o.json");
	assert_int_equal(live_in_sim(path), 5);
	free(path);
}

/* Each backend's scan adopts orphan_max_adopted and looks at orphan_max_listed machines at most. */
static void test_orphan_caps(void **state)
{
	struct fx *f = *state;
	f->cfg->orphan_max_adopted = 1;
	add_backend(f, "o", "sim", "{\"state_file\": \"%s/o.json\"}");
	make_signed(f, "o", "i-a", "o");
	make_signed(f, "o", "i-b", "o");
	make_signed(f, "o", "i-c", "o");
	int64_t n;
	for (int64_t want = 1; want <= 3; want++) {
		scan(f);
		assert_int_equal(srv_store_instance_count(f->st, NULL, &n), 0);
		assert_int_equal(n, want);
	}
	/* Two scans had adoptions waiting: each said so. */
	assert_int_equal(count_events(f, "orphan.scan_capped"), 2);

	/* A listing longer than orphan_max_listed: the rest is not looked at, and that is reported. */
	f->cfg->orphan_max_adopted = 1000;
	f->cfg->orphan_max_listed = 2;
	add_backend(f, "q", "sim", "{\"state_file\": \"%s/q.json\"}");
	make_signed(f, "q", "i-d", "q");
	make_signed(f, "q", "i-e", "q");
	make_signed(f, "q", "i-f", "q");
	scan(f);
	assert_int_equal(srv_store_instance_count(f->st, NULL, &n), 0);
	assert_int_equal(n, 5);
	/* Both backends listed three: each scan looked at two and said so. */
	assert_int_equal(count_events(f, "orphan.scan_capped"), 4);
}

/* Creates instance `name` on one H100 (one try) and waits for the answer, which must be OK. */
static void create_h100(struct fx *f, const char *name, struct inst_out *o)
{
	drv_requirements req;
	h100(&req);
	struct srv_create_request cr = {.project = "p", .name = name, .requirements = &req, .max_tries = 1};
	srv_engine_create(f->eng, &cr, inst_cb, o);
	assert_true(run_until(&f->loop, &o->done, 10000));
	assert_int_equal(o->code, 0);
}

/* Terminates instance `id`'s machine through backend `backend`'s driver, as the provider's console would. */
static void terminate_behind_our_back(struct fx *f, const char *backend, const char *id)
{
	struct srv_instance *in;
	assert_int_equal(srv_store_instance_get(f->st, id, &in), 0);
	drv_provisioning_data *pd =
	    drover__compute__v1__provisioning_data__unpack(NULL, in->provisioning_len, in->provisioning);
	assert_non_null(pd);
	srv_instance_free(in);
	struct srv_backend *be;
	assert_int_equal(srv_store_backend_get(f->st, "p", backend, &be), 0);
	struct drv_backend_config_buf bc;
	srv_bcfg_init(&bc, be);
	drv_terminate_instance_request treq = DROVER__COMPUTE__V1__TERMINATE_INSTANCE_REQUEST__INIT;
	treq.config = &bc.msg;
	treq.instance_id = pd->instance_id;
	treq.region = pd->region;
	bool done = false;
	srv_supervisor_call(f->sup, be->type, "TerminateInstance", &treq.base, 5000, done_cb, &done);
	assert_true(run_until(&f->loop, &done, 5000));
	drv_backend_config_clear(&bc);
	srv_backend_free(be);
	drover__compute__v1__provisioning_data__free_unpacked(pd, NULL);
}

/* True when instance `id` has an event of `kind` whose message contains `text`. */
static bool has_event(struct fx *f, const char *id, const char *kind, int level, const char *text)
{
	struct srv_event_filter flt = {.instance = id};
	struct srv_event *ev;
	size_t n;
	assert_int_equal(srv_store_event_list(f->st, &flt, &ev, &n), 0);
	bool found = false;
	for (size_t i = 0; i < n; i++)
		found |= strcmp(ev[i].kind, kind) == 0 && ev[i].level == level &&
		         strstr(ev[i].message, text) != NULL;
	srv_event_list_free(ev, n);
	return found;
}

/*
 * A machine terminated behind drover's back while it provisions (the
 * provider's console, a spot reclaim): GetInstance says TERMINATED, and the row
 * goes through termination to "terminated" instead of polling for ever.
 */
static void test_gone_while_provisioning(void **state)
{
	struct fx *f = *state;
	add_backend(f, "g", "sim", "{\"state_file\": \"%s/g.json\", \"provisioning_delay_ms\": 600000}");
	srv_engine_start(f->eng);
	struct inst_out o = {0};
	create_h100(f, "doomed", &o);
	assert_string_equal(o.status, SRV_ST_PROVISIONING);

	terminate_behind_our_back(f, "g", o.key);

	/* Polled every 100 ms here (reconcile_interval_ms). */
	assert_true(wait_status(f, o.key, SRV_ST_TERMINATED, 10000));
	assert_true(
	    has_event(f, o.key, "instance.gone", SRV_EVENT_WARNING, "terminated while it was provisioning"));
	assert_true(has_event(f, o.key, "instance.terminated", SRV_EVENT_INFO, "confirmed"));
}

/* The row's next_check_at. */
static int64_t next_check_of(struct fx *f, const char *id)
{
	struct srv_instance *in;
	assert_int_equal(srv_store_instance_get(f->st, id, &in), 0);
	int64_t at = in->next_check_at;
	srv_instance_free(in);
	return at;
}

/* Running, with last_error NULL (want NULL) or containing `want`; never anything but running. */
static bool running_with_error(const struct srv_instance *in, const char *want)
{
	assert_string_equal(in->status, SRV_ST_RUNNING);
	return want ? in->last_error && strstr(in->last_error, want) : !in->last_error;
}

/*
 * A running machine is checked every running_check_interval_ms: one gone
 * behind drover's back is terminated in the store; a failing check is shown
 * but decides nothing; with the interval 0 nothing is checked.
 */
static void test_gone_while_running(void **state)
{
	struct fx *f = *state;
	f->cfg->running_check_interval_ms = 200;
	add_backend(f, "r", "sim", "{\"state_file\": \"%s/r.json\"}");
	srv_engine_start(f->eng);
	struct inst_out o = {0};
	create_h100(f, "vanishing", &o);
	assert_string_equal(o.status, SRV_ST_RUNNING);
	int64_t at = next_check_of(f, o.key);
	assert_true(at > srv_now_ms() - 1000 && at <= srv_now_ms() + 200);

	/* Checks that fail leave it running, with the reason shown; the next good one clears it. */
	char cfg[512];
	snprintf(cfg, sizeof(cfg), "{\"state_file\": \"%s/r.json\", \"error_rate\": 1}", f->dir);
	struct srv_backend b = {
	    .project = "p", .name = "r", .type = "sim", .config_json = cfg, .source = "api"};
	assert_int_equal(srv_store_backend_put(f->st, &b), 0);
	assert_true(
	    wait_row(f, o.key, running_with_error, "GetInstance: UNAVAILABLE: injected fault", 10000));
	add_backend(f, "r", "sim", "{\"state_file\": \"%s/r.json\"}");
	assert_true(wait_row(f, o.key, running_with_error, NULL, 10000));

	terminate_behind_our_back(f, "r", o.key);
	assert_true(wait_status(f, o.key, SRV_ST_TERMINATED, 10000));
	assert_true(
	    has_event(f, o.key, "instance.gone", SRV_EVENT_WARNING, "terminated while it was running"));
}

static void test_running_not_checked(void **state)
{
	struct fx *f = *state;
	f->cfg->running_check_interval_ms = 0;
	add_backend(f, "r", "sim", "{\"state_file\": \"%s/r.json\"}");
	srv_engine_start(f->eng);
	struct inst_out o = {0};
	create_h100(f, "unwatched", &o);
	assert_string_equal(o.status, SRV_ST_RUNNING);
	assert_int_equal(next_check_of(f, o.key), 0);
	terminate_behind_our_back(f, "r", o.key);
	/* Ten reconciliation passes later it is still running. */
	assert_false(wait_status(f, o.key, SRV_ST_TERMINATED, 1000));
}

/* Running rows a server wrote unchecked get their first check spread over one interval at start. */
static void test_running_checks_scheduled_at_start(void **state)
{
	struct fx *f = *state;
	f->cfg->running_check_interval_ms = 60000;
	char id[32];
	for (int i = 0; i < 4; i++) {
		snprintf(id, sizeof(id), "i-old-%d", i);
		struct srv_instance in = {
		    .id = id,
		    .project = "p",
		    .backend = "r",
		    .backend_type = "sim",
		    .name = id,
		    .status = SRV_ST_RUNNING,
		    .idempotency_key = id,
		};
		assert_int_equal(srv_store_instance_put(f->st, &in), 0);
	}
	int64_t t0 = srv_now_ms();
	srv_engine_start(f->eng);
	int64_t first = INT64_MAX, last = 0;
	for (int i = 0; i < 4; i++) {
		snprintf(id, sizeof(id), "i-old-%d", i);
		int64_t at = next_check_of(f, id);
		first = at < first ? at : first;
		last = at > last ? at : last;
	}
	assert_true(first > t0 && first <= srv_now_ms() + 1);
	assert_true(last >= t0 + 3 * 60000 / 4 && last <= srv_now_ms() + 60000);
}

/* Terminating, never terminated, until the unconfirmed warning is raised. */
static bool unconfirmed(const struct srv_instance *in, const char *unused)
{
	(void)unused;
	assert_string_equal(in->status, SRV_ST_TERMINATING);
	return in->termination_unconfirmed;
}

/*
 * A TerminateInstance that answers OK and leaves the machine running is not
 * believed: the row stays terminating, is asked again with backoff, and past
 * the window raises termination.unconfirmed; once the provider stops lying,
 * the end is observed and the row is terminated.
 */
static void test_terminate_lie_unconfirmed(void **state)
{
	struct fx *f = *state;
	f->cfg->termination_confirm_window_ms = 300;
	add_backend(f, "l", "sim", "{\"state_file\": \"%s/l.json\", \"terminate_lie_rate\": 1}");
	srv_engine_start(f->eng);
	struct inst_out o = {0};
	create_h100(f, "liar", &o);
	struct srv_instance *in;
	assert_int_equal(srv_engine_terminate(f->eng, o.key, &in), 0);
	srv_instance_free(in);
	assert_true(wait_row(f, o.key, unconfirmed, NULL, 15000));
	assert_int_equal(srv_store_instance_get(f->st, o.key, &in), 0);
	assert_non_null(strstr(in->last_error, "GetInstance still reports RUNNING"));
	assert_true(in->termination_acked_at > 0);
	assert_true(in->termination_checks >= 1);
	srv_instance_free(in);
	assert_true(has_event(f, o.key, "termination.unconfirmed", SRV_EVENT_WARNING, "not observed"));
	char *path = tu_join(f->dir, "l.json");
	assert_int_equal(live_in_sim(path), 1);

	add_backend(f, "l", "sim", "{\"state_file\": \"%s/l.json\"}");
	assert_true(wait_status(f, o.key, SRV_ST_TERMINATED, 20000));
	assert_int_equal(live_in_sim(path), 0);
	assert_true(has_event(f, o.key, "instance.terminated", SRV_EVENT_INFO,
	                      "GetInstance reports TERMINATED (after the termination.unconfirmed warning)"));
	assert_int_equal(srv_store_instance_get(f->st, o.key, &in), 0);
	assert_false(in->termination_unconfirmed);
	srv_instance_free(in);
	free(path);
}

/* A machine droverd asked to terminate that its cloud then forgets (NOT_FOUND): that is its end. */
static void test_terminate_not_found_confirms(void **state)
{
	struct fx *f = *state;
	add_backend(f, "n", "sim", "{\"state_file\": \"%s/n.json\", \"terminated_retention_s\": 0}");
	srv_engine_start(f->eng);
	struct inst_out o = {0};
	create_h100(f, "forgotten", &o);
	struct srv_instance *in;
	assert_int_equal(srv_engine_terminate(f->eng, o.key, &in), 0);
	srv_instance_free(in);
	assert_true(wait_status(f, o.key, SRV_ST_TERMINATED, 10000));
	assert_true(
	    has_event(f, o.key, "instance.terminated", SRV_EVENT_INFO, "GetInstance answers NOT_FOUND"));
}

/* A terminating row as a driver that answered a create without a machine id leaves it. */
static void put_terminating_without_id(struct fx *f, const char *id, const char *backend)
{
	struct srv_instance in = {.id = (char *)id,
	                          .project = "p",
	                          .backend = (char *)backend,
	                          .backend_type = "sim",
	                          .name = (char *)id,
	                          .status = SRV_ST_TERMINATING,
	                          .idempotency_key = (char *)id,
	                          .next_check_at = srv_now_ms()};
	assert_int_equal(srv_store_instance_put(f->st, &in), 0);
}

/*
 * A terminating row with no machine id is looked for by its tags: a machine
 * listed with them is then terminated by its id and observed gone; a row
 * whose tags list nothing is terminated by that listing. Never "terminated"
 * with no look at all.
 */
static void test_terminate_without_machine_id(void **state)
{
	struct fx *f = *state;
	add_backend(f, "t", "sim", "{\"state_file\": \"%s/t.json\"}");
	const char *kv[] = {"drover-server", "s-test", "drover-instance", "i-noid"};
	make_machine(f, "t", "noid", kv, 2);
	char *path = tu_join(f->dir, "t.json");
	assert_int_equal(live_in_sim(path), 1);
	put_terminating_without_id(f, "i-noid", "t");
	put_terminating_without_id(f, "i-nothing", "t");
	srv_engine_start(f->eng);
	assert_true(wait_status(f, "i-noid", SRV_ST_TERMINATED, 10000));
	assert_true(wait_status(f, "i-nothing", SRV_ST_TERMINATED, 10000));
	assert_int_equal(live_in_sim(path), 0);
	assert_true(has_event(f, "i-noid", "instance.found_by_tag", SRV_EVENT_INFO, "terminating it"));
	assert_true(
	    has_event(f, "i-noid", "instance.terminated", SRV_EVENT_INFO, "GetInstance reports TERMINATED"));
	assert_true(has_event(f, "i-nothing", "instance.terminated", SRV_EVENT_INFO,
	                      "ListInstances by its tags no longer lists it"));
	free(path);
}

/* Sets the sim machine of drover-instance `id` alive again in its state file, under the sim's lock. */
static void revive_in_sim(const char *path, const char *id)
{
	char lock[600], tmp[600];
	snprintf(lock, sizeof(lock), "%s.lock", path);
	snprintf(tmp, sizeof(tmp), "%s.new", path);
	int fd = open(lock, O_RDWR | O_CREAT, 0600);
	assert_true(fd >= 0);
	assert_int_equal(flock(fd, LOCK_EX), 0);
	json_t *j = json_load_file(path, 0, NULL);
	assert_non_null(j);
	size_t idx, hits = 0;
	json_t *v;
	json_array_foreach(json_object_get(j, "instances"), idx, v)
	{
		const char *tag =
		    json_string_value(json_object_get(json_object_get(v, "tags"), "drover-instance"));
		if (tag && strcmp(tag, id) == 0) {
			json_object_set_new(v, "terminated", json_false());
			hits++;
		}
	}
	assert_int_equal(hits, 1);
	assert_int_equal(json_dump_file(j, tmp, 0), 0);
	assert_int_equal(rename(tmp, path), 0);
	json_decref(j);
	flock(fd, LOCK_UN);
	close(fd);
}

/*
 * A machine droverd made, whose row was terminated, listed alive again (a
 * termination that failed or lied): back to terminating, and terminated
 * again once its end is observed.
 */
static void test_alive_after_termination(void **state)
{
	struct fx *f = *state;
	add_backend(f, "r", "sim", "{\"state_file\": \"%s/r.json\"}");
	srv_engine_start(f->eng);
	struct inst_out o = {0};
	create_h100(f, "phoenix", &o);
	struct srv_instance *in;
	assert_int_equal(srv_engine_terminate(f->eng, o.key, &in), 0);
	srv_instance_free(in);
	assert_true(wait_status(f, o.key, SRV_ST_TERMINATED, 10000));
	char *path = tu_join(f->dir, "r.json");
	revive_in_sim(path, o.key);
	assert_int_equal(live_in_sim(path), 1);
	/*
	 * A listing revives only rows written before it was asked for, on a
	 * millisecond clock: a scan in the very millisecond of the row's last
	 * write cannot tell which came first, and leaves the row to the next.
	 */
	usleep(3000);
	scan(f);
	assert_true(has_event(f, o.key, "instance.alive_after_termination", SRV_EVENT_WARNING,
	                      "terminating it again"));
	assert_true(wait_status(f, o.key, SRV_ST_TERMINATED, 10000));
	assert_int_equal(live_in_sim(path), 0);
	/* Terminated twice, each time on an observation. */
	assert_int_equal(count_events(f, "instance.terminated"), 2);
	free(path);
}

/*
 * Allocations fail here without a hook: a count no allocation can hold makes
 * calloc return NULL, the same path as an exhausted heap. Under ASan this
 * option makes such a request return NULL too rather than stop the test.
 */
const char *__asan_default_options(void);
const char *__asan_default_options(void)
{
	return "allocator_may_return_null=1";
}

static void test_create_out_of_memory(void **state)
{
	struct fx *f = *state;
	add_backend(f, "b", "sim", "{\"state_file\": \"%s/b.json\"}");
	const char *key = "ssh-ed25519 AAAA";
	struct inst_out o = {0};
	struct srv_create_request cr = {
	    .project = "p", .name = "oom", .ssh_keys = &key, .n_ssh_keys = SIZE_MAX / sizeof(char *)};
	srv_engine_create(f->eng, &cr, inst_cb, &o);
	assert_true(run_until(&f->loop, &o.done, 5000));
	assert_int_equal(o.code, DRV_ENOMEM);
	assert_string_equal(o.message, "out of memory");
	/* Nothing half-made stays behind: no work counted, no row written. */
	assert_int_equal(srv_engine_busy(f->eng), 0);
	struct srv_instance **list;
	size_t n;
	struct srv_instance_filter flt = {.project = "p"};
	assert_int_equal(srv_store_instance_list(f->st, &flt, &list, &n), 0);
	assert_int_equal(n, 0);
	srv_instance_list_free(list, n);

	/* The same name works once memory is there. */
	cr.ssh_keys = NULL;
	cr.n_ssh_keys = 0;
	struct inst_out o2 = {0};
	srv_engine_create(f->eng, &cr, inst_cb, &o2);
	assert_true(run_until(&f->loop, &o2.done, 10000));
	assert_int_equal(o2.code, 0);

	/* A backend config with more secrets than memory can hold. */
	struct srv_backend be = {
	    .project = "p", .name = "big", .type = "sim", .n_secrets = SIZE_MAX / sizeof(drv_secret_entry)};
	struct drv_backend_config_buf bc;
	assert_int_equal(srv_bcfg_init(&bc, &be), DRV_ENOMEM);
}

/* The hostile fixture's machines from its state file: how many, and how many are live. */
static void hostile_machines(struct fx *f, int *total, int *live)
{
	char *path = tu_join(f->dir, "hostile.state");
	FILE *fp = fopen(path, "r");
	free(path);
	*total = *live = 0;
	char line[512];
	while (fp && fgets(line, sizeof(line), fp)) {
		(*total)++;
		if (strstr(line, " live"))
			(*live)++;
	}
	if (fp)
		fclose(fp);
}

/* Creates instance `name` on backend `backend` alone, one try; waits for the answer, which must be OK. */
static void create_on(struct fx *f, const char *backend, const char *name, struct inst_out *o)
{
	const char *only[] = {backend};
	struct srv_create_request cr = {
	    .project = "p", .name = name, .max_tries = 1, .backends = only, .n_backends = 1};
	srv_engine_create(f->eng, &cr, inst_cb, o);
	assert_true(run_until(&f->loop, &o->done, 15000));
	assert_int_equal(o->code, 0);
}

/*
 * CreateInstance answered OK with data droverd cannot use (the test's
 * initial state names the fault): nothing of it is stored, the machine the
 * driver made is found by its tags and terminated, the create fails naming
 * the backend and the check, and a healthy backend beside works on.
 */
static void test_bad_create_answer(void **state)
{
	struct fx *f = *state;
	add_backend(f, "h", "hostile", "{\"project\": \"x\"}");
	add_backend(f, "s", "sim", "{\"state_file\": \"%s/s.json\"}");
	srv_engine_start(f->eng);
	const char *fault = NULL;
	for (size_t i = 0; i < f->cfg->commands[0].n_args; i++)
		if (strcmp(f->cfg->commands[0].args[i], "--fault") == 0)
			fault = f->cfg->commands[0].args[i + 1];
	struct inst_out o = {0};
	create_on(f, "h", "bad", &o);
	assert_string_equal(o.status, SRV_ST_FAILED);
	struct srv_instance *in;
	assert_int_equal(srv_store_instance_get(f->st, o.key, &in), 0);
	assert_null(in->provisioning);
	assert_non_null(strstr(in->last_error, "backend h"));
	assert_non_null(strstr(in->last_error, "failed droverd's check"));
	const char *field = strcmp(fault, "create-bad-address") == 0 ? "internal_ip" : "instance_id";
	if (!strstr(in->last_error, field))
		fail_msg("%s: last_error does not name %s: %s", fault, field, in->last_error);
	assert_non_null(strstr(in->last_error, "the machine it made was terminated"));
	srv_instance_free(in);
	/* The fixture's own state: its one machine was terminated. */
	int total, live;
	hostile_machines(f, &total, &live);
	assert_int_equal(total, 1);
	assert_int_equal(live, 0);
	assert_true(has_event(f, o.key, "instance.bad_answer", SRV_EVENT_WARNING, field));

	/* The healthy backend beside. */
	struct inst_out ok = {0};
	create_on(f, "s", "good", &ok);
	assert_true(strcmp(ok.status, SRV_ST_RUNNING) == 0 || strcmp(ok.status, SRV_ST_PROVISIONING) == 0);
	int64_t n;
	assert_int_equal(srv_store_instance_count(f->st, NULL, &n), 0);
	assert_int_equal(n, 2);
}

/*
 * The second machine's answer names the first one's id: a conflict, not a
 * second row for one machine. The first row keeps its machine; the second
 * machine is terminated.
 */
static void test_dup_create_answer(void **state)
{
	struct fx *f = *state;
	add_backend(f, "h", "hostile", "{\"project\": \"x\"}");
	srv_engine_start(f->eng);
	struct inst_out first = {0}, second = {0};
	create_on(f, "h", "first", &first);
	assert_true(strcmp(first.status, SRV_ST_RUNNING) == 0);
	create_on(f, "h", "second", &second);
	assert_string_equal(second.status, SRV_ST_FAILED);
	struct srv_instance *in;
	assert_int_equal(srv_store_instance_get(f->st, second.key, &in), 0);
	assert_null(in->provisioning);
	assert_non_null(strstr(in->last_error, first.key));
	srv_instance_free(in);
	assert_int_equal(srv_store_instance_get(f->st, first.key, &in), 0);
	assert_string_equal(in->status, SRV_ST_RUNNING);
	srv_instance_free(in);
	int total, live;
	hostile_machines(f, &total, &live);
	assert_int_equal(total, 2);
	assert_int_equal(live, 1);
}

static bool get_fault_shown(const struct srv_instance *in, const char *text)
{
	return in->last_error && strncmp(in->last_error, "GetInstance: ", 13) == 0 &&
	       strstr(in->last_error, text) != NULL;
}

/* GetInstance answers a hostname with a terminal escape: not stored, the row keeps its last good data. */
static void test_bad_get_answer(void **state)
{
	struct fx *f = *state;
	f->cfg->running_check_interval_ms = 100;
	add_backend(f, "h", "hostile", "{\"project\": \"x\"}");
	srv_engine_start(f->eng);
	struct inst_out o = {0};
	create_on(f, "h", "watched", &o);
	assert_string_equal(o.status, SRV_ST_RUNNING);
	struct srv_instance *in;
	assert_int_equal(srv_store_instance_get(f->st, o.key, &in), 0);
	unsigned char *before = malloc(in->provisioning_len);
	size_t before_len = in->provisioning_len;
	memcpy(before, in->provisioning, before_len);
	srv_instance_free(in);
	assert_true(wait_row(f, o.key, get_fault_shown, "hostname", 10000));
	assert_int_equal(srv_store_instance_get(f->st, o.key, &in), 0);
	assert_string_equal(in->status, SRV_ST_RUNNING);
	assert_int_equal(in->provisioning_len, before_len);
	assert_memory_equal(in->provisioning, before, before_len);
	assert_non_null(strstr(in->last_error, "failed droverd's check"));
	srv_instance_free(in);
	free(before);
}

/*
 * The machine of a bad answer cannot be terminated (TerminateInstance keeps
 * answering UNAVAILABLE): the outcome stays uncertain. The row stays
 * "creating" with nothing of the answer stored, the attempt is retried with
 * the same key (one machine, never two), and the create never goes on to
 * another offer while the machine may live.
 */
static void test_bad_create_answer_stuck(void **state)
{
	struct fx *f = *state;
	add_backend(f, "h", "hostile", "{\"project\": \"x\"}");
	srv_engine_start(f->eng);
	const char *only[] = {"h"};
	struct srv_create_request cr = {
	    .project = "p", .name = "stuck", .max_tries = 3, .backends = only, .n_backends = 1};
	struct inst_out o = {0};
	srv_engine_create(f->eng, &cr, inst_cb, &o);
	assert_true(run_until(&f->loop, &o.done, 20000));
	assert_int_equal(o.code, 0);
	assert_string_equal(o.status, SRV_ST_CREATING);
	struct srv_instance *in;
	assert_int_equal(srv_store_instance_get(f->st, o.key, &in), 0);
	assert_null(in->provisioning);
	assert_non_null(strstr(in->last_error, "backend h"));
	assert_non_null(strstr(in->last_error, "instance_id is empty"));
	assert_non_null(strstr(in->last_error, "not terminated yet"));
	assert_non_null(strstr(in->last_error, "UNAVAILABLE"));
	assert_non_null(in->record);
	assert_int_equal(in->record->n_attempts, 1);
	srv_instance_free(in);
	int total, live;
	hostile_machines(f, &total, &live);
	assert_int_equal(total, 1);
	assert_int_equal(live, 1);
	assert_true(has_event(f, o.key, "instance.attempt_uncertain", SRV_EVENT_WARNING,
	                      "retrying with the same key"));
}

/*
 * The answer fails the check and TerminateInstance lies at first
 * (create-empty-id-lies: OK three times while the machine stays RUNNING):
 * the attempt is not closed while the machine is listed. The row stays
 * "creating", its termination asked for and not observed, until
 * reconciliation's looks (with the termination backoff) see it gone; only
 * then does the create fail.
 */
static void test_bad_create_answer_lies(void **state)
{
	struct fx *f = *state;
	add_backend(f, "h", "hostile", "{\"project\": \"x\"}");
	srv_engine_start(f->eng);
	struct inst_out o = {0};
	create_on(f, "h", "liar", &o);
	assert_string_equal(o.status, SRV_ST_CREATING);
	struct srv_instance *in;
	assert_int_equal(srv_store_instance_get(f->st, o.key, &in), 0);
	assert_null(in->provisioning);
	assert_true(in->termination_acked_at > 0);
	assert_int_equal(in->termination_checks, 1);
	if (!strstr(in->last_error, "termination not observed yet (check 1)") ||
	    !strstr(in->last_error, "TerminateInstance answered OK, ListInstances by its tags still lists"))
		fail_msg("last_error: %s", in->last_error);
	assert_true(in->next_check_at > srv_now_ms());
	srv_instance_free(in);
	int total, live;
	hostile_machines(f, &total, &live);
	assert_int_equal(total, 1);
	assert_int_equal(live, 1);

	/* Reconciliation looks again until the machine is gone, and the row is never closed before. */
	int64_t end = srv_now_ms() + 20000;
	bool closed = false;
	while (!closed && srv_now_ms() < end) {
		uv_run(&f->loop, UV_RUN_NOWAIT);
		usleep(1000);
		assert_int_equal(srv_store_instance_get(f->st, o.key, &in), 0);
		closed = strcmp(in->status, SRV_ST_CREATING) != 0;
		hostile_machines(f, &total, &live);
		if (closed && live != 0)
			fail_msg("the row is %s while its machine lives: %s", in->status, in->last_error);
		if (closed) {
			assert_string_equal(in->status, SRV_ST_FAILED);
			assert_non_null(
			    strstr(in->last_error, "ListInstances by its tags no longer lists it"));
			assert_int_equal(in->termination_acked_at, 0);
		}
		srv_instance_free(in);
	}
	assert_true(closed);
	assert_int_equal(total, 1);
	assert_true(has_event(f, o.key, "instance.attempt_uncertain", SRV_EVENT_WARNING,
	                      "TerminateInstance answered OK, ListInstances by its tags still lists i-1"));
}

int main(void)
{
	signal(SIGPIPE, SIG_IGN);
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_offers_merge_filter_sort, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_create_fallback_and_terminate, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_termination_failing_is_kept, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_resume_creating_makes_one_machine, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_terminate_kept_across_restart, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_terminate_during_create, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_terminate_during_refused_create, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_terminate_during_offers, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_orphan_adopted, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_orphan_caps, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_terminate_lie_unconfirmed, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_terminate_not_found_confirms, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_terminate_without_machine_id, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_alive_after_termination, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_gone_while_provisioning, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_gone_while_running, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_running_not_checked, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_running_checks_scheduled_at_start, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_create_out_of_memory, setup, teardown),
	    cmocka_unit_test_prestate_setup_teardown(test_bad_create_answer, setup, teardown,
	                                             (void *)"create-empty-id"),
	    cmocka_unit_test_prestate_setup_teardown(test_bad_create_answer, setup, teardown,
	                                             (void *)"create-huge-id"),
	    cmocka_unit_test_prestate_setup_teardown(test_bad_create_answer, setup, teardown,
	                                             (void *)"create-control-chars"),
	    cmocka_unit_test_prestate_setup_teardown(test_bad_create_answer, setup, teardown,
	                                             (void *)"create-bad-address"),
	    cmocka_unit_test_prestate_setup_teardown(test_bad_create_answer_stuck, setup, teardown,
	                                             (void *)"create-empty-id-stuck"),
	    cmocka_unit_test_prestate_setup_teardown(test_bad_create_answer_lies, setup, teardown,
	                                             (void *)"create-empty-id-lies"),
	    cmocka_unit_test_prestate_setup_teardown(test_dup_create_answer, setup, teardown,
	                                             (void *)"create-dup-id"),
	    cmocka_unit_test_prestate_setup_teardown(test_bad_get_answer, setup, teardown,
	                                             (void *)"get-bad-fields"),
	};
	return cmocka_run_group_tests_name("server_engine", tests, NULL, NULL);
}
