/*
 * drover/host.h — the hosting half of libdrover-driver, used by droverd and
 * drover-conformance: start a driver binary (or connect to a remote one),
 * check its handshake, and call it.
 *
 * A `struct drv_host` is one connection to one driver process. All functions
 * are thread-safe unless said otherwise; calls may run concurrently from any
 * number of threads.
 */
#ifndef DROVER_HOST_H
#define DROVER_HOST_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "drover/types.h"

struct drv_host;

/*
 * Callbacks run on the hosting half's I/O thread (one libuv loop thread shared
 * by every spawned host of the process); they must not block or call
 * drv_host_free().
 */
typedef void (*drv_host_line_cb)(void *ud, const char *driver_name, const char *line);
typedef void (*drv_host_exit_cb)(void *ud, const char *driver_name, int64_t exit_status, int term_signal);

/* The environment variable and value a spawned driver checks (go-plugin style). */
#define DRV_MAGIC_COOKIE_KEY "DROVER_MAGIC_COOKIE"
#define DRV_MAGIC_COOKIE_VALUE "6b1d4c0e-drover-driver-v1"

/*
 * Limits on a driver's answers, checked where they arrive, before anything
 * is unpacked (docs/PROTOCOL.md §12.1). An answer over a limit fails its
 * call with DRV_ERANGE and a message naming the limit ("GetOffers answer of
 * 62914560 bytes exceeds the 16 MiB limit"). All zero: the transport's own
 * limit of 64 MiB and nothing else, as for the conformance harness, which
 * reports large answers itself.
 */
struct drv_answer_limits {
	size_t answer_bytes; /* every answer but GetOffers' and ListInstances'; 0: no limit of its own */
	size_t offers_answer_bytes; /* a GetOffers answer; 0: no limit of its own */
	size_t list_answer_bytes;   /* a ListInstances answer; 0: answer_bytes */
	size_t offers;              /* offers in one GetOffers answer; 0: no limit */
};

struct drv_spawn_opts {
	const char *path;        /* driver binary; required */
	const char *const *args; /* extra argv after argv[0], NULL-terminated; may be NULL */
	const char *name;        /* for errors and logs; default: basename of path */
	/*
	 * Names of variables of the host's environment passed to the driver, on top
	 * of the fixed allowlist (PATH, HOME, LANG, LC_ALL, TZ, TMPDIR). Nothing
	 * else of the host's environment reaches the driver.
	 */
	const char *const *env_allow;
	/* Extra "NAME=value" entries set in the driver's environment. */
	const char *const *env_extra;
	int handshake_timeout_ms;   /* default 5000 */
	drv_host_line_cb on_stderr; /* each stderr line; NULL: written to our stderr prefixed with the name */
	drv_host_exit_cb on_exit;   /* once, when the process exits; never for a failed spawn; may be NULL */
	void *ud;
	struct drv_answer_limits limits; /* added after the fields above; zero: none */
	/*
	 * Accept a handshake naming a TCP address (loopback only). Off by
	 * default: a port may belong to any process, while a unix socket is
	 * checked to be the driver's own (inside its socket directory, a socket
	 * owned by the driver's uid, listened on by the driver or its child).
	 */
	bool allow_tcp_handshake;
	/*
	 * Bounds on the driver's stderr (0: the default). Lines past either rate
	 * are dropped and counted, and the count is reported in a line of its
	 * own ("N lines dropped"); a line longer than line_max is cut there with
	 * a marker and the rest of it dropped. stderr is always read, so the
	 * driver never blocks on it.
	 */
	unsigned stderr_lines_per_s; /* default 1000 */
	unsigned stderr_bytes_per_s; /* default 1 MiB */
	unsigned stderr_line_max;    /* default 16 KiB; at least 256 */
};

/*
 * Spawns the driver with a clean environment, a private 0700 socket directory
 * and the magic cookie; holds its stdin so it exits if we die; reads and
 * checks its handshake line; connects (once: the connection is never made
 * again, since a driver that dies is a new process to spawn, and calls on a
 * host whose driver is gone fail with DRV_EUNAVAILABLE). On success writes
 * *out and returns 0.
 * On failure returns DRV_EHANDSHAKE (garbage, nothing at all, early exit),
 * DRV_EPROTOCOL (other protocol version), DRV_EDEADLINE (timeout) or
 * DRV_ESYSTEM, with a message naming the driver in `err`; the child is killed
 * and reaped.
 */
int drv_host_spawn(const struct drv_spawn_opts *opts, struct drv_host **out, char *err, size_t errlen);

struct drv_connect_opts {
	const char *address; /* "host:port" or "unix:/path"; required */
	const char *name;    /* for errors and logs; default: the address */
	/* Mutual TLS: PEM files. All three, or `insecure` (then only loopback or unix is allowed unless
	 * allow_remote_insecure). */
	const char *ca_file;   /* CA that signed the driver's certificate */
	const char *cert_file; /* our client certificate */
	const char *key_file;
	const char *server_name; /* name to verify in the driver's certificate; default: host part */
	bool insecure;
	bool allow_remote_insecure;
	int connect_timeout_ms; /* wait for the first health check: 0 = do not wait, negative = 5000 */
	struct drv_answer_limits limits; /* added after the fields above; zero: none */
};

/*
 * Connects to a driver listening at an address. With connect_timeout_ms > 0
 * it waits until a health check answers SERVING (DRV_EUNAVAILABLE with a
 * clear message otherwise, e.g. a TLS failure). The channel reconnects by
 * itself with backoff when the driver comes back.
 */
int drv_host_connect(const struct drv_connect_opts *opts, struct drv_host **out, char *err, size_t errlen);

/*
 * Typed unary calls, one per RPC of the Compute service. `req` is borrowed.
 * On 0, *resp is a new message the caller frees with drv_response_free(*resp)
 * (drover/types.h); on error *resp is
 * NULL. timeout_ms <= 0 means the default of 30 s. `st` may be NULL.
 * A call on a driver that has exited fails at once with DRV_EUNAVAILABLE.
 */
#define DRV_HOST_CALL_DECL(fn, Method, req_t, resp_t)                                                        \
	int drv_host_##fn(struct drv_host *h, const req_t *req, resp_t **resp, int timeout_ms,               \
	                  struct drv_status *st);
DRV_HOST_CALL_DECL(get_info, GetInfo, drv_get_info_request, drv_get_info_response)
DRV_HOST_CALL_DECL(get_features, GetFeatures, drv_get_features_request, drv_get_features_response)
DRV_HOST_CALL_DECL(validate_config, ValidateConfig, drv_validate_config_request, drv_validate_config_response)
DRV_HOST_CALL_DECL(get_offers, GetOffers, drv_get_offers_request, drv_get_offers_response)
DRV_HOST_CALL_DECL(create_instance, CreateInstance, drv_create_instance_request, drv_create_instance_response)
DRV_HOST_CALL_DECL(get_instance, GetInstance, drv_get_instance_request, drv_get_instance_response)
DRV_HOST_CALL_DECL(terminate_instance, TerminateInstance, drv_terminate_instance_request,
                   drv_terminate_instance_response)
DRV_HOST_CALL_DECL(list_instances, ListInstances, drv_list_instances_request, drv_list_instances_response)
DRV_HOST_CALL_DECL(create_placement_group, CreatePlacementGroup, drv_create_placement_group_request,
                   drv_create_placement_group_response)
DRV_HOST_CALL_DECL(delete_placement_group, DeletePlacementGroup, drv_delete_placement_group_request,
                   drv_delete_placement_group_response)
DRV_HOST_CALL_DECL(create_volume, CreateVolume, drv_create_volume_request, drv_create_volume_response)
DRV_HOST_CALL_DECL(register_volume, RegisterVolume, drv_register_volume_request, drv_register_volume_response)
DRV_HOST_CALL_DECL(delete_volume, DeleteVolume, drv_delete_volume_request, drv_delete_volume_response)
DRV_HOST_CALL_DECL(attach_volume, AttachVolume, drv_attach_volume_request, drv_attach_volume_response)
DRV_HOST_CALL_DECL(detach_volume, DetachVolume, drv_detach_volume_request, drv_detach_volume_response)
DRV_HOST_CALL_DECL(create_gateway, CreateGateway, drv_create_gateway_request, drv_create_gateway_response)
DRV_HOST_CALL_DECL(terminate_gateway, TerminateGateway, drv_terminate_gateway_request,
                   drv_terminate_gateway_response)
#undef DRV_HOST_CALL_DECL

/*
 * Generic unary call by method name ("GetOffers"), for tools that iterate
 * over the service descriptor (the conformance harness). `req` must be of the
 * method's input type; *resp is of its output type.
 */
int drv_host_call(struct drv_host *h, const char *method, const ProtobufCMessage *req,
                  ProtobufCMessage **resp, int timeout_ms, struct drv_status *st);

/*
 * Asynchronous form: `cb` runs once on the SDK's completion thread with the
 * result (resp owned by the callback, NULL on error). Must not block.
 * Returns 0 when the call started; otherwise (DRV_EINVAL: unknown method or
 * wrong request type; DRV_EUNAVAILABLE: the driver exited) `cb` never runs.
 */
typedef void (*drv_host_done_cb)(void *ud, int code, const char *message, ProtobufCMessage *resp);
int drv_host_call_async(struct drv_host *h, const char *method, const ProtobufCMessage *req, int timeout_ms,
                        drv_host_done_cb cb, void *ud);

/* grpc.health.v1 Check of the whole driver: 0 when SERVING. */
int drv_host_health(struct drv_host *h, int timeout_ms, struct drv_status *st);

/* The driver's pid (spawned) or 0 (remote). */
pid_t drv_host_pid(const struct drv_host *h);
/* The driver's name as given or derived. Borrowed for the life of h. */
const char *drv_host_name(const struct drv_host *h);
/* The handshake line as received (spawned) or "" (remote). Borrowed. */
const char *drv_host_handshake(const struct drv_host *h);
/* The gRPC target ("unix:/...", "127.0.0.1:4000"). Borrowed. */
const char *drv_host_target(const struct drv_host *h);
/* True while the spawned process runs (always true for remote hosts). */
bool drv_host_alive(const struct drv_host *h);
/* Milliseconds from spawn until the handshake line arrived (spawned only). */
double drv_host_handshake_ms(const struct drv_host *h);

/*
 * Stops a spawned driver: SIGTERM, waits up to grace_ms, then SIGKILL; reaps
 * it. Returns 0 when it exited within the grace period, DRV_EDEADLINE when it
 * had to be killed, DRV_ENOMEM when it was killed because there was no memory
 * to ask it to stop. *exit_status (may be NULL) gets the exit code, or
 * 128+signal. For remote hosts only closes the channel.
 */
int drv_host_stop(struct drv_host *h, int grace_ms, int *exit_status);

/* Closes stdin of a spawned driver (it should then exit by itself). */
void drv_host_close_stdin(struct drv_host *h);

/*
 * Waits up to timeout_ms for a spawned driver to exit by itself. Returns 0
 * and its status (exit code or 128+signal), or DRV_EDEADLINE.
 */
int drv_host_wait(struct drv_host *h, int timeout_ms, int *exit_status);

/* Stops (if still running, with a 2 s grace), closes and frees. NULL is fine. */
void drv_host_free(struct drv_host *h);

/*
 * Removes the socket directories that hosts and drivers of this user left
 * behind when they were killed (their owner process is gone), under the
 * directory where socket directories are made. drv_host_spawn does it once
 * per process by itself; a server calls it at start to report the count.
 * Returns how many were removed, or -1 when that directory cannot be read.
 */
int drv_host_sweep_socket_dirs(void);

/*
 * Copies the `len` bytes at `in` into `out` (always NUL-terminated) with
 * what could drive a terminal escaped: C0 controls but tab, DEL and bytes
 * that are not UTF-8 as \xNN, C1 controls (U+0080..U+009F) as \u00NN. The
 * host does this to every stderr line of a driver; a host that decodes a
 * line further (a JSON string's escapes) does it again on the result.
 * Returns the length written; output that does not fit is cut at a
 * character boundary.
 */
size_t drv_host_clean_text(char *out, size_t outlen, const char *in, size_t len);

/*
 * The BackendConfig of a call, built from a backend's config JSON text and its
 * secrets, as droverd and the conformance harness both pass it:
 *
 *     struct drv_backend_config_buf b;
 *     if (drv_backend_config_init(&b, json, n) == 0) {
 *             for (size_t i = 0; i < n; i++)
 *                     drv_backend_config_set_secret(&b, i, names[i], values[i]);
 *             req.config = &b.msg;   (req: a drv_get_offers_request, say)
 *             drv_host_get_offers(h, &req, &resp, timeout_ms, &st);
 *             drv_backend_config_clear(&b);
 *     }
 *
 * Borrowed: the JSON text and every secret's name and value; they must outlive
 * each use of b.msg, and nothing of them is copied. Owned by b: the array of
 * secret entries (one allocation, none when there are no secrets), which
 * drv_backend_config_clear() frees. Not thread-safe on one b; b.msg itself is
 * only read by the calls that take it.
 */
struct drv_backend_config_buf {
	drv_backend_config msg; /* what a call takes */
	void *mem_;             /* private: the entries and the pointers to them */
};
/*
 * Sets b->msg to config_json (NULL: "{}") and n_secrets empty secrets that
 * drv_backend_config_set_secret() fills. Returns 0, or DRV_ENOMEM (then b
 * needs no drv_backend_config_clear(), though it is harmless).
 */
int drv_backend_config_init(struct drv_backend_config_buf *b, const char *config_json, size_t n_secrets);
/* Sets secret i (below the n_secrets of the init); NULL value: "". Both borrowed. */
void drv_backend_config_set_secret(struct drv_backend_config_buf *b, size_t i, const char *name,
                                   const char *value);
/* Frees what b owns and empties b->msg. Safe on a cleared b. */
void drv_backend_config_clear(struct drv_backend_config_buf *b);

/* Parses a handshake line into its parts. Exposed for tests and tools. */
struct drv_handshake {
	int core_version;     /* 1 */
	int protocol_version; /* DRV_PROTOCOL_VERSION */
	char network[8];      /* "unix" or "tcp" */
	char address[256];
	char protocol[8]; /* "grpc" */
};
int drv_handshake_parse(const char *line, struct drv_handshake *hs, char *err, size_t errlen);
/* Formats a handshake line (no newline) into buf; returns its length or a negative error. */
int drv_handshake_format(const struct drv_handshake *hs, char *buf, size_t buflen);

#endif
