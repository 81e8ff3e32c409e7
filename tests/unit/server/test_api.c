/*
 * srv_api end to end in one process: the loop (store, supervisor, engine,
 * API) runs on its own thread as in droverd; the test calls the API over a
 * real unix socket with the SDK's generic client, as the CLI does.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <uv.h>

#include "drover/api/v1/api.pb-c.h"
#include "drover/rpc.h"
#include "srv_api.h"
#include "srv_config.h"
#include "srv_engine.h"
#include "srv_secrets.h"
#include "srv_store.h"
#include "srv_supervisor.h"
#include "testutil.h"

static const ProtobufCServiceDescriptor *svc = &drover__api__v1__drover__descriptor;

struct fx {
	char *dir;
	char *sock;
	char token[128];
	char auth[160];
	uv_loop_t loop;
	uv_async_t stop;
	pthread_t th;
	struct srv_config *cfg;
	struct srv_secrets *sec;
	struct srv_store *st;
	struct srv_supervisor *sup;
	struct srv_engine *eng;
	struct srv_api *api;
	struct drv_rpc_channel *ch;
};

static void walk_close(uv_handle_t *h, void *arg)
{
	if (!uv_is_closing(h))
		uv_close(h, NULL);
}

static void stop_cb(uv_async_t *a)
{
	struct fx *f = a->data;
	srv_engine_stop(f->eng);
	srv_supervisor_stop(f->sup);
	srv_api_stop(f->api);
	uv_walk(&f->loop, walk_close, NULL);
}

static void *loop_thread(void *arg)
{
	struct fx *f = arg;
	uv_run(&f->loop, UV_RUN_DEFAULT);
	return NULL;
}

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));
	char err[1024];
	f->dir = tu_tempdir();
	f->sock = tu_join(f->dir, "api.sock");
	char *key = tu_join(f->dir, "secret.key"), *db = tu_join(f->dir, "drover.db"),
	     *tok = tu_join(f->dir, "admin.token");
	assert_int_equal(srv_secrets_open(key, &f->sec, err, sizeof(err)), 0);
	assert_int_equal(srv_store_open(db, f->sec, &f->st, err, sizeof(err)), 0);
	assert_int_equal(srv_api_load_token(tok, f->token, sizeof(f->token), err, sizeof(err)), 0);
	struct stat stt;
	assert_int_equal(stat(tok, &stt), 0);
	assert_int_equal(stt.st_mode & 0777, 0600);
	assert_int_equal(strlen(f->token), 64);
	/* A second start reads the same token. */
	char again[128];
	assert_int_equal(srv_api_load_token(tok, again, sizeof(again), err, sizeof(err)), 0);
	assert_string_equal(again, f->token);
	free(key);
	free(db);
	free(tok);
	snprintf(f->auth, sizeof(f->auth), "Bearer %s", f->token);
	f->cfg = tu_config_new();
	f->cfg->reconcile_interval_ms = 100;
	f->cfg->shutdown_grace_ms = 1000;
	uv_loop_init(&f->loop);
	assert_int_equal(srv_supervisor_new(&f->loop, f->cfg, &f->sup, err, sizeof(err)), 0);
	assert_int_equal(srv_engine_new(&f->loop, f->st, f->sup, f->cfg, "s-api-test", &f->eng), 0);
	struct srv_api_opts ao = {.loop = &f->loop,
	                          .store = f->st,
	                          .sup = f->sup,
	                          .engine = f->eng,
	                          .cfg = f->cfg,
	                          .unix_path = f->sock,
	                          .token = f->token};
	if (srv_api_start(&ao, &f->api, err, sizeof(err)) != 0)
		fail_msg("%s", err);
	assert_int_equal(stat(f->sock, &stt), 0);
	assert_int_equal(stt.st_mode & 0777, 0600);
	srv_engine_start(f->eng);
	uv_async_init(&f->loop, &f->stop, stop_cb);
	f->stop.data = f;
	pthread_create(&f->th, NULL, loop_thread, f);
	char target[4200];
	snprintf(target, sizeof(target), "unix:%s", f->sock);
	struct drv_rpc_channel_opts co = {.target = target};
	assert_int_equal(drv_rpc_channel_new(&co, &f->ch, err, sizeof(err)), 0);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;
	drv_rpc_channel_free(f->ch);
	uv_async_send(&f->stop);
	pthread_join(f->th, NULL);
	uv_run(&f->loop, UV_RUN_DEFAULT);
	srv_api_free(f->api);
	srv_supervisor_free(f->sup);
	srv_engine_free(f->eng);
	uv_loop_close(&f->loop);
	srv_store_close(f->st);
	srv_secrets_free(f->sec);
	srv_config_free(f->cfg);
	tu_rmrf(f->dir);
	free(f->dir);
	free(f->sock);
	free(f);
	return 0;
}

/* One call; *resp must be freed by the caller when 0 is returned. */
static int call(struct fx *f, const char *method, const ProtobufCMessage *req, ProtobufCMessage **resp,
                struct drv_status *st, const char *auth)
{
	struct drv_rpc_metadata md[] = {{"authorization", auth}, {NULL, NULL}};
	return drv_rpc_call(f->ch, svc, (unsigned)drv_rpc_method_index(svc, method), req, resp, 20000,
	                    auth ? md : NULL, st);
}

#define CALL(f, m, req, resp, st) call((f), (m), &(req).base, (ProtobufCMessage **)(resp), (st), (f)->auth)

static void test_auth(void **state)
{
	struct fx *f = *state;
	Drover__Api__V1__ListProjectsRequest req = DROVER__API__V1__LIST_PROJECTS_REQUEST__INIT;
	ProtobufCMessage *resp = NULL;
	struct drv_status st;
	assert_int_equal(call(f, "ListProjects", &req.base, &resp, &st, NULL), DRV_EUNAUTHENTICATED);
	assert_int_equal(call(f, "ListProjects", &req.base, &resp, &st, "Bearer nope"), DRV_EUNAUTHENTICATED);
	/* The message never echoes a token. */
	assert_null(strstr(st.message, f->token));
	char almost[160];
	snprintf(almost, sizeof(almost), "Bearer %.*sX", 63, f->token);
	assert_int_equal(call(f, "ListProjects", &req.base, &resp, &st, almost), DRV_EUNAUTHENTICATED);
	assert_int_equal(call(f, "ListProjects", &req.base, &resp, &st, f->auth), 0);
	drv_response_free(resp);
}

static void create_project(struct fx *f, const char *name, int expect)
{
	Drover__Api__V1__CreateProjectRequest req = DROVER__API__V1__CREATE_PROJECT_REQUEST__INIT;
	Drover__Api__V1__CreateProjectResponse *resp = NULL;
	struct drv_status st;
	req.name = (char *)name;
	int rc = CALL(f, "CreateProject", req, &resp, &st);
	if (rc != expect)
		fail_msg("CreateProject %s: %d %s", name, rc, st.message);
	if (resp)
		drv_response_free(&resp->base);
}

static void test_backends_offers_instances(void **state)
{
	struct fx *f = *state;
	struct drv_status st;
	char cfg[1200];
	create_project(f, "Bad Name", DRV_EINVAL);
	create_project(f, "main", 0);
	create_project(f, "main", DRV_EEXIST);

	/* A bad config: the driver's diagnostic with its field path, nothing added. */
	Drover__Api__V1__AddBackendRequest add = DROVER__API__V1__ADD_BACKEND_REQUEST__INIT;
	Drover__Api__V1__AddBackendResponse *addr = NULL;
	add.project = "main";
	add.name = "sim1";
	add.type = "sim";
	add.config_json = "{\"capacity\": \"lots\"}";
	assert_int_equal(CALL(f, "AddBackend", add, &addr, &st), DRV_EINVAL);
	assert_non_null(strstr(st.message, "/capacity"));
	add.type = "no-such-type";
	assert_int_equal(CALL(f, "AddBackend", add, &addr, &st), DRV_ENOTFOUND);
	assert_non_null(strstr(st.message, "no-such-type"));

	/* A good one, with a secret that must never come back. */
	Drover__Api__V1__AddBackendRequest__SecretsEntry se =
	    DROVER__API__V1__ADD_BACKEND_REQUEST__SECRETS_ENTRY__INIT;
	Drover__Api__V1__AddBackendRequest__SecretsEntry *sep = &se;
	se.key = "api_key";
	se.value = "super-secret-value-31337";
	snprintf(cfg, sizeof(cfg), "{\"capacity\": 2, \"state_file\": \"%s/sim1.json\"}", f->dir);
	add.type = "sim";
	add.config_json = cfg;
	add.n_secrets = 1;
	add.secrets = &sep;
	if (CALL(f, "AddBackend", add, &addr, &st) != 0)
		fail_msg("AddBackend: %s", st.message);
	assert_true(addr->valid);
	assert_string_equal(addr->backend->type, "sim");
	assert_int_equal(addr->backend->n_secret_names, 1);
	assert_true(addr->backend->n_features > 0);
	drv_response_free(&addr->base);
	assert_int_equal(CALL(f, "AddBackend", add, &addr, &st), DRV_EEXIST);

	Drover__Api__V1__ListBackendsRequest lb = DROVER__API__V1__LIST_BACKENDS_REQUEST__INIT;
	Drover__Api__V1__ListBackendsResponse *lbr = NULL;
	lb.project = "main";
	assert_int_equal(CALL(f, "ListBackends", lb, &lbr, &st), 0);
	assert_int_equal(lbr->n_backends, 1);
	assert_string_equal(lbr->backends[0]->secret_names[0], "api_key");
	size_t len = protobuf_c_message_get_packed_size(&lbr->base);
	unsigned char *buf = malloc(len);
	protobuf_c_message_pack(&lbr->base, buf);
	assert_false(tu_contains(buf, len, "super-secret-value-31337", 24));
	free(buf);
	drv_response_free(&lbr->base);

	/* Offers: sorted by price; a limit keeps the cheapest; the total says how many matched. */
	Drover__Api__V1__GetOffersRequest go = DROVER__API__V1__GET_OFFERS_REQUEST__INIT;
	Drover__Api__V1__GetOffersResponse *gor = NULL;
	go.project = "main";
	go.limit = 5;
	assert_int_equal(CALL(f, "GetOffers", go, &gor, &st), 0);
	assert_int_equal(gor->n_offers, 5);
	assert_true(gor->total_offers > 5);
	for (size_t i = 1; i < gor->n_offers; i++)
		assert_true(gor->offers[i - 1]->offer->price_per_hour <=
		            gor->offers[i]->offer->price_per_hour);
	assert_string_equal(gor->backends[0]->code, "OK");
	drv_response_free(&gor->base);

	/*
	 * Pages: the first 23 offers fetched 5 at a time (five pages, the last
	 * cut by the limit) are the first 23 of one answer, in order, and the
	 * last page has no next token.
	 */
	go.limit = 23;
	Drover__Api__V1__GetOffersResponse *whole = NULL;
	assert_int_equal(CALL(f, "GetOffers", go, &whole, &st), 0);
	assert_int_equal(whole->n_offers, 23);
	assert_string_equal(whole->next_page_token, "");
	go.page_size = 5;
	char token[64] = "";
	size_t got = 0, pages = 0;
	do {
		go.page_token = token;
		assert_int_equal(CALL(f, "GetOffers", go, &gor, &st), 0);
		assert_true(gor->n_offers <= 5);
		for (size_t i = 0; i < gor->n_offers; i++, got++) {
			assert_true(got < whole->n_offers);
			assert_string_equal(gor->offers[i]->offer->instance_type,
			                    whole->offers[got]->offer->instance_type);
			assert_string_equal(gor->offers[i]->offer->region, whole->offers[got]->offer->region);
		}
		snprintf(token, sizeof(token), "%s", gor->next_page_token);
		pages++;
		drv_response_free(&gor->base);
	} while (token[0]);
	assert_int_equal(got, 23);
	assert_int_equal(pages, 5);
	drv_response_free(&whole->base);
	go.page_token = "x17";
	assert_int_equal(CALL(f, "GetOffers", go, &gor, &st), DRV_EINVAL);
	assert_non_null(strstr(st.message, "page_token"));
	go.page_token = "";
	go.page_size = 0;
	go.limit = 0;
	char *bad_feature = "TELEPORT";
	go.n_required_features = 1;
	go.required_features = &bad_feature;
	assert_int_equal(CALL(f, "GetOffers", go, &gor, &st), DRV_EINVAL);
	assert_non_null(strstr(st.message, "TELEPORT"));
	go.n_required_features = 0;
	go.project = "nope";
	assert_int_equal(CALL(f, "GetOffers", go, &gor, &st), DRV_ENOTFOUND);

	/* An instance: created, found by name, refused removal of its backend, terminated. */
	Drover__Api__V1__CreateInstanceRequest ci = DROVER__API__V1__CREATE_INSTANCE_REQUEST__INIT;
	Drover__Api__V1__CreateInstanceResponse *cir = NULL;
	ci.project = "main";
	ci.name = "web";
	ci.idempotency_key = "req-1";
	assert_int_equal(CALL(f, "CreateInstance", ci, &cir, &st), 0);
	assert_int_equal(cir->instance->status, DROVER__API__V1__INSTANCE_STATUS__INSTANCE_STATUS_RUNNING);
	assert_int_equal(cir->instance->n_attempts, 1);
	char id[64];
	snprintf(id, sizeof(id), "%s", cir->instance->id);
	drv_response_free(&cir->base);
	/*
	 * max_tries is capped as in the config (1 to 1000; 0: the server's). The
	 * CLI caps it, but the API took any uint32: UINT32_MAX sized the
	 * candidate array with max_tries + 1 == 0 and wrote past it.
	 */
	Drover__Api__V1__CreateInstanceRequest big = DROVER__API__V1__CREATE_INSTANCE_REQUEST__INIT;
	big.project = "main";
	big.name = "many-tries";
	big.max_tries = UINT32_MAX;
	assert_int_equal(CALL(f, "CreateInstance", big, &cir, &st), DRV_EINVAL);
	assert_non_null(strstr(st.message, "max_tries"));
	big.max_tries = 1001;
	assert_int_equal(CALL(f, "CreateInstance", big, &cir, &st), DRV_EINVAL);
	/* The same request key again: the same instance, no second machine. */
	assert_int_equal(CALL(f, "CreateInstance", ci, &cir, &st), 0);
	assert_string_equal(cir->instance->id, id);
	drv_response_free(&cir->base);
	/*
	 * A name that is another instance's id: by id and project, the id is
	 * tried first, as api.proto says (the name was, and answered the twin).
	 */
	Drover__Api__V1__CreateInstanceRequest twin = DROVER__API__V1__CREATE_INSTANCE_REQUEST__INIT;
	twin.project = "main";
	twin.name = id;
	assert_int_equal(CALL(f, "CreateInstance", twin, &cir, &st), 0);
	char twin_id[64];
	snprintf(twin_id, sizeof(twin_id), "%s", cir->instance->id);
	drv_response_free(&cir->base);
	Drover__Api__V1__GetInstanceRequest by = DROVER__API__V1__GET_INSTANCE_REQUEST__INIT;
	Drover__Api__V1__GetInstanceResponse *byr = NULL;
	by.id = id;
	by.project = "main";
	assert_int_equal(CALL(f, "GetInstance", by, &byr, &st), 0);
	assert_string_equal(byr->instance->name, "web");
	drv_response_free(&byr->base);

	Drover__Api__V1__RemoveBackendRequest rb = DROVER__API__V1__REMOVE_BACKEND_REQUEST__INIT;
	Drover__Api__V1__RemoveBackendResponse *rbr = NULL;
	rb.project = "main";
	rb.name = "sim1";
	assert_int_equal(CALL(f, "RemoveBackend", rb, &rbr, &st), DRV_EPRECONDITION);
	assert_non_null(strstr(st.message, id));

	Drover__Api__V1__TerminateInstanceRequest ti = DROVER__API__V1__TERMINATE_INSTANCE_REQUEST__INIT;
	Drover__Api__V1__TerminateInstanceResponse *tir = NULL;
	ti.id = "web";
	ti.project = "main";
	assert_int_equal(CALL(f, "TerminateInstance", ti, &tir, &st), 0);
	assert_int_equal(tir->instance->status,
	                 DROVER__API__V1__INSTANCE_STATUS__INSTANCE_STATUS_TERMINATING);
	drv_response_free(&tir->base);
	Drover__Api__V1__GetInstanceRequest gi = DROVER__API__V1__GET_INSTANCE_REQUEST__INIT;
	Drover__Api__V1__GetInstanceResponse *gir = NULL;
	gi.id = id;
	bool terminated = false;
	for (int i = 0; i < 200 && !terminated; i++) {
		assert_int_equal(CALL(f, "GetInstance", gi, &gir, &st), 0);
		terminated =
		    gir->instance->status == DROVER__API__V1__INSTANCE_STATUS__INSTANCE_STATUS_TERMINATED;
		if (terminated)
			assert_true(gir->instance->terminated_unix_ms > 0);
		drv_response_free(&gir->base);
		usleep(20000);
	}
	assert_true(terminated);
	/* The twin goes too, so that its backend can be removed below. */
	ti.id = twin_id;
	assert_int_equal(CALL(f, "TerminateInstance", ti, &tir, &st), 0);
	assert_string_equal(tir->instance->name, id);
	drv_response_free(&tir->base);
	gi.id = twin_id;
	terminated = false;
	for (int i = 0; i < 200 && !terminated; i++) {
		assert_int_equal(CALL(f, "GetInstance", gi, &gir, &st), 0);
		terminated =
		    gir->instance->status == DROVER__API__V1__INSTANCE_STATUS__INSTANCE_STATUS_TERMINATED;
		drv_response_free(&gir->base);
		usleep(20000);
	}
	assert_true(terminated);
	gi.id = "ghost";
	assert_int_equal(CALL(f, "GetInstance", gi, &gir, &st), DRV_ENOTFOUND);

	assert_int_equal(CALL(f, "RemoveBackend", rb, &rbr, &st), 0);
	drv_response_free(&rbr->base);

	Drover__Api__V1__ListEventsRequest le = DROVER__API__V1__LIST_EVENTS_REQUEST__INIT;
	Drover__Api__V1__ListEventsResponse *ler = NULL;
	le.instance_id = id;
	assert_int_equal(CALL(f, "ListEvents", le, &ler, &st), 0);
	assert_true(ler->n_events >= 3);
	assert_string_equal(ler->events[ler->n_events - 1]->kind, "instance.terminated");
	drv_response_free(&ler->base);

	Drover__Api__V1__ListDriversRequest ld = DROVER__API__V1__LIST_DRIVERS_REQUEST__INIT;
	Drover__Api__V1__ListDriversResponse *ldr = NULL;
	assert_int_equal(CALL(f, "ListDrivers", ld, &ldr, &st), 0);
	bool sim_ready = false;
	for (size_t i = 0; i < ldr->n_drivers; i++)
		if (strcmp(ldr->drivers[i]->type, "sim") == 0)
			sim_ready =
			    ldr->drivers[i]->state == DROVER__API__V1__DRIVER_STATE__DRIVER_STATE_READY &&
			    ldr->drivers[i]->pid > 0;
	assert_true(sim_ready);
	drv_response_free(&ldr->base);
}

/* A second handle on the test's store (WAL allows it), for rows the API only reads. */
static struct srv_store *side_store(struct fx *f, struct srv_secrets **sec)
{
	char err[1024];
	char *key = tu_join(f->dir, "secret.key"), *db = tu_join(f->dir, "drover.db");
	struct srv_store *st = NULL;
	assert_int_equal(srv_secrets_open(key, sec, err, sizeof(err)), 0);
	if (srv_store_open(db, *sec, &st, err, sizeof(err)) != 0)
		fail_msg("%s", err);
	free(key);
	free(db);
	return st;
}

/* A listed page's instances appended to ids (n so far); returns the next token (malloc'ed). */
static char *list_page(struct fx *f, const char *token, uint32_t page_size, char **ids, size_t *n,
                       size_t *packed)
{
	Drover__Api__V1__ListInstancesRequest req = DROVER__API__V1__LIST_INSTANCES_REQUEST__INIT;
	Drover__Api__V1__ListInstancesResponse *resp = NULL;
	struct drv_status st;
	req.project = "main";
	req.page_size = page_size;
	req.page_token = (char *)token;
	if (CALL(f, "ListInstances", req, &resp, &st) != 0)
		fail_msg("ListInstances: %s", st.message);
	*packed = protobuf_c_message_get_packed_size(&resp->base);
	for (size_t i = 0; i < resp->n_instances; i++)
		ids[(*n)++] = strdup(resp->instances[i]->id);
	char *next = strdup(resp->next_page_token);
	drv_response_free(&resp->base);
	return next;
}

/*
 * 70 rows holding 1 MiB provider ids (as stored before droverd checked
 * CreateInstance answers) came to 70 MiB in one answer, past gRPC's 64 MiB:
 * every listing failed. Pages end before 4 MiB, follow each other without
 * a gap or a repeat while rows are added, and the same holds for events.
 */
static void test_paging(void **state)
{
	struct fx *f = *state;
	create_project(f, "main", 0);
	struct srv_secrets *sec;
	struct srv_store *st = side_store(f, &sec);
	size_t big = 1u << 20;
	char *huge = malloc(big + 1);
	memset(huge, 'x', big);
	huge[big] = '\0';
	drv_provisioning_data pd = DROVER__COMPUTE__V1__PROVISIONING_DATA__INIT;
	pd.instance_id = huge;
	size_t plen = protobuf_c_message_get_packed_size(&pd.base);
	unsigned char *pbuf = malloc(plen);
	protobuf_c_message_pack(&pd.base, pbuf);
	enum { BIG = 70, SMALL = 230 };
	char id[64], name[64];
	for (int i = 0; i < BIG + SMALL; i++) {
		snprintf(id, sizeof(id), "i-page%04d", i);
		snprintf(name, sizeof(name), "n%d", i);
		struct srv_instance in = {.id = id,
		                          .project = "main",
		                          .backend = "b",
		                          .backend_type = "sim",
		                          .name = name,
		                          .status = SRV_ST_RUNNING,
		                          .idempotency_key = id,
		                          /* Ten share a creation time: the id orders them. */
		                          .created_at = 1000000 + i / 10,
		                          .provisioning = i < BIG ? pbuf : NULL,
		                          .provisioning_len = i < BIG ? plen : 0};
		assert_int_equal(srv_store_instance_put(st, &in), 0);
	}
	char **ids = calloc(2 * (BIG + SMALL) + 10, sizeof(char *));
	size_t n = 0, packed = 0, pages = 0;
	char *tok = strdup("");
	do {
		char *next = list_page(f, tok, 0, ids, &n, &packed);
		assert_true(packed < (4u << 20) + (2u << 20));
		pages++;
		/* A row added between pages comes at the end: nothing shifts. */
		if (pages == 2) {
			struct srv_instance in = {.id = "i-page-late",
			                          .project = "main",
			                          .backend = "b",
			                          .backend_type = "sim",
			                          .name = "late",
			                          .status = SRV_ST_RUNNING,
			                          .idempotency_key = "late",
			                          .created_at = 2000000};
			assert_int_equal(srv_store_instance_put(st, &in), 0);
		}
		free(tok);
		tok = next;
	} while (tok[0] && pages < 1000);
	free(tok);
	/* 3 of the 1 MiB rows a page at most, then the small ones by 100. */
	assert_true(pages >= BIG / 3 + 3);
	assert_int_equal(n, BIG + SMALL + 1);
	for (int i = 0; i < BIG + SMALL; i++) {
		snprintf(id, sizeof(id), "i-page%04d", i);
		assert_string_equal(ids[i], id);
	}
	assert_string_equal(ids[BIG + SMALL], "i-page-late");
	for (size_t i = 0; i < n; i++)
		free(ids[i]);
	n = 0;
	/* Pages of 7: the count bound. */
	tok = strdup("");
	pages = 0;
	do {
		size_t before = n;
		char *next = list_page(f, tok, 7, ids, &n, &packed);
		assert_true(n - before <= 7);
		pages++;
		free(tok);
		tok = next;
	} while (tok[0] && pages < 1000);
	free(tok);
	assert_int_equal(n, BIG + SMALL + 1);
	for (size_t i = 0; i < n; i++)
		free(ids[i]);
	free(ids);

	/* A token this server did not make is refused, naming the field. */
	Drover__Api__V1__ListInstancesRequest lr = DROVER__API__V1__LIST_INSTANCES_REQUEST__INIT;
	Drover__Api__V1__ListInstancesResponse *lresp = NULL;
	struct drv_status status;
	lr.page_token = "zz";
	assert_int_equal(CALL(f, "ListInstances", lr, &lresp, &status), DRV_EINVAL);
	assert_non_null(strstr(status.message, "page_token"));

	/* Events: the latest 250 of 400, by pages of 40, while more are added. */
	for (int i = 0; i < 400; i++) {
		char msg[32];
		snprintf(msg, sizeof(msg), "m%d", i);
		struct srv_event ev = {.project = "main", .kind = "test.paging", .message = msg};
		assert_int_equal(srv_store_event_add(st, &ev), 0);
	}
	Drover__Api__V1__ListEventsRequest le = DROVER__API__V1__LIST_EVENTS_REQUEST__INIT;
	le.project = "main";
	le.limit = 250;
	le.page_size = 40;
	char *etok = strdup("");
	size_t got = 0;
	pages = 0;
	uint64_t prev = 0;
	do {
		Drover__Api__V1__ListEventsResponse *er = NULL;
		le.page_token = etok;
		assert_int_equal(CALL(f, "ListEvents", le, &er, &status), 0);
		assert_true(er->n_events <= 40);
		for (size_t i = 0; i < er->n_events; i++) {
			assert_true(er->events[i]->id > prev);
			prev = er->events[i]->id;
			char want[32];
			snprintf(want, sizeof(want), "m%zu", 150 + got);
			assert_string_equal(er->events[i]->message, want);
			got++;
		}
		free(etok);
		etok = strdup(er->next_page_token);
		drv_response_free(&er->base);
		if (++pages == 2) {
			struct srv_event ev = {.project = "main", .kind = "test.paging", .message = "late"};
			assert_int_equal(srv_store_event_add(st, &ev), 0);
		}
	} while (etok[0] && pages < 100);
	free(etok);
	assert_int_equal(got, 250);
	assert_int_equal(pages, 7);
	free(pbuf);
	free(huge);
	srv_store_close(st);
	srv_secrets_free(sec);
}

int main(void)
{
	signal(SIGPIPE, SIG_IGN);
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_auth, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_backends_offers_instances, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_paging, setup, teardown),
	};
	return cmocka_run_group_tests_name("server_api", tests, NULL, NULL);
}
