/*
 * srv_supervisor — droverd's drivers: found in configured directories
 * (`drover-driver-<type>`), named as explicit commands, or reached by address
 * with mutual TLS. It spawns or connects them off the loop thread, checks
 * their health, notices crashes (exit callback, failed health checks), fails
 * calls in flight on a crashed driver at once with UNAVAILABLE, and restarts
 * (or reconnects) with capped exponential backoff.
 *
 * Threads: every function runs on the loop thread, and every callback it
 * makes runs there too. SDK threads only hand events over (uv_async_send).
 *
 * Types are opaque strings: a driver is keyed by the type in its file name or
 * config entry; the supervisor has no list of types.
 */
#ifndef SRV_SUPERVISOR_H
#define SRV_SUPERVISOR_H

#include <stdbool.h>
#include <stdint.h>

#include <uv.h>

#include "drover/types.h"

struct srv_supervisor;
struct srv_config;

enum srv_driver_state {
	SRV_DRIVER_IDLE = 0,     /* known, not started yet (started on first use) */
	SRV_DRIVER_STARTING = 1, /* spawning / handshaking / connecting */
	SRV_DRIVER_READY = 2,
	SRV_DRIVER_BACKOFF = 3, /* failed; waiting to restart or reconnect */
	SRV_DRIVER_STOPPED = 4, /* shut down */
};

/* A snapshot of one driver, for listing. Strings borrowed until the next loop iteration. */
struct srv_driver_info {
	const char *type;
	const char *name;
	bool remote;
	int pid;
	const char *address;
	const char *const *command; /* NULL-terminated; NULL for remote */
	enum srv_driver_state state;
	unsigned restarts;
	unsigned backoff_ms;
	int64_t next_restart_ms;
	const char *last_error; /* "" when none */
	int64_t last_error_ms;
	const char *reported_type;
	const char *version;
	/* From GetInfo, "" when not given (or longer than 64 KiB). */
	const char *config_schema_json;
	const char *secrets_schema_json;
	const char *description;
	unsigned protocol_version;
	drv_features features;
	int64_t started_ms;
};

/* Called on the loop thread for things worth an event ("driver.crashed", ...). */
typedef void (*srv_supervisor_event_cb)(void *ud, const char *type, int level, const char *kind,
                                        const char *message);

/*
 * Creates the supervisor from `cfg` (borrowed for the supervisor's life) on
 * `loop`, and scans the driver directories. Nothing is spawned yet.
 */
int srv_supervisor_new(uv_loop_t *loop, const struct srv_config *cfg, struct srv_supervisor **out, char *err,
                       size_t errlen);
void srv_supervisor_set_event_cb(struct srv_supervisor *sup, srv_supervisor_event_cb cb, void *ud);

/*
 * Stops every driver (SIGTERM, the configured grace, SIGKILL), in parallel,
 * and fails every call still waiting. Blocks; for shutdown only. Callbacks of
 * failed calls run before it returns.
 */
void srv_supervisor_stop(struct srv_supervisor *sup);
/* After srv_supervisor_stop and after the loop ran its close callbacks. NULL is fine. */
void srv_supervisor_free(struct srv_supervisor *sup);
/* Closes the supervisor's libuv handles (call before the last uv_run). */
void srv_supervisor_close_handles(struct srv_supervisor *sup);

/* True when a driver of this type is known (rescanning the directories if not). */
bool srv_supervisor_has_type(struct srv_supervisor *sup, const char *type);

/*
 * Starts every known driver now (so `driver list` shows versions and
 * features at once), and from then on each one found later in a directory.
 */
void srv_supervisor_start_all(struct srv_supervisor *sup);

/* Starts the driver of `type` if it is idle. 0, or DRV_ENOTFOUND for an unknown type. */
int srv_supervisor_ensure(struct srv_supervisor *sup, const char *type);

/*
 * Completion of a call, on the loop thread. `resp` (NULL on error) belongs to
 * the callback: free with drv_response_free(resp).
 */
typedef void (*srv_call_cb)(void *ud, int code, const char *message, ProtobufCMessage *resp);

/*
 * Calls `method` ("GetOffers") of the Compute service on the driver of
 * `type`. `req` is borrowed only for the duration of this function. The
 * callback always runs later on the loop thread, exactly once, also for
 * immediate failures: DRV_ENOTFOUND (no driver of that type), DRV_EUNAVAILABLE
 * (the driver is in backoff, or crashed while the call was in flight),
 * DRV_ENOMEM (out of memory for the call).
 * A call made while the driver is starting waits for the start, within its
 * timeout. timeout_ms <= 0: the configured call timeout.
 */
void srv_supervisor_call(struct srv_supervisor *sup, const char *type, const char *method,
                         const ProtobufCMessage *req, int timeout_ms, srv_call_cb cb, void *ud);

/*
 * While held, calls are kept (their requests copied) instead of sent; the
 * release sends them in order. droverd holds calls while a batch of store
 * writes is open, so a driver call never goes out before the state written
 * ahead of it is committed.
 */
void srv_supervisor_hold(struct srv_supervisor *sup, bool hold);
/* Fails every held call (later, through its callback) instead of sending it. */
void srv_supervisor_fail_held(struct srv_supervisor *sup, int code, const char *message);

/*
 * Features of the driver of `type` for a backend config, cached per (driver,
 * config) and dropped when the driver restarts. `cb` runs later on the loop
 * thread with 0 and the feature bits, or an error and a message.
 */
typedef void (*srv_features_cb)(void *ud, int code, const char *message, drv_features features);
void srv_supervisor_features(struct srv_supervisor *sup, const char *type, const drv_backend_config *config,
                             srv_features_cb cb, void *ud);

/* Every known driver, sorted by type. *list is malloc'ed; its strings are borrowed. */
int srv_supervisor_list(struct srv_supervisor *sup, struct srv_driver_info **list, size_t *n);

/* State of one driver type, or -1 if unknown. */
int srv_supervisor_state(struct srv_supervisor *sup, const char *type);

#endif
