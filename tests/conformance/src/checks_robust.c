/*
 * Robustness checks: deadlines, concurrent calls, and shutdown of a spawned
 * driver on SIGTERM and on stdin EOF (each on a fresh process of its own, so
 * the main driver is not disturbed).
 */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "checks.h"

/* A provider call with `bc` and a timeout: GetOffers, else ListInstances. Returns rc. */
static int provider_call(struct conf_ctx *c, struct drv_host *h, drv_backend_config *bc, int timeout_ms,
                         const char **what, struct drv_status *st)
{
	ProtobufCMessage *resp = NULL;
	int rc;
	if (conf_has(c, DRV_FEATURE_OFFERS)) {
		drv_get_offers_request rq = DROVER__COMPUTE__V1__GET_OFFERS_REQUEST__INIT;
		rq.config = bc;
		*what = "GetOffers";
		rc = drv_host_call(h, "GetOffers", &rq.base, &resp, timeout_ms, st);
	} else {
		drv_list_instances_request rq = DROVER__COMPUTE__V1__LIST_INSTANCES_REQUEST__INIT;
		rq.config = bc;
		*what = "ListInstances";
		rc = drv_host_call(h, "ListInstances", &rq.base, &resp, timeout_ms, st);
	}
	if (resp)
		drv_response_free(resp);
	return rc;
}

static bool has_provider_call(struct conf_ctx *c)
{
	return conf_has(c, DRV_FEATURE_OFFERS) || conf_has(c, DRV_FEATURE_CREATE_INSTANCE);
}

void check_robustness_deadline(struct conf_ctx *c)
{
	if (!c->o->slow_config) {
		conf_skip(c,
		          "params.slow_config is not set in --config (a config that makes the driver slow)");
		return;
	}
	if (!has_provider_call(c)) {
		conf_skip(c, "driver advertises neither OFFERS nor CREATE_INSTANCE, so it has no provider "
		             "call to slow down");
		return;
	}
	struct conf_bc slow;
	conf_bc_init(&slow, c->o->config, c->o->slow_config, c->o->secrets, NULL);
	struct drv_status st = {0};
	char ans[700];
	const char *what;
	int dl = c->o->short_deadline_ms;
	double t0, ms;
	int rc;
	/*
	 * A driver that notices the cancellation and answers OK right at the
	 * deadline can win the race with the client's timer; only an OK in
	 * every one of three tries is a failure.
	 */
	for (int attempt = 0;; attempt++) {
		t0 = conf_now_ms();
		rc = provider_call(c, c->host, &slow.buf.msg, dl, &what, &st);
		ms = conf_now_ms() - t0;
		if (rc != 0 || ms < dl * 0.9 || attempt == 2)
			break;
	}
	conf_bc_free(&slow);
	if (rc != DRV_EDEADLINE) {
		conf_fail(c,
		          "%s(params.slow_config) with a %d ms deadline answered %s after %.0f ms; expected "
		          "DEADLINE_EXCEEDED (is params.slow_config slow enough?)",
		          what, dl, conf_answer(rc, &st, ans, sizeof(ans)), ms);
		return;
	}
	int rec = c->o->recovery_ms;
	t0 = conf_now_ms();
	rc = drv_host_health(c->host, rec, &st);
	ms = conf_now_ms() - t0;
	if (rc) {
		conf_fail(
		    c,
		    "after %s(params.slow_config) hit its %d ms deadline, Health Check answered %s after "
		    "%.0f ms; the driver must stay healthy and answer within %d ms (params.recovery_ms)",
		    what, dl, conf_answer(rc, &st, ans, sizeof(ans)), ms, rec);
		return;
	}
	t0 = conf_now_ms();
	rc = provider_call(c, c->host, &c->bc.buf.msg, rec, &what, &st);
	ms = conf_now_ms() - t0;
	if (rc)
		conf_fail(c,
		          "after a call hit its %d ms deadline, %s(config) answered %s after %.0f ms; the "
		          "driver must stay responsive (params.recovery_ms %d)",
		          dl, what, conf_answer(rc, &st, ans, sizeof(ans)), ms, rec);
}

#define N_CONCURRENT 16

struct concurrent {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	int done;
	int failures;
	char first_error[700];
};

static void concurrent_done(void *ud, int code, const char *message, ProtobufCMessage *resp)
{
	struct concurrent *cc = ud;
	pthread_mutex_lock(&cc->mu);
	if (code && !cc->failures++)
		snprintf(cc->first_error, sizeof(cc->first_error), "%s%s%s%s", drv_error_name(code),
		         message && *message ? " \"" : "", message ? message : "",
		         message && *message ? "\"" : "");
	cc->done++;
	pthread_cond_signal(&cc->cv);
	pthread_mutex_unlock(&cc->mu);
	if (resp)
		drv_response_free(resp);
}

void check_robustness_concurrency(struct conf_ctx *c)
{
	/* Static so a callback that arrives after we gave up still has somewhere to write. */
	static struct concurrent cc = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0, ""};
	pthread_mutex_lock(&cc.mu);
	cc.done = cc.failures = 0;
	cc.first_error[0] = '\0';
	pthread_mutex_unlock(&cc.mu);

	drv_get_offers_request oq = DROVER__COMPUTE__V1__GET_OFFERS_REQUEST__INIT;
	drv_get_features_request fq = DROVER__COMPUTE__V1__GET_FEATURES_REQUEST__INIT;
	oq.config = fq.config = &c->bc.buf.msg;
	bool offers = conf_has(c, DRV_FEATURE_OFFERS);
	const char *method = offers ? "GetOffers" : "GetFeatures";
	int started = 0;
	double t0 = conf_now_ms();
	for (int i = 0; i < N_CONCURRENT; i++) {
		int rc = drv_host_call_async(c->host, method, offers ? &oq.base : &fq.base,
		                             c->o->call_timeout_ms, concurrent_done, &cc);
		if (rc) {
			conf_fail(c, "could not start concurrent call %d: %s", i + 1, drv_strerror(rc));
			break;
		}
		started++;
	}
	struct timespec until;
	clock_gettime(CLOCK_REALTIME, &until);
	long wait_ms = c->o->call_timeout_ms + 2000;
	until.tv_sec += wait_ms / 1000;
	until.tv_nsec += (wait_ms % 1000) * 1000000L;
	if (until.tv_nsec >= 1000000000L) {
		until.tv_sec++;
		until.tv_nsec -= 1000000000L;
	}
	pthread_mutex_lock(&cc.mu);
	while (cc.done < started)
		if (pthread_cond_timedwait(&cc.cv, &cc.mu, &until))
			break;
	int done = cc.done, failures = cc.failures;
	char first[700];
	snprintf(first, sizeof(first), "%s", cc.first_error);
	pthread_mutex_unlock(&cc.mu);
	double ms = conf_now_ms() - t0;
	if (c->failed)
		return;
	if (done < started)
		conf_fail(c, "%d concurrent %s calls: only %d finished within %ld ms", N_CONCURRENT, method,
		          done, wait_ms);
	else if (failures)
		conf_fail(c,
		          "%d concurrent %s calls (timeout %d ms each): %d failed, the first with %s; every "
		          "call must succeed",
		          N_CONCURRENT, method, c->o->call_timeout_ms, failures, first);
	else
		conf_note(c, "%d concurrent %s calls in %.0f ms", N_CONCURRENT, method, ms);
}

static struct drv_host *spawn_again(struct conf_ctx *c)
{
	struct drv_spawn_opts so = {
	    .path = c->o->driver_path,
	    .args = c->o->driver_args,
	    .handshake_timeout_ms = c->o->handshake_timeout_ms,
	};
	struct drv_host *h = NULL;
	char err[1024];
	if (drv_host_spawn(&so, &h, err, sizeof(err))) {
		conf_fail(c, "could not start another driver process for this check: %s", err);
		return NULL;
	}
	return h;
}

bool conf_restart_driver(struct conf_ctx *c)
{
	/* SIGKILL, not SIGTERM: a crash gives a driver no chance to save anything on the way out. */
	pid_t pid = drv_host_pid(c->host);
	if (pid > 0)
		kill(pid, SIGKILL);
	int status = -1;
	if (drv_host_wait(c->host, c->o->shutdown_grace_ms, &status)) {
		conf_fail(c, "the driver (pid %d) was still running %d ms after SIGKILL", (int)pid,
		          c->o->shutdown_grace_ms);
		return false;
	}
	struct drv_host *h = spawn_again(c);
	if (!h) {
		/* The dead host stays, so the checks after this one are skipped as "no longer running". */
		return false;
	}
	drv_host_free(c->host);
	c->host = h;
	conf_note(c, "killed pid %d and started the driver again (pid %d)", (int)pid, (int)drv_host_pid(h));
	return true;
}

struct inflight {
	pthread_mutex_t mu;
	bool done;
	int code;
	char message[300];
};

static void inflight_done(void *ud, int code, const char *message, ProtobufCMessage *resp)
{
	struct inflight *f = ud;
	pthread_mutex_lock(&f->mu);
	f->done = true;
	f->code = code;
	snprintf(f->message, sizeof(f->message), "%s", message ? message : "");
	pthread_mutex_unlock(&f->mu);
	if (resp)
		drv_response_free(resp);
}

void check_lifecycle_sigterm(struct conf_ctx *c)
{
	static struct inflight f = {PTHREAD_MUTEX_INITIALIZER, false, 0, ""};
	struct drv_host *h = spawn_again(c);
	if (!h)
		return;
	pthread_mutex_lock(&f.mu);
	f.done = false;
	pthread_mutex_unlock(&f.mu);

	/* A call in flight while SIGTERM arrives: a slow one when the config says how to make one. */
	struct conf_bc slow;
	bool use_slow = c->o->slow_config && conf_has(c, DRV_FEATURE_OFFERS);
	conf_bc_init(&slow, c->o->config, use_slow ? c->o->slow_config : NULL, c->o->secrets, NULL);
	drv_get_offers_request oq = DROVER__COMPUTE__V1__GET_OFFERS_REQUEST__INIT;
	drv_get_features_request fq = DROVER__COMPUTE__V1__GET_FEATURES_REQUEST__INIT;
	oq.config = fq.config = &slow.buf.msg;
	const char *method = use_slow ? "GetOffers" : "GetFeatures";
	int rc = drv_host_call_async(h, method, use_slow ? &oq.base : &fq.base, c->o->call_timeout_ms,
	                             inflight_done, &f);
	struct timespec ts = {0, 50 * 1000000L};
	nanosleep(&ts, NULL);

	int status = -1;
	double t0 = conf_now_ms();
	int stop = drv_host_stop(h, c->o->shutdown_grace_ms, &status);
	double ms = conf_now_ms() - t0;
	if (stop == DRV_EDEADLINE)
		conf_fail(c,
		          "the driver was still running %d ms (params.shutdown_grace_ms) after SIGTERM%s and "
		          "had to be killed; it must exit within the grace period",
		          c->o->shutdown_grace_ms, rc == 0 ? " with a call in flight" : "");
	else if (stop)
		conf_fail(c, "stopping the driver failed: %s", drv_strerror(stop));
	else if (status != 0 && status != 128 + SIGTERM)
		conf_fail(c,
		          "the driver exited with status %d %.0f ms after SIGTERM; a clean shutdown exits 0",
		          status, ms);
	else
		conf_note(c, "exited with status %d %.0f ms after SIGTERM", status, ms);
	pthread_mutex_lock(&f.mu);
	if (f.done)
		conf_note(c, "the %s call in flight ended with %s %s", method, drv_error_name(f.code),
		          f.message);
	pthread_mutex_unlock(&f.mu);
	drv_host_free(h);
	conf_bc_free(&slow);
}

void check_lifecycle_stdin_eof(struct conf_ctx *c)
{
	struct drv_host *h = spawn_again(c);
	if (!h)
		return;
	drv_host_close_stdin(h);
	int status = -1;
	double t0 = conf_now_ms();
	int rc = drv_host_wait(h, c->o->shutdown_grace_ms, &status);
	if (rc == DRV_EDEADLINE)
		conf_fail(c,
		          "the driver was still running %d ms (params.shutdown_grace_ms) after its stdin "
		          "reached EOF; a spawned driver must exit when its parent goes away",
		          c->o->shutdown_grace_ms);
	else if (rc)
		conf_fail(c, "waiting for the driver failed: %s", drv_strerror(rc));
	else
		conf_note(c, "exited with status %d %.0f ms after stdin EOF", status, conf_now_ms() - t0);
	drv_host_free(h);
}
