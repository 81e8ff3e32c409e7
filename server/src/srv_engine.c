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
#include "srv_log.h"
#include "srv_store.h"
#include "srv_supervisor.h"

/* Reconciliation: at most this many driver calls in flight, and per pass. */
#define RECONCILE_MAX_INFLIGHT 64
/* Uncertain create outcomes (UNAVAILABLE, DEADLINE_EXCEEDED) retried inline before reconciliation takes over.
 */
#define CREATE_INLINE_RETRIES 3
#define CREATE_RETRY_BASE_MS 200
#define TERMINATE_BACKOFF_BASE_MS 500
#define TERMINATE_BACKOFF_MAX_MS 60000
#define ORPHAN_SCAN_EVERY_MS 60000

struct srv_engine {
	uv_loop_t *loop;
	struct srv_store *st;
	struct srv_supervisor *sup;
	const struct srv_config *cfg;
	char *server_id;
	uv_timer_t timer;
	uv_timer_t kick;
	uv_prepare_t flush; /* commits the batch of writes at the end of a loop iteration */
	unsigned busy;
	unsigned reconcile_inflight;
	bool stopped;
	int64_t last_orphan_scan;
	struct offers_cache *cache; /* offers for creates, shared for a moment */
};

/*
 * Creates in bulk ask for the same offers again and again. For creates only
 * (never for GetOffers), one fan-out's answer serves every create with the
 * same query for CREATE_OFFERS_TTL_MS, and creates arriving while it runs wait
 * for it. Offers are hints anyway: the driver's answer to CreateInstance
 * decides, and a refusal falls back to the next offer.
 */
#define CREATE_OFFERS_TTL_MS 1000

struct create_op;

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

/* ---- small helpers ---- */

void srv_bcfg_init(struct srv_bcfg *b, const struct srv_backend *be)
{
	drover__compute__v1__backend_config__init(&b->cfg);
	b->cfg.config_json = be->config_json ? be->config_json : "{}";
	b->entries = calloc(be->n_secrets + 1, sizeof(*b->entries));
	b->ptrs = calloc(be->n_secrets + 1, sizeof(*b->ptrs));
	for (size_t i = 0; i < be->n_secrets; i++) {
		drover__compute__v1__backend_config__secrets_entry__init(&b->entries[i]);
		b->entries[i].key = be->secrets[i].name;
		b->entries[i].value = be->secrets[i].value;
		b->ptrs[i] = &b->entries[i];
	}
	b->cfg.n_secrets = be->n_secrets;
	b->cfg.secrets = b->ptrs;
}

void srv_bcfg_clear(struct srv_bcfg *b)
{
	free(b->entries);
	free(b->ptrs);
	b->entries = NULL;
	b->ptrs = NULL;
}

static bool is_uncertain(int code)
{
	/* The driver may or may not have acted: only a retry with the same key can tell. */
	return code == DRV_EUNAVAILABLE || code == DRV_EDEADLINE || code == DRV_EUNKNOWN ||
	       code == DRV_EINTERNAL || code == DRV_ECANCELLED || code == DRV_EABORTED || code < -16;
}

static void *pack(const ProtobufCMessage *m, size_t *len)
{
	*len = protobuf_c_message_get_packed_size(m);
	unsigned char *buf = malloc(*len ? *len : 1);
	protobuf_c_message_pack(m, buf);
	return buf;
}

static void set_str(char **dst, const char *src)
{
	free(*dst);
	*dst = src ? strdup(src) : NULL;
}

static void set_blob(unsigned char **dst, size_t *dlen, const ProtobufCMessage *m)
{
	free(*dst);
	*dst = m ? pack(m, dlen) : NULL;
	if (!m)
		*dlen = 0;
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
	if (level >= SRV_EVENT_WARNING)
		srv_log(level == SRV_EVENT_ERROR ? SRV_LOG_ERROR : SRV_LOG_WARN, "engine", "%s%s%s: %s", kind,
		        instance ? " " : "", instance ? instance : "", msg);
	else
		srv_debug("engine", "%s%s%s: %s", kind, instance ? " " : "", instance ? instance : "", msg);
}

static void put_or_log(struct srv_engine *eng, struct srv_instance *in)
{
	if (srv_store_instance_put(eng->st, in) < 0)
		srv_error("engine", "instance %s: cannot write state %s: %s", in->id, in->status,
		          srv_store_errmsg(eng->st));
}

/* ---- offers ---- */

struct fanout;

struct fan_slot {
	struct fanout *fo;
	size_t idx;
	int64_t started;
	bool done;
	bool features_ok;
};

struct fanout {
	struct srv_engine *eng;
	srv_offers_cb cb;
	void *ud;
	drv_requirements *req; /* own copy */
	drv_features required;
	int timeout_ms;
	struct srv_offers_result *res;
	struct fan_slot *slots;
	size_t n;
	size_t outstanding; /* callbacks not yet arrived */
	size_t answered;    /* slots done (answered or timed out) */
	bool finished;
	uv_timer_t *deadline;
	int64_t t_start, t_done;
};

static void fanout_maybe_free(struct fanout *fo)
{
	if (!fo->finished || fo->outstanding > 0)
		return;
	if (fo->req)
		protobuf_c_message_free_unpacked(&fo->req->base, NULL);
	free(fo->slots);
	free(fo);
}

/* The first 8 bytes of s, big-endian: orders like strcmp on those bytes. */
static uint64_t prefix_key(const char *s)
{
	uint64_t k = 0;
	for (int i = 0; i < 8; i++) {
		k <<= 8;
		if (s && *s)
			k |= (unsigned char)*s++;
	}
	return k;
}

static int cmp_items(const void *a, const void *b)
{
	const struct srv_offer_item *x = a, *y = b;
	/* Keys copied into the items: most comparisons never touch the scattered offers. */
	if (x->price != y->price)
		return x->price < y->price ? -1 : 1;
	/*
	 * Ties: the same offer (type, region) of several backends sits together,
	 * by backend name, so a refused offer falls back to the same machine
	 * elsewhere before a different one.
	 */
	if (x->type_key != y->type_key)
		return x->type_key < y->type_key ? -1 : 1;
	int c = strcmp(x->offer->instance_type ? x->offer->instance_type : "",
	               y->offer->instance_type ? y->offer->instance_type : "");
	if (c)
		return c;
	if (x->region_key != y->region_key)
		return x->region_key < y->region_key ? -1 : 1;
	c = strcmp(x->offer->region ? x->offer->region : "", y->offer->region ? y->offer->region : "");
	if (c)
		return c;
	return strcmp(x->backend, y->backend);
}

static void deadline_closed(uv_handle_t *h)
{
	free(h);
}

static void fanout_finish(struct fanout *fo)
{
	struct srv_offers_result *res = fo->res;
	if (fo->finished)
		return;
	fo->finished = true;
	fo->t_done = srv_now_ms();
	srv_debug("engine", "offers: every backend answered after %lld ms",
	          (long long)(fo->t_done - fo->t_start));
	if (fo->deadline) {
		uv_timer_stop(fo->deadline);
		uv_close((uv_handle_t *)fo->deadline, deadline_closed);
		fo->deadline = NULL;
	}
	for (size_t i = 0; i < fo->n; i++) {
		struct srv_backend_result *br = &res->backends[i];
		if (!fo->slots[i].done) {
			char msg[200];
			br->code = DRV_EDEADLINE;
			br->elapsed_ms = (unsigned)fo->timeout_ms;
			snprintf(msg, sizeof(msg), "no answer within the %d ms per-backend deadline",
			         fo->timeout_ms);
			set_str(&br->message, msg);
		}
	}
	/* Merge: every offer of every answering backend that passes the filters. */
	size_t total = 0;
	for (size_t i = 0; i < res->n_resps; i++)
		if (res->resps[i])
			total += ((drv_get_offers_response *)res->resps[i])->n_offers;
	res->items = calloc(total + 1, sizeof(*res->items));
	size_t n = 0;
	for (size_t i = 0; i < fo->n; i++) {
		drv_get_offers_response *r = (drv_get_offers_response *)res->resps[i];
		if (!r)
			continue;
		for (size_t k = 0; k < r->n_offers; k++) {
			const drv_offer *o = r->offers[k];
			/* Drivers filter too; the server checks again so one sloppy driver cannot widen a
			 * query. */
			if (!o || !drv_offer_matches(o, fo->req))
				continue;
			res->items[n].backend = res->backends[i].backend;
			res->items[n].backend_type = res->backends[i].type;
			res->items[n].offer = o;
			res->items[n].price = o->price_per_hour;
			res->items[n].type_key = prefix_key(o->instance_type);
			res->items[n].region_key = prefix_key(o->region);
			n++;
		}
	}
	res->n_items = n;
	qsort(res->items, n, sizeof(*res->items), cmp_items);
	srv_debug("engine", "offers: %zu backends, %zu of %zu offers kept, merged and sorted in %lld ms",
	          fo->n, n, total, (long long)(srv_now_ms() - fo->t_done));
	fo->res = NULL;
	fo->cb(fo->ud, 0, "", res);
	fanout_maybe_free(fo);
}

static void deadline_cb(uv_timer_t *t)
{
	fanout_finish(t->data);
}

static void slot_done(struct fan_slot *s)
{
	struct fanout *fo = s->fo;
	s->done = true;
	if (++fo->answered == fo->n)
		fanout_finish(fo);
}

static void offers_done(void *ud, int code, const char *message, ProtobufCMessage *resp)
{
	struct fan_slot *s = ud;
	struct fanout *fo = s->fo;
	fo->outstanding--;
	if (fo->finished) {
		/* Too late: already reported as DEADLINE_EXCEEDED. */
		if (resp)
			protobuf_c_message_free_unpacked(resp, NULL);
		fanout_maybe_free(fo);
		return;
	}
	struct srv_backend_result *br = &fo->res->backends[s->idx];
	br->code = code;
	br->elapsed_ms = (unsigned)(srv_now_ms() - s->started);
	set_str(&br->message, code ? message : "");
	if (code == 0 && resp) {
		fo->res->resps[s->idx] = resp;
		br->offer_count = (unsigned)((drv_get_offers_response *)resp)->n_offers;
	} else if (resp) {
		protobuf_c_message_free_unpacked(resp, NULL);
	}
	slot_done(s);
}

static void send_get_offers(struct fan_slot *s)
{
	struct fanout *fo = s->fo;
	struct srv_backend *be = fo->res->bes[s->idx];
	struct srv_bcfg bc;
	drv_get_offers_request req = DROVER__COMPUTE__V1__GET_OFFERS_REQUEST__INIT;
	srv_bcfg_init(&bc, be);
	req.config = &bc.cfg;
	req.requirements = fo->req;
	fo->outstanding++;
	srv_supervisor_call(fo->eng->sup, be->type, "GetOffers", &req.base, fo->timeout_ms, offers_done, s);
	srv_bcfg_clear(&bc);
}

static void features_done(void *ud, int code, const char *message, drv_features features)
{
	struct fan_slot *s = ud;
	struct fanout *fo = s->fo;
	fo->outstanding--;
	if (fo->finished) {
		fanout_maybe_free(fo);
		return;
	}
	struct srv_backend_result *br = &fo->res->backends[s->idx];
	if (code != 0) {
		br->code = code;
		br->elapsed_ms = (unsigned)(srv_now_ms() - s->started);
		set_str(&br->message, message);
		slot_done(s);
		return;
	}
	drv_features missing = fo->required & ~features;
	if (missing) {
		char names[300] = "";
		for (int f = 1; f < 64; f++) {
			if (!(missing & DRV_FEATURE_BIT(f)))
				continue;
			const char *nm = drv_feature_name(f);
			size_t l = strlen(names);
			snprintf(names + l, sizeof(names) - l, "%s%s", l ? ", " : "", nm ? nm : "?");
		}
		char msg[400];
		snprintf(msg, sizeof(msg), "skipped: lacks required feature(s) %s", names);
		br->code = DRV_EUNIMPLEMENTED;
		set_str(&br->message, msg);
		slot_done(s);
		return;
	}
	send_get_offers(s);
}

void srv_engine_offers(struct srv_engine *eng, const struct srv_offers_query *q, srv_offers_cb cb, void *ud)
{
	struct srv_backend **bes = NULL;
	size_t n_all = 0;
	if (srv_store_backend_list(eng->st, q->project, &bes, &n_all) < 0) {
		cb(ud, DRV_EINTERNAL, srv_store_errmsg(eng->st), NULL);
		return;
	}
	/* Keep only the named backends, if any; sorted by name already (the store's order). */
	size_t n = 0;
	for (size_t i = 0; i < n_all; i++) {
		bool keep = q->n_backends == 0;
		for (size_t k = 0; k < q->n_backends && !keep; k++)
			keep = strcmp(bes[i]->name, q->backends[k]) == 0;
		if (keep)
			bes[n++] = bes[i];
		else
			srv_backend_free(bes[i]);
	}
	struct fanout *fo = calloc(1, sizeof(*fo));
	struct srv_offers_result *res = calloc(1, sizeof(*res));
	fo->eng = eng;
	fo->cb = cb;
	fo->ud = ud;
	fo->required = q->required_features;
	fo->timeout_ms = q->timeout_ms > 0 ? q->timeout_ms : eng->cfg->offers_timeout_ms;
	if (q->requirements) {
		size_t len;
		void *buf = pack(&q->requirements->base, &len);
		fo->req = drover__compute__v1__requirements__unpack(NULL, len, buf);
		free(buf);
	}
	fo->res = res;
	fo->n = n;
	fo->t_start = srv_now_ms();
	fo->slots = calloc(n + 1, sizeof(*fo->slots));
	res->bes = bes;
	res->n_bes = n;
	res->backends = calloc(n + 1, sizeof(*res->backends));
	res->n_backends = n;
	res->resps = calloc(n + 1, sizeof(*res->resps));
	res->n_resps = n;
	if (n == 0) {
		fanout_finish(fo);
		return;
	}
	fo->deadline = malloc(sizeof(*fo->deadline));
	uv_timer_init(eng->loop, fo->deadline);
	fo->deadline->data = fo;
	/* A little slack over the per-call deadline so a driver's own DEADLINE_EXCEEDED usually arrives
	 * first. */
	uv_timer_start(fo->deadline, deadline_cb, (uint64_t)fo->timeout_ms + 50, 0);
	int64_t now = srv_now_ms();
	for (size_t i = 0; i < n; i++) {
		struct fan_slot *s = &fo->slots[i];
		s->fo = fo;
		s->idx = i;
		s->started = now;
		res->backends[i].backend = strdup(bes[i]->name);
		res->backends[i].type = strdup(bes[i]->type);
	}
	/* Every backend asked at once; each slot finishes on its own. */
	for (size_t i = 0; i < n && !fo->finished; i++) {
		struct fan_slot *s = &fo->slots[i];
		if (fo->required) {
			struct srv_bcfg bc;
			srv_bcfg_init(&bc, bes[i]);
			fo->outstanding++;
			srv_supervisor_features(eng->sup, bes[i]->type, &bc.cfg, features_done, s);
			srv_bcfg_clear(&bc);
		} else {
			send_get_offers(s);
		}
	}
}

void srv_offers_result_free(struct srv_offers_result *res)
{
	if (!res)
		return;
	for (size_t i = 0; i < res->n_resps; i++)
		if (res->resps[i])
			protobuf_c_message_free_unpacked(res->resps[i], NULL);
	free(res->resps);
	for (size_t i = 0; i < res->n_backends; i++) {
		free(res->backends[i].backend);
		free(res->backends[i].type);
		free(res->backends[i].message);
	}
	free(res->backends);
	srv_backend_list_free(res->bes, res->n_bes);
	free(res->items);
	free(res);
}

/* ---- attempts, as a JSON array in the instance row ---- */

static void attempt_begin(struct srv_instance *in, unsigned number, const char *backend, const drv_offer *o)
{
	json_t *arr = json_loads(in->attempts_json ? in->attempts_json : "[]", 0, NULL);
	if (!json_is_array(arr)) {
		json_decref(arr);
		arr = json_array();
	}
	json_t *a =
	    json_pack("{s:i, s:s, s:s, s:s, s:f, s:s, s:s, s:I, s:I}", "number", (int)number, "backend",
	              backend, "instance_type", o->instance_type ? o->instance_type : "", "region",
	              o->region ? o->region : "", "price_per_hour", o->price_per_hour, "code", "", "message",
	              "", "started_unix_ms", (json_int_t)srv_now_ms(), "finished_unix_ms", (json_int_t)0);
	json_array_append_new(arr, a);
	free(in->attempts_json);
	in->attempts_json = json_dumps(arr, JSON_COMPACT);
	json_decref(arr);
}

/* Sets the outcome of the last attempt; code "" means in flight again. */
static void attempt_end(struct srv_instance *in, const char *code, const char *message)
{
	json_t *arr = json_loads(in->attempts_json ? in->attempts_json : "[]", 0, NULL);
	size_t n = json_is_array(arr) ? json_array_size(arr) : 0;
	if (n == 0) {
		json_decref(arr);
		return;
	}
	json_t *a = json_array_get(arr, n - 1);
	json_object_set_new(a, "code", json_string(code));
	json_object_set_new(a, "message", json_string(message ? message : ""));
	json_object_set_new(a, "finished_unix_ms", json_integer(code[0] ? srv_now_ms() : 0));
	free(in->attempts_json);
	in->attempts_json = json_dumps(arr, JSON_COMPACT);
	json_decref(arr);
}

static unsigned attempt_count(const struct srv_instance *in)
{
	json_t *arr = json_loads(in->attempts_json ? in->attempts_json : "[]", 0, NULL);
	unsigned n = json_is_array(arr) ? (unsigned)json_array_size(arr) : 0;
	json_decref(arr);
	return n;
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
};

static void create_attempt(struct create_op *op);
static void create_send(struct create_op *op);
static void retry_timer_cb(uv_timer_t *t);
static void timer_cb(uv_timer_t *t);

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
	if (op->req)
		protobuf_c_message_free_unpacked(&op->req->base, NULL);
	if (op->resumed && op->cur_offer)
		protobuf_c_message_free_unpacked(&op->cur_offer->base, NULL);
	if (op->retry_timer)
		uv_close((uv_handle_t *)op->retry_timer, timer_closed);
	srv_instance_free(op->in);
	op->eng->busy--;
	free(op);
}

static void create_reply(struct create_op *op, int code, const char *message)
{
	if (op->cb) {
		op->cb(op->ud, code, message, code == 0 ? op->in : NULL);
		op->cb = NULL;
	}
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
			protobuf_c_message_free_unpacked(resp, NULL);
		create_reply(op, DRV_EUNAVAILABLE,
		             "the server is shutting down; the instance is resumed at the next start");
		create_op_free(op);
		return;
	}
	if (code == 0) {
		drv_create_instance_response *r = (drv_create_instance_response *)resp;
		drv_provisioning_data *pd = r ? r->data : NULL;
		bool has_addr =
		    pd && ((pd->hostname && pd->hostname[0]) || (pd->internal_ip && pd->internal_ip[0]));
		set_blob(&in->provisioning, &in->provisioning_len, pd ? &pd->base : NULL);
		set_str(&in->status, has_addr ? SRV_ST_RUNNING : SRV_ST_PROVISIONING);
		/* Without an address, reconciliation polls GetInstance. */
		in->next_check_at = has_addr ? 0 : srv_now_ms() + eng->cfg->reconcile_interval_ms;
		set_str(&in->last_error, NULL);
		attempt_end(in, "OK", "");
		/* State and event in one commit. */
		srv_store_begin(eng->st);
		put_or_log(eng, in);
		srv_engine_event(eng, SRV_EVENT_INFO, "instance.created", in->project, in->id, in->backend,
		                 in->backend_type, "created on %s as %s (attempt %u)", in->backend,
		                 pd && pd->instance_id ? pd->instance_id : "?", op->attempt_no);
		srv_store_commit(eng->st);
		if (resp)
			protobuf_c_message_free_unpacked(resp, NULL);
		create_reply(op, 0, "");
		create_op_free(op);
		return;
	}
	if (resp)
		protobuf_c_message_free_unpacked(resp, NULL);
	snprintf(msg, sizeof(msg), "%s: %s", drv_error_name(code), message);
	if (is_uncertain(code)) {
		/* Maybe made, maybe not: ask again with the same key, which never makes a second machine. */
		attempt_end(in, drv_error_name(code), message);
		set_str(&in->last_error, msg);
		if (op->uncertain < CREATE_INLINE_RETRIES && !op->resumed) {
			uint64_t delay = (uint64_t)CREATE_RETRY_BASE_MS << op->uncertain;
			op->uncertain++;
			put_or_log(eng, in);
			srv_engine_event(eng, SRV_EVENT_WARNING, "instance.attempt_uncertain", in->project,
			                 in->id, in->backend, in->backend_type,
			                 "attempt %u on %s: %s; retrying with the same key in %llu ms",
			                 op->attempt_no, in->backend, msg, (unsigned long long)delay);
			if (!op->retry_timer) {
				op->retry_timer = malloc(sizeof(*op->retry_timer));
				uv_timer_init(eng->loop, op->retry_timer);
				op->retry_timer->data = op;
			}
			uv_timer_start(op->retry_timer, retry_timer_cb, delay, 0);
			return;
		}
		/* Reconciliation takes over; the caller sees "creating" with the error. */
		in->next_check_at = srv_now_ms() + 5000;
		put_or_log(eng, in);
		srv_engine_event(eng, SRV_EVENT_WARNING, "instance.attempt_uncertain", in->project, in->id,
		                 in->backend, in->backend_type,
		                 "attempt %u on %s: %s; reconciliation will retry with the same key",
		                 op->attempt_no, in->backend, msg);
		create_reply(op, 0, "");
		create_op_free(op);
		return;
	}
	/* A definite refusal: no machine was made. Try the next offer. */
	attempt_end(in, drv_error_name(code), message);
	srv_engine_event(eng, SRV_EVENT_WARNING, "instance.attempt_failed", in->project, in->id, in->backend,
	                 in->backend_type, "attempt %u on %s (%s): %s", op->attempt_no, in->backend,
	                 op->cur_offer && op->cur_offer->instance_type ? op->cur_offer->instance_type : "?",
	                 msg);
	if (!op->resumed && op->tries < op->n_cands && op->tries < op->max_tries) {
		put_or_log(eng, in);
		create_attempt(op);
		return;
	}
	set_str(&in->status, SRV_ST_FAILED);
	char fmsg[1700];
	snprintf(fmsg, sizeof(fmsg), "%u attempt(s) failed; last: %s", attempt_count(in), msg);
	set_str(&in->last_error, fmsg);
	in->next_check_at = 0;
	put_or_log(eng, in);
	srv_engine_event(eng, SRV_EVENT_ERROR, "instance.failed", in->project, in->id, in->backend,
	                 in->backend_type, "%s", fmsg);
	create_reply(op, 0, "");
	create_op_free(op);
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
	attempt_end(op->in, "", "");
	put_or_log(op->eng, op->in);
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
	struct srv_bcfg bc;
	srv_bcfg_init(&bc, be);
	drv_create_instance_request req = DROVER__COMPUTE__V1__CREATE_INSTANCE_REQUEST__INIT;
	drv_instance_configuration ic = DROVER__COMPUTE__V1__INSTANCE_CONFIGURATION__INIT;
	drv_tag_entry tags[2], *tagp[2];
	for (int i = 0; i < 2; i++) {
		drover__compute__v1__instance_configuration__tags_entry__init(&tags[i]);
		tagp[i] = &tags[i];
	}
	/* The server's tags let ListInstances find machines the store forgot (orphans). */
	tags[0].key = "drover-server";
	tags[0].value = eng->server_id;
	tags[1].key = "drover-instance";
	tags[1].value = in->id;
	ic.name = in->name;
	ic.project = in->project;
	ic.idempotency_key = key;
	ic.n_tags = 2;
	ic.tags = tagp;
	ic.n_ssh_public_keys = op->n_ssh;
	ic.ssh_public_keys = op->ssh_keys;
	req.config = &bc.cfg;
	req.offer = op->cur_offer;
	req.instance = &ic;
	srv_supervisor_call(eng->sup, be->type, "CreateInstance", &req.base, eng->cfg->call_timeout_ms,
	                    create_done, op);
	srv_bcfg_clear(&bc);
	srv_backend_free(be);
}

static void create_attempt(struct create_op *op)
{
	struct srv_instance *in = op->in;
	struct cand *c = &op->cands[op->tries++];
	op->uncertain = 0;
	op->attempt_no = attempt_count(in) + 1;
	op->cur_offer = c->offer;
	set_str(&in->backend, c->backend);
	set_str(&in->backend_type, c->type);
	set_blob(&in->offer, &in->offer_len, &c->offer->base);
	set_str(&in->status, SRV_ST_CREATING);
	in->next_check_at = 0;
	attempt_begin(in, op->attempt_no, c->backend, c->offer);
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
	RAND_bytes(rnd, sizeof(rnd));
	snprintf(id, 40, "%s%02x%02x%02x%02x%02x%02x%02x%02x", prefix, rnd[0], rnd[1], rnd[2], rnd[3], rnd[4],
	         rnd[5], rnd[6], rnd[7]);
	return id;
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
	op->cands = calloc(op->max_tries + 1, sizeof(*op->cands));
	for (size_t i = 0; i < res->n_items && op->n_cands < op->max_tries; i++) {
		const drv_offer *o = res->items[i].offer;
		struct cand *c = &op->cands[op->n_cands++];
		size_t len;
		void *buf = pack(&o->base, &len);
		c->offer = drover__compute__v1__offer__unpack(NULL, len, buf);
		free(buf);
		c->backend = strdup(res->items[i].backend);
		c->type = strdup(res->items[i].backend_type);
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
	} /*
	   * The first write records the instance already "creating" with its first
	   * attempt, before any provisioning call: a separate "pending" write
	   * would only repeat it in the same loop turn.
	   */
	(void)eng;
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
	while (rev) {
		struct offers_waiter *n = rev->next;
		create_with_offers(rev->op, c->code, c->message, c->res);
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
	unsigned char *rbuf = q->requirements ? pack(&q->requirements->base, &rlen) : NULL;
	size_t klen = strlen(q->project) + 1 + sizeof(q->required_features) + rlen;
	for (size_t i = 0; i < q->n_backends; i++)
		klen += strlen(q->backends[i]) + 1;
	char *key = malloc(klen + 1);
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
			w->op = op;
			w->next = c->waiters;
			c->waiters = w;
		}
		return;
	}
	struct offers_cache *c = calloc(1, sizeof(*c));
	c->eng = eng;
	c->key = key;
	c->key_len = klen;
	c->next = eng->cache;
	eng->cache = c;
	struct offers_waiter *w = calloc(1, sizeof(*w));
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
	eng->busy++;
	op->eng = eng;
	op->cb = cb;
	op->ud = ud;
	op->in = in;
	op->max_tries = r->max_tries ? r->max_tries : (unsigned)eng->cfg->max_tries;
	in->id = new_id("i-");
	in->project = strdup(r->project);
	in->name = strdup(r->name && r->name[0] ? r->name : in->id);
	in->idempotency_key =
	    strdup(r->idempotency_key && r->idempotency_key[0] ? r->idempotency_key : in->id);
	in->attempts_json = strdup("[]");
	json_t *keys = json_array();
	op->ssh_keys = calloc(r->n_ssh_keys + 1, sizeof(char *));
	for (size_t i = 0; i < r->n_ssh_keys; i++) {
		op->ssh_keys[i] = strdup(r->ssh_keys[i]);
		json_array_append_new(keys, json_string(r->ssh_keys[i]));
	}
	op->n_ssh = r->n_ssh_keys;
	in->ssh_keys_json = json_dumps(keys, JSON_COMPACT);
	json_decref(keys);
	if (r->requirements)
		in->requirements = pack(&r->requirements->base, &in->requirements_len);
	op->only_backends = calloc(r->n_backends + 1, sizeof(char *));
	for (size_t i = 0; i < r->n_backends; i++)
		op->only_backends[i] = strdup(r->backends[i]);
	op->n_only = r->n_backends;
	struct srv_offers_query q = {.project = r->project,
	                             .requirements = r->requirements,
	                             .required_features = r->required_features,
	                             .backends = (const char *const *)op->only_backends,
	                             .n_backends = op->n_only};
	create_get_offers(op, &q);
}

/* Resumes an instance left "creating": the same offer, the same attempt number, the same key. */
static void create_resume(struct srv_engine *eng, struct srv_instance *in)
{
	struct create_op *op = calloc(1, sizeof(*op));
	eng->busy++;
	op->eng = eng;
	op->in = in;
	op->resumed = true;
	op->attempt_no = attempt_count(in);
	if (op->attempt_no == 0)
		op->attempt_no = 1;
	op->cur_offer = in->offer ? drover__compute__v1__offer__unpack(NULL, in->offer_len, in->offer) : NULL;
	json_t *keys = json_loads(in->ssh_keys_json ? in->ssh_keys_json : "[]", 0, NULL);
	size_t nk = json_is_array(keys) ? json_array_size(keys) : 0;
	op->ssh_keys = calloc(nk + 1, sizeof(char *));
	for (size_t i = 0; i < nk; i++) {
		const char *k = json_string_value(json_array_get(keys, i));
		op->ssh_keys[op->n_ssh++] = strdup(k ? k : "");
	}
	json_decref(keys);
	if (!op->cur_offer) {
		create_done(op, DRV_EPRECONDITION, "the stored offer is missing or damaged", NULL);
		return;
	}
	srv_info("engine", "instance %s: resuming attempt %u on %s with the same idempotency key", in->id,
	         op->attempt_no, in->backend);
	create_send(op);
}

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

static void kick(struct srv_engine *eng)
{
	if (!eng->stopped)
		uv_timer_start(&eng->kick, timer_cb, 0, 0);
}

static void get_instance_done(void *ud, int code, const char *message, ProtobufCMessage *resp)
{
	struct rec_op *op = ud;
	struct srv_engine *eng = op->eng;
	struct srv_instance *cur = NULL;
	if (eng->stopped || srv_store_instance_get(eng->st, op->in->id, &cur) != 0) {
		if (resp)
			protobuf_c_message_free_unpacked(resp, NULL);
		rec_op_free(op);
		return;
	}
	/* The row may have moved on meanwhile (a terminate request): only a still-provisioning row is
	 * updated. */
	if (strcmp(cur->status, SRV_ST_PROVISIONING) != 0) {
		srv_instance_free(cur);
		if (resp)
			protobuf_c_message_free_unpacked(resp, NULL);
		rec_op_free(op);
		return;
	}
	if (code == 0 && resp) {
		drv_provisioning_data *pd = ((drv_get_instance_response *)resp)->data;
		bool has_addr =
		    pd && ((pd->hostname && pd->hostname[0]) || (pd->internal_ip && pd->internal_ip[0]));
		if (pd)
			set_blob(&cur->provisioning, &cur->provisioning_len, &pd->base);
		if (has_addr) {
			set_str(&cur->status, SRV_ST_RUNNING);
			cur->next_check_at = 0;
			set_str(&cur->last_error, NULL);
			srv_engine_event(eng, SRV_EVENT_INFO, "instance.running", cur->project, cur->id,
			                 cur->backend, cur->backend_type, "has an address: %s",
			                 pd->hostname && pd->hostname[0] ? pd->hostname : pd->internal_ip);
		} else {
			cur->next_check_at = srv_now_ms() + eng->cfg->reconcile_interval_ms;
		}
	} else {
		char msg[1200];
		snprintf(msg, sizeof(msg), "GetInstance: %s: %s", drv_error_name(code), message);
		set_str(&cur->last_error, msg);
		/* Polling goes on with a slower pace; it never decides the machine is gone on its own. */
		cur->next_check_at = srv_now_ms() + 5 * (int64_t)eng->cfg->reconcile_interval_ms;
	}
	put_or_log(eng, cur);
	srv_instance_free(cur);
	if (resp)
		protobuf_c_message_free_unpacked(resp, NULL);
	rec_op_free(op);
}

static void terminate_done(void *ud, int code, const char *message, ProtobufCMessage *resp)
{
	struct rec_op *op = ud;
	struct srv_engine *eng = op->eng;
	struct srv_instance *in = op->in;
	if (resp)
		protobuf_c_message_free_unpacked(resp, NULL);
	if (eng->stopped) {
		/* Still "terminating" in the store: the next start retries. */
		rec_op_free(op);
		return;
	}
	if (code == 0) {
		set_str(&in->status, SRV_ST_TERMINATED);
		in->terminated_at = srv_now_ms();
		in->next_check_at = 0;
		set_str(&in->last_error, NULL);
		srv_store_begin(eng->st);
		put_or_log(eng, in);
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
		set_str(&in->last_error, msg);
		in->next_check_at = srv_now_ms() + delay;
		put_or_log(eng, in);
		srv_engine_event(eng, SRV_EVENT_ERROR, "instance.termination_failed", in->project, in->id,
		                 in->backend, in->backend_type, "%s; retrying in %lld ms", msg,
		                 (long long)delay);
	}
	rec_op_free(op);
}

static void reconcile_one(struct srv_engine *eng, struct srv_instance *in)
{
	int64_t now = srv_now_ms();
	if (strcmp(in->status, SRV_ST_CREATING) == 0) {
		/* A lease: the row is not picked again while this call is out. */
		in->next_check_at = now + eng->cfg->call_timeout_ms + 5000;
		put_or_log(eng, in);
		create_resume(eng, in);
		return;
	}
	bool prov = strcmp(in->status, SRV_ST_PROVISIONING) == 0;
	bool term = strcmp(in->status, SRV_ST_TERMINATING) == 0;
	if (!prov && !term) {
		in->next_check_at = 0;
		put_or_log(eng, in);
		srv_instance_free(in);
		return;
	}
	drv_provisioning_data *pd =
	    in->provisioning
	        ? drover__compute__v1__provisioning_data__unpack(NULL, in->provisioning_len, in->provisioning)
	        : NULL;
	if (!pd) {
		if (term) {
			/* No driver call ever made a machine for it (no provisioning data): nothing to
			 * terminate. */
			set_str(&in->status, SRV_ST_TERMINATED);
			in->terminated_at = now;
			in->next_check_at = 0;
			put_or_log(eng, in);
			srv_engine_event(eng, SRV_EVENT_INFO, "instance.terminated", in->project, in->id,
			                 in->backend, in->backend_type, "no machine was ever made for it");
		} else {
			in->next_check_at = 0;
			set_str(&in->last_error, "provisioning data missing or damaged");
			put_or_log(eng, in);
		}
		srv_instance_free(in);
		return;
	}
	struct srv_backend *be = NULL;
	int rc = srv_store_instance_backend(eng->st, in, &be);
	if (rc != 0) {
		char msg[600];
		snprintf(msg, sizeof(msg), "backend %s is gone (%s); cannot reach the driver", in->backend,
		         rc < 0 ? srv_store_errmsg(eng->st) : "removed");
		set_str(&in->last_error, msg);
		in->next_check_at = now + 60000;
		put_or_log(eng, in);
		protobuf_c_message_free_unpacked(&pd->base, NULL);
		srv_instance_free(in);
		return;
	}
	in->next_check_at = now + eng->cfg->call_timeout_ms + 5000;
	put_or_log(eng, in);
	struct rec_op *op = calloc(1, sizeof(*op));
	op->eng = eng;
	op->in = in;
	eng->busy++;
	eng->reconcile_inflight++;
	struct srv_bcfg bc;
	srv_bcfg_init(&bc, be);
	if (prov) {
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
			/* Adopted and shown, never silently dropped: it may be billed. */
			struct srv_instance in = {
			    .id = (char *)iid,
			    .project = op->project,
			    .backend = op->backend,
			    .backend_type = op->type,
			    .name = li->name && li->name[0] ? li->name : (char *)iid,
			    .status = SRV_ST_RUNNING,
			    .idempotency_key = li->idempotency_key ? li->idempotency_key : "",
			    .last_error = "orphan: found by ListInstances with this server's tag "
			                  "but missing from the store; adopted"};
			size_t len = 0;
			if (li->data)
				in.provisioning = pack(&li->data->base, &len);
			in.provisioning_len = len;
			put_or_log(eng, &in);
			free(in.provisioning);
			srv_engine_event(
			    eng, SRV_EVENT_WARNING, "instance.orphan_adopted", op->project, iid, op->backend,
			    op->type, "machine %s on backend %s was not in the store; adopted",
			    li->data && li->data->instance_id ? li->data->instance_id : "?", op->backend);
		}
	}
	if (resp)
		protobuf_c_message_free_unpacked(resp, NULL);
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
		op->eng = eng;
		op->project = strdup(bes[i]->project);
		op->backend = strdup(bes[i]->name);
		op->type = strdup(bes[i]->type);
		struct srv_bcfg bc;
		srv_bcfg_init(&bc, bes[i]);
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
	for (size_t i = 0; i < n; i++)
		reconcile_one(eng, due[i]);
	srv_store_commit(eng->st);
	free(due);
	/* A full batch means more may be due: go again on the next loop turn. */
	if (n == room)
		kick(eng);
	if (srv_now_ms() - eng->last_orphan_scan >= ORPHAN_SCAN_EVERY_MS)
		srv_engine_find_orphans(eng);
}

static void timer_cb(uv_timer_t *t)
{
	srv_engine_reconcile_now(t->data);
}

int srv_engine_terminate(struct srv_engine *eng, const char *id, struct srv_instance **out)
{
	struct srv_instance *in = NULL;
	int rc = srv_store_instance_get(eng->st, id, &in);
	if (rc != 0)
		return rc;
	if (strcmp(in->status, SRV_ST_PENDING) == 0) {
		/* No driver call was ever made for it. */
		set_str(&in->status, SRV_ST_FAILED);
		set_str(&in->last_error, "terminated before any attempt");
		put_or_log(eng, in);
	} else if (strcmp(in->status, SRV_ST_PROVISIONING) == 0 || strcmp(in->status, SRV_ST_RUNNING) == 0 ||
	           (strcmp(in->status, SRV_ST_CREATING) == 0 && in->provisioning)) {
		set_str(&in->status, SRV_ST_TERMINATING);
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
		kick(eng);
	}
	*out = in;
	return 0;
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
	if (srv_store_batch_commit(eng->st) < 0)
		srv_error("engine", "committing a batch of state: %s", srv_store_errmsg(eng->st));
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
	uv_timer_init(loop, &eng->timer);
	eng->timer.data = eng;
	uv_timer_init(loop, &eng->kick);
	eng->kick.data = eng;
	uv_prepare_init(loop, &eng->flush);
	eng->flush.data = eng;
	srv_store_set_batch_hook(st, on_batch, eng);
	eng->last_orphan_scan = srv_now_ms() - ORPHAN_SCAN_EVERY_MS + 5000;
	*out = eng;
	return 0;
}

void srv_engine_start(struct srv_engine *eng)
{
	struct srv_instance **list;
	size_t n;
	/* Left "pending" by a crash: no driver call was made, so no machine exists. */
	if (srv_store_instance_by_status(eng->st, SRV_ST_PENDING, &list, &n) == 0) {
		for (size_t i = 0; i < n; i++) {
			set_str(&list[i]->status, SRV_ST_FAILED);
			set_str(&list[i]->last_error, "the server stopped before the first attempt");
			put_or_log(eng, list[i]);
		}
		srv_instance_list_free(list, n);
	}
	/* Left "creating": resumed by reconciliation right away, with the same key. */
	if (srv_store_instance_by_status(eng->st, SRV_ST_CREATING, &list, &n) == 0) {
		srv_store_begin(eng->st);
		for (size_t i = 0; i < n; i++) {
			list[i]->next_check_at = srv_now_ms();
			put_or_log(eng, list[i]);
		}
		srv_store_commit(eng->st);
		if (n)
			srv_info("engine",
			         "%zu instance(s) were being created when the server stopped; resuming", n);
		srv_instance_list_free(list, n);
	}
	uv_timer_start(&eng->timer, timer_cb, 0, (uint64_t)eng->cfg->reconcile_interval_ms);
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
	while (eng->cache) {
		struct offers_cache *c = eng->cache;
		eng->cache = c->next;
		cache_free(c);
	}
	free(eng->server_id);
	free(eng);
}

unsigned srv_engine_busy(const struct srv_engine *eng)
{
	return eng->busy;
}
