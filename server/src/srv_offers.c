/* The offers fan-out of srv_engine: every backend at once, merged, filtered, sorted. */
#include "srv_engine.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>
#include <openssl/rand.h>

#include "drover/driver.h"
#include "drover/offer_check.h"
#include "srv_config.h"
#include "srv_engine.h"
#include "srv_engine_internal.h"
#include "srv_log.h"
#include "srv_store.h"
#include "srv_supervisor.h"

/* ---- small helpers ---- */

int srv_bcfg_init(struct drv_backend_config_buf *b, const struct srv_backend *be)
{
	int rc = drv_backend_config_init(b, be->config_json, be->n_secrets);
	for (size_t i = 0; rc == 0 && i < be->n_secrets; i++)
		drv_backend_config_set_secret(b, i, be->secrets[i].name, be->secrets[i].value);
	return rc;
}

/* ---- offers ---- */

struct fanout;

struct fan_slot {
	struct srv_offer_item *run; /* this backend's kept offers, sorted as they arrive */
	size_t n_run;
	struct fanout *fo;
	size_t idx;
	int64_t started;
	bool done;
	bool features_ok;
};

struct fanout {
	struct srv_engine *eng;
	char *project;
	srv_offers_cb cb;
	void *ud;
	drv_requirements *req; /* own copy */
	drv_features required;
	bool packed_offers;
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
	free(fo->project);
	for (size_t i = 0; i < fo->n; i++)
		free(fo->slots[i].run);
	free(fo->slots);
	free(fo);
}

/*
 * The first 16 bytes of s as two big-endian words, NUL-padded: they order
 * like strcmp on those bytes. Returns whether s ends within them, in which
 * case equal keys mean equal strings.
 */
static bool prefix_key(const char *s, uint64_t key[2])
{
	key[0] = key[1] = 0;
	if (!s)
		return true;
	for (int w = 0; w < 2; w++)
		for (int i = 0; i < 8; i++) {
			key[w] <<= 8;
			if (*s)
				key[w] |= (unsigned char)*s++;
		}
	return *s == 0;
}

/* The order of two names by their keys, falling back to strcmp when a name is longer than its key. */
static int cmp_name(const uint64_t xk[2], bool x_short, const char *xs, const uint64_t yk[2], bool y_short,
                    const char *ys)
{
	if (xk[0] != yk[0])
		return xk[0] < yk[0] ? -1 : 1;
	if (xk[1] != yk[1])
		return xk[1] < yk[1] ? -1 : 1;
	if (x_short && y_short)
		return 0;
	return strcmp(xs ? xs : "", ys ? ys : "");
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
	 * elsewhere before a different one. Such ties are common (every backend
	 * of a type may list the same catalog), and short names are decided by
	 * their keys alone.
	 */
	int c = cmp_name(x->type_key, x->type_short, x->offer->instance_type, y->type_key, y->type_short,
	                 y->offer->instance_type);
	if (c)
		return c;
	c = cmp_name(x->region_key, x->region_short, x->offer->region, y->region_key, y->region_short,
	             y->offer->region);
	if (c)
		return c;
	/* The slots are in backend name order (the store's), so the rank orders like the names. */
	return x->rank < y->rank ? -1 : x->rank > y->rank;
}

/* The head of one backend's sorted run in the merge. */
struct head {
	double price; /* it->price, next to the entry for the heap's comparisons */
	const struct srv_offer_item *it, *end;
};

static inline bool head_less(const struct head *a, const struct head *b)
{
	if (a->price != b->price)
		return a->price < b->price;
	return cmp_items(a->it, b->it) < 0;
}

static size_t varint_len(size_t v)
{
	size_t n = 1;
	while (v >= 0x80) {
		v >>= 7;
		n++;
	}
	return n;
}

/* Packs each kept offer of slot `s` into one buffer (res->wires[idx]), each behind its length. */
static void pack_run(struct fanout *fo, struct fan_slot *s)
{
	size_t total = 0;
	for (size_t k = 0; k < s->n_run; k++) {
		size_t body = drover__compute__v1__offer__get_packed_size(s->run[k].offer);
		s->run[k].wire_len = body; /* the body's size until the second pass */
		total += varint_len(body) + body;
	}
	uint8_t *buf = malloc(total + 1);
	if (!buf) {
		/* Without the bytes the reply packs the offers itself: slower, same answer. */
		for (size_t k = 0; k < s->n_run; k++)
			s->run[k].wire_len = 0;
		return;
	}
	uint8_t *p = buf;
	for (size_t k = 0; k < s->n_run; k++) {
		struct srv_offer_item *it = &s->run[k];
		size_t body = it->wire_len, v = body;
		it->wire = p;
		while (v >= 0x80) {
			*p++ = (uint8_t)(v | 0x80);
			v >>= 7;
		}
		*p++ = (uint8_t)v;
		p += drover__compute__v1__offer__pack(it->offer, p);
		it->wire_len = (size_t)(p - it->wire);
	}
	fo->res->wires[s->idx] = buf;
}

/* One varint at *p (before end): its value, and *p moved past it; false when cut short. */
static bool read_varint(const uint8_t **p, const uint8_t *end, uint64_t *v)
{
	uint64_t x = 0;
	for (unsigned shift = 0; shift < 64 && *p < end; shift += 7) {
		uint8_t b = *(*p)++;
		x |= (uint64_t)(b & 0x7f) << shift;
		if (!(b & 0x80)) {
			*v = x;
			return true;
		}
	}
	return false;
}

/* See srv_engine_internal.h. */
bool srv__offers_scan(const uint8_t *p, size_t len, size_t n, struct srv__span *at)
{
	const uint8_t *end = p + len;
	size_t k = 0;
	while (p < end) {
		uint64_t tag, v;
		if (!read_varint(&p, end, &tag))
			return false;
		const uint8_t *start = p;
		switch (tag & 7) {
		case 0: /* varint */
			if (!read_varint(&p, end, &v))
				return false;
			break;
		case 1: /* 64-bit */
			if ((size_t)(end - p) < 8)
				return false;
			p += 8;
			break;
		case 2: /* length-delimited */
			if (!read_varint(&p, end, &v) || v > (uint64_t)(end - p))
				return false;
			p += v;
			if (tag >> 3 == 1) {
				if (k == n)
					return false;
				at[k].p = start;
				at[k++].len = (size_t)(p - start);
			}
			break;
		case 5: /* 32-bit */
			if ((size_t)(end - p) < 4)
				return false;
			p += 4;
			break;
		default: /* groups: not in this message */
			return false;
		}
	}
	return k == n;
}

/*
 * Each offer of `r` exactly as its driver sent it, from the bytes the
 * response kept (drv_response_keep_bytes()): the same bytes as packing the
 * unpacked offer again, unknown fields included, without the packing. NULL
 * when those bytes are not at hand; the caller then packs the offers.
 */
static struct srv__span *offer_spans(const drv_get_offers_response *r)
{
	size_t len;
	const uint8_t *bytes = drv_response_bytes(r, &len);
	if (!bytes)
		return NULL;
	struct srv__span *at = malloc((r->n_offers + 1) * sizeof(*at));
	if (at && !srv__offers_scan(bytes, len, r->n_offers, at)) {
		free(at);
		at = NULL;
	}
	return at;
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
			srv__set_str(&br->message, msg);
		}
	}
	/*
	 * Each answering backend's offers were filtered and sorted when they
	 * arrived (while the others were still working); here the sorted runs
	 * are merged, always taking the smallest head.
	 */
	size_t total = 0, n = 0;
	for (size_t i = 0; i < fo->n; i++) {
		if (res->resps[i])
			total += ((drv_get_offers_response *)res->resps[i])->n_offers;
		n += fo->slots[i].n_run;
	}
	res->items = malloc((n + 1) * sizeof(*res->items));
	/*
	 * A binary min-heap of run heads: n log k comparisons. Each entry holds
	 * its head's price, so most comparisons are one inline compare of two
	 * doubles in the heap itself; only equal prices go to cmp_items.
	 */
	struct head *heap = calloc(fo->n + 1, sizeof(*heap));
	if (!res->items || !heap) {
		free(heap);
		fo->res = NULL;
		srv_offers_result_free(res);
		fo->cb(fo->ud, DRV_ENOMEM, "out of memory", NULL);
		fanout_maybe_free(fo);
		return;
	}
	size_t hn = 0;
	for (size_t i = 0; i < fo->n; i++) {
		if (fo->slots[i].n_run == 0)
			continue;
		/* Sift up. */
		size_t c = hn++;
		heap[c] = (struct head){.it = fo->slots[i].run, .end = fo->slots[i].run + fo->slots[i].n_run};
		heap[c].price = heap[c].it->price;
		while (c > 0) {
			size_t p = (c - 1) / 2;
			if (!head_less(&heap[c], &heap[p]))
				break;
			struct head t = heap[p];
			heap[p] = heap[c];
			heap[c] = t;
			c = p;
		}
	}
	for (size_t k = 0; k < n; k++) {
		struct head *top = &heap[0];
		res->items[k] = *top->it++;
		if (top->it == top->end)
			heap[0] = heap[--hn];
		else
			top->price = top->it->price;
		/* Sift down the (new) root. */
		size_t c = 0;
		for (;;) {
			size_t l = 2 * c + 1, r = l + 1, m = c;
			if (l < hn && head_less(&heap[l], &heap[m]))
				m = l;
			if (r < hn && head_less(&heap[r], &heap[m]))
				m = r;
			if (m == c)
				break;
			struct head t = heap[m];
			heap[m] = heap[c];
			heap[c] = t;
			c = m;
		}
	}
	free(heap);
	res->n_items = n;
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

/* Dropped offers are reported at most once a minute per backend: a driver answers many queries. */
#define OFFER_WARN_INTERVAL_MS 60000

struct offer_warn {
	struct offer_warn *next;
	int64_t last_ms;
	char key[]; /* "project/backend" */
};

void srv__offer_warns_free(struct srv_engine *eng)
{
	while (eng->offer_warns) {
		struct offer_warn *w = eng->offer_warns;
		eng->offer_warns = w->next;
		free(w);
	}
}

/* One warning event (offers.dropped) for a backend's bad offers, unless it had one within the interval. */
static void warn_bad_offers(struct fanout *fo, const struct srv_backend_result *br, const char *why)
{
	struct srv_engine *eng = fo->eng;
	char key[300];
	int64_t now = srv_now_ms();
	struct offer_warn *w;

	snprintf(key, sizeof(key), "%s/%s", fo->project ? fo->project : "", br->backend);
	for (w = eng->offer_warns; w; w = w->next)
		if (strcmp(w->key, key) == 0)
			break;
	if (w && now - w->last_ms < OFFER_WARN_INTERVAL_MS)
		return;
	if (!w && (w = calloc(1, sizeof(*w) + strlen(key) + 1))) {
		memcpy(w->key, key, strlen(key) + 1);
		w->next = eng->offer_warns;
		eng->offer_warns = w;
	}
	if (w)
		w->last_ms = now;
	srv_engine_event(eng, SRV_EVENT_WARNING, "offers.dropped", fo->project, NULL, br->backend, br->type,
	                 "backend %s: %u of %u offers dropped as malformed (first: %s); at most one such "
	                 "event a minute",
	                 br->backend, br->bad_offers, br->offer_count, why);
}

/*
 * Keeps only the offers that pass drv_offer_check, counting the others, and
 * stamps each kept offer with the backend's type: a driver's word on which
 * backend an offer belongs to is not taken. Returns false when a stamp
 * changed an offer, whose received bytes then no longer match it.
 */
static bool screen_offers(struct fanout *fo, struct srv_backend_result *br, drv_get_offers_response *r)
{
	char why[400] = "";
	bool bytes_ok = true;

	for (size_t k = 0; k < r->n_offers; k++) {
		drv_offer *o = r->offers[k];
		char w[300];
		if (!drv_offer_check(o, w, sizeof(w))) {
			if (!br->bad_offers++)
				snprintf(why, sizeof(why), "offer %zu: %s", k, w);
			r->offers[k] = NULL;
			continue;
		}
		if (strcmp(o->backend_type, br->type) != 0) {
			/* br->type lives as long as the response: both go with the result. */
			o->backend_type = br->type;
			bytes_ok = false;
		}
	}
	if (br->bad_offers)
		warn_bad_offers(fo, br, why);
	return bytes_ok;
}

static void offers_done(void *ud, int code, const char *message, ProtobufCMessage *resp)
{
	struct fan_slot *s = ud;
	struct fanout *fo = s->fo;
	fo->outstanding--;
	if (fo->finished) {
		/* Too late: already reported as DEADLINE_EXCEEDED. */
		if (resp)
			drv_response_free(resp);
		fanout_maybe_free(fo);
		return;
	}
	struct srv_backend_result *br = &fo->res->backends[s->idx];
	br->code = code;
	br->elapsed_ms = (unsigned)(srv_now_ms() - s->started);
	/* Out of memory for a message: the backend's code still says what happened. */
	srv__set_str(&br->message, code ? message : "");
	if (code == 0 && resp) {
		drv_get_offers_response *r = (drv_get_offers_response *)resp;
		fo->res->resps[s->idx] = resp;
		br->offer_count = (unsigned)r->n_offers;
		bool bytes_ok = screen_offers(fo, br, r);
		s->run = malloc((r->n_offers + 1) * sizeof(*s->run));
		if (!s->run) {
			/* This backend's offers cannot be kept: it reports the failure, the others still
			 * count. */
			br->code = DRV_ENOMEM;
			srv__set_str(&br->message, "out of memory");
			slot_done(s);
			return;
		}
		struct srv__span *at = fo->packed_offers && bytes_ok ? offer_spans(r) : NULL;
		for (size_t k = 0; k < r->n_offers; k++) {
			const drv_offer *o = r->offers[k];
			/* Drivers filter too; the server checks again so one sloppy driver cannot widen a
			 * query. */
			if (!o || !drv_offer_matches(o, fo->req))
				continue;
			struct srv_offer_item *it = &s->run[s->n_run++];
			it->backend = br->backend;
			it->backend_type = br->type;
			it->offer = o;
			it->price = o->price_per_hour;
			it->type_short = prefix_key(o->instance_type, it->type_key);
			it->region_short = prefix_key(o->region, it->region_key);
			it->wire = at ? at[k].p : NULL;
			it->wire_len = at ? at[k].len : 0;
			it->rank = (uint32_t)s->idx;
		}
		/* Drivers usually answer sorted by price already: then one pass instead of a sort. */
		size_t k = 1;
		while (k < s->n_run && cmp_items(&s->run[k - 1], &s->run[k]) <= 0)
			k++;
		if (k < s->n_run)
			qsort(s->run, s->n_run, sizeof(*s->run), cmp_items);
		if (fo->packed_offers && !at)
			pack_run(fo, s);
		free(at);
	} else if (resp) {
		drv_response_free(resp);
	}
	slot_done(s);
}

static void send_get_offers(struct fan_slot *s)
{
	struct fanout *fo = s->fo;
	struct srv_backend *be = fo->res->bes[s->idx];
	struct drv_backend_config_buf bc;
	drv_get_offers_request req = DROVER__COMPUTE__V1__GET_OFFERS_REQUEST__INIT;
	fo->outstanding++;
	if (srv_bcfg_init(&bc, be) < 0) {
		offers_done(s, DRV_ENOMEM, "out of memory", NULL);
		return;
	}
	req.config = &bc.msg;
	req.requirements = fo->req;
	srv_supervisor_call(fo->eng->sup, be->type, "GetOffers", &req.base, fo->timeout_ms, offers_done, s);
	drv_backend_config_clear(&bc);
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
		srv__set_str(&br->message, message);
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
		srv__set_str(&br->message, msg);
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
	bool ok = fo && res;
	if (ok) {
		fo->eng = eng;
		fo->project = q->project ? strdup(q->project) : NULL;
		fo->cb = cb;
		fo->ud = ud;
		fo->required = q->required_features;
		fo->packed_offers = q->packed_offers;
		fo->timeout_ms = q->timeout_ms > 0 ? q->timeout_ms : eng->cfg->offers_timeout_ms;
		if (q->requirements) {
			size_t len;
			void *buf = srv__pack(&q->requirements->base, &len);
			fo->req = buf ? drover__compute__v1__requirements__unpack(NULL, len, buf) : NULL;
			free(buf);
			ok = fo->req != NULL;
		}
		fo->res = res;
		fo->n = n;
		fo->t_start = srv_now_ms();
		fo->slots = calloc(n + 1, sizeof(*fo->slots));
		res->backends = calloc(n + 1, sizeof(*res->backends));
		res->resps = calloc(n + 1, sizeof(*res->resps));
		res->wires = calloc(n + 1, sizeof(*res->wires));
		ok = ok && fo->slots && res->backends && res->resps && res->wires;
	}
	if (ok) {
		res->n_backends = n;
		res->n_resps = n;
		for (size_t i = 0; i < n; i++) {
			res->backends[i].backend = strdup(bes[i]->name);
			res->backends[i].type = strdup(bes[i]->type);
			ok = ok && res->backends[i].backend && res->backends[i].type;
		}
	}
	if (!ok) {
		/* Nothing was sent yet: everything goes, and the caller hears why. */
		if (res) {
			res->bes = bes;
			res->n_bes = n;
			srv_offers_result_free(res); /* its counts are 0 unless its arrays exist */
		} else {
			srv_backend_list_free(bes, n);
		}
		if (fo) {
			if (fo->req)
				protobuf_c_message_free_unpacked(&fo->req->base, NULL);
			free(fo->project);
			free(fo->slots);
			free(fo);
		}
		cb(ud, DRV_ENOMEM, "out of memory", NULL);
		return;
	}
	res->bes = bes;
	res->n_bes = n;
	if (n == 0) {
		fanout_finish(fo);
		return;
	}
	/* Out of memory for the timer: the fan-out ends when every call has hit its own timeout. */
	fo->deadline = malloc(sizeof(*fo->deadline));
	if (fo->deadline) {
		uv_timer_init(eng->loop, fo->deadline);
		fo->deadline->data = fo;
		/* A little slack over the per-call deadline so a driver's own DEADLINE_EXCEEDED usually
		 * arrives first. */
		uv_timer_start(fo->deadline, deadline_cb, (uint64_t)fo->timeout_ms + 50, 0);
	}
	int64_t now = srv_now_ms();
	for (size_t i = 0; i < n; i++) {
		struct fan_slot *s = &fo->slots[i];
		s->fo = fo;
		s->idx = i;
		s->started = now;
	}
	/* Held while asking: a slot that fails at once (out of memory) cannot free fo under this loop. */
	fo->outstanding++;
	/* Every backend asked at once; each slot finishes on its own. */
	for (size_t i = 0; i < n && !fo->finished; i++) {
		struct fan_slot *s = &fo->slots[i];
		if (fo->required) {
			struct drv_backend_config_buf bc;
			fo->outstanding++;
			if (srv_bcfg_init(&bc, bes[i]) < 0) {
				features_done(s, DRV_ENOMEM, "out of memory", 0);
				continue;
			}
			srv_supervisor_features(eng->sup, bes[i]->type, &bc.msg, features_done, s);
			drv_backend_config_clear(&bc);
		} else {
			send_get_offers(s);
		}
	}
	fo->outstanding--;
	fanout_maybe_free(fo);
}

void srv_offers_result_free(struct srv_offers_result *res)
{
	if (!res)
		return;
	for (size_t i = 0; i < res->n_resps; i++)
		if (res->resps[i])
			drv_response_free(res->resps[i]);
	free(res->resps);
	for (size_t i = 0; i < res->n_resps; i++)
		free(res->wires[i]);
	free(res->wires);
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
