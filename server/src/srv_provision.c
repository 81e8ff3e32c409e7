/* Provisioning for srv_engine: offers in price order, fallback, crash-safe attempts. */
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
#include "srv_secrets.h"
#include "srv_store.h"
#include "srv_supervisor.h"

/* Uncertain create outcomes (UNAVAILABLE, DEADLINE_EXCEEDED) retried inline before reconciliation takes over.
 */
#define CREATE_INLINE_RETRIES 3
#define CREATE_RETRY_BASE_MS 200
/* At most this many machines are terminated after one answer that failed droverd's check. */
#define CLEANUP_MAX_MACHINES 16

/*
 * Creates in bulk ask for the same offers again and again. For creates only
 * (never for GetOffers), one fan-out's answer serves every create with the
 * same query for CREATE_OFFERS_TTL_MS, and creates arriving while it runs wait
 * for it. Offers are hints anyway: the driver's answer to CreateInstance
 * decides, and a refusal falls back to the next offer.
 */
#define CREATE_OFFERS_TTL_MS 1000

struct create_op;

/* A create with the same project and idempotency key as one not answered yet. */
struct create_dup {
	struct create_dup *next;
	srv_instance_cb cb;
	void *ud;
};

struct offers_waiter {
	struct offers_waiter *next;
	struct create_op *op;
};

struct offers_cache {
	struct offers_cache *next;
	struct srv_engine *eng;
	char *key;
	size_t key_len;
	bool ready;
	int64_t expires;
	int code;
	char *message;
	struct srv_offers_result *res;
	struct offers_waiter *waiters;
};

/* ---- attempts and ssh keys: the row's record, the API's messages ---- */

/* The row's record, made empty when it has none; NULL when out of memory. */
static Drover__State__V1__InstanceRecord *record_of(struct srv_instance *in)
{
	if (!in->record && (in->record = malloc(sizeof(*in->record))) != NULL)
		drover__state__v1__instance_record__init(in->record);
	return in->record;
}

/* A record holding copies of these keys and no attempt, or NULL when out of memory. */
static Drover__State__V1__InstanceRecord *record_with_keys(char *const *keys, size_t n)
{
	Drover__State__V1__InstanceRecord *r = malloc(sizeof(*r));
	if (!r)
		return NULL;
	drover__state__v1__instance_record__init(r);
	r->ssh_public_keys = calloc(n + 1, sizeof(char *));
	for (size_t i = 0; r->ssh_public_keys && i < n; i++) {
		if (!(r->ssh_public_keys[i] = strdup(keys[i])))
			break;
		r->n_ssh_public_keys++;
	}
	if (!r->ssh_public_keys || r->n_ssh_public_keys < n) {
		protobuf_c_message_free_unpacked(&r->base, NULL);
		return NULL;
	}
	return r;
}

/* Replaces a string field of a record's message; false when out of memory (field unchanged). */
static bool set_field(char **field, const char *value)
{
	char *v = strdup(value ? value : "");
	if (!v)
		return false;
	if (*field != protobuf_c_empty_string)
		free(*field);
	*field = v;
	return true;
}

/* Both return 0, or DRV_ENOMEM with the row's attempts unchanged. */
static int attempt_begin(struct srv_instance *in, unsigned number, const char *backend, const drv_offer *o)
{
	Drover__State__V1__InstanceRecord *r = record_of(in);
	Drover__Api__V1__Attempt *a = r ? malloc(sizeof(*a)) : NULL;
	Drover__Api__V1__Attempt **list =
	    a ? realloc(r->attempts, (r->n_attempts + 1) * sizeof(*r->attempts)) : NULL;
	if (!list) {
		free(a);
		return DRV_ENOMEM;
	}
	r->attempts = list;
	drover__api__v1__attempt__init(a);
	a->number = number;
	a->price_per_hour = o->price_per_hour;
	a->started_unix_ms = srv_now_ms();
	if (!set_field(&a->backend, backend) || !set_field(&a->instance_type, o->instance_type) ||
	    !set_field(&a->region, o->region)) {
		protobuf_c_message_free_unpacked(&a->base, NULL);
		return DRV_ENOMEM;
	}
	r->attempts[r->n_attempts++] = a;
	return 0;
}

/* Sets the outcome of the last attempt; code "" means in flight again. */
static int attempt_end(struct srv_instance *in, const char *code, const char *message)
{
	if (!in->record || in->record->n_attempts == 0)
		return 0;
	Drover__Api__V1__Attempt *a = in->record->attempts[in->record->n_attempts - 1];
	char *c = strdup(code), *m = strdup(message ? message : "");
	if (!c || !m) {
		free(c);
		free(m);
		return DRV_ENOMEM;
	}
	if (a->code != protobuf_c_empty_string)
		free(a->code);
	if (a->message != protobuf_c_empty_string)
		free(a->message);
	a->code = c;
	a->message = m;
	a->finished_unix_ms = code[0] ? srv_now_ms() : 0;
	return 0;
}

static unsigned attempt_count(const struct srv_instance *in)
{
	return in->record ? (unsigned)in->record->n_attempts : 0;
}

/* ---- creating ---- */

struct cand {
	char *backend;
	char *type;
	drv_offer *offer;
};

struct create_op {
	struct srv_engine *eng;
	srv_instance_cb cb;
	void *ud;
	struct srv_instance *in;
	struct cand *cands;
	size_t n_cands;
	unsigned tries;      /* attempts made by this op (numbering continues the row's) */
	unsigned uncertain;  /* uncertain outcomes of the current attempt */
	unsigned attempt_no; /* the number of the attempt in flight */
	char **ssh_keys;
	size_t n_ssh;
	drv_features required;
	drv_requirements *req;
	char **only_backends;
	size_t n_only;
	unsigned max_tries;
	uv_timer_t *retry_timer;
	drv_offer *cur_offer; /* owned when resuming */
	bool resumed;
	struct create_op *next_creating; /* in eng->creating until answered */
	struct create_op *next_op;       /* in eng->ops until freed */
	bool listed;
	struct create_dup *dups; /* answered with this op's answer */
	/* Cleaning up after an answer that failed droverd's check (create_bad_answer). */
	char *bad_why;
	unsigned cleanup_pending;   /* TerminateInstance calls out */
	unsigned cleanup_acked;     /* of them, answered OK: their end is looked for by a listing */
	char cleanup_fault[600];    /* why the machine could not be found and terminated; "" */
	char cleanup_done_ids[600]; /* the machines terminated, for the message */
	char cleanup_alive[600];    /* why their end is not observed yet; "" */
};

static void create_attempt(struct create_op *op);
static void create_refused(struct create_op *op, const char *code, const char *message);
static void create_bad_answer(struct create_op *op, const char *why);
static void cleanup_start(struct create_op *op);
static void create_reply(struct create_op *op, int code, const char *message);
static void creating_unlist(struct create_op *op);
static void create_send(struct create_op *op);
static void retry_timer_cb(uv_timer_t *t);

static void timer_closed(uv_handle_t *h)
{
	free(h);
}

static void create_op_free(struct create_op *op)
{
	for (size_t i = 0; i < op->n_cands; i++) {
		free(op->cands[i].backend);
		free(op->cands[i].type);
		if (op->cands[i].offer)
			protobuf_c_message_free_unpacked(&op->cands[i].offer->base, NULL);
	}
	free(op->cands);
	for (size_t i = 0; i < op->n_ssh; i++)
		free(op->ssh_keys[i]);
	free(op->ssh_keys);
	for (size_t i = 0; i < op->n_only; i++)
		free(op->only_backends[i]);
	free(op->only_backends);
	/* Never answered (a resumed op has no caller): duplicates still get an answer. */
	if (op->dups)
		create_reply(op, DRV_EUNAVAILABLE, "the create was abandoned; ask again");
	creating_unlist(op);
	if (op->req)
		protobuf_c_message_free_unpacked(&op->req->base, NULL);
	if (op->resumed && op->cur_offer)
		protobuf_c_message_free_unpacked(&op->cur_offer->base, NULL);
	if (op->retry_timer)
		uv_close((uv_handle_t *)op->retry_timer, timer_closed);
	free(op->bad_why);
	for (struct create_op **pp = &op->eng->ops; *pp; pp = &(*pp)->next_op)
		if (*pp == op) {
			*pp = op->next_op;
			break;
		}
	srv_instance_free(op->in);
	op->eng->busy--;
	free(op);
}

struct srv_instance *srv__create_row(struct srv_engine *eng, const char *id)
{
	for (struct create_op *op = eng->ops; op; op = op->next_op)
		if (op->in && op->in->id && strcmp(op->in->id, id) == 0)
			return op->in;
	return NULL;
}

static void creating_unlist(struct create_op *op)
{
	if (!op->listed)
		return;
	for (struct create_op **pp = &op->eng->creating; *pp; pp = &(*pp)->next_creating)
		if (*pp == op) {
			*pp = op->next_creating;
			break;
		}
	op->listed = false;
}

/*
 * Answers the create and every duplicate that waited for it. From here on
 * the row (when there is one) answers later duplicates through the store.
 */
static void create_reply(struct create_op *op, int code, const char *message)
{
	creating_unlist(op);
	if (op->cb) {
		op->cb(op->ud, code, message, code == 0 ? op->in : NULL);
		op->cb = NULL;
	}
	while (op->dups) {
		struct create_dup *d = op->dups;
		op->dups = d->next;
		d->cb(d->ud, code, message, code == 0 ? op->in : NULL);
		free(d);
	}
}

/*
 * Out of memory recording an outcome: the row stays "creating" and
 * reconciliation resumes it later with the same key, which never makes a
 * second machine. The caller sees "creating", as after an uncertain outcome.
 */
static void create_defer(struct create_op *op)
{
	srv_warn("engine", "instance %s: out of memory recording attempt %u; reconciliation resumes it",
	         op->in->id, op->attempt_no);
	op->in->next_check_at = srv_now_ms() + 5000;
	srv__put_or_log(op->eng, op->in);
	create_reply(op, 0, "");
	create_op_free(op);
}

/*
 * Whether a CreateInstance answer can be stored: 0, or 1 with the fault in
 * why. Beside srv__check_provisioning, the machine must not be one that
 * another live instance of the same backend holds: a second row for one
 * machine would terminate it under the other's feet.
 */
static int answer_fault(struct create_op *op, const drv_provisioning_data *pd, char *why, size_t len)
{
	if (srv__check_provisioning(pd, why, len) < 0)
		return 1;
	char *holder = NULL;
	struct srv_instance *in = op->in;
	int rc = srv_store_instance_holding(op->eng->st, in->project, in->backend, pd->instance_id, in->id,
	                                    &holder);
	if (rc == 0)
		snprintf(why, len, "instance_id names the machine of instance %s, live on the same backend",
		         holder);
	else if (rc < 0)
		snprintf(why, len, "instance_id cannot be compared with the store's: %s",
		         srv_store_errmsg(op->eng->st));
	free(holder);
	return rc == 1 ? 0 : 1;
}

static void create_done(void *ud, int code, const char *message, ProtobufCMessage *resp)
{
	struct create_op *op = ud;
	struct srv_engine *eng = op->eng;
	struct srv_instance *in = op->in;
	char msg[1500];

	if (eng->stopped) {
		/* Shutting down: the row stays "creating" and the next start resumes it with the same key. */
		if (resp)
			drv_response_free(resp);
		create_reply(op, DRV_EUNAVAILABLE,
		             "the server is shutting down; the instance is resumed at the next start");
		create_op_free(op);
		return;
	}
	if (code == 0) {
		drv_create_instance_response *r = (drv_create_instance_response *)resp;
		drv_provisioning_data *pd = r ? r->data : NULL;
		char why[500];
		if (answer_fault(op, pd, why, sizeof(why))) {
			/* Nothing of it is stored: the machine is found by its tags and terminated. */
			if (resp)
				drv_response_free(resp);
			create_bad_answer(op, why);
			return;
		}
		bool has_addr =
		    pd && ((pd->hostname && pd->hostname[0]) || (pd->internal_ip && pd->internal_ip[0]));
		/* A terminate asked for during the call: the machine goes at once. */
		bool terminate = in->terminate_requested;
		const char *status = terminate  ? SRV_ST_TERMINATING
		                     : has_addr ? SRV_ST_RUNNING
		                                : SRV_ST_PROVISIONING;
		if (srv__set_blob(&in->provisioning, &in->provisioning_len, pd ? &pd->base : NULL) < 0 ||
		    srv__set_str(&in->status, status) < 0) {
			if (resp)
				drv_response_free(resp);
			create_defer(op);
			return;
		}
		/* Without an address, reconciliation polls GetInstance; with one, checks it now and then. */
		in->next_check_at = terminate  ? srv_now_ms()
		                    : has_addr ? srv__running_check_at(eng)
		                               : srv_now_ms() + eng->cfg->reconcile_interval_ms;
		in->termination_failures = 0;
		srv__set_str(&in->last_error, NULL);
		/* Out of memory: the attempt stays recorded as in flight; the status says it worked. */
		attempt_end(in, "OK", "");
		/* State and event in one commit. */
		srv_store_begin(eng->st);
		srv__put_or_log(eng, in);
		srv_engine_event(eng, SRV_EVENT_INFO, "instance.created", in->project, in->id, in->backend,
		                 in->backend_type, "created on %s as %s (attempt %u)", in->backend,
		                 pd && pd->instance_id ? pd->instance_id : "?", op->attempt_no);
		if (terminate)
			srv_engine_event(eng, SRV_EVENT_INFO, "instance.terminating", in->project, in->id,
			                 in->backend, in->backend_type,
			                 "terminating: termination was requested while it was being created");
		srv_store_commit(eng->st);
		if (resp)
			drv_response_free(resp);
		if (terminate)
			srv__engine_kick(eng);
		create_reply(op, 0, "");
		create_op_free(op);
		return;
	}
	if (resp)
		drv_response_free(resp);
	snprintf(msg, sizeof(msg), "%s: %s", drv_error_name(code), message);
	if (srv__is_uncertain(code)) {
		/* Maybe made, maybe not: ask again with the same key, which never makes a second machine. */
		/* Out of memory: the attempt and last_error keep their previous text; the retry goes on. */
		attempt_end(in, drv_error_name(code), message);
		srv__set_str(&in->last_error, msg);
		if (!op->retry_timer && op->uncertain < CREATE_INLINE_RETRIES && !op->resumed) {
			op->retry_timer = malloc(sizeof(*op->retry_timer));
			if (op->retry_timer) {
				uv_timer_init(eng->loop, op->retry_timer);
				op->retry_timer->data = op;
			}
		}
		/* Without a timer (out of memory), reconciliation retries instead. */
		if (op->retry_timer && op->uncertain < CREATE_INLINE_RETRIES && !op->resumed) {
			uint64_t delay = (uint64_t)CREATE_RETRY_BASE_MS << op->uncertain;
			op->uncertain++;
			srv__put_or_log(eng, in);
			srv_engine_event(eng, SRV_EVENT_WARNING, "instance.attempt_uncertain", in->project,
			                 in->id, in->backend, in->backend_type,
			                 "attempt %u on %s: %s; retrying with the same key in %llu ms",
			                 op->attempt_no, in->backend, msg, (unsigned long long)delay);
			uv_timer_start(op->retry_timer, retry_timer_cb, delay, 0);
			return;
		}
		/* Reconciliation takes over; the caller sees "creating" with the error. */
		in->next_check_at = srv_now_ms() + 5000;
		srv__put_or_log(eng, in);
		srv_engine_event(eng, SRV_EVENT_WARNING, "instance.attempt_uncertain", in->project, in->id,
		                 in->backend, in->backend_type,
		                 "attempt %u on %s: %s; reconciliation will retry with the same key",
		                 op->attempt_no, in->backend, msg);
		create_reply(op, 0, "");
		create_op_free(op);
		return;
	}
	create_refused(op, drv_error_name(code), message);
}

/*
 * A definite outcome that left no machine (`code` a status name, as the
 * attempt records it): the next offer, or the end of the create.
 */
static void create_refused(struct create_op *op, const char *code, const char *message)
{
	struct srv_engine *eng = op->eng;
	struct srv_instance *in = op->in;
	char msg[1500];
	snprintf(msg, sizeof(msg), "%s: %s", code, message);
	/* A definite refusal: no machine was made. Try the next offer. */
	/* Out of memory: the attempt stays recorded as in flight; the next one or the status follow. */
	attempt_end(in, code, message);
	srv_engine_event(eng, SRV_EVENT_WARNING, "instance.attempt_failed", in->project, in->id, in->backend,
	                 in->backend_type, "attempt %u on %s (%s): %s", op->attempt_no, in->backend,
	                 op->cur_offer && op->cur_offer->instance_type ? op->cur_offer->instance_type : "?",
	                 msg);
	/* After a terminate was asked for, no further offer is tried. */
	if (!op->resumed && !in->terminate_requested && op->tries < op->n_cands &&
	    op->tries < op->max_tries) {
		srv__put_or_log(eng, in);
		create_attempt(op);
		return;
	}
	char fmsg[1700];
	snprintf(fmsg, sizeof(fmsg), "%u attempt(s) failed; last: %s%s", attempt_count(in), msg,
	         in->terminate_requested ? "; termination was requested, so no further offer was tried" : "");
	/* last_error first: a row is never "failed" with the wrong reason. */
	if (srv__set_str(&in->last_error, fmsg) < 0 || srv__set_str(&in->status, SRV_ST_FAILED) < 0) {
		create_defer(op);
		return;
	}
	in->next_check_at = 0;
	srv__put_or_log(eng, in);
	srv_engine_event(eng, SRV_EVENT_ERROR, "instance.failed", in->project, in->id, in->backend,
	                 in->backend_type, "%s", fmsg);
	create_reply(op, 0, "");
	create_op_free(op);
}

/* ---- an answer that failed the check: the machine is found by its tags and terminated ---- */

/*
 * A machine of the clean-up was asked to terminate and answered OK, and its
 * end is not observed: the attempt stays uncertain, and the row "creating".
 * As for a terminating row (srv_reconcile.c), reconciliation looks again
 * after a growing wait, warns with termination.unconfirmed past the window,
 * and resumes the clean-up, never the create (srv__create_resume): asking
 * again for a machine droverd asked to terminate could make another.
 */
static void cleanup_unobserved(struct create_op *op, const char *what)
{
	struct srv_engine *eng = op->eng;
	struct srv_instance *in = op->in;
	char msg[1500];
	snprintf(msg, sizeof(msg),
	         "backend %s: the CreateInstance answer failed droverd's check (%s); the end of the machine "
	         "it made is not observed yet: %s",
	         in->backend, op->bad_why, what);
	/* Out of memory: the attempt keeps its previous outcome; the look goes on all the same. */
	attempt_end(in, drv_error_name(DRV_EINTERNAL), msg);
	srv_store_begin(eng->st);
	srv__termination_not_observed(eng, in, msg);
	srv_engine_event(eng, SRV_EVENT_WARNING, "instance.attempt_uncertain", in->project, in->id,
	                 in->backend, in->backend_type, "attempt %u on %s: %s; reconciliation looks again",
	                 op->attempt_no, in->backend, msg);
	srv_store_commit(eng->st);
	create_reply(op, 0, "");
	create_op_free(op);
}

/*
 * The end of the clean-up. Every machine found was terminated and is no
 * longer listed (or none carries the instance's tags): a definite failure of
 * the attempt, and the create goes on. A machine asked to terminate whose end
 * is not observed: cleanup_unobserved. Otherwise (no machine was asked yet)
 * the outcome stays uncertain: the attempt is retried with the same key, then
 * by reconciliation, as after a crash, and each answer is checked again.
 */
static void cleanup_finish(struct create_op *op)
{
	char msg[1500];
	const char *backend = op->in->backend;
	if (op->eng->stopped) {
		create_reply(op, DRV_EUNAVAILABLE,
		             "the server is shutting down; the instance is resumed at the next start");
		create_op_free(op);
		return;
	}
	if (op->in->termination_acked_at && (op->cleanup_alive[0] || op->cleanup_fault[0])) {
		cleanup_unobserved(op, op->cleanup_alive[0] ? op->cleanup_alive : op->cleanup_fault);
		return;
	}
	/* Observed gone: the next attempt's termination, if any, starts afresh. */
	srv__termination_reset(op->in);
	if (op->cleanup_fault[0]) {
		snprintf(msg, sizeof(msg),
		         "backend %s: the CreateInstance answer failed droverd's check (%s); the machine it "
		         "may have made is not terminated yet: %s",
		         backend, op->bad_why, op->cleanup_fault);
		create_done(op, DRV_EINTERNAL, msg, NULL);
		return;
	}
	snprintf(msg, sizeof(msg), "backend %s: the CreateInstance answer failed droverd's check (%s); %s",
	         backend, op->bad_why,
	         op->cleanup_done_ids[0] ? op->cleanup_done_ids
	                                 : "ListInstances by its tags lists no machine of it");
	create_refused(op, drv_error_name(DRV_EINTERNAL), msg);
}

static void cleanup_fail(struct create_op *op, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void cleanup_fail(struct create_op *op, const char *fmt, ...)
{
	if (op->cleanup_fault[0])
		return;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(op->cleanup_fault, sizeof(op->cleanup_fault), fmt, ap);
	va_end(ap);
}

static int cleanup_list(struct create_op *op, srv_call_cb cb);
static void cleanup_observed(void *ud, int code, const char *message, ProtobufCMessage *resp);

static void cleanup_terminated(void *ud, int code, const char *message, ProtobufCMessage *resp)
{
	struct create_op *op = ud;
	bool answered = resp != NULL;
	if (resp)
		drv_response_free(resp);
	if (code != 0) {
		cleanup_fail(op, "TerminateInstance: %s: %.300s", drv_error_name(code), message);
	} else if (answered) {
		/* The driver's word: the window of termination.unconfirmed runs from the first OK. */
		op->cleanup_acked++;
		if (op->in->termination_acked_at == 0)
			op->in->termination_acked_at = srv_now_ms();
	}
	if (--op->cleanup_pending != 0)
		return;
	/* OK is not an observation: the machines' end is looked for by the same listing. */
	if (op->cleanup_acked && !op->cleanup_fault[0] && !op->eng->stopped) {
		if (cleanup_list(op, cleanup_observed) == 0)
			return;
		snprintf(op->cleanup_alive, sizeof(op->cleanup_alive),
		         "the backend's config cannot be read to list its machines");
	}
	cleanup_finish(op);
}

/* The listing after the terminates: a machine still listed, unless listed TERMINATED, lives on. */
static bool cleanup_match(const struct create_op *op, const drv_listed_instance *li, const char *key);

static void cleanup_observed(void *ud, int code, const char *message, ProtobufCMessage *resp)
{
	struct create_op *op = ud;
	const drv_list_instances_response *r = (const drv_list_instances_response *)resp;
	char key[300];
	snprintf(key, sizeof(key), "%s/%u", op->in->idempotency_key, op->attempt_no);
	if (code != 0 || !r) {
		snprintf(op->cleanup_alive, sizeof(op->cleanup_alive),
		         "TerminateInstance answered OK; ListInstances by its tags: %s: %.300s",
		         drv_error_name(code), message ? message : "");
	}
	for (size_t i = 0; code == 0 && r && i < r->n_instances && !op->cleanup_alive[0]; i++) {
		const drv_listed_instance *li = r->instances[i];
		if (!cleanup_match(op, li, key) ||
		    (li->data &&
		     li->data->state == DROVER__COMPUTE__V1__INSTANCE_STATE__INSTANCE_STATE_TERMINATED))
			continue;
		snprintf(op->cleanup_alive, sizeof(op->cleanup_alive),
		         "TerminateInstance answered OK, ListInstances by its tags still lists %.300s",
		         li->data && li->data->instance_id ? li->data->instance_id : "a machine of it");
	}
	if (resp)
		drv_response_free(resp);
	if (!op->cleanup_alive[0] && op->cleanup_done_ids[0] &&
	    strlen(op->cleanup_done_ids) + 60 < sizeof(op->cleanup_done_ids))
		strcat(op->cleanup_done_ids, " (ListInstances by its tags no longer lists it)");
	cleanup_finish(op);
}

/* Whether a listed machine is this attempt's: droverd's instance tag, or the attempt's key. */
static bool cleanup_match(const struct create_op *op, const drv_listed_instance *li, const char *key)
{
	for (size_t t = 0; t < li->n_tags; t++)
		if (strcmp(li->tags[t]->key, "drover-instance") == 0 &&
		    strcmp(li->tags[t]->value, op->in->id) == 0)
			return true;
	return li->idempotency_key && strcmp(li->idempotency_key, key) == 0;
}

static void cleanup_listed(void *ud, int code, const char *message, ProtobufCMessage *resp)
{
	struct create_op *op = ud;
	struct srv_engine *eng = op->eng;
	drv_list_instances_response *r = (drv_list_instances_response *)resp;
	struct srv_backend *be = NULL;
	struct drv_backend_config_buf bc;
	bool have_cfg = false;
	char key[300];
	snprintf(key, sizeof(key), "%s/%u", op->in->idempotency_key, op->attempt_no);
	/* One more than the calls: the clean-up ends once, after the last call is sent. */
	op->cleanup_pending = 1;
	if (eng->stopped) {
		/* cleanup_finish answers. */
	} else if (code != 0 || !r) {
		cleanup_fail(op, "ListInstances: %s: %.300s", drv_error_name(code), message);
	} else if (srv_store_instance_backend(eng->st, op->in, &be) != 0 || srv_bcfg_init(&bc, be) < 0) {
		cleanup_fail(op, "the backend's config cannot be read");
	} else {
		have_cfg = true;
	}
	size_t done_len = 0;
	for (size_t i = 0; have_cfg && r && i < r->n_instances; i++) {
		const drv_listed_instance *li = r->instances[i];
		if (!cleanup_match(op, li, key))
			continue;
		char why[500];
		if (srv__check_provisioning(li->data, why, sizeof(why)) < 0) {
			cleanup_fail(op, "ListInstances lists it, and %s", why);
			continue;
		}
		/* One attempt makes one machine: a long listing is not acted on without end. */
		if (op->cleanup_pending > CLEANUP_MAX_MACHINES) {
			cleanup_fail(op, "ListInstances lists more than %d machines with its tags",
			             CLEANUP_MAX_MACHINES);
			break;
		}
		drv_terminate_instance_request req = DROVER__COMPUTE__V1__TERMINATE_INSTANCE_REQUEST__INIT;
		req.config = &bc.msg;
		req.instance_id = li->data->instance_id;
		req.region = li->data->region;
		req.backend_data = li->data->backend_data;
		int w =
		    snprintf(op->cleanup_done_ids + done_len, sizeof(op->cleanup_done_ids) - done_len, "%s%s",
		             done_len ? ", " : "the machine it made was terminated: ", li->data->instance_id);
		if (w > 0 && done_len + (size_t)w < sizeof(op->cleanup_done_ids))
			done_len += (size_t)w;
		srv_engine_event(eng, SRV_EVENT_WARNING, "instance.bad_answer_terminate", op->in->project,
		                 op->in->id, op->in->backend, op->in->backend_type,
		                 "terminating machine %s, found by its tags after a CreateInstance answer "
		                 "that failed droverd's check",
		                 li->data->instance_id);
		op->cleanup_pending++;
		srv_supervisor_call(eng->sup, be->type, "TerminateInstance", &req.base,
		                    eng->cfg->call_timeout_ms, cleanup_terminated, op);
	}
	if (have_cfg)
		drv_backend_config_clear(&bc);
	srv_backend_free(be);
	if (resp)
		drv_response_free(resp);
	if (--op->cleanup_pending == 0)
		cleanup_finish(op);
}

/*
 * CreateInstance answered OK with data droverd cannot store (an empty or
 * huge id, control characters, no address, another instance's machine).
 * The machine may exist all the same: as after a crash, it is looked for by
 * the tags droverd gave it and its idempotency key, and terminated, before
 * the create goes on. Nothing of the answer is stored.
 */
static void create_bad_answer(struct create_op *op, const char *why)
{
	struct srv_engine *eng = op->eng;
	struct srv_instance *in = op->in;
	char msg[1200];
	free(op->bad_why);
	op->bad_why = strdup(why);
	snprintf(msg, sizeof(msg),
	         "attempt %u on %s: the CreateInstance answer failed droverd's check (%s); looking for the "
	         "machine by its tags to terminate it",
	         op->attempt_no, in->backend, why);
	/* Out of memory: last_error keeps its previous text; the clean-up goes on. */
	srv__set_str(&in->last_error, msg);
	srv_store_begin(eng->st);
	srv__put_or_log(eng, in);
	srv_engine_event(eng, SRV_EVENT_WARNING, "instance.bad_answer", in->project, in->id, in->backend,
	                 in->backend_type, "%s", msg);
	srv_store_commit(eng->st);
	cleanup_start(op);
}

/*
 * Looks for the machine(s) of op's attempt by their tags, terminates them and
 * observes their end; cleanup_finish ends it. op->bad_why says why (NULL:
 * out of memory, and the attempt stays uncertain).
 */
static void cleanup_start(struct create_op *op)
{
	if (!op->bad_why) {
		create_done(op, DRV_ENOMEM, "out of memory", NULL);
		return;
	}
	op->cleanup_fault[0] = '\0';
	op->cleanup_done_ids[0] = '\0';
	op->cleanup_alive[0] = '\0';
	op->cleanup_acked = 0;
	if (cleanup_list(op, cleanup_listed) < 0) {
		op->cleanup_pending = 1;
		cleanup_fail(op, "the backend's config cannot be read");
		cleanup_terminated(op, 0, "", NULL);
	}
}

/* ListInstances by the tags droverd gave op's machine, answered to cb; -1 when the config cannot be read. */
static int cleanup_list(struct create_op *op, srv_call_cb cb)
{
	struct srv_engine *eng = op->eng;
	struct srv_instance *in = op->in;
	struct srv_backend *be = NULL;
	struct drv_backend_config_buf bc;
	if (srv_store_instance_backend(eng->st, in, &be) != 0 || srv_bcfg_init(&bc, be) < 0) {
		srv_backend_free(be);
		return -1;
	}
	drv_list_instances_request req = DROVER__COMPUTE__V1__LIST_INSTANCES_REQUEST__INIT;
	Drover__Compute__V1__ListInstancesRequest__TagsEntry tags[2], *tagp[2];
	for (int i = 0; i < 2; i++) {
		drover__compute__v1__list_instances_request__tags_entry__init(&tags[i]);
		tagp[i] = &tags[i];
	}
	tags[0].key = "drover-server";
	tags[0].value = eng->server_id;
	tags[1].key = "drover-instance";
	tags[1].value = in->id;
	req.config = &bc.msg;
	req.n_tags = 2;
	req.tags = tagp;
	srv_supervisor_call(eng->sup, be->type, "ListInstances", &req.base, eng->cfg->call_timeout_ms, cb,
	                    op);
	drv_backend_config_clear(&bc);
	srv_backend_free(be);
	return 0;
}

static void retry_timer_cb(uv_timer_t *t)
{
	struct create_op *op = t->data;
	if (op->eng->stopped) {
		create_reply(op, DRV_EUNAVAILABLE,
		             "the server is shutting down; the instance is resumed at the next start");
		create_op_free(op);
		return;
	}
	/* Out of memory: the attempt keeps its uncertain outcome while the retry is out. */
	attempt_end(op->in, "", "");
	srv__put_or_log(op->eng, op->in);
	create_send(op);
}

/* Sends CreateInstance for the current attempt; the state is already written. */
static void create_send(struct create_op *op)
{
	struct srv_engine *eng = op->eng;
	struct srv_instance *in = op->in;
	struct srv_backend *be = NULL;
	char key[300];

	int rc = srv_store_instance_backend(eng->st, in, &be);
	if (rc != 0) {
		char msg[600];
		snprintf(msg, sizeof(msg), "backend %s of project %s is gone: %s", in->backend, in->project,
		         rc < 0 ? srv_store_errmsg(eng->st) : "removed");
		/* No driver call was made for this attempt: a definite refusal. */
		create_done(op, DRV_EPRECONDITION, msg, NULL);
		return;
	}
	snprintf(key, sizeof(key), "%s/%u", in->idempotency_key, op->attempt_no);
	struct drv_backend_config_buf bc;
	if (srv_bcfg_init(&bc, be) < 0) {
		srv_backend_free(be);
		/* No driver call was made; DRV_ENOMEM counts as uncertain, so the same key is tried again. */
		create_done(op, DRV_ENOMEM, "out of memory", NULL);
		return;
	}
	drv_create_instance_request req = DROVER__COMPUTE__V1__CREATE_INSTANCE_REQUEST__INIT;
	drv_instance_configuration ic = DROVER__COMPUTE__V1__INSTANCE_CONFIGURATION__INIT;
	drv_tag_entry tags[3], *tagp[3];
	for (int i = 0; i < 3; i++) {
		drover__compute__v1__instance_configuration__tags_entry__init(&tags[i]);
		tagp[i] = &tags[i];
	}
	/*
	 * The server's tags let ListInstances find machines the store forgot
	 * (orphans); the signature proves droverd made the machine, so that only
	 * such machines are adopted (srv_orphans.c).
	 */
	char sig[SRV_SECRETS_SIG_LEN + 1];
	struct srv_secrets *sec = srv_store_secrets(eng->st);
	size_t n_tags = 2;
	tags[0].key = SRV_TAG_SERVER;
	tags[0].value = eng->server_id;
	tags[1].key = SRV_TAG_INSTANCE;
	tags[1].value = in->id;
	if (sec && srv_secrets_sign_machine(sec, in->id, in->project, in->backend, sig) == 0) {
		tags[2].key = SRV_TAG_SIGNATURE;
		tags[2].value = sig;
		n_tags = 3;
	} else {
		srv_warn("engine",
		         "instance %s: cannot sign its machine (no key); it will not be adopted if lost",
		         in->id);
	}
	ic.name = in->name;
	ic.project = in->project;
	ic.idempotency_key = key;
	ic.n_tags = n_tags;
	ic.tags = tagp;
	ic.n_ssh_public_keys = op->n_ssh;
	ic.ssh_public_keys = op->ssh_keys;
	req.config = &bc.msg;
	req.offer = op->cur_offer;
	req.instance = &ic;
	srv_supervisor_call(eng->sup, be->type, "CreateInstance", &req.base, eng->cfg->call_timeout_ms,
	                    create_done, op);
	drv_backend_config_clear(&bc);
	srv_backend_free(be);
}

static void create_attempt(struct create_op *op)
{
	struct srv_instance *in = op->in;
	struct cand *c = &op->cands[op->tries++];
	op->uncertain = 0;
	op->attempt_no = attempt_count(in) + 1;
	op->cur_offer = c->offer;
	/* Every copy is made first, so out of memory leaves the row as it was last written. */
	size_t offer_len = 0;
	char *backend = strdup(c->backend), *type = strdup(c->type), *status = strdup(SRV_ST_CREATING);
	unsigned char *offer = srv__pack(&c->offer->base, &offer_len);
	if (!backend || !type || !status || !offer ||
	    attempt_begin(in, op->attempt_no, c->backend, c->offer) < 0) {
		free(backend);
		free(type);
		free(status);
		free(offer);
		if (op->tries > 1) {
			/* A later attempt: the row exists; reconciliation takes it from there. */
			create_defer(op);
			return;
		}
		/* The first attempt: nothing is written, and the create fails. */
		create_reply(op, DRV_ENOMEM, "out of memory");
		create_op_free(op);
		return;
	}
	free(in->backend);
	in->backend = backend;
	free(in->backend_type);
	in->backend_type = type;
	free(in->offer);
	in->offer = offer;
	in->offer_len = offer_len;
	free(in->status);
	in->status = status;
	in->next_check_at = 0;
	/* Written before the call: a crash from here on resumes this attempt with the same key. */
	if (srv_store_instance_put(op->eng->st, in) < 0) {
		char msg[600];
		snprintf(msg, sizeof(msg), "cannot record the attempt: %s", srv_store_errmsg(op->eng->st));
		create_reply(op, DRV_EINTERNAL, msg);
		create_op_free(op);
		return;
	}
	create_send(op);
}

static char *new_id(const char *prefix)
{
	unsigned char rnd[8];
	char *id = malloc(40);
	if (!id)
		return NULL;
	RAND_bytes(rnd, sizeof(rnd));
	snprintf(id, 40, "%s%02x%02x%02x%02x%02x%02x%02x%02x", prefix, rnd[0], rnd[1], rnd[2], rnd[3], rnd[4],
	         rnd[5], rnd[6], rnd[7]);
	return id;
}

#define UNATTEMPTED_MSG "terminated before any attempt (while its offers were looked up)"

/* Sets `in` failed by a terminate asked while its offers were looked up; -1 when out of memory. */
static int mark_unattempted(struct srv_instance *in)
{
	if (srv__set_str(&in->status, SRV_ST_FAILED) < 0 ||
	    srv__set_str(&in->last_error, UNATTEMPTED_MSG) < 0)
		return -1;
	in->terminate_requested = true;
	in->next_check_at = 0;
	return 0;
}

/*
 * Terminated while its offers were looked up: its row was written "failed"
 * then (srv_engine_terminate_unwritten); the create answers the same.
 */
static void create_end_unattempted(struct create_op *op)
{
	if (mark_unattempted(op->in) < 0)
		create_reply(op, DRV_ENOMEM, "out of memory");
	else
		create_reply(op, 0, "");
	create_op_free(op);
}

/*
 * A create in eng->creating with no row yet: no attempt made, its offers
 * being looked up. Once a terminate is asked for, its row is written and the
 * store answers for it.
 */
static bool unwritten(const struct create_op *op)
{
	return op->tries == 0 && !op->resumed && !op->in->terminate_requested;
}

static struct create_op *find_unwritten(struct srv_engine *eng, const char *project, const char *id)
{
	for (struct create_op *op = eng->creating; op; op = op->next_creating)
		if (unwritten(op) && (strcmp(op->in->id, id) == 0 ||
		                      (project && project[0] && strcmp(op->in->project, project) == 0 &&
		                       strcmp(op->in->name, id) == 0)))
			return op;
	return NULL;
}

/* What a caller sees of a create with no row yet: "pending", no attempt. NULL when out of memory. */
static struct srv_instance *unwritten_copy(const struct srv_instance *in)
{
	struct srv_instance *c = calloc(1, sizeof(*c));
	if (!c)
		return NULL;
	c->id = strdup(in->id);
	c->project = strdup(in->project);
	c->name = strdup(in->name);
	c->backend = strdup("");
	c->backend_type = strdup("");
	c->status = strdup(SRV_ST_PENDING);
	c->idempotency_key = strdup(in->idempotency_key);
	bool keys_ok = true;
	if (in->record && in->record->n_ssh_public_keys)
		keys_ok = (c->record = record_with_keys(in->record->ssh_public_keys,
		                                        in->record->n_ssh_public_keys)) != NULL;
	c->created_at = in->created_at;
	if (!c->id || !c->project || !c->name || !c->backend || !c->backend_type || !c->status ||
	    !c->idempotency_key || !keys_ok) {
		srv_instance_free(c);
		return NULL;
	}
	return c;
}

int srv_engine_get_unwritten(struct srv_engine *eng, const char *project, const char *id,
                             struct srv_instance **out)
{
	struct create_op *op = find_unwritten(eng, project, id);
	if (!op)
		return 1;
	return (*out = unwritten_copy(op->in)) ? 0 : DRV_ENOMEM;
}

int srv_engine_list_unwritten(struct srv_engine *eng, const char *project, struct srv_instance ***out,
                              size_t *n)
{
	size_t cap = 0;
	*out = NULL;
	*n = 0;
	for (struct create_op *op = eng->creating; op; op = op->next_creating)
		cap++;
	if (!cap)
		return 0;
	struct srv_instance **v = calloc(cap, sizeof(*v));
	if (!v)
		return DRV_ENOMEM;
	size_t k = 0;
	for (struct create_op *op = eng->creating; op; op = op->next_creating) {
		if (!unwritten(op) || (project && strcmp(op->in->project, project) != 0))
			continue;
		if (!(v[k] = unwritten_copy(op->in))) {
			srv_instance_list_free(v, k);
			return DRV_ENOMEM;
		}
		k++;
	}
	/* eng->creating is newest first. */
	for (size_t i = 0; i < k / 2; i++) {
		struct srv_instance *t = v[i];
		v[i] = v[k - 1 - i];
		v[k - 1 - i] = t;
	}
	*out = v;
	*n = k;
	return 0;
}

int srv_engine_terminate_unwritten(struct srv_engine *eng, const char *project, const char *id,
                                   struct srv_instance **out)
{
	struct create_op *op = find_unwritten(eng, project, id);
	if (!op)
		return 1;
	/*
	 * The row is written now, "failed", before the answer: kept only in
	 * memory, the terminate would be lost with a server stop before the
	 * offers are in, and the create retried with the same key after the
	 * restart would make a machine. The create, when its offers are in,
	 * answers the same without any driver call.
	 */
	struct srv_instance *row = unwritten_copy(op->in);
	if (!row || mark_unattempted(row) < 0) {
		srv_instance_free(row);
		return DRV_ENOMEM;
	}
	srv_store_begin(eng->st);
	if (srv_store_instance_put(eng->st, row) < 0) {
		srv_store_commit(eng->st);
		srv_instance_free(row);
		return -1;
	}
	srv_engine_event(eng, SRV_EVENT_INFO, "instance.failed", row->project, row->id, NULL, NULL, "%s",
	                 UNATTEMPTED_MSG);
	srv_store_commit(eng->st);
	op->in->terminate_requested = true;
	op->in->created_at = row->created_at;
	*out = row;
	return 0;
}

/* `res` is borrowed (shared through the cache). */
static void create_with_offers(struct create_op *op, int code, const char *message,
                               const struct srv_offers_result *res)
{
	struct srv_engine *eng = op->eng;
	if (eng->stopped) {
		/* Nothing recorded yet, and nothing will be: the caller may simply ask again later. */
		create_reply(op, DRV_EUNAVAILABLE, "the server is shutting down");
		create_op_free(op);
		return;
	}
	if (op->in->terminate_requested) {
		create_end_unattempted(op);
		return;
	}
	if (code != 0) {
		create_reply(op, code, message);
		create_op_free(op);
		return;
	}
	/*
	 * Candidates: the cheapest offers, whatever their availability says. An
	 * offer's availability is a hint that may be stale either way; the
	 * driver's answer (RESOURCE_EXHAUSTED) is what decides, and is recorded.
	 */
	/* No more than there are offers: max_tries + 1 in unsigned wrapped to 0 for UINT32_MAX. */
	size_t ncap = res->n_items < op->max_tries ? res->n_items : op->max_tries;
	op->cands = calloc(ncap + 1, sizeof(*op->cands));
	bool oom = !op->cands;
	for (size_t i = 0; !oom && i < res->n_items && op->n_cands < op->max_tries; i++) {
		const drv_offer *o = res->items[i].offer;
		struct cand *c = &op->cands[op->n_cands++];
		size_t len;
		void *buf = srv__pack(&o->base, &len);
		c->offer = buf ? drover__compute__v1__offer__unpack(NULL, len, buf) : NULL;
		free(buf);
		c->backend = strdup(res->items[i].backend);
		c->type = strdup(res->items[i].backend_type);
		oom = !c->offer || !c->backend || !c->type;
	}
	if (oom) {
		create_reply(op, DRV_ENOMEM, "out of memory");
		create_op_free(op);
		return;
	}
	if (op->n_cands == 0) {
		char msg[1500];
		size_t l = (size_t)snprintf(msg, sizeof(msg), "no offer matches the requirements");
		for (size_t i = 0; i < res->n_backends && l < sizeof(msg); i++)
			if (res->backends[i].code)
				l += (size_t)snprintf(
				    msg + l, sizeof(msg) - l, "; backend %s: %s: %s",
				    res->backends[i].backend, drv_error_name(res->backends[i].code),
				    res->backends[i].message ? res->backends[i].message : "");
		create_reply(op, DRV_ENOCAPACITY, msg);
		create_op_free(op);
		return;
	}
	/*
	 * The first write records the instance already "creating" with its first
	 * attempt, before any provisioning call: a separate "pending" write
	 * would only repeat it in the same loop turn.
	 */
	create_attempt(op);
}

static void cache_free(struct offers_cache *c)
{
	srv_offers_result_free(c->res);
	free(c->key);
	free(c->message);
	free(c);
}

static void cache_drop_expired(struct srv_engine *eng, int64_t now)
{
	struct offers_cache **pp = &eng->cache;
	while (*pp) {
		struct offers_cache *c = *pp;
		if (c->ready && c->expires <= now) {
			*pp = c->next;
			cache_free(c);
		} else {
			pp = &c->next;
		}
	}
}

static void cache_filled(void *ud, int code, const char *message, struct srv_offers_result *res)
{
	struct offers_cache *c = ud;
	c->ready = true;
	c->code = code;
	c->message = strdup(message ? message : "");
	c->res = res;
	c->expires = srv_now_ms() + CREATE_OFFERS_TTL_MS;
	struct offers_waiter *w = c->waiters;
	c->waiters = NULL;
	/* Waiters in arrival order. */
	struct offers_waiter *rev = NULL;
	while (w) {
		struct offers_waiter *n = w->next;
		w->next = rev;
		rev = w;
		w = n;
	}
	/* The copy is for later hits, which only ever see a success (its message unused). */
	const char *msg = c->message ? c->message : message ? message : "";
	while (rev) {
		struct offers_waiter *n = rev->next;
		create_with_offers(rev->op, c->code, msg, c->res);
		free(rev);
		rev = n;
	}
	/* A failed fan-out is not kept. */
	if (code != 0 && !c->eng->stopped) {
		c->expires = 0;
		cache_drop_expired(c->eng, srv_now_ms());
	}
}

static void create_get_offers(struct create_op *op, const struct srv_offers_query *q)
{
	struct srv_engine *eng = op->eng;
	/* The key: everything that shapes the answer. */
	size_t rlen = 0;
	unsigned char *rbuf = q->requirements ? srv__pack(&q->requirements->base, &rlen) : NULL;
	if (q->requirements && !rbuf) {
		create_reply(op, DRV_ENOMEM, "out of memory");
		create_op_free(op);
		return;
	}
	size_t klen = strlen(q->project) + 1 + sizeof(q->required_features) + rlen;
	for (size_t i = 0; i < q->n_backends; i++)
		klen += strlen(q->backends[i]) + 1;
	char *key = malloc(klen + 1);
	if (!key) {
		free(rbuf);
		create_reply(op, DRV_ENOMEM, "out of memory");
		create_op_free(op);
		return;
	}
	size_t off = 0;
	memcpy(key + off, q->project, strlen(q->project) + 1);
	off += strlen(q->project) + 1;
	memcpy(key + off, &q->required_features, sizeof(q->required_features));
	off += sizeof(q->required_features);
	if (rlen)
		memcpy(key + off, rbuf, rlen);
	off += rlen;
	for (size_t i = 0; i < q->n_backends; i++) {
		memcpy(key + off, q->backends[i], strlen(q->backends[i]) + 1);
		off += strlen(q->backends[i]) + 1;
	}
	free(rbuf);
	int64_t now = srv_now_ms();
	cache_drop_expired(eng, now);
	for (struct offers_cache *c = eng->cache; c; c = c->next) {
		if (c->key_len != klen || memcmp(c->key, key, klen) != 0)
			continue;
		free(key);
		if (c->ready) {
			create_with_offers(op, c->code, c->message, c->res);
		} else {
			struct offers_waiter *w = calloc(1, sizeof(*w));
			if (!w) {
				create_reply(op, DRV_ENOMEM, "out of memory");
				create_op_free(op);
				return;
			}
			w->op = op;
			w->next = c->waiters;
			c->waiters = w;
		}
		return;
	}
	struct offers_cache *c = calloc(1, sizeof(*c));
	struct offers_waiter *w = calloc(1, sizeof(*w));
	if (!c || !w) {
		free(c);
		free(w);
		free(key);
		create_reply(op, DRV_ENOMEM, "out of memory");
		create_op_free(op);
		return;
	}
	c->eng = eng;
	c->key = key;
	c->key_len = klen;
	c->next = eng->cache;
	eng->cache = c;
	w->op = op;
	c->waiters = w;
	srv_engine_offers(eng, q, cache_filled, c);
}

void srv_engine_create(struct srv_engine *eng, const struct srv_create_request *r, srv_instance_cb cb,
                       void *ud)
{
	struct srv_instance *existing = NULL;
	char msg[600];
	if (r->idempotency_key && r->idempotency_key[0] &&
	    srv_store_instance_by_key(eng->st, r->project, r->idempotency_key, &existing) == 0) {
		/* The same request again: the first one's instance, whatever its state. */
		cb(ud, 0, "", existing);
		srv_instance_free(existing);
		return;
	}
	/*
	 * The same key, or the same name, as a create still in its offers phase,
	 * whose row is not written yet: the store cannot tell, so the list of
	 * creates in flight does. Without this, two concurrent requests with one
	 * key made two rows, and with the driver key derived from it, two rows
	 * for one machine.
	 */
	for (struct create_op *p = eng->creating; p; p = p->next_creating) {
		if (strcmp(p->in->project, r->project) != 0)
			continue;
		if (r->idempotency_key && r->idempotency_key[0] &&
		    strcmp(p->in->idempotency_key, r->idempotency_key) == 0) {
			struct create_dup *d = calloc(1, sizeof(*d));
			if (!d) {
				cb(ud, DRV_ENOMEM, "out of memory", NULL);
				return;
			}
			d->cb = cb;
			d->ud = ud;
			d->next = p->dups;
			p->dups = d;
			return;
		}
		if (r->name && r->name[0] && strcmp(p->in->name, r->name) == 0) {
			snprintf(msg, sizeof(msg),
			         "instance \"%s\" already exists in project %s (%s, being created)", r->name,
			         r->project, p->in->id);
			cb(ud, DRV_EEXIST, msg, NULL);
			return;
		}
	}
	if (r->name && r->name[0] &&
	    srv_store_instance_by_name(eng->st, r->project, r->name, true, &existing) == 0) {
		snprintf(msg, sizeof(msg), "instance \"%s\" already exists in project %s (%s, %s)", r->name,
		         r->project, existing->id, existing->status);
		srv_instance_free(existing);
		cb(ud, DRV_EEXIST, msg, NULL);
		return;
	}
	struct create_op *op = calloc(1, sizeof(*op));
	struct srv_instance *in = calloc(1, sizeof(*in));
	if (!op || !in) {
		free(op);
		free(in);
		cb(ud, DRV_ENOMEM, "out of memory", NULL);
		return;
	}
	eng->busy++;
	op->eng = eng;
	op->next_op = eng->ops;
	eng->ops = op;
	op->cb = cb;
	op->ud = ud;
	op->in = in;
	op->max_tries = r->max_tries ? r->max_tries : (unsigned)eng->cfg->max_tries;
	/* Listed by creation time from the start, before its row is written. */
	in->created_at = srv_now_ms();
	/* Every copy is checked once at the end; create_op_free frees what was made. */
	in->id = new_id("i-");
	bool ok = in->id != NULL;
	if (ok) {
		in->project = strdup(r->project);
		in->name = strdup(r->name && r->name[0] ? r->name : in->id);
		in->idempotency_key =
		    strdup(r->idempotency_key && r->idempotency_key[0] ? r->idempotency_key : in->id);
		ok = in->project && in->name && in->idempotency_key;
	}
	op->ssh_keys = ok ? calloc(r->n_ssh_keys + 1, sizeof(char *)) : NULL;
	ok = op->ssh_keys != NULL;
	for (size_t i = 0; ok && i < r->n_ssh_keys; i++) {
		ok = (op->ssh_keys[i] = strdup(r->ssh_keys[i])) != NULL;
		if (ok)
			op->n_ssh++;
	}
	if (ok && op->n_ssh)
		ok = (in->record = record_with_keys(op->ssh_keys, op->n_ssh)) != NULL;
	if (ok && r->requirements)
		ok = (in->requirements = srv__pack(&r->requirements->base, &in->requirements_len)) != NULL;
	op->only_backends = ok ? calloc(r->n_backends + 1, sizeof(char *)) : NULL;
	ok = ok && op->only_backends;
	for (size_t i = 0; ok && i < r->n_backends; i++) {
		ok = (op->only_backends[i] = strdup(r->backends[i])) != NULL;
		if (ok)
			op->n_only++;
	}
	if (!ok) {
		create_reply(op, DRV_ENOMEM, "out of memory");
		create_op_free(op);
		return;
	}
	op->next_creating = eng->creating;
	eng->creating = op;
	op->listed = true;
	struct srv_offers_query q = {.project = r->project,
	                             .requirements = r->requirements,
	                             .required_features = r->required_features,
	                             .backends = (const char *const *)op->only_backends,
	                             .n_backends = op->n_only};
	create_get_offers(op, &q);
}

/* Resumes an instance left "creating": the same offer, the same attempt number, the same key. */
void srv__create_resume(struct srv_engine *eng, struct srv_instance *in)
{
	struct create_op *op = calloc(1, sizeof(*op));
	if (!op) {
		/* Its lease is written: reconciliation picks it up again when the lease runs out. */
		srv_warn("engine", "instance %s: out of memory resuming it; trying again later", in->id);
		srv_instance_free(in);
		return;
	}
	eng->busy++;
	op->eng = eng;
	op->next_op = eng->ops;
	eng->ops = op;
	op->in = in;
	op->resumed = true;
	op->attempt_no = attempt_count(in);
	if (op->attempt_no == 0)
		op->attempt_no = 1;
	op->cur_offer = in->offer ? drover__compute__v1__offer__unpack(NULL, in->offer_len, in->offer) : NULL;
	/* Keys that cannot be copied for lack of memory must not become a machine without them. */
	size_t nk = in->record ? in->record->n_ssh_public_keys : 0;
	op->ssh_keys = calloc(nk + 1, sizeof(char *));
	bool ok = op->ssh_keys != NULL;
	for (size_t i = 0; ok && i < nk; i++) {
		ok = (op->ssh_keys[op->n_ssh] = strdup(in->record->ssh_public_keys[i])) != NULL;
		if (ok)
			op->n_ssh++;
	}
	if (!ok) {
		srv_warn("engine", "instance %s: out of memory resuming it; trying again later", in->id);
		create_op_free(op);
		return;
	}
	if (in->termination_acked_at) {
		/* Its clean-up asked to terminate the machine: the clean-up goes on, never the create. */
		srv_info("engine", "instance %s: looking again for the end of attempt %u's machine on %s",
		         in->id, op->attempt_no, in->backend);
		op->bad_why = strdup("an earlier answer, see its instance.bad_answer event");
		cleanup_start(op);
		return;
	}
	if (!op->cur_offer) {
		create_done(op, DRV_EPRECONDITION, "the stored offer is missing or damaged", NULL);
		return;
	}
	srv_info("engine", "instance %s: resuming attempt %u on %s with the same idempotency key", in->id,
	         op->attempt_no, in->backend);
	create_send(op);
}

void srv__offers_cache_clear(struct srv_engine *eng)
{
	while (eng->cache) {
		struct offers_cache *c = eng->cache;
		eng->cache = c->next;
		cache_free(c);
	}
}
