/*
 * Internal interfaces of the serving half of libdrover-driver, shared between
 * its source files and exposed to tests/unit/sdk so the tests link the very
 * objects drivers use. Nothing here is part of the public API.
 */
#ifndef DRV_INTERNAL_H
#define DRV_INTERNAL_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

#include <jansson.h>

#include "drover/driver.h"
#include "drover/offer_check.h"

struct drv_rpc_call;

/* ---- arena.c: chunked bump allocator ---- */

struct drv__arena_chunk;

/*
 * Allocations are zeroed and aligned for any type. The arena grows by
 * chunks (doubling up to a cap); a large allocation gets a chunk of its own,
 * so 10,000 offers cost a few dozen mallocs rather than 100,000.
 */
struct drv__arena {
	struct drv__arena_chunk *head; /* the chunk being filled */
	struct drv__arena_chunk *big;  /* dedicated chunks of large allocations */
	size_t next_size;              /* size of the next regular chunk */
	size_t total;                  /* bytes obtained from malloc, for tests */
};

void drv__arena_init(struct drv__arena *a);
/* NULL only when out of memory or size overflows. size 0 gives a valid unique pointer. */
void *drv__arena_alloc(struct drv__arena *a, size_t size);
/* Same, without zeroing: for callers that write every byte (protobuf-c's unpack). */
void *drv__arena_alloc_raw(struct drv__arena *a, size_t size);
/* Before the first allocation: start with chunks of about `bytes` (512 B at least), not the default. */
void drv__arena_size_hint(struct drv__arena *a, size_t bytes);
char *drv__arena_strdup(struct drv__arena *a, const char *s);
char *drv__arena_vprintf(struct drv__arena *a, const char *fmt, va_list ap);
/* Frees every chunk; the arena can be used again afterwards. */
void drv__arena_release(struct drv__arena *a);

/* ---- log.c ---- */

/* The driver type written in every log line ("driver":"..."). Borrowed. */
void drv__log_set_driver(const char *type);
/* Where lines go (default 2); -1 drops them, for a process whose stderr was closed. */
void drv__log_set_fd(int fd);
/* Lines below this level are dropped (DROVER_LOG_LEVEL=debug|info|warn|error). */
void drv__log_set_level(enum drv_log_level level);
/*
 * Formats one log line (with the trailing newline) into buf and returns its
 * length (truncated lines still end with "}\n"). `method` may be NULL.
 */
size_t drv__log_format(char *buf, size_t buflen, enum drv_log_level level, const char *method,
                       const char *fmt, va_list ap);
void drv__vlog(enum drv_log_level level, const char *method, const char *fmt, va_list ap);
/* Appends s as a JSON string body (no quotes) to buf; returns the new length. */
size_t drv__json_escape(char *buf, size_t buflen, size_t len, const char *s);

/* ---- features.c ---- */

/* The operation features whose group is completely implemented, plus the markers. */
drv_features drv__features_derive(const struct drv_driver *driver);
/* The features `driver` serves for `call`'s config: derived, then narrowed by the hook. */
drv_features drv__features_for_call(const struct drv_driver *driver, struct drv_call *call);
/* Fills `resp` with the features of `set` in ascending order; the array comes from `a`. */
int drv__features_to_response(drv_features set, drv_get_features_response *resp, struct drv__arena *a);

/* One row of the RPC table as data, for dispatch and derivation. */
struct drv__method {
	const char *name;    /* "GetOffers" */
	const char *op_name; /* "get_offers" */
	int feature;         /* DRV_FEATURE_*, 0 for identity RPCs */
	/* Calls the op with typed arguments; NULL op checked by the caller. */
	int (*invoke)(const struct drv_compute_ops *ops, struct drv_call *call, const void *req, void *resp);
	bool (*present)(const struct drv_compute_ops *ops);
};
extern const struct drv__method drv__methods[];
extern const size_t drv__n_methods;
/* The table row of a Compute method name, or NULL. */
const struct drv__method *drv__method_find(const char *name);

/* ---- config_schema.c ---- */

/* The JSON Schema of the config fields (non-secret ones), as compact text; malloc'd; NULL: no memory. */
char *drv__config_schema(const struct drv_driver *driver);
/* The JSON Schema of the secrets map; malloc'd; NULL: no memory. */
char *drv__secrets_schema(const struct drv_driver *driver);

/*
 * The diagnostics collector. Its entries are the protocol's Diagnostic
 * messages, in the arena with their strings, so a ValidateConfig answer takes
 * the array as it is.
 */
struct drv_diags {
	struct drv__arena *arena;
	drv_diagnostic **items;
	size_t n, cap;
	size_t n_errors; /* errors added, also those dropped for lack of memory */
	bool oom;        /* a diagnostic was dropped for lack of memory */
};

void drv__diags_init(struct drv_diags *d, struct drv__arena *a);
void drv__diags_add(struct drv_diags *d, int severity, const char *field_path, const char *summary,
                    const char *detail_fmt, ...) __attribute__((format(printf, 5, 6)));

/*
 * Parses a BackendConfig's JSON and checks it and its secrets against the
 * declared fields, adding a diagnostic per problem. On success (no error
 * diagnostic, and d->oom still false) *root gets the config object with declared defaults filled in
 * (the caller owns the reference); otherwise *root is NULL. "" counts as {}.
 */
void drv__config_check(const struct drv_config_field *fields, const drv_backend_config *bc,
                       struct drv_diags *d, json_t **root);

/*
 * Checks one field's declaration (drv_driver_check): a name, options that
 * fit its type, and a default that passes the field's own checks. Returns 0,
 * or DRV_EINVAL with a message naming the field in err.
 */
int drv__config_field_check(const struct drv_config_field *f, char *err, size_t errlen);

/*
 * Sets every declared default that root lacks, from parsed values computed
 * once per process. Thread-safe. 0, or DRV_ENOMEM when a default could not
 * be parsed or set for lack of memory.
 */
int drv__config_defaults_fill(const struct drv_config_field *fields, json_t *root);

/* ---- call.c ---- */

struct drv_call {
	const struct drv_driver *driver;
	struct drv_rpc_call *rpc; /* NULL in tests */
	const char *method;
	struct drv__arena arena;
	const drv_backend_config *config; /* borrowed from the request; NULL if none */
	json_t *config_root;              /* parsed and checked config, with defaults */
	int fail_code;
	char *fail_message; /* in the arena */
};

/* Initialises a call context (no config yet). */
void drv__call_init(struct drv_call *call, const struct drv_driver *driver, struct drv_rpc_call *rpc,
                    const char *method);
/*
 * Parses and checks the request's config (bc may be NULL: no config). Returns
 * 0, or DRV_EINVAL with the call's fail message naming the first
 * diagnostic's field path and summary. `diags` may be NULL.
 */
int drv__call_set_config(struct drv_call *call, const drv_backend_config *bc, struct drv_diags *diags);
void drv__call_release(struct drv_call *call);

/* ---- serve.c ---- */

struct drv_rpc_server;

/* Registers Compute and Health on `srv` for `driver`. Returns 0 or a drv_error. */
int drv__serve_register(struct drv_rpc_server *srv, const struct drv_driver *driver, char *err,
                        size_t errlen);
/* Computes the cached identity answers (schema etc.); idempotent and thread-safe. */
void drv__serve_warm(void);
/*
 * From now on worker calls are answered UNAVAILABLE and health checks
 * NOT_SERVING; calls already running go on.
 */
void drv__serve_stop_accepting(void);
/*
 * Waits up to timeout_ms until no call is being handled on a worker; returns
 * the milliseconds left of the timeout (0 if it ran out).
 */
int drv__serve_wait_idle(int timeout_ms);
/* Waits for deferred identity calls still running on the SDK's own threads. */
void drv__serve_drain(void);

/* ---- rpc_server.c: a server fed connections by descriptor ---- */

/*
 * drv_rpc_server_start() without a listener: the caller accepts connections
 * itself and hands each to drv__rpc_server_adopt_fd. Plain text only.
 */
int drv__rpc_server_start_unbound(struct drv_rpc_server *srv, char *err, size_t errlen);
/* Serves one accepted, non-blocking connection; the server owns `fd` afterwards. */
void drv__rpc_server_adopt_fd(struct drv_rpc_server *srv, int fd);

/* ---- rpc_client.c: a channel on a connection made by the caller ---- */

struct drv_rpc_channel;
struct drv_rpc_channel_opts;
/*
 * drv_rpc_channel_new() on a connected socket, plain text only; opts->target
 * only names it. The channel owns `fd` afterwards, also on failure. It never
 * reconnects: once the connection is gone, calls fail with DRV_EUNAVAILABLE.
 */
int drv__rpc_channel_new_fd(const struct drv_rpc_channel_opts *opts, int fd, struct drv_rpc_channel **out,
                            char *err, size_t errlen);

/*
 * Limits on one call's answer, checked on the received bytes before they are
 * unpacked, so an answer over a limit costs no unpacking. An answer larger
 * than the channel's max_message_bytes never gets here: gRPC refuses it and
 * the call reports it in the same words. Either way the call fails with
 * DRV_ERANGE and a message naming the limit.
 */
struct drv__answer_limit {
	size_t max_bytes;       /* 0: only the channel's limit */
	uint32_t counted_field; /* a top-level repeated field whose entries are counted; 0: none */
	size_t max_count;       /* entries of counted_field at most */
	const char *count_noun; /* what the entries are, for the message ("offers") */
};

struct drv_rpc_metadata;
/* drv_rpc_call() and drv_rpc_call_async() with limits on the answer (`lim` copied; NULL: none). */
int drv__rpc_call_limited(struct drv_rpc_channel *ch, const ProtobufCServiceDescriptor *service,
                          unsigned method_index, const ProtobufCMessage *req, ProtobufCMessage **resp,
                          int timeout_ms, const struct drv_rpc_metadata *md,
                          const struct drv__answer_limit *lim, struct drv_status *st);
int drv__rpc_call_async_limited(struct drv_rpc_channel *ch, const ProtobufCServiceDescriptor *service,
                                unsigned method_index, const ProtobufCMessage *req, int timeout_ms,
                                const struct drv_rpc_metadata *md, const struct drv__answer_limit *lim,
                                void (*cb)(void *ud, int code, const char *message, ProtobufCMessage *resp),
                                void *ud);
/* Formats a byte count for messages: "16 MiB", "1536 KiB", "1000 bytes". */
void drv__format_bytes(size_t n, char *buf, size_t len);
/* ---- rpc_server.c ---- */

/* *until = CLOCK_REALTIME now plus ms (ms >= 0), the deadline pthread_cond_timedwait() takes. */
void drv__realtime_after_ms(int ms, struct timespec *until);

/* ---- status.c: the one writer of an error text or a drv_status ---- */

/* printf into err[errlen]; nothing when err is NULL or errlen is 0. */
void drv__seterr(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Sets st's code and message (printf, cut to fit); nothing when st is NULL. Returns code. */
int drv__status_set(struct drv_status *st, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* ---- line_limit.c: the rate limit of a driver's stderr lines ---- */

/*
 * Two token buckets, lines and bytes, each refilled at its rate and holding
 * at most one second's worth, so a burst of up to a second's budget passes
 * at once. Not thread-safe: one per driver, used by the host's I/O thread.
 */
struct drv__line_limit {
	double lines_per_s, bytes_per_s;
	double lines, bytes; /* tokens left */
	uint64_t last_ns;
	uint64_t dropped_lines, dropped_bytes; /* since the last report */
	uint64_t report_ns;                    /* when drops were last reported */
};

void drv__line_limit_init(struct drv__line_limit *l, unsigned lines_per_s, unsigned bytes_per_s,
                          uint64_t now_ns);

/* True when a line of len bytes may pass now; false when it is dropped (and counted). */
bool drv__line_limit_take(struct drv__line_limit *l, size_t len, uint64_t now_ns);

/*
 * True, with the drops since the last report in *lines and *bytes (then
 * reset), when they are due for a report: `force` (a line passes next, or
 * the stream ended), or a second since the last report while dropping.
 */
bool drv__line_limit_report(struct drv__line_limit *l, uint64_t now_ns, bool force, uint64_t *lines,
                            uint64_t *bytes);

/* ---- sockdir.c ---- */

/* The directory under which socket directories are made ($TMPDIR, $XDG_RUNTIME_DIR, /dev/shm or /tmp). */
const char *drv__socket_base(void);

/*
 * Makes a private (0700) socket directory under drv__socket_base() named
 * <prefix>-<pid>-<start>-XXXXXX, which says which process owns it (see
 * sockdir.c), and writes its path to out. 0, or -1 with errno.
 */
int drv__sockdir_make(const char *prefix, char *out, size_t len);

/* Removes a socket directory and its contents without following symlinks. Best effort. */
void drv__sockdir_remove(const char *path);

/*
 * Removes the socket directories under `base` (drover-*, named by
 * drv__sockdir_make) whose owner process is gone: only real directories of
 * our own uid, never through a symlink. Returns how many, or -1 when base
 * cannot be read.
 */
int drv__sockdir_sweep(const char *base);

/* ppid and start time (clock ticks since boot) of a process from /proc; -1 when it cannot be read. */
int drv__proc_stat(pid_t pid, pid_t *ppid, unsigned long long *start);

/* ---- loopback.c ---- */

/*
 * True for "localhost", "ip6-localhost" and literal loopback addresses
 * (127.0.0.0/8, ::1, ::ffff:127.x.y.z), given without brackets or port.
 * Names are not resolved, so "127.example.com" is not loopback.
 */
bool drv__is_loopback_host(const char *host);

/* GetInfo as a JSON object (for --info); caller owns it. */
json_t *drv__info_json(const struct drv_driver *driver);

#endif
