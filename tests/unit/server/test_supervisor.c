/*
 * srv_supervisor with real driver processes: the sim driver (crashing on
 * purpose with crash_rate 1.0) and the handshake fixtures.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <unistd.h>

#include <cmocka.h>
#include <uv.h>

#include "srv_config.h"
#include "srv_store.h"
#include "srv_supervisor.h"
#include "testutil.h"

struct result {
	bool done;
	int code;
	char message[1024];
	ProtobufCMessage *resp;
};

static void on_done(void *ud, int code, const char *message, ProtobufCMessage *resp)
{
	struct result *r = ud;
	r->done = true;
	r->code = code;
	snprintf(r->message, sizeof(r->message), "%s", message);
	r->resp = resp;
}

/* Runs the loop until *flag or timeout; false on timeout. */
static bool run_until(uv_loop_t *loop, bool *flag, int timeout_ms)
{
	int64_t end = srv_now_ms() + timeout_ms;
	while (!*flag && srv_now_ms() < end) {
		uv_run(loop, UV_RUN_NOWAIT);
		usleep(1000);
	}
	return *flag;
}

static void run_for(uv_loop_t *loop, int ms)
{
	int64_t end = srv_now_ms() + ms;
	while (srv_now_ms() < end) {
		uv_run(loop, UV_RUN_NOWAIT);
		usleep(1000);
	}
}

struct fx {
	uv_loop_t loop;
	struct srv_config *cfg;
	struct srv_supervisor *sup;
};

static struct fx *fx_new(void)
{
	struct fx *f = calloc(1, sizeof(*f));
	char err[512];
	uv_loop_init(&f->loop);
	f->cfg = tu_config_new();
	f->cfg->restart_backoff_ms = 100;
	f->cfg->restart_backoff_max_ms = 400;
	f->cfg->handshake_timeout_ms = 1500;
	f->cfg->health_interval_ms = 200;
	f->cfg->shutdown_grace_ms = 1000;
	f->cfg->commands = calloc(2, sizeof(*f->cfg->commands));
	f->cfg->commands[0].type = strdup("garbage");
	f->cfg->commands[0].path = strdup(DROVER_BIN_DIR "/fixture-driver-hs-garbage");
	f->cfg->commands[0].args = calloc(1, sizeof(char *));
	f->cfg->commands[1].type = strdup("silent");
	f->cfg->commands[1].path = strdup(DROVER_BIN_DIR "/fixture-driver-hs-silent");
	f->cfg->commands[1].args = calloc(1, sizeof(char *));
	f->cfg->n_commands = 2;
	assert_int_equal(srv_supervisor_new(&f->loop, f->cfg, &f->sup, err, sizeof(err)), 0);
	return f;
}

static void fx_free(struct fx *f)
{
	srv_supervisor_stop(f->sup);
	srv_supervisor_close_handles(f->sup);
	uv_run(&f->loop, UV_RUN_DEFAULT);
	srv_supervisor_free(f->sup);
	assert_int_equal(uv_loop_close(&f->loop), 0);
	srv_config_free(f->cfg);
	free(f);
}

static const struct srv_driver_info *info_of(struct srv_supervisor *sup, const char *type,
                                             struct srv_driver_info **list)
{
	size_t n;
	assert_int_equal(srv_supervisor_list(sup, list, &n), 0);
	for (size_t i = 0; i < n; i++)
		if (strcmp((*list)[i].type, type) == 0)
			return &(*list)[i];
	return NULL;
}

static void get_offers(struct fx *f, const char *config_json, struct result *r)
{
	drv_backend_config cfg = DROVER__COMPUTE__V1__BACKEND_CONFIG__INIT;
	drv_get_offers_request req = DROVER__COMPUTE__V1__GET_OFFERS_REQUEST__INIT;
	cfg.config_json = (char *)config_json;
	req.config = &cfg;
	memset(r, 0, sizeof(*r));
	srv_supervisor_call(f->sup, "sim", "GetOffers", &req.base, 5000, on_done, r);
	assert_true(run_until(&f->loop, &r->done, 8000));
}

static void test_discovery_and_call(void **state)
{
	struct fx *f = fx_new();
	struct srv_driver_info *list;
	const struct srv_driver_info *d = info_of(f->sup, "sim", &list);
	assert_non_null(d);
	assert_int_equal(d->state, SRV_DRIVER_IDLE);
	free(list);
	/* Fixtures are not drover-driver-*: never picked up from the directory. */
	assert_null(info_of(f->sup, "hs-garbage", &list));
	free(list);

	struct result r;
	get_offers(f, "{}", &r);
	assert_int_equal(r.code, 0);
	drv_get_offers_response *resp = (drv_get_offers_response *)r.resp;
	assert_true(resp->n_offers > 0);
	drv_response_free(r.resp);
	d = info_of(f->sup, "sim", &list);
	assert_int_equal(d->state, SRV_DRIVER_READY);
	assert_true(d->pid > 0);
	assert_string_equal(d->reported_type, "sim");
	assert_true(d->features & DRV_FEATURE_BIT(DRV_FEATURE_OFFERS));
	assert_int_equal(kill(d->pid, 0), 0);
	int pid = d->pid;
	free(list);

	/* An unknown type fails with NOT_FOUND naming it, through the callback. */
	memset(&r, 0, sizeof(r));
	drv_get_info_request ireq = DROVER__COMPUTE__V1__GET_INFO_REQUEST__INIT;
	srv_supervisor_call(f->sup, "no-such-type", "GetInfo", &ireq.base, 1000, on_done, &r);
	assert_false(r.done);
	assert_true(run_until(&f->loop, &r.done, 1000));
	assert_int_equal(r.code, DRV_ENOTFOUND);
	assert_non_null(strstr(r.message, "no-such-type"));

	fx_free(f);
	/* Shutdown stopped the driver. */
	usleep(100000);
	assert_int_equal(kill(pid, 0), -1);
}

static void test_crash_restart_backoff(void **state)
{
	struct fx *f = fx_new();
	struct result r;
	struct srv_driver_info *list;
	const struct srv_driver_info *d;
	const unsigned expect_backoff[] = {100, 200, 400, 400};

	get_offers(f, "{}", &r);
	assert_int_equal(r.code, 0);
	drv_response_free(r.resp);
	for (int round = 0; round < 4; round++) {
		/* The sim aborts during this call: the call fails fast with UNAVAILABLE. */
		int64_t t0 = srv_now_ms();
		get_offers(f, "{\"crash_rate\": 1.0}", &r);
		assert_int_equal(r.code, DRV_EUNAVAILABLE);
		assert_true(srv_now_ms() - t0 < 3000);
		bool in_backoff = false;
		for (int i = 0; i < 2000 && !in_backoff; i++) {
			d = info_of(f->sup, "sim", &list);
			in_backoff = d->state == SRV_DRIVER_BACKOFF;
			if (in_backoff) {
				assert_int_equal(d->backoff_ms, expect_backoff[round]);
				assert_int_equal(d->restarts, (unsigned)round);
				assert_non_null(strstr(d->last_error, "signal"));
			}
			free(list);
			if (!in_backoff)
				run_for(&f->loop, 2);
		}
		assert_true(in_backoff);
		/* While in backoff, calls fail at once with UNAVAILABLE and the reason. */
		get_offers(f, "{}", &r);
		assert_int_equal(r.code, DRV_EUNAVAILABLE);
		assert_non_null(strstr(r.message, "restarting"));
		/* After the backoff it is back, and the next call works. */
		bool ready = false;
		for (int i = 0; i < 3000 && !ready; i++) {
			run_for(&f->loop, 2);
			ready = srv_supervisor_state(f->sup, "sim") == SRV_DRIVER_READY;
		}
		assert_true(ready);
		get_offers(f, "{}", &r);
		assert_int_equal(r.code, 0);
		drv_response_free(r.resp);
	}
	d = info_of(f->sup, "sim", &list);
	assert_int_equal(d->restarts, 4);
	/* The last error stays visible after the successful restart. */
	assert_non_null(strstr(d->last_error, "signal"));
	free(list);
	fx_free(f);
}

/*
 * A driver that is alive but answers nothing (stopped with SIGSTOP: a hung
 * process) fails its health checks; after two failures it is replaced by a
 * new process, the old one is killed and reaped, and calls work again.
 */
static void test_hung_driver_replaced(void **state)
{
	struct fx *f = fx_new();
	struct result r;
	struct srv_driver_info *list;
	const struct srv_driver_info *d;

	get_offers(f, "{}", &r);
	assert_int_equal(r.code, 0);
	drv_response_free(r.resp);
	d = info_of(f->sup, "sim", &list);
	int old = d->pid;
	assert_true(old > 0);
	assert_int_equal(d->restarts, 0);
	free(list);
	/* Healthy, it stays as it is over several health intervals. */
	run_for(&f->loop, 1000);
	d = info_of(f->sup, "sim", &list);
	assert_int_equal(d->pid, old);
	assert_int_equal(d->restarts, 0);
	free(list);

	assert_int_equal(kill(old, SIGSTOP), 0);
	bool replaced = false;
	char last_error[512] = "";
	for (int64_t end = srv_now_ms() + 15000; !replaced && srv_now_ms() < end;) {
		run_for(&f->loop, 20);
		d = info_of(f->sup, "sim", &list);
		replaced = d->state == SRV_DRIVER_READY && d->pid > 0 && d->pid != old;
		snprintf(last_error, sizeof(last_error), "%s", d->last_error);
		if (replaced)
			assert_int_equal(d->restarts, 1);
		free(list);
	}
	if (!replaced) {
		kill(old, SIGKILL);
		fail_msg("a hung driver was not replaced within 15 s (last error: %s)", last_error);
	}
	assert_non_null(strstr(last_error, "health check failed"));
	/* The hung process is gone (SIGKILL reaches a stopped process), and reaped. */
	bool gone = false;
	for (int i = 0; i < 500 && !gone; i++) {
		run_for(&f->loop, 10);
		gone = kill(old, 0) == -1;
	}
	if (!gone)
		kill(old, SIGKILL);
	assert_true(gone);
	get_offers(f, "{}", &r);
	assert_int_equal(r.code, 0);
	drv_response_free(r.resp);
	fx_free(f);
}

static void test_bad_handshakes(void **state)
{
	struct fx *f = fx_new();
	struct result r;
	drv_get_info_request ireq = DROVER__COMPUTE__V1__GET_INFO_REQUEST__INIT;
	memset(&r, 0, sizeof(r));
	srv_supervisor_call(f->sup, "garbage", "GetInfo", &ireq.base, 5000, on_done, &r);
	struct result r2 = {0};
	srv_supervisor_call(f->sup, "silent", "GetInfo", &ireq.base, 5000, on_done, &r2);
	assert_true(run_until(&f->loop, &r.done, 5000));
	assert_int_equal(r.code, DRV_EUNAVAILABLE);
	assert_non_null(strstr(r.message, "garbage"));
	assert_true(run_until(&f->loop, &r2.done, 5000));
	assert_int_equal(r2.code, DRV_EUNAVAILABLE);
	assert_non_null(strstr(r2.message, "timed out"));
	struct srv_driver_info *list;
	const struct srv_driver_info *d = info_of(f->sup, "garbage", &list);
	/* It keeps being retried: between two tries it may be starting again. */
	bool retrying = d->state == SRV_DRIVER_BACKOFF || d->state == SRV_DRIVER_STARTING;
	bool named = strstr(d->last_error, "garbage handshake") != NULL;
	free(list);
	assert_true(retrying);
	assert_true(named);
	fx_free(f);
}

int main(void)
{
	signal(SIGPIPE, SIG_IGN);
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_discovery_and_call),
	    cmocka_unit_test(test_crash_restart_backoff),
	    cmocka_unit_test(test_bad_handshakes),
	    cmocka_unit_test(test_hung_driver_replaced),
	};
	return cmocka_run_group_tests_name("server_supervisor", tests, NULL, NULL);
}
