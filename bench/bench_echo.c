/*
 * Bare gRPC C core echo server and client (see bench_echo.h). This file and
 * the SDK's transport are the only places that use gRPC directly; it follows
 * the same patterns as the transport (registered methods with the payload
 * read up front, one completion-queue thread, one reply batch) so the
 * comparison measures drover's own overhead and nothing else.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_posix.h>
#include <grpc/grpc_security.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>

#include "bench_echo.h"

#define HEALTH_METHOD "/grpc.health.v1.Health/Check"
#define ECHO_SLOTS 16
#define MAX_MESSAGE (64 << 20)

/* ---- server ---- */

enum slot_kind { SLOT_ECHO, SLOT_HEALTH, SLOT_OTHER };

struct slot {
	enum slot_kind kind;
	bool replying;
	grpc_call *call;
	gpr_timespec deadline;
	grpc_metadata_array md;
	grpc_call_details details;
	grpc_byte_buffer *payload;
	grpc_byte_buffer *reply;
	int cancelled;
};

struct echo_server {
	grpc_server *srv;
	grpc_completion_queue *cq;
	void *m_echo;
	void *m_health;
	grpc_slice reply;
	grpc_slice health_reply;
	atomic_bool stopping;
	int shutdown_tag;
};

static struct echo_server S;

/*
 * The SDK's transport turns off abseil's mutex deadlock detector, which
 * Debian's abseil (built without NDEBUG) runs on every lock inside gRPC; the
 * echo does the same so that both measure the same gRPC (see rpc_grpc.h).
 */
extern void _ZN4absl7debian329SetMutexDeadlockDetectionModeENS0_15OnDeadlockCycleE(int mode)
    __attribute__((weak));

static void echo_grpc_init(void)
{
	if (_ZN4absl7debian329SetMutexDeadlockDetectionModeENS0_15OnDeadlockCycleE)
		_ZN4absl7debian329SetMutexDeadlockDetectionModeENS0_15OnDeadlockCycleE(0 /* kIgnore */);
	grpc_init();
}

static int slot_request(struct slot *sl)
{
	grpc_call_error e;

	sl->replying = false;
	sl->call = NULL;
	sl->payload = NULL;
	sl->reply = NULL;
	grpc_metadata_array_init(&sl->md);
	switch (sl->kind) {
	case SLOT_ECHO:
		e = grpc_server_request_registered_call(S.srv, S.m_echo, &sl->call, &sl->deadline, &sl->md,
		                                        &sl->payload, S.cq, S.cq, sl);
		break;
	case SLOT_HEALTH:
		e = grpc_server_request_registered_call(S.srv, S.m_health, &sl->call, &sl->deadline, &sl->md,
		                                        &sl->payload, S.cq, S.cq, sl);
		break;
	default:
		/* Without a generic request, calls to unknown methods hang until their deadline. */
		grpc_call_details_init(&sl->details);
		e = grpc_server_request_call(S.srv, &sl->call, &sl->details, &sl->md, S.cq, S.cq, sl);
		break;
	}
	return e == GRPC_CALL_OK ? 0 : -1;
}

static void slot_release(struct slot *sl)
{
	if (sl->call)
		grpc_call_unref(sl->call);
	sl->call = NULL;
	grpc_metadata_array_destroy(&sl->md);
	if (sl->kind == SLOT_OTHER)
		grpc_call_details_destroy(&sl->details);
	if (sl->payload)
		grpc_byte_buffer_destroy(sl->payload);
	if (sl->reply)
		grpc_byte_buffer_destroy(sl->reply);
	sl->payload = sl->reply = NULL;
}

static void slot_reply(struct slot *sl)
{
	static grpc_slice unimplemented_msg;
	grpc_op ops[4];
	size_t n = 0;

	memset(ops, 0, sizeof(ops));
	ops[n++].op = GRPC_OP_SEND_INITIAL_METADATA;
	if (sl->kind != SLOT_OTHER) {
		/* The core moves the slices out of a sent byte buffer, so each reply needs its own. */
		sl->reply =
		    grpc_raw_byte_buffer_create(sl->kind == SLOT_ECHO ? &S.reply : &S.health_reply, 1);
		ops[n].op = GRPC_OP_SEND_MESSAGE;
		ops[n++].data.send_message.send_message = sl->reply;
	}
	ops[n].op = GRPC_OP_RECV_CLOSE_ON_SERVER;
	ops[n++].data.recv_close_on_server.cancelled = &sl->cancelled;
	ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
	if (sl->kind == SLOT_OTHER) {
		unimplemented_msg =
		    grpc_slice_from_static_string("the echo server has only " BENCH_ECHO_METHOD);
		ops[n].data.send_status_from_server.status = GRPC_STATUS_UNIMPLEMENTED;
		ops[n].data.send_status_from_server.status_details = &unimplemented_msg;
	} else {
		ops[n].data.send_status_from_server.status = GRPC_STATUS_OK;
	}
	n++;
	sl->replying = true;
	if (grpc_call_start_batch(sl->call, ops, n, sl, NULL) != GRPC_CALL_OK) {
		slot_release(sl);
		if (!atomic_load(&S.stopping))
			slot_request(sl);
	}
}

static void server_stop(void)
{
	bool was = false;

	if (atomic_compare_exchange_strong(&S.stopping, &was, true)) {
		grpc_server_shutdown_and_notify(S.srv, S.cq, &S.shutdown_tag);
		grpc_server_cancel_all_calls(S.srv);
	}
}

static void *stdin_watch(void *arg)
{
	char buf[256];

	(void)arg;
	/* The spawning host holds our stdin: EOF means it is gone. */
	while (read(0, buf, sizeof(buf)) > 0)
		;
	server_stop();
	return NULL;
}

static void *signal_watch(void *arg)
{
	sigset_t *set = arg;
	int sig;

	if (sigwait(set, &sig) == 0)
		server_stop();
	return NULL;
}

int bench_echo_serve(size_t reply_bytes)
{
	static struct slot slots[ECHO_SLOTS + 4];
	static sigset_t set;
	char sockdir[256], path[300], *reply;
	const char *dir = getenv("DROVER_SOCKET_DIR");
	grpc_arg arg;
	grpc_channel_args args;
	grpc_server_credentials *creds;
	pthread_t t;
	bool own_dir = false;
	int live;

	/* gRPC's threads inherit this mask, so signals reach only our watcher. */
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	pthread_sigmask(SIG_BLOCK, &set, NULL);

	if (!dir || !dir[0]) {
		snprintf(sockdir, sizeof(sockdir), "/tmp/drover-bench-echo-XXXXXX");
		if (!mkdtemp(sockdir)) {
			fprintf(stderr, "drover-bench --echo-server: mkdtemp: %s\n", strerror(errno));
			return 1;
		}
		dir = sockdir;
		own_dir = true;
	}
	snprintf(path, sizeof(path), "unix:%s/echo-%d.sock", dir, (int)getpid());

	echo_grpc_init();
	arg.type = GRPC_ARG_INTEGER;
	arg.key = GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH;
	arg.value.integer = MAX_MESSAGE;
	args.num_args = 1;
	args.args = &arg;
	S.srv = grpc_server_create(&args, NULL);
	S.cq = grpc_completion_queue_create_for_next(NULL);
	grpc_server_register_completion_queue(S.srv, S.cq, NULL);
	S.m_echo = grpc_server_register_method(S.srv, BENCH_ECHO_METHOD, NULL,
	                                       GRPC_SRM_PAYLOAD_READ_INITIAL_BYTE_BUFFER, 0);
	S.m_health = grpc_server_register_method(S.srv, HEALTH_METHOD, NULL,
	                                         GRPC_SRM_PAYLOAD_READ_INITIAL_BYTE_BUFFER, 0);
	creds = grpc_insecure_server_credentials_create();
	if (!grpc_server_add_http2_port(S.srv, path, creds)) {
		fprintf(stderr, "drover-bench --echo-server: cannot listen on %s\n", path);
		grpc_server_credentials_release(creds);
		return 1;
	}
	grpc_server_credentials_release(creds);
	grpc_server_start(S.srv);

	reply = calloc(1, reply_bytes ? reply_bytes : 1);
	memset(reply, 'e', reply_bytes);
	S.reply = grpc_slice_from_copied_buffer(reply, reply_bytes);
	free(reply);
	/* HealthCheckResponse{status: SERVING}: field 1, varint 1. */
	S.health_reply = grpc_slice_from_static_buffer("\x08\x01", 2);

	for (size_t i = 0; i < sizeof(slots) / sizeof(slots[0]); i++) {
		slots[i].kind = i < ECHO_SLOTS ? SLOT_ECHO : i < ECHO_SLOTS + 2 ? SLOT_HEALTH : SLOT_OTHER;
		slot_request(&slots[i]);
	}

	pthread_create(&t, NULL, stdin_watch, NULL);
	pthread_detach(t);
	pthread_create(&t, NULL, signal_watch, &set);
	pthread_detach(t);

	printf("1|1|unix|%s|grpc\n", path + strlen("unix:"));
	fflush(stdout);

	live = 1;
	while (live) {
		grpc_event ev = grpc_completion_queue_next(S.cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);

		if (ev.type == GRPC_QUEUE_SHUTDOWN)
			break;
		if (ev.type != GRPC_OP_COMPLETE)
			continue;
		if (ev.tag == &S.shutdown_tag) {
			live = 0;
			continue;
		}
		struct slot *sl = ev.tag;
		if (!sl->replying) {
			if (!ev.success) {
				/* The server is shutting down: the request was never filled. */
				slot_release(sl);
				continue;
			}
			slot_reply(sl);
			continue;
		}
		slot_release(sl);
		if (!atomic_load(&S.stopping))
			slot_request(sl);
	}

	grpc_server_destroy(S.srv);
	grpc_completion_queue_shutdown(S.cq);
	while (grpc_completion_queue_next(S.cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type !=
	       GRPC_QUEUE_SHUTDOWN)
		;
	grpc_completion_queue_destroy(S.cq);
	grpc_slice_unref(S.reply);
	unlink(path + strlen("unix:"));
	if (own_dir)
		rmdir(sockdir);
	grpc_shutdown();
	return 0;
}

/* ---- client ---- */

struct bench_echo_client {
	grpc_channel *ch;
	void *reg;
	grpc_completion_queue *pluck;
	grpc_slice request;
};

/* One call's state; the same for the blocking and the in-flight paths. */
struct ccall {
	grpc_call *call;
	grpc_byte_buffer *send;
	grpc_byte_buffer *recv;
	grpc_metadata_array im, tm;
	grpc_status_code status;
	grpc_slice details;
	const char *error;
};

static int ccall_start(struct bench_echo_client *c, struct ccall *k, grpc_completion_queue *cq, void *tag)
{
	grpc_op ops[6];

	memset(k, 0, sizeof(*k));
	k->call = grpc_channel_create_registered_call(
	    c->ch, NULL, GRPC_PROPAGATE_DEFAULTS, cq, c->reg,
	    gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_seconds(30, GPR_TIMESPAN)), NULL);
	if (!k->call)
		return -1;
	k->send = grpc_raw_byte_buffer_create(&c->request, 1);
	grpc_metadata_array_init(&k->im);
	grpc_metadata_array_init(&k->tm);
	memset(ops, 0, sizeof(ops));
	ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
	ops[0].flags = GRPC_INITIAL_METADATA_WAIT_FOR_READY;
	ops[1].op = GRPC_OP_SEND_MESSAGE;
	ops[1].data.send_message.send_message = k->send;
	ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
	ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
	ops[3].data.recv_initial_metadata.recv_initial_metadata = &k->im;
	ops[4].op = GRPC_OP_RECV_MESSAGE;
	ops[4].data.recv_message.recv_message = &k->recv;
	ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
	ops[5].data.recv_status_on_client.trailing_metadata = &k->tm;
	ops[5].data.recv_status_on_client.status = &k->status;
	ops[5].data.recv_status_on_client.status_details = &k->details;
	ops[5].data.recv_status_on_client.error_string = &k->error;
	if (grpc_call_start_batch(k->call, ops, 6, tag, NULL) != GRPC_CALL_OK) {
		grpc_call_unref(k->call);
		grpc_byte_buffer_destroy(k->send);
		grpc_metadata_array_destroy(&k->im);
		grpc_metadata_array_destroy(&k->tm);
		return -1;
	}
	return 0;
}

/* Reads the answer as a real client would (one contiguous slice) and cleans up. */
static int ccall_finish(struct ccall *k, bool success)
{
	int rc = success && k->status == GRPC_STATUS_OK && k->recv ? 0 : -1;

	if (k->recv) {
		grpc_byte_buffer_reader r;

		if (grpc_byte_buffer_reader_init(&r, k->recv)) {
			grpc_slice s = grpc_byte_buffer_reader_readall(&r);

			grpc_slice_unref(s);
			grpc_byte_buffer_reader_destroy(&r);
		}
		grpc_byte_buffer_destroy(k->recv);
	}
	grpc_byte_buffer_destroy(k->send);
	grpc_slice_unref(k->details);
	gpr_free((void *)k->error);
	grpc_metadata_array_destroy(&k->im);
	grpc_metadata_array_destroy(&k->tm);
	grpc_call_unref(k->call);
	return rc;
}

/* A connected unix socket to `path`, or -1 (the channel then connects by itself). */
static int connect_unix(const char *path)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	if (strlen(path) >= sizeof(sa.sun_path))
		return -1;
	memcpy(sa.sun_path, path, strlen(path) + 1);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
		close(fd);
		fd = -1;
	}
	return fd;
}

int bench_echo_client_new(const char *target, size_t request_bytes, struct bench_echo_client **out, char *err,
                          size_t errlen)
{
	struct bench_echo_client *c = calloc(1, sizeof(*c));
	grpc_channel_credentials *creds;
	grpc_arg chargs[3];
	grpc_channel_args args;
	char *buf;

	if (!c) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	echo_grpc_init();
	/* Retries off, as the SDK's channel has them: the retry filter buffers every call. */
	chargs[0].type = GRPC_ARG_INTEGER;
	chargs[0].key = GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH;
	chargs[0].value.integer = MAX_MESSAGE;
	chargs[1].type = GRPC_ARG_INTEGER;
	chargs[1].key = GRPC_ARG_ENABLE_RETRIES;
	chargs[1].value.integer = 0;
	args.num_args = 2;
	args.args = chargs;
	creds = grpc_insecure_credentials_create();
	/*
	 * A unix socket is connected here and the channel made on it, as the
	 * SDK's host does with a spawned driver: a direct channel, whose first
	 * call does not wait for the server's SETTINGS and whose calls skip the
	 * client channel's layers. The baseline gets every shortcut drover takes.
	 */
	int fd = strncmp(target, "unix:", 5) == 0 ? connect_unix(target + 5) : -1;
	if (fd >= 0) {
		chargs[2].type = GRPC_ARG_STRING;
		chargs[2].key = GRPC_ARG_DEFAULT_AUTHORITY;
		chargs[2].value.string = "localhost";
		args.num_args = 3;
		c->ch = grpc_channel_create_from_fd(target, fd, creds, &args);
	} else {
		c->ch = grpc_channel_create(target, creds, &args);
	}
	grpc_channel_credentials_release(creds);
	if (!c->ch) {
		snprintf(err, errlen, "cannot create a channel to %s", target);
		free(c);
		grpc_shutdown();
		return -1;
	}
	c->reg = grpc_channel_register_call(c->ch, BENCH_ECHO_METHOD, NULL, NULL);
	c->pluck = grpc_completion_queue_create_for_pluck(NULL);
	buf = calloc(1, request_bytes ? request_bytes : 1);
	memset(buf, 'q', request_bytes);
	c->request = grpc_slice_from_copied_buffer(buf, request_bytes);
	free(buf);
	*out = c;
	return 0;
}

int bench_echo_call(struct bench_echo_client *c)
{
	struct ccall k;
	grpc_event ev;

	if (ccall_start(c, &k, c->pluck, &k) != 0)
		return -1;
	ev = grpc_completion_queue_pluck(c->pluck, &k, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
	return ccall_finish(&k, ev.type == GRPC_OP_COMPLETE && ev.success);
}

long bench_echo_run_inflight(struct bench_echo_client *c, int inflight, long total, double *seconds)
{
	grpc_completion_queue *cq = grpc_completion_queue_create_for_next(NULL);
	struct ccall *k = calloc((size_t)inflight, sizeof(*k));
	struct timespec t0, t1;
	long started = 0, done = 0, failed = 0;
	int active = 0;

	if (!k) {
		grpc_completion_queue_destroy(cq);
		return -1;
	}
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (int i = 0; i < inflight && started < total; i++) {
		if (ccall_start(c, &k[i], cq, &k[i]) != 0)
			break;
		started++;
		active++;
	}
	while (active > 0) {
		grpc_event ev = grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
		struct ccall *one = ev.tag;

		if (ev.type != GRPC_OP_COMPLETE)
			break;
		active--;
		done++;
		if (ccall_finish(one, ev.success) != 0)
			failed++;
		if (started < total && ccall_start(c, one, cq, one) == 0) {
			started++;
			active++;
		}
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	*seconds = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
	grpc_completion_queue_shutdown(cq);
	while (grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type !=
	       GRPC_QUEUE_SHUTDOWN)
		;
	grpc_completion_queue_destroy(cq);
	free(k);
	if (done < total)
		return -1;
	return failed;
}

void bench_echo_client_free(struct bench_echo_client *c)
{
	if (!c)
		return;
	grpc_slice_unref(c->request);
	grpc_channel_destroy(c->ch);
	/* A pluck queue cannot be drained with next(); every call on it was plucked already. */
	grpc_completion_queue_shutdown(c->pluck);
	grpc_completion_queue_destroy(c->pluck);
	free(c);
	grpc_shutdown();
}
