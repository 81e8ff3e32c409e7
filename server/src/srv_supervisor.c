#include "srv_supervisor.h"

#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "drover/host.h"
#include "srv_config.h"
#include "srv_log.h"
#include "srv_store.h"

#define DRIVER_PREFIX "drover-driver-"
/* A driver that stayed up this long starts its backoff from the beginning again. */
#define STABLE_MS 10000
#define HEALTH_TIMEOUT_MS 2000
#define HEALTH_FAILURES_TO_RESTART 2

struct sup_call;

struct feat_cache {
	struct feat_cache *next;
	char *key;
	drv_features features;
};

struct drv_entry {
	struct srv_supervisor *sup;
	char *type;
	char *name;
	bool remote;
	char **argv;    /* spawned: path then args, NULL-terminated */
	bool allow_tcp; /* drivers.commands[].allow_tcp_handshake */
	const struct srv_config_remote *rcfg;
	const struct srv_driver_limits
	    *limits; /* the entry's own (commands, remote); NULL for found drivers */

	struct drv_host *host;
	enum srv_driver_state state;
	unsigned gen; /* bumped at every start; events of older generations are stale */
	bool exited_while_starting;
	char exit_msg[128];
	int pid;
	char address[300];
	unsigned restarts;
	unsigned consecutive_failures;
	unsigned backoff_ms;
	int64_t next_restart_ms;
	char last_error[1024];
	int64_t last_error_ms;
	char *reported_type;
	char *version;
	char *info_text[3]; /* GetInfo's config schema, secrets schema and description */
	unsigned protocol_version;
	drv_features features;
	int64_t started_ms;
	bool health_inflight;
	int health_failures;
	bool start_inflight;
	uv_timer_t restart_timer;

	struct sup_call *inflight; /* doubly linked */
	struct sup_call *pending;
	struct feat_cache *feat;
};

enum ev_kind { EV_EXIT, EV_DONE };

struct sup_ev {
	struct sup_ev *next;
	enum ev_kind kind;
	struct drv_entry *e;
	unsigned gen;
	int64_t exit_status;
	int term_signal;
	struct sup_call *call;
	int code;
	char *message;
	ProtobufCMessage *resp;
};

/*
 * The one exit event of a spawn lives in its context (a process exits once),
 * so an exit is never lost to a failed allocation on the SDK's thread.
 */
struct spawn_ctx {
	struct spawn_ctx *next;
	struct srv_supervisor *sup;
	struct drv_entry *e;
	unsigned gen;
	struct sup_ev exit_ev;
};

struct sup_call {
	struct sup_call *next, *prev;
	struct sup_call **list; /* the list it is on, or NULL */
	struct srv_supervisor *sup;
	struct drv_entry *e;
	char method[48];
	const ProtobufCMessageDescriptor *req_desc;
	unsigned char *req_buf; /* packed request while waiting for a start */
	size_t req_len;
	int timeout_ms;
	int64_t deadline_ms;
	srv_call_cb cb;
	void *ud;
	bool delivered;
	bool sdk_outstanding;
	char *held_type;       /* while held: the driver type it is for */
	struct sup_ev done_ev; /* its one completion, embedded for the same reason as exit_ev */
};

/* Calls whose record could not be allocated, failed later with DRV_ENOMEM from async_cb. */
#define OOM_CALLS_MAX 64
struct oom_call {
	srv_call_cb cb; /* one of the two */
	srv_features_cb feat_cb;
	void *ud;
};

struct srv_supervisor {
	uv_loop_t *loop;
	const struct srv_config *cfg;
	struct drv_entry **entries;
	size_t n_entries, cap_entries;
	uv_async_t async;
	uv_timer_t health_timer;
	pthread_mutex_t mu;
	struct sup_ev *ev_head, *ev_tail; /* under mu */
	struct spawn_ctx *ctxs;
	srv_supervisor_event_cb event_cb;
	void *event_ud;
	bool stopping;
	bool auto_start;     /* drivers found later in a directory start at once too */
	bool handles_closed; /* under mu */
	bool hold;           /* calls wait in held_* until released */
	struct sup_call *held_head, *held_tail;
	int live_works;
	struct oom_call oom_calls[OOM_CALLS_MAX];
	size_t n_oom_calls;
};

static void start_driver(struct drv_entry *e);
static void restart_timer_cb(uv_timer_t *t);

/* ---- the event queue: the only way from SDK threads into the loop ---- */

static void call_free(struct sup_call *c)
{
	free(c->held_type);
	free(c->req_buf);
	free(c);
}

static void post(struct srv_supervisor *sup, struct sup_ev *ev)
{
	pthread_mutex_lock(&sup->mu);
	if (sup->handles_closed) {
		/* After shutdown: nobody is waiting; a late completion is only freed. */
		pthread_mutex_unlock(&sup->mu);
		if (ev->resp)
			drv_response_free(ev->resp);
		free(ev->message);
		ev->message = NULL;
		if (ev->kind == EV_DONE)
			call_free(ev->call);
		return;
	}
	if (sup->ev_tail)
		sup->ev_tail->next = ev;
	else
		sup->ev_head = ev;
	sup->ev_tail = ev;
	uv_async_send(&sup->async);
	pthread_mutex_unlock(&sup->mu);
}

static void emit(struct srv_supervisor *sup, const char *type, int level, const char *kind, const char *fmt,
                 ...) __attribute__((format(printf, 5, 6)));
static void emit(struct srv_supervisor *sup, const char *type, int level, const char *kind, const char *fmt,
                 ...)
{
	char msg[1200];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (sup->event_cb)
		sup->event_cb(sup->event_ud, type, level, kind, msg);
}

static void list_add(struct sup_call **list, struct sup_call *c)
{
	c->prev = NULL;
	c->next = *list;
	if (*list)
		(*list)->prev = c;
	*list = c;
	c->list = list;
}

static void list_del(struct sup_call *c)
{
	if (!c->list)
		return;
	if (c->prev)
		c->prev->next = c->next;
	else
		*c->list = c->next;
	if (c->next)
		c->next->prev = c->prev;
	c->list = NULL;
	c->next = c->prev = NULL;
}

/* Delivers a result to the caller once; the record lives on while the SDK still owns a completion. */
static void deliver(struct sup_call *c, int code, const char *message, ProtobufCMessage *resp)
{
	list_del(c);
	if (c->delivered) {
		if (resp)
			drv_response_free(resp);
		return;
	}
	c->delivered = true;
	c->cb(c->ud, code, message ? message : "", resp);
}

/* Fails a call later on the loop (callers never see a callback before their call returns). */
static void fail_later(struct sup_call *c, int code, const char *message)
{
	struct sup_ev *ev = &c->done_ev;
	ev->kind = EV_DONE;
	ev->call = c;
	ev->code = code;
	/* Out of memory for the copy: the code still goes through, with an empty message. */
	ev->message = strdup(message ? message : "");
	post(c->sup, ev);
}

/*
 * The SDK's message for an answer over one of the driver's limits, with the
 * config field that sets it, so that the operator knows what to raise if
 * the driver is honest. NULL when the message is not such a one.
 */
static char *name_limit(const char *method, int code, const char *message)
{
	const char *field;
	char *out;

	if (code != DRV_ERANGE || !strstr(message, " answer ") || !strstr(message, "limit"))
		return NULL;
	if (strcmp(method, "ListInstances") == 0)
		field = "drivers.limits.list_answer_bytes";
	else if (strcmp(method, "GetOffers") != 0)
		field = "drivers.limits.answer_bytes";
	else if (strstr(message, " offers, the limit"))
		field = "drivers.limits.offers";
	else
		field = "drivers.limits.offers_answer_bytes";
	return asprintf(&out, "%s (%s, or limits: on the driver's entry)", message, field) < 0 ? NULL : out;
}

static void on_sdk_done(void *ud, int code, const char *message, ProtobufCMessage *resp)
{
	struct sup_call *c = ud;
	struct sup_ev *ev = &c->done_ev;
	ev->kind = EV_DONE;
	ev->call = c;
	ev->code = code;
	message = message ? message : "";
	ev->message = name_limit(c->method, code, message);
	if (!ev->message)
		ev->message = strdup(message);
	ev->resp = resp;
	post(c->sup, ev);
}

static void on_exit_cb(void *ud, const char *driver_name, int64_t exit_status, int term_signal)
{
	struct spawn_ctx *ctx = ud;
	struct sup_ev *ev = &ctx->exit_ev;
	ev->kind = EV_EXIT;
	ev->e = ctx->e;
	ev->gen = ctx->gen;
	ev->exit_status = exit_status;
	ev->term_signal = term_signal;
	post(ctx->sup, ev);
}

static void on_stderr_cb(void *ud, const char *driver_name, const char *line)
{
	srv_log_driver_line(driver_name, line);
}

/* ---- state changes ---- */

static void fail_list(struct sup_call **list, int code, const char *msg)
{
	while (*list) {
		struct sup_call *c = *list;
		list_del(c);
		deliver(c, code, msg, NULL);
		if (!c->sdk_outstanding)
			call_free(c);
	}
}

static void clear_features(struct drv_entry *e)
{
	while (e->feat) {
		struct feat_cache *f = e->feat;
		e->feat = f->next;
		free(f->key);
		free(f);
	}
}

/* A failure of a running or starting driver: fail its calls, then restart it after a capped backoff. */
static void to_backoff(struct drv_entry *e, const char *why)
{
	struct srv_supervisor *sup = e->sup;
	char msg[1400];
	int64_t now = srv_now_ms();

	snprintf(e->last_error, sizeof(e->last_error), "%s", why);
	e->last_error_ms = now;
	if (e->started_ms && now - e->started_ms >= STABLE_MS)
		e->consecutive_failures = 0;
	e->consecutive_failures++;
	uint64_t delay = (uint64_t)sup->cfg->restart_backoff_ms;
	for (unsigned i = 1;
	     i < e->consecutive_failures && delay < (uint64_t)sup->cfg->restart_backoff_max_ms; i++)
		delay *= 2;
	if (delay > (uint64_t)sup->cfg->restart_backoff_max_ms)
		delay = (uint64_t)sup->cfg->restart_backoff_max_ms;
	e->backoff_ms = (unsigned)delay;
	e->next_restart_ms = now + (int64_t)delay;
	e->state = SRV_DRIVER_BACKOFF;
	e->pid = 0;
	clear_features(e);
	srv_warn("supervisor", "driver %s: %s; %s in %u ms (failure %u in a row)", e->name, why,
	         e->remote ? "reconnecting" : "restarting", e->backoff_ms, e->consecutive_failures);
	emit(sup, e->type, SRV_EVENT_ERROR, "driver.failed", "driver %s: %s; %s in %u ms", e->name, why,
	     e->remote ? "reconnecting" : "restarting", e->backoff_ms);
	snprintf(msg, sizeof(msg), "driver %s is unavailable: %s", e->name, why);
	fail_list(&e->inflight, DRV_EUNAVAILABLE, msg);
	fail_list(&e->pending, DRV_EUNAVAILABLE, msg);
	if (!sup->stopping)
		uv_timer_start(&e->restart_timer, restart_timer_cb, delay, 0);
}

/*
 * How the SDK host begins the reason of a handshake it refused because it
 * names an address that is not the driver's own (driver-sdk/src/host.c,
 * PROTOCOL.md §12.6), unlike a garbage or late handshake.
 */
#define REFUSED_TEXT "handshake refused: "

/*
 * A spawned driver whose handshake was refused (the host stopped its
 * process). It is stopped, not restarted: its next handshake would name the
 * same address, and a crash loop's backoff would show a refusal as a crash.
 * `driver list` shows it stopped with the refusal as its last error; calls
 * for its type fail with that error until droverd is restarted.
 */
static void to_refused(struct drv_entry *e, const char *why)
{
	snprintf(e->last_error, sizeof(e->last_error),
	         "%s; the driver is stopped and not restarted (its next handshake would be refused "
	         "again): fix it, then restart droverd",
	         why);
	e->last_error_ms = srv_now_ms();
	e->state = SRV_DRIVER_STOPPED;
	e->pid = 0;
	clear_features(e);
	srv_error("supervisor", "%s", e->last_error);
	emit(e->sup, e->type, SRV_EVENT_ERROR, "driver.refused", "%s", e->last_error);
	char msg[1400];
	snprintf(msg, sizeof(msg), "driver %s is stopped: %s", e->name, e->last_error);
	fail_list(&e->inflight, DRV_EUNAVAILABLE, msg);
	fail_list(&e->pending, DRV_EUNAVAILABLE, msg);
}

static void dispatch(struct sup_call *c, const ProtobufCMessage *req)
{
	struct drv_entry *e = c->e;
	int timeout = c->timeout_ms;
	if (c->deadline_ms) {
		int64_t left = c->deadline_ms - srv_now_ms();
		if (left <= 0) {
			fail_later(c, DRV_EDEADLINE,
			           "the call's deadline passed while the driver was starting");
			return;
		}
		timeout = (int)left;
	}
	list_add(&e->inflight, c);
	c->sdk_outstanding = true;
	int rc = drv_host_call_async(e->host, c->method, req, timeout, on_sdk_done, c);
	if (rc != 0) {
		char msg[600];
		c->sdk_outstanding = false;
		list_del(c);
		snprintf(msg, sizeof(msg), "driver %s: %s failed: %s", e->name, c->method, drv_strerror(rc));
		fail_later(c, rc, msg);
	}
}

static void flush_pending(struct drv_entry *e)
{
	while (e->pending) {
		struct sup_call *c = e->pending;
		list_del(c);
		ProtobufCMessage *req = protobuf_c_message_unpack(c->req_desc, NULL, c->req_len, c->req_buf);
		free(c->req_buf);
		c->req_buf = NULL;
		if (!req) {
			fail_later(c, DRV_EINTERNAL, "cannot re-read a queued request");
			continue;
		}
		dispatch(c, req);
		protobuf_c_message_free_unpacked(req, NULL);
	}
}

/* ---- starting (off the loop: spawning blocks for the handshake) ---- */

struct start_work {
	uv_work_t req;
	struct drv_entry *e;
	unsigned gen;
	struct drv_host *old_host;
	struct drv_host *host;
	struct spawn_ctx *ctx;
	int rc;
	char err[1200];
	drv_get_info_response *info;
	drv_features features;
	const struct srv_config *cfg;
};

static void start_work_cb(uv_work_t *req)
{
	struct start_work *w = req->data;
	struct drv_entry *e = w->e;
	const struct srv_config *cfg = w->cfg;

	/* The old process (crashed or unhealthy) is stopped and reaped here, off the loop. */
	drv_host_free(w->old_host);
	w->old_host = NULL;
	struct srv_driver_limits lim = srv_config_driver_limits(cfg, e->limits);
	struct drv_answer_limits al = {.answer_bytes = (size_t)lim.answer_bytes,
	                               .offers_answer_bytes = (size_t)lim.offers_answer_bytes,
	                               .list_answer_bytes = (size_t)lim.list_answer_bytes,
	                               .offers = (size_t)lim.offers};
	if (e->remote) {
		const struct srv_config_remote *r = e->rcfg;
		struct drv_connect_opts o = {.address = r->address,
		                             .name = e->name,
		                             .ca_file = r->ca,
		                             .cert_file = r->cert,
		                             .key_file = r->key,
		                             .server_name = r->server_name,
		                             .insecure = r->insecure,
		                             .connect_timeout_ms = cfg->handshake_timeout_ms,
		                             .limits = al};
		w->rc = drv_host_connect(&o, &w->host, w->err, sizeof(w->err));
	} else {
		struct drv_spawn_opts o = {.path = e->argv[0],
		                           .args = (const char *const *)e->argv + 1,
		                           .name = e->name,
		                           .handshake_timeout_ms = cfg->handshake_timeout_ms,
		                           .on_stderr = on_stderr_cb,
		                           .on_exit = on_exit_cb,
		                           .ud = w->ctx,
		                           .limits = al,
		                           .allow_tcp_handshake = e->allow_tcp,
		                           .stderr_lines_per_s = (unsigned)cfg->driver_log_lines_per_s,
		                           .stderr_bytes_per_s = (unsigned)cfg->driver_log_bytes_per_s,
		                           .stderr_line_max = (unsigned)cfg->driver_log_line_max};
		w->rc = drv_host_spawn(&o, &w->host, w->err, sizeof(w->err));
	}
	if (w->rc != 0)
		return;
	drv_get_info_request ireq = DROVER__COMPUTE__V1__GET_INFO_REQUEST__INIT;
	drv_get_features_request freq = DROVER__COMPUTE__V1__GET_FEATURES_REQUEST__INIT;
	drv_get_features_response *fresp = NULL;
	struct drv_status st;
	w->rc = drv_host_get_info(w->host, &ireq, &w->info, cfg->handshake_timeout_ms, &st);
	if (w->rc == 0)
		w->rc = drv_host_get_features(w->host, &freq, &fresp, cfg->handshake_timeout_ms, &st);
	if (w->rc != 0) {
		snprintf(w->err, sizeof(w->err), "driver %s: %s at start: %s", e->name,
		         w->info ? "GetFeatures" : "GetInfo",
		         st.message[0] ? st.message : drv_strerror(w->rc));
		return;
	}
	for (size_t i = 0; i < fresp->n_features; i++)
		if (fresp->features[i] > 0 && fresp->features[i] < 64)
			w->features |= DRV_FEATURE_BIT(fresp->features[i]);
	drv_response_free(&fresp->base);
}

/*
 * What `drover driver show` prints of GetInfo: the schemas and the
 * description. Each is kept up to 64 KiB, so that a driver's answer cannot
 * swell every ListDrivers answer; a longer one is kept as "" (shown as not
 * given), and out of memory keeps "" as well: neither stops the driver.
 */
#define INFO_TEXT_MAX 65536
static void keep_info_text(struct drv_entry *e, const drv_get_info_response *info)
{
	const char *from[3] = {info->config_schema_json, info->secrets_schema_json, info->description};
	for (int i = 0; i < 3; i++) {
		free(e->info_text[i]);
		e->info_text[i] = from[i] && strlen(from[i]) <= INFO_TEXT_MAX ? strdup(from[i]) : NULL;
	}
}

static void start_after_cb(uv_work_t *req, int status)
{
	struct start_work *w = req->data;
	struct drv_entry *e = w->e;
	struct srv_supervisor *sup = e->sup;

	sup->live_works--;
	e->start_inflight = false;
	if (e->state == SRV_DRIVER_STOPPED || sup->stopping) {
		/* Shut down while it was starting: it never gets to serve. */
		drv_host_free(w->host);
		if (w->info)
			drv_response_free(&w->info->base);
		free(w);
		return;
	}
	if (w->rc == 0 && e->exited_while_starting) {
		w->rc = DRV_EUNAVAILABLE;
		snprintf(w->err, sizeof(w->err), "driver %s %s right after its handshake", e->name,
		         e->exit_msg);
	}
	e->host = w->host;
	if (w->rc == DRV_EHANDSHAKE && strstr(w->err, REFUSED_TEXT)) {
		if (w->info)
			drv_response_free(&w->info->base);
		to_refused(e, w->err);
		free(w);
		return;
	}
	if (w->rc != 0) {
		if (w->info)
			drv_response_free(&w->info->base);
		to_backoff(e, w->err[0] ? w->err : drv_strerror(w->rc));
		free(w);
		return;
	}
	char *reported_type = strdup(w->info->type ? w->info->type : "");
	char *version = strdup(w->info->driver_version ? w->info->driver_version : "");
	if (!reported_type || !version) {
		free(reported_type);
		free(version);
		drv_response_free(&w->info->base);
		to_backoff(e, "out of memory reading its GetInfo answer");
		free(w);
		return;
	}
	e->state = SRV_DRIVER_READY;
	e->pid = (int)drv_host_pid(e->host);
	snprintf(e->address, sizeof(e->address), "%s", drv_host_target(e->host));
	e->started_ms = srv_now_ms();
	e->backoff_ms = 0;
	e->next_restart_ms = 0;
	e->health_failures = 0;
	e->features = w->features;
	free(e->reported_type);
	free(e->version);
	e->reported_type = reported_type;
	e->version = version;
	keep_info_text(e, w->info);
	e->protocol_version = (unsigned)w->info->protocol_version;
	if (strcmp(e->reported_type, e->type) != 0)
		srv_warn("supervisor",
		         "driver %s reports type \"%s\"; it keeps serving backends of type \"%s\"", e->name,
		         e->reported_type, e->type);
	srv_info("supervisor", "driver %s ready (%s%d, %s, version %s, handshake %.1f ms)", e->name,
	         e->remote ? "remote " : "pid ", e->pid, e->address, e->version,
	         e->remote ? 0.0 : drv_host_handshake_ms(e->host));
	drv_response_free(&w->info->base);
	free(w);
	flush_pending(e);
}

static void start_driver(struct drv_entry *e)
{
	struct srv_supervisor *sup = e->sup;
	if (sup->stopping || e->start_inflight)
		return;
	struct start_work *w = calloc(1, sizeof(*w));
	struct spawn_ctx *ctx = calloc(1, sizeof(*ctx));
	if (!w || !ctx) {
		free(w);
		free(ctx);
		/*
		 * Nothing changed: the state, counters and waiting calls stay as they
		 * were, and the restart timer tries again after the shortest backoff.
		 */
		snprintf(e->last_error, sizeof(e->last_error), "out of memory starting the driver");
		e->last_error_ms = srv_now_ms();
		srv_warn("supervisor", "driver %s: out of memory starting it; trying again in %d ms", e->name,
		         sup->cfg->restart_backoff_ms);
		uv_timer_start(&e->restart_timer, restart_timer_cb, (uint64_t)sup->cfg->restart_backoff_ms,
		               0);
		return;
	}
	if (e->state == SRV_DRIVER_BACKOFF)
		e->restarts++;
	e->gen++;
	e->state = SRV_DRIVER_STARTING;
	e->exited_while_starting = false;
	e->pid = 0;
	ctx->sup = sup;
	ctx->e = e;
	ctx->gen = e->gen;
	/* Contexts live until the supervisor is freed: an exit callback may come at any time. */
	ctx->next = sup->ctxs;
	sup->ctxs = ctx;
	w->req.data = w;
	w->e = e;
	w->gen = e->gen;
	w->ctx = ctx;
	w->cfg = sup->cfg;
	w->old_host = e->host;
	e->host = NULL;
	e->start_inflight = true;
	sup->live_works++;
	uv_queue_work(sup->loop, &w->req, start_work_cb, start_after_cb);
}

static void restart_timer_cb(uv_timer_t *t)
{
	struct drv_entry *e = t->data;
	/* A health check still holds the old host; try again shortly. */
	if (e->health_inflight) {
		uv_timer_start(&e->restart_timer, restart_timer_cb, 50, 0);
		return;
	}
	/* Idle: a first start that ran out of memory (start_driver). */
	if (e->state == SRV_DRIVER_BACKOFF || e->state == SRV_DRIVER_IDLE)
		start_driver(e);
}

/* ---- health checks ---- */

struct health_work {
	uv_work_t req;
	struct drv_entry *e;
	struct drv_host *host;
	unsigned gen;
	int rc;
	char msg[512];
};

static void health_work_cb(uv_work_t *req)
{
	struct health_work *w = req->data;
	struct drv_status st = {0};
	w->rc = drv_host_health(w->host, HEALTH_TIMEOUT_MS, &st);
	snprintf(w->msg, sizeof(w->msg), "%s", st.message[0] ? st.message : drv_strerror(w->rc));
}

static void health_after_cb(uv_work_t *req, int status)
{
	struct health_work *w = req->data;
	struct drv_entry *e = w->e;
	e->health_inflight = false;
	e->sup->live_works--;
	if (w->gen == e->gen && e->state == SRV_DRIVER_READY && !e->sup->stopping) {
		if (w->rc == 0) {
			e->health_failures = 0;
		} else if (++e->health_failures >= HEALTH_FAILURES_TO_RESTART) {
			char why[700];
			snprintf(why, sizeof(why), "health check failed %d times: %s", e->health_failures,
			         w->msg);
			to_backoff(e, why);
		}
	}
	free(w);
}

static void health_timer_cb(uv_timer_t *t)
{
	struct srv_supervisor *sup = t->data;
	for (size_t i = 0; i < sup->n_entries; i++) {
		struct drv_entry *e = sup->entries[i];
		if (e->state != SRV_DRIVER_READY || e->health_inflight || !e->host)
			continue;
		struct health_work *w = calloc(1, sizeof(*w));
		if (!w)
			return; /* out of memory: this round is skipped, the next tick tries again */
		w->req.data = w;
		w->e = e;
		w->host = e->host;
		w->gen = e->gen;
		e->health_inflight = true;
		sup->live_works++;
		uv_queue_work(sup->loop, &w->req, health_work_cb, health_after_cb);
	}
}

/* ---- events on the loop ---- */

static void handle_exit(struct sup_ev *ev)
{
	struct drv_entry *e = ev->e;
	char how[128];
	if (ev->term_signal)
		snprintf(how, sizeof(how), "was killed by signal %d", ev->term_signal);
	else
		snprintf(how, sizeof(how), "exited with status %lld", (long long)ev->exit_status);
	if (ev->gen != e->gen || e->sup->stopping)
		return;
	if (e->state == SRV_DRIVER_STARTING) {
		e->exited_while_starting = true;
		snprintf(e->exit_msg, sizeof(e->exit_msg), "%s", how);
		return;
	}
	if (e->state != SRV_DRIVER_READY)
		return;
	char why[200];
	snprintf(why, sizeof(why), "%s (pid %d)", how, e->pid);
	to_backoff(e, why);
}

static void async_cb(uv_async_t *a)
{
	struct srv_supervisor *sup = a->data;
	pthread_mutex_lock(&sup->mu);
	struct sup_ev *ev = sup->ev_head;
	sup->ev_head = sup->ev_tail = NULL;
	pthread_mutex_unlock(&sup->mu);
	/* Copied first: a callback may make new calls that land in the array again. */
	size_t n_oom = sup->n_oom_calls;
	struct oom_call oom[OOM_CALLS_MAX];
	memcpy(oom, sup->oom_calls, n_oom * sizeof(oom[0]));
	sup->n_oom_calls = 0;
	for (size_t i = 0; i < n_oom; i++) {
		if (oom[i].cb)
			oom[i].cb(oom[i].ud, DRV_ENOMEM, "out of memory", NULL);
		else
			oom[i].feat_cb(oom[i].ud, DRV_ENOMEM, "out of memory", 0);
	}
	while (ev) {
		struct sup_ev *next = ev->next;
		ev->next = NULL;
		if (ev->kind == EV_EXIT) {
			handle_exit(ev);
		} else {
			struct sup_call *c = ev->call;
			bool was_outstanding = c->sdk_outstanding;
			if (was_outstanding)
				c->sdk_outstanding = false;
			/*
			 * A driver that crashed mid-call answers UNAVAILABLE here (the
			 * connection broke); the exit event may come a moment later.
			 */
			deliver(c, ev->code, ev->message, ev->resp);
			free(ev->message);
			call_free(c);
		}
		ev = next;
	}
}

/* ---- discovery ---- */

static bool valid_type(const char *t)
{
	if (!t[0])
		return false;
	for (const char *p = t; *p; p++)
		if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '-' || *p == '_'))
			return false;
	return true;
}

static struct drv_entry *find(struct srv_supervisor *sup, const char *type)
{
	for (size_t i = 0; i < sup->n_entries; i++)
		if (strcmp(sup->entries[i]->type, type) == 0)
			return sup->entries[i];
	return NULL;
}

static void free_argv(char **argv)
{
	if (argv)
		for (char **a = argv; *a; a++)
			free(*a);
	free(argv);
}

/* Adds an entry that takes argv (may be NULL); NULL when out of memory, argv then still the caller's. */
static struct drv_entry *add_entry(struct srv_supervisor *sup, const char *type, const char *name,
                                   char **argv)
{
	if (sup->n_entries == sup->cap_entries) {
		size_t cap = sup->cap_entries ? sup->cap_entries * 2 : 8;
		struct drv_entry **entries = realloc(sup->entries, cap * sizeof(*sup->entries));
		if (!entries)
			return NULL;
		sup->entries = entries;
		sup->cap_entries = cap;
	}
	struct drv_entry *e = calloc(1, sizeof(*e));
	if (!e)
		return NULL;
	e->type = strdup(type);
	e->name = strdup(name ? name : type);
	if (!e->type || !e->name) {
		free(e->type);
		free(e->name);
		free(e);
		return NULL;
	}
	e->sup = sup;
	e->argv = argv;
	e->state = SRV_DRIVER_IDLE;
	uv_timer_init(sup->loop, &e->restart_timer);
	e->restart_timer.data = e;
	sup->entries[sup->n_entries++] = e;
	return e;
}

/* warn: at start, where a missing directory (a typo in drivers.dirs) must be seen, not on every rescan. */
static void scan_dirs(struct srv_supervisor *sup, bool warn)
{
	for (size_t d = 0; d < sup->cfg->n_driver_dirs; d++) {
		const char *dir = sup->cfg->driver_dirs[d];
		DIR *dh = opendir(dir);
		if (!dh) {
			srv_log(warn ? SRV_LOG_WARN : SRV_LOG_DEBUG, "supervisor",
			        "driver directory %s (drivers.dirs): %s", dir, strerror(errno));
			continue;
		}
		struct dirent *de;
		while ((de = readdir(dh))) {
			const char *type = de->d_name + strlen(DRIVER_PREFIX);
			if (strncmp(de->d_name, DRIVER_PREFIX, strlen(DRIVER_PREFIX)) != 0 ||
			    !valid_type(type))
				continue;
			if (find(sup, type))
				continue;
			char path[4096];
			struct stat st;
			snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
			if (stat(path, &st) < 0 || !S_ISREG(st.st_mode) || access(path, X_OK) < 0)
				continue;
			char **argv = calloc(2, sizeof(char *));
			/* An absolute path: the driver must not depend on droverd's cwd to be found again. */
			char *abs = argv ? realpath(path, NULL) : NULL;
			if (argv)
				argv[0] = abs ? abs : strdup(path);
			struct drv_entry *e = argv && argv[0] ? add_entry(sup, type, type, argv) : NULL;
			if (!e) {
				/* Not added: the next scan finds it again. */
				srv_warn("supervisor", "driver %s: out of memory adding %s", type, path);
				free_argv(argv);
				continue;
			}
			srv_debug("supervisor", "found driver %s: %s", type, e->argv[0]);
			if (sup->auto_start)
				start_driver(e);
		}
		closedir(dh);
	}
}

int srv_supervisor_new(uv_loop_t *loop, const struct srv_config *cfg, struct srv_supervisor **out, char *err,
                       size_t errlen)
{
	struct srv_supervisor *sup = calloc(1, sizeof(*sup));
	const char *twice = NULL;
	if (!sup) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	sup->loop = loop;
	sup->cfg = cfg;
	pthread_mutex_init(&sup->mu, NULL);
	uv_async_init(loop, &sup->async, async_cb);
	sup->async.data = sup;
	uv_timer_init(loop, &sup->health_timer);
	sup->health_timer.data = sup;
	/* Explicit commands and addresses first: they win over a binary of the same type in a directory. */
	for (size_t i = 0; i < cfg->n_commands; i++) {
		const struct srv_config_command *c = &cfg->commands[i];
		if (find(sup, c->type)) {
			twice = c->type;
			goto fail_twice;
		}
		/* Filled in order, so a failed copy ends the list there and free_argv frees the rest. */
		char **argv = calloc(c->n_args + 2, sizeof(char *));
		bool ok = argv && (argv[0] = strdup(c->path));
		for (size_t j = 0; ok && j < c->n_args; j++)
			ok = (argv[j + 1] = strdup(c->args[j])) != NULL;
		struct drv_entry *e = ok ? add_entry(sup, c->type, c->type, argv) : NULL;
		if (!e) {
			free_argv(argv);
			goto fail_oom;
		}
		e->limits = &c->limits;
		e->allow_tcp = c->allow_tcp_handshake;
	}
	for (size_t i = 0; i < cfg->n_remotes; i++) {
		const struct srv_config_remote *r = &cfg->remotes[i];
		if (find(sup, r->type)) {
			twice = r->type;
			goto fail_twice;
		}
		struct drv_entry *e = add_entry(sup, r->type, r->name, NULL);
		if (!e)
			goto fail_oom;
		e->remote = true;
		e->rcfg = r;
		e->limits = &r->limits;
		snprintf(e->address, sizeof(e->address), "%s", r->address);
	}
	scan_dirs(sup, true);
	uv_timer_start(&sup->health_timer, health_timer_cb, (uint64_t)cfg->health_interval_ms,
	               (uint64_t)cfg->health_interval_ms);
	*out = sup;
	return 0;
fail_oom:
	snprintf(err, errlen, "out of memory");
	goto fail;
fail_twice:
	snprintf(err, errlen, "driver type \"%s\" is configured twice", twice);
fail:
	srv_supervisor_close_handles(sup);
	uv_run(loop, UV_RUN_NOWAIT);
	srv_supervisor_free(sup);
	return -1;
}

void srv_supervisor_set_event_cb(struct srv_supervisor *sup, srv_supervisor_event_cb cb, void *ud)
{
	sup->event_cb = cb;
	sup->event_ud = ud;
}

bool srv_supervisor_has_type(struct srv_supervisor *sup, const char *type)
{
	if (find(sup, type))
		return true;
	/* A binary dropped into a driver directory after start is picked up here. */
	scan_dirs(sup, false);
	return find(sup, type) != NULL;
}

void srv_supervisor_start_all(struct srv_supervisor *sup)
{
	sup->auto_start = true;
	for (size_t i = 0; i < sup->n_entries; i++)
		if (sup->entries[i]->state == SRV_DRIVER_IDLE)
			start_driver(sup->entries[i]);
}

int srv_supervisor_ensure(struct srv_supervisor *sup, const char *type)
{
	if (!srv_supervisor_has_type(sup, type))
		return DRV_ENOTFOUND;
	struct drv_entry *e = find(sup, type);
	if (e->state == SRV_DRIVER_IDLE)
		start_driver(e);
	return 0;
}

/* Sends a call on its way: now, after a start, or to a failure. */
static void route(struct sup_call *c, const char *type, const ProtobufCMessage *req)
{
	struct srv_supervisor *sup = c->sup;
	char msg[1400];
	struct drv_entry *e = srv_supervisor_has_type(sup, type) ? find(sup, type) : NULL;
	c->e = e;
	if (!e) {
		snprintf(msg, sizeof(msg),
		         "no driver for backend type \"%s\" (no drover-driver-%s in the driver "
		         "directories, and no command or address of that type in the config)",
		         type, type);
		fail_later(c, DRV_ENOTFOUND, msg);
		return;
	}
	if (sup->stopping) {
		fail_later(c, DRV_EUNAVAILABLE, "the server is shutting down");
		return;
	}
	if (e->state == SRV_DRIVER_STOPPED) {
		/* Only a refused handshake stops one driver while the server runs (to_refused). */
		snprintf(msg, sizeof(msg), "driver %s is stopped: %s", e->name, e->last_error);
		fail_later(c, DRV_EUNAVAILABLE, msg);
		return;
	}
	/*
	 * A driver that failed and is being restarted (or reconnected) answers
	 * nothing for a while: calls fail fast rather than wait for the attempt.
	 * Only a first start is waited for.
	 */
	if (e->state == SRV_DRIVER_STARTING && e->consecutive_failures > 0) {
		snprintf(msg, sizeof(msg), "driver %s is unavailable (%s now): %s", e->name,
		         e->remote ? "reconnecting" : "restarting", e->last_error);
		fail_later(c, DRV_EUNAVAILABLE, msg);
		return;
	}
	if (e->state == SRV_DRIVER_BACKOFF) {
		int64_t left = e->next_restart_ms - srv_now_ms();
		snprintf(msg, sizeof(msg), "driver %s is unavailable (%s; next %s in %lld ms): %s", e->name,
		         e->remote ? "reconnecting" : "restarting", e->remote ? "attempt" : "restart",
		         (long long)(left > 0 ? left : 0), e->last_error);
		fail_later(c, DRV_EUNAVAILABLE, msg);
		return;
	}
	if (e->state == SRV_DRIVER_READY) {
		dispatch(c, req);
		return;
	}
	/* Idle or starting: the request waits, packed, for the start to finish. */
	c->req_desc = req->descriptor;
	c->req_len = protobuf_c_message_get_packed_size(req);
	c->req_buf = malloc(c->req_len ? c->req_len : 1);
	if (!c->req_buf) {
		fail_later(c, DRV_ENOMEM, "out of memory");
		return;
	}
	protobuf_c_message_pack(req, c->req_buf);
	c->deadline_ms = srv_now_ms() + c->timeout_ms;
	list_add(&e->pending, c);
	if (e->state == SRV_DRIVER_IDLE)
		start_driver(e);
}

/*
 * A call without a record still gets its one callback later on the loop: the
 * array lives in the supervisor, so this needs no allocation. Only when it is
 * full too (OOM_CALLS_MAX calls failed before the loop came round) is the
 * callback lost, and that is said loudly.
 */
static void oom_later(struct srv_supervisor *sup, srv_call_cb cb, srv_features_cb feat_cb, void *ud)
{
	if (sup->n_oom_calls == OOM_CALLS_MAX) {
		srv_error("supervisor", "out of memory: a driver call could not be answered");
		return;
	}
	sup->oom_calls[sup->n_oom_calls++] = (struct oom_call){.cb = cb, .feat_cb = feat_cb, .ud = ud};
	pthread_mutex_lock(&sup->mu);
	if (!sup->handles_closed) /* after shutdown nobody is waiting, as in post() */
		uv_async_send(&sup->async);
	pthread_mutex_unlock(&sup->mu);
}

void srv_supervisor_call(struct srv_supervisor *sup, const char *type, const char *method,
                         const ProtobufCMessage *req, int timeout_ms, srv_call_cb cb, void *ud)
{
	struct sup_call *c = calloc(1, sizeof(*c));
	if (!c) {
		oom_later(sup, cb, NULL, ud);
		return;
	}
	c->sup = sup;
	c->cb = cb;
	c->ud = ud;
	snprintf(c->method, sizeof(c->method), "%s", method);
	c->timeout_ms = timeout_ms > 0 ? timeout_ms : sup->cfg->call_timeout_ms;
	if (!sup->hold) {
		route(c, type, req);
		return;
	}
	/* Held until the state written before it is committed (srv_supervisor_hold). */
	c->held_type = strdup(type);
	c->req_desc = req->descriptor;
	c->req_len = protobuf_c_message_get_packed_size(req);
	c->req_buf = malloc(c->req_len ? c->req_len : 1);
	if (!c->held_type || !c->req_buf) {
		free(c->held_type);
		free(c->req_buf);
		c->held_type = NULL;
		c->req_buf = NULL;
		fail_later(c, DRV_ENOMEM, "out of memory");
		return;
	}
	protobuf_c_message_pack(req, c->req_buf);
	if (sup->held_tail)
		sup->held_tail->next = c;
	else
		sup->held_head = c;
	sup->held_tail = c;
}

void srv_supervisor_fail_held(struct srv_supervisor *sup, int code, const char *message)
{
	struct sup_call *c = sup->held_head;
	sup->held_head = sup->held_tail = NULL;
	while (c) {
		struct sup_call *next = c->next;
		c->next = NULL;
		fail_later(c, code, message);
		c = next;
	}
}

void srv_supervisor_hold(struct srv_supervisor *sup, bool hold)
{
	sup->hold = hold;
	if (hold)
		return;
	struct sup_call *c = sup->held_head;
	sup->held_head = sup->held_tail = NULL;
	while (c) {
		struct sup_call *next = c->next;
		char *type = c->held_type;
		unsigned char *buf = c->req_buf;
		c->next = NULL;
		c->held_type = NULL;
		c->req_buf = NULL;
		ProtobufCMessage *req = protobuf_c_message_unpack(c->req_desc, NULL, c->req_len, buf);
		if (req) {
			route(c, type, req);
			protobuf_c_message_free_unpacked(req, NULL);
		} else {
			fail_later(c, DRV_EINTERNAL, "cannot re-read a held request");
		}
		free(buf);
		free(type);
		c = next;
	}
}

/* ---- features, cached per (driver, config) ---- */

struct feat_req {
	struct srv_supervisor *sup;
	struct drv_entry *e;
	unsigned gen;
	char *key;
	srv_features_cb cb;
	void *ud;
	bool hit;
	drv_features features;
};

static void feat_done(void *ud, int code, const char *message, ProtobufCMessage *resp)
{
	struct feat_req *f = ud;
	drv_features bits = f->features;
	if (!f->hit && code == 0 && resp) {
		drv_get_features_response *r = (drv_get_features_response *)resp;
		bits = 0;
		for (size_t i = 0; i < r->n_features; i++)
			if (r->features[i] > 0 && r->features[i] < 64)
				bits |= DRV_FEATURE_BIT(r->features[i]);
		/* Only an answer from the current process is cached; a restart drops the cache. */
		if (f->e->gen == f->gen && f->e->state == SRV_DRIVER_READY) {
			/* Out of memory: the answer is delivered, only not cached. */
			struct feat_cache *fc = calloc(1, sizeof(*fc));
			if (fc) {
				fc->key = f->key;
				f->key = NULL;
				fc->features = bits;
				fc->next = f->e->feat;
				f->e->feat = fc;
			}
		}
	}
	if (resp)
		drv_response_free(resp);
	f->cb(f->ud, code, message, code == 0 ? bits : 0);
	free(f->key);
	free(f);
}

void srv_supervisor_features(struct srv_supervisor *sup, const char *type, const drv_backend_config *config,
                             srv_features_cb cb, void *ud)
{
	struct feat_req *f = calloc(1, sizeof(*f));
	char *key = strdup(config && config->config_json ? config->config_json : "");
	if (!f || !key) {
		free(f);
		free(key);
		oom_later(sup, NULL, cb, ud);
		return;
	}
	struct drv_entry *e = find(sup, type);
	f->sup = sup;
	f->e = e;
	f->cb = cb;
	f->ud = ud;
	f->key = key;
	if (e && e->state == SRV_DRIVER_READY) {
		for (struct feat_cache *fc = e->feat; fc; fc = fc->next) {
			if (strcmp(fc->key, f->key) == 0) {
				/* A hit still goes through the loop so the callback never runs inside this
				 * call. */
				f->hit = true;
				f->features = fc->features;
				struct sup_call *c = calloc(1, sizeof(*c));
				if (!c) {
					free(f->key);
					free(f);
					oom_later(sup, NULL, cb, ud);
					return;
				}
				c->sup = sup;
				c->cb = feat_done;
				c->ud = f;
				fail_later(c, 0, "");
				return;
			}
		}
	}
	f->gen = e ? e->gen : 0;
	drv_get_features_request req = DROVER__COMPUTE__V1__GET_FEATURES_REQUEST__INIT;
	req.config = (drv_backend_config *)config;
	srv_supervisor_call(sup, type, "GetFeatures", &req.base, 0, feat_done, f);
	/* A start triggered by this call bumps gen; remember the one the answer will come from. */
	if (e)
		f->gen = e->gen;
}

/* ---- listing ---- */

int srv_supervisor_list(struct srv_supervisor *sup, struct srv_driver_info **list, size_t *n)
{
	scan_dirs(sup, false);
	struct srv_driver_info *l = calloc(sup->n_entries + 1, sizeof(*l));
	if (!l)
		return -1;
	for (size_t i = 0; i < sup->n_entries; i++) {
		struct drv_entry *e = sup->entries[i];
		struct srv_driver_info *d = &l[i];
		d->type = e->type;
		d->name = e->name;
		d->remote = e->remote;
		d->pid = e->state == SRV_DRIVER_READY ? e->pid : 0;
		d->address = e->address;
		d->command = (const char *const *)e->argv;
		d->state = e->state;
		d->restarts = e->restarts;
		d->backoff_ms = e->state == SRV_DRIVER_BACKOFF ? e->backoff_ms : 0;
		d->next_restart_ms = e->state == SRV_DRIVER_BACKOFF ? e->next_restart_ms : 0;
		d->last_error = e->last_error;
		d->last_error_ms = e->last_error_ms;
		d->reported_type = e->reported_type ? e->reported_type : "";
		d->version = e->version ? e->version : "";
		d->config_schema_json = e->info_text[0] ? e->info_text[0] : "";
		d->secrets_schema_json = e->info_text[1] ? e->info_text[1] : "";
		d->description = e->info_text[2] ? e->info_text[2] : "";
		d->protocol_version = e->protocol_version;
		d->features = e->features;
		d->started_ms = e->started_ms;
	}
	/* Sorted by type for a stable listing. */
	for (size_t i = 1; i < sup->n_entries; i++)
		for (size_t j = i; j > 0 && strcmp(l[j - 1].type, l[j].type) > 0; j--) {
			struct srv_driver_info t = l[j];
			l[j] = l[j - 1];
			l[j - 1] = t;
		}
	*list = l;
	*n = sup->n_entries;
	return 0;
}

int srv_supervisor_state(struct srv_supervisor *sup, const char *type)
{
	struct drv_entry *e = find(sup, type);
	return e ? (int)e->state : -1;
}

/* ---- shutdown ---- */

struct stop_job {
	pthread_t th;
	struct drv_host *host;
	int grace_ms;
	int rc;
};

static void *stop_thread(void *arg)
{
	struct stop_job *j = arg;
	j->rc = drv_host_stop(j->host, j->grace_ms, NULL);
	return NULL;
}

void srv_supervisor_stop(struct srv_supervisor *sup)
{
	if (sup->stopping)
		return;
	sup->stopping = true;
	sup->hold = false;
	while (sup->held_head) {
		struct sup_call *c = sup->held_head;
		sup->held_head = c->next;
		deliver(c, DRV_EUNAVAILABLE, "the server is shutting down", NULL);
		call_free(c);
	}
	sup->held_tail = NULL;
	uv_timer_stop(&sup->health_timer);
	/* Out of memory for the jobs: the drivers stop one after another instead. */
	struct stop_job *jobs = calloc(sup->n_entries + 1, sizeof(*jobs));
	struct stop_job one;
	size_t nj = 0;
	for (size_t i = 0; i < sup->n_entries; i++) {
		struct drv_entry *e = sup->entries[i];
		uv_timer_stop(&e->restart_timer);
		e->state = SRV_DRIVER_STOPPED;
		fail_list(&e->pending, DRV_EUNAVAILABLE, "the server is shutting down");
		fail_list(&e->inflight, DRV_EUNAVAILABLE, "the server is shutting down");
		if (e->host) {
			struct stop_job *j = jobs ? &jobs[nj] : &one;
			j->host = e->host;
			j->grace_ms = sup->cfg->shutdown_grace_ms;
			/* Drivers stop in parallel: one slow driver must not hold up the others' grace. */
			if (!jobs || pthread_create(&j->th, NULL, stop_thread, j) != 0)
				stop_thread(j);
			else
				nj++;
		}
	}
	for (size_t i = 0; i < nj; i++) {
		pthread_join(jobs[i].th, NULL);
		if (jobs[i].rc == DRV_EDEADLINE)
			srv_warn("supervisor", "a driver ignored SIGTERM for %d ms and was killed",
			         sup->cfg->shutdown_grace_ms);
	}
	free(jobs);
	for (size_t i = 0; i < sup->n_entries; i++) {
		struct drv_entry *e = sup->entries[i];
		drv_host_free(e->host);
		e->host = NULL;
	}
	/* The handles close next; events from here on are dropped by post(). */
	pthread_mutex_lock(&sup->mu);
	sup->handles_closed = true;
	pthread_mutex_unlock(&sup->mu);
}

void srv_supervisor_close_handles(struct srv_supervisor *sup)
{
	uv_close((uv_handle_t *)&sup->async, NULL);
	uv_close((uv_handle_t *)&sup->health_timer, NULL);
	for (size_t i = 0; i < sup->n_entries; i++)
		uv_close((uv_handle_t *)&sup->entries[i]->restart_timer, NULL);
}

void srv_supervisor_free(struct srv_supervisor *sup)
{
	if (!sup)
		return;
	/* Completions that arrived after the loop stopped: the calls were already answered. */
	struct sup_ev *ev = sup->ev_head;
	while (ev) {
		struct sup_ev *next = ev->next;
		free(ev->message);
		ev->message = NULL;
		if (ev->kind == EV_DONE) {
			if (ev->resp)
				drv_response_free(ev->resp);
			call_free(ev->call); /* and ev with it */
		}
		ev = next;
	}
	for (size_t i = 0; i < sup->n_entries; i++) {
		struct drv_entry *e = sup->entries[i];
		drv_host_free(e->host);
		clear_features(e);
		free_argv(e->argv);
		free(e->type);
		free(e->name);
		free(e->reported_type);
		free(e->version);
		for (int k = 0; k < 3; k++)
			free(e->info_text[k]);
		free(e);
	}
	free(sup->entries);
	while (sup->ctxs) {
		struct spawn_ctx *c = sup->ctxs;
		sup->ctxs = c->next;
		free(c);
	}
	pthread_mutex_destroy(&sup->mu);
	free(sup);
}
