/*
 * What the engine's files (srv_engine, srv_offers, srv_provision,
 * srv_reconcile) share: the engine itself and a few helpers. Not for other
 * modules.
 */
#ifndef SRV_ENGINE_INTERNAL_H
#define SRV_ENGINE_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "srv_engine.h"

struct srv_store;
struct srv_supervisor;
struct srv_config;
struct srv_instance;
struct offers_cache;
struct create_op;

/* How often the store's tagged machines are compared with every backend's. */
#define ORPHAN_SCAN_EVERY_MS 60000

/*
 * The tags droverd gives every machine it creates: its server id, the
 * instance id, and the signature of the instance id, project and backend
 * name (srv_secrets_sign_machine), which proves droverd made it.
 */
#define SRV_TAG_SERVER "drover-server"
#define SRV_TAG_INSTANCE "drover-instance"
#define SRV_TAG_SIGNATURE "drover-sig"

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
	/* Creates not yet answered, whose row may not be written yet (srv_provision.c). */
	struct create_op *creating;
	/* Every create from its start to its end, resumed ones too (srv_provision.c). */
	struct create_op *ops;
	/* When each backend last had its dropped offers reported (srv_offers.c). */
	struct offer_warn *offer_warns;
	/* The last orphan scan's foreign machines, one entry per backend that had any (srv_orphans.c). */
	struct srv_foreign_scan *foreign;
	size_t n_foreign;
};

/* UNAVAILABLE, DEADLINE_EXCEEDED and the like: the driver may or may not have acted. */
bool srv__is_uncertain(int code);
/* A message packed into a new malloc'ed buffer of *len bytes; NULL when out of memory. */
void *srv__pack(const ProtobufCMessage *m, size_t *len);
/*
 * Replaces *dst by a copy of src (NULL allowed). Returns 0, or DRV_ENOMEM
 * with *dst unchanged, so a caller can leave a record as it was.
 */
int srv__set_str(char **dst, const char *src);
/* Replaces *dst by m packed (NULL: no blob). Returns 0, or DRV_ENOMEM with *dst unchanged. */
int srv__set_blob(unsigned char **dst, size_t *dlen, const ProtobufCMessage *m);
/* Writes the instance; a failure is logged (the loop goes on). */
void srv__put_or_log(struct srv_engine *eng, struct srv_instance *in);
/* next_check_at for a running machine: its next GetInstance, or 0 when they are not checked. */
int64_t srv__running_check_at(const struct srv_engine *eng);

/*
 * The limit of srv__check_provisioning (srv_instance_check.c) on backend_data;
 * its ids and names keep the SDK's text rules (drover/offer_check.h).
 */
#define SRV_MAX_BACKEND_DATA 65536
/*
 * srv_instance_check.c: 0 when a driver's provisioning data can be stored
 * and used (a usable instance id, sane address fields); else -1 with the
 * fault, naming the field, in why.
 */
int srv__check_provisioning(const drv_provisioning_data *pd, char *why, size_t len);
/* Bytes of one offer inside a response's bytes. */
struct srv__span {
	const uint8_t *p;
	size_t len;
};
/*
 * srv_offers.c: where each offer of a GetOffersResponse lies in the `len`
 * bytes at `p` it was unpacked from: for every top-level field 1 (offers)
 * entry, in order, its length varint and body, which is what a
 * length-delimited field carries after its tag. protobuf-c keeps a repeated
 * field's entries in wire order, so entry k is offers[k]. Only the top level
 * is walked; the offers themselves stay opaque. Returns false unless exactly
 * `n` entries are found in well-formed bytes (the caller then packs the
 * offers itself). Bytes from a driver: fuzzed by fuzz/fuzz_offer_scan.c.
 */
bool srv__offers_scan(const uint8_t *p, size_t len, size_t n, struct srv__span *at);

/* srv_provision.c: resumes an instance left "creating" (takes `in`). */
void srv__create_resume(struct srv_engine *eng, struct srv_instance *in);
/*
 * srv_provision.c: the row a create in progress holds for instance `id`
 * (borrowed), or NULL. It is the newest copy: the create writes it again.
 */
struct srv_instance *srv__create_row(struct srv_engine *eng, const char *id);
/* srv_provision.c: drops the offers shared between creates. */
void srv__offers_cache_clear(struct srv_engine *eng);
/* Frees the record of warnings about dropped offers (srv_offers.c). */
void srv__offer_warns_free(struct srv_engine *eng);
/* srv_reconcile.c: a row (re)starting termination: no OK, no look, no warning yet. */
void srv__termination_reset(struct srv_instance *in);
/*
 * srv_reconcile.c: a termination not observed yet (`what` says why): the
 * next look after a growing wait, last_error, and the termination.unconfirmed
 * window. The row is written; the caller set termination_acked_at.
 */
void srv__termination_not_observed(struct srv_engine *eng, struct srv_instance *in, const char *what);
/* srv_reconcile.c: the value of a listed machine's tag `key` in *value; false when it has none. */
bool srv__listed_tag(const drv_listed_instance *li, const char *key, const char **value);
/* srv_orphans.c: forgets every kept foreign machine. */
void srv__foreign_clear(struct srv_engine *eng);
/* srv_reconcile.c: a reconciliation pass on the next loop turn; the timer's callback. */
void srv__engine_kick(struct srv_engine *eng);
void srv__reconcile_timer_cb(uv_timer_t *t);

#endif
