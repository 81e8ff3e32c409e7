/*
 * The SDK's out-of-memory promise (alloc.c): for every N, failing the N-th
 * allocation of the SDK along a path leaves no crash, no leak (the ASan build
 * runs this too) and no hang, and the caller sees DRV_ENOMEM, INTERNAL or
 * another clean error. N grows until one run of the path completes with no
 * failure injected, so every allocation of the path has failed once.
 *
 * The serve path runs a driver in this process, on a real gRPC server over a
 * unix socket, and calls it through the SDK's client on the test's thread;
 * only allocations on other threads (the server's) are counted and failed,
 * so the calls that report the failures are themselves left alone. After
 * each injected failure every call is made again and must succeed: a failure
 * must not leave the server broken. The host path spawns a real driver
 * process (this test binary, re-executed as the driver above) and counts
 * every allocation of this process.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>
#include <jansson.h>

#include "alloc.h"
#include "async_result.h"
#include "drover/host.h"
#include "drover/rpc.h"
#include "drv_internal.h"
#include "grpc/health/v1/health.pb-c.h"

#define CALL_MS 10000
#define N_OFFERS 2000

/* ---- the hook: fail the N-th allocation ---- */

static struct {
	atomic_long count;
	atomic_long fail_at;
	atomic_bool injected;
	atomic_bool others_only; /* count only threads other than `self` */
	pthread_t self;
} F;

static bool fail_nth(void *ud, size_t size)
{
	(void)ud;
	(void)size;
	if (atomic_load(&F.others_only) && pthread_equal(pthread_self(), F.self))
		return false;
	if (atomic_fetch_add(&F.count, 1) + 1 != atomic_load(&F.fail_at))
		return false;
	atomic_store(&F.injected, true);
	return true;
}

static void arm(long n, bool others_only)
{
	atomic_store(&F.count, 0);
	atomic_store(&F.fail_at, n);
	atomic_store(&F.injected, false);
	atomic_store(&F.others_only, others_only);
	F.self = pthread_self();
	drv__alloc_set_hook(fail_nth, NULL);
}

static void disarm(void)
{
	drv__alloc_set_hook(NULL, NULL);
}

static double now_ms(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec * 1e3 + (double)t.tv_nsec / 1e6;
}

/*
 * What a caller may see when memory ran out: DRV_ENOMEM where it ran out on
 * the caller's side, INTERNAL (DRV_ENOMEM's status on the wire) where it ran
 * out in the driver. Which side fails is set by the test (F.others_only).
 */
static bool clean_failure(int code)
{
	return code == (atomic_load(&F.others_only) ? DRV_EINTERNAL : DRV_ENOMEM);
}

/* ---- a driver whose handlers check every allocation, as drivers must ---- */

static int get_offers(struct drv_call *call, const drv_get_offers_request *req, drv_get_offers_response *resp)
{
	int64_t n = drv_call_config_int(call, "offers", N_OFFERS);
	resp->offers = drv_call_ptrs(call, (size_t)n);
	if (!resp->offers)
		return DRV_ENOMEM;
	for (int64_t i = 0; i < n; i++) {
		drv_offer *o = drv_new(call, offer);
		if (!o || !(o->resources = drv_new(call, resources)) ||
		    !(o->instance_type = drv_call_printf(call, "type-%lld", (long long)i)))
			return DRV_ENOMEM;
		o->backend_type = "atest";
		o->region = "r1";
		o->price_per_hour = 0.01 * (double)(i + 1);
		o->availability = DROVER__COMPUTE__V1__AVAILABILITY__AVAILABILITY_AVAILABLE;
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
	resp->data = drv_new(call, provisioning_data);
	if (!resp->data ||
	    !(resp->data->instance_id = drv_call_printf(call, "i-%s", req->instance->idempotency_key)))
		return DRV_ENOMEM;
	resp->data->state = DROVER__COMPUTE__V1__INSTANCE_STATE__INSTANCE_STATE_PROVISIONING;
	return 0;
}

static int get_instance(struct drv_call *call, const drv_get_instance_request *req,
                        drv_get_instance_response *resp)
{
	resp->data = drv_new(call, provisioning_data);
	if (!resp->data || !(resp->data->instance_id = drv_call_strdup(call, req->instance_id)))
		return DRV_ENOMEM;
	resp->data->state = DROVER__COMPUTE__V1__INSTANCE_STATE__INSTANCE_STATE_RUNNING;
	return 0;
}

static int terminate_instance(struct drv_call *call, const drv_terminate_instance_request *req,
                              drv_terminate_instance_response *resp)
{
	return drv_call_fail(call, DRV_EUNAVAILABLE, "provider busy terminating %s", req->instance_id);
}

static int list_instances(struct drv_call *call, const drv_list_instances_request *req,
                          drv_list_instances_response *resp)
{
	return 0;
}

static const struct drv_compute_ops ops = {
    .version = DRV_COMPUTE_OPS_V1,
    .get_offers = get_offers,
    .create_instance = create_instance,
    .get_instance = get_instance,
    .terminate_instance = terminate_instance,
    .list_instances = list_instances,
};

static void narrow(struct drv_call *call, drv_features *f)
{
	if (drv_call_config_bool(call, "no_offers", false))
		*f &= ~DRV_FEATURE_BIT(DRV_FEATURE_OFFERS);
}

static int validate(struct drv_call *call, struct drv_diags *d)
{
	if (strcmp(drv_call_config_string(call, "region", ""), "nowhere") == 0)
		drv_diag_error(d, "/region", "unknown region", "region \"%s\" does not exist", "nowhere");
	drv_diag_warning(d, "/offers", "large catalog", "%lld offers may be slow",
	                 (long long)drv_call_config_int(call, "offers", N_OFFERS));
	return 0;
}

static const struct drv_config_field fields[] = {
    {.name = "offers", .type = DRV_FIELD_INTEGER, .default_json = "2000", .has_minimum = true, .minimum = 0},
    {.name = "no_offers", .type = DRV_FIELD_BOOLEAN},
    {.name = "region", .type = DRV_FIELD_STRING, .enum_values = (const char *const[]){"r1", "nowhere", NULL}},
    {.name = "token", .type = DRV_FIELD_STRING, .secret = true},
    {.name = NULL},
};

static int start(void)
{
	drv_log(DRV_LOG_INFO, "atest driver starting");
	return 0;
}

static const struct drv_driver driver = {
    .version = DRV_DRIVER_V1,
    .type = "atest",
    .driver_version = "0.0.1",
    .description = "allocation failure test driver",
    .ops = &ops,
    .config_fields = fields,
    .validate_config = validate,
    .narrow_features = narrow,
    .start = start,
};

/* ---- the calls of a path, and what a successful answer must hold ---- */

static drv_secret_entry token = {
    PROTOBUF_C_MESSAGE_INIT(&drover__compute__v1__backend_config__secrets_entry__descriptor), "token",
    "s3cret"};
static drv_secret_entry *tokens[] = {&token};
static drv_backend_config cfg = {PROTOBUF_C_MESSAGE_INIT(&drover__compute__v1__backend_config__descriptor),
                                 "{\"region\": \"r1\"}", 1, tokens};
static drv_backend_config bad_cfg = {
    PROTOBUF_C_MESSAGE_INIT(&drover__compute__v1__backend_config__descriptor),
    "{\"region\": \"nowhere\", \"offers\": 5}", 0, NULL};

static drv_get_info_request info_req = DROVER__COMPUTE__V1__GET_INFO_REQUEST__INIT;
static drv_get_features_request feat_req = DROVER__COMPUTE__V1__GET_FEATURES_REQUEST__INIT;
static drv_get_features_request feat_cfg_req = DROVER__COMPUTE__V1__GET_FEATURES_REQUEST__INIT;
static drv_validate_config_request val_req = DROVER__COMPUTE__V1__VALIDATE_CONFIG_REQUEST__INIT;
static drv_validate_config_request val_bad_req = DROVER__COMPUTE__V1__VALIDATE_CONFIG_REQUEST__INIT;
static drv_get_offers_request offers_req = DROVER__COMPUTE__V1__GET_OFFERS_REQUEST__INIT;
static drv_instance_configuration instance = DROVER__COMPUTE__V1__INSTANCE_CONFIGURATION__INIT;
static drv_create_instance_request create_req = DROVER__COMPUTE__V1__CREATE_INSTANCE_REQUEST__INIT;
static drv_get_instance_request get_req = DROVER__COMPUTE__V1__GET_INSTANCE_REQUEST__INIT;
static drv_terminate_instance_request term_req = DROVER__COMPUTE__V1__TERMINATE_INSTANCE_REQUEST__INIT;
static drv_list_instances_request list_req = DROVER__COMPUTE__V1__LIST_INSTANCES_REQUEST__INIT;
static drv_create_gateway_request gw_req = DROVER__COMPUTE__V1__CREATE_GATEWAY_REQUEST__INIT;

struct step {
	const char *method;
	const ProtobufCMessage *req;
	int want;                                 /* the code of a run with no failure */
	bool (*check)(const ProtobufCMessage *r); /* checks a successful answer; may be NULL */
};

static bool check_info(const ProtobufCMessage *m)
{
	const drv_get_info_response *r = (const void *)m;
	return strcmp(r->type, "atest") == 0 && strstr(r->config_schema_json, "\"region\"") &&
	       strstr(r->secrets_schema_json, "\"token\"");
}

static bool check_features(const ProtobufCMessage *m)
{
	const drv_get_features_response *r = (const void *)m;
	return r->n_features >= 2;
}

static bool check_valid(const ProtobufCMessage *m)
{
	const drv_validate_config_response *r = (const void *)m;
	return r->valid && r->n_diagnostics == 1 && strcmp(r->diagnostics[0]->field_path, "/offers") == 0;
}

static bool check_invalid(const ProtobufCMessage *m)
{
	const drv_validate_config_response *r = (const void *)m;
	return !r->valid && r->n_diagnostics == 2 && strcmp(r->diagnostics[0]->field_path, "/region") == 0 &&
	       strstr(r->diagnostics[0]->detail, "nowhere");
}

static bool check_offers(const ProtobufCMessage *m)
{
	const drv_get_offers_response *r = (const void *)m;
	return r->n_offers == N_OFFERS && strcmp(r->offers[N_OFFERS - 1]->instance_type, "type-1999") == 0;
}

static bool check_created(const ProtobufCMessage *m)
{
	const drv_create_instance_response *r = (const void *)m;
	return r->data && strcmp(r->data->instance_id, "i-key-1") == 0;
}

static bool check_got(const ProtobufCMessage *m)
{
	const drv_get_instance_response *r = (const void *)m;
	return r->data && strcmp(r->data->instance_id, "i-key-1") == 0;
}

static const struct step steps[] = {
    {"GetInfo", &info_req.base, 0, check_info},
    {"GetFeatures", &feat_req.base, 0, check_features},
    {"GetFeatures", &feat_cfg_req.base, 0, check_features},
    {"ValidateConfig", &val_req.base, 0, check_valid},
    {"ValidateConfig", &val_bad_req.base, 0, check_invalid},
    {"GetOffers", &offers_req.base, 0, check_offers},
    {"CreateInstance", &create_req.base, 0, check_created},
    {"GetInstance", &get_req.base, 0, check_got},
    {"TerminateInstance", &term_req.base, DRV_EUNAVAILABLE, NULL},
    {"ListInstances", &list_req.base, 0, NULL},
    {"CreateGateway", &gw_req.base, DRV_EUNIMPLEMENTED, NULL},
};
#define N_STEPS (sizeof(steps) / sizeof(steps[0]))

static void requests_init(void)
{
	instance.idempotency_key = "key-1";
	feat_cfg_req.config = &cfg;
	val_req.config = &cfg;
	val_bad_req.config = &bad_cfg;
	offers_req.config = &cfg;
	create_req.config = &cfg;
	create_req.instance = &instance;
	get_req.config = &cfg;
	get_req.instance_id = "i-key-1";
	term_req.config = &cfg;
	term_req.instance_id = "i-key-1";
	list_req.config = &cfg;
	gw_req.config = &cfg;
}

/* One call's outcome against the step: `failing` allows a clean failure instead of the answer. */
static void check_step(const struct step *s, int rc, const ProtobufCMessage *resp,
                       const struct drv_status *st, bool failing, long n)
{
	if (rc == s->want && (rc != 0 || !s->check || s->check(resp)))
		return;
	if (failing && clean_failure(rc))
		return;
	fail_msg("N=%ld %s: code %d (%s) \"%s\", wanted %d", n, s->method, rc, drv_error_name(rc),
	         st->message, s->want);
}

/* ---- the serve path ---- */

typedef int (*call_fn)(void *target, const struct step *s, ProtobufCMessage **resp, struct drv_status *st);

static int serve_call(void *ch, const struct step *s, ProtobufCMessage **resp, struct drv_status *st)
{
	const ProtobufCServiceDescriptor *svc = &drover__compute__v1__compute__descriptor;
	int mi = drv_rpc_method_index(svc, s->method);
	assert_true(mi >= 0);
	return drv_rpc_call(ch, svc, (unsigned)mi, s->req, resp, CALL_MS, NULL, st);
}

static int host_call(void *h, const struct step *s, ProtobufCMessage **resp, struct drv_status *st)
{
	return drv_host_call(h, s->method, s->req, resp, CALL_MS, st);
}

/* Runs the first `count` steps once; `failing`: a failure was (or may be) injected on this run. */
static void run_first_steps(size_t count, call_fn call, void *target, bool failing, long n)
{
	for (size_t i = 0; i < count; i++) {
		ProtobufCMessage *resp = NULL;
		struct drv_status st = {0};
		int rc = call(target, &steps[i], &resp, &st);
		check_step(&steps[i], rc, resp, &st, failing, n);
		drv_response_free(resp);
	}
}

static void run_steps(call_fn call, void *target, bool failing, long n)
{
	run_first_steps(N_STEPS, call, target, failing, n);
}

static void test_serve_path(void **state)
{
	char dir[] = "/tmp/drv-alloc-XXXXXX", addr[64], err[256];
	assert_non_null(mkdtemp(dir));
	snprintf(addr, sizeof(addr), "unix:%s/s", dir);

	drv__log_set_fd(-1); /* the driver's lines about each failure */
	struct drv_rpc_server *srv = NULL;
	struct drv_rpc_server_opts so = {.address = addr};
	assert_int_equal(drv_rpc_server_new(&so, &srv, err, sizeof(err)), 0);
	assert_int_equal(drv__serve_register(srv, &driver, err, sizeof(err)), 0);
	assert_int_equal(drv_rpc_server_start(srv, NULL, err, sizeof(err)), 0);
	struct drv_rpc_channel *ch = NULL;
	struct drv_rpc_channel_opts co = {.target = addr, .wait_for_ready = true};
	assert_int_equal(drv_rpc_channel_new(&co, &ch, err, sizeof(err)), 0);
	run_steps(serve_call, ch, false, 0);

	double t0 = now_ms();
	long n;
	for (n = 1;; n++) {
		arm(n, true);
		run_steps(serve_call, ch, true, n);
		disarm();
		if (!atomic_load(&F.injected))
			break;
		/* Whatever failed, the server answers everything again. */
		run_steps(serve_call, ch, false, n);
	}
	print_message("serve path: %ld allocations failed one at a time, %ld ms\n", n - 1,
	              (long)(now_ms() - t0));
	assert_true(n > 20);

	drv_rpc_channel_free(ch);
	drv_rpc_server_shutdown(srv, 2000);
	drv_rpc_server_free(srv);
	rmdir(dir);
}

/*
 * Starting to serve: the server, the registration of every method and the
 * first posted requests. A start that reports success must answer calls.
 */
static void test_serve_start(void **state)
{
	char dir[] = "/tmp/drv-alloc-XXXXXX", addr[64];
	assert_non_null(mkdtemp(dir));
	snprintf(addr, sizeof(addr), "unix:%s/s", dir);
	drv__log_set_fd(-1);

	double t0 = now_ms();
	long n;
	for (n = 1;; n++) {
		char err[256] = "";
		struct drv_rpc_server *srv = NULL;
		struct drv_rpc_channel *ch = NULL;
		struct drv_rpc_server_opts so = {.address = addr};
		struct drv_rpc_channel_opts co = {.target = addr, .wait_for_ready = true};
		/*
		 * The first calls build the answers kept for later ones: GetInfo's
		 * schemas, and the parsed defaults (GetFeatures with a config).
		 */
		arm(n, false);
		int rc = drv_rpc_server_new(&so, &srv, err, sizeof(err));
		if (rc == 0)
			rc = drv__serve_register(srv, &driver, err, sizeof(err));
		if (rc == 0)
			rc = drv_rpc_server_start(srv, NULL, err, sizeof(err));
		if (rc != 0 && !(atomic_load(&F.injected) && rc == DRV_ENOMEM))
			fail_msg("N=%ld: start: %s: %s", n, drv_error_name(rc), err);
		atomic_store(&F.others_only, true); /* from here on, only the server's side */
		if (rc == 0) {
			assert_int_equal(drv_rpc_channel_new(&co, &ch, err, sizeof(err)), 0);
			run_first_steps(3, serve_call, ch, true, n);
		}
		disarm();
		bool injected = atomic_load(&F.injected);
		/* A server that started answers everything, whatever failed on the way. */
		if (rc == 0)
			run_steps(serve_call, ch, false, n);
		drv_rpc_channel_free(ch);
		drv_rpc_server_shutdown(srv, 2000);
		drv_rpc_server_free(srv);
		if (!injected)
			break;
	}
	print_message("serve start and first calls: %ld allocations failed one at a time, %ld ms\n", n - 1,
	              (long)(now_ms() - t0));
	assert_true(n > 20);
	rmdir(dir);
}

/* ---- the host path ---- */

struct lines {
	pthread_mutex_t mu;
	int n;
};

static void on_line(void *ud, const char *name, const char *line)
{
	struct lines *l = ud;
	pthread_mutex_lock(&l->mu);
	l->n++;
	pthread_mutex_unlock(&l->mu);
}

static char self_exe[4096];

/* GetOffers through drv_host_call_async: the callback runs once, with the answer or a clean failure. */
static void async_offers(struct drv_host *h, long n)
{
	struct async_result r = ASYNC_RESULT_INIT;
	int rc = drv_host_call_async(h, "GetOffers", &offers_req.base, CALL_MS, on_offers_done, &r);
	if (rc != 0) {
		if (rc != DRV_ENOMEM)
			fail_msg("N=%ld: async GetOffers did not start: %s", n, drv_error_name(rc));
		return;
	}
	async_wait(&r);
	if (!(r.code == 0 && r.n_offers == N_OFFERS) && !clean_failure(r.code))
		fail_msg("N=%ld: async GetOffers: %s, %zu offers", n, drv_error_name(r.code), r.n_offers);
}

/* A second host connected by address to the same driver (drv_host_connect), asked GetInfo. */
static void connected_info(const char *target, long n)
{
	struct drv_connect_opts co = {.address = target, .insecure = true, .connect_timeout_ms = 5000};
	struct drv_host *h = NULL;
	char err[512];
	int rc = drv_host_connect(&co, &h, err, sizeof(err));
	if (rc != 0) {
		if (rc != DRV_ENOMEM)
			fail_msg("N=%ld: connect: %s: %s", n, drv_error_name(rc), err);
		return;
	}
	ProtobufCMessage *resp = NULL;
	struct drv_status st = {0};
	rc = drv_host_call(h, "GetInfo", &info_req.base, &resp, CALL_MS, &st);
	check_step(&steps[0], rc, resp, &st, true, n);
	drv_response_free(resp);
	drv_host_free(h);
}

static void test_host_path(void **state)
{
	static const char *const env[] = {"ALLOC_TEST_DRIVER=1", NULL};
	struct lines l = {.mu = PTHREAD_MUTEX_INITIALIZER};
	double t0 = now_ms();
	long n;
	for (n = 1;; n++) {
		struct drv_host *h = NULL;
		char err[512] = "";
		struct drv_spawn_opts o = {
		    .path = self_exe, .env_extra = env, .on_stderr = on_line, .ud = &l};
		arm(n, false);
		int rc = drv_host_spawn(&o, &h, err, sizeof(err));
		if (rc != 0) {
			if (!atomic_load(&F.injected))
				fail_msg("N=%ld: spawn failed with no failure injected: %s", n, err);
			if (rc != DRV_ENOMEM)
				fail_msg("N=%ld: spawn: %s (%s)", n, drv_error_name(rc), err);
			disarm();
			continue;
		}
		run_steps(host_call, h, true, n);
		async_offers(h, n);
		connected_info(drv_host_target(h), n);
		int status = -1;
		rc = drv_host_stop(h, 5000, &status);
		drv_host_free(h);
		disarm();
		if (rc != 0 && !(rc == DRV_ENOMEM && atomic_load(&F.injected)))
			fail_msg("N=%ld (after %ld allocations): stop: %s", n, atomic_load(&F.count),
			         drv_error_name(rc));
		if (!atomic_load(&F.injected))
			break;
	}
	print_message("host path: %ld allocations failed one at a time, %ld ms\n", n - 1,
	              (long)(now_ms() - t0));
	assert_true(n > 20);
	assert_true(l.n > 0);
}

/* The SDK's pool of deferred identity calls is one per process: stopped once, at the end. */
static int drain(void **state)
{
	drv__serve_drain();
	return 0;
}

int main(int argc, char **argv)
{
	/* As drv_main does for a driver process: jansson's blocks come from the hooked allocator too. */
	json_set_alloc_funcs(drv__malloc, free);
	if (getenv("ALLOC_TEST_DRIVER"))
		return drv_main(argc, argv, &driver);
	ssize_t len = readlink("/proc/self/exe", self_exe, sizeof(self_exe) - 1);
	if (len <= 0)
		return 1;
	self_exe[len] = '\0';
	requests_init();
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_serve_start),
	    cmocka_unit_test(test_serve_path),
	    cmocka_unit_test(test_host_path),
	};
	return cmocka_run_group_tests(tests, NULL, drain);
}
