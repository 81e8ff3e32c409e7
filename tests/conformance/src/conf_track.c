/*
 * Everything the harness creates is recorded here the moment the driver
 * answers, so the cleanup at the end of the run can remove it even if the
 * check that made it failed half-way. Removal goes in dependency order:
 * detach volumes, delete volumes, terminate gateways and instances, delete
 * placement groups.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conf.h"

static char *dup_or_null(const char *s)
{
	return s && *s ? strdup(s) : NULL;
}

static struct conf_tracked *find(struct conf_ctx *c, enum conf_kind kind, const char *id)
{
	for (size_t i = 0; i < c->n_tracked; i++)
		if (c->tracked[i].kind == kind && c->tracked[i].id && strcmp(c->tracked[i].id, id) == 0)
			return &c->tracked[i];
	return NULL;
}

void conf_track(struct conf_ctx *c, enum conf_kind kind, const char *id, const char *region,
                const char *group_id)
{
	if (!id || !*id)
		return;
	struct conf_tracked *t = find(c, kind, id);
	if (t) {
		t->removed = false;
		return;
	}
	if (c->n_tracked == c->cap_tracked) {
		size_t cap = c->cap_tracked ? c->cap_tracked * 2 : 16;
		struct conf_tracked *n = realloc(c->tracked, cap * sizeof(*n));
		if (!n)
			return;
		c->tracked = n;
		c->cap_tracked = cap;
	}
	t = &c->tracked[c->n_tracked++];
	memset(t, 0, sizeof(*t));
	t->kind = kind;
	t->id = strdup(id);
	t->region = dup_or_null(region);
	t->group_id = dup_or_null(group_id);
}

void conf_track_attach(struct conf_ctx *c, const char *volume_id, const char *instance_id)
{
	struct conf_tracked *t = find(c, CONF_VOLUME, volume_id);
	if (!t)
		return;
	free(t->attached_to);
	t->attached_to = dup_or_null(instance_id);
}

void conf_untrack(struct conf_ctx *c, enum conf_kind kind, const char *id)
{
	struct conf_tracked *t = find(c, kind, id);
	if (t)
		t->removed = true;
}

static const char *kind_name(enum conf_kind k)
{
	switch (k) {
	case CONF_INSTANCE:
		return "instance";
	case CONF_VOLUME:
		return "volume";
	case CONF_PLACEMENT_GROUP:
		return "placement group";
	case CONF_GATEWAY:
		return "gateway";
	}
	return "object";
}

static int remove_one(struct conf_ctx *c, struct conf_tracked *t, struct drv_status *st, const char **method)
{
	int to = c->o->call_timeout_ms;
	switch (t->kind) {
	case CONF_VOLUME: {
		if (t->attached_to) {
			drv_detach_volume_request rq = DROVER__COMPUTE__V1__DETACH_VOLUME_REQUEST__INIT;
			drv_detach_volume_response *rs = NULL;
			rq.config = &c->bc.buf.msg;
			rq.volume_id = t->id;
			rq.instance_id = t->attached_to;
			*method = "DetachVolume";
			int rc = drv_host_detach_volume(c->host, &rq, &rs, to, st);
			if (rs)
				drv_response_free(&rs->base);
			if (rc)
				return rc;
		}
		drv_delete_volume_request rq = DROVER__COMPUTE__V1__DELETE_VOLUME_REQUEST__INIT;
		drv_delete_volume_response *rs = NULL;
		rq.config = &c->bc.buf.msg;
		rq.volume_id = t->id;
		rq.region = t->region ? t->region : (char *)"";
		*method = "DeleteVolume";
		int rc = drv_host_delete_volume(c->host, &rq, &rs, to, st);
		if (rs)
			drv_response_free(&rs->base);
		return rc;
	}
	case CONF_INSTANCE: {
		drv_terminate_instance_request rq = DROVER__COMPUTE__V1__TERMINATE_INSTANCE_REQUEST__INIT;
		drv_terminate_instance_response *rs = NULL;
		rq.config = &c->bc.buf.msg;
		rq.instance_id = t->id;
		rq.region = t->region ? t->region : (char *)"";
		*method = "TerminateInstance";
		int rc = drv_host_terminate_instance(c->host, &rq, &rs, to, st);
		if (rs)
			drv_response_free(&rs->base);
		return rc;
	}
	case CONF_GATEWAY: {
		drv_terminate_gateway_request rq = DROVER__COMPUTE__V1__TERMINATE_GATEWAY_REQUEST__INIT;
		drv_terminate_gateway_response *rs = NULL;
		rq.config = &c->bc.buf.msg;
		rq.instance_id = t->id;
		rq.region = t->region ? t->region : (char *)"";
		*method = "TerminateGateway";
		int rc = drv_host_terminate_gateway(c->host, &rq, &rs, to, st);
		if (rs)
			drv_response_free(&rs->base);
		return rc;
	}
	case CONF_PLACEMENT_GROUP: {
		drv_delete_placement_group_request rq =
		    DROVER__COMPUTE__V1__DELETE_PLACEMENT_GROUP_REQUEST__INIT;
		drv_delete_placement_group_response *rs = NULL;
		drv_placement_group g = DROVER__COMPUTE__V1__PLACEMENT_GROUP__INIT;
		g.name = t->id;
		g.region = t->region ? t->region : (char *)"";
		g.group_id = t->group_id ? t->group_id : (char *)"";
		g.strategy = DROVER__COMPUTE__V1__PLACEMENT_STRATEGY__PLACEMENT_STRATEGY_CLUSTER;
		rq.config = &c->bc.buf.msg;
		rq.group = &g;
		*method = "DeletePlacementGroup";
		int rc = drv_host_delete_placement_group(c->host, &rq, &rs, to, st);
		if (rs)
			drv_response_free(&rs->base);
		return rc;
	}
	}
	return 0;
}

int conf_cleanup(struct conf_ctx *c, char *err, size_t errlen)
{
	static const enum conf_kind order[] = {CONF_VOLUME, CONF_GATEWAY, CONF_INSTANCE,
	                                       CONF_PLACEMENT_GROUP};
	int left = 0;
	err[0] = '\0';
	for (size_t k = 0; k < sizeof(order) / sizeof(order[0]); k++) {
		for (size_t i = 0; i < c->n_tracked; i++) {
			struct conf_tracked *t = &c->tracked[i];
			if (t->kind != order[k] || t->removed)
				continue;
			struct drv_status st = {0};
			const char *method = "";
			int rc = remove_one(c, t, &st, &method);
			if (rc == 0) {
				t->removed = true;
				continue;
			}
			char ans[700];
			if (!left++)
				snprintf(err, errlen, "could not remove %s \"%s\": %s answered %s",
				         kind_name(t->kind), t->id, method,
				         conf_answer(rc, &st, ans, sizeof(ans)));
		}
	}
	if (left > 1) {
		size_t n = strlen(err);
		snprintf(err + n, errlen - n, " (and %d more left behind)", left - 1);
	}
	return left;
}

int conf_cleanup_verify(struct conf_ctx *c, char *err, size_t errlen)
{
	if (!c->features_ok || !(c->features & DRV_FEATURE_BIT(DRV_FEATURE_CREATE_INSTANCE)))
		return 0;
	drv_list_instances_request rq = DROVER__COMPUTE__V1__LIST_INSTANCES_REQUEST__INIT;
	Drover__Compute__V1__ListInstancesRequest__TagsEntry e =
	    DROVER__COMPUTE__V1__LIST_INSTANCES_REQUEST__TAGS_ENTRY__INIT;
	Drover__Compute__V1__ListInstancesRequest__TagsEntry *ep = &e;
	e.key = (char *)CONF_RUN_TAG;
	e.value = c->run_id;
	rq.config = &c->bc.buf.msg;
	rq.n_tags = 1;
	rq.tags = &ep;
	drv_list_instances_response *rs = NULL;
	struct drv_status st = {0};
	char ans[700];
	int rc = drv_host_list_instances(c->host, &rq, &rs, c->o->call_timeout_ms, &st);
	int left = 0;
	if (rc) {
		snprintf(err, errlen, "ListInstances(tag %s=%s) after the cleanup answered %s", CONF_RUN_TAG,
		         c->run_id, conf_answer(rc, &st, ans, sizeof(ans)));
		left = 1;
	} else if (rs->n_instances) {
		left = (int)rs->n_instances;
		snprintf(err, errlen,
		         "ListInstances(tag %s=%s) still lists %zu instance(s) (first \"%s\") after every "
		         "TerminateInstance answered OK",
		         CONF_RUN_TAG, c->run_id, rs->n_instances,
		         rs->instances[0]->data ? rs->instances[0]->data->instance_id : "?");
	}
	if (rs)
		drv_response_free(&rs->base);
	return left;
}

void conf_track_free(struct conf_ctx *c)
{
	for (size_t i = 0; i < c->n_tracked; i++) {
		free(c->tracked[i].id);
		free(c->tracked[i].region);
		free(c->tracked[i].attached_to);
		free(c->tracked[i].group_id);
	}
	free(c->tracked);
	c->tracked = NULL;
	c->n_tracked = c->cap_tracked = 0;
}
