/*
 * The benchmark's baseline: a bare gRPC C core unary echo, server and client,
 * written directly on grpc/grpc.h with nothing of drover in between. The
 * server runs as a child process (drover-bench --echo-server), like a driver,
 * so both sides of every comparison cross the same kind of process boundary.
 */
#ifndef BENCH_ECHO_H
#define BENCH_ECHO_H

#include <stddef.h>

#define BENCH_ECHO_METHOD "/drover.bench.v1.Echo/Echo"

/*
 * Serves the echo method (answering every call with `reply_bytes` bytes) and
 * grpc.health.v1.Health/Check (SERVING) on a unix socket in
 * $DROVER_SOCKET_DIR (or a fresh temp dir); prints a driver handshake line;
 * returns when stdin reaches EOF or on SIGTERM/SIGINT. Returns an exit code.
 * Must be called before anything else initialises gRPC in this process.
 */
int bench_echo_serve(size_t reply_bytes);

struct bench_echo_client;

/*
 * Connects to an echo server at `target` ("unix:/path"). Every call sends
 * `request_bytes` bytes. Returns 0, or -1 with a message in err.
 */
int bench_echo_client_new(const char *target, size_t request_bytes, struct bench_echo_client **out, char *err,
                          size_t errlen);

/* One blocking call; 0 when it answered OK with a message, else -1. */
int bench_echo_call(struct bench_echo_client *c);

/*
 * `total` calls keeping `inflight` outstanding at all times on one completion
 * queue. Returns the number of failed calls (0 on success), or -1 if calls
 * could not be started; *seconds gets the wall time.
 */
long bench_echo_run_inflight(struct bench_echo_client *c, int inflight, long total, double *seconds);

/* NULL is fine. */
void bench_echo_client_free(struct bench_echo_client *c);

#endif
