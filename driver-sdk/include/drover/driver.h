/*
 * drover/driver.h — the serving half of libdrover-driver: what a driver
 * author links to write a backend.
 *
 * A driver is a `static const struct drv_compute_ops` (NULL member = not
 * implemented), a declaration of its config fields, and a call to
 * drv_main(). The SDK derives the feature set from the implemented ops (one
 * table in src/rpc_table.h ties op, feature and RPC), answers UNIMPLEMENTED
 * for everything else, serves grpc.health.v1.Health, prints the handshake,
 * and handles signals, stdin EOF, TLS, logging and --help/--version/--info.
 *
 * Threads: handlers run on the SDK's worker pool, several at once. A handler
 * must be thread-safe with respect to its own driver's state.
 */
#ifndef DROVER_DRIVER_H
#define DROVER_DRIVER_H

#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>

#include "drover/types.h"

/*
 * The per-call context. Owned by the SDK; valid only until the handler
 * returns. Everything allocated from it is freed after the response is sent.
 */
struct drv_call;

/*
 * Handler signature. `req` is borrowed (already unpacked and, where the request
 * has a config, validated against the declared fields). `resp` is initialised
 * and owned by the SDK; the handler fills it with memory from drv_call_alloc()
 * and friends (or static data). Return 0, or a negative drv_error — usually
 * via drv_call_fail(), which also sets the status message.
 */
#define DRV_HANDLER(name, req_t, resp_t) int (*name)(struct drv_call * call, const req_t *req, resp_t *resp)

#define DRV_COMPUTE_OPS_V1 1

/*
 * The driver interface. Starts with a version (DRV_COMPUTE_OPS_V1); members
 * are grouped by the feature they implement. A feature is advertised exactly
 * when every member of its group is set; a partly filled group is a
 * programmer error that drv_main() reports (naming the missing member) before
 * serving anything.
 */
struct drv_compute_ops {
	int version;

	/* FEATURE_OFFERS */
	DRV_HANDLER(get_offers, drv_get_offers_request, drv_get_offers_response);

	/* FEATURE_CREATE_INSTANCE */
	DRV_HANDLER(create_instance, drv_create_instance_request, drv_create_instance_response);
	DRV_HANDLER(get_instance, drv_get_instance_request, drv_get_instance_response);
	DRV_HANDLER(terminate_instance, drv_terminate_instance_request, drv_terminate_instance_response);
	DRV_HANDLER(list_instances, drv_list_instances_request, drv_list_instances_response);

	/* FEATURE_PLACEMENT_GROUPS */
	DRV_HANDLER(create_placement_group, drv_create_placement_group_request,
	            drv_create_placement_group_response);
	DRV_HANDLER(delete_placement_group, drv_delete_placement_group_request,
	            drv_delete_placement_group_response);

	/* FEATURE_VOLUMES */
	DRV_HANDLER(create_volume, drv_create_volume_request, drv_create_volume_response);
	DRV_HANDLER(register_volume, drv_register_volume_request, drv_register_volume_response);
	DRV_HANDLER(delete_volume, drv_delete_volume_request, drv_delete_volume_response);
	DRV_HANDLER(attach_volume, drv_attach_volume_request, drv_attach_volume_response);
	DRV_HANDLER(detach_volume, drv_detach_volume_request, drv_detach_volume_response);

	/* FEATURE_GATEWAYS */
	DRV_HANDLER(create_gateway, drv_create_gateway_request, drv_create_gateway_response);
	DRV_HANDLER(terminate_gateway, drv_terminate_gateway_request, drv_terminate_gateway_response);
};

/* ---- config declaration ---- */

enum drv_field_type {
	DRV_FIELD_STRING = 1,
	DRV_FIELD_INTEGER,
	DRV_FIELD_NUMBER,
	DRV_FIELD_BOOLEAN,
	DRV_FIELD_STRING_ARRAY,
	/*
	 * An array of objects whose members are declared by .items (a list of
	 * plain fields, {.name = NULL}-terminated): a list of hosts, each with an
	 * address and a port. Members are checked like top-level fields, with
	 * paths such as "/hosts/2/port"; the SDK fills no member defaults (the
	 * driver reads the array from drv_call_config_json() and applies the
	 * defaults it declared). Added after the types above.
	 */
	DRV_FIELD_OBJECT_ARRAY,
};

/*
 * One config field (or, with .secret, one entry of the secrets map). Arrays of
 * these end with an entry whose .name is NULL. All strings are borrowed for
 * the life of the process (use literals). Names are unique across config
 * fields and secrets; default_json must pass the field's own checks (type,
 * minimum/maximum, enum); secrets have no default. drv_driver_check() (and so
 * drv_main()) refuses a declaration that breaks these, naming the field.
 */
struct drv_config_field {
	const char *name;
	enum drv_field_type type;
	bool required;
	bool secret; /* lives in BackendConfig.secrets, never in config_json */
	const char *description;
	const char *default_json;      /* JSON text of the default, or NULL */
	bool has_minimum, has_maximum; /* for INTEGER and NUMBER */
	double minimum, maximum;
	const char *const *enum_values; /* NULL-terminated, for STRING; or NULL */
	/* The members of an OBJECT_ARRAY's elements (no secrets, no nested arrays of objects); else NULL. */
	const struct drv_config_field *items;
};

/* Diagnostics collector handed to the validate hook. Owned by the SDK. */
struct drv_diags;

/*
 * Adds a diagnostic. `field_path` is a JSON Pointer ("/region",
 * "/secrets/api_key"), "" for the whole config. Strings are copied.
 */
void drv_diag_error(struct drv_diags *d, const char *field_path, const char *summary, const char *detail_fmt,
                    ...) __attribute__((format(printf, 4, 5)));
void drv_diag_warning(struct drv_diags *d, const char *field_path, const char *summary,
                      const char *detail_fmt, ...) __attribute__((format(printf, 4, 5)));

#define DRV_DRIVER_V1 1

/* Everything drv_main() needs to know about a driver. */
struct drv_driver {
	int version;                /* DRV_DRIVER_V1 */
	const char *type;           /* backend type, [a-z0-9-]+ */
	const char *driver_version; /* "1.2.3"; required */
	const char *description;    /* one line */
	const struct drv_compute_ops *ops;
	const struct drv_config_field *config_fields; /* NULL or {.name = NULL}-terminated */
	/* Marker features (no RPC of their own) this driver supports, as DRV_FEATURE_BIT()s. */
	drv_features markers;

	/*
	 * Optional: semantic checks after the schema checks passed (credentials,
	 * regions that exist). Runs on a worker thread with a call context whose
	 * config getters work. Return 0, or a drv_error if the check itself could
	 * not run (e.g. DRV_EUNAVAILABLE).
	 */
	int (*validate_config)(struct drv_call *call, struct drv_diags *diags);

	/*
	 * Optional: narrows the derived feature set for the call's config. It may
	 * only clear bits; bits it sets are ignored. The SDK answers UNIMPLEMENTED
	 * to RPCs of features narrowed away for that config.
	 */
	void (*narrow_features)(struct drv_call *call, drv_features *features);

	/*
	 * Optional: runs once in drv_main() after argument parsing and before
	 * serving (not for --help/--version/--info). Non-zero aborts start-up.
	 * A spawned driver runs it before printing its handshake line, which
	 * hosts time (docs/PROTOCOL.md section 3; the harness fails a late one):
	 * keep it quick, and do slow work (credentials, catalogs) lazily in the
	 * handlers instead.
	 */
	int (*start)(void);
	/* Optional: runs once after the server stopped and every handler returned. */
	void (*stop)(void);
};

/*
 * Runs the driver: parses argv, then either prints help/version/info and
 * returns, or serves until SIGTERM/SIGINT (or stdin EOF in spawned mode).
 * Returns the process exit code. `driver` is borrowed for the whole run.
 *
 *   spawned mode (default): listens on a unix socket in $DROVER_SOCKET_DIR
 *     (or a fresh private 0700 directory), prints the handshake line
 *     "1|1|unix|<path>|grpc" on stdout, and exits when stdin reaches EOF.
 *     If DROVER_MAGIC_COOKIE is not set to the expected value it explains that
 *     it is a plugin and exits 1.
 *   --listen HOST:PORT: standalone over TCP, with --tls-cert/--tls-key and
 *     --client-ca for mutual TLS; plain TCP only on loopback or --insecure.
 *     Prints the same handshake line with "tcp" and the bound address.
 */
int drv_main(int argc, char **argv, const struct drv_driver *driver);

/* The set of features derived from `driver`'s ops and markers, before narrowing. */
drv_features drv_driver_features(const struct drv_driver *driver);

/*
 * Checks the declaration: every feature group either complete or empty,
 * markers that are marker features of the protocol, and config fields as
 * struct drv_config_field requires. Returns 0, or DRV_EINVAL with a message
 * naming the missing member or the field at fault written to `err`.
 */
int drv_driver_check(const struct drv_driver *driver, char *err, size_t errlen);

/* ---- the per-call context ---- */

/*
 * Sets the call's status message (copied, printf-style) and returns `err`,
 * so handlers can `return drv_call_fail(call, DRV_ENOCAPACITY, "...", ...)`.
 */
int drv_call_fail(struct drv_call *call, int err, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Milliseconds left until the caller's deadline (INT64_MAX if none; <= 0 if passed). */
int64_t drv_call_time_left_ms(const struct drv_call *call);

/* True once the caller cancelled or the deadline passed; long handlers poll this. */
bool drv_call_cancelled(const struct drv_call *call);

/*
 * Per-call arena. Memory is zeroed, aligned for any type, and freed after the
 * response is sent. Returns NULL only when out of memory.
 */
void *drv_call_alloc(struct drv_call *call, size_t size);
char *drv_call_strdup(struct drv_call *call, const char *s);
char *drv_call_printf(struct drv_call *call, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* An array of `n` pointers, zeroed, for repeated message fields. */
void *drv_call_ptrs(struct drv_call *call, size_t n);
/* A message of `desc`'s type, allocated from the arena and initialised. */
void *drv_call_message(struct drv_call *call, const ProtobufCMessageDescriptor *desc);

/* drv_new(call, offer) → a new drv_offer in the call's arena. */
#define drv_new(call, name)                                                                                  \
	((drv_##name *)drv_call_message((call), &drover__compute__v1__##name##__descriptor))

/*
 * The call's config, parsed and checked against the declared fields. Getters
 * return the value, else the declared default, else the given fallback.
 * Strings are borrowed until the handler returns. Secrets come from the
 * secrets map and are never logged by the SDK. A getter asked for a name
 * that config_fields does not declare (a typo) returns the fallback and logs
 * a warning naming it, once per name.
 */
const char *drv_call_config_json(const struct drv_call *call);
const char *drv_call_config_string(const struct drv_call *call, const char *name, const char *fallback);
int64_t drv_call_config_int(const struct drv_call *call, const char *name, int64_t fallback);
double drv_call_config_number(const struct drv_call *call, const char *name, double fallback);
bool drv_call_config_bool(const struct drv_call *call, const char *name, bool fallback);
/* Number of elements of a STRING_ARRAY field (0 if absent), and element i. */
size_t drv_call_config_array_len(const struct drv_call *call, const char *name);
const char *drv_call_config_array_at(const struct drv_call *call, const char *name, size_t i);
const char *drv_call_secret(const struct drv_call *call, const char *name);
/* True when the call's request carried a config (GetFeatures may not). */
bool drv_call_has_config(const struct drv_call *call);

/* The RPC's method name ("GetOffers"), for logs. */
const char *drv_call_method(const struct drv_call *call);

/* ---- logging: one JSON object per line on stderr ---- */

enum drv_log_level { DRV_LOG_DEBUG, DRV_LOG_INFO, DRV_LOG_WARN, DRV_LOG_ERROR };

/* Thread-safe. Never pass secrets. */
void drv_log(enum drv_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The same, with the call's method name in the line. */
void drv_call_log(struct drv_call *call, enum drv_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* ---- matching helpers for GetOffers ---- */

/*
 * True when `offer` satisfies every filter in `req` (NULL req: true). Drivers
 * may use this instead of writing the filters again; the conformance harness
 * checks them one by one on its own.
 */
bool drv_offer_matches(const drv_offer *offer, const drv_requirements *req);

#endif
