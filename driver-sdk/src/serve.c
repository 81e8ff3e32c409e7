/*
 * Serving: registers every method of the generated Compute service
 * descriptor and grpc.health.v1.Health/Check on the generic transport
 * (drover/rpc.h), with one dispatcher for all provider RPCs.
 *
 * Identity answers (GetInfo, GetFeatures without config, Health) run inline
 * on the completion-queue thread from answers built once. Provider RPCs run on
 * the transport's workers inside a struct drv_call. GetFeatures with a config
 * must run the driver's narrow hook, which may block, so it moves to a small
 * pool of the SDK's own, started on first use: the transport's inline flag is
 * per method, and GetFeatures without config must stay inline to be as fast
 * as a bare echo.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "alloc.h"
#include "drover/rpc.h"
#include "drv_internal.h"
#include "grpc/health/v1/health.pb-c.h"
#include "rpc_table.h"

#define POOL_THREADS 2
#define POOL_STACK (512 * 1024)

#define COMPUTE_DESC drover__compute__v1__compute__descriptor
#define HEALTH_DESC grpc__health__v1__health__descriptor
#define SERVING GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING

/* One registered provider method. */
struct provider {
	const struct drv__method *m;
	const ProtobufCMessageDescriptor *output;
	unsigned config_offset; /* offset of the request's BackendConfig pointer */
	bool has_config;
};

static struct {
	const struct drv_driver *driver;
	drv_features derived;
	struct provider providers[32];
	size_t n_providers;

	/* Built once; read-only afterwards. */
	Drover__Compute__V1__Feature feature_list[64];
	drv_get_features_response features_resp;
	Grpc__Health__V1__HealthCheckResponse health_serving;
	Grpc__Health__V1__HealthCheckResponse health_not_serving;

	/*
	 * GetInfo's answer, built on first use and kept once complete: a schema
	 * that could not be built for lack of memory is built again by the next
	 * GetInfo rather than answered as "{}" for the life of the process.
	 */
	pthread_mutex_t info_lock;
	atomic_bool info_ready;
	drv_get_info_response info;
	char *config_schema;
	char *secrets_schema;
} S = {.info_lock = PTHREAD_MUTEX_INITIALIZER};

static const drv_backend_config empty_config = DROVER__COMPUTE__V1__BACKEND_CONFIG__INIT;

/*
 * Calls handed to a worker and not yet answered. Shutdown waits for this to
 * reach zero itself: gRPC's graceful server shutdown also waits for every
 * idle client connection to go away, which a host holding its channel open
 * never does, so waiting on it alone would always cost the full grace period.
 */
static atomic_int in_flight;
static atomic_bool stopping;
static pthread_mutex_t idle_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t idle_cond = PTHREAD_COND_INITIALIZER;

static void flight_begin(void)
{
	atomic_fetch_add(&in_flight, 1);
}

static void flight_end(void)
{
	if (atomic_fetch_sub(&in_flight, 1) == 1) {
		pthread_mutex_lock(&idle_lock);
		pthread_cond_broadcast(&idle_cond);
		pthread_mutex_unlock(&idle_lock);
	}
}

/*
 * Begins a worker call. Returns false (and the caller must answer
 * UNAVAILABLE) once shutdown began. The count goes up before the flag is
 * read, so drv__serve_wait_idle either sees this call or the call sees the
 * flag.
 */
static bool flight_enter(void)
{
	flight_begin();
	if (!atomic_load(&stopping))
		return true;
	flight_end();
	return false;
}

void drv__serve_stop_accepting(void)
{
	atomic_store(&stopping, true);
}

int drv__serve_wait_idle(int timeout_ms)
{
	struct timespec start, until, now;
	clock_gettime(CLOCK_MONOTONIC, &start);
	drv__realtime_after_ms(timeout_ms, &until);
	pthread_mutex_lock(&idle_lock);
	while (atomic_load(&in_flight) > 0)
		if (pthread_cond_timedwait(&idle_cond, &idle_lock, &until) != 0)
			break;
	pthread_mutex_unlock(&idle_lock);
	clock_gettime(CLOCK_MONOTONIC, &now);
	int64_t spent = (now.tv_sec - start.tv_sec) * 1000 + (now.tv_nsec - start.tv_nsec) / 1000000;
	return spent >= timeout_ms ? 0 : timeout_ms - (int)spent;
}

/* ---- the SDK's own small pool for deferred identity calls ---- */

struct job {
	struct job *next;
	void (*fn)(void *arg);
	void *arg;
};

static struct {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	pthread_cond_t idle_cond;
	struct job *head, *tail;
	pthread_t threads[POOL_THREADS];
	int n_threads;
	int idle;
	int running; /* jobs taken but not finished */
	bool stopping;
} P = {.lock = PTHREAD_MUTEX_INITIALIZER,
       .cond = PTHREAD_COND_INITIALIZER,
       .idle_cond = PTHREAD_COND_INITIALIZER};

static void *pool_main(void *unused)
{
	pthread_mutex_lock(&P.lock);
	for (;;) {
		while (!P.head && !P.stopping) {
			P.idle++;
			pthread_cond_wait(&P.cond, &P.lock);
			P.idle--;
		}
		if (!P.head && P.stopping)
			break;
		struct job *j = P.head;
		P.head = j->next;
		if (!P.head)
			P.tail = NULL;
		P.running++;
		pthread_mutex_unlock(&P.lock);
		j->fn(j->arg);
		free(j);
		pthread_mutex_lock(&P.lock);
		P.running--;
		if (!P.head && P.running == 0)
			pthread_cond_broadcast(&P.idle_cond);
	}
	pthread_mutex_unlock(&P.lock);
	return NULL;
}

static int pool_submit(void (*fn)(void *), void *arg)
{
	struct job *j = drv__malloc(sizeof(*j));
	if (!j)
		return DRV_ENOMEM;
	j->next = NULL;
	j->fn = fn;
	j->arg = arg;
	pthread_mutex_lock(&P.lock);
	if (P.stopping) {
		pthread_mutex_unlock(&P.lock);
		free(j);
		return DRV_EUNAVAILABLE;
	}
	if (P.idle == 0 && P.n_threads < POOL_THREADS) {
		pthread_attr_t attr;
		pthread_attr_init(&attr);
		pthread_attr_setstacksize(&attr, POOL_STACK);
		if (pthread_create(&P.threads[P.n_threads], &attr, pool_main, NULL) == 0)
			P.n_threads++;
		pthread_attr_destroy(&attr);
		if (P.n_threads == 0) {
			pthread_mutex_unlock(&P.lock);
			free(j);
			return DRV_ESYSTEM;
		}
	}
	if (P.tail)
		P.tail->next = j;
	else
		P.head = j;
	P.tail = j;
	pthread_cond_signal(&P.cond);
	pthread_mutex_unlock(&P.lock);
	return 0;
}

void drv__serve_drain(void)
{
	pthread_mutex_lock(&P.lock);
	P.stopping = true;
	pthread_cond_broadcast(&P.cond);
	int n = P.n_threads;
	pthread_mutex_unlock(&P.lock);
	for (int i = 0; i < n; i++)
		pthread_join(P.threads[i], NULL);
	pthread_mutex_lock(&P.lock);
	P.n_threads = 0;
	pthread_mutex_unlock(&P.lock);
}

/* ---- replies ---- */

/*
 * A status message travels in an HTTP/2 header block, and gRPC hosts refuse
 * a block over their limit (8 KB by default) by dropping the whole
 * connection: a handler quoting a provider's error page would cut off every
 * later call. Messages are cut to 2 KB (up to 6 KB once percent-encoded), on
 * a UTF-8 boundary.
 */
#define MAX_STATUS_MESSAGE 2048

static const char *capped_message(struct drv_call *call, const char *msg)
{
	size_t n = strlen(msg);
	if (n <= MAX_STATUS_MESSAGE)
		return msg;
	size_t cut = drv_utf8_cut(msg, n, MAX_STATUS_MESSAGE - 32);
	const char *m = drv_call_printf(call, "%.*s... (%zu bytes cut)", (int)cut, msg, n - cut);
	return m ? m : "(a message too long to send, and no memory to cut it)";
}

/* A value of enum drv_error: 0, -1..-16 (the gRPC codes) or a local error. */
static bool is_drv_error(int code)
{
	return (code <= 0 && code >= DRV_EUNAUTHENTICATED) || (code <= DRV_ENOMEM && code >= DRV_ESYSTEM);
}

static void reply_call(struct drv_call *call, int code, const ProtobufCMessage *resp)
{
	const char *msg = NULL;
	if (!is_drv_error(code)) {
		msg = drv_call_printf(call, "driver bug: handler of %s returned %d, which is not a drv_error",
		                      call->method, code);
		code = DRV_EINTERNAL;
	} else if (code != 0) {
		msg = call->fail_message && call->fail_message[0] ? capped_message(call, call->fail_message)
		                                                  : drv_strerror(code);
	}
	/*
	 * A handler that stops because drv_call_cancelled() turned true when
	 * the deadline passed says CANCELLED; the caller's table wants
	 * DEADLINE_EXCEEDED (outcome unknown, retry with the same key).
	 */
	if (code == DRV_ECANCELLED && call->rpc && drv_rpc_call_time_left_ms(call->rpc) <= 0)
		code = DRV_EDEADLINE;
	/* INTERNAL and UNKNOWN mean a driver bug: worth a line in the host's log. */
	if (code != 0 && (drv_error_to_grpc(code) == 13 || code == DRV_EUNKNOWN))
		drv_call_log(call, DRV_LOG_ERROR, "%s: %s", drv_error_name(code), msg ? msg : "");
	drv_rpc_reply(call->rpc, code, msg, code == 0 ? resp : NULL);
}

static void reply_unimplemented(struct drv_rpc_call *rc, const char *method, const char *why)
{
	char msg[256];
	snprintf(msg, sizeof(msg), "%s is not implemented by driver \"%s\"%s", method, S.driver->type, why);
	drv_rpc_reply(rc, DRV_EUNIMPLEMENTED, msg, NULL);
}

static void reply_stopping(struct drv_rpc_call *rc)
{
	char msg[160];
	snprintf(msg, sizeof(msg), "driver \"%s\" is shutting down", S.driver->type);
	drv_rpc_reply(rc, DRV_EUNAVAILABLE, msg, NULL);
}

static const drv_backend_config *request_config(const struct provider *p, const ProtobufCMessage *req)
{
	if (!p->has_config)
		return NULL;
	return *(drv_backend_config *const *)((const char *)req + p->config_offset);
}

/* ---- provider RPCs ---- */

static void on_not_implemented(void *ud, struct drv_rpc_call *rc, const ProtobufCMessage *req)
{
	reply_unimplemented(rc, drv_rpc_call_method(rc), "");
}

static void on_provider(void *ud, struct drv_rpc_call *rc, const ProtobufCMessage *req)
{
	const struct provider *p = ud;
	const struct drv_driver *drv = S.driver;
	struct drv_call *call;
	int code;

	if (drv_rpc_call_time_left_ms(rc) <= 0) {
		drv_rpc_reply(rc, DRV_EDEADLINE, "deadline passed before the handler started", NULL);
		return;
	}
	if (!flight_enter()) {
		reply_stopping(rc);
		return;
	}
	call = drv__malloc(sizeof(*call));
	if (!call) {
		drv_rpc_reply(rc, DRV_ENOMEM, "out of memory", NULL);
		flight_end();
		return;
	}
	drv__call_init(call, drv, rc, p->m->name);
	const drv_backend_config *bc = request_config(p, req);
	/* No config is checked as {} (required fields still apply) but stays "no config" for the handler. */
	code = drv__call_set_config(call, bc ? bc : &empty_config, NULL);
	call->config = bc;
	if (code == 0 && drv->narrow_features &&
	    !(drv__features_for_call(drv, call) & DRV_FEATURE_BIT(p->m->feature))) {
		code = drv_call_fail(
		    call, DRV_EUNIMPLEMENTED,
		    "%s is not available from driver \"%s\" for this config (feature %s narrowed "
		    "away)",
		    p->m->name, drv->type, drv_feature_name(p->m->feature));
	}
	void *resp = NULL;
	if (code == 0) {
		resp = drv_call_message(call, p->output);
		code = resp ? p->m->invoke(drv->ops, call, req, resp) : DRV_ENOMEM;
	}
	reply_call(call, code, resp);
	drv__call_release(call);
	free(call);
	flight_end();
}

/* ---- identity RPCs ---- */

/* True when GetInfo's answer is ready (built now or before). */
static bool info_build(void)
{
	if (atomic_load(&S.info_ready))
		return true;
	pthread_mutex_lock(&S.info_lock);
	const struct drv_driver *d = S.driver;
	drv_get_info_response *r = &S.info;
	if (d && !atomic_load(&S.info_ready)) {
		if (!S.config_schema)
			S.config_schema = drv__config_schema(d);
		if (!S.secrets_schema)
			S.secrets_schema = drv__secrets_schema(d);
		drover__compute__v1__get_info_response__init(r);
		r->type = (char *)d->type;
		r->driver_version = (char *)(d->driver_version ? d->driver_version : "");
		r->protocol_version = DROVER__COMPUTE__V1__PROTOCOL_VERSION__PROTOCOL_VERSION_1;
		r->config_schema_json = S.config_schema;
		r->secrets_schema_json = S.secrets_schema;
		r->description = (char *)(d->description ? d->description : "");
		if (S.config_schema && S.secrets_schema)
			atomic_store(&S.info_ready, true);
	}
	pthread_mutex_unlock(&S.info_lock);
	return atomic_load(&S.info_ready);
}

/* Forgets GetInfo's answer: it belongs to the driver registered last. */
static void info_reset(void)
{
	pthread_mutex_lock(&S.info_lock);
	atomic_store(&S.info_ready, false);
	free(S.config_schema);
	free(S.secrets_schema);
	S.config_schema = S.secrets_schema = NULL;
	pthread_mutex_unlock(&S.info_lock);
}

void drv__serve_warm(void)
{
	info_build();
}

static void on_get_info(void *ud, struct drv_rpc_call *rc, const ProtobufCMessage *req)
{
	if (!info_build()) {
		drv_rpc_reply(rc, DRV_ENOMEM, "out of memory building the config schema", NULL);
		return;
	}
	drv_rpc_reply(rc, 0, NULL, &S.info.base);
}

struct deferred {
	struct drv_rpc_call *rc;
	const drv_get_features_request *req;
};

static void features_with_config(void *arg)
{
	struct deferred *df = arg;
	struct drv_call call;
	drv_get_features_response resp = DROVER__COMPUTE__V1__GET_FEATURES_RESPONSE__INIT;

	drv__call_init(&call, S.driver, df->rc, "GetFeatures");
	int code = drv__call_set_config(&call, df->req->config, NULL);
	if (code == 0)
		code = drv__features_to_response(drv__features_for_call(S.driver, &call), &resp, &call.arena);
	reply_call(&call, code, &resp.base);
	drv__call_release(&call);
	free(df);
	flight_end();
}

static void on_get_features(void *ud, struct drv_rpc_call *rc, const ProtobufCMessage *req)
{
	const drv_get_features_request *r = (const drv_get_features_request *)req;
	if (!r->config) {
		drv_rpc_reply(rc, 0, NULL, &S.features_resp.base);
		return;
	}
	struct deferred *df = drv__malloc(sizeof(*df));
	if (!df) {
		drv_rpc_reply(rc, DRV_ENOMEM, "out of memory", NULL);
		return;
	}
	df->rc = rc;
	df->req = r;
	if (!flight_enter()) {
		free(df);
		reply_stopping(rc);
		return;
	}
	int code = pool_submit(features_with_config, df);
	if (code) {
		flight_end();
		free(df);
		drv_rpc_reply(rc, code,
		              code == DRV_ENOMEM    ? "out of memory"
		              : code == DRV_ESYSTEM ? "cannot start a thread for GetFeatures"
		                                    : "driver is shutting down",
		              NULL);
	}
}

static void on_validate_config(void *ud, struct drv_rpc_call *rc, const ProtobufCMessage *req)
{
	const drv_validate_config_request *r = (const drv_validate_config_request *)req;
	const struct drv_driver *drv = S.driver;
	drv_validate_config_response resp = DROVER__COMPUTE__V1__VALIDATE_CONFIG_RESPONSE__INIT;
	struct drv_call call;
	struct drv_diags diags;
	int code = 0;

	if (!flight_enter()) {
		reply_stopping(rc);
		return;
	}
	drv__call_init(&call, drv, rc, "ValidateConfig");
	drv__diags_init(&diags, &call.arena);
	drv__call_set_config(&call, r->config ? r->config : &empty_config, &diags);
	call.config = r->config;
	call.fail_code = 0;
	call.fail_message = NULL;
	if (diags.n_errors == 0 && drv->validate_config)
		code = drv->validate_config(&call, &diags);
	if (code == 0 && diags.oom)
		code = drv_call_fail(&call, DRV_ENOMEM, "out of memory collecting the diagnostics");
	if (code == 0) {
		resp.diagnostics = diags.items;
		resp.n_diagnostics = diags.n;
	}
	resp.valid = diags.n_errors == 0;
	reply_call(&call, code, &resp.base);
	drv__call_release(&call);
	flight_end();
}

static void on_health_check(void *ud, struct drv_rpc_call *rc, const ProtobufCMessage *req)
{
	const Grpc__Health__V1__HealthCheckRequest *r = (const Grpc__Health__V1__HealthCheckRequest *)req;
	const char *svc = r->service ? r->service : "";
	if (svc[0] == '\0' || strcmp(svc, DRV_COMPUTE_SERVICE) == 0) {
		drv_rpc_reply(rc, 0, NULL,
		              atomic_load(&stopping) ? &S.health_not_serving.base : &S.health_serving.base);
		return;
	}
	/* The health protocol answers NOT_FOUND for a service the server does not know. */
	char msg[200];
	snprintf(msg, sizeof(msg), "unknown service \"%.120s\"", svc);
	drv_rpc_reply(rc, DRV_ENOTFOUND, msg, NULL);
}

/* ---- registration ---- */

static int method_index(const ProtobufCServiceDescriptor *svc, const char *name)
{
	for (unsigned i = 0; i < svc->n_methods; i++)
		if (strcmp(svc->methods[i].name, name) == 0)
			return (int)i;
	return -1;
}

int drv__serve_register(struct drv_rpc_server *srv, const struct drv_driver *driver, char *err, size_t errlen)
{
	const ProtobufCServiceDescriptor *svc = &COMPUTE_DESC;
	int rc;

	info_reset();
	S.driver = driver;
	S.derived = drv__features_derive(driver);
	drover__compute__v1__get_features_response__init(&S.features_resp);
	for (unsigned b = 1; b < 64; b++)
		if (S.derived & DRV_FEATURE_BIT(b))
			S.feature_list[S.features_resp.n_features++] = (Drover__Compute__V1__Feature)b;
	S.features_resp.features = S.feature_list;
	grpc__health__v1__health_check_response__init(&S.health_serving);
	S.health_serving.status = SERVING;
	grpc__health__v1__health_check_response__init(&S.health_not_serving);
	S.health_not_serving.status = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING;
	S.n_providers = 0;

	for (unsigned i = 0; i < svc->n_methods; i++) {
		const ProtobufCMethodDescriptor *md = &svc->methods[i];
		drv_rpc_handler fn;
		void *ud = NULL;
		unsigned flags = 0;

		if (strcmp(md->name, "GetInfo") == 0) {
			fn = on_get_info, flags = DRV_RPC_INLINE;
		} else if (strcmp(md->name, "GetFeatures") == 0) {
			fn = on_get_features, flags = DRV_RPC_INLINE;
		} else if (strcmp(md->name, "ValidateConfig") == 0) {
			fn = on_validate_config;
		} else {
			const struct drv__method *m = drv__method_find(md->name);
			if (!m || !m->present(driver->ops)) {
				/* Answering UNIMPLEMENTED needs no worker. */
				fn = on_not_implemented, flags = DRV_RPC_INLINE;
			} else {
				if (S.n_providers == sizeof(S.providers) / sizeof(S.providers[0])) {
					snprintf(err, errlen, "too many Compute methods");
					return DRV_EINTERNAL;
				}
				struct provider *p = &S.providers[S.n_providers++];
				const ProtobufCFieldDescriptor *f =
				    protobuf_c_message_descriptor_get_field_by_name(md->input, "config");
				p->m = m;
				p->output = md->output;
				p->has_config = f && f->type == PROTOBUF_C_TYPE_MESSAGE;
				p->config_offset = f ? f->offset : 0;
				fn = on_provider;
				ud = p;
			}
		}
		rc = drv_rpc_server_add(srv, svc, i, fn, ud, flags);
		if (rc) {
			snprintf(err, errlen, "cannot register %s/%s: %s", svc->name, md->name,
			         drv_strerror(rc));
			return rc;
		}
	}

	int hi = method_index(&HEALTH_DESC, "Check");
	if (hi < 0) {
		snprintf(err, errlen, "grpc.health.v1.Health has no Check method");
		return DRV_EINTERNAL;
	}
	rc = drv_rpc_server_add(srv, &HEALTH_DESC, (unsigned)hi, on_health_check, NULL, DRV_RPC_INLINE);
	if (rc) {
		snprintf(err, errlen, "cannot register grpc.health.v1.Health/Check: %s", drv_strerror(rc));
		return rc;
	}
	return 0;
}

json_t *drv__info_json(const struct drv_driver *driver)
{
	char *cs = drv__config_schema(driver);
	char *ss = drv__secrets_schema(driver);
	json_t *features = json_array();
	bool ok = cs && ss && features;
	drv_features set = drv__features_derive(driver);
	for (unsigned b = 1; ok && b < 64; b++)
		if ((set & DRV_FEATURE_BIT(b)) && drv_feature_name((int)b))
			ok = json_array_append_new(features, json_string(drv_feature_name((int)b))) == 0;
	json_t *o = NULL;
	/* json_pack takes the "o" values, also when it fails (a NULL among them: no memory). */
	if (ok)
		o = json_pack("{s:s, s:s, s:i, s:s, s:o, s:o, s:o}", "type", driver->type, "driver_version",
		              driver->driver_version ? driver->driver_version : "", "protocol_version",
		              DRV_PROTOCOL_VERSION, "description",
		              driver->description ? driver->description : "", "features", features,
		              "config_schema", json_loads(cs, 0, NULL), "secrets_schema",
		              json_loads(ss, 0, NULL));
	else
		json_decref(features);
	free(cs);
	free(ss);
	return o;
}
