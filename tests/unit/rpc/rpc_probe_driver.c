/*
 * The smallest driver-like program on the transport: serves
 * grpc.health.v1.Health (inline handler) on the address given, prints one
 * line "ready|<port>" on stdout, and exits when stdin reaches EOF. rpc_bench
 * spawns it to measure spawn-to-first-RPC time and idle memory of a program
 * linked the way drivers are (static gRPC when DROVER_STATIC_GRPC is on).
 */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "drover/rpc.h"
#include "grpc/health/v1/health.pb-c.h"

static void check(void *ud, struct drv_rpc_call *call, const ProtobufCMessage *req)
{
	Grpc__Health__V1__HealthCheckResponse r = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
	r.status = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING;
	drv_rpc_reply(call, 0, NULL, &r.base);
}

static long long now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int main(int argc, char **argv)
{
	long long t_main = now_ns();
	if (argc < 2 || strcmp(argv[1], "--help") == 0) {
		printf("usage: %s ADDRESS [CERT KEY CLIENT_CA]\n"
		       "Serves grpc.health.v1.Health on ADDRESS (unix:/path or host:port), prints\n"
		       "\"ready|<port>|<times>\" and exits when stdin reaches EOF.\n",
		       argv[0]);
		return argc < 2 ? 2 : 0;
	}
	/* Signals are blocked before any gRPC thread exists, as rpc.h asks. */
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGPIPE);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	pthread_sigmask(SIG_BLOCK, &set, NULL);

	char err[256];
	struct drv_rpc_server *srv;
	struct drv_rpc_server_opts o = {.address = argv[1], .workers = 1};
	if (argc >= 5) {
		o.tls_cert_file = argv[2];
		o.tls_key_file = argv[3];
		o.client_ca_file = argv[4];
	}
	if (drv_rpc_server_new(&o, &srv, err, sizeof(err)) != 0) {
		fprintf(stderr, "probe: %s\n", err);
		return 1;
	}
	long long t_new = now_ns();
	drv_rpc_server_add(srv, &grpc__health__v1__health__descriptor, 0, check, NULL, DRV_RPC_INLINE);
	int port = 0;
	if (drv_rpc_server_start(srv, &port, err, sizeof(err)) != 0) {
		fprintf(stderr, "probe: %s\n", err);
		drv_rpc_server_free(srv);
		return 1;
	}
	/* The monotonic times of main(), after drv_rpc_server_new() and after start, for rpc_bench. */
	printf("ready|%d|%lld|%lld|%lld\n", port, t_main, t_new, now_ns());
	fflush(stdout);
	char buf[64];
	while (read(0, buf, sizeof(buf)) > 0)
		;
	drv_rpc_server_free(srv);
	return 0;
}
