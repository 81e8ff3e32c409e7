/*
 * Tests of the gRPC transport (driver-sdk/src/rpc_server.c, rpc_client.c):
 * a real server on a real unix socket and on 127.0.0.1, real clients,
 * real mutual TLS with certificates made by gen-certs.sh at run time.
 *
 * The served service is grpc.health.v1.Health; the request's `service`
 * string tells the handler how to behave ("err", "hang", "defer", "slow:N",
 * "md"), so one handler covers every case. A hand-built "test.Echo" service
 * reuses the health messages to move large payloads and to send a request
 * the server cannot parse.
 */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "drover/driver.h"
#include "drover/rpc.h"
#include "grpc/health/v1/health.pb-c.h"

typedef Grpc__Health__V1__HealthCheckRequest hc_req;
typedef Grpc__Health__V1__HealthCheckResponse hc_resp;
#define SERVING GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING

static const ProtobufCServiceDescriptor *health = &grpc__health__v1__health__descriptor;

/* test.Echo/Echo: HealthCheckRequest in and out (the string grows to the asked size). */
static const ProtobufCMethodDescriptor echo_methods[] = {
    {"Echo", &grpc__health__v1__health_check_request__descriptor,
     &grpc__health__v1__health_check_request__descriptor},
};
static const unsigned echo_index[] = {0};
static const ProtobufCServiceDescriptor echo_service = {PROTOBUF_C__SERVICE_DESCRIPTOR_MAGIC,
                                                        "test.Echo",
                                                        "Echo",
                                                        "Test__Echo",
                                                        "test",
                                                        1,
                                                        echo_methods,
                                                        echo_index};

/*
 * The health service seen through the wrong glasses: Check sends a
 * HealthCheckResponse (a varint field 1) where the server expects a string
 * field 1, which protobuf-c refuses to parse; Nope does not exist.
 */
static const ProtobufCMethodDescriptor wrong_methods[] = {
    {"Check", &grpc__health__v1__health_check_response__descriptor,
     &grpc__health__v1__health_check_response__descriptor},
    {"Nope", &grpc__health__v1__health_check_request__descriptor,
     &grpc__health__v1__health_check_response__descriptor},
};
static const unsigned wrong_index[] = {0, 1};
static const ProtobufCServiceDescriptor wrong_health = {PROTOBUF_C__SERVICE_DESCRIPTOR_MAGIC,
                                                        "grpc.health.v1.Health",
                                                        "Health",
                                                        "X",
                                                        "grpc.health.v1",
                                                        2,
                                                        wrong_methods,
                                                        wrong_index};

static char tmpdir[256];

/*
 * c-ares 1.18 (Debian 12) leaks a few bytes per ares_gethostbyname("localhost"),
 * which gRPC's resolver calls for the name-based mTLS case. Not ours to fix;
 * LeakSanitizer reads this in sanitizer builds and ignores it otherwise.
 */
const char *__lsan_default_suppressions(void);
const char *__lsan_default_suppressions(void)
{
	return "leak:libcares.so\n";
}

static int64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int ms)
{
	struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

/* ---- the server side ---- */

static pthread_mutex_t hung_lock = PTHREAD_MUTEX_INITIALIZER;
static struct drv_rpc_call *hung_call; /* the "hang" call, kept unanswered */
static atomic_int handler_calls;

/* Takes the "hang" call from the handler (NULL if it holds none); the taker must answer it. */
static struct drv_rpc_call *take_hung_call(void)
{
	pthread_mutex_lock(&hung_lock);
	struct drv_rpc_call *h = hung_call;
	hung_call = NULL;
	pthread_mutex_unlock(&hung_lock);
	return h;
}

/* Waits, at most 2 s, until the handler holds a "hang" call. */
static void wait_for_hung_call(void)
{
	int64_t until = now_ms() + 2000;
	for (;;) {
		pthread_mutex_lock(&hung_lock);
		bool there = hung_call != NULL;
		pthread_mutex_unlock(&hung_lock);
		if (there || now_ms() > until)
			break;
		sleep_ms(1);
	}
}

static void reply_serving(struct drv_rpc_call *call)
{
	hc_resp r = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
	r.status = SERVING;
	drv_rpc_reply(call, 0, NULL, &r.base);
}

static void *defer_thread(void *arg)
{
	sleep_ms(100);
	reply_serving(arg);
	return NULL;
}

static void health_check(void *ud, struct drv_rpc_call *call, const ProtobufCMessage *msg)
{
	const hc_req *req = (const hc_req *)msg;
	const char *s = req->service;
	atomic_fetch_add(&handler_calls, 1);
	if (strcmp(s, "err") == 0) {
		drv_rpc_reply(call, DRV_ENOTFOUND, "no such service: err", NULL);
	} else if (strcmp(s, "hang") == 0) {
		pthread_mutex_lock(&hung_lock);
		hung_call = call;
		pthread_mutex_unlock(&hung_lock);
	} else if (strcmp(s, "defer") == 0) {
		pthread_t t;
		if (pthread_create(&t, NULL, defer_thread, call) != 0)
			drv_rpc_reply(call, DRV_ESYSTEM, "pthread_create failed", NULL);
		else
			pthread_detach(t);
	} else if (strncmp(s, "slow:", 5) == 0) {
		sleep_ms(atoi(s + 5));
		reply_serving(call);
	} else if (strcmp(s, "wrongtype") == 0) {
		/* A handler bug: the request type where the response type belongs. */
		drv_rpc_reply(call, 0, NULL, msg);
	} else if (strcmp(s, "noresp") == 0) {
		drv_rpc_reply(call, 0, NULL, NULL);
	} else if (strcmp(s, "md") == 0) {
		const char *a = drv_rpc_call_metadata(call, "authorization");
		const char *x = drv_rpc_call_metadata(call, "x-request-id");
		char buf[256];
		if (a && strcmp(a, "Bearer t0k3n") == 0 && x && strcmp(x, "42") == 0 &&
		    strcmp(drv_rpc_call_method(call), "Check") == 0 && drv_rpc_call_time_left_ms(call) > 0 &&
		    drv_rpc_call_time_left_ms(call) <= 5050 && drv_rpc_call_peer(call)[0] != '\0') {
			reply_serving(call);
		} else {
			snprintf(buf, sizeof(buf), "saw authorization=%s x-request-id=%s", a ? a : "(none)",
			         x ? x : "(none)");
			drv_rpc_reply(call, DRV_EPERM, buf, NULL);
		}
	} else {
		reply_serving(call);
	}
}

static void echo(void *ud, struct drv_rpc_call *call, const ProtobufCMessage *msg)
{
	const hc_req *req = (const hc_req *)msg;
	/* "size:N" asks for a reply of N bytes; otherwise the request comes back. */
	hc_req r = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
	char *big = NULL;
	if (strncmp(req->service, "size:", 5) == 0) {
		size_t n = strtoul(req->service + 5, NULL, 10);
		big = malloc(n + 1);
		for (size_t i = 0; i < n; i++)
			big[i] = (char)('a' + i % 26);
		big[n] = '\0';
		r.service = big;
	} else {
		r.service = req->service;
	}
	drv_rpc_reply(call, 0, NULL, &r.base);
	free(big);
}

struct fixture {
	struct drv_rpc_server *srv;
	struct drv_rpc_channel *ch;
	char address[300];
	char target[300];
};

static int start_server(struct fixture *f, const struct drv_rpc_server_opts *o, unsigned check_flags)
{
	char err[256] = "";
	int rc = drv_rpc_server_new(o, &f->srv, err, sizeof(err));
	if (rc != 0) {
		fprintf(stderr, "server_new: %s\n", err);
		return rc;
	}
	assert_int_equal(drv_rpc_server_add(f->srv, health, 0, health_check, NULL, check_flags), 0);
	assert_int_equal(drv_rpc_server_add(f->srv, &echo_service, 0, echo, NULL, DRV_RPC_INLINE), 0);
	int port = -1;
	rc = drv_rpc_server_start(f->srv, &port, err, sizeof(err));
	if (rc != 0) {
		fprintf(stderr, "server_start: %s\n", err);
		return rc;
	}
	if (strncmp(o->address, "unix:", 5) == 0) {
		assert_int_equal(port, 0);
		snprintf(f->target, sizeof(f->target), "%s", o->address);
	} else {
		assert_true(port > 0);
		snprintf(f->target, sizeof(f->target), "127.0.0.1:%d", port);
	}
	return 0;
}

static void open_channel(struct fixture *f)
{
	char err[256] = "";
	struct drv_rpc_channel_opts co = {.target = f->target};
	int rc = drv_rpc_channel_new(&co, &f->ch, err, sizeof(err));
	if (rc != 0)
		fail_msg("channel_new: %s", err);
}

static int setup_unix(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	snprintf(f->address, sizeof(f->address), "unix:%s/s.sock", tmpdir);
	struct drv_rpc_server_opts o = {.address = f->address};
	if (start_server(f, &o, DRV_RPC_INLINE) != 0)
		return -1;
	open_channel(f);
	*state = f;
	return 0;
}

static int setup_tcp(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	snprintf(f->address, sizeof(f->address), "127.0.0.1:0");
	struct drv_rpc_server_opts o = {.address = f->address, .workers = 4};
	if (start_server(f, &o, 0) != 0)
		return -1;
	open_channel(f);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	/* Answer a call a test left hanging, as its handler's owner would. */
	struct drv_rpc_call *h = take_hung_call();
	if (h)
		drv_rpc_reply(h, DRV_ECANCELLED, "test over", NULL);
	drv_rpc_channel_free(f->ch);
	drv_rpc_server_free(f->srv);
	free(f);
	return 0;
}

static int check(struct drv_rpc_channel *ch, const char *service, int timeout_ms,
                 const struct drv_rpc_metadata *md, struct drv_status *st)
{
	hc_req req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
	req.service = (char *)service;
	ProtobufCMessage *resp = NULL;
	int rc = drv_rpc_call(ch, health, 0, &req.base, &resp, timeout_ms, md, st);
	if (rc == 0) {
		assert_non_null(resp);
		assert_ptr_equal(resp->descriptor, &grpc__health__v1__health_check_response__descriptor);
		assert_int_equal(((hc_resp *)resp)->status, SERVING);
		drv_response_free(resp);
	} else {
		assert_null(resp);
	}
	return rc;
}

/* ---- tests ---- */

static void test_ok(void **state)
{
	struct fixture *f = *state;
	struct drv_status st;
	for (int i = 0; i < 50; i++) {
		assert_int_equal(check(f->ch, "", 5000, NULL, &st), 0);
		assert_int_equal(st.code, 0);
	}
}

static void test_error_reaches_client(void **state)
{
	struct fixture *f = *state;
	struct drv_status st;
	assert_int_equal(check(f->ch, "err", 5000, NULL, &st), DRV_ENOTFOUND);
	assert_int_equal(st.code, DRV_ENOTFOUND);
	assert_string_equal(st.message, "no such service: err");
}

static void test_handler_bugs(void **state)
{
	struct fixture *f = *state;
	struct drv_status st;
	/* A reply of the wrong type or none at all is INTERNAL with a message, not a crash. */
	assert_int_equal(check(f->ch, "wrongtype", 5000, NULL, &st), DRV_EINTERNAL);
	assert_non_null(strstr(st.message, "grpc.health.v1.HealthCheckResponse"));
	assert_int_equal(check(f->ch, "noresp", 5000, NULL, &st), DRV_EINTERNAL);
	assert_non_null(strstr(st.message, "no message"));
	assert_int_equal(check(f->ch, "", 5000, NULL, &st), 0);
}

static char certdir[300];

static void test_garbage_tls_files(void **state)
{
	char cert[300], err[256] = "";
	snprintf(cert, sizeof(cert), "%s/garbage.pem", tmpdir);
	FILE *fp = fopen(cert, "w");
	assert_non_null(fp);
	fputs("not a certificate\n", fp);
	fclose(fp);
	struct drv_rpc_server *srv = NULL;
	struct drv_rpc_server_opts o = {
	    .address = "127.0.0.1:0", .tls_cert_file = cert, .tls_key_file = cert};
	int rc = drv_rpc_server_new(&o, &srv, err, sizeof(err));
	if (rc == 0) {
		assert_int_equal(drv_rpc_server_add(srv, health, 0, health_check, NULL, 0), 0);
		rc = drv_rpc_server_start(srv, NULL, err, sizeof(err));
		drv_rpc_server_free(srv);
	}
	/* Refused, with the file named, at new or at start. */
	assert_int_not_equal(rc, 0);
	assert_non_null(strstr(err, "garbage.pem"));

	/* A certificate and a key that do not belong together pass the check but not gRPC. */
	char ocert[400], skey[400];
	snprintf(ocert, sizeof(ocert), "%s/other-ca.pem", certdir);
	snprintf(skey, sizeof(skey), "%s/server.key", certdir);
	o = (struct drv_rpc_server_opts){
	    .address = "127.0.0.1:0", .tls_cert_file = ocert, .tls_key_file = skey};
	rc = drv_rpc_server_new(&o, &srv, err, sizeof(err));
	if (rc == 0) {
		rc = drv_rpc_server_start(srv, NULL, err, sizeof(err));
		drv_rpc_server_free(srv);
	}
	assert_int_not_equal(rc, 0);
	assert_non_null(strstr(err, "TLS"));

	/* The client side checks its files the same way. */
	struct drv_rpc_channel *ch;
	struct drv_rpc_channel_opts co = {.target = "127.0.0.1:1", .ca_file = skey};
	assert_int_equal(drv_rpc_channel_new(&co, &ch, err, sizeof(err)), DRV_EINVAL);
	assert_non_null(strstr(err, "server.key"));
}

static void test_unknown_method(void **state)
{
	struct fixture *f = *state;
	struct drv_status st;
	hc_req req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
	ProtobufCMessage *resp = NULL;
	int64_t t0 = now_ms();
	int rc = drv_rpc_call(f->ch, &wrong_health, 1, &req.base, &resp, 5000, NULL, &st);
	int64_t took = now_ms() - t0;
	assert_int_equal(rc, DRV_EUNIMPLEMENTED);
	assert_null(resp);
	assert_non_null(strstr(st.message, "/grpc.health.v1.Health/Nope"));
	assert_true(took < 1000);
}

static void test_unparsable_request(void **state)
{
	struct fixture *f = *state;
	struct drv_status st;
	hc_resp req = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
	req.status = SERVING;
	ProtobufCMessage *resp = NULL;
	int before = atomic_load(&handler_calls);
	int rc = drv_rpc_call(f->ch, &wrong_health, 0, &req.base, &resp, 5000, NULL, &st);
	assert_int_equal(rc, DRV_EINVAL);
	assert_non_null(strstr(st.message, "grpc.health.v1.HealthCheckRequest"));
	assert_int_equal(atomic_load(&handler_calls), before);
	/* The server is unharmed. */
	assert_int_equal(check(f->ch, "", 5000, NULL, &st), 0);
}

static void test_deadline(void **state)
{
	struct fixture *f = *state;
	struct drv_status st;
	int64_t t0 = now_ms();
	assert_int_equal(check(f->ch, "hang", 50, NULL, &st), DRV_EDEADLINE);
	int64_t took = now_ms() - t0;
	/* At the deadline, not at a later timer (the call itself would wait forever). */
	assert_true(took >= 45);
	assert_true(took < 1000);
	/* The server learns the call is over and keeps serving others. */
	assert_int_equal(check(f->ch, "", 5000, NULL, &st), 0);
	/* On a loaded machine the handler may run only after the client gave up. */
	struct drv_rpc_call *h = NULL;
	int64_t until = now_ms() + 2000;
	while (!h && now_ms() < until) {
		h = take_hung_call();
		if (!h)
			sleep_ms(2);
	}
	assert_non_null(h);
	until = now_ms() + 2000;
	while (!drv_rpc_call_cancelled(h) && now_ms() < until)
		sleep_ms(2);
	bool cancelled = drv_rpc_call_cancelled(h);
	/* The server's deadline runs from the call's arrival, a transit time after the client's. */
	int64_t left = drv_rpc_call_time_left_ms(h);
	/* Replying to a call the client gave up on is harmless. */
	reply_serving(h);
	assert_true(cancelled);
	assert_true(left <= 20);
	assert_int_equal(check(f->ch, "", 5000, NULL, &st), 0);
}

/*
 * A handler that still holds a call when the server is freed (its client
 * gave up, so gRPC counts the call as done) finds it cancelled, and may
 * reply to it afterwards without touching the freed server (ASan checks).
 */
static void test_reply_after_free(void **state)
{
	struct fixture *f = *state;
	struct drv_status st;
	assert_int_equal(check(f->ch, "hang", 50, NULL, &st), DRV_EDEADLINE);
	struct drv_rpc_call *h = NULL;
	for (int64_t until = now_ms() + 2000; !h && now_ms() < until;) {
		h = take_hung_call();
		if (!h)
			sleep_ms(2);
	}
	assert_non_null(h);
	drv_rpc_server_free(f->srv);
	f->srv = NULL;
	assert_true(drv_rpc_call_cancelled(h));
	reply_serving(h);
}

static void test_deferred_reply(void **state)
{
	struct fixture *f = *state;
	struct drv_status st;
	for (int i = 0; i < 5; i++)
		assert_int_equal(check(f->ch, "defer", 5000, NULL, &st), 0);
}

static void test_metadata(void **state)
{
	struct fixture *f = *state;
	struct drv_status st;
	const struct drv_rpc_metadata md[] = {
	    {"authorization", "Bearer t0k3n"}, {"x-request-id", "42"}, {NULL, NULL}};
	int rc = check(f->ch, "md", 5000, md, &st);
	if (rc != 0)
		fail_msg("metadata call: %s", st.message);
	/* Without it the handler refuses, so the check above can fail. */
	assert_int_equal(check(f->ch, "md", 5000, NULL, &st), DRV_EPERM);
	assert_non_null(strstr(st.message, "authorization=(none)"));
	/* Upper-case keys are not valid HTTP/2 metadata: a clear local error. */
	const struct drv_rpc_metadata bad[] = {{"Authorization", "x"}, {NULL, NULL}};
	assert_int_equal(check(f->ch, "", 5000, bad, &st), DRV_EINVAL);
	assert_non_null(strstr(st.message, "metadata"));
}

struct worker_arg {
	struct drv_rpc_channel *ch;
	const char *service;
	int calls;
	int ok;
};

static void *call_loop(void *arg)
{
	struct worker_arg *w = arg;
	struct drv_status st;
	for (int i = 0; i < w->calls; i++)
		if (check(w->ch, w->service, 10000, NULL, &st) == 0)
			w->ok++;
	return NULL;
}

/* 16 threads at once, each making `calls` calls of `service`; every call must answer OK. */
static void call_from_16_threads(struct fixture *f, const char *service, int calls)
{
	pthread_t t[16];
	struct worker_arg w[16];
	for (int i = 0; i < 16; i++) {
		w[i] = (struct worker_arg){.ch = f->ch, .service = service, .calls = calls};
		assert_int_equal(pthread_create(&t[i], NULL, call_loop, &w[i]), 0);
	}
	for (int i = 0; i < 16; i++) {
		pthread_join(t[i], NULL);
		assert_int_equal(w[i].ok, calls);
	}
}

static void test_concurrent(void **state)
{
	struct fixture *f = *state;
	/* 16 calls answered 100 ms later each, all at once: one after another would take 1.6 s. */
	int64_t t0 = now_ms();
	call_from_16_threads(f, "defer", 1);
	assert_true(now_ms() - t0 < 1200);
	call_from_16_threads(f, "", 200);
}

struct async_state {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	int done;
	int ok;
	int not_found;
	int last_code;
};

static void async_done(void *ud, int code, const char *message, ProtobufCMessage *resp)
{
	struct async_state *a = ud;
	pthread_mutex_lock(&a->lock);
	if (code == 0 && resp && ((hc_resp *)resp)->status == SERVING)
		a->ok++;
	if (code == DRV_ENOTFOUND && strcmp(message, "no such service: err") == 0)
		a->not_found++;
	a->last_code = code;
	a->done++;
	pthread_cond_signal(&a->cond);
	pthread_mutex_unlock(&a->lock);
	if (resp)
		drv_response_free(resp);
}

static void test_async(void **state)
{
	struct fixture *f = *state;
	struct async_state a = {.lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER};
	hc_req req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
	req.service = "";
	const struct drv_rpc_metadata md[] = {{"authorization", "Bearer t0k3n"}, {NULL, NULL}};
	for (int i = 0; i < 16; i++)
		assert_int_equal(drv_rpc_call_async(f->ch, health, 0, &req.base, 5000, md, async_done, &a),
		                 0);
	req.service = "err";
	assert_int_equal(drv_rpc_call_async(f->ch, health, 0, &req.base, 5000, NULL, async_done, &a), 0);
	pthread_mutex_lock(&a.lock);
	while (a.done < 17)
		pthread_cond_wait(&a.cond, &a.lock);
	pthread_mutex_unlock(&a.lock);
	assert_int_equal(a.ok, 16);
	assert_int_equal(a.not_found, 1);
}

static void test_channel_free_cancels(void **state)
{
	struct fixture *f = *state;
	struct async_state a = {.lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER};
	struct drv_rpc_channel *ch;
	char err[256];
	struct drv_rpc_channel_opts co = {.target = f->target};
	assert_int_equal(drv_rpc_channel_new(&co, &ch, err, sizeof(err)), 0);
	hc_req req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
	req.service = "hang";
	assert_int_equal(drv_rpc_call_async(ch, health, 0, &req.base, 10000, NULL, async_done, &a), 0);
	wait_for_hung_call();
	int64_t t0 = now_ms();
	drv_rpc_channel_free(ch);
	/* The callback ran, with CANCELLED, before free returned, and free did not wait for the deadline. */
	assert_true(now_ms() - t0 < 2000);
	assert_int_equal(a.done, 1);
	assert_int_equal(a.ok, 0);
	assert_int_equal(a.last_code, DRV_ECANCELLED);
}

static void test_large(void **state)
{
	struct fixture *f = *state;
	struct drv_status st;
	size_t n = 9u << 20;
	char ask[32];
	snprintf(ask, sizeof(ask), "size:%zu", n);
	hc_req req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
	req.service = ask;
	ProtobufCMessage *resp = NULL;
	int rc = drv_rpc_call(f->ch, &echo_service, 0, &req.base, &resp, 10000, NULL, &st);
	if (rc != 0)
		fail_msg("large response: %s", st.message);
	const char *s = ((hc_req *)resp)->service;
	assert_int_equal(strlen(s), n);
	assert_int_equal(s[n - 1], 'a' + (n - 1) % 26);
	drv_response_free(resp);
	/* And a large request comes back intact. */
	char *big = malloc(n + 1);
	memset(big, 'x', n);
	big[n] = '\0';
	req.service = big;
	rc = drv_rpc_call(f->ch, &echo_service, 0, &req.base, &resp, 10000, NULL, &st);
	if (rc != 0)
		fail_msg("large request: %s", st.message);
	assert_int_equal(strlen(((hc_req *)resp)->service), n);
	drv_response_free(resp);
	free(big);
}

static void *slow_caller(void *arg)
{
	struct worker_arg *w = arg;
	call_loop(w);
	return NULL;
}

static void test_shutdown_grace(void **state)
{
	struct fixture *f = *state;
	pthread_t t;
	struct worker_arg w = {.ch = f->ch, .service = "slow:200", .calls = 1};
	int before = atomic_load(&handler_calls);
	assert_int_equal(pthread_create(&t, NULL, slow_caller, &w), 0);
	/* Shut down once the handler has the call (a fixed sleep lost the race on a loaded machine). */
	int64_t until = now_ms() + 5000;
	while (atomic_load(&handler_calls) == before && now_ms() < until)
		sleep_ms(1);
	assert_int_not_equal(atomic_load(&handler_calls), before);
	int64_t t0 = now_ms();
	drv_rpc_server_shutdown(f->srv, 3000);
	int64_t took = now_ms() - t0;
	pthread_join(t, NULL);
	/* The call in flight finished normally, and shutdown did not sit out the whole grace. */
	assert_int_equal(w.ok, 1);
	assert_true(took < 2500);
	/* Idempotent, and new calls fail fast. */
	drv_rpc_server_shutdown(f->srv, 3000);
	struct drv_status st;
	assert_int_equal(check(f->ch, "", 5000, NULL, &st), DRV_EUNAVAILABLE);
}

static void test_shutdown_cancels_after_grace(void **state)
{
	struct fixture *f = *state;
	pthread_t t;
	struct worker_arg w = {.ch = f->ch, .service = "hang", .calls = 1};
	assert_int_equal(pthread_create(&t, NULL, slow_caller, &w), 0);
	wait_for_hung_call();
	int64_t t0 = now_ms();
	drv_rpc_server_shutdown(f->srv, 100);
	int64_t took = now_ms() - t0;
	pthread_join(t, NULL);
	assert_int_equal(w.ok, 0);
	assert_true(took >= 90);
	assert_true(took < 2500);
	/*
	 * The handler still holds its call, even past the server's free: it sees
	 * the cancellation, can still read the call, and replies late.
	 */
	drv_rpc_server_free(f->srv);
	f->srv = NULL;
	struct drv_rpc_call *h = take_hung_call();
	assert_non_null(h);
	bool cancelled = drv_rpc_call_cancelled(h);
	const char *method = drv_rpc_call_method(h);
	bool same_method = method && strcmp(method, "Check") == 0;
	const char *peer = drv_rpc_call_peer(h);
	bool have_peer = peer != NULL;
	drv_rpc_reply(h, DRV_ECANCELLED, "too late", NULL);
	assert_true(cancelled);
	assert_true(same_method);
	assert_true(have_peer);
}

struct storm_arg {
	struct drv_rpc_channel *ch;
	atomic_bool *stop;
	int ok, failed, odd;
};

static void *storm_thread(void *arg)
{
	struct storm_arg *a = arg;
	struct drv_status st;
	static const char *kinds[] = {"", "defer", "slow:5", "err"};
	for (unsigned i = 0; !atomic_load(a->stop); i++) {
		int rc = check(a->ch, kinds[i % 4], 5000, NULL, &st);
		if (rc == 0 || rc == DRV_ENOTFOUND)
			a->ok++;
		else if (rc == DRV_ECANCELLED || rc == DRV_EUNAVAILABLE)
			a->failed++;
		else
			a->odd++;
	}
	return NULL;
}

/* Shutdown in the middle of a storm of inline, worker and deferred calls: every call ends cleanly. */
static void test_shutdown_storm(void **state)
{
	struct fixture *f = *state;
	atomic_bool stop = false;
	pthread_t t[8];
	struct storm_arg a[8];
	for (int i = 0; i < 8; i++) {
		a[i] = (struct storm_arg){.ch = f->ch, .stop = &stop};
		assert_int_equal(pthread_create(&t[i], NULL, storm_thread, &a[i]), 0);
	}
	sleep_ms(150);
	int64_t t0 = now_ms();
	drv_rpc_server_shutdown(f->srv, 10);
	int64_t took = now_ms() - t0;
	sleep_ms(50);
	atomic_store(&stop, true);
	int ok = 0, odd = 0;
	for (int i = 0; i < 8; i++) {
		pthread_join(t[i], NULL);
		ok += a[i].ok;
		odd += a[i].odd;
	}
	assert_true(ok > 0);
	assert_int_equal(odd, 0);
	assert_true(took < 3000);
	/* Deferred replies may still arrive after the free; they only release their calls. */
	drv_rpc_server_free(f->srv);
	f->srv = NULL;
	sleep_ms(150);
}

static void test_no_server(void **state)
{
	char err[256], target[300];
	struct drv_rpc_channel *ch;
	snprintf(target, sizeof(target), "unix:%s/nobody.sock", tmpdir);
	struct drv_rpc_channel_opts co = {.target = target};
	assert_int_equal(drv_rpc_channel_new(&co, &ch, err, sizeof(err)), 0);
	struct drv_status st;
	int64_t t0 = now_ms();
	assert_int_equal(check(ch, "", 5000, NULL, &st), DRV_EUNAVAILABLE);
	assert_true(now_ms() - t0 < 1000);
	drv_rpc_channel_free(ch);
}

/* Serves health on `addr` after `delay_ms`, from another thread. */
struct late_server {
	const char *addr;
	int delay_ms;
	struct drv_rpc_server *srv;
	int rc;
};

static void *start_late(void *arg)
{
	struct late_server *l = arg;
	char err[256];
	sleep_ms(l->delay_ms);
	struct drv_rpc_server_opts o = {.address = l->addr};
	l->rc = drv_rpc_server_new(&o, &l->srv, err, sizeof(err));
	if (l->rc == 0 &&
	    (l->rc = drv_rpc_server_add(l->srv, health, 0, health_check, NULL, DRV_RPC_INLINE)) == 0)
		l->rc = drv_rpc_server_start(l->srv, NULL, err, sizeof(err));
	return NULL;
}

static void test_wait_for_ready(void **state)
{
	char err[256], addr[300];
	snprintf(addr, sizeof(addr), "unix:%s/late.sock", tmpdir);
	struct drv_rpc_channel *ch;
	struct drv_rpc_channel_opts co = {.target = addr, .wait_for_ready = true};
	assert_int_equal(drv_rpc_channel_new(&co, &ch, err, sizeof(err)), 0);
	struct late_server l = {.addr = addr, .delay_ms = 200};
	pthread_t t;
	int64_t t0 = now_ms();
	assert_int_equal(pthread_create(&t, NULL, start_late, &l), 0);
	struct drv_status st;
	/* Waits for the server that comes up 200 ms later instead of failing at once. */
	int rc = check(ch, "", 5000, NULL, &st);
	int64_t took = now_ms() - t0;
	pthread_join(t, NULL);
	assert_int_equal(l.rc, 0);
	if (rc != 0)
		fail_msg("wait_for_ready call: %s", st.message);
	assert_true(took >= 150);
	assert_true(took < 3000);
	drv_rpc_channel_free(ch);
	drv_rpc_server_free(l.srv);
}

static void test_reconnect(void **state)
{
	char err[256], addr[300];
	snprintf(addr, sizeof(addr), "unix:%s/re.sock", tmpdir);
	struct late_server a = {.addr = addr};
	start_late(&a);
	assert_int_equal(a.rc, 0);
	struct drv_rpc_channel *ch;
	struct drv_rpc_channel_opts co = {.target = addr};
	assert_int_equal(drv_rpc_channel_new(&co, &ch, err, sizeof(err)), 0);
	struct drv_status st;
	assert_int_equal(check(ch, "", 5000, NULL, &st), 0);
	drv_rpc_server_free(a.srv);
	/* Down for ~600 ms while the client keeps trying: failed connects grow the backoff. */
	int64_t t0 = now_ms();
	while (now_ms() - t0 < 600) {
		assert_int_equal(check(ch, "", 5000, NULL, &st), DRV_EUNAVAILABLE);
		sleep_ms(50);
	}
	struct late_server b = {.addr = addr};
	start_late(&b);
	assert_int_equal(b.rc, 0);
	int64_t up = now_ms();
	while (check(ch, "", 5000, NULL, &st) != 0 && now_ms() - up < 10000)
		sleep_ms(20);
	int64_t took = now_ms() - up;
	/* The same channel recovers by itself once the server is back (backoff 250 ms growing to 5 s). */
	assert_true(took < 3000);
	drv_rpc_channel_free(ch);
	drv_rpc_server_free(b.srv);
}

/* The SDK's internal pair for a spawned driver's connection (drv_internal.h). */
int drv__rpc_channel_new_fd(const struct drv_rpc_channel_opts *opts, int fd, struct drv_rpc_channel **out,
                            char *err, size_t errlen);
int drv__rpc_server_start_unbound(struct drv_rpc_server *srv, char *err, size_t errlen);
void drv__rpc_server_adopt_fd(struct drv_rpc_server *srv, int fd);

struct fd_call {
	struct drv_rpc_channel *ch;
	int rc;
	struct drv_status st;
};

static void *call_on_fd(void *arg)
{
	struct fd_call *c = arg;
	c->rc = check(c->ch, "", 5000, NULL, &c->st);
	return NULL;
}

/*
 * A channel on a connected descriptor (what a host does with a spawned
 * driver's socket): its first call goes out before anybody serves the other
 * end and is answered once a server adopts it; once that connection is gone,
 * calls fail fast and the channel never reconnects.
 */
static void test_channel_on_fd(void **state)
{
	char err[256] = "";
	int sv[2];
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	struct drv_rpc_channel_opts co = {.target = "unix:/nowhere/fd.sock"};
	struct fd_call c = {.rc = -1};
	assert_int_equal(drv__rpc_channel_new_fd(&co, sv[1], &c.ch, err, sizeof(err)), 0);
	pthread_t t;
	assert_int_equal(pthread_create(&t, NULL, call_on_fd, &c), 0);
	sleep_ms(100);
	/* The call is written, unanswered: nothing serves the other end yet. */
	char peek[512];
	ssize_t pending = recv(sv[0], peek, sizeof(peek), MSG_PEEK | MSG_DONTWAIT);
	assert_true(pending > 24); /* more than the HTTP/2 preface: SETTINGS and the call */

	struct drv_rpc_server_opts o = {.address = "unix:/nowhere/fd-server.sock"};
	struct drv_rpc_server *srv;
	assert_int_equal(drv_rpc_server_new(&o, &srv, err, sizeof(err)), 0);
	assert_int_equal(drv_rpc_server_add(srv, health, 0, health_check, NULL, DRV_RPC_INLINE), 0);
	assert_int_equal(drv__rpc_server_start_unbound(srv, err, sizeof(err)), 0);
	fcntl(sv[0], F_SETFL, fcntl(sv[0], F_GETFL) | O_NONBLOCK);
	drv__rpc_server_adopt_fd(srv, sv[0]);
	pthread_join(t, NULL);
	if (c.rc != 0)
		fail_msg("first call on the descriptor: %s", c.st.message);
	struct drv_status st;
	assert_int_equal(check(c.ch, "", 5000, NULL, &st), 0);

	/* The server goes, and its connection with it. */
	drv_rpc_server_shutdown(srv, 0);
	drv_rpc_server_free(srv);
	int64_t t0 = now_ms();
	for (int i = 0; i < 5; i++) {
		assert_int_equal(check(c.ch, "", 5000, NULL, &st), DRV_EUNAVAILABLE);
		sleep_ms(50);
	}
	assert_true(now_ms() - t0 < 2000);
	drv_rpc_channel_free(c.ch);

	/* TLS cannot run on a given descriptor: refused, and the descriptor is closed all the same. */
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	struct drv_rpc_channel_opts tls = {.target = "unix:/nowhere/fd.sock", .ca_file = "/nowhere/ca.pem"};
	struct drv_rpc_channel *ch = NULL;
	err[0] = '\0';
	assert_int_equal(drv__rpc_channel_new_fd(&tls, sv[1], &ch, err, sizeof(err)), DRV_EINVAL);
	assert_null(ch);
	assert_non_null(strstr(err, "plain text"));
	assert_int_equal(fcntl(sv[1], F_GETFD), -1);
	assert_int_equal(errno, EBADF);
	close(sv[0]);
}

static void test_bad_options(void **state)
{
	char err[256] = "", path[300], addr[320];
	struct drv_rpc_server *srv;
	struct drv_rpc_channel *ch;
	struct drv_rpc_server_opts o = {.address = "unix:relative.sock"};
	assert_int_equal(drv_rpc_server_new(&o, &srv, err, sizeof(err)), DRV_EINVAL);
	assert_non_null(strstr(err, "relative.sock"));

	/* A regular file where the socket should go. */
	snprintf(path, sizeof(path), "%s/regular", tmpdir);
	FILE *fp = fopen(path, "w");
	assert_non_null(fp);
	fclose(fp);
	snprintf(addr, sizeof(addr), "unix:%s", path);
	o = (struct drv_rpc_server_opts){.address = addr};
	assert_int_equal(drv_rpc_server_new(&o, &srv, err, sizeof(err)), 0);
	assert_int_equal(drv_rpc_server_add(srv, health, 0, health_check, NULL, 0), 0);
	assert_int_equal(drv_rpc_server_add(srv, health, 0, health_check, NULL, 0), DRV_EEXIST);
	assert_int_equal(drv_rpc_server_add(srv, health, 7, health_check, NULL, 0), DRV_EINVAL);
	assert_int_not_equal(drv_rpc_server_start(srv, NULL, err, sizeof(err)), 0);
	assert_non_null(strstr(err, "not a socket"));
	drv_rpc_server_free(srv);

	o = (struct drv_rpc_server_opts){.address = "127.0.0.1:0",
	                                 .tls_cert_file = "/nonexistent/cert.pem",
	                                 .tls_key_file = "/nonexistent/key.pem"};
	assert_int_equal(drv_rpc_server_new(&o, &srv, err, sizeof(err)), DRV_EINVAL);
	assert_non_null(strstr(err, "/nonexistent/cert.pem"));
	o = (struct drv_rpc_server_opts){.address = "127.0.0.1:0", .tls_cert_file = "/nonexistent/cert.pem"};
	assert_int_equal(drv_rpc_server_new(&o, &srv, err, sizeof(err)), DRV_EINVAL);
	assert_non_null(strstr(err, "tls_key_file"));

	struct drv_rpc_channel_opts co = {
	    .target = "127.0.0.1:1", .cert_file = "/x.pem", .key_file = "/y.pem"};
	assert_int_equal(drv_rpc_channel_new(&co, &ch, err, sizeof(err)), DRV_EINVAL);
	assert_non_null(strstr(err, "ca_file"));
	assert_int_equal(drv_rpc_method_index(health, "Check"), 0);
	assert_int_equal(drv_rpc_method_index(health, "Watch"), -1);
}

/* ---- mutual TLS ---- */

static void tls_paths(char *buf, size_t n, const char *name)
{
	snprintf(buf, n, "%s/%s", certdir, name);
}

/* gRPC's log lines as drv_rpc_set_log hands them over. */
static pthread_mutex_t grpc_lines_mu = PTHREAD_MUTEX_INITIALIZER;
static char grpc_lines[8192];
static int grpc_errors;

static void capture_grpc_line(int level, const char *text)
{
	pthread_mutex_lock(&grpc_lines_mu);
	size_t n = strlen(grpc_lines);
	snprintf(grpc_lines + n, sizeof(grpc_lines) - n, "%d %s\n", level, text);
	if (level == DRV_LOG_ERROR)
		grpc_errors++;
	pthread_mutex_unlock(&grpc_lines_mu);
}

static void test_mtls(void **state)
{
	char ca[400], scert[400], skey[400], ccert[400], ckey[400], ocert[400], okey[400], err[256] = "";
	tls_paths(ca, sizeof(ca), "ca.pem");
	tls_paths(scert, sizeof(scert), "server.pem");
	tls_paths(skey, sizeof(skey), "server.key");
	tls_paths(ccert, sizeof(ccert), "client.pem");
	tls_paths(ckey, sizeof(ckey), "client.key");
	tls_paths(ocert, sizeof(ocert), "other-client.pem");
	tls_paths(okey, sizeof(okey), "other-client.key");

	struct fixture f = {0};
	struct drv_rpc_server_opts o = {
	    .address = "127.0.0.1:0", .tls_cert_file = scert, .tls_key_file = skey, .client_ca_file = ca};
	assert_int_equal(start_server(&f, &o, DRV_RPC_INLINE), 0);

	struct drv_status st;
	struct drv_rpc_channel *ch;
	/* Good client certificate: served. */
	struct drv_rpc_channel_opts co = {
	    .target = f.target, .ca_file = ca, .cert_file = ccert, .key_file = ckey};
	assert_int_equal(drv_rpc_channel_new(&co, &ch, err, sizeof(err)), 0);
	int rc = check(ch, "", 5000, NULL, &st);
	if (rc != 0)
		fail_msg("mTLS call: %s", st.message);
	drv_rpc_channel_free(ch);

	/* Same, naming the server by its DNS SAN through the override. */
	snprintf(f.target, sizeof(f.target), "localhost:%s", strrchr(f.target, ':') + 1);
	co = (struct drv_rpc_channel_opts){.target = f.target,
	                                   .ca_file = ca,
	                                   .cert_file = ccert,
	                                   .key_file = ckey,
	                                   .server_name = "localhost"};
	assert_int_equal(drv_rpc_channel_new(&co, &ch, err, sizeof(err)), 0);
	rc = check(ch, "", 5000, NULL, &st);
	if (rc != 0)
		fail_msg("mTLS call via localhost: %s", st.message);
	drv_rpc_channel_free(ch);

	/*
	 * A certificate from another CA: refused, and gRPC's line about it
	 * reaches the program's log hook, not stderr.
	 */
	drv_rpc_set_log(capture_grpc_line);
	co = (struct drv_rpc_channel_opts){
	    .target = f.target, .ca_file = ca, .cert_file = ocert, .key_file = okey};
	assert_int_equal(drv_rpc_channel_new(&co, &ch, err, sizeof(err)), 0);
	assert_int_not_equal(check(ch, "", 5000, NULL, &st), 0);
	drv_rpc_channel_free(ch);
	drv_rpc_set_log(NULL);
	pthread_mutex_lock(&grpc_lines_mu);
	if (grpc_errors == 0 || !strstr(grpc_lines, "gRPC: Handshake failed"))
		fail_msg("no gRPC error line about the handshake reached the hook; it got:\n%s", grpc_lines);
	pthread_mutex_unlock(&grpc_lines_mu);

	/* No client certificate: refused. */
	co = (struct drv_rpc_channel_opts){.target = f.target, .ca_file = ca};
	assert_int_equal(drv_rpc_channel_new(&co, &ch, err, sizeof(err)), 0);
	assert_int_not_equal(check(ch, "", 5000, NULL, &st), 0);
	drv_rpc_channel_free(ch);

	/* A plaintext client: refused. */
	co = (struct drv_rpc_channel_opts){.target = f.target};
	assert_int_equal(drv_rpc_channel_new(&co, &ch, err, sizeof(err)), 0);
	assert_int_not_equal(check(ch, "", 5000, NULL, &st), 0);
	drv_rpc_channel_free(ch);

	/* A client that does not trust the server's CA: refused. */
	tls_paths(ca, sizeof(ca), "other-ca.pem");
	co = (struct drv_rpc_channel_opts){
	    .target = f.target, .ca_file = ca, .cert_file = ccert, .key_file = ckey};
	assert_int_equal(drv_rpc_channel_new(&co, &ch, err, sizeof(err)), 0);
	assert_int_not_equal(check(ch, "", 5000, NULL, &st), 0);
	drv_rpc_channel_free(ch);

	drv_rpc_server_free(f.srv);
}

static int make_certs(void)
{
	char cmd[1024];
	snprintf(certdir, sizeof(certdir), "%s/certs", tmpdir);
	snprintf(cmd, sizeof(cmd), "sh '%s' '%s' >/dev/null 2>&1", GEN_CERTS, certdir);
	return system(cmd) == 0 ? 0 : -1;
}

static void remove_tmpdir(void)
{
	char cmd[400];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
	if (system(cmd) != 0)
		fprintf(stderr, "could not remove %s\n", tmpdir);
}

int main(void)
{
	/* As every user of the transport must: block the signals before any thread starts. */
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGPIPE);
	pthread_sigmask(SIG_BLOCK, &set, NULL);

	snprintf(tmpdir, sizeof(tmpdir), "/tmp/drover-rpc-test-XXXXXX");
	if (!mkdtemp(tmpdir)) {
		perror("mkdtemp");
		return 1;
	}
	if (make_certs() != 0) {
		fprintf(stderr, "gen-certs.sh failed\n");
		remove_tmpdir();
		return 1;
	}
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_ok, setup_unix, teardown),
	    cmocka_unit_test_setup_teardown(test_ok, setup_tcp, teardown),
	    cmocka_unit_test_setup_teardown(test_error_reaches_client, setup_unix, teardown),
	    cmocka_unit_test_setup_teardown(test_error_reaches_client, setup_tcp, teardown),
	    cmocka_unit_test_setup_teardown(test_handler_bugs, setup_unix, teardown),
	    cmocka_unit_test_setup_teardown(test_handler_bugs, setup_tcp, teardown),
	    cmocka_unit_test(test_garbage_tls_files),
	    cmocka_unit_test_setup_teardown(test_unknown_method, setup_unix, teardown),
	    cmocka_unit_test_setup_teardown(test_unknown_method, setup_tcp, teardown),
	    cmocka_unit_test_setup_teardown(test_unparsable_request, setup_unix, teardown),
	    cmocka_unit_test_setup_teardown(test_unparsable_request, setup_tcp, teardown),
	    cmocka_unit_test_setup_teardown(test_deadline, setup_unix, teardown),
	    cmocka_unit_test_setup_teardown(test_deadline, setup_tcp, teardown),
	    cmocka_unit_test_setup_teardown(test_deferred_reply, setup_unix, teardown),
	    cmocka_unit_test_setup_teardown(test_reply_after_free, setup_unix, teardown),
	    cmocka_unit_test_setup_teardown(test_deferred_reply, setup_tcp, teardown),
	    cmocka_unit_test_setup_teardown(test_metadata, setup_unix, teardown),
	    cmocka_unit_test_setup_teardown(test_metadata, setup_tcp, teardown),
	    cmocka_unit_test_setup_teardown(test_concurrent, setup_unix, teardown),
	    cmocka_unit_test_setup_teardown(test_concurrent, setup_tcp, teardown),
	    cmocka_unit_test_setup_teardown(test_async, setup_unix, teardown),
	    cmocka_unit_test_setup_teardown(test_channel_free_cancels, setup_unix, teardown),
	    cmocka_unit_test_setup_teardown(test_large, setup_unix, teardown),
	    cmocka_unit_test_setup_teardown(test_large, setup_tcp, teardown),
	    cmocka_unit_test_setup_teardown(test_shutdown_grace, setup_unix, teardown),
	    cmocka_unit_test_setup_teardown(test_shutdown_grace, setup_tcp, teardown),
	    cmocka_unit_test_setup_teardown(test_shutdown_cancels_after_grace, setup_unix, teardown),
	    cmocka_unit_test_setup_teardown(test_shutdown_cancels_after_grace, setup_tcp, teardown),
	    cmocka_unit_test_setup_teardown(test_shutdown_storm, setup_unix, teardown),
	    cmocka_unit_test_setup_teardown(test_shutdown_storm, setup_tcp, teardown),
	    cmocka_unit_test(test_no_server),
	    cmocka_unit_test(test_wait_for_ready),
	    cmocka_unit_test(test_reconnect),
	    cmocka_unit_test(test_channel_on_fd),
	    cmocka_unit_test(test_bad_options),
	    cmocka_unit_test(test_mtls),
	};
	int failed = cmocka_run_group_tests_name("rpc", tests, NULL, NULL);
	remove_tmpdir();
	return failed;
}
