/*
 * sim_core.h — the simulated cloud behind drover-driver-sim, independent of
 * the SDK's call context so unit tests drive the very same code.
 *
 * The driver's handlers (sim_driver.c) read the call's config into a
 * struct sim_config, find the state of its state file, inject faults, and call
 * the functions below. Those fill the protocol's response messages with
 * memory from a struct sim_arena (the call's arena in the driver, a test arena
 * in tests) and report failures as a negative drv_error plus a message in a
 * struct sim_err.
 *
 * Threads: the catalog is immutable once loaded and shared by all threads.
 * Each state has its own mutex; every sim_state_* / sim_instance_* / ...
 * function takes it for its whole duration, so handlers may run concurrently.
 */
#ifndef SIM_CORE_H
#define SIM_CORE_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "drover/types.h"

/* ---- plumbing ---- */

/*
 * Zeroed allocations that live as long as the response being built. The sim
 * aborts when memory runs out (common/xalloc.h: it keeps nothing a restart
 * loses), so these never return NULL, and neither do the x-wrappers it uses
 * for its own records.
 */
struct sim_arena {
	void *(*alloc)(void *ctx, size_t size);
	void *ctx;
};

void *sim_arena_alloc(struct sim_arena *a, size_t size);
/* Copies s (NULL gives ""). */
char *sim_arena_strdup(struct sim_arena *a, const char *s);
/* A message of desc's type from the arena, initialised. */
void *sim_arena_message(struct sim_arena *a, const ProtobufCMessageDescriptor *desc);
#define sim_new(a, name) ((drv_##name *)sim_arena_message((a), &drover__compute__v1__##name##__descriptor))

/* The message that goes with a negative return code. */
struct sim_err {
	char msg[384];
};

/* Sets e->msg (printf-style) and returns `code`. */
int sim_fail(struct sim_err *e, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/*
 * Text from a request that goes into the state file must be UTF-8: JSON
 * cannot hold anything else, so saving the state would fail (and protobuf's
 * `string` promises UTF-8 anyway, though the codec does not check it).
 * sim_check_* return 0, or DRV_EINVAL naming `field`.
 */
bool sim_utf8_valid(const char *s);
int sim_check_text(struct sim_err *e, const char *field, const char *s);
/* Tag i of the request's map `field`. */
int sim_check_tag(struct sim_err *e, const char *field, size_t i, const char *key, const char *value);

/* The config of one call, read from the BackendConfig by the driver. Borrowed strings. */
struct sim_config {
	const char *state_file; /* NULL or "": the process-wide in-memory state */
	const char *const *regions;
	size_t n_regions; /* 0: every region of the catalog */
	int64_t capacity; /* live instances per (instance type, region) */
	int64_t provisioning_delay_ms;
	int64_t latency_ms;
	double error_rate;
	double crash_rate;
	int64_t synthetic_offers;
	int64_t seed;
	bool fail_termination;
	int64_t terminated_retention_ms;
	double terminate_lie_rate; /* share of TerminateInstance calls answered OK with no effect */
};

/* The defaults of the declared config fields, for tests and the driver alike. */
#define SIM_DEFAULT_CAPACITY 4
#define SIM_DEFAULT_SEED 1
/*
 * How long a terminated instance or gateway is still answered (GetInstance
 * says TERMINATED, its idempotency key names it) before the state forgets
 * it, as EC2 keeps a terminated instance visible for about an hour. Without
 * this every create and terminate of a long-lived state rewrote every machine
 * it ever made (3,000 made: 7 create+terminate cycles/s, from 29 at the start).
 */
#define SIM_DEFAULT_TERMINATED_RETENTION_S 3600
#define SIM_MAX_TERMINATED_RETENTION_S (7 * 86400)
/*
 * Upper bounds of the declared config fields. Delays: a day of provisioning
 * and an hour per call are far past any test's need, and keep
 * created_ms + delay far from overflowing. Synthetic offers: 100,000 answer in
 * about 13 MB, well inside the protocol's 64 MiB per message, and cost about
 * 35 MB kept per (count, seed); a million made an answer no host could receive.
 */
#define SIM_MAX_PROVISIONING_DELAY_MS 86400000
#define SIM_MAX_LATENCY_MS 3600000
#define SIM_MAX_SYNTHETIC_OFFERS 100000
/* The largest volume, as on EBS and GCP persistent disks; size_mib is saved as a JSON integer (int64). */
#define SIM_MAX_VOLUME_MIB (64 * 1024 * 1024)
void sim_config_init(struct sim_config *cfg);

/* Milliseconds of the wall clock (persisted times survive restarts). */
int64_t sim_now_ms(void);

/* ---- catalog (sim_catalog.c) ---- */

struct sim_type {
	const char *provider;
	const char *name;
	const char *gpu_name; /* NULL for CPU-only types */
	const char *gpu_vendor;
	uint32_t gpu_count;
	uint64_t gpu_memory_mib;
	uint32_t cpus;
	uint64_t memory_mib;
	uint64_t disk_mib;
	const char *cpu_arch;
	double price;            /* on-demand USD/hour */
	double spot_price;       /* 0: no spot offers */
	const uint16_t *regions; /* indices into sim_catalog.regions */
	size_t n_regions;
};

/*
 * One precomputed offer. `offer` points into the rest of the struct and into
 * the catalog's strings, so a response may copy the drv_offer by value and
 * share everything it points to (read-only).
 */
struct sim_offer {
	drv_offer offer;
	drv_resources resources;
	drv_gpu gpu;
	drv_gpu *gpus[1];
	uint64_t slot; /* hash of (instance type, region): the capacity pool */
	uint16_t region_idx;
	bool no_quota; /* deterministic: a few pools have no quota */
};

struct sim_catalog {
	char *text; /* owned copy of the TSV; the string fields point into it */
	struct sim_type *types;
	size_t n_types;
	size_t *by_name;      /* type indices sorted by name, for lookup */
	const char **regions; /* unique region names, sorted */
	size_t n_regions;
	char *(*zones)[3];        /* per region: "<region>a", "<region>b", "<region>c" */
	uint16_t *region_lists;   /* storage of sim_type.regions */
	struct sim_offer *offers; /* every type x region x {on-demand, spot}, sorted by price */
	size_t n_offers;
};

/* The embedded catalog (catalog.tsv at build time). */
extern const char sim_catalog_tsv[];
extern const size_t sim_catalog_tsv_len;

/*
 * Parses a catalog in the catalog.tsv format. Returns 0 and a new catalog, or
 * DRV_EINVAL with "line N: ..." in e.
 */
int sim_catalog_parse(const char *text, size_t len, struct sim_catalog **out, struct sim_err *e);
void sim_catalog_free(struct sim_catalog *cat);

/*
 * The embedded catalog, parsed once on first use (thread-safe). NULL if it does
 * not parse (a build defect the unit tests catch); e then says why.
 */
const struct sim_catalog *sim_catalog_default(struct sim_err *e);

const struct sim_type *sim_catalog_find_type(const struct sim_catalog *cat, const char *name);
/* Index of a region name, or -1. */
int sim_catalog_find_region(const struct sim_catalog *cat, const char *name);
/* True if `type` is sold in region index r. */
bool sim_type_in_region(const struct sim_type *type, int r);
/* The capacity pool hash of (type name, region name). */
uint64_t sim_slot_hash(const char *type, const char *region);
/* True if (type, region index r) is one of the deterministic no-quota pools (never the type's first region).
 */
bool sim_type_no_quota(const struct sim_catalog *cat, const struct sim_type *type, int r);

/*
 * Synthetic offers (config "synthetic_offers"): `n` extra offers that depend
 * only on (n, seed), built once per (n, seed) and cached for the process.
 * Sorted by price. Returns NULL only when out of memory.
 */
struct sim_synth {
	int64_t n, seed;
	struct sim_offer *offers;
	size_t n_offers;
	char *names; /* storage of the instance type names */
	struct sim_synth *next;
};
const struct sim_synth *sim_synth_get(const struct sim_catalog *cat, int64_t n, int64_t seed);
/* The synthetic offer with this instance type and region under (n, seed), or NULL. */
const struct sim_offer *sim_synth_find(const struct sim_synth *s, const char *type, const char *region,
                                       bool spot);
/* Frees every cached synthetic set (tests, driver stop). */
void sim_synth_cleanup(void);

/* ---- state (sim_state.c) ---- */

struct sim_tag {
	char *key, *value;
};

struct sim_instance {
	char *id, *idempotency_key, *name, *project;
	char *reservation; /* "" or the capacity reservation it was launched into */
	char *instance_type, *region, *zone;
	char *hostname, *internal_ip;
	bool spot;
	double price;
	int64_t created_ms, ready_ms, terminated_ms;
	bool terminated;
	struct sim_tag *tags;
	size_t n_tags;
};

struct sim_volume {
	char *id, *idempotency_key, *name, *project, *region, *zone;
	uint64_t size_mib;
	char *attached_instance_id; /* NULL when detached */
	char *device_name;          /* NULL when detached */
	struct sim_tag *tags;
	size_t n_tags;
};

struct sim_placement_group {
	char *name, *region, *project, *group_id;
	int strategy;
};

struct sim_gateway {
	char *id, *idempotency_key, *name, *project, *region;
	char *ip_address, *hostname;
	bool public_ip;
	bool terminated;
	int64_t terminated_ms;
};

/* A growable array of pointers to records (records never move). */
struct sim_vec {
	void **items;
	size_t n, cap;
};

/* One version of the state file: every save renames a new inode into place. */
struct sim_file_stamp {
	bool exists;
	uint64_t dev, ino, size;
	int64_t mtime_ns;
};

struct sim_state {
	char *path; /* canonical; "" for the in-memory state */
	pthread_mutex_t mu;
	int lock_fd;                  /* "<path>.lock", flock'ed between processes; -1 until opened */
	struct sim_file_stamp stamp;  /* of the file as last loaded or saved */
	uint64_t next_serial;         /* for ids and made-up addresses */
	struct sim_vec instances;     /* struct sim_instance * */
	struct sim_vec volumes;       /* struct sim_volume * */
	struct sim_vec groups;        /* struct sim_placement_group * */
	struct sim_vec gateways;      /* struct sim_gateway * */
	_Atomic int64_t retention_ms; /* of terminated instances and gateways; see sim_state_set_retention */
	struct sim_state *next;       /* registry list */
};

/*
 * The state of `path` (NULL or "": in memory), loaded from the file on first
 * use and kept for the process. Thread-safe. Errors: DRV_EINVAL when the file
 * exists but is not a readable sim state (message names the file and why).
 */
int sim_state_get(const char *path, struct sim_state **out, struct sim_err *e);
/* Frees every state of the registry (tests, driver stop); no call may be running. */
void sim_state_registry_clear(void);

/*
 * Takes st->mu, then an exclusive flock on "<path>.lock" so that another
 * driver process on the same file (e.g. one still shutting down while its
 * successor runs) cannot interleave its read-modify-write with ours; then,
 * if the file changed under us since we last read or wrote it (that other
 * process, or an operator deleting it), reads it again first. A file that
 * cannot be read keeps the contents we have. Every operation runs between
 * sim_state_lock() and sim_state_unlock().
 */
void sim_state_lock(struct sim_state *st);
void sim_state_unlock(struct sim_state *st);

/*
 * Writes the state to its file atomically: a temp file next to it, fsync,
 * rename, fsync of the directory. Called with the state locked. On failure the old
 * file is untouched and DRV_EUNAVAILABLE comes back with the reason.
 */
int sim_state_save(struct sim_state *st, struct sim_err *e);
/*
 * Replaces the in-memory contents with the file's (empty if there is none).
 * Called with the state locked; used to undo a mutation whose save failed.
 */
int sim_state_reload(struct sim_state *st, struct sim_err *e);
/*
 * Saves after a mutation; if that fails, reloads the last saved contents so
 * memory never runs ahead of the file. Returns the save's result. Before
 * saving, forgets the instances and gateways terminated longer ago than the
 * state's retention.
 */
int sim_state_commit(struct sim_state *st, struct sim_err *e);
/*
 * The retention of terminated records (ms; 0 forgets them at the next
 * commit), taken from the latest call's config: backends sharing a state
 * file share it too. Any thread, locked or not.
 */
void sim_state_set_retention(struct sim_state *st, int64_t ms);

/* Takes a new serial number (state locked). */
uint64_t sim_state_serial(struct sim_state *st);

void sim_vec_push(struct sim_vec *v, void *item);
void sim_vec_remove(struct sim_vec *v, size_t i);

void sim_instance_free(struct sim_instance *in);
void sim_volume_free(struct sim_volume *v);
void sim_group_free(struct sim_placement_group *g);
void sim_gateway_free(struct sim_gateway *g);

/* ---- operations (sim_offers.c, sim_instances.c, sim_resources.c) ---- */

/* Checks that every config region exists; DRV_EINVAL naming the first unknown one. */
int sim_config_check_regions(const struct sim_catalog *cat, const struct sim_config *cfg, struct sim_err *e);

int sim_offers_get(const struct sim_catalog *cat, struct sim_state *st, const struct sim_config *cfg,
                   const drv_requirements *req, struct sim_arena *a, drv_get_offers_response *resp,
                   struct sim_err *e);
/*
 * Forgets the kept candidate lists of `cat`, or of every catalog when NULL,
 * before the offers they point to are freed (no call may be using them).
 */
void sim_offers_cache_clear(const struct sim_catalog *cat);

/* *created (may be NULL) tells a new machine from the repeat of a key. */
int sim_instance_create(const struct sim_catalog *cat, struct sim_state *st, const struct sim_config *cfg,
                        const drv_create_instance_request *req, struct sim_arena *a,
                        drv_provisioning_data **out, bool *created, struct sim_err *e);
int sim_instance_get(struct sim_state *st, const char *instance_id, struct sim_arena *a,
                     drv_provisioning_data **out, struct sim_err *e);
int sim_instance_terminate(struct sim_state *st, const char *instance_id, struct sim_err *e);
int sim_instance_list(struct sim_state *st, const drv_list_instances_request *req, struct sim_arena *a,
                      drv_list_instances_response *resp, struct sim_err *e);

int sim_group_create(const struct sim_catalog *cat, struct sim_state *st, const struct sim_config *cfg,
                     const drv_create_placement_group_request *req, struct sim_arena *a,
                     drv_placement_group **out, struct sim_err *e);
int sim_group_delete(struct sim_state *st, const drv_placement_group *group, struct sim_err *e);

int sim_volume_create(const struct sim_catalog *cat, struct sim_state *st, const struct sim_config *cfg,
                      const drv_volume_configuration *conf, struct sim_arena *a, drv_volume **out,
                      struct sim_err *e);
int sim_volume_register(struct sim_state *st, const char *volume_id, struct sim_arena *a, drv_volume **out,
                        struct sim_err *e);
int sim_volume_delete(struct sim_state *st, const char *volume_id, struct sim_err *e);
int sim_volume_attach(struct sim_state *st, const char *volume_id, const char *instance_id,
                      struct sim_arena *a, char **device_name, struct sim_err *e);
int sim_volume_detach(struct sim_state *st, const char *volume_id, const char *instance_id,
                      struct sim_err *e);

int sim_gateway_create(const struct sim_catalog *cat, struct sim_state *st, const struct sim_config *cfg,
                       const drv_gateway_configuration *conf, struct sim_arena *a, drv_gateway **out,
                       struct sim_err *e);
int sim_gateway_terminate(struct sim_state *st, const char *gateway_id, struct sim_err *e);

/* ---- fault injection (sim_fault.c) ---- */

enum sim_fault {
	SIM_FAULT_NONE = 0,
	SIM_FAULT_ERROR,        /* answer UNAVAILABLE "injected fault" */
	SIM_FAULT_CRASH_BEFORE, /* abort before doing anything */
	SIM_FAULT_CRASH_AFTER,  /* abort after the call's effect, before the reply */
};

/*
 * Draws the fault for one provider call from the config's rates. The draw is
 * deterministic for a given seed and call sequence number (process-wide).
 */
enum sim_fault sim_fault_draw(const struct sim_config *cfg);

/*
 * True when this TerminateInstance lies (answers OK and leaves the machine
 * running), drawn from terminate_lie_rate like the other faults.
 */
bool sim_fault_lie(const struct sim_config *cfg);

/*
 * Sleeps the config's latency_ms in small steps, returning early with
 * DRV_EDEADLINE once cancelled(ctx) is true. 0 when the full latency passed.
 */
int sim_fault_sleep(const struct sim_config *cfg, bool (*cancelled)(void *ctx), void *ctx);

#endif
