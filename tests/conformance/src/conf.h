/*
 * conf.h — internals of drover-conformance, the driver conformance harness.
 *
 * The harness is a table of checks (conf_tests.c). Each check runs against
 * one driver reached through the SDK's hosting half, records at most one
 * failure message (the first one, which names the call and the driver's
 * answer), and registers everything it creates with the tracker so the
 * cleanup at the end removes it even when the check failed half-way.
 *
 * Threads: everything runs on the main thread except the completion
 * callbacks of the concurrency check, which only touch their own counters.
 */
#ifndef CONF_H
#define CONF_H

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "drover/host.h"
#include "drover/types.h"

/* Exit codes of the harness. */
enum { CONF_EXIT_OK = 0, CONF_EXIT_FAILED = 1, CONF_EXIT_USAGE = 2 };

/* ---- configuration (conf_config.c) ---- */

/* The parsed --config file plus command-line options. Owned by main. */
struct conf_opts {
	/* Target: a driver binary to spawn, or an address. */
	const char *driver_path;
	const char *const *driver_args; /* NULL-terminated, borrowed from argv */
	const char *address;
	const char *ca_file, *cert_file, *key_file, *server_name;
	bool insecure;

	int repeat;
	const char **focus; /* NULL-terminated patterns; empty means all */
	const char **skip;
	bool list;
	bool verbose;
	const char *junit_file;

	/* From the config file. `config` and `secrets` are JSON objects. */
	json_t *config;
	json_t *secrets;
	json_t *offer_requirements;  /* JSON form of Requirements, or NULL */
	json_t *slow_config;         /* merged into config to make the driver slow, or NULL */
	json_t *large_offers_config; /* merged into config for >= large_offers_min offers, or NULL */
	json_t *invalid_config;      /* a config the driver must reject, or NULL */
	json_t *bad_secrets;         /* secrets (merged over `secrets`) the provider refuses, or NULL */
	char name_prefix[64];
	int call_timeout_ms;
	int provisioning_timeout_ms;
	int handshake_timeout_ms;
	int short_deadline_ms;
	int recovery_ms;
	int shutdown_grace_ms;
	int64_t large_offers_min;
	uint64_t volume_size_mib;
};

/*
 * Parses a YAML file into a JSON tree (conf_yaml.c), with droverd's limits on
 * nesting, size and keys (common/dyaml.h); NULL with "PATH:LINE: ..." in err.
 */
json_t *conf_yaml_load(const char *path, char *err, size_t errlen);

/* Loads `path` (JSON, or YAML when it ends in .yaml/.yml) into `o`. Returns 0, or -1 with a message naming
 * the field at fault in err. */
int conf_config_load(struct conf_opts *o, const char *path, char *err, size_t errlen);
void conf_config_defaults(struct conf_opts *o);
void conf_config_free(struct conf_opts *o);

/*
 * A BackendConfig built from JSON config text and the secrets object, through
 * the SDK's builder (drover/host.h): buf.msg borrows the secrets' strings
 * from the object and the text from `json`, which the struct owns;
 * conf_bc_free releases both.
 */
struct conf_bc {
	struct drv_backend_config_buf buf;
	char *json;
};
/* `overlay` (may be NULL) is merged over `base`; raw_json, when set, is used verbatim instead. */
void conf_bc_init(struct conf_bc *bc, const json_t *base, const json_t *overlay, const json_t *secrets,
                  const char *raw_json);
void conf_bc_free(struct conf_bc *bc);

/* Fills a Requirements message from its JSON form; strings point into `j`. Returns 0 or -1 with err. */
int conf_requirements_from_json(const json_t *j, drv_requirements *r, char *err, size_t errlen);
void conf_requirements_free(drv_requirements *r);

/* ---- the run (conf_run.c) ---- */

enum conf_result { CONF_PASS, CONF_FAIL, CONF_SKIP };

struct conf_ctx;
typedef void (*conf_test_fn)(struct conf_ctx *c);

/* How a check is gated besides its feature. */
enum {
	CONF_NEEDS_SPAWN = 0x1, /* starts or inspects a driver process: not with --address */
	CONF_LATE = 0x2,        /* runs after the others (it stops driver processes) */
	CONF_STARTUP = 0x4, /* judges the start-up itself, so it runs even when the driver did not start */
};

struct conf_test {
	const char *name;
	int feature; /* the Feature that gates it, or 0 */
	unsigned flags;
	conf_test_fn fn;
	const char *rule; /* the normative rule it enforces, one line (for --list and the docs) */
};

extern const struct conf_test conf_tests[];
extern const size_t conf_n_tests;

/* Kinds of objects the tracker knows how to remove. */
enum conf_kind { CONF_INSTANCE, CONF_VOLUME, CONF_PLACEMENT_GROUP, CONF_GATEWAY };

struct conf_tracked {
	enum conf_kind kind;
	char *id; /* instance id, volume id, gateway instance id, group name */
	char *region;
	char *attached_to; /* volume: instance it is attached to, or NULL */
	char *group_id;    /* placement group: the driver's id */
	bool removed;
};

/* The state of one harness run. */
struct conf_ctx {
	struct conf_opts *o;
	struct drv_host *host;
	char start_error[1024]; /* why the driver did not start ("" when it did) */
	int start_code;         /* drv_host_spawn's error, 0 on success */

	drv_get_info_response *info;
	drv_features features; /* from GetFeatures(config) */
	bool features_ok;
	char features_error[600];

	struct conf_bc bc; /* the base config */
	char run_id[48];   /* unique per run: names and the run tag */

	struct conf_tracked *tracked;
	size_t n_tracked, cap_tracked;

	/*
	 * How the spawned driver ended, once a check found it gone ("driver x
	 * exited with status 7"); "" while it runs. The check it died under
	 * fails, the later ones that need it are skipped with this reason.
	 */
	char gone[600];

	/* The check being run. */
	const char *test_name;
	bool failed, skipped;
	char message[2048];
};

/*
 * Records the check's failure (only the first one is kept, so the message
 * names the earliest wrong answer). printf-style.
 */
void conf_fail(struct conf_ctx *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Marks the check skipped with a reason. */
void conf_skip(struct conf_ctx *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Progress detail shown with --verbose. */
void conf_note(struct conf_ctx *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/*
 * `s` for a result message: at most `max` bytes of it, and when longer, its
 * length ("abc...(1048576 bytes)"), so a megabyte string from a driver
 * cannot fill the line. Returns buf, which needs max + 32 bytes.
 */
const char *conf_cut(const char *s, size_t max, char *buf, size_t len);

/* The driver's answer as text: `OK` or `NOT_FOUND "no such instance"`. Returns buf. */
const char *conf_answer(int rc, const struct drv_status *st, char *buf, size_t len);

/* True when the driver advertises `feature`. */
bool conf_has(const struct conf_ctx *c, int feature);

/* A fresh unique name under the config's prefix: "<prefix><run>-<what>-<n>". Returns buf. */
const char *conf_name(struct conf_ctx *c, const char *what, char *buf, size_t len);

/* ---- tracking (conf_track.c) ---- */

void conf_track(struct conf_ctx *c, enum conf_kind kind, const char *id, const char *region,
                const char *group_id);
void conf_track_attach(struct conf_ctx *c, const char *volume_id, const char *instance_id);
/* Marks an object as gone (the check removed it itself). */
void conf_untrack(struct conf_ctx *c, enum conf_kind kind, const char *id);
/*
 * Removes everything still tracked, in dependency order (detach, then
 * volumes, gateways, instances, groups). Returns the number of objects that
 * could not be removed; describes the first in err.
 */
int conf_cleanup(struct conf_ctx *c, char *err, size_t errlen);
/*
 * After the cleanup: asks ListInstances (when CREATE_INSTANCE is advertised)
 * for the run's tag, which must list nothing live. Returns the number of
 * instances still listed, described in err.
 */
int conf_cleanup_verify(struct conf_ctx *c, char *err, size_t errlen);
void conf_track_free(struct conf_ctx *c);

/* ---- helpers shared by checks (conf_run.c) ---- */

/*
 * Set by SIGINT/SIGTERM: the run stops after the current check, still cleans
 * up what it created, and reports the rest as skipped.
 */
extern volatile sig_atomic_t conf_interrupted;

/* Monotonic milliseconds. */
double conf_now_ms(void);
/* Glob (fnmatch) when the pattern has * ? or [, else substring. */
bool conf_pattern_match(const char *pattern, const char *name);

/* The tag key every instance and volume of a run carries, with the run id as value. */
#define CONF_RUN_TAG "drover-conformance-run"

/*
 * Kills the spawned driver with SIGKILL and starts it again with the same
 * arguments; c->host is the new process afterwards (checks_robust.c).
 * Returns false after conf_fail.
 */
bool conf_restart_driver(struct conf_ctx *c);

/*
 * Picks the cheapest AVAILABLE offer matching params.offer_requirements
 * (checks_offers.c). Returns the response that owns *offer (caller frees), or
 * NULL after conf_fail/conf_skip.
 */
drv_get_offers_response *conf_pick_offer(struct conf_ctx *c, drv_offer **offer);

#endif
