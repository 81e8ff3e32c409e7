#include "srv_engine.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>
#include <openssl/rand.h>

#include "drover/driver.h"
#include "srv_config.h"
#include "srv_engine.h"
#include "srv_engine_internal.h"
#include "srv_log.h"
#include "srv_store.h"
#include "srv_supervisor.h"

bool srv__is_uncertain(int code)
{
	/* The driver may or may not have acted: only a retry with the same key can tell. */
	return code == DRV_EUNAVAILABLE || code == DRV_EDEADLINE || code == DRV_EUNKNOWN ||
	       code == DRV_EINTERNAL || code == DRV_ECANCELLED || code == DRV_EABORTED || code < -16;
}

void *srv__pack(const ProtobufCMessage *m, size_t *len)
{
	*len = protobuf_c_message_get_packed_size(m);
	unsigned char *buf = malloc(*len ? *len : 1);
	if (buf)
		protobuf_c_message_pack(m, buf);
	return buf;
}

int srv__set_str(char **dst, const char *src)
{
	char *s = src ? strdup(src) : NULL;
	if (src && !s)
		return DRV_ENOMEM;
	free(*dst);
	*dst = s;
	return 0;
}

int srv__set_blob(unsigned char **dst, size_t *dlen, const ProtobufCMessage *m)
{
	size_t len = 0;
	unsigned char *b = m ? srv__pack(m, &len) : NULL;
	if (m && !b)
		return DRV_ENOMEM;
	free(*dst);
	*dst = b;
	*dlen = len;
	return 0;
}

void srv_engine_event(struct srv_engine *eng, int level, const char *kind, const char *project,
                      const char *instance, const char *backend, const char *driver, const char *fmt, ...)
{
	char msg[1500];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	struct srv_event ev = {.level = level,
	                       .kind = (char *)kind,
	                       .project = (char *)project,
	                       .instance = (char *)instance,
	                       .backend = (char *)backend,
	                       .driver = (char *)driver,
	                       .message = msg};
	if (srv_store_event_add(eng->st, &ev) < 0)
		srv_error("engine", "cannot record event %s: %s", kind, srv_store_errmsg(eng->st));
	/* Driver events come from the supervisor, which logged them already. */
	bool logged_elsewhere = strncmp(kind, "driver.", 7) == 0;
	if (level >= SRV_EVENT_WARNING && !logged_elsewhere)
		srv_log(level == SRV_EVENT_ERROR ? SRV_LOG_ERROR : SRV_LOG_WARN, "engine", "%s%s%s: %s", kind,
		        instance ? " " : "", instance ? instance : "", msg);
	else
		srv_debug("engine", "%s%s%s: %s", kind, instance ? " " : "", instance ? instance : "", msg);
}

void srv__put_or_log(struct srv_engine *eng, struct srv_instance *in)
{
	if (srv_store_instance_put(eng->st, in) < 0)
		srv_error("engine", "instance %s: cannot write state %s: %s", in->id, in->status,
		          srv_store_errmsg(eng->st));
}

int64_t srv__running_check_at(const struct srv_engine *eng)
{
	int ms = eng->cfg->running_check_interval_ms;
	return ms > 0 ? srv_now_ms() + ms : 0;
}

/* ---- life cycle ---- */

/*
 * Group commit: every store write of one loop iteration joins one
 * transaction, committed just before the loop waits again. Driver calls made
 * meanwhile are held by the supervisor and sent right after the commit, so
 * each call still goes out only once the state written before it is durable.
 */
static void flush_cb(uv_prepare_t *p)
{
	struct srv_engine *eng = p->data;
	uv_prepare_stop(p);
	if (srv_store_batch_commit(eng->st) < 0) {
		/* The state these calls depend on is not on disk: they must not go out. */
		srv_error("engine", "committing a batch of state: %s", srv_store_errmsg(eng->st));
		srv_supervisor_fail_held(eng->sup, DRV_EINTERNAL,
		                         "the server could not record the state this call depends on");
	}
	srv_supervisor_hold(eng->sup, false);
}

static void on_batch(void *ud)
{
	struct srv_engine *eng = ud;
	srv_supervisor_hold(eng->sup, true);
	uv_prepare_start(&eng->flush, flush_cb);
}

int srv_engine_new(uv_loop_t *loop, struct srv_store *st, struct srv_supervisor *sup,
                   const struct srv_config *cfg, const char *server_id, struct srv_engine **out)
{
	struct srv_engine *eng = calloc(1, sizeof(*eng));
	if (!eng)
		return -1;
	eng->loop = loop;
	eng->st = st;
	eng->sup = sup;
	eng->cfg = cfg;
	eng->server_id = strdup(server_id);
	if (!eng->server_id) {
		free(eng);
		return -1;
	}
	uv_timer_init(loop, &eng->timer);
	eng->timer.data = eng;
	uv_timer_init(loop, &eng->kick);
	eng->kick.data = eng;
	uv_prepare_init(loop, &eng->flush);
	eng->flush.data = eng;
	srv_store_set_batch_hook(st, on_batch, eng);
	/*
	 * Drivers' GetOffers answers keep their bytes, so an offers reply forwards
	 * each offer as received instead of packing it again (srv_offers.c). The
	 * setting is per process, hence made once here rather than per query.
	 */
	drv_response_keep_bytes(&drover__compute__v1__get_offers_response__descriptor);
	eng->last_orphan_scan = srv_now_ms() - ORPHAN_SCAN_EVERY_MS + 5000;
	*out = eng;
	return 0;
}

/* A config-file backend whose config its driver is asked about at start. */
struct cfg_check {
	struct srv_engine *eng;
	char *project, *name, *type;
};

static void cfg_check_free(struct cfg_check *k)
{
	free(k->project);
	free(k->name);
	free(k->type);
	free(k);
}

static void cfg_check_done(void *ud, int code, const char *message, ProtobufCMessage *resp)
{
	struct cfg_check *k = ud;
	/* A driver that is down is reported by the supervisor; a stopping server has nothing to say. */
	if (code == 0 && resp && !k->eng->stopped) {
		const drv_validate_config_response *r = (const drv_validate_config_response *)resp;
		char diag[1024] = "";
		size_t len = 0, errors = 0;
		for (size_t i = 0; i < r->n_diagnostics; i++) {
			const drv_diagnostic *d = r->diagnostics[i];
			if (d->severity != DROVER__COMPUTE__V1__SEVERITY__SEVERITY_ERROR)
				continue;
			if (len < sizeof(diag))
				len += (size_t)snprintf(
				    diag + len, sizeof(diag) - len, "%s%s: %s", errors ? "; " : "",
				    d->field_path && *d->field_path ? d->field_path : "(config)",
				    d->summary ? d->summary : "");
			errors++;
		}
		if (errors)
			srv_engine_event(
			    k->eng, SRV_EVENT_WARNING, "backend.invalid", k->project, NULL, k->name, k->type,
			    "backend %s/%s from the config file: its %s driver finds its config invalid "
			    "(%s); its offers and instances will fail until the config file is fixed",
			    k->project, k->name, k->type, diag);
	}
	if (resp)
		drv_response_free(resp);
	cfg_check_free(k);
}

/*
 * A config file's backend is written to the store without its driver's
 * ValidateConfig (the driver may not be up yet, and a start does not wait
 * for drivers): ask now, so that a mistake shows at start, in the log and
 * the events, and not at the first offer.
 */
static void check_config_backends(struct srv_engine *eng)
{
	struct srv_backend **bes;
	size_t n;
	if (srv_store_backend_list(eng->st, NULL, &bes, &n) < 0)
		return;
	for (size_t i = 0; i < n; i++) {
		const struct srv_backend *be = bes[i];
		if (!be->source || strcmp(be->source, "config") != 0)
			continue;
		struct cfg_check *k = calloc(1, sizeof(*k));
		struct drv_backend_config_buf bc;
		if (!k || !(k->project = strdup(be->project)) || !(k->name = strdup(be->name)) ||
		    !(k->type = strdup(be->type)) || srv_bcfg_init(&bc, be) < 0) {
			if (k)
				cfg_check_free(k);
			srv_warn("engine", "backend %s/%s: out of memory checking its config", be->project,
			         be->name);
			continue;
		}
		k->eng = eng;
		drv_validate_config_request req = DROVER__COMPUTE__V1__VALIDATE_CONFIG_REQUEST__INIT;
		req.config = &bc.msg;
		srv_supervisor_call(eng->sup, be->type, "ValidateConfig", &req.base, 0, cfg_check_done, k);
		drv_backend_config_clear(&bc);
	}
	srv_backend_list_free(bes, n);
}

void srv_engine_start(struct srv_engine *eng)
{
	struct srv_instance **list;
	size_t n;
	/* Left "pending" by a crash: no driver call was made, so no machine exists. */
	if (srv_store_instance_by_status(eng->st, SRV_ST_PENDING, &list, &n) == 0) {
		for (size_t i = 0; i < n; i++) {
			/* Out of memory: the row stays "pending" and the next start fails it. */
			if (srv__set_str(&list[i]->status, SRV_ST_FAILED) < 0 ||
			    srv__set_str(&list[i]->last_error,
			                 "the server stopped before the first attempt") < 0) {
				srv_error("engine", "instance %s: out of memory failing it", list[i]->id);
				continue;
			}
			srv__put_or_log(eng, list[i]);
		}
		srv_instance_list_free(list, n);
	}
	/*
	 * Running machines that are not checked yet (written by a server that did
	 * not check them, or with running_check_interval_ms 0): their checks are
	 * spread over one interval rather than all sent at once.
	 */
	int every = eng->cfg->running_check_interval_ms;
	if (every > 0 && srv_store_instance_by_status(eng->st, SRV_ST_RUNNING, &list, &n) == 0) {
		int64_t now = srv_now_ms();
		srv_store_begin(eng->st);
		for (size_t i = 0; i < n; i++) {
			if (list[i]->next_check_at != 0)
				continue;
			list[i]->next_check_at = now + 1 + (int64_t)((double)every * (double)i / (double)n);
			srv__put_or_log(eng, list[i]);
		}
		srv_store_commit(eng->st);
		srv_instance_list_free(list, n);
	}
	/* Left "creating": resumed by reconciliation right away, with the same key. */
	if (srv_store_instance_by_status(eng->st, SRV_ST_CREATING, &list, &n) == 0) {
		srv_store_begin(eng->st);
		for (size_t i = 0; i < n; i++) {
			list[i]->next_check_at = srv_now_ms();
			srv__put_or_log(eng, list[i]);
		}
		srv_store_commit(eng->st);
		if (n)
			srv_info("engine",
			         "%zu instance(s) were being created when the server stopped; resuming", n);
		srv_instance_list_free(list, n);
	}
	check_config_backends(eng);
	uv_timer_start(&eng->timer, srv__reconcile_timer_cb, 0, (uint64_t)eng->cfg->reconcile_interval_ms);
}

void srv_engine_stop(struct srv_engine *eng)
{
	eng->stopped = true;
	/* What was written so far is committed, and no later write waits for a loop turn. */
	uv_prepare_stop(&eng->flush);
	srv_store_set_batch_hook(eng->st, NULL, NULL);
	if (srv_store_batch_commit(eng->st) < 0)
		srv_error("engine", "committing a batch of state: %s", srv_store_errmsg(eng->st));
	srv_supervisor_hold(eng->sup, false);
	uv_timer_stop(&eng->timer);
	uv_timer_stop(&eng->kick);
}

void srv_engine_close_handles(struct srv_engine *eng)
{
	uv_close((uv_handle_t *)&eng->timer, NULL);
	uv_close((uv_handle_t *)&eng->kick, NULL);
	uv_close((uv_handle_t *)&eng->flush, NULL);
}

void srv_engine_free(struct srv_engine *eng)
{
	if (!eng)
		return;
	srv__offers_cache_clear(eng);
	srv__offer_warns_free(eng);
	srv__foreign_clear(eng);
	free(eng->server_id);
	free(eng);
}

unsigned srv_engine_busy(const struct srv_engine *eng)
{
	return eng->busy;
}
