/*
 * End-to-end tests of drv_main and the dispatcher: a real driver process
 * (runtime_driver.c) started through the hosting half or by fork/exec, over
 * real unix sockets and loopback TCP.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>
#include <jansson.h>

#include "async_result.h"
#include "drover/host.h"
#include "drover/rpc.h"
#include "grpc/health/v1/health.pb-c.h"

#define COOKIE DRV_MAGIC_COOKIE_KEY "=" DRV_MAGIC_COOKIE_VALUE
#define CALL_MS 10000

static double now_ms(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec * 1e3 + (double)t.tv_nsec / 1e6;
}

/* ---- running the binary directly ---- */

struct proc {
	pid_t pid;
	int in, out, err; /* our ends: child's stdin, stdout, stderr */
};

/*
 * Children started by proc_start and not yet reaped: a failing assertion
 * leaves its test early, and the group teardown kills what is left so no
 * standalone driver (which ignores stdin EOF) outlives the test.
 */
static pid_t live[32];

static void live_add(pid_t pid)
{
	for (size_t i = 0; i < sizeof(live) / sizeof(live[0]); i++)
		if (live[i] == 0) {
			live[i] = pid;
			return;
		}
}

static void live_remove(pid_t pid)
{
	for (size_t i = 0; i < sizeof(live) / sizeof(live[0]); i++)
		if (live[i] == pid)
			live[i] = 0;
}

static int kill_leftovers(void **state)
{
	for (size_t i = 0; i < sizeof(live) / sizeof(live[0]); i++)
		if (live[i] > 0) {
			kill(live[i], SIGKILL);
			waitpid(live[i], NULL, 0);
			live[i] = 0;
		}
	return 0;
}

/* Standard fds (bit 0: stdin, 1: stdout) the next proc_start closes in the child before exec. */
static int child_close_mask;

static void proc_start(struct proc *p, const char *const *args, const char *const *env)
{
	int pin[2], pout[2], perr[2];
	const char *argv[16] = {RUNTIME_DRIVER};
	int n = 1;
	for (; args && args[n - 1]; n++)
		argv[n] = args[n - 1];
	argv[n] = NULL;
	assert_int_equal(pipe2(pin, O_CLOEXEC), 0);
	assert_int_equal(pipe2(pout, O_CLOEXEC), 0);
	assert_int_equal(pipe2(perr, O_CLOEXEC), 0);
	p->pid = fork();
	assert_true(p->pid >= 0);
	if (p->pid == 0) {
		dup2(pin[0], 0);
		dup2(pout[1], 1);
		dup2(perr[1], 2);
		for (int fd = 0; fd <= 1; fd++)
			if (child_close_mask & (1 << fd))
				close(fd);
		execve(RUNTIME_DRIVER, (char **)argv, (char **)env);
		_exit(127);
	}
	live_add(p->pid);
	close(pin[0]);
	close(pout[1]);
	close(perr[1]);
	p->in = pin[1];
	p->out = pout[0];
	p->err = perr[0];
}

/* Reads fd until EOF (or `stop_at_newline` and a newline) or timeout into buf. */
static size_t read_all(int fd, char *buf, size_t len, int timeout_ms, bool stop_at_newline)
{
	size_t n = 0;
	double end = now_ms() + timeout_ms;
	while (n + 1 < len) {
		struct pollfd pfd = {.fd = fd, .events = POLLIN};
		int left = (int)(end - now_ms());
		if (left <= 0 || poll(&pfd, 1, left) <= 0)
			break;
		ssize_t r = read(fd, buf + n, len - 1 - n);
		if (r <= 0)
			break;
		n += (size_t)r;
		if (stop_at_newline && memchr(buf, '\n', n))
			break;
	}
	buf[n] = '\0';
	return n;
}

/* Waits up to timeout_ms for the child; returns its exit code, 128+signal, or -1 (then kills it). */
static int proc_wait(struct proc *p, int timeout_ms)
{
	int status;
	double end = now_ms() + timeout_ms;
	for (;;) {
		pid_t r = waitpid(p->pid, &status, WNOHANG);
		if (r == p->pid)
			break;
		if (now_ms() > end) {
			kill(p->pid, SIGKILL);
			waitpid(p->pid, &status, 0);
			status = -1;
			break;
		}
		usleep(2000);
	}
	live_remove(p->pid);
	close(p->in);
	close(p->out);
	close(p->err);
	if (status == -1)
		return -1;
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/* Runs to completion; stdout and stderr into the buffers. */
static int run(const char *const *args, const char *const *env, char *out, size_t outlen, char *err,
               size_t errlen)
{
	struct proc p;
	proc_start(&p, args, env);
	close(p.in);
	p.in = open("/dev/null", O_RDONLY);
	read_all(p.out, out, outlen, 5000, false);
	read_all(p.err, err, errlen, 5000, false);
	return proc_wait(&p, 5000);
}

static const char *const no_env[] = {"PATH=/usr/bin:/bin", NULL};
static const char *const cookie_env[] = {"PATH=/usr/bin:/bin", COOKIE, NULL};

static void test_cli_help_version_info(void **state)
{
	char out[16384], err[4096];
	const char *help[] = {"--help", NULL};
	assert_int_equal(run(help, no_env, out, sizeof(out), err, sizeof(err)), 0);
	assert_non_null(strstr(out, "Usage: test-sdk-runtime-driver"));
	assert_non_null(strstr(out, "--listen HOST:PORT"));
	assert_non_null(strstr(out, "--grace-ms"));

	const char *version[] = {"--version", NULL};
	assert_int_equal(run(version, no_env, out, sizeof(out), err, sizeof(err)), 0);
	assert_string_equal(out, "rtest 0.0.1 (drover protocol 1)\n");

	const char *info[] = {"--info", NULL};
	assert_int_equal(run(info, no_env, out, sizeof(out), err, sizeof(err)), 0);
	json_error_t je;
	json_t *o = json_loads(out, 0, &je);
	if (!o)
		fail_msg("--info is not JSON: %s\n%s", je.text, out);
	assert_string_equal(json_string_value(json_object_get(o, "type")), "rtest");
	assert_int_equal(json_integer_value(json_object_get(o, "protocol_version")), 1);
	json_t *f = json_object_get(o, "features");
	assert_int_equal(json_array_size(f), 6);
	assert_string_equal(json_string_value(json_array_get(f, 0)), "OFFERS");
	assert_string_equal(json_string_value(json_array_get(f, 5)), "MULTINODE");
	json_t *props = json_object_get(json_object_get(o, "config_schema"), "properties");
	assert_non_null(json_object_get(props, "offers"));
	assert_non_null(
	    json_object_get(json_object_get(json_object_get(o, "secrets_schema"), "properties"), "token"));
	json_decref(o);
}

static void test_cli_errors(void **state)
{
	static const struct {
		const char *args[8];
		int code;
		const char *needle;
	} cases[] = {
	    {{"--bogus"}, 2, "unknown argument \"--bogus\""},
	    {{"--workers", "zero"}, 2, "--workers: expected an integer"},
	    {{"--workers", "0"}, 2, "--workers"},
	    {{"--workers"}, 2, "option --workers needs a value"},
	    {{"--grace-ms=-5"}, 2, "--grace-ms"},
	    {{"--help=yes"}, 2, "--help takes no value"},
	    {{"--listen", "nocolon"}, 2, "--listen: expected HOST:PORT"},
	    {{"--listen", "127.0.0.1:99999"}, 2, "--listen"},
	    {{"--listen", "0.0.0.0:0"}, 2, "refusing plain TCP on non-loopback address \"0.0.0.0\""},
	    /* A name is not resolved: one that merely starts like a loopback address is not one. */
	    {{"--listen", "127.0.0.1.example:0"},
	     2,
	     "refusing plain TCP on non-loopback address \"127.0.0.1.example\""},
	    {{"--listen", "127.0.0.1:0", "--tls-cert", "/etc/hostname"}, 2, "--tls-key is missing"},
	    {{"--listen", "127.0.0.1:0", "--tls-cert", "/etc/hostname", "--tls-key", "/etc/hostname"},
	     2,
	     "--client-ca is missing"},
	    {{"--tls-key", "/x"}, 2, "--tls-key needs --listen"},
	    {{"--listen", "127.0.0.1: 80"}, 2, "--listen: expected HOST:PORT"},
	    {{"--listen", "127.0.0.1:+80"}, 2, "--listen: expected HOST:PORT"},
	    {{"--workers", " 4"}, 2, "--workers: expected an integer"},
	    {{"--insecure"}, 2, "needs --listen"},
	    {{"--listen", "127.0.0.1:0", "--tls-cert", "/nonexistent", "--tls-key", "/x"}, 2, "--client-ca"},
	};
	char out[4096], err[4096];
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		int rc = run(cases[i].args, cookie_env, out, sizeof(out), err, sizeof(err));
		if (rc != cases[i].code || !strstr(err, cases[i].needle))
			fail_msg("case %zu (%s): exit %d, stderr: %s", i, cases[i].args[0], rc, err);
		assert_non_null(strstr(err, "--help"));
		assert_string_equal(out, "");
	}
}

static void test_not_a_plugin(void **state)
{
	char out[4096], err[4096];
	assert_int_equal(run(NULL, no_env, out, sizeof(out), err, sizeof(err)), 1);
	assert_non_null(strstr(err, "this is a drover driver plugin"));
	assert_non_null(strstr(err, "droverd or drover-conformance"));
	assert_non_null(strstr(err, "--listen"));
	assert_string_equal(out, "");
	const char *wrong[] = {"PATH=/usr/bin:/bin", DRV_MAGIC_COOKIE_KEY "=nope", NULL};
	assert_int_equal(run(NULL, wrong, out, sizeof(out), err, sizeof(err)), 1);
	assert_non_null(strstr(err, "plugin"));
}

static void test_partial_group_refused(void **state)
{
	char out[4096], err[4096];
	const char *env[] = {"PATH=/usr/bin:/bin", COOKIE, "RUNTIME_PARTIAL=1", NULL};
	assert_int_equal(run(NULL, env, out, sizeof(out), err, sizeof(err)), 1);
	assert_non_null(strstr(err, "VOLUMES is partly implemented"));
	assert_non_null(strstr(err, "ops.register_volume"));
	assert_string_equal(out, ""); /* no handshake */
}

static void test_start_failure(void **state)
{
	char out[4096], err[4096];
	const char *env[] = {"PATH=/usr/bin:/bin", COOKIE, "RUNTIME_FAIL_START=1", NULL};
	assert_int_equal(run(NULL, env, out, sizeof(out), err, sizeof(err)), 1);
	assert_non_null(strstr(err, "start-up failed"));
	assert_string_equal(out, "");
}

/* ---- spawned through the host ---- */

struct lines {
	pthread_mutex_t mu;
	char buf[1 << 16];
	size_t len;
	int n;
};

static void on_line(void *ud, const char *name, const char *line)
{
	struct lines *l = ud;
	pthread_mutex_lock(&l->mu);
	size_t n = strlen(line);
	if (l->len + n + 2 < sizeof(l->buf)) {
		memcpy(l->buf + l->len, line, n);
		l->len += n;
		l->buf[l->len++] = '\n';
		l->buf[l->len] = '\0';
	}
	l->n++;
	pthread_mutex_unlock(&l->mu);
}

static struct drv_host *spawn(const char *const *args, const char *const *env_extra, struct lines *l)
{
	struct drv_host *h = NULL;
	char err[512];
	struct drv_spawn_opts o = {.path = RUNTIME_DRIVER, .args = args, .env_extra = env_extra};
	static struct lines quiet; /* keeps the test output readable */
	if (!l)
		l = &quiet;
	memset(l, 0, sizeof(*l));
	pthread_mutex_init(&l->mu, NULL);
	o.on_stderr = on_line;
	o.ud = l;
	int rc = drv_host_spawn(&o, &h, err, sizeof(err));
	if (rc != 0)
		fail_msg("spawn: %s", err);
	return h;
}

static drv_backend_config *config(const char *json, const char *token)
{
	static __thread drv_backend_config bc;
	static __thread drv_secret_entry e;
	static __thread drv_secret_entry *ep;
	drover__compute__v1__backend_config__init(&bc);
	bc.config_json = (char *)json;
	if (token) {
		drover__compute__v1__backend_config__secrets_entry__init(&e);
		e.key = "token";
		e.value = (char *)token;
		ep = &e;
		bc.secrets = &ep;
		bc.n_secrets = 1;
	}
	return &bc;
}

/* Connects to a driver of this test (`co`) and checks it answers GetInfo as rtest; fails the test otherwise.
 */
static struct drv_host *connect_rtest(const struct drv_connect_opts *co)
{
	struct drv_host *h = NULL;
	char err[256];
	if (drv_host_connect(co, &h, err, sizeof(err)) != 0)
		fail_msg("connect: %s", err);
	struct drv_status st;
	drv_get_info_request ireq = DROVER__COMPUTE__V1__GET_INFO_REQUEST__INIT;
	drv_get_info_response *info;
	assert_int_equal(drv_host_get_info(h, &ireq, &info, CALL_MS, &st), 0);
	assert_string_equal(info->type, "rtest");
	drv_response_free(info);
	return h;
}

static void test_identity(void **state)
{
	struct drv_host *h = spawn(NULL, NULL, NULL);
	struct drv_status st;

	/* The socket lives in the host's private directory, named after the type. */
	struct drv_handshake hs;
	char err[256];
	assert_int_equal(drv_handshake_parse(drv_host_handshake(h), &hs, err, sizeof(err)), 0);
	assert_string_equal(hs.network, "unix");
	assert_non_null(strstr(hs.address, "/rtest.sock"));
	struct stat sb;
	assert_int_equal(stat(hs.address, &sb), 0);
	assert_true(S_ISSOCK(sb.st_mode));

	drv_get_info_request ireq = DROVER__COMPUTE__V1__GET_INFO_REQUEST__INIT;
	drv_get_info_response *info;
	assert_int_equal(drv_host_get_info(h, &ireq, &info, CALL_MS, &st), 0);
	assert_string_equal(info->type, "rtest");
	assert_string_equal(info->driver_version, "0.0.1");
	assert_string_equal(info->description, "runtime test driver");
	assert_int_equal(info->protocol_version, 1);
	json_t *schema = json_loads(info->config_schema_json, 0, NULL);
	assert_non_null(schema);
	assert_non_null(json_object_get(json_object_get(schema, "properties"), "sleep_ms"));
	json_decref(schema);
	schema = json_loads(info->secrets_schema_json, 0, NULL);
	assert_non_null(json_object_get(json_object_get(schema, "properties"), "token"));
	json_decref(schema);
	drv_response_free(&info->base);

	drv_get_features_request freq = DROVER__COMPUTE__V1__GET_FEATURES_REQUEST__INIT;
	drv_get_features_response *feat;
	assert_int_equal(drv_host_get_features(h, &freq, &feat, CALL_MS, &st), 0);
	static const int want[] = {1, 2, 3, 4, 5, 32};
	assert_int_equal(feat->n_features, 6);
	for (int i = 0; i < 6; i++)
		assert_int_equal(feat->features[i], want[i]);
	drv_response_free(&feat->base);

	/* With a config the narrow hook runs. */
	freq.config = config("{\"no_volumes\": true}", NULL);
	assert_int_equal(drv_host_get_features(h, &freq, &feat, CALL_MS, &st), 0);
	assert_int_equal(feat->n_features, 5);
	for (size_t i = 0; i < feat->n_features; i++)
		assert_int_not_equal(feat->features[i], DRV_FEATURE_VOLUMES);
	drv_response_free(&feat->base);

	/* A bad config for GetFeatures is INVALID_ARGUMENT naming the field. */
	freq.config = config("{\"no_volumes\": \"yes\"}", NULL);
	assert_int_equal(drv_host_get_features(h, &freq, &feat, CALL_MS, &st), DRV_EINVAL);
	assert_non_null(strstr(st.message, "/no_volumes"));

	assert_int_equal(drv_host_health(h, CALL_MS, &st), 0);
	drv_host_free(h);
	/* The driver removed its socket when it stopped. */
	assert_int_not_equal(stat(hs.address, &sb), 0);
}

static void test_health_services(void **state)
{
	struct drv_host *h = spawn(NULL, NULL, NULL);
	struct drv_rpc_channel *ch;
	char err[256];
	struct drv_rpc_channel_opts co = {.target = drv_host_target(h)};
	assert_int_equal(drv_rpc_channel_new(&co, &ch, err, sizeof(err)), 0);
	const ProtobufCServiceDescriptor *svc = &grpc__health__v1__health__descriptor;
	int check = drv_rpc_method_index(svc, "Check");
	assert_true(check >= 0);

	static const struct {
		const char *service;
		int code;
	} cases[] = {{"", 0}, {"drover.compute.v1.Compute", 0}, {"other.Service", DRV_ENOTFOUND}};
	for (size_t i = 0; i < 3; i++) {
		Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
		ProtobufCMessage *resp = NULL;
		struct drv_status st;
		req.service = (char *)cases[i].service;
		int rc = drv_rpc_call(ch, svc, (unsigned)check, &req.base, &resp, CALL_MS, NULL, &st);
		assert_int_equal(rc, cases[i].code);
		if (rc == 0) {
			assert_int_equal(((Grpc__Health__V1__HealthCheckResponse *)resp)->status,
			                 GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING);
			drv_response_free(resp);
		} else {
			assert_non_null(strstr(st.message, "other.Service"));
		}
	}
	/*
	 * Methods the driver does not serve (Health/Watch is streaming, so not
	 * in our descriptor) answer UNIMPLEMENTED at once rather than hang:
	 * call one through a descriptor copy that names it.
	 */
	ProtobufCMethodDescriptor watch = svc->methods[check];
	watch.name = "Watch";
	ProtobufCServiceDescriptor with_watch = *svc;
	with_watch.methods = &watch;
	with_watch.n_methods = 1;
	Grpc__Health__V1__HealthCheckRequest wreq = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
	ProtobufCMessage *wresp = NULL;
	double t0 = now_ms();
	assert_int_equal(drv_rpc_call(ch, &with_watch, 0, &wreq.base, &wresp, CALL_MS, NULL, NULL),
	                 DRV_EUNIMPLEMENTED);
	assert_true(now_ms() - t0 < 2000);
	drv_rpc_channel_free(ch);
	drv_host_free(h);
}

static void test_provider_calls(void **state)
{
	struct lines l;
	const char *env[] = {"DROVER_LOG_LEVEL=debug", NULL};
	struct drv_host *h = spawn(NULL, env, &l);
	struct drv_status st;

	/* 10,000 offers in one response. */
	drv_get_offers_request oreq = DROVER__COMPUTE__V1__GET_OFFERS_REQUEST__INIT;
	drv_get_offers_response *offers;
	oreq.config = config("{\"offers\": 10000}", "tok-SECRET-123");
	assert_int_equal(drv_host_get_offers(h, &oreq, &offers, CALL_MS, &st), 0);
	assert_int_equal(offers->n_offers, 10000);
	assert_string_equal(offers->offers[9999]->instance_type, "type-9999");
	drv_response_free(&offers->base);

	/* Requirements reach the handler. */
	drv_requirements req = DROVER__COMPUTE__V1__REQUIREMENTS__INIT;
	drv_uint_range cpus = DROVER__COMPUTE__V1__UINT_RANGE__INIT;
	cpus._min_case = DROVER__COMPUTE__V1__UINT_RANGE___MIN_MIN;
	cpus.min = 64;
	req.cpus = &cpus;
	oreq.requirements = &req;
	oreq.config = config("{\"offers\": 640}", NULL);
	assert_int_equal(drv_host_get_offers(h, &oreq, &offers, CALL_MS, &st), 0);
	assert_int_equal(offers->n_offers, 10);
	drv_response_free(&offers->base);
	oreq.requirements = NULL;

	/* Default config values apply ("offers" defaults to 3); no config at all is {}. */
	oreq.config = NULL;
	assert_int_equal(drv_host_get_offers(h, &oreq, &offers, CALL_MS, &st), 0);
	assert_int_equal(offers->n_offers, 3);
	drv_response_free(&offers->base);

	/* An invalid config: INVALID_ARGUMENT with the field path and summary. */
	oreq.config = config("{\"offers\": -1}", NULL);
	assert_int_equal(drv_host_get_offers(h, &oreq, &offers, CALL_MS, &st), DRV_EINVAL);
	assert_null(offers);
	assert_non_null(strstr(st.message, "/offers"));
	assert_non_null(strstr(st.message, "value below minimum"));
	oreq.config = config("not json", NULL);
	assert_int_equal(drv_host_get_offers(h, &oreq, &offers, CALL_MS, &st), DRV_EINVAL);
	assert_non_null(strstr(st.message, "not valid JSON"));

	/* A feature narrowed away for this config answers UNIMPLEMENTED. */
	oreq.config = config("{\"no_offers\": true}", NULL);
	assert_int_equal(drv_host_get_offers(h, &oreq, &offers, CALL_MS, &st), DRV_EUNIMPLEMENTED);
	assert_non_null(strstr(st.message, "GetOffers"));
	assert_non_null(strstr(st.message, "rtest"));
	drv_create_volume_request vreq = DROVER__COMPUTE__V1__CREATE_VOLUME_REQUEST__INIT;
	drv_create_volume_response *vresp;
	vreq.config = config("{\"no_volumes\": true}", NULL);
	assert_int_equal(drv_host_create_volume(h, &vreq, &vresp, CALL_MS, &st), DRV_EUNIMPLEMENTED);
	vreq.config = config("{}", NULL);
	assert_int_equal(drv_host_create_volume(h, &vreq, &vresp, CALL_MS, &st), 0);
	drv_response_free(&vresp->base);

	/* A handler's error code and message reach the caller. */
	drv_create_instance_request creq = DROVER__COMPUTE__V1__CREATE_INSTANCE_REQUEST__INIT;
	drv_create_instance_response *cresp;
	drv_offer offer = DROVER__COMPUTE__V1__OFFER__INIT;
	offer.instance_type = "gpu.h100";
	creq.offer = &offer;
	assert_int_equal(drv_host_create_instance(h, &creq, &cresp, CALL_MS, &st), DRV_ENOCAPACITY);
	assert_string_equal(st.message, "no capacity for gpu.h100");

	/* A positive return is a driver bug: INTERNAL, and the driver keeps serving. */
	drv_terminate_instance_request treq = DROVER__COMPUTE__V1__TERMINATE_INSTANCE_REQUEST__INIT;
	drv_terminate_instance_response *tresp;
	treq.instance_id = "bug";
	assert_int_equal(drv_host_terminate_instance(h, &treq, &tresp, CALL_MS, &st), DRV_EINTERNAL);
	assert_non_null(strstr(st.message, "returned 7, which is not a drv_error"));
	/* So is a negative value that is no drv_error. */
	treq.instance_id = "bug-negative";
	assert_int_equal(drv_host_terminate_instance(h, &treq, &tresp, CALL_MS, &st), DRV_EINTERNAL);
	assert_non_null(strstr(st.message, "returned -50, which is not a drv_error"));

	/*
	 * A 20 KB message keeps its code and the connection stays up (the whole
	 * message made the host answer RESOURCE_EXHAUSTED and drop the connection
	 * for good). struct drv_status keeps 511 bytes of what arrives.
	 */
	treq.instance_id = "long-message";
	assert_int_equal(drv_host_terminate_instance(h, &treq, &tresp, CALL_MS, &st), DRV_EUNAVAILABLE);
	assert_non_null(strstr(st.message, "provider said:\xc3\xa9"));
	/* What arrives is cut between two characters, not inside one ("é" is 2 bytes, the prefix 14). */
	size_t len = strlen(st.message);
	assert_true(len >= 500);
	assert_int_equal((unsigned char)st.message[len - 1], 0xa9);
	assert_int_equal(drv_host_health(h, CALL_MS, &st), 0);

	/* A handler printing to stdout after the handshake harms nothing. */
	drv_get_instance_request greq = DROVER__COMPUTE__V1__GET_INSTANCE_REQUEST__INIT;
	drv_get_instance_response *gresp;
	greq.instance_id = "i-1";
	assert_int_equal(drv_host_get_instance(h, &greq, &gresp, CALL_MS, &st), 0);
	assert_string_equal(gresp->data->instance_id, "i-1");
	drv_response_free(&gresp->base);
	assert_int_equal(drv_host_health(h, CALL_MS, &st), 0);

	int status = -1;
	assert_int_equal(drv_host_stop(h, 5000, &status), 0);
	assert_int_equal(status, 0);

	/* Every stderr line is one JSON object of this driver; no secret value anywhere. */
	pthread_mutex_lock(&l.mu);
	assert_true(l.n >= 3);
	assert_null(strstr(l.buf, "tok-SECRET-123"));
	assert_non_null(strstr(l.buf, "\"method\":\"GetOffers\""));
	char *save = NULL;
	for (char *line = strtok_r(l.buf, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		json_t *o = json_loads(line, 0, NULL);
		if (!o)
			fail_msg("stderr line is not JSON: %s", line);
		assert_string_equal(json_string_value(json_object_get(o, "driver")), "rtest");
		assert_non_null(json_object_get(o, "ts"));
		assert_non_null(json_object_get(o, "level"));
		assert_non_null(json_object_get(o, "msg"));
		json_decref(o);
	}
	pthread_mutex_unlock(&l.mu);
	drv_host_free(h);
}

static void test_validate_config(void **state)
{
	struct drv_host *h = spawn(NULL, NULL, NULL);
	struct drv_status st;
	drv_validate_config_request req = DROVER__COMPUTE__V1__VALIDATE_CONFIG_REQUEST__INIT;
	drv_validate_config_response *resp;

	req.config = config("{\"offers\": 5}", "t");
	assert_int_equal(drv_host_validate_config(h, &req, &resp, CALL_MS, &st), 0);
	assert_true(resp->valid);
	assert_int_equal(resp->n_diagnostics, 0);
	drv_response_free(&resp->base);

	/* Schema errors, all at once, each with its path; the hook does not run. */
	req.config = config("{\"offers\": \"many\", \"colour\": 1, \"region\": \"nowhere\"}", NULL);
	drv_secret_entry bad = DROVER__COMPUTE__V1__BACKEND_CONFIG__SECRETS_ENTRY__INIT;
	drv_secret_entry *badp = &bad;
	bad.key = "password";
	bad.value = "pw-SECRET";
	req.config->secrets = &badp;
	req.config->n_secrets = 1;
	assert_int_equal(drv_host_validate_config(h, &req, &resp, CALL_MS, &st), 0);
	assert_false(resp->valid);
	assert_int_equal(resp->n_diagnostics, 3);
	assert_string_equal(resp->diagnostics[0]->field_path, "/offers");
	assert_string_equal(resp->diagnostics[0]->summary, "wrong type");
	assert_string_equal(resp->diagnostics[1]->field_path, "/colour");
	assert_string_equal(resp->diagnostics[2]->field_path, "/secrets/password");
	for (size_t i = 0; i < resp->n_diagnostics; i++) {
		assert_int_equal(resp->diagnostics[i]->severity,
		                 DROVER__COMPUTE__V1__SEVERITY__SEVERITY_ERROR);
		assert_true(strlen(resp->diagnostics[i]->detail) > 0);
		assert_null(strstr(resp->diagnostics[i]->detail, "pw-SECRET"));
	}
	drv_response_free(&resp->base);

	/* Then the driver's own checks: an error and a warning. */
	req.config = config("{\"region\": \"nowhere\", \"offers\": 20000}", NULL);
	assert_int_equal(drv_host_validate_config(h, &req, &resp, CALL_MS, &st), 0);
	assert_false(resp->valid);
	assert_int_equal(resp->n_diagnostics, 2);
	assert_string_equal(resp->diagnostics[0]->field_path, "/region");
	assert_string_equal(resp->diagnostics[0]->summary, "unknown region");
	assert_int_equal(resp->diagnostics[1]->severity, DROVER__COMPUTE__V1__SEVERITY__SEVERITY_WARNING);
	drv_response_free(&resp->base);

	/* A warning alone keeps the config valid. */
	req.config = config("{\"offers\": 20000}", NULL);
	assert_int_equal(drv_host_validate_config(h, &req, &resp, CALL_MS, &st), 0);
	assert_true(resp->valid);
	assert_int_equal(resp->n_diagnostics, 1);
	drv_response_free(&resp->base);

	/* A hook that cannot run answers its code; no config means {}. */
	req.config = config("{}", "unreachable");
	assert_int_equal(drv_host_validate_config(h, &req, &resp, CALL_MS, &st), DRV_EUNAVAILABLE);
	assert_string_equal(st.message, "token service unreachable");
	req.config = NULL;
	assert_int_equal(drv_host_validate_config(h, &req, &resp, CALL_MS, &st), 0);
	assert_true(resp->valid);
	drv_response_free(&resp->base);
	drv_host_free(h);
}

static void test_deadline(void **state)
{
	struct drv_host *h = spawn(NULL, NULL, NULL);
	struct drv_status st;
	drv_get_offers_request oreq = DROVER__COMPUTE__V1__GET_OFFERS_REQUEST__INIT;
	drv_get_offers_response *offers;
	oreq.config = config("{\"sleep_ms\": 5000}", NULL);
	double t0 = now_ms();
	assert_int_equal(drv_host_get_offers(h, &oreq, &offers, 200, &st), DRV_EDEADLINE);
	assert_true(now_ms() - t0 < 1000);
	/* The handler saw the cancellation and stopped, so shutdown is immediate. */
	usleep(100 * 1000);
	t0 = now_ms();
	int status;
	assert_int_equal(drv_host_stop(h, 5000, &status), 0);
	assert_int_equal(status, 0);
	assert_true(now_ms() - t0 < 1000);
	drv_host_free(h);
}

static void test_sigterm_lets_calls_finish(void **state)
{
	char stop_file[] = "/tmp/drover-rtest-stop-XXXXXX";
	int fd = mkstemp(stop_file);
	assert_true(fd >= 0);
	close(fd);
	unlink(stop_file);
	char env_stop[128];
	snprintf(env_stop, sizeof(env_stop), "RUNTIME_STOP_FILE=%s", stop_file);
	const char *env[] = {env_stop, NULL};
	struct drv_host *h = spawn(NULL, env, NULL);

	struct async_result r = ASYNC_RESULT_INIT;
	drv_get_offers_request oreq = DROVER__COMPUTE__V1__GET_OFFERS_REQUEST__INIT;
	oreq.config = config("{\"sleep_ms\": 400, \"offers\": 7}", NULL);
	assert_int_equal(drv_host_call_async(h, "GetOffers", &oreq.base, CALL_MS, on_offers_done, &r), 0);
	usleep(100 * 1000);
	double t0 = now_ms();
	int status = -1;
	assert_int_equal(kill(drv_host_pid(h), SIGTERM), 0);
	usleep(50 * 1000);
	/* While the call in flight finishes, new work is refused and health says NOT_SERVING. */
	struct drv_status st;
	drv_get_offers_response *offers;
	assert_int_equal(drv_host_get_offers(h, &oreq, &offers, CALL_MS, &st), DRV_EUNAVAILABLE);
	assert_non_null(strstr(st.message, "shutting down"));
	assert_int_not_equal(drv_host_health(h, CALL_MS, &st), 0);
	assert_int_equal(drv_host_wait(h, 5000, &status), 0);
	double took = now_ms() - t0;
	assert_int_equal(status, 0);
	async_wait(&r);
	/* The in-flight call completed normally during the grace period. */
	assert_int_equal(r.code, 0);
	assert_int_equal(r.n_offers, 7);
	assert_true(took >= 250 && took < 2000);
	/* stop() ran after serving ended. */
	assert_int_equal(access(stop_file, F_OK), 0);
	unlink(stop_file);
	drv_host_free(h);
}

static void test_grace_expires(void **state)
{
	const char *args[] = {"--grace-ms", "150", NULL};
	struct drv_host *h = spawn(args, NULL, NULL);
	struct async_result r = ASYNC_RESULT_INIT;
	drv_get_offers_request oreq = DROVER__COMPUTE__V1__GET_OFFERS_REQUEST__INIT;
	oreq.config = config("{\"sleep_ms\": 20000}", NULL);
	assert_int_equal(drv_host_call_async(h, "GetOffers", &oreq.base, 30000, on_offers_done, &r), 0);
	usleep(100 * 1000);
	double t0 = now_ms();
	int status = -1;
	assert_int_equal(drv_host_stop(h, 5000, &status), 0);
	assert_int_equal(status, 0);
	assert_true(now_ms() - t0 < 1500);
	async_wait(&r);
	assert_int_not_equal(r.code, 0);
	drv_host_free(h);
}

static void test_stdin_eof(void **state)
{
	struct drv_host *h = spawn(NULL, NULL, NULL);
	struct drv_handshake hs;
	char err[256];
	assert_int_equal(drv_handshake_parse(drv_host_handshake(h), &hs, err, sizeof(err)), 0);
	drv_host_close_stdin(h);
	int status = -1;
	assert_int_equal(drv_host_wait(h, 3000, &status), 0);
	assert_int_equal(status, 0);
	assert_int_not_equal(access(hs.address, F_OK), 0);
	drv_host_free(h);
}

static void test_own_socket_dir_and_stdout(void **state)
{
	/* Without DROVER_SOCKET_DIR the driver makes (and removes) a private directory. */
	struct proc p;
	char line[512], rest[512];
	proc_start(&p, NULL, cookie_env);
	read_all(p.out, line, sizeof(line), 5000, true);
	struct drv_handshake hs;
	char err[256];
	if (drv_handshake_parse(line, &hs, err, sizeof(err)) != 0)
		fail_msg("handshake \"%s\": %s", line, err);
	char dir[300];
	snprintf(dir, sizeof(dir), "%s", hs.address);
	*strrchr(dir, '/') = '\0';
	struct stat sb;
	assert_int_equal(stat(dir, &sb), 0);
	assert_int_equal(sb.st_mode & 0777, 0700);
	assert_non_null(strstr(dir, "drover-rtest-"));
	/* Exactly one line on stdout, ever. */
	kill(p.pid, SIGINT);
	read_all(p.out, rest, sizeof(rest), 3000, false);
	assert_string_equal(rest, "");
	assert_int_equal(proc_wait(&p, 3000), 0);
	assert_int_not_equal(stat(dir, &sb), 0);

	/* A regular file where the socket goes: a clear error naming the address, no handshake. */
	char sdir[] = "/tmp/drover-rtest-sd-XXXXXX";
	assert_non_null(mkdtemp(sdir));
	char sfile[300], sdir_env[340];
	snprintf(sfile, sizeof(sfile), "%s/rtest.sock", sdir);
	snprintf(sdir_env, sizeof(sdir_env), "DROVER_SOCKET_DIR=%s", sdir);
	int sfd = open(sfile, O_WRONLY | O_CREAT, 0600);
	assert_true(sfd >= 0);
	close(sfd);
	const char *fenv[] = {"PATH=/usr/bin:/bin", COOKIE, sdir_env, NULL};
	char fout[1024], ferr[4096];
	assert_int_equal(run(NULL, fenv, fout, sizeof(fout), ferr, sizeof(ferr)), 1);
	assert_string_equal(fout, "");
	assert_non_null(strstr(ferr, "cannot serve on unix:"));
	assert_int_equal(access(sfile, F_OK), 0); /* not the driver's to delete */
	unlink(sfile);
	rmdir(sdir);

	/* A socket directory that does not exist is a clear error. */
	const char *env[] = {"PATH=/usr/bin:/bin", COOKIE, "DROVER_SOCKET_DIR=/nonexistent/dir", NULL};
	char out[1024], errs[2048];
	assert_int_equal(run(NULL, env, out, sizeof(out), errs, sizeof(errs)), 1);
	assert_non_null(strstr(errs, "DROVER_SOCKET_DIR"));
	assert_string_equal(out, "");
}

/* A unix socket connection to `path` that is opened and at once closed; 0 when connect() worked. */
static int connect_and_close(const char *path)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	if (strlen(path) >= sizeof(sa.sun_path))
		return -1;
	memcpy(sa.sun_path, path, strlen(path) + 1);
	int fd = socket(AF_UNIX, SOCK_STREAM, 0);
	int rc = connect(fd, (struct sockaddr *)&sa, sizeof(sa));
	close(fd);
	return rc;
}

static void test_spawned_socket(void **state)
{
	/*
	 * A spawned driver listens on its socket itself, before gRPC runs: a
	 * stale socket file of an earlier run is replaced, connections that close
	 * before they are accepted (a host's probe) do not disturb it, and calls
	 * made right after the handshake are answered.
	 */
	char sdir[] = "/tmp/drover-rtest-ss-XXXXXX";
	assert_non_null(mkdtemp(sdir));
	char spath[100], sdir_env[340];
	snprintf(spath, sizeof(spath), "%s/rtest.sock", sdir);
	snprintf(sdir_env, sizeof(sdir_env), "DROVER_SOCKET_DIR=%s", sdir);
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	memcpy(sa.sun_path, spath, strlen(spath) + 1);
	int stale = socket(AF_UNIX, SOCK_STREAM, 0);
	assert_int_equal(bind(stale, (struct sockaddr *)&sa, sizeof(sa)), 0);
	close(stale); /* the socket file stays, with nobody behind it */

	struct proc p;
	char line[512];
	const char *env[] = {"PATH=/usr/bin:/bin", COOKIE, sdir_env, NULL};
	proc_start(&p, NULL, env);
	read_all(p.out, line, sizeof(line), 5000, true);
	struct drv_handshake hs;
	char err[256];
	if (drv_handshake_parse(line, &hs, err, sizeof(err)) != 0)
		fail_msg("handshake \"%s\": %s", line, err);
	assert_string_equal(hs.address, spath);
	for (int i = 0; i < 3; i++)
		assert_int_equal(connect_and_close(spath), 0);

	char target[320];
	snprintf(target, sizeof(target), "unix:%s", spath);
	struct drv_connect_opts co = {.address = target, .insecure = true};
	struct drv_host *h = connect_rtest(&co);
	struct drv_status st;
	assert_int_equal(connect_and_close(spath), 0);
	assert_int_equal(drv_host_health(h, CALL_MS, &st), 0);
	drv_host_free(h);

	kill(p.pid, SIGTERM);
	assert_int_equal(proc_wait(&p, 3000), 0);
	assert_int_not_equal(access(spath, F_OK), 0); /* ours now, so removed */
	rmdir(sdir);
}

static void test_listen_tcp(void **state)
{
	struct proc p;
	char line[512];
	const char *args[] = {"--listen", "127.0.0.1:0", "--workers", "2", NULL};
	proc_start(&p, args, no_env); /* standalone needs no cookie */
	read_all(p.out, line, sizeof(line), 5000, true);
	struct drv_handshake hs;
	char err[256];
	if (drv_handshake_parse(line, &hs, err, sizeof(err)) != 0)
		fail_msg("handshake \"%s\": %s", line, err);
	assert_string_equal(hs.network, "tcp");
	assert_int_equal(strncmp(hs.address, "127.0.0.1:", 10), 0);
	assert_true(atoi(hs.address + 10) > 0);

	struct drv_connect_opts co = {.address = hs.address, .insecure = true, .connect_timeout_ms = 3000};
	struct drv_host *h = connect_rtest(&co);
	struct drv_status st;
	/* Standalone ignores stdin EOF; it stops on SIGTERM. */
	close(p.in);
	p.in = open("/dev/null", O_RDONLY);
	usleep(100 * 1000);
	assert_int_equal(drv_host_health(h, CALL_MS, &st), 0);
	kill(p.pid, SIGTERM);
	assert_int_equal(proc_wait(&p, 3000), 0);
	drv_host_free(h);
}

static void test_listen_mutual_tls(void **state)
{
	char dir[] = "/tmp/drover-rtest-certs-XXXXXX";
	char cmd[512], path[4][300];
	assert_non_null(mkdtemp(dir));
	snprintf(cmd, sizeof(cmd), "sh '%s' '%s' >/dev/null 2>&1", GEN_CERTS, dir);
	assert_int_equal(system(cmd), 0);
	const char *names[] = {"server.pem", "server.key", "ca.pem", "other-client.pem"};
	for (int i = 0; i < 4; i++)
		snprintf(path[i], sizeof(path[i]), "%s/%s", dir, names[i]);

	/* Mutual TLS is allowed on any address; the handshake names the bound port. */
	struct proc p;
	char line[512];
	const char *args[] = {"--listen", "127.0.0.1:0", "--tls-cert", path[0], "--tls-key",
	                      path[1],    "--client-ca", path[2],      NULL};
	proc_start(&p, args, no_env);
	read_all(p.out, line, sizeof(line), 5000, true);
	struct drv_handshake hs;
	char err[512];
	if (drv_handshake_parse(line, &hs, err, sizeof(err)) != 0)
		fail_msg("handshake \"%s\": %s", line, err);

	char client_pem[300], client_key[300], other_key[300];
	snprintf(client_pem, sizeof(client_pem), "%s/client.pem", dir);
	snprintf(client_key, sizeof(client_key), "%s/client.key", dir);
	snprintf(other_key, sizeof(other_key), "%s/other-client.key", dir);
	struct drv_host *h = NULL;
	struct drv_connect_opts co = {.address = hs.address,
	                              .ca_file = path[2],
	                              .cert_file = client_pem,
	                              .key_file = client_key,
	                              .connect_timeout_ms = 3000};
	h = connect_rtest(&co);
	drv_host_free(h);

	/* A client certificate from another CA is refused. */
	co.cert_file = path[3];
	co.key_file = other_key;
	co.connect_timeout_ms = 1000;
	h = NULL;
	assert_int_not_equal(drv_host_connect(&co, &h, err, sizeof(err)), 0);
	drv_host_free(h);

	kill(p.pid, SIGTERM);
	assert_int_equal(proc_wait(&p, 3000), 0);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	assert_int_equal(system(cmd), 0);
}

static void test_closed_std_fds(void **state)
{
	/*
	 * gRPC's static initialisers open a descriptor before main(), which
	 * takes fd 0 when stdin was closed: the driver must notice and not
	 * treat that descriptor as its stdin.
	 */
	char out[256], err[2048];
	struct proc p;
	child_close_mask = 1;
	proc_start(&p, NULL, cookie_env);
	child_close_mask = 0;
	read_all(p.err, err, sizeof(err), 5000, false);
	read_all(p.out, out, sizeof(out), 1000, false);
	assert_int_equal(proc_wait(&p, 5000), 1);
	assert_non_null(strstr(err, "stdin is closed"));
	assert_string_equal(out, "");

	/* Standalone does not need stdin; it serves and stops on SIGTERM. */
	const char *args[] = {"--listen", "127.0.0.1:0", NULL};
	child_close_mask = 1;
	proc_start(&p, args, no_env);
	child_close_mask = 0;
	char line[256];
	read_all(p.out, line, sizeof(line), 5000, true);
	struct drv_handshake hs;
	char e[256];
	if (drv_handshake_parse(line, &hs, e, sizeof(e)) != 0)
		fail_msg("handshake \"%s\": %s", line, e);
	struct drv_host *h = NULL;
	struct drv_connect_opts co = {.address = hs.address, .insecure = true, .connect_timeout_ms = 3000};
	if (drv_host_connect(&co, &h, e, sizeof(e)) != 0)
		fail_msg("connect: %s", e);
	struct drv_status st;
	for (int i = 0; i < 20; i++)
		assert_int_equal(drv_host_health(h, CALL_MS, &st), 0);
	kill(p.pid, SIGTERM);
	assert_int_equal(proc_wait(&p, 3000), 0);
	drv_host_free(h);
}

struct worker_arg {
	struct drv_host *h;
	int failures;
};

static void *hammer(void *arg)
{
	struct worker_arg *w = arg;
	char json[64];
	for (int i = 0; i < 40; i++) {
		drv_get_offers_request oreq = DROVER__COMPUTE__V1__GET_OFFERS_REQUEST__INIT;
		drv_get_offers_response *offers;
		struct drv_status st;
		snprintf(json, sizeof(json), "{\"offers\": %d}", i);
		oreq.config = config(json, NULL);
		if (drv_host_get_offers(w->h, &oreq, &offers, CALL_MS, &st) != 0 ||
		    offers->n_offers != (size_t)i) {
			w->failures++;
			continue;
		}
		drv_response_free(&offers->base);
	}
	return NULL;
}

static void test_concurrent_calls(void **state)
{
	struct drv_host *h = spawn(NULL, NULL, NULL);
	pthread_t t[8];
	struct worker_arg w[8];
	for (int i = 0; i < 8; i++) {
		w[i] = (struct worker_arg){.h = h};
		assert_int_equal(pthread_create(&t[i], NULL, hammer, &w[i]), 0);
	}
	for (int i = 0; i < 8; i++) {
		pthread_join(t[i], NULL);
		assert_int_equal(w[i].failures, 0);
	}
	drv_host_free(h);
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

/* Not a benchmark gate: prints the figures so regressions are visible in the log. */
static void test_timing_figures(void **state)
{
	enum { N = 9 };
	double spawn_rpc[N];
	for (int i = 0; i < N; i++) {
		double t0 = now_ms();
		struct drv_host *h = spawn(NULL, NULL, NULL);
		drv_get_features_request freq = DROVER__COMPUTE__V1__GET_FEATURES_REQUEST__INIT;
		drv_get_features_response *feat;
		struct drv_status st;
		assert_int_equal(drv_host_get_features(h, &freq, &feat, CALL_MS, &st), 0);
		spawn_rpc[i] = now_ms() - t0;
		drv_response_free(&feat->base);
		drv_host_free(h);
	}
	qsort(spawn_rpc, N, sizeof(double), cmp_double);

	struct drv_host *h = spawn(NULL, NULL, NULL);
	drv_get_offers_request oreq = DROVER__COMPUTE__V1__GET_OFFERS_REQUEST__INIT;
	drv_get_offers_response *offers;
	struct drv_status st;
	oreq.config = config("{\"offers\": 1000}", NULL);
	double offers_ms[50];
	for (int i = 0; i < 50; i++) {
		double t0 = now_ms();
		assert_int_equal(drv_host_get_offers(h, &oreq, &offers, CALL_MS, &st), 0);
		offers_ms[i] = now_ms() - t0;
		drv_response_free(&offers->base);
	}
	qsort(offers_ms, 50, sizeof(double), cmp_double);
	print_message("figures: spawn->first RPC median %.2f ms; GetOffers(1000) median %.3f ms\n",
	              spawn_rpc[N / 2], offers_ms[25]);
	drv_host_free(h);
}

int main(void)
{
	signal(SIGPIPE, SIG_IGN);
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_cli_help_version_info),
	    cmocka_unit_test(test_cli_errors),
	    cmocka_unit_test(test_not_a_plugin),
	    cmocka_unit_test(test_partial_group_refused),
	    cmocka_unit_test(test_start_failure),
	    cmocka_unit_test(test_identity),
	    cmocka_unit_test(test_health_services),
	    cmocka_unit_test(test_provider_calls),
	    cmocka_unit_test(test_validate_config),
	    cmocka_unit_test(test_deadline),
	    cmocka_unit_test(test_sigterm_lets_calls_finish),
	    cmocka_unit_test(test_grace_expires),
	    cmocka_unit_test(test_stdin_eof),
	    cmocka_unit_test(test_own_socket_dir_and_stdout),
	    cmocka_unit_test(test_spawned_socket),
	    cmocka_unit_test(test_listen_tcp),
	    cmocka_unit_test(test_listen_mutual_tls),
	    cmocka_unit_test(test_closed_std_fds),
	    cmocka_unit_test(test_concurrent_calls),
	    cmocka_unit_test(test_timing_figures),
	};
	return cmocka_run_group_tests(tests, NULL, kill_leftovers);
}
