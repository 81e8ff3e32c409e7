/* Reconciliation for srv_engine: addresses, termination retries, orphans. */
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

/* At most this many driver calls in flight for reconciliation, and per pass. */
#define RECONCILE_MAX_INFLIGHT 64
#define TERMINATE_BACKOFF_BASE_MS 500
#define TERMINATE_BACKOFF_MAX_MS 60000

/* ---- reconciliation ---- */

struct rec_op {
	struct srv_engine *eng;
	struct srv_instance *in;
};

static void rec_op_free(struct rec_op *op)
{
	op->eng->busy--;
	op->eng->reconcile_inflight--;
	srv_instance_free(op->in);
	free(op);
}

void srv__engine_kick(struct srv_engine *eng)
{
	if (!eng->stopped)
		uv_timer_start(&eng->kick, srv__reconcile_timer_cb, 0, 0);
}

/* How a failed GetInstance starts in last_error; a later good one clears only such text. */
#define GET_ERROR_PREFIX "GetInstance: "

/*
 * Whether a GetInstance answer is unusable: 1 with the fault in why. It must
 * pass srv__check_provisioning and name the machine it was asked about.
 */
static int get_answer_fault(const struct srv_instance *cur, const drv_provisioning_data *pd, char *why,
                            size_t len)
{
	char fault[500];
	if (srv__check_provisioning(pd, fault, sizeof(fault)) < 0) {
		snprintf(why, len, "the answer failed droverd's check (%s); the last good data is kept",
		         fault);
		return 1;
	}
	drv_provisioning_data *was = cur->provisioning ? drover__compute__v1__provisioning_data__unpack(
	                                                     NULL, cur->provisioning_len, cur->provisioning)
	                                               : NULL;
	int bad = was && strcmp(was->instance_id, pd->instance_id) != 0;
	if (bad)
		snprintf(why, len,
		         "the answer failed droverd's check (instance_id names another machine than the one "
		         "asked about); the last good data is kept");
	if (was)
		protobuf_c_message_free_unpacked(&was->base, NULL);
	return bad;
}

/* Updates the row as the store has it now; when that cannot be done, its lease brings it back. */
static void get_instance_done(void *ud, int code, const char *message, ProtobufCMessage *resp)
{
	struct rec_op *op = ud;
	struct srv_engine *eng = op->eng;
	struct srv_instance *cur = NULL;
	if (eng->stopped || srv_store_instance_get(eng->st, op->in->id, &cur) != 0)
		goto done;
	/*
	 * The row may have moved on meanwhile (a terminate request): only a row
	 * still provisioning or running is updated.
	 */
	bool running = strcmp(cur->status, SRV_ST_RUNNING) == 0;
	if (!running && strcmp(cur->status, SRV_ST_PROVISIONING) != 0)
		goto done;
	drv_provisioning_data *pd = code == 0 && resp ? ((drv_get_instance_response *)resp)->data : NULL;
	/*
	 * An answer droverd cannot use is not stored: the row keeps its last good
	 * data, and the fault shows as a failed check would.
	 */
	char why[600];
	if (code == 0 && get_answer_fault(cur, pd, why, sizeof(why))) {
		code = DRV_EINTERNAL;
		message = why;
		pd = NULL;
	}
	bool gone = pd && (pd->state == DROVER__COMPUTE__V1__INSTANCE_STATE__INSTANCE_STATE_TERMINATED ||
	                   pd->state == DROVER__COMPUTE__V1__INSTANCE_STATE__INSTANCE_STATE_TERMINATING);
	bool has_addr = pd && ((pd->hostname && pd->hostname[0]) || (pd->internal_ip && pd->internal_ip[0]));
	/* Out of memory here: the row stays as it was, and is looked at again when its lease runs out. */
	if ((pd && srv__set_blob(&cur->provisioning, &cur->provisioning_len, &pd->base) < 0) ||
	    (gone && srv__set_str(&cur->status, SRV_ST_TERMINATING) < 0) ||
	    (!gone && !running && has_addr && srv__set_str(&cur->status, SRV_ST_RUNNING) < 0)) {
		srv_warn("engine", "instance %s: out of memory recording GetInstance; trying again", cur->id);
		goto done;
	}
	if (gone) {
		/*
		 * Gone, or going, without drover asking (the provider's console, a spot
		 * reclaim). It takes the usual termination path: TerminateInstance of a
		 * machine that is gone is OK, and that answer is what confirms it.
		 */
		cur->next_check_at = srv_now_ms();
		cur->termination_failures = 0;
		srv_store_begin(eng->st);
		srv__put_or_log(eng, cur);
		srv_engine_event(eng, SRV_EVENT_WARNING, "instance.gone", cur->project, cur->id, cur->backend,
		                 cur->backend_type,
		                 "the driver reports it %s while it was %s; drover did not ask for that",
		                 pd->state == DROVER__COMPUTE__V1__INSTANCE_STATE__INSTANCE_STATE_TERMINATED
		                     ? "terminated"
		                     : "terminating",
		                 running ? SRV_ST_RUNNING : SRV_ST_PROVISIONING);
		srv_store_commit(eng->st);
		srv__engine_kick(eng);
		goto done;
	}
	if (code == 0 && running) {
		/* Still there, its data refreshed (an address may change); an old check's error goes. */
		if (cur->last_error &&
		    strncmp(cur->last_error, GET_ERROR_PREFIX, strlen(GET_ERROR_PREFIX)) == 0)
			srv__set_str(&cur->last_error, NULL);
		cur->next_check_at = srv__running_check_at(eng);
	} else if (code == 0 && has_addr) {
		cur->next_check_at = srv__running_check_at(eng);
		srv__set_str(&cur->last_error, NULL);
		srv_engine_event(eng, SRV_EVENT_INFO, "instance.running", cur->project, cur->id, cur->backend,
		                 cur->backend_type, "has an address: %s",
		                 pd->hostname && pd->hostname[0] ? pd->hostname : pd->internal_ip);
	} else if (code == 0) {
		cur->next_check_at = srv_now_ms() + eng->cfg->reconcile_interval_ms;
	} else {
		char msg[1200];
		snprintf(msg, sizeof(msg), GET_ERROR_PREFIX "%s: %s", drv_error_name(code), message);
		/* Out of memory: last_error keeps its previous text; the pace below still applies. */
		srv__set_str(&cur->last_error, msg);
		/*
		 * Polling goes on, a provisioning one at a slower pace; an error never
		 * decides that the machine is gone.
		 */
		cur->next_check_at = running ? srv__running_check_at(eng)
		                             : srv_now_ms() + 5 * (int64_t)eng->cfg->reconcile_interval_ms;
	}
	srv__put_or_log(eng, cur);
done:
	srv_instance_free(cur);
	if (resp)
		drv_response_free(resp);
	rec_op_free(op);
}

static void terminate_done(void *ud, int code, const char *message, ProtobufCMessage *resp)
{
	struct rec_op *op = ud;
	struct srv_engine *eng = op->eng;
	struct srv_instance *in = op->in;
	if (resp)
		drv_response_free(resp);
	if (eng->stopped) {
		/* Still "terminating" in the store: the next start retries. */
		rec_op_free(op);
		return;
	}
	if (code == 0 && srv__set_str(&in->status, SRV_ST_TERMINATED) < 0) {
		/* Still "terminating" in the store: retried when its lease runs out. */
		srv_warn("engine", "instance %s: out of memory recording its termination; trying again",
		         in->id);
	} else if (code == 0) {
		in->terminated_at = srv_now_ms();
		in->next_check_at = 0;
		srv__set_str(&in->last_error, NULL);
		srv_store_begin(eng->st);
		srv__put_or_log(eng, in);
		srv_engine_event(eng, SRV_EVENT_INFO, "instance.terminated", in->project, in->id, in->backend,
		                 in->backend_type, "the driver confirmed termination");
		srv_store_commit(eng->st);
	} else {
		char msg[1200];
		in->termination_failures++;
		int64_t delay = TERMINATE_BACKOFF_BASE_MS;
		for (int64_t i = 1; i < in->termination_failures && delay < TERMINATE_BACKOFF_MAX_MS; i++)
			delay *= 2;
		if (delay > TERMINATE_BACKOFF_MAX_MS)
			delay = TERMINATE_BACKOFF_MAX_MS;
		snprintf(msg, sizeof(msg), "TerminateInstance failed %lld time(s): %s: %s",
		         (long long)in->termination_failures, drv_error_name(code), message);
		/* Out of memory: last_error keeps its previous text; the count and backoff are kept. */
		srv__set_str(&in->last_error, msg);
		in->next_check_at = srv_now_ms() + delay;
		srv__put_or_log(eng, in);
		srv_engine_event(eng, SRV_EVENT_ERROR, "instance.termination_failed", in->project, in->id,
		                 in->backend, in->backend_type, "%s; retrying in %lld ms", msg,
		                 (long long)delay);
	}
	rec_op_free(op);
}

/* False when out of memory left the row as it was, for a later pass. */
static bool reconcile_one(struct srv_engine *eng, struct srv_instance *in)
{
	int64_t now = srv_now_ms();
	bool oom = false;
	if (strcmp(in->status, SRV_ST_CREATING) == 0) {
		/* A lease: the row is not picked again while this call is out. */
		in->next_check_at = now + eng->cfg->call_timeout_ms + 5000;
		srv__put_or_log(eng, in);
		srv__create_resume(eng, in);
		return true;
	}
	bool prov = strcmp(in->status, SRV_ST_PROVISIONING) == 0;
	bool term = strcmp(in->status, SRV_ST_TERMINATING) == 0;
	/* A running machine is checked only while running_check_interval_ms is set. */
	bool run = strcmp(in->status, SRV_ST_RUNNING) == 0 && eng->cfg->running_check_interval_ms > 0;
	if (!prov && !term && !run) {
		in->next_check_at = 0;
		srv__put_or_log(eng, in);
		srv_instance_free(in);
		return true;
	}
	drv_provisioning_data *pd =
	    in->provisioning
	        ? drover__compute__v1__provisioning_data__unpack(NULL, in->provisioning_len, in->provisioning)
	        : NULL;
	if (!pd) {
		/* Out of memory for a field: the row is left as it is and is due again next pass. */
		if (term && srv__set_str(&in->status, SRV_ST_TERMINATED) < 0) {
			srv_warn("engine", "instance %s: out of memory; trying again", in->id);
			oom = true;
		} else if (term) {
			/* No driver call ever made a machine for it (no provisioning data): nothing to
			 * terminate. */
			in->terminated_at = now;
			in->next_check_at = 0;
			srv__put_or_log(eng, in);
			srv_engine_event(eng, SRV_EVENT_INFO, "instance.terminated", in->project, in->id,
			                 in->backend, in->backend_type, "no machine was ever made for it");
		} else if (srv__set_str(&in->last_error, "provisioning data missing or damaged") < 0) {
			srv_warn("engine", "instance %s: out of memory; trying again", in->id);
			oom = true;
		} else {
			in->next_check_at = 0;
			srv__put_or_log(eng, in);
		}
		srv_instance_free(in);
		return !oom;
	}
	struct srv_backend *be = NULL;
	int rc = srv_store_instance_backend(eng->st, in, &be);
	if (rc != 0) {
		char msg[600];
		snprintf(msg, sizeof(msg), "backend %s is gone (%s); cannot reach the driver", in->backend,
		         rc < 0 ? srv_store_errmsg(eng->st) : "removed");
		if (srv__set_str(&in->last_error, msg) < 0) {
			srv_warn("engine", "instance %s: out of memory; trying again", in->id);
			oom = true;
		} else {
			in->next_check_at = now + 60000;
			srv__put_or_log(eng, in);
		}
		protobuf_c_message_free_unpacked(&pd->base, NULL);
		srv_instance_free(in);
		return !oom;
	}
	struct rec_op *op = calloc(1, sizeof(*op));
	struct srv_bcfg bc;
	if (!op || srv_bcfg_init(&bc, be) < 0) {
		/* No lease written: the row is due again next pass. */
		srv_warn("engine", "instance %s: out of memory; trying again", in->id);
		free(op);
		srv_backend_free(be);
		protobuf_c_message_free_unpacked(&pd->base, NULL);
		srv_instance_free(in);
		return false;
	}
	in->next_check_at = now + eng->cfg->call_timeout_ms + 5000;
	srv__put_or_log(eng, in);
	op->eng = eng;
	op->in = in;
	eng->busy++;
	eng->reconcile_inflight++;
	if (!term) {
		drv_get_instance_request req = DROVER__COMPUTE__V1__GET_INSTANCE_REQUEST__INIT;
		req.config = &bc.cfg;
		req.instance_id = pd->instance_id;
		req.region = pd->region;
		req.backend_data = pd->backend_data;
		srv_supervisor_call(eng->sup, be->type, "GetInstance", &req.base, eng->cfg->call_timeout_ms,
		                    get_instance_done, op);
	} else {
		drv_terminate_instance_request req = DROVER__COMPUTE__V1__TERMINATE_INSTANCE_REQUEST__INIT;
		req.config = &bc.cfg;
		req.instance_id = pd->instance_id;
		req.region = pd->region;
		req.backend_data = pd->backend_data;
		srv_supervisor_call(eng->sup, be->type, "TerminateInstance", &req.base,
		                    eng->cfg->call_timeout_ms, terminate_done, op);
	}
	srv_bcfg_clear(&bc);
	srv_backend_free(be);
	protobuf_c_message_free_unpacked(&pd->base, NULL);
	return true;
}

/* ---- orphans: machines with our tag that the store does not know ---- */

struct orphan_op {
	struct srv_engine *eng;
	char *project, *backend, *type;
};

static void list_done(void *ud, int code, const char *message, ProtobufCMessage *resp)
{
	struct orphan_op *op = ud;
	struct srv_engine *eng = op->eng;
	char why[500], first_why[500] = "";
	size_t unusable = 0;
	if (code == 0 && resp && !eng->stopped) {
		drv_list_instances_response *r = (drv_list_instances_response *)resp;
		for (size_t i = 0; i < r->n_instances; i++) {
			drv_listed_instance *li = r->instances[i];
			const char *iid = NULL;
			for (size_t t = 0; t < li->n_tags; t++)
				if (strcmp(li->tags[t]->key, "drover-instance") == 0)
					iid = li->tags[t]->value;
			struct srv_instance *known = NULL;
			if (!iid || srv_store_instance_get(eng->st, iid, &known) == 0) {
				srv_instance_free(known);
				continue;
			}
			/* Data droverd could not use (to terminate it, to show it) never becomes a row. */
			if (srv__check_provisioning(li->data, why, sizeof(why)) < 0) {
				if (unusable++ == 0)
					snprintf(first_why, sizeof(first_why), "%s", why);
				continue;
			}
			/* Adopted and shown, never silently dropped: it may be billed. */
			struct srv_instance in = {
			    .id = (char *)iid,
			    .project = op->project,
			    .backend = op->backend,
			    .backend_type = op->type,
			    .name = li->name && li->name[0] ? li->name : (char *)iid,
			    .status = SRV_ST_RUNNING,
			    .next_check_at = srv__running_check_at(eng),
			    .idempotency_key = li->idempotency_key ? li->idempotency_key : "",
			    .last_error = "orphan: found by ListInstances with this server's tag "
			                  "but missing from the store; adopted"};
			size_t len = 0;
			if (li->data && !(in.provisioning = srv__pack(&li->data->base, &len))) {
				/* Not adopted without its data: the next scan finds it again. */
				srv_warn("engine", "orphan %s: out of memory adopting it; trying again", iid);
				continue;
			}
			in.provisioning_len = len;
			srv__put_or_log(eng, &in);
			free(in.provisioning);
			srv_engine_event(
			    eng, SRV_EVENT_WARNING, "instance.orphan_adopted", op->project, iid, op->backend,
			    op->type, "machine %s on backend %s was not in the store; adopted",
			    li->data && li->data->instance_id ? li->data->instance_id : "?", op->backend);
		}
	}
	if (unusable)
		srv_warn(
		    "engine",
		    "backend %s/%s: %zu machine(s) listed with droverd's tags were not adopted: their data "
		    "failed droverd's check (the first: %s)",
		    op->project, op->backend, unusable, first_why);
	if (resp)
		drv_response_free(resp);
	eng->busy--;
	free(op->project);
	free(op->backend);
	free(op->type);
	free(op);
}

void srv_engine_find_orphans(struct srv_engine *eng)
{
	struct srv_backend **bes;
	size_t n;
	eng->last_orphan_scan = srv_now_ms();
	if (srv_store_backend_list(eng->st, NULL, &bes, &n) < 0)
		return;
	for (size_t i = 0; i < n; i++) {
		/* Only drivers that are up: an orphan scan never starts a driver by itself. */
		if (srv_supervisor_state(eng->sup, bes[i]->type) != SRV_DRIVER_READY)
			continue;
		struct orphan_op *op = calloc(1, sizeof(*op));
		if (op) {
			op->eng = eng;
			op->project = strdup(bes[i]->project);
			op->backend = strdup(bes[i]->name);
			op->type = strdup(bes[i]->type);
		}
		struct srv_bcfg bc;
		if (!op || !op->project || !op->backend || !op->type || srv_bcfg_init(&bc, bes[i]) < 0) {
			/* This backend is skipped this round; the next scan covers it. */
			srv_warn("engine", "backend %s/%s: out of memory for the orphan scan",
			         bes[i]->project, bes[i]->name);
			if (op) {
				free(op->project);
				free(op->backend);
				free(op->type);
			}
			free(op);
			continue;
		}
		drv_list_instances_request req = DROVER__COMPUTE__V1__LIST_INSTANCES_REQUEST__INIT;
		Drover__Compute__V1__ListInstancesRequest__TagsEntry tag =
		    DROVER__COMPUTE__V1__LIST_INSTANCES_REQUEST__TAGS_ENTRY__INIT;
		Drover__Compute__V1__ListInstancesRequest__TagsEntry *tagp = &tag;
		tag.key = "drover-server";
		tag.value = eng->server_id;
		req.config = &bc.cfg;
		req.n_tags = 1;
		req.tags = &tagp;
		eng->busy++;
		srv_supervisor_call(eng->sup, bes[i]->type, "ListInstances", &req.base,
		                    eng->cfg->call_timeout_ms, list_done, op);
		srv_bcfg_clear(&bc);
	}
	srv_backend_list_free(bes, n);
}

void srv_engine_reconcile_now(struct srv_engine *eng)
{
	if (eng->stopped)
		return;
	unsigned room = RECONCILE_MAX_INFLIGHT > eng->reconcile_inflight
	                    ? RECONCILE_MAX_INFLIGHT - eng->reconcile_inflight
	                    : 0;
	if (room == 0)
		return;
	struct srv_instance **due;
	size_t n;
	if (srv_store_instance_due(eng->st, srv_now_ms(), room, &due, &n) < 0) {
		srv_error("engine", "reconciliation: %s", srv_store_errmsg(eng->st));
		return;
	}
	/* The leases of one pass are written in one transaction. */
	srv_store_begin(eng->st);
	bool oom = false;
	for (size_t i = 0; i < n; i++)
		if (!reconcile_one(eng, due[i]))
			oom = true;
	srv_store_commit(eng->st);
	free(due);
	/*
	 * A full batch means more may be due: go again on the next loop turn.
	 * Not after running out of memory: the rows left behind wait for the timer.
	 */
	if (n == room && !oom)
		srv__engine_kick(eng);
	if (srv_now_ms() - eng->last_orphan_scan >= ORPHAN_SCAN_EVERY_MS)
		srv_engine_find_orphans(eng);
}

void srv__reconcile_timer_cb(uv_timer_t *t)
{
	srv_engine_reconcile_now(t->data);
}

int srv_engine_terminate(struct srv_engine *eng, const char *id, struct srv_instance **out)
{
	struct srv_instance *in = NULL;
	int rc = srv_store_instance_get(eng->st, id, &in);
	if (rc != 0)
		return rc;
	if (strcmp(in->status, SRV_ST_CREATING) == 0 && !in->provisioning) {
		/*
		 * A CreateInstance call is out (or will be resumed): there is no machine
		 * id to terminate yet. The request is written on the row, and the
		 * create's end acts on it (srv_provision.c): a machine it made is
		 * terminated, and no further offer is tried. A create in progress holds
		 * the newest copy of the row and writes it again, so that copy is marked
		 * and written.
		 */
		if (!in->terminate_requested) {
			struct srv_instance *held = srv__create_row(eng, in->id);
			struct srv_instance *w = held ? held : in;
			w->terminate_requested = true;
			in->terminate_requested = true;
			srv_store_begin(eng->st);
			if (srv_store_instance_put(eng->st, w) < 0) {
				srv_store_commit(eng->st);
				w->terminate_requested = false;
				srv_instance_free(in);
				return -1;
			}
			srv_engine_event(
			    eng, SRV_EVENT_INFO, "instance.terminate_requested", in->project, in->id,
			    in->backend, in->backend_type,
			    "termination requested while the create is out: it follows the create");
			srv_store_commit(eng->st);
		}
		*out = in;
		return 0;
	}
	if (strcmp(in->status, SRV_ST_PENDING) == 0) {
		/* No driver call was ever made for it. */
		if (srv__set_str(&in->status, SRV_ST_FAILED) < 0 ||
		    srv__set_str(&in->last_error, "terminated before any attempt") < 0) {
			srv_instance_free(in);
			return DRV_ENOMEM;
		}
		srv__put_or_log(eng, in);
	} else if (strcmp(in->status, SRV_ST_PROVISIONING) == 0 || strcmp(in->status, SRV_ST_RUNNING) == 0 ||
	           (strcmp(in->status, SRV_ST_CREATING) == 0 && in->provisioning)) {
		if (srv__set_str(&in->status, SRV_ST_TERMINATING) < 0) {
			srv_instance_free(in);
			return DRV_ENOMEM;
		}
		in->next_check_at = srv_now_ms();
		in->termination_failures = 0;
		srv_store_begin(eng->st);
		if (srv_store_instance_put(eng->st, in) < 0) {
			srv_store_commit(eng->st);
			srv_instance_free(in);
			return -1;
		}
		srv_engine_event(eng, SRV_EVENT_INFO, "instance.terminating", in->project, in->id,
		                 in->backend, in->backend_type, "termination requested");
		srv_store_commit(eng->st);
		srv__engine_kick(eng);
	}
	*out = in;
	return 0;
}
