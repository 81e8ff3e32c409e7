/*
 * Measures the transport against the targets of its brief: unary latency over
 * a unix socket, calls per second with 8 in flight (inline handler),
 * GetOffers(1,000) round trip, and spawn-to-first-RPC time and idle RSS of a
 * small program linked like a driver (rpc_probe_driver).
 *
 * The server runs in a child process (this binary, "serve" mode), as a
 * driver would. Prints one line per figure; `--check` exits non-zero when a
 * figure misses its limit (limits are loose enough for a loaded machine).
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "drover/rpc.h"
#include "drover/types.h"
#include "grpc/health/v1/health.pb-c.h"

static const ProtobufCServiceDescriptor *health = &grpc__health__v1__health__descriptor;
static const ProtobufCServiceDescriptor *compute = &drover__compute__v1__compute__descriptor;

static int64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int cmp_i64(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
	return x < y ? -1 : x > y;
}

/* ---- server child ---- */

static drv_get_offers_response offers_resp = DROVER__COMPUTE__V1__GET_OFFERS_RESPONSE__INIT;

static void build_offers(size_t n)
{
	static const char *types[] = {"gpu-h100-80g", "gpu-a100-40g", "cpu-c2-standard-8", "gpu-l4-24g"};
	static const char *regions[] = {"us-east-1", "eu-west-4", "asia-se-1"};
	drv_offer **v = calloc(n, sizeof(*v));
	for (size_t i = 0; i < n; i++) {
		drv_offer *o = calloc(1, sizeof(*o));
		drv_resources *r = calloc(1, sizeof(*r));
		drv_gpu *g = calloc(1, sizeof(*g));
		drover__compute__v1__offer__init(o);
		drover__compute__v1__resources__init(r);
		drover__compute__v1__gpu__init(g);
		g->name = "H100";
		g->memory_mib = 81920;
		g->vendor = "nvidia";
		g->count = (uint32_t)(1 + i % 8);
		r->cpus = (uint32_t)(8 + i % 64);
		r->memory_mib = 65536 + i;
		r->n_gpus = 1;
		r->gpus = calloc(1, sizeof(drv_gpu *));
		r->gpus[0] = g;
		r->disk_mib = 102400;
		r->cpu_arch = "x86_64";
		o->backend_type = "sim";
		o->instance_type = (char *)types[i % 4];
		o->resources = r;
		o->region = (char *)regions[i % 3];
		o->price_per_hour = 0.5 + (double)i / 100.0;
		o->availability = DROVER__COMPUTE__V1__AVAILABILITY__AVAILABILITY_AVAILABLE;
		v[i] = o;
	}
	offers_resp.n_offers = n;
	offers_resp.offers = v;
}

static void serve_check(void *ud, struct drv_rpc_call *call, const ProtobufCMessage *req)
{
	Grpc__Health__V1__HealthCheckResponse r = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
	r.status = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING;
	drv_rpc_reply(call, 0, NULL, &r.base);
}

static void serve_offers(void *ud, struct drv_rpc_call *call, const ProtobufCMessage *req)
{
	drv_rpc_reply(call, 0, NULL, &offers_resp.base);
}

static int serve(const char *addr)
{
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGPIPE);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	build_offers(1000);
	char err[256];
	struct drv_rpc_server *srv;
	struct drv_rpc_server_opts o = {.address = addr};
	if (drv_rpc_server_new(&o, &srv, err, sizeof(err)) != 0) {
		fprintf(stderr, "serve: %s\n", err);
		return 1;
	}
	drv_rpc_server_add(srv, health, 0, serve_check, NULL, DRV_RPC_INLINE);
	drv_rpc_server_add(srv, compute, (unsigned)drv_rpc_method_index(compute, "GetOffers"), serve_offers,
	                   NULL, DRV_RPC_INLINE);
	int port;
	if (drv_rpc_server_start(srv, &port, err, sizeof(err)) != 0) {
		fprintf(stderr, "serve: %s\n", err);
		return 1;
	}
	printf("ready|%d\n", port);
	fflush(stdout);
	char buf[64];
	while (read(0, buf, sizeof(buf)) > 0)
		;
	drv_rpc_server_free(srv);
	return 0;
}

/* ---- children ---- */

struct child {
	pid_t pid;
	int in_fd;  /* child's stdin: closing it ends the child */
	int out_fd; /* child's stdout */
};

static int spawn(char *const argv[], struct child *c)
{
	int in[2], out[2];
	if (pipe2(in, O_CLOEXEC) != 0 || pipe2(out, O_CLOEXEC) != 0)
		return -1;
	pid_t pid = fork();
	if (pid < 0)
		return -1;
	if (pid == 0) {
		dup2(in[0], 0);
		dup2(out[1], 1);
		execv(argv[0], argv);
		_exit(127);
	}
	close(in[0]);
	close(out[1]);
	c->pid = pid;
	c->in_fd = in[1];
	c->out_fd = out[0];
	return 0;
}

static long long ready_times[3];

static int read_ready(struct child *c, int *port)
{
	char line[64];
	size_t n = 0;
	while (n < sizeof(line) - 1) {
		ssize_t r = read(c->out_fd, line + n, 1);
		if (r <= 0)
			return -1;
		if (line[n] == '\n')
			break;
		n++;
	}
	line[n] = '\0';
	if (strncmp(line, "ready|", 6) != 0)
		return -1;
	*port = atoi(line + 6);
	memset(ready_times, 0, sizeof(ready_times));
	sscanf(line + 6, "%*d|%lld|%lld|%lld", &ready_times[0], &ready_times[1], &ready_times[2]);
	return 0;
}

static void reap(struct child *c)
{
	close(c->in_fd);
	close(c->out_fd);
	waitpid(c->pid, NULL, 0);
}

static long rss_kb(pid_t pid)
{
	char path[64], line[256];
	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	FILE *f = fopen(path, "r");
	long kb = -1;
	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "VmRSS: %ld kB", &kb) == 1)
			break;
	fclose(f);
	return kb;
}

static int health_check(struct drv_rpc_channel *ch, struct drv_status *st)
{
	Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
	ProtobufCMessage *resp;
	int rc = drv_rpc_call(ch, health, 0, &req.base, &resp, 5000, NULL, st);
	if (rc == 0)
		drv_response_free(resp);
	return rc;
}

/* ---- figures ---- */

struct tput {
	struct drv_rpc_channel *ch;
	atomic_bool *stop;
	long calls;
	long errors;
};

static void *tput_thread(void *arg)
{
	struct tput *t = arg;
	struct drv_status st;
	while (!atomic_load(t->stop)) {
		if (health_check(t->ch, &st) == 0)
			t->calls++;
		else
			t->errors++;
	}
	return NULL;
}

struct async_loop {
	struct drv_rpc_channel *ch;
	atomic_long calls;
	atomic_long errors;
	atomic_bool stop;
	atomic_int in_flight;
};

static void async_next(void *ud, int code, const char *message, ProtobufCMessage *resp);

static void async_issue(struct async_loop *a)
{
	Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
	if (drv_rpc_call_async(a->ch, health, 0, &req.base, 5000, NULL, async_next, a) != 0) {
		atomic_fetch_add(&a->errors, 1);
		atomic_fetch_sub(&a->in_flight, 1);
	}
}

static void async_next(void *ud, int code, const char *message, ProtobufCMessage *resp)
{
	struct async_loop *a = ud;
	if (resp)
		drv_response_free(resp);
	if (code == 0)
		atomic_fetch_add(&a->calls, 1);
	else
		atomic_fetch_add(&a->errors, 1);
	if (atomic_load(&a->stop))
		atomic_fetch_sub(&a->in_flight, 1);
	else
		async_issue(a);
}

static void sleep_ms(int ms)
{
	struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

int main(int argc, char **argv)
{
	if (argc >= 3 && strcmp(argv[1], "serve") == 0)
		return serve(argv[2]);
	if (argc >= 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
		printf("usage: %s [--check] [--spawn-only|--latency-only] [PROBE_DRIVER]\n"
		       "Measures unary latency, calls/s with 8 in flight, GetOffers(1000) and, given the\n"
		       "path of rpc_probe_driver, spawn-to-first-RPC time and idle RSS.\n"
		       "--check: exit 1 if a figure misses its limit.\n",
		       argv[0]);
		return 0;
	}
	bool check = false, spawn_only = false, latency_only = false;
	const char *probe = NULL;
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--check") == 0)
			check = true;
		else if (strcmp(argv[i], "--spawn-only") == 0)
			spawn_only = true;
		else if (strcmp(argv[i], "--latency-only") == 0)
			latency_only = true;
		else
			probe = argv[i];
	}
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGPIPE);
	pthread_sigmask(SIG_BLOCK, &set, NULL);

	char dir[] = "/tmp/drover-rpc-bench-XXXXXX";
	if (!mkdtemp(dir))
		return 1;
	char addr[128], self[4096], err[256];
	snprintf(addr, sizeof(addr), "unix:%s/bench.sock", dir);
	ssize_t sl = readlink("/proc/self/exe", self, sizeof(self) - 1);
	if (sl <= 0)
		return 1;
	self[sl] = '\0';
	char *sargv[] = {self, "serve", addr, NULL};
	struct child srvc;
	int port, failed = 0;
	struct drv_status st;
	if (spawn_only)
		goto spawn_probe;
	if (spawn(sargv, &srvc) != 0 || read_ready(&srvc, &port) != 0) {
		fprintf(stderr, "bench: server child did not start\n");
		return 1;
	}
	struct drv_rpc_channel *ch;
	struct drv_rpc_channel_opts co = {.target = addr};
	if (drv_rpc_channel_new(&co, &ch, err, sizeof(err)) != 0) {
		fprintf(stderr, "bench: %s\n", err);
		return 1;
	}
	for (int i = 0; i < 2000; i++)
		if (health_check(ch, &st) != 0) {
			fprintf(stderr, "bench: warm-up call failed: %s\n", st.message);
			return 1;
		}

	/* Unary latency. */
	enum { N = 20000 };
	static int64_t lat[N];
	for (int i = 0; i < N; i++) {
		int64_t t0 = now_ns();
		health_check(ch, &st);
		lat[i] = now_ns() - t0;
	}
	qsort(lat, N, sizeof(lat[0]), cmp_i64);
	double p50 = (double)lat[N / 2] / 1000.0;
	printf("unary unix p50 %.1f us  p99 %.1f us\n", p50, (double)lat[N * 99 / 100] / 1000.0);
	if (check && p50 > 60)
		failed = 1;
	if (latency_only) {
		/* CPU per call of client and server together: unlike wall time, hardly moved by other load.
		 */
		drv_rpc_channel_free(ch);
		reap(&srvc);
		struct rusage me, kids;
		getrusage(RUSAGE_SELF, &me);
		getrusage(RUSAGE_CHILDREN, &kids);
		double cpu = (double)(me.ru_utime.tv_sec + me.ru_stime.tv_sec + kids.ru_utime.tv_sec +
		                      kids.ru_stime.tv_sec) +
		             (double)(me.ru_utime.tv_usec + me.ru_stime.tv_usec + kids.ru_utime.tv_usec +
		                      kids.ru_stime.tv_usec) /
		                 1e6;
		printf("CPU per call (client + server, incl. start-up) %.1f us\n", cpu * 1e6 / (N + 2000));
		return failed;
	}

	/* 8 in flight: 8 threads with blocking calls, then 8 asynchronous calls kept in flight. */
	atomic_bool stop = false;
	pthread_t th[8];
	struct tput tp[8];
	int64_t t0 = now_ns();
	for (int i = 0; i < 8; i++) {
		tp[i] = (struct tput){.ch = ch, .stop = &stop};
		pthread_create(&th[i], NULL, tput_thread, &tp[i]);
	}
	sleep_ms(2000);
	atomic_store(&stop, true);
	long calls = 0, errors = 0;
	for (int i = 0; i < 8; i++) {
		pthread_join(th[i], NULL);
		calls += tp[i].calls;
		errors += tp[i].errors;
	}
	double secs = (double)(now_ns() - t0) / 1e9;
	printf("8 threads blocking: %.0f calls/s (%ld errors)\n", (double)calls / secs, errors);

	struct async_loop al = {.ch = ch};
	atomic_store(&al.in_flight, 8);
	t0 = now_ns();
	for (int i = 0; i < 8; i++)
		async_issue(&al);
	sleep_ms(2000);
	atomic_store(&al.stop, true);
	long acalls = atomic_load(&al.calls);
	secs = (double)(now_ns() - t0) / 1e9;
	while (atomic_load(&al.in_flight) > 0)
		sleep_ms(1);
	double async_rate = (double)acalls / secs;
	printf("8 async in flight: %.0f calls/s (%ld errors)\n", async_rate, atomic_load(&al.errors));
	if (check && (double)calls / secs < 50000 && async_rate < 50000)
		failed = 1;

	/* GetOffers(1000). */
	unsigned gi = (unsigned)drv_rpc_method_index(compute, "GetOffers");
	drv_get_offers_request oreq = DROVER__COMPUTE__V1__GET_OFFERS_REQUEST__INIT;
	enum { NO = 500 };
	static int64_t olat[NO];
	size_t n_offers = 0;
	for (int i = 0; i < NO + 50; i++) {
		ProtobufCMessage *resp;
		int64_t s0 = now_ns();
		if (drv_rpc_call(ch, compute, gi, &oreq.base, &resp, 5000, NULL, &st) != 0) {
			fprintf(stderr, "bench: GetOffers failed: %s\n", st.message);
			return 1;
		}
		n_offers = ((drv_get_offers_response *)resp)->n_offers;
		drv_response_free(resp);
		if (i >= 50)
			olat[i - 50] = now_ns() - s0;
	}
	qsort(olat, NO, sizeof(olat[0]), cmp_i64);
	double op50 = (double)olat[NO / 2] / 1e6;
	/* The protobuf work alone (pack on the server, unpack and free on the client), for comparison. */
	build_offers(1000);
	static int64_t plat[NO];
	for (int i = 0; i < NO; i++) {
		int64_t s0 = now_ns();
		size_t len = protobuf_c_message_get_packed_size(&offers_resp.base);
		uint8_t *buf = malloc(len);
		protobuf_c_message_pack(&offers_resp.base, buf);
		ProtobufCMessage *m = protobuf_c_message_unpack(
		    &drover__compute__v1__get_offers_response__descriptor, NULL, len, buf);
		protobuf_c_message_free_unpacked(m, NULL);
		free(buf);
		plat[i] = now_ns() - s0;
	}
	qsort(plat, NO, sizeof(plat[0]), cmp_i64);
	printf("GetOffers(%zu) p50 %.3f ms  p99 %.3f ms (protobuf pack+unpack+free alone p50 %.3f ms)\n",
	       n_offers, op50, (double)olat[NO * 99 / 100] / 1e6, (double)plat[NO / 2] / 1e6);
	if (check && op50 > 2.0)
		failed = 1;

	drv_rpc_channel_free(ch);
	reap(&srvc);

	/* Spawn to first successful RPC, and idle RSS, of the probe driver. */
spawn_probe:
	if (probe) {
		/*
		 * A host keeps gRPC initialised while it spawns drivers; without this
		 * channel every round would pay a full grpc_init()/grpc_shutdown() here.
		 */
		struct drv_rpc_channel *keep;
		struct drv_rpc_channel_opts kco = {.target = addr};
		if (drv_rpc_channel_new(&kco, &keep, err, sizeof(err)) != 0)
			return 1;
		enum { NS = 60 };
		int64_t sp[NS], rd[NS], tm[NS], tn[NS], ts[NS];
		long rss = 0;
		for (int i = 0; i < NS; i++) {
			char paddr[160];
			snprintf(paddr, sizeof(paddr), "unix:%s/probe%d.sock", dir, i);
			char *pargv[] = {(char *)probe, paddr, NULL};
			struct child pc;
			int64_t s0 = now_ns();
			if (spawn(pargv, &pc) != 0 || read_ready(&pc, &port) != 0) {
				fprintf(stderr, "bench: probe driver did not start\n");
				return 1;
			}
			rd[i] = now_ns() - s0;
			tm[i] = ready_times[0] - s0;
			tn[i] = ready_times[1] - ready_times[0];
			ts[i] = ready_times[2] - ready_times[1];
			struct drv_rpc_channel *pch;
			struct drv_rpc_channel_opts pco = {.target = paddr};
			if (drv_rpc_channel_new(&pco, &pch, err, sizeof(err)) != 0 ||
			    health_check(pch, &st) != 0) {
				fprintf(stderr, "bench: first call to the probe failed: %s\n", st.message);
				return 1;
			}
			sp[i] = now_ns() - s0;
			drv_rpc_channel_free(pch);
			if (i == NS - 1) {
				sleep_ms(200);
				rss = rss_kb(pc.pid);
			}
			reap(&pc);
		}
		drv_rpc_channel_free(keep);
		qsort(sp, NS, sizeof(sp[0]), cmp_i64);
		qsort(rd, NS, sizeof(rd[0]), cmp_i64);
		qsort(tm, NS, sizeof(tm[0]), cmp_i64);
		qsort(tn, NS, sizeof(tn[0]), cmp_i64);
		qsort(ts, NS, sizeof(ts[0]), cmp_i64);
		printf("  probe p50 (min): exec to main %.2f (%.2f) ms, server_new %.2f (%.2f) ms, add+start "
		       "%.2f (%.2f) "
		       "ms\n",
		       (double)tm[NS / 2] / 1e6, (double)tm[0] / 1e6, (double)tn[NS / 2] / 1e6,
		       (double)tn[0] / 1e6, (double)ts[NS / 2] / 1e6, (double)ts[0] / 1e6);
		double sp50 = (double)sp[NS / 2] / 1e6;
		printf("spawn to first RPC p50 %.2f ms (handshake line p50 %.2f ms)  max %.2f ms; idle RSS "
		       "%.1f MB\n",
		       sp50, (double)rd[NS / 2] / 1e6, (double)sp[NS - 1] / 1e6, (double)rss / 1024.0);
		if (check && (sp50 > 10.0 || rss > 20 * 1024))
			failed = 1;
	}
	char cmd[200];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	if (system(cmd) != 0)
		fprintf(stderr, "bench: could not remove %s\n", dir);
	return failed;
}
