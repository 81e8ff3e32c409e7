/*
 * srv_engine — offers and provisioning.
 *
 * Offers fan out to every backend of a project at once, each with a
 * per-driver deadline; the answers are merged, filtered by the requirements
 * and the backends' features, and sorted by price. A slow or failing backend
 * is reported beside the results and never fails the query.
 *
 * Provisioning tries offers in price order and falls back to the next offer
 * when one is refused (RESOURCE_EXHAUSTED and other definite refusals). Every
 * attempt is written to the store before and after its driver call, with an
 * idempotency key derived from the instance's, so a crash at any point never
 * makes a second machine and never forgets one: on start, instances left in
 * "creating" are resumed with the same key. A reconciliation loop on a timer
 * polls GetInstance until an instance has an address, retries
 * TerminateInstance with backoff, never marks an instance terminated without
 * observing the machine's end (GetInstance or ListInstances after
 * TerminateInstance answered OK), and finds orphans through ListInstances and
 * the server's signed tags.
 *
 * Threads: the loop thread only; callbacks run there.
 */
#ifndef SRV_ENGINE_H
#define SRV_ENGINE_H

#include <stdbool.h>
#include <stdint.h>

#include <uv.h>

#include "drover/host.h"
#include "drover/types.h"

struct srv_engine;
struct srv_store;
struct srv_supervisor;
struct srv_config;
struct srv_backend;
struct srv_instance;

/*
 * A backend's config and secrets as a call's BackendConfig, through the SDK's
 * builder (drover/host.h): b->msg borrows the backend's strings;
 * drv_backend_config_clear() frees the rest. Returns 0, or DRV_ENOMEM.
 */
int srv_bcfg_init(struct drv_backend_config_buf *b, const struct srv_backend *be);

int srv_engine_new(uv_loop_t *loop, struct srv_store *st, struct srv_supervisor *sup,
                   const struct srv_config *cfg, const char *server_id, struct srv_engine **out);
/* Resumes interrupted work (instances left "creating") and starts the reconciliation timer. */
void srv_engine_start(struct srv_engine *eng);
/* Stops accepting work: the timer stops; replies of calls still in flight are dropped safely. */
void srv_engine_stop(struct srv_engine *eng);
void srv_engine_close_handles(struct srv_engine *eng);
void srv_engine_free(struct srv_engine *eng);

/* ---- offers ---- */

struct srv_offers_query {
	const char *project;
	const drv_requirements *requirements; /* may be NULL */
	drv_features required_features;
	const char *const *backends; /* only these backends; NULL: all of the project's */
	size_t n_backends;
	int timeout_ms; /* per backend; 0: the config's offers_timeout_ms */
	/*
	 * Also pack each kept offer (srv_offer_item.wire) as its backend's
	 * answer arrives, while the others are still working: a 16,000-offer
	 * reply then only copies bytes once the last backend answered.
	 */
	bool packed_offers;
};

struct srv_offer_item {
	const char *backend; /* borrowed from the result */
	const char *backend_type;
	const drv_offer *offer;
	/* With packed_offers: the packed offer preceded by its length (varint), as a length-delimited field's
	 * value. */
	const uint8_t *wire;
	size_t wire_len;
	/* private: sort keys (the first 16 bytes of type and region), so most comparisons need no strcmp */
	double price;
	uint64_t type_key[2], region_key[2];
	uint32_t rank;     /* the backend's place in the query's backends, which are sorted by name */
	bool type_short;   /* the type fits in its key: equal keys mean equal types */
	bool region_short; /* likewise for the region */
};

struct srv_backend_result {
	char *backend;
	char *type;
	int code; /* 0 or a drv_error */
	char *message;
	unsigned offer_count; /* before filtering */
	unsigned elapsed_ms;
	unsigned bad_offers; /* dropped by drv_offer_check (docs/PROTOCOL.md §12.2) */
};

struct srv_offers_result {
	struct srv_offer_item *items; /* filtered, sorted by price */
	size_t n_items;
	struct srv_backend_result *backends; /* one per backend, sorted by name */
	size_t n_backends;
	/* private: the responses the items point into */
	ProtobufCMessage **resps;
	uint8_t **wires; /* per response: the buffer of its items' wire bytes */
	size_t n_resps;
	struct srv_backend **bes;
	size_t n_bes;
};

/*
 * code is 0 (even if every backend failed) or DRV_ENOTFOUND (no project)
 * or another error from the store; `res` belongs to the callback (free with
 * srv_offers_result_free) and is NULL on error.
 */
typedef void (*srv_offers_cb)(void *ud, int code, const char *message, struct srv_offers_result *res);
void srv_engine_offers(struct srv_engine *eng, const struct srv_offers_query *q, srv_offers_cb cb, void *ud);
void srv_offers_result_free(struct srv_offers_result *res);

/* ---- instances ---- */

struct srv_create_request {
	const char *project;
	const char *name;                     /* "" or NULL: the server picks one */
	const drv_requirements *requirements; /* may be NULL */
	drv_features required_features;
	unsigned max_tries; /* 0: the config's */
	const char *const *ssh_keys;
	size_t n_ssh_keys;
	const char *const *backends;
	size_t n_backends;
	const char *idempotency_key; /* "" or NULL: the server makes one */
};

/*
 * code 0: `inst` is the instance (PROVISIONING/RUNNING, FAILED, or CREATING
 * when the outcome is still unknown and reconciliation carries on). Errors:
 * DRV_ENOCAPACITY (no offer matches; nothing recorded), DRV_EEXIST (a live
 * instance of that name), DRV_ENOTFOUND, DRV_EINTERNAL. `inst` belongs to the
 * engine; copy what you need.
 */
typedef void (*srv_instance_cb)(void *ud, int code, const char *message, const struct srv_instance *inst);
void srv_engine_create(struct srv_engine *eng, const struct srv_create_request *req, srv_instance_cb cb,
                       void *ud);

/*
 * Marks an instance "terminating" (written before any driver call) and kicks
 * the reconciliation loop, which calls the driver. Already terminating,
 * terminated or failed: no change. While its CreateInstance call is out (no
 * machine id yet) it stays "creating" with terminate_requested written, and
 * the create's end acts on it. Returns 0 (and the updated row in *out,
 * caller frees), 1 when there is no such instance, -1 on store errors,
 * DRV_ENOMEM when out of memory (nothing written).
 */
int srv_engine_terminate(struct srv_engine *eng, const char *id, struct srv_instance **out);

/*
 * A create still looking up offers, whose row is not written yet, named by
 * `id` (its instance id, or its name within `project` when that is set):
 * its row is written "failed" at once (no driver call is made for it), and
 * the create answers the same once its offers are in. Returns 0 and *out
 * (the row written; caller frees), 1 when no such create is looking up
 * offers, -1 on store errors, DRV_ENOMEM when out of memory (nothing
 * written).
 */
int srv_engine_terminate_unwritten(struct srv_engine *eng, const char *project, const char *id,
                                   struct srv_instance **out);
/* The same create as a copy ("pending"), without changing it; same returns but -1. */
int srv_engine_get_unwritten(struct srv_engine *eng, const char *project, const char *id,
                             struct srv_instance **out);
/*
 * Copies ("pending") of every create still looking up offers, of `project`
 * (NULL: every project), oldest first, in *out (srv_instance_list_free). 0, or DRV_ENOMEM
 * with nothing in *out.
 */
int srv_engine_list_unwritten(struct srv_engine *eng, const char *project, struct srv_instance ***out,
                              size_t *n);

/* Appends an event to the store (and the log at WARN/ERROR). */
void srv_engine_event(struct srv_engine *eng, int level, const char *kind, const char *project,
                      const char *instance, const char *backend, const char *driver, const char *fmt, ...)
    __attribute__((format(printf, 8, 9)));

/*
 * Asks every backend whose driver is up for the machines carrying this
 * server's tag. A machine whose signature tag verifies (droverd made it)
 * and that the store does not know is adopted (as "running", with a warning
 * event); one the store holds terminated or failed that is listed alive
 * goes back to "terminating". A machine with the tags but no valid
 * signature is foreign: kept for srv_engine_foreign_scans, reported in one
 * event per backend and scan, never adopted and never terminated. Each
 * backend's scan looks at provisioning.orphan_max_listed machines and adopts
 * orphan_max_adopted at most. Runs by itself a few seconds after start and
 * every minute.
 */
void srv_engine_find_orphans(struct srv_engine *eng);

/* A foreign machine as listed; strings cut to SRV_FOREIGN_FIELD_MAX bytes, unprintable bytes as '?'. */
struct srv_foreign_machine {
	char *instance_id;  /* the provider's id */
	char *tag_instance; /* its drover-instance tag */
	char *name, *region, *instance_type;
	const char *reason; /* static text: why it does not verify */
};
#define SRV_FOREIGN_FIELD_MAX 128
/* Foreign machines kept per backend; more are counted in `total` only. */
#define SRV_FOREIGN_KEPT 1000

/* The last scan of one backend that found foreign machines. */
struct srv_foreign_scan {
	char *project, *backend, *backend_type;
	int64_t scanned_at;
	size_t total;
	struct srv_foreign_machine *machines;
	size_t n_machines;
};

/*
 * The last scan's foreign machines, per backend (only backends that had
 * any); borrowed, valid until the loop runs again.
 */
const struct srv_foreign_scan *srv_engine_foreign_scans(const struct srv_engine *eng, size_t *n);

/* For tests: runs one reconciliation pass now. */
void srv_engine_reconcile_now(struct srv_engine *eng);
/* Operations (creates, reconciliation calls) still in flight. */
unsigned srv_engine_busy(const struct srv_engine *eng);

/* Instances that have failed termination this many times are shown as TERMINATION_FAILING. */
#define SRV_TERMINATION_FAILING_AFTER 2

#endif
