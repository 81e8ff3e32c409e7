/*
 * Lifecycle checks of instances, volumes, placement groups and gateways, the
 * idempotency of mutating calls (repeated --repeat times with the same key)
 * and the status codes the protocol fixes for bad input.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "checks.h"
#include "drover/offer_check.h"

/* "TERMINATED" for an InstanceState value, or its number for one the protocol does not name. */
static const char *state_name(int state)
{
	static _Thread_local char num[16];
	const ProtobufCEnumValue *v =
	    protobuf_c_enum_descriptor_get_value(&drover__compute__v1__instance_state__descriptor, state);
	if (v)
		return v->name;
	snprintf(num, sizeof(num), "%d", state);
	return num;
}

static void sleep_ms(int ms)
{
	struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
	nanosleep(&ts, NULL);
}

/* Everything one instance check needs to create instances. */
struct maker {
	drv_get_offers_response *offers; /* owns `offer` */
	drv_offer *offer;
	char tag_value[160]; /* unique per check: "drover-conformance-check" tag */
	drv_tag_entry tags[2];
	drv_tag_entry *tag_ptrs[2];
};

static bool maker_init(struct conf_ctx *c, struct maker *m, const char *what)
{
	memset(m, 0, sizeof(*m));
	m->offers = conf_pick_offer(c, &m->offer);
	if (!m->offers)
		return false;
	conf_name(c, what, m->tag_value, sizeof(m->tag_value));
	drv_tag_entry init = DROVER__COMPUTE__V1__INSTANCE_CONFIGURATION__TAGS_ENTRY__INIT;
	m->tags[0] = init;
	m->tags[0].key = (char *)CONF_RUN_TAG;
	m->tags[0].value = c->run_id;
	m->tags[1] = init;
	m->tags[1].key = (char *)"drover-conformance-check";
	m->tags[1].value = m->tag_value;
	m->tag_ptrs[0] = &m->tags[0];
	m->tag_ptrs[1] = &m->tags[1];
	return true;
}

static void maker_free(struct maker *m)
{
	if (m->offers)
		drv_response_free(&m->offers->base);
	m->offers = NULL;
}

/* CreateInstance with key (may be ""); tracks what it made. Returns rc; *data copied into id/region. */
static int create_instance(struct conf_ctx *c, struct maker *m, const char *key, char *id, size_t idlen,
                           struct drv_status *st)
{
	drv_create_instance_request rq = DROVER__COMPUTE__V1__CREATE_INSTANCE_REQUEST__INIT;
	drv_instance_configuration ic = DROVER__COMPUTE__V1__INSTANCE_CONFIGURATION__INIT;
	drv_create_instance_response *rs = NULL;
	ic.name = m->tag_value;
	ic.project = (char *)"conformance";
	ic.idempotency_key = (char *)key;
	ic.n_tags = 2;
	ic.tags = m->tag_ptrs;
	rq.config = &c->bc.buf.msg;
	rq.offer = m->offer;
	rq.instance = &ic;
	int rc = drv_host_create_instance(c->host, &rq, &rs, c->o->call_timeout_ms, st);
	char why[300];
	if (rc == 0) {
		if (!rs->data || !rs->data->instance_id[0]) {
			snprintf(st->message, sizeof(st->message),
			         "no provisioning data with an instance_id");
			rc = DRV_EINTERNAL;
		} else if (!drv_text_check("instance_id", rs->data->instance_id, DRV_TEXT_MAX_ID, true, why,
		                           sizeof(why))) {
			/*
			 * Tracked all the same: the cleanup tries it, and the run tag finds
			 * what is left. The failure is recorded here, so the caller's own
			 * message about rc (which comes second) is not the one shown.
			 */
			conf_track(c, CONF_INSTANCE, rs->data->instance_id, rs->data->region, NULL);
			conf_fail(c,
			          "CreateInstance(key \"%s\") answered OK with an unusable id: %s; an id is "
			          "printable UTF-8 of 1 to %d bytes",
			          key, why, DRV_TEXT_MAX_ID);
			snprintf(st->message, sizeof(st->message), "an unusable id: %s", why);
			rc = DRV_EINTERNAL;
		} else {
			conf_track(c, CONF_INSTANCE, rs->data->instance_id, rs->data->region, NULL);
			snprintf(id, idlen, "%s", rs->data->instance_id);
		}
	}
	if (rs)
		drv_response_free(&rs->base);
	return rc;
}

/* CreateInstance with a fresh key (written to key), which must answer OK; false after conf_fail. */
static bool create_fresh(struct conf_ctx *c, struct maker *m, char *key, size_t keylen, char *id,
                         size_t idlen)
{
	char ans[700];
	struct drv_status st = {0};
	conf_name(c, "key", key, keylen);
	int rc = create_instance(c, m, key, id, idlen, &st);
	if (rc)
		conf_fail(c, "CreateInstance(key \"%s\") answered %s; the protocol requires OK", key,
		          conf_answer(rc, &st, ans, sizeof(ans)));
	return rc == 0;
}

static int terminate_instance(struct conf_ctx *c, const char *id, struct drv_status *st)
{
	drv_terminate_instance_request rq = DROVER__COMPUTE__V1__TERMINATE_INSTANCE_REQUEST__INIT;
	drv_terminate_instance_response *rs = NULL;
	rq.config = &c->bc.buf.msg;
	rq.instance_id = (char *)id;
	int rc = drv_host_terminate_instance(c->host, &rq, &rs, c->o->call_timeout_ms, st);
	if (rs)
		drv_response_free(&rs->base);
	return rc;
}

/* TerminateInstance, which must answer OK; false after conf_fail. */
static bool terminate_ok(struct conf_ctx *c, const char *id)
{
	char ans[700];
	struct drv_status st = {0};
	int rc = terminate_instance(c, id, &st);
	if (rc)
		conf_fail(c, "TerminateInstance(id=\"%s\") answered %s; the protocol requires OK", id,
		          conf_answer(rc, &st, ans, sizeof(ans)));
	return rc == 0;
}

static int get_instance(struct conf_ctx *c, const char *id, drv_get_instance_response **rs,
                        struct drv_status *st)
{
	drv_get_instance_request rq = DROVER__COMPUTE__V1__GET_INSTANCE_REQUEST__INIT;
	rq.config = &c->bc.buf.msg;
	rq.instance_id = (char *)id;
	return drv_host_get_instance(c->host, &rq, rs, c->o->call_timeout_ms, st);
}

/* ListInstances by one tag; returns rc, *rs owned by caller. */
static int list_by_tag(struct conf_ctx *c, const char *key, const char *value,
                       drv_list_instances_response **rs, struct drv_status *st)
{
	drv_list_instances_request rq = DROVER__COMPUTE__V1__LIST_INSTANCES_REQUEST__INIT;
	Drover__Compute__V1__ListInstancesRequest__TagsEntry e =
	    DROVER__COMPUTE__V1__LIST_INSTANCES_REQUEST__TAGS_ENTRY__INIT;
	Drover__Compute__V1__ListInstancesRequest__TagsEntry *ep = &e;
	e.key = (char *)key;
	e.value = (char *)value;
	rq.config = &c->bc.buf.msg;
	rq.n_tags = 1;
	rq.tags = &ep;
	return drv_host_list_instances(c->host, &rq, rs, c->o->call_timeout_ms, st);
}

/* ListInstances by the check's own tag; the response (caller frees) or NULL after conf_fail. */
static drv_list_instances_response *list_tagged(struct conf_ctx *c, const char *value)
{
	drv_list_instances_response *ls = NULL;
	struct drv_status st = {0};
	char ans[700];
	int rc = list_by_tag(c, "drover-conformance-check", value, &ls, &st);
	if (rc) {
		conf_fail(
		    c, "ListInstances(tag drover-conformance-check=%s) answered %s; the protocol requires OK",
		    value, conf_answer(rc, &st, ans, sizeof(ans)));
		if (ls)
			drv_response_free(&ls->base);
		return NULL;
	}
	return ls;
}

/* Polls GetInstance until the instance has an address; false after conf_fail. */
static bool wait_for_address(struct conf_ctx *c, const char *id)
{
	double deadline = conf_now_ms() + c->o->provisioning_timeout_ms;
	char ans[700];
	for (;;) {
		drv_get_instance_response *rs = NULL;
		struct drv_status st = {0};
		int rc = get_instance(c, id, &rs, &st);
		if (rc == DRV_EABORTED || rc == DRV_EUNAVAILABLE) {
			/* Retryable by protocol: not done yet, or transient. */
		} else if (rc) {
			conf_fail(
			    c,
			    "GetInstance(id=\"%s\") answered %s while provisioning; the protocol requires OK",
			    id, conf_answer(rc, &st, ans, sizeof(ans)));
			return false;
		} else {
			bool done = rs->data && (rs->data->hostname[0] || rs->data->internal_ip[0]);
			int state = rs->data ? (int)rs->data->state : 0;
			drv_response_free(&rs->base);
			/* Checked before the address: a server terminates a machine reported gone. */
			if (state == DROVER__COMPUTE__V1__INSTANCE_STATE__INSTANCE_STATE_TERMINATED ||
			    state == DROVER__COMPUTE__V1__INSTANCE_STATE__INSTANCE_STATE_TERMINATING) {
				conf_fail(c,
				          "GetInstance(id=\"%s\") reports state %s before the harness "
				          "terminated it; a server takes that as the machine being gone",
				          id, state_name(state));
				return false;
			}
			if (done)
				return true;
		}
		if (conf_interrupted) {
			conf_fail(c, "interrupted while waiting for instance \"%s\" to get an address", id);
			return false;
		}
		if (conf_now_ms() > deadline) {
			conf_fail(c,
			          "GetInstance(id=\"%s\") shows no hostname or internal_ip after %d ms "
			          "(params.provisioning_timeout_ms)",
			          id, c->o->provisioning_timeout_ms);
			return false;
		}
		sleep_ms(50);
	}
}

void check_instances_lifecycle(struct conf_ctx *c)
{
	struct maker m;
	if (!maker_init(c, &m, "life"))
		return;
	char id[256], ans[700], key[200];
	struct drv_status st = {0};
	conf_name(c, "key", key, sizeof(key));
	int rc = create_instance(c, &m, key, id, sizeof(id), &st);
	if (rc) {
		conf_fail(
		    c, "CreateInstance(offer \"%s\" in %s, key \"%s\") answered %s; the protocol requires OK",
		    m.offer->instance_type, m.offer->region, key, conf_answer(rc, &st, ans, sizeof(ans)));
		goto out;
	}
	if (!wait_for_address(c, id))
		goto out;
	if (!terminate_ok(c, id))
		goto out;
	conf_untrack(c, CONF_INSTANCE, id);
	rc = terminate_instance(c, id, &st);
	if (rc) {
		conf_fail(c,
		          "TerminateInstance(id=\"%s\") a second time answered %s; the protocol requires OK "
		          "(terminate is idempotent)",
		          id, conf_answer(rc, &st, ans, sizeof(ans)));
		goto out;
	}
	drv_get_instance_response *gs = NULL;
	rc = get_instance(c, id, &gs, &st);
	if (rc == 0 && gs->data &&
	    (gs->data->state == DROVER__COMPUTE__V1__INSTANCE_STATE__INSTANCE_STATE_RUNNING ||
	     gs->data->state == DROVER__COMPUTE__V1__INSTANCE_STATE__INSTANCE_STATE_PROVISIONING))
		conf_fail(c,
		          "GetInstance(id=\"%s\") after TerminateInstance answered OK with state %s; "
		          "terminated means gone or going",
		          id, state_name((int)gs->data->state));
	else if (rc && rc != DRV_ENOTFOUND)
		conf_fail(c,
		          "GetInstance(id=\"%s\") after TerminateInstance answered %s; the protocol allows "
		          "OK or NOT_FOUND",
		          id, conf_answer(rc, &st, ans, sizeof(ans)));
	if (gs)
		drv_response_free(&gs->base);
out:
	maker_free(&m);
}

void check_instances_terminate_unknown(struct conf_ctx *c)
{
	char id[200];
	conf_name(c, "missing", id, sizeof(id));
	terminate_ok(c, id);
}

void check_instances_get_unknown(struct conf_ctx *c)
{
	char id[200], ans[700];
	struct drv_status st = {0};
	drv_get_instance_response *rs = NULL;
	conf_name(c, "missing", id, sizeof(id));
	int rc = get_instance(c, id, &rs, &st);
	if (rc != DRV_ENOTFOUND)
		conf_fail(c, "GetInstance(id=\"%s\") answered %s; the protocol requires NOT_FOUND", id,
		          conf_answer(rc, &st, ans, sizeof(ans)));
	if (rs)
		drv_response_free(&rs->base);
}

void check_instances_idempotent_create(struct conf_ctx *c)
{
	struct maker m;
	if (!maker_init(c, &m, "idem"))
		return;
	char key[200], first[256] = "", id[256], ans[700];
	conf_name(c, "key", key, sizeof(key));
	for (int i = 0; i < c->o->repeat && !c->failed; i++) {
		struct drv_status st = {0};
		int rc = create_instance(c, &m, key, id, sizeof(id), &st);
		if (rc)
			conf_fail(
			    c,
			    "CreateInstance(key \"%s\") call %d of %d answered %s; the protocol requires OK",
			    key, i + 1, c->o->repeat, conf_answer(rc, &st, ans, sizeof(ans)));
		else if (i == 0)
			snprintf(first, sizeof(first), "%s", id);
		else if (strcmp(first, id))
			conf_fail(c,
			          "CreateInstance(key \"%s\") call %d of %d answered instance \"%s\", the "
			          "first call \"%s\"; the same idempotency key must never make two machines",
			          key, i + 1, c->o->repeat, id, first);
	}
	if (!c->failed) {
		drv_list_instances_response *ls = list_tagged(c, m.tag_value);
		if (ls && ls->n_instances != 1)
			conf_fail(c,
			          "ListInstances(tag drover-conformance-check=%s) after %d CreateInstance "
			          "calls with one key lists %zu instances; exactly one must exist",
			          m.tag_value, c->o->repeat, ls->n_instances);
		if (ls)
			drv_response_free(&ls->base);
	}
	maker_free(&m);
}

void check_instances_key_reuse(struct conf_ctx *c)
{
	struct maker m;
	if (!maker_init(c, &m, "reuse"))
		return;
	/* A second AVAILABLE offer that differs from the chosen one. */
	drv_offer *other = NULL;
	for (size_t i = 0; i < m.offers->n_offers && !other; i++) {
		drv_offer *o = m.offers->offers[i];
		if (o->availability == DROVER__COMPUTE__V1__AVAILABILITY__AVAILABILITY_AVAILABLE &&
		    (strcmp(o->instance_type, m.offer->instance_type) || strcmp(o->region, m.offer->region)))
			other = o;
	}
	if (!other) {
		conf_skip(c, "params.offer_requirements matches only one AVAILABLE offer; two different ones "
		             "are needed");
		maker_free(&m);
		return;
	}
	char key[200], id[256], id2[256] = "", ans[700];
	struct drv_status st = {0};
	if (!create_fresh(c, &m, key, sizeof(key), id, sizeof(id)))
		goto out;
	drv_offer *first = m.offer;
	m.offer = other;
	int rc = create_instance(c, &m, key, id2, sizeof(id2), &st);
	m.offer = first;
	if (rc != DRV_EEXIST)
		conf_fail(c,
		          "CreateInstance(key \"%s\" again, with offer \"%s\" in %s instead of \"%s\" in %s) "
		          "answered %s%s%s; the protocol requires ALREADY_EXISTS",
		          key, other->instance_type, other->region, first->instance_type, first->region,
		          conf_answer(rc, &st, ans, sizeof(ans)), rc == 0 ? " with instance " : "",
		          rc == 0 ? id2 : "");
out:
	maker_free(&m);
}

static bool listed(const drv_list_instances_response *ls, const char *id)
{
	for (size_t i = 0; i < ls->n_instances; i++)
		if (ls->instances[i]->data && strcmp(ls->instances[i]->data->instance_id, id) == 0)
			return true;
	return false;
}

void check_instances_list(struct conf_ctx *c)
{
	struct maker m;
	if (!maker_init(c, &m, "list"))
		return;
	char key[200], id[256];
	struct drv_status st = {0};
	drv_list_instances_response *ls = NULL;
	if (!create_fresh(c, &m, key, sizeof(key), id, sizeof(id)))
		goto out;
	ls = list_tagged(c, m.tag_value);
	if (!ls)
		goto out;
	if (!listed(ls, id)) {
		conf_fail(c,
		          "ListInstances(tag drover-conformance-check=%s) does not list instance \"%s\" just "
		          "created with that tag (%zu listed)",
		          m.tag_value, id, ls->n_instances);
		goto out;
	}
	for (size_t i = 0; i < ls->n_instances; i++)
		if (ls->instances[i]->data && strcmp(ls->instances[i]->data->instance_id, id) == 0 &&
		    strcmp(ls->instances[i]->idempotency_key, key))
			conf_fail(c,
			          "ListInstances lists instance \"%s\" with idempotency_key \"%s\"; it was "
			          "created with \"%s\"",
			          id, ls->instances[i]->idempotency_key, key);
	drv_response_free(&ls->base);
	ls = NULL;
	if (c->failed)
		goto out;

	int rc = list_by_tag(c, "drover-conformance-check", "conformance-no-such-tag-value", &ls, &st);
	if (rc == 0 && ls->n_instances)
		conf_fail(c,
		          "ListInstances(tag drover-conformance-check=conformance-no-such-tag-value) lists "
		          "%zu instances; only instances with every given tag may be listed",
		          ls->n_instances);
	if (ls)
		drv_response_free(&ls->base);
	ls = NULL;
	if (c->failed)
		goto out;

	if (!terminate_ok(c, id))
		goto out;
	conf_untrack(c, CONF_INSTANCE, id);
	ls = list_tagged(c, m.tag_value);
	if (ls && listed(ls, id))
		conf_fail(c,
		          "ListInstances(tag drover-conformance-check=%s) still lists instance \"%s\" after "
		          "TerminateInstance answered OK; it lists live instances only",
		          m.tag_value, id);
out:
	if (ls)
		drv_response_free(&ls->base);
	maker_free(&m);
}

/*
 * A cloud's machines outlive the driver process that made them: an instance
 * created before the driver is killed and started again is still answered by
 * GetInstance and listed by ListInstances afterwards. A driver that keeps
 * its state only in memory loses it here, and with it the server's way to
 * find and terminate the machine.
 */
void check_instances_survive_restart(struct conf_ctx *c)
{
	struct maker m;
	if (!maker_init(c, &m, "restart"))
		return;
	char key[200], id[256], ans[700];
	struct drv_status st = {0};
	drv_get_instance_response *gs = NULL;
	drv_list_instances_response *ls = NULL;
	if (!create_fresh(c, &m, key, sizeof(key), id, sizeof(id)))
		goto out;
	if (!conf_restart_driver(c))
		goto out;
	int rc = get_instance(c, id, &gs, &st);
	int state = rc == 0 && gs->data ? (int)gs->data->state : 0;
	if (rc)
		conf_fail(c,
		          "after the driver was killed and started again, GetInstance(id=\"%s\") of the "
		          "instance created before answered %s; a driver must not keep its machines only in "
		          "memory",
		          id, conf_answer(rc, &st, ans, sizeof(ans)));
	else if (!gs->data || strcmp(gs->data->instance_id, id))
		conf_fail(c,
		          "after the driver was killed and started again, GetInstance(id=\"%s\") answered "
		          "OK without that instance's provisioning data",
		          id);
	else if (state == DROVER__COMPUTE__V1__INSTANCE_STATE__INSTANCE_STATE_TERMINATED ||
	         state == DROVER__COMPUTE__V1__INSTANCE_STATE__INSTANCE_STATE_TERMINATING)
		conf_fail(c,
		          "after the driver was killed and started again, GetInstance(id=\"%s\") reports "
		          "state %s for an instance nobody terminated",
		          id, state_name(state));
	if (c->failed)
		goto out;
	ls = list_tagged(c, m.tag_value);
	if (ls && !listed(ls, id))
		conf_fail(c,
		          "after the driver was killed and started again, ListInstances(tag "
		          "drover-conformance-check=%s) does not list instance \"%s\" created before with "
		          "that tag (%zu listed)",
		          m.tag_value, id, ls->n_instances);
	if (!c->failed && terminate_ok(c, id))
		conf_untrack(c, CONF_INSTANCE, id);
out:
	if (gs)
		drv_response_free(&gs->base);
	if (ls)
		drv_response_free(&ls->base);
	maker_free(&m);
}

void check_errors_create_without_key(struct conf_ctx *c)
{
	struct maker m;
	if (!maker_init(c, &m, "nokey"))
		return;
	char id[256], ans[700];
	struct drv_status st = {0};
	int rc = create_instance(c, &m, "", id, sizeof(id), &st);
	if (rc != DRV_EINVAL)
		conf_fail(c,
		          "CreateInstance(without idempotency key) answered %s; the protocol requires "
		          "INVALID_ARGUMENT",
		          conf_answer(rc, &st, ans, sizeof(ans)));
	maker_free(&m);
}

void check_errors_config_not_json(struct conf_ctx *c)
{
	struct conf_bc bc;
	conf_bc_init(&bc, NULL, NULL, c->o->secrets, "not json");
	struct drv_status st = {0};
	char ans[700];
	int rc;
	const char *what;
	if (conf_has(c, DRV_FEATURE_OFFERS)) {
		drv_get_offers_request rq = DROVER__COMPUTE__V1__GET_OFFERS_REQUEST__INIT;
		drv_get_offers_response *rs = NULL;
		rq.config = &bc.buf.msg;
		what = "GetOffers";
		rc = drv_host_get_offers(c->host, &rq, &rs, c->o->call_timeout_ms, &st);
		if (rs)
			drv_response_free(&rs->base);
	} else if (conf_has(c, DRV_FEATURE_CREATE_INSTANCE)) {
		drv_list_instances_request rq = DROVER__COMPUTE__V1__LIST_INSTANCES_REQUEST__INIT;
		drv_list_instances_response *rs = NULL;
		rq.config = &bc.buf.msg;
		what = "ListInstances";
		rc = drv_host_list_instances(c->host, &rq, &rs, c->o->call_timeout_ms, &st);
		if (rs)
			drv_response_free(&rs->base);
	} else {
		what = NULL; /* no provider call takes a config; GetFeatures still does */
		rc = DRV_EINVAL;
	}
	if (rc != DRV_EINVAL)
		conf_fail(c,
		          "%s(config_json \"not json\") answered %s; the protocol requires INVALID_ARGUMENT",
		          what, conf_answer(rc, &st, ans, sizeof(ans)));
	/* GetFeatures with a config checks it like any provider call (PROTOCOL.md section 7). */
	drv_get_features_request fq = DROVER__COMPUTE__V1__GET_FEATURES_REQUEST__INIT;
	drv_get_features_response *fs = NULL;
	fq.config = &bc.buf.msg;
	rc = drv_host_get_features(c->host, &fq, &fs, c->o->call_timeout_ms, &st);
	if (fs)
		drv_response_free(&fs->base);
	if (rc != DRV_EINVAL)
		conf_fail(c,
		          "GetFeatures(config_json \"not json\") answered %s; the protocol requires "
		          "INVALID_ARGUMENT",
		          conf_answer(rc, &st, ans, sizeof(ans)));
	conf_bc_free(&bc);
}

/* ---- volumes ---- */

static int create_volume(struct conf_ctx *c, const char *key, const char *name, const char *region, char *id,
                         size_t idlen, struct drv_status *st)
{
	drv_create_volume_request rq = DROVER__COMPUTE__V1__CREATE_VOLUME_REQUEST__INIT;
	drv_volume_configuration vc = DROVER__COMPUTE__V1__VOLUME_CONFIGURATION__INIT;
	drv_create_volume_response *rs = NULL;
	Drover__Compute__V1__VolumeConfiguration__TagsEntry te =
	    DROVER__COMPUTE__V1__VOLUME_CONFIGURATION__TAGS_ENTRY__INIT;
	Drover__Compute__V1__VolumeConfiguration__TagsEntry *tp = &te;
	te.key = (char *)CONF_RUN_TAG;
	te.value = c->run_id;
	vc.name = (char *)name;
	vc.project = (char *)"conformance";
	vc.region = (char *)region;
	vc.size_mib = c->o->volume_size_mib;
	vc.idempotency_key = (char *)key;
	vc.n_tags = 1;
	vc.tags = &tp;
	rq.config = &c->bc.buf.msg;
	rq.volume = &vc;
	int rc = drv_host_create_volume(c->host, &rq, &rs, c->o->call_timeout_ms, st);
	if (rc == 0) {
		if (!rs->volume || !rs->volume->volume_id[0]) {
			snprintf(st->message, sizeof(st->message), "no volume with a volume_id");
			rc = DRV_EINTERNAL;
		} else {
			conf_track(c, CONF_VOLUME, rs->volume->volume_id, rs->volume->region, NULL);
			snprintf(id, idlen, "%s", rs->volume->volume_id);
		}
	}
	if (rs)
		drv_response_free(&rs->base);
	return rc;
}

static int volume_call(struct conf_ctx *c, const char *method, const char *vol, const char *inst,
                       struct drv_status *st)
{
	ProtobufCMessage *resp = NULL;
	int rc;
	if (strcmp(method, "AttachVolume") == 0) {
		drv_attach_volume_request rq = DROVER__COMPUTE__V1__ATTACH_VOLUME_REQUEST__INIT;
		rq.config = &c->bc.buf.msg;
		rq.volume_id = (char *)vol;
		rq.instance_id = (char *)inst;
		rc = drv_host_call(c->host, method, &rq.base, &resp, c->o->call_timeout_ms, st);
	} else if (strcmp(method, "DetachVolume") == 0) {
		drv_detach_volume_request rq = DROVER__COMPUTE__V1__DETACH_VOLUME_REQUEST__INIT;
		rq.config = &c->bc.buf.msg;
		rq.volume_id = (char *)vol;
		rq.instance_id = (char *)inst;
		rc = drv_host_call(c->host, method, &rq.base, &resp, c->o->call_timeout_ms, st);
	} else {
		drv_delete_volume_request rq = DROVER__COMPUTE__V1__DELETE_VOLUME_REQUEST__INIT;
		rq.config = &c->bc.buf.msg;
		rq.volume_id = (char *)vol;
		rc = drv_host_call(c->host, method, &rq.base, &resp, c->o->call_timeout_ms, st);
	}
	if (resp)
		drv_response_free(resp);
	return rc;
}

/* AttachVolume (attach true) or DetachVolume twice: both are idempotent, so the second must answer OK too. */
static void attach_twice(struct conf_ctx *c, bool attach, const char *vol, const char *inst)
{
	const char *method = attach ? "AttachVolume" : "DetachVolume";
	char ans[700];
	struct drv_status st = {0};
	for (int i = 0; i < 2 && !c->failed; i++) {
		int rc = volume_call(c, method, vol, inst, &st);
		if (rc)
			conf_fail(
			    c, "%s(volume \"%s\", instance \"%s\")%s answered %s; the protocol requires OK",
			    method, vol, inst, i ? " a second time" : "",
			    conf_answer(rc, &st, ans, sizeof(ans)));
		else
			conf_track_attach(c, vol, attach ? inst : NULL);
	}
}

void check_volumes_lifecycle(struct conf_ctx *c)
{
	if (!conf_has(c, DRV_FEATURE_CREATE_INSTANCE)) {
		conf_skip(c, "driver does not advertise CREATE_INSTANCE, needed for an instance to attach "
		             "the volume to");
		return;
	}
	struct maker m;
	if (!maker_init(c, &m, "vol"))
		return;
	char ikey[200], inst[256], vkey[200], vname[200], vol[256] = "", id[256], ans[700];
	struct drv_status st = {0};
	conf_name(c, "key", ikey, sizeof(ikey));
	int rc = create_instance(c, &m, ikey, inst, sizeof(inst), &st);
	if (rc) {
		conf_fail(c,
		          "CreateInstance(key \"%s\") for the volume answered %s; the protocol requires OK",
		          ikey, conf_answer(rc, &st, ans, sizeof(ans)));
		goto out;
	}
	if (!wait_for_address(c, inst))
		goto out;
	conf_name(c, "vkey", vkey, sizeof(vkey));
	conf_name(c, "vol", vname, sizeof(vname));
	for (int i = 0; i < c->o->repeat && !c->failed; i++) {
		rc = create_volume(c, vkey, vname, m.offer->region, id, sizeof(id), &st);
		if (rc)
			conf_fail(c,
			          "CreateVolume(key \"%s\", region %s, %llu MiB) call %d of %d answered %s; "
			          "the protocol requires OK",
			          vkey, m.offer->region, (unsigned long long)c->o->volume_size_mib, i + 1,
			          c->o->repeat, conf_answer(rc, &st, ans, sizeof(ans)));
		else if (i == 0)
			snprintf(vol, sizeof(vol), "%s", id);
		else if (strcmp(vol, id))
			conf_fail(c,
			          "CreateVolume(key \"%s\") call %d of %d answered volume \"%s\", the first "
			          "call \"%s\"; the same idempotency key must give the same volume",
			          vkey, i + 1, c->o->repeat, id, vol);
	}
	if (c->failed)
		goto out;
	attach_twice(c, true, vol, inst);
	attach_twice(c, false, vol, inst);
	for (int i = 0; i < 2 && !c->failed; i++) {
		rc = volume_call(c, "DeleteVolume", vol, NULL, &st);
		if (rc)
			conf_fail(c, "DeleteVolume(id=\"%s\")%s answered %s; the protocol requires OK%s", vol,
			          i ? " a second time" : "", conf_answer(rc, &st, ans, sizeof(ans)),
			          i ? " (delete is idempotent)" : "");
		else
			conf_untrack(c, CONF_VOLUME, vol);
	}
out:
	maker_free(&m);
}

void check_volumes_register(struct conf_ctx *c)
{
	char key[200], name[200], region[128] = "", vol[256], ans[700];
	struct drv_status st = {0};
	drv_offer *o = NULL;
	drv_get_offers_response *offers = conf_has(c, DRV_FEATURE_OFFERS) ? conf_pick_offer(c, &o) : NULL;
	if (c->failed || c->skipped)
		return;
	if (offers) {
		snprintf(region, sizeof(region), "%s", o->region);
		drv_response_free(&offers->base);
	}
	conf_name(c, "vkey", key, sizeof(key));
	conf_name(c, "vol", name, sizeof(name));
	int rc = create_volume(c, key, name, region, vol, sizeof(vol), &st);
	if (rc) {
		conf_fail(c, "CreateVolume(key \"%s\", region %s) answered %s; the protocol requires OK", key,
		          region, conf_answer(rc, &st, ans, sizeof(ans)));
		return;
	}
	drv_register_volume_request rq = DROVER__COMPUTE__V1__REGISTER_VOLUME_REQUEST__INIT;
	drv_register_volume_response *rs = NULL;
	rq.config = &c->bc.buf.msg;
	rq.volume_id = vol;
	rq.region = region;
	rc = drv_host_register_volume(c->host, &rq, &rs, c->o->call_timeout_ms, &st);
	if (rc)
		conf_fail(
		    c,
		    "RegisterVolume(id=\"%s\") of an existing volume answered %s; the protocol requires OK",
		    vol, conf_answer(rc, &st, ans, sizeof(ans)));
	else if (!rs->volume || strcmp(rs->volume->volume_id, vol))
		conf_fail(
		    c,
		    "RegisterVolume(id=\"%s\") answered volume \"%s\"; it must describe the volume asked for",
		    vol, rs->volume ? rs->volume->volume_id : "(none)");
	if (rs)
		drv_response_free(&rs->base);
	if (c->failed)
		return;
	char missing[200];
	conf_name(c, "missing-vol", missing, sizeof(missing));
	rs = NULL;
	rq.volume_id = missing;
	rc = drv_host_register_volume(c->host, &rq, &rs, c->o->call_timeout_ms, &st);
	if (rc != DRV_ENOTFOUND)
		conf_fail(c,
		          "RegisterVolume(id=\"%s\") of an unknown volume answered %s; the protocol requires "
		          "NOT_FOUND",
		          missing, conf_answer(rc, &st, ans, sizeof(ans)));
	if (rs)
		drv_response_free(&rs->base);
}

void check_volumes_attach_unknown(struct conf_ctx *c)
{
	char vol[200], inst[200], ans[700];
	struct drv_status st = {0};
	conf_name(c, "missing-vol", vol, sizeof(vol));
	conf_name(c, "missing-inst", inst, sizeof(inst));
	int rc = volume_call(c, "AttachVolume", vol, inst, &st);
	if (rc != DRV_ENOTFOUND)
		conf_fail(c,
		          "AttachVolume(volume \"%s\", instance \"%s\") answered %s; the protocol requires "
		          "NOT_FOUND",
		          vol, inst, conf_answer(rc, &st, ans, sizeof(ans)));
}

/* A region for objects that need one: the offer the harness would use, else "". Copied into buf. */
static void pick_region(struct conf_ctx *c, char *buf, size_t len)
{
	buf[0] = '\0';
	if (!conf_has(c, DRV_FEATURE_OFFERS))
		return;
	drv_offer *o = NULL;
	drv_get_offers_response *rs = conf_pick_offer(c, &o);
	if (rs) {
		snprintf(buf, len, "%s", o->region);
		drv_response_free(&rs->base);
	}
}

void check_placement_lifecycle(struct conf_ctx *c)
{
	char region[128], name[200], gid[256] = "", ans[700];
	pick_region(c, region, sizeof(region));
	if (c->failed)
		return;
	conf_name(c, "pg", name, sizeof(name));
	drv_placement_group g = DROVER__COMPUTE__V1__PLACEMENT_GROUP__INIT;
	for (int i = 0; i < c->o->repeat && !c->failed; i++) {
		drv_create_placement_group_request rq =
		    DROVER__COMPUTE__V1__CREATE_PLACEMENT_GROUP_REQUEST__INIT;
		drv_create_placement_group_response *rs = NULL;
		struct drv_status st = {0};
		rq.config = &c->bc.buf.msg;
		rq.name = name;
		rq.region = region;
		rq.project = (char *)"conformance";
		rq.strategy = DROVER__COMPUTE__V1__PLACEMENT_STRATEGY__PLACEMENT_STRATEGY_CLUSTER;
		int rc = drv_host_create_placement_group(c->host, &rq, &rs, c->o->call_timeout_ms, &st);
		if (rc) {
			conf_fail(c,
			          "CreatePlacementGroup(name \"%s\", region %s) call %d of %d answered %s; "
			          "the protocol requires OK",
			          name, region, i + 1, c->o->repeat, conf_answer(rc, &st, ans, sizeof(ans)));
		} else if (!rs->group) {
			conf_fail(c, "CreatePlacementGroup(name \"%s\") answered OK without a group", name);
		} else {
			conf_track(c, CONF_PLACEMENT_GROUP, name, rs->group->region, rs->group->group_id);
			if (i == 0)
				snprintf(gid, sizeof(gid), "%s", rs->group->group_id);
			else if (strcmp(gid, rs->group->group_id))
				conf_fail(c,
				          "CreatePlacementGroup(name \"%s\") call %d of %d answered group_id "
				          "\"%s\", the first call \"%s\"; creation is idempotent by name",
				          name, i + 1, c->o->repeat, rs->group->group_id, gid);
		}
		if (rs)
			drv_response_free(&rs->base);
	}
	if (c->failed)
		return;
	g.name = name;
	g.region = region;
	g.group_id = gid;
	g.strategy = DROVER__COMPUTE__V1__PLACEMENT_STRATEGY__PLACEMENT_STRATEGY_CLUSTER;
	for (int i = 0; i < 2 && !c->failed; i++) {
		drv_delete_placement_group_request rq =
		    DROVER__COMPUTE__V1__DELETE_PLACEMENT_GROUP_REQUEST__INIT;
		drv_delete_placement_group_response *rs = NULL;
		struct drv_status st = {0};
		rq.config = &c->bc.buf.msg;
		rq.group = &g;
		int rc = drv_host_delete_placement_group(c->host, &rq, &rs, c->o->call_timeout_ms, &st);
		if (rc)
			conf_fail(
			    c, "DeletePlacementGroup(name \"%s\")%s answered %s; the protocol requires OK%s",
			    name, i ? " a second time" : "", conf_answer(rc, &st, ans, sizeof(ans)),
			    i ? " (delete is idempotent)" : "");
		else
			conf_untrack(c, CONF_PLACEMENT_GROUP, name);
		if (rs)
			drv_response_free(&rs->base);
	}
}

void check_gateways_lifecycle(struct conf_ctx *c)
{
	char region[128], name[200], key[200], gw[256] = "", ans[700];
	pick_region(c, region, sizeof(region));
	if (c->failed)
		return;
	conf_name(c, "gw", name, sizeof(name));
	conf_name(c, "gwkey", key, sizeof(key));
	for (int i = 0; i < c->o->repeat && !c->failed; i++) {
		drv_create_gateway_request rq = DROVER__COMPUTE__V1__CREATE_GATEWAY_REQUEST__INIT;
		drv_gateway_configuration gc = DROVER__COMPUTE__V1__GATEWAY_CONFIGURATION__INIT;
		drv_create_gateway_response *rs = NULL;
		struct drv_status st = {0};
		gc.name = name;
		gc.project = (char *)"conformance";
		gc.region = region;
		gc.public_ip = 1;
		gc.idempotency_key = key;
		rq.config = &c->bc.buf.msg;
		rq.gateway = &gc;
		int rc = drv_host_create_gateway(c->host, &rq, &rs, c->o->call_timeout_ms, &st);
		if (rc) {
			conf_fail(c,
			          "CreateGateway(key \"%s\", region %s) call %d of %d answered %s; the "
			          "protocol requires OK",
			          key, region, i + 1, c->o->repeat, conf_answer(rc, &st, ans, sizeof(ans)));
		} else if (!rs->gateway || !rs->gateway->instance_id[0]) {
			conf_fail(c, "CreateGateway(key \"%s\") answered OK without a gateway instance_id",
			          key);
		} else {
			conf_track(c, CONF_GATEWAY, rs->gateway->instance_id, rs->gateway->region, NULL);
			if (i == 0)
				snprintf(gw, sizeof(gw), "%s", rs->gateway->instance_id);
			else if (strcmp(gw, rs->gateway->instance_id))
				conf_fail(
				    c,
				    "CreateGateway(key \"%s\") call %d of %d answered gateway \"%s\", the "
				    "first call \"%s\"; the same idempotency key must give the same gateway",
				    key, i + 1, c->o->repeat, rs->gateway->instance_id, gw);
		}
		if (rs)
			drv_response_free(&rs->base);
	}
	for (int i = 0; i < 2 && !c->failed; i++) {
		drv_terminate_gateway_request rq = DROVER__COMPUTE__V1__TERMINATE_GATEWAY_REQUEST__INIT;
		drv_terminate_gateway_response *rs = NULL;
		struct drv_status st = {0};
		rq.config = &c->bc.buf.msg;
		rq.instance_id = gw;
		rq.region = region;
		int rc = drv_host_terminate_gateway(c->host, &rq, &rs, c->o->call_timeout_ms, &st);
		if (rc)
			conf_fail(c, "TerminateGateway(id=\"%s\")%s answered %s; the protocol requires OK%s",
			          gw, i ? " a second time" : "", conf_answer(rc, &st, ans, sizeof(ans)),
			          i ? " (terminate is idempotent)" : "");
		else
			conf_untrack(c, CONF_GATEWAY, gw);
		if (rs)
			drv_response_free(&rs->base);
	}
}
