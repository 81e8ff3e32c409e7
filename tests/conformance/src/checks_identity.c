/*
 * Transport and identity checks: handshake, health, GetInfo, ValidateConfig,
 * GetFeatures and the advertised <=> implemented rule.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "checks.h"
#include "conf_codes.h"
#include "rpc_table.h"

void check_transport_connect(struct conf_ctx *c)
{
	if (c->o->driver_path && c->start_code) {
		conf_skip(c, "the spawned driver did not start (see handshake.format and handshake.timing)");
		return;
	}
	if (c->start_code)
		conf_fail(c, "could not connect to %s: %s", c->o->address, c->start_error);
}

void check_handshake_format(struct conf_ctx *c)
{
	if (c->start_code == DRV_EDEADLINE) {
		conf_skip(c, "no handshake line arrived to judge (see handshake.timing)");
		return;
	}
	if (c->start_code) {
		conf_fail(c, "the driver did not start: %s", c->start_error);
		return;
	}
	const char *line = drv_host_handshake(c->host);
	struct drv_handshake hs;
	char err[512];
	if (drv_handshake_parse(line, &hs, err, sizeof(err))) {
		conf_fail(c, "handshake line \"%s\" does not parse: %s", line, err);
		return;
	}
	if (hs.core_version != 1 || hs.protocol_version != DRV_PROTOCOL_VERSION ||
	    strcmp(hs.protocol, "grpc") || (strcmp(hs.network, "unix") && strcmp(hs.network, "tcp")))
		conf_fail(c, "handshake line \"%s\": the protocol requires \"1|%d|unix|<path>|grpc\" or tcp",
		          line, DRV_PROTOCOL_VERSION);
}

void check_handshake_timing(struct conf_ctx *c)
{
	if (c->start_code == DRV_EDEADLINE) {
		conf_fail(c, "no handshake line within %d ms (params.handshake_timeout_ms): %s",
		          c->o->handshake_timeout_ms, c->start_error);
		return;
	}
	if (c->start_code) {
		conf_skip(c, "the driver did not start for another reason (see handshake.format)");
		return;
	}
	conf_note(c, "handshake after %.1f ms", drv_host_handshake_ms(c->host));
}

void check_health_serving(struct conf_ctx *c)
{
	struct drv_status st = {0};
	char ans[700];
	int rc = drv_host_health(c->host, c->o->call_timeout_ms, &st);
	if (rc)
		conf_fail(c, "Health Check answered %s; the protocol requires SERVING",
		          conf_answer(rc, &st, ans, sizeof(ans)));
}

static bool type_name_ok(const char *s)
{
	return s && *s && strspn(s, "abcdefghijklmnopqrstuvwxyz0123456789-") == strlen(s);
}

/* GetInfo; the response (caller frees) or NULL after conf_fail. */
static drv_get_info_response *get_info(struct conf_ctx *c)
{
	drv_get_info_request rq = DROVER__COMPUTE__V1__GET_INFO_REQUEST__INIT;
	drv_get_info_response *rs = NULL;
	struct drv_status st = {0};
	char ans[700];
	int rc = drv_host_get_info(c->host, &rq, &rs, c->o->call_timeout_ms, &st);
	if (rc) {
		conf_fail(c, "GetInfo answered %s; the protocol requires OK",
		          conf_answer(rc, &st, ans, sizeof(ans)));
		return NULL;
	}
	return rs;
}

void check_info_well_formed(struct conf_ctx *c)
{
	drv_get_info_response *rs = get_info(c);
	if (!rs)
		return;
	if (!type_name_ok(rs->type))
		conf_fail(c,
		          "GetInfo answered type \"%s\"; the protocol requires a non-empty [a-z0-9-]+ name",
		          rs->type);
	else if (!rs->driver_version[0])
		conf_fail(c, "GetInfo answered an empty driver_version; the protocol requires a version");
	else if ((int)rs->protocol_version != DRV_PROTOCOL_VERSION)
		conf_fail(c, "GetInfo answered protocol_version %d; this harness speaks %d",
		          (int)rs->protocol_version, DRV_PROTOCOL_VERSION);
	drv_response_free(&rs->base);
}

/* Checks one schema text; returns the parsed object (new reference) or NULL after conf_fail. */
static json_t *schema_object(struct conf_ctx *c, const char *what, const char *text)
{
	json_error_t je;
	json_t *s = json_loads(text, 0, &je);
	if (!s) {
		conf_fail(c, "GetInfo %s is not valid JSON (%s at %d:%d): \"%.120s\"", what, je.text, je.line,
		          je.column, text);
		return NULL;
	}
	json_t *type = json_object_get(s, "type");
	json_t *props = json_object_get(s, "properties");
	if (!json_is_object(s) || !json_is_string(type) || strcmp(json_string_value(type), "object")) {
		conf_fail(
		    c,
		    "GetInfo %s is not a JSON Schema of an object (needs \"type\": \"object\"): \"%.120s\"",
		    what, text);
	} else if (!json_is_object(props)) {
		conf_fail(c,
		          "GetInfo %s has no \"properties\" object; the protocol requires a JSON Schema of "
		          "the config's fields",
		          what);
	} else {
		const char *k;
		json_t *v;
		json_object_foreach(props, k, v)
		{
			if (!json_is_object(v)) {
				conf_fail(c, "GetInfo %s: properties.%s is not a schema object", what, k);
				break;
			}
			json_t *t = json_object_get(v, "type");
			if (t && !json_is_string(t) && !json_is_array(t)) {
				conf_fail(c, "GetInfo %s: properties.%s.type must be a string or array", what,
				          k);
				break;
			}
		}
		json_t *req = json_object_get(s, "required");
		if (req && !json_is_array(req))
			conf_fail(c, "GetInfo %s: \"required\" must be an array of names", what);
	}
	if (c->failed) {
		json_decref(s);
		return NULL;
	}
	return s;
}

/* The config schema, and the secrets schema (NULL when the driver has none) into *secrets if asked. */
static json_t *schemas(struct conf_ctx *c, json_t **secrets)
{
	drv_get_info_response *rs = get_info(c);
	if (secrets)
		*secrets = NULL;
	if (!rs)
		return NULL;
	json_t *s = schema_object(c, "config_schema_json", rs->config_schema_json);
	if (s && rs->secrets_schema_json[0]) {
		json_t *sec = schema_object(c, "secrets_schema_json", rs->secrets_schema_json);
		if (!sec) {
			json_decref(s);
			s = NULL;
		} else if (secrets) {
			*secrets = sec;
		} else {
			json_decref(sec);
		}
	}
	drv_response_free(&rs->base);
	return s;
}

json_t *conf_config_schema(struct conf_ctx *c)
{
	return schemas(c, NULL);
}

void check_info_config_schema(struct conf_ctx *c)
{
	json_decref(conf_config_schema(c));
}

/*
 * Validates `cfg` and checks the answer is self-consistent. Returns the
 * response (caller frees) or NULL after conf_fail.
 */
static drv_validate_config_response *validate_with(struct conf_ctx *c, const json_t *cfg,
                                                   const json_t *secrets, const char *what)
{
	struct conf_bc bc;
	conf_bc_init(&bc, cfg, NULL, secrets, NULL);
	drv_validate_config_request rq = DROVER__COMPUTE__V1__VALIDATE_CONFIG_REQUEST__INIT;
	drv_validate_config_response *rs = NULL;
	rq.config = &bc.buf.msg;
	struct drv_status st = {0};
	char ans[700];
	int rc = drv_host_validate_config(c->host, &rq, &rs, c->o->call_timeout_ms, &st);
	if (rc) {
		conf_fail(c, "ValidateConfig(%s %s) answered %s; the protocol requires OK with diagnostics",
		          what, bc.json, conf_answer(rc, &st, ans, sizeof(ans)));
		conf_bc_free(&bc);
		return NULL;
	}
	for (size_t i = 0; i < rs->n_diagnostics; i++) {
		const drv_diagnostic *d = rs->diagnostics[i];
		if (d->severity == DROVER__COMPUTE__V1__SEVERITY__SEVERITY_ERROR && rs->valid) {
			conf_fail(c,
			          "ValidateConfig(%s %s) answered valid=true with an error diagnostic at "
			          "\"%s\" (%s)",
			          what, bc.json, d->field_path, d->summary);
			break;
		}
		if (d->severity != DROVER__COMPUTE__V1__SEVERITY__SEVERITY_ERROR &&
		    d->severity != DROVER__COMPUTE__V1__SEVERITY__SEVERITY_WARNING) {
			conf_fail(c,
			          "ValidateConfig(%s) answered a diagnostic at \"%s\" with severity %d; the "
			          "protocol requires ERROR or WARNING",
			          what, d->field_path, (int)d->severity);
			break;
		}
	}
	conf_bc_free(&bc);
	if (c->failed) {
		drv_response_free(&rs->base);
		return NULL;
	}
	return rs;
}

static drv_validate_config_response *validate(struct conf_ctx *c, const json_t *cfg, const char *what)
{
	return validate_with(c, cfg, c->o->secrets, what);
}

static void describe_diags(const drv_validate_config_response *rs, char *buf, size_t len)
{
	size_t off = (size_t)snprintf(buf, len, "valid=%s, diagnostics [", rs->valid ? "true" : "false");
	for (size_t i = 0; i < rs->n_diagnostics && off < len; i++)
		off += (size_t)snprintf(
		    buf + off, len - off, "%s%s at \"%s\": %s", i ? "; " : "",
		    rs->diagnostics[i]->severity == DROVER__COMPUTE__V1__SEVERITY__SEVERITY_ERROR ? "ERROR"
		                                                                                  : "WARNING",
		    rs->diagnostics[i]->field_path, rs->diagnostics[i]->summary);
	if (off < len)
		snprintf(buf + off, len - off, "]");
}

void check_config_valid_accepted(struct conf_ctx *c)
{
	json_t *cfg = c->o->config ? json_incref(c->o->config) : json_object();
	drv_validate_config_response *rs = validate(c, cfg, "the valid config");
	if (rs && !rs->valid) {
		char d[1000];
		describe_diags(rs, d, sizeof(d));
		conf_fail(
		    c, "ValidateConfig(the config of --config) answered %s; the protocol requires valid=true",
		    d);
	}
	if (rs)
		drv_response_free(&rs->base);
	json_decref(cfg);
}

/* Expects `cfg` to be rejected with an error (or, if any_severity, any) diagnostic at `path` ("" = any path).
 */
static void expect_rejected_with(struct conf_ctx *c, json_t *cfg, const json_t *secrets, const char *what,
                                 const char *path, bool any_severity)
{
	drv_validate_config_response *rs = validate_with(c, cfg, secrets, what);
	if (!rs)
		return;
	bool found = false;
	for (size_t i = 0; i < rs->n_diagnostics; i++) {
		const drv_diagnostic *d = rs->diagnostics[i];
		bool sev_ok = any_severity || d->severity == DROVER__COMPUTE__V1__SEVERITY__SEVERITY_ERROR;
		if (sev_ok && (!*path || strcmp(d->field_path, path) == 0))
			found = true;
	}
	char *text = json_dumps(cfg, JSON_COMPACT | JSON_SORT_KEYS);
	char d[1000];
	describe_diags(rs, d, sizeof(d));
	if (!any_severity && rs->valid)
		conf_fail(c, "ValidateConfig(%s %s) answered %s; the protocol requires valid=false", what,
		          text, d);
	else if (!found && *path)
		conf_fail(c,
		          "ValidateConfig(%s %s) answered %s; the protocol requires a%s diagnostic at field "
		          "path \"%s\"",
		          what, text, d, any_severity ? "" : "n error", path);
	else if (!found)
		conf_fail(c, "ValidateConfig(%s %s) answered %s; the protocol requires an error diagnostic",
		          what, text, d);
	free(text);
	drv_response_free(&rs->base);
}

static void expect_rejected(struct conf_ctx *c, json_t *cfg, const char *what, const char *path,
                            bool any_severity)
{
	expect_rejected_with(c, cfg, c->o->secrets, what, path, any_severity);
}

static json_t *base_copy(struct conf_ctx *c)
{
	return c->o->config ? json_deep_copy(c->o->config) : json_object();
}

void check_config_missing_required(struct conf_ctx *c)
{
	json_t *secrets_schema;
	json_t *schema = schemas(c, &secrets_schema);
	if (!schema)
		return;
	const char *name = json_string_value(json_array_get(json_object_get(schema, "required"), 0));
	const char *secret =
	    json_string_value(json_array_get(json_object_get(secrets_schema, "required"), 0));
	char path[300], what[400];
	if (!name && !secret)
		conf_skip(c, "the driver's config and secrets schemas declare nothing required");
	if (name) {
		json_t *cfg = base_copy(c);
		json_object_del(cfg, name);
		snprintf(path, sizeof(path), "/%s", name);
		snprintf(what, sizeof(what), "config without required \"%s\":", name);
		expect_rejected(c, cfg, what, path, false);
		json_decref(cfg);
	}
	/* The secrets map without its first required secret (values are never printed). */
	if (secret && !c->failed) {
		json_t *cfg = base_copy(c);
		json_t *sec = c->o->secrets ? json_deep_copy(c->o->secrets) : json_object();
		json_object_del(sec, secret);
		snprintf(path, sizeof(path), "/secrets/%s", secret);
		snprintf(what, sizeof(what), "secrets without required \"%s\", config", secret);
		expect_rejected_with(c, cfg, sec, what, path, false);
		json_decref(sec);
		json_decref(cfg);
	}
	json_decref(secrets_schema);
	json_decref(schema);
}

static const char *schema_type(json_t *prop)
{
	json_t *t = json_object_get(prop, "type");
	if (json_is_array(t))
		t = json_array_get(t, 0);
	return json_string_value(t);
}

void check_config_ill_typed(struct conf_ctx *c)
{
	json_t *schema = conf_config_schema(c);
	if (!schema)
		return;
	json_t *props = json_object_get(schema, "properties");
	const char *name = NULL;
	json_t *wrong = NULL;
	/* The first property (in sorted order, so runs are repeatable) whose type we can contradict. */
	void *iter;
	const char *best = NULL;
	for (iter = json_object_iter(props); iter; iter = json_object_iter_next(props, iter)) {
		const char *k = json_object_iter_key(iter);
		if (schema_type(json_object_iter_value(iter)) && (!best || strcmp(k, best) < 0))
			best = k;
	}
	if (best) {
		name = best;
		const char *t = schema_type(json_object_get(props, best));
		wrong = strcmp(t, "string") == 0 ? json_integer(12345)
		                                 : json_string("not-a-"
		                                               "value-of-this-type");
		if (strcmp(t, "array") == 0 || strcmp(t, "object") == 0) {
			json_decref(wrong);
			wrong = json_integer(7);
		}
	}
	if (!name) {
		conf_skip(c, "the driver's config schema declares no typed property");
	} else {
		json_t *cfg = base_copy(c);
		json_object_set_new(cfg, name, wrong);
		char path[300], what[400];
		snprintf(path, sizeof(path), "/%s", name);
		snprintf(what, sizeof(what), "config with ill-typed \"%s\":", name);
		expect_rejected(c, cfg, what, path, false);
		json_decref(cfg);
	}
	json_decref(schema);
}

void check_config_unknown_field(struct conf_ctx *c)
{
	json_t *cfg = base_copy(c);
	json_object_set_new(cfg, "conformance_unknown_field", json_true());
	expect_rejected(c, cfg, "config with unknown field:", "/conformance_unknown_field", true);
	json_decref(cfg);
}

void check_config_invalid_rejected(struct conf_ctx *c)
{
	if (!c->o->invalid_config) {
		conf_skip(c, "params.invalid_config_field is not set in --config");
		return;
	}
	json_t *cfg = base_copy(c);
	json_object_update(cfg, c->o->invalid_config);
	expect_rejected(c, cfg, "params.invalid_config_field:", "", false);
	json_decref(cfg);
}

/* GetFeatures with or without the config; fills *set. Returns 0 or -1 after conf_fail. */
static int get_features(struct conf_ctx *c, bool with_config, drv_features *set, char *list, size_t listlen)
{
	drv_get_features_request rq = DROVER__COMPUTE__V1__GET_FEATURES_REQUEST__INIT;
	drv_get_features_response *rs = NULL;
	if (with_config)
		rq.config = &c->bc.buf.msg;
	struct drv_status st = {0};
	char ans[700];
	const char *what = with_config ? "GetFeatures(config)" : "GetFeatures()";
	int rc = drv_host_get_features(c->host, &rq, &rs, c->o->call_timeout_ms, &st);
	if (rc) {
		conf_fail(c, "%s answered %s; the protocol requires OK", what,
		          conf_answer(rc, &st, ans, sizeof(ans)));
		return -1;
	}
	*set = 0;
	size_t off = 0;
	list[0] = '\0';
	for (size_t i = 0; i < rs->n_features; i++) {
		int f = (int)rs->features[i];
		const char *name = drv_feature_name(f);
		off += (size_t)snprintf(list + off, off < listlen ? listlen - off : 0, "%s%s", i ? "," : "",
		                        name ? name : "?");
		if (!name && !c->failed)
			conf_fail(c, "%s answered unknown feature value %d", what, f);
		if (i && (int)rs->features[i - 1] >= f && !c->failed)
			conf_fail(c,
			          "%s answered features out of order or duplicated (%d after %d); the "
			          "protocol requires ascending order without duplicates",
			          what, f, (int)rs->features[i - 1]);
		if (f > 0 && f < 64)
			*set |= DRV_FEATURE_BIT(f);
	}
	drv_response_free(&rs->base);
	return c->failed ? -1 : 0;
}

void check_features_well_formed(struct conf_ctx *c)
{
	drv_features a, b;
	char la[300], lb[300];
	if (get_features(c, false, &a, la, sizeof(la)) || get_features(c, true, &b, lb, sizeof(lb)))
		return;
	if (b & ~a)
		conf_fail(c,
		          "GetFeatures(config) answered [%s], more than GetFeatures() [%s]; a config may "
		          "only narrow the features",
		          lb, la);
}

void check_features_stable(struct conf_ctx *c)
{
	for (int with = 0; with < 2 && !c->failed; with++) {
		drv_features first = 0, next;
		char lfirst[300], lnext[300];
		for (int i = 0; i < c->o->repeat + 1 && !c->failed; i++) {
			if (get_features(c, with, i ? &next : &first, i ? lnext : lfirst, 300))
				return;
			if (i && next != first)
				conf_fail(
				    c,
				    "%s answered [%s] and then [%s]; the protocol requires a stable answer",
				    with ? "GetFeatures(config)" : "GetFeatures()", lfirst, lnext);
		}
	}
}

/* ---- advertised <=> implemented ---- */

struct rpc_entry {
	const char *method;
	int feature;
};

#define X(op, Method, feature, req_t, resp_t, snake) {#Method, feature},
static const struct rpc_entry rpcs[] = {DRV_RPC_TABLE(X)};
#undef X

/* How a probe's request is built. */
struct probe_how {
	bool empty_ids; /* the malformed variant, every id and name "" (INVALID_ARGUMENT territory) */
	/*
	 * Well-formed creates: each carries an idempotency key (CreateInstance
	 * `offer` too, when set), so that only the config can be wrong.
	 */
	bool keyed;
	const drv_offer *offer;
	drv_backend_config *cfg; /* NULL: the base config */
};

/*
 * Calls `method` with a request that a driver implementing it answers with
 * something other than UNIMPLEMENTED, without creating anything when the
 * driver follows the protocol (unknown ids, missing idempotency keys, or
 * with how->keyed a config it must refuse). Whatever a driver does create
 * anyway is tracked for cleanup.
 */
static int probe(struct conf_ctx *c, const char *method, const struct probe_how *how, char *desc,
                 size_t desclen, struct drv_status *st)
{
	char missing[160] = "";
	if (!how->empty_ids)
		conf_name(c, "missing", missing, sizeof(missing));
	int to = c->o->call_timeout_ms;
	drv_backend_config *cfg = how->cfg ? how->cfg : &c->bc.buf.msg;
	const char *key = how->keyed ? missing : "";
	const char *region = how->offer ? how->offer->region : "";
	ProtobufCMessage *resp = NULL;
	int rc;
	if (strcmp(method, "GetOffers") == 0) {
		drv_get_offers_request rq = DROVER__COMPUTE__V1__GET_OFFERS_REQUEST__INIT;
		rq.config = cfg;
		snprintf(desc, desclen, "GetOffers(config)");
		rc = drv_host_call(c->host, method, &rq.base, &resp, to, st);
	} else if (strcmp(method, "CreateInstance") == 0) {
		drv_create_instance_request rq = DROVER__COMPUTE__V1__CREATE_INSTANCE_REQUEST__INIT;
		drv_instance_configuration ic = DROVER__COMPUTE__V1__INSTANCE_CONFIGURATION__INIT;
		ic.name = missing;
		ic.idempotency_key = (char *)key;
		rq.config = cfg;
		rq.instance = &ic;
		rq.offer = (drv_offer *)how->offer;
		if (how->keyed)
			snprintf(desc, desclen, "CreateInstance(%s, key \"%s\")",
			         how->offer ? "an offer" : "no offer", key);
		else
			snprintf(desc, desclen, "CreateInstance(no offer, no idempotency key)");
		rc = drv_host_call(c->host, method, &rq.base, &resp, to, st);
		if (rc == 0 && ((drv_create_instance_response *)resp)->data)
			conf_track(c, CONF_INSTANCE,
			           ((drv_create_instance_response *)resp)->data->instance_id,
			           ((drv_create_instance_response *)resp)->data->region, NULL);
	} else if (strcmp(method, "GetInstance") == 0 || strcmp(method, "TerminateInstance") == 0) {
		drv_get_instance_request rq = DROVER__COMPUTE__V1__GET_INSTANCE_REQUEST__INIT;
		drv_terminate_instance_request tq = DROVER__COMPUTE__V1__TERMINATE_INSTANCE_REQUEST__INIT;
		rq.config = tq.config = cfg;
		rq.instance_id = tq.instance_id = missing;
		snprintf(desc, desclen, "%s(id=\"%s\")", method, missing);
		rc = drv_host_call(c->host, method, method[0] == 'G' ? &rq.base : &tq.base, &resp, to, st);
	} else if (strcmp(method, "ListInstances") == 0) {
		drv_list_instances_request rq = DROVER__COMPUTE__V1__LIST_INSTANCES_REQUEST__INIT;
		rq.config = cfg;
		snprintf(desc, desclen, "ListInstances(config)");
		rc = drv_host_call(c->host, method, &rq.base, &resp, to, st);
	} else if (strcmp(method, "CreatePlacementGroup") == 0) {
		drv_create_placement_group_request rq =
		    DROVER__COMPUTE__V1__CREATE_PLACEMENT_GROUP_REQUEST__INIT;
		rq.config = cfg;
		rq.name = missing;
		rq.strategy = DROVER__COMPUTE__V1__PLACEMENT_STRATEGY__PLACEMENT_STRATEGY_CLUSTER;
		snprintf(desc, desclen, "CreatePlacementGroup(name=\"%s\")", missing);
		rc = drv_host_call(c->host, method, &rq.base, &resp, to, st);
		if (rc == 0 && ((drv_create_placement_group_response *)resp)->group) {
			drv_placement_group *g = ((drv_create_placement_group_response *)resp)->group;
			conf_track(c, CONF_PLACEMENT_GROUP, g->name[0] ? g->name : missing, g->region,
			           g->group_id);
		}
	} else if (strcmp(method, "DeletePlacementGroup") == 0) {
		drv_delete_placement_group_request rq =
		    DROVER__COMPUTE__V1__DELETE_PLACEMENT_GROUP_REQUEST__INIT;
		drv_placement_group g = DROVER__COMPUTE__V1__PLACEMENT_GROUP__INIT;
		g.name = missing;
		g.group_id = missing;
		rq.config = cfg;
		rq.group = &g;
		snprintf(desc, desclen, "DeletePlacementGroup(name=\"%s\")", missing);
		rc = drv_host_call(c->host, method, &rq.base, &resp, to, st);
	} else if (strcmp(method, "CreateVolume") == 0) {
		drv_create_volume_request rq = DROVER__COMPUTE__V1__CREATE_VOLUME_REQUEST__INIT;
		drv_volume_configuration vc = DROVER__COMPUTE__V1__VOLUME_CONFIGURATION__INIT;
		vc.name = missing;
		vc.size_mib = c->o->volume_size_mib;
		vc.idempotency_key = (char *)key;
		vc.region = (char *)region;
		rq.config = cfg;
		rq.volume = &vc;
		snprintf(desc, desclen, "CreateVolume(%s)",
		         how->keyed ? "with an idempotency key" : "no idempotency key");
		rc = drv_host_call(c->host, method, &rq.base, &resp, to, st);
		if (rc == 0 && ((drv_create_volume_response *)resp)->volume)
			conf_track(c, CONF_VOLUME, ((drv_create_volume_response *)resp)->volume->volume_id,
			           ((drv_create_volume_response *)resp)->volume->region, NULL);
	} else if (strcmp(method, "RegisterVolume") == 0 || strcmp(method, "DeleteVolume") == 0) {
		drv_register_volume_request rq = DROVER__COMPUTE__V1__REGISTER_VOLUME_REQUEST__INIT;
		drv_delete_volume_request dq = DROVER__COMPUTE__V1__DELETE_VOLUME_REQUEST__INIT;
		rq.config = dq.config = cfg;
		rq.volume_id = dq.volume_id = missing;
		snprintf(desc, desclen, "%s(id=\"%s\")", method, missing);
		rc = drv_host_call(c->host, method, method[0] == 'R' ? &rq.base : &dq.base, &resp, to, st);
	} else if (strcmp(method, "AttachVolume") == 0 || strcmp(method, "DetachVolume") == 0) {
		drv_attach_volume_request rq = DROVER__COMPUTE__V1__ATTACH_VOLUME_REQUEST__INIT;
		drv_detach_volume_request dq = DROVER__COMPUTE__V1__DETACH_VOLUME_REQUEST__INIT;
		rq.config = dq.config = cfg;
		rq.volume_id = dq.volume_id = missing;
		rq.instance_id = dq.instance_id = missing;
		snprintf(desc, desclen, "%s(volume=\"%s\")", method, missing);
		rc = drv_host_call(c->host, method, method[0] == 'A' ? &rq.base : &dq.base, &resp, to, st);
	} else if (strcmp(method, "CreateGateway") == 0) {
		drv_create_gateway_request rq = DROVER__COMPUTE__V1__CREATE_GATEWAY_REQUEST__INIT;
		drv_gateway_configuration gc = DROVER__COMPUTE__V1__GATEWAY_CONFIGURATION__INIT;
		gc.name = missing;
		gc.public_ip = 1;
		gc.idempotency_key = (char *)key;
		gc.region = (char *)region;
		rq.config = cfg;
		rq.gateway = &gc;
		snprintf(desc, desclen, "CreateGateway(%s)",
		         how->keyed ? "with an idempotency key" : "no idempotency key");
		rc = drv_host_call(c->host, method, &rq.base, &resp, to, st);
		if (rc == 0 && ((drv_create_gateway_response *)resp)->gateway)
			conf_track(c, CONF_GATEWAY,
			           ((drv_create_gateway_response *)resp)->gateway->instance_id,
			           ((drv_create_gateway_response *)resp)->gateway->region, NULL);
	} else if (strcmp(method, "TerminateGateway") == 0) {
		drv_terminate_gateway_request rq = DROVER__COMPUTE__V1__TERMINATE_GATEWAY_REQUEST__INIT;
		rq.config = cfg;
		rq.instance_id = missing;
		snprintf(desc, desclen, "TerminateGateway(id=\"%s\")", missing);
		rc = drv_host_call(c->host, method, &rq.base, &resp, to, st);
	} else {
		/* An RPC added to the table without a probe here: call it with an empty request. */
		snprintf(desc, desclen, "%s(config)", method);
		rc = DRV_EUNIMPLEMENTED;
		snprintf(st->message, sizeof(st->message), "the harness has no probe for %s", method);
	}
	if (resp)
		drv_response_free(resp);
	return rc;
}

/*
 * Without a feature set from GetFeatures(config) (features.well_formed fails
 * that), the two checks below cannot tell advertised from not: skip them.
 */
static bool features_known(struct conf_ctx *c)
{
	if (!c->features_ok)
		conf_skip(c, "%s, so which features are advertised is unknown", c->features_error);
	return c->features_ok;
}

void check_features_advertised_implemented(struct conf_ctx *c)
{
	if (!features_known(c))
		return;
	size_t probed = 0;
	for (size_t i = 0; i < sizeof(rpcs) / sizeof(rpcs[0]) && !c->failed; i++) {
		if (!conf_has(c, rpcs[i].feature))
			continue;
		char desc[300], ans[700];
		struct drv_status st = {0};
		int rc = probe(c, rpcs[i].method, &(struct probe_how){0}, desc, sizeof(desc), &st);
		probed++;
		if (rc == DRV_EUNIMPLEMENTED)
			conf_fail(c,
			          "%s answered %s though the driver advertises %s; every RPC of an "
			          "advertised feature must be implemented",
			          desc, conf_answer(rc, &st, ans, sizeof(ans)),
			          drv_feature_name(rpcs[i].feature));
		else
			conf_note(c, "%s answered %s", desc, conf_answer(rc, &st, ans, sizeof(ans)));
	}
	if (!probed && !c->failed)
		conf_skip(c, "driver advertises no operation feature");
}

void check_features_unadvertised_unimplemented(struct conf_ctx *c)
{
	if (!features_known(c))
		return;
	size_t probed = 0;
	for (size_t i = 0; i < sizeof(rpcs) / sizeof(rpcs[0]) && !c->failed; i++) {
		if (conf_has(c, rpcs[i].feature))
			continue;
		char desc[300], ans[700];
		struct drv_status st = {0};
		int rc = probe(c, rpcs[i].method, &(struct probe_how){0}, desc, sizeof(desc), &st);
		probed++;
		if (rc != DRV_EUNIMPLEMENTED)
			conf_fail(c,
			          "%s answered %s though the driver does not advertise %s; the protocol "
			          "requires UNIMPLEMENTED",
			          desc, conf_answer(rc, &st, ans, sizeof(ans)),
			          drv_feature_name(rpcs[i].feature));
	}
	if (!probed && !c->failed)
		conf_skip(c, "driver advertises every operation feature; no RPC must answer UNIMPLEMENTED");
}

/* ---- status codes against the normative table ---- */

#define X(method, codes) {method, codes},
static const struct {
	const char *method;
	const char *codes; /* space-separated status names, from compute.proto's "Codes:" comments */
} rpc_codes[] = {CONF_RPC_CODES(X)};
#undef X

/* Codes the general table allows for any call: a passed deadline, transient failure, credentials. */
static const char *const any_call_codes = "DEADLINE_EXCEEDED UNAVAILABLE UNAUTHENTICATED PERMISSION_DENIED";

static bool code_listed(const char *list, int rc)
{
	const char *name = drv_error_name(rc);
	size_t n = strlen(name);
	for (const char *p = strstr(list, name); p; p = strstr(p + 1, name))
		if ((p == list || p[-1] == ' ') && (p[n] == ' ' || p[n] == '\0'))
			return true;
	return false;
}

/* Fails the check when `rc` is not a code compute.proto allows for `method`. */
static void expect_code_allowed(struct conf_ctx *c, const char *method, const char *desc, int rc,
                                const struct drv_status *st)
{
	const char *codes = NULL;
	for (size_t i = 0; i < sizeof(rpc_codes) / sizeof(rpc_codes[0]); i++)
		if (strcmp(rpc_codes[i].method, method) == 0)
			codes = rpc_codes[i].codes;
	char ans[700];
	conf_note(c, "%s answered %s", desc, conf_answer(rc, st, ans, sizeof(ans)));
	if (!codes || code_listed(codes, rc) || code_listed(any_call_codes, rc))
		return;
	conf_fail(c, "%s answered %s; compute.proto allows %s only %s (and %s for any call)", desc, ans,
	          method, codes, any_call_codes);
}

void check_errors_codes_in_table(struct conf_ctx *c)
{
	/* ValidateConfig answers OK for a bad config: the diagnostics are the answer. */
	struct conf_bc bad;
	conf_bc_init(&bad, NULL, NULL, c->o->secrets, "not json");
	drv_validate_config_request vq = DROVER__COMPUTE__V1__VALIDATE_CONFIG_REQUEST__INIT;
	drv_validate_config_response *vs = NULL;
	struct drv_status st = {0};
	vq.config = &bad.buf.msg;
	int rc = drv_host_validate_config(c->host, &vq, &vs, c->o->call_timeout_ms, &st);
	expect_code_allowed(c, "ValidateConfig", "ValidateConfig(config_json \"not json\")", rc, &st);
	if (vs)
		drv_response_free(&vs->base);
	conf_bc_free(&bad);

	for (size_t i = 0; i < sizeof(rpcs) / sizeof(rpcs[0]) && !c->failed; i++) {
		if (!conf_has(c, rpcs[i].feature))
			continue; /* features.unadvertised_unimplemented covers those */
		for (int empty = 0; empty < 2 && !c->failed; empty++) {
			char desc[300];
			memset(&st, 0, sizeof(st));
			rc = probe(c, rpcs[i].method, &(struct probe_how){.empty_ids = empty}, desc,
			           sizeof(desc), &st);
			expect_code_allowed(c, rpcs[i].method, desc, rc, &st);
		}
	}
}

/* ---- credentials ---- */

/* The secrets of --config with params.bad_secrets over them; new reference. */
static json_t *bad_secrets(struct conf_ctx *c)
{
	json_t *sec = c->o->secrets ? json_deep_copy(c->o->secrets) : json_object();
	json_object_update(sec, c->o->bad_secrets);
	return sec;
}

/* ValidateConfig(config, bad secrets) must answer an error at /secrets/<one of params.bad_secrets>. */
static void validate_bad_secrets(struct conf_ctx *c, json_t *secrets)
{
	json_t *cfg = base_copy(c);
	drv_validate_config_response *rs = validate_with(c, cfg, secrets, "config with params.bad_secrets,");
	json_decref(cfg);
	if (!rs)
		return;
	bool found = false;
	for (size_t i = 0; i < rs->n_diagnostics && !found; i++) {
		const drv_diagnostic *d = rs->diagnostics[i];
		const char *key;
		json_t *val;
		json_object_foreach(c->o->bad_secrets, key, val)
		{
			char path[300];
			snprintf(path, sizeof(path), "/secrets/%s", key);
			found = found || (d->severity == DROVER__COMPUTE__V1__SEVERITY__SEVERITY_ERROR &&
			                  strcmp(d->field_path, path) == 0);
		}
	}
	if (!found) {
		char d[1000];
		describe_diags(rs, d, sizeof(d));
		/* The secrets' values are never printed, only their names. */
		char names[300] = "";
		size_t off = 0;
		const char *key;
		json_t *val;
		json_object_foreach(c->o->bad_secrets, key, val)
		{
			if (off < sizeof(names))
				off += (size_t)snprintf(names + off, sizeof(names) - off, "%s/secrets/%s",
				                        off ? " or " : "", key);
		}
		conf_fail(c,
		          "ValidateConfig(config with params.bad_secrets) answered %s; the protocol requires "
		          "an error diagnostic at the secret's field path (%s)",
		          d, names);
	}
	drv_response_free(&rs->base);
}

void check_errors_bad_secrets(struct conf_ctx *c)
{
	if (!c->o->bad_secrets) {
		conf_skip(c, "params.bad_secrets is not set in --config (secrets the provider refuses)");
		return;
	}
	json_t *secrets = bad_secrets(c);
	struct conf_bc bad;
	conf_bc_init(&bad, c->o->config, NULL, secrets, NULL);
	/*
	 * An offer for CreateInstance, asked with the good secrets, so that the
	 * create is well-formed and only its credentials are wrong.
	 */
	drv_get_offers_response *offers = NULL;
	if (conf_has(c, DRV_FEATURE_OFFERS)) {
		drv_get_offers_request rq = DROVER__COMPUTE__V1__GET_OFFERS_REQUEST__INIT;
		struct drv_status st = {0};
		rq.config = &c->bc.buf.msg;
		if (drv_host_get_offers(c->host, &rq, &offers, c->o->call_timeout_ms, &st))
			offers = NULL;
	}
	struct probe_how how = {
	    .keyed = true,
	    .offer = offers && offers->n_offers ? offers->offers[0] : NULL,
	    .cfg = &bad.buf.msg,
	};
	size_t probed = 0;
	for (size_t i = 0; i < sizeof(rpcs) / sizeof(rpcs[0]) && !c->failed; i++) {
		if (!conf_has(c, rpcs[i].feature))
			continue;
		char desc[300], ans[700];
		struct drv_status st = {0};
		int rc = probe(c, rpcs[i].method, &how, desc, sizeof(desc), &st);
		probed++;
		if (rc != DRV_EUNAUTHENTICATED && rc != DRV_EPERM)
			conf_fail(c,
			          "%s with params.bad_secrets answered %s; the protocol requires "
			          "UNAUTHENTICATED or "
			          "PERMISSION_DENIED for secrets the provider refuses",
			          desc, conf_answer(rc, &st, ans, sizeof(ans)));
		else
			conf_note(c, "%s answered %s", desc, conf_answer(rc, &st, ans, sizeof(ans)));
	}
	if (!c->failed)
		validate_bad_secrets(c, secrets);
	if (!probed && !c->failed)
		conf_note(c, "driver advertises no provider call; only ValidateConfig was checked");
	if (offers)
		drv_response_free(&offers->base);
	conf_bc_free(&bad);
	json_decref(secrets);
}
