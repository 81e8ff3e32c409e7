/* Reconciliation for srv_engine: addresses, running checks, termination asked for and then observed. */
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
	char *prev; /* what an earlier call of the same look said, for last_error */
};

static void rec_op_free(struct rec_op *op)
{
	op->eng->busy--;
	op->eng->reconcile_inflight--;
	srv_instance_free(op->in);
	free(op->prev);
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

/* The n-th (1-based) wait of a termination: doubling from the base up to the cap. */
static int64_t backoff_ms(int64_t n)
{
	int64_t delay = TERMINATE_BACKOFF_BASE_MS;
	for (int64_t i = 1; i < n && delay < TERMINATE_BACKOFF_MAX_MS; i++)
		delay *= 2;
	return delay > TERMINATE_BACKOFF_MAX_MS ? TERMINATE_BACKOFF_MAX_MS : delay;
}

void srv__termination_reset(struct srv_instance *in)
{
	in->termination_failures = 0;
	in->termination_acked_at = 0;
	in->termination_checks = 0;
	in->termination_unconfirmed = false;
}

/*
 * Sends one driver call about op->in through its backend (the live one, or
 * the copy a removed backend left on the row): GetInstance or
 * TerminateInstance of the machine `pd` names, or ListInstances by the row's
 * tags (pd unused). 0 when sent (cb owns op); otherwise 1 when the backend is
 * gone, DRV_ENOMEM when out of memory, with msg saying why and op untouched.
 */
static int send_call(struct srv_engine *eng, struct rec_op *op, const char *method,
                     const drv_provisioning_data *pd, srv_call_cb cb, char *msg, size_t len)
{
	struct srv_backend *be = NULL;
	int rc = srv_store_instance_backend(eng->st, op->in, &be);
	if (rc != 0) {
		snprintf(msg, len, "backend %s is gone (%s); cannot reach the driver", op->in->backend,
		         rc < 0 ? srv_store_errmsg(eng->st) : "removed");
		return 1;
	}
	struct drv_backend_config_buf bc;
	if (srv_bcfg_init(&bc, be) < 0) {
		srv_backend_free(be);
		snprintf(msg, len, "out of memory");
		return DRV_ENOMEM;
	}
	int timeout = eng->cfg->call_timeout_ms;
	if (strcmp(method, "ListInstances") == 0) {
		drv_list_instances_request req = DROVER__COMPUTE__V1__LIST_INSTANCES_REQUEST__INIT;
		Drover__Compute__V1__ListInstancesRequest__TagsEntry t[2], *tp[2] = {&t[0], &t[1]};
		for (int i = 0; i < 2; i++)
			drover__compute__v1__list_instances_request__tags_entry__init(&t[i]);
		t[0].key = SRV_TAG_SERVER;
		t[0].value = eng->server_id;
		t[1].key = SRV_TAG_INSTANCE;
		t[1].value = op->in->id;
		req.config = &bc.msg;
		req.n_tags = 2;
		req.tags = tp;
		srv_supervisor_call(eng->sup, be->type, method, &req.base, timeout, cb, op);
	} else if (strcmp(method, "GetInstance") == 0) {
		drv_get_instance_request req = DROVER__COMPUTE__V1__GET_INSTANCE_REQUEST__INIT;
		req.config = &bc.msg;
		req.instance_id = pd->instance_id;
		req.region = pd->region;
		req.backend_data = pd->backend_data;
		srv_supervisor_call(eng->sup, be->type, method, &req.base, timeout, cb, op);
	} else {
		drv_terminate_instance_request req = DROVER__COMPUTE__V1__TERMINATE_INSTANCE_REQUEST__INIT;
		req.config = &bc.msg;
		req.instance_id = pd->instance_id;
		req.region = pd->region;
		req.backend_data = pd->backend_data;
		srv_supervisor_call(eng->sup, be->type, method, &req.base, timeout, cb, op);
	}
	drv_backend_config_clear(&bc);
	srv_backend_free(be);
	return 0;
}

/* How a failed GetInstance starts in last_error; a later good one clears only such text. */
#define GET_ERROR_PREFIX "GetInstance: "

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
		 * machine that is gone is OK, and an observation of its end (GetInstance
		 * again) ends the row.
		 */
		cur->next_check_at = srv_now_ms();
		srv__termination_reset(cur);
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
		 * decides that a running machine is gone: a backend's config may point
		 * at another account, where NOT_FOUND says nothing of ours.
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

/* ---- termination: asked for, then observed ---- */

/*
 * Once the window since TerminateInstance first answered OK has passed with
 * no observation of the machine's end: one warning, and the row is marked.
 */
static void check_window(struct srv_engine *eng, struct srv_instance *in)
{
	int64_t now = srv_now_ms();
	if (in->termination_unconfirmed || in->termination_acked_at == 0 ||
	    now - in->termination_acked_at < eng->cfg->termination_confirm_window_ms)
		return;
	in->termination_unconfirmed = true;
	srv_engine_event(
	    eng, SRV_EVENT_WARNING, "termination.unconfirmed", in->project, in->id, in->backend,
	    in->backend_type,
	    "asked to terminate %lld s ago, the machine's end is still not observed (%s); it may "
	    "still run and be billed. drover keeps checking and asking",
	    (long long)((now - in->termination_acked_at) / 1000),
	    in->last_error ? in->last_error : "no answer yet");
}

/* The end was observed: the row is terminated. Out of memory: its lease brings it back. */
static void observed_end(struct srv_engine *eng, struct srv_instance *in, const char *how)
{
	if (srv__set_str(&in->status, SRV_ST_TERMINATED) < 0) {
		srv_warn("engine", "instance %s: out of memory recording its termination; trying again",
		         in->id);
		return;
	}
	bool late = in->termination_unconfirmed;
	in->terminated_at = srv_now_ms();
	in->next_check_at = 0;
	in->termination_unconfirmed = false;
	srv__set_str(&in->last_error, NULL);
	srv_store_begin(eng->st);
	srv__put_or_log(eng, in);
	srv_engine_event(eng, SRV_EVENT_INFO, "instance.terminated", in->project, in->id, in->backend,
	                 in->backend_type, "termination confirmed: %s%s", how,
	                 late ? " (after the termination.unconfirmed warning)" : "");
	srv_store_commit(eng->st);
}

/*
 * Not observed gone yet (still listed, still running, or no answer): asked
 * again, TerminateInstance then a look, after a growing wait.
 */
static void not_observed(struct srv_engine *eng, struct srv_instance *in, const char *what)
{
	char msg[1200];
	in->termination_checks++;
	int64_t delay = backoff_ms(in->termination_checks);
	snprintf(msg, sizeof(msg), "termination not observed yet (check %lld): %s; asking again in %lld ms",
	         (long long)in->termination_checks, what, (long long)delay);
	/* Out of memory: last_error keeps its previous text; the count and backoff are kept. */
	srv__set_str(&in->last_error, msg);
	in->next_check_at = srv_now_ms() + delay;
	check_window(eng, in);
	srv__put_or_log(eng, in);
}

void srv__termination_not_observed(struct srv_engine *eng, struct srv_instance *in, const char *what)
{
	not_observed(eng, in, what);
}

/* The state's name for messages ("RUNNING"). */
static const char *state_name(int state)
{
	const ProtobufCEnumValue *v =
	    protobuf_c_enum_descriptor_get_value(&drover__compute__v1__instance_state__descriptor, state);
	return v ? v->name + strlen("INSTANCE_STATE_") : "UNKNOWN";
}

bool srv__listed_tag(const drv_listed_instance *li, const char *key, const char **value)
{
	for (size_t t = 0; t < li->n_tags; t++)
		if (li->tags[t]->key && strcmp(li->tags[t]->key, key) == 0) {
			*value = li->tags[t]->value ? li->tags[t]->value : "";
			return true;
		}
	return false;
}

/*
 * Whether a machine of a listing by the row's tags may be the row's. Only a
 * machine listed TERMINATED, or one whose own tag or provider id says it is
 * another, is not: a listing that cannot tell never ends a row.
 */
static bool may_be(const drv_listed_instance *li, const struct srv_instance *in, const char *machine_id)
{
	const char *iid;
	if (li->data && li->data->state == DROVER__COMPUTE__V1__INSTANCE_STATE__INSTANCE_STATE_TERMINATED)
		return false;
	if (srv__listed_tag(li, SRV_TAG_INSTANCE, &iid))
		return strcmp(iid, in->id) == 0;
	if (machine_id && machine_id[0] && li->data && li->data->instance_id && li->data->instance_id[0])
		return strcmp(machine_id, li->data->instance_id) == 0;
	return true;
}

/* ListInstances by the row's tags: the fallback look, and the only one for a row with no machine id. */
static void lookup_done(void *ud, int code, const char *message, ProtobufCMessage *resp)
{
	struct rec_op *op = ud;
	struct srv_engine *eng = op->eng;
	struct srv_instance *in = op->in;
	if (eng->stopped)
		goto done;
	char what[1200];
	drv_provisioning_data *pd =
	    in->provisioning
	        ? drover__compute__v1__provisioning_data__unpack(NULL, in->provisioning_len, in->provisioning)
	        : NULL;
	if (code != 0 || !resp) {
		snprintf(what, sizeof(what), "%sListInstances by its tags: %s: %s", op->prev ? op->prev : "",
		         drv_error_name(code), message ? message : "");
		not_observed(eng, in, what);
	} else {
		const drv_list_instances_response *r = (const drv_list_instances_response *)resp;
		const drv_listed_instance *found = NULL;
		for (size_t i = 0; i < r->n_instances && !found; i++)
			if (may_be(r->instances[i], in, pd ? pd->instance_id : NULL))
				found = r->instances[i];
		const drv_provisioning_data *fd = found ? found->data : NULL;
		if (!found) {
			observed_end(eng, in, "ListInstances by its tags no longer lists it");
		} else if (!pd && fd && fd->instance_id && fd->instance_id[0]) {
			/* Its machine id was never known: now it is, and the machine is terminated by it. */
			if (srv__set_blob(&in->provisioning, &in->provisioning_len, &fd->base) < 0) {
				srv_warn("engine", "instance %s: out of memory recording its machine",
				         in->id);
			} else {
				in->next_check_at = srv_now_ms();
				srv__put_or_log(eng, in);
				srv_engine_event(
				    eng, SRV_EVENT_INFO, "instance.found_by_tag", in->project, in->id,
				    in->backend, in->backend_type,
				    "ListInstances by its tags names its machine %s; terminating it",
				    fd->instance_id);
				srv__engine_kick(eng);
			}
		} else {
			snprintf(what, sizeof(what), "%sListInstances by its tags still lists it%s%s",
			         op->prev ? op->prev : "", fd && fd->instance_id ? " as " : "",
			         fd && fd->instance_id ? fd->instance_id : "");
			not_observed(eng, in, what);
		}
	}
	if (pd)
		protobuf_c_message_free_unpacked(&pd->base, NULL);
done:
	if (resp)
		drv_response_free(resp);
	rec_op_free(op);
}

/* Falls back to a look by the row's tags; `prev` says why (copied; out of memory: left out). */
static void look_by_tags(struct srv_engine *eng, struct rec_op *op, const char *prev)
{
	char msg[600], what[1900];
	free(op->prev);
	op->prev = strdup(prev);
	int rc = send_call(eng, op, "ListInstances", NULL, lookup_done, msg, sizeof(msg));
	if (rc != 0) {
		snprintf(what, sizeof(what), "%s%s", prev, msg);
		not_observed(eng, op->in, what);
		rec_op_free(op);
	}
}

/* GetInstance after TerminateInstance answered OK: only this, or a listing, ends the row. */
static void observe_done(void *ud, int code, const char *message, ProtobufCMessage *resp)
{
	struct rec_op *op = ud;
	struct srv_engine *eng = op->eng;
	struct srv_instance *in = op->in;
	drv_provisioning_data *pd = code == 0 && resp ? ((drv_get_instance_response *)resp)->data : NULL;
	char what[1200];
	if (eng->stopped) {
		rec_op_free(op);
	} else if (code == DRV_ENOTFOUND) {
		/*
		 * A machine droverd itself asked this backend to terminate: NOT_FOUND is
		 * its end (the cloud forgot it), unlike for a running machine.
		 */
		observed_end(eng, in, "GetInstance answers NOT_FOUND");
		rec_op_free(op);
	} else if (pd && pd->state == DROVER__COMPUTE__V1__INSTANCE_STATE__INSTANCE_STATE_TERMINATED) {
		observed_end(eng, in, "GetInstance reports TERMINATED");
		rec_op_free(op);
	} else if (pd) {
		snprintf(what, sizeof(what), "TerminateInstance answered OK, GetInstance still reports %s",
		         state_name(pd->state));
		not_observed(eng, in, what);
		rec_op_free(op);
	} else {
		/* No answer that says anything: a listing by its tags may. */
		snprintf(what, sizeof(what), "GetInstance: %s: %s; ", code ? drv_error_name(code) : "OK",
		         code ? (message ? message : "") : "no provisioning data");
		look_by_tags(eng, op, what);
	}
	if (resp)
		drv_response_free(resp);
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
	if (code != 0) {
		char msg[1200];
		in->termination_failures++;
		int64_t delay = backoff_ms(in->termination_failures);
		snprintf(msg, sizeof(msg), "TerminateInstance failed %lld time(s): %s: %s",
		         (long long)in->termination_failures, drv_error_name(code), message);
		/* Out of memory: last_error keeps its previous text; the count and backoff are kept. */
		srv__set_str(&in->last_error, msg);
		in->next_check_at = srv_now_ms() + delay;
		check_window(eng, in);
		srv__put_or_log(eng, in);
		srv_engine_event(eng, SRV_EVENT_ERROR, "instance.termination_failed", in->project, in->id,
		                 in->backend, in->backend_type, "%s; retrying in %lld ms", msg,
		                 (long long)delay);
		rec_op_free(op);
		return;
	}
	/*
	 * OK is the driver's word, not an observation: the row stays
	 * "terminating" until GetInstance (or a listing) shows the machine's end.
	 * The window of termination.unconfirmed runs from the first OK.
	 */
	if (in->termination_acked_at == 0)
		in->termination_acked_at = srv_now_ms();
	in->termination_failures = 0;
	in->next_check_at = srv_now_ms() + eng->cfg->call_timeout_ms + 5000;
	srv__put_or_log(eng, in);
	drv_provisioning_data *pd =
	    drover__compute__v1__provisioning_data__unpack(NULL, in->provisioning_len, in->provisioning);
	char msg[600];
	int rc = pd ? send_call(eng, op, "GetInstance", pd, observe_done, msg, sizeof(msg)) : DRV_ENOMEM;
	if (pd)
		protobuf_c_message_free_unpacked(&pd->base, NULL);
	if (rc != 0) {
		not_observed(eng, in, rc == DRV_ENOMEM ? "out of memory asking GetInstance" : msg);
		rec_op_free(op);
	}
}

/* False when out of memory left the row as it was, for a later pass. */
static bool reconcile_one(struct srv_engine *eng, struct srv_instance *in)
{
	int64_t now = srv_now_ms();
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
	bool has_id = pd && pd->instance_id && pd->instance_id[0];
	if (!has_id && !term) {
		/* Out of memory for a field: the row is left as it is and is due again next pass. */
		bool oom = srv__set_str(&in->last_error, "provisioning data missing or damaged") < 0;
		if (oom) {
			srv_warn("engine", "instance %s: out of memory; trying again", in->id);
		} else {
			in->next_check_at = 0;
			srv__put_or_log(eng, in);
		}
		if (pd)
			protobuf_c_message_free_unpacked(&pd->base, NULL);
		srv_instance_free(in);
		return !oom;
	}
	struct rec_op *op = calloc(1, sizeof(*op));
	if (!op) {
		/* No lease written: the row is due again next pass. */
		srv_warn("engine", "instance %s: out of memory; trying again", in->id);
		if (pd)
			protobuf_c_message_free_unpacked(&pd->base, NULL);
		srv_instance_free(in);
		return false;
	}
	op->eng = eng;
	op->in = in;
	/*
	 * A terminating row with no machine id (a driver that answered a create
	 * without one): no call can name its machine, so it is looked for by its
	 * tags. The window of termination.unconfirmed runs from the first look.
	 */
	if (term && !has_id && in->termination_acked_at == 0)
		in->termination_acked_at = now;
	in->next_check_at = now + eng->cfg->call_timeout_ms + 5000;
	srv__put_or_log(eng, in);
	eng->busy++;
	eng->reconcile_inflight++;
	char msg[600];
	int rc = !term    ? send_call(eng, op, "GetInstance", pd, get_instance_done, msg, sizeof(msg))
	         : has_id ? send_call(eng, op, "TerminateInstance", pd, terminate_done, msg, sizeof(msg))
	                  : send_call(eng, op, "ListInstances", NULL, lookup_done, msg, sizeof(msg));
	if (pd)
		protobuf_c_message_free_unpacked(&pd->base, NULL);
	if (rc == DRV_ENOMEM) {
		/* The lease written brings the row back. */
		srv_warn("engine", "instance %s: out of memory; trying again", in->id);
		rec_op_free(op);
		return false;
	}
	if (rc != 0) {
		if (srv__set_str(&in->last_error, msg) == 0) {
			in->next_check_at = now + 60000;
			if (term)
				check_window(eng, in);
			srv__put_or_log(eng, in);
		}
		rec_op_free(op);
	}
	return true;
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
		srv__termination_reset(in);
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
