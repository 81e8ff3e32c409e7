/*
 * srv_api — the drover.api.v1.Drover service, served through the SDK's
 * generic transport (drover/rpc.h) on a unix socket (0600) and optionally on
 * TCP with TLS. Bearer-token auth is checked on the transport's thread; every
 * other step runs on droverd's loop thread (the call is handed over with
 * uv_async_send and answered later with drv_rpc_reply).
 */
#ifndef SRV_API_H
#define SRV_API_H

#include <stddef.h>

#include <uv.h>

struct srv_api;
struct srv_store;
struct srv_supervisor;
struct srv_engine;
struct srv_config;

struct srv_api_opts {
	uv_loop_t *loop;
	struct srv_store *store;
	struct srv_supervisor *sup;
	struct srv_engine *engine;
	const struct srv_config *cfg;
	const char *unix_path; /* absolute path of the socket; NULL: no unix socket */
	const char *token;     /* the admin token (borrowed; never logged) */
};

/* Binds and starts serving. On failure returns -1 with a message in err. */
int srv_api_start(const struct srv_api_opts *opts, struct srv_api **out, char *err, size_t errlen);
/* The TCP port bound (0 when none). */
int srv_api_tcp_port(const struct srv_api *api);
/* Stops serving: calls in flight get answered (UNAVAILABLE if the loop has gone). Blocks briefly. */
void srv_api_stop(struct srv_api *api);
void srv_api_close_handles(struct srv_api *api);
void srv_api_free(struct srv_api *api);

/*
 * Reads the admin token from `path`, or creates it (64 hex characters from
 * the OS random source, mode 0600) at first start. Writes it into buf.
 */
int srv_api_load_token(const char *path, char *buf, size_t buflen, char *err, size_t errlen);

#endif
