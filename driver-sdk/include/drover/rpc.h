/*
 * drover/rpc.h — generic protobuf-c unary RPC over gRPC C core, for any
 * ProtobufCServiceDescriptor. The driver SDK serves and calls the Compute
 * service through it; droverd serves its API and the drover CLI calls it
 * through it. gRPC types never appear here.
 *
 * Threads: the server runs one completion-queue thread; handlers run either
 * inline on that thread (DRV_RPC_INLINE: must be quick and never block) or on
 * the server's worker pool. A handler may also keep the call and reply later
 * from any thread (deferred reply), which is how droverd hands calls to its
 * libuv loop.
 *
 * Signals: block the signals you handle yourself (SIGTERM, SIGINT) and
 * SIGPIPE before the first drv_rpc_server_new() or drv_rpc_channel_new():
 * those start gRPC's threads (and the transport's own threads follow), and
 * every thread inherits the mask of the thread that creates it.
 */
#ifndef DROVER_RPC_H
#define DROVER_RPC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>

#include "drover/types.h"

/* ---- serving ---- */

struct drv_rpc_server;
/* One incoming call. Owned by the server until drv_rpc_reply() is called on it, exactly once. */
struct drv_rpc_call;

/*
 * Handles one call. `req` is unpacked and owned by the call (valid until the
 * reply). The handler must eventually call drv_rpc_reply() exactly once, on
 * any thread.
 */
typedef void (*drv_rpc_handler)(void *ud, struct drv_rpc_call *call, const ProtobufCMessage *req);

#define DRV_RPC_INLINE 0x1 /* run the handler on the completion-queue thread */

struct drv_rpc_server_opts {
	/*
	 * "unix:/abs/path" or "host:port" (port 0 picks one). For TCP, mutual TLS
	 * when tls_cert_file/tls_key_file are set (client_ca_file: require and
	 * verify client certificates); otherwise plain.
	 */
	const char *address;
	const char *tls_cert_file;
	const char *tls_key_file;
	const char *client_ca_file;
	int workers;              /* worker threads for non-inline handlers; 0 means 4 */
	size_t max_message_bytes; /* 0 means 64 MiB */
};

int drv_rpc_server_new(const struct drv_rpc_server_opts *opts, struct drv_rpc_server **out, char *err,
                       size_t errlen);

/* Registers one method before drv_rpc_server_start(). `method_index` indexes service->methods. */
int drv_rpc_server_add(struct drv_rpc_server *srv, const ProtobufCServiceDescriptor *service,
                       unsigned method_index, drv_rpc_handler fn, void *ud, unsigned flags);

/* Binds and starts serving. *bound_port (may be NULL) gets the TCP port, 0 for unix. */
int drv_rpc_server_start(struct drv_rpc_server *srv, int *bound_port, char *err, size_t errlen);

/*
 * Stops accepting calls, lets in-flight calls finish for up to grace_ms,
 * cancels the rest, and waits for the threads. Thread-safe; idempotent.
 * Calls still unanswered when the grace ends are answered CANCELLED by the
 * server and drv_rpc_call_cancelled() turns true for them; the handler still
 * owns such a call and must still call drv_rpc_reply(), which then only frees
 * it. Never call from a handler running on the server's own threads.
 */
void drv_rpc_server_shutdown(struct drv_rpc_server *srv, int grace_ms);
void drv_rpc_server_free(struct drv_rpc_server *srv);

/*
 * Sends the reply and releases the call (and its request). `code` is 0 or a
 * drv_error; `message` (may be NULL) is copied; `resp` is borrowed, sent only
 * when code is 0, and must be of the method's output type. Thread-safe.
 */
void drv_rpc_reply(struct drv_rpc_call *call, int code, const char *message, const ProtobufCMessage *resp);

/* Milliseconds until the call's deadline: INT64_MAX if none, <= 0 if passed. */
int64_t drv_rpc_call_time_left_ms(const struct drv_rpc_call *call);
/* True once the client cancelled, the deadline passed, or the server is shutting down. */
bool drv_rpc_call_cancelled(const struct drv_rpc_call *call);
/* The method's name ("GetOffers") and its descriptor. */
const char *drv_rpc_call_method(const struct drv_rpc_call *call);
const ProtobufCMethodDescriptor *drv_rpc_call_method_desc(const struct drv_rpc_call *call);
/* A request metadata value (lower-case key, e.g. "authorization"), or NULL. Borrowed until the reply. */
const char *drv_rpc_call_metadata(const struct drv_rpc_call *call, const char *key);
/* The peer's address as gRPC reports it. Borrowed until the reply. */
const char *drv_rpc_call_peer(const struct drv_rpc_call *call);
/* A pointer a handler may stash on the call (e.g. its own context). */
void drv_rpc_call_set_data(struct drv_rpc_call *call, void *data);
void *drv_rpc_call_data(const struct drv_rpc_call *call);

/* ---- calling ---- */

struct drv_rpc_channel;

struct drv_rpc_channel_opts {
	const char *target;    /* "unix:/abs/path" or "host:port" */
	const char *ca_file;   /* TLS: CA of the server's certificate; NULL: plain */
	const char *cert_file; /* TLS client certificate (mutual TLS); may be NULL */
	const char *key_file;
	const char *server_name;  /* override of the name checked in the server's certificate */
	size_t max_message_bytes; /* 0 means 64 MiB */
	/*
	 * Calls wait (up to their timeout) for the connection instead of failing
	 * at once with DRV_EUNAVAILABLE while the peer is unreachable. Added after
	 * the fields above; false by default.
	 */
	bool wait_for_ready;
	/*
	 * Bytes the channel's connection may hold in its buffers at once (a
	 * gRPC resource quota of its own): past it gRPC cancels the calls whose
	 * answers fill them (RESOURCE_EXHAUSTED), so one peer that streams an
	 * answer far over max_message_bytes cannot make us buffer all of it
	 * first. 0: no quota of its own. Added after the fields above.
	 */
	size_t memory_quota_bytes;
};

int drv_rpc_channel_new(const struct drv_rpc_channel_opts *opts, struct drv_rpc_channel **out, char *err,
                        size_t errlen);
/*
 * Asynchronous calls still in flight are cancelled and their callbacks run
 * (with DRV_ECANCELLED) before this returns; never call it from a callback.
 */
void drv_rpc_channel_free(struct drv_rpc_channel *ch);

/*
 * Metadata for a call: pairs of lower-case key and value, ending with a NULL
 * key. Both borrowed for the call.
 */
struct drv_rpc_metadata {
	const char *key;
	const char *value;
};

/*
 * A blocking unary call of `service`'s method `method_index`. On 0, *resp is a
 * new message of the method's output type, which the caller frees with
 * drv_response_free(*resp) (drover/types.h). On error returns the
 * drv_error and *resp is NULL; `st` (may be NULL) gets code and message.
 * timeout_ms <= 0 means 30 s. Thread-safe; any number of calls in flight.
 * With wait_for_ready false (the default for drivers) a call on a dead
 * connection fails at once with DRV_EUNAVAILABLE.
 */
int drv_rpc_call(struct drv_rpc_channel *ch, const ProtobufCServiceDescriptor *service, unsigned method_index,
                 const ProtobufCMessage *req, ProtobufCMessage **resp, int timeout_ms,
                 const struct drv_rpc_metadata *md, struct drv_status *st);

/*
 * Asynchronous form: `cb` runs once on the client's completion thread; `resp`
 * belongs to the callback (NULL on error), which frees it with
 * drv_response_free() or hands it on. The callback must not block.
 * On a non-zero return `cb` is never called. `md` is copied.
 */
typedef void (*drv_rpc_done)(void *ud, int code, const char *message, ProtobufCMessage *resp);
int drv_rpc_call_async(struct drv_rpc_channel *ch, const ProtobufCServiceDescriptor *service,
                       unsigned method_index, const ProtobufCMessage *req, int timeout_ms,
                       const struct drv_rpc_metadata *md, drv_rpc_done cb, void *ud);

/* The index of `method` ("GetOffers") in `service`, or -1. */
int drv_rpc_method_index(const ProtobufCServiceDescriptor *service, const char *method);

/*
 * Where gRPC's own log lines go (a failed TLS handshake, a dropped
 * connection): by default they are the SDK's JSON lines on stderr, as
 * drv_log writes them; a program with a logger of its own gives `fn`, which
 * gets an enum drv_log_level value and the text, from any thread, and must
 * not call into gRPC. NULL restores the default.
 */
typedef void (*drv_rpc_log_fn)(int level, const char *text);
void drv_rpc_set_log(drv_rpc_log_fn fn);

#endif
