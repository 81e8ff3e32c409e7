/*
 * srv_store — droverd's state in sqlite3 (WAL) under the data directory:
 * projects, backends, instances, events and a few server facts (meta).
 *
 * Backend types are TEXT with no CHECK, enum or list: a driver of a type never
 * seen before gets backends stored with no migration. Backend secrets are
 * sealed with srv_secrets before they reach the file.
 *
 * Threads: a store belongs to one thread (droverd's loop thread). Functions
 * return 0 or -1 and, on -1, leave a message in srv_store_errmsg(). Every
 * srv_store_*_get/list result is a copy the caller frees.
 */
#ifndef SRV_STORE_H
#define SRV_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "drover/state/v1/state.pb-c.h"

struct srv_store;
struct srv_secrets;

/* The newest schema version this build knows (PRAGMA user_version). */
#define SRV_STORE_SCHEMA_VERSION 5

/*
 * Opens or creates the database at `path` (":memory:" works) and runs every
 * migration from the file's user_version up. `secrets` is borrowed and may be
 * NULL only if no backend with secrets is ever written or read.
 * Refuses a file whose version is newer than this build.
 */
int srv_store_open(const char *path, struct srv_secrets *secrets, struct srv_store **out, char *err,
                   size_t errlen);
void srv_store_close(struct srv_store *st);
const char *srv_store_errmsg(const struct srv_store *st);
/* The key the store was opened with (borrowed; may be NULL), which also signs droverd's machines. */
struct srv_secrets *srv_store_secrets(const struct srv_store *st);
int srv_store_schema_version(struct srv_store *st);

/* Groups writes into one transaction (nesting is counted). */
int srv_store_begin(struct srv_store *st);
int srv_store_commit(struct srv_store *st);

/*
 * Batching: with a hook set, the first write outside a transaction opens a
 * "batch" transaction and calls the hook (which arranges for
 * srv_store_batch_commit soon, e.g. at the end of the loop iteration). Every
 * write until then joins that one commit.
 */
typedef void (*srv_store_batch_cb)(void *ud);
void srv_store_set_batch_hook(struct srv_store *st, srv_store_batch_cb cb, void *ud);
/* Commits the open batch, if any. 0 or -1. */
int srv_store_batch_commit(struct srv_store *st);
/* True while a batch is open: what was written since is not durable yet. */
bool srv_store_in_batch(const struct srv_store *st);
/*
 * Called after each batch's commit (ok false when it failed and was rolled
 * back), so answers that describe the batch's writes go out only then.
 */
typedef void (*srv_store_commit_cb)(void *ud, bool ok);
void srv_store_set_commit_hook(struct srv_store *st, srv_store_commit_cb cb, void *ud);

/* Server facts ("server_id"). *value is malloc'ed, NULL when absent. */
int srv_store_meta_get(struct srv_store *st, const char *key, char **value);
int srv_store_meta_set(struct srv_store *st, const char *key, const char *value);

/* ---- projects ---- */
int srv_store_project_put(struct srv_store *st, const char *name);
/* 1 if it exists, 0 if not, -1 on error. */
int srv_store_project_exists(struct srv_store *st, const char *name);
/* Like srv_store_project_exists, with the project's creation time (ms) in *created_at. */
int srv_store_project_created(struct srv_store *st, const char *name, int64_t *created_at);
/* *names is a malloc'ed array of malloc'ed strings. */
int srv_store_project_list(struct srv_store *st, char ***names, size_t *n);

/* ---- backends ---- */
struct srv_secret_kv {
	char *name;
	char *value;
};

struct srv_backend {
	char *project;
	char *name;
	char *type;        /* opaque: whatever the driver's GetInfo says */
	char *config_json; /* a JSON object */
	struct srv_secret_kv *secrets;
	size_t n_secrets;
	char *source; /* "config" (from the YAML file) or "api" */
	int64_t created_at;
};

/* Inserts or replaces (project, name). Fields are borrowed. */
int srv_store_backend_put(struct srv_store *st, const struct srv_backend *b);
/* 0 and *out, 1 when there is no such backend, -1 on error. */
int srv_store_backend_get(struct srv_store *st, const char *project, const char *name,
                          struct srv_backend **out);
/* project NULL: every backend. Sorted by project, name. */
int srv_store_backend_list(struct srv_store *st, const char *project, struct srv_backend ***out, size_t *n);
/* 0, 1 when there was none, -1 on error. */
int srv_store_backend_delete(struct srv_store *st, const char *project, const char *name);
/* Instances of the backend that are not terminated or failed. */
int srv_store_backend_live_instances(struct srv_store *st, const char *project, const char *name, int64_t *n);
void srv_backend_free(struct srv_backend *b);
void srv_backend_list_free(struct srv_backend **list, size_t n);
struct srv_backend *srv_backend_dup(const struct srv_backend *b);

/* ---- instances ---- */

/*
 * Instance states. "pending": recorded, no driver call yet. "creating": a
 * CreateInstance is (or may be) in flight with `idempotency_key`; on restart
 * it is resumed with the same key. "provisioning": the driver made it, no
 * address yet. "running": has an address. "terminating": termination asked,
 * its end not yet observed. "terminated": droverd observed the machine's
 * end (GetInstance says TERMINATED or NOT_FOUND, or ListInstances by its tag
 * no longer lists it) after TerminateInstance answered OK.
 * "failed": no machine was made (every attempt refused).
 */
#define SRV_ST_PENDING "pending"
#define SRV_ST_CREATING "creating"
#define SRV_ST_PROVISIONING "provisioning"
#define SRV_ST_RUNNING "running"
#define SRV_ST_TERMINATING "terminating"
#define SRV_ST_TERMINATED "terminated"
#define SRV_ST_FAILED "failed"

struct srv_instance {
	char *id;
	char *project;
	char *backend;
	char *backend_type;
	char *name;
	char *status;
	unsigned char *offer; /* packed drover.compute.v1.Offer, or NULL */
	size_t offer_len;
	unsigned char *provisioning; /* packed drover.compute.v1.ProvisioningData, or NULL */
	size_t provisioning_len;
	char *idempotency_key;
	/*
	 * Attempts and ssh keys, the API's messages as they are stored (packed in
	 * the row); owned by the row, allocated as protobuf-c's unpack does (the
	 * system allocator), freed with it. NULL: none of either.
	 */
	Drover__State__V1__InstanceRecord *record;
	char *last_error; /* NULL when none */
	unsigned char
	    *requirements; /* packed drover.compute.v1.Requirements as given, for resuming; may be NULL */
	size_t requirements_len;
	int64_t termination_failures;
	int64_t created_at, updated_at; /* ms since the epoch */
	int64_t next_check_at;          /* when reconciliation looks at it next; 0 = never */
	int64_t terminated_at;          /* ms since the epoch; 0 until terminated */
	/*
	 * A terminate asked for while the create call was out: when the create
	 * ends, a machine it made is terminated, and one that made none fails
	 * without trying further offers.
	 */
	bool terminate_requested;
	/*
	 * Termination is observed, not believed. termination_acked_at: when
	 * TerminateInstance first answered OK for this termination (0: not yet);
	 * the window of the termination.unconfirmed warning runs from it.
	 * termination_checks: observations since then that found the machine
	 * still there (their backoff). termination_unconfirmed: that warning was
	 * raised. All three are reset when a row starts terminating again.
	 */
	int64_t termination_acked_at;
	int64_t termination_checks;
	bool termination_unconfirmed;
};

/* Inserts or replaces by id. Fields are borrowed; updated_at is set to now. */
int srv_store_instance_put(struct srv_store *st, struct srv_instance *inst);
/* 0 and *out, 1 when there is no such instance, -1 on error. */
int srv_store_instance_get(struct srv_store *st, const char *id, struct srv_instance **out);

struct srv_instance_filter {
	const char *project;  /* NULL: any */
	const char *backend;  /* NULL: any */
	bool live_only;       /* skip terminated and failed */
	const char *statuses; /* ",running,terminating,": only these states; NULL: any */
	int64_t limit;        /* 0: no limit */
	int64_t offset;
	/*
	 * Paging by key rather than offset: oldest first, and only instances
	 * after (after_created, after_id) when after_id is set.
	 */
	bool oldest_first;
	int64_t after_created;
	const char *after_id;
};
/* Newest first, or oldest first with f->oldest_first. */
int srv_store_instance_list(struct srv_store *st, const struct srv_instance_filter *f,
                            struct srv_instance ***out, size_t *n);
/* Instances whose next_check_at is set and <= now_ms, oldest due first. */
int srv_store_instance_due(struct srv_store *st, int64_t now_ms, int64_t limit, struct srv_instance ***out,
                           size_t *n);
/* Instances in one state (e.g. "creating" at start-up). */
int srv_store_instance_by_status(struct srv_store *st, const char *status, struct srv_instance ***out,
                                 size_t *n);
/* 1 if an instance has this idempotency key (current or past attempt), 0 if not. */
int srv_store_instance_has_key(struct srv_store *st, const char *key);
int srv_store_instance_count(struct srv_store *st, const char *status, int64_t *n);
void srv_instance_free(struct srv_instance *inst);
void srv_instance_list_free(struct srv_instance **list, size_t n);

/* The live instance with this name in the project (live_only) or the newest of any state. 1: none. */
int srv_store_instance_by_name(struct srv_store *st, const char *project, const char *name, bool live_only,
                               struct srv_instance **out);
/* The instance created with this request idempotency key. 1: none. */
int srv_store_instance_by_key(struct srv_store *st, const char *project, const char *key,
                              struct srv_instance **out);
int srv_store_instance_count_live(struct srv_store *st, const char *project, int64_t *n);
/*
 * A live instance of `backend` in `project`, other than `except`, whose
 * provisioning data names the provider's instance `provider_id` (non-empty):
 * 0 and its id in *holder (malloc'ed), 1 when there is none, -1 on error.
 */
int srv_store_instance_holding(struct srv_store *st, const char *project, const char *backend,
                               const char *provider_id, const char *except, char **holder);

/*
 * The backend an instance was made on, with its secrets: the live backend, or
 * the copy kept in the instance when the backend was removed with force.
 * 0, 1 when neither exists, -1 on error.
 */
int srv_store_instance_backend(struct srv_store *st, const struct srv_instance *in, struct srv_backend **out);

/*
 * Removes a backend; its live instances keep a copy of its config and sealed
 * secrets, so they can still be terminated. 0, 1 when there was none, -1.
 */
int srv_store_backend_detach(struct srv_store *st, const char *project, const char *name);

/* ---- events ---- */
enum { SRV_EVENT_INFO = 1, SRV_EVENT_WARNING = 2, SRV_EVENT_ERROR = 3 };

struct srv_event {
	int64_t id;
	int64_t ts; /* 0 on add: now */
	int level;  /* SRV_EVENT_*; 0 on add: INFO */
	char *project, *instance, *kind, *message, *backend, *driver;
};
/* Fields borrowed; NULL strings are stored as NULL. */
int srv_store_event_add(struct srv_store *st, const struct srv_event *ev);

struct srv_event_filter {
	const char *project;  /* NULL: any */
	const char *instance; /* NULL: any */
	int64_t after_id;
	int64_t limit; /* the latest `limit`; 0: 100 */
	bool first;    /* the first `limit` after after_id instead of the latest */
};
/* Oldest first. */
int srv_store_event_list(struct srv_store *st, const struct srv_event_filter *f, struct srv_event **out,
                         size_t *n);
/*
 * Where the latest f->limit events matching f begin: *after is the id just
 * before them (f->after_id when there are no more than f->limit). 0 or -1.
 */
int srv_store_event_window(struct srv_store *st, const struct srv_event_filter *f, int64_t *after);
void srv_event_list_free(struct srv_event *ev, size_t n);

/* Milliseconds since the epoch, the store's clock. */
int64_t srv_now_ms(void);

#endif
