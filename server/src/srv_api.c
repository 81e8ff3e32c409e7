#include "srv_api.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <fcntl.h>
#include <malloc.h>
#include <netdb.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>

#include "drover/address.h"
#include "drover/api/v1/api.pb-c.h"
#include "drover/rpc.h"
#include "srv_config.h"
#include "srv_engine.h"
#include "srv_log.h"
#include "srv_store.h"
#include "srv_supervisor.h"

typedef Drover__Api__V1__Instance api_instance;

struct api_call {
	struct api_call *next;
	struct srv_api *api;
	struct drv_rpc_call *call;
	const ProtobufCMessage *req;
};

struct srv_api {
	uv_loop_t *loop;
	struct srv_store *st;
	struct srv_supervisor *sup;
	struct srv_engine *eng;
	const struct srv_config *cfg;
	struct drv_rpc_server *unix_srv;
	struct drv_rpc_server *tcp_srv;
	int tcp_port;
	char token[128];
	size_t token_len;
	uv_async_t async;
	uv_timer_t trim;      /* gives malloc's free memory back once a burst is over */
	uint64_t last_big_ms; /* loop time of the last big reply */
	long trimmed_kb;      /* RSS after the last trim */
	pthread_mutex_t mu;
	struct api_call *head, *tail;         /* under mu */
	bool closed;                          /* under mu: the loop no longer takes calls */
	struct deferred *dfr_head, *dfr_tail; /* answers waiting for the store's commit (loop thread) */
};

/*
 * An answer given while the store's batch is open: what it says (an
 * instance "terminating", a create's row) is not durable until the batch
 * commits, and a crash in between would break a promise already made to the
 * client. It goes out after the commit (srv_store_set_commit_hook).
 */
struct deferred {
	struct deferred *next;
	struct api_call *c;
	int code;
	char *message;
	ProtobufCMessage *resp; /* a copy: the handler frees its own on return */
};

/* ---- a per-reply garbage list: everything built for one response ---- */

struct gc {
	void **ptrs;
	size_t n, cap;
	ProtobufCMessage **msgs;
	size_t n_msgs, cap_msgs;
	/*
	 * An allocation failed: the reply is incomplete (NULL members), so it is
	 * never packed; reply_gc() answers DRV_ENOMEM instead. Builders only
	 * avoid dereferencing what they did not get.
	 */
	bool oom;
};

static void *gc_add(struct gc *g, void *p)
{
	if (!p) {
		g->oom = true;
		return NULL;
	}
	if (g->n == g->cap) {
		size_t cap = g->cap ? g->cap * 2 : 32;
		void **ptrs = realloc(g->ptrs, cap * sizeof(void *));
		if (!ptrs) {
			free(p);
			g->oom = true;
			return NULL;
		}
		g->ptrs = ptrs;
		g->cap = cap;
	}
	g->ptrs[g->n++] = p;
	return p;
}

static void *gc_alloc(struct gc *g, size_t size)
{
	return gc_add(g, calloc(1, size ? size : 1));
}

static char *gc_strdup(struct gc *g, const char *s)
{
	return gc_add(g, strdup(s ? s : ""));
}

static void *gc_msg(struct gc *g, ProtobufCMessage *m)
{
	if (!m)
		return NULL;
	if (g->n_msgs == g->cap_msgs) {
		size_t cap = g->cap_msgs ? g->cap_msgs * 2 : 16;
		ProtobufCMessage **msgs = realloc(g->msgs, cap * sizeof(*g->msgs));
		if (!msgs) {
			protobuf_c_message_free_unpacked(m, NULL);
			g->oom = true;
			return NULL;
		}
		g->msgs = msgs;
		g->cap_msgs = cap;
	}
	g->msgs[g->n_msgs++] = m;
	return m;
}

static void gc_free(struct gc *g)
{
	for (size_t i = 0; i < g->n; i++)
		free(g->ptrs[i]);
	for (size_t i = 0; i < g->n_msgs; i++)
		protobuf_c_message_free_unpacked(g->msgs[i], NULL);
	free(g->ptrs);
	free(g->msgs);
	memset(g, 0, sizeof(*g));
}

static void reply_err(struct api_call *c, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void finish(struct api_call *c)
{
	free(c);
}

static ProtobufCMessage *msg_copy(const ProtobufCMessage *m)
{
	size_t len = protobuf_c_message_get_packed_size(m);
	uint8_t *buf = malloc(len ? len : 1);
	if (!buf)
		return NULL;
	protobuf_c_message_pack(m, buf);
	ProtobufCMessage *copy = protobuf_c_message_unpack(m->descriptor, NULL, len, buf);
	free(buf);
	return copy;
}

/* Answers now, or after the commit when the store has writes not yet durable. */
static void reply(struct api_call *c, int code, const char *msg, const ProtobufCMessage *resp)
{
	struct srv_api *api = c->api;
	if (srv_store_in_batch(api->st)) {
		struct deferred *d = calloc(1, sizeof(*d));
		if (d && msg && !(d->message = strdup(msg))) {
			free(d);
			d = NULL;
		}
		if (d && resp && !(d->resp = msg_copy(resp))) {
			free(d->message);
			free(d);
			d = NULL;
		}
		if (!d) {
			/* No promise made: a retry finds what did happen. */
			drv_rpc_reply(c->call, DRV_ENOMEM,
			              "out of memory answering; the request may have taken effect", NULL);
			finish(c);
			return;
		}
		d->c = c;
		d->code = code;
		if (api->dfr_tail)
			api->dfr_tail->next = d;
		else
			api->dfr_head = d;
		api->dfr_tail = d;
		return;
	}
	drv_rpc_reply(c->call, code, msg, resp);
	finish(c);
}

/* The store's commit hook: the answers waiting for it go out, or say it failed. */
static void committed(void *ud, bool ok)
{
	struct srv_api *api = ud;
	struct deferred *d = api->dfr_head;
	api->dfr_head = api->dfr_tail = NULL;
	while (d) {
		struct deferred *next = d->next;
		if (ok)
			drv_rpc_reply(d->c->call, d->code, d->message, d->resp);
		else
			drv_rpc_reply(d->c->call, DRV_EINTERNAL,
			              "the server could not record this request's state; ask again", NULL);
		finish(d->c);
		if (d->resp)
			protobuf_c_message_free_unpacked(d->resp, NULL);
		free(d->message);
		free(d);
		d = next;
	}
}

static void reply_ok(struct api_call *c, const ProtobufCMessage *resp)
{
	reply(c, 0, NULL, resp);
}

static void reply_err(struct api_call *c, int code, const char *fmt, ...)
{
	char msg[2048];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	reply(c, code, msg, NULL);
}

/* A reply built with g: sent only when every part of it was allocated. */
static void reply_gc(struct api_call *c, const struct gc *g, const ProtobufCMessage *resp)
{
	if (g->oom)
		reply_err(c, DRV_ENOMEM, "out of memory");
	else
		reply_ok(c, resp);
}

/* ---- names and conversions ---- */

/* A range whose min is above its max can match nothing: a mistake, said so. */
static int check_requirements(const drv_requirements *r, char *bad, size_t badlen)
{
	if (!r)
		return 0;
	const struct {
		const char *name;
		const drv_uint_range *range;
	} ranges[] = {{"cpus", r->cpus},
	              {"memory_mib", r->memory_mib},
	              {"disk_mib", r->disk_mib},
	              {"gpu_count", r->gpu_count},
	              {"gpu_memory_mib", r->gpu_memory_mib}};
	for (size_t i = 0; i < sizeof(ranges) / sizeof(ranges[0]); i++) {
		const drv_uint_range *u = ranges[i].range;
		if (u && u->_min_case == DROVER__COMPUTE__V1__UINT_RANGE___MIN_MIN &&
		    u->_max_case == DROVER__COMPUTE__V1__UINT_RANGE___MAX_MAX && u->min > u->max) {
			snprintf(bad, badlen, "requirements.%s: min %llu is above max %llu", ranges[i].name,
			         (unsigned long long)u->min, (unsigned long long)u->max);
			return -1;
		}
	}
	if (r->_max_price_case == DROVER__COMPUTE__V1__REQUIREMENTS___MAX_PRICE_MAX_PRICE &&
	    !(r->max_price >= 0)) {
		snprintf(bad, badlen, "requirements.max_price: must be a number >= 0");
		return -1;
	}
	return 0;
}

static int parse_features(char **names, size_t n, drv_features *out, char *bad, size_t badlen)
{
	*out = 0;
	for (size_t i = 0; i < n; i++) {
		int f = drv_feature_from_name(names[i]);
		if (f <= 0 || f >= 64) {
			snprintf(bad, badlen, "%s", names[i]);
			return -1;
		}
		*out |= DRV_FEATURE_BIT(f);
	}
	return 0;
}

static void features_to_list(struct gc *g, drv_features f, size_t *n, Drover__Compute__V1__Feature **out)
{
	size_t cnt = 0;
	Drover__Compute__V1__Feature *list = gc_alloc(g, 64 * sizeof(*list));
	if (!list)
		return;
	for (int i = 1; i < 64; i++)
		if (f & DRV_FEATURE_BIT(i))
			list[cnt++] = (Drover__Compute__V1__Feature)i;
	*n = cnt;
	*out = list;
}

static Drover__Api__V1__InstanceStatus status_of(const struct srv_instance *in)
{
	const char *s = in->status;
	if (strcmp(s, SRV_ST_PENDING) == 0)
		return DROVER__API__V1__INSTANCE_STATUS__INSTANCE_STATUS_PENDING;
	if (strcmp(s, SRV_ST_CREATING) == 0)
		return DROVER__API__V1__INSTANCE_STATUS__INSTANCE_STATUS_CREATING;
	if (strcmp(s, SRV_ST_PROVISIONING) == 0)
		return DROVER__API__V1__INSTANCE_STATUS__INSTANCE_STATUS_PROVISIONING;
	if (strcmp(s, SRV_ST_RUNNING) == 0)
		return DROVER__API__V1__INSTANCE_STATUS__INSTANCE_STATUS_RUNNING;
	if (strcmp(s, SRV_ST_TERMINATING) == 0)
		return in->termination_failures >= SRV_TERMINATION_FAILING_AFTER
		           ? DROVER__API__V1__INSTANCE_STATUS__INSTANCE_STATUS_TERMINATION_FAILING
		           : DROVER__API__V1__INSTANCE_STATUS__INSTANCE_STATUS_TERMINATING;
	if (strcmp(s, SRV_ST_TERMINATED) == 0)
		return DROVER__API__V1__INSTANCE_STATUS__INSTANCE_STATUS_TERMINATED;
	if (strcmp(s, SRV_ST_FAILED) == 0)
		return DROVER__API__V1__INSTANCE_STATUS__INSTANCE_STATUS_FAILED;
	return DROVER__API__V1__INSTANCE_STATUS__INSTANCE_STATUS_UNSPECIFIED;
}

static api_instance *instance_msg(struct gc *g, const struct srv_instance *in)
{
	api_instance *m = gc_alloc(g, sizeof(*m));
	if (!m)
		return NULL;
	drover__api__v1__instance__init(m);
	m->id = gc_strdup(g, in->id);
	m->project = gc_strdup(g, in->project);
	m->name = gc_strdup(g, in->name);
	m->backend = gc_strdup(g, in->backend);
	m->backend_type = gc_strdup(g, in->backend_type);
	m->status = status_of(in);
	if (in->offer)
		m->offer =
		    gc_msg(g, &drover__compute__v1__offer__unpack(NULL, in->offer_len, in->offer)->base);
	if (in->provisioning)
		m->provisioning_data = gc_msg(g, &drover__compute__v1__provisioning_data__unpack(
		                                      NULL, in->provisioning_len, in->provisioning)
		                                      ->base);
	m->idempotency_key = gc_strdup(g, in->idempotency_key);
	m->last_error = gc_strdup(g, in->last_error);
	m->created_unix_ms = in->created_at;
	m->updated_unix_ms = in->updated_at;
	m->terminated_unix_ms = in->terminated_at;
	m->termination_tries = (uint32_t)in->termination_failures;
	m->terminate_requested = in->terminate_requested;
	m->termination_unconfirmed =
	    in->termination_unconfirmed && strcmp(in->status, SRV_ST_TERMINATING) == 0;
	/* The row's attempts are the API's messages already: copied, as the row is freed first. */
	const Drover__State__V1__InstanceRecord *r = in->record;
	size_t na = r ? r->n_attempts : 0, nk = r ? r->n_ssh_public_keys : 0;
	m->attempts = gc_alloc(g, (na + 1) * sizeof(*m->attempts));
	for (size_t i = 0; m->attempts && i < na; i++) {
		const Drover__Api__V1__Attempt *a = r->attempts[i];
		Drover__Api__V1__Attempt *at = gc_alloc(g, sizeof(*at));
		if (!at)
			break;
		*at = *a;
		at->backend = gc_strdup(g, a->backend);
		at->instance_type = gc_strdup(g, a->instance_type);
		at->region = gc_strdup(g, a->region);
		at->code = gc_strdup(g, a->code);
		at->message = gc_strdup(g, a->message);
		m->attempts[m->n_attempts++] = at;
	}
	m->ssh_public_keys = gc_alloc(g, (nk + 1) * sizeof(char *));
	for (size_t i = 0; m->ssh_public_keys && i < nk; i++)
		m->ssh_public_keys[m->n_ssh_public_keys++] = gc_strdup(g, r->ssh_public_keys[i]);
	return m;
}

static Drover__Api__V1__Backend *backend_msg(struct gc *g, struct srv_store *st, const struct srv_backend *b)
{
	Drover__Api__V1__Backend *m = gc_alloc(g, sizeof(*m));
	if (!m)
		return NULL;
	drover__api__v1__backend__init(m);
	m->project = gc_strdup(g, b->project);
	m->name = gc_strdup(g, b->name);
	m->type = gc_strdup(g, b->type);
	m->config_json = gc_strdup(g, b->config_json);
	m->source = gc_strdup(g, b->source);
	m->created_unix_ms = b->created_at;
	/* Names only, sorted: values never leave the server. */
	m->secret_names = gc_alloc(g, (b->n_secrets + 1) * sizeof(char *));
	for (size_t i = 0; m->secret_names && i < b->n_secrets; i++)
		m->secret_names[i] = gc_strdup(g, b->secrets[i].name);
	m->n_secret_names = m->secret_names ? b->n_secrets : 0;
	for (size_t i = 1; !g->oom && i < b->n_secrets; i++)
		for (size_t j = i; j > 0 && strcmp(m->secret_names[j - 1], m->secret_names[j]) > 0; j--) {
			char *t = m->secret_names[j];
			m->secret_names[j] = m->secret_names[j - 1];
			m->secret_names[j - 1] = t;
		}
	int64_t live = 0;
	srv_store_backend_live_instances(st, b->project, b->name, &live);
	m->live_instance_count = (uint32_t)live;
	m->features_error = "";
	return m;
}

static int need_project(struct api_call *c, const char *project)
{
	int rc = srv_store_project_exists(c->api->st, project);
	if (rc == 1)
		return 0;
	if (rc < 0)
		reply_err(c, DRV_EINTERNAL, "store: %s", srv_store_errmsg(c->api->st));
	else
		reply_err(c, DRV_ENOTFOUND, "no project named \"%s\"", project);
	return -1;
}

/*
 * The required features and requirements of GetOffers and CreateInstance:
 * 0 and *required, or -1 after replying INVALID_ARGUMENT.
 */
static int need_selection(struct api_call *c, char **features, size_t n_features, const drv_requirements *r,
                          drv_features *required)
{
	char bad[200];
	if (parse_features(features, n_features, required, bad, sizeof(bad)) < 0) {
		reply_err(c, DRV_EINVAL, "required_features: unknown feature \"%s\"", bad);
		return -1;
	}
	if (check_requirements(r, bad, sizeof(bad)) < 0) {
		reply_err(c, DRV_EINVAL, "%s", bad);
		return -1;
	}
	return 0;
}

/* ---- drivers and projects ---- */

static Drover__Api__V1__DriverState driver_state(enum srv_driver_state s)
{
	switch (s) {
	case SRV_DRIVER_STARTING:
		return DROVER__API__V1__DRIVER_STATE__DRIVER_STATE_STARTING;
	case SRV_DRIVER_READY:
		return DROVER__API__V1__DRIVER_STATE__DRIVER_STATE_READY;
	case SRV_DRIVER_BACKOFF:
		return DROVER__API__V1__DRIVER_STATE__DRIVER_STATE_BACKOFF;
	case SRV_DRIVER_STOPPED:
		return DROVER__API__V1__DRIVER_STATE__DRIVER_STATE_STOPPED;
	default:
		/* Known but not started yet: shown as STOPPED until first use starts it. */
		return DROVER__API__V1__DRIVER_STATE__DRIVER_STATE_STOPPED;
	}
}

static void h_list_drivers(struct api_call *c)
{
	struct srv_driver_info *list;
	size_t n;
	struct gc g = {0};
	if (srv_supervisor_list(c->api->sup, &list, &n) < 0) {
		reply_err(c, DRV_ENOMEM, "out of memory");
		return;
	}
	Drover__Api__V1__ListDriversResponse resp = DROVER__API__V1__LIST_DRIVERS_RESPONSE__INIT;
	resp.drivers = gc_alloc(&g, (n + 1) * sizeof(*resp.drivers));
	for (size_t i = 0; resp.drivers && i < n; i++) {
		const struct srv_driver_info *d = &list[i];
		Drover__Api__V1__Driver *m = gc_alloc(&g, sizeof(*m));
		if (!m)
			break;
		drover__api__v1__driver__init(m);
		m->type = (char *)d->type;
		m->name = (char *)d->name;
		m->kind = d->remote ? DROVER__API__V1__DRIVER_KIND__DRIVER_KIND_REMOTE
		                    : DROVER__API__V1__DRIVER_KIND__DRIVER_KIND_SPAWNED;
		m->pid = d->pid;
		m->address = (char *)d->address;
		size_t nc = 0;
		if (d->command)
			while (d->command[nc])
				nc++;
		m->n_command = nc;
		m->command = (char **)d->command;
		m->state = driver_state(d->state);
		m->restarts = d->restarts;
		m->backoff_ms = d->backoff_ms;
		m->next_restart_unix_ms = d->next_restart_ms;
		m->last_error = (char *)d->last_error;
		m->last_error_unix_ms = d->last_error_ms;
		m->reported_type = (char *)d->reported_type;
		m->version = (char *)d->version;
		m->config_schema_json = (char *)d->config_schema_json;
		m->secrets_schema_json = (char *)d->secrets_schema_json;
		m->description = (char *)d->description;
		m->protocol_version = d->protocol_version;
		features_to_list(&g, d->features, &m->n_features, &m->features);
		m->started_unix_ms = d->started_ms;
		resp.drivers[resp.n_drivers++] = m;
	}
	reply_gc(c, &g, &resp.base);
	free(list);
	gc_free(&g);
}

static Drover__Api__V1__Project *project_msg(struct gc *g, struct srv_store *st, const char *name)
{
	Drover__Api__V1__Project *m = gc_alloc(g, sizeof(*m));
	if (!m)
		return NULL;
	drover__api__v1__project__init(m);
	m->name = gc_strdup(g, name);
	int64_t created = 0;
	if (srv_store_project_created(st, name, &created) == 1)
		m->created_unix_ms = created;
	struct srv_backend **bes;
	size_t nb;
	if (srv_store_backend_list(st, name, &bes, &nb) == 0) {
		m->backend_count = (uint32_t)nb;
		srv_backend_list_free(bes, nb);
	}
	int64_t live = 0;
	srv_store_instance_count_live(st, name, &live);
	m->live_instance_count = (uint32_t)live;
	return m;
}

static void h_list_projects(struct api_call *c)
{
	char **names;
	size_t n;
	struct gc g = {0};
	if (srv_store_project_list(c->api->st, &names, &n) < 0) {
		reply_err(c, DRV_EINTERNAL, "store: %s", srv_store_errmsg(c->api->st));
		return;
	}
	Drover__Api__V1__ListProjectsResponse resp = DROVER__API__V1__LIST_PROJECTS_RESPONSE__INIT;
	resp.projects = gc_alloc(&g, (n + 1) * sizeof(*resp.projects));
	for (size_t i = 0; i < n; i++) {
		if (resp.projects)
			resp.projects[resp.n_projects++] = project_msg(&g, c->api->st, names[i]);
		free(names[i]);
	}
	free(names);
	reply_gc(c, &g, &resp.base);
	gc_free(&g);
}

static void h_create_project(struct api_call *c)
{
	const Drover__Api__V1__CreateProjectRequest *req = (const void *)c->req;
	struct gc g = {0};
	if (!srv_valid_name(req->name)) {
		reply_err(c, DRV_EINVAL,
		          "name: \"%s\" is not a valid project name ([a-z0-9][a-z0-9-]*, at most 63)",
		          req->name);
		return;
	}
	if (srv_store_project_exists(c->api->st, req->name) == 1) {
		reply_err(c, DRV_EEXIST, "project \"%s\" already exists", req->name);
		return;
	}
	if (srv_store_project_put(c->api->st, req->name) < 0) {
		reply_err(c, DRV_EINTERNAL, "store: %s", srv_store_errmsg(c->api->st));
		return;
	}
	srv_engine_event(c->api->eng, SRV_EVENT_INFO, "project.created", req->name, NULL, NULL, NULL,
	                 "project %s created", req->name);
	Drover__Api__V1__CreateProjectResponse resp = DROVER__API__V1__CREATE_PROJECT_RESPONSE__INIT;
	resp.project = project_msg(&g, c->api->st, req->name);
	if (g.oom)
		reply_err(c, DRV_ENOMEM, "out of memory building the answer; project %s was created",
		          req->name);
	else
		reply_ok(c, &resp.base);
	gc_free(&g);
}

/* ---- backends ---- */

struct add_ctx {
	struct api_call *c;
	struct srv_backend *be;
	drv_validate_config_response *vresp;
};

static void add_ctx_free(struct add_ctx *a)
{
	srv_backend_free(a->be);
	if (a->vresp)
		drv_response_free(&a->vresp->base);
	free(a);
}

static void add_features_done(void *ud, int code, const char *message, drv_features features)
{
	struct add_ctx *a = ud;
	struct gc g = {0};
	Drover__Api__V1__AddBackendResponse resp = DROVER__API__V1__ADD_BACKEND_RESPONSE__INIT;
	resp.backend = backend_msg(&g, a->c->api->st, a->be);
	if (resp.backend && code == 0)
		features_to_list(&g, features, &resp.backend->n_features, &resp.backend->features);
	else if (resp.backend)
		resp.backend->features_error = gc_strdup(&g, message);
	resp.valid = true;
	resp.n_diagnostics = a->vresp->n_diagnostics;
	resp.diagnostics = a->vresp->diagnostics;
	if (g.oom)
		reply_err(a->c, DRV_ENOMEM, "out of memory building the answer; backend %s was added",
		          a->be->name);
	else
		reply_ok(a->c, &resp.base);
	gc_free(&g);
	add_ctx_free(a);
}

static void add_validate_done(void *ud, int code, const char *message, ProtobufCMessage *resp)
{
	struct add_ctx *a = ud;
	struct api_call *c = a->c;
	const Drover__Api__V1__AddBackendRequest *req = (const void *)c->req;
	if (code != 0) {
		reply_err(c, code, "driver of type \"%s\": ValidateConfig: %s", a->be->type, message);
		add_ctx_free(a);
		return;
	}
	a->vresp = (drv_validate_config_response *)resp;
	bool has_error = false;
	for (size_t i = 0; i < a->vresp->n_diagnostics; i++)
		if (a->vresp->diagnostics[i]->severity == DROVER__COMPUTE__V1__SEVERITY__SEVERITY_ERROR)
			has_error = true;
	bool valid = a->vresp->valid && !has_error;
	if (req->validate_only) {
		Drover__Api__V1__AddBackendResponse r = DROVER__API__V1__ADD_BACKEND_RESPONSE__INIT;
		r.valid = valid;
		r.n_diagnostics = a->vresp->n_diagnostics;
		r.diagnostics = a->vresp->diagnostics;
		reply_ok(c, &r.base);
		add_ctx_free(a);
		return;
	}
	if (!valid) {
		char msg[2000];
		size_t l = (size_t)snprintf(msg, sizeof(msg), "backend config is invalid: ");
		bool first = true;
		for (size_t i = 0; i < a->vresp->n_diagnostics && l < sizeof(msg); i++) {
			drv_diagnostic *d = a->vresp->diagnostics[i];
			if (d->severity != DROVER__COMPUTE__V1__SEVERITY__SEVERITY_ERROR)
				continue;
			l += (size_t)snprintf(msg + l, sizeof(msg) - l, "%s%s: %s", first ? "" : "; ",
			                      d->field_path && d->field_path[0] ? d->field_path : "(config)",
			                      d->summary);
			first = false;
		}
		if (first)
			snprintf(msg + l, sizeof(msg) - l, "(config): the driver says it is not valid");
		reply_err(c, DRV_EINVAL, "%s", msg);
		add_ctx_free(a);
		return;
	}
	/* Checked again: another AddBackend of the same name may have won while the driver validated. */
	struct srv_backend *other;
	if (srv_store_backend_get(c->api->st, a->be->project, a->be->name, &other) == 0) {
		srv_backend_free(other);
		reply_err(c, DRV_EEXIST, "backend \"%s\" already exists in project %s", a->be->name,
		          a->be->project);
		add_ctx_free(a);
		return;
	}
	a->be->created_at = srv_now_ms();
	if (srv_store_backend_put(c->api->st, a->be) < 0) {
		reply_err(c, DRV_EINTERNAL, "store: %s", srv_store_errmsg(c->api->st));
		add_ctx_free(a);
		return;
	}
	srv_engine_event(c->api->eng, SRV_EVENT_INFO, "backend.added", a->be->project, NULL, a->be->name,
	                 a->be->type, "backend %s of type %s added", a->be->name, a->be->type);
	struct drv_backend_config_buf bc;
	if (srv_bcfg_init(&bc, a->be) < 0) {
		/* The answer carries the features' error: the backend was added. */
		add_features_done(a, DRV_ENOMEM, "out of memory", 0);
		return;
	}
	srv_supervisor_features(c->api->sup, a->be->type, &bc.msg, add_features_done, a);
	drv_backend_config_clear(&bc);
}

static void h_add_backend(struct api_call *c)
{
	const Drover__Api__V1__AddBackendRequest *req = (const void *)c->req;
	if (need_project(c, req->project) < 0)
		return;
	if (!srv_valid_name(req->name)) {
		reply_err(c, DRV_EINVAL,
		          "name: \"%s\" is not a valid backend name ([a-z0-9][a-z0-9-]*, at most 63)",
		          req->name);
		return;
	}
	if (!req->type || !req->type[0]) {
		reply_err(c, DRV_EINVAL, "type: a backend type is required");
		return;
	}
	const char *cfg_text = req->config_json && req->config_json[0] ? req->config_json : "{}";
	json_error_t jerr;
	json_t *cfg = json_loads(cfg_text, 0, &jerr);
	if (!json_is_object(cfg)) {
		json_decref(cfg);
		reply_err(c, DRV_EINVAL, "config_json: %s", cfg ? "must be a JSON object" : jerr.text);
		return;
	}
	char *canon = json_dumps(cfg, JSON_COMPACT | JSON_SORT_KEYS);
	json_decref(cfg);
	if (!canon) {
		reply_err(c, DRV_ENOMEM, "out of memory");
		return;
	}
	struct srv_backend *existing;
	if (!req->validate_only &&
	    srv_store_backend_get(c->api->st, req->project, req->name, &existing) == 0) {
		srv_backend_free(existing);
		free(canon);
		reply_err(c, DRV_EEXIST, "backend \"%s\" already exists in project %s", req->name,
		          req->project);
		return;
	}
	if (!srv_supervisor_has_type(c->api->sup, req->type)) {
		free(canon);
		reply_err(c, DRV_ENOTFOUND,
		          "no driver for backend type \"%s\": put a drover-driver-%s binary into a driver "
		          "directory, or "
		          "name a command or address of that type in the config",
		          req->type, req->type);
		return;
	}
	struct add_ctx *a = calloc(1, sizeof(*a));
	struct srv_backend *be = calloc(1, sizeof(*be));
	if (!a || !be) {
		free(a);
		free(be);
		free(canon);
		reply_err(c, DRV_ENOMEM, "out of memory");
		return;
	}
	a->c = c;
	a->be = be;
	be->project = strdup(req->project);
	be->name = strdup(req->name);
	be->type = strdup(req->type);
	be->config_json = canon;
	be->source = strdup("api");
	be->secrets = calloc(req->n_secrets + 1, sizeof(*be->secrets));
	bool ok = be->project && be->name && be->type && be->source && be->secrets;
	for (size_t i = 0; ok && i < req->n_secrets; i++) {
		be->secrets[i].name = strdup(req->secrets[i]->key);
		be->secrets[i].value = strdup(req->secrets[i]->value ? req->secrets[i]->value : "");
		be->n_secrets++; /* counted as made, so srv_backend_free frees a half-made pair too */
		ok = be->secrets[i].name && be->secrets[i].value;
	}
	struct drv_backend_config_buf bc;
	if (!ok || srv_bcfg_init(&bc, be) < 0) {
		reply_err(c, DRV_ENOMEM, "out of memory");
		add_ctx_free(a);
		return;
	}
	drv_validate_config_request vreq = DROVER__COMPUTE__V1__VALIDATE_CONFIG_REQUEST__INIT;
	vreq.config = &bc.msg;
	srv_supervisor_call(c->api->sup, a->be->type, "ValidateConfig", &vreq.base, 0, add_validate_done, a);
	drv_backend_config_clear(&bc);
}

struct list_backends_ctx {
	struct api_call *c;
	struct gc g;
	struct srv_backend **bes;
	size_t n;
	size_t pending;
	Drover__Api__V1__ListBackendsResponse resp;
};

struct lb_slot {
	struct list_backends_ctx *lb;
	Drover__Api__V1__Backend *m;
};

/* Counts one slot (or the hold while asking) off; the last one replies. */
static void lb_put(struct list_backends_ctx *lb)
{
	if (--lb->pending > 0)
		return;
	reply_gc(lb->c, &lb->g, &lb->resp.base);
	gc_free(&lb->g);
	srv_backend_list_free(lb->bes, lb->n);
	free(lb);
}

static void lb_features_done(void *ud, int code, const char *message, drv_features features)
{
	struct lb_slot *s = ud;
	struct list_backends_ctx *lb = s->lb;
	if (s->m && code == 0)
		features_to_list(&lb->g, features, &s->m->n_features, &s->m->features);
	else if (s->m)
		s->m->features_error = gc_strdup(&lb->g, message);
	lb_put(lb);
}

static void h_list_backends(struct api_call *c)
{
	const Drover__Api__V1__ListBackendsRequest *req = (const void *)c->req;
	const char *project = req->project && req->project[0] ? req->project : NULL;
	if (project && need_project(c, project) < 0)
		return;
	struct list_backends_ctx *lb = calloc(1, sizeof(*lb));
	if (!lb) {
		reply_err(c, DRV_ENOMEM, "out of memory");
		return;
	}
	lb->c = c;
	drover__api__v1__list_backends_response__init(&lb->resp);
	if (srv_store_backend_list(c->api->st, project, &lb->bes, &lb->n) < 0) {
		reply_err(c, DRV_EINTERNAL, "store: %s", srv_store_errmsg(c->api->st));
		free(lb);
		return;
	}
	lb->resp.backends = gc_alloc(&lb->g, (lb->n + 1) * sizeof(*lb->resp.backends));
	struct lb_slot *slots = gc_alloc(&lb->g, (lb->n + 1) * sizeof(*slots));
	for (size_t i = 0; lb->resp.backends && slots && i < lb->n; i++) {
		slots[i].lb = lb;
		slots[i].m = backend_msg(&lb->g, c->api->st, lb->bes[i]);
		lb->resp.backends[lb->resp.n_backends++] = slots[i].m;
	}
	/* Out of memory already: no driver is asked, the answer is DRV_ENOMEM. */
	if (lb->n == 0 || lb->g.oom) {
		reply_gc(c, &lb->g, &lb->resp.base);
		gc_free(&lb->g);
		srv_backend_list_free(lb->bes, lb->n);
		free(lb);
		return;
	}
	/* Features come from the per-(driver, config) cache, or the drivers, all at once. */
	/* One extra count held while asking: a slot failing at once cannot end lb under this loop. */
	size_t n = lb->n;
	lb->pending = n + 1;
	for (size_t i = 0; i < n; i++) {
		struct drv_backend_config_buf bc;
		if (srv_bcfg_init(&bc, lb->bes[i]) < 0) {
			lb_features_done(&slots[i], DRV_ENOMEM, "out of memory", 0);
			continue;
		}
		srv_supervisor_features(c->api->sup, lb->bes[i]->type, &bc.msg, lb_features_done, &slots[i]);
		drv_backend_config_clear(&bc);
	}
	lb_put(lb);
}

static void h_remove_backend(struct api_call *c)
{
	const Drover__Api__V1__RemoveBackendRequest *req = (const void *)c->req;
	struct srv_store *st = c->api->st;
	struct gc g = {0};
	if (need_project(c, req->project) < 0)
		return;
	struct srv_backend *be;
	int rc = srv_store_backend_get(st, req->project, req->name, &be);
	if (rc != 0) {
		if (rc < 0)
			reply_err(c, DRV_EINTERNAL, "store: %s", srv_store_errmsg(st));
		else
			reply_err(c, DRV_ENOTFOUND, "no backend named \"%s\" in project %s", req->name,
			          req->project);
		return;
	}
	bool from_config = be->source && strcmp(be->source, "config") == 0;
	srv_backend_free(be);
	struct srv_instance **live;
	size_t n;
	struct srv_instance_filter f = {.project = req->project, .backend = req->name, .live_only = true};
	if (srv_store_instance_list(st, &f, &live, &n) < 0) {
		reply_err(c, DRV_EINTERNAL, "store: %s", srv_store_errmsg(st));
		return;
	}
	if (n > 0 && !req->force) {
		char ids[800] = "";
		size_t l = 0;
		for (size_t i = 0; i < n && i < 10 && l < sizeof(ids); i++)
			l += (size_t)snprintf(ids + l, sizeof(ids) - l, "%s%s", i ? ", " : "", live[i]->id);
		if (n > 10 && l < sizeof(ids))
			snprintf(ids + l, sizeof(ids) - l, ", ...");
		reply_err(
		    c, DRV_EPRECONDITION,
		    "backend %s has %zu live instance%s (%s): terminate them first or remove with force",
		    req->name, n, n == 1 ? "" : "s", ids);
		srv_instance_list_free(live, n);
		return;
	}
	if (srv_store_backend_detach(st, req->project, req->name) < 0) {
		srv_instance_list_free(live, n);
		reply_err(c, DRV_EINTERNAL, "store: %s", srv_store_errmsg(st));
		return;
	}
	srv_engine_event(c->api->eng, n ? SRV_EVENT_WARNING : SRV_EVENT_INFO, "backend.removed", req->project,
	                 NULL, req->name, NULL, "backend %s removed%s", req->name,
	                 n ? " with force; its live instances keep its config for termination" : "");
	Drover__Api__V1__RemoveBackendResponse resp = DROVER__API__V1__REMOVE_BACKEND_RESPONSE__INIT;
	resp.from_config = from_config;
	resp.live_instance_ids = gc_alloc(&g, (n + 1) * sizeof(char *));
	for (size_t i = 0; resp.live_instance_ids && i < n; i++)
		resp.live_instance_ids[resp.n_live_instance_ids++] = gc_strdup(&g, live[i]->id);
	srv_instance_list_free(live, n);
	if (g.oom)
		reply_err(c, DRV_ENOMEM, "out of memory building the answer; backend %s was removed",
		          req->name);
	else
		reply_ok(c, &resp.base);
	gc_free(&g);
}

/*
 * Memory freed after a burst stays with malloc, and most of it in the arenas
 * of gRPC's threads, which only malloc_trim() gives back: answers droverd
 * receives from drivers (an orphan scan's ListInstances of 10,000 machines,
 * every minute, on every backend; a burst of running checks) are unpacked
 * there. Trimming only after big API replies left those arenas full:
 * drover-bench-server row 3b (10,000 instances in store) measured either
 * about 25 MB or 74-270 MB, depending on whether an orphan scan or the
 * running checks ran after the store was filled and before the figure was
 * read (malloc_stats: one arena of 197 MB of which 0.25 MB in use; 172 MB ->
 * 39 MB after a malloc_trim). So once a second the resident size is read,
 * and memory is trimmed when it grew by TRIM_GROWTH_KB since the last trim.
 *
 * Not within a second of a big reply (16,000 offers, 10,000 instances):
 * giving its memory back after every one made the next fault every page in
 * again (a sixth of droverd's time in a burst of GetOffers).
 */
#define TRIM_AFTER_MS 1000
#define TRIM_GROWTH_KB 2048

/* Resident size in KiB from /proc/self/statm, or -1. */
static long self_rss_kb(void)
{
	char buf[128];
	int fd = open("/proc/self/statm", O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	ssize_t n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return -1;
	buf[n] = '\0';
	long size, resident;
	if (sscanf(buf, "%ld %ld", &size, &resident) != 2)
		return -1;
	return resident * (sysconf(_SC_PAGESIZE) / 1024);
}

static void trim_cb(uv_timer_t *t)
{
	struct srv_api *api = t->data;
	if (uv_now(t->loop) - api->last_big_ms < TRIM_AFTER_MS)
		return;
	long kb = self_rss_kb();
	if (kb < 0 || kb < api->trimmed_kb + TRIM_GROWTH_KB)
		return;
	malloc_trim(0);
	api->trimmed_kb = self_rss_kb();
}

static void trim_later(struct srv_api *api)
{
	api->last_big_ms = uv_now(api->trim.loop);
}

/* ---- offers ---- */

struct offers_ctx {
	struct api_call *c;
	uint32_t limit;
	size_t page_size;
	size_t start; /* from the page token */
};

/*
 * GetOffers pages: a page holds page_size offers at most, and ends before
 * OFFERS_PAGE_MAX_BYTES of them, so droverd's answer stays far below the
 * transport's 64 MiB whatever the offers hold (each is bounded by the
 * checks of docs/PROTOCOL.md §12.2).
 */
#define OFFERS_PAGE_DEFAULT 1000
#define OFFERS_PAGE_MAX 20000
#define OFFERS_PAGE_MAX_BYTES ((size_t)16 << 20)

/* A page token is the offset of the page's first offer: "o" and decimal digits. */
static int parse_page_token(const char *tok, size_t *start)
{
	char *end;
	unsigned long long v;

	*start = 0;
	if (!tok || !tok[0])
		return 0;
	if (tok[0] != 'o' || tok[1] < '0' || tok[1] > '9')
		return -1;
	errno = 0;
	v = strtoull(tok + 1, &end, 10);
	if (*end || errno || v > UINT32_MAX)
		return -1;
	*start = (size_t)v;
	return 0;
}

/* The bytes item `it` takes in the answer, roughly: its offer and the backend's name. */
static size_t offer_item_bytes(const struct srv_offer_item *it)
{
	size_t n = it->wire ? it->wire_len : drover__compute__v1__offer__get_packed_size(it->offer) + 4;
	return n + strlen(it->backend) + 8;
}

static void offers_done(void *ud, int code, const char *message, struct srv_offers_result *res)
{
	struct offers_ctx *o = ud;
	struct api_call *c = o->c;
	struct gc g = {0};
	if (code != 0) {
		reply_err(c, code, "%s", message);
		free(o);
		return;
	}
	Drover__Api__V1__GetOffersResponse resp = DROVER__API__V1__GET_OFFERS_RESPONSE__INIT;
	size_t all = res->n_items, n = 0, bytes = 0;
	if (o->limit && all > o->limit)
		all = o->limit;
	size_t start = o->start < all ? o->start : all;
	while (start + n < all && n < o->page_size) {
		bytes += offer_item_bytes(&res->items[start + n]);
		if (n > 0 && bytes > OFFERS_PAGE_MAX_BYTES)
			break;
		n++;
	}
	char next[32] = "";
	if (start + n < all)
		snprintf(next, sizeof(next), "o%zu", start + n);
	resp.next_page_token = next;
	resp.total_offers = (uint32_t)res->n_items;
	/* One allocation for all offer wrappers: 16,000 offers must stay cheap. */
	Drover__Api__V1__BackendOffer *bos = gc_alloc(&g, (n + 1) * sizeof(*bos));
	resp.offers = gc_alloc(&g, (n + 1) * sizeof(*resp.offers));
	/*
	 * Offers the engine packed already (as each backend answered) go out as
	 * their bytes: field 2 (offer) of BackendOffer, carried as an unknown
	 * field, which protobuf-c copies verbatim. Same bytes on the wire.
	 */
	ProtobufCMessageUnknownField *ufs = gc_alloc(&g, (n + 1) * sizeof(*ufs));
	for (size_t i = 0; !g.oom && i < n; i++) {
		const struct srv_offer_item *it = &res->items[start + i];
		drover__api__v1__backend_offer__init(&bos[i]);
		bos[i].backend = (char *)it->backend;
		if (it->wire) {
			ufs[i].tag = 2;
			ufs[i].wire_type = PROTOBUF_C_WIRE_TYPE_LENGTH_PREFIXED;
			ufs[i].len = it->wire_len;
			ufs[i].data = (uint8_t *)it->wire;
			bos[i].base.n_unknown_fields = 1;
			bos[i].base.unknown_fields = &ufs[i];
		} else {
			bos[i].offer = (drv_offer *)it->offer;
		}
		resp.offers[i] = &bos[i];
	}
	resp.n_offers = n;
	Drover__Api__V1__BackendResult *brs = gc_alloc(&g, (res->n_backends + 1) * sizeof(*brs));
	resp.backends = gc_alloc(&g, (res->n_backends + 1) * sizeof(*resp.backends));
	for (size_t i = 0; !g.oom && i < res->n_backends; i++) {
		struct srv_backend_result *b = &res->backends[i];
		drover__api__v1__backend_result__init(&brs[i]);
		brs[i].backend = b->backend;
		brs[i].type = b->type;
		brs[i].code = (char *)drv_error_name(b->code);
		brs[i].message = b->message ? b->message : "";
		brs[i].offer_count = b->offer_count;
		brs[i].elapsed_ms = b->elapsed_ms;
		brs[i].bad_offers = b->bad_offers;
		resp.backends[i] = &brs[i];
	}
	resp.n_backends = res->n_backends;
	struct srv_api *api = c->api; /* c is gone after the reply */
	int64_t t0 = srv_now_ms();
	reply_gc(c, &g, &resp.base);
	int64_t t1 = srv_now_ms();
	gc_free(&g);
	srv_offers_result_free(res);
	srv_debug("api", "GetOffers: %zu offers replied in %lld ms, freed in %lld ms", n,
	          (long long)(t1 - t0), (long long)(srv_now_ms() - t1));
	if (n > 1000)
		trim_later(api);
	free(o);
}

static void h_get_offers(struct api_call *c)
{
	const Drover__Api__V1__GetOffersRequest *req = (const void *)c->req;
	if (need_project(c, req->project) < 0)
		return;
	drv_features required;
	if (need_selection(c, req->required_features, req->n_required_features, req->requirements,
	                   &required) < 0)
		return;
	size_t start;
	if (parse_page_token(req->page_token, &start) < 0) {
		reply_err(c, DRV_EINVAL, "page_token: \"%.40s\" is not a token of a GetOffers answer",
		          req->page_token);
		return;
	}
	struct offers_ctx *o = calloc(1, sizeof(*o));
	if (!o) {
		reply_err(c, DRV_ENOMEM, "out of memory");
		return;
	}
	o->c = c;
	o->limit = req->limit;
	o->start = start;
	o->page_size = req->page_size == 0                ? OFFERS_PAGE_DEFAULT
	               : req->page_size > OFFERS_PAGE_MAX ? OFFERS_PAGE_MAX
	                                                  : req->page_size;
	struct srv_offers_query q = {.project = req->project,
	                             .requirements = req->requirements,
	                             .required_features = required,
	                             .packed_offers = true};
	srv_engine_offers(c->api->eng, &q, offers_done, o);
}

/* ---- instances ---- */

static void create_done(void *ud, int code, const char *message, const struct srv_instance *in)
{
	struct api_call *c = ud;
	struct gc g = {0};
	if (code != 0) {
		reply_err(c, code, "%s", message);
		return;
	}
	Drover__Api__V1__CreateInstanceResponse resp = DROVER__API__V1__CREATE_INSTANCE_RESPONSE__INIT;
	resp.instance = instance_msg(&g, in);
	if (g.oom)
		reply_err(c, DRV_ENOMEM, "out of memory building the answer; instance %s is %s", in->id,
		          in->status);
	else
		reply_ok(c, &resp.base);
	gc_free(&g);
}

static void h_create_instance(struct api_call *c)
{
	const Drover__Api__V1__CreateInstanceRequest *req = (const void *)c->req;
	if (need_project(c, req->project) < 0)
		return;
	if (req->name && req->name[0] && !srv_valid_name(req->name)) {
		reply_err(c, DRV_EINVAL,
		          "name: \"%s\" is not a valid instance name ([a-z0-9][a-z0-9-]*, at most 63)",
		          req->name);
		return;
	}
	/* The config's range for provisioning.max_tries; 0 means the server's. */
	if (req->max_tries > 1000) {
		reply_err(c, DRV_EINVAL, "max_tries: %u is out of range [1, 1000] (0: the server's default)",
		          req->max_tries);
		return;
	}
	drv_features required;
	if (need_selection(c, req->required_features, req->n_required_features, req->requirements,
	                   &required) < 0)
		return;
	for (size_t i = 0; i < req->n_backends; i++) {
		struct srv_backend *be;
		if (srv_store_backend_get(c->api->st, req->project, req->backends[i], &be) != 0) {
			reply_err(c, DRV_ENOTFOUND, "backends: no backend named \"%s\" in project %s",
			          req->backends[i], req->project);
			return;
		}
		srv_backend_free(be);
	}
	struct srv_create_request r = {.project = req->project,
	                               .name = req->name,
	                               .requirements = req->requirements,
	                               .required_features = required,
	                               .max_tries = req->max_tries,
	                               .ssh_keys = (const char *const *)req->ssh_public_keys,
	                               .n_ssh_keys = req->n_ssh_public_keys,
	                               .backends = (const char *const *)req->backends,
	                               .n_backends = req->n_backends,
	                               .idempotency_key = req->idempotency_key};
	srv_engine_create(c->api->eng, &r, create_done, c);
}

/*
 * Paging of ListInstances and ListEvents. A page holds at most PAGE_SIZE_MAX
 * items and ends before PAGE_MAX_BYTES (with at least one item), so that no
 * answer nears the transport's limit, whatever a driver put in the rows.
 */
#define PAGE_SIZE_DEFAULT 100
#define PAGE_SIZE_MAX 1000
#define PAGE_MAX_BYTES (4u << 20)

static size_t page_size(uint32_t asked)
{
	return asked == 0 ? PAGE_SIZE_DEFAULT : asked > PAGE_SIZE_MAX ? PAGE_SIZE_MAX : asked;
}

/*
 * A page token: "<kind>:<number>:<text>" in hex, so that clients treat it as
 * opaque. NULL when out of memory.
 */
static char *page_token(struct gc *g, char kind, int64_t num, const char *text)
{
	char plain[600];
	int len = snprintf(plain, sizeof(plain), "%c:%lld:%s", kind, (long long)num, text);
	if (len < 0 || (size_t)len >= sizeof(plain))
		return gc_strdup(g, "");
	char *hex = gc_alloc(g, 2 * (size_t)len + 1);
	for (int i = 0; hex && i < len; i++)
		snprintf(hex + 2 * i, 3, "%02x", (unsigned char)plain[i]);
	return hex;
}

/* Reads a token of `kind`: 0, or -1 when it is not one this server made. `text` has room for 512. */
static int page_token_parse(const char *tok, char kind, int64_t *num, char *text)
{
	char plain[600];
	size_t len = strlen(tok);
	if (len % 2 || len / 2 >= sizeof(plain))
		return -1;
	for (size_t i = 0; i < len / 2; i++) {
		unsigned v;
		if (sscanf(tok + 2 * i, "%2x", &v) != 1 || !isxdigit((unsigned char)tok[2 * i]) ||
		    !isxdigit((unsigned char)tok[2 * i + 1]) || v == 0)
			return -1;
		plain[i] = (char)v;
	}
	plain[len / 2] = '\0';
	char *end;
	if (plain[0] != kind || plain[1] != ':')
		return -1;
	errno = 0;
	long long v = strtoll(plain + 2, &end, 10);
	if (errno || end == plain + 2 || *end != ':' || strlen(end + 1) > 512)
		return -1;
	*num = v;
	strcpy(text, end + 1);
	return 0;
}

static void h_list_instances(struct api_call *c)
{
	const Drover__Api__V1__ListInstancesRequest *req = (const void *)c->req;
	const char *project = req->project && req->project[0] ? req->project : NULL;
	struct gc g = {0};
	if (project && need_project(c, project) < 0)
		return;
	int64_t after_created = 0;
	char after_id[520] = "";
	if (req->page_token && req->page_token[0] &&
	    page_token_parse(req->page_token, 'i', &after_created, after_id) < 0) {
		reply_err(c, DRV_EINVAL, "page_token: not a token of this server's ListInstances");
		return;
	}
	size_t want = page_size(req->page_size);
	struct srv_instance **list;
	size_t n;
	/* The store filters by its own states; TERMINATING and TERMINATION_FAILING share one. */
	char states[200] = ",";
	for (size_t j = 0; j < req->n_statuses; j++) {
		static const char *const names[] = {
		    [DROVER__API__V1__INSTANCE_STATUS__INSTANCE_STATUS_PENDING] = SRV_ST_PENDING,
		    [DROVER__API__V1__INSTANCE_STATUS__INSTANCE_STATUS_CREATING] = SRV_ST_CREATING,
		    [DROVER__API__V1__INSTANCE_STATUS__INSTANCE_STATUS_PROVISIONING] = SRV_ST_PROVISIONING,
		    [DROVER__API__V1__INSTANCE_STATUS__INSTANCE_STATUS_RUNNING] = SRV_ST_RUNNING,
		    [DROVER__API__V1__INSTANCE_STATUS__INSTANCE_STATUS_TERMINATING] = SRV_ST_TERMINATING,
		    [DROVER__API__V1__INSTANCE_STATUS__INSTANCE_STATUS_TERMINATED] = SRV_ST_TERMINATED,
		    [DROVER__API__V1__INSTANCE_STATUS__INSTANCE_STATUS_FAILED] = SRV_ST_FAILED,
		    [DROVER__API__V1__INSTANCE_STATUS__INSTANCE_STATUS_TERMINATION_FAILING] =
		        SRV_ST_TERMINATING,
		};
		unsigned v = (unsigned)req->statuses[j];
		if (v < sizeof(names) / sizeof(names[0]) && names[v]) {
			size_t l = strlen(states);
			snprintf(states + l, sizeof(states) - l, "%s,", names[v]);
		}
	}
	/* One more than a page: whether a next page exists is known without another query. */
	struct srv_instance_filter f = {.project = project,
	                                .statuses = req->n_statuses ? states : NULL,
	                                .limit = (int64_t)want + 1,
	                                .oldest_first = true,
	                                .after_created = after_created,
	                                .after_id = after_id[0] ? after_id : NULL};
	if (srv_store_instance_list(c->api->st, &f, &list, &n) < 0) {
		reply_err(c, DRV_EINTERNAL, "store: %s", srv_store_errmsg(c->api->st));
		return;
	}
	/* Creates still looking up offers have no row yet: listed "pending" all the same. */
	struct srv_instance **pend = NULL;
	size_t np = 0;
	if (srv_engine_list_unwritten(c->api->eng, project, &pend, &np) != 0) {
		srv_instance_list_free(list, n);
		reply_err(c, DRV_ENOMEM, "out of memory");
		return;
	}
	Drover__Api__V1__ListInstancesResponse resp = DROVER__API__V1__LIST_INSTANCES_RESPONSE__INIT;
	resp.instances = gc_alloc(&g, (want + 1) * sizeof(*resp.instances));
	resp.next_page_token = "";
	/*
	 * By creation time and id, oldest first, the pending creates merged in:
	 * the same key the store's rows are paged by.
	 */
	size_t k = 0, p = 0, bytes = 0;
	const struct srv_instance *last = NULL;
	for (;;) {
		/* Pending creates before the token were on an earlier page. */
		while (p < np && (pend[p]->created_at < after_created ||
		                  (pend[p]->created_at == after_created && after_id[0] &&
		                   strcmp(pend[p]->id, after_id) <= 0)))
			p++;
		bool from_store = k < n;
		if (p < np && from_store &&
		    (pend[p]->created_at < list[k]->created_at ||
		     (pend[p]->created_at == list[k]->created_at && strcmp(pend[p]->id, list[k]->id) < 0)))
			from_store = false;
		if (!from_store && p == np)
			break;
		const struct srv_instance *in = from_store ? list[k] : pend[p];
		bool keep = req->n_statuses == 0;
		Drover__Api__V1__InstanceStatus s = status_of(in);
		for (size_t j = 0; j < req->n_statuses && !keep; j++)
			keep = req->statuses[j] == s;
		api_instance *m = NULL;
		if (keep) {
			if (resp.n_instances == want)
				break;
			m = instance_msg(&g, in);
			if (g.oom || !resp.instances)
				break;
			size_t sz = protobuf_c_message_get_packed_size(&m->base) + 8;
			if (resp.n_instances > 0 && bytes + sz > PAGE_MAX_BYTES)
				break;
			bytes += sz;
			resp.instances[resp.n_instances++] = m;
		}
		last = in;
		if (from_store)
			k++;
		else
			p++;
	}
	/* Stopped before the end, or the store had more than it was asked for: there is a next page. */
	bool more = (k < n || p < np) || n > want;
	if (more && last && !g.oom)
		resp.next_page_token = page_token(&g, 'i', last->created_at, last->id);
	srv_instance_list_free(list, n);
	srv_instance_list_free(pend, np);
	struct srv_api *api = c->api; /* c is gone after the reply */
	reply_gc(c, &g, &resp.base);
	gc_free(&g);
	if (bytes > (1u << 20))
		trim_later(api);
}

/*
 * The instance by id, or by name within a project: 0 and *in, 1 when the
 * store has none, -1 on store errors.
 */
static int lookup_instance(struct api_call *c, const char *id, const char *project, struct srv_instance **in)
{
	*in = NULL;
	/* The id first, as api.proto says: ids are unique, and a name may look like one. */
	int rc = srv_store_instance_get(c->api->st, id, in);
	if (rc == 1 && project && project[0])
		rc = srv_store_instance_by_name(c->api->st, project, id, false, in);
	return rc;
}

static void reply_lookup_err(struct api_call *c, int rc, const char *id, const char *project)
{
	if (rc < 0)
		reply_err(c, DRV_EINTERNAL, "store: %s", srv_store_errmsg(c->api->st));
	else
		reply_err(c, DRV_ENOTFOUND, "no instance \"%s\"%s%s", id,
		          project && project[0] ? " in project " : "", project && project[0] ? project : "");
}

/*
 * Found by name, and that row is over (terminated or failed): the name may
 * have been taken again by a create still looking up offers, which has no
 * row yet and is the instance the caller means.
 */
static bool dead_by_name(const struct srv_instance *in, const char *id, const char *project)
{
	return in && project && project[0] && strcmp(in->name, id) == 0 &&
	       (strcmp(in->status, SRV_ST_TERMINATED) == 0 || strcmp(in->status, SRV_ST_FAILED) == 0);
}

/* The same; replies NOT_FOUND (or the store's error) itself. */
static struct srv_instance *find_instance(struct api_call *c, const char *id, const char *project)
{
	struct srv_instance *in = NULL;
	int rc = lookup_instance(c, id, project, &in);
	if (rc != 0)
		reply_lookup_err(c, rc, id, project);
	return in;
}

static void h_get_instance(struct api_call *c)
{
	const Drover__Api__V1__GetInstanceRequest *req = (const void *)c->req;
	struct gc g = {0};
	struct srv_instance *in = NULL;
	int rc = lookup_instance(c, req->id, req->project, &in);
	/*
	 * No row yet, or a dead one of a name taken again: perhaps a create still
	 * looking up offers, shown "pending".
	 */
	if (rc == 1 || (rc == 0 && dead_by_name(in, req->id, req->project))) {
		struct srv_instance *un = NULL;
		int u = srv_engine_get_unwritten(c->api->eng, req->project, req->id, &un);
		if (u != 1) {
			srv_instance_free(in);
			in = un;
			rc = u;
		}
	}
	if (rc == DRV_ENOMEM) {
		reply_err(c, DRV_ENOMEM, "out of memory");
		return;
	}
	if (rc != 0) {
		reply_lookup_err(c, rc, req->id, req->project);
		return;
	}
	Drover__Api__V1__GetInstanceResponse resp = DROVER__API__V1__GET_INSTANCE_RESPONSE__INIT;
	resp.instance = instance_msg(&g, in);
	reply_gc(c, &g, &resp.base);
	srv_instance_free(in);
	gc_free(&g);
}

static void h_terminate_instance(struct api_call *c)
{
	const Drover__Api__V1__TerminateInstanceRequest *req = (const void *)c->req;
	struct gc g = {0};
	struct srv_instance *in = NULL, *upd = NULL;
	int rc = lookup_instance(c, req->id, req->project, &in);
	if (rc < 0) {
		reply_lookup_err(c, rc, req->id, req->project);
		return;
	}
	/*
	 * No row yet, or a dead one of a name taken again: perhaps a create still
	 * looking up offers, which the terminate is for.
	 */
	int u = 1;
	if (rc == 1 || dead_by_name(in, req->id, req->project))
		u = srv_engine_terminate_unwritten(c->api->eng, req->project, req->id, &upd);
	if (u != 1) {
		srv_instance_free(in);
		rc = u;
	} else if (rc == 1) {
		reply_lookup_err(c, 1, req->id, req->project);
		return;
	} else {
		rc = srv_engine_terminate(c->api->eng, in->id, &upd);
		srv_instance_free(in);
	}
	if (rc == DRV_ENOMEM) {
		reply_err(c, DRV_ENOMEM, "out of memory");
		return;
	}
	if (rc != 0) {
		reply_err(c, rc < 0 ? DRV_EINTERNAL : DRV_ENOTFOUND, "%s",
		          rc < 0 ? srv_store_errmsg(c->api->st) : "instance vanished");
		return;
	}
	Drover__Api__V1__TerminateInstanceResponse resp = DROVER__API__V1__TERMINATE_INSTANCE_RESPONSE__INIT;
	resp.instance = instance_msg(&g, upd);
	if (g.oom)
		reply_err(c, DRV_ENOMEM, "out of memory building the answer; instance %s is %s", upd->id,
		          upd->status);
	else
		reply_ok(c, &resp.base);
	srv_instance_free(upd);
	gc_free(&g);
}

/* ---- foreign machines ---- */

static void h_list_foreign_machines(struct api_call *c)
{
	const Drover__Api__V1__ListForeignMachinesRequest *req = (const void *)c->req;
	const char *project = req->project && req->project[0] ? req->project : NULL;
	struct gc g = {0};
	if (project && need_project(c, project) < 0)
		return;
	size_t n, count = 0;
	const struct srv_foreign_scan *scans = srv_engine_foreign_scans(c->api->eng, &n);
	Drover__Api__V1__ListForeignMachinesResponse resp =
	    DROVER__API__V1__LIST_FOREIGN_MACHINES_RESPONSE__INIT;
	for (size_t i = 0; i < n; i++)
		if (!project || strcmp(scans[i].project, project) == 0)
			count += scans[i].n_machines;
	Drover__Api__V1__ForeignMachine *ms = gc_alloc(&g, (count + 1) * sizeof(*ms));
	resp.machines = gc_alloc(&g, (count + 1) * sizeof(*resp.machines));
	for (size_t i = 0; !g.oom && i < n; i++) {
		const struct srv_foreign_scan *f = &scans[i];
		if (project && strcmp(f->project, project) != 0)
			continue;
		resp.total += f->total;
		for (size_t k = 0; k < f->n_machines; k++) {
			const struct srv_foreign_machine *fm = &f->machines[k];
			Drover__Api__V1__ForeignMachine *m = &ms[resp.n_machines];
			drover__api__v1__foreign_machine__init(m);
			m->project = f->project;
			m->backend = f->backend;
			m->backend_type = f->backend_type;
			m->instance_id = fm->instance_id;
			m->drover_instance = fm->tag_instance;
			m->name = fm->name;
			m->region = fm->region;
			m->instance_type = fm->instance_type;
			m->reason = (char *)fm->reason;
			m->seen_unix_ms = f->scanned_at;
			resp.machines[resp.n_machines++] = m;
		}
	}
	reply_gc(c, &g, &resp.base);
	gc_free(&g);
}

/* ---- events ---- */

static void h_list_events(struct api_call *c)
{
	const Drover__Api__V1__ListEventsRequest *req = (const void *)c->req;
	const char *project = req->project && req->project[0] ? req->project : NULL;
	struct gc g = {0};
	if (project && need_project(c, project) < 0)
		return;
	/*
	 * The token names the last event sent and how many of the `limit` are
	 * left: the window is fixed by the first page, and events added since
	 * come after it.
	 */
	int64_t left = 0, after = 0;
	char last[520] = "";
	bool paged = req->page_token && req->page_token[0];
	if (paged && (page_token_parse(req->page_token, 'e', &left, last) < 0 || left <= 0 ||
	              sscanf(last, "%" SCNd64, &after) != 1 || after < 0)) {
		reply_err(c, DRV_EINVAL, "page_token: not a token of this server's ListEvents");
		return;
	}
	/*
	 * The instance by id or by name, as for `instance show`: a name (or a typo)
	 * matched no event id and listed nothing, which looked like "no events".
	 */
	struct srv_instance *in = NULL;
	if (req->instance_id && req->instance_id[0] && !(in = find_instance(c, req->instance_id, project)))
		return;
	struct srv_event_filter f = {
	    .project = project,
	    .instance = in ? in->id : NULL,
	    /* ids are int64 in the store: a larger after_id read as negative, i.e. all */
	    .after_id = req->after_id > INT64_MAX ? INT64_MAX : (int64_t)req->after_id,
	    .limit = req->limit ? req->limit : 100};
	int rc = 0;
	if (!paged) {
		left = f.limit;
		rc = srv_store_event_window(c->api->st, &f, &after);
	}
	size_t want = page_size(req->page_size);
	f.after_id = after;
	f.first = true;
	f.limit = (int64_t)want < left ? (int64_t)want : left;
	struct srv_event *ev = NULL;
	size_t n = 0;
	if (rc == 0)
		rc = srv_store_event_list(c->api->st, &f, &ev, &n);
	srv_instance_free(in);
	if (rc < 0) {
		reply_err(c, DRV_EINTERNAL, "store: %s", srv_store_errmsg(c->api->st));
		return;
	}
	Drover__Api__V1__ListEventsResponse resp = DROVER__API__V1__LIST_EVENTS_RESPONSE__INIT;
	Drover__Api__V1__Event *ms = gc_alloc(&g, (n + 1) * sizeof(*ms));
	resp.events = gc_alloc(&g, (n + 1) * sizeof(*resp.events));
	resp.next_page_token = "";
	size_t bytes = 0;
	for (size_t i = 0; !g.oom && i < n; i++) {
		drover__api__v1__event__init(&ms[i]);
		ms[i].id = (uint64_t)ev[i].id;
		ms[i].at_unix_ms = ev[i].ts;
		ms[i].level = (Drover__Api__V1__EventLevel)ev[i].level;
		ms[i].kind = ev[i].kind ? ev[i].kind : "";
		ms[i].project = ev[i].project ? ev[i].project : "";
		ms[i].instance_id = ev[i].instance ? ev[i].instance : "";
		ms[i].backend = ev[i].backend ? ev[i].backend : "";
		ms[i].driver = ev[i].driver ? ev[i].driver : "";
		ms[i].message = ev[i].message ? ev[i].message : "";
		size_t sz = protobuf_c_message_get_packed_size(&ms[i].base) + 8;
		if (i > 0 && bytes + sz > PAGE_MAX_BYTES)
			break;
		bytes += sz;
		resp.events[resp.n_events++] = &ms[i];
	}
	left -= (int64_t)resp.n_events;
	/* A full page (by count or by bytes) with some of the window left: there may be more. */
	if (!g.oom && left > 0 && resp.n_events > 0 && (n == (size_t)f.limit || resp.n_events < n)) {
		char id[24];
		snprintf(id, sizeof(id), "%lld", (long long)ms[resp.n_events - 1].id);
		resp.next_page_token = page_token(&g, 'e', left, id);
	}
	reply_gc(c, &g, &resp.base);
	srv_event_list_free(ev, n);
	gc_free(&g);
}

/* ---- dispatch ---- */

static const struct {
	const char *method;
	void (*fn)(struct api_call *c);
} handlers[] = {
    {"ListDrivers", h_list_drivers},
    {"ListProjects", h_list_projects},
    {"CreateProject", h_create_project},
    {"AddBackend", h_add_backend},
    {"ListBackends", h_list_backends},
    {"RemoveBackend", h_remove_backend},
    {"GetOffers", h_get_offers},
    {"CreateInstance", h_create_instance},
    {"ListInstances", h_list_instances},
    {"GetInstance", h_get_instance},
    {"TerminateInstance", h_terminate_instance},
    {"ListForeignMachines", h_list_foreign_machines},
    {"ListEvents", h_list_events},
};

static void async_cb(uv_async_t *a)
{
	struct srv_api *api = a->data;
	pthread_mutex_lock(&api->mu);
	struct api_call *c = api->head;
	api->head = api->tail = NULL;
	pthread_mutex_unlock(&api->mu);
	while (c) {
		struct api_call *next = c->next;
		const char *m = drv_rpc_call_method(c->call);
		size_t i;
		for (i = 0; i < sizeof(handlers) / sizeof(handlers[0]); i++)
			if (strcmp(handlers[i].method, m) == 0)
				break;
		if (i == sizeof(handlers) / sizeof(handlers[0]))
			reply_err(c, DRV_EUNIMPLEMENTED, "method %s is not implemented by this droverd", m);
		else
			handlers[i].fn(c);
		c = next;
	}
}

/* Runs on the transport's thread: auth here, everything else on the loop. */
static void on_call(void *ud, struct drv_rpc_call *call, const ProtobufCMessage *req)
{
	struct srv_api *api = ud;
	const char *auth = drv_rpc_call_metadata(call, "authorization");
	const char *prefix = "Bearer ";
	bool ok = false;
	if (auth && strncmp(auth, prefix, strlen(prefix)) == 0) {
		const char *tok = auth + strlen(prefix);
		/* Constant time: the comparison must not tell how much of a guess was right. */
		ok = strlen(tok) == api->token_len && CRYPTO_memcmp(tok, api->token, api->token_len) == 0;
	}
	if (!ok) {
		drv_rpc_reply(call, DRV_EUNAUTHENTICATED,
		              auth ? "the bearer token is wrong"
		                   : "missing \"authorization: Bearer <token>\" metadata",
		              NULL);
		return;
	}
	struct api_call *c = calloc(1, sizeof(*c));
	if (!c) {
		drv_rpc_reply(call, DRV_ENOMEM, "out of memory", NULL);
		return;
	}
	c->api = api;
	c->call = call;
	c->req = req;
	pthread_mutex_lock(&api->mu);
	if (api->closed) {
		pthread_mutex_unlock(&api->mu);
		free(c);
		drv_rpc_reply(call, DRV_EUNAVAILABLE, "the server is shutting down", NULL);
		return;
	}
	if (api->tail)
		api->tail->next = c;
	else
		api->head = c;
	api->tail = c;
	/* Sent under the lock: once srv_api_stop set `closed`, the handle may be closing. */
	uv_async_send(&api->async);
	pthread_mutex_unlock(&api->mu);
}

static int add_methods(struct srv_api *api, struct drv_rpc_server *srv)
{
	const ProtobufCServiceDescriptor *svc = &drover__api__v1__drover__descriptor;
	for (unsigned i = 0; i < svc->n_methods; i++)
		if (drv_rpc_server_add(srv, svc, i, on_call, api, DRV_RPC_INLINE) != 0)
			return -1;
	return 0;
}

/*
 * True when something accepts connections on the unix socket at path. gRPC
 * unlinks a socket in its way before it binds, live or stale: a second droverd
 * with another data directory but the same listen.unix took the socket of a
 * running one, which kept running unreachable, and removed it when it stopped.
 */
static bool unix_socket_live(const char *path)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	if (strlen(path) >= sizeof(sa.sun_path))
		return false;
	memcpy(sa.sun_path, path, strlen(path) + 1);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return false;
	bool live = connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0;
	close(fd);
	return live;
}

/*
 * True when a listening socket holds the TCP address. gRPC binds with
 * SO_REUSEPORT, so a second droverd on the same listen.tcp bound too and the
 * kernel split the connections between two servers with different stores and
 * tokens. A plain bind (no SO_REUSEPORT; SO_REUSEADDR, which does not pass a
 * listener on Linux, so that TIME_WAIT does not count) tells.
 */
static bool tcp_address_taken(const char *address)
{
	struct drv_host_port hp;
	char port[8];
	if (drv_host_port_parse(address, false, &hp, NULL, 0) != 0)
		return false;
	snprintf(port, sizeof(port), "%u", (unsigned)hp.port);
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE}, *ai = NULL;
	if (getaddrinfo(hp.host, port, &hints, &ai) != 0)
		return false; /* gRPC reports the address itself */
	bool taken = false;
	for (struct addrinfo *a = ai; a && !taken; a = a->ai_next) {
		int fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
		if (fd < 0)
			continue;
		int one = 1;
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		taken = bind(fd, a->ai_addr, a->ai_addrlen) < 0 && errno == EADDRINUSE;
		close(fd);
	}
	freeaddrinfo(ai);
	return taken;
}

int srv_api_start(const struct srv_api_opts *o, struct srv_api **out, char *err, size_t errlen)
{
	struct srv_api *api = calloc(1, sizeof(*api));
	char addr[4200];
	char e2[512];
	if (!api) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	api->loop = o->loop;
	api->st = o->store;
	api->sup = o->sup;
	api->eng = o->engine;
	api->cfg = o->cfg;
	snprintf(api->token, sizeof(api->token), "%s", o->token);
	api->token_len = strlen(api->token);
	pthread_mutex_init(&api->mu, NULL);
	uv_async_init(o->loop, &api->async, async_cb);
	api->async.data = api;
	uv_timer_init(o->loop, &api->trim);
	api->trim.data = api;
	api->trimmed_kb = self_rss_kb();
	uv_timer_start(&api->trim, trim_cb, TRIM_AFTER_MS, TRIM_AFTER_MS);
	uv_unref((uv_handle_t *)&api->trim);
	srv_store_set_commit_hook(api->st, committed, api);
	if (o->unix_path) {
		if (unix_socket_live(o->unix_path)) {
			snprintf(
			    err, errlen,
			    "%s: another server is listening on this socket (another droverd with the same "
			    "listen.unix?); stop it or choose another path",
			    o->unix_path);
			goto fail;
		}
		struct drv_rpc_server_opts so = {.address = addr};
		snprintf(addr, sizeof(addr), "unix:%s", o->unix_path);
		if (drv_rpc_server_new(&so, &api->unix_srv, e2, sizeof(e2)) != 0 ||
		    add_methods(api, api->unix_srv) < 0 ||
		    drv_rpc_server_start(api->unix_srv, NULL, e2, sizeof(e2)) != 0) {
			snprintf(err, errlen, "cannot serve the API on %s: %s", o->unix_path, e2);
			goto fail;
		}
		/* Only the owner may talk to the server through the socket. */
		if (chmod(o->unix_path, 0600) < 0) {
			snprintf(err, errlen, "chmod 0600 %s: %s", o->unix_path, strerror(errno));
			goto fail;
		}
	}
	if (o->cfg->listen_tcp) {
		if (tcp_address_taken(o->cfg->listen_tcp)) {
			snprintf(err, errlen,
			         "cannot serve the API on %s: the address is in use (another droverd with "
			         "the same "
			         "listen.tcp?)",
			         o->cfg->listen_tcp);
			goto fail;
		}
		struct drv_rpc_server_opts so = {.address = o->cfg->listen_tcp,
		                                 .tls_cert_file = o->cfg->tcp_cert,
		                                 .tls_key_file = o->cfg->tcp_key,
		                                 .client_ca_file = o->cfg->tcp_client_ca};
		if (drv_rpc_server_new(&so, &api->tcp_srv, e2, sizeof(e2)) != 0 ||
		    add_methods(api, api->tcp_srv) < 0 ||
		    drv_rpc_server_start(api->tcp_srv, &api->tcp_port, e2, sizeof(e2)) != 0) {
			snprintf(err, errlen, "cannot serve the API on %s: %s", o->cfg->listen_tcp, e2);
			goto fail;
		}
		if (!o->cfg->tcp_cert)
			srv_warn("api", "serving the API on %s WITHOUT TLS (no cert/key in listen.tcp)",
			         o->cfg->listen_tcp);
	}
	*out = api;
	return 0;
fail:
	srv_api_stop(api);
	srv_api_close_handles(api);
	uv_run(o->loop, UV_RUN_NOWAIT);
	srv_api_free(api);
	return -1;
}

int srv_api_tcp_port(const struct srv_api *api)
{
	return api->tcp_port;
}

void srv_api_stop(struct srv_api *api)
{
	pthread_mutex_lock(&api->mu);
	api->closed = true;
	struct api_call *c = api->head;
	api->head = api->tail = NULL;
	pthread_mutex_unlock(&api->mu);
	while (c) {
		struct api_call *next = c->next;
		reply_err(c, DRV_EUNAVAILABLE, "the server is shutting down");
		c = next;
	}
	/* Answers still waiting for a commit get it now (and the ones above with them). */
	if (srv_store_batch_commit(api->st) < 0)
		srv_error("api", "committing a batch of state: %s", srv_store_errmsg(api->st));
	committed(api, true);
	srv_store_set_commit_hook(api->st, NULL, NULL);
	/* Calls still being worked on by the loop are answered by the shutdown of the transport. */
	if (api->unix_srv)
		drv_rpc_server_shutdown(api->unix_srv, 500);
	if (api->tcp_srv)
		drv_rpc_server_shutdown(api->tcp_srv, 500);
}

void srv_api_close_handles(struct srv_api *api)
{
	uv_close((uv_handle_t *)&api->async, NULL);
	uv_timer_stop(&api->trim);
	uv_close((uv_handle_t *)&api->trim, NULL);
}

void srv_api_free(struct srv_api *api)
{
	if (!api)
		return;
	drv_rpc_server_free(api->unix_srv);
	drv_rpc_server_free(api->tcp_srv);
	pthread_mutex_destroy(&api->mu);
	explicit_bzero(api->token, sizeof(api->token));
	free(api);
}

int srv_api_load_token(const char *path, char *buf, size_t buflen, char *err, size_t errlen)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd >= 0) {
		unsigned char rnd[32];
		char hex[65];
		if (RAND_bytes(rnd, sizeof(rnd)) != 1) {
			close(fd);
			unlink(path);
			snprintf(err, errlen, "%s: no randomness for a token", path);
			return -1;
		}
		for (int i = 0; i < 32; i++)
			snprintf(hex + 2 * i, 3, "%02x", rnd[i]);
		ssize_t w = write(fd, hex, 64);
		ssize_t w2 = write(fd, "\n", 1);
		close(fd);
		if (w != 64 || w2 != 1) {
			unlink(path);
			snprintf(err, errlen, "%s: cannot write the admin token", path);
			return -1;
		}
		snprintf(buf, buflen, "%s", hex);
		explicit_bzero(hex, sizeof(hex));
		return 0;
	}
	if (errno != EEXIST) {
		snprintf(err, errlen, "%s: cannot create: %s", path, strerror(errno));
		return -1;
	}
	FILE *f = fopen(path, "r");
	struct stat st;
	/* As for secret.key: whoever reads the token may call the API (over TCP, from anywhere). */
	if (f && fstat(fileno(f), &st) == 0 && S_ISREG(st.st_mode) && (st.st_mode & 077)) {
		fclose(f);
		snprintf(err, errlen,
		         "%s: admin token file is accessible by group or others (mode %03o); chmod 600 it",
		         path, (unsigned)(st.st_mode & 0777));
		return -1;
	}
	if (!f || !fgets(buf, (int)buflen, f)) {
		if (f)
			fclose(f);
		snprintf(err, errlen, "%s: cannot read the admin token", path);
		return -1;
	}
	fclose(f);
	buf[strcspn(buf, "\r\n")] = 0;
	if (strlen(buf) < 16) {
		snprintf(err, errlen, "%s: the admin token is too short (at least 16 characters)", path);
		return -1;
	}
	return 0;
}
